// Checkers: what must hold, asserted over the recorded history and the mailboxes, kept apart from what the
// scenario's clients do and from the faults it injects.
//
// One shape for all of them: a checker WAITS for the condition it checks to become decidable (the hops to have
// arrived, the sender to have settled the recipient, the attempts to have happened), with a timeout, and then
// decides. So a checker never passes or fails depending on whether its caller waited first. Every failure is a
// CheckFailure whose message says what was expected and shows the message's trace.
import type { RetryConfig } from '../../shared/config.js';
import { retryDelay } from '../../shared/retry.js';
import type { HistoryEvent } from '../events.js';
import { now } from '../../shared/events.js';
import { DEFAULT_WAIT_MS, formatEvent, normalizeMessageId, WaitTimeoutError, type History } from '../history/history.js';

/** What a checker reads: the history, and the mailboxes (a StartedLab is one). */
export interface CheckTarget {
  history: History;
  mailbox(user: string): { find(messageId: string, mailbox?: string): Promise<{ uid: number; raw: Buffer }[]> };
}

export interface CheckOptions {
  /** How long the checker may wait, in all, for its condition to become decidable (default 10 s). */
  timeoutMs?: number;
}

/** A property that does not hold; the message holds the expectation and the events that show why. */
export class CheckFailure extends Error {
  override name = 'CheckFailure';
  constructor(
    message: string,
    readonly events: readonly HistoryEvent[],
  ) {
    super(`${message}\nevents:\n${events.map((e) => formatEvent(e)).join('\n') || '  (none)'}`);
  }
}

/** One deadline for every wait of a checker: `timeoutMs` bounds the whole check, not each step. */
function deadline(options: CheckOptions): () => { timeoutMs: number } {
  const end = now() + (options.timeoutMs ?? DEFAULT_WAIT_MS);
  return () => ({ timeoutMs: Math.max(1, end - now()) });
}

/** Waits as `history.waitFor` does, but fails as a CheckFailure with the message's trace. */
async function waitOrFail<T>(history: History, messageId: string, what: string, wait: () => Promise<T>): Promise<T> {
  try {
    return await wait();
  } catch (err) {
    if (err instanceof WaitTimeoutError) throw new CheckFailure(`message ${messageId}: ${what}: ${err.message.split('\n')[0]}`, history.trace(messageId));
    throw err;
  }
}

/**
 * The message's trace holds these hops (`node:kind`) in this relative order. Each node streams its events on its
 * own connection, so it first waits until every hop has arrived, then checks the order by time.
 */
export async function checkHopOrder(lab: CheckTarget, messageId: string, expected: string[], options: CheckOptions = {}): Promise<void> {
  const { history } = lab;
  const hops = expected.map((hop) => {
    const [node, kind] = hop.split(':');
    if (!node || !kind) throw new Error(`checkHopOrder: "${hop}" is not node:kind`);
    return { hop, node, kind };
  });
  const left = deadline(options);
  for (const { hop, node, kind } of hops) {
    await waitOrFail(history, messageId, `hop ${hop} never came`, () =>
      history.waitFor({ node, where: (e) => e.kind === kind && history.trace(messageId).includes(e) }, { ...left(), description: `hop ${hop} of message ${messageId}` }),
    );
  }
  const trace = history.trace(messageId);
  let position = -1;
  for (const [i, { hop, node, kind }] of hops.entries()) {
    const index = trace.findIndex((e, j) => j > position && e.node === node && e.kind === kind);
    if (index < 0) throw new CheckFailure(`message ${messageId}: expected hop ${hop} after ${hops[i - 1]?.hop ?? 'the start'}, but it came earlier`, trace);
    position = index;
  }
}

/** The final outcome of a recipient at the MTA that queued it: nothing further will come from that attempt. */
const FINAL_AT_SENDER = new Set(['relayed', 'delivered', 'bounced', 'expired']);

/** An event that settles `rcpt` (lower-case) at its sender. */
function settles(e: HistoryEvent, rcpt: string): boolean {
  return FINAL_AT_SENDER.has(e.kind) && 'rcpt' in e.detail && e.detail.rcpt.toLowerCase() === rcpt;
}

/**
 * Exactly one copy of the message is in the user's folder, and it was stored exactly once.
 *
 * Waits for the first `stored` event; then for the sending MTA's final outcome for the user (relayed, delivered,
 * bounced or expired: a retry could still store a second copy before it); then until the `stored` events have
 * caught up with the copies the mailbox server shows (its event stream may lag its answers). Only then counts.
 * A message handed to an MX or to LMTP directly, with no MTA queue, is checked with `queued: false`.
 */
