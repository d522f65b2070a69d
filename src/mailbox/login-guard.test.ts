// Login throttling on the mailbox server's IMAP and POP3 (issue 9, finding 3), on the wire, through startMailbox
// (so that both protocols share the node's one throttle): per connection, across connections, across protocols,
// per account and client address, per address, and turned off. Clients bind their own 127.x source address.
import { afterEach, describe, expect, it } from 'vitest';
import type { AuthThrottleConfig } from '../shared/config.js';
import type { RunningRole } from '../shared/node.js';
import { startMailbox } from './index.js';
import { AddressedClient, BOB, CAROL, testContext, type TestContext } from './testkit.test-helper.js';

const BOB_PASS = 'bob-secret';
const CAROL_PASS = 'carol secret with spaces';
/** The attacker's address and a legitimate client's, both on loopback. */
const ATTACKER = '127.0.0.21';
const ELSEWHERE = '127.0.0.22';

const THROTTLE: AuthThrottleConfig = {
  enabled: true,
  failuresPerConnection: 3,
  failuresPerAccount: 4,
  failuresPerAddress: 6,
  windowMs: 60_000,
  backoffMs: 400,
  maxBackoffMs: 2000,
};

let ctx: TestContext | undefined;
let role: RunningRole | undefined;
const clients: AddressedClient[] = [];

afterEach(async () => {
  for (const c of clients.splice(0)) c.close();
  await role?.stop();
  role = undefined;
  await ctx?.cleanup();
});

async function start(authThrottle: AuthThrottleConfig = THROTTLE) {
  ctx = await testContext({ ports: { lmtp: 0, pop3: 0, imap: 0 }, authThrottle });
  role = await startMailbox(ctx);
  const { imap, pop3 } = role.services as Record<string, { port: number }>;
  return { imap: imap!.port, pop3: pop3!.port };
}

async function imapClient(port: number, from: string): Promise<AddressedClient> {
  const c = await AddressedClient.connect(port, from);
  clients.push(c);
  expect(await c.line()).toMatch(/^\* OK /);
  return c;
}

async function pop3Client(port: number, from: string): Promise<AddressedClient> {
  const c = await AddressedClient.connect(port, from);
  clients.push(c);
  expect(await c.line()).toMatch(/^\+OK /);
  return c;
}

/** The tagged reply of an IMAP command (untagged lines before it skipped). */
async function imap(c: AddressedClient, tag: string, command: string): Promise<string> {
  c.send(`${tag} ${command}`);
  return (await c.until((l) => l.startsWith(`${tag} `))).pop()!;
}

async function pop3(c: AddressedClient, command: string): Promise<string> {
  c.send(command);
  return c.line();
}

async function pop3Login(c: AddressedClient, user: string, password: string): Promise<string> {
  expect(await pop3(c, `USER ${user}`)).toMatch(/^\+OK/);
  return pop3(c, `PASS ${password}`);
}

const plain = (user: string, password: string) => Buffer.from(`\0${user}\0${password}`).toString('base64');

