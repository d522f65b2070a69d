// The mail DNS checker over zone data: a sound configuration has no findings, and every planted fault is found with
// a message that says what and why. The SPF evaluation is also compared with mailauth's over the same zones (through
// the in-memory resolver), so the checker agrees with what the lab's MX computes.
import { generateKeyPairSync } from 'node:crypto';
import type { DNSResolver } from 'mailauth';
import { spf as mailauthSpf } from 'mailauth/lib/spf/index.js';
import { describe, expect, it } from 'vitest';
import type { DnsRecord, ZoneConfig } from '../../shared/config.js';
import lab from '../../../lab/default.js';
import { planLab } from '../topology.js';
import { checkMailDns, createZoneResolver, dkimSelectorsOf, evaluateSpf, formatFindings, mailDnsInputOf, parseSpf, reverseName, type Finding, type MailDnsInput } from './mail-dns.js';

const ORIGINS = ['sender.test', 'receiver.test', '0.0.127.in-addr.arpa'];

/** Groups records into the zones of ORIGINS by their name (longest origin first). */
function zonesOf(records: DnsRecord[]): ZoneConfig[] {
  return ORIGINS.map((origin) => ({ origin, records: records.filter((r) => r.name === origin || r.name.endsWith('.' + origin)) }));
}

const rsaKey = (bits: number) => generateKeyPairSync('rsa', { modulusLength: bits }).publicKey.export({ type: 'spki', format: 'der' }).toString('base64');
const RSA_2048 = rsaKey(2048);
// An Ed25519 key record holds the raw 32-byte key (RFC 8463 §4): the end of the SPKI.
const ED25519 = generateKeyPairSync('ed25519').publicKey.export({ type: 'spki', format: 'der' }).subarray(-32).toString('base64');

const MTA = { hostname: 'mta.sender.test', address: '127.0.0.5', domains: ['sender.test', 'receiver.test'] };

function soundRecords(): DnsRecord[] {
  return [
    { name: 'sender.test', type: 'MX', exchange: 'mta.sender.test', priority: 10 },
    { name: 'mta.sender.test', type: 'A', address: '127.0.0.5' },
    { name: 'sender.test', type: 'TXT', data: 'v=spf1 mx -all' },
    { name: 's1._domainkey.sender.test', type: 'TXT', data: `v=DKIM1; k=rsa; p=${RSA_2048}` },
    { name: '_dmarc.sender.test', type: 'TXT', data: 'v=DMARC1; p=reject; rua=mailto:dmarc@sender.test' },
    { name: 'receiver.test', type: 'MX', exchange: 'mx.receiver.test', priority: 10 },
    { name: 'mx.receiver.test', type: 'A', address: '127.0.0.4' },
    { name: 'receiver.test', type: 'TXT', data: 'v=spf1 ip4:127.0.0.5 -all' },
    { name: 'e1._domainkey.receiver.test', type: 'TXT', data: `v=DKIM1; k=ed25519; p=${ED25519}` },
    { name: '_dmarc.receiver.test', type: 'TXT', data: 'v=DMARC1; p=quarantine; pct=50; adkim=s; aspf=r' },
    { name: '5.0.0.127.in-addr.arpa', type: 'PTR', domain: 'mta.sender.test' },
    { name: '4.0.0.127.in-addr.arpa', type: 'PTR', domain: 'mx.receiver.test' },
  ];
}

/** The sound configuration, edited: `edit` gets its records and returns the ones to check. */
function input(edit: (records: DnsRecord[]) => DnsRecord[] = (r) => r): MailDnsInput {
  return {
    zones: zonesOf(edit(soundRecords())),
    sendingHosts: [MTA],
    signers: [
      { domain: 'sender.test', selector: 's1' },
      { domain: 'receiver.test', selector: 'e1' },
    ],
    labDomains: ['sender.test', 'receiver.test'],
  };
}

const replacing = (name: string, type: DnsRecord['type'], ...fresh: DnsRecord[]) => (records: DnsRecord[]) => [
  ...records.filter((r) => !(r.name === name && r.type === type)),
  ...fresh,
];
const txt = (name: string, data: string): DnsRecord => ({ name, type: 'TXT', data });
const spfOf = (domain: string, data: string) => replacing(domain, 'TXT', txt(domain, data));
const finding = (severity: Finding['severity'], check: Finding['check'], record: string, message: string): Finding => ({ severity, check, record, message });

