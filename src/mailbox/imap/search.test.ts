// SEARCH: header keys as RFC 3501 §6.4.4 defines them (case-insensitive substrings of the field, addresses in
// every form a client shows them, encoded words decoded), CHARSET, and ESEARCH (RFC 4731).
import iconv from 'iconv-lite';
import { beforeEach, describe, expect, test } from 'vitest';
import { parseMessage } from './mime.js';
import { Reader, type Frame } from './parser.js';
import { esearchResponse, matches, parseSearch, type SearchMessage } from './search.js';
import { ImapFlow } from 'imapflow';
import { USER, useMemoryServer } from './memory-server.test-helper.js';
import type { RawClient } from './raw-client.test-helper.js';

const crlf = (lines: string[]) => Buffer.from(lines.join('\r\n') + '\r\n', 'utf8');
const message = (headers: string[], body = 'body') => crlf([...headers, '', body]);

/** Runs a search program (the text after `SEARCH `, literals as extra arguments) over messages; returns sequence numbers. */
function search(messages: Buffer[], program: string, ...literals: Buffer[]): number[] {
  const lines = program.split(/\{\d+\+?\}/).map((l) => Buffer.from(l, 'utf8'));
  const frame: Frame = { lines, literals };
  const key = parseSearch(new Reader(frame));
  const ctx = { maxSeq: messages.length, maxUid: messages.length };
  return messages.flatMap((raw, i) => {
    const m: SearchMessage = { seq: i + 1, uid: i + 1, flags: [], recent: false, size: raw.length, internalDate: 0, modseq: 1, raw, tree: parseMessage(raw) };
    return matches(key, m, ctx) ? [i + 1] : [];
  });
}

// Dovecot imaptest's search-addresses mailbox (src/tests/search-addresses.mbox), the reference suite that found it.
const ADDRESSES = [
  message(['From: user-from@domain.org', 'To: user-to@domain.org', 'Cc: user-cc@domain.org', 'Bcc: user-bcc@domain.org']),
  message(['From: RealFrom <user-from@domain.org>', 'To: RealTo <user-to@domain.org>', 'Cc: RealCc <user-cc@domain.org>', 'Bcc: RealBcc <user-bcc@domain.org>']),
  message(['From: <user-from (comment)@ (comment) domain.org>', 'To: <user-to@domain.org>', 'Cc: <user-cc@domain.org>', 'Bcc: <user-bcc@domain.org>']),
  message(['From: user-from@domain.org (RealFrom)', 'To: user-to@domain.org (RealTo)', 'Cc: user-cc@domain.org (RealCc)', 'Bcc: user-bcc@domain.org (RealBcc)']),
  message(['From: user-from1@domain.org, user-from2@domain.org', 'Cc: user-cc@domain.org']),
  message(['To: groupname: groupuser1@domain.org, groupuser2@domain.org;,', '  groupname2: groupuser3@domain.org;']),
];

