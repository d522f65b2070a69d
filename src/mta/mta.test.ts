// The MTA end to end, in process: a real lab DNS (dns2), receiving MX servers and an LMTP server (smtp-server) on
// their own 127.x.y.z addresses, and clients submitting with nodemailer. Waits on events, never on sleeps.
import { promises as fs } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { simpleParser } from 'mailparser';
import nodemailer from 'nodemailer';
import type { SMTPServer, SMTPServerOptions } from 'smtp-server';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startDnsServer, Zones, type RunningDnsServer } from '../dns/index.js';
import type { MtaNodeConfig, ZoneConfig } from '../shared/config.js';
import { EventLog, type LabEvent } from '../shared/events.js';
import type { RunningRole } from '../shared/node.js';
import { startMta, type QueueEntryView } from './index.js';
import { startCapturingServer, testMtaConfig, waitForEvent } from './mta.test-helper.js';

const block = `127.${Math.floor(Math.random() * 200) + 20}.${Math.floor(Math.random() * 200) + 20}`;
const ip = (n: number) => `${block}.${n}`;
const DNS = ip(2);
const MTA = ip(3);
const MX = ip(10); // mx.receiver.test, up
const MX_FLAKY = ip(11); // mx.flaky.test, down until a test starts it
const MX_DEAD = ip(12); // never listens
const MX_BACKUP = ip(13); // mx2.fallback.test, up
const LMTP = ip(20);
const MX_SILENT = ip(14); // silent.test: accepts connections and says nothing until a test lets it go
const RELAY_PORT = 20_000 + Math.floor(Math.random() * 20_000);

const zones: ZoneConfig[] = [
  {
    origin: 'receiver.test',
    records: [
      { name: 'receiver.test', type: 'MX', exchange: 'mx.receiver.test', priority: 10 },
      { name: 'mx.receiver.test', type: 'A', address: MX },
    ],
  },
  {
    origin: 'flaky.test',
    records: [
      { name: 'flaky.test', type: 'MX', exchange: 'mx.flaky.test', priority: 10 },
      { name: 'mx.flaky.test', type: 'A', address: MX_FLAKY },
    ],
  },
  {
    origin: 'fallback.test',
    records: [
      { name: 'fallback.test', type: 'MX', exchange: 'mx1.fallback.test', priority: 10 },
      { name: 'fallback.test', type: 'MX', exchange: 'mx2.fallback.test', priority: 20 },
      { name: 'mx1.fallback.test', type: 'A', address: MX_DEAD },
      { name: 'mx2.fallback.test', type: 'A', address: MX_BACKUP },
    ],
  },
  { origin: 'implicit.test', records: [{ name: 'implicit.test', type: 'A', address: MX }] },
  { origin: 'nomail.test', records: [{ name: 'nomail.test', type: 'MX', exchange: '.', priority: 0 }] },
  {
    origin: 'expire.test',
    records: [
      { name: 'expire.test', type: 'MX', exchange: 'mx.expire.test', priority: 10 },
      { name: 'mx.expire.test', type: 'A', address: MX_DEAD },
    ],
  },
];

interface Received {
  server: string;
  from: string;
  to: string[];
  data: string;
  session: string;
  client: string;
}

const received: Received[] = [];
const servers: { name: string; server: SMTPServer }[] = [];

function refusal(code: number, text: string): Error {
  return Object.assign(new Error(text), { responseCode: code });
}

