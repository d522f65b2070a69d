// UTF8=ACCEPT (RFC 6855): the capability and ENABLE (only before a mailbox is selected, RFC 5161 §3.1), mailbox names
// as UTF-8 in and out of every command that takes or gives one once enabled (§3) and as modified UTF-7 to sessions
// that did not enable it, "&" as an ordinary character then, UTF-8 in quoted strings (BAD when not UTF-8), APPEND's
// `UTF8 (literal8)` (§4, BAD without ENABLE), SEARCH with CHARSET BAD once enabled (§3); imapflow, which enables it.
// The raw client reads responses as Latin-1: `utf8()` turns them back into the UTF-8 text the server sent.
import { ImapFlow } from 'imapflow';
import { describe, expect, test } from 'vitest';
import { RawClient } from './raw-client.test-helper.js';
import { STORES, type StoreFactory } from './stores.test-helper.js';
import { BOB, useWire } from './wire.test-helper.js';

const utf8 = (lines: string[]) => lines.map((l) => Buffer.from(l, 'latin1').toString('utf8'));
const last = (lines: string[]) => lines[lines.length - 1]!;
const crlf = (...l: string[]) => l.map((x) => x + '\r\n').join('');
/** The mailboxes a store starts with (INBOX, and the special-use ones a store may create): left out of comparisons. */
const INITIAL = ['INBOX', 'Drafts', 'Junk', 'Sent', 'Trash'];
const created = (names: string[]) => names.filter((n) => !INITIAL.includes(n)).sort();
/** LIST / LSUB lines without those of the initial mailboxes. */
const own = (lines: string[]) => lines.filter((l) => !INITIAL.some((n) => l.endsWith(` "${n}"`)));

/** A message with UTF-8 headers (RFC 6532): an internationalised address and subject, unencoded. */
const EAI = Buffer.from(crlf('From: Jürgen <jürgen@bücher.example>', 'To: bob@example.test', 'Subject: Grüße aus Köln', 'Message-ID: <eai@bücher.example>', '', 'Hallo!'), 'utf8');

