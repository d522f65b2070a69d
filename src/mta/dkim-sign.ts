// A DKIM signature (RFC 6376; Ed25519 per RFC 8463) over a message held in memory, with a key parsed once.
//
// It replaces mailauth's signer at the MTA (issue 17). That one parsed the PEM key again for every message
// (createPrivateKey, about 0.3 ms of CPU for an RSA 2048 key) and ran the message through its streaming parser: with
// the RSA signature itself, about a quarter of the MTA's CPU per message on the bench's 1 KiB messages, the MTA being
// the busiest process of the lab. mailauth still verifies at the MX, and the tests check what this writes with
// mailauth's verifier and with dkimpy, for every canonicalization and both algorithms.
//
// What it signs, as mailauth did: every instance of the listed header fields, bottom up (§5.4.2), with their names as
// the message spells them in `h=`; the default list is mailauth's (RFC 6376 §5.4.1's recommendation plus the List-*
// fields). Tags: v, a, c, d, s, t, bh, h, b. The message's line ends may be bare LF: a verifier sees the CRLF form
// that SMTP transmits, so both canonicalizations work on lines, whatever ended them.
import { createHash, sign, type KeyObject } from 'node:crypto';
import type { DkimSigningConfig } from '../shared/config.js';
import { headerBoundary } from '../shared/headers.js';

export interface DkimSigningKey {
  domain: string;
  selector: string;
  /** The private key, parsed once (RSA for rsa-sha256, Ed25519 for ed25519-sha256). */
  key: KeyObject;
  algorithm: DkimSigningConfig['algorithm'];
  canonicalization: DkimSigningConfig['canonicalization'];
  /** Header field names to sign; absent: DEFAULT_SIGNED_FIELDS. */
  headers?: readonly string[];
}

/** The fields signed when the signer names none (mailauth's default, so the signatures did not change with the signer). */
export const DEFAULT_SIGNED_FIELDS: readonly string[] = [
  'From', 'Sender', 'Reply-To', 'Subject', 'Date', 'Message-ID', 'To', 'Cc', 'MIME-Version', 'Content-Type',
  'Content-Transfer-Encoding', 'Content-ID', 'Content-Description', 'Resent-Date', 'Resent-From', 'Resent-Sender',
  'Resent-To', 'Resent-Cc', 'Resent-Message-ID', 'In-Reply-To', 'References', 'List-Id', 'List-Help',
  'List-Unsubscribe', 'List-Subscribe', 'List-Post', 'List-Owner', 'List-Archive', 'BIMI-Selector',
];

/** Lines folded before this many characters (RFC 5322 §2.1.1 recommends 78). */
const FOLD_AT = 76;

/** The header section and the body of a message, as byte-preserving (latin1) strings. */
function split(message: Buffer): { head: string; body: string } {
  const { headEnd, bodyStart } = headerBoundary(message);
  return { head: message.subarray(0, headEnd).toString('latin1'), body: message.subarray(bodyStart).toString('latin1') };
}

/** The header fields, top to bottom, each with its folding and without its final line end. */
function fields(head: string): { name: string; field: string }[] {
  return head
    .split(/\r?\n(?![ \t])/)
    .filter((field) => field.length > 0)
    .map((field) => ({ name: field.slice(0, Math.max(field.indexOf(':'), 0)).trim(), field }));
}

/** One header field, canonicalized (§3.4.1 simple, §3.4.2 relaxed), with its CRLF unless `withoutLineEnd`. */
function canonicalHeader(field: string, relaxed: boolean, withoutLineEnd = false): string {
  const end = withoutLineEnd ? '' : '\r\n';
  if (!relaxed) return field.replace(/\r?\n/g, '\r\n') + end;
  const colon = field.indexOf(':');
  const name = field.slice(0, colon).replace(/[ \t]+$/, '').toLowerCase();
  const value = field
    .slice(colon + 1)
    .replace(/\r?\n(?=[ \t])/g, '')
    .replace(/[ \t]+/g, ' ')
    .trim();
  return `${name}:${value}${end}`;
}

