import { describe, it, expect } from 'vitest';
import type { ZoneConfig } from '../shared/config.js';
import type { LookupResult } from './api.js';
import { DEFAULT_TTL, Zones } from './zone.js';

const receiver: ZoneConfig = {
  origin: 'receiver.test',
  records: [
    { name: 'receiver.test', type: 'MX', exchange: 'mx.receiver.test', priority: 10 },
    { name: 'receiver.test', type: 'MX', exchange: 'mx2.receiver.test', priority: 20, ttl: 300 },
    { name: 'receiver.test', type: 'TXT', data: 'v=spf1 ip4:127.0.0.5 -all' },
    { name: 'mx.receiver.test', type: 'A', address: '127.0.0.5' },
    { name: 'mx.receiver.test', type: 'AAAA', address: '::1' },
    { name: 'mx2.receiver.test', type: 'A', address: '127.0.0.6' },
    { name: 'www.receiver.test', type: 'CNAME', domain: 'alias.receiver.test' },
    { name: 'alias.receiver.test', type: 'CNAME', domain: 'mx.receiver.test' },
    { name: 'out.receiver.test', type: 'CNAME', domain: 'somewhere.example' },
    { name: 'dangling.receiver.test', type: 'CNAME', domain: 'missing.receiver.test' },
    { name: 'loop1.receiver.test', type: 'CNAME', domain: 'loop2.receiver.test' },
    { name: 'loop2.receiver.test', type: 'CNAME', domain: 'loop1.receiver.test' },
    { name: 'x.deep.receiver.test', type: 'A', address: '127.0.0.7' },
  ],
};

const reverse: ZoneConfig = {
  origin: '0.0.127.in-addr.arpa',
  soa: { primary: 'ns1.lab.test', admin: 'admin.lab.test', serial: 2024010101, minimum: 30 },
  records: [
    { name: '5.0.0.127.in-addr.arpa', type: 'PTR', domain: 'mx.receiver.test' },
    { name: '0.0.127.in-addr.arpa', type: 'NS', ns: 'ns1.lab.test' },
  ],
};

const nullMx: ZoneConfig = {
  origin: 'nomail.test',
  records: [{ name: 'nomail.test', type: 'MX', exchange: '.', priority: 0 }],
};

function lab() {
  return new Zones([receiver, reverse, nullMx]);
}

/** The answer as compact strings, for readable assertions. */
function brief(result: LookupResult): string[] {
  return result.answers.map((r) => {
    switch (r.type) {
      case 'A':
      case 'AAAA':
        return `${r.name} ${r.type} ${r.address}`;
      case 'MX':
        return `${r.name} MX ${r.priority} ${r.exchange}`;
      case 'TXT':
        return `${r.name} TXT ${r.data}`;
      case 'CNAME':
      case 'PTR':
        return `${r.name} ${r.type} ${r.domain}`;
      case 'NS':
        return `${r.name} NS ${r.ns}`;
      case 'SOA':
        return `${r.name} SOA ${r.primary} ${r.admin} ${r.serial}`;
      case 'TLSA':
        return `${r.name} TLSA ${r.usage} ${r.selector} ${r.matchingType} ${r.data}`;
    }
  });
}

