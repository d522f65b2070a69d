// One IMAP server on a test store per test, with the raw clients it opened closed afterwards: the scaffolding the
// session-level wire tests (sync.test.ts, qresync.test.ts) share. Register it inside a describe block.
import { afterEach, beforeEach } from 'vitest';
import type { MailStore } from '../store-api.js';
import { startImap, type RunningImap } from './index.js';
import { RawClient } from './raw-client.test-helper.js';
import type { StoreFactory } from './stores.test-helper.js';

export const BOB = 'bob@example.test';

export interface ImapFixture {
  store: MailStore;
  server: RunningImap;
  port: number;
  /** A logged-in raw client (as BOB), closed after the test. */
  login(): Promise<RawClient>;
  /** Stops the server and starts another on the same store, with other limits. */
  restart(options: { idleTimeoutMs?: number }): Promise<void>;
}

export function useImapServer(makeStore: StoreFactory): ImapFixture {
  const clients: RawClient[] = [];
  let cleanup: (() => Promise<void>) | undefined;
  const start = async (options: { idleTimeoutMs?: number } = {}) => {
    fixture.server = await startImap({ store: fixture.store, host: '127.0.0.1', port: 0, hostname: 'imap.example.test', ...options });
    fixture.port = fixture.server.endpoint.port;
  };
  const fixture = {
    async login() {
      const c = await RawClient.login(fixture.port);
      clients.push(c);
      return c;
    },
    async restart(options: { idleTimeoutMs?: number }) {
      await fixture.server.stop();
      await start(options);
    },
  } as ImapFixture;

  beforeEach(async () => {
    const made = await makeStore([{ address: BOB, password: 'secret' }]);
    fixture.store = made.store;
    cleanup = made.cleanup;
    await start();
  });

  afterEach(async () => {
    for (const c of clients.splice(0)) c.close();
    await fixture.server.stop();
    await cleanup?.();
  });

  return fixture;
}

export const last = (lines: string[]) => lines[lines.length - 1]!;
