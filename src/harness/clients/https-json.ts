// The one JSON-over-HTTPS client of the harness: the account service and the HTTP email API, each verified under the
// host's name with the lab CA (like every other harness client), with a timeout that fails loudly.
import https from 'node:https';
import type { Endpoint } from '../../shared/config.js';

export interface HttpsJsonTarget {
  endpoint: Endpoint;
  /** The host name the certificate carries (TLS SNI and verification). */
  servername: string;
  /** The lab CA (PEM). */
  ca: string;
  /** How the service is named in errors, e.g. `account service of mail.receiver.test`. */
  name: string;
}

export interface HttpsJsonResponse<T = unknown> {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  /** The parsed JSON body; undefined for an empty body (204). */
  body: T;
}

/** One request; resolves with any status (the caller decides), rejects only when no response came. */
export function httpsJson<T = unknown>(
  target: HttpsJsonTarget,
  request: { method: string; path: string; headers?: Record<string, string>; body?: unknown; timeoutMs?: number },
): Promise<HttpsJsonResponse<T>> {
  const payload = request.body === undefined ? undefined : typeof request.body === 'string' ? request.body : JSON.stringify(request.body);
  return new Promise((resolve, reject) => {
    const req = https.request(
      {
        host: target.endpoint.host,
        port: target.endpoint.port,
        servername: target.servername,
        ca: target.ca,
        method: request.method,
        path: request.path,
        headers: { accept: 'application/json', ...(payload !== undefined ? { 'content-type': 'application/json', 'content-length': String(Buffer.byteLength(payload)) } : {}), ...request.headers },
        timeout: request.timeoutMs ?? 10_000,
      },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => {
          const text = Buffer.concat(chunks).toString('utf8');
          let body: unknown;
          try {
            body = text === '' ? undefined : JSON.parse(text);
          } catch {
            return reject(new Error(`${target.name}: ${request.method} ${request.path} answered ${res.statusCode} with a body that is not JSON: ${text.slice(0, 200)}`));
          }
          resolve({ status: res.statusCode ?? 0, headers: res.headers, body: body as T });
        });
        res.on('error', reject);
      },
    );
    req.on('timeout', () => req.destroy(new Error(`${target.name}: ${request.method} ${request.path}: no answer within ${request.timeoutMs ?? 10_000} ms`)));
    req.on('error', (err) => reject(err.message.startsWith(target.name) ? err : new Error(`${target.name}: ${request.method} ${request.path}: ${err.message}`)));
    req.end(payload);
  });
}
