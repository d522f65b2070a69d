// SEARCH: the search-key grammar of RFC 3501 §6.4.4 (plus CONDSTORE's MODSEQ), its evaluation, and ESEARCH's
// result options (RFC 4731).
import { formatUidList, monthIndex } from './encode.js';
import { bodyText, decodeHeaderValue, headerText, loadedParts, parseAddresses, sentDay, type MimeNode } from './mime.js';
import { BadCharsetError, ParseError } from './errors.js';
import { STAR, type Reader, type SeqSet } from './parser.js';

export type SearchKey =
  | { op: 'all' }
  | { op: 'flag'; flag: string; present: boolean }
  | { op: 'recent'; present: boolean }
  | { op: 'header'; field: string; value: string }
  | { op: 'body' | 'text'; value: string }
  | { op: 'date'; sent: boolean; cmp: 'before' | 'on' | 'since'; day: number }
  | { op: 'size'; larger: boolean; size: number }
  | { op: 'seq' | 'uid'; set: SeqSet }
  | { op: 'modseq'; modseq: number }
  | { op: 'not'; key: SearchKey }
  | { op: 'or'; a: SearchKey; b: SearchKey }
  | { op: 'and'; keys: SearchKey[] };

export const SUPPORTED_CHARSETS = ['UTF-8', 'US-ASCII'];

/** `[CHARSET astring SP] search-key *(SP search-key)` up to the end of the command. */
export function parseSearch(r: Reader): SearchKey {
  if (r.peekAtom() === 'CHARSET') {
    r.atom();
    r.sp();
    parseCharset(r);
    r.sp();
  }
  return parseCriteria(r);
}

/** A search charset (SEARCH's CHARSET argument, SORT's and THREAD's required one): BadCharsetError unless supported. */
export function parseCharset(r: Reader): void {
  const charset = r.astring().toUpperCase();
  if (!SUPPORTED_CHARSETS.includes(charset)) throw new BadCharsetError(charset);
}

/** `search-key *(SP search-key)` up to the end of the command. */
export function parseCriteria(r: Reader): SearchKey {
  const keys: SearchKey[] = [parseKey(r, 0)];
  while (r.trySp()) keys.push(parseKey(r, 0));
  r.end();
  return keys.length === 1 ? keys[0]! : { op: 'and', keys };
}

const FLAG_KEYS: Record<string, [string, boolean]> = {
  ANSWERED: ['\\Answered', true], UNANSWERED: ['\\Answered', false],
  DELETED: ['\\Deleted', true], UNDELETED: ['\\Deleted', false],
  DRAFT: ['\\Draft', true], UNDRAFT: ['\\Draft', false],
  FLAGGED: ['\\Flagged', true], UNFLAGGED: ['\\Flagged', false],
  SEEN: ['\\Seen', true], UNSEEN: ['\\Seen', false],
};
const HEADER_KEYS = new Set(['FROM', 'TO', 'CC', 'BCC', 'SUBJECT']);
const DATE_KEYS: Record<string, [boolean, 'before' | 'on' | 'since']> = {
  BEFORE: [false, 'before'], ON: [false, 'on'], SINCE: [false, 'since'],
  SENTBEFORE: [true, 'before'], SENTON: [true, 'on'], SENTSINCE: [true, 'since'],
};
/** Nesting bound for NOT/OR/parentheses, so a hostile command cannot exhaust the stack. */
const MAX_NESTING = 100;

function parseKey(r: Reader, depth: number): SearchKey {
  if (depth > MAX_NESTING) throw new ParseError('Search program nested too deeply');
  const c = r.peek();
  if (c === 0x28) {
    const keys = r.list(() => parseKey(r, depth + 1));
    if (!keys.length) throw new ParseError('Empty search key list');
    return keys.length === 1 ? keys[0]! : { op: 'and', keys };
  }
  if ((c >= 0x30 && c <= 0x39) || c === 0x2a) return { op: 'seq', set: r.seqSet() };
  const name = r.atom().toUpperCase();
  const flag = FLAG_KEYS[name];
  if (flag) return { op: 'flag', flag: flag[0], present: flag[1] };
  if (HEADER_KEYS.has(name)) {
    r.sp();
    return { op: 'header', field: name.toLowerCase(), value: r.astring() };
  }
  const date = DATE_KEYS[name];
  if (date) {
    r.sp();
    return { op: 'date', sent: date[0], cmp: date[1], day: parseSearchDate(r) };
  }
  switch (name) {
    case 'ALL':
      return { op: 'all' };
    case 'RECENT':
      return { op: 'recent', present: true };
    case 'OLD':
      return { op: 'recent', present: false };
    case 'NEW':
      return { op: 'and', keys: [{ op: 'recent', present: true }, { op: 'flag', flag: '\\Seen', present: false }] };
    case 'KEYWORD':
    case 'UNKEYWORD':
      r.sp();
      return { op: 'flag', flag: r.atom(), present: name === 'KEYWORD' };
    case 'BODY':
    case 'TEXT':
      r.sp();
      return { op: name === 'BODY' ? 'body' : 'text', value: r.astring() };
    case 'HEADER': {
      r.sp();
      const field = r.astring().toLowerCase();
      r.sp();
      return { op: 'header', field, value: r.astring() };
    }
    case 'LARGER':
    case 'SMALLER':
      r.sp();
      return { op: 'size', larger: name === 'LARGER', size: r.number() };
    case 'UID':
      r.sp();
      return { op: 'uid', set: r.seqSet() };
    case 'NOT':
      r.sp();
      return { op: 'not', key: parseKey(r, depth + 1) };
    case 'OR': {
      r.sp();
      const a = parseKey(r, depth + 1);
      r.sp();
      return { op: 'or', a, b: parseKey(r, depth + 1) };
    }
    case 'MODSEQ': {
      r.sp();
      // Optional entry name and type (per-flag modseqs); we keep one modseq per message, so they only parse.
      if (r.peek() === 0x22) {
        r.quoted();
        r.sp();
        const type = r.atom().toLowerCase();
        if (!['priv', 'shared', 'all'].includes(type)) throw new ParseError('Invalid MODSEQ entry type');
        r.sp();
      }
      return { op: 'modseq', modseq: r.number() };
    }
    default:
      throw new ParseError(`Unknown search key ${name}`);
  }
}

