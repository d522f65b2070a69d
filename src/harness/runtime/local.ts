// The local runtime: every node is a child process bound to its own loopback address (Linux routes all of
// 127/8 to lo), with the standard ports when the process may bind them and standard+10000 otherwise.
import { spawn, type ChildProcess } from 'node:child_process';
import { promises as fs, existsSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import type { NodeConfig } from '../../shared/config.js';
import { READY_MARKER } from '../../shared/node.js';
import type { LabNetwork, RunningNode, Runtime } from './types.js';
import { packageRoot } from './types.js';
import type { LabDefinition } from '../topology.js';

const READY_TIMEOUT_MS = 15_000;

/**
 * Extra node flags for the nodes: MAILLAB_NODE_ARGS (e.g. --cpu-prof), and source maps with
 * MAILLAB_SOURCE_MAPS=1. Off by default: they cost about 5 MiB of memory per node, and the bundle keeps
 * function names, so stack traces stay readable without them.
 */
export function nodeArgs(): string[] {
  const args = process.env.MAILLAB_NODE_ARGS?.split(' ').filter(Boolean) ?? [];
  return process.env.MAILLAB_SOURCE_MAPS === '1' ? [...args, '--enable-source-maps'] : args;
}

export class LocalRuntime implements Runtime {
  readonly kind = 'local' as const;
  private dataRoot?: string;
  private readonly children = new Set<ChildProcess>();

  async prepare(lab: LabDefinition, labId: string): Promise<LabNetwork> {
    const dataRoot = await fs.mkdtemp(path.join(os.tmpdir(), `maillab-${labId}-`));
    this.dataRoot = dataRoot;
    const hosts = Object.keys(lab.hosts);
    const block = await freeLoopbackBlock(hosts.length);
    const addresses = Object.fromEntries(hosts.map((h, i) => [h, `${block}.${i + 2}`]));
    return { addresses, portOffset: (await canBindPrivileged(`${block}.1`)) ? 0 : 10_000, dataRoot };
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
    return { ...ready, stop: () => signalAndWait('SIGTERM'), kill: () => signalAndWait('SIGKILL') };
  }

  async dispose(options: { keepData?: boolean } = {}): Promise<void> {
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
    if (this.dataRoot && !options.keepData) await fs.rm(this.dataRoot, { recursive: true, force: true });
  }
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
