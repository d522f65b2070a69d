import { describe, expect, test } from 'vitest';
import { decodeMailboxName, encodeMailboxName, encodeResponse, formatInternalDate, formatUidList, parseDateTime } from './encode.js';
import { parseFetchRequest } from './fetch.js';
import { BadCharsetError, ParseError } from './errors.js';
import { CommandFramer, Reader, STAR, resolveSeqSet, type Frame, type FramerItem, type FramerOptions } from './parser.js';
import { parseSearch } from './search.js';

function framer(options: Partial<FramerOptions> = {}) {
  const items: FramerItem[] = [];
  let continuations = 0;
  const f = new CommandFramer({
    maxLineLength: 100,
    maxDiscard: 1000,
    literalLimit: (head) => (head.name === 'APPEND' ? 500 : 50),
    continueLiteral: () => continuations++,
    onItem: (item) => items.push(item),
    ...options,
  });
  return { f, items, continuations: () => continuations };
}

const text = (item: FramerItem | undefined) => {
  if (item?.kind !== 'command') throw new Error(`not a command: ${JSON.stringify(item)}`);
  return { lines: item.frame.lines.map((l) => l.toString()), literals: item.frame.literals.map((l) => l.toString()) };
};

const frameOf = (s: string): Frame => {
  const { items, f } = framer({ maxLineLength: 1 << 20, literalLimit: () => 1 << 20 });
  f.push(Buffer.from(s));
  if (items.length !== 1 || items[0]!.kind !== 'command') throw new Error('expected one command');
  return items[0]!.frame;
};
const reader = (s: string) => new Reader(frameOf(s + '\r\n'));

describe('CommandFramer', () => {
  test('splits pipelined commands and tolerates bare LF', () => {
    const { f, items } = framer();
    f.push(Buffer.from('a NOOP\r\nb CAPABILITY\nc LOGOUT\r\n'));
    expect(items.map((i) => text(i).lines[0])).toEqual(['a NOOP', 'b CAPABILITY', 'c LOGOUT']);
  });

  test('reassembles commands split across chunks at any byte', () => {
    const input = 'a LOGIN {3}\r\nbob {6+}\r\nsecret\r\nb NOOP\r\n';
    for (let cut = 1; cut < input.length; cut++) {
      const { f, items } = framer();
      f.push(Buffer.from(input.slice(0, cut)));
      f.push(Buffer.from(input.slice(cut)));
      expect(items).toHaveLength(2);
      expect(text(items[0])).toEqual({ lines: ['a LOGIN ', ' ', ''], literals: ['bob', 'secret'] });
    }
  });

  test('asks for continuation for synchronizing literals only', () => {
    const { f, continuations } = framer();
    f.push(Buffer.from('a LOGIN {3}\r\n'));
    expect(continuations()).toBe(1);
    f.push(Buffer.from('bob {6+}\r\nsecret\r\n'));
    expect(continuations()).toBe(1);
  });

  test('literals may contain CRLF and braces', () => {
    const { f, items } = framer();
    f.push(Buffer.from('a APPEND INBOX {11}\r\nx{1}\r\ny\r\nz}\r\n\r\n'));
    expect(text(items[0])).toEqual({ lines: ['a APPEND INBOX ', ''], literals: ['x{1}\r\ny\r\nz}'] });
  });

  test('a refused synchronizing literal ends the command with a tagged error', () => {
    const { f, items, continuations } = framer();
    f.push(Buffer.from('a1 LOGIN {51}\r\nb NOOP\r\n'));
    expect(continuations()).toBe(0);
    expect(items[0]).toMatchObject({ kind: 'error', tag: 'a1', status: 'BAD', fatal: false });
    expect(text(items[1]).lines).toEqual(['b NOOP']);
  });

  test('APPEND gets the bigger limit and NO [TOOBIG] beyond it', () => {
    const { f, items } = framer();
    f.push(Buffer.from('a APPEND INBOX {400+}\r\n' + 'x'.repeat(400) + '\r\n'));
    expect(text(items[0]).literals[0]).toHaveLength(400);
    f.push(Buffer.from('b APPEND INBOX {501}\r\n'));
    expect(items[1]).toMatchObject({ kind: 'error', tag: 'b', status: 'NO', code: 'TOOBIG' });
  });

  test('a refused non-synchronizing literal is skipped, then the command is answered', () => {
    const { f, items } = framer();
    f.push(Buffer.from('a LOGIN {60+}\r\n' + 'y'.repeat(60) + ' {2+}\r\nzz\r\nb NOOP\r\n'));
    expect(items[0]).toMatchObject({ kind: 'error', tag: 'a', status: 'BAD' });
    expect(text(items[1]).lines).toEqual(['b NOOP']);
  });

  test('a huge non-synchronizing literal is fatal', () => {
    const { f, items } = framer();
    f.push(Buffer.from('a LOGIN {5000+}\r\nxxxx'));
    expect(items[0]).toMatchObject({ kind: 'error', fatal: true });
    f.push(Buffer.from('b NOOP\r\n'));
    expect(items).toHaveLength(1);
  });

  test('strict (before login): an overlong line or a refused non-synchronizing literal is fatal at once', () => {
    const long = framer({ strict: () => true });
    long.f.push(Buffer.from('t1 LOGIN ' + 'x'.repeat(200)));
    expect(long.items).toEqual([expect.objectContaining({ kind: 'error', tag: 't1', status: 'BAD', message: 'Command line too long', fatal: true })]);
    long.f.push(Buffer.from('\r\nt2 NOOP\r\n'));
    expect(long.items).toHaveLength(1);

    const literal = framer({ strict: () => true });
    literal.f.push(Buffer.from('a LOGIN {60+}\r\n'));
    expect(literal.items).toEqual([expect.objectContaining({ kind: 'error', tag: 'a', status: 'BAD', fatal: true })]);

    // A refused synchronizing literal is answered and the connection goes on: no octet of it was sent.
    const sync = framer({ strict: () => true });
    sync.f.push(Buffer.from('a LOGIN {60}\r\nb NOOP\r\n'));
    expect(sync.items[0]).toMatchObject({ kind: 'error', tag: 'a', fatal: false });
    expect(text(sync.items[1]).lines).toEqual(['b NOOP']);
  });

  test('overlong lines are skipped up to their end and answered with BAD', () => {
    const { f, items } = framer();
    f.push(Buffer.from('t1 SEARCH ' + 'x'.repeat(80)));
    f.push(Buffer.from('y'.repeat(80)));
    f.push(Buffer.from('zz\r\nt2 NOOP\r\n'));
    expect(items[0]).toMatchObject({ kind: 'error', tag: 't1', status: 'BAD', message: 'Command line too long' });
    expect(text(items[1]).lines).toEqual(['t2 NOOP']);
  });

  test('many small literals cannot grow a command beyond the line limit', () => {
    const { f, items } = framer();
    f.push(Buffer.from('a X ' + '{0+}\r\n'.repeat(30) + '\r\n'));
    expect(items[0]).toMatchObject({ kind: 'error', tag: 'a', message: 'Command line too long' });
  });
});

