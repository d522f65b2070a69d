// TLS on the MTA's SMTP services and the MX's port 25 (issue 11), in process: submission over STARTTLS (587) and
// implicit TLS (465) with AUTH refused before TLS, the relay to a real MX over opportunistic STARTTLS, the version
// and cipher of every hop in the events, the STARTTLS command injection, TLS 1.1 refused. Real clients: nodemailer
// and Python's smtplib, each trusting the test CA only.
import { promises as fs } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import nodemailer from 'nodemailer';
import type { SMTPServer } from 'smtp-server';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startDnsServer, Zones, type RunningDnsServer } from '../dns/index.js';
import type { Endpoint } from '../shared/config.js';
import { EventLog, type LabEvent } from '../shared/events.js';
import type { RunningRole } from '../shared/node.js';
import { hasPython, runPython } from '../shared/python.test-helper.js';
import { TlsLines, tryTls11 } from '../shared/tls-lines.test-helper.js';
import { testPki, type TestPki } from '../shared/tls.test-helper.js';
import { startMx } from '../mx/index.js';
import { startMta } from './index.js';
import { startCapturingServer, testMtaConfig, waitForEvent } from './mta.test-helper.js';

const block = `127.${Math.floor(Math.random() * 200) + 20}.${Math.floor(Math.random() * 200) + 20}`;
const ip = (n: number) => `${block}.${n}`;
const DNS = ip(2);
const MTA = ip(3);
const MX = ip(10);
const LMTP = ip(20);
const RELAY_PORT = 20_000 + Math.floor(Math.random() * 20_000);
const ALICE = { address: 'alice@sender.test', password: 'alice-secret' };
const BOB = 'bob@receiver.test';
const TLS_VERSION = /^TLSv1\.[23]$/;

let pki: TestPki;
let dns: RunningDnsServer;
let lmtp: SMTPServer;
let mx: RunningRole;
let mta: RunningRole;
const mxEvents = new EventLog('mx');
const mtaEvents = new EventLog('mta');
let dataDir: string;
/** What the LMTP server behind the MX got. */
const stored: string[] = [];
const clients: TlsLines[] = [];

beforeAll(async () => {
  pki = await testPki([MTA, MX]);
  dataDir = await fs.mkdtemp(path.join(os.tmpdir(), 'maillab-mta-tls-'));
  dns = await startDnsServer({
    host: DNS,
    port: 0,
    zones: new Zones([{ origin: 'receiver.test', records: [{ name: 'receiver.test', type: 'MX', exchange: 'mx.receiver.test', priority: 10 }, { name: 'mx.receiver.test', type: 'A', address: MX }] }]),
  });
  lmtp = await startCapturingServer(LMTP, 0, (data) => {
    stored.push(data.toString('latin1'));
    return '2.0.0 stored';
  }, { lmtp: true });
  const lmtpPort = (lmtp.server.address() as { port: number }).port;
  mx = await startMx({
    config: { name: 'mx', role: 'mx', hostname: 'mx.receiver.test', address: MX, dataDir, controlPort: 0, resolver: dns.endpoint, greetingDelayMs: 0, fsync: false, ports: { smtp: RELAY_PORT }, domains: ['receiver.test'], recipients: [BOB], lmtp: { host: LMTP, port: lmtpPort }, tls: pki.tls },
    events: mxEvents,
    log: () => undefined,
  });
  mta = await startMta({
    config: testMtaConfig({
      address: MTA,
      dataDir,
      resolver: dns.endpoint,
      fsync: false,
      localDelivery: { host: LMTP, port: lmtpPort },
      users: [ALICE],
      relayPort: RELAY_PORT,
      labAddresses: [DNS, MTA, MX, LMTP],
      ports: { smtp: 0, submission: 0, submissions: 0 },
      tls: pki.tls,
    }),
    events: mtaEvents,
    log: () => undefined,
  });
});

afterAll(async () => {
  for (const c of clients) c.close();
  await mta?.stop();
  await mx?.stop();
  await new Promise<void>((resolve) => (lmtp ? lmtp.close(() => resolve()) : resolve()));
  await dns?.close();
  if (dataDir) await fs.rm(dataDir, { recursive: true, force: true });
});

const service = (name: string): Endpoint => mta.services[name]!;
type TlsDetail = { tls: { version: string; cipher: string } | null };

async function open(to: Endpoint, implicit = false): Promise<TlsLines> {
  const c = await TlsLines.connect(to, implicit ? pki.ca : undefined);
  clients.push(c);
  return c;
}

/** One SMTP reply, all its lines. */
const reply = (c: TlsLines) => c.until(/^\d{3} /);

function byMessageId(messageId: string) {
  return (e: LabEvent) => e.messageId === `<${messageId}>`;
}

async function submit(options: object, messageId: string) {
  const transport = nodemailer.createTransport({ host: MTA, auth: { user: ALICE.address, pass: ALICE.password }, tls: { ca: pki.ca, servername: 'localhost' }, ...options } as any);
  try {
    return await transport.sendMail({ from: ALICE.address, to: BOB, subject: 'over TLS', text: 'Hi Bob.', messageId: `<${messageId}>` });
  } finally {
    transport.close();
  }
}

