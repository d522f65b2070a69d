// The MTA's core: takes messages into the queue, runs delivery attempts when the scheduler says so, records each
// recipient's outcome, plans retries, expires old messages, and sends bounces (DSNs) back to senders.
import type { MtaNodeConfig } from '../shared/config.js';
import type { EventLog } from '../shared/events.js';
import { headerSection } from '../shared/headers.js';
import { deliver, type DeliveryContext, type RecipientOutcome } from './delivery.js';
import { buildDsn, type DsnRecipient } from './dsn.js';
import { isFinal, type AttemptReport, type EnqueueInput, type MailQueue, type MessageRecord, type RecipientRecord, type RecoveryReport } from './queue.js';
import { planRetry, retryDelay } from '../shared/retry.js';
import { Scheduler } from './scheduler.js';
import type { MtaEvents, QueueEntryView } from './api.js';

export interface EngineOptions {
  config: Pick<MtaNodeConfig, 'hostname' | 'retry'>;
  queue: MailQueue;
  events: EventLog<MtaEvents>;
  /** Delivery for one attempt (defaults to `deliver` with `delivery`). */
  delivery: Omit<DeliveryContext, 'emit'>;
  /** Concurrent delivery attempts at most. Default 32. */
  concurrency?: number;
  log?(message: string): void;
  now?(): number;
}

/** Orchestrates the MTA: accepts into the queue, runs the scheduler's attempts, records outcomes through the queue's transitions, bounces. */
export class MtaEngine {
  readonly scheduler: Scheduler;
  private readonly now: () => number;
  private readonly log: (message: string) => void;

  constructor(private readonly options: EngineOptions) {
    this.now = options.now ?? Date.now;
    this.log = options.log ?? (() => undefined);
    this.scheduler = new Scheduler({
      concurrency: options.concurrency ?? 32,
      run: (queueId) => this.attempt(queueId),
      onError: (queueId, err) => {
        // The attempt itself broke (e.g. the queue could not be written): keep the message, try again later.
        this.log(`delivery of ${queueId} failed: ${(err as Error)?.stack ?? String(err)}`);
        const message = this.options.queue.get(queueId);
        const retryAt = this.now() + retryDelay(this.options.config.retry, 1);
        this.emit('error', message, { error: `delivery attempt failed: ${(err as Error)?.message ?? String(err)}`, retryAt });
        if (!message || message.state === 'done') return;
        // What is on disk is still a valid state to recover from (see MailQueue.open); only memory is corrected.
        this.options.queue.abandonAttempt(queueId, retryAt);
        this.scheduler.schedule(queueId, retryAt);
      },
      now: this.now,
    });
  }

  get queue(): MailQueue {
    return this.options.queue;
  }

  /** Loads the queue from disk (repairing what a crash left) and schedules every queued message. */
  async start(): Promise<RecoveryReport> {
    const report = await this.queue.open();
    for (const queueId of report.broken) this.emit('error', { queueId }, { error: `queue files of ${queueId} unusable (a message file without a valid envelope line, or an envelope unreadable or without its message file): set aside as .broken` });
    // A held message waits for `release`, across restarts too.
    for (const message of this.queue.pending()) if (message.state !== 'hold') this.scheduler.schedule(message.queueId, message.nextAttempt ?? this.now());
    return report;
  }

  /**
   * Queues a message durably, emits `queued`, and schedules its first attempt. `onStored` runs once the message is on
   * disk, before `queued` (the receiving server announces the message there).
   */
  async accept(input: EnqueueInput, onStored?: (message: MessageRecord) => void): Promise<MessageRecord> {
    const message = await this.queue.enqueue(input);
    onStored?.(message);
    this.emit('queued', message, { from: message.from, to: message.recipients.map((r) => r.address), size: message.size, origin: message.origin.kind, ...(message.dsnFor ? { dsnFor: message.dsnFor } : {}), ...(message.params ? { params: { ...message.params } } : {}) });
    this.scheduler.schedule(message.queueId);
    return message;
  }

  /** Tries every waiting message now. */
  flush(): { flushed: number } {
    return { flushed: this.scheduler.flush() };
  }

