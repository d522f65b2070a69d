// Small RFC 5322 helpers shared by every node: read a header from raw bytes without parsing the body, and
// write trace headers.
import type { TlsInfo } from './tls-session.js';

/**
 * Where a raw message's header section ends: `headEnd` before the first empty line (CRLF CRLF, else LF LF), `bodyStart`
 * after it; without an empty line the whole message is header and both are its length.
 */
export function headerBoundary(raw: Buffer): { headEnd: number; bodyStart: number } {
  const crlf = raw.indexOf('\r\n\r\n');
  if (crlf >= 0) return { headEnd: crlf, bodyStart: crlf + 4 };
  const lf = raw.indexOf('\n\n');
  if (lf >= 0) return { headEnd: lf, bodyStart: lf + 2 };
  return { headEnd: raw.length, bodyStart: raw.length };
}

/** The header section of a raw message (up to the first empty line), as latin1 text. */
export function headerSection(raw: Buffer): string {
  return raw.subarray(0, headerBoundary(raw).headEnd).toString('latin1');
}

/** The unfolded value of the first header `name`, or undefined. */
export function headerValue(raw: Buffer | string, name: string): string | undefined {
  const head = typeof raw === 'string' ? raw : headerSection(raw);
  const unfolded = head.replace(/\r?\n[ \t]+/g, ' ');
  const wanted = name.toLowerCase() + ':';
  for (const line of unfolded.split(/\r?\n/)) {
    if (line.toLowerCase().startsWith(wanted)) return line.slice(wanted.length).trim();
  }
  return undefined;
}

/** The Message-ID with angle brackets, or undefined. */
export function messageIdOf(raw: Buffer): string | undefined {
  const value = headerValue(raw, 'message-id');
  const match = value && /<[^>]+>/.exec(value);
  return match ? match[0] : undefined;
}

const DAYS = ['Sun', 'Mon', 'Tue', 'Wed', 'Thu', 'Fri', 'Sat'];
const MONTHS = ['Jan', 'Feb', 'Mar', 'Apr', 'May', 'Jun', 'Jul', 'Aug', 'Sep', 'Oct', 'Nov', 'Dec'];

/** RFC 5322 §3.3 date-time in UTC, e.g. `Sun, 22 Nov 2026 02:32:08 +0000`. */
export function rfc5322Date(date = new Date()): string {
  const pad = (n: number) => String(n).padStart(2, '0');
  return `${DAYS[date.getUTCDay()]}, ${pad(date.getUTCDate())} ${MONTHS[date.getUTCMonth()]} ${date.getUTCFullYear()} ${pad(date.getUTCHours())}:${pad(date.getUTCMinutes())}:${pad(date.getUTCSeconds())} +0000`;
}

/** A `Received:` trace header (RFC 5321 §4.4), folded, with CRLF. */
export function receivedHeader(options: {
  helo: string;
  clientAddress: string;
  by: string;
  /** RFC 3848 types; `HTTP`/`HTTPS` for the MTA's HTTP email API (no SMTP session: the with-clause says so). */
  protocol: 'SMTP' | 'ESMTP' | 'ESMTPA' | 'ESMTPS' | 'ESMTPSA' | 'LMTP' | 'HTTP' | 'HTTPS';
  id: string;
  for?: string;
  date?: Date;
  /** The TLS of the client's connection: named as Postfix does, `(using TLSv1.3 with cipher TLS_AES_256_GCM_SHA384)`. */
  tls?: TlsInfo | null;
}): string {
  const forPart = options.for ? `\r\n\tfor <${options.for}>` : '';
  const tlsPart = options.tls ? `\r\n\t(using ${options.tls.version} with cipher ${options.tls.cipher})` : '';
  return (
    `Received: from ${options.helo || 'unknown'} ([${options.clientAddress}])${tlsPart}\r\n` +
    `\tby ${options.by} (maillab) with ${options.protocol} id ${options.id}${forPart};\r\n` +
    `\t${rfc5322Date(options.date)}\r\n`
  );
}
