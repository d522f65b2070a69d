// Checkers of delivery guarantees (issue 15), over the history, holding under any fault schedule:
// - every recipient of every accepted message gets exactly one delivery or one DSN, and each duplicate is reported
//   with the fault that caused it (checkDeliveryGuarantees);
// - greylisting is passed on the first retry after its delay (checkGreylistPassed);
// - no message is delivered to a recipient it was not addressed to (checkNoMisdelivery);
// - IMAP flags converge across devices once a partition healed (checkFlagsConverge).
// Same shape as the others (./index.ts): wait, within one deadline, until the property is decidable, then decide,
// failing with a CheckFailure that names the message, the recipient, the events and the cause.
import type { HistoryEvent } from '../events.js';
import { NEMESIS } from '../events.js';
import { normalizeMessageId, WaitTimeoutError, type History } from '../history/history.js';
import { CheckFailure, deadline, waitForEmptyQueue, type CheckOptions, type OwedMessage } from './index.js';

/** A fault event (`fault`, src/shared/faults.ts FaultFired), read loosely: its kind is added by the SMTP/DNS/link roles. */
interface FaultDetail {
  source?: string;
  rule?: string;
  action?: string;
  stage?: string;
  effect?: string;
  when?: string;
  sender?: string;
  recipients?: string[];
  hop?: string;
}

const isFault = (e: HistoryEvent): boolean => (e.kind as string) === 'fault';
const faultOf = (e: HistoryEvent): FaultDetail => e.detail as FaultDetail;
const lower = (s: string) => s.toLowerCase();
const sameId = (a: string | undefined, b: string) => a !== undefined && normalizeMessageId(a) === normalizeMessageId(b);
const rcptOf = (e: HistoryEvent): string | undefined => ('rcpt' in e.detail && typeof e.detail.rcpt === 'string' ? lower(e.detail.rcpt) : undefined);

/** What a duplicate was caused by, as the history shows it between the two deliveries. */
export interface DuplicateCause {
  /**
   * `drop-after-dot`: an SMTP fault rule closed the connection after the final dot, before the reply;
   * `connection-lost-after-dot`: the sending MTA (or the MX, handing off over LMTP) lost the session after the final
   *   dot with no reply (a `deferred` at
   * `end of data` with no reply from the server: a crash, a reset, a timeout);
   * `partial-handoff`: the MX handed this recipient to the mailbox but another was refused for now, so it answered
   *   the final dot with a 4xx after the copy was stored (maillab's MX has no queue);
   * `node-fault`: the nemesis stopped, killed, froze or cut off the MTA, the MX or the mailbox server while the
   *   attempt that stored the first copy was in flight, or later up to the last copy.
   */
  kind: 'drop-after-dot' | 'connection-lost-after-dot' | 'partial-handoff' | 'node-fault';
  event: HistoryEvent;
  /** One line: what happened, where, when. */
  description: string;
}

export interface DuplicateDelivery {
  messageId: string;
  rcpt: string;
  /** The `stored` events of the copies, in time order. */
  stored: HistoryEvent[];
  /**
   * The copies: the `stored` events, or more when the recipient's folder holds more (`mailboxCopies`): a copy whose
   * event died with a killed mailbox server.
   */
  copies: number;
  /** Absent: nothing in the history explains the second copy. */
  cause?: DuplicateCause;
}

export interface DeliveryReport {
  /** Owed (message, recipient) pairs. */
  owed: number;
  /** Pairs stored (once or more). */
  delivered: number;
  /** Pairs the sender bounced or expired (a DSN, or none for a null sender). */
  bounced: number;
  duplicates: DuplicateDelivery[];
}

export interface DeliveryTarget {
  history: History;
  /** The MTA's queue: once it is empty nothing more can come, so outcomes a SIGKILL swallowed are not waited for. */
  mta?(): { queue(): Promise<unknown[]> };
  /** The mailboxes: a copy whose `stored` event died with a killed mailbox server is still found there. */
  mailbox?(user: string): { find(messageId: string, mailbox?: string): Promise<unknown[]> };
}

const SETTLED = new Set(['relayed', 'delivered', 'bounced', 'expired']);

/**
 * The copies of a message in a recipient's INBOX, for a pair the sender recorded as delivered; 0 where the folder
 * cannot be read (a recipient outside the lab's mailboxes): the `stored` events alone count then.
 */
