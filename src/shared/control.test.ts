// The control channel over real HTTP: the lab's bearer token on every endpoint, a bounded body, the contract's
// operations only, typed calls and clear errors.
import http from 'node:http';
import net from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CONTROL_MAX_BODY_BYTES, ControlClient, newControlToken, startControlServer } from './control.js';
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

const MiB = 1024 * 1024;
const token = newControlToken();
let server: http.Server;
let client: ControlClient<TestContract>;
let port: number;
const events = new EventLog<TestContract['events']>('test');

beforeAll(async () => {
  server = await startControlServer({
    host: '127.0.0.1',
    port: 0,
    token,
    events,
    health: () => ({ name: 'test', role: 'dns', pid: process.pid, services: {} }),
    rpc: () => ({
      echo: (args: { text?: string }) => ({ text: String(args.text) }),
      fail: () => {
        throw new Error('it broke');
      },
    }),
  });
  port = (server.address() as { port: number }).port;
  client = new ControlClient<TestContract>({ host: '127.0.0.1', port }, 'test', token);
});

afterAll(() => {
  client.close();
  server.closeAllConnections();
  server.close();
});

type Reply = { status: number; headers: Headers; json: { error?: string; operations?: string[] } };

async function request(method: 'GET' | 'POST', path: string, options: { body?: string; authorization?: string | null } = {}): Promise<Reply> {
  const authorization = options.authorization === undefined ? `Bearer ${token}` : options.authorization;
  const res = await fetch(`http://127.0.0.1:${port}${path}`, {
    method,
    ...(options.body !== undefined ? { body: options.body } : {}),
    headers: authorization === null ? {} : { authorization },
  });
  // /events streams: read only its first line (or the whole error).
  const text = res.status === 200 && path.startsWith('/events') ? '{}' : await res.text();
  if (res.status === 200 && path.startsWith('/events')) await res.body?.cancel();
  return { status: res.status, headers: res.headers, json: JSON.parse(text) as Reply['json'] };
}

const post = (path: string, body: string, authorization?: string | null) => request('POST', path, { body, authorization });

/**
 * A raw HTTP POST whose body is streamed in 64 KiB chunks (never more than one chunk in memory here) until the
 * server answers or closes. `declared`: send Content-Length (else chunked transfer encoding).
 */
async function streamPost(path: string, total: number, declared: boolean, authorization = `Bearer ${token}`): Promise<{ status: number; sentWhenAnswered: number; sent: number; peakRssGrowth: number; closedByServer: boolean }> {
  const rssBefore = process.memoryUsage().rss;
  let peakRss = rssBefore;
  const socket = net.connect(port, '127.0.0.1');
  await new Promise<void>((resolve, reject) => socket.once('connect', resolve).once('error', reject));
  const head = [`POST ${path} HTTP/1.1`, 'host: control', `authorization: ${authorization}`, 'content-type: application/json'];
  head.push(declared ? `content-length: ${total}` : 'transfer-encoding: chunked');
  socket.write(head.join('\r\n') + '\r\n\r\n');

  let answer = '';
  let sentWhenAnswered = -1;
  let sent = 0;
  let closed = false;
  let failed = false;
  const answered = new Promise<void>((resolve) => {
    socket.on('data', (d: Buffer) => {
      answer += d.toString('latin1');
      if (sentWhenAnswered < 0) sentWhenAnswered = sent;
      if (answer.includes('\r\n\r\n')) resolve();
    });
  });
  const gone = new Promise<void>((resolve) => socket.once('close', () => ((closed = true), resolve())));
  socket.on('error', () => (failed = true));

  const chunk = Buffer.alloc(64 * 1024, 'a'.charCodeAt(0));
  chunk.write('{"text":"', 0);
  while (sent < total && sentWhenAnswered < 0 && !closed && !failed) {
    const piece = sent + chunk.length > total ? chunk.subarray(0, total - sent) : chunk;
    const ok = socket.write(declared ? piece : Buffer.concat([Buffer.from(`${piece.length.toString(16)}\r\n`), piece, Buffer.from('\r\n')]));
    sent += piece.length;
    peakRss = Math.max(peakRss, process.memoryUsage().rss);
    if (!ok) await Promise.race([new Promise((resolve) => socket.once('drain', resolve)), answered, gone]);
  }
  await withTimeout(answered, 10_000, `no answer from the control server after ${sent} bytes sent:\n${answer}`);
  // The server closes the connection after its answer, reading nothing more.
  await withTimeout(gone, 10_000, 'the server kept the connection open after refusing the body');
  peakRss = Math.max(peakRss, process.memoryUsage().rss);
  return { status: Number(/^HTTP\/1\.1 (\d{3})/.exec(answer)?.[1]), sentWhenAnswered, sent, peakRssGrowth: peakRss - rssBefore, closedByServer: closed };
}

function withTimeout<T>(promise: Promise<T>, ms: number, why: string): Promise<T> {
  let timer: NodeJS.Timeout;
  return Promise.race([promise, new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error(why)), ms)))]).finally(() => clearTimeout(timer));
}

