// A mail DNS configuration checker, as a mail administrator's tool would run it: SPF (RFC 7208), DKIM key records
// (RFC 6376, RFC 8463), DMARC (RFC 7489), MX (RFC 5321 §5.1, RFC 7505) and forward-confirmed reverse DNS of the
// sending hosts. It is pure over zone data (`ZoneConfig[]`): it runs on a planned lab (planLab's zones) without
// starting anything, and on a running lab's zones (the DNS node's `records` operation). It never asks any DNS
// server: every lookup is answered from the zones given, as the lab DNS would answer it. A name outside those zones
// is one the lab DNS refuses, so the checker says it cannot follow it rather than guessing.
import { createPublicKey } from 'node:crypto';
import { BlockList, isIP, isIPv4, isIPv6 } from 'node:net';
import type { DnsRecord, ZoneConfig } from '../../shared/config.js';
import type { LabDefinition, LabPlan } from '../topology.js';

export interface SendingHost {
  hostname: string;
  address: string;
  /** domains whose mail it sends (MAIL FROM / From:) */
  domains: string[];
}
export interface DkimSelectorRef {
  domain: string;
  selector: string;
}
export interface MailDnsInput {
  zones: ZoneConfig[];
  sendingHosts: SendingHost[];
  signers: DkimSelectorRef[];
  labDomains: string[];
}
export type Severity = 'error' | 'warning' | 'info';
export interface Finding {
  severity: Severity;
  /** The record the finding is about, e.g. `sender.test TXT (SPF)`. */
  record: string;
  /** What is wrong and why it matters. */
  message: string;
  check: 'spf' | 'dkim' | 'dmarc' | 'mx' | 'ptr';
}

// ---------------------------------------------------------------------------------------------------------------
// Zone data as a resolver

type Rdata = DnsRecord;
/** What a lookup in the zones gives: records, or the node:dns error code a resolver would throw. */
type Answer = { records: Rdata[] } | { error: 'ENOTFOUND' | 'ENODATA' | 'EREFUSED' };

/** Lower case, no trailing dot; the root is ''. */
function normalize(name: string): string {
  return name.trim().toLowerCase().replace(/\.+$/, '');
}

const MAX_CNAME_CHAIN = 16;

/** The zones, indexed by owner name, answering as the lab DNS does (src/dns/zone.ts): CNAMEs followed, no wildcards. */
class ZoneView {
  private readonly byName = new Map<string, Rdata[]>();
  private readonly origins: string[];

  constructor(zones: ZoneConfig[]) {
    this.origins = zones.map((z) => normalize(z.origin));
    for (const zone of zones) {
      const origin = normalize(zone.origin);
      for (const record of zone.records) {
        // `@` stands for the apex in hand-written zones; every other name is absolute.
        const name = record.name === '@' ? origin : normalize(record.name);
        const list = this.byName.get(name) ?? [];
        list.push({ ...record, name } as Rdata);
        this.byName.set(name, list);
      }
    }
  }

  inZones(name: string): boolean {
    const n = normalize(name);
    return this.origins.some((o) => n === o || n.endsWith('.' + o));
  }

  /** The records at exactly this name, no CNAME followed. */
  at(name: string): Rdata[] {
    return this.byName.get(normalize(name)) ?? [];
  }

  /** A name exists when it owns records, is a zone apex (SOA), or has names below it (an empty non-terminal). */
  private exists(name: string): boolean {
    if (this.byName.has(name) || this.origins.includes(name)) return true;
    for (const owner of this.byName.keys()) if (owner.endsWith('.' + name)) return true;
    return false;
  }

  lookup(name: string, type: DnsRecord['type']): Answer {
    let current = normalize(name);
    const seen = new Set<string>();
    for (;;) {
      if (!this.inZones(current)) return seen.size ? { error: 'ENODATA' } : { error: 'EREFUSED' };
      const here = this.at(current);
      const matching = here.filter((r) => r.type === type);
      if (matching.length) return { records: matching };
      const cname = here.find((r) => r.type === 'CNAME');
      if (!cname || type === 'CNAME') return this.exists(current) ? { error: 'ENODATA' } : { error: 'ENOTFOUND' };
      seen.add(current);
      const next = normalize(cname.domain);
      if (seen.has(next) || seen.size >= MAX_CNAME_CHAIN) return { error: 'ENODATA' };
      current = next;
    }
  }

  /** TXT strings at a name (empty when none or when it cannot be looked up). */
  txt(name: string): string[] {
    const answer = this.lookup(name, 'TXT');
    return 'records' in answer ? answer.records.map((r) => (r as Extract<DnsRecord, { type: 'TXT' }>).data) : [];
  }

  addresses(name: string): { addresses: string[]; error?: Extract<Answer, { error: string }>['error'] } {
    const a = this.lookup(name, 'A');
    const aaaa = this.lookup(name, 'AAAA');
    const addresses = [a, aaaa].flatMap((x) => ('records' in x ? x.records.map((r) => (r as { address: string }).address) : []));
    if (addresses.length) return { addresses };
    const error = 'error' in a ? a.error : 'ENODATA';
    return { addresses, error: 'error' in aaaa && aaaa.error === 'EREFUSED' ? 'EREFUSED' : error };
  }
}

/**
 * A resolver over zone data with the shape of `dns.promises.resolve(name, rrtype)` (what mailauth's `resolver` option
 * takes): answers from the zones, and rejects with an error whose `code` is ENOTFOUND (no such name), ENODATA (the
 * name has no record of that type) or EREFUSED (outside the zones, as the lab DNS answers). Nothing leaves the process.
 */
