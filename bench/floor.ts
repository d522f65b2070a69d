// The floor of a lab made of Node processes: what the runtime alone costs, before any of maillab's code. The default
// lab runs one Node process per node (four), each started, isolated and faulted (stopped, killed, paused) on its own;
// so its boot and its idle memory can never go below four bare Node processes that only listen on a port. The bench
// measures that floor in the same rounds as the lab and the peer, and from it the best ratio against the peer that
// any lab of four Node processes could reach: a goal beyond that bound is out of reach of the design, not of tuning.
import { spawn, type ChildProcess } from 'node:child_process';
import type { Stats } from './load.js';

/** A bare Node process: listens on a loopback port, says so, and waits. */
const BARE_NODE = `require('node:net').createServer().listen(0, '127.0.0.1', function () { process.stdout.write('ready ' + this.address().port + '\\n'); });`;

/** How long the bare processes may take to listen before the measure fails. */
const BARE_TIMEOUT_MS = 10_000;

/**
 * Starts `count` bare Node processes at once (what a lab start does with its nodes), times them until each listens,
 * hands their pids to `measure` (the idle memory), then kills them. Fails, killing them, after BARE_TIMEOUT_MS.
 */
export async function bareNodes<T>(count: number, measure: (pids: number[]) => Promise<T>): Promise<{ ms: number; measured: T }> {
  const children: ChildProcess[] = [];
  const started = performance.now();
  try {
    const ready = Array.from({ length: count }, () => {
      const child = spawn(process.execPath, ['-e', BARE_NODE], { stdio: ['ignore', 'pipe', 'inherit'] });
      children.push(child);
      return new Promise<void>((resolve, reject) => {
        let out = '';
        child.stdout!.on('data', (d: Buffer) => {
          out += d.toString();
          if (out.includes('ready ')) resolve();
        });
        child.on('exit', (code, signal) => reject(new Error(`a bare Node process exited (${signal ?? `code ${code}`}) before it listened`)));
        child.on('error', reject);
      });
    });
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`${count} bare Node processes did not all listen within ${BARE_TIMEOUT_MS} ms`)), BARE_TIMEOUT_MS);
    });
    await Promise.race([Promise.all(ready), timeout]).finally(() => clearTimeout(timer));
    const ms = performance.now() - started;
    return { ms, measured: await measure(children.map((c) => c.pid!)) };
  } finally {
    for (const child of children) child.kill('SIGKILL');
    await Promise.all(children.map((c) => (c.exitCode !== null || c.signalCode !== null ? undefined : new Promise((resolve) => c.once('exit', resolve)))));
  }
}

/**
 * The best ratio (>1: maillab better, as the bench's ratios) any lab could reach whose figure cannot go below the
 * floor's: the peer's median over the floor's median, for a figure where lower is better. Undefined without both.
 */
export function bestRatioAbove(floor: Stats | undefined, peer: Stats | undefined): number | undefined {
  if (!floor || !peer || floor.median <= 0) return undefined;
  return peer.median / floor.median;
}

/** One line per figure: the floor, the peer, the best reachable ratio, and whether the goal lies beyond it. */
export function floorLines(rows: readonly { what: string; unit: string; floor?: Stats; peer?: Stats; goal: number }[]): string[] {
  const lines: string[] = [];
  for (const r of rows) {
    const best = bestRatioAbove(r.floor, r.peer);
    if (best === undefined || !r.floor || !r.peer) continue;
    const verdict = best < r.goal ? `the goal of ${r.goal}× is beyond what four Node processes can reach` : `the goal of ${r.goal}× is within reach`;
    lines.push(`${r.what}: floor ${r.floor.median.toFixed(r.unit === 'ms' ? 0 : 1)} ${r.unit} (four bare Node processes), peer ${r.peer.median.toFixed(r.unit === 'ms' ? 0 : 1)} ${r.unit}: at best ${best.toFixed(2)}×; ${verdict}.`);
  }
  return lines;
}
