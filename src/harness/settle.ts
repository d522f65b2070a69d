// Waits on state the history does not carry by itself: an MTA's queue (what its `queue` operation shows), and the lab
// being settled. Each looks at the state, and looks again after each event that may have changed it, or after a short
// poll interval (Postfix moves a queue file after logging the outcome, with no event of its own), until a deadline;
// it then fails as every wait of the harness does (WaitTimeoutError: what was awaited, the last view, the seed, the
// recent history).
import { now } from '../shared/events.js';
import type { QueueEntryView } from '../mta/api.js';
import type { HistoryEvent } from './events.js';
import { DEFAULT_WAIT_MS, type History } from './history/history.js';

/** How often a wait looks at a node's state when no event says it changed. */
export const STATE_POLL_MS = 200;

/** Outcome kinds of a recipient at an MTA: after one, the recipient's attempt is over. */
const RECIPIENT_OUTCOMES = new Set(['relayed', 'delivered', 'deferred', 'bounced', 'expired']);

/** Events that show an MTA's queue moving: after one, the queue is looked at again at once. */
export const QUEUE_PROGRESS = new Set(['active', 'deferred', 'relayed', 'delivered', 'bounced', 'expired', 'queued', 'node-ready', 'queue-change', 'queue-flush']);

export interface StateWaitOptions {
  /** How long the wait may take in all (default 10 s). */
  timeoutMs?: number;
  /** What is awaited, in words, for the failure message. */
  description?: string;
}

/**
 * Looks at a state with `look` until `done` says it is reached, again after each event `wake` matches and at least
 * every STATE_POLL_MS; resolves with the last look. On the deadline, fails with `what`, the last look (`show`) and the
 * recent history.
 */
export async function waitForState<T>(
  history: History,
  look: () => Promise<T>,
  done: (state: T) => boolean,
  options: { timeoutMs?: number; what: string; show: (state: T) => string; wake: (e: HistoryEvent) => boolean },
): Promise<T> {
  const timeoutMs = options.timeoutMs ?? DEFAULT_WAIT_MS;
  const deadline = now() + timeoutMs;
  // How the looks went, for the failure: a node too slow to answer reads differently from a state that never came.
  let looks = 0;
  let slowest = 0;
  for (;;) {
    const since = now();
    const state = await look();
    looks++;
    slowest = Math.max(slowest, now() - since);
    if (done(state)) return state;
    const left = deadline - now();
    if (left <= 0) throw history.timeoutError(options.what, timeoutMs, `${options.show(state)} (${looks} look${looks === 1 ? '' : 's'}, the slowest took ${Math.round(slowest)} ms)`);
    await history.next({ where: options.wake }, { timeoutMs: Math.min(left, STATE_POLL_MS), after: since });
  }
}

/** What `waitForQueue` needs of an MTA: its queue as the control channel shows it, and its node name. */
export interface QueueSource<T = QueueEntryView> {
  /** The node whose events wake the wait (undefined: any node's). */
  node?: string;
  queue(): Promise<T[]>;
}

/**
 * Waits until `predicate` holds of the MTA's queue (`queue` operation, the messages not done), and resolves with the
 * entries it saw then. Fails, after `timeoutMs`, with the last view of the queue and the recent history.
 */
export function waitForQueue<T = QueueEntryView>(history: History, mta: QueueSource<T>, predicate: (entries: T[]) => boolean, options: StateWaitOptions = {}): Promise<T[]> {
  return waitForState(history, () => mta.queue(), predicate, {
    ...(options.timeoutMs !== undefined ? { timeoutMs: options.timeoutMs } : {}),
    what: options.description ?? `the queue of ${mta.node ?? 'the MTA'} to match the predicate`,
    show: (entries) => `last view of the queue (${entries.length} messages): ${JSON.stringify(entries.slice(0, 5), null, 1)}`,
    wake: (e) => QUEUE_PROGRESS.has(e.kind) && (mta.node === undefined || e.node === mta.node || (e.node === 'nemesis' && 'target' in e.detail && e.detail.target === mta.node)),
  });
}

/** An MTA as `waitForSettled` looks at it. */
export interface SettledMta {
  node: string;
  isRunning: boolean;
  queue(): Promise<QueueEntryView[]>;
}

