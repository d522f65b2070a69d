// A vitest reporter for `maillab run`: one line per scenario as it finishes, then a summary.
import type { Reporter, TestCase, TestModule } from 'vitest/node';

export class ScenarioReporter implements Reporter {
  private passed = 0;
  private failed = 0;
  private skipped = 0;
  private readonly failures: string[] = [];
  private readonly started = Date.now();

  onTestCaseResult(test: TestCase): void {
    const result = test.result();
    const ms = Math.round(test.diagnostic()?.duration ?? 0);
    // The scenarios run once per project (vitest.config.ts): the default lab's is unnamed, a real-server lab's is named.
    const project = test.project.name && test.project.name !== 'default' ? `[${test.project.name}] ` : '';
    const name = `${project}${test.module.moduleId.split('/').pop()} › ${test.fullName}`;
    if (result.state === 'passed') {
      this.passed++;
      process.stdout.write(`  ✓ ${name} (${ms} ms)\n`);
    } else if (result.state === 'failed') {
      this.failed++;
      process.stdout.write(`  ✗ ${name} (${ms} ms)\n`);
      for (const error of result.errors ?? []) this.failures.push(`${name}\n${error.message}`);
    } else {
      this.skipped++;
      process.stdout.write(`  - ${name} (skipped${'note' in result && result.note ? `: ${result.note}` : ''})\n`);
    }
  }

  onTestRunEnd(modules: readonly TestModule[], errors: readonly unknown[]): void {
    for (const m of modules) for (const e of m.errors()) this.failures.push(`${m.moduleId}\n${e.message}`);
    for (const e of errors) this.failures.push(String((e as Error)?.message ?? e));
    if (this.failures.length) process.stdout.write(`\nFailures:\n\n${this.failures.join('\n\n')}\n`);
    const seconds = ((Date.now() - this.started) / 1000).toFixed(1);
    process.stdout.write(`\n${this.passed} passed, ${this.failed} failed, ${this.skipped} skipped in ${seconds} s\n`);
  }
}
