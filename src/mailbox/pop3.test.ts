import { afterEach, beforeEach, describe, expect, it, onTestFinished, vi } from 'vitest';
import { ImapFlow } from 'imapflow';
import { execFile } from 'node:child_process';
import { EventEmitter } from 'node:events';
import { startImap, type RunningImap } from './imap/index.js';
import { startPop3, dotStuff, topOf, uidl } from './pop3.js';
import type { MailboxService } from './service.js';
import { MaildirStore } from './store.js';
import type { LineClient } from '../harness/clients/line-client.js';
import { BOB, CAROL, connectLine, testContext, type TestContext } from './testkit.test-helper.js';

const BOB_PASS = 'bob-secret';

let ctx: TestContext;
let store: MaildirStore;
let pop3: MailboxService | undefined;
let port: number;

const messages = [
  Buffer.from('From: a@sender.test\r\nSubject: one\r\nMessage-ID: <one@sender.test>\r\n\r\nfirst body\r\n', 'utf8'),
  // Dots at line starts, a lone dot, 8-bit, an empty line, and no CRLF at the very end.
  Buffer.from('Subject: two\r\nMessage-ID: <two@sender.test>\r\n\r\n.\r\n..x\r\n.y\r\n\r\ncaf\u00e9\r\nlast line', 'utf8'),
  Buffer.from('Subject: three\r\n\r\nl1\r\nl2\r\nl3\r\n', 'utf8'),
];

async function serve(options: { idleTimeoutMs?: number; maxLineLength?: number } = {}) {
  pop3 = await startPop3({ store, ctx, host: '127.0.0.1', port: 0, ...options });
  port = pop3.endpoint.port;
}

beforeEach(async () => {
  ctx = await testContext();
  store = watched(new MaildirStore({ root: ctx.config.dataDir, users: ctx.config.users, fsync: true }));
  for (const m of messages) await store.deliver(BOB, m);
  await serve();
});
afterEach(async () => {
  await pop3?.close();
  pop3 = undefined;
  await ctx.cleanup();
});

async function login(user = BOB, pass = BOB_PASS): Promise<LineClient> {
  const client = await connectLine(port);
  expect(await client.line()).toMatch(/^\+OK mail\.receiver\.test POP3/);
  client.send(`USER ${user}`);
  expect(await client.line()).toMatch(/^\+OK/);
  client.send(`PASS ${pass}`);
  expect(await client.line()).toMatch(/^\+OK maildrop has \d+ messages/);
  return client;
}

/** Announces every release of a maildrop lock, so a test can wait for one instead of polling. */
const releases = new EventEmitter();

/** The store with its maildrop releases announced on `releases`. */
function watched(s: MaildirStore): MaildirStore {
  const lock = s.lockMaildrop.bind(s);
  s.lockMaildrop = (user) => {
    const release = lock(user);
    return (
      release &&
      (() => {
        release();
        releases.emit('released', user);
      })
    );
  };
  return s;
}

/** Waits until the server has seen a session's close and released the maildrop (fails after 2 s). */
async function released(user = BOB): Promise<void> {
  const free = store.lockMaildrop(user);
  if (free) return free();
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => {
      releases.off('released', listener);
      reject(new Error(`maildrop of ${user} still locked after 2000 ms`));
    }, 2000);
    const listener = (who: string) => {
      if (who !== user) return;
      clearTimeout(timer);
      releases.off('released', listener);
      resolve();
    };
    releases.on('released', listener);
  });
  const release = store.lockMaildrop(user);
  expect(release, `maildrop of ${user} free`).toBeTypeOf('function');
  release!();
}

/** The message as it travels in a RETR response, unstuffed: what a client gets back. */
function unstuff(body: Buffer): Buffer {
  return Buffer.from(body.toString('latin1').replace(/^\./gm, ''), 'latin1');
}

