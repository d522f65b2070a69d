// One user's Maildir: the user file (subscriptions, special-use, the last UIDVALIDITY handed out), the set of
// folders and their directories, and loading a folder (its index reconciled with a scan of new/ and cur/).
//
// Layout under the data directory:
//   <address>/maillab-user.json          subscriptions, special-use, the last UIDVALIDITY handed out
//   <address>/Maildir/{cur,new,tmp}      INBOX
//   <address>/Maildir/.Sent/...          other folders; "a/b" is ".a.b", a "." or "%" in a name is %-escaped
//   <folder>/maillab-index               the folder's index (index-log.ts)
//
// Methods that change anything expect the caller to hold the user's mutex.
import path from 'node:path';
import { writeFileDurable } from '../../shared/fsutil.js';
import { MailStoreError, type MailboxInfo, type SpecialUse } from '../store-api.js';
import { baseOf, compareNames, isCode, lettersOf, sizeOf, type MaildirFiles, type Sub } from './files.js';
import { SEEN_LETTER } from './flags.js';
import { addEntry, emptyHeader, needsCompaction, noteExpunged, type Entry, type Folder, type IndexLog } from './index-log.js';
import { DEFAULT_MAILBOXES, MAX_FOLDER_DIR_BYTES, decodeFolderName, encodeFolderName } from './names.js';

const USER_FILE = 'maillab-user.json';

interface UserMeta {
  v: number;
  /** The default folders were created once; a user may delete them afterwards. */
  initialized: boolean;
  lastUidValidity: number;
  subscribed: string[];
  specialUse: Record<string, SpecialUse>;
}

/** A promise chain: run() calls are executed one at a time, in call order. */
export class Mutex {
  private tail: Promise<unknown> = Promise.resolve();
  run<T>(fn: () => Promise<T>): Promise<T> {
    const result = this.tail.then(fn);
    this.tail = result.catch(() => undefined);
    return result;
  }
}

export class UserMaildir {
  readonly mutex = new Mutex();
  readonly home: string;
  readonly maildir: string;
  maildropLocked = false;
  meta: UserMeta = { v: 1, initialized: false, lastUidValidity: 0, subscribed: [], specialUse: {} };
  /** Every existing mailbox by name, with its state once loaded. */
  mailboxes = new Map<string, Folder | undefined>();
  private ready?: Promise<void>;

  constructor(
    readonly name: string,
    root: string,
    readonly password: string,
    private readonly files: MaildirFiles,
    private readonly index: IndexLog,
  ) {
    this.home = path.join(root, name);
    this.maildir = path.join(this.home, 'Maildir');
  }

  /** The Maildir and the default folders, created (or checked) once; a failure is tried again next time. */
  open(): Promise<void> {
    if (!this.ready) {
      this.ready = this.mutex.run(() => this.init());
      this.ready.catch(() => (this.ready = undefined));
    }
    return this.ready;
  }

  private async init(): Promise<void> {
    const fs = this.files.fs;
    await this.files.ensureMaildir(this.maildir);
    try {
      const meta = JSON.parse(await fs.readFile(path.join(this.home, USER_FILE), 'utf8')) as Partial<UserMeta>;
      this.meta = {
        v: 1,
        initialized: !!meta.initialized,
        lastUidValidity: Number(meta.lastUidValidity) || 0,
        subscribed: Array.isArray(meta.subscribed) ? meta.subscribed.filter((s) => typeof s === 'string') : [],
        specialUse: meta.specialUse && typeof meta.specialUse === 'object' ? meta.specialUse : {},
      };
    } catch (err) {
      if (!isCode(err, 'ENOENT')) throw err;
    }
    this.mailboxes = new Map([['INBOX', undefined]]);
    for (const dirent of await fs.readdir(this.maildir, { withFileTypes: true })) {
      if (!dirent.isDirectory() || !dirent.name.startsWith('.')) continue;
      const name = decodeFolderName(dirent.name);
      if (name !== undefined && name !== 'INBOX') this.mailboxes.set(name, undefined);
    }
    if (!this.meta.initialized) {
      for (const [name, use] of DEFAULT_MAILBOXES) {
        if (!this.mailboxes.has(name)) await this.createFolder(name);
        this.meta.specialUse[name] = use;
      }
      this.meta.subscribed = [...new Set([...this.meta.subscribed, 'INBOX', ...DEFAULT_MAILBOXES.map(([name]) => name)])];
      this.meta.initialized = true;
      await this.saveMeta();
    }
    // Load INBOX now: its tmp/ is cleaned on load, and deliveries write there without holding the lock.
    await this.load('INBOX');
  }

  async saveMeta(): Promise<void> {
    await writeFileDurable(path.join(this.home, USER_FILE), JSON.stringify(this.meta, null, 1) + '\n', this.files.sync, this.files.fs);
  }

  /** A UIDVALIDITY never used before for this user (so a re-created or renamed mailbox never repeats one). */
  private async newUidValidity(): Promise<number> {
    const value = Math.max(Math.floor(Date.now() / 1000), this.meta.lastUidValidity + 1);
    this.meta.lastUidValidity = value;
    await this.saveMeta();
    return value;
  }

  folderDir(name: string): string {
    return name === 'INBOX' ? this.maildir : path.join(this.maildir, encodeFolderName(name));
  }

  /** fsync of the Maildir, so folder directories made, renamed or removed in it are durable. */
  async syncMaildir(): Promise<void> {
    await this.files.syncDirs([this.maildir]);
  }

