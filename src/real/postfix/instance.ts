// One running Postfix instance of the lab, whatever role it plays (mx: node.ts, mta: mta-node.ts): its config
// directory written beforehand, `postfix -c <dir> start-fg` run as a child inside a mount namespace whose
// /etc/resolv.conf names only the lab DNS (lab-resolver.ts), its maillog followed line by line, and its stop (SIGTERM
// to the master, SIGKILL past a deadline). A master left by a node killed with SIGKILL is ended before the start.
import type { ChildProcess } from 'node:child_process';
import { constants, existsSync, promises as fs, readFileSync, watch, type FSWatcher } from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { postfixLayout, type PostfixLayout } from './config.js';
import { labResolvConf, labResolverUnavailable, spawnWithLabResolver } from '../lab-resolver.js';

export const POSTFIX = '/usr/sbin/postfix';
export const POSTFIX_MASTER = '/usr/lib/postfix/sbin/master';

/** Why this machine cannot run a Postfix node, or undefined when it can (root, Postfix and unshare installed). */
export function postfixUnavailable(): string | undefined {
  if (process.platform !== 'linux') return 'a Postfix node needs Linux';
  if (typeof process.getuid !== 'function' || process.getuid() !== 0) return "Postfix's master runs only as root, and this process is not root";
  for (const file of [POSTFIX, POSTFIX_MASTER]) if (!existsSync(file)) return `${file} is missing (apt-get install postfix)`;
  return labResolverUnavailable();
}

export interface InstanceOptions {
  /** The node's name and what it plays, for messages (`mx`, `the lab MTA`). */
  name: string;
  layout: PostfixLayout;
  /** The lab DNS's address: the instance's only resolver. */
  resolver: string;
  /** The SMTP listeners that must greet with 220 before the instance counts as started. */
  greet: Array<{ host: string; port: number }>;
  /** Every maillog line, as it is appended (after the start). */
  onLine(line: string): void;
  log(message: string): void;
  /** Writes the configuration; called after a leftover master was ended. */
  configure(): Promise<void>;
  /** How long the master may take to start and greet (default 20 s), and to stop after SIGTERM (default 3 s). */
  timeouts?: { startTimeoutMs?: number; stopTimeoutMs?: number };
}

/**
 * The onLine of a role's instance: each maillog line fed to the role's parser, the events it completes emitted, and
 * (the contracts' details being closed shapes) the maillog lines each event was read from written to the node log.
 */
export function emitFromMaillog<E extends { input: { kind: string; queueId?: string }; lines: string[] }>(feed: (line: string) => E[], emit: (input: E['input']) => void, log: (message: string) => void): (line: string) => void {
  return (line) => {
    for (const event of feed(line)) {
      log(`${event.input.kind}${event.input.queueId ? ` ${event.input.queueId}` : ''} from the maillog: ${event.lines.join(' // ')}`);
      emit(event.input);
    }
  };
}

/**
 * Starts the instance: ends a master left by a killed node, writes the configuration, follows the maillog, runs the
 * master and waits for "daemon started", the master's pid (its pid file naming a live master working in the queue
 * directory) and the listeners' greetings. Returns its stop.
 */
