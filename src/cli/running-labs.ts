// Discovery of the labs `maillab up` keeps running, for the commands that poke at them from another process
// (`send`, `queue`, `tail`): `up` writes one state file per lab into a folder of the user's temp directory, readable by
// the user only (it holds the control token and the users' passwords), and removes it when the lab stops.
import { mkdirSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { Endpoint, Role } from '../shared/config.js';
import type { StartedLab } from '../harness/lab.js';

/** What `up` records of a running lab: `describe()` (the `up --json` line), and what a client outside needs besides. */
export type RunningLab = ReturnType<StartedLab['describe']> & {
  /** The lab definition's name. */
  name: string;
  /** The `maillab up` process; a state file whose process is gone is stale. */
  pid: number;
  /** When the lab was ready (ms since the epoch). */
  started: number;
  /** Each node's role and host name (the name its certificate is issued to), and whether it offers TLS. */
  hosts: Record<string, { role: Role; hostname: string; tls: boolean }>;
  /** This file. */
  stateFile: string;
};

/** The folder of the state files, one per user; MAILLAB_STATE_DIR moves it (tests keep their labs apart with it). */
export function runningLabsDir(): string {
  return process.env.MAILLAB_STATE_DIR ?? path.join(os.tmpdir(), `maillab-${process.getuid?.() ?? os.userInfo().username}`, 'running');
}

/** Writes the lab's state file (mode 0600 in a 0700 folder); returns its path. */
export function recordRunningLab(lab: StartedLab, name: string): string {
  const dir = runningLabsDir();
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  // The file holds secrets: never in a folder someone else made (and could read or swap files in).
  const owner = statSync(dir).uid;
  if (process.getuid && owner !== process.getuid()) throw new Error(`${dir} belongs to another user (uid ${owner}): set MAILLAB_STATE_DIR to a folder of yours`);
  const stateFile = path.join(dir, `${lab.id}.json`);
  const hosts = Object.fromEntries(lab.nodes().map((n) => [n.name, { role: n.role, hostname: n.config.hostname, tls: n.config.tls !== undefined }]));
  const state: RunningLab = { ...lab.describe(), name, pid: process.pid, started: Date.now(), hosts, stateFile };
  writeFileSync(stateFile, JSON.stringify(state, null, 2) + '\n', { mode: 0o600 });
  return stateFile;
}

export function forgetRunningLab(stateFile: string): void {
  rmSync(stateFile, { force: true });
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    // EPERM: a process of another user has the id, so it is alive (and not ours to judge).
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** The labs whose `up` process is alive; the state files of dead ones (an `up` killed by SIGKILL) are removed. */
export function runningLabs(): RunningLab[] {
  const dir = runningLabsDir();
  let files: string[];
  try {
    files = readdirSync(dir).filter((f) => f.endsWith('.json'));
  } catch {
    return [];
  }
  const labs: RunningLab[] = [];
  for (const file of files) {
    const full = path.join(dir, file);
    let state: RunningLab;
    try {
      state = JSON.parse(readFileSync(full, 'utf8')) as RunningLab;
    } catch {
      continue; // being written, or not ours
    }
    if (alive(state.pid)) labs.push(state);
    else forgetRunningLab(full);
  }
  return labs.sort((a, b) => a.started - b.started);
}

/** The lab a command works on: `--lab <id>`, or the only running one; the error says which exist. */
export function pickRunningLab(id: string | undefined): RunningLab {
  const labs = runningLabs();
  const list = labs.map((l) => `${l.id} (pid ${l.pid})`).join(', ');
  if (id !== undefined) {
    const lab = labs.find((l) => l.id === id || l.name === id);
    if (!lab) throw new Error(`no running lab ${id}${labs.length ? `; running: ${list}` : ` (none is running: start one with \`maillab up\`)`}`);
    return lab;
  }
  if (labs.length === 0) throw new Error(`no lab is running (start one with \`maillab up\` in another terminal; state files live in ${runningLabsDir()})`);
  if (labs.length > 1) throw new Error(`${labs.length} labs are running (${list}): choose one with --lab <id>`);
  return labs[0]!;
}

/** The node of `role` a command talks to: `name` if given (checked), else the first of that role. */
export function nodeOfRole(lab: RunningLab, role: Role, name?: string): { name: string; hostname: string; tls: boolean; services: Record<string, Endpoint>; control: Endpoint } {
  const names = Object.entries(lab.hosts).filter(([, h]) => h.role === role).map(([n]) => n);
  const chosen = name ?? names[0];
  if (chosen === undefined || !names.includes(chosen)) {
    throw new Error(`lab ${lab.id} has no ${role} node${name ? ` ${name}` : ''}${names.length ? ` (its ${role} nodes: ${names.join(', ')})` : ''}`);
  }
  const node = lab.nodes[chosen];
  if (!node?.control) throw new Error(`node ${chosen} of lab ${lab.id} is not running`);
  return { name: chosen, ...lab.hosts[chosen]!, services: node.services, control: node.control };
}
