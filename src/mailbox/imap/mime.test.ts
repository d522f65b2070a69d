import { describe, expect, test } from 'vitest';
import { encodeResponse, type ImapValue } from './encode.js';
import { FORWARD, MULTIPART, ODD_HEADERS, SIMPLE } from './fixtures.test-helper.js';
import { bodyStructure, bodyText, decodeHeaderValue, envelope, headerText, parseAddresses, parseMessage, sectionData, sentDay, type Section } from './mime.js';

/** The IMAP text of a value, without the final CRLF. */
const imap = (v: ImapValue) => Buffer.concat(encodeResponse(v)).toString('latin1').slice(0, -2);
const section = (raw: Buffer, s: Section) => sectionData(raw, parseMessage(raw), s)?.toString('utf8') ?? null;

describe('structure', () => {
  test('simple text message', () => {
    const tree = parseMessage(SIMPLE);
    expect(imap(bodyStructure(tree, true))).toBe('("TEXT" "PLAIN" ("CHARSET" "us-ascii") NIL NIL "7BIT" 31 2 NIL NIL NIL NIL)');
    expect(imap(bodyStructure(tree, false))).toBe('("TEXT" "PLAIN" ("CHARSET" "us-ascii") NIL NIL "7BIT" 31 2)');
    expect(imap(envelope(tree))).toBe(
      '("Fri, 02 Feb 2024 10:00:00 +0100" "Lunch on Friday" (("Alice Example" NIL "alice" "sender.test")) (("Alice Example" NIL "alice" "sender.test")) (("Alice Example" NIL "alice" "sender.test")) (("Bob" NIL "bob" "example.test")) NIL NIL NIL "<simple-1@sender.test>")',
    );
  });

  test('nested multiparts: boundaries, params, encoding, disposition, line counts', () => {
    const tree = parseMessage(MULTIPART);
    expect(imap(bodyStructure(tree, true))).toBe(
      '(' +
        '(("TEXT" "PLAIN" ("CHARSET" "utf-8") NIL NIL "QUOTED-PRINTABLE" 41 2 NIL NIL NIL NIL)' +
        '("TEXT" "HTML" ("CHARSET" "utf-8") NIL NIL "7BIT" 22 1 NIL NIL NIL NIL) "ALTERNATIVE" ("BOUNDARY" "inner") NIL NIL NIL)' +
        '("APPLICATION" "PDF" ("NAME" "report.pdf") "<pdf@sender.test>" "The report" "BASE64" 20 NIL ("ATTACHMENT" ("FILENAME" "report.pdf")) NIL NIL)' +
        ' "MIXED" ("BOUNDARY" "outer-b") NIL NIL NIL)',
    );
    expect(imap(bodyStructure(tree, false))).toBe(
      '((("TEXT" "PLAIN" ("CHARSET" "utf-8") NIL NIL "QUOTED-PRINTABLE" 41 2)("TEXT" "HTML" ("CHARSET" "utf-8") NIL NIL "7BIT" 22 1) "ALTERNATIVE")' +
        '("APPLICATION" "PDF" ("NAME" "report.pdf") "<pdf@sender.test>" "The report" "BASE64" 20) "MIXED")',
    );
  });

  test('envelope: groups, In-Reply-To, raw encoded words, quoted display names', () => {
    const env = imap(envelope(parseMessage(MULTIPART)));
    expect(env).toBe(
      '("Sat, 3 Feb 2024 08:30:00 -0500" "=?UTF-8?Q?Gr=C3=BC=C3=9Fe?= =?UTF-8?B?YXVzIEvDtmxu?="' +
        ' (("Carol, C." NIL "carol" "sender.test")) (("Carol, C." NIL "carol" "sender.test")) (("Carol, C." NIL "carol" "sender.test"))' +
        ' ((NIL NIL "bob" "example.test")("Dave" NIL "dave" "example.test"))' +
        ' ((NIL NIL "undisclosed-recipients" NIL)(NIL NIL NIL NIL)) NIL "<simple-1@sender.test>" "<multi-2@sender.test>")',
    );
  });

  test('message/rfc822 parts carry envelope, structure and lines', () => {
    const tree = parseMessage(FORWARD);
    const bs = imap(bodyStructure(tree, false));
    expect(bs).toBe(
      `(("TEXT" "PLAIN" NIL NIL NIL "7BIT" 10 1)("MESSAGE" "RFC822" NIL NIL NIL "7BIT" ${SIMPLE.length - 2}` +
        ' ("Fri, 02 Feb 2024 10:00:00 +0100" "Lunch on Friday" (("Alice Example" NIL "alice" "sender.test")) (("Alice Example" NIL "alice" "sender.test")) (("Alice Example" NIL "alice" "sender.test")) (("Bob" NIL "bob" "example.test")) NIL NIL NIL "<simple-1@sender.test>")' +
        ' ("TEXT" "PLAIN" ("CHARSET" "us-ascii") NIL NIL "7BIT" 29 2) 8) "MIXED")',
    );
  });

  test('odd headers: 8-bit subject as literal, routes, comments, groups, missing domain, folding', () => {
    const tree = parseMessage(ODD_HEADERS);
    const env = imap(envelope(tree));
    expect(env).toContain('{10}\r\ncaf\xe9 8-bit');
    expect(env).toContain('(("Alice in a comment" NIL "alice" "sender.test"))');
    expect(env).toContain('((NIL "@relay.test,@hop.test" "owner" "sender.test"))');
    expect(env).toContain('((NIL NIL "Team" NIL)(NIL NIL "a" "x.test")("B \\"Q\\"" NIL "b" "x.test")(NIL NIL NIL NIL)(NIL NIL "c" "y.test"))');
    expect(env).toContain('((NIL NIL "localonly" "MISSING_DOMAIN"))');
    expect(tree.headers.find((h) => h.name === 'x-folded')?.value).toBe('first\tsecond');
  });

  test('forgiving: no header/body separator, LF line ends, unterminated multipart, multipart without boundary', () => {
    expect(imap(bodyStructure(parseMessage(Buffer.from('Subject: x\r\n')), false))).toBe('("TEXT" "PLAIN" ("CHARSET" "us-ascii") NIL NIL "7BIT" 0 0)');
    const lf = parseMessage(Buffer.from('Subject: lf\nContent-Type: multipart/mixed; boundary=b\n\n--b\n\none\n--b\nContent-Type: text/html\n\ntwo'));
    expect(imap(bodyStructure(lf, false))).toBe('(("TEXT" "PLAIN" ("CHARSET" "us-ascii") NIL NIL "7BIT" 3 1)("TEXT" "HTML" NIL NIL NIL "7BIT" 3 1) "MIXED")');
    const noBoundary = parseMessage(Buffer.from('Content-Type: multipart/mixed\r\n\r\nhello\r\n'));
    expect(imap(bodyStructure(noBoundary, false))).toBe('(("TEXT" "PLAIN" NIL NIL NIL "7BIT" 7 1) "MIXED")');
  });

  test('deep nesting stops at a bound instead of exhausting the stack', () => {
    let msg = 'text';
    for (let i = 0; i < 2000; i++) msg = `Content-Type: message/rfc822\r\n\r\n${msg}`;
    expect(() => bodyStructure(parseMessage(Buffer.from(msg)), true)).not.toThrow();
  });
});

