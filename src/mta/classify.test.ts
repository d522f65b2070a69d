import { describe, expect, it } from 'vitest';
import { parseReply, SmtpClientError } from '../shared/smtp-client.js';
import { classifyClientError, classifyRecipient, classifyReply, classifyReplyText, statusFor, tryNextHost } from './classify.js';

describe('parseReply', () => {
  it('splits code, enhanced code and text', () => {
    expect(parseReply('550 5.1.1 <bob@x.test>: no such user')).toEqual({ code: 550, enhanced: '5.1.1', text: '<bob@x.test>: no such user' });
    expect(parseReply('451 try later')).toEqual({ code: 451, text: 'try later' });
    expect(parseReply('250-first\r\n250 2.0.0 second')).toEqual({ code: 250, text: 'first second' });
    expect(parseReply('554-5.7.1 line one\n554 5.7.1 line two')).toEqual({ code: 554, enhanced: '5.7.1', text: 'line one line two' });
    expect(parseReply('garbage')).toEqual({ text: 'garbage' });
  });
});

describe('classifyReply', () => {
  it('2xx delivers, 4xx defers, 5xx bounces', () => {
    expect(classifyReply(250)).toEqual({ action: 'delivered', status: '2.0.0' });
    expect(classifyReply(451, '4.7.1')).toEqual({ action: 'defer', status: '4.7.1' });
    expect(classifyReply(421)).toEqual({ action: 'defer', status: '4.0.0' });
    expect(classifyReply(550, '5.1.1')).toEqual({ action: 'bounce', status: '5.1.1' });
    expect(classifyReply(554)).toEqual({ action: 'bounce', status: '5.0.0' });
  });

  it('never retries a 5xx, whatever the enhanced code says', () => {
    expect(classifyReply(550, '4.2.2')).toEqual({ action: 'bounce', status: '5.2.2' });
    expect(classifyReply(503)).toEqual({ action: 'bounce', status: '5.0.0' });
    expect(classifyReply(452, '5.2.2')).toEqual({ action: 'defer', status: '4.2.2' });
  });

  it('defers on what is not a final reply', () => {
    expect(classifyReply(354)).toEqual({ action: 'defer', status: '4.5.0' });
    expect(classifyReply(undefined)).toEqual({ action: 'defer', status: '4.5.0' });
    expect(classifyReplyText('hello')).toEqual({ action: 'defer', status: '4.5.0' });
    expect(classifyReplyText('552 5.3.4 too big')).toEqual({ action: 'bounce', status: '5.3.4' });
  });

  it('statusFor prefers a consistent enhanced code', () => {
    expect(statusFor(550, '5.7.1')).toBe('5.7.1');
    expect(statusFor(250, undefined)).toBe('2.0.0');
    expect(statusFor(undefined, '4.4.1')).toBe('4.4.1');
    expect(statusFor(undefined, undefined, '4.4.2')).toBe('4.4.2');
  });
});

describe('reply code boundaries', () => {
  it('classifies by the exact class ranges 2xx, 4xx, 5xx', () => {
    const action = (code: number) => classifyReply(code).action;
    expect([199, 200, 299, 300, 399, 400, 499, 500, 599, 600].map((code) => [code, action(code)])).toEqual([
      [199, 'defer'],
      [200, 'delivered'],
      [299, 'delivered'],
      [300, 'defer'],
      [399, 'defer'],
      [400, 'defer'],
      [499, 'defer'],
      [500, 'bounce'],
      [599, 'bounce'],
      [600, 'defer'],
    ]);
    // At the edges of each class the status is the class's own (X.0.0), not a protocol error.
    expect([200, 299, 400, 499, 500, 599].map((code) => classifyReply(code).status)).toEqual(['2.0.0', '2.0.0', '4.0.0', '4.0.0', '5.0.0', '5.0.0']);
    // Outside the three classes the status says protocol error, whatever the code.
    expect(classifyReply(199)).toEqual({ action: 'defer', status: '4.5.0' });
    expect(classifyReply(300)).toEqual({ action: 'defer', status: '4.5.0' });
    expect(classifyReply(600)).toEqual({ action: 'defer', status: '4.5.0' });
  });

  it('statusFor takes only a well-formed enhanced code (class, then 1-3 digits, twice)', () => {
    expect(statusFor(554, '5.7.26')).toBe('5.7.26');
    expect(statusFor(550, '5.10.1')).toBe('5.10.1');
    expect(statusFor(550, '5.1.1x')).toBe('5.0.0');
    expect(statusFor(550, 'x5.1.1')).toBe('5.0.0');
    expect(statusFor(550, '5.1234.1')).toBe('5.0.0');
    expect(statusFor(550, '3.1.1')).toBe('5.0.0');
    // Without a reply class: the enhanced code if well-formed, else the fallback (4.0.0 unless told).
    expect(statusFor(undefined)).toBe('4.0.0');
    expect(statusFor(354)).toBe('4.0.0');
    expect(statusFor(354, '2.0.0')).toBe('2.0.0');
    expect(statusFor(undefined, '4.4.1x', '4.4.2')).toBe('4.4.2');
  });
});

