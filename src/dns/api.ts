// The `dns` role's contract with the harness (type-only but for the list of event kinds): its control operations
// and its events. The shapes the MTA's MX resolution returns live here too, so the MTA and the harness read them
// from one place.
//
// The MTA-STS policy host (RFC 8461 §3.3) the node serves when configured adds an event per request
// (`policy-fetch`) and an operation to change a policy while the lab runs (`set-mta-sts-policy`), so scenarios can
// see which MTA fetched what and can roll a policy over together with its `_mta-sts` TXT id.
//
// DNS faults (issue 15): the rules of src/shared/faults.ts, set with `set-dns-faults` and applied before the zone
// answers (faults.ts, server.ts); each that fires is a `fault` event. `dnsFaultProblems` is here too, so the harness
// checks a lab definition's rules with the code the node runs.
import type { DnsRecord, ZoneConfig } from '../shared/config.js';
import { eventKinds, NODE_EVENT_KINDS, type NodeEvents, type NoArgs, type Operation } from '../shared/contract.js';
import type { FaultFired } from '../shared/faults.js';
import type { DnsFaultOperations } from '../shared/fault-operations.js';

export { dnsFaultProblems } from './faults.js';

export type SoaFields = Required<NonNullable<ZoneConfig['soa']>>;
export type SoaRecord = { name: string; type: 'SOA'; ttl?: number } & SoaFields;
/** A record as served: a configured one, or a synthesized SOA/NS. */
export type ZoneRecord = DnsRecord | SoaRecord;
export type RecordType = ZoneRecord['type'];
export type Rcode = 'NOERROR' | 'NXDOMAIN' | 'REFUSED';

export interface LookupResult {
  rcode: Rcode;
  /** Answer section; every record has its `ttl` filled in. For a CNAME chain, the CNAMEs come first, in order. */
  answers: ZoneRecord[];
  /** Authority section: the zone SOA on NXDOMAIN and NODATA answers, empty otherwise. */
  authority: ZoneRecord[];
  /** Origin of the zone the queried name is in (absent when REFUSED). */
  zone?: string;
}

export type DnsTransport = 'udp' | 'tcp';

/** One query the server answered. */
export interface DnsQueryInfo {
  name: string;
  type: string;
  rcode: string;
  /** The answer section, one short string per record, e.g. `MX 10 mx.receiver.test`. */
  answers: string[];
  transport: DnsTransport;
  /** `address:port` of the client. */
  client: string;
}

/** One request to the MTA-STS policy host. */
export interface PolicyFetch {
  /** The policy domain the Host header names (`receiver.test` for `mta-sts.receiver.test`); the Host as sent when it names no site. */
  domain: string;
  /** The request path, without the query. */
  path: string;
  /** HTTP status answered: 200, 404 or 405. */
  status: number;
  /** `address:port` of the client. */
  client: string;
}

/** One MX host of a domain, with its addresses as the lab DNS gave them. */
export interface MxHost {
  exchange: string;
  priority: number;
  /** IPv4 addresses first, then IPv6. Empty when the host has none (see `error`). */
  addresses: string[];
  /** Why `addresses` is empty, when it is. */
  error?: string;
  /** Whether that failure may go away on a later try (timeout, SERVFAIL...). */
  temporary?: boolean;
}

/** Where mail for a domain goes (RFC 5321 §5.1, RFC 7505). */
export type MxResolution =
  /** MX hosts by preference, most preferred first (equal preferences keep the DNS order). */
  | { kind: 'mx'; hosts: MxHost[] }
  /** The domain accepts no mail (RFC 7505): bounce at once. */
  | { kind: 'null-mx' }
  /** No MX but an address record: the domain itself is the MX (RFC 5321 §5.1). */
  | { kind: 'implicit'; hosts: MxHost[] }
  /** The domain does not exist or has neither MX nor address records: a permanent failure. */
  | { kind: 'none'; error: string }
  /** The answer could not be had now (timeout, SERVFAIL, refused...): try again later. */
  | { kind: 'temporary'; error: string };

/** Every edit answers with the zones as they are now. */
export interface ZoneListing {
  zones: ZoneConfig[];
}

/**
 * Control operations. Each edit is validated and applied atomically (an invalid one changes nothing and fails
 * with its reason) and shows in the next query.
 */
export type DnsOperations = {
  records: Operation<NoArgs, ZoneListing>;
  /** Replaces that RRset; [] deletes it. Records may omit name and type. */
  'set-records': Operation<{ name: string; type: RecordType; records: Partial<DnsRecord>[] }, ZoneListing>;
  /** `zone`: origin of a zone to create if missing (`@` = its apex). */
  'add-record': Operation<{ record: DnsRecord; zone?: string }, ZoneListing>;
  'remove-records': Operation<{ name: string; type?: RecordType | null }, { removed: number }>;
  /** Replaces every zone. */
  'set-zones': Operation<{ zones: ZoneConfig[] }, ZoneListing>;
  /** Adds or replaces one zone. */
  'add-zone': Operation<{ zone: ZoneConfig }, ZoneListing>;
  'remove-zone': Operation<{ origin: string }, { removed: boolean }>;
  /** The answer the server would give, without DNS. */
  lookup: Operation<{ name: string; type?: string }, LookupResult>;
  /** Replaces the policy text an MTA-STS site serves (from the next request on); answers the domains served. */
  'set-mta-sts-policy': Operation<{ domain: string; policy: string }, { domains: string[] }>;
} & DnsFaultOperations;

export type DnsEvents = NodeEvents & {
  /** A query was answered (every query, UDP or TCP). */
  'dns-query': DnsQueryInfo;
  /** A request to the MTA-STS policy host was answered. */
  'policy-fetch': PolicyFetch;
  /** A DNS fault rule fired for a query (source `dns`, stage the query, e.g. `MX receiver.test`). */
  fault: FaultFired;
};

export type DnsContract = { operations: DnsOperations; events: DnsEvents };

export const DNS_EVENT_KINDS = eventKinds<DnsEvents>()([...NODE_EVENT_KINDS, 'dns-query', 'policy-fetch', 'fault'] as const);
