// The lab DNS data: the zones the lab server is authoritative for, and the answer to a query against them.
// Pure (no I/O), so it is unit-tested without sockets; the server and the node's rpc both drive it.
//
// Semantics, deliberately small:
// - Names are case-insensitive and may be given with or without the trailing dot; they are stored lower-case
//   without it. The root is written "." where a record points at it (null MX, RFC 7505).
// - A name belongs to the most specific zone whose origin is it or one of its ancestors. Nested zones are served
//   as if delegated and answered by the same server: there are no referrals.
// - NS records below an apex are plain data, not delegations. There are no wildcards.
// - Every zone has a synthesized SOA (and, unless NS records are given at the apex, one NS pointing at the SOA
//   primary), so SOA and NS queries at the apex always work and negative answers carry an SOA. The default primary,
//   `ns.<origin>`, is only a placeholder: nothing here gives it an address. A zone whose NS must resolve says its
//   primary (`soa.primary`); the lab's planned zones name the dns host (harness/topology.ts buildZones, issue 14).
//
// TLSA (RFC 6698) is served too, because the MTA's DANE (RFC 7672) looks up `_25._tcp.<mx host>` in the lab DNS.
// Its certificate association data is kept as lower-case hex; the lengths SHA2-256 (32 octets) and SHA2-512
// (64 octets) fix are checked here, so a scenario's typo fails when the record is set, not when a client compares.
import { isIPv4, isIPv6 } from 'node:net';
import type { DnsRecord, ZoneConfig } from '../shared/config.js';
import type { LookupResult, Rcode, RecordType, SoaFields, SoaRecord, ZoneRecord } from './api.js';



/** The types the lab serves; other query types get NODATA (or NXDOMAIN) answers. */
export const RECORD_TYPES: readonly RecordType[] = ['A', 'AAAA', 'MX', 'TXT', 'CNAME', 'PTR', 'NS', 'SOA', 'TLSA'];

/** TTL of records that do not set one. Short, because the lab changes records while it runs. */
export const DEFAULT_TTL = 60;

/** How many CNAMEs a lookup follows before giving up (a loop is also cut as soon as a name repeats). */
export const MAX_CNAME_CHAIN = 16;

const SOA_DEFAULTS = { serial: 1, refresh: 3600, retry: 600, expiration: 86400, minimum: 60 } as const;
const MAX_TTL = 0x7fffffff;

interface Zone {
  origin: string;
  /** The SOA fields as configured; the rest is filled in by `soaOf`. */
  soa: NonNullable<ZoneConfig['soa']>;
  /** Current serial: starts at the configured one and is bumped by every change to the zone. */
  serial: number;
  /** Records by owner name (normalized), in insertion order. Never holds an empty list. */
  records: Map<string, DnsRecord[]>;
}

/** Lower-case, without trailing dot; the root is the empty string. */
export function normalizeName(name: string): string {
  const lower = name.trim().toLowerCase();
  return lower.endsWith('.') ? lower.replace(/\.+$/, '') : lower;
}

function inZone(name: string, origin: string): boolean {
  return origin === '' || name === origin || name.endsWith('.' + origin);
}

/** The set of zones the lab DNS serves. Every change is validated as a whole and applied atomically. */
export class Zones {
  private zones = new Map<string, Zone>();

  constructor(configs: ZoneConfig[] = []) {
    this.setZones(configs);
  }

  /** Replaces every zone. */
  setZones(configs: ZoneConfig[]): void {
    if (!Array.isArray(configs)) throw new Error('zones must be an array of zone configurations');
    const next = new Map<string, Zone>();
    for (const config of configs) {
      const zone = buildZone(config);
      if (next.has(zone.origin)) throw new Error(`zone ${display(zone.origin)} is configured twice`);
      next.set(zone.origin, zone);
    }
    this.commit(next);
  }

  /** Adds a zone, or replaces the zone with the same origin. */
  addZone(config: ZoneConfig): void {
    const next = this.clone();
    const zone = buildZone(config);
    next.set(zone.origin, zone);
    this.commit(next);
  }