async function copiesInFolder(lab: DeliveryTarget, rcpt: string, messageId: string): Promise<number> {
  if (!lab.mailbox) return 0;
  try {
    return (await lab.mailbox(rcpt).find(messageId)).length;
  } catch {
    return 0;
  }
}
/** Nemesis actions that can make a receiver commit a message whose `250` its client never recorded. */
const NODE_FAULTS = new Set(['node-stop', 'node-kill', 'node-restart', 'node-pause', 'node-disconnect']);
/**
 * The roles a node fault must hit to explain a duplicate: those that hold the message between the final dot and the
 * sender's record of the 250 (the MTA, the MX, the mailbox server). Killing the DNS or a link proxy sends nothing twice.
 */
const DUPLICATING_ROLES = new Set(['mta', 'mx', 'mailbox']);
/** How far before the first copy a cause may lie (events of different nodes, one clock, scheduling jitter). */
const CAUSE_SLACK_MS = 50;

/**
 * Every recipient of every accepted message got exactly one delivery or one DSN; a duplicate delivery is reported
 * with its cause, the event between the first copy and the second that explains it:
 * - a `fault` of an SMTP rule dropping the connection after the final dot, before the reply (`drop-after-dot`);
 * - the sending MTA's `deferred` at `end of data` with no reply from the server (`connection-lost-after-dot`);
 * - the MX's `handoff` with this recipient stored and another refused for now, then the sending MTA's `deferred` at
 *   `end of data` (`partial-handoff`);
 * - an MTA, MX or mailbox node stopped, killed, paused or partitioned by the nemesis (`node-fault`).
 *
 * Decidable once the sender settled every pair (relayed, delivered, bounced, expired), or, with `mta()`, once its
 * queue is empty. Fails on a pair neither stored nor bounced (lost), a pair both stored and bounced, a pair bounced
 * twice, and a duplicate nothing explains; with `duplicates: 'none'`, on any duplicate (naming its cause).
 *
 * Copies are counted from the `stored` events and, with `mailbox()`, from the recipient's folder: each node's events
 * arrive on their own stream, so the sender's `relayed` can arrive before the mailbox server's `stored` of a second
 * copy, and the folder (which the MX's 250 came after) is what settles the count. Without `mailboxCopies`, the folder
 * of each delivered pair is read once through `find` (a read of the whole folder); for hundreds of messages pass
 * `mailboxCopies` (checkNoneLost's `duplicates`, one read of each folder) instead.
 */
