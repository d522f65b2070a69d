import { simpleParser } from 'mailparser';
import { describe, expect, it } from 'vitest';
import { buildDsn, type DsnInput } from './dsn.js';

/** Header fields of a message/delivery-status body: the per-message block, then one block per recipient. */
function statusBlocks(text: string): Record<string, string>[] {
  return text
    .replace(/\r\n/g, '\n')
    .replace(/\n[ \t]+/g, ' ')
    .trim()
    .split(/\n\n+/)
    .map((block) => Object.fromEntries(block.split('\n').map((line) => [line.slice(0, line.indexOf(':')), line.slice(line.indexOf(':') + 1).trim()])));
}

const input: DsnInput = {
  reportingMta: 'mta.sender.test',
  originalSender: 'alice@sender.test',
  originalQueueId: '18F00000000001ABCD',
  originalMessageId: '<orig@sender.test>',
  arrival: Date.UTC(2026, 0, 2, 3, 4, 5),
  originalHeaders: 'Received: from x\r\nFrom: alice@sender.test\r\nTo: bob@receiver.test\r\nSubject: Hello there\r\nMessage-ID: <orig@sender.test>\r\n',
  recipients: [
    {
      address: 'bob@receiver.test',
      status: '5.1.1',
      description: 'mx.receiver.test[127.0.0.7]:25 said: 550 5.1.1 <bob@receiver.test>: no such user (in reply to RCPT TO:<bob@receiver.test>)',
      remoteMta: 'mx.receiver.test',
      remoteReply: '550 5.1.1 <bob@receiver.test>: no such user',
      lastAttempt: Date.UTC(2026, 0, 2, 3, 4, 6),
    },
    {
      address: 'eve@nomail.test',
      status: '5.1.10',
      description: 'mta.sender.test (MX lookup for nomail.test): domain nomail.test accepts no mail (null MX, RFC 7505)',
      lastAttempt: Date.UTC(2026, 0, 2, 3, 4, 6),
    },
    {
      address: 'dan@slow.test',
      status: '4.4.7',
      description: 'message expired after 60 s in the queue; last error: connect to mx.slow.test[127.0.0.8]:25: connection refused',
      lastAttempt: Date.UTC(2026, 0, 2, 3, 5, 5),
      expired: true,
    },
  ],
  messageId: '<20260102030406.18F0000000000200AA@mta.sender.test>',
  date: Date.UTC(2026, 0, 2, 3, 5, 6),
};

describe('buildDsn', () => {
  it('is an RFC 3464 multipart/report that parses back', async () => {
    const raw = buildDsn(input);
    const text = raw.toString('utf8');
    expect(text).not.toMatch(/[^\r]\n/); // CRLF only
    const parsed = await simpleParser(raw, { keepDeliveryStatus: true });

    expect(parsed.from?.value[0]).toMatchObject({ address: 'MAILER-DAEMON@mta.sender.test' });
    expect(parsed.to && !Array.isArray(parsed.to) ? parsed.to.value[0]?.address : undefined).toBe('alice@sender.test');
    expect(parsed.subject).toBe('Undelivered Mail Returned to Sender');
    expect(parsed.messageId).toBe(input.messageId);
    expect(parsed.inReplyTo).toBe('<orig@sender.test>');
    expect(parsed.headers.get('auto-submitted')).toBe('auto-replied');
    const contentType = parsed.headers.get('content-type') as { value: string; params: Record<string, string> };
    expect(contentType.value).toBe('multipart/report');
    expect(contentType.params['report-type']).toBe('delivery-status');

    // Human-readable part names each failed recipient and its error.
    expect(parsed.text).toContain('<bob@receiver.test>');
    expect(parsed.text).toContain('550 5.1.1 <bob@receiver.test>: no such user');
    expect(parsed.text).toContain('<eve@nomail.test>');
    expect(parsed.text).toContain('null MX');
    expect(parsed.text).toContain('<dan@slow.test>: delivery time expired');

    const types = parsed.attachments.map((a) => a.contentType);
    expect(types).toEqual(['message/delivery-status', 'text/rfc822-headers']);

    const [perMessage, bob, eve, dan] = statusBlocks(parsed.attachments[0]!.content.toString('utf8'));
    expect(perMessage).toMatchObject({ 'Reporting-MTA': 'dns; mta.sender.test', 'Arrival-Date': 'Fri, 02 Jan 2026 03:04:05 +0000', 'X-Maillab-Queue-ID': '18F00000000001ABCD' });
    expect(bob).toEqual({
      'Final-Recipient': 'rfc822; bob@receiver.test',
      Action: 'failed',
      Status: '5.1.1',
      'Remote-MTA': 'dns; mx.receiver.test',
      'Diagnostic-Code': 'smtp; 550 5.1.1 <bob@receiver.test>: no such user',
      'Last-Attempt-Date': 'Fri, 02 Jan 2026 03:04:06 +0000',
    });
    expect(eve).toMatchObject({ 'Final-Recipient': 'rfc822; eve@nomail.test', Action: 'failed', Status: '5.1.10' });
    expect(eve!['Remote-MTA']).toBeUndefined();
    expect(eve!['Diagnostic-Code']).toMatch(/^X-Maillab; .*null MX/);
    expect(dan).toMatchObject({ 'Final-Recipient': 'rfc822; dan@slow.test', Action: 'failed', Status: '4.4.7' });

    const headers = parsed.attachments[1]!.content.toString('utf8');
    expect(headers).toContain('Subject: Hello there\r\n');
    expect(headers).toContain('Message-ID: <orig@sender.test>');
    expect(headers).not.toContain('hello body');
  });

  it('folds multi-line replies in Diagnostic-Code', async () => {
    const raw = buildDsn({
      ...input,
      recipients: [{ ...input.recipients[0]!, remoteReply: '550-5.7.1 first line\r\n550 5.7.1 second line' }],
    });
    const parsed = await simpleParser(raw, { keepDeliveryStatus: true });
    const [, rcpt] = statusBlocks(parsed.attachments[0]!.content.toString('utf8'));
    expect(rcpt!['Diagnostic-Code']).toBe('smtp; 550-5.7.1 first line 550 5.7.1 second line');
  });

  it('refuses to build a DSN without failed recipients', () => {
    expect(() => buildDsn({ ...input, recipients: [] })).toThrow();
  });
});
