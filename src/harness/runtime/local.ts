// The local runtime: every node is a child process bound to its own loopback address (Linux routes all of
// 127/8 to lo), with the standard ports when the process may bind them and standard+10000 otherwise.
import { spawn, type ChildProcess } from 'node:child_process';
import { promises as fs, existsSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import type { NodeConfig } from '../../shared/config.js';
import { NODE_V8_FLAGS, READY_MARKER } from '../../shared/node.js';
import type { LabNetwork, RunningNode, Runtime } from './types.js';
import { packageRoot } from './types.js';
import { currentOwner, ownerState, processStartTime, reapedLine, stillRunning, type LabOwner, type ProcessId } from './owner.js';
import { labNodeNames, type LabDefinition } from '../topology.js';

const READY_TIMEOUT_MS = 15_000;

/** The prefix of a lab's data root in os.tmpdir(): `maillab-<labId>-XXXXXX`. */
const DATA_ROOT_PREFIX = 'maillab-';
/** In a lab's data root: who owns the lab (removed when its data is kept on purpose, MAILLAB_KEEP=1). */
export const OWNER_FILE = 'owner.json';
/** In a lab's data root, per node: the node process (pid and start time), so a reaper can stop a stray one. */
const PROCESS_FILE_SUFFIX = '.process.json';

interface OwnerFile {
  labId: string;
  owner: LabOwner;
}

/**
 * The node flags of the nodes: NODE_V8_FLAGS, then MAILLAB_NODE_ARGS (e.g. --cpu-prof; a V8 flag given there again
 * wins, being later), and source maps with MAILLAB_SOURCE_MAPS=1. Source maps are off by default: they cost about
 * 5 MiB of memory per node, and the bundle keeps function names, so stack traces stay readable without them.
 */
export function nodeArgs(): string[] {
  const args = [...NODE_V8_FLAGS, ...(process.env.MAILLAB_NODE_ARGS?.split(' ').filter(Boolean) ?? [])];
  return process.env.MAILLAB_SOURCE_MAPS === '1' ? [...args, '--enable-source-maps'] : args;
}

/** The hosts of a lab that run a real server (Dovecot, Postfix) instead of maillab's own. */
export function realServerHosts(lab: LabDefinition): { host: string; server: string }[] {
  return Object.entries(lab.hosts).flatMap(([host, h]) => ((h.role === 'mailbox' && h.server === 'dovecot') || ((h.role === 'mx' || h.role === 'mta') && h.server === 'postfix') ? [{ host, server: h.server }] : []));
}

export class LocalRuntime implements Runtime {
  readonly kind = 'local' as const;
  private dataRoot?: string;
  private readonly children = new Set<ChildProcess>();
  /** Ends the Postfix processes of the lab's Postfix nodes (their masters outlive a killed node process). */
  private readonly postfixKillers = new Set<() => Promise<void>>();

  async prepare(lab: LabDefinition, labId: string): Promise<LabNetwork> {
    const real = realServerHosts(lab);
    if (real.length && process.getuid?.() !== 0) {
      throw new Error(`lab ${lab.name}: ${real.map((r) => `${r.host} (${r.server})`).join(', ')} run${real.length === 1 ? 's' : ''} a real server whose master runs as root only: start the lab as root`);
    }
    await reapLocalLabs();
    const dataRoot = await createHostDir(labId);
    // Dovecot delivers as Debian's `mail` user and Postfix's master opens its lock as `postfix`: both must get through
    // the lab directory to their own: 0711 (no listing; the node configs in it stay 0600).
    if (real.length) await fs.chmod(dataRoot, 0o711);
    this.dataRoot = dataRoot;
    // Hosts and link proxies (issue 15) each get an address.
    const hosts = labNodeNames(lab);
    const block = await freeLoopbackBlock(hosts.length);
    const addresses = Object.fromEntries(hosts.map((h, i) => [h, `${block}.${i + 2}`]));
    return { addresses, portOffset: (await canBindPrivileged(`${block}.1`)) ? 0 : 10_000, dataRoot, hostDir: dataRoot, linksKeepClientAddress: true };
  }

  async startNode(config: NodeConfig): Promise<RunningNode> {
    const configFile = path.join(this.dataRoot ?? os.tmpdir(), `${config.name}.json`);
    // Mode 0600 (in a 0700 directory): the config holds the lab's control token.
    await fs.writeFile(configFile, JSON.stringify(config, null, 2), { mode: 0o600 });
    const entry = path.join(packageRoot(), 'dist', 'node.js');
    if (!existsSync(entry)) throw new Error(`${entry} is missing: run "npm run build" first`);
    const child = spawn(process.execPath, [...nodeArgs(), entry, config.role, '--config', configFile], {
      // stdin stays open as a lifeline: the node exits when the harness dies without stopping it.
      stdio: ['pipe', 'pipe', 'pipe'],
      env: { ...process.env, NODE_OPTIONS: '', MAILLAB_LIFELINE: 'stdin' },
    });
    this.children.add(child);
    if (child.pid !== undefined) {
      const id: ProcessId = { pid: child.pid, start: processStartTime(child.pid) ?? '' };
      await fs.writeFile(path.join(path.dirname(configFile), `${config.name}${PROCESS_FILE_SUFFIX}`), JSON.stringify(id) + '\n', { mode: 0o600 });
    }
    const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
    void exited.then(() => this.children.delete(child));

    let stderr = '';
    child.stderr!.setEncoding('utf8');
    child.stderr!.on('data', (chunk: string) => {
      stderr = (stderr + chunk).slice(-8000);
      if (process.env.MAILLAB_VERBOSE) process.stderr.write(chunk);
    });
    const ready = await new Promise<{ services: RunningNode['services']; control: RunningNode['control'] }>((resolve, reject) => {
      let stdout = '';
      const timer = setTimeout(() => fail(`not ready after ${READY_TIMEOUT_MS} ms`), READY_TIMEOUT_MS);
      const fail = (why: string) => {
        clearTimeout(timer);
        child.kill('SIGKILL');
        reject(new Error(`node ${config.name} (${config.role}) on ${config.address}: ${why}\n${stderr.trim()}`));
      };
      const onExit = (code: number | null, signal: string | null) => fail(`exited with ${signal ?? code} before it was ready`);
      child.once('exit', onExit);
      child.stdout!.setEncoding('utf8');
      child.stdout!.on('data', (chunk: string) => {
        stdout += chunk;
        const line = stdout.split('\n').find((l) => l.startsWith(READY_MARKER));
        if (line) {
          clearTimeout(timer);
          child.off('exit', onExit);
          resolve(JSON.parse(line.slice(READY_MARKER.length)));
        }
      });
    });
    const signalAndWait = async (signal: NodeJS.Signals) => {
      if (child.exitCode === null && child.signalCode === null) child.kill(signal);
      await exited;
    };
    // A killed Postfix node's master is in a session of its own and would go on serving: the kill takes it too (a
    // Dovecot node's lifeline stops its Dovecot by itself).
    const killPostfix = async () => {
      if ((config.role !== 'mx' && config.role !== 'mta') || config.server !== 'postfix') return;
      const { instanceProcesses } = await import('../../real/postfix/node.js');
      for (const pid of await instanceProcesses(config.dataDir)) {
        try {
          process.kill(pid, 'SIGKILL');
        } catch {
          // gone already
        }
      }
    };
    this.postfixKillers.add(killPostfix);
    return { ...ready, stop: () => signalAndWait('SIGTERM'), kill: async () => (await signalAndWait('SIGKILL'), await killPostfix()) };
  }

  async dispose(options: { keepData?: boolean } = {}): Promise<void> {
    await Promise.all([...this.postfixKillers].map((kill) => kill().catch(() => undefined)));
    await Promise.all(
      [...this.children].map(
        (c) =>
          new Promise<void>((resolve) => {
            if (c.exitCode !== null || c.signalCode !== null) return resolve();
            c.once('exit', () => resolve());
            c.kill('SIGKILL');
          }),
      ),
    );
    if (this.dataRoot) await releaseHostDir(this.dataRoot, options);
  }
}

/**
 * A lab's directory on the harness's host: `maillab-<labId>-XXXXXX` in os.tmpdir() (mode 0700), with its owner
 * (owner.json), so reapLocalLabs removes it once the owner is gone. The local runtime's data root; the docker
 * runtime's host directory (the lab CA's certificate).
 */
export async function createHostDir(labId: string): Promise<string> {
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), `${DATA_ROOT_PREFIX}${labId}-`));
  const owner: OwnerFile = { labId, owner: currentOwner() };
  await fs.writeFile(path.join(dir, OWNER_FILE), JSON.stringify(owner, null, 2) + '\n', { mode: 0o600 });
  return dir;
}

