// The flags node processes start with (NODE_V8_FLAGS, src/shared/node.ts): the local runtime passes them before the
// user's MAILLAB_NODE_ARGS, and they take effect on the Node version that runs the lab (checked in a child process:
// its young generation stays within two 2 MiB semi-spaces under an allocation burst that grows V8's default one).
import { execFileSync } from 'node:child_process';
import { afterEach, describe, expect, it } from 'vitest';
import { NODE_V8_FLAGS } from '../../shared/node.js';
import { nodeArgs } from './local.js';

const saved = { args: process.env.MAILLAB_NODE_ARGS, maps: process.env.MAILLAB_SOURCE_MAPS };
afterEach(() => {
  for (const [key, value] of [['MAILLAB_NODE_ARGS', saved.args], ['MAILLAB_SOURCE_MAPS', saved.maps]] as const) {
    if (value === undefined) delete process.env[key];
    else process.env[key] = value;
  }
});

/** The new space's size in a node started with `args` after allocating a million short-lived objects. */
function newSpaceAfterBurst(args: string[]): number {
  const script = "const v8 = require('v8'); for (let i = 0; i < 1e6; i++) { const x = { i, s: 'x' + i }; } console.log(v8.getHeapSpaceStatistics().find((s) => s.space_name === 'new_space').space_size);";
  return Number(execFileSync(process.execPath, [...args, '-e', script], { encoding: 'utf8', env: { ...process.env, NODE_OPTIONS: '' } }).trim());
}

describe('the node flags of a lab node', () => {
  it('are NODE_V8_FLAGS first, then MAILLAB_NODE_ARGS (later flags win), then source maps when asked', () => {
    delete process.env.MAILLAB_SOURCE_MAPS;
    process.env.MAILLAB_NODE_ARGS = '--cpu-prof  --max-semi-space-size=8';
    expect(nodeArgs()).toEqual([...NODE_V8_FLAGS, '--cpu-prof', '--max-semi-space-size=8']);
    process.env.MAILLAB_SOURCE_MAPS = '1';
    delete process.env.MAILLAB_NODE_ARGS;
    expect(nodeArgs()).toEqual([...NODE_V8_FLAGS, '--enable-source-maps']);
  });

  it('keep the young generation within 2 × 2 MiB, which V8 alone lets grow', () => {
    delete process.env.MAILLAB_NODE_ARGS;
    delete process.env.MAILLAB_SOURCE_MAPS;
    expect(newSpaceAfterBurst(nodeArgs())).toBeLessThanOrEqual(4 * 1024 * 1024);
    expect(newSpaceAfterBurst([])).toBeGreaterThan(4 * 1024 * 1024);
  });
});
