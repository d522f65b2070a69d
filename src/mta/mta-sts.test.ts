// MTA-STS policy discovery, fetch and cache against the real lab DNS (in-process) and real HTTPS policy hosts with
// lab-CA certificates (sound and faulty). Each test makes its own MtaStsPolicies, so no cache leaks between tests;
// the `_mta-sts.receiver.test` TXT record is reset before each.
import { describe, it, expect, beforeAll, afterAll, beforeEach } from 'vitest';
import https from 'node:https';
import net from 'node:net';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { promises as dns } from 'node:dns';
import type { AddressInfo } from 'node:net';
import type { DnsNodeConfig } from '../shared/config.js';
import { EventLog } from '../shared/events.js';
import type { NodeContext, RunningRole } from '../shared/node.js';
import { startDns } from '../dns/index.js';
import { createLabCa, issueHostCertificate, type CertificateFault, type HostCertificate, type LabCa } from '../harness/tls/ca.js';
import { MtaStsPolicies, mxAllowedByPolicy, type MtaStsLookup, type MtaStsOptions, type MtaStsPolicy } from './mta-sts.js';

const TXT_NAME = '_mta-sts.receiver.test';
const TXT = 'v=STSv1; id=20260101';
const ENFORCE = 'version: STSv1\r\nmode: enforce\r\nmx: mx.receiver.test\r\nmx: *.backup.receiver.test\r\nmax_age: 86400\r\n';
const POLICY_HOST = { names: ['mta-sts.receiver.test'], addresses: [] };

// The lab DNS in-process on an ephemeral loopback port; of the node fields only address, port and zones matter here.
const config: DnsNodeConfig = {
  name: 'dns', role: 'dns', hostname: 'dns.lab.test', dataDir: '/nonexistent', controlPort: 0, greetingDelayMs: 0, fsync: false,
  address: '127.0.0.1', port: 0, resolver: { host: '127.0.0.1', port: 0 },
  zones: [
    {
      origin: 'receiver.test',
      records: [
        { name: TXT_NAME, type: 'TXT', data: TXT, ttl: 0 },
        { name: 'mta-sts.receiver.test', type: 'A', address: '127.0.0.1', ttl: 0 },
      ],
    },
    { origin: 'nosts.test', records: [{ name: 'nosts.test', type: 'MX', exchange: 'mx.nosts.test', priority: 10 }] },
  ],
};

type Answer = (req: IncomingMessage, res: ServerResponse) => void;

interface PolicyServer {
  port: number;
  /** Paths requested, in order. */
  requests: string[];
  answer: Answer;
  close(): Promise<void>;
}

const servePolicy =
  (text: string, contentType = 'text/plain'): Answer =>
  (_req, res) => {
    res.writeHead(200, { 'content-type': contentType });
    res.end(text);
  };

