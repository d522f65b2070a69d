// The outbound SMTP/LMTP client every node uses (MTA relaying, MTA and MX handing off to the mailbox over LMTP),
// on nodemailer's low-level SMTPConnection. It adds what a mail server needs from a client and nodemailer does not
// give directly:
// - a connection cache per target (host:port), like Postfix's scache: after a transaction the session stays open
//   for `idleMs` and the next transaction to the same target reuses it, saving the TCP handshake, the greeting and
//   EHLO. A cached session the server has meanwhile dropped is detected on use and the transaction is retried once
//   on a fresh connection, but only when the message body had not started (no risk of a duplicate delivery).
// - results per recipient (RCPT replies, the DATA reply, or LMTP's per-recipient DATA replies, RFC 2033 §4.2),
//   with reply codes and enhanced status codes (RFC 3463) parsed.
// - one typed error, SmtpClientError, for whatever ended a transaction as a whole, naming the hop, the command and
//   the reply, and telling whether the failure is temporary.
// - the MAIL FROM parameters a message needs (envelope `body`, `smtputf8`): BODY=8BITMIME (RFC 6152) when the server
//   offers 8BITMIME, else the 7-bit copy the caller gives (`sevenBit`) or a local 554 5.6.3; SMTPUTF8 (RFC 6531)
//   when the server offers it, else a local 553 5.6.7 before MAIL FROM (nodemailer by itself adds SMTPUTF8 only for
//   a non-ASCII address, and sends an 8-bit message without BODY= to a server that lacks 8BITMIME).
// - a TLS policy per target (`tls`: none / may / encrypt / verify): under encrypt and verify a session without
//   STARTTLS, or (verify) with a certificate that does not chain to the pool's `ca` or does not name `servername`,
//   is refused before MAIL FROM (SmtpClientError with `tlsRequired`, saying why).
//
// Targets are connected by address: pass an IP as `host` (a host name would go through the system resolver, which
// lab nodes never use) and the server's name as `servername` (TLS SNI, and how the target is named in messages).
import net from 'node:net';
import tls from 'node:tls';
import type { OutboundTlsPolicy } from './config.js';
import { verifyDane, type TlsaAssociation } from './dane.js';
import { tlsInfo, type TlsInfo } from './tls-session.js';
import { Readable } from 'node:stream';
import SMTPConnection from 'nodemailer/lib/smtp-connection';

/** Where a transaction failed or ended. `lmtp`: the per-recipient replies after the data, in LMTP. */
export type SmtpStage = 'connect' | 'greeting' | 'ehlo' | 'mail' | 'rcpt' | 'data' | 'lmtp';

export interface SmtpTarget {
  /** IP address to connect to. */
  host: string;
  port: number;
  /** The server's host name (e.g. the MX name): TLS SNI, and shown in messages as `name[ip]:port`. */
  servername?: string;
  /**
   * TLS of this connection (see TlsPolicyMode): `encrypt` and `verify` fail the session (SmtpClientError with
   * `tlsRequired`) before MAIL FROM when the server does not offer STARTTLS or, for `verify`, when its certificate
   * does not chain to the pool's `ca` or does not carry `servername`. Absent: the pool's `starttls` option.
   * `mta-sts` is `verify` for an MX that an MTA-STS policy in `enforce` mode lists; `dane` requires STARTTLS and a
   * certificate chain that matches `tlsa` for `servername` (RFC 7672).
   */
  tls?: OutboundTlsPolicy;
  /** The TLSA records of the server (policy `dane`). */
  tlsa?: readonly TlsaAssociation[];
  /**
   * Report in SendResult.tlsAudit what `verify` would have said of the session, without enforcing it (MTA-STS in
   * `testing` mode: deliver, and report a failure).
   */
  audit?: boolean;
}

/** Why a session that had to be encrypted (policy `encrypt` or `verify`) was not used. */
export interface TlsRequiredFailure {
  policy: OutboundTlsPolicy;
  problem: 'no-starttls' | 'certificate' | 'tlsa-mismatch';
  /** For humans, e.g. `the server did not offer STARTTLS`, `the certificate of mx.receiver.test failed verification: certificate has expired (CERT_HAS_EXPIRED)`. */
  reason: string;
  /** The OpenSSL or Node.js code of a certificate problem, e.g. CERT_HAS_EXPIRED, ERR_TLS_CERT_ALTNAME_INVALID. */
  code?: string;
}

export interface SmtpEnvelope {
  /** Envelope sender; '' is the null sender (MAIL FROM:<>), used by bounces. */
  from: string;
  to: string[];
  /**
   * RFC 6152: `8BITMIME` for a message with octets above 127 in its body: sent as BODY=8BITMIME where the server
   * offers 8BITMIME; where it does not, the `sevenBit` copy goes instead (or the transaction is refused locally with
   * 554 5.6.3). Absent or `7BIT`: no BODY= parameter (7BIT is the default, RFC 6152 §2).
   */
  body?: '7BIT' | '8BITMIME';
  /**
   * RFC 6531: the message needs SMTPUTF8 (UTF-8 in an address or a header, see needsSmtpUtf8): sent as SMTPUTF8
   * where the server offers it, else refused locally with 553 5.6.7 (RFC 6531 §3.2) before MAIL FROM.
   */
  smtputf8?: boolean;
}

/** Options of one transaction. */
export interface SendOptions {
  /** Abandons the transaction (see SmtpClientPool#transact). */
  signal?: AbortSignal;
  /**
   * The message converted to 7-bit (RFC 6152 §3), sent instead of `message` when the envelope says `8BITMIME` and the
   * server does not offer 8BITMIME. Called only then; a throw (the message cannot be converted) refuses the
   * transaction with 554 5.6.3, naming why. Absent: such a transaction is refused with 554 5.6.3.
   */
  sevenBit?: () => MessageSource;
}

