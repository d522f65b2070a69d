import { defineConfig } from 'vitest/config';

/**
 * The bench's own unit tests (`npx vitest run --config bench/vitest.config.ts`): pure bookkeeping and plotting, no
 * lab, so none of the root config's global setup (which builds dist/ for the scenarios).
 */
export default defineConfig({ test: { include: ['bench/**/*.test.ts'], root: '.' } });
