// The startup-snapshot experiment of issue 17 ("what a startup snapshot buys for boot"): each node role of the default
// lab bundled into one CommonJS file, its modules loaded and initialised at build time into a V8 startup snapshot
// (`node --snapshot-blob X --build-snapshot file.cjs`, Node 20), and started from that snapshot; against the lab's own
// start (`node dist/node.js <role> --config …`) and the same one-file bundle without a snapshot, in interleaved rounds.
// Per role and way of starting: the time from spawn until every service of the node greets (after its MAILLAB_READY
// line, as the lab and `npm run bench` wait), and the process's RSS and PSS right then (idle); then the same for the four
// nodes started at once, as the local runtime starts a lab. Each start is also checked past its greeting (STARTTLS on
// the SMTP services, untimed). A measurement only: the lab's runtime never starts nodes from a snapshot.
//
// What a snapshot cannot hold is checked, not assumed: a role whose snapshot does not build, or whose node does not
// start from it, is reported with the reason; random draws made while the modules load (crypto or Math.random) are
// counted at build time, as their values are frozen into the snapshot and every process started from it would share
// them (Math.random is reseeded at run time, so only load-time draws are affected).
//
// Run: `npx esbuild bench/snapshot.ts --bundle --platform=node --format=esm --packages=external
// --outfile=dist/bench-snapshot.js && node dist/bench-snapshot.js`. SNAPSHOT_RUNS (7) rounds, SNAPSHOT_ROLES
// (dns,mta,mx,mailbox); SNAPSHOT_KEEP=1 keeps the bundles and blobs in os.tmpdir(). Writes bench/results/latest-snapshot.{json,md}.
import { spawn, type ChildProcess } from 'node:child_process';
import { promises as fs } from 'node:fs';
import { createRequire } from 'node:module';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Plugin } from 'esbuild';
import defaultLab from '../lab/default.js';
import { createLabResolver } from '../src/dns/index.js';
import { smtpDialogue } from '../src/harness/clients/probe.js';
import { Lab } from '../src/harness/lab.js';
import { packageRoot } from '../src/harness/runtime/types.js';
import type { Endpoint, NodeConfig } from '../src/shared/config.js';
import { READY_MARKER } from '../src/shared/node.js';
import { fmt, orderOf } from './figures.js';
import { greeting, memory, stats, type Stats } from './load.js';

export const ROLES = ['dns', 'mta', 'mx', 'mailbox'] as const;
export type SnapshotRole = (typeof ROLES)[number];

/** The ways a node is started: the lab's (ESM bundle with chunks), the one-file CommonJS bundle, and its snapshot. */
export const VARIANTS = ['dist', 'cjs', 'snapshot'] as const;
export type Variant = (typeof VARIANTS)[number];
export const VARIANT_TITLES: Record<Variant, string> = {
  dist: '`node dist/node.js` (the lab\'s start)',
  cjs: 'one-file CJS bundle, no snapshot',
  snapshot: 'the same bundle from a startup snapshot',
};

/** Where each role's starter is, as src/node-main.ts loads it (maillab's own servers only, not Postfix or Dovecot). */
const STARTERS: Record<SnapshotRole, { file: string; name: string }> = {
  dns: { file: 'src/dns/index.ts', name: 'startDns' },
  mta: { file: 'src/mta/index.ts', name: 'startMta' },
  mx: { file: 'src/mx/index.ts', name: 'startMx' },
  mailbox: { file: 'src/mailbox/index.ts', name: 'startMailbox' },
};

/** One start of one node: spawn → MAILLAB_READY, spawn → every service greeted, and its memory right then. */
export interface Sample {
  round: number;
  readyMs: number;
  bootMs: number;
  rssMiB: number;
  pssMiB?: number;
}

export interface VariantSummary {
  boot: Stats;
  ready: Stats;
  rss: Stats;
  pss?: Stats;
}

/** What building a role's snapshot gave: the blob, or why there is none. */
export interface BuildOutcome {
  ok: boolean;
  /** Why the snapshot does not build or does not start (stderr's telling lines). */
  reason?: string;
  buildMs?: number;
  bundleKiB?: number;
  blobMiB?: number;
  /** Random draws made while the modules loaded at build time: frozen into the snapshot, shared by every process. */
  loadTimeRandomDraws?: string[];
  /** What the deferred modules stood in for while the modules loaded (deferredSource): not the real thing at run time. */
  standIns?: string[];
}

