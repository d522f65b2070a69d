// An in-memory MailStore for the IMAP tests: the contract of store-api.ts without any disk.
import { MailStoreError, type AppendItem, type CopyResult, type DeliverOptions, type ExpungedSince, type FlagMode, type MailboxInfo, type MailStore, type SpecialUse, type StoreChange, type StoredMessage } from '../store-api.js';

interface Mailbox {
  uidValidity: number;
  uidNext: number;
  highestModseq: number;
  specialUse?: SpecialUse;
  messages: Array<{ meta: StoredMessage; data: Buffer }>;
  /** Every expunge with its modseq (a test store keeps all of its history). */
  expunged: Array<{ uids: number[]; modseq: number }>;
}

const SPECIAL: Array<[string, SpecialUse]> = [['Sent', '\\Sent'], ['Drafts', '\\Drafts'], ['Trash', '\\Trash'], ['Junk', '\\Junk']];

let validity = 1000;
let ids = 0;

export class MemoryStore implements MailStore {
  /** Subscriptions are names, kept when a mailbox is deleted (RFC 3501 §6.3.6), and follow a rename. */
  private readonly users = new Map<string, { password: string; mailboxes: Map<string, Mailbox>; subscribed: Set<string> }>();
  private readonly listeners = new Set<(c: StoreChange) => void>();
  private readonly locks = new Set<string>();

  constructor(users: Array<{ address: string; password: string }>) {
    for (const u of users) {
      const mailboxes = new Map<string, Mailbox>();
      this.users.set(u.address.toLowerCase(), { password: u.password, mailboxes, subscribed: new Set(['INBOX', ...SPECIAL.map(([name]) => name)]) });
      mailboxes.set('INBOX', newMailbox(undefined));
      for (const [name, use] of SPECIAL) mailboxes.set(name, newMailbox(use));
    }
  }

  resolveUser(login: string): string | undefined {
    const l = login.toLowerCase();
    if (this.users.has(l)) return l;
    const matches = [...this.users.keys()].filter((a) => a.split('@')[0] === l);
    return matches.length === 1 ? matches[0] : undefined;
  }

  authenticate(login: string, password: string): string | undefined {
    const user = this.resolveUser(login);
    return user && this.users.get(user)!.password === password ? user : undefined;
  }

  hasUser(address: string): boolean {
    return this.users.has(address.toLowerCase());
  }

  async deliver(user: string, data: Buffer, options?: DeliverOptions): Promise<StoredMessage> {
    if (options?.signal?.aborted) throw new MailStoreError('ABORTED', 'delivery abandoned: the client went away');
    return this.append(user, 'INBOX', data, [], options?.internalDate);
  }

  async listMailboxes(user: string): Promise<MailboxInfo[]> {
    return [...this.user(user).mailboxes.keys()].map((name) => this.info(user, name));
  }

  async mailboxInfo(user: string, mailbox: string): Promise<MailboxInfo> {
    return this.info(user, mailbox);
  }

  async createMailbox(user: string, mailbox: string, specialUse?: SpecialUse): Promise<void> {
    const boxes = this.user(user).mailboxes;
    if (boxes.has(mailbox)) throw new MailStoreError('ALREADYEXISTS', `mailbox ${mailbox} exists`);
    const levels = mailbox.split('/');
    for (let i = 1; i < levels.length; i++) {
      const parent = levels.slice(0, i).join('/');
      if (!boxes.has(parent)) boxes.set(parent, newMailbox(undefined));
    }
    boxes.set(mailbox, newMailbox(specialUse));
    this.emit({ type: 'mailboxes', user });
  }

  async deleteMailbox(user: string, mailbox: string): Promise<void> {
    if (mailbox === 'INBOX') throw new MailStoreError('CANNOT', 'cannot delete INBOX');
    this.box(user, mailbox);
    this.user(user).mailboxes.delete(mailbox);
    this.emit({ type: 'mailboxes', user });
  }

