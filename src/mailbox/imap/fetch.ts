// FETCH: the attribute grammar (RFC 3501 §6.4.5, CONDSTORE's MODSEQ and CHANGEDSINCE) and the rendering of
// one message's FETCH response.
import { Literal, ResponseBuilder, atom, formatInternalDate, type ImapValue } from './encode.js';
import { bodyStructure, decodeTransfer, envelope, sectionData, loadedParts, resolvePart, type MimeNode, type Section } from './mime.js';
import { ImapError, ParseError } from './errors.js';
import type { Reader } from './parser.js';

type SimpleItem = 'UID' | 'FLAGS' | 'INTERNALDATE' | 'RFC822.SIZE' | 'ENVELOPE' | 'BODYSTRUCTURE' | 'BODY' | 'MODSEQ' | 'RFC822' | 'RFC822.HEADER' | 'RFC822.TEXT';

export type FetchItem =
  | { kind: SimpleItem }
  | { kind: 'section'; section: Section; peek: boolean; partial?: Partial; label: string }
  /** BINARY[path], BINARY.PEEK[path], BINARY.SIZE[path] (RFC 3516 §4.2): a part with its transfer encoding undone. */
  | { kind: 'binary'; path: number[]; peek: boolean; size: boolean; partial?: Partial; label: string };

interface Partial {
  origin: number;
  length: number;
}

export interface FetchRequest {
  items: FetchItem[];
  changedSince?: number;
  vanished?: boolean;
}

const SIMPLE = new Set<string>(['UID', 'FLAGS', 'INTERNALDATE', 'RFC822.SIZE', 'ENVELOPE', 'BODYSTRUCTURE', 'BODY', 'MODSEQ', 'RFC822', 'RFC822.HEADER', 'RFC822.TEXT']);
const MACROS: Record<string, SimpleItem[]> = {
  ALL: ['FLAGS', 'INTERNALDATE', 'RFC822.SIZE', 'ENVELOPE'],
  FAST: ['FLAGS', 'INTERNALDATE', 'RFC822.SIZE'],
  FULL: ['FLAGS', 'INTERNALDATE', 'RFC822.SIZE', 'ENVELOPE', 'BODY'],
};

/** Parses `fetch-att / "(" fetch-att *(SP fetch-att) ")"` (or a macro) and the optional modifier list. */
export function parseFetchRequest(r: Reader): FetchRequest {
  let items: FetchItem[];
  if (r.peek() === 0x28) {
    items = r.list(() => parseItem(r));
    if (!items.length) throw new ParseError('Empty fetch attribute list');
  } else {
    const name = r.peekAtom();
    const macro = MACROS[name];
    if (macro) {
      r.atom();
      items = macro.map((kind) => ({ kind }));
    } else {
      items = [parseItem(r)];
    }
  }
  const request: FetchRequest = { items };
  if (r.trySp()) {
    r.list(() => {
      const name = r.atom().toUpperCase();
      // QRESYNC's VANISHED (RFC 7162 §3.2.6): checked by the FETCH handler (UID FETCH, CHANGEDSINCE, enabled).
      if (name === 'VANISHED') {
        request.vanished = true;
      } else if (name === 'CHANGEDSINCE') {
        r.sp();
        request.changedSince = modseqValue(r);
      } else {
        throw new ParseError(`Unknown FETCH modifier ${name}`);
      }
    });
  }
  r.end();
  return request;
}

/**
 * A mod-sequence-value (RFC 7162: up to 2^63-1). Ours never get near 2^53, so a larger one is read as the
 * largest safe integer: above every modseq here, which is all a comparison needs.
 */
export function modseqValue(r: Reader): number {
  const digits = r.readWhile((c) => c >= 0x30 && c <= 0x39);
  if (!digits) throw new ParseError(`Expected a mod-sequence at: ${r.rest()}`);
  return Math.min(Number(digits), Number.MAX_SAFE_INTEGER);
}

const isNameChar = (c: number) => (c >= 0x41 && c <= 0x5a) || (c >= 0x61 && c <= 0x7a) || (c >= 0x30 && c <= 0x39) || c === 0x2e;

