// Checkers: what must hold, asserted over the recorded history and the mailboxes (kept apart from what the
// scenario's clients do and from the faults it injects). Each throws an Error that explains itself.
import type { LabEvent } from '../../shared/events.js';
import { formatEvent, type History, normalizeMessageId } from '../history/history.js';
import type { StartedLab } from '../lab.js';
import { headerValue } from '../../shared/headers.js';

function fail(message: string, events: readonly LabEvent[]): never {
  throw new Error(`${message}\nevents:\n${events.map((e) => formatEvent(e)).join('\n')}`);
}

/**
 * The message's trace holds these hops (`node:kind`) in this relative order. Each node streams its events on
 * its own connection, so first wait until every hop has arrived, then check the order by time.
 */
export async function checkHopOrder(history: History, messageId: string, expected: string[], timeoutMs = 10_000): Promise<void> {
  for (const hop of expected) {
    const [node, kind] = hop.split(':');
    await history.waitFor(
      { node, kind, where: (e) => history.trace(messageId).includes(e) },
      { timeoutMs, description: `hop ${hop} of message ${messageId}` },
    );
  }
  const trace = history.trace(messageId);
  let position = -1;
  for (const hop of expected) {
    const [node, kind] = hop.split(':');
    const index = trace.findIndex((e, i) => i > position && e.node === node && e.kind === kind);
    if (index < 0) fail(`message ${messageId}: expected hop ${hop} after ${expected[expected.indexOf(hop) - 1] ?? 'the start'}, but it came earlier`, trace);
    position = index;
  }
}

/** Exactly one copy of the message is in the user's mailbox folder, and it was stored exactly once. */
export async function checkDeliveredOnce(lab: StartedLab, user: string, messageId: string, mailbox = 'INBOX'): Promise<{ uid: number; raw: Buffer }> {
  const stored = lab.history.filter({ kind: 'stored', messageId, where: (e) => String(e.detail.user).toLowerCase() === user.toLowerCase() });
  if (stored.length !== 1) fail(`message ${messageId}: stored ${stored.length} times for ${user}, expected exactly once`, lab.trace(messageId));
  const copies = await findMessages(lab, user, messageId, mailbox);
  if (copies.length !== 1) fail(`message ${messageId}: ${copies.length} copies in ${user}'s ${mailbox}, expected exactly one`, lab.trace(messageId));
  return copies[0]!;
}

/** Messages in a user's folder whose Message-ID is `messageId`. */
export async function findMessages(lab: StartedLab, user: string, messageId: string, mailbox = 'INBOX'): Promise<{ uid: number; raw: Buffer }[]> {
  const box = lab.mailbox(user);
  const found: { uid: number; raw: Buffer }[] = [];
  for (const m of await box.messages(mailbox)) {
    const raw = await box.read(m.uid, mailbox);
    const id = headerValue(raw, 'message-id');
    if (id && normalizeMessageId(id) === normalizeMessageId(messageId)) found.push({ uid: m.uid, raw });
  }
  return found;
}

/**
 * Retries followed the schedule: after the i-th failed attempt (a `deferred` event) the next attempt (an
 * `active` event) started schedule[i] ms later (the last value repeats), give or take `slackMs` of scheduling.
 * Returns the measured delays.
 */
export function checkRetrySchedule(history: History, messageId: string, schedule: number[], slackMs = 400): number[] {
  const trace = history.trace(messageId).filter((e) => e.node === trace0(history, messageId));
  const deferred = trace.filter((e) => e.kind === 'deferred');
  const active = trace.filter((e) => e.kind === 'active');
  const delays: number[] = [];
  for (let i = 0; i < deferred.length; i++) {
    const next = active.find((a) => a.time > deferred[i]!.time);
    if (!next) break;
    const expected = schedule[Math.min(i, schedule.length - 1)]!;
    const delay = next.time - deferred[i]!.time;
    delays.push(delay);
    if (delay < expected - 25 || delay > expected + slackMs)
      fail(`retry ${i + 1} of ${messageId} started ${delay.toFixed(0)} ms after the failure; the schedule says ${expected} ms (±${slackMs})`, trace);
  }
  return delays;
}

/** The node that queued the message (the MTA whose retries are checked). */
function trace0(history: History, messageId: string): string | undefined {
  return history.trace(messageId).find((e) => e.kind === 'queued')?.node;
}
