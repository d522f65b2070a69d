// A killed run leaves nothing behind. A harness (`maillab up`, a child process here) starts a lab, a message goes
// through it, and the harness is SIGKILLed mid-run, as a cancelled CI job is: nothing of it can clean up. The next
// lab that starts, on the same runtime, removes what the dead harness left (its owner labels / owner.json say
// whose it was): the docker containers, network and volumes, or the local data directory, whose nodes have
// already left by themselves (the stdin lifeline). Runs on the runtime of this run (MAILLAB_RUNTIME).
import { spawn, type ChildProcess } from 'node:child_process';
import { promises as fs } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { createInterface } from 'node:readline';
import { describe, expect, it } from 'vitest';
import { Lab, resolveRuntime, runtimeFromEnvironment, type RuntimeKind } from '../src/harness/index.js';
import { submit } from '../src/harness/clients/submission.js';
import { isRunning } from '../src/harness/runtime/owner.js';
import { packageRoot } from '../src/harness/runtime/types.js';
import type { Endpoint } from '../src/shared/config.js';
import { ControlClient } from '../src/shared/control.js';
import { defaultLab } from './support/lab.js';

const runtime = await resolveRuntime(runtimeFromEnvironment());
const skipped = (kind: RuntimeKind) => runtime.kind !== kind;
for (const kind of ['local', 'docker'] as const) {
  if (skipped(kind)) console.warn(`[16-killed-run] the ${kind} variant is skipped: this run uses the ${runtime.kind} runtime (${runtime.reason ?? 'MAILLAB_RUNTIME'}); MAILLAB_RUNTIME=${kind} runs it`);
}

interface UpDescription {
  id: string;
  runtime: RuntimeKind;
  nodes: Record<string, { host: string; services: Record<string, Endpoint>; control: Endpoint }>;
  controlToken: string;
  /** The lab CA's certificate (a PEM file on the host). */
  ca: string;
}

/** `maillab up --runtime <kind> --json` in a child process, once it printed that the lab is up. */
async function harnessUp(kind: RuntimeKind): Promise<{ child: ChildProcess; lab: UpDescription; stderr: () => string }> {
  const child = spawn(process.execPath, [path.join(packageRoot(), 'bin', 'maillab.mjs'), 'up', '--runtime', kind, '--json'], { stdio: ['ignore', 'pipe', 'pipe'] });
  let stderr = '';
  child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
  const line = await new Promise<string>((resolve, reject) => {
    const timer = setTimeout(() => (child.kill('SIGKILL'), reject(new Error(`maillab up printed nothing within 90 s\n${stderr}`))), 90_000);
    createInterface({ input: child.stdout! }).once('line', (l) => (clearTimeout(timer), resolve(l)));
    child.once('exit', (code, signal) => (clearTimeout(timer), reject(new Error(`maillab up exited (${signal ?? code}) before the lab was up\n${stderr}`))));
  });
  return { child, lab: JSON.parse(line) as UpDescription, stderr: () => stderr };
}

function killed(child: ChildProcess): Promise<void> {
  return new Promise((resolve) => {
    if (child.exitCode !== null || child.signalCode !== null) return resolve();
    child.once('exit', () => resolve());
    child.kill('SIGKILL');
  });
}

