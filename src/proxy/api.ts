// The `proxy` role's contract with the harness (issue 15): a link proxy between two lab hosts. Its operations set
// and read the link's toxics (Toxiproxy's, src/shared/faults.ts); its events are the connections it carried and the
// toxics that fired on them.
import { eventKinds, NODE_EVENT_KINDS, type NodeEvents } from '../shared/contract.js';
import { TOXIC_TYPES, type FaultFired, type Toxic, type ToxicType, type ToxicView } from '../shared/faults.js';
import type { LinkToxicOperations } from '../shared/fault-operations.js';

export type ProxyOperations = LinkToxicOperations;

/** A connection through the link: `client` is who connected to the proxy, `upstream` where it was sent on. */
export interface LinkOpenDetail {
  /** The proxy's number for the connection (from 1 at every start). */
  connection: number;
  /** The listener (the `to` host's service name: `smtp`, `lmtp`, ...). */
  service: string;
  /** `address:port` of the client. */
  client: string;
  /** `address:port` of the `to` host's service. */
  upstream: string;
  /** The address the `to` server sees the connection come from (the client's own, or the proxy's). */
  source: string;
  /** The toxics that apply to this connection (after each one's toxicity draw), by name. */
  toxics: string[];
}

export interface LinkCloseDetail {
  connection: number;
  service: string;
  client: string;
  /** Bytes client → server and server → client that the proxy passed on. */
  bytesUp: number;
  bytesDown: number;
  /** From the client's connect to the close, ms. */
  durationMs: number;
  /**
   * `closed` (a side closed, the other was closed after it), `reset` (RST sent: reset_peer), `timeout` (closed by
   * a timeout toxic), `limit` (closed by limit_data), `error` (a socket error, or the upstream could not be reached).
   */
  how: 'closed' | 'reset' | 'timeout' | 'limit' | 'error';
  error?: string;
}

export type ProxyEvents = NodeEvents & {
  /** A client connected to the proxy and the proxy connected upstream (or tried to). */
  'link-open': LinkOpenDetail;
  /** The connection ended, both sides. */
  'link-close': LinkCloseDetail;
  /**
   * A toxic affected a connection (source `link`; `stage` is the stream, `upstream` or `downstream`): once per
   * connection and toxic, when it first acts (the first chunk it delays, slices or drops, the close it delays, the
   * reset or close it causes).
   */
  fault: FaultFired;
};

export type ProxyContract = { operations: ProxyOperations; events: ProxyEvents };

export const PROXY_EVENT_KINDS = eventKinds<ProxyEvents>()([...NODE_EVENT_KINDS, 'link-open', 'link-close', 'fault'] as const);

/** The host name of a link's proxy node: `link-<from>-<to>`, a name in the dns host's domain. */
export function linkNodeName(from: string, to: string): string {
  return `link-${from}-${to}`;
}

// The toxics' attributes and their check live in the contract: the harness checks a lab's toxics when it plans the
// lab, and fills in the defaults of a toxic it adds, with the same rules as the proxy.

/** Each type's attributes and their defaults (Toxiproxy's: all 0). */
export const TOXIC_ATTRIBUTES: { readonly [T in ToxicType]: Readonly<Record<string, number>> } = {
  latency: { latency: 0, jitter: 0 },
  bandwidth: { rate: 0 },
  slow_close: { delay: 0 },
  timeout: { timeout: 0 },
  reset_peer: { timeout: 0 },
  slicer: { average_size: 0, size_variation: 0, delay: 0 },
  limit_data: { bytes: 0 },
};

/** A list of toxics as given (arguments from the wire): checked, every default filled in. Throws saying what is wrong. */
export function toxicViews(toxics: unknown): ToxicView[] {
  if (!Array.isArray(toxics)) throw new Error('toxics must be a list');
  const problems: string[] = [];
  const views: ToxicView[] = [];
  for (const [i, given] of toxics.entries()) {
    const t = given as Partial<Toxic> | null;
    const where = `toxics[${i}]`;
    if (typeof t !== 'object' || t === null) {
      problems.push(`${where} must be an object`);
      continue;
    }
    if (!(TOXIC_TYPES as readonly unknown[]).includes(t.type)) {
      problems.push(`${where}: type "${String(t.type)}" is not a toxic (${TOXIC_TYPES.join(', ')})`);
      continue;
    }
    const type = t.type!;
    const stream = t.stream ?? 'downstream';
    if (stream !== 'upstream' && stream !== 'downstream') problems.push(`${where}: stream must be upstream or downstream, not "${String(stream)}"`);
    const toxicity = t.toxicity ?? 1;
    if (typeof toxicity !== 'number' || !(toxicity >= 0 && toxicity <= 1)) problems.push(`${where}: toxicity must be a number from 0 to 1`);
    const name = t.name ?? `${type}_${stream}`;
    if (typeof name !== 'string' || !/^[A-Za-z0-9_.:-]{1,64}$/.test(name)) problems.push(`${where}: name "${String(name)}" must be 1 to 64 letters, digits, _ . : -`);
    const attributes: Record<string, number> = { ...TOXIC_ATTRIBUTES[type] };
    for (const [key, value] of Object.entries(t.attributes ?? {})) {
      if (!(key in attributes)) problems.push(`${where}: ${type} has no attribute "${key}" (it has ${Object.keys(attributes).join(', ')})`);
      else if (typeof value !== 'number' || !Number.isFinite(value) || value < 0) problems.push(`${where}: ${type}.${key} must be a number ≥ 0, not ${JSON.stringify(value)}`);
      else attributes[key] = value;
    }
    views.push({ name, type, stream, toxicity, attributes });
  }
  const names = views.map((v) => v.name);
  for (const name of new Set(names)) if (names.filter((n) => n === name).length > 1) problems.push(`two toxics are named "${name}": names are unique per link (the default is <type>_<stream>)`);
  if (problems.length) throw new Error(`invalid toxics:\n  - ${problems.join('\n  - ')}`);
  return views;
}
