// Account state (issue 13) on a real data directory: app passwords hashed and durable, revocations durable, TOTP
// (RFC 6238) with the current step ±1 and no replay, even across a reopen. TOTP codes come from otpauth itself.
import { promises as fs } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Secret, TOTP } from 'otpauth';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { UserConfig } from '../shared/config.js';
import { recordingFileSystem } from '../shared/fs-recorder.test-helper.js';
import { Accounts, AccountError, RECENT_LOGINS } from './accounts.js';

const SECRET = new Secret({ size: 20 }).base32;
const BOB = 'bob@receiver.test';
const CAROL = 'carol@receiver.test';
const USERS: UserConfig[] = [
  { address: BOB, password: 'bob-secret', totpSecret: SECRET, appPasswords: [{ name: 'phone', password: 'phone-app-password' }] },
  { address: CAROL, password: 'carol-secret' },
];
const use = { protocol: 'imap' as const, client: '127.0.0.9' };
const totp = new TOTP({ secret: Secret.fromBase32(SECRET), algorithm: 'SHA1', digits: 6, period: 30 });

let dataDir: string;
let clock: number;

beforeEach(async () => {
  dataDir = await fs.mkdtemp(path.join(os.tmpdir(), 'maillab-accounts-'));
  clock = Date.UTC(2026, 0, 1, 12, 0, 10);
});
afterEach(() => fs.rm(dataDir, { recursive: true, force: true }));

/** The store's two checks, as MaildirStore does them (names case-insensitive, `bob` for `bob@receiver.test`). */
const store = {
  resolveUser: (login: string) => USERS.find((u) => u.address === login.toLowerCase() || u.address.split('@')[0] === login.toLowerCase())?.address,
  authenticate(login: string, password: string) {
    const user = USERS.find((u) => u.address === this.resolveUser(login));
    return user && user.password === password ? user.address : undefined;
  },
};

function open(options: { fs?: typeof fs; users?: UserConfig[] } = {}): Promise<Accounts> {
  return Accounts.open({ dataDir, users: options.users ?? USERS, store, fsync: true, now: () => clock, ...(options.fs ? { fs: options.fs } : {}) });
}

describe('passwords on the mail protocols', () => {
  it("a 2FA user's main password is refused as app-password-required; an app password works; a TOTP code is never a password", async () => {
    const accounts = await open();
    expect(await accounts.verify('bob', 'bob-secret', use)).toEqual({ kind: 'app-password-required', user: BOB });
    expect(await accounts.verify('bob', 'phone-app-password', use)).toEqual({ kind: 'ok', user: BOB, appPassword: 'phone' });
    expect(await accounts.verify('bob', totp.generate({ timestamp: clock }), use)).toEqual({ kind: 'invalid' });
    expect(await accounts.verify('bob', 'wrong', use)).toEqual({ kind: 'invalid' });
    expect(await accounts.verify('nobody@receiver.test', 'phone-app-password', use)).toEqual({ kind: 'invalid' });
    // Without 2FA the main password is enough; app passwords work for such users too.
    expect(await accounts.verify(CAROL, 'carol-secret', use)).toEqual({ kind: 'ok', user: CAROL });
    const { password } = await accounts.create(CAROL, 'tablet');
    expect(await accounts.verify(CAROL, password, use)).toEqual({ kind: 'ok', user: CAROL, appPassword: 'tablet' });
  });

  it('records the recent logins of each app password, the newest first, at most RECENT_LOGINS', async () => {
    const accounts = await open();
    for (let i = 0; i < RECENT_LOGINS + 3; i++) {
      clock += 1000;
      // The last (i = RECENT_LOGINS + 2, even) is an SMTP login.
      await accounts.verify(BOB, 'phone-app-password', { protocol: i % 2 ? 'pop3' : 'smtp', client: `127.0.0.${i + 1}` });
    }
    const [phone] = accounts.logins(BOB);
    expect(phone!.name).toBe('phone');
    expect(phone!.logins).toHaveLength(RECENT_LOGINS);
    expect(phone!.logins[0]).toEqual({ protocol: 'smtp', client: `127.0.0.${RECENT_LOGINS + 3}`, time: new Date(clock).toISOString() });
    expect(accounts.list(BOB)[0]!.lastUsed).toBe(new Date(clock).toISOString());
  });
});

