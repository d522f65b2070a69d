// POP3 (RFC 1939) with CAPA and response codes (RFC 2449) and SASL PLAIN (RFC 5034), on the user's INBOX.
// With the node's `tls`: STLS (RFC 2595 §4), or implicit TLS on the pop3s port (`implicitTls`, RFC 8314 §3.3); before
// TLS, USER/PASS/AUTH are refused (`-ERR [AUTH]`) and not advertised, unless the lab allows plaintext logins.
//
// A session sees the maildrop as it was when it logged in (message numbers are fixed for the session), marks
// deletions, and removes the marked messages only in the UPDATE state, after QUIT: a connection that drops,
// times out or is shut down deletes nothing. One session per maildrop at a time (the store's maildrop lock).
// Commands are processed strictly in order, one at a time, so pipelined commands (RFC 2449 PIPELINING) get
// their replies in order.
//
// \Seen (issue 14), as Dovecot does it unless `pop3_no_flag_updates = yes`: a message sent whole with RETR (not TOP)
// that is not \Seen yet is remembered, and the session adds \Seen to the remembered messages when it ends: at QUIT
// (UPDATE) before the +OK, and also when the connection ends without QUIT (drop, autologout, shutdown, revoked app
// password). RSET forgets them. The flag goes through the store (setFlags), so IMAP sessions see it like a STORE: an
// untagged FETCH / IDLE push and a new CONDSTORE modseq. Until the session ends, IMAP still sees the message unseen
// (Dovecot keeps the change in the session's uncommitted transaction until then). Messages deleted with DELE and
// removed at QUIT get no flag. With the node's `pop3MarksSeen: false`, POP3 never touches flags.
import net from 'node:net';
import tls, { type SecureContext } from 'node:tls';
import type { TlsConfig } from '../shared/config.js';
import { serverContext, startServerTls, tlsInfo, tlsServerOptions } from '../shared/tls-session.js';
import { createHash } from 'node:crypto';
import { messageIdOf } from '../shared/headers.js';
import { headerLength } from './message.js';
import { LoginGuard, retrySeconds, throttleFor, type LoginAttempt } from './login-guard.js';
import type { MailboxService, ServiceOptions } from './service.js';
import type { StoredMessage } from './store-api.js';

export interface Pop3Options extends ServiceOptions {
  /** Autologout timer (RFC 1939 §3: at least 10 minutes). */
  idleTimeoutMs?: number;
  /** Longest command line accepted, CRLF included (RFC 2449 §4 allows 255 octets; SASL responses are longer). */
  maxLineLength?: number;
  /** TLS of the server (default: the node's `tls`). */
  tls?: TlsConfig;
  /** Implicit TLS on this port (pop3s, RFC 8314): the handshake comes first. Needs `tls`. */
  implicitTls?: boolean;
}

interface Pop3Tls {
  context: SecureContext;
  allowPlaintextAuth: boolean;
}

const CRLF = '\r\n';
const MAX_ERRORS = 20;
/** Lines queued (pipelined) beyond which the socket is paused until they are processed. */
const QUEUE_HIGH_WATER = 100;

const CAPABILITIES = ['TOP', 'UIDL', 'USER', 'RESP-CODES', 'AUTH-RESP-CODE', 'PIPELINING', 'SASL PLAIN', 'IMPLEMENTATION maillab'];

