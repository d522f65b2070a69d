// Server-side IMAP data encoding: values as IMAP strings (quoted or literal), NIL, lists; dates, UID sets and
// mailbox names in modified UTF-7 (RFC 3501 §5.1.3), or as UTF-8 once a session enabled UTF8=ACCEPT (RFC 6855).

/** A bare token written as-is (flags, keywords in upper case, numbers as text). */
export class Atom {
  constructor(readonly text: string) {}
}

/**
 * A string that must go out as a literal even when it would fit a quoted string (message data); `binary` makes it a
 * literal8 (`~{n}`, RFC 3516), which may hold NUL.
 */
export class Literal {
  constructor(
    readonly data: Buffer,
    readonly binary = false,
  ) {}
}

/** Values written back to back without separating spaces (the parts of a multipart BODYSTRUCTURE). */
export class Joined {
  constructor(readonly items: ImapValue[]) {}
}

/** strings are UTF-8 text, Buffers raw bytes (header values keep their original octets). */
export type ImapValue = null | number | string | Buffer | Atom | Literal | Joined | ImapValue[];

export const atom = (text: string): Atom => new Atom(text);

/** Collects the chunks of one response; big literals are kept by reference, never copied. */
export class ResponseBuilder {
  readonly chunks: Buffer[] = [];
  private text = '';

  raw(s: string): this {
    this.text += s;
    return this;
  }

  value(v: ImapValue): this {
    if (v === null) return this.raw('NIL');
    if (typeof v === 'number') return this.raw(String(v));
    if (v instanceof Atom) return this.raw(v.text);
    if (v instanceof Literal) return this.literal(v.data, v.binary);
    if (v instanceof Joined) {
      for (const item of v.items) this.value(item);
      return this;
    }
    if (Array.isArray(v)) {
      this.raw('(');
      v.forEach((item, i) => {
        if (i) this.raw(' ');
        this.value(item);
      });
      return this.raw(')');
    }
    const bytes = typeof v === 'string' ? Buffer.from(v, 'utf8') : v;
    return canQuote(bytes) ? this.raw(quote(bytes)) : this.literal(bytes);
  }

  literal(data: Buffer, binary = false): this {
    this.raw(`${binary ? '~' : ''}{${data.length}}\r\n`);
    this.flushText();
    if (data.length) this.chunks.push(data);
    return this;
  }

  /** The finished response, CRLF-terminated. */
  end(): Buffer[] {
    this.raw('\r\n');
    this.flushText();
    return this.chunks;
  }

  private flushText(): void {
    if (this.text) this.chunks.push(Buffer.from(this.text, 'utf8'));
    this.text = '';
  }
}

/** Quoted strings are 7-bit without CR/LF/NUL; long values go as literals to keep lines short. */
function canQuote(bytes: Buffer): boolean {
  if (bytes.length > 1024) return false;
  for (const b of bytes) if (b === 0 || b === 0x0d || b === 0x0a || b > 0x7f) return false;
  return true;
}

