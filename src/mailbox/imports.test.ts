// The mailbox modules form no import cycle (type-only imports included): a cycle makes module order matter,
// and it is how ImapError once tied commands.ts and session.ts together.
import { promises as fs } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, test } from 'vitest';

const ROOT = path.dirname(fileURLToPath(import.meta.url));
/** `import … from './x.js'`, `export … from '../y.js'` and `import('./z.js')`: the relative specifiers. */
const SPECIFIER = /(?:\bfrom\s*|\bimport\s*\(?\s*)['"](\.{1,2}\/[^'"]+)['"]/g;

async function sources(dir: string): Promise<string[]> {
  const out: string[] = [];
  for (const dirent of await fs.readdir(dir, { withFileTypes: true })) {
    const full = path.join(dir, dirent.name);
    if (dirent.isDirectory()) out.push(...(await sources(full)));
    else if (dirent.name.endsWith('.ts')) out.push(full);
  }
  return out;
}

/** The import graph of the .ts files under `dir`, restricted to files under `dir`. */
async function importGraph(dir: string): Promise<Map<string, string[]>> {
  const files = await sources(dir);
  const graph = new Map<string, string[]>();
  for (const file of files) {
    const text = await fs.readFile(file, 'utf8');
    const targets = [...text.matchAll(SPECIFIER)].map((m) => path.resolve(path.dirname(file), m[1]!).replace(/\.js$/, '.ts'));
    graph.set(file, targets.filter((t) => files.includes(t)));
  }
  return graph;
}

/** Every cycle found by a depth-first walk, each as the list of files on it. */
function cycles(graph: Map<string, string[]>): string[][] {
  const found: string[][] = [];
  const state = new Map<string, 'open' | 'done'>();
  const stack: string[] = [];
  const visit = (node: string) => {
    state.set(node, 'open');
    stack.push(node);
    for (const next of graph.get(node) ?? []) {
      if (state.get(next) === 'open') found.push(stack.slice(stack.indexOf(next)));
      else if (!state.has(next)) visit(next);
    }
    stack.pop();
    state.set(node, 'done');
  };
  for (const node of graph.keys()) if (!state.has(node)) visit(node);
  return found;
}

describe('import graph of src/mailbox', () => {
  test('the cycle finder finds a cycle', () => {
    const graph = new Map([['a', ['b']], ['b', ['c']], ['c', ['a']], ['d', ['a']]]);
    expect(cycles(graph)).toEqual([['a', 'b', 'c']]);
    expect(cycles(new Map([['a', ['b']], ['b', []]]))).toEqual([]);
  });

  test('has no cycle', async () => {
    const graph = await importGraph(ROOT);
    expect(graph.get(path.join(ROOT, 'store.ts'))).toContain(path.join(ROOT, 'store-api.ts'));
    const rel = (c: string[]) => c.map((f) => path.relative(ROOT, f)).join(' → ');
    expect(cycles(graph).map(rel)).toEqual([]);
  });
});
