// MTA-STS (RFC 8461), the sending side: for a destination domain, discover whether it publishes a policy, fetch it
// over verified HTTPS, validate it and keep it in memory for its max_age. Delivery asks `MtaStsPolicies.lookup` and
// then checks each MX host with `mxAllowedByPolicy`; what to do with the answer (enforce / testing / none) is
// delivery's business, not this module's.
//
// Rules followed (section numbers of RFC 8461):
// - Discovery (§3.1): TXT at `_mta-sts.<domain>`; the strings of a record are joined; records that do not begin
//   with `v=STSv1` are discarded; anything but exactly one left, or one without a valid `id` (1–32 letters and
//   digits), means no policy is available. A failed lookup (NXDOMAIN, NODATA, SERVFAIL, timeout) is the same.
// - Fetch (§3.3): `https://mta-sts.<domain>/.well-known/mta-sts.txt` (on the lab's port), the certificate verified
//   (chain to the given CA, valid now, naming `mta-sts.<domain>`), TLS 1.2 or later; only `200` counts and
//   redirects are not followed ("HTTP 3xx redirects MUST NOT be followed"); the media type must be `text/plain`; the
//   body is limited (64 KiB) and the whole fetch is timed out, so a hostile or broken policy host cannot hold
//   delivery up. Each address of the policy host is tried in turn only while it cannot be connected to.
// - Policy (§3.2): `version: STSv1`, `mode`, `max_age` (digits, capped at 31557600 s), `mx` patterns (host names or
//   `*.` host names; required unless mode is none). The policy's id is the TXT record's id (§3.1: the id names the policy instance).
// - Caching and use (§3.3, §5.1): a cached policy is used while unexpired when the TXT is absent or its id unchanged;
//   otherwise the policy is fetched; when that fetch fails, an unexpired cached policy is still used.
// - MX matching (§4.1): exact names, or `*.` covering exactly one leftmost label; case-insensitive, trailing dots
//   ignored.
// Problems are named by their TLSRPT (RFC 8460 §4.3) result types so that delivery can report them as such.
//
// mailauth's parsePolicy reads the policy body; it defaults a missing `mode` to none, reads `max_age` with
// Number() (so "", "1e3", "0x10" pass) and rejects values above the cap rather than capping them, so those fields
// are checked here before it sees the text. Its validateMx is not used: its `*.` matches any number of labels.
// Its fetch is not used either: fixed to port 443 and the system trust store.
import https from 'node:https';
import type { IncomingMessage } from 'node:http';
import type { TLSSocket } from 'node:tls';
import { domainToASCII } from 'node:url';
import { parsePolicy } from 'mailauth/lib/mta-sts.js';
import { insideLab } from '../shared/lab-boundary.js';

export type MtaStsMode = 'enforce' | 'testing' | 'none';
export interface MtaStsPolicy {
  id: string;
  mode: MtaStsMode;
  mx: string[];
  /** Seconds. */
  maxAge: number;
}
/** TLSRPT (RFC 8460) result types for policy problems. */
export type MtaStsProblem = 'sts-policy-fetch-error' | 'sts-policy-invalid' | 'sts-webpki-invalid';
export type MtaStsLookup =
  /** No usable `_mta-sts` TXT and nothing cached: the domain has no policy. */
  | { kind: 'none'; reason: string }
  /** `expiresAt`: epoch ms. */
  | { kind: 'policy'; policy: MtaStsPolicy; source: 'fetched' | 'cache'; expiresAt: number }
  /** The TXT says a policy exists, but it could not be had and nothing valid is cached. */
  | { kind: 'error'; problem: MtaStsProblem; reason: string };

export interface MtaStsOptions {
  /** Port of the policy hosts (443 in the real world; the lab uses its own). */
  port: number;
  /** PEM CA(s) the policy host's certificate must chain to (the lab CA). */
  ca: string;
  /** TXT lookup through the lab DNS (a node:dns Resolver's resolveTxt fits). Errors carry node:dns codes. */
  resolveTxt(name: string): Promise<string[][]>;
  /** A/AAAA of the policy host through the lab DNS. */
  resolveAddresses(host: string): Promise<string[]>;
  /** Only these addresses may be connected to (the lab's hosts); absent: any. */
  labAddresses?: readonly string[];
  /** Fetch timeout (connect + TLS + response), default 5000 ms. */
  timeoutMs?: number;
  /** Clock, for tests of max_age. Default Date.now. */
  now?: () => number;
}

