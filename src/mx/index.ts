// The receiver MX: accepts mail for its domains on port 25 (no AUTH, no relaying; STARTTLS when the node has `tls`), and answers 250 only after
// the mailbox server accepted the message over LMTP. When the mailbox server cannot take it, the MX answers
// 4xx so the sender keeps the message queued: the MX itself queues nothing.
// An address literal naming the MX itself (`bob@[<its address>]`) is taken as its own domain: the one served
// recipient with that local part.
// Limits (config.limits, else DEFAULT_SMTP_LIMITS): recipients per transaction (452 4.5.3), connections per client
// address (421 4.7.0), message size (552 5.3.4, nothing past it kept in memory); a header section with a bare CR or
// LF is refused (554 5.6.0, shared/message-guard.ts).
// Mail authentication (`auth`, authenticate.ts): SPF, DKIM, DMARC and ARC at the end of DATA against the lab DNS,
// Authentication-Results prepended; DMARC p=reject refused with 550 5.7.1 before any hand-off, p=quarantine filed in
// Junk (LMTP `+Junk`). Forwarding (`forwards`): those recipients are ARC-sealed and sent on through `forwardVia`, the
// envelope sender kept; 250 only once the mailbox server and the forwarding relay both accepted.
// Malware filter (`scanner`, scan/): every decoded MIME part scanned at the end of DATA, after authentication and before
// any hand-off: malware refused with 554 5.7.1 (or, with `malwareAction: 'quarantine'`, filed in Junk like a DMARC
// quarantine), a scanner that cannot answer 451 4.7.0 (fail closed), a clean message marked `X-Virus-Scanned`.
import { randomBytes } from 'node:crypto';
import type { SMTPServerDataStream, SMTPServerSession } from 'smtp-server';
import { DEFAULT_SMTP_LIMITS, type MxNodeConfig } from '../shared/config.js';
import { HEADER_PROBLEM_CODE, HEADER_PROBLEM_STATUS, headerSectionProblem } from '../shared/message-guard.js';
import { messageIdOf, receivedHeader } from '../shared/headers.js';
import type { NodeContext, RunningRole } from '../shared/node.js';
import type { MxContract, MxEvents } from './api.js';
import { authenticateMessage, withoutForgedResults, type AuthOutcome } from './authenticate.js';
import { createLabResolver } from '../dns/index.js';
import { has8BitOctets, needsSmtpUtf8, SmtpClientError, SmtpClientPool, type RecipientResult, type SmtpEnvelope } from '../shared/smtp-client.js';
import { createSmtpServer, listen, readMessage, sessionTls, smtpTlsOptions } from '../shared/smtp-server.js';
import { smtpReply } from '../shared/smtp-reply.js';
import { startScanner, type ScanVerdict } from './scan/index.js';
import { smtpFaultOperations, smtpFaultsOf } from '../shared/smtp-faults.js';

const MAX_MESSAGE_SIZE = 50 * 1024 * 1024;

export interface MxOptions {
  /** Largest message accepted (advertised as SIZE, RFC 1870), in octets. Default config.limits.maxMessageSize, else 50 MiB, the mailbox server's limit. */
  maxMessageSize?: number;
  /** The longest a scan may take (one clamd exchange) before the sender hears 451 4.7.0. Default 30 s. */
  scanTimeoutMs?: number;
}

/** A clamd reply or a decoded file name goes into a reply and a header: no control characters (no CRLF injection). */
const printable = (text: string) => text.replace(/[\x00-\x1f\x7f]/g, '?');

