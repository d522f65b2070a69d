// The MTA's defences on 25 and 587 (issue 9), in process: a real lab DNS, a receiving MX and an LMTP server
// (smtp-server) on their own 127.x addresses, clients over raw sockets (so bare CRs reach the server as sent) and
// nodemailer. One more address, OUTSIDE, listens too but is not among the lab's addresses: nothing may connect to it.
import { promises as fs } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import nodemailer from 'nodemailer';
import type { SMTPServer } from 'smtp-server';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { startDnsServer, Zones, type RunningDnsServer } from '../dns/index.js';
import { LineClient } from '../harness/clients/line-client.js';
import type { AuthThrottleConfig, ZoneConfig } from '../shared/config.js';
import { EventLog, type LabEvent } from '../shared/events.js';
import type { RunningRole } from '../shared/node.js';
import { createSmtpServer, listen, OVERSIZE_GRACE } from '../shared/smtp-server.js';
import { startMta } from './index.js';
import { testMtaConfig, waitForEvent } from './mta.test-helper.js';

const block = `127.${Math.floor(Math.random() * 200) + 20}.${Math.floor(Math.random() * 200) + 20}`;
const ip = (n: number) => `${block}.${n}`;
const DNS = ip(2);
const MTA = ip(3);
const MTA_OPEN = ip(4); // a second MTA with login throttling turned off
const MX = ip(10);
const LMTP = ip(20);
const OUTSIDE = ip(99); // listens, but is not a lab address
const ELSEWHERE = ip(50); // a second client address
const RELAY_PORT = 20_000 + Math.floor(Math.random() * 20_000);
const LAB_ADDRESSES = [DNS, MTA, MTA_OPEN, MX, LMTP];

const zones: ZoneConfig[] = [
  { origin: 'receiver.test', records: [{ name: 'receiver.test', type: 'MX', exchange: 'mx.receiver.test', priority: 10 }, { name: 'mx.receiver.test', type: 'A', address: MX }] },
  { origin: 'evil.test', records: [{ name: 'evil.test', type: 'MX', exchange: 'mx.evil.test', priority: 10 }, { name: 'mx.evil.test', type: 'A', address: OUTSIDE }] },
  {
    origin: 'split.test',
    records: [
      { name: 'split.test', type: 'MX', exchange: 'out.split.test', priority: 10 },
      { name: 'split.test', type: 'MX', exchange: 'in.split.test', priority: 20 },
      { name: 'out.split.test', type: 'A', address: OUTSIDE },
      { name: 'in.split.test', type: 'A', address: MX },
    ],
  },
];

interface Copy {
  server: string;
  to: string[];
  data: string;
}
const copies: Copy[] = [];
const outsideConnections: string[] = [];
const servers: SMTPServer[] = [];

async function startReceiver(name: string, address: string, port: number, lmtp = false): Promise<number> {
  const server = createSmtpServer({
    greetingDelayMs: 0,
    name,
    lmtp,
    authOptional: true,
    disabledCommands: ['AUTH', 'STARTTLS'],
    hideSTARTTLS: true,
    logger: false,
    closeTimeout: 100,
    onConnect(session, callback) {
      if (address === OUTSIDE) outsideConnections.push(session.remoteAddress);
      callback();
    },
    onRcptTo(rcpt, _session, callback) {
      if (/^nobody@/.test(rcpt.address)) return callback(Object.assign(new Error(`5.1.1 <${rcpt.address}>: no such user here`), { responseCode: 550 }));
      callback();
    },
    onData(stream, session, callback) {
      const chunks: Buffer[] = [];
      stream.on('data', (c: Buffer) => chunks.push(c));
      stream.on('end', () => {
        copies.push({ server: name, to: session.envelope.rcptTo.map((r) => r.address), data: Buffer.concat(chunks).toString('latin1') });
        callback(null, `2.0.0 Ok: ${name} took it`);
      });
    },
  });
  server.on('error', () => undefined);
  await listen(server, address, port, name);
  servers.push(server);
  const bound = server.server.address();
  return typeof bound === 'object' && bound ? bound.port : port;
}