  /** Removes a zone; false when there was none with that origin. */
  removeZone(origin: string): boolean {
    const next = this.clone();
    const removed = next.delete(normalizeName(origin));
    if (removed) this.commit(next);
    return removed;
  }

  /** The zones as configuration (SOA filled in with the current values), in the order they were added. */
  list(): ZoneConfig[] {
    return [...this.zones.values()].map((zone) => {
      const { name: _name, type: _type, ttl: _ttl, ...soa } = soaOf(zone);
      return { origin: zone.origin, soa, records: [...zone.records.values()].flat().map((r) => ({ ...r })) };
    });
  }

  /** Origin of the zone `name` is in, or undefined when the lab is not authoritative for it. */
  findZone(name: string): string | undefined {
    return this.zoneFor(normalizeName(name))?.origin;
  }

  /** Replaces the RRset (name, type) with `records`; an empty list deletes it. */
  setRecords(name: string, type: string, records: DnsRecord[]): void {
    const owner = normalizeName(checkString(name, 'name'));
    const rtype = checkType(type);
    if (!Array.isArray(records)) throw new Error('records must be an array');
    const next = this.clone();
    const zone = zoneFor(next, owner);
    if (!zone) throw new Error(`${display(owner)} is not in any lab zone`);
    const fresh = records.map((r) => normalizeRecord(r, zone.origin));
    for (const r of fresh) {
      if (r.name !== owner || r.type !== rtype) {
        throw new Error(`set-records ${display(owner)} ${rtype}: got a ${r.type} record for ${display(r.name)}`);
      }
    }
    const kept = (zone.records.get(owner) ?? []).filter((r) => r.type !== rtype);
    setAt(zone, owner, [...kept, ...dedupe(fresh)]);
    zone.serial = bump(zone.serial);
    this.commit(next);
  }

  /**
   * Adds one record to the zone its name is in. With `origin`, that zone is created first when missing
   * (and `@` may be used as the record's name for the apex).
   */
  addRecord(record: DnsRecord, origin?: string): void {
    const next = this.clone();
    let base: string | undefined;
    if (origin !== undefined) {
      base = normalizeName(checkString(origin, 'zone'));
      checkName(base, 'zone origin');
      if (!next.has(base)) next.set(base, buildZone({ origin: base, records: [] }));
    }
    const fresh = normalizeRecord(record, base);
    if (base !== undefined && !inZone(fresh.name, base)) throw new Error(`${display(fresh.name)} is not in zone ${display(base)}`);
    const zone = zoneFor(next, fresh.name);
    if (!zone) throw new Error(`${display(fresh.name)} is not in any lab zone (give its zone to create one)`);
    const here = zone.records.get(fresh.name) ?? [];
    if (here.some((r) => sameRecord(r, fresh))) return; // already there: an RRset has no duplicates
    setAt(zone, fresh.name, [...here, fresh]);
    zone.serial = bump(zone.serial);
    this.commit(next);
  }

  /** Removes the records at `name` (only those of `type` when given); returns how many were removed. */
  removeRecords(name: string, type?: string): number {
    const owner = normalizeName(checkString(name, 'name'));
    const rtype = type === undefined ? undefined : checkType(type);
    const next = this.clone();
    const zone = zoneFor(next, owner);
    const here = zone?.records.get(owner);
    if (!zone || !here) return 0;
    const kept = rtype ? here.filter((r) => r.type !== rtype) : [];
    if (kept.length === here.length) return 0;
    setAt(zone, owner, kept);
    zone.serial = bump(zone.serial);
    this.commit(next);
    return here.length - kept.length;
  }

