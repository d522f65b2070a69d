// The client side of the lab DNS: a resolver pointed at it, and the MX resolution an MTA does before relaying
// (RFC 5321 §5.1, with RFC 7505 null MX).
import { promises as dnsPromises } from 'node:dns';
import { isIPv6 } from 'node:net';
import type { Endpoint } from '../shared/config.js';
import type { MxHost, MxResolution } from './api.js';

export interface LabResolverOptions {
  /** Per-try timeout in ms (c-ares backs off on later tries). */
  timeoutMs?: number;
  tries?: number;
}

/** A resolver that asks the lab DNS only: nodes never use the system resolver. */
export function createLabResolver(endpoint: Endpoint, options: LabResolverOptions = {}): dnsPromises.Resolver {
  const resolver = new dnsPromises.Resolver({ timeout: options.timeoutMs ?? 1000, tries: options.tries ?? 2 });
  const host = isIPv6(endpoint.host) ? `[${endpoint.host}]` : endpoint.host;
  resolver.setServers([`${host}:${endpoint.port}`]);
  return resolver;
}

/** The part of a resolver MX resolution uses (a `dns.promises.Resolver` fits; tests may stub it). */
export type MxResolver = Pick<dnsPromises.Resolver, 'resolveMx' | 'resolve4' | 'resolve6'>;

export interface MxOptions {
  /** Also look up AAAA records of the hosts (default true). */
  ipv6?: boolean;
}

/**
 * Answers that are facts about the domain. Everything else (ETIMEOUT, ESERVFAIL, EREFUSED, ECONNREFUSED...) says
 * only that no answer came, so it is temporary. EREFUSED is among those: in the lab it means a name outside every
 * lab zone, but a refusal is the server's problem, not an answer about the name, and MTAs defer on it.
 */
const PERMANENT_CODES = new Set(['ENOTFOUND', 'ENODATA', 'EBADNAME']);

function errorCode(err: unknown): string {
  return (err as NodeJS.ErrnoException)?.code ?? 'EUNKNOWN';
}

function describe(err: unknown, what: string): string {
  const code = errorCode(err);
  const meaning: Record<string, string> = {
    ENOTFOUND: 'no such domain (NXDOMAIN)',
    ENODATA: 'no records',
    ETIMEOUT: 'DNS timeout',
    ESERVFAIL: 'DNS server failure (SERVFAIL)',
    EREFUSED: 'DNS query refused',
    ECONNREFUSED: 'DNS server unreachable',
  };
  return `${what}: ${meaning[code] ?? (err as Error)?.message ?? String(err)} (${code})`;
}

interface Addresses {
  addresses: string[];
  error?: string;
  temporary?: boolean;
}

async function resolveAddresses(resolver: MxResolver, host: string, ipv6: boolean): Promise<Addresses> {
  const lookups = [resolver.resolve4(host), ipv6 ? resolver.resolve6(host) : Promise.resolve([])];
  const settled = await Promise.allSettled(lookups);
  const addresses = settled.flatMap((s) => (s.status === 'fulfilled' ? s.value : []));
  if (addresses.length) return { addresses };
  const failures = settled.flatMap((s) => (s.status === 'rejected' ? [s.reason as unknown] : []));
  const temporary = failures.find((err) => !PERMANENT_CODES.has(errorCode(err)));
  if (temporary !== undefined) return { addresses, error: describe(temporary, `${host} A/AAAA`), temporary: true };
  const first = failures[0];
  return { addresses, error: first === undefined ? `${host}: no A/AAAA records` : describe(first, `${host} A/AAAA`), temporary: false };
}

/** Where mail for `domain` goes, per RFC 5321 §5.1 and RFC 7505. */
export async function resolveMxTargets(resolver: MxResolver, domain: string, options: MxOptions = {}): Promise<MxResolution> {
  const ipv6 = options.ipv6 ?? true;
  let records: { exchange: string; priority: number }[];
  try {
    records = await resolver.resolveMx(domain);
  } catch (err) {
    const code = errorCode(err);
    if (code === 'ENODATA') records = [];
    else if (PERMANENT_CODES.has(code)) return { kind: 'none', error: describe(err, `${domain} MX`) };
    else return { kind: 'temporary', error: describe(err, `${domain} MX`) };
  }

  if (records.length === 0) {
    const found = await resolveAddresses(resolver, domain, ipv6);
    if (found.addresses.length) return { kind: 'implicit', hosts: [{ exchange: domain, priority: 0, addresses: found.addresses }] };
    if (found.temporary) return { kind: 'temporary', error: found.error ?? `${domain}: address lookup failed` };
    return { kind: 'none', error: `${domain}: no MX and no A/AAAA records` };
  }

  // RFC 7505: a null MX is the only MX of its domain. Should one sit among real ones, the real ones still count.
  const isNull = (r: { exchange: string }) => r.exchange === '' || r.exchange === '.';
  const real = records.filter((r) => !isNull(r));
  if (real.length === 0) return { kind: 'null-mx' };

  // Array.prototype.sort is stable, so equal preferences keep the order the DNS gave them.
  const sorted = [...real].sort((a, b) => a.priority - b.priority);
  const hosts = await Promise.all(
    sorted.map(async ({ exchange, priority }): Promise<MxHost> => ({ exchange, priority, ...(await resolveAddresses(resolver, exchange, ipv6)) })),
  );
  // Nothing to connect to and at least one lookup may succeed later: the whole answer is temporary.
  if (hosts.every((h) => h.addresses.length === 0)) {
    const temporary = hosts.find((h) => h.temporary);
    if (temporary) return { kind: 'temporary', error: temporary.error ?? `${domain}: MX host lookup failed` };
  }
  return { kind: 'mx', hosts };
}
