// Messages of a mailbox as a test reads them (what GreenMail's and Mailpit's APIs hand out): parsed with mailparser,
// with the raw bytes kept beside the parsed fields.
import { simpleParser, type AddressObject } from 'mailparser';
import type { StoredMessage } from '../mailbox/api.js';

/** One mailbox of a header field (a group's members are listed one by one). */
export interface EmailAddress {
  /** The display name, '' when there is none. */
  name: string;
  /** The address, e.g. `bob@receiver.test`. */
  address: string;
}

/** An attachment, or an inline part (`cid:`), of a parsed message. */
export interface EmailAttachment {
  /** The file name, when the part names one. */
  filename?: string;
  contentType: string;
  /** `attachment` or `inline`. */
  disposition?: string;
  /** The Content-ID, with angle brackets, of an inline part. */
  contentId?: string;
  /** Size of the decoded content, in octets. */
  size: number;
  /** The decoded content. */
  content: Buffer;
}

/** A message of a mailbox folder, parsed (`lab.mailbox(address).emails()`). */
export interface ParsedEmail {
  /** IMAP UID in its folder. */
  uid: number;
  /** The folder it is in, e.g. `INBOX`. */
  folder: string;
  /** IMAP flags (`\Seen`...) and keywords. */
  flags: string[];
  /** Size as stored, in octets. */
  size: number;
  /** INTERNALDATE: when the mailbox server stored it (ms since the epoch). */
  internalDate: number;
  /** The Message-ID header, with angle brackets; undefined when the message has none. */
  messageId?: string;
  /** The Subject, decoded (RFC 2047); undefined when the message has none. */
  subject?: string;
  from: EmailAddress[];
  to: EmailAddress[];
  cc: EmailAddress[];
  replyTo: EmailAddress[];
  /** The Date header; undefined when it is missing or unreadable. */
  date?: Date;
  /** The text body (text/plain, or what mailparser makes of the HTML when there is none). */
  text?: string;
  /** The HTML body, when there is one. */
  html?: string;
  /** Every header field by lower-case name, each value unfolded and not decoded, in the order of the message. */
  headers: ReadonlyMap<string, readonly string[]>;
  /** The first value of a header field (any case), unfolded, not decoded; undefined when the message has none. */
  header(name: string): string | undefined;
  attachments: EmailAttachment[];
  /** The message as stored, byte for byte. */
  raw: Buffer;
}

/** Parses a stored message (`raw`) with mailparser's simpleParser; `stored` gives its place in the folder. */
export async function parseEmail(raw: Buffer, stored: Pick<StoredMessage, 'uid' | 'flags' | 'size' | 'internalDate'>, folder: string): Promise<ParsedEmail> {
  const parsed = await simpleParser(raw, { skipImageLinks: true, skipTextToHtml: true });
  const headers = new Map<string, string[]>();
  for (const { key, line } of parsed.headerLines) {
    // `line` is the field as written, folds included: unfold it and keep what follows the colon.
    const value = line.slice(line.indexOf(':') + 1).replace(/\r?\n[ \t]/g, ' ').trim();
    headers.set(key, [...(headers.get(key) ?? []), value]);
  }
  return {
    uid: stored.uid,
    folder,
    flags: [...stored.flags],
    size: stored.size,
    internalDate: stored.internalDate,
    ...(parsed.messageId ? { messageId: parsed.messageId } : {}),
    ...(parsed.subject !== undefined ? { subject: parsed.subject } : {}),
    from: addressesOf(parsed.from),
    to: addressesOf(parsed.to),
    cc: addressesOf(parsed.cc),
    replyTo: addressesOf(parsed.replyTo),
    ...(parsed.date && !Number.isNaN(parsed.date.getTime()) ? { date: parsed.date } : {}),
    ...(parsed.text !== undefined ? { text: parsed.text } : {}),
    ...(typeof parsed.html === 'string' ? { html: parsed.html } : {}),
    headers,
    header: (name) => headers.get(name.toLowerCase())?.[0],
    attachments: parsed.attachments.map((a) => ({
      ...(a.filename ? { filename: a.filename } : {}),
      contentType: a.contentType,
      ...(a.contentDisposition ? { disposition: a.contentDisposition } : {}),
      ...(a.contentId ? { contentId: a.contentId } : {}),
      size: a.content.length,
      content: a.content,
    })),
    raw,
  };
}

/** The mailboxes of an address header (one object, or several for a repeated field), groups flattened. */
function addressesOf(field: AddressObject | AddressObject[] | undefined): EmailAddress[] {
  const out: EmailAddress[] = [];
  const visit = (entries: AddressObject['value']) => {
    for (const entry of entries) {
      if (entry.group) visit(entry.group);
      else if (entry.address) out.push({ name: entry.name ?? '', address: entry.address });
    }
  };
  for (const object of Array.isArray(field) ? field : field ? [field] : []) visit(object.value);
  return out;
}