/** §3.2: "maximum value of 31557600" (a year); larger values are capped, not refused. */
export const MTA_STS_MAX_AGE_CAP = 31_557_600;
/** Largest policy body read; a policy is a few lines, so anything near this is not one. */
export const MTA_STS_BODY_LIMIT = 64 * 1024;
const DEFAULT_TIMEOUT_MS = 5000;
const WELL_KNOWN_PATH = '/.well-known/mta-sts.txt';

interface Cached {
  policy: MtaStsPolicy;
  expiresAt: number;
}

/** A fetch that did not give a policy: the TLSRPT result type and why. */
class PolicyProblem extends Error {
  constructor(
    readonly problem: MtaStsProblem,
    message: string,
  ) {
    super(message);
  }
}

export class MtaStsPolicies {
  private readonly cache = new Map<string, Cached>();
  private readonly inFlight = new Map<string, Promise<MtaStsLookup>>();
  /** Bumped by clear(): a lookup that started before it must not refill the cache after it. */
  private generation = 0;
  private readonly now: () => number;

  constructor(private readonly options: MtaStsOptions) {
    this.now = options.now ?? Date.now;
  }

  /** The policy of `domain` now: cached while valid and the TXT id is unchanged, else (re)fetched. Concurrent calls for one domain share one fetch. */
  lookup(domain: string): Promise<MtaStsLookup> {
    const key = normalizeHost(domain);
    const running = this.inFlight.get(key);
    if (running) return running;
    const started = this.resolve(key).finally(() => this.inFlight.delete(key));
    this.inFlight.set(key, started);
    return started;
  }

  /** Drops every cached policy (e.g. tests). */
  clear(): void {
    this.cache.clear();
    this.generation++;
  }

  private async resolve(domain: string): Promise<MtaStsLookup> {
    const generation = this.generation;
    const txt = await this.discover(domain);
    const cached = this.cache.get(domain);
    const valid = cached && this.now() < cached.expiresAt ? cached : undefined;
    const fromCache = (c: Cached): MtaStsLookup => ({ kind: 'policy', policy: c.policy, source: 'cache', expiresAt: c.expiresAt });
    // §5.1: without a (usable) TXT record a cached policy still applies until it expires.
    if (!txt.ok) return valid ? fromCache(valid) : { kind: 'none', reason: `MTA-STS policy of ${domain}: ${txt.reason}` };
    if (valid && valid.policy.id === txt.id) return fromCache(valid);
    let policy: MtaStsPolicy;
    try {
      policy = await this.fetchPolicy(domain, txt.id);
    } catch (err) {
      // Anything but a PolicyProblem is a fault of this code: surface it rather than hide it behind the cache.
      if (!(err instanceof PolicyProblem)) throw err;
      // §5.1: a failed refresh leaves an unexpired cached policy in force.
      if (valid) return fromCache(valid);
      return { kind: 'error', problem: err.problem, reason: `MTA-STS policy of ${domain}: ${err.message}` };
    }
    const entry: Cached = { policy, expiresAt: this.now() + policy.maxAge * 1000 };
    if (generation === this.generation) this.cache.set(domain, entry);
    return { kind: 'policy', policy, source: 'fetched', expiresAt: entry.expiresAt };
  }

  /** §3.1: the id of the domain's one `v=STSv1` TXT record, or why there is none to use. */
  private async discover(domain: string): Promise<{ ok: true; id: string } | { ok: false; reason: string }> {
    const name = `_mta-sts.${domain}`;
    let records: string[][];
    try {
      records = await this.options.resolveTxt(name);
    } catch (err) {
      return { ok: false, reason: `no TXT record at ${name} (${(err as NodeJS.ErrnoException).code ?? String(err)})` };
    }
    // "v=STSv1" followed by the end or a field delimiter: "v=STSv10" is some other version, not a malformed v1.
    const sts = records.map((chunks) => chunks.join('')).filter((text) => /^v=STSv1(?=[ \t;]|$)/.test(text));
    if (sts.length !== 1) return { ok: false, reason: `${sts.length} TXT records at ${name} begin with v=STSv1 (exactly one is needed)` };
    const id = parseTxtId(sts[0]!);
    if (id === undefined) return { ok: false, reason: `TXT record at ${name} has no valid id (1 to 32 letters and digits): ${JSON.stringify(sts[0])}` };
    return { ok: true, id };
  }

