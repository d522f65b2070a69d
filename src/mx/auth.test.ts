// Mail authentication at the MX (issue 12), in process and for real: a lab DNS server (src/dns) publishing SPF, DKIM
// and DMARC records, messages DKIM-signed with mailauth, MXs on their own loopback addresses (so SPF sees who
// connects), the mailbox server's real LMTP server and Maildir store, and a forwarding MX that ARC-seals.
import { generateKeyPairSync } from 'node:crypto';
import dns from 'node:dns';
import { promises as fs } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { dkimSign, type DKIMSignOptions } from 'mailauth';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it, vi } from 'vitest';
import { startDnsServer, Zones, type DnsQueryInfo, type RunningDnsServer } from '../dns/index.js';
import { startLmtp } from '../mailbox/lmtp.js';
import type { MailboxService } from '../mailbox/service.js';
import { MaildirStore } from '../mailbox/store.js';
import { BOB, CAROL, testContext, type TestContext } from '../mailbox/testkit.test-helper.js';
import type { MxNodeConfig } from '../shared/config.js';
import { EventLog, type LabEvent } from '../shared/events.js';
import type { RunningRole } from '../shared/node.js';
import { SmtpClientPool, type SendResult } from '../shared/smtp-client.js';
import type { AuthenticatedDetail } from './api.js';
import { inDmarcSample } from './authenticate.js';
import { startMx } from './index.js';
import { mxTestConfig } from './mx.test-helper.js';

const block = `127.${Math.floor(Math.random() * 200) + 20}.${Math.floor(Math.random() * 200) + 20}`;
const ip = (n: number) => `${block}.${n}`;
const DNS = ip(2);
const FINAL_MX = ip(10);
const FORWARDER = ip(11);
/** The sender's MTA: the one address sender.test's SPF record permits. */
const SENDER_MTA = ip(50);
/** Anyone else. */
const STRANGER = ip(51);
const DAVE = 'dave@forwarder.test';

const rsa = () => generateKeyPairSync('rsa', { modulusLength: 2048, publicKeyEncoding: { type: 'spki', format: 'der' }, privateKeyEncoding: { type: 'pkcs8', format: 'pem' } });
const dkimKey = rsa();
const arcKey = rsa();
const keyRecord = (der: Buffer) => `v=DKIM1; k=rsa; p=${der.toString('base64')}`;

let zones: Zones;
let dnsServer: RunningDnsServer;
const queries: DnsQueryInfo[] = [];
let mailbox: TestContext;
let store: MaildirStore;
let lmtp: MailboxService;
const nodes: RunningRole[] = [];
let dirs: string[] = [];
const client = new SmtpClientPool({ ehloName: 'mta.sender.test', connectTimeoutMs: 2000, greetingTimeoutMs: 2000, socketTimeoutMs: 10_000, idleMs: 0, localAddress: SENDER_MTA });
const stranger = new SmtpClientPool({ ehloName: 'stranger.test', connectTimeoutMs: 2000, greetingTimeoutMs: 2000, socketTimeoutMs: 10_000, idleMs: 0, localAddress: STRANGER });

beforeAll(async () => {
  zones = new Zones([
    {
      origin: 'sender.test',
      records: [
        { name: 'sender.test', type: 'TXT', data: `v=spf1 ip4:${SENDER_MTA} -all` },
        { name: 'lab._domainkey.sender.test', type: 'TXT', data: keyRecord(dkimKey.publicKey) },
      ],
    },
    { origin: 'forwarder.test', records: [{ name: 'arc._domainkey.forwarder.test', type: 'TXT', data: keyRecord(arcKey.publicKey) }] },
    { origin: 'receiver.test', records: [] },
  ]);
  dnsServer = await startDnsServer({ host: DNS, port: 0, zones, onQuery: (q) => queries.push(q) });
});

afterAll(async () => {
  client.close();
  stranger.close();
  await dnsServer.close();
});

beforeEach(async () => {
  queries.length = 0;
  mailbox = await testContext();
  store = new MaildirStore({ root: mailbox.config.dataDir, users: mailbox.config.users, fsync: true });
  await store.open();
  lmtp = await startLmtp({ store, ctx: mailbox, host: '127.0.0.1', port: 0 });
  setDmarc('v=DMARC1; p=reject');
});

