// DNS faults at the lab DNS (issue 15): the rules of src/shared/faults.ts (`DnsFaultRule`), checked, and which one
// fires for a query. Pure (no sockets, no dns2), so the harness can check a lab definition's rules with the same
// code the node runs (api.ts re-exports `dnsFaultProblems`); server.ts turns a fired rule into the response.
//
// Semantics:
// - A rule matches a query by name (case-insensitive, trailing dot ignored; `*.receiver.test` matches every name
//   below receiver.test, not receiver.test itself, as a DNS wildcard would) and by type (absent: any type).
// - The first rule in list order that matches and fires decides. A spent rule (`times` reached) or one whose chance
//   draw failed lets the next rule have its say, and the zone answers when none fires.
// - `truncate` matches UDP queries only: the client's retry over TCP gets the zone's (or a later rule's) answer.
// - `probability` draws from `seededRandom(seed, 'dns:<rule id>')`, one stream per rule, restarted whenever the
//   rules are set; a rule without a probability draws nothing, so adding one rule never shifts another's draws.
// - `times` counts the queries the rule answered (its `fired`); setting the rules starts every count at 0.
import { isIPv4, isIPv6 } from 'node:net';
import type { DnsRecord } from '../shared/config.js';
import type { DnsFaultAction, DnsFaultRule, DnsFaultRuleView } from '../shared/faults.js';
import { seededRandom, type Seed } from '../shared/seeded-random.js';

export const DNS_FAULT_ACTIONS = ['servfail', 'refused', 'nxdomain', 'timeout', 'truncate', 'answer', 'ttl'] as const satisfies readonly DnsFaultAction['kind'][];

/** Query types a rule may name: the common mnemonics, or RFC 3597's `TYPE<n>`. */
const QUERY_TYPES = new Set(['A', 'NS', 'CNAME', 'SOA', 'PTR', 'MX', 'TXT', 'AAAA', 'SRV', 'NAPTR', 'DS', 'DNSKEY', 'TLSA', 'SVCB', 'HTTPS', 'CAA', 'ANY']);

/** The record types an `answer` rule may give (those the lab serves, but the SOA it synthesizes). */
const ANSWER_TYPES = ['A', 'AAAA', 'MX', 'TXT', 'CNAME', 'PTR', 'NS', 'TLSA'] as const;

const MAX_TTL = 0x7fffffff;

/** One query as the rules see it. */
export interface DnsFaultQuery {
  /** Normalized: lower case, no trailing dot. */
  name: string;
  /** The type mnemonic (`MX`, `TLSA`, `TYPE65`). */
  type: string;
  transport: 'udp' | 'tcp';
}

/** Lower case, without the trailing dot. */
function normalize(name: string): string {
  return name.trim().toLowerCase().replace(/\.+$/, '');
}

/** What is wrong with a domain name (RFC 1035 §2.3.4 limits, printable ASCII), or undefined. */
function nameProblem(name: string): string | undefined {
  if (name === '') return 'is empty';
  if (name.length > 253) return 'is longer than 253 characters';
  for (const label of name.split('.')) {
    if (label.length === 0 || label.length > 63) return 'has an empty or over-long label';
    if (!/^[\x21-\x7e]+$/.test(label)) return 'has characters other than printable ASCII (use punycode)';
  }
  return undefined;
}

function isUint(value: unknown, max: number): value is number {
  return typeof value === 'number' && Number.isInteger(value) && value >= 0 && value <= max;
}

/**
 * One record of an `answer` rule, from its presentation form (`data`: `192.0.2.1`, `10 mx.old.test`, TXT text as is,
 * `3 1 1 <hex>` for TLSA) to the record served at the queried `name`. Throws saying what is wrong.
 */