/** Octets above 127 anywhere in the message: a message with them is 8-bit (RFC 6152) and needs BODY=8BITMIME. */
export function has8BitOctets(data: Buffer | string): boolean {
  const bytes = typeof data === 'string' ? Buffer.from(data) : data;
  for (const byte of bytes) if (byte > 0x7f) return true;
  return false;
}

/** The header section of a message: up to its first empty line (CRLF CRLF, or a bare LF LF), or all of it. */
function headerBytes(data: Buffer): Buffer {
  const crlf = data.indexOf('\r\n\r\n');
  const lf = data.indexOf('\n\n');
  const ends = [crlf, lf].filter((i) => i >= 0);
  if (data[0] === 0x0a || data.subarray(0, 2).toString('latin1') === '\r\n') return data.subarray(0, 0);
  return ends.length ? data.subarray(0, Math.min(...ends)) : data;
}

/**
 * Whether a message needs SMTPUTF8 (RFC 6531 §3.2, RFC 6532): a non-ASCII character in the envelope sender or a
 * recipient, or an octet above 127 in the header section (UTF-8 headers). 8-bit octets in the body alone need only
 * 8BITMIME. What the sender declared does not count: a message declared SMTPUTF8 that needs none of it goes on
 * without it, as Postfix does, instead of bouncing where the next hop lacks the extension.
 */
export function needsSmtpUtf8(envelope: Pick<SmtpEnvelope, 'from' | 'to'>, data: Buffer | string): boolean {
  if ([envelope.from, ...envelope.to].some((a) => /[^\x00-\x7f]/.test(a))) return true;
  return has8BitOctets(headerBytes(typeof data === 'string' ? Buffer.from(data) : data));
}

/**
 * The message as sent (CRLF line endings; the client dot-stuffs). A Buffer or a stream factory lets the pool retry a
 * transaction on a fresh connection; a plain stream can be sent once only.
 */
export type MessageSource = Buffer | string | Readable | (() => Readable);

export interface RecipientResult {
  address: string;
  accepted: boolean;
  /** Reply code that decided this recipient (the RCPT reply when it was refused, else the data reply). */
  code: number;
  /** Enhanced status code (RFC 3463), e.g. `5.1.1`, when the reply had one. */
  enhanced?: string;
  /** The full reply text, e.g. `550 5.1.1 <bob@x.test>: no such user`. */
  reply: string;
  /** Which reply it was: to RCPT TO, to the data (SMTP), or the recipient's own reply after the data (LMTP). */
  stage: 'rcpt' | 'data' | 'lmtp';
  /** The command that reply answered, e.g. `RCPT TO:<bob@x.test>` or `DATA`. */
  command: string;
}

export interface SendResult {
  /** `name[ip]:port` or `ip:port`. */
  target: string;
  /** One entry per distinct envelope recipient, in envelope order. */
  recipients: RecipientResult[];
  accepted: string[];
  rejected: string[];
  /** The last stage the transaction reached: `rcpt` when every recipient was refused, else `data` (or `lmtp`). */
  stage: SmtpStage;
  /** Final reply to the message data (in LMTP, the last recipient's), absent when the data was never sent. */
  dataReply?: string;
  /** The transaction ran on a cached connection. */
  reused: boolean;
  /** A cached connection turned out dead and the transaction went over a fresh one. */
  retried: boolean;
  /** The TLS version and cipher of the connection (after STARTTLS), null when it was plaintext. */
  tls?: TlsInfo | null;
  /** With `target.audit`: why `verify` would have refused the session, or null when it would have passed. */
  tlsAudit?: TlsRequiredFailure | null;
  /** The MAIL FROM parameters sent (e.g. `['BODY=8BITMIME', 'SMTPUTF8']`), besides SIZE. */
  mailParams?: string[];
  /** The 7-bit copy (SendOptions.sevenBit) was sent, because the server does not offer 8BITMIME. */
  converted7bit?: boolean;
}

/** What ended a transaction as a whole (no per-recipient answer): connection, greeting, EHLO, MAIL, lost session. */
export class SmtpClientError extends Error {
  override readonly name = 'SmtpClientError';
  readonly stage: SmtpStage;
  /** `name[ip]:port` or `ip:port`. */
  readonly target: string;
  /** The command in flight, e.g. `MAIL FROM:<a@b.test>`, `EHLO`, or `connect`. */
  readonly command: string;
  /** Reply code when the server answered (or a code standing for a local refusal, e.g. 552 for SIZE). */
  readonly code?: number;
  readonly enhanced?: string;
  /** The server's reply text, when there was one. */
  readonly reply?: string;
  /** True when a later attempt may succeed (connection failures, timeouts, 4xx); false for 5xx. */
  readonly temporary: boolean;
  /** The system or nodemailer error code (ECONNREFUSED, ETIMEDOUT, ECONNECTION...), when there is no reply. */
  readonly errno?: string;
  /** Set when the session was not used because TLS was required (policy `encrypt`/`verify`) and not achieved. */
  readonly tlsRequired?: TlsRequiredFailure;

  constructor(init: { stage: SmtpStage; target: string; command: string; description: string; reply?: string; code?: number; enhanced?: string; errno?: string; temporary?: boolean; tlsRequired?: TlsRequiredFailure }) {
    const parsed = init.reply ? parseReply(init.reply) : undefined;
    const code = init.code ?? parsed?.code;
    super(`${init.target}: ${init.description}${init.reply ? `: ${oneLine(init.reply)}` : init.errno ? ` (${init.errno})` : ''}`);
    this.stage = init.stage;
    this.target = init.target;
    this.command = init.command;
    if (code !== undefined) this.code = code;
    const enhanced = init.enhanced ?? parsed?.enhanced;
    if (enhanced !== undefined) this.enhanced = enhanced;
    if (init.reply !== undefined) this.reply = init.reply;
    if (init.errno !== undefined) this.errno = init.errno;
    if (init.tlsRequired !== undefined) this.tlsRequired = init.tlsRequired;
    this.temporary = init.temporary ?? (code === undefined || code < 500);
  }
}

