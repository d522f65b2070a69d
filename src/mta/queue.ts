// The MTA's durable queue, Postfix-like: one queue file per message holds its envelope and its content.
// Layout under the queue directory:
//   msg/<qid>.eml    one line of JSON, the envelope as it was queued (state incoming), then "\n", then the message as
//                    it will be sent (with our Received header)
//   env/<qid>.json   the envelope as it is now (state, per-recipient attempts, last errors, next attempts), once the
//                    message has been deferred (or `save`d); it overrides the envelope line of the message file
//   *.broken         files `open` could not use, set aside for a human (see RecoveryReport.broken)
// Finished messages have no file: their records stay in memory only (the newest `keepDone`), for listings. A `done/`
// directory left by an older layout is ignored.
//
// Durability: `enqueue` writes the one message file (temp file, fsync, rename, fsync of the directory) and only then
// resolves: the receiving server says 250 after that. The directory fsync is shared by the writes waiting at the same
// time (group commit): each waits for one that started after its rename. The file appears whole, by the rename, or not at all: a crash
// leaves at most a temp file, which `open` removes (its sender never got a 250 and still has the message).
// `activate` (→ active) is in memory only: after a crash, incoming, deferred and active messages are all the same to
// `open`, due now; so an attempt whose outcome was not recorded is repeated (at least once). Deferral writes
// env/<qid>.json durably (the same way); should a crash lose it, the previous record (the envelope line, or an older
// env file) is recovered and the attempt repeated. When a message is done, env/<qid>.json (if any), then
// msg/<qid>.eml, are unlinked without an fsync: a crash before the removals reach the disk brings the message back
// and it is delivered again (at least once, RFC 5321 §6.1) — never lost.
//
// States: incoming → active → deferred → active → … → done. Recipients: pending → deferred → … → delivered|bounced.
// `hold` (Postfix's hold queue, postsuper -h): an incoming or deferred message put aside by an operator; it is not
// tried until `release` makes it deferred again. Held is written durably (env/<qid>.json), so a held message stays
// held across a restart. `remove` (postsuper -d) deletes a message that is not being delivered: its files go, its
// record is forgotten (it is not `done`: nothing was delivered or bounced).
// Both are changed only through the queue's transitions (as Postfix's qmgr_defer/qmgr_bounce own their records): each
// checks its table and throws IllegalTransitionError otherwise, and the records the queue hands out are read-only.
//
// Every file operation goes through `options.fs` (node's by default), so a test can record their order and check
// that the data and the directory were synced before `enqueue` resolved.
import { randomBytes } from 'node:crypto';
import path from 'node:path';
import { defaultFileSystem, ensureDir, syncDir, writeFileDurable, type FileSystem } from '../shared/fsutil.js';

import type { AttemptReport, MailParams, MessageRecord, MessageState, QueuedMessage, QueueOrigin, QueueRecipient, RecipientRecord, RecipientState } from './api.js';

export type { AttemptReport, MailParams, MessageRecord, MessageState, QueuedMessage, QueueOrigin, QueueRecipient, RecipientRecord, RecipientState };

export interface EnqueueInput {
  queueId?: string;
  from: string;
  to: string[];
  data: Buffer;
  messageId?: string;
  origin: QueueOrigin;
  dsnFor?: string;
  /** The MAIL FROM parameters the message came with (receive.ts); absent: delivery goes by the content. */
  params?: MailParams;
}

export interface RecoveryReport {
  /** Messages in the queue (not done) after recovery. */
  queued: string[];
  /** Messages found active, put back to deferred (due now). */
  requeued: string[];
  /**
   * Messages whose files could not be used, set aside as *.broken (msg/<qid>.broken, env/<qid>.broken): a message file
   * whose first line is not its envelope, an envelope file that is unreadable or has no message file.
   */
  broken: string[];
}

export type QueueErrorKind = 'illegal-transition' | 'no-such-message' | 'message-done' | 'no-such-recipient' | 'queue-id-in-use' | 'no-recipients' | 'no-envelope-line';

