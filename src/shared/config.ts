// The configuration a node is started with: a JSON file written by the lab (or by hand) for `maillab node <role>`.
import type { DnsFaultRule, SmtpFaultRule, Toxic } from './faults.js';

/** `proxy`: a link proxy the lab puts on the path between two hosts (issue 15, src/proxy/). */
export type Role = 'dns' | 'mta' | 'mx' | 'mailbox' | 'proxy';

export interface Endpoint {
  host: string;
  port: number;
}

export interface UserConfig {
  address: string;
  /** The account's main password: with `totpSecret` set, good only for the account service (with a TOTP code). */
  password: string;
  /**
   * Two-factor authentication (issue 13): the base32 TOTP secret (RFC 6238, SHA-1, 6 digits, 30 s). With it, the
   * mail protocols (SMTP AUTH, IMAP, POP3) refuse the main password and take app passwords only.
   */
  totpSecret?: string;
  /** App passwords at start; more are made, and any revoked, through the account service while the lab runs. */
  appPasswords?: AppPasswordConfig[];
}

export interface AppPasswordConfig {
  /** What the user calls it, e.g. `phone`: unique per user. */
  name: string;
  password: string;
}

/** An API key of the MTA's HTTP email API (issue 13): who may send, and From: which domains. */
export interface ApiKeyConfig {
  key: string;
  /** From: domains the key may send as (403 otherwise). */
  domains: string[];
}

/**
 * The content scanner at the MX (issue 13): `builtin` finds the EICAR test file in any decoded MIME part; `clamav`
 * streams the message to a clamd (INSTREAM), which the MX starts itself from `database` when `spawn` is set.
 */
export type ScannerConfig =
  | { kind: 'builtin' }
  | { kind: 'clamav'; /** clamd's TCP endpoint. */ clamd: Endpoint; /** Start clamd (Debian's clamav-daemon) with this signature directory. */ spawn?: { database: string } };

export type DnsRecord =
  | { name: string; type: 'A'; address: string; ttl?: number }
  | { name: string; type: 'AAAA'; address: string; ttl?: number }
  | { name: string; type: 'MX'; exchange: string; priority: number; ttl?: number }
  | { name: string; type: 'TXT'; data: string; ttl?: number }
  | { name: string; type: 'CNAME'; domain: string; ttl?: number }
  | { name: string; type: 'PTR'; domain: string; ttl?: number }
  | { name: string; type: 'NS'; ns: string; ttl?: number }
  /**
   * DANE (RFC 6698, RFC 7672): at `_<port>._tcp.<host>`. `usage` 2 = DANE-TA, 3 = DANE-EE (the lab's MTA uses only
   * those, as RFC 7672 §3.1 says; 0 and 1 are served but unusable); `selector` 0 = whole certificate, 1 =
   * SubjectPublicKeyInfo; `matchingType` 0 = exact, 1 = SHA-256, 2 = SHA-512; `data` in hex.
   */
  | { name: string; type: 'TLSA'; usage: number; selector: number; matchingType: number; data: string; ttl?: number };

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

/**
 * Limits of an SMTP server (the MTA's 25 and 587, the MX's 25). Defaults: DEFAULT_SMTP_LIMITS.
 * A node started from a hand-written configuration without them uses the defaults.
 */
export interface SmtpLimits {
  /** RCPT TO commands accepted per transaction; past it `452 4.5.3` (RFC 5321 §4.5.3.1.10). */
  maxRecipients: number;
  /** Concurrent connections from one client address; past it the connection gets `421 4.7.0` and is closed. */
  maxConnectionsPerClient: number;
  /**
   * Largest message accepted, in octets (advertised as SIZE, RFC 1870); past it `552 5.3.4`, and nothing past it
   * is kept in memory. Absent: the role's default, 25 MiB on the MTA (25 and 587), 50 MiB on the MX (the mailbox
   * server's limit).
   */
  maxMessageSize?: number;
}

