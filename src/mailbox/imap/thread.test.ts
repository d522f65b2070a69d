// THREAD (RFC 5256 §4): the response syntax, ORDEREDSUBJECT, REFERENCES step by step, and the RFC's examples on
// the wire over a mailbox built to reproduce them.
import { beforeEach, describe, expect, test } from 'vitest';
import { parseMessage } from './mime.js';
import { formatThreads, messageIds, orderedSubject, references, threadMessage, type ThreadMessage, type ThreadNode } from './thread.js';
import { useMemoryServer } from './memory-server.test-helper.js';
import type { RawClient } from './raw-client.test-helper.js';

const message = (headers: string[]) => Buffer.from([...headers, '', 'body', ''].join('\r\n'), 'utf8');
const HOUR = 3_600_000;
const T0 = Date.UTC(2024, 0, 1);

/** Messages numbered from 1, the k-th sent k hours after T0 unless its headers say otherwise. */
function msgs(...specs: string[][]): ThreadMessage[] {
  return specs.map((headers, i) => {
    const date = headers.some((h) => h.startsWith('Date:')) ? [] : [`Date: ${new Date(T0 + (i + 1) * HOUR).toUTCString().replace('GMT', '+0000')}`];
    return threadMessage({ n: i + 1, seq: i + 1, internalDate: 0, tree: parseMessage(message([...headers, ...date])) });
  });
}
const refs = (...specs: string[][]) => formatThreads(references(msgs(...specs)));
const subj = (...specs: string[][]) => formatThreads(orderedSubject(msgs(...specs)));

describe('thread-list syntax (RFC 5256 §4)', () => {
  const leaf = (n: number, ...children: ThreadNode[]): ThreadNode => ({
    msg: { n, seq: n, date: 0, subject: { key: '', replyOrForward: false }, references: [] },
    children,
  });
  test('the two examples of the text', () => {
    expect(formatThreads([leaf(2), leaf(3, leaf(6, leaf(4, leaf(23)), leaf(44, leaf(7, leaf(96)))))])).toBe('(2)(3 6 (4 23)(44 7 96))');
    expect(formatThreads([{ children: [leaf(3), leaf(5)] }])).toBe('((3)(5))');
    expect(formatThreads([])).toBe('');
  });
});

describe('Message IDs', () => {
  test('valid IDs only, comments skipped, folding whitespace removed, case kept', () => {
    expect(messageIds('<a@b> (<c@d>) junk <e@F>  <no-at> <x@\r\n y>')).toEqual(['<a@b>', '<e@F>', '<x@y>']);
    expect(messageIds(undefined)).toEqual([]);
  });
});

describe('ORDEREDSUBJECT', () => {
  test('by base subject, then date; threads by their first date; the rest children of the first', () => {
    expect(subj(['Subject: b'], ['Subject: Re: a'], ['Subject: c'], ['Subject: [x] A'], ['Subject: Re: b'], ['Subject: a (fwd)'])).toBe('(1 5)(2 (4)(6))(3)');
  });
  test('sent date in UTC decides, then the sequence number; no Date: the internal date', () => {
    const list = [
      threadMessage({ n: 1, seq: 1, internalDate: T0 + 5 * HOUR, tree: parseMessage(message(['Subject: x'])) }),
      threadMessage({ n: 2, seq: 2, internalDate: 0, tree: parseMessage(message(['Subject: x', 'Date: Mon, 1 Jan 2024 05:00:00 +0200'])) }),
      threadMessage({ n: 3, seq: 3, internalDate: 0, tree: parseMessage(message(['Subject: y', 'Date: Mon, 1 Jan 2024 03:00:00 +0000'])) }),
      threadMessage({ n: 4, seq: 4, internalDate: 0, tree: parseMessage(message(['Subject: X', 'Date: Mon, 1 Jan 2024 03:00:00 +0000'])) }),
    ];
    expect(formatThreads(orderedSubject(list))).toBe('(2 (4)(1))(3)');
  });
});

