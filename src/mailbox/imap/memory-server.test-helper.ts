// A server over an in-memory store that a test fills once, with one logged-in raw client: the wire tests of SEARCH,
// SORT and THREAD, which read one mailbox's content with many commands.
import { afterAll, beforeAll } from 'vitest';
import { startImap, type RunningImap } from './index.js';
import { MemoryStore } from './memory-store.test-helper.js';
import { RawClient } from './raw-client.test-helper.js';

export const USER = 'bob@example.test';

/** Registers beforeAll/afterAll in the calling describe block; the returned function gives the client. */
export function useMemoryServer(fill: (store: MemoryStore, user: string) => Promise<void>): (() => RawClient) & { port: () => number } {
  let server: RunningImap | undefined;
  let client: RawClient | undefined;
  beforeAll(async () => {
    const store = new MemoryStore([{ address: USER, password: 'secret' }]);
    await fill(store, USER);
    server = await startImap({ store, host: '127.0.0.1', port: 0, hostname: 'imap.example.test' });
    client = await RawClient.login(server.endpoint.port, USER, 'secret');
  });
  afterAll(async () => {
    client?.close();
    await server?.stop();
  });
  const started = <T>(value: T | undefined): T => {
    if (value === undefined) throw new Error('the server is not started');
    return value;
  };
  return Object.assign(() => started(client), { port: () => started(server).endpoint.port });
}