export interface ParsedReply {
  /** The three-digit reply code, undefined when the text does not start with one. */
  code?: number;
  /** Enhanced status code (RFC 3463 / RFC 2034), when the first line carries one. */
  enhanced?: string;
  /** The text of every line without the codes, joined with spaces. */
  text: string;
}

/** Splits an SMTP reply (possibly multi-line) into its code, enhanced status code and text. */
export function parseReply(reply: string): ParsedReply {
  const lines = reply.split(/\r?\n/).filter((l) => l.length > 0);
  const first = /^(\d{3})(?:[ -]|$)(?:([245]\.\d{1,3}\.\d{1,3})(?:\s|$))?/.exec(lines[0] ?? '');
  const text = lines.map((l) => l.replace(/^\d{3}[ -]?(?:[245]\.\d{1,3}\.\d{1,3}\s?)?/, '')).join(' ').trim();
  const result: ParsedReply = { text };
  if (first) {
    result.code = Number(first[1]);
    if (first[2]) result.enhanced = first[2];
  }
  return result;
}

function oneLine(reply: string): string {
  return reply.replace(/\r?\n/g, ' / ');
}

export interface SmtpClientPoolOptions {
  /** Our name in EHLO/LHLO. */
  ehloName: string;
  /** Speak LMTP (LHLO, one reply per recipient after the data) instead of SMTP. */
  lmtp?: boolean;
  /** Time to establish the TCP connection. */
  connectTimeoutMs: number;
  /** How long a session stays cached after a transaction; 0 closes every session after its transaction. */
  idleMs: number;
  /** Time from connecting to the end of EHLO (greeting included). Default 30 s. */
  greetingTimeoutMs?: number;
  /** Inactivity allowed within a transaction. Default 60 s. */
  socketTimeoutMs?: number;
  /**
   * Inactivity allowed from the start of the message data to the reply to its final dot (RFC 5321 §4.5.3.2 gives the
   * end-of-data reply 10 minutes: a receiver may take long to process a message). Default socketTimeoutMs.
   */
  dataTimeoutMs?: number;
  /** Sessions cached per target at most. Default 16. */
  maxIdlePerTarget?: number;
  /** Source address of outbound connections (the node's own address, so servers see who is talking). */
  localAddress?: string;
  /** STARTTLS when the server offers it, continuing in plaintext if it fails (RFC 3207, like Postfix's "may"). Default 'opportunistic'. */
  starttls?: 'opportunistic' | 'ignore';
  /** PEM CA certificate(s) a server's certificate must chain to under the `verify` policy (the lab CA). */
  ca?: string;
}

export interface PoolStats {
  /** Connections opened so far (successful or not). */
  opened: number;
  /** Transactions that ran on a cached session. */
  reused: number;
  /** Cached sessions that were found dead when reused (the transaction was retried on a fresh one). */
  staleRetries: number;
  idle: number;
  busy: number;
}

interface Session {
  conn: SMTPConnection;
  key: string;
  target: string;
  /** Set once the session errored or ended: never reuse it. */
  dead: boolean;
  /** Add SMTPUTF8 to the next MAIL FROM (the transaction needs it and nodemailer would not add it). */
  smtputf8?: boolean;
  /** LMTP: the reply to the data for each accepted recipient of the transaction in flight, in order (RFC 2033 §4.2). */
  lmtpReplies: Map<string, string>;
  /** What `verify` would say of this session (computed once it is up, with the pool's `ca`). */
  audit?: TlsRequiredFailure | null;
  idleTimer?: NodeJS.Timeout;
}

/** Failure of a cached session before the message body started: safe to retry on a fresh connection. */
class StaleSession extends Error {}

/** A pool of outbound SMTP or LMTP sessions, cached per target. */
export class SmtpClientPool {
  private readonly idle = new Map<string, Session[]>();
  private readonly busy = new Set<Session>();
  private closed = false;
  private readonly counters = { opened: 0, reused: 0, staleRetries: 0 };

  constructor(private readonly options: SmtpClientPoolOptions) {}

  stats(): PoolStats {
    let idle = 0;
    for (const list of this.idle.values()) idle += list.length;
    return { ...this.counters, idle, busy: this.busy.size };
  }

  /**
   * Runs one mail transaction. Resolves with per-recipient results whenever the server answered for the recipients
   * (even if it refused all of them); rejects with SmtpClientError when the transaction failed as a whole.
   */
  async send(target: SmtpTarget, envelope: SmtpEnvelope, message: MessageSource, options: SendOptions = {}): Promise<SendResult> {
    if (this.closed) throw new Error('SmtpClientPool is closed');
    const to = [...new Set(envelope.to)];
    const display = describeTarget(target);
    if (to.length === 0) throw new SmtpClientError({ stage: 'rcpt', target: display, command: 'RCPT TO', description: 'no recipients', temporary: false });
    const canRetry = typeof message !== 'object' || Buffer.isBuffer(message) || typeof (message as Readable).pipe !== 'function';
    const cached = this.takeIdle(keyOf(target));
    if (cached) {
      this.counters.reused++;
      try {
        return await this.transact(cached, { ...envelope, to }, message, true, canRetry, options);
      } catch (err) {
        if (!(err instanceof StaleSession)) throw err;
        this.counters.staleRetries++;
      }
      const fresh = await this.open(target);
      const result = await this.transact(fresh, { ...envelope, to }, message, false, false, options);
      return { ...result, retried: true };
    }
    const fresh = await this.open(target);
    return this.transact(fresh, { ...envelope, to }, message, false, false, options);
  }

