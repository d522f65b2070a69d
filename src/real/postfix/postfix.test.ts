// Postfix as the lab's `mx` (issue 14), for real: a Postfix 3.7 instance started by the adapter on a random
// 127.a.b.0/24 block, in front of maillab's own LMTP server and Maildir store (in process, as in src/mx/mx.test.ts),
// with the lab DNS (in process) as its only resolver, so every DNS query Postfix makes is seen. Needs root and Postfix;
// skipped otherwise, saying why.
import { randomInt } from 'node:crypto';
import { promises as fs, readFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startDns } from '../../dns/index.js';
import type { DnsEvents } from '../../dns/api.js';
import { dnsTestConfig } from '../../dns/dns.test-helper.js';
import { smtpDialogue, type ProbeReply } from '../../harness/clients/probe.js';
import { createLabCa, issueHostCertificate, type LabCa } from '../../harness/tls/ca.js';
import { startLmtp } from '../../mailbox/lmtp.js';
import type { MailboxService } from '../../mailbox/service.js';
import { MaildirStore } from '../../mailbox/store.js';
import { AddressedClient, BOB, CAROL, testContext, type TestContext } from '../../mailbox/testkit.test-helper.js';
import type { MxEvents } from '../../mx/api.js';
import { mxTestConfig } from '../../mx/mx.test-helper.js';
import type { MxNodeConfig } from '../../shared/config.js';
import { EventLog, type LabEvent } from '../../shared/events.js';
import type { RunningRole } from '../../shared/node.js';
import { postfixLayout } from './config.js';
import { instanceProcesses, postfixUnavailable, startPostfixMx, type PostfixMxOptions } from './node.js';

const unavailable = postfixUnavailable();
if (unavailable) console.warn(`skipping the Postfix MX tests: ${unavailable}`);

const block = `127.${randomInt(100, 250)}.${randomInt(1, 250)}`;
const DNS = `${block}.2`;
const MX = `${block}.3`;
const MAILBOX = `${block}.4`;
const MAX_SIZE = 20_000;

let ca: LabCa;
let dns: RunningRole | undefined;
let dnsEvents: EventLog<DnsEvents>;
let mailbox: TestContext;
let store: MaildirStore;
let lmtp: MailboxService | undefined;
let lmtpPort: number;
const dirs: string[] = [];

/** One Postfix MX of this file, its events and its node log. */
interface Instance {
  config: MxNodeConfig;
  role: RunningRole;
  events: EventLog<MxEvents>;
  log: string[];
}

async function startInstance(address: string, options: PostfixMxOptions = {}): Promise<Instance> {
  const dataDir = await fs.mkdtemp(path.join(os.tmpdir(), 'maillab-postfix-'));
  dirs.push(dataDir);
  const cert = await issueHostCertificate(ca, { names: ['mx.receiver.test'], addresses: [address] });
  const config: MxNodeConfig = {
    ...mxTestConfig({ dataDir, domains: ['receiver.test'], recipients: [BOB, CAROL], lmtpPort, port: 25, address, limits: { maxRecipients: 100, maxConnectionsPerClient: 50, maxMessageSize: MAX_SIZE } }),
    lmtp: { host: MAILBOX, port: lmtpPort },
    resolver: { host: DNS, port: 53 },
    tls: { cert: cert.cert, key: cert.key, ca: ca.cert },
  };
  const events = new EventLog<MxEvents>(config.name);
  const log: string[] = [];
  const role = await startPostfixMx({ config, events, log: (m) => log.push(m) }, options);
  return { config, role, events, log };
}

/** The first event of `kind` (already emitted or to come) that `match` accepts, within `ms`. */
function waitFor<K extends keyof MxEvents & string>(events: EventLog<MxEvents>, kind: K, match: (e: LabEvent<K, MxEvents[K]>) => boolean, ms = 10_000): Promise<LabEvent<K, MxEvents[K]>> {
  const pick = (e: LabEvent) => e.kind === kind && match(e as unknown as LabEvent<K, MxEvents[K]>);
  const found = events.since(0).find(pick);
  if (found) return Promise.resolve(found as unknown as LabEvent<K, MxEvents[K]>);
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      off();
      reject(new Error(`no ${kind} event within ${ms} ms; events: ${JSON.stringify(events.since(0))}`));
    }, ms);
    const off = events.subscribe((e) => {
      if (!pick(e)) return;
      clearTimeout(timer);
      off();
      resolve(e as unknown as LabEvent<K, MxEvents[K]>);
    });
  });
}