describe('Reader', () => {
  test('atoms, quoted strings with escapes, literals, NIL', () => {
    const r = new Reader(frameOf('a1 LOGIN "b\\"o\\\\b" {4}\r\np w\r NIL\r\n'));
    expect(r.tag()).toBe('a1');
    r.sp();
    expect(r.atom()).toBe('LOGIN');
    r.sp();
    expect(r.astring()).toBe('b"o\\b');
    r.sp();
    expect(r.astring()).toBe('p w\r');
    r.sp();
    expect(r.nstring()).toBeNull();
    r.end();
  });

  test('lists, nested lists and flags', () => {
    const r = reader('(\\Seen $Label1 (a b) ())');
    const out = r.list(() => (r.peek() === 0x28 ? r.list(() => r.atom()).join('+') : r.flag()));
    expect(out).toEqual(['\\Seen', '$Label1', 'a+b', '']);
  });

  test('sequence sets', () => {
    const r = reader('1,3:5,7:*,*');
    const set = r.seqSet();
    expect(set).toEqual([[1, 1], [3, 5], [7, STAR], [STAR, STAR]]);
    expect(resolveSeqSet(set, 8)).toEqual([1, 3, 4, 5, 7, 8]);
    expect(resolveSeqSet([[10, STAR]], 4)).toEqual([4]);
    expect(resolveSeqSet([[5, 2]], 9)).toEqual([2, 3, 4, 5]);
  });

  test('grammar errors are ParseErrors with a reason', () => {
    expect(() => reader('"unterminated').quoted()).toThrow(ParseError);
    expect(() => reader('0:3').seqSet()).toThrow(/non-zero/);
    expect(() => reader('1,').seqSet()).toThrow(/sequence set/);
    expect(() => reader('"bad \\x escape"').quoted()).toThrow(/escape/);
    const r = reader('NOOP extra');
    r.atom();
    expect(() => r.end()).toThrow(/end of command/);
  });

  test('8-bit text in quoted strings and literals survives', () => {
    const frame = frameOf('"Grüße" {4}\r\nxxxx\r\n');
    frame.literals[0] = Buffer.from([0xff, 0x00, 0x0d, 0x0a]);
    const r = new Reader(frame);
    expect(r.astring()).toBe('Grüße');
    r.sp();
    expect([...r.astringBuf()]).toEqual([0xff, 0x00, 0x0d, 0x0a]);
  });
});