export function answerRecord(name: string, given: { type: string; data: string; ttl?: number }): DnsRecord {
  const type = typeof given?.type === 'string' ? given.type.toUpperCase() : '';
  if (!(ANSWER_TYPES as readonly string[]).includes(type)) throw new Error(`type ${JSON.stringify(given?.type)} cannot be answered (${ANSWER_TYPES.join(', ')})`);
  const data = given.data;
  if (typeof data !== 'string') throw new Error(`${type} data must be a string, got ${JSON.stringify(data)}`);
  if (given.ttl !== undefined && !isUint(given.ttl, MAX_TTL)) throw new Error(`ttl must be whole seconds from 0 to ${MAX_TTL}, got ${JSON.stringify(given.ttl)}`);
  const ttl = given.ttl === undefined ? {} : { ttl: given.ttl };
  const target = (text: string, what: string): string => {
    const n = normalize(text);
    if (n === '') return '.';
    const problem = nameProblem(n);
    if (problem) throw new Error(`${type} ${what} ${JSON.stringify(text)} ${problem}`);
    return n;
  };
  const fields = data.trim().split(/\s+/);
  switch (type) {
    case 'A':
    case 'AAAA':
      if (!(type === 'A' ? isIPv4(data.trim()) : isIPv6(data.trim()))) throw new Error(`${type} data ${JSON.stringify(data)} is not an IPv${type === 'A' ? 4 : 6} address`);
      return { name, type, address: data.trim().toLowerCase(), ...ttl };
    case 'MX': {
      const priority = Number(fields[0]);
      if (fields.length !== 2 || !isUint(priority, 0xffff) || !/^\d+$/.test(fields[0]!)) throw new Error(`MX data ${JSON.stringify(data)} must be "<preference> <exchange>", e.g. "10 mx.old.test"`);
      return { name, type, priority, exchange: target(fields[1]!, 'exchange'), ...ttl };
    }
    case 'TXT':
      return { name, type, data, ...ttl };
    case 'CNAME':
    case 'PTR':
      return { name, type, domain: target(data, 'domain'), ...ttl };
    case 'NS':
      return { name, type, ns: target(data, 'ns'), ...ttl };
    default: {
      const [usage, selector, matchingType, hex] = fields;
      const octets = [usage, selector, matchingType].map(Number);
      if (fields.length !== 4 || !octets.every((o, i) => isUint(o, 0xff) && /^\d+$/.test(fields[i]!)) || !/^([0-9a-f]{2})+$/i.test(hex!)) {
        throw new Error(`TLSA data ${JSON.stringify(data)} must be "<usage> <selector> <matching type> <hex>"`);
      }
      return { name, type: 'TLSA', usage: octets[0]!, selector: octets[1]!, matchingType: octets[2]!, data: hex!.toLowerCase(), ...ttl };
    }
  }
}

/** What is wrong with one rule's action, each problem a sentence. */
function actionProblems(action: unknown): string[] {
  if (!action || typeof action !== 'object') return ['action must be an object with a kind'];
  const { kind } = action as { kind?: unknown };
  if (!(DNS_FAULT_ACTIONS as readonly unknown[]).includes(kind)) return [`action.kind ${JSON.stringify(kind)} is not a DNS fault (${DNS_FAULT_ACTIONS.join(', ')})`];
  if (kind === 'ttl') {
    const { ttl } = action as { ttl?: unknown };
    return isUint(ttl, MAX_TTL) ? [] : [`action ttl needs ttl: whole seconds from 0 to ${MAX_TTL}, got ${JSON.stringify(ttl)}`];
  }
  if (kind === 'answer') {
    const { records } = action as { records?: unknown };
    if (!Array.isArray(records)) return ['action answer needs records: [{ type, data, ttl? }] (an empty list answers NOERROR with no records)'];
    return records.flatMap((r, i) => {
      try {
        answerRecord('example.test', r as { type: string; data: string });
        return [];
      } catch (err) {
        return [`action answer records[${i}]: ${(err as Error).message}`];
      }
    });
  }
  return [];
}

/**
 * What is wrong with a list of DNS fault rules (it may come from JSON), each problem a sentence naming the rule;
 * empty when every rule is sound. `where` starts each sentence (`faults.dns`, `set-dns-faults`).
 */
