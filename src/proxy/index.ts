// The `proxy` role (issue 15): a TCP proxy the lab puts on the path from one host to another, with Toxiproxy's toxics
// (toxics.ts). Every listener forwards to one upstream service of the `to` host; each connection has two streams,
// `upstream` (client → server) and `downstream` (server → client), and each stream passes its data through the
// toxics of its stream that apply to the connection (each toxic's `toxicity` is drawn once per connection from the
// lab's seed). A change of toxics applies to the open connections at once, as in Toxiproxy.
//
// TLS passes through untouched: the proxy sees bytes, so a client verifying its server's certificate by name still
// verifies the real server's. With `keepClientAddress` (the local runtime) the upstream connection is made from the
// client's own address, so the server sees its real client.
import net from 'node:net';
import type { Endpoint, ProxyNodeConfig } from '../shared/config.js';
import type { EventLog } from '../shared/events.js';
import type { FaultFired, ToxicView } from '../shared/faults.js';
import type { NodeContext, RunningRole } from '../shared/node.js';
import { seededRandom } from '../shared/seeded-random.js';
import { toxicViews, type LinkCloseDetail, type ProxyContract, type ProxyEvents } from './api.js';
import { startToxic, type Chunk, type ToxicStage } from './toxics.js';

/** Past this many bytes waiting in one stream the proxy stops reading its source (memory stays bounded). */
const HIGH_WATER = 1 << 20;
const LOW_WATER = 1 << 18;
/** After a toxic closed a connection (timeout, limit_data), how long its sockets may take to flush before they go. */
const CLOSE_GRACE_MS = 2000;

export interface LinkProxyOptions {
  /** The two ends, as events name the hop. */
  link: ProxyNodeConfig['link'];
  /** The proxy's own address (listeners, and the upstream source unless `keepClientAddress`). */
  address: string;
  listeners: { service: string; port: number; upstream: Endpoint }[];
  keepClientAddress?: boolean;
  seed: number;
  toxics?: ToxicView[];
  events: EventLog<ProxyEvents>;
  log?: (message: string) => void;
}

/** The link proxy: listeners, open connections and the current toxics. */
export class LinkProxy {
  private toxics: ToxicView[];
  private readonly servers: net.Server[] = [];
  private readonly connections = new Set<Connection>();
  private readonly draws = new Map<string, () => number>();
  private readonly values = new Map<string, () => number>();
  private nextId = 1;
  readonly services: Record<string, Endpoint> = {};

  constructor(private readonly options: LinkProxyOptions) {
    this.toxics = options.toxics ?? [];
  }

  async listen(): Promise<void> {
    for (const listener of this.options.listeners) {
      const server = net.createServer({ allowHalfOpen: true, pauseOnConnect: true }, (socket) => this.accept(socket, listener.service, listener.upstream));
      await new Promise<void>((resolve, reject) => {
        server.once('error', reject);
        server.listen(listener.port, this.options.address, () => (server.off('error', reject), resolve()));
      });
      this.servers.push(server);
      const address = server.address() as net.AddressInfo;
      this.services[listener.service] = { host: this.options.address, port: address.port };
    }
  }

  /** Bytes read from clients and servers that wait in the proxy (each stream stops reading past HIGH_WATER). */
  buffered(): number {
    return [...this.connections].reduce((n, c) => n + c.buffered(), 0);
  }

  current(): ToxicView[] {
    return this.toxics.map((t) => structuredClone(t));
  }

  /** Replaces the link's toxics; open connections take the change at once (unchanged toxics keep their state). */
  setToxics(toxics: ToxicView[]): void {
    this.toxics = toxics;
    for (const connection of this.connections) connection.applyToxics(toxics);
  }

  async close(): Promise<void> {
    for (const connection of this.connections) connection.destroy();
    await Promise.all(this.servers.map((s) => new Promise<void>((resolve) => s.close(() => resolve()))));
  }

  /** Whether a connection gets a toxic: one draw per connection and toxic from `link:<from>-><to>:<name>`. */
  draw(name: string): number {
    return this.stream(this.draws, `link:${this.options.link.from}->${this.options.link.to}:${name}`)();
  }
  /** The toxic's own values (jitter, slice sizes), a stream apart so they do not shift the toxicity draws. */
  valueOf(name: string): number {
    return this.stream(this.values, `link:${this.options.link.from}->${this.options.link.to}:${name}:values`)();
  }
  private stream(streams: Map<string, () => number>, name: string): () => number {
    let s = streams.get(name);
    if (!s) streams.set(name, (s = seededRandom(this.options.seed, name)));
    return s;
  }

  emitFault(detail: FaultFired): void {
    this.options.events.emit({ kind: 'fault', detail });
  }

  private accept(client: net.Socket, service: string, upstream: Endpoint): void {
    const connection = new Connection(this, this.nextId++, service, client, upstream, this.options);
    this.connections.add(connection);
    connection.onDone = () => this.connections.delete(connection);
    connection.open(this.toxics);
  }
}

type Stream = 'upstream' | 'downstream';