describe('control channel', () => {
  it('calls an operation of the contract', async () => {
    expect(await client.call('echo', { text: 'hi' })).toEqual({ text: 'hi' });
  });

  it('answers 404 with the list of operations for a name the contract does not have, inherited names included', async () => {
    for (const name of ['nope', 'constructor', 'toString', '__proto__', 'hasOwnProperty', 'valueOf']) {
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

describe('control channel: the lab token', () => {
  const endpoints: ['GET' | 'POST', string][] = [
    ['GET', '/health'],
    ['GET', '/events?since=0'],
    ['POST', '/rpc/echo'],
    ['POST', '/rpc/constructor'],
    ['GET', '/nowhere'],
  ];
  const wrong: [string, string | null][] = [
    ['no Authorization header', null],
    ['an empty bearer', 'Bearer '],
    ['a wrong token', `Bearer ${newControlToken()}`],
    ['the token with a character changed', `Bearer ${token.slice(0, -1)}${token.endsWith('A') ? 'B' : 'A'}`],
    ['a prefix of the token', `Bearer ${token.slice(0, 20)}`],
    ['the token and more', `Bearer ${token}x`],
    ['another scheme', `Basic ${Buffer.from(`maillab:${token}`).toString('base64')}`],
    ['the token without a scheme', token],
  ];

  it.each(wrong)('answers 401 on every endpoint to %s', async (_what, authorization) => {
    for (const [method, path] of endpoints) {
      const reply = await request(method, path, { authorization, ...(method === 'POST' ? { body: '{"text":"forged"}' } : {}) });
      expect(reply.status, `${method} ${path}`).toBe(401);
      expect(reply.headers.get('www-authenticate'), `${method} ${path}`).toMatch(/^Bearer\b/);
      expect(reply.headers.get('content-type')).toBe('application/json');
      expect(reply.json.error).toMatch(/control token/);
    }
  });

  it('serves every endpoint with the token (the scheme in any case)', async () => {
    expect((await request('GET', '/health')).status).toBe(200);
    expect((await request('GET', '/health', { authorization: `bearer ${token}` })).status).toBe(200);
    expect((await request('GET', '/events?since=0')).status).toBe(200);
    expect((await post('/rpc/echo', '{"text":"ok"}')).status).toBe(200);
  });

  it('the client sends the token on every request, the event stream included', async () => {
    const stranger = new ControlClient<TestContract>({ host: '127.0.0.1', port }, 'test', newControlToken());
    try {
      await expect(stranger.health()).rejects.toThrow(/test control GET \/health: missing or wrong control token/);
      await expect(stranger.call('echo', { text: 'x' })).rejects.toThrow(/401|control token/);
      const ended = await withTimeout(new Promise<boolean>((resolve) => stranger.streamEvents(0, () => resolve(false), () => resolve(true))), 5000, 'the refused event stream never ended');
      expect(ended).toBe(true);
    } finally {
      stranger.close();
    }
    expect(await client.health()).toMatchObject({ name: 'test' });
  });

  it('reads nothing of a body sent without the token: 401 before it is sent, and the connection closed', async () => {
    for (const declared of [true, false]) {
      const result = await streamPost('/rpc/echo', 100 * MiB, declared, `Bearer ${newControlToken()}`);
      expect(result.status, declared ? 'Content-Length' : 'chunked').toBe(401);
      expect(result.closedByServer).toBe(true);
      expect(result.sentWhenAnswered).toBeLessThan(10 * MiB);
      expect(result.sent).toBeLessThan(20 * MiB);
    }
  });

  it('refuses a token shorter than 32 characters', async () => {
    await expect(startControlServer({ host: '127.0.0.1', port: 0, token: 'short', events, health: () => ({ name: 't', role: 'dns', pid: 1, services: {} }), rpc: () => ({}) })).rejects.toThrow(/too short/);
  });
});

describe('control channel: the body limit', () => {
  it(`is ${CONTROL_MAX_BODY_BYTES} bytes (1 MiB): a body of that size is read, one byte more is 413`, async () => {
    expect(CONTROL_MAX_BODY_BYTES).toBe(MiB);
    const fits = JSON.stringify({ text: 'a'.repeat(MiB - 20) }).padEnd(MiB, ' ');
    expect((await post('/rpc/echo', fits)).status).toBe(200);
    const reply = await post('/rpc/echo', fits + ' ');
    expect(reply.status).toBe(413);
    expect(reply.json.error).toBe(`echo: the body is larger than ${MiB} bytes`);
  });

  it('answers 413 to a declared 100 MB body before it is sent, and closes', async () => {
    const result = await streamPost('/rpc/echo', 100 * MiB, true);
    console.log(`[control.test] Content-Length 100 MiB: 413 after ${(result.sentWhenAnswered / MiB).toFixed(1)} MiB sent, ${(result.sent / MiB).toFixed(1)} MiB in all; RSS +${(result.peakRssGrowth / MiB).toFixed(1)} MiB`);
    expect(result.status).toBe(413);
    expect(result.closedByServer).toBe(true);
    expect(result.sentWhenAnswered).toBeLessThan(10 * MiB);
    expect(result.peakRssGrowth).toBeLessThan(30 * MiB);
  });

  it('answers 413 to a streamed (chunked) 100 MB body once 1 MiB has passed, keeps none of it, and closes', async () => {
    const result = await streamPost('/rpc/echo', 100 * MiB, false);
    console.log(`[control.test] chunked 100 MiB: 413 after ${(result.sentWhenAnswered / MiB).toFixed(1)} MiB sent, ${(result.sent / MiB).toFixed(1)} MiB in all; RSS +${(result.peakRssGrowth / MiB).toFixed(1)} MiB`);
    expect(result.status).toBe(413);
    expect(result.closedByServer).toBe(true);
    expect(result.sentWhenAnswered).toBeLessThan(10 * MiB);
    expect(result.sent).toBeLessThan(20 * MiB);
    expect(result.peakRssGrowth).toBeLessThan(30 * MiB);
    // The server still serves.
    expect(await client.call('echo', { text: 'still here' })).toEqual({ text: 'still here' });
  });
});
