// The MIME walker of the content scanner (issue 13): every leaf part of a message, its content decoded (base64,
// quoted-printable), multipart/* split on its boundary, message/rfc822 parsed as the message it carries, however it
// is encoded. Malware hides in exactly the places a lazy scanner skips (an attachment of a forwarded message, a
// base64 body inside a base64 message), so nothing is taken on trust: a multipart or message/rfc822 part with a
// transfer encoding RFC 2045 forbids for it is decoded all the same, as mail clients (and clamd) do.
//
// Bounded so that a crafted message cannot make the MX work without end: nesting (multipart in multipart, message in
// message) at most `maxDepth` deep, and at most `maxDecodedBytes` decoded in all (each level is decoded from the one
// above, so the sum grows with depth even though no single decoding can grow). Past a bound the walker throws
// ScanLimitExceeded, and the scanner treats the message as unscannable content (a verdict, not an outage: the same
// message would exceed the bound on every retry).

/** One leaf part: `path` numbered as IMAP does (RFC 3501 §6.4.5: `1`, `2.1`; a message/rfc822's content is `<its path>.1` when single-part). */
export interface DecodedPart {
  path: string;
  /** From Content-Disposition `filename` or Content-Type `name` (RFC 2231 and RFC 2047 forms decoded). */
  filename?: string;
  /** The media type, lower case (`text/plain` when none is given). */
  type: string;
  data: Buffer;
}

export interface MimeLimits {
  /** How deep multiparts and message/rfc822 parts may nest (the top-level message is depth 0). */
  maxDepth: number;
  /** The most octets decoded in all, over every level. */
  maxDecodedBytes: number;
}

/** A bound was hit: `signature` names it the way ClamAV's AlertExceedsMax does. */
export class ScanLimitExceeded extends Error {
  constructor(
    readonly signature: 'Heuristics.Limits.Exceeded.MaxRecursion' | 'Heuristics.Limits.Exceeded.MaxScanSize',
    readonly part: string,
    message: string,
  ) {
    super(message);
    this.name = 'ScanLimitExceeded';
  }
}

/** `part` of a verdict: the part's path, with its file name when it has one (`2 (invoice.pdf)`). */
export const partLabel = (part: Pick<DecodedPart, 'path' | 'filename'>): string => (part.filename ? `${part.path} (${part.filename})` : part.path);

interface Entity {
  headers: Map<string, string>;
  body: Buffer;
}

/** Every leaf part of `message`, depth first, in the order they appear. */
export function* mimeParts(message: Buffer, limits: MimeLimits): Generator<DecodedPart> {
  let decoded = 0;
  const count = (n: number, path: string) => {
    decoded += n;
    if (decoded > limits.maxDecodedBytes) throw new ScanLimitExceeded('Heuristics.Limits.Exceeded.MaxScanSize', path || '1', `more than ${limits.maxDecodedBytes} octets decoded (at part ${path || '1'})`);
  };
  const child = (path: string, i: number) => (path ? `${path}.${i}` : `${i}`);

  // `path`: the entity's own path ('' for the top-level message); `root`: the entity is a message's top level, whose
  // single-part content is numbered `<path>.1` (IMAP), while a multipart's child is numbered by its position.
  function* walk(entity: Entity, path: string, root: boolean, depth: number, defaultType: string): Generator<DecodedPart> {
    if (depth > limits.maxDepth) throw new ScanLimitExceeded('Heuristics.Limits.Exceeded.MaxRecursion', path || '1', `MIME parts nested more than ${limits.maxDepth} deep (at part ${path || '1'})`);
    const contentType = parseParameters(entity.headers.get('content-type') ?? '');
    const type = contentType.value.toLowerCase() || defaultType;
    const data = decodeBody(entity.body, (entity.headers.get('content-transfer-encoding') ?? '').trim().toLowerCase());
    count(data.length, path);
    const boundary = contentType.params.get('boundary');
    if (type.startsWith('multipart/') && boundary) {
      const parts = splitMultipart(data, boundary);
      for (let i = 0; i < parts.length; i++) {
        yield* walk(parseEntity(parts[i]!), child(path, i + 1), false, depth + 1, type === 'multipart/digest' ? 'message/rfc822' : 'text/plain');
      }
      return;
    }
    if (type === 'message/rfc822' || type === 'message/global') {
      yield* walk(parseEntity(data), path || '1', true, depth + 1, 'text/plain');
      return;
    }
    const disposition = parseParameters(entity.headers.get('content-disposition') ?? '');
    const filename = disposition.params.get('filename') ?? contentType.params.get('name');
    yield { path: root ? child(path, 1) : path, type, data, ...(filename ? { filename } : {}) };
  }

  yield* walk(parseEntity(message), '', true, 0, 'text/plain');
}