/** date = date-text / DQUOTE date-text DQUOTE; returns days since the epoch. */
function parseSearchDate(r: Reader): number {
  const text = r.peek() === 0x22 ? r.quoted().toString('latin1') : r.atom();
  const m = /^(\d{1,2})-([A-Za-z]{3})-(\d{4})$/.exec(text);
  const month = m ? monthIndex(m[2]!) : -1;
  if (!m || month < 0) throw new ParseError(`Invalid date ${text}`);
  return Math.floor(Date.UTC(Number(m[3]), month, Number(m[1])) / 86_400_000);
}

export function usesContent(key: SearchKey): boolean {
  switch (key.op) {
    case 'header':
    case 'body':
    case 'text':
      return true;
    case 'date':
      return key.sent;
    case 'not':
      return usesContent(key.key);
    case 'or':
      return usesContent(key.a) || usesContent(key.b);
    case 'and':
      return key.keys.some(usesContent);
    default:
      return false;
  }
}

/** BODY and TEXT need the message octets; header keys make do with the (cached) structure. */
export function usesBody(key: SearchKey): boolean {
  if (key.op === 'body' || key.op === 'text') return true;
  if (key.op === 'not') return usesBody(key.key);
  if (key.op === 'or') return usesBody(key.a) || usesBody(key.b);
  if (key.op === 'and') return key.keys.some(usesBody);
  return false;
}

export function usesModseq(key: SearchKey): boolean {
  if (key.op === 'modseq') return true;
  if (key.op === 'not') return usesModseq(key.key);
  if (key.op === 'or') return usesModseq(key.a) || usesModseq(key.b);
  if (key.op === 'and') return key.keys.some(usesModseq);
  return false;
}

export interface SearchMessage {
  seq: number;
  uid: number;
  flags: string[];
  recent: boolean;
  size: number;
  internalDate: number;
  modseq: number;
  raw?: Buffer;
  tree?: MimeNode;
}

export interface SearchContext {
  /** Largest sequence number and UID in the mailbox, for `*`. */
  maxSeq: number;
  maxUid: number;
}

function inSet(set: SeqSet, n: number, max: number): boolean {
  return set.some(([a, b]) => {
    const x = a === STAR ? max : a;
    const y = b === STAR ? max : b;
    return n >= Math.min(x, y) && n <= Math.max(x, y);
  });
}

const lower = (s: string) => s.toLowerCase();

/** Fields holding address lists (RFC 5322 §3.6.2, §3.6.3), searched also by their parsed addresses. */
const ADDRESS_FIELDS = new Set(['from', 'sender', 'reply-to', 'to', 'cc', 'bcc', 'resent-from', 'resent-sender', 'resent-to', 'resent-cc', 'resent-bcc']);

/**
 * What a header key's substring is looked for in (RFC 3501 §6.4.4): the decoded field value (encoded words
 * decoded, folding removed) and, for address fields, each address as a client shows it: display name, group
 * name, `local@domain` and `Name <local@domain>`, with comments and the spaces around them gone, so that
 * `<user (comment)@ (comment) domain.org>` is found by `user@domain.org`. The forms are separated by line
 * breaks, which a search string cannot usefully contain.
 */