/** What the queue refuses or cannot do, by kind. */
export class QueueError extends Error {
  override readonly name: string = 'QueueError';
  constructor(
    readonly kind: QueueErrorKind,
    readonly queueId: string,
    description: string,
  ) {
    super(`queue ${queueId}: ${description}`);
  }
}

/** A state change its table does not allow: a bug in the caller, never a delivery outcome. */
export class IllegalTransitionError extends QueueError {
  override readonly name = 'IllegalTransitionError';
  constructor(
    queueId: string,
    /** The recipient, for a recipient's transition. */
    readonly recipient: string | undefined,
    readonly from: MessageState | RecipientState,
    readonly to: MessageState | RecipientState,
  ) {
    super('illegal-transition', queueId, `invalid state change ${recipient ? `of <${recipient}> ` : ''}${from} -> ${to}`);
  }
}

const TRANSITIONS: Record<MessageState, readonly MessageState[]> = {
  incoming: ['active', 'hold'],
  active: ['deferred', 'done'],
  deferred: ['active', 'hold'],
  hold: ['deferred'],
  done: [],
};

/** Only from an attempt (the message is active); delivered and bounced are final. Deferred again is a new deferral. */
const RECIPIENT_TRANSITIONS: Record<RecipientState, readonly RecipientState[]> = {
  pending: ['delivered', 'deferred', 'bounced'],
  deferred: ['delivered', 'deferred', 'bounced'],
  delivered: [],
  bounced: [],
};

/** Throws IllegalTransitionError unless the message may go from `from` to `to`. */
export function checkTransition(queueId: string, from: MessageState, to: MessageState): void {
  if (!TRANSITIONS[from].includes(to)) throw new IllegalTransitionError(queueId, undefined, from, to);
}

/** Throws IllegalTransitionError unless the recipient may go from `from` to `to`. */
export function checkRecipientTransition(queueId: string, recipient: string, from: RecipientState, to: RecipientState): void {
  if (!RECIPIENT_TRANSITIONS[from].includes(to)) throw new IllegalTransitionError(queueId, recipient, from, to);
}

export function isFinal(state: RecipientState): boolean {
  return state === 'delivered' || state === 'bounced';
}

let sequence = 0;

/** A new queue id: the time in ms, then a per-process sequence and random bits, upper-case hex (sorts by time). */
export function newQueueId(now = Date.now()): string {
  sequence = (sequence + 1) & 0xfff;
  return now.toString(16).toUpperCase().padStart(11, '0') + sequence.toString(16).toUpperCase().padStart(3, '0') + randomBytes(2).toString('hex').toUpperCase();
}

export interface MailQueueOptions {
  /** fsync before acknowledging (config.fsync). */
  fsync: boolean;
  /** Finished messages kept in memory for listings (the newest). They have no file: a restart forgets them. Default 10 000. */
  keepDone?: number;
  /** Bytes of freshly queued messages kept in memory, so that their first attempt reads no file. Default 64 MiB. */
  cacheBytes?: number;
  now?: () => number;
  /** Every file operation goes through it. Default: node's. */
  fs?: FileSystem;
}

const DEFAULT_CACHE_BYTES = 64 * 1024 * 1024;
/** The envelope line of a message file is read in chunks of this size, up to ENVELOPE_LINE_MAX. */
const LINE_CHUNK = 16 * 1024;
const ENVELOPE_LINE_MAX = 64 * 1024 * 1024;
/** Message files `open` reads at once. */
const RECOVERY_BATCH = 64;
const LIVE_STATES: readonly MessageState[] = ['incoming', 'active', 'deferred', 'hold'];

