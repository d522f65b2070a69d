import { describe, expect, it } from 'vitest';
import type { DnsFaultRule } from '../shared/faults.js';
import { seededRandom } from '../shared/seeded-random.js';
import { answerRecord, dnsFaultProblems, DnsFaultRules, ruleMatches, validateDnsFaultRules } from './faults.js';

const udp = (name: string, type: string) => ({ name, type, transport: 'udp' as const });
const tcp = (name: string, type: string) => ({ name, type, transport: 'tcp' as const });

describe('DNS fault rules: checking', () => {
  it('accepts sound rules and normalizes names and types', () => {
    const rules = validateDnsFaultRules([
      { id: 'a', name: 'Receiver.Test.', type: 'mx', action: { kind: 'servfail' } },
      { id: 'b', name: '*.receiver.test', action: { kind: 'answer', records: [{ type: 'a', data: '192.0.2.1', ttl: 5 }] }, times: 2, probability: 0.5 },
      { id: 'c', name: 'x.test', type: 'TYPE65', action: { kind: 'ttl', ttl: 0 } },
    ]);
    expect(rules.map((r) => [r.name, r.type])).toEqual([
      ['receiver.test', 'MX'],
      ['*.receiver.test', undefined],
      ['x.test', 'TYPE65'],
    ]);
  });

  it('says what is wrong with each rule, naming it', () => {
    const problems = dnsFaultProblems(
      [
        { id: 'dup', name: 'a.test', action: { kind: 'servfail' } },
        { id: 'dup', name: 'b.test', action: { kind: 'refused' } },
        { id: '', name: 'c.test', action: { kind: 'nxdomain' } },
        { id: 'kind', name: 'd.test', action: { kind: 'slow' } },
        { id: 'type', name: 'e.test', type: 'MXX', action: { kind: 'timeout' } },
        { id: 'name', name: 'bad..name', action: { kind: 'timeout' } },
        { id: 'ttl', name: 'f.test', action: { kind: 'ttl', ttl: -1 } },
        { id: 'times', name: 'g.test', action: { kind: 'truncate' }, times: 0 },
        { id: 'chance', name: 'h.test', action: { kind: 'truncate' }, probability: 1.5 },
        { id: 'records', name: 'i.test', action: { kind: 'answer', records: [{ type: 'A', data: 'not-an-ip' }, { type: 'MX', data: 'mx.test' }, { type: 'SOA', data: 'x' }] } },
      ],
      'faults.dns',
    );
    expect(problems).toEqual([
      'faults.dns rule "dup": id is used by an earlier rule; ids are unique',
      'faults.dns[2]: id must be a non-empty string',
      'faults.dns rule "kind": action.kind "slow" is not a DNS fault (servfail, refused, nxdomain, timeout, truncate, answer, ttl)',
      expect.stringMatching(/^faults\.dns rule "type": type "MXX" is not a query type \(A, NS, .*, or TYPE<n>\); leave it out for any type$/),
      'faults.dns rule "name": name "bad..name" has an empty or over-long label',
      'faults.dns rule "ttl": action ttl needs ttl: whole seconds from 0 to 2147483647, got -1',
      'faults.dns rule "times": times must be a whole number from 1 (leave it out for every time), got 0',
      'faults.dns rule "chance": probability must be a number from 0 to 1, got 1.5',
      'faults.dns rule "records": action answer records[0]: A data "not-an-ip" is not an IPv4 address',
      'faults.dns rule "records": action answer records[1]: MX data "mx.test" must be "<preference> <exchange>", e.g. "10 mx.old.test"',
      'faults.dns rule "records": action answer records[2]: type "SOA" cannot be answered (A, AAAA, MX, TXT, CNAME, PTR, NS, TLSA)',
    ]);
    expect(dnsFaultProblems({ id: 'x' })).toEqual(['dns faults must be a list of rules ({ id, name, type?, action, times?, probability? })']);
    expect(() => validateDnsFaultRules([{ id: 'x', name: 'a.test' }])).toThrow('dns faults rule "x": action must be an object with a kind');
  });

  it('reads answer records in presentation form at the queried name', () => {
    expect(answerRecord('r.test', { type: 'MX', data: '10 MX.Old.Test.' })).toEqual({ name: 'r.test', type: 'MX', priority: 10, exchange: 'mx.old.test' });
    expect(answerRecord('r.test', { type: 'mx', data: '0 .' })).toEqual({ name: 'r.test', type: 'MX', priority: 0, exchange: '.' });
    expect(answerRecord('r.test', { type: 'AAAA', data: 'FD00::1', ttl: 1 })).toEqual({ name: 'r.test', type: 'AAAA', address: 'fd00::1', ttl: 1 });
    expect(answerRecord('r.test', { type: 'TXT', data: 'v=spf1 -all' })).toEqual({ name: 'r.test', type: 'TXT', data: 'v=spf1 -all' });
    expect(answerRecord('r.test', { type: 'TLSA', data: '3 1 1 ABCD' })).toEqual({ name: 'r.test', type: 'TLSA', usage: 3, selector: 1, matchingType: 1, data: 'abcd' });
    expect(() => answerRecord('r.test', { type: 'TLSA', data: '3 1 1 abc' })).toThrow(/TLSA data "3 1 1 abc" must be/);
    expect(() => answerRecord('r.test', { type: 'CNAME', data: 'a..b' })).toThrow('CNAME domain "a..b" has an empty or over-long label');
  });
});

