// The control channel every node offers, the same in every runtime: HTTP on the node's address.
//   GET  /health            -> { name, role, pid, services }
//   GET  /events?since=N    -> NDJSON stream of events after seq N, kept open for new ones
//   POST /rpc/<operation>   -> { result } of one of the role's contract operations; 404 with the list of operations
//                              for a name the contract does not have; 400 for a body that is not a JSON object;
//                              500 with { error } when the operation fails
// Every request needs `Authorization: Bearer <token>`, the lab's control token (compared in constant time):
// without it, 401 with `WWW-Authenticate: Bearer` and the connection is closed, the body never read. A body
// is at most `maxBodyBytes` (CONTROL_MAX_BODY_BYTES, 1 MiB): past it (by Content-Length, or by the bytes
// streamed), 413, nothing more is read or kept, and the connection is closed.
// Both ends are typed by the role's contract (src/<role>/api.ts).
import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import http from 'node:http';
import type { Endpoint, Role } from './config.js';
import type { ArgsOf, OperationName, ResultOf, RoleContract, RpcTable } from './contract.js';
import { now, type EventLog, type LabEvent } from './events.js';

/** The largest request body the control channel reads (1 MiB); the largest operation arguments are far smaller. */
export const CONTROL_MAX_BODY_BYTES = 1024 * 1024;

/** A new control token: 32 random bytes, base64url (43 characters). The harness makes one per lab. */
export function newControlToken(): string {
  return randomBytes(32).toString('base64url');
}

export interface NodeHealth {
  name: string;
  role: Role;
  pid: number;
  services: Record<string, Endpoint>;
}