describe('POP3 protocol', () => {
  it('lists, retrieves byte-exact with dot-stuffing, and reports octet counts', async () => {
    const client = await login();
    const sizes = messages.map((m) => m.length);
    const total = sizes.reduce((a, b) => a + b, 0);
    client.send('STAT');
    expect(await client.line()).toBe(`+OK 3 ${total}`);
    client.send('LIST');
    expect(await client.line()).toBe(`+OK 3 messages (${total} octets)`);
    expect((await client.dotBody()).toString()).toBe(sizes.map((s, i) => `${i + 1} ${s}\r\n`).join(''));
    client.send('LIST 2');
    expect(await client.line()).toBe(`+OK 2 ${sizes[1]}`);

    client.send('RETR 2');
    expect(await client.line()).toBe(`+OK ${sizes[1]} octets`);
    const body = await client.dotBody();
    // On the wire: each line starting with "." has another one, and the CRLF the message lacked was added.
    expect(body.toString('latin1')).toContain('\r\n..\r\n...x\r\n..y\r\n');
    expect(unstuff(body).equals(Buffer.concat([messages[1]!, Buffer.from('\r\n')]))).toBe(true);

    client.send('RETR 1');
    expect(await client.line()).toBe(`+OK ${sizes[0]} octets`);
    expect((await client.dotBody()).equals(messages[0]!)).toBe(true);

    client.send('TOP 3 2');
    expect(await client.line()).toMatch(/^\+OK/);
    expect((await client.dotBody()).toString()).toBe('Subject: three\r\n\r\nl1\r\nl2\r\n');
    client.send('TOP 3 0');
    await client.line();
    expect((await client.dotBody()).toString()).toBe('Subject: three\r\n\r\n');

    const stored = await store.messages(BOB, 'INBOX');
    client.send('UIDL');
    expect(await client.line()).toMatch(/^\+OK/);
    expect((await client.dotBody()).toString()).toBe(stored.map((m, i) => `${i + 1} ${m.id}\r\n`).join(''));
    client.send('UIDL 3');
    expect(await client.line()).toBe(`+OK 3 ${stored[2]!.id}`);
    client.send('NOOP');
    expect(await client.line()).toBe('+OK');

    expect(ctx.emitted('retrieved')).toMatchObject([
      { messageId: '<two@sender.test>', queueId: stored[1]!.id, detail: { user: BOB, uid: stored[1]!.uid, size: sizes[1] } },
      { messageId: '<one@sender.test>', detail: { uid: stored[0]!.uid } },
    ]);
    client.send('QUIT');
    expect(await client.line()).toMatch(/^\+OK .*\(0 messages deleted\)/);
    await client.waitClosed();
  });

  it('deletes only in UPDATE: not on a dropped connection, not after RSET', async () => {
    let client = await login();
    client.send('DELE 1');
    expect(await client.line()).toBe('+OK message 1 deleted');
    client.send('DELE 1');
    expect(await client.line()).toMatch(/^-ERR message 1 already deleted/);
    client.send('RETR 1');
    expect(await client.line()).toMatch(/^-ERR/);
    client.send('STAT');
    expect(await client.line()).toBe(`+OK 2 ${messages[1]!.length + messages[2]!.length}`);
    client.send('LIST');
    await client.line();
    expect((await client.dotBody()).toString()).toMatch(/^2 \d+\r\n3 \d+\r\n$/);
    client.close(); // dropped without QUIT
    await released();
    expect(await store.messages(BOB, 'INBOX')).toHaveLength(3);

    client = await login();
    client.send('DELE 2');
    await client.line();
    client.send('RSET');
    expect(await client.line()).toMatch(/^\+OK maildrop has 3 messages/);
    client.send('QUIT');
    expect(await client.line()).toMatch(/\(0 messages deleted\)/);
    await client.waitClosed();
    expect(await store.messages(BOB, 'INBOX')).toHaveLength(3);
    expect(ctx.emitted('deleted')).toEqual([]);

    const before = await store.messages(BOB, 'INBOX');
    client = await login();
    client.send('DELE 1');
    client.send('DELE 3');
    await client.line();
    await client.line();
    client.send('QUIT');
    expect(await client.line()).toMatch(/\(2 messages deleted\)/);
    await client.waitClosed();
    expect((await store.messages(BOB, 'INBOX')).map((m) => m.uid)).toEqual([before[1]!.uid]);
    // Message-IDs are found even for messages deleted without being retrieved.
    expect(ctx.emitted('deleted')).toMatchObject([
      { messageId: '<one@sender.test>', queueId: before[0]!.id, detail: { user: BOB, uid: before[0]!.uid } },
      { queueId: before[2]!.id, detail: { uid: before[2]!.uid } },
    ]);
  });

  it('keeps UIDLs stable across sessions and restarts', async () => {
    const list = async () => {
      const client = await login();
      client.send('UIDL');
      await client.line();
      const text = (await client.dotBody()).toString();
      client.send('QUIT');
      await client.line();
      return text;
    };
    const first = await list();
    await store.deliver(BOB, Buffer.from('Subject: four\r\n\r\n4\r\n'));
    const second = await list();
    expect(second.startsWith(first)).toBe(true);
    await pop3!.close();
    store = watched(new MaildirStore({ root: ctx.config.dataDir, users: ctx.config.users, fsync: true }));
    await serve();
    expect(await list()).toBe(second);
  });

  it('allows one session per maildrop ([IN-USE]) and refuses bad passwords ([AUTH])', async () => {
    const first = await login();
    const second = await connectLine(port);
    await second.line();
    second.send(`USER ${BOB}`);
    await second.line();
    second.send(`PASS ${BOB_PASS}`);
    expect(await second.line()).toMatch(/^-ERR \[IN-USE\] /);
    // Another user is not affected; a password with spaces works.
    const carol = await login(CAROL, 'carol secret with spaces');
    carol.send('STAT');
    expect(await carol.line()).toBe('+OK 0 0');
    first.send('QUIT');
    await first.line();
    await first.waitClosed();
    await released();
    second.send(`USER bob`); // the local part alone is enough when unique
    await second.line();
    second.send(`PASS ${BOB_PASS}`);
    expect(await second.line()).toMatch(/^\+OK maildrop has 3 messages/);

    const bad = await connectLine(port);
    await bad.line();
    for (let i = 0; i < 3; i++) {
      bad.send(`USER ${CAROL}`);
      await bad.line();
      bad.send('PASS wrong');
      expect(await bad.line()).toMatch(/^-ERR \[AUTH\] /);
    }
    await bad.waitClosed(); // three failures end the session
    expect(ctx.emitted('auth-failed')).toHaveLength(3);
  });

  it('authenticates with SASL PLAIN, with an initial response and with a continuation', async () => {
    const plain = (authz: string, user: string, pass: string) => Buffer.from(`${authz}\0${user}\0${pass}`).toString('base64');
    let client = await connectLine(port);
    await client.line();
    client.send('CAPA');
    expect(await client.line()).toMatch(/^\+OK/);
    const capabilities = (await client.dotBody()).toString().split('\r\n');
    expect(capabilities).toEqual(expect.arrayContaining(['TOP', 'UIDL', 'USER', 'RESP-CODES', 'AUTH-RESP-CODE', 'PIPELINING', 'SASL PLAIN']));
    client.send('AUTH');
    expect(await client.line()).toMatch(/^\+OK/);
    expect((await client.dotBody()).toString()).toBe('PLAIN\r\n');
    client.send('AUTH CRAM-MD5');
    expect(await client.line()).toMatch(/^-ERR /);
    client.send(`AUTH PLAIN ${plain('', BOB, 'nope')}`);
    expect(await client.line()).toMatch(/^-ERR \[AUTH\] /);
    client.send(`AUTH PLAIN ${plain(CAROL, BOB, BOB_PASS)}`); // no proxy authentication
    expect(await client.line()).toMatch(/^-ERR \[AUTH\] /);
    client.send(`AUTH PLAIN ${plain(BOB, BOB, BOB_PASS)}`);
    expect(await client.line()).toBe('+OK maildrop has 3 messages (' + messages.reduce((a, m) => a + m.length, 0) + ' octets)');
    client.send('QUIT');
    await client.line();

    client = await connectLine(port);
    await client.line();
    client.send('AUTH PLAIN');
    expect(await client.line()).toBe('+ ');
    client.send('*');
    expect(await client.line()).toMatch(/^-ERR .*cancel/);
    client.send('AUTH PLAIN');
    await client.line();
    client.send('not base64!');
    expect(await client.line()).toMatch(/^-ERR /);
    client.send('AUTH PLAIN');
    await client.line();
    client.send(plain('', CAROL, 'carol secret with spaces'));
    expect(await client.line()).toMatch(/^\+OK maildrop has 0 messages/);
    client.send('AUTH PLAIN');
    expect(await client.line()).toMatch(/^-ERR already logged in/);
    client.close();
  });

  it('answers bad commands with -ERR and keeps going; closes on an overlong line; others unaffected', async () => {
    const client = await connectLine(port);
    await client.line();
    client.send('STAT');
    expect(await client.line()).toMatch(/^-ERR STAT is not valid before login/);
    client.send('PASS x');
    expect(await client.line()).toMatch(/^-ERR send USER first/);
    client.send('HELO there');
    expect(await client.line()).toMatch(/^-ERR unknown command/);
    client.send('');
    expect(await client.line()).toMatch(/^-ERR/);
    client.send(`USER ${BOB}`);
    await client.line();
    client.send(`PASS ${BOB_PASS}`);
    await client.line();
    for (const bad of ['RETR', 'RETR 0', 'RETR 4', 'RETR x', 'LIST 99', 'TOP 1', 'TOP 1 -1', 'DELE', 'UIDL 1000000000000']) {
      client.send(bad);
      expect(await client.line(), bad).toMatch(/^-ERR /);
    }
    const other = await login(CAROL, 'carol secret with spaces');
    client.write('NOOP\r\n' + 'A'.repeat(5000));
    expect(await client.line()).toBe('+OK');
    expect(await client.line()).toMatch(/^-ERR line too long/);
    await client.waitClosed();
    other.send('NOOP');
    expect(await other.line()).toBe('+OK');
    // The closed session released its maildrop, deleting nothing.
    await released();
    const again = await login();
    again.send('STAT');
    expect(await again.line()).toMatch(/^\+OK 3 /);
  });

  it('processes pipelined commands in order', async () => {
    const client = await connectLine(port);
    await client.line();
    client.write(`USER ${BOB}\r\nPASS ${BOB_PASS}\r\nSTAT\r\nRETR 1\r\nLIST 3\r\nDELE 3\r\nUIDL 3\r\nSTAT\r\nQUIT\r\n`);
    expect(await client.line()).toMatch(/^\+OK/);
    expect(await client.line()).toMatch(/^\+OK maildrop has 3/);
    expect(await client.line()).toMatch(/^\+OK 3 /);
    expect(await client.line()).toMatch(/^\+OK \d+ octets/);
    expect((await client.dotBody()).equals(messages[0]!)).toBe(true);
    expect(await client.line()).toBe(`+OK 3 ${messages[2]!.length}`);
    expect(await client.line()).toBe('+OK message 3 deleted');
    expect(await client.line()).toMatch(/^-ERR message 3 already deleted/);
    expect(await client.line()).toBe(`+OK 2 ${messages[0]!.length + messages[1]!.length}`);
    expect(await client.line()).toMatch(/\(1 messages deleted\)/);
    await client.waitClosed();
    expect(await store.messages(BOB, 'INBOX')).toHaveLength(2);
  });

  it('logs out an idle session without deleting anything, and closes sessions on stop', async () => {
    await pop3!.close();
    await serve({ idleTimeoutMs: 200 });
    const client = await login();
    client.send('DELE 1');
    await client.line();
    expect(await client.line()).toMatch(/^-ERR \[SYS\/TEMP\] autologout/);
    await client.waitClosed();
    await released();
    expect(await store.messages(BOB, 'INBOX')).toHaveLength(3);

    const idle = await login();
    idle.send('DELE 1');
    await idle.line();
    await pop3!.close();
    pop3 = undefined;
    await idle.waitClosed();
    await released();
    expect(await store.messages(BOB, 'INBOX')).toHaveLength(3);
  });
});

