// The MX role in process, in front of the mailbox server's real LMTP server (a Maildir store on a temp directory),
// spoken to over a raw socket so every reply is seen as the sender sees it.
import { mxTestConfig } from './mx.test-helper.js';
import { promises as fs } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { startLmtp } from '../mailbox/lmtp.js';
import type { MailboxService } from '../mailbox/service.js';
import type { MailStore } from '../mailbox/store-api.js';
import { MaildirStore } from '../mailbox/store.js';
import type { LineClient } from '../harness/clients/line-client.js';
import { BOB, CAROL, connectLine, deliveryHeldUntilAbandoned, testContext, type TestContext } from '../mailbox/testkit.test-helper.js';
import type { MxNodeConfig } from '../shared/config.js';
import { EventLog, type LabEvent } from '../shared/events.js';
import type { RunningRole } from '../shared/node.js';
import { createSmtpServer, listen } from '../shared/smtp-server.js';
import { smtpReply } from '../shared/smtp-reply.js';
import { startMx, type MxOptions } from './index.js';

/** Known to the MX's recipient list, unknown to the mailbox server: LMTP refuses it for good (550 5.1.1). */
const GHOST = 'ghost@receiver.test';

let mailbox: TestContext;
let store: MaildirStore;
let lmtp: MailboxService | undefined;
let mx: RunningRole | undefined;
let mxEvents: EventLog;
let mxDir: string;
const clients: LineClient[] = [];

beforeEach(async () => {
  mailbox = await testContext();
  store = new MaildirStore({ root: mailbox.config.dataDir, users: mailbox.config.users, fsync: true });
  await store.open();
  mxDir = await fs.mkdtemp(path.join(os.tmpdir(), 'maillab-mx-'));
});

afterEach(async () => {
  for (const client of clients.splice(0)) client.close();
  await mx?.stop();
  mx = undefined;
  await lmtp?.close();
  lmtp = undefined;
  await mailbox.cleanup();
  await fs.rm(mxDir, { recursive: true, force: true });
});

/** The store, with `deliver` replaced (to fail for a user, or to record when a copy is stored). */
function storeWith(deliver: MailStore['deliver']): MailStore {
  return Object.create(store, { deliver: { value: deliver } }) as MailStore;
}

async function startLmtpServer(s: MailStore = store): Promise<number> {
  lmtp = await startLmtp({ store: s, ctx: mailbox, host: '127.0.0.1', port: 0 });
  return lmtp.endpoint.port;
}

/** The MX on 127.0.0.1 (a free port unless `port`), handing off to LMTP on `lmtpPort`. */
async function startMxServer(lmtpPort: number, options: MxOptions = {}, port = 0, serves: Pick<MxNodeConfig, 'domains' | 'recipients'> = { domains: ['receiver.test', 'Other.Test'], recipients: [BOB, CAROL, GHOST, 'Dave@Other.Test'] }, limits?: MxNodeConfig['limits']): Promise<number> {
  const config = mxTestConfig({ dataDir: mxDir, ...serves, lmtpPort, port, ...(limits ? { limits } : {}) });
  mxEvents = new EventLog(config.name);
  mx = await startMx({ config, events: mxEvents, log: () => undefined }, options);
  return mx.services.smtp!.port;
}

const emitted = (kind: string): LabEvent[] => mxEvents.since(0).filter((e) => e.kind === kind);

/** A session up to EHLO done: returns the client and the EHLO reply lines. */
async function session(port: number): Promise<{ client: LineClient; ehlo: string[] }> {
  const client = await connectLine(port);
  clients.push(client);
  expect(await client.line()).toMatch(/^220 mx\.receiver\.test .*maillab MX ready/);
  client.send('EHLO client.sender.test');
  return { client, ehlo: (await client.smtpReply()).lines };
}

interface Transaction {
  mail: string;
  rcpt: string[];
  /** The reply to DATA (354), then to the end of data; absent when no recipient was accepted. */
  data?: string;
  end?: string;
}

/** One transaction: MAIL, every RCPT, and DATA with `body` (dot-stuffed here) when a recipient was accepted. */
async function transaction(client: LineClient, from: string, to: string[], body: string): Promise<Transaction> {
  client.send(`MAIL FROM:<${from}>`);
  const mail = (await client.smtpReply()).lines.join('\n');
  const rcpt: string[] = [];
  for (const address of to) {
    client.send(`RCPT TO:<${address}>`);
    rcpt.push((await client.smtpReply()).lines.join('\n'));
  }
  if (!rcpt.some((r) => r.startsWith('250'))) return { mail, rcpt };
  client.send('DATA');
  const data = (await client.smtpReply()).lines.join('\n');
  client.write(`${body.replace(/^\./gm, '..')}\r\n.\r\n`);
  return { mail, rcpt, data, end: (await client.smtpReply()).lines.join('\n') };
}

