// The account service and the mail protocols under issue 13's accounts, on a real mailbox node started in-process:
// HTTPS with a certificate of the test CA (node's https client and curl, each trusting that CA only), IMAP with
// imapflow and raw lines, POP3 with raw lines, TOTP codes made by otpauth.
import { execFile } from 'node:child_process';
import https from 'node:https';
import { promisify } from 'node:util';
import { ImapFlow } from 'imapflow';
import { Secret, TOTP } from 'otpauth';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Endpoint, MailboxNodeConfig, UserConfig } from '../shared/config.js';
import type { RunningRole } from '../shared/node.js';
import { TlsLines } from '../shared/tls-lines.test-helper.js';
import { testPki, type TestPki } from '../shared/tls.test-helper.js';
import { ACCOUNT_MAX_BODY_BYTES } from './account-service.js';
import type { MailboxContract } from './api.js';
import { startMailbox } from './index.js';
import { testContext, type TestContext } from './testkit.test-helper.js';

const SECRET = new Secret({ size: 20 }).base32;
const totp = new TOTP({ secret: Secret.fromBase32(SECRET), algorithm: 'SHA1', digits: 6, period: 30 });
const BOB = 'bob@receiver.test';
const CAROL = 'carol@receiver.test';
const CONTROL_TOKEN = 'lab-control-token-for-tests';
const USERS: UserConfig[] = [
  {
    address: BOB,
    password: 'bob-secret',
    totpSecret: SECRET,
    appPasswords: [
      { name: 'phone', password: 'phonephonephonep' },
      { name: 'laptop', password: 'laptoplaptoplapt' },
    ],
  },
  { address: CAROL, password: 'carol-secret' },
];
/** Generous, so that the refusals these tests provoke on purpose never throttle the next test. */
const THROTTLE: MailboxNodeConfig['authThrottle'] = { enabled: true, failuresPerConnection: 10, failuresPerAccount: 100, failuresPerAddress: 1000, windowMs: 60_000, backoffMs: 1000, maxBackoffMs: 5000 };
const ports = { lmtp: 0, imap: 0, pop3: 0, imaps: 0, pop3s: 0 };

let pki: TestPki;
let ctx: TestContext;
let node: RunningRole<MailboxContract>;
const toClose: Array<{ close(): void }> = [];

const service = (name: string): Endpoint => node.services[name]!;

beforeAll(async () => {
  pki = await testPki();
  ctx = await testContext({ ports, tls: pki.tls, users: USERS, accounts: { port: 0 }, controlToken: CONTROL_TOKEN, authThrottle: THROTTLE });
  node = await startMailbox(ctx);
});

afterAll(async () => {
  for (const c of toClose) c.close();
  await node?.stop();
  await ctx?.cleanup();
});

interface Answer {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: any;
}

/** One request to the account service over HTTPS, trusting the test CA only. */
function api(method: string, path: string, options: { json?: unknown; raw?: string | Buffer; token?: string; to?: Endpoint } = {}): Promise<Answer> {
  const to = options.to ?? service('accounts');
  const payload = options.raw ?? (options.json === undefined ? undefined : JSON.stringify(options.json));
  return new Promise((resolve, reject) => {
    const req = https.request(
      {
        host: to.host,
        port: to.port,
        method,
        path,
        ca: pki.ca,
        agent: false,
        headers: {
          ...(payload !== undefined ? { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(payload) } : {}),
          ...(options.token ? { Authorization: `Bearer ${options.token}` } : {}),
        },
      },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => {
          const text = Buffer.concat(chunks).toString('utf8');
          resolve({ status: res.statusCode!, headers: res.headers, body: text ? JSON.parse(text) : undefined });
        });
      },
    );
    req.on('error', reject);
    req.end(payload);
  });
}

/**
 * A TOTP code of a time step not used yet: each login uses one up and the service refuses it, and any older one,
 * afterwards. Only the steps either side of the current one are accepted, so the tests log in as bob (2FA) at most
 * three times; the others use carol, who has no 2FA.
 */
let nextStep = Math.floor(Date.now() / 30_000) - 2;
function freshCode(): string {
  nextStep = Math.max(nextStep + 1, Math.floor(Date.now() / 30_000) - 1);
  return totp.generate({ timestamp: nextStep * 30_000 });
}