/** Header section and body, split at the first empty line (CRLF or bare LF, as clients write both). */
function parseEntity(raw: Buffer): Entity {
  const text = raw.toString('latin1');
  // An empty header section: the part starts with its blank line (RFC 2046 §5.1.1, text/plain by default).
  const match = /^\r?\n/.exec(text) ?? /\r?\n\r?\n/.exec(text);
  // No empty line: all header, no body (RFC 5322 allows it) — unless the first line is no header at all.
  const end = match ? match.index : /^[!-9;-~]+:/.test(text) ? text.length : 0;
  const bodyStart = match ? match.index + match[0].length : end;
  const headers = new Map<string, string>();
  for (const line of text.slice(0, end).replace(/\r?\n(?=[ \t])/g, '').split(/\r?\n/)) {
    const colon = line.indexOf(':');
    if (colon <= 0) continue;
    const name = line.slice(0, colon).trim().toLowerCase();
    // The first occurrence counts, as in most parsers: a second Content-Type is an evasion attempt or an error.
    if (!headers.has(name)) headers.set(name, line.slice(colon + 1).trim());
  }
  return { headers, body: raw.subarray(bodyStart) };
}

function decodeBody(body: Buffer, encoding: string): Buffer {
  if (encoding === 'base64') return Buffer.from(body.toString('latin1').replace(/[^A-Za-z0-9+/]/g, ''), 'base64');
  if (encoding === 'quoted-printable') return decodeQuotedPrintable(body);
  return body;
}

/** RFC 2045 §6.7: `=XX` octets, `=` at a line's end a soft break, trailing white space on a line dropped. */
export function decodeQuotedPrintable(body: Buffer): Buffer {
  const text = body.toString('latin1').replace(/[ \t]+(?=\r?\n|$)/g, '');
  const out = Buffer.alloc(text.length);
  let n = 0;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c === 0x3d) {
      const soft = /^\r?\n/.exec(text.slice(i + 1, i + 3));
      if (soft) {
        i += soft[0].length;
        continue;
      }
      const hex = text.slice(i + 1, i + 3);
      if (/^[0-9A-Fa-f]{2}$/.test(hex)) {
        out[n++] = parseInt(hex, 16);
        i += 2;
        continue;
      }
    }
    // A lone `=` not followed by hex is kept as it is (RFC 2045 §6.7 (1), the robust reading).
    out[n++] = c;
  }
  return out.subarray(0, n);
}

/**
 * The body parts of a multipart (RFC 2046 §5.1.1): between delimiter lines `--boundary` (transport padding
 * allowed after it), the CRLF before a delimiter belonging to the delimiter, up to the close `--boundary--`. A
 * missing close delimiter ends the last part at the end of the data, as clients read a truncated message.
 */
function splitMultipart(data: Buffer, boundary: string): Buffer[] {
  const text = data.toString('latin1');
  const delimiter = `--${boundary}`;
  const parts: Buffer[] = [];
  let start = -1;
  let from = 0;
  for (;;) {
    const at = text.indexOf(delimiter, from);
    if (at < 0) break;
    from = at + delimiter.length;
    if (at !== 0 && text[at - 1] !== '\n') continue;
    const lineEnd = text.indexOf('\n', from);
    const rest = text.slice(from, lineEnd < 0 ? text.length : lineEnd).replace(/\r$/, '');
    const close = rest.startsWith('--');
    // Anything but padding after the boundary: a longer boundary that merely starts with this one.
    if (!close && rest.trim() !== '') continue;
    if (start >= 0) {
      const end = at === 0 ? 0 : text[at - 2] === '\r' ? at - 2 : at - 1;
      parts.push(data.subarray(start, Math.max(start, end)));
    }
    if (close) return parts;
    start = lineEnd < 0 ? text.length : lineEnd + 1;
  }
  if (start >= 0) parts.push(data.subarray(start));
  return parts;
}