/**
 * The MTA's wait for a command reply unless the lab sets one: 60 s, shorter than RFC 5321 §4.5.3.2's 5 minutes for
 * MAIL/RCPT, as a lab's peers answer at once or not at all (Postfix's smtp_*_timeout are 300 s).
 */
export const DEFAULT_COMMAND_TIMEOUT_MS = 60_000;
/** RFC 5321 §4.5.3.2's end-of-data timeout (10 minutes): the MTA's dataTimeoutMs unless the lab sets one. */
export const DEFAULT_DATA_TIMEOUT_MS = 600_000;

/**
 * SMTP fault rules at a node's start (issue 15), checked by the node when it starts (validateSmtpFaultRules: a bad
 * rule, from a hand-written config file, fails the start, naming it).
 */
export type SmtpFaultRulesConfig = readonly SmtpFaultRule[];

/** Postfix's smtpd_recipient_limit is 1000, most providers use 50–100; Postfix allows 50 connections per client. */
export const DEFAULT_SMTP_LIMITS: SmtpLimits = { maxRecipients: 100, maxConnectionsPerClient: 50 };

/**
 * Login throttling of every service that authenticates (SMTP AUTH, IMAP, POP3). Defaults: DEFAULT_AUTH_THROTTLE.
 * Counters are per node: the MTA counts SMTP AUTH, the mailbox server IMAP and POP3 together.
 */
export interface AuthThrottleConfig {
  /** false: no throttling at all (to show what an attacker gets without it). */
  enabled: boolean;
  /** Failed logins on one connection before the server closes it (SMTP 421 4.7.0, IMAP BYE, POP3 -ERR). */
  failuresPerConnection: number;
  /** Failed logins for one account from one client address, within windowMs, before that pair is throttled. */
  failuresPerAccount: number;
  /** Failed logins from one client address (any account), within windowMs, before the address is throttled. */
  failuresPerAddress: number;
  /** How long a failure counts. */
  windowMs: number;
  /** The first back-off; each further throttling of the same key doubles it, up to maxBackoffMs. */
  backoffMs: number;
  maxBackoffMs: number;
}

export const DEFAULT_AUTH_THROTTLE: AuthThrottleConfig = {
  enabled: true,
  failuresPerConnection: 3,
  failuresPerAccount: 5,
  failuresPerAddress: 30,
  windowMs: 15 * 60_000,
  backoffMs: 2_000,
  maxBackoffMs: 5 * 60_000,
};

/**
 * TLS of a node (issue 11): its certificate from the lab CA, and the CA to verify peers with. Absent: the node
 * speaks plaintext only (a hand-started node without certificates).
 */
export interface TlsConfig {
  /** PEM certificate of this host (leaf first, then any intermediates). */
  cert: string;
  /** PEM private key of `cert`. */
  key: string;
  /** PEM certificate of the lab CA: what this node trusts when it verifies a peer. */
  ca: string;
  /** Lowest protocol version offered or accepted; TLS 1.2 unless set (RFC 8996 retired 1.0 and 1.1). */
  minVersion?: 'TLSv1.2' | 'TLSv1.3';
  /**
   * Accept passwords (SMTP AUTH, IMAP LOGIN/AUTHENTICATE, POP3 USER/PASS/AUTH) over a connection without TLS.
   * RFC 8314 says no, and that is the default; a lab may allow it to show why it is dangerous.
   */
  allowPlaintextAuth?: boolean;
}

/**
 * How the MTA uses TLS towards a destination (issue 11), like Postfix's smtp_tls_security_level: `none` never
 * STARTTLS; `may` STARTTLS when offered, unverified, plaintext otherwise (the default); `encrypt` STARTTLS required,
 * certificate not checked; `verify` STARTTLS required and the certificate must chain to the lab CA and carry the MX
 * host name.
 */
export type TlsPolicyMode = 'none' | 'may' | 'encrypt' | 'verify';
export const TLS_POLICY_MODES: readonly TlsPolicyMode[] = ['none', 'may', 'encrypt', 'verify'];