export async function startPop3(options: Pop3Options): Promise<MailboxService> {
  const sessions = new Set<Pop3Session>();
  const guard = new LoginGuard(options.store, throttleFor(options.throttle, options.ctx.config.authThrottle), options.ctx.events, options.accounts);
  const tlsConfig = options.tls ?? options.ctx.config.tls;
  if (options.implicitTls && !tlsConfig) throw new Error("pop3s needs the node's tls configuration");
  const secure: Pop3Tls | undefined = tlsConfig ? { context: serverContext(tlsConfig), allowPlaintextAuth: tlsConfig.allowPlaintextAuth === true } : undefined;
  const accept = (socket: net.Socket) => {
    const session = new Pop3Session(socket, options, guard, secure);
    sessions.add(session);
    void session.closed.then(() => sessions.delete(session));
  };
  const server = options.implicitTls ? tls.createServer(tlsServerOptions(tlsConfig!), accept) : net.createServer(accept);
  // A failed handshake on pop3s (TLS 1.1, a client that does not trust the certificate) only ends that connection.
  server.on('tlsClientError', (err: Error) => options.ctx.log(`pop3s: TLS handshake failed: ${err.message}`));
  server.on('error', (err) => options.ctx.log(`POP3: ${err.message}`));
  await new Promise<void>((resolve, reject) => {
    server.once('error', (err) => reject(new Error(`cannot listen for pop3 on ${options.host}:${options.port}: ${err.message}`)));
    server.listen(options.port, options.host, () => resolve());
  });
  const address = server.address();
  const port = typeof address === 'object' && address ? address.port : options.port;
  return {
    endpoint: { host: options.host, port },
    async close() {
      const closed = new Promise<void>((resolve) => server.close(() => resolve()));
      await Promise.all([...sessions].map((s) => s.shutdown()));
      await closed;
    },
  };
}

type State = 'authorization' | 'transaction' | 'update';

class Pop3Session {
  private state: State = 'authorization';
  private pending: Buffer = Buffer.alloc(0);
  private readonly queue: string[] = [];
  private busy = false;
  private closing = false;
  /** A line over the limit arrived: answer what came before it, then close. */
  private overflow = false;
  readonly closed: Promise<void>;
  private markClosed!: () => void;
  /** Name given with USER, waiting for PASS. */
  private login?: string;
  /** AUTH PLAIN sent without an initial response: the next line is the response. */
  private saslPending = false;
  /** Logins refused on this connection (wrong password or throttled). */
  private refusedLogins = 0;
  private errors = 0;
  private user?: string;
  private release?: () => void;
  /** Forgets this session in the app password's session list (logged in with one). */
  private untrack?: () => void;
  /** The maildrop as of login; message n is messages[n - 1]. */
  private messages: StoredMessage[] = [];
  private readonly deleted = new Set<number>();
  private readonly messageIds = new Map<number, string>();
  /** UIDs retrieved whole with RETR in this session, not \Seen at the time: \Seen is added when the session ends. */
  private readonly seen = new Set<number>();
  private readonly maxLine: number;
  private readonly client: string;

  constructor(
    private socket: net.Socket,
    private readonly options: Pop3Options,
    private readonly guard: LoginGuard,
    private readonly tls?: Pop3Tls,
  ) {
    this.maxLine = options.maxLineLength ?? 1024;
    this.client = socket.remoteAddress ?? '';
    this.closed = new Promise((resolve) => (this.markClosed = resolve));
    socket.setNoDelay(true);
    this.attach(socket);
    this.write(`+OK ${options.ctx.config.hostname} POP3 server ready${CRLF}`);
  }

  private attach(socket: net.Socket) {
    socket.setTimeout(this.options.idleTimeoutMs ?? 10 * 60_000, () => {
      // Autologout: the session ends without UPDATE, so nothing is deleted (RFC 1939 §3).
      this.write(`-ERR [SYS/TEMP] autologout, idle for too long${CRLF}`);
      this.end();
    });
    socket.on('data', (chunk: Buffer) => this.onData(chunk));
    socket.on('error', () => undefined); // a reset connection just closes
    socket.on('close', () => this.onClose());
  }

  private onClose() {
    this.untrack?.();
    this.untrack = undefined;
    // Ended without QUIT: Dovecot still commits the \Seen of what was retrieved. Nothing is deleted (RFC 1939 §6), so
    // a message marked with DELE stays, and gets \Seen too. `closed` resolves only after that, so a node that stops
    // waits for the flags before closing the store.
    void this.markSeen('connection closed', false).then(() => {
      this.release?.();
      this.release = undefined;
      this.markClosed();
    });
  }

