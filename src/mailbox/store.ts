// The mailbox store: one Maildir per user, Maildir++ sub-folders, with a per-folder index for IMAP UIDs.
//
// This class orchestrates the parts in maildir/: message files (files.ts: tmp → new with fsync, names, the
// `:2,` info), the index log (index-log.ts: UIDVALIDITY, UIDs, keywords, modseqs), folder names (names.ts),
// flags (flags.ts), a user's folders (user-maildir.ts) and message changes (messages.ts). It owns what they
// share: the per-user serialization of mutations and the publication of changes to listeners.
//
// This process is the only writer, so each folder's index is kept in memory once loaded; after a restart it is
// rebuilt from the index file plus a scan of new/ and cur/: a file the index does not know gets the next UID,
// an index entry whose file is gone is dropped. Mutations of a user's mailboxes are serialized by a per-user
// mutex. Readers use the in-memory state without the lock: every mutation updates it synchronously once its
// file operations are done, so a reader sees a message either before or after a change, never half of it.
import path from 'node:path';
import { createHash, timingSafeEqual } from 'node:crypto';
import type { UserConfig } from '../shared/config.js';
import { defaultFileSystem, type FileSystem } from '../shared/fsutil.js';
import { toCrlf } from './message.js';
import { MaildirFiles, isCode } from './maildir/files.js';
import { applyFlags } from './maildir/flags.js';
import { IndexLog, toMessage, uniqueExisting, type Entry } from './maildir/index-log.js';
import { MessageOps, filePath } from './maildir/messages.js';
import { compareMailboxNames, isInferior, normalizeName, superiors } from './maildir/names.js';
import { UserMaildir } from './maildir/user-maildir.js';
import {
  MailStoreError,
  type AppendItem,
  type CopyResult,
  type DeliverOptions,
  type ExpungedSince,
  type FlagMode,
  type MailboxInfo,
  type MailStore,
  type SpecialUse,
  type StoreChange,
  type StoredMessage,
} from './store-api.js';

export { decodeFolderName, encodeFolderName, normalizeName } from './maildir/names.js';

export interface MaildirStoreOptions {
  /** Data directory; each user gets `<root>/<address>/Maildir`. */
  root: string;
  users: UserConfig[];
  /** fsync files and directories before a change is reported done. */
  fsync: boolean;
  /** Host name used in new message file names (default: os.hostname()). */
  hostname?: string;
  /** Every file operation goes through this (default: node's); tests record the order of writes and syncs. */
  fs?: FileSystem;
}

export class MaildirStore implements MailStore {
  private readonly users = new Map<string, UserMaildir>();
  private readonly listeners = new Set<(change: StoreChange) => void>();
  private readonly ops: MessageOps;

  constructor(options: MaildirStoreOptions) {
    const root = path.resolve(options.root);
    const files = new MaildirFiles(options.fs ?? defaultFileSystem, options.fsync, options.hostname);
    const index = new IndexLog(files.fs, options.fsync);
    this.ops = new MessageOps(files, index);
    for (const user of options.users) {
      const name = user.address.toLowerCase();
      if (!name || name === '.' || name === '..' || /[/\\\0]/.test(name)) throw new Error(`unusable user address ${JSON.stringify(user.address)}`);
      this.users.set(name, new UserMaildir(name, root, user.password, files, index));
    }
  }

  /** Creates (or checks) every user's Maildir now rather than on first use. */
  async open(): Promise<void> {
    await Promise.all([...this.users.values()].map((u) => u.open()));
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
    const infos: MailboxInfo[] = [];
    for (const name of [...u.mailboxes.keys()].sort(compareMailboxNames)) {
      // A mailbox deleted while we were loading the others is simply left out.
      const folder = await u.loaded(name).catch((err) => {
        if (err instanceof MailStoreError && err.code === 'NONEXISTENT') return undefined;
        throw err;
      });
      if (folder) infos.push(u.info(folder));
    }
    return infos;
  }

  async mailboxInfo(user: string, mailbox: string): Promise<MailboxInfo> {
    const u = await this.user(user);
    return u.info(await u.loaded(normalizeName(mailbox)));
  }