describe('Zones.lookup: record types', () => {
  const zones = lab();

  it('answers A and AAAA', () => {
    expect(brief(zones.lookup('mx.receiver.test', 'A'))).toEqual(['mx.receiver.test A 127.0.0.5']);
    expect(brief(zones.lookup('mx.receiver.test', 'AAAA'))).toEqual(['mx.receiver.test AAAA ::1']);
  });

  it('answers MX in configured order, with TTLs (default or given)', () => {
    const result = zones.lookup('receiver.test', 'MX');
    expect(result.rcode).toBe('NOERROR');
    expect(result.authority).toEqual([]);
    expect(result.zone).toBe('receiver.test');
    expect(brief(result)).toEqual(['receiver.test MX 10 mx.receiver.test', 'receiver.test MX 20 mx2.receiver.test']);
    expect(result.answers.map((r) => r.ttl)).toEqual([DEFAULT_TTL, 300]);
  });

  it('answers TXT', () => {
    expect(brief(zones.lookup('receiver.test', 'TXT'))).toEqual(['receiver.test TXT v=spf1 ip4:127.0.0.5 -all']);
  });

  it('answers PTR in a reverse zone', () => {
    expect(brief(zones.lookup('5.0.0.127.in-addr.arpa', 'PTR'))).toEqual(['5.0.0.127.in-addr.arpa PTR mx.receiver.test']);
  });

  it('synthesizes SOA and NS at every apex, with defaults', () => {
    expect(brief(zones.lookup('receiver.test', 'SOA'))).toEqual(['receiver.test SOA ns.receiver.test hostmaster.receiver.test 1']);
    expect(brief(zones.lookup('receiver.test', 'NS'))).toEqual(['receiver.test NS ns.receiver.test']);
    const soa = zones.lookup('receiver.test', 'SOA').answers[0];
    expect(soa).toMatchObject({ refresh: 3600, retry: 600, expiration: 86400, minimum: 60, ttl: 60 });
  });

  it('uses the configured SOA fields and NS records', () => {
    const soa = zones.lookup('0.0.127.in-addr.arpa', 'SOA').answers;
    expect(soa).toEqual([
      { name: '0.0.127.in-addr.arpa', type: 'SOA', primary: 'ns1.lab.test', admin: 'admin.lab.test', serial: 2024010101, refresh: 3600, retry: 600, expiration: 86400, minimum: 30, ttl: 30 },
    ]);
    expect(brief(zones.lookup('0.0.127.in-addr.arpa', 'NS'))).toEqual(['0.0.127.in-addr.arpa NS ns1.lab.test']);
  });

  it('takes the SOA primary from the apex NS when not configured', () => {
    const zones = new Zones([{ origin: 'a.test', records: [{ name: 'a.test', type: 'NS', ns: 'ns9.other.test' }] }]);
    expect(brief(zones.lookup('a.test', 'SOA'))).toEqual(['a.test SOA ns9.other.test hostmaster.a.test 1']);
  });

  it('represents a null MX (RFC 7505) with exchange "."', () => {
    expect(brief(zones.lookup('nomail.test', 'MX'))).toEqual(['nomail.test MX 0 .']);
  });

  it('answers ANY with every record at the name, synthesized ones included at an apex', () => {
    expect(brief(zones.lookup('mx.receiver.test', 'ANY'))).toEqual(['mx.receiver.test A 127.0.0.5', 'mx.receiver.test AAAA ::1']);
    const apex = brief(zones.lookup('nomail.test', 'ANY'));
    expect(apex).toEqual(['nomail.test SOA ns.nomail.test hostmaster.nomail.test 1', 'nomail.test MX 0 .', 'nomail.test NS ns.nomail.test']);
  });
});

describe('Zones.lookup: CNAME', () => {
  const zones = lab();

  it('follows a chain inside the lab to records of the asked type', () => {
    const result = zones.lookup('www.receiver.test', 'A');
    expect(result.rcode).toBe('NOERROR');
    expect(brief(result)).toEqual([
      'www.receiver.test CNAME alias.receiver.test',
      'alias.receiver.test CNAME mx.receiver.test',
      'mx.receiver.test A 127.0.0.5',
    ]);
  });

  it('answers a CNAME query with the CNAME only', () => {
    expect(brief(zones.lookup('www.receiver.test', 'CNAME'))).toEqual(['www.receiver.test CNAME alias.receiver.test']);
  });

  it('ends with NODATA when the target has no records of the type', () => {
    const result = zones.lookup('www.receiver.test', 'MX');
    expect(result.rcode).toBe('NOERROR');
    expect(brief(result)).toHaveLength(2);
    expect(result.authority.map((r) => r.type)).toEqual(['SOA']);
  });

  it('ends with NXDOMAIN (the chain kept) when the target does not exist', () => {
    const result = zones.lookup('dangling.receiver.test', 'A');
    expect(result.rcode).toBe('NXDOMAIN');
    expect(brief(result)).toEqual(['dangling.receiver.test CNAME missing.receiver.test']);
    expect(result.authority.map((r) => `${r.type} ${r.name}`)).toEqual(['SOA receiver.test']);
  });

  it('stops at a target outside the lab', () => {
    const result = zones.lookup('out.receiver.test', 'A');
    expect(result.rcode).toBe('NOERROR');
    expect(brief(result)).toEqual(['out.receiver.test CNAME somewhere.example']);
    expect(result.authority).toEqual([]);
  });

  it('survives a loop', () => {
    const result = zones.lookup('loop1.receiver.test', 'A');
    expect(result.rcode).toBe('NOERROR');
    expect(brief(result)).toEqual(['loop1.receiver.test CNAME loop2.receiver.test', 'loop2.receiver.test CNAME loop1.receiver.test']);
  });

  it('follows a chain into another lab zone', () => {
    const zones = new Zones([
      { origin: 'a.test', records: [{ name: 'mail.a.test', type: 'CNAME', domain: 'mail.b.test' }] },
      { origin: 'b.test', records: [{ name: 'mail.b.test', type: 'A', address: '127.0.0.9' }] },
    ]);
    expect(brief(zones.lookup('mail.a.test', 'A'))).toEqual(['mail.a.test CNAME mail.b.test', 'mail.b.test A 127.0.0.9']);
  });
});

