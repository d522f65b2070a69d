// vitest matchers over a running lab's history: `await expect(lab()).toHaveDelivered(sent, { to })` and friends.
//
// Each matcher waits, with one timeout (default 10 s, `{ timeoutMs }`), until its question is DECIDED, not merely
// until it holds:
// - it passes as soon as the history shows what it asks for (a `stored` for the recipient, a `bounced` with that
//   status...);
// - it fails as soon as the history shows the contrary for good (the recipient bounced where a delivery was expected,
//   was delivered where a bounce was expected, its final outcome came with no deferral...), without waiting out the
//   timeout;
// - otherwise it fails when the timeout runs out.
// So `.not` is decided the same way: `.not.toHaveDelivered` passes once the recipient bounced, and otherwise only
// after the whole timeout has passed with no copy stored. It never passes just because the mail had not arrived yet
// at the moment of the call (pass a shorter `timeoutMs` to bound that wait). A value that is not a started lab, and
// a Message-ID no event of the lab carries, are errors, with or without `.not`: nothing could be decided.
//
// Every failure shows the message's trace as a table (trace-table.ts): offsets, hosts, events, replies, faults.
import { expect, type MatcherState } from 'vitest';
import type { AuthAction } from '../mx/api.js';
import { linkNodeName } from '../proxy/api.js';
import type { HistoryEvent } from '../harness/events.js';
import { DEFAULT_WAIT_MS, normalizeMessageId, WaitTimeoutError, type History } from '../harness/history/history.js';
import { CheckFailure, deadline, waitForEmptyQueue } from '../harness/checkers/index.js';
import { checkDeliveryGuarantees, type DeliveryTarget } from '../harness/checkers/guarantees.js';
import { headerSection } from '../shared/headers.js';
import { now } from '../shared/events.js';
import { formatTraceTable, summarizeEvent } from './trace-table.js';

/** A message: its Message-ID, or what sent it (`lab.client(...).send()`'s result, the HTTP API's `{ MessageID }`). */
export type MessageRef = string | { messageId: string } | { MessageID: string };

export interface WaitOption {
  /**
   * How long the matcher may wait for its question to be decided, in all (default 10 000 ms). 0: judge the history
   * as it is at the call, waiting for nothing.
   */
  timeoutMs?: number;
}

export interface DeliveredOptions extends WaitOption {
  /** The recipient(s) that must have a copy stored; default every envelope recipient of the message. */
  to?: string | readonly string[];
}

export interface BouncedOptions extends WaitOption {
  /** The recipient that bounced; default any recipient of the message. */
  to?: string;
  /** The RFC 3463 status of the bounce, e.g. `5.1.1` (exactly), or a pattern. */
  status?: string | RegExp;
  /**
   * Also wait for the DSN to reach the sender (its `stored`, or it relayed or delivered on): the default. `false`:
   * the sending MTA's bounce alone. A bounce for the null sender makes no DSN (`dsn-suppressed`) and passes without.
   */
  dsn?: boolean;
}

export interface DeferredOptions extends WaitOption {
  /** The recipient that was deferred; default any recipient of the message. */
  to?: string;
  /** Matched against the deferral's `error` (where, which command, which reply) and its `reply`. */
  error?: RegExp | string;
}

/** The verdicts `toHaveAuthenticationResults` compares, as RFC 8601 names them (`pass`, `fail`, `none`...). */
export interface AuthenticationExpectation extends WaitOption {
  spf?: string;
  /** One of the message's DKIM signatures has this result; `none`: the message was unsigned. */
  dkim?: string;
  /** `none` also when DMARC could not be evaluated. */
  dmarc?: string;
  arc?: string;
  /** What the MX did (only its `authenticated` event says). */
  action?: AuthAction;
  /** The MX whose verdict counts, by host name in the lab (default the first that verified the message). */
  node?: string;
}

export interface NoDuplicatesOptions extends WaitOption {
  /** The messages to check; default every message submitted to the lab's MTAs so far (their `submitted` events). */
  messages?: readonly MessageRef[];
}

