// A vitest reporter for `maillab run`: one line per scenario test as it finishes, a progress line while the run goes
// on, then a summary.
import type { Reporter, TestCase, TestModule, TestSpecification } from 'vitest/node';

interface ReporterStreams {
  out: NodeJS.WritableStream;
  /** Where the progress goes: on a terminal (`isTTY`), one line rewritten in place; otherwise a line per scenario file. */
  progress: NodeJS.WritableStream & { isTTY?: boolean };
}

export class ScenarioReporter implements Reporter {
  private passed = 0;
  private failed = 0;
  private skipped = 0;
  private readonly failures: string[] = [];
  private readonly started = Date.now();
  /** Scenario files (one per project they run in) in this run, finished, and running now. */
  private total = 0;
  private done = 0;
  private readonly running = new Set<TestModule>();
  private progressShown = false;

  constructor(private readonly streams: ReporterStreams = { out: process.stdout, progress: process.stderr }) {}

  private get live(): boolean {
    return this.streams.progress.isTTY === true;
  }

  onTestRunStart(specifications: ReadonlyArray<TestSpecification>): void {
    this.total = specifications.length;
  }

  onTestModuleStart(module: TestModule): void {
    this.running.add(module);
    if (this.live) this.drawProgress();
    else this.streams.progress.write(`[${this.done}/${this.total}] running ${nameOf(module)}\n`);
  }

  onTestModuleEnd(module: TestModule): void {
    this.running.delete(module);
    this.done++;
    if (this.live) this.drawProgress();
  }

  onTestCaseResult(test: TestCase): void {
    const result = test.result();
    const ms = Math.round(test.diagnostic()?.duration ?? 0);
    const name = `${nameOf(test.module)} › ${test.fullName}`;
    if (result.state === 'passed') {
      this.passed++;
      this.line(`  ✓ ${name} (${ms} ms)`);
    } else if (result.state === 'failed') {
      this.failed++;
      this.line(`  ✗ ${name} (${ms} ms)`);
      for (const error of result.errors ?? []) this.failures.push(`${name}\n${error.message}`);
    } else {
      this.skipped++;
      this.line(`  - ${name} (skipped${'note' in result && result.note ? `: ${result.note}` : ''})`);
    }
  }

  onTestRunEnd(modules: readonly TestModule[], errors: readonly unknown[]): void {
    this.clearProgress();
    for (const m of modules) for (const e of m.errors()) this.failures.push(`${m.moduleId}\n${e.message}`);
    for (const e of errors) this.failures.push(String((e as Error)?.message ?? e));
    if (this.failures.length) this.streams.out.write(`\nFailures:\n\n${this.failures.join('\n\n')}\n`);
    const seconds = ((Date.now() - this.started) / 1000).toFixed(1);
    this.streams.out.write(`\n${this.passed} passed, ${this.failed} failed, ${this.skipped} skipped in ${seconds} s\n`);
  }

  /** A result line; the progress line (on a terminal) is taken away first and drawn again below it. */
  private line(text: string): void {
    this.clearProgress();
    this.streams.out.write(text + '\n');
    if (this.live && this.running.size) this.drawProgress();
  }

  private drawProgress(): void {
    const names = [...this.running].map(nameOf);
    const text = `[${this.done}/${this.total}] ${names.length ? `running ${names.join(', ')}…` : this.done === this.total ? 'finishing…' : 'starting…'}`;
    // A terminal that does not say its width (0, as under `script`) gets 120 columns.
    const width = (this.streams.progress as { columns?: number }).columns || 120;
    this.streams.progress.write(`\r\x1b[2K${text.length > width - 1 ? text.slice(0, width - 2) + '…' : text}`);
    this.progressShown = true;
  }

  private clearProgress(): void {
    if (!this.progressShown) return;
    this.streams.progress.write('\r\x1b[2K');
    this.progressShown = false;
  }
}

/** A scenario file's name, with the project it runs in when that is not the default one (a lab with real servers). */
function nameOf(module: TestModule): string {
  const project = module.project.name && module.project.name !== 'default' ? `[${module.project.name}] ` : '';
  return `${project}${module.moduleId.split('/').pop()}`;
}
