import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import dgram from 'node:dgram';
import { Packet, createUDPServer } from 'dns2';
import type { DnsRecord, Endpoint } from '../shared/config.js';
import { DnsFaultRules } from './faults.js';
import { createLabResolver, resolveMxTargets, type MxResolver } from './resolver.js';
import { startDnsServer, type RunningDnsServer } from './server.js';
import { Zones } from './zone.js';

/** Records written one per line: `mx(name, exchange, priority)`, `a(name, address)`, `aaaa(name, address)`. */
const mx = (name: string, exchange: string, priority: number): DnsRecord => ({ name, type: 'MX', exchange, priority });
const a = (name: string, address: string): DnsRecord => ({ name, type: 'A', address });
const aaaa = (name: string, address: string): DnsRecord => ({ name, type: 'AAAA', address });

const zones = new Zones([
  {
    origin: 'lab.test',
    records: [
      // Deliberately out of order: the result is sorted by preference, equal ones in DNS order.
      mx('multi.lab.test', 'b.lab.test', 20),
      mx('multi.lab.test', 'a.lab.test', 10),
      mx('multi.lab.test', 'c.lab.test', 10),
      a('a.lab.test', '127.0.1.1'),
      aaaa('a.lab.test', 'fd00::1'),
      a('b.lab.test', '127.0.1.2'),
      a('c.lab.test', '127.0.1.3'),
      a('c.lab.test', '127.0.1.4'),
      mx('nullmx.lab.test', '.', 0),
      a('plain.lab.test', '127.0.1.9'),
      { name: 'textonly.lab.test', type: 'TXT', data: 'no mail here' },
      mx('noaddr.lab.test', 'ghost.lab.test', 10),
      mx('partial.lab.test', 'ghost.lab.test', 5),
      mx('partial.lab.test', 'b.lab.test', 10),
      mx('outside.lab.test', 'mx.elsewhere.example', 10),
      { name: 'alias.lab.test', type: 'CNAME', domain: 'multi.lab.test' },
    ],
  },
]);

let server: RunningDnsServer;
let resolver: MxResolver;

beforeAll(async () => {
  server = await startDnsServer({ host: '127.0.0.1', port: 0, zones });
  resolver = createLabResolver(server.endpoint);
});

afterAll(async () => {
  await server?.close();
});

describe('createLabResolver', () => {
  it('points at the lab DNS only', () => {
    const r = createLabResolver({ host: '127.0.0.1', port: 5353 });
    expect(r.getServers()).toEqual(['127.0.0.1:5353']);
    expect(createLabResolver({ host: '::1', port: 5353 }).getServers()).toEqual(['[::1]:5353']);
  });

  it("asks from the node's own address when given one, over UDP and TCP, so the lab DNS's log names the node", async () => {
    const clients: string[] = [];
    // A truncated UDP answer (a fault rule) makes the resolver ask again over TCP.
    const faults = new DnsFaultRules(0, [{ id: 'tc', name: 'plain.lab.test', action: { kind: 'truncate' } }]);
    const logged = await startDnsServer({ host: '127.0.0.1', port: 0, zones, faults, onQuery: (q) => clients.push(`${q.transport} ${q.client.replace(/:\d+$/, '')}`) });
    try {
      expect(await createLabResolver(logged.endpoint, { localAddress: '127.0.0.33' }).resolve4('plain.lab.test')).toEqual(['127.0.1.9']);
    } finally {
      await logged.close();
    }
    expect(clients).toEqual(['udp 127.0.0.33', 'tcp 127.0.0.33']);
  });
});