export interface RoleResult {
  /** A role, or LAB_ROW. */
  role: string;
  build: BuildOutcome;
  /** Samples per variant that ran (a variant failing at its first start is left out, with the reason in `failures`). */
  samples: Partial<Record<Variant, Sample[]>>;
  failures: Partial<Record<Variant, string>>;
}

export function summarise(samples: readonly Sample[]): VariantSummary | undefined {
  if (!samples.length) return undefined;
  const pss = samples.map((s) => s.pssMiB).filter((v): v is number => v !== undefined);
  return {
    boot: stats(samples.map((s) => s.bootMs)),
    ready: stats(samples.map((s) => s.readyMs)),
    rss: stats(samples.map((s) => s.rssMiB)),
    ...(pss.length === samples.length ? { pss: stats(pss) } : {}),
  };
}

/**
 * Per round, `variant` minus `baseline` (same round, so the same machine load); the median of those differences
 * and their min–max. Rounds where either has no sample are left out.
 */
export function pairedDelta(variant: readonly Sample[], baseline: readonly Sample[], pick: (s: Sample) => number | undefined): Stats | undefined {
  const base = new Map(baseline.map((s) => [s.round, pick(s)]));
  const diffs: number[] = [];
  for (const s of variant) {
    const v = pick(s);
    const b = base.get(s.round);
    if (v !== undefined && b !== undefined) diffs.push(v - b);
  }
  return diffs.length ? stats(diffs) : undefined;
}

function signed(s: Stats | undefined, unit: string, digits: number): string {
  if (!s) return '—';
  const f = (v: number) => `${v > 0 ? '+' : v < 0 ? '−' : '±'}${Math.abs(v).toFixed(digits)}`;
  return `${f(s.median)} ${unit} (${f(s.min)} to ${f(s.max)})`;
}

