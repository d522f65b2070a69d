// The MIME walker and the built-in EICAR scanner, on messages built by nodemailer's MailComposer (a real MIME
// writer) and on hand-written ones where an encoding or a bound is the point.
import MailComposer from 'nodemailer/lib/mail-composer';
import { describe, expect, it } from 'vitest';
import { decodeQuotedPrintable, mimeParts, ScanLimitExceeded, type DecodedPart } from './mime.js';
import { builtinScanner, EICAR, isEicar } from './scanner.js';

const LIMITS = { maxDepth: 10, maxDecodedBytes: 1024 * 1024 };
const compose = (options: ConstructorParameters<typeof MailComposer>[0]) => new MailComposer({ from: 'alice@sender.test', to: 'bob@receiver.test', subject: 'test', ...options }).compile().build();
const parts = (message: Buffer): Array<Omit<DecodedPart, 'data'> & { text: string }> => [...mimeParts(message, LIMITS)].map(({ data, ...p }) => ({ ...p, text: data.toString('latin1') }));
const scanner = builtinScanner({ maxDecodedBytes: LIMITS.maxDecodedBytes });

describe('MIME walk', () => {
  it('numbers the parts as IMAP does and decodes base64 and quoted-printable, with file names', async () => {
    const inner = await compose({ subject: 'inner', text: 'inner text', attachments: [{ filename: 'inner.bin', content: Buffer.from('inner attachment'), contentType: 'application/octet-stream' }] });
    const message = await compose({
      text: 'caf\u00e9 = coffee',
      html: '<p>hello</p>',
      attachments: [
        { filename: 'r\u00e9sum\u00e9 2026.pdf', content: Buffer.from('%PDF-1.4 not really'), contentType: 'application/pdf' },
        { filename: 'forwarded.eml', content: inner, contentType: 'message/rfc822' },
      ],
    });
    expect(parts(message)).toEqual([
      { path: '1.1', type: 'text/plain', text: 'caf\u00c3\u00a9 = coffee' },
      { path: '1.2', type: 'text/html', text: '<p>hello</p>' },
      { path: '2', type: 'application/pdf', filename: 'r\u00e9sum\u00e9 2026.pdf', text: '%PDF-1.4 not really' },
      { path: '3.1', type: 'text/plain', text: 'inner text' },
      { path: '3.2', type: 'application/octet-stream', filename: 'inner.bin', text: 'inner attachment' },
    ]);
  });

  it('a single-part message is part 1; a single-part forwarded message is <its part>.1', () => {
    expect(parts(Buffer.from('Subject: x\r\n\r\nbody\r\n'))).toEqual([{ path: '1', type: 'text/plain', text: 'body\r\n' }]);
    const message = Buffer.from(['Content-Type: multipart/mixed; boundary="b"', '', '--b', '', 'first', '--b', 'Content-Type: message/rfc822', '', 'Subject: inner', '', 'inner body', '--b--', ''].join('\r\n'));
    expect(parts(message).map((p) => [p.path, p.text])).toEqual([['1', 'first'], ['2.1', 'inner body']]);
  });

  it('quoted-printable: soft line breaks, =XX octets, trailing white space dropped, a stray = kept', () => {
    expect(decodeQuotedPrintable(Buffer.from('a=3Db=\r\nc  \r\nd=\ne =ZZ=4')).toString('latin1')).toBe('a=bc\r\nde =ZZ=4');
  });

  it('a boundary that is the prefix of a longer one does not split, and a missing close delimiter ends at the end', () => {
    const message = Buffer.from(['Content-Type: multipart/mixed; boundary=b', '', 'preamble', '--b', '', 'one', '--bb not a delimiter', '--b   ', '', 'two'].join('\r\n'));
    expect(parts(message).map((p) => p.text)).toEqual(['one\r\n--bb not a delimiter', 'two']);
  });

  it('stops at the nesting bound, naming the part', () => {
    let message = 'Subject: leaf\r\n\r\nleaf\r\n';
    for (let i = 0; i < 11; i++) message = `Content-Type: message/rfc822\r\n\r\n${message}`;
    expect(() => parts(Buffer.from(message))).toThrow(ScanLimitExceeded);
    expect(() => parts(Buffer.from(message))).toThrow('MIME parts nested more than 10 deep (at part 1)');
    // Ten levels are fine.
    expect(parts(Buffer.from(message.slice(message.indexOf('\r\n\r\n') + 4)))).toEqual([{ path: '1.1', type: 'text/plain', text: 'leaf\r\n' }]);
  });

  it('stops at the bound on decoded octets, counted over every level', () => {
    const body = Buffer.alloc(600 * 1024, 'a').toString('base64');
    const message = Buffer.from(`Content-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n\r\n${body}\r\n`);
    expect(parts(message)).toHaveLength(1);
    // The same part inside a message/rfc822: its decoded form is counted at both levels.
    const wrapped = Buffer.concat([Buffer.from('Content-Type: message/rfc822\r\n\r\n'), message]);
    expect(() => parts(wrapped)).toThrow(/^more than 1048576 octets decoded \(at part 1\)$/);
  });
});

describe('built-in scanner: EICAR', () => {
  it('is the eicar.org rule: the 68 octets at the start, then only padding (space, tab, CR, LF, Ctrl-Z), 128 octets at most', () => {
    expect(EICAR.length).toBe(68);
    expect(isEicar(EICAR)).toBe(true);
    expect(isEicar(Buffer.concat([EICAR, Buffer.from(' \t\r\n\x1a')]))).toBe(true);
    expect(isEicar(Buffer.concat([EICAR, Buffer.alloc(60, ' ')]))).toBe(true);
    expect(isEicar(Buffer.concat([EICAR, Buffer.alloc(61, ' ')]))).toBe(false);
    expect(isEicar(Buffer.concat([EICAR, Buffer.from('\r\nmore')]))).toBe(false);
    expect(isEicar(Buffer.concat([Buffer.from(' '), EICAR]))).toBe(false);
    expect(isEicar(EICAR.subarray(0, 67))).toBe(false);
  });

  it('finds it as a base64 attachment, naming the part and file; quoted in the middle of a text it is not the test file', async () => {
    const message = await compose({ text: `The test string is ${EICAR.toString('latin1')}, see eicar.org.`, attachments: [{ filename: 'eicar.com', content: EICAR, contentType: 'application/octet-stream' }] });
    expect(await scanner.scan(message)).toEqual({ clean: false, scanner: 'builtin', signature: 'Eicar-Test-Signature', part: '2 (eicar.com)' });
    const quoted = await compose({ text: `The test string is ${EICAR.toString('latin1')}, see eicar.org.` });
    expect(await scanner.scan(quoted)).toEqual({ clean: true, scanner: 'builtin' });
  });

  it('turns a bound exceeded into a verdict named as ClamAV names it', async () => {
    let message = 'Subject: leaf\r\n\r\nleaf\r\n';
    for (let i = 0; i < 12; i++) message = `Content-Type: message/rfc822\r\n\r\n${message}`;
    expect(await scanner.scan(Buffer.from(message))).toEqual({ clean: false, scanner: 'builtin', signature: 'Heuristics.Limits.Exceeded.MaxRecursion', part: '1' });
  });
});