export async function checkDeliveryGuarantees(
  lab: DeliveryTarget,
  owed: readonly OwedMessage[],
  options: CheckOptions & {
    duplicates?: 'explained' | 'none';
    context?: string;
    /**
     * The copies the recipients' folders hold, for the pairs with more than one (checkNoneLost's `duplicates`): a
     * pair with more copies than `stored` events waits for them (they may still be on their way) and, should they
     * never come (they died with a killed mailbox server), is still a duplicate of that many copies.
     */
    mailboxCopies?: readonly { messageId: string; rcpt: string; copies: number }[];
  } = {},
): Promise<DeliveryReport> {
  const { history } = lab;
  const left = deadline(options);
  const context = options.context ? `${options.context}: ` : '';
  const fail = (message: string, events: readonly HistoryEvent[]): never => {
    throw new CheckFailure(`${context}${message}`, events, history.seed);
  };
  let queueEmpty = false;
  if (lab.mta) {
    await waitForEmptyQueue({ history, mta: lab.mta.bind(lab) }, left, context);
    queueEmpty = true;
  }
  // Once the queue is empty the outcomes are on their way: give the event streams a moment to catch up, no more.
  const streamLag = () => (queueEmpty ? { timeoutMs: Math.min(left().timeoutMs, 2000) } : left());

  const held = new Map((options.mailboxCopies ?? []).map((c) => [`${normalizeMessageId(c.messageId)}\0${lower(c.rcpt)}`, c.copies]));
  const report: DeliveryReport = { owed: 0, delivered: 0, bounced: 0, duplicates: [] };
  for (const m of owed) {
    for (const to of m.to) {
      const rcpt = lower(to);
      report.owed++;
      const ofPair = (e: HistoryEvent) => sameId(e.messageId, m.messageId) && rcptOf(e) === rcpt && SETTLED.has(e.kind);
      try {
        await history.waitFor({ where: ofPair }, { ...streamLag(), description: `the sender's outcome for ${rcpt} of message ${m.messageId}` });
      } catch (err) {
        if (!(err instanceof WaitTimeoutError)) throw err;
        if (!queueEmpty) fail(`message ${m.messageId} to ${rcpt}: the sender never settled the recipient (no relayed, delivered, bounced or expired)`, history.trace(m.messageId));
      }
      const outcomes = history.events.filter(ofPair);
      const storedFor = (e: HistoryEvent) => e.kind === 'stored' && lower(e.detail.user) === rcpt && sameId(e.messageId, m.messageId);
      if (outcomes.some((e) => e.kind === 'relayed' || e.kind === 'delivered')) {
        // The mailbox server stored it before the 250 the sender recorded; its event may still be on its way.
        await history.waitFor({ where: storedFor }, { ...streamLag(), description: `stored for ${rcpt}` }).catch((err: unknown) => {
          if (!(err instanceof WaitTimeoutError)) throw err;
        });
      }
      // The folder holds more copies than `stored` events arrived: wait for the others (a moment, as for the first).
      const inFolder = options.mailboxCopies
        ? (held.get(`${normalizeMessageId(m.messageId)}\0${rcpt}`) ?? 0)
        : outcomes.some((e) => e.kind === 'relayed' || e.kind === 'delivered')
          ? await copiesInFolder(lab, rcpt, m.messageId)
          : 0;
      if (inFolder > history.events.filter(storedFor).length) {
        await history.waitForCount({ where: storedFor }, inFolder, { ...streamLag(), description: `${inFolder} stored events for ${rcpt}` }).catch((err: unknown) => {
          if (!(err instanceof WaitTimeoutError)) throw err;
        });
      }
      const stored = history.events.filter(storedFor);
      const bounces = outcomes.filter((e) => e.kind === 'bounced' || e.kind === 'expired');
      if (stored.length === 0 && bounces.length === 0) {
        const copies = inFolder || (lab.mailbox ? (await lab.mailbox(rcpt).find(m.messageId)).length : 0);
        if (copies > 0) {
          // Stored, but the event died with a killed node: the mailbox shows it.
          report.delivered++;
          continue;
        }
        fail(`message ${m.messageId} to ${rcpt}: lost: accepted, but neither stored for ${rcpt} nor bounced`, history.trace(m.messageId));
      }
      if (stored.length > 0 && bounces.length > 0)
        fail(`message ${m.messageId} to ${rcpt}: both delivered (stored ${stored.length}×) and bounced (${bounces.map((b) => b.kind).join(', ')}): expected one delivery or one DSN`, history.trace(m.messageId));
      if (bounces.length > 1) fail(`message ${m.messageId} to ${rcpt}: bounced ${bounces.length} times: expected one DSN`, history.trace(m.messageId));
      if (bounces.length === 1) {
        report.bounced++;
        continue;
      }
      report.delivered++;
      const count = Math.max(stored.length, inFolder);
      if (count > 1) {
        const settledAt = Math.max(0, ...outcomes.map((e) => e.time));
        const cause = duplicateCause(history, m, rcpt, stored, count > stored.length ? { until: settledAt } : {});
        const duplicate: DuplicateDelivery = { messageId: m.messageId, rcpt, stored, copies: count, ...(cause ? { cause } : {}) };
        report.duplicates.push(duplicate);
        const missing = count > stored.length ? `; ${rcpt}'s folder holds ${count} copies, ${count - stored.length} without a stored event (it died with the mailbox server)` : '';
        const copies = `stored ${stored.length} times for ${rcpt} (at ${stored.map((e) => new Date(e.time).toISOString()).join(', ')})${missing}`;
        if (!cause)
          fail(
            `message ${m.messageId} to ${rcpt}: duplicate: ${copies}, and nothing between the copies explains it (no drop after the final dot, no connection lost after the final dot, no partial hand-off at the MX, no node fault)`,
            history.trace(m.messageId),
          );
        if (options.duplicates === 'none')
          fail(`message ${m.messageId} to ${rcpt}: duplicate: ${copies}; cause: ${cause!.kind}: ${cause!.description}`, withEvent(history.trace(m.messageId), cause!.event));
      }
    }
  }
  return report;
}

