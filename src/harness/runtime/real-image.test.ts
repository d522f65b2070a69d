// The docker runtime's real-server image (issue 14) against a real engine: built from this host's Postfix and Dovecot
// packages, once, and reused by its content hash; the servers and the tools their scripts run work in it; and a lab
// with Postfix and Dovecot runs on it, including a SIGKILL of both and a start on the same volumes. Skipped (with the
// reason) where no engine answers or the packages are missing.
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { getContainerRuntimeClient } from 'testcontainers';
import { afterAll, describe, expect, it } from 'vitest';
import dovecotLab from '../../../lab/dovecot.js';
import postfixDovecotLab from '../../../lab/postfix-dovecot.js';
import { checkDeliveredOnce } from '../checkers/index.js';
import { Lab, type StartedLab } from '../lab.js';
import { dockerEngine, LABEL } from './docker.js';
import { ensureImage, planImage } from './images.js';
import { realImageUnavailable } from './real-image.js';

const engine = await dockerEngine();
const skipReason = engine.available ? realImageUnavailable() : `no Docker engine answers at ${engine.where} (${engine.reason})`;
if (skipReason) console.warn(`[runtime/real-image.test] skipping the real-server image tests: ${skipReason}`);
const log = (m: string) => console.log(`[runtime/real-image.test] ${m}`);
const docker = async () => (await getContainerRuntimeClient()).container.dockerode;

/** Runs `argv` in a container of `image` (no network, labelled, removed after); its exit code and output. */
async function runIn(image: string, argv: string[]): Promise<{ code: number; output: string }> {
  const engine = await docker();
  const container = await engine.createContainer({
    Image: image,
    Entrypoint: [argv[0]!],
    Cmd: argv.slice(1),
    Labels: { [LABEL.maillab]: '1' },
    HostConfig: { NetworkMode: 'none', AutoRemove: false },
  });
  try {
    await container.start();
    const { StatusCode } = (await Promise.race([
      container.wait(),
      new Promise((_, reject) => setTimeout(() => reject(new Error(`${argv.join(' ')} did not end within 20 s`)), 20_000).unref()),
    ])) as { StatusCode: number };
    return { code: StatusCode, output: demux(await container.logs({ stdout: true, stderr: true })) };
  } finally {
    await container.remove({ force: true });
  }
}

/** What the host's own binary says (the image holds the same files). */
function host(file: string, args: string[]): string {
  return execFileSync(file, args, { encoding: 'utf8' }).trim();
}

describe('a user-given real-server image (MAILLAB_REAL_BASE_IMAGE, where a registry is reachable)', () => {
  it('puts just the bundle on it, with node from its PATH, and no layer of the host\'s packages', async () => {
    const plan = await planImage({ real: true, realBaseImage: 'example/postfix-dovecot-node:1' });
    expect(plan.tag).toMatch(/^maillab-real:[0-9a-f]{12}$/);
    expect(plan.from).toBe('example/postfix-dovecot-node:1');
    expect(plan.realBase).toBeUndefined();
    expect(plan.runtime).toBeUndefined();
    expect(plan.dockerfile).toContain('ENTRYPOINT ["node","--max-semi-space-size=2","/app/node.js"]');
    expect(plan.files.map((f) => f.target)).toContain('/app/node.js');
  });

  it('is needed for real servers when the host\'s binaries do not go into the image (MAILLAB_BASE_IMAGE)', async () => {
    const saved = process.env.MAILLAB_REAL_BASE_IMAGE;
    delete process.env.MAILLAB_REAL_BASE_IMAGE;
    try {
      await expect(planImage({ real: true, baseImage: 'node:20-slim' })).rejects.toThrow(/MAILLAB_REAL_BASE_IMAGE: an image with node, Postfix and Dovecot \(base image here: node:20-slim\)/);
    } finally {
      if (saved !== undefined) process.env.MAILLAB_REAL_BASE_IMAGE = saved;
    }
  });
});