/**
 * The TLS policy one SMTP session runs under: a configured mode, `mta-sts` (an MTA-STS policy in `enforce` mode:
 * like `verify`, and the MX must be listed in the policy) or `dane` (TLSA records of the MX host: TLS required, the
 * certificate must match one of them, RFC 7672).
 */
export type OutboundTlsPolicy = TlsPolicyMode | 'mta-sts' | 'dane';

/** The MTA's outbound TLS policy: a mode per destination domain, `default` for the others. */
export interface TlsPolicyConfig {
  default: TlsPolicyMode;
  /** By destination domain (lower case, exact match). */
  domains: Record<string, TlsPolicyMode>;
}

/**
 * DKIM signing of one domain (RFC 6376; Ed25519 per RFC 8463), at the MTA (issue 12). The public key is published
 * at `<selector>._domainkey.<domain>` by the lab.
 */
export interface DkimSigningConfig {
  /** `d=`: the signing domain (the From: domain, for DMARC alignment). */
  domain: string;
  /** `s=` */
  selector: string;
  /** PEM private key (PKCS#8): RSA (2048 bits in the lab) or Ed25519. */
  privateKey: string;
  algorithm: 'rsa-sha256' | 'ed25519-sha256';
  /** `c=` header/body. */
  canonicalization: 'relaxed/relaxed' | 'relaxed/simple' | 'simple/relaxed' | 'simple/simple';
  /** `h=`: the header fields signed; absent: mailauth's default list (From, To, Subject, Date, Message-ID...). */
  headers?: string[];
}

/** An ARC sealer (RFC 8617): the MX seals what it verified before it forwards a message. */
export interface ArcSealConfig {
  /** `d=` of the seal (the forwarder's domain). */
  domain: string;
  selector: string;
  /** PEM private key (PKCS#8), RSA. */
  privateKey: string;
}

/** Mail authentication at the MX (issue 12): SPF, DKIM, DMARC and ARC verified with mailauth against the lab DNS. */
export interface MxAuthConfig {
  /**
   * Act on the DMARC policy of the From: domain (RFC 7489 §6.6.4, with `pct`): `reject` → `550 5.7.1` at the end
   * of DATA, `quarantine` → the recipient's `Junk` folder; `none` only records. false: record only, whatever `p`.
   */
  enforceDmarc: boolean;
  /**
   * ARC sealers (the `d=` of their seal) whose chain is trusted: a DMARC failure of a message whose ARC chain
   * validates and whose oldest Authentication-Results from that sealer said `dmarc=pass` is accepted (a local
   * policy override, RFC 7489 §7.2.1, RFC 8617 §7.2).
   */
  trustedArcSealers: string[];
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
  /**
   * The bearer token of the control channel (every request must carry it). The harness makes one per lab and
   * writes it only into config files no other user can read. Absent (a node started by hand): the node makes
   * one and writes it to `<dataDir>/control-token` (mode 0600).
   */
  controlToken?: string;
  /** Certificates: STARTTLS and implicit TLS on the node's services. Absent: plaintext only. */
  tls?: TlsConfig;
  /** The lab DNS server; nodes never use the system resolver. */
  resolver: Endpoint;
  /** Delay before SMTP/LMTP greetings, the early-talker check. smtp-server hard-codes 100 ms; the lab uses 0. */
  greetingDelayMs: number;
  /** fsync before acknowledging (always true except in explicitly unsafe benchmarks). */
  fsync: boolean;
  /** The lab's seed (issue 15): every chance draw of the node's faults comes from it (src/shared/seeded-random.ts). */
  seed?: number;
}

/**
 * One MTA-STS policy site (RFC 8461 §3.3): `https://mta-sts.<domain>/.well-known/mta-sts.txt` answers `policy`,
 * over TLS with `cert` (which names `mta-sts.<domain>`).
 */
