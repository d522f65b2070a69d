// A small MIME parser for what IMAP needs from raw message bytes: the entity tree with byte offsets (for
// BODY[section]), ENVELOPE and BODYSTRUCTURE (RFC 3501 §7.4.2), and decoded text for SEARCH.
// Header values are kept as latin1 strings so that every octet survives unchanged into responses.
import iconv from 'iconv-lite';
import { Joined, type ImapValue } from './encode.js';

export interface HeaderField {
  /** Lower-cased field name. */
  name: string;
  /** Byte range of the whole field in the message, folding and line break included. */
  start: number;
  end: number;
  /** Unfolded value, surrounding whitespace removed (latin1: one char per octet). */
  value: string;
}

export interface MimeNode {
  /** Header block [start, bodyStart) includes the empty line; the body is [bodyStart, end). */
  start: number;
  bodyStart: number;
  end: number;
  headers: HeaderField[];
  /** Lower-cased media type and subtype. */
  type: string;
  subtype: string;
  params: Array<[string, string]>;
  encoding: string;
  disposition: { type: string; params: Array<[string, string]> } | null;
  /** Lines in the body (text and message/rfc822 parts). */
  lines: number;
  /** Children of a multipart. */
  parts: MimeNode[];
  /** The encapsulated message of a message/rfc822 part. */
  message?: MimeNode;
}

/** Deeper nesting is treated as opaque data, so hostile messages cannot exhaust the stack. */
const MAX_DEPTH = 40;

export function parseMessage(raw: Buffer): MimeNode {
  return parseEntity(raw, 0, raw.length, ['text', 'plain'], 0);
}

export function header(node: MimeNode, name: string): string | undefined {
  return node.headers.find((h) => h.name === name)?.value;
}

