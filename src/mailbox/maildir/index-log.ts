// The per-folder index: UIDVALIDITY, the uid ↔ file map, modseqs and keywords (system flags are in the file names).
//
// The index file is a header line plus an append-only log of JSON records (a full rewrite on every change would
// make delivery cost grow with the size of the mailbox); it is compacted with an atomic durable rewrite when the
// log grows well beyond the number of live messages, or when a load finds it damaged. The in-memory Folder is
// the index as the store uses it: entries by UID, the next UID and the highest modseq.
import path from 'node:path';
import { writeFileDurable, type FileSystem } from '../../shared/fsutil.js';
import type { StoredMessage } from '../store-api.js';
import { isCode, type Sub } from './files.js';
import { flagsOf } from './flags.js';

export const INDEX_FILE = 'maillab-index';
const INDEX_VERSION = 1;
/** Compact the index log once it has this many more records than live messages (and twice as many). */
export const COMPACT_SLACK = 1000;

export interface Entry {
  uid: number;
  /** Base name, without the `:2,` info. */
  id: string;
  /** Sub-directory the file is in. */
  sub: Sub;
  /** File name within `sub` (base name plus info for files in cur/). */
  file: string;
  /** Info letters, sorted; letters we do not map (P, Dovecot keyword letters) are kept as they were. */
  letters: string;
  keywords: string[];
  size: number;
  internalDate: number;
  modseq: number;
}

export interface Folder {
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
  /** Expunges after expungedFloor, ascending by modseq, each with its UIDs (QRESYNC's VANISHED). */
  expunged: ExpungeEvent[];
  /** The history is complete after this modseq: what was expunged at or before it is not known. */
  expungedFloor: number;
}

export interface ExpungeEvent {
  modseq: number;
  /** Ascending. */
  uids: number[];
}

/** Expunged UIDs kept in the history (in memory and in the index header); older expunges raise the floor. */
export const EXPUNGE_HISTORY = 20000;

/** Index records, one JSON object a line: add, flags (keywords; system flags are in the file name), expunge. */
export type IndexRecord =
  | { a: number; id: string; d: number; m: number; k?: string[] }
  | { f: number; m: number; k?: string[] }
  | { x: number[]; m: number };

export interface IndexHeader {
  v: number;
  uidValidity: number;
  uidNext: number;
  modseq: number;
  /** The expunge history's floor (absent in older files: the header's modseq, that of the last compaction). */
  xfloor?: number;
  /** The expunge history up to the compaction: [modseq, ...uids] each. */
  xh?: number[][];
}

export interface IndexContents {
  header?: IndexHeader;
  known: Map<string, { uid: number; date: number; modseq: number; keywords: string[] }>;
  uidNext: number;
  modseq: number;
  records: number;
  expunged: ExpungeEvent[];
  expungedFloor: number;
  /** Unparsable lines or a torn last line: the file must be rewritten before anything is appended to it. */
  damaged: boolean;
}

/** The header of a folder with nothing in it yet. */
export function emptyHeader(uidValidity: number): IndexHeader {
  return { v: INDEX_VERSION, uidValidity, uidNext: 1, modseq: 1 };
}

/** Reads and writes index files durably; the in-memory Folder is updated by the caller. */
export class IndexLog {
  constructor(
    private readonly fs: FileSystem,
    private readonly sync: boolean,
  ) {}

  /** Writes the index of a new, empty folder. */
  async create(dir: string, uidValidity: number): Promise<void> {
    await writeFileDurable(path.join(dir, INDEX_FILE), JSON.stringify(emptyHeader(uidValidity)) + '\n', this.sync, this.fs);
  }

  async read(dir: string): Promise<IndexContents> {
    let text: string;
    try {
      text = await this.fs.readFile(path.join(dir, INDEX_FILE), 'utf8');
    } catch (err) {
      if (isCode(err, 'ENOENT')) return parseIndex('');
      throw err;
    }
    return parseIndex(text);
  }

  /** Rewrites the index with one record per live message (atomic + durable). */
  async compact(folder: Folder): Promise<void> {
    const header: IndexHeader = {
      v: INDEX_VERSION,
      uidValidity: folder.uidValidity,
      uidNext: folder.uidNext,
      modseq: folder.highestModseq,
      // The expunge history survives compaction: QRESYNC clients ask what vanished since their last modseq.
      xfloor: folder.expungedFloor,
      ...(folder.expunged.length ? { xh: folder.expunged.map((e) => [e.modseq, ...e.uids]) } : {}),
    };
    const lines = [JSON.stringify(header), ...folder.entries.map((e) => JSON.stringify(addRecord(e)))];
    await writeFileDurable(path.join(folder.dir, INDEX_FILE), lines.join('\n') + '\n', this.sync, this.fs);
    folder.logRecords = folder.entries.length;
  }

