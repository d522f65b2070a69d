// Where the lab's CPU goes (issue 17: levers are chosen by profile): V8 CPU profiles (`node --cpu-prof`) of every
// node process, summarised per process: busy time, the share of each kind of code (maillab's bundle, a package, a
// Node.js internal module, the garbage collector) and the functions with the most self time.
import { promises as fs } from 'node:fs';
import path from 'node:path';

/** The parts of a .cpuprofile this reads (Chrome DevTools' Profile). */
export interface CpuProfile {
  nodes: { id: number; callFrame: { functionName: string; url: string; lineNumber: number } }[];
  startTime: number;
  endTime: number;
  samples: number[];
  timeDeltas?: number[];
}

export interface ProfileSummary {
  /** Seconds profiled, and seconds not idle. */
  seconds: number;
  busySeconds: number;
  /** Kind of code → seconds of self time, largest first. */
  kinds: [string, number][];
  /** Function (name file:line) → ms of self time, largest first, idle left out. */
  functions: [string, number][];
}

/** Which kind of code a frame is: a package under node_modules, a Node.js module, maillab's bundle, or V8's own. */
export function kindOf(frame: { functionName: string; url: string }): string {
  const url = frame.url;
  if (url.includes('node_modules/')) {
    const rest = url.split('node_modules/').pop()!.split('/');
    return `package ${rest[0]!.startsWith('@') ? `${rest[0]}/${rest[1]}` : rest[0]}`;
  }
  if (url.startsWith('node:')) return `node:${url.slice(5).split('/')[0]}`;
  if (url.includes('/dist/')) return 'maillab (dist/, bundled packages included)';
  if (url === '') return frame.functionName.startsWith('(') ? frame.functionName : 'native (fs, sockets, crypto: C++)';
  return 'other';
}

export function summarise(profile: CpuProfile, top = 12): ProfileSummary {
  const seconds = (profile.endTime - profile.startTime) / 1e6;
  const perSample = profile.samples.length ? (profile.endTime - profile.startTime) / 1000 / profile.samples.length : 0;
  const byId = new Map(profile.nodes.map((n) => [n.id, n]));
  const hits = new Map<number, number>();
  for (const id of profile.samples) hits.set(id, (hits.get(id) ?? 0) + 1);
  const kinds = new Map<string, number>();
  const functions = new Map<string, number>();
  for (const [id, count] of hits) {
    const frame = byId.get(id)?.callFrame;
    if (!frame) continue;
    const ms = count * perSample;
    const kind = kindOf(frame);
    kinds.set(kind, (kinds.get(kind) ?? 0) + ms);
    if (kind === '(idle)') continue;
    const key = `${frame.functionName || '(anonymous)'} ${path.basename(frame.url) || '(native)'}:${frame.lineNumber + 1}`;
    functions.set(key, (functions.get(key) ?? 0) + ms);
  }
  const idle = kinds.get('(idle)') ?? 0;
  kinds.delete('(idle)');
  return {
    seconds,
    busySeconds: seconds - idle / 1000,
    kinds: [...kinds].map(([k, ms]) => [k, ms / 1000] as [string, number]).sort((a, b) => b[1] - a[1]),
    functions: [...functions].sort((a, b) => b[1] - a[1]).slice(0, top),
  };
}

/** The .cpuprofile files in `dir` by the pid in their name (CPU.<date>.<time>.<pid>.<thread>.<seq>.cpuprofile). */
export async function profilesByPid(dir: string): Promise<Map<number, CpuProfile>> {
  const out = new Map<number, CpuProfile>();
  for (const file of await fs.readdir(dir)) {
    const pid = /^CPU\.\d+\.\d+\.(\d+)\.\d+\.\d+\.cpuprofile$/.exec(file)?.[1];
    if (pid) out.set(Number(pid), JSON.parse(await fs.readFile(path.join(dir, file), 'utf8')) as CpuProfile);
  }
  return out;
}

/** One process's summary as Markdown lines. */
export function summaryLines(name: string, s: ProfileSummary, perMessage?: number): string[] {
  const busy = s.busySeconds;
  return [
    `**${name}**: ${busy.toFixed(2)} s busy of ${s.seconds.toFixed(1)} s${perMessage ? ` (${((busy * 1000) / perMessage).toFixed(2)} ms of CPU per message)` : ''}; by kind: ${s.kinds
      .slice(0, 6)
      .map(([k, v]) => `${k} ${((100 * v) / busy).toFixed(0)}%`)
      .join(', ')}`,
    ``,
    `| self time | function |`,
    `| --- | --- |`,
    ...s.functions.map(([f, ms]) => `| ${ms.toFixed(0)} ms (${((100 * ms) / 1000 / busy).toFixed(0)}%) | \`${f}\` |`),
    ``,
  ];
}
