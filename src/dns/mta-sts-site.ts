// The lab's MTA-STS policy host (RFC 8461 §3.3): `https://mta-sts.<domain>/.well-known/mta-sts.txt` for every
// configured policy domain, on one HTTPS listener of the DNS node. The DNS node serves it because MTA-STS is
// discovered through the DNS (the `_mta-sts` TXT record) and scenarios change the TXT id and the policy together.
//
// What a sending MTA relies on, and so what this does:
// - One certificate per site, picked by SNI (`mta-sts.<domain>`, case-insensitive). A client that sends no SNI, or
//   a name of no site, gets the first site's certificate, so its name check fails as with a misconfigured host.
// - 200 with `Content-Type: text/plain` and the policy text for GET (HEAD: headers only) of exactly the well-known
//   path at a site's host; 404 for any other path or host; 405 for other methods. Never a redirect: RFC 8461 §3.3
//   forbids following them, so the lab never tempts a client to.
// - The policy text is served as given, not parsed: scenarios serve broken policies on purpose.
// - Bounded like any server facing the lab's clients: short header/request timeouts, small headers, short keep-alive.
import https from 'node:https';
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import { createSecureContext, type SecureContext } from 'node:tls';
import type { Endpoint, MtaStsSite } from '../shared/config.js';
import type { PolicyFetch } from './api.js';
import { formatAddress } from './server.js';

export const MTA_STS_PATH = '/.well-known/mta-sts.txt';

/** Time a client has to send its request headers, and the whole request; a policy GET takes milliseconds. */
const REQUEST_TIMEOUT_MS = 5000;
/** An idle keep-alive connection is closed after this: fetchers make one request and go. */
const KEEP_ALIVE_MS = 1000;
/** Header bytes a request may carry: a policy fetch sends a handful of short headers. */
const MAX_HEADER_BYTES = 4096;

export interface MtaStsSiteOptions {
  host: string;
  /** 0 picks a free port. */
  port: number;
  /** At least one; the first one's certificate is the default (no SNI, unknown name). */
  sites: MtaStsSite[];
  /** Called once per request answered. */
  onFetch?(fetch: PolicyFetch): void;
  log?(message: string): void;
}

export interface RunningMtaStsSite {
  endpoint: Endpoint;
  /** The policy domains served, in configuration order. */
  domains(): string[];
  /** Replaces a site's policy text from the next request on; throws, naming the known domains, for an unknown one. */
  setPolicy(domain: string, policy: string): void;
  close(): Promise<void>;
}

interface Site {
  domain: string;
  policy: string;
  context: SecureContext;
}

/** `mta-sts.<domain>` → the site, names lower-case. */
function siteHost(domain: string): string {
  return `mta-sts.${domain}`;
}

function normalizeDomain(domain: string): string {
  return domain.trim().toLowerCase().replace(/\.+$/, '');
}

function buildSites(configs: MtaStsSite[]): Map<string, Site> {
  if (!Array.isArray(configs) || configs.length === 0) throw new Error('mtaSts.sites must list at least one site');
  const sites = new Map<string, Site>();
  for (const config of configs) {
    if (typeof config?.domain !== 'string' || normalizeDomain(config.domain) === '') throw new Error(`an MTA-STS site needs a domain, got ${JSON.stringify(config?.domain)}`);
    const domain = normalizeDomain(config.domain);
    if (sites.has(domain)) throw new Error(`MTA-STS site ${domain} is configured twice`);
    if (typeof config.policy !== 'string') throw new Error(`MTA-STS site ${domain}: policy must be a string`);
    let context: SecureContext;
    try {
      context = createSecureContext({ cert: config.cert, key: config.key, minVersion: 'TLSv1.2' });
    } catch (err) {
      throw new Error(`MTA-STS site ${domain}: unusable certificate or key: ${(err as Error).message}`);
    }
    sites.set(domain, { domain, policy: config.policy, context });
  }
  return sites;
}

/** The host name of a Host header, lower-case, without its port (`mta-sts.receiver.test:8443` → `mta-sts.receiver.test`). */
function hostName(header: string | undefined): string {
  if (!header) return '';
  const host = header.trim().toLowerCase();
  if (host.startsWith('[')) return host.slice(0, host.indexOf(']') + 1); // an IPv6 literal: no site has one
  return host.replace(/:\d*$/, '').replace(/\.+$/, '');
}