function quote(bytes: Buffer): string {
  return '"' + bytes.toString('latin1').replace(/["\\]/g, '\\$&') + '"';
}

/** Quoted string for text we know is short and 7-bit (mailbox names after UTF-7 encoding, messages). */
export function quoteText(s: string): string {
  return '"' + s.replace(/["\\]/g, '\\$&') + '"';
}

export function encodeResponse(...values: ImapValue[]): Buffer[] {
  const b = new ResponseBuilder();
  values.forEach((v, i) => {
    if (i) b.raw(' ');
    b.value(v);
  });
  return b.end();
}

const MONTHS = ['Jan', 'Feb', 'Mar', 'Apr', 'May', 'Jun', 'Jul', 'Aug', 'Sep', 'Oct', 'Nov', 'Dec'];

/** INTERNALDATE as date-time: "dd-Mon-yyyy hh:mm:ss +0000" (space-padded day), always in UTC. */
export function formatInternalDate(ms: number): string {
  const d = new Date(ms);
  const pad = (n: number) => String(n).padStart(2, '0');
  const day = String(d.getUTCDate()).padStart(2, ' ');
  return `${day}-${MONTHS[d.getUTCMonth()]}-${d.getUTCFullYear()} ${pad(d.getUTCHours())}:${pad(d.getUTCMinutes())}:${pad(d.getUTCSeconds())} +0000`;
}

export function monthIndex(name: string): number {
  return MONTHS.findIndex((m) => m.toLowerCase() === name.toLowerCase());
}

/** Parses a date-time ("17-Jul-1996 02:44:25 -0700") into ms since the epoch; undefined when malformed. */
export function parseDateTime(s: string): number | undefined {
  const m = /^ ?(\d{1,2})-([A-Za-z]{3})-(\d{4}) (\d{2}):(\d{2}):(\d{2}) ([+-])(\d{2})(\d{2})$/.exec(s);
  if (!m) return undefined;
  const month = monthIndex(m[2]!);
  if (month < 0) return undefined;
  const [day, year, h, min, sec, zh, zm] = [m[1], m[3], m[4], m[5], m[6], m[8], m[9]].map(Number) as number[];
  if (day! < 1 || day! > 31 || h! > 23 || min! > 59 || sec! > 60) return undefined;
  const offset = (m[7] === '-' ? -1 : 1) * (zh! * 60 + zm!);
  return Date.UTC(year!, month, day!, h!, min!, sec!) - offset * 60_000;
}

/** UIDs in the given order as a sequence set, merging consecutive runs (order matters for COPYUID). */
export function formatUidList(uids: readonly number[]): string {
  const parts: string[] = [];
  let i = 0;
  while (i < uids.length) {
    let j = i;
    while (j + 1 < uids.length && uids[j + 1] === uids[j]! + 1) j++;
    parts.push(j > i ? `${uids[i]}:${uids[j]}` : String(uids[i]));
    i = j + 1;
  }
  return parts.join(',');
}

// UTF8=ACCEPT (RFC 6855) is a per-session mode, set by `ENABLE UTF8=ACCEPT` (commands.ts). Until then mailbox names
// travel in modified UTF-7 (below). Once it is on, session.ts's mailboxArg / quoteMailbox and list.ts's pattern
// matching take and give names as UTF-8 (§3): every name sent is the store's name itself, quoted (8-bit allowed in
// quoted strings from then on) or a literal; every name received is read as UTF-8 and never decoded as modified
// UTF-7, so "&" is an ordinary character then ("&AOQ-" names a mailbox of those five characters, which a session
// without UTF-8 sees as "&-AOQ-"). A name received must be valid UTF-8 without the characters §3 forbids
// (utf8MailboxName). APPEND's `UTF8 (literal8)` data item (§4) is accepted only in this mode.

/** RFC 6855 §3: control characters (C0, DEL, C1), LINE SEPARATOR and PARAGRAPH SEPARATOR are not allowed in names. */
const FORBIDDEN_IN_NAME = /[\u0000-\u001f\u007f-\u009f\u2028\u2029]/;

const UTF8_STRICT = new TextDecoder('utf-8', { fatal: true });

/** The octets as UTF-8 text; undefined when they are not valid UTF-8. */
export function decodeUtf8(bytes: Uint8Array): string | undefined {
  try {
    return UTF8_STRICT.decode(bytes);
  } catch {
    return undefined;
  }
}

/** A mailbox name sent by a UTF8=ACCEPT session: valid UTF-8 without forbidden characters; undefined otherwise. */
export function utf8MailboxName(bytes: Uint8Array): string | undefined {
  const name = decodeUtf8(bytes);
  return name === undefined || FORBIDDEN_IN_NAME.test(name) ? undefined : name;
}

/** A mailbox name for a UTF8=ACCEPT session: a quoted string (with UTF-8 in it), or a literal when it cannot be quoted. */
export function quoteUtf8Text(name: string): string {
  if (!/[\0\r\n]/.test(name) && name.length <= 1024) return quoteText(name);
  return `{${Buffer.byteLength(name, 'utf8')}}\r\n${name}`;
}

// Modified UTF-7: printable ASCII stands for itself ("&" as "&-"), everything else is base64 of UTF-16BE
// with "," instead of "/" between "&" and "-".
export function encodeMailboxName(name: string): string {
  let out = '';
  let pending = '';
  const flush = () => {
    if (!pending) return;
    const units = Buffer.alloc(pending.length * 2);
    for (let i = 0; i < pending.length; i++) units.writeUInt16BE(pending.charCodeAt(i), i * 2);
    out += '&' + units.toString('base64').replace(/=+$/, '').replace(/\//g, ',') + '-';
    pending = '';
  };
  for (const ch of name) {
    const c = ch.charCodeAt(0);
    if (c >= 0x20 && c <= 0x7e && ch.length === 1) {
      flush();
      out += ch === '&' ? '&-' : ch;
    } else {
      pending += ch;
    }
  }
  flush();
  return out;
}

/** Decodes a modified UTF-7 name; undefined when it is not valid modified UTF-7. */
export function decodeMailboxName(encoded: string): string | undefined {
  let out = '';
  let i = 0;
  while (i < encoded.length) {
    const ch = encoded[i]!;
    const c = ch.charCodeAt(0);
    if (c < 0x20 || c > 0x7e) return undefined;
    if (ch !== '&') {
      out += ch;
      i++;
      continue;
    }
    const end = encoded.indexOf('-', i + 1);
    if (end < 0) return undefined;
    const b64 = encoded.slice(i + 1, end);
    i = end + 1;
    if (!b64) {
      out += '&';
      continue;
    }
    if (!/^[A-Za-z0-9+,]+$/.test(b64) || b64.length % 4 === 1) return undefined;
    const bytes = Buffer.from(b64.replace(/,/g, '/'), 'base64');
    if (bytes.length % 2) return undefined;
    let units = '';
    for (let k = 0; k < bytes.length; k += 2) units += String.fromCharCode(bytes.readUInt16BE(k));
    // Printable ASCII must not be base64-encoded; such names are not in canonical form.
    if (/[\x20-\x7e]/.test(units)) return undefined;
    out += units;
  }
  return out;
}
