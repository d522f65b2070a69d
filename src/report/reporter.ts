// `maillab/reporter`: a vitest reporter that writes the HTML report of a run (one self-contained file) from the
// records useLab leaves on each test. Use it beside the default reporter:
//   reporters: ['default', ['maillab/reporter', { outputFile: 'maillab-report/index.html' }]]
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { stripVTControlCharacters } from 'node:util';
import type { Reporter, TestCase, TestModule, Vitest } from 'vitest/node';
import { renderReport, type ScenarioView } from './html.js';
import { RECORD_META_KEY, type LabTestRecord } from './record.js';

export interface MaillabReporterOptions {
  /**
   * Where the report goes, relative to vitest's root; else vitest's `outputFile.maillab`; else
   * `maillab-report/index.html`.
   */
  outputFile?: string;
  /** The page's title; default `maillab report`. */
  title?: string;
}

export const DEFAULT_REPORT_FILE = 'maillab-report/index.html';

export class MaillabReporter implements Reporter {
  private root = process.cwd();
  private configuredFile?: string;
  /** The file written by the last run (absolute). */
  outputPath?: string;

  constructor(private readonly options: MaillabReporterOptions = {}) {}

  onInit(vitest: Vitest): void {
    this.root = vitest.config.root;
    // vitest's own per-reporter outputFile (`--outputFile.maillab=report.html`) when the reporter's options name none.
    const configured = vitest.config.outputFile;
    if (configured && typeof configured === 'object') this.configuredFile = configured['maillab'] ?? configured['maillab/reporter'];
  }

  onTestRunEnd(testModules: ReadonlyArray<TestModule>): void {
    const scenarios = testModules.flatMap((m) => [...m.children.allTests()].map((t) => scenarioOf(t, path.relative(this.root, m.moduleId))));
    const file = path.resolve(this.root, this.options.outputFile ?? this.configuredFile ?? DEFAULT_REPORT_FILE);
    const page = renderReport({ title: this.options.title ?? 'maillab report', generatedAt: new Date(), scenarios }, readFileSync(mermaidBundlePath(), 'utf8'));
    mkdirSync(path.dirname(file), { recursive: true });
    writeFileSync(file, page);
    this.outputPath = file;
    process.stdout.write(`maillab report written to ${path.relative(process.cwd(), file) || file}\n`);
  }
}

export default MaillabReporter;

function scenarioOf(test: TestCase, file: string): ScenarioView {
  const result = test.result();
  const record = (test.meta() as Record<string, unknown>)[RECORD_META_KEY] as LabTestRecord | undefined;
  const errors = (result.errors ?? []).map((e) => stripVTControlCharacters([e.message, e.diff].filter(Boolean).join('\n\n')));
  return {
    file,
    name: test.fullName,
    state: result.state,
    ...(test.diagnostic()?.duration !== undefined ? { durationMs: test.diagnostic()!.duration } : {}),
    errors,
    ...(record ? { record } : {}),
  };
}

/**
 * Mermaid's browser bundle: the copy shipped beside the built reporter (`dist/mermaid.min.js` of the package),
 * else the `mermaid` package's own (a checkout of maillab, where the reporter runs from its sources).
 */
export function mermaidBundlePath(): string {
  const tried: string[] = [];
  let dir = path.dirname(fileURLToPath(import.meta.url));
  for (;;) {
    for (const candidate of [path.join(dir, 'mermaid.min.js'), path.join(dir, 'dist', 'mermaid.min.js')]) {
      if (existsSync(candidate)) return candidate;
      tried.push(candidate);
    }
    if (existsSync(path.join(dir, 'package.json')) || path.dirname(dir) === dir) break;
    dir = path.dirname(dir);
  }
  try {
    return createRequire(import.meta.url).resolve('mermaid/dist/mermaid.min.js');
  } catch (err) {
    throw new Error(`maillab reporter: Mermaid's browser bundle is missing (looked at ${tried.join(', ')}, then the mermaid package: ${(err as Error).message})`);
  }
}
