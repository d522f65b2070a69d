// Loads a lab definition from a user's file: `maillab up --lab`, `MAILLAB_LAB`, and useLab all read lab files.
import { rm } from 'node:fs/promises';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import type { LabDefinition } from './topology.js';

/** Loads a lab definition from a .ts or .js file (its default export), bundling TypeScript with esbuild. */
export async function loadLabFile(file: string): Promise<LabDefinition> {
  const absolute = path.resolve(file);
  let url = pathToFileURL(absolute).href;
  let tmp: string | undefined;
  if (/\.[mc]?ts$/.test(absolute)) {
    const { build } = await import('esbuild');
    // The compiled file goes next to the lab file (as Vite does with its config), so that the packages it imports
    // (`maillab` among them) resolve from the lab file's own project; in a temp folder they would not be found.
    tmp = path.join(path.dirname(absolute), `.${path.basename(absolute)}.maillab-${process.pid}-${Date.now()}.mjs`);
    await build({ entryPoints: [absolute], bundle: true, platform: 'node', format: 'esm', outfile: tmp, logLevel: 'error', packages: 'external' });
    url = pathToFileURL(tmp).href;
  }
  try {
    const mod = (await import(url)) as { default?: LabDefinition };
    if (!mod.default) throw new Error(`${file} has no default export (export default defineLab({...}))`);
    return mod.default;
  } finally {
    if (tmp) await rm(tmp, { force: true });
  }
}
