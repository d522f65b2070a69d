// Structured events: every node records what it does as events; the harness merges them into one history.
import type { EventTable } from './contract.js';

/**
 * One event. Each role declares its kinds and their detail types in its contract (`src/<role>/api.ts`); the
 * harness adds its own (`src/harness/events.ts`). `K` and `D` narrow an event to one kind.
 */
export interface LabEvent<K extends string = string, D extends object = Record<string, unknown>> {
  /** Per-node sequence number, starts at 1 on every node start. */
  seq: number;
  /** Milliseconds since the epoch, with sub-millisecond precision. */
  time: number;
  /** Name of the node (host) that emitted the event. */
  node: string;
  kind: K;
  /** RFC 5322 Message-ID of the message concerned, when there is one (with angle brackets). */
  messageId?: string;
  /** The node's own id for the message (the MTA's queue id, the mailbox file name...). */
  queueId?: string;
  detail: D;
}

/** What a node passes to `emit`: a kind of its contract and that kind's detail. */
export interface EventInput<E extends EventTable, K extends keyof E & string> {
  kind: K;
  detail: E[K];
  messageId?: string | undefined;
  queueId?: string | undefined;
}

export function now(): number {
  return performance.timeOrigin + performance.now();
}

/**
 * How many of its latest events a node keeps for subscribers that ask for past ones (`GET /events?since=N`). The
 * harness follows every node from its start, so it never needs old ones; what is kept serves a late subscriber
 * (`maillab tail --all`, `tail --message` on a running lab) and costs memory, about 0.5–2 KiB an event. (Kept as
 * objects: as JSON lines they would be larger, V8 sharing the objects' shapes and constant strings.) At 100,000, the
 * old bound, the lab's memory grew by about 30 KiB per message until the bound was reached (issue 17, bench rounds 1
 * to 5: peak PSS 245 → 510 MiB). Older events are dropped in batches of a tenth, so a node holds at most 1.1 × this
 * many.
 */
export const EVENT_LOG_KEEP = 10_000;

/**
 * The event log of one node: keeps its latest events in memory (EVENT_LOG_KEEP) and feeds subscribers (the control
 * channel). Typed by the role's event table, so a node can only emit the kinds its contract lists, with their
 * detail shapes.
 */
export class EventLog<E extends EventTable = EventTable> {
  private readonly events: LabEvent[] = [];
  private readonly listeners = new Set<(e: LabEvent) => void>();
  private seq = 0;
  /** Dropping one old event per new one would move the whole array every time: drop a batch. */
  private readonly slack: number;
  constructor(readonly node: string, private readonly keep = EVENT_LOG_KEEP) {
    this.slack = Math.max(1, Math.floor(keep / 10));
  }

  emit<K extends keyof E & string>(input: EventInput<E, K>): LabEvent {
    const event: LabEvent = {
      seq: ++this.seq,
      time: now(),
      node: this.node,
      kind: input.kind,
      ...(input.messageId ? { messageId: input.messageId } : {}),
      ...(input.queueId ? { queueId: input.queueId } : {}),
      detail: input.detail as Record<string, unknown>,
    };
    this.events.push(event);
    if (this.events.length >= this.keep + this.slack) this.events.splice(0, this.events.length - this.keep);
    for (const listener of this.listeners) listener(event);
    return event;
  }

  /** Kept events with a sequence number above `seq` (a subscriber sees a gap in `seq` where older ones were dropped). */
  since(seq: number): LabEvent[] {
    return this.events.filter((e) => e.seq > seq);
  }

  subscribe(listener: (e: LabEvent) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }
}
