// What the layout promises, checked: no import cycles; the harness reaches the roles only through their
// contracts (src/<role>/api.ts); the control path holds no `any`.
import { readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';

const SRC = path.dirname(fileURLToPath(import.meta.url));
const ROLES = ['dns', 'mta', 'mx', 'mailbox', 'proxy'];

function sourceFiles(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((entry) => {
    const full = path.join(dir, entry.name);
    if (entry.isDirectory()) return sourceFiles(full);
    return entry.name.endsWith('.ts') ? [full] : [];
  });
}

/** Relative imports of a file (static, dynamic, type-only, re-exports), resolved to .ts files. */
function importsOf(file: string): string[] {
  const text = readFileSync(file, 'utf8');
  const specifiers = [...text.matchAll(/(?:from\s+|import\s*\(\s*|import\s+)'(\.{1,2}\/[^']+)'/g)].map((m) => m[1]!);
  return specifiers.map((s) => path.resolve(path.dirname(file), s.replace(/\.js$/, '.ts')));
}

const files = sourceFiles(SRC);
const graph = new Map(files.map((f) => [f, importsOf(f)]));
const rel = (f: string) => path.relative(SRC, f);

describe('architecture', () => {
  it('has no import cycles', () => {
    const cycles: string[] = [];
    const state = new Map<string, 'open' | 'done'>();
    const visit = (file: string, trail: string[]) => {
      if (state.get(file) === 'done') return;
      if (state.get(file) === 'open') {
        cycles.push([...trail.slice(trail.indexOf(file)), file].map(rel).join(' → '));
        return;
      }
      state.set(file, 'open');
      for (const next of graph.get(file) ?? []) if (graph.has(next)) visit(next, [...trail, file]);
      state.set(file, 'done');
    };
    for (const file of files) visit(file, []);
    expect(cycles).toEqual([]);
  });

  it('the harness reaches a role only through its contract (src/<role>/api.ts)', () => {
    const reaches = files
      .filter((f) => rel(f).startsWith('harness/') && !f.endsWith('.test.ts'))
      .flatMap((f) => importsOf(f).map((target) => ({ from: rel(f), to: rel(target) })))
      // Besides the contracts: the mailbox store's interface, and the lab's DNS client (dns/resolver.ts, which the MTA
      // resolves with and lab.resolve asks the lab DNS with; it is a client of the dns role, not part of its server).
      .filter(({ to }) => ROLES.includes(to.split('/')[0]!) && !/^[a-z]+\/api\.ts$/.test(to) && to !== 'mailbox/store-api.ts' && to !== 'dns/resolver.ts');
    expect(reaches).toEqual([]);
  });

  it('the control path holds no `any`', () => {
    const controlPath = ['shared/contract.ts', 'shared/control.ts', 'shared/node.ts', 'shared/events.ts', 'node-main.ts', 'harness/node-handle.ts', 'harness/lab.ts', 'harness/events.ts', ...ROLES.map((r) => `${r}/api.ts`), ...ROLES.map((r) => `${r}/index.ts`)];
    const offenders = controlPath.flatMap((file) =>
      readFileSync(path.join(SRC, file), 'utf8')
        .split('\n')
        .map((line, i) => ({ file, line: i + 1, text: line.replace(/\/\/.*$|\/\*.*?\*\//g, '') }))
        .filter(({ text }) => /(:|<|\bas)\s*any\b|\bany\[\]|<any>/.test(text))
        .map(({ file, line }) => `${file}:${line}`),
    );
    expect(offenders).toEqual([]);
  });
});
