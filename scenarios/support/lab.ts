// Vitest glue: one lab per scenario file (or per test), stopped even when a test fails.
import { afterAll, beforeAll } from 'vitest';
import { Lab, type StartedLab } from '../../src/lab/lab.js';
import type { LabDefinition } from '../../src/lab/topology.js';
import defaultLab from '../../lab/default.js';

export { defaultLab };

/**
 * Starts a lab before the file's tests and stops it after them; returns a getter for the started lab.
 * `configure` turns the definition into a variant (a second MX, another retry schedule...).
 */
export function useLab(configure: (lab: Lab) => Lab = (l) => l, definition: LabDefinition = defaultLab): () => StartedLab {
  let started: StartedLab | undefined;
  beforeAll(async () => {
    started = await configure(new Lab(definition)).start();
  });
  afterAll(async () => {
    await started?.stop();
  });
  return () => {
    if (!started) throw new Error('the lab did not start (see the beforeAll error)');
    return started;
  };
}