export function createZoneResolver(zones: ZoneConfig[]): (name: string, rrtype: string) => Promise<unknown[]> {
  const view = new ZoneView(zones);
  return async (name, rrtype) => {
    const type = rrtype.toUpperCase() as DnsRecord['type'];
    const answer = view.lookup(name, type);
    if ('error' in answer) {
      throw Object.assign(new Error(`query${type === 'A' ? 'A' : type} ${answer.error} ${name}`), { code: answer.error, hostname: name });
    }
    return answer.records.map((r) => {
      switch (r.type) {
        case 'A':
        case 'AAAA':
          return r.address;
        case 'MX':
          return { exchange: r.exchange === '.' ? '' : normalize(r.exchange), priority: r.priority };
        case 'TXT':
          // node:dns gives each TXT record as its character-strings; the lab keeps one string per record.
          return [r.data];
        case 'CNAME':
        case 'PTR':
          return normalize(r.domain);
        case 'NS':
          return normalize(r.ns);
        default:
          return r;
      }
    });
  };
}

// ---------------------------------------------------------------------------------------------------------------
// Addresses

/** The reverse-DNS name of an address: `d.c.b.a.in-addr.arpa`, or 32 nibbles under `ip6.arpa` (RFC 3596 §2.5). */
export function reverseName(address: string): string {
  if (isIPv4(address)) return `${address.split('.').reverse().join('.')}.in-addr.arpa`;
  return `${expandIPv6(address).replace(/:/g, '').split('').reverse().join('.')}.ip6.arpa`;
}

/** Eight groups of four hex digits (an embedded IPv4 tail converted). */
function expandIPv6(address: string): string {
  let text = address.toLowerCase();
  const v4 = /(\d+\.\d+\.\d+\.\d+)$/.exec(text);
  if (v4) {
    const o = v4[1]!.split('.').map(Number);
    text = text.slice(0, -v4[1]!.length) + `${((o[0]! << 8) | o[1]!).toString(16)}:${((o[2]! << 8) | o[3]!).toString(16)}`;
  }
  const [head, tail] = text.includes('::') ? text.split('::') : [text, undefined];
  const left = head ? head.split(':') : [];
  const right = tail ? tail.split(':') : [];
  const groups = tail === undefined ? left : [...left, ...Array<string>(8 - left.length - right.length).fill('0'), ...right];
  return groups.map((g) => g.padStart(4, '0')).join(':');
}

function inNetwork(ip: string, network: string, prefix: number): boolean {
  const family = isIPv4(ip) ? 'ipv4' : 'ipv6';
  if ((family === 'ipv4') !== isIPv4(network)) return false;
  const list = new BlockList();
  list.addSubnet(network, prefix, family);
  return list.check(ip, family);
}

// ---------------------------------------------------------------------------------------------------------------
// SPF (RFC 7208)

export type SpfResult = 'pass' | 'fail' | 'softfail' | 'neutral' | 'none' | 'permerror' | 'temperror';
type Qualifier = '+' | '-' | '~' | '?';
const QUALIFIER_RESULT: Record<Qualifier, SpfResult> = { '+': 'pass', '-': 'fail', '~': 'softfail', '?': 'neutral' };

type Mechanism =
  | { kind: 'all' }
  | { kind: 'include' | 'exists'; domain: string }
  | { kind: 'a' | 'mx'; domain?: string; v4: number; v6: number }
  | { kind: 'ptr'; domain?: string }
  | { kind: 'ip4' | 'ip6'; network: string; prefix: number };
interface Directive {
  qualifier: Qualifier;
  mechanism: Mechanism;
  text: string;
}
interface SpfRecord {
  directives: Directive[];
  redirect?: string;
  exp?: string;
}
type Parsed = { record: SpfRecord; errors: string[] };

/** The terms that cost a DNS lookup (RFC 7208 §4.6.4). */
const LOOKUP_TERMS = new Set(['include', 'a', 'mx', 'ptr', 'exists']);
const MAX_LOOKUPS = 10;
const MAX_VOID_LOOKUPS = 2;

const isSpf = (txt: string) => /^v=spf1( |$)/i.test(txt);

/** macro-string (RFC 7208 §7.1): literals and `%{letter digits r delimiters}`, `%%`, `%_`, `%-`. */
const MACRO_STRING = /^(?:[\x21-\x24\x26-\x7e]|%\{[slodiphcrtv]\d*r?[.\-+,/_=]*\}|%%|%_|%-)*$/i;

function checkDomainSpec(spec: string, term: string): string | undefined {
  if (!spec) return `"${term}" needs a domain`;
  if (!MACRO_STRING.test(spec)) return `"${term}": "${spec}" is not a valid domain-spec (a stray % or a bad macro, RFC 7208 §7.1)`;
  // domain-end: a macro, or a top label of letters/digits/dashes with a letter (RFC 7208 §7.1 and §4.6.1).
  const end = spec.replace(/\.$/, '');
  if (/%\{[^}]*\}$/.test(end)) return undefined;
  const top = end.split('.').pop() ?? '';
  if (!end.includes('.') || !/^(?=.*[a-z])[a-z0-9](?:[a-z0-9-]*[a-z0-9])?$/i.test(top)) return `"${term}": "${spec}" is not a fully qualified domain name`;
  return undefined;
}

function parseCidr(text: string | undefined, max: number, term: string, errors: string[]): number {
  if (text === undefined) return max;
  if (!/^(0|[1-9]\d{0,2})$/.test(text) || Number(text) > max) {
    errors.push(`"${term}": /${text} is not a prefix length from 0 to ${max}`);
    return max;
  }
  return Number(text);
}

