import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import SMTPConnection from 'nodemailer/lib/smtp-connection';
import { startLmtp } from './lmtp.js';
import type { MailboxService } from './service.js';
import type { MailStore } from './store-api.js';
import { MaildirStore } from './store.js';
import { AddressedClient, BOB, CAROL, connectLine, deliveryHeldUntilAbandoned, testContext, type TestContext } from './testkit.test-helper.js';

let ctx: TestContext;
let store: MaildirStore;
let lmtp: MailboxService | undefined;

beforeEach(async () => {
  ctx = await testContext();
  store = new MaildirStore({ root: ctx.config.dataDir, users: ctx.config.users, fsync: true });
  await store.open();
});
afterEach(async () => {
  await lmtp?.close();
  lmtp = undefined;
  await ctx.cleanup();
});

async function start(s: MailStore = store, maxSize?: number) {
  lmtp = await startLmtp({ store: s, ctx, host: '127.0.0.1', port: 0, ...(maxSize ? { maxSize } : {}) });
  return lmtp.endpoint.port;
}

interface SendInfo {
  accepted: string[];
  rejected: string[];
  rejectedErrors?: Array<Error & { response?: string }>;
  response: string;
}

/** One LMTP transaction with nodemailer's low-level client. */
async function send(port: number, from: string, to: string[], message: Buffer): Promise<SendInfo> {
  const connection = new SMTPConnection({ lmtp: true, host: '127.0.0.1', port, ignoreTLS: true, name: 'mx.receiver.test' });
  await new Promise<void>((resolve, reject) => {
    connection.once('error', reject);
    connection.connect(() => resolve());
  });
  try {
    return await new Promise<SendInfo>((resolve, reject) => {
      connection.send({ from, to }, message, (err, info) => (err ? reject(err) : resolve(info as unknown as SendInfo)));
    });
  } finally {
    connection.quit();
  }
}

const messageId = '<lmtp-test-1@sender.test>';
// Shapes that break careless code: a lone dot, leading dots, a long line, 8-bit text, an empty last line.
const sent = Buffer.from(
  [
    'From: Alice <alice@sender.test>',
    'To: Bob <bob@receiver.test>, Nobody <nobody@receiver.test>',
    'Subject: per-recipient replies',
    `Message-ID: ${messageId}`,
    '',
    'Hello,',
    '.',
    '..two dots',
    '.leading dot',
    'x'.repeat(990),
    'caf\u00e9',
    '',
    '',
  ].join('\r\n'),
  'utf8',
);

/** One transaction to bob and carol with `message` as the data; the two per-recipient replies. */
async function deliver(port: number, message: string): Promise<string[]> {
  const client = await connectLine(port);
  await client.line();
  client.send('LHLO mx');
  await client.smtpReply();
  client.write(`MAIL FROM:<alice@sender.test>\r\nRCPT TO:<${BOB}>\r\nRCPT TO:<${CAROL}>\r\nDATA\r\n`);
  for (let i = 0; i < 4; i++) await client.line();
  client.write(`${message}\r\n.\r\n`);
  const replies = [await client.line(), await client.line()];
  // The session goes on.
  client.send('NOOP');
  expect(await client.line()).toMatch(/^250 /);
  client.close();
  return replies;
}