const THROTTLE: AuthThrottleConfig = { enabled: true, failuresPerConnection: 3, failuresPerAccount: 3, failuresPerAddress: 50, windowMs: 60_000, backoffMs: 1000, maxBackoffMs: 4000 };
const MAX_RECIPIENTS = 3;
const MAX_CONNECTIONS = 3;
const SIZE_LIMIT = 64 * 1024;

let dns: RunningDnsServer;
const dataDirs: string[] = [];
let events: EventLog;
let mta: RunningRole;
let openEvents: EventLog;
let openMta: RunningRole;

async function start(address: string, authThrottle: AuthThrottleConfig, lmtpPort: number): Promise<{ events: EventLog; mta: RunningRole }> {
  const dataDir = await fs.mkdtemp(path.join(os.tmpdir(), 'maillab-mta-hardening-'));
  dataDirs.push(dataDir);
  const config = testMtaConfig({
    address,
    dataDir,
    resolver: dns.endpoint,
    fsync: false,
    localDelivery: { host: LMTP, port: lmtpPort },
    users: ['alice', 'bert', 'cleo', 'dora'].map((u) => ({ address: `${u}@sender.test`, password: `${u}-secret` })),
    relayPort: RELAY_PORT,
    limits: { maxRecipients: MAX_RECIPIENTS, maxConnectionsPerClient: MAX_CONNECTIONS, maxMessageSize: SIZE_LIMIT },
    authThrottle,
    labAddresses: LAB_ADDRESSES,
  });
  const log = new EventLog('mta');
  return { events: log, mta: await startMta({ config, events: log, log: () => undefined }) };
}

beforeAll(async () => {
  dns = await startDnsServer({ host: DNS, port: 0, zones: new Zones(zones) });
  await startReceiver('mx.receiver.test', MX, RELAY_PORT);
  await startReceiver('mx.evil.test', OUTSIDE, RELAY_PORT);
  const lmtpPort = await startReceiver('mailbox.sender.test', LMTP, 0, true);
  ({ events, mta } = await start(MTA, THROTTLE, lmtpPort));
  ({ events: openEvents, mta: openMta } = await start(MTA_OPEN, { ...THROTTLE, enabled: false }, lmtpPort));
});

afterAll(async () => {
  await mta?.stop();
  await openMta?.stop();
  await Promise.all(servers.map((server) => new Promise<void>((resolve) => server.close(() => resolve()))));
  await dns?.close();
  for (const dir of dataDirs) await fs.rm(dir, { recursive: true, force: true });
});

function waitFor(match: (e: LabEvent) => boolean, what: string, log = events): Promise<LabEvent> {
  return waitForEvent(log, match, what);
}

const clients: LineClient[] = [];
/** A raw SMTP session on `service`, greeted and after EHLO; logged in as `user` when given. */
async function session(service: 'smtp' | 'submission', options: { node?: RunningRole; user?: string; pass?: string } = {}): Promise<LineClient> {
  const client = await LineClient.connect((options.node ?? mta).services[service]!, { name: 'SMTP' });
  clients.push(client);
  expect((await client.smtpReply()).code).toBe(220);
  client.send('EHLO client.test');
  expect((await client.smtpReply()).code).toBe(250);
  if (options.user) expect(await auth(client, options.user, options.pass!)).toMatch(/^235 /);
  return client;
}

async function auth(client: LineClient, user: string, pass: string): Promise<string> {
  client.send(`AUTH PLAIN ${Buffer.from(`\0${user}\0${pass}`).toString('base64')}`, 'AUTH PLAIN ****');
  return (await client.smtpReply()).text;
}

async function command(client: LineClient, line: string): Promise<string> {
  client.send(line);
  return (await client.smtpReply()).text;
}