  /** Closes every cached session (QUIT) and the busy ones once their transaction ends. */
  close(): void {
    this.closed = true;
    for (const list of this.idle.values()) for (const session of list) this.discard(session, true);
    this.idle.clear();
  }

  private takeIdle(key: string): Session | undefined {
    const list = this.idle.get(key);
    while (list && list.length) {
      // Most recently used first: the one least likely to have hit the server's idle timeout.
      const session = list.pop()!;
      clearTimeout(session.idleTimer);
      if (!session.dead && !session.conn.destroyed) {
        if (!list.length) this.idle.delete(key);
        this.busy.add(session);
        return session;
      }
    }
    this.idle.delete(key);
    return undefined;
  }

  private release(session: Session): void {
    this.busy.delete(session);
    const max = this.options.maxIdlePerTarget ?? 16;
    const list = this.idle.get(session.key) ?? [];
    if (this.closed || session.dead || session.conn.destroyed || this.options.idleMs <= 0 || list.length >= max) {
      this.discard(session, !session.dead);
      return;
    }
    session.idleTimer = setTimeout(() => {
      const current = this.idle.get(session.key);
      const i = current ? current.indexOf(session) : -1;
      if (current && i >= 0) current.splice(i, 1);
      if (current && !current.length) this.idle.delete(session.key);
      this.discard(session, true);
    }, this.options.idleMs);
    session.idleTimer.unref();
    list.push(session);
    this.idle.set(session.key, list);
  }

  private discard(session: Session, polite: boolean): void {
    clearTimeout(session.idleTimer);
    this.busy.delete(session);
    const wasDead = session.dead;
    session.dead = true;
    try {
      if (polite && !wasDead && !session.conn.destroyed) session.conn.quit();
      else session.conn.close();
    } catch {
      session.conn.close();
    }
  }

  /** Connects and runs the greeting and EHLO/LHLO (and STARTTLS when offered). */
  private open(target: SmtpTarget): Promise<Session> {
    this.counters.opened++;
    const display = describeTarget(target);
    const policy = policyOf(target, this.options);
    const opportunistic = policy !== 'none';
    const conn = new SMTPConnection({
      host: target.host,
      port: target.port,
      name: this.options.ehloName,
      lmtp: this.options.lmtp ?? false,
      secure: false,
      ignoreTLS: !opportunistic,
      opportunisticTLS: opportunistic,
      // The handshake never fails on the certificate: opportunistic TLS (RFC 7435) does not authenticate, and under
      // `verify` the certificate is checked once the session is up (before MAIL FROM), so the failure can say why.
      // The pool's CA is given whatever the policy, so that `authorized` says what `verify` would (an audit); but not
      // under `dane`, where Node would complete the chain from it, and a DANE-TA anchor must be one the server sent.
      tls: { rejectUnauthorized: false, ...(this.options.ca && policy !== 'dane' ? { ca: this.options.ca } : {}), ...(target.servername ? { servername: target.servername } : {}) },
      ...(target.servername ? { servername: target.servername } : {}),
      ...(this.options.localAddress ? { localAddress: this.options.localAddress } : {}),
      connectionTimeout: this.options.connectTimeoutMs,
      greetingTimeout: this.options.greetingTimeoutMs ?? 30_000,
      socketTimeout: this.options.socketTimeoutMs ?? 60_000,
      logger: false,
    });
    const session: Session = { conn, key: keyOf(target), target: display, dead: false, lmtpReplies: new Map() };
    adaptConnection(session);
    // SMTPConnection emits 'error' (and then 'end') when the session breaks; the transaction in flight gets the same
    // error through its callback. An idle session that breaks is simply dropped.
    conn.on('error', () => {
      session.dead = true;
    });
    conn.on('end', () => {
      session.dead = true;
      const list = this.idle.get(session.key);
      const i = list ? list.indexOf(session) : -1;
      if (list && i >= 0) {
        clearTimeout(session.idleTimer);
        list.splice(i, 1);
        if (!list.length) this.idle.delete(session.key);
      }
    });
    return new Promise<Session>((resolve, reject) => {
      let settled = false;
      const fail = (err: unknown) => {
        if (settled) return;
        settled = true;
        session.dead = true;
        const error = connectError(err, conn, display);
        conn.close();
        reject(error);
      };
      const ended = () => fail(Object.assign(new Error('connection closed before the session was ready'), { code: 'ECONNECTION' }));
      conn.once('error', fail);
      conn.once('end', ended);
      conn.connect((err) => {
        if (err) return fail(err);
        if (settled) return;
        const socket = (conn as unknown as { _socket?: net.Socket })._socket;
        const tlsFailure = requiredTlsFailure(policy, socket, target);
        if (tlsFailure) {
          settled = true;
          session.dead = true;
          conn.removeListener('error', fail);
          conn.removeListener('end', ended);
          try {
            conn.quit();
          } catch {
            conn.close();
          }
          const command = tlsFailure.problem === 'no-starttls' ? 'EHLO' : 'STARTTLS';
          return reject(new SmtpClientError({ stage: 'ehlo', target: display, command, description: `TLS required (policy ${policy}), but ${tlsFailure.reason}`, errno: tlsFailure.code ?? 'ETLSREQUIRED', tlsRequired: tlsFailure }));
        }
        if (target.audit) session.audit = requiredTlsFailure('verify', socket, target) ?? null;
        settled = true;
        conn.removeListener('error', fail);
        conn.removeListener('end', ended);
        this.busy.add(session);
        resolve(session);
      });
    });
  }