describe('SEARCH by address (issue 10, finding 4)', () => {
  test('SEARCH FROM user-from@domain.org finds the address written with comments inside', () => {
    // Before the fix: [1, 2, 4] — message 3's From is `<user-from (comment)@ (comment) domain.org>`.
    expect(search(ADDRESSES, 'FROM user-from@domain.org')).toEqual([1, 2, 3, 4]);
  });

  test("imaptest's search-addresses script, every query", () => {
    const cases: Array<[string, number[]]> = [
      ['FROM user-from@domain.org', [1, 2, 3, 4]],
      ['TO user-to@domain.org', [1, 2, 3, 4]],
      ['CC user-cc@domain.org', [1, 2, 3, 4, 5]],
      ['BCC user-bcc@domain.org', [1, 2, 3, 4]],
      ['FROM realfrom', [2, 4]],
      ['TO realto', [2, 4]],
      ['CC realcc', [2, 4]],
      ['BCC realbcc', [2, 4]],
      ['HEADER from ""', [1, 2, 3, 4, 5]],
      ['HEADER to ""', [1, 2, 3, 4, 6]],
      ['HEADER cc ""', [1, 2, 3, 4, 5]],
      ['HEADER bcc ""', [1, 2, 3, 4]],
      ['FROM ser-fro', [1, 2, 3, 4, 5]],
      ['TO ser-t', [1, 2, 3, 4]],
      ['CC ser-c', [1, 2, 3, 4, 5]],
      ['BCC ser-bc', [1, 2, 3, 4]],
      ['FROM ealfro', [2, 4]],
      ['TO ealt', [2, 4]],
      ['CC ealc', [2, 4]],
      ['BCC ealbc', [2, 4]],
      ['FROM user-from1', [5]],
      ['FROM user-from2', [5]],
      ['TO groupname', [6]],
      ['TO groupname2', [6]],
      ['TO groupuser1', [6]],
      ['TO groupuser2', [6]],
      ['TO groupuser3', [6]],
      ['TO groupuser4', []],
    ];
    for (const [program, expected] of cases) expect(search(ADDRESSES, program), program).toEqual(expected);
  });

  test('display names, addresses and both together, in any case', () => {
    const msgs = [
      message(['From: "Doe, Jane" <Jane.Doe@Example.ORG>']),
      message(['From: jane.doe@example.org']),
      message(['From: John Roe <john@example.org>']),
    ];
    expect(search(msgs, 'FROM jane.doe@example.org')).toEqual([1, 2]);
    expect(search(msgs, 'FROM "JANE.DOE@EXAMPLE.ORG"')).toEqual([1, 2]);
    expect(search(msgs, 'FROM "doe, jane"')).toEqual([1]);
    expect(search(msgs, 'FROM "Doe, Jane <jane.doe@"')).toEqual([1]);
    expect(search(msgs, 'FROM "John Roe <john@example.org>"')).toEqual([3]);
    expect(search(msgs, 'FROM example.org')).toEqual([1, 2, 3]);
    expect(search(msgs, 'NOT FROM jane')).toEqual([3]);
  });

  test('group syntax: the group name and its members; an empty group', () => {
    const msgs = [message(['To: Friends: a@x.test, "B B" <b@y.test>;, c@z.test']), message(['Cc: undisclosed-recipients:;'])];
    expect(search(msgs, 'TO friends')).toEqual([1]);
    expect(search(msgs, 'TO "b b <b@y.test>"')).toEqual([1]);
    expect(search(msgs, 'TO c@z.test')).toEqual([1]);
    expect(search(msgs, 'CC undisclosed-recipients')).toEqual([2]);
    expect(search(msgs, 'CC MISSING')).toEqual([]);
  });

  test('folded lines are unfolded', () => {
    const msgs = [message(['To: Alice Example', ' <alice@example.test>,', '\tBob <bob@example.test>', 'Subject: a long', '  subject line'])];
    expect(search(msgs, 'TO "Alice Example <alice@example.test>"')).toEqual([1]);
    expect(search(msgs, 'TO "bob@example.test"')).toEqual([1]);
    expect(search(msgs, 'SUBJECT "long  subject"')).toEqual([1]);
  });

  test('RFC 2047 encoded words, B and Q, in display names, quoted strings and subjects', () => {
    const msgs = [
      message(['From: =?UTF-8?Q?J=C3=BCrgen_M=C3=BCller?= <juergen@example.de>']),
      message(['From: =?iso-8859-1?q?Fran=E7ois?= <f@example.fr>']),
      message(['From: "=?UTF-8?B?5bGx55Sw?=" <yamada@example.jp>']),
      // One character split over two encoded words (é = C3 A9), the space between them dropped (§6.2).
      message(['Subject: =?UTF-8?B?Y2Fmw6k=?= =?utf-8?Q?_cr=C3?=', ' =?UTF-8?Q?=A8me?=']),
      message(['Subject: =?UTF-8*fr?Q?d=C3=A9j=C3=A0?= vu']),
    ];
    expect(search(msgs, 'FROM "jürgen müller"')).toEqual([1]);
    expect(search(msgs, 'FROM "JÜRGEN"')).toEqual([1]);
    expect(search(msgs, 'FROM "Jürgen Müller <juergen@example.de>"')).toEqual([1]);
    expect(search(msgs, 'FROM françois')).toEqual([2]);
    expect(search(msgs, 'FROM 山田')).toEqual([3]);
    expect(search(msgs, 'SUBJECT "café crème"')).toEqual([4]);
    expect(search(msgs, 'SUBJECT "déjà vu"')).toEqual([5]);
  });

  test('encoded words in other charsets (TextDecoder and iconv-lite)', () => {
    const word = (charset: string, text: string) => `=?${charset}?B?${iconv.encode(text, charset).toString('base64')}?=`;
    const msgs = [
      message([`From: ${word('KOI8-R', 'Иван Петров')} <ivan@example.ru>`]),
      // 鈴木 in ISO-2022-JP (Python's codec; iconv-lite cannot encode it).
      message(['From: =?ISO-2022-JP?B?GyRCTmtMWhsoQg==?= <suzuki@example.jp>']),
      message([`From: ${word('Shift_JIS', '佐藤')} <sato@example.jp>`]),
      message([`Subject: ${word('windows-1252', '€uro')}`]),
      message(['Subject: =?UTF-7?Q?caf+AOk-?=']),
      message([`Subject: ${word('GB18030', '你好')}`]),
      message(['Subject: =?x-unknown?Q?plain?=']),
    ];
    expect(search(msgs, 'FROM "иван петров"')).toEqual([1]);
    expect(search(msgs, 'FROM 鈴木')).toEqual([2]);
    expect(search(msgs, 'FROM 佐藤')).toEqual([3]);
    expect(search(msgs, 'SUBJECT €uro')).toEqual([4]);
    expect(search(msgs, 'SUBJECT café')).toEqual([5]);
    expect(search(msgs, 'SUBJECT 你好')).toEqual([6]);
    expect(search(msgs, 'SUBJECT plain')).toEqual([7]);
  });

  test('raw 8-bit headers: UTF-8 when valid, else as Latin-1', () => {
    const msgs = [
      Buffer.from('From: Zoë <zoe@example.test>\r\n\r\nx\r\n', 'utf8'),
      Buffer.from('From: Zo\xeb <zoe@example.test>\r\n\r\nx\r\n', 'latin1'),
    ];
    expect(search(msgs, 'FROM zoë')).toEqual([1, 2]);
  });

  test('HEADER on an address field finds the same forms; other fields by their decoded value', () => {
    expect(search(ADDRESSES, 'HEADER From user-from@domain.org')).toEqual([1, 2, 3, 4]);
    const msgs = [message(['X-Note: =?UTF-8?Q?gr=C3=BC=C3=9Fe?=', 'Reply-To: <list (the list)@ lists.example>'])];
    expect(search(msgs, 'HEADER x-note grüße')).toEqual([1]);
    expect(search(msgs, 'HEADER Reply-To list@lists.example')).toEqual([1]);
  });

  test('CHARSET: UTF-8 and US-ASCII, quoted or not, any case; a literal search string', () => {
    const msgs = [message(['From: =?UTF-8?Q?J=C3=BCrgen?= <j@example.de>']), message(['From: plain@example.test'])];
    const juergen = Buffer.from('jürgen', 'utf8');
    expect(search(msgs, `CHARSET UTF-8 FROM {${juergen.length}}`, juergen)).toEqual([1]);
    expect(search(msgs, `CHARSET "utf-8" FROM {${juergen.length}+}`, juergen)).toEqual([1]);
    expect(search(msgs, 'CHARSET us-ascii FROM plain')).toEqual([2]);
    expect(() => search(msgs, 'CHARSET ISO-8859-1 FROM x')).toThrow(/ISO-8859-1/);
  });
});