  /**
   * Adds \Seen to the messages retrieved with RETR in this session, through the store so that IMAP sessions are told.
   * At QUIT (`skipDeleted`) the ones marked with DELE are left out: they are about to be removed. Takes the set at
   * once, so QUIT and a close racing it never apply it twice. A failure is logged, never fatal: the client has the mail.
   */
  private async markSeen(when: string, skipDeleted: boolean): Promise<void> {
    const uids = [...this.seen].filter((uid) => !(skipDeleted && this.isDeletedUid(uid)));
    this.seen.clear();
    if (!uids.length || !this.user) return;
    try {
      await this.options.store.setFlags(this.user, 'INBOX', uids, ['\\Seen'], 'add');
    } catch (err) {
      this.options.ctx.log(`POP3: ${this.user}: setting \\Seen on ${uids.length} retrieved message(s) (${when}): ${(err as Error).message}`);
    }
  }

  private isDeletedUid(uid: number): boolean {
    const index = this.messages.findIndex((m) => m.uid === uid);
    return index >= 0 && this.deleted.has(index + 1);
  }

  /** Whether RETR marks messages \Seen (the node's `pop3MarksSeen`, default true like Dovecot). */
  private get marksSeen(): boolean {
    return this.options.ctx.config.pop3MarksSeen !== false;
  }

  /** Whether the connection is encrypted (implicit TLS, or after STLS). */
  private get secure(): boolean {
    return tlsInfo(this.socket) !== null;
  }

  /** Passwords are accepted: over TLS, on a node without TLS, or where the lab allows plaintext logins. */
  private get loginAllowed(): boolean {
    return !this.tls || this.tls.allowPlaintextAuth || this.secure;
  }

  private capabilities(): string[] {
    const caps = CAPABILITIES.filter((c) => this.loginAllowed || (c !== 'USER' && c !== 'SASL PLAIN'));
    if (this.tls && !this.secure && this.state === 'authorization') caps.push('STLS');
    return caps;
  }

  /**
   * STLS (RFC 2595 §4): +OK, then the handshake on the same socket. Everything the client pipelined after the command
   * in plaintext is dropped, read or not yet read (the STARTTLS command injection, CVE-2011-0411); the session goes on
   * over the TLS socket in the AUTHORIZATION state; a failed handshake ends it.
   */
  private async stls() {
    if (!this.tls) return this.error('unknown command "STLS"');
    if (this.secure) return this.error('command not permitted when TLS active');
    await this.ok('Begin TLS negotiation');
    const raw = this.socket;
    raw.removeAllListeners('data');
    raw.removeAllListeners('timeout');
    raw.setTimeout(0);
    this.queue.length = 0;
    this.pending = Buffer.alloc(0);
    this.login = undefined;
    try {
      const secure = await startServerTls(raw, this.tls.context);
      this.socket = secure;
      this.attach(secure);
      if (this.closing) this.end();
    } catch (err) {
      this.options.ctx.log(`POP3: STLS failed: ${(err as Error).message}`);
      this.onClose();
    }
  }

  /** USER, PASS, AUTH before TLS where plaintext logins are refused (RFC 8314 §4.2; Dovecot answers the same). */
  private privacyRequired() {
    this.login = undefined;
    return this.error('[AUTH] Plaintext authentication disallowed without TLS, use STLS first');
  }

  /** Ends the session after the command under way, if any, without UPDATE. */
  shutdown(): Promise<void> {
    this.closing = true;
    this.queue.length = 0;
    if (!this.busy) this.end();
    return this.closed;
  }

  private onData(chunk: Buffer) {
    if (this.closing || this.overflow) return;
    this.pending = this.pending.length ? Buffer.concat([this.pending, chunk]) : chunk;
    let newline: number;
    while ((newline = this.pending.indexOf(0x0a)) >= 0 && newline < this.maxLine) {
      let line = this.pending.subarray(0, newline);
      if (line[line.length - 1] === 0x0d) line = line.subarray(0, line.length - 1);
      this.queue.push(line.toString('utf8'));
      this.pending = this.pending.subarray(newline + 1);
    }
    // A line too long (complete or not): the lines before it are still answered, then the session ends.
    if (this.pending.length >= this.maxLine) {
      this.overflow = true;
      this.pending = Buffer.alloc(0);
    } else if (this.queue.length > QUEUE_HIGH_WATER) {
      this.socket.pause();
    }
    void this.pump();
  }