describe('DNS fault rules: matching', () => {
  it('matches names exactly or below a *. wildcard, and types when given', () => {
    expect(ruleMatches({ name: 'receiver.test', type: 'MX' }, { name: 'receiver.test', type: 'MX' })).toBe(true);
    expect(ruleMatches({ name: 'receiver.test', type: 'MX' }, { name: 'receiver.test', type: 'A' })).toBe(false);
    expect(ruleMatches({ name: 'receiver.test' }, { name: 'RECEIVER.test.', type: 'TXT' })).toBe(true);
    expect(ruleMatches({ name: 'receiver.test' }, { name: 'mx.receiver.test', type: 'A' })).toBe(false);
    expect(ruleMatches({ name: '*.receiver.test' }, { name: 'mx.receiver.test', type: 'A' })).toBe(true);
    expect(ruleMatches({ name: '*.receiver.test' }, { name: 'a.b.receiver.test', type: 'A' })).toBe(true);
    expect(ruleMatches({ name: '*.receiver.test' }, { name: 'receiver.test', type: 'A' })).toBe(false);
    expect(ruleMatches({ name: '*.receiver.test' }, { name: 'xreceiver.test', type: 'A' })).toBe(false);
  });

  it('the first rule that fires decides; spent rules make way; truncate is for UDP only', () => {
    const rules = new DnsFaultRules(1, [
      { id: 'tc', name: 'receiver.test', type: 'MX', action: { kind: 'truncate' } },
      { id: 'once', name: 'receiver.test', action: { kind: 'servfail' }, times: 1 },
      { id: 'below', name: '*.receiver.test', action: { kind: 'refused' } },
    ] satisfies DnsFaultRule[]);
    expect(rules.fire(udp('receiver.test', 'MX'))?.id).toBe('tc');
    expect(rules.fire(tcp('receiver.test', 'MX'))?.id).toBe('once');
    expect(rules.fire(tcp('receiver.test', 'MX'))).toBeUndefined(); // the zone answers over TCP
    expect(rules.fire(udp('receiver.test', 'MX'))?.id).toBe('tc'); // and a truncate rule without times keeps firing
    expect(rules.fire(udp('mx.receiver.test', 'A'))?.id).toBe('below');
    expect(rules.fire(udp('sender.test', 'MX'))).toBeUndefined();
    expect(rules.list().map((r) => [r.id, r.fired])).toEqual([
      ['tc', 2],
      ['once', 1],
      ['below', 1],
    ]);
  });

  it('setting the rules again starts their counts again, and an invalid list changes nothing', () => {
    const rules = new DnsFaultRules(1, [{ id: 'once', name: 'a.test', action: { kind: 'servfail' }, times: 1 }]);
    expect(rules.fire(udp('a.test', 'A'))?.id).toBe('once');
    expect(rules.fire(udp('a.test', 'A'))).toBeUndefined();
    expect(() => rules.set([{ id: 'bad', name: 'a.test', action: { kind: 'nope' } }])).toThrow(/set-dns-faults rule "bad": action.kind "nope"/);
    expect(() => new DnsFaultRules(1, [{ id: 'x', name: 'a.test', action: { kind: 'ttl' } }])).toThrow(/^dnsFaults rule "x": action ttl needs ttl/);
    expect(rules.list()).toEqual([{ id: 'once', name: 'a.test', action: { kind: 'servfail' }, times: 1, fired: 1 }]);
    rules.set(rules.list().map(({ fired: _fired, ...rule }) => rule));
    expect(rules.fire(udp('a.test', 'A'))?.id).toBe('once');
  });

  it('draws a probability from the seed, one stream per rule: the same seed gives the same firings', () => {
    const fired = (seed: number, extra: DnsFaultRule[] = []) => {
      const rules = new DnsFaultRules(seed, [...extra, { id: 'flaky', name: 'a.test', action: { kind: 'servfail' }, probability: 0.3 }]);
      return Array.from({ length: 200 }, () => {
        rules.fire(udp('b.test', 'A')); // another rule's draws, in between
        return rules.fire(udp('a.test', 'A'))?.id === 'flaky' ? 1 : 0;
      }).join('');
    };
    const run = fired(42);
    // The stream is the rule's, named `dns:<id>`: a replay (or a chaos schedule) can say which queries a rule takes.
    const stream = seededRandom(42, 'dns:flaky');
    expect(run).toBe(Array.from({ length: 200 }, () => (stream() < 0.3 ? 1 : 0)).join(''));
    expect(fired(42)).toBe(run);
    expect(fired(43)).not.toBe(run);
    const count = [...run].filter((c) => c === '1').length;
    expect(count).toBeGreaterThan(30); // 60 expected of 200
    expect(count).toBeLessThan(90);
    // A rule for another name, with a chance of its own, draws from its own stream: this rule's firings stay.
    expect(fired(42, [{ id: 'other', name: 'b.test', action: { kind: 'refused' }, probability: 0.5 }])).toBe(run);
    const never = new DnsFaultRules(42, [{ id: 'never', name: 'a.test', action: { kind: 'servfail' }, probability: 0 }]);
    expect(Array.from({ length: 50 }, () => never.fire(udp('a.test', 'A'))).filter(Boolean)).toEqual([]);
  });
});