export class MailQueue {
  private readonly messages = new Map<string, QueuedMessage>();
  private readonly done = new Map<string, QueuedMessage>();
  /** Writes and removals of a message's files, one after the other (renames and unlinks must land in order). */
  private readonly writes = new Map<string, Promise<void>>();
  /** Messages that have (or are about to have) an env/<qid>.json. */
  private readonly envFiles = new Set<string>();
  /** Content of freshly queued messages (without the envelope line), oldest first, `cachedBytes` in all. */
  private readonly cache = new Map<string, Buffer>();
  private cachedBytes = 0;
  private readonly msgSync: DirSync;
  private readonly envSync: DirSync;
  private readonly now: () => number;
  private readonly fs: FileSystem;
  readonly msgDir: string;
  readonly envDir: string;

  constructor(
    readonly dir: string,
    private readonly options: MailQueueOptions,
  ) {
    this.now = options.now ?? Date.now;
    this.fs = options.fs ?? defaultFileSystem;
    this.msgDir = path.join(dir, 'msg');
    this.envDir = path.join(dir, 'env');
    this.msgSync = new DirSync(() => syncDir(this.msgDir, this.fs));
    this.envSync = new DirSync(() => syncDir(this.envDir, this.fs));
  }

  /** Creates the directories, then loads what is on disk and repairs what a crash left (see the file comment). */
  async open(): Promise<RecoveryReport> {
    await Promise.all([ensureDir(this.msgDir, this.fs), ensureDir(this.envDir, this.fs)]);
    const report: RecoveryReport = { queued: [], requeued: [], broken: [] };
    const [msgFiles, envFiles] = await Promise.all([this.dirList(this.msgDir), this.dirList(this.envDir)]);
    // Temp files of writes a crash interrupted: their rename never happened, so nobody was told they were stored.
    const isTemp = (f: string) => f.includes('.tmp-');
    await Promise.all([...msgFiles.filter(isTemp).map((f) => this.unlink(this.msgDir, f)), ...envFiles.filter(isTemp).map((f) => this.unlink(this.envDir, f))]);
    const ids = (files: string[], ext: string) => new Set(files.filter((f) => f.endsWith(ext) && !isTemp(f)).map((f) => f.slice(0, -ext.length)));
    const msgIds = ids(msgFiles, '.eml');
    const envIds = ids(envFiles, '.json');

    // Queue ids sort by time: the oldest message first, as `pending` lists them.
    const all = [...new Set([...msgIds, ...envIds])].sort();
    for (let i = 0; i < all.length; i += RECOVERY_BATCH) {
      const batch = all.slice(i, i + RECOVERY_BATCH);
      const found = await Promise.all(batch.map((queueId) => this.recover(queueId, msgIds.has(queueId), envIds.has(queueId))));
      for (const [j, queueId] of batch.entries()) {
        const message = found[j];
        if (!message) {
          report.broken.push(queueId);
          if (msgIds.has(queueId)) await this.setAside(this.msgDir, `${queueId}.eml`, `${queueId}.broken`);
          if (envIds.has(queueId)) await this.setAside(this.envDir, `${queueId}.json`, `${queueId}.broken`);
          continue;
        }
        if (envIds.has(queueId)) this.envFiles.add(queueId);
        // Active on disk (saved during an attempt) is the same as deferred, due now: nothing to write.
        if (message.state === 'active') {
          transition(message, 'deferred');
          message.nextAttempt = this.now();
          report.requeued.push(queueId);
        }
        this.messages.set(queueId, message);
        report.queued.push(queueId);
      }
    }
    return report;
  }

  newId(): string {
    let id = newQueueId(this.now());
    while (this.messages.has(id) || this.done.has(id)) id = newQueueId(this.now());
    return id;
  }