  /** §3.3: the policy from the policy host, verified, or a PolicyProblem saying what failed. */
  private async fetchPolicy(domain: string, id: string): Promise<MtaStsPolicy> {
    const host = `mta-sts.${domain}`;
    const url = `https://${host}:${this.options.port}${WELL_KNOWN_PATH}`;
    let addresses: string[];
    try {
      addresses = await this.options.resolveAddresses(host);
    } catch (err) {
      throw new PolicyProblem('sts-policy-fetch-error', `${url}: ${host} has no address (${(err as NodeJS.ErrnoException).code ?? String(err)})`);
    }
    const allowed = addresses.filter((a) => insideLab(a, this.options.labAddresses));
    if (allowed.length === 0) {
      const why = addresses.length === 0 ? 'no address' : `only addresses outside the lab (${addresses.join(', ')}), not connected to`;
      throw new PolicyProblem('sts-policy-fetch-error', `${url}: ${host} has ${why}`);
    }
    const text = await this.fetchFirstAnswer(url, host, allowed);
    try {
      return { id, ...readPolicy(text) };
    } catch (err) {
      throw new PolicyProblem('sts-policy-invalid', `${url} is not a valid policy: ${(err as Error).message}`);
    }
  }

  /** Tries the addresses in order while they cannot be connected to; the first server that answers decides. */
  private async fetchFirstAnswer(url: string, host: string, addresses: string[]): Promise<string> {
    const unreachable: string[] = [];
    for (const address of addresses) {
      try {
        return await this.get(url, host, address);
      } catch (err) {
        if (!(err instanceof Unreachable)) throw err;
        unreachable.push(`${address}: ${err.message}`);
      }
    }
    throw new PolicyProblem('sts-policy-fetch-error', `${url}: could not connect (${unreachable.join('; ')})`);
  }

  /** One GET of the policy from one address, with the policy host's name for SNI, certificate and Host. */
  private get(url: string, host: string, address: string): Promise<string> {
    const { port, ca } = this.options;
    const timeoutMs = this.options.timeoutMs ?? DEFAULT_TIMEOUT_MS;
    return new Promise<string>((resolve, reject) => {
      let settled = false;
      const fail = (err: Error) => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        req.destroy();
        reject(err);
      };
      const req = https.request({
        host: address,
        port,
        path: WELL_KNOWN_PATH,
        method: 'GET',
        headers: { host: port === 443 ? host : `${host}:${port}`, accept: 'text/plain' },
        servername: host,
        ca,
        rejectUnauthorized: true,
        minVersion: 'TLSv1.2',
        // A connection of its own: a pooled one could carry another name's verification.
        agent: false,
      });
      const timer = setTimeout(() => fail(new PolicyProblem('sts-policy-fetch-error', `${url} (${address}) gave no complete answer within ${timeoutMs} ms`)), timeoutMs);
      let connected = false;
      req.on('socket', (socket) => socket.once('connect', () => (connected = true)));
      req.on('error', (err: NodeJS.ErrnoException) => {
        // Node records a failed certificate check on the socket (authorizationError) before destroying it.
        const certificate = (req.socket as TLSSocket | null)?.authorizationError;
        if (certificate) fail(new PolicyProblem('sts-webpki-invalid', `certificate of ${host} (${address}) not accepted: ${String(certificate)} (${err.message})`));
        else if (!connected) fail(new Unreachable(`${err.code ?? ''} ${err.message}`.trim()));
        else fail(new PolicyProblem('sts-policy-fetch-error', `${url} (${address}) failed: ${err.code ? `${err.code} ` : ''}${err.message}`));
      });
      req.on('response', (res: IncomingMessage) => {
        const refusal = refuseResponse(res);
        if (refusal) return fail(new PolicyProblem('sts-policy-fetch-error', `${url} ${refusal}`));
        const chunks: Buffer[] = [];
        let size = 0;
        res.on('data', (chunk: Buffer) => {
          size += chunk.length;
          if (size > MTA_STS_BODY_LIMIT) return fail(new PolicyProblem('sts-policy-fetch-error', `${url} sent a body over ${MTA_STS_BODY_LIMIT} bytes (not read further)`));
          chunks.push(chunk);
        });
        res.on('end', () => {
          if (settled) return;
          settled = true;
          clearTimeout(timer);
          resolve(Buffer.concat(chunks).toString('utf8'));
        });
        res.on('error', (err) => fail(new PolicyProblem('sts-policy-fetch-error', `${url} (${address}) broke off its answer: ${err.message}`)));
      });
      req.end();
    });
  }
}

