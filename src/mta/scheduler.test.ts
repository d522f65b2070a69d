import { afterEach, describe, expect, it, vi } from 'vitest';
import { expiryTime, LAB_RETRY, planRetry, PRODUCTION_RETRY, retryDelay, Scheduler } from './scheduler.js';

describe('retry schedule', () => {
  const retry = { schedule: [1000, 2000, 4000], maxLifetimeMs: 60_000 };

  it('walks the schedule and repeats its last delay', () => {
    expect([1, 2, 3, 4, 10].map((n) => retryDelay(retry, n))).toEqual([1000, 2000, 4000, 4000, 4000]);
    expect(retryDelay(retry, 0)).toBe(1000);
    expect(retryDelay({ schedule: [], maxLifetimeMs: 1 }, 3)).toBe(0);
  });

  it('plans the next attempt from now', () => {
    expect(planRetry(retry, 0, 1, 500)).toEqual({ kind: 'retry', at: 1500, delay: 1000 });
    expect(planRetry(retry, 0, 5, 10_000)).toEqual({ kind: 'retry', at: 14_000, delay: 4000 });
  });

  it('keeps to the schedule until the lifetime is over, then expires at the next failure', () => {
    expect(expiryTime(retry, 1000)).toBe(61_000);
    expect(planRetry(retry, 1000, 7, 59_000)).toEqual({ kind: 'retry', at: 63_000, delay: 4000 });
    expect(planRetry(retry, 1000, 8, 61_000)).toEqual({ kind: 'expire', expiredAt: 61_000 });
    expect(planRetry(retry, 1000, 8, 63_000)).toEqual({ kind: 'expire', expiredAt: 61_000 });
  });

  it('ships production-like and lab defaults', () => {
    expect(PRODUCTION_RETRY.schedule[0]).toBe(300_000);
    expect(PRODUCTION_RETRY.schedule.at(-1)).toBe(4_000_000);
    expect(PRODUCTION_RETRY.maxLifetimeMs).toBe(5 * 86_400_000);
    expect(LAB_RETRY.schedule).toEqual([500, 1000, 2000]);
    expect(LAB_RETRY.maxLifetimeMs).toBe(60_000);
  });
});

describe('Scheduler', () => {
  afterEach(() => {
    vi.useRealTimers();
  });

  it('runs messages when due, by timers', async () => {
    vi.useFakeTimers({ now: 0 });
    const ran: [string, number][] = [];
    const scheduler = new Scheduler({ concurrency: 4, run: async (id) => void ran.push([id, Date.now()]) });
    scheduler.schedule('a', 1000);
    scheduler.schedule('b', 500);
    scheduler.schedule('c');
    await vi.advanceTimersByTimeAsync(0);
    expect(ran).toEqual([['c', 0]]);
    await vi.advanceTimersByTimeAsync(600);
    expect(ran.map(([id]) => id)).toEqual(['c', 'b']);
    await vi.advanceTimersByTimeAsync(500);
    expect(ran).toEqual([['c', 0], ['b', 500], ['a', 1000]]);
  });

  it('replaces an earlier plan, cancels, and flushes everything waiting', async () => {
    vi.useFakeTimers({ now: 0 });
    const ran: string[] = [];
    const scheduler = new Scheduler({ concurrency: 4, run: async (id) => void ran.push(id) });
    scheduler.schedule('a', 10_000);
    scheduler.schedule('a', 20_000);
    scheduler.schedule('b', 30_000);
    scheduler.schedule('c', 30_000);
    scheduler.cancel('c');
    expect(scheduler.planned()).toEqual(new Map([['a', 20_000], ['b', 30_000]]));
    expect(scheduler.flush()).toBe(2);
    await vi.advanceTimersByTimeAsync(0);
    expect(ran.sort()).toEqual(['a', 'b']);
    await vi.advanceTimersByTimeAsync(60_000);
    expect(ran).toHaveLength(2);
  });

  it('caps concurrent runs and never runs one message twice at once', async () => {
    let running = 0;
    let peak = 0;
    const releases: (() => void)[] = [];
    const counts = new Map<string, number>();
    const scheduler = new Scheduler({
      concurrency: 2,
      run: (id) =>
        new Promise<void>((resolve) => {
          running++;
          peak = Math.max(peak, running);
          counts.set(id, (counts.get(id) ?? 0) + 1);
          releases.push(() => {
            running--;
            resolve();
          });
        }),
    });
    for (const id of ['a', 'b', 'c', 'd']) scheduler.schedule(id);
    scheduler.schedule('a'); // already running: runs again after
    expect(running).toBe(2);
    while (releases.length) {
      releases.shift()!();
      await new Promise((r) => setImmediate(r));
    }
    await scheduler.idle();
    expect(peak).toBe(2);
    expect(Object.fromEntries(counts)).toEqual({ a: 2, b: 1, c: 1, d: 1 });
  });

  it('stop drops the plans and waits briefly for running deliveries', async () => {
    const ran: string[] = [];
    let finish!: () => void;
    const scheduler = new Scheduler({
      concurrency: 1,
      run: (id) => {
        ran.push(id);
        return new Promise<void>((resolve) => (finish = resolve));
      },
    });
    scheduler.schedule('a');
    scheduler.schedule('b', Date.now() + 50);
    const stopped = scheduler.stop(1000);
    setTimeout(() => finish(), 20);
    await stopped;
    await new Promise((r) => setTimeout(r, 80));
    expect(ran).toEqual(['a']);
    scheduler.schedule('c');
    expect(ran).toEqual(['a']);
  });
});
