import { describe, expect, it } from 'vitest';
import { expiryTime, LAB_RETRY, planRetry, PRODUCTION_RETRY, retryDelay } from './retry.js';

describe('retry schedule', () => {
  const retry = { schedule: [1000, 2000, 4000], maxLifetimeMs: 60_000 };

  it('walks the schedule and repeats its last delay', () => {
    expect([1, 2, 3, 4, 10].map((n) => retryDelay(retry, n))).toEqual([1000, 2000, 4000, 4000, 4000]);
    expect(retryDelay(retry, 0)).toBe(1000);
    expect(retryDelay({ schedule: [] }, 3)).toBe(0);
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
