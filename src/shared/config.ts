// The configuration a node is started with: a JSON file written by the lab (or by hand) for `maillab node <role>`.

export type Role = 'dns' | 'mta' | 'mx' | 'mailbox';

export interface Endpoint {
  host: string;
  port: number;
}

export interface UserConfig {
  address: string;
  password: string;
}

export type DnsRecord =
  | { name: string; type: 'A'; address: string; ttl?: number }
  | { name: string; type: 'AAAA'; address: string; ttl?: number }
  | { name: string; type: 'MX'; exchange: string; priority: number; ttl?: number }
  | { name: string; type: 'TXT'; data: string; ttl?: number }
  | { name: string; type: 'CNAME'; domain: string; ttl?: number }
  | { name: string; type: 'PTR'; domain: string; ttl?: number }
  | { name: string; type: 'NS'; ns: string; ttl?: number };

export interface ZoneConfig {
  /** Zone apex, e.g. `receiver.test` or `0.0.127.in-addr.arpa`. */
  origin: string;
  /** SOA fields; defaults are filled in when absent. */
  soa?: { primary?: string; admin?: string; serial?: number; refresh?: number; retry?: number; expiration?: number; minimum?: number };
  records: DnsRecord[];
}

export interface RetryConfig {
  /** Delays in ms between attempts: the first retry waits schedule[0], and so on; the last value repeats. */
  schedule: number[];
  /** A message still undelivered this long after it was queued bounces. */
  maxLifetimeMs: number;
}

interface BaseNodeConfig {
  /** The node's (host's) name in the lab, e.g. `mta`. */
  name: string;
  role: Role;
  /** Fully qualified host name, used in greetings and Received headers. */
  hostname: string;
  /** The address every service of the node binds to. */
  address: string;
  /** Where the node keeps its state (queue, Maildir); survives a restart of the node. */
  dataDir: string;
  /** Port of the node's HTTP control channel (on `address`). */
  controlPort: number;
  /** The lab DNS server; nodes never use the system resolver. */
  resolver: Endpoint;
  /** Delay before SMTP/LMTP greetings, the early-talker check. smtp-server hard-codes 100 ms; the lab uses 0. */
  greetingDelayMs: number;
  /** fsync before acknowledging (always true except in explicitly unsafe benchmarks). */
  fsync: boolean;
}

export interface DnsNodeConfig extends BaseNodeConfig {
  role: 'dns';
  port: number;
  zones: ZoneConfig[];
}

export interface MtaNodeConfig extends BaseNodeConfig {
  role: 'mta';
  ports: { smtp: number; submission: number };
  /** Domains this MTA is final destination for (mail to them goes to `localDelivery` over LMTP). */
  localDomains: string[];
  /** LMTP endpoint of the mailbox server for local domains. */
  localDelivery?: Endpoint;
  /** Users allowed to submit (AUTH PLAIN/LOGIN). */
  users: UserConfig[];
  retry: RetryConfig;
  /** Port used when relaying to an MX (25 in the real world). */
  relayPort: number;
  /** Timeout for connecting to a remote MX. */
  connectTimeoutMs: number;
}

export interface MxNodeConfig extends BaseNodeConfig {
  role: 'mx';
  ports: { smtp: number };
  /** Domains this MX accepts mail for. */
  domains: string[];
  /** Recipients it accepts (addresses in `domains`). */
  recipients: string[];
  /** LMTP endpoint of the mailbox server. */
  lmtp: Endpoint;
}

export interface MailboxNodeConfig extends BaseNodeConfig {
  role: 'mailbox';
  ports: { lmtp: number; pop3?: number; imap?: number };
  users: UserConfig[];
}

export type NodeConfig = DnsNodeConfig | MtaNodeConfig | MxNodeConfig | MailboxNodeConfig;
