// Bounces: RFC 3464 delivery status notifications, as a multipart/report (RFC 6522) with three parts:
//   1. text/plain, for humans: which recipients failed and why;
//   2. message/delivery-status, for programs: per-message fields, then one block per failed recipient;
//   3. text/rfc822-headers, the headers of the original message (not its body: RET=HDRS, like most MTAs).
// The DSN is sent from the null sender (MAIL FROM:<>, RFC 5321 §4.5.5) so that it can never cause another bounce,
// and marked Auto-Submitted: auto-replied (RFC 3834).
import { randomBytes } from 'node:crypto';
import { rfc5322Date } from '../shared/headers.js';

export interface DsnRecipient {
  /** The recipient as given in the envelope (Final-Recipient). */
  address: string;
  /** RFC 3463 status, e.g. `5.1.1`; `4.4.7` for a message that expired in the queue. */
  status: string;
  /** For humans: what happened, where. */
  description: string;
  /** Host name of the server that gave the reply (Remote-MTA), when a remote server gave it. */
  remoteMta?: string;
  /** The remote SMTP/LMTP reply (Diagnostic-Code: smtp; …), when there was one. */
  remoteReply?: string;
  lastAttempt: number;
  /** The recipient expired (maxLifetimeMs) rather than being refused. */
  expired?: boolean;
}

export interface DsnInput {
  /** Our host name: Reporting-MTA, and the domain of the From address and Message-ID. */
  reportingMta: string;
  /** Envelope sender of the original message: the DSN's recipient. */
  originalSender: string;
  originalQueueId: string;
  originalMessageId?: string;
  /** When the original was queued (Arrival-Date). */
  arrival: number;
  /** The original's header section (without the blank line after it), as raw bytes or text. */
  originalHeaders: Buffer | string;
  recipients: DsnRecipient[];
  /** Message-ID of the DSN itself, with angle brackets. */
  messageId: string;
  date?: number;
}

const CRLF = '\r\n';

/** Folds a long header value at spaces (RFC 5322 §2.2.3), keeping lines under 78 characters where possible. */
function fold(name: string, value: string): string {
  const words = value.replace(/\r?\n/g, ' ').split(' ');
  const lines: string[] = [];
  let line = `${name}:`;
  for (const word of words) {
    if (line.length + 1 + word.length > 76 && line.trim().length > name.length + 1) {
      lines.push(line);
      line = ` ${word}`;
    } else {
      line += ` ${word}`;
    }
  }
  lines.push(line);
  return lines.join(CRLF);
}

/** The non-empty lines of a (multi-line) reply. */
function replyLines(reply: string): string[] {
  return reply.split(/\r?\n/).filter((l) => l.length > 0);
}

/** Lines of a multi-line reply, each on its own header continuation line. */
function foldReply(name: string, type: string, reply: string): string {
  const [first = '', ...rest] = replyLines(reply);
  return [fold(name, `${type}; ${first}`), ...rest.map((l) => ` ${l}`)].join(CRLF);
}

function part(headers: string[], body: Buffer): Buffer {
  const encoding = body.some((b) => b > 0x7f) ? '8bit' : '7bit';
  return Buffer.concat([Buffer.from([...headers, `Content-Transfer-Encoding: ${encoding}`, '', ''].join(CRLF)), body]);
}

function humanText(input: DsnInput): string {
  const lines = [
    `This is the mail delivery system at ${input.reportingMta}.`,
    '',
    `Your message could not be delivered to ${input.recipients.length === 1 ? 'one recipient' : `${input.recipients.length} recipients`}.`,
    `It was queued as ${input.originalQueueId} on ${rfc5322Date(new Date(input.arrival))}${input.originalMessageId ? `,` : '.'}`,
    ...(input.originalMessageId ? [`Message-ID ${input.originalMessageId}.`] : []),
    'The headers of your message are attached.',
    '',
  ];
  for (const r of input.recipients) {
    lines.push(`<${r.address}>: ${r.expired ? 'delivery time expired, gave up' : 'delivery failed'} (status ${r.status})`);
    lines.push(`    ${r.description}`);
    if (r.remoteReply) lines.push(`    ${r.remoteMta ?? 'The server'} replied: ${replyLines(r.remoteReply).join(' ')}`);
    lines.push('');
  }
  return lines.join(CRLF);
}