export function dnsFaultProblems(rules: unknown, where = 'dns faults'): string[] {
  if (!Array.isArray(rules)) return [`${where} must be a list of rules ({ id, name, type?, action, times?, probability? })`];
  const problems: string[] = [];
  const ids = new Set<string>();
  rules.forEach((raw: unknown, index) => {
    if (!raw || typeof raw !== 'object') {
      problems.push(`${where}[${index}] must be an object ({ id, name, type?, action, times?, probability? })`);
      return;
    }
    const rule = raw as Partial<Record<keyof DnsFaultRule, unknown>>;
    const label = typeof rule.id === 'string' && rule.id !== '' ? `${where} rule "${rule.id}"` : `${where}[${index}]`;
    const say = (problem: string) => problems.push(`${label}: ${problem}`);
    if (typeof rule.id !== 'string' || rule.id === '') say('id must be a non-empty string');
    else if (ids.has(rule.id)) say('id is used by an earlier rule; ids are unique');
    else ids.add(rule.id);
    if (typeof rule.name !== 'string') say(`name must be a query name or "*.<domain>", got ${JSON.stringify(rule.name)}`);
    else {
      const name = normalize(rule.name);
      const problem = nameProblem(name.startsWith('*.') ? name.slice(2) : name);
      if (problem) say(`name ${JSON.stringify(rule.name)} ${problem}`);
    }
    if (rule.type !== undefined && (typeof rule.type !== 'string' || !(QUERY_TYPES.has(rule.type.toUpperCase()) || /^TYPE\d{1,5}$/i.test(rule.type)))) {
      say(`type ${JSON.stringify(rule.type)} is not a query type (${[...QUERY_TYPES].join(', ')}, or TYPE<n>); leave it out for any type`);
    }
    for (const problem of actionProblems(rule.action)) say(problem);
    if (rule.times !== undefined && !(isUint(rule.times, Number.MAX_SAFE_INTEGER) && rule.times >= 1)) say(`times must be a whole number from 1 (leave it out for every time), got ${JSON.stringify(rule.times)}`);
    if (rule.probability !== undefined && !(typeof rule.probability === 'number' && rule.probability >= 0 && rule.probability <= 1)) say(`probability must be a number from 0 to 1, got ${JSON.stringify(rule.probability)}`);
  });
  return problems;
}

/** The rules, checked (throws one Error listing every problem) and normalized: names and types as matched. */
export function validateDnsFaultRules(rules: unknown, where = 'dns faults'): DnsFaultRule[] {
  const problems = dnsFaultProblems(rules, where);
  if (problems.length) throw new Error(problems.length === 1 ? problems[0] : `${problems.length} problems:\n  - ${problems.join('\n  - ')}`);
  return (rules as DnsFaultRule[]).map((rule) => ({
    ...structuredClone(rule),
    name: normalize(rule.name),
    ...(rule.type !== undefined ? { type: rule.type.toUpperCase() } : {}),
  }));
}

/** Whether a rule's name and type match a query (transport and counts aside). */
export function ruleMatches(rule: Pick<DnsFaultRule, 'name' | 'type'>, query: Pick<DnsFaultQuery, 'name' | 'type'>): boolean {
  const name = normalize(query.name);
  const pattern = normalize(rule.name);
  const named = pattern.startsWith('*.') ? name.endsWith(pattern.slice(1)) : name === pattern;
  return named && (rule.type === undefined || rule.type.toUpperCase() === query.type.toUpperCase());
}

interface HeldRule {
  rule: DnsFaultRule;
  fired: number;
  draw: () => number;
}

/** The DNS node's fault rules: set as a whole, asked once per query which one fires. */
export class DnsFaultRules {
  private held: HeldRule[] = [];

  constructor(
    private readonly seed: Seed,
    rules: unknown = [],
  ) {
    this.set(rules, 'dnsFaults');
  }

  /**
   * Replaces every rule (checked first: an invalid list changes nothing); counts and draws start again. `where`
   * starts every problem's sentence.
   */
  set(rules: unknown, where = 'set-dns-faults'): DnsFaultRuleView[] {
    const checked = validateDnsFaultRules(rules, where);
    this.held = checked.map((rule) => ({ rule, fired: 0, draw: seededRandom(this.seed, `dns:${rule.id}`) }));
    return this.list();
  }

  /** The rules as held, with how often each fired. */
  list(): DnsFaultRuleView[] {
    return this.held.map(({ rule, fired }) => ({ ...structuredClone(rule), fired }));
  }

  /** The rule that fires for this query, counted as fired; undefined when the zone answers. */
  fire(query: DnsFaultQuery): DnsFaultRule | undefined {
    for (const held of this.held) {
      const { rule } = held;
      if (rule.times !== undefined && held.fired >= rule.times) continue;
      if (!ruleMatches(rule, query)) continue;
      if (rule.action.kind === 'truncate' && query.transport !== 'udp') continue;
      if (rule.probability !== undefined && !(held.draw() < rule.probability)) continue;
      held.fired++;
      return rule;
    }
    return undefined;
  }
}