describe('REFERENCES', () => {
  test('References links each to the next; In-Reply-To only without References; the last reference is the parent', () => {
    expect(
      refs(
        ['Message-ID: <1@x>', 'Subject: one'],
        ['Message-ID: <2@x>', 'Subject: two', 'References: <1@x>'],
        ['Message-ID: <3@x>', 'Subject: three', 'References: <1@x> <2@x>', 'In-Reply-To: <9@x>'],
        ['Message-ID: <4@x>', 'Subject: four', 'In-Reply-To: <1@x> <3@x>'],
      ),
    ).toBe('(1 (2 3)(4))');
  });

  test('a missing parent is a dummy: pruned when it has one child, kept at the top with two', () => {
    expect(refs(['Message-ID: <1@x>', 'Subject: a', 'References: <lost@x>'])).toBe('(1)');
    expect(refs(['Message-ID: <1@x>', 'Subject: a', 'References: <lost@x>'], ['Message-ID: <2@x>', 'Subject: b', 'In-Reply-To: <lost@x>'])).toBe('((1)(2))');
    // Below a real message, a dummy's children are promoted to its place.
    expect(refs(['Message-ID: <1@x>', 'Subject: a'], ['Message-ID: <3@x>', 'Subject: c', 'References: <1@x> <lost@x>'], ['Message-ID: <4@x>', 'Subject: d', 'References: <1@x> <lost@x>'])).toBe('(1 (2)(3))');
  });

  test('a reply before its parent; an existing parent is kept; no loops; duplicate and self references', () => {
    expect(refs(['Message-ID: <2@x>', 'Subject: Re: a', 'References: <1@x>'], ['Message-ID: <1@x>', 'Subject: a'])).toBe('(2 1)');
    // <z> <b>: b already has its parent, a; z stays an empty dummy and goes.
    expect(refs(['Message-ID: <a@x>', 'Subject: a'], ['Message-ID: <b@x>', 'Subject: b', 'References: <a@x>'], ['Message-ID: <c@x>', 'Subject: c', 'References: <z@x> <b@x>'])).toBe('(1 2 3)');
    // <b> <a> would make b the parent of a, its own parent: skipped.
    expect(refs(['Message-ID: <a@x>', 'Subject: a'], ['Message-ID: <b@x>', 'Subject: b', 'References: <a@x>'], ['Message-ID: <c@x>', 'Subject: c', 'References: <b@x> <a@x>'])).toBe('(1 (2)(3))');
    // A Message ID used twice belongs to the first message only.
    expect(refs(['Message-ID: <d@x>', 'Subject: p'], ['Message-ID: <d@x>', 'Subject: q'], ['Message-ID: <e@x>', 'Subject: r', 'In-Reply-To: <d@x>'])).toBe('(1 3)(2)');
    expect(refs(['Message-ID: <a@x>', 'Subject: a', 'References: <a@x>'], ['Subject: b', 'References: <a@x>'])).toBe('(1 2)');
    // Two messages that reference each other: the first made itself a child of the second (still a dummy then),
    // and the second cannot become the first's child without a loop.
    expect(refs(['Message-ID: <a@x>', 'Subject: a', 'References: <b@x>'], ['Message-ID: <b@x>', 'Subject: b', 'References: <a@x>'])).toBe('(2 1)');
  });

  test('roots gathered by base subject (step 5)', () => {
    // A reply under the original; the original found later takes the reply under it.
    expect(refs(['Subject: a'], ['Subject: Re: a'])).toBe('(1 2)');
    expect(refs(['Subject: Re: a'], ['Subject: a'])).toBe('(2 1)');
    // Both originals, or both replies: siblings under a dummy.
    expect(refs(['Subject: a'], ['Subject: [list] A'], ['Subject: Re: a'])).toBe('((1)(2)(3))');
    expect(refs(['Subject: Re: a'], ['Subject: Fwd: a'])).toBe('((1)(2))');
    // A dummy takes the others in; two dummies merge.
    expect(refs(['Subject: a', 'References: <l@x>'], ['Subject: x', 'References: <l@x>'], ['Subject: a'])).toBe('((1)(2)(3))');
    expect(refs(['Subject: a', 'References: <l@x>'], ['Subject: b', 'References: <l@x>'], ['Subject: Re: a', 'References: <m@x>'], ['Subject: c', 'References: <m@x>'])).toBe('((1)(2)(3)(4))');
    // Empty base subjects are not gathered; only roots are.
    expect(refs(['Subject: '], ['Subject: Re:'])).toBe('(1)(2)');
    expect(refs(['Message-ID: <1@x>', 'Subject: a'], ['Message-ID: <2@x>', 'Subject: b', 'References: <1@x>'], ['Subject: b'])).toBe('(1 2)(3)');
  });

  test('siblings by sent date, the deepest first; dummies by their first child', () => {
    const at = (h: number) => `Date: Mon, 1 Jan 2024 ${String(h).padStart(2, '0')}:00:00 +0000`;
    expect(
      refs(
        ['Message-ID: <r@x>', 'Subject: r', at(1)],
        ['Message-ID: <c1@x>', 'Subject: c1', 'References: <r@x>', at(9)],
        ['Message-ID: <c2@x>', 'Subject: c2', 'References: <r@x>', at(3)],
        ['Message-ID: <g1@x>', 'Subject: g1', 'References: <r@x> <c1@x>', at(8)],
        ['Message-ID: <g2@x>', 'Subject: g2', 'References: <r@x> <c1@x>', at(4)],
        ['Subject: d1', 'References: <lost@x>', at(7)],
        ['Subject: d2', 'References: <lost@x>', at(2)],
        ['Subject: early', at(0)],
      ),
    ).toBe('(8)(1 (3)(2 (5)(4)))((7)(6))');
  });
});

