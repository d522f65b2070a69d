// The error kinds of the IMAP server, each answered differently by the session (session.ts): a grammar error is
// a tagged BAD, an ImapError carries its own status and response code, a BadCharsetError becomes NO [BADCHARSET].
// They live here, apart from the modules that throw and catch them, so those need not import one another.

/** A command that does not follow the grammar; answered with a tagged BAD and the reason. */
export class ParseError extends Error {
  override name = 'ParseError';
}

/** A tagged NO or BAD; `code` is a response code such as TRYCREATE (without brackets). */
export class ImapError extends Error {
  override name = 'ImapError';
  constructor(
    readonly status: 'NO' | 'BAD',
    message: string,
    readonly code?: string,
  ) {
    super(message);
  }
}

/** SEARCH with a CHARSET we do not support (RFC 3501 §6.4.4); the message is the charset. */
export class BadCharsetError extends Error {
  override name = 'BadCharsetError';
}
