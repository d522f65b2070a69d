// The scenario suite's wall time, for the record (issue 17): `npm test` on the local runtime and the scenarios on the
// docker runtime, as .ci/run runs them, each timed from spawn to exit with vitest's own counts. `BENCH_ONLY=suite`
// runs both (about 13 minutes on 2 cores) and writes bench/results/latest-suite.{json,md}; every full bench run
// prints the last recorded figures with their date, since running the suite inside each bench would double its time.
import { spawn } from 'node:child_process';
import { promises as fs } from 'node:fs';
import os from 'node:os';
import path from 'node:path';

/** What one run of the suite came to. */
export interface SuiteRun {
  runtime: 'local' | 'docker';
  /** The command, as a user would type it. */
  command: string;
  seconds: number;
  exitCode: number;
  passed?: number;
  failed?: number;
  skipped?: number;
  files?: number;
}

/** The recorded runs, as bench/results/latest-suite.json holds them. */
export interface SuiteRecord {
  date: string;
  node: string;
  cores: number;
  runs: SuiteRun[];
}

/** vitest's counts from its JSON report (`--reporter=json`): tests passed, failed, skipped; test files. */
export function countsOf(report: unknown): Pick<SuiteRun, 'passed' | 'failed' | 'skipped' | 'files'> {
  const r = report as { numPassedTests?: unknown; numFailedTests?: unknown; numPendingTests?: unknown; numTodoTests?: unknown; numTotalTestSuites?: unknown; testResults?: unknown[] };
  const n = (v: unknown) => (typeof v === 'number' && Number.isFinite(v) ? v : undefined);
  const out: Pick<SuiteRun, 'passed' | 'failed' | 'skipped' | 'files'> = {};
  const passed = n(r?.numPassedTests);
  const failed = n(r?.numFailedTests);
  const pending = n(r?.numPendingTests);
  if (passed !== undefined) out.passed = passed;
  if (failed !== undefined) out.failed = failed;
  if (pending !== undefined) out.skipped = pending + (n(r?.numTodoTests) ?? 0);
  if (Array.isArray(r?.testResults)) out.files = r.testResults.length;
  return out;
}

/** Runs one suite command (vitest under `npx`), its output passed through, and times it. */
async function runSuite(root: string, runtime: 'local' | 'docker', args: string[], log: (m: string) => void): Promise<SuiteRun> {
  const reportFile = path.join(os.tmpdir(), `maillab-suite-${runtime}-${process.pid}.json`);
  const command = `MAILLAB_RUNTIME=${runtime} npx vitest run ${args.join(' ')}`.trim();
  log(`suite: ${command}`);
  const started = performance.now();
  const exitCode = await new Promise<number>((resolve, reject) => {
    const child = spawn('npx', ['vitest', 'run', ...args, '--reporter=default', '--reporter=json', `--outputFile.json=${reportFile}`], {
      cwd: root,
      env: { ...process.env, MAILLAB_RUNTIME: runtime },
      stdio: ['ignore', 'inherit', 'inherit'],
    });
    child.on('error', reject);
    child.on('exit', (code, signal) => resolve(code ?? (signal ? 128 : 1)));
  });
  const seconds = (performance.now() - started) / 1000;
  const report = await fs.readFile(reportFile, 'utf8').then((t) => JSON.parse(t) as unknown, () => undefined);
  await fs.rm(reportFile, { force: true });
  return { runtime, command, seconds, exitCode, ...countsOf(report) };
}

/** Both runs, as .ci/run makes them: everything on the local runtime, then the scenarios on the docker runtime. */
export async function measureSuite(root: string, log: (m: string) => void): Promise<SuiteRecord> {
  const runs = [await runSuite(root, 'local', [], log), await runSuite(root, 'docker', ['scenarios'], log)];
  return { date: new Date().toISOString(), node: process.version, cores: os.cpus().length, runs };
}

/** The record as Markdown lines: one per run. */
export function suiteLines(record: SuiteRecord): string[] {
  return record.runs.map((r) => {
    const counts = r.passed === undefined ? '' : `: ${r.passed} passed, ${r.failed ?? 0} failed, ${r.skipped ?? 0} skipped in ${r.files ?? '?'} files`;
    return `- \`${r.command}\`: ${r.seconds.toFixed(0)} s${counts}${r.exitCode === 0 ? '' : ` (**exit code ${r.exitCode}**)`}`;
  });
}

/** The section a full bench prints: the last record with its date, or how to make one. */
export async function lastSuiteSection(file: string): Promise<string[]> {
  const record = await fs.readFile(file, 'utf8').then((t) => JSON.parse(t) as SuiteRecord, () => undefined);
  const head = `## Scenario suite wall time (for the record)`;
  if (!record?.runs?.length) return [head, ``, `No record yet: \`BENCH_ONLY=suite npm run bench\` runs the suite on both runtimes (about 13 minutes on 2 cores).`, ``];
  return [head, ``, `Recorded ${record.date} (Node ${record.node}, ${record.cores} cores) by \`BENCH_ONLY=suite npm run bench\`:`, ``, ...suiteLines(record), ``];
}