const MESSAGE_ID = '<mx-test-1@sender.test>';
/** A message without its final CRLF (the one before the ending dot), `extra` as its last line. */
const body = (extra?: string) =>
  `From: alice@sender.test\r\nTo: bob@receiver.test\r\nSubject: hello\r\nMessage-ID: ${MESSAGE_ID}\r\n\r\nHi Bob.\r\n.a line with a leading dot${extra === undefined ? '' : `\r\n${extra}`}`;

async function inbox(user: string): Promise<Buffer[]> {
  const list = await store.messages(user, 'INBOX');
  return Promise.all(list.map((m) => store.read(user, 'INBOX', m.uid)));
}

describe('MX: inbound policy', () => {
  it('refuses relaying for a domain it does not serve with 550 5.7.1, and unknown users with 550 5.1.1, emitting rejected', async () => {
    const port = await startMxServer(await startLmtpServer());
    const { client, ehlo } = await session(port);
    expect(ehlo.join('\n')).not.toMatch(/AUTH|STARTTLS/);
    const t = await transaction(client, 'alice@sender.test', ['eve@elsewhere.test', 'nobody@receiver.test', 'BOB@Receiver.TEST', 'dave@other.test'], body());
    expect(t.mail).toMatch(/^250 /);
    expect(t.rcpt[0]).toBe('550 5.7.1 <eve@elsewhere.test>: relay access denied, mx.receiver.test does not serve elsewhere.test');
    expect(t.rcpt[1]).toBe('550 5.1.1 <nobody@receiver.test>: no such user here');
    // Domains and users are matched without regard to case.
    expect(t.rcpt[2]).toMatch(/^250 /);
    expect(t.rcpt[3]).toMatch(/^250 /);
    expect(emitted('rejected').map((e) => e.detail)).toEqual([
      { stage: 'RCPT TO', rcpt: 'eve@elsewhere.test', reply: t.rcpt[0], client: '127.0.0.1', from: 'alice@sender.test' },
      { stage: 'RCPT TO', rcpt: 'nobody@receiver.test', reply: t.rcpt[1], client: '127.0.0.1', from: 'alice@sender.test' },
    ]);
  });

  it('offers no AUTH and no STARTTLS: both commands are unknown to it', async () => {
    const port = await startMxServer(await startLmtpServer());
    const { client } = await session(port);
    client.send('AUTH PLAIN AGJvYgBzZWNyZXQ=');
    expect((await client.smtpReply()).lines.join('\n')).toBe('500 Error: command not recognized');
    client.send('STARTTLS');
    expect((await client.smtpReply()).lines.join('\n')).toBe('500 Error: command not recognized');
  });

  it('refuses to start on a port in use, naming the service', async () => {
    const lmtpPort = await startLmtpServer();
    const port = await startMxServer(lmtpPort);
    const first = mx;
    await expect(startMxServer(lmtpPort, {}, port)).rejects.toThrow(`cannot listen for smtp on 127.0.0.1:${port}`);
    mx = first;
  });

  it('stops listening when stopped', async () => {
    const port = await startMxServer(await startLmtpServer());
    await mx!.stop();
    mx = undefined;
    await expect(connectLine(port)).rejects.toMatchObject({ kind: 'connect', message: expect.stringMatching(/ECONNREFUSED/) });
  });

  it('names the null sender as an empty from in rejected events', async () => {
    const port = await startMxServer(await startLmtpServer());
    const { client } = await session(port);
    const t = await transaction(client, '', ['eve@elsewhere.test'], body());
    expect(t.rcpt).toEqual([expect.stringMatching(/^550 5\.7\.1 /)]);
    expect(emitted('rejected')[0]?.detail).toMatchObject({ rcpt: 'eve@elsewhere.test', from: '' });
  });
});