/** MAIL, RCPT, DATA with `message` sent as is (the caller ends it with CRLF); the reply to the end of data. */
async function sendRaw(client: LineClient, from: string, to: string, message: string): Promise<string> {
  expect(await command(client, `MAIL FROM:<${from}>`)).toMatch(/^250 /);
  expect(await command(client, `RCPT TO:<${to}>`)).toMatch(/^250 /);
  expect(await command(client, 'DATA')).toMatch(/^354 /);
  client.write(`${message}.\r\n`);
  return (await client.smtpReply()).text;
}

/** A nodemailer login from `localAddress`: the reply's code (235 or the refusal's). */
async function loginFrom(localAddress: string, user: string, pass: string, node = mta): Promise<{ code: number; response: string }> {
  const transport = nodemailer.createTransport({ host: node.services.submission!.host, port: node.services.submission!.port, secure: false, ignoreTLS: true, localAddress, auth: { user, pass } });
  try {
    await transport.verify();
    return { code: 235, response: '235 ok' };
  } catch (err) {
    const e = err as { responseCode?: number; response?: string; message: string };
    return { code: e.responseCode ?? 0, response: e.response ?? e.message };
  } finally {
    transport.close();
  }
}

describe('MTA hardening: message size (finding 1)', () => {
  it('refuses an oversized message with 552 5.3.4 on 25 and 587, and SIZE= above the limit at MAIL FROM', async () => {
    const big = `Subject: big\r\n\r\n${'x'.repeat(998)}\r\n`.repeat(Math.ceil((4 * SIZE_LIMIT) / 1000));
    for (const service of ['smtp', 'submission'] as const) {
      const client = await session(service, service === 'submission' ? { user: 'alice@sender.test', pass: 'alice-secret' } : {});
      expect(await sendRaw(client, 'alice@sender.test', 'alice@sender.test', big)).toBe(`552 5.3.4 message exceeds the size limit of ${SIZE_LIMIT} octets`);
      await waitFor((e) => e.kind === 'rejected' && e.detail.service === service && e.detail.stage === 'DATA' && String(e.detail.reply).startsWith('552 5.3.4'), `552 on ${service}`);
      const declared = `552 5.3.4 message exceeds the size limit of ${SIZE_LIMIT} octets (declared with SIZE=)`;
      expect(await command(client, `MAIL FROM:<alice@sender.test> SIZE=${SIZE_LIMIT + 1}`)).toBe(declared);
      await waitFor((e) => e.kind === 'rejected' && e.detail.service === service && e.detail.stage === 'MAIL FROM' && e.detail.reply === declared, `SIZE= refused on ${service}`);
    }
  });

  it('answers 552 5.3.4 at once and hangs up on a client more than OVERSIZE_GRACE past the limit', async () => {
    const client = await session('smtp');
    expect(await command(client, 'MAIL FROM:<someone@elsewhere.test>')).toMatch(/^250 /);
    expect(await command(client, 'RCPT TO:<alice@sender.test>')).toMatch(/^250 /);
    expect(await command(client, 'DATA')).toMatch(/^354 /);
    const line = `${'y'.repeat(1022)}\r\n`.repeat(64);
    // No end of data: the reply comes while the client is still sending.
    for (let sent = 0; sent < SIZE_LIMIT + OVERSIZE_GRACE + 256 * 1024 && !client.closed; sent += line.length) client.write(line);
    expect((await client.smtpReply()).text).toBe(`552 5.3.4 message exceeds the size limit of ${SIZE_LIMIT} octets`);
    await client.waitClosed({ timeoutMs: 3000 });
  });
});

