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

export interface MailStore {
  /** Canonical user name (lower-case address) for a login name: full address, or local part when unique. */
  resolveUser(login: string): string | undefined;
  authenticate(login: string, password: string): string | undefined;
  hasUser(address: string): boolean;

  /** Durably stores a delivered message in the user's INBOX (tmp → new, fsynced) before resolving. */
  deliver(user: string, data: Buffer, options?: { internalDate?: number }): Promise<StoredMessage>;

  listMailboxes(user: string): Promise<MailboxInfo[]>;
  mailboxInfo(user: string, mailbox: string): Promise<MailboxInfo>;
  createMailbox(user: string, mailbox: string, specialUse?: SpecialUse): Promise<void>;
  deleteMailbox(user: string, mailbox: string): Promise<void>;
  renameMailbox(user: string, from: string, to: string): Promise<void>;
  setSubscribed(user: string, mailbox: string, subscribed: boolean): Promise<void>;

  /** Messages of a mailbox, ascending by UID. */
  messages(user: string, mailbox: string): Promise<StoredMessage[]>;
  read(user: string, mailbox: string, uid: number): Promise<Buffer>;
  append(user: string, mailbox: string, data: Buffer, flags?: string[], internalDate?: number): Promise<StoredMessage>;
  setFlags(user: string, mailbox: string, uids: number[], flags: string[], mode: FlagMode): Promise<StoredMessage[]>;
  /** Copies into `to`; returns the new UIDs in the order of `uids` (UIDPLUS COPYUID). */
  copy(user: string, from: string, uids: number[], to: string): Promise<{ uidValidity: number; uids: number[] }>;
  move(user: string, from: string, uids: number[], to: string): Promise<{ uidValidity: number; uids: number[] }>;
  /** Removes messages for good (IMAP EXPUNGE of \Deleted ones, POP3 UPDATE); returns the removed UIDs. */
  remove(user: string, mailbox: string, uids: number[]): Promise<number[]>;

  /** Change notifications for sessions on the same mailbox (IMAP untagged EXISTS/EXPUNGE/FETCH, IDLE). */
  onChange(listener: (change: StoreChange) => void): () => void;

  /** Exclusive POP3 maildrop lock (RFC 1939 §8); returns a release function, or undefined when held. */
  lockMaildrop(user: string): (() => void) | undefined;
}
