// Vitest glue: one lab per scenario file (default) or a fresh one per test, stopped even when a test fails.
// Before a lab stops, every event its nodes emitted is checked against their roles' contracts.
import { afterAll, afterEach, beforeAll, beforeEach, expect, vi, type TestContext } from 'vitest';
import { formatEvent } from '../harness/history/history.js';
import { now } from '../shared/events.js';
import { recordOfTest, traceText } from '../report/capture.js';
import { RECORD_META_KEY, type LabTestRecord } from '../report/record.js';
import { Lab, type StartedLab } from '../harness/lab.js';
import type { LabDefinition } from '../harness/topology.js';
import { loadLabFile } from '../harness/lab-file.js';
import defaultLab from '../../lab/default.js';

/**
 * maillab's waits default to 10 s (a delivery across four hosts with retries): vitest's own 5 s test timeout would
 * cut them off and lose the history their failure prints. A lab file sets these for its own tests.
 */
export const LAB_TEST_TIMEOUT_MS = 60_000;
/** Starting a lab (images built on first use on the docker runtime) and stopping it. */
export const LAB_HOOK_TIMEOUT_MS = 120_000;

/**
 * The lab the scenarios run against when they name none: the default lab, or `MAILLAB_LAB=<lab file>` (e.g.
 * `MAILLAB_LAB=lab/postfix-dovecot.ts npx vitest run scenarios/0`) to run the same scenarios against another
 * topology, such as real servers in some roles. A relative path is taken from the current directory.
 */
export async function labUnderTest(): Promise<LabDefinition> {
  const file = process.env.MAILLAB_LAB;
  if (!file) return defaultLab;
  return structuredClone(await loadLabFile(file));
}

export interface UseLabOptions {
  /** `file` (the default): one lab shared by the file's tests; `test`: a fresh lab for every test. */
  scope?: 'file' | 'test';
  /** The lab to start; without it, `MAILLAB_LAB`'s lab file or maillab's default lab. */
  definition?: LabDefinition;
  /** The test timeout of the file's tests; default {@link LAB_TEST_TIMEOUT_MS}. */
  testTimeoutMs?: number;
}

/**
 * Starts a lab before the tests and stops it after them; returns a getter for the started lab.
 * `configure` turns the definition into a variant (a second MX, another retry schedule...): the `with…` methods of
 * {@link Lab} change the builder they are called on and return it, so `(lab) => lab.withRetry(...)` is enough.
 */
export function useLab(configure: (lab: Lab) => Lab = (l) => l, options: UseLabOptions = {}): () => StartedLab {
  vi.setConfig({ testTimeout: options.testTimeoutMs ?? LAB_TEST_TIMEOUT_MS });
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
  // The start of the running test: its record is the lab's history from here to its end (a file's lab is shared).
  let testStartedAt = 0;
  const markStart = () => {
    testStartedAt = now();
  };
  const capture = async (context: TestContext) => {
    if (started) await recordTest(started, testStartedAt, context);
  };
  if (options.scope === 'test') {
    beforeEach(async () => {
      markStart();
      await start();
    }, LAB_HOOK_TIMEOUT_MS);
    // Recorded before the lab stops, so the record ends with the test, not with the nodes' shutdown.
    afterEach(async (context) => {
      try {
        await capture(context);
      } finally {
        await stop();
      }
    }, LAB_HOOK_TIMEOUT_MS);
  } else {
    beforeAll(start, LAB_HOOK_TIMEOUT_MS);
    beforeEach(markStart);
    afterEach(capture, LAB_HOOK_TIMEOUT_MS);
    afterAll(stop, LAB_HOOK_TIMEOUT_MS);
  }
  return () => {
    if (!started) throw new Error('the lab did not start (see the beforeAll/beforeEach error)');
    return started;
  };
}

/**
 * Leaves the test's LabTestRecord in `task.meta` (the maillab reporter draws it) and, when the test failed, annotates
 * it with the trace of its messages, which vitest's junit reporter writes as a `<property name="maillab trace">`.
 */
async function recordTest(lab: StartedLab, since: number, context: TestContext): Promise<void> {
  let record: LabTestRecord;
  try {
    record = await recordOfTest(lab, since);
  } catch (err) {
    // The report is a view of the test, not a check: a record that cannot be made must not fail the test.
    console.warn(`maillab: no report record for "${context.task.name}": ${(err as Error).message}`);
    return;
  }
  (context.task.meta as Record<string, unknown>)[RECORD_META_KEY] = record;
  const result = context.task.result;
  if (result?.state !== 'fail') return;
  // vitest 4.1 refuses annotate() once the test's state is 'fail', which it already is in afterEach, the first place
  // a failure is known; the state is 'run' again only for the synchronous check at the call, then restored.
  result.state = 'run';
  const annotated = context.annotate(traceText(record), TRACE_ANNOTATION);
  result.state = 'fail';
  await annotated;
}

/** The annotation type of a failed test's trace: the `name` of its JUnit `<property>`. */
export const TRACE_ANNOTATION = 'maillab trace';