  /**
   * `signal` abandons the transaction: the connection is dropped at once, so the server, whatever it had read, sends
   * nothing on and (an LMTP server of the lab) stores nothing it had not stored yet. The MX uses it when its own
   * client goes away: that client never hears the reply and sends the message again.
   */
  private transact(session: Session, envelope: SmtpEnvelope, message: MessageSource, reused: boolean, canRetry: boolean, options: SendOptions = {}): Promise<SendResult> {
    const { conn } = session;
    const { signal } = options;
    if (signal?.aborted) {
      this.release(session);
      return Promise.reject(new SmtpClientError({ stage: 'mail', target: session.target, command: 'MAIL FROM', description: 'transaction abandoned before it began: the sender went away', errno: 'EABORTED' }));
    }
    // The extensions decide what the message may be sent as, before MAIL FROM: a refusal here leaves the session clean.
    const offered = supportedExtensions(conn);
    const mailFrom = `MAIL FROM:<${envelope.from}>`;
    const utf8Address = [envelope.from, ...envelope.to].find((a) => /[^\x00-\x7f]/.test(a));
    const smtputf8 = envelope.smtputf8 === true || utf8Address !== undefined;
    if (smtputf8 && !offered.has('SMTPUTF8')) {
      this.release(session);
      const why = utf8Address !== undefined ? `the address <${utf8Address}> is not ASCII` : 'a header is not ASCII';
      return Promise.reject(
        new SmtpClientError({ stage: 'mail', target: session.target, command: mailFrom, description: `the server does not offer SMTPUTF8, which the message needs (RFC 6531: ${why})`, code: 553, enhanced: '5.6.7', temporary: false }),
      );
    }
    const eightBit = envelope.body === '8BITMIME';
    let body = message;
    let converted = false;
    if (eightBit && !offered.has('8BITMIME')) {
      // RFC 6152 §3: to a server without 8BITMIME an 8-bit message goes converted to 7-bit, or not at all.
      let problem: string | undefined;
      if (!options.sevenBit) problem = 'and this hop does not convert it to 7-bit';
      else {
        try {
          body = options.sevenBit();
          // A message declared 8BITMIME but 7-bit in fact comes back as it was: nothing was converted.
          converted = body !== message;
        } catch (err) {
          problem = `and it cannot be converted to 7-bit: ${(err as Error).message}`;
        }
      }
      if (problem !== undefined) {
        this.release(session);
        return Promise.reject(
          new SmtpClientError({ stage: 'mail', target: session.target, command: mailFrom, description: `the server does not offer 8BITMIME, which the message needs (RFC 6152: 8-bit content), ${problem}`, code: 554, enhanced: '5.6.3', temporary: false }),
        );
      }
    }
    let bodyStarted = false;
    const socketOf = () => (conn as unknown as { _socket?: net.Socket })._socket;
    const { dataTimeoutMs } = this.options;
    const source = toReadable(body, () => {
      bodyStarted = true;
      if (dataTimeoutMs !== undefined) socketOf()?.setTimeout(dataTimeoutMs);
    });
    const size = Buffer.isBuffer(body) ? body.length : typeof body === 'string' ? Buffer.byteLength(body) : undefined;
    const lmtp = this.options.lmtp ?? false;
    session.smtputf8 = smtputf8;
    session.lmtpReplies.clear();
    const send8bit = eightBit && offered.has('8BITMIME');
    const mailParams = [...(smtputf8 ? ['SMTPUTF8'] : []), ...(send8bit ? ['BODY=8BITMIME'] : [])];
    const extra = { ...(mailParams.length ? { mailParams } : {}), ...(converted ? { converted7bit: true } : {}) };
    return new Promise<SendResult>((resolve, reject) => {
      // nodemailer never calls back for a transaction whose connection we close: the abandonment settles it.
      const abandon = () => {
        this.discard(session, false);
        reject(new SmtpClientError({ stage: bodyStarted ? (lmtp ? 'lmtp' : 'data') : 'mail', target: session.target, command: bodyStarted ? 'end of data' : 'MAIL FROM', description: 'transaction abandoned: the sender went away', errno: 'EABORTED' }));
      };
      signal?.addEventListener('abort', abandon, { once: true });
      // use8BitMime: nodemailer's way to send BODY=8BITMIME (it checks the offer too).
      conn.send({ from: envelope.from, to: envelope.to, ...(size !== undefined ? { size } : {}), ...(send8bit ? { use8BitMime: true } : {}) }, source, (err, info) => {
        signal?.removeEventListener('abort', abandon);
        // The data is answered (or the transaction failed): the next one starts with the command timeout again.
        if (dataTimeoutMs !== undefined && bodyStarted) socketOf()?.setTimeout(this.options.socketTimeoutMs ?? 60_000);
        if (!err) {
          // The transaction completed (the server answered the data): the session is clean for the next one.
          const tls = tlsInfo((conn as unknown as { _socket?: net.Socket })._socket);
          this.release(session);
          return resolve({ ...successResult(session.target, envelope, info, lmtp ? session.lmtpReplies : undefined, reused), tls, ...(session.audit !== undefined ? { tlsAudit: session.audit } : {}), ...extra });
        }
        const state = envelopeState(conn);
        if (isAnsweredPerRecipient(err)) {
          // Every recipient has a reply (all refused at RCPT, or the data refused): a result, not an error.
          const result = { ...failedTransactionResult(session.target, envelope, err, state, lmtp, reused), ...extra };
          return void this.resetAndRelease(session).then(() => resolve(result));
        }
        const failure = transactionError(err, session.target, envelope, bodyStarted, lmtp, state);
        if (reused && canRetry && !bodyStarted && (failure.code === undefined || failure.code === 421)) {
          this.discard(session, false);
          return reject(new StaleSession(failure.message));
        }
        if (failure.stage === 'mail' && failure.reply && !session.dead && !conn.destroyed) {
          // MAIL refused with a reply: the session itself is fine.
          return void this.resetAndRelease(session).then(() => reject(failure));
        }
        this.discard(session, false);
        reject(failure);
      });
    });
  }

