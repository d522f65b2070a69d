// The server on the wire: raw command lines, literals, pipelining, error replies, and what other sessions see.
import { afterEach, beforeEach, describe, expect, test } from 'vitest';
import { EventLog } from '../../shared/events.js';
import type { MailStore } from '../store-api.js';
import { FORWARD, MULTIPART, SIMPLE } from './fixtures.test-helper.js';
import { startImap, type RunningImap } from './index.js';
import { RawClient } from './raw-client.test-helper.js';
import { STORES, type StoreFactory } from './stores.test-helper.js';

const BOB = 'bob@example.test';
let store: MailStore;
const cleanups: Array<() => Promise<void>> = [];
let server: RunningImap;
let events: EventLog;
let port: number;
const clients: RawClient[] = [];

async function login(): Promise<RawClient> {
  const c = await RawClient.login(port);
  clients.push(c);
  return c;
}

async function connect(): Promise<RawClient> {
  const c = await RawClient.connect(port);
  clients.push(c);
  return c;
}

async function selected(mailbox = 'INBOX'): Promise<RawClient> {
  const c = await login();
  const res = await c.command('S', `SELECT ${mailbox}`);
  expect(res[res.length - 1]).toMatch(/^S OK/);
  return c;
}

const last = (lines: string[]) => lines[lines.length - 1]!;

