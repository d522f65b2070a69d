// Mail authentication at the MTA (issue 12), in process against a real lab DNS (dns2) and a receiving MX
// (smtp-server): DKIM signing of submissions with RSA 2048 and Ed25519 keys, each canonicalisation, a chosen header
// list, every signature checked on the copy the MX received by two verifiers — mailauth and Python's dkimpy — with
// the public keys published in the lab DNS; key rotation with `set-dkim`; the submission From: policy; relay
// clients on port 25. Waits on events, never on sleeps.
import type { KeyObject } from 'node:crypto';
import { promises as fs } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { dkimVerify } from 'mailauth/lib/dkim/verify.js';
import nodemailer from 'nodemailer';
import type { SMTPServer } from 'smtp-server';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createLabResolver, startDnsServer, Zones, type RunningDnsServer } from '../dns/index.js';
import type { DkimSigningConfig, MtaNodeConfig } from '../shared/config.js';
import { EventLog, type LabEvent } from '../shared/events.js';
import type { RunningRole } from '../shared/node.js';
import { DkimSigner, fromMailboxes, signedHeaders } from './dkim.js';
import { dkimPython, dkimpyEd25519, dkimpyVerify, keyRecord, newKey, type Algorithm } from './dkim.test-helper.js';
import { startMta, type DkimSignerView } from './index.js';
import { startCapturingServer, testMtaConfig, waitForEvent } from './mta.test-helper.js';

const block = `127.${Math.floor(Math.random() * 200) + 20}.${Math.floor(Math.random() * 200) + 20}`;
const ip = (n: number) => `${block}.${n}`;
const DNS = ip(2);
const MTA = ip(3); // submissionFrom own-domain (default), signers, relayClients
const MTA_ANY = ip(4); // submissionFrom any
const MX = ip(10); // mx.receiver.test
const MX_LATE = ip(11); // mx.late.test: down until a test starts it
const LMTP = ip(20);
const RELAY_CLIENT = ip(30); // in the MTA's relayClients
const STRANGER = ip(31); // not
const RELAY_PORT = 20_000 + Math.floor(Math.random() * 20_000);
const ALICE = { address: 'alice@sender.test', password: 'alice-secret' };

// ---- the lab ----

let labZones: Zones;
let dns: RunningDnsServer;
let resolver: ReturnType<typeof createLabResolver>;
let dataDir: string;
let mta: RunningRole;
let mtaAny: RunningRole;
const events = new EventLog('mta');
const eventsAny = new EventLog('mta');
const servers: SMTPServer[] = [];
/** What the MX hosts received, as latin1 text (the bytes as sent). */
const received: { host: string; data: string; client: string }[] = [];

async function startMx(host: string, address: string): Promise<void> {
  const server = await startCapturingServer(address, RELAY_PORT, (data, session) => {
    received.push({ host, data: data.toString('latin1'), client: session.remoteAddress });
    return `2.0.0 Ok: ${host} took it`;
  });
  servers.push(server);
}

function mtaConfig(address: string, over: Partial<MtaNodeConfig>): MtaNodeConfig {
  return testMtaConfig({
    address,
    dataDir: path.join(dataDir, address),
    resolver: dns.endpoint,
    localDelivery: { host: LMTP, port: 9 },
    users: [ALICE],
    relayPort: RELAY_PORT,
    ...over,
  });
}

beforeAll(async () => {
  labZones = new Zones([
    { origin: 'sender.test', records: [] },
    { origin: 'receiver.test', records: [{ name: 'receiver.test', type: 'MX', exchange: 'mx.receiver.test', priority: 10 }, { name: 'mx.receiver.test', type: 'A', address: MX }] },
    { origin: 'late.test', records: [{ name: 'late.test', type: 'MX', exchange: 'mx.late.test', priority: 10 }, { name: 'mx.late.test', type: 'A', address: MX_LATE }] },
  ]);
  dns = await startDnsServer({ host: DNS, port: 0, zones: labZones });
  resolver = createLabResolver(dns.endpoint);
  await startMx('mx.receiver.test', MX);
  dataDir = await fs.mkdtemp(path.join(os.tmpdir(), 'maillab-mta-dkim-'));
  mta = await startMta({ config: mtaConfig(MTA, { relayClients: [RELAY_CLIENT] }), events, log: () => undefined });
  mtaAny = await startMta({ config: mtaConfig(MTA_ANY, { submissionFrom: 'any' }), events: eventsAny, log: () => undefined });
});