describe('LMTP', () => {
  it('replies per recipient, refuses unknown users and stores the exact bytes', async () => {
    const port = await start();
    const info = await send(port, 'alice@sender.test', [BOB, 'nobody@receiver.test'], sent);
    expect(info.accepted).toEqual([BOB]);
    expect(info.rejected).toEqual(['nobody@receiver.test']);
    expect(info.rejectedErrors?.[0]?.response).toMatch(/^550 5\.1\.1 /);
    expect(info.response).toMatch(/^250 2\.\d\.\d /);

    const [stored] = await store.messages(BOB, 'INBOX');
    const raw = await store.read(BOB, 'INBOX', stored!.uid);
    const expected = Buffer.concat([Buffer.from(`Return-Path: <alice@sender.test>\r\nDelivered-To: ${BOB}\r\n`), sent]);
    expect(raw.equals(expected)).toBe(true);
    expect(stored!.size).toBe(expected.length);

    const [event] = ctx.emitted('stored');
    expect(event).toMatchObject({ messageId, queueId: stored!.id, detail: { user: BOB, mailbox: 'INBOX', uid: stored!.uid, size: expected.length, from: 'alice@sender.test' } });
    expect(ctx.emitted('rejected')).toMatchObject([{ detail: { rcpt: 'nobody@receiver.test', reply: expect.stringMatching(/^550 5\.1\.1/) } }]);
  });

  it('delivers to several users, each once', async () => {
    const port = await start();
    const info = await send(port, '', [BOB, CAROL], sent);
    expect(info.accepted).toEqual([BOB, CAROL]);
    for (const user of [BOB, CAROL]) {
      const list = await store.messages(user, 'INBOX');
      expect(list).toHaveLength(1);
      const raw = await store.read(user, 'INBOX', list[0]!.uid);
      // The null sender shows as an empty Return-Path.
      expect(raw.subarray(0, 64).toString()).toMatch(new RegExp(`^Return-Path: <>\r\nDelivered-To: ${user}\r\n`));
    }
    expect(ctx.emitted('stored').map((e) => e.detail.user).sort()).toEqual([BOB, CAROL]);
  });

  it('answers 451 4.3.0 for the recipient whose store failed, 250 for the others', async () => {
    const failing: MailStore = Object.create(store, {
      deliver: {
        value: (user: string, data: Buffer) => (user === CAROL ? Promise.reject(new Error('disk on fire')) : store.deliver(user, data)),
      },
    });
    const port = await start(failing);
    const info = await send(port, 'alice@sender.test', [CAROL, BOB], sent);
    expect(info.accepted).toEqual([BOB]);
    expect(info.rejected).toEqual([CAROL]);
    expect(info.rejectedErrors?.[0]?.response).toMatch(/^451 4\.3\.0 /);
    expect(await store.messages(CAROL, 'INBOX')).toHaveLength(0);
    expect(await store.messages(BOB, 'INBOX')).toHaveLength(1);
    expect(ctx.emitted('stored')).toHaveLength(1);
  });

  it('speaks LMTP: greeting, LHLO extensions, one reply per RCPT even when repeated, pipelining', async () => {
    const port = await start();
    const client = await connectLine(port);
    expect(await client.line()).toMatch(/^220 mail\.receiver\.test LMTP/);
    client.send('EHLO mx.receiver.test');
    expect((await client.smtpReply()).lines[0]).toMatch(/^500 /);
    client.send('LHLO mx.receiver.test');
    const extensions = (await client.smtpReply()).lines.map((l) => l.slice(4));
    expect(extensions).toEqual(expect.arrayContaining(['PIPELINING', '8BITMIME', 'ENHANCEDSTATUSCODES', `SIZE ${50 * 1024 * 1024}`]));
    expect(extensions.join(' ')).not.toMatch(/STARTTLS|AUTH/);

    // Pipelined: everything up to DATA in one write.
    client.write(`MAIL FROM:<alice@sender.test>\r\nRCPT TO:<${BOB}>\r\nRCPT TO:<nobody@receiver.test>\r\nRCPT TO:<BOB@receiver.test>\r\nDATA\r\n`);
    expect(await client.line()).toMatch(/^250 /);
    expect(await client.line()).toMatch(/^250 2\.1\.5 /);
    expect(await client.line()).toMatch(/^550 5\.1\.1 /);
    expect(await client.line()).toMatch(/^250 2\.1\.5 /);
    expect(await client.line()).toMatch(/^354 /);
    client.write('Subject: twice\r\n\r\n..dot\r\n.\r\n');
    // Two successful RCPTs, two replies (the repeat gets the first one's); one user, one copy.
    const first = await client.line();
    expect(first).toMatch(/^250 2\.\d\.\d <bob@receiver\.test> saved as /);
    expect(await client.line()).toBe(first);
    const list = await store.messages(BOB, 'INBOX');
    expect(list).toHaveLength(1);
    expect((await store.read(BOB, 'INBOX', list[0]!.uid)).toString()).toBe(`Return-Path: <alice@sender.test>\r\nDelivered-To: ${BOB}\r\nSubject: twice\r\n\r\n.dot\r\n`);
    client.send('QUIT');
    expect(await client.line()).toMatch(/^221 /);
    client.close();
  });

  it('refuses an oversized message for every recipient', async () => {
    const port = await start(store, 1000);
    expect(await deliver(port, `Subject: big\r\n\r\n${'y'.repeat(2000)}`)).toEqual([expect.stringMatching(/^552 /), expect.stringMatching(/^552 /)]);
    expect(await store.messages(BOB, 'INBOX')).toHaveLength(0);
  });

  it('stores nothing when the client goes away in the middle of the data', async () => {
    const port = await start();
    const client = await connectLine(port);
    await client.line();
    client.write(`LHLO mx\r\nMAIL FROM:<a@sender.test>\r\nRCPT TO:<${BOB}>\r\nDATA\r\n`);
    await client.smtpReply();
    for (let i = 0; i < 3; i++) await client.line();
    // Half a message, handed to the kernel before the connection goes: the server is inside DATA when it does.
    await new Promise<void>((resolve) => client.socket.write('Subject: cut\r\n\r\nhalf a mess', () => resolve()));
    client.close();
    // close() settles every transaction whose data had begun (their messages stored and answered, or dropped)
    // before it resolves, so a message stored from the cut transaction would be in the mailbox by then.
    const service = lmtp!;
    lmtp = undefined;
    await service.close();
    expect(await store.messages(BOB, 'INBOX')).toHaveLength(0);
    expect(ctx.emitted('stored')).toHaveLength(0);
  });

  it('closes idle sessions with 421 when stopped', async () => {
    const port = await start();
    const client = await connectLine(port);
    await client.line();
    client.send('LHLO mx');
    await client.smtpReply();
    const service = lmtp!;
    lmtp = undefined;
    await service.close();
    expect(await client.line()).toMatch(/^421 /);
    await client.waitClosed();
  });

  describe('header section (issue 9, finding 7): a bare CR or LF before the empty CRLF line is refused', () => {
    it.each([
      ['a bare CR smuggling a Bcc:', 'Subject: x\rBcc: <carol@receiver.test>\r\nFrom: a@sender.test\r\n\r\nbody'],
      ['a bare CR ending the header section early', 'Subject: x\r\rBcc: <carol@receiver.test>\r\n\r\nbody'],
      ['a bare LF', 'Subject: x\nBcc: <carol@receiver.test>\r\n\r\nbody'],
      ['an empty line made of a bare LF', 'Subject: x\r\n\nBcc: <carol@receiver.test>\r\n\r\nbody'],
      ['a bare CR in a message without a body', 'Subject: x\rBcc: <carol@receiver.test>'],
    ])('%s: 554 5.6.0 for every recipient, nothing stored', async (_what, message) => {
      const port = await start();
      const replies = await deliver(port, message);
      expect(replies).toEqual([expect.stringMatching(/^554 5\.6\.0 /), expect.stringMatching(/^554 5\.6\.0 /)]);
      expect(await store.messages(BOB, 'INBOX')).toHaveLength(0);
      expect(await store.messages(CAROL, 'INBOX')).toHaveLength(0);
      expect(ctx.emitted('stored')).toEqual([]);
      expect(ctx.emitted('rejected').map((e) => [e.detail.stage, e.detail.rcpt, e.detail.reply])).toEqual([
        ['DATA', BOB, expect.stringMatching(/^554 5\.6\.0 /)],
        ['DATA', CAROL, expect.stringMatching(/^554 5\.6\.0 /)],
      ]);
    });

    it('accepts a clean header section (folded lines included) whatever the body holds', async () => {
      const port = await start();
      const replies = await deliver(port, 'Subject: a folded\r\n  subject\r\nTo: bob@receiver.test\r\n\r\nbody with a bare\rCR and a bare\nLF');
      expect(replies).toEqual([expect.stringMatching(/^250 /), expect.stringMatching(/^250 /)]);
      expect(await store.messages(BOB, 'INBOX')).toHaveLength(1);
    });
  });

  describe('clients (issue 9, finding 8): only config.lmtpClients may deliver, when set', () => {
    const ALLOWED = '127.0.0.41';
    const OTHER = '127.0.0.42';

    it('refuses a client not in the list at connect with 554 5.7.1 and closes; a listed one delivers', async () => {
      ctx.config.lmtpClients = [ALLOWED];
      const port = await start();
      const refused = await AddressedClient.connect(port, OTHER);
      expect(await refused.line()).toBe(`554 5.7.1 <${OTHER}> is not allowed to deliver here`);
      await refused.waitClosed();
      expect(ctx.emitted('rejected').map((e) => e.detail)).toEqual([{ stage: 'connect', reply: `554 5.7.1 <${OTHER}> is not allowed to deliver here`, client: OTHER, from: '' }]);

      const listed = await AddressedClient.connect(port, ALLOWED);
      expect(await listed.line()).toMatch(/^220 mail\.receiver\.test LMTP/);
      listed.send('LHLO mx.receiver.test');
      await listed.until((l) => l.startsWith('250 '));
      listed.socket.write(`MAIL FROM:<alice@sender.test>\r\nRCPT TO:<${BOB}>\r\nDATA\r\n`);
      for (let i = 0; i < 3; i++) await listed.line();
      listed.socket.write('Subject: allowed\r\n\r\nhi\r\n.\r\n');
      expect(await listed.line()).toMatch(/^250 2\.\d\.\d <bob@receiver\.test> saved as /);
      listed.close();
      expect(await store.messages(BOB, 'INBOX')).toHaveLength(1);
    });

    it('without a list (a hand-started node) anyone may deliver', async () => {
      const port = await start();
      const client = await AddressedClient.connect(port, OTHER);
      expect(await client.line()).toMatch(/^220 /);
      client.close();
      expect(ctx.emitted('rejected')).toEqual([]);
    });
  });
});