  /** The authoritative answer to a query for (`name`, `type`); `type` is a type mnemonic, `ANY` included. */
  lookup(name: string, type: string): LookupResult {
    const qtype = type.toUpperCase();
    let current = normalizeName(name);
    const first = this.zoneFor(current);
    if (!first) return { rcode: 'REFUSED', answers: [], authority: [] };
    const answers: ZoneRecord[] = [];
    const visited = new Set<string>();
    const result = (rcode: Rcode, authority: ZoneRecord[] = []): LookupResult => ({ rcode, answers, authority, zone: first.origin });
    for (;;) {
      const zone = this.zoneFor(current);
      // A CNAME pointing out of the lab: answer with the chain so far, the client resolves the rest elsewhere.
      if (!zone) return result('NOERROR');
      const here = served(zone, current);
      if (here.length === 0 && !nameExists(zone, current)) return result('NXDOMAIN', [soaOf(zone)]);
      if (qtype === 'ANY') {
        answers.push(...here);
        return result('NOERROR', here.length ? [] : [soaOf(zone)]);
      }
      const matching = here.filter((r) => r.type === qtype);
      if (matching.length) {
        answers.push(...matching);
        return result('NOERROR');
      }
      const cname = here.find((r): r is Extract<DnsRecord, { type: 'CNAME' }> => r.type === 'CNAME');
      if (!cname) return result('NOERROR', [soaOf(zone)]); // NODATA
      answers.push(cname);
      visited.add(current);
      // A loop (or an absurd chain) ends the answer where it is rather than failing the query.
      if (visited.has(cname.domain) || visited.size >= MAX_CNAME_CHAIN) return result('NOERROR');
      current = cname.domain;
    }
  }

  private zoneFor(name: string): Zone | undefined {
    return zoneFor(this.zones, name);
  }

  private clone(): Map<string, Zone> {
    const copy = new Map<string, Zone>();
    for (const [origin, zone] of this.zones) {
      copy.set(origin, { ...zone, soa: { ...zone.soa }, records: new Map([...zone.records].map(([n, rs]) => [n, [...rs]])) });
    }
    return copy;
  }

  /** Checks the rules that span records and zones, then makes `next` the current state. */
  private commit(next: Map<string, Zone>): void {
    for (const zone of next.values()) {
      for (const [name, records] of zone.records) {
        const owner = zoneFor(next, name);
        // Only a more specific zone can take a name from its zone; its records would then never be served.
        if (owner && owner !== zone) {
          throw new Error(`zone ${display(owner.origin)} would hide ${display(name)} of zone ${display(zone.origin)}`);
        }
        // RFC 1034 §3.6.2 / RFC 2181 §10.1: a CNAME is the only data at its name, and never at an apex.
        if (records.some((r) => r.type === 'CNAME')) {
          if (name === zone.origin) throw new Error(`CNAME at the apex of ${display(name)} (it would hide the SOA)`);
          if (records.length > 1) throw new Error(`${display(name)} has a CNAME and other records`);
        }
      }
    }
    this.zones = next;
  }
}

function zoneFor(zones: Map<string, Zone>, name: string): Zone | undefined {
  let best: Zone | undefined;
  for (const zone of zones.values()) {
    if (inZone(name, zone.origin) && (!best || zone.origin.length > best.origin.length)) best = zone;
  }
  return best;
}

function setAt(zone: Zone, name: string, records: DnsRecord[]): void {
  if (records.length) zone.records.set(name, records);
  else zone.records.delete(name);
}

/** A name exists if it has records, is the apex, or has descendants in the zone (an empty non-terminal, RFC 8020). */
function nameExists(zone: Zone, name: string): boolean {
  if (name === zone.origin) return true;
  for (const owner of zone.records.keys()) if (owner.endsWith('.' + name)) return true;
  return false;
}

/** The records served at `name`: configured ones plus the synthesized SOA/NS at the apex, TTLs filled in. */
function served(zone: Zone, name: string): ZoneRecord[] {
  const records: ZoneRecord[] = (zone.records.get(name) ?? []).map((r) => ({ ...r, ttl: r.ttl ?? DEFAULT_TTL }));
  if (name === zone.origin) {
    const soa = soaOf(zone);
    records.unshift(soa);
    if (!records.some((r) => r.type === 'NS')) records.push({ name, type: 'NS', ns: soa.primary, ttl: soa.ttl });
  }
  return records;
}