/** A structured header's value and parameters (RFC 2045 §5.1), with RFC 2231 continuations and charsets decoded. */
function parseParameters(header: string): { value: string; params: Map<string, string> } {
  const [value = '', ...rest] = splitOutsideQuotes(header);
  const pieces = new Map<string, { index: number; encoded: boolean; text: string }[]>();
  for (const param of rest) {
    const eq = param.indexOf('=');
    if (eq <= 0) continue;
    const key = param.slice(0, eq).trim().toLowerCase();
    let text = param.slice(eq + 1).trim();
    if (text.startsWith('"')) text = text.slice(1, text.endsWith('"') ? -1 : undefined).replace(/\\(.)/g, '$1');
    const m = /^([^*]+)(?:\*(\d+))?(\*)?$/.exec(key);
    if (!m) continue;
    const list = pieces.get(m[1]!) ?? [];
    list.push({ index: Number(m[2] ?? 0), encoded: m[3] === '*', text });
    pieces.set(m[1]!, list);
  }
  const params = new Map<string, string>();
  for (const [key, list] of pieces) {
    list.sort((a, b) => a.index - b.index);
    const first = list[0]!;
    if (!list.some((p) => p.encoded)) {
      params.set(key, decodeEncodedWords(list.map((p) => p.text).join('')));
      continue;
    }
    // RFC 2231 §4: charset'language'%XX... in the first piece, %XX in every encoded piece.
    const charsetMatch = first.encoded ? /^([^']*)'[^']*'/.exec(first.text) : null;
    const charset = charsetMatch?.[1] || 'utf-8';
    const bytes = list.map((p, i) => {
      const text = i === 0 && charsetMatch ? p.text.slice(charsetMatch[0].length) : p.text;
      return p.encoded ? Buffer.from(text.replace(/%([0-9A-Fa-f]{2})/g, (_, h: string) => String.fromCharCode(parseInt(h, 16))), 'latin1') : Buffer.from(text, 'latin1');
    });
    params.set(key, decodeCharset(Buffer.concat(bytes), charset));
  }
  return { value: value.trim(), params };
}

function splitOutsideQuotes(header: string): string[] {
  const out: string[] = [];
  let current = '';
  let quoted = false;
  for (let i = 0; i < header.length; i++) {
    const c = header[i]!;
    if (c === '\\' && quoted) {
      current += c + (header[++i] ?? '');
      continue;
    }
    if (c === '"') quoted = !quoted;
    if (c === ';' && !quoted) {
      out.push(current);
      current = '';
      continue;
    }
    current += c;
  }
  out.push(current);
  return out;
}

/** RFC 2047 encoded words (`=?utf-8?B?...?=`), which many clients put in a file name despite RFC 2231. */
function decodeEncodedWords(text: string): string {
  return text.replace(/=\?([^?]+)\?([BbQq])\?([^?]*)\?=\s*(?==\?)?/g, (_, charset: string, enc: string, data: string) => {
    const bytes = enc.toUpperCase() === 'B' ? Buffer.from(data, 'base64') : Buffer.from(data.replace(/_/g, ' ').replace(/=([0-9A-Fa-f]{2})/g, (_m, h: string) => String.fromCharCode(parseInt(h, 16))), 'latin1');
    return decodeCharset(bytes, charset);
  });
}

function decodeCharset(bytes: Buffer, charset: string): string {
  try {
    return new TextDecoder(charset.replace(/\*.*$/, '')).decode(bytes);
  } catch {
    // An unknown charset: the octets as latin1, so the name is at least shown.
    return bytes.toString('latin1');
  }
}
