// Checkers: what must hold, asserted over the recorded history and the mailboxes, kept apart from what the
// scenario's clients do and from the faults it injects.
//
// One shape for all of them: a checker WAITS for the condition it checks to become decidable (the hops to have
// arrived, the sender to have settled the recipient, the attempts to have happened), with a timeout, and then
// decides. So a checker never passes or fails depending on whether its caller waited first. Every failure is a
// CheckFailure whose message says what was expected and shows the message's trace.
import type { RetryConfig } from '../../shared/config.js';
import { retryDelay } from '../../shared/retry.js';
import { NEMESIS, type HistoryEvent } from '../events.js';
import { now } from '../../shared/events.js';
import { messageIdOf } from '../../shared/headers.js';
import { formatFindings, type Finding } from './mail-dns.js';
import { waitForQueue } from '../settle.js';
import { DEFAULT_WAIT_MS, formatEvent, normalizeMessageId, seedLine, WaitTimeoutError, type History } from '../history/history.js';

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
    /** The run's seed (`history.seed`): the failure names it, with the variable that replays it. */
    readonly seed?: number,
  ) {
    super(`${message}${seed === undefined ? '' : `\n${seedLine(seed)}`}\nevents:\n${events.map((e) => formatEvent(e)).join('\n') || '  (none)'}`);
  }
}

/** One deadline for every wait of a checker: `timeoutMs` bounds the whole check, not each step. */
export function deadline(options: CheckOptions): () => { timeoutMs: number } {
  const end = now() + (options.timeoutMs ?? DEFAULT_WAIT_MS);
  return () => ({ timeoutMs: Math.max(1, end - now()) });
}

