// SORT (RFC 5256 §3): base subjects (§2.1), sent dates (§2.2), each sort key, the RFC's examples on the wire,
// and properties: a sort is a permutation of the search result, ties keep mailbox order, REVERSE reverses.
import fc from 'fast-check';
import { beforeEach, describe, expect, test } from 'vitest';
import { fuzzParameters } from '../../shared/fuzz.test-helper.js';
import { parseMessage } from './mime.js';
import { Reader } from './parser.js';
import { baseSubject, parseSentDate, parseSortCriteria, sortMessages, type SortCriterion, type SortKey } from './sort.js';
import { useMemoryServer } from './memory-server.test-helper.js';
import type { RawClient } from './raw-client.test-helper.js';

const message = (headers: string[], body = 'body') => Buffer.from([...headers, '', body, ''].join('\r\n'), 'utf8');
const criteria = (text: string): SortCriterion[] => parseSortCriteria(new Reader({ lines: [Buffer.from(text)], literals: [] }));

describe('base subject (RFC 5256 §2.1)', () => {
  test.each([
    ['', '', false],
    ['Hello', 'HELLO', false],
    ['Re: Hello', 'HELLO', true],
    ['RE: re: Fwd: FW: hello', 'HELLO', true],
    ['Re[2]: hello', 'HELLO', true],
    ['Re [list]: hello', 'HELLO', true],
    ['[list] Re: hello', 'HELLO', true],
    ['Re: [list] Re: hello', 'HELLO', true],
    ['[list] hello', 'HELLO', false],
    ['[list]', '[LIST]', false],
    ['[a][b] [c] hello', 'HELLO', false],
    ['hello (fwd)', 'HELLO', true],
    ['hello (FWD)  (fwd) ', 'HELLO', true],
    ['[Fwd: hello]', 'HELLO', true],
    ['[fwd: Re: [list] hello (fwd)]', 'HELLO', true],
    ['Fwd: [fwd: hello]', 'HELLO', true],
    ['  hello \t  world  ', 'HELLO WORLD', false],
    ['Real estate: hello', 'REAL ESTATE: HELLO', false],
    ['Re:', '', true],
    ['=?UTF-8?Q?Re=3A_gr=C3=BC=C3=9Fe?=', 'GRüßE', true],
    ['Re: =?ISO-8859-1?Q?caf=E9?=', 'CAFé', true],
  ])('%j → %j (reply or forward: %s)', (subject, key, replyOrForward) => {
    expect(baseSubject(subject)).toEqual({ key, replyOrForward });
  });

  test('folded and tabbed subjects become single spaces', () => {
    const tree = parseMessage(message(['Subject: Re: a long', '\t  subject']));
    expect(baseSubject(tree.headers[0]!.value).key).toBe('A LONG SUBJECT');
  });
});

describe('sent date (RFC 5256 §2.2)', () => {
  test('RFC 5322 dates in UTC, obsolete forms, unparsable ones', () => {
    expect(parseSentDate('Fri, 02 Feb 2024 10:00:00 +0100')).toBe(Date.UTC(2024, 1, 2, 9));
    expect(parseSentDate('2 Feb 2024 10:00 -0230')).toBe(Date.UTC(2024, 1, 2, 12, 30));
    expect(parseSentDate('Sat, 3 Feb 24 08:30:00 EST')).toBe(Date.UTC(2024, 1, 3, 13, 30));
    expect(parseSentDate('Sat, 3 Feb 1994 08:30:00 GMT (comment)')).toBe(Date.UTC(1994, 1, 3, 8, 30));
    expect(parseSentDate('Thu, 1 January 99 23:59:59 +0000')).toBe(Date.UTC(1999, 0, 1, 23, 59, 59));
    expect(parseSentDate('yesterday')).toBeUndefined();
    expect(parseSentDate('1 Foo 2024 10:00:00 +0000')).toBeUndefined();
    expect(parseSentDate(undefined)).toBeUndefined();
  });
});

