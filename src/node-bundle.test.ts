// The node bundle (dist/node.js and its chunks, built by build.mjs before the tests) leaves mailauth's BIMI check
// out: the MX runs with disableBimi, and BIMI's dependencies (undici, @postalsys/vmc) were a third of its start-up.
// The MX's authentication itself is exercised through the bundle by scenarios 28 and 29.
import { promises as fs } from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { packageRoot } from './harness/runtime/types.js';

const chunks = path.join(packageRoot(), 'dist', 'node-chunks');

describe('the node bundle', () => {
  it("holds no BIMI code (undici's errors, for one), and what stands for it throws, naming why", async () => {
    const files = (await fs.readdir(chunks)).filter((f) => f.endsWith('.js'));
    expect(files.length).toBeGreaterThan(0);
    const texts = await Promise.all(files.map((f) => fs.readFile(path.join(chunks, f), 'utf8')));
    expect(files.filter((_, i) => texts[i]!.includes('UND_ERR_'))).toEqual([]);
    const standIn = files.filter((_, i) => texts[i]!.includes('BIMI is left out of the maillab node bundle'));
    expect(standIn).toHaveLength(1);
    expect(standIn[0]).toMatch(/^mx-/);
  });
});
