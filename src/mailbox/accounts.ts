// Account state of the mailbox server's users (issue 13): the main password (from the config), an optional TOTP
// secret (RFC 6238), named app passwords, and the recent logins of each app password.
//
// What a login may use:
// - a user with `totpSecret` (2FA): app passwords only on the mail protocols (IMAP, POP3, and SMTP AUTH through the
//   account service); the main password is refused with `app-password-required`, and only the account service's
//   login takes it, together with a TOTP code. A TOTP code is never a password.
// - a user without it: the main password, and any app passwords the user has.
//
// App passwords are kept as salted scrypt hashes in `<dataDir>/accounts.json`, written durably (temp file, fsync,
// rename, fsync of the directory: shared/fsutil.ts) before a creation or a revocation is reported done, so neither is
// lost to a restart. The config's app passwords are imported once (their names are remembered in `seeded`), so one
// revoked at run time stays revoked after a restart with the same config. The last TOTP step used for a login is
// kept in the same file: a code, once used, is refused for the rest of its window even across a restart (RFC 6238
// §5.2: the verifier must not accept the second attempt of the same OTP).
//
// Sessions logged in with an app password are tracked here, so that revoking it closes them at once.
import { createHash, randomBytes, randomInt, scrypt as scryptCb, timingSafeEqual, type ScryptOptions } from 'node:crypto';
import path from 'node:path';
import { Secret, TOTP } from 'otpauth';
import type { UserConfig } from '../shared/config.js';
import type { EventLog } from '../shared/events.js';
import { defaultFileSystem, writeFileDurable, type FileSystem } from '../shared/fsutil.js';
import type { AppPasswordInfo, MailboxEvents } from './api.js';

export type { AppPasswordInfo };

export type LoginProtocol = 'imap' | 'pop3' | 'smtp';

/** The outcome of a password check on a mail protocol. */
export type PasswordVerdict =
  | { kind: 'ok'; user: string; appPassword?: string }
  /** The user's main password, right, but the user has 2FA: only app passwords are taken here. */
  | { kind: 'app-password-required'; user: string }
  /** Unknown user, wrong password, or a TOTP code given as a password. */
  | { kind: 'invalid' };

export interface LoginRecord {
  protocol: LoginProtocol;
  client: string;
  /** ISO 8601. */
  time: string;
}

/** Why the account service's login was refused (the client is told only "invalid"; the reason is for tests and logs). */
export type AccountLoginResult = { ok: true; user: string } | { ok: false; reason: 'invalid' | 'totp-required' | 'totp-invalid' | 'totp-replayed' };

export class AccountError extends Error {
  constructor(
    readonly code: 'unknown-user' | 'exists' | 'not-found' | 'bad-name',
    message: string,
  ) {
    super(message);
  }
}

/** Recent logins kept per app password. */
export const RECENT_LOGINS = 20;
/** Generated app passwords: 16 lowercase letters (about 75 bits). */
const APP_PASSWORD_LENGTH = 16;
/** RFC 6238 as the config says: SHA-1, 6 digits, 30 s steps; the current step ±1 accepted (clock drift, §5.2). */
const TOTP_PERIOD = 30;
const TOTP_WINDOW = 1;
/**
 * scrypt's cost: N = 2^14, r = 8, p = 1 (RFC 7914's interactive-login figures). A login tries each of the user's app
 * passwords, and the check runs off the event loop (async scrypt), so other sessions are not held up.
 */
const SCRYPT = { N: 16384, r: 8, p: 1, keylen: 32 } as const;
const MAX_NAME_LENGTH = 64;

interface StoredAppPassword {
  name: string;
  /** `scrypt$N$r$p$<salt base64>$<hash base64>`: the parameters travel with the hash. */
  hash: string;
  created: string;
  lastUsed?: string;
  logins: LoginRecord[];
}

interface StoredAccount {
  appPasswords: StoredAppPassword[];
  /** Names of the config's app passwords already imported: never imported again, so a revocation holds. */
  seeded: string[];
  /** The last TOTP time step used for a login (replay protection). */
  totpStep?: number;
}

interface AccountsFile {
  version: 1;
  users: Record<string, StoredAccount>;
}

