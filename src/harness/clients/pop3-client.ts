// A small POP3 client (RFC 1939, RFC 2449 CAPA): what a phone's "download mail" does, command by command.
import net from 'node:net';
import type { Endpoint } from '../../shared/config.js';

export class Pop3Error extends Error {}

export class Pop3Client {
  private socket?: net.Socket;
  private buffer = Buffer.alloc(0);
  private waiting?: { multiline: boolean; resolve: (lines: Buffer) => void; reject: (e: Error) => void; command: string };
  private closedError?: Error;

  constructor(readonly endpoint: Endpoint, private readonly timeoutMs = 5000) {}

  private where(): string {
    return `POP3 ${this.endpoint.host}:${this.endpoint.port}`;
  }

  async connect(): Promise<string> {
    const socket = net.connect(this.endpoint.port, this.endpoint.host);
    this.socket = socket;
    socket.on('data', (chunk: Buffer) => {
      this.buffer = Buffer.concat([this.buffer, chunk]);
      this.drain();
    });
    socket.on('error', (err) => this.fail(new Pop3Error(`${this.where()}: ${err.message}`)));
    socket.on('close', () => this.fail(new Pop3Error(`${this.where()}: connection closed`)));
    return (await this.read('(greeting)', false)).toString('latin1');
  }

  private fail(err: Error) {
    this.closedError ??= err;
    const w = this.waiting;
    this.waiting = undefined;
    w?.reject(err);
  }

  private drain() {
    const w = this.waiting;
    if (!w) return;
    const firstEnd = this.buffer.indexOf('\r\n');
    if (firstEnd < 0) return;
    const status = this.buffer.subarray(0, firstEnd).toString('latin1');
    if (!w.multiline || status.startsWith('-ERR')) {
      this.buffer = this.buffer.subarray(firstEnd + 2);
      return this.settle(w, status, Buffer.alloc(0));
    }
    const end = this.buffer.indexOf('\r\n.\r\n', firstEnd);
    // An empty multi-line body ends right after the status line.
    const emptyEnd = this.buffer.subarray(firstEnd + 2, firstEnd + 5).toString('latin1') === '.\r\n' ? firstEnd : -1;
    const stop = emptyEnd >= 0 ? emptyEnd : end;
    if (stop < 0) return;
    const body = emptyEnd >= 0 ? Buffer.alloc(0) : this.buffer.subarray(firstEnd + 2, end + 2);
    this.buffer = this.buffer.subarray(stop + 5);
    this.settle(w, status, unstuff(body));
  }

  private settle(w: NonNullable<Pop3Client['waiting']>, status: string, body: Buffer) {
    this.waiting = undefined;
    if (status.startsWith('+OK')) w.resolve(w.multiline ? body : Buffer.from(status, 'latin1'));
    else w.reject(new Pop3Error(`${this.where()}: ${w.command} → ${status}`));
  }

  private read(command: string, multiline: boolean): Promise<Buffer> {
    if (this.closedError) return Promise.reject(this.closedError);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => this.fail(new Pop3Error(`${this.where()}: no reply to ${command} within ${this.timeoutMs} ms`)), this.timeoutMs);
      this.waiting = {
        multiline,
        command,
        resolve: (b) => {
          clearTimeout(timer);
          resolve(b);
        },
        reject: (e) => {
          clearTimeout(timer);
          reject(e);
        },
      };
      this.drain();
    });
  }

  /** Sends one command; multi-line replies come back dot-unstuffed without the terminating line. */
  command(line: string, multiline = false): Promise<Buffer> {
    this.socket!.write(line + '\r\n');
    return this.read(line.startsWith('PASS') ? 'PASS ****' : line, multiline);
  }

  async login(user: string, password: string): Promise<void> {
    await this.command(`USER ${user}`);
    await this.command(`PASS ${password}`);
  }

  async stat(): Promise<{ count: number; size: number }> {
    const [, count, size] = (await this.command('STAT')).toString('latin1').split(' ');
    return { count: Number(count), size: Number(size) };
  }

  /** Message numbers with their UIDL. */
  async uidl(): Promise<{ number: number; uid: string }[]> {
    const body = (await this.command('UIDL', true)).toString('latin1');
    return body
      .split('\r\n')
      .filter(Boolean)
      .map((line) => {
        const [n, uid] = line.split(' ');
        return { number: Number(n), uid: uid! };
      });
  }

  async list(): Promise<{ number: number; size: number }[]> {
    const body = (await this.command('LIST', true)).toString('latin1');
    return body
      .split('\r\n')
      .filter(Boolean)
      .map((line) => {
        const [n, size] = line.split(' ');
        return { number: Number(n), size: Number(size) };
      });
  }

  retr(number: number): Promise<Buffer> {
    return this.command(`RETR ${number}`, true);
  }

  async dele(number: number): Promise<void> {
    await this.command(`DELE ${number}`);
  }

  /** QUIT: the server enters UPDATE and removes what was marked deleted. */
  async quit(): Promise<void> {
    await this.command('QUIT');
    this.socket?.end();
  }

  /** Drops the connection without QUIT (a lost signal): nothing marked deleted is removed. */
  drop(): void {
    this.socket?.destroy();
  }
}

/** RFC 1939 §3: lines starting with "." were stuffed with another "." by the server. */
function unstuff(body: Buffer): Buffer {
  const text = body.toString('latin1');
  return Buffer.from(text.replace(/(^|\r\n)\.\./g, '$1.'), 'latin1');
}