async function webLogin(address = BOB, password = 'bob-secret'): Promise<string> {
  const answer = await api('POST', '/api/v1/login', { json: { address, password, ...(address === BOB ? { totp: freshCode() } : {}) } });
  expect(answer.status, JSON.stringify(answer.body)).toBe(200);
  return answer.body.session as string;
}

async function imapLines(): Promise<TlsLines> {
  const c = await TlsLines.connect(service('imaps'), pki.ca);
  toClose.push(c);
  expect(await c.line()).toMatch(/^\* OK /);
  return c;
}

async function pop3Lines(): Promise<TlsLines> {
  const c = await TlsLines.connect(service('pop3s'), pki.ca);
  toClose.push(c);
  expect(await c.line()).toMatch(/^\+OK /);
  return c;
}

async function imapflow(user: string, pass: string): Promise<ImapFlow> {
  // IDLE only when a test asks for it (imapflow's own would start after seconds of quiet).
  const client = new ImapFlow({ host: service('imaps').host, port: service('imaps').port, secure: true, auth: { user, pass }, tls: { ca: pki.ca, servername: 'localhost' }, logger: false, disableAutoIdle: true } as any);
  client.on('error', () => undefined);
  await client.connect();
  toClose.push({ close: () => client.close() });
  return client;
}

const lastEvent = (kind: string) => ctx.emitted(kind).at(-1)?.detail as Record<string, unknown> | undefined;

describe('the lost phone', () => {
  it('revoking one app password over HTTPS closes its IMAP session with BYE; the other device keeps working and sees new mail', async () => {
    // The phone: raw lines, so the BYE is seen as sent.
    const phone = await imapLines();
    phone.write('a LOGIN bob@receiver.test phonephonephonep\r\n');
    expect(await phone.line()).toMatch(/^a OK /);
    expect(lastEvent('session')).toMatchObject({ user: BOB, protocol: 'imap', method: 'LOGIN', appPassword: 'phone' });
    phone.write('b SELECT INBOX\r\n');
    await phone.until(/^b OK /);
    phone.write('c IDLE\r\n');
    expect(await phone.line()).toMatch(/^\+ /);
    // The laptop: imapflow, idling on INBOX.
    const laptop = await imapflow(BOB, 'laptoplaptoplapt');
    expect(lastEvent('session')).toMatchObject({ user: BOB, appPassword: 'laptop' });
    const box = await laptop.mailboxOpen('INBOX');
    const countBefore = box.exists;

    const session = await webLogin();
    const revoked = await api('DELETE', '/api/v1/app-passwords/phone', { token: session });
    expect(revoked.status).toBe(204);

    expect(await phone.line()).toBe(`* BYE App password "phone" of ${BOB} was revoked`);
    await expect(phone.line(2000)).rejects.toThrow();
    expect(lastEvent('app-password')).toEqual({ user: BOB, name: 'phone', action: 'revoked', closedSessions: 1 });

    const arrived = new Promise<number>((resolve) => laptop.on('exists', (data: { count: number }) => resolve(data.count)));
    void laptop.idle();
    await node.rpc.deliver!({ user: BOB, data: Buffer.from('From: alice@sender.test\r\nSubject: after the phone was lost\r\n\r\nhi\r\n').toString('base64') });
    expect(await arrived).toBe(countBefore + 1);
    const fetched = await laptop.fetchOne('*', { envelope: true });
    expect(fetched && fetched.envelope?.subject).toBe('after the phone was lost');

    // The phone's password is refused from now on, on every protocol.
    const again = await imapLines();
    again.write('a LOGIN bob@receiver.test phonephonephonep\r\n');
    expect(await again.line()).toBe('a NO [AUTHENTICATIONFAILED] Authentication failed');
    const listed = await api('GET', '/api/v1/app-passwords', { token: session });
    expect(listed.body.map((a: { name: string }) => a.name)).toEqual(['laptop']);
    await laptop.logout();
  });

  it('revoking an app password closes its POP3 session (without deleting what it marked), through the control operation too', async () => {
    await node.rpc.deliver!({ user: CAROL, data: Buffer.from('Subject: to be deleted\r\n\r\nx\r\n').toString('base64') });
    const session = await webLogin(CAROL, 'carol-secret');
    const created = await api('POST', '/api/v1/app-passwords', { token: session, json: { name: 'old mail client' } });
    expect(created.status).toBe(201);
    expect(created.body).toEqual({ name: 'old mail client', password: expect.stringMatching(/^[a-z]{16}$/) });
    expect(lastEvent('app-password')).toEqual({ user: CAROL, name: 'old mail client', action: 'created', closedSessions: 0 });
    const pop = await pop3Lines();
    pop.write('USER carol\r\n');
    expect(await pop.line()).toMatch(/^\+OK/);
    pop.write(`PASS ${created.body.password}\r\n`);
    expect(await pop.line()).toMatch(/^\+OK maildrop has/);
    expect(lastEvent('session')).toMatchObject({ user: CAROL, protocol: 'pop3', method: 'USER', appPassword: 'old mail client' });
    pop.write('DELE 1\r\n');
    expect(await pop.line()).toMatch(/^\+OK/);
    const before = ((await node.rpc.messages!({ user: CAROL })) as unknown[]).length;

    expect(await node.rpc['revoke-app-password']!({ user: CAROL, name: 'old mail client' })).toEqual({ closedSessions: 1 });
    expect(await pop.line()).toBe('-ERR [AUTH] app password "old mail client" was revoked, closing');
    await expect(pop.line(2000)).rejects.toThrow();
    expect(((await node.rpc.messages!({ user: CAROL })) as unknown[]).length).toBe(before);
    expect(lastEvent('app-password')).toEqual({ user: CAROL, name: 'old mail client', action: 'revoked', closedSessions: 1 });
    expect(await node.rpc['app-passwords']!({ user: CAROL })).toEqual([]);
  });
});