describe('deep threads', () => {
  test('20,000 References in one message, and a reply chain 20,000 deep: no stack overflow, no quadratic time', () => {
    const ids = Array.from({ length: 20_000 }, (_, i) => `<r${i}@x>`).join(' ');
    expect(refs(['Subject: a', `References: ${ids}`])).toBe('(1)');
    const chain = Array.from({ length: 20_000 }, (_, i) => {
      const headers = ['Subject: a', `Message-ID: <m${i}@x>`, ...(i ? [`In-Reply-To: <m${i - 1}@x>`] : [])];
      return threadMessage({ n: i + 1, seq: i + 1, internalDate: i, tree: parseMessage(message(headers)) });
    });
    const expected = `(${chain.map((m) => m.n).join(' ')})`;
    expect(formatThreads(references(chain))).toBe(expected);
    expect(formatThreads(orderedSubject(chain))).toBe(`(1 ${chain.slice(1).map((m) => `(${m.n})`).join('')})`);
  });
});

describe("Dovecot imaptest's thread script (src/tests/thread, thread.mbox)", () => {
  // No Date headers: the sent dates are the internal dates (the mbox From lines).
  const mbox: Array<[string[], number]> = [
    [['Message-ID: <a@b>'], Date.UTC(2008, 1, 22, 17, 6, 23)],
    [['Message-Id: <b@b>', 'References: <c@b> <a@b>'], Date.UTC(2008, 1, 22, 15, 6, 23)],
    [['Message-Id: <c@b>', 'References: <b@b>'], Date.UTC(2008, 1, 22, 16, 6, 25)],
  ];
  const thread = (list: Array<[string[], number]>) =>
    formatThreads(references(list.map(([headers, internalDate], i) => threadMessage({ n: i + 1, seq: i + 1, internalDate, tree: parseMessage(message(headers)) }))));
  test('THREAD REFERENCES: (3 1 2); after message 1 is expunged: (2 1)', () => {
    expect(thread(mbox)).toBe('(3 1 2)');
    expect(thread(mbox.slice(1))).toBe('(2 1)');
  });
});

