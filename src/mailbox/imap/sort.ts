// SORT (RFC 5256 §3) and what THREAD shares with it: the base subject (§2.1), the sent date (§2.2) and the
// i;ascii-casemap comparison of texts.
import { monthIndex } from './encode.js';
import { ParseError } from './errors.js';
import { decodeHeaderValue, header, parseAddresses, type MimeNode } from './mime.js';
import type { Reader } from './parser.js';

export type SortKey = 'ARRIVAL' | 'CC' | 'DATE' | 'FROM' | 'SIZE' | 'SUBJECT' | 'TO';
const SORT_KEYS: readonly string[] = ['ARRIVAL', 'CC', 'DATE', 'FROM', 'SIZE', 'SUBJECT', 'TO'];

export interface SortCriterion {
  key: SortKey;
  reverse: boolean;
}

/** sort-criteria = "(" sort-criterion *(SP sort-criterion) ")"; sort-criterion = ["REVERSE" SP] sort-key. */
export function parseSortCriteria(r: Reader): SortCriterion[] {
  const criteria = r.list(() => {
    let name = r.atom().toUpperCase();
    const reverse = name === 'REVERSE';
    if (reverse) {
      r.sp();
      name = r.atom().toUpperCase();
    }
    if (!SORT_KEYS.includes(name)) throw new ParseError(`Unknown sort criterion ${name}`);
    return { key: name as SortKey, reverse };
  });
  if (!criteria.length) throw new ParseError('Empty sort criteria');
  return criteria;
}

/** The keys that need the message's header. */
export function sortNeedsHeader(criteria: readonly SortCriterion[]): boolean {
  return criteria.some((c) => c.key !== 'ARRIVAL' && c.key !== 'SIZE');
}

// ---- base subject (§2.1) ----

const BLOB = String.raw`\[[^\[\]]*\][ \t]*`;
/** subj-leader = (*subj-blob subj-refwd) / WSP; subj-refwd = ("re" / ("fw" ["d"])) *WSP [subj-blob] ":". */
const LEADER = new RegExp(String.raw`^(?:(?:${BLOB})*(?:re|fwd?)[ \t]*(?:${BLOB})?:|[ \t])`, 'i');
const LEADING_BLOB = new RegExp(`^${BLOB}`);

export interface BaseSubject {
  /** The base subject, i;ascii-casemap folded (ASCII letters upper-cased), ready to compare. */
  key: string;
  /** The subject had a subj-refwd, a "(fwd)" trailer or a [fwd: ...] wrapper: a reply or forward (§4 step 5). */
  replyOrForward: boolean;
}

/** The base subject of a Subject header value (still raw, encoded words and all), per RFC 5256 §2.1. */
export function baseSubject(raw: string | undefined): BaseSubject {
  // (1) Encoded words decoded, tabs and continuations to spaces, runs of spaces to one.
  let s = decodeHeaderValue(raw ?? '').replace(/[ \t\r\n]+/g, ' ');
  let replyOrForward = false;
  for (;;) {
    // (2) Trailers: "(fwd)" and whitespace, as long as any are left.
    for (;;) {
      if (s.endsWith(' ')) s = s.slice(0, -1);
      else if (s.toLowerCase().endsWith('(fwd)')) {
        s = s.slice(0, -5);
        replyOrForward = true;
      } else break;
    }
    // (3)-(5) Leaders, and a leading blob that leaves a non-empty base, until neither applies.
    for (let changed = true; changed; ) {
      changed = false;
      for (let m = LEADER.exec(s); m; m = LEADER.exec(s)) {
        if (m[0] !== ' ' && m[0] !== '\t') replyOrForward = true;
        s = s.slice(m[0].length);
        changed = true;
      }
      const blob = LEADING_BLOB.exec(s);
      if (blob && s.length > blob[0].length) {
        s = s.slice(blob[0].length);
        changed = true;
      }
    }
    // (6) A "[fwd: ...]" wrapper: unwrap and start again from (2).
    if (s.toLowerCase().startsWith('[fwd:') && s.endsWith(']')) {
      s = s.slice(5, -1);
      replyOrForward = true;
      continue;
    }
    return { key: casemap(s), replyOrForward };
  }
}

/** i;ascii-casemap: ASCII letters upper-cased, everything else as it is. */
export function casemap(s: string): string {
  return s.replace(/[a-z]+/g, (w) => w.toUpperCase());
}