afterEach(async () => {
  vi.restoreAllMocks();
  for (const node of nodes.splice(0)) await node.stop();
  await lmtp.close();
  await mailbox.cleanup();
  for (const dir of dirs) await fs.rm(dir, { recursive: true, force: true });
  dirs = [];
});

function setDmarc(record: string): void {
  zones.setRecords('_dmarc.sender.test', 'TXT', [{ name: '_dmarc.sender.test', type: 'TXT', data: record }]);
}

interface Node {
  port: number;
  events: EventLog;
  emitted: <K extends string>(kind: K) => LabEvent[];
}

/** An MX on `address`, asking the lab DNS, handing off to the LMTP server; `fields` say what else it does. */
async function startNode(address: string, fields: Partial<Pick<MxNodeConfig, 'hostname' | 'domains' | 'recipients' | 'auth' | 'forwards' | 'forwardVia' | 'arcSeal'>>): Promise<Node> {
  const dataDir = await fs.mkdtemp(path.join(os.tmpdir(), 'maillab-mx-auth-'));
  dirs.push(dataDir);
  const config = mxTestConfig({
    dataDir,
    domains: ['receiver.test'],
    recipients: [BOB, CAROL],
    lmtpPort: lmtp.endpoint.port,
    address,
    resolver: dnsServer.endpoint,
    ...fields,
  });
  const events = new EventLog(config.name);
  const running = await startMx({ config, events, log: () => undefined });
  nodes.push(running);
  return { port: running.services.smtp!.port, events, emitted: (kind) => events.since(0).filter((e) => e.kind === kind) };
}

const enforcing = { enforceDmarc: true, trustedArcSealers: [] as string[] };

let sequence = 0;
/** A message from alice@sender.test, DKIM-signed by sender.test with `selector` unless `selector` is null. */
async function message(selector: string | null = 'lab', subject = 'hello'): Promise<{ raw: Buffer; messageId: string }> {
  const messageId = `<auth-${++sequence}-${Date.now()}@sender.test>`;
  const unsigned = `From: Alice <alice@sender.test>\r\nTo: bob@receiver.test\r\nSubject: ${subject}\r\nDate: Mon, 30 Nov 2026 04:00:00 +0000\r\nMessage-ID: ${messageId}\r\n\r\nHello Bob.\r\n`;
  if (selector === null) return { raw: Buffer.from(unsigned), messageId };
  // mailauth's typings want the key at the top level, its signer reads it from signatureData. The signing time is
  // given: without it mailauth reads the clock twice and, across a half second, writes a t= other than the one it
  // signed (src/mta/dkim-roundtrip.test.ts).
  const signed = await dkimSign(unsigned, { canonicalization: 'relaxed/relaxed', signTime: new Date(), signatureData: [{ signingDomain: 'sender.test', selector, privateKey: dkimKey.privateKey }] } as unknown as DKIMSignOptions);
  expect(signed.signatures).toMatch(/^DKIM-Signature: /);
  expect(signed.errors).toEqual([]);
  return { raw: Buffer.concat([Buffer.from(signed.signatures), Buffer.from(unsigned)]), messageId };
}

async function send(pool: SmtpClientPool, port: number, host: string, to: string[], raw: Buffer, from = 'alice@sender.test'): Promise<SendResult> {
  return pool.send({ host, port }, { from, to }, raw);
}

async function copies(user: string, folder: string): Promise<string[]> {
  const list = await store.messages(user, folder);
  return Promise.all(list.map(async (m) => (await store.read(user, folder, m.uid)).toString('latin1')));
}

const verdictOf = (node: Node) => node.emitted('authenticated').map((e) => e.detail as unknown as AuthenticatedDetail);