/** A trace with one more event (a cause the trace does not hold: a fault names no Message-ID), in time order. */
function withEvent(trace: readonly HistoryEvent[], event: HistoryEvent): HistoryEvent[] {
  return trace.includes(event) ? [...trace] : [...trace, event].sort((a, b) => a.time - b.time);
}

/**
 * The event between the first copy and the last that explains the duplicate, the most specific first. With `until`
 * (a copy whose `stored` event never arrived, so its time is unknown), between the message's first attempt and
 * `until` (the sender's outcome for the recipient) instead.
 */
export function duplicateCause(history: History, m: OwedMessage, rcpt: string, stored: readonly HistoryEvent[], options: { until?: number } = {}): DuplicateCause | undefined {
  const firstAttempt = history.events.find((e) => e.kind === 'active' && sameId(e.messageId, m.messageId))?.time;
  const from = options.until !== undefined ? (firstAttempt ?? stored[0]?.time ?? 0) - CAUSE_SLACK_MS : stored[0]!.time - CAUSE_SLACK_MS;
  const to = Math.max(options.until ?? 0, stored[stored.length - 1]?.time ?? 0);
  const between = history.events.filter((e) => e.time >= from && e.time <= to);
  const at = (e: HistoryEvent) => `${e.node} at ${new Date(e.time).toISOString()}`;

  const drop = between.find((e) => {
    if (!isFault(e)) return false;
    const f = faultOf(e);
    // A fault that names a message concerns that message only (two messages to the same recipient may each meet a
    // drop of the same rule within the window); one that names none, by its recipients.
    const concerns = e.messageId !== undefined ? sameId(e.messageId, m.messageId) : f.recipients === undefined || f.recipients.some((r) => lower(r) === rcpt);
    const beforeReply = f.when !== undefined ? f.when === 'before-reply' : !/^2\d\d/.test(f.effect ?? '');
    return concerns && f.source === 'smtp' && f.action === 'drop' && f.stage === 'end-of-data' && beforeReply;
  });
  if (drop) {
    const f = faultOf(drop);
    return { kind: 'drop-after-dot', event: drop, description: `fault rule ${f.rule ?? '?'} of ${at(drop)} dropped the connection after the final dot, before the reply${f.hop ? ` (${f.hop})` : ''}: ${f.effect ?? ''}`.trimEnd() };
  }

  const lost = between.find(
    (e) =>
      e.kind === 'deferred' &&
      sameId(e.messageId, m.messageId) &&
      lower(e.detail.rcpt) === rcpt &&
      /end of data/i.test(e.detail.command ?? '') &&
      /session lost|timed out|closed/i.test(e.detail.error) &&
      !/said:/.test(e.detail.error),
  );
  if (lost && lost.kind === 'deferred') return { kind: 'connection-lost-after-dot', event: lost, description: `${at(lost)}: ${lost.detail.error} on ${lost.detail.hop} (no reply after the final dot)` };
  // The same one hop further: the MX's LMTP session to the mailbox lost after the final dot (the mailbox stored, its
  // reply never came), so the MX answered the MTA with a 4xx and the MTA's retry stored again.
  const lostAtMx = between.find((e) => e.kind === 'handoff-failed' && sameId(e.messageId, m.messageId) && /end of data/i.test(e.detail.error) && /session lost|timed out|closed|reset/i.test(e.detail.error));
  if (lostAtMx && lostAtMx.kind === 'handoff-failed') return { kind: 'connection-lost-after-dot', event: lostAtMx, description: `${at(lostAtMx)}: ${lostAtMx.detail.error} on its hand-off to ${lostAtMx.detail.to} (no reply after the final dot)` };

  // maillab's MX has no queue: it answers the final dot after its LMTP hand-off, so when the mailbox took this
  // recipient but refused another one for now (greylisted, 451), the whole message gets a 4xx and the MTA's retry
  // stores this recipient again (at least once, RFC 5321 §6.1). Evidence: the MX's `handoff` of this message with this
  // recipient accepted and another not, then the MTA's deferral of this recipient at end of data.
  const partial = between.find(
    (e) =>
      e.kind === 'handoff' &&
      sameId(e.messageId, m.messageId) &&
      e.detail.recipients.some((r) => lower(r.address) === rcpt && r.accepted) &&
      e.detail.recipients.some((r) => !r.accepted),
  );
  const refused = partial && between.find((e) => e.kind === 'deferred' && e.time >= partial.time && sameId(e.messageId, m.messageId) && lower(e.detail.rcpt) === rcpt && /end of data/i.test(e.detail.command ?? ''));
  if (partial && refused && refused.kind === 'deferred' && partial.kind === 'handoff') {
    const others = partial.detail.recipients.filter((r) => !r.accepted).map((r) => `${r.address} (${r.reply ?? 'refused'})`);
    return { kind: 'partial-handoff', event: refused, description: `${at(partial)} handed ${rcpt} to the mailbox but not ${others.join(', ')}, and answered the final dot with ${refused.detail.reply ?? refused.detail.error}: the MTA's retry stored it again` };
  }

  // A node fault that hit while the attempt that stored the first copy was in flight (a stopped MX answers the final
  // dot with 421 once its hand-off stored the copy; a killed mailbox server never sends its 250), or later, up to the
  // last copy: the first of them. The window opens at that attempt's start, not at the copy: a stop begun before the
  // copy was stored is the one that cut its reply off, where a later one would only be a bystander.
  const attemptStart = options.until === undefined ? history.events.filter((e) => e.kind === 'active' && sameId(e.messageId, m.messageId) && e.time <= stored[0]!.time).at(-1)?.time : undefined;
  const nodeFrom = Math.min(from, attemptStart ?? from);
  const node = history.events.find((e) => e.time >= nodeFrom && e.time <= to && e.node === NEMESIS && NODE_FAULTS.has(e.kind) && 'role' in e.detail && DUPLICATING_ROLES.has(String(e.detail.role)));
  if (node && 'target' in node.detail) {
    const refusedAfter = between.find((e) => e.kind === 'deferred' && e.time >= node.time && sameId(e.messageId, m.messageId) && lower(e.detail.rcpt) === rcpt);
    const then = refusedAfter && refusedAfter.kind === 'deferred' ? `; the MTA then deferred ${rcpt}: ${refusedAfter.detail.reply}${refusedAfter.detail.command ? ` (in reply to ${refusedAfter.detail.command})` : ''}` : '';
    return { kind: 'node-fault', event: node, description: `${node.kind} of ${node.detail.target} at ${new Date(node.time).toISOString()}${then}` };
  }
  // A node brought back between the copies after a fault that the window above missed: a fault is recorded when the
  // harness saw it done (docker kill returns before the process is gone, and each node stamps its events with its own
  // clock), so the killed MTA's last events, the first copy's delivery among them, can carry later times than the
  // kill. Its queue had not recorded that delivery, and the restarted MTA sent the message again.
  const restart = history.events.find((e) => e.time >= from && e.time <= to && e.node === NEMESIS && e.kind === 'node-start' && 'role' in e.detail && DUPLICATING_ROLES.has(String(e.detail.role)));
  const target = restart && 'target' in restart.detail ? String(restart.detail.target) : undefined;
  const fault = target !== undefined && history.events.filter((e) => e.time < restart!.time && e.node === NEMESIS && NODE_FAULTS.has(e.kind) && 'target' in e.detail && String(e.detail.target) === target).at(-1);
  if (restart && fault) {
    return { kind: 'node-fault', event: fault, description: `${fault.kind} of ${target} at ${new Date(fault.time).toISOString()}, started again at ${new Date(restart.time).toISOString()}, between the copies` };
  }
  return undefined;
}