/** The Markdown report: the table of every role and variant, the snapshot's paired deltas, and the failures. */
export function snapshotMarkdown(results: readonly RoleResult[], meta: { runs: number; node: string; date: string; load?: string }): string[] {
  const lines = [
    `# Startup snapshot (issue 17)`,
    ``,
    `${meta.date}, Node ${meta.node}, ${meta.runs} interleaved rounds (variant order alternating). Boot: spawn → every service of the node greeted (after its MAILLAB_READY line); memory (RSS, PSS from /proc/<pid>/smaps_rollup) read right then. \`${LAB_ROW}\`: the four nodes spawned together, as the local runtime starts a lab: the slowest node's times, the memory summed (blob and build: the four's sum). Median (min–max).${meta.load ? ` Load average (1 min) ${meta.load}: the machine is shared, and the lab row, four processes on its cores, feels it most.` : ''}`,
    ``,
    `| role | start | boot, ms | ready line, ms | RSS, MiB | PSS, MiB |`,
    `| --- | --- | --- | --- | --- | --- |`,
  ];
  for (const r of results) {
    for (const v of VARIANTS) {
      const s = summarise(r.samples[v] ?? []);
      if (!s) {
        const why = v === 'snapshot' && !r.build.ok ? r.build.reason : r.failures[v];
        lines.push(`| ${r.role} | ${VARIANT_TITLES[v]} | failed: ${(why ?? 'no sample').replace(/\|/g, '\\|').replace(/\n/g, ' ')} | | | |`);
        continue;
      }
      lines.push(`| ${r.role} | ${VARIANT_TITLES[v]} | ${fmt(s.boot, 'ms')} | ${fmt(s.ready, 'ms')} | ${fmt(s.rss, 'MiB')} | ${fmt(s.pss, 'MiB')} |`);
    }
  }
  lines.push(``, `Snapshot against the lab's start, paired per round (negative: the snapshot is faster or smaller):`, ``);
  lines.push(`| role | boot | RSS | PSS | blob | snapshot build | load-time random draws | stand-ins at load |`, `| --- | --- | --- | --- | --- | --- | --- | --- |`);
  for (const r of results) {
    const snap = r.samples.snapshot ?? [];
    const base = r.samples.dist ?? [];
    if (!r.build.ok || !snap.length) {
      lines.push(`| ${r.role} | no snapshot: ${(r.build.reason ?? r.failures.snapshot ?? 'no sample').replace(/\|/g, '\\|').replace(/\n/g, ' ')} | | | | | | |`);
      continue;
    }
    const draws = r.build.loadTimeRandomDraws ?? [];
    lines.push(
      `| ${r.role} | ${signed(pairedDelta(snap, base, (s) => s.bootMs), 'ms', 0)} | ${signed(pairedDelta(snap, base, (s) => s.rssMiB), 'MiB', 1)} | ${signed(pairedDelta(snap, base, (s) => s.pssMiB), 'MiB', 1)} | ${r.build.blobMiB?.toFixed(1)} MiB | ${r.build.buildMs?.toFixed(0)} ms | ${draws.length ? `${draws.length}: ${[...new Set(draws)].slice(0, 3).map((d) => `\`${d}\``).join(', ')}` : 'none'} | ${r.build.standIns?.length ? r.build.standIns.map((d) => `\`${d}\``).join(', ') : 'none'} |`,
    );
  }
  return lines;
}

// ---------------------------------------------------------------------------------------------------------------
// The experiment itself (run as a script; the functions above are what the unit test checks).

const RUNS = Number(process.env.SNAPSHOT_RUNS ?? 7);
/** Every spawned node is killed if it is not ready and greeted within this. */
const START_TIMEOUT_MS = 15_000;
const BUILD_TIMEOUT_MS = 120_000;
/** The lab's services on implicit TLS and over HTTP, as `npm run bench` greets them (bench/bench.ts checkGreetings). */
const IMPLICIT_TLS = new Set(['submissions', 'imaps', 'pop3s']);
const HTTP_SERVICES = new Set(['accounts', 'api', 'mta-sts']);
const log = (m: string) => process.stderr.write(`snapshot: ${m}\n`);

/**
 * The module run first in every bundle: while a snapshot is being built, it counts the random draws the other modules
 * make as they load (their values would be frozen into the snapshot), and puts the originals back once they loaded.
 */
const PROBE = `
import crypto from 'node:crypto';
import v8 from 'node:v8';
export const draws = [];
/** Filled by the deferred modules (deferredSource): what they stood in for while the snapshot was built. */
export const standIns = [];
const restore = [];
function wrap(target, name, label) {
  const original = target && target[name];
  if (typeof original !== 'function') return;
  target[name] = function (...args) {
    const stack = (new Error().stack || '').split('\\n').slice(2, 5).map((l) => l.trim().replace(/^at /, '').replace(/ \\(.*$/, '')).join(' < ');
    draws.push(label + ' from ' + stack);
    return original.apply(this, args);
  };
  restore.push(() => { target[name] = original; });
}
if (v8.startupSnapshot.isBuildingSnapshot()) {
  for (const name of ['randomBytes', 'randomFillSync', 'randomFill', 'randomUUID', 'randomInt', 'getRandomValues']) wrap(crypto, name, 'crypto.' + name);
  if (crypto.webcrypto) wrap(crypto.webcrypto, 'getRandomValues', 'webcrypto.getRandomValues');
  wrap(Math, 'random', 'Math.random');
}
export function loaded() {
  for (const r of restore.splice(0)) r();
  return { draws, standIns };
}
`;

/** The line the build prints on stderr: the probe's findings (JSON). */
const PROBE_MARKER = 'SNAPSHOT_PROBE ';

/** The one-file entry of a role: the probe, the role's starter, and main() run at once or from the snapshot. */
function entrySource(role: SnapshotRole, root: string): string {
  const starter = STARTERS[role];
  return `
import { loaded } from './probe.js';
import v8 from 'node:v8';
import { readFileSync } from 'node:fs';
import { runNode } from ${JSON.stringify(path.join(root, 'src/shared/node.ts'))};
import { ${starter.name} } from ${JSON.stringify(path.join(root, starter.file))};
const probed = loaded();
function main() {
  const args = process.argv.slice(2);
  const config = JSON.parse(readFileSync(args[args.indexOf('--config') + 1], 'utf8'));
  runNode(config, ${starter.name}).catch((err) => {
    process.stderr.write('maillab node: ' + (err && err.stack ? err.stack : String(err)) + '\\n');
    process.exit(1);
  });
}
if (v8.startupSnapshot.isBuildingSnapshot()) {
  process.stderr.write(${JSON.stringify(PROBE_MARKER)} + JSON.stringify(probed) + '\\n');
  v8.startupSnapshot.setDeserializeMainFunction(main);
} else {
  main();
}
`;
}

/**
 * Built-in modules that cannot be in a user-land snapshot on Node 20 (seen on 20.20): `node:tls` aborts the build
 * ("Unknown external reference", its tls_wrap binding), `node:http` and `node:https` too (http_parser's binding is a
 * global handle V8 does not serialise; `node:http` first throws on `methods.toSorted`, which the builder's context
 * lacks), and `node:http2`, which loads `node:http`. Every role needs them (the control channel is HTTP, every
 * SMTP/IMAP server offers TLS), so in the bundle each is deferred (deferredSource): the real module is required at its
 * first use at run time.
 */
export const DEFERRED_BUILTINS = ['tls', 'http', 'https', 'http2'] as const;
/**
 * Packages deferred the same way, both only for mailauth's BIMI: undici (its fetch) creates an HTTP Agent and reads
 * Node's global Headers (Node's own undici, which loads `node:http`) as it loads; @postalsys/vmc makes its root store
 * of X509Certificate objects as it loads, native handles V8 cannot serialise ("global handle not serialized").
 */
export const DEFERRED_PACKAGES = ['undici', '@postalsys/vmc'] as const;

/** What the bundle may use of a deferred module while the snapshot is built: its export names, functions, constants. */
export interface ModuleShape {
  functions: string[];
  /** Plain data (STATUS_CODES, METHODS, maxHeaderSize…), copied into the bundle as JSON. */
  constants: Record<string, unknown>;
  /** Anything else (an Agent instance, a Symbol): used at build time, it fails the build naming it. */
  others: string[];
}

export function shapeOf(mod: object): ModuleShape {
  const shape: ModuleShape = { functions: [], constants: {}, others: [] };
  for (const key of Object.getOwnPropertyNames(mod)) {
    if (key === '__esModule') continue;
    const value = (mod as Record<string, unknown>)[key];
    if (typeof value === 'function') shape.functions.push(key);
    else if (isPlainData(value)) shape.constants[key] = value;
    else shape.others.push(key);
  }
  return shape;
}

function isPlainData(value: unknown): boolean {
  if (value === null || ['string', 'number', 'boolean'].includes(typeof value)) return true;
  if (Array.isArray(value)) return value.every(isPlainData);
  if (typeof value === 'object' && Object.getPrototypeOf(value) === Object.prototype) return Object.values(value as object).every(isPlainData);
  return false;
}

/**
 * A deferred module: getters that require the real one at first use (after the snapshot is deserialised). While the
 * snapshot is built, a module that reads it as it loads gets a stand-in instead, and every stand-in is recorded (the
 * build prints them): a function that calls the real one when called (a `new` of it at build time gives an object that
 * makes the real instance at its first use), or a copy of a constant. A stand-in is not the real class: `instanceof`
 * or `extends` on it would not work, so the experiment names what it stood in for.
 */
function deferredSource(specifier: string, shape: ModuleShape, probeFile: string): string {
  return `
const v8 = require('node:v8');
const { standIns } = require(${JSON.stringify(probeFile)});
let real;
const load = () => (real ??= require(${JSON.stringify(specifier)}));
const building = () => v8.startupSnapshot.isBuildingSnapshot();
function lazyInstance(key, args) {
  let instance;
  const get = () => (instance ??= Reflect.construct(load()[key], args));
  return new Proxy({}, {
    get: (_, k) => { const v = Reflect.get(get(), k); return typeof v === 'function' ? v.bind(get()) : v; },
    set: (_, k, v) => Reflect.set(get(), k, v),
    has: (_, k) => Reflect.has(get(), k),
  });
}
function standIn(key) {
  standIns.push(${JSON.stringify(specifier)} + '.' + key);
  return function (...args) {
    if (new.target && building()) return lazyInstance(key, args);
    const f = load()[key];
    return new.target ? Reflect.construct(f, args, new.target) : f.apply(this, args);
  };
}
const constants = ${JSON.stringify(shape.constants)};
for (const key of ${JSON.stringify(shape.functions)}) Object.defineProperty(module.exports, key, { enumerable: true, get: () => (real || !building() ? load()[key] : standIn(key)) });
for (const key of Object.keys(constants)) Object.defineProperty(module.exports, key, { enumerable: true, get: () => (real || !building() ? load()[key] : (standIns.push(${JSON.stringify(specifier)} + '.' + key + ' (copy)'), structuredClone(constants[key]))) });
for (const key of ${JSON.stringify(shape.others)}) Object.defineProperty(module.exports, key, { enumerable: true, get: () => {
  if (real || !building()) return load()[key];
  throw new Error(${JSON.stringify(specifier)} + '.' + key + ' used at load time, and it cannot be in a Node 20 snapshot');
} });
`;
}

/** The esbuild plugin putting deferredSource in place of DEFERRED_BUILTINS (`tls` and `node:tls` alike) and DEFERRED_PACKAGES. */
function deferModules(probeFile: string): Plugin {
  const builtins = new RegExp(`^(node:)?(${DEFERRED_BUILTINS.join('|')})$`);
  const packages = new RegExp(`^(${DEFERRED_PACKAGES.join('|')})$`);
  return {
    name: 'defer-modules',
    setup(b) {
      b.onResolve({ filter: builtins }, (args) => {
        const specifier = `node:${args.path.replace(/^node:/, '')}`;
        // The deferred module's own require of the real one stays a require.
        return args.namespace === 'deferred' ? { path: specifier, external: true } : { path: specifier, namespace: 'deferred', pluginData: { resolveDir: args.resolveDir } };
      });
      b.onResolve({ filter: packages }, (args) => (args.namespace === 'deferred' ? undefined : { path: args.path, namespace: 'deferred', pluginData: { resolveDir: args.resolveDir } }));
      b.onLoad({ filter: /.*/, namespace: 'deferred' }, (args) => {
        const resolveDir = (args.pluginData as { resolveDir: string }).resolveDir;
        // The real module as this Node loads it from the importer's place: its shape.
        const mod = createRequire(path.join(resolveDir, 'importer.js'))(args.path) as object;
        return { contents: deferredSource(args.path, shapeOf(mod), probeFile), loader: 'js', resolveDir };
      });
    },
  };
}

interface Built {
  cjs: string;
  blob?: string;
  outcome: BuildOutcome;
}

async function buildRole(role: SnapshotRole, dir: string, root: string): Promise<Built> {
  const { build } = await import('esbuild');
  const roleDir = path.join(dir, role);
  await fs.mkdir(roleDir, { recursive: true });
  await fs.writeFile(path.join(roleDir, 'probe.js'), PROBE);
  await fs.writeFile(path.join(roleDir, 'entry.ts'), entrySource(role, root));
  const cjs = path.join(roleDir, `${role}.cjs`);
  // As build.mjs builds dist/node.js (minified, names kept, every package bundled), but CommonJS in one file.
  await build({ entryPoints: [path.join(roleDir, 'entry.ts')], outfile: cjs, bundle: true, platform: 'node', target: 'node20', format: 'cjs', minify: true, keepNames: true, logLevel: 'error', plugins: [deferModules(path.join(roleDir, 'probe.js'))] });
  const bundleKiB = (await fs.stat(cjs)).size / 1024;
  const blob = path.join(roleDir, `${role}.blob`);
  const t0 = performance.now();
  const run = await runToEnd(process.execPath, ['--snapshot-blob', blob, '--build-snapshot', cjs], roleDir, BUILD_TIMEOUT_MS);
  const buildMs = performance.now() - t0;
  const probeLine = run.stderr.split('\n').find((l) => l.startsWith(PROBE_MARKER));
  const probed = probeLine ? (JSON.parse(probeLine.slice(PROBE_MARKER.length)) as { draws: string[]; standIns: string[] }) : undefined;
  const found = probed ? { loadTimeRandomDraws: probed.draws, standIns: [...new Set(probed.standIns)] } : {};
  const blobStat = await fs.stat(blob).catch(() => undefined);
  if (run.code !== 0 || !blobStat) {
    return { cjs, outcome: { ok: false, reason: `--build-snapshot ${run.timedOut ? 'timed out' : `exited with ${run.code}`}: ${telling(run.stderr)}`, buildMs, bundleKiB, ...found } };
  }
  return { cjs, blob, outcome: { ok: true, buildMs, bundleKiB, blobMiB: blobStat.size / 2 ** 20, loadTimeRandomDraws: [], standIns: [], ...found } };
}

/** Node's warning that a built-in module is not verified in snapshots (printed for tls, http…), four lines each. */
const NOISE = [/^\(node:\d+\) Warning: It's not yet fully verified/, /^It may still work in some cases/, /^To request support for the module/, /^\(Use `node --trace-warnings/, /^SNAPSHOT_PROBE /, /^at /];
const TELLING = /^([A-Za-z]*Error\b|# (Fatal error|Check failed)|Unknown external reference|global handle not serialized)/;

/** Why a process failed, from its stderr: the error lines first (not warnings, stack frames or the draws line), shortened. */
export function telling(stderr: string): string {
  const lines = stderr
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => l && !NOISE.some((n) => n.test(l)));
  const errors = lines.filter((l) => TELLING.test(l));
  return ((errors.length ? errors : lines).slice(0, 3).join(' / ') || '(nothing on stderr)').slice(0, 400);
}

function runToEnd(cmd: string, args: string[], cwd: string, timeoutMs: number): Promise<{ code: number | null; stderr: string; timedOut: boolean }> {
  return new Promise((resolve) => {
    const child = spawn(cmd, args, { cwd, stdio: ['ignore', 'ignore', 'pipe'], env: { ...process.env, NODE_OPTIONS: '' } });
    let stderr = '';
    let timedOut = false;
    child.stderr!.setEncoding('utf8').on('data', (c: string) => (stderr = (stderr + c).slice(-20_000)));
    const timer = setTimeout(() => {
      timedOut = true;
      child.kill('SIGKILL');
    }, timeoutMs);
    child.once('close', (code) => {
      clearTimeout(timer);
      resolve({ code, stderr, timedOut });
    });
  });
}

/** The default lab's node configurations (certificates, DKIM keys, zones), from a start of the lab; the lab CA. */
async function labConfigs(): Promise<{ configs: Record<SnapshotRole, NodeConfig>; ca: string }> {
  const lab = await new Lab(defaultLab).withRuntime('local').start();
  try {
    const configs = {} as Record<SnapshotRole, NodeConfig>;
    for (const node of lab.nodes()) {
      const role = node.config.role;
      if ((ROLES as readonly string[]).includes(role)) configs[role as SnapshotRole] = structuredClone(node.config);
    }
    return { configs, ca: lab.ca };
  } finally {
    await lab.stop();
  }
}

/** Every service of a started node greets (DNS: answers a query; implicit TLS: after the handshake; HTTP: a status line). */
async function greetAll(services: Record<string, Endpoint>, config: NodeConfig, ca: string, deadline: number): Promise<void> {
  const left = () => Math.max(100, deadline - Date.now());
  await Promise.all(
    Object.entries(services).map(async ([name, endpoint]) => {
      if (name === 'dns') return void (await createLabResolver(endpoint).resolveMx('receiver.test'));
      const http = HTTP_SERVICES.has(name);
      const tls = IMPLICIT_TLS.has(name) || (http && config.tls) ? { ca, servername: config.hostname } : undefined;
      await greeting(endpoint.host, endpoint.port, left(), tls, http ? `GET / HTTP/1.1\r\nHost: ${config.hostname}\r\nConnection: close\r\n\r\n` : undefined).catch((err: Error) =>
        Promise.reject(new Error(`${name} on ${endpoint.host}:${endpoint.port}: ${err.message}`)),
      );
    }),
  );
}

/** A node to start: its role, its config (from the lab) and its bundle and blob. */
interface NodeToStart {
  role: SnapshotRole;
  built: Built;
  config: NodeConfig;
}

/**
 * Starts nodes one way, all at once (one node for a role's figure, the four for the lab's), times each until it greets,
 * reads their memory, then stops them (SIGTERM, then SIGKILL), always. The sample: the slowest node's times (from the
 * common start) and the memory summed, as `npm run bench` takes a lab's.
 */
async function startNodes(variant: Variant, nodes: readonly NodeToStart[], ca: string, dir: string, round: number): Promise<Sample> {
  const dataRoot = await fs.mkdtemp(path.join(dir, `${nodes.map((n) => n.role).join('+')}-${variant}-${round}-`));
  const children: ChildProcess[] = [];
  try {
    const t0 = performance.now();
    const deadline = Date.now() + START_TIMEOUT_MS;
    const started = await Promise.all(nodes.map((node) => startNode(variant, node, ca, dataRoot, t0, deadline, children)));
    const mem = await memory(started.map((s) => s.pid));
    // Untimed: each node works past its greeting, through modules loaded after the snapshot (node:tls at STARTTLS).
    await Promise.all(started.map((s) => checkStartTls(s.services, s.config, ca)));
    return {
      round,
      readyMs: Math.max(...started.map((s) => s.readyMs)),
      bootMs: Math.max(...started.map((s) => s.bootMs)),
      rssMiB: mem.rssMiB,
      ...(mem.pssMiB !== undefined ? { pssMiB: mem.pssMiB } : {}),
    };
  } finally {
    await Promise.all(children.map(stop));
    await fs.rm(dataRoot, { recursive: true, force: true, maxRetries: 3 });
  }
}

async function startNode(
  variant: Variant,
  { role, built, config: base }: NodeToStart,
  ca: string,
  dataRoot: string,
  t0: number,
  deadline: number,
  children: ChildProcess[],
): Promise<{ pid: number; readyMs: number; bootMs: number; services: Record<string, Endpoint>; config: NodeConfig }> {
  const config = { ...structuredClone(base), dataDir: path.join(dataRoot, role) } as NodeConfig;
  const configFile = path.join(dataRoot, `${role}.json`);
  await fs.writeFile(configFile, JSON.stringify(config), { mode: 0o600 });
  const program = variant === 'dist' ? [path.join(packageRoot(), 'dist', 'node.js'), role] : variant === 'cjs' ? [built.cjs, role] : ['--snapshot-blob', built.blob!, role];
  let stderr = '';
  try {
    // As the local runtime starts a node (src/harness/runtime/local.ts): stdin as its lifeline, no NODE_OPTIONS.
    const child = spawn(process.execPath, [...program, '--config', configFile], { stdio: ['pipe', 'pipe', 'pipe'], env: { ...process.env, NODE_OPTIONS: '', MAILLAB_LIFELINE: 'stdin' } });
    children.push(child);
    child.stderr!.setEncoding('utf8').on('data', (c: string) => (stderr = (stderr + c).slice(-8000)));
    const ready = await new Promise<{ services: Record<string, Endpoint> }>((resolve, reject) => {
      let stdout = '';
      const timer = setTimeout(() => reject(new Error(`not ready after ${START_TIMEOUT_MS} ms`)), Math.max(0, deadline - Date.now()));
      child.once('exit', (code, signal) => {
        clearTimeout(timer);
        reject(new Error(`exited with ${signal ?? code} before it was ready`));
      });
      child.stdout!.setEncoding('utf8').on('data', (c: string) => {
        stdout += c;
        const line = stdout.split('\n').find((l) => l.startsWith(READY_MARKER));
        if (line) {
          clearTimeout(timer);
          resolve(JSON.parse(line.slice(READY_MARKER.length)) as { services: Record<string, Endpoint> });
        }
      });
    });
    const readyMs = performance.now() - t0;
    await greetAll(ready.services, config, ca, deadline);
    return { pid: child.pid!, readyMs, bootMs: performance.now() - t0, services: ready.services, config };
  } catch (err) {
    throw new Error(`${role}: ${(err as Error).message}${stderr.trim() ? `: ${telling(stderr)}` : ''}`);
  }
}

/** SMTP services that offer STARTTLS (the MX's 25, the MTA's 25 and 587): EHLO, STARTTLS, a verified handshake, EHLO again. */
async function checkStartTls(services: Record<string, Endpoint>, config: NodeConfig, ca: string): Promise<void> {
  for (const name of ['smtp', 'submission'].filter((n) => services[n])) {
    const replies = await smtpDialogue(services[name]!, ['EHLO snapshot.bench', 'STARTTLS', 'EHLO snapshot.bench'], { tls: { ca, servername: config.hostname } }).catch((err: Error) =>
      Promise.reject(new Error(`greeted, but STARTTLS on ${name} failed: ${err.message}`)),
    );
    const refused = replies.find((r) => r.command !== 'QUIT' && r.code >= 400);
    if (refused) throw new Error(`greeted, but STARTTLS on ${name} failed: ${refused.command}: ${refused.text}`);
    if (!/STARTTLS/i.test(replies.find((r) => r.command.startsWith('EHLO'))?.text ?? '')) throw new Error(`greeted, but ${name} offers no STARTTLS`);
  }
}

async function stop(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  child.kill('SIGTERM');
  const timer = setTimeout(() => child.kill('SIGKILL'), 5000);
  await exited;
  clearTimeout(timer);
}

/** The row of the four nodes started at once. */
export const LAB_ROW = 'lab (all four at once)';

/** RUNS interleaved rounds of every way of starting `nodes` (the snapshot only where it built). */
async function rounds(name: string, outcome: BuildOutcome, nodes: NodeToStart[], ca: string, dir: string): Promise<RoleResult> {
  const result: RoleResult = { role: name, build: outcome, samples: {}, failures: {} };
  const variants = VARIANTS.filter((v) => v !== 'snapshot' || outcome.ok);
  for (let round = 0; round < RUNS; round++) {
    for (const variant of orderOf(variants, round)) {
      if (result.failures[variant]) continue;
      try {
        const sample = await startNodes(variant, nodes, ca, dir, round);
        (result.samples[variant] ??= []).push(sample);
        log(`${name} round ${round + 1} ${variant}: boot ${sample.bootMs.toFixed(0)} ms (ready ${sample.readyMs.toFixed(0)}), RSS ${sample.rssMiB.toFixed(1)} MiB, PSS ${sample.pssMiB?.toFixed(1) ?? '?'} MiB`);
      } catch (err) {
        // A way of starting that fails once is not tried again: its reason is the result.
        result.failures[variant] = (err as Error).message;
        log(`${name} ${variant} failed: ${(err as Error).message}`);
      }
    }
  }
  return result;
}

async function main(): Promise<void> {
  if (!Number.isInteger(RUNS) || RUNS < 1) throw new Error(`SNAPSHOT_RUNS=${process.env.SNAPSHOT_RUNS}: a whole number from 1 is needed`);
  const roles = (process.env.SNAPSHOT_ROLES?.split(',').map((r) => r.trim()) ?? [...ROLES]) as SnapshotRole[];
  const unknown = roles.filter((r) => !(ROLES as readonly string[]).includes(r));
  if (unknown.length) throw new Error(`SNAPSHOT_ROLES: unknown role(s) ${unknown.join(', ')}; the roles are ${ROLES.join(', ')}`);
  const root = packageRoot();
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'maillab-snapshot-'));
  const loadAtStart = os.loadavg()[0]!;
  try {
    log(`starting the default lab once for its node configurations`);
    const { configs, ca } = await labConfigs();
    const results: RoleResult[] = [];
    const built: Partial<Record<SnapshotRole, Built>> = {};
    for (const role of roles) {
      const b = (built[role] = await buildRole(role, dir, root));
      log(`${role}: ${b.outcome.ok ? `snapshot built in ${b.outcome.buildMs!.toFixed(0)} ms, ${b.outcome.blobMiB!.toFixed(1)} MiB, ${b.outcome.loadTimeRandomDraws!.length} load-time random draw(s), stand-ins: ${b.outcome.standIns!.join(', ') || 'none'}` : `no snapshot: ${b.outcome.reason}`}`);
      results.push(await rounds(role, b.outcome, [{ role, built: b, config: configs[role] }], ca, dir));
    }
    // The lab's boot: the four nodes started at once, as the local runtime starts them (every role must have a snapshot).
    if (roles.length === ROLES.length && roles.every((r) => built[r]!.outcome.ok)) {
      const outcomes = roles.map((r) => built[r]!.outcome);
      const sum = (pick: (o: BuildOutcome) => number | undefined) => outcomes.reduce((a, o) => a + (pick(o) ?? 0), 0);
      const outcome: BuildOutcome = {
        ok: true,
        buildMs: sum((o) => o.buildMs),
        blobMiB: sum((o) => o.blobMiB),
        bundleKiB: sum((o) => o.bundleKiB),
        loadTimeRandomDraws: outcomes.flatMap((o) => o.loadTimeRandomDraws ?? []),
        standIns: [...new Set(outcomes.flatMap((o) => o.standIns ?? []))],
      };
      results.push(await rounds(LAB_ROW, outcome, roles.map((role) => ({ role, built: built[role]!, config: configs[role] })), ca, dir));
    }
    const meta = { runs: RUNS, node: process.versions.node, date: new Date().toISOString(), load: `${loadAtStart.toFixed(1)} at the start, ${os.loadavg()[0]!.toFixed(1)} at the end` };
    const md = snapshotMarkdown(results, meta).join('\n') + '\n';
    const json = {
      ...meta,
      cpus: os.cpus().length,
      roles: results.map((r) => ({ ...r, summary: Object.fromEntries(VARIANTS.map((v) => [v, summarise(r.samples[v] ?? []) ?? null])) })),
    };
    const out = path.join(root, 'bench', 'results');
    await fs.mkdir(out, { recursive: true });
    await fs.writeFile(path.join(out, 'latest-snapshot.json'), JSON.stringify(json, null, 2) + '\n');
    await fs.writeFile(path.join(out, 'latest-snapshot.md'), md);
    process.stdout.write(md);
  } finally {
    // SNAPSHOT_KEEP=1 keeps the bundles and blobs (to rerun a failing build by hand).
    if (process.env.SNAPSHOT_KEEP === '1') log(`kept ${dir}`);
    else await fs.rm(dir, { recursive: true, force: true, maxRetries: 3 });
  }
}

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  main().then(
    () => process.exit(0),
    (err: Error) => {
      process.stderr.write(`snapshot: ${err.stack ?? err.message}\n`);
      process.exit(1);
    },
  );
}