  /**
   * Puts a message on hold (no attempt until `release`). One whose attempt is under way is held once that attempt
   * ends; if the attempt finished it, the queue's error says the message is done.
   */
  async hold(queueId: string): Promise<MessageRecord> {
    await this.betweenAttempts(queueId);
    if (this.queue.get(queueId)?.state === 'hold') return this.queue.get(queueId)!;
    this.scheduler.cancel(queueId);
    return this.queue.hold(queueId);
  }

  /** Releases a held message: deferred, and tried now. */
  async release(queueId: string): Promise<MessageRecord> {
    const message = await this.queue.release(queueId, this.now());
    this.scheduler.schedule(queueId);
    return message;
  }

  /** Deletes a message from the queue (no more attempts, no DSN), once any attempt under way has ended. */
  async delete(queueId: string): Promise<void> {
    await this.betweenAttempts(queueId);
    this.scheduler.cancel(queueId);
    await this.queue.remove(queueId);
  }

  /**
   * Resolves when no attempt of the message is under way. The scheduler may start the next one as soon as one ends (a
   * flush asked for meanwhile), so it looks again after each; the caller acts in the same turn.
   */
  private async betweenAttempts(queueId: string): Promise<void> {
    for (let run = this.scheduler.running(queueId); run; run = this.scheduler.running(queueId)) await run;
  }

  async stop(graceMs: number): Promise<void> {
    await this.scheduler.stop(graceMs);
  }

  view(message: MessageRecord): QueueEntryView {
    return {
      queueId: message.queueId,
      ...(message.messageId ? { messageId: message.messageId } : {}),
      from: message.from,
      state: message.state,
      arrival: message.arrival,
      size: message.size,
      attempts: message.attempts,
      ...(message.nextAttempt !== undefined ? { nextAttempt: message.nextAttempt } : {}),
      origin: message.origin,
      ...(message.dsnFor ? { dsnFor: message.dsnFor } : {}),
      recipients: message.recipients.map((r) => {
        const report = r.state === 'delivered' ? r.result : r.lastError;
        return {
          address: r.address,
          state: r.state,
          attempts: r.attempts,
          ...(r.lastError ? { lastError: r.lastError.description } : {}),
          ...(report?.reply ? { lastReply: report.reply } : {}),
          ...(report ? { status: report.status, hop: report.hop } : {}),
          ...(r.nextAttempt !== undefined && r.state === 'deferred' ? { nextAttempt: r.nextAttempt } : {}),
          ...(r.result?.expired ? { expired: true } : {}),
        };
      }),
    };
  }

  private emit<K extends keyof MtaEvents & string>(kind: K, message: Pick<MessageRecord, 'queueId' | 'messageId'> | undefined, detail: MtaEvents[K]): void {
    this.options.events.emit({ kind, messageId: message?.messageId, queueId: message?.queueId, detail });
  }

  /** One delivery attempt of a message: every recipient not yet delivered or bounced. */
  private async attempt(queueId: string): Promise<void> {
    const { queue } = this;
    const message = queue.get(queueId);
    // Held (or done) since it was planned: nothing to try.
    if (!message || message.state === 'done' || message.state === 'hold') return;
    const due = message.recipients.filter((r) => !isFinal(r.state));
    await queue.activate(queueId);
    if (due.length === 0) return this.finish(message, false);
    this.emit('active', message, { attempt: message.attempts + 1, recipients: due.map((r) => r.address) });

    // One delivery per destination (the LMTP hop for the local domains, one per remote domain), all in parallel, each
    // recorded as soon as it ends: a recipient delivered while another destination is still under way is written to
    // disk then (see `recordEarly`), so a crash before the slower destination ends does not send it again. The last
    // destination to end concludes the attempt in the same turn as its events, as a single destination always did.
    const failed: Failure[] = [];
    let data: Buffer;
    try {
      data = await queue.readMessage(queueId);
    } catch (err) {
      this.record(message, due, this.localFailure(due.map((r) => r.address), err), failed);
      return this.conclude(message, failed);
    }
    const groups = byDestination(due.map((r) => r.address), this.options.delivery.localDomains);
    let open = groups.length;
    await Promise.all(
      groups.map(async (rcpts) => {
        let outcomes: RecipientOutcome[];
        try {
          outcomes = await deliver({ ...this.options.delivery, emit: (kind, detail) => this.emit(kind, message, detail) }, message, rcpts, data);
        } catch (err) {
          outcomes = this.localFailure(rcpts, err);
        }
        this.record(message, due, outcomes, failed);
        if (--open > 0) {
          if (outcomes.some((o) => o.action === 'delivered')) await this.recordEarly(queueId);
          return;
        }
        await this.conclude(message, failed);
      }),
    );
  }

