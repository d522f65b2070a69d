// The CLI as a user runs it: `maillab up --json` prints one line of endpoints and the lab CA's file, the lab
// answers on them, and SIGTERM stops every node; `maillab node dns --config` runs one node on its own; `maillab check`
// reports the DNS mistakes of a lab file and exits 1 on an error.
import { spawn } from 'node:child_process';
import { X509Certificate } from 'node:crypto';
import { promises as fs } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { createInterface } from 'node:readline';
import { describe, expect, it } from 'vitest';
import { createLabResolver, resolveMxRecords } from '../dns/index.js';
import { smtpDialogue } from '../harness/clients/probe.js';
import { packageRoot } from '../harness/runtime/types.js';
import defaultLab from '../../lab/default.js';

const bin = path.join(packageRoot(), 'bin', 'maillab.mjs');

function firstLine(child: ReturnType<typeof spawn>, timeoutMs: number): Promise<string> {
  return new Promise((resolve, reject) => {
    let stderr = '';
    child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
    const timer = setTimeout(() => reject(new Error(`no line on stdout within ${timeoutMs} ms\n${stderr}`)), timeoutMs);
    createInterface({ input: child.stdout! }).once('line', (line) => {
      clearTimeout(timer);
      resolve(line);
    });
    child.once('exit', (code) => reject(new Error(`exited with ${code} before printing\n${stderr}`)));
  });
}

function exited(child: ReturnType<typeof spawn>): Promise<number | null> {
  return new Promise((resolve) => {
    if (child.exitCode !== null) return resolve(child.exitCode);
    child.once('exit', (code) => resolve(code));
  });
}

describe('maillab up --json', () => {
  it('prints exactly one line with every endpoint, serves on them, and stops cleanly on SIGTERM', async () => {
    const child = spawn(process.execPath, [bin, 'up', '--json', '--runtime', 'local'], { stdio: ['ignore', 'pipe', 'pipe'] });
    const line = await firstLine(child, 20_000);
    const description = JSON.parse(line) as {
      id: string;
      runtime: string;
      nodes: Record<string, { host: string; services: Record<string, { host: string; port: number }>; control: { host: string; port: number } }>;
      controlToken: string;
      users: { address: string; password: string; appPasswords?: { name: string; password: string }[]; totpSecret?: string }[];
      apiKeys?: string[];
      ca: string;
    };
    expect(description.runtime).toBe('local');
    expect(description.id).toMatch(/^default-[0-9a-f]{6}$/);
    expect(Object.keys(description.nodes).sort()).toEqual(['dns', 'mailbox', 'mta', 'mx']);
    expect(Object.keys(description.nodes.mailbox!.services).sort()).toEqual(['accounts', 'imap', 'imaps', 'lmtp', 'pop3', 'pop3s']);
    expect(Object.keys(description.nodes.mta!.services).sort()).toEqual(['api', 'smtp', 'submission', 'submissions']);
    expect(description.users.map((u) => u.address)).toContain('bob@receiver.test');
    // What a mail client needs per user: app passwords and the TOTP secret only where set; the API's keys.
    expect(description.users.find((u) => u.address === 'bob@receiver.test')).toEqual({ address: 'bob@receiver.test', password: 'bob-secret' });
    expect(description.users.find((u) => u.address === 'dave@receiver.test')).toEqual({
      address: 'dave@receiver.test',
      password: 'dave-secret',
      appPasswords: [{ name: 'laptop', password: 'dave-laptop-app-password' }],
      totpSecret: 'JBSWY3DPEHPK3PXPMAILLAB2',
    });
    expect(description.apiKeys).toEqual(['maillab-default-api-key-sender-test']);

    const mx = await createLabResolver(description.nodes.dns!.services.dns!).resolveMx('receiver.test');
    expect(mx[0]!.exchange).toBe('mx.receiver.test');
    const replies = await smtpDialogue(description.nodes.mx!.services.smtp!, ['EHLO cli.test']);
    expect(replies[0]!.code).toBe(220);

    // The control channels take the printed token, and only it.
    expect(description.controlToken).toMatch(/^[A-Za-z0-9_-]{43}$/);
    for (const [name, node] of Object.entries(description.nodes)) {
      const url = `http://${node.control.host}:${node.control.port}/health`;
      expect((await fetch(url)).status, name).toBe(401);
      const health = await fetch(url, { headers: { authorization: `Bearer ${description.controlToken}` } });
      expect(health.status, name).toBe(200);
      expect(await health.json()).toMatchObject({ name });
    }

    // The lab CA's certificate: an absolute path to a PEM of a CA, which the MX's certificate chains to.
    expect(path.isAbsolute(description.ca)).toBe(true);
    const ca = new X509Certificate(await fs.readFile(description.ca));
    expect(ca.ca).toBe(true);

    child.kill('SIGTERM');
    expect(await exited(child)).toBe(0);
    // The CA file went with the lab.
    await expect(fs.stat(description.ca)).rejects.toThrow(/ENOENT/);
    // Every node is gone: the MX no longer accepts connections.
    await expect(smtpDialogue(description.nodes.mx!.services.smtp!, [], 1000)).rejects.toThrow();
  });
});

