// DNS faults at the lab DNS server, seen by the resolver the MTA uses (node:dns, c-ares) over real sockets, and by
// the server's own query log (`dns-query`) and `fault` events.
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { promises as dns } from 'node:dns';
import { Packet } from 'dns2';
import type { DnsNodeConfig } from '../shared/config.js';
import { EventLog, type LabEvent } from '../shared/events.js';
import type { DnsFaultRule } from '../shared/faults.js';
import type { NodeContext, RunningRole } from '../shared/node.js';
import { dnsTestConfig, failure } from './dns.test-helper.js';
import { DnsFaultRules } from './faults.js';
import { answerWithFaults, startDns } from './index.js';
import { resolveTlsa, resolveMxRecords } from './resolver.js';
import { Zones } from './zone.js';

const config: DnsNodeConfig = {
  ...dnsTestConfig({
    zones: [
      {
        origin: 'receiver.test',
        soa: { minimum: 30 },
        records: [
          { name: 'receiver.test', type: 'MX', exchange: 'mx.receiver.test', priority: 10 },
          { name: 'mx.receiver.test', type: 'A', address: '127.0.0.5', ttl: 120 },
          { name: '_25._tcp.mx.receiver.test', type: 'TLSA', usage: 3, selector: 1, matchingType: 1, data: 'ab'.repeat(32) },
        ],
      },
    ],
  }),
  // From the node's configuration (the lab's `faults.dns`): in force from the first query.
  dnsFaults: [{ id: 'from-config', name: 'configured.receiver.test', action: { kind: 'refused' } }],
  seed: 7,
};

let events: EventLog;
let role: RunningRole;
let port: number;

beforeAll(async () => {
  events = new EventLog('dns');
  const ctx: NodeContext<DnsNodeConfig> = { config, events, log: () => {} };
  role = await startDns(ctx);
  port = role.services.dns!.port;
});

afterAll(async () => {
  await role?.stop();
});

afterEach(async () => {
  await setFaults([]);
});

/** The resolver as the MTA makes it (createLabResolver), with short tries so a timeout is quick. */
function resolver(timeout = 1000, tries = 2): dns.Resolver {
  const r = new dns.Resolver({ timeout, tries });
  r.setServers([`127.0.0.1:${port}`]);
  return r;
}


async function setFaults(rules: DnsFaultRule[]) {
  return (await role.rpc['set-dns-faults']!({ rules })) as { rules: (DnsFaultRule & { fired: number })[] };
}

function last(): number {
  return events.since(0).at(-1)?.seq ?? 0;
}

function kinds(seq: number, kind: string): LabEvent[] {
  return events.since(seq).filter((e) => e.kind === kind);
}