  private async pump() {
    if (this.busy) return;
    this.busy = true;
    try {
      while (this.queue.length && !this.closing) {
        const line = this.queue.shift()!;
        try {
          await this.handle(line);
        } catch (err) {
          this.options.ctx.log(`POP3: ${this.user ?? '-'}: ${(err as Error).message}`);
          this.write(`-ERR [SYS/TEMP] internal error${CRLF}`);
        }
        if (this.queue.length <= QUEUE_HIGH_WATER / 2 && this.socket.isPaused() && !this.overflow) this.socket.resume();
      }
    } finally {
      this.busy = false;
    }
    if (this.overflow && !this.closing) {
      this.write(`-ERR line too long (more than ${this.maxLine} octets), closing${CRLF}`);
      this.end();
    } else if (this.closing) {
      this.end();
    }
  }

  private write(text: string | Buffer): Promise<void> {
    if (this.socket.destroyed || !this.socket.writable) return Promise.resolve();
    // Honour backpressure so a large RETR does not pile up in memory.
    if (this.socket.write(text)) return Promise.resolve();
    return new Promise((resolve) => {
      const done = () => {
        this.socket.off('drain', done);
        this.socket.off('close', done);
        resolve();
      };
      this.socket.on('drain', done);
      this.socket.on('close', done);
    });
  }

  private end() {
    this.closing = true;
    this.socket.end();
    // A client that does not close its side must not keep the session (and the maildrop lock) alive.
    setTimeout(() => this.socket.destroy(), 2000).unref();
  }

  private error(text: string) {
    this.errors++;
    this.write(`-ERR ${text}${CRLF}`);
    if (this.errors >= MAX_ERRORS) {
      this.write(`-ERR too many errors, closing${CRLF}`);
      this.end();
    }
  }

  private ok(text: string) {
    this.errors = 0;
    return this.write(`+OK${text ? ' ' + text : ''}${CRLF}`);
  }

  private async handle(line: string) {
    if (this.saslPending) {
      this.saslPending = false;
      return this.saslPlain(line);
    }
    const space = line.indexOf(' ');
    const command = (space < 0 ? line : line.slice(0, space)).toUpperCase();
    const rest = space < 0 ? '' : line.slice(space + 1);
    const args = rest.split(' ').filter(Boolean);

    if (command === 'QUIT') return this.quit();
    if (command === 'CAPA') return this.write(['+OK capability list follows', ...this.capabilities(), '.', ''].join(CRLF));

    if (this.state === 'authorization') {
      if ((command === 'USER' || command === 'PASS' || command === 'AUTH') && !this.loginAllowed) return this.privacyRequired();
      switch (command) {
        case 'STLS':
          return this.stls();
        case 'USER':
          if (!rest) return this.error('USER needs a name');
          this.login = rest;
          return this.ok('send PASS');
        case 'PASS':
          if (this.login === undefined) return this.error('send USER first');
          // PASS has one argument, which may contain spaces (RFC 1939 §7).
          return this.authenticate(this.login, rest, 'USER');
        case 'AUTH':
          return this.auth(args);
        case 'APOP':
          return this.error('APOP is not supported, use USER/PASS or AUTH PLAIN');
        case 'STAT': case 'LIST': case 'RETR': case 'DELE': case 'NOOP': case 'RSET': case 'TOP': case 'UIDL':
          return this.error(`${command} is not valid before login`);
        default:
          return this.error(`unknown command ${JSON.stringify(command.slice(0, 20))}`);
      }
    }

    switch (command) {
      case 'STAT': {
        const live = this.live();
        return this.ok(`${live.length} ${sum(live)}`);
      }
      case 'LIST':
        if (args.length) {
          const n = this.number(args[0]!);
          return n && this.ok(`${n} ${this.messages[n - 1]!.size}`);
        }
        return this.multiline(`${this.live().length} messages (${sum(this.live())} octets)`, this.numbered().map(([n, m]) => `${n} ${m.size}`));
      case 'UIDL':
        if (args.length) {
          const n = this.number(args[0]!);
          return n && this.ok(`${n} ${uidl(this.messages[n - 1]!)}`);
        }
        return this.multiline('unique-id listing follows', this.numbered().map(([n, m]) => `${n} ${uidl(m)}`));
      case 'RETR': {
        if (args.length !== 1) return this.error('usage: RETR <message>');
        const n = this.number(args[0]!);
        return n && this.retrieve(n);
      }
      case 'TOP': {
        if (args.length !== 2 || !/^\d{1,9}$/.test(args[1]!)) return this.error('usage: TOP <message> <lines>');
        const n = this.number(args[0]!);
        return n && this.retrieve(n, Number(args[1]));
      }
      case 'DELE': {
        if (args.length !== 1) return this.error('usage: DELE <message>');
        const n = this.number(args[0]!);
        if (!n) return;
        this.deleted.add(n);
        return this.ok(`message ${n} deleted`);
      }
      case 'RSET':
        // As Dovecot's RSET: the deletion marks and the \Seen still to be set are both forgotten.
        this.deleted.clear();
        this.seen.clear();
        return this.ok(`maildrop has ${this.messages.length} messages (${sum(this.messages)} octets)`);
      case 'NOOP':
        return this.ok('');
      case 'USER': case 'PASS': case 'AUTH': case 'APOP':
        return this.error('already logged in');
      case 'STLS':
        return this.error('STLS is only valid before login');
      default:
        return this.error(`unknown command ${JSON.stringify(command.slice(0, 20))}`);
    }
  }