describe('LMTP: address detail (local+Folder@domain)', () => {
  it('stores bob+Junk@ in Junk, marked \\Junk, with a stored event naming it, and nothing in INBOX', async () => {
    const port = await start();
    const junk = 'bob+Junk@receiver.test';
    const info = await send(port, 'alice@sender.test', [junk], sent);
    expect(info.accepted).toEqual([junk]);
    expect(await store.messages(BOB, 'INBOX')).toHaveLength(0);
    const [stored] = await store.messages(BOB, 'Junk');
    const raw = await store.read(BOB, 'Junk', stored!.uid);
    // Delivered-To keeps the address as the client wrote it, detail included (as Dovecot writes it).
    expect(raw.equals(Buffer.concat([Buffer.from(`Return-Path: <alice@sender.test>\r\nDelivered-To: ${junk}\r\n`), sent]))).toBe(true);
    expect((await store.mailboxInfo(BOB, 'Junk')).specialUse).toBe('\\Junk');
    expect(ctx.emitted('stored')).toMatchObject([{ messageId, detail: { user: BOB, mailbox: 'Junk', uid: stored!.uid } }]);
  });

  it('creates a missing folder named by the detail; the same user plain and with a detail gets one copy in each', async () => {
    const port = await start();
    const info = await send(port, 'alice@sender.test', [BOB, 'Bob+Reports@Receiver.Test'], sent);
    expect(info.accepted).toEqual([BOB, 'Bob+Reports@Receiver.Test']);
    expect((await store.listMailboxes(BOB)).map((m) => m.name)).toContain('Reports');
    expect(await store.messages(BOB, 'Reports')).toHaveLength(1);
    expect(await store.messages(BOB, 'INBOX')).toHaveLength(1);
    expect(ctx.emitted('stored').map((e) => e.detail.mailbox).sort()).toEqual(['INBOX', 'Reports']);
  });

  it('delivers to INBOX when the detail is no valid mailbox name, and refuses an unknown user with a detail (550 5.1.1)', async () => {
    const port = await start();
    const info = await send(port, 'alice@sender.test', ['bob+a//b@receiver.test', 'nobody+Junk@receiver.test'], sent);
    expect(info.accepted).toEqual(['bob+a//b@receiver.test']);
    expect(info.rejected).toEqual(['nobody+Junk@receiver.test']);
    expect(info.rejectedErrors?.[0]?.response).toBe('550 5.1.1 <nobody+Junk@receiver.test>: no such user here');
    expect(await store.messages(BOB, 'INBOX')).toHaveLength(1);
    expect(ctx.emitted('stored')).toMatchObject([{ detail: { user: BOB, mailbox: 'INBOX' } }]);
  });
});