/** One client's connection through the proxy, both streams. */
class Connection {
  gone = false;
  onDone?: () => void;
  private how?: LinkCloseDetail['how'];
  private error?: string;
  private readonly opened = performance.now();
  private readonly toxicStates = new Map<string, { key: string; stage: ToxicStage | null }>();
  private readonly fired = new Set<string>();
  private readonly bytes = { upstream: 0, downstream: 0 };
  private server?: net.Socket;
  private closedSockets = 0;
  private readonly clientName: string;
  private finished = false;
  private readonly directions: Direction[] = [];
  private upstreamConnected = false;

  constructor(
    private readonly proxy: LinkProxy,
    readonly id: number,
    private readonly service: string,
    private readonly client: net.Socket,
    private readonly upstream: Endpoint,
    private readonly options: LinkProxyOptions,
  ) {
    this.clientName = `${client.remoteAddress}:${client.remotePort}`;
  }

  /** The hop as the client's own events name it: `to`'s host name at the address and port it connected to (ours). */
  private get hop(): string {
    const { fromHostname, toHostname } = this.options.link;
    return `${fromHostname} -> ${toHostname}[${this.client.localAddress ?? this.options.address}]:${this.client.localPort ?? this.upstream.port}`;
  }

  open(toxics: ToxicView[]): void {
    const client = this.client;
    client.setNoDelay(true);
    const source = this.options.keepClientAddress && client.remoteAddress ? client.remoteAddress : this.options.address;
    const server = net.connect({ host: this.upstream.host, port: this.upstream.port, localAddress: source, allowHalfOpen: true });
    this.server = server;
    server.setNoDelay(true);
    for (const socket of [client, server]) {
      socket.on('error', (err: NodeJS.ErrnoException) => this.failed(socket, err));
      socket.on('close', () => this.socketClosed());
    }
    server.once('connect', () => {
      this.upstreamConnected = true;
      if (this.gone) return;
      this.applyToxics(toxics);
      this.options.events.emit({
        kind: 'link-open',
        detail: {
          connection: this.id,
          service: this.service,
          client: this.clientName,
          upstream: `${this.upstream.host}:${this.upstream.port}`,
          source: server.localAddress ?? source,
          toxics: [...this.toxicStates.entries()].filter(([, s]) => s.stage).map(([name]) => name),
        },
      });
      this.directions.push(new Direction(this, 'upstream', client, server), new Direction(this, 'downstream', server, client));
      client.resume();
    });
  }

  buffered(): number {
    return this.directions.reduce((n, d) => n + d.buffered, 0);
  }

  /** The stages of one stream, in the order of the link's toxic list. */
  stages(stream: Stream): ToxicStage[] {
    return [...this.toxicStates.values()].flatMap((s) => (s.stage && s.stage.view.stream === stream ? [s.stage] : []));
  }

  applyToxics(toxics: ToxicView[]): void {
    if (this.gone) return;
    const next = new Map<string, { key: string; stage: ToxicStage | null }>();
    for (const view of toxics) {
      const key = JSON.stringify(view);
      const had = this.toxicStates.get(view.name);
      if (had && had.key === key) {
        next.set(view.name, had);
        continue;
      }
      had?.stage?.stop();
      // One draw per connection and toxic, whatever the toxicity, so a run's draws depend only on the order of events.
      const enabled = this.proxy.draw(view.name) < view.toxicity;
      next.set(view.name, { key, stage: null });
      if (enabled) next.get(view.name)!.stage = startToxic(view, this.context(view));
    }
    for (const [name, state] of this.toxicStates) if (!next.has(name)) state.stage?.stop();
    this.toxicStates.clear();
    for (const [name, state] of next) this.toxicStates.set(name, state);
  }

  private context(view: ToxicView) {
    const connection = this;
    return {
      fired: (effect: string) => {
        if (connection.fired.has(view.name)) return;
        connection.fired.add(view.name);
        connection.proxy.emitFault({ source: 'link', rule: view.name, action: view.type, stage: view.stream, effect, client: connection.clientName, hop: connection.hop });
      },
      close: (how: 'timeout' | 'limit') => connection.closeBoth(how),
      reset: () => connection.reset(),
      random: () => connection.proxy.valueOf(view.name),
      get gone() {
        return connection.gone;
      },
    };
  }

  count(stream: Stream, n: number): void {
    this.bytes[stream] += n;
  }

  closeBoth(how: 'timeout' | 'limit'): void {
    if (this.gone) return;
    this.gone = true;
    this.how = how;
    for (const socket of [this.client, this.server!]) {
      socket.end();
      setTimeout(() => socket.destroy(), CLOSE_GRACE_MS).unref();
    }
  }

  reset(): void {
    if (this.gone) return;
    this.gone = true;
    this.how = 'reset';
    for (const socket of [this.client, this.server!]) if (!socket.destroyed) socket.resetAndDestroy();
  }

  destroy(): void {
    this.gone = true;
    this.client.destroy();
    this.server?.destroy();
  }