describe.each(STORES)('UTF8=ACCEPT on the %s', (_name, makeStore: StoreFactory) => {
  const wire = useWire(makeStore);

  const names = async () => created((await wire.store.listMailboxes(BOB)).map((m) => m.name));

  /** The wire's client (bob) with UTF8=ACCEPT enabled. */
  async function enable(): Promise<void> {
    expect(await wire.run('ENABLE UTF8=ACCEPT')).toEqual(['* ENABLED UTF8=ACCEPT', expect.stringMatching(/^t\d+ OK ENABLE completed$/)]);
  }

  /** Runs `fn` with a second session of bob's that has not enabled UTF8=ACCEPT. */
  async function legacy<T>(fn: (c: RawClient) => Promise<T>): Promise<T> {
    const c = await RawClient.login(wire.server.endpoint.port);
    try {
      return await fn(c);
    } finally {
      c.close();
    }
  }

  describe('capability and ENABLE', () => {
    test('advertised after login; ENABLE UTF8=ACCEPT answers ENABLED once however often it is named', async () => {
      const caps = (await wire.ok('CAPABILITY'))[0]!.split(' ');
      expect(caps).toContain('UTF8=ACCEPT');
      expect(caps).not.toContain('UTF8=ONLY');
      expect(await wire.run('ENABLE UTF8=ACCEPT utf8=accept CONDSTORE')).toEqual(['* ENABLED UTF8=ACCEPT CONDSTORE', expect.stringMatching(/ OK ENABLE completed$/)]);
      // Already enabled: nothing new to announce (RFC 5161 §3.1 lists only what this command enabled).
      expect((await wire.ok('ENABLE UTF8=ACCEPT'))[0]).toBe('* ENABLED UTF8=ACCEPT');
    });

    test('not before authentication', async () => {
      const c = await RawClient.connect(wire.server.endpoint.port);
      try {
        expect(await c.line()).toMatch(/^\* OK \[CAPABILITY .*\bUTF8=ACCEPT\b/);
        expect(await c.command('e', 'ENABLE UTF8=ACCEPT')).toEqual(['e BAD Log in first']);
        // Names stay modified UTF-7 after the login that follows.
        expect(last(await c.command('l', 'LOGIN bob@example.test secret'))).toMatch(/^l OK /);
        expect(last(await c.command('c', 'CREATE "Entw&APw-rfe"'))).toMatch(/^c OK /);
        expect(await c.command('s', 'LIST "" Entw*')).toEqual(['* LIST (\\HasNoChildren) "/" "Entw&APw-rfe"', 's OK LIST completed']);
      } finally {
        c.close();
      }
    });

    test('not once a mailbox is selected (RFC 5161 §3.1): left out of ENABLED, names stay modified UTF-7', async () => {
      await wire.store.createMailbox(BOB, 'Entwürfe');
      await wire.ok('SELECT INBOX');
      expect(await wire.ok('ENABLE UTF8=ACCEPT')).toEqual(['* ENABLED']);
      expect(await wire.ok('LIST "" Entw*')).toEqual(['* LIST (\\HasNoChildren) "/" "Entw&APw-rfe"']);
      // Back in the authenticated state (no mailbox selected), it is taken.
      await wire.ok('UNSELECT');
      expect(await wire.ok('ENABLE UTF8=ACCEPT')).toEqual(['* ENABLED UTF8=ACCEPT']);
    });
  });

  describe('mailbox names (§3)', () => {
    test('a mailbox created as "Entwürfe" in UTF-8 is listed in modified UTF-7 without ENABLE and in UTF-8 with it', async () => {
      await enable();
      await wire.ok('CREATE "Entwürfe"');
      expect(await names()).toEqual(['Entwürfe']);
      expect(own(utf8(await wire.ok('LIST "" *')))).toEqual(['* LIST (\\HasNoChildren) "/" "Entwürfe"']);
      expect(own(await legacy((c) => c.command('l', 'LIST "" *')))).toEqual(['* LIST (\\HasNoChildren) "/" "Entw&APw-rfe"', 'l OK LIST completed']);
      // A name made by the session without UTF-8, in modified UTF-7: the same name to the one with it.
      expect(last(await legacy((c) => c.command('c', 'CREATE "R&AOk-sum&AOk-/&AMQ-pfel"')))).toMatch(/^c OK /);
      expect(utf8(await wire.ok('LIST "" R%'))).toEqual([expect.stringMatching(/^\* LIST \(.*\\HasChildren\) "\/" "Résumé"$/)]);
      expect(utf8(await wire.ok('LIST "" "Résumé/%"'))).toEqual(['* LIST (\\HasNoChildren) "/" "Résumé/Äpfel"']);
    });

    test('every command that takes or gives a name: CREATE, SELECT, EXAMINE, STATUS, APPEND, COPY, MOVE, SUBSCRIBE, LSUB, LIST-EXTENDED, RENAME, DELETE', async () => {
      await enable();
      await wire.store.append(BOB, 'INBOX', Buffer.from('Subject: one\r\n\r\n1\r\n'));
      await wire.store.append(BOB, 'INBOX', Buffer.from('Subject: two\r\n\r\n2\r\n'));
      await wire.ok('CREATE "Entwürfe"');
      await wire.ok('CREATE "Gelöscht"');
      expect(last(await wire.run('APPEND "Entwürfe" {12+}\r\nSubject: x\r\n'))).toMatch(/^t\d+ OK \[APPENDUID \d+ 1\] APPEND completed$/);
      expect(utf8(await wire.ok('STATUS "Entwürfe" (MESSAGES UIDNEXT)'))).toEqual(['* STATUS "Entwürfe" (MESSAGES 1 UIDNEXT 2)']);
      await wire.ok('SELECT INBOX');
      expect(last(await wire.run('COPY 1 "Entwürfe"'))).toMatch(/OK \[COPYUID \d+ 1 2\]/);
      expect(last(await wire.run('MOVE 2 "Gelöscht"'))).toMatch(/OK/);
      expect((await wire.store.messages(BOB, 'Entwürfe')).length).toBe(2);
      expect((await wire.store.messages(BOB, 'Gelöscht')).length).toBe(1);
      expect(await wire.ok('EXAMINE "Entwürfe"')).toContain('* 2 EXISTS');
      expect(await wire.ok('SELECT "Entwürfe"')).toContain('* 2 EXISTS');
      await wire.ok('UNSELECT');
      await wire.ok('SUBSCRIBE "Entwürfe"');
      await wire.ok('SUBSCRIBE "Gelöscht"');
      expect(own(utf8(await wire.ok('LSUB "" *')))).toEqual(['* LSUB () "/" "Entwürfe"', '* LSUB () "/" "Gelöscht"']);
      await wire.ok('UNSUBSCRIBE "Gelöscht"');
      expect(utf8(await wire.ok('LIST (SUBSCRIBED) "" E* RETURN (STATUS (MESSAGES))'))).toEqual([
        '* LIST (\\HasNoChildren \\Subscribed) "/" "Entwürfe"',
        '* STATUS "Entwürfe" (MESSAGES 2)',
      ]);
      // A pattern in UTF-8 matches the names themselves, wildcards next to non-ASCII characters included.
      expect(utf8(await wire.ok('LIST "" "*ö*"'))).toEqual(['* LIST (\\HasNoChildren) "/" "Gelöscht"']);
      expect(utf8(await wire.ok('LIST "" "Entw%rfe"'))).toEqual(['* LIST (\\HasNoChildren) "/" "Entwürfe"']);
      await wire.ok('RENAME "Entwürfe" "Brouillons/Entwürfe à envoyer"');
      expect(utf8(await wire.ok('LIST "" "Brouillons/*"'))).toEqual(['* LIST (\\HasNoChildren) "/" "Brouillons/Entwürfe à envoyer"']);
      expect(await legacy((c) => c.command('l', 'LIST "" Brouillons/*'))).toEqual(['* LIST (\\HasNoChildren) "/" "Brouillons/Entw&APw-rfe &AOA- envoyer"', 'l OK LIST completed']);
      await wire.ok('DELETE "Gelöscht"');
      // Whether the store keeps the new parent as a mailbox of its own is the store's affair.
      expect((await names()).filter((n) => n !== 'Brouillons')).toEqual(['Brouillons/Entwürfe à envoyer']);
    });

    test('names as literals and as atoms', async () => {
      await enable();
      const name = Buffer.from('Ελληνικά', 'utf8');
      wire.client.send(Buffer.concat([Buffer.from(`x1 CREATE {${name.length}+}\r\n`), name, Buffer.from('\r\n')]));
      expect(last(await wire.client.until('x1'))).toBe('x1 OK CREATE completed');
      await wire.ok('CREATE Übersicht');
      expect(own(utf8(await wire.ok('LIST "" *')))).toEqual(['* LIST (\\HasNoChildren) "/" "Übersicht"', '* LIST (\\HasNoChildren) "/" "Ελληνικά"']);
    });

    test('"&" is an ordinary character once enabled: a name in modified UTF-7 form is taken as it is written', async () => {
      await enable();
      await wire.ok('CREATE "Tom & Jerry"');
      await wire.ok('CREATE "Entw&APw-rfe"');
      expect(await names()).toEqual(['Entw&APw-rfe', 'Tom & Jerry']);
      expect(own(utf8(await wire.ok('LIST "" *')))).toEqual(['* LIST (\\HasNoChildren) "/" "Entw&APw-rfe"', '* LIST (\\HasNoChildren) "/" "Tom & Jerry"']);
      // The other session reads them in modified UTF-7, where "&" is written "&-".
      expect(own(await legacy((c) => c.command('l', 'LIST "" *')))).toEqual([
        '* LIST (\\HasNoChildren) "/" "Entw&-APw-rfe"',
        '* LIST (\\HasNoChildren) "/" "Tom &- Jerry"',
        'l OK LIST completed',
      ]);
      // And the UTF-8 session cannot reach "Entwürfe" through its modified UTF-7 spelling.
      expect(last(await wire.run('SELECT "Entw&APw-rfe"'))).toMatch(/OK/);
      expect(last(await wire.run('STATUS "Entwürfe" (MESSAGES)'))).toMatch(/^t\d+ NO \[NONEXISTENT\]/);
    });

    test('names that are not UTF-8, or hold control characters or line / paragraph separators, are refused', async () => {
      await enable();
      // Not UTF-8 in a quoted string: BAD (§3); in a literal (any octets are a literal's right): NO [CANNOT].
      wire.client.send(Buffer.concat([Buffer.from('x1 CREATE "caf'), Buffer.from([0xe9]), Buffer.from('"\r\n')]));
      expect(await wire.client.until('x1')).toEqual(['x1 BAD Invalid UTF-8 in quoted string']);
      wire.client.send(Buffer.concat([Buffer.from('x2 CREATE {4+}\r\ncaf'), Buffer.from([0xe9]), Buffer.from('\r\n')]));
      expect(last(await wire.client.until('x2'))).toMatch(/^x2 NO \[CANNOT\] Invalid mailbox name/);
      for (const bad of ['a\u0085b', 'a\u2028b', 'a\u2029b', 'a\u007fb']) {
        const data = Buffer.from(bad, 'utf8');
        wire.client.send(Buffer.concat([Buffer.from(`x3 CREATE {${data.length}+}\r\n`), data, Buffer.from('\r\n')]));
        expect(last(await wire.client.until('x3')), JSON.stringify(bad)).toMatch(/^x3 NO \[CANNOT\] Invalid mailbox name/);
      }
      expect(await names()).toEqual([]);
    });

    test('without ENABLE a UTF-8 name is not a name (modified UTF-7 is): NO [CANNOT]', async () => {
      expect(last(await wire.run('CREATE "Entwürfe"'))).toMatch(/^t\d+ NO \[CANNOT\] Invalid mailbox name \(not modified UTF-7\)/);
      expect(await names()).toEqual([]);
    });
  });

  describe('APPEND UTF8 (§4)', () => {
    const utf8Append = (data: Buffer, tag: string, args = '') =>
      Buffer.concat([Buffer.from(`${tag} APPEND INBOX ${args}UTF8 (~{${data.length}+}\r\n`), data, Buffer.from(')\r\n')]);

    test('after ENABLE: a message with UTF-8 headers (RFC 6532) is stored as sent, octet for octet', async () => {
      await enable();
      wire.client.send(utf8Append(EAI, 'x1', '(\\Seen) "02-Mar-2024 10:00:00 +0000" '));
      expect(last(await wire.client.until('x1'))).toMatch(/^x1 OK \[APPENDUID \d+ 1\] APPEND completed$/);
      const [stored] = await wire.store.messages(BOB, 'INBOX');
      expect(stored!.flags).toEqual(['\\Seen']);
      expect(stored!.internalDate).toBe(Date.UTC(2024, 2, 2, 10, 0, 0));
      expect((await wire.store.read(BOB, 'INBOX', stored!.uid)).equals(EAI)).toBe(true);
      await wire.ok('SELECT INBOX');
      expect(utf8(await wire.ok('FETCH 1 BODY.PEEK[HEADER.FIELDS (SUBJECT)]')).join('\n')).toContain('Subject: Grüße aus Köln');
      // MULTIAPPEND with both forms in one command.
      wire.client.send(Buffer.concat([Buffer.from('x2 APPEND INBOX {14+}\r\nSubject: a\r\n\r\n '), utf8Append(EAI, '').subarray(' APPEND INBOX '.length)]));
      expect(last(await wire.client.until('x2'))).toMatch(/^x2 OK \[APPENDUID \d+ 2:3\]/);
    });

    test('without ENABLE: BAD, nothing stored', async () => {
      wire.client.send(utf8Append(EAI, 'x1'));
      expect(await wire.client.until('x1')).toEqual(['x1 BAD [CLIENTBUG] APPEND UTF8 without ENABLE UTF8=ACCEPT']);
      expect(await wire.store.messages(BOB, 'INBOX')).toEqual([]);
      // The connection is still in step.
      await wire.ok('NOOP');
    });

    test('the UTF8 item must hold a literal8', async () => {
      await enable();
      expect(last(await wire.run('APPEND INBOX UTF8 ({12+}\r\nSubject: x\r\n)'))).toMatch(/^t\d+ BAD Expected a literal8/);
      expect(await wire.store.messages(BOB, 'INBOX')).toEqual([]);
    });
  });

  describe('quoted strings and SEARCH (§3)', () => {
    test('SEARCH with a CHARSET is BAD once enabled (SEARCH, UID SEARCH, ESEARCH form); UTF-8 search words in quoted strings work', async () => {
      await wire.store.append(BOB, 'INBOX', EAI);
      await wire.store.append(BOB, 'INBOX', Buffer.from('Subject: plain\r\n\r\nx\r\n'));
      await wire.ok('SELECT INBOX');
      // Before ENABLE a charset may be named (RFC 3501 §6.4.4).
      expect(await wire.ok('SEARCH CHARSET UTF-8 SUBJECT "Grüße"')).toEqual(['* SEARCH 1']);
      await wire.ok('UNSELECT');
      await enable();
      await wire.ok('SELECT INBOX');
      expect(last(await wire.run('SEARCH CHARSET UTF-8 SUBJECT "Grüße"'))).toMatch(/^t\d+ BAD \[CLIENTBUG\] SEARCH with CHARSET after ENABLE UTF8=ACCEPT$/);
      expect(last(await wire.run('UID SEARCH CHARSET US-ASCII ALL'))).toMatch(/^t\d+ BAD \[CLIENTBUG\]/);
      expect(last(await wire.run('SEARCH RETURN (COUNT) CHARSET UTF-8 ALL'))).toMatch(/^t\d+ BAD \[CLIENTBUG\]/);
      expect(await wire.ok('SEARCH SUBJECT "Grüße aus"')).toEqual(['* SEARCH 1']);
      expect(await wire.ok('SEARCH FROM "jürgen@bücher.example"')).toEqual(['* SEARCH 1']);
      // Not UTF-8 in a quoted string: BAD.
      wire.client.send(Buffer.concat([Buffer.from('x1 SEARCH SUBJECT "Gr'), Buffer.from([0xfc]), Buffer.from('"\r\n')]));
      expect(await wire.client.until('x1')).toEqual(['x1 BAD Invalid UTF-8 in quoted string']);
      // SORT and THREAD name their charset by grammar (RFC 5256): still accepted.
      expect(await wire.ok('SORT (SUBJECT) UTF-8 ALL')).toEqual(['* SORT 1 2']);
    });
  });

  test('imapflow enables UTF8=ACCEPT, lists, creates and selects UTF-8 mailboxes, and searches in UTF-8', async () => {
    await wire.store.createMailbox(BOB, 'Entwürfe');
    await wire.store.append(BOB, 'Entwürfe', EAI);
    const c = new ImapFlow({ host: '127.0.0.1', port: wire.server.endpoint.port, secure: false, auth: { user: BOB, pass: 'secret' }, logger: false, disableAutoIdle: true });
    c.on('error', () => undefined);
    await c.connect();
    try {
      expect([...c.enabled]).toContain('UTF8=ACCEPT');
      expect(created((await c.list()).map((m) => m.path))).toEqual(['Entwürfe']);
      const box = await c.mailboxOpen('Entwürfe');
      expect(box.path).toBe('Entwürfe');
      expect(box.exists).toBe(1);
      expect(await c.search({ subject: 'Grüße' }, { uid: true })).toEqual([1]);
      const msg = await c.fetchOne('1', { envelope: true });
      expect(msg && msg.envelope?.subject).toBe('Grüße aus Köln');
      await c.mailboxClose();
      await c.mailboxCreate('Ordner mit Ümlaut');
      expect(await names()).toContain('Ordner mit Ümlaut');
      expect(await c.status('Ordner mit Ümlaut', { messages: true })).toMatchObject({ path: 'Ordner mit Ümlaut', messages: 0 });
      await c.mailboxRename('Ordner mit Ümlaut', 'Ordner/Ähnliches');
      expect((await c.list()).map((m) => m.path)).toContain('Ordner/Ähnliches');
    } finally {
      await c.logout().catch(() => undefined);
    }
  });
});