describe('a client that goes away before the replies', () => {
  // A killed MX (or MTA) never hears the 250s and sends the message again: stored now, it would be stored twice.
  it('stores nothing that is not yet published when the connection closes, and says so in an error event', async () => {
    // Hold the delivery until the server has seen the connection close.
    const held = deliveryHeldUntilAbandoned(store, 'the delivery was not told that its client went away within 5 s');
    const port = await start(held.store);
    const net = await import('node:net');
    const socket = net.connect(port, '127.0.0.1');
    let received = '';
    socket.setEncoding('utf8');
    socket.on('data', (chunk: string) => (received += chunk));
    const reply = async (code: string) => {
      const deadline = Date.now() + 5000;
      while (!new RegExp(`^${code}[ ]`, 'm').test(received)) {
        if (Date.now() > deadline) throw new Error(`no ${code} reply; got ${JSON.stringify(received)}`);
        await new Promise((r) => socket.once('data', r));
      }
      received = '';
    };
    await reply('220');
    for (const [line, code] of [
      ['LHLO mx.receiver.test', '250'],
      ['MAIL FROM:<alice@sender.test>', '250'],
      [`RCPT TO:<${BOB}>`, '250'],
      ['DATA', '354'],
    ] as const) {
      socket.write(line + '\r\n');
      await reply(code);
    }
    socket.write('Subject: gone\r\nMessage-ID: <gone-1@sender.test>\r\n\r\nhello\r\n.\r\n');
    await held.entered;
    socket.destroy();
    await expect(held.attempt()).rejects.toMatchObject({ code: 'ABORTED' });
    expect(await store.messages(BOB, 'INBOX')).toEqual([]);
    await expect.poll(() => ctx.emitted('error').map((e) => String((e.detail as { error: string }).error))).toEqual([expect.stringContaining('the client went away')]);
    expect(ctx.emitted('stored')).toEqual([]);
  });
});
