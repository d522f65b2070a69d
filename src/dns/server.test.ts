import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { execFile, execFileSync } from 'node:child_process';
import dgram from 'node:dgram';
import net from 'node:net';
import { promises as dns } from 'node:dns';
import { promisify } from 'node:util';
import { Packet, TCPClient, UDPClient } from 'dns2';
import type { DnsNodeConfig } from '../shared/config.js';
import { EventLog, type LabEvent } from '../shared/events.js';
import type { NodeContext, RunningRole } from '../shared/node.js';
import { dnsTestConfig, failure } from './dns.test-helper.js';
import { answerQuery, splitTxt, startDns } from './index.js';
import { Zones } from './zone.js';
import { resolveMxRecords } from './resolver.js';

const longText = 'v=DKIM1; k=rsa; p=' + 'A'.repeat(700);

/** A SHA2-256 digest as TLSA data (what `3 1 1` records carry), written upper-case to check it is stored lower. */
const spkiDigest = '0C72AC70B745AC19998811B131D662C9AC69DBDBE7CB23E5B514B56664C5D3D6';

const config: DnsNodeConfig = dnsTestConfig({
  zones: [
    {
      origin: 'receiver.test',
      records: [
        { name: 'receiver.test', type: 'MX', exchange: 'mx.receiver.test', priority: 10 },
        { name: 'receiver.test', type: 'TXT', data: 'v=spf1 -all' },
        { name: 'receiver.test', type: 'NS', ns: 'ns1.receiver.test' },
        { name: 'mx.receiver.test', type: 'A', address: '127.0.0.5' },
        { name: 'mx.receiver.test', type: 'AAAA', address: 'fd00::5' },
        { name: 'www.receiver.test', type: 'CNAME', domain: 'mx.receiver.test' },
        { name: 'sel._domainkey.receiver.test', type: 'TXT', data: longText },
        { name: '_25._tcp.mx.receiver.test', type: 'TLSA', usage: 3, selector: 1, matchingType: 1, data: spkiDigest },
        { name: '_25._tcp.mx.receiver.test', type: 'TLSA', usage: 2, selector: 0, matchingType: 0, data: '30820102' },
      ],
    },
    { origin: 'nomail.test', records: [{ name: 'nomail.test', type: 'MX', exchange: '.', priority: 0 }] },
    { origin: '0.0.127.in-addr.arpa', records: [{ name: '5.0.0.127.in-addr.arpa', type: 'PTR', domain: 'mx.receiver.test' }] },
  ],
});

let events: EventLog;
let role: RunningRole;
let port: number;
let resolver: dns.Resolver;

beforeAll(async () => {
  events = new EventLog('dns');
  const ctx: NodeContext<DnsNodeConfig> = { config, events, log: () => {} };
  role = await startDns(ctx);
  port = role.services.dns!.port;
  resolver = new dns.Resolver({ timeout: 1000, tries: 1 });
  resolver.setServers([`127.0.0.1:${port}`]);
});

afterAll(async () => {
  await role?.stop();
});


function queriesSince(seq: number): LabEvent[] {
  return events.since(seq).filter((e) => e.kind === 'dns-query');
}