describe('checkMailDns: a sound configuration', () => {
  it('has no findings at all', () => {
    expect(checkMailDns(input())).toEqual([]);
  });
});

describe('checkMailDns: SPF (RFC 7208)', () => {
  // sender.test includes l1, l1 includes l2, … l9 includes l10: 10 includes. l10 ends the chain with one more term.
  const chain = (last: string) => (records: DnsRecord[]) => [
    ...spfOf('sender.test', 'v=spf1 ip4:127.0.0.5 include:l1.sender.test -all')(records),
    ...Array.from({ length: 9 }, (_, i) => txt(`l${i + 1}.sender.test`, `v=spf1 include:l${i + 2}.sender.test -all`)),
    txt('l10.sender.test', `v=spf1 ${last} -all`),
  ];

  it('counts DNS lookups through a chain of includes: 11 is an error', () => {
    expect(checkMailDns(input(chain('a:mta.sender.test')))).toEqual([
      finding('error', 'spf', 'sender.test TXT (SPF)', '11 DNS lookups, more than the 10 RFC 7208 §4.6.4 allows (receivers get permerror)'),
    ]);
  });

  it('accepts exactly 10 lookups', () => {
    expect(checkMailDns(input(chain('ip4:192.0.2.1')))).toEqual([]);
  });

  it('evaluates as a receiver does: the 11th lookup is a permerror for a host matched only behind it', () => {
    const zones = input(chain('a:mta.sender.test')).zones;
    expect(evaluateSpf(zones, '127.0.0.5', 'sender.test').result).toBe('pass'); // ip4 matches before any lookup
    const rewired = input((r) => chain('a:mta.sender.test')(r).map((x) => (x.name === 'sender.test' && x.type === 'TXT' ? txt('sender.test', 'v=spf1 include:l1.sender.test -all') : x)));
    expect(evaluateSpf(rewired.zones, '127.0.0.5', 'sender.test')).toEqual({ result: 'permerror', reason: 'more than 10 DNS lookups' });
    expect(checkMailDns(rewired)).toContainEqual(
      finding('error', 'spf', 'sender.test TXT (SPF)', "mta.sender.test (127.0.0.5) sends sender.test's mail but SPF gives permerror for 127.0.0.5 (more than 10 DNS lookups)"),
    );
  });

  it('two SPF records are a permerror', () => {
    const findings = checkMailDns(input((r) => [...r, txt('sender.test', 'v=spf1 a -all')]));
    expect(findings).toEqual([
      finding('error', 'spf', 'sender.test TXT (SPF)', '2 SPF records ("v=spf1 mx -all", "v=spf1 a -all"); more than one is a permerror (RFC 7208 §4.5), so SPF fails for every sender'),
    ]);
  });

  it('reports each syntax error of a record', () => {
    const findings = checkMailDns(input(spfOf('sender.test', 'v=spf1 mx ip4:300.1.1.1 a/33 foo:bar include -all')));
    const syntax = (message: string) => finding('error', 'spf', 'sender.test TXT (SPF)', `syntax: ${message}; receivers get permerror (RFC 7208 §4.6)`);
    expect(findings).toEqual([
      syntax('"ip4:300.1.1.1": ip4 needs an IPv4 address'),
      syntax('"a/33": /33 is not a prefix length from 0 to 32'),
      syntax('"foo:bar": unknown mechanism "foo" (RFC 7208 §5 makes that a permerror)'),
      syntax('"include": include needs ":" and a domain'),
    ]);
  });

  it('parses every mechanism and modifier of RFC 7208', () => {
    const { record, errors } = parseSpf('v=spf1 +a -mx:mx.test/24//64 ~ptr ?ip4:192.0.2.0/24 ip6:2001:db8::/32 exists:%{i}.x.test include:y.test redirect=z.test exp=e.test unknown=x all');
    expect(errors).toEqual([]);
    expect(record.directives.map((d) => `${d.qualifier}${d.mechanism.kind}`)).toEqual(['+a', '-mx', '~ptr', '?ip4', '+ip6', '+exists', '+include', '+all']);
    expect(record.redirect).toBe('z.test');
    expect(parseSpf('v=spf1 redirect=a.test redirect=b.test').errors).toEqual(['"redirect=" appears twice; RFC 7208 §6 allows it once']);
    expect(parseSpf('v=spf1 exists:%{q}.x.test').errors).toEqual(['"exists:%{q}.x.test": "%{q}.x.test" is not a valid domain-spec (a stray % or a bad macro, RFC 7208 §7.1)']);
    expect(parseSpf('v=spf1 include:localhost').errors).toEqual(['"include:localhost": "localhost" is not a fully qualified domain name']);
  });

  it('a sending host not covered: error naming the host, its address and the result', () => {
    const findings = checkMailDns(input(spfOf('sender.test', 'v=spf1 ip4:192.0.2.0/24 ~all')));
    expect(findings).toEqual([
      finding('error', 'spf', 'sender.test TXT (SPF)', "mta.sender.test (127.0.0.5) sends sender.test's mail but SPF gives softfail for 127.0.0.5 (matched ~all of sender.test)"),
    ]);
  });

  it('+all, and a sending domain without SPF', () => {
    const findings = checkMailDns(input((r) => spfOf('sender.test', 'v=spf1 +all')(r).filter((x) => !(x.name === 'receiver.test' && x.type === 'TXT'))));
    expect(findings).toEqual([
      finding('warning', 'spf', 'sender.test TXT (SPF)', '"+all" lets every host on the Internet pass SPF for sender.test'),
      finding('warning', 'spf', 'receiver.test TXT (SPF)', 'no SPF record, though mta.sender.test sends its mail: receivers get SPF "none" and cannot tell its hosts from forgers'),
    ]);
  });

  it('more than 2 void lookups is a warning', () => {
    const findings = checkMailDns(input(spfOf('sender.test', 'v=spf1 ip4:127.0.0.5 a:gone1.sender.test a:gone2.sender.test mx:gone3.sender.test -all')));
    expect(findings).toEqual([
      finding('warning', 'spf', 'sender.test TXT (SPF)', '3 void lookups (a:gone1.sender.test, a:gone2.sender.test, mx:gone3.sender.test), more than the 2 RFC 7208 §4.6.4 recommends; receivers may give permerror'),
    ]);
  });

  it('an include loop is an error', () => {
    const findings = checkMailDns(input((r) => [...spfOf('sender.test', 'v=spf1 ip4:127.0.0.5 include:loop.sender.test -all')(r), txt('loop.sender.test', 'v=spf1 include:sender.test -all')]));
    expect(findings).toContainEqual(finding('error', 'spf', 'sender.test TXT (SPF)', 'include/redirect loop: sender.test → loop.sender.test → sender.test'));
    // A host matched nowhere runs round the loop until the lookup limit stops it.
    expect(evaluateSpf(input((r) => [...spfOf('sender.test', 'v=spf1 include:loop.sender.test -all')(r), txt('loop.sender.test', 'v=spf1 include:sender.test -all')]).zones, '127.0.0.9', 'sender.test')).toEqual({
      result: 'permerror',
      reason: 'more than 10 DNS lookups',
    });
  });

  it('an include of a domain without SPF is an error even when no sending host reaches it', () => {
    const findings = checkMailDns(input(spfOf('receiver.test', 'v=spf1 ip4:127.0.0.5 include:nothing.receiver.test -all')));
    expect(findings).toEqual([
      finding('error', 'spf', 'receiver.test TXT (SPF)', 'include:nothing.receiver.test (in receiver.test) points to a domain without an SPF record, which is a permerror (RFC 7208 §5.2, §6.1)'),
    ]);
  });

  // The same zones through the in-memory resolver, for mailauth (what the lab's MX runs): both must agree. (mailauth's
  // DNSResolver type says strings only, though it reads MX answers as { exchange, priority }, as node:dns gives them.)
  const cases: { name: string; records: DnsRecord[]; ip: string; expected: string }[] = [
    { name: 'mx pass', records: [], ip: '127.0.0.5', expected: 'pass' },
    { name: 'mx fail', records: [], ip: '127.0.0.9', expected: 'fail' },
    { name: 'a/24 pass', records: [txt('sender.test', 'v=spf1 a:mta.sender.test/24 ~all')], ip: '127.0.0.77', expected: 'pass' },
    { name: 'a/24 softfail', records: [txt('sender.test', 'v=spf1 a:mta.sender.test/24 ~all')], ip: '127.0.1.1', expected: 'softfail' },
    { name: 'include pass', records: [txt('sender.test', 'v=spf1 include:_spf.sender.test ?all'), txt('_spf.sender.test', 'v=spf1 ip4:127.0.0.0/29 -all')], ip: '127.0.0.5', expected: 'pass' },
    { name: 'include no match', records: [txt('sender.test', 'v=spf1 include:_spf.sender.test ?all'), txt('_spf.sender.test', 'v=spf1 ip4:127.0.0.0/29 -all')], ip: '127.0.0.9', expected: 'neutral' },
    { name: 'include of none', records: [txt('sender.test', 'v=spf1 include:nothing.sender.test -all')], ip: '127.0.0.5', expected: 'permerror' },
    { name: 'redirect', records: [txt('sender.test', 'v=spf1 redirect=_spf.sender.test'), txt('_spf.sender.test', 'v=spf1 ip4:127.0.0.5 -all')], ip: '127.0.0.9', expected: 'fail' },
    { name: 'ip6', records: [txt('sender.test', 'v=spf1 ip6:2001:db8::/32 -all')], ip: '2001:db8::5', expected: 'pass' },
    { name: 'exists with a macro', records: [txt('sender.test', 'v=spf1 exists:%{i}.allow.sender.test -all'), { name: '127.0.0.5.allow.sender.test', type: 'A', address: '127.0.0.2' }], ip: '127.0.0.5', expected: 'pass' },
    {
      name: 'the 11th lookup',
      records: [txt('sender.test', 'v=spf1 include:l1.sender.test -all'), ...Array.from({ length: 10 }, (_, i) => txt(`l${i + 1}.sender.test`, i < 9 ? `v=spf1 include:l${i + 2}.sender.test -all` : 'v=spf1 a:mta.sender.test -all'))],
      ip: '127.0.0.5',
      expected: 'permerror',
    },
    { name: 'two records', records: [txt('sender.test', 'v=spf1 -all'), txt('sender.test', 'v=spf1 +all')], ip: '127.0.0.5', expected: 'permerror' },
    { name: 'unknown mechanism', records: [txt('sender.test', 'v=spf1 foo -all')], ip: '127.0.0.5', expected: 'permerror' },
  ];
  for (const c of cases) {
    it(`evaluates like mailauth: ${c.name} → ${c.expected}`, async () => {
      const zones = input((r) => (c.records.length ? [...r.filter((x) => !(x.name === 'sender.test' && x.type === 'TXT')), ...c.records] : r)).zones;
      const ours = evaluateSpf(zones, c.ip, 'sender.test');
      const theirs = await mailauthSpf({ sender: 'alice@sender.test', ip: c.ip, helo: 'mta.sender.test', mta: 'mx.receiver.test', resolver: createZoneResolver(zones) as DNSResolver });
      expect(ours.result).toBe(c.expected);
      expect(theirs.status.result).toBe(c.expected);
    });
  }
});