describe('MTA hardening: login throttling on 587 (finding 3)', () => {
  it('closes a connection with 421 4.7.0 after failuresPerConnection failed logins', async () => {
    const client = await session('submission');
    expect(await auth(client, 'nobody-1@sender.test', 'guess-1')).toMatch(/^535 5\.7\.8 /);
    expect(await auth(client, 'nobody-1@sender.test', 'guess-2')).toMatch(/^535 5\.7\.8 /);
    expect(await auth(client, 'nobody-1@sender.test', 'guess-3')).toMatch(/^421 4\.7\.0 .*too many failed logins on this connection/);
    await client.waitClosed({ timeoutMs: 2000 });
    const failed = events.since(0).filter((e) => e.kind === 'auth-failed' && e.detail.user === 'nobody-1@sender.test');
    expect(failed.map((e) => String(e.detail.reply).slice(0, 3))).toEqual(['535', '535', '421']);
  });

  it('throttles an account from one address across connections (454 4.7.0, the right password too), not from another address', async () => {
    for (const guess of ['a', 'b', 'c']) expect((await loginFrom('127.0.0.1', 'bert@sender.test', guess)).code).toBe(535);
    const throttled = await waitFor((e) => e.kind === 'auth-throttled' && e.detail.user === 'bert@sender.test', 'auth-throttled');
    expect(throttled.detail).toMatchObject({ service: 'submission', client: '127.0.0.1', scope: 'account', retryAfterMs: THROTTLE.backoffMs });
    expect(String(throttled.detail.hop)).toContain('-> mta.sender.test (submission)');

    const right = await loginFrom('127.0.0.1', 'bert@sender.test', 'bert-secret');
    expect(right.code).toBe(454);
    expect(right.response).toMatch(/^454 4\.7\.0 Too many failed logins for bert@sender\.test from 127\.0\.0\.1, try again in 1 s/);
    // The login name is normalised to the user's address: the local part alone is the same account.
    expect((await loginFrom('127.0.0.1', 'BERT', 'bert-secret')).code).toBe(454);
    // A legitimate client elsewhere is unaffected.
    expect((await loginFrom(ELSEWHERE, 'bert@sender.test', 'bert-secret')).code).toBe(235);

    // The back-off ends: the right password works again from the first address (polled, within a deadline).
    const deadline = Date.now() + 5000;
    let last = right;
    while (last.code !== 235 && Date.now() < deadline) {
      await new Promise((resolve) => setTimeout(resolve, 250));
      last = await loginFrom('127.0.0.1', 'bert@sender.test', 'bert-secret');
    }
    expect(last.code, `still refused after the back-off: ${last.response}`).toBe(235);
  });

  it('a lab that turns throttling off keeps the connection open and lets the right password in after many failures', async () => {
    const client = await session('submission', { node: openMta });
    for (let i = 0; i < 10; i++) expect(await auth(client, 'cleo@sender.test', `guess-${i}`)).toMatch(/^535 5\.7\.8 /);
    expect(await auth(client, 'cleo@sender.test', 'cleo-secret')).toMatch(/^235 /);
    expect(openEvents.since(0).some((e) => e.kind === 'auth-throttled')).toBe(false);
  });
});

describe('MTA hardening: recipients verified on port 25 (finding 4)', () => {
  it('refuses an unknown user of a local domain at RCPT with 550 5.1.1, so no bounce is generated', async () => {
    const client = await session('smtp');
    expect(await command(client, 'MAIL FROM:<forged@victim.test>')).toMatch(/^250 /);
    expect(await command(client, 'RCPT TO:<nobody@sender.test>')).toBe('550 5.1.1 <nobody@sender.test>: no such user here');
    expect(await command(client, 'RCPT TO:<Alice@Sender.Test>')).toMatch(/^250 /);
    const rejected = await waitFor((e) => e.kind === 'rejected' && e.detail.attempted === 'nobody@sender.test', 'rejected nobody');
    expect(rejected.detail).toMatchObject({ service: 'smtp', stage: 'RCPT TO', from: 'forged@victim.test', reply: '550 5.1.1 <nobody@sender.test>: no such user here' });
    expect(await command(client, 'RSET')).toMatch(/^250 /);
    // Nothing was queued for it, so nothing can bounce to the forged sender.
    expect(events.since(0).some((e) => (e.kind === 'queued' || e.kind === 'dsn-created') && JSON.stringify(e.detail).includes('forged@victim.test'))).toBe(false);
  });

  it('submission still relays to an unknown remote user (its DSN reports it)', async () => {
    const client = await session('submission', { user: 'alice@sender.test', pass: 'alice-secret' });
    expect(await command(client, 'MAIL FROM:<alice@sender.test>')).toMatch(/^250 /);
    expect(await command(client, 'RCPT TO:<nobody@receiver.test>')).toMatch(/^250 /);
  });
});

