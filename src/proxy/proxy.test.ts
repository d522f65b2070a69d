// The link proxy against servers in this process, on loopback: each toxic measured from outside (what a client or
// server sees), within bounds, every test bounded in time.
import net from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { EventLog } from '../shared/events.js';
import type { Toxic } from '../shared/faults.js';
import type { ProxyEvents } from './api.js';
import { LinkProxy } from './index.js';
import { toxicViews } from './api.js';

const cleanups: (() => Promise<void> | void)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

/** A server on 127.0.0.1: `echo` sends back what it gets; it records the sizes of the chunks it read and its clients. */
async function server(handler: 'echo' | ((socket: net.Socket) => void) = 'echo') {
  const chunks: { size: number; at: number }[] = [];
  const clients: string[] = [];
  const sockets = new Set<net.Socket>();
  const srv = net.createServer((socket) => {
    sockets.add(socket);
    clients.push(socket.remoteAddress!);
    socket.setNoDelay(true);
    socket.on('error', () => undefined);
    if (handler === 'echo') {
      socket.on('data', (d) => {
        chunks.push({ size: d.length, at: performance.now() });
        socket.write(d);
      });
      socket.on('end', () => socket.end());
    } else handler(socket);
  });
  await new Promise<void>((resolve) => srv.listen(0, '127.0.0.1', resolve));
  cleanups.push(() => new Promise<void>((resolve) => (srv.close(() => resolve()), sockets.forEach((s) => s.destroy()))));
  return { port: (srv.address() as net.AddressInfo).port, chunks, clients };
}

async function proxyTo(port: number, toxics: Toxic[] = [], options: { seed?: number; keepClientAddress?: boolean; address?: string } = {}) {
  const events = new EventLog<ProxyEvents>('link-a-b');
  const proxy = new LinkProxy({
    link: { from: 'a', to: 'b', fromHostname: 'a.test', toHostname: 'b.test' },
    address: options.address ?? '127.0.0.1',
    listeners: [{ service: 'echo', port: 0, upstream: { host: '127.0.0.1', port } }],
    seed: options.seed ?? 1,
    toxics: toxicViews(toxics),
    events,
    ...(options.keepClientAddress !== undefined ? { keepClientAddress: options.keepClientAddress } : {}),
  });
  await proxy.listen();
  cleanups.push(() => proxy.close());
  return { proxy, events, endpoint: proxy.services.echo! };
}

/** A client of the proxy: what it received, when it ended or failed. */
async function connect(endpoint: { host: string; port: number }, localAddress?: string) {
  const socket = net.connect({ ...endpoint, ...(localAddress ? { localAddress } : {}) });
  socket.setNoDelay(true);
  const state = { received: Buffer.alloc(0), ended: undefined as number | undefined, error: undefined as NodeJS.ErrnoException | undefined, closed: false };
  socket.on('data', (d) => (state.received = Buffer.concat([state.received, d])));
  socket.on('end', () => (state.ended = performance.now()));
  socket.on('error', (err) => (state.error = err));
  socket.on('close', () => (state.closed = true));
  await new Promise<void>((resolve, reject) => (socket.once('connect', resolve), socket.once('error', reject)));
  cleanups.push(() => void socket.destroy());
  return { socket, state };
}

/** Polls `check` until true, failing after `timeoutMs` (the proxy's effects are timed, not evented, at the client). */
async function until(check: () => boolean, timeoutMs: number, what: string): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`not within ${timeoutMs} ms: ${what}`);
    await new Promise((r) => setTimeout(r, 2));
  }
}

