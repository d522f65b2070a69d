// One TCP client for the line protocols the lab speaks (SMTP/LMTP, POP3, IMAP): write a command, read what comes
// back in the shape the protocol frames it, and fail with an error that says where and after which command.
//
// Every read waits on data or on the end of the connection, never on a clock, except for its deadline: a read
// that cannot complete by then fails (kind 'timeout'), and so does one the connection ends under (kind 'closed').
// Data the server sent before closing is still read: a reply followed by a close is a reply.
import net from 'node:net';
import tls from 'node:tls';
import type { Endpoint } from '../../shared/config.js';

export type LineClientErrorKind = 'connect' | 'timeout' | 'closed';

/** A connection that could not be made, a read that timed out, or a read the connection ended under. */
export class LineClientError extends Error {
  override name = 'LineClientError';
  constructor(
    readonly kind: LineClientErrorKind,
    readonly endpoint: Endpoint,
    /** The last command sent (as labelled by send()/write()), `(greeting)` before any. */
    readonly command: string,
    message: string,
  ) {
    super(message);
  }
}

export interface LineClientOptions {
  /** Names the protocol in error messages, e.g. `POP3` (default `TCP`). */
  name?: string;
  /** Deadline of the connection and of every read that does not set its own (default 5000 ms). */
  timeoutMs?: number;
  /** How lines are decoded (default latin1: one character per octet, so any byte survives a round trip). */
  encoding?: BufferEncoding;
}

export interface ReadOptions {
  timeoutMs?: number;
}

/** An SMTP or LMTP reply (RFC 5321 §4.2): `250-first`, …, `250 last`. */
export interface SmtpReply {
  code: number;
  /** Every line, code included, without CRLF. */
  lines: string[];
  /** The lines joined with CRLF: the reply as sent, without its final CRLF. */
  text: string;
}

/** A POP3 response (RFC 1939 §3): the status line and, for a multi-line +OK, the body. */
export interface Pop3Response {
  ok: boolean;
  /** The status line without CRLF, `+OK …` or `-ERR …`. */
  status: string;
  /** The body of a multi-line +OK, dot-unstuffed, each line with its CRLF, the terminating `.` line excluded. */
  body?: Buffer;
}

const CRLF = Buffer.from('\r\n');
/** The end of a dot-terminated body: a line holding a single dot. */
const DOT_LINE = Buffer.from('.\r\n');
/** Shown of unread data in an error message. */
const UNREAD_SHOWN = 200;

export class LineClient {
  private buffer: Buffer = Buffer.alloc(0);
  private waiters: Array<() => void> = [];
  private ended = false;
  private lastCommand = '(greeting)';
  private readonly name: string;
  private readonly timeoutMs: number;
  private readonly encoding: BufferEncoding;

  private constructor(
    readonly endpoint: Endpoint,
    readonly socket: net.Socket,
    options: LineClientOptions,
  ) {
    this.name = options.name ?? 'TCP';
    this.timeoutMs = options.timeoutMs ?? 5000;
    this.encoding = options.encoding ?? 'latin1';
    socket.on('data', (chunk: Buffer) => {
      this.buffer = this.buffer.length ? Buffer.concat([this.buffer, chunk]) : chunk;
      this.wake();
    });
    socket.on('close', () => {
      this.ended = true;
      this.wake();
    });
    // A reset shows as the close that follows; reads report it with what they were waiting for.
    socket.on('error', () => undefined);
  }

  /** Connects; fails with kind 'connect' when the connection is refused or not made within the deadline. */
  static connect(endpoint: Endpoint, options: LineClientOptions = {}): Promise<LineClient> {
    const timeoutMs = options.timeoutMs ?? 5000;
    const where = `${options.name ?? 'TCP'} ${endpoint.host}:${endpoint.port}`;
    return new Promise((resolve, reject) => {
      const socket = net.connect(endpoint.port, endpoint.host);
      const fail = (why: string) => {
        clearTimeout(timer);
        socket.destroy();
        reject(new LineClientError('connect', endpoint, '(connect)', `${where}: cannot connect: ${why}`));
      };
      const timer = setTimeout(() => fail(`no connection within ${timeoutMs} ms`), timeoutMs);
      socket.once('error', (err) => fail(err.message));
      socket.once('connect', () => {
        clearTimeout(timer);
        socket.removeAllListeners('error');
        resolve(new LineClient(endpoint, socket, options));
      });
    });
  }