describe("a 2FA user's main password and TOTP codes on the mail protocols", () => {
  it('IMAP LOGIN and AUTHENTICATE refuse the main password saying an app password is required', async () => {
    const c = await imapLines();
    c.write('a LOGIN bob@receiver.test bob-secret\r\n');
    expect(await c.line()).toBe(`a NO [AUTHENTICATIONFAILED] ${BOB} has two-factor authentication: app password required`);
    expect(lastEvent('auth-failed')).toMatchObject({ protocol: 'imap', login: BOB, reason: 'app-password-required' });
    c.write(`b AUTHENTICATE PLAIN ${Buffer.from(`\0bob\0bob-secret`).toString('base64')}\r\n`);
    expect(await c.line()).toBe(`b NO [AUTHENTICATIONFAILED] ${BOB} has two-factor authentication: app password required`);
  });

  it('POP3 USER/PASS and AUTH PLAIN refuse it the same way', async () => {
    const c = await pop3Lines();
    c.write('USER bob@receiver.test\r\nPASS bob-secret\r\n');
    expect(await c.line()).toMatch(/^\+OK/);
    expect(await c.line()).toBe(`-ERR [AUTH] ${BOB} has two-factor authentication: app password required`);
    c.write(`AUTH PLAIN ${Buffer.from(`\0bob\0bob-secret`).toString('base64')}\r\n`);
    expect(await c.line()).toBe(`-ERR [AUTH] ${BOB} has two-factor authentication: app password required`);
  });

  it('a TOTP code given as the password never logs in', async () => {
    const c = await imapLines();
    c.write(`a LOGIN bob@receiver.test ${totp.generate()}\r\n`);
    expect(await c.line()).toBe('a NO [AUTHENTICATIONFAILED] Authentication failed');
    const p = await pop3Lines();
    p.write(`USER bob\r\nPASS ${totp.generate()}\r\n`);
    await p.line();
    expect(await p.line()).toBe('-ERR [AUTH] invalid user name or password');
  });

  it('a user without 2FA still logs in with the main password', async () => {
    const client = await imapflow(CAROL, 'carol-secret');
    expect(lastEvent('session')).toMatchObject({ user: CAROL, protocol: 'imap' });
    expect(lastEvent('session')).not.toHaveProperty('appPassword');
    await client.logout();
  });
});

