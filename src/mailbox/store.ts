// The mailbox store: one Maildir per user, Maildir++ sub-folders, with a per-folder index for IMAP UIDs.
//
// Layout under the data directory:
//   <address>/maillab-user.json          subscriptions, special-use, the last UIDVALIDITY handed out
//   <address>/Maildir/{cur,new,tmp}      INBOX
//   <address>/Maildir/.Sent/...          other folders; "a/b" is ".a.b", a "." or "%" in a name is %-escaped
//   <folder>/maillab-index               UIDVALIDITY, the uid ↔ file map, modseqs, keywords
//
// Message files are `<time>.<pid>_<counter>.<host>,S=<size>[:2,<flags>]`, CRLF line endings. System flags live
// in the file name (standard Maildir: D F R S T), so the file name is the truth for them; keywords, UIDs and
// modseqs live in the index. The index is a header line plus an append-only log of JSON records (a full rewrite
// on every change would make delivery cost grow with the size of the mailbox); it is compacted with an atomic
// durable rewrite when the log grows well beyond the number of live messages, or when a load finds it damaged.
//
// This process is the only writer, so each folder's index is kept in memory once loaded; after a restart it is
// rebuilt from the index file plus a scan of new/ and cur/: a file the index does not know gets the next UID,
// an index entry whose file is gone is dropped. Mutations of a user's mailboxes are serialized by a per-user
// mutex. Readers use the in-memory state without the lock: every mutation updates it synchronously once its
// file operations are done, so a reader sees a message either before or after a change, never half of it.
import { promises as fs } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { createHash, timingSafeEqual } from 'node:crypto';
import type { UserConfig } from '../shared/config.js';
import { syncDir, writeFileDurable } from '../shared/fsutil.js';
import { toCrlf } from './message.js';
import {
  MailStoreError,
  type CopyResult,
  type FlagMode,
  type MailboxInfo,
  type MailStore,
  type SpecialUse,
  type StoreChange,
  type StoredMessage,
} from './store-api.js';

export interface MaildirStoreOptions {
  /** Data directory; each user gets `<root>/<address>/Maildir`. */
  root: string;
  users: UserConfig[];
  /** fsync files and directories before a change is reported done. */
  fsync: boolean;
  /** Host name used in new message file names (default: os.hostname()). */
  hostname?: string;
}

/** Folders every user has, created on the user's first use. */
const DEFAULT_MAILBOXES: Array<[string, SpecialUse]> = [
  ['Sent', '\\Sent'],
  ['Drafts', '\\Drafts'],
  ['Trash', '\\Trash'],
  ['Junk', '\\Junk'],
];

/** Maildir info letters and the IMAP system flags they stand for (letters in ASCII order, as the spec wants). */
const FLAG_LETTERS: ReadonlyArray<readonly [string, string]> = [
  ['D', '\\Draft'],
  ['F', '\\Flagged'],
  ['R', '\\Answered'],
  ['S', '\\Seen'],
  ['T', '\\Deleted'],
];
const LETTER_OF = new Map(FLAG_LETTERS.map(([letter, flag]) => [flag.toLowerCase(), letter]));
const FLAG_OF = new Map(FLAG_LETTERS.map(([letter, flag]) => [letter, flag]));

const INDEX_FILE = 'maillab-index';
const USER_FILE = 'maillab-user.json';
const INDEX_VERSION = 1;
/** Compact the index log once it has this many more records than live messages (and twice as many). */
const COMPACT_SLACK = 1000;

interface Entry {
  uid: number;
  /** Base name, without the `:2,` info. */
  id: string;
  /** Sub-directory the file is in. */
  sub: 'new' | 'cur';
  /** File name within `sub` (base name plus info for files in cur/). */
  file: string;
  /** Info letters, sorted; letters we do not map (P, Dovecot keyword letters) are kept as they were. */
  letters: string;
  keywords: string[];
  size: number;
  internalDate: number;
  modseq: number;
}

interface Folder {
  name: string;
  /** Absolute path of the folder's Maildir (the user's Maildir itself for INBOX). */
  dir: string;
  uidValidity: number;
  uidNext: number;
  highestModseq: number;
  /** Ascending by uid. */
  entries: Entry[];
  byUid: Map<number, Entry>;
  /** Records in the index file, for deciding when to compact it. */
  logRecords: number;
}

interface UserMeta {
  v: number;
  /** The default folders were created once; a user may delete them afterwards. */
  initialized: boolean;
  lastUidValidity: number;
  subscribed: string[];
  specialUse: Record<string, SpecialUse>;
}

interface UserState {
  name: string;
  home: string;
  maildir: string;
  password: string;
  mutex: Mutex;
  ready?: Promise<void>;
  meta: UserMeta;
  /** Every existing mailbox by name, with its state once loaded. */
  mailboxes: Map<string, Folder | undefined>;
  maildropLocked: boolean;
}

/** Index records, one JSON object a line: add, flags (keywords; system flags are in the file name), expunge. */
type IndexRecord =
  | { a: number; id: string; d: number; m: number; k?: string[] }
  | { f: number; m: number; k?: string[] }
  | { x: number[]; m: number };

interface IndexHeader {
  v: number;
  uidValidity: number;
  uidNext: number;
  modseq: number;
}

/** A promise chain: run() calls are executed one at a time, in call order. */
class Mutex {
  private tail: Promise<unknown> = Promise.resolve();
  run<T>(fn: () => Promise<T>): Promise<T> {
    const result = this.tail.then(fn);
    this.tail = result.catch(() => undefined);
    return result;
  }
}

let fileCounter = 0;

export class MaildirStore implements MailStore {
  private readonly users = new Map<string, UserState>();
  private readonly listeners = new Set<(change: StoreChange) => void>();
  private readonly root: string;
  private readonly sync: boolean;
  private readonly host: string;