  /** Stores a new message durably (one file: envelope line, then content) and resolves once it is on disk. */
  async enqueue(input: EnqueueInput): Promise<MessageRecord> {
    const queueId = input.queueId ?? this.newId();
    if (this.messages.has(queueId) || this.done.has(queueId)) throw new QueueError('queue-id-in-use', queueId, 'the queue id is already in use');
    if (input.to.length === 0) throw new QueueError('no-recipients', queueId, 'a message needs at least one recipient');
    const message: QueuedMessage = {
      queueId,
      ...(input.messageId ? { messageId: input.messageId } : {}),
      from: input.from,
      recipients: [...new Set(input.to)].map((address) => ({ address, state: 'pending', attempts: 0 })),
      state: 'incoming',
      arrival: this.now(),
      size: input.data.length,
      origin: input.origin,
      attempts: 0,
      ...(input.dsnFor ? { dsnFor: input.dsnFor } : {}),
      ...(input.params && Object.keys(input.params).length ? { params: { ...input.params } } : {}),
    };
    // JSON.stringify escapes every control character: the envelope is one line, ended by the first "\n" of the file.
    const file = Buffer.concat([Buffer.from(`${JSON.stringify(message)}\n`, 'utf8'), input.data]);
    await this.writeDurable(this.messagePath(queueId), file, this.msgSync);
    this.messages.set(queueId, message);
    this.cachePut(queueId, input.data);
    return message;
  }

  /** A message in the queue or recently done. The record is live (it follows the transitions) and read-only. */
  get(queueId: string): MessageRecord | undefined {
    return this.messages.get(queueId) ?? this.done.get(queueId);
  }

  /** Messages in the queue (not done), oldest first. */
  pending(): MessageRecord[] {
    return [...this.messages.values()];
  }

  /** Every message known: queued ones, then the finished ones still remembered. */
  list(): MessageRecord[] {
    return [...this.messages.values(), ...this.done.values()];
  }

  /** The message as it will be sent (without the envelope line): from memory while fresh, else from its file. */
  async readMessage(queueId: string): Promise<Buffer> {
    const cached = this.cache.get(queueId);
    if (cached) return cached;
    const file = await this.fs.readFile(this.messagePath(queueId));
    const end = file.indexOf(0x0a);
    if (end < 0) throw new QueueError('no-envelope-line', queueId, 'the message file has no envelope line');
    return file.subarray(end + 1);
  }

  messagePath(queueId: string): string {
    return path.join(this.msgDir, `${queueId}.eml`);
  }

  envelopePath(queueId: string): string {
    return path.join(this.envDir, `${queueId}.json`);
  }

  /**
   * incoming|deferred → active, in memory only: after a crash, what is on disk (incoming, deferred, or active if saved
   * meanwhile) is treated the same by recovery (try again now).
   */
  async activate(queueId: string): Promise<MessageRecord> {
    const message = this.require(queueId);
    transition(message, 'active');
    delete message.nextAttempt;
    return message;
  }

  /**
   * An attempt that broke (the queue could not be written, say): active → deferred, due at `nextAttempt`, in memory
   * only. What is on disk is still a valid state to recover from (see `open`). A message not active is left as it is.
   */
  abandonAttempt(queueId: string, nextAttempt: number): MessageRecord {
    const message = this.require(queueId);
    if (message.state !== 'active') return message;
    transition(message, 'deferred');
    message.nextAttempt = nextAttempt;
    return message;
  }

  /** The recipient was delivered (the attempt's outcome `result`): final. */
  deliverRecipient(queueId: string, address: string, result: AttemptReport): RecipientRecord {
    return this.recipientOutcome(queueId, address, 'delivered', (r) => {
      r.result = result;
    });
  }

  /** The recipient failed for now (`lastError`) and is tried again at `nextAttempt`. */
  deferRecipient(queueId: string, address: string, lastError: AttemptReport, nextAttempt: number): RecipientRecord {
    return this.recipientOutcome(queueId, address, 'deferred', (r) => {
      r.lastError = lastError;
      r.nextAttempt = nextAttempt;
    });
  }

  /** The recipient failed for good (a permanent reply, `report`): final. */
  bounceRecipient(queueId: string, address: string, report: AttemptReport): RecipientRecord {
    return this.recipientOutcome(queueId, address, 'bounced', (r) => {
      r.lastError = report;
      r.result = report;
    });
  }