export async function startMx({ config, events }: NodeContext<MxNodeConfig, MxEvents>, options: MxOptions = {}): Promise<RunningRole<MxContract>> {
  const maxSize = options.maxMessageSize ?? config.limits?.maxMessageSize ?? MAX_MESSAGE_SIZE;
  const limits = { ...DEFAULT_SMTP_LIMITS, ...config.limits };
  const refused = (session: Pick<SMTPServerSession, 'remoteAddress' | 'envelope'>, stage: 'RCPT TO' | 'DATA', code: number, text: string, rcpt = session.envelope.rcptTo.map((r) => r.address).join(', ')) => {
    events.emit({ kind: 'rejected', detail: { stage, rcpt, reply: `${code} ${text}`, client: session.remoteAddress, from: session.envelope.mailFrom ? session.envelope.mailFrom.address : '' } });
    return smtpReply(code, text);
  };
  const domains = new Set(config.domains.map((d) => d.toLowerCase()));
  const recipients = new Set(config.recipients.map((r) => r.toLowerCase()));
  /**
   * The address `rcpt` stands for: itself, or for `user@[<this MX's address>]` (an address literal naming this host,
   * RFC 5321 §4.1.3, which Postfix also takes as local) the one served recipient with that local part.
   */
  const servedAs = (rcpt: string): { address: string; ownLiteral: boolean } => {
    const at = rcpt.lastIndexOf('@');
    const literal = /^\[(?:ipv6:)?(.+)\]$/i.exec(rcpt.slice(at + 1))?.[1]?.toLowerCase().replace(/^::ffff:(?=\d+\.)/, '');
    if (literal === undefined || literal !== config.address.toLowerCase()) return { address: rcpt, ownLiteral: false };
    const local = rcpt.slice(0, at).toLowerCase();
    const matches = [...recipients].filter((r) => r.slice(0, r.lastIndexOf('@')) === local);
    return { address: matches.length === 1 ? matches[0]! : rcpt, ownLiteral: true };
  };
  // LMTP is a local hop: a mailbox server that does not answer within seconds is down (or cut off), and the
  // sender must hear 451 long before its own timeouts expire.
  const lmtp = new SmtpClientPool({
    ehloName: config.hostname,
    lmtp: true,
    connectTimeoutMs: 2000,
    greetingTimeoutMs: 2000,
    socketTimeoutMs: 5000,
    idleMs: 5000,
    localAddress: config.address,
  });
  // The forwarding hop (`forwardVia`, an MTA's port 25 relaying for this MX): an SMTP hop in the lab, as prompt as
  // LMTP, since the sender waits for its answer. STARTTLS when offered (opportunistic, like the MTA's `may`).
  const relay = new SmtpClientPool({
    ehloName: config.hostname,
    connectTimeoutMs: 2000,
    greetingTimeoutMs: 2000,
    socketTimeoutMs: 5000,
    idleMs: 5000,
    localAddress: config.address,
    ...(config.tls ? { ca: config.tls.ca } : {}),
  });
  const forwards = new Map(Object.entries(config.forwards ?? {}).map(([rcpt, target]) => [rcpt.toLowerCase(), target]));
  // SPF, DKIM, DMARC and ARC ask the lab DNS only (never the system resolver), failing with node:dns's codes.
  const resolver = createLabResolver(config.resolver);
  const dnsLookup = (name: string, rrtype: string) => resolver.resolve(name, rrtype);
  // Started before the port opens, so no message is ever accepted unscanned; a clamd that cannot be started fails the MX's start.
  const scanner = config.scanner ? await startScanner(config.scanner, { address: config.address, dataDir: config.dataDir, maxSize, timeoutMs: options.scanTimeoutMs ?? 30_000 }) : undefined;

  // Fires when a sender's connection closes during its transaction. The sender (killed, cut off) never hears our
  // reply and will send the message again, so the hand-off to the mailbox server is abandoned: what LMTP had not
  // stored yet is not stored, and the retry does not make a second copy.
  const gone = new WeakMap<SMTPServerSession, AbortController>();
  const senderOf = (session: SMTPServerSession) => {
    let controller = gone.get(session);
    if (!controller) gone.set(session, (controller = new AbortController()));
    return controller;
  };

  // SMTP fault rules (issue 15): applied by the server itself (shared/smtp-server.ts); each that fires is an event.
  const faults = smtpFaultsOf(config);
  const server = createSmtpServer({
    greetingDelayMs: config.greetingDelayMs,
    maxConnectionsPerClient: limits.maxConnectionsPerClient,
    faults,
    onFault: (detail, messageId) => events.emit({ kind: 'fault', ...(messageId ? { messageId } : {}), detail }),
    onConnectionRefused(client, reply) {
      events.emit({ kind: 'rejected', detail: { stage: 'CONNECT', rcpt: '', reply, client, from: '' } });
    },
    onSizeRefused(session, reply) {
      events.emit({ kind: 'rejected', detail: { stage: 'MAIL FROM', rcpt: '', reply, client: session.remoteAddress, from: '' } });
    },
    name: config.hostname,
    banner: 'maillab MX ready',
    authOptional: true,
    // STARTTLS (RFC 3207) with the node's certificate when it has `tls`, TLS 1.2 at least; never AUTH. `noStartTls`
    // hides it (as an attacker stripping it from the EHLO reply would).
    disabledCommands: config.tls && !config.noStartTls ? ['AUTH'] : ['AUTH', 'STARTTLS'],
    ...smtpTlsOptions(config.tls),
    size: maxSize,
    logger: false,
    // On stop, idle sessions (a sender's cached connection) are closed after this, not after 30 s.
    closeTimeout: 200,
    onClose(session: SMTPServerSession) {
      senderOf(session).abort();
    },
    onRcptTo(address, session, callback) {
      const rcpt = address.address.toLowerCase();
      const served = servedAs(rcpt);
      const domain = served.address.split('@')[1] ?? '';
      const refuse = (code: number, text: string) => callback(refused(session, 'RCPT TO', code, text, rcpt));
      if (session.envelope.rcptTo.length >= limits.maxRecipients) return refuse(452, `4.5.3 Too many recipients: at most ${limits.maxRecipients} per message, send the rest in another message`);
      if (!served.ownLiteral && !domains.has(domain)) return refuse(550, `5.7.1 <${rcpt}>: relay access denied, ${config.hostname} does not serve ${domain}`);
      if (!recipients.has(served.address)) return refuse(550, `5.1.1 <${rcpt}>: no such user here`);
      callback();
    },
    onData(stream: SMTPServerDataStream, session: SMTPServerSession, callback: (err?: Error | null, message?: string) => void) {
      void receive(stream, session).then(
        (message) => callback(null, message),
        (err: Error) => callback(err),
      );
    },
  });

  async function receive(stream: SMTPServerDataStream, session: SMTPServerSession): Promise<string> {
    // Nothing past the limit is kept; a client far past it is answered at once and disconnected.
    const body = await readMessage(server, stream, session, maxSize, () => refused(session, 'DATA', 552, `5.3.4 message exceeds the size limit of ${maxSize} octets`));
    const id = randomBytes(6).toString('hex').toUpperCase();
    const to = session.envelope.rcptTo.map((r) => servedAs(r.address).address);
    const from = session.envelope.mailFrom ? session.envelope.mailFrom.address : '';
    const problem = headerSectionProblem(body);
    if (problem) throw refused(session, 'DATA', HEADER_PROBLEM_CODE, `${HEADER_PROBLEM_STATUS} ${problem}`);
    const messageId = messageIdOf(body);
    const tls = sessionTls(server, session);
    const trace = receivedHeader({
      helo: session.hostNameAppearsAs,
      clientAddress: session.remoteAddress,
      by: config.hostname,
      // RFC 3848: ESMTPS when the session ran over TLS (STARTTLS).
      protocol: tls ? 'ESMTPS' : 'ESMTP',
      id,
      ...(to.length === 1 ? { for: to[0] } : {}),
      tls,
    });
    const message = Buffer.concat([Buffer.from(trace, 'latin1'), body]);
    events.emit({ kind: 'received', messageId, queueId: id, detail: { from, to, client: session.remoteAddress, helo: session.hostNameAppearsAs, size: message.length, tls } });

    // Which recipients go to the mailbox server and which are forwarded (`forwards`) through `forwardVia`.
    const forwardsOf = to.flatMap((rcpt) => (forwards.has(rcpt) ? [{ rcpt, to: forwards.get(rcpt)! }] : []));
    const local = to.filter((rcpt) => !forwards.has(rcpt));
    if (forwardsOf.length && !config.forwardVia) throw refused(session, 'DATA', 451, `4.3.5 ${forwardsOf.map((f) => f.rcpt).join(', ')} forwarded, but this MX has no forwardVia to send through`);

    // Mail authentication at the end of DATA (issue 12): with `auth`, and whenever a forward is to be sealed (a seal
    // carries this MX's verdict in its ARC-Authentication-Results). It runs before any hand-off, so a message DMARC
    // rejects is stored nowhere.
    let verdict: AuthOutcome | undefined;
    let verified = message;
    if (config.auth || (forwardsOf.length && config.arcSeal)) {
      const inbound = withoutForgedResults(message, config.hostname);
      try {
        verdict = await authenticateMessage(
          { message: inbound, ip: session.remoteAddress, helo: session.hostNameAppearsAs, sender: from, rcpts: to, messageId },
          { mta: config.hostname, resolver: dnsLookup, auth: config.auth, ...(forwardsOf.length && config.arcSeal ? { seal: config.arcSeal } : {}) },
        );
      } catch (err) {
        // mailauth turns DNS failures into temperror results itself; an exception is a failure of the check.
        throw refused(session, 'DATA', 451, `4.7.0 mail authentication failed, try again later: ${(err as Error).message}`);
      }
      events.emit({ kind: 'authenticated', messageId, queueId: id, detail: verdict.detail });
      if (verdict.refusal) throw refused(session, 'DATA', 550, verdict.refusal);
      verified = Buffer.concat([Buffer.from(verdict.headers, 'latin1'), inbound]);
    }
    // The malware filter (issue 13): after authentication (a message DMARC refuses needs no scan), before any hand-off
    // and before the 250, so malware is stored and forwarded nowhere.
    let infected = false;
    if (scanner) {
      const rcpts = to;
      let result: ScanVerdict;
      try {
        result = await scanner.scan(message);
      } catch (err) {
        // Fail closed: a message that could not be scanned is not accepted, and the sender's queue tries again.
        const why = printable((err as Error).message);
        events.emit({ kind: 'scanned', messageId, queueId: id, detail: { scanner: scanner.name, clean: false, action: 'tempfail', error: why, rcpts } });
        throw refused(session, 'DATA', 451, `4.7.0 message could not be scanned, try again later (${why})`);
      }
      const stamp = `X-Virus-Scanned: ${scanner.name} on ${config.hostname}\r\n`;
      if (result.clean) {
        events.emit({ kind: 'scanned', messageId, queueId: id, detail: { scanner: scanner.name, clean: true, action: 'accept', rcpts } });
        verified = Buffer.concat([Buffer.from(stamp, 'latin1'), verified]);
      } else {
        const signature = printable(result.signature);
        const part = printable(result.part);
        // Quarantine files the message in the local recipients' Junk; a forward has no Junk of ours to go to, and
        // malware is not sent on, so a message with a forwarded recipient is refused whatever malwareAction says.
        const quarantine = config.malwareAction === 'quarantine' && forwardsOf.length === 0;
        events.emit({ kind: 'scanned', messageId, queueId: id, detail: { scanner: scanner.name, clean: false, signature, part, action: quarantine ? 'quarantine' : 'reject', rcpts } });
        if (!quarantine) throw refused(session, 'DATA', 554, `5.7.1 message rejected: malware found (${signature})`);
        infected = true;
        verified = Buffer.concat([Buffer.from(`${stamp}X-Virus-Found: ${signature} in part ${part}\r\n`, 'latin1'), verified]);
      }
    }
    // A quarantined message (DMARC quarantine, or malware with malwareAction 'quarantine') goes to each local
    // recipient's Junk folder: LMTP address detail (`bob+Junk@…`), as Dovecot's lmtp_save_to_detail_mailbox reads it.
    const junk = verdict?.detail.action === 'quarantine' || infected;
    const lmtpRcpt = (rcpt: string) => (junk ? `${rcpt.slice(0, rcpt.lastIndexOf('@'))}+Junk${rcpt.slice(rcpt.lastIndexOf('@'))}` : rcpt);

    const signal = senderOf(session).signal;
    const hops: Array<Promise<HopOutcome>> = [];
    if (local.length) hops.push(toMailbox(local.map(lmtpRcpt), verified, from, signal, messageId, id, session.envelope.bodyType?.toUpperCase() === '8BITMIME'));
    if (forwardsOf.length) hops.push(toForward(forwardsOf, Buffer.concat([Buffer.from(verdict?.arcSet ?? '', 'latin1'), verified]), from, signal, verdict?.sealed, messageId, id));
    // Both hops run at once and the sender hears 250 only when every one accepted every recipient: SMTP has one
    // reply to the data, so any refusal or outage answers for the whole transaction (a retry may then duplicate
    // what one hop already took, the risk RFC 5321 §6.1 prefers to loss).
    const outcomes = await Promise.all(hops);
    const down = outcomes.find((o) => o.unavailable);
    if (down) throw smtpReply(451, `4.3.0 ${down.name} unavailable, try again later (${down.hop}: ${down.unavailable})`);
    const failed = outcomes.flatMap((o) => o.failed.map((f) => ({ ...f, name: o.name, forwarded: o.forwarded })));
    if (failed.length === 0) return `2.0.0 Ok: ${forwardsOf.length ? (local.length ? 'delivered and forwarded' : 'forwarded') : 'delivered'} as ${id}`;
    const total = outcomes.reduce((n, o) => n + o.count, 0);
    const temporary = failed.find((r) => r.code >= 400 && r.code < 500);
    if (temporary || failed.length < total) {
      const first = (temporary ?? failed[0])!;
      throw smtpReply(451, `4.3.0 ${first.name} refused ${failed.map((r) => r.address).join(', ')}: ${first.reply}`);
    }
    // Refused for good: the mailbox server's refusal is about the mailbox (5.1.1); the forwarding relay's status is
    // passed on as it gave it (a final MX's 5.7.1 DMARC refusal stays a policy refusal).
    const first = failed[0]!;
    throw smtpReply(550, `${first.forwarded && first.enhanced ? first.enhanced : '5.1.1'} ${first.name} refused: ${first.reply}`);
  }

  /** One next hop's answer: the recipients it refused, or why it could not be reached (`unavailable`). */
  interface HopOutcome {
    /** For the sender's reply: `mailbox server`, `forwarding relay`. */
    name: string;
    hop: string;
    count: number;
    /** The forwarding hop (SMTP), not the mailbox server. */
    forwarded: boolean;
    failed: RecipientResult[];
    unavailable?: string;
  }

  /** A hop that could not be reached or broke off: `handoff-failed`, and the sender will hear 451. */
  function unreachable(name: string, hop: string, count: number, err: unknown, messageId: string | undefined, id: string): HopOutcome {
    const why = err instanceof SmtpClientError ? err.message : (err as Error).message;
    events.emit({ kind: 'handoff-failed', messageId, queueId: id, detail: { to: hop, error: why } });
    return { name, hop, count, forwarded: name === 'forwarding relay', failed: [], unavailable: why };
  }

  async function toMailbox(rcpts: string[], message: Buffer, from: string, signal: AbortSignal, messageId: string | undefined, id: string, declared8bit: boolean): Promise<HopOutcome> {
    const hop = `LMTP ${config.lmtp.host}:${config.lmtp.port}`;
    // The MAIL FROM parameters go on to the mailbox server (which offers 8BITMIME and SMTPUTF8): BODY=8BITMIME when
    // the sender declared it or the content is 8-bit anyway, SMTPUTF8 when an address or a header is UTF-8.
    const envelope: SmtpEnvelope = {
      from,
      to: rcpts,
      ...(declared8bit || has8BitOctets(message) ? { body: '8BITMIME' as const } : {}),
      ...(needsSmtpUtf8({ from, to: rcpts }, message) ? { smtputf8: true } : {}),
    };
    try {
      const result = await lmtp.send({ host: config.lmtp.host, port: config.lmtp.port }, envelope, message, { signal });
      events.emit({ kind: 'handoff', messageId, queueId: id, detail: { to: hop, recipients: result.recipients } });
      return { name: 'mailbox server', hop, count: rcpts.length, forwarded: false, failed: result.recipients.filter((r) => !r.accepted) };
    } catch (err) {
      return unreachable('mailbox server', hop, rcpts.length, err, messageId, id);
    }
  }

  /**
   * Forwarding: the sealed message goes to `forwardVia` over SMTP with the original envelope sender (no SRS, so
   * SPF fails at the final hop and the ARC seal is what vouches for the first hop's verdict), one RCPT per target.
   */
  async function toForward(list: Array<{ rcpt: string; to: string }>, message: Buffer, from: string, signal: AbortSignal, sealed: AuthOutcome['sealed'], messageId: string | undefined, id: string): Promise<HopOutcome> {
    const via = config.forwardVia!;
    const hop = `SMTP ${via.host}:${via.port} (forwardVia)`;
    try {
      const result = await relay.send({ host: via.host, port: via.port }, { from, to: list.map((f) => f.to) }, message, { signal });
      const failed: RecipientResult[] = [];
      for (const f of list) {
        const r = result.recipients.find((x) => x.address.toLowerCase() === f.to.toLowerCase());
        if (!r) continue;
        events.emit({ kind: 'forwarded', messageId, queueId: id, detail: { rcpt: f.rcpt, to: f.to, via: hop, accepted: r.accepted, reply: r.reply, arc: sealed ?? null } });
        if (!r.accepted) failed.push({ ...r, address: f.rcpt });
      }
      return { name: 'forwarding relay', hop, count: list.length, forwarded: true, failed };
    } catch (err) {
      return unreachable('forwarding relay', hop, list.length, err, messageId, id);
    }
  }

  server.on('error', () => undefined);
  try {
    await listen(server, config.address, config.ports.smtp, 'smtp');
  } catch (err) {
    // A spawned clamd must not outlive an MX that never started.
    await scanner?.close();
    throw err;
  }
  const address = server.server.address();
  const port = typeof address === 'object' && address ? address.port : config.ports.smtp;

  return {
    services: { smtp: { host: config.address, port } },
    rpc: smtpFaultOperations(faults),
    async stop() {
      await new Promise<void>((resolve) => server.close(() => resolve()));
      lmtp.close();
      relay.close();
      await scanner?.close();
    },
  };
}
