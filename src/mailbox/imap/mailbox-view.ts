// The selected mailbox as one session sees it: its own message sequence numbers, and the store changes that
// still have to be announced (EXISTS/RECENT, FLAGS, EXPUNGE) at the points where RFC 3501 §7 allows them.
import type { StoreChange, StoredMessage } from '../store-api.js';
import { formatUidList } from './encode.js';
import { STAR, type SeqSet } from './parser.js';

export const SYSTEM_FLAGS = ['\\Answered', '\\Flagged', '\\Deleted', '\\Seen', '\\Draft'];

export interface ViewEntry {
  msg: StoredMessage;
  recent: boolean;
  /** Removed from the store; stays in the sequence map until EXPUNGE may be sent. */
  gone: boolean;
  /** The flags the client was last told about, to announce only real changes. */
  told: string;
}

const flagsKey = (m: StoredMessage) => m.flags.join(' ');

export class MailboxView {
  readonly entries: ViewEntry[] = [];
  private readonly byUid = new Map<number, ViewEntry>();
  /** Messages the client has not heard of yet (no EXISTS sent), ascending by UID. */
  private arrived: StoredMessage[] = [];
  private changed = new Set<number>();
  private goneCount = 0;
  private recentCount = 0;
  /** Keywords announced in FLAGS, and ones seen since (a new keyword means a new FLAGS response). */
  private keywords = new Set<string>();
  private newKeywords = new Set<string>();
  private early: StoreChange[] | undefined = [];
  uidNext = 1;
  highestModseq = 0;
  /**
   * While expunges wait to be announced: the highest modseq before the first of them. A QRESYNC client told of
   * later modseqs meanwhile is told this one as HIGHESTMODSEQ, so that it never resynchronizes past the expunge
   * (RFC 7162 §3.2).
   */
  modseqBeforeExpunge: number | undefined;
  /** Set when the mailbox disappeared under the session. */
  deleted = false;

  constructor(
    readonly name: string,
    readonly readOnly: boolean,
    readonly uidValidity: number,
    /** Claims a newly arrived message as \Recent for this session. */
    private readonly claimRecent: (uid: number) => boolean,
  ) {}

  /** Initial contents; changes that arrived while loading are then folded in without announcement. */
  load(messages: StoredMessage[], recent: Set<number>, uidNext: number, highestModseq: number): void {
    for (const msg of messages) this.add(msg, recent.has(msg.uid));
    this.uidNext = Math.max(uidNext, this.maxUid() + 1);
    this.highestModseq = messages.reduce((max, m) => Math.max(max, m.modseq), highestModseq);
    const early = this.early ?? [];
    this.early = undefined;
    for (const change of early) this.apply(change);
    this.flush({ expunge: true, condstore: false });
  }

  get exists(): number {
    return this.entries.length;
  }

  get recent(): number {
    return this.recentCount;
  }

  maxUid(): number {
    const last = this.arrived.length ? this.arrived[this.arrived.length - 1] : this.entries[this.entries.length - 1]?.msg;
    return last?.uid ?? 0;
  }

  byUidEntry(uid: number): ViewEntry | undefined {
    return this.byUid.get(uid);
  }

  seqOf(entry: ViewEntry): number {
    // Entries are ascending by UID: binary search.
    let lo = 0;
    let hi = this.entries.length - 1;
    while (lo <= hi) {
      const mid = (lo + hi) >> 1;
      const uid = this.entries[mid]!.msg.uid;
      if (uid === entry.msg.uid) return mid + 1;
      if (uid < entry.msg.uid) lo = mid + 1;
      else hi = mid - 1;
    }
    return 0;
  }

  /** Every UID the view holds, announced or not (gone ones too: the client has not been told), ascending. */
  knownUids(): number[] {
    return [...this.entries.map((e) => e.msg.uid), ...this.arrived.map((m) => m.uid)];
  }

