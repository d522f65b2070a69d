// The MTA's durable queue, Postfix-like. Layout under the queue directory:
//   msg/<qid>.eml    the message as it will be sent (with our Received header)
//   env/<qid>.json   envelope and state of a message still in the queue (incoming, active or deferred)
//   done/<qid>.json  record of a finished message (every recipient delivered or bounced); its msg file is removed
//
// Durability: `enqueue` writes the message file, then the envelope file, each fsynced (temp file, fsync, rename,
// fsync of the directory), and only then resolves: the receiving server says 250 after that. A crash can leave a
// message file without an envelope (never the reverse); `open` removes such orphans, since their sender never got
// a 250 and still has the message. A message found `active` (a delivery was under way at the crash) goes back to
// `deferred`, to be tried again at once: an attempt whose outcome was not recorded may be repeated (at least once).
//
// States: incoming → active → deferred → active → … → done. Recipients: pending → deferred → … → delivered|bounced.
import { randomBytes } from 'node:crypto';
import { promises as fs } from 'node:fs';
import path from 'node:path';
import { ensureDir, syncDir, writeFileDurable } from '../shared/fsutil.js';

export type MessageState = 'incoming' | 'active' | 'deferred' | 'done';
export type RecipientState = 'pending' | 'deferred' | 'delivered' | 'bounced';

/** Where the message came from. */
export interface QueueOrigin {
  kind: 'submission' | 'smtp' | 'dsn';
  /** Protocol as in the Received header: ESMTPA (authenticated), ESMTP... */
  protocol?: string;
  helo?: string;
  client?: string;
  /** The authenticated user, for submissions. */
  user?: string;
}

/** The outcome of the last attempt for a recipient, with everything needed to understand it. */
export interface AttemptReport {
  /** One line for humans: where, what command, what reply. */
  description: string;
  /** This MTA → the server it talked to, e.g. `mta.sender.test -> mx.receiver.test[127.0.0.7]:25`. */
  hop: string;
  /** RFC 3463 status, e.g. `5.1.1`. */
  status: string;
  /** The reply that decided (remote, or synthesized for local decisions such as a null MX). */
  reply?: string;
  code?: number;
  /** The command that reply answered. */
  command?: string;
  /** Name of the remote server that replied (the MX host name), for DSNs' Remote-MTA. */
  remoteMta?: string;
  at: number;
}

export interface QueueRecipient {
  address: string;
  state: RecipientState;
  /** Delivery attempts made for this recipient. */
  attempts: number;
  /** When the next attempt is due (deferred recipients). */
  nextAttempt?: number;
  /** Last failure (deferred, bounced). */
  lastError?: AttemptReport;
  /** Final outcome (delivered or bounced). */
  result?: AttemptReport & { expired?: boolean };
}

export interface QueuedMessage {
  queueId: string;
  /** The Message-ID header, with angle brackets. */
  messageId?: string;
  /** Envelope sender; '' for the null sender (bounces). */
  from: string;
  recipients: QueueRecipient[];
  state: MessageState;
  /** When the message was queued (ms since the epoch): the start of its lifetime. */
  arrival: number;
  size: number;
  origin: QueueOrigin;
  /** Delivery attempts of the message. */
  attempts: number;
  /** When the next attempt is due (deferred messages). */
  nextAttempt?: number;
  /** For a bounce (DSN): the queue id of the message it reports on. */
  dsnFor?: string;
  doneAt?: number;
}

export interface EnqueueInput {
  queueId?: string;
  from: string;
  to: string[];
  data: Buffer;
  messageId?: string;
  origin: QueueOrigin;
  dsnFor?: string;
}

export interface RecoveryReport {
  /** Messages in the queue (not done) after recovery. */
  queued: string[];
  /** Message files without an envelope, removed. */
  orphansRemoved: string[];
  /** Messages found active, put back to deferred. */
  requeued: string[];
  /** Envelopes that could not be used (unreadable, or without their message file), set aside as *.broken. */
  broken: string[];
}

const TRANSITIONS: Record<MessageState, MessageState[]> = {
  incoming: ['active'],
  active: ['deferred', 'done'],
  deferred: ['active'],
  done: [],
};