/** Sends one command and returns the first line of the answer. */
async function ask(client: LineClient, line: string): Promise<string> {
  client.send(line);
  return client.line();
}

describe('POP3 edges', () => {
  it('answers each malformed or misplaced command with its own -ERR', async () => {
    const client = await connectLine(port);
    await client.line();
    expect(await ask(client, 'USER')).toBe('-ERR USER needs a name');
    expect(await ask(client, 'APOP bob 0123')).toBe('-ERR APOP is not supported, use USER/PASS or AUTH PLAIN');
    for (const command of ['LIST', 'RETR 1', 'DELE 1', 'NOOP', 'RSET', 'TOP 1 1', 'UIDL']) {
      expect(await ask(client, command)).toBe(`-ERR ${command.split(' ')[0]} is not valid before login`);
    }
    expect(await ask(client, 'AUTH PLAIN a b')).toBe('-ERR usage: AUTH PLAIN [initial-response]');
    expect(await ask(client, 'AUTH PLAIN =')).toBe('-ERR malformed PLAIN response');
    expect(await ask(client, 'AUTH PLAIN abc')).toBe('-ERR invalid base64 in the SASL response');
    expect(await ask(client, `AUTH PLAIN ${Buffer.from(`${BOB}\0${BOB_PASS}`).toString('base64')}`)).toBe('-ERR malformed PLAIN response');
    expect(await ask(client, `USER ${BOB}`)).toBe('+OK send PASS');
    expect(await ask(client, `PASS ${BOB_PASS}`)).toMatch(/^\+OK maildrop has 3 messages/);
    for (const command of ['USER x', 'PASS x', 'APOP x y']) expect(await ask(client, command)).toBe('-ERR already logged in');
    expect(await ask(client, 'RETR 1 2')).toBe('-ERR usage: RETR <message>');
    expect(await ask(client, 'DELE 1 2')).toBe('-ERR usage: DELE <message>');
    expect(await ask(client, 'TOP 1 x')).toBe('-ERR usage: TOP <message> <lines>');
    expect(await ask(client, 'TOP 1 1 1')).toBe('-ERR usage: TOP <message> <lines>');
    expect(await ask(client, 'TOP 4 1')).toBe('-ERR no such message "4"');
    expect(await ask(client, 'BOGUS')).toBe('-ERR unknown command "BOGUS"');
    // Deleted messages are gone for LIST n and UIDL n too; RSET counts them again.
    expect(await ask(client, 'DELE 2')).toBe('+OK message 2 deleted');
    expect(await ask(client, 'LIST 2')).toBe('-ERR message 2 already deleted');
    expect(await ask(client, 'UIDL 2')).toBe('-ERR message 2 already deleted');
    expect(await ask(client, 'UIDL')).toBe('+OK unique-id listing follows');
    expect((await client.dotBody()).toString()).not.toMatch(/^2 /m);
    const total = messages.reduce((a, m) => a + m.length, 0);
    expect(await ask(client, 'RSET')).toBe(`+OK maildrop has 3 messages (${total} octets)`);
    expect(await ask(client, 'LIST 2')).toBe(`+OK 2 ${messages[1]!.length}`);
  });

  it('closes after 20 errors in a row; a good reply starts the count again', async () => {
    const client = await login();
    for (let i = 0; i < 19; i++) expect(await ask(client, 'RETR 9')).toMatch(/^-ERR no such message/);
    expect(await ask(client, 'NOOP')).toBe('+OK');
    for (let i = 0; i < 19; i++) expect(await ask(client, 'RETR 9')).toMatch(/^-ERR /);
    // A multi-line +OK resets the count as well.
    expect(await ask(client, 'LIST')).toMatch(/^\+OK/);
    await client.dotBody();
    for (let i = 0; i < 19; i++) expect(await ask(client, 'RETR 9')).toMatch(/^-ERR /);
    expect(client.closed).toBe(false);
    expect(await ask(client, 'RETR 9')).toMatch(/^-ERR no such message/);
    expect(await client.line()).toBe('-ERR too many errors, closing');
    await client.waitClosed();
  });

  it('QUIT before login signs off without touching the maildrop', async () => {
    const client = await connectLine(port);
    await client.line();
    expect(await ask(client, 'QUIT')).toBe('+OK mail.receiver.test POP3 server signing off');
    await client.waitClosed();
    expect(store.lockMaildrop(BOB)).toBeTypeOf('function');
  });

  it('reports a message removed by another protocol as no longer available', async () => {
    const client = await login();
    const [first] = await store.messages(BOB, 'INBOX');
    await store.remove(BOB, 'INBOX', [first!.uid]);
    expect(await ask(client, 'RETR 1')).toBe('-ERR [SYS/PERM] message 1 is no longer available');
    expect(await ask(client, 'TOP 1 0')).toBe('-ERR [SYS/PERM] message 1 is no longer available');
    expect(await ask(client, 'RETR 2')).toMatch(/^\+OK/);
  });

  it('says so when the marked messages could not be removed, and deletes nothing', async () => {
    const client = await login();
    await ask(client, 'DELE 1');
    const remove = vi.spyOn(store, 'remove').mockRejectedValueOnce(new Error('disk on fire'));
    expect(await ask(client, 'QUIT')).toBe('-ERR [SYS/TEMP] some deleted messages were not removed');
    await client.waitClosed();
    expect(remove).toHaveBeenCalledTimes(1);
    expect(ctx.emitted('deleted')).toEqual([]);
    expect(await store.messages(BOB, 'INBOX')).toHaveLength(3);
  });

  it('refuses the login when the maildrop cannot be opened, and releases it', async () => {
    const client = await connectLine(port);
    await client.line();
    await ask(client, `USER ${BOB}`);
    vi.spyOn(store, 'messages').mockRejectedValueOnce(new Error('disk on fire'));
    expect(await ask(client, `PASS ${BOB_PASS}`)).toBe('-ERR [SYS/TEMP] cannot open the maildrop now, try again later');
    expect(await ask(client, `USER ${BOB}`)).toBe('+OK send PASS');
    expect(await ask(client, `PASS ${BOB_PASS}`)).toMatch(/^\+OK maildrop has 3 messages/);
  });

  it('an unexpected failure of a command is -ERR [SYS/TEMP], and the session goes on', async () => {
    const client = await connectLine(port);
    await client.line();
    await ask(client, `USER ${BOB}`);
    vi.spyOn(store, 'authenticate').mockImplementationOnce(() => {
      throw new Error('not a refusal but a bug');
    });
    expect(await ask(client, `PASS ${BOB_PASS}`)).toBe('-ERR [SYS/TEMP] internal error');
    expect(ctx.emitted('auth-failed')).toEqual([]);
    expect(await ask(client, `USER ${BOB}`)).toBe('+OK send PASS');
    expect(await ask(client, `PASS ${BOB_PASS}`)).toMatch(/^\+OK maildrop has 3 messages/);
  });

  it('parses lines exactly: bare LF, a leading space, long names quoted in part, strict numbers and base64', async () => {
    const client = await connectLine(port);
    await client.line();
    client.write('CAPA\n');
    expect(await client.line()).toBe('+OK capability list follows');
    await client.dotBody();
    expect(await ask(client, ' NOOP')).toBe('-ERR unknown command ""');
    expect(await ask(client, 'X'.repeat(30))).toBe(`-ERR unknown command "${'X'.repeat(20)}"`);
    expect(await ask(client, 'AUTH')).toBe('+OK supported mechanisms follow');
    await client.dotBody();
    expect(await ask(client, 'AUTH cram-md5-and-more-than-twenty')).toBe('-ERR unsupported mechanism "cram-md5-and-more-th"');
    expect(await ask(client, 'AUTH PLAIN !abc')).toBe('-ERR invalid base64 in the SASL response');
    expect(await ask(client, 'AUTH PLAIN abc!')).toBe('-ERR invalid base64 in the SASL response');
    expect(await ask(client, `auth plain ${Buffer.from(`\0${BOB}\0${BOB_PASS}`).toString('base64')}`)).toMatch(/^\+OK maildrop has 3 messages/);
    expect(await ask(client, 'Y'.repeat(30))).toBe(`-ERR unknown command "${'Y'.repeat(20)}"`);
    for (const arg of ['1x', 'x1', '0000000001', '-1']) expect(await ask(client, `RETR ${arg}`)).toBe(`-ERR no such message ${JSON.stringify(arg)}`);
    expect(await ask(client, `RETR ${'9'.repeat(30)}`)).toBe(`-ERR no such message "${'9'.repeat(20)}"`);
    expect(await ask(client, 'RETR 000000001')).toMatch(/^\+OK/);
    await client.dotBody();
    for (const lines of ['1x', '1234567890']) expect(await ask(client, `TOP 1 ${lines}`)).toBe('-ERR usage: TOP <message> <lines>');
    expect(await ask(client, 'TOP 1 000000000')).toBe('+OK top of message follows');
    await client.dotBody();
    const retrieved = ctx.emitted('retrieved');
    expect(retrieved).toHaveLength(1);
    expect(retrieved[0]!.detail).toMatchObject({ protocol: 'pop3', user: BOB });
  });

  it('takes lines shorter than the limit and ends the session on one that reaches it, complete or not', async () => {
    await pop3!.close();
    await serve({ maxLineLength: 10 });
    const client = await connectLine(port);
    await client.line();
    expect(await ask(client, 'NOOP    ')).toMatch(/^-ERR NOOP is not valid before login/); // 10 octets with CRLF: fits
    // Ten octets without a line end are already too many: the answer comes without waiting for the rest.
    client.write('NOOP123456');
    expect(await client.line()).toBe('-ERR line too long (more than 10 octets), closing');
    await client.waitClosed();
  });

  it('keeps reading after a flood of pipelined commands has been answered', async () => {
    const client = await login();
    client.write('NOOP\r\n'.repeat(150));
    for (let i = 0; i < 150; i++) expect(await client.line()).toBe('+OK');
    expect(await ask(client, 'STAT')).toMatch(/^\+OK 3 /);
  });

  it('reports failed logins with the protocol, login and client address', async () => {
    const client = await connectLine(port);
    await client.line();
    await ask(client, 'USER somebody');
    expect(await ask(client, 'PASS wrong')).toMatch(/^-ERR \[AUTH\]/);
    expect(ctx.emitted('auth-failed').map((e) => e.detail)).toEqual([{ protocol: 'pop3', login: 'somebody', method: 'USER', client: '127.0.0.1' }]);
  });

  it('remembers the Message-ID of a retrieved message for its deleted event, whatever its size', async () => {
    const big = Buffer.from(`Message-ID: <big@sender.test>\r\n\r\n${'z'.repeat(300 * 1024)}\r\n`);
    await store.deliver(BOB, big);
    const client = await login();
    await ask(client, 'RETR 4');
    await client.dotBody();
    await ask(client, 'DELE 4');
    await ask(client, 'QUIT');
    await client.waitClosed();
    expect(ctx.emitted('deleted').map((e) => e.messageId)).toEqual(['<big@sender.test>']);
  });

  it('finds Message-IDs for deleted events of messages up to 256 KiB only', async () => {
    const sized = (size: number, id: string) => {
      const head = `Message-ID: <${id}@sender.test>\r\n\r\n`;
      return Buffer.from(head + 'x'.repeat(size - head.length - 2) + '\r\n');
    };
    const limit = 256 * 1024;
    await store.deliver(BOB, sized(limit, 'at-limit'));
    await store.deliver(BOB, sized(limit + 1, 'over-limit'));
    const stored = await store.messages(BOB, 'INBOX');
    expect(stored.slice(3).map((m) => m.size)).toEqual([limit, limit + 1]);
    const client = await login();
    await ask(client, 'DELE 4');
    await ask(client, 'DELE 5');
    expect(await ask(client, 'QUIT')).toMatch(/\(2 messages deleted\)/);
    await client.waitClosed();
    const deleted = ctx.emitted('deleted');
    expect(deleted.map((e) => e.detail.uid)).toEqual([stored[3]!.uid, stored[4]!.uid]);
    expect(deleted[0]!.messageId).toBe('<at-limit@sender.test>');
    expect(deleted[1]!.messageId).toBeUndefined();
  });
});