  // ---- AUTHORIZATION ----

  private auth(args: string[]) {
    if (!args.length) return this.multiline('supported mechanisms follow', ['PLAIN']); // RFC 1734's listing form
    if (args[0]!.toUpperCase() !== 'PLAIN') return this.error(`unsupported mechanism ${JSON.stringify(args[0]!.slice(0, 20))}`);
    if (args.length > 2) return this.error('usage: AUTH PLAIN [initial-response]');
    // "=" is an empty initial response (RFC 5034 §4).
    if (args.length === 2) return this.saslPlain(args[1] === '=' ? '' : args[1]!);
    this.saslPending = true;
    return this.write(`+ ${CRLF}`);
  }

  private saslPlain(response: string) {
    if (response === '*') return this.error('authentication cancelled');
    if (!/^[A-Za-z0-9+/]*={0,2}$/.test(response) || response.length % 4 !== 0) return this.error('invalid base64 in the SASL response');
    const parts = Buffer.from(response, 'base64').toString('utf8').split('\0');
    if (parts.length !== 3) return this.error('malformed PLAIN response');
    const [authzid, authcid, password] = parts as [string, string, string];
    // No proxy authentication: an authorization identity, if any, must be the user itself.
    if (authzid && this.options.store.resolveUser(authzid) !== this.options.store.resolveUser(authcid)) {
      const attempt = this.attempt(authcid, 'PLAIN');
      const throttled = this.guard.check(attempt);
      if (throttled) return this.refused(throttled.retryAfterMs);
      this.guard.failed(attempt);
      return this.refused();
    }
    return this.authenticate(authcid, password, 'PLAIN');
  }

  private attempt(login: string, method: string): LoginAttempt {
    return { protocol: 'pop3', login, method, client: this.client };
  }

