// The retry rule, in one place: the MTA's scheduler follows it and the harness's retry checker holds the MTA to it.
//
// Retry policy (RetryConfig): `schedule` lists the delays between attempts, the last one repeating; a message still
// undelivered `maxLifetimeMs` after it was queued expires, and its remaining recipients bounce with the last error.
// As in Postfix, expiry is decided when an attempt fails: the first temporary failure at or after the end of the
// lifetime bounces. Attempts keep to the schedule (none is squeezed in at the expiry time), so a message is given up
// between maxLifetimeMs and maxLifetimeMs plus one delay after it arrived.
import type { RetryConfig } from './config.js';

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
export function retryDelay(retry: Pick<RetryConfig, 'schedule'>, failedAttempts: number): number {
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
