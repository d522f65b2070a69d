// SMTP AUTH at the MTA against the mailbox server's account service (issue 13): both nodes in-process, the service
// over HTTPS with a certificate of the test CA, the MTA trusting that CA (its `tls.ca`) and holding the lab's control
// token. Raw SMTP lines, so every reply is seen as sent.
import { promises as fs } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { LineClient } from '../harness/clients/line-client.js';
import { startMailbox } from '../mailbox/index.js';
import { testContext, type TestContext } from '../mailbox/testkit.test-helper.js';
import type { MailboxContract } from '../mailbox/api.js';
import type { MtaNodeConfig, UserConfig } from '../shared/config.js';
import { EventLog } from '../shared/events.js';
import type { RunningRole } from '../shared/node.js';
import { testPki, type TestPki } from '../shared/tls.test-helper.js';
import { startMta } from './index.js';
import { testMtaConfig } from './mta.test-helper.js';

const TOKEN = 'control-token-of-this-lab';
const BOB = 'bob@receiver.test';
const USERS: UserConfig[] = [
  { address: BOB, password: 'bob-secret', totpSecret: 'JBSWY3DPEHPK3PXP', appPasswords: [{ name: 'phone', password: 'phonephonephonep' }, { name: 'laptop', password: 'laptoplaptoplapt' }] },
  { address: 'carol@receiver.test', password: 'carol-secret' },
];
const TWO_FACTOR = `535 5.7.8 Authentication credentials invalid: ${BOB} has two-factor authentication, use an app password`;

let pki: TestPki;
let mailboxCtx: TestContext;
let mailbox: RunningRole<MailboxContract>;
const dataDirs: string[] = [];
const mtas: RunningRole[] = [];
const clients: LineClient[] = [];

async function mta(over: Partial<MtaNodeConfig>): Promise<{ node: RunningRole; events: EventLog }> {
  const dataDir = await fs.mkdtemp(path.join(os.tmpdir(), 'maillab-mta-auth-'));
  dataDirs.push(dataDir);
  const events = new EventLog('mta');
  // Nothing is delivered here: the resolver and next hops are never asked.
  const config = testMtaConfig({ address: '127.0.0.1', dataDir, resolver: { host: '127.0.0.1', port: 9 }, localDelivery: { host: '127.0.0.1', port: 9 }, relayPort: 9, users: USERS, tls: { ...pki.tls, allowPlaintextAuth: true }, ...over });
  const node = await startMta({ config, events, log: () => undefined });
  mtas.push(node);
  return { node, events };
}

/** AUTH PLAIN on the submission port of `node`: the reply's text. */
async function auth(node: RunningRole, user: string, pass: string): Promise<string> {
  const client = await LineClient.connect(node.services.submission!, { name: 'SMTP' });
  clients.push(client);
  expect((await client.smtpReply()).code).toBe(220);
  client.send('EHLO client.test');
  expect((await client.smtpReply()).code).toBe(250);
  client.send(`AUTH PLAIN ${Buffer.from(`\0${user}\0${pass}`).toString('base64')}`, 'AUTH PLAIN ****');
  return (await client.smtpReply()).text;
}

beforeAll(async () => {
  pki = await testPki();
  mailboxCtx = await testContext({ tls: pki.tls, users: USERS, accounts: { port: 0 }, controlToken: TOKEN });
  mailbox = await startMailbox(mailboxCtx);
});

afterAll(async () => {
  for (const c of clients) c.close();
  for (const node of mtas) await node.stop();
  await mailbox?.stop();
  await mailboxCtx?.cleanup();
  for (const dir of dataDirs) await fs.rm(dir, { recursive: true, force: true });
});

describe('SMTP AUTH through the account service', () => {
  it("takes app passwords, refuses a 2FA user's main password saying why, and a revoked app password at once", async () => {
    const { node, events } = await mta({ authService: mailbox.services.accounts!, controlToken: TOKEN });
    expect(await auth(node, 'bob', 'phonephonephonep')).toMatch(/^235 /);
    const [phone] = (await mailbox.rpc['app-passwords']!({ user: BOB })) as Array<{ name: string; lastUsed?: string }>;
    expect(phone).toMatchObject({ name: 'phone', lastUsed: expect.any(String) });

    expect(await auth(node, BOB, 'bob-secret')).toBe(TWO_FACTOR);
    expect(events.since(0).filter((e) => e.kind === 'auth-failed').at(-1)?.detail).toMatchObject({ user: BOB, reply: TWO_FACTOR });
    expect(await auth(node, BOB, 'wrong')).toBe('535 5.7.8 Authentication credentials invalid');
    // A user without 2FA: the main password, as ever.
    expect(await auth(node, 'carol@receiver.test', 'carol-secret')).toMatch(/^235 /);

    expect(await mailbox.rpc['revoke-app-password']!({ user: BOB, name: 'phone' })).toEqual({ closedSessions: 0 });
    expect(await auth(node, BOB, 'phonephonephonep')).toBe('535 5.7.8 Authentication credentials invalid');
    expect(await auth(node, BOB, 'laptoplaptoplapt')).toMatch(/^235 /);
  });

  it('the MTA refuses to start with authService but no control token to present', async () => {
    await expect(mta({ authService: mailbox.services.accounts! })).rejects.toThrow(/authService is set but controlToken is not/);
  });

  it('a wrong control token is no login: 454, never 235', async () => {
    const { node, events } = await mta({ authService: mailbox.services.accounts!, controlToken: 'not the lab token' });
    expect(await auth(node, BOB, 'laptoplaptoplapt')).toBe('454 4.7.0 Temporary authentication failure, try again later');
    expect(events.since(0).find((e) => e.kind === 'error')?.detail.error).toMatch(/HTTP 401/);
  });
});

describe('without the account service', () => {
  it("the MTA applies its own config: app passwords work, a 2FA user's main password gets the same refusal", async () => {
    const { node } = await mta({});
    expect(await auth(node, BOB, 'bob-secret')).toBe(TWO_FACTOR);
    expect(await auth(node, BOB, 'laptoplaptoplapt')).toMatch(/^235 /);
    expect(await auth(node, 'carol', 'carol-secret')).toMatch(/^235 /);
  });
});

describe('the account service down', () => {
  it('SMTP AUTH answers 454 4.7.0 (a temporary failure), never accepts, and does not count it as a failed login', async () => {
    const { node, events } = await mta({ authService: mailbox.services.accounts!, controlToken: TOKEN });
    expect(await auth(node, BOB, 'laptoplaptoplapt')).toMatch(/^235 /);
    const { port } = mailbox.services.accounts!;
    await mailbox.stop();
    for (const pass of ['laptoplaptoplapt', 'bob-secret', 'wrong']) {
      expect(await auth(node, BOB, pass)).toBe('454 4.7.0 Temporary authentication failure, try again later');
    }
    expect(events.since(0).filter((e) => e.kind === 'auth-failed')).toEqual([]);
    expect(events.since(0).find((e) => e.kind === 'error')?.detail.error).toMatch(/SMTP AUTH of bob@receiver\.test: account service https:\/\/127\.0\.0\.1:\d+\/api\/v1\/auth: .*ECONNREFUSED/);
    // Back up (same data directory): logins work again.
    mailbox = await startMailbox({ ...mailboxCtx, config: { ...mailboxCtx.config, accounts: { port } } });
    expect(await auth(node, BOB, 'laptoplaptoplapt')).toMatch(/^235 /);
  });
});
