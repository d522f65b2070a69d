// The `proxy` role's contract with the harness (issue 15): a link proxy between two lab hosts. Its operations set
// and read the link's toxics (Toxiproxy's, src/shared/faults.ts); its events are the connections it carried and the
// toxics that fired on them.
import { eventKinds, NODE_EVENT_KINDS, type NodeEvents } from '../shared/contract.js';
import type { FaultFired, LinkToxicOperations } from '../shared/faults.js';

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
