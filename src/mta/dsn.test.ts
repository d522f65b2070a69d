import { simpleParser } from 'mailparser';
import { afterEach, describe, expect, it, vi } from 'vitest';
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
    expect(() => buildDsn({ ...input, recipients: [] })).toThrow('a DSN needs at least one failed recipient');
  });
});

/** The DSN as text, its random boundary replaced by BOUNDARY, split at CRLF. */
function lines(raw: Buffer, queueId: string, encoding: BufferEncoding): string[] {
  return raw
    .toString(encoding)
    .replace(new RegExp(`=_dsn_${queueId}_[0-9a-f]{12}`, 'g'), 'BOUNDARY')
    .split('\r\n');
}

const preamble = (messageId: string, ...extra: string[]) => [
  'From: Mail Delivery System <MAILER-DAEMON@mta.sender.test>',
  'To: <alice@sender.test>',
  'Subject: Undelivered Mail Returned to Sender',
  'Date: Fri, 02 Jan 2026 03:05:06 +0000',
  `Message-ID: ${messageId}`,
  ...extra,
  'Auto-Submitted: auto-replied',
  'MIME-Version: 1.0',
  'Content-Type: multipart/report; report-type=delivery-status;',
  '\tboundary="BOUNDARY"',
  '',
  'This is a MIME-encapsulated message (a delivery status notification, RFC 3464).',
  '',
];