describe('login throttling (IMAP and POP3)', () => {
  it('IMAP: failuresPerConnection failed logins end the connection with BYE', async () => {
    const { imap: port } = await start();
    const c = await imapClient(port, ATTACKER);
    expect(await imap(c, 'a', 'LOGIN bob wrong1')).toBe('a NO [AUTHENTICATIONFAILED] Authentication failed');
    expect(await imap(c, 'b', `AUTHENTICATE PLAIN ${plain('bob', 'wrong2')}`)).toBe('b NO [AUTHENTICATIONFAILED] Authentication failed');
    expect(await imap(c, 'c', 'LOGIN bob wrong3')).toBe('c NO [AUTHENTICATIONFAILED] Authentication failed');
    expect(await c.line()).toBe('* BYE Too many authentication failures');
    await c.waitClosed();
  });

  it('POP3: failuresPerConnection failed logins end the connection with -ERR', async () => {
    const { pop3: port } = await start();
    const c = await pop3Client(port, ATTACKER);
    expect(await pop3Login(c, 'bob', 'wrong1')).toMatch(/^-ERR \[AUTH\] /);
    expect(await pop3(c, `AUTH PLAIN ${plain('bob', 'wrong2')}`)).toMatch(/^-ERR \[AUTH\] /);
    expect(await pop3Login(c, 'bob', 'wrong3')).toMatch(/^-ERR \[AUTH\] /);
    await c.waitClosed();
  });

  it('failures over IMAP and POP3 throttle the account at that address, the right password included; others are unaffected; the lock ends', async () => {
    const { imap: imapPort, pop3: popPort } = await start();
    // Two wrong IMAP logins ("bob" and the address are one account) ...
    const i1 = await imapClient(imapPort, ATTACKER);
    expect(await imap(i1, 'a', 'LOGIN bob wrong1')).toMatch(/^a NO \[AUTHENTICATIONFAILED\]/);
    expect(await imap(i1, 'b', `AUTHENTICATE PLAIN ${plain(BOB, 'wrong2')}`)).toMatch(/^b NO \[AUTHENTICATIONFAILED\]/);
    // ... then two over POP3, on another connection: the fourth locks the pair (failuresPerAccount: 4).
    const p1 = await pop3Client(popPort, ATTACKER);
    expect(await pop3Login(p1, BOB, 'wrong3')).toMatch(/^-ERR \[AUTH\] /);
    expect(await pop3Login(p1, 'BOB', 'wrong4')).toMatch(/^-ERR \[AUTH\] /);
    expect(ctx!.emitted('auth-failed')).toHaveLength(4);
    expect(ctx!.emitted('auth-throttled').map((e) => e.detail)).toEqual([
      { protocol: 'pop3', login: 'BOB', client: ATTACKER, scope: 'account', retryAfterMs: THROTTLE.backoffMs },
    ]);
    const lockedAt = Date.now();

    // Throttled: the right password is refused too, over both protocols, with a temporary error.
    expect(await imap(i1, 'c', `LOGIN bob ${BOB_PASS}`)).toBe('c NO [UNAVAILABLE] Too many failed logins, try again in 1 s');
    const p2 = await pop3Client(popPort, ATTACKER);
    expect(await pop3Login(p2, BOB, BOB_PASS)).toBe('-ERR [SYS/TEMP] Too many failed logins, try again in 1 s');
    expect(await pop3(p2, `AUTH PLAIN ${plain(BOB, BOB_PASS)}`)).toMatch(/^-ERR \[SYS\/TEMP\] /);
    // A foreign authorization identity is refused as throttled too (nothing is checked); the third refusal closes.
    expect(await pop3(p2, `AUTH PLAIN ${Buffer.from(`${CAROL}\0${BOB}\0${BOB_PASS}`).toString('base64')}`)).toMatch(/^-ERR \[SYS\/TEMP\] /);
    await p2.waitClosed();
    const i2 = await imapClient(imapPort, ATTACKER);
    expect(await imap(i2, 'a', `AUTHENTICATE PLAIN ${plain(BOB, BOB_PASS)}`)).toMatch(/^a NO \[UNAVAILABLE\] /);
    // Refusals while throttled are not failures (no event), and do not extend the lock.
    expect(ctx!.emitted('auth-failed')).toHaveLength(4);
    expect(ctx!.emitted('auth-throttled')).toHaveLength(1);

    // Another account from the same address, and the same account from elsewhere, log in.
    expect(await imap(i2, 'b', `LOGIN carol "${CAROL_PASS}"`)).toMatch(/^b OK /);
    const legit = await imapClient(imapPort, ELSEWHERE);
    expect(await imap(legit, 'a', `LOGIN bob ${BOB_PASS}`)).toMatch(/^a OK /);
    const legitPop = await pop3Client(popPort, ELSEWHERE);
    expect(await pop3Login(legitPop, BOB, BOB_PASS)).toMatch(/^\+OK maildrop has/);

    // The lock ends after the back-off the event announced (the lock began before lockedAt was taken).
    await new Promise((resolve) => setTimeout(resolve, lockedAt + THROTTLE.backoffMs + 20 - Date.now()));
    const after = await imapClient(imapPort, ATTACKER);
    expect(await imap(after, 'a', `LOGIN bob ${BOB_PASS}`)).toMatch(/^a OK /);
  });

  it('a client trying many accounts is throttled at its address, for every account; elsewhere nothing changes', async () => {
    const { imap: port } = await start();
    for (let i = 0; i < THROTTLE.failuresPerAddress; i += 2) {
      const c = await imapClient(port, ATTACKER);
      expect(await imap(c, 'a', `LOGIN user${i} guess`)).toMatch(/^a NO \[AUTHENTICATIONFAILED\]/);
      expect(await imap(c, 'b', `LOGIN user${i + 1} guess`)).toMatch(/^b NO \[AUTHENTICATIONFAILED\]/);
    }
    expect(ctx!.emitted('auth-throttled').map((e) => e.detail)).toEqual([
      { protocol: 'imap', login: `user${THROTTLE.failuresPerAddress - 1}`, client: ATTACKER, scope: 'address', retryAfterMs: THROTTLE.backoffMs },
    ]);
    const c = await imapClient(port, ATTACKER);
    expect(await imap(c, 'a', `LOGIN carol "${CAROL_PASS}"`)).toMatch(/^a NO \[UNAVAILABLE\] /);
    const legit = await imapClient(port, ELSEWHERE);
    expect(await imap(legit, 'a', `LOGIN carol "${CAROL_PASS}"`)).toMatch(/^a OK /);
  });

  it('throttled refusals count towards the per-connection limit too', async () => {
    const { imap: port } = await start({ ...THROTTLE, failuresPerAccount: 1, backoffMs: 60_000, maxBackoffMs: 60_000 });
    const c = await imapClient(port, ATTACKER);
    expect(await imap(c, 'a', 'LOGIN bob wrong')).toMatch(/^a NO \[AUTHENTICATIONFAILED\]/);
    expect(await imap(c, 'b', `LOGIN bob ${BOB_PASS}`)).toBe('b NO [UNAVAILABLE] Too many failed logins, try again in 60 s');
    expect(await imap(c, 'c', `LOGIN bob ${BOB_PASS}`)).toMatch(/^c NO \[UNAVAILABLE\]/);
    expect(await c.line()).toBe('* BYE Too many authentication failures');
    await c.waitClosed();
  });

  it('enabled: false turns it all off', async () => {
    const { imap: imapPort, pop3: popPort } = await start({ ...THROTTLE, enabled: false });
    const c = await imapClient(imapPort, ATTACKER);
    for (let i = 0; i < 10; i++) expect(await imap(c, `a${i}`, `LOGIN bob wrong${i}`)).toMatch(/NO \[AUTHENTICATIONFAILED\]/);
    expect(await imap(c, 'b', `LOGIN bob ${BOB_PASS}`)).toMatch(/^b OK /);
    const p = await pop3Client(popPort, ATTACKER);
    for (let i = 0; i < 5; i++) expect(await pop3Login(p, CAROL, 'wrong')).toMatch(/^-ERR \[AUTH\] /);
    expect(await pop3Login(p, CAROL, CAROL_PASS)).toMatch(/^\+OK maildrop has/);
    expect(ctx!.emitted('auth-failed')).toHaveLength(15);
    expect(ctx!.emitted('auth-throttled')).toEqual([]);
  });
});
