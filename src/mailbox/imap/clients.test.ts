// Real clients against the server: imapflow (on the in-memory store and on the Maildir store), Python's
// imaplib and curl.
import { execFile } from 'node:child_process';
import { EventEmitter } from 'node:events';
import { ImapFlow, type Logger } from 'imapflow';
import { afterEach, beforeEach, describe, expect, test } from 'vitest';
import { EventLog } from '../../shared/events.js';
import type { MailStore } from '../store-api.js';
import { FORWARD, MULTIPART, SIMPLE } from './fixtures.test-helper.js';
import { startImap, type RunningImap } from './index.js';
import { STORES, type StoreFactory } from './stores.test-helper.js';

const BOB = 'bob@example.test';
const USERS = [
  { address: BOB, password: 'secret' },
  { address: 'carol@example.test', password: 'carol-pw' },
];

interface Fixture {
  store: MailStore;
  server: RunningImap;
  events: EventLog;
  cleanup(): Promise<void>;
}

async function startFixture(makeStore: StoreFactory): Promise<Fixture> {
  const { store, cleanup } = await makeStore(USERS);
  await store.deliver(BOB, SIMPLE, { internalDate: Date.UTC(2024, 1, 2, 9, 0, 0) });
  await store.deliver(BOB, MULTIPART, { internalDate: Date.UTC(2024, 1, 3, 14, 0, 0) });
  await store.deliver(BOB, FORWARD, { internalDate: Date.UTC(2024, 1, 4, 12, 0, 0) });
  const events = new EventLog('mailbox');
  const server = await startImap({ store, host: '127.0.0.1', port: 0, hostname: 'imap.example.test', events });
  return { store, server, events, cleanup };
}

/** Resolves with the first event that satisfies the predicate, or rejects after the timeout. */
function nextEvent<T>(emitter: EventEmitter, name: string, timeoutMs: number, predicate: (value: T) => boolean = () => true): Promise<T> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      emitter.off(name, listener);
      reject(new Error(`no ${name} event within ${timeoutMs} ms`));
    }, timeoutMs);
    const listener = (value: T) => {
      if (!predicate(value)) return;
      clearTimeout(timer);
      emitter.off(name, listener);
      resolve(value);
    };
    emitter.on(name, listener);
  });
}

