// `maillab/vitest/setup`: a vitest `setupFiles` entry that registers maillab's matchers (toHaveDelivered,
// toHaveBounced, toHaveDeferred, toHaveHop, toHaveAuthenticationResults, toHaveNoDuplicates) in every test file:
//   export default defineConfig({ test: { setupFiles: ['maillab/vitest/setup'] } });
// Their types come with `maillab/vitest` (the `Matchers` declaration of ./matchers.ts).
import { registerMaillabMatchers } from './matchers.js';

registerMaillabMatchers();
