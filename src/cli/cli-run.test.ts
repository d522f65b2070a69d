// `maillab run` in a user's project (a temp folder with vitest installed): it runs that project's scenarios (not
// maillab's), filtered by file name, with a line per test, a progress line per scenario file and a summary; exits 1
// on a failure or when nothing matches; keeps the config's reporters that write files (JUnit here).
import { spawn } from 'node:child_process';
import { existsSync, promises as fs } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { packageRoot } from '../harness/runtime/types.js';
import { bin, runCli } from './cli.test-helper.js';


let project: string;

async function write(relative: string, text: string) {
  await fs.mkdir(path.dirname(path.join(project, relative)), { recursive: true });
  await fs.writeFile(path.join(project, relative), text);
}

beforeAll(async () => {
  project = await fs.mkdtemp(path.join(os.tmpdir(), 'maillab-run-'));
  await write('package.json', JSON.stringify({ name: 'shop', type: 'module' }));
  // The project's own vitest: the one installed beside maillab here.
  await fs.mkdir(path.join(project, 'node_modules'));
  await fs.symlink(path.join(packageRoot(), 'node_modules', 'vitest'), path.join(project, 'node_modules', 'vitest'), 'dir');
  await write('scenarios/alpha-delivery.test.ts', "import { expect, it } from 'vitest';\nit('delivers', () => expect(1 + 1).toBe(2));\nit('delivers again', () => expect(2 + 2).toBe(4));\n");
  await write('scenarios/beta-bounce.test.ts', "import { expect, it } from 'vitest';\nit('bounces', () => expect('bounced').toBe('delivered'));\n");
  // Not a scenario: a unit test of the project, outside scenarios/.
  await write('src/unit.test.ts', "import { it } from 'vitest';\nit('is a unit test', () => { throw new Error('maillab run ran a test outside scenarios/'); });\n");
});
afterAll(async () => {
  await fs.rm(project, { recursive: true, force: true });
});

const run = (args: string[], cwd = project) => runCli(['run', ...args], { cwd });

describe('maillab run in a user project', () => {
  it('runs the matching scenarios of the project: a line per test, a progress line, the summary', async () => {
    const { code, stdout, stderr } = await run(['alpha']);
    expect(code, stdout + stderr).toBe(0);
    expect(stdout).toMatch(/^ {2}✓ alpha-delivery\.test\.ts › delivers \(\d+ ms\)$/m);
    expect(stdout).toMatch(/^ {2}✓ alpha-delivery\.test\.ts › delivers again \(\d+ ms\)$/m);
    expect(stdout).toMatch(/^2 passed, 0 failed, 0 skipped in \d+\.\d s$/m);
    expect(stdout).not.toContain('beta-bounce');
    // Not a terminal: one progress line per scenario file, on stderr.
    expect(stderr).toContain('[0/1] running alpha-delivery.test.ts\n');
  });

  it('runs every scenario without a filter (and no test outside scenarios/), and exits 1 on a failure', async () => {
    const { code, stdout, stderr } = await run([], path.join(project, 'src'));
    expect(code).toBe(1);
    expect(stdout).toMatch(/^ {2}✗ beta-bounce\.test\.ts › bounces \(\d+ ms\)$/m);
    expect(stdout).toMatch(/^Failures:\n\nbeta-bounce\.test\.ts › bounces\nexpected 'bounced' to be 'delivered'/m);
    expect(stdout).toMatch(/^2 passed, 1 failed, 0 skipped in /m);
    expect(stdout + stderr).not.toContain('unit');
    expect(stderr.match(/^\[\d\/2\] running (alpha-delivery|beta-bounce)\.test\.ts$/gm)).toHaveLength(2);
  });

  it('exits 1, saying so, when no scenario matches', async () => {
    const { code, stdout, stderr } = await run(['gamma']);
    expect(code).toBe(1);
    expect(stdout).toBe('');
    expect(stderr).toBe('maillab run: no scenario matches gamma in scenarios\n');
  });

  it("keeps the config's reporters that write files, in place of its console ones", async () => {
    await write('vitest.config.ts', "import { defineConfig } from 'vitest/config';\nexport default defineConfig({ test: { reporters: ['default', 'junit'], outputFile: { junit: 'reports/junit.xml' } } });\n");
    try {
      const { code, stdout } = await run(['alpha']);
      expect(code).toBe(0);
      // The default reporter's lines are not there; maillab's are.
      expect(stdout).not.toMatch(/Test Files/);
      expect(stdout).toMatch(/^2 passed, 0 failed/m);
      const junit = await fs.readFile(path.join(project, 'reports/junit.xml'), 'utf8');
      expect(junit).toMatch(/<testcase classname="scenarios\/alpha-delivery\.test\.ts" name="delivers again"/);
    } finally {
      await fs.rm(path.join(project, 'vitest.config.ts'));
    }
  });
});

// A terminal for the CLI: util-linux's `script` runs it on a pseudo-terminal.
const script = ['/usr/bin/script', '/bin/script'].find((f) => existsSync(f));
if (!script) console.log('maillab run on a terminal: not checked, util-linux `script` (which gives the CLI a terminal) is not installed');

describe.skipIf(!script)('maillab run on a terminal', () => {
  it('draws one progress line, rewritten in place and cleared before each result line and at the end', async () => {
    const child = spawn(script!, ['-qec', `${JSON.stringify(process.execPath)} ${JSON.stringify(bin)} run alpha`, '/dev/null'], { cwd: project, stdio: ['ignore', 'pipe', 'pipe'] });
    let output = '';
    child.stdout!.on('data', (d: Buffer) => (output += d.toString()));
    expect(await new Promise((resolve) => child.once('close', resolve))).toBe(0);
    const CLEAR = '\r\x1b[2K';
    expect(output).toContain(`${CLEAR}[0/1] running alpha-delivery.test.ts…`);
    // The result line comes on a cleared line, not after the progress text.
    expect(output).toMatch(/\r\x1b\[2K {2}✓ alpha-delivery\.test\.ts › delivers \(\d+ ms\)\r?\n/);
    expect(output).toContain(`${CLEAR}[1/1] finishing…`);
    // Cleared before the summary: no progress text left on the summary's line.
    expect(output).toMatch(/\r\x1b\[2K\r?\n2 passed, 0 failed, 0 skipped in /);
  });
});