describe('FETCH attributes', () => {
  test('macros, sections, partials, modifiers', () => {
    expect(parseFetchRequest(reader('FAST')).items.map((i) => i.kind)).toEqual(['FLAGS', 'INTERNALDATE', 'RFC822.SIZE']);
    const req = parseFetchRequest(reader('(UID BODY.PEEK[HEADER.FIELDS (From "To")] BODY[1.2.MIME] body[]<10.20> RFC822.HEADER) (CHANGEDSINCE 5)'));
    expect(req.changedSince).toBe(5);
    expect(req.items[1]).toMatchObject({ kind: 'section', peek: true, section: { path: [], kind: 'HEADER.FIELDS', fields: ['From', 'To'] }, label: 'BODY[HEADER.FIELDS (From To)]' });
    expect(req.items[2]).toMatchObject({ section: { path: [1, 2], kind: 'MIME' }, label: 'BODY[1.2.MIME]' });
    expect(req.items[3]).toMatchObject({ peek: false, partial: { origin: 10, length: 20 }, label: 'BODY[]<10>' });
  });

  test('errors', () => {
    expect(() => parseFetchRequest(reader('(FLAGS BOGUS)'))).toThrow(/Unknown fetch attribute BOGUS/);
    expect(() => parseFetchRequest(reader('BODY[MIME]'))).toThrow(/MIME/);
    expect(() => parseFetchRequest(reader('BODY[1.FOO]'))).toThrow(/Invalid section/);
    expect(() => parseFetchRequest(reader('BODY[]<1.0>'))).toThrow(ParseError);
    expect(() => parseFetchRequest(reader('ALL FLAGS'))).toThrow(ParseError);
  });
});

describe('SEARCH keys', () => {
  test('a full program', () => {
    const key = parseSearch(reader('CHARSET UTF-8 OR (FROM "bob" UNSEEN) NOT SUBJECT {6}\r\nhällo SINCE 1-Feb-2024 UID 1:* 2,4'));
    expect(key).toMatchObject({
      op: 'and',
      keys: [
        { op: 'or', a: { op: 'and', keys: [{ op: 'header', field: 'from', value: 'bob' }, { op: 'flag', flag: '\\Seen', present: false }] }, b: { op: 'not', key: { op: 'header', field: 'subject', value: 'hällo' } } },
        { op: 'date', sent: false, cmp: 'since', day: Date.UTC(2024, 1, 1) / 86_400_000 },
        { op: 'uid', set: [[1, STAR]] },
        { op: 'seq', set: [[2, 2], [4, 4]] },
      ],
    });
  });

  test('unknown charsets and keys', () => {
    expect(() => parseSearch(reader('CHARSET KOI8-R ALL'))).toThrow(BadCharsetError);
    expect(() => parseSearch(reader('FROBNICATE'))).toThrow(/Unknown search key/);
    expect(() => parseSearch(reader('BEFORE 31-Foo-2020'))).toThrow(/Invalid date/);
    expect(() => parseSearch(reader('NOT '.repeat(200) + 'ALL'))).toThrow(/nested/);
  });
});

describe('encoding', () => {
  test('quoted strings, literals for 8-bit and CRLF, NIL, lists', () => {
    const out = Buffer.concat(encodeResponse(['a"b\\c', null, 5], 'Grüße', 'line\r\nbreak')).toString('utf8');
    expect(out).toBe('("a\\"b\\\\c" NIL 5) {7}\r\nGrüße {11}\r\nline\r\nbreak\r\n');
  });

  test('modified UTF-7 round trips', () => {
    expect(encodeMailboxName('Entwürfe & Co')).toBe('Entw&APw-rfe &- Co');
    expect(encodeMailboxName('日本語')).toBe('&ZeVnLIqe-');
    for (const name of ['Entwürfe & Co', '日本語/📧', 'plain', '&']) expect(decodeMailboxName(encodeMailboxName(name))).toBe(name);
    expect(decodeMailboxName('&AGE-')).toBeUndefined(); // "a" must not be encoded
    expect(decodeMailboxName('&Jjo')).toBeUndefined();
  });

  test('dates and UID lists', () => {
    expect(formatInternalDate(Date.UTC(2024, 0, 5, 3, 4, 5))).toBe(' 5-Jan-2024 03:04:05 +0000');
    expect(parseDateTime('17-Jul-1996 02:44:25 -0700')).toBe(Date.UTC(1996, 6, 17, 9, 44, 25));
    expect(parseDateTime(' 7-Jul-1996 02:44:25 +0000')).toBe(Date.UTC(1996, 6, 7, 2, 44, 25));
    expect(parseDateTime('17-Jux-1996 02:44:25 -0700')).toBeUndefined();
    expect(formatUidList([1, 2, 3, 5, 7, 8, 4])).toBe('1:3,5,7:8,4');
  });
});