describe('maillab node', () => {
  it('runs one node on its own from a config file', async () => {
    const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'maillab-cli-'));
    const address = `127.${30 + Math.floor(Math.random() * 200)}.${Math.floor(Math.random() * 250)}.9`;
    const config = {
      name: 'dns',
      role: 'dns',
      hostname: 'ns.lab.test',
      address,
      dataDir: dir,
      controlPort: 7070,
      resolver: { host: address, port: 5353 },
      greetingDelayMs: 0,
      fsync: true,
      port: 5353,
      zones: [{ origin: 'solo.test', records: [{ name: 'solo.test', type: 'MX', exchange: 'mx.solo.test', priority: 5 }, { name: 'mx.solo.test', type: 'A', address }] }],
    };
    await fs.writeFile(path.join(dir, 'dns.json'), JSON.stringify(config));
    const child = spawn(process.execPath, [bin, 'node', 'dns', '--config', path.join(dir, 'dns.json')], { stdio: ['ignore', 'pipe', 'pipe'] });
    try {
      expect(await firstLine(child, 10_000)).toMatch(/^MAILLAB_READY /);
      const answer = await resolveMxRecords(createLabResolver({ host: address, port: 5353 }), 'solo.test');
      expect(answer).toEqual([{ exchange: 'mx.solo.test', priority: 5 }]);
      // Without a controlToken in its config, the node made one, readable by its user only.
      const tokenFile = path.join(dir, 'control-token');
      expect((await fs.stat(tokenFile)).mode & 0o777).toBe(0o600);
      const token = (await fs.readFile(tokenFile, 'utf8')).trim();
      expect(token).toMatch(/^[A-Za-z0-9_-]{43}$/);
      expect((await fetch(`http://${address}:7070/health`)).status).toBe(401);
      expect((await fetch(`http://${address}:7070/health`, { headers: { authorization: `Bearer ${token}` } })).status).toBe(200);
    } finally {
      child.kill('SIGTERM');
      expect(await exited(child)).toBe(0);
      await fs.rm(dir, { recursive: true, force: true });
    }
  });

  it('explains its usage when the role or the config is missing', async () => {
    const child = spawn(process.execPath, [bin, 'node', 'nonsense'], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stderr = '';
    child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
    expect(await exited(child)).toBe(2);
    expect(stderr).toMatch(/usage: maillab node <dns\|mta\|mx\|mailbox\|proxy> --config/);
  });
});