describe('MTA hardening: address literals stay in the lab (finding 6)', () => {
  it('refuses an address literal outside the lab at RCPT on 587 and 25 (550 5.7.1), IPv6 form included', async () => {
    const submission = await session('submission', { user: 'alice@sender.test', pass: 'alice-secret' });
    expect(await command(submission, 'MAIL FROM:<alice@sender.test>')).toMatch(/^250 /);
    expect(await command(submission, `RCPT TO:<x@[${OUTSIDE}]>`)).toBe(`550 5.7.1 <x@[${OUTSIDE}]>: address literal [${OUTSIDE}] is outside the lab; mta.sender.test sends only to the lab's own hosts`);
    expect(await command(submission, 'RCPT TO:<x@[127.0.0.1]>')).toMatch(/^550 5\.7\.1 .*outside the lab/);
    expect(await command(submission, `RCPT TO:<x@[IPv6:::ffff:${OUTSIDE}]>`)).toMatch(/^550 5\.7\.1 .*outside the lab/);
    expect(await command(submission, 'RCPT TO:<x@[1.2.3]>')).toMatch(/^501 /); // no address: smtp-server's syntax check
    const smtp = await session('smtp');
    expect(await command(smtp, 'MAIL FROM:<someone@elsewhere.test>')).toMatch(/^250 /);
    expect(await command(smtp, `RCPT TO:<x@[${OUTSIDE}]>`)).toMatch(/^550 5\.7\.1 .*outside the lab/);
    await waitFor((e) => e.kind === 'rejected' && e.detail.service === 'smtp' && e.detail.attempted === `x@[${OUTSIDE}]`, 'rejected literal on 25');
    expect(outsideConnections).toEqual([]);
  });

  it('relays to an address literal inside the lab', async () => {
    const info = await nodemailer
      .createTransport({ host: MTA, port: mta.services.submission!.port, secure: false, ignoreTLS: true, auth: { user: 'alice@sender.test', pass: 'alice-secret' } })
      .sendMail({ envelope: { from: 'alice@sender.test', to: [`bob@[${MX}]`] }, raw: 'Subject: literal\r\nMessage-ID: <literal-in-lab@sender.test>\r\n\r\nhi\r\n' });
    expect(info.response).toMatch(/^250 /);
    const relayed = await waitFor((e) => e.kind === 'relayed' && e.messageId === '<literal-in-lab@sender.test>', 'relayed to the literal');
    expect(relayed.detail).toMatchObject({ host: MX, rcpt: `bob@[${MX}]` });
  });

  it('never connects to an MX outside the lab: bounces naming the address, or falls to the next MX inside it', async () => {
    const transport = nodemailer.createTransport({ host: MTA, port: mta.services.submission!.port, secure: false, ignoreTLS: true, auth: { user: 'alice@sender.test', pass: 'alice-secret' } });
    await transport.sendMail({ envelope: { from: 'alice@sender.test', to: ['x@evil.test'] }, raw: 'Subject: evil\r\nMessage-ID: <to-evil@sender.test>\r\n\r\nhi\r\n' });
    const bounced = await waitFor((e) => e.kind === 'bounced' && e.messageId === '<to-evil@sender.test>', 'bounced');
    expect(bounced.detail).toMatchObject({ rcpt: 'x@evil.test', status: '5.4.4' });
    expect(String(bounced.detail.reply)).toBe(
      `550 5.4.4 <x@evil.test>: mail for evil.test would go to mx.evil.test[${OUTSIDE}], outside the lab: mta.sender.test connects only to the lab's own hosts`,
    );
    const dsn = await waitFor((e) => e.kind === 'dsn-created' && e.queueId === bounced.queueId, 'dsn-created');
    await waitFor((e) => e.kind === 'delivered' && e.messageId === dsn.detail.dsnMessageId, 'the DSN delivered to alice');
    const report = copies.find((c) => c.server === 'mailbox.sender.test' && c.data.includes(String(dsn.detail.dsnMessageId)))!;
    expect(report.data.replace(/\r\n[ \t]+/g, ' ')).toContain(`mx.evil.test[${OUTSIDE}], outside the lab`);

    await transport.sendMail({ envelope: { from: 'alice@sender.test', to: ['y@split.test'] }, raw: 'Subject: split\r\nMessage-ID: <to-split@sender.test>\r\n\r\nhi\r\n' });
    const relayed = await waitFor((e) => e.kind === 'relayed' && e.messageId === '<to-split@sender.test>', 'relayed via the MX inside the lab');
    expect(relayed.detail).toMatchObject({ host: MX, mx: 'in.split.test' });

    expect(events.since(0).filter((e) => (e.kind === 'connect' || e.kind === 'connect-failed') && e.detail.host === OUTSIDE)).toEqual([]);
    expect(outsideConnections).toEqual([]);
  });
});