  /**
   * RSET before the session is reused, when a transaction was left open (RFC 5321 §4.1.1.5). Runs on the next turn:
   * nodemailer reports a 421 reply before it closes the session, and an RSET queued in between would never be answered.
   */
  private resetAndRelease(session: Session): Promise<void> {
    return new Promise((resolve) => {
      setImmediate(() => {
        const { conn } = session;
        if (session.dead || conn.destroyed) {
          this.discard(session, false);
          return resolve();
        }
        let done = false;
        const settle = (ok: boolean) => {
          if (done) return;
          done = true;
          conn.removeListener('end', onEnd);
          if (ok) this.release(session);
          else this.discard(session, false);
          resolve();
        };
        const onEnd = () => settle(false);
        conn.once('end', onEnd);
        conn.reset((err) => settle(!err));
      });
    });
  }
}

type NodemailerError = NonNullable<Parameters<Parameters<SMTPConnection['send']>[2]>[0]>;
type SendInfo = Parameters<Parameters<SMTPConnection['send']>[2]>[1];

/** The private parts of nodemailer's SMTPConnection this pool relies on (checked when a connection is made). */
interface ConnectionInternals {
  /** The extensions the server announced in its EHLO/LHLO reply, as nodemailer recognized them. */
  _supportedExtensions?: string[];
  _sendCommand(str: string, logStr?: string): void;
  _actionLMTPStream(recipient: string, final: boolean, str: string, callback: unknown): void;
}

function supportedExtensions(conn: SMTPConnection): Set<string> {
  return new Set((conn as unknown as ConnectionInternals)._supportedExtensions ?? []);
}

/**
 * Two additions to a connection, for what nodemailer does not offer:
 * - SMTPUTF8 on MAIL FROM when the transaction needs it for its headers alone (nodemailer adds it only for a
 *   non-ASCII address, RFC 6531 §3.4 asks it for UTF-8 headers too); the caller checked the server offers it.
 * - LMTP: the reply to the data of every recipient, in order, as it arrives (RFC 2033 §4.2); nodemailer keeps the
 *   refusals only and hands back the last reply, which would otherwise stand for every recipient.
 * Fails at once if a nodemailer upgrade renamed what it wraps, rather than losing the parameters silently.
 */
function adaptConnection(session: Session): void {
  const conn = session.conn as unknown as ConnectionInternals;
  if (typeof conn._sendCommand !== 'function' || typeof conn._actionLMTPStream !== 'function') {
    throw new Error('nodemailer SMTPConnection lacks _sendCommand/_actionLMTPStream: smtp-client.ts needs adapting to this nodemailer version');
  }
  const sendCommand = conn._sendCommand.bind(conn);
  conn._sendCommand = (str, logStr) => {
    const add = session.smtputf8 === true && /^MAIL FROM:/i.test(str) && !/\sSMTPUTF8(\s|$)/i.test(str);
    sendCommand(add ? `${str} SMTPUTF8` : str, add && logStr !== undefined ? `${logStr} SMTPUTF8` : logStr);
  };
  const lmtpStream = conn._actionLMTPStream.bind(conn);
  conn._actionLMTPStream = (recipient, final, str, callback) => {
    session.lmtpReplies.set(recipient, str);
    lmtpStream(recipient, final, str, callback);
  };
}

function keyOf(target: SmtpTarget): string {
  // A session set up under one TLS policy is not reused under another (a `may` session may be plaintext).
  // Nor is a DANE session reused once the TLSA records changed, nor an unaudited one where an audit is asked for.
  const tlsa = target.tlsa?.map((r) => `${r.usage}.${r.selector}.${r.matchingType}.${r.data.toString('hex')}`).join(',') ?? '';
  return `${target.host}|${target.port}|${target.servername ?? ''}|${target.tls ?? ''}|${tlsa}|${target.audit ? 'audit' : ''}`;
}

function policyOf(target: SmtpTarget, options: Pick<SmtpClientPoolOptions, 'starttls'>): OutboundTlsPolicy {
  return target.tls ?? ((options.starttls ?? 'opportunistic') === 'opportunistic' ? 'may' : 'none');
}

/**
 * Why a session set up under `policy` must not carry mail: no TLS when `encrypt`, `verify`, `mta-sts` or `dane`
 * required it; (for `verify` and `mta-sts`) a certificate that does not chain to the CA or does not carry the
 * server's name; (for `dane`) a chain that matches none of the TLSA records. Undefined: fine.
 */
export function requiredTlsFailure(policy: OutboundTlsPolicy, socket: net.Socket | undefined, target: SmtpTarget): TlsRequiredFailure | undefined {
  if (policy === 'none' || policy === 'may') return undefined;
  if (!socket || !(socket instanceof tls.TLSSocket) || !socket.encrypted) return { policy, problem: 'no-starttls', reason: 'the server did not offer STARTTLS' };
  if (policy === 'encrypt') return undefined;
  const name = target.servername ?? target.host;
  if (policy === 'dane') {
    const result = verifyDane(peerChain(socket), target.tlsa ?? [], name);
    return result.ok ? undefined : { policy, problem: 'tlsa-mismatch', reason: `the certificate of ${name} does not match its TLSA records: ${result.reason}`, code: 'TLSA_MISMATCH' };
  }
  if (!socket.authorized) {
    // An OpenSSL code (CERT_HAS_EXPIRED...), or the code of Node's host name check (ERR_TLS_CERT_ALTNAME_INVALID).
    const error = socket.authorizationError as unknown as Error | string | null;
    const code = typeof error === 'string' ? error : ((error as { code?: string } | null)?.code ?? String(error));
    const mismatch = code === 'ERR_TLS_CERT_ALTNAME_INVALID' ? tls.checkServerIdentity(name, socket.getPeerCertificate()) : undefined;
    const text = error instanceof Error ? error.message : (mismatch?.message ?? certificateProblem(code));
    return { policy, problem: 'certificate', reason: `the certificate of ${name} failed verification: ${text} (${code})`, code };
  }
  const mismatch = tls.checkServerIdentity(name, socket.getPeerCertificate());
  if (mismatch) {
    const code = (mismatch as { code?: string }).code ?? 'ERR_TLS_CERT_ALTNAME_INVALID';
    return { policy, problem: 'certificate', reason: `the certificate of ${name} failed verification: ${mismatch.message} (${code})`, code };
  }
  return undefined;
}