describe('the account service API', () => {
  it('login: a wrong TOTP code, a replayed one, a missing one and a wrong password get 401, each counted as a failed login', async () => {
    const failedBefore = ctx.emitted('auth-failed').length;
    const wrong = await api('POST', '/api/v1/login', { json: { address: BOB, password: 'bob-secret', totp: String((Number(totp.generate()) + 1) % 1_000_000).padStart(6, '0') } });
    expect(wrong).toMatchObject({ status: 401, body: { Error: 'invalid credentials' } });
    const code = freshCode();
    expect((await api('POST', '/api/v1/login', { json: { address: BOB, password: 'bob-secret', totp: code } })).status).toBe(200);
    const replayed = await api('POST', '/api/v1/login', { json: { address: BOB, password: 'bob-secret', totp: code } });
    expect(replayed).toMatchObject({ status: 401, body: { Error: 'invalid credentials' } });
    const missing = await api('POST', '/api/v1/login', { json: { address: BOB, password: 'bob-secret' } });
    expect(missing.status).toBe(401);
    expect(missing.body.Error).toMatch(/needs a TOTP code/);
    expect((await api('POST', '/api/v1/login', { json: { address: BOB, password: 'nope', totp: totp.generate() } })).status).toBe(401);
    const failed = ctx.emitted('auth-failed').slice(failedBefore).map((e) => e.detail);
    expect(failed).toHaveLength(4);
    expect(failed.every((d) => d.protocol === 'accounts' && d.login === BOB)).toBe(true);
  });

  it('a session is a bearer token valid for 10 minutes; without one, or with a made-up one, 401', async () => {
    const answer = await api('POST', '/api/v1/login', { json: { address: CAROL, password: 'carol-secret' } });
    expect(answer.status).toBe(200);
    expect(answer.body.session).toMatch(/^[A-Za-z0-9_-]{43}$/);
    const lifetime = Date.parse(answer.body.expiresAt) - Date.now();
    expect(lifetime).toBeGreaterThan(9 * 60_000);
    expect(lifetime).toBeLessThanOrEqual(10 * 60_000);
    expect(await api('GET', '/api/v1/app-passwords')).toMatchObject({ status: 401, headers: { 'www-authenticate': 'Bearer' } });
    expect((await api('GET', '/api/v1/app-passwords', { token: 'made-up' })).status).toBe(401);
    expect(await api('GET', '/api/v1/app-passwords', { token: answer.body.session })).toMatchObject({ status: 200, body: [] });
  });

  it('app passwords: 409 for a name taken, 404 for one not there, 400 for a bad name; logins lists the recent logins per app password', async () => {
    const session = await webLogin(CAROL, 'carol-secret');
    const created = await api('POST', '/api/v1/app-passwords', { token: session, json: { name: 'tablet' } });
    expect(created.status).toBe(201);
    expect((await api('POST', '/api/v1/app-passwords', { token: session, json: { name: 'tablet' } })).status).toBe(409);
    expect((await api('POST', '/api/v1/app-passwords', { token: session, json: { name: '' } })).status).toBe(400);
    expect((await api('DELETE', '/api/v1/app-passwords/nothing-here', { token: session })).status).toBe(404);
    // App passwords work for users without 2FA too, and their use is listed.
    const client = await imapflow(CAROL, created.body.password);
    await client.logout();
    const logins = await api('GET', '/api/v1/logins', { token: session });
    expect(logins.status).toBe(200);
    expect(logins.body).toEqual([{ name: 'tablet', logins: [{ protocol: 'imap', client: '127.0.0.1', time: expect.any(String) }] }]);
    const listed = await api('GET', '/api/v1/app-passwords', { token: session });
    expect(listed.body).toEqual([{ name: 'tablet', created: expect.any(String), lastUsed: logins.body[0].logins[0].time }]);
  });

  it('answers errors as JSON with fitting statuses: 404, 405, 400, 413', async () => {
    expect(await api('GET', '/api/v1/nothing')).toMatchObject({ status: 404, body: { Error: expect.stringMatching(/no such endpoint/) } });
    expect(await api('GET', '/api/v1/login')).toMatchObject({ status: 405, headers: { allow: 'POST' }, body: { Error: expect.any(String) } });
    expect(await api('POST', '/api/v1/login', { raw: '{not json' })).toMatchObject({ status: 400, body: { Error: expect.stringMatching(/not JSON/) } });
    expect(await api('POST', '/api/v1/login', { raw: '[1]' })).toMatchObject({ status: 400, body: { Error: 'the body must be a JSON object' } });
    expect(await api('POST', '/api/v1/login', { json: { address: BOB } })).toMatchObject({ status: 400, body: { Error: '"password" must be a non-empty string' } });
    const big = await api('POST', '/api/v1/login', { raw: JSON.stringify({ address: BOB, password: 'x'.repeat(ACCOUNT_MAX_BODY_BYTES) }) });
    expect(big).toMatchObject({ status: 413, body: { Error: expect.stringMatching(/larger than 16384 bytes/) } });
  });

  it("/api/v1/auth answers the MTA's question with the control token only", async () => {
    const ask = (password: string, token = CONTROL_TOKEN) => api('POST', '/api/v1/auth', { token, json: { user: 'bob', password, protocol: 'smtp', client: '127.0.0.5' } });
    expect((await ask('laptoplaptoplapt', 'wrong token')).status).toBe(401);
    expect(await ask('laptoplaptoplapt')).toMatchObject({ status: 200, body: { ok: true, user: BOB, appPassword: 'laptop' } });
    expect(await ask('bob-secret')).toMatchObject({ status: 200, body: { ok: false, reason: 'app-password-required' } });
    expect(await ask('wrong')).toMatchObject({ status: 200, body: { ok: false, reason: 'invalid' } });
    expect((await node.rpc['app-passwords']!({ user: BOB })) as Array<{ name: string }>).toContainEqual(expect.objectContaining({ name: 'laptop' }));
  });

  it('curl, trusting the test CA only, logs in and lists the app passwords', async () => {
    const { address, port } = { address: service('accounts').host, port: service('accounts').port };
    const curl = (args: string[]) => promisify(execFile)('curl', ['--silent', '--show-error', '--cacert', pki.caFile, ...args]);
    const login = await curl(['-X', 'POST', '-H', 'Content-Type: application/json', '--data', JSON.stringify({ address: CAROL, password: 'carol-secret' }), `https://${address}:${port}/api/v1/login`]);
    const { session } = JSON.parse(login.stdout) as { session: string };
    const listed = await curl(['-H', `Authorization: Bearer ${session}`, `https://${address}:${port}/api/v1/app-passwords`]);
    expect(JSON.parse(listed.stdout)).toEqual([{ name: 'tablet', created: expect.any(String), lastUsed: expect.any(String) }]);
    // Without the CA, curl refuses the certificate: the service's identity is checked for real.
    await expect(promisify(execFile)('curl', ['--silent', '--show-error', `https://${address}:${port}/api/v1/app-passwords`])).rejects.toThrow(/certificate/);
  });
});