describe('POP3 and \\Seen (issue 14: as Dovecot, unless pop3MarksSeen is false)', () => {
  let imap: RunningImap | undefined;
  const imapClients: ImapFlow[] = [];
  afterEach(async () => {
    await Promise.allSettled(imapClients.splice(0).map((c) => c.logout()));
    await imap?.stop();
    imap = undefined;
  });

  /** An imapflow session on bob's INBOX, against an IMAP server on the same store as the POP3 server. */
  async function imapInbox(): Promise<ImapFlow> {
    imap ??= await startImap({ store, host: '127.0.0.1', port: 0, hostname: 'mail.receiver.test', events: ctx.events });
    const c = new ImapFlow({ host: '127.0.0.1', port: imap.endpoint.port, secure: false, auth: { user: BOB, pass: BOB_PASS }, logger: false, disableAutoIdle: true });
    c.on('error', () => undefined);
    await c.connect();
    imapClients.push(c);
    await c.mailboxOpen('INBOX');
    return c;
  }

  /** UID → flags (sorted, without the session-only \Recent), as IMAP FETCH FLAGS reports them. */
  async function imapFlags(c: ImapFlow): Promise<Record<number, string[]>> {
    const fetched = await c.fetchAll('1:*', { uid: true, flags: true });
    return Object.fromEntries(fetched.map((m) => [m.uid, [...(m.flags ?? [])].filter((f) => f !== '\\Recent').sort()]));
  }

  /** Every 'flags' change the store publishes (what IMAP sessions are told) from now on. */
  function flagChanges(): Array<{ uid: number; flags: string[]; modseq: number }> {
    const changes: Array<{ uid: number; flags: string[]; modseq: number }> = [];
    const stop = store.onChange((c) => {
      if (c.type === 'flags') changes.push({ uid: c.message.uid, flags: c.message.flags, modseq: c.message.modseq });
    });
    onTestFinished(stop);
    return changes;
  }

  it('RETR marks the message \\Seen at QUIT, before the +OK: IMAP FETCH FLAGS, IDLE and CONDSTORE see it', async () => {
    const [first, second] = await store.messages(BOB, 'INBOX');
    const watcher = await imapInbox();
    const changes = flagChanges();
    const client = await login();
    expect(await ask(client, 'RETR 1')).toMatch(/^\+OK \d+ octets/);
    await client.dotBody();
    // Not yet: the flag is applied when the session ends (Dovecot commits it with the session's transaction).
    expect((await imapFlags(watcher))[first!.uid]).toEqual([]);
    expect(changes).toEqual([]);

    const pushed = new Promise<{ seq: number; flags: Set<string> }>((resolve) => watcher.on('flags', resolve));
    const idling = watcher.idle();
    expect(await ask(client, 'QUIT')).toMatch(/^\+OK .*\(0 messages deleted\)/);
    // Already in the store when QUIT was answered: a client that goes on to IMAP never sees it unseen.
    const [after] = await store.messages(BOB, 'INBOX');
    expect(after!.flags).toEqual(['\\Seen']);
    expect(after!.modseq).toBeGreaterThan(first!.modseq); // a new CONDSTORE modseq, as IMAP STORE gives
    expect(changes).toEqual([{ uid: first!.uid, flags: ['\\Seen'], modseq: after!.modseq }]);
    const push = await pushed; // untagged FETCH during IDLE
    expect(push.seq).toBe(1);
    expect(push.flags.has('\\Seen')).toBe(true);
    await watcher.noop();
    await idling;

    const fresh = await imapInbox();
    expect(await imapFlags(fresh)).toEqual({ [first!.uid]: ['\\Seen'], [second!.uid]: [], [(await store.messages(BOB, 'INBOX'))[2]!.uid]: [] });
    expect(await fresh.search({ seen: false }, { uid: true })).toEqual([second!.uid, (await store.messages(BOB, 'INBOX'))[2]!.uid]);
  });

  it('TOP does not mark; a message already \\Seen gets no new change; RSET forgets what RETR retrieved', async () => {
    const [first, second, third] = await store.messages(BOB, 'INBOX');
    await store.setFlags(BOB, 'INBOX', [third!.uid], ['\\Seen'], 'add');
    const changes = flagChanges();
    let client = await login();
    expect(await ask(client, 'TOP 1 0')).toBe('+OK top of message follows');
    await client.dotBody();
    expect(await ask(client, 'RETR 3')).toMatch(/^\+OK/);
    await client.dotBody();
    expect(await ask(client, 'QUIT')).toMatch(/^\+OK/);
    await client.waitClosed();
    expect(changes).toEqual([]);

    client = await login();
    expect(await ask(client, 'RETR 2')).toMatch(/^\+OK/);
    await client.dotBody();
    expect(await ask(client, 'RSET')).toMatch(/^\+OK maildrop has 3 messages/);
    expect(await ask(client, 'QUIT')).toMatch(/^\+OK/);
    await client.waitClosed();
    expect(changes).toEqual([]);
    expect(await imapFlags(await imapInbox())).toEqual({ [first!.uid]: [], [second!.uid]: [], [third!.uid]: ['\\Seen'] });
  });

  it('a message deleted with DELE and QUIT is gone, with no flag change before; the others retrieved are \\Seen', async () => {
    const [first, second, third] = await store.messages(BOB, 'INBOX');
    const changes = flagChanges();
    const client = await login();
    for (const n of [1, 2]) {
      expect(await ask(client, `RETR ${n}`)).toMatch(/^\+OK/);
      await client.dotBody();
    }
    expect(await ask(client, 'DELE 1')).toBe('+OK message 1 deleted');
    expect(await ask(client, 'QUIT')).toMatch(/\(1 messages deleted\)/);
    await client.waitClosed();
    expect((await store.messages(BOB, 'INBOX')).map((m) => m.uid)).toEqual([second!.uid, third!.uid]);
    expect(changes.map((c) => c.uid)).toEqual([second!.uid]);
    expect(ctx.emitted('deleted')).toMatchObject([{ messageId: '<one@sender.test>', detail: { uid: first!.uid } }]);
    expect(await imapFlags(await imapInbox())).toEqual({ [second!.uid]: ['\\Seen'], [third!.uid]: [] });
  });

  it('a session that ends without QUIT still marks what it retrieved, and deletes nothing', async () => {
    const [first, second] = await store.messages(BOB, 'INBOX');
    const client = await login();
    for (const n of [1, 2]) {
      expect(await ask(client, `RETR ${n}`)).toMatch(/^\+OK/);
      await client.dotBody();
    }
    expect(await ask(client, 'DELE 2')).toBe('+OK message 2 deleted');
    client.close(); // dropped
    await released(); // the maildrop is released only once the flags are applied
    const stored = await store.messages(BOB, 'INBOX');
    expect(stored).toHaveLength(3);
    expect(stored.filter((m) => m.flags.includes('\\Seen')).map((m) => m.uid)).toEqual([first!.uid, second!.uid]);
  });

  it('with pop3MarksSeen: false, POP3 never touches flags (Dovecot pop3_no_flag_updates = yes)', async () => {
    await pop3?.close();
    pop3 = await startPop3({ store, ctx: { ...ctx, config: { ...ctx.config, pop3MarksSeen: false } }, host: '127.0.0.1', port: 0 });
    port = pop3.endpoint.port;
    const before = await store.messages(BOB, 'INBOX');
    const changes = flagChanges();
    let client = await login();
    expect(await ask(client, 'RETR 1')).toMatch(/^\+OK/);
    await client.dotBody();
    expect(await ask(client, 'QUIT')).toMatch(/^\+OK/);
    await client.waitClosed();
    client = await login();
    expect(await ask(client, 'RETR 2')).toMatch(/^\+OK/);
    await client.dotBody();
    client.close();
    await released();
    expect(changes).toEqual([]);
    expect(await store.messages(BOB, 'INBOX')).toEqual(before);
    expect(Object.values(await imapFlags(await imapInbox()))).toEqual([[], [], []]);
  });
});