function soaOf(zone: Zone): SoaRecord {
  const apexNs = zone.records.get(zone.origin)?.find((r) => r.type === 'NS');
  const fields: SoaFields = {
    primary: zone.soa.primary ?? (apexNs?.type === 'NS' ? apexNs.ns : zone.origin ? `ns.${zone.origin}` : 'ns'),
    admin: zone.soa.admin ?? (zone.origin ? `hostmaster.${zone.origin}` : 'hostmaster'),
    refresh: zone.soa.refresh ?? SOA_DEFAULTS.refresh,
    retry: zone.soa.retry ?? SOA_DEFAULTS.retry,
    expiration: zone.soa.expiration ?? SOA_DEFAULTS.expiration,
    minimum: zone.soa.minimum ?? SOA_DEFAULTS.minimum,
    serial: zone.serial,
  };
  // RFC 2308 §3: the SOA TTL bounds how long a negative answer is cached, so it is the SOA minimum.
  return { name: zone.origin, type: 'SOA', ttl: fields.minimum, ...fields };
}

function bump(serial: number): number {
  return (serial + 1) >>> 0 || 1; // 32-bit serial arithmetic (RFC 1982), skipping 0
}

function buildZone(config: ZoneConfig): Zone {
  if (!config || typeof config !== 'object') throw new Error('a zone must be an object with origin and records');
  const origin = normalizeName(checkString(config.origin, 'zone origin'));
  checkName(origin, 'zone origin');
  const soa = config.soa ?? {};
  if (typeof soa !== 'object') throw new Error(`zone ${display(origin)}: soa must be an object`);
  const fields: NonNullable<ZoneConfig['soa']> = {};
  for (const key of ['primary', 'admin'] as const) {
    const value = soa[key];
    if (value !== undefined) fields[key] = checkTarget(value, `SOA ${key}`);
  }
  for (const key of ['serial', 'refresh', 'retry', 'expiration', 'minimum'] as const) {
    const value = soa[key];
    if (value !== undefined) fields[key] = checkUint(value, `SOA ${key}`, 0xffffffff);
  }
  if (!Array.isArray(config.records)) throw new Error(`zone ${display(origin)}: records must be an array`);
  const zone: Zone = { origin, soa: fields, serial: fields.serial ?? SOA_DEFAULTS.serial, records: new Map() };
  for (const raw of config.records) {
    const record = normalizeRecord(raw, origin);
    if (!inZone(record.name, origin)) throw new Error(`${display(record.name)} is not in zone ${display(origin)}`);
    const here = zone.records.get(record.name) ?? [];
    if (!here.some((r) => sameRecord(r, record))) zone.records.set(record.name, [...here, record]);
  }
  return zone;
}

/**
 * Validates a record (it may come from JSON over the control channel) and returns it normalized.
 * `origin`, when known, lets `@` stand for the zone apex.
 */
export function normalizeRecord(raw: DnsRecord, origin?: string): DnsRecord {
  if (!raw || typeof raw !== 'object') throw new Error('a record must be an object');
  const rawName = checkString(raw.name, 'record name');
  if (rawName === '@' && origin === undefined) throw new Error('record name @ needs a zone');
  const name = rawName === '@' && origin !== undefined ? origin : normalizeName(rawName);
  checkName(name, 'record name');
  const type = checkType(raw.type);
  const what = `${display(name)} ${type}`;
  const ttl = raw.ttl === undefined ? {} : { ttl: checkUint(raw.ttl, `${what} ttl`, MAX_TTL) };
  switch (raw.type) {
    case 'A':
      if (typeof raw.address !== 'string' || !isIPv4(raw.address)) throw new Error(`${what}: invalid IPv4 address ${JSON.stringify(raw.address)}`);
      return { name, type: 'A', address: raw.address, ...ttl };
    case 'AAAA':
      if (typeof raw.address !== 'string' || !isIPv6(raw.address)) throw new Error(`${what}: invalid IPv6 address ${JSON.stringify(raw.address)}`);
      return { name, type: 'AAAA', address: raw.address.toLowerCase(), ...ttl };
    case 'MX':
      return { name, type: 'MX', priority: checkUint(raw.priority, `${what} priority`, 0xffff), exchange: checkTarget(raw.exchange, `${what} exchange`), ...ttl };
    case 'TXT':
      return { name, type: 'TXT', data: checkString(raw.data, `${what} data`), ...ttl };
    case 'CNAME':
    case 'PTR':
      return { name, type: raw.type, domain: checkTarget(raw.domain, `${what} domain`), ...ttl };
    case 'NS':
      return { name, type: 'NS', ns: checkTarget(raw.ns, `${what} ns`), ...ttl };
    case 'TLSA': {
      const usage = checkUint(raw.usage, `${what} usage`, 0xff);
      const selector = checkUint(raw.selector, `${what} selector`, 0xff);
      const matchingType = checkUint(raw.matchingType, `${what} matchingType`, 0xff);
      return { name, type: 'TLSA', usage, selector, matchingType, data: checkTlsaData(raw.data, matchingType, what), ...ttl };
    }
    default:
      throw new Error(`${what}: unsupported record type`);
  }
}

