// Helpers for the mailbox tests (not part of the node): a node context on a temporary data directory and a
// line-oriented raw TCP client (the harness's LineClient).
import { promises as fs } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { LineClient } from '../harness/clients/line-client.js';
import type { MailboxNodeConfig, UserConfig } from '../shared/config.js';
import { EventLog, type LabEvent } from '../shared/events.js';
import type { NodeContext } from '../shared/node.js';

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