/** Parses an SPF record's terms (RFC 7208 §4.6, §5, §6); every syntax error is listed, since each is a permerror. */
export function parseSpf(text: string): Parsed {
  const errors: string[] = [];
  const record: SpfRecord = { directives: [] };
  const terms = text.trim().split(/ +/).slice(1);
  for (const term of terms) {
    const modifier = /^([a-z][a-z0-9\-_.]*)=(.*)$/i.exec(term);
    if (modifier) {
      const name = modifier[1]!.toLowerCase();
      const value = modifier[2]!;
      if (name === 'redirect' || name === 'exp') {
        if (record[name] !== undefined) errors.push(`"${name}=" appears twice; RFC 7208 §6 allows it once`);
        const problem = checkDomainSpec(value, term);
        if (problem) errors.push(problem);
        record[name] = value;
      } else if (!MACRO_STRING.test(value)) {
        errors.push(`"${term}": the value of modifier ${name} is not a valid macro-string (RFC 7208 §7.1)`);
      }
      // Other modifiers are unknown and ignored (RFC 7208 §6).
      continue;
    }
    const m = /^([+\-~?]?)([a-z0-9]+)(.*)$/i.exec(term);
    if (!m) {
      errors.push(`"${term}" is neither a mechanism nor a modifier`);
      continue;
    }
    const qualifier = (m[1] || '+') as Qualifier;
    const name = m[2]!.toLowerCase();
    const rest = m[3]!;
    const arg = rest.startsWith(':') ? rest.slice(1) : undefined;
    const directive = (mechanism: Mechanism) => record.directives.push({ qualifier, mechanism, text: term });
    switch (name) {
      case 'all':
        if (rest) errors.push(`"${term}": all takes no argument`);
        else directive({ kind: 'all' });
        break;
      case 'include':
      case 'exists': {
        const problem = arg === undefined ? `"${term}": ${name} needs ":" and a domain` : checkDomainSpec(arg, term);
        if (problem) errors.push(problem);
        else directive({ kind: name, domain: arg! });
        break;
      }
      case 'a':
      case 'mx': {
        const parts = /^(?::([^/]*))?(?:\/(\d*))?(?:\/\/(\d*))?$/.exec(rest);
        if (!parts) {
          errors.push(`"${term}": expected ${name}[:domain][/ip4-cidr][//ip6-cidr]`);
          break;
        }
        const before = errors.length;
        const problem = parts[1] !== undefined ? checkDomainSpec(parts[1], term) : undefined;
        if (problem) errors.push(problem);
        const v4 = parseCidr(parts[2], 32, term, errors);
        const v6 = parseCidr(parts[3], 128, term, errors);
        if (errors.length === before) directive({ kind: name, ...(parts[1] !== undefined ? { domain: parts[1] } : {}), v4, v6 });
        break;
      }
      case 'ptr': {
        const problem = arg !== undefined ? checkDomainSpec(arg, term) : rest ? `"${term}": expected ptr[:domain]` : undefined;
        if (problem) errors.push(problem);
        else directive({ kind: 'ptr', ...(arg !== undefined ? { domain: arg } : {}) });
        break;
      }
      case 'ip4':
      case 'ip6': {
        const parts = arg === undefined ? null : /^([^/]+)(?:\/(.*))?$/.exec(arg);
        const ok = name === 'ip4' ? isIPv4 : isIPv6;
        if (!parts || !ok(parts[1]!)) {
          errors.push(`"${term}": ${name} needs an ${name === 'ip4' ? 'IPv4' : 'IPv6'} address`);
          break;
        }
        const before = errors.length;
        const prefix = parseCidr(parts[2], name === 'ip4' ? 32 : 128, term, errors);
        if (errors.length === before) directive({ kind: name, network: parts[1]!, prefix });
        break;
      }
      default:
        errors.push(`"${term}": unknown mechanism "${name}" (RFC 7208 §5 makes that a permerror)`);
    }
  }
  return { record, errors };
}

/** The SPF records at a name: the TXT strings starting with `v=spf1` (RFC 7208 §4.5). */
function spfRecordsAt(view: ZoneView, name: string): string[] {
  return view.txt(name).filter(isSpf);
}

/** The macro expansion of RFC 7208 §7 for the letters a lab check can know (s, l, o, d, i, h, v). */
function expand(spec: string, ctx: { ip: string; domain: string; sender: string; helo: string }): string {
  const [local, senderDomain] = ctx.sender.includes('@') ? [ctx.sender.slice(0, ctx.sender.lastIndexOf('@')), ctx.sender.slice(ctx.sender.lastIndexOf('@') + 1)] : ['postmaster', ctx.sender];
  const values: Record<string, string> = {
    s: ctx.sender,
    l: local || 'postmaster',
    o: senderDomain,
    d: ctx.domain,
    i: isIPv4(ctx.ip) ? ctx.ip : expandIPv6(ctx.ip).replace(/:/g, '').split('').join('.'),
    h: ctx.helo,
    v: isIPv4(ctx.ip) ? 'in-addr' : 'ip6',
    p: 'unknown',
  };
  return spec.replace(/%\{([a-z])(\d*)(r?)([.\-+,/_=]*)\}|%%|%_|%-/gi, (whole, letter: string | undefined, digits: string, reverse: string, delimiters: string) => {
    if (whole === '%%') return '%';
    if (whole === '%_') return ' ';
    if (whole === '%-') return '%20';
    let parts = (values[letter!.toLowerCase()] ?? '').split(new RegExp(`[${(delimiters || '.').replace(/[-\\\]]/g, '\\$&')}]`));
    if (reverse) parts = parts.reverse();
    if (digits) parts = parts.slice(-Number(digits));
    return parts.join('.');
  });
}

interface Evaluation {
  result: SpfResult;
  /** Why, when the result is not a plain match or no-match. */
  reason?: string;
}

/**
 * check_host() (RFC 7208 §4) for `ip` and `domain`, against the zones: the DNS-lookup and void-lookup limits of
 * §4.6.4 apply as a receiver applies them. Exported so tests can compare it with mailauth's evaluation.
 */