describe('THREAD on the wire: RFC 5256 §4 examples', () => {
  // The order of the sent dates of messages 166..208: ORDEREDSUBJECT's answer, read left to right.
  const ORDER = [166, 167, 168, 169, 172, 170, 171, 173, 174, 175, 176, 178, 181, 180, 179, 177, 183, 182, 188, 184, 185, 186, 187, 189, 190, 191, 192, 193, 194, 195, 196, 197, 198, 199, 200, 202, 201, 203, 204, 205, 206, 207, 208];
  const HEADERS: Record<number, string[]> = {
    170: ['Subject: message 170', 'References: <lost@example.test>'],
    179: ['Subject: message 179', 'In-Reply-To: <lost@example.test>'],
    174: ['Subject: Re: topic A'],
    175: ['Subject: RE: [list] topic A'],
    176: ['Subject: Re[2]: topic A'],
    178: ['Subject: Fwd: topic A'],
    181: ['Subject: [Fwd: topic A]'],
    180: ['Subject: re: Topic A (fwd)'],
    177: ['Subject: topic B'],
    183: ['Subject: Topic B'],
    182: ['Subject: [list] topic B'],
    188: ['Subject: =?UTF-8?Q?topic_B?='],
    184: ['Subject: Re: topic B', 'In-Reply-To: <m188@example.test>'],
    // References wins over In-Reply-To.
    189: ['Subject: Re: topic B', 'References: <m188@example.test>', 'In-Reply-To: <m177@example.test>'],
    185: ['Subject: topic B'],
    186: ['Subject: Re: topic B', 'In-Reply-To: <m185@example.test> (the thread)'],
    187: ['Subject: topic  B'],
    194: ['Subject: topic C'],
    195: ['Subject: topic C'],
    196: ['Subject: topic D', 'In-Reply-To: <m195@example.test>'],
    197: ['Subject: Re: topic D'],
    198: ['Subject: Re: topic D', 'References: <m197@example.test>'],
    200: ['Subject: topic E'],
    202: ['Subject: Re: topic E'],
    205: ['Subject: topic F'],
    206: ['Subject: topic G', 'References: <m205@example.test>'],
    207: ['Subject: Re: topic G', 'References: <m205@example.test>', ' <m206@example.test>'],
  };
  /** An RFC 5322 date for an instant, in a zone that changes from message to message. */
  const dateHeader = (ms: number, zoneHours: number) => {
    const local = new Date(ms + zoneHours * HOUR);
    const [day, month, year, time] = local.toUTCString().split(' ').slice(1, 5);
    const zone = `${zoneHours < 0 ? '-' : '+'}${String(Math.abs(zoneHours)).padStart(2, '0')}00`;
    return `Date: ${Number(day)} ${month} ${year} ${time} ${zone}`;
  };

  const client = useMemoryServer(async (store, user) => {
    const start = Date.UTC(2000, 2, 5, 12);
    for (let n = 1; n <= 208; n++) {
      if (n < 166) {
        await store.deliver(user, message(['Subject: old', `Message-ID: <m${n}@example.test>`]), { internalDate: Date.UTC(2000, 2, 4) });
        continue;
      }
      const sent = start + ORDER.indexOf(n) * HOUR;
      const headers = HEADERS[n] ?? [`Subject: message ${n}`];
      // Internal dates run the other way, so an answer ordered by them would show it.
      const internalDate = Date.UTC(2000, 2, 10) - n * 60_000;
      await store.deliver(user, message([`Message-ID: <m${n}@example.test>`, dateHeader(sent, (n % 5) - 2), ...headers]), { internalDate });
    }
    await store.createMailbox(user, 'U');
    for (const headers of [['Subject: gone'], ['Message-ID: <u2@x>', 'Subject: u'], ['Subject: Re: u', 'References: <u2@x>']]) await store.append(user, 'U', message(headers));
  });
  let c: RawClient;
  beforeEach(async () => {
    c = client();
    expect((await c.command('s', 'SELECT INBOX')).pop()).toMatch(/^s OK/);
  });

  test('A283 THREAD ORDEREDSUBJECT, A284 with no match, A285 THREAD REFERENCES', async () => {
    expect(await c.command('A283', 'THREAD ORDEREDSUBJECT UTF-8 SINCE 5-MAR-2000')).toEqual([
      '* THREAD (166)(167)(168)(169)(172)(170)(171)(173)(174 (175)(176)(178)(181)(180))(179)(177 (183)(182)(188)(184)(185)(186)(187)(189))(190)(191)(192)(193)(194 195)(196 (197)(198))(199)(200 202)(201)(203)(204)(205)(206 207)(208)',
      'A283 OK THREAD completed',
    ]);
    expect(await c.command('A284', 'THREAD ORDEREDSUBJECT US-ASCII TEXT "gewp"')).toEqual(['* THREAD', 'A284 OK THREAD completed']);
    expect(await c.command('A285', 'THREAD REFERENCES UTF-8 SINCE 5-MAR-2000')).toEqual([
      '* THREAD (166)(167)(168)(169)(172)((170)(179))(171)(173)((174)(175)(176)(178)(181)(180))((177)(183)(182)(188 (184)(189))(185 186)(187))(190)(191)(192)(193)((194)(195 196))(197 198)(199)(200 202)(201)(203)(204)(205 206 207)(208)',
      'A285 OK THREAD completed',
    ]);
  });

  test('messages outside the search are left out, their place kept by dummies', async () => {
    expect(await c.command('u', 'THREAD REFERENCES UTF-8 UID 206:208')).toEqual(['* THREAD (206 207)(208)', 'u OK THREAD completed']);
    // 184 and 189 under 188's dummy; 186's lone dummy is pruned, and its subject then joins it to the first.
    expect(await c.command('v', 'THREAD REFERENCES UTF-8 184,189,186')).toEqual(['* THREAD ((184)(186)(189))', 'v OK THREAD completed']);
    expect(await c.command('w', 'THREAD REFERENCES UTF-8 179,170')).toEqual(['* THREAD ((170)(179))', 'w OK THREAD completed']);
  });

  test('UID THREAD answers with UIDs', async () => {
    expect((await c.command('s', 'SELECT U')).pop()).toMatch(/^s OK/);
    expect((await c.command('x', 'STORE 1 +FLAGS.SILENT (\\Deleted)')).pop()).toMatch(/^x OK/);
    expect((await c.command('e', 'EXPUNGE')).pop()).toMatch(/^e OK/);
    expect(await c.command('a', 'UID THREAD REFERENCES UTF-8 ALL')).toEqual(['* THREAD (2 3)', 'a OK UID THREAD completed']);
    expect(await c.command('b', 'UID THREAD ORDEREDSUBJECT UTF-8 ALL')).toEqual(['* THREAD (2 3)', 'b OK UID THREAD completed']);
    expect(await c.command('c', 'THREAD REFERENCES UTF-8 ALL')).toEqual(['* THREAD (1 2)', 'c OK THREAD completed']);
  });

  test('capabilities and errors', async () => {
    const caps = (await c.command('k', 'CAPABILITY'))[0]!.split(' ');
    expect(caps).toEqual(expect.arrayContaining(['THREAD=ORDEREDSUBJECT', 'THREAD=REFERENCES']));
    expect((await c.command('a', 'THREAD REFS UTF-8 ALL')).pop()).toMatch(/^a BAD .*REFS/);
    expect(await c.command('b', 'THREAD REFERENCES KOI8-R ALL')).toEqual(['b NO [BADCHARSET (UTF-8 US-ASCII)] Unsupported charset KOI8-R']);
    expect((await c.command('d', 'THREAD REFERENCES UTF-8')).pop()).toMatch(/^d BAD/);
  });
});
