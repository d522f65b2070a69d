// Login throttling, shared by every service that checks passwords (SMTP AUTH, IMAP, POP3).
//
// Two keys are counted, each within a sliding window (config.windowMs):
// - the pair (account, client address): a guesser at one account from one address;
// - the client address alone: a sprayer trying many accounts from one address.
// When a key reaches its limit it is locked for a back-off that doubles with every further lock of that key, up to
// maxBackoffMs. While a key is locked every login it covers is refused with a temporary error, the right password
// included (otherwise the guessing would simply go on). The account itself is never locked for everyone: a
// legitimate client at another address is unaffected, so an attacker cannot lock a user out.
//
// Memory is bounded: at most MAX_KEYS keys are tracked (the least recently touched are forgotten first), and each
// keeps at most its limit of failure times.
import type { AuthThrottleConfig } from './config.js';

/** Keys tracked at most; a flood of distinct accounts or addresses cannot grow the table past it. */
export const MAX_KEYS = 10_000;

export type ThrottleVerdict =
  | { throttled: false }
  | {
      throttled: true;
      /** What is locked: the account from this address, or the address for every account. */
      scope: 'account' | 'address';
      /** Milliseconds until the lock ends. */
      retryAfterMs: number;
    };

interface KeyState {
  /** Times of the failures still inside the window, oldest first. */
  failures: number[];
  /** The lock ends at this time (0: not locked). */
  lockedUntil: number;
  /** Locks so far: the next back-off is backoffMs × 2^locks. */
  locks: number;
}

export class LoginThrottle {
  private readonly keys = new Map<string, KeyState>();

  constructor(
    readonly config: AuthThrottleConfig,
    private readonly clock: () => number = Date.now,
  ) {}

  /** Whether a login for `account` from `address` may be tried now. Call it before checking the password. */
  check(account: string, address: string): ThrottleVerdict {
    if (!this.config.enabled) return { throttled: false };
    const now = this.clock();
    const pair = this.keys.get(pairKey(account, address));
    const single = this.keys.get(addressKey(address));
    if (single && single.lockedUntil > now) return { throttled: true, scope: 'address', retryAfterMs: single.lockedUntil - now };
    if (pair && pair.lockedUntil > now) return { throttled: true, scope: 'account', retryAfterMs: pair.lockedUntil - now };
    return { throttled: false };
  }

  /**
   * Counts a failed login. Returns the verdict for the next attempt: `throttled` when this failure locked a key
   * (the moment to record an `auth-throttled` event).
   */
  failure(account: string, address: string): ThrottleVerdict {
    if (!this.config.enabled) return { throttled: false };
    const now = this.clock();
    const address_ = this.count(addressKey(address), this.config.failuresPerAddress, now);
    const pair = this.count(pairKey(account, address), this.config.failuresPerAccount, now);
    if (address_ > 0) return { throttled: true, scope: 'address', retryAfterMs: address_ };
    if (pair > 0) return { throttled: true, scope: 'account', retryAfterMs: pair };
    return { throttled: false };
  }

  /** A successful login forgets the pair's failures (not the address's: a sprayer may know one password). */
  success(account: string, address: string): void {
    this.keys.delete(pairKey(account, address));
  }

  /** Keys tracked now (for tests of the memory bound). */
  get size(): number {
    return this.keys.size;
  }

  /** Adds a failure to `key`; returns the back-off in ms when this failure locks it, else 0. */
  private count(key: string, limit: number, now: number): number {
    let state = this.keys.get(key);
    if (state) this.keys.delete(key); // re-inserted below: Map order is our least-recently-touched order
    else state = { failures: [], lockedUntil: 0, locks: 0 };
    const windowStart = now - this.config.windowMs;
    while (state.failures.length && state.failures[0]! <= windowStart) state.failures.shift();
    // A key quiet for a whole window starts over, back-off included.
    if (state.failures.length === 0 && state.lockedUntil <= windowStart) state.locks = 0;
    state.failures.push(now);
    let locked = 0;
    if (state.failures.length >= limit && state.lockedUntil <= now) {
      locked = Math.min(this.config.maxBackoffMs, this.config.backoffMs * 2 ** state.locks);
      state.lockedUntil = now + locked;
      state.locks++;
      // After the lock, one more failure locks again (for twice as long), not `limit` more.
      state.failures = limit > 1 ? state.failures.slice(-(limit - 1)) : [];
    }
    if (state.failures.length > limit) state.failures.splice(0, state.failures.length - limit);
    this.keys.set(key, state);
    if (this.keys.size > MAX_KEYS) this.keys.delete(this.keys.keys().next().value!);
    return locked;
  }
}

function pairKey(account: string, address: string): string {
  return `account\u0000${account.trim().toLowerCase()}\u0000${address}`;
}

function addressKey(address: string): string {
  return `address\u0000${address}`;
}