describe('sort keys', () => {
  const msgs = [
    message(['From: Zed <zed@a.test>', 'To: "Group": ;, bob@x.test', 'Cc: Carl <CARL@x.test>', 'Subject: Re: beta', 'Date: Mon, 1 Jan 2024 12:00:00 +0000']),
    message(['From: adam@z.test', 'To: Yves <yves@x.test>', 'Subject: alpha', 'Date: Mon, 1 Jan 2024 13:00:00 +0200']),
    message(['From: "Mary" <mary@b.test>, adam@a.test', 'Subject: [list] Beta', 'Date: garbage']),
    message(['Subject: Alpha (fwd)', 'Cc: anne@x.test', 'Date: Mon, 1 Jan 2024 11:30:00 +0000']),
  ].map((raw, i) => ({ seq: i + 1, size: [300, 100, 200, 100][i]!, internalDate: Date.UTC(2024, 0, [5, 3, 1, 4][i]!), tree: parseMessage(raw) }));
  const order = (text: string) => sortMessages(msgs, criteria(text)).map((m) => m.seq);

  test('each key, and REVERSE', () => {
    expect(order('(ARRIVAL)')).toEqual([3, 2, 4, 1]);
    expect(order('(REVERSE ARRIVAL)')).toEqual([1, 4, 2, 3]);
    // Message 3's Date is unparsable: its INTERNALDATE (1 Jan 00:00) stands in.
    expect(order('(DATE)')).toEqual([3, 2, 4, 1]);
    expect(order('(SIZE)')).toEqual([2, 4, 3, 1]);
    expect(order('(REVERSE SIZE)')).toEqual([1, 3, 2, 4]);
    expect(order('(SUBJECT)')).toEqual([2, 4, 1, 3]);
    // The local part of the first address, case-insensitively; a missing field is "" and sorts first.
    expect(order('(FROM)')).toEqual([4, 2, 3, 1]);
    expect(order('(TO)')).toEqual([3, 4, 1, 2]);
    expect(order('(CC)')).toEqual([2, 3, 4, 1]);
    expect(order('(SUBJECT REVERSE DATE)')).toEqual([4, 2, 1, 3]);
    expect(order('(SIZE REVERSE ARRIVAL)')).toEqual([4, 2, 3, 1]);
  });

  test('bad criteria', () => {
    expect(() => criteria('()')).toThrow(/Empty/);
    expect(() => criteria('(NAME)')).toThrow(/NAME/);
    expect(() => criteria('(REVERSE)')).toThrow();
    expect(() => criteria('(REVERSE REVERSE DATE)')).toThrow(/REVERSE/);
  });
});

describe("Dovecot imaptest's sort-subject script (src/tests/sort-subject, sort-subject.mbox)", () => {
  const subjects = ['a', 'C', 'b', '_', '[foo] Fwd: [bar] Re: fw: b (fWd)  (fwd)', 'b (a)', 'Re: [FWD: c]', '[xyz]', undefined];
  const bodies = ['1', '2', '3', '4', '55', '66', '77', '88', '9'];
  const msgs = subjects.map((subject, i) => {
    const raw = message(subject === undefined ? [] : [`Subject: ${subject}`], bodies[i]);
    return { seq: i + 1, size: raw.length, internalDate: 0, tree: parseMessage(raw) };
  });
  const order = (text: string) => sortMessages(msgs, criteria(text)).map((m) => m.seq).join(' ');
  test('(SUBJECT), (REVERSE SUBJECT), (SUBJECT REVERSE SIZE)', () => {
    expect(order('(SUBJECT)')).toBe('9 1 3 5 6 2 7 8 4');
    expect(order('(REVERSE SUBJECT)')).toBe('4 8 2 7 6 3 5 1 9');
    expect(order('(SUBJECT REVERSE SIZE)')).toBe('9 1 5 3 6 7 2 8 4');
  });
});