export interface AccountsOptions {
  /** `<dataDir>/accounts.json` holds the state. */
  dataDir: string;
  users: UserConfig[];
  /** The store's checks of names and main passwords (one place for `bob` = `bob@receiver.test`). */
  store: { resolveUser(login: string): string | undefined; authenticate(login: string, password: string): string | undefined };
  fsync: boolean;
  events?: EventLog<MailboxEvents>;
  log?: (message: string) => void;
  fs?: FileSystem;
  /** The clock (ms), for TOTP; tests may move it. */
  now?: () => number;
}

function scrypt(password: string, salt: Buffer, keylen: number, options: ScryptOptions): Promise<Buffer> {
  return new Promise((resolve, reject) => scryptCb(password, salt, keylen, options, (err, key) => (err ? reject(err) : resolve(key))));
}

export async function hashPassword(password: string): Promise<string> {
  const salt = randomBytes(16);
  const key = await scrypt(password, salt, SCRYPT.keylen, { N: SCRYPT.N, r: SCRYPT.r, p: SCRYPT.p });
  return `scrypt$${SCRYPT.N}$${SCRYPT.r}$${SCRYPT.p}$${salt.toString('base64')}$${key.toString('base64')}`;
}

export async function passwordMatchesHash(password: string, stored: string): Promise<boolean> {
  const [scheme, n, r, p, salt, hash] = stored.split('$');
  if (scheme !== 'scrypt' || !salt || !hash) return false;
  const expected = Buffer.from(hash, 'base64');
  const key = await scrypt(password, Buffer.from(salt, 'base64'), expected.length, { N: Number(n), r: Number(r), p: Number(p), maxmem: 64 * 1024 * 1024 });
  return timingSafeEqual(key, expected);
}

/** 16 random lowercase letters, uniformly drawn (randomInt has no modulo bias). */
export function generateAppPassword(): string {
  let out = '';
  for (let i = 0; i < APP_PASSWORD_LENGTH; i++) out += String.fromCharCode(97 + randomInt(26));
  return out;
}

function validName(name: unknown): name is string {
  return typeof name === 'string' && name.length > 0 && name.length <= MAX_NAME_LENGTH && /^[\x21-\x7e](?:[\x20-\x7e]*[\x21-\x7e])?$/.test(name) && !name.includes('/');
}

interface TrackedSession {
  user: string;
  appPassword: string;
  close(reason: string): void;
}

export class Accounts {
  private readonly file: string;
  private readonly fs: FileSystem;
  private readonly now: () => number;
  private readonly totp = new Map<string, TOTP>();
  private state: AccountsFile = { version: 1, users: {} };
  private readonly sessions = new Set<TrackedSession>();
  /** The write that has not started yet: later changes ride on it (it serializes the state when it starts). */
  private pendingWrite: Promise<void> | undefined;
  private lastWrite: Promise<void> = Promise.resolve();

  private constructor(private readonly options: AccountsOptions) {
    this.file = path.join(options.dataDir, 'accounts.json');
    this.fs = options.fs ?? defaultFileSystem;
    this.now = options.now ?? Date.now;
    for (const user of options.users) {
      if (user.totpSecret === undefined) continue;
      // Checked at start: a node with an unusable secret must not run and leave its users locked out.
      let secret: Secret;
      try {
        secret = Secret.fromBase32(user.totpSecret);
      } catch (err) {
        throw new Error(`user ${user.address}: totpSecret is not base32 (RFC 4648): ${(err as Error).message}`);
      }
      this.totp.set(user.address.toLowerCase(), new TOTP({ secret, algorithm: 'SHA1', digits: 6, period: TOTP_PERIOD }));
    }
  }

  /** Reads `accounts.json` (if any), imports the config's app passwords not imported before, and saves. */
  static async open(options: AccountsOptions): Promise<Accounts> {
    const accounts = new Accounts(options);
    await accounts.load();
    return accounts;
  }

