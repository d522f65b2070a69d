// Dovecot 2.3 as the lab's mailbox role, for real: the adapter starts Debian's Dovecot on a random 127.x block with a
// certificate from the lab CA, a message goes in over LMTP (the lab's own LMTP client), the `stored` event carries
// its Message-ID, imapflow reads it over STARTTLS and the lab's POP3 client over STLS, the control operations see
// it (a POP3 RETR is a `retrieved` event), the lab's default folders are there at the first IMAP login, a wrong
// password is an `auth-failed` event, and stopping leaves no Dovecot process behind.
import { promises as fs } from 'node:fs';
import type { AddressInfo } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { ImapFlow } from 'imapflow';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Pop3Client, Pop3Error } from '../../harness/clients/pop3-client.js';
import { createLabCa, issueHostCertificate } from '../../harness/tls/ca.js';
import type { MailboxContract, MailboxEvents } from '../../mailbox/api.js';
import type { MailboxNodeConfig } from '../../shared/config.js';
import { EventLog, type LabEvent } from '../../shared/events.js';
import type { NodeContext, RunningRole } from '../../shared/node.js';
import { ControlClient, newControlToken, startControlServer } from '../../shared/control.js';
import { SmtpClientPool } from '../../shared/smtp-client.js';
import { TlsLines } from '../../shared/tls-lines.test-helper.js';
import { alive, dovecotUnavailable, startDovecotMailbox } from './node.js';
import { mailboxConfig, processesUnder, randomLoopback } from './testkit.test-helper.js';

const unavailable = dovecotUnavailable();
if (unavailable) console.log(`skipping the Dovecot mailbox tests: ${unavailable}`);

const BOB = 'bob@receiver.test';
const BOB_PASSWORD = 'bob-secret';
const HOSTNAME = 'mail.receiver.test';
const ADDRESS = randomLoopback(2);
const PORTS = { lmtp: 24, pop3: 110, imap: 143, pop3s: 995, imaps: 993 };

let dataDir: string;
let userDir: string;
/** The user's own dovecot.conf: its greeting must show, its listen and ssl must lose to the lab's. */
const USER_CONF = ['# a user\'s own settings', 'login_greeting = Dovecot of the user, ready.', 'listen = *', 'ssl = no', ''].join('\n');
let ca: string;
let events: EventLog<MailboxEvents>;
const nodeLog: string[] = [];
let node: RunningRole<MailboxContract> | undefined;
let masterPids: number[] = [];

/** The first event of `kind` (already emitted or still to come) that `match` accepts, within `timeoutMs`. */
function waitForEvent(kind: keyof MailboxEvents & string, match: (e: LabEvent) => boolean, timeoutMs = 10_000): Promise<LabEvent> {
  const found = events.since(0).find((e) => e.kind === kind && match(e));
  if (found) return Promise.resolve(found);
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      unsubscribe();
      reject(new Error(`no ${kind} event within ${timeoutMs} ms; events: ${JSON.stringify(events.since(0).map((e) => [e.kind, e.detail]))}\nnode log:\n${nodeLog.join('\n')}`));
    }, timeoutMs);
    const unsubscribe = events.subscribe((e) => {
      if (e.kind !== kind || !match(e)) return;
      clearTimeout(timer);
      unsubscribe();
      resolve(e);
    });
  });
}

function message(id: string, subject: string): string {
  return [`From: Alice <alice@sender.test>`, `To: ${BOB}`, `Subject: ${subject}`, `Message-ID: ${id}`, `Date: ${new Date().toUTCString()}`, '', `Hello Bob, ${subject}.`, ''].join('\r\n');
}