function deliveryStatus(input: DsnInput): string {
  const blocks: string[] = [
    [
      `Reporting-MTA: dns; ${input.reportingMta}`,
      `X-Maillab-Queue-ID: ${input.originalQueueId}`,
      `X-Maillab-Sender: rfc822; ${input.originalSender}`,
      `Arrival-Date: ${rfc5322Date(new Date(input.arrival))}`,
    ].join(CRLF),
  ];
  for (const r of input.recipients) {
    const fields = [`Final-Recipient: rfc822; ${r.address}`, 'Action: failed', `Status: ${r.status}`];
    if (r.remoteMta) fields.push(`Remote-MTA: dns; ${r.remoteMta}`);
    // RFC 3464 §2.3.6: diagnostic-type "smtp" for a reply from an SMTP (or LMTP) server; our own verdicts (null MX,
    // unknown domain, expiry without a reply) get an X- type.
    fields.push(r.remoteReply ? foldReply('Diagnostic-Code', 'smtp', r.remoteReply) : fold('Diagnostic-Code', `X-Maillab; ${r.description}`));
    fields.push(`Last-Attempt-Date: ${rfc5322Date(new Date(r.lastAttempt))}`);
    blocks.push(fields.join(CRLF));
  }
  return blocks.join(CRLF + CRLF) + CRLF;
}

/** Builds the DSN message (CRLF line endings), ready to be queued from the null sender to `originalSender`. */
export function buildDsn(input: DsnInput): Buffer {
  if (input.recipients.length === 0) throw new Error('a DSN needs at least one failed recipient');
  const boundary = `=_dsn_${input.originalQueueId}_${randomBytes(6).toString('hex')}`;
  const headers = [
    `From: Mail Delivery System <MAILER-DAEMON@${input.reportingMta}>`,
    `To: <${input.originalSender}>`,
    'Subject: Undelivered Mail Returned to Sender',
    `Date: ${rfc5322Date(new Date(input.date ?? Date.now()))}`,
    `Message-ID: ${input.messageId}`,
    ...(input.originalMessageId ? [`In-Reply-To: ${input.originalMessageId}`, `References: ${input.originalMessageId}`] : []),
    'Auto-Submitted: auto-replied',
    'MIME-Version: 1.0',
    `Content-Type: multipart/report; report-type=delivery-status;${CRLF}\tboundary="${boundary}"`,
  ];
  const raw = typeof input.originalHeaders === 'string' ? Buffer.from(input.originalHeaders, 'utf8') : input.originalHeaders;
  // Normalized to CRLF line ends, without trailing empty lines (the part ends where the headers end).
  const originalHeaders = Buffer.from(raw.toString('latin1').replace(/\r?\n/g, CRLF).replace(/(\r\n)+$/, '') + CRLF, 'latin1');
  const parts = [
    part(['Content-Description: Notification', 'Content-Type: text/plain; charset=utf-8'], Buffer.from(humanText(input), 'utf8')),
    part(['Content-Description: Delivery report', 'Content-Type: message/delivery-status'], Buffer.from(deliveryStatus(input), 'utf8')),
    part(['Content-Description: Undelivered Message Headers', 'Content-Type: text/rfc822-headers'], originalHeaders),
  ];
  const chunks: Buffer[] = [Buffer.from(headers.join(CRLF) + CRLF + CRLF + 'This is a MIME-encapsulated message (a delivery status notification, RFC 3464).' + CRLF + CRLF)];
  for (const p of parts) chunks.push(Buffer.from(`--${boundary}${CRLF}`), p, Buffer.from(CRLF));
  chunks.push(Buffer.from(`--${boundary}--${CRLF}`));
  return Buffer.concat(chunks);
}