export async function startInstance(options: InstanceOptions): Promise<{ stop(): Promise<void> }> {
  const { layout, log } = options;
  const stopTimeoutMs = options.timeouts?.stopTimeoutMs ?? 3000;
  const startTimeoutMs = options.timeouts?.startTimeoutMs ?? 20_000;
  // A node killed with SIGKILL cannot stop its Postfix (the master has a session of its own and lives on, holding the
  // port and the queue): the restarted node ends that instance first, as `postfix stop` would.
  const leftover = await masterPid(layout);
  const strays = await instanceProcesses(layout, leftover === undefined ? [] : [leftover]);
  if (strays.length) {
    log(`a Postfix master of this node is still running (pid ${leftover ?? 'unknown'}, processes ${strays.join(', ')}, left by a node that did not stop it): stopping it`);
    await endInstance({ layout, masters: leftover === undefined ? [] : [leftover], timeoutMs: stopTimeoutMs, log });
  }
  await options.configure();
  // libc asks every nameserver of resolv.conf on port 53: the lab DNS's address, whatever its port (off 53, a query
  // meets a closed loopback port and fails at once, still inside the lab).
  const resolvConf = path.join(layout.dir, 'resolv.conf');
  await fs.writeFile(resolvConf, labResolvConf(options.resolver, 'Postfix'), { mode: 0o644 });

  const tail = await tailFile(layout.maillog, layout.dir, (m) => log(`maillog of ${layout.dir}: ${m}`));
  let started: (() => void) | undefined;
  const fatal: string[] = [];
  tail.onLine((line) => {
    if (/\/master\[\d+\]: daemon started/.test(line)) started?.();
    if (/: (fatal|panic|error): /.test(line)) {
      fatal.push(line);
      log(`postfix: ${line}`);
    }
    options.onLine(line);
  });

  const child = await spawnWithLabResolver(resolvConf, POSTFIX, ['-c', layout.dir, 'start-fg']);
  let output = '';
  const keep = (chunk: Buffer) => {
    output = (output + chunk.toString('utf8')).slice(-4000);
  };
  child.stdout!.on('data', keep);
  child.stderr!.on('data', keep);
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code, signal) => resolve(code ?? (signal ? -1 : null))));

  const instance: RunningInstance = { layout, child, exited, childGone: false, master: undefined };
  void exited.then(() => (instance.childGone = true));
  const stop = stopper(instance, stopTimeoutMs, log, tail);
  try {
    const deadline = Date.now() + startTimeoutMs;
    const context = () => `${output.trim()}\n${fatal.join('\n')}`.trim();
    await untilStarted(exited, new Promise<void>((resolve) => (started = resolve)), startTimeoutMs, context);
    // The stop ends the master by its pid: the role is not ready before that pid is known (the master writes its pid
    // file before it logs "daemon started", so this is normally the first look).
    instance.master = await untilMasterPid(layout, exited, deadline, context);
    // "daemon started" means the listeners are open; the role is ready when they greet.
    for (const { host, port } of options.greet) await expectGreeting(host, port, Math.max(1, deadline - Date.now()));
  } catch (err) {
    await stop().catch((stopErr: Error) => log(stopErr.message));
    throw new Error(`Postfix (${layout.dir}) did not start as ${options.name}: ${(err as Error).message}`, { cause: err });
  }
  log(`Postfix master pid ${instance.master.pid} (${layout.dir})`);
  return { stop };
}

/** A process, by pid and kernel start time (/proc/<pid>/stat field 22), so that a reused pid is not taken for it. */
interface ProcessRef {
  pid: number;
  start: string;
}

/** What the stop needs of a started instance. */
interface RunningInstance {
  layout: PostfixLayout;
  /** `postfix start-fg` (postfix-script, whose child the master is). */
  child: ChildProcess;
  exited: Promise<number | null>;
  childGone: boolean;
  /** The master, once its pid file named it. */
  master: ProcessRef | undefined;
}

