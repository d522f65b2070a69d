// What useLab records of each test for the report (task.meta) and for CI (the trace annotation a JUnit file carries):
// the test's slice of the lab's history, bounded and with secrets redacted, and the Received chains of the messages
// stored during the test.
import { headerSection } from '../shared/headers.js';
import { now, type LabEvent } from '../shared/events.js';
import type { HistoryEvent } from '../harness/events.js';
import { formatEvent, History, seedLine, WaitTimeoutError } from '../harness/history/history.js';
import type { StartedLab } from '../harness/lab.js';
import { redactSecrets, secretsIn } from './redact.js';
import { RECORD_EVENT_LIMIT, RECORD_RECEIVED_LIMIT, type LabTestRecord, type ReceivedChain } from './record.js';

/** How long reading one stored copy back may take before its chain is given up (a paused or dying node). */
const READ_BACK_TIMEOUT_MS = 3_000;

/** The record of the lab's history between `since` and `until` (a test's start and end). */
export async function recordOfTest(lab: StartedLab, since: number, until = now()): Promise<LabTestRecord> {
  const secrets = secretsIn([lab.definition, lab.nodes().map((n) => n.config)]);
  const inSlice = () => lab.history.events.filter((e) => e.time >= since && e.time <= until);
  const lagging = await awaitImpliedEvents(lab, inSlice());
  const slice = inSlice();
  const { kept, omitted } = bounded(slice, RECORD_EVENT_LIMIT);
  const hosts: LabTestRecord['hosts'] = {};
  for (const node of lab.nodes()) hosts[node.name] = { role: node.role, address: node.config.address, hostname: node.config.hostname };
  for (const external of lab.externals()) hosts[external.name] = { role: 'external', address: external.address, hostname: external.hostname };
  const { received, notes } = await receivedChains(lab, slice);
  const record: LabTestRecord = {
    lab: lab.definition.name,
    runtime: lab.runtimeKind,
    hosts,
    events: kept,
    seed: String(lab.seed),
    startedAt: since,
    endedAt: until,
    ...(omitted ? { omitted } : {}),
    ...(received.length ? { received } : {}),
    ...(notes.length ? { receivedNotes: notes } : {}),
    ...(lagging.length ? { missing: lagging } : {}),
  };
  return redactSecrets(record, secrets);
}

/** How long a record waits, in all, for the events its slice implies but has not received yet. */
const IMPLIED_EVENTS_TIMEOUT_MS = 2_000;

/**
 * Each node streams its events on its own connection, so when a test ends the history can hold the MTA's `delivered`
 * without the mailbox's `stored` that came before it. Waits (within one short deadline) for the events the slice's
 * own events imply at the lab's nodes: a `stored` per LMTP delivery and per recipient an MX handed off, a `received`
 * at a lab host an MTA relayed to. Returns what never came, for the record to say.
 */
async function awaitImpliedEvents(lab: StartedLab, slice: readonly HistoryEvent[]): Promise<string[]> {
  // A stopped or killed node sends nothing more: what it had not streamed is lost to the history (README, Events).
  const nodeAt = new Map(lab.nodes().filter((n) => n.isRunning).map((n) => [n.config.address, n.name]));
  const expected = new Map<string, { node: string; kind: 'stored' | 'received'; messageId: string; count: number }>();
  const expect = (address: unknown, kind: 'stored' | 'received', messageId: string | undefined, count = 1) => {
    const node = typeof address === 'string' ? nodeAt.get(address.replace(/^LMTP /, '').replace(/:\d+$/, '')) : undefined;
    if (!node || !messageId || count === 0) return;
    const key = `${node} ${kind} ${messageId}`;
    const entry = expected.get(key) ?? { node, kind, messageId, count: 0 };
    entry.count += count;
    expected.set(key, entry);
  };
  for (const e of slice) {
    if (e.kind === 'delivered') expect(e.detail.host, 'stored', e.messageId);
    if (e.kind === 'handoff') expect(e.detail.to, 'stored', e.messageId, e.detail.recipients.filter((r) => r.accepted).length);
    if (e.kind === 'relayed') expect(e.detail.host, 'received', e.messageId);
  }
  const end = now() + IMPLIED_EVENTS_TIMEOUT_MS;
  const missing: string[] = [];
  for (const { node, kind, messageId, count } of expected.values()) {
    // A relay to a host takes one transaction for all its recipients: one `received` is enough.
    const wanted = kind === 'received' ? 1 : count;
    try {
      await lab.history.waitForCount({ node, kind, messageId }, wanted, { timeoutMs: Math.max(1, end - now()) });
    } catch (err) {
      if (!(err instanceof WaitTimeoutError)) throw err;
      missing.push(`${wanted} × ${kind} of ${messageId} at ${node} had not arrived from the node within ${IMPLIED_EVENTS_TIMEOUT_MS} ms of the test's end`);
    }
  }
  return missing;
}