export function headerSearchText(field: string, value: string): string {
  const decoded = decodeHeaderValue(value);
  if (!ADDRESS_FIELDS.has(field)) return decoded;
  const forms = [decoded];
  for (const a of parseAddresses(value)) {
    if (a.group !== undefined) {
      if (a.group) forms.push(decodeHeaderValue(a.group));
      continue;
    }
    // parseAddresses fills missing parts with placeholders for ENVELOPE; a search must not find those.
    const local = a.mailbox === 'MISSING_MAILBOX' ? '' : (a.mailbox ?? '');
    const address = a.host === 'MISSING_DOMAIN' || a.host === undefined ? local : `${local}@${a.host}`;
    const name = a.name ? decodeHeaderValue(a.name) : '';
    forms.push(address);
    if (name) forms.push(name, `${name} <${address}>`);
  }
  return forms.join('\n');
}

/** Evaluates a key; decoded texts are computed once per message and shared across keys. */
export function matches(key: SearchKey, m: SearchMessage, ctx: SearchContext): boolean {
  const texts: { header?: string; body?: string } = {};
  const { tree, raw } = loadedParts(m);
  const headerAll = () => (texts.header ??= lower(headerText(tree())));
  const body = () => (texts.body ??= lower(bodyText(raw(), tree())));

  const test = (k: SearchKey): boolean => {
    switch (k.op) {
      case 'all':
        return true;
      case 'flag':
        return m.flags.some((f) => lower(f) === lower(k.flag)) === k.present;
      case 'recent':
        return m.recent === k.present;
      case 'header': {
        const wanted = lower(k.value);
        return tree().headers.some((h) => h.name === k.field && (wanted === '' || lower(headerSearchText(h.name, h.value)).includes(wanted)));
      }
      case 'body':
        return body().includes(lower(k.value));
      case 'text': {
        const wanted = lower(k.value);
        return headerAll().includes(wanted) || body().includes(wanted);
      }
      case 'date': {
        const day = k.sent ? sentDay(tree()) : Math.floor(m.internalDate / 86_400_000);
        if (day === undefined) return false;
        return k.cmp === 'before' ? day < k.day : k.cmp === 'on' ? day === k.day : day >= k.day;
      }
      case 'size':
        return k.larger ? m.size > k.size : m.size < k.size;
      case 'seq':
        return inSet(k.set, m.seq, ctx.maxSeq);
      case 'uid':
        return inSet(k.set, m.uid, ctx.maxUid);
      case 'modseq':
        return m.modseq >= k.modseq;
      case 'not':
        return !test(k.key);
      case 'or':
        return test(k.a) || test(k.b);
      case 'and':
        return k.keys.every(test);
    }
  };
  return test(key);
}

// ---- ESEARCH (RFC 4731) ----

export type ReturnOption = 'MIN' | 'MAX' | 'ALL' | 'COUNT';
const RETURN_OPTIONS: readonly string[] = ['MIN', 'MAX', 'ALL', 'COUNT'];

/**
 * `RETURN (option ...) SP` before the criteria (RFC 4466 search-return-opts); undefined without it, when the
 * answer is the plain SEARCH response. `RETURN ()` means ALL (RFC 4731 §3.1).
 */
export function parseSearchReturn(r: Reader): ReturnOption[] | undefined {
  if (r.peekAtom() !== 'RETURN') return undefined;
  r.atom();
  r.sp();
  const options = r.list(() => {
    const option = r.atom().toUpperCase();
    if (!RETURN_OPTIONS.includes(option)) throw new ParseError(`Unknown SEARCH return option ${option}`);
    return option as ReturnOption;
  });
  r.sp();
  return options.length ? options : ['ALL'];
}

export interface SearchHit {
  /** Sequence number or UID, as the command asked; hits come in ascending order. */
  n: number;
  modseq: number;
}

/**
 * `* ESEARCH (TAG "tag") [UID] ...`: MIN, MAX and ALL only when something matched, COUNT always, ALL as a
 * compressed sequence set; with CONDSTORE (a MODSEQ key) the highest modseq of the messages returned, which for
 * MIN/MAX alone are just those two (RFC 7162 §3.1.10).
 */
export function esearchResponse(tag: string, uid: boolean, options: readonly ReturnOption[], hits: readonly SearchHit[], withModseq: boolean): string {
  let text = `* ESEARCH (TAG ${JSON.stringify(tag)})${uid ? ' UID' : ''}`;
  const first = hits[0];
  const last = hits[hits.length - 1];
  const returned: SearchHit[] = [];
  if (first && last) {
    if (options.includes('MIN')) {
      text += ` MIN ${first.n}`;
      returned.push(first);
    }
    if (options.includes('MAX')) {
      text += ` MAX ${last.n}`;
      returned.push(last);
    }
    if (options.includes('ALL')) text += ` ALL ${formatUidList(hits.map((h) => h.n))}`;
  }
  if (options.includes('COUNT')) text += ` COUNT ${hits.length}`;
  if (options.includes('ALL') || options.includes('COUNT')) returned.push(...hits);
  if (withModseq && returned.length) text += ` MODSEQ ${returned.reduce((max, h) => Math.max(max, h.modseq), 0)}`;
  return text;
}