/** Octets of the digest a TLSA matching type names (RFC 6698 §2.1.3): 1 is SHA2-256, 2 is SHA2-512. */
const TLSA_DIGEST_OCTETS: Record<number, number> = { 1: 32, 2: 64 };

/** TLSA certificate association data: hex (RFC 6698 §2.2), returned lower-case. */
function checkTlsaData(value: unknown, matchingType: number, what: string): string {
  const hex = checkString(value, `${what} data`).toLowerCase();
  if (hex.length === 0 || hex.length % 2 !== 0 || !/^[0-9a-f]+$/.test(hex)) {
    throw new Error(`${what} data must be a non-empty, even-length hex string, got ${JSON.stringify(value)}`);
  }
  const octets = TLSA_DIGEST_OCTETS[matchingType];
  if (octets !== undefined && hex.length !== octets * 2) {
    throw new Error(`${what} data: matching type ${matchingType} is a ${octets}-octet digest, got ${hex.length / 2} octets`);
  }
  return hex;
}

/**
 * Two records with the same owner, type and data (the TTL does not count). `normalizeRecord` builds every record
 * with its fields in one order and its data in one case (TLSA hex is lower-cased), so the JSON text compares them.
 */
function sameRecord(a: DnsRecord, b: DnsRecord): boolean {
  const { ttl: _a, ...restA } = a;
  const { ttl: _b, ...restB } = b;
  return JSON.stringify(restA) === JSON.stringify(restB);
}

function dedupe(records: DnsRecord[]): DnsRecord[] {
  return records.filter((r, i) => records.findIndex((s) => sameRecord(r, s)) === i);
}

function checkType(type: unknown): DnsRecord['type'] {
  const upper = typeof type === 'string' ? type.toUpperCase() : '';
  if (upper === 'SOA') throw new Error('SOA records are synthesized per zone; change them with the zone configuration');
  if (!RECORD_TYPES.includes(upper as RecordType)) throw new Error(`unsupported record type ${JSON.stringify(type)}`);
  return upper as DnsRecord['type'];
}

function checkString(value: unknown, what: string): string {
  if (typeof value !== 'string') throw new Error(`${what} must be a string, got ${JSON.stringify(value)}`);
  return value;
}

function checkUint(value: unknown, what: string, max: number): number {
  if (typeof value !== 'number' || !Number.isInteger(value) || value < 0 || value > max) {
    throw new Error(`${what} must be an integer from 0 to ${max}, got ${JSON.stringify(value)}`);
  }
  return value;
}

/** A domain name a record points at; the root is kept as ".". */
function checkTarget(value: unknown, what: string): string {
  const name = normalizeName(checkString(value, what));
  checkName(name, what);
  return name || '.';
}

/** Wire-format limits (RFC 1035 §2.3.4), and ASCII only: names are encoded byte per character. */
function checkName(name: string, what: string): void {
  if (name === '') return; // the root
  if (name.length > 253) throw new Error(`${what} ${name} is longer than 253 characters`);
  for (const label of name.split('.')) {
    if (label.length === 0 || label.length > 63) throw new Error(`${what} ${JSON.stringify(name)} has an empty or over-long label`);
    if (!/^[\x21-\x7e]+$/.test(label)) throw new Error(`${what} ${JSON.stringify(name)} has characters other than printable ASCII (use punycode)`);
  }
}

function display(name: string): string {
  return name === '' ? '.' : name;
}