describe('properties', () => {
  const KEYS: SortKey[] = ['ARRIVAL', 'CC', 'DATE', 'FROM', 'SIZE', 'SUBJECT', 'TO'];
  const people = ['ann@x.test', 'Bob <bob@x.test>', 'ANN@y.test', 'carl@x.test'];
  const person = fc.option(fc.constantFrom(...people), { nil: undefined });
  const arbMessage = fc.record({
    subject: fc.constantFrom('a', 'Re: a', 'b', '[x] B', 'Fwd: c', ''),
    from: person,
    to: person,
    cc: person,
    day: fc.integer({ min: 1, max: 4 }),
    arrival: fc.integer({ min: 1, max: 4 }),
    size: fc.integer({ min: 1, max: 4 }),
  });
  type Spec = typeof arbMessage extends fc.Arbitrary<infer T> ? T : never;
  const arbCriteria = fc
    .uniqueArray(fc.constantFrom(...KEYS), { minLength: 1, maxLength: 3 })
    .chain((keys) => fc.tuple(...keys.map((key) => fc.boolean().map((reverse): SortCriterion => ({ key, reverse })))));
  const build = (specs: Spec[]) =>
    specs.map((s, i) => {
      const headers = [`Subject: ${s.subject}`, `Date: ${s.day} Jan 2024 10:00:00 +0000`];
      if (s.from) headers.push(`From: ${s.from}`);
      if (s.to) headers.push(`To: ${s.to}`);
      if (s.cc) headers.push(`Cc: ${s.cc}`);
      return { seq: i + 1, size: s.size, internalDate: Date.UTC(2024, 0, s.arrival), tree: parseMessage(message(headers)) };
    });
  /** A reference key, from the generated values rather than the messages. */
  const local = (p: string | undefined) => (p ? /([^<\s@]+)@/.exec(p)![1]!.toUpperCase() : '');
  const refKey = (s: Spec, key: SortKey): number | string =>
    ({ ARRIVAL: s.arrival, DATE: s.day, SIZE: s.size, SUBJECT: baseSubject(s.subject).key, FROM: local(s.from), TO: local(s.to), CC: local(s.cc) })[key];
  const cmp = (x: number | string, y: number | string) => (x < y ? -1 : x > y ? 1 : 0);

  test('SORT equals a reference sort: a permutation, each criterion in turn, then mailbox order', () => {
    fc.assert(
      fc.property(fc.array(arbMessage, { maxLength: 12 }), arbCriteria, (specs, crit) => {
        const sorted = sortMessages(build(specs), crit).map((m) => m.seq);
        const expected = specs
          .map((s, i) => ({ s, seq: i + 1 }))
          .sort((a, b) => {
            for (const c of crit) {
              const order = cmp(refKey(a.s, c.key), refKey(b.s, c.key));
              if (order) return c.reverse ? -order : order;
            }
            return a.seq - b.seq;
          })
          .map((x) => x.seq);
        expect(sorted).toEqual(expected);
        expect([...sorted].sort((a, b) => a - b)).toEqual(specs.map((_, i) => i + 1));
      }),
      fuzzParameters(200, 5000),
    );
  });

  test('REVERSE reverses the groups of equal keys and keeps mailbox order inside each', () => {
    fc.assert(
      fc.property(fc.array(arbMessage, { maxLength: 12 }), fc.constantFrom(...KEYS), (specs, key) => {
        const msgs = build(specs);
        const forward = sortMessages(msgs, [{ key, reverse: false }]).map((m) => m.seq);
        const backward = sortMessages(msgs, [{ key, reverse: true }]).map((m) => m.seq);
        const groups: number[][] = [];
        for (const seq of forward) {
          const g = groups[groups.length - 1];
          if (g && refKey(specs[g[0]! - 1]!, key) === refKey(specs[seq - 1]!, key)) g.push(seq);
          else groups.push([seq]);
        }
        for (const g of groups) expect(g).toEqual([...g].sort((a, b) => a - b));
        expect(backward).toEqual(groups.reverse().flat());
      }),
      fuzzParameters(200, 5000),
    );
  });
});

