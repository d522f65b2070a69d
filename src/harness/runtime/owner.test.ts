// Who owns a lab, and which labs a lab start may remove: only this host's, whose owner is certainly gone.
import { spawn } from 'node:child_process';
import { promises as fs } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { OWNER_FILE, reapLocalLabs } from './local.js';
import { currentOwner, isRunning, ownerState, processStartTime, type LabOwner } from './owner.js';

/** The pid of a process that has exited (and been waited for). */
async function deadPid(): Promise<number> {
  const child = spawn(process.execPath, ['-e', ''], { stdio: 'ignore' });
  await new Promise((resolve) => child.once('exit', resolve));
  return child.pid!;
}

const dirs: string[] = [];
afterEach(async () => {
  for (const dir of dirs.splice(0)) await fs.rm(dir, { recursive: true, force: true });
});

/** A temporary folder standing for os.tmpdir(), holding one lab data root per owner. */
async function tmpWithLabs(labs: Record<string, LabOwner | undefined>): Promise<string> {
  const tmp = await fs.mkdtemp(path.join(os.tmpdir(), 'owner-test-'));
  dirs.push(tmp);
  for (const [labId, owner] of Object.entries(labs)) {
    const root = path.join(tmp, `maillab-${labId}-abcdef`);
    await fs.mkdir(path.join(root, 'mta'), { recursive: true });
    await fs.writeFile(path.join(root, 'mta', 'queued'), 'a message');
    if (owner) await fs.writeFile(path.join(root, OWNER_FILE), JSON.stringify({ labId, owner }));
  }
  return tmp;
}

describe('lab owners', () => {
  it('this process: pid, its start time from /proc, the host name', () => {
    const owner = currentOwner();
    expect(owner.pid).toBe(process.pid);
    expect(owner.host).toBe(os.hostname());
    if (process.platform === 'linux') expect(owner.start).toMatch(/^\d+$/);
    expect(ownerState(owner)).toEqual({ state: 'alive' });
  });

  it('an exited owner is gone; a pid now used by a later process is gone too', async () => {
    const pid = await deadPid();
    expect(isRunning(pid)).toBe(false);
    expect(ownerState({ pid, start: '1', host: os.hostname() })).toEqual({ state: 'gone', why: `process ${pid} is gone` });
    if (process.platform === 'linux') {
      // This process's pid with another start time: a recycled pid, not the owner.
      const recycled = { pid: process.pid, start: String(Number(processStartTime(process.pid)) - 1), host: os.hostname() };
      expect(ownerState(recycled)).toEqual({ state: 'gone', why: `process ${process.pid} is gone (the pid now belongs to a process started later)` });
    }
  });

  it('another host\'s lab, or one without an owner, is never judged from here', async () => {
    const pid = await deadPid();
    expect(ownerState({ pid, start: '1', host: `not-${os.hostname()}` })).toMatchObject({ state: 'unknown' });
    expect(ownerState(undefined)).toMatchObject({ state: 'unknown' });
    expect(ownerState({ host: os.hostname() })).toMatchObject({ state: 'unknown' });
  });
});

describe('reapLocalLabs', () => {
  it('removes the data roots of dead owners only, and says so', async () => {
    const dead = await deadPid();
    const tmp = await tmpWithLabs({
      dead: { pid: dead, start: '1', host: os.hostname() },
      alive: currentOwner(),
      elsewhere: { pid: dead, start: '1', host: `not-${os.hostname()}` },
      kept: undefined, // MAILLAB_KEEP=1: owner.json removed on purpose
    });
    const lines: string[] = [];
    expect(await reapLocalLabs(tmp, (l) => lines.push(l))).toEqual(['dead']);
    expect((await fs.readdir(tmp)).sort()).toEqual(['maillab-alive-abcdef', 'maillab-elsewhere-abcdef', 'maillab-kept-abcdef']);
    expect(lines).toEqual([`maillab: reaped lab dead: its owner process ${dead} is gone; removed ${path.join(tmp, 'maillab-dead-abcdef')}`]);
  });

  it('kills a node of a dead owner that is still running before removing its data', async () => {
    const dead = await deadPid();
    const tmp = await tmpWithLabs({ stray: { pid: dead, start: '1', host: os.hostname() } });
    const node = spawn(process.execPath, ['-e', 'setInterval(() => {}, 1000)'], { stdio: 'ignore' });
    const exited = new Promise((resolve) => node.once('exit', (_code, signal) => resolve(signal)));
    const id = { pid: node.pid!, start: processStartTime(node.pid!) ?? '' };
    await fs.writeFile(path.join(tmp, 'maillab-stray-abcdef', 'mta.process.json'), JSON.stringify(id));
    const lines: string[] = [];
    try {
      expect(await reapLocalLabs(tmp, (l) => lines.push(l))).toEqual(['stray']);
      expect(await exited).toBe('SIGKILL');
      expect(lines[0]).toMatch(/and killed 1 node process\(es\) still running$/);
      expect(await fs.readdir(tmp)).toEqual([]);
    } finally {
      node.kill('SIGKILL');
    }
  });

  it('leaves a node process alone whose pid now belongs to another process', async () => {
    const dead = await deadPid();
    const tmp = await tmpWithLabs({ recycled: { pid: dead, start: '1', host: os.hostname() } });
    // The recorded node's pid is now another process's (another start time): not the node, so not killed.
    const other = spawn(process.execPath, ['-e', 'setInterval(() => {}, 1000)'], { stdio: 'ignore' });
    try {
      await fs.writeFile(path.join(tmp, 'maillab-recycled-abcdef', 'mta.process.json'), JSON.stringify({ pid: other.pid, start: '1' }));
      expect(await reapLocalLabs(tmp, () => undefined)).toEqual(['recycled']);
      expect(isRunning(other.pid!)).toBe(true);
    } finally {
      other.kill('SIGKILL');
    }
  });
});