describe('DNS faults over UDP and TCP (c-ares)', () => {
  // First: afterEach clears the rules.
  it('a rule from the configuration is in force from the first query', async () => {
    expect(await failure(resolver().resolve4('configured.receiver.test'))).toBe('EREFUSED');
    expect(await failure(resolver().resolve4('other.receiver.test'))).toBe('ENOTFOUND');
  });

  it('SERVFAIL, REFUSED and NXDOMAIN per name and type, each a fault event naming the query and the client', async () => {
    await setFaults([
      { id: 'mx-servfail', name: 'receiver.test', type: 'MX', action: { kind: 'servfail' } },
      { id: 'a-refused', name: 'mx.receiver.test', type: 'A', action: { kind: 'refused' } },
      { id: 'gone', name: '*.receiver.test', type: 'TXT', action: { kind: 'nxdomain' } },
    ]);
    const seq = last();
    const r = resolver();
    expect(await failure(r.resolveMx('receiver.test'))).toBe('ESERVFAIL');
    expect(await failure(r.resolve4('mx.receiver.test'))).toBe('EREFUSED');
    expect(await failure(r.resolveTxt('mx.receiver.test'))).toBe('ENOTFOUND');
    // Other types and names still get the zone's answer.
    expect(await failure(r.resolve4('receiver.test'))).toBe('ENODATA');
    const faults = kinds(seq, 'fault').map((e) => e.detail);
    expect(faults).toEqual([
      { source: 'dns', rule: 'mx-servfail', action: 'servfail', stage: 'MX receiver.test', effect: 'SERVFAIL', client: expect.stringMatching(/^127\.0\.0\.1:\d+$/) },
      { source: 'dns', rule: 'a-refused', action: 'refused', stage: 'A mx.receiver.test', effect: 'REFUSED', client: expect.stringMatching(/^127\.0\.0\.1:\d+$/) },
      { source: 'dns', rule: 'gone', action: 'nxdomain', stage: 'TXT mx.receiver.test', effect: 'NXDOMAIN', client: expect.stringMatching(/^127\.0\.0\.1:\d+$/) },
    ]);
    // c-ares does not ask again after SERVFAIL or REFUSED from its only server: one query each.
    expect(kinds(seq, 'dns-query').map((e) => `${e.detail.type} ${e.detail.name} ${e.detail.rcode}`)).toEqual([
      'MX receiver.test SERVFAIL',
      'A mx.receiver.test REFUSED',
      'TXT mx.receiver.test NXDOMAIN',
      'A receiver.test NOERROR',
    ]);
  });

  it('a timeout is no answer at all: the resolver gives up after its own tries, and nothing is logged as answered', async () => {
    await setFaults([{ id: 'silent', name: 'receiver.test', type: 'MX', action: { kind: 'timeout' } }]);
    const seq = last();
    const began = Date.now();
    expect(await failure(resolver(200, 2).resolveMx('receiver.test'))).toBe('ETIMEOUT');
    const took = Date.now() - began;
    expect(took).toBeGreaterThanOrEqual(200);
    expect(took).toBeLessThan(3000); // 200 ms, then 400 ms: c-ares doubles the timeout on its second try
    expect(kinds(seq, 'fault').map((e) => e.detail.effect)).toEqual(['no answer', 'no answer']);
    expect(kinds(seq, 'dns-query')).toEqual([]);
  });

  it('a truncated UDP answer makes c-ares ask again over TCP, which answers in full', async () => {
    await setFaults([{ id: 'tc', name: 'receiver.test', type: 'MX', action: { kind: 'truncate' } }]);
    const seq = last();
    expect(await resolveMxRecords(resolver(), 'receiver.test')).toEqual([{ exchange: 'mx.receiver.test', priority: 10 }]);
    expect(kinds(seq, 'dns-query').map((e) => [e.detail.transport, e.detail.rcode, e.detail.answers])).toEqual([
      ['udp', 'NOERROR', []],
      ['tcp', 'NOERROR', ['MX 10 mx.receiver.test']],
    ]);
    expect(kinds(seq, 'fault').map((e) => [e.detail.rule, e.detail.effect])).toEqual([['tc', 'TC over UDP']]);
    const { rules } = (await role.rpc['dns-faults']!({})) as { rules: { fired: number }[] };
    expect(rules.map((rule) => rule.fired)).toEqual([1]); // the TCP query did not count
  });

  it('the MTA\'s own TLSA stub resolver retries a truncated answer over TCP too', async () => {
    await setFaults([{ id: 'tc', name: '_25._tcp.mx.receiver.test', type: 'TLSA', action: { kind: 'truncate' } }]);
    const seq = last();
    const records = await resolveTlsa({ host: '127.0.0.1', port }, '_25._tcp.mx.receiver.test', { localAddress: '127.0.0.34' });
    expect(records.map((r) => r.data.toString('hex'))).toEqual(['ab'.repeat(32)]);
    // Both from the node's own address, as the MTA asks.
    expect(kinds(seq, 'dns-query').map((e) => `${e.detail.transport} ${String(e.detail.client).replace(/:\d+$/, '')}`)).toEqual(['udp 127.0.0.34', 'tcp 127.0.0.34']);
  });

  it('a wrong answer is served as given, at the queried name', async () => {
    await setFaults([
      { id: 'stale-mx', name: 'receiver.test', type: 'MX', action: { kind: 'answer', records: [{ type: 'MX', data: '20 old-mx.receiver.test' }] } },
      { id: 'wrong-a', name: 'mx.receiver.test', type: 'A', action: { kind: 'answer', records: [{ type: 'A', data: '192.0.2.10', ttl: 5 }] } },
      { id: 'empty', name: 'receiver.test', type: 'TXT', action: { kind: 'answer', records: [] } },
    ]);
    const seq = last();
    const r = resolver();
    expect(await resolveMxRecords(r, 'receiver.test')).toEqual([{ exchange: 'old-mx.receiver.test', priority: 20 }]);
    expect(await r.resolve4('mx.receiver.test', { ttl: true })).toEqual([{ address: '192.0.2.10', ttl: 5 }]);
    expect(await failure(r.resolveTxt('receiver.test'))).toBe('ENODATA');
    expect(kinds(seq, 'fault').map((e) => e.detail.effect)).toEqual(['answered MX 20 old-mx.receiver.test', 'answered A 192.0.2.10', 'answered no records']);
  });

  it("a TTL fault serves the zone's answer with that TTL", async () => {
    const r = resolver();
    expect(await r.resolve4('mx.receiver.test', { ttl: true })).toEqual([{ address: '127.0.0.5', ttl: 120 }]);
    await setFaults([{ id: 'long', name: 'mx.receiver.test', type: 'A', action: { kind: 'ttl', ttl: 3600 } }]);
    expect(await r.resolve4('mx.receiver.test', { ttl: true })).toEqual([{ address: '127.0.0.5', ttl: 3600 }]);
    // The zone's data is unchanged: an edit shows at once (node:dns keeps no cache: c-ares's query cache is off).
    await role.rpc['set-records']!({ name: 'mx.receiver.test', type: 'A', records: [{ address: '127.0.0.6', ttl: 120 }] });
    try {
      expect(await r.resolve4('mx.receiver.test', { ttl: true })).toEqual([{ address: '127.0.0.6', ttl: 3600 }]);
    } finally {
      await role.rpc['set-records']!({ name: 'mx.receiver.test', type: 'A', records: [{ address: '127.0.0.5', ttl: 120 }] });
    }
  });

  it('times: 1 fires once, then the zone answers', async () => {
    const r = resolver();
    await setFaults([{ id: 'once', name: 'receiver.test', type: 'MX', action: { kind: 'servfail' }, times: 1 }]);
    expect(await failure(r.resolveMx('receiver.test'))).toBe('ESERVFAIL');
    expect(await resolveMxRecords(r, 'receiver.test')).toEqual([{ exchange: 'mx.receiver.test', priority: 10 }]);
    expect(await role.rpc['dns-faults']!({})).toEqual({ rules: [{ id: 'once', name: 'receiver.test', type: 'MX', action: { kind: 'servfail' }, times: 1, fired: 1 }] });
  });

  it('set-dns-faults refuses invalid rules with the reason and keeps the rules in force', async () => {
    await setFaults([{ id: 'keep', name: 'receiver.test', action: { kind: 'servfail' } }]);
    await expect(Promise.resolve().then(() => role.rpc['set-dns-faults']!({ rules: [{ id: 'x', name: 'receiver.test', action: { kind: 'drop' } }] as never }))).rejects.toThrow(
      'set-dns-faults rule "x": action.kind "drop" is not a DNS fault',
    );
    expect(((await role.rpc['dns-faults']!({})) as { rules: { id: string }[] }).rules.map((r) => r.id)).toEqual(['keep']);
  });
});

