#!/usr/bin/env node
// Runs the bundled CLI. In a checkout without a build (no `npm install` yet), it builds first; an installed package
// ships dist/ and has no build script.
import { existsSync } from 'node:fs';
import { execFileSync } from 'node:child_process';
import { fileURLToPath, pathToFileURL } from 'node:url';
import path from 'node:path';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const cli = path.join(root, 'dist', 'cli.js');
if (!existsSync(cli) || !existsSync(path.join(root, 'dist', 'node.js'))) {
  const build = path.join(root, 'build.mjs');
  if (!existsSync(build)) {
    process.stderr.write(`maillab: ${path.join(root, 'dist')} is incomplete (no cli.js or node.js) in this installed package; reinstall maillab\n`);
    process.exit(1);
  }
  execFileSync(process.execPath, [build], { cwd: root, stdio: 'inherit' });
}
await import(pathToFileURL(cli).href);
