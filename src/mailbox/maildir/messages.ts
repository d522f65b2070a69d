// Changes to the messages of loaded folders: new messages, flag changes, copies, moves and removals, each made
// on disk (files.ts) and then recorded in the index (index-log.ts). The caller holds the user's mutex and
// publishes the changes.
import path from 'node:path';
import type { FileSystem } from '../../shared/fsutil.js';
import type { FlagMode } from '../store-api.js';
import { baseOf, withInfo, type MaildirFiles, type Sub } from './files.js';
import { applyFlags, sameKeywords } from './flags.js';
import { addEntry, addRecord, flagsRecord, uniqueExisting, type Entry, type Folder, type IndexLog } from './index-log.js';

export interface Transferred {
  /** The new entries in the target, in the order of the source UIDs given. */
  added: Entry[];
  /** The source UIDs copied or moved, pairwise with `added`. */
  sourceUids: number[];
  /** Source UIDs that are gone from the source (a move). */
  expunged: number[];
}

export function filePath(folder: Folder, entry: Entry): string {
  return path.join(folder.dir, entry.sub, entry.file);
}

export class MessageOps {
  readonly fs: FileSystem;

  constructor(
    readonly files: MaildirFiles,
    private readonly index: IndexLog,
  ) {
    this.fs = files.fs;
  }

  /** Records a message file already in place in `folder`/`sub` under the next UID. */
  async add(folder: Folder, sub: Sub, file: string, size: number, letters: string, keywords: string[], internalDate: number): Promise<Entry> {
    const entry = addEntry(folder, { id: baseOf(file), sub, file, letters, keywords, size, internalDate }, ++folder.highestModseq);
    await this.index.append(folder, [addRecord(entry)]);
    return entry;
  }

  /** Changes the flags of `uids`; returns the entries changed (one new modseq for all of them). */
  async setFlags(folder: Folder, targets: Entry[], flags: string[], mode: FlagMode): Promise<Entry[]> {
    const changed: Entry[] = [];
    const dirty = new Set<string>();
    let modseq = 0;
    try {
      for (const entry of targets) {
        const next = applyFlags(entry.letters, entry.keywords, flags, mode);
        const lettersChanged = next.letters !== entry.letters;
        if (!lettersChanged && sameKeywords(next.keywords, entry.keywords)) continue;
        if (lettersChanged) {
          // A message with flags belongs in cur/ (a message in new/ has not been seen by any client yet).
          const file = withInfo(entry.id, next.letters);
          await this.files.fs.rename(filePath(folder, entry), path.join(folder.dir, 'cur', file));
          dirty.add(path.join(folder.dir, entry.sub)).add(path.join(folder.dir, 'cur'));
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
      await this.files.syncDirs(dirty);
      if (changed.length) await this.index.append(folder, changed.map(flagsRecord));
    }
    return changed;
  }

  /**
   * Copies or moves `uids` from `source` to `target`. Between folders a move is a rename: atomic, and the message
   * keeps its file name (and Maildir id). Within one folder it is a copy plus removal of the originals, as the
   * copies need new UIDs (RFC 6851 §3.3).
   */
  async transfer(source: Folder, target: Folder, uids: number[], move: boolean): Promise<Transferred> {
    const rename = move && source !== target;
    const added: Entry[] = [];
    const sourceUids: number[] = [];
    let expunged: number[] = [];
    const dirty = new Set<string>();
    const moved: Entry[] = [];
    let modseq = 0;
    try {
      for (const entry of uniqueExisting(source, uids)) {
        let sub = entry.sub;
        let file = entry.file;
        if (rename) {
          if (!(await this.files.move(filePath(source, entry), path.join(target.dir, sub, file)))) continue;
          dirty.add(path.join(source.dir, sub)).add(path.join(target.dir, sub));
          moved.push(entry);
        } else {
          sub = 'cur';
          file = await this.files.copyInto(filePath(source, entry), target.dir, entry.size, entry.letters, entry.internalDate);
          if (!file) continue;
          dirty.add(path.join(target.dir, sub));
        }
        if (!modseq) modseq = ++target.highestModseq;
        added.push(addEntry(target, { ...entry, id: baseOf(file), sub, file, keywords: [...entry.keywords] }, modseq));
        sourceUids.push(entry.uid);
      }
    } finally {
      // Record whatever was done, even when a later message failed.
      await this.files.syncDirs(dirty);
      if (added.length) await this.index.append(target, added.map(addRecord));
      if (moved.length) expunged = await this.index.forget(source, moved);
    }
    if (move && !rename && sourceUids.length) expunged = await this.remove(source, uniqueExisting(source, sourceUids));
    return { added, sourceUids, expunged };
  }

  /** Unlinks the files of `entries` and forgets them; returns their UIDs, ascending. */
  async remove(folder: Folder, entries: Entry[]): Promise<number[]> {
    const gone: Entry[] = [];
    const dirty = new Set<string>();
    let removed: number[] = [];
    try {
      for (const entry of entries) {
        await this.files.remove(filePath(folder, entry));
        dirty.add(path.join(folder.dir, entry.sub));
        gone.push(entry);
      }
    } finally {
      await this.files.syncDirs(dirty);
      if (gone.length) removed = await this.index.forget(folder, gone);
    }
    return removed;
  }

  /** Moves every message of INBOX into `target`, keeping file names and flags (RENAME INBOX, RFC 3501 §6.3.5). */
  async emptyInbox(inbox: Folder, target: Folder): Promise<number[]> {
    const moved: Entry[] = [];
    const added: Entry[] = [];
    let modseq = 0;
    try {
      for (const entry of [...inbox.entries]) {
        if (!(await this.files.move(filePath(inbox, entry), path.join(target.dir, entry.sub, entry.file)))) continue;
        moved.push(entry);
        if (!modseq) modseq = ++target.highestModseq;
        added.push(addEntry(target, { ...entry, keywords: [...entry.keywords] }, modseq));
      }
    } finally {
      await this.files.syncDirs([inbox.dir, target.dir].flatMap((dir) => ['new', 'cur'].map((sub) => path.join(dir, sub))));
      if (added.length) await this.index.append(target, added.map(addRecord));
    }
    return moved.length ? this.index.forget(inbox, moved) : [];
  }
}
