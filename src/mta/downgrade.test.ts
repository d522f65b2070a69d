// The 8-bit → 7-bit conversion (downgrade.ts) on its own: every result is checked to be 7-bit and to decode, with
// mailparser, to what the original decodes to.
import { simpleParser } from 'mailparser';
import { describe, expect, it } from 'vitest';
import { has8BitOctets } from '../shared/smtp-client.js';
import { convertTo7bit, quotedPrintable } from './downgrade.js';

const crlf = (text: string) => Buffer.from(text.replace(/\r?\n/g, '\r\n'), 'utf8');

describe('convertTo7bit', () => {
  it('leaves a 7-bit message byte for byte (the same buffer: the pool then reports no conversion)', () => {
    const raw = crlf('From: a@sender.test\nSubject: plain\n\nascii only\n');
    expect(convertTo7bit(raw)).toBe(raw);
  });

  it('makes a message without MIME headers text/plain in quoted-printable, saying the charset it is in', async () => {
    const raw = crlf(`From: a@sender.test\nSubject: no MIME\n\nnaïve line with a trailing space \n= sign\n${'ä'.repeat(40)}\n`);
    const out = convertTo7bit(raw);
    expect(has8BitOctets(out)).toBe(false);
    const text = out.toString('latin1');
    expect(text).toContain('MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n');
    expect(text).toContain('naïve'.replace('ï', '=C3=AF'));
    expect(text).toContain('trailing space=20\r\n'); // whitespace before a line break is encoded (RFC 2045 §6.7 rule 3)
    expect(text).toContain('=3D sign');
    expect((await simpleParser(out)).text).toBe((await simpleParser(raw)).text);
    // Not UTF-8: the charset is not guessed.
    const latin1 = Buffer.concat([crlf('Subject: x\n\n'), Buffer.from('caf\xe9\r\n', 'latin1')]);
    expect(convertTo7bit(latin1).toString('latin1')).toContain('charset=unknown-8bit');
  });

  it('converts the parts of a multipart and of a message/rfc822 inside it, and keeps 7-bit parts as they were', async () => {
    const raw = crlf(`From: a@sender.test
MIME-Version: 1.0
Content-Type: multipart/mixed; boundary=x

--x
Content-Type: text/plain

ascii only, untouched
--x
Content-Type: message/rfc822

Subject: inner
MIME-Version: 1.0
Content-Type: text/plain; charset=utf-8
Content-Transfer-Encoding: 8bit

Über den Wolken
--x--
`);
    const out = convertTo7bit(raw);
    expect(has8BitOctets(out)).toBe(false);
    const text = out.toString('latin1');
    expect(text).toContain('--x\r\nContent-Type: text/plain\r\n\r\nascii only, untouched\r\n--x\r\n');
    expect(text).toContain('Content-Type: message/rfc822\r\n\r\nSubject: inner\r\n');
    expect(text).toContain('Content-Transfer-Encoding: quoted-printable\r\n\r\n=C3=9Cber den Wolken');
    expect(text.endsWith('--x--\r\n')).toBe(true);
    const [before, after] = await Promise.all([simpleParser(raw), simpleParser(out)]);
    // The inner message reads the same once parsed in turn.
    const inner = async (parsed: typeof before) => (await simpleParser(parsed.attachments[0]!.content)).text;
    expect(await inner(after)).toBe(await inner(before));
    expect(await inner(after)).toContain('Über den Wolken');
    expect(after.text).toBe(before.text);
  });

  it('breaks quoted-printable lines softly before 76 characters, never inside an escape', () => {
    const encoded = quotedPrintable(Buffer.from(`${'x'.repeat(70)}${'é'.repeat(10)}\r\nnext`, 'utf8'));
    const lines = encoded.split('\r\n');
    expect(lines.every((l) => l.length <= 76)).toBe(true);
    expect(lines.slice(0, -2).every((l) => l.endsWith('='))).toBe(true);
    expect(lines.at(-1)).toBe('next');
    const decoded = Buffer.from(encoded.replace(/=\r\n/g, '').replace(/=([0-9A-F]{2})/g, (_, h: string) => String.fromCharCode(parseInt(h, 16))), 'latin1').toString('utf8');
    expect(decoded).toBe(`${'x'.repeat(70)}${'é'.repeat(10)}\r\nnext`);
  });

  it('refuses, saying where, what it cannot convert', () => {
    expect(() => convertTo7bit(crlf('Subject: Grüße\n\nbody\n'))).toThrow('the header section of the message has 8-bit octets (that needs SMTPUTF8)');
    expect(() => convertTo7bit(crlf('MIME-Version: 1.0\nContent-Type: multipart/mixed; boundary=x\n\n--x\nContent-Transfer-Encoding: base64\n\nnot base64: ü\n--x--\n'))).toThrow(
      'part 1 says it is base64 but has 8-bit octets',
    );
    expect(() => convertTo7bit(crlf('MIME-Version: 1.0\nContent-Type: multipart/mixed; boundary=x\n\npreamble ü\n--x\n\nbody\n--x--\n'))).toThrow('the preamble of the message has 8-bit octets');
  });
});
