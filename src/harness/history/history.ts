// One ordered history of every node's events, the nemesis's faults and the devices' observations. Scenarios
// wait on it and checkers read it.
import { now, type LabEvent } from '../../shared/events.js';
import { NEMESIS, type EventKind, type EventOf, type HarnessEvents, type HistoryEvent } from '../events.js';

export interface EventMatcher<K extends EventKind = EventKind> {
  kind?: K;
  node?: string;
  messageId?: string;
  queueId?: string;
  /** Every listed detail field must equal the event's (compared as JSON). */
  detail?: Partial<EventOf<K>['detail']>;
  /** Free predicate, for anything else. */
  where?: (e: EventOf<K>) => boolean;
}

export interface WaitOptions {
  timeoutMs?: number;
  /** Only events at or after this time (ms since the epoch). */
  after?: number;
  /** What is awaited, in words, for the failure message. */
  description?: string;
}

/** A wait that timed out; its message holds the expectation and the recent history. */
export class WaitTimeoutError extends Error {
  override name = 'WaitTimeoutError';
}

/** Default wait: long enough for a retry or two of the lab schedule, short enough to fail a CI run quickly. */
export const DEFAULT_WAIT_MS = 10_000;

export class History {
  private readonly list: HistoryEvent[] = [];
  private readonly waiters = new Set<{ test: (e: HistoryEvent) => boolean; resolve: (e: HistoryEvent) => void }>();
  private readonly harnessSeq = new Map<string, number>();
  readonly startedAt = now();
  /**
   * The seed of the run this history records (issue 15; `Lab.start` sets it): every wait that times out and every
   * checker failure names it, with the variable that replays it.
   */
  seed?: number;

  /** `seed <n> (MAILLAB_SEED=<n> replays it)`, or '' for a history without a seed. */
  get seedLine(): string {
    return seedLine(this.seed);
  }

  /** Events in time order (every node runs on this machine's clock). */
  get events(): readonly HistoryEvent[] {
    return this.list;
  }

  /** Adds a node's event (from its control channel). */
  add(event: LabEvent): void {
    // The kind is checked against the contracts when the lab stops (see `outsideContract`), not here: a history
    // must keep whatever a node really said.
    const e = event as HistoryEvent;
    // Events arrive per node in order; streams of different nodes interleave. Insert by time.
    let i = this.list.length;
    while (i > 0 && this.list[i - 1]!.time > e.time) i--;
    this.list.splice(i, 0, e);
    for (const waiter of this.waiters) {
      if (waiter.test(e)) {
        this.waiters.delete(waiter);
        waiter.resolve(e);
      }
    }
  }

  /**
   * Records an event of the harness itself: a fault or control action (node `nemesis`) or a device's observation
   * (node `<user>/<device>`). `time` is when it began (default now).
   */
  record<K extends keyof HarnessEvents>(node: string, kind: K, detail: HarnessEvents[K], ids: { messageId?: string | undefined; time?: number } = {}): void {
    const seq = (this.harnessSeq.get(node) ?? 0) + 1;
    this.harnessSeq.set(node, seq);
    this.add({ seq, time: ids.time ?? now(), node, kind, ...(ids.messageId ? { messageId: ids.messageId } : {}), detail: detail as unknown as Record<string, unknown> });
  }

  filter<K extends EventKind>(matcher: EventMatcher<K>): EventOf<K>[] {
    return this.list.filter(compile(matcher));
  }

  /**
   * Resolves with the first event (already recorded, or future) that matches; fails after `timeoutMs` with the
   * expectation and the recent history in the message.
   */
  waitFor<K extends EventKind>(matcher: EventMatcher<K>, options: WaitOptions = {}): Promise<EventOf<K>> {
    const timeoutMs = options.timeoutMs ?? DEFAULT_WAIT_MS;
    const after = options.after ?? 0;
    const base = compile(matcher);
    const test = (e: HistoryEvent): e is EventOf<K> => e.time >= after && base(e);
    const existing = this.list.find(test);
    if (existing) return Promise.resolve(existing);
    return this.watch(test, timeoutMs).then((e) => e ?? Promise.reject(this.timeoutError(options.description ?? describeMatcher(matcher), timeoutMs)));
  }

  /**
   * The next event that matches, recorded from now on (or at or after `after`, when one already is), or undefined
   * once `timeoutMs` has passed: a wake-up for code that looks at a node's state again after each event, never a
   * failure by itself.
   */
  next<K extends EventKind>(matcher: EventMatcher<K>, options: { timeoutMs: number; after?: number }): Promise<EventOf<K> | undefined> {
    const base = compile(matcher);
    const after = options.after;
    const test = (e: HistoryEvent): e is EventOf<K> => (after === undefined || e.time >= after) && base(e);
    if (after !== undefined) {
      const existing = this.list.find(test);
      if (existing) return Promise.resolve(existing);
    }
    return this.watch(test, options.timeoutMs);
  }

  /**
   * The error of a wait that timed out, as every wait of the harness words it: what was awaited, the run's seed,
   * and the recent history (`extra` lines, e.g. the last view of a queue, come before it).
   */
  timeoutError(what: string, timeoutMs: number, extra = ''): WaitTimeoutError {
    const seed = this.seed === undefined ? '' : `\n${this.seedLine}`;
    return new WaitTimeoutError(`timed out after ${timeoutMs} ms waiting for ${what}${seed}${extra ? `\n${extra}` : ''}\nrecent history:\n${this.format(this.list.slice(-40))}`);
  }