afterAll(async () => {
  await mta?.stop();
  await mtaAny?.stop();
  await Promise.all(servers.map((server) => new Promise<void>((resolve) => server.close(() => resolve()))));
  await dns?.close();
  if (dataDir) await fs.rm(dataDir, { recursive: true, force: true });
});

function submit(node: RunningRole, message: { from: string; to: string; subject: string; raw?: string }) {
  const transport = nodemailer.createTransport({ host: node === mta ? MTA : MTA_ANY, port: node.services.submission!.port, secure: false, ignoreTLS: true, auth: { user: ALICE.address, pass: ALICE.password }, name: 'client.sender.test' });
  const content = message.raw !== undefined ? { raw: message.raw } : { from: message.from, to: message.to, subject: message.subject, text: `Hello from ${message.from}.\r\nA second line, with  two spaces \r\n\r\n\r\n` };
  return transport.sendMail({ envelope: { from: ALICE.address, to: [message.to] }, ...content });
}

function queueIdOf(response: string): string {
  const match = /queued as ([0-9A-F]+)/.exec(response);
  if (!match) throw new Error(`no queue id in ${response}`);
  return match[1]!;
}

const ofQueue = (queueId: string, kind: string) => (e: LabEvent) => e.queueId === queueId && e.kind === kind;

/** The copy an MX received of the message queued as `queueId` (its Received header names the queue id). */
function copyOf(queueId: string): string {
  const copy = received.find((r) => r.data.includes(` id ${queueId}`));
  if (!copy) throw new Error(`no MX received the message queued as ${queueId}`);
  return copy.data;
}

async function setDkim(signers: DkimSigningConfig[]): Promise<{ signers: DkimSignerView[] }> {
  return (await mta.rpc['set-dkim']!({ signers })) as { signers: DkimSignerView[] };
}

/** Publishes the key of `selector` in the lab DNS and gives the TXT as a resolver reads it back. */
async function publishKey(selector: string, algorithm: Algorithm, publicKey: KeyObject): Promise<string> {
  const name = `${selector}._domainkey.sender.test`;
  labZones.setRecords(name, 'TXT', [{ name, type: 'TXT', data: keyRecord(algorithm, publicKey) }]);
  return (await resolver.resolveTxt(name)).map((chunks) => chunks.join(''))[0]!;
}

/** mailauth's verdict on every signature of `message`, keys read from the lab DNS. */
async function mailauthVerdicts(message: string) {
  const result = await dkimVerify(Buffer.from(message, 'latin1'), {
    resolver: async (name: string, type: string) => {
      if (type !== 'TXT') throw Object.assign(new Error(`unexpected ${type} query for ${name}`), { code: 'ENOTFOUND' });
      return resolver.resolveTxt(name);
    },
  });
  // mailauth 4.13.3 reports a= and c= as `algo` and `format`, whatever its typings say.
  return result.results.map((r) => {
    const tags = r as typeof r & { algo?: string; format?: string };
    return { domain: r.signingDomain, selector: r.selector, result: r.status.result, info: r.info, algorithm: tags.algo, canonicalization: tags.format };
  });
}