describe('Zones.lookup: negative answers', () => {
  const zones = lab();

  it('NXDOMAIN with the zone SOA for an unknown name in a lab zone', () => {
    const result = zones.lookup('nobody.receiver.test', 'A');
    expect(result).toMatchObject({ rcode: 'NXDOMAIN', answers: [], zone: 'receiver.test' });
    expect(brief({ ...result, answers: result.authority })).toEqual(['receiver.test SOA ns.receiver.test hostmaster.receiver.test 1']);
  });

  it('NODATA (NOERROR, no answer, SOA in authority) for a name without that type', () => {
    const result = zones.lookup('mx2.receiver.test', 'MX');
    expect(result.rcode).toBe('NOERROR');
    expect(result.answers).toEqual([]);
    expect(result.authority.map((r) => r.type)).toEqual(['SOA']);
  });

  it('NODATA for TLSA where the name has other records', () => {
    expect(zones.lookup('mx.receiver.test', 'TLSA')).toMatchObject({ rcode: 'NOERROR', answers: [] });
  });

  it('NODATA for types the lab does not serve', () => {
    expect(zones.lookup('receiver.test', 'SRV')).toMatchObject({ rcode: 'NOERROR', answers: [] });
    expect(zones.lookup('nothing.receiver.test', 'CAA').rcode).toBe('NXDOMAIN');
  });

  it('NODATA, not NXDOMAIN, for an empty non-terminal (RFC 8020)', () => {
    expect(zones.lookup('deep.receiver.test', 'A')).toMatchObject({ rcode: 'NOERROR', answers: [] });
  });

  it('REFUSED outside every lab zone', () => {
    for (const name of ['example.com', 'test', 'xreceiver.test', '', '.']) {
      expect(zones.lookup(name, 'A'), name).toEqual({ rcode: 'REFUSED', answers: [], authority: [] });
    }
  });
});

describe('Zones: names', () => {
  it('are case-insensitive, with or without the trailing dot', () => {
    const zones = lab();
    for (const name of ['MX.Receiver.TEST', 'mx.receiver.test.', 'mX.rEcEiVeR.tEsT.']) {
      expect(brief(zones.lookup(name, 'a')), name).toEqual(['mx.receiver.test A 127.0.0.5']);
    }
  });

  it('are normalized in the configuration too', () => {
    const zones = new Zones([
      { origin: 'Upper.TEST.', records: [{ name: 'MX.Upper.Test.', type: 'MX', exchange: 'Host.Upper.Test.', priority: 5 }] },
    ]);
    expect(zones.findZone('upper.test')).toBe('upper.test');
    expect(brief(zones.lookup('mx.upper.test', 'MX'))).toEqual(['mx.upper.test MX 5 host.upper.test']);
  });

  it('belong to the most specific zone', () => {
    const zones = new Zones([
      { origin: 'test', records: [{ name: 'a.test', type: 'A', address: '127.0.0.1' }] },
      { origin: 'sub.test', records: [{ name: 'b.sub.test', type: 'A', address: '127.0.0.2' }] },
    ]);
    expect(zones.findZone('b.sub.test')).toBe('sub.test');
    expect(zones.findZone('a.test')).toBe('test');
    expect(zones.lookup('c.sub.test', 'A').authority[0]?.name).toBe('sub.test');
    // `zone` only names a zone to create: the record still goes to the most specific one.
    zones.addRecord({ name: 'x.sub.test', type: 'A', address: '127.0.0.3' }, 'test');
    expect(zones.list().find((z) => z.origin === 'sub.test')?.records.map((r) => r.name)).toEqual(['b.sub.test', 'x.sub.test']);
    // A new zone may not hide records of an existing one.
    expect(() => zones.addZone({ origin: 'a.test', records: [] })).toThrow(/zone a.test would hide a.test of zone test/);
  });
});