describe('a restart of the mailbox server', () => {
  it('keeps app passwords made at run time and revocations (accounts.json)', async () => {
    const session = await webLogin();
    const created = await api('POST', '/api/v1/app-passwords', { token: session, json: { name: 'watch' } });
    expect(created.status).toBe(201);
    expect((await api('DELETE', '/api/v1/app-passwords/laptop', { token: session })).status).toBe(204);
    await node.stop();
    node = await startMailbox(ctx);

    const watch = await imapflow(BOB, created.body.password);
    expect(lastEvent('session')).toMatchObject({ user: BOB, appPassword: 'watch' });
    await watch.logout();
    for (const revoked of ['laptoplaptoplapt', 'phonephonephonep']) {
      const c = await imapLines();
      c.write(`a LOGIN bob ${revoked}\r\n`);
      expect(await c.line()).toBe('a NO [AUTHENTICATIONFAILED] Authentication failed');
    }
    // Sessions are in memory only: the old one is gone, a new login is needed.
    expect((await api('GET', '/api/v1/app-passwords', { token: session })).status).toBe(401);
  });
});

describe('login throttling of the account service', () => {
  it('failed logins lock the account as IMAP and POP3 failures do; the right credentials get 429 meanwhile', async () => {
    const throttled = await testContext({ ports: { lmtp: 0 }, tls: pki.tls, users: USERS, accounts: { port: 0 }, authThrottle: { ...THROTTLE!, failuresPerAccount: 2, backoffMs: 60_000, maxBackoffMs: 60_000 } });
    const running = await startMailbox(throttled);
    try {
      const to = running.services.accounts!;
      for (let i = 0; i < 2; i++) expect((await api('POST', '/api/v1/login', { to, json: { address: CAROL, password: 'wrong' } })).status).toBe(401);
      expect(throttled.emitted('auth-throttled').at(-1)?.detail).toMatchObject({ protocol: 'accounts', login: CAROL, scope: 'account' });
      const locked = await api('POST', '/api/v1/login', { to, json: { address: CAROL, password: 'carol-secret' } });
      expect(locked).toMatchObject({ status: 429, headers: { 'retry-after': '60' }, body: { Error: 'too many failed logins, try again in 60 s' } });
    } finally {
      await running.stop();
      await throttled.cleanup();
    }
  });
});
