// The selected mailbox as one session sees it: its own message sequence numbers, and the store changes that
// still have to be announced (EXISTS/RECENT, FLAGS, EXPUNGE) at the points where RFC 3501 §7 allows them.
import type { StoreChange, StoredMessage } from '../store-api.js';

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
  flush(options: { expunge: boolean; condstore: boolean }): string[] {
    const lines: string[] = [];
    if (options.expunge && this.goneCount) {
      for (let i = this.entries.length - 1; i >= 0; i--) {
        if (!this.entries[i]!.gone) continue;
        lines.push(`${i + 1} EXPUNGE`);
        this.remove(i);
      }
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
    if (entry.gone) this.goneCount--;
    if (entry.recent) this.recentCount--;
  }
}