export function evaluateSpf(zones: ZoneConfig[], ip: string, domain: string, sender = `postmaster@${domain}`, helo = domain): Evaluation {
  return checkHost(new ZoneView(zones), ip, normalize(domain), { sender, helo, lookups: 0, voids: 0 }, 0);
}

interface EvalState {
  sender: string;
  helo: string;
  lookups: number;
  voids: number;
}

class SpfStop extends Error {
  constructor(readonly evaluation: Evaluation) {
    super(evaluation.reason);
  }
}

function checkHost(view: ZoneView, ip: string, domain: string, state: EvalState, depth: number): Evaluation {
  if (!view.inZones(domain)) return { result: 'temperror', reason: `${domain} is outside the lab zones (the lab DNS refuses it)` };
  const records = spfRecordsAt(view, domain);
  if (records.length === 0) return { result: 'none', reason: `${domain} has no SPF record` };
  if (records.length > 1) return { result: 'permerror', reason: `${domain} has ${records.length} SPF records` };
  const { record, errors } = parseSpf(records[0]!);
  if (errors.length) return { result: 'permerror', reason: `${domain}: ${errors[0]}` };
  const ctx = { ip, domain, sender: state.sender, helo: state.helo };
  // Each lookup-costing term counts before it is resolved; the 11th is a permerror (§4.6.4).
  const count = () => {
    if (++state.lookups > MAX_LOOKUPS) throw new SpfStop({ result: 'permerror', reason: `more than ${MAX_LOOKUPS} DNS lookups` });
  };
  const isVoid = (answer: { error?: string }) => {
    if (answer.error === 'EREFUSED') throw new SpfStop({ result: 'temperror', reason: 'a lookup outside the lab zones' });
    if (answer.error && ++state.voids > MAX_VOID_LOOKUPS) throw new SpfStop({ result: 'permerror', reason: `more than ${MAX_VOID_LOOKUPS} void lookups` });
  };
  const family = isIPv4(ip) ? 4 : 6;
  const matchesHost = (name: string, v4: number, v6: number) => {
    const found = view.addresses(name);
    isVoid(found);
    return found.addresses.some((a) => (isIPv4(a) ? family === 4 && inNetwork(ip, a, v4) : family === 6 && inNetwork(ip, a, v6)));
  };
  try {
    for (const { qualifier, mechanism } of record.directives) {
      let match = false;
      switch (mechanism.kind) {
        case 'all':
          match = true;
          break;
        case 'ip4':
        case 'ip6':
          match = inNetwork(ip, mechanism.network, mechanism.prefix);
          break;
        case 'a':
          count();
          match = matchesHost(expand(mechanism.domain ?? domain, ctx), mechanism.v4, mechanism.v6);
          break;
        case 'mx': {
          count();
          const mx = view.lookup(expand(mechanism.domain ?? domain, ctx), 'MX');
          isVoid('error' in mx ? mx : {});
          const exchanges = 'records' in mx ? mx.records.map((r) => normalize((r as Extract<DnsRecord, { type: 'MX' }>).exchange)).filter(Boolean) : [];
          // §4.6.4: more than 10 MX names is a permerror.
          if (exchanges.length > MAX_LOOKUPS) return { result: 'permerror', reason: `${exchanges.length} MX names, more than ${MAX_LOOKUPS}` };
          match = exchanges.some((x) => matchesHost(x, mechanism.v4, mechanism.v6));
          break;
        }
        case 'ptr': {
          count();
          const ptr = view.lookup(reverseName(ip), 'PTR');
          const target = normalize(expand(mechanism.domain ?? domain, ctx));
          const names = 'records' in ptr ? ptr.records.slice(0, MAX_LOOKUPS).map((r) => normalize((r as { domain: string }).domain)) : [];
          match = names.some((n) => (n === target || n.endsWith('.' + target)) && view.addresses(n).addresses.includes(ip));
          break;
        }
        case 'exists': {
          count();
          const a = view.lookup(expand(mechanism.domain, ctx), 'A');
          isVoid('error' in a ? a : {});
          match = 'records' in a;
          break;
        }
        case 'include': {
          // No loop guard needed: every include costs a lookup, so a loop ends at the 11th (§4.6.4).
          count();
          const inner = checkHost(view, ip, normalize(expand(mechanism.domain, ctx)), state, depth + 1);
          // §5.2: an include that errs or finds no record is an error of the including record.
          if (inner.result === 'temperror') return inner;
          if (inner.result === 'permerror' || inner.result === 'none') return { result: 'permerror', reason: `include:${mechanism.domain}: ${inner.reason ?? inner.result}` };
          match = inner.result === 'pass';
          break;
        }
      }
      if (match) return { result: QUALIFIER_RESULT[qualifier], reason: `matched ${qualifier === '+' ? '' : qualifier}${mechanismText(mechanism)} of ${domain}` };
    }
    // §6.1: redirect applies only when nothing matched (and an `all` always matches, so it is ignored then).
    if (record.redirect !== undefined) {
      count();
      const target = normalize(expand(record.redirect, ctx));
      const inner = checkHost(view, ip, target, state, depth + 1);
      return inner.result === 'none' ? { result: 'permerror', reason: `redirect=${target} has no SPF record` } : inner;
    }
    return { result: 'neutral', reason: `nothing in ${domain}'s record matched` };
  } catch (err) {
    // A limit of §4.6.4 ends the whole evaluation, not just the include it was reached in.
    if (err instanceof SpfStop && depth === 0) return err.evaluation;
    throw err;
  }
}

function mechanismText(m: Mechanism): string {
  switch (m.kind) {
    case 'all':
      return 'all';
    case 'ip4':
    case 'ip6':
      return `${m.kind}:${m.network}/${m.prefix}`;
    case 'include':
    case 'exists':
      return `${m.kind}:${m.domain}`;
    default:
      return m.domain ? `${m.kind}:${m.domain}` : m.kind;
  }
}

