// A node process that dies without stopping Dovecot (the harness's kill() fault: SIGKILL) must not leave Dovecot
// serving: its lifeline stops it. And when even the lifeline is gone, the next start on the same data directory
// stops the earlier master instead of failing on "already running" and taken ports.
import { spawn, type ChildProcess } from 'node:child_process';
import { promises as fs, readFileSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { build } from 'esbuild';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { alive, descendants, dovecotUnavailable } from './node.js';
import { eventually, mailboxConfig, processesUnder, randomLoopback } from './testkit.test-helper.js';

const unavailable = dovecotUnavailable();
if (unavailable) console.log(`skipping the Dovecot lifeline tests: ${unavailable}`);

const ADDRESS = randomLoopback(3);

let dir: string;
let script: string;
let configFile: string;
let dataDir: string;
const children: ChildProcess[] = [];

/** Starts the helper node and resolves once it printed READY (or rejects with its stderr when it exits first). */
function startNode(): Promise<ChildProcess> {
  const child = spawn(process.execPath, [script, configFile], { stdio: ['ignore', 'pipe', 'pipe'] });
  children.push(child);
  let out = '';
  let err = '';
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`the node did not get ready within 30 s:\n${err}`)), 30_000);
    child.stderr!.setEncoding('utf8').on('data', (s: string) => (err += s));
    child.stdout!.setEncoding('utf8').on('data', (s: string) => {
      out += s;
      if (out.includes('READY ')) {
        clearTimeout(timer);
        resolve(child);
      }
    });
    child.once('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`the node exited (${code}) before it was ready:\n${err}`));
    });
  });
}

function masterPid(): number {
  return Number(readFileSync(path.join(dataDir, 'dovecot', 'run', 'master.pid'), 'utf8').trim());
}

/** Whether the LMTP port takes a connection now. */
function accepts(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.connect({ host: ADDRESS, port });
    s.once('connect', () => {
      s.destroy();
      resolve(true);
    });
    s.once('error', () => resolve(false));
  });
}

/** A process's arguments; none for one that exited since it was listed (Dovecot's short-lived children do). */
function cmdline(pid: number): string[] {
  try {
    return readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0');
  } catch {
    return [];
  }
}

describe.skipIf(unavailable !== undefined)('the Dovecot node dies: its Dovecot does not serve on', () => {
  beforeAll(async () => {
    dir = await fs.mkdtemp(path.join(os.tmpdir(), 'maillab-dovecot-lifeline-'));
    dataDir = path.join(dir, 'mailbox');
    script = path.join(dir, 'run.mjs');
    await build({ entryPoints: [path.join(import.meta.dirname, 'run.test-helper.ts')], bundle: true, platform: 'node', format: 'esm', target: 'node20', outfile: script, logLevel: 'silent' });
    const config = mailboxConfig({ address: ADDRESS, dataDir, ports: { lmtp: 24, imap: 143 } });
    configFile = path.join(dir, 'mailbox.json');
    await fs.writeFile(configFile, JSON.stringify(config));
    // The helper's parent directory is 0700 (mkdtemp): the mail user must traverse it, as the README says.
    await fs.chmod(dir, 0o711);
  });

  afterAll(async () => {
    for (const c of children) c.kill('SIGKILL');
    // The last node's lifeline stops its Dovecot: every process of it is gone before the directory is removed.
    if (dir) await eventually(() => processesUnder(dir).length === 0, 15_000, `the last Dovecot stops: ${processesUnder(dir).join(', ')}`);
    if (dir) await fs.rm(dir, { recursive: true, force: true });
  });

  it('SIGKILL of the node process: the lifeline stops Dovecot, the LMTP port closes', async () => {
    const node = await startNode();
    const master = masterPid();
    expect(alive(master)).toBe(true);
    expect(await accepts(24)).toBe(true);
    node.kill('SIGKILL');
    await eventually(() => !alive(master), 10_000, `Dovecot's master ${master} exits`);
    await eventually(async () => !(await accepts(24)), 5_000, 'the LMTP port closes');
  });

  it('node and lifeline both killed: the next start on the same data directory stops the old master and serves', async () => {
    const node = await startNode();
    const master = masterPid();
    const lifeline = descendants(node.pid!).filter((p) => cmdline(p).includes('maillab-dovecot-lifeline')); // its $0
    expect(lifeline).toHaveLength(1);
    process.kill(lifeline[0]!, 'SIGKILL');
    node.kill('SIGKILL');
    await eventually(() => !alive(node.pid!), 5_000, 'the node process exits');
    expect(alive(master)).toBe(true); // nothing stopped it
    await startNode();
    expect(alive(master)).toBe(false);
    expect(masterPid()).not.toBe(master);
    expect(await accepts(24)).toBe(true);
  });
});