/** The certificates the server sent, leaf first (DER). */
function peerChain(socket: tls.TLSSocket): Buffer[] {
  const chain: Buffer[] = [];
  let cert: tls.DetailedPeerCertificate | undefined = socket.getPeerCertificate(true);
  const seen = new Set<string>();
  while (cert?.raw && !seen.has(cert.fingerprint256)) {
    seen.add(cert.fingerprint256);
    chain.push(cert.raw);
    cert = cert.issuerCertificate;
  }
  return chain;
}

/** OpenSSL's text for the verification codes node reports in `authorizationError`. */
function certificateProblem(code: string): string {
  const texts: Record<string, string> = {
    CERT_HAS_EXPIRED: 'certificate has expired',
    CERT_NOT_YET_VALID: 'certificate is not yet valid',
    DEPTH_ZERO_SELF_SIGNED_CERT: 'self-signed certificate',
    SELF_SIGNED_CERT_IN_CHAIN: 'self-signed certificate in certificate chain',
    UNABLE_TO_VERIFY_LEAF_SIGNATURE: 'unable to verify the first certificate',
    UNABLE_TO_GET_ISSUER_CERT_LOCALLY: 'unable to get local issuer certificate',
    CERT_REVOKED: 'certificate revoked',
  };
  return texts[code] ?? 'certificate verification failed';
}

export function describeTarget(target: SmtpTarget): string {
  const host = net.isIPv6(target.host) ? `[${target.host}]` : target.host;
  return target.servername ? `${target.servername}[${target.host}]:${target.port}` : `${host}:${target.port}`;
}

/** The message as a stream that notes when it is first read (nodemailer reads it only after the 354 to DATA). */
function toReadable(message: MessageSource, onStart: () => void): Readable {
  if (typeof message === 'function') {
    const stream = message();
    stream.once('data', onStart);
    return stream;
  }
  if (typeof message === 'string' || Buffer.isBuffer(message)) {
    const data = typeof message === 'string' ? Buffer.from(message) : message;
    let pushed = false;
    return new Readable({
      read() {
        if (pushed) return;
        pushed = true;
        onStart();
        this.push(data);
        this.push(null);
      },
    });
  }
  message.once('data', onStart);
  return message;
}

interface EnvelopeState {
  accepted: string[];
  rejectedErrors: NodemailerError[];
}

/**
 * nodemailer keeps the RCPT outcome of the transaction on its private `_envelope`; the error it reports when the
 * DATA command or the data itself is refused does not carry it, and the per-RCPT replies are needed to treat each
 * recipient by its own reply.
 */
function envelopeState(conn: SMTPConnection): EnvelopeState | undefined {
  const envelope = (conn as unknown as { _envelope?: Partial<EnvelopeState> | false })._envelope;
  if (!envelope || !Array.isArray(envelope.accepted)) return undefined;
  return { accepted: envelope.accepted, rejectedErrors: envelope.rejectedErrors ?? [] };
}

function isAnsweredPerRecipient(err: NodemailerError): boolean {
  if (!err.responseCode) return false;
  if (err.command === 'RCPT TO' && err.rejectedErrors?.length) return true;
  return err.command === 'DATA' && (err.code === 'EENVELOPE' || err.code === 'EMESSAGE');
}

/** A recipient the server refused, at RCPT or (`atData`) in reply to the data. */
function refusedResult(address: string, reply: string, atData: boolean, lmtp: boolean): RecipientResult {
  const parsed = parseReply(reply);
  return {
    address,
    accepted: false,
    code: parsed.code ?? 0,
    ...(parsed.enhanced ? { enhanced: parsed.enhanced } : {}),
    reply,
    stage: atData ? (lmtp ? 'lmtp' : 'data') : 'rcpt',
    command: atData ? 'DATA' : `RCPT TO:<${address}>`,
  };
}

function rcptResult(address: string, err: NodemailerError): RecipientResult {
  // nodemailer reports per-recipient DATA refusals only for LMTP.
  return refusedResult(address, err.response ?? err.message, err.command === 'DATA', true);
}

/**
 * The transaction completed. In SMTP every accepted recipient has the one reply to the data; in LMTP (`lmtpReplies`)
 * each has its own (RFC 2033 §4.2), which nodemailer reports only for refusals, hence the replies collected on the
 * connection (adaptConnection).
 */
function successResult(target: string, envelope: SmtpEnvelope, info: SendInfo, lmtpReplies: ReadonlyMap<string, string> | undefined, reused: boolean): SendResult {
  const lmtp = lmtpReplies !== undefined;
  const rejected = new Map<string, NodemailerError>();
  for (const err of info.rejectedErrors ?? []) if (err.recipient) rejected.set(err.recipient, err);
  const recipients = envelope.to.map((address): RecipientResult => {
    const refusal = rejected.get(address);
    if (refusal) return rcptResult(address, refusal);
    const reply = lmtpReplies?.get(address) ?? info.response;
    const parsed = parseReply(reply);
    return {
      address,
      accepted: true,
      code: parsed.code ?? 250,
      ...(parsed.enhanced ? { enhanced: parsed.enhanced } : {}),
      reply,
      stage: lmtp ? 'lmtp' : 'data',
      command: 'DATA',
    };
  });
  return finish(target, recipients, lmtp ? 'lmtp' : 'data', info.response, reused);
}