  async renameMailbox(user: string, from: string, to: string): Promise<void> {
    const boxes = this.user(user).mailboxes;
    if (boxes.has(to)) throw new MailStoreError('ALREADYEXISTS', `mailbox ${to} exists`);
    if (from === 'INBOX') {
      await this.createMailbox(user, to);
      await this.move(user, 'INBOX', (await this.messages(user, 'INBOX')).map((m) => m.uid), to);
      return;
    }
    const subscribed = this.user(user).subscribed;
    for (const [name, box] of [...boxes]) {
      if (name === from || name.startsWith(from + '/')) {
        boxes.delete(name);
        boxes.set(to + name.slice(from.length), box);
        if (subscribed.delete(name)) subscribed.add(to + name.slice(from.length));
      }
    }
    this.emit({ type: 'mailboxes', user });
  }

  async setSubscribed(user: string, mailbox: string, subscribed: boolean): Promise<void> {
    const set = this.user(user).subscribed;
    if (subscribed) set.add(mailbox);
    else set.delete(mailbox);
  }

  async subscriptions(user: string): Promise<string[]> {
    return [...this.user(user).subscribed].sort();
  }

  async messages(user: string, mailbox: string): Promise<StoredMessage[]> {
    return this.box(user, mailbox).messages.map((m) => ({ ...m.meta, flags: [...m.meta.flags] }));
  }

  async read(user: string, mailbox: string, uid: number): Promise<Buffer> {
    const m = this.box(user, mailbox).messages.find((x) => x.meta.uid === uid);
    if (!m) throw new Error(`no message ${uid}`);
    return m.data;
  }

  async appendMany(user: string, mailbox: string, items: AppendItem[]): Promise<StoredMessage[]> {
    // As the Maildir store: one change, announced after the last message is in; on a failure nothing stays.
    const box = this.box(user, mailbox);
    const before = { uidNext: box.uidNext, highestModseq: box.highestModseq, count: box.messages.length };
    const held: StoreChange[] = [];
    this.held = held;
    const out: StoredMessage[] = [];
    try {
      for (const item of items) out.push(await this.append(user, mailbox, item.data, item.flags ?? [], item.internalDate));
    } catch (err) {
      box.messages.length = before.count;
      Object.assign(box, { uidNext: before.uidNext, highestModseq: before.highestModseq });
      throw err;
    } finally {
      this.held = undefined;
    }
    for (const change of held) this.emit(change);
    return out;
  }

  async append(user: string, mailbox: string, data: Buffer, flags: string[] = [], internalDate?: number): Promise<StoredMessage> {
    const box = this.box(user, mailbox);
    const meta: StoredMessage = {
      uid: box.uidNext++,
      id: `m${++ids}`,
      size: data.length,
      flags: canonicalOrder([...new Set(flags)]),
      internalDate: internalDate ?? Date.now(),
      modseq: ++box.highestModseq,
    };
    box.messages.push({ meta, data });
    this.emit({ type: 'exists', user, mailbox, message: { ...meta, flags: [...meta.flags] } });
    return meta;
  }

  async setFlags(user: string, mailbox: string, uids: number[], flags: string[], mode: FlagMode): Promise<StoredMessage[]> {
    const box = this.box(user, mailbox);
    const out: StoredMessage[] = [];
    for (const uid of uids) {
      const m = box.messages.find((x) => x.meta.uid === uid);
      if (!m) continue;
      const before = m.meta.flags.join(' ');
      let next = mode === 'set' ? [...flags] : mode === 'add' ? [...m.meta.flags, ...flags.filter((f) => !m.meta.flags.includes(f))] : m.meta.flags.filter((f) => !flags.includes(f));
      next = canonicalOrder([...new Set(next)]);
      if (next.join(' ') !== before) {
        m.meta.flags = next;
        m.meta.modseq = ++box.highestModseq;
        this.emit({ type: 'flags', user, mailbox, message: { ...m.meta, flags: [...next] } });
      }
      out.push({ ...m.meta, flags: [...m.meta.flags] });
    }
    return out;
  }

