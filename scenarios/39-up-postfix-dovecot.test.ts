// Scenario 39 (issue 14's "done when"): `npx maillab up --lab lab/postfix-dovecot.ts --json` starts a lab that real
// clients can use, with nothing but the printed line: curl submits over implicit TLS to maillab's MTA (465, AUTH),
// Postfix receives it as receiver.test's MX, Dovecot stores it, and Python's imaplib (STARTTLS) and poplib (STLS)
// read it with the lab CA. The wait for the message is on the mailbox node's event stream (the control channel, with
// the printed token), not a sleep. The effective settings of each real server are where `up` says they are.
// The runtime is MAILLAB_RUNTIME's (local as root, or docker), like every scenario.
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { promises as fs } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { packageRoot } from '../src/harness/runtime/types.js';
import { ControlClient } from '../src/shared/control.js';
import type { LabEvent } from '../src/shared/events.js';
import { clientHome, findBinary, runClient } from './support/real-clients.js';
import { whyRealServersSkip } from './support/real-servers.js';

interface Endpoint {
  host: string;
  port: number;
}
interface UpLine {
  runtime: 'local' | 'docker';
  nodes: Record<string, { host: string; services: Record<string, Endpoint>; control?: Endpoint; server?: string; effectiveConfig?: { path: string; in: 'host' | 'container' } }>;
  controlToken: string;
  users: { address: string; password: string }[];
  ca: string;
}

const curl = findBinary('curl');
const python = findBinary('python3');
const missing = !curl ? 'curl is not installed' : !python ? 'python3 is not installed' : undefined;
if (missing) process.stderr.write(`SKIP: [39-up-postfix-dovecot] ${missing}\n`);
const skip = missing ?? whyRealServersSkip('39-up-postfix-dovecot', ['postfix', 'dovecot']);

const BOB = 'bob@receiver.test';
const MESSAGE_ID = `<up-postfix-dovecot-${Date.now()}@sender.test>`;