  constructor(options: MaildirStoreOptions) {
    this.root = path.resolve(options.root);
    this.sync = options.fsync;
    // File names must not contain "/" or ":" (the info separator), and we parse ",S=", so escape those (and
    // anything unusual) the way the Maildir spec suggests, as octal.
    this.host = (options.hostname ?? os.hostname()).replace(/[^A-Za-z0-9.-]/g, (c) => '\\' + c.charCodeAt(0).toString(8).padStart(3, '0'));
    for (const user of options.users) {
      const name = user.address.toLowerCase();
      if (!name || name === '.' || name === '..' || /[/\\\0]/.test(name)) throw new Error(`unusable user address ${JSON.stringify(user.address)}`);
      const home = path.join(this.root, name);
      this.users.set(name, {
        name,
        home,
        maildir: path.join(home, 'Maildir'),
        password: user.password,
        mutex: new Mutex(),
        meta: { v: 1, initialized: false, lastUidValidity: 0, subscribed: [], specialUse: {} },
        mailboxes: new Map(),
        maildropLocked: false,
      });
    }
  }

  /** Creates (or checks) every user's Maildir now rather than on first use. */
  async open(): Promise<void> {
    await Promise.all([...this.users.values()].map((u) => this.ready(u)));
  }

  /** Waits for the mutations under way. */
  async close(): Promise<void> {
    await Promise.all([...this.users.values()].map((u) => u.mutex.run(async () => undefined)));
  }

  // ---- users ----

  resolveUser(login: string): string | undefined {
    const name = login.trim().toLowerCase();
    if (this.users.has(name)) return name;
    if (name.includes('@')) return undefined;
    const matches = [...this.users.keys()].filter((address) => address.slice(0, address.lastIndexOf('@')) === name);
    return matches.length === 1 ? matches[0] : undefined;
  }

  authenticate(login: string, password: string): string | undefined {
    const name = this.resolveUser(login);
    const user = name === undefined ? undefined : this.users.get(name);
    // Compare digests so the comparison takes the same time whatever the lengths.
    const digest = (s: string) => createHash('sha256').update(s, 'utf8').digest();
    const ok = timingSafeEqual(digest(password), digest(user?.password ?? '\0no user\0'));
    return user && ok ? user.name : undefined;
  }

  hasUser(address: string): boolean {
    return this.users.has(address.toLowerCase());
  }

  lockMaildrop(user: string): (() => void) | undefined {
    const u = this.users.get(user.toLowerCase());
    if (!u || u.maildropLocked) return undefined;
    u.maildropLocked = true;
    let released = false;
    return () => {
      if (released) return;
      released = true;
      u.maildropLocked = false;
    };
  }

