// The MTA-STS policy host of the DNS node (RFC 8461 §3.3), started with startDns in-process, with certificates
// from a lab CA: curl as an independent client, node:https and node:tls for status codes, SNI and the rpc.
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { execFile, execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import https from 'node:https';
import type { IncomingHttpHeaders } from 'node:http';
import { tmpdir } from 'node:os';
import path from 'node:path';
import tls from 'node:tls';
import { promisify } from 'node:util';
import { createLabCa, issueHostCertificate, type LabCa } from '../harness/tls/ca.js';
import type { DnsNodeConfig } from '../shared/config.js';
import { EventLog, type LabEvent } from '../shared/events.js';
import type { NodeContext, RunningRole } from '../shared/node.js';
import { dnsTestConfig } from './dns.test-helper.js';
import { MTA_STS_PATH, startDns } from './index.js';

const receiverPolicy = 'version: STSv1\r\nmode: enforce\r\nmx: mx.receiver.test\r\nmax_age: 86400\r\n';
const otherPolicy = 'version: STSv1\r\nmode: testing\r\nmx: *.other.test\r\nmax_age: 600\r\n';

let ca: LabCa;
let caFile: string;
let tmp: string;
let events: EventLog;
let role: RunningRole;
let port: number;

beforeAll(async () => {
  ca = await createLabCa('mta-sts-test');
  const receiver = await issueHostCertificate(ca, { names: ['mta-sts.receiver.test'], addresses: [] });
  const other = await issueHostCertificate(ca, { names: ['mta-sts.other.test'], addresses: [] });
  tmp = mkdtempSync(path.join(tmpdir(), 'mta-sts-test-'));
  caFile = path.join(tmp, 'ca.pem');
  writeFileSync(caFile, ca.cert);
  const config: DnsNodeConfig = dnsTestConfig({
    zones: [],
    mtaSts: {
      port: 0,
      sites: [
        { domain: 'receiver.test', policy: receiverPolicy, ...receiver },
        { domain: 'Other.Test.', policy: otherPolicy, ...other },
      ],
    },
  });
  events = new EventLog('dns');
  const ctx: NodeContext<DnsNodeConfig> = { config, events, log: () => {} };
  role = await startDns(ctx);
  port = role.services['mta-sts']!.port;
});

afterAll(async () => {
  await role?.stop();
  if (tmp) rmSync(tmp, { recursive: true, force: true });
});

function fetchesSince(seq: number): LabEvent[] {
  return events.since(seq).filter((e) => e.kind === 'policy-fetch');
}

const lastSeq = () => events.since(0).at(-1)?.seq ?? 0;

interface Reply {
  status: number;
  headers: IncomingHttpHeaders;
  body: string;
}

/** One HTTPS request to the policy host on 127.0.0.1, trusting only the lab CA; `servername` is the SNI and the name checked. */
function request(options: { servername?: string; host?: string; method?: string; path?: string; rejectUnauthorized?: boolean }): Promise<Reply> {
  const servername = options.servername ?? 'mta-sts.receiver.test';
  return new Promise((resolve, reject) => {
    const req = https.request(
      {
        host: '127.0.0.1',
        port,
        servername,
        ca: ca.cert,
        method: options.method ?? 'GET',
        path: options.path ?? MTA_STS_PATH,
        headers: { host: options.host ?? `${servername}:${port}` },
        agent: false,
        rejectUnauthorized: options.rejectUnauthorized ?? true,
        // node checks the certificate against `servername` (when set) rather than the address connected to.
        checkServerIdentity: (_host, cert) => tls.checkServerIdentity(servername || '127.0.0.1', cert),
      },
      (res) => {
        let body = '';
        res.setEncoding('utf8');
        res.on('data', (chunk: string) => (body += chunk));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body }));
      },
    );
    req.on('error', reject);
    req.end();
  });
}

/** The DNS names of the certificate the server presents for `servername` (none: no SNI sent). */
function presentedNames(servername: string | undefined): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = tls.connect({ host: '127.0.0.1', port, ...(servername ? { servername } : {}), rejectUnauthorized: false }, () => {
      const names = socket.getPeerCertificate().subjectaltname ?? '';
      socket.destroy();
      resolve(names);
    });
    socket.on('error', reject);
  });
}

const curlMissing = (() => {
  try {
    execFileSync('curl', ['--version'], { stdio: 'ignore' });
    return undefined;
  } catch (err) {
    return `curl is not installed (${(err as Error).message}); apt-get install -y curl to run the curl tests`;
  }
})();
if (curlMissing) console.warn(`skipping the curl MTA-STS tests: ${curlMissing}`);