describe.skipIf(skip !== undefined)('maillab up --lab lab/postfix-dovecot.ts --json, used by real clients', () => {
  let up: ChildProcess;
  let line: UpLine;
  let stderr = '';
  let home: { dir: string; remove: () => Promise<void> };

  beforeAll(async () => {
    home = await clientHome('up-postfix-dovecot');
    up = spawn(process.execPath, [path.join(packageRoot(), 'bin', 'maillab.mjs'), 'up', '--json', '--lab', path.join(packageRoot(), 'lab', 'postfix-dovecot.ts')], { stdio: ['ignore', 'pipe', 'pipe'] });
    up.stderr!.on('data', (d: Buffer) => (stderr = (stderr + d.toString()).slice(-8000)));
    let stdout = '';
    line = await new Promise<UpLine>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`maillab up printed no line within 50 s\n${stderr}`)), 50_000);
      up.stdout!.on('data', (d: Buffer) => {
        stdout += d.toString();
        if (stdout.includes('\n')) resolve((clearTimeout(timer), JSON.parse(stdout.split('\n')[0]!) as UpLine));
      });
      up.once('exit', (code) => reject((clearTimeout(timer), new Error(`maillab up exited with ${code}\n${stderr}`))));
    });
  }, 60_000);

  afterAll(async () => {
    if (up && up.exitCode === null) {
      up.kill('SIGTERM');
      await once(up, 'exit');
    }
    await home?.remove();
  }, 30_000);

  it('names which node runs which real server, and where its effective settings are', async () => {
    expect(line.nodes.mx).toMatchObject({ server: 'postfix', effectiveConfig: { path: expect.stringMatching(/postfix\/effective\.cf$/) } });
    expect(line.nodes.mailbox).toMatchObject({ server: 'dovecot', effectiveConfig: { path: expect.stringMatching(/dovecot\/effective\.conf$/) } });
    expect(line.nodes.mta!.server).toBeUndefined();
    if (line.runtime === 'local') {
      // `postconf -n` and `doveconf -n` of what the servers run with: the lab's overrides are in them.
      expect(await fs.readFile(line.nodes.mx!.effectiveConfig!.path, 'utf8')).toMatch(/^smtpd_forbid_bare_newline = yes$/m);
      expect(await fs.readFile(line.nodes.mailbox!.effectiveConfig!.path, 'utf8')).toMatch(/^mail_location = /m);
    } else {
      expect(line.nodes.mx!.effectiveConfig!.in).toBe('container');
    }
  });

  it('curl submits to the MTA, Postfix receives, Dovecot stores; imaplib and poplib read it with the lab CA', async () => {
    const password = (address: string) => line.users.find((u) => u.address === address)!.password;
    // The stored event, from the mailbox node's own event stream (everything since its start, then new ones).
    const mailbox = new ControlClient(line.nodes.mailbox!.control!, 'mailbox', line.controlToken);
    const seen: LabEvent[] = [];
    let storedNow: ((e: LabEvent) => void) | undefined;
    const stored = new Promise<LabEvent>((resolve) => (storedNow = resolve));
    const stop = mailbox.streamEvents(
      0,
      (e) => {
        seen.push(e);
        if (e.kind === 'stored' && e.messageId === MESSAGE_ID) storedNow!(e);
      },
      () => undefined,
    );
    try {
      const message = path.join(home.dir, 'message.eml');
      await fs.writeFile(message, `From: alice@sender.test\r\nTo: ${BOB}\r\nSubject: through maillab up\r\nMessage-ID: ${MESSAGE_ID}\r\n\r\nfrom curl, through Postfix, to Dovecot\r\n`);
      const smtps = line.nodes.mta!.services.submissions!;
      const sent = await runClient(curl!, ['-sS', '--cacert', line.ca, '--resolve', `mta.sender.test:${smtps.port}:${smtps.host}`, '--user', `alice@sender.test:${password('alice@sender.test')}`, '--mail-from', 'alice@sender.test', '--mail-rcpt', BOB, '--upload-file', message, `smtps://mta.sender.test:${smtps.port}`]);
      expect(sent.code, sent.transcript).toBe(0);
      let timer: NodeJS.Timeout | undefined;
      const event = await Promise.race([
        stored,
        new Promise<never>((_, reject) => {
          timer = setTimeout(() => reject(new Error(`no stored event for ${MESSAGE_ID} at the mailbox (Dovecot) within 30 s; its events: ${JSON.stringify(seen.map((e) => [e.kind, e.messageId]))}\n${stderr}`)), 30_000);
        }),
      ]).finally(() => clearTimeout(timer));
      expect(event.detail).toMatchObject({ user: BOB });
    } finally {
      stop();
    }

    const imap = line.nodes.mailbox!.services.imap!;
    const pop3 = line.nodes.mailbox!.services.pop3!;
    const script = [
      'import imaplib, poplib, ssl, sys, socket',
      'ca, host, imap_port, pop_port, user, password, mid = sys.argv[1:8]',
      'ctx = ssl.create_default_context(cafile=ca)',
      // The certificate names mail.receiver.test: connect to the printed address, check that name.
      'class Imap(imaplib.IMAP4):',
      '    def _create_socket(self, timeout): return socket.create_connection((host, int(imap_port)), timeout)',
      'i = Imap("mail.receiver.test", int(imap_port), timeout=10)',
      'i.starttls(ssl_context=ctx)',
      'i.login(user, password)',
      'i.select("INBOX", readonly=True)',
      'typ, data = i.search(None, "HEADER", "Message-ID", mid)',
      'print("imap", len(data[0].split()))',
      'i.logout()',
      'class Pop(poplib.POP3):',
      '    def _create_socket(self, timeout): return socket.create_connection((host, int(pop_port)), timeout)',
      'p = Pop("mail.receiver.test", int(pop_port), timeout=10)',
      'p.stls(context=ctx)',
      'p.user(user); p.pass_(password)',
      'count, size = p.stat()',
      'found = [n for n in range(1, count + 1) if any(mid.encode() in l for l in p.top(n, 0)[1])]',
      'print("pop3", len(found))',
      'p.quit()',
    ].join('\n');
    const read = await runClient(python!, ['-c', script, line.ca, imap.host, String(imap.port), String(pop3.port), BOB, password(BOB), MESSAGE_ID]);
    expect(read.code, read.transcript).toBe(0);
    expect(read.stdout).toMatch(/^imap 1$/m);
    expect(read.stdout).toMatch(/^pop3 1$/m);
  });
});