  /**
   * The recipient failed for now (`lastError`) but the message has been queued too long: bounced, final, with status
   * 4.4.7 (RFC 3463: delivery time expired) and `expired` set.
   */
  expireRecipient(queueId: string, address: string, lastError: AttemptReport): RecipientRecord {
    return this.recipientOutcome(queueId, address, 'bounced', (r) => {
      r.lastError = lastError;
      r.result = { ...lastError, status: '4.4.7', expired: true };
    });
  }

  /**
   * Ends an attempt: active → done when every recipient is delivered or bounced (its files are removed and the record
   * kept in memory), else → deferred with the earliest next attempt of its recipients (written durably). Read what
   * is needed of the message (e.g. headers for a DSN) before: it is no longer readable once done. `attempted: false`
   * when nothing was tried (every recipient already had its outcome): the message's attempts are not counted.
   */
  async settle(queueId: string, { attempted = true }: { attempted?: boolean } = {}): Promise<MessageRecord> {
    const message = this.require(queueId);
    const open = message.recipients.filter((r) => !isFinal(r.state));
    transition(message, open.length === 0 ? 'done' : 'deferred');
    if (attempted) message.attempts++;
    if (open.length === 0) {
      delete message.nextAttempt;
      message.doneAt = this.now();
      this.messages.delete(queueId);
      this.remember(message);
      this.uncache(queueId);
      const hasEnvelope = this.envFiles.delete(queueId);
      // Not fsynced: a crash before these removals reach the disk only means the message is delivered again. The
      // envelope goes first: a message file alone is a valid (older) state; an envelope alone is set aside as broken.
      await this.serialized(queueId, async () => {
        if (hasEnvelope) await this.unlink(this.envDir, `${queueId}.json`);
        await this.unlink(this.msgDir, `${queueId}.eml`);
      });
      return message;
    }
    const now = this.now();
    message.nextAttempt = Math.min(...open.map((r) => r.nextAttempt ?? now));
    // The next attempt is later: the content is read from the file then.
    this.uncache(queueId);
    await this.writeEnvelope(message);
    return message;
  }

  /**
   * incoming|deferred → hold, durably: the message is not tried until `release`. A message being delivered (active)
   * cannot be held (IllegalTransitionError): the engine waits for its attempt to end first.
   */
  async hold(queueId: string): Promise<MessageRecord> {
    const message = this.require(queueId);
    transition(message, 'hold');
    delete message.nextAttempt;
    this.uncache(queueId);
    await this.writeEnvelope(message);
    return message;
  }

  /** hold → deferred, due at `at` (now by default), durably. */
  async release(queueId: string, at = this.now()): Promise<MessageRecord> {
    const message = this.require(queueId);
    transition(message, 'deferred');
    message.nextAttempt = at;
    await this.writeEnvelope(message);
    return message;
  }

  /**
   * Deletes a message that is not being delivered (incoming, deferred or held): its files are unlinked and its record
   * forgotten. Not fsynced: a crash before the removals reach the disk brings the message back, as after `settle`.
   */
  async remove(queueId: string): Promise<void> {
    const message = this.require(queueId);
    if (message.state === 'active') throw new QueueError('illegal-transition', queueId, 'the message is being delivered (active): it can be deleted once its attempt ends');
    this.messages.delete(queueId);
    this.uncache(queueId);
    const hasEnvelope = this.envFiles.delete(queueId);
    await this.serialized(queueId, async () => {
      if (hasEnvelope) await this.unlink(this.envDir, `${queueId}.json`);
      await this.unlink(this.msgDir, `${queueId}.eml`);
    });
  }

  /** Writes the message's envelope as it is now, durably (after changing recipients without a state change). */
  async save(queueId: string): Promise<void> {
    await this.writeEnvelope(this.require(queueId));
  }

  private require(queueId: string): QueuedMessage {
    const message = this.messages.get(queueId);
    if (!message) throw this.done.has(queueId) ? new QueueError('message-done', queueId, 'message is done') : new QueueError('no-such-message', queueId, 'no such message');
    return message;
  }

