// 8-bit → 7-bit conversion of a message, for a next hop that does not offer 8BITMIME (RFC 6152 §3: "the server
// ... MUST either ... convert the message into 7-bit or bounce it"). Postfix converts by default
// (disable_mime_output_conversion = no), and so do we: every MIME leaf part whose body has octets above 127 is
// re-encoded, text/* as quoted-printable (still readable, line structure kept) and anything else as base64, with its
// Content-Transfer-Encoding header replaced; multiparts are walked part by part, and a message/rfc822 part is
// converted as the message it is. Parts already 7-bit are left byte for byte.
//
// A DKIM signature over the body (ours, made at submission, or the author's) no longer verifies after the
// conversion: the body hash covers the encoded octets, and a signed Content-Transfer-Encoding header changed too.
// RFC 6376 §5.3 tells signers to sign 7-bit forms for that reason; nothing we can do here but note it.
//
// What cannot be converted throws (the caller bounces with 554 5.6.3): 8-bit octets in a header section (that needs
// SMTPUTF8, not 8BITMIME, see needsSmtpUtf8), in a multipart preamble or epilogue, or in a body that claims to be
// base64 or quoted-printable already (re-encoding it would change what the reader decodes).

const CRLF = '\r\n';

interface Entity {
  /** The header section, without the empty line that ends it. */
  header: string;
  /** The body, as octets (latin1 keeps every octet as one character). */
  body: Buffer;
  /** The header section was ended by an empty line (false: a header-only entity). */
  hasBody: boolean;
}

function has8bit(data: Buffer): boolean {
  for (const byte of data) if (byte > 0x7f) return true;
  return false;
}

/** Splits an entity at the first empty line; line endings are made CRLF. */
function splitEntity(data: Buffer): Entity {
  const text = data.toString('latin1').replace(/\r?\n/g, CRLF);
  if (text.startsWith(CRLF)) return { header: '', body: Buffer.from(text.slice(2), 'latin1'), hasBody: true };
  const end = text.indexOf(CRLF + CRLF);
  if (end < 0) return { header: text.replace(/\r\n$/, ''), body: Buffer.alloc(0), hasBody: false };
  return { header: text.slice(0, end), body: Buffer.from(text.slice(end + 4), 'latin1'), hasBody: true };
}

/** The header fields of a section, each with its continuation lines (RFC 5322 §2.2.3). */
function fields(header: string): string[] {
  const out: string[] = [];
  for (const line of header.split(CRLF)) {
    if (/^[ \t]/.test(line) && out.length) out[out.length - 1] += CRLF + line;
    else if (line.length) out.push(line);
  }
  return out;
}

function fieldValue(list: string[], name: string): string | undefined {
  const field = list.find((f) => f.toLowerCase().startsWith(`${name.toLowerCase()}:`));
  return field === undefined ? undefined : field.slice(name.length + 1).replace(/\r\n[ \t]/g, ' ').trim();
}

/** The media type (lower case) and a parameter of a Content-Type value. */
function contentType(value: string | undefined): { type: string; boundary?: string } {
  if (!value) return { type: 'text/plain' }; // RFC 2045 §5.2 default
  const type = value.split(';')[0]!.trim().toLowerCase();
  const boundary = /;\s*boundary\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^\s;]+))/i.exec(value);
  const b = boundary ? (boundary[1] ?? boundary[2]) : undefined;
  return { type: type || 'text/plain', ...(b !== undefined ? { boundary: b } : {}) };
}

/**
 * Quoted-printable (RFC 2045 §6.7) of a text body: each CRLF stays a hard line break, octets above 127, `=` and
 * whitespace before a line break are encoded, lines are broken softly before 76 characters.
 */
export function quotedPrintable(body: Buffer): string {
  const lines = body.toString('latin1').split(CRLF);
  return lines
    .map((line) => {
      let out = '';
      let current = '';
      for (let i = 0; i < line.length; i++) {
        const code = line.charCodeAt(i);
        const last = i === line.length - 1;
        const plain = (code >= 33 && code <= 126 && code !== 61) || ((code === 32 || code === 9) && !last);
        const token = plain ? line[i]! : `=${code.toString(16).toUpperCase().padStart(2, '0')}`;
        if (current.length + token.length > 75) {
          out += `${current}=${CRLF}`;
          current = '';
        }
        current += token;
      }
      return out + current;
    })
    .join(CRLF);
}