  async copy(user: string, from: string, uids: number[], to: string): Promise<CopyResult> {
    const src = this.box(user, from);
    const dst = this.box(user, to);
    const out: number[] = [];
    const sourceUids: number[] = [];
    for (const uid of uids) {
      const m = src.messages.find((x) => x.meta.uid === uid);
      if (!m) continue;
      const copy = await this.append(user, to, m.data, m.meta.flags, m.meta.internalDate);
      out.push(copy.uid);
      sourceUids.push(uid);
    }
    return { uidValidity: dst.uidValidity, uids: out, sourceUids };
  }

  async move(user: string, from: string, uids: number[], to: string): Promise<CopyResult> {
    const result = await this.copy(user, from, uids, to);
    await this.remove(user, from, result.sourceUids!);
    return result;
  }

  async remove(user: string, mailbox: string, uids: number[]): Promise<number[]> {
    const box = this.box(user, mailbox);
    const removed = box.messages.filter((m) => uids.includes(m.meta.uid)).map((m) => m.meta.uid);
    box.messages = box.messages.filter((m) => !removed.includes(m.meta.uid));
    if (removed.length) {
      box.expunged.push({ uids: [...removed].sort((a, b) => a - b), modseq: ++box.highestModseq });
      this.emit({ type: 'expunge', user, mailbox, uids: removed });
    }
    return removed;
  }

  async expungedSince(user: string, mailbox: string, modseq: number): Promise<ExpungedSince> {
    const box = this.box(user, mailbox);
    const uids = new Set(box.expunged.filter((e) => e.modseq > modseq).flatMap((e) => e.uids));
    return { uids: [...uids].sort((a, b) => a - b), complete: true };
  }

  onChange(listener: (change: StoreChange) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  lockMaildrop(user: string): (() => void) | undefined {
    if (this.locks.has(user)) return undefined;
    this.locks.add(user);
    return () => this.locks.delete(user);
  }

  /** Changes held back while an appendMany runs. */
  private held: StoreChange[] | undefined;

  private emit(change: StoreChange): void {
    if (this.held) return void this.held.push(change);
    for (const l of this.listeners) l(change);
  }

  private user(user: string) {
    const u = this.users.get(user);
    if (!u) throw new MailStoreError('NOUSER', `no user ${user}`);
    return u;
  }

  private box(user: string, mailbox: string): Mailbox {
    const box = this.user(user).mailboxes.get(mailbox);
    if (!box) throw new MailStoreError('NONEXISTENT', `no mailbox ${mailbox}`);
    return box;
  }

  private info(user: string, name: string): MailboxInfo {
    const box = this.box(user, name);
    return {
      name,
      uidValidity: box.uidValidity,
      uidNext: box.uidNext,
      highestModseq: box.highestModseq,
      ...(box.specialUse ? { specialUse: box.specialUse } : {}),
      subscribed: this.user(user).subscribed.has(name),
      exists: box.messages.length,
      unseen: box.messages.filter((m) => !m.meta.flags.includes('\\Seen')).length,
    };
  }
}

/** System flags in the order the Maildir store reports them (that of their Maildir letters D F R S T), then keywords. */
const SYSTEM_ORDER = ['\\Draft', '\\Flagged', '\\Answered', '\\Seen', '\\Deleted'];
function canonicalOrder(flags: string[]): string[] {
  const rank = (f: string) => {
    const i = SYSTEM_ORDER.indexOf(f);
    return i < 0 ? SYSTEM_ORDER.length : i;
  };
  return flags.map((f, i) => [f, i] as const).sort(([a, i], [b, j]) => rank(a) - rank(b) || i - j).map(([f]) => f);
}

function newMailbox(specialUse: SpecialUse | undefined): Mailbox {
  return { uidValidity: ++validity, uidNext: 1, highestModseq: 0, messages: [], expunged: [], ...(specialUse ? { specialUse } : {}) };
}
