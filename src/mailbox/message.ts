// Small byte-level helpers for stored messages (header values: ../shared/headers.ts). Messages are kept as raw
// octets, never decoded, so that what POP3 and IMAP hand out is exactly what was delivered.

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
 * not normalized); `limit` (default: the whole length) when there is no body within it. For POP3 TOP.
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
