// The receiver MX: accepts mail for its domains on port 25 (no AUTH, no relaying; STARTTLS when the node has `tls`), and answers 250 only after
// the mailbox server accepted the message over LMTP. When the mailbox server cannot take it, the MX answers
// 4xx so the sender keeps the message queued: the MX itself queues nothing.
// An address literal naming the MX itself (`bob@[<its address>]`) is taken as its own domain: the one served
// recipient with that local part.
// Limits (config.limits, else DEFAULT_SMTP_LIMITS): recipients per transaction (452 4.5.3), connections per client
// address (421 4.7.0), message size (552 5.3.4, nothing past it kept in memory); a header section with a bare CR or
// LF is refused (554 5.6.0, shared/message-guard.ts).
import { randomBytes } from 'node:crypto';
import type { SMTPServerDataStream, SMTPServerSession } from 'smtp-server';
import { DEFAULT_SMTP_LIMITS, type MxNodeConfig } from '../shared/config.js';
import { HEADER_PROBLEM_CODE, HEADER_PROBLEM_STATUS, headerSectionProblem } from '../shared/message-guard.js';
import { messageIdOf, receivedHeader } from '../shared/headers.js';
import type { NodeContext, RunningRole } from '../shared/node.js';
import type { MxContract, MxEvents } from './api.js';
import { SmtpClientError, SmtpClientPool } from '../shared/smtp-client.js';
import { createSmtpServer, listen, readMessage, sessionTls, smtpTlsOptions } from '../shared/smtp-server.js';
import { smtpReply } from '../shared/smtp-reply.js';

const MAX_MESSAGE_SIZE = 50 * 1024 * 1024;

export interface MxOptions {
  /** Largest message accepted (advertised as SIZE, RFC 1870), in octets. Default config.limits.maxMessageSize, else 50 MiB, the mailbox server's limit. */
  maxMessageSize?: number;
}

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

  // Fires when a sender's connection closes during its transaction. The sender (killed, cut off) never hears our
  // reply and will send the message again, so the hand-off to the mailbox server is abandoned: what LMTP had not
  // stored yet is not stored, and the retry does not make a second copy.
  const gone = new WeakMap<SMTPServerSession, AbortController>();
  const senderOf = (session: SMTPServerSession) => {
    let controller = gone.get(session);
    if (!controller) gone.set(session, (controller = new AbortController()));
    return controller;
  };

  const server = createSmtpServer({
    greetingDelayMs: config.greetingDelayMs,
    maxConnectionsPerClient: limits.maxConnectionsPerClient,
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

    const hop = `LMTP ${config.lmtp.host}:${config.lmtp.port}`;
    try {
      const result = await lmtp.send({ host: config.lmtp.host, port: config.lmtp.port }, { from, to }, message, { signal: senderOf(session).signal });
      const failed = result.recipients.filter((r) => !r.accepted);
      events.emit({ kind: 'handoff', messageId, queueId: id, detail: { to: hop, recipients: result.recipients } });
      if (failed.length === 0) return `2.0.0 Ok: delivered as ${id}`;
      // SMTP has one reply for DATA: any temporary failure asks the sender to retry (a recipient already
      // delivered may then get a duplicate, the accepted risk RFC 5321 §6.1 prefers to loss).
      const temporary = failed.find((r) => r.code >= 400 && r.code < 500);
      if (temporary || failed.length < result.recipients.length) {
        throw smtpReply(451, `4.3.0 mailbox server refused ${failed.map((r) => r.address).join(', ')}: ${(temporary ?? failed[0])!.reply}`);
      }
      throw smtpReply(550, `5.1.1 mailbox server refused: ${failed[0]!.reply}`);
    } catch (err) {
      if ((err as { responseCode?: number }).responseCode) throw err;
      const why = err instanceof SmtpClientError ? err.message : (err as Error).message;
      events.emit({ kind: 'handoff-failed', messageId, queueId: id, detail: { to: hop, error: why } });
      throw smtpReply(451, `4.3.0 mailbox server unavailable, try again later (${hop}: ${why})`);
    }
  }

  server.on('error', () => undefined);
  await listen(server, config.address, config.ports.smtp, 'smtp');
  const address = server.server.address();
  const port = typeof address === 'object' && address ? address.port : config.ports.smtp;

  return {
    services: { smtp: { host: config.address, port } },
    rpc: {},
    async stop() {
      await new Promise<void>((resolve) => server.close(() => resolve()));
      lmtp.close();
    },
  };
}