/** The matchers' signatures, merged into vitest's `Matchers` below (so `expect(lab)` knows them). */
export interface MaillabMatchers {
  /** A copy of the message was stored for `to` (every recipient, without `to`). Fails at once when one bounced. */
  toHaveDelivered(message: MessageRef, options?: DeliveredOptions): Promise<void>;
  /** The sending MTA bounced the message (for `to`, with `status`) and, by default, its DSN reached the sender. */
  toHaveBounced(message: MessageRef, options?: BouncedOptions): Promise<void>;
  /** The sending MTA deferred the message (for `to`, with an error matching `error`). */
  toHaveDeferred(message: MessageRef, options?: DeferredOptions): Promise<void>;
  /** Host `from` handed the message to host `to` (lab host names, e.g. 'mta' → 'mx', 'mx' → 'mailbox'). */
  toHaveHop(message: MessageRef, from: string, to: string, options?: WaitOption): Promise<void>;
  /** The MX's verdicts on the message (its `authenticated` event, or the stored copy's Authentication-Results). */
  toHaveAuthenticationResults(message: MessageRef, expected: AuthenticationExpectation): Promise<void>;
  /** Once the MTA's queue is empty, no (message, recipient) was stored twice. */
  toHaveNoDuplicates(options?: NoDuplicatesOptions): Promise<void>;
}

declare module 'vitest' {
  // `T` as vitest declares it: merged declarations must agree on their type parameters.
  interface Matchers<T = any> extends MaillabMatchers {}
}

// ---- what the matchers read of a lab ----

interface LabNode {
  name: string;
  config: { hostname: string; address: string };
}

/** What the matchers need of a started lab (a StartedLab is one). */
export interface MatcherLab extends DeliveryTarget {
  history: History;
  trace(messageId: string): HistoryEvent[];
  nodes(): LabNode[];
  mta(): { queue(): Promise<unknown[]> };
  mailbox(user: string, options?: { server?: string }): { read(uid: number, mailbox?: string): Promise<Buffer>; find(messageId: string, mailbox?: string): Promise<unknown[]> };
}

function describeValue(v: unknown): string {
  if (v === null) return 'null';
  if (typeof v === 'object') return `an object with keys ${Object.keys(v).slice(0, 8).join(', ') || '(none)'}`;
  return `${typeof v} ${String(v).slice(0, 60)}`;
}

/** The started lab `expect()` was given, or an error naming the mistake (a wrong value never passes, even with `.not`). */
function labOf(received: unknown, matcher: string): MatcherLab {
  if (typeof received === 'function')
    throw new TypeError(`${matcher}: expect() was given a function; pass the started lab itself: expect(lab()), calling useLab's getter`);
  const lab = received as Partial<MatcherLab> | null;
  const history = lab?.history as Partial<History> | undefined;
  if (!lab || typeof lab !== 'object' || !history || !Array.isArray(history.events) || typeof history.waitFor !== 'function' || typeof lab.trace !== 'function' || typeof lab.nodes !== 'function')
    throw new TypeError(`${matcher}: expect() needs a started maillab lab (what useLab's getter or Lab#start() returns), got ${describeValue(received)}`);
  return lab as MatcherLab;
}

function messageIdOf(ref: unknown, matcher: string): string {
  if (typeof ref === 'string' && normalizeMessageId(ref) !== '') return ref.trim();
  if (ref && typeof ref === 'object') {
    const id = (ref as { messageId?: unknown }).messageId ?? (ref as { MessageID?: unknown }).MessageID;
    if (typeof id === 'string' && normalizeMessageId(id) !== '') return id.trim();
  }
  throw new TypeError(`${matcher}: expected a Message-ID or a send result with a messageId, got ${describeValue(ref)}`);
}

function timeoutOf(options: WaitOption | undefined, matcher: string): number {
  const t = options?.timeoutMs ?? DEFAULT_WAIT_MS;
  if (typeof t !== 'number' || !Number.isFinite(t) || t < 0) throw new TypeError(`${matcher}: timeoutMs must be a number of milliseconds ≥ 0, got ${String(t)}`);
  return t;
}

/** What a matcher of one message starts from, each checked: the lab, the Message-ID, the timeout. */
function subjectOf(matcher: string, received: unknown, ref: unknown, options: WaitOption | undefined): { lab: MatcherLab; id: string; timeoutMs: number } {
  return { lab: labOf(received, matcher), id: messageIdOf(ref, matcher), timeoutMs: timeoutOf(options, matcher) };
}

const escapeRegExp = (text: string) => text.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');

// ---- reading the history ----

const lower = (s: string) => s.toLowerCase();
const FINAL = new Set(['relayed', 'delivered', 'bounced', 'expired']);
const SUCCESS = new Set(['relayed', 'delivered']);
/**
 * How long a verdict that rests on the absence of another host's event waits after the events it rests on: each host
 * streams its events on its own connection, so the MX's hand-off can reach the history after the MTA's `relayed`.
 */
const STREAM_GRACE_MS = 1000;

