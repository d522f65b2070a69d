// Poking at a running lab from other processes, as a user does with swaks and postqueue: `maillab up` writes a state
// file; `maillab send` submits through the lab's MTA, `maillab queue` lists, flushes, holds, releases and deletes,
// `maillab tail` shows the live event stream; the state file goes with the lab. Every command is the real CLI, run as
// a child process against a real lab.
import { spawn, type ChildProcess } from 'node:child_process';
import { promises as fs } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { createInterface } from 'node:readline';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import defaultLab from '../../lab/default.js';
import type { LabDefinition } from '../harness/topology.js';
import type { RunningLab } from './running-labs.js';
import { bin, runCli } from './cli.test-helper.js';

const WAIT_MS = 15_000;

let dir: string;
/** The state folder of this file's labs only (MAILLAB_STATE_DIR), so labs of other test files are not in the way. */
let stateDir: string;
let up: ChildProcess;
let lab: { id: string; controlToken: string };
const tails: ChildProcess[] = [];

const env = () => ({ ...process.env, MAILLAB_STATE_DIR: stateDir, NO_COLOR: '1', FORCE_COLOR: undefined });

/** Runs one CLI command to its end. */
const cli = (args: string[]) => runCli(args, { env: env() });

/** A `maillab tail` running in the background; `line` waits for a line matching a pattern (seen before or later). */
function startTail(args: string[], extraEnv: Record<string, string> = {}) {
  const child = spawn(process.execPath, [bin, 'tail', ...args], { stdio: ['ignore', 'pipe', 'pipe'], env: { ...env(), ...extraEnv } });
  tails.push(child);
  const lines: string[] = [];
  let stderr = '';
  const waiters = new Set<() => void>();
  child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
  createInterface({ input: child.stdout! }).on('line', (l) => {
    lines.push(l);
    for (const w of waiters) w();
  });
  const exited = new Promise<number | null>((resolve) => child.once('close', (c) => resolve(c)));
  return {
    child,
    lines,
    exited,
    stderr: () => stderr,
    line(pattern: RegExp): Promise<string> {
      return new Promise((resolve, reject) => {
        const check = () => {
          const found = lines.find((l) => pattern.test(l));
          if (!found) return false;
          waiters.delete(check);
          clearTimeout(timer);
          resolve(found);
          return true;
        };
        const timer = setTimeout(() => {
          waiters.delete(check);
          reject(new Error(`maillab tail printed no line matching ${pattern} within ${WAIT_MS} ms; it printed:\n${lines.join('\n')}\n${stderr}`));
        }, WAIT_MS);
        if (!check()) waiters.add(check);
      });
    },
  };
}

/** The default lab, with retries ten minutes apart (a deferred message waits for `queue flush`) and an MX that says
 * 451 to carol once and to dave every time. Plain data: the file lives in a temp folder, where `maillab` is not installed. */
function pokeLab(): LabDefinition {
  const definition = structuredClone(defaultLab);
  definition.name = 'poke';
  definition.retry = { schedule: [600_000], maxLifetimeMs: 3_600_000 };
  const busy = { kind: 'reply' as const, code: 451, enhancedCode: '4.3.0', text: 'try again later' };
  definition.faults = {
    smtp: {
      mx: [
        { id: 'carol-once', stage: 'rcpt', match: { recipient: 'carol@receiver.test' }, times: 1, action: busy },
        { id: 'dave-always', stage: 'rcpt', match: { recipient: 'dave@receiver.test' }, action: busy },
      ],
    },
  };
  return definition;
}

beforeAll(async () => {
  dir = await fs.mkdtemp(path.join(os.tmpdir(), 'maillab-poke-'));
  stateDir = path.join(dir, 'running');
  const labFile = path.join(dir, 'poke.mjs');
  await fs.writeFile(labFile, `export default ${JSON.stringify(pokeLab())};\n`);
  up = spawn(process.execPath, [bin, 'up', '--json', '--runtime', 'local', '--lab', labFile], { stdio: ['ignore', 'pipe', 'pipe'], env: env() });
  let stderr = '';
  up.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
  lab = await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`maillab up printed nothing within 30 s\n${stderr}`)), 30_000);
    createInterface({ input: up.stdout! }).once('line', (line) => {
      clearTimeout(timer);
      resolve(JSON.parse(line) as { id: string; controlToken: string });
    });
    up.once('exit', (code) => reject(new Error(`maillab up exited with ${code}\n${stderr}`)));
  });
}, 60_000);

