// Who owns a lab: the harness process that started it (pid, the process's start time, the host). Every resource
// a runtime creates carries its owner (docker: labels; local: owner.json in the data root), so a later lab start
// can tell a lab whose harness is gone (killed: SIGKILL, a cancelled CI job) from one still running (another
// vitest worker) and remove it. This is what testcontainers' Ryuk does, without an image.
import { readFileSync } from 'node:fs';
import os from 'node:os';

export interface LabOwner {
  pid: number;
  /**
   * When the process started, as the kernel says (/proc/<pid>/stat field 22, clock ticks since boot), so that
   * a pid reused by a later process is not taken for the owner. Empty where there is no /proc.
   */
  start: string;
  /** os.hostname(): a lab of another host (a shared engine) is never judged from here. */
  host: string;
}

/** Fields of /proc/<pid>/stat (undefined when it cannot be read: no such process, or no /proc). */
function procStat(pid: number): { state: string; start: string } | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // Field 2 (the command) is in parentheses and may hold spaces or parentheses: count from the last ')'.
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return { state: fields[3 - 3]!, start: fields[22 - 3]! };
  } catch {
    return undefined;
  }
}

/** The start time of a process (/proc/<pid>/stat field 22), or undefined when it cannot be read. */
export function processStartTime(pid: number): string | undefined {
  return procStat(pid)?.start;
}

/** This process, as the owner of the labs it starts. */
export function currentOwner(): LabOwner {
  return { pid: process.pid, start: processStartTime(process.pid) ?? '', host: os.hostname() };
}

export type OwnerState =
  /** The owner runs: its lab is in use. */
  | { state: 'alive' }
  /** Another host's lab (or an owner this process cannot judge): left alone. */
  | { state: 'unknown'; why: string }
  /** The owner is gone: the lab is left over. */
  | { state: 'gone'; why: string };

/** Whether a lab's owner still runs. Only a lab of this host whose owner is certainly gone is `gone`. */
export function ownerState(owner: Partial<LabOwner> | undefined): OwnerState {
  const pid = Number(owner?.pid);
  if (!owner || !Number.isInteger(pid) || pid <= 0) return { state: 'unknown', why: 'no owner recorded' };
  if (owner.host !== os.hostname()) return { state: 'unknown', why: `owned by a process of host ${owner.host ?? '?'}` };
  if (!isRunning(pid)) return { state: 'gone', why: `process ${pid} is gone` };
  if (!stillRunning({ pid, start: owner.start ?? '' })) return { state: 'gone', why: `process ${pid} is gone (the pid now belongs to a process started later)` };
  return { state: 'alive' };
}

/** Whether a process runs (one of another user counts: it exists; a zombie does not: it has died). */
export function isRunning(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
  const state = procStat(pid)?.state;
  return state !== 'Z' && state !== 'X';
}

/** A process, identified by its pid and its start time, so that a reused pid does not count. */
export interface ProcessId {
  pid: number;
  start: string;
}

/** Whether the process `id` names still runs (the same process, not a later one with its pid). */
export function stillRunning(id: ProcessId): boolean {
  if (!isRunning(id.pid)) return false;
  const start = procStat(id.pid)?.start;
  return !id.start || start === undefined || start === id.start;
}

/** The line that records a reaped lab (stderr). */
export function reapedLine(labId: string, why: string, what: string): string {
  return `maillab: reaped lab ${labId}: its owner ${why}; removed ${what}`;
}
