// Postfix as the lab's `mx` role (issue 14): a real Postfix 3.7 instance of the node's own, started from the
// configuration config.ts writes, speaking the MX role contract (src/mx/api.ts) through events read from its maillog
// (maillog.ts). The instance runs as `postfix -c <dir> start-fg`, a child of this process, inside a mount namespace
// whose /etc/resolv.conf names only the lab DNS: Postfix resolves through libc, and a user's main.cf may ask DNS
// (reject_unknown_client_hostname, an RBL); whatever it asks then goes to the lab DNS, which answers only for the lab.
import type { ChildProcess } from 'node:child_process';
import { constants, existsSync, promises as fs, watch, type FSWatcher } from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import type { MxNodeConfig } from '../../shared/config.js';
import type { NodeContext, RunningRole } from '../../shared/node.js';
import type { MxContract, MxEvents } from '../../mx/api.js';
import { postfixLayout, writePostfixConfig, type PostfixLayout, type PostfixUserConfig } from './config.js';
import { MaillogParser } from './maillog.js';
import { smtpFaultsUnsupported } from '../../shared/smtp-faults.js';
import { labResolvConf, labResolverUnavailable, spawnWithLabResolver } from '../lab-resolver.js';

export const POSTFIX = '/usr/sbin/postfix';
export const POSTFIX_MASTER = '/usr/lib/postfix/sbin/master';

export interface PostfixMxOptions {
  /** The user's own main.cf and master.cf (contents), kept except where the lab must decide (README.md). */
  user?: PostfixUserConfig;
  /** How long the master may take to start and greet. Default 20 s. */
  startTimeoutMs?: number;
  /**
   * How long the master may take to stop after SIGTERM before its process group gets SIGKILL. Default 3 s: runNode
   * exits 5 s after a stop began, and the instance must be gone by then (its master is in a session of its own, so it
   * would outlive the node).
   */
  stopTimeoutMs?: number;
}

/** Why this machine cannot run a Postfix MX, or undefined when it can (root, Postfix and unshare installed). */
export function postfixUnavailable(): string | undefined {
  if (process.platform !== 'linux') return 'a Postfix MX needs Linux';
  if (typeof process.getuid !== 'function' || process.getuid() !== 0) return "Postfix's master runs only as root, and this process is not root";
  for (const file of [POSTFIX, POSTFIX_MASTER]) if (!existsSync(file)) return `${file} is missing (apt-get install postfix)`;
  return labResolverUnavailable();
}

/** The `mx` role, played by Postfix. Same contract as startMx: no operations, the MX events. */
export async function startPostfixMx(ctx: NodeContext<MxNodeConfig, MxEvents>, options: PostfixMxOptions = {}): Promise<RunningRole<MxContract>> {
  const { config, events, log } = ctx;
  const why = postfixUnavailable();
  if (why) throw new Error(`cannot start Postfix as ${config.name}: ${why}`);
  const layout = postfixLayout(config.dataDir);
  // maillab's MX features Postfix has no built-in counterpart for (milters would be the user's to configure).
  const ignored = (['auth', 'forwards', 'forwardVia', 'arcSeal', 'scanner', 'malwareAction'] as const).filter((k) => config[k] !== undefined);
  if (ignored.length) log(`Postfix MX: not applied (no Postfix counterpart in this adapter): ${ignored.join(', ')}`);
  // A node killed with SIGKILL cannot stop its Postfix (the master has a session of its own and lives on, holding the
  // port and the queue): the restarted node ends that instance first, as `postfix stop` would.
  const leftover = await masterPid(layout);
  if (leftover !== undefined) {
    log(`a Postfix master of this node is still running (pid ${leftover}, left by a node that did not stop it): stopping it`);
    await endInstance(layout, leftover, options.stopTimeoutMs ?? 3000, log);
  }
  await writePostfixConfig(config, options.user);
  // libc asks every nameserver of resolv.conf on port 53: the lab DNS's address, whatever its port (off 53, a query
  // meets a closed loopback port and fails at once, still inside the lab).
  const resolvConf = path.join(layout.dir, 'resolv.conf');
  await fs.writeFile(resolvConf, labResolvConf(config.resolver.host, 'Postfix'), { mode: 0o644 });

  const parser = new MaillogParser(`LMTP ${config.lmtp.host}:${config.lmtp.port}`);
  const tail = await tailFile(layout.maillog, layout.dir);
  let started: (() => void) | undefined;
  const fatal: string[] = [];
  tail.onLine((line) => {
    if (/\/master\[\d+\]: daemon started/.test(line)) started?.();
    if (/: (fatal|panic|error): /.test(line)) {
      fatal.push(line);
      log(`postfix: ${line}`);
    }
    for (const event of parser.feed(line)) {
      // The MX contract's details are closed shapes: the maillog lines an event was read from go to the node log.
      log(`${event.input.kind}${event.input.queueId ? ` ${event.input.queueId}` : ''} from the maillog: ${event.lines.join(' // ')}`);
      events.emit(event.input as Parameters<typeof events.emit>[0]);
    }
  });

  const child = await spawnWithLabResolver(resolvConf, POSTFIX, ['-c', layout.dir, 'start-fg']);
  let output = '';
  const keep = (chunk: Buffer) => {
    output = (output + chunk.toString('utf8')).slice(-4000);
  };
  child.stdout!.on('data', keep);
  child.stderr!.on('data', keep);
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code, signal) => resolve(code ?? (signal ? -1 : null))));

  const stop = stopper(child, exited, layout, options.stopTimeoutMs ?? 3000, log, tail);
  try {
    await untilStarted(exited, new Promise<void>((resolve) => (started = resolve)), options.startTimeoutMs ?? 20_000, () => `${output.trim()}\n${fatal.join('\n')}`.trim());
    // "daemon started" means the listener is open; the role is ready when the SMTP port greets, as any MX's is.
    await expectGreeting(config.address, config.ports.smtp, options.startTimeoutMs ?? 20_000);
  } catch (err) {
    await stop();
    throw new Error(`Postfix (${layout.dir}) did not start as ${config.name}: ${(err as Error).message}`, { cause: err });
  }
  log(`Postfix ${config.address}:${config.ports.smtp} ready (config ${layout.dir}, maillog ${layout.maillog})`);
  return {
    services: { smtp: { host: config.address, port: config.ports.smtp } },
    rpc: { ...smtpFaultsUnsupported('Postfix') },
    stop,
  };
}