type Failure = HistoryEvent & { kind: 'bounced' | 'expired' };
const isFailure = (e: HistoryEvent): e is Failure => e.kind === 'bounced' || e.kind === 'expired';
const isOf = (id: string) => {
  const wanted = normalizeMessageId(id);
  return (e: HistoryEvent) => e.messageId !== undefined && normalizeMessageId(e.messageId) === wanted;
};
const rcptOf = (e: HistoryEvent): string | undefined => ('rcpt' in e.detail && typeof e.detail.rcpt === 'string' ? lower(e.detail.rcpt) : undefined);
const eventsOf = (lab: MatcherLab, id: string) => lab.history.events.filter(isOf(id));
/** The Message-IDs of the DSNs the MTA made for a message (their traces show where the bounce went). */
const dsnIdsOf = (events: readonly HistoryEvent[]) => events.flatMap((e) => (e.kind === 'dsn-created' ? [e.detail.dsnMessageId] : []));

/** The envelope recipients, from the first event that lists them (submission, queueing, or an MX's reception). */
function recipientsOf(events: readonly HistoryEvent[]): string[] | undefined {
  const first = events.find((e) => (e.kind === 'submitted' || e.kind === 'queued' || e.kind === 'received') && Array.isArray(e.detail.to));
  return first && 'to' in first.detail && Array.isArray(first.detail.to) ? first.detail.to.map(lower) : undefined;
}

/** The final outcome of each recipient at the sending MTA, and when the last came; undefined while one is open. */
function settled(events: readonly HistoryEvent[]): { at: number; outcomes: HistoryEvent[] } | undefined {
  const rcpts = recipientsOf(events);
  if (!rcpts) return undefined;
  const outcomes: HistoryEvent[] = [];
  for (const r of rcpts) {
    const outcome = events.find((e) => FINAL.has(e.kind) && rcptOf(e) === r);
    if (!outcome) return undefined;
    outcomes.push(outcome);
  }
  return { at: Math.max(...outcomes.map((e) => e.time)), outcomes };
}

// ---- deciding ----

interface Verdict {
  pass: boolean;
  /** What was found, as the end of "expected …, but …" (for a failure) or "…, but it did: …" (under `.not`). */
  reason: string;
  /** Other Message-IDs whose traces explain the verdict (a DSN's). */
  related?: string[];
}

/** Undecided (undefined), decided, or decided unless the history changes before `notBefore` (ms since the epoch). */
type Judgement = Verdict | { notBefore: number; verdict: Verdict } | undefined;

/**
 * Judges the history now and after each new event, until the judgement is final or `timeoutMs` has passed; then
 * `onTimeout` says what was missing.
 */
async function decide(history: History, timeoutMs: number, judge: () => Judgement | Promise<Judgement>, onTimeout: () => Verdict): Promise<Verdict> {
  const end = now() + timeoutMs;
  for (;;) {
    // Known before judging: an event that arrives while an async judge runs is then seen as new at once.
    const known = new Set(history.events);
    const judgement = await judge();
    if (judgement && !('notBefore' in judgement)) return judgement;
    const left = end - now();
    if (judgement && judgement.notBefore <= now()) return judgement.verdict;
    if (left <= 0) return onTimeout();
    const wait = judgement ? Math.min(left, judgement.notBefore - now()) : left;
    try {
      await history.waitFor({ where: (e) => !known.has(e) }, { timeoutMs: Math.max(1, Math.ceil(wait)), description: 'the next event' });
    } catch (err) {
      if (!(err instanceof WaitTimeoutError)) throw err;
    }
  }
}

interface Expectation {
  matcher: string;
  messageId: string;
  /** "be delivered to bob@receiver.test": what `expected message <id> [not] to …` asks. */
  phrase: string;
}

/** The traces of the message and of the related ones (its DSN), merged in time order. */
function tracesOf(lab: MatcherLab, ids: readonly string[]): HistoryEvent[] {
  const all = new Set<HistoryEvent>();
  for (const id of ids) for (const e of lab.trace(id)) all.add(e);
  return [...all].sort((a, b) => a.time - b.time);
}

/** The result vitest wants: the verdict and, for its failure (or its success under `.not`), the message with the trace. */
function resultOf(state: MatcherState, lab: MatcherLab, x: Expectation, verdict: Verdict): { pass: boolean; message: () => string } {
  const ids = [x.messageId, ...(verdict.related ?? [])];
  const trace = tracesOf(lab, ids);
  if (trace.length === 0 && eventsOf(lab, x.messageId).length === 0)
    throw new Error(`${x.matcher}: the lab never saw message ${x.messageId}: no event carries this Message-ID (a typo, or a message of another lab?)`);
  const seed = lab.history.seedLine ? `\n${lab.history.seedLine}` : '';
  const but = state.isNot ? `but it did: ${verdict.reason}` : `but ${verdict.reason}`;
  return {
    pass: verdict.pass,
    message: () => `expected message ${x.messageId} ${state.isNot ? 'not ' : ''}to ${x.phrase}, ${but}\n\ntrace of ${ids.join(' and ')}:\n${formatTraceTable(trace)}${seed}`,
  };
}

