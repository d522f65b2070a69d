// Checks of a received message's bytes that every server of the lab applies the same way (SMTP on the MTA's 25 and
// 587 and the MX's 25; LMTP on the mailbox server).
//
// Bare CR and bare LF in the header section are refused, not normalised. A hop that turns a bare CR into CRLF (as
// nodemailer's client does when relaying) would create header lines the first hop never saw: `Subject: x\rBcc: y`
// becomes a Subject and a Bcc, and `\r\r` would end the header section early. Refusing at the first hop keeps every
// hop's view of the headers the same; RFC 5322 §2.2 and RFC 5321 §2.3.8 allow CR and LF in headers only as CRLF.
//
// The body is left alone: our SMTP data parser (smtp-server) ends DATA only at CRLF.CRLF, so `\n.\n` and `\r.\r`
// are content, and every outbound hop (nodemailer's data stream) turns bare CR and bare LF into CRLF and dot-stuffs
// the line that follows, so no later hop can read them as the end of the data either (no SMTP smuggling).

/**
 * Why the header section of `data` is unacceptable, or undefined when it is fine. The header section runs up to the
 * first empty CRLF line (CRLF CRLF), or to the end of a message without one; in it, every CR must be followed by LF
 * and every LF preceded by CR. The text names the first offending line (1-based) and byte.
 */
export function headerSectionProblem(data: Buffer): string | undefined {
  let line = 1;
  let lineStart = true;
  for (let i = 0; i < data.length; i++) {
    const byte = data[i];
    if (byte === 0x0d) {
      if (data[i + 1] !== 0x0a) return `message header contains a bare CR (header line ${line}); header lines must end with CRLF`;
      if (lineStart) return undefined; // the empty CRLF line: the body follows
      i++;
      line++;
      lineStart = true;
    } else if (byte === 0x0a) {
      return `message header contains a bare LF (header line ${line}); header lines must end with CRLF`;
    } else {
      lineStart = false;
    }
  }
  return undefined;
}

/** The reply for a message whose header section `headerSectionProblem` refused: `554 5.6.0 <problem>`. */
export const HEADER_PROBLEM_CODE = 554;
export const HEADER_PROBLEM_STATUS = '5.6.0';