/** One reason the lab is not settled yet. */
export type Unsettled = { mta: string; queueId: string; messageId?: string; state: string } | { mta: string; queueId: string; messageId?: string; rcpt: string; waiting: string };

/**
 * What keeps the lab from being settled, now: messages incoming or active in a running MTA's queue, and recipients of
 * a message accepted by a running MTA (its `queued` event) with no outcome after the message's last attempt began;
 * a message held (`queue-change` hold, not released since) or deleted there owes none, and one released is awaited
 * until its next attempt begins.
 */
export async function unsettled(history: History, mtas: readonly SettledMta[]): Promise<Unsettled[]> {
  const found: Unsettled[] = [];
  for (const mta of mtas.filter((m) => m.isRunning)) {
    for (const entry of await mta.queue()) {
      if (entry.state === 'incoming' || entry.state === 'active') found.push({ mta: mta.node, queueId: entry.queueId, ...(entry.messageId ? { messageId: entry.messageId } : {}), state: entry.state });
    }
    // Per queue id at this node: its recipients, the start of its last attempt, and each recipient's last outcome.
    const messages = new Map<string, { messageId?: string; to: string[]; lastActive: number; outcome: Map<string, number>; held?: boolean; releasedAt?: number }>();
    for (const e of history.events) {
      // A message deleted from the queue owes no outcome any more; a held one waits for an operator, not for us.
      if (e.kind === 'queue-change' && e.detail.target === mta.node) {
        if (e.detail.operation === 'delete') messages.delete(e.detail.queueId);
        const changed = messages.get(e.detail.queueId);
        if (changed) changed.held = e.detail.operation === 'hold';
        if (changed && e.detail.operation === 'release') changed.releasedAt = e.time;
        continue;
      }
      if (e.node !== mta.node || !e.queueId) continue;
      if (e.kind === 'queued') messages.set(e.queueId, { ...(e.messageId ? { messageId: e.messageId } : {}), to: e.detail.to.map(lower), lastActive: -1, outcome: new Map() });
      const m = messages.get(e.queueId);
      if (!m) continue;
      if (e.kind === 'active') m.lastActive = e.time;
      if (RECIPIENT_OUTCOMES.has(e.kind) && 'rcpt' in e.detail) m.outcome.set(lower(e.detail.rcpt), e.time);
    }
    for (const [queueId, m] of messages) {
      if (m.held) continue;
      // Released, and not tried since: its attempt is still to come.
      if (m.releasedAt !== undefined && m.releasedAt > m.lastActive) {
        found.push({ mta: mta.node, queueId, ...(m.messageId ? { messageId: m.messageId } : {}), state: 'released, not tried since' });
        continue;
      }
      for (const rcpt of m.to) {
        const outcome = m.outcome.get(rcpt);
        if (outcome === undefined) found.push({ mta: mta.node, queueId, ...(m.messageId ? { messageId: m.messageId } : {}), rcpt, waiting: 'no outcome yet' });
        else if (outcome < m.lastActive) found.push({ mta: mta.node, queueId, ...(m.messageId ? { messageId: m.messageId } : {}), rcpt, waiting: 'no outcome of its last attempt yet' });
      }
    }
  }
  return found;
}

/** Resolves once `unsettled` finds nothing; fails with what is still pending and the recent history. */
export async function waitForSettled(history: History, mtas: readonly SettledMta[], options: StateWaitOptions = {}): Promise<void> {
  const names = new Set(mtas.map((m) => m.node));
  await waitForState(history, () => unsettled(history, mtas), (pending) => pending.length === 0, {
    ...(options.timeoutMs !== undefined ? { timeoutMs: options.timeoutMs } : {}),
    what: options.description ?? 'the lab to settle (no message incoming or active in an MTA queue, every recipient of every queued message with an outcome)',
    show: (pending) => `still pending (${pending.length}): ${pending.slice(0, 10).map((p) => JSON.stringify(p)).join('\n  ')}`,
    wake: (e) => names.has(e.node) || e.node === 'nemesis',
  });
}

function lower(address: string): string {
  return address.toLowerCase();
}