export async function startControlServer(options: {
  host: string;
  port: number;
  events: EventLog;
  health: () => NodeHealth;
  rpc: () => RpcTable<RoleContract>;
  /** The bearer token every request must carry. */
  token: string;
  /** The largest body read (CONTROL_MAX_BODY_BYTES). */
  maxBodyBytes?: number;
}): Promise<http.Server> {
  if (options.token.length < 32) throw new Error('the control token is too short (at least 32 characters)');
  const expected = digest(options.token);
  const maxBodyBytes = options.maxBodyBytes ?? CONTROL_MAX_BODY_BYTES;
  const server = http.createServer(async (req, res) => {
    const url = new URL(req.url ?? '/', 'http://control');
    try {
      if (!timingSafeEqual(digest(bearer(req.headers.authorization)), expected)) {
        return refuse(req, res, 401, { 'www-authenticate': 'Bearer realm="maillab control"' }, 'missing or wrong control token (Authorization: Bearer <token>)');
      }
      if (req.method === 'GET' && url.pathname === '/health') {
        return sendJson(res, 200, options.health());
      }
      if (req.method === 'GET' && url.pathname === '/events') {
        const since = Number(url.searchParams.get('since') ?? 0);
        res.writeHead(200, { 'content-type': 'application/x-ndjson' });
        res.flushHeaders();
        // The events of one turn of the event loop go out as one chunk, not one write (a writev of the chunk's framing
        // and data) each: writes of events were a quarter of the DNS node's CPU and a tenth of the MX's under load
        // (bench profiles). A node that emits one event per turn (the DNS, one per query) still writes once per event.
        let pending: string[] = [];
        const flush = () => {
          const chunk = pending.join('');
          pending = [];
          if (!res.destroyed && !res.writableEnded) res.write(chunk);
        };
        const write = (e: LabEvent) => {
          if (pending.push(JSON.stringify(e) + '\n') === 1) setImmediate(flush);
        };
        for (const e of options.events.since(since)) write(e);
        const unsubscribe = options.events.subscribe(write);
        res.on('close', unsubscribe);
        return;
      }
      const rpc = /^\/rpc\/([\w-]+)$/.exec(url.pathname);
      if (req.method === 'POST' && rpc) {
        const table = options.rpc();
        const operation = rpc[1]!;
        // Only the contract's own names: never an inherited property such as `constructor` or `toString`.
        if (!Object.hasOwn(table, operation)) {
          const known = Object.keys(table);
          return sendJson(res, 404, { error: `unknown operation ${operation}; this node has ${known.length ? known.join(', ') : 'no operations'}`, operations: known });
        }
        const body = await readBody(req, maxBodyBytes);
        if (body === undefined) return refuse(req, res, 413, {}, `${operation}: the body is larger than ${maxBodyBytes} bytes`);
        let args: unknown = {};
        try {
          if (body.length) args = JSON.parse(body);
        } catch {
          return sendJson(res, 400, { error: `${operation}: the body is not JSON` });
        }
        if (typeof args !== 'object' || args === null || Array.isArray(args)) return sendJson(res, 400, { error: `${operation}: the arguments must be a JSON object` });
        const result = await table[operation]!(args);
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

/** The token of an `Authorization: Bearer <token>` header ('' without one). */
function bearer(header: string | undefined): string {
  const match = /^Bearer +(\S+) *$/i.exec(header ?? '');
  return match ? match[1]! : '';
}

/** Fixed-length digests, so timingSafeEqual compares in constant time whatever the length of what was sent. */
function digest(token: string): Buffer {
  return createHash('sha256').update(token, 'utf8').digest();
}

/**
 * How long a refused connection stays open, unread, once the answer is out: closing a socket with unread data
 * resets it at once, and a reset can destroy the answer before the client read it.
 */
const REFUSED_LINGER_MS = 1000;

/**
 * Answers with an error and closes the connection without reading the rest of the request body: reading stops
 * at once (what the kernel already holds is all that is buffered), the answer goes out with `Connection: close`,
 * then a FIN, and the socket is destroyed after REFUSED_LINGER_MS. The answer is written on the socket itself:
 * through the ServerResponse, Node would destroy the socket the moment it is written, unread data and all.
 */
function refuse(req: http.IncomingMessage, res: http.ServerResponse, status: number, headers: Record<string, string>, error: string) {
  const socket = req.socket;
  // The body counts as being consumed (so the server does not read and discard the rest itself), and the socket
  // reads nothing more.
  req.read(0);
  req.pause();
  socket.pause();
  const text = JSON.stringify({ error });
  const head = [
    `HTTP/1.1 ${status} ${http.STATUS_CODES[status] ?? ''}`,
    ...Object.entries({ ...headers, 'content-type': 'application/json', 'content-length': String(Buffer.byteLength(text)), connection: 'close' }).map(([k, v]) => `${k}: ${v}`),
  ];
  socket.end(head.join('\r\n') + '\r\n\r\n' + text);
  const timer = setTimeout(() => socket.destroy(), REFUSED_LINGER_MS);
  timer.unref();
  socket.once('close', () => clearTimeout(timer));
}

/** The body as text, or undefined (and reading stopped) as soon as it is larger than `limit` bytes. */
function readBody(req: http.IncomingMessage, limit: number): Promise<string | undefined> {
  return new Promise((resolve, reject) => {
    const declared = Number(req.headers['content-length'] ?? 0);
    if (declared > limit) return resolve(undefined);
    const chunks: Buffer[] = [];
    let size = 0;
    const onData = (c: Buffer) => {
      size += c.length;
      if (size > limit) {
        req.off('data', onData);
        req.pause();
        chunks.length = 0;
        return resolve(undefined);
      }
      chunks.push(c);
    };
    req.on('data', onData);
    req.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')));
    req.on('error', reject);
  });
}

/** Operations whose arguments are all optional may be called without any. */
export type CallArgs<K extends RoleContract, Op extends OperationName<K>> = Partial<ArgsOf<K, Op>> extends ArgsOf<K, Op> ? [args?: ArgsOf<K, Op>] : [args: ArgsOf<K, Op>];

/** The harness side of a node's control channel, typed by the node's role contract. */
/** One completed call, as a client's `onCall` observer sees it. */
export interface CompletedCall {
  operation: string;
  args: object;
  result: unknown;
  /** When the call was made (ms since the epoch). */
  began: number;
}

export class ControlClient<K extends RoleContract = RoleContract> {
  private readonly agent = new http.Agent({ keepAlive: true });
  private readonly authorization: string;
  constructor(
    readonly endpoint: Endpoint,
    readonly nodeName: string,
    /** The lab's control token, sent as `Authorization: Bearer <token>` with every request. */
    token: string,
    /** Told of every call that succeeded (the harness records the ones that change a node). */
    private readonly onCall?: (call: CompletedCall) => void,
  ) {
    this.authorization = `Bearer ${token}`;
  }

  async health(): Promise<NodeHealth> {
    return (await this.request('GET', '/health')) as NodeHealth;
  }

  async call<Op extends OperationName<K>>(operation: Op, ...args: CallArgs<K, Op>): Promise<ResultOf<K, Op>> {
    const began = now();
    const payload: object = args[0] ?? {};
    const body = (await this.request('POST', `/rpc/${operation}`, payload)) as { result: ResultOf<K, Op> };
    this.onCall?.({ operation, args: payload, result: body.result, began });
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
          headers: { authorization: this.authorization, ...(payload ? { 'content-type': 'application/json', 'content-length': Buffer.byteLength(payload) } : {}) },
        },
        (res) => {
          const chunks: Buffer[] = [];
          res.on('data', (c: Buffer) => chunks.push(c));
          res.on('end', () => {
            const text = Buffer.concat(chunks).toString('utf8');
            let parsed: { error?: string };
            try {
              parsed = JSON.parse(text) as { error?: string };
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
    const req = http.get({ host: this.endpoint.host, port: this.endpoint.port, path: `/events?since=${since}`, headers: { authorization: this.authorization } }, (res) => {
      if (res.statusCode !== 200) {
        process.stderr.write(`maillab: ${this.nodeName} control GET /events: ${res.statusCode} ${res.statusMessage ?? ''}\n`);
        res.resume();
        return end();
      }
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
