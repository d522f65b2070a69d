// The account service of the mailbox node (issue 13): a JSON API over HTTPS (the node's `tls`; plain HTTP only on a
// node without it) on `config.address:config.accounts.port`.
//
//   POST   /api/v1/login                { address, password, totp }  → 200 { session, expiresAt } | 401
//   GET    /api/v1/app-passwords        (Bearer session)             → 200 [{ name, created, lastUsed? }]
//   POST   /api/v1/app-passwords        { name } (Bearer session)    → 201 { name, password } (shown once) | 409
//   DELETE /api/v1/app-passwords/{name} (Bearer session)             → 204 (its IMAP/POP3 sessions closed) | 404
//   GET    /api/v1/logins               (Bearer session)             → 200 [{ name, logins: [{ protocol, client, time }] }]
//   POST   /api/v1/auth                 { user, password, protocol: 'smtp', client } (Bearer control token)
//                                        → 200 { ok: true, user, appPassword? } | 200 { ok: false, reason }
//
// The last one is what the lab's MTAs ask for SMTP AUTH (as Postfix asks Dovecot's SASL), so an app password revoked
// here stops working there at once. It takes the lab's control token, not a user session: only the lab's nodes hold it.
//
// Sessions are random bearer tokens (32 bytes) good for 10 minutes, kept in memory only: a restart logs users out,
// which loses nothing but a login. Logins here count against the node's login throttle (protocol `accounts`), the
// same one IMAP and POP3 use. Every error is JSON `{ "Error": "..." }`; bodies are bounded (16 KiB) and requests
// timed out, so a slow or hostile client cannot hold the service.
import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import http, { type IncomingMessage, type ServerResponse } from 'node:http';
import https from 'node:https';
import type { AddressInfo } from 'node:net';
import type { Endpoint, MailboxNodeConfig } from '../shared/config.js';
import type { NodeContext } from '../shared/node.js';
import { tlsServerOptions } from '../shared/tls-session.js';
import { AccountError, type Accounts } from './accounts.js';
import type { MailboxEvents } from './api.js';
import { retrySeconds, type LoginGuard } from './login-guard.js';
import type { MailboxService } from './service.js';

export const ACCOUNT_MAX_BODY_BYTES = 16 * 1024;
export const SESSION_LIFETIME_MS = 10 * 60 * 1000;
/** Sessions kept at most; the oldest goes first (a flood of logins cannot grow memory without bound). */
const MAX_SESSIONS = 10_000;
/** Whole request (headers and body) within this long, else 408; idle keep-alive connections closed sooner. */
const REQUEST_TIMEOUT_MS = 10_000;

export interface AccountServiceOptions {
  ctx: NodeContext<MailboxNodeConfig, MailboxEvents>;
  accounts: Accounts;
  /** The node's login guard (its throttle is IMAP's and POP3's). */
  guard: LoginGuard;
  host: string;
  /** 0 picks a free port (tests). */
  port: number;
  /** The lab's control token, which `/api/v1/auth` requires; absent: that endpoint refuses everyone. */
  controlToken?: string;
  now?: () => number;
}

class HttpError extends Error {
  constructor(
    readonly status: number,
    message: string,
    readonly headers: Record<string, string> = {},
  ) {
    super(message);
  }
}

interface Session {
  user: string;
  expiresAt: number;
}

const digest = (s: string) => createHash('sha256').update(s, 'utf8').digest();