  private failed(socket: net.Socket, err: NodeJS.ErrnoException): void {
    const side = socket === this.client ? 'client' : 'upstream';
    if (!this.how) {
      this.how = 'error';
      this.error = `${side}: ${err.code ?? err.message}`;
    }
    const other = socket === this.client ? this.server : this.client;
    this.gone = true;
    // A reset from one side is passed on as a reset, and so is an upstream that cannot be reached (refused, no route):
    // the client, whose connection the proxy had accepted, sees the closest thing to what a direct connection showed.
    const reset = err.code === 'ECONNRESET' || (side === 'upstream' && !this.upstreamConnected);
    if (other && !other.destroyed) reset && other.readyState === 'open' ? other.resetAndDestroy() : other.destroy();
  }

  /** A socket closed; once both have, the connection is done. A toxic's close or an error takes the other along. */
  private socketClosed(): void {
    if (++this.closedSockets < 2) {
      if (this.gone) for (const socket of [this.client, this.server]) socket?.destroy();
      return;
    }
    this.finish();
  }

  private finish(): void {
    if (this.finished) return;
    this.finished = true;
    this.gone = true;
    for (const state of this.toxicStates.values()) state.stage?.stop();
    this.options.events.emit({
      kind: 'link-close',
      detail: {
        connection: this.id,
        service: this.service,
        client: this.clientName,
        bytesUp: this.bytes.upstream,
        bytesDown: this.bytes.downstream,
        durationMs: Math.round(performance.now() - this.opened),
        how: this.how ?? 'closed',
        ...(this.error ? { error: this.error } : {}),
      },
    });
    this.onDone?.();
  }
}

/** One stream of a connection: reads its source, passes each chunk through its toxics, writes to its sink. */
class Direction {
  private readonly queue: Chunk[] = [];
  private queued = 0;
  private running = false;
  get buffered(): number {
    return this.queued;
  }
  private ended = false;
  private done = false;

  constructor(
    private readonly connection: Connection,
    private readonly stream: Stream,
    private readonly source: net.Socket,
    private readonly sink: net.Socket,
  ) {
    source.on('data', (data: Buffer) => {
      this.queue.push({ data, arrived: performance.now() });
      this.queued += data.length;
      if (this.queued > HIGH_WATER) source.pause();
      void this.pump();
    });
    source.on('end', () => {
      this.ended = true;
      void this.pump();
    });
  }

  private async pump(): Promise<void> {
    if (this.running) return;
    this.running = true;
    try {
      while (this.queue.length && !this.connection.gone) {
        const chunk = this.queue.shift()!;
        await this.through(this.connection.stages(this.stream), 0, chunk);
        this.queued -= chunk.data.length;
        if (this.queued < LOW_WATER && this.source.isPaused() && !this.connection.gone) this.source.resume();
      }
      if (this.ended && !this.queue.length && !this.done && !this.connection.gone) {
        this.done = true;
        for (const stage of this.connection.stages(this.stream)) await stage.end?.();
        if (!this.sink.destroyed) this.sink.end();
      }
    } catch (err) {
      this.connection.destroy();
      throw err;
    } finally {
      this.running = false;
    }
    if ((this.queue.length || (this.ended && !this.done)) && !this.connection.gone) void this.pump();
  }

  private async through(stages: ToxicStage[], i: number, chunk: Chunk): Promise<void> {
    if (this.connection.gone) return;
    if (i < stages.length) return stages[i]!.data(chunk, (c) => this.through(stages, i + 1, c));
    if (this.sink.destroyed || this.sink.writableEnded) return;
    this.connection.count(this.stream, chunk.data.length);
    if (!this.sink.write(chunk.data)) {
      await new Promise<void>((resolve) => {
        const done = () => (this.sink.off('drain', done), this.sink.off('close', done), resolve());
        this.sink.on('drain', done);
        this.sink.on('close', done);
      });
    }
  }
}

/** The role: a LinkProxy on the node's address, one listener per service of the `to` host. */
export async function startProxy({ config, events, log }: NodeContext<ProxyNodeConfig, ProxyEvents>): Promise<RunningRole<ProxyContract>> {
  const proxy = new LinkProxy({
    link: config.link,
    address: config.address,
    listeners: Object.entries(config.ports).map(([service, port]) => {
      const upstream = config.upstreams[service];
      if (!upstream) throw new Error(`proxy ${config.name}: listener ${service} has no upstream`);
      return { service, port, upstream };
    }),
    keepClientAddress: config.keepClientAddress === true,
    seed: config.seed ?? 0,
    toxics: toxicViews(config.toxics ?? []),
    events,
    log,
  });
  await proxy.listen();
  log(`link ${config.link.from} -> ${config.link.to}: ${Object.entries(proxy.services).map(([s, e]) => `${s} ${e.host}:${e.port} -> ${config.upstreams[s]!.host}:${config.upstreams[s]!.port}`).join(', ')}`);
  return {
    services: proxy.services,
    rpc: {
      'set-toxics': ({ toxics }) => {
        const views = toxicViews(toxics ?? []);
        proxy.setToxics(views);
        return { toxics: proxy.current() };
      },
      toxics: () => ({ toxics: proxy.current() }),
    },
    stop: () => proxy.close(),
  };
}