describe('createZoneResolver', () => {
  it('answers from the zones with node:dns error codes', async () => {
    const resolve = createZoneResolver(input().zones);
    expect(await resolve('sender.test', 'MX')).toEqual([{ exchange: 'mta.sender.test', priority: 10 }]);
    expect(await resolve('sender.test', 'TXT')).toEqual([['v=spf1 mx -all']]);
    await expect(resolve('nowhere.sender.test', 'A')).rejects.toMatchObject({ code: 'ENOTFOUND' });
    await expect(resolve('sender.test', 'A')).rejects.toMatchObject({ code: 'ENODATA' });
    // The parent of a name that exists exists too (an empty non-terminal): NODATA, not NXDOMAIN.
    await expect(resolve('_domainkey.sender.test', 'TXT')).rejects.toMatchObject({ code: 'ENODATA' });
    await expect(resolve('example.com', 'A')).rejects.toMatchObject({ code: 'EREFUSED' });
  });
});

describe('checkMailDns: DKIM key records', () => {
  it('a signer without a key record', () => {
    const findings = checkMailDns(input((r) => r.filter((x) => !x.name.startsWith('s1._domainkey'))));
    expect(findings).toEqual([
      finding('error', 'dkim', 's1._domainkey.sender.test TXT (DKIM)', 'no key record for selector "s1" of sender.test: every signature with s=s1 d=sender.test fails (RFC 6376 §6.1.2)'),
    ]);
  });

  it('a 1024-bit RSA key is a warning, a 512-bit one an error', () => {
    const at = 's1._domainkey.sender.test';
    expect(checkMailDns(input(replacing(at, 'TXT', txt(at, `v=DKIM1; k=rsa; p=${rsaKey(1024)}`))))).toEqual([
      finding('warning', 'dkim', `${at} TXT (DKIM)`, 'RSA key of 1024 bits; RFC 8301 §3.2 says signers should use at least 2048'),
    ]);
    expect(checkMailDns(input(replacing(at, 'TXT', txt(at, `v=DKIM1; p=${rsaKey(1016)}`)))).map((f) => f.severity)).toEqual(['error']);
    expect(checkMailDns(input(replacing(at, 'TXT', txt(at, `v=DKIM1; p=${rsaKey(512)}`))))).toEqual([
      finding('error', 'dkim', `${at} TXT (DKIM)`, 'RSA key of 512 bits: verifiers must not accept keys under 1024 bits (RFC 8301 §3.2)'),
    ]);
  });

  it('a revoked key (empty p=)', () => {
    const at = 's1._domainkey.sender.test';
    expect(checkMailDns(input(replacing(at, 'TXT', txt(at, 'v=DKIM1; k=rsa; p='))))).toEqual([
      finding('error', 'dkim', `${at} TXT (DKIM)`, 'p= is empty: the key is revoked (RFC 6376 §3.6.1), every signature with this selector fails'),
    ]);
  });

  it('tag errors: an Ed25519 key of the wrong length, an unknown key type, v= not first', () => {
    const at = 'e1._domainkey.receiver.test';
    const check = (data: string) => checkMailDns(input(replacing(at, 'TXT', txt(at, data)))).map((f) => f.message);
    expect(check(`v=DKIM1; k=ed25519; p=${RSA_2048}`)).toEqual(['p= holds 294 bytes; an Ed25519 key is 32 (RFC 8463 §4)']);
    expect(check(`v=DKIM1; k=dsa; p=${ED25519}`)).toEqual(['k=dsa is not a key type verifiers know (rsa, ed25519)']);
    expect(check(`k=ed25519; v=DKIM1; p=${ED25519}`)).toEqual(['v=DKIM1: when present it must be the first tag and be DKIM1 (RFC 6376 §3.6.1)']);
  });

  it('a published selector no signer uses is info', () => {
    const findings = checkMailDns(input((r) => [...r, txt('old._domainkey.sender.test', `v=DKIM1; p=${RSA_2048}`)]));
    expect(findings).toEqual([
      finding('info', 'dkim', 'old._domainkey.sender.test TXT (DKIM)', 'selector "old" of sender.test is published but no signer uses it (an old key after a rotation can be revoked with an empty p=)'),
    ]);
  });
});