export interface MtaStsSite {
  /** The policy domain, e.g. `receiver.test` (the site is `mta-sts.receiver.test`). */
  domain: string;
  /** The policy text as served (`version: STSv1`, `mode`, `mx`, `max_age`, CRLF line ends). */
  policy: string;
  /** PEM certificate (and key) of `mta-sts.<domain>`. */
  cert: string;
  key: string;
}

export interface DnsNodeConfig extends BaseNodeConfig {
  role: 'dns';
  port: number;
  zones: ZoneConfig[];
  /**
   * The lab's MTA-STS policy host: HTTPS on `address:port` (443 in the real world), one site per policy domain,
   * chosen by SNI; any other name or path gets 404. Absent: no policy host.
   */
  mtaSts?: { port: number; sites: MtaStsSite[] };
  /** DNS fault rules in force from the start (the lab's `faults.dns`, issue 15), changed with `set-dns-faults`. */
  dnsFaults?: DnsFaultRule[];
}

/** One entry of the MTA's transport map: Postfix's `smtp:[host]:port`. */
export interface TransportRoute {
  /** The next hop: a host name (its A/AAAA records, no MX lookup) or an IP address. */
  host: string;
  port: number;
}

export interface MtaNodeConfig extends BaseNodeConfig {
  role: 'mta';
  /** `submissions`: implicit TLS submission (RFC 8314, port 465), offered when `tls` is set. */
  ports: { smtp: number; submission: number; submissions?: number };
  /** Domains this MTA is final destination for (mail to them goes to `localDelivery` over LMTP). */
  localDomains: string[];
  /** LMTP endpoint of the mailbox server for local domains. */
  localDelivery?: Endpoint;
  /** Users allowed to submit (AUTH PLAIN/LOGIN). */
  users: UserConfig[];
  retry: RetryConfig;
  /** Port used when relaying to an MX (25 in the real world), unless `relayPorts` names the MX host. */
  relayPort: number;
  /**
   * The port per MX host (issue 14, part of the transport map): an MX whose host name (lower case, no trailing dot)
   * is a key here is connected to on that port instead of `relayPort`, e.g. a user's own server on 2525. The lab
   * fills it from its external hosts' `smtp` ports. DANE looks up `_<that port>._tcp.<host>`. Absent: `relayPort`
   * for every MX.
   */
  relayPorts?: Record<string, number>;
  /**
   * The transport map (issue 14), like Postfix's `transport_maps` with `smtp:[host]:port`: mail for a key (a
   * destination domain, lower case, exact match) goes to `host` on `port`, with no MX lookup for the domain; `host` is
   * a host name looked up in the lab DNS (A/AAAA only, as the brackets say in Postfix) or an IP address. The lab's
   * address restriction (`labAddresses`) still applies to what it resolves to. Local domains are not affected.
   */
  transport?: Record<string, TransportRoute>;
  /** Timeout for connecting to a remote MX. */
  connectTimeoutMs: number;
  /**
   * Keep the A/AAAA answers of MX resolution for their TTL, at most `maxTtlSeconds` (src/dns/cache.ts; MX answers
   * are never kept). Absent: nothing is kept, so a DNS edit or fault takes effect on the next message whatever the
   * TTL (scenario 45); identical questions in flight at the same moment are shared either way.
   */
  dnsCache?: { maxTtlSeconds: number };
  /**
   * How long the MTA waits, relaying to an MX, from the start of the message data to the reply to its final dot
   * (RFC 5321 §4.5.3.2: data blocks 3 min, the end-of-data reply 10 min, Postfix's smtp_data_done_timeout 600 s).
   * Past it the recipients are deferred with a timeout naming the stage. Absent: DEFAULT_DATA_TIMEOUT_MS.
   */
  dataTimeoutMs?: number;
  /**
   * How long the MTA waits for the reply to any other command (the greeting, EHLO, MAIL, RCPT, DATA…) and for a
   * stalled connection, relaying or delivering over LMTP. Absent: DEFAULT_COMMAND_TIMEOUT_MS.
   */
  commandTimeoutMs?: number;
  /** SMTP fault rules of its servers (25, 587, 465) at start (issue 15); changed at run time with `set-smtp-faults`. */
  smtpFaults?: SmtpFaultRulesConfig;
  limits?: SmtpLimits;
  authThrottle?: AuthThrottleConfig;
  /**
   * Addresses of the lab's own hosts. The MTA connects to no other address: an address literal outside them is
   * refused at RCPT (`550 5.7.1`), and an MX that resolves outside them is not contacted. Absent: no restriction
   * (a hand-started node outside a lab).
   */
  labAddresses?: string[];
  /** Outbound TLS per destination domain; absent: `may` everywhere. LMTP (local delivery) is not affected. */
  tlsPolicy?: TlsPolicyConfig;
  /**
   * DKIM signers, one per signing domain (issue 12): mail submitted on 587/465 whose From: domain has a signer is
   * signed before it is queued. Changed at run time with the `set-dkim` operation (key rotation). Absent: no signing.
   */
  dkim?: DkimSigningConfig[];
  /**
   * Which From: a submitting user may use: `own-domain` (default) refuses, with `553 5.7.1`, a From: header whose
   * domain is not the authenticated user's; `any` lets it through (to show DMARC catching a spoof at the MX).
   */
  submissionFrom?: 'own-domain' | 'any';
  /**
   * Client addresses allowed to relay through port 25 to any domain (like Postfix's mynetworks): a forwarding MX of
   * the lab. Others may send on 25 only to the MTA's local domains. Absent: none.
   */
  relayClients?: string[];
  /**
   * The transactional HTTP email API (issue 13): HTTPS (with `tls`) on `address:port`, Mailpit's send API shape,
   * Bearer API keys. Absent: no API.
   */
  api?: { port: number; keys: ApiKeyConfig[] };
  /**
   * Where SMTP AUTH is checked for users with 2FA: the mailbox server's account service (as Postfix asks Dovecot's
   * SASL), so that an app password revoked there stops working here at once. Absent: the MTA's own `users` only.
   */
  authService?: Endpoint;
  /**
   * MTA-STS (RFC 8461): before relaying to a domain without a configured mode, look up `_mta-sts.<domain>` TXT and
   * fetch its policy from `https://mta-sts.<domain>:<port>/.well-known/mta-sts.txt` (verified against `tls.ca`),
   * cached by `max_age`. `port` is 443 in the real world. Absent: MTA-STS is not used.
   */
  mtaSts?: { port: number };
  /**
   * DANE (RFC 7672): look up TLSA records at `_<relayPort>._tcp.<mx host>`; usable records make TLS required and
   * the certificate must match them, whatever the configured mode. The lab DNS is not signed: its answers are
   * taken as DNSSEC-authenticated. Absent or false: DANE is not used.
   */
  dane?: boolean;
  /**
   * Which server plays the MTA (issue 14): maillab's own (the default), or Debian's Postfix run from a config the lab
   * writes (src/real/postfix/) around the user's own `main.cf` / `master.cf` (their contents).
   */
  server?: 'maillab' | 'postfix';
  postfix?: { mainCf?: string; masterCf?: string };
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
  limits?: SmtpLimits;
  /** Do not offer STARTTLS even with `tls` (standing in for an attacker stripping it from the EHLO reply). */
  noStartTls?: boolean;
  /** SMTP fault rules of its port 25 at start (issue 15); changed at run time with `set-smtp-faults`. */
  smtpFaults?: SmtpFaultRulesConfig;
  /** SPF, DKIM, DMARC and ARC verification, with an `Authentication-Results:` header. Absent: none. */
  auth?: MxAuthConfig;
  /**
   * Forwarding (issue 12): mail for a key (a recipient of this MX) goes to its value instead, re-sent through
   * `forwardVia` (an MTA's port 25 that relays for this MX) with the envelope sender kept, sealed with `arcSeal`.
   */
  forwards?: Record<string, string>;
  forwardVia?: Endpoint;
  arcSeal?: ArcSealConfig;
  /** The malware filter at the end of DATA (issue 13). Absent: no scanning. */
  scanner?: ScannerConfig;
  /** What a message with malware gets: `reject` (554 5.7.1, the default) or `quarantine` (the recipients' Junk). */
  malwareAction?: 'reject' | 'quarantine';
  /**
   * Which server plays the MX (issue 14): maillab's own (the default), or Debian's Postfix run from a config the lab
   * writes (src/real/postfix/) around the user's own `main.cf` / `master.cf` (their contents).
   */
  server?: 'maillab' | 'postfix';
  postfix?: { mainCf?: string; masterCf?: string };
  /**
   * The lab's retry schedule, for an MX that queues (Postfix defers a hand-off the mailbox server did not take and
   * retries it on this schedule, unless the user's main.cf sets its own). maillab's MX has no queue and ignores it.
   */
  retry?: RetryConfig;
}