/** curl's view of a fetch: the body, then a last line `status content-type`. No redirects are followed. */
async function curl(site: string, urlPath = MTA_STS_PATH): Promise<{ body: string; status: string; contentType: string }> {
  const url = `https://${site}:${port}${urlPath}`;
  const { stdout } = await promisify(execFile)('curl', ['-sS', '--max-time', '5', '--cacert', caFile, '--resolve', `${site}:${port}:127.0.0.1`, '-w', '\n%{http_code} %{content_type}', url]);
  const cut = stdout.lastIndexOf('\n');
  const [status = '', contentType = ''] = stdout.slice(cut + 1).split(' ');
  return { body: stdout.slice(0, cut), status, contentType };
}

describe.skipIf(curlMissing !== undefined)('MTA-STS policy host, fetched with curl', () => {
  it('serves each site its policy over HTTPS with a certificate curl verifies against the lab CA', async () => {
    expect(await curl('mta-sts.receiver.test')).toEqual({ body: receiverPolicy, status: '200', contentType: 'text/plain' });
    expect(await curl('mta-sts.other.test')).toEqual({ body: otherPolicy, status: '200', contentType: 'text/plain' });
  });

  it('answers 404 for another path', async () => {
    expect((await curl('mta-sts.receiver.test', '/.well-known/other.txt')).status).toBe('404');
  });
});

describe('MTA-STS policy host, fetched with node:https', () => {
  it('is a service of the DNS node on its address', () => {
    expect(role.services['mta-sts']).toEqual({ host: '127.0.0.1', port });
    expect(port).toBeGreaterThan(0);
  });

  it('answers GET with 200, text/plain and the policy; HEAD with the headers only; and records each fetch', async () => {
    const seq = lastSeq();
    const get = await request({});
    expect(get).toMatchObject({ status: 200, body: receiverPolicy });
    expect(get.headers['content-type']).toBe('text/plain');
    const head = await request({ method: 'HEAD', servername: 'mta-sts.other.test' });
    expect(head).toMatchObject({ status: 200, body: '' });
    expect(head.headers['content-length']).toBe(String(Buffer.byteLength(otherPolicy)));
    const fetches = fetchesSince(seq);
    expect(fetches.map((e) => e.detail)).toMatchObject([
      { domain: 'receiver.test', path: MTA_STS_PATH, status: 200 },
      { domain: 'other.test', path: MTA_STS_PATH, status: 200 },
    ]);
    expect(fetches[0]?.detail.client).toMatch(/^127\.0\.0\.1:\d+$/);
  });

  it('takes the Host case-insensitively, with or without a port', async () => {
    expect((await request({ host: 'MTA-STS.Receiver.TEST' })).body).toBe(receiverPolicy);
    expect((await request({ host: 'mta-sts.other.test' })).body).toBe(otherPolicy); // Host, not SNI, picks the policy
  });

  it('answers 404 for other paths and hosts, 405 for other methods, and never redirects', async () => {
    const seq = lastSeq();
    expect((await request({ path: '/' })).status).toBe(404);
    expect((await request({ path: '/.well-known/mta-sts.txt/' })).status).toBe(404);
    expect((await request({ host: 'receiver.test' })).status).toBe(404);
    expect((await request({ host: 'mta-sts.unknown.test' })).status).toBe(404);
    const post = await request({ method: 'POST' });
    expect(post.status).toBe(405);
    expect(post.headers.allow).toBe('GET, HEAD');
    expect(post.headers.location).toBeUndefined();
    expect((await request({ method: 'PUT', path: '/x' })).status).toBe(405);
    expect(fetchesSince(seq).map((e) => [e.detail.domain, e.detail.path, e.detail.status])).toEqual([
      ['receiver.test', '/', 404],
      ['receiver.test', '/.well-known/mta-sts.txt/', 404],
      ['receiver.test', MTA_STS_PATH, 404],
      ['mta-sts.unknown.test', MTA_STS_PATH, 404],
      ['receiver.test', MTA_STS_PATH, 405],
      ['receiver.test', '/x', 405],
    ]);
  });

  it('presents the certificate of the site named by SNI, the first site\'s to no SNI or an unknown name', async () => {
    expect(await presentedNames('mta-sts.receiver.test')).toBe('DNS:mta-sts.receiver.test');
    expect(await presentedNames('mta-sts.other.test')).toBe('DNS:mta-sts.other.test');
    expect(await presentedNames('MTA-STS.OTHER.TEST')).toBe('DNS:mta-sts.other.test');
    expect(await presentedNames('mta-sts.unknown.test')).toBe('DNS:mta-sts.receiver.test');
    expect(await presentedNames(undefined)).toBe('DNS:mta-sts.receiver.test');
  });

  it('fails the name check of a client asking for an unknown site, and answers 404 without SNI', async () => {
    await expect(request({ servername: 'mta-sts.unknown.test' })).rejects.toMatchObject({ code: 'ERR_TLS_CERT_ALTNAME_INVALID' });
    // No SNI (a client connecting by address): the default certificate, and 404 as the Host names no site.
    const bare = await request({ servername: '', host: `127.0.0.1:${port}`, rejectUnauthorized: false });
    expect(bare.status).toBe(404);
  });

  it('answers 431 to request headers past its small limit', async () => {
    const reply = await new Promise<string>((resolve, reject) => {
      const socket = tls.connect({ host: '127.0.0.1', port, servername: 'mta-sts.receiver.test', ca: ca.cert }, () => {
        socket.write(`GET ${MTA_STS_PATH} HTTP/1.1\r\nHost: mta-sts.receiver.test\r\nX-Padding: ${'a'.repeat(8192)}\r\n\r\n`);
      });
      let text = '';
      socket.setEncoding('utf8');
      socket.on('data', (chunk: string) => (text += chunk));
      socket.on('close', () => resolve(text));
      socket.on('error', reject);
    });
    expect(reply).toMatch(/^HTTP\/1\.1 431 /);
  });

  it('refuses TLS below 1.2', async () => {
    const outcome = await new Promise<string>((resolve) => {
      const socket = tls.connect({ host: '127.0.0.1', port, servername: 'mta-sts.receiver.test', ca: ca.cert, minVersion: 'TLSv1', maxVersion: 'TLSv1.1', ciphers: 'DEFAULT@SECLEVEL=0' }, () => {
        socket.destroy();
        resolve('connected');
      });
      socket.on('error', (err: NodeJS.ErrnoException) => resolve(err.code ?? err.message));
    });
    expect(outcome).not.toBe('connected');
  });
});