describe('lab DNS server over UDP (node:dns resolver)', () => {
  it('listens on the actual port it reports', () => {
    expect(role.services).toEqual({ dns: { host: '127.0.0.1', port } });
    expect(port).toBeGreaterThan(0);
  });

  it('answers MX, A, AAAA, TXT, CNAME, PTR, SOA and NS', async () => {
    expect(await resolveMxRecords(resolver, 'receiver.test')).toEqual([{ exchange: 'mx.receiver.test', priority: 10 }]);
    expect(await resolver.resolve4('mx.receiver.test')).toEqual(['127.0.0.5']);
    expect(await resolver.resolve6('mx.receiver.test')).toEqual(['fd00::5']);
    expect(await resolver.resolveTxt('receiver.test')).toEqual([['v=spf1 -all']]);
    expect(await resolver.resolveCname('www.receiver.test')).toEqual(['mx.receiver.test']);
    expect(await resolver.resolve4('WWW.Receiver.Test.')).toEqual(['127.0.0.5']); // through the CNAME
    expect(await resolver.reverse('127.0.0.5')).toEqual(['mx.receiver.test']);
    expect(await resolver.resolvePtr('5.0.0.127.in-addr.arpa')).toEqual(['mx.receiver.test']);
    expect(await resolver.resolveSoa('receiver.test')).toEqual({
      nsname: 'ns1.receiver.test',
      hostmaster: 'hostmaster.receiver.test',
      serial: 1,
      refresh: 3600,
      retry: 600,
      expire: 86400,
      minttl: 60,
    });
    expect(await resolver.resolveNs('receiver.test')).toEqual(['ns1.receiver.test']);
    expect(await resolver.resolveNs('nomail.test')).toEqual(['ns.nomail.test']); // synthesized
  });

  it('serves a null MX', async () => {
    expect(await resolveMxRecords(resolver, 'nomail.test')).toEqual([{ exchange: '', priority: 0 }]);
  });

  it('splits long TXT data into 255-octet strings (over TCP once UDP is truncated)', async () => {
    const seq = events.since(0).length;
    const [strings] = await resolver.resolveTxt('sel._domainkey.receiver.test');
    expect(strings!.join('')).toBe(longText);
    expect(strings!.map((s) => s.length)).toEqual([255, 255, 208]);
    // The answer does not fit in 512 octets of UDP: TC=1, and the resolver asks again over TCP.
    const transports = queriesSince(seq).map((e) => e.detail.transport);
    expect(transports).toContain('tcp');
  });

  it('says NXDOMAIN (ENOTFOUND), NODATA (ENODATA) and REFUSED (EREFUSED)', async () => {
    expect(await failure(resolver.resolveMx('nobody.receiver.test'))).toBe('ENOTFOUND');
    expect(await failure(resolver.resolveMx('mx.receiver.test'))).toBe('ENODATA');
    expect(await failure(resolver.resolve4('example.com'))).toBe('EREFUSED');
  });

  it('emits a dns-query event for every query', async () => {
    const seq = events.since(0).at(-1)?.seq ?? 0;
    await resolver.resolveMx('Receiver.Test');
    await failure(resolver.resolve4('nobody.receiver.test'));
    const [mx, nx] = queriesSince(seq);
    expect(mx?.node).toBe('dns');
    expect(mx?.detail).toMatchObject({ name: 'receiver.test', type: 'MX', rcode: 'NOERROR', answers: ['MX 10 mx.receiver.test'], transport: 'udp' });
    expect(mx?.detail.client).toMatch(/^127\.0\.0\.1:\d+$/);
    expect(nx?.detail).toMatchObject({ name: 'nobody.receiver.test', type: 'A', rcode: 'NXDOMAIN', answers: [] });
  });

  it('applies rpc changes to the next query', async () => {
    try {
      expect(await resolver.resolve4('mx.receiver.test')).toEqual(['127.0.0.5']);
      await role.rpc['set-records']!({ name: 'mx.receiver.test', type: 'A', records: [{ address: '127.0.0.77' }] });
      expect(await resolver.resolve4('mx.receiver.test')).toEqual(['127.0.0.77']);

      expect(await failure(resolver.resolve4('new.receiver.test'))).toBe('ENOTFOUND');
      await role.rpc['add-record']!({ record: { name: 'new.receiver.test', type: 'A', address: '127.0.0.8' } });
      expect(await resolver.resolve4('new.receiver.test')).toEqual(['127.0.0.8']);
      expect(await role.rpc['remove-records']!({ name: 'new.receiver.test' })).toEqual({ removed: 1 });
      expect(await failure(resolver.resolve4('new.receiver.test'))).toBe('ENOTFOUND');

      expect(await failure(resolver.resolveMx('fresh.test'))).toBe('EREFUSED');
      await role.rpc['add-record']!({ zone: 'fresh.test', record: { name: '@', type: 'MX', exchange: 'mx.receiver.test', priority: 5 } });
      expect(await resolveMxRecords(resolver, 'fresh.test')).toEqual([{ exchange: 'mx.receiver.test', priority: 5 }]);

      const listing = (await role.rpc.records!({})) as { zones: { origin: string }[] };
      expect(listing.zones.map((z) => z.origin)).toEqual(['receiver.test', 'nomail.test', '0.0.127.in-addr.arpa', 'fresh.test']);
      expect(() => role.rpc['add-record']!({ record: { name: 'x.receiver.test', type: 'A', address: 'nope' } })).toThrow(/invalid IPv4/);
    } finally {
      // The server is shared by the file's tests: put its data back even when an assertion above failed.
      await role.rpc['set-records']!({ name: 'mx.receiver.test', type: 'A', records: [{ name: 'mx.receiver.test', type: 'A', address: '127.0.0.5' }] });
      await role.rpc['remove-records']!({ name: 'new.receiver.test' });
      await role.rpc['remove-zone']!({ origin: 'fresh.test' });
    }
  });
});

