// The control channel every node offers, the same in every runtime: HTTP on the node's address.
//   GET  /health            -> { name, role, ready, services }
//   GET  /events?since=N    -> NDJSON stream of events after seq N, kept open for new ones
//   POST /rpc/<method>      -> JSON result of a node-specific operation ({ error } with status 500 on failure)
import http from 'node:http';
import type { Endpoint } from './config.js';
import type { EventLog, LabEvent } from './events.js';

export type RpcHandler = (args: any) => unknown | Promise<unknown>;
export type RpcTable = Record<string, RpcHandler>;

export interface NodeHealth {
  name: string;
  role: string;
  pid: number;
  services: Record<string, Endpoint>;
}

export async function startControlServer(options: {
  host: string;
  port: number;
  events: EventLog;
  health: () => NodeHealth;
  rpc: () => RpcTable;
}): Promise<http.Server> {
  const server = http.createServer(async (req, res) => {
    const url = new URL(req.url ?? '/', 'http://control');
    try {
      if (req.method === 'GET' && url.pathname === '/health') {
        return sendJson(res, 200, options.health());
      }
      if (req.method === 'GET' && url.pathname === '/events') {
        const since = Number(url.searchParams.get('since') ?? 0);
        res.writeHead(200, { 'content-type': 'application/x-ndjson' });
        res.flushHeaders();
        const write = (e: LabEvent) => res.write(JSON.stringify(e) + '\n');
        for (const e of options.events.since(since)) write(e);
        const unsubscribe = options.events.subscribe(write);
        res.on('close', unsubscribe);
        return;
      }
      const rpc = /^\/rpc\/([\w-]+)$/.exec(url.pathname);
      if (req.method === 'POST' && rpc) {
        const handler = options.rpc()[rpc[1]!];
        if (!handler) return sendJson(res, 404, { error: `unknown operation ${rpc[1]}` });
        const body = await readBody(req);
        const result = await handler(body.length ? JSON.parse(body) : {});
        return sendJson(res, 200, { result: result ?? null });
      }
      sendJson(res, 404, { error: `no such endpoint ${req.method} ${url.pathname}` });
    } catch (err) {
      sendJson(res, 500, { error: err instanceof Error ? err.message : String(err) });
    }
  });
  server.keepAliveTimeout = 60_000;
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(options.port, options.host, () => resolve());
  });
  return server;
}

function sendJson(res: http.ServerResponse, status: number, body: unknown) {
  const text = JSON.stringify(body);
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) });
  res.end(text);
}

function readBody(req: http.IncomingMessage): Promise<string> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')));
    req.on('error', reject);
  });
}

/** The harness side of a node's control channel. */
export class ControlClient {
  private readonly agent = new http.Agent({ keepAlive: true });
  constructor(readonly endpoint: Endpoint, readonly nodeName: string) {}

  async health(): Promise<NodeHealth> {
    return (await this.request('GET', '/health')) as NodeHealth;
  }

  async call<T = unknown>(method: string, args: unknown = {}): Promise<T> {
    const body = (await this.request('POST', `/rpc/${method}`, args)) as { result: T };
    return body.result;
  }

  private request(method: string, path: string, body?: unknown): Promise<unknown> {
    const payload = body === undefined ? undefined : JSON.stringify(body);
    return new Promise((resolve, reject) => {
      const req = http.request(
        {
          host: this.endpoint.host,
          port: this.endpoint.port,
          method,
          path,
          agent: this.agent,
          headers: payload ? { 'content-type': 'application/json', 'content-length': Buffer.byteLength(payload) } : {},
        },
        (res) => {
          const chunks: Buffer[] = [];
          res.on('data', (c: Buffer) => chunks.push(c));
          res.on('end', () => {
            const text = Buffer.concat(chunks).toString('utf8');
            let parsed: any;
            try {
              parsed = JSON.parse(text);
            } catch {
              return reject(new Error(`${this.nodeName} control ${method} ${path}: unparsable reply ${text.slice(0, 200)}`));
            }
            if (res.statusCode !== 200) return reject(new Error(`${this.nodeName} control ${method} ${path}: ${parsed.error ?? res.statusCode}`));
            resolve(parsed);
          });
        },
      );
      req.on('error', (err) => reject(new Error(`${this.nodeName} control ${method} ${path}: ${err.message}`)));
      req.end(payload);
    });
  }

  /** Streams the node's events from `since` on; `onEnd` is called when the stream closes (node stopped). */
  streamEvents(since: number, onEvent: (e: LabEvent) => void, onEnd: () => void): () => void {
    let buffer = '';
    let ended = false;
    const end = () => {
      if (!ended) {
        ended = true;
        onEnd();
      }
    };
    const req = http.get({ host: this.endpoint.host, port: this.endpoint.port, path: `/events?since=${since}` }, (res) => {
      res.setEncoding('utf8');
      res.on('data', (chunk: string) => {
        buffer += chunk;
        let nl: number;
        while ((nl = buffer.indexOf('\n')) >= 0) {
          const line = buffer.slice(0, nl);
          buffer = buffer.slice(nl + 1);
          if (line) onEvent(JSON.parse(line) as LabEvent);
        }
      });
      res.on('end', end);
      res.on('close', end);
      res.on('error', end);
    });
    req.on('error', end);
    return () => {
      ended = true;
      req.destroy();
    };
  }

  close() {
    this.agent.destroy();
  }
}