describe('set-mta-sts-policy', () => {
  it('changes the policy served from the next request on', async () => {
    const rolled = receiverPolicy.replace('mode: enforce', 'mode: none');
    try {
      expect(await role.rpc['set-mta-sts-policy']!({ domain: 'RECEIVER.test', policy: rolled })).toEqual({ domains: ['receiver.test', 'other.test'] });
      expect((await request({})).body).toBe(rolled);
      expect((await request({ servername: 'mta-sts.other.test' })).body).toBe(otherPolicy);
    } finally {
      await role.rpc['set-mta-sts-policy']!({ domain: 'receiver.test', policy: receiverPolicy });
    }
    expect((await request({})).body).toBe(receiverPolicy);
  });

  it('fails for an unknown domain, naming the known ones, and for a missing policy', () => {
    expect(() => role.rpc['set-mta-sts-policy']!({ domain: 'nobody.test', policy: 'x' })).toThrow('no MTA-STS site for "nobody.test" (sites: receiver.test, other.test)');
    expect(() => role.rpc['set-mta-sts-policy']!({ domain: 'receiver.test' })).toThrow(/needs policy/);
  });

  it('fails clearly on a DNS node without MTA-STS sites, which has no mta-sts service', async () => {
    const plain = await startDns({ config: dnsTestConfig({ zones: [] }), events: new EventLog('dns'), log: () => {} });
    try {
      expect(Object.keys(plain.services)).toEqual(['dns']);
      expect(() => plain.rpc['set-mta-sts-policy']!({ domain: 'receiver.test', policy: 'x' })).toThrow(/serves no MTA-STS site/);
    } finally {
      await plain.stop();
    }
  });
});

describe('MTA-STS policy host lifecycle', () => {
  it('refuses to start with an unusable certificate, naming the site', async () => {
    const config = dnsTestConfig({ zones: [], mtaSts: { port: 0, sites: [{ domain: 'receiver.test', policy: receiverPolicy, cert: 'not a certificate', key: 'nor a key' }] } });
    await expect(startDns({ config, events: new EventLog('dns'), log: () => {} })).rejects.toThrow(/MTA-STS site receiver\.test: unusable certificate or key/);
  });

  it('stops with the node, an open keep-alive connection notwithstanding', async () => {
    const site = await issueHostCertificate(ca, { names: ['mta-sts.receiver.test'], addresses: [] });
    const node = await startDns({ config: dnsTestConfig({ zones: [], mtaSts: { port: 0, sites: [{ domain: 'receiver.test', policy: receiverPolicy, ...site }] } }), events: new EventLog('dns'), log: () => {} });
    const sitePort = node.services['mta-sts']!.port;
    const idle = tls.connect({ host: '127.0.0.1', port: sitePort, servername: 'mta-sts.receiver.test', ca: ca.cert });
    await new Promise((resolve) => idle.once('secureConnect', resolve));
    idle.on('error', () => {});
    await node.stop();
    const refused = await new Promise<string>((resolve) => {
      const socket = tls.connect({ host: '127.0.0.1', port: sitePort, servername: 'mta-sts.receiver.test', ca: ca.cert }, () => resolve('connected'));
      socket.on('error', (err: NodeJS.ErrnoException) => resolve(err.code ?? 'error'));
    });
    expect(refused).toBe('ECONNREFUSED');
    idle.destroy();
  });
});