  onChange(listener: (change: StoreChange) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  // ---- mailboxes ----

  async listMailboxes(user: string): Promise<MailboxInfo[]> {
    const u = await this.user(user);
    const names = [...u.mailboxes.keys()].sort((a, b) => (a === 'INBOX' ? -1 : b === 'INBOX' ? 1 : a < b ? -1 : a > b ? 1 : 0));
    const infos: MailboxInfo[] = [];
    for (const name of names) {
      // A mailbox deleted while we were loading the others is simply left out.
      const folder = await this.loaded(u, name).catch((err) => {
        if (err instanceof MailStoreError && err.code === 'NONEXISTENT') return undefined;
        throw err;
      });
      if (folder) infos.push(this.info(u, folder));
    }
    return infos;
  }

  async mailboxInfo(user: string, mailbox: string): Promise<MailboxInfo> {
    const u = await this.user(user);
    return this.info(u, await this.loaded(u, normalizeName(mailbox)));
  }

  async createMailbox(user: string, mailbox: string, specialUse?: SpecialUse): Promise<void> {
    const u = await this.user(user);
    const name = normalizeName(mailbox);
    await u.mutex.run(async () => {
      if (u.mailboxes.has(name)) throw new MailStoreError('ALREADYEXISTS', `mailbox ${name} already exists`);
      // RFC 3501 §6.3.3: create the superior names that are needed.
      for (const parent of superiors(name)) if (!u.mailboxes.has(parent)) await this.createFolder(u, parent);
      await this.createFolder(u, name);
      if (specialUse) {
        u.meta.specialUse[name] = specialUse;
        await this.saveMeta(u);
      }
    });
    this.emit({ type: 'mailboxes', user: u.name });
  }

  async deleteMailbox(user: string, mailbox: string): Promise<void> {
    const u = await this.user(user);
    const name = normalizeName(mailbox);
    if (name === 'INBOX') throw new MailStoreError('CANNOT', 'INBOX cannot be deleted');
    await u.mutex.run(async () => {
      if (!u.mailboxes.has(name)) throw new MailStoreError('NONEXISTENT', `no mailbox ${name}`);
      // Out of sight first (one atomic rename), then removed. Inferior mailboxes are left alone (RFC 3501 §6.3.4).
      const doomed = path.join(u.home, `deleted-${Date.now()}-${Math.random().toString(36).slice(2)}`);
      await fs.rename(this.folderDir(u, name), doomed);
      if (this.sync) await syncDir(u.maildir);
      u.mailboxes.delete(name);
      delete u.meta.specialUse[name];
      u.meta.subscribed = u.meta.subscribed.filter((s) => s !== name);
      await this.saveMeta(u);
      await fs.rm(doomed, { recursive: true, force: true });
    });
    this.emit({ type: 'mailboxes', user: u.name });
  }

  async renameMailbox(user: string, from: string, to: string): Promise<void> {
    const u = await this.user(user);
    const source = normalizeName(from);
    const target = normalizeName(to);
    let expunged: number[] = [];
    await u.mutex.run(async () => {
      if (!u.mailboxes.has(source)) throw new MailStoreError('NONEXISTENT', `no mailbox ${source}`);
      if (u.mailboxes.has(target)) throw new MailStoreError('ALREADYEXISTS', `mailbox ${target} already exists`);
      if (target.startsWith(source + '/')) throw new MailStoreError('CANNOT', `cannot rename ${source} into itself`);
      // Inferiors move along (except INBOX's, RFC 3501 §6.3.5): none of their new names may be taken either.
      const moving = source === 'INBOX' ? [] : [...u.mailboxes.keys()].filter((n) => n.startsWith(source + '/'));
      for (const oldName of moving) {
        const newName = target + oldName.slice(source.length);
        if (u.mailboxes.has(newName)) throw new MailStoreError('ALREADYEXISTS', `mailbox ${newName} already exists`);
      }
      for (const parent of superiors(target)) if (!u.mailboxes.has(parent)) await this.createFolder(u, parent);
      if (source === 'INBOX') {
        expunged = await this.renameInbox(u, target);
      } else {
        // Each keeps its UIDVALIDITY, which is unique for the user, so no name ever shows a UIDVALIDITY it had
        // before with other contents.
        for (const oldName of [source, ...moving]) {
          const newName = target + oldName.slice(source.length);
          await fs.rename(this.folderDir(u, oldName), this.folderDir(u, newName));
          const folder = u.mailboxes.get(oldName);
          u.mailboxes.delete(oldName);
          if (folder) {
            folder.name = newName;
            folder.dir = this.folderDir(u, newName);
          }
          u.mailboxes.set(newName, folder);
          const use = u.meta.specialUse[oldName];
          if (use) {
            delete u.meta.specialUse[oldName];
            u.meta.specialUse[newName] = use;
          }
          u.meta.subscribed = u.meta.subscribed.map((s) => (s === oldName ? newName : s));
        }
        if (this.sync) await syncDir(u.maildir);
        await this.saveMeta(u);
      }
    });
    if (expunged.length) this.emit({ type: 'expunge', user: u.name, mailbox: 'INBOX', uids: expunged });
    this.emit({ type: 'mailboxes', user: u.name });
  }

  async setSubscribed(user: string, mailbox: string, subscribed: boolean): Promise<void> {
    const u = await this.user(user);
    const name = normalizeName(mailbox);
    const changed = await u.mutex.run(async () => {
      if (u.meta.subscribed.includes(name) === subscribed) return false;
      u.meta.subscribed = subscribed ? [...u.meta.subscribed, name] : u.meta.subscribed.filter((s) => s !== name);
      await this.saveMeta(u);
      return true;
    });
    if (changed) this.emit({ type: 'mailboxes', user: u.name });
  }

  // ---- messages ----

  async messages(user: string, mailbox: string): Promise<StoredMessage[]> {
    const u = await this.user(user);
    const folder = await this.loaded(u, normalizeName(mailbox));
    return folder.entries.map(toMessage);
  }

  async read(user: string, mailbox: string, uid: number): Promise<Buffer> {
    const u = await this.user(user);
    const name = normalizeName(mailbox);
    const folder = await this.loaded(u, name);
    const entry = folder.byUid.get(uid);
    if (!entry) throw new MailStoreError('NONEXISTENT', `no message ${uid} in ${name}`);
    try {
      return await fs.readFile(this.filePath(folder, entry));
    } catch (err) {
      if (!isCode(err, 'ENOENT')) throw err;
    }
    // The file was renamed (flags) or removed under us: ask again once the mutation is over.
    return u.mutex.run(async () => {
      const current = u.mailboxes.get(name)?.byUid.get(uid);
      const folderNow = u.mailboxes.get(name);
      if (!current || !folderNow) throw new MailStoreError('NONEXISTENT', `message ${uid} in ${name} was removed`);
      return fs.readFile(this.filePath(folderNow, current));
    });
  }

  async deliver(user: string, data: Buffer, options: { internalDate?: number } = {}): Promise<StoredMessage> {
    const u = await this.user(user);
    const inbox = await this.loaded(u, 'INBOX');
    const content = toCrlf(data);
    // The expensive part (write + fsync) runs outside the lock, so deliveries to one user overlap; only the
    // link into new/ and the UID assignment are serialized. INBOX cannot go away, so its tmp/ stays valid.
    const { id, tmp } = await this.writeTmp(inbox, content, options.internalDate);
    const message = await u.mutex.run(async () => {
      let file: string;
      try {
        file = await this.linkUnique(tmp, path.join(inbox.dir, 'new'), id, content.length, '');
      } finally {
        await fs.unlink(tmp).catch(() => undefined);
      }
      if (this.sync) await syncDir(path.join(inbox.dir, 'new'));
      const internalDate = options.internalDate ?? Date.now();
      const entry = this.addEntry(inbox, { id: baseOf(file), sub: 'new', file, letters: '', keywords: [], size: content.length, internalDate }, ++inbox.highestModseq);
      await this.appendIndex(inbox, [addRecord(entry)]);
      return toMessage(entry);
    });
    this.emit({ type: 'exists', user: u.name, mailbox: 'INBOX', message });
    return message;
  }

  async append(user: string, mailbox: string, data: Buffer, flags: string[] = [], internalDate?: number): Promise<StoredMessage> {
    const u = await this.user(user);
    const name = normalizeName(mailbox);
    const content = toCrlf(data);
    const { letters, keywords } = applyFlags('', [], flags, 'set');
    const message = await u.mutex.run(async () => {
      const folder = await this.load(u, name);
      const { id, tmp } = await this.writeTmp(folder, content, internalDate);
      let file: string;
      try {
        file = await this.linkUnique(tmp, path.join(folder.dir, 'cur'), id, content.length, letters);
      } finally {
        await fs.unlink(tmp).catch(() => undefined);
      }
      if (this.sync) await syncDir(path.join(folder.dir, 'cur'));
      const entry = this.addEntry(folder, { id: baseOf(file), sub: 'cur', file, letters, keywords, size: content.length, internalDate: internalDate ?? Date.now() }, ++folder.highestModseq);
      await this.appendIndex(folder, [addRecord(entry)]);
      return toMessage(entry);
    });
    this.emit({ type: 'exists', user: u.name, mailbox: name, message });
    return message;
  }

  async setFlags(user: string, mailbox: string, uids: number[], flags: string[], mode: FlagMode): Promise<StoredMessage[]> {
    const u = await this.user(user);
    const name = normalizeName(mailbox);
    const changed: Entry[] = [];
    const result = await u.mutex.run(async () => {
      const folder = await this.load(u, name);
      const targets = uniqueExisting(folder, uids);
      const dirty = new Set<string>();
      let modseq = 0;
      try {
        for (const entry of targets) {
          const next = applyFlags(entry.letters, entry.keywords, flags, mode);
          const lettersChanged = next.letters !== entry.letters;
          if (!lettersChanged && sameKeywords(next.keywords, entry.keywords)) continue;
          if (lettersChanged) {
            // A message with flags belongs in cur/ (a message in new/ has not been seen by any client yet).
            const file = `${entry.id}:2,${next.letters}`;
            await fs.rename(this.filePath(folder, entry), path.join(folder.dir, 'cur', file));
            dirty.add(entry.sub).add('cur');
            entry.sub = 'cur';
            entry.file = file;
            entry.letters = next.letters;
          }
          entry.keywords = next.keywords;
          // One modseq for the whole command is enough for CONDSTORE (RFC 7162 §3.1.1 allows shared values).
          if (!modseq) modseq = ++folder.highestModseq;
          entry.modseq = modseq;
          changed.push(entry);
        }
      } finally {
        // Whatever was renamed is recorded, even when a later rename failed.
        if (this.sync) for (const sub of dirty) await syncDir(path.join(folder.dir, sub));
        if (changed.length) await this.appendIndex(folder, changed.map((e) => ({ f: e.uid, m: e.modseq, ...(e.keywords.length ? { k: e.keywords } : {}) })));
      }
      return targets.map(toMessage);
    });
    for (const entry of changed) this.emit({ type: 'flags', user: u.name, mailbox: name, message: toMessage(entry) });
    return result;
  }

  async copy(user: string, from: string, uids: number[], to: string): Promise<CopyResult> {
    return this.transfer(user, from, uids, to, false);
  }

  async move(user: string, from: string, uids: number[], to: string): Promise<CopyResult> {
    return this.transfer(user, from, uids, to, true);
  }

  async remove(user: string, mailbox: string, uids: number[]): Promise<number[]> {
    const u = await this.user(user);
    const name = normalizeName(mailbox);
    const removed = await u.mutex.run(async () => {
      const folder = await this.load(u, name);
      return this.removeEntries(folder, uniqueExisting(folder, uids));
    });
    if (removed.length) this.emit({ type: 'expunge', user: u.name, mailbox: name, uids: removed });
    return removed;
  }

  // ---- internals: copy/move/remove ----

  private async transfer(user: string, from: string, uids: number[], to: string, move: boolean): Promise<CopyResult> {
    const u = await this.user(user);
    const sourceName = normalizeName(from);
    const targetName = normalizeName(to);
    const added: Entry[] = [];
    const sourceUids: number[] = [];
    let expunged: number[] = [];
    const uidValidity = await u.mutex.run(async () => {
      const source = await this.load(u, sourceName);
      const target = await this.load(u, targetName);
      // Between folders a move is a rename: atomic, and the message keeps its file name (and Maildir id). Within
      // one folder it is a copy plus removal of the originals, as the copies need new UIDs (RFC 6851 §3.3).
      const rename = move && source !== target;
      const dirty = new Set<string>();
      const moved: Entry[] = [];
      let modseq = 0;
      try {
        for (const entry of uniqueExisting(source, uids)) {
          let sub = entry.sub;
          let file = entry.file;
          if (rename) {
            try {
              await fs.rename(this.filePath(source, entry), path.join(target.dir, sub, file));
            } catch (err) {
              if (isCode(err, 'ENOENT')) continue;
              throw err;
            }
            dirty.add(path.join(source.dir, sub)).add(path.join(target.dir, sub));
            moved.push(entry);
          } else {
            sub = 'cur';
            file = await this.copyFile(source, entry, target);
            if (!file) continue;
            dirty.add(path.join(target.dir, sub));
          }
          if (!modseq) modseq = ++target.highestModseq;
          added.push(this.addEntry(target, { ...entry, id: baseOf(file), sub, file, keywords: [...entry.keywords] }, modseq));
          sourceUids.push(entry.uid);
        }
      } finally {
        // Record whatever was done, even when a later message failed.
        if (this.sync) for (const dir of dirty) await syncDir(dir);
        if (added.length) await this.appendIndex(target, added.map(addRecord));
        if (moved.length) expunged = await this.forgetEntries(source, moved);
      }
      if (move && !rename && sourceUids.length) {
        expunged = await this.removeEntries(source, uniqueExisting(source, sourceUids));
      }
      return target.uidValidity;
    });
    for (const entry of added) this.emit({ type: 'exists', user: u.name, mailbox: targetName, message: toMessage(entry) });
    if (expunged.length) this.emit({ type: 'expunge', user: u.name, mailbox: sourceName, uids: expunged });
    return { uidValidity, uids: added.map((e) => e.uid), sourceUids };
  }

  /** Copies a message file into target/cur under a new name: a hard link when possible (the content never
   * changes, flags are in the name), else a real copy. Returns the new file name, '' when the source is gone. */
  private async copyFile(source: Folder, entry: Entry, target: Folder): Promise<string> {
    const from = this.filePath(source, entry);
    const id = this.newId(entry.size);
    const file = `${id}:2,${entry.letters}`;
    try {
      await fs.link(from, path.join(target.dir, 'cur', file));
      return file;
    } catch (err) {
      if (isCode(err, 'ENOENT')) return '';
      if (!isCode(err, 'EXDEV') && !isCode(err, 'EPERM') && !isCode(err, 'EMLINK') && !isCode(err, 'ENOTSUP')) throw err;
    }
    const tmp = path.join(target.dir, 'tmp', id);
    try {
      await fs.copyFile(from, tmp);
      if (this.sync) {
        const handle = await fs.open(tmp, 'r+');
        await handle.sync().finally(() => handle.close());
      }
      await fs.utimes(tmp, new Date(entry.internalDate), new Date(entry.internalDate));
      await fs.rename(tmp, path.join(target.dir, 'cur', file));
      return file;
    } catch (err) {
      await fs.unlink(tmp).catch(() => undefined);
      if (isCode(err, 'ENOENT')) return '';
      throw err;
    }
  }

  /** Unlinks the files of `entries` and forgets them; returns their UIDs, ascending. Caller holds the lock. */
  private async removeEntries(folder: Folder, entries: Entry[]): Promise<number[]> {
    const gone: Entry[] = [];
    const dirty = new Set<string>();
    let removed: number[] = [];
    try {
      for (const entry of entries) {
        try {
          await fs.unlink(this.filePath(folder, entry));
        } catch (err) {
          if (!isCode(err, 'ENOENT')) throw err;
        }
        dirty.add(entry.sub);
        gone.push(entry);
      }
    } finally {
      if (this.sync) for (const sub of dirty) await syncDir(path.join(folder.dir, sub));
      if (gone.length) removed = await this.forgetEntries(folder, gone);
    }
    return removed;
  }

  /** Drops entries whose files are already gone from the in-memory state and the index; returns their UIDs. */
  private async forgetEntries(folder: Folder, entries: Entry[]): Promise<number[]> {
    const uids = new Set(entries.map((e) => e.uid));
    folder.entries = folder.entries.filter((e) => !uids.has(e.uid));
    for (const uid of uids) folder.byUid.delete(uid);
    const modseq = ++folder.highestModseq;
    const list = [...uids].sort((a, b) => a - b);
    await this.appendIndex(folder, [{ x: list, m: modseq }]);
    return list;
  }

  /** RENAME INBOX (RFC 3501 §6.3.5): its messages go to a new mailbox, INBOX stays, empty. */
  private async renameInbox(u: UserState, target: string): Promise<number[]> {
    const inbox = await this.load(u, 'INBOX');
    await this.createFolder(u, target);
    const folder = await this.load(u, target);
    const moved: Entry[] = [];
    const added: Entry[] = [];
    let modseq = 0;
    try {
      for (const entry of [...inbox.entries]) {
        try {
          await fs.rename(this.filePath(inbox, entry), path.join(folder.dir, entry.sub, entry.file));
        } catch (err) {
          if (isCode(err, 'ENOENT')) continue;
          throw err;
        }
        moved.push(entry);
        if (!modseq) modseq = ++folder.highestModseq;
        added.push(this.addEntry(folder, { ...entry, keywords: [...entry.keywords] }, modseq));
      }
    } finally {
      if (this.sync) for (const dir of [inbox.dir, folder.dir]) for (const sub of ['new', 'cur']) await syncDir(path.join(dir, sub));
      if (added.length) await this.appendIndex(folder, added.map(addRecord));
    }
    return moved.length ? this.forgetEntries(inbox, moved) : [];
  }

  // ---- internals: files ----

  private newId(size: number): string {
    const now = Date.now();
    return `${Math.floor(now / 1000)}.${process.pid}_${++fileCounter}.${this.host},S=${size}`;
  }

  /** Writes a new message into the folder's tmp/ (fsynced); mtime is the internal date. */
  private async writeTmp(folder: Folder, content: Buffer, internalDate?: number): Promise<{ id: string; tmp: string }> {
    const id = this.newId(content.length);
    const tmp = path.join(folder.dir, 'tmp', id);
    const handle = await fs.open(tmp, 'wx');
    try {
      await handle.writeFile(content);
      if (internalDate !== undefined) await handle.utimes(new Date(internalDate), new Date(internalDate));
      if (this.sync) await handle.sync();
    } catch (err) {
      await handle.close().catch(() => undefined);
      await fs.unlink(tmp).catch(() => undefined);
      throw err;
    }
    await handle.close();
    return { id, tmp };
  }

  /** link() never replaces an existing file: should the name be taken after all, pick another one. */
  private async linkUnique(tmp: string, dir: string, id: string, size: number, letters: string): Promise<string> {
    const sub = path.basename(dir);
    for (let attempt = 0; ; attempt++) {
      const base = attempt === 0 ? id : this.newId(size);
      const file = sub === 'new' ? base : `${base}:2,${letters}`;
      try {
        await fs.link(tmp, path.join(dir, file));
        return file;
      } catch (err) {
        if (!isCode(err, 'EEXIST') || attempt >= 5) throw err;
      }
    }
  }

  private filePath(folder: Folder, entry: Entry): string {
    return path.join(folder.dir, entry.sub, entry.file);
  }

  private folderDir(u: UserState, name: string): string {
    return name === 'INBOX' ? u.maildir : path.join(u.maildir, encodeFolderName(name));
  }

  // ---- internals: state ----

  private emit(change: StoreChange) {
    for (const listener of this.listeners) {
      try {
        listener(change);
      } catch {
        // A listener's failure is its own business; the change happened.
      }
    }
  }

  private info(u: UserState, folder: Folder): MailboxInfo {
    let unseen = 0;
    for (const entry of folder.entries) if (!entry.letters.includes('S')) unseen++;
    const specialUse = u.meta.specialUse[folder.name];
    return {
      name: folder.name,
      uidValidity: folder.uidValidity,
      uidNext: folder.uidNext,
      highestModseq: folder.highestModseq,
      ...(specialUse ? { specialUse } : {}),
      subscribed: u.meta.subscribed.includes(folder.name),
      exists: folder.entries.length,
      unseen,
    };
  }

  private addEntry(folder: Folder, fields: Omit<Entry, 'uid' | 'modseq'>, modseq: number): Entry {
    const entry: Entry = { ...fields, uid: folder.uidNext++, modseq };
    folder.entries.push(entry);
    folder.byUid.set(entry.uid, entry);
    return entry;
  }

  /** The user's state, initialized (Maildir and default folders created) on first use. */
  private async user(user: string): Promise<UserState> {
    const u = this.users.get(user.toLowerCase());
    if (!u) throw new MailStoreError('NOUSER', `no user ${user}`);
    await this.ready(u);
    return u;
  }

  private ready(u: UserState): Promise<void> {
    if (!u.ready) {
      u.ready = u.mutex.run(() => this.init(u));
      // A failed initialization (disk full...) is tried again on the next request.
      u.ready.catch(() => (u.ready = undefined));
    }
    return u.ready;
  }

  private async init(u: UserState): Promise<void> {
    for (const sub of ['cur', 'new', 'tmp']) await fs.mkdir(path.join(u.maildir, sub), { recursive: true });
    try {
      const meta = JSON.parse(await fs.readFile(path.join(u.home, USER_FILE), 'utf8')) as Partial<UserMeta>;
      u.meta = {
        v: 1,
        initialized: !!meta.initialized,
        lastUidValidity: Number(meta.lastUidValidity) || 0,
        subscribed: Array.isArray(meta.subscribed) ? meta.subscribed.filter((s) => typeof s === 'string') : [],
        specialUse: meta.specialUse && typeof meta.specialUse === 'object' ? meta.specialUse : {},
      };
    } catch (err) {
      if (!isCode(err, 'ENOENT')) throw err;
    }
    u.mailboxes = new Map([['INBOX', undefined]]);
    for (const dirent of await fs.readdir(u.maildir, { withFileTypes: true })) {
      if (!dirent.isDirectory() || !dirent.name.startsWith('.')) continue;
      const name = decodeFolderName(dirent.name);
      if (name !== undefined && name !== 'INBOX') u.mailboxes.set(name, undefined);
    }
    if (!u.meta.initialized) {
      for (const [name, use] of DEFAULT_MAILBOXES) {
        if (!u.mailboxes.has(name)) await this.createFolder(u, name);
        u.meta.specialUse[name] = use;
      }
      u.meta.subscribed = [...new Set([...u.meta.subscribed, 'INBOX', ...DEFAULT_MAILBOXES.map(([name]) => name)])];
      u.meta.initialized = true;
      await this.saveMeta(u);
    }
    // Load INBOX now: its tmp/ is cleaned on load, and deliveries write there without holding the lock.
    await this.load(u, 'INBOX');
  }

  private async saveMeta(u: UserState): Promise<void> {
    await writeFileDurable(path.join(u.home, USER_FILE), JSON.stringify(u.meta, null, 1) + '\n', this.sync);
  }

  /** A UIDVALIDITY never used before for this user (so a re-created or renamed mailbox never repeats one). */
  private async newUidValidity(u: UserState): Promise<number> {
    const value = Math.max(Math.floor(Date.now() / 1000), u.meta.lastUidValidity + 1);
    u.meta.lastUidValidity = value;
    await this.saveMeta(u);
    return value;
  }

  /** Creates a folder on disk with an empty index. Caller holds the lock. */
  private async createFolder(u: UserState, name: string): Promise<void> {
    const dir = this.folderDir(u, name);
    if (Buffer.byteLength(path.basename(dir)) > 200) throw new MailStoreError('CANNOT', 'mailbox name too long');
    try {
      await fs.mkdir(dir);
    } catch (err) {
      if (!isCode(err, 'EEXIST')) throw err;
      // A directory we did not know of (left over from a crash, or made by hand): adopt it.
    }
    for (const sub of ['cur', 'new', 'tmp']) await fs.mkdir(path.join(dir, sub), { recursive: true });
    await fs.writeFile(path.join(dir, 'maildirfolder'), '');
    const header: IndexHeader = { v: INDEX_VERSION, uidValidity: await this.newUidValidity(u), uidNext: 1, modseq: 1 };
    await writeFileDurable(path.join(dir, INDEX_FILE), JSON.stringify(header) + '\n', this.sync);
    if (this.sync) await syncDir(u.maildir);
    u.mailboxes.set(name, undefined);
  }

  /** The loaded folder, loading it under the lock when needed. */
  private async loaded(u: UserState, name: string): Promise<Folder> {
    const folder = u.mailboxes.get(name);
    if (folder) return folder;
    if (!u.mailboxes.has(name)) throw new MailStoreError('NONEXISTENT', `no mailbox ${name}`);
    return u.mutex.run(() => this.load(u, name));
  }

  /** Loads a folder: index file + directory scan, reconciled. Caller holds the lock. */
  private async load(u: UserState, name: string): Promise<Folder> {
    const cached = u.mailboxes.get(name);
    if (cached) return cached;
    if (!u.mailboxes.has(name)) throw new MailStoreError('NONEXISTENT', `no mailbox ${name}`);
    const dir = this.folderDir(u, name);
    for (const sub of ['cur', 'new', 'tmp']) await fs.mkdir(path.join(dir, sub), { recursive: true });

    // Anything in tmp/ is a write that never completed: nothing else writes here, and every writer loads the
    // folder before writing.
    for (const file of await fs.readdir(path.join(dir, 'tmp'))) await fs.rm(path.join(dir, 'tmp', file), { recursive: true, force: true });

    const index = await readIndex(path.join(dir, INDEX_FILE));
    let rewrite = index.damaged;
    const header = index.header ?? { v: INDEX_VERSION, uidValidity: await this.newUidValidity(u), uidNext: 1, modseq: 1 };
    if (!index.header) rewrite = true;
    const folder: Folder = {
      name,
      dir,
      uidValidity: header.uidValidity,
      uidNext: index.uidNext,
      highestModseq: index.modseq,
      entries: [],
      byUid: new Map(),
      logRecords: index.records,
    };

    const unknown: Array<{ sub: 'new' | 'cur'; file: string }> = [];
    const seen = new Set<string>();
    for (const sub of ['new', 'cur'] as const) {
      for (const file of await fs.readdir(path.join(dir, sub))) {
        if (file.startsWith('.')) continue;
        const id = baseOf(file);
        if (seen.has(id)) continue;
        seen.add(id);
        const known = index.known.get(id);
        if (!known) {
          unknown.push({ sub, file });
          continue;
        }
        const size = sizeOf(id) ?? (await fs.stat(path.join(dir, sub, file))).size;
        const entry: Entry = { uid: known.uid, id, sub, file, letters: lettersOf(file), keywords: known.keywords, size, internalDate: known.date, modseq: known.modseq };
        folder.entries.push(entry);
        folder.byUid.set(entry.uid, entry);
      }
    }
    folder.entries.sort((a, b) => a.uid - b.uid);
    if (folder.entries.length !== index.known.size) {
      // Files removed behind our back (or a crash between unlink and index update): a change for CONDSTORE.
      folder.highestModseq++;
      rewrite = true;
    }
    if (unknown.length) {
      // Found on disk without a UID (delivered by something else, or a crash before the index record):
      // they get the next UIDs, oldest name first (names start with the delivery time).
      unknown.sort((a, b) => compareNames(a.file, b.file));
      const modseq = ++folder.highestModseq;
      for (const { sub, file } of unknown) {
        const stat = await fs.stat(path.join(dir, sub, file));
        const id = baseOf(file);
        this.addEntry(folder, { id, sub, file, letters: lettersOf(file), keywords: [], size: sizeOf(id) ?? stat.size, internalDate: stat.mtimeMs }, modseq);
      }
      rewrite = true;
    }
    if (rewrite || folder.logRecords > COMPACT_SLACK + 2 * folder.entries.length) await this.compact(folder);
    u.mailboxes.set(name, folder);
    return folder;
  }

  /** Rewrites the index with one record per live message (atomic + durable). */
  private async compact(folder: Folder): Promise<void> {
    const header: IndexHeader = { v: INDEX_VERSION, uidValidity: folder.uidValidity, uidNext: folder.uidNext, modseq: folder.highestModseq };
    const lines = [JSON.stringify(header), ...folder.entries.map((e) => JSON.stringify(addRecord(e)))];
    await writeFileDurable(path.join(folder.dir, INDEX_FILE), lines.join('\n') + '\n', this.sync);
    folder.logRecords = folder.entries.length;
  }

  /** Appends records to the folder's index log (fsynced); compacts when the log has grown too long. */
  private async appendIndex(folder: Folder, records: IndexRecord[]): Promise<void> {
    if (folder.logRecords + records.length > COMPACT_SLACK + 2 * folder.entries.length) return this.compact(folder);
    const handle = await fs.open(path.join(folder.dir, INDEX_FILE), 'a');
    try {
      await handle.write(records.map((r) => JSON.stringify(r) + '\n').join(''));
      if (this.sync) await handle.datasync();
    } finally {
      await handle.close();
    }
    folder.logRecords += records.length;
  }
}

// ---- index file ----

interface IndexContents {
  header?: IndexHeader;
  known: Map<string, { uid: number; date: number; modseq: number; keywords: string[] }>;
  uidNext: number;
  modseq: number;
  records: number;
  /** Unparsable lines or a torn last line: the file must be rewritten before anything is appended to it. */
  damaged: boolean;
}

async function readIndex(file: string): Promise<IndexContents> {
  const contents: IndexContents = { known: new Map(), uidNext: 1, modseq: 1, records: 0, damaged: false };
  let text: string;
  try {
    text = await fs.readFile(file, 'utf8');
  } catch (err) {
    if (isCode(err, 'ENOENT')) return contents;
    throw err;
  }
  if (text.length && !text.endsWith('\n')) contents.damaged = true;
  const lines = text.split('\n').filter((line) => line.length);
  let header: IndexHeader | undefined;
  try {
    const h = JSON.parse(lines[0] ?? '') as IndexHeader;
    if (Number.isInteger(h.uidValidity) && h.uidValidity > 0) header = h;
  } catch {
    // no usable header: the folder gets a new UIDVALIDITY, which tells clients to forget what they know
  }
  if (!header) {
    if (text.length) contents.damaged = true;
    return contents;
  }
  contents.header = header;
  let maxUid = 0;
  let modseq = Number(header.modseq) || 1;
  const idOf = new Map<number, string>();
  for (const line of lines.slice(1)) {
    let record: IndexRecord;
    try {
      record = JSON.parse(line) as IndexRecord;
    } catch {
      contents.damaged = true;
      continue;
    }
    contents.records++;
    if (typeof record.m === 'number') modseq = Math.max(modseq, record.m);
    if ('a' in record) {
      contents.known.set(record.id, { uid: record.a, date: record.d, modseq: record.m, keywords: record.k ?? [] });
      idOf.set(record.a, record.id);
      maxUid = Math.max(maxUid, record.a);
    } else if ('f' in record) {
      const known = contents.known.get(idOf.get(record.f) ?? '');
      if (known) {
        known.keywords = record.k ?? [];
        known.modseq = record.m;
      }
    } else if ('x' in record) {
      for (const uid of record.x) {
        const id = idOf.get(uid);
        if (id !== undefined && contents.known.get(id)?.uid === uid) contents.known.delete(id);
      }
    }
  }
  // UIDs handed out are never handed out again, even those of messages gone since.
  contents.uidNext = Math.max(Number(header.uidNext) || 1, maxUid + 1);
  contents.modseq = modseq;
  return contents;
}

function addRecord(e: Entry): IndexRecord {
  return { a: e.uid, id: e.id, d: e.internalDate, m: e.modseq, ...(e.keywords.length ? { k: e.keywords } : {}) };
}

// ---- names and flags ----

/**
 * Canonical mailbox name: `INBOX` in any case is INBOX (also as the first level of a hierarchy), names must be
 * non-empty, without empty levels or control characters.
 */
export function normalizeName(name: string): string {
  if (typeof name !== 'string' || !name || name.startsWith('/') || name.endsWith('/') || name.includes('//') || /[\x00-\x1f\x7f]/.test(name)) {
    throw new MailStoreError('CANNOT', `invalid mailbox name ${JSON.stringify(name)}`);
  }
  const first = name.split('/', 1)[0]!;
  return first.toUpperCase() === 'INBOX' ? 'INBOX' + name.slice(first.length) : name;
}

/** `a/b.c/d` → `.a.b%2Ec.d` (Maildir++: one directory per folder, levels separated by dots). */
export function encodeFolderName(name: string): string {
  return '.' + name.split('/').map((level) => level.replace(/%/g, '%25').replace(/\./g, '%2E')).join('.');
}

export function decodeFolderName(dir: string): string | undefined {
  if (!dir.startsWith('.') || dir === '.' || dir === '..') return undefined;
  const levels = dir.slice(1).split('.');
  if (levels.some((level) => !level)) return undefined;
  try {
    return normalizeName(levels.map((level) => decodeURIComponent(level)).join('/'));
  } catch {
    return undefined;
  }
}

function superiors(name: string): string[] {
  const levels = name.split('/');
  return levels.slice(1).map((_, i) => levels.slice(0, i + 1).join('/'));
}

function baseOf(file: string): string {
  const colon = file.indexOf(':');
  return colon >= 0 ? file.slice(0, colon) : file;
}

function lettersOf(file: string): string {
  const info = file.indexOf(':2,');
  return info >= 0 ? [...file.slice(info + 3)].sort().join('') : '';
}

function sizeOf(id: string): number | undefined {
  const match = /,S=(\d+)/.exec(id);
  return match ? Number(match[1]) : undefined;
}

/** Orders Maildir names by their leading time, then as text. */
function compareNames(a: string, b: string): number {
  const ta = parseFloat(a);
  const tb = parseFloat(b);
  if (ta !== tb && !Number.isNaN(ta) && !Number.isNaN(tb)) return ta - tb;
  return a < b ? -1 : a > b ? 1 : 0;
}

/** IMAP keywords are atoms; anything else (and the pseudo flag \Recent) is not stored. */
function isKeyword(flag: string): boolean {
  return /^[^\s\\()*%"{\]\x00-\x1f\x7f]+$/.test(flag);
}

function applyFlags(letters: string, keywords: string[], flags: string[], mode: FlagMode): { letters: string; keywords: string[] } {
  const wantLetters = new Set<string>();
  const wantKeywords = new Map<string, string>();
  for (const flag of flags) {
    const letter = LETTER_OF.get(flag.toLowerCase());
    if (letter) wantLetters.add(letter);
    else if (isKeyword(flag) && !wantKeywords.has(flag.toLowerCase())) wantKeywords.set(flag.toLowerCase(), flag);
  }
  // Letters we do not map (P, lowercase keyword letters of other software) are left as they are.
  const unmapped = [...letters].filter((l) => !FLAG_OF.has(l));
  const mapped = new Set([...letters].filter((l) => FLAG_OF.has(l)));
  const current = new Map(keywords.map((k) => [k.toLowerCase(), k]));
  let nextMapped: Set<string>;
  let nextKeywords: Map<string, string>;
  if (mode === 'set') {
    nextMapped = wantLetters;
    // Keep the existing spelling of a keyword that stays.
    nextKeywords = new Map([...wantKeywords].map(([key, value]) => [key, current.get(key) ?? value]));
  } else if (mode === 'add') {
    nextMapped = new Set([...mapped, ...wantLetters]);
    nextKeywords = new Map(current);
    for (const [key, value] of wantKeywords) if (!nextKeywords.has(key)) nextKeywords.set(key, value);
  } else {
    nextMapped = new Set([...mapped].filter((l) => !wantLetters.has(l)));
    nextKeywords = new Map([...current].filter(([key]) => !wantKeywords.has(key)));
  }
  return { letters: [...unmapped, ...nextMapped].sort().join(''), keywords: [...nextKeywords.values()] };
}

function sameKeywords(a: string[], b: string[]): boolean {
  const set = new Set(a.map((k) => k.toLowerCase()));
  return a.length === b.length && b.every((k) => set.has(k.toLowerCase()));
}

function toMessage(e: Entry): StoredMessage {
  const flags: string[] = [];
  for (const letter of e.letters) {
    const flag = FLAG_OF.get(letter);
    if (flag) flags.push(flag);
  }
  return { uid: e.uid, id: e.id, size: e.size, flags: [...flags, ...e.keywords], internalDate: e.internalDate, modseq: e.modseq };
}

/** The existing entries for `uids`, in the order given, each once. */
function uniqueExisting(folder: Folder, uids: number[]): Entry[] {
  const seen = new Set<number>();
  const entries: Entry[] = [];
  for (const uid of uids) {
    const entry = folder.byUid.get(uid);
    if (entry && !seen.has(uid)) {
      seen.add(uid);
      entries.push(entry);
    }
  }
  return entries;
}

function isCode(err: unknown, code: string): boolean {
  return typeof err === 'object' && err !== null && (err as NodeJS.ErrnoException).code === code;
}