export async function startAccountService(options: AccountServiceOptions): Promise<MailboxService> {
  const { ctx, accounts, guard } = options;
  const now = options.now ?? Date.now;
  const sessions = new Map<string, Session>();
  const controlDigest = options.controlToken ? digest(options.controlToken) : undefined;

  const sessionOf = (req: IncomingMessage): Session => {
    const token = bearer(req);
    const session = token === undefined ? undefined : sessions.get(token);
    if (!session || session.expiresAt <= now()) {
      if (session) sessions.delete(token!);
      throw new HttpError(401, token === undefined ? 'log in first: POST /api/v1/login, then send "Authorization: Bearer <session>"' : 'session unknown or expired: log in again', { 'WWW-Authenticate': 'Bearer' });
    }
    return session;
  };

  const login = async (req: IncomingMessage, body: Record<string, unknown>) => {
    const address = stringField(body, 'address');
    const password = stringField(body, 'password');
    const totp = body.totp === undefined || body.totp === null ? undefined : stringField(body, 'totp');
    const attempt = { protocol: 'accounts' as const, login: address, method: 'password+totp', client: clientOf(req) };
    const throttled = guard.check(attempt);
    if (throttled) throw new HttpError(429, `too many failed logins, try again in ${retrySeconds(throttled.retryAfterMs)} s`, { 'Retry-After': String(retrySeconds(throttled.retryAfterMs)) });
    const result = await accounts.login(address, password, totp);
    if (!result.ok) {
      guard.failed(attempt);
      // One answer for every reason: which factor was wrong is not told.
      throw new HttpError(401, result.reason === 'totp-required' ? 'invalid credentials: this account needs a TOTP code ("totp")' : 'invalid credentials');
    }
    guard.throttle.success(result.user, attempt.client);
    const token = randomBytes(32).toString('base64url');
    const expiresAt = now() + SESSION_LIFETIME_MS;
    for (const [key, s] of sessions) if (s.expiresAt <= now()) sessions.delete(key);
    if (sessions.size >= MAX_SESSIONS) sessions.delete(sessions.keys().next().value!);
    sessions.set(token, { user: result.user, expiresAt });
    return { status: 200, body: { session: token, expiresAt: new Date(expiresAt).toISOString() } };
  };

  const auth = async (req: IncomingMessage, body: Record<string, unknown>) => {
    const token = bearer(req);
    if (!controlDigest || token === undefined || !timingSafeEqual(digest(token), controlDigest)) {
      throw new HttpError(401, 'this endpoint is for the lab\'s MTAs: send "Authorization: Bearer <control token>"', { 'WWW-Authenticate': 'Bearer' });
    }
    const user = stringField(body, 'user');
    const password = stringField(body, 'password');
    const client = stringField(body, 'client');
    if (body.protocol !== 'smtp') throw new HttpError(400, '"protocol" must be "smtp"');
    const verdict = await accounts.verify(user, password, { protocol: 'smtp', client });
    if (verdict.kind === 'ok') return { status: 200, body: { ok: true, user: verdict.user, ...(verdict.appPassword !== undefined ? { appPassword: verdict.appPassword } : {}) } };
    return { status: 200, body: { ok: false, reason: verdict.kind === 'app-password-required' ? 'app-password-required' : 'invalid' } };
  };

  const route = async (req: IncomingMessage): Promise<{ status: number; body?: unknown }> => {
    const url = new URL(req.url ?? '/', 'http://accounts');
    const method = req.method ?? 'GET';
    const allow = (methods: string[]) => {
      if (!methods.includes(method)) throw new HttpError(405, `${method} is not allowed on ${url.pathname} (allowed: ${methods.join(', ')})`, { Allow: methods.join(', ') });
    };
    const p = url.pathname;
    if (p === '/api/v1/login') {
      allow(['POST']);
      return login(req, await jsonBody(req));
    }
    if (p === '/api/v1/auth') {
      allow(['POST']);
      return auth(req, await jsonBody(req));
    }
    if (p === '/api/v1/app-passwords') {
      allow(['GET', 'POST']);
      const session = sessionOf(req);
      if (method === 'GET') return { status: 200, body: accounts.list(session.user) };
      const body = await jsonBody(req);
      return { status: 201, body: await accounts.create(session.user, body.name) };
    }
    if (p.startsWith('/api/v1/app-passwords/')) {
      allow(['DELETE']);
      const session = sessionOf(req);
      let name: string;
      try {
        name = decodeURIComponent(p.slice('/api/v1/app-passwords/'.length));
      } catch {
        throw new HttpError(400, 'the app password name in the path is not valid percent-encoding');
      }
      await accounts.revoke(session.user, name);
      return { status: 204 };
    }
    if (p === '/api/v1/logins') {
      allow(['GET']);
      return { status: 200, body: accounts.logins(sessionOf(req).user) };
    }
    throw new HttpError(404, `no such endpoint: ${p} (see /api/v1/login, /api/v1/app-passwords, /api/v1/logins, /api/v1/auth)`);
  };

  const handle = (req: IncomingMessage, res: ServerResponse) => {
    route(req).then(
      ({ status, body }) => send(res, status, body),
      (err: unknown) => {
        if (err instanceof HttpError) return send(res, err.status, { Error: err.message }, err.headers);
        if (err instanceof AccountError) {
          const status = { 'unknown-user': 404, exists: 409, 'not-found': 404, 'bad-name': 400 }[err.code];
          return send(res, status, { Error: err.message });
        }
        ctx.log(`accounts: ${req.method} ${req.url}: ${(err as Error).stack ?? String(err)}`);
        send(res, 500, { Error: `internal error: ${(err as Error).message}` });
      },
    );
  };

  const server = ctx.config.tls ? https.createServer(tlsServerOptions(ctx.config.tls), handle) : http.createServer(handle);
  server.requestTimeout = REQUEST_TIMEOUT_MS;
  server.headersTimeout = REQUEST_TIMEOUT_MS / 2;
  server.keepAliveTimeout = 5000;
  server.on('tlsClientError', (err: Error) => ctx.log(`accounts: TLS handshake failed: ${err.message}`));
  await new Promise<void>((resolve, reject) => {
    server.once('error', (err) => reject(new Error(`cannot listen for the account service on ${options.host}:${options.port}: ${err.message}`)));
    server.listen(options.port, options.host, () => resolve());
  });
  server.on('error', (err) => ctx.log(`accounts: ${err.message}`));
  const endpoint: Endpoint = { host: options.host, port: (server.address() as AddressInfo).port };
  return {
    endpoint,
    async close() {
      const closed = new Promise<void>((resolve) => server.close(() => resolve()));
      server.closeIdleConnections();
      // Requests under way get a little while to finish (a create or revoke writing its file), then the rest go.
      const force = setTimeout(() => server.closeAllConnections(), 2000);
      force.unref();
      await closed;
      clearTimeout(force);
    },
  };
}