describe('link proxy', () => {
  it('without toxics passes bytes both ways and records the connection', async () => {
    const echo = await server();
    const { events, endpoint } = await proxyTo(echo.port);
    const { socket, state } = await connect(endpoint);
    socket.write('hello through the proxy');
    await until(() => state.received.toString() === 'hello through the proxy', 2000, 'the echo');
    socket.end();
    await until(() => state.closed, 2000, 'the close');
    await until(() => events.since(0).some((e) => e.kind === 'link-close'), 2000, 'link-close');
    const open = events.since(0).find((e) => e.kind === 'link-open')!.detail as unknown as ProxyEvents['link-open'];
    expect(open).toMatchObject({ connection: 1, service: 'echo', upstream: `127.0.0.1:${echo.port}`, toxics: [] });
    expect(events.since(0).find((e) => e.kind === 'link-close')!.detail).toMatchObject({ bytesUp: 23, bytesDown: 23, how: 'closed' });
  });

  it('latency delays every chunk by latency ± jitter (not one after another)', async () => {
    const echo = await server();
    const { endpoint, events } = await proxyTo(echo.port, [{ type: 'latency', attributes: { latency: 150, jitter: 20 } }]);
    const { socket, state } = await connect(endpoint);
    const rtts: number[] = [];
    for (let i = 1; i <= 5; i++) {
      const sent = performance.now();
      socket.write(`ping ${i}`);
      await until(() => state.received.toString().endsWith(`ping ${i}`), 2000, 'the echo');
      rtts.push(performance.now() - sent);
    }
    for (const rtt of rtts) expect(rtt).toBeGreaterThanOrEqual(130);
    // The upper bound leaves room for a busy machine (two cores running scenarios alongside).
    for (const rtt of rtts) expect(rtt).toBeLessThan(170 + 150);
    // Ten chunks sent at once leave together, about one latency later, not ten latencies (1.5 s).
    const before = state.received.length;
    const sent = performance.now();
    for (let i = 0; i < 10; i++) socket.write('x'.repeat(10)), await new Promise((r) => setImmediate(r));
    await until(() => state.received.length === before + 100, 3000, 'ten chunks');
    expect(performance.now() - sent).toBeLessThan(3 * 150);
    const faults = events.since(0).filter((e) => e.kind === 'fault');
    expect(faults).toHaveLength(1); // once per connection and toxic
    expect(faults[0]!.detail).toMatchObject({ source: 'link', rule: 'latency_downstream', action: 'latency', stage: 'downstream', hop: `a.test -> b.test[127.0.0.1]:${endpoint.port}` }); // the address the client connected to, as its own events say
  });

  it('bandwidth limits a stream to rate KB/s (within 30 %)', async () => {
    const echo = await server();
    const { endpoint } = await proxyTo(echo.port, [{ type: 'bandwidth', stream: 'upstream', attributes: { rate: 400 } }]);
    const { socket } = await connect(endpoint);
    const size = 400_000; // 1 s at 400 KB/s
    const sent = performance.now();
    socket.write(Buffer.alloc(size, 7));
    await until(() => echo.chunks.reduce((n, c) => n + c.size, 0) === size, 5000, 'all bytes at the server');
    const seconds = (echo.chunks.at(-1)!.at - sent) / 1000;
    const rate = size / 1000 / seconds;
    expect(rate).toBeGreaterThan(400 * 0.7);
    expect(rate).toBeLessThan(400 * 1.3);
  });

  it('slicer cuts data into average_size ± size_variation slices, delay µs apart', async () => {
    const echo = await server();
    const { endpoint } = await proxyTo(echo.port, [{ type: 'slicer', stream: 'upstream', attributes: { average_size: 100, size_variation: 20, delay: 3000 } }]);
    const { socket } = await connect(endpoint);
    socket.write(Buffer.alloc(2000, 1));
    await until(() => echo.chunks.reduce((n, c) => n + c.size, 0) === 2000, 5000, 'all slices');
    const sizes = echo.chunks.map((c) => c.size);
    expect(sizes.length).toBeGreaterThanOrEqual(2000 / 120);
    for (const size of sizes.slice(0, -1)) expect(size).toBeGreaterThanOrEqual(80), expect(size).toBeLessThanOrEqual(120);
    expect(sizes.at(-1)).toBeLessThanOrEqual(120);
    expect(new Set(sizes).size).toBeGreaterThan(1); // the variation is used
  });

  it('limit_data closes the connection once `bytes` went through the stream', async () => {
    const echo = await server();
    const { endpoint, events } = await proxyTo(echo.port, [{ type: 'limit_data', attributes: { bytes: 1000 } }]);
    const { socket, state } = await connect(endpoint);
    socket.write(Buffer.alloc(5000, 2));
    await until(() => state.closed, 3000, 'the close');
    expect(state.received.length).toBe(1000);
    expect(state.ended).toBeDefined();
    await until(() => events.since(0).some((e) => e.kind === 'link-close'), 3000, 'link-close');
    expect(events.since(0).find((e) => e.kind === 'link-close')!.detail).toMatchObject({ how: 'limit', bytesDown: 1000 });
  });

  it('reset_peer resets the connection: the client gets ECONNRESET, after `timeout` ms', async () => {
    const echo = await server();
    const { endpoint, events } = await proxyTo(echo.port, [{ type: 'reset_peer', attributes: { timeout: 200 } }]);
    const opened = performance.now();
    const { socket, state } = await connect(endpoint);
    socket.write('before');
    await until(() => state.received.toString() === 'before', 2000, 'data before the reset');
    await until(() => state.error !== undefined, 2000, 'the reset');
    expect(state.error!.code).toBe('ECONNRESET');
    expect(performance.now() - opened).toBeGreaterThanOrEqual(195);
    await until(() => events.since(0).some((e) => e.kind === 'link-close'), 2000, 'link-close');
    expect(events.since(0).find((e) => e.kind === 'link-close')!.detail).toMatchObject({ how: 'reset' });
  });

  it('timeout 0 stops all data until the toxic is removed; timeout > 0 closes the connection', async () => {
    const echo = await server();
    const { proxy, endpoint } = await proxyTo(echo.port, [{ type: 'timeout', attributes: { timeout: 0 } }]);
    const { socket, state } = await connect(endpoint);
    socket.write('lost');
    await new Promise((r) => setTimeout(r, 400));
    expect(state.received.length).toBe(0);
    expect(state.closed).toBe(false);
    proxy.setToxics([]);
    socket.write('found');
    await until(() => state.received.toString() === 'found', 2000, 'data once the toxic is gone');

    proxy.setToxics(toxicViews([{ type: 'timeout', stream: 'upstream', attributes: { timeout: 150 } }]));
    const began = performance.now();
    const second = await connect(endpoint);
    await until(() => second.state.closed, 2000, 'the close of the timeout');
    expect(performance.now() - began).toBeGreaterThanOrEqual(145);
    expect(second.state.error).toBeUndefined();
  });

  it('slow_close passes the close on `delay` ms late', async () => {
    const greeter = await server((socket) => socket.end('bye'));
    const { endpoint } = await proxyTo(greeter.port, [{ type: 'slow_close', attributes: { delay: 250 } }]);
    const began = performance.now();
    const { state } = await connect(endpoint);
    await until(() => state.ended !== undefined, 2000, 'the close');
    expect(state.received.toString()).toBe('bye');
    expect(state.ended! - began).toBeGreaterThanOrEqual(245);
    expect(state.ended! - began).toBeLessThan(250 + 200);
  });

  it('toxicity: drawn per connection from the seed, the same draws for the same seed', async () => {
    const echo = await server();
    const toxics: Toxic[] = [{ type: 'latency', toxicity: 0.5, attributes: { latency: 5 } }];
    const applied = async (seed: number) => {
      const { endpoint, events } = await proxyTo(echo.port, toxics, { seed });
      for (let i = 0; i < 12; i++) {
        const { socket, state } = await connect(endpoint);
        socket.write('x');
        await until(() => state.received.length === 1, 2000, 'the echo');
        socket.destroy();
      }
      return events.since(0).flatMap((e) => (e.kind === 'link-open' ? [(e.detail as unknown as ProxyEvents['link-open']).toxics.length] : []));
    };
    const first = await applied(42);
    expect(first).toEqual(await applied(42));
    expect(first).toContain(0);
    expect(first).toContain(1);
    expect(await applied(43)).not.toEqual(first);
    const never = await proxyTo(echo.port, [{ type: 'reset_peer', toxicity: 0, attributes: {} }]);
    const { socket, state } = await connect(never.endpoint);
    socket.write('alive');
    await until(() => state.received.toString() === 'alive', 2000, 'no reset at toxicity 0');
  });

  it('keeps the client address upstream when asked (loopback owns 127/8), else connects from its own', async () => {
    const echo = await server();
    const kept = await proxyTo(echo.port, [], { keepClientAddress: true, address: '127.0.0.3' });
    const a = await connect(kept.endpoint, '127.0.0.5');
    a.socket.write('a');
    await until(() => a.state.received.length === 1, 2000, 'the echo');
    const plain = await proxyTo(echo.port, [], { address: '127.0.0.3' });
    const b = await connect(plain.endpoint, '127.0.0.5');
    b.socket.write('b');
    await until(() => b.state.received.length === 1, 2000, 'the echo');
    expect(echo.clients).toEqual(['127.0.0.5', '127.0.0.3']);
  });

  it('an upstream that refuses: the client is reset (it had been accepted), and the close says why', async () => {
    // A port nobody listens on any more.
    const probe = net.createServer();
    await new Promise<void>((resolve) => probe.listen(0, '127.0.0.1', resolve));
    const port = (probe.address() as net.AddressInfo).port;
    await new Promise<void>((resolve) => probe.close(() => resolve()));
    const { endpoint, events } = await proxyTo(port);
    const { state } = await connect(endpoint);
    await until(() => state.closed, 2000, 'the close');
    expect(state.error?.code).toBe('ECONNRESET');
    await until(() => events.since(0).some((e) => e.kind === 'link-close'), 2000, 'link-close');
    expect(events.since(0).find((e) => e.kind === 'link-close')!.detail).toMatchObject({ how: 'error', error: 'upstream: ECONNREFUSED' });
    expect(events.since(0).filter((e) => e.kind === 'link-open')).toEqual([]);
  });

  it('keeps its memory bounded: a stream whose server does not read stops reading its client', async () => {
    const sink = await server((socket) => socket.pause());
    const { proxy, endpoint } = await proxyTo(sink.port, [{ type: 'latency', stream: 'upstream', attributes: { latency: 1 } }]);
    const { socket } = await connect(endpoint);
    const size = 256 * 1024 * 1024;
    socket.write(Buffer.alloc(size));
    let most = 0;
    const deadline = Date.now() + 1500;
    while (Date.now() < deadline) {
      most = Math.max(most, proxy.buffered());
      await new Promise((r) => setTimeout(r, 5));
    }
    // The kernel's buffers hold what they hold (tens of MiB on loopback); the proxy holds about 1 MiB per stream.
    expect(most).toBeGreaterThan(0);
    expect(most).toBeLessThanOrEqual((1 << 20) + 256 * 1024);
    expect(socket.writableLength).toBeGreaterThan(size / 2); // the client is held back
  });

  it('refuses toxics Toxiproxy would not take', () => {
    expect(() => toxicViews([{ type: 'latency', attributes: { delay: 5 } }])).toThrow(/latency has no attribute "delay"/);
    expect(() => toxicViews([{ type: 'lag' as never, attributes: {} }])).toThrow(/"lag" is not a toxic/);
    expect(() => toxicViews([{ type: 'latency', attributes: { latency: -1 } }])).toThrow(/≥ 0/);
    expect(() => toxicViews([{ type: 'latency', attributes: {} }, { type: 'latency', attributes: {} }])).toThrow(/two toxics are named "latency_downstream"/);
    expect(toxicViews([{ type: 'slicer', stream: 'upstream', attributes: { average_size: 10 } }])).toEqual([
      { name: 'slicer_upstream', type: 'slicer', stream: 'upstream', toxicity: 1, attributes: { average_size: 10, size_variation: 0, delay: 0 } },
    ]);
  });
});