  /** Creates a folder on disk with an empty index. */
  async createFolder(name: string): Promise<void> {
    const fs = this.files.fs;
    const dir = this.folderDir(name);
    if (Buffer.byteLength(path.basename(dir)) > MAX_FOLDER_DIR_BYTES) throw new MailStoreError('CANNOT', 'mailbox name too long');
    try {
      await fs.mkdir(dir);
    } catch (err) {
      if (!isCode(err, 'EEXIST')) throw err;
      // A directory we did not know of (left over from a crash, or made by hand): adopt it.
    }
    await this.files.ensureMaildir(dir);
    await fs.writeFile(path.join(dir, 'maildirfolder'), '');
    await this.index.create(dir, await this.newUidValidity());
    await this.syncMaildir();
    this.mailboxes.set(name, undefined);
  }

  /**
   * Removes a folder: out of sight first (one atomic rename), then its files. Inferiors stay (RFC 3501 §6.3.4).
   * Its subscription stays too: a server must not remove a name from the subscriptions on its own (RFC 3501
   * §6.3.6), and LIST (SUBSCRIBED) shows it as \NonExistent (RFC 5258 §3.1).
   */
  async deleteFolder(name: string): Promise<void> {
    const doomed = path.join(this.home, `deleted-${Date.now()}-${Math.random().toString(36).slice(2)}`);
    await this.files.fs.rename(this.folderDir(name), doomed);
    await this.syncMaildir();
    this.mailboxes.delete(name);
    delete this.meta.specialUse[name];
    await this.saveMeta();
    await this.files.fs.rm(doomed, { recursive: true, force: true });
  }

  /**
   * Renames folders, each `[from, to]`; their subscriptions and special uses follow. Each keeps its UIDVALIDITY,
   * which is unique for the user, so no name ever shows a UIDVALIDITY it had before with other contents.
   */
  async renameFolders(renames: Array<[string, string]>): Promise<void> {
    for (const [oldName, newName] of renames) {
      await this.files.fs.rename(this.folderDir(oldName), this.folderDir(newName));
      const folder = this.mailboxes.get(oldName);
      this.mailboxes.delete(oldName);
      if (folder) {
        folder.name = newName;
        folder.dir = this.folderDir(newName);
      }
      this.mailboxes.set(newName, folder);
      const use = this.meta.specialUse[oldName];
      if (use) {
        delete this.meta.specialUse[oldName];
        this.meta.specialUse[newName] = use;
      }
      // The new name may be subscribed already (a deleted mailbox keeps its subscription): keep it once.
      this.meta.subscribed = [...new Set(this.meta.subscribed.map((s) => (s === oldName ? newName : s)))];
    }
    await this.syncMaildir();
    await this.saveMeta();
  }

  info(folder: Folder): MailboxInfo {
    let unseen = 0;
    for (const entry of folder.entries) if (!entry.letters.includes(SEEN_LETTER)) unseen++;
    const specialUse = this.meta.specialUse[folder.name];
    return {
      name: folder.name,
      uidValidity: folder.uidValidity,
      uidNext: folder.uidNext,
      highestModseq: folder.highestModseq,
      ...(specialUse ? { specialUse } : {}),
      subscribed: this.meta.subscribed.includes(folder.name),
      exists: folder.entries.length,
      unseen,
    };
  }

  /** The loaded folder, loading it under the lock when needed. */
  async loaded(name: string): Promise<Folder> {
    const folder = this.mailboxes.get(name);
    if (folder) return folder;
    if (!this.mailboxes.has(name)) throw new MailStoreError('NONEXISTENT', `no mailbox ${name}`);
    return this.mutex.run(() => this.load(name));
  }

  /** Loads a folder: index file + directory scan, reconciled. Caller holds the lock. */
  async load(name: string): Promise<Folder> {
    const cached = this.mailboxes.get(name);
    if (cached) return cached;
    if (!this.mailboxes.has(name)) throw new MailStoreError('NONEXISTENT', `no mailbox ${name}`);
    const fs = this.files.fs;
    const dir = this.folderDir(name);
    await this.files.ensureMaildir(dir);
    // Anything in tmp/ is a write that never completed: nothing else writes here, and every writer loads the
    // folder before writing.
    await this.files.cleanTmp(dir);

    const index = await this.index.read(dir);
    let rewrite = index.damaged || !index.header;
    const header = index.header ?? emptyHeader(await this.newUidValidity());
    const folder: Folder = {
      name,
      dir,
      uidValidity: header.uidValidity,
      uidNext: index.uidNext,
      highestModseq: index.modseq,
      entries: [],
      byUid: new Map(),
      logRecords: index.records,
      expunged: index.expunged,
      expungedFloor: index.expungedFloor,
    };

    const unknown: Array<{ sub: Sub; file: string }> = [];
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
      // Files removed behind our back (or a crash between unlink and index update): a change for CONDSTORE, and an
      // expunge for QRESYNC (kept by the compaction below).
      folder.highestModseq++;
      const vanished = [...index.known.values()].map((k) => k.uid).filter((uid) => !folder.byUid.has(uid));
      noteExpunged(folder, { modseq: folder.highestModseq, uids: vanished.sort((a, b) => a - b) });
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
        addEntry(folder, { id, sub, file, letters: lettersOf(file), keywords: [], size: sizeOf(id) ?? stat.size, internalDate: stat.mtimeMs }, modseq);
      }
      rewrite = true;
    }
    if (rewrite || needsCompaction(folder.logRecords, folder.entries.length)) await this.index.compact(folder);
    this.mailboxes.set(name, folder);
    return folder;
  }
}
