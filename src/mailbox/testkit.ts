// Helpers for the mailbox tests (not part of the node): a node context on a temporary data directory and a
// line-oriented raw TCP client.
import { promises as fs } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import type { MailboxNodeConfig, UserConfig } from '../shared/config.js';
import { EventLog, type LabEvent } from '../shared/events.js';
import type { NodeContext } from '../shared/node.js';

export const TEST_USERS: UserConfig[] = [
  { address: 'bob@receiver.test', password: 'bob-secret' },
  { address: 'carol@receiver.test', password: 'carol secret with spaces' },
];

export interface TestContext extends NodeContext<MailboxNodeConfig> {
  events: EventLog;
  /** Everything the node emitted so far. */
  emitted(kind?: string): LabEvent[];
  cleanup(): Promise<void>;
}

export async function testContext(overrides: Partial<MailboxNodeConfig> = {}): Promise<TestContext> {
  const dataDir = await fs.mkdtemp(path.join(os.tmpdir(), 'maillab-mailbox-'));
  const config: MailboxNodeConfig = {
    name: 'mailbox',
    role: 'mailbox',
    hostname: 'mail.receiver.test',
    address: '127.0.0.1',
    dataDir,
    controlPort: 0,
    resolver: { host: '127.0.0.1', port: 53 },
    greetingDelayMs: 0,
    fsync: true,
    ports: { lmtp: 0 },
    users: TEST_USERS,
    ...overrides,
  };
  const events = new EventLog(config.name);
  return {
    config,
    events,
    log: () => undefined,
    emitted: (kind) => events.since(0).filter((e) => kind === undefined || e.kind === kind),
    cleanup: () => fs.rm(dataDir, { recursive: true, force: true }),
  };
}

/** A raw client: write lines, read CRLF-terminated lines (or raw bytes) as the server sends them. */
export class LineClient {
  private buffer = Buffer.alloc(0);
  private waiters: Array<() => void> = [];
  private ended = false;
  readonly socket: net.Socket;

  private constructor(socket: net.Socket) {
    this.socket = socket;
    socket.on('data', (chunk: Buffer) => {
      this.buffer = Buffer.concat([this.buffer, chunk]);
      this.wake();
    });
    socket.on('close', () => {
      this.ended = true;
      this.wake();
    });
    socket.on('error', () => undefined);
  }

  static connect(port: number, host = '127.0.0.1'): Promise<LineClient> {
    return new Promise((resolve, reject) => {
      const socket = net.connect(port, host, () => resolve(new LineClient(socket)));
      socket.once('error', reject);
    });
  }

  private wake() {
    const waiters = this.waiters;
    this.waiters = [];
    for (const w of waiters) w();
  }

  private async waitFor<T>(take: () => T | undefined, timeoutMs = 5000): Promise<T> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const value = take();
      if (value !== undefined) return value;
      if (this.ended) throw new Error(`connection closed; unread: ${JSON.stringify(this.buffer.toString('latin1'))}`);
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`timed out; unread: ${JSON.stringify(this.buffer.toString('latin1'))}`);
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, left);
        this.waiters.push(() => {
          clearTimeout(timer);
          resolve();
        });
      });
    }
  }

  write(data: string | Buffer) {
    this.socket.write(data);
  }

  /** Sends a command line (CRLF added). */
  send(line: string) {
    this.socket.write(line + '\r\n');
  }

  /** The next line, without its CRLF. */
  line(timeoutMs?: number): Promise<string> {
    return this.waitFor(() => {
      const end = this.buffer.indexOf('\r\n');
      if (end < 0) return undefined;
      const line = this.buffer.subarray(0, end).toString('utf8');
      this.buffer = this.buffer.subarray(end + 2);
      return line;
    }, timeoutMs);
  }

  /** Exactly `n` octets. */
  bytes(n: number): Promise<Buffer> {
    return this.waitFor(() => {
      if (this.buffer.length < n) return undefined;
      const out = this.buffer.subarray(0, n);
      this.buffer = this.buffer.subarray(n);
      return out;
    });
  }

  /** A multi-line response body up to the "." line, raw (still dot-stuffed), terminator excluded. */
  multiline(): Promise<Buffer> {
    return this.waitFor(() => {
      const at = this.buffer.subarray(0, 3).equals(Buffer.from('.\r\n')) ? 0 : this.buffer.indexOf('\r\n.\r\n');
      if (at < 0) return undefined;
      const end = at === 0 ? 0 : at + 2;
      const out = this.buffer.subarray(0, end);
      this.buffer = this.buffer.subarray(end + 3);
      return out;
    });
  }

  /** An SMTP/LMTP reply, all its lines (`250-...`, `250 ...`). */
  async reply(): Promise<string[]> {
    const lines: string[] = [];
    for (;;) {
      const line = await this.line();
      lines.push(line);
      if (!/^\d{3}-/.test(line)) return lines;
    }
  }

  /** Resolves once the server closed the connection. */
  closed(timeoutMs = 5000): Promise<void> {
    return this.waitFor(() => (this.ended ? true : undefined), timeoutMs).then(() => undefined);
  }

  close() {
    this.socket.destroy();
  }
}
