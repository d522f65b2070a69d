// The client side of the lab DNS: a resolver pointed at it, and the MX resolution an MTA does before relaying
// (RFC 5321 §5.1, with RFC 7505 null MX).
//
// `resolveTlsa` looks up TLSA records (RFC 6698) for DANE (RFC 7672). Node 20's resolver has no TLSA query, so it is
// a small stub resolver of its own: one question to one server, UDP first and TCP when the answer is truncated
// (RFC 1035 §4.2, RFC 7766), a random id and the question checked in the response (RFC 5452), and failures with
// the codes node:dns uses so that callers treat them like the other lookups (PERMANENT_CODES below).
import { promises as dnsPromises } from 'node:dns';
import dgram from 'node:dgram';
import net, { isIPv6 } from 'node:net';
import { Packet } from 'dns2';
import type { Endpoint } from '../shared/config.js';
import type { MxHost, MxResolution } from './api.js';
import { TLSA_TYPE, decodeTlsaRdata, type TlsaAnswer } from './wire.js';
import { normalizeName } from './zone.js';

export interface LabResolverOptions {
  /** Per-try timeout in ms (c-ares backs off on later tries). */
  timeoutMs?: number;
  tries?: number;
  /**
   * The node's own address, which queries leave from (UDP and TCP), so the lab DNS's query log and fault events name
   * the node that asked. Absent: the system's choice (127.0.0.1 for every node of the local runtime).
   */
  localAddress?: string;
}

