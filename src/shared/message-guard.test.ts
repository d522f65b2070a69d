import { describe, expect, it } from 'vitest';
import { headerSectionProblem } from './message-guard.js';

const check = (text: string) => headerSectionProblem(Buffer.from(text, 'latin1'));

describe('headerSectionProblem', () => {
  it('accepts a header section with CRLF line ends, folded lines and any body', () => {
    expect(check('Subject: x\r\nFrom: a@b.test\r\n\r\nbody\r\n')).toBeUndefined();
    expect(check('Subject: a\r\n\tlong one\r\n\r\n')).toBeUndefined();
    // The body is not the header section: bare CR / LF there are left to the hops that normalise line ends.
    expect(check('Subject: x\r\n\r\nbody\rwith\nbare\n.\nends\r.\r')).toBeUndefined();
    expect(check('')).toBeUndefined();
    expect(check('\r\nno headers at all\n')).toBeUndefined();
    expect(check('Subject: headers only\r\n')).toBeUndefined();
  });

  it('refuses a bare CR in a header, naming the line', () => {
    expect(check('From: a@b.test\r\nSubject: x\rBcc: <carol@receiver.test>\r\n\r\nhi\r\n')).toBe(
      'message header contains a bare CR (header line 2); header lines must end with CRLF',
    );
    // `\r\r` would end the header section early on a hop that reads CR as a line end.
    expect(check('Subject: x\r\rInjected: y\r\n\r\n')).toMatch(/bare CR \(header line 1\)/);
    // A header section that ends the message with a lone CR.
    expect(check('Subject: x\r')).toMatch(/bare CR/);
  });

  it('refuses a bare LF in a header, and an empty line made of LFs', () => {
    expect(check('Subject: x\nBcc: carol@receiver.test\r\n\r\n')).toMatch(/bare LF \(header line 1\)/);
    expect(check('Subject: x\n\nbody')).toMatch(/bare LF/);
    // The section ends only at an empty CRLF line: `CRLF LF` is not one.
    expect(check('Subject: x\r\n\nBcc: y\r\n\r\n')).toMatch(/bare LF \(header line 2\)/);
    expect(check('Subject: x\r\n\r\r\n')).toMatch(/bare CR \(header line 2\)/); // no CRLF CRLF: all of it is header
  });
});