async function startReceiver(name: string, address: string, port: number, options: Partial<SMTPServerOptions> = {}): Promise<{ port: number; close(): Promise<void> }> {
  const server = await startCapturingServer(
    address,
    port,
    (data, session) => {
      received.push({ server: name, from: session.envelope.mailFrom ? session.envelope.mailFrom.address : '', to: session.envelope.rcptTo.map((r) => r.address), data: data.toString('utf8'), session: session.id, client: session.remoteAddress });
      return `2.0.0 Ok: ${name} took it`;
    },
    {
      name,
      onRcptTo(rcpt, _session, callback) {
        if (/^(nobody|ghost)@/.test(rcpt.address)) return callback(refusal(550, `5.1.1 <${rcpt.address}>: no such user here`));
        callback();
      },
      ...options,
    },
  );
  servers.push({ name, server });
  const bound = server.server.address();
  return {
    port: typeof bound === 'object' && bound ? bound.port : port,
    close: () => new Promise<void>((resolve) => server.close(() => resolve())),
  };
}

let labZones: Zones;
let dns: RunningDnsServer;
let dataDir: string;
let lmtpPort: number;
let config: MtaNodeConfig;
let events: EventLog;
let mta: RunningRole;

async function startTheMta(): Promise<void> {
  events = new EventLog('mta');
  mta = await startMta({ config, events, log: () => undefined });
}

beforeAll(async () => {
  labZones = new Zones(zones);
  dns = await startDnsServer({ host: DNS, port: 0, zones: labZones });
  await startReceiver('mx.receiver.test', MX, RELAY_PORT);
  await startReceiver('mx2.fallback.test', MX_BACKUP, RELAY_PORT);
  lmtpPort = (await startReceiver('mailbox.sender.test', LMTP, 0, { lmtp: true })).port;
  dataDir = await fs.mkdtemp(path.join(os.tmpdir(), 'maillab-mta-'));
  config = testMtaConfig({
    address: MTA,
    dataDir,
    resolver: dns.endpoint,
    localDelivery: { host: LMTP, port: lmtpPort },
    users: [
      { address: 'alice@sender.test', password: 'alice-secret' },
      { address: 'bert@sender.test', password: 'bert-secret' },
      // Known to the MTA (so port 25 accepts it at RCPT), refused by the mailbox server: a local delivery that fails.
      { address: 'ghost@sender.test', password: 'ghost-secret' },
    ],
    relayPort: RELAY_PORT,
  });
  await startTheMta();
});

afterAll(async () => {
  await mta?.stop();
  await Promise.all(servers.map(({ server }) => new Promise<void>((resolve) => server.close(() => resolve()))));
  await dns?.close();
  if (dataDir) await fs.rm(dataDir, { recursive: true, force: true });
});

function waitFor(match: (e: LabEvent) => boolean, what: string, timeoutMs = 8000): Promise<LabEvent> {
  return waitForEvent(events, match, what, timeoutMs);
}

const ofQueue = (queueId: string, kind: string, detail: Record<string, unknown> = {}) => (e: LabEvent) =>
  e.queueId === queueId && e.kind === kind && Object.entries(detail).every(([k, v]) => e.detail[k] === v);

function submitter(user = 'alice@sender.test', pass = 'alice-secret') {
  return nodemailer.createTransport({ host: MTA, port: mta.services.submission!.port, secure: false, ignoreTLS: true, auth: { user, pass }, name: 'client.sender.test' });
}

function port25() {
  return nodemailer.createTransport({ host: MTA, port: mta.services.smtp!.port, secure: false, ignoreTLS: true, name: 'mx.elsewhere.test' });
}

/** The queue id from the submission reply (`250 2.0.0 Ok: queued as <qid>`). */
function queueIdOf(response: string): string {
  const match = /queued as ([0-9A-F]+)/.exec(response);
  if (!match) throw new Error(`no queue id in ${response}`);
  return match[1]!;
}

/** The EHLO reply of a service, read over a raw socket. */
function ehlo(port: number): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = net.connect({ host: MTA, port });
    let buffer = '';
    let sent = false;
    socket.setEncoding('utf8');
    socket.on('error', reject);
    socket.on('data', (chunk: string) => {
      buffer += chunk;
      if (!sent && /^220 .*\r\n/m.test(buffer)) {
        sent = true;
        buffer = '';
        socket.write('EHLO probe.test\r\n');
      } else if (sent && /^250 .*\r\n/m.test(buffer)) {
        socket.end('QUIT\r\n');
        resolve(buffer);
      }
    });
  });
}