function send(res: ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}): void {
  if (res.headersSent) {
    res.end();
    return;
  }
  const text = body === undefined ? '' : JSON.stringify(body);
  res.writeHead(status, { ...(body === undefined ? {} : { 'Content-Type': 'application/json' }), 'Content-Length': Buffer.byteLength(text), 'Cache-Control': 'no-store', ...headers });
  res.end(text);
}

function bearer(req: IncomingMessage): string | undefined {
  const match = /^Bearer ([\x21-\x7e]+)$/.exec(req.headers.authorization ?? '');
  return match ? match[1] : undefined;
}

function clientOf(req: IncomingMessage): string {
  return (req.socket.remoteAddress ?? '').replace(/^::ffff:(?=\d+\.)/, '');
}

function stringField(body: Record<string, unknown>, name: string): string {
  const value = body[name];
  if (typeof value !== 'string' || value === '') throw new HttpError(400, `"${name}" must be a non-empty string`);
  return value;
}

/** The request's JSON object body, read up to ACCOUNT_MAX_BODY_BYTES (413 past it, by Content-Length or by bytes). */
async function jsonBody(req: IncomingMessage): Promise<Record<string, unknown>> {
  const tooLarge = () => new HttpError(413, `request body larger than ${ACCOUNT_MAX_BODY_BYTES} bytes`, { Connection: 'close' });
  if (Number(req.headers['content-length'] ?? 0) > ACCOUNT_MAX_BODY_BYTES) {
    req.resume();
    throw tooLarge();
  }
  const data = await new Promise<Buffer>((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    const onData = (chunk: Buffer) => {
      size += chunk.length;
      if (size <= ACCOUNT_MAX_BODY_BYTES) return void chunks.push(chunk);
      // Nothing more is kept or read; the answer goes out with Connection: close. (Destroying the request here would
      // take the socket, and the answer, with it.)
      req.off('data', onData);
      req.pause();
      reject(tooLarge());
    };
    req.on('data', onData);
    req.once('end', () => resolve(Buffer.concat(chunks)));
    req.once('error', reject);
  });
  let parsed: unknown;
  try {
    parsed = JSON.parse(data.toString('utf8'));
  } catch (err) {
    throw new HttpError(400, `the body is not JSON: ${(err as Error).message}`);
  }
  if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) throw new HttpError(400, 'the body must be a JSON object');
  return parsed as Record<string, unknown>;
}