describe('MTA hardening: bare CR and LF (finding 7)', () => {
  const injected = 'From: alice@sender.test\r\nSubject: x\rBcc: <carol@receiver.test>\r\nMessage-ID: <bare-cr@sender.test>\r\n\r\nhi\r\n';

  it('refuses a header section with a bare CR or LF with 554 5.6.0 on 587 and 25', async () => {
    const submission = await session('submission', { user: 'alice@sender.test', pass: 'alice-secret' });
    expect(await sendRaw(submission, 'alice@sender.test', 'bob@receiver.test', injected)).toBe('554 5.6.0 message header contains a bare CR (header line 2); header lines must end with CRLF');
    const smtp = await session('smtp');
    expect(await sendRaw(smtp, 'someone@elsewhere.test', 'alice@sender.test', 'Subject: x\nBcc: carol@receiver.test\r\n\r\nhi\r\n')).toMatch(/^554 5\.6\.0 message header contains a bare LF/);
    const rejected = events.since(0).filter((e) => e.kind === 'rejected' && e.detail.stage === 'DATA' && String(e.detail.reply).startsWith('554 5.6.0'));
    expect(rejected.map((e) => e.detail.service)).toEqual(['submission', 'smtp']);
    expect(events.since(0).some((e) => e.messageId === '<bare-cr@sender.test>')).toBe(false);
  });

  it('does not deliver a smuggled second message (`\\n.\\n` and `\\r.\\r` are content)', async () => {
    const smtp = await session('smtp');
    const smuggled = 'MAIL FROM:<admin@sender.test>\r\nRCPT TO:<alice@sender.test>\r\nDATA\r\nSubject: smuggled\r\n\r\nevil\r\n';
    const message = `Subject: carrier\r\nMessage-ID: <carrier@elsewhere.test>\r\n\r\nhi\n.\n${smuggled}\r.\r${smuggled}`;
    expect(await sendRaw(smtp, 'someone@elsewhere.test', 'alice@sender.test', message)).toMatch(/^250 /);
    await waitFor((e) => e.kind === 'delivered' && e.messageId === '<carrier@elsewhere.test>', 'carrier delivered');
    expect(await command(smtp, 'NOOP')).toMatch(/^250 /); // nothing else was answered in between
    const stored = copies.filter((c) => c.server === 'mailbox.sender.test' && c.data.includes('smuggled'));
    expect(stored).toHaveLength(1);
    expect(stored[0]!.data).toContain('Subject: carrier');
    expect(events.since(0).filter((e) => e.kind === 'received' && e.detail.from === 'admin@sender.test')).toEqual([]);
  });
});