async function rpc<T>(op: string, args: object = {}): Promise<T> {
  return (await mta.rpc[op]!(args)) as T;
}

describe('MTA', () => {
  it('reports its bound ports', () => {
    expect(mta.services.smtp).toMatchObject({ host: MTA });
    expect(mta.services.submission!.port).toBeGreaterThan(0);
    expect(mta.services.smtp!.port).not.toBe(mta.services.submission!.port);
  });

  it('advertises SIZE on both services, AUTH only on submission, no STARTTLS yet', async () => {
    const submission = await ehlo(mta.services.submission!.port);
    expect(submission).toMatch(/250[- ]SIZE 26214400/);
    expect(submission).toMatch(/250[- ]AUTH PLAIN LOGIN/);
    expect(submission).not.toContain('STARTTLS');
    const smtp = await ehlo(mta.services.smtp!.port);
    expect(smtp).toMatch(/250[- ]SIZE 26214400/);
    expect(smtp).not.toContain('AUTH');
    expect(smtp).not.toContain('STARTTLS');
  });

  it('relays an authenticated submission to the MX found in DNS', async () => {
    const info = await submitter().sendMail({ from: 'alice@sender.test', to: 'bob@receiver.test', subject: 'hello', text: 'hi bob' });
    expect(info.response).toMatch(/^250 2\.0\.0 Ok: queued as [0-9A-F]{18}$/);
    const queueId = queueIdOf(info.response);
    const relayed = await waitFor(ofQueue(queueId, 'relayed'), 'relayed');
    expect(relayed.messageId).toBe(info.messageId);
    expect(relayed.detail).toMatchObject({ rcpt: 'bob@receiver.test', mx: 'mx.receiver.test', host: MX, port: RELAY_PORT, status: '2.0.0', reused: false });
    expect(relayed.detail.reply).toBe('250 2.0.0 Ok: mx.receiver.test took it');

    const kinds = events.since(0).filter((e) => e.queueId === queueId).map((e) => e.kind);
    expect(kinds).toEqual(['submitted', 'queued', 'active', 'mx-lookup', 'connect', 'relayed']);
    const submitted = events.since(0).find(ofQueue(queueId, 'submitted'))!;
    expect(submitted.detail).toMatchObject({ user: 'alice@sender.test', from: 'alice@sender.test', to: ['bob@receiver.test'] });
    const lookup = events.since(0).find(ofQueue(queueId, 'mx-lookup'))!;
    expect(lookup.detail).toMatchObject({ domain: 'receiver.test', result: { kind: 'mx', hosts: [{ exchange: 'mx.receiver.test', priority: 10, addresses: [MX] }] } });

    const copy = received.find((r) => r.data.includes(`id ${queueId}`))!;
    // The MTA connects from its own address.
    expect(copy).toMatchObject({ server: 'mx.receiver.test', from: 'alice@sender.test', to: ['bob@receiver.test'], client: MTA });
    expect(copy.data).toMatch(new RegExp(`^Received: from client\\.sender\\.test \\(\\[127\\.0\\.0\\.1\\]\\)\r\n\tby mta\\.sender\\.test \\(maillab\\) with ESMTPA id ${queueId}\r\n\tfor <bob@receiver\\.test>;`));

    // Delivered means out of the queue; `all` still shows it.
    expect((await rpc<QueueEntryView[]>('queue')).find((m) => m.queueId === queueId)).toBeUndefined();
    const entry = (await rpc<QueueEntryView[]>('queue', { all: true })).find((m) => m.queueId === queueId)!;
    expect(entry).toMatchObject({ state: 'done', from: 'alice@sender.test', messageId: info.messageId, recipients: [{ address: 'bob@receiver.test', state: 'delivered', attempts: 1 }] });
  });

  it('adds Message-ID and Date to a submission that lacks them', async () => {
    const raw = 'From: alice@sender.test\r\nTo: bob@receiver.test\r\nSubject: bare\r\n\r\nno id\r\n';
    const info = await submitter().sendMail({ envelope: { from: 'alice@sender.test', to: ['bob@receiver.test'] }, raw });
    const queueId = queueIdOf(info.response);
    const relayed = await waitFor(ofQueue(queueId, 'relayed'), 'relayed');
    expect(relayed.messageId).toMatch(new RegExp(`^<\\d{14}\\.${queueId}@mta\\.sender\\.test>$`));
    const parsed = await simpleParser(received.find((r) => r.data.includes(`id ${queueId}`))!.data);
    expect(parsed.messageId).toBe(relayed.messageId);
    expect(parsed.date).toBeInstanceOf(Date);
    expect(parsed.subject).toBe('bare');
  });

  it('groups the recipients of one domain into one transaction, and delivers local ones over LMTP', async () => {
    const info = await submitter().sendMail({ from: 'alice@sender.test', to: ['bob@receiver.test', 'carol@receiver.test', 'bert@sender.test'], subject: 'group', text: 'x' });
    const queueId = queueIdOf(info.response);
    await waitFor(ofQueue(queueId, 'relayed', { rcpt: 'carol@receiver.test' }), 'relayed carol');
    const delivered = await waitFor(ofQueue(queueId, 'delivered', { rcpt: 'bert@sender.test' }), 'delivered bert');
    expect(delivered.detail).toMatchObject({ host: LMTP, port: lmtpPort, status: '2.0.0' });
    const copies = received.filter((r) => r.data.includes(`with ESMTPA id ${queueId}`));
    expect(copies.map((c) => [c.server, c.to])).toEqual(expect.arrayContaining([
      ['mx.receiver.test', ['bob@receiver.test', 'carol@receiver.test']],
      ['mailbox.sender.test', ['bert@sender.test']],
    ]));
    expect(copies).toHaveLength(2);
    // No `for` clause with several recipients (RFC 5321 §7.2: it would disclose the others).
    expect(copies[0]!.data.split('\r\n\r\n')[0]).not.toContain('for <');
  });

  it('enforces the submission policy: AUTH first, own address only', async () => {
    const anonymous = nodemailer.createTransport({ host: MTA, port: mta.services.submission!.port, secure: false, ignoreTLS: true });
    const noAuth = await anonymous.sendMail({ from: 'alice@sender.test', to: 'bob@receiver.test', text: 'x' }).catch((e: { responseCode?: number; response?: string }) => e);
    expect(noAuth).toMatchObject({ responseCode: 530 });
    expect((noAuth as { response: string }).response).toContain('5.7.0');

    const spoof = await submitter().sendMail({ envelope: { from: 'bert@sender.test', to: ['bob@receiver.test'] }, from: 'bert@sender.test', to: 'bob@receiver.test', text: 'x' }).catch((e: { responseCode?: number; response?: string }) => e);
    expect(spoof).toMatchObject({ responseCode: 553 });
    expect((spoof as { response: string }).response).toMatch(/^553 5\.7\.1 <bert@sender\.test>: sender address rejected: not owned by user alice@sender\.test/);
    const rejected = await waitFor((e) => e.kind === 'rejected' && e.detail.attempted === 'bert@sender.test', 'rejected spoof');
    expect(rejected.detail).toMatchObject({ service: 'submission', stage: 'MAIL FROM', user: 'alice@sender.test', client: '127.0.0.1', hop: 'client.sender.test[127.0.0.1] -> mta.sender.test (submission)' });

    const badPassword = await submitter('alice@sender.test', 'wrong').sendMail({ from: 'alice@sender.test', to: 'bob@receiver.test', text: 'x' }).catch((e: { responseCode?: number }) => e);
    expect(badPassword).toMatchObject({ responseCode: 535 });
    await waitFor((e) => e.kind === 'auth-failed' && e.detail.user === 'alice@sender.test', 'auth-failed');

    // Case does not matter for our own users; PLAIN and LOGIN both work.
    const login = nodemailer.createTransport({ host: MTA, port: mta.services.submission!.port, secure: false, ignoreTLS: true, auth: { user: 'Bert@Sender.Test', pass: 'bert-secret', method: 'LOGIN' } });
    const ok = await login.sendMail({ from: 'BERT@sender.test', to: 'bob@receiver.test', text: 'x' });
    expect(ok.response).toMatch(/^250 /);
  });

  it('on port 25 accepts mail for local domains only, the null sender included', async () => {
    const relay = await port25().sendMail({ from: 'someone@elsewhere.test', to: 'bob@receiver.test', text: 'x' }).catch((e: { responseCode?: number; response?: string }) => e);
    expect(relay).toMatchObject({ responseCode: 550 });
    expect((relay as { response: string }).response).toMatch(/^550 5\.7\.1 <bob@receiver\.test>: relay access denied/);
    await waitFor((e) => e.kind === 'rejected' && e.detail.service === 'smtp' && e.detail.stage === 'RCPT TO' && e.detail.attempted === 'bob@receiver.test', 'relay rejected');

    const bounceBack = await port25().sendMail({ envelope: { from: '', to: ['alice@sender.test'] }, raw: 'From: MAILER-DAEMON@elsewhere.test\r\nSubject: bounce\r\nMessage-ID: <bb@elsewhere.test>\r\n\r\nreturned\r\n' });
    const queueId = queueIdOf(bounceBack.response);
    const receivedEvent = await waitFor(ofQueue(queueId, 'received'), 'received');
    expect(receivedEvent).toMatchObject({ messageId: '<bb@elsewhere.test>', detail: { from: '', to: ['alice@sender.test'], helo: 'mx.elsewhere.test' } });
    await waitFor(ofQueue(queueId, 'delivered', { rcpt: 'alice@sender.test' }), 'delivered over LMTP');
    const copy = received.find((r) => r.data.includes(`with ESMTP id ${queueId}`))!;
    expect(copy.server).toBe('mailbox.sender.test');
    expect(copy.from).toBe('');
    // Port 25 mail is not rewritten: no Date added.
    expect(copy.data).not.toMatch(/^Date:/m);
  });

  it('falls back to the next MX when the first does not answer, and to the A record without MX', async () => {
    const info = await submitter().sendMail({ from: 'alice@sender.test', to: ['dave@fallback.test', 'erin@implicit.test'], subject: 'fallback', text: 'x' });
    const queueId = queueIdOf(info.response);
    const failed = await waitFor(ofQueue(queueId, 'connect-failed'), 'connect-failed');
    expect(failed.detail).toMatchObject({ host: MX_DEAD, port: RELAY_PORT, mx: 'mx1.fallback.test', stage: 'connect' });
    expect(failed.detail.error).toContain(`mx1.fallback.test[${MX_DEAD}]:${RELAY_PORT}: cannot connect`);
    const viaBackup = await waitFor(ofQueue(queueId, 'relayed', { rcpt: 'dave@fallback.test' }), 'relayed via backup');
    expect(viaBackup.detail).toMatchObject({ mx: 'mx2.fallback.test', host: MX_BACKUP });
    const implicit = await waitFor(ofQueue(queueId, 'relayed', { rcpt: 'erin@implicit.test' }), 'relayed implicit');
    expect(implicit.detail).toMatchObject({ mx: 'implicit.test', host: MX });
  });

  it('defers while the MX is down, and delivers once it is back', async () => {
    const info = await submitter().sendMail({ from: 'alice@sender.test', to: 'fred@flaky.test', subject: 'patience', text: 'x' });
    const queueId = queueIdOf(info.response);
    const deferred = await waitFor(ofQueue(queueId, 'deferred'), 'deferred');
    expect(deferred.detail).toMatchObject({ rcpt: 'fred@flaky.test', attempt: 1, status: '4.4.1', hop: `mta.sender.test -> mx.flaky.test[${MX_FLAKY}]:${RELAY_PORT}` });
    expect(deferred.detail.error).toContain('connection refused');
    expect(deferred.detail.nextAttempt).toBeGreaterThan(Date.now() - 1000);
    const entry = (await rpc<QueueEntryView[]>('queue', { state: 'deferred' })).find((m) => m.queueId === queueId);
    expect(entry?.recipients[0]).toMatchObject({ state: 'deferred', attempts: 1 });
    expect(entry?.recipients[0]?.lastError).toContain('connection refused');

    await startReceiver('mx.flaky.test', MX_FLAKY, RELAY_PORT);
    const relayed = await waitFor(ofQueue(queueId, 'relayed'), 'relayed after the MX came back');
    expect(relayed.detail).toMatchObject({ rcpt: 'fred@flaky.test', mx: 'mx.flaky.test' });
    const message = await rpc<QueueEntryView & { record: unknown }>('message', { queueId });
    expect(message.state).toBe('done');
    expect(message.recipients[0]!.attempts).toBeGreaterThanOrEqual(2);
  });

  it('bounces a 5xx at once and sends a DSN to the sender over LMTP', async () => {
    const info = await submitter().sendMail({ from: 'alice@sender.test', to: ['nobody@receiver.test', 'bob@receiver.test'], subject: 'to nobody', text: 'x' });
    const queueId = queueIdOf(info.response);
    const bounced = await waitFor(ofQueue(queueId, 'bounced'), 'bounced');
    expect(bounced.detail).toMatchObject({ rcpt: 'nobody@receiver.test', status: '5.1.1', command: 'RCPT TO:<nobody@receiver.test>', reply: '550 5.1.1 <nobody@receiver.test>: no such user here' });
    expect(bounced.detail.hop).toBe(`mta.sender.test -> mx.receiver.test[${MX}]:${RELAY_PORT}`);
    const created = await waitFor(ofQueue(queueId, 'dsn-created'), 'dsn-created');
    const dsnQueueId = created.detail.dsnQueueId as string;
    expect(created.detail).toMatchObject({ for: { queueId, messageId: info.messageId }, to: 'alice@sender.test' });
    const delivered = await waitFor(ofQueue(dsnQueueId, 'delivered'), 'DSN delivered');
    expect(delivered.messageId).toBe(created.detail.dsnMessageId);

    const dsn = received.find((r) => r.server === 'mailbox.sender.test' && r.data.includes(String(created.detail.dsnMessageId)))!;
    expect(dsn.from).toBe('');
    expect(dsn.to).toEqual(['alice@sender.test']);
    const parsed = await simpleParser(dsn.data, { keepDeliveryStatus: true });
    expect(parsed.from?.value[0]?.address).toBe('MAILER-DAEMON@mta.sender.test');
    expect(parsed.headers.get('auto-submitted')).toBe('auto-replied');
    expect(parsed.text).toContain('<nobody@receiver.test>');
    expect(parsed.text).not.toContain('<bob@receiver.test>');
    const status = parsed.attachments.find((a) => a.contentType === 'message/delivery-status')!.content.toString();
    expect(status).toContain('Reporting-MTA: dns; mta.sender.test');
    expect(status).toContain('Final-Recipient: rfc822; nobody@receiver.test');
    expect(status).toContain('Status: 5.1.1');
    expect(status).toContain('Remote-MTA: dns; mx.receiver.test');
    expect(status).toContain('Diagnostic-Code: smtp; 550 5.1.1 <nobody@receiver.test>: no such user here');
    const headers = parsed.attachments.find((a) => a.contentType === 'text/rfc822-headers')!.content.toString();
    expect(headers).toContain('Subject: to nobody');
    // The other recipient was delivered, and the original is done.
    await waitFor(ofQueue(queueId, 'relayed', { rcpt: 'bob@receiver.test' }), 'bob relayed');
    expect((await rpc<QueueEntryView>('message', { queueId })).state).toBe('done');
  });

  it('bounces a null-MX domain at once (RFC 7505), never bouncing a bounce', async () => {
    const info = await submitter().sendMail({ from: 'alice@sender.test', to: 'x@nomail.test', subject: 'null mx', text: 'x' });
    const queueId = queueIdOf(info.response);
    const bounced = await waitFor(ofQueue(queueId, 'bounced'), 'bounced');
    expect(bounced.detail).toMatchObject({ rcpt: 'x@nomail.test', status: '5.1.10' });
    expect(String(bounced.detail.reply)).toMatch(/^556 5\.1\.10 /);
    await waitFor(ofQueue(queueId, 'dsn-created'), 'dsn-created');

    // A bounce that itself fails is dropped, with an event.
    const bounce = await port25().sendMail({ envelope: { from: '', to: ['ghost@sender.test'] }, raw: 'Subject: a bounce\r\n\r\nx\r\n' });
    const bounceId = queueIdOf(bounce.response);
    await waitFor(ofQueue(bounceId, 'bounced', { rcpt: 'ghost@sender.test' }), 'bounce bounced');
    await waitFor(ofQueue(bounceId, 'dsn-suppressed'), 'dsn-suppressed');
    expect(events.since(0).some(ofQueue(bounceId, 'dsn-created'))).toBe(false);
  });

  it('expires a message after maxLifetimeMs, with the last error in the DSN', async () => {
    const info = await submitter().sendMail({ from: 'alice@sender.test', to: 'gina@expire.test', subject: 'doomed', text: 'x' });
    const queueId = queueIdOf(info.response);
    const expired = await waitFor(ofQueue(queueId, 'expired'), 'expired');
    expect(expired.detail).toMatchObject({ rcpt: 'gina@expire.test', status: '4.4.7' });
    expect(String(expired.detail.error)).toContain(`mx.expire.test[${MX_DEAD}]:${RELAY_PORT}: cannot connect`);
    expect(Number(expired.detail.queuedFor)).toBeGreaterThanOrEqual(2500);
    const created = await waitFor(ofQueue(queueId, 'dsn-created'), 'dsn-created');
    await waitFor(ofQueue(created.detail.dsnQueueId as string, 'delivered'), 'DSN delivered');
    const dsn = received.find((r) => r.data.includes(String(created.detail.dsnMessageId)))!;
    const parsed = await simpleParser(dsn.data, { keepDeliveryStatus: true });
    expect(parsed.text).toContain('expired');
    expect(parsed.text).toContain('connection refused');
    const status = parsed.attachments.find((a) => a.contentType === 'message/delivery-status')!.content.toString();
    expect(status).toContain('Status: 4.4.7');
    expect(status).toContain('Action: failed');
    const entry = await rpc<QueueEntryView>('message', { queueId });
    expect(entry.recipients[0]).toMatchObject({ state: 'bounced', expired: true });
  });

  it('holds a message whose attempt is under way once the attempt ends; held, it is not tried, across a restart too; deleted, it is gone', async () => {
    // An MX that accepts the connection and never greets: the attempt stays in flight until the test cuts it.
    const sockets = new Set<net.Socket>();
    const silent = net.createServer((socket) => sockets.add(socket));
    await new Promise<void>((resolve) => silent.listen(RELAY_PORT, MX_SILENT, resolve));
    labZones.addZone({ origin: 'silent.test', records: [{ name: 'silent.test', type: 'A', address: MX_SILENT }] });
    try {
      const info = await submitter().sendMail({ from: 'alice@sender.test', to: 'sam@silent.test', subject: 'on hold', text: 'x' });
      const queueId = queueIdOf(info.response);
      await waitFor(ofQueue(queueId, 'connect'), 'connected to the silent MX');
      expect((await rpc<QueueEntryView>('message', { queueId })).state).toBe('active');
      // Asked while active: answered once the attempt has ended (here: its connection cut), held then.
      const held = rpc<QueueEntryView>('hold', { queueId });
      for (const socket of sockets) socket.destroy();
      expect(await held).toMatchObject({ queueId, state: 'hold' });
      expect(events.since(0).filter(ofQueue(queueId, 'deferred'))).toHaveLength(1);

      // Not tried on a flush, nor after a restart (held is on disk).
      await rpc('flush');
      await mta.stop();
      await startTheMta();
      expect((await rpc<QueueEntryView[]>('queue', {})).find((m) => m.queueId === queueId)?.state).toBe('hold');
      await rpc('flush');
      expect(events.since(0).filter(ofQueue(queueId, 'active'))).toEqual([]);

      // Released: tried at once (the silent MX takes the connection again); deleted once that attempt ends.
      expect(await rpc<QueueEntryView>('release', { queueId })).toMatchObject({ queueId });
      await waitFor(ofQueue(queueId, 'connect'), 'connected again after the release');
      const deleted = rpc<{ queueId: string; deleted: boolean }>('delete', { queueId });
      for (const socket of sockets) socket.destroy();
      expect(await deleted).toEqual({ queueId, deleted: true });
      expect(await rpc<QueueEntryView[]>('queue', {})).toEqual([]);
      await expect(rpc('message', { queueId })).rejects.toThrow(/no message/);
      await expect(fs.stat(path.join(dataDir, 'queue', 'msg', `${queueId}.eml`))).rejects.toThrow(/ENOENT/);
      await expect(rpc('hold', {})).rejects.toThrow(/hold: queueId .* is required/);
    } finally {
      for (const socket of sockets) socket.destroy();
      await new Promise<void>((resolve) => silent.close(() => resolve()));
    }
  });

  it('keeps the queue across a restart and delivers what was deferred', async () => {
    // A domain that does not exist (NXDOMAIN in a lab zone) bounces at once.
    const info = await submitter().sendMail({ from: 'alice@sender.test', to: 'hank@nosuch.receiver.test', subject: 'lost', text: 'x' });
    const queueId = queueIdOf(info.response);
    await waitFor(ofQueue(queueId, 'bounced'), 'bounced (no such domain)');
    expect((await rpc<QueueEntryView>('message', { queueId })).recipients[0]).toMatchObject({ state: 'bounced', status: '5.1.2' });

    // A domain outside every lab zone gets REFUSED: a temporary failure, the message waits.
    const second = await submitter().sendMail({ from: 'alice@sender.test', to: 'ivy@flaky2.test', subject: 'survivor', text: 'x' });
    const secondId = queueIdOf(second.response);
    await waitFor(ofQueue(secondId, 'deferred'), 'deferred (temporary DNS failure)');
    await mta.stop();

    const files = await fs.readdir(path.join(dataDir, 'queue', 'env'));
    expect(files).toContain(`${secondId}.json`);
    await startTheMta();
    expect((await rpc<QueueEntryView[]>('queue', { state: 'deferred' })).map((m) => m.queueId)).toContain(secondId);
    // Finished messages are remembered in memory only (the queue keeps no done records on disk).
    await expect(rpc<QueueEntryView>('message', { queueId })).rejects.toThrow(/no message/);
    // Now the domain appears in DNS and the message goes out from the new instance's queue.
    labZones.addZone({ origin: 'flaky2.test', records: [{ name: 'flaky2.test', type: 'A', address: MX }] });
    await rpc('flush');
    const relayed = await waitFor(ofQueue(secondId, 'relayed'), 'relayed after restart');
    expect(relayed.detail).toMatchObject({ rcpt: 'ivy@flaky2.test', host: MX });
  });
});
