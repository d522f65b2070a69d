// For tests only: a raw line client that can start TLS on its connection (STARTTLS, STLS) or connect with implicit
// TLS, so that tests can write exactly the bytes they want before and after the handshake.
import net from 'node:net';
import tls from 'node:tls';
import type { Endpoint } from './config.js';

export class TlsLines {
  private buffer = '';
  private waiter: (() => void) | undefined;
  private ended = false;

  private constructor(public socket: net.Socket) {
    this.listen(socket);
  }

  /** Connects in plaintext, or with implicit TLS trusting `ca` when given. */
  static connect(endpoint: Endpoint, ca?: string): Promise<TlsLines> {
    return new Promise((resolve, reject) => {
      const socket = ca ? tls.connect({ host: endpoint.host, port: endpoint.port, ca, servername: 'localhost' }) : net.connect(endpoint.port, endpoint.host);
      socket.once(ca ? 'secureConnect' : 'connect', () => {
        socket.removeListener('error', reject);
        resolve(new TlsLines(socket));
      });
      socket.once('error', reject);
    });
  }

  private listen(socket: net.Socket) {
    socket.setEncoding('latin1');
    socket.on('data', (chunk: string) => {
      this.buffer += chunk;
      this.wake();
    });
    socket.on('close', () => {
      this.ended = true;
      this.wake();
    });
    socket.on('error', () => undefined);
  }

  private wake() {
    const w = this.waiter;
    this.waiter = undefined;
    w?.();
  }

  write(text: string): void {
    this.socket.write(text);
  }

  /** The next line (without CRLF); fails after `timeoutMs` or when the connection ends first. */
  async line(timeoutMs = 5000): Promise<string> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const newline = this.buffer.indexOf('\n');
      if (newline >= 0) {
        const line = this.buffer.slice(0, newline).replace(/\r$/, '');
        this.buffer = this.buffer.slice(newline + 1);
        return line;
      }
      if (this.ended) throw new Error(`connection closed (pending: ${JSON.stringify(this.buffer)})`);
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`no line within ${timeoutMs} ms (pending: ${JSON.stringify(this.buffer)})`);
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, left);
        this.waiter = () => {
          clearTimeout(timer);
          resolve();
        };
      });
    }
  }

  /** Lines until one matches `last` (included). */
  async until(last: RegExp): Promise<string[]> {
    const lines: string[] = [];
    for (;;) {
      const line = await this.line();
      lines.push(line);
      if (last.test(line)) return lines;
    }
  }

  /** What arrived and was not read as a line yet. */
  get unread(): string {
    return this.buffer;
  }

  /** Starts TLS as the client on the connection, trusting `ca`; resolves with the negotiated version. */
  startTls(ca: string): Promise<string> {
    const raw = this.socket;
    raw.removeAllListeners('data');
    raw.removeAllListeners('close');
    return new Promise((resolve, reject) => {
      const secure = tls.connect({ socket: raw, ca, servername: 'localhost' }, () => {
        secure.removeListener('error', reject);
        this.socket = secure;
        this.listen(secure);
        resolve(secure.getProtocol() ?? '');
      });
      secure.once('error', reject);
    });
  }

  close(): void {
    this.socket.destroy();
  }
}

/**
 * Tries a handshake with at most TLS 1.1 (and any cipher), on a new connection to `to` (implicit TLS) or on a
 * connected socket (after STARTTLS): resolves with the error it ends with, or 'connected'.
 */
export function tryTls11(to: Endpoint | net.Socket, ca: string): Promise<string> {
  return new Promise((resolve) => {
    if (to instanceof net.Socket) to.removeAllListeners('data');
    const where = to instanceof net.Socket ? { socket: to } : { host: to.host, port: to.port };
    const socket = tls.connect({ ...where, ca, servername: 'localhost', minVersion: 'TLSv1', maxVersion: 'TLSv1.1', ciphers: 'DEFAULT@SECLEVEL=0' }, () => {
      socket.destroy();
      resolve('connected');
    });
    socket.once('error', (err) => resolve(err.message));
  });
}
