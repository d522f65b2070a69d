// The MTA's DNS answer cache against the real lab DNS server (UDP, node:dns underneath): which questions reach the
// server (its query log), for how long an answer is kept (the cache's clock, moved by the test), and that failures
// and negative answers are asked again.
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import type { DnsQueryInfo } from './api.js';
import { DnsAnswerCache } from './cache.js';
import { DnsFaultRules } from './faults.js';
import { createLabResolver, resolveMxTargets } from './resolver.js';
import { startDnsServer, type RunningDnsServer } from './server.js';
import { Zones } from './zone.js';

let server: RunningDnsServer;
let zones: Zones;
const faults = new DnsFaultRules(1);
const asked: string[] = [];

beforeAll(async () => {
  zones = new Zones([]);
  server = await startDnsServer({ host: '127.0.0.1', port: 0, zones, faults, onQuery: (q: DnsQueryInfo) => asked.push(`${q.type} ${q.name}`) });
});

afterAll(() => server.close());

beforeEach(async () => {
  asked.length = 0;
  faults.set([]);
  zones.setZones([
    {
      origin: 'receiver.test',
      soa: { minimum: 30 },
      records: [
        { name: 'receiver.test', type: 'MX', exchange: 'mx.receiver.test', priority: 10, ttl: 300 },
        { name: 'mx.receiver.test', type: 'A', address: '127.0.0.5', ttl: 60 },
        { name: 'short.receiver.test', type: 'A', address: '127.0.0.6', ttl: 0 },
      ],
    },
  ]);
});

/** A cache on a fresh resolver, with a clock the test moves (ms). */
function cacheWith(maxTtlSeconds: number) {
  const clock = { now: 1_000_000 };
  const cache = new DnsAnswerCache(createLabResolver(server.endpoint, { tries: 1, timeoutMs: 500 }), { maxTtlSeconds, now: () => clock.now });
  return { cache, clock };
}

describe('keeping A/AAAA answers for their TTL', () => {
  it('answers from the kept answer within the TTL and asks again once it expired', async () => {
    const { cache, clock } = cacheWith(3600);
    expect(await cache.resolve4('mx.receiver.test')).toEqual(['127.0.0.5']);
    clock.now += 59_000;
    expect(await cache.resolve4('mx.receiver.test')).toEqual(['127.0.0.5']);
    expect(asked.filter((q) => q === 'A mx.receiver.test')).toHaveLength(1);
    clock.now += 2_000; // 61 s: past the record's 60 s TTL
    zones.setRecords('mx.receiver.test', 'A', [{ name: 'mx.receiver.test', type: 'A', address: '127.0.0.9', ttl: 60 }]);
    expect(await cache.resolve4('mx.receiver.test')).toEqual(['127.0.0.9']);
    expect(asked.filter((q) => q === 'A mx.receiver.test')).toHaveLength(2);
    expect(cache.stats).toEqual({ asked: 2, shared: 0, kept: 1 });
  });

  it('keeps no answer past maxTtlSeconds, nor one with a TTL of 0', async () => {
    const { cache, clock } = cacheWith(5);
    await cache.resolve4('mx.receiver.test');
    clock.now += 5_000;
    await cache.resolve4('mx.receiver.test');
    await cache.resolve4('short.receiver.test');
    await cache.resolve4('short.receiver.test');
    expect(asked).toEqual(['A mx.receiver.test', 'A mx.receiver.test', 'A short.receiver.test', 'A short.receiver.test']);
  });

  it('with maxTtlSeconds 0 (the lab as defined) keeps nothing: every lookup reaches the server', async () => {
    const { cache } = cacheWith(0);
    for (let i = 0; i < 3; i++) await cache.resolve4('mx.receiver.test');
    expect(asked).toEqual(['A mx.receiver.test', 'A mx.receiver.test', 'A mx.receiver.test']);
  });

  it('never keeps MX answers: an MX moved takes effect on the next lookup', async () => {
    const { cache } = cacheWith(3600);
    expect(await resolveMxTargets(cache.asMxResolver(), 'receiver.test', { ipv6: false })).toMatchObject({ kind: 'mx', hosts: [{ exchange: 'mx.receiver.test', addresses: ['127.0.0.5'] }] });
    zones.setRecords('receiver.test', 'MX', [{ name: 'receiver.test', type: 'MX', exchange: 'short.receiver.test', priority: 10 }]);
    expect(await resolveMxTargets(cache.asMxResolver(), 'receiver.test', { ipv6: false })).toMatchObject({ kind: 'mx', hosts: [{ exchange: 'short.receiver.test', addresses: ['127.0.0.6'] }] });
    expect(asked.filter((q) => q.startsWith('MX '))).toHaveLength(2);
  });
});