describe('Zones: runtime edits', () => {
  it('set-records replaces an RRset and an empty list deletes it', () => {
    const zones = lab();
    zones.setRecords('MX.receiver.test.', 'a', [{ name: 'mx.receiver.test', type: 'A', address: '127.0.0.50' }]);
    expect(brief(zones.lookup('mx.receiver.test', 'A'))).toEqual(['mx.receiver.test A 127.0.0.50']);
    expect(brief(zones.lookup('mx.receiver.test', 'AAAA'))).toEqual(['mx.receiver.test AAAA ::1']); // other types untouched
    zones.setRecords('mx.receiver.test', 'A', []);
    expect(zones.lookup('mx.receiver.test', 'A')).toMatchObject({ rcode: 'NOERROR', answers: [] });
    zones.setRecords('mx.receiver.test', 'AAAA', []);
    expect(zones.lookup('mx.receiver.test', 'A').rcode).toBe('NXDOMAIN');
  });

  it('set-records can create a name and switch a domain to null MX', () => {
    const zones = lab();
    zones.setRecords('receiver.test', 'MX', [{ name: 'receiver.test', type: 'MX', exchange: '.', priority: 0 }]);
    expect(brief(zones.lookup('receiver.test', 'MX'))).toEqual(['receiver.test MX 0 .']);
    zones.setRecords('new.receiver.test', 'TXT', [{ name: 'new.receiver.test', type: 'TXT', data: 'hello' }]);
    expect(brief(zones.lookup('new.receiver.test', 'TXT'))).toEqual(['new.receiver.test TXT hello']);
  });

  it('add-record appends, ignores duplicates, and can create a zone', () => {
    const zones = lab();
    zones.addRecord({ name: 'mx.receiver.test', type: 'A', address: '127.0.0.51' });
    zones.addRecord({ name: 'mx.receiver.test', type: 'A', address: '127.0.0.51', ttl: 5 });
    expect(brief(zones.lookup('mx.receiver.test', 'A'))).toEqual(['mx.receiver.test A 127.0.0.5', 'mx.receiver.test A 127.0.0.51']);
    expect(() => zones.addRecord({ name: 'a.other.test', type: 'A', address: '127.0.0.1' })).toThrow(/not in any lab zone/);
    zones.addRecord({ name: '@', type: 'MX', exchange: 'mx.receiver.test', priority: 1 }, 'Other.Test.');
    zones.addRecord({ name: 'a.other.test', type: 'A', address: '127.0.0.1' });
    expect(brief(zones.lookup('other.test', 'MX'))).toEqual(['other.test MX 1 mx.receiver.test']);
    expect(zones.lookup('other.test', 'SOA').rcode).toBe('NOERROR');
    expect(brief(zones.lookup('a.other.test', 'A'))).toEqual(['a.other.test A 127.0.0.1']);
  });

  it('remove-records removes one type or every record at a name', () => {
    const zones = lab();
    expect(zones.removeRecords('mx.receiver.test', 'aaaa')).toBe(1);
    expect(zones.lookup('mx.receiver.test', 'AAAA').answers).toEqual([]);
    expect(zones.lookup('mx.receiver.test', 'A').answers).toHaveLength(1);
    expect(zones.removeRecords('receiver.test')).toBe(3);
    expect(zones.lookup('receiver.test', 'MX').answers).toEqual([]);
    expect(zones.lookup('receiver.test', 'SOA').answers).toHaveLength(1); // the apex keeps its SOA
    expect(zones.removeRecords('nothing.receiver.test')).toBe(0);
    expect(zones.removeRecords('outside.example')).toBe(0);
  });

  it('bumps the zone serial on every change', () => {
    const zones = lab();
    const serial = () => (zones.lookup('receiver.test', 'SOA').answers[0] as { serial: number }).serial;
    expect(serial()).toBe(1);
    zones.addRecord({ name: 'n.receiver.test', type: 'A', address: '127.0.0.1' });
    zones.removeRecords('n.receiver.test');
    expect(serial()).toBe(3);
    zones.removeRecords('n.receiver.test'); // nothing removed, nothing changed
    expect(serial()).toBe(3);
  });

  it('set-zones replaces everything; add-zone and remove-zone edit one zone', () => {
    const zones = lab();
    zones.setZones([nullMx]);
    expect(zones.lookup('receiver.test', 'MX').rcode).toBe('REFUSED');
    zones.addZone(receiver);
    expect(zones.lookup('receiver.test', 'MX').answers).toHaveLength(2);
    zones.addZone({ origin: 'receiver.test', records: [] }); // replaces
    expect(zones.lookup('mx.receiver.test', 'A').rcode).toBe('NXDOMAIN');
    expect(zones.removeZone('RECEIVER.test.')).toBe(true);
    expect(zones.removeZone('receiver.test')).toBe(false);
    expect(zones.list().map((z) => z.origin)).toEqual(['nomail.test']);
  });

  it('lists zones so that they can be loaded again', () => {
    const zones = lab();
    zones.addRecord({ name: 'n.receiver.test', type: 'A', address: '127.0.0.1' });
    const copy = new Zones(zones.list());
    for (const [name, type] of [['www.receiver.test', 'A'], ['receiver.test', 'SOA'], ['nomail.test', 'MX'], ['5.0.0.127.in-addr.arpa', 'PTR'], ['n.receiver.test', 'A']] as const) {
      expect(copy.lookup(name, type), `${name} ${type}`).toEqual(zones.lookup(name, type));
    }
  });

  it('rejects invalid changes and then changes nothing', () => {
    const zones = lab();
    const before = JSON.stringify(zones.list());
    const bad: Array<() => unknown> = [
      () => zones.addRecord({ name: 'bad.receiver.test', type: 'A', address: '999.1.1.1' }),
      () => zones.addRecord({ name: 'bad.receiver.test', type: 'AAAA', address: '127.0.0.1' }),
      () => zones.addRecord({ name: 'bad.receiver.test', type: 'MX', exchange: 'mx.receiver.test', priority: 70000 }),
      () => zones.addRecord({ name: 'bad..receiver.test', type: 'A', address: '127.0.0.1' }),
      () => zones.addRecord({ name: 'bäd.receiver.test', type: 'A', address: '127.0.0.1' }),
      () => zones.addRecord({ name: 'bad.receiver.test', type: 'SRV', target: 'x' } as never),
      () => zones.addRecord({ name: 'bad.receiver.test', type: 'A', address: '127.0.0.1', ttl: -1 }),
      () => zones.addRecord({ name: '@', type: 'A', address: '127.0.0.1' }),
      // A CNAME is alone at its name, and never at an apex.
      () => zones.addRecord({ name: 'mx.receiver.test', type: 'CNAME', domain: 'x.receiver.test' }),
      () => zones.addRecord({ name: 'www.receiver.test', type: 'A', address: '127.0.0.1' }),
      () => zones.addRecord({ name: 'receiver.test', type: 'CNAME', domain: 'x.receiver.test' }),
      () => zones.setRecords('mx.receiver.test', 'A', [{ name: 'mx2.receiver.test', type: 'A', address: '127.0.0.1' }]),
      () => zones.setRecords('mx.receiver.test', 'A', [{ name: 'mx.receiver.test', type: 'MX', exchange: 'a.test', priority: 1 }]),
      () => zones.setRecords('receiver.test', 'SOA', []),
      () => zones.setRecords('x.example', 'A', []),
      () => zones.setZones([receiver, receiver]),
      () => zones.setZones([{ origin: 'a.test', records: [{ name: 'b.test', type: 'A', address: '127.0.0.1' }] }]),
      () => zones.addZone({ origin: 'bad.test', soa: { serial: -5 }, records: [] }),
    ];
    for (const change of bad) {
      expect(change).toThrow();
      expect(JSON.stringify(zones.list())).toBe(before);
    }
  });
});

