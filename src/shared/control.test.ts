// The control channel over real HTTP: typed calls, the contract's operations only, clear errors.
import http from 'node:http';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ControlClient, startControlServer } from './control.js';
import type { NoArgs, Operation } from './contract.js';
import { EventLog } from './events.js';
import type { NodeEvents } from './contract.js';

type TestContract = {
  operations: {
    echo: Operation<{ text: string }, { text: string }>;
    fail: Operation<NoArgs, never>;
  };
  events: NodeEvents & { ping: { n: number } };
};

let server: http.Server;
let client: ControlClient<TestContract>;
const events = new EventLog<TestContract['events']>('test');

beforeAll(async () => {
  server = await startControlServer({
    host: '127.0.0.1',
    port: 0,
    events,
    health: () => ({ name: 'test', role: 'dns', pid: process.pid, services: {} }),
    rpc: () => ({
      echo: (args: { text?: string }) => ({ text: String(args.text) }),
      fail: () => {
        throw new Error('it broke');
      },
    }),
  });
  const address = server.address() as { port: number };
  client = new ControlClient<TestContract>({ host: '127.0.0.1', port: address.port }, 'test');
});

afterAll(() => {
  client.close();
  server.closeAllConnections();
  server.close();
});

async function post(path: string, body: string): Promise<{ status: number; json: { error?: string; operations?: string[] } }> {
  const { port } = server.address() as { port: number };
  const res = await fetch(`http://127.0.0.1:${port}${path}`, { method: 'POST', body });
  return { status: res.status, json: (await res.json()) as { error?: string; operations?: string[] } };
}

describe('control channel', () => {
  it('calls an operation of the contract', async () => {
    expect(await client.call('echo', { text: 'hi' })).toEqual({ text: 'hi' });
  });

  it('answers 404 with the list of operations for a name the contract does not have, inherited names included', async () => {
    for (const name of ['nope', 'constructor', 'toString', '__proto__', 'hasOwnProperty']) {
      const { status, json } = await post(`/rpc/${name}`, '{}');
      expect(status, name).toBe(404);
      expect(json.error).toBe(`unknown operation ${name}; this node has echo, fail`);
      expect(json.operations).toEqual(['echo', 'fail']);
    }
  });

  it('answers 400 for a body that is not a JSON object', async () => {
    expect((await post('/rpc/echo', '{not json')).status).toBe(400);
    expect((await post('/rpc/echo', '[1,2]')).json.error).toBe('echo: the arguments must be a JSON object');
  });

  it('reports a failed operation with the node, the operation and the reason', async () => {
    await expect(client.call('fail')).rejects.toThrow('test control POST /rpc/fail: it broke');
  });

  it('streams the events, replayed from the start', async () => {
    events.emit({ kind: 'ping', detail: { n: 1 } });
    const seen: number[] = [];
    await new Promise<void>((resolve) => {
      const stop = client.streamEvents(0, (e) => {
        seen.push((e.detail as { n: number }).n);
        if (seen.length === 2) {
          stop();
          resolve();
        }
      }, () => undefined);
      events.emit({ kind: 'ping', detail: { n: 2 } });
    });
    expect(seen).toEqual([1, 2]);
  });
});
