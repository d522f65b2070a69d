// The `mx` role's contract with the harness: its SMTP fault rules (issue 15), and the events of the receiving hop.
import type { FaultFired } from '../shared/faults.js';
import type { SmtpFaultOperations } from '../shared/fault-operations.js';
import { eventKinds, NODE_EVENT_KINDS, type NodeEvents } from '../shared/contract.js';
import type { RecipientResult } from '../shared/smtp-client.js';
import type { TlsInfo } from '../shared/tls-session.js';

/** `set-smtp-faults` and `smtp-faults`: the fault rules of its port 25 (shared/smtp-faults.ts). */
export type MxOperations = SmtpFaultOperations;

/** What the MX did with a message after mail authentication (see `authenticated`). */
export type AuthAction = 'accept' | 'reject' | 'quarantine' | 'accept-arc-override';

/** One DKIM signature of the message (RFC 6376) as verified. */
export interface DkimVerdict {
  /** pass, fail, neutral (mailauth's result for a missing or unusable key), policy (weak key), temperror... */
  result: string;
  /** `d=` */
  domain: string;
  /** `s=` */
  selector: string;
  /** `a=`, e.g. rsa-sha256 */
  algorithm: string;
  /** Whether `d=` aligns (relaxed) with the From: domain. */
  aligned: boolean;
  /** The signature's row of the Authentication-Results header. */
  info: string;
}

/** Every verdict of mail authentication at the end of DATA (issue 12). */
export interface AuthenticatedDetail {
  /** MAIL FROM. */
  from: string;
  rcpts: string[];
  /** The From: header's address(es). */
  headerFrom: string;
  /** SPF (RFC 7208) of MAIL FROM (of the HELO name for the null sender). `record`: the SPF record evaluated. */
  spf: { result: string; domain: string; ip: string; helo: string; record?: string; comment?: string };
  /** One entry per DKIM-Signature; empty when the message is unsigned. */
  dkim: DkimVerdict[];
  /**
   * DMARC (RFC 7489) of the From: domain; null when it could not be evaluated (not exactly one From: address).
   * `policy`: the one that applies (p, or sp for a subdomain); `sampled`: the message fell in the `pct` sample
   * (deterministic: SHA-256 of the Message-ID); `alignment`: the aligned SPF and DKIM domains, false when none.
   */
  dmarc: {
    result: string;
    domain: string;
    policy?: string;
    p?: string;
    sp?: string;
    pct?: number;
    sampled: boolean;
    alignment: { spf: string | false; dkim: string | false };
  } | null;
  /**
   * ARC (RFC 8617): the chain's validation, its newest `instance`, the `d=` of each ARC-Seal oldest first, and the
   * trusted sealer that an `accept-arc-override` relied on.
   */
  arc: { result: string; instance?: number; sealers: string[]; comment?: string; trustedSealer?: string };
  /**
   * accept; reject (550 5.7.1, DMARC p=reject with enforceDmarc); quarantine (delivered to Junk); accept-arc-override
   * (DMARC failed, but a trusted ARC sealer saw it pass).
   */
  action: AuthAction;
  /** Why that action, in words (the 550's text for a reject). */
  reason: string;
  /** The Authentication-Results header (RFC 8601) prepended to the message, as written. */
  header: string;
}

/**
 * The malware filter's verdict on a message (issue 13): what the MX did with it. `accept`: clean, delivered with
 * `X-Virus-Scanned`; `reject`: malware, refused with 554 5.7.1; `quarantine`: malware, filed in the recipients' Junk
 * (`malwareAction: 'quarantine'`); `tempfail`: no verdict (the scanner was down, timed out or answered an error),
 * refused with 451 4.7.0.
 */
export interface ScannedDetail {
  /** `builtin` or `clamav`. */
  scanner: string;
  /** False for malware and for no verdict (`tempfail`). */
  clean: boolean;
  /** The malware's name as the scanner gave it, e.g. `Eicar-Test-Signature` (clamd adds `.UNOFFICIAL` for a database it did not sign). */
  signature?: string;
  /** The MIME part it was found in: its path (`2`, `2.1`) and file name when known (`2 (eicar.com)`); `message` when the scanner did not say. */
  part?: string;
  action: 'accept' | 'reject' | 'quarantine' | 'tempfail';
  /** Why there was no verdict (`tempfail`), naming the scanner's endpoint and command. */
  error?: string;
  /** The transaction's recipients. */
  rcpts: string[];
}

export type MxEvents = NodeEvents & {
  /**
   * A refusal: at CONNECT (too many connections from the client), at MAIL FROM (SIZE= over the limit), at RCPT TO (not a served domain: relay denied;
   * unknown user; too many recipients) or at DATA (too large, a bare CR or LF in the header). `rcpt`: the refused
   * recipient at RCPT TO, the transaction's recipients (comma-separated) at DATA, '' at CONNECT and MAIL FROM.
   * At DATA also malware (554 5.7.1) and a message that could not be scanned (451 4.7.0), after their `scanned`.
   */
  rejected: { stage: 'CONNECT' | 'MAIL FROM' | 'RCPT TO' | 'DATA'; rcpt: string; reply: string; client: string; from: string };
  /**
   * The message data arrived; the MX added its Received header (`size` includes it). `tls`: the version and cipher
   * of the sender's connection after STARTTLS, null when it stayed plaintext.
   */
  received: { from: string; to: string[]; client: string; helo: string; size: number; tls: TlsInfo | null };
  /** The mailbox server answered over LMTP, one result per recipient (`to` names the LMTP hop). */
  handoff: { to: string; recipients: RecipientResult[] };
  /** The mailbox server (or, for a forward, `forwardVia`) could not be reached or broke off: the sender got 451. */
  'handoff-failed': { to: string; error: string };
  /** SPF, DKIM, DMARC and ARC verified at the end of DATA (with `auth`, or when sealing for a forward). */
  authenticated: AuthenticatedDetail;
  /**
   * A recipient forwarded (`forwards`): the message, ARC-sealed (`arc`: the set this MX added; null when nothing was
   * sealed: no `arcSeal`, or an incoming chain that had failed), sent to `via` for `to` with the original envelope
   * sender; `accepted` and `reply`: what `via` answered for `to` (RCPT or data reply).
   */
  forwarded: { rcpt: string; to: string; via: string; accepted: boolean; reply: string; arc: { instance: number; domain: string; selector: string } | null };
  /** The malware filter's verdict at the end of DATA (with `scanner`), one per message, before any hand-off. */
  scanned: ScannedDetail;
  /** An SMTP fault rule of port 25 fired (issue 15): what the client saw, at which stage, on which hop. */
  fault: FaultFired;
};

export type MxContract = { operations: MxOperations; events: MxEvents };

export const MX_EVENT_KINDS = eventKinds<MxEvents>()([...NODE_EVENT_KINDS, 'rejected', 'received', 'handoff', 'handoff-failed', 'authenticated', 'forwarded', 'scanned', 'fault'] as const);
