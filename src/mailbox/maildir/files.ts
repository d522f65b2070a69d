// Maildir message files: unique names, the tmp/ → new/ (or cur/) write with fsync, the `:2,` info suffix, and
// the renames, links and unlinks the store makes; every file operation goes through the injected FileSystem.
//
// Message files are `<time>.<pid>_<counter>.<host>,S=<size>[:2,<flags>]`, CRLF line endings. A message is
// complete when it appears in new/ or cur/: it is written and fsynced in tmp/ first, then hard-linked into place
// (link never replaces a file, unlike rename) and the directory is fsynced.
import os from 'node:os';
import path from 'node:path';
import { syncDir, type FileSystem } from '../../shared/fsutil.js';

export type Sub = 'new' | 'cur';
export const SUBDIRS = ['cur', 'new', 'tmp'] as const;

/** Errors of link() that mean "no hard links here", so a copy falls back to writing the data again. */
const NO_LINK = ['EXDEV', 'EPERM', 'EMLINK', 'ENOTSUP'];
/** Attempts at a fresh name when link() finds the name taken (another process, a clock step). */
const LINK_ATTEMPTS = 6;

let fileCounter = 0;

export class MaildirFiles {
  /** Host name as it appears in file names. */
  readonly host: string;

  constructor(
    readonly fs: FileSystem,
    /** fsync files and directories before a change is reported done. */
    readonly sync: boolean,
    hostname = os.hostname(),
  ) {
    // File names must not contain "/" or ":" (the info separator), and we parse ",S=", so escape those (and
    // anything unusual) the way the Maildir spec suggests, as octal.
    this.host = hostname.replace(/[^A-Za-z0-9.-]/g, (c) => '\\' + c.charCodeAt(0).toString(8).padStart(3, '0'));
  }

  /** A new unique base name for a message of `size` octets. */
  newId(size: number): string {
    return `${Math.floor(Date.now() / 1000)}.${process.pid}_${++fileCounter}.${this.host},S=${size}`;
  }

  /** Creates `dir` with its cur/, new/ and tmp/ (no error when they exist). */
  async ensureMaildir(dir: string): Promise<void> {
    for (const sub of SUBDIRS) await this.fs.mkdir(path.join(dir, sub), { recursive: true });
  }

  /** Removes everything in tmp/: a write that never completed (the store is the only writer). */
  async cleanTmp(dir: string): Promise<void> {
    const tmp = path.join(dir, 'tmp');
    for (const file of await this.fs.readdir(tmp)) await this.fs.rm(path.join(tmp, file), { recursive: true, force: true });
  }

  /**
   * Stores a new message in `dir`/`sub` durably: written and synced in tmp/, linked into place, the directory
   * synced. Files in new/ carry no info suffix; in cur/ they get `:2,<letters>`. Returns the file name.
   */
  async store(dir: string, sub: Sub, content: Buffer, letters: string, internalDate?: number): Promise<string> {
    const { id, tmp } = await this.writeTmp(dir, content, internalDate);
    return this.publish(tmp, dir, sub, id, content.length, letters);
  }

  /** Writes a new message into `dir`/tmp (fsynced); its mtime is the internal date. */
  async writeTmp(dir: string, content: Buffer, internalDate?: number): Promise<{ id: string; tmp: string }> {
    const id = this.newId(content.length);
    const tmp = path.join(dir, 'tmp', id);
    const handle = await this.fs.open(tmp, 'wx');
    try {
      await handle.writeFile(content);
      if (internalDate !== undefined) await handle.utimes(new Date(internalDate), new Date(internalDate));
      if (this.sync) await handle.sync();
    } catch (err) {
      await handle.close().catch(() => undefined);
      await this.fs.unlink(tmp).catch(() => undefined);
      throw err;
    }
    await handle.close();
    return { id, tmp };
  }

  /**
   * Links a file written by writeTmp() into `dir`/`sub`, removes it from tmp/, syncs `sub` (unless `syncSub` is false:
   * the caller then syncs it itself, with syncDirs, before it reports the message stored).
   */
  async publish(tmp: string, dir: string, sub: Sub, id: string, size: number, letters: string, syncSub = true): Promise<string> {
    let file: string;
    try {
      file = await this.linkUnique(tmp, path.join(dir, sub), id, size, letters);
    } finally {
      await this.fs.unlink(tmp).catch(() => undefined);
    }
    if (this.sync && syncSub) await syncDir(path.join(dir, sub), this.fs);
    return file;
  }