  private async authenticate(login: string, password: string, method: string) {
    this.login = undefined;
    const checked = this.guard.authenticate(this.attempt(login, method), password);
    const result = checked instanceof Promise ? await checked : checked;
    if (result.kind === 'app-password-required') return this.refused(undefined, `[AUTH] ${result.user} has two-factor authentication: app password required`);
    if (result.kind !== 'ok') return this.refused(result.kind === 'throttled' ? result.retryAfterMs : undefined);
    const { user, appPassword } = result;
    const release = this.options.store.lockMaildrop(user);
    if (!release) return this.error('[IN-USE] maildrop already locked by another session');
    try {
      this.messages = await this.options.store.messages(user, 'INBOX');
    } catch (err) {
      release();
      this.options.ctx.log(`POP3: ${user}: cannot open INBOX: ${(err as Error).message}`);
      return this.error('[SYS/TEMP] cannot open the maildrop now, try again later');
    }
    if (this.socket.destroyed) return release(); // gone while we were opening the maildrop
    this.user = user;
    this.release = release;
    this.state = 'transaction';
    this.untrack = this.guard.track(user, appPassword, () => this.revoked(appPassword!));
    this.options.ctx.events.emit({ kind: 'session', detail: { user, protocol: 'pop3', method, client: this.client, tls: tlsInfo(this.socket), ...(appPassword !== undefined ? { appPassword } : {}) } });
    return this.ok(`maildrop has ${this.messages.length} messages (${sum(this.messages)} octets)`);
  }

  /**
   * The app password this session logged in with was revoked: the session ends now, without UPDATE (nothing marked
   * deleted is removed, as for a dropped connection). POP3 has no unsolicited responses, so the reason goes out only
   * when no reply is being written; a client waiting for one reads it as the answer to its command.
   */
  private revoked(name: string) {
    if (!this.busy) this.write(`-ERR [AUTH] app password ${JSON.stringify(name)} was revoked, closing${CRLF}`);
    this.queue.length = 0;
    this.end();
  }

  /**
   * A refused login: wrong credentials (`-ERR [AUTH]`, or the text given), or throttled (`-ERR [SYS/TEMP]`, RFC
   * 3206: the password was not checked). failuresPerConnection refusals end the session.
   */
  private refused(throttledForMs?: number, text = '[AUTH] invalid user name or password') {
    this.refusedLogins++;
    if (throttledForMs === undefined) this.error(text);
    else this.error(`[SYS/TEMP] Too many failed logins, try again in ${retrySeconds(throttledForMs)} s`);
    if (this.guard.tooManyOnConnection(this.refusedLogins)) this.end();
  }

  // ---- TRANSACTION ----

  /** The message number in `arg` if it names a message not marked deleted; otherwise replies -ERR. */
  private number(arg: string): number | undefined {
    const n = /^\d{1,9}$/.test(arg) ? Number(arg) : 0;
    if (n < 1 || n > this.messages.length) {
      this.error(`no such message ${JSON.stringify(arg.slice(0, 20))}`);
      return undefined;
    }
    if (this.deleted.has(n)) {
      this.error(`message ${n} already deleted`);
      return undefined;
    }
    return n;
  }

  private live(): StoredMessage[] {
    return this.messages.filter((_, i) => !this.deleted.has(i + 1));
  }

  private numbered(): Array<[number, StoredMessage]> {
    return this.messages.map((m, i) => [i + 1, m] as [number, StoredMessage]).filter(([n]) => !this.deleted.has(n));
  }

  private multiline(first: string, lines: string[]) {
    this.errors = 0;
    // Lines here never start with "." (numbers, mechanism names), so no dot-stuffing is needed.
    return this.write([`+OK ${first}`, ...lines, '.', ''].join(CRLF));
  }

  /** RETR (whole message) or TOP (header plus `bodyLines` lines of the body). */
  private async retrieve(n: number, bodyLines?: number) {
    const message = this.messages[n - 1]!;
    let data: Buffer;
    try {
      data = await this.options.store.read(this.user!, 'INBOX', message.uid);
    } catch (err) {
      this.options.ctx.log(`POP3: ${this.user}: reading message ${message.uid}: ${(err as Error).message}`);
      return this.error(`[SYS/PERM] message ${n} is no longer available`);
    }
    const messageId = messageIdOf(data);
    if (messageId) this.messageIds.set(message.uid, messageId);
    if (bodyLines === undefined) {
      await this.ok(`${data.length} octets`);
      await this.write(dotStuff(data));
      if (this.marksSeen && !message.flags.includes('\\Seen')) this.seen.add(message.uid);
      this.options.ctx.events.emit({ kind: 'retrieved', messageId, queueId: message.id, detail: { user: this.user, protocol: 'pop3', uid: message.uid, size: data.length } });
      return;
    }
    await this.ok('top of message follows');
    await this.write(dotStuff(topOf(data, bodyLines)));
  }

