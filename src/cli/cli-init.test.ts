// `maillab init` and `maillab new scenario` in a user's project (a temp folder): what they write, that they never
// overwrite anything, the npm script beside the user's own, and the lines to add to a vitest config that exists.
import { promises as fs } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import defaultLab from '../../lab/default.js';
import { packageRoot } from '../harness/runtime/types.js';
import type { LabDefinition } from '../harness/topology.js';
import { runCli } from './cli.test-helper.js';

const templates = path.join(packageRoot(), 'templates');

let project: string;

beforeEach(async () => {
  project = await fs.mkdtemp(path.join(os.tmpdir(), 'maillab-init-'));
});
afterEach(async () => {
  await fs.rm(project, { recursive: true, force: true });
});

const cli = (args: string[]) => runCli(args, { cwd: project });

const read = (relative: string) => fs.readFile(path.join(project, relative), 'utf8');
const write = async (relative: string, text: string) => {
  await fs.mkdir(path.dirname(path.join(project, relative)), { recursive: true });
  await fs.writeFile(path.join(project, relative), text);
};
/** Every file of the project, relative, sorted. */
async function files(): Promise<string[]> {
  const entries = await fs.readdir(project, { withFileTypes: true, recursive: true });
  return entries.filter((e) => e.isFile()).map((e) => path.relative(project, path.join(e.parentPath, e.name))).sort();
}

const PACKAGE_JSON = JSON.stringify({ name: 'shop', version: '1.0.0', scripts: { test: 'vitest run', lint: 'eslint .' } }, null, 2) + '\n';

describe('maillab init', () => {
  it('writes the lab file, two scenarios, a vitest config and the npm script, and says what to run next', async () => {
    await write('package.json', PACKAGE_JSON);
    const { code, stdout, stderr } = await cli(['init']);
    expect(code, stderr).toBe(0);
    expect(await files()).toEqual(['lab/mail.ts', 'package.json', 'scenarios/happy-path.test.ts', 'scenarios/offline-receiver.test.ts', 'vitest.config.ts']);
    expect(stdout).toBe(
      [
        'wrote lab/mail.ts',
        'wrote scenarios/happy-path.test.ts',
        'wrote scenarios/offline-receiver.test.ts',
        'wrote vitest.config.ts',
        'added to package.json: "scripts": { "test:mail": "vitest run scenarios" }',
        '',
        'Next: npm run test:mail   (or npx maillab run; npx maillab up --lab lab/mail.ts starts the lab to poke at)',
        '',
      ].join('\n'),
    );
    // The user's scripts stay, in their order, with npm's formatting.
    expect(await read('package.json')).toBe(JSON.stringify({ name: 'shop', version: '1.0.0', scripts: { test: 'vitest run', lint: 'eslint .', 'test:mail': 'vitest run scenarios' } }, null, 2) + '\n');
    expect(await read('lab/mail.ts')).toBe(await fs.readFile(path.join(templates, 'lab/mail.ts'), 'utf8'));
    expect(await read('vitest.config.ts')).toBe(await fs.readFile(path.join(templates, 'vitest.config.ts'), 'utf8'));
    for (const scenario of ['happy-path', 'offline-receiver']) {
      const text = await read(`scenarios/${scenario}.test.ts`);
      expect(text).toContain("import { useLab } from 'maillab/vitest';");
      expect(text).toContain("import definition from '../lab/mail.js';");
      expect(text).toContain('useLab(undefined, { definition })');
    }
  });

  it('refuses to overwrite: a second init writes nothing and names every file in the way', async () => {
    await write('package.json', PACKAGE_JSON);
    expect((await cli(['init'])).code).toBe(0);
    await write('scenarios/happy-path.test.ts', '// the user changed it\n');
    const before = await Promise.all((await files()).map((f) => read(f)));
    const { code, stdout, stderr } = await cli(['init']);
    expect(code).toBe(1);
    expect(stdout).toBe('');
    expect(stderr).toBe('maillab init: not writing anything: lab/mail.ts, scenarios/happy-path.test.ts, scenarios/offline-receiver.test.ts already exist; move them away or choose another lab name (--name)\n');
    expect(await Promise.all((await files()).map((f) => read(f)))).toEqual(before);
  });

  it('with one file in the way, writes none of the others', async () => {
    await write('scenarios/offline-receiver.test.ts', '// mine\n');
    const { code, stderr } = await cli(['init', '--name', 'shop']);
    expect(code).toBe(1);
    expect(stderr).toMatch(/^maillab init: not writing anything: scenarios\/offline-receiver\.test\.ts already exists; move it away/);
    expect(await files()).toEqual(['scenarios/offline-receiver.test.ts']);
  });

  it('a test:mail script of the user is in the way too', async () => {
    await write('package.json', JSON.stringify({ name: 'shop', scripts: { 'test:mail': 'jest mail' } }));
    const { code, stderr } = await cli(['init']);
    expect(code).toBe(1);
    expect(stderr).toContain('package.json scripts.test:mail ("jest mail") already exists');
    expect(await files()).toEqual(['package.json']);
  });

  it('--name names the lab file, the lab and the scenarios\' import', async () => {
    await write('package.json', PACKAGE_JSON);
    expect((await cli(['init', '--name', 'shop'])).code).toBe(0);
    const lab = await read('lab/shop.ts');
    expect(lab).toContain("  name: 'shop',");
    expect(lab).toContain('npx maillab up --lab lab/shop.ts');
    expect(lab).not.toMatch(/\bmail\.ts\b|name: 'mail'/);
    expect(await read('scenarios/happy-path.test.ts')).toContain("import definition from '../lab/shop.js';");
    expect((await cli(['init', '--name', 'Shop Lab'])).code).toBe(2);
  });

  it('leaves an existing vitest or vite config alone and prints the settings to add to it', async () => {
    await write('package.json', PACKAGE_JSON);
    await write('vite.config.mjs', 'export default {};\n');
    const { code, stdout } = await cli(['init']);
    expect(code).toBe(0);
    expect(await read('vite.config.mjs')).toBe('export default {};\n');
    expect(await files()).not.toContain('vitest.config.ts');
    const settings = stdout.slice(stdout.indexOf('vite.config.mjs exists'));
    expect(settings).toMatch(/^vite\.config\.mjs exists, so maillab left it alone\. Add these settings to its `test: \{ \.\.\. \}`:$/m);
    for (const line of ['    testTimeout: 60_000,', '    hookTimeout: 120_000,', "    pool: 'forks',", "    setupFiles: ['maillab/vitest/setup'],", "    reporters: ['default', 'maillab/reporter'],"]) {
      expect(settings.split('\n')).toContain(line);
    }
  });

  it('without a package.json, says where the script would go', async () => {
    const { code, stdout } = await cli(['init']);
    expect(code).toBe(0);
    expect(stdout).toContain('no package.json here: add the script yourself once there is one ("test:mail": "vitest run scenarios")');
  });
});