/** A resolver that asks the lab DNS only: nodes never use the system resolver. */
export function createLabResolver(endpoint: Endpoint, options: LabResolverOptions = {}): dnsPromises.Resolver {
  const resolver = new dnsPromises.Resolver({ timeout: options.timeoutMs ?? 1000, tries: options.tries ?? 2 });
  const host = isIPv6(endpoint.host) ? `[${endpoint.host}]` : endpoint.host;
  resolver.setServers([`${host}:${endpoint.port}`]);
  const local = options.localAddress;
  if (local && net.isIP(local)) {
    if (isIPv6(local)) resolver.setLocalAddress('0.0.0.0', local);
    else resolver.setLocalAddress(local);
  }
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

/**
 * The MX records of `name` as `{ exchange, priority }`, whatever the Node version: Node 24's resolver adds
 * `type: 'MX'` to each answer (issue 16), which would leak into events and comparisons.
 */
export async function resolveMxRecords(resolver: Pick<MxResolver, 'resolveMx'>, name: string): Promise<{ exchange: string; priority: number }[]> {
  return (await resolver.resolveMx(name)).map(({ exchange, priority }) => ({ exchange, priority }));
}

/** Where mail for `domain` goes, per RFC 5321 §5.1 and RFC 7505. */
export async function resolveMxTargets(resolver: MxResolver, domain: string, options: MxOptions = {}): Promise<MxResolution> {
  const ipv6 = options.ipv6 ?? true;
  let records: { exchange: string; priority: number }[];
  try {
    records = await resolveMxRecords(resolver, domain);
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

export type { TlsaAnswer } from './wire.js';

export interface TlsaOptions {
  /** How long one try waits for an answer, in ms (default 1000). A TCP retry after a truncated answer gets as long. */
  timeoutMs?: number;
  /** How many UDP tries before ETIMEOUT (default 2). */
  tries?: number;
  /** The node's own address, which the queries leave from (as createLabResolver's `localAddress`). */
  localAddress?: string;
}

/** node:dns's code for each failing rcode (RCODE → code, as c-ares maps them). */
const RCODE_ERRORS: Record<number, { code: string; meaning: string }> = {
  [Packet.RCODE.FORMERR]: { code: 'EFORMERR', meaning: 'the server could not read the query (FORMERR)' },
  [Packet.RCODE.SERVFAIL]: { code: 'ESERVFAIL', meaning: 'DNS server failure (SERVFAIL)' },
  [Packet.RCODE.NXDOMAIN]: { code: 'ENOTFOUND', meaning: 'no such domain (NXDOMAIN)' },
  [Packet.RCODE.NOTIMP]: { code: 'ENOTIMP', meaning: 'the server does not implement this query (NOTIMP)' },
  [Packet.RCODE.REFUSED]: { code: 'EREFUSED', meaning: 'DNS query refused (REFUSED)' },
};

/** An Error with a node:dns-like `code` (and `hostname`), its message naming the query. */
function dnsError(what: string, hostname: string, code: string, reason: string): NodeJS.ErrnoException & { hostname: string } {
  return Object.assign(new Error(`${what}: ${reason} (${code})`), { code, hostname });
}

/**
 * The TLSA records at `name` (e.g. `_25._tcp.mx.receiver.test`), asked of `server` only. Answers of other types
 * (a CNAME in front of the TLSA RRset) are skipped. Fails with `code` ENOTFOUND (NXDOMAIN), ENODATA (the name has
 * no TLSA), ESERVFAIL, EREFUSED, ETIMEOUT (no answer after `tries` tries), ECONNREFUSED or EBADRESP.
 */
export async function resolveTlsa(server: Endpoint, name: string, options: TlsaOptions = {}): Promise<TlsaAnswer[]> {
  const timeoutMs = options.timeoutMs ?? 1000;
  const tries = options.tries ?? 2;
  if (!Number.isInteger(tries) || tries < 1) throw new Error(`resolveTlsa: tries must be a whole number from 1, got ${tries}`);
  if (!(timeoutMs > 0) || !Number.isFinite(timeoutMs)) throw new Error(`resolveTlsa: timeoutMs must be a positive number of ms, got ${timeoutMs}`);
  const qname = normalizeName(name);
  const what = `${qname} TLSA`;
  const fail = (code: string, reason: string) => dnsError(what, qname, code, reason);
  const where = `${server.host}:${server.port}`;

  let response: Packet | undefined;
  for (let attempt = 1; attempt <= tries && !response; attempt++) {
    // A fresh id per try: a late answer to an earlier try must not be taken for this one.
    const query = tlsaQuery(qname);
    response = await exchangeUdp(server, query, qname, timeoutMs, fail, options.localAddress);
    if (response?.header.tc) {
      // RFC 7766 §5: a truncated UDP answer is asked again over TCP, and the UDP part is not used.
      response = await exchangeTcp(server, tlsaQuery(qname), qname, timeoutMs, fail, options.localAddress);
      if (!response) throw fail('ETIMEOUT', `no answer over TCP from ${where} within ${timeoutMs} ms after a truncated UDP answer`);
    }
  }
  if (!response) throw fail('ETIMEOUT', `no answer from ${where} after ${tries} ${tries === 1 ? 'try' : 'tries'} of ${timeoutMs} ms`);

  const rcode = response.header.rcode;
  if (rcode !== Packet.RCODE.NOERROR) {
    const known = RCODE_ERRORS[rcode];
    throw known ? fail(known.code, known.meaning) : fail('EBADRESP', `unexpected rcode ${rcode}`);
  }
  const records = response.answers.filter((r) => r.type === TLSA_TYPE && r.class === Packet.CLASS.IN);
  if (records.length === 0) throw fail('ENODATA', 'no TLSA records');
  return records.map((r) => {
    if (!Buffer.isBuffer(r.data)) throw fail('EBADRESP', 'a TLSA record without RDATA');
    try {
      return decodeTlsaRdata(r.data);
    } catch (err) {
      throw fail('EBADRESP', (err as Error).message);
    }
  });
}

function tlsaQuery(qname: string): Packet {
  const query = new Packet();
  query.header.id = Packet.uuid(); // crypto-random, the whole 16 bits (RFC 5452 §4.3)
  query.header.rd = 1; // a stub resolver asks for recursion; the lab server, authoritative only, ignores it
  query.questions.push(new Packet.Question(qname, TLSA_TYPE, Packet.CLASS.IN));
  return query;
}

/** Whether `message` is the response to `query`: same id, QR set, and the one question asked (RFC 5452 §9.1). */
function answers(message: Buffer, query: Packet, qname: string): Packet | undefined {
  let response: Packet;
  try {
    response = Packet.parse(message);
  } catch {
    return undefined;
  }
  const question = response.questions[0];
  const same =
    response.header.qr === 1 &&
    response.header.id === query.header.id &&
    response.questions.length === 1 &&
    question !== undefined &&
    normalizeName(String(question.name)) === qname &&
    question.type === TLSA_TYPE &&
    question.class === Packet.CLASS.IN;
  return same ? response : undefined;
}

type Fail = (code: string, reason: string) => Error;

/** One UDP try: the response, or undefined when none came within `timeoutMs`. Datagrams that do not match are dropped. */
function exchangeUdp(server: Endpoint, query: Packet, qname: string, timeoutMs: number, fail: Fail, localAddress?: string): Promise<Packet | undefined> {
  return new Promise((resolve, reject) => {
    const socket = dgram.createSocket(isIPv6(server.host) ? 'udp6' : 'udp4');
    const timer = setTimeout(() => finish(() => resolve(undefined)), timeoutMs);
    let done = false;
    const finish = (settle: () => void) => {
      if (done) return; // an error after the answer (or the timeout) has nothing left to settle
      done = true;
      clearTimeout(timer);
      socket.close();
      settle();
    };
    // Connected, so only the server's datagrams arrive and an ICMP port unreachable surfaces as an error.
    socket.on('error', (err: NodeJS.ErrnoException) => {
      finish(() => reject(fail(err.code ?? 'ECONNREFUSED', `cannot reach ${server.host}:${server.port} over UDP: ${err.message}`)));
    });
    socket.on('message', (message) => {
      const response = answers(message, query, qname);
      if (response) finish(() => resolve(response));
    });
    const send = () => socket.connect(server.port, server.host, () => socket.send(query.toBuffer()));
    if (localAddress) socket.bind(0, localAddress, send);
    else send();
  });
}

/** The query over TCP (RFC 1035 §4.2.2: each message after a two-octet length); undefined on timeout. */
function exchangeTcp(server: Endpoint, query: Packet, qname: string, timeoutMs: number, fail: Fail, localAddress?: string): Promise<Packet | undefined> {
  return new Promise((resolve, reject) => {
    const socket = net.connect({ host: server.host, port: server.port, ...(localAddress ? { localAddress } : {}) });
    const timer = setTimeout(() => finish(() => resolve(undefined)), timeoutMs);
    let done = false;
    const finish = (settle: () => void) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      socket.destroy();
      settle();
    };
    let received = Buffer.alloc(0);
    socket.on('error', (err: NodeJS.ErrnoException) => finish(() => reject(fail(err.code ?? 'ECONNREFUSED', `cannot query ${server.host}:${server.port} over TCP: ${err.message}`))));
    socket.on('connect', () => {
      const message = query.toBuffer();
      const length = Buffer.alloc(2);
      length.writeUInt16BE(message.length);
      socket.write(Buffer.concat([length, message]));
    });
    socket.on('data', (chunk) => {
      received = Buffer.concat([received, chunk]);
      while (received.length >= 2 && received.length >= 2 + received.readUInt16BE(0)) {
        const message = received.subarray(2, 2 + received.readUInt16BE(0));
        received = received.subarray(2 + message.length);
        const response = answers(message, query, qname);
        if (response) return finish(() => resolve(response));
      }
    });
    socket.on('end', () => finish(() => reject(fail('EBADRESP', `${server.host}:${server.port} closed the TCP connection without answering`))));
  });
}