  private async load(): Promise<void> {
    let text: string | undefined;
    try {
      text = await this.fs.readFile(this.file, 'utf8');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw new Error(`cannot read ${this.file}: ${(err as Error).message}`);
    }
    if (text !== undefined) {
      let parsed: AccountsFile;
      try {
        parsed = JSON.parse(text) as AccountsFile;
      } catch (err) {
        // Refusing to start beats starting without the revocations it holds.
        throw new Error(`${this.file} is not valid JSON (${(err as Error).message}); fix or remove it`);
      }
      if (parsed.version !== 1 || typeof parsed.users !== 'object' || parsed.users === null) throw new Error(`${this.file}: unknown format (version ${String(parsed.version)})`);
      this.state = parsed;
    }
    let changed = text === undefined;
    for (const user of this.options.users) {
      const account = this.account(user.address.toLowerCase());
      for (const initial of user.appPasswords ?? []) {
        if (account.seeded.includes(initial.name)) continue;
        if (!validName(initial.name)) throw new Error(`user ${user.address}: app password name ${JSON.stringify(initial.name)} is not usable (1-64 printable characters, no "/")`);
        account.seeded.push(initial.name);
        changed = true;
        // A name taken at run time meanwhile keeps its password: the config's is not imported over it.
        if (account.appPasswords.some((a) => a.name === initial.name)) continue;
        account.appPasswords.push({ name: initial.name, hash: await hashPassword(initial.password), created: new Date(this.now()).toISOString(), logins: [] });
      }
    }
    if (changed) await this.save();
  }

  private account(user: string): StoredAccount {
    return (this.state.users[user] ??= { appPasswords: [], seeded: [] });
  }

  /** Writes the state durably; a change made while a write is waiting to start is carried by that write. */
  private save(): Promise<void> {
    if (this.pendingWrite) return this.pendingWrite;
    const write = this.lastWrite.then(() => {
      this.pendingWrite = undefined;
      return writeFileDurable(this.file, JSON.stringify(this.state, null, 1), this.options.fsync, this.fs);
    });
    this.pendingWrite = write;
    this.lastWrite = write.catch(() => undefined);
    return write;
  }

  /** The user's address for a login name (`bob` or `bob@receiver.test`), when the node has that user. */
  resolve(login: string): string | undefined {
    return this.options.store.resolveUser(login);
  }

  hasTwoFactor(user: string): boolean {
    return this.totp.has(user.toLowerCase());
  }

  /**
   * A password given on a mail protocol. On success with an app password, the login is recorded (protocol, client,
   * time) as its most recent use; that record is written in the background (losing it loses no mail and no access).
   *
   * Synchronous when no app password has to be tried (the main password, a user without app passwords): an IMAP
   * LOGIN then completes before the next pipelined command is framed, which decides its literal limit.
   */
  verify(login: string, password: string, use: { protocol: LoginProtocol; client: string }): PasswordVerdict | Promise<PasswordVerdict> {
    const user = this.resolve(login);
    if (!user) return { kind: 'invalid' };
    const twoFactor = this.hasTwoFactor(user);
    // A TOTP code is a second factor, never a password: six digits from a 2FA user are not even compared.
    if (twoFactor && /^\d{6}$/.test(password)) return { kind: 'invalid' };
    if (this.options.store.authenticate(user, password)) return twoFactor ? { kind: 'app-password-required', user } : { kind: 'ok', user };
    const entries = [...(this.state.users[user]?.appPasswords ?? [])];
    return entries.length ? this.verifyAppPassword(user, password, entries, use) : { kind: 'invalid' };
  }

  private async verifyAppPassword(user: string, password: string, entries: StoredAppPassword[], use: { protocol: LoginProtocol; client: string }): Promise<PasswordVerdict> {
    for (const entry of entries) {
      if (!(await passwordMatchesHash(password, entry.hash))) continue;
      // Revoked while the hash was being computed: not good any more.
      if (!this.state.users[user]!.appPasswords.includes(entry)) return { kind: 'invalid' };
      const time = new Date(this.now()).toISOString();
      entry.lastUsed = time;
      entry.logins.unshift({ protocol: use.protocol, client: use.client, time });
      entry.logins.length = Math.min(entry.logins.length, RECENT_LOGINS);
      this.save().catch((err: Error) => this.options.log?.(`accounts: cannot record a login of ${user}: ${err.message}`));
      return { kind: 'ok', user, appPassword: entry.name };
    }
    return { kind: 'invalid' };
  }