/** Polls `done` until it holds; fails, saying what, when it does not within `timeoutMs`. */
async function until(what: string, done: () => boolean | Promise<boolean>, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await done())) {
    if (Date.now() > deadline) throw new Error(`not within ${timeoutMs} ms: ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 25));
  }
}

/** Mid-run: a message from alice to bob, stored in bob's mailbox (seen on the mailbox server's event stream). */
async function sendThrough(lab: UpDescription): Promise<void> {
  const mailbox = new ControlClient(lab.nodes.mailbox!.control, 'mailbox', lab.controlToken);
  try {
    const stored = new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error('the message was not stored within 20 s')), 20_000);
      const stop = mailbox.streamEvents(
        0,
        (e) => {
          if (e.kind === 'stored' && e.messageId === '<killed-run@sender.test>') {
            clearTimeout(timer);
            stop();
            resolve();
          }
        },
        () => undefined,
      );
    });
    const mta = { node: 'mta', hostname: 'mta.sender.test', endpoint: lab.nodes.mta!.services.submission!, ca: await fs.readFile(lab.ca, 'utf8') };
    await submit(mta, { address: 'alice@sender.test', password: 'alice-secret' }, { to: 'bob@receiver.test', subject: 'before the kill', text: 'in flight', messageId: '<killed-run@sender.test>' });
    await stored;
  } finally {
    mailbox.close();
  }
}

/** The pids of the lab's node processes, as their control channels say (with the printed token). */
async function nodePids(lab: UpDescription): Promise<number[]> {
  return Promise.all(
    Object.entries(lab.nodes).map(async ([name, node]) => {
      const control = new ControlClient(node.control, name, lab.controlToken);
      try {
        return (await control.health()).pid;
      } finally {
        control.close();
      }
    }),
  );
}

async function dataRootsOf(labId: string): Promise<string[]> {
  return (await fs.readdir(os.tmpdir())).filter((name) => name.startsWith(`maillab-${labId}-`)).map((name) => path.join(os.tmpdir(), name));
}

describe('a killed harness leaves nothing behind', () => {
  it.skipIf(skipped('local'))('local: its nodes exit, and the next lab removes its data directory', { timeout: 120_000 }, async () => {
    const up = await harnessUp('local');
    let next: Awaited<ReturnType<Lab['start']>> | undefined;
    try {
      expect(up.lab.runtime).toBe('local');
      const pids = await nodePids(up.lab);
      await sendThrough(up.lab);
      const [dataRoot, ...more] = await dataRootsOf(up.lab.id);
      expect(more).toEqual([]);
      expect(dataRoot, `no data directory maillab-${up.lab.id}-* in ${os.tmpdir()}`).toBeDefined();
      expect(await fs.readdir(dataRoot!)).toEqual(expect.arrayContaining(['owner.json', 'mailbox', 'mta']));

      await killed(up.child);
      // The nodes leave by themselves: their end of the harness's stdin closed.
      await until(`the nodes ${pids.join(', ')} of the killed harness exit`, () => pids.every((pid) => !isRunning(pid)), 10_000);
      // Its data directory stays until a lab starts (here or in a parallel worker: either may remove it).
      next = await new Lab(defaultLab).withRuntime('local').start();
      expect(await dataRootsOf(up.lab.id), `${up.lab.id}'s data directory after the next lab started`).toEqual([]);
      expect(await next.node('mailbox').health()).toMatchObject({ name: 'mailbox' });
    } finally {
      await killed(up.child);
      await next?.stop();
      for (const dir of await dataRootsOf(up.lab.id)) await fs.rm(dir, { recursive: true, force: true });
    }
  });

  it.skipIf(skipped('docker'))('docker: the next lab removes its containers, network and volumes', { timeout: 240_000 }, async () => {
    const { getContainerRuntimeClient } = await import('testcontainers');
    const docker = (await getContainerRuntimeClient()).container.dockerode;
    const up = await harnessUp('docker');
    const filters = JSON.stringify({ label: [`maillab.lab=${up.lab.id}`] });
    const resources = async () => ({
      containers: (await docker.listContainers({ all: true, filters })).length,
      networks: (await docker.listNetworks({ filters })).length,
      volumes: ((await docker.listVolumes({ filters })).Volumes ?? []).length,
    });
    let next: Awaited<ReturnType<Lab['start']>> | undefined;
    try {
      expect(up.lab.runtime).toBe('docker');
      await sendThrough(up.lab);
      const [container] = await docker.listContainers({ all: true, filters });
      expect(container?.Labels).toMatchObject({ 'maillab.owner.pid': String(up.child.pid), 'maillab.owner.host': os.hostname() });
      expect(container?.Labels['maillab.owner.start']).toMatch(/^\d+$/);

      expect(await resources()).toEqual({ containers: 4, networks: 1, volumes: 4 });
      await killed(up.child);
      // Nothing of the killed harness could clean up: its containers run on until a lab starts (here or in a
      // parallel worker: either may remove them).
      next = await new Lab(defaultLab).withRuntime('docker').start();
      expect(await resources(), `what is left of ${up.lab.id} after the next lab started`).toEqual({ containers: 0, networks: 0, volumes: 0 });
      expect(await next.node('mailbox').health()).toMatchObject({ name: 'mailbox' });
    } finally {
      await killed(up.child);
      await next?.stop();
      // Whatever the outcome, nothing of this test may stay (.ci/run checks label maillab=1).
      const { removeLab } = await import('../src/harness/runtime/docker.js');
      await removeLab(up.lab.id);
    }
  });
});