function parseItem(r: Reader): FetchItem {
  const name = r.readWhile(isNameChar).toUpperCase();
  if (!name) throw new ParseError(`Expected a fetch attribute at: ${r.rest()}`);
  if ((name === 'BODY' || name === 'BODY.PEEK') && r.peek() === 0x5b) {
    const { section, text } = parseSection(r);
    const partial = parsePartial(r);
    const label = `BODY[${text}]${partial ? `<${partial.origin}>` : ''}`;
    return { kind: 'section', section, peek: name === 'BODY.PEEK', label, ...(partial ? { partial } : {}) };
  }
  if (name === 'BINARY' || name === 'BINARY.PEEK' || name === 'BINARY.SIZE') {
    // section-binary = "[" [section-part] "]": part numbers only (RFC 3516 §7).
    r.char('[');
    const spec = r.readWhile((c) => (c >= 0x30 && c <= 0x39) || c === 0x2e);
    r.char(']');
    if (spec && !/^[1-9]\d*(\.[1-9]\d*)*$/.test(spec)) throw new ParseError(`Invalid binary section ${spec}`);
    const path = spec ? spec.split('.').map(Number) : [];
    const size = name === 'BINARY.SIZE';
    const partial = size ? undefined : parsePartial(r);
    const label = `${size ? 'BINARY.SIZE' : 'BINARY'}[${spec}]${partial ? `<${partial.origin}>` : ''}`;
    return { kind: 'binary', path, peek: name !== 'BINARY', size, label, ...(partial ? { partial } : {}) };
  }
  if (!SIMPLE.has(name)) throw new ParseError(`Unknown fetch attribute ${name}`);
  return { kind: name as SimpleItem };
}

/** partial = "<" number "." nz-number ">" */
function parsePartial(r: Reader): Partial | undefined {
  if (!r.tryChar('<')) return undefined;
  const origin = r.number();
  r.char('.');
  const length = r.nzNumber();
  r.char('>');
  return { origin, length };
}

/** section = "[" [section-spec] "]" — returns the parsed section and its canonical text for the response. */
function parseSection(r: Reader): { section: Section; text: string } {
  r.char('[');
  const spec = r.readWhile((c) => c !== 0x5d && c !== 0x20 && c !== 0x28 && c >= 0x21 && c < 0x7f).toUpperCase();
  const words = spec ? spec.split('.') : [];
  const path: number[] = [];
  while (words.length && /^\d+$/.test(words[0]!)) {
    const n = Number(words.shift());
    if (n === 0) throw new ParseError('Section part numbers start at 1');
    path.push(n);
  }
  const kind = words.join('.');
  if (!['', 'HEADER', 'HEADER.FIELDS', 'HEADER.FIELDS.NOT', 'TEXT', 'MIME'].includes(kind)) throw new ParseError(`Invalid section ${spec}`);
  if (kind === 'MIME' && !path.length) throw new ParseError('MIME needs a part number');
  const section: Section = { path, kind: kind as Section['kind'] };
  let text = spec;
  if (kind.startsWith('HEADER.FIELDS')) {
    r.sp();
    const fields = r.list(() => r.astring());
    if (!fields.length) throw new ParseError('Empty header field list');
    if (fields.some((f) => !/^[\x21-\x39\x3b-\x7e]+$/.test(f))) throw new ParseError('Invalid header field name');
    section.fields = fields;
    text += ` (${fields.join(' ')})`;
  }
  r.char(']');
  return { section, text };
}

export function needsRaw(req: FetchRequest): boolean {
  return req.items.some((i) => i.kind === 'section' || i.kind === 'binary' || i.kind === 'RFC822' || i.kind === 'RFC822.HEADER' || i.kind === 'RFC822.TEXT');
}

export function needsTree(req: FetchRequest): boolean {
  return req.items.some((i) => i.kind === 'section' || i.kind === 'binary' || i.kind === 'ENVELOPE' || i.kind === 'BODY' || i.kind === 'BODYSTRUCTURE' || i.kind === 'RFC822.HEADER' || i.kind === 'RFC822.TEXT');
}

/** Items that set \Seen on a read-write mailbox. */
export function setsSeen(req: FetchRequest): boolean {
  return req.items.some((i) => ((i.kind === 'section' || i.kind === 'binary') && !i.peek) || i.kind === 'RFC822' || i.kind === 'RFC822.TEXT');
}

/** Whether the response carries the whole message or its whole text, for 'retrieved' events. */
export function retrievesContent(req: FetchRequest): boolean {
  return req.items.some(
    (i) =>
      (i.kind === 'section' && !i.section.path.length && !i.partial && (i.section.kind === '' || i.section.kind === 'TEXT')) ||
      (i.kind === 'binary' && !i.size && !i.path.length && !i.partial) ||
      i.kind === 'RFC822' ||
      i.kind === 'RFC822.TEXT',
  );
}