/** An address that could not be connected to at all: the next one may be tried. */
class Unreachable extends Error {}

/** Why a response is not a policy answer (§3.3), or undefined when it is one. */
function refuseResponse(res: IncomingMessage): string | undefined {
  const status = res.statusCode ?? 0;
  if (status >= 300 && status < 400) return `answered ${status} redirecting to ${res.headers.location ?? '(no location)'}: redirects are not followed (RFC 8461 §3.3)`;
  if (status !== 200) return `answered ${status}`;
  const type = res.headers['content-type'];
  const media = (type ?? '').split(';')[0]!.trim().toLowerCase();
  if (media !== 'text/plain') return `answered with Content-Type ${type === undefined ? '(none)' : JSON.stringify(type)}, not text/plain`;
  const length = Number(res.headers['content-length']);
  if (length > MTA_STS_BODY_LIMIT) return `announced a body of ${length} bytes, over ${MTA_STS_BODY_LIMIT}`;
  return undefined;
}

/** §3.1 record: `v=STSv1; id=...` fields separated by `;` (with optional blanks); unknown fields ignored. */
function parseTxtId(text: string): string | undefined {
  const fields = text.split(';').map((f) => f.trim()).filter((f) => f !== '');
  const id = fields.find((f) => f.startsWith('id='))?.slice(3);
  return id !== undefined && /^[A-Za-z0-9]{1,32}$/.test(id) ? id : undefined;
}

/** The policy body (§3.2) read by mailauth's parsePolicy, after the checks it does not make (see the header). */
function readPolicy(text: string): Omit<MtaStsPolicy, 'id'> {
  const lines = text.split(/\r?\n/);
  const values = (key: string) => lines.filter((l) => fieldKey(l) === key).map((l) => l.slice(l.indexOf(':') + 1).trim());
  if (values('mode').length === 0) throw new Error('no mode field');
  const maxAges = values('max_age');
  // mailauth takes the last of repeated fields; the check must look at the same one.
  const maxAge = maxAges.at(-1);
  if (maxAge === undefined) throw new Error('no max_age field');
  if (!/^\d{1,10}$/.test(maxAge)) throw new Error(`max_age ${JSON.stringify(maxAge)} is not 1 to 10 digits`);
  const capped = Math.min(Number(maxAge), MTA_STS_MAX_AGE_CAP);
  const bad = values('mx').find((mx) => !/^(\*\.)?[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*\.?$/i.test(mx));
  if (bad !== undefined) throw new Error(`mx ${JSON.stringify(bad)} is not a host name or *.host name`);
  const forMailauth = lines.map((l) => (fieldKey(l) === 'max_age' ? `max_age: ${capped}` : l)).join('\n');
  let parsed: ReturnType<typeof parsePolicy>;
  try {
    parsed = parsePolicy(forMailauth);
  } catch (err) {
    throw new Error(`${(err as Error).message}${(err as { code?: string }).code ? ` (${(err as { code?: string }).code})` : ''}`);
  }
  return { mode: parsed.mode, mx: parsed.mx ?? [], maxAge: capped };
}

/** The key of a `key: value` policy line, as mailauth reads it (lower-cased, trimmed), or undefined. */
function fieldKey(line: string): string | undefined {
  const colon = line.indexOf(':');
  return colon < 0 ? undefined : line.slice(0, colon).trim().toLowerCase();
}

/** Whether `mxHost` is allowed by the policy's `mx` patterns (RFC 8461 §4.1: exact or `*.` leftmost-label wildcard, case-insensitive, trailing dot ignored). */
export function mxAllowedByPolicy(policy: MtaStsPolicy, mxHost: string): boolean {
  const host = normalizeHost(mxHost);
  return policy.mx.some((pattern) => {
    const p = normalizeHost(pattern);
    if (!p.startsWith('*.')) return p === host;
    // "*.example.com" stands for exactly one label in front of example.com: not example.com, not a.b.example.com.
    const suffix = p.slice(1);
    const label = host.slice(0, -suffix.length);
    return host.endsWith(suffix) && label !== '' && !label.includes('.');
  });
}

/** Lower-case A-label form without the trailing dot; a name that has no A-label form is only lower-cased. */
function normalizeHost(name: string): string {
  const plain = name.trim().replace(/\.$/, '').toLowerCase();
  if (plain.startsWith('*.')) return `*.${domainToASCII(plain.slice(2)) || plain.slice(2)}`;
  return domainToASCII(plain) || plain;
}