const at = (lab: MatcherLab, id: string, e: HistoryEvent) => {
  const first = lab.trace(id)[0]?.time ?? e.time;
  return `+${(e.time - first).toFixed(1)} ms`;
};
const line = (e: HistoryEvent) => `${e.node} ${e.kind}: ${summarizeEvent(e)}`;

// ---- the matchers ----

async function toHaveDelivered(this: MatcherState, received: unknown, ref: MessageRef, options: DeliveredOptions = {}) {
  const matcher = 'toHaveDelivered';
  const { lab, id, timeoutMs } = subjectOf(matcher, received, ref, options);
  const wanted = options.to === undefined ? undefined : (typeof options.to === 'string' ? [options.to] : [...options.to]).map(lower);
  const phrase = `be delivered to ${wanted?.join(', ') ?? 'every recipient'}`;
  const storedFor = (events: readonly HistoryEvent[], r: string) => events.find((e) => e.kind === 'stored' && lower(e.detail.user) === r);

  const verdict = await decide(
    lab.history,
    timeoutMs,
    () => {
      const events = eventsOf(lab, id);
      const rcpts = wanted ?? recipientsOf(events);
      if (!rcpts) return undefined;
      const copies: string[] = [];
      for (const r of rcpts) {
        const copy = storedFor(events, r);
        if (copy) {
          copies.push(`stored for ${r} (${copy.node}, ${summarizeEvent(copy)}) at ${at(lab, id, copy)}`);
          continue;
        }
        const failure = events.find((e) => isFailure(e) && rcptOf(e) === r);
        if (failure) return { pass: false, reason: `${r} ${failure.kind} instead: ${line(failure)}`, related: dsnIdsOf(events) };
        return undefined;
      }
      return { pass: true, reason: copies.join('; ') };
    },
    () => {
      const events = eventsOf(lab, id);
      const rcpts = wanted ?? recipientsOf(events);
      if (!rcpts) return { pass: false, reason: `within ${timeoutMs} ms no event named its recipients (no submitted, queued or received)` };
      const missing = rcpts.filter((r) => !storedFor(events, r));
      const last = missing.map((r) => {
        const latest = events.filter((e) => rcptOf(e) === r).at(-1);
        return latest ? `${r} (last: ${line(latest)})` : r;
      });
      return { pass: false, reason: `within ${timeoutMs} ms no copy was stored for ${last.join(', ')}` };
    },
  );
  return resultOf(this, lab, { matcher, messageId: id, phrase }, verdict);
}

function statusMatches(status: string | RegExp | undefined, actual: string): boolean {
  if (status === undefined) return true;
  return typeof status === 'string' ? actual === status : status.test(actual);
}