describe('lab DNS server over TCP and raw packets', () => {
  it('answers over TCP with AA=1 and RA=0', async () => {
    const seq = events.since(0).at(-1)?.seq ?? 0;
    const query = TCPClient({ dns: '127.0.0.1', port });
    const response = await query('receiver.test', 'MX');
    expect(response.header).toMatchObject({ qr: 1, aa: 1, ra: 0, rcode: Packet.RCODE.NOERROR });
    expect(response.answers.map((a) => [a.exchange, a.priority])).toEqual([['mx.receiver.test', 10]]);
    expect(queriesSince(seq).map((e) => e.detail)).toMatchObject([{ name: 'receiver.test', type: 'MX', transport: 'tcp' }]);
  });

  it('puts the SOA in the authority section of negative answers, and refuses without AA', async () => {
    const query = UDPClient({ dns: '127.0.0.1', port });
    const nx = await query('nobody.receiver.test', 'A');
    expect(nx.header).toMatchObject({ aa: 1, ra: 0, rcode: Packet.RCODE.NXDOMAIN });
    expect(nx.authorities.map((r) => [r.type, r.name])).toEqual([[Packet.TYPE.SOA, 'receiver.test']]);
    const refused = await query('example.com', 'A');
    expect(refused.header).toMatchObject({ aa: 0, ra: 0, rcode: Packet.RCODE.REFUSED });
  });

  it('survives malformed UDP datagrams, answering FORMERR where a header could be read', async () => {
    const socket = dgram.createSocket('udp4');
    const replies: Buffer[] = [];
    socket.on('message', (msg) => replies.push(msg));
    await new Promise<void>((resolve) => socket.bind(0, '127.0.0.1', resolve));
    const send = (data: Buffer) => new Promise<void>((resolve, reject) => socket.send(data, port, '127.0.0.1', (err) => (err ? reject(err) : resolve())));
    await send(Buffer.from([1, 2, 3])); // shorter than a header: dropped
    // A header announcing one question, followed by a name that runs off the end.
    await send(Buffer.from([0x12, 0x34, 0x01, 0x00, 0x00, 0x01, 0, 0, 0, 0, 0, 0, 0x3f, 0x61]));
    await send(Buffer.from(Array.from({ length: 300 }, (_, i) => (i * 37) & 0xff)));
    // A well-formed query last: the server answers datagrams in order, so once its answer is here every answer to
    // the ones before it is too (no sleep, no guessing).
    const sentinel = new Packet();
    sentinel.header.id = 0x5678;
    sentinel.header.rd = 1;
    sentinel.questions.push(new Packet.Question('mx.receiver.test', Packet.TYPE.A, Packet.CLASS.IN));
    const answered = new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error('no answer to the well-formed query after the malformed ones within 5 s')), 5000);
      socket.on('message', (msg) => {
        if (msg.length >= 2 && msg.readUInt16BE(0) === 0x5678) {
          clearTimeout(timer);
          resolve();
        }
      });
    });
    await send(sentinel.toBuffer());
    await answered;
    socket.close();
    const formerr = replies.map((r) => Packet.parse(r)).find((p) => p.header.id === 0x1234);
    expect(formerr?.header.rcode).toBe(Packet.RCODE.FORMERR);
    expect(await resolver.resolve4('mx.receiver.test')).toEqual(['127.0.0.5']); // still serving
  });

  it('survives malformed TCP messages', async () => {
    await new Promise<void>((resolve) => {
      const socket = net.connect(port, '127.0.0.1', () => socket.end(Buffer.from([0x00, 0x05, 0xff, 0xff, 0xff, 0xff, 0xff])));
      socket.on('error', () => resolve());
      socket.on('close', () => resolve());
      socket.resume();
    });
    expect(await resolver.resolve4('mx.receiver.test')).toEqual(['127.0.0.5']);
  });
});

