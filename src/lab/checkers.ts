// Checkers: what must hold, asserted over the recorded history and the mailboxes (kept apart from what the
// scenario's clients do and from the faults it injects). Each throws an Error that explains itself.
import type { LabEvent } from '../shared/events.js';
import { formatEvent, type History, normalizeMessageId } from './history.js';
import type { StartedLab } from './lab.js';
import { headerValue } from '../shared/headers.js';

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
 * Attempts happened at the configured retry delays: the gap between consecutive attempts of the message to
 * `rcpt` is at least the scheduled delay and not much more (`slackMs` for scheduling and connection time).
 */
export function checkRetrySchedule(attempts: readonly LabEvent[], schedule: number[], slackMs = 750): void {
  for (let i = 1; i < attempts.length; i++) {
    const expected = schedule[Math.min(i - 1, schedule.length - 1)]!;
    const gap = attempts[i]!.time - attempts[i - 1]!.time;
    if (gap < expected - 25 || gap > expected + slackMs)
      fail(`attempt ${i + 1} came ${gap.toFixed(0)} ms after attempt ${i}; the schedule says ${expected} ms (±${slackMs})`, attempts);
  }
}