describe('classifyRecipient', () => {
  it('calls an accepted recipient without a code delivered with 2.0.0', () => {
    expect(classifyRecipient({ accepted: true, code: undefined as never })).toEqual({ action: 'delivered', status: '2.0.0' });
  });

  it('uses the recipient reply', () => {
    expect(classifyRecipient({ accepted: true, code: 250, enhanced: '2.6.0' })).toEqual({ action: 'delivered', status: '2.6.0' });
    expect(classifyRecipient({ accepted: false, code: 550, enhanced: '5.1.1' })).toEqual({ action: 'bounce', status: '5.1.1' });
    expect(classifyRecipient({ accepted: false, code: 450 })).toEqual({ action: 'defer', status: '4.0.0' });
    expect(classifyRecipient({ accepted: false, code: 250 })).toEqual({ action: 'defer', status: '4.5.0' });
  });
});

describe('classifyClientError', () => {
  const error = (init: Partial<ConstructorParameters<typeof SmtpClientError>[0]>) =>
    new SmtpClientError({ stage: 'connect', target: 'mx.test[127.0.0.9]:25', command: 'connect', description: 'x', ...init });

  it('defers connection failures and timeouts', () => {
    const refused = error({ errno: 'ECONNREFUSED' });
    expect(refused.temporary).toBe(true);
    expect(classifyClientError(refused)).toEqual({ action: 'defer', status: '4.4.1' });
    expect(classifyClientError(error({ stage: 'greeting', errno: 'ETIMEDOUT' }))).toEqual({ action: 'defer', status: '4.4.1' });
    expect(classifyClientError(error({ stage: 'data', errno: 'ECONNECTION' }))).toEqual({ action: 'defer', status: '4.4.2' });
  });

  it('follows the reply code when there is one', () => {
    const mail = error({ stage: 'mail', command: 'MAIL FROM:<a@b.test>', reply: '553 5.7.1 sender rejected' });
    expect(mail.code).toBe(553);
    expect(mail.enhanced).toBe('5.7.1');
    expect(mail.temporary).toBe(false);
    expect(classifyClientError(mail)).toEqual({ action: 'bounce', status: '5.7.1' });
    expect(classifyClientError(error({ stage: 'greeting', reply: '421 4.3.2 busy' }))).toEqual({ action: 'defer', status: '4.3.2' });
    expect(classifyClientError(error({ stage: 'mail', code: 552, enhanced: '5.3.4', temporary: false }))).toEqual({ action: 'bounce', status: '5.3.4' });
  });

  it('names the hop, the command and the reply in its message', () => {
    const err = error({ stage: 'mail', command: 'MAIL FROM:<a@b.test>', description: 'MAIL FROM:<a@b.test> refused', reply: '550 5.7.1 no' });
    expect(err.message).toBe('mx.test[127.0.0.9]:25: MAIL FROM:<a@b.test> refused: 550 5.7.1 no');
    expect(error({ description: 'cannot connect: connection refused', errno: 'ECONNREFUSED' }).message).toBe('mx.test[127.0.0.9]:25: cannot connect: connection refused (ECONNREFUSED)');
  });

  it('never calls a transaction that failed as a whole delivered, even with a 2xx code', () => {
    expect(classifyClientError(error({ stage: 'data', code: 250, reply: '250 ok' }))).toEqual({ action: 'defer', status: '4.5.0' });
  });

  it('tries the next MX only for failures before the transaction', () => {
    expect(tryNextHost({ stage: 'connect' })).toBe(true);
    expect(tryNextHost({ stage: 'greeting', code: 421 })).toBe(true);
    expect(tryNextHost({ stage: 'ehlo', code: 550 })).toBe(true);
    expect(tryNextHost({ stage: 'mail', code: 451 })).toBe(false);
    expect(tryNextHost({ stage: 'data' })).toBe(false);
  });
});