  /** link() never replaces an existing file: should the name be taken after all, pick another one. */
  private async linkUnique(tmp: string, dir: string, id: string, size: number, letters: string): Promise<string> {
    const inNew = path.basename(dir) === 'new';
    for (let attempt = 0; ; attempt++) {
      const base = attempt === 0 ? id : this.newId(size);
      const file = inNew ? base : withInfo(base, letters);
      try {
        await this.fs.link(tmp, path.join(dir, file));
        return file;
      } catch (err) {
        if (!isCode(err, 'EEXIST') || attempt + 1 >= LINK_ATTEMPTS) throw err;
      }
    }
  }

  /**
   * Copies the message file `from` into `dir`/cur under a new name: a hard link when possible (the content never
   * changes, flags are in the name), else a real copy through tmp/. Returns the new file name, '' when the source
   * is gone. The caller syncs `dir`/cur.
   */
  async copyInto(from: string, dir: string, size: number, letters: string, internalDate: number): Promise<string> {
    const id = this.newId(size);
    const file = withInfo(id, letters);
    try {
      await this.fs.link(from, path.join(dir, 'cur', file));
      return file;
    } catch (err) {
      if (isCode(err, 'ENOENT')) return '';
      if (!NO_LINK.some((code) => isCode(err, code))) throw err;
    }
    const tmp = path.join(dir, 'tmp', id);
    try {
      await this.fs.copyFile(from, tmp);
      if (this.sync) {
        const handle = await this.fs.open(tmp, 'r+');
        await handle.sync().finally(() => handle.close());
      }
      await this.fs.utimes(tmp, new Date(internalDate), new Date(internalDate));
      await this.fs.rename(tmp, path.join(dir, 'cur', file));
      return file;
    } catch (err) {
      await this.fs.unlink(tmp).catch(() => undefined);
      if (isCode(err, 'ENOENT')) return '';
      throw err;
    }
  }

  /** Renames a message file; false when the source is gone (removed by another command). */
  async move(from: string, to: string): Promise<boolean> {
    try {
      await this.fs.rename(from, to);
      return true;
    } catch (err) {
      if (isCode(err, 'ENOENT')) return false;
      throw err;
    }
  }

  /** Unlinks a message file; one already gone is fine. */
  async remove(file: string): Promise<void> {
    try {
      await this.fs.unlink(file);
    } catch (err) {
      if (!isCode(err, 'ENOENT')) throw err;
    }
  }

  /** fsyncs each directory (when syncing at all), so renames, links and unlinks in them are durable. */
  async syncDirs(dirs: Iterable<string>): Promise<void> {
    if (this.sync) for (const dir of dirs) await syncDir(dir, this.fs);
  }
}

/** A file name in cur/: the base name with the `:2,` info of its flag letters. */
export function withInfo(base: string, letters: string): string {
  return `${base}:2,${letters}`;
}

/** The base name (unique id) of a message file, without its info. */
export function baseOf(file: string): string {
  const colon = file.indexOf(':');
  return colon >= 0 ? file.slice(0, colon) : file;
}

/** The flag letters of a message file, sorted; '' when it has no `:2,` info. */
export function lettersOf(file: string): string {
  const info = file.indexOf(':2,');
  return info >= 0 ? [...file.slice(info + 3)].sort().join('') : '';
}

/** The size in the `,S=` field of a base name, when there is one. */
export function sizeOf(id: string): number | undefined {
  const match = /,S=(\d+)/.exec(id);
  return match ? Number(match[1]) : undefined;
}

/** Orders Maildir names by their leading time, then as text. */
export function compareNames(a: string, b: string): number {
  const ta = parseFloat(a);
  const tb = parseFloat(b);
  if (ta !== tb && !Number.isNaN(ta) && !Number.isNaN(tb)) return ta - tb;
  return a < b ? -1 : a > b ? 1 : 0;
}

export function isCode(err: unknown, code: string): boolean {
  return typeof err === 'object' && err !== null && (err as NodeJS.ErrnoException).code === code;
}