describe('resolveMxTargets against the lab DNS', () => {
  it('returns MX hosts by preference, equal preferences in DNS order, with their addresses', async () => {
    expect(await resolveMxTargets(resolver, 'multi.lab.test')).toEqual({
      kind: 'mx',
      hosts: [
        { exchange: 'a.lab.test', priority: 10, addresses: ['127.0.1.1', 'fd00::1'] },
        { exchange: 'c.lab.test', priority: 10, addresses: ['127.0.1.3', '127.0.1.4'] },
        { exchange: 'b.lab.test', priority: 20, addresses: ['127.0.1.2'] },
      ],
    });
  });

  it('can leave IPv6 out', async () => {
    const result = await resolveMxTargets(resolver, 'multi.lab.test', { ipv6: false });
    expect(result.kind === 'mx' && result.hosts[0]?.addresses).toEqual(['127.0.1.1']);
  });

  it('follows a CNAME to the MX records', async () => {
    const result = await resolveMxTargets(resolver, 'alias.lab.test');
    expect(result.kind === 'mx' && result.hosts.map((h) => h.exchange)).toEqual(['a.lab.test', 'c.lab.test', 'b.lab.test']);
  });

  it('recognizes a null MX', async () => {
    expect(await resolveMxTargets(resolver, 'nullmx.lab.test')).toEqual({ kind: 'null-mx' });
  });

  it('falls back to the implicit MX of a domain with an address record', async () => {
    expect(await resolveMxTargets(resolver, 'plain.lab.test')).toEqual({
      kind: 'implicit',
      hosts: [{ exchange: 'plain.lab.test', priority: 0, addresses: ['127.0.1.9'] }],
    });
  });

  it('says none for a domain that does not exist or has neither MX nor address', async () => {
    const nx = await resolveMxTargets(resolver, 'nobody.lab.test');
    expect(nx).toMatchObject({ kind: 'none' });
    expect(nx.kind === 'none' && nx.error).toMatch(/NXDOMAIN/);
    expect(await resolveMxTargets(resolver, 'textonly.lab.test')).toMatchObject({ kind: 'none', error: expect.stringMatching(/no MX and no A\/AAAA/) });
  });

  it('keeps MX hosts without addresses, marked, and the others usable', async () => {
    expect(await resolveMxTargets(resolver, 'noaddr.lab.test')).toEqual({
      kind: 'mx',
      hosts: [{ exchange: 'ghost.lab.test', priority: 10, addresses: [], error: expect.stringMatching(/NXDOMAIN/), temporary: false }],
    });
    const partial = await resolveMxTargets(resolver, 'partial.lab.test');
    expect(partial.kind === 'mx' && partial.hosts.map((h) => [h.exchange, h.addresses])).toEqual([
      ['ghost.lab.test', []],
      ['b.lab.test', ['127.0.1.2']],
    ]);
  });

  it('is temporary when the lab DNS refuses (a name outside every lab zone)', async () => {
    const result = await resolveMxTargets(resolver, 'elsewhere.example');
    expect(result).toMatchObject({ kind: 'temporary', error: expect.stringMatching(/EREFUSED/) });
    // The MX is there but its only host cannot be looked up now.
    expect(await resolveMxTargets(resolver, 'outside.lab.test')).toMatchObject({ kind: 'temporary' });
  });
});

describe('resolveMxTargets when DNS fails', () => {
  let servfail: ReturnType<typeof createUDPServer>;
  let silent: dgram.Socket;
  let servfailAt: Endpoint;
  let silentAt: Endpoint;

  beforeAll(async () => {
    servfail = createUDPServer();
    servfail.on('request', (request, send) => void send(Packet.createErrorResponseFromRequest(request, Packet.RCODE.SERVFAIL)));
    await new Promise<void>((resolve) => servfail.bind(0, '127.0.0.1', resolve));
    servfailAt = { host: '127.0.0.1', port: servfail.address().port };
    silent = dgram.createSocket('udp4'); // receives queries and never answers
    await new Promise<void>((resolve) => silent.bind(0, '127.0.0.1', resolve));
    silentAt = { host: '127.0.0.1', port: silent.address().port };
  });

  afterAll(() => {
    servfail?.close();
    silent?.close();
  });

  it('reports SERVFAIL as temporary', async () => {
    const result = await resolveMxTargets(createLabResolver(servfailAt, { timeoutMs: 200, tries: 1 }), 'lab.test');
    expect(result).toMatchObject({ kind: 'temporary', error: expect.stringMatching(/ESERVFAIL/) });
  });

  it('reports a timeout as temporary', async () => {
    const result = await resolveMxTargets(createLabResolver(silentAt, { timeoutMs: 100, tries: 1 }), 'lab.test');
    expect(result).toMatchObject({ kind: 'temporary', error: expect.stringMatching(/ETIMEOUT/) });
  });

  it('reports a failing address lookup of the implicit MX as temporary', async () => {
    const fail = (code: string) => async (): Promise<never> => {
      throw Object.assign(new Error(`query ${code}`), { code });
    };
    const stub = { resolveMx: fail('ENODATA'), resolve4: fail('ETIMEOUT'), resolve6: fail('ENODATA') } as unknown as MxResolver;
    expect(await resolveMxTargets(stub, 'x.test')).toMatchObject({ kind: 'temporary', error: expect.stringMatching(/ETIMEOUT/) });
  });
});