describe('DKIM signing of submissions', () => {
  const cases: { selector: string; algorithm: Algorithm; canonicalization: DkimSigningConfig['canonicalization']; headers?: string[] }[] = [
    { selector: 'rsa-rr', algorithm: 'rsa-sha256', canonicalization: 'relaxed/relaxed' },
    { selector: 'rsa-ss', algorithm: 'rsa-sha256', canonicalization: 'simple/simple', headers: ['From', 'To', 'Subject', 'Date', 'Message-ID'] },
    { selector: 'ed-rs', algorithm: 'ed25519-sha256', canonicalization: 'relaxed/simple' },
    { selector: 'ed-sr', algorithm: 'ed25519-sha256', canonicalization: 'simple/relaxed', headers: ['from', 'subject', 'message-id'] },
  ];

  for (const c of cases) {
    it(`signs with ${c.algorithm} ${c.canonicalization}${c.headers ? ` h=${c.headers.join(':')}` : ''}; mailauth and dkimpy verify the relayed copy`, async () => {
      const { privateKey, publicKey } = newKey(c.algorithm);
      const txt = await publishKey(c.selector, c.algorithm, publicKey);
      expect(await setDkim([{ domain: 'sender.test', selector: c.selector, privateKey, algorithm: c.algorithm, canonicalization: c.canonicalization, ...(c.headers ? { headers: c.headers } : {}) }])).toEqual({
        signers: [{ domain: 'sender.test', selector: c.selector, algorithm: c.algorithm }],
      });

      const info = await submit(mta, { from: 'Alice <alice@sender.test>', to: 'bob@receiver.test', subject: `signed ${c.selector}` });
      const queueId = queueIdOf(info.response);
      const submitted = await waitForEvent(events, ofQueue(queueId, 'submitted'), 'submitted');
      expect(submitted.detail.dkim).toEqual({ domain: 'sender.test', selector: c.selector, algorithm: c.algorithm });
      await waitForEvent(events, ofQueue(queueId, 'relayed'), 'relayed');

      const copy = copyOf(queueId);
      // The signature is the topmost header (RFC 6376 §5.6), above the MTA's own Received.
      expect(copy).toMatch(/^DKIM-Signature: /);
      const header = copy.slice(0, copy.indexOf('\r\nReceived: '));
      expect(header).toContain(`a=${c.algorithm}`);
      expect(header).toContain(`c=${c.canonicalization}`);
      expect(header.replace(/\s+/g, '')).toContain(`s=${c.selector};`);
      const signed = signedHeaders(header).map((h) => h.toLowerCase());
      if (c.headers) expect(signed.sort()).toEqual(c.headers.map((h) => h.toLowerCase()).sort());
      else expect(signed).toEqual(expect.arrayContaining(['from', 'to', 'subject', 'date', 'message-id']));

      const forged = copy.replace('Subject: signed', 'Subject: Signed');
      expect(forged).not.toBe(copy);
      expect(await mailauthVerdicts(copy)).toEqual([{ domain: 'sender.test', selector: c.selector, result: 'pass', info: expect.stringMatching(/^dkim=pass /), algorithm: c.algorithm, canonicalization: c.canonicalization }]);
      if (dkimPython && (c.algorithm === 'rsa-sha256' || dkimpyEd25519)) {
        expect(await dkimpyVerify(copy, { [`${c.selector}._domainkey.sender.test`]: txt })).toBe('pass');
        // The same verifier fails a copy whose signed Subject was changed: the verdict is not a constant.
        expect(await dkimpyVerify(forged, { [`${c.selector}._domainkey.sender.test`]: txt })).toBe('fail');
      }
      expect((await mailauthVerdicts(forged))[0]).toMatchObject({ result: 'fail' });
    });
  }

  it('queues the signed copy: a retry after a key rotation sends the signature made at submission', async () => {
    const first = newKey('ed25519-sha256');
    const txt = await publishKey('before', 'ed25519-sha256', first.publicKey);
    await setDkim([{ domain: 'sender.test', selector: 'before', privateKey: first.privateKey, algorithm: 'ed25519-sha256', canonicalization: 'relaxed/relaxed' }]);

    const info = await submit(mta, { from: 'alice@sender.test', to: 'carol@late.test', subject: 'signed once' });
    const queueId = queueIdOf(info.response);
    await waitForEvent(events, ofQueue(queueId, 'deferred'), 'deferred (mx.late.test is down)');
    const queued = (await mta.rpc.message!({ queueId })) as { headers?: string };
    const queuedSignature = /^DKIM-Signature: [^]*?(?=\r\n\S)/.exec(queued.headers ?? '')?.[0];
    expect(queuedSignature).toContain('s=before;');

    const second = newKey('rsa-sha256');
    await publishKey('after', 'rsa-sha256', second.publicKey);
    await setDkim([{ domain: 'sender.test', selector: 'after', privateKey: second.privateKey, algorithm: 'rsa-sha256', canonicalization: 'relaxed/relaxed' }]);
    await startMx('mx.late.test', MX_LATE);
    await mta.rpc.flush!({});
    await waitForEvent(events, ofQueue(queueId, 'relayed'), 'relayed after the flush');

    const copy = copyOf(queueId);
    expect(copy.startsWith(queuedSignature! + '\r\n')).toBe(true);
    expect(await mailauthVerdicts(copy)).toMatchObject([{ selector: 'before', result: 'pass' }]);
    if (dkimPython && dkimpyEd25519) expect(await dkimpyVerify(copy, { 'before._domainkey.sender.test': txt })).toBe('pass');
  });

  it('does not sign a From: domain without a signer, nor mail received on port 25', async () => {
    const { privateKey, publicKey } = newKey('ed25519-sha256');
    await publishKey('k25', 'ed25519-sha256', publicKey);
    await setDkim([{ domain: 'sender.test', selector: 'k25', privateKey, algorithm: 'ed25519-sha256', canonicalization: 'relaxed/relaxed' }]);

    // `any` lets alice use another From: domain; there is no signer for it (the other MTA has none at all).
    const elsewhere = await submit(mtaAny, { from: 'alice@elsewhere.test', to: 'bob@receiver.test', subject: 'unsigned' });
    const submitted = await waitForEvent(eventsAny, ofQueue(queueIdOf(elsewhere.response), 'submitted'), 'submitted');
    expect(submitted.detail.dkim).toBeUndefined();

    const port25 = nodemailer.createTransport({ host: MTA, port: mta.services.smtp!.port, secure: false, ignoreTLS: true, name: 'relay.sender.test', localAddress: RELAY_CLIENT });
    const relayedInfo = await port25.sendMail({ from: 'alice@sender.test', to: 'bob@receiver.test', subject: 'via 25', text: 'x' });
    const queueId = queueIdOf(relayedInfo.response);
    await waitForEvent(events, ofQueue(queueId, 'relayed'), 'relayed');
    expect(copyOf(queueId)).not.toMatch(/^DKIM-Signature:/im);
  });
});