/** dig (BIND's client, an implementation independent of dns2) when installed; the tests below need it. */
const digMissing = (() => {
  try {
    execFileSync('dig', ['-v'], { stdio: 'ignore' });
    return undefined;
  } catch (err) {
    return `dig is not installed (${(err as Error).message}); apt-get install -y dnsutils to run the TLSA wire tests`;
  }
})();
if (digMissing) console.warn(`skipping the dig TLSA tests: ${digMissing}`);

/**
 * `dig +short` TLSA answers, one per record as `usage selector matching HEX`. dig prints long data in groups
 * separated by spaces; they are joined here so a record is one string.
 */
async function digTlsa(name: string, ...flags: string[]): Promise<string[]> {
  const { stdout } = await promisify(execFile)('dig', [`@127.0.0.1`, '-p', String(port), 'TLSA', name, '+short', '+tries=1', '+time=2', ...flags]);
  return stdout
    .trim()
    .split('\n')
    .filter(Boolean)
    .map((line) => line.trim().split(/\s+/))
    .map(([usage, selector, matching, ...hex]) => `${usage} ${selector} ${matching} ${hex.join('')}`)
    .sort();
}

describe.skipIf(digMissing !== undefined)('TLSA records on the wire (RFC 6698), read by dig', () => {
  const expected = ['2 0 0 30820102', `3 1 1 ${spkiDigest}`];

  it('answers a TLSA query over UDP as type 52 with usage, selector, matching type and data', async () => {
    const seq = events.since(0).at(-1)?.seq ?? 0;
    expect(await digTlsa('_25._tcp.mx.receiver.test')).toEqual(expected);
    expect(queriesSince(seq).map((e) => e.detail)).toMatchObject([
      { name: '_25._tcp.mx.receiver.test', type: 'TLSA', rcode: 'NOERROR', transport: 'udp', answers: ['TLSA 3 1 1 0c72ac70b745ac19…', 'TLSA 2 0 0 30820102'] },
    ]);
  });

  it('answers over TCP too', async () => {
    const seq = events.since(0).at(-1)?.seq ?? 0;
    expect(await digTlsa('_25._tcp.mx.receiver.test', '+tcp')).toEqual(expected);
    expect(queriesSince(seq).map((e) => e.detail.transport)).toEqual(['tcp']);
  });

  it('serves TLSA records set over the control channel, and NODATA where there are none', async () => {
    try {
      await role.rpc['set-records']!({ name: '_25._tcp.mx.receiver.test', type: 'TLSA', records: [{ usage: 3, selector: 0, matchingType: 2, data: 'ab'.repeat(64) }] });
      expect(await digTlsa('_25._tcp.mx.receiver.test')).toEqual([`3 0 2 ${'AB'.repeat(64)}`]);
      expect(() => role.rpc['add-record']!({ record: { name: '_25._tcp.mx.receiver.test', type: 'TLSA', usage: 3, selector: 1, matchingType: 1, data: 'abcd' } })).toThrow(
        /matching type 1 is a 32-octet digest, got 2 octets/,
      );
      expect(await digTlsa('mx.receiver.test')).toEqual([]);
    } finally {
      await role.rpc['set-records']!({ name: '_25._tcp.mx.receiver.test', type: 'TLSA', records: config.zones![0]!.records.filter((r) => r.type === 'TLSA') });
    }
  });
});