describe('MX: hand-off to the mailbox server', () => {
  it('answers 250 only once LMTP accepted, and the stored message carries its Received header', async () => {
    // What happened, in order: the store's deliveries and the client's reading of the reply.
    const order: string[] = [];
    const port = await startMxServer(await startLmtpServer(storeWith((user, data) => store.deliver(user, data).then((r) => (order.push(`stored ${user}`), r)))));
    const { client } = await session(port);
    const t = await transaction(client, 'alice@sender.test', [BOB], body());
    order.push('reply');
    expect(t.data).toMatch(/^354 /);
    const [received] = emitted('received');
    expect(t.end).toBe(`250 2.0.0 Ok: delivered as ${received!.queueId}`);
    expect(order).toEqual([`stored ${BOB}`, 'reply']);

    const [stored] = await inbox(BOB);
    const text = stored!.toString('latin1');
    const trace = new RegExp(
      `^Return-Path: <alice@sender\\.test>\\r\\nDelivered-To: ${BOB}\\r\\n` +
        `Received: from client\\.sender\\.test \\(\\[127\\.0\\.0\\.1\\]\\)\\r\\n\\tby mx\\.receiver\\.test \\(maillab\\) with ESMTP id ${received!.queueId}\\r\\n\\tfor <${BOB}>;\\r\\n\\t[^\\r]+\\r\\n` +
        'From: alice@sender\\.test\\r\\n',
    );
    expect(text).toMatch(trace);
    expect(text.endsWith('Hi Bob.\r\n.a line with a leading dot\r\n')).toBe(true);

    expect(received).toMatchObject({ kind: 'received', messageId: MESSAGE_ID, queueId: expect.stringMatching(/^[0-9A-F]{12}$/) });
    expect(received!.detail).toEqual({ from: 'alice@sender.test', to: [BOB], client: '127.0.0.1', helo: 'client.sender.test', size: stored!.length - `Return-Path: <alice@sender.test>\r\nDelivered-To: ${BOB}\r\n`.length, tls: null });
    const [handoff] = emitted('handoff');
    expect(handoff).toMatchObject({ messageId: MESSAGE_ID, queueId: received!.queueId });
    expect(handoff!.detail).toEqual({
      to: `LMTP 127.0.0.1:${lmtp!.endpoint.port}`,
      recipients: [expect.objectContaining({ address: BOB, accepted: true, code: 250, stage: 'lmtp' })],
    });
    expect(emitted('handoff-failed')).toEqual([]);
  });

  it('hands several recipients over in one LMTP transaction; the Received header then names none', async () => {
    const port = await startMxServer(await startLmtpServer());
    const { client } = await session(port);
    const t = await transaction(client, 'alice@sender.test', [BOB, CAROL], body());
    expect(t.end).toMatch(/^250 2\.0\.0 Ok: delivered as /);
    for (const user of [BOB, CAROL]) {
      const [stored] = await inbox(user);
      expect(stored!.toString('latin1')).toMatch(/\r\nReceived: from client\.sender\.test \(\[127\.0\.0\.1\]\)\r\n\tby mx\.receiver\.test \(maillab\) with ESMTP id [0-9A-F]{12};\r\n/);
    }
    expect(emitted('handoff')[0]!.detail.recipients).toMatchObject([{ address: BOB, accepted: true }, { address: CAROL, accepted: true }]);
  });

  it('answers 451 4.3.0 when the mailbox server is down, emitting handoff-failed', async () => {
    const lmtpPort = await startLmtpServer();
    await lmtp!.close();
    lmtp = undefined;
    const port = await startMxServer(lmtpPort);
    const { client } = await session(port);
    const t = await transaction(client, 'alice@sender.test', [BOB], body());
    const hop = `LMTP 127.0.0.1:${lmtpPort}`;
    expect(t.end).toMatch(new RegExp(`^451 4\\.3\\.0 mailbox server unavailable, try again later \\(${hop.replace(/\./g, '\\.')}: 127\\.0\\.0\\.1:${lmtpPort}: cannot connect: connection refused \\(ECONNREFUSED\\)\\)$`));
    const [received] = emitted('received');
    expect(emitted('handoff-failed')).toEqual([
      expect.objectContaining({ messageId: MESSAGE_ID, queueId: received!.queueId, detail: { to: hop, error: `127.0.0.1:${lmtpPort}: cannot connect: connection refused (ECONNREFUSED)` } }),
    ]);
    expect(emitted('handoff')).toEqual([]);
  });

  it('answers 451 when the mailbox server fails a recipient for now, even if others were stored', async () => {
    const port = await startMxServer(await startLmtpServer(storeWith((user, data) => (user === CAROL ? Promise.reject(new Error('disk on fire')) : store.deliver(user, data)))));
    const { client } = await session(port);
    const t = await transaction(client, 'alice@sender.test', [BOB, CAROL], body());
    expect(t.end).toMatch(new RegExp(`^451 4\\.3\\.0 mailbox server refused ${CAROL}: 451 4\\.3\\.0 `));
    // Bob's copy is stored: the sender's retry may duplicate it (RFC 5321 §6.1 prefers that to a loss).
    expect(await inbox(BOB)).toHaveLength(1);
    expect(emitted('handoff')[0]!.detail.recipients).toMatchObject([
      { address: BOB, accepted: true },
      { address: CAROL, accepted: false, code: 451 },
    ]);
    expect(emitted('handoff-failed')).toEqual([]);
  });

  it('answers 451 when the mailbox server refuses some recipients for good and accepts others', async () => {
    const port = await startMxServer(await startLmtpServer());
    const { client } = await session(port);
    const t = await transaction(client, 'alice@sender.test', [GHOST, BOB], body());
    expect(t.end).toMatch(new RegExp(`^451 4\\.3\\.0 mailbox server refused ${GHOST}: 550 5\\.1\\.1 <${GHOST}>: no such user here$`));
    expect(await inbox(BOB)).toHaveLength(1);
  });

  it('answers 451 when every recipient failed but one of them only for now', async () => {
    const port = await startMxServer(await startLmtpServer(storeWith((user, data) => (user === CAROL ? Promise.reject(new Error('disk on fire')) : store.deliver(user, data)))));
    const { client } = await session(port);
    const t = await transaction(client, 'alice@sender.test', [GHOST, CAROL], body());
    expect(t.end).toMatch(new RegExp(`^451 4\\.3\\.0 mailbox server refused ${GHOST}, ${CAROL}: 451 4\\.3\\.0 `));
  });

  it('takes 400 to 499 as temporary and 500 as permanent in LMTP replies', async () => {
    // A scripted LMTP server: each recipient's reply code is its local part (400@, 499@, 500@...).
    const scriptedLmtp = createSmtpServer({
      lmtp: true,
      greetingDelayMs: 0,
      authOptional: true,
      disabledCommands: ['AUTH', 'STARTTLS'],
      logger: false,
      onData(stream, session, callback) {
        stream.resume();
        stream.on('end', () => {
          const replies = session.envelope.rcptTo.map((r) => {
            const code = Number(r.address.split('@')[0]);
            return code >= 400 ? smtpReply(code, `${Math.floor(code / 100)}.0.0 scripted ${code}`) : `2.0.0 stored`;
          });
          (callback as unknown as (err: null, replies: (string | Error)[]) => void)(null, replies);
        });
      },
    });
    await listen(scriptedLmtp, '127.0.0.1', 0, 'scripted lmtp');
    const address = scriptedLmtp.server.address();
    const lmtpPort = typeof address === 'object' && address ? address.port : 0;
    try {
      const config = { domains: ['codes.test'], recipients: ['250@codes.test', '400@codes.test', '499@codes.test', '500@codes.test'] };
      const port = await startMxServer(lmtpPort, {}, 0, config);
      const { client } = await session(port);
      const verdict = async (...to: string[]) => (await transaction(client, 'alice@sender.test', to, body())).end;
      expect(await verdict('500@codes.test', '400@codes.test')).toMatch(/^451 4\.3\.0 mailbox server refused 500@codes\.test, 400@codes\.test: 400 4\.0\.0 scripted 400$/);
      expect(await verdict('500@codes.test', '499@codes.test')).toMatch(/^451 4\.3\.0 .*: 499 4\.0\.0 scripted 499$/);
      expect(await verdict('500@codes.test')).toBe('550 5.1.1 mailbox server refused: 500 5.0.0 scripted 500');
      expect(await verdict('250@codes.test', '500@codes.test')).toMatch(/^451 4\.3\.0 mailbox server refused 500@codes\.test: 500 5\.0\.0 scripted 500$/);
      expect(await verdict('250@codes.test')).toMatch(/^250 2\.0\.0 Ok: delivered as /);
    } finally {
      await new Promise<void>((resolve) => scriptedLmtp.close(() => resolve()));
    }
  });

  it('answers 550 when the mailbox server refuses every recipient for good', async () => {
    const port = await startMxServer(await startLmtpServer());
    const { client } = await session(port);
    const t = await transaction(client, 'alice@sender.test', [GHOST], body());
    expect(t.end).toBe(`550 5.1.1 mailbox server refused: 550 5.1.1 <${GHOST}>: no such user here`);
    expect(emitted('handoff')[0]!.detail.recipients).toMatchObject([{ address: GHOST, accepted: false, code: 550, stage: 'rcpt' }]);
    expect(emitted('handoff-failed')).toEqual([]);
  });

  it('refuses a message over the size limit with 552 5.3.4, without handing it off', async () => {
    const port = await startMxServer(await startLmtpServer(), { maxMessageSize: 1000 });
    const { client, ehlo } = await session(port);
    expect(ehlo.filter((l) => /^250[- ]SIZE /.test(l))).toEqual([expect.stringMatching(/^250[- ]SIZE 1000$/)]);
    const fits = body('x'.repeat(1000 - Buffer.byteLength(body()) - 4));
    expect(Buffer.byteLength(`${fits}\r\n`)).toBe(1000);
    expect((await transaction(client, 'alice@sender.test', [BOB], fits)).end).toMatch(/^250 /);
    const t = await transaction(client, 'alice@sender.test', [BOB], body('x'.repeat(1000)));
    expect(t.end).toBe('552 5.3.4 message exceeds the size limit of 1000 octets');
    expect(await inbox(BOB)).toHaveLength(1);
    expect(emitted('received')).toHaveLength(1);
    expect(emitted('handoff')).toHaveLength(1);
  });

  it('takes its size limit from config.limits.maxMessageSize', async () => {
    const port = await startMxServer(await startLmtpServer(), {}, 0, undefined, { maxRecipients: 100, maxConnectionsPerClient: 50, maxMessageSize: 2000 });
    const { client, ehlo } = await session(port);
    expect(ehlo).toContainEqual(expect.stringMatching(/^250[- ]SIZE 2000$/));
    const t = await transaction(client, 'alice@sender.test', [BOB], body('x'.repeat(3000)));
    expect(t.end).toBe('552 5.3.4 message exceeds the size limit of 2000 octets');
    expect(emitted('rejected')).toMatchObject([{ detail: { stage: 'DATA', rcpt: BOB, reply: t.end, from: 'alice@sender.test' } }]);
    client.send('MAIL FROM:<alice@sender.test> SIZE=2001');
    expect((await client.smtpReply()).text).toBe('552 5.3.4 message exceeds the size limit of 2000 octets (declared with SIZE=)');
    expect(emitted('rejected')[1]).toMatchObject({ detail: { stage: 'MAIL FROM', reply: '552 5.3.4 message exceeds the size limit of 2000 octets (declared with SIZE=)' } });
  });
});