describe('POP3 with real clients', () => {
  const run = (file: string, args: string[]) =>
    new Promise<{ stdout: Buffer; stderr: Buffer }>((resolve, reject) => {
      execFile(file, args, { encoding: 'buffer', timeout: 20_000 }, (err, stdout, stderr) =>
        err ? reject(new Error(`${file} failed: ${err.message}\n${stderr.toString()}`)) : resolve({ stdout, stderr }),
      );
    });

  it("works with Python's poplib", async () => {
    const script = `
import poplib, sys, json
p = poplib.POP3('127.0.0.1', int(sys.argv[1]), timeout=10)
caps = p.capa()
p.user(sys.argv[2]); p.pass_(sys.argv[3])
count, size = p.stat()
out = {'caps': sorted(caps.keys()), 'count': count, 'size': size, 'list': [l.decode() for l in p.list()[1]],
       'uidl': [l.decode() for l in p.uidl()[1]], 'top': [l.decode('latin1') for l in p.top(3, 1)[1]]}
out['retr'] = [b'\\r\\n'.join(p.retr(i)[1]).hex() for i in (1, 2, 3)]
p.dele(1)
out['quit'] = p.quit().decode()
print(json.dumps(out))
`;
    const stored = await store.messages(BOB, 'INBOX');
    const result = JSON.parse((await run('python3', ['-c', script, String(port), BOB, BOB_PASS])).stdout.toString());
    expect(result.caps).toEqual(expect.arrayContaining(['SASL', 'TOP', 'UIDL', 'USER', 'PIPELINING', 'RESP-CODES']));
    expect(result.count).toBe(3);
    expect(result.size).toBe(messages.reduce((a, m) => a + m.length, 0));
    expect(result.list).toEqual(messages.map((m, i) => `${i + 1} ${m.length}`));
    expect(result.uidl).toEqual(stored.map((m, i) => `${i + 1} ${m.id}`));
    expect(result.top).toEqual(['Subject: three', '', 'l1']);
    // poplib strips the CRLFs and undoes the dot-stuffing; joining the lines again gives the message back
    // (without its last CRLF).
    result.retr.forEach((hex: string, i: number) => {
      const original = messages[i]!.toString('latin1').replace(/\r\n$/, '');
      expect(Buffer.from(hex, 'hex').toString('latin1')).toBe(original);
    });
    expect(result.quit).toMatch(/^\+OK .*\(1 messages deleted\)/);
    expect((await store.messages(BOB, 'INBOX')).map((m) => m.uid)).toEqual([stored[1]!.uid, stored[2]!.uid]);
  });

  it('works with curl (LIST, RETR, UIDL, DELE), logging in with SASL PLAIN', async () => {
    const base = `pop3://127.0.0.1:${port}`;
    const auth = ['-u', `${BOB}:${BOB_PASS}`];
    const listing = (await run('curl', ['-sS', `${base}/`, ...auth])).stdout.toString();
    expect(listing).toBe(messages.map((m, i) => `${i + 1} ${m.length}\r\n`).join(''));
    for (let i = 0; i < messages.length; i++) {
      const { stdout, stderr } = await run('curl', ['-sS', '-v', `${base}/${i + 1}`, ...auth]);
      // curl picks SASL PLAIN from CAPA, and undoes the dot-stuffing; a missing final CRLF was added by us.
      expect(stderr.toString()).toMatch(/> AUTH PLAIN/);
      const expected = messages[i]!.subarray(-2).toString() === '\r\n' ? messages[i]! : Buffer.concat([messages[i]!, Buffer.from('\r\n')]);
      expect(stdout.equals(expected), `message ${i + 1}`).toBe(true);
    }
    const stored = await store.messages(BOB, 'INBOX');
    const uidlOut = (await run('curl', ['-sS', `${base}/`, ...auth, '-X', 'UIDL'])).stdout.toString();
    expect(uidlOut).toBe(stored.map((m, i) => `${i + 1} ${m.id}\r\n`).join(''));
    await run('curl', ['-sS', `${base}/2`, ...auth, '-X', 'DELE', '-I']);
    expect((await store.messages(BOB, 'INBOX')).map((m) => m.uid)).toEqual([stored[0]!.uid, stored[2]!.uid]);
    expect(ctx.emitted('auth-failed')).toEqual([]);
  });
});

