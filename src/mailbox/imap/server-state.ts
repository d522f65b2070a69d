// State shared by all sessions of one IMAP server: who has seen which messages as \Recent, and parsed messages.
import type { MailStore } from '../store-api.js';
import { parseMessage, type MimeNode } from './mime.js';

/**
 * \Recent (RFC 3501 §2.3.2): a message is recent in the first session that sees it. The store has no such
 * state, so it lives here: per mailbox, the lowest UID not yet claimed by any session.
 */
export class RecentRegistry {
  private readonly marks = new Map<string, { uidValidity: number; next: number }>();

  private entry(user: string, mailbox: string, uidValidity: number) {
    const key = `${user}\0${mailbox}`;
    let e = this.marks.get(key);
    if (!e || e.uidValidity !== uidValidity) {
      e = { uidValidity, next: 0 };
      this.marks.set(key, e);
    }
    return e;
  }

  /** The UIDs recent for a session selecting the mailbox; a read-write session claims them. */
  select(user: string, mailbox: string, uidValidity: number, uids: number[], claim: boolean): Set<number> {
    const e = this.entry(user, mailbox, uidValidity);
    const recent = new Set(uids.filter((u) => u >= e.next));
    if (claim && uids.length) e.next = Math.max(e.next, uids[uids.length - 1]! + 1);
    return recent;
  }

  /** A message that arrived while selected: recent here if no other session claimed it first. */
  claim(user: string, mailbox: string, uidValidity: number, uid: number, readOnly: boolean): boolean {
    const e = this.entry(user, mailbox, uidValidity);
    if (uid < e.next) return false;
    if (!readOnly) e.next = uid + 1;
    return true;
  }

  count(user: string, mailbox: string, uidValidity: number, uids: number[]): number {
    const e = this.entry(user, mailbox, uidValidity);
    return uids.filter((u) => u >= e.next).length;
  }
}

/**
 * Parsed structures (small) and raw messages (bounded in bytes) by user, mailbox, UIDVALIDITY and UID:
 * a UID names the same octets for as long as the UIDVALIDITY holds.
 */
export class MessageCache {
  private readonly trees = new Map<string, MimeNode>();
  private readonly raws = new Map<string, Buffer>();
  private rawBytes = 0;

  constructor(
    private readonly store: MailStore,
    private readonly maxTrees = 5000,
    private readonly maxRawBytes = 32 * 1024 * 1024,
  ) {}

  async get(user: string, mailbox: string, uidValidity: number, uid: number, needRaw: boolean): Promise<{ raw?: Buffer; tree: MimeNode }> {
    const key = `${user}\0${mailbox}\0${uidValidity}\0${uid}`;
    let tree = touch(this.trees, key);
    let raw = touch(this.raws, key);
    if (tree && (raw || !needRaw)) return raw ? { raw, tree } : { tree };
    if (!raw) {
      raw = await this.store.read(user, mailbox, uid);
      this.putRaw(key, raw);
    }
    if (!tree) {
      tree = parseMessage(raw);
      this.trees.set(key, tree);
      if (this.trees.size > this.maxTrees) this.trees.delete(this.trees.keys().next().value!);
    }
    return { raw, tree };
  }

  /** The parsed structure if it is cached, without reading anything. */
  peekTree(user: string, mailbox: string, uidValidity: number, uid: number): MimeNode | undefined {
    return this.trees.get(`${user}\0${mailbox}\0${uidValidity}\0${uid}`);
  }

  private putRaw(key: string, raw: Buffer): void {
    if (raw.length > this.maxRawBytes / 8) return;
    this.raws.set(key, raw);
    this.rawBytes += raw.length;
    for (const [k, v] of this.raws) {
      if (this.rawBytes <= this.maxRawBytes) break;
      this.raws.delete(k);
      this.rawBytes -= v.length;
    }
  }
}

/** Map lookup that marks the entry as most recently used (Maps iterate in insertion order). */
function touch<V>(map: Map<string, V>, key: string): V | undefined {
  const v = map.get(key);
  if (v !== undefined) {
    map.delete(key);
    map.set(key, v);
  }
  return v;
}
