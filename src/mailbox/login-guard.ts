// Password checks of the mailbox server's IMAP and POP3, under one login throttle per node (issue 9, finding 3).
//
// Every login goes: throttle check (account, client address) → password → the throttle learns the outcome. While
// the pair or the address is locked the password is not even looked at: the right one is refused too, with a
// temporary error, so guessing cannot go on. The account is the user's address when the login names a known user
// (`bob` and `bob@receiver.test` are one account), else the login as given, so that guessing at unknown names is
// counted as well. Per connection, `failuresPerConnection` refused logins (wrong password or throttled) end it.
//
// Events: `auth-failed` for every wrong password; `auth-throttled` when a failure locks a key (not for every login
// refused during the lock: an attacker must not be able to grow the history at will).
//
// With the node's Accounts (issue 13), passwords are checked there: app passwords, and the main password of a user
// with two-factor authentication refused as `app-password-required`. That refusal counts as a failure like any
// other: it tells that the main password is right, so it must not be had faster than a wrong-password answer.
import { DEFAULT_AUTH_THROTTLE, type AuthThrottleConfig } from '../shared/config.js';
import type { EventLog } from '../shared/events.js';
import { LoginThrottle } from '../shared/login-throttle.js';
import type { Accounts, PasswordVerdict } from './accounts.js';
import type { MailboxEvents } from './api.js';
import type { MailStore } from './store-api.js';

/** `accounts`: the account service's own login (password + TOTP), under the same throttle. */
export type AuthProtocol = 'imap' | 'pop3' | 'accounts';

export interface LoginAttempt {
  protocol: AuthProtocol;
  /** The name as the client gave it. */
  login: string;
  /** LOGIN, PLAIN, USER… (in events). */
  method?: string;
  client: string;
}

export type LoginResult =
  /** `appPassword`: the name of the app password used, if one. */
  | { kind: 'ok'; user: string; appPassword?: string }
  /** Wrong name or password (or a refused authorization identity). */
  | { kind: 'failed' }
  /** The right main password of a 2FA user: only app passwords are taken on the mail protocols. */
  | { kind: 'app-password-required'; user: string }
  /** Refused before the password was checked: retry after this long. */
  | { kind: 'throttled'; retryAfterMs: number };

/** The throttle of a node: the one handed in, else one from the node's configuration (or the defaults). */
export function throttleFor(throttle: LoginThrottle | undefined, config: AuthThrottleConfig | undefined): LoginThrottle {
  return throttle ?? new LoginThrottle(config ?? DEFAULT_AUTH_THROTTLE);
}

/** Whole seconds to wait, at least 1, for the texts of the refusals. */
export function retrySeconds(retryAfterMs: number): number {
  return Math.max(1, Math.ceil(retryAfterMs / 1000));
}

export class LoginGuard {
  constructor(
    private readonly store: MailStore,
    readonly throttle: LoginThrottle,
    private readonly events: EventLog<MailboxEvents> | undefined,
    /** The node's account state; absent (servers started alone in tests), the store's main passwords only. */
    readonly accounts?: Accounts,
  ) {}

  /** The key a login is counted under: the user's address when the login names one, else the login itself. */
  account(login: string): string {
    return this.store.resolveUser(login) ?? login.trim().toLowerCase();
  }

  /** The refusal when `attempt` may not be tried now (its account or its address is locked), else undefined. */
  check(attempt: LoginAttempt): Extract<LoginResult, { kind: 'throttled' }> | undefined {
    const verdict = this.throttle.check(this.account(attempt.login), attempt.client);
    return verdict.throttled ? { kind: 'throttled', retryAfterMs: verdict.retryAfterMs } : undefined;
  }

  /**
   * Checks the password (after the throttle). `authorize`, when given, must also accept the user. Synchronous when
   * the check is (see Accounts.verify): callers must not await a result that is not a promise, or a pipelined IMAP
   * command behind a LOGIN would be framed before the login is done.
   */
  authenticate(attempt: LoginAttempt, password: string, authorize?: (user: string) => boolean): LoginResult | Promise<LoginResult> {
    const throttled = this.check(attempt);
    if (throttled) return throttled;
    const verdict = this.verify(attempt, password);
    return verdict instanceof Promise ? verdict.then((v) => this.settle(attempt, v, authorize)) : this.settle(attempt, verdict, authorize);
  }

  private verify(attempt: LoginAttempt, password: string): PasswordVerdict | Promise<PasswordVerdict> {
    if (this.accounts && attempt.protocol !== 'accounts') return this.accounts.verify(attempt.login, password, { protocol: attempt.protocol, client: attempt.client });
    const user = this.store.authenticate(attempt.login, password);
    return user ? { kind: 'ok', user } : { kind: 'invalid' };
  }

  private settle(attempt: LoginAttempt, verdict: PasswordVerdict, authorize?: (user: string) => boolean): LoginResult {
    if (verdict.kind === 'app-password-required') {
      this.failed(attempt, 'app-password-required');
      return verdict;
    }
    if (verdict.kind !== 'ok' || (authorize && !authorize(verdict.user))) {
      this.failed(attempt);
      return { kind: 'failed' };
    }
    this.throttle.success(verdict.user, attempt.client);
    return verdict;
  }

  /** A session logged in with an app password: `close` is called when that app password is revoked. */
  track(user: string, appPassword: string | undefined, close: (reason: string) => void): (() => void) | undefined {
    return appPassword !== undefined ? this.accounts?.track(user, appPassword, close) : undefined;
  }

  /** A failed login (also one refused without a password check, such as POP3's foreign authorization identity). */
  failed(attempt: LoginAttempt, reason?: 'app-password-required'): void {
    const { protocol, login, method, client } = attempt;
    this.events?.emit({ kind: 'auth-failed', detail: { protocol, login, ...(method ? { method } : {}), client, ...(reason ? { reason } : {}) } });
    const verdict = this.throttle.failure(this.account(login), client);
    if (verdict.throttled) {
      this.events?.emit({ kind: 'auth-throttled', detail: { protocol, login, client, scope: verdict.scope, retryAfterMs: verdict.retryAfterMs } });
    }
  }

  /** Whether a connection with this many refused logins must be closed. */
  tooManyOnConnection(refused: number): boolean {
    return this.throttle.config.enabled && refused >= this.throttle.config.failuresPerConnection;
  }
}