describe('checkMailDns: DMARC (RFC 7489)', () => {
  const at = '_dmarc.sender.test';
  const dmarc = (data: string) => checkMailDns(input(replacing(at, 'TXT', txt(at, data))));

  it('a malformed policy', () => {
    expect(dmarc('v=DMARC1; p=maybe')).toEqual([
      finding('error', 'dmarc', `${at} TXT (DMARC)`, 'p=maybe is not a policy: none, quarantine or reject (RFC 7489 §6.3); the record is malformed, so receivers may apply no policy (RFC 7489 §6.6.3)'),
    ]);
  });

  it('every tag is checked', () => {
    const messages = dmarc('v=DMARC1; sp=never; pct=150; adkim=x; rua=https://r.test/').map((f) => f.message.replace(/; the record is malformed.*$/, ''));
    expect(messages).toEqual([
      'no p= tag: the policy is required (RFC 7489 §6.3)',
      'sp=never is not a policy: none, quarantine or reject (RFC 7489 §6.3)',
      'pct=150 is not a whole number from 0 to 100 (RFC 7489 §6.3)',
      'adkim=x must be r (relaxed) or s (strict) (RFC 7489 §6.3)',
      'rua=https://r.test/ is not a mailto: URI (RFC 7489 §6.4)',
    ]);
    expect(dmarc('p=reject; v=DMARC1')).toEqual([
      finding('error', 'dmarc', `${at} TXT (DMARC)`, '"p=reject; v=DMARC1" does not start with v=DMARC1, so receivers discard it (RFC 7489 §6.6.3) and sender.test has no DMARC policy'),
    ]);
  });

  it('reports to a domain outside the lab', () => {
    expect(dmarc('v=DMARC1; p=reject; rua=mailto:reports@dmarc.example!10m')).toEqual([
      finding('warning', 'dmarc', `${at} TXT (DMARC)`, "rua sends reports to dmarc.example, outside the lab's domains: a report receiver in another domain must publish sender.test._report._dmarc.dmarc.example to accept them (RFC 7489 §7.1)"),
    ]);
  });

  it('reports to another lab domain need its authorization record', () => {
    const rua = 'v=DMARC1; p=reject; ruf=mailto:forensic@receiver.test';
    expect(dmarc(rua).map((f) => f.message)).toEqual(['ruf sends reports to receiver.test, which does not authorize them: sender.test._report._dmarc.receiver.test TXT "v=DMARC1" is missing (RFC 7489 §7.1)']);
    const authorized = input((r) => [...replacing(at, 'TXT', txt(at, rua))(r), txt('sender.test._report._dmarc.receiver.test', 'v=DMARC1')]);
    expect(checkMailDns(authorized)).toEqual([]);
  });

  it('a sending domain without DMARC is a warning', () => {
    expect(checkMailDns(input((r) => r.filter((x) => x.name !== at)))).toEqual([
      finding('warning', 'dmarc', `${at} TXT (DMARC)`, 'no DMARC record for sender.test, which sends mail: receivers apply no DMARC policy, so forged From: sender.test is not refused'),
    ]);
  });
});

