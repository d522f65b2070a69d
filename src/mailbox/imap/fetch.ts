// FETCH: the attribute grammar (RFC 3501 §6.4.5, CONDSTORE's MODSEQ and CHANGEDSINCE) and the rendering of
// one message's FETCH response.
import { Literal, ResponseBuilder, atom, formatInternalDate, type ImapValue } from './encode.js';
import { bodyStructure, envelope, sectionData, loadedParts, type MimeNode, type Section } from './mime.js';
import { ParseError } from './errors.js';
import type { Reader } from './parser.js';

type SimpleItem = 'UID' | 'FLAGS' | 'INTERNALDATE' | 'RFC822.SIZE' | 'ENVELOPE' | 'BODYSTRUCTURE' | 'BODY' | 'MODSEQ' | 'RFC822' | 'RFC822.HEADER' | 'RFC822.TEXT';

export type FetchItem =
  | { kind: SimpleItem }
  | { kind: 'section'; section: Section; peek: boolean; partial?: { origin: number; length: number }; label: string };

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
    let partial: { origin: number; length: number } | undefined;
    if (r.tryChar('<')) {
      const origin = r.number();
      r.char('.');
      const length = r.nzNumber();
      r.char('>');
      partial = { origin, length };
    }
    const label = `BODY[${text}]${partial ? `<${partial.origin}>` : ''}`;
    return { kind: 'section', section, peek: name === 'BODY.PEEK', label, ...(partial ? { partial } : {}) };
  }
  if (!SIMPLE.has(name)) throw new ParseError(`Unknown fetch attribute ${name}`);
  return { kind: name as SimpleItem };
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
  return req.items.some((i) => i.kind === 'section' || i.kind === 'RFC822' || i.kind === 'RFC822.HEADER' || i.kind === 'RFC822.TEXT');
}

export function needsTree(req: FetchRequest): boolean {
  return req.items.some((i) => i.kind === 'section' || i.kind === 'ENVELOPE' || i.kind === 'BODY' || i.kind === 'BODYSTRUCTURE' || i.kind === 'RFC822.HEADER' || i.kind === 'RFC822.TEXT');
}

/** Items that set \Seen on a read-write mailbox. */
export function setsSeen(req: FetchRequest): boolean {
  return req.items.some((i) => (i.kind === 'section' && !i.peek) || i.kind === 'RFC822' || i.kind === 'RFC822.TEXT');
}

/** Whether the response carries the whole message or its whole text, for 'retrieved' events. */
export function retrievesContent(req: FetchRequest): boolean {
  return req.items.some(
    (i) => (i.kind === 'section' && !i.section.path.length && !i.partial && (i.section.kind === '' || i.section.kind === 'TEXT')) || i.kind === 'RFC822' || i.kind === 'RFC822.TEXT',
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
      let data = sectionData(raw(), tree(), item.section);
      if (data && item.partial) {
        const { origin, length } = item.partial;
        data = origin >= data.length ? Buffer.alloc(0) : data.subarray(origin, origin + length);
      }
      return [item.label, content(data)];
    }
  }
}