/**
 * Greylisting was passed on the first retry after its delay: a greylist `fault` fired for `rcpt` (the first sight),
 * the sender deferred, and the recipient was delivered on the first attempt that started once `delayMs` had passed
 * since that first sight (an attempt may start up to `toleranceMs`, default 250, before it: its RCPT comes later).
 * Fails naming the message, the recipient, the greylist fault and the attempt that was not accepted.
 */
export async function checkGreylistPassed(
  lab: { history: History },
  messageId: string,
  rcpt: string,
  options: CheckOptions & { delayMs: number; toleranceMs?: number },
): Promise<{ greylistedAt: number; deliveredAt: number; attempts: number }> {
  const { history } = lab;
  const left = deadline(options);
  const r = lower(rcpt);
  const fail = (message: string): never => {
    throw new CheckFailure(`message ${messageId} to ${r}: ${message}`, history.trace(messageId), history.seed);
  };
  const delivery = await history
    .waitFor({ where: (e) => (e.kind === 'relayed' || e.kind === 'delivered') && sameId(e.messageId, messageId) && rcptOf(e) === r }, { ...left(), description: `the delivery of ${messageId} to ${r}` })
    .catch((err: unknown) => {
      if (err instanceof WaitTimeoutError) fail(`never delivered: ${err.message.split('\n')[0]}`);
      throw err;
    });
  const greylist = history.events.find(
    (e) => isFault(e) && faultOf(e).action === 'greylist' && e.time <= delivery.time && (sameId(e.messageId, messageId) || (faultOf(e).recipients ?? []).some((x) => lower(x) === r)),
  );
  if (!greylist) return fail('no greylist fault fired for this recipient before its delivery');
  const queued = history.events.find((e) => e.kind === 'queued' && sameId(e.messageId, messageId));
  const mine = (e: HistoryEvent) => queued !== undefined && e.node === queued.node && e.queueId === queued.queueId;
  const attempts = history.events.filter((e) => e.kind === 'active' && mine(e) && e.detail.recipients.some((x) => lower(x) === r));
  const passAt = greylist.time + options.delayMs - (options.toleranceMs ?? 250);
  const firstAfter = attempts.find((a) => a.time >= passAt);
  if (!firstAfter) return fail(`delivered, but no attempt started after the greylisting delay of ${options.delayMs} ms (greylisted at ${new Date(greylist.time).toISOString()})`);
  const refusedAfter = history.events.find((e) => e.kind === 'deferred' && mine(e) && lower(e.detail.rcpt) === r && e.time >= firstAfter.time);
  if (refusedAfter && refusedAfter.kind === 'deferred')
    fail(
      `greylisting not passed on the first retry after its delay (${options.delayMs} ms from the first sight at ${new Date(greylist.time).toISOString()}, rule ${faultOf(greylist).rule ?? '?'}): ` +
        `the attempt started at ${new Date(firstAfter.time).toISOString()} was deferred again (${refusedAfter.detail.reply})`,
    );
  return { greylistedAt: greylist.time, deliveredAt: delivery.time, attempts: attempts.filter((a) => a.time <= delivery.time).length };
}