  /** One recipient's outcome of the attempt under way (the message is active): checked, counted, recorded. */
  private recipientOutcome(queueId: string, address: string, to: RecipientState, record: (r: QueueRecipient) => void): RecipientRecord {
    const message = this.require(queueId);
    const recipient = message.recipients.find((r) => r.address === address);
    if (!recipient) throw new QueueError('no-such-recipient', queueId, `<${address}> is not a recipient`);
    // Outcomes come from an attempt; outside one (incoming, deferred) nothing was tried.
    if (message.state !== 'active') throw new IllegalTransitionError(queueId, address, message.state, to);
    checkRecipientTransition(queueId, address, recipient.state, to);
    recipient.state = to;
    recipient.attempts++;
    delete recipient.nextAttempt;
    record(recipient);
    return recipient;
  }

  private remember(message: QueuedMessage): void {
    this.done.set(message.queueId, message);
    const keep = this.options.keepDone ?? 10_000;
    for (const oldest of this.done.keys()) {
      if (this.done.size <= keep) break;
      this.done.delete(oldest);
    }
  }

  private cachePut(queueId: string, data: Buffer): void {
    const budget = this.options.cacheBytes ?? DEFAULT_CACHE_BYTES;
    if (data.length > budget) return;
    this.cache.set(queueId, data);
    this.cachedBytes += data.length;
    for (const [oldest, bytes] of this.cache) {
      if (this.cachedBytes <= budget) break;
      this.cache.delete(oldest);
      this.cachedBytes -= bytes.length;
    }
  }

  private uncache(queueId: string): void {
    const data = this.cache.get(queueId);
    if (!data) return;
    this.cache.delete(queueId);
    this.cachedBytes -= data.length;
  }

  private writeEnvelope(message: QueuedMessage): Promise<void> {
    const text = JSON.stringify(message, null, 1);
    this.envFiles.add(message.queueId);
    return this.serialized(message.queueId, () => this.writeDurable(this.envelopePath(message.queueId), text, this.envSync));
  }

  /**
   * `writeFileDurable`, but the fsync of the directory (making the rename durable) is shared with the writes that
   * wait for one at the same time: one fsync that starts after a rename covers it.
   */
  private async writeDurable(file: string, data: string | Uint8Array, dir: DirSync): Promise<void> {
    if (!this.options.fsync) return writeFileDurable(file, data, false, this.fs);
    const tmp = `${file}.tmp-${process.pid}-${Math.random().toString(36).slice(2)}`;
    await this.fs.writeFile(tmp, data, { flush: true });
    await this.fs.rename(tmp, file);
    await dir.sync();
  }

  private serialized(queueId: string, write: () => Promise<void>): Promise<void> {
    const previous = this.writes.get(queueId) ?? Promise.resolve();
    const next = previous.catch(() => undefined).then(write);
    this.writes.set(queueId, next);
    void next.finally(() => {
      if (this.writes.get(queueId) === next) this.writes.delete(queueId);
    }).catch(() => undefined);
    return next;
  }

  /** What `open` finds for a message: its env file if it has one, else the envelope line; undefined if unusable. */
  private async recover(queueId: string, hasMessage: boolean, hasEnvelope: boolean): Promise<QueuedMessage | undefined> {
    if (!hasMessage) return undefined;
    const line = await this.readEnvelopeLine(this.messagePath(queueId));
    const initial = line === undefined ? undefined : parseEnvelope(line, queueId);
    if (!initial) return undefined;
    if (!hasEnvelope) return initial;
    const text = await this.fs.readFile(this.envelopePath(queueId), 'utf8').catch(() => undefined);
    return text === undefined ? undefined : parseEnvelope(text, queueId);
  }