  async createMailbox(user: string, mailbox: string, specialUse?: SpecialUse): Promise<void> {
    const u = await this.user(user);
    const name = normalizeName(mailbox);
    await u.mutex.run(async () => {
      if (u.mailboxes.has(name)) throw new MailStoreError('ALREADYEXISTS', `mailbox ${name} already exists`);
      // RFC 3501 §6.3.3: create the superior names that are needed.
      for (const parent of superiors(name)) if (!u.mailboxes.has(parent)) await u.createFolder(parent);
      await u.createFolder(name);
      if (specialUse) {
        u.meta.specialUse[name] = specialUse;
        await u.saveMeta();
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
      await u.deleteFolder(name);
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
      if (isInferior(target, source)) throw new MailStoreError('CANNOT', `cannot rename ${source} into itself`);
      // Inferiors move along (except INBOX's, RFC 3501 §6.3.5): none of their new names may be taken either.
      const moving = source === 'INBOX' ? [] : [...u.mailboxes.keys()].filter((n) => isInferior(n, source));
      const renames = [source, ...moving].map((oldName): [string, string] => [oldName, target + oldName.slice(source.length)]);
      for (const [, newName] of renames.slice(1)) {
        if (u.mailboxes.has(newName)) throw new MailStoreError('ALREADYEXISTS', `mailbox ${newName} already exists`);
      }
      for (const parent of superiors(target)) if (!u.mailboxes.has(parent)) await u.createFolder(parent);
      if (source === 'INBOX') {
        // RENAME INBOX (RFC 3501 §6.3.5): its messages go to a new mailbox, INBOX stays, empty.
        const inbox = await u.load('INBOX');
        await u.createFolder(target);
        expunged = await this.ops.emptyInbox(inbox, await u.load(target));
      } else {
        await u.renameFolders(renames);
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
      await u.saveMeta();
      return true;
    });
    if (changed) this.emit({ type: 'mailboxes', user: u.name });
  }

  async subscriptions(user: string): Promise<string[]> {
    const u = await this.user(user);
    return [...u.meta.subscribed].sort(compareMailboxNames);
  }

  // ---- messages ----

  async messages(user: string, mailbox: string): Promise<StoredMessage[]> {
    const u = await this.user(user);
    const folder = await u.loaded(normalizeName(mailbox));
    return folder.entries.map(toMessage);
  }

  async read(user: string, mailbox: string, uid: number): Promise<Buffer> {
    const u = await this.user(user);
    const name = normalizeName(mailbox);
    const folder = await u.loaded(name);
    const entry = folder.byUid.get(uid);
    if (!entry) throw new MailStoreError('NONEXISTENT', `no message ${uid} in ${name}`);
    const fs = this.ops.fs;
    try {
      return await fs.readFile(filePath(folder, entry));
    } catch (err) {
      if (!isCode(err, 'ENOENT')) throw err;
    }
    // The file was renamed (flags) or removed under us: ask again once the mutation is over.
    return u.mutex.run(async () => {
      const folderNow = u.mailboxes.get(name);
      const current = folderNow?.byUid.get(uid);
      if (!current || !folderNow) throw new MailStoreError('NONEXISTENT', `message ${uid} in ${name} was removed`);
      return fs.readFile(filePath(folderNow, current));
    });
  }

  async deliver(user: string, data: Buffer, options: DeliverOptions = {}): Promise<StoredMessage> {
    const u = await this.user(user);
    const inbox = await u.loaded('INBOX');
    const content = toCrlf(data);
    // The expensive part (write + fsync) runs outside the lock, so deliveries to one user overlap; only the
    // link into new/ and the UID assignment are serialized. INBOX cannot go away, so its tmp/ stays valid.
    const { id, tmp } = await this.ops.files.writeTmp(inbox.dir, content, options.internalDate);
    const message = await u.mutex.run(async () => {
      // The last moment to stop: a client that went away during the write would resend, and get a duplicate.
      if (options.signal?.aborted) {
        await this.ops.files.remove(tmp);
        throw new MailStoreError('ABORTED', `delivery to ${u.name} abandoned before it was stored: the client went away`);
      }
      const file = await this.ops.files.publish(tmp, inbox.dir, 'new', id, content.length, '', false);
      // The link into new/ and the index record are made durable at once, one fsync's wait instead of two (the lock
      // is held for both). Either order of the two reaching the disk is safe after a crash: a file in new/ that the
      // index lacks is indexed when the folder is read; a record whose file is not there is dropped as removed. The
      // message is reported stored only when both have.
      const [, entry] = await Promise.all([this.ops.files.syncDirs([path.join(inbox.dir, 'new')]), this.ops.add(inbox, 'new', file, content.length, '', [], options.internalDate ?? Date.now())]);
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
      const folder = await u.load(name);
      const file = await this.ops.files.store(folder.dir, 'cur', content, letters, internalDate);
      return toMessage(await this.ops.add(folder, 'cur', file, content.length, letters, keywords, internalDate ?? Date.now()));
    });
    this.emit({ type: 'exists', user: u.name, mailbox: name, message });
    return message;
  }

  async appendMany(user: string, mailbox: string, items: AppendItem[]): Promise<StoredMessage[]> {
    const u = await this.user(user);
    const name = normalizeName(mailbox);
    const messages = await u.mutex.run(async () => {
      const folder = await u.load(name);
      const added: Entry[] = [];
      try {
        for (const item of items) {
          const content = toCrlf(item.data);
          const { letters, keywords } = applyFlags('', [], item.flags ?? [], 'set');
          const file = await this.ops.files.store(folder.dir, 'cur', content, letters, item.internalDate);
          added.push(await this.ops.add(folder, 'cur', file, content.length, letters, keywords, item.internalDate ?? Date.now()));
        }
      } catch (err) {
        // Nobody has heard of these yet (the changes are published below, after the lock): take them back.
        if (added.length) await this.ops.remove(folder, added).catch(() => undefined);
        throw err;
      }
      return added.map(toMessage);
    });
    for (const message of messages) this.emit({ type: 'exists', user: u.name, mailbox: name, message });
    return messages;
  }

  async setFlags(user: string, mailbox: string, uids: number[], flags: string[], mode: FlagMode): Promise<StoredMessage[]> {
    const u = await this.user(user);
    const name = normalizeName(mailbox);
    const { result, changed } = await u.mutex.run(async () => {
      const folder = await u.load(name);
      const targets = uniqueExisting(folder, uids);
      const changed = await this.ops.setFlags(folder, targets, flags, mode);
      return { result: targets.map(toMessage), changed: changed.map(toMessage) };
    });
    for (const message of changed) this.emit({ type: 'flags', user: u.name, mailbox: name, message });
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
      const folder = await u.load(name);
      return this.ops.remove(folder, uniqueExisting(folder, uids));
    });
    if (removed.length) this.emit({ type: 'expunge', user: u.name, mailbox: name, uids: removed });
    return removed;
  }

