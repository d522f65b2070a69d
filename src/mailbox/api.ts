// The `mailbox` role's contract with the harness: the mailboxes as the control channel shows them, and the events
// of LMTP delivery and of POP3 and IMAP access.
import { eventKinds, NODE_EVENT_KINDS, type NodeEvents, type Operation } from '../shared/contract.js';
import type { MailboxInfo, StoredMessage } from './store-api.js';
import type { TlsInfo } from '../shared/tls-session.js';

export type { MailboxInfo, StoredMessage };

export type MailboxOperations = {
  mailboxes: Operation<{ user: string }, MailboxInfo[]>;
  /** The messages of a folder (default INBOX), UID order. */
  messages: Operation<{ user: string; mailbox?: string }, StoredMessage[]>;
  /** One message's bytes, base64. */
  read: Operation<{ user: string; mailbox?: string; uid: number }, { data: string }>;
  /** For tests: stores a message as if delivered (no LMTP, no events). */
  deliver: Operation<{ user: string; data: string }, StoredMessage>;
};

type Protocol = 'imap' | 'pop3';

export type MailboxEvents = NodeEvents & {
  /**
   * LMTP refused: a recipient at RCPT TO (no such user), a recipient after DATA (a bare CR or LF in the header
   * section), or a client at connect (not in lmtpClients; `from` is empty then).
   */
  rejected:
    | { stage: 'RCPT TO' | 'DATA'; rcpt: string; reply: string; client: string; from: string }
    | { stage: 'connect'; reply: string; client: string; from: string };
  /** Written to the user's Maildir and synced: the LMTP 250 for this recipient follows. */
  stored: { user: string; mailbox: string; uid: number; size: number; from: string };
  /** Storing failed; the recipient got 451. */
  error: { stage: string; user: string; error: string };
  /**
   * A user logged in. `tls`: the version and cipher of the connection (implicit TLS, or after STARTTLS/STLS), null
   * when it is plaintext.
   */
  session: { user: string; protocol: Protocol; method: string; client: string; tls: TlsInfo | null };
  'auth-failed': { protocol: Protocol; login: string; method?: string; client: string };
  /**
   * A failed login locked a throttle key (one login throttle for IMAP and POP3 together): until retryAfterMs has
   * passed, logins it covers are refused before the password is checked (`scope` account: this login from this
   * client; address: every login from this client). Not repeated for each login refused meanwhile.
   */
  'auth-throttled': { protocol: Protocol; login: string; client: string; scope: 'account' | 'address'; retryAfterMs: number };
  /** A message was read (IMAP FETCH of the body, POP3 RETR). */
  retrieved: { user: string; protocol: Protocol; uid: number; size: number; mailbox?: string };
  /** A message was removed (IMAP EXPUNGE, POP3 DELE at QUIT). */
  deleted: { user: string; protocol: Protocol; uid: number; mailbox?: string };
};

export type MailboxContract = { operations: MailboxOperations; events: MailboxEvents };

export const MAILBOX_EVENT_KINDS = eventKinds<MailboxEvents>()([
  ...NODE_EVENT_KINDS, 'rejected', 'stored', 'error', 'session', 'auth-failed', 'auth-throttled', 'retrieved', 'deleted',
] as const);
