// The contract of the mailbox store: what LMTP, POP3 and IMAP (all in the mailbox server process) rely on.
// The store is the only writer of the Maildirs; every protocol goes through it, so a per-user lock in this
// process is enough to keep concurrent delivery, POP3 and IMAP from corrupting a mailbox.

/** One message in one mailbox (folder). */
export interface StoredMessage {
  /** IMAP UID: strictly ascending within the mailbox, never reused while uidValidity stays the same. */
  uid: number;
  /** Unique, stable Maildir base name (without the `:2,` info part); also the POP3 UIDL. */
  id: string;
  /** Size in octets of the stored message (CRLF line endings as stored). */
  size: number;
  /** System flags (\Seen, \Answered, \Flagged, \Deleted, \Draft) and keywords, as IMAP spells them. */
  flags: string[];
  /** INTERNALDATE, ms since the epoch. */
  internalDate: number;
  /** CONDSTORE modification sequence of the last change to this message. */
  modseq: number;
}

export type SpecialUse = '\\Sent' | '\\Drafts' | '\\Trash' | '\\Junk' | '\\Archive';

export interface MailboxInfo {
  /** Full name with `/` as hierarchy delimiter; `INBOX` is always present. */
  name: string;
  uidValidity: number;
  uidNext: number;
  highestModseq: number;
  specialUse?: SpecialUse;
  subscribed: boolean;
  /** Counts at the time of the call. */
  exists: number;
  unseen: number;
}

export type StoreChange =
  | { type: 'exists'; user: string; mailbox: string; message: StoredMessage }
  | { type: 'expunge'; user: string; mailbox: string; uids: number[] }
  | { type: 'flags'; user: string; mailbox: string; message: StoredMessage }
  | { type: 'mailboxes'; user: string };

export type FlagMode = 'set' | 'add' | 'remove';

/** Messages expunged after a modseq (QRESYNC's VANISHED (EARLIER), RFC 7162 §3.2.5.1, §3.2.6). */
export interface ExpungedSince {
  /** UIDs expunged after the modseq, ascending. */
  uids: number[];
  /**
   * False when the store's history does not reach back to that modseq: then any UID below uidNext that is not in
   * the mailbox may have been expunged since (RFC 7162 allows reporting such UIDs as vanished).
   */
  complete: boolean;
}

export interface CopyResult {
  /** UIDVALIDITY of the destination. */
  uidValidity: number;
  /** New UIDs in the destination. */
  uids: number[];
  /** The source UIDs actually copied/moved, pairwise with `uids` (MaildirStore always sets it). */
  sourceUids?: number[];
}

/**
 * What the store throws for a request it refuses (anything else is an internal failure). The codes follow the
 * IMAP response codes of RFC 5530 where there is one.
 */
/** ABORTED: a delivery whose client went away before it was published (nothing stored). */
export type MailStoreErrorCode = 'NOUSER' | 'NONEXISTENT' | 'ALREADYEXISTS' | 'CANNOT' | 'ABORTED';

export class MailStoreError extends Error {
  readonly code: MailStoreErrorCode;
  constructor(code: MailStoreErrorCode, message: string) {
    super(message);
    this.name = 'MailStoreError';
    this.code = code;
  }
}

export interface AppendItem {
  data: Buffer;
  flags?: string[];
  internalDate?: number;
}

export interface DeliverOptions {
  internalDate?: number;
  signal?: AbortSignal;
}

export interface MailStore {
  /** Canonical user name (lower-case address) for a login name: full address, or local part when unique. */
  resolveUser(login: string): string | undefined;
  authenticate(login: string, password: string): string | undefined;
  hasUser(address: string): boolean;

  /**
   * Durably stores a delivered message in the user's INBOX (tmp → new, fsynced) before resolving. When `signal`
   * has fired by the time the message would be published (the delivering client went away, so it will never
   * hear the reply and will send the message again), nothing is stored and it rejects with ABORTED.
   */
  deliver(user: string, data: Buffer, options?: DeliverOptions): Promise<StoredMessage>;

  listMailboxes(user: string): Promise<MailboxInfo[]>;
  mailboxInfo(user: string, mailbox: string): Promise<MailboxInfo>;
  createMailbox(user: string, mailbox: string, specialUse?: SpecialUse): Promise<void>;
  deleteMailbox(user: string, mailbox: string): Promise<void>;
  renameMailbox(user: string, from: string, to: string): Promise<void>;
  setSubscribed(user: string, mailbox: string, subscribed: boolean): Promise<void>;
  /**
   * Every subscribed name, whether or not a mailbox of that name exists: deleting a mailbox keeps its
   * subscription (RFC 3501 §6.3.6), which LIST (SUBSCRIBED) then shows as \NonExistent (RFC 5258 §3.1).
   */
  subscriptions(user: string): Promise<string[]>;

  /** Messages of a mailbox, ascending by UID. */
  messages(user: string, mailbox: string): Promise<StoredMessage[]>;
  read(user: string, mailbox: string, uid: number): Promise<Buffer>;
  append(user: string, mailbox: string, data: Buffer, flags?: string[], internalDate?: number): Promise<StoredMessage>;
  /**
   * Appends several messages as one change (IMAP MULTIAPPEND, RFC 3502): other sessions hear of all of them or of
   * none, and when one cannot be stored the ones before it are taken away again before anyone heard of them.
   */
  appendMany(user: string, mailbox: string, messages: AppendItem[]): Promise<StoredMessage[]>;
  /**
   * Changes flags; UIDs that no longer exist are skipped. Returns the current state of every existing message
   * among `uids` (changed ones carry a new modseq; a 'flags' change is emitted only for those). `\Recent` and
   * unknown system flags are ignored.
   */
  setFlags(user: string, mailbox: string, uids: number[], flags: string[], mode: FlagMode): Promise<StoredMessage[]>;
  /**
   * Copies into `to`; returns the new UIDs in the order of `uids` (UIDPLUS COPYUID). UIDs that no longer exist
   * are skipped: `sourceUids` lists the ones copied, pairwise with `uids`.
   */
  copy(user: string, from: string, uids: number[], to: string): Promise<CopyResult>;
  move(user: string, from: string, uids: number[], to: string): Promise<CopyResult>;
  /** Removes messages for good (IMAP EXPUNGE of \Deleted ones, POP3 UPDATE); returns the removed UIDs. */
  remove(user: string, mailbox: string, uids: number[]): Promise<number[]>;

  /**
   * The messages expunged (removed, moved away) after `modseq`: every expunge takes a new modseq, kept with its UIDs
   * durably, across restarts, as long as the history is kept (see ExpungedSince.complete).
   */
  expungedSince(user: string, mailbox: string, modseq: number): Promise<ExpungedSince>;

  /** Change notifications for sessions on the same mailbox (IMAP untagged EXISTS/EXPUNGE/FETCH, IDLE). */
  onChange(listener: (change: StoreChange) => void): () => void;

  /** Exclusive POP3 maildrop lock (RFC 1939 §8); returns a release function, or undefined when held. */
  lockMaildrop(user: string): (() => void) | undefined;
}