/**
 * The worst-case DNS lookups of a domain's SPF evaluation (§4.6.4), through includes and redirects found in the
 * zones, and the void lookups among them that the zones already show (a target with no records). Terms with macros
 * are counted but not followed: their target depends on the message.
 */
function countLookups(view: ZoneView, domain: string, trail: string[]): { lookups: number; voids: string[]; loops: string[]; outside: string[]; missing: string[] } {
  const total = { lookups: 0, voids: [] as string[], loops: [] as string[], outside: [] as string[], missing: [] as string[] };
  const records = spfRecordsAt(view, domain);
  if (records.length !== 1) return total;
  const { record } = parseSpf(records[0]!);
  const hasMacro = (s: string) => s.includes('%');
  const follow = (kind: 'include' | 'redirect', target: string) => {
    const name = normalize(target);
    if (trail.includes(name)) {
      total.loops.push([...trail, name].join(' → '));
      return;
    }
    if (!view.inZones(name)) {
      total.outside.push(name);
      return;
    }
    if (spfRecordsAt(view, name).length === 0) {
      // §5.2 and §6.1: an include or redirect of a domain without SPF is a permerror, whoever is evaluated.
      total.missing.push(`${kind}${kind === 'include' ? ':' : '='}${name} (in ${trail[trail.length - 1]})`);
      if ('error' in view.lookup(name, 'TXT')) total.voids.push(`${kind}:${name}`);
    }
    const inner = countLookups(view, name, [...trail, name]);
    total.lookups += inner.lookups;
    total.voids.push(...inner.voids);
    total.loops.push(...inner.loops);
    total.outside.push(...inner.outside);
    total.missing.push(...inner.missing);
  };
  for (const { mechanism } of record.directives) {
    if (!LOOKUP_TERMS.has(mechanism.kind)) continue;
    total.lookups++;
    const target = 'domain' in mechanism ? (mechanism.domain ?? domain) : domain;
    if (hasMacro(target)) continue;
    if (mechanism.kind === 'include') follow('include', target);
    else if (mechanism.kind === 'a' && view.inZones(target) && view.addresses(target).addresses.length === 0) total.voids.push(`a:${target}`);
    else if (mechanism.kind === 'mx' && view.inZones(target) && 'error' in view.lookup(target, 'MX')) total.voids.push(`mx:${target}`);
  }
  if (record.redirect !== undefined && !record.directives.some((d) => d.mechanism.kind === 'all')) {
    total.lookups++;
    if (!hasMacro(record.redirect)) follow('redirect', record.redirect);
  }
  return total;
}

function checkSpf(view: ZoneView, input: MailDnsInput, findings: Finding[]): void {
  const add = (severity: Severity, domain: string, message: string) => findings.push({ severity, record: `${domain} TXT (SPF)`, message, check: 'spf' });
  const sendersOf = new Map<string, SendingHost[]>();
  for (const host of input.sendingHosts) for (const d of host.domains) sendersOf.set(normalize(d), [...(sendersOf.get(normalize(d)) ?? []), host]);
  const domains = [...new Set([...input.labDomains.map(normalize), ...sendersOf.keys()])];
  for (const domain of domains) {
    const records = spfRecordsAt(view, domain);
    const senders = sendersOf.get(domain) ?? [];
    if (records.length === 0) {
      if (senders.length) add('warning', domain, `no SPF record, though ${senders.map((h) => h.hostname).join(', ')} send${senders.length === 1 ? 's' : ''} its mail: receivers get SPF "none" and cannot tell its hosts from forgers`);
      continue;
    }
    if (records.length > 1) {
      add('error', domain, `${records.length} SPF records ("${records.join('", "')}"); more than one is a permerror (RFC 7208 §4.5), so SPF fails for every sender`);
      continue;
    }
    const { record, errors } = parseSpf(records[0]!);
    for (const e of errors) add('error', domain, `syntax: ${e}; receivers get permerror (RFC 7208 §4.6)`);
    if (errors.length) continue;
    const counted = countLookups(view, domain, [domain]);
    if (counted.lookups > MAX_LOOKUPS) add('error', domain, `${counted.lookups} DNS lookups, more than the ${MAX_LOOKUPS} RFC 7208 §4.6.4 allows (receivers get permerror)`);
    for (const missing of counted.missing) add('error', domain, `${missing} points to a domain without an SPF record, which is a permerror (RFC 7208 §5.2, §6.1)`);
    for (const loop of counted.loops) add('error', domain, `include/redirect loop: ${loop}`);
    if (counted.voids.length > MAX_VOID_LOOKUPS) add('warning', domain, `${counted.voids.length} void lookups (${counted.voids.join(', ')}), more than the ${MAX_VOID_LOOKUPS} RFC 7208 §4.6.4 recommends; receivers may give permerror`);
    for (const name of counted.outside) add('info', domain, `${name} is outside the lab zones: its lookups are not counted, and the lab DNS refuses it (temperror at a lab receiver)`);
    const all = record.directives.find((d) => d.mechanism.kind === 'all');
    if (all?.qualifier === '+') add('warning', domain, `"${all.text}" lets every host on the Internet pass SPF for ${domain}`);
    if (record.directives.some((d) => d.mechanism.kind === 'ptr')) add('warning', domain, '"ptr" is slow and unreliable; RFC 7208 §5.5 says it SHOULD NOT be used');
    for (const host of senders) {
      const evaluation = checkHost(view, host.address, domain, { sender: `postmaster@${domain}`, helo: host.hostname, lookups: 0, voids: 0 }, 0);
      if (evaluation.result !== 'pass') {
        add('error', domain, `${host.hostname} (${host.address}) sends ${domain}'s mail but SPF gives ${evaluation.result} for ${host.address}${evaluation.reason ? ` (${evaluation.reason})` : ''}`);
      }
    }
  }
}

