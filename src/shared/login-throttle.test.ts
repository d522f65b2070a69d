import { describe, expect, it } from 'vitest';
import { DEFAULT_AUTH_THROTTLE, type AuthThrottleConfig } from './config.js';
import { LoginThrottle, MAX_KEYS } from './login-throttle.js';

const CONFIG: AuthThrottleConfig = { ...DEFAULT_AUTH_THROTTLE, failuresPerAccount: 3, failuresPerAddress: 5, windowMs: 60_000, backoffMs: 1_000, maxBackoffMs: 4_000 };

function throttle(config: Partial<AuthThrottleConfig> = {}) {
  let now = 1_000_000;
  const t = new LoginThrottle({ ...CONFIG, ...config }, () => now);
  return { t, advance: (ms: number) => (now += ms) };
}

describe('LoginThrottle', () => {
  it('locks an account from one address after its limit, for the back-off, then lets it try again', () => {
    const { t, advance } = throttle();
    expect(t.failure('bob', '10.0.0.1')).toEqual({ throttled: false });
    expect(t.failure('bob', '10.0.0.1')).toEqual({ throttled: false });
    expect(t.failure('bob', '10.0.0.1')).toEqual({ throttled: true, scope: 'account', retryAfterMs: 1_000 });
    expect(t.check('BOB', '10.0.0.1')).toEqual({ throttled: true, scope: 'account', retryAfterMs: 1_000 });
    advance(999);
    expect(t.check('bob', '10.0.0.1')).toMatchObject({ throttled: true, retryAfterMs: 1 });
    advance(1);
    expect(t.check('bob', '10.0.0.1')).toEqual({ throttled: false });
  });

  it('leaves the same account at another address, and other accounts at the same address, alone', () => {
    const { t } = throttle();
    for (let i = 0; i < 3; i++) t.failure('bob', '10.0.0.1');
    expect(t.check('bob', '10.0.0.1').throttled).toBe(true);
    expect(t.check('bob', '10.0.0.2')).toEqual({ throttled: false });
    expect(t.check('carol', '10.0.0.1')).toEqual({ throttled: false });
  });

  it('doubles the back-off with every further lock, up to the maximum', () => {
    const { t, advance } = throttle({ failuresPerAddress: 100 });
    const backoffs: number[] = [];
    for (let i = 0; i < 3; i++) t.failure('bob', 'a');
    backoffs.push((t.check('bob', 'a') as { retryAfterMs: number }).retryAfterMs);
    for (let lock = 0; lock < 3; lock++) {
      advance(backoffs.at(-1)!);
      // One failure after a lock locks again.
      const verdict = t.failure('bob', 'a');
      expect(verdict.throttled).toBe(true);
      backoffs.push((verdict as { retryAfterMs: number }).retryAfterMs);
    }
    expect(backoffs).toEqual([1_000, 2_000, 4_000, 4_000]);
  });

  it('locks an address that sprays many accounts, for every account', () => {
    const { t } = throttle();
    for (const user of ['u1', 'u2', 'u3', 'u4']) expect(t.failure(user, '10.0.0.9').throttled).toBe(false);
    expect(t.failure('u5', '10.0.0.9')).toEqual({ throttled: true, scope: 'address', retryAfterMs: 1_000 });
    expect(t.check('anyone', '10.0.0.9')).toMatchObject({ throttled: true, scope: 'address' });
    expect(t.check('anyone', '10.0.0.10')).toEqual({ throttled: false });
  });

  it('forgets failures older than the window, and a success forgets the pair', () => {
    const { t, advance } = throttle();
    t.failure('bob', 'a');
    t.failure('bob', 'a');
    advance(60_001);
    expect(t.failure('bob', 'a').throttled).toBe(false);
    t.failure('bob', 'a');
    t.success('bob', 'a');
    expect(t.failure('bob', 'a').throttled).toBe(false);
    expect(t.failure('bob', 'a').throttled).toBe(false);
  });

  it('does nothing when turned off', () => {
    const { t } = throttle({ enabled: false });
    for (let i = 0; i < 100; i++) expect(t.failure('bob', 'a')).toEqual({ throttled: false });
    expect(t.check('bob', 'a')).toEqual({ throttled: false });
  });

  it('tracks a bounded number of keys whatever a flood of names sends', () => {
    const { t } = throttle();
    for (let i = 0; i < MAX_KEYS * 2; i++) t.failure(`user${i}`, `10.${i >> 16}.${(i >> 8) & 255}.${i & 255}`);
    expect(t.size).toBeLessThanOrEqual(MAX_KEYS);
  });
});
