// Small byte-level helpers for stored messages. Messages are kept as raw octets (never decoded) so that what
// POP3 and IMAP hand out is exactly what was delivered.

const CR = 0x0d;
const LF = 0x0a;

/** Turns every bare LF into CRLF (existing CRLFs are kept); returns `data` itself when there is none. */
export function toCrlf(data: Buffer): Buffer {
  let bare = 0;
  for (let i = data.indexOf(LF); i >= 0; i = data.indexOf(LF, i + 1)) {
    if (i === 0 || data[i - 1] !== CR) bare++;
  }
  if (bare === 0) return data;
  const out = Buffer.allocUnsafe(data.length + bare);
  let o = 0;
  let start = 0;
  for (let i = data.indexOf(LF); i >= 0; i = data.indexOf(LF, i + 1)) {
    if (i === 0 || data[i - 1] !== CR) {
      o += data.copy(out, o, start, i);
      out[o++] = CR;
      start = i; // the LF itself goes out with the next chunk
    }
  }
  data.copy(out, o, start);
  return out;
}

/**
 * Length of the header section including the empty line that ends it (CRLFCRLF, or LFLF in a message that is
 * not normalized); the whole length when there is no body.
 */
export function headerLength(data: Buffer, limit = data.length): number {
  const end = Math.min(limit, data.length);
  // A message that starts with an empty line has no header fields at all.
  if (data[0] === CR && data[1] === LF) return 2;
  if (data[0] === LF) return 1;
  for (let i = data.indexOf(LF); i >= 0 && i < end; i = data.indexOf(LF, i + 1)) {
    if (data[i + 1] === LF) return i + 2;
    if (data[i + 1] === CR && data[i + 2] === LF) return i + 3;
  }
  return end;
}

/**
 * The unfolded value of the first header field called `name` (case-insensitive) in the header section of
 * `data`, without parsing the body: only the first `limit` octets are looked at.
 */
export function parseHeaderValue(data: Buffer, name: string, limit = 64 * 1024): string | undefined {
  const head = data.subarray(0, headerLength(data, limit)).toString('latin1');
  const wanted = name.toLowerCase();
  const lines = head.split(/\r?\n/);
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i]!;
    const colon = line.indexOf(':');
    if (colon <= 0 || line.slice(0, colon).trim().toLowerCase() !== wanted) continue;
    let value = line.slice(colon + 1);
    // Continuation lines start with white space (RFC 5322 §2.2.3).
    while (i + 1 < lines.length && /^[ \t]/.test(lines[i + 1]!)) value += ' ' + lines[++i]!.trim();
    // The header was read as latin1 to keep octets intact; values are UTF-8 in practice (RFC 6532).
    return Buffer.from(value, 'latin1').toString('utf8').trim();
  }
  return undefined;
}

/** The Message-ID (with angle brackets) of a message, when it has a usable one. */
export function messageIdOf(data: Buffer): string | undefined {
  const value = parseHeaderValue(data, 'message-id');
  return value ? /<[^<>\s]+>/.exec(value)?.[0] : undefined;
}