// ---------------------------------------------------------------------------------------------------------------
// Tag lists (DKIM key records, DMARC records): `tag=value; tag=value`, RFC 6376 §3.2

function parseTags(text: string): { tags: [string, string][]; errors: string[] } {
  const tags: [string, string][] = [];
  const errors: string[] = [];
  const seen = new Set<string>();
  for (const part of text.split(';')) {
    if (!part.trim()) continue;
    const eq = part.indexOf('=');
    const name = (eq < 0 ? part : part.slice(0, eq)).trim();
    if (eq < 0 || !/^[a-z][a-z0-9_]*$/i.test(name)) {
      errors.push(`"${part.trim()}" is not a tag=value pair`);
      continue;
    }
    if (seen.has(name)) errors.push(`tag ${name}= appears twice`);
    seen.add(name);
    tags.push([name, part.slice(eq + 1).trim()]);
  }
  return { tags, errors };
}

// ---------------------------------------------------------------------------------------------------------------
// DKIM key records (RFC 6376 §3.6.1, RFC 8463)

function checkDkim(view: ZoneView, input: MailDnsInput, findings: Finding[]): void {
  const add = (severity: Severity, name: string, message: string) => findings.push({ severity, record: `${name} TXT (DKIM)`, message, check: 'dkim' });
  const used = new Set<string>();
  for (const signer of input.signers) {
    const name = normalize(`${signer.selector}._domainkey.${signer.domain}`);
    used.add(name);
    const records = view.txt(name);
    if (records.length === 0) {
      add('error', name, `no key record for selector "${signer.selector}" of ${signer.domain}: every signature with s=${signer.selector} d=${signer.domain} fails (RFC 6376 §6.1.2)`);
      continue;
    }
    if (records.length > 1) add('warning', name, `${records.length} TXT records; a verifier may use either (RFC 6376 §3.6.2.2), publish one key per selector`);
    for (const text of records) checkKeyRecord(text, (severity, message) => add(severity, name, message));
  }
  // Selectors published under a lab domain that no signer uses: an old key left behind after a rotation, or a typo.
  const labDomains = input.labDomains.map(normalize);
  for (const zone of input.zones) {
    for (const record of zone.records) {
      const name = normalize(record.name);
      const m = /^(.+)\._domainkey\.(.+)$/.exec(name);
      if (record.type !== 'TXT' || !m || used.has(name) || !labDomains.includes(m[2]!)) continue;
      used.add(name);
      add('info', name, `selector "${m[1]}" of ${m[2]} is published but no signer uses it (an old key after a rotation can be revoked with an empty p=)`);
    }
  }
}

function checkKeyRecord(text: string, add: (severity: Severity, message: string) => void): void {
  const { tags, errors } = parseTags(text);
  for (const e of errors) add('error', `${e}; verifiers reject the key record (RFC 6376 §3.2)`);
  const tag = new Map(tags);
  const v = tag.get('v');
  if (v !== undefined && (v !== 'DKIM1' || tags[0]![0] !== 'v')) add('error', `v=${v}: when present it must be the first tag and be DKIM1 (RFC 6376 §3.6.1)`);
  const k = (tag.get('k') ?? 'rsa').toLowerCase();
  if (k !== 'rsa' && k !== 'ed25519') add('error', `k=${k} is not a key type verifiers know (rsa, ed25519)`);
  const p = tag.get('p');
  if (p === undefined) return add('error', 'no p= tag: a key record must carry the public key (RFC 6376 §3.6.1)');
  const base64 = p.replace(/\s+/g, '');
  if (base64 === '') return add('error', 'p= is empty: the key is revoked (RFC 6376 §3.6.1), every signature with this selector fails');
  if (!/^[A-Za-z0-9+/]+={0,2}$/.test(base64) || base64.length % 4 !== 0) return add('error', 'p= is not base64');
  const der = Buffer.from(base64, 'base64');
  if (k === 'ed25519') {
    // RFC 8463 §4: the raw 32-octet public key, not an SPKI.
    if (der.length !== 32) add('error', `p= holds ${der.length} bytes; an Ed25519 key is 32 (RFC 8463 §4)`);
    return;
  }
  if (k !== 'rsa') return;
  let bits: number | undefined;
  for (const type of ['spki', 'pkcs1'] as const) {
    try {
      const key = createPublicKey({ key: der, format: 'der', type });
      if (key.asymmetricKeyType === 'rsa') bits = key.asymmetricKeyDetails?.modulusLength;
      else return add('error', `p= is a ${key.asymmetricKeyType} key, not the RSA key k=rsa says`);
      break;
    } catch {
      // not this encoding; try the next
    }
  }
  if (bits === undefined) return add('error', 'p= does not hold an RSA public key (a DER SubjectPublicKeyInfo)');
  if (bits < 1024) add('error', `RSA key of ${bits} bits: verifiers must not accept keys under 1024 bits (RFC 8301 §3.2)`);
  else if (bits < 2048) add('warning', `RSA key of ${bits} bits; RFC 8301 §3.2 says signers should use at least 2048`);
}

// ---------------------------------------------------------------------------------------------------------------
// DMARC (RFC 7489)