/** Removes a directory of createHostDir, or with `keepData` keeps it for a post-mortem (then nobody reaps it). */
export async function releaseHostDir(dir: string, options: { keepData?: boolean } = {}): Promise<void> {
  if (options.keepData) {
    // Kept on purpose (a post-mortem): no longer a lab for reapLocalLabs to remove.
    await fs.rm(path.join(dir, OWNER_FILE), { force: true });
    process.stderr.write(`maillab: kept the data of the lab in ${dir}\n`);
  } else {
    await fs.rm(dir, { recursive: true, force: true, maxRetries: 3 });
  }
}

/**
 * Removes the data roots in `tmpdir` of local labs whose owner (the harness that started them) is gone:
 * SIGKILL of the harness, a cancelled CI job. Their nodes left by themselves (the stdin lifeline); one that is
 * still there is killed first. Labs of running owners, of other hosts and other users' are left alone, and so
 * are data roots kept on purpose (no owner.json). Says on stderr what it removed; returns the lab ids.
 */
export async function reapLocalLabs(tmpdir = os.tmpdir(), log: (line: string) => void = (l) => process.stderr.write(l + '\n')): Promise<string[]> {
  const reaped: string[] = [];
  let entries: string[];
  try {
    entries = (await fs.readdir(tmpdir)).filter((name) => name.startsWith(DATA_ROOT_PREFIX));
  } catch {
    return reaped;
  }
  for (const name of entries) {
    const dataRoot = path.join(tmpdir, name);
    let owned: OwnerFile;
    try {
      owned = JSON.parse(await fs.readFile(path.join(dataRoot, OWNER_FILE), 'utf8')) as OwnerFile;
    } catch {
      continue; // not a lab's data root, another user's, kept on purpose, or being removed right now
    }
    const state = ownerState(owned.owner);
    if (state.state !== 'gone') continue;
    try {
      const stray = await killStrayNodes(dataRoot);
      await fs.rm(dataRoot, { recursive: true, force: true, maxRetries: 3 });
      reaped.push(owned.labId);
      log(reapedLine(owned.labId, state.why, `${dataRoot}${stray ? ` and killed ${stray} node process(es) still running` : ''}`));
    } catch (err) {
      log(`maillab: could not reap lab ${owned.labId} in ${dataRoot}: ${(err as Error).message}`);
    }
  }
  return reaped;
}