  /**
   * Upgrades the connection to TLS (after the server agreed: STARTTLS, STLS) and returns the client to go on with,
   * verifying the server against `ca` under `servername`. Nothing read in plaintext is carried over.
   */
  startTls(tlsOptions: { ca: string; servername: string }, options: LineClientOptions = {}): Promise<LineClient> {
    const where = `${options.name ?? this.name} ${this.endpoint.host}:${this.endpoint.port}`;
    this.socket.removeAllListeners('data');
    this.socket.removeAllListeners('close');
    return new Promise((resolve, reject) => {
      const secure = tls.connect({ socket: this.socket, ca: tlsOptions.ca, servername: tlsOptions.servername, minVersion: 'TLSv1.2' });
      const timer = setTimeout(() => fail(`no TLS handshake within ${this.timeoutMs} ms`), this.timeoutMs);
      const fail = (why: string) => {
        clearTimeout(timer);
        secure.destroy();
        // This plaintext client is done too: whoever waits for it to close is told now.
        this.ended = true;
        this.wake();
        reject(new LineClientError('connect', this.endpoint, this.lastCommand, `${where}: TLS with ${tlsOptions.servername} failed: ${why}`));
      };
      secure.once('error', (err) => fail(err.message));
      secure.once('secureConnect', () => {
        clearTimeout(timer);
        secure.removeAllListeners('error');
        resolve(new LineClient(this.endpoint, secure, { name: this.name, timeoutMs: this.timeoutMs, encoding: this.encoding, ...options }));
      });
    });
  }

  /** Whether the connection has ended (closed by either side). */
  get closed(): boolean {
    return this.ended;
  }

  /** Sends a command line, CRLF added. `label` names it in errors instead of the line (`PASS ****`). */
  send(line: string, label = line): void {
    this.write(line + '\r\n', label);
  }

  /** Sends raw bytes as they are; `label` names them in errors (default: their first line). */
  write(data: string | Uint8Array, label?: string): void {
    this.lastCommand = label ?? firstLine(data);
    this.socket.write(data);
  }

  /** The next line, without its CRLF. */
  line(options: ReadOptions = {}): Promise<string> {
    return this.read('a line', options, () => {
      const end = this.buffer.indexOf(CRLF);
      return end < 0 ? undefined : this.take(end, 2).toString(this.encoding);
    });
  }

  /** Exactly `n` octets. */
  bytes(n: number, options: ReadOptions = {}): Promise<Buffer> {
    return this.read(`${n} octets`, options, () => (this.buffer.length < n ? undefined : this.take(n, 0)));
  }

  /** An SMTP/LMTP reply: lines up to the first whose code is not followed by `-`. */
  smtpReply(options: ReadOptions = {}): Promise<SmtpReply> {
    return this.read('an SMTP reply', options, () => {
      const lines: string[] = [];
      let offset = 0;
      for (;;) {
        const end = this.buffer.indexOf(CRLF, offset);
        if (end < 0) return undefined;
        const line = this.buffer.toString(this.encoding, offset, end);
        lines.push(line);
        offset = end + 2;
        if (!/^\d{3}-/.test(line)) break;
      }
      this.take(offset, 0);
      return { code: Number(lines[lines.length - 1]!.slice(0, 3)), lines, text: lines.join('\r\n') };
    });
  }

  /**
   * A POP3 response. With `multiline`, a +OK is followed by a dot-terminated body (LIST, UIDL, RETR, TOP, CAPA),
   * returned dot-unstuffed; an -ERR never has one (RFC 1939 §3).
   */
  pop3Response(options: ReadOptions & { multiline?: boolean } = {}): Promise<Pop3Response> {
    return this.read('a POP3 response', options, () => {
      const end = this.buffer.indexOf(CRLF);
      if (end < 0) return undefined;
      const status = this.buffer.toString(this.encoding, 0, end);
      const ok = status.startsWith('+OK');
      if (!ok || !options.multiline) {
        this.take(end, 2);
        return { ok, status };
      }
      const bodyEnd = dotTerminator(this.buffer, end + 2);
      if (!bodyEnd) return undefined;
      this.take(end, 2);
      return { ok, status, body: unstuff(this.take(bodyEnd.at - end - 2, bodyEnd.skip)) };
    });
  }

  /** A dot-terminated body (its status line already read), without the `.` line; raw unless `unstuff`. */
  dotBody(options: ReadOptions & { unstuff?: boolean } = {}): Promise<Buffer> {
    return this.read('a dot-terminated body', options, () => {
      const bodyEnd = dotTerminator(this.buffer, 0);
      if (!bodyEnd) return undefined;
      const body = this.take(bodyEnd.at, bodyEnd.skip);
      return options.unstuff ? unstuff(body) : body;
    });
  }