function base64(body: Buffer): string {
  return (body.toString('base64').match(/.{1,76}/g) ?? []).join(CRLF) + (body.length ? CRLF : '');
}

/** One entity (a whole message, or a MIME part) converted; `where` names it in errors, e.g. `part 2.1`. */
function convertEntity(data: Buffer, where: string): Buffer {
  if (!has8bit(data)) return data;
  const entity = splitEntity(data);
  if (has8bit(Buffer.from(entity.header, 'latin1'))) throw new Error(`the header section of ${where} has 8-bit octets (that needs SMTPUTF8)`);
  const list = fields(entity.header);
  const { type, boundary } = contentType(fieldValue(list, 'Content-Type'));
  const join = (header: string, body: Buffer | string) => Buffer.concat([Buffer.from(header ? header + CRLF + CRLF : CRLF, 'latin1'), Buffer.isBuffer(body) ? body : Buffer.from(body, 'latin1')]);

  if (type.startsWith('multipart/') && boundary) {
    const text = entity.body.toString('latin1');
    const delimiter = new RegExp(`(^|\\r\\n)--${boundary.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}(--)?[ \\t]*(?=\\r\\n|$)`, 'g');
    const pieces: string[] = [];
    const marks: string[] = [];
    let from = 0;
    for (let m = delimiter.exec(text); m; m = delimiter.exec(text)) {
      pieces.push(text.slice(from, m.index));
      marks.push(m[0]);
      from = m.index + m[0].length;
      if (m[2]) break; // the close delimiter: what follows is the epilogue
    }
    pieces.push(text.slice(from));
    if (marks.length === 0) throw new Error(`${where} is multipart without any boundary line`);
    let out = '';
    pieces.forEach((piece, i) => {
      if (i === 0 || (i === pieces.length - 1 && /--[ \t]*$/.test(marks[i - 1]!))) {
        // Preamble and epilogue: ignored by MIME readers, so nothing to re-encode them as.
        if (has8bit(Buffer.from(piece, 'latin1'))) throw new Error(`the ${i === 0 ? 'preamble' : 'epilogue'} of ${where} has 8-bit octets`);
        out += piece;
      } else {
        // A part is what lies between "delimiter CRLF" and the CRLF before the next delimiter.
        const content = piece.startsWith(CRLF) ? piece.slice(2) : piece;
        out += CRLF + convertEntity(Buffer.from(content, 'latin1'), where === 'the message' ? `part ${i}` : `${where}.${i}`).toString('latin1');
      }
      if (i < marks.length) out += marks[i];
    });
    return join(entity.header, out);
  }
  if (type === 'message/rfc822' || type === 'message/global') {
    // RFC 2045 §6.4: a message/rfc822 body may not be encoded itself; its own parts can be.
    return join(entity.header, convertEntity(entity.body, `the message inside ${where}`));
  }
  const cte = (fieldValue(list, 'Content-Transfer-Encoding') ?? '7bit').toLowerCase();
  if (cte === 'base64' || cte === 'quoted-printable') throw new Error(`${where} says it is ${cte} but has 8-bit octets`);
  const textual = type.startsWith('text/');
  const encoded = textual ? quotedPrintable(entity.body) : base64(entity.body);
  const kept = list.filter((f) => !/^content-transfer-encoding:/i.test(f));
  // A message without MIME headers is text/plain (RFC 2045 §5.2) in a charset nobody declared: RFC 1428's
  // unknown-8bit says so honestly, and MIME-Version makes the new header count.
  const mimeHeaders = fieldValue(list, 'MIME-Version') === undefined && where === 'the message' ? ['MIME-Version: 1.0'] : [];
  const typeHeader = fieldValue(list, 'Content-Type') === undefined ? [`Content-Type: text/plain; charset=${isUtf8(entity.body) ? 'utf-8' : 'unknown-8bit'}`] : [];
  const header = [...kept, ...mimeHeaders, ...typeHeader, `Content-Transfer-Encoding: ${textual ? 'quoted-printable' : 'base64'}`].join(CRLF);
  return join(header, encoded);
}

function isUtf8(data: Buffer): boolean {
  try {
    new TextDecoder('utf-8', { fatal: true }).decode(data);
    return true;
  } catch {
    return false;
  }
}

/**
 * The message with every 8-bit body part re-encoded in 7-bit (see the top of this file); a message without 8-bit
 * octets comes back as it is. Throws, saying where and why, when it cannot be converted.
 */
export function convertTo7bit(data: Buffer): Buffer {
  return convertEntity(data, 'the message');
}