afterAll(async () => {
  for (const t of tails) if (t.exitCode === null) t.kill('SIGTERM');
  if (up && up.exitCode === null) {
    up.kill('SIGTERM');
    await new Promise((resolve) => up.once('exit', resolve));
  }
  await fs.rm(dir, { recursive: true, force: true });
}, 60_000);

describe('maillab up, send, queue, tail', () => {
  let tail: ReturnType<typeof startTail>;

  it('up writes a state file, for the user only, with what a client needs', async () => {
    const file = path.join(stateDir, `${lab.id}.json`);
    expect((await fs.stat(file)).mode & 0o777).toBe(0o600);
    expect((await fs.stat(stateDir)).mode & 0o777).toBe(0o700);
    const state = JSON.parse(await fs.readFile(file, 'utf8')) as RunningLab;
    expect(state).toMatchObject({ id: lab.id, name: 'poke', pid: up.pid, controlToken: lab.controlToken, stateFile: file });
    expect(state.hosts.mta).toEqual({ role: 'mta', hostname: 'mta.sender.test', tls: true });
    expect(state.users.map((u) => u.address)).toContain('alice@sender.test');
  });

  it('tail --all replays each node from its start and then follows it live', async () => {
    tail = startTail(['--all']);
    // Every node's first event: then every stream is connected, and what follows is live.
    for (const node of ['dns', 'mta', 'mx', 'mailbox']) await tail.line(new RegExp(`^\\S+ ${node} +node-ready `));
    expect(tail.stderr()).toContain(`tailing lab ${lab.id}`);
  });

  it('send submits as a lab user, with an attachment, and prints the Message-ID and queue id', async () => {
    const attachment = path.join(dir, 'report.txt');
    await fs.writeFile(attachment, 'quarterly numbers\n');
    const { code, stdout, stderr } = await cli(['send', '--from', 'alice@sender.test', '--to', 'bob@receiver.test', '--subject', 'from the CLI', '--attach', attachment]);
    expect(code, stderr).toBe(0);
    const messageId = /^Message-ID: (<[^>]+@sender\.test>)$/m.exec(stdout)?.[1];
    const queueId = /^queue id: +([0-9A-F]+)$/m.exec(stdout)?.[1];
    expect(messageId, stdout).toBeDefined();
    expect(queueId, stdout).toBeDefined();

    // tail shows the message's hops as they happen, with the ids send printed.
    const escaped = messageId!.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
    await tail.line(new RegExp(`^\\S+ mta +submitted +qid=${queueId} msg=${escaped} `));
    const stored = await tail.line(new RegExp(`^\\S+ mailbox +stored .*msg=${escaped} .*"user":"bob@receiver.test"`));
    await tail.line(new RegExp(`^\\S+ mta +relayed +qid=${queueId} `));
    expect(stored).toMatch(/^\d\d:\d\d:\d\d\.\d{3} /);

    // Filtered by message (whose story is told from its start) and kind: that message's `stored` and nothing else.
    const filtered = startTail(['--message', messageId!.slice(1, -1), '--kind', 'stored']);
    await filtered.line(/ stored /);
    filtered.child.kill('SIGINT');
    expect(await filtered.exited).toBe(0);
    expect(filtered.lines).toHaveLength(1);
    expect(filtered.lines[0]).toContain(`msg=${messageId}`);

    // The queue keeps finished messages only for `--all`.
    const list = await cli(['queue', 'list']);
    expect(list.stdout).toBe(`the queue of mta (lab ${lab.id}) is empty\n`);
    const all = await cli(['queue', 'list', '--all', '--json']);
    const done = (JSON.parse(all.stdout) as { queueId: string; state: string }[]).find((e) => e.queueId === queueId);
    expect(done?.state).toBe('done');
  });

  it('queue lists a deferred message with its reply, and flush delivers it', async () => {
    const sent = await cli(['send', '--from', 'alice@sender.test', '--to', 'carol@receiver.test']);
    expect(sent.code, sent.stderr).toBe(0);
    const queueId = /^queue id: +(\S+)$/m.exec(sent.stdout)![1]!;
    await tail.line(new RegExp(`^\\S+ mta +deferred +qid=${queueId} `));

    const { code, stdout } = await cli(['queue']);
    expect(code).toBe(0);
    expect(stdout).toMatch(new RegExp(`^${queueId}  deferred .* alice@sender\\.test  <`, 'm'));
    expect(stdout).toMatch(/^ {4}→ carol@receiver\.test {2}deferred, 1 attempt\(s\), next attempt in \d+ s: .*451 4\.3\.0 try again later/m);
    expect(stdout).toMatch(/^1 message\(s\) in the queue of mta/m);

    const flush = await cli(['queue', 'flush']);
    expect(flush.stdout).toBe('flushed 1 message(s): mta tries them now\n');
    await tail.line(new RegExp(`^\\S+ mta +relayed +qid=${queueId} .*"rcpt":"carol@receiver\\.test"`));
  });

  it('queue hold, release and delete act on one message (or say clearly that the MTA cannot)', async () => {
    const sent = await cli(['send', '--from', 'alice@sender.test', '--to', 'dave@receiver.test']);
    const queueId = /^queue id: +(\S+)$/m.exec(sent.stdout)![1]!;
    await tail.line(new RegExp(`^\\S+ mta +deferred +qid=${queueId} `));
    const entry = async () => (JSON.parse((await cli(['queue', 'list', '--json'])).stdout) as { queueId: string; state: string }[]).find((e) => e.queueId === queueId);

    const hold = await cli(['queue', 'hold', queueId]);
    if (hold.code !== 0 && /has no "hold" operation/.test(hold.stderr)) {
      // An MTA without the operations: the error names the MTA, the lab and what it can do.
      expect(hold.code).toBe(1);
      expect(hold.stderr).toMatch(new RegExp(`the MTA mta of lab ${lab.id} has no "hold" operation \\(its operations: queue, flush, .*\\): this MTA cannot hold a message`));
      console.log('queue hold/release/delete: checked the error only; this MTA has no hold, release or delete operation yet');
      return;
    }
    expect(hold.code, hold.stderr).toBe(0);
    expect(hold.stdout).toMatch(new RegExp(`^held ${queueId}\\n${queueId}  hold  `));
    expect(await entry()).toMatchObject({ state: 'hold' });
    // Held: a flush does not try it (the flush counts the messages it sets going).
    expect((await cli(['queue', 'flush'])).stdout).toBe('flushed 0 message(s): mta tries them now\n');

    const release = await cli(['queue', 'release', queueId]);
    expect(release.code, release.stderr).toBe(0);
    expect(release.stdout).toMatch(new RegExp(`^released ${queueId}\\n`));
    // Released, it is tried at once: the MX says 451 to dave again.
    await tail.line(new RegExp(`^\\S+ mta +deferred +qid=${queueId} .*"attempt":2`));

    const del = await cli(['queue', 'delete', queueId]);
    expect(del.code, del.stderr).toBe(0);
    expect(del.stdout).toBe(`deleted ${queueId}\n`);
    expect(await entry()).toBeUndefined();
  });

  it('explains what is wrong: an unknown sender, a missing queue id, an unknown lab, an unknown node', async () => {
    const stranger = await cli(['send', '--from', 'mallory@sender.test', '--to', 'bob@receiver.test']);
    expect(stranger.code).toBe(1);
    expect(stranger.stderr).toContain(`mallory@sender.test is not a user of lab ${lab.id} (its users: alice@sender.test, bob@receiver.test`);
    const usage = await cli(['send', '--to', 'bob@receiver.test']);
    expect(usage.code).toBe(2);
    expect(usage.stderr).toMatch(/^usage: maillab send --from <addr> --to <addr>/);
    const noId = await cli(['queue', 'delete']);
    expect(noId.code).toBe(2);
    expect(noId.stderr).toMatch(/^maillab queue delete: which message\? give its queue id/);
    const otherLab = await cli(['queue', '--lab', 'nope-000000']);
    expect(otherLab.code).toBe(1);
    expect(otherLab.stderr).toBe(`maillab: no running lab nope-000000; running: ${lab.id} (pid ${up.pid})\n`);
    const node = await cli(['tail', '--node', 'mx9']);
    expect(node.code).toBe(1);
    expect(node.stderr).toContain(`lab ${lab.id} has no node mx9 (its nodes: dns, mailbox, mx, mta)`);
  });

  it('tail colours its lines when asked (FORCE_COLOR) and not otherwise', async () => {
    const coloured = startTail(['--all', '--node', 'mailbox', '--kind', 'stored'], { FORCE_COLOR: '1', NO_COLOR: '' });
    const line = await coloured.line(/stored/);
    coloured.child.kill('SIGINT');
    await coloured.exited;
    expect(line).toMatch(/^\x1b\[2m\d\d:\d\d:\d\d\.\d{3}\x1b\[0m \x1b\[36mmailbox \x1b\[0m \x1b\[32mstored {8}\x1b\[0m /);
    expect(tail.lines.join('\n')).not.toContain('\x1b[');
  });

  it('when the lab stops, its state file goes and tail ends', async () => {
    up.kill('SIGTERM');
    expect(await new Promise((resolve) => up.once('exit', resolve))).toBe(0);
    await expect(fs.stat(path.join(stateDir, `${lab.id}.json`))).rejects.toThrow(/ENOENT/);
    expect(await tail.exited).toBe(0);
    expect(tail.stderr()).toContain(`lab ${lab.id} stopped`);
    const none = await cli(['queue']);
    expect(none.code).toBe(1);
    expect(none.stderr).toMatch(/^maillab: no lab is running \(start one with `maillab up`/);
  });
});

describe('maillab up without --json', () => {
  it('prints a short summary: every node with its services and control address, the users, the CA, the state file', async () => {
    const child = spawn(process.execPath, [bin, 'up', '--runtime', 'local'], { stdio: ['ignore', 'pipe', 'pipe'], env: env() });
    const lines: string[] = [];
    let stderr = '';
    child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
    try {
      await new Promise<void>((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`maillab up printed no "Ctrl-C stops the lab." within 30 s:\n${lines.join('\n')}\n${stderr}`)), 30_000);
        createInterface({ input: child.stdout! }).on('line', (line) => {
          lines.push(line);
          if (line === 'Ctrl-C stops the lab.') {
            clearTimeout(timer);
            resolve();
          }
        });
      });
      const id = /^lab default \((default-[0-9a-f]{6})\) ready in \d+ ms on the local runtime$/.exec(lines[0]!)?.[1];
      expect(id, lines.join('\n')).toBeDefined();
      for (const node of ['dns', 'mailbox', 'mx', 'mta']) {
        expect(lines.find((l) => l.startsWith(`  ${node.padEnd(8)} 127.`)), node).toMatch(/ control 127\.\d+\.\d+\.\d+:\d+$/);
      }
      expect(lines).toContain('users: alice@sender.test / alice-secret, bob@receiver.test / bob-secret, carol@receiver.test / carol-secret, dave@receiver.test / dave-secret');
      const stateFile = path.join(stateDir, `${id}.json`);
      expect(lines).toContain(`state file: ${stateFile}`);
      expect((JSON.parse(await fs.readFile(stateFile, 'utf8')) as RunningLab).id).toBe(id);
      child.kill('SIGINT');
      expect(await new Promise((resolve) => child.once('exit', resolve))).toBe(0);
      await expect(fs.stat(stateFile)).rejects.toThrow(/ENOENT/);
    } finally {
      if (child.exitCode === null) child.kill('SIGTERM');
    }
  }, 60_000);
});
