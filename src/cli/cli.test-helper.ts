// For the CLI's tests: the CLI as a user runs it, a child process of its own, run to its end.
import { spawn } from 'node:child_process';
import path from 'node:path';
import { packageRoot } from '../harness/runtime/types.js';

export const bin = path.join(packageRoot(), 'bin', 'maillab.mjs');

export interface CliResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Runs `maillab <args>` and resolves with its exit code and output once it has exited. */
export async function runCli(args: string[], options: { cwd?: string; env?: NodeJS.ProcessEnv } = {}): Promise<CliResult> {
  const child = spawn(process.execPath, [bin, ...args], { stdio: ['ignore', 'pipe', 'pipe'], ...options });
  let stdout = '';
  let stderr = '';
  child.stdout!.on('data', (d: Buffer) => (stdout += d.toString()));
  child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
  const code = await new Promise<number | null>((resolve) => child.once('close', (c) => resolve(c)));
  return { code, stdout, stderr };
}