describe('Zones: TLSA records (RFC 6698)', () => {
  const sha256 = 'AB'.repeat(32);
  const tlsa = (fields: Partial<{ usage: number; selector: number; matchingType: number; data: string }>) =>
    ({ name: '_25._tcp.mx.receiver.test', type: 'TLSA', usage: 3, selector: 1, matchingType: 1, data: sha256, ...fields }) as const;

  it('stores the data as lower-case hex and answers TLSA queries, case-insensitively', () => {
    const zones = lab();
    zones.addRecord(tlsa({}));
    expect(brief(zones.lookup('_25._TCP.mx.receiver.test.', 'tlsa'))).toEqual([`_25._tcp.mx.receiver.test TLSA 3 1 1 ${'ab'.repeat(32)}`]);
    // The parent of the TLSA name is an empty non-terminal: NODATA, not NXDOMAIN.
    expect(zones.lookup('_tcp.mx.receiver.test', 'TLSA')).toMatchObject({ rcode: 'NOERROR', answers: [] });
  });

  it('treats the same record in upper and lower case hex as one (no duplicates in the RRset)', () => {
    const zones = lab();
    zones.addRecord(tlsa({}));
    zones.addRecord(tlsa({ data: sha256.toLowerCase() }));
    zones.addRecord(tlsa({ usage: 2 }));
    expect(zones.lookup('_25._tcp.mx.receiver.test', 'TLSA').answers).toHaveLength(2);
    zones.setRecords('_25._tcp.mx.receiver.test', 'TLSA', [tlsa({ matchingType: 0, data: '3059301306' }), tlsa({ matchingType: 0, data: '3059301306'.toUpperCase() })]);
    expect(brief(zones.lookup('_25._tcp.mx.receiver.test', 'TLSA'))).toEqual(['_25._tcp.mx.receiver.test TLSA 3 1 0 3059301306']);
  });

  it('accepts a SHA2-512 digest and private-use values up to 255', () => {
    const zones = lab();
    zones.addRecord(tlsa({ matchingType: 2, data: 'cd'.repeat(64) }));
    zones.addRecord(tlsa({ usage: 255, selector: 255, matchingType: 255, data: '00' }));
    expect(zones.lookup('_25._tcp.mx.receiver.test', 'TLSA').answers).toHaveLength(2);
  });

  it('rejects bad fields and data with a message that says which', () => {
    const zones = lab();
    const cases: Array<[Parameters<typeof tlsa>[0], RegExp]> = [
      [{ usage: 256 }, /usage must be an integer from 0 to 255/],
      [{ selector: -1 }, /selector must be an integer from 0 to 255/],
      [{ matchingType: 1.5 }, /matchingType must be an integer from 0 to 255/],
      [{ data: '' }, /non-empty, even-length hex/],
      [{ data: 'abc' }, /non-empty, even-length hex/],
      [{ data: 'zz' }, /non-empty, even-length hex/],
      [{ data: 'ab'.repeat(31) }, /matching type 1 is a 32-octet digest, got 31 octets/],
      [{ matchingType: 2, data: sha256 }, /matching type 2 is a 64-octet digest, got 32 octets/],
    ];
    for (const [fields, message] of cases) expect(() => zones.addRecord(tlsa(fields)), JSON.stringify(fields)).toThrow(message);
    expect(() => zones.addRecord({ name: '_25._tcp.mx.receiver.test', type: 'TLSA', data: sha256 } as never)).toThrow(/_25\._tcp\.mx\.receiver\.test TLSA usage/);
    expect(zones.lookup('_25._tcp.mx.receiver.test', 'TLSA').rcode).toBe('NXDOMAIN');
  });
});