/** Throws unless the message may go from `from` to `to`. */
export function checkTransition(queueId: string, from: MessageState, to: MessageState): void {
  if (!TRANSITIONS[from].includes(to)) throw new Error(`queue ${queueId}: invalid state change ${from} -> ${to}`);
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
  /** Finished messages kept in memory for listings (the newest); all stay on disk. Default 10 000. */
  keepDone?: number;
  now?: () => number;
}

export class MailQueue {
  private readonly messages = new Map<string, QueuedMessage>();
  private readonly done = new Map<string, QueuedMessage>();
  /** Envelope writes per message, one after the other (renames must land in order). */
  private readonly writes = new Map<string, Promise<void>>();
  private readonly now: () => number;
  readonly msgDir: string;
  readonly envDir: string;
  readonly doneDir: string;

  constructor(
    readonly dir: string,
    private readonly options: MailQueueOptions,
  ) {
    this.now = options.now ?? Date.now;
    this.msgDir = path.join(dir, 'msg');
    this.envDir = path.join(dir, 'env');
    this.doneDir = path.join(dir, 'done');
  }

  /** Creates the directories, then loads what is on disk and repairs what a crash left (see the file comment). */
  async open(): Promise<RecoveryReport> {
    await Promise.all([ensureDir(this.msgDir), ensureDir(this.envDir), ensureDir(this.doneDir)]);
    const report: RecoveryReport = { queued: [], orphansRemoved: [], requeued: [], broken: [] };
    const [msgFiles, envFiles, doneFiles] = await Promise.all([this.dirList(this.msgDir), this.dirList(this.envDir), this.dirList(this.doneDir)]);
    const isTemp = (f: string) => f.includes('.tmp-');
    await Promise.all([...msgFiles.filter(isTemp).map((f) => this.unlink(this.msgDir, f)), ...envFiles.filter(isTemp).map((f) => this.unlink(this.envDir, f)), ...doneFiles.filter(isTemp).map((f) => this.unlink(this.doneDir, f))]);
    const ids = (files: string[], ext: string) => new Set(files.filter((f) => f.endsWith(ext) && !isTemp(f)).map((f) => f.slice(0, -ext.length)));
    const msgIds = ids(msgFiles, '.eml');
    const envIds = ids(envFiles, '.json');

    const doneRecords: QueuedMessage[] = [];
    for (const queueId of ids(doneFiles, '.json')) {
      const record = await this.readJson(path.join(this.doneDir, `${queueId}.json`));
      if (!record) continue;
      doneRecords.push(record);
      // Finished, but the crash came before the envelope and message files were removed.
      if (envIds.delete(queueId)) await this.unlink(this.envDir, `${queueId}.json`);
      if (msgIds.delete(queueId)) await this.unlink(this.msgDir, `${queueId}.eml`);
    }
    doneRecords.sort((a, b) => (a.doneAt ?? 0) - (b.doneAt ?? 0));
    for (const record of doneRecords) this.remember(record);

    for (const queueId of [...envIds].sort()) {
      const message = await this.readJson(path.join(this.envDir, `${queueId}.json`));
      if (!message || !msgIds.has(queueId)) {
        report.broken.push(queueId);
        await fs.rename(path.join(this.envDir, `${queueId}.json`), path.join(this.envDir, `${queueId}.broken`)).catch(() => undefined);
        continue;
      }
      msgIds.delete(queueId);
      if (message.state === 'active') {
        message.state = 'deferred';
        message.nextAttempt = this.now();
        report.requeued.push(queueId);
        await this.writeEnvelope(message);
      }
      this.messages.set(queueId, message);
      report.queued.push(queueId);
    }
    // Message files left: written, but the crash came before their envelope, so no 250 was ever given for them.
    for (const queueId of msgIds) {
      await this.unlink(this.msgDir, `${queueId}.eml`);
      report.orphansRemoved.push(queueId);
    }
    if (report.orphansRemoved.length && this.options.fsync) await syncDir(this.msgDir);
    return report;
  }

  newId(): string {
    let id = newQueueId(this.now());
    while (this.messages.has(id) || this.done.has(id)) id = newQueueId(this.now());
    return id;
  }