describe.each(STORES)('imapflow on the %s', (_name, makeStore) => {
  let f: Fixture;
  const clients: ImapFlow[] = [];

  /** imapflow's debug log as events, so a test can wait for a client-side step (IDLE acknowledged by "+"). */
  function logEvents(): { logger: Logger; log: EventEmitter } {
    const log = new EventEmitter();
    const quiet = () => undefined;
    return { log, logger: { debug: (entry: { msg?: string }) => log.emit('debug', entry), info: quiet, warn: quiet, error: quiet } };
  }

  async function client(user = BOB, pass = 'secret', logger: Logger | false = false): Promise<ImapFlow> {
    const c = new ImapFlow({ host: '127.0.0.1', port: f.server.endpoint.port, secure: false, auth: { user, pass }, logger, disableAutoIdle: true });
    c.on('error', () => undefined);
    await c.connect();
    clients.push(c);
    return c;
  }

  beforeEach(async () => {
    f = await startFixture(makeStore);
  });

  afterEach(async () => {
    await Promise.allSettled(clients.splice(0).map((c) => c.logout()));
    await f.server.stop();
    await f.cleanup();
  });

  test('login, capabilities, LIST with special-use folders, STATUS', async () => {
    const c = await client();
    for (const cap of ['IDLE', 'UIDPLUS', 'MOVE', 'SPECIAL-USE', 'CONDSTORE', 'LITERAL+']) expect(c.capabilities.has(cap)).toBe(true);
    const list = await c.list();
    const uses = Object.fromEntries(list.map((m) => [m.path, m.specialUse ?? null]));
    expect(uses).toEqual({ INBOX: '\\Inbox', Sent: '\\Sent', Drafts: '\\Drafts', Trash: '\\Trash', Junk: '\\Junk' });
    const status = await c.status('INBOX', { messages: true, unseen: true, uidNext: true, highestModseq: true });
    expect(status).toMatchObject({ path: 'INBOX', messages: 3, unseen: 3, uidNext: 4 });
    expect(f.events.since(0).filter((e) => e.kind === 'session').map((e) => e.detail.user)).toEqual([BOB]);
  });

  test('select and fetch source, envelope, body structure, flags', async () => {
    const c = await client();
    const box = await c.mailboxOpen('INBOX');
    expect(box.exists).toBe(3);
    expect(Number(box.uidValidity)).toBe((await f.store.mailboxInfo(BOB, 'INBOX')).uidValidity);
    const messages = await c.fetchAll('1:*', { uid: true, flags: true, envelope: true, bodyStructure: true, source: true, internalDate: true, size: true });
    expect(messages.map((m) => m.uid)).toEqual([1, 2, 3]);
    expect(messages[0]!.source!.equals(SIMPLE)).toBe(true);
    expect(messages[0]!.size).toBe(SIMPLE.length);
    expect((messages[0]!.internalDate as Date).toISOString()).toBe('2024-02-02T09:00:00.000Z');
    expect(messages[0]!.envelope).toMatchObject({ subject: 'Lunch on Friday', messageId: '<simple-1@sender.test>', from: [{ name: 'Alice Example', address: 'alice@sender.test' }] });
    expect(messages[1]!.envelope).toMatchObject({ subject: 'Grüßeaus Köln', to: [{ address: 'bob@example.test' }, { name: 'Dave', address: 'dave@example.test' }], inReplyTo: '<simple-1@sender.test>' });
    const bs = messages[1]!.bodyStructure!;
    expect(bs.type).toBe('multipart/mixed');
    expect(bs.childNodes!.map((n) => n.type)).toEqual(['multipart/alternative', 'application/pdf']);
    expect(bs.childNodes![1]).toMatchObject({ part: '2', encoding: 'base64', disposition: 'attachment', dispositionParameters: { filename: 'report.pdf' }, id: '<pdf@sender.test>' });
    expect(bs.childNodes![0]!.childNodes![0]).toMatchObject({ part: '1.1', type: 'text/plain', parameters: { charset: 'utf-8' }, lineCount: 2 });
    const fwd = messages[2]!.bodyStructure!.childNodes![1]!;
    expect(fwd).toMatchObject({ type: 'message/rfc822', envelope: { subject: 'Lunch on Friday' } });
    // imapflow fetches with BODY.PEEK, which leaves \Seen alone.
    expect((await f.store.messages(BOB, 'INBOX')).every((m) => !m.flags.includes('\\Seen'))).toBe(true);
    const part = await c.download('2', '1.1');
    const chunks: Buffer[] = [];
    for await (const chunk of part.content as AsyncIterable<Buffer>) chunks.push(chunk);
    const text = Buffer.concat(chunks).toString('utf8');
    expect(text).toBe('Schöne Grüße\r\nzweite Zeile');
  });

  test('flags, append with APPENDUID, copy and move with COPYUID, expunge', async () => {
    const c = await client();
    await c.mailboxOpen('INBOX');
    await c.messageFlagsAdd('1:2', ['\\Flagged', '$Work'], { uid: true });
    await c.messageFlagsRemove('2', ['\\Flagged'], { uid: true });
    const stored = await f.store.messages(BOB, 'INBOX');
    expect(stored.map((m) => [...m.flags].sort())).toEqual([['$Work', '\\Flagged'], ['$Work'], []]);

    const appended = await c.append('Drafts', Buffer.from('Subject: draft\r\n\r\nwork in progress\r\n'), ['\\Draft', '\\Seen'], new Date('2024-03-01T10:00:00Z'));
    expect(appended).toMatchObject({ destination: 'Drafts', uid: 1 });
    expect(Number((appended as { uidValidity?: bigint }).uidValidity)).toBe((await f.store.mailboxInfo(BOB, 'Drafts')).uidValidity);
    const drafts = await f.store.messages(BOB, 'Drafts');
    expect(drafts[0]).toMatchObject({ uid: 1, internalDate: Date.parse('2024-03-01T10:00:00Z') });
    expect([...drafts[0]!.flags].sort()).toEqual(['\\Draft', '\\Seen']);

    const copied = await c.messageCopy('1:2', 'Trash', { uid: true });
    expect(copied && [...copied.uidMap!]).toEqual([[1, 1], [2, 2]]);
    const moved = await c.messageMove('3', 'Junk', { uid: true });
    expect(moved && [...moved.uidMap!]).toEqual([[3, 1]]);
    expect(c.mailbox && c.mailbox.exists).toBe(2);
    expect((await f.store.messages(BOB, 'Junk')).length).toBe(1);

    expect(await c.messageDelete('1', { uid: true })).toBe(true);
    expect((await f.store.messages(BOB, 'INBOX')).map((m) => m.uid)).toEqual([2]);
    expect(c.mailbox && c.mailbox.exists).toBe(1);
  });

  test('a big message goes up as a literal and comes back intact', async () => {
    const c = await client();
    const line = 'x'.repeat(998) + '\r\n';
    const big = Buffer.from(`Subject: big\r\nContent-Type: text/plain\r\n\r\n${line.repeat(4000)}`);
    const appended = await c.append('INBOX', big);
    expect(appended && appended.uid).toBe(4);
    await c.mailboxOpen('INBOX');
    const msg = await c.fetchOne('4', { source: true, bodyStructure: true }, { uid: true });
    expect(msg && msg.source!.equals(big)).toBe(true);
    expect(msg && msg.bodyStructure).toMatchObject({ type: 'text/plain', size: line.length * 4000, lineCount: 4000 });
  });

  test('search', async () => {
    const c = await client();
    await c.mailboxOpen('INBOX');
    await c.messageFlagsAdd('2', ['\\Seen']);
    expect(await c.search({ from: 'alice' })).toEqual([1]);
    expect(await c.search({ seen: false })).toEqual([1, 3]);
    expect(await c.search({ subject: 'Grüße' })).toEqual([2]);
    expect(await c.search({ body: 'noon' })).toEqual([1, 3]);
    expect(await c.search({ since: new Date('2024-02-03T00:00:00Z') })).toEqual([2, 3]);
    expect(await c.search({ sentBefore: new Date('2024-02-03T00:00:00Z') })).toEqual([1]);
    expect(await c.search({ or: [{ to: 'erin' }, { header: { 'in-reply-to': 'simple-1' } }] }, { uid: true })).toEqual([2, 3]);
    expect(await c.search({ uid: '2:*', larger: 100 }, { uid: true })).toEqual([2, 3]);
    expect(await c.search({ not: { all: true } })).toEqual([]);
  });

  test('IDLE reports a delivery within a second, and a flag change from another client', async () => {
    const { logger, log } = logEvents();
    const a = await client(BOB, 'secret', logger);
    const b = await client();
    await a.mailboxOpen('INBOX');
    await b.mailboxOpen('INBOX');
    // Deliver only once the server has answered IDLE with "+": a delivery before that is announced when IDLE
    // starts (which is what the memory store, whose deliver() is synchronous, used to test), not pushed.
    const accepted = nextEvent<{ msg?: string }>(log, 'debug', 1000, (e) => !!e.msg?.startsWith('Initiated IDLE'));
    const idling = a.idle();
    await accepted;
    const exists = nextEvent<{ count: number }>(a, 'exists', 1000);
    const started = Date.now();
    await f.store.deliver(BOB, SIMPLE);
    expect((await exists).count).toBe(4);
    expect(Date.now() - started).toBeLessThan(1000);

    const flags = nextEvent<{ uid: number; flags: Set<string> }>(a, 'flags', 1000, (e) => e.uid === 2);
    await b.messageFlagsAdd('2', ['\\Answered'], { uid: true });
    expect((await flags).flags.has('\\Answered')).toBe(true);

    const expunge = nextEvent<{ seq: number }>(a, 'expunge', 1000);
    await b.messageDelete('1', { uid: true });
    expect((await expunge).seq).toBe(1);
    await a.noop();
    await idling;
    expect(a.mailbox && a.mailbox.exists).toBe(3);
  });

  test('two clients see each other\'s flag changes without IDLE', async () => {
    const a = await client();
    const b = await client();
    await a.mailboxOpen('INBOX');
    await b.mailboxOpen('INBOX');
    const flagsA = nextEvent<{ uid: number; flags: Set<string> }>(a, 'flags', 2000, (e) => e.uid === 1);
    await b.messageFlagsAdd('1', ['\\Seen', '$Done'], { uid: true });
    await a.noop();
    // a selected first, so the message is \Recent in its session.
    expect([...(await flagsA).flags].sort()).toEqual(['$Done', '\\Recent', '\\Seen']);
    const flagsB = nextEvent<{ uid: number; flags: Set<string> }>(b, 'flags', 2000, (e) => e.uid === 3);
    await a.messageFlagsSet('3', ['\\Flagged'], { uid: true });
    await b.noop();
    expect([...(await flagsB).flags]).toEqual(['\\Flagged']);
  });

  test('mailbox management', async () => {
    const c = await client();
    await c.mailboxCreate(['Projekte', 'Überblick']);
    expect((await f.store.listMailboxes(BOB)).map((m) => m.name)).toEqual(expect.arrayContaining(['Projekte', 'Projekte/Überblick']));
    await c.mailboxRename('Projekte', 'Archiv');
    const names = (await c.list()).map((m) => m.path);
    expect(names).toEqual(expect.arrayContaining(['Archiv', 'Archiv/Überblick']));
    expect(names).not.toContain('Projekte');
    await c.mailboxDelete('Archiv/Überblick');
    expect((await c.list()).map((m) => m.path)).not.toContain('Archiv/Überblick');
  });
});