const message = (id: string, subject = 'hello', extra = '') => `From: alice@sender.test\r\nTo: bob@receiver.test\r\nSubject: ${subject}\r\nMessage-ID: ${id}\r\n\r\nHi Bob.\r\n${extra}.`;

/** A whole transaction to the MX; DATA's content is one "command" ending in the lone dot. */
function send(mx: Instance, rcpts: string[], data?: string, extra: { mailParams?: string; starttls?: boolean } = {}): Promise<ProbeReply[]> {
  const { host, port } = mx.role.services.smtp!;
  const tls = extra.starttls ? ['STARTTLS', 'EHLO client.sender.test'] : [];
  const commands = ['EHLO client.sender.test', ...tls, `MAIL FROM:<alice@sender.test>${extra.mailParams ?? ''}`, ...rcpts.map((r) => `RCPT TO:<${r}>`), ...(data === undefined ? [] : ['DATA', data])];
  return smtpDialogue({ host, port }, commands, { timeoutMs: 10_000, tls: { ca: ca.cert, servername: 'mx.receiver.test' } });
}

const reply = (replies: ProbeReply[], command: RegExp) => replies.find((r) => command.test(r.command))?.text ?? '';

/** Whether a process exists and is not a zombie. */
function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch {
    return false;
  }
  try {
    return !/^\d+ \(.*\) [ZX] /.test(readFileSync(`/proc/${pid}/stat`, 'utf8'));
  } catch {
    return false; // gone meanwhile
  }
}

async function inbox(user: string): Promise<string[]> {
  const list = await store.messages(user, 'INBOX');
  return Promise.all(list.map(async (m) => (await store.read(user, 'INBOX', m.uid)).toString('utf8')));
}

