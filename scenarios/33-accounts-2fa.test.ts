// Scenario 33 (issue 13, accounts with two-factor authentication): dave@receiver.test has a TOTP secret and an app
// password `laptop` in the default lab. His main password opens only the account service (with a TOTP code); mail
// clients use app passwords. The account service (HTTPS on the mailbox server) makes and revokes them.
import { describe, expect, it } from 'vitest';
import { useLab } from './support/lab.js';

const DAVE = 'dave@receiver.test';
const LAPTOP = 'dave-laptop-app-password';
const APP_PASSWORD_NEEDED = /two-factor authentication.*app password|app password required/;

describe('accounts with two-factor authentication', () => {
  // The refusals below are a dozen failed logins of one account from one address: more than the default throttle
  // lets through (5), which scenarios 19 and 20 show. Here each refusal must say why, so the throttle is wider.
  const lab = useLab((l) => l.with((def) => (def.authThrottle = { failuresPerAccount: 20 })));

  it('lost phone: revoking its app password ends its session; the laptop keeps syncing and alone gets new mail', async () => {
    const login = await lab().accounts(DAVE).login('dave-secret', lab().totp(DAVE));
    expect(login.status, JSON.stringify(login.body)).toBe(200);
    const account = lab().accounts(DAVE).session(login.body.session!);
    const made = await account.create('phone');
    expect(made.status).toBe(201);
    expect(made.body.password).toMatch(/^[a-z]{16}$/);
    const phonePassword = made.body.password;

    const phone = await lab().imap(DAVE, { device: 'phone', password: phonePassword });
    const laptop = await lab().imap(DAVE, { device: 'laptop', password: LAPTOP });
    const first = await lab().client('alice@sender.test').send({ to: DAVE, subject: 'before', text: 'both see this\n' });
    await phone.waitForMessage(first.messageId);
    await laptop.waitForMessage(first.messageId);
    const sessions = lab().history.filter({ kind: 'session', node: 'mailbox', detail: { user: DAVE } });
    expect(sessions.map((s) => s.detail.appPassword).sort()).toEqual(['laptop', 'phone']);

    // The phone is lost: dave revokes its app password.
    expect((await account.revoke('phone')).status).toBe(204);
    const revoked = await lab().waitFor({ kind: 'app-password', detail: { user: DAVE, name: 'phone', action: 'revoked' } });
    expect(revoked.detail.closedSessions).toBe(1);
    await expect(phone.sync()).rejects.toThrow(/IMAP device dave@receiver\.test\/phone: cannot sync/);
    expect(phone.connected).toBe(false);
    await expect(lab().imap(DAVE, { device: 'thief', password: phonePassword })).rejects.toThrow();

    const second = await lab().client('alice@sender.test').send({ to: DAVE, subject: 'after', text: 'only the laptop sees this\n' });
    await laptop.waitForMessage(second.messageId);
    await laptop.sync();
    expect(laptop.connected).toBe(true);
    expect(phone.find(second.messageId)).toBeUndefined();
    expect((await account.appPasswords()).body.map((a) => a.name)).toEqual(['laptop']);
    const logins = (await account.logins()).body;
    expect(logins.find((l) => l.name === 'laptop')!.logins[0]).toMatchObject({ protocol: 'imap', client: expect.any(String) });
  });

  it('a mail client with the main password is told to use an app password, on SMTP, IMAP and POP3; a TOTP code is never a mail password', async () => {
    await expect(lab().client(DAVE, { password: 'dave-secret' }).send({ to: 'bob@receiver.test', subject: 'x', text: 'x' })).rejects.toThrow(/535 5\.7\.8 .*two-factor authentication, use an app password/);
    await expect(lab().imap(DAVE, { device: 'old-client', password: 'dave-secret' })).rejects.toThrow();
    // The refusal says why (the revoked phone's earlier refusal in this lab has no reason: it was a wrong password).
    await lab().waitFor({ kind: 'auth-failed', node: 'mailbox', detail: { protocol: 'imap', login: DAVE, reason: 'app-password-required' } });
    await expect((await lab().pop3(DAVE, { device: 'old-pop', password: 'dave-secret' })).download()).rejects.toThrow(APP_PASSWORD_NEEDED);
    await expect(lab().imap(DAVE, { device: 'confused', password: lab().totp(DAVE) })).rejects.toThrow();
    // The app password works where the main one did not.
    const sent = await lab().client(DAVE, { password: LAPTOP }).send({ to: 'bob@receiver.test', subject: 'from the laptop', text: 'app passwords work\n' });
    await lab().waitFor({ kind: 'stored', messageId: sent.messageId, detail: { user: 'bob@receiver.test' } });
  });

  it('a wrong TOTP code, or a code used once already, is refused at the account service', async () => {
    const accounts = lab().accounts(DAVE);
    // The next time step (accepted, ±1): the first test used the current one, which is spent.
    const code = lab().totp(DAVE, Date.now() + 30_000);
    const wrong = String((Number(code) + 1) % 1_000_000).padStart(6, '0');
    expect((await accounts.login('dave-secret', wrong)).status).toBe(401);
    expect((await accounts.login('dave-secret')).status).toBe(401);
    const ok = await accounts.login('dave-secret', code);
    expect(ok.status).toBe(200);
    const replayed = await accounts.login('dave-secret', code);
    expect(replayed.status).toBe(401);
    expect(replayed.body.Error).toMatch(/invalid credentials/);
  });
});
