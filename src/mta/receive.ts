// The MTA's two SMTP services:
// - submission (RFC 6409, port 587): AUTH PLAIN/LOGIN (RFC 4954) required before MAIL FROM; an authenticated user may
//   send to anyone (relaying), but only from its own address; the message gets a Message-ID and a Date when it lacks
//   them (RFC 6409 §8.2, §8.3).
// - smtp (port 25, no AUTH): the MTA as final destination of config.localDomains only; anything else is relaying,
//   refused. The null sender is accepted (bounces of mail we sent come back this way). Messages are not modified
//   beyond the trace header (RFC 5321 §6.4 §7.9).
// Both add a Received header (RFC 5321 §4.4) and answer 250 only once the message is durably queued.
// Replies carry RFC 3463 enhanced status codes in their text. ENHANCEDSTATUSCODES is not advertised, because
// smtp-server would then prefix its own guess (e.g. 5.1.1 for every 550), wrong for relay denials and the like.
import { timingSafeEqual } from 'node:crypto';
import net from 'node:net';
import type { SMTPServer, SMTPServerAddress, SMTPServerDataStream, SMTPServerSession } from 'smtp-server';
import type { MtaNodeConfig, UserConfig } from '../shared/config.js';
import type { EventLog } from '../shared/events.js';
import { headerValue, messageIdOf, receivedHeader, rfc5322Date } from '../shared/headers.js';
import { createSmtpServer } from '../shared/smtp-server.js';
import { compactDate, type MtaEngine } from './engine.js';
import type { MtaEvents, QueueOrigin } from './api.js';
import { smtpReply, type SmtpReply } from '../shared/smtp-reply.js';

/** Largest message accepted, advertised with SIZE (RFC 1870). Postfix's message_size_limit default is 10 MB. */
export const MESSAGE_SIZE_LIMIT = 25 * 1024 * 1024;

export type Service = 'smtp' | 'submission';

export interface ReceiverOptions {
  config: Pick<MtaNodeConfig, 'hostname' | 'localDomains' | 'users' | 'greetingDelayMs'>;
  engine: MtaEngine;
  events: EventLog<MtaEvents>;
  log(message: string): void;
  sizeLimit?: number;
}

function domainOf(address: string): string {
  const at = address.lastIndexOf('@');
  return at < 0 ? '' : address.slice(at + 1).toLowerCase();
}

/**
 * Whether two addresses name the same mailbox. Domains are case-insensitive (RFC 5321 §2.4); local parts are
 * formally case-sensitive, but only the receiving system may tell, and we are it: our users are case-insensitive.
 */
export function sameAddress(a: string, b: string): boolean {
  return a.toLowerCase() === b.toLowerCase();
}

function clientAddress(session: SMTPServerSession): string {
  const ip = session.remoteAddress.replace(/^::ffff:(?=\d+\.)/, '');
  return net.isIPv6(ip) ? `IPv6:${ip}` : ip;
}

/** The user a login names: the full address, or the local part when only one user has it. */
export function findUser(users: UserConfig[], login: string): UserConfig | undefined {
  const wanted = login.trim().toLowerCase();
  const exact = users.find((u) => u.address.toLowerCase() === wanted);
  if (exact || wanted.includes('@')) return exact;
  const byLocal = users.filter((u) => u.address.toLowerCase().split('@')[0] === wanted);
  return byLocal.length === 1 ? byLocal[0] : undefined;
}

function passwordMatches(given: string, expected: string): boolean {
  const a = Buffer.from(given);
  const b = Buffer.from(expected);
  return a.length === b.length && timingSafeEqual(a, b);
}