  /** First index whose UID is >= uid. */
  lowerBound(uid: number): number {
    let lo = 0;
    let hi = this.entries.length;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (this.entries[mid]!.msg.uid < uid) lo = mid + 1;
      else hi = mid;
    }
    return lo;
  }

  /** Flags as the client sees them. */
  flagsOf(entry: ViewEntry): string[] {
    return entry.recent ? [...entry.msg.flags, '\\Recent'] : entry.msg.flags;
  }

  /** Records a store change; returns whether there is something to announce. */
  apply(change: StoreChange): boolean {
    if (this.early) {
      this.early.push(change);
      return false;
    }
    if (change.type === 'exists') {
      const msg = change.message;
      if (msg.uid <= this.maxUid()) return false;
      this.arrived.push(msg);
      this.uidNext = Math.max(this.uidNext, msg.uid + 1);
      this.highestModseq = Math.max(this.highestModseq, msg.modseq);
      return true;
    }
    if (change.type === 'flags') {
      const msg = change.message;
      this.highestModseq = Math.max(this.highestModseq, msg.modseq);
      const entry = this.byUid.get(msg.uid);
      if (entry) {
        if (entry.gone || msg.modseq < entry.msg.modseq) return false;
        entry.msg = msg;
        this.noteKeywords(msg);
        this.changed.add(msg.uid);
        return true;
      }
      const i = this.arrived.findIndex((m) => m.uid === msg.uid);
      if (i >= 0 && msg.modseq >= this.arrived[i]!.modseq) this.arrived[i] = msg;
      return false;
    }
    if (change.type === 'expunge') {
      let any = false;
      for (const uid of change.uids) {
        const entry = this.byUid.get(uid);
        if (entry && !entry.gone) {
          this.modseqBeforeExpunge ??= this.highestModseq;
          entry.gone = true;
          this.goneCount++;
          any = true;
        } else if (!entry) {
          // Never announced: it simply never appears.
          this.arrived = this.arrived.filter((m) => m.uid !== uid);
        }
      }
      return any;
    }
    return false;
  }

  /**
   * A FETCH response just showed the entry's flags: that is what the client knows now. Without this, flags that
   * changed and changed back while a FETCH was under way would never be announced (the client keeps the middle state).
   */
  shownFlags(entry: ViewEntry): void {
    entry.told = flagsKey(entry.msg);
  }

  /** A change this session made and reports itself (STORE, FETCH setting \Seen). */
  noteFlags(msg: StoredMessage): void {
    const entry = this.byUid.get(msg.uid);
    if (!entry || msg.modseq < entry.msg.modseq) return;
    entry.msg = msg;
    entry.told = flagsKey(msg);
    this.noteKeywords(msg);
    this.highestModseq = Math.max(this.highestModseq, msg.modseq);
  }

  /** Removes messages this session expunged or moved; returns their sequence numbers, highest first. */
  removeOwn(uids: number[]): number[] {
    const drop = new Set(uids);
    const seqs: number[] = [];
    for (let i = this.entries.length - 1; i >= 0; i--) {
      const entry = this.entries[i]!;
      if (!drop.has(entry.msg.uid)) continue;
      seqs.push(i + 1);
      this.remove(i);
    }
    return seqs;
  }

  /**
   * The untagged responses now due. EXPUNGE only when `expunge` (never during FETCH, STORE, SEARCH);
   * EXISTS/RECENT and flag changes always.
   */
  flush(options: { expunge: boolean; condstore: boolean; qresync?: boolean }): string[] {
    const lines: string[] = [];
    if (options.expunge && this.goneCount) {
      const vanished: number[] = [];
      for (let i = this.entries.length - 1; i >= 0; i--) {
        const entry = this.entries[i]!;
        if (!entry.gone) continue;
        // Once QRESYNC is enabled, VANISHED with UIDs replaces EXPUNGE (RFC 7162 §3.2.10).
        if (options.qresync) vanished.unshift(entry.msg.uid);
        else lines.push(`${i + 1} EXPUNGE`);
        this.remove(i);
      }
      if (vanished.length) lines.push(`VANISHED ${formatUidList(vanished)}`);
      this.modseqBeforeExpunge = undefined;
    }
    if (this.arrived.length) {
      for (const msg of this.arrived) this.add(msg, this.claimRecent(msg.uid));
      this.arrived = [];
      lines.push(`${this.entries.length} EXISTS`, `${this.recentCount} RECENT`);
    }
    lines.push(...this.keywordLines());
    for (const uid of this.changed) {
      const entry = this.byUid.get(uid);
      if (!entry || entry.gone || entry.told === flagsKey(entry.msg)) continue;
      entry.told = flagsKey(entry.msg);
      const modseq = options.condstore ? ` MODSEQ (${entry.msg.modseq})` : '';
      lines.push(`${this.seqOf(entry)} FETCH (UID ${uid} FLAGS (${this.flagsOf(entry).join(' ')})${modseq})`);
    }
    this.changed.clear();
    return lines;
  }

  /**
   * FLAGS and PERMANENTFLAGS when keywords the client has not been told of are in use (RFC 3501 §7.2.6): these
   * must reach the client before any FETCH that shows such a keyword.
   */
  keywordLines(): string[] {
    if (!this.newKeywords.size) return [];
    for (const k of this.newKeywords) this.keywords.add(k);
    this.newKeywords.clear();
    const lines = [`FLAGS (${this.flagsResponse()})`];
    if (!this.readOnly) lines.push(`OK [PERMANENTFLAGS (${this.flagsResponse()} \\*)] Flags permitted`);
    return lines;
  }

  /** System flags and the keywords in use, for FLAGS and PERMANENTFLAGS. */
  flagsResponse(): string {
    return [...SYSTEM_FLAGS, ...[...this.keywords].sort()].join(' ');
  }

  firstUnseen(): number {
    const i = this.entries.findIndex((e) => !e.msg.flags.includes('\\Seen'));
    return i + 1;
  }

  private noteKeywords(msg: StoredMessage): void {
    for (const f of msg.flags) if (!f.startsWith('\\') && !this.keywords.has(f)) this.newKeywords.add(f);
  }

  private add(msg: StoredMessage, recent: boolean): void {
    const entry: ViewEntry = { msg, recent, gone: false, told: flagsKey(msg) };
    this.entries.push(entry);
    this.byUid.set(msg.uid, entry);
    if (recent) this.recentCount++;
    this.noteKeywords(msg);
  }

  private remove(index: number): void {
    const [entry] = this.entries.splice(index, 1);
    if (!entry) return;
    this.byUid.delete(entry.msg.uid);
    if (entry.gone && --this.goneCount === 0) this.modseqBeforeExpunge = undefined;
    if (entry.recent) this.recentCount--;
  }
}