/** The SHA-256 of the body, canonicalized (§3.4.3 simple, §3.4.4 relaxed), base64. */
export function bodyHash(body: string, relaxed: boolean): string {
  const hash = createHash('sha256');
  let emptyLines = 0;
  let lines = 0;
  for (let at = 0; at < body.length; ) {
    const newline = body.indexOf('\n', at);
    const next = newline < 0 ? body.length : newline + 1;
    let line = body.slice(at, newline < 0 ? body.length : newline > at && body[newline - 1] === '\r' ? newline - 1 : newline);
    at = next;
    if (relaxed) line = line.replace(/[ \t]+/g, ' ').replace(/ $/, '');
    // Empty lines count only when a line with content follows: trailing ones are dropped.
    if (line === '') {
      emptyLines++;
      continue;
    }
    for (; emptyLines > 0; emptyLines--) hash.update('\r\n');
    hash.update(`${line}\r\n`, 'latin1');
    lines++;
  }
  // An empty body is one CRLF in simple canonicalization, nothing in relaxed (RFC 6376 §3.4.3, §3.4.4 and errata 3192).
  if (lines === 0 && !relaxed) hash.update('\r\n');
  return hash.digest('base64');
}

/** `tag=value` items joined with "; " (none after the last), folded between items, and inside `h=` after a colon, before FOLD_AT. */
function foldTags(prefix: string, tags: string[]): string {
  let out = prefix;
  let column = prefix.length;
  tags.forEach((tag, i) => {
    const item = i < tags.length - 1 ? `${tag};` : tag;
    for (const [j, piece] of (tag.startsWith('h=') ? item.split(/(?<=:)/) : [item]).entries()) {
      const lead = j === 0 ? (i === 0 ? '' : ' ') : '';
      if (column + lead.length + piece.length > FOLD_AT && column > 1) {
        out += '\r\n ';
        column = 1;
      } else {
        out += lead;
        column += lead.length;
      }
      out += piece;
      column += piece.length;
    }
  });
  return out;
}

/**
 * The DKIM-Signature header field for `message` (folded, CRLF-terminated), to be put on top of it. `time` is the
 * `t=` tag; it is the one value signed and written, read once.
 */
export function dkimSignature(message: Buffer, signer: DkimSigningKey, time: Date): string {
  const [headerCanon, bodyCanon] = signer.canonicalization.split('/') as ['relaxed' | 'simple', 'relaxed' | 'simple'];
  const { head, body } = split(message);
  const wanted = new Set((signer.headers ?? DEFAULT_SIGNED_FIELDS).map((name) => name.toLowerCase()));
  const signed = fields(head)
    .filter(({ name }) => wanted.has(name.toLowerCase()))
    .reverse();
  const tags = [
    'v=1',
    `a=${signer.algorithm}`,
    `c=${signer.canonicalization}`,
    `d=${signer.domain}`,
    `s=${signer.selector}`,
    `t=${Math.floor(time.getTime() / 1000)}`,
    `bh=${bodyHash(body, bodyCanon === 'relaxed')}`,
    `h=${signed.map(({ name }) => name).join(':')}`,
  ];
  // b= starts a line of its own, so its first 72 characters fit on it.
  const unsigned = `${foldTags('DKIM-Signature: ', tags)};\r\n b=`;
  const relaxed = headerCanon === 'relaxed';
  const data = Buffer.from(signed.map(({ field }) => canonicalHeader(field, relaxed)).join('') + canonicalHeader(unsigned, relaxed, true), 'latin1');
  const signature =
    signer.algorithm === 'rsa-sha256' ? sign('sha256', data, signer.key) : sign(null, createHash('sha256').update(data).digest(), signer.key);
  // The b= value may hold folding whitespace anywhere (§3.5): a verifier removes the whole value before hashing.
  const b = signature.toString('base64').replace(/.{1,72}/g, (chunk, offset: number) => (offset === 0 ? chunk : `\r\n ${chunk}`));
  return `${unsigned}${b}\r\n`;
}
