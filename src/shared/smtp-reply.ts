// SMTP and LMTP refusals, one way for every server: smtp-server sends an Error's `responseCode` and message as the
// reply line, so a refusal is an Error carrying its code.

/** An SMTP reply carried as an error, the way smtp-server expects refusals. */
export type SmtpReply = Error & { responseCode: number };

/** `smtpReply(550, '5.1.1 <x@y.test>: no such user')` answers `550 5.1.1 <x@y.test>: no such user`. */
export function smtpReply(code: number, text: string): SmtpReply {
  return Object.assign(new Error(text), { responseCode: code });
}