describe.each(STORES)('on the %s', (_name, makeStore: StoreFactory) => {
  async function start(options: { idleTimeoutMs?: number; maxAppendSize?: number } = {}) {
    const made = await makeStore([
      { address: BOB, password: 'secret' },
      { address: 'carol@example.test', password: 'p w"d' },
    ]);
    store = made.store;
    cleanups.push(made.cleanup);
    events = new EventLog('mailbox');
    server = await startImap({ store, host: '127.0.0.1', port: 0, hostname: 'imap.example.test', events, ...options });
    port = server.endpoint.port;
  }

  beforeEach(async () => {
    await start();
    await store.deliver(BOB, SIMPLE, { internalDate: Date.UTC(2024, 1, 2, 9, 0, 0) });
    await store.deliver(BOB, MULTIPART, { internalDate: Date.UTC(2024, 1, 3, 14, 0, 0) });
    await store.deliver(BOB, FORWARD, { internalDate: Date.UTC(2024, 1, 4, 12, 0, 0) });
  });

  afterEach(async () => {
    for (const c of clients.splice(0)) c.close();
    await server.stop();
    for (const cleanup of cleanups.splice(0)) await cleanup();
  });

  describe('connection and authentication', () => {
    test('greeting with capabilities; CAPABILITY; LOGOUT', async () => {
      const c = await connect();
      const greeting = await c.line();
      expect(greeting).toMatch(/^\* OK \[CAPABILITY IMAP4rev1 .*\] imap\.example\.test IMAP4rev1/);
      for (const cap of ['LITERAL+', 'SASL-IR', 'AUTH=PLAIN', 'IDLE', 'UIDPLUS', 'MOVE', 'NAMESPACE', 'ID', 'ENABLE', 'SPECIAL-USE', 'CONDSTORE', 'UNSELECT', 'CHILDREN']) {
        expect(greeting.split(/[ \]]/)).toContain(cap);
      }
      expect(greeting).not.toContain('LOGINDISABLED');
      expect(await c.command('a', 'CAPABILITY')).toEqual([expect.stringMatching(/^\* CAPABILITY IMAP4rev1 /), 'a OK CAPABILITY completed']);
      expect(await c.command('b', 'LOGOUT')).toEqual(['* BYE imap.example.test logging out', 'b OK LOGOUT completed']);
      await c.waitClosed();
    });

    test('LOGIN with quoted, literal and local-part names; failures; events', async () => {
      const c = await connect();
      await c.line();
      expect(last(await c.command('a', 'LOGIN bob wrong'))).toBe('a NO [AUTHENTICATIONFAILED] Authentication failed');
      expect(last(await c.command('b', 'SELECT INBOX'))).toBe('b BAD Log in first');
      c.send('c LOGIN {5}\r\n');
      expect(await c.line()).toMatch(/^\+ /);
      c.send('carol "p w\\"d"\r\n');
      expect(last(await c.until('c'))).toMatch(/^c OK \[CAPABILITY .*\] Logged in$/);
      expect(last(await c.command('d', 'LOGIN bob secret'))).toBe('d BAD Already authenticated');
      expect(events.since(0).map((e) => [e.kind, e.detail.user ?? e.detail.login])).toEqual([
        ['auth-failed', 'bob'],
        ['session', 'carol@example.test'],
      ]);
    });

    test('AUTHENTICATE PLAIN with SASL-IR, with a continuation, cancelled, with a wrong authzid', async () => {
      const b64 = (s: string) => Buffer.from(s).toString('base64');
      const c1 = await connect();
      await c1.line();
      expect(last(await c1.command('a', `AUTHENTICATE PLAIN ${b64('\0bob@example.test\0secret')}`))).toMatch(/^a OK \[CAPABILITY/);

      const c2 = await connect();
      await c2.line();
      c2.send('a AUTHENTICATE PLAIN\r\n');
      expect(await c2.line()).toBe('+ ');
      c2.send(`${b64('bob\0bob\0secret')}\r\n`);
      expect(last(await c2.until('a'))).toMatch(/^a OK/);

      const c3 = await connect();
      await c3.line();
      c3.send('a AUTHENTICATE PLAIN\r\n');
      await c3.line();
      c3.send('*\r\n');
      expect(last(await c3.until('a'))).toBe('a BAD Authentication cancelled');
      expect(last(await c3.command('b', `AUTHENTICATE PLAIN ${b64('carol\0bob\0secret')}`))).toMatch(/^b NO \[AUTHORIZATIONFAILED\]/);
      expect(last(await c3.command('c', 'AUTHENTICATE CRAM-MD5'))).toMatch(/^c NO Unsupported/);
      expect(last(await c3.command('d', 'AUTHENTICATE PLAIN !!!'))).toBe('d BAD Invalid base64');
    });

    test('autologout after the idle timeout', async () => {
      await server.stop();
      await start({ idleTimeoutMs: 150 });
      const c = await connect();
      await c.line();
      expect(await c.line(2000)).toBe('* BYE Autologout; idle for too long');
      await c.waitClosed();
    });
  });

  describe('command syntax and robustness', () => {
    test('pipelined commands are answered in order', async () => {
      const c = await login();
      c.send('p1 NOOP\r\np2 SELECT INBOX\r\np3 FETCH 1 (UID)\r\np4 UID FETCH 2 (FLAGS)\r\np5 CHECK\r\n');
      const lines = await c.until('p5');
      const tagged = lines.filter((l) => /^p\d /.test(l)).map((l) => l.slice(0, 5));
      expect(tagged).toEqual(['p1 OK', 'p2 OK', 'p3 OK', 'p4 OK', 'p5 OK']);
      expect(lines).toContain('* 1 FETCH (UID 1)');
      expect(lines).toContain('* 2 FETCH (UID 2 FLAGS (\\Recent))');
    });

    test('BAD with reasons for malformed commands', async () => {
      const c = await selected();
      expect(await c.command('a', 'FROB')).toEqual(['a BAD Unknown command FROB']);
      expect(await c.command('b', 'FETCH')).toEqual(['b BAD Missing arguments']);
      expect(await c.command('c', 'FETCH 1 (FLAGS BOGUS)')).toEqual(['c BAD Unknown fetch attribute BOGUS']);
      expect(await c.command('d', 'FETCH 9 FLAGS')).toEqual(['d BAD Message sequence number out of range']);
      expect(await c.command('e', 'UID FROB 1')).toEqual(['e BAD Unknown command UID FROB']);
      expect(await c.command('f', 'SEARCH CHARSET KOI8-R ALL')).toEqual(['f NO [BADCHARSET (UTF-8 US-ASCII)] Unsupported charset KOI8-R']);
      expect(await c.command('g', 'STORE 1 +FLAGS (\\Bogus)')).toEqual(['g BAD Invalid flag \\Bogus']);
      expect(await c.command('h', 'SELECT "unterminated')).toEqual(['h BAD Unterminated quoted string']);
      expect(await c.command('i', 'NOOP extra')).toEqual(['i BAD Unexpected characters at end of command: extra']);
      // Response text stays 7-bit even when echoing 8-bit input.
      expect(await c.command('i2', 'NOOP ü')).toEqual(['i2 BAD Unexpected characters at end of command: ??']);
      c.send('\r\n');
      expect(await c.line()).toBe('* BAD Empty command line');
      c.send('{bad tag NOOP\r\n');
      expect(await c.line()).toBe('* BAD Invalid tag');
      expect(await c.command('j', 'NOOP')).toEqual(['j OK NOOP completed']);
    });

    test('overlong lines and oversized literals are refused; the session carries on', async () => {
      const c = await selected();
      c.send(`long SEARCH SUBJECT ${'x'.repeat(70_000)}\r\n`);
      expect(await c.line()).toBe('long BAD Command line too long');
      c.send('lit SEARCH SUBJECT {100000}\r\n');
      expect(await c.line()).toMatch(/^lit BAD Literal too large/);
      expect(await c.command('ok', 'NOOP')).toEqual(['ok OK NOOP completed']);
    });

    test('APPEND: synchronizing and non-synchronizing literals, limits, fatal oversized LITERAL+', async () => {
      await server.stop();
      await start({ maxAppendSize: 1000 });
      const c = await login();
      const msg = 'Subject: appended\r\n\r\nbody\r\n';
      c.send(`a APPEND INBOX (\\Seen) " 5-Mar-2024 10:00:00 +0100" {${msg.length}}\r\n`);
      expect(await c.line()).toBe('+ Ready for literal data');
      c.send(msg + '\r\n');
      expect(await c.until('a')).toEqual([expect.stringMatching(/^a OK \[APPENDUID \d+ 1\] APPEND completed$/)]);
      c.send(`b APPEND INBOX {${msg.length}+}\r\n${msg}\r\n`);
      expect(await c.until('b')).toEqual([expect.stringMatching(/^b OK \[APPENDUID \d+ 2\]/)]);
      expect((await store.messages(BOB, 'INBOX')).slice(-1)[0]?.size).toBe(msg.length);
      expect(last(await c.command('c', `APPEND Nowhere {${msg.length}+}\r\n${msg}`))).toBe('c NO [TRYCREATE] Mailbox does not exist');
      expect(await c.command('d', 'APPEND INBOX {1001}')).toEqual(['d NO [TOOBIG] Literal too large (at most 1000 octets)']);
      c.send('e APPEND INBOX {1001+}\r\n' + 'x'.repeat(1001) + '\r\n');
      expect(await c.line()).toMatch(/^e NO \[TOOBIG\]/);
      expect(await c.command('f', 'NOOP')).toEqual(['f OK NOOP completed']);
      c.send('g APPEND INBOX {5000+}\r\n');
      expect(await c.line()).toBe('g BAD [TOOBIG] Literal too large');
      expect(await c.line()).toBe('* BYE Too much data');
      await c.waitClosed();
      // Unauthenticated clients get no big literals at all.
      const anon = await connect();
      await anon.line();
      expect(await anon.command('h', 'APPEND INBOX {70000}')).toEqual([expect.stringMatching(/^h NO \[TOOBIG\]/)]);
    });

    test('a misbehaving session does not disturb the others', async () => {
      const good = await selected();
      const bad = await connect();
      await bad.line();
      bad.send(Buffer.from([0, 1, 2, 0xff, 0x0d, 0x0a]));
      bad.send('x'.repeat(200_000));
      bad.send('\r\n* * *\r\n)(\r\n');
      const res = await good.command('a', 'FETCH 1:* (UID)');
      expect(res).toHaveLength(4);
      bad.close();
      expect(await good.command('b', 'NOOP')).toEqual(['b OK NOOP completed']);
    });

    test('quoting: 8-bit and CRLF data as literals, special characters in quoted strings, NIL', async () => {
      const c = await login();
      expect(last(await c.command('a', 'CREATE "Quote\\"d \\\\ name"'))).toBe('a OK CREATE completed');
      const list = await c.command('b', 'LIST "" "Quote*"');
      expect(list[0]).toBe('* LIST (\\HasNoChildren) "/" "Quote\\"d \\\\ name"');
      await c.command('s', 'SELECT INBOX');
      const env = await c.command('c', 'FETCH 2 (ENVELOPE BODY[1.1])');
      expect(env[0]).toContain('"=?UTF-8?Q?Gr=C3=BC=C3=9Fe?= =?UTF-8?B?YXVzIEvDtmxu?="');
      expect(env[0]).toContain('BODY[1.1] {41}\r\nSch=C3=B6ne Gr=C3=BC=C3=9Fe\r\nzweite Zeile');
      expect(env[0]).toMatch(/ NIL NIL NIL "<simple-1@sender.test>"|NIL "<simple-1@sender.test>" "<multi-2@sender.test>"/);
    });
  });

  describe('mailboxes', () => {
    test('LIST with special-use, CHILDREN, LIST-EXTENDED, LSUB, NAMESPACE', async () => {
      const c = await login();
      expect(await c.command('a', 'LIST "" ""')).toEqual(['* LIST (\\Noselect) "/" ""', 'a OK LIST completed']);
      await c.command('b', 'CREATE Projects/2024/Q1');
      const all = await c.command('c', 'LIST "" "*"');
      // Every mailbox, in LIST order, with its attributes.
      const expected: [string, string][] = [
        ['INBOX', '\\HasNoChildren'],
        ['Drafts', '\\HasNoChildren \\Drafts'],
        ['Junk', '\\HasNoChildren \\Junk'],
        ['Projects', '\\HasChildren'],
        ['Projects/2024', '\\HasChildren'],
        ['Projects/2024/Q1', '\\HasNoChildren'],
        ['Sent', '\\HasNoChildren \\Sent'],
        ['Trash', '\\HasNoChildren \\Trash'],
      ];
      expect(all).toEqual([...expected.map(([name, attributes]) => `* LIST (${attributes}) "/" "${name}"`), 'c OK LIST completed']);
      expect(await c.command('d', 'LIST "Projects/" %')).toEqual(['* LIST (\\HasChildren) "/" "Projects/2024"', 'd OK LIST completed']);
      expect(await c.command('e', 'LIST (SPECIAL-USE) "" "*"')).toHaveLength(5);
      expect(await c.command('f', 'LIST "" (inbox Sent) RETURN (SUBSCRIBED STATUS (MESSAGES UNSEEN))')).toEqual([
        '* LIST (\\HasNoChildren \\Subscribed) "/" "INBOX"',
        '* STATUS "INBOX" (MESSAGES 3 UNSEEN 3)',
        '* LIST (\\HasNoChildren \\Subscribed \\Sent) "/" "Sent"',
        '* STATUS "Sent" (MESSAGES 0 UNSEEN 0)',
        'f OK LIST completed',
      ]);
      await c.command('g', 'SUBSCRIBE Projects/2024/Q1');
      expect(await c.command('h', 'LSUB "" "Projects/%"')).toEqual(['* LSUB (\\Noselect) "/" "Projects/2024"', 'h OK LSUB completed']);
      expect(await c.command('i', 'LIST (SUBSCRIBED RECURSIVEMATCH) "" "Projects/%"')).toEqual([
        '* LIST (\\HasChildren) "/" "Projects/2024" ("CHILDINFO" ("SUBSCRIBED"))',
        'i OK LIST completed',
      ]);
      expect(await c.command('j', 'NAMESPACE')).toEqual(['* NAMESPACE (("" "/")) NIL NIL', 'j OK NAMESPACE completed']);
    });

    test('CREATE, RENAME (with children, INBOX), DELETE, SUBSCRIBE, STATUS; modified UTF-7 names', async () => {
      const c = await login();
      expect(last(await c.command('a', 'CREATE INBOX'))).toBe('a NO [ALREADYEXISTS] Mailbox already exists');
      expect(last(await c.command('b', 'CREATE "Entw&APw-rfe/"'))).toBe('b OK CREATE completed');
      expect((await store.listMailboxes(BOB)).map((m) => m.name)).toContain('Entwürfe');
      expect(last(await c.command('c', 'CREATE "&AGE-"'))).toMatch(/^c NO \[CANNOT\]/);
      expect(last(await c.command('d', 'CREATE "a*b"'))).toMatch(/^d NO \[CANNOT\]/);
      await c.command('e', 'CREATE Entw&APw-rfe/child');
      expect(last(await c.command('f', 'RENAME Entw&APw-rfe Old'))).toBe('f OK RENAME completed');
      expect((await store.listMailboxes(BOB)).map((m) => m.name)).toEqual(expect.arrayContaining(['Old', 'Old/child']));
      expect(last(await c.command('g', 'RENAME Nope Other'))).toBe('g NO [NONEXISTENT] Mailbox does not exist');
      expect(last(await c.command('h', 'RENAME Old Sent'))).toBe('h NO [ALREADYEXISTS] Target mailbox already exists');
      expect(last(await c.command('i', 'RENAME INBOX Archive/2024'))).toBe('i OK RENAME completed');
      expect(await c.command('j', 'STATUS Archive/2024 (MESSAGES UIDNEXT UNSEEN)')).toEqual(['* STATUS "Archive/2024" (MESSAGES 3 UIDNEXT 4 UNSEEN 3)', 'j OK STATUS completed']);
      expect((await c.command('k', 'STATUS INBOX (MESSAGES RECENT)'))[0]).toBe('* STATUS "INBOX" (MESSAGES 0 RECENT 0)');
      expect(last(await c.command('l', 'DELETE INBOX'))).toMatch(/^l NO \[CANNOT\]/);
      expect(last(await c.command('m', 'DELETE Old'))).toBe('m OK DELETE completed');
      expect(await c.command('n', 'LIST "" Old*')).toEqual(['* LIST (\\Noselect \\HasChildren) "/" "Old"', '* LIST (\\HasNoChildren) "/" "Old/child"', 'n OK LIST completed']);
      expect(last(await c.command('o', 'DELETE Old'))).toBe('o NO [NONEXISTENT] Mailbox does not exist');
      expect(last(await c.command('p', 'SUBSCRIBE Nope'))).toBe('p NO [NONEXISTENT] Mailbox does not exist');
      expect(last(await c.command('q', 'STATUS Nope (MESSAGES)'))).toBe('q NO [NONEXISTENT] Mailbox does not exist');
      expect(last(await c.command('r', 'STATUS INBOX (BOGUS)'))).toBe('r BAD Unknown STATUS item BOGUS');
    });

    test('SELECT and EXAMINE responses; UNSELECT; CLOSE expunges silently', async () => {
      const c = await login();
      await store.setFlags(BOB, 'INBOX', [1], ['\\Seen', '$Important'], 'add');
      const sel = await c.command('a', 'SELECT inbox (CONDSTORE)');
      const validity = (await store.mailboxInfo(BOB, 'INBOX')).uidValidity;
      expect(sel).toEqual([
        '* FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft $Important)',
        '* OK [PERMANENTFLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft $Important \\*)] Flags permitted',
        '* 3 EXISTS',
        '* 3 RECENT',
        '* OK [UNSEEN 2] First unseen',
        `* OK [UIDVALIDITY ${validity}] UIDs valid`,
        '* OK [UIDNEXT 4] Predicted next UID',
        expect.stringMatching(/^\* OK \[HIGHESTMODSEQ \d+\] /),
        'a OK [READ-WRITE] SELECT completed',
      ]);
      const ex = await c.command('b', 'EXAMINE INBOX');
      expect(ex).toContain('* OK [PERMANENTFLAGS ()] Read-only mailbox');
      expect(ex).toContain('* 0 RECENT');
      expect(last(ex)).toBe('b OK [READ-ONLY] EXAMINE completed');
      expect(last(await c.command('c', 'STORE 1 +FLAGS (\\Deleted)'))).toBe('c NO [READ-ONLY] Mailbox is read-only');
      expect(await c.command('d', 'FETCH 2 BODY[TEXT]<0.10>')).toEqual(['* 2 FETCH (BODY[TEXT]<0> {10}\r\nThis is th)', 'd OK FETCH completed']);
      expect((await store.messages(BOB, 'INBOX'))[1]!.flags).toEqual([]);
      expect(last(await c.command('e', 'UNSELECT'))).toBe('e OK UNSELECT completed');
      expect(last(await c.command('f', 'FETCH 1 FLAGS'))).toBe('f BAD No mailbox selected');
      await c.command('g', 'SELECT INBOX');
      await c.command('h', 'STORE 1:2 +FLAGS.SILENT (\\Deleted)');
      expect(await c.command('i', 'CLOSE')).toEqual(['i OK CLOSE completed']);
      expect((await store.messages(BOB, 'INBOX')).map((m) => m.uid)).toEqual([3]);
      expect(last(await c.command('j', 'SELECT Nope'))).toBe('j NO [NONEXISTENT] Mailbox does not exist');
      expect(last(await c.command('k', 'CHECK'))).toBe('k BAD No mailbox selected');
    });
  });

  describe('messages', () => {
    test('FETCH data items and macros', async () => {
      const c = await selected();
      const res = await c.command('a', 'FETCH 1 (UID FLAGS INTERNALDATE RFC822.SIZE)');
      expect(res[0]).toBe(`* 1 FETCH (UID 1 FLAGS (\\Recent) INTERNALDATE " 2-Feb-2024 09:00:00 +0000" RFC822.SIZE ${SIMPLE.length})`);
      expect((await c.command('b', 'FETCH 1 FAST'))[0]).toMatch(/^\* 1 FETCH \(FLAGS \(\\Recent\) INTERNALDATE "[^"]+" RFC822.SIZE \d+\)$/);
      expect((await c.command('c', 'FETCH 1 ALL'))[0]).toMatch(/ENVELOPE \("Fri, 02 Feb 2024 10:00:00 \+0100" "Lunch on Friday"/);
      expect((await c.command('d', 'FETCH 1 FULL'))[0]).toMatch(/ BODY \("TEXT" "PLAIN" \("CHARSET" "us-ascii"\) NIL NIL "7BIT" 31 2\)\)$/);
      expect((await c.command('e', 'FETCH 1 BODY.PEEK[HEADER.FIELDS (Subject From)]'))[0]).toBe(
        '* 1 FETCH (BODY[HEADER.FIELDS (Subject From)] {69}\r\nFrom: Alice Example <alice@sender.test>\r\nSubject: Lunch on Friday\r\n\r\n)',
      );
      expect((await c.command('f', 'FETCH 2 (BODY.PEEK[1.2.MIME] BODY.PEEK[4])'))[0]).toBe(
        '* 2 FETCH (BODY[1.2.MIME] {44}\r\nContent-Type: text/html; charset="utf-8"\r\n\r\n BODY[4] NIL)',
      );
      expect((await c.command('g', 'FETCH 3 (BODY.PEEK[2.HEADER.FIELDS.NOT (From To Date Message-ID)] RFC822.HEADER)'))[0]).toMatch(
        /^\* 3 FETCH \(BODY\[2.HEADER.FIELDS.NOT \(From To Date Message-ID\)\] \{28\}\r\nSubject: Lunch on Friday\r\n\r\n RFC822.HEADER \{\d+\}\r\nFrom: bob@example.test\r\n/,
      );
      expect((await c.command('h', 'FETCH 1 BODY.PEEK[]<10.5>'))[0]).toBe('* 1 FETCH (BODY[]<10> {5}\r\ne Exa)');
      expect((await c.command('i', 'FETCH 1 BODY.PEEK[]<9999.5>'))[0]).toBe('* 1 FETCH (BODY[]<9999> "")');
      // Nothing so far was more than a peek.
      expect((await store.messages(BOB, 'INBOX')).every((m) => m.flags.length === 0)).toBe(true);
      const text = await c.command('j', 'FETCH 1 RFC822.TEXT');
      expect(text[0]).toBe('* 1 FETCH (RFC822.TEXT {31}\r\nShall we meet at noon?\r\nAlice\r\n FLAGS (\\Seen \\Recent))');
      expect((await c.command('k', 'FETCH 1 (RFC822 FLAGS)'))[0]).toContain('FLAGS (\\Seen \\Recent)');
      const retrieved = events.since(0).filter((e) => e.kind === 'retrieved');
      // Whole messages or texts only: headers, parts and partial fetches are not retrievals.
      expect(retrieved.map((e) => e.detail)).toEqual([
        { user: BOB, mailbox: 'INBOX', uid: 1, protocol: 'imap', size: SIMPLE.length },
        { user: BOB, mailbox: 'INBOX', uid: 1, protocol: 'imap', size: SIMPLE.length },
      ]);
      expect(retrieved[0]!.messageId).toBe('<simple-1@sender.test>');
    });

    test('UID FETCH ranges, `*`, and UIDs that do not exist', async () => {
      const c = await selected();
      await store.remove(BOB, 'INBOX', [2]);
      await c.command('n', 'NOOP');
      expect(await c.command('a', 'UID FETCH 1:* FLAGS')).toEqual(['* 1 FETCH (UID 1 FLAGS (\\Recent))', '* 2 FETCH (UID 3 FLAGS (\\Recent))', 'a OK UID FETCH completed']);
      expect(await c.command('b', 'UID FETCH 2 FLAGS')).toEqual(['b OK UID FETCH completed']);
      expect(await c.command('c', 'UID FETCH 100:* UID')).toEqual(['* 2 FETCH (UID 3)', 'c OK UID FETCH completed']);
      expect(await c.command('d', 'FETCH * UID')).toEqual(['* 2 FETCH (UID 3)', 'd OK FETCH completed']);
    });

    test('SEARCH keys', async () => {
      const c = await selected();
      await store.setFlags(BOB, 'INBOX', [2], ['\\Flagged', '\\Seen', 'work'], 'add');
      await c.command('n', 'NOOP');
      const search = async (q: string) => {
        const res = await c.command('s', q);
        expect(last(res)).toMatch(/^s OK/);
        return res[0];
      };
      expect(await search('SEARCH ALL')).toBe('* SEARCH 1 2 3');
      expect(await search('SEARCH FLAGGED')).toBe('* SEARCH 2');
      expect(await search('SEARCH UNSEEN NOT KEYWORD work')).toBe('* SEARCH 1 3');
      expect(await search('SEARCH OR SUBJECT lunch FROM carol')).toBe('* SEARCH 1 2 3');
      expect(await search('SEARCH SUBJECT "Grüße"')).toBe('* SEARCH 2');
      expect(await search('SEARCH CHARSET UTF-8 BODY {7+}\r\nschöne')).toBe('* SEARCH 2');
      expect(await search('SEARCH TEXT "see below"')).toBe('* SEARCH 3');
      expect(await search('SEARCH TEXT schöne')).toBe('* SEARCH 2');
      expect(await search('SEARCH TEXT "in-reply-to"')).toBe('* SEARCH 2');
      expect(await search('SEARCH HEADER Message-ID multi-2')).toBe('* SEARCH 2');
      expect(await search('SEARCH HEADER In-Reply-To ""')).toBe('* SEARCH 2');
      expect(await search('SEARCH TO dave CC undisclosed')).toBe('* SEARCH 2');
      expect(await search('SEARCH BCC x')).toBe('* SEARCH');
      expect(await search('SEARCH SINCE 3-Feb-2024')).toBe('* SEARCH 2 3');
      expect(await search('SEARCH BEFORE 3-Feb-2024')).toBe('* SEARCH 1');
      expect(await search('SEARCH ON "3-Feb-2024"')).toBe('* SEARCH 2');
      expect(await search('SEARCH SENTON 2-Feb-2024')).toBe('* SEARCH 1');
      expect(await search('SEARCH SENTBEFORE 4-Feb-2024 SENTSINCE 3-Feb-2024')).toBe('* SEARCH 2');
      expect(await search(`SEARCH LARGER ${SIMPLE.length}`)).toBe('* SEARCH 2 3');
      expect(await search(`SEARCH SMALLER ${SIMPLE.length + 1}`)).toBe('* SEARCH 1');
      expect(await search('SEARCH 2:* NOT 3')).toBe('* SEARCH 2');
      expect(await search('SEARCH UID 2:3 (OR SEEN RECENT)')).toBe('* SEARCH 2 3');
      expect(await search('UID SEARCH NEW')).toBe('* SEARCH 1 3');
      expect(await search('UID SEARCH OLD')).toBe('* SEARCH');
      expect(await search('SEARCH ANSWERED')).toBe('* SEARCH');
      expect(await search('SEARCH UNDELETED UNDRAFT UNANSWERED UNFLAGGED')).toBe('* SEARCH 1 3');
      expect(await search('SEARCH MODSEQ 1')).toMatch(/^\* SEARCH 1 2 3 \(MODSEQ \d+\)$/);
    });

    test('STORE: modes, .SILENT, keywords in FLAGS, UNCHANGEDSINCE', async () => {
      const c = await selected();
      expect(await c.command('a', 'STORE 1 +FLAGS (\\Seen \\Flagged)')).toEqual(['* 1 FETCH (FLAGS (\\Flagged \\Seen \\Recent))', 'a OK STORE completed']);
      expect(await c.command('b', 'STORE 1 -FLAGS \\Flagged')).toEqual(['* 1 FETCH (FLAGS (\\Seen \\Recent))', 'b OK STORE completed']);
      expect(await c.command('c', 'UID STORE 2:3 FLAGS.SILENT (\\Answered)')).toEqual(['c OK UID STORE completed']);
      const kw = await c.command('d', 'STORE 3 +FLAGS ($Label1 \\recent)');
      // The new keyword is announced (FLAGS, PERMANENTFLAGS) before the FETCH that shows it (RFC 3501 §7.2.6).
      expect(kw).toEqual([
        '* FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft $Label1)',
        '* OK [PERMANENTFLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft $Label1 \\*)] Flags permitted',
        '* 3 FETCH (FLAGS (\\Answered $Label1 \\Recent))',
        'd OK STORE completed',
      ]);
      const modseq = (await store.messages(BOB, 'INBOX'))[0]!.modseq;
      await store.setFlags(BOB, 'INBOX', [2], ['\\Draft'], 'add');
      const cond = await c.command('e', `STORE 1:2 (UNCHANGEDSINCE ${modseq}) +FLAGS.SILENT (\\Deleted)`);
      expect(cond).toEqual([
        expect.stringMatching(/^\* 1 FETCH \(UID 1 MODSEQ \(\d+\)\)$/),
        expect.stringMatching(/^\* 2 FETCH \(UID 2 FLAGS \(\\Draft \\Answered \\Recent\) MODSEQ \(\d+\)\)$/),
        'e OK [MODIFIED 2] Conditional STORE failed',
      ]);
    });

    test('COPY, MOVE and UID EXPUNGE with UIDPLUS response codes', async () => {
      const c = await selected();
      const trash = (await store.mailboxInfo(BOB, 'Trash')).uidValidity;
      expect(await c.command('a', 'COPY 1:2 Trash')).toEqual([`a OK [COPYUID ${trash} 1:2 1:2] COPY completed`]);
      expect(await c.command('b', 'COPY 1 Nowhere')).toEqual(['b NO [TRYCREATE] Mailbox does not exist']);
      expect(await c.command('c', 'UID MOVE 2 Trash')).toEqual([`* OK [COPYUID ${trash} 2 3] Moved`, '* 2 EXPUNGE', 'c OK MOVE completed']);
      expect((await store.messages(BOB, 'Trash')).map((m) => m.uid)).toEqual([1, 2, 3]);
      await c.command('d', 'STORE 1:2 +FLAGS.SILENT (\\Deleted)');
      expect(await c.command('e', 'UID EXPUNGE 3')).toEqual(['* 2 EXPUNGE', 'e OK UID EXPUNGE completed']);
      expect(await c.command('f', 'EXPUNGE')).toEqual(['* 1 EXPUNGE', 'f OK EXPUNGE completed']);
      expect(await c.command('g', 'FETCH 1:* UID')).toEqual(['g OK FETCH completed']);
      expect(events.since(0).filter((e) => e.kind === 'deleted').map((e) => [e.detail.uid, e.messageId])).toEqual([
        [3, undefined], // the forward has no Message-ID
        [1, '<simple-1@sender.test>'],
      ]);
    });

    test('CONDSTORE: ENABLE, MODSEQ, CHANGEDSINCE, HIGHESTMODSEQ in STATUS', async () => {
      const c = await login();
      expect(await c.command('a', 'ENABLE CONDSTORE X-UNKNOWN')).toEqual(['* ENABLED CONDSTORE', 'a OK ENABLE completed']);
      await c.command('s', 'SELECT INBOX');
      const before = (await store.mailboxInfo(BOB, 'INBOX')).highestModseq;
      await store.setFlags(BOB, 'INBOX', [3], ['\\Seen'], 'add');
      const noop = await c.command('b', 'NOOP');
      expect(noop[0]).toMatch(/^\* 3 FETCH \(UID 3 FLAGS \(\\Seen \\Recent\) MODSEQ \(\d+\)\)$/);
      expect(await c.command('c', `FETCH 1:* (FLAGS) (CHANGEDSINCE ${before})`)).toEqual([
        expect.stringMatching(/^\* 3 FETCH \(FLAGS \(\\Seen \\Recent\) MODSEQ \(\d+\)\)$/),
        'c OK FETCH completed',
      ]);
      expect((await c.command('d', 'FETCH 1 MODSEQ'))[0]).toMatch(/^\* 1 FETCH \(MODSEQ \(\d+\)\)$/);
      expect((await c.command('e', 'STATUS INBOX (HIGHESTMODSEQ)'))[0]).toMatch(/^\* STATUS "INBOX" \(HIGHESTMODSEQ \d+\)$/);
    });

    test('ID, NOOP and CHECK in any state', async () => {
      const c = await connect();
      await c.line();
      expect(await c.command('a', 'ID ("name" "raw-test" "version" NIL)')).toEqual([expect.stringMatching(/^\* ID \("name" "maillab"/), 'a OK ID completed']);
      expect(await c.command('b', 'ID NIL')).toHaveLength(2);
      expect(await c.command('c', 'NOOP')).toEqual(['c OK NOOP completed']);
    });
  });

  describe('several sessions on one mailbox', () => {
    test('flag changes and new messages are announced after commands', async () => {
      const a = await selected();
      const b = await selected();
      await b.command('x', 'STORE 1 +FLAGS (\\Flagged)');
      await store.deliver(BOB, SIMPLE);
      const res = await a.command('n', 'NOOP');
      // a selected first: all messages, the new one too, are \Recent there and nowhere else.
      expect(res).toEqual(['* 4 EXISTS', '* 4 RECENT', '* 1 FETCH (UID 1 FLAGS (\\Flagged \\Recent))', 'n OK NOOP completed']);
      expect(await b.command('n', 'NOOP')).toEqual(['* 4 EXISTS', '* 0 RECENT', 'n OK NOOP completed']);
    });

    test('EXPUNGE is held back during FETCH, STORE and SEARCH and sent after NOOP', async () => {
      const a = await selected();
      const b = await selected();
      await b.command('x', 'STORE 2 +FLAGS.SILENT (\\Deleted)');
      expect(await b.command('y', 'EXPUNGE')).toEqual(['* 2 EXPUNGE', 'y OK EXPUNGE completed']);
      // a still numbers the messages 1..3; the expunged one is skipped.
      expect(await a.command('f', 'FETCH 1:3 (UID)')).toEqual([
        '* 1 FETCH (UID 1)',
        '* 2 FETCH (FLAGS (\\Deleted \\Recent) UID 2)'.replace(/.*/, '* 3 FETCH (UID 3)'),
        'f OK [EXPUNGEISSUED] Some messages were expunged meanwhile',
      ]);
      expect(await a.command('s', 'SEARCH ALL')).toEqual(['* SEARCH 1 3', 's OK SEARCH completed']);
      expect(await a.command('t', 'STORE 3 +FLAGS.SILENT (\\Seen)')).toEqual(['t OK STORE completed']);
      // Pipelined: UID FETCH followed by a sequence-number command keeps the EXPUNGE back too.
      a.send('u1 UID FETCH 3 UID\r\nu2 FETCH 3 UID\r\n');
      expect(await a.until('u2')).toEqual(['* 3 FETCH (UID 3)', 'u1 OK UID FETCH completed', '* 3 FETCH (UID 3)', 'u2 OK FETCH completed']);
      expect(await a.command('n', 'NOOP')).toEqual(['* 2 EXPUNGE', 'n OK NOOP completed']);
      expect(await a.command('g', 'FETCH 2 UID')).toEqual(['* 2 FETCH (UID 3)', 'g OK FETCH completed']);
    });

    test('IDLE pushes deliveries, flag changes and expunges at once', async () => {
      const a = await selected();
      const b = await selected();
      a.send('i IDLE\r\n');
      expect(await a.line()).toBe('+ idling');
      await store.deliver(BOB, SIMPLE);
      expect(await a.line(1000)).toBe('* 4 EXISTS');
      expect(await a.line(1000)).toBe('* 4 RECENT');
      await b.command('x', 'STORE 1 +FLAGS (\\Deleted)');
      expect(await a.line(1000)).toBe('* 1 FETCH (UID 1 FLAGS (\\Deleted \\Recent))');
      await b.command('y', 'EXPUNGE');
      expect(await a.line(1000)).toBe('* 1 EXPUNGE');
      a.send('DONE\r\n');
      expect(await a.until('i')).toEqual(['i OK IDLE terminated']);
      a.send('j IDLE\r\n');
      await a.line();
      a.send('NOT-DONE\r\n');
      expect(await a.until('j')).toEqual(['j BAD Expected DONE']);
    });

    test('a session whose mailbox is deleted elsewhere is disconnected', async () => {
      const other = await login();
      await other.command('c', 'CREATE Temp');
      const a = await selected('Temp');
      await other.command('d', 'DELETE Temp');
      a.send('n NOOP\r\n');
      expect(await a.line()).toBe('* BYE Selected mailbox was deleted, have to disconnect');
      await a.waitClosed();
    });

    test('shutdown lets the session go with BYE', async () => {
      const a = await selected();
      a.send('i IDLE\r\n');
      await a.line();
      await server.stop();
      expect(await a.line()).toBe('* BYE Server shutting down');
      await a.waitClosed();
      server = await startImap({ store, host: '127.0.0.1', port: 0, hostname: 'x' });
    });
  });
});