/** Resolves when the master says it started; fails when the child exits first or the deadline passes. */
async function untilStarted(exited: Promise<number | null>, started: Promise<void>, timeoutMs: number, context: () => string): Promise<void> {
  let timer: NodeJS.Timeout | undefined;
  const deadline = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`no "daemon started" in the maillog within ${timeoutMs} ms\n${context()}`)), timeoutMs);
  });
  try {
    await Promise.race([started, exited.then((code) => Promise.reject(new Error(`postfix start-fg exited (${code}) before the master started\n${context()}`))), deadline]);
  } finally {
    clearTimeout(timer);
  }
}

/** One SMTP connection: the server's first reply must be a 220 greeting. */
function expectGreeting(host: string, port: number, timeoutMs: number): Promise<void> {
  return new Promise((resolve, reject) => {
    const socket = net.connect({ host, port });
    let data = '';
    socket.setTimeout(timeoutMs, () => socket.destroy(new Error(`no greeting from ${host}:${port} within ${timeoutMs} ms`)));
    socket.on('data', (chunk) => {
      data += chunk.toString('latin1');
      const line = /^(\d{3})([ -]).*\r?\n/m.exec(data);
      if (!line || line[2] === '-') return;
      socket.end('QUIT\r\n');
      if (line[1] === '220') resolve();
      else reject(new Error(`${host}:${port} greeted with ${JSON.stringify(line[0].trim())}, not 220`));
    });
    socket.on('error', reject);
    socket.on('close', () => reject(new Error(`${host}:${port} closed before greeting`)));
  });
}

/** The stop of the running role: its instance ended (endInstance), then the child (postfix-script's parent chain) reaped. */
function stopper(child: ChildProcess, exited: Promise<number | null>, layout: PostfixLayout, timeoutMs: number, log: (m: string) => void, tail: Tail): () => Promise<void> {
  let stopping: Promise<void> | undefined;
  let childGone = false;
  void exited.then(() => (childGone = true));
  return () =>
    (stopping ??= (async () => {
      const master = await masterPid(layout);
      if (master !== undefined) await endInstance(layout, master, timeoutMs, log);
      else child.kill('SIGTERM'); // no master yet (a failed start): postfix-script or its check is what runs
      let timer: NodeJS.Timeout | undefined;
      await Promise.race([exited, new Promise((r) => (timer = setTimeout(r, timeoutMs)))]);
      clearTimeout(timer);
      if (!childGone) {
        log(`postfix start-fg (pid ${child.pid}) did not exit within ${timeoutMs} ms: SIGKILL`);
        child.kill('SIGKILL');
        await exited;
      }
      tail.close();
    })());
}