async function toHaveBounced(this: MatcherState, received: unknown, ref: MessageRef, options: BouncedOptions = {}) {
  const matcher = 'toHaveBounced';
  const { lab, id, timeoutMs } = subjectOf(matcher, received, ref, options);
  const rcpt = options.to === undefined ? undefined : lower(options.to);
  const wantDsn = options.dsn !== false;
  const phrase = `bounce${rcpt ? ` for ${rcpt}` : ''}${options.status !== undefined ? ` with status ${String(options.status)}` : ''}${wantDsn ? ', its DSN reaching the sender' : ''}`;
  const forRcpt = (e: HistoryEvent) => rcpt === undefined || rcptOf(e) === rcpt;
  const dsnOf = () =>
    lab.history.events.find(
      (e) => e.kind === 'dsn-created' && e.detail.for.messageId !== null && normalizeMessageId(e.detail.for.messageId) === normalizeMessageId(id) && (rcpt === undefined || e.detail.rcpts.some((r) => lower(r) === rcpt)),
    );
  let related: string[] = [];

  const verdict = await decide(
    lab.history,
    timeoutMs,
    (): Judgement => {
      const events = eventsOf(lab, id);
      const bounces = events.filter((e): e is Failure => isFailure(e) && forRcpt(e));
      const matching = bounces.find((e) => statusMatches(options.status, e.detail.status));
      if (matching) {
        const bounced = `${rcptOf(matching)} ${matching.kind} with ${matching.detail.status} (${line(matching)})`;
        if (!wantDsn) return { pass: true, reason: bounced };
        const suppressed = events.find((e) => e.kind === 'dsn-suppressed' && (rcpt === undefined || e.detail.rcpts.some((r) => lower(r) === rcpt)));
        if (suppressed) return { pass: true, reason: `${bounced}; no DSN, as for a bounce: ${summarizeEvent(suppressed)}` };
        const dsn = dsnOf();
        if (!dsn || dsn.kind !== 'dsn-created') return undefined;
        related = [dsn.detail.dsnMessageId];
        const dsnEvents = eventsOf(lab, dsn.detail.dsnMessageId);
        const reached = dsnEvents.find((e) => (e.kind === 'stored' && lower(e.detail.user) === lower(dsn.detail.to)) || SUCCESS.has(e.kind));
        if (reached) return { pass: true, reason: `${bounced}; its DSN ${dsn.detail.dsnMessageId} reached ${dsn.detail.to}: ${line(reached)}`, related };
        const lost = dsnEvents.find((e) => isFailure(e));
        if (lost) return { pass: false, reason: `${bounced}, but its DSN ${dsn.detail.dsnMessageId} could not be delivered to ${dsn.detail.to}: ${line(lost)}`, related };
        return undefined;
      }
      const delivered = events.find((e) => SUCCESS.has(e.kind) && forRcpt(e));
      const done = rcpt !== undefined ? events.find((e) => FINAL.has(e.kind) && rcptOf(e) === rcpt) : settled(events)?.outcomes.at(-1);
      if (done && bounces.length > 0) return { pass: false, reason: `it bounced with another status: ${bounces.map(line).join('; ')}` };
      if (done && delivered) return { pass: false, reason: `${rcpt ?? 'every recipient'} was delivered: ${line(delivered)}` };
      return undefined;
    },
    () => {
      const events = eventsOf(lab, id);
      const bounced = events.find((e) => isFailure(e) && forRcpt(e));
      if (bounced && wantDsn) {
        const dsn = dsnOf();
        return { pass: false, reason: `it bounced (${line(bounced)}), but within ${timeoutMs} ms ${dsn && dsn.kind === 'dsn-created' ? `its DSN ${dsn.detail.dsnMessageId} did not reach ${dsn.detail.to}` : 'no DSN was created'}`, related };
      }
      const deferred = events.filter((e) => e.kind === 'deferred' && forRcpt(e)).at(-1);
      return { pass: false, reason: `within ${timeoutMs} ms it did not bounce${deferred ? ` (last deferral: ${line(deferred)})` : ''}` };
    },
  );
  return resultOf(this, lab, { matcher, messageId: id, phrase }, verdict);
}

async function toHaveDeferred(this: MatcherState, received: unknown, ref: MessageRef, options: DeferredOptions = {}) {
  const matcher = 'toHaveDeferred';
  const { lab, id, timeoutMs } = subjectOf(matcher, received, ref, options);
  const rcpt = options.to === undefined ? undefined : lower(options.to);
  const pattern = typeof options.error === 'string' ? new RegExp(escapeRegExp(options.error)) : options.error;
  const phrase = `be deferred${rcpt ? ` for ${rcpt}` : ''}${pattern ? ` with an error matching ${String(pattern)}` : ''}`;
  const deferrals = () => eventsOf(lab, id).filter((e) => e.kind === 'deferred' && (rcpt === undefined || rcptOf(e) === rcpt));
  const matches = (e: HistoryEvent) => e.kind === 'deferred' && (!pattern || pattern.test(e.detail.error) || pattern.test(e.detail.reply));
  const others = (list: HistoryEvent[]) => (list.length ? `; its deferrals: ${list.map(line).join('; ')}` : '');

  const verdict = await decide(
    lab.history,
    timeoutMs,
    () => {
      const found = deferrals();
      const match = found.find(matches);
      if (match) return { pass: true, reason: line(match) };
      const events = eventsOf(lab, id);
      // Deferrals and outcomes come from the same MTA, in order: after the final outcome no deferral can follow.
      const done = rcpt !== undefined ? events.find((e) => FINAL.has(e.kind) && rcptOf(e) === rcpt) : settled(events)?.outcomes.at(-1);
      if (done) return { pass: false, reason: `${rcptOf(done) ?? 'it'} was settled (${line(done)}) with no such deferral${others(found)}` };
      return undefined;
    },
    () => ({ pass: false, reason: `within ${timeoutMs} ms no such deferral came${others(deferrals())}` }),
  );
  return resultOf(this, lab, { matcher, messageId: id, phrase }, verdict);
}

