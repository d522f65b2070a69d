// The seam between a test's lab and the HTML report: what useLab leaves on each test (vitest's `task.meta`), which
// the maillab reporter reads in the main process. Plain JSON: it crosses from the test worker to the reporter.
// Secrets are redacted before a record is made (src/report/redact.ts): task.meta can end up in any reporter's file.
import type { HistoryEvent } from '../harness/events.js';

/** Everything the report shows of one test's lab. */
export interface LabTestRecord {
  /** The lab definition's name and the runtime it ran on. */
  lab: string;
  runtime: string;
  /** Hosts of the lab: name → role and address (the lifelines of the sequence diagrams). */
  hosts: Record<string, { role: string; address: string; hostname?: string }>;
  /** The lab's history from the test's start to its end, in order (at most {@link RECORD_EVENT_LIMIT}: see `omitted`). */
  events: HistoryEvent[];
  /** The seed of the run (MAILLAB_SEED replays it). */
  seed?: string;
  /** The test's start and end (ms since the epoch): the slice of the lab's history this record holds. */
  startedAt?: number;
  endedAt?: number;
  /**
   * Events of the slice left out to keep the record bounded: the first and the last halves of the limit are kept,
   * `count` events in between are not (`events[afterIndex]` is the last one before the gap).
   */
  omitted?: { count: number; afterIndex: number };
  /** The Received chains of the messages stored during the test, read back from the mailbox at its end. */
  received?: ReceivedChain[];
  /** Why a stored message's Received chain is missing (its mailbox server stopped, no control channel...). */
  receivedNotes?: string[];
  /** Events the slice implies (a `stored` for a `delivered`...) that had not reached the harness when it was taken. */
  missing?: string[];
}

/** The Received headers of one stored copy, top (the last hop) first, unfolded. */
export interface ReceivedChain {
  messageId: string;
  /** The mailbox server (host name in the lab), the user and folder, and the UID of the copy. */
  node: string;
  user: string;
  mailbox: string;
  uid: number;
  received: string[];
}

/** `task.meta.maillab` holds a LabTestRecord. */
export const RECORD_META_KEY = 'maillab';

/** At most this many events per record (a chaos test can emit tens of thousands; task.meta crosses an RPC). */
export const RECORD_EVENT_LIMIT = 2000;

/** At most this many stored copies are read back for their Received chain. */
export const RECORD_RECEIVED_LIMIT = 20;