/**
 * Ends one instance: SIGTERM to its master (what `postfix stop` sends; the master ends its daemons), then, past the
 * deadline, SIGKILL to the master's process group and to anything left working in the queue directory (what `postfix
 * stop` does after 5 s). Done when no process of the instance is left. Node has no pidfd for processes that are not
 * its children (the master and its daemons are not), so that is checked in /proc every 20 ms, within the deadline.
 */
async function endInstance(layout: PostfixLayout, master: number, timeoutMs: number, log: (m: string) => void): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  signal(master, 'SIGTERM');
  let left = await instanceProcesses(layout, master);
  while (left.length && Date.now() < deadline) {
    await new Promise((r) => setTimeout(r, 20));
    left = await instanceProcesses(layout, master);
  }
  if (!left.length) return;
  log(`Postfix did not stop within ${timeoutMs} ms: SIGKILL to ${left.join(', ')}`);
  signal(-master, 'SIGKILL');
  for (const pid of left) signal(pid, 'SIGKILL');
}

function signal(pid: number, name: NodeJS.Signals): void {
  try {
    process.kill(pid, name);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ESRCH') throw err;
  }
}

/**
 * The running master's pid, from `<queue_directory>/pid/master.pid`; undefined when that file is missing or names a
 * process that is not this instance's master (the file stays behind after a stop, and pids are reused).
 */
export async function masterPid(layout: PostfixLayout): Promise<number | undefined> {
  const text = await fs.readFile(path.join(layout.queueDirectory, 'pid', 'master.pid'), 'utf8').catch(() => '');
  const pid = Number(text.trim());
  if (!Number.isInteger(pid) || pid <= 1) return undefined;
  const exe = await fs.readlink(`/proc/${pid}/exe`).catch(() => '');
  const cwd = await fs.readlink(`/proc/${pid}/cwd`).catch(() => '');
  return exe === POSTFIX_MASTER && cwd === layout.queueDirectory ? pid : undefined;
}

/**
 * The live processes of one instance: the master's process group (the master is a session leader; its daemons stay in
 * its group), and any process working in its queue directory (every Postfix daemon chdirs there). Zombies do not count:
 * they are gone, only not yet reaped by init.
 */
export async function instanceProcesses(layout: PostfixLayout | string, master?: number): Promise<number[]> {
  const queue = typeof layout === 'string' ? postfixLayout(layout).queueDirectory : layout.queueDirectory;
  const out: number[] = [];
  for (const entry of await fs.readdir('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    const stat = await fs.readFile(`/proc/${entry}/stat`, 'utf8').catch(() => '');
    // pid (comm) state ppid pgrp …: comm may hold spaces and parentheses, so read after the last ')'.
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    if (!stat || fields[0] === 'Z' || fields[0] === 'X') continue;
    const inGroup = master !== undefined && Number(fields[2]) === master;
    const cwd = inGroup ? '' : await fs.readlink(`/proc/${entry}/cwd`).catch(() => '');
    if (inGroup || cwd === queue || cwd.startsWith(queue + path.sep)) out.push(Number(entry));
  }
  return out;
}

interface Tail {
  onLine(listener: (line: string) => void): void;
  close(): void;
}

/**
 * Follows a log file as it grows, from its size now (a restarted node's old lines are not events again): woken by
 * inotify on its directory (the file may not exist yet), reads what was appended, hands on whole lines.
 */
async function tailFile(file: string, dir: string): Promise<Tail> {
  let offset = await fs.stat(file).then((s) => s.size, () => 0);
  let partial = '';
  let listener: (line: string) => void = () => undefined;
  let reading = Promise.resolve();
  let closed = false;
  const read = () =>
    (reading = reading.then(async () => {
      if (closed) return;
      const handle = await fs.open(file, constants.O_RDONLY).catch(() => undefined);
      if (!handle) return;
      try {
        for (;;) {
          const buffer = Buffer.alloc(64 * 1024);
          const { bytesRead } = await handle.read(buffer, 0, buffer.length, offset);
          if (bytesRead === 0) break;
          offset += bytesRead;
          partial += buffer.subarray(0, bytesRead).toString('utf8');
          const lines = partial.split('\n');
          partial = lines.pop()!;
          for (const line of lines) if (line) listener(line);
        }
      } finally {
        await handle.close();
      }
    }));
  const watcher: FSWatcher = watch(dir, (_event, name) => {
    if (name === null || name === path.basename(file)) void read();
  });
  watcher.on('error', () => undefined);
  return {
    onLine(l) {
      listener = l;
      void read();
    },
    close() {
      closed = true;
      watcher.close();
    },
  };
}