describe('sections', () => {
  test('whole, HEADER, TEXT, HEADER.FIELDS (.NOT)', () => {
    expect(section(SIMPLE, { path: [], kind: '' })).toBe(SIMPLE.toString());
    expect(section(SIMPLE, { path: [], kind: 'HEADER' })).toMatch(/^From: .*\r\n\r\n$/s);
    expect(section(SIMPLE, { path: [], kind: 'TEXT' })).toBe('Shall we meet at noon?\r\nAlice\r\n');
    expect(section(SIMPLE, { path: [], kind: 'HEADER.FIELDS', fields: ['SUBJECT', 'to'] })).toBe('To: Bob <bob@example.test>\r\nSubject: Lunch on Friday\r\n\r\n');
    expect(section(MULTIPART, { path: [], kind: 'HEADER.FIELDS', fields: ['content-type'] })).toBe('Content-Type: multipart/mixed;\r\n boundary="outer-b"\r\n\r\n');
    expect(section(SIMPLE, { path: [], kind: 'HEADER.FIELDS.NOT', fields: ['From', 'To', 'Date', 'Message-ID'] })).toBe('Subject: Lunch on Friday\r\n\r\n');
    expect(section(SIMPLE, { path: [], kind: 'HEADER.FIELDS', fields: ['X-None'] })).toBe('\r\n');
  });

  test('numbered parts, MIME headers, parts of encapsulated messages', () => {
    expect(section(SIMPLE, { path: [1], kind: '' })).toBe('Shall we meet at noon?\r\nAlice\r\n');
    expect(section(MULTIPART, { path: [1, 1], kind: '' })).toBe('Sch=C3=B6ne Gr=C3=BC=C3=9Fe\r\nzweite Zeile');
    expect(section(MULTIPART, { path: [1, 2], kind: 'MIME' })).toBe('Content-Type: text/html; charset="utf-8"\r\n\r\n');
    expect(section(MULTIPART, { path: [2], kind: '' })).toBe('JVBERi0xLjQKJcfsj6IK');
    expect(section(MULTIPART, { path: [1], kind: 'MIME' })).toBe('Content-Type: multipart/alternative; boundary=inner\r\n\r\n');
    expect(section(FORWARD, { path: [2], kind: '' })).toBe(SIMPLE.toString().slice(0, -2));
    expect(section(FORWARD, { path: [2], kind: 'HEADER.FIELDS', fields: ['Subject'] })).toBe('Subject: Lunch on Friday\r\n\r\n');
    expect(section(FORWARD, { path: [2], kind: 'TEXT' })).toBe('Shall we meet at noon?\r\nAlice');
    expect(section(FORWARD, { path: [2, 1], kind: '' })).toBe('Shall we meet at noon?\r\nAlice');
  });

  test('missing parts and misplaced HEADER/TEXT give NIL', () => {
    expect(section(SIMPLE, { path: [2], kind: '' })).toBeNull();
    expect(section(MULTIPART, { path: [3], kind: '' })).toBeNull();
    expect(section(MULTIPART, { path: [2, 1], kind: '' })).toBeNull();
    expect(section(MULTIPART, { path: [2], kind: 'TEXT' })).toBeNull();
  });
});

describe('decoding for SEARCH', () => {
  test('encoded words, QP bodies, charsets', () => {
    const tree = parseMessage(MULTIPART);
    expect(decodeHeaderValue(tree.headers.find((h) => h.name === 'subject')!.value)).toBe('Grüßeaus Köln');
    expect(bodyText(MULTIPART, tree)).toContain('Schöne Grüße');
    expect(headerText(tree)).toContain('subject: Grüße');
    expect(decodeHeaderValue('=?iso-8859-1?q?caf=E9?= ok')).toBe('café ok');
  });

  test('sent date in its own zone', () => {
    expect(sentDay(parseMessage(SIMPLE))).toBe(Date.UTC(2024, 1, 2) / 86_400_000);
  });

  test('address lists', () => {
    expect(parseAddresses('a@b.c, "X, Y" <x@y.z>')).toEqual([
      { mailbox: 'a', host: 'b.c' },
      { name: 'X, Y', mailbox: 'x', host: 'y.z' },
    ]);
  });
});