  async expungedSince(user: string, mailbox: string, modseq: number): Promise<ExpungedSince> {
    const u = await this.user(user);
    const folder = await u.loaded(normalizeName(mailbox));
    const uids = new Set<number>();
    for (const e of folder.expunged) if (e.modseq > modseq) for (const uid of e.uids) uids.add(uid);
    return { uids: [...uids].sort((a, b) => a - b), complete: modseq >= folder.expungedFloor };
  }

  // ---- internals ----

  private async transfer(user: string, from: string, uids: number[], to: string, move: boolean): Promise<CopyResult> {
    const u = await this.user(user);
    const sourceName = normalizeName(from);
    const targetName = normalizeName(to);
    const { uidValidity, done } = await u.mutex.run(async () => {
      const source = await u.load(sourceName);
      const target = await u.load(targetName);
      return { uidValidity: target.uidValidity, done: await this.ops.transfer(source, target, uids, move) };
    });
    for (const entry of done.added) this.emit({ type: 'exists', user: u.name, mailbox: targetName, message: toMessage(entry) });
    if (done.expunged.length) this.emit({ type: 'expunge', user: u.name, mailbox: sourceName, uids: done.expunged });
    return { uidValidity, uids: done.added.map((e) => e.uid), sourceUids: done.sourceUids };
  }

  private emit(change: StoreChange) {
    for (const listener of this.listeners) {
      try {
        listener(change);
      } catch {
        // A listener's failure is its own business; the change happened.
      }
    }
  }

  /** The user's state, initialized (Maildir and default folders created) on first use. */
  private async user(user: string): Promise<UserMaildir> {
    const u = this.users.get(user.toLowerCase());
    if (!u) throw new MailStoreError('NOUSER', `no user ${user}`);
    await u.open();
    return u;
  }
}
