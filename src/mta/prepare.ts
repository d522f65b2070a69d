// What the MTA does to a message it originates for its users before queueing it, whichever door it came through
// (submission on 587/465, receive.ts; the HTTP email API, http-api.ts): the Message-ID and Date it lacks (RFC 6409
// §8.2, §8.3), and the DKIM signature of its From: domain. Kept here, apart from both doors, so that both do exactly
// the same thing. No import of receive.ts: it is meant to call these too (no import cycle).
import { headerValue, rfc5322Date } from '../shared/headers.js';
import type { DkimSignerView } from './api.js';
import type { DkimSigner } from './dkim.js';
import { compactDate } from './engine.js';

/** The Message-ID the MTA gives a message that has none: unique through the queue id, named after the MTA. */
export function newMessageId(queueId: string, hostname: string, now: Date): string {
  return `<${compactDate(now.getTime())}.${queueId}@${hostname}>`;
}

/** The header lines a submitted message lacks (Message-ID, Date), to be added at the end of its header section. */
export function missingSubmissionHeaders(data: Buffer, queueId: string, hostname: string, now: Date): string[] {
  const missing: string[] = [];
  if (!headerValue(data, 'message-id')) missing.push(`Message-ID: ${newMessageId(queueId, hostname, now)}`);
  if (!headerValue(data, 'date')) missing.push(`Date: ${rfc5322Date(now)}`);
  return missing;
}

/**
 * DKIM-signs `data` for its first From: domain when the MTA has a signer for it (and `dkim` is given). Called last,
 * after the trace header and the added Message-ID/Date, so that the queued copy (what every retry sends) carries the
 * signature over them. A signing failure throws (the caller answers with a temporary error): the message must not
 * leave unsigned when its domain signs.
 */
export async function signSubmission(data: Buffer, dkim: DkimSigner | undefined, signingDomain: string | undefined): Promise<{ data: Buffer; dkim?: DkimSignerView }> {
  if (!dkim || !signingDomain) return { data };
  const signed = await dkim.sign(data, signingDomain);
  if (!signed.signature) return { data: signed.message };
  const { domain, selector, algorithm } = signed.signature;
  return { data: signed.message, dkim: { domain, selector, algorithm } };
}