  /**
   * One IMAP response line with its literals inline: a line ending in `{n}` continues, after CRLF, with n
   * octets (counted in bytes, whatever they hold) and then the rest of the line. Without the final CRLF.
   */
  imapLine(options: ReadOptions = {}): Promise<string> {
    return this.read('an IMAP response', options, () => {
      let out = '';
      let offset = 0;
      for (;;) {
        const end = this.buffer.indexOf(CRLF, offset);
        if (end < 0) return undefined;
        const text = this.buffer.toString(this.encoding, offset, end);
        const literal = /\{(\d+)\}$/.exec(text);
        if (!literal) {
          this.take(end, 2);
          return out + text;
        }
        const size = Number(literal[1]);
        if (this.buffer.length < end + 2 + size) return undefined;
        out += text + '\r\n' + this.buffer.toString(this.encoding, end + 2, end + 2 + size);
        offset = end + 2 + size;
      }
    });
  }

  /**
   * Lines until one satisfies `done` (that one included), e.g. an IMAP tagged completion; with `literals`, each
   * line is read as imapLine() reads it. The deadline is for the whole sequence.
   */
  async readUntil(done: (line: string) => boolean, options: ReadOptions & { literals?: boolean } = {}): Promise<string[]> {
    const deadline = Date.now() + (options.timeoutMs ?? this.timeoutMs);
    const lines: string[] = [];
    for (;;) {
      const timeoutMs = Math.max(0, deadline - Date.now());
      const line = options.literals ? await this.imapLine({ timeoutMs }) : await this.line({ timeoutMs });
      lines.push(line);
      if (done(line)) return lines;
    }
  }

  /** Resolves once the connection has ended (unread data is kept); fails with kind 'timeout' if it does not. */
  async waitClosed(options: ReadOptions = {}): Promise<void> {
    const deadline = Date.now() + (options.timeoutMs ?? this.timeoutMs);
    while (!this.ended) {
      if (!(await this.nextEvent(deadline))) throw this.error('timeout', `still open after ${options.timeoutMs ?? this.timeoutMs} ms`);
    }
  }

  /** Half-closes: sends FIN after what was written, and keeps reading. */
  end(): void {
    this.socket.end();
  }

  /** Drops the connection at once. */
  close(): void {
    this.socket.destroy();
  }

  // ---- internals ----

  /** Runs `attempt` on every arrival of data until it returns a value, the deadline passes or the input ends. */
  private async read<T>(what: string, options: ReadOptions, attempt: () => T | undefined): Promise<T> {
    const timeoutMs = options.timeoutMs ?? this.timeoutMs;
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const value = attempt();
      if (value !== undefined) return value;
      if (this.ended) throw this.error('closed', `connection closed while waiting for ${what}`);
      if (!(await this.nextEvent(deadline))) throw this.error('timeout', `no ${what.replace(/^an? /, '')} within ${timeoutMs} ms`);
    }
  }

  /** Waits for data or the end of the connection: true when one came, false at the deadline. */
  private nextEvent(deadline: number): Promise<boolean> {
    const left = deadline - Date.now();
    if (left <= 0) return Promise.resolve(false);
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        this.waiters = this.waiters.filter((w) => w !== wake);
        resolve(false);
      }, left);
      const wake = () => {
        clearTimeout(timer);
        resolve(true);
      };
      this.waiters.push(wake);
    });
  }

  private wake(): void {
    const waiters = this.waiters;
    this.waiters = [];
    for (const w of waiters) w();
  }

  /** Removes `length` octets from the buffer and returns them, dropping `skip` more (a terminator). */
  private take(length: number, skip: number): Buffer {
    const out = this.buffer.subarray(0, length);
    this.buffer = this.buffer.subarray(length + skip);
    return out;
  }

  private error(kind: LineClientErrorKind, problem: string): LineClientError {
    const unread = this.buffer.length ? `; unread: ${JSON.stringify(this.buffer.toString('latin1', 0, UNREAD_SHOWN))}` : '';
    const message = `${this.name} ${this.endpoint.host}:${this.endpoint.port}: ${problem} (after ${JSON.stringify(this.lastCommand)})${unread}`;
    return new LineClientError(kind, this.endpoint, this.lastCommand, message);
  }
}

/** Where the body starting at `from` ends: `at` its end (after its last CRLF), `skip` the terminator's length. */
function dotTerminator(buffer: Buffer, from: number): { at: number; skip: number } | undefined {
  if (buffer.subarray(from, from + 3).equals(DOT_LINE)) return { at: from, skip: 3 };
  const end = buffer.indexOf('\r\n.\r\n', from);
  return end < 0 ? undefined : { at: end + 2, skip: 3 };
}

/** RFC 1939 §3: a line starting with "." had another "." put before it. */
function unstuff(body: Buffer): Buffer {
  return Buffer.from(body.toString('latin1').replace(/(^|\r\n)\.\./g, '$1.'), 'latin1');
}

function firstLine(data: string | Uint8Array): string {
  const text = typeof data === 'string' ? data : Buffer.from(data).toString('latin1', 0, 200);
  const end = text.indexOf('\r\n');
  return end < 0 ? text : text.slice(0, end);
}
