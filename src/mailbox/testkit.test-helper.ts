// Helpers for the mailbox tests (not part of the node): a node context on a temporary data directory and a
// line-oriented raw TCP client (the harness's LineClient).
import { promises as fs } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { LineClient } from '../harness/clients/line-client.js';
import type { MailboxNodeConfig, UserConfig } from '../shared/config.js';
import { EventLog, type LabEvent } from '../shared/events.js';
import type { NodeContext } from '../shared/node.js';
import type { MailStore, StoredMessage } from './store-api.js';

export const BOB = 'bob@receiver.test';
export const CAROL = 'carol@receiver.test';

export const TEST_USERS: UserConfig[] = [
  { address: BOB, password: 'bob-secret' },
  { address: CAROL, password: 'carol secret with spaces' },
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

/** A raw client on the local port of a service under test; lines decode as UTF-8 (the tests' messages are). */
export function connectLine(port: number): Promise<LineClient> {
  return LineClient.connect({ host: '127.0.0.1', port }, { name: 'test client', encoding: 'utf8' });
}

/**
 * A minimal line client bound to a chosen local address (`127.x.y.z`), for what depends on the client's address
 * (login throttling, the LMTP client list); the harness's LineClient always connects from the default address.
 */
export class AddressedClient {
  private buffer = '';
  private waiters: Array<() => void> = [];
  private ended = false;

  private constructor(readonly socket: net.Socket) {
    socket.setEncoding('utf8');
    socket.on('data', (chunk: string) => {
      this.buffer += chunk;
      this.wake();
    });
    socket.on('error', () => undefined);
    socket.on('close', () => {
      this.ended = true;
      this.wake();
    });
  }

  static connect(port: number, localAddress: string, host = '127.0.0.1'): Promise<AddressedClient> {
    return new Promise((resolve, reject) => {
      const socket = net.connect({ port, host, localAddress });
      socket.once('error', reject);
      socket.once('connect', () => {
        socket.off('error', reject);
        resolve(new AddressedClient(socket));
      });
    });
  }

  send(line: string): void {
    this.socket.write(line + '\r\n');
  }

  /** The next line without CRLF; fails after `timeoutMs` or when the connection ends first. */
  async line(timeoutMs = 3000): Promise<string> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const end = this.buffer.indexOf('\r\n');
      if (end >= 0) {
        const line = this.buffer.slice(0, end);
        this.buffer = this.buffer.slice(end + 2);
        return line;
      }
      if (this.ended) throw new Error(`connection closed while waiting for a line (unread: ${JSON.stringify(this.buffer)})`);
      await this.next(deadline, 'a line');
    }
  }

  /** Lines up to and including the first that `done` accepts. */
  async until(done: (line: string) => boolean, timeoutMs = 3000): Promise<string[]> {
    const lines: string[] = [];
    for (;;) {
      const line = await this.line(timeoutMs);
      lines.push(line);
      if (done(line)) return lines;
    }
  }

  get closed(): boolean {
    return this.ended;
  }

  /** Resolves once the server has closed the connection (what it sent before stays readable). */
  async waitClosed(timeoutMs = 3000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (!this.ended) await this.next(deadline, 'the close');
  }

  close(): void {
    this.socket.destroy();
  }

  private next(deadline: number, what: string): Promise<void> {
    const left = deadline - Date.now();
    if (left <= 0) return Promise.reject(new Error(`no ${what} within the deadline (unread: ${JSON.stringify(this.buffer)})`));
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`no ${what} within the deadline (unread: ${JSON.stringify(this.buffer)})`)), left);
      this.waiters.push(() => {
        clearTimeout(timer);
        resolve();
      });
    });
  }

  private wake(): void {
    for (const w of this.waiters.splice(0)) w();
  }
}

/**
 * `store` with a `deliver` that, once called (`entered`), holds the delivery until its abort signal fires (the
 * delivering client went away), then lets the real store decide; `attempt()` is that delivery's outcome. A signal
 * that does not fire within 5 s fails the delivery with `notAbandoned` as its message.
 */
export function deliveryHeldUntilAbandoned(store: MailStore, notAbandoned: string): { store: MailStore; entered: Promise<void>; attempt: () => Promise<unknown> | undefined } {
  let enter!: () => void;
  const entered = new Promise<void>((resolve) => (enter = resolve));
  let attempt: Promise<StoredMessage> | undefined;
  const deliver: MailStore['deliver'] = (user, data, options = {}) => {
    enter();
    attempt = (async () => {
      const signal = options.signal!;
      if (!signal.aborted) {
        await new Promise<void>((resolve, reject) => {
          const timer = setTimeout(() => reject(new Error(notAbandoned)), 5000);
          signal.addEventListener('abort', () => (clearTimeout(timer), resolve()));
        });
      }
      return store.deliver(user, data, options);
    })();
    return attempt;
  };
  return { store: Object.create(store, { deliver: { value: deliver } }) as MailStore, entered, attempt: () => attempt };
}