  /** Stores a new message durably (message file, then envelope) and resolves once both are on disk. */
  async enqueue(input: EnqueueInput): Promise<QueuedMessage> {
    const queueId = input.queueId ?? this.newId();
    if (this.messages.has(queueId) || this.done.has(queueId)) throw new Error(`queue id ${queueId} is already in use`);
    if (input.to.length === 0) throw new Error(`queue ${queueId}: a message needs at least one recipient`);
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
    };
    await writeFileDurable(this.messagePath(queueId), input.data, this.options.fsync);
    await this.writeEnvelope(message);
    this.messages.set(queueId, message);
    return message;
  }

  /** A message in the queue or recently done. The object is live: change it, then `save`/`activate`/`settle`. */
  get(queueId: string): QueuedMessage | undefined {
    return this.messages.get(queueId) ?? this.done.get(queueId);
  }

  /** Messages in the queue (not done), oldest first. */
  pending(): QueuedMessage[] {
    return [...this.messages.values()];
  }

  /** Every message known: queued ones, then the finished ones still remembered. */
  list(): QueuedMessage[] {
    return [...this.messages.values(), ...this.done.values()];
  }

  readMessage(queueId: string): Promise<Buffer> {
    return fs.readFile(this.messagePath(queueId));
  }

  messagePath(queueId: string): string {
    return path.join(this.msgDir, `${queueId}.eml`);
  }

  /**
   * incoming|deferred → active, recorded on disk before the attempt starts. Not fsynced: should a crash lose it, the
   * envelope still says incoming or deferred, which recovery treats exactly like active (try again now).
   */
  async activate(queueId: string): Promise<QueuedMessage> {
    const message = this.require(queueId);
    checkTransition(queueId, message.state, 'active');
    message.state = 'active';
    delete message.nextAttempt;
    await this.writeEnvelope(message, false);
    return message;
  }

  /**
   * Ends an attempt: active → done when every recipient is delivered or bounced (the message file is removed and
   * a done record kept), else → deferred with the earliest next attempt of its recipients.
   */
  async settle(queueId: string): Promise<QueuedMessage> {
    const message = this.require(queueId);
    const open = message.recipients.filter((r) => !isFinal(r.state));
    if (open.length === 0) {
      checkTransition(queueId, message.state, 'done');
      message.state = 'done';
      delete message.nextAttempt;
      message.doneAt = this.now();
      await this.serialized(queueId, () => writeFileDurable(path.join(this.doneDir, `${queueId}.json`), JSON.stringify(message, null, 1), this.options.fsync));
      this.messages.delete(queueId);
      this.remember(message);
      // No fsync of these removals: the done record is what counts, and `open` finishes a removal a crash undid.
      await this.unlink(this.envDir, `${queueId}.json`);
      await this.unlink(this.msgDir, `${queueId}.eml`);
      return message;
    }
    checkTransition(queueId, message.state, 'deferred');
    message.state = 'deferred';
    const now = this.now();
    message.nextAttempt = Math.min(...open.map((r) => r.nextAttempt ?? now));
    await this.writeEnvelope(message);
    return message;
  }

  /** Writes the message's envelope as it is now (after changing recipients without a state change). */
  save(queueId: string): Promise<void> {
    return this.writeEnvelope(this.require(queueId));
  }

  private require(queueId: string): QueuedMessage {
    const message = this.messages.get(queueId);
    if (!message) throw new Error(this.done.has(queueId) ? `queue ${queueId}: message is done` : `queue ${queueId}: no such message`);
    return message;
  }

  private remember(message: QueuedMessage): void {
    this.done.set(message.queueId, message);
    const keep = this.options.keepDone ?? 10_000;
    for (const oldest of this.done.keys()) {
      if (this.done.size <= keep) break;
      this.done.delete(oldest);
    }
  }

  private writeEnvelope(message: QueuedMessage, durable = true): Promise<void> {
    const text = JSON.stringify(message, null, 1);
    return this.serialized(message.queueId, () => writeFileDurable(path.join(this.envDir, `${message.queueId}.json`), text, durable && this.options.fsync));
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

  private async readJson(file: string): Promise<QueuedMessage | undefined> {
    try {
      const parsed = JSON.parse(await fs.readFile(file, 'utf8')) as QueuedMessage;
      return typeof parsed.queueId === 'string' && Array.isArray(parsed.recipients) ? parsed : undefined;
    } catch {
      return undefined;
    }
  }

  private async dirList(dir: string): Promise<string[]> {
    return fs.readdir(dir).catch(() => []);
  }

  private async unlink(dir: string, file: string): Promise<void> {
    await fs.unlink(path.join(dir, file)).catch((err: NodeJS.ErrnoException) => {
      if (err.code !== 'ENOENT') throw err;
    });
  }
}