/** Octet order of the UTF-8 forms, which is code point order (JavaScript's < compares UTF-16 code units). */
export function compareText(a: string, b: string): number {
  return Buffer.compare(Buffer.from(a, 'utf8'), Buffer.from(b, 'utf8'));
}

// ---- sent date (§2.2) ----

const ZONES: Record<string, number> = { UT: 0, GMT: 0, Z: 0, EST: -5, EDT: -4, CST: -6, CDT: -5, MST: -7, MDT: -6, PST: -8, PDT: -7 };
const DATE_RE = /(\d{1,2})\s+([A-Za-z]{3})[A-Za-z]*\.?\s+(\d{2,4})\s+(\d{1,2}):(\d{2})(?::(\d{2}))?(?:\s*([+-]\d{4}|[A-Za-z]{1,3})\b)?/;

/** A Date header value (RFC 5322 §3.3, obsolete forms too) in ms since the epoch, UTC; undefined when unparsable. */
export function parseSentDate(value: string | undefined): number | undefined {
  const m = value ? DATE_RE.exec(value) : null;
  if (!m) return undefined;
  const month = monthIndex(m[2]!);
  if (month < 0) return undefined;
  let year = Number(m[3]);
  if (m[3]!.length === 2) year += year < 50 ? 2000 : 1900;
  else if (m[3]!.length === 3) year += 1900;
  const [day, hour, minute, second] = [Number(m[1]), Number(m[4]), Number(m[5]), Number(m[6] ?? 0)];
  if (day < 1 || day > 31 || hour > 23 || minute > 59 || second > 60) return undefined;
  const zone = m[7] ?? '+0000';
  let offsetMinutes = 0;
  if (/^[+-]\d{4}$/.test(zone)) {
    const sign = zone[0] === '-' ? -1 : 1;
    offsetMinutes = sign * (Number(zone.slice(1, 3)) * 60 + Number(zone.slice(3)));
  } else {
    // Military zones mean nothing reliable (RFC 5322 §4.3): taken as UTC, as are unknown names.
    offsetMinutes = (ZONES[zone.toUpperCase()] ?? 0) * 60;
  }
  return Date.UTC(year, month, day, hour, minute, second) - offsetMinutes * 60_000;
}

/** The sent date: the Date header in UTC, else the INTERNALDATE (§2.2). */
export function sentDate(tree: MimeNode, internalDate: number): number {
  return parseSentDate(header(tree, 'date')) ?? internalDate;
}

// ---- SORT ----

export interface SortMessage {
  /** Sequence number: the final tie-breaker, in ascending order whatever REVERSE says (§3). */
  seq: number;
  internalDate: number;
  size: number;
  tree?: MimeNode;
}

/** [IMAP] addr-mailbox of the first address of a field (group names skipped); "" when there is none. */
function firstMailbox(tree: MimeNode, field: string): string {
  const value = header(tree, field);
  if (value === undefined) return '';
  const first = parseAddresses(value).find((a) => a.group === undefined);
  const mailbox = first?.mailbox ?? '';
  return casemap(mailbox === 'MISSING_MAILBOX' ? '' : decodeHeaderValue(mailbox));
}

function sortValue(m: SortMessage, key: SortKey): number | string {
  const tree = () => {
    if (!m.tree) throw new Error('message structure not loaded');
    return m.tree;
  };
  switch (key) {
    case 'ARRIVAL':
      return m.internalDate;
    case 'SIZE':
      return m.size;
    case 'DATE':
      return sentDate(tree(), m.internalDate);
    case 'SUBJECT':
      return baseSubject(header(tree(), 'subject')).key;
    case 'FROM':
    case 'TO':
    case 'CC':
      return firstMailbox(tree(), key.toLowerCase());
  }
}

/** The messages in SORT order: each criterion in turn (REVERSE descending), then the sequence number. */
export function sortMessages<T extends SortMessage>(messages: readonly T[], criteria: readonly SortCriterion[]): T[] {
  const keyed = messages.map((m) => ({ m, values: criteria.map((c) => sortValue(m, c.key)) }));
  keyed.sort((a, b) => {
    for (let i = 0; i < criteria.length; i++) {
      const x = a.values[i]!;
      const y = b.values[i]!;
      const order = typeof x === 'number' && typeof y === 'number' ? x - y : compareText(String(x), String(y));
      if (order !== 0) return criteria[i]!.reverse ? -order : order;
    }
    return a.m.seq - b.m.seq;
  });
  return keyed.map((k) => k.m);
}