describe('maillab new scenario', () => {
  it('writes a skeleton on the project\'s lab file, and refuses to overwrite it', async () => {
    await write('lab/mail.ts', '// the lab\n');
    const { code, stdout } = await cli(['new', 'scenario', 'bounce-check']);
    expect(code).toBe(0);
    expect(stdout).toBe('wrote scenarios/bounce-check.test.ts (on lab/mail.ts)\nNext: npx maillab run bounce-check\n');
    const text = await read('scenarios/bounce-check.test.ts');
    expect(text).toContain("describe('bounce-check', () => {");
    expect(text).toContain("import definition from '../lab/mail.js';");
    expect(text).not.toContain('new-scenario');

    const again = await cli(['new', 'scenario', 'bounce-check']);
    expect(again.code).toBe(1);
    expect(again.stderr).toBe('maillab new scenario: scenarios/bounce-check.test.ts already exists; not overwriting it\n');
    expect(await read('scenarios/bounce-check.test.ts')).toBe(text);
  });

  it('takes --lab, the only lab file, or else maillab\'s default lab', async () => {
    expect((await cli(['new', 'scenario', 'plain'])).code).toBe(0);
    expect(await read('scenarios/plain.test.ts')).toContain("import { defaultLab as definition } from 'maillab';");
    await write('lab/shop.ts', '// a lab\n');
    expect((await cli(['new', 'scenario', 'only-lab'])).code).toBe(0);
    expect(await read('scenarios/only-lab.test.ts')).toContain("import definition from '../lab/shop.js';");
    await write('lab/edge.ts', '// another\n');
    expect((await cli(['new', 'scenario', 'on-edge', '--lab', 'edge'])).code).toBe(0);
    expect(await read('scenarios/on-edge.test.ts')).toContain("import definition from '../lab/edge.js';");
    const missing = await cli(['new', 'scenario', 'x', '--lab', 'nope']);
    expect(missing.code).toBe(1);
    expect(missing.stderr).toBe('maillab new scenario: there is no lab/nope.ts (lab files: lab/edge.ts, lab/shop.ts)\n');
    expect((await cli(['new', 'scenario'])).code).toBe(2);
    expect((await cli(['new', 'scenario', 'Bad Name'])).code).toBe(2);
  });
});

describe('the templates', () => {
  it("the lab file init writes is maillab's default lab, under its own name", async () => {
    // The template imports 'maillab', as it does in a user's project; here it is this package's own entry.
    const text = (await fs.readFile(path.join(templates, 'lab/mail.ts'), 'utf8')).replace("from 'maillab'", `from ${JSON.stringify(path.join(packageRoot(), 'src/index.ts'))}`);
    expect(text).toContain(path.join(packageRoot(), 'src/index.ts'));
    const file = path.join(project, 'mail.ts');
    await fs.writeFile(file, text);
    const lab = ((await import(file)) as { default: LabDefinition }).default;
    expect({ ...lab, name: defaultLab.name }).toEqual(defaultLab);
    expect(lab.name).toBe('mail');
  });
});