  /**
   * The account service's login: main password and, for a 2FA user, a TOTP code of the current step ±1 not older
   * than or equal to the last one used. The step used is on disk before this returns ok.
   */
  async login(address: string, password: string, code: string | undefined): Promise<AccountLoginResult> {
    const user = this.options.store.authenticate(address, password);
    if (!user) return { ok: false, reason: 'invalid' };
    const totp = this.totp.get(user);
    if (!totp) return { ok: true, user };
    if (code === undefined || code === '') return { ok: false, reason: 'totp-required' };
    if (!/^\d{6}$/.test(code)) return { ok: false, reason: 'totp-invalid' };
    const timestamp = this.now();
    const delta = totp.validate({ token: code, timestamp, window: TOTP_WINDOW });
    if (delta === null) return { ok: false, reason: 'totp-invalid' };
    const step = Math.floor(timestamp / 1000 / TOTP_PERIOD) + delta;
    const account = this.account(user);
    if (account.totpStep !== undefined && step <= account.totpStep) return { ok: false, reason: 'totp-replayed' };
    account.totpStep = step;
    await this.save();
    return { ok: true, user };
  }

  list(user: string): AppPasswordInfo[] {
    return (this.state.users[this.known(user)]?.appPasswords ?? []).map(({ name, created, lastUsed }) => ({ name, created, ...(lastUsed ? { lastUsed } : {}) }));
  }

  logins(user: string): Array<{ name: string; logins: LoginRecord[] }> {
    return (this.state.users[this.known(user)]?.appPasswords ?? []).map(({ name, logins }) => ({ name, logins: logins.map((l) => ({ ...l })) }));
  }

  /** A new app password: returned in clear this once, kept only as a hash, on disk before this returns. */
  async create(user: string, name: unknown): Promise<{ name: string; password: string }> {
    const address = this.known(user);
    if (!validName(name)) throw new AccountError('bad-name', 'name must be 1-64 printable ASCII characters, without "/" or spaces at either end');
    const account = this.account(address);
    if (account.appPasswords.some((a) => a.name === name)) throw new AccountError('exists', `${address} already has an app password named ${JSON.stringify(name)}`);
    const password = generateAppPassword();
    const entry: StoredAppPassword = { name, hash: await hashPassword(password), created: new Date(this.now()).toISOString(), logins: [] };
    // Checked again: another request may have taken the name while the hash was computed.
    if (account.appPasswords.some((a) => a.name === name)) throw new AccountError('exists', `${address} already has an app password named ${JSON.stringify(name)}`);
    account.appPasswords.push(entry);
    try {
      await this.save();
    } catch (err) {
      account.appPasswords.splice(account.appPasswords.indexOf(entry), 1);
      throw err;
    }
    this.options.events?.emit({ kind: 'app-password', detail: { user: address, name, action: 'created', closedSessions: 0 } });
    return { name, password };
  }

  /**
   * Revokes an app password: it stops working at once (before the write), the sessions logged in with it are closed,
   * and the revocation is on disk before this returns.
   */
  async revoke(user: string, name: unknown): Promise<{ closedSessions: number }> {
    const address = this.known(user);
    const account = this.state.users[address];
    const index = account?.appPasswords.findIndex((a) => a.name === name) ?? -1;
    if (!account || index < 0) throw new AccountError('not-found', `${address} has no app password named ${JSON.stringify(name)}`);
    account.appPasswords.splice(index, 1);
    let closedSessions = 0;
    for (const session of [...this.sessions]) {
      if (session.user !== address || session.appPassword !== name) continue;
      this.sessions.delete(session);
      closedSessions++;
      session.close(`App password ${JSON.stringify(name)} of ${address} was revoked`);
    }
    this.options.events?.emit({ kind: 'app-password', detail: { user: address, name: name as string, action: 'revoked', closedSessions } });
    await this.save();
    return { closedSessions };
  }

  /** A session logged in with an app password, closed when it is revoked; the returned function forgets it. */
  track(user: string, appPassword: string, close: (reason: string) => void): () => void {
    const session: TrackedSession = { user: user.toLowerCase(), appPassword, close };
    this.sessions.add(session);
    return () => this.sessions.delete(session);
  }

  /** Waits for writes under way (the node's stop). */
  async flush(): Promise<void> {
    await this.lastWrite;
  }

  private known(user: string): string {
    const address = this.resolve(user);
    if (!address) throw new AccountError('unknown-user', `unknown user ${JSON.stringify(user)}`);
    return address;
  }
}

/** Constant-time comparison of two secrets of any length (digests first, so the lengths leak nothing). */
export function sameSecret(given: string, expected: string): boolean {
  const digest = (s: string) => createHash('sha256').update(s, 'utf8').digest();
  return timingSafeEqual(digest(given), digest(expected));
}