/** How one host is named in another's events: its host name, its address, and the address of a link proxy to it. */
function namesOf(lab: MatcherLab, node: LabNode, link: string): { hostname: string; addresses: string[] } {
  const proxy = lab.nodes().find((n) => n.name === link);
  return { hostname: lower(node.config.hostname), addresses: [node.config.address, ...(proxy ? [proxy.config.address] : [])] };
}

/** The text names the host: its host name as a whole word, or one of its addresses (`[addr]`, `addr:port`, alone). */
function mentions(text: string | undefined, names: { hostname: string; addresses: string[] }): boolean {
  if (!text) return false;
  const t = lower(text);
  const word = (w: string) => new RegExp(`(^|[\\s\\[(<>,;])${escapeRegExp(w)}($|[\\s\\[\\]):>,;])`).test(t);
  return word(names.hostname) || names.addresses.some((a) => word(lower(a)));
}

/**
 * The event that shows host `from` handing the message to host `to`: `from`'s relayed/delivered towards `to`, its
 * LMTP hand-off to `to` with a recipient accepted, its forward via `to` accepted, or `to`'s reception from `from`.
 */
function hopEvidence(lab: MatcherLab, events: readonly HistoryEvent[], from: LabNode, to: LabNode): HistoryEvent | undefined {
  const link = linkNodeName(from.name, to.name);
  const target = namesOf(lab, to, link);
  const source = namesOf(lab, from, link);
  return events.find((e) => {
    if (e.node === from.name) {
      if (e.kind === 'relayed' || e.kind === 'delivered') return mentions(e.detail.hop.split('->')[1], target) || (e.kind === 'relayed' && lower(e.detail.mx ?? '') === target.hostname);
      if (e.kind === 'handoff') return mentions(e.detail.to, target) && e.detail.recipients.some((r) => r.accepted);
      if (e.kind === 'forwarded') return mentions(e.detail.via, target) && e.detail.accepted;
    }
    if (e.node === to.name && e.kind === 'received') return lower(e.detail.helo) === source.hostname || (e.detail.client !== undefined && mentions(e.detail.client, source));
    return false;
  });
}

async function toHaveHop(this: MatcherState, received: unknown, ref: MessageRef, from: string, to: string, options: WaitOption = {}) {
  const matcher = 'toHaveHop';
  const { lab, id, timeoutMs } = subjectOf(matcher, received, ref, options);
  const nodes = lab.nodes();
  const nodeOf = (name: string) => {
    const node = nodes.find((n) => n.name === name);
    if (!node) throw new TypeError(`${matcher}: the lab has no host ${JSON.stringify(name)} (hosts: ${nodes.map((n) => n.name).join(', ')})`);
    return node;
  };
  const [source, target] = [nodeOf(from), nodeOf(to)];
  const phrase = `go from ${from} to ${to}`;
  /** Every hop the history shows for the message, in the order they happened, for the failure message. */
  const hopsSeen = (events: readonly HistoryEvent[]) => {
    const hops = nodes
      .flatMap((a) => nodes.filter((b) => b !== a).map((b) => ({ hop: `${a.name} → ${b.name}`, evidence: hopEvidence(lab, events, a, b) })))
      .flatMap(({ hop, evidence }) => (evidence ? [{ hop, time: evidence.time }] : []))
      .sort((x, y) => x.time - y.time);
    return hops.length ? `the hops it took: ${hops.map((h) => h.hop).join(', ')}` : 'no hop between hosts shows in its events';
  };

  const verdict = await decide(
    lab.history,
    timeoutMs,
    () => {
      const events = eventsOf(lab, id);
      const evidence = hopEvidence(lab, events, source, target);
      if (evidence) return { pass: true, reason: `${line(evidence)} at ${at(lab, id, evidence)}` };
      // Settled at the sender: every event of the path was emitted by now, but another host's may still be on its way.
      const done = settled(events);
      if (done) return { notBefore: done.at + STREAM_GRACE_MS, verdict: { pass: false, reason: `it was settled at the sender (${done.outcomes.map(line).join('; ')}) without going from ${from} to ${to}; ${hopsSeen(events)}` } };
      return undefined;
    },
    () => ({ pass: false, reason: `within ${timeoutMs} ms nothing showed ${from} handing it to ${to}; ${hopsSeen(eventsOf(lab, id))}` }),
  );
  return resultOf(this, lab, { matcher, messageId: id, phrase }, verdict);
}

type AuthMethod = 'spf' | 'dkim' | 'dmarc' | 'arc' | 'action';
const AUTH_METHODS: readonly AuthMethod[] = ['spf', 'dkim', 'dmarc', 'arc', 'action'];

