import { defineConfig } from 'vitest/config';

// The unit tests only (src/**), for mutation testing: `npm run mutation` (stryker.config.mjs) runs them once per
// mutant, so the slow end-to-end scenarios/** stay out. Stryker forces its own pool (one worker thread).
export default defineConfig({
  test: {
    include: ['src/**/*.test.ts'],
    // src/cli/cli.test.ts runs bin/maillab.mjs, i.e. dist/: build it once in Stryker's sandbox too.
    globalSetup: ['./scenarios/support/global-setup.ts'],
    // A mutant that makes a server hang should fail fast rather than wait for the 60 s of vitest.config.ts.
    testTimeout: 20_000,
    hookTimeout: 20_000,
  },
});
