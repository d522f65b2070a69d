import { afterEach, describe, expect, it, vi } from 'vitest';
import { Scheduler } from './scheduler.js';

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