describe.each(STORES)('other clients on the %s', (_name, makeStore) => {
  let f: Fixture;
  beforeEach(async () => {
    f = await startFixture(makeStore);
  });
  afterEach(async () => {
    await f.server.stop();
    await f.cleanup();
  });

  function run(cmd: string, args: string[], timeoutMs = 10_000): Promise<{ stdout: string; stderr: string; code: number }> {
    return new Promise((resolve) => {
      execFile(cmd, args, { timeout: timeoutMs }, (err, stdout, stderr) => {
        resolve({ stdout, stderr, code: err ? ((err as { code?: number }).code ?? 1) : 0 });
      });
    });
  }

  test("Python's imaplib", async () => {
    const script = `
import imaplib, sys
port = int(sys.argv[1])
m = imaplib.IMAP4('127.0.0.1', port)
print('caps', ' '.join(sorted(c for c in m.capabilities if c in ('IMAP4REV1', 'IDLE', 'UIDPLUS'))))
m.login('bob', 'secret')
typ, data = m.list()
print('list', len(data), any(b'\\\\Sent' in d for d in data))
typ, data = m.select('INBOX')
print('select', typ, data[0].decode())
typ, data = m.uid('search', None, 'FROM', '"alice"')
print('search', data[0].decode())
typ, data = m.fetch('1', '(RFC822)')
print('size', len(data[0][1]))
typ, data = m.fetch('2', '(BODY.PEEK[HEADER.FIELDS (SUBJECT)])')
print('subject', data[0][1].decode().strip())
typ, data = m.store('3', '+FLAGS', '(\\\\Flagged)')
print('store', typ, data[0].decode())
typ, data = m.append('Drafts', '(\\\\Draft)', None, b'Subject: from python\\r\\n\\r\\nhi\\r\\n')
print('append', typ, data[0].decode())
typ, data = m.copy('1:2', 'Trash')
print('copy', typ, data[0].decode())
m.store('1', '+FLAGS', '(\\\\Deleted)')
typ, data = m.expunge()
print('expunge', typ, data)
m.logout()
`;
    const { stdout, stderr, code } = await run('python3', ['-c', script, String(f.server.endpoint.port)]);
    expect(stderr).toBe('');
    expect(code).toBe(0);
    const lines = stdout.trim().split('\n');
    const trash = (await f.store.mailboxInfo(BOB, 'Trash')).uidValidity;
    const drafts = (await f.store.mailboxInfo(BOB, 'Drafts')).uidValidity;
    expect(lines).toEqual([
      'caps IDLE IMAP4REV1 UIDPLUS',
      'list 5 True',
      'select OK 3',
      'search 1',
      `size ${SIMPLE.length}`,
      'subject Subject: =?UTF-8?Q?Gr=C3=BC=C3=9Fe?= =?UTF-8?B?YXVzIEvDtmxu?=',
      'store OK 3 (FLAGS (\\Flagged \\Recent))',
      `append OK [APPENDUID ${drafts} 1] APPEND completed`,
      `copy OK [COPYUID ${trash} 1:2 1:2] COPY completed`,
      "expunge OK [b'1']",
    ]);
  });

  test('curl imap:// fetches a message by UID and lists mailboxes', async () => {
    const url = `imap://127.0.0.1:${f.server.endpoint.port}`;
    const fetched = await run('curl', ['-s', '-S', '--max-time', '5', `${url}/INBOX;UID=2`, '-u', 'bob@example.test:secret']);
    expect(fetched.stderr).toBe('');
    expect(fetched.stdout).toBe(MULTIPART.toString('utf8'));
    const listed = await run('curl', ['-s', '-S', '--max-time', '5', `${url}/`, '-u', 'bob:secret']);
    expect(listed.stdout).toContain('* LIST (\\HasNoChildren \\Sent) "/" "Sent"');
    const denied = await run('curl', ['-s', '-S', '--max-time', '5', `${url}/INBOX;UID=1`, '-u', 'bob:wrong']);
    expect(denied.code).not.toBe(0);
    expect(f.events.since(0).filter((e) => e.kind === 'auth-failed')).toHaveLength(1);
  });
});
