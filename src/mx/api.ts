// The `mx` role's contract with the harness: no control operations, and the events of the receiving hop.
import { eventKinds, NODE_EVENT_KINDS, type NodeEvents } from '../shared/contract.js';
import type { RecipientResult } from '../shared/smtp-client.js';
import type { TlsInfo } from '../shared/tls-session.js';

export type MxOperations = Record<never, never>;

export type MxEvents = NodeEvents & {
  /**
   * A refusal: at CONNECT (too many connections from the client), at MAIL FROM (SIZE= over the limit), at RCPT TO (not a served domain: relay denied;
   * unknown user; too many recipients) or at DATA (too large, a bare CR or LF in the header). `rcpt`: the refused
   * recipient at RCPT TO, the transaction's recipients (comma-separated) at DATA, '' at CONNECT and MAIL FROM.
   */
  rejected: { stage: 'CONNECT' | 'MAIL FROM' | 'RCPT TO' | 'DATA'; rcpt: string; reply: string; client: string; from: string };
  /**
   * The message data arrived; the MX added its Received header (`size` includes it). `tls`: the version and cipher
   * of the sender's connection after STARTTLS, null when it stayed plaintext.
   */
  received: { from: string; to: string[]; client: string; helo: string; size: number; tls: TlsInfo | null };
  /** The mailbox server answered over LMTP, one result per recipient (`to` names the LMTP hop). */
  handoff: { to: string; recipients: RecipientResult[] };
  /** The mailbox server could not be reached or broke off: the sender got 451. */
  'handoff-failed': { to: string; error: string };
};

export type MxContract = { operations: MxOperations; events: MxEvents };

export const MX_EVENT_KINDS = eventKinds<MxEvents>()([...NODE_EVENT_KINDS, 'rejected', 'received', 'handoff', 'handoff-failed'] as const);