/** A real HTTPS policy host on loopback with `cert`. */
async function startPolicyServer(cert: HostCertificate, answer: Answer = servePolicy(ENFORCE)): Promise<PolicyServer> {
  const handle: PolicyServer = { port: 0, requests: [], answer, close: async () => {} };
  const server = https.createServer({ cert: cert.cert, key: cert.key }, (req, res) => {
    handle.requests.push(`${req.headers.host} ${req.url}`);
    handle.answer(req, res);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  handle.port = (server.address() as AddressInfo).port;
  handle.close = () =>
    new Promise<void>((resolve) => {
      server.closeAllConnections();
      server.close(() => resolve());
    });
  return handle;
}

let role: RunningRole;
let resolver: dns.Resolver;
let ca: LabCa;
let site: PolicyServer;
let clock: number;

beforeAll(async () => {
  const ctx: NodeContext<DnsNodeConfig> = { config, events: new EventLog('dns'), log: () => {} };
  role = await startDns(ctx);
  resolver = new dns.Resolver({ timeout: 1000, tries: 1 });
  resolver.setServers([`127.0.0.1:${role.services.dns!.port}`]);
  ca = await createLabCa('mta-sts-test');
  site = await startPolicyServer(await issueHostCertificate(ca, POLICY_HOST));
});

afterAll(async () => {
  await site?.close();
  await role?.stop();
});

beforeEach(async () => {
  await setTxt([TXT]);
  site.answer = servePolicy(ENFORCE);
  site.requests.length = 0;
  clock = 1_800_000_000_000;
});

async function setTxt(texts: string[]): Promise<void> {
  await role.rpc['set-records']!({ name: TXT_NAME, type: 'TXT', records: texts.map((data) => ({ data, ttl: 0 })) });
}

function policies(port = site.port, extra: Partial<MtaStsOptions> = {}): MtaStsPolicies {
  return new MtaStsPolicies({
    port,
    ca: ca.cert,
    resolveTxt: (name) => resolver.resolveTxt(name),
    resolveAddresses: (host) => resolver.resolve4(host),
    labAddresses: ['127.0.0.1'],
    timeoutMs: 1000,
    now: () => clock,
    ...extra,
  });
}

function policyOf(lookup: MtaStsLookup): MtaStsPolicy {
  if (lookup.kind !== 'policy') throw new Error(`expected a policy, got ${JSON.stringify(lookup)}`);
  return lookup.policy;
}

const url = (port: number) => `https://mta-sts.receiver.test:${port}/.well-known/mta-sts.txt`;

describe('MTA-STS policy fetch and cache', () => {
  it('fetches an enforce policy over verified HTTPS, then serves it from the cache', async () => {
    const sts = policies();
    const first = await sts.lookup('receiver.test');
    expect(first).toEqual({
      kind: 'policy',
      source: 'fetched',
      expiresAt: clock + 86400_000,
      policy: { id: '20260101', mode: 'enforce', mx: ['mx.receiver.test', '*.backup.receiver.test'], maxAge: 86400 },
    });
    // The Host header names the policy host and port, not the address connected to.
    expect(site.requests).toEqual([`mta-sts.receiver.test:${site.port} /.well-known/mta-sts.txt`]);
    clock += 1000;
    const second = await sts.lookup('Receiver.Test.');
    expect(second).toEqual({ ...first, source: 'cache' });
    expect(site.requests).toHaveLength(1);
  });

  it('fetches again when the TXT id changes', async () => {
    const sts = policies();
    expect(policyOf(await sts.lookup('receiver.test')).id).toBe('20260101');
    await setTxt(['v=STSv1; id=20260202']);
    site.answer = servePolicy(ENFORCE.replace('mode: enforce', 'mode: testing'));
    const changed = await sts.lookup('receiver.test');
    expect(changed).toMatchObject({ kind: 'policy', source: 'fetched', policy: { id: '20260202', mode: 'testing' } });
    expect(site.requests).toHaveLength(2);
  });

  it('fetches again once max_age has passed', async () => {
    const sts = policies();
    site.answer = servePolicy('version: STSv1\nmode: enforce\nmx: mx.receiver.test\nmax_age: 60\n');
    const start = clock;
    expect(await sts.lookup('receiver.test')).toMatchObject({ source: 'fetched', expiresAt: start + 60_000 });
    clock = start + 59_999;
    expect(await sts.lookup('receiver.test')).toMatchObject({ source: 'cache' });
    clock = start + 60_000;
    expect(await sts.lookup('receiver.test')).toMatchObject({ source: 'fetched', expiresAt: start + 120_000 });
    expect(site.requests).toHaveLength(2);
  });

  it('caps max_age at 31557600 seconds and accepts text/plain with parameters', async () => {
    site.answer = servePolicy('version: STSv1\nmode: none\nmax_age: 9999999999\n', 'text/plain; charset=utf-8');
    const found = await policies().lookup('receiver.test');
    expect(found).toMatchObject({ kind: 'policy', policy: { mode: 'none', mx: [], maxAge: 31557600 }, expiresAt: clock + 31557600_000 });
  });

  it('concurrent lookups of one domain share one fetch', async () => {
    const sts = policies();
    const all = await Promise.all(['receiver.test', 'RECEIVER.test', 'receiver.test.', 'receiver.test'].map((d) => sts.lookup(d)));
    expect(new Set(all.map((l) => JSON.stringify(l))).size).toBe(1);
    expect(all[0]).toMatchObject({ kind: 'policy', source: 'fetched' });
    expect(site.requests).toHaveLength(1);
  });

  it('keeps using a valid cached policy when a refresh fails, and when the TXT record goes away', async () => {
    const sts = policies();
    const fetched = await sts.lookup('receiver.test');
    await setTxt(['v=STSv1; id=20260303']);
    site.answer = (_req, res) => res.writeHead(500).end();
    expect(await sts.lookup('receiver.test')).toEqual({ ...fetched, source: 'cache' });
    await setTxt([]);
    expect(await sts.lookup('receiver.test')).toEqual({ ...fetched, source: 'cache' });
    expect(site.requests).toHaveLength(2); // the failed refresh was tried; without a TXT record nothing is fetched
    // Expired and no TXT record: no policy any more.
    clock = (fetched as { expiresAt: number }).expiresAt;
    expect(await sts.lookup('receiver.test')).toMatchObject({ kind: 'none' });
  });

  it('clear() drops the cache', async () => {
    const sts = policies();
    await sts.lookup('receiver.test');
    sts.clear();
    expect(await sts.lookup('receiver.test')).toMatchObject({ source: 'fetched' });
    expect(site.requests).toHaveLength(2);
  });
});

describe('MTA-STS discovery (TXT)', () => {
  it('a domain without _mta-sts TXT has no policy and nothing is fetched', async () => {
    const found = await policies().lookup('nosts.test');
    expect(found.kind).toBe('none');
    expect((found as { reason: string }).reason).toMatch(/^MTA-STS policy of nosts\.test: no TXT record at _mta-sts\.nosts\.test \(ENOTFOUND\)$/);
    expect(site.requests).toHaveLength(0);
  });

  it.each([
    ['two v=STSv1 records', ['v=STSv1; id=1', 'v=STSv1; id=2'], /2 TXT records at _mta-sts\.receiver\.test begin with v=STSv1/],
    ['only other versions', ['v=STSv10; id=1', 'v=spf1 -all'], /0 TXT records/],
    ['an id too long', [`v=STSv1; id=${'a'.repeat(33)}`], /has no valid id/],
    ['an id with a dash', ['v=STSv1; id=2026-01'], /has no valid id/],
    ['no id', ['v=STSv1;'], /has no valid id/],
  ])('%s: no policy', async (_what, texts, reason) => {
    await setTxt(texts);
    const found = await policies().lookup('receiver.test');
    expect(found.kind).toBe('none');
    expect((found as { reason: string }).reason).toMatch(reason);
    expect(site.requests).toHaveLength(0);
  });

  it('ignores other TXT records and reads a record split into several strings', async () => {
    // Over 255 octets: the lab DNS sends it as several character-strings, which are joined.
    await setTxt(['v=spf1 -all', `v=STSv1 ;  id=abc123 ; ext=${'x'.repeat(300)}`]);
    expect(policyOf(await policies().lookup('receiver.test')).id).toBe('abc123');
  });
});

describe('MTA-STS fetch failures', () => {
  async function failure(answer: Answer, extra: Partial<MtaStsOptions> = {}): Promise<{ problem: string; reason: string }> {
    site.answer = answer;
    const found = await policies(site.port, extra).lookup('receiver.test');
    if (found.kind !== 'error') throw new Error(`expected an error, got ${JSON.stringify(found)}`);
    return found;
  }

  it('404: sts-policy-fetch-error naming the URL and status', async () => {
    expect(await failure((_req, res) => res.writeHead(404, { 'content-type': 'text/plain' }).end('no'))).toEqual({
      kind: 'error',
      problem: 'sts-policy-fetch-error',
      reason: `MTA-STS policy of receiver.test: ${url(site.port)} answered 404`,
    });
  });

  it('301: not followed', async () => {
    const found = await failure((req, res) => {
      if (req.url === '/elsewhere') return servePolicy(ENFORCE)(req, res);
      res.writeHead(301, { location: `https://mta-sts.receiver.test:${site.port}/elsewhere` }).end();
    });
    expect(found.problem).toBe('sts-policy-fetch-error');
    expect(found.reason).toContain(`${url(site.port)} answered 301 redirecting to https://mta-sts.receiver.test:${site.port}/elsewhere: redirects are not followed`);
    expect(site.requests).toHaveLength(1);
  });

  it('a Content-Type other than text/plain', async () => {
    const found = await failure(servePolicy(ENFORCE, 'text/html'));
    expect(found).toMatchObject({ problem: 'sts-policy-fetch-error', reason: `MTA-STS policy of receiver.test: ${url(site.port)} answered with Content-Type "text/html", not text/plain` });
  });

  it('a body over 64 KiB is not read to its end', async () => {
    let written = 0;
    const found = await failure((_req, res) => {
      res.writeHead(200, { 'content-type': 'text/plain' }); // chunked: no length announced, the reader must count
      const line = `# ${'x'.repeat(1021)}\n`;
      const more = () => {
        // Far more than the limit unless the client hangs up.
        while (written < 4 * 1024 * 1024 && !res.destroyed) {
          written += line.length;
          if (!res.write(line)) return void res.once('drain', more);
        }
        res.end();
      };
      more();
    });
    expect(found).toMatchObject({ problem: 'sts-policy-fetch-error', reason: `MTA-STS policy of receiver.test: ${url(site.port)} sent a body over 65536 bytes (not read further)` });
    expect(written).toBeLessThan(4 * 1024 * 1024);
  });

  it('an announced Content-Length over 64 KiB is refused before reading', async () => {
    const found = await failure((_req, res) => {
      res.writeHead(200, { 'content-type': 'text/plain', 'content-length': 70000 });
      res.end('x'.repeat(70000));
    });
    expect(found.reason).toContain('announced a body of 70000 bytes, over 65536');
  });

  it.each([
    ['no mode', 'version: STSv1\nmx: mx.receiver.test\nmax_age: 86400\n', 'no mode field'],
    ['no max_age', 'version: STSv1\nmode: enforce\nmx: mx.receiver.test\n', 'no max_age field'],
    ['an empty max_age', 'version: STSv1\nmode: enforce\nmx: mx.receiver.test\nmax_age:\n', 'max_age "" is not 1 to 10 digits'],
    ['max_age in exponent form', 'version: STSv1\nmode: enforce\nmx: mx.receiver.test\nmax_age: 1e3\n', 'max_age "1e3" is not 1 to 10 digits'],
    ['enforce without mx', 'version: STSv1\nmode: enforce\nmax_age: 86400\n', 'Missing mx field (invalid_sts_mx)'],
    ['an unknown mode', 'version: STSv1\nmode: strict\nmx: mx.receiver.test\nmax_age: 86400\n', 'Invalid mode field (invalid_sts_mode)'],
    ['version 2', 'version: STSv2\nmode: enforce\nmx: mx.receiver.test\nmax_age: 86400\n', 'Invalid version field (invalid_sts_version)'],
    ['an empty mx', 'version: STSv1\nmode: enforce\nmx:\nmax_age: 86400\n', 'mx "" is not a host name or *.host name'],
    ['an HTML page', '<html><body>hello</body></html>', 'no mode field'],
  ])('a policy with %s: sts-policy-invalid', async (_what, text, why) => {
    expect(await failure(servePolicy(text))).toEqual({
      kind: 'error',
      problem: 'sts-policy-invalid',
      reason: `MTA-STS policy of receiver.test: ${url(site.port)} is not a valid policy: ${why}`,
    });
  });

  it.each([
    ['expired', 'CERT_HAS_EXPIRED'],
    ['wrong-name', 'ERR_TLS_CERT_ALTNAME_INVALID'],
    ['self-signed', 'DEPTH_ZERO_SELF_SIGNED_CERT'],
  ] as [CertificateFault, string][])('a certificate that is %s: sts-webpki-invalid (%s)', async (fault, code) => {
    const faulty = await startPolicyServer(await issueHostCertificate(ca, POLICY_HOST, fault));
    try {
      const found = await policies(faulty.port).lookup('receiver.test');
      expect(found).toMatchObject({ kind: 'error', problem: 'sts-webpki-invalid' });
      const reason = (found as { reason: string }).reason;
      expect(reason).toContain(`MTA-STS policy of receiver.test: certificate of mta-sts.receiver.test (127.0.0.1) not accepted: ${code}`);
      expect(faulty.requests).toHaveLength(0); // no HTTP request went over the unverified connection
    } finally {
      await faulty.close();
    }
  });

  it('does not connect to an address outside labAddresses', async () => {
    const found = await failure(servePolicy(ENFORCE), { labAddresses: ['127.0.0.2'] });
    expect(found).toEqual({
      kind: 'error',
      problem: 'sts-policy-fetch-error',
      reason: `MTA-STS policy of receiver.test: ${url(site.port)}: mta-sts.receiver.test has only addresses outside the lab (127.0.0.1), not connected to`,
    });
    expect(site.requests).toHaveLength(0);
  });

  it('a policy host that refuses connections', async () => {
    const closed = net.createServer();
    await new Promise<void>((resolve) => closed.listen(0, '127.0.0.1', resolve));
    const port = (closed.address() as AddressInfo).port;
    await new Promise<void>((resolve) => closed.close(() => resolve()));
    const found = await policies(port).lookup('receiver.test');
    expect(found).toMatchObject({ kind: 'error', problem: 'sts-policy-fetch-error' });
    expect((found as { reason: string }).reason).toBe(`MTA-STS policy of receiver.test: ${url(port)}: could not connect (127.0.0.1: ECONNREFUSED connect ECONNREFUSED 127.0.0.1:${port})`);
  });

  it('a policy host that never answers: timed out', async () => {
    const sockets: net.Socket[] = [];
    const silent = net.createServer((socket) => void sockets.push(socket)); // accepts, never speaks TLS
    await new Promise<void>((resolve) => silent.listen(0, '127.0.0.1', resolve));
    const port = (silent.address() as AddressInfo).port;
    try {
      const started = Date.now();
      const found = await policies(port, { timeoutMs: 300 }).lookup('receiver.test');
      expect(found).toEqual({
        kind: 'error',
        problem: 'sts-policy-fetch-error',
        reason: `MTA-STS policy of receiver.test: ${url(port)} (127.0.0.1) gave no complete answer within 300 ms`,
      });
      expect(Date.now() - started).toBeLessThan(1000);
    } finally {
      await new Promise<void>((resolve) => {
        silent.close(() => resolve());
        for (const socket of sockets) socket.destroy();
      });
    }
  });
});

describe('mxAllowedByPolicy (RFC 8461 §4.1)', () => {
  const policy: MtaStsPolicy = { id: '1', mode: 'enforce', mx: ['mail.receiver.test', '*.receiver.test'], maxAge: 60 };

  it.each([
    ['mail.receiver.test', true],
    ['MAIL.Receiver.TEST.', true],
    ['mx.receiver.test', true],
    ['a.b.receiver.test', false],
    ['receiver.test', false],
    ['xreceiver.test', false],
    ['mx.receiver.test.evil.test', false],
    ['.receiver.test', false],
  ])('%s → %s', (host, allowed) => {
    expect(mxAllowedByPolicy(policy, host)).toBe(allowed);
  });

  it('exact patterns match only themselves; a pattern with a trailing dot still matches', () => {
    const exact: MtaStsPolicy = { ...policy, mx: ['mx.receiver.test.'] };
    expect(mxAllowedByPolicy(exact, 'mx.receiver.test')).toBe(true);
    expect(mxAllowedByPolicy(exact, 'mx2.receiver.test')).toBe(false);
    expect(mxAllowedByPolicy({ ...policy, mx: [] }, 'mx.receiver.test')).toBe(false);
  });
});
