// Written by `maillab init`. maillab's scenarios start real servers (as processes or containers).
import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    // maillab's waits take up to 10 s (a delivery across four hosts, with retries), a lab starts in seconds (minutes
    // the first time on docker, which builds an image): vitest's 5 s defaults would cut them off.
    testTimeout: 60_000,
    hookTimeout: 120_000,
    // Every scenario file runs its own lab in a child process of its own.
    pool: 'forks',
    // The matchers: expect(lab()).toHaveDelivered(sent, { to }), toHaveBounced, toHaveHop...
    setupFiles: ['maillab/vitest/setup'],
    // The console, and maillab's HTML report (maillab-report/index.html: a sequence diagram of every message).
    reporters: ['default', 'maillab/reporter'],
  },
});