export interface MailboxNodeConfig extends BaseNodeConfig {
  role: 'mailbox';
  /** `imaps` (993) and `pop3s` (995): implicit TLS (RFC 8314), offered when `tls` is set. */
  ports: { lmtp: number; pop3?: number; imap?: number; pop3s?: number; imaps?: number };
  users: UserConfig[];
  authThrottle?: AuthThrottleConfig;
  /** Client addresses allowed to deliver over LMTP (the lab's MX and MTA); others get `550 5.7.1`. Absent: any. */
  lmtpClients?: string[];
  /** SMTP fault rules of its LMTP server at start (issue 15); changed at run time with `set-smtp-faults`. */
  smtpFaults?: SmtpFaultRulesConfig;
  /**
   * The account service (issue 13): HTTPS (with `tls`) on `address:port` for users (login with password + TOTP, app
   * passwords, recent logins) and for the lab's MTAs (SMTP AUTH of 2FA users, with the lab's control token).
   */
  accounts?: { port: number };
  /**
   * Which server plays the mailbox role (issue 14): maillab's own (the default), or Debian's Dovecot run from a
   * config the lab writes (src/real/dovecot/), `dovecot.config` being the user's own dovecot.conf it includes first.
   */
  server?: 'maillab' | 'dovecot';
  dovecot?: { config?: string };
  /**
   * POP3 RETR marks a message \Seen, applied when the session ends (QUIT, or the connection closing), as Dovecot does
   * by default (issue 14). Default true; false never touches flags, like Dovecot's `pop3_no_flag_updates = yes`.
   */
  pop3MarksSeen?: boolean;
}