/** The verdicts of an `authenticated` event, each method with every result it had (DKIM: one per signature). */
function verdictsOfEvent(e: HistoryEvent): Record<AuthMethod, string[]> | undefined {
  if (e.kind !== 'authenticated') return undefined;
  const d = e.detail;
  return { spf: [d.spf.result], dkim: d.dkim.length ? d.dkim.map((v) => v.result) : ['none'], dmarc: [d.dmarc?.result ?? 'none'], arc: [d.arc.result], action: [d.action] };
}

/** Every value of a header field, unfolded. */
function headerValues(raw: Buffer, name: string): string[] {
  const wanted = `${name.toLowerCase()}:`;
  return headerSection(raw)
    .replace(/\r?\n[ \t]+/g, ' ')
    .split(/\r?\n/)
    .filter((l) => l.toLowerCase().startsWith(wanted))
    .map((l) => l.slice(wanted.length).trim());
}

/** The verdicts of Authentication-Results fields (RFC 8601): `method=result` of each resinfo, comments left out. */
export function verdictsOfHeader(values: readonly string[]): Record<AuthMethod, string[]> {
  const verdicts: Record<AuthMethod, string[]> = { spf: [], dkim: [], dmarc: [], arc: [], action: [] };
  for (const value of values) {
    const [, ...resinfos] = value.replace(/\([^()]*\)/g, '').split(';');
    for (const resinfo of resinfos) {
      const m = /^\s*(spf|dkim|dmarc|arc)\s*=\s*([a-z]+)/i.exec(resinfo);
      if (m) verdicts[lower(m[1]!) as AuthMethod].push(lower(m[2]!));
    }
  }
  if (verdicts.dkim.length === 0) verdicts.dkim.push('none');
  return verdicts;
}

async function toHaveAuthenticationResults(this: MatcherState, received: unknown, ref: MessageRef, expected: AuthenticationExpectation) {
  const matcher = 'toHaveAuthenticationResults';
  const { lab, id, timeoutMs } = subjectOf(matcher, received, ref, expected);
  const wanted = AUTH_METHODS.filter((m) => expected?.[m] !== undefined).map((m) => ({ method: m, result: lower(String(expected[m])) }));
  if (wanted.length === 0) throw new TypeError(`${matcher}: name at least one verdict to expect (spf, dkim, dmarc, arc or action), e.g. { dkim: 'pass' }`);
  const phrase = `have the authentication results ${wanted.map((w) => `${w.method}=${w.result}`).join(' ')}`;
  const compare = (verdicts: Record<AuthMethod, string[]>, source: string): Verdict => {
    const wrong = wanted.filter((w) => !verdicts[w.method].includes(w.result));
    const found = AUTH_METHODS.filter((m) => verdicts[m].length).map((m) => `${m}=${verdicts[m].join(',')}`).join(' ');
    return wrong.length ? { pass: false, reason: `${source} found ${found}` } : { pass: true, reason: `${source} found ${found}` };
  };
  // The stored copy's header, read once per copy (a Dovecot mailbox, or an MX that writes the header without the event).
  const headers = new Map<HistoryEvent, Promise<string[]>>();
  const headerOf = (stored: HistoryEvent & { kind: 'stored' }) => {
    if (!headers.has(stored)) headers.set(stored, lab.mailbox(stored.detail.user, { server: stored.node }).read(stored.detail.uid, stored.detail.mailbox).then((raw) => headerValues(raw, 'authentication-results')));
    return headers.get(stored)!;
  };

  const verdict = await decide(
    lab.history,
    timeoutMs,
    async (): Promise<Judgement> => {
      const events = eventsOf(lab, id);
      const checked = events.find((e) => e.kind === 'authenticated' && (expected.node === undefined || e.node === expected.node));
      if (checked) return compare(verdictsOfEvent(checked)!, `the ${checked.node} host's authenticated event`);
      const stored = events.find((e): e is HistoryEvent & { kind: 'stored' } => e.kind === 'stored');
      if (!stored || expected.node !== undefined) return undefined;
      const values = await headerOf(stored);
      const where = `the copy stored for ${stored.detail.user} (${stored.node}, ${stored.detail.mailbox} uid ${stored.detail.uid})`;
      if (values.length === 0) return { notBefore: stored.time + STREAM_GRACE_MS, verdict: { pass: false, reason: `no host verified it: no authenticated event, and ${where} has no Authentication-Results field` } };
      const fromHeader = compare(verdictsOfHeader(values), `the Authentication-Results of ${where}`);
      // The header does not say what the MX did with the message: give its event the time to arrive.
      return wanted.some((w) => w.method === 'action') ? { notBefore: stored.time + STREAM_GRACE_MS, verdict: { ...fromHeader, pass: false, reason: `${fromHeader.reason}, and no authenticated event says what the MX did` } } : fromHeader;
    },
    () => ({ pass: false, reason: `within ${timeoutMs} ms no host verified it (no authenticated event${expected.node ? ` of ${expected.node}` : ''}, no stored copy to read)` }),
  );
  return resultOf(this, lab, { matcher, messageId: id, phrase }, verdict);
}