describe('checkMailDns: MX', () => {
  it('an MX target without an address', () => {
    const findings = checkMailDns(input(replacing('receiver.test', 'MX', { name: 'receiver.test', type: 'MX', exchange: 'mx2.receiver.test', priority: 10 })));
    expect(findings).toEqual([
      finding('error', 'mx', 'receiver.test MX', 'MX 10 mx2.receiver.test has no A or AAAA record (no such name): mail for receiver.test cannot be delivered to it'),
    ]);
  });

  it('a null MX next to another MX', () => {
    const findings = checkMailDns(input((r) => [...r, { name: 'receiver.test', type: 'MX', exchange: '.', priority: 0 }]));
    expect(findings).toEqual([
      finding('error', 'mx', 'receiver.test MX', 'a null MX ("0 .") next to 1 other MX record(s); RFC 7505 §3 says it must be the only one, so senders cannot tell whether receiver.test takes mail'),
      finding('info', 'mx', 'receiver.test MX', 'receiver.test publishes a null MX yet sends mail: bounces to it cannot be delivered, and receivers may refuse its MAIL FROM with 550 5.7.27 (RFC 7505 §4.2)'),
    ]);
  });

  it('an MX target that is an alias', () => {
    const findings = checkMailDns(
      input((r) => [...replacing('receiver.test', 'MX', { name: 'receiver.test', type: 'MX', exchange: 'alias.receiver.test', priority: 5 })(r), { name: 'alias.receiver.test', type: 'CNAME', domain: 'mx.receiver.test' }]),
    );
    expect(findings).toEqual([
      finding('warning', 'mx', 'receiver.test MX', "MX 5 alias.receiver.test is an alias (CNAME to mx.receiver.test); RFC 5321 §5.1 and RFC 2181 §10.3 say an MX must name a host's own address records"),
    ]);
  });
});

