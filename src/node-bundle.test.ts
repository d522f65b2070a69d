// The node bundle (dist/node.js and its chunks, built by build.mjs before the tests):
// - leaves mailauth's BIMI check out: the MX runs with disableBimi, and BIMI's dependencies (undici, @postalsys/vmc)
//   were a third of its start-up;
// - loads mailauth itself (with joi, tldts, libmime, iconv-lite: the largest chunk) only when the MX authenticates its
//   first message, not at start (src/shared/lazy-module.ts; issue 17); the MTA signs with its own code and never loads it.
// The MX's authentication and the MTA's signing are exercised through the bundle by scenarios 28 to 30.
import { promises as fs } from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { packageRoot } from './harness/runtime/types.js';

const chunks = path.join(packageRoot(), 'dist', 'node-chunks');

async function bundle(): Promise<Map<string, string>> {
  const files = (await fs.readdir(chunks)).filter((f) => f.endsWith('.js'));
  return new Map(await Promise.all(files.map(async (f) => [f, await fs.readFile(path.join(chunks, f), 'utf8')] as const)));
}

/** The chunks a chunk loads before it runs: its static imports, and theirs (dynamic `import()` left out). */
function loadedAtStart(texts: Map<string, string>, entry: string): Set<string> {
  const seen = new Set<string>();
  const visit = (file: string) => {
    if (seen.has(file)) return;
    seen.add(file);
    for (const [, dep] of (texts.get(file) ?? '').matchAll(/(?:^|[;\s}])import\s*(?:[^'"()]*?from\s*)?["']\.\/([^"']+)["']/g)) visit(dep!);
  };
  visit(entry);
  return seen;
}

describe('the node bundle', () => {
  it("holds no BIMI code (undici's errors, for one), and what stands for it throws, naming why", async () => {
    const texts = await bundle();
    expect(texts.size).toBeGreaterThan(0);
    expect([...texts].filter(([, text]) => text.includes('UND_ERR_')).map(([f]) => f)).toEqual([]);
    const standIn = [...texts].filter(([, text]) => text.includes('BIMI is left out of the maillab node bundle')).map(([f]) => f);
    expect(standIn).toHaveLength(1);
    expect(standIn[0]).toMatch(/^mailauth-/);
  });

  it('starts the MX without loading mailauth (its chunk is only imported dynamically), and the MTA never loads it', async () => {
    const texts = await bundle();
    // A message of mailauth's DKIM code (lib/tools.js), in the chunk its verifier and the rest of it share.
    const holding = [...texts].filter(([, text]) => text.includes('Unknown hashing algorithm')).map(([f]) => f);
    expect(holding).toHaveLength(1);
    const entryOf = (role: string) => {
      const entry = [...texts.keys()].find((f) => f.startsWith(`${role}-`) && !f.startsWith('mta-node'));
      expect(entry, `no ${role}-*.js chunk in ${chunks}`).toBeDefined();
      return entry!;
    };
    const mx = loadedAtStart(texts, entryOf('mx'));
    expect(mx.size).toBeGreaterThan(1);
    expect([...mx].filter((f) => holding.includes(f)), 'the MX loads mailauth at start').toEqual([]);
    expect([...mx].some((f) => /import\(["']\.\/mailauth-/.test(texts.get(f) ?? '')), 'the MX never imports mailauth').toBe(true);
    // The MTA signs with src/mta/dkim-sign.ts: nothing of mailauth's DKIM code is in what it loads, now or later.
    const mta = loadedAtStart(texts, entryOf('mta'));
    expect([...mta].filter((f) => holding.includes(f) || /import\(["']\.\/(mailauth|sign)-/.test(texts.get(f) ?? ''))).toEqual([]);
  });
});