export interface FetchMessage {
  seq: number;
  uid: number;
  /** Flags as the client sees them, \Recent included. */
  flags: string[];
  internalDate: number;
  size: number;
  modseq: number;
  raw?: Buffer;
  tree?: MimeNode;
}

export function flagList(flags: string[]): ImapValue {
  return flags.map(atom);
}

/** `* seq FETCH (...)`. `extra` adds UID (UID commands), FLAGS (after an implicit \Seen), MODSEQ (CONDSTORE). */
export function renderFetch(req: FetchRequest, m: FetchMessage, extra: { uid?: boolean; flags?: boolean; modseq?: boolean }): Buffer[] {
  const b = new ResponseBuilder().raw(`* ${m.seq} FETCH (`);
  const kinds = new Set(req.items.map((i) => i.kind));
  const out: Array<[string, ImapValue]> = [];
  if (extra.uid && !kinds.has('UID')) out.push(['UID', m.uid]);
  for (const item of req.items) out.push(renderItem(item, m));
  if (extra.flags && !kinds.has('FLAGS')) out.push(['FLAGS', flagList(m.flags)]);
  if (extra.modseq && !kinds.has('MODSEQ')) out.push(['MODSEQ', [m.modseq]]);
  out.forEach(([name, value], i) => {
    b.raw(`${i ? ' ' : ''}${name} `).value(value);
  });
  b.raw(')');
  return b.end();
}

/** Message data always as a literal (it may hold anything), except the empty string. */
function content(data: Buffer | null): ImapValue {
  return data === null ? null : data.length ? new Literal(data) : '';
}

function renderItem(item: FetchItem, m: FetchMessage): [string, ImapValue] {
  const { tree, raw } = loadedParts(m);
  switch (item.kind) {
    case 'UID':
      return ['UID', m.uid];
    case 'FLAGS':
      return ['FLAGS', flagList(m.flags)];
    case 'INTERNALDATE':
      return ['INTERNALDATE', formatInternalDate(m.internalDate)];
    case 'RFC822.SIZE':
      return ['RFC822.SIZE', m.size];
    case 'MODSEQ':
      return ['MODSEQ', [m.modseq]];
    case 'ENVELOPE':
      return ['ENVELOPE', envelope(tree())];
    case 'BODYSTRUCTURE':
      return ['BODYSTRUCTURE', bodyStructure(tree(), true)];
    case 'BODY':
      return ['BODY', bodyStructure(tree(), false)];
    case 'RFC822':
      return ['RFC822', content(raw())];
    case 'RFC822.HEADER':
      return ['RFC822.HEADER', content(sectionData(raw(), tree(), { path: [], kind: 'HEADER' }))];
    case 'RFC822.TEXT':
      return ['RFC822.TEXT', content(sectionData(raw(), tree(), { path: [], kind: 'TEXT' }))];
    case 'section': {
      const data = sectionData(raw(), tree(), item.section);
      return [item.label, content(data && cut(data, item.partial))];
    }
    case 'binary': {
      const data = binarySection(raw(), tree(), item.path);
      if (item.size) return [item.label, data ? data.length : 0];
      if (!data) return [item.label, null];
      const part = cut(data, item.partial);
      // A literal8 only where NUL needs one; 8-bit data without NUL goes as a plain literal (RFC 3516 §4.3).
      return [item.label, part.length ? new Literal(part, part.includes(0)) : ''];
    }
  }
}

function cut(data: Buffer, partial: Partial | undefined): Buffer {
  if (!partial) return data;
  return partial.origin >= data.length ? Buffer.alloc(0) : data.subarray(partial.origin, partial.origin + partial.length);
}

/**
 * The decoded octets of BINARY[path] (RFC 3516): the whole message as stored for [], else the part's body with its
 * content-transfer-encoding undone; null when there is no such part. An encoding we cannot undo fails the FETCH
 * with NO [UNKNOWN-CTE] (§4.3).
 */
function binarySection(raw: Buffer, tree: MimeNode, path: number[]): Buffer | null {
  if (!path.length) return raw;
  const part = resolvePart(tree, path);
  if (!part) return null;
  const decoded = decodeTransfer(raw, part);
  if (!decoded) throw new ImapError('NO', `Unknown content-transfer-encoding ${part.encoding} in part ${path.join('.')}`, 'UNKNOWN-CTE');
  return decoded;
}