describe('SEARCH on the wire', () => {
  const client = useMemoryServer(async (store, user) => {
    for (const raw of ADDRESSES) await store.deliver(user, raw, {});
    await store.deliver(user, message(['From: =?UTF-8?Q?J=C3=BCrgen?= <j@example.de>']), {});
  });
  let c: RawClient;
  beforeEach(async () => {
    c = client();
    expect((await c.command('s', 'SELECT INBOX')).pop()).toMatch(/^s OK/);
  });

  test('SEARCH FROM user-from@domain.org', async () => {
    expect(await c.command('a', 'SEARCH FROM user-from@domain.org')).toEqual(['* SEARCH 1 2 3 4', 'a OK SEARCH completed']);
    expect(await c.command('b', 'UID SEARCH FROM "user-from@domain.org"')).toEqual(['* SEARCH 1 2 3 4', 'b OK UID SEARCH completed']);
  });

  test('SEARCH CHARSET UTF-8 with a literal, synchronizing and not; an unknown charset is NO [BADCHARSET]', async () => {
    c.send('l1 SEARCH CHARSET UTF-8 FROM {7}\r\n');
    expect(await c.line()).toMatch(/^\+ /);
    c.send(Buffer.from('jürgen\r\n', 'utf8'));
    expect(await c.until('l1')).toEqual(['* SEARCH 7', 'l1 OK SEARCH completed']);
    c.send(Buffer.concat([Buffer.from('l2 UID SEARCH CHARSET "utf-8" FROM {7+}\r\n'), Buffer.from('JÜRGEN\r\n', 'utf8').subarray(0, 7), Buffer.from('\r\n')]));
    expect(await c.until('l2')).toEqual(['* SEARCH 7', 'l2 OK UID SEARCH completed']);
    expect(await c.command('l3', 'SEARCH CHARSET KOI8-R FROM x')).toEqual(['l3 NO [BADCHARSET (UTF-8 US-ASCII)] Unsupported charset KOI8-R']);
    expect(await c.command('l4', 'SEARCH CHARSET US-ASCII FROM realfrom')).toEqual(['* SEARCH 2 4', 'l4 OK SEARCH completed']);
  });
});