export async function checkDeliveredOnce(
  lab: CheckTarget,
  user: string,
  messageId: string,
  options: CheckOptions & { mailbox?: string; queued?: boolean } = {},
): Promise<{ uid: number; raw: Buffer }> {
  const { history } = lab;
  const left = deadline(options);
  const folder = options.mailbox ?? 'INBOX';
  const rcpt = user.toLowerCase();
  const storedFor = (e: HistoryEvent) => e.kind === 'stored' && e.detail.user.toLowerCase() === rcpt && e.messageId !== undefined && normalizeMessageId(e.messageId) === normalizeMessageId(messageId);
  await waitOrFail(history, messageId, `never stored for ${user}`, () => history.waitFor({ kind: 'stored', messageId, where: storedFor }, left()));

  if (options.queued !== false) {
    // The outcome, not the `queued` event: events a node emitted just before a SIGKILL may never reach the history,
    // but the restarted MTA reports the outcome of what it recovered.
    await waitOrFail(history, messageId, `no MTA reported an outcome for ${user} (pass queued: false for a message that went through no MTA)`, () =>
      history.waitFor({ messageId, where: (e) => settles(e, rcpt) }, left()),
    );
  }

  const copies = await lab.mailbox(user).find(messageId, folder);
  await waitOrFail(history, messageId, `the mailbox shows ${copies.length} copies but fewer stored events arrived`, () =>
    history.waitForCount({ kind: 'stored', messageId, where: storedFor }, copies.length, left()),
  );
  const stored = history.filter({ kind: 'stored', messageId, where: storedFor });
  if (stored.length !== 1) throw new CheckFailure(`message ${messageId}: stored ${stored.length} times for ${user}, expected exactly once`, history.trace(messageId));
  if (copies.length !== 1) throw new CheckFailure(`message ${messageId}: ${copies.length} copies in ${user}'s ${folder}, expected exactly one`, history.trace(messageId));
  return copies[0]!;
}

/**
 * Retries followed the retry rule (src/shared/retry.ts, the one the MTA's scheduler follows): after a
 * recipient's n-th failed attempt (a `deferred` event), its next attempt (an `active` event naming it) started
 * retryDelay(retry, n) ms later, give or take `slackMs` of scheduling (and never more than 25 ms early).
 *
 * Waits until the message is settled for every recipient (relayed, delivered, bounced or expired), or, with
 * `attempts`, until that many attempts have started. Returns the measured delays in order.
 */
export async function checkRetrySchedule(
  lab: CheckTarget,
  messageId: string,
  retry: Pick<RetryConfig, 'schedule'>,
  options: CheckOptions & { attempts?: number; slackMs?: number } = {},
): Promise<number[]> {
  const { history } = lab;
  const left = deadline(options);
  const slackMs = options.slackMs ?? 400;
  const queued = await waitOrFail(history, messageId, 'never queued', () => history.waitFor({ kind: 'queued', messageId }, left()));
  const mta = queued.node;
  const recipients = queued.detail.to.map((r) => r.toLowerCase());
  const ofMessage = (e: HistoryEvent) => e.node === mta && e.queueId === queued.queueId;
  if (options.attempts !== undefined) {
    await waitOrFail(history, messageId, `fewer than ${options.attempts} attempts`, () =>
      history.waitForCount({ kind: 'active', where: ofMessage }, options.attempts!, left()),
    );
  } else {
    for (const rcpt of recipients) {
      await waitOrFail(history, messageId, `${rcpt} never settled`, () =>
        history.waitFor({ node: mta, where: (e) => ofMessage(e) && settles(e, rcpt) }, left()),
      );
    }
  }
  const trace = history.events.filter(ofMessage);
  const delays: number[] = [];
  for (const rcpt of recipients) {
    const failures = trace.filter((e) => e.kind === 'deferred' && e.detail.rcpt.toLowerCase() === rcpt);
    for (const [i, failure] of failures.entries()) {
      const next = trace.find((e) => e.kind === 'active' && e.time > failure.time && e.detail.recipients.some((r) => r.toLowerCase() === rcpt));
      if (!next) break;
      const expected = retryDelay(retry, i + 1);
      const delay = next.time - failure.time;
      delays.push(delay);
      if (delay < expected - 25 || delay > expected + slackMs)
        throw new CheckFailure(`retry ${i + 1} of ${messageId} to ${rcpt} started ${delay.toFixed(0)} ms after the failure; the retry rule says ${expected} ms (-25/+${slackMs})`, history.trace(messageId));
    }
  }
  return delays;
}
