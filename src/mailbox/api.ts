// The `mailbox` role's contract with the harness: the mailboxes as the control channel shows them, and the events
// of LMTP delivery and of POP3 and IMAP access.
import { eventKinds, NODE_EVENT_KINDS, type NodeEvents, type Operation } from '../shared/contract.js';
import type { MailboxInfo, StoredMessage } from './store-api.js';
import type { TlsInfo } from '../shared/tls-session.js';
import type { FaultFired } from '../shared/faults.js';
import type { SmtpFaultOperations } from '../shared/fault-operations.js';

export type { MailboxInfo, StoredMessage };

/** An app password as the account service and the control channel show it: never the password itself. */
export interface AppPasswordInfo {
  name: string;
  /** ISO 8601. */
  created: string;
  /** ISO 8601: the last login with it (IMAP, POP3, or SMTP AUTH through the account service). */
  lastUsed?: string;
}

export type MailboxOperations = {
  mailboxes: Operation<{ user: string }, MailboxInfo[]>;
  /** The messages of a folder (default INBOX), UID order. */
  messages: Operation<{ user: string; mailbox?: string }, StoredMessage[]>;
  /** One message's bytes, base64. */
  read: Operation<{ user: string; mailbox?: string; uid: number }, { data: string }>;
  /** For tests: stores a message as if delivered (no LMTP, no events). */
  deliver: Operation<{ user: string; data: string }, StoredMessage>;
  /** A user's app passwords (issue 13): names and dates, never the passwords. */
  'app-passwords': Operation<{ user: string }, AppPasswordInfo[]>;
  /** Revokes an app password as the account service's DELETE does: at once, durably, closing the sessions using it. */
  'revoke-app-password': Operation<{ user: string; name: string }, { closedSessions: number }>;
} & SmtpFaultOperations; // `set-smtp-faults`, `smtp-faults`: the fault rules of its LMTP server (issue 15)

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
   * when it is plaintext. `appPassword`: the name of the app password the user logged in with, if one.
   */
  session: { user: string; protocol: Protocol; method: string; client: string; tls: TlsInfo | null; appPassword?: string };
  /**
   * A refused login. `protocol` `accounts`: the account service's login (password + TOTP). `reason`
   * `app-password-required`: the right main password of a user with two-factor authentication, on a mail protocol.
   */
  'auth-failed': { protocol: Protocol | 'accounts'; login: string; method?: string; client: string; reason?: 'app-password-required' };
  /**
   * A failed login locked a throttle key (one login throttle for IMAP and POP3 together): until retryAfterMs has
   * passed, logins it covers are refused before the password is checked (`scope` account: this login from this
   * client; address: every login from this client). Not repeated for each login refused meanwhile.
   */
  'auth-throttled': { protocol: Protocol | 'accounts'; login: string; client: string; scope: 'account' | 'address'; retryAfterMs: number };
  /** A message was read (IMAP FETCH of the body, POP3 RETR). */
  retrieved: { user: string; protocol: Protocol; uid: number; size: number; mailbox?: string };
  /** A message was removed (IMAP EXPUNGE, POP3 DELE at QUIT). */
  deleted: { user: string; protocol: Protocol; uid: number; mailbox?: string };
  /**
   * An app password was created or revoked (account service or control operation), on disk; `closedSessions`: the
   * IMAP and POP3 sessions logged in with it that were closed (0 on creation).
   */
  'app-password': { user: string; name: string; action: 'created' | 'revoked'; closedSessions: number };
  /** An SMTP fault rule of the LMTP server fired (issue 15): what the client saw, at which stage, on which hop. */
  fault: FaultFired;
};

export type MailboxContract = { operations: MailboxOperations; events: MailboxEvents };

export const MAILBOX_EVENT_KINDS = eventKinds<MailboxEvents>()([
  ...NODE_EVENT_KINDS, 'rejected', 'stored', 'error', 'session', 'auth-failed', 'auth-throttled', 'retrieved', 'deleted', 'app-password', 'fault',
] as const);