describe('set-dkim and dkim', () => {
  const good = (): DkimSigningConfig => ({ domain: 'sender.test', selector: 'keep', privateKey: newKey('ed25519-sha256').privateKey, algorithm: 'ed25519-sha256', canonicalization: 'relaxed/relaxed' });

  it('shows the signers without their keys', async () => {
    await setDkim([good()]);
    const current = (await mta.rpc.dkim!({})) as { signers: DkimSignerView[] };
    expect(current).toEqual({ signers: [{ domain: 'sender.test', selector: 'keep', algorithm: 'ed25519-sha256' }] });
    expect(JSON.stringify(current)).not.toContain('PRIVATE KEY');
  });

  const invalid: [string, (base: DkimSigningConfig) => unknown, RegExp][] = [
    ['an Ed25519 key for rsa-sha256', (b) => ({ ...b, algorithm: 'rsa-sha256' }), /signer 2 \(d=other\.test s=next\): privateKey is an ed25519 key, rsa-sha256 needs an rsa key/],
    ['an RSA key for ed25519-sha256', (b) => ({ ...b, privateKey: newKey('rsa-sha256', 1024).privateKey }), /privateKey is an rsa key, ed25519-sha256 needs an ed25519 key/],
    ['an RSA key under 1024 bits', (b) => ({ ...b, algorithm: 'rsa-sha256', privateKey: newKey('rsa-sha256', 768).privateKey }), /the RSA key has 768 bits, at least 1024 are needed/],
    ['a key that is no PEM', (b) => ({ ...b, privateKey: 'not a key' }), /privateKey is not a PEM private key/],
    ['a PEM that does not parse', (b) => ({ ...b, privateKey: '-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n' }), /privateKey does not parse/],
    ['a selector with a space', (b) => ({ ...b, selector: 'my key' }), /selector "my key" is not a DNS label sequence/],
    ['a domain with an underscore', (b) => ({ ...b, domain: 'bad_domain.test' }), /domain "bad_domain\.test" is not a domain name/],
    ['an unknown algorithm', (b) => ({ ...b, algorithm: 'rsa-sha1' }), /algorithm "rsa-sha1" is not one of rsa-sha256, ed25519-sha256/],
    ['an unknown canonicalization', (b) => ({ ...b, canonicalization: 'loose/loose' }), /canonicalization "loose\/loose" is not one of/],
    ['a header list without From', (b) => ({ ...b, headers: ['Subject', 'To'] }), /leave out From, which RFC 6376 §5\.4 requires/],
    ['a second signer for the same domain', (b) => ({ ...b, domain: 'sender.test' }), /domain sender\.test already has a signer \(s=keep\); one per domain/],
  ];
  for (const [what, change, error] of invalid) {
    it(`refuses ${what} and changes nothing`, async () => {
      await setDkim([good()]);
      const bad = change({ ...good(), domain: 'other.test', selector: 'next' });
      await expect(Promise.resolve().then(() => mta.rpc['set-dkim']!({ signers: [good(), bad] as DkimSigningConfig[] }))).rejects.toThrow(error);
      expect(await mta.rpc.dkim!({})).toEqual({ signers: [{ domain: 'sender.test', selector: 'keep', algorithm: 'ed25519-sha256' }] });
    });
  }

  it('refuses a call without a list', async () => {
    await expect(Promise.resolve().then(() => mta.rpc['set-dkim']!({}))).rejects.toThrow(/DKIM signers must be a list, got undefined/);
  });

  it('an empty list stops signing', async () => {
    expect(await setDkim([])).toEqual({ signers: [] });
    const info = await submit(mta, { from: 'alice@sender.test', to: 'bob@receiver.test', subject: 'no signers' });
    const submitted = await waitForEvent(events, ofQueue(queueIdOf(info.response), 'submitted'), 'submitted');
    expect(submitted.detail.dkim).toBeUndefined();
  });

  it('a node whose configured key is bad does not start', async () => {
    const config = mtaConfig(ip(5), { dkim: [{ ...good(), algorithm: 'rsa-sha256' }] });
    await expect(startMta({ config, events: new EventLog('mta'), log: () => undefined })).rejects.toThrow(/DKIM signer 1 \(d=sender\.test s=keep\): privateKey is an ed25519 key/);
  });
});