/** Resolves with the master's pid once its pid file names a live master working in the queue directory. */
async function untilMasterPid(layout: PostfixLayout, exited: Promise<number | null>, deadline: number, context: () => string): Promise<ProcessRef> {
  let gone = false;
  void exited.then(() => (gone = true));
  for (;;) {
    const pid = await masterPid(layout);
    const start = pid === undefined ? undefined : procStat(pid)?.start;
    if (pid !== undefined && start !== undefined) return { pid, start };
    if (gone) throw new Error(`postfix start-fg exited before its master's pid was known\n${context()}`);
    if (Date.now() > deadline) throw new Error(`${path.join(layout.queueDirectory, 'pid', 'master.pid')} named no running master of this instance in time (${await describeMasterPid(layout)})\n${context()}`);
    await sleep(20);
  }
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

/**
 * The stop of the running role: the instance ended (endInstance: the master known at start, the one its pid file
 * names now, the child chain), and only then the maillog's tail closed. Until the stop, a last resort stays armed: if
 * this process exits without it (an uncaught error, runNode's forced exit), the master's process group and the child
 * get SIGKILL synchronously, so no Postfix outlives its node.
 */
function stopper(instance: RunningInstance, timeoutMs: number, log: (m: string) => void, tail: Tail): () => Promise<void> {
  let stopping: Promise<void> | undefined;
  const lastResort = () => {
    const master = instance.master;
    if (master && procStat(master.pid)?.start === master.start) {
      signal(-master.pid, 'SIGKILL');
      signal(master.pid, 'SIGKILL');
    }
    if (!instance.childGone) instance.child.kill('SIGKILL');
  };
  process.on('exit', lastResort);
  // runNode prints its ready line and then listens for SIGTERM; a harness that stops the node at once (scenarios 02 and
  // 03 do) can signal it in between, on a busy machine where the node is preempted after its write (seen: the node died
  // of SIGTERM's default action, its Postfix went on serving). While this listener is there, SIGTERM and SIGINT never
  // kill the process outright: Node delivers them to the listeners on a later turn of its loop, by which time runNode's
  // are there. When this one is alone (no runNode, as in postfix.test.ts), it stops the instance and then lets the
  // signal end the process as it would have.
  const onSignal = (name: NodeJS.Signals) => {
    if (process.listenerCount(name) > 1) return;
    void stop()
      .catch((err: Error) => log(err.message))
      .finally(() => process.kill(process.pid, name));
  };
  const signals = (['SIGTERM', 'SIGINT'] as const).map((name) => ({ name, listener: () => onSignal(name) }));
  for (const { name, listener } of signals) process.on(name, listener);
  const stop = () =>
    (stopping ??= (async () => {
      try {
        await endInstance({ layout: instance.layout, masters: [], known: instance.master, child: instance, timeoutMs, log });
      } finally {
        tail.close();
        process.off('exit', lastResort);
        for (const { name, listener } of signals) process.off(name, listener);
      }
    })());
  return stop;
}

/**
 * Ends one instance and returns once nothing of it is left: SIGTERM to its master (what `postfix stop` sends; the
 * master ends its daemons) — the master known at start if it still runs, and whichever master the pid file names (also
 * one that appears meanwhile, a stop during a start) — and to the child chain once no master is left; past the
 * deadline, SIGKILL to the masters' process groups, to anything working in the queue directory and to the child (what
 * `postfix stop` does after 5 s); then (SIGKILL is not refused) a bounded wait for them to be gone, and an error naming
 * any survivor. Node has no pidfd for processes that are not its children (the master and its daemons are not), so
 * /proc is checked every 20 ms.
 */
async function endInstance(options: { layout: PostfixLayout; masters: number[]; known?: ProcessRef; child?: Pick<RunningInstance, 'child' | 'childGone'>; timeoutMs: number; log: (m: string) => void }): Promise<void> {
  const { layout, known, child, timeoutMs, log } = options;
  const masters = new Set<number>(options.masters);
  if (known && procStat(known.pid)?.start === known.start) masters.add(known.pid);
  const signalled = new Set<number>();
  const childAlive = () => child !== undefined && !child.childGone;
  const look = async (): Promise<number[]> => {
    const named = await masterPid(layout);
    if (named !== undefined) masters.add(named);
    for (const pid of masters) {
      if (signalled.has(pid)) continue;
      signalled.add(pid);
      signal(pid, 'SIGTERM');
    }
    const left = await instanceProcesses(layout, [...masters]);
    // postfix-script waits for its master; without one (a failed start, a stop before the master was up) it is ended.
    if (childAlive() && !left.some((pid) => masters.has(pid)) && !signalled.has(-1)) {
      signalled.add(-1);
      child!.child.kill('SIGTERM');
    }
    return childAlive() && child!.child.pid !== undefined ? [...left, child!.child.pid] : left;
  };
  const waitGone = async (until: number) => {
    let left = await look();
    while (left.length && Date.now() < until) {
      await sleep(20);
      left = await look();
    }
    return left;
  };
  let left = await waitGone(Date.now() + timeoutMs);
  if (!left.length) return;
  log(`Postfix (${layout.dir}) did not stop within ${timeoutMs} ms: SIGKILL to ${left.join(', ')}`);
  for (const master of masters) signal(-master, 'SIGKILL');
  for (const pid of left) signal(pid, 'SIGKILL');
  if (childAlive()) child!.child.kill('SIGKILL');
  left = await waitGone(Date.now() + 2000);
  if (left.length) throw new Error(`Postfix (${layout.dir}): processes ${left.join(', ')} are still there after SIGKILL`);
}

function signal(pid: number, name: NodeJS.Signals): void {
  try {
    process.kill(pid, name);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ESRCH') throw err;
  }
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** /proc/<pid>/stat: command name, state, process group and start time; undefined when there is no such process. */
function procStat(pid: number): { comm: string; state: string; pgrp: number; start: string } | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // pid (comm) state ppid pgrp …: comm may hold spaces and parentheses, so read after the last ')'.
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return { comm: stat.slice(stat.indexOf('(') + 1, stat.lastIndexOf(')')), state: fields[0]!, pgrp: Number(fields[2]), start: fields[19]! };
  } catch {
    return undefined;
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
  const stat = procStat(pid);
  if (!stat || stat.state === 'Z' || stat.state === 'X') return undefined;
  const denied = (err: NodeJS.ErrnoException) => (err.code === 'EACCES' ? DENIED : '');
  const exe = await fs.readlink(`/proc/${pid}/exe`).catch(denied);
  const cwd = await fs.readlink(`/proc/${pid}/cwd`).catch(denied);
  if (exe !== DENIED && cwd !== DENIED) return exe === POSTFIX_MASTER && cwd === layout.queueDirectory ? pid : undefined;
  // Without CAP_SYS_PTRACE (a docker container's root), the master's exe and cwd cannot be read (EACCES; its stat and
  // command line can): a process named master running Postfix's master binary is taken for it. A container has one
  // instance only; on the host the lab's root can read them, and the check above applies.
  const cmdline = await fs.readFile(`/proc/${pid}/cmdline`, 'utf8').catch(() => '');
  return stat.comm === 'master' && cmdline.split('\0')[0] === POSTFIX_MASTER ? pid : undefined;
}

const DENIED = '\0denied';

/** What the pid file says and what /proc says of the process it names: why masterPid did not take it. */
async function describeMasterPid(layout: PostfixLayout): Promise<string> {
  const why = (err: NodeJS.ErrnoException) => `(${err.code ?? err.message})`;
  const text = await fs.readFile(path.join(layout.queueDirectory, 'pid', 'master.pid'), 'utf8').catch(why);
  const pid = Number(text.trim());
  if (!Number.isInteger(pid) || pid <= 1) return `pid file: ${JSON.stringify(text)}`;
  return `pid file: ${pid}, exe ${await fs.readlink(`/proc/${pid}/exe`).catch(why)}, cwd ${await fs.readlink(`/proc/${pid}/cwd`).catch(why)}, state ${procStat(pid)?.state ?? 'gone'}`;
}

/**
 * The live processes of one instance: the masters' process groups (a master is a session leader; its daemons stay in
 * its group), the masters themselves, and any process whose working directory or executable is in its queue directory
 * (every Postfix daemon, and postfix-script, chdir there). Zombies do not count: they are gone, only not yet reaped.
 * A process that vanishes while it is looked at is gone; other failures to read /proc (below) are errors, never
 * "nothing left".
 */
export async function instanceProcesses(layout: PostfixLayout | string, masters: number | number[] = []): Promise<number[]> {
  const queue = typeof layout === 'string' ? postfixLayout(layout).queueDirectory : layout.queueDirectory;
  const groups = new Set(Array.isArray(masters) ? masters : [masters]);
  const inQueue = (link: string) => link === queue || link.startsWith(queue + path.sep);
  const out: number[] = [];
  for (const entry of await fs.readdir('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    const pid = Number(entry);
    const stat = procStat(pid);
    if (!stat || stat.state === 'Z' || stat.state === 'X') continue;
    if (groups.has(pid) || groups.has(stat.pgrp)) {
      out.push(pid);
      continue;
    }
    const cwd = await fs.readlink(`/proc/${entry}/cwd`).catch(vanished);
    const exe = cwd !== undefined && inQueue(cwd) ? '' : await fs.readlink(`/proc/${entry}/exe`).catch(vanished);
    if ((cwd !== undefined && inQueue(cwd)) || (exe && inQueue(exe))) out.push(pid);
  }
  return out;
}

/**
 * readlink of a /proc entry: a process that exited meanwhile (ENOENT, ESRCH), a kernel thread (no exe) and one this
 * process may not inspect (EACCES: init of the machine, say; a Postfix of the node is inspectable, being root's or
 * run by root) are none.
 */
function vanished(err: NodeJS.ErrnoException): undefined {
  if (err.code === 'ENOENT' || err.code === 'ESRCH' || err.code === 'EACCES') return undefined;
  throw err;
}

interface Tail {
  onLine(listener: (line: string) => void): void;
  close(): void;
}

/**
 * Follows a log file as it grows, from its size now (a restarted node's old lines are not events again): woken by
 * inotify on its directory (the file may not exist yet), reads what was appended, hands on whole lines. A listener that
 * throws, or a failed read, is reported to `onError` and the tail goes on: an error here must not end the node's
 * process (which would leave its Postfix running without it).
 */
async function tailFile(file: string, dir: string, onError: (message: string) => void): Promise<Tail> {
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
          for (const line of lines) {
            if (!line) continue;
            try {
              listener(line);
            } catch (err) {
              onError(`${(err as Error).stack ?? String(err)} (on the line ${JSON.stringify(line)})`);
            }
          }
        }
      } finally {
        await handle.close();
      }
    }).catch((err: Error) => onError(`reading failed: ${err.message}`)));
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