describe.skipIf(unavailable !== undefined)('Postfix as the lab MX', () => {
  let mx: Instance;

  beforeAll(async () => {
    ca = await createLabCa('postfix-test');
    dnsEvents = new EventLog<DnsEvents>('dns');
    dns = await startDns({
      config: { ...dnsTestConfig({ zones: [{ origin: 'lab.test', records: [] }, { origin: 'receiver.test', records: [{ name: 'mx.receiver.test', type: 'A', address: MX }] }] }), address: DNS, port: 53 },
      events: dnsEvents,
      log: () => undefined,
    });
    mailbox = await testContext({ address: MAILBOX, lmtpClients: [MX] });
    store = new MaildirStore({ root: mailbox.config.dataDir, users: mailbox.config.users, fsync: true });
    await store.open();
    lmtp = await startLmtp({ store, ctx: mailbox, host: MAILBOX, port: 0 });
    lmtpPort = lmtp.endpoint.port;
    mx = await startInstance(MX);
  });

  afterAll(async () => {
    await mx?.role.stop();
    await lmtp?.close();
    await dns?.stop();
    await mailbox?.cleanup();
    for (const dir of dirs) await fs.rm(dir, { recursive: true, force: true });
  });

  it('writes main.cf, master.cf and effective.cf (postconf -n) with the lab settings', async () => {
    const layout = postfixLayout(mx.config.dataDir);
    const effective = await fs.readFile(layout.effective, 'utf8');
    for (const line of ['smtpd_forbid_bare_newline = yes', 'smtpd_peername_lookup = no', `virtual_transport = lmtp:inet:${MAILBOX}:${lmtpPort}`, 'mydestination =', `message_size_limit = ${MAX_SIZE}`, `maillog_file = ${layout.maillog}`]) {
      expect(effective.split('\n')).toContain(line);
    }
    const master = await fs.readFile(path.join(layout.dir, 'master.cf'), 'utf8');
    expect(master).toContain(`${MX}:25 inet n - n - - smtpd`);
    expect(master).toMatch(/^postlog\s+unix-dgram\s+n\s+-\s+n\s/m);
  });

  it('accepts mail for a served user and hands it to the mailbox server over LMTP: received, handoff, stored in the Maildir', async () => {
    const id = '<postfix-1@sender.test>';
    const replies = await send(mx, [BOB], message(id));
    const queued = /^250 2\.0\.0 Ok: queued as (\w+)$/.exec(replies.at(-2)!.text);
    expect(queued, JSON.stringify(replies)).not.toBeNull();
    const handoff = await waitFor(mx.events, 'handoff', (e) => e.messageId === id);
    expect(handoff.queueId).toBe(queued![1]);
    expect(handoff.detail.to).toBe(`LMTP ${MAILBOX}:${lmtpPort}`);
    expect(handoff.detail.recipients).toMatchObject([{ address: BOB, accepted: true, code: 250, stage: 'lmtp' }]);
    const received = await waitFor(mx.events, 'received', (e) => e.messageId === id);
    expect(received.seq).toBeLessThan(handoff.seq);
    expect(received.detail).toMatchObject({ from: 'alice@sender.test', to: [BOB], client: '127.0.0.1', tls: null });
    expect(received.detail.size).toBeGreaterThan(message(id).length);
    // The node log names the maillog lines the events came from.
    expect(mx.log.find((l) => l.startsWith(`handoff ${queued![1]} from the maillog: `))).toMatch(/postfix\/lmtp\[\d+\]: \w+: to=<bob@receiver\.test>.*status=sent/);
    const stored = (await inbox(BOB)).filter((m) => m.includes(`Message-ID: ${id}`));
    expect(stored).toHaveLength(1);
    expect(stored[0]).toMatch(/^Received: from client\.sender\.test \(unknown \[127\.0\.0\.1\]\)\r?\n\s+by mx\.receiver\.test \(Postfix\)/m);
  });

  it('refuses an unknown user at RCPT TO with 550 5.1.1 and emits rejected', async () => {
    const replies = await send(mx, ['nobody@receiver.test']);
    expect(reply(replies, /^RCPT/)).toMatch(/^550 5\.1\.1 <nobody@receiver\.test>: Recipient address rejected: User unknown in virtual mailbox table/);
    const rejected = await waitFor(mx.events, 'rejected', (e) => e.detail.rcpt === 'nobody@receiver.test');
    expect(rejected.detail).toMatchObject({ stage: 'RCPT TO', client: '127.0.0.1', from: 'alice@sender.test' });
    expect(rejected.detail.reply).toMatch(/^550 5\.1\.1 /);
  });

  it('refuses to relay for a domain it does not serve (554 5.7.1) and emits rejected', async () => {
    const replies = await send(mx, ['eve@elsewhere.test']);
    expect(reply(replies, /^RCPT/)).toBe('554 5.7.1 <eve@elsewhere.test>: Relay access denied');
    const rejected = await waitFor(mx.events, 'rejected', (e) => e.detail.rcpt === 'eve@elsewhere.test');
    expect(rejected.detail).toMatchObject({ stage: 'RCPT TO', reply: '554 5.7.1 <eve@elsewhere.test>: Relay access denied' });
  });

  it('refuses a message over message_size_limit: 552 at MAIL FROM for SIZE=, 552 5.3.4 at the end of DATA otherwise', async () => {
    const declared = await send(mx, [], undefined, { mailParams: ` SIZE=${MAX_SIZE + 1}` });
    expect(reply(declared, /^MAIL/)).toBe('552 5.3.4 Message size exceeds fixed limit');
    await waitFor(mx.events, 'rejected', (e) => e.detail.stage === 'MAIL FROM' && e.detail.reply.startsWith('552 5.3.4'));
    const big = await send(mx, [BOB], message('<postfix-big@sender.test>', 'big', `${'x'.repeat(998)}\r\n`.repeat(25)));
    expect(big.at(-2)!.text).toBe('552 5.3.4 Error: message file too big');
    await waitFor(mx.events, 'rejected', (e) => e.detail.stage === 'DATA' && e.detail.reply === '552 5.3.4 Error: message file too big');
    expect((await inbox(BOB)).some((m) => m.includes('postfix-big@'))).toBe(false);
  });

  it('offers STARTTLS with the lab certificate; the received event names the TLS version and cipher', async () => {
    const id = '<postfix-tls@sender.test>';
    const replies = await send(mx, [BOB], message(id), { starttls: true });
    expect(replies[1]!.text).toMatch(/^250-mx\.receiver\.test[\s\S]*250-STARTTLS/);
    expect(replies.find((r) => r.command === 'STARTTLS')!.code).toBe(220); // smtpDialogue verified the certificate with the lab CA
    expect(replies.at(-2)!.text).toMatch(/^250 2\.0\.0 Ok: queued as /);
    const received = await waitFor(mx.events, 'received', (e) => e.messageId === id);
    expect(received.detail.tls).toMatchObject({ version: expect.stringMatching(/^TLSv1\.[23]$/), cipher: expect.stringMatching(/\w/) });
    expect((await inbox(BOB)).find((m) => m.includes(id))).toMatch(/\(using TLSv1\.[23] with cipher /);
  });

  it('takes SMTP smuggling (a bare LF before the dot) as content: one message, nothing smuggled in', async () => {
    const id = '<postfix-smuggle@sender.test>';
    const smuggled = 'MAIL FROM:<eve@sender.test>\r\nRCPT TO:<bob@receiver.test>\r\nDATA\r\nSubject: smuggled\r\nMessage-ID: <smuggled@sender.test>\r\n\r\nevil\r\n';
    const replies = await send(mx, [BOB], message(id, 'carrier', `before\n.\r\n${smuggled}`));
    // One reply to the whole data: 250 for the one message; a vulnerable server would have answered the smuggled commands too.
    expect(replies.at(-2)!.text).toMatch(/^250 2\.0\.0 Ok: queued as /);
    expect(replies.at(-1)!.text).toMatch(/^221 /);
    await waitFor(mx.events, 'handoff', (e) => e.messageId === id);
    const mail = await inbox(BOB);
    expect(mail.find((m) => m.includes(id))).toContain('MAIL FROM:<eve@sender.test>');
    expect(mail.some((m) => /^Subject: smuggled/m.test(m) && !m.includes(id))).toBe(false);
    expect(mx.events.since(0).filter((e) => e.kind === 'received' && e.messageId === '<smuggled@sender.test>')).toEqual([]);
  });

  it('asks DNS nothing: the lab DNS, its only resolver, saw no query, and the maillog has no lookup', async () => {
    // A client from a lab address /etc/hosts does not name (127.0.0.1 would be "localhost" without DNS): a reverse
    // lookup of it could only be answered by DNS, which here is the lab DNS.
    const id = '<postfix-dns@sender.test>';
    const client = await AddressedClient.connect(mx.role.services.smtp!.port, `${block}.9`, MX);
    try {
      const say = async (line: string, code: string) => {
        client.send(line);
        expect((await client.until((l) => l[3] === ' ')).at(-1)).toMatch(new RegExp(`^${code} `));
      };
      expect(await client.line()).toMatch(/^220 /);
      await say('EHLO client.sender.test', '250');
      await say('MAIL FROM:<alice@sender.test>', '250');
      await say(`RCPT TO:<${BOB}>`, '250');
      await say('DATA', '354');
      await say(message(id), '250');
    } finally {
      client.close();
    }
    const received = await waitFor(mx.events, 'received', (e) => e.messageId === id);
    expect(received.detail.client).toBe(`${block}.9`);
    expect(dnsEvents.since(0).filter((e) => e.kind === 'dns-query')).toEqual([]);
    const maillog = await fs.readFile(postfixLayout(mx.config.dataDir).maillog, 'utf8');
    expect(maillog).not.toMatch(/lookup|Name service error|hostname .* verification failed|Host not found|unknown host/i);
  });

  it('emits handoff-failed when the mailbox server is down; Postfix has already said 250 (it queues)', async () => {
    const id = '<postfix-down@sender.test>';
    await lmtp!.close();
    lmtp = undefined;
    const replies = await send(mx, [CAROL], message(id));
    expect(replies.at(-2)!.text).toMatch(/^250 2\.0\.0 Ok: queued as /);
    const failed = await waitFor(mx.events, 'handoff-failed', (e) => e.messageId === id);
    expect(failed.detail).toEqual({ to: `LMTP ${MAILBOX}:${lmtpPort}`, error: `connect to ${MAILBOX}[${MAILBOX}]:${lmtpPort}: Connection refused` });
    const received = await waitFor(mx.events, 'received', (e) => e.messageId === id);
    expect(received.detail.to).toEqual([CAROL]);
  });

  it("keeps the user's main.cf and master.cf except what the lab decides; their DNS lookups go to the lab DNS only", async () => {
    const user = {
      mainCf: [
        'smtpd_banner = $myhostname ESMTP regression-test',
        // A DNS blocklist: Postfix must ask DNS, and the only DNS it can reach is the lab's.
        'smtpd_client_restrictions = reject_rbl_client rbl.lab.test',
        'relay_domains = elsewhere.test',
        'mydestination = localhost',
        '',
      ].join('\n'),
      masterCf: ['smtp      inet  n       -       y       -       -       smtpd', '  -o smtpd_helo_required=yes', 'submission inet n       -       y       -       -       smtpd', ''].join('\n'),
    };
    const custom = await startInstance(`${block}.5`, { user });
    try {
      const { host, port } = custom.role.services.smtp!;
      const replies = await smtpDialogue({ host, port }, ['MAIL FROM:<alice@sender.test>', 'HELO client.sender.test', 'MAIL FROM:<alice@sender.test>', 'RCPT TO:<eve@elsewhere.test>']);
      expect(replies[0]!.text).toBe('220 mx.receiver.test ESMTP regression-test');
      expect(replies[1]!.text).toMatch(/^503 5\.5\.1 Error: send HELO\/EHLO first/); // the user's -o option of their smtp service
      expect(replies[4]!.text).toBe('554 5.7.1 <eve@elsewhere.test>: Relay access denied'); // their relay_domains replaced
      const query = dnsEvents.since(0).find((e) => e.kind === 'dns-query' && /rbl\.lab\.test$/.test((e.detail as { name: string }).name));
      expect(query?.detail).toMatchObject({ name: '1.0.0.127.rbl.lab.test', type: 'A' }); // the client, 127.0.0.1, reversed
      const master = await fs.readFile(path.join(postfixLayout(custom.config.dataDir).dir, 'master.cf'), 'utf8');
      expect(master).not.toMatch(/^submission/m);
      expect(master.split('\n').filter((l) => /^\S/.test(l) && !l.startsWith('#')).every((l) => l.split(/\s+/)[4] === 'n')).toBe(true);
    } finally {
      await custom.role.stop();
    }
  });

  it('ends the Postfix a killed node left running when the node starts again on the same data directory', async () => {
    const orphaned = await startInstance(`${block}.6`);
    const layout = postfixLayout(orphaned.config.dataDir);
    const old = await instanceProcesses(layout);
    // The node "dies" without stopping its Postfix (what SIGKILL of a node process leaves): a new node, same config.
    const events = new EventLog<MxEvents>('mx');
    const log: string[] = [];
    const again = await startPostfixMx({ config: orphaned.config, events, log: (m) => log.push(m) });
    try {
      expect(log.join('\n')).toMatch(/a Postfix master of this node is still running \(pid \d+/);
      const now = await instanceProcesses(layout);
      expect(now.length).toBeGreaterThan(0);
      expect(now.filter((pid) => old.includes(pid))).toEqual([]);
      const { host, port } = again.services.smtp!;
      expect((await smtpDialogue({ host, port }, []))[0]!.text).toMatch(/^220 mx\.receiver\.test /);
    } finally {
      await again.stop();
      await orphaned.role.stop(); // finds no master of its own any more: reaps its child only
    }
    expect(await instanceProcesses(layout)).toEqual([]);
  });

  it('a stop right after the start leaves nothing: no process of the instance, the port refuses (5 times)', async () => {
    const address = `${block}.7`;
    const listeners = process.listenerCount('SIGTERM');
    for (let round = 1; round <= 5; round++) {
      const instance = await startInstance(address);
      // Until its stop, the instance keeps a SIGTERM listener: a SIGTERM between runNode's ready line and its own
      // listener must not kill the node outright (its Postfix would go on serving).
      expect(process.listenerCount('SIGTERM'), `round ${round}`).toBe(listeners + 1);
      const layout = postfixLayout(instance.config.dataDir);
      const master = Number((await fs.readFile(path.join(layout.queueDirectory, 'pid', 'master.pid'), 'utf8')).trim());
      expect(instance.log.join('\n'), `round ${round}`).toContain(`Postfix master pid ${master} `);
      await instance.role.stop();
      expect(process.listenerCount('SIGTERM'), `round ${round}`).toBe(listeners);
      expect(await instanceProcesses(layout), `round ${round}`).toEqual([]);
      expect(alive(master), `round ${round}: master ${master}`).toBe(false);
      await expect(smtpDialogue({ host: address, port: 25 }, [], { timeoutMs: 2000 }), `round ${round}`).rejects.toThrow(/ECONNREFUSED/);
    }
  });

  it('stops the master it started even when its pid file no longer names it', async () => {
    const instance = await startInstance(`${block}.8`);
    const layout = postfixLayout(instance.config.dataDir);
    const pidFile = path.join(layout.queueDirectory, 'pid', 'master.pid');
    const master = Number((await fs.readFile(pidFile, 'utf8')).trim());
    // What the stop would meet if it had only the pid file to go by and could not read it.
    await fs.writeFile(pidFile, '');
    await instance.role.stop();
    expect(alive(master), `master ${master}`).toBe(false);
    expect(await instanceProcesses(layout)).toEqual([]);
  });

  it('stops: no process of the instance is left', async () => {
    const layout = postfixLayout(mx.config.dataDir);
    expect((await instanceProcesses(layout)).length).toBeGreaterThan(0);
    await mx.role.stop();
    expect(await instanceProcesses(layout)).toEqual([]);
  });
});
