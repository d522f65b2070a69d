// The seam between a test's lab and the HTML report: what useLab leaves on each test (vitest's `task.meta`), which
// the maillab reporter reads in the main process. Plain JSON: it crosses from the test worker to the reporter.
import type { HistoryEvent } from '../harness/events.js';

/** Everything the report shows of one test's lab. */
export interface LabTestRecord {
  /** The lab definition's name and the runtime it ran on. */
  lab: string;
  runtime: string;
  /** Hosts of the lab: name → role and address (the lifelines of the sequence diagrams). */
  hosts: Record<string, { role: string; address: string; hostname?: string }>;
  /** The lab's history from the test's start to its end, in order. */
  events: HistoryEvent[];
  /** The seed of the run (MAILLAB_SEED replays it). */
  seed?: string;
}

/** `task.meta.maillab` holds a LabTestRecord. */
export const RECORD_META_KEY = 'maillab';