  /** Appends records to the folder's index log (fsynced); compacts when the log has grown too long. */
  async append(folder: Folder, records: IndexRecord[]): Promise<void> {
    if (needsCompaction(folder.logRecords + records.length, folder.entries.length)) return this.compact(folder);
    const handle = await this.fs.open(path.join(folder.dir, INDEX_FILE), 'a');
    try {
      await handle.write(records.map((r) => JSON.stringify(r) + '\n').join(''));
      if (this.sync) await handle.datasync();
    } finally {
      await handle.close();
    }
    folder.logRecords += records.length;
  }

  /** Drops entries whose files are already gone from the folder and the index; returns their UIDs, ascending. */
  async forget(folder: Folder, entries: Entry[]): Promise<number[]> {
    const uids = new Set(entries.map((e) => e.uid));
    folder.entries = folder.entries.filter((e) => !uids.has(e.uid));
    for (const uid of uids) folder.byUid.delete(uid);
    const modseq = ++folder.highestModseq;
    const list = [...uids].sort((a, b) => a - b);
    noteExpunged(folder, { modseq, uids: list });
    await this.append(folder, [{ x: list, m: modseq }]);
    return list;
  }
}

/** Adds an expunge to the folder's history, dropping the oldest (and raising the floor) beyond EXPUNGE_HISTORY UIDs. */
export function noteExpunged(folder: Pick<Folder, 'expunged' | 'expungedFloor'>, event: ExpungeEvent): void {
  if (!event.uids.length) return;
  const history = folder.expunged;
  // The count is kept beside the list, so that reading a long log stays linear.
  let kept = (historySize.get(history) ?? history.reduce((n, e) => n + e.uids.length, 0)) + event.uids.length;
  history.push(event);
  while (kept > EXPUNGE_HISTORY && history.length > 1) {
    const dropped = history.shift()!;
    kept -= dropped.uids.length;
    folder.expungedFloor = Math.max(folder.expungedFloor, dropped.modseq);
  }
  historySize.set(history, kept);
}

const historySize = new WeakMap<ExpungeEvent[], number>();

/** Whether a log of `records` records for `live` messages is long enough to be rewritten. */
export function needsCompaction(records: number, live: number): boolean {
  return records > COMPACT_SLACK + 2 * live;
}

export function parseIndex(text: string): IndexContents {
  const contents: IndexContents = { known: new Map(), uidNext: 1, modseq: 1, records: 0, expunged: [], expungedFloor: 0, damaged: false };
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
  const history = { expunged: [] as ExpungeEvent[], expungedFloor: Number(header.xfloor ?? header.modseq) || 1 };
  if (Array.isArray(header.xh)) {
    for (const [m, ...uids] of header.xh) if (typeof m === 'number') noteExpunged(history, { modseq: m, uids: uids.filter(Number.isInteger) });
  }
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
      if (Array.isArray(record.x)) noteExpunged(history, { modseq: record.m, uids: [...record.x].sort((a, b) => a - b) });
      for (const uid of record.x) {
        const id = idOf.get(uid);
        if (id !== undefined && contents.known.get(id)?.uid === uid) contents.known.delete(id);
      }
    }
  }
  // UIDs handed out are never handed out again, even those of messages gone since.
  contents.uidNext = Math.max(Number(header.uidNext) || 1, maxUid + 1);
  contents.modseq = modseq;
  contents.expunged = history.expunged;
  // A damaged log may have lost expunge records: nothing before now is known for sure.
  contents.expungedFloor = contents.damaged ? modseq : history.expungedFloor;
  return contents;
}

export function addRecord(e: Entry): IndexRecord {
  return { a: e.uid, id: e.id, d: e.internalDate, m: e.modseq, ...(e.keywords.length ? { k: e.keywords } : {}) };
}

export function flagsRecord(e: Entry): IndexRecord {
  return { f: e.uid, m: e.modseq, ...(e.keywords.length ? { k: e.keywords } : {}) };
}

/** Gives a new message the folder's next UID and adds it to the folder. */
export function addEntry(folder: Folder, fields: Omit<Entry, 'uid' | 'modseq'>, modseq: number): Entry {
  const entry: Entry = { ...fields, uid: folder.uidNext++, modseq };
  folder.entries.push(entry);
  folder.byUid.set(entry.uid, entry);
  return entry;
}

/** The existing entries for `uids`, in the order given, each once. */
export function uniqueExisting(folder: Folder, uids: number[]): Entry[] {
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

export function toMessage(e: Entry): StoredMessage {
  return { uid: e.uid, id: e.id, size: e.size, flags: flagsOf(e.letters, e.keywords), internalDate: e.internalDate, modseq: e.modseq };
}