describe('buildDsn, byte for byte', () => {
  afterEach(() => {
    vi.useRealTimers();
  });

  it('one expired recipient with a multi-line remote reply; the original headers as raw bytes, normalized', () => {
    const raw = buildDsn({
      reportingMta: 'mta.sender.test',
      originalSender: 'alice@sender.test',
      originalQueueId: 'Q1',
      arrival: Date.UTC(2026, 0, 2, 3, 4, 5),
      // LF line ends, 8-bit (Latin-1) text, and trailing empty lines.
      originalHeaders: Buffer.from('From: alice@sender.test\nSubject: caf\xe9\n\n\n', 'latin1'),
      recipients: [
        {
          address: 'bob@receiver.test',
          status: '4.4.7',
          description: 'message expired after 60 s in the queue; last error: mx.receiver.test[127.0.0.7]:25 said: 451 4.3.0 try again later, the mailbox server is busy',
          remoteMta: 'mx.receiver.test',
          remoteReply: '451-4.3.0 try again later\r\n\r\n451 4.3.0 the mailbox server is busy',
          lastAttempt: Date.UTC(2026, 0, 2, 3, 5, 5),
          expired: true,
        },
      ],
      messageId: '<dsn1@mta.sender.test>',
      date: Date.UTC(2026, 0, 2, 3, 5, 6),
    });
    expect(lines(raw, 'Q1', 'latin1')).toEqual([
      ...preamble('<dsn1@mta.sender.test>'),
      '--BOUNDARY',
      'Content-Description: Notification',
      'Content-Type: text/plain; charset=utf-8',
      'Content-Transfer-Encoding: 7bit',
      '',
      'This is the mail delivery system at mta.sender.test.',
      '',
      'Your message could not be delivered to one recipient.',
      'It was queued as Q1 on Fri, 02 Jan 2026 03:04:05 +0000.',
      'The headers of your message are attached.',
      '',
      '<bob@receiver.test>: delivery time expired, gave up (status 4.4.7)',
      '    message expired after 60 s in the queue; last error: mx.receiver.test[127.0.0.7]:25 said: 451 4.3.0 try again later, the mailbox server is busy',
      '    mx.receiver.test replied: 451-4.3.0 try again later 451 4.3.0 the mailbox server is busy',
      '',
      '--BOUNDARY',
      'Content-Description: Delivery report',
      'Content-Type: message/delivery-status',
      'Content-Transfer-Encoding: 7bit',
      '',
      'Reporting-MTA: dns; mta.sender.test',
      'X-Maillab-Queue-ID: Q1',
      'X-Maillab-Sender: rfc822; alice@sender.test',
      'Arrival-Date: Fri, 02 Jan 2026 03:04:05 +0000',
      '',
      'Final-Recipient: rfc822; bob@receiver.test',
      'Action: failed',
      'Status: 4.4.7',
      'Remote-MTA: dns; mx.receiver.test',
      'Diagnostic-Code: smtp; 451-4.3.0 try again later',
      ' 451 4.3.0 the mailbox server is busy',
      'Last-Attempt-Date: Fri, 02 Jan 2026 03:05:05 +0000',
      '',
      '--BOUNDARY',
      'Content-Description: Undelivered Message Headers',
      'Content-Type: text/rfc822-headers',
      'Content-Transfer-Encoding: 8bit',
      '',
      'From: alice@sender.test',
      'Subject: caf\xe9',
      '',
      '--BOUNDARY--',
      '',
    ]);
  });

  it('several recipients, 8-bit text, a reply from an unnamed server, and our own long verdict folded', () => {
    const raw = buildDsn({
      reportingMta: 'mta.sender.test',
      originalSender: 'alice@sender.test',
      originalQueueId: 'Q2',
      originalMessageId: '<orig@sender.test>',
      arrival: Date.UTC(2026, 0, 2, 3, 4, 5),
      originalHeaders: 'Subject: hi\r\n',
      recipients: [
        { address: 'bob@receiver.test', status: '5.1.1', description: 'the server said no', remoteReply: '550 5.1.1 no such user', lastAttempt: Date.UTC(2026, 0, 2, 3, 5, 5) },
        {
          address: 'zo\u00e9@nomail.test',
          status: '5.1.10',
          description: 'mta.sender.test (MX lookup for nomail.test): domain nomail.test accepts no mail (null MX, RFC 7505), so it was returned at once',
          lastAttempt: Date.UTC(2026, 0, 2, 3, 5, 5),
        },
      ],
      messageId: '<dsn2@mta.sender.test>',
      date: Date.UTC(2026, 0, 2, 3, 5, 6),
    });
    expect(lines(raw, 'Q2', 'utf8')).toEqual([
      ...preamble('<dsn2@mta.sender.test>', 'In-Reply-To: <orig@sender.test>', 'References: <orig@sender.test>'),
      '--BOUNDARY',
      'Content-Description: Notification',
      'Content-Type: text/plain; charset=utf-8',
      'Content-Transfer-Encoding: 8bit',
      '',
      'This is the mail delivery system at mta.sender.test.',
      '',
      'Your message could not be delivered to 2 recipients.',
      'It was queued as Q2 on Fri, 02 Jan 2026 03:04:05 +0000,',
      'Message-ID <orig@sender.test>.',
      'The headers of your message are attached.',
      '',
      '<bob@receiver.test>: delivery failed (status 5.1.1)',
      '    the server said no',
      '    The server replied: 550 5.1.1 no such user',
      '',
      '<zo\u00e9@nomail.test>: delivery failed (status 5.1.10)',
      '    mta.sender.test (MX lookup for nomail.test): domain nomail.test accepts no mail (null MX, RFC 7505), so it was returned at once',
      '',
      '--BOUNDARY',
      'Content-Description: Delivery report',
      'Content-Type: message/delivery-status',
      'Content-Transfer-Encoding: 8bit',
      '',
      'Reporting-MTA: dns; mta.sender.test',
      'X-Maillab-Queue-ID: Q2',
      'X-Maillab-Sender: rfc822; alice@sender.test',
      'Arrival-Date: Fri, 02 Jan 2026 03:04:05 +0000',
      '',
      'Final-Recipient: rfc822; bob@receiver.test',
      'Action: failed',
      'Status: 5.1.1',
      'Diagnostic-Code: smtp; 550 5.1.1 no such user',
      'Last-Attempt-Date: Fri, 02 Jan 2026 03:05:05 +0000',
      '',
      'Final-Recipient: rfc822; zo\u00e9@nomail.test',
      'Action: failed',
      'Status: 5.1.10',
      // Folded under 78 characters at spaces (RFC 5322 §2.2.3).
      'Diagnostic-Code: X-Maillab; mta.sender.test (MX lookup for nomail.test):',
      ' domain nomail.test accepts no mail (null MX, RFC 7505), so it was returned',
      ' at once',
      'Last-Attempt-Date: Fri, 02 Jan 2026 03:05:05 +0000',
      '',
      '--BOUNDARY',
      'Content-Description: Undelivered Message Headers',
      'Content-Type: text/rfc822-headers',
      'Content-Transfer-Encoding: 7bit',
      '',
      'Subject: hi',
      '',
      '--BOUNDARY--',
      '',
    ]);
  });

  it('folds a description with line breaks onto one logical line, and dates the DSN now when no date is given', () => {
    vi.useFakeTimers({ now: Date.UTC(2026, 5, 7, 8, 9, 10) });
    const raw = buildDsn({ ...input, date: undefined as never, recipients: [{ ...input.recipients[1]!, description: 'first line\r\nsecond line\nthird' }] });
    const text = raw.toString('utf8');
    expect(text).toContain('\r\nDate: Sun, 07 Jun 2026 08:09:10 +0000\r\n');
    expect(text).toContain('\r\nDiagnostic-Code: X-Maillab; first line second line third\r\n');
    // A fresh boundary per DSN.
    expect(buildDsn(input).toString('utf8').match(/boundary="([^"]+)"/)![1]).not.toBe(text.match(/boundary="([^"]+)"/)![1]);
  });
});
