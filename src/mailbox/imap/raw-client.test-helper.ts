// A line-level IMAP client for protocol tests: sends raw bytes, reads responses (literals folded into the
// response they belong to), and waits only on data or a timeout. The reading is the harness's LineClient.
import { LineClient } from '../../harness/clients/line-client.js';

/** Responses are expected within this (ms) unless a call says otherwise. */
const DEFAULT_TIMEOUT = 3000;

export class RawClient {
  private constructor(private readonly client: LineClient) {}

  static async connect(port: number, host = '127.0.0.1'): Promise<RawClient> {
    return new RawClient(await LineClient.connect({ host, port }, { name: 'IMAP', timeoutMs: DEFAULT_TIMEOUT }));
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
    this.client.write(data);
  }

  get closed(): boolean {
    return this.client.closed;
  }

  /** One response line with its literals inline (latin1), without the final CRLF. */
  line(timeoutMs = DEFAULT_TIMEOUT): Promise<string> {
    return this.client.imapLine({ timeoutMs });
  }

  /** Lines up to and including the tagged response for `tag`. */
  until(tag: string, timeoutMs = DEFAULT_TIMEOUT): Promise<string[]> {
    return this.client.readUntil((line) => line.startsWith(tag + ' '), { literals: true, timeoutMs });
  }

  async command(tag: string, text: string, timeoutMs = DEFAULT_TIMEOUT): Promise<string[]> {
    this.send(`${tag} ${text}\r\n`);
    return this.until(tag, timeoutMs);
  }

  /** Resolves once the server has closed the connection. */
  waitClosed(timeoutMs = DEFAULT_TIMEOUT): Promise<void> {
    return this.client.waitClosed({ timeoutMs });
  }

  close(): void {
    this.client.close();
  }
}