describe('failures and negative answers', () => {
  it('does not keep a SERVFAIL: the next lookup asks again and gets the answer', async () => {
    const { cache } = cacheWith(3600);
    faults.set([{ id: 'once', name: 'mx.receiver.test', type: 'A', action: { kind: 'servfail' }, times: 1 }]);
    await expect(cache.resolve4('mx.receiver.test')).rejects.toMatchObject({ code: 'ESERVFAIL' });
    expect(await cache.resolve4('mx.receiver.test')).toEqual(['127.0.0.5']);
  });

  it('does not keep NXDOMAIN or NODATA: a record added meanwhile is found', async () => {
    const { cache } = cacheWith(3600);
    await expect(cache.resolve4('new.receiver.test')).rejects.toMatchObject({ code: 'ENOTFOUND' });
    await expect(cache.resolve6('mx.receiver.test')).rejects.toMatchObject({ code: 'ENODATA' });
    zones.addRecord({ name: 'new.receiver.test', type: 'A', address: '127.0.0.7' });
    zones.addRecord({ name: 'mx.receiver.test', type: 'AAAA', address: '::1' });
    expect(await cache.resolve4('new.receiver.test')).toEqual(['127.0.0.7']);
    expect(await cache.resolve6('mx.receiver.test')).toEqual(['::1']);
  });

  it('clear() forgets kept answers', async () => {
    const { cache } = cacheWith(3600);
    await cache.resolve4('mx.receiver.test');
    cache.clear();
    await cache.resolve4('mx.receiver.test');
    expect(asked).toEqual(['A mx.receiver.test', 'A mx.receiver.test']);
  });
});

describe('questions in flight', () => {
  it('shares one question among identical lookups made at the same moment, whatever maxTtlSeconds', async () => {
    const { cache } = cacheWith(0);
    const answers = await Promise.all([cache.resolveMx('receiver.test'), cache.resolveMx('RECEIVER.test'), cache.resolve4('mx.receiver.test'), cache.resolve4('mx.receiver.test')]);
    expect(answers[0]).toEqual(answers[1]);
    expect(answers[2]).toEqual(['127.0.0.5']);
    expect(asked.sort()).toEqual(['A mx.receiver.test', 'MX receiver.test']);
    expect(cache.stats).toEqual({ asked: 2, shared: 2, kept: 0 });
    // Once answered, the next lookup asks again.
    await cache.resolveMx('receiver.test');
    expect(asked).toHaveLength(3);
  });

  it('shares a failure in flight, and asks again afterwards', async () => {
    const { cache } = cacheWith(0);
    faults.set([{ id: 'once', name: 'receiver.test', type: 'MX', action: { kind: 'servfail' }, times: 1 }]);
    const both = await Promise.allSettled([cache.resolveMx('receiver.test'), cache.resolveMx('receiver.test')]);
    expect(both.map((r) => r.status)).toEqual(['rejected', 'rejected']);
    expect(await cache.resolveMx('receiver.test')).toMatchObject([{ exchange: 'mx.receiver.test' }]);
  });

  it('refuses a maxTtlSeconds that is not a number of seconds', () => {
    expect(() => new DnsAnswerCache(createLabResolver(server.endpoint), { maxTtlSeconds: -1 })).toThrow(/maxTtlSeconds must be a number of seconds from 0, got -1/);
  });
});
