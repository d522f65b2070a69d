// The one place that owns retries: when a deferred message is tried again, when it has been queued too long and
// bounces, and the timers that run deliveries when they are due (with a cap on concurrent deliveries). The retry
// rule itself (delays, lifetime) is src/shared/retry.ts, which the harness's retry checker uses too.

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
  private readonly runs = new Map<string, Promise<void>>();
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

  /**
   * Runs every waiting message now, whatever its retry time, and every message whose attempt is in flight again as
   * soon as that attempt ends: a flush asked for just after a deferral, while the attempt is still being recorded,
   * must not be lost. Returns how many messages it concerned.
   */
  flush(): number {
    const inFlight = [...this.runs.keys()];
    for (const queueId of inFlight) this.rerun.add(queueId);
    const waiting = [...this.timers.keys()];
    for (const queueId of waiting) this.schedule(queueId);
    return waiting.length + inFlight.length;
  }

  /** When each waiting message is planned to run. */
  planned(): Map<string, number> {
    return new Map([...this.timers].map(([id, t]) => [id, t.at]));
  }

  /** The attempt of this message under way, if one is. */
  running(queueId: string): Promise<void> | undefined {
    return this.runs.get(queueId);
  }

  get inFlight(): number {
    return this.runs.size;
  }

  /** Resolves when nothing is running and nothing is ready to run (waiting timers aside). */
  async idle(): Promise<void> {
    while (this.runs.size || this.ready.length) await Promise.allSettled([...this.runs.values()]);
  }

  /** Stops starting deliveries and drops the timers; waits up to `graceMs` for the running ones. */
  async stop(graceMs: number): Promise<void> {
    this.stopped = true;
    for (const { timer } of this.timers.values()) clearTimeout(timer);
    this.timers.clear();
    this.ready.length = 0;
    this.readySet.clear();
    if (!this.runs.size) return;
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<void>((resolve) => (timer = setTimeout(resolve, graceMs)));
    await Promise.race([Promise.allSettled([...this.runs.values()]), timeout]);
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
    if (this.runs.has(queueId)) {
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
    while (!this.stopped && this.runs.size < this.options.concurrency && this.ready.length) {
      const queueId = this.ready.shift()!;
      this.readySet.delete(queueId);
      const run = (async () => {
        try {
          await this.options.run(queueId);
        } catch (err) {
          this.options.onError?.(queueId, err);
        }
      })();
      this.runs.set(queueId, run);
      void run.then(() => {
        this.runs.delete(queueId);
        if (this.rerun.delete(queueId)) this.makeReady(queueId);
        this.pump();
      });
    }
  }
}