function checkDmarc(view: ZoneView, input: MailDnsInput, findings: Finding[]): void {
  const labDomains = input.labDomains.map(normalize);
  const sending = [...new Set(input.sendingHosts.flatMap((h) => h.domains.map(normalize)))];
  for (const domain of sending) {
    const name = `_dmarc.${domain}`;
    const add = (severity: Severity, message: string) => findings.push({ severity, record: `${name} TXT (DMARC)`, message, check: 'dmarc' });
    // §6.6.3: TXT records not starting with v=DMARC1 are discarded; the rest must be exactly one.
    // (Compared case-insensitively here, so a miscased "v=dmarc1" is reported as malformed rather than ignored.)
    const records = view.txt(name).filter((t) => /^v\s*=\s*dmarc1/i.test(t.trim()));
    if (records.length === 0) {
      const misplaced = view.txt(name).find((t) => /v\s*=\s*DMARC1/i.test(t));
      if (misplaced !== undefined) {
        add('error', `"${misplaced}" does not start with v=DMARC1, so receivers discard it (RFC 7489 §6.6.3) and ${domain} has no DMARC policy`);
        continue;
      }
      // §6.6.3: with none at the domain, receivers look at the organizational domain's record. Taken as the last two
      // labels: the lab's domains sit right under .test, and no public suffix list is consulted here.
      const org = domain.split('.').slice(-2).join('.');
      if (org !== domain && view.txt(`_dmarc.${org}`).some((t) => /^v\s*=\s*DMARC1/.test(t.trim()))) {
        add('info', `no DMARC record at ${name}; receivers apply ${org}'s (its sp= or p=, RFC 7489 §6.6.3)`);
        continue;
      }
      add('warning', `no DMARC record for ${domain}, which sends mail: receivers apply no DMARC policy, so forged From: ${domain} is not refused`);
      continue;
    }
    if (records.length > 1) {
      add('error', `${records.length} DMARC records; RFC 7489 §6.6.3 says receivers then apply no policy`);
      continue;
    }
    checkDmarcRecord(view, domain, records[0]!, labDomains, add);
  }
}

const POLICIES = ['none', 'quarantine', 'reject'];

function checkDmarcRecord(view: ZoneView, domain: string, text: string, labDomains: string[], add: (severity: Severity, message: string) => void): void {
  const malformed = (message: string) => add('error', `${message}; the record is malformed, so receivers may apply no policy (RFC 7489 §6.6.3)`);
  const { tags, errors } = parseTags(text);
  for (const e of errors) malformed(e);
  // §6.4: the version, exactly "DMARC1" (case-sensitive in the ABNF), is the first tag.
  if (tags[0]?.[0] !== 'v' || tags[0][1] !== 'DMARC1') malformed(`the record must start with v=DMARC1, not "${text.slice(0, 20)}"`);
  const tag = new Map(tags.map(([k, v]) => [k.toLowerCase(), v]));
  const p = tag.get('p');
  if (p === undefined) malformed('no p= tag: the policy is required (RFC 7489 §6.3)');
  else if (!POLICIES.includes(p.toLowerCase())) malformed(`p=${p} is not a policy: none, quarantine or reject (RFC 7489 §6.3)`);
  const sp = tag.get('sp');
  if (sp !== undefined && !POLICIES.includes(sp.toLowerCase())) malformed(`sp=${sp} is not a policy: none, quarantine or reject (RFC 7489 §6.3)`);
  const pct = tag.get('pct');
  if (pct !== undefined && !(/^\d{1,3}$/.test(pct) && Number(pct) <= 100)) malformed(`pct=${pct} is not a whole number from 0 to 100 (RFC 7489 §6.3)`);
  for (const align of ['adkim', 'aspf']) {
    const value = tag.get(align);
    if (value !== undefined && !/^[rs]$/i.test(value)) malformed(`${align}=${value} must be r (relaxed) or s (strict) (RFC 7489 §6.3)`);
  }
  const ri = tag.get('ri');
  if (ri !== undefined && !/^\d+$/.test(ri)) malformed(`ri=${ri} is not a number of seconds`);
  const fo = tag.get('fo');
  if (fo !== undefined && !/^[01ds](:[01ds])*$/i.test(fo)) malformed(`fo=${fo} must be 0, 1, d or s, separated by colons (RFC 7489 §6.3)`);
  for (const key of ['rua', 'ruf']) {
    const value = tag.get(key);
    if (value === undefined) continue;
    for (const uri of value.split(',').map((u) => u.trim())) {
      // §6.4: dmarc-uri = URI ["!" size]; mailto: is the one scheme reports are sent to.
      const m = /^mailto:([^@\s!]+)@([^\s!]+?)(?:!\d+[kmgt]?)?$/i.exec(uri);
      if (!m) {
        malformed(`${key}=${uri} is not a mailto: URI (RFC 7489 §6.4)`);
        continue;
      }
      const target = normalize(m[2]!);
      if (target === domain || target.endsWith('.' + domain)) continue;
      if (!labDomains.includes(target)) {
        add('warning', `${key} sends reports to ${target}, outside the lab's domains: a report receiver in another domain must publish ${domain}._report._dmarc.${target} to accept them (RFC 7489 §7.1)`);
      } else if (!view.txt(`${domain}._report._dmarc.${target}`).some((t) => /^v=DMARC1/.test(t.trim()))) {
        add('warning', `${key} sends reports to ${target}, which does not authorize them: ${domain}._report._dmarc.${target} TXT "v=DMARC1" is missing (RFC 7489 §7.1)`);
      }
    }
  }
}

// ---------------------------------------------------------------------------------------------------------------
// MX (RFC 5321 §5.1, RFC 7505)