export async function startMtaStsSite(options: MtaStsSiteOptions): Promise<RunningMtaStsSite> {
  const sites = buildSites(options.sites);
  const log = options.log ?? (() => {});
  const byHost = (name: string) => (name.startsWith('mta-sts.') ? sites.get(name.slice('mta-sts.'.length)) : undefined);
  const fallback = sites.values().next().value as Site;
  const first = options.sites[0]!;

  const respond = (req: IncomingMessage, res: ServerResponse) => {
    const host = hostName(req.headers.host);
    const site = byHost(host);
    const path = (req.url ?? '').split('?')[0]!;
    const send = (status: number, body: string, headers: Record<string, string> = {}) => {
      res.writeHead(status, { 'Content-Type': 'text/plain', 'Content-Length': Buffer.byteLength(body), 'Cache-Control': 'no-store', ...headers });
      res.end(req.method === 'HEAD' ? undefined : body);
      options.onFetch?.({ domain: site?.domain ?? host, path, status, client: formatAddress(req.socket.remoteAddress ?? '?', req.socket.remotePort ?? 0) });
    };
    if (req.method !== 'GET' && req.method !== 'HEAD') return send(405, `${req.method} is not allowed here: GET or HEAD ${MTA_STS_PATH}\n`, { Allow: 'GET, HEAD' });
    if (!site) return send(404, `no MTA-STS policy host ${JSON.stringify(host)} here (hosts: ${[...sites.keys()].map(siteHost).join(', ')})\n`);
    if (path !== MTA_STS_PATH) return send(404, `not found: the policy is at ${MTA_STS_PATH}\n`);
    send(200, site.policy);
  };

  const server = https.createServer(
    {
      cert: first.cert,
      key: first.key,
      minVersion: 'TLSv1.2',
      // Certificate per site by SNI; no SNI or a name of no site: the default, i.e. the first site's certificate.
      SNICallback: (servername, done) => done(null, byHost(hostName(servername))?.context ?? fallback.context),
      maxHeaderSize: MAX_HEADER_BYTES,
      headersTimeout: REQUEST_TIMEOUT_MS,
      requestTimeout: REQUEST_TIMEOUT_MS,
      keepAliveTimeout: KEEP_ALIVE_MS,
    },
    respond,
  );
  // Every TCP connection, so close() can end them: closeAllConnections() only knows the connections that have
  // become HTTP ones, not a client that connected (or finished its handshake) and sent nothing yet.
  const connections = new Set<Socket>();
  server.on('connection', (socket: Socket) => {
    connections.add(socket);
    socket.once('close', () => connections.delete(socket));
  });
  // Failed handshakes are the client's business (a fetcher refusing the certificate): a log line is enough.
  server.on('tlsClientError', (err: Error, socket: Socket) => log(`mta-sts: TLS handshake with ${formatAddress(socket.remoteAddress ?? '?', socket.remotePort ?? 0)} failed: ${err.message}`));
  // No 'clientError' listener: node's own answers (400, 408, 431 for headers past maxHeaderSize) are the right ones.

  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen({ host: options.host, port: options.port }, () => {
      server.off('error', reject);
      resolve();
    });
  });
  server.on('error', (err) => log(`mta-sts: server error: ${err.message}`));
  const endpoint = { host: options.host, port: (server.address() as AddressInfo).port };

  let closing: Promise<void> | undefined;
  return {
    endpoint,
    domains: () => [...sites.keys()],
    setPolicy(domain, policy) {
      if (typeof policy !== 'string') throw new Error('the policy must be a string (the text as served)');
      const site = sites.get(normalizeDomain(String(domain)));
      if (!site) throw new Error(`no MTA-STS site for ${JSON.stringify(domain)} (sites: ${[...sites.keys()].join(', ')})`);
      site.policy = policy;
    },
    close() {
      closing ??= new Promise<void>((resolve) => {
        server.close(() => resolve());
        for (const socket of connections) socket.destroy(); // idle and keep-alive connections must not hold the stop up
      });
      return closing;
    },
  };
}
