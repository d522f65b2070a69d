// A line-level IMAP client for protocol tests: sends raw bytes, reads responses (literals folded into the
// response they belong to), and waits only on data or a timeout.
import net from 'node:net';

export class RawClient {
  private buffer = Buffer.alloc(0);
  private waiters: Array<() => void> = [];
  private ended = false;

  private constructor(readonly socket: net.Socket) {
    socket.on('data', (d: Buffer) => {
      this.buffer = Buffer.concat([this.buffer, d]);
      this.wake();
    });
    socket.on('close', () => {
      this.ended = true;
      this.wake();
    });
    socket.on('error', () => undefined);
  }

  static async connect(port: number, host = '127.0.0.1'): Promise<RawClient> {
    const socket = net.connect(port, host);
    await new Promise<void>((resolve, reject) => {
      socket.once('connect', resolve);
      socket.once('error', reject);
    });
    return new RawClient(socket);
  }

  /** Connects, reads the greeting, logs in and returns the client. */
  static async login(port: number, user = 'bob@example.test', password = 'secret'): Promise<RawClient> {
    const c = await RawClient.connect(port);
    await c.line();
    const res = await c.command('L', `LOGIN ${user} ${password}`);
    if (!res[res.length - 1]!.startsWith('L OK')) throw new Error(`login failed: ${res.join('\n')}`);
    return c;
  }

  send(data: string | Buffer): void {
    this.socket.write(data);
  }

  get closed(): boolean {
    return this.ended;
  }

  private wake(): void {
    this.waiters.splice(0).forEach((w) => w());
  }

  private async waitData(deadline: number): Promise<void> {
    if (this.ended) throw new Error(`connection closed; unread: ${JSON.stringify(this.buffer.toString('latin1'))}`);
    const left = deadline - Date.now();
    if (left <= 0) throw new Error(`timeout; unread: ${JSON.stringify(this.buffer.toString('latin1'))}`);
    await new Promise<void>((resolve) => {
      const timer = setTimeout(resolve, left);
      this.waiters.push(() => {
        clearTimeout(timer);
        resolve();
      });
    });
  }

  /** One response line with its literals inline (latin1), without the final CRLF. */
  async line(timeoutMs = 3000): Promise<string> {
    const deadline = Date.now() + timeoutMs;
    let out = '';
    for (;;) {
      const lf = this.buffer.indexOf('\r\n');
      if (lf < 0) {
        await this.waitData(deadline);
        continue;
      }
      const text = this.buffer.toString('latin1', 0, lf);
      const m = /\{(\d+)\}$/.exec(text);
      if (!m) {
        this.buffer = this.buffer.subarray(lf + 2);
        return out + text;
      }
      const size = Number(m[1]);
      while (this.buffer.length < lf + 2 + size) await this.waitData(deadline);
      out += text + '\r\n' + this.buffer.toString('latin1', lf + 2, lf + 2 + size);
      this.buffer = this.buffer.subarray(lf + 2 + size);
    }
  }

  /** Lines up to and including the tagged response for `tag`. */
  async until(tag: string, timeoutMs = 3000): Promise<string[]> {
    const lines: string[] = [];
    for (;;) {
      const l = await this.line(timeoutMs);
      lines.push(l);
      if (l.startsWith(tag + ' ')) return lines;
    }
  }

  async command(tag: string, text: string, timeoutMs = 3000): Promise<string[]> {
    this.send(`${tag} ${text}\r\n`);
    return this.until(tag, timeoutMs);
  }

  /** Resolves once the server has closed the connection. */
  async waitClosed(timeoutMs = 3000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (!this.ended) {
      try {
        await this.waitData(deadline);
      } catch (err) {
        if (this.ended) return;
        if (Date.now() >= deadline) throw err;
      }
      this.buffer = Buffer.alloc(0);
    }
  }

  close(): void {
    this.socket.destroy();
  }
}