async function toHaveNoDuplicates(this: MatcherState, received: unknown, options: NoDuplicatesOptions = {}) {
  const matcher = 'toHaveNoDuplicates';
  const lab = labOf(received, matcher);
  const timeoutMs = timeoutOf(options, matcher);
  const only = options.messages?.map((m) => normalizeMessageId(messageIdOf(m, matcher)));
  const left = deadline({ timeoutMs });
  // A send resolves once the MTA said 250, and its `submitted` event may still be on its way: the named messages'
  // events are waited for; without names, the queue is let empty first (every message accepted by then is in it, or
  // done and its events long arrived), so a message sent just before the call is not left out.
  if (only) {
    for (const id of only) await lab.history.waitFor({ kind: 'submitted', messageId: id }, left()).catch((err: unknown) => {
      if (!(err instanceof WaitTimeoutError)) throw err;
    });
  } else {
    await waitForEmptyQueue(lab, left).catch((err: unknown) => {
      if (err instanceof CheckFailure) throw new Error(`${matcher}: could not decide: ${err.message.split('\nevents:\n')[0]}`);
      throw err;
    });
  }
  const owed = lab.history.events
    .filter((e) => e.kind === 'submitted' && e.messageId !== undefined && (only === undefined || only.includes(normalizeMessageId(e.messageId))))
    .map((e) => ({ messageId: e.messageId!, from: e.kind === 'submitted' ? e.detail.from : '', to: e.kind === 'submitted' ? e.detail.to : [] }));
  const missing = only?.filter((id) => !owed.some((m) => normalizeMessageId(m.messageId) === id));
  if (missing?.length) throw new Error(`${matcher}: the lab's MTAs never accepted ${missing.map((m) => `<${m}>`).join(', ')} (no submitted event)`);
  const pairs = owed.reduce((n, m) => n + m.to.length, 0);
  const seed = lab.history.seedLine ? `\n${lab.history.seedLine}` : '';
  const failureText = (f: CheckFailure) => `${f.message.split('\nevents:\n')[0]!.replace(/\n?seed .*$/, '')}\n\nevents:\n${formatTraceTable(f.events)}${seed}`;
  try {
    const report = await checkDeliveryGuarantees(lab, owed, { ...left(), duplicates: 'explained' });
    const copies = report.duplicates.map((d) => `message ${d.messageId} stored ${d.copies} times for ${d.rcpt}${d.cause ? ` (cause: ${d.cause.kind}: ${d.cause.description})` : ''}`);
    const traces = report.duplicates.map((d) => `trace of ${d.messageId}:\n${formatTraceTable(lab.trace(d.messageId))}`);
    return {
      pass: report.duplicates.length === 0,
      message: () =>
        report.duplicates.length === 0
          ? `expected a duplicate delivery, but none of the ${pairs} (message, recipient) pairs of ${owed.length} messages was stored twice (${report.delivered} delivered, ${report.bounced} bounced)`
          : `expected no message stored twice for a recipient, but:\n${copies.join('\n')}\n\n${traces.join('\n\n')}${seed}`,
    };
  } catch (err) {
    if (!(err instanceof CheckFailure)) throw err;
    // An unexplained duplicate is the matcher's answer; anything else (a lost message, a queue that never emptied)
    // leaves the question open, whichever way it was asked.
    if (/: duplicate: /.test(err.message)) return { pass: false, message: () => `expected no message stored twice for a recipient, but ${failureText(err)}` };
    throw new Error(`${matcher}: could not decide: ${failureText(err)}`);
  }
}

/** The matchers, as `expect.extend` takes them. */
export const maillabMatchers = { toHaveDelivered, toHaveBounced, toHaveDeferred, toHaveHop, toHaveAuthenticationResults, toHaveNoDuplicates };

/** Registers the matchers with vitest's `expect` (what `maillab/vitest/setup` does; call it once per test file otherwise). */
export function registerMaillabMatchers(): void {
  expect.extend(maillabMatchers);
}