  /** Delivery could not even be tried (the message file cannot be read, or delivery threw): defer, retry on the schedule. */
  private localFailure(rcpts: string[], err: unknown): RecipientOutcome[] {
    const text = `local error: ${(err as Error)?.message ?? String(err)}`;
    const hop = `${this.options.config.hostname} (queue)`;
    return rcpts.map((address) => ({ address, action: 'defer', status: '4.3.0', code: 451, reply: `451 4.3.0 ${text}`, remote: false, hop, via: 'none', description: text }));
  }

  /**
   * Ends an attempt whose every recipient has its outcome. The bounce is queued before the original's outcome is
   * recorded: a crash in between repeats the attempt and may send a second bounce, but never loses one. It also reads
   * the original's headers while they are still there (settling a message as done removes its file).
   */
  private async conclude(message: MessageRecord, failed: Failure[]): Promise<void> {
    if (failed.length) await this.bounce(message, failed, this.now());
    await this.finish(message);
  }

  /**
   * Records the outcomes of one destination through the queue's transitions (in memory) and emits them; failures
   * are collected in `failed` for the bounce. Called once per destination, as each ends.
   */
  private record(message: MessageRecord, due: readonly RecipientRecord[], outcomes: RecipientOutcome[], failed: Failure[]): void {
    const { queue } = this;
    const queueId = message.queueId;
    const now = this.now();
    for (const outcome of outcomes) {
      const rcpt = outcome.address;
      const report = toReport(outcome, now);
      const common = { rcpt, hop: outcome.hop, ...(outcome.command ? { command: outcome.command } : {}), reply: outcome.reply, status: outcome.status, ...(outcome.tlsPolicy ? { tlsPolicy: outcome.tlsPolicy } : {}) };
      if (outcome.action === 'delivered') {
        queue.deliverRecipient(queueId, rcpt, report);
        const session = {
          host: outcome.host,
          port: outcome.port,
          reused: outcome.reused ?? false,
          tls: outcome.tls ?? null,
          ...(outcome.mailParams ? { mailParams: outcome.mailParams } : {}),
          ...(outcome.converted7bit ? { converted7bit: true } : {}),
        };
        if (outcome.via === 'lmtp') this.emit('delivered', message, { ...common, ...session });
        else this.emit('relayed', message, { ...common, mx: outcome.mx, ...session });
        continue;
      }
      if (outcome.action === 'bounce') {
        const recipient = queue.bounceRecipient(queueId, rcpt, report);
        this.emit('bounced', message, { ...common, error: outcome.description, attempt: recipient.attempts });
        failed.push({ recipient, outcome });
        continue;
      }
      // The attempt this outcome ends is the recipient's next one: the retry rule counts it.
      const attempt = due.find((r) => r.address === rcpt)!.attempts + 1;
      const plan = planRetry(this.options.config.retry, message.arrival, attempt, now);
      if (plan.kind === 'expire') {
        const recipient = queue.expireRecipient(queueId, rcpt, report);
        this.emit('expired', message, { rcpt, error: outcome.description, hop: outcome.hop, ...(outcome.command ? { command: outcome.command } : {}), reply: outcome.reply, status: '4.4.7', attempts: recipient.attempts, queuedFor: now - message.arrival, ...(outcome.tlsPolicy ? { tlsPolicy: outcome.tlsPolicy } : {}) });
        failed.push({ recipient, outcome });
        continue;
      }
      const recipient = queue.deferRecipient(queueId, rcpt, report, plan.at);
      this.emit('deferred', message, { ...common, error: outcome.description, nextAttempt: plan.at, delay: plan.delay, attempt: recipient.attempts });
    }
  }

  /**
   * A destination delivered while others of the same attempt are still under way: write the envelope now (durably),
   * so a crash before the attempt ends repeats only the recipients still open, not those that have their 250. The
   * window between a remote 250 and our record of it (RFC 5321 §6.1) stays, but it no longer lasts until the slowest
   * destination ends. Failing to write is not fatal: the end of the attempt records everything anyway.
   */
  private async recordEarly(queueId: string): Promise<void> {
    await this.queue.save(queueId).catch((err: unknown) => this.log(`early record of ${queueId} failed: ${(err as Error)?.message ?? String(err)}`));
  }

