// The two stores every wire-level IMAP test runs against: the in-memory one (the contract of store-api.ts, no
// disk) and the real MaildirStore on a temporary directory. A test that passes on one and fails on the other has
// found a store that does not keep the contract.
import { promises as fs } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { UserConfig } from '../../shared/config.js';
import type { MailStore } from '../store-api.js';
import { MaildirStore } from '../store.js';
import { MemoryStore } from './memory-store.test-helper.js';

export interface TestStore {
  store: MailStore;
  cleanup(): Promise<void>;
}

export type StoreFactory = (users: UserConfig[]) => Promise<TestStore>;

/** `[name, factory]` pairs, for `describe.each`. */
export const STORES: Array<[string, StoreFactory]> = [
  ['memory store', async (users) => ({ store: new MemoryStore(users), cleanup: async () => undefined })],
  [
    'Maildir store',
    async (users) => {
      const root = await fs.mkdtemp(path.join(os.tmpdir(), 'maillab-imap-'));
      const store = new MaildirStore({ root, users, fsync: true });
      await store.open();
      return {
        store,
        cleanup: async () => {
          await store.close();
          await fs.rm(root, { recursive: true, force: true });
        },
      };
    },
  ],
];