describe('POP3 helpers', () => {
  it('dot-stuffs and terminates', () => {
    expect(dotStuff(Buffer.from('')).toString()).toBe('.\r\n');
    expect(dotStuff(Buffer.from('.a\r\nb\r\n.\r\n')).toString()).toBe('..a\r\nb\r\n..\r\n.\r\n');
    expect(dotStuff(Buffer.from('a\r\n.b')).toString()).toBe('a\r\n..b\r\n.\r\n');
    expect(dotStuff(Buffer.from('\n.x')).toString()).toBe('\n..x\r\n.\r\n');
    expect(dotStuff(Buffer.from('a\n')).toString()).toBe('a\n\r\n.\r\n');
    expect(dotStuff(Buffer.from('a\r')).toString()).toBe('a\r\r\n.\r\n');
  });
  it('takes the top of a message', () => {
    expect(topOf(Buffer.from('A: 1\r\n\r\nx\r\ny\r\n'), 1).toString()).toBe('A: 1\r\n\r\nx\r\n');
    expect(topOf(Buffer.from('A: 1\r\n'), 5).toString()).toBe('A: 1\r\n');
    expect(topOf(Buffer.from('A: 1\r\n\r\nx'), 9).toString()).toBe('A: 1\r\n\r\nx');
  });
  it('falls back to a hash for ids unfit for UIDL', () => {
    const base = { uid: 1, size: 1, flags: [], internalDate: 0, modseq: 1 };
    expect(uidl({ ...base, id: 'short.id' })).toBe('short.id');
    expect(uidl({ ...base, id: 'x'.repeat(71) })).toMatch(/^[0-9a-f]{40}$/);
  });
});