/** Inserts header lines at the end of the header section of `raw` (before the empty line). */
export function appendHeaders(raw: Buffer, lines: string[]): Buffer {
  if (lines.length === 0) return raw;
  let end = raw.indexOf('\r\n\r\n');
  let eol = '\r\n';
  const lf = raw.indexOf('\n\n');
  if (lf >= 0 && (end < 0 || lf < end)) {
    end = lf;
    eol = '\n';
  }
  const text = Buffer.from(lines.map((l) => l + eol).join(''));
  if (raw.subarray(0, 2).equals(Buffer.from('\r\n')) || raw[0] === 0x0a) return Buffer.concat([text, raw]); // no headers at all
  if (end < 0) {
    // Headers only, no body.
    const endsWithEol = raw.length > 0 && raw[raw.length - 1] === 0x0a;
    return Buffer.concat([raw, Buffer.from(endsWithEol ? '' : '\r\n'), text]);
  }
  const at = end + eol.length;
  return Buffer.concat([raw.subarray(0, at), text, raw.subarray(at)]);
}

type ReceivedProtocol = Parameters<typeof receivedHeader>[0]['protocol'];

/** The `with` protocol of the Received header (RFC 3848): ESMTP, plus S for TLS and A for an authenticated client. */
function receivedProtocol(session: SMTPServerSession): ReceivedProtocol {
  if (/^HELO$/i.test(session.openingCommand || '')) return 'SMTP';
  const suffix = `${session.secure ? 'S' : ''}${session.user ? 'A' : ''}`;
  return suffix === 'S' ? 'ESMTPS' : suffix === 'A' ? 'ESMTPA' : suffix === 'SA' ? 'ESMTPSA' : 'ESMTP';
}

export function createReceivers(options: ReceiverOptions): Record<Service, SMTPServer> {
  return { smtp: createReceiver(options, 'smtp'), submission: createReceiver(options, 'submission') };
}