describe('MX: SPF, DKIM and DMARC at the end of DATA', () => {
  it('all pass: Authentication-Results with spf, dkim and dmarc pass and their identifiers, the verdict as an event, asked of the lab DNS only', async () => {
    const mx = await startNode(FINAL_MX, { auth: enforcing });
    // Nothing may fall back to the system resolver (mailauth would, given no resolver).
    const system = [vi.spyOn(dns.promises, 'resolve'), vi.spyOn(dns.promises, 'resolveTxt'), vi.spyOn(dns, 'resolve'), vi.spyOn(dns, 'lookup')];
    const { raw, messageId } = await message();
    const result = await send(client, mx.port, FINAL_MX, [BOB], raw);
    expect(result.recipients).toMatchObject([{ accepted: true, reply: expect.stringMatching(/^250 2\.0\.0 Ok: delivered as /) }]);

    const [stored] = await copies(BOB, 'INBOX');
    const head = stored!.slice(0, stored!.indexOf('\r\n\r\n'));
    const ar = /^Authentication-Results: mx\.receiver\.test;\r\n(?:[ \t].*\r\n?)+/m.exec(head + '\r\n')![0].replace(/\r\n[ \t]+/g, ' ');
    expect(ar).toMatch(/ dkim=pass [^;]*header\.i=@sender\.test header\.s=lab/);
    expect(ar).toMatch(new RegExp(` spf=pass [^;]*smtp\\.mailfrom=alice@sender\\.test smtp\\.helo=mta\\.sender\\.test`));
    expect(ar).toMatch(/ dmarc=pass \(p=REJECT[^)]*\) header\.from=sender\.test/);
    expect(head).toMatch(new RegExp(`^Received-SPF: pass .*client-ip=${SENDER_MTA.replace(/\./g, '\\.')}`, 'm'));
    // Above the MX's own Received header: added by this hop, after it received the message.
    expect(head.indexOf('Authentication-Results:')).toBeLessThan(head.indexOf('Received: from'));

    const [event] = mx.emitted('authenticated');
    expect(event).toMatchObject({ messageId, queueId: mx.emitted('received')[0]!.queueId });
    expect(event!.detail).toEqual({
      from: 'alice@sender.test',
      rcpts: [BOB],
      headerFrom: 'alice@sender.test',
      spf: { result: 'pass', domain: 'sender.test', ip: SENDER_MTA, helo: 'mta.sender.test', record: `v=spf1 ip4:${SENDER_MTA} -all`, comment: expect.stringContaining(`designates ${SENDER_MTA} as permitted sender`) },
      dkim: [{ result: 'pass', domain: 'sender.test', selector: 'lab', algorithm: 'rsa-sha256', aligned: true, info: expect.stringMatching(/^dkim=pass /) }],
      dmarc: { result: 'pass', domain: 'sender.test', policy: 'reject', p: 'reject', sp: 'reject', sampled: true, alignment: { spf: 'sender.test', dkim: 'sender.test' } },
      arc: { result: 'none', sealers: [] },
      action: 'accept',
      reason: 'dmarc=pass',
      header: expect.stringMatching(/^Authentication-Results: mx\.receiver\.test;/),
    });
    expect(ar.trim()).toBe(String(event!.detail.header).replace(/\r\n[ \t]+/g, ' '));

    for (const spy of system) expect(spy).not.toHaveBeenCalled();
    const asked = queries.map((q) => `${q.name} ${q.type}`);
    expect(asked).toEqual(expect.arrayContaining(['sender.test TXT', 'lab._domainkey.sender.test TXT', '_dmarc.sender.test TXT']));
    expect(queries.every((q) => q.client.startsWith('127.'))).toBe(true);
  });

  it('SPF fails but DKIM is aligned: dmarc=pass, delivered to INBOX', async () => {
    const mx = await startNode(FINAL_MX, { auth: enforcing });
    const { raw } = await message();
    const result = await send(stranger, mx.port, FINAL_MX, [BOB], raw);
    expect(result.recipients[0]!.accepted).toBe(true);
    expect(verdictOf(mx)[0]).toMatchObject({ spf: { result: 'fail', ip: STRANGER }, dkim: [{ result: 'pass', aligned: true }], dmarc: { result: 'pass', alignment: { spf: false, dkim: 'sender.test' } }, action: 'accept' });
    const [stored] = await copies(BOB, 'INBOX');
    expect(stored).toMatch(/spf=fail/);
  });

  it('no key for the signature and SPF failing under p=reject: 550 5.7.1 naming DMARC, the domain and why, a rejected event, nothing stored', async () => {
    const mx = await startNode(FINAL_MX, { auth: enforcing });
    const { raw } = await message('gone');
    const result = await send(stranger, mx.port, FINAL_MX, [BOB], raw);
    const reply = result.recipients[0]!.reply;
    expect(result.recipients[0]!.accepted).toBe(false);
    expect(reply).toMatch(
      new RegExp(`^550 5\\.7\\.1 DMARC policy of sender\\.test is reject: dkim=neutral \\(no key\\) for d=sender\\.test s=gone, spf=fail \\(mx\\.receiver\\.test: domain of alice@sender\\.test does not designate ${STRANGER.replace(/\./g, '\\.')} as permitted sender\\)$`),
    );
    expect(mx.emitted('rejected').map((e) => e.detail)).toEqual([{ stage: 'DATA', rcpt: BOB, reply, client: STRANGER, from: 'alice@sender.test' }]);
    expect(verdictOf(mx)[0]).toMatchObject({ action: 'reject', dkim: [{ result: 'neutral', selector: 'gone' }], dmarc: { result: 'fail', policy: 'reject' } });
    expect(mx.emitted('handoff')).toEqual([]);
    expect(await copies(BOB, 'INBOX')).toEqual([]);
    expect(await copies(BOB, 'Junk')).toEqual([]);
    expect(queries.map((q) => `${q.name} ${q.type}`)).toContain('gone._domainkey.sender.test TXT');
  });

  it('p=quarantine: delivered to the Junk folder, with its Authentication-Results', async () => {
    setDmarc('v=DMARC1; p=quarantine');
    const mx = await startNode(FINAL_MX, { auth: enforcing });
    const { raw, messageId } = await message(null);
    const result = await send(stranger, mx.port, FINAL_MX, [BOB], raw);
    expect(result.recipients[0]!.accepted).toBe(true);
    expect(verdictOf(mx)[0]).toMatchObject({ action: 'quarantine', dkim: [], dmarc: { result: 'fail', policy: 'quarantine' }, reason: expect.stringMatching(/^DMARC policy of sender\.test is quarantine: dkim=none \(no DKIM signature\), spf=fail/) });
    expect(await copies(BOB, 'INBOX')).toEqual([]);
    const [junk] = await copies(BOB, 'Junk');
    expect(junk).toContain(messageId);
    expect(junk).toMatch(/dmarc=fail/);
    expect(mailbox.emitted('stored')).toMatchObject([{ messageId, detail: { user: BOB, mailbox: 'Junk' } }]);
  });

  it('p=none: delivered to INBOX, the failure only recorded', async () => {
    setDmarc('v=DMARC1; p=none');
    const mx = await startNode(FINAL_MX, { auth: enforcing });
    const { raw } = await message(null);
    expect((await send(stranger, mx.port, FINAL_MX, [BOB], raw)).recipients[0]!.accepted).toBe(true);
    expect(verdictOf(mx)[0]).toMatchObject({ action: 'accept', dmarc: { result: 'fail', policy: 'none' } });
    expect(await copies(BOB, 'INBOX')).toHaveLength(1);
  });

  it('pct: a message outside the sample gets the next milder policy (reject → quarantine), deterministically', async () => {
    setDmarc('v=DMARC1; p=reject; pct=0');
    const mx = await startNode(FINAL_MX, { auth: enforcing });
    const { raw } = await message(null);
    expect((await send(stranger, mx.port, FINAL_MX, [BOB], raw)).recipients[0]!.accepted).toBe(true);
    expect(verdictOf(mx)[0]).toMatchObject({ action: 'quarantine', dmarc: { pct: 0, sampled: false } });
    expect(await copies(BOB, 'Junk')).toHaveLength(1);
    // The sample is drawn from the Message-ID: the same one always falls the same way, and about pct% fall in.
    const ids = Array.from({ length: 1000 }, (_, i) => `<m${i}@sender.test>`);
    const inSample = ids.filter((id) => inDmarcSample(30, id, Buffer.alloc(0)));
    expect(inSample.length).toBeGreaterThan(250);
    expect(inSample.length).toBeLessThan(350);
    expect(ids.filter((id) => inDmarcSample(30, id, Buffer.alloc(0)))).toEqual(inSample);
  });

  it('a subdomain of the From: falls under the organizational record\'s sp, not its p', async () => {
    setDmarc('v=DMARC1; p=none; sp=reject');
    const mx = await startNode(FINAL_MX, { auth: enforcing });
    const raw = Buffer.from('From: news@news.sender.test\r\nTo: bob@receiver.test\r\nSubject: sp\r\nMessage-ID: <sp-1@news.sender.test>\r\n\r\nHi.\r\n');
    const result = await send(stranger, mx.port, FINAL_MX, [BOB], raw);
    expect(result.recipients[0]!.reply).toMatch(/^550 5\.7\.1 DMARC policy of news\.sender\.test is reject: dkim=none/);
    expect(verdictOf(mx)[0]).toMatchObject({ dmarc: { result: 'fail', domain: 'news.sender.test', policy: 'reject', p: 'none', sp: 'reject' }, action: 'reject' });
    expect(queries.map((q) => `${q.name} ${q.type}`)).toEqual(expect.arrayContaining(['_dmarc.news.sender.test TXT', '_dmarc.sender.test TXT']));
  });

  it('enforceDmarc off: p=reject is recorded, not acted on', async () => {
    const mx = await startNode(FINAL_MX, { auth: { enforceDmarc: false, trustedArcSealers: [] } });
    const { raw } = await message(null);
    expect((await send(stranger, mx.port, FINAL_MX, [BOB], raw)).recipients[0]!.accepted).toBe(true);
    expect(verdictOf(mx)[0]).toMatchObject({ action: 'accept', dmarc: { result: 'fail', policy: 'reject' }, reason: expect.stringContaining('not enforced') });
    expect(await copies(BOB, 'INBOX')).toHaveLength(1);
  });

  it('removes an Authentication-Results header forged in its own name (RFC 8601 §5), keeps others', async () => {
    const mx = await startNode(FINAL_MX, { auth: enforcing });
    const { raw } = await message();
    const forged = Buffer.concat([Buffer.from('Authentication-Results: mx.receiver.test; dmarc=pass header.from=bank.test\r\nAuthentication-Results: elsewhere.test; spf=pass\r\n'), raw]);
    expect((await send(client, mx.port, FINAL_MX, [BOB], forged)).recipients[0]!.accepted).toBe(true);
    const [stored] = await copies(BOB, 'INBOX');
    expect(stored!.match(/^Authentication-Results: mx\.receiver\.test;/gm)).toHaveLength(1);
    expect(stored).not.toContain('bank.test');
    expect(stored).toContain('Authentication-Results: elsewhere.test; spf=pass');
  });
});