/**
 * No message was stored for a recipient it was not addressed to. The addressees are the owed messages' `to` when
 * given, else what the client submitted (`submitted`), else what an MTA queued (`queued`); a message of neither is
 * not judged. Judges the `stored` events present now (call it after a delivery checker waited).
 */
export function checkNoMisdelivery(lab: { history: History }, owed?: readonly OwedMessage[], options: { context?: string } = {}): { checked: number } {
  const { history } = lab;
  const addressed = new Map<string, Set<string>>();
  const add = (id: string, to: readonly string[]) => {
    const key = normalizeMessageId(id);
    const set = addressed.get(key) ?? new Set<string>();
    for (const t of to) set.add(lower(t));
    addressed.set(key, set);
  };
  if (owed) for (const m of owed) add(m.messageId, m.to);
  else {
    const submitted = history.filter({ kind: 'submitted' });
    for (const e of submitted) if (e.messageId) add(e.messageId, e.detail.to);
    const known = new Set(addressed.keys());
    for (const e of history.filter({ kind: 'queued' })) if (e.messageId && !known.has(normalizeMessageId(e.messageId))) add(e.messageId, e.detail.to);
  }
  let checked = 0;
  for (const e of history.filter({ kind: 'stored' })) {
    if (!e.messageId) continue;
    const to = addressed.get(normalizeMessageId(e.messageId));
    if (!to) continue;
    checked++;
    if (!to.has(lower(e.detail.user)))
      throw new CheckFailure(
        `${options.context ? `${options.context}: ` : ''}message ${e.messageId} was stored for ${e.detail.user} (uid ${e.detail.uid} in ${e.detail.mailbox}), which it was not addressed to (addressed to ${[...to].join(', ')})`,
        [...history.trace(e.messageId).filter((x) => x !== e), e].sort((a, b) => a.time - b.time),
        history.seed,
      );
  }
  return { checked };
}

/**
 * \Recent is not a flag devices share: the server shows it to one session only, the first to see the message
 * (RFC 3501 §2.3.2), so two devices in perfect sync disagree on it. It is left out of the views compared.
 */
const SESSION_FLAGS = new Set(['\\recent']);