describe('ESEARCH (RFC 4731)', () => {
  const DAY = 86_400_000;
  // RFC 4731 §3.1's mailbox: FLAGGED SINCE 1-Feb-1994 NOT FROM "Smith" matches 2, 10 and 11 of eleven messages.
  const client = useMemoryServer(async (store, user) => {
    for (let n = 1; n <= 11; n++) {
      const from = n === 3 || n === 7 ? 'John Smith <smith@example.test>' : `Sender ${n} <s${n}@example.test>`;
      const internalDate = n === 5 ? Date.UTC(1994, 0, 31) : Date.UTC(1994, 1, 1) + n * DAY;
      const msg = await store.deliver(user, message([`From: ${from}`, `Subject: message ${n}`]), { internalDate });
      if ([2, 3, 5, 10, 11].includes(n)) await store.setFlags(user, 'INBOX', [msg.uid], ['\\Flagged'], 'add');
    }
  });
  let c: RawClient;
  beforeEach(async () => {
    c = client();
    expect((await c.command('s', 'SELECT INBOX')).pop()).toMatch(/^s OK/);
  });

  test('CAPABILITY advertises ESEARCH', async () => {
    expect((await c.command('k', 'CAPABILITY'))[0]!.split(' ')).toContain('ESEARCH');
  });

  test('RFC 4731 §3.1: RETURN (MIN COUNT), RETURN () and RETURN (MIN)', async () => {
    const criteria = 'FLAGGED SINCE 1-Feb-1994 NOT FROM "Smith"';
    expect(await c.command('A282', `SEARCH RETURN (MIN COUNT) ${criteria}`)).toEqual(['* ESEARCH (TAG "A282") MIN 2 COUNT 3', 'A282 OK SEARCH completed']);
    expect(await c.command('A283', `SEARCH RETURN () ${criteria}`)).toEqual(['* ESEARCH (TAG "A283") ALL 2,10:11', 'A283 OK SEARCH completed']);
    expect(await c.command('A284', `SEARCH RETURN (MIN) ${criteria}`)).toEqual(['* ESEARCH (TAG "A284") MIN 2', 'A284 OK SEARCH completed']);
    expect(await c.command('A285', 'UID SEARCH RETURN (MIN MAX) 1:5000')).toEqual(['* ESEARCH (TAG "A285") UID MIN 1 MAX 11', 'A285 OK UID SEARCH completed']);
  });

  test('RFC 4731 §3.1: UID SEARCH RETURN (MIN MAX) gives UIDs (the example: MIN 7 MAX 3800)', () => {
    const hits = [7, 100, 3800].map((n) => ({ n, modseq: 1 }));
    expect(esearchResponse('A285', true, ['MIN', 'MAX'], hits, false)).toBe('* ESEARCH (TAG "A285") UID MIN 7 MAX 3800');
  });

  test('all four options, their order fixed; ALL compressed; UID form', async () => {
    expect(await c.command('a', 'SEARCH RETURN (ALL COUNT MAX MIN) FLAGGED')).toEqual(['* ESEARCH (TAG "a") MIN 2 MAX 11 ALL 2:3,5,10:11 COUNT 5', 'a OK SEARCH completed']);
    expect(await c.command('b', 'UID SEARCH RETURN (ALL) 1:3,5,6:8 NOT 7')).toEqual(['* ESEARCH (TAG "b") UID ALL 1:3,5:6,8', 'b OK UID SEARCH completed']);
    expect(await c.command('c', 'SEARCH RETURN (COUNT) ALL')).toEqual(['* ESEARCH (TAG "c") COUNT 11', 'c OK SEARCH completed']);
  });

  test('no match: MIN, MAX and ALL left out, COUNT 0', async () => {
    expect(await c.command('d', 'SEARCH RETURN (MIN MAX ALL COUNT) FROM nobody')).toEqual(['* ESEARCH (TAG "d") COUNT 0', 'd OK SEARCH completed']);
    expect(await c.command('e', 'UID SEARCH RETURN () FROM nobody')).toEqual(['* ESEARCH (TAG "e") UID', 'e OK UID SEARCH completed']);
    // A sequence number past the end matches nothing and is no error (imaptest's esearch script).
    expect(await c.command('e2', 'SEARCH RETURN (MAX) 1000')).toEqual(['* ESEARCH (TAG "e2")', 'e2 OK SEARCH completed']);
    expect(await c.command('e3', 'UID SEARCH RETURN (COUNT) 1000')).toEqual(['* ESEARCH (TAG "e3") UID COUNT 0', 'e3 OK UID SEARCH completed']);
  });

  test('RETURN with CHARSET, and CONDSTORE MODSEQ', async () => {
    expect(await c.command('f', 'SEARCH RETURN (COUNT) CHARSET UTF-8 FROM smith')).toEqual(['* ESEARCH (TAG "f") COUNT 2', 'f OK SEARCH completed']);
    const res = await c.command('g', 'SEARCH RETURN (MIN MAX) MODSEQ 1 FLAGGED');
    expect(res[0]).toMatch(/^\* ESEARCH \(TAG "g"\) MIN 2 MAX 11 MODSEQ \d+$/);
    expect(await c.command('h', 'SEARCH RETURN (COUNT) CHARSET KOI8-R ALL')).toEqual(['h NO [BADCHARSET (UTF-8 US-ASCII)] Unsupported charset KOI8-R']);
  });

  test('bad RETURN syntax is BAD', async () => {
    expect((await c.command('i', 'SEARCH RETURN (SAVE) ALL')).pop()).toMatch(/^i BAD .*SAVE/);
    expect((await c.command('j', 'SEARCH RETURN MIN ALL')).pop()).toMatch(/^j BAD/);
    expect((await c.command('k', 'SEARCH RETURN (MIN)')).pop()).toMatch(/^k BAD/);
  });

  test('imapflow asks for and reads ESEARCH results', async () => {
    const flow = new ImapFlow({ host: '127.0.0.1', port: client.port(), secure: false, auth: { user: USER, pass: 'secret' }, logger: false, disableAutoIdle: true });
    flow.on('error', () => undefined);
    await flow.connect();
    try {
      await flow.mailboxOpen('INBOX');
      expect(await flow.search({ flagged: true, since: new Date(Date.UTC(1994, 1, 1)) }, { returnOptions: ['MIN', 'MAX', 'COUNT', 'ALL'] })).toMatchObject({ min: 2, max: 11, count: 4, all: '2:3,10:11' });
      expect(await flow.search({ from: 'smith' }, { uid: true, returnOptions: ['COUNT'] })).toMatchObject({ count: 2 });
      expect(await flow.search({ flagged: true })).toEqual([2, 3, 5, 10, 11]);
    } finally {
      await flow.logout();
    }
  });

  test('the plain SEARCH response is unchanged without RETURN', async () => {
    expect(await c.command('l', 'SEARCH FLAGGED')).toEqual(['* SEARCH 2 3 5 10 11', 'l OK SEARCH completed']);
  });
});