describe('SORT on the wire', () => {
  const client = useMemoryServer(async (store, user) => {
    // RFC 5256 §3, A282: of 882 messages, 2, 84 and 882 arrived since 1-Feb-1994.
    const since = new Map([[2, 'Re: [list] alpha'], [84, 'Beta (fwd)'], [882, 'gamma']]);
    for (let n = 1; n <= 882; n++) {
      const subject = since.get(n) ?? `aardvark ${n}`;
      await store.deliver(user, message([`Subject: ${subject}`, `Date: 1 Jan 1994 00:00:00 +0000`]), { internalDate: since.has(n) ? Date.UTC(1994, 1, 1, 0, 1) : Date.UTC(1994, 0, 31, 23, 59) });
    }
    // A283's mailbox: SORT (SUBJECT REVERSE DATE) gives 5 3 4 1 2.
    await store.createMailbox(user, 'A283');
    const a283: Array<[string, string]> = [
      ['Re: Re: banana', 'Thu, 4 Jan 2024 10:00:00 +0000'],
      ['banana', 'Mon, 1 Jan 2024 10:00:00 +0000'],
      ['apple', 'Wed, 3 Jan 2024 10:00:00 +0000'],
      ['[list] Fwd: apple (fwd)', 'Tue, 2 Jan 2024 23:00:00 -0200'],
      ['Re: APPLE', 'Fri, 5 Jan 2024 10:00:00 +0000'],
    ];
    for (const [subject, date] of a283) await store.append(user, 'A283', message([`Subject: ${subject}`, `Date: ${date}`]));
  });
  let c: RawClient;
  beforeEach(() => {
    c = client();
  });

  test('CAPABILITY advertises SORT', async () => {
    expect((await c.command('k', 'CAPABILITY'))[0]!.split(' ')).toContain('SORT');
  });

  test('RFC 5256 §3 examples: A282, A283, A284', async () => {
    expect((await c.command('s', 'SELECT INBOX')).pop()).toMatch(/^s OK/);
    expect(await c.command('A282', 'SORT (SUBJECT) UTF-8 SINCE 1-Feb-1994')).toEqual(['* SORT 2 84 882', 'A282 OK SORT completed']);
    expect((await c.command('t', 'SELECT A283')).pop()).toMatch(/^t OK/);
    expect(await c.command('A283', 'SORT (SUBJECT REVERSE DATE) UTF-8 ALL')).toEqual(['* SORT 5 3 4 1 2', 'A283 OK SORT completed']);
    expect(await c.command('A284', 'SORT (SUBJECT) US-ASCII TEXT "not in mailbox"')).toEqual(['* SORT', 'A284 OK SORT completed']);
  });

  test('UID SORT answers with UIDs; search keys and a literal after the charset; MODSEQ', async () => {
    expect((await c.command('s', 'SELECT A283')).pop()).toMatch(/^s OK/);
    // Message 1 expunged: UIDs 2..5 are now sequence numbers 1..4.
    expect(await c.command('a', 'STORE 1 +FLAGS.SILENT (\\Deleted)')).toEqual(['a OK STORE completed']);
    expect((await c.command('e', 'EXPUNGE')).pop()).toMatch(/^e OK/);
    expect(await c.command('a', 'STORE 2 +FLAGS.SILENT (\\Seen)')).toEqual(['a OK STORE completed']);
    expect(await c.command('b', 'UID SORT (REVERSE SUBJECT DATE) UTF-8 1:*')).toEqual(['* SORT 2 4 3 5', 'b OK UID SORT completed']);
    expect(await c.command('b', 'SORT (REVERSE SUBJECT DATE) UTF-8 1:*')).toEqual(['* SORT 1 3 2 4', 'b OK SORT completed']);
    c.send('c SORT (ARRIVAL) UTF-8 SUBJECT {5+}\r\napple UNSEEN\r\n');
    expect(await c.until('c')).toEqual(['* SORT 3 4', 'c OK SORT completed']);
    expect((await c.command('d', 'SORT (DATE) UTF-8 MODSEQ 1 SEEN')).slice(0, 1)).toEqual([expect.stringMatching(/^\* SORT 2 \(MODSEQ \d+\)$/)]);
  });

  test('errors: unknown charset NO [BADCHARSET]; missing charset, bad criteria BAD; not selected', async () => {
    expect((await c.command('s', 'SELECT A283')).pop()).toMatch(/^s OK/);
    expect(await c.command('a', 'SORT (DATE) KOI8-R ALL')).toEqual(['a NO [BADCHARSET (UTF-8 US-ASCII)] Unsupported charset KOI8-R']);
    expect((await c.command('b', 'SORT (DATE) ALL')).pop()).toMatch(/^b (BAD|NO)/);
    expect((await c.command('c', 'SORT DATE UTF-8 ALL')).pop()).toMatch(/^c BAD/);
    expect((await c.command('d', 'SORT (NAME) UTF-8 ALL')).pop()).toMatch(/^d BAD .*NAME/);
    expect((await c.command('e', 'SORT (DATE) UTF-8')).pop()).toMatch(/^e BAD/);
    expect((await c.command('f', 'UNSELECT')).pop()).toMatch(/^f OK/);
    expect(await c.command('g', 'SORT (DATE) UTF-8 ALL')).toEqual(['g BAD No mailbox selected']);
  });
});