/** Waits as `history.waitFor` does, but fails as a CheckFailure with the message's trace. */
async function waitOrFail<T>(history: History, messageId: string, what: string, wait: () => Promise<T>): Promise<T> {
  try {
    return await wait();
  } catch (err) {
    if (err instanceof WaitTimeoutError) throw new CheckFailure(`message ${messageId}: ${what}: ${err.message.split('\n')[0]}`, history.trace(messageId), history.seed);
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
    if (index < 0) throw new CheckFailure(`message ${messageId}: expected hop ${hop} after ${hops[i - 1]?.hop ?? 'the start'}, but it came earlier`, trace, history.seed);
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
  if (stored.length !== 1) throw new CheckFailure(`message ${messageId}: stored ${stored.length} times for ${user}, expected exactly once`, history.trace(messageId), history.seed);
  if (copies.length !== 1) throw new CheckFailure(`message ${messageId}: ${copies.length} copies in ${user}'s ${folder}, expected exactly one`, history.trace(messageId), history.seed);
  return copies[0]!;
}

/**
 * Retries followed the retry rule (src/shared/retry.ts, the one the MTA's scheduler follows): after a
 * recipient's n-th failed attempt (a `deferred` event), its next attempt (an `active` event naming it) started
 * retryDelay(retry, n) ms later, give or take `slackMs` of scheduling (and never more than 25 ms early).
 *
 * Waits until the message is settled for every recipient (relayed, delivered, bounced or expired), or, with
 * `attempts`, until that many attempts have started. Returns the measured delays in order. A retry with a nemesis
 * action on the MTA between the start of the failing attempt and it (a flush, a restart, a pause: the timeline's or
 * the scenario's; a flush during an attempt reruns the message once the attempt ends) is not measured (unless
 * `excuseNemesis: false`), nor is a recipient's early retry carried along by another recipient
 * of the message that was due then (an attempt covers every open recipient); `onExcused` hears of each.
 */
export async function checkRetrySchedule(
  lab: CheckTarget,
  messageId: string,
  retry: Pick<RetryConfig, 'schedule'>,
  options: CheckOptions & { attempts?: number; slackMs?: number; excuseNemesis?: boolean; onExcused?: (excused: { rcpt: string; retry: number; by: HistoryEvent }[]) => void } = {},
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
  const id = normalizeMessageId(messageId);
  const anyNode = history.events.filter((e) => ofMessage(e) || (e.messageId !== undefined && normalizeMessageId(e.messageId) === id));
  const delays: number[] = [];
  const excused: { rcpt: string; retry: number; by: HistoryEvent }[] = [];
  for (const rcpt of recipients) {
    const failures = trace.filter((e) => e.kind === 'deferred' && e.detail.rcpt.toLowerCase() === rcpt);
    for (const [i, failure] of failures.entries()) {
      const next = trace.find((e) => e.kind === 'active' && e.time > failure.time && e.detail.recipients.some((r) => r.toLowerCase() === rcpt));
      if (!next) break;
      // A flush, a restart or a freeze of the MTA in between moves the retry on purpose: not the rule's to keep. So
      // does one while the failing attempt was still in flight: a flush then reruns the message as soon as that
      // attempt ends (scheduler.ts, `flush`), a few ms after its deferrals. The window opens at that attempt's start.
      const attemptStart = trace.filter((e) => e.kind === 'active' && e.time <= failure.time).at(-1)?.time ?? failure.time;
      const moved = history.events.find((e) => e.node === NEMESIS && MOVES_RETRIES.has(e.kind) && 'target' in e.detail && e.detail.target === mta && e.time >= attemptStart && e.time <= next.time);
      if (moved && options.excuseNemesis !== false) {
        excused.push({ rcpt, retry: i + 1, by: moved });
        continue;
      }
      // The rule's delay for this retry: the n-th failure's. A kill or restart of the MTA since the message was queued
      // may have taken a deferral that was not on disk yet (only accepted messages must survive, not their attempt
      // counts): the restarted MTA counts from its record, and its event says which attempt failed.
      const restarted = history.events.some((e) => e.node === NEMESIS && RESTARTS.has(e.kind) && 'target' in e.detail && e.detail.target === mta && e.time >= (trace[0]?.time ?? 0) && e.time < failure.time);
      const expected = retryDelay(retry, restarted && failure.kind === 'deferred' ? failure.detail.attempt : i + 1);
      // The MTA plans the retry from its own reading of the clock at the failure (`nextAttempt - delay`); the event is
      // stamped when it is emitted, which a process descheduled in between (2 busy cores) does tens of ms later. The
      // retry is measured from the plan when that is earlier, but never from before the failure could be known: the
      // last event of the message (any node's) before the deferral. A plan from a stale clock is still caught.
      const planned = failure.kind === 'deferred' ? failure.detail.nextAttempt - failure.detail.delay : failure.time;
      const known = Math.max(0, ...anyNode.filter((e) => e.time < failure.time).map((e) => e.time));
      const failedAt = planned < failure.time && planned >= known ? planned : failure.time;
      const delay = next.time - failedAt;
      // An attempt covers every open recipient of the message (queue.ts: the message is due at its recipients'
      // earliest time), so a recipient may be carried along, early, by another that was due: not its own retry.
      const inAttempt = new Set(next.kind === 'active' ? next.detail.recipients.map((r) => r.toLowerCase()) : []);
      const carrier =
        delay < expected - 25
          ? trace.find(
              (e) =>
                e.kind === 'deferred' &&
                e.detail.rcpt.toLowerCase() !== rcpt &&
                inAttempt.has(e.detail.rcpt.toLowerCase()) &&
                e.time < next.time &&
                e.detail.nextAttempt <= next.time + 25 &&
                !trace.some((a) => a.kind === 'active' && a.time > e.time && a.time < next.time),
            )
          : undefined;
      if (carrier) {
        excused.push({ rcpt, retry: i + 1, by: carrier });
        continue;
      }
      delays.push(delay);
      // A message has one attempt at a time (its destinations in parallel): a recipient that failed early in an
      // attempt cannot be retried before the attempt's last destination ended. Lateness counts from then.
      const attemptEnd = Math.max(0, ...trace.filter((e) => OUTCOMES.has(e.kind) && e.time > failure.time && e.time < next.time).map((e) => e.time));
      const lateBy = next.time - Math.max(failedAt + expected, attemptEnd);
      if (delay < expected - 25 || lateBy > slackMs)
        throw new CheckFailure(
          `retry ${i + 1} of ${messageId} to ${rcpt} started ${delay.toFixed(0)} ms after the failure; the retry rule says ${expected} ms (-25/+${slackMs}${attemptEnd > failedAt + expected ? ` after the attempt's last destination ended, ${(attemptEnd - failedAt).toFixed(0)} ms after the failure` : ''})`,
          history.trace(messageId),
          history.seed,
        );
    }
  }
  if (excused.length) options.onExcused?.(excused);
  return delays;
}

/** Nemesis actions on an MTA that move its retries: a flush, and what stops, restarts or freezes it (not a rule change). */
/** Nemesis actions after which an MTA counts a message's attempts from its own record. */
const RESTARTS = new Set(['node-kill', 'node-restart', 'node-start']);
const MOVES_RETRIES = new Set(['queue-flush', 'node-stop', 'node-start', 'node-kill', 'node-restart', 'node-pause', 'node-unpause', 'node-disconnect', 'node-connect']);

/** The outcomes of a recipient in an attempt. */
const OUTCOMES = new Set(['relayed', 'delivered', 'deferred', 'bounced', 'expired']);

/** A message a client got `250` for: the sender is owed its delivery to every recipient (or a DSN). */
export interface OwedMessage {
  messageId: string;
  /** The envelope sender: where a DSN goes. */
  from: string;
  to: string[];
}

/** What `checkNoneLost` reads: the history, the mailboxes (all of a folder), and the MTA's queue. */
export interface NoneLostTarget {
  history: History;
  mailbox(user: string): { messages(mailbox?: string): Promise<{ uid: number }[]>; read(uid: number, mailbox?: string): Promise<Buffer> };
  mta(): { queue(): Promise<unknown[]> };
}

export interface NoneLostReport {
  /** Owed (message, recipient) pairs. */
  owed: number;
  /** Pairs found in the recipient's INBOX. */
  delivered: number;
  /** Pairs not in the mailbox, for which the sender got a DSN. */
  bounced: number;
  /** Copies beyond the first, summed over the owed pairs (at-least-once delivery after a crash). */
  duplicateCopies: number;
  /** The pairs stored more than once, with their number of copies. */
  duplicates: { messageId: string; rcpt: string; copies: number }[];
  /** Owed pairs neither in the mailbox nor bounced: must be empty. */
  lost: { messageId: string; rcpt: string }[];
}

/**
 * Waits until the MTA's queue is empty (`waitForQueue`: looking again after each event that shows it moving, and
 * polling, so events a killed node never sent cannot block it); fails as a CheckFailure listing what is left when
 * `left` runs out.
 */
export async function waitForEmptyQueue(lab: { history: History; mta(): { queue(): Promise<unknown[]> } }, left: () => { timeoutMs: number }, context = ''): Promise<void> {
  const { history } = lab;
  try {
    await waitForQueue(history, { queue: () => lab.mta().queue() }, (queue) => queue.length === 0, { ...left(), description: "the MTA's queue to empty" });
  } catch (err) {
    if (!(err instanceof WaitTimeoutError)) throw err;
    const queue = await lab.mta().queue();
    throw new CheckFailure(`${context}the MTA's queue never emptied: ${queue.length} messages left, the first: ${JSON.stringify(queue.slice(0, 5), null, 1)}`, history.events.slice(-40), history.seed);
  }
}

/**
 * No accepted message is lost: every (message, recipient) a client got `250` for is in the recipient's INBOX, or
 * the sender's INBOX holds a DSN naming the message. Copies beyond the first are counted (at-least-once: a crash
 * between a remote `250` and our record of it sends the message again, RFC 5321 §6.1) and, with `maxDuplicates`,
 * bounded.
 *
 * Decidable once the MTA's queue is empty: the MX answers `250` only after the mailbox server stored the message,
 * so an empty queue means every recipient was stored or bounced (the DSN itself queued and delivered) and no retry
 * can add a copy. It waits for that (on the MTA's events between looks at the queue; events a killed node never
 * sent cannot block it), then reads every involved INBOX once, whole, through the mailbox control channel.
 * `context` (e.g. the seed) starts every failure message.
 */
export async function checkNoneLost(
  lab: NoneLostTarget,
  owed: readonly OwedMessage[],
  options: CheckOptions & { maxDuplicates?: number; context?: string } = {},
): Promise<NoneLostReport> {
  const { history } = lab;
  const left = deadline(options);
  const context = options.context ? `${options.context}: ` : '';
  await waitForEmptyQueue(lab, left, context);

  const users = new Set<string>();
  for (const m of owed) {
    users.add(m.from.toLowerCase());
    for (const rcpt of m.to) users.add(rcpt.toLowerCase());
  }
  // user → normalized Message-ID → copies; and the originals each user got a DSN for.
  const copies = new Map<string, Map<string, number>>();
  const dsnFor = new Map<string, Set<string>>();
  for (const user of users) {
    const box = lab.mailbox(user);
    const counts = new Map<string, number>();
    const bounced = new Set<string>();
    const list = await box.messages();
    const raws = await mapLimited(list, 16, (m) => box.read(m.uid));
    for (const raw of raws) {
      const ownId = messageIdOf(raw);
      const own = ownId === undefined ? undefined : normalizeMessageId(ownId);
      if (own) counts.set(own, (counts.get(own) ?? 0) + 1);
      // A DSN (multipart/report) carries the original's headers, its Message-ID among them.
      if (/^content-type:\s*multipart\/report/im.test(headerBlock(raw))) for (const original of messageIdsOf(raw)) if (original !== own) bounced.add(original);
    }
    copies.set(user, counts);
    dsnFor.set(user, bounced);
  }

  const report: NoneLostReport = { owed: 0, delivered: 0, bounced: 0, duplicateCopies: 0, duplicates: [], lost: [] };
  for (const m of owed) {
    const id = normalizeMessageId(m.messageId);
    for (const to of m.to) {
      const rcpt = to.toLowerCase();
      report.owed++;
      const n = copies.get(rcpt)?.get(id) ?? 0;
      if (n > 0) {
        report.delivered++;
        if (n > 1) {
          report.duplicateCopies += n - 1;
          report.duplicates.push({ messageId: m.messageId, rcpt, copies: n });
        }
      } else if (dsnFor.get(m.from.toLowerCase())?.has(id)) report.bounced++;
      else report.lost.push({ messageId: m.messageId, rcpt });
    }
  }
  if (report.lost.length) {
    const first = report.lost[0]!;
    throw new CheckFailure(
      `${context}${report.lost.length} of ${report.owed} accepted (message, recipient) pairs lost: neither in the mailbox nor bounced: ${report.lost
        .slice(0, 20)
        .map((l) => `${l.messageId} → ${l.rcpt}`)
        .join(', ')}${report.lost.length > 20 ? ', …' : ''}; the trace of the first follows`,
      history.trace(first.messageId),
      history.seed,
    );
  }
  if (options.maxDuplicates !== undefined && report.duplicateCopies > options.maxDuplicates) {
    throw new CheckFailure(
      `${context}${report.duplicateCopies} duplicate copies (bound ${options.maxDuplicates}) over ${report.owed} pairs: ${report.duplicates
        .slice(0, 20)
        .map((d) => `${d.messageId} → ${d.rcpt} ×${d.copies}`)
        .join(', ')}`,
      report.duplicates[0] ? history.trace(report.duplicates[0].messageId) : [],
      history.seed,
    );
  }
  return report;
}

/** The header section of a raw message (up to the first empty line). */
function headerBlock(raw: Buffer): string {
  const text = raw.toString('latin1');
  const end = text.search(/\r?\n\r?\n/);
  return end < 0 ? text : text.slice(0, end);
}

/** Every Message-ID header line in the message (its own and those of the parts it carries), normalized. */
function messageIdsOf(raw: Buffer): string[] {
  return [...raw.toString('latin1').matchAll(/^message-id:[ \t]*(<[^>\r\n]*>)/gim)].map((m) => normalizeMessageId(m[1]!));
}

async function mapLimited<T, R>(items: readonly T[], limit: number, f: (item: T) => Promise<R>): Promise<R[]> {
  const out: R[] = new Array(items.length);
  let next = 0;
  const worker = async () => {
    while (next < items.length) {
      const i = next++;
      out[i] = await f(items[i]!);
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
  return out;
}

/**
 * The lab's mail DNS as it is now has no `error` finding (`lab.checkDns()`: SPF, DKIM keys, DMARC, MX, PTR). Fails
 * with the report and the DNS edits recorded so far; returns every finding (warnings included) when it holds.
 */
export async function checkMailDnsSound(lab: { history: History; checkDns(): Promise<Finding[]> }): Promise<Finding[]> {
  const findings = await lab.checkDns();
  const errors = findings.filter((f) => f.severity === 'error');
  if (errors.length) throw new CheckFailure(`expected the lab's mail DNS to have no errors, found ${errors.length}:\n${formatFindings(errors)}`, lab.history.filter({ kind: 'dns-edit' }), lab.history.seed);
  return findings;
}