describe('checkMailDns: PTR and forward-confirmed reverse DNS', () => {
  it('a sending host without a PTR', () => {
    const findings = checkMailDns(input((r) => r.filter((x) => x.type !== 'PTR' || !x.name.startsWith('5.'))));
    expect(findings).toEqual([
      finding('error', 'ptr', '5.0.0.127.in-addr.arpa PTR', "no PTR for mta.sender.test's address 127.0.0.5: many receivers refuse or distrust mail from an address without reverse DNS"),
    ]);
  });

  it('a PTR that does not match the HELO name, and one that does not resolve back', () => {
    const ptr = (domain: string) => replacing('5.0.0.127.in-addr.arpa', 'PTR', { name: '5.0.0.127.in-addr.arpa', type: 'PTR', domain });
    expect(checkMailDns(input((r) => [...ptr('relay.sender.test')(r), { name: 'relay.sender.test', type: 'A', address: '127.0.0.5' }]))).toEqual([
      finding('warning', 'ptr', '5.0.0.127.in-addr.arpa PTR', 'PTR names relay.sender.test, but 127.0.0.5 says HELO mta.sender.test: the reverse name and the HELO name differ'),
    ]);
    expect(checkMailDns(input(ptr('mx.receiver.test')))).toEqual([
      finding('warning', 'ptr', '5.0.0.127.in-addr.arpa PTR', 'PTR names mx.receiver.test, which does not resolve back to 127.0.0.5: forward-confirmed reverse DNS fails'),
    ]);
  });

  it('reverse names of IPv4 and IPv6 addresses', () => {
    expect(reverseName('192.0.2.1')).toBe('1.2.0.192.in-addr.arpa');
    expect(reverseName('2001:db8::1')).toBe('1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa');
  });
});