  /** The first line of a file (without its "\n"), or undefined if it has none (or it is unreasonably long). */
  private async readEnvelopeLine(file: string): Promise<string | undefined> {
    const handle = await this.fs.open(file, 'r').catch(() => undefined);
    if (!handle) return undefined;
    try {
      const parts: Buffer[] = [];
      let position = 0;
      while (position < ENVELOPE_LINE_MAX) {
        const chunk = Buffer.allocUnsafe(LINE_CHUNK);
        const { bytesRead } = await handle.read(chunk, 0, LINE_CHUNK, position);
        if (bytesRead === 0) return undefined;
        const end = chunk.subarray(0, bytesRead).indexOf(0x0a);
        if (end >= 0) {
          parts.push(chunk.subarray(0, end));
          return Buffer.concat(parts).toString('utf8');
        }
        parts.push(chunk.subarray(0, bytesRead));
        position += bytesRead;
      }
      return undefined;
    } catch {
      return undefined;
    } finally {
      await handle.close();
    }
  }

  private async setAside(dir: string, file: string, as: string): Promise<void> {
    await this.fs.rename(path.join(dir, file), path.join(dir, as)).catch(() => undefined);
  }

  private async dirList(dir: string): Promise<string[]> {
    return this.fs.readdir(dir).catch(() => []);
  }

  private async unlink(dir: string, file: string): Promise<void> {
    await this.fs.unlink(path.join(dir, file)).catch((err: NodeJS.ErrnoException) => {
      if (err.code !== 'ENOENT') throw err;
    });
  }
}

/**
 * Group commit of a directory's fsyncs (`fsync` does one, e.g. `syncDir`): every caller that comes while one is under
 * way shares the next one.
 */
export class DirSync {
  private running: Promise<void> | undefined;
  private next: Promise<void> | undefined;

  constructor(private readonly fsync: () => Promise<void>) {}

  /** Resolves once an fsync of the directory that started after this call has completed. */
  sync(): Promise<void> {
    if (!this.running) return this.start();
    // The one under way may have started before the caller's rename: wait for the next, shared by all who wait.
    this.next ??= this.running
      .catch(() => undefined)
      .then(() => {
        this.next = undefined;
        return this.start();
      });
    return this.next;
  }

  private start(): Promise<void> {
    const run = this.fsync();
    this.running = run;
    void run
      .finally(() => {
        if (this.running === run) this.running = undefined;
      })
      .catch(() => undefined);
    return run;
  }
}

/** Every message state change: checked against the table, then made. */
function transition(message: QueuedMessage, to: MessageState): void {
  checkTransition(message.queueId, message.state, to);
  message.state = to;
}

/** The MAIL FROM parameters of a record as read from disk: only the known ones, with valid values. */
function mailParamsOf(value: unknown): MailParams | undefined {
  if (!value || typeof value !== 'object') return undefined;
  const raw = value as Record<string, unknown>;
  const params: MailParams = {
    ...(raw.body === '7BIT' || raw.body === '8BITMIME' ? { body: raw.body } : {}),
    ...(raw.smtputf8 === true ? { smtputf8: true } : {}),
    ...(raw.undeclared8bit === true ? { undeclared8bit: true } : {}),
  };
  return Object.keys(params).length ? params : undefined;
}

/** A queued message's envelope from its JSON, if it is one (of this message, in a state a queue file can have). */
function parseEnvelope(text: string, queueId: string): QueuedMessage | undefined {
  try {
    const parsed = JSON.parse(text) as Partial<QueuedMessage> | null;
    if (!parsed || typeof parsed !== 'object' || parsed.queueId !== queueId || !Array.isArray(parsed.recipients) || typeof parsed.from !== 'string') return undefined;
    if (!parsed.state || !LIVE_STATES.includes(parsed.state)) return undefined;
    // `params` came later: a record without them is whole (delivery goes by the content), and one with parameters
    // this code does not know keeps only those it does, rather than being set aside as broken.
    const params = mailParamsOf(parsed.params);
    if (params) parsed.params = params;
    else delete parsed.params;
    return parsed as QueuedMessage;
  } catch {
    return undefined;
  }
}
