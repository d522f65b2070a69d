// The one place that owns retries: when a deferred message is tried again, when it has been queued too long and
// bounces, and the timers that run deliveries when they are due (with a cap on concurrent deliveries).
//
// Retry policy (RetryConfig): `schedule` lists the delays between attempts, the last one repeating; a message still
// undelivered `maxLifetimeMs` after it was queued expires, and its remaining recipients bounce with the last error.
// As in Postfix, expiry is decided when an attempt fails: the first temporary failure at or after the end of the
// lifetime bounces. Attempts keep to the schedule (none is squeezed in at the expiry time), so a message is given up
// between maxLifetimeMs and maxLifetimeMs plus one delay after it arrived.
import type { RetryConfig } from '../shared/config.js';

/**
 * Production-like policy, after Postfix's defaults: minimal_backoff_time = 300s, doubling up to
 * maximal_backoff_time = 4000s, and maximal_queue_lifetime = 5d (bounce_queue_lifetime is also 5d). RFC 5321 §4.5.4.1
 * asks for at least 30 minutes between retries and a give-up time of at least 4-5 days; Postfix retries sooner at
 * first because most temporary failures (greylisting...) clear in minutes.
 */
export const PRODUCTION_RETRY: RetryConfig = {
  schedule: [300_000, 600_000, 1_200_000, 2_400_000, 4_000_000],
  maxLifetimeMs: 5 * 24 * 3600_000,
};

/** The lab's default: retries within seconds, and expiry after a minute, so scenarios can watch a whole life cycle. */
export const LAB_RETRY: RetryConfig = {
  schedule: [500, 1000, 2000],
  maxLifetimeMs: 60_000,
};

/** Delay before the next attempt after `failedAttempts` attempts failed (1 → schedule[0]; the last value repeats). */
export function retryDelay(retry: RetryConfig, failedAttempts: number): number {
  const { schedule } = retry;
  if (schedule.length === 0) return 0;
  const index = Math.min(Math.max(failedAttempts, 1), schedule.length) - 1;
  return Math.max(0, schedule[index]!);
}

/** When a message queued at `arrival` expires. */
export function expiryTime(retry: RetryConfig, arrival: number): number {
  return arrival + retry.maxLifetimeMs;
}

export type RetryPlan =
  | { kind: 'retry'; at: number; delay: number }
  /** The message outlived maxLifetimeMs: give up on the remaining recipients. */
  | { kind: 'expire'; expiredAt: number };

/** What to do with a recipient that just failed temporarily, for the `failedAttempts`-th time. */
export function planRetry(retry: RetryConfig, arrival: number, failedAttempts: number, now: number): RetryPlan {
  const expires = expiryTime(retry, arrival);
  if (now >= expires) return { kind: 'expire', expiredAt: expires };
  const delay = retryDelay(retry, failedAttempts);
  return { kind: 'retry', at: now + delay, delay };
}

export interface SchedulerOptions {
  /** Runs a delivery attempt of a message; the scheduler never runs two attempts of one message at once. */
  run(queueId: string): Promise<void>;
  /** Concurrent deliveries at most (Postfix: default_process_limit = 100 smtp processes). */
  concurrency: number;
  /** Reports a failed run (the run itself should not throw). */
  onError?(queueId: string, err: unknown): void;
  now?(): number;
}

/**
 * Runs deliveries when they are due: one timer per waiting message (no polling), a FIFO of due messages, and at most
 * `concurrency` deliveries at a time.
 */
export class Scheduler {
  private readonly timers = new Map<string, { at: number; timer: NodeJS.Timeout }>();
  private readonly ready: string[] = [];
  private readonly readySet = new Set<string>();
  private readonly running = new Map<string, Promise<void>>();
  /** Messages asked to run again while their attempt was in flight. */
  private readonly rerun = new Set<string>();
  private stopped = false;
  private readonly now: () => number;

  constructor(private readonly options: SchedulerOptions) {
    this.now = options.now ?? Date.now;
  }

  /** Runs the message at `at` (ms since the epoch; now or in the past: as soon as possible). Replaces an earlier plan. */
  schedule(queueId: string, at = this.now()): void {
    if (this.stopped) return;
    this.cancelTimer(queueId);
    const delay = at - this.now();
    if (delay <= 0) return this.makeReady(queueId);
    // setTimeout holds at most 2^31-1 ms (~24.8 days); longer waits re-arm.
    const timer = setTimeout(() => {
      this.timers.delete(queueId);
      if (at - this.now() > 0) this.schedule(queueId, at);
      else this.makeReady(queueId);
    }, Math.min(delay, 0x7fffffff));
    timer.unref();
    this.timers.set(queueId, { at, timer });
  }

  /** Forgets a message (it is done, or gone). */
  cancel(queueId: string): void {
    this.cancelTimer(queueId);
    if (this.readySet.delete(queueId)) this.ready.splice(this.ready.indexOf(queueId), 1);
    this.rerun.delete(queueId);
  }

  /** Runs every waiting message now, whatever its retry time. Returns how many were waiting. */
  flush(): number {
    const waiting = [...this.timers.keys()];
    for (const queueId of waiting) this.schedule(queueId);
    return waiting.length;
  }

  /** When each waiting message is planned to run. */
  planned(): Map<string, number> {
    return new Map([...this.timers].map(([id, t]) => [id, t.at]));
  }

  get inFlight(): number {
    return this.running.size;
  }

  /** Resolves when nothing is running and nothing is ready to run (waiting timers aside). */
  async idle(): Promise<void> {
    while (this.running.size || this.ready.length) await Promise.allSettled([...this.running.values()]);
  }

  /** Stops starting deliveries and drops the timers; waits up to `graceMs` for the running ones. */
  async stop(graceMs: number): Promise<void> {
    this.stopped = true;
    for (const { timer } of this.timers.values()) clearTimeout(timer);
    this.timers.clear();
    this.ready.length = 0;
    this.readySet.clear();
    if (!this.running.size) return;
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<void>((resolve) => (timer = setTimeout(resolve, graceMs)));
    await Promise.race([Promise.allSettled([...this.running.values()]), timeout]);
    clearTimeout(timer);
  }

  private cancelTimer(queueId: string): void {
    const planned = this.timers.get(queueId);
    if (planned) {
      clearTimeout(planned.timer);
      this.timers.delete(queueId);
    }
  }

  private makeReady(queueId: string): void {
    if (this.stopped) return;
    if (this.running.has(queueId)) {
      this.rerun.add(queueId);
      return;
    }
    if (!this.readySet.has(queueId)) {
      this.readySet.add(queueId);
      this.ready.push(queueId);
    }
    this.pump();
  }

  private pump(): void {
    while (!this.stopped && this.running.size < this.options.concurrency && this.ready.length) {
      const queueId = this.ready.shift()!;
      this.readySet.delete(queueId);
      const run = (async () => {
        try {
          await this.options.run(queueId);
        } catch (err) {
          this.options.onError?.(queueId, err);
        }
      })();
      this.running.set(queueId, run);
      void run.then(() => {
        this.running.delete(queueId);
        if (this.rerun.delete(queueId)) this.makeReady(queueId);
        this.pump();
      });
    }
  }
}