describe('formatFindings', () => {
  it('prints one aligned line per finding', () => {
    const text = formatFindings([
      finding('error', 'spf', 'sender.test TXT (SPF)', '11 DNS lookups, more than the 10 RFC 7208 §4.6.4 allows'),
      finding('warning', 'mx', 'a.test MX', 'w'),
    ]);
    expect(text.split('\n')).toEqual(['error   sender.test TXT (SPF)  11 DNS lookups, more than the 10 RFC 7208 §4.6.4 allows', 'warning a.test MX              w']);
    expect(formatFindings([])).toBe('');
  });
});

describe('mailDnsInputOf and dkimSelectorsOf', () => {
  it('takes every MTA as a sending host for every lab domain with users', () => {
    const addresses = Object.fromEntries(Object.keys(lab.hosts).map((h, i) => [h, `127.0.0.${i + 2}`]));
    const plan = planLab(lab, { addresses, portOffset: 0, dataRoot: '/nonexistent' });
    const derived = mailDnsInputOf(plan, lab, []);
    expect(derived.sendingHosts).toEqual([{ hostname: 'mta.sender.test', address: addresses.mta, domains: ['sender.test', 'receiver.test'] }]);
    expect(derived.labDomains).toEqual(['sender.test', 'receiver.test']);
    // The default lab publishes SPF and DMARC for sender.test (its DKIM key only at start), none for receiver.test:
    // warnings for receiver.test only, and its MX and PTR records are sound.
    const findings = checkMailDns(derived);
    expect(findings.filter((f) => f.severity !== 'warning')).toEqual([]);
    expect(findings.map((f) => `${f.check} ${f.record}`)).toEqual(['spf receiver.test TXT (SPF)', 'dmarc _dmarc.receiver.test TXT (DMARC)']);
  });

  it('reads DKIM selectors as unknown data', () => {
    const withDkim = { ...lab, domains: { 'sender.test': { dkim: { selector: 'a' } }, 'receiver.test': { dkim: [{ selector: 'b' }, { selector: 3 }, null] }, 'other.test': {} } } as unknown as typeof lab;
    expect(dkimSelectorsOf(withDkim)).toEqual([
      { domain: 'sender.test', selector: 'a' },
      { domain: 'receiver.test', selector: 'b' },
    ]);
  });
});
