// The MTA's client of the mailbox server's account service (issue 13): SMTP AUTH of the users it knows is checked
// there (`POST /api/v1/auth`, as Postfix asks Dovecot's SASL), so app passwords and two-factor authentication hold on
// submission too, and a revoked app password stops working here at once.
//
// HTTPS verified against the lab CA when the MTA has `tls` (the account service then has the mailbox node's
// certificate), plain HTTP when it has none (nor, in such a lab, does the mailbox node). Any failure to get a clear
// answer (unreachable, timeout, an unexpected status or body) is an AuthServiceError: the caller answers 454, never
// accepts.
import http from 'node:http';
import https from 'node:https';
import type { Endpoint } from '../shared/config.js';

export type AuthServiceVerdict = { ok: true; user: string; appPassword?: string } | { ok: false; reason: 'app-password-required' | 'invalid' };

export class AuthServiceError extends Error {}

export interface AuthServiceClientOptions {
  endpoint: Endpoint;
  /** The lab's control token: the account service's `/api/v1/auth` takes it as a bearer token. */
  token: string;
  /** PEM of the lab CA: HTTPS, verified. Absent: plain HTTP. */
  ca?: string;
  /** Whole request, connect to answer (default 5 s): a submission client waits for it. */
  timeoutMs?: number;
}

const MAX_RESPONSE_BYTES = 16 * 1024;

export interface AuthServiceClient {
  check(request: { user: string; password: string; client: string }): Promise<AuthServiceVerdict>;
}

export function createAuthServiceClient(options: AuthServiceClientOptions): AuthServiceClient {
  const { endpoint, token, ca } = options;
  const timeoutMs = options.timeoutMs ?? 5000;
  const where = `${ca ? 'https' : 'http'}://${endpoint.host}:${endpoint.port}/api/v1/auth`;
  return {
    check({ user, password, client }) {
      const body = JSON.stringify({ user, password, protocol: 'smtp', client });
      return new Promise<AuthServiceVerdict>((resolve, reject) => {
        const fail = (why: string) => reject(new AuthServiceError(`account service ${where}: ${why}`));
        const request = (ca ? https : http).request(
          {
            host: endpoint.host,
            port: endpoint.port,
            path: '/api/v1/auth',
            method: 'POST',
            headers: { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(body), Authorization: `Bearer ${token}` },
            ...(ca ? { ca, minVersion: 'TLSv1.2' as const } : {}),
            // No connection reuse: a login is rare, and a stale kept-alive socket would turn into a spurious 454.
            agent: false,
          },
          (res) => {
            const chunks: Buffer[] = [];
            let size = 0;
            res.on('data', (chunk: Buffer) => {
              size += chunk.length;
              if (size > MAX_RESPONSE_BYTES) {
                res.destroy();
                return fail(`answer larger than ${MAX_RESPONSE_BYTES} bytes`);
              }
              chunks.push(chunk);
            });
            res.on('error', (err) => fail(err.message));
            res.on('end', () => {
              const text = Buffer.concat(chunks).toString('utf8');
              if (res.statusCode !== 200) return fail(`HTTP ${res.statusCode}: ${text.slice(0, 200)}`);
              try {
                const verdict = parseVerdict(JSON.parse(text));
                if (!verdict) return fail(`unexpected answer ${text.slice(0, 200)}`);
                resolve(verdict);
              } catch (err) {
                fail(`answer is not JSON: ${(err as Error).message}`);
              }
            });
          },
        );
        request.setTimeout(timeoutMs, () => {
          request.destroy();
          fail(`no answer within ${timeoutMs} ms`);
        });
        request.on('error', (err) => fail(err.message));
        request.end(body);
      });
    },
  };
}

function parseVerdict(value: unknown): AuthServiceVerdict | undefined {
  if (typeof value !== 'object' || value === null) return undefined;
  const v = value as Record<string, unknown>;
  if (v.ok === true && typeof v.user === 'string') return { ok: true, user: v.user, ...(typeof v.appPassword === 'string' ? { appPassword: v.appPassword } : {}) };
  if (v.ok === false && (v.reason === 'app-password-required' || v.reason === 'invalid')) return { ok: false, reason: v.reason };
  return undefined;
}