describe('MX: forwarding with an ARC seal', () => {
  const seal = { domain: 'forwarder.test', selector: 'arc', privateKey: arcKey.privateKey };
  /** The forwarder: forwarder.test's MX, dave@ forwarded to bob@receiver.test through the final MX. */
  const forwarder = (finalPort: number, extra: Partial<MxNodeConfig> = {}) =>
    startNode(FORWARDER, { hostname: 'mx.forwarder.test', domains: ['forwarder.test', 'receiver.test'], recipients: [DAVE, BOB], auth: enforcing, forwards: { [DAVE]: BOB }, forwardVia: { host: FINAL_MX, port: finalPort }, arcSeal: seal, ...extra });

  it('the final MX sees spf=fail (the forwarder keeps the envelope sender), dkim=pass, arc=pass; 250 only after the next hop took it', async () => {
    const final = await startNode(FINAL_MX, { auth: enforcing });
    const fwd = await forwarder(final.port);
    const { raw, messageId } = await message();
    const result = await send(client, fwd.port, FORWARDER, [DAVE], raw);
    expect(result.recipients[0]).toMatchObject({ accepted: true, reply: expect.stringMatching(/^250 2\.0\.0 Ok: forwarded as /) });

    expect(fwd.emitted('forwarded').map((e) => e.detail)).toEqual([
      { rcpt: DAVE, to: BOB, via: `SMTP ${FINAL_MX}:${final.port} (forwardVia)`, accepted: true, reply: expect.stringMatching(/^250 /), arc: { instance: 1, domain: 'forwarder.test', selector: 'arc' } },
    ]);
    expect(fwd.emitted('handoff')).toEqual([]);
    expect(verdictOf(fwd)[0]).toMatchObject({ spf: { result: 'pass' }, dmarc: { result: 'pass' }, action: 'accept' });
    const [atFinal] = verdictOf(final);
    expect(atFinal).toMatchObject({ from: 'alice@sender.test', spf: { result: 'fail', ip: FORWARDER }, dkim: [{ result: 'pass', aligned: true }], arc: { result: 'pass', instance: 1, sealers: ['forwarder.test'] }, dmarc: { result: 'pass' }, action: 'accept' });

    const [stored] = await copies(BOB, 'INBOX');
    expect(stored).toContain(messageId);
    expect(stored).toMatch(/^ARC-Seal: i=1; a=rsa-sha256; t=\d+; cv=none; d=forwarder\.test;\s+s=arc;/m);
    expect(stored).toMatch(/^ARC-Authentication-Results: i=1; mx\.forwarder\.test;/m);
    expect(stored).toMatch(/^Authentication-Results: mx\.receiver\.test;[\s\S]*arc=pass/m);
  });

  it('a message only SPF vouched for fails DMARC after forwarding: rejected at the final MX unless the sealer is trusted (accept-arc-override)', async () => {
    const untrusting = await startNode(FINAL_MX, { auth: enforcing });
    let fwd = await forwarder(untrusting.port);
    const first = await message(null);
    const refused = await send(client, fwd.port, FORWARDER, [DAVE], first.raw);
    // The final MX's 550 reaches the original sender through the forwarder, its 5.7.1 kept.
    expect(refused.recipients[0]!.reply).toMatch(/^550 5\.7\.1 forwarding relay refused: 550 5\.7\.1 DMARC policy of sender\.test is reject: dkim=none \(no DKIM signature\), spf=fail/);
    expect(verdictOf(untrusting)[0]).toMatchObject({ arc: { result: 'pass', sealers: ['forwarder.test'] }, dmarc: { result: 'fail' }, action: 'reject' });
    expect(fwd.emitted('forwarded')).toMatchObject([{ detail: { accepted: false, reply: expect.stringMatching(/^550 5\.7\.1 DMARC/) } }]);
    expect(await copies(BOB, 'INBOX')).toEqual([]);

    for (const node of nodes.splice(0)) await node.stop();
    const trusting = await startNode(FINAL_MX, { auth: { enforceDmarc: true, trustedArcSealers: ['Forwarder.Test'] } });
    fwd = await forwarder(trusting.port);
    const second = await message(null);
    expect((await send(client, fwd.port, FORWARDER, [DAVE], second.raw)).recipients[0]).toMatchObject({ accepted: true, reply: expect.stringMatching(/^250 2\.0\.0 Ok: forwarded as /) });
    const [verdict] = verdictOf(trusting);
    expect(verdict).toMatchObject({
      spf: { result: 'fail' },
      dkim: [],
      dmarc: { result: 'fail', policy: 'reject' },
      arc: { result: 'pass', trustedSealer: 'forwarder.test' },
      action: 'accept-arc-override',
      reason: 'dmarc=fail, policy reject overridden: ARC chain passes and trusted sealer forwarder.test (i=1) said dmarc=pass',
    });
    expect(verdict!.header).toMatch(/dmarc=fail[^;]*\r\n policy\.override=arc \(trusted ARC sealer forwarder\.test at i=1 said dmarc=pass\)$/);
    const [stored] = await copies(BOB, 'INBOX');
    expect(stored).toContain(second.messageId);
    expect(stored).toContain('policy.override=arc');
  });

  it('local and forwarded recipients in one transaction: 250 once both hops accepted; 451 when the forwarding hop is down', async () => {
    const final = await startNode(FINAL_MX, { auth: enforcing });
    const fwd = await forwarder(final.port, { forwards: { [DAVE]: CAROL } });
    const { raw } = await message();
    const both = await send(client, fwd.port, FORWARDER, [BOB, DAVE], raw);
    expect(both.recipients.map((r) => r.reply)).toEqual([expect.stringMatching(/^250 2\.0\.0 Ok: delivered and forwarded as /), expect.stringMatching(/^250 /)]);
    expect(await copies(BOB, 'INBOX')).toHaveLength(1);
    expect(await copies(CAROL, 'INBOX')).toHaveLength(1);
    expect(fwd.emitted('handoff')).toMatchObject([{ detail: { recipients: [{ address: BOB, accepted: true }] } }]);

    await nodes[0]!.stop();
    const again = await message();
    const down = await send(client, fwd.port, FORWARDER, [BOB, DAVE], again.raw);
    expect(down.recipients[0]!.reply).toMatch(new RegExp(`^451 4\\.3\\.0 forwarding relay unavailable, try again later \\(SMTP ${FINAL_MX.replace(/\./g, '\\.')}:${final.port} \\(forwardVia\\): .*refused`));
    expect(fwd.emitted('handoff-failed')).toMatchObject([{ detail: { to: `SMTP ${FINAL_MX}:${final.port} (forwardVia)` } }]);
    // The local copy was taken meanwhile: the sender's retry may duplicate it, as for a partial LMTP failure.
    expect(await copies(CAROL, 'INBOX')).toHaveLength(1);
  });
});