describe('submission', () => {
  it('nodemailer with requireTLS on 587: every hop encrypted, each with its version and cipher in the events', async () => {
    const id = `tls-587.${Date.now()}@sender.test`;
    await submit({ port: service('submission').port, secure: false, requireTLS: true }, id);
    const submitted = await waitForEvent(mtaEvents, (e) => e.kind === 'submitted' && byMessageId(id)(e), 'submitted');
    expect((submitted.detail as TlsDetail).tls).toEqual({ version: expect.stringMatching(TLS_VERSION), cipher: expect.stringMatching(/\w/) });
    const relayed = await waitForEvent(mtaEvents, (e) => e.kind === 'relayed' && byMessageId(id)(e), 'relayed');
    expect((relayed.detail as TlsDetail).tls?.version).toMatch(TLS_VERSION);
    const received = await waitForEvent(mxEvents, (e) => e.kind === 'received' && byMessageId(id)(e), 'MX received');
    expect((received.detail as TlsDetail).tls?.version).toMatch(TLS_VERSION);
    const copy = stored.find((m) => m.includes(id))!;
    expect(copy).toMatch(/by mx\.receiver\.test \(maillab\) with ESMTPS id/);
    expect(copy).toMatch(/by mta\.sender\.test \(maillab\) with ESMTPSA id/);
  });

  it('nodemailer on 465 (implicit TLS, RFC 8314)', async () => {
    const id = `tls-465.${Date.now()}@sender.test`;
    await submit({ port: service('submissions').port, secure: true }, id);
    const submitted = await waitForEvent(mtaEvents, (e) => e.kind === 'submitted' && byMessageId(id)(e), 'submitted');
    expect((submitted.detail as TlsDetail).tls?.version).toMatch(TLS_VERSION);
  });

  it('before STARTTLS on 587: no AUTH in EHLO, AUTH gets 530 5.7.0 Must issue a STARTTLS command first, MAIL FROM its 530; after it AUTH is offered', async () => {
    const c = await open(service('submission'));
    await reply(c);
    c.write('EHLO client.test\r\n');
    const ehlo = await reply(c);
    expect(ehlo).toContain('250-STARTTLS');
    expect(ehlo.some((l) => /AUTH/.test(l))).toBe(false);
    c.write(`AUTH PLAIN ${Buffer.from(`\0${ALICE.address}\0${ALICE.password}`).toString('base64')}\r\n`);
    expect(await reply(c)).toEqual(['530 5.7.0 Must issue a STARTTLS command first']);
    await waitForEvent(mtaEvents, (e) => e.kind === 'rejected' && (e.detail as { stage: string }).stage === 'AUTH', 'rejected at AUTH');
    c.write(`MAIL FROM:<${ALICE.address}>\r\n`);
    expect((await reply(c))[0]).toMatch(/^530 5\.7\.0 Authentication required/);
    c.write('STARTTLS\r\n');
    expect((await reply(c))[0]).toMatch(/^220 /);
    await c.startTls(pki.ca);
    c.write('EHLO client.test\r\n');
    const after = await reply(c);
    expect(after).toContain('250-AUTH PLAIN LOGIN');
    expect(after.some((l) => /STARTTLS/.test(l))).toBe(false);
  });

  it.runIf(hasPython)("Python's smtplib: STARTTLS on 587 and SMTP_SSL on 465 with cafile", async () => {
    const script = `
import smtplib, ssl, sys
ctx = ssl.create_default_context(cafile=sys.argv[1])
msg = 'From: %s\\r\\nTo: %s\\r\\nSubject: python\\r\\n\\r\\nHi.\\r\\n' % (sys.argv[4], sys.argv[6])
s = smtplib.SMTP(sys.argv[7], int(sys.argv[2]), local_hostname='client.test')
s.starttls(context=ctx)
print(s.login(sys.argv[4], sys.argv[5])[0], s.sock.version())
s.sendmail(sys.argv[4], [sys.argv[6]], msg)
s.quit()
s = smtplib.SMTP_SSL(sys.argv[7], int(sys.argv[3]), local_hostname='client.test', context=ctx)
print(s.login(sys.argv[4], sys.argv[5])[0], s.sock.version())
s.sendmail(sys.argv[4], [sys.argv[6]], msg)
s.quit()
`;
    // By address: the test certificate names the MTA's 127.x.y.z, which Python checks.
    const out = await runPython(script, [pki.caFile, String(service('submission').port), String(service('submissions').port), ALICE.address, ALICE.password, BOB, MTA]);
    expect(out.trim().split('\n')).toEqual([expect.stringMatching(/^235 TLSv1\.[23]$/), expect.stringMatching(/^235 TLSv1\.[23]$/)]);
  });
});

describe('STARTTLS on 25', () => {
  it('commands pipelined in plaintext behind STARTTLS are not run inside TLS (CVE-2011-0411), on the MTA and the MX', async () => {
    for (const to of [service('smtp'), mx.services.smtp!]) {
      const c = await open(to);
      await reply(c);
      c.write('EHLO client.test\r\n');
      expect(await reply(c)).toContain('250-STARTTLS');
      c.write('STARTTLS\r\nNOOP\r\nMAIL FROM:<x@client.test>\r\n');
      expect((await reply(c))[0]).toMatch(/^220 /);
      expect(c.unread).toBe('');
      await c.startTls(pki.ca);
      c.write('QUIT\r\n');
      expect((await reply(c))[0]).toMatch(/^221 /); // not the 250 of an injected NOOP
    }
  });

  it('TLS 1.1 is refused on 465 and after STARTTLS on 25', async () => {
    expect(await tryTls11(service('submissions'), pki.ca)).toMatch(/version/i);
    const c = await open(service('smtp'));
    await reply(c);
    c.write('EHLO client.test\r\nSTARTTLS\r\n');
    await reply(c);
    expect((await reply(c))[0]).toMatch(/^220 /);
    expect(await tryTls11(c.socket, pki.ca)).toMatch(/version/i);
  });
});