describe('maillab check', () => {
  /** Runs the CLI to its end; resolves with its exit code and output. */
  async function runCheck(args: string[]): Promise<{ code: number | null; stdout: string; stderr: string }> {
    const child = spawn(process.execPath, [bin, 'check', ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout!.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
    return { code: await exited(child), stdout, stderr };
  }

  // The default lab's hosts, with DNS mistakes an administrator makes: an SPF record that leaves out the MTA, a DMARC
  // policy that is no policy, and an MX host that has no address. Plain data (the default lab's hosts and users
  // written out): the file lives in a temp folder, outside any package that could give it `defineLab`.
  const brokenLab = `export default {
  name: 'broken',
  domains: {
    'sender.test': {
      mx: [{ host: 'mta', preference: 10 }],
      records: [
        { name: 'sender.test', type: 'TXT', data: 'v=spf1 ip4:192.0.2.0/24 -all' },
        { name: '_dmarc.sender.test', type: 'TXT', data: 'v=DMARC1; p=maybe' },
      ],
    },
    'receiver.test': {
      mx: [{ host: 'mx2.receiver.test', preference: 10 }],
      records: [{ name: 'receiver.test', type: 'TXT', data: 'v=spf1 a:mta.sender.test -all' }],
    },
  },
  hosts: ${JSON.stringify(defaultLab.hosts)},
  users: ${JSON.stringify(defaultLab.users)},
  retry: ${JSON.stringify(defaultLab.retry)},
};
`;

  async function withBrokenLab<T>(use: (file: string) => Promise<T>): Promise<T> {
    const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'maillab-check-'));
    try {
      const file = path.join(dir, 'broken.ts');
      await fs.writeFile(file, brokenLab);
      return await use(file);
    } finally {
      await fs.rm(dir, { recursive: true, force: true });
    }
  }

  it('reports every planted mistake of a lab file, one line each, and exits 1', async () => {
    const { code, stdout } = await withBrokenLab((file) => runCheck(['--lab', file]));
    expect(stdout.split('\n')).toEqual([
      'lab broken: mail DNS as planned, placeholder addresses dns 127.0.0.2, mailbox 127.0.0.3, mx 127.0.0.4, mta 127.0.0.5',
      "error   sender.test TXT (SPF)             mta.sender.test (127.0.0.5) sends sender.test's mail but SPF gives fail for 127.0.0.5 (matched -all of sender.test)",
      'error   _dmarc.sender.test TXT (DMARC)    p=maybe is not a policy: none, quarantine or reject (RFC 7489 §6.3); the record is malformed, so receivers may apply no policy (RFC 7489 §6.6.3)',
      'warning _dmarc.receiver.test TXT (DMARC)  no DMARC record for receiver.test, which sends mail: receivers apply no DMARC policy, so forged From: receiver.test is not refused',
      'error   receiver.test MX                  MX 10 mx2.receiver.test has no A or AAAA record (no such name): mail for receiver.test cannot be delivered to it',
      '3 error(s), 1 warning(s), 0 info',
      '',
    ]);
    expect(code).toBe(1);
  });

  it('--json prints the findings as JSON', async () => {
    const { code, stdout } = await withBrokenLab((file) => runCheck(['--lab', file, '--json']));
    const findings = JSON.parse(stdout) as { severity: string; check: string; record: string }[];
    expect(findings.map((f) => `${f.severity} ${f.check} ${f.record}`)).toEqual([
      'error spf sender.test TXT (SPF)',
      'error dmarc _dmarc.sender.test TXT (DMARC)',
      'warning dmarc _dmarc.receiver.test TXT (DMARC)',
      'error mx receiver.test MX',
    ]);
    expect(code).toBe(1);
  });

  it('exits 0 on the default lab: sender.test is sound (SPF, its DKIM key, DMARC); receiver.test publishes neither', async () => {
    const { code, stdout } = await runCheck([]);
    expect(stdout).toMatch(/^0 error\(s\), 2 warning\(s\), 0 info$/m);
    expect(stdout).not.toMatch(/^(error|warning) +(\w+\._domainkey\.|_dmarc\.)?sender\.test /m);
    expect(code).toBe(0);
  });
});