function createReceiver(options: ReceiverOptions, service: Service): SMTPServer {
  const { config, engine, events } = options;
  const sizeLimit = options.sizeLimit ?? MESSAGE_SIZE_LIMIT;
  const localDomains = new Set(config.localDomains.map((d) => d.toLowerCase()));
  const submission = service === 'submission';

  /** The inbound hop, e.g. `client.test[127.0.0.1] -> mta.sender.test (submission)`. */
  const hopOf = (session: SMTPServerSession) => `${session.hostNameAppearsAs || 'unknown'}[${clientAddress(session)}] -> ${config.hostname} (${service})`;

  const refuse = (session: SMTPServerSession, stage: string, err: SmtpReply, extra: Record<string, unknown> = {}) => {
    const envelope = session.envelope;
    events.emit({
      kind: 'rejected',
      detail: {
        service,
        stage,
        reply: `${err.responseCode} ${err.message}`,
        from: envelope.mailFrom ? envelope.mailFrom.address : null,
        to: envelope.rcptTo.map((r) => r.address),
        client: clientAddress(session),
        helo: session.hostNameAppearsAs || null,
        hop: hopOf(session),
        ...(session.user ? { user: session.user as string } : {}),
        ...extra,
      },
    });
    return err;
  };

  const server = createSmtpServer({
    greetingDelayMs: config.greetingDelayMs,
    name: config.hostname,
    banner: `maillab MTA (${service})`,
    size: sizeLimit,
    rejectOversized: true,
    // Authentication is checked in onMailFrom (not by smtp-server), so refusals get our reply and a `rejected` event.
    authOptional: true,
    ...(submission
      ? // No TLS yet, so AUTH in plaintext must be allowed; STARTTLS (RFC 3207) will come with certificates.
        { authMethods: ['PLAIN', 'LOGIN'], allowInsecureAuth: true, disabledCommands: ['STARTTLS'] }
      : { disabledCommands: ['AUTH', 'STARTTLS'] }),
    hideSTARTTLS: true,
    logger: false,
    closeTimeout: 1000,

    onAuth(auth, session, callback) {
      const user = findUser(config.users, auth.username ?? '');
      // RFC 4616: an authorization identity other than the user itself would be acting for someone else; refused.
      const authzOk = !auth.authzid || (user !== undefined && sameAddress(auth.authzid, user.address)) || auth.authzid === auth.username;
      if (!user || !authzOk || !passwordMatches(auth.password ?? '', user.password)) {
        const err = smtpReply(535, '5.7.8 Authentication credentials invalid');
        events.emit({ kind: 'auth-failed', detail: { service, user: auth.username ?? null, method: auth.method, reply: `535 ${err.message}`, client: clientAddress(session), hop: hopOf(session) } });
        return callback(err);
      }
      callback(null, { user: user.address });
    },

    onMailFrom(address: SMTPServerAddress, session: SMTPServerSession, callback: (err?: Error | null) => void) {
      const from = address.address;
      if (submission) {
        const user = session.user as string | undefined;
        if (!user) return callback(refuse(session, 'MAIL FROM', smtpReply(530, '5.7.0 Authentication required: AUTH PLAIN or LOGIN first'), { attempted: from }));
        // RFC 6409 §6.1: the MSA checks that the submitter may use the sender address.
        if (!sameAddress(from, user)) {
          return callback(refuse(session, 'MAIL FROM', smtpReply(553, `5.7.1 <${from}>: sender address rejected: not owned by user ${user}`), { attempted: from }));
        }
      }
      callback();
    },

    onRcptTo(address: SMTPServerAddress, session: SMTPServerSession, callback: (err?: Error | null) => void) {
      const rcpt = address.address;
      if (!submission && !localDomains.has(domainOf(rcpt))) {
        return callback(refuse(session, 'RCPT TO', smtpReply(550, `5.7.1 <${rcpt}>: relay access denied (${config.hostname} is not the destination of ${domainOf(rcpt) || 'that address'}; log in on the submission port to relay)`), { attempted: rcpt }));
      }
      callback();
    },

    onData(stream: SMTPServerDataStream, session: SMTPServerSession, callback: (err?: Error | null, message?: string) => void) {
      receive(stream, session).then(
        (text) => callback(null, text),
        (err: Error) => callback(err),
      );
    },
  });
  server.on('error', (err) => options.log(`${service}: ${err.message}`));

  async function receive(stream: SMTPServerDataStream, session: SMTPServerSession): Promise<string> {
    const chunks: Buffer[] = [];
    for await (const chunk of stream) chunks.push(chunk as Buffer);
    if (stream.sizeExceeded) throw refuse(session, 'DATA', smtpReply(552, `5.3.4 message exceeds the size limit of ${sizeLimit} octets`), { size: stream.byteLength });

    const from = session.envelope.mailFrom ? session.envelope.mailFrom.address : '';
    const to = session.envelope.rcptTo.map((r) => r.address);
    const user = session.user as string | undefined;
    const queueId = engine.queue.newId();
    let data: Buffer = Buffer.concat(chunks);
    const now = new Date();
    if (submission) {
      const missing: string[] = [];
      if (!headerValue(data, 'message-id')) missing.push(`Message-ID: <${compactDate(now.getTime())}.${queueId}@${config.hostname}>`);
      if (!headerValue(data, 'date')) missing.push(`Date: ${rfc5322Date(now)}`);
      data = appendHeaders(data, missing);
    }
    const helo = session.hostNameAppearsAs || 'unknown';
    const protocol = receivedProtocol(session);
    const trace = receivedHeader({ helo, clientAddress: clientAddress(session), by: config.hostname, protocol, id: queueId, ...(to.length === 1 ? { for: to[0] } : {}), date: now });
    data = Buffer.concat([Buffer.from(trace, 'latin1'), data]);
    const messageId = messageIdOf(data);
    const origin: QueueOrigin = { kind: service === 'submission' ? 'submission' : 'smtp', protocol, helo, client: clientAddress(session), ...(user ? { user } : {}) };

    try {
      await engine.accept({ queueId, from, to, data, ...(messageId ? { messageId } : {}), origin }, () => {
        const detail = submission ? { user, from, to, size: data.length } : { from, to, size: data.length, client: origin.client, helo };
        events.emit({ kind: submission ? 'submitted' : 'received', queueId, ...(messageId ? { messageId } : {}), detail });
      });
    } catch (err) {
      options.log(`${service}: cannot queue a message: ${(err as Error).stack ?? String(err)}`);
      events.emit({ kind: 'error', detail: { service, error: `cannot queue the message: ${(err as Error).message}`, from, to } });
      throw refuse(session, 'DATA', smtpReply(451, '4.3.0 local error: the message could not be queued, try again later'));
    }
    return `2.0.0 Ok: queued as ${queueId}`;
  }

  return server;
}