describe('MX: hardening', () => {
  it('refuses a header section with a bare CR or LF with 554 5.6.0, without handing it off', async () => {
    const port = await startMxServer(await startLmtpServer());
    const { client } = await session(port);
    const injected = 'From: alice@sender.test\r\nSubject: x\rBcc: <carol@receiver.test>\r\nMessage-ID: <bare-cr@sender.test>\r\n\r\nhi';
    const t = await transaction(client, 'alice@sender.test', [BOB], injected);
    expect(t.end).toBe('554 5.6.0 message header contains a bare CR (header line 2); header lines must end with CRLF');
    const lf = await transaction(client, 'alice@sender.test', [BOB], 'Subject: x\nBcc: carol@receiver.test\r\n\r\nhi');
    expect(lf.end).toMatch(/^554 5\.6\.0 message header contains a bare LF/);
    expect(emitted('rejected').map((e) => [e.detail.stage, String(e.detail.reply).slice(0, 9)])).toEqual([['DATA', '554 5.6.0'], ['DATA', '554 5.6.0']]);
    expect(emitted('received')).toEqual([]);
    expect(await inbox(BOB)).toEqual([]);
    expect(await inbox(CAROL)).toEqual([]);
  });

  it('keeps a smuggled `\\n.\\n` or `\\r.\\r` message inside the first: one message stored', async () => {
    const port = await startMxServer(await startLmtpServer());
    const { client } = await session(port);
    const smuggled = 'MAIL FROM:<admin@sender.test>\r\nRCPT TO:<carol@receiver.test>\r\nDATA\r\nSubject: smuggled\r\n\r\nevil\r\n';
    client.send('MAIL FROM:<alice@sender.test>');
    expect((await client.smtpReply()).code).toBe(250);
    client.send(`RCPT TO:<${BOB}>`);
    expect((await client.smtpReply()).code).toBe(250);
    client.send('DATA');
    expect((await client.smtpReply()).code).toBe(354);
    client.write(`Subject: carrier\r\n\r\nhi\n.\n${smuggled}\r.\r${smuggled}\r\n.\r\n`);
    expect((await client.smtpReply()).code).toBe(250);
    client.send('NOOP');
    expect((await client.smtpReply()).text).toMatch(/^250 /);
    expect(await inbox(CAROL)).toEqual([]);
    const stored = await inbox(BOB);
    expect(stored).toHaveLength(1);
    expect(stored[0]!.toString('latin1')).toContain('Subject: carrier');
    expect(emitted('received')).toHaveLength(1);
  });

  it('takes an address literal naming itself as its own domain (RFC 5321 §4.1.3): user@[127.0.0.1] is that served user', async () => {
    const port = await startMxServer(await startLmtpServer());
    const { client } = await session(port);
    const t = await transaction(client, 'alice@sender.test', ['bob@[127.0.0.1]', 'nobody@[127.0.0.1]', 'bob@[127.0.0.2]'], body());
    expect(t.rcpt).toEqual([
      expect.stringMatching(/^250 /),
      '550 5.1.1 <nobody@[127.0.0.1]>: no such user here',
      '550 5.7.1 <bob@[127.0.0.2]>: relay access denied, mx.receiver.test does not serve [127.0.0.2]',
    ]);
    expect(t.end).toMatch(/^250 /);
    expect(await inbox(BOB)).toHaveLength(1);
    expect(emitted('handoff')[0]!.detail.recipients).toMatchObject([{ address: BOB, accepted: true }]);
  });

  it('answers 452 4.5.3 past maxRecipients, emitting rejected', async () => {
    const port = await startMxServer(await startLmtpServer(), {}, 0, undefined, { maxRecipients: 2, maxConnectionsPerClient: 50 });
    const { client } = await session(port);
    const t = await transaction(client, 'alice@sender.test', [BOB, CAROL, GHOST], body());
    expect(t.rcpt).toEqual([expect.stringMatching(/^250 /), expect.stringMatching(/^250 /), '452 4.5.3 Too many recipients: at most 2 per message, send the rest in another message']);
    expect(t.end).toMatch(/^250 /);
    expect(emitted('rejected')).toMatchObject([{ detail: { stage: 'RCPT TO', rcpt: GHOST, reply: t.rcpt[2] } }]);
  });

  it('greets a client past maxConnectionsPerClient with 421 4.7.0 and closes the connection', async () => {
    const port = await startMxServer(await startLmtpServer(), {}, 0, undefined, { maxRecipients: 100, maxConnectionsPerClient: 2 });
    await session(port);
    await session(port);
    const extra = await connectLine(port);
    clients.push(extra);
    expect(await extra.line()).toBe('421 4.7.0 Too many connections from 127.0.0.1, try again later');
    await extra.waitClosed({ timeoutMs: 2000 });
    expect(emitted('rejected')).toMatchObject([{ detail: { stage: 'CONNECT', rcpt: '', client: '127.0.0.1', reply: '421 4.7.0 Too many connections from 127.0.0.1, try again later' } }]);
  });
});

describe('MX: a sender that goes away during the hand-off', () => {
  // A killed sender never hears our 250 and sends the message again: what LMTP has not stored yet must not be stored.
  it('abandons the LMTP transaction, so the mailbox server stores nothing of it', async () => {
    const held = deliveryHeldUntilAbandoned(store, 'the LMTP delivery was not abandoned within 5 s of the sender leaving');
    const port = await startMxServer(await startLmtpServer(held.store));
    const { client } = await session(port);
    client.send('MAIL FROM:<alice@sender.test>');
    await client.smtpReply();
    client.send(`RCPT TO:<${BOB}>`);
    await client.smtpReply();
    client.send('DATA');
    expect((await client.smtpReply()).lines[0]).toMatch(/^354 /);
    client.write(`${body()}\r\n.\r\n`);
    await held.entered;
    client.close();
    await expect(held.attempt()).rejects.toMatchObject({ code: 'ABORTED' });
    expect(await inbox(BOB)).toEqual([]);
    await expect.poll(() => emitted('handoff-failed').length, { timeout: 8000 }).toBe(1);
  });
});
