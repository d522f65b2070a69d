// Scenario 20 (login throttling, issue 9 finding 3): the lab definition tunes the mailbox server's throttle, and
// failures over POP3 and IMAP count together. After failuresPerAccount wrong passwords for bob from the harness's
// address, bob is refused there for the back-off, the right password included, over both protocols; another
// account is not. The new `auth-throttled` event passes the contract check when the lab stops.
import { describe, expect, it } from 'vitest';
import { useLab } from './support/lab.js';

const BACKOFF_MS = 30_000; // longer than the test: the lock cannot end under it
const lab = useLab((l) =>
  l.with((def) => {
    def.authThrottle = { failuresPerAccount: 3, backoffMs: BACKOFF_MS, maxBackoffMs: BACKOFF_MS };
  }),
);

describe('login throttling', () => {
  it('three wrong passwords over POP3 and IMAP lock bob out from this address, the right one included; alice is unaffected', async () => {
    for (let i = 0; i < 2; i++) {
      await expect((await lab().pop3('bob@receiver.test', { password: `wrong-${i}`, device: `guess-${i}` })).download()).rejects.toThrow(/\[AUTH\]/);
    }
    await expect(lab().imap('bob@receiver.test', { password: 'wrong-imap', device: 'guess-imap' })).rejects.toThrow();

    const throttled = await lab().waitFor({ kind: 'auth-throttled', node: 'mailbox' });
    expect(throttled.detail).toMatchObject({ protocol: 'imap', login: 'bob@receiver.test', scope: 'account', retryAfterMs: BACKOFF_MS });
    // The node emits auth-failed before the auth-throttled of the same login, and its events arrive in order.
    const failed = lab().history.events.filter((e) => e.node === 'mailbox' && e.kind === 'auth-failed');
    expect(failed.map((e) => (e.detail as { protocol?: string }).protocol)).toEqual(['pop3', 'pop3', 'imap']);

    // The right password, while throttled: a temporary refusal.
    await expect((await lab().pop3('bob@receiver.test', { device: 'phone' })).download()).rejects.toThrow(/\[SYS\/TEMP\] Too many failed logins/);
    await expect(lab().imap('bob@receiver.test', { device: 'laptop' })).rejects.toThrow();
    // Another account from the same address logs in.
    await expect((await lab().pop3('alice@sender.test')).download()).resolves.toEqual([]);
    const alice = await lab().imap('alice@sender.test');
    await alice.close();
  });
});