describe('app passwords on disk', () => {
  it('a new one is 16 lowercase letters, shown once, kept only as a salted scrypt hash, on disk (fsync, rename) before create() returns', async () => {
    const recorder = recordingFileSystem();
    const accounts = await open({ fs: recorder.fs });
    const before = recorder.log.length;
    const created = await accounts.create(BOB, 'laptop');
    recorder.mark('created');
    expect(created.password).toMatch(/^[a-z]{16}$/);
    const text = await fs.readFile(path.join(dataDir, 'accounts.json'), 'utf8');
    expect(text).not.toContain(created.password);
    expect(text).not.toContain('phone-app-password');
    expect(text).toMatch(/"hash": "scrypt\$16384\$8\$1\$/);
    const ops = recorder.log.slice(before).map((o) => o.op);
    // The temp file synced, renamed over accounts.json, the directory synced: all before create() resolved.
    expect(ops.indexOf('sync')).toBeGreaterThanOrEqual(0);
    expect(ops.indexOf('rename')).toBeGreaterThan(ops.indexOf('sync'));
    expect(ops.lastIndexOf('sync')).toBeGreaterThan(ops.indexOf('rename'));
    expect(ops.at(-1)).toBe('mark');
    await expect(accounts.create(BOB, 'laptop')).rejects.toMatchObject({ code: 'exists' });
    await expect(accounts.create(BOB, 'bad/name')).rejects.toBeInstanceOf(AccountError);
  });

  it('created and revoked ones survive a reopen; a revoked config one is not imported again', async () => {
    const first = await open();
    const laptop = await first.create(BOB, 'laptop');
    expect(await first.revoke(BOB, 'phone')).toEqual({ closedSessions: 0 });
    expect(await first.verify(BOB, 'phone-app-password', use)).toEqual({ kind: 'invalid' });
    await first.flush();

    const second = await open();
    expect(second.list(BOB).map((a) => a.name)).toEqual(['laptop']);
    expect(await second.verify(BOB, laptop.password, use)).toEqual({ kind: 'ok', user: BOB, appPassword: 'laptop' });
    expect(await second.verify(BOB, 'phone-app-password', use)).toEqual({ kind: 'invalid' });
    await expect(second.revoke(BOB, 'phone')).rejects.toMatchObject({ code: 'not-found' });
  });

  it('revoking closes the sessions tracked under that app password only', async () => {
    const accounts = await open();
    await accounts.create(BOB, 'laptop');
    const closed: string[] = [];
    accounts.track(BOB, 'phone', (reason) => closed.push(`phone: ${reason}`));
    accounts.track(BOB, 'laptop', (reason) => closed.push(`laptop: ${reason}`));
    const forgotten = accounts.track(BOB, 'phone', () => closed.push('forgotten'));
    forgotten();
    expect(await accounts.revoke(BOB, 'phone')).toEqual({ closedSessions: 1 });
    expect(closed).toEqual([`phone: App password "phone" of ${BOB} was revoked`]);
  });

  it('a corrupt accounts.json stops the start with a message naming it', async () => {
    await fs.writeFile(path.join(dataDir, 'accounts.json'), '{"version":1,');
    await expect(open()).rejects.toThrow(/accounts\.json is not valid JSON/);
  });
});

describe('the account service login: password and TOTP', () => {
  it('takes the current code and those of the steps either side; refuses other codes, a missing one and a wrong password', async () => {
    const accounts = await open();
    expect(await accounts.login(BOB, 'bob-secret', totp.generate({ timestamp: clock - 30_000 }))).toEqual({ ok: true, user: BOB });
    expect(await accounts.login(BOB, 'bob-secret', totp.generate({ timestamp: clock + 30_000 }))).toEqual({ ok: true, user: BOB });
    expect(await accounts.login(BOB, 'bob-secret', totp.generate({ timestamp: clock + 90_000 }))).toEqual({ ok: false, reason: 'totp-invalid' });
    expect(await accounts.login(BOB, 'bob-secret', undefined)).toEqual({ ok: false, reason: 'totp-required' });
    expect(await accounts.login(BOB, 'wrong', totp.generate({ timestamp: clock + 60_000 }))).toEqual({ ok: false, reason: 'invalid' });
    // A user without 2FA logs in with the password alone.
    expect(await accounts.login(CAROL, 'carol-secret', undefined)).toEqual({ ok: true, user: CAROL });
  });

  it('refuses a code used once, and any older one, also after a reopen', async () => {
    const accounts = await open();
    const code = totp.generate({ timestamp: clock });
    expect(await accounts.login(BOB, 'bob-secret', code)).toEqual({ ok: true, user: BOB });
    expect(await accounts.login(BOB, 'bob-secret', code)).toEqual({ ok: false, reason: 'totp-replayed' });
    expect(await accounts.login(BOB, 'bob-secret', totp.generate({ timestamp: clock - 30_000 }))).toEqual({ ok: false, reason: 'totp-replayed' });
    const reopened = await open();
    expect(await reopened.login(BOB, 'bob-secret', code)).toEqual({ ok: false, reason: 'totp-replayed' });
    clock += 30_000;
    expect(await reopened.login(BOB, 'bob-secret', totp.generate({ timestamp: clock }))).toEqual({ ok: true, user: BOB });
  });

  it('a totpSecret that is not base32 stops the start, naming the user', async () => {
    await expect(open({ users: [{ address: BOB, password: 'x', totpSecret: 'not base32 at all!' }] })).rejects.toThrow(/bob@receiver\.test: totpSecret is not base32/);
  });
});
