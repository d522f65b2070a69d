// The suite record: vitest's JSON counts read, the lines printed, and the section of a full run with and without a
// record.
import { promises as fs } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { countsOf, lastSuiteSection, suiteLines, type SuiteRecord } from './suite.js';

const record: SuiteRecord = {
  date: '2026-11-30T13:00:00.000Z',
  node: 'v20.20.2',
  cores: 2,
  runs: [
    { runtime: 'local', command: 'MAILLAB_RUNTIME=local npx vitest run', seconds: 338.4, exitCode: 0, passed: 1653, failed: 0, skipped: 7, files: 201 },
    { runtime: 'docker', command: 'MAILLAB_RUNTIME=docker npx vitest run scenarios', seconds: 423.2, exitCode: 1, passed: 170, failed: 2, skipped: 9, files: 60 },
  ],
};

describe('the scenario suite record', () => {
  it("reads vitest's JSON counts, todo tests as skipped, and nothing from what is not a report", () => {
    expect(countsOf({ numPassedTests: 5, numFailedTests: 1, numPendingTests: 2, numTodoTests: 1, testResults: [{}, {}] })).toEqual({ passed: 5, failed: 1, skipped: 3, files: 2 });
    expect(countsOf(undefined)).toEqual({});
    expect(countsOf({ numPassedTests: 'x' })).toEqual({});
  });

  it('prints each run with its time and counts, a failed run in bold', () => {
    expect(suiteLines(record)).toEqual([
      '- `MAILLAB_RUNTIME=local npx vitest run`: 338 s: 1653 passed, 0 failed, 7 skipped in 201 files',
      '- `MAILLAB_RUNTIME=docker npx vitest run scenarios`: 423 s: 170 passed, 2 failed, 9 skipped in 60 files (**exit code 1**)',
    ]);
  });

  it('gives a full run the last record with its date, or says how to make one', async () => {
    const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'maillab-suite-'));
    try {
      const file = path.join(dir, 'latest-suite.json');
      expect((await lastSuiteSection(file)).join('\n')).toMatch(/No record yet: `BENCH_ONLY=suite npm run bench`/);
      await fs.writeFile(file, JSON.stringify(record));
      const section = await lastSuiteSection(file);
      expect(section[0]).toBe('## Scenario suite wall time (for the record)');
      expect(section.join('\n')).toContain('Recorded 2026-11-30T13:00:00.000Z (Node v20.20.2, 2 cores)');
      expect(section.join('\n')).toContain('338 s: 1653 passed');
    } finally {
      await fs.rm(dir, { recursive: true, force: true });
    }
  });
});