/** All recipients refused at RCPT, or the DATA command / the data refused: each recipient keeps its own reply. */
function failedTransactionResult(target: string, envelope: SmtpEnvelope, err: NodemailerError, state: EnvelopeState | undefined, lmtp: boolean, reused: boolean): SendResult {
  const rejected = new Map<string, NodemailerError>();
  for (const e of err.rejectedErrors ?? state?.rejectedErrors ?? []) if (e.recipient) rejected.set(e.recipient, e);
  const dataReply = err.command === 'DATA' ? (err.response ?? err.message) : undefined;
  const recipients = envelope.to.map((address): RecipientResult => {
    const refusal = rejected.get(address);
    if (refusal) return rcptResult(address, refusal);
    return refusedResult(address, dataReply ?? err.response ?? err.message, dataReply !== undefined, false);
  });
  return finish(target, recipients, dataReply ? (lmtp ? 'lmtp' : 'data') : 'rcpt', dataReply, reused);
}

function finish(target: string, recipients: RecipientResult[], stage: SmtpStage, dataReply: string | undefined, reused: boolean): SendResult {
  return {
    target,
    recipients,
    accepted: recipients.filter((r) => r.accepted).map((r) => r.address),
    rejected: recipients.filter((r) => !r.accepted).map((r) => r.address),
    stage,
    ...(dataReply !== undefined ? { dataReply } : {}),
    reused,
    retried: false,
  };
}

const ERRNO_TEXT: Record<string, string> = {
  ECONNREFUSED: 'connection refused',
  EHOSTUNREACH: 'host unreachable',
  ENETUNREACH: 'network unreachable',
  ECONNRESET: 'connection reset by peer',
  EPIPE: 'connection closed while writing',
  EADDRNOTAVAIL: 'address not available',
};

function errnoOf(err: NodemailerError): string | undefined {
  return err.originalCode ?? (typeof err.code === 'string' ? err.code : undefined);
}

/** A failure while connecting, waiting for the greeting, or in EHLO/LHLO/STARTTLS. */
function connectError(raw: unknown, conn: SMTPConnection, target: string): SmtpClientError {
  const err = raw as NodemailerError;
  const errno = errnoOf(err);
  const reply = err.response;
  const command = err.command ?? 'CONN';
  if (/^(EHLO|HELO|LHLO|STARTTLS)$/.test(command)) {
    return new SmtpClientError({ stage: 'ehlo', target, command, description: `${command} failed`, ...(reply ? { reply } : { errno: errno ?? 'EPROTOCOL' }) });
  }
  if (conn.stage === 'init') {
    const why = err.timeoutType === 'CONNECT_TIMEOUT' ? 'connection timed out' : (errno && ERRNO_TEXT[err.originalCode ?? '']) || err.message;
    return new SmtpClientError({ stage: 'connect', target, command: 'connect', description: `cannot connect: ${why}`, ...(errno ? { errno } : {}) });
  }
  if (reply) return new SmtpClientError({ stage: 'greeting', target, command: 'greeting', description: 'refused the session in its greeting', reply });
  const why = err.timeoutType === 'GREETING_TIMEOUT' ? 'no greeting in time' : err.timeoutType === 'UPGRADE_TIMEOUT' ? 'TLS handshake timed out' : `session lost before the greeting (${err.message})`;
  return new SmtpClientError({ stage: 'greeting', target, command: 'greeting', description: why, ...(errno ? { errno } : {}) });
}

/** A failure of the transaction as a whole once the session was ready. */
function transactionError(err: NodemailerError, target: string, envelope: SmtpEnvelope, bodyStarted: boolean, lmtp: boolean, state?: EnvelopeState): SmtpClientError {
  const mailFrom = `MAIL FROM:<${envelope.from}>`;
  const errno = errnoOf(err);
  if (err.command === 'MAIL FROM' && err.code === 'EMESSAGE' && !err.response) {
    // nodemailer refuses locally a message larger than the SIZE the server announced (RFC 1870).
    return new SmtpClientError({ stage: 'mail', target, command: mailFrom, description: `message too big for the server (${err.message})`, code: 552, enhanced: '5.3.4', temporary: false });
  }
  if (err.code === 'EENVELOPE' && !err.response) {
    return new SmtpClientError({ stage: 'mail', target, command: mailFrom, description: `invalid envelope (${err.message})`, code: 553, enhanced: '5.1.3', temporary: false });
  }
  if (err.command === 'MAIL FROM' && err.response) {
    return new SmtpClientError({ stage: 'mail', target, command: mailFrom, description: `${mailFrom} refused`, reply: err.response });
  }
  const stage: SmtpStage = bodyStarted ? (lmtp ? 'lmtp' : 'data') : 'mail';
  // A server closing with 421 in the middle of the envelope (RFC 5321 §3.8): the RCPT it answered, when known.
  const closedAt = !bodyStarted && err.response ? state?.rejectedErrors.find((e) => e.response === err.response && e.recipient) : undefined;
  const command = bodyStarted ? 'end of data' : closedAt ? `RCPT TO:<${closedAt.recipient}>` : err.command && err.command !== 'CONN' ? err.command : 'MAIL/RCPT/DATA';
  const why =
    err.timeoutType === 'SOCKET_TIMEOUT' ? 'timed out waiting for the server' : err.response ? 'the server closed the session' : `session lost (${(errno && ERRNO_TEXT[errno]) || err.message})`;
  return new SmtpClientError({ stage, target, command, description: `${why} during ${command}`, ...(err.response ? { reply: err.response } : {}), ...(errno ? { errno } : {}) });
}
