#!/usr/bin/env node
// Runs the bundled CLI; builds it first when the bundle is missing (a checkout without `npm install`).
import { existsSync } from 'node:fs';
import { execFileSync } from 'node:child_process';
import { fileURLToPath, pathToFileURL } from 'node:url';
import path from 'node:path';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const cli = path.join(root, 'dist', 'cli.js');
if (!existsSync(cli) || !existsSync(path.join(root, 'dist', 'node.js'))) {
  execFileSync(process.execPath, [path.join(root, 'build.mjs')], { cwd: root, stdio: 'inherit' });
}
await import(pathToFileURL(cli).href);