  private async finish(message: MessageRecord, attempted = true): Promise<void> {
    const settled = await this.queue.settle(message.queueId, { attempted });
    if (settled.state === 'deferred') this.scheduler.schedule(settled.queueId, settled.nextAttempt ?? this.now());
    else this.scheduler.cancel(settled.queueId);
  }

  private async bounce(message: MessageRecord, failed: Failure[], now: number): Promise<void> {
    const rcpts = failed.map((f) => f.recipient.address);
    if (message.from === '') {
      // RFC 5321 §4.5.5 / RFC 3464: never bounce a bounce (a null-sender message has nobody to notify).
      this.emit('dsn-suppressed', message, { rcpts, reason: 'the message has the null sender <> (it is itself a bounce): no DSN is sent for it' });
      return;
    }
    const hostname = this.options.config.hostname;
    let headers: Buffer;
    try {
      const data = await this.queue.readMessage(message.queueId);
      headers = Buffer.from(headerSection(data), 'latin1');
    } catch {
      headers = Buffer.from(`X-Maillab-Note: the original message file of ${message.queueId} could not be read\r\n`);
    }
    const dsnQueueId = this.queue.newId();
    const dsnMessageId = `<${compactDate(now)}.${dsnQueueId}@${hostname}>`;
    const recipients: DsnRecipient[] = failed.map(({ recipient, outcome }) => {
      const expired = recipient.result?.expired === true;
      return {
        address: recipient.address,
        status: recipient.result?.status ?? outcome.status,
        description: expired ? `message expired after ${Math.round((now - message.arrival) / 1000)} s in the queue; last error: ${outcome.description}` : outcome.description,
        ...(outcome.remote ? { remoteReply: outcome.reply } : {}),
        ...(outcome.remote && outcome.remoteMta ? { remoteMta: outcome.remoteMta } : {}),
        lastAttempt: now,
        ...(expired ? { expired: true } : {}),
      };
    });
    const dsn = buildDsn({
      reportingMta: hostname,
      originalSender: message.from,
      originalQueueId: message.queueId,
      ...(message.messageId ? { originalMessageId: message.messageId } : {}),
      arrival: message.arrival,
      originalHeaders: headers,
      recipients,
      messageId: dsnMessageId,
      date: now,
    });
    await this.accept({ queueId: dsnQueueId, from: '', to: [message.from], data: dsn, messageId: dsnMessageId, origin: { kind: 'dsn', protocol: 'local' }, dsnFor: message.queueId });
    this.emit('dsn-created', message, { dsnQueueId, dsnMessageId, for: { queueId: message.queueId, messageId: message.messageId ?? null }, to: message.from, rcpts });
  }
}

/** A recipient that failed for good in an attempt, with the outcome that says why (for its DSN). */
interface Failure {
  recipient: RecipientRecord;
  outcome: RecipientOutcome;
}

/** Recipients grouped as `deliver` sends them: one group for all the local domains (LMTP), one per remote domain. */
function byDestination(recipients: string[], localDomains: readonly string[]): string[][] {
  const local = new Set(localDomains.map((d) => d.toLowerCase()));
  const groups = new Map<string, string[]>();
  for (const rcpt of recipients) {
    const domain = rcpt.slice(rcpt.lastIndexOf('@') + 1).toLowerCase();
    const key = local.has(domain) ? '' : domain;
    groups.set(key, [...(groups.get(key) ?? []), rcpt]);
  }
  return [...groups.values()];
}

function toReport(outcome: RecipientOutcome, at: number): AttemptReport {
  return {
    description: outcome.description,
    hop: outcome.hop,
    status: outcome.status,
    reply: outcome.reply,
    ...(outcome.code !== undefined ? { code: outcome.code } : {}),
    ...(outcome.command ? { command: outcome.command } : {}),
    ...(outcome.remote && outcome.remoteMta ? { remoteMta: outcome.remoteMta } : {}),
    at,
  };
}

/** `20261122023208`, for Message-IDs. */
export function compactDate(ms: number): string {
  return new Date(ms).toISOString().replace(/\D/g, '').slice(0, 14);
}
