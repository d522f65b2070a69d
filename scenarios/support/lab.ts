// Vitest glue: one lab per scenario file (default) or a fresh one per test, stopped even when a test fails.
// Before a lab stops, every event its nodes emitted is checked against their roles' contracts.
import { afterAll, afterEach, beforeAll, beforeEach, expect } from 'vitest';
import { formatEvent, Lab, type LabDefinition, type StartedLab } from '../../src/harness/index.js';
import defaultLab from '../../lab/default.js';
import { loadLabFile } from '../../src/cli/commands.js';

export { defaultLab };

/**
 * The lab the scenarios run against when they name none: the default lab, or `MAILLAB_LAB=<lab file>` (e.g.
 * `MAILLAB_LAB=lab/postfix-dovecot.ts npx vitest run scenarios/0`) to run the same scenarios against another
 * topology, such as real servers in some roles.
 */
export async function labUnderTest(): Promise<LabDefinition> {
  const file = process.env.MAILLAB_LAB;
  if (!file) return defaultLab;
  return structuredClone(await loadLabFile(file));
}

export interface UseLabOptions {
  /** `file`: one lab shared by the file's tests; `test`: a fresh lab for every test. */
  scope?: 'file' | 'test';
  definition?: LabDefinition;
}

/**
 * Starts a lab before the tests and stops it after them; returns a getter for the started lab.
 * `configure` turns the definition into a variant (a second MX, another retry schedule...).
 */
export function useLab(configure: (lab: Lab) => Lab = (l) => l, options: UseLabOptions = {}): () => StartedLab {
  let started: StartedLab | undefined;
  const start = async () => {
    started = await configure(new Lab(options.definition ?? (await labUnderTest()))).start();
  };
  const stop = async () => {
    const lab = started;
    started = undefined;
    if (!lab) return;
    try {
      const outside = lab.eventsOutsideContract();
      expect(outside.map((e) => formatEvent(e)), 'events of kinds their node\'s role contract (src/<role>/api.ts) does not list').toEqual([]);
    } finally {
      await lab.stop();
    }
  };
  if (options.scope === 'test') {
    beforeEach(start);
    afterEach(stop);
  } else {
    beforeAll(start);
    afterAll(stop);
  }
  return () => {
    if (!started) throw new Error('the lab did not start (see the beforeAll/beforeEach error)');
    return started;
  };
}