function parseEntity(buf: Buffer, start: number, end: number, defaultType: [string, string], depth: number): MimeNode {
  const { headers, bodyStart } = parseHeaderBlock(buf, start, end);
  const node: MimeNode = {
    start, bodyStart, end, headers,
    type: defaultType[0], subtype: defaultType[1], params: [],
    encoding: '7bit', disposition: null, lines: 0, parts: [],
  };
  const ct = header(node, 'content-type');
  const parsed = ct !== undefined ? parseParameterized(ct) : undefined;
  const m = parsed && /^([!#-'*+.0-9A-Z^-~-]+)\/([!#-'*+.0-9A-Z^-~-]+)$/i.exec(parsed.value);
  if (m && parsed) {
    node.type = m[1]!.toLowerCase();
    node.subtype = m[2]!.toLowerCase();
    node.params = parsed.params;
  } else if (ct !== undefined) {
    // RFC 2045 §5.2: an unusable Content-Type means text/plain.
    [node.type, node.subtype] = ['text', 'plain'];
  } else if (node.type === 'text') {
    node.params = [['charset', 'us-ascii']];
  }
  const cte = header(node, 'content-transfer-encoding');
  if (cte) node.encoding = cte.replace(/\(.*?\)/g, '').trim().toLowerCase() || '7bit';
  const cd = header(node, 'content-disposition');
  if (cd) {
    const d = parseParameterized(cd);
    if (d.value) node.disposition = { type: d.value.toLowerCase(), params: d.params };
  }

  if (node.type === 'multipart') {
    const boundary = param(node.params, 'boundary');
    const ranges = boundary && depth < MAX_DEPTH ? splitMultipart(buf, bodyStart, end, boundary) : [];
    const childType: [string, string] = node.subtype === 'digest' ? ['message', 'rfc822'] : ['text', 'plain'];
    node.parts = ranges.map(([s, e]) => parseEntity(buf, s, e, childType, depth + 1));
    // BODYSTRUCTURE needs at least one part: an unsplittable multipart becomes one text part.
    if (!node.parts.length) {
      node.parts = [{ ...node, start: bodyStart, headers: [], type: 'text', subtype: 'plain', params: [], encoding: '7bit', disposition: null, parts: [], lines: countLines(buf, bodyStart, end) }];
    }
  } else if (node.type === 'message' && node.subtype === 'rfc822' && isIdentityEncoding(node.encoding) && depth < MAX_DEPTH) {
    node.message = parseEntity(buf, bodyStart, end, ['text', 'plain'], depth + 1);
    node.lines = countLines(buf, bodyStart, end);
  } else if (node.type === 'text') {
    node.lines = countLines(buf, bodyStart, end);
  }
  return node;
}

function isIdentityEncoding(e: string): boolean {
  return e === '7bit' || e === '8bit' || e === 'binary';
}

export function param(params: Array<[string, string]>, name: string): string | undefined {
  return params.find(([k]) => k.toLowerCase() === name)?.[1];
}

function countLines(buf: Buffer, from: number, to: number): number {
  let n = 0;
  for (let i = buf.indexOf(0x0a, from); i >= 0 && i < to; i = buf.indexOf(0x0a, i + 1)) n++;
  // An unterminated last line still counts as a line.
  if (to > from && buf[to - 1] !== 0x0a) n++;
  return n;
}

function parseHeaderBlock(buf: Buffer, start: number, end: number): { headers: HeaderField[]; bodyStart: number } {
  const headers: HeaderField[] = [];
  const colons: number[] = [];
  let pos = start;
  let bodyStart = end;
  while (pos < end) {
    let lf = buf.indexOf(0x0a, pos);
    if (lf < 0 || lf >= end) lf = end - 1;
    const next = lf + 1;
    let lineEnd = lf;
    if (buf[lineEnd] !== 0x0a) lineEnd = next;
    if (lineEnd > pos && buf[lineEnd - 1] === 0x0d) lineEnd--;
    if (lineEnd === pos) {
      bodyStart = next;
      break;
    }
    const first = buf[pos];
    const last = headers[headers.length - 1];
    if ((first === 0x20 || first === 0x09) && last) {
      last.end = next;
    } else {
      const colon = buf.indexOf(0x3a, pos);
      const hasColon = colon >= 0 && colon < lineEnd;
      const name = hasColon ? buf.toString('latin1', pos, colon).trim().toLowerCase() : '';
      headers.push({ name, start: pos, end: next, value: '' });
      colons.push(hasColon ? colon + 1 : lineEnd);
    }
    pos = next;
  }
  headers.forEach((h, i) => {
    h.value = buf.toString('latin1', colons[i], h.end).replace(/\r?\n(?=[ \t])/g, '').replace(/^[ \t]+|[\s]+$/g, '');
  });
  return { headers, bodyStart };
}

/** Body part ranges between boundary delimiter lines (RFC 2046 §5.1.1); the CRLF before a delimiter is part of it. */
function splitMultipart(buf: Buffer, from: number, to: number, boundary: string): Array<[number, number]> {
  const body = buf.subarray(0, to);
  const delimiter = Buffer.from('--' + boundary, 'latin1');
  const parts: Array<[number, number]> = [];
  let partStart = -1;
  let pos = from;
  for (;;) {
    const at = body.indexOf(delimiter, pos);
    if (at < 0) break;
    pos = at + 1;
    if (at !== from && body[at - 1] !== 0x0a) continue;
    let p = at + delimiter.length;
    const close = body[p] === 0x2d && body[p + 1] === 0x2d;
    if (close) p += 2;
    while (p < to && (body[p] === 0x20 || body[p] === 0x09)) p++;
    if (!close && p < to && body[p] !== 0x0d && body[p] !== 0x0a) continue;
    let lineStart = at;
    if (at > from) lineStart = at >= from + 2 && body[at - 2] === 0x0d ? at - 2 : at - 1;
    if (partStart >= 0) parts.push([partStart, Math.max(partStart, lineStart)]);
    if (close) return parts;
    if (body[p] === 0x0d) p++;
    if (body[p] === 0x0a) p++;
    partStart = Math.min(p, to);
    pos = partStart;
  }
  if (partStart >= 0) parts.push([partStart, to]);
  return parts;
}

/** `value; name=value; name="quoted"` with comments removed (Content-Type, Content-Disposition). */
export function parseParameterized(text: string): { value: string; params: Array<[string, string]> } {
  const pieces: string[] = [''];
  let i = 0;
  while (i < text.length) {
    const c = text[i]!;
    if (c === '"') {
      let j = i + 1;
      let s = '"';
      while (j < text.length && text[j] !== '"') {
        if (text[j] === '\\' && j + 1 < text.length) j++;
        s += text[j];
        j++;
      }
      pieces[pieces.length - 1] += s + '"';
      i = j + 1;
    } else if (c === '(') {
      let level = 0;
      while (i < text.length) {
        if (text[i] === '\\') i++;
        else if (text[i] === '(') level++;
        else if (text[i] === ')' && --level === 0) break;
        i++;
      }
      i++;
    } else if (c === ';') {
      pieces.push('');
      i++;
    } else {
      pieces[pieces.length - 1] += c;
      i++;
    }
  }
  const params: Array<[string, string]> = [];
  for (const piece of pieces.slice(1)) {
    const eq = piece.indexOf('=');
    if (eq <= 0) continue;
    const name = piece.slice(0, eq).trim();
    let value = piece.slice(eq + 1).trim();
    if (value.startsWith('"') && value.endsWith('"') && value.length >= 2) value = value.slice(1, -1);
    if (name && !/\s/.test(name)) params.push([name, value]);
  }
  return { value: pieces[0]!.trim(), params };
}

// ---- ENVELOPE ----

const latin1 = (s: string): Buffer => Buffer.from(s, 'latin1');

function nstringHeader(node: MimeNode, name: string): ImapValue {
  const v = header(node, name);
  return v === undefined ? null : latin1(v);
}

export function envelope(node: MimeNode): ImapValue {
  const from = addressList(node, 'from');
  const orFrom = (name: string) => addressList(node, name) ?? from;
  return [
    nstringHeader(node, 'date'),
    nstringHeader(node, 'subject'),
    from,
    orFrom('sender'),
    orFrom('reply-to'),
    addressList(node, 'to'),
    addressList(node, 'cc'),
    addressList(node, 'bcc'),
    nstringHeader(node, 'in-reply-to'),
    nstringHeader(node, 'message-id'),
  ];
}

function addressList(node: MimeNode, name: string): ImapValue[] | null {
  const v = header(node, name);
  if (v === undefined) return null;
  const list = parseAddresses(v).map((a): ImapValue =>
    a.group !== undefined
      ? [null, null, a.group === null ? null : latin1(a.group), null]
      : [a.name ? latin1(a.name) : null, a.route ? latin1(a.route) : null, latin1(a.mailbox ?? ''), a.host === undefined ? null : latin1(a.host)],
  );
  // env-from etc. = "(" 1*address ")": the addresses follow each other without spaces.
  return list.length ? [new Joined(list)] : null;
}

export interface ParsedAddress {
  name?: string;
  route?: string;
  mailbox?: string;
  host?: string;
  /** Group start (its name) or end (null), in the IMAP envelope's group syntax. */
  group?: string | null;
}

type Token = { t: 'word' | 'quoted' | 'comment' | 'special'; v: string };

function tokenizeAddress(s: string): Token[] {
  const tokens: Token[] = [];
  let i = 0;
  while (i < s.length) {
    const c = s[i]!;
    if (c === ' ' || c === '\t' || c === '\r' || c === '\n') {
      i++;
    } else if (c === '"') {
      let v = '';
      i++;
      while (i < s.length && s[i] !== '"') {
        if (s[i] === '\\' && i + 1 < s.length) i++;
        v += s[i++];
      }
      i++;
      tokens.push({ t: 'quoted', v });
    } else if (c === '(') {
      let level = 0;
      let v = '';
      while (i < s.length) {
        const d = s[i]!;
        if (d === '\\' && i + 1 < s.length) {
          v += s[i + 1];
          i += 2;
          continue;
        }
        if (d === '(') level++;
        else if (d === ')') level--;
        if (level === 0) break;
        if (!(d === '(' && level === 1)) v += d;
        i++;
      }
      i++;
      tokens.push({ t: 'comment', v: v.trim() });
    } else if ('<>@,;:'.includes(c)) {
      tokens.push({ t: 'special', v: c });
      i++;
    } else if (c === '[') {
      const j = s.indexOf(']', i);
      const end = j < 0 ? s.length : j + 1;
      tokens.push({ t: 'word', v: s.slice(i, end) });
      i = end;
    } else {
      let j = i;
      while (j < s.length && !' \t\r\n"(<>@,;:['.includes(s[j]!)) j++;
      tokens.push({ t: 'word', v: s.slice(i, j) });
      i = j;
    }
  }
  return tokens;
}

/** RFC 5322 address lists, forgiving: groups, routes, comments as names, missing parts filled in. */
export function parseAddresses(value: string): ParsedAddress[] {
  const out: ParsedAddress[] = [];
  const tokens = tokenizeAddress(value);
  let phrase: Token[] = [];
  let angle: Token[] | undefined;
  let inAngle = false;
  let inGroup = false;

  const flush = () => {
    if (angle) {
      const name = phrase.filter((t) => t.t !== 'comment').map((t) => t.v).join(' ');
      out.push(makeAddress(angle, name));
    } else if (phrase.some((t) => t.t !== 'comment')) {
      const comment = phrase.filter((t) => t.t === 'comment').pop()?.v;
      out.push(makeAddress(phrase.filter((t) => t.t !== 'comment'), comment ?? ''));
    }
    phrase = [];
    angle = undefined;
  };

  for (const tok of tokens) {
    if (inAngle) {
      if (tok.t === 'special' && tok.v === '>') inAngle = false;
      else if (tok.t !== 'comment') angle!.push(tok);
      continue;
    }
    if (tok.t !== 'special') {
      phrase.push(tok);
    } else if (tok.v === '<') {
      inAngle = true;
      angle = [];
    } else if (tok.v === ',') {
      flush();
    } else if (tok.v === ':' && !inGroup && !angle) {
      out.push({ group: phrase.filter((t) => t.t !== 'comment').map((t) => t.v).join(' ') });
      phrase = [];
      inGroup = true;
    } else if (tok.v === ';' && inGroup) {
      flush();
      out.push({ group: null });
      inGroup = false;
    } else {
      phrase.push({ t: 'word', v: tok.v });
    }
  }
  flush();
  if (inGroup) out.push({ group: null });
  return out;
}

function makeAddress(tokens: Token[], name: string): ParsedAddress {
  let route: string | undefined;
  let text = tokens.map((t) => (t.t === 'quoted' && /[\s"\\(),.:;<>@[\]]/.test(t.v) ? `"${t.v.replace(/["\\]/g, '\\$&')}"` : t.v)).join('');
  // Obsolete source route: <@a,@b:user@host>
  const colon = text.indexOf(':');
  if (text.startsWith('@') && colon > 0) {
    route = text.slice(0, colon);
    text = text.slice(colon + 1);
  }
  const at = text.lastIndexOf('@');
  const mailbox = at >= 0 ? text.slice(0, at) : text;
  const host = at >= 0 ? text.slice(at + 1) : '';
  return {
    ...(name ? { name } : {}),
    ...(route ? { route } : {}),
    // Dovecot's convention for incomplete addresses: a NIL host would read as group syntax.
    mailbox: mailbox || 'MISSING_MAILBOX',
    host: host || 'MISSING_DOMAIN',
  };
}

// ---- BODYSTRUCTURE ----

const upper = (s: string) => s.toUpperCase();

function paramList(params: Array<[string, string]>): ImapValue {
  if (!params.length) return null;
  return params.flatMap(([k, v]) => [upper(k), latin1(v)]);
}

function dispositionValue(node: MimeNode): ImapValue {
  return node.disposition ? [upper(node.disposition.type), paramList(node.disposition.params)] : null;
}

/** BODYSTRUCTURE (extended) or BODY (basic) for an entity. */
export function bodyStructure(node: MimeNode, extended: boolean): ImapValue {
  if (node.parts.length) {
    const value: ImapValue[] = [new Joined(node.parts.map((p) => bodyStructure(p, extended))), upper(node.subtype)];
    if (extended) value.push(paramList(node.params), dispositionValue(node), null, nstringHeader(node, 'content-location'));
    return value;
  }
  const value: ImapValue[] = [
    upper(node.type),
    upper(node.subtype),
    paramList(node.params),
    nstringHeader(node, 'content-id'),
    nstringHeader(node, 'content-description'),
    upper(node.encoding),
    node.end - node.bodyStart,
  ];
  if (node.message) value.push(envelope(node.message), bodyStructure(node.message, extended), node.lines);
  else if (node.type === 'text') value.push(node.lines);
  if (extended) value.push(null, dispositionValue(node), null, nstringHeader(node, 'content-location'));
  return value;
}

// ---- Sections ----

export interface Section {
  /** Part numbers, e.g. [1, 2] for "1.2"; empty for the whole message. */
  path: number[];
  kind: '' | 'HEADER' | 'HEADER.FIELDS' | 'HEADER.FIELDS.NOT' | 'TEXT' | 'MIME';
  /** Upper-cased field names for HEADER.FIELDS(.NOT). */
  fields?: string[];
}

/** The entity a part path names (RFC 3501 §6.4.5): part 1 of a non-multipart message is its body. */
export function resolvePart(root: MimeNode, path: number[]): MimeNode | undefined {
  let node: MimeNode | undefined = root;
  let isMessage = true;
  for (const k of path) {
    // Numbering inside a message (the top level, or a message/rfc822 part) counts the parts of its body.
    const message: MimeNode | undefined = isMessage ? node : node.message;
    if (message) node = message.parts.length ? message.parts[k - 1] : k === 1 ? message : undefined;
    else node = node.parts[k - 1];
    if (!node) return undefined;
    isMessage = false;
  }
  return node;
}

/** The octets of a section, or null when the message has no such part. */
export function sectionData(raw: Buffer, root: MimeNode, section: Section): Buffer | null {
  const part = resolvePart(root, section.path);
  if (!part) return null;
  const whole = section.path.length === 0;
  // HEADER and TEXT name the header/body of a message: the top level or a message/rfc822 part.
  const message = whole ? part : part.message;
  switch (section.kind) {
    case '':
      return whole ? raw.subarray(part.start, part.end) : raw.subarray(part.bodyStart, part.end);
    case 'MIME':
      return whole ? null : raw.subarray(part.start, part.bodyStart);
    case 'TEXT':
      return message ? raw.subarray(message.bodyStart, message.end) : null;
    case 'HEADER':
      return message ? raw.subarray(message.start, message.bodyStart) : null;
    case 'HEADER.FIELDS':
    case 'HEADER.FIELDS.NOT': {
      if (!message) return null;
      const names = new Set((section.fields ?? []).map((f) => f.toLowerCase()));
      const keep = section.kind === 'HEADER.FIELDS';
      const chunks: Buffer[] = [];
      for (const h of message.headers) {
        if (!h.name || names.has(h.name) !== keep) continue;
        chunks.push(raw.subarray(h.start, h.end));
        if (raw[h.end - 1] !== 0x0a) chunks.push(Buffer.from('\r\n'));
      }
      chunks.push(Buffer.from('\r\n'));
      return Buffer.concat(chunks);
    }
  }
}

// ---- Decoding, for SEARCH ----

/**
 * Text in a charset: iconv-lite first (Node's TextDecoder decodes windows-1252 as Latin-1), then TextDecoder for
 * what iconv-lite lacks (ISO-2022-JP); an unknown charset leaves the octets as Latin-1.
 */
export function decodeCharset(data: Buffer, charset: string | undefined): string {
  const label = (charset ?? 'us-ascii').trim().toLowerCase();
  if (label === 'us-ascii' || label === 'ascii') return data.toString('utf8');
  if (iconv.encodingExists(label)) return iconv.decode(data, label);
  try {
    return new TextDecoder(label).decode(data);
  } catch {
    return data.toString('latin1');
  }
}

const ENCODED_WORD = /=\?([^?\s]+)\?([bBqQ])\?([^?\s]*)\?=/g;
const UTF8_STRICT = new TextDecoder('utf-8', { fatal: true });

/** Raw 8-bit header text (kept as latin1): UTF-8 when it is valid UTF-8 (RFC 6532), else Latin-1 as it stands. */
function rawHeaderText(latin1: string): string {
  if (!/[\x80-\xff]/.test(latin1)) return latin1;
  try {
    return UTF8_STRICT.decode(Buffer.from(latin1, 'latin1'));
  } catch {
    return latin1;
  }
}

/**
 * RFC 2047 encoded words (B and Q, any charset decodeCharset knows; RFC 2231 language tags dropped) in a (latin1)
 * header value. Whitespace between adjacent encoded words is dropped (§6.2), and adjacent words in one charset are
 * decoded together, so a character split across two words survives. Raw 8-bit text is taken as UTF-8 if it is.
 */
export function decodeHeaderValue(value: string): string {
  let out = '';
  let pending: { charset: string; bytes: Buffer[] } | undefined;
  const flush = () => {
    if (pending) out += decodeCharset(Buffer.concat(pending.bytes), pending.charset);
    pending = undefined;
  };
  let last = 0;
  for (const m of value.matchAll(ENCODED_WORD)) {
    const between = value.slice(last, m.index);
    if (!pending || !/^[ \t\r\n]*$/.test(between)) {
      flush();
      out += rawHeaderText(between);
    }
    const charset = m[1]!.split('*')[0]!.toLowerCase();
    const text = m[3]!;
    const bytes = m[2]!.toUpperCase() === 'B' ? Buffer.from(text, 'base64') : decodeQuotedPrintable(text.replace(/_/g, ' '), false);
    if (pending?.charset !== charset) {
      flush();
      pending = { charset, bytes: [] };
    }
    pending.bytes.push(bytes);
    last = m.index + m[0].length;
  }
  flush();
  return out + rawHeaderText(value.slice(last));
}

export function decodeQuotedPrintable(text: string, soft = true): Buffer {
  const s = soft ? text.replace(/=\r?\n/g, '') : text;
  const out: number[] = [];
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c === 0x3d && /^[0-9A-Fa-f]{2}$/.test(s.slice(i + 1, i + 3))) {
      out.push(parseInt(s.slice(i + 1, i + 3), 16));
      i += 2;
    } else {
      out.push(c & 0xff);
    }
  }
  return Buffer.from(out);
}

/**
 * The body of an entity with its content-transfer-encoding undone (RFC 2045 §6; FETCH BINARY, RFC 3516), or
 * undefined for an encoding we do not know. Quoted-printable drops the transport padding at line ends (§6.7 rule 3).
 */
export function decodeTransfer(raw: Buffer, node: MimeNode): Buffer | undefined {
  const body = raw.subarray(node.bodyStart, node.end);
  switch (node.encoding) {
    case '':
    case '7bit':
    case '8bit':
    case 'binary':
      return body;
    case 'base64':
      return Buffer.from(body.toString('latin1'), 'base64');
    case 'quoted-printable':
      return decodeQuotedPrintable(body.toString('latin1').replace(/[ \t]+(?=\r?\n|$)/g, ''));
    default:
      return undefined;
  }
}

function decodeBody(raw: Buffer, node: MimeNode): Buffer {
  const body = raw.subarray(node.bodyStart, node.end);
  if (node.encoding === 'base64') return Buffer.from(body.toString('latin1'), 'base64');
  if (node.encoding === 'quoted-printable') return decodeQuotedPrintable(body.toString('latin1'));
  return body;
}

/** Decoded header text of an entity (all fields, for TEXT searches). */
export function headerText(node: MimeNode): string {
  return node.headers.map((h) => `${h.name}: ${decodeHeaderValue(h.value)}`).join('\n');
}

/** Decoded text of every text part (and encapsulated messages) below an entity. */
export function bodyText(raw: Buffer, node: MimeNode): string {
  if (node.parts.length) return node.parts.map((p) => bodyText(raw, p)).join('\n');
  if (node.message) return headerText(node.message) + '\n' + bodyText(raw, node.message);
  if (node.type !== 'text') return '';
  return decodeCharset(decodeBody(raw, node), param(node.params, 'charset'));
}

/** The calendar day of the Date header in its own zone, as days since the epoch (SENTON etc. ignore time and zone). */
export function sentDay(node: MimeNode): number | undefined {
  const v = header(node, 'date');
  const m = v && /(\d{1,2})\s+([A-Za-z]{3})[a-z]*\.?\s+(\d{2,4})/.exec(v);
  if (!m) return undefined;
  const month = ['jan', 'feb', 'mar', 'apr', 'may', 'jun', 'jul', 'aug', 'sep', 'oct', 'nov', 'dec'].indexOf(m[2]!.toLowerCase());
  if (month < 0) return undefined;
  let year = Number(m[3]);
  if (m[3]!.length === 2) year += year < 50 ? 2000 : 1900;
  return Math.floor(Date.UTC(year, month, Number(m[1])) / 86_400_000);
}

/**
 * Accessors for what a command loaded for a message (its MIME tree, its bytes); asking for what was not loaded
 * is a bug in the command's planning, not a client error.
 */
export function loadedParts(m: { tree?: MimeNode; raw?: Buffer }): { tree: () => MimeNode; raw: () => Buffer } {
  return {
    tree: () => {
      if (!m.tree) throw new Error('message structure not loaded');
      return m.tree;
    },
    raw: () => {
      if (!m.raw) throw new Error('message data not loaded');
      return m.raw;
    },
  };
}