describe.skipIf(unavailable !== undefined)('Dovecot as the mailbox role', () => {
  beforeAll(async () => {
    dataDir = await fs.mkdtemp(path.join(os.tmpdir(), 'maillab-dovecot-'));
    userDir = await fs.mkdtemp(path.join(os.tmpdir(), 'maillab-dovecot-user-'));
    await fs.writeFile(path.join(userDir, 'dovecot.conf'), USER_CONF);
    const labCa = await createLabCa('dovecot test');
    const host = await issueHostCertificate(labCa, { names: [HOSTNAME], addresses: [ADDRESS] });
    ca = labCa.cert;
    const config = mailboxConfig({
      hostname: HOSTNAME,
      address: ADDRESS,
      dataDir,
      ports: PORTS,
      users: [
        { address: BOB, password: BOB_PASSWORD },
        { address: 'carol@receiver.test', password: 'carol-secret' },
      ],
      tls: { cert: host.cert, key: host.key, ca },
    });
    events = new EventLog<MailboxEvents>('mailbox');
    const ctx: NodeContext<MailboxNodeConfig, MailboxEvents> = { config, events, log: (m) => nodeLog.push(m) };
    node = await startDovecotMailbox(ctx, { include: path.join(userDir, 'dovecot.conf') });
    masterPids = processesUnder(dataDir);
  });

  afterAll(async () => {
    await node?.stop();
    if (process.env.DUMP_DOVECOT_LOG) console.log(nodeLog.join('\n'));
    if (dataDir) await fs.rm(dataDir, { recursive: true, force: true });
    if (userDir) await fs.rm(userDir, { recursive: true, force: true });
  });

  it("writes the config and the effective settings into <dataDir>/dovecot/, the user's file included first; listens on every configured port", async () => {
    const effective = await fs.readFile(path.join(dataDir, 'dovecot', 'effective.conf'), 'utf8');
    expect(effective).toContain(`listen = ${ADDRESS}`);
    expect(effective).toContain('ssl = yes');
    expect(effective).toContain(`mail_location = maildir:${dataDir}/%Lu/Maildir`);
    // doveconf -n leaves out what equals Dovecot's default (ssl_min_protocol TLSv1.2, disable_plaintext_auth yes):
    // the generated file says them.
    const conf = await fs.readFile(path.join(dataDir, 'dovecot', 'dovecot.conf'), 'utf8');
    expect(conf).toContain('ssl_min_protocol = TLSv1.2');
    expect(conf).toContain('disable_plaintext_auth = yes');
    expect(Object.keys(node!.services).sort()).toEqual(['imap', 'imaps', 'lmtp', 'pop3', 'pop3s']);
    expect(node!.services.lmtp).toEqual({ host: ADDRESS, port: 24 });
    expect(masterPids.length).toBeGreaterThan(0);
    // The user's setting is in force (the greeting), the lab's listen and ssl won over theirs.
    expect(effective).toContain('login_greeting = Dovecot of the user, ready.');
    expect(effective).not.toMatch(/^listen = \*$/m);
    expect(effective).not.toMatch(/^ssl = no$/m);
    const imap = await TlsLines.connect(node!.services.imap!);
    try {
      expect(await imap.line()).toMatch(/^\* OK \[CAPABILITY .*STARTTLS.*LOGINDISABLED.*\] Dovecot of the user, ready\.$/);
    } finally {
      imap.close();
    }
  });

  it('LMTP delivery: per-recipient replies, a `stored` event with the Message-ID, the uid and the envelope sender', async () => {
    const pool = new SmtpClientPool({ ehloName: 'mx.receiver.test', lmtp: true, connectTimeoutMs: 2000, greetingTimeoutMs: 5000, socketTimeoutMs: 10_000, idleMs: 0 });
    try {
      const result = await pool.send(node!.services.lmtp!, { from: 'alice@sender.test', to: [BOB, 'nobody@receiver.test', 'bob+Work@receiver.test'] }, message('<first@sender.test>', 'first'));
      expect(result.accepted).toEqual([BOB, 'bob+Work@receiver.test']);
      expect(result.rejected).toEqual(['nobody@receiver.test']);
      expect(result.recipients.find((r) => r.address === 'nobody@receiver.test')?.code).toBe(550);
    } finally {
      pool.close();
    }
    const stored = await waitForEvent('stored', (e) => e.messageId === '<first@sender.test>' && e.detail.mailbox === 'INBOX');
    expect(stored.detail).toMatchObject({ user: BOB, mailbox: 'INBOX', from: 'alice@sender.test' });
    expect(stored.detail.uid).toBeGreaterThan(0);
    // The address detail: into that folder, created when missing (lmtp_save_to_detail_mailbox, lda_mailbox_autocreate).
    const work = await waitForEvent('stored', (e) => e.messageId === '<first@sender.test>' && e.detail.mailbox === 'Work');
    expect(work.detail).toMatchObject({ user: BOB, uid: 1 });
    expect((await node!.rpc.messages({ user: BOB, mailbox: 'Work' })).map((m) => m.uid)).toEqual([1]);
    // The source line is in the node's log, named with the event's sequence number.
    expect(nodeLog.some((l) => l.startsWith(`dovecot → stored #${stored.seq}: `) && l.includes('saved mail to INBOX'))).toBe(true);
  });

  it('control operations through doveadm: messages, read, mailboxes, deliver', async () => {
    const stored = await waitForEvent('stored', (e) => e.messageId === '<first@sender.test>' && e.detail.mailbox === 'INBOX');
    const messages = await node!.rpc.messages({ user: BOB });
    const first = messages.find((m) => m.uid === stored.detail.uid);
    expect(first).toBeDefined();
    expect(first!.size).toBe(stored.detail.size);
    expect(first!.flags).toEqual([]);
    const { data } = await node!.rpc.read({ user: BOB, uid: first!.uid });
    const text = Buffer.from(data, 'base64').toString('utf8');
    expect(text).toContain('Message-ID: <first@sender.test>');
    expect(text).toContain('Hello Bob, first.\r\n');
    expect(Buffer.from(data, 'base64').length).toBe(first!.size);
    const inbox = (await node!.rpc.mailboxes({ user: BOB })).find((m) => m.name === 'INBOX');
    expect(inbox).toMatchObject({ exists: messages.length, unseen: messages.length });
    expect((await node!.rpc.mailboxes({ user: BOB })).map((m) => m.name).sort()).toEqual(['INBOX', 'Work']);
    expect(inbox!.uidNext).toBeGreaterThan(first!.uid);

    const added = await node!.rpc.deliver({ user: 'carol@receiver.test', data: Buffer.from(message('<direct@sender.test>', 'direct')).toString('base64') });
    expect(added.uid).toBe(1);
    expect((await node!.rpc.messages({ user: 'carol@receiver.test' })).map((m) => m.uid)).toEqual([1]);
    await expect(node!.rpc.messages({ user: 'mallory@receiver.test' })).rejects.toThrow(/unknown user/);
    await expect(node!.rpc.read({ user: BOB, uid: 9999 })).rejects.toThrow(/no message with uid 9999/);
    expect(() => node!.rpc['app-passwords']({ user: BOB })).toThrow(/app passwords/);
  });

  it('IMAP with STARTTLS (imapflow, lab CA only): the message is there; a `session` event with the TLS version and cipher', async () => {
    const client = new ImapFlow({ host: ADDRESS, port: PORTS.imap, secure: false, doSTARTTLS: true, auth: { user: BOB, pass: BOB_PASSWORD }, tls: { ca, servername: HOSTNAME }, logger: false });
    await client.connect();
    try {
      const lock = await client.getMailboxLock('INBOX');
      try {
        const found = await client.search({ header: { 'message-id': '<first@sender.test>' } }, { uid: true });
        expect(found).toHaveLength(1);
        const fetched = await client.fetchOne(String((found as number[])[0]), { source: true }, { uid: true });
        expect(fetched && fetched.source?.toString()).toContain('Subject: first');
      } finally {
        lock.release();
      }
      // The lab's default folders (the user's file defines none): there at the first login, with their special use,
      // subscribed; a mail app's APPEND to Sent works without a CREATE.
      const list = await client.list();
      for (const [name, use] of [['Sent', '\\Sent'], ['Drafts', '\\Drafts'], ['Trash', '\\Trash'], ['Junk', '\\Junk']]) {
        expect(list.find((m) => m.path === name), `${name} in ${JSON.stringify(list.map((m) => [m.path, m.specialUse]))}`).toMatchObject({ specialUse: use, subscribed: true });
      }
      const appended = await client.append('Sent', message('<sent@receiver.test>', 'sent by bob'), ['\\Seen']);
      expect(appended && appended.uid).toBe(1);
    } finally {
      await client.logout();
    }
    const session = await waitForEvent('session', (e) => e.detail.protocol === 'imap');
    expect(session.detail).toMatchObject({ user: BOB, protocol: 'imap', method: 'PLAIN', client: '127.0.0.1' });
    expect(session.detail.tls).toMatchObject({ version: expect.stringMatching(/^TLSv1\.[23]$/), cipher: expect.any(String) });
  });

  it('POP3 with STLS: RETR gives the message; DELE then QUIT is a `deleted` event with the Message-ID', async () => {
    const pop3 = new Pop3Client({ host: ADDRESS, port: PORTS.pop3 }, 10_000, { ca, servername: HOSTNAME });
    await pop3.connect();
    await pop3.login(BOB, BOB_PASSWORD);
    const stat = await pop3.stat();
    expect(stat.count).toBeGreaterThan(0);
    const retrieved = (await pop3.retr(1)).toString('utf8');
    expect(retrieved).toContain('Message-ID: <first@sender.test>');
    await pop3.dele(1);
    await pop3.quit();
    // Read from the log when the session ends: the message it opened for its one RETR.
    const got = await waitForEvent('retrieved', (e) => e.detail.protocol === 'pop3');
    const stored = await waitForEvent('stored', (e) => e.messageId === '<first@sender.test>' && e.detail.mailbox === 'INBOX');
    expect(got.messageId).toBe('<first@sender.test>');
    expect(got.detail).toEqual({ user: BOB, protocol: 'pop3', uid: stored.detail.uid, size: stored.detail.size, mailbox: 'INBOX' });
    expect(events.since(0).filter((e) => e.kind === 'retrieved')).toHaveLength(1);
    const deleted = await waitForEvent('deleted', (e) => e.detail.protocol === 'pop3');
    expect(deleted.messageId).toBe('<first@sender.test>');
    expect(deleted.detail).toMatchObject({ user: BOB, mailbox: 'INBOX' });
    expect(await node!.rpc.messages({ user: BOB })).toEqual([]);
    const session = await waitForEvent('session', (e) => e.detail.protocol === 'pop3');
    expect(session.detail.tls).not.toBeNull();
  });

  it('a wrong password over imaps is refused and is an `auth-failed` event; a plaintext login before STARTTLS is refused without one', async () => {
    const before = events.since(0).filter((e) => e.kind === 'auth-failed').length;
    const plain = new Pop3Client({ host: ADDRESS, port: PORTS.pop3 }, 10_000);
    await plain.connect();
    await plain.command(`USER ${BOB}`).catch(() => undefined);
    await expect(plain.command(`PASS ${BOB_PASSWORD}`)).rejects.toThrow(Pop3Error);
    await plain.quit().catch(() => plain.drop());

    const client = new ImapFlow({ host: ADDRESS, port: PORTS.imaps, secure: true, auth: { user: BOB, pass: 'not-the-password' }, tls: { ca, servername: HOSTNAME }, logger: false });
    await expect(client.connect()).rejects.toThrow();
    client.close();
    const failed = await waitForEvent('auth-failed', (e) => e.detail.protocol === 'imap');
    expect(failed.detail).toMatchObject({ protocol: 'imap', login: BOB, method: 'PLAIN', client: '127.0.0.1' });
    // Only the wrong password: the POP3 login refused before TLS checked no password.
    expect(events.since(0).filter((e) => e.kind === 'auth-failed').length).toBe(before + 1);
  });

  it("over the lab's control channel (HTTP, bearer token), as the harness would call it: the operations and the event stream", async () => {
    const token = newControlToken();
    const control = await startControlServer({
      host: ADDRESS,
      port: 0,
      token,
      events,
      health: () => ({ name: 'mailbox', role: 'mailbox', pid: process.pid, services: node!.services }),
      rpc: () => node!.rpc,
    });
    try {
      const { port } = control.address() as AddressInfo;
      const client = new ControlClient<MailboxContract>({ host: ADDRESS, port }, 'mailbox', token);
      expect((await client.health()).services.lmtp).toEqual({ host: ADDRESS, port: 24 });
      const carol = await client.call('messages', { user: 'carol@receiver.test' });
      expect(carol.map((m) => m.uid)).toEqual([1]);
      await expect(client.call('messages', { user: 'mallory@receiver.test' })).rejects.toThrow(/unknown user/);
      const kinds = await new Promise<string[]>((resolve) => {
        const seen: string[] = [];
        const stop = client.streamEvents(0, (e) => {
          seen.push(e.kind);
          if (e.seq === events.since(0).at(-1)!.seq) {
            stop();
            resolve(seen);
          }
        }, () => resolve(seen));
      });
      expect(kinds).toEqual(expect.arrayContaining(['stored', 'session', 'deleted', 'auth-failed']));
      client.close();
    } finally {
      control.closeAllConnections();
      control.close();
    }
  });

  it('stop: doveadm stop, and no Dovecot process of this node is left', async () => {
    await node!.stop();
    expect(processesUnder(dataDir)).toEqual([]);
    // Gone, or a zombie left to an init that does not reap (a container's): nothing runs.
    for (const pid of masterPids) expect(alive(pid), `pid ${pid}`).toBe(false);
    // Stopping twice is the same stop.
    await node!.stop();
  });
});