/** The first and last halves of `limit` events, and how many were left out between them. */
export function bounded(events: HistoryEvent[], limit: number): { kept: HistoryEvent[]; omitted?: LabTestRecord['omitted'] } {
  if (events.length <= limit) return { kept: events };
  const head = Math.ceil(limit / 2);
  const tail = limit - head;
  return { kept: [...events.slice(0, head), ...events.slice(events.length - tail)], omitted: { count: events.length - limit, afterIndex: head - 1 } };
}

/** Reads back each copy stored during the test (through its mailbox server's control channel) for its Received headers. */
async function receivedChains(lab: StartedLab, events: readonly HistoryEvent[]): Promise<{ received: ReceivedChain[]; notes: string[] }> {
  const stored = events.filter((e): e is Extract<HistoryEvent, { kind: 'stored' }> => e.kind === 'stored' && e.messageId !== undefined);
  const received: ReceivedChain[] = [];
  const notes: string[] = [];
  if (stored.length > RECORD_RECEIVED_LIMIT) notes.push(`${stored.length} copies were stored; the Received chains of the first ${RECORD_RECEIVED_LIMIT} are read back`);
  for (const e of stored.slice(0, RECORD_RECEIVED_LIMIT)) {
    const { user, mailbox, uid } = e.detail;
    const where = `${user} ${mailbox} uid ${uid} on ${e.node}`;
    try {
      const node = lab.node(e.node).as('mailbox');
      if (!node.isRunning) throw new Error('the mailbox server is not running');
      const { data } = await withTimeout(node.control().call('read', { user, mailbox, uid }), READ_BACK_TIMEOUT_MS);
      received.push({ messageId: e.messageId!, node: e.node, user, mailbox, uid, received: receivedHeaders(Buffer.from(data, 'base64')) });
    } catch (err) {
      // Expunged by the test, or its server stopped or is a real server without the control channel's `read`.
      notes.push(`the Received chain of ${e.messageId} (${where}) could not be read back at the test's end: ${(err as Error).message}`);
    }
  }
  return { received, notes };
}

/** Every Received header of a raw message, unfolded, top first. */
export function receivedHeaders(raw: Buffer): string[] {
  const unfolded = headerSection(raw).replace(/\r?\n[ \t]+/g, ' ');
  return unfolded
    .split(/\r?\n/)
    .filter((line) => /^received:/i.test(line))
    .map((line) => line.slice('received:'.length).trim());
}

function withTimeout<T>(promise: Promise<T>, ms: number): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`no answer within ${ms} ms`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

/** At most this many lines of trace in a failed test's annotation (a JUnit property is one attribute). */
const TRACE_TEXT_LINE_LIMIT = 300;

/**
 * A failed test's trace, as its annotation carries it into JUnit: for each message of the record, its hops with the
 * faults and control actions around them (`lab.trace`), times from the test's start; then the seed.
 */
export function traceText(record: LabTestRecord): string {
  const history = new History();
  for (const e of record.events) history.add(e as unknown as LabEvent);
  const origin = record.startedAt ?? record.events[0]?.time ?? 0;
  const ids = [...new Set(record.events.map((e) => e.messageId).filter((id): id is string => id !== undefined))];
  const lines: string[] = [];
  for (const id of ids) {
    lines.push(`message ${id}:`);
    for (const e of history.trace(id)) lines.push(`  ${formatEvent(e, origin)}`);
  }
  if (ids.length === 0) {
    lines.push(`no message in this test's history; its events:`);
    for (const e of record.events) lines.push(`  ${formatEvent(e, origin)}`);
  }
  const shown = lines.length > TRACE_TEXT_LINE_LIMIT ? [...lines.slice(0, TRACE_TEXT_LINE_LIMIT), `… ${lines.length - TRACE_TEXT_LINE_LIMIT} more lines (the HTML report has them all)`] : lines;
  const seed = record.seed === undefined ? '' : seedLine(Number(record.seed));
  return [`lab ${record.lab} (${record.runtime})${seed ? `, ${seed}` : ''}`, ...shown].join('\n');
}