/** SIGKILLs the node processes of a data root that still run, and waits until they are gone; returns how many. */
async function killStrayNodes(dataRoot: string): Promise<number> {
  const stray: ProcessId[] = [];
  for (const file of (await fs.readdir(dataRoot)).filter((f) => f.endsWith(PROCESS_FILE_SUFFIX))) {
    try {
      const id = JSON.parse(await fs.readFile(path.join(dataRoot, file), 'utf8')) as ProcessId;
      if (stillRunning(id)) stray.push(id);
    } catch {
      // gone meanwhile
    }
  }
  for (const id of stray) {
    try {
      process.kill(id.pid, 'SIGKILL');
    } catch {
      // gone meanwhile
    }
  }
  // SIGKILL takes effect at once; its parent (gone) no longer waits for it, init does.
  const deadline = Date.now() + 5000;
  while (stray.some(stillRunning)) {
    if (Date.now() > deadline) throw new Error(`node process(es) ${stray.filter(stillRunning).map((p) => p.pid).join(', ')} survived SIGKILL`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
  return stray.length;
}

/** A random 127.a.b.0/24 block whose first addresses have nothing listening on the control port. */
async function freeLoopbackBlock(hosts: number): Promise<string> {
  for (let attempt = 0; attempt < 20; attempt++) {
    const block = `127.${20 + Math.floor(Math.random() * 230)}.${Math.floor(Math.random() * 256)}`;
    const probes = await Promise.all(Array.from({ length: hosts }, (_, i) => canBind(`${block}.${i + 2}`, 7070)));
    if (probes.every(Boolean)) return block;
  }
  throw new Error('no free loopback address block found for the lab');
}

function canBind(host: string, port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const server = net.createServer();
    server.once('error', () => resolve(false));
    server.listen(port, host, () => server.close(() => resolve(true)));
  });
}

async function canBindPrivileged(host: string): Promise<boolean> {
  return canBind(host, 25);
}