  // ---- UPDATE ----

  private async quit() {
    if (this.state !== 'transaction') {
      await this.ok(`${this.options.ctx.config.hostname} POP3 server signing off`);
      return this.end();
    }
    this.state = 'update';
    // \Seen first, before the +OK: a client that reads the sign-off and then opens IMAP sees the flags.
    await this.markSeen('QUIT', true);
    const uids = [...this.deleted].sort((a, b) => a - b).map((n) => this.messages[n - 1]!.uid);
    let removed: number[] = [];
    let failed = false;
    if (uids.length) {
      await this.learnMessageIds(uids);
      try {
        removed = await this.options.store.remove(this.user!, 'INBOX', uids);
      } catch (err) {
        failed = true;
        this.options.ctx.log(`POP3: ${this.user}: removing messages: ${(err as Error).message}`);
      }
    }
    for (const uid of removed) {
      const message = this.messages.find((m) => m.uid === uid);
      this.options.ctx.events.emit({ kind: 'deleted', messageId: this.messageIds.get(uid), queueId: message?.id, detail: { user: this.user, protocol: 'pop3', uid } });
    }
    this.release?.();
    this.release = undefined;
    if (failed) await this.write(`-ERR [SYS/TEMP] some deleted messages were not removed${CRLF}`);
    else await this.ok(`${this.options.ctx.config.hostname} POP3 server signing off (${removed.length} messages deleted)`);
    this.end();
  }

  /** Message-IDs for the 'deleted' events of messages deleted without being retrieved (small ones only). */
  private async learnMessageIds(uids: number[]) {
    for (const uid of uids) {
      const message = this.messages.find((m) => m.uid === uid);
      if (this.messageIds.has(uid) || !message || message.size > 256 * 1024) continue;
      try {
        const messageId = messageIdOf(await this.options.store.read(this.user!, 'INBOX', uid));
        if (messageId) this.messageIds.set(uid, messageId);
      } catch {
        // gone already: nothing to tell
      }
    }
  }
}

function sum(messages: StoredMessage[]): number {
  return messages.reduce((total, m) => total + m.size, 0);
}

/** RFC 1939 §7: 1 to 70 characters in the range 0x21-0x7E. Maildir ids fit unless the host name is long. */
export function uidl(message: StoredMessage): string {
  return /^[\x21-\x7e]{1,70}$/.test(message.id) ? message.id : createHash('sha1').update(message.id).digest('hex');
}

/** The header section and the first `lines` lines of the body (RFC 1939 TOP). */
export function topOf(data: Buffer, lines: number): Buffer {
  let end = headerLength(data);
  for (let i = 0; i < lines && end < data.length; i++) {
    const newline = data.indexOf(0x0a, end);
    end = newline < 0 ? data.length : newline + 1;
  }
  return data.subarray(0, end);
}

/**
 * A multi-line response body (RFC 1939 §3): lines starting with "." get another one, the last line gets its
 * CRLF if it lacks one, and the ".CRLF" terminator follows.
 */
export function dotStuff(data: Buffer): Buffer {
  const starts: number[] = [];
  if (data[0] === 0x2e) starts.push(0);
  for (let i = data.indexOf(0x0a); i >= 0; i = data.indexOf(0x0a, i + 1)) if (data[i + 1] === 0x2e) starts.push(i + 1);
  const needsCrlf = data.length > 0 && !(data[data.length - 2] === 0x0d && data[data.length - 1] === 0x0a);
  const out = Buffer.allocUnsafe(data.length + starts.length + (needsCrlf ? 2 : 0) + 3);
  let o = 0;
  let from = 0;
  for (const start of starts) {
    o += data.copy(out, o, from, start);
    out[o++] = 0x2e;
    from = start;
  }
  o += data.copy(out, o, from);
  if (needsCrlf) o += out.write(CRLF, o, 'latin1');
  o += out.write('.\r\n', o, 'latin1');
  return out;
}