describe('submission From: policy', () => {
  const refusal = (err: unknown) => err as { responseCode?: number; response?: string };

  it('refuses a From: domain that is not the user\'s, at the end of DATA, naming both', async () => {
    const err = refusal(await submit(mta, { from: 'Boss <boss@example.test>', to: 'bob@receiver.test', subject: 'spoof' }).catch((e: unknown) => e));
    expect(err.responseCode).toBe(553);
    expect(err.response).toBe('553 5.7.1 <boss@example.test>: From: domain example.test is not yours (user alice@sender.test may send From: sender.test only)');
    const rejected = await waitForEvent(events, (e) => e.kind === 'rejected' && e.detail.attempted === 'boss@example.test', 'rejected');
    expect(rejected.detail).toMatchObject({ service: 'submission', stage: 'DATA', user: 'alice@sender.test', from: 'alice@sender.test', to: ['bob@receiver.test'] });
  });

  it('checks every From: mailbox, not only the first', async () => {
    const raw = 'From: alice@sender.test, Eve <eve@Evil.test>\r\nSender: alice@sender.test\r\nTo: bob@receiver.test\r\nSubject: two authors\r\n\r\nhi\r\n';
    const err = refusal(await submit(mta, { from: '', to: 'bob@receiver.test', subject: '', raw }).catch((e: unknown) => e));
    expect(err.response).toMatch(/^553 5\.7\.1 <eve@Evil\.test>: From: domain evil\.test is not yours \(user alice@sender\.test/);
  });

  it('lets a From: mailbox of the user\'s domain through, in any case', async () => {
    const info = await submit(mta, { from: 'Team <Team@SENDER.test>', to: 'bob@receiver.test', subject: 'team' });
    await waitForEvent(events, ofQueue(queueIdOf(info.response), 'relayed'), 'relayed');
  });

  it('with `any`, lets any From: through', async () => {
    const info = await submit(mtaAny, { from: 'Boss <boss@example.test>', to: 'bob@receiver.test', subject: 'spoof allowed' });
    const queueId = queueIdOf(info.response);
    await waitForEvent(eventsAny, ofQueue(queueId, 'relayed'), 'relayed');
    expect(copyOf(queueId)).toContain('From: Boss <boss@example.test>');
  });
});

describe('relay clients on port 25', () => {
  const port25 = (localAddress: string) => nodemailer.createTransport({ host: MTA, port: mta.services.smtp!.port, secure: false, ignoreTLS: true, name: 'mx.forwarder.test', localAddress });

  it('relays to any domain for a client in relayClients', async () => {
    const info = await port25(RELAY_CLIENT).sendMail({ from: 'someone@elsewhere.test', to: 'bob@receiver.test', subject: 'forwarded', text: 'x' });
    const queueId = queueIdOf(info.response);
    const accepted = await waitForEvent(events, ofQueue(queueId, 'received'), 'received');
    expect(accepted.detail).toMatchObject({ from: 'someone@elsewhere.test', to: ['bob@receiver.test'], client: RELAY_CLIENT, relay: true });
    const relayed = await waitForEvent(events, ofQueue(queueId, 'relayed'), 'relayed');
    expect(relayed.detail).toMatchObject({ rcpt: 'bob@receiver.test', mx: 'mx.receiver.test' });
    expect(received.find((r) => r.data.includes(` id ${queueId}`))?.client).toBe(MTA);
  });

  it('a node with an entry that is no address does not start', async () => {
    const config = mtaConfig(ip(6), { relayClients: [RELAY_CLIENT, 'mx.forwarder.test'] });
    await expect(startMta({ config, events: new EventLog('mta'), log: () => undefined })).rejects.toThrow('relayClients: "mx.forwarder.test" is not an IP address or an address/prefix network');
  });

  it('refuses relaying for any other client, naming the domain', async () => {
    const err = (await port25(STRANGER).sendMail({ from: 'someone@elsewhere.test', to: 'bob@receiver.test', text: 'x' }).catch((e: unknown) => e)) as { responseCode?: number; response?: string };
    expect(err.responseCode).toBe(550);
    expect(err.response).toMatch(/^550 5\.7\.1 <bob@receiver\.test>: relay access denied \(mta\.sender\.test is not the destination of receiver\.test/);
    await waitForEvent(events, (e) => e.kind === 'rejected' && e.detail.stage === 'RCPT TO' && e.detail.client === STRANGER, 'rejected');
  });
});

describe('DkimSigner and fromMailboxes', () => {
  it('leaves a message of a domain without a signer unchanged', async () => {
    const message = Buffer.from('From: a@unsigned.test\r\nSubject: x\r\n\r\nbody\r\n');
    const result = await new DkimSigner([]).sign(message, 'unsigned.test');
    expect(result.message).toBe(message);
    expect(result.signature).toBeUndefined();
  });

  it('signs for the domain case-insensitively and reports the tags', async () => {
    const signer = new DkimSigner([{ domain: 'Sender.Test.', selector: 'S1', privateKey: newKey('ed25519-sha256').privateKey, algorithm: 'ed25519-sha256', canonicalization: 'simple/simple', headers: ['From', 'Subject'] }]);
    expect(signer.list()).toEqual([{ domain: 'sender.test', selector: 's1', algorithm: 'ed25519-sha256' }]);
    const result = await signer.sign(Buffer.from('From: a@sender.test\r\nSubject: x\r\nTo: b@receiver.test\r\n\r\nbody\r\n'), 'SENDER.test');
    expect(result.signature).toEqual({ domain: 'sender.test', selector: 's1', algorithm: 'ed25519-sha256', canonicalization: 'simple/simple', headers: ['Subject', 'From'] });
    expect(result.message.toString()).toMatch(/^DKIM-Signature: v=1; a=ed25519-sha256; c=simple\/simple; d=sender\.test;/);
  });

  it('reads every From: field and mailbox, groups and folding included', () => {
    const raw = Buffer.from('Subject: x\r\nFrom: "Doe, J." <j@One.test>,\r\n  team: k@two.test, l@three.test;\r\nFrom: m@four.test\r\n\r\nFrom: body@five.test\r\n');
    expect(fromMailboxes(raw).map((m) => m.domain)).toEqual(['one.test', 'two.test', 'three.test', 'four.test']);
  });
});