  /** Resolves with the first future event that passes `test`, or undefined after `timeoutMs`. */
  private watch<E extends HistoryEvent>(test: (e: HistoryEvent) => e is E, timeoutMs: number): Promise<E | undefined> {
    return new Promise((resolve) => {
      const waiter = {
        test,
        resolve: (e: HistoryEvent) => {
          clearTimeout(timer);
          resolve(e as E);
        },
      };
      const timer = setTimeout(() => {
        this.waiters.delete(waiter);
        resolve(undefined);
      }, timeoutMs);
      this.waiters.add(waiter);
    });
  }

  /** Waits until `count` events match. */
  async waitForCount<K extends EventKind>(matcher: EventMatcher<K>, count: number, options: Omit<WaitOptions, 'after'> = {}): Promise<EventOf<K>[]> {
    const test = compile(matcher);
    const deadline = now() + (options.timeoutMs ?? DEFAULT_WAIT_MS);
    for (;;) {
      const found = this.list.filter(test);
      if (found.length >= count) return found;
      const what = options.description ?? `${count} × ${describeMatcher(matcher)} (have ${found.length})`;
      await this.waitFor({ where: (e) => test(e) && !found.includes(e) }, { timeoutMs: Math.max(Math.ceil(deadline - now()), 1), description: what });
    }
  }

  /**
   * The hops of one message: events carrying its Message-ID, the events of the same node that carry a queue id
   * seen with that Message-ID (a queue id identifies the message on that node), and the nemesis's faults and
   * control actions that explain them: those between its first and last hop, and, for each node, the last one
   * before its first hop (the state the message found that node in, e.g. an MX stopped before the send).
   */
  trace(messageId: string): HistoryEvent[] {
    const id = normalizeMessageId(messageId);
    const keys = new Set<string>();
    for (const e of this.list) if (e.messageId && normalizeMessageId(e.messageId) === id && e.queueId) keys.add(`${e.node}/${e.queueId}`);
    const own = (e: HistoryEvent) => (e.messageId !== undefined && normalizeMessageId(e.messageId) === id) || (e.queueId !== undefined && keys.has(`${e.node}/${e.queueId}`));
    const first = this.list.find(own);
    let last: HistoryEvent | undefined;
    for (let i = this.list.length - 1; i >= 0 && !last; i--) if (own(this.list[i]!)) last = this.list[i];
    if (!first || !last) return [];
    const before = new Map<string, HistoryEvent>();
    for (const e of this.list) {
      if (e.time >= first.time) break;
      if (e.node === NEMESIS && 'target' in e.detail) before.set(e.detail.target, e);
    }
    const lastBefore = new Set(before.values());
    return this.list.filter((e) => own(e) || lastBefore.has(e) || (e.node === NEMESIS && e.time >= first.time && e.time <= last.time));
  }

  /** Events whose kind the emitting node's contract does not list (`kindsOf` gives a node's listed kinds). */
  outsideContract(kindsOf: (node: string) => readonly string[] | undefined): HistoryEvent[] {
    return this.list.filter((e) => {
      const kinds = kindsOf(e.node);
      return kinds !== undefined && !kinds.includes(e.kind);
    });
  }

  format(events: readonly LabEvent<string, object>[] = this.list): string {
    return events.map((e) => formatEvent(e, this.startedAt)).join('\n');
  }
}

/** How a failure names the seed of its run: `seed <n> (MAILLAB_SEED=<n> replays it)`; '' without one. */
export function seedLine(seed: number | undefined): string {
  return seed === undefined ? '' : `seed ${seed} (MAILLAB_SEED=${seed} replays it)`;
}

export function normalizeMessageId(id: string): string {
  return id.trim().replace(/^<|>$/g, '').toLowerCase();
}

export function formatEvent(e: LabEvent<string, object>, origin = 0): string {
  const t = origin ? `+${(e.time - origin).toFixed(1).padStart(8)}ms` : new Date(e.time).toISOString();
  const ids = [e.queueId && `qid=${e.queueId}`, e.messageId && `msg=${e.messageId}`].filter(Boolean).join(' ');
  return `${t} ${e.node.padEnd(8)} ${e.kind.padEnd(14)} ${ids} ${JSON.stringify(e.detail)}`;
}

function compile<K extends EventKind>(m: EventMatcher<K>): (e: HistoryEvent) => e is EventOf<K> {
  const id = m.messageId ? normalizeMessageId(m.messageId) : undefined;
  return (e): e is EventOf<K> =>
    (m.kind === undefined || e.kind === m.kind) &&
    (m.node === undefined || e.node === m.node) &&
    (id === undefined || (e.messageId !== undefined && normalizeMessageId(e.messageId) === id)) &&
    (m.queueId === undefined || e.queueId === m.queueId) &&
    (m.detail === undefined || Object.entries(m.detail).every(([k, v]) => JSON.stringify((e.detail as Record<string, unknown>)[k]) === JSON.stringify(v))) &&
    (m.where === undefined || m.where(e as EventOf<K>));
}

function describeMatcher<K extends EventKind>(m: EventMatcher<K>): string {
  const parts = Object.entries(m)
    .filter(([k]) => k !== 'where')
    .map(([k, v]) => `${k}=${JSON.stringify(v)}`);
  if (m.where) parts.push('where=<predicate>');
  return `event {${parts.join(', ')}}`;
}
