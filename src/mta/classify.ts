// What a delivery attempt's outcome means for a recipient: delivered, try again later, or bounce. Pure functions, so
// the rules are tested on their own:
// - 2xx: delivered. 4xx: temporary, deferred (RFC 5321 §4.2.1). 5xx: permanent, bounced, never retried.
// - No reply at all (connection refused, timeout, session lost): temporary.
// - The status reported in DSNs and events is the reply's enhanced status code (RFC 3463) when it has one whose class
//   agrees with the reply code, else one derived from the reply code (e.g. 550 → 5.0.0).
import { parseReply, type RecipientResult, type SmtpClientError } from '../shared/smtp-client.js';

export type DeliveryAction = 'delivered' | 'defer' | 'bounce';

export interface Classification {
  action: DeliveryAction;
  /** RFC 3463 status code, e.g. `5.1.1`. */
  status: string;
}

const STATUS = /^([245])\.(\d{1,3})\.(\d{1,3})$/;

/** The RFC 3463 status for a reply code and its (optional) enhanced code; the reply code's class wins on conflict. */
export function statusFor(code: number | undefined, enhanced?: string, fallback = '4.0.0'): string {
  const cls = code !== undefined ? Math.floor(code / 100) : undefined;
  const match = enhanced ? STATUS.exec(enhanced) : null;
  if (cls === 2 || cls === 4 || cls === 5) {
    return match ? `${cls}.${match[2]}.${match[3]}` : `${cls}.0.0`;
  }
  return match ? enhanced! : fallback;
}

/** A reply code (with its enhanced code) as a delivery decision. */
export function classifyReply(code: number | undefined, enhanced?: string): Classification {
  if (code !== undefined && code >= 200 && code < 300) return { action: 'delivered', status: statusFor(code, enhanced) };
  if (code !== undefined && code >= 500 && code < 600) return { action: 'bounce', status: statusFor(code, enhanced) };
  if (code !== undefined && code >= 400 && code < 500) return { action: 'defer', status: statusFor(code, enhanced) };
  // 1xx/3xx where a final reply was due, or garbage: a protocol error, which may well be transient (X.5.0).
  return { action: 'defer', status: '4.5.0' };
}

/** A raw reply text (e.g. `550 5.1.1 no such user`) as a delivery decision. */
export function classifyReplyText(reply: string): Classification {
  const parsed = parseReply(reply);
  return classifyReply(parsed.code, parsed.enhanced);
}

/** The server's answer for one recipient (its RCPT reply, or the data reply). */
export function classifyRecipient(result: Pick<RecipientResult, 'accepted' | 'code' | 'enhanced'>): Classification {
  if (result.accepted) return { action: 'delivered', status: statusFor(result.code, result.enhanced, '2.0.0') };
  const c = classifyReply(result.code, result.enhanced);
  // A refusal carrying a 2xx code cannot happen; should a server manage it, the recipient is not delivered.
  return c.action === 'delivered' ? { action: 'defer', status: '4.5.0' } : c;
}

/** A failure of the whole transaction (connection, greeting, EHLO, MAIL, lost session). */
export function classifyClientError(err: Pick<SmtpClientError, 'stage' | 'code' | 'enhanced' | 'temporary' | 'errno'>): Classification {
  if (err.code !== undefined) {
    const c = classifyReply(err.code, err.enhanced);
    return c.action === 'delivered' ? { action: 'defer', status: '4.5.0' } : c;
  }
  if (!err.temporary) return { action: 'bounce', status: '5.0.0' };
  // No reply: X.4.1 "No answer from host" before a session existed, X.4.2 "Bad connection" once it had.
  const status = err.stage === 'connect' || err.stage === 'greeting' ? '4.4.1' : '4.4.2';
  return { action: 'defer', status };
}

/** Whether a failure at session setup should make the client try the next MX host (RFC 5321 §5.1). */
export function tryNextHost(err: Pick<SmtpClientError, 'stage' | 'code'>): boolean {
  // Any failure before the transaction began: no connection, a refusing greeting (4xx or 5xx, as Postfix's default
  // smtp_skip_5xx_greeting), or EHLO trouble. Once MAIL FROM was answered, the verdict stands for this attempt.
  return err.stage === 'connect' || err.stage === 'greeting' || err.stage === 'ehlo';
}
