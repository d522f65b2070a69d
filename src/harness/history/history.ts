// One ordered history of every node's events. Scenarios wait on it and checkers read it.
import type { LabEvent } from '../../shared/events.js';

export type EventMatcher = Partial<Pick<LabEvent, 'kind' | 'node' | 'messageId' | 'queueId'>> & {
  /** Every listed detail field must equal the event's. */
  detail?: Record<string, unknown>;
  /** Free predicate, for anything else. */
  where?: (e: LabEvent) => boolean;
};

export class WaitTimeoutError extends Error {}

export class History {
  private readonly list: LabEvent[] = [];
  private readonly waiters = new Set<{ test: (e: LabEvent) => boolean; resolve: (e: LabEvent) => void }>();
  readonly startedAt = performance.timeOrigin + performance.now();

  /** Events in time order (every node runs on this machine's clock). */
  get events(): readonly LabEvent[] {
    return this.list;
  }

  add(event: LabEvent): void {
    // Events arrive per node in order; streams of different nodes interleave. Insert by time.
    let i = this.list.length;
    while (i > 0 && this.list[i - 1]!.time > event.time) i--;
    this.list.splice(i, 0, event);
    for (const waiter of this.waiters) {
      if (waiter.test(event)) {
        this.waiters.delete(waiter);
        waiter.resolve(event);
      }
    }
  }

  filter(matcher: EventMatcher): LabEvent[] {
    const test = compile(matcher);
    return this.list.filter(test);
  }

  /**
   * Resolves with the first event (already recorded, or future) that matches; fails after `timeoutMs` with the
   * expectation and the recent history in the message.
   */
  waitFor(matcher: EventMatcher, options: { timeoutMs?: number; after?: number; description?: string } = {}): Promise<LabEvent> {
    const timeoutMs = options.timeoutMs ?? 10_000;
    const after = options.after ?? 0;
    const base = compile(matcher);
    const test = (e: LabEvent) => e.time >= after && base(e);
    const existing = this.list.find(test);
    if (existing) return Promise.resolve(existing);
    return new Promise((resolve, reject) => {
      const waiter = {
        test,
        resolve: (e: LabEvent) => {
          clearTimeout(timer);
          resolve(e);
        },
      };
      const timer = setTimeout(() => {
        this.waiters.delete(waiter);
        const what = options.description ?? describeMatcher(matcher);
        reject(new WaitTimeoutError(`timed out after ${timeoutMs} ms waiting for ${what}\nrecent history:\n${this.format(this.list.slice(-40))}`));
      }, timeoutMs);
      this.waiters.add(waiter);
    });
  }

  /** Waits until `count` events match. */
  async waitForCount(matcher: EventMatcher, count: number, options: { timeoutMs?: number; description?: string } = {}): Promise<LabEvent[]> {
    const test = compile(matcher);
    const deadline = Date.now() + (options.timeoutMs ?? 10_000);
    for (;;) {
      const found = this.list.filter(test);
      if (found.length >= count) return found;
      const left = deadline - Date.now();
      const what = options.description ?? `${count} × ${describeMatcher(matcher)} (have ${found.length})`;
      await this.waitFor({ where: (e) => test(e) && !found.includes(e) }, { timeoutMs: Math.max(left, 1), description: what });
    }
  }

  /**
   * The hops of one message: events carrying its Message-ID, and the events of the same node that carry a
   * queue id seen with that Message-ID (a queue id identifies the message on that node).
   */
  trace(messageId: string): LabEvent[] {
    const id = normalizeMessageId(messageId);
    const keys = new Set<string>();
    for (const e of this.list) if (e.messageId && normalizeMessageId(e.messageId) === id && e.queueId) keys.add(`${e.node}/${e.queueId}`);
    return this.list.filter((e) => (e.messageId && normalizeMessageId(e.messageId) === id) || (e.queueId && keys.has(`${e.node}/${e.queueId}`)));
  }

  format(events: readonly LabEvent[] = this.list): string {
    return events.map((e) => formatEvent(e, this.startedAt)).join('\n');
  }
}

export function normalizeMessageId(id: string): string {
  return id.trim().replace(/^<|>$/g, '').toLowerCase();
}

export function formatEvent(e: LabEvent, origin = 0): string {
  const t = origin ? `+${(e.time - origin).toFixed(1).padStart(8)}ms` : new Date(e.time).toISOString();
  const ids = [e.queueId && `qid=${e.queueId}`, e.messageId && `msg=${e.messageId}`].filter(Boolean).join(' ');
  return `${t} ${e.node.padEnd(8)} ${e.kind.padEnd(14)} ${ids} ${JSON.stringify(e.detail)}`;
}

function compile(m: EventMatcher): (e: LabEvent) => boolean {
  const id = m.messageId ? normalizeMessageId(m.messageId) : undefined;
  return (e) =>
    (m.kind === undefined || e.kind === m.kind) &&
    (m.node === undefined || e.node === m.node) &&
    (id === undefined || (e.messageId !== undefined && normalizeMessageId(e.messageId) === id)) &&
    (m.queueId === undefined || e.queueId === m.queueId) &&
    (m.detail === undefined || Object.entries(m.detail).every(([k, v]) => JSON.stringify(e.detail[k]) === JSON.stringify(v))) &&
    (m.where === undefined || m.where(e));
}

function describeMatcher(m: EventMatcher): string {
  const parts = Object.entries(m)
    .filter(([k]) => k !== 'where')
    .map(([k, v]) => `${k}=${JSON.stringify(v)}`);
  if (m.where) parts.push('where=<predicate>');
  return `event {${parts.join(', ')}}`;
}
