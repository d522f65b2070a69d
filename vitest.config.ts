import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['src/**/*.test.ts', 'scenarios/**/*.test.ts', 'examples/**/*.test.ts'],
    // Scenarios start real servers as child processes (dist/node.js): build it once before any test runs.
    globalSetup: ['./scenarios/support/global-setup.ts'],
    testTimeout: 60_000,
    hookTimeout: 60_000,
    pool: 'forks',
    // Every scenario file runs its own lab on its own loopback block; two at a time fit two cores.
    maxWorkers: 2,
  },
});