function checkMx(view: ZoneView, input: MailDnsInput, findings: Finding[]): void {
  const sending = new Set(input.sendingHosts.flatMap((h) => h.domains.map(normalize)));
  for (const domain of input.labDomains.map(normalize)) {
    const add = (severity: Severity, message: string) => findings.push({ severity, record: `${domain} MX`, message, check: 'mx' });
    const mx = view.at(domain).filter((r): r is Extract<DnsRecord, { type: 'MX' }> => r.type === 'MX');
    if (mx.length === 0) {
      if (view.addresses(domain).addresses.length) add('info', `no MX: mail goes to ${domain}'s own address (the implicit MX, RFC 5321 §5.1)`);
      else add('warning', `no MX and no address record: mail to ${domain} cannot be delivered (RFC 5321 §5.1)`);
      continue;
    }
    const isNull = (r: { exchange: string }) => normalize(r.exchange) === '';
    if (mx.some(isNull)) {
      if (mx.length > 1) add('error', `a null MX ("0 .") next to ${mx.length - 1} other MX record(s); RFC 7505 §3 says it must be the only one, so senders cannot tell whether ${domain} takes mail`);
      if (sending.has(domain)) add('info', `${domain} publishes a null MX yet sends mail: bounces to it cannot be delivered, and receivers may refuse its MAIL FROM with 550 5.7.27 (RFC 7505 §4.2)`);
      continue;
    }
    for (const record of mx) {
      const target = normalize(record.exchange);
      if (isIP(target)) {
        add('error', `MX ${record.priority} ${target} is an address; an MX names a host (RFC 5321 §5.1)`);
        continue;
      }
      if (!view.inZones(target)) {
        add('warning', `MX ${record.priority} ${target} is outside the lab zones: the lab DNS refuses it, so no lab MTA can deliver there`);
        continue;
      }
      const cname = view.at(target).find((r) => r.type === 'CNAME');
      const found = view.addresses(target);
      if (!found.addresses.length) {
        add('error', `MX ${record.priority} ${target} has no A or AAAA record (${found.error === 'ENOTFOUND' ? 'no such name' : 'no address'}): mail for ${domain} cannot be delivered to it`);
      } else if (cname) {
        add('warning', `MX ${record.priority} ${target} is an alias (CNAME to ${normalize((cname as { domain: string }).domain)}); RFC 5321 §5.1 and RFC 2181 §10.3 say an MX must name a host's own address records`);
      }
    }
  }
}

// ---------------------------------------------------------------------------------------------------------------
// PTR / forward-confirmed reverse DNS of the sending hosts

function checkPtr(view: ZoneView, input: MailDnsInput, findings: Finding[]): void {
  for (const host of input.sendingHosts) {
    const name = reverseName(host.address);
    const add = (severity: Severity, message: string) => findings.push({ severity, record: `${name} PTR`, message, check: 'ptr' });
    const answer = view.lookup(name, 'PTR');
    if (!('records' in answer)) {
      add('error', `no PTR for ${host.hostname}'s address ${host.address}: many receivers refuse or distrust mail from an address without reverse DNS`);
      continue;
    }
    const names = answer.records.map((r) => normalize((r as { domain: string }).domain));
    const confirmed = names.filter((n) => view.addresses(n).addresses.includes(host.address));
    if (confirmed.length === 0) {
      add('warning', `PTR names ${names.join(', ')}, which does not resolve back to ${host.address}: forward-confirmed reverse DNS fails`);
    } else if (!confirmed.includes(normalize(host.hostname))) {
      add('warning', `PTR names ${confirmed.join(', ')}, but ${host.address} says HELO ${host.hostname}: the reverse name and the HELO name differ`);
    }
  }
}

// ---------------------------------------------------------------------------------------------------------------

/** Every check over the zones, in the order SPF, DKIM, DMARC, MX, PTR. */
export function checkMailDns(input: MailDnsInput): Finding[] {
  const view = new ZoneView(input.zones);
  const findings: Finding[] = [];
  checkSpf(view, input, findings);
  checkDkim(view, input, findings);
  checkDmarc(view, input, findings);
  checkMx(view, input, findings);
  checkPtr(view, input, findings);
  return findings;
}

/** One line per finding: severity, record, message, in aligned columns. */
export function formatFindings(findings: Finding[]): string {
  const width = Math.max(0, ...findings.map((f) => f.record.length));
  return findings.map((f) => `${f.severity.padEnd(8)}${f.record.padEnd(width)}  ${f.message}`).join('\n');
}

/**
 * The checker's input for a lab: its zones (planned, or a running lab's — pass `{ ...plan, zones }`), each MTA as a
 * sending host, the given DKIM signers. Every MTA sends for every lab domain that has users, because planLab gives
 * every MTA all the lab's users for submission and they submit with their own domain in MAIL FROM and From:.
 */
export function mailDnsInputOf(plan: Pick<LabPlan, 'nodes' | 'zones'>, definition: LabDefinition, signers: DkimSelectorRef[]): MailDnsInput {
  const labDomains = Object.keys(definition.domains).map(normalize);
  const withUsers = labDomains.filter((d) => definition.users.some((u) => normalize(u.address.split('@')[1] ?? '') === d));
  const sendingHosts = Object.values(plan.nodes)
    .filter((node) => node.role === 'mta')
    .map((node) => ({ hostname: node.hostname, address: node.address, domains: withUsers }));
  return { zones: plan.zones, sendingHosts, signers, labDomains };
}

/**
 * The DKIM selectors a lab definition names, read from `domains[d].dkim` as `{ selector }` or a list of them. The
 * field is read as unknown data, so this works whatever else the definition's DKIM part holds.
 */
export function dkimSelectorsOf(definition: LabDefinition): DkimSelectorRef[] {
  const refs: DkimSelectorRef[] = [];
  for (const [domain, def] of Object.entries(definition.domains)) {
    const dkim: unknown = (def as unknown as Record<string, unknown>).dkim;
    for (const entry of Array.isArray(dkim) ? (dkim as unknown[]) : dkim === undefined ? [] : [dkim]) {
      const selector = typeof entry === 'object' && entry !== null ? (entry as Record<string, unknown>).selector : undefined;
      if (typeof selector === 'string' && selector) refs.push({ domain: normalize(domain), selector });
    }
  }
  return refs;
}