/** A UID set as sorted, disjoint ranges within 1..maxUid (`*` is maxUid). */
export function uidRanges(set: SeqSet, maxUid: number): Array<[number, number]> {
  const ranges = set
    .map(([a, b]): [number, number] => {
      const x = a === STAR ? maxUid : a;
      const y = b === STAR ? maxUid : b;
      return [Math.max(1, Math.min(x, y)), Math.min(Math.max(x, y), maxUid)];
    })
    .filter(([lo, hi]) => lo <= hi)
    .sort((p, q) => p[0] - q[0]);
  const merged: Array<[number, number]> = [];
  for (const r of ranges) {
    const top = merged[merged.length - 1];
    if (top && r[0] <= top[1] + 1) top[1] = Math.max(top[1], r[1]);
    else merged.push([r[0], r[1]]);
  }
  return merged;
}

/** The ranges without the given UIDs (ascending). */
export function subtractUids(ranges: Array<[number, number]>, uids: number[]): Array<[number, number]> {
  const out: Array<[number, number]> = [];
  let i = 0;
  for (const [lo, hi] of ranges) {
    let from = lo;
    while (i < uids.length && uids[i]! < lo) i++;
    while (i < uids.length && uids[i]! <= hi) {
      if (uids[i]! > from) out.push([from, uids[i]! - 1]);
      from = uids[i]! + 1;
      i++;
    }
    if (from <= hi) out.push([from, hi]);
  }
  return out;
}
