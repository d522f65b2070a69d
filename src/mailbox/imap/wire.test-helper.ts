// One IMAP server per test over a store of `STORES`, with bob logged in on a raw client: the setting of the wire-level
// extension tests (list-extended, create-special-use, multiappend, binary).
import { afterEach, beforeEach, expect } from 'vitest';
import type { MailStore } from '../store-api.js';
import { startImap, type RunningImap } from './index.js';
import { RawClient } from './raw-client.test-helper.js';
import type { StoreFactory } from './stores.test-helper.js';

export const BOB = 'bob@example.test';

export interface Wire {
  store: MailStore;
  server: RunningImap;
  client: RawClient;
  /** Sends a command that must succeed; returns its untagged responses. */
  ok(command: string): Promise<string[]>;
  /** Sends a command; returns every response line, the tagged one last. */
  run(command: string): Promise<string[]>;
}

/** Registers the server's start and stop around each test of the calling `describe`; the handle is valid inside tests. */
export function useWire(makeStore: StoreFactory): Wire {
  let tag = 0;
  let cleanup: () => Promise<void> = async () => undefined;
  const wire = {
    async run(command: string) {
      return wire.client.command(`t${++tag}`, command);
    },
    async ok(command: string) {
      const lines = await wire.run(command);
      expect(lines[lines.length - 1], command).toMatch(new RegExp(`^t${tag} OK`));
      return lines.slice(0, -1);
    },
  } as Wire;
  beforeEach(async () => {
    const made = await makeStore([{ address: BOB, password: 'secret' }]);
    wire.store = made.store;
    cleanup = made.cleanup;
    wire.server = await startImap({ store: wire.store, host: '127.0.0.1', port: 0, hostname: 'imap.example.test' });
    wire.client = await RawClient.login(wire.server.endpoint.port);
  });
  afterEach(async () => {
    wire.client.close();
    await wire.server.stop();
    await cleanup();
  });
  return wire;
}