describe('MTA hardening: recipient and connection limits (finding 9)', () => {
  it('answers 452 4.5.3 past maxRecipients on 587 and 25', async () => {
    for (const service of ['submission', 'smtp'] as const) {
      const client = await session(service, service === 'submission' ? { user: 'dora@sender.test', pass: 'dora-secret' } : {});
      expect(await command(client, `MAIL FROM:<${service === 'submission' ? 'dora@sender.test' : 'x@elsewhere.test'}>`)).toMatch(/^250 /);
      // Distinct recipients (smtp-server folds a repeated one into the first), all known on 25.
      const rcpts = ['alice', 'bert', 'cleo', 'dora'].map((u) => `${u}@sender.test`);
      for (const rcpt of rcpts.slice(0, MAX_RECIPIENTS)) expect(await command(client, `RCPT TO:<${rcpt}>`)).toMatch(/^250 /);
      expect(await command(client, `RCPT TO:<${rcpts[MAX_RECIPIENTS]}>`)).toBe(`452 4.5.3 Too many recipients: at most ${MAX_RECIPIENTS} per message, send the rest in another message`);
      await waitFor((e) => e.kind === 'rejected' && e.detail.service === service && String(e.detail.reply).startsWith('452 4.5.3'), `452 on ${service}`);
    }
  });

  it('greets a client past maxConnectionsPerClient with 421 4.7.0 and closes; other clients are unaffected', async () => {
    const endpoint = mta.services.smtp!;
    const CROWD = ip(60);
    const held: Greeted[] = [];
    try {
      for (let i = 0; i < MAX_CONNECTIONS; i++) {
        held.push(await greeted(endpoint, CROWD));
        expect(held[i]!.greeting).toMatch(/^220 /);
      }
      const extra = await greeted(endpoint, CROWD);
      held.push(extra);
      expect(extra.greeting).toBe(`421 4.7.0 Too many connections from ${CROWD}, try again later`);
      await extra.closed;
      const rejected = await waitFor((e) => e.kind === 'rejected' && e.detail.stage === 'CONNECT', 'rejected at CONNECT');
      expect(rejected.detail).toMatchObject({ service: 'smtp', client: CROWD, reply: `421 4.7.0 Too many connections from ${CROWD}, try again later` });
      // The limit is per client address, and per service.
      expect((await greeted(endpoint, ELSEWHERE)).greeting).toMatch(/^220 /);
      expect((await greeted(mta.services.submission!, CROWD)).greeting).toMatch(/^220 /);
    } finally {
      for (const c of held) c.socket.destroy();
    }
  });
});

interface Greeted {
  socket: net.Socket;
  greeting: string;
  closed: Promise<void>;
}

const sockets: net.Socket[] = [];
/** A raw connection from `localAddress`, once its greeting line arrived. */
function greeted(endpoint: { host: string; port: number }, localAddress: string): Promise<Greeted> {
  return new Promise((resolve, reject) => {
    const socket = net.connect({ host: endpoint.host, port: endpoint.port, localAddress });
    sockets.push(socket);
    const closed = new Promise<void>((done) => socket.once('close', () => done()));
    let buffer = '';
    const timer = setTimeout(() => reject(new Error(`no greeting from ${endpoint.host}:${endpoint.port} within 3 s`)), 3000);
    socket.setEncoding('latin1');
    socket.on('error', () => undefined);
    socket.on('data', (chunk: string) => {
      buffer += chunk;
      const end = buffer.indexOf('\r\n');
      if (end < 0) return;
      clearTimeout(timer);
      resolve({ socket, greeting: buffer.slice(0, end), closed });
    });
  });
}

afterEach(() => {
  for (const c of clients.splice(0)) c.close();
  for (const s of sockets.splice(0)) s.destroy();
});