describe('answerQuery', () => {
  const zones = new Zones(config.zones);
  const request = (build: (p: Packet) => void) => {
    const packet = new Packet();
    packet.header.id = 7;
    build(packet);
    return Packet.parse(packet.toBuffer());
  };

  it('answers NOTIMP to other opcodes, FORMERR to several questions, and not at all to responses', () => {
    const notify = answerQuery(zones, request((p) => {
      p.header.opcode = 4;
      p.questions.push(new Packet.Question('receiver.test', Packet.TYPE.SOA, Packet.CLASS.IN));
    }));
    expect(notify?.response.header.rcode).toBe(Packet.RCODE.NOTIMP);
    const two = answerQuery(zones, request((p) => {
      p.questions.push(new Packet.Question('a.receiver.test', 1, 1), new Packet.Question('b.receiver.test', 1, 1));
    }));
    expect(two?.response.header.rcode).toBe(Packet.RCODE.FORMERR);
    expect(two?.query.rcode).toBe('FORMERR');
    const response = answerQuery(zones, request((p) => {
      p.header.qr = 1;
      p.questions.push(new Packet.Question('receiver.test', 1, 1));
    }));
    expect(response).toBeUndefined();
  });

  it('refuses the CHAOS class and echoes EDNS', () => {
    const chaos = answerQuery(zones, request((p) => p.questions.push(new Packet.Question('version.bind', Packet.TYPE.TXT, Packet.CLASS.CH))));
    expect(chaos?.response.header.rcode).toBe(Packet.RCODE.REFUSED);
    const edns = answerQuery(zones, request((p) => {
      p.questions.push(new Packet.Question('receiver.test', Packet.TYPE.MX, Packet.CLASS.IN));
      p.additionals.push(Packet.Resource.EDNS([]));
    }));
    expect(edns?.response.additionals.map((r) => r.type)).toEqual([Packet.TYPE.EDNS]);
  });

  it('recognises a TLSA question by its code, 52, which dns2 does not name', () => {
    const answered = answerQuery(zones, request((p) => p.questions.push(new Packet.Question('_25._tcp.mx.receiver.test', 52, Packet.CLASS.IN))));
    expect(answered?.query).toMatchObject({ type: 'TLSA', rcode: 'NOERROR' });
    const wire = Packet.parse(answered!.response.toBuffer());
    expect(wire.answers.map((r) => [r.type, (r.data as Buffer).toString('hex')])).toEqual([
      [52, '030101' + spkiDigest.toLowerCase()],
      [52, '02000030820102'],
    ]);
  });

  it('splits TXT at 255 octets without cutting a character', () => {
    expect(splitTxt('')).toEqual(['']);
    expect(splitTxt('a'.repeat(255))).toEqual(['a'.repeat(255)]);
    expect(splitTxt('a'.repeat(256))).toEqual(['a'.repeat(255), 'a']);
    const chunks = splitTxt('a' + 'é'.repeat(200)); // 401 octets
    expect(chunks.map((c) => Buffer.byteLength(c))).toEqual([255, 146]);
    expect(chunks.join('')).toBe('a' + 'é'.repeat(200));
  });
});

describe('startDns lifecycle', () => {
  it('stops serving UDP and TCP after stop()', async () => {
    const ctx: NodeContext<DnsNodeConfig> = { config: { ...config, zones: [] }, events: new EventLog('dns2'), log: () => {} };
    const other = await startDns(ctx);
    const otherPort = other.services.dns!.port;
    expect(otherPort).not.toBe(port);
    // An idle TCP connection must not hold stop() up.
    const idle = net.connect(otherPort, '127.0.0.1');
    await new Promise((resolve) => idle.once('connect', resolve));
    idle.on('error', () => {});
    await other.stop();
    const refused = await new Promise<string>((resolve) => {
      const socket = net.connect(otherPort, '127.0.0.1', () => resolve('connected'));
      socket.on('error', (err: NodeJS.ErrnoException) => resolve(err.code ?? 'error'));
    });
    expect(refused).toBe('ECONNREFUSED');
    idle.destroy();
  });
});