describe.skipIf(skipReason !== undefined)('the real-server image', () => {
  let tag = '';

  it('is built from the host\'s packages once, in layers, and reused by its content hash', { timeout: 300_000 }, async () => {
    const first = Date.now();
    tag = await ensureImage({ real: true, log });
    log(`ensureImage({ real: true }): ${Date.now() - first} ms`);
    expect(tag).toMatch(/^maillab-real:[0-9a-f]{12}$/);
    const plan = await planImage({ real: true });
    expect(plan.tag).toBe(tag);
    const servers = plan.realBase!;
    expect(servers.tag).toMatch(/^maillab-real-base:[0-9a-f]{12}$/);
    const targets = servers.files.map((f) => f.target);
    for (const file of ['/usr/sbin/postfix', '/usr/lib/postfix/sbin/master', '/usr/sbin/dovecot', '/usr/lib/dovecot/lmtp', '/usr/lib/dovecot/imap', '/usr/lib/dovecot/pop3', '/usr/bin/doveadm', '/etc/passwd', '/bin']) {
      expect(targets, file).toContain(file);
    }
    // The node runtime's files are below, not again in the servers' layer; documentation is left out.
    expect(targets).not.toContain('/usr/local/bin/node');
    expect(targets.filter((t) => t.startsWith('/usr/share/doc/'))).toEqual([]);

    // Three layers: node and its libraries, the servers, the bundle. A new bundle is a new top layer only.
    const image = await (await docker()).getImage(tag).inspect();
    expect(image.RootFS.Layers).toHaveLength(3);
    expect(image.Config.Labels).toMatchObject({ maillab: '1' });
    log(`${tag}: ${(image.Size / 1e6).toFixed(0)} MB (servers' layer ${(servers.files.reduce((s, f) => s + f.size, 0) / 1e6).toFixed(1)} MB of files)`);

    const second = Date.now();
    expect(await ensureImage({ real: true, log: (m) => expect.fail(`the second ensureImage built again: ${m}`) })).toBe(tag);
    expect(Date.now() - second).toBeLessThan(5000);
  });

  it('runs Postfix, Dovecot and the tools postfix-script needs, as the host\'s own', { timeout: 120_000 }, async () => {
    expect(tag).not.toBe('');
    const postconf = await runIn(tag, ['/usr/sbin/postconf', '-d', '-h', 'mail_version']);
    expect(postconf).toMatchObject({ code: 0 });
    expect(postconf.output.split('\n')).toContain(host('/usr/sbin/postconf', ['-d', '-h', 'mail_version']));
    const dovecot = await runIn(tag, ['/usr/sbin/dovecot', '--version']);
    expect(dovecot).toEqual({ code: 0, output: host('/usr/sbin/dovecot', ['--version']) + '\n' });
    // The accounts the servers run as, and postfix-script's tools, through /bin/sh as postfix-script runs them.
    const shell = await runIn(tag, ['/bin/sh', '-c', 'id -u postfix && id -u dovecot && id -u dovenull && id -u mail && echo a,b | sed s/,/\\ / | awk "{print \\$2}" | tr b c && find /etc/postfix -name postfix-script | grep -c . && cmp -s /bin/sh /usr/bin/sh && echo ok']);
    expect(shell.code, shell.output).toBe(0);
    const uid = (user: string) => host('id', ['-u', user]);
    expect(shell.output.split('\n')).toEqual([uid('postfix'), uid('dovecot'), uid('dovenull'), uid('mail'), 'c', '1', 'ok', '']);
  });

  describe('a lab with Postfix as the MX and Dovecot as the mailbox server', () => {
    let lab: StartedLab | undefined;
    afterAll(async () => {
      await lab?.stop();
      // Nothing of the lab stays behind.
      if (lab) expect(await (await docker()).listContainers({ all: true, filters: JSON.stringify({ label: [`${LABEL.lab}=${lab.id}`] }) })).toEqual([]);
    }, 60_000);

    it('resolves through the lab DNS only, and delivers after both servers were SIGKILLed and started again', { timeout: 180_000 }, async () => {
      const started = Date.now();
      lab = await new Lab(postfixDovecotLab).withRuntime('docker').start();
      log(`lab ${lab.id} started in ${Date.now() - started} ms`);
      // src/real/lab-resolver.ts wrote the container's resolv.conf (MAILLAB_CONTAINER=1): only the lab DNS.
      const mx = (await (await docker()).listContainers({ filters: JSON.stringify({ label: [`${LABEL.lab}=${lab.id}`, `${LABEL.node}=mx`] }) }))[0]!;
      expect(mx.Image).toMatch(/^maillab-real:/);
      const resolvConf = await execIn(mx.Id, ['cat', '/etc/resolv.conf']);
      const nameservers = resolvConf.split('\n').filter((l) => l.startsWith('nameserver'));
      expect(nameservers).toEqual([`nameserver ${lab.nodeOf('dns').config.address}`]);

      for (const name of ['mx', 'mailbox']) {
        await lab.node(name).kill();
        await lab.node(name).start();
      }
      const sent = await lab.client('alice@sender.test').send({ to: 'bob@receiver.test', subject: 'after the kill', text: 'still here\n' });
      await lab.waitFor({ kind: 'stored', node: 'mailbox', messageId: sent.messageId }, { timeoutMs: 20_000 });
      await checkDeliveredOnce(lab, 'bob@receiver.test', sent.messageId);
    });
  });

  it('copies a Dovecot node\'s own dovecot.conf (a host path) into its container', { timeout: 120_000 }, async () => {
    const dir = mkdtempSync(path.join(os.tmpdir(), 'real-image-test-'));
    const own = path.join(dir, 'dovecot.conf');
    writeFileSync(own, 'login_greeting = Dovecot of the user file\n');
    let lab: StartedLab | undefined;
    try {
      lab = await new Lab(dovecotLab).with((d) => Object.assign(d.hosts.mailbox!, { config: own })).withRuntime('docker').start();
      expect(await firstLine(lab.node('mailbox').service('imap'))).toMatch(/^\* OK .*Dovecot of the user file/);
    } finally {
      await lab?.stop();
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

/** The first line a server sends (its greeting). */
function firstLine(endpoint: { host: string; port: number }): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = net.connect(endpoint);
    let data = '';
    socket.setTimeout(10_000, () => socket.destroy(new Error(`no greeting from ${endpoint.host}:${endpoint.port} within 10 s`)));
    socket.on('data', (chunk) => {
      data += chunk.toString('utf8');
      if (!data.includes('\r\n')) return;
      socket.destroy();
      resolve(data.split('\r\n')[0]!);
    });
    socket.on('error', reject);
    socket.on('close', () => reject(new Error(`${endpoint.host}:${endpoint.port} closed before greeting`)));
  });
}

/** Runs a command in a running container; its output (stdout and stderr). */
async function execIn(containerId: string, argv: string[]): Promise<string> {
  const exec = await (await docker()).getContainer(containerId).exec({ Cmd: argv, AttachStdout: true, AttachStderr: true });
  const stream = await exec.start({});
  const chunks: Buffer[] = [];
  await new Promise<void>((resolve, reject) => {
    stream.on('data', (c: Buffer) => chunks.push(c));
    stream.on('end', () => resolve());
    stream.on('error', reject);
  });
  return demux(Buffer.concat(chunks));
}

/** The text of the engine's multiplexed stdout/stderr stream (an 8-byte header per frame). */
function demux(raw: Buffer): string {
  let output = '';
  for (let i = 0; i + 8 <= raw.length; ) {
    const size = raw.readUInt32BE(i + 4);
    output += raw.subarray(i + 8, i + 8 + size).toString('utf8');
    i += 8 + size;
  }
  return output;
}
