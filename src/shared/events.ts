// Structured events: every node records what it does as events; the harness merges them into one history.

/** Kinds of events the nodes emit. New kinds may be added; consumers must ignore unknown ones. */
export type EventKind =
  | 'node-ready'
  | 'node-stopping'
  | 'dns-query'
  | 'session'
  | 'auth-failed'
  | 'rejected'
  | 'submitted'
  | 'received'
  | 'queued'
  | 'active'
  | 'connect'
  | 'connect-failed'
  | 'relayed'
  | 'delivered'
  | 'deferred'
  | 'bounced'
  | 'expired'
  | 'dsn-created'
  | 'handoff'
  | 'stored'
  | 'retrieved'
  | 'deleted'
  | 'error'
  | (string & {});

export interface LabEvent {
  /** Per-node sequence number, starts at 1 on every node start. */
  seq: number;
  /** Milliseconds since the epoch, with sub-millisecond precision. */
  time: number;
  /** Name of the node (host) that emitted the event. */
  node: string;
  kind: EventKind;
  /** RFC 5322 Message-ID of the message concerned, when there is one (with angle brackets). */
  messageId?: string;
  /** The node's own id for the message (the MTA's queue id, the mailbox file name...). */
  queueId?: string;
  detail: Record<string, unknown>;
}

export type EventInput = Omit<LabEvent, 'seq' | 'time' | 'node'> & { detail?: Record<string, unknown> };

export function now(): number {
  return performance.timeOrigin + performance.now();
}

/** The event log of one node: keeps events in memory and feeds subscribers (the control channel). */
export class EventLog {
  private readonly events: LabEvent[] = [];
  private readonly listeners = new Set<(e: LabEvent) => void>();
  private seq = 0;
  constructor(readonly node: string, private readonly keep = 100_000) {}

  emit(input: EventInput): LabEvent {
    const event: LabEvent = {
      seq: ++this.seq,
      time: now(),
      node: this.node,
      kind: input.kind,
      ...(input.messageId ? { messageId: input.messageId } : {}),
      ...(input.queueId ? { queueId: input.queueId } : {}),
      detail: input.detail ?? {},
    };
    this.events.push(event);
    if (this.events.length > this.keep) this.events.splice(0, this.events.length - this.keep);
    for (const listener of this.listeners) listener(event);
    return event;
  }

  /** Events with a sequence number above `seq`. */
  since(seq: number): LabEvent[] {
    return this.events.filter((e) => e.seq > seq);
  }

  subscribe(listener: (e: LabEvent) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }
}
