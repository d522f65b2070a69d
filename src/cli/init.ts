// `maillab init` and `maillab new scenario`: the files a project needs to run maillab scenarios, from templates/
// (real TypeScript files, laid out as in the user's project). Nothing is ever overwritten.
import { existsSync, mkdirSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { packageRoot } from '../harness/runtime/types.js';
import { option } from './args.js';

/** The lab name of the templates, replaced by the user's (`--name`). */
const TEMPLATE_LAB = 'mail';
/** The scenario name of the skeleton, replaced by the user's. */
const TEMPLATE_SCENARIO = 'new-scenario';
const EXAMPLE_SCENARIOS = ['happy-path', 'offline-receiver'];
const NPM_SCRIPT = { name: 'test:mail', command: 'vitest run scenarios' };
const VITEST_CONFIGS = ['vitest.config', 'vite.config'].flatMap((base) => ['ts', 'mts', 'cts', 'js', 'mjs', 'cjs'].map((ext) => `${base}.${ext}`));

/** A lab or scenario name: what fits in a file name, a lab id and a docker resource name. */
const NAME = /^[a-z0-9][a-z0-9-]*$/;

function template(relative: string): string {
  return readFileSync(path.join(packageRoot(), 'templates', relative), 'utf8');
}

/** Replaces every `from` in `text` (which must hold it: a template that lost it would silently keep the old name). */
function replaceAll(text: string, from: string, to: string, file: string): string {
  if (!text.includes(from)) throw new Error(`template ${file} no longer contains ${from}`);
  return text.split(from).join(to);
}

/** A scenario template with its lab import pointing at lab/<lab>.ts. */
function scenarioFor(relative: string, lab: string): string {
  return replaceAll(template(relative), `'../lab/${TEMPLATE_LAB}.js'`, `'../lab/${lab}.js'`, relative);
}

/** The settings the vitest config needs, as lines to paste into an existing config's `test: { ... }`. */
export function vitestSettingsLines(): string {
  const text = template('vitest.config.ts');
  const body = text.slice(text.indexOf('test: {') + 'test: {'.length, text.lastIndexOf('},\n});'));
  return body.replace(/^\n/, '').replace(/\s+$/, '') + '\n';
}

interface PlannedFile {
  relative: string;
  content: string;
}

function writeAll(root: string, files: PlannedFile[]): void {
  for (const file of files) {
    const target = path.join(root, file.relative);
    mkdirSync(path.dirname(target), { recursive: true });
    // 'wx': fails if the file appeared since the check, rather than overwriting it.
    writeFileSync(target, file.content, { flag: 'wx' });
  }
}

/** `maillab init [--name <lab>]` in the current directory. */
export async function init(args: string[]): Promise<number> {
  const root = process.cwd();
  const lab = option(args, '--name') ?? TEMPLATE_LAB;
  if (!NAME.test(lab)) {
    process.stderr.write(`maillab init: --name ${lab}: a lab name is lower-case letters, digits and dashes (it names lab/<name>.ts and the lab's id)\n`);
    return 2;
  }
  let labFile = template(`lab/${TEMPLATE_LAB}.ts`);
  labFile = replaceAll(labFile, `name: '${TEMPLATE_LAB}'`, `name: '${lab}'`, 'lab file');
  labFile = replaceAll(labFile, `lab/${TEMPLATE_LAB}.ts`, `lab/${lab}.ts`, 'lab file');
  labFile = replaceAll(labFile, `\`${TEMPLATE_LAB}-1a2b3c\``, `\`${lab}-1a2b3c\``, 'lab file');
  const files: PlannedFile[] = [
    { relative: `lab/${lab}.ts`, content: labFile },
    ...EXAMPLE_SCENARIOS.map((name) => ({ relative: `scenarios/${name}.test.ts`, content: scenarioFor(`scenarios/${name}.test.ts`, lab) })),
  ];
  const existingConfig = VITEST_CONFIGS.find((f) => existsSync(path.join(root, f)));
  if (!existingConfig) files.push({ relative: 'vitest.config.ts', content: template('vitest.config.ts') });

  const packageFile = path.join(root, 'package.json');
  const packageText = existsSync(packageFile) ? readFileSync(packageFile, 'utf8') : undefined;
  const manifest = packageText === undefined ? undefined : (JSON.parse(packageText) as { scripts?: Record<string, string> });
  const existingScript = manifest?.scripts?.[NPM_SCRIPT.name];

  const conflicts = files.filter((f) => existsSync(path.join(root, f.relative))).map((f) => f.relative);
  if (existingScript !== undefined && existingScript !== NPM_SCRIPT.command) conflicts.push(`package.json scripts.${NPM_SCRIPT.name} ("${existingScript}")`);
  if (conflicts.length) {
    process.stderr.write(`maillab init: not writing anything: ${conflicts.join(', ')} already exist${conflicts.length === 1 ? 's' : ''}; move ${conflicts.length === 1 ? 'it' : 'them'} away or choose another lab name (--name)\n`);
    return 1;
  }

  writeAll(root, files);
  for (const f of files) process.stdout.write(`wrote ${f.relative}\n`);
  if (manifest && existingScript === undefined) {
    manifest.scripts = { ...manifest.scripts, [NPM_SCRIPT.name]: NPM_SCRIPT.command };
    // Keep the file's own indentation (npm writes two spaces) and final newline.
    const indent = /^[ \t]+(?=")/m.exec(packageText!)?.[0] ?? '  ';
    writeFileSync(packageFile, JSON.stringify(manifest, null, indent) + (packageText!.endsWith('\n') ? '\n' : ''));
    process.stdout.write(`added to package.json: "scripts": { "${NPM_SCRIPT.name}": "${NPM_SCRIPT.command}" }\n`);
  } else if (!manifest) {
    process.stdout.write(`no package.json here: add the script yourself once there is one ("${NPM_SCRIPT.name}": "${NPM_SCRIPT.command}")\n`);
  }
  if (existingConfig) {
    process.stdout.write(`\n${existingConfig} exists, so maillab left it alone. Add these settings to its \`test: { ... }\`:\n\n${vitestSettingsLines()}\n`);
  }
  process.stdout.write(`\nNext: npm run ${NPM_SCRIPT.name}   (or npx maillab run; npx maillab up --lab lab/${lab}.ts starts the lab to poke at)\n`);
  return 0;
}

/** `maillab new scenario <name> [--lab <lab>]`: scenarios/<name>.test.ts, a skeleton on the project's lab file. */
export async function newScenario(args: string[]): Promise<number> {
  const [what, name] = args;
  if (what !== 'scenario' || !name || name.startsWith('--')) {
    process.stderr.write('usage: maillab new scenario <name> [--lab <lab>]\n');
    return 2;
  }
  if (!NAME.test(name)) {
    process.stderr.write(`maillab new scenario: ${name}: a scenario name is lower-case letters, digits and dashes (it names scenarios/<name>.test.ts)\n`);
    return 2;
  }
  const root = process.cwd();
  const relative = `scenarios/${name}.test.ts`;
  if (existsSync(path.join(root, relative))) {
    process.stderr.write(`maillab new scenario: ${relative} already exists; not overwriting it\n`);
    return 1;
  }
  // The lab it runs on: --lab, else lab/mail.ts (what init writes), else the project's only lab file, else maillab's default lab.
  const labs = existsSync(path.join(root, 'lab')) ? readdirSync(path.join(root, 'lab')).filter((f) => /^[^.].*\.ts$/.test(f)).map((f) => f.slice(0, -3)) : [];
  const chosen = option(args, '--lab');
  if (chosen !== undefined && !labs.includes(chosen)) {
    process.stderr.write(`maillab new scenario: there is no lab/${chosen}.ts${labs.length ? ` (lab files: ${labs.map((l) => `lab/${l}.ts`).join(', ')})` : ''}\n`);
    return 1;
  }
  const lab = chosen ?? (labs.includes(TEMPLATE_LAB) ? TEMPLATE_LAB : labs.length === 1 ? labs[0] : undefined);
  const skeletonFile = `scenarios/${TEMPLATE_SCENARIO}.test.ts`;
  let content = replaceAll(template(skeletonFile), TEMPLATE_SCENARIO, name, skeletonFile);
  content =
    lab === undefined
      ? replaceAll(content, `import definition from '../lab/${TEMPLATE_LAB}.js';`, `import { defaultLab as definition } from 'maillab';`, skeletonFile)
      : replaceAll(content, `'../lab/${TEMPLATE_LAB}.js'`, `'../lab/${lab}.js'`, skeletonFile);
  writeAll(root, [{ relative, content }]);
  process.stdout.write(`wrote ${relative} (on ${lab === undefined ? "maillab's default lab" : `lab/${lab}.ts`})\nNext: npx maillab run ${name}\n`);
  return 0;
}