/** One device's view of its INBOX, from its `device-*` events: uid → flags (sorted, without \Recent), with the Message-ID. */
function deviceViews(history: History, devices: readonly string[]): Map<string, Map<number, { flags: string; messageId?: string }>> {
  const views = new Map(devices.map((d) => [d, new Map<number, { flags: string; messageId?: string }>()]));
  for (const e of history.events) {
    const view = views.get(e.node);
    if (!view) continue;
    if (e.kind === 'device-synced' || e.kind === 'device-flags') view.set(e.detail.uid, { flags: [...e.detail.flags].filter((f) => !SESSION_FLAGS.has(lower(f))).sort().join(' '), ...(e.messageId ? { messageId: e.messageId } : (view.get(e.detail.uid)?.messageId ? { messageId: view.get(e.detail.uid)!.messageId! } : {})) });
    if (e.kind === 'device-removed') view.delete(e.detail.uid);
  }
  return views;
}

/** The first disagreement between devices' views, in words, or undefined when they agree. */
function disagreement(views: Map<string, Map<number, { flags: string; messageId?: string }>>): { uid: number; messageId?: string; text: string }[] {
  const uids = new Set<number>();
  for (const view of views.values()) for (const uid of view.keys()) uids.add(uid);
  const differ: { uid: number; messageId?: string; text: string }[] = [];
  for (const uid of [...uids].sort((a, b) => a - b)) {
    const seen = [...views].map(([device, view]) => ({ device, entry: view.get(uid) }));
    const distinct = new Set(seen.map((s) => (s.entry ? `[${s.entry.flags}]` : '(absent)')));
    if (distinct.size > 1) {
      const messageId = seen.find((s) => s.entry?.messageId)?.entry?.messageId;
      differ.push({ uid, ...(messageId ? { messageId } : {}), text: seen.map((s) => `${s.device} ${s.entry ? `[${s.entry.flags}]` : '(absent)'}`).join(', ') });
    }
  }
  return differ;
}

/**
 * IMAP flags converge: the devices (`<user>/<device>` nodes, as their `device-*` events name them; by default every
 * device of `user`) end with the same messages and the same flags on each. Waits, on their events, until they agree
 * (after a partition heals they resync), within the deadline; fails naming every message they disagree on, each
 * device's flags on it, and the devices' events for those messages with the nemesis's actions since `after` (e.g.
 * the partition).
 */
export async function checkFlagsConverge(
  lab: { history: History },
  options: CheckOptions & { user?: string; devices?: string[]; after?: number },
): Promise<{ devices: string[]; messages: number }> {
  const { history } = lab;
  const left = deadline(options);
  const devices =
    options.devices ??
    [...new Set(history.events.filter((e) => e.kind.startsWith('device-') && (options.user === undefined || lower(e.node.split('/')[0]!) === lower(options.user))).map((e) => e.node))].sort();
  if (devices.length < 2) throw new CheckFailure(`checkFlagsConverge needs two devices or more; found ${devices.length === 0 ? 'none' : devices.join(', ')}${options.user ? ` of ${options.user}` : ''}`, [], history.seed);
  for (;;) {
    const views = deviceViews(history, devices);
    const differ = disagreement(views);
    if (differ.length === 0) return { devices, messages: views.get(devices[0]!)!.size };
    const known = new Set(history.events);
    try {
      await history.waitFor({ where: (e) => devices.includes(e.node) && !known.has(e) }, { ...left(), description: `the devices ${devices.join(', ')} to agree` });
    } catch (err) {
      if (!(err instanceof WaitTimeoutError)) throw err;
      const after = options.after ?? 0;
      // Every message the devices disagree on, in UID order (which message came first is the delivery's order, not
      // the test's), with the devices' events for each.
      const ofMessage = (e: HistoryEvent) => differ.some((d) => (e.messageId === undefined || d.messageId === undefined || sameId(e.messageId, d.messageId)) && 'uid' in e.detail && e.detail.uid === d.uid);
      const events = history.events.filter((e) => (devices.includes(e.node) && ofMessage(e)) || (e.node === NEMESIS && e.time >= after));
      const lines = differ.map((d) => `message ${d.messageId ?? '(no Message-ID)'} (uid ${d.uid}): ${d.text}`);
      throw new CheckFailure(`IMAP flags did not converge: ${lines.join('; ')}`, events, history.seed);
    }
  }
}
