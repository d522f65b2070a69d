// Scenario 50: a new user's repository (issue 16). maillab is packed as npm would publish it, installed into a fresh
// project, `maillab init` writes a lab and two scenarios, and the user's own `npx vitest run` passes on this runtime
// (MAILLAB_RUNTIME is inherited: the docker pass builds its node image from the installed package). The user's
// TypeScript, at its strictest, compiles against the shipped declarations.
import { execFile, type ExecFileOptions } from 'node:child_process';
import { mkdtemp, readFile, readdir, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { packageRoot } from '../src/harness/runtime/types.js';

const exec = promisify(execFile);
const root = packageRoot();
const manifest = JSON.parse(await readFile(path.join(root, 'package.json'), 'utf8')) as { version: string; devDependencies: Record<string, string> };
const installedVitest = (JSON.parse(await readFile(path.join(root, 'node_modules', 'vitest', 'package.json'), 'utf8')) as { version: string }).version;
const NPM = process.platform === 'win32' ? 'npm.cmd' : 'npm';

let work: string;
let project: string;
let tarball: string;
let installed: { stdout: string; stderr: string };

/** Runs a command in the user's project; a failure names the command and shows its output. */
async function inProject(file: string, args: string[], options: ExecFileOptions = {}): Promise<{ stdout: string; stderr: string }> {
  try {
    // No colours: the output is read as text.
    const env = { ...process.env, NO_COLOR: '1', FORCE_COLOR: '0', ...options.env };
    const { stdout, stderr } = await exec(file, args, { cwd: project, maxBuffer: 64 << 20, encoding: 'utf8', ...options, env });
    return { stdout: String(stdout), stderr: String(stderr) };
  } catch (err) {
    const e = err as { code?: number; stdout?: string; stderr?: string; message: string };
    throw new Error(`in the user's project ${project}: ${file} ${args.join(' ')} exited ${e.code ?? '?'}\n--- stdout\n${e.stdout ?? ''}\n--- stderr\n${e.stderr ?? e.message}`);
  }
}

beforeAll(async () => {
  work = await mkdtemp(path.join(os.tmpdir(), 'maillab-user-'));
  project = path.join(work, 'ourmail');
  // --ignore-scripts: the tests running beside this one use dist/ (built by the global setup); `prepare` would
  // rebuild it under them.
  const packed = await exec(NPM, ['pack', '--ignore-scripts', '--json', '--pack-destination', work], { cwd: root, maxBuffer: 16 << 20 });
  const [info] = JSON.parse(packed.stdout) as { filename: string; size: number; unpackedSize: number; entryCount: number; files: { path: string }[] }[];
  tarball = path.join(work, info!.filename);
  process.stdout.write(`maillab ${manifest.version}: package ${(info!.size / 1e6).toFixed(2)} MB, unpacked ${(info!.unpackedSize / 1e6).toFixed(2)} MB, ${info!.entryCount} files\n`);
  // Only what a user needs: no sources, tests or repository tooling.
  const files = info!.files.map((f) => f.path);
  expect(files.filter((f) => !f.startsWith('templates/') && /^(src|scenarios|lab|bench|examples|scripts)\/|\.test\.|^build\.mjs$/.test(f))).toEqual([]);
  expect(files).toEqual(expect.arrayContaining(['dist/index.js', 'dist/vitest.js', 'dist/node.js', 'dist/types/src/index.d.ts', 'dist/mermaid.min.js', 'bin/maillab.mjs', 'CHANGELOG.md']));

  await exec('mkdir', ['-p', project]);
  await inProject(NPM, ['init', '-y']);
  // As a user would: maillab, the vitest it supports, and the TypeScript types of Node. The npm cache (filled by
  // this repository's own install) serves the same versions.
  installed = await inProject(NPM, ['install', '--save-dev', '--no-audit', '--no-fund', '--prefer-offline', tarball, `vitest@${installedVitest}`, `@types/node@${manifest.devDependencies['@types/node']}`], { timeout: 240_000 });
}, 300_000);

afterAll(async () => {
  if (work) await rm(work, { recursive: true, force: true });
});

describe('maillab in a new repository', () => {
  it('installs without engine warnings for this Node, and `maillab init` writes a lab, two scenarios, a config and a script', async () => {
    // npm warns EBADENGINE for any package whose engines exclude this Node (dns2 did, before it was bundled in).
    expect(installed.stderr).not.toMatch(/EBADENGINE/);
    const ls = await inProject(NPM, ['ls', '--all', '--json']);
    expect(JSON.parse(ls.stdout).problems ?? []).toEqual([]);
    const init = await inProject('npx', ['maillab', 'init']);
    expect(init.stdout).toMatch(/lab\/mail\.ts/);
    const written = (await readdir(project, { recursive: true })).filter((f) => !f.startsWith('node_modules'));
    expect(written).toEqual(expect.arrayContaining(['lab/mail.ts', 'vitest.config.ts', path.join('scenarios', 'happy-path.test.ts'), path.join('scenarios', 'offline-receiver.test.ts')]));
    const pkg = JSON.parse(await readFile(path.join(project, 'package.json'), 'utf8')) as { scripts: Record<string, string> };
    expect(Object.values(pkg.scripts).join(' ')).toMatch(/vitest/);
    // It refuses to overwrite what it wrote.
    await expect(inProject('npx', ['maillab', 'init'])).rejects.toThrow(/exited 1[\s\S]*lab\/mail\.ts.*already exist/);
  }, 120_000);

  it("the user's `npx vitest run` passes on this runtime, and `maillab run` runs the user's scenarios", async () => {
    const run = await inProject('npx', ['vitest', 'run'], { timeout: 300_000 });
    expect(run.stdout).toMatch(/Tests\s+.*\b\d+ passed/);
    expect(run.stdout).not.toMatch(/\bfailed\b/);
    // The config init wrote lists maillab's reporter: the report names the lab and the runtime it really ran on.
    const report = await readFile(path.join(project, 'maillab-report', 'index.html'), 'utf8');
    const runtime = process.env.MAILLAB_RUNTIME;
    expect(report).toMatch(new RegExp(`lab <b>mail</b> on ${runtime === 'docker' || runtime === 'local' ? runtime : '(local|docker)'}`));
    expect(report).toContain('<script');
    const only = await inProject('npx', ['maillab', 'run', 'happy'], { timeout: 300_000 });
    expect(only.stdout).toMatch(/happy-path/);
    expect(only.stdout).not.toMatch(/offline-receiver/);
    await expect(inProject('npx', ['maillab', 'run', 'no-such-scenario'])).rejects.toThrow(/exited 1/);
  }, 600_000);

  it("the lab file imports 'maillab' and loads from the user's project: `maillab check --lab lab/mail.ts`", async () => {
    const check = await inProject('npx', ['maillab', 'check', '--lab', 'lab/mail.ts']);
    expect(check.stdout).toMatch(/0 error\(s\)/);
  }, 120_000);

  it('type-checks at the strictest settings (exactOptionalPropertyTypes, no skipLibCheck) against the shipped declarations', async () => {
    await writeFile(
      path.join(project, 'tsconfig.json'),
      JSON.stringify({
        compilerOptions: { target: 'ES2022', module: 'NodeNext', moduleResolution: 'NodeNext', strict: true, exactOptionalPropertyTypes: true, noUncheckedIndexedAccess: true, skipLibCheck: false, noEmit: true, types: ['node'] },
        include: ['lab', 'scenarios', 'vitest.config.ts'],
      }),
    );
    await inProject(process.execPath, [path.join(root, 'node_modules', 'typescript', 'bin', 'tsc'), '-p', 'tsconfig.json']);
  }, 120_000);
});