/**
 * A link proxy (issue 15): a TCP proxy on its own address between the host `link.from` and the host `link.to`. It
 * listens on `ports` (by the `to` host's service names, on the same port numbers) and forwards each connection to
 * the upstream of the same name, through the link's toxics (Toxiproxy's, src/shared/faults.ts).
 */
export interface ProxyNodeConfig extends BaseNodeConfig {
  role: 'proxy';
  /** The two lab hosts (their keys) and their host names, as events name the hop. */
  link: { from: string; to: string; fromHostname: string; toHostname: string };
  /** Listening ports by service name (the `to` host's services). */
  ports: Record<string, number>;
  /** Where each listener's connections go: the `to` host's address and the service's port. */
  upstreams: Record<string, Endpoint>;
  /**
   * Connect upstream from the client's own address (the local runtime: loopback owns all of 127/8, so the proxy may
   * bind any 127.x address), so the `to` server sees the original client and not the proxy. Absent or false: from
   * the proxy's address (a container cannot bind another container's address).
   */
  keepClientAddress?: boolean;
  /** The toxics at start; changed at run time with `set-toxics`. */
  toxics?: Toxic[];
}

export type NodeConfig = DnsNodeConfig | MtaNodeConfig | MxNodeConfig | MailboxNodeConfig | ProxyNodeConfig;