describe('answerWithFaults', () => {
  const zones = new Zones(config.zones);
  const query = (name: string, type: number) => {
    const packet = new Packet();
    packet.header.id = 9;
    packet.questions.push(new Packet.Question(name, type, Packet.CLASS.IN));
    packet.additionals.push(Packet.Resource.EDNS([]));
    return Packet.parse(packet.toBuffer());
  };

  it('NXDOMAIN carries the zone SOA for negative caching (RFC 2308 §3); TC keeps EDNS; malformed queries meet no rule', () => {
    const rules = new DnsFaultRules(0, [
      { id: 'nx', name: 'receiver.test', type: 'MX', action: { kind: 'nxdomain' } },
      { id: 'tc', name: 'mx.receiver.test', action: { kind: 'truncate' } },
    ]);
    const nx = answerWithFaults(zones, query('receiver.test', Packet.TYPE.MX), rules, 'udp')!;
    expect(nx.response!.header).toMatchObject({ rcode: Packet.RCODE.NXDOMAIN, aa: 1 });
    expect(nx.response!.authorities.map((r) => [r.type, r.ttl])).toEqual([[Packet.TYPE.SOA, 30]]);
    const tc = answerWithFaults(zones, query('mx.receiver.test', Packet.TYPE.A), rules, 'udp')!;
    expect(tc.response!.header).toMatchObject({ tc: 1, rcode: 0 });
    expect(tc.response!.answers).toEqual([]);
    expect(tc.response!.additionals.map((r) => r.type)).toEqual([Packet.TYPE.EDNS]);
    const overTcp = answerWithFaults(zones, query('mx.receiver.test', Packet.TYPE.A), rules, 'tcp')!;
    expect(overTcp.fault).toBeUndefined();
    expect(overTcp.response!.header.tc).toBe(0);
    const two = query('receiver.test', Packet.TYPE.MX);
    two.questions.push(two.questions[0]!);
    expect(answerWithFaults(zones, Packet.parse(two.toBuffer()), rules, 'udp')).toMatchObject({ query: { rcode: 'FORMERR' } });
    expect(rules.list().map((r) => r.fired)).toEqual([1, 1]);
  });
});
