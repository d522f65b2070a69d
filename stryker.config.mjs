// Mutation testing of the core modules against the unit tests: `npm run mutation` (reports in reports/mutation/).
// One module: `npx stryker run --mutate src/mta/classify.ts`. Workers: STRYKER_CONCURRENCY (default 2).

/** The core modules. Paths will move: keep this list the one place that names them. */
const coreModules = [
  'src/mta/queue.ts',
  'src/mta/scheduler.ts',
  'src/shared/retry.ts',
  'src/mta/delivery.ts',
  'src/mta/dsn.ts',
  'src/mta/classify.ts',
  'src/mx/index.ts',
  // The mailbox store and its parts.
  'src/mailbox/store.ts',
  'src/mailbox/maildir/*.ts',
  'src/mailbox/pop3.ts',
  // The harness checkers.
  'src/harness/checkers/*.ts',
];

/** Never mutated, even when a glob above catches them. */
const notMutated = ['**/*.test.ts', '**/*.test-helper.ts'];

/** @type {import('@stryker-mutator/api/core').PartialStrykerOptions} */
export default {
  testRunner: 'vitest',
  vitest: { configFile: 'vitest.mutation.config.ts' },
  coverageAnalysis: 'perTest',
  mutate: [...coreModules, ...notMutated.map((glob) => `!${glob}`)],
  reporters: ['clear-text', 'progress', 'json', 'html'],
  jsonReporter: { fileName: 'reports/mutation/mutation.json' },
  htmlReporter: { fileName: 'reports/mutation/mutation.html' },
  // The unit tests start real (loopback) servers: allow for slow start-ups on a loaded two-core machine.
  timeoutFactor: 3,
  timeoutMS: 15_000,
  concurrency: Number(process.env.STRYKER_CONCURRENCY ?? 2),
  // Re-test only the mutants whose code or tests changed since the last run.
  incremental: true,
  incrementalFile: 'reports/mutation/stryker-incremental.json',
  // TypeScript 7 (the native compiler) has no JS API, and Stryker 9 reads the tsconfig with `ts.parseConfigFileTextToJson`
  // only to rewrite `extends`/`references` paths that leave the sandbox (tsconfig.json has none). A file name that
  // does not exist skips that step; tsconfig.json is still copied into the sandbox as is.
  tsconfigFile: 'tsconfig.stryker-no-rewrite.json',
  // Not copied into the sandbox: the globalSetup of vitest.mutation.config.ts rebuilds dist/ there.
  ignorePatterns: ['dist', '.maillab'],
  tempDirName: '.stryker-tmp',
  cleanTempDir: true,
};
