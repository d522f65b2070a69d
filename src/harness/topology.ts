// A lab is data: domains, hosts with roles, users, and the retry schedule. `defineLab` checks it and fills in
// defaults; `planLab` turns it into one node configuration per host for a given address block and ports.
import { createHash } from 'node:crypto';
import net from 'node:net';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { DEFAULT_AUTH_THROTTLE, DEFAULT_COMMAND_TIMEOUT_MS, DEFAULT_DATA_TIMEOUT_MS, DEFAULT_SMTP_LIMITS, TLS_POLICY_MODES, type AuthThrottleConfig, type Endpoint, type TransportRoute, type TlsPolicyConfig, type TlsPolicyMode, type ApiKeyConfig, type DkimSigningConfig, type DnsRecord, type NodeConfig, type ProxyNodeConfig, type MtaStsSite, type ScannerConfig, type RetryConfig, type Role, type SmtpLimits, type UserConfig, type ZoneConfig } from '../shared/config.js';
import { CERTIFICATE_FAULTS, type CertificateFault } from './tls/ca.js';
import type { DnsFaultRule, SmtpFaultRule, Toxic } from '../shared/faults.js';
import { dnsFaultProblems } from '../dns/api.js';
import { validateSmtpFaultRules } from '../shared/smtp-faults.js';
import { linkNodeName, toxicViews } from '../proxy/api.js';

export interface MxTarget {
  /** A host of this lab (its key in `hosts`) or a host name. */
  host: string;
  preference: number;
}

export interface DomainDefinition {
  /** MX records of the domain, by lab host. An empty list publishes no MX (delivery falls back to A). */
  mx?: MxTarget[];
  /** Publish a null MX (RFC 7505): the domain accepts no mail. */
  nullMx?: boolean;
  /** Extra records in the domain's zone. */
  records?: DnsRecord[];
  /**
   * Publish an MTA-STS policy (RFC 8461): `_mta-sts.<domain>` TXT, and the policy served over HTTPS at
   * `mta-sts.<domain>` by the lab's policy host (the dns host), with a certificate from the lab CA.
   */
  mtaSts?: MtaStsDefinition;
  /** SPF (RFC 7208): the text of the domain's `v=spf1` TXT record, e.g. `v=spf1 a:mta.sender.test -all`. */
  spf?: string;
  /**
   * DKIM (RFC 6376) selectors of the domain. Their keys are made at each lab start and the public keys published at
   * `<selector>._domainkey.<domain>`; the MTAs sign the domain's submitted mail with the first selector whose `sign`
   * is not false.
   */
  dkim?: DkimDefinition[];
  /** DMARC (RFC 7489): the text of the `_dmarc.<domain>` TXT record, e.g. `v=DMARC1; p=reject`. */
  dmarc?: string;
}

export interface DkimDefinition {
  selector: string;
  /** `rsa-sha256` (a 2048-bit key, the default) or `ed25519-sha256` (RFC 8463). */
  algorithm?: 'rsa-sha256' | 'ed25519-sha256';
  /** `c=`, default `relaxed/relaxed`. */
  canonicalization?: DkimSigningConfig['canonicalization'];
  /** `h=`, default mailauth's list. */
  headers?: string[];
  /** false: published, but not signing (the next key of a rotation, or the one being retired). */
  sign?: boolean;
  /** false: signing, but its key not published (a rotation done in the wrong order). */
  publish?: boolean;
}

/** Mail authentication of a lab (issue 12). */
export interface LabAuthDefinition {
  /** MX hosts act on DMARC policies (reject → 550 5.7.1, quarantine → Junk); default true. */
  enforceDmarc?: boolean;
  /** Which From: a user may submit; default `own-domain` (others get 553 5.7.1). */
  submissionFrom?: 'own-domain' | 'any';
}

export interface MtaStsDefinition {
  mode: 'enforce' | 'testing' | 'none';
  /** The policy's `mx` patterns (`*.receiver.test` allowed); default: the host names of the domain's MX records. */
  mx?: string[];
  /** `max_age` in seconds; DEFAULT_MTA_STS_MAX_AGE unless set. */
  maxAge?: number;
  /** The TXT record's `id` (1–32 letters and digits); default: derived from the policy text, so it changes with it. */
  id?: string;
  /** A faulty certificate for the policy site on purpose (the same faults as hosts' certificates). */
  certificate?: CertificateFault;
}

/** One week, as RFC 8461 §3.2 suggests at least; a lab lives minutes, so in practice: until the lab stops. */
export const DEFAULT_MTA_STS_MAX_AGE = 604_800;

/** A TLSA record the lab publishes for a host's SMTP port, computed from the certificate it issued. */
export interface TlsaDefinition {
  /** 3 = DANE-EE (the host's own certificate), 2 = DANE-TA (the lab CA, which the host then sends in its chain). */
  usage: 2 | 3;
  /** 0 = the whole certificate, 1 = its public key. */
  selector: 0 | 1;
  /** 0 = exact, 1 = SHA-256, 2 = SHA-512. */
  matchingType: 0 | 1 | 2;
  /** Publish data that matches nothing (the right length, one byte changed): a stale record after a key rollover. */
  mismatch?: boolean;
}

/** The services an external host may offer, by their standard names (STANDARD_PORTS). */
export const EXTERNAL_SERVICES = ['smtp', 'submission', 'submissions', 'lmtp', 'imap', 'imaps', 'pop3', 'pop3s'] as const;
export type ExternalService = (typeof EXTERNAL_SERVICES)[number];

/** How long the lab waits for an external host's ports to accept and greet, unless its `ready.timeoutMs` says. */
export const DEFAULT_EXTERNAL_READY_TIMEOUT_MS = 10_000;

/**
 * A server the user runs elsewhere (issue 14): the lab does not start, stop or configure it, but treats it as one of
 * its hosts. Its `address` is published in the lab DNS (A record of `hostname`, and the PTR back), it is one of the
 * addresses the lab's MTAs may connect to, it is listed by `maillab up --json`, and the lab probes it before starting
 * (every port accepts a connection; smtp, submission and lmtp greet with 220, imap with `* OK`, pop3 with `+OK`; the
 * implicit-TLS ports submissions, imaps and pop3s are only connected to), failing the start within `ready.timeoutMs`
 * (DEFAULT_EXTERNAL_READY_TIMEOUT_MS) with the host, address, port and what was seen.
 *
 * Uses: a domain's MX target (`mx: [{ host: 'ext', preference: 10 }]`, needs `ports.smtp`; the MTAs connect to it on
 * that port, the transport map's port per MX host), a `transport` route's host (`ports.smtp` unless the route gives a
 * port), and an mx or mta host's `mailbox` (LMTP at `ports.lmtp`).
 *
 * The network rule holds for it too: the address must be on loopback, 127.0.0.0/8, where the local runtime's nodes
 * are (the docker runtime's lab network cannot reach the host's loopback, so it refuses a lab with external hosts).
 * It is not a node: `lab.node(name)` refuses it, `lab.external(name)` describes it; the lab issues it no certificate.
 */
export interface ExternalHostDefinition {
  role: 'external';
  /** Its name in the lab DNS, in a `.test` domain (a lab domain or any other), e.g. `smtp.user.test`. */
  hostname: string;
  /** Where it listens: an IPv4 address in 127.0.0.0/8. */
  address: string;
  /** Its ports by service; at least one. */
  ports: Partial<Record<ExternalService, number>>;
  /** The readiness probe: how long it may take (ms) before the lab start fails. */
  ready?: { timeoutMs?: number };
}

/**
 * A route of the lab's transport map (issue 14), like Postfix's `transport_maps` entry `smtp:[host]:port`: mail for the
 * domain goes to `host` (a lab host key: an external host with an smtp port, or an mx or mta host) on `port`, with no
 * MX lookup for the domain. `port` defaults to the host's SMTP port (an external's `ports.smtp`, a node's 25 + offset).
 */
export interface TransportDefinition {
  host: string;
  port?: number;
}

export type HostDefinition =
  | ExternalHostDefinition
  | { role: 'dns'; hostname: string }
  | {
      role: 'mta';
      hostname: string;
      localDomains?: string[];
      mailbox?: string;
      /** `postfix`: Debian's Postfix plays this MTA (local runtime, root), from the user's `main.cf`/`master.cf` if given. */
      server?: 'maillab' | 'postfix';
      /** Paths of the user's own Postfix files, read when the lab is planned. */
      postfix?: { mainCf?: string; masterCf?: string };
    }
  | {
      role: 'mx';
      hostname: string;
      domains: string[];
      mailbox: string;
      /** Forwarding rules: a recipient of this MX → the address its mail goes to instead (issue 12). */
      forwards?: Record<string, string>;
      /** The lab MTA host (its key) forwarded mail is re-sent through; it relays for this MX. */
      forwardVia?: string;
      /** ARC sealers (domains) whose chains this MX trusts to override a DMARC failure. */
      trustArcSealers?: string[];
      /**
       * The malware filter (issue 13): `builtin` (EICAR in any decoded MIME part, the default), `clamav` (a clamd the
       * MX starts with the test signature database, local runtime), or `none`.
       */
      scanner?: 'builtin' | 'clamav' | 'none';
      /** What malware gets: `reject` (554 5.7.1, the default) or `quarantine` (the recipients' Junk folder). */
      malwareAction?: 'reject' | 'quarantine';
      /** `postfix`: Debian's Postfix plays this MX (local runtime, root), from the user's `main.cf`/`master.cf` if given. */
      server?: 'maillab' | 'postfix';
      /** Paths of the user's own Postfix files, read when the lab is planned. */
      postfix?: { mainCf?: string; masterCf?: string };
    }
  | {
      role: 'mailbox';
      hostname: string;
      /** `dovecot`: Debian's Dovecot plays this mailbox server (local runtime, root), from `config` if given. */
      server?: 'maillab' | 'dovecot';
      /** The user's own dovecot.conf, included first; the lab's settings override only what it must. */
      config?: string;
    };

/** Faults of a lab (issue 15): set at start, changed while it runs (src/shared/faults.ts has the shapes). */
export interface LabFaultsDefinition {
  /** The seed of every chance draw (rule probabilities, toxicities, chaos schedules); MAILLAB_SEED overrides it. Default: a new one per start, printed with every failure. */
  seed?: number;
  /** SMTP/LMTP fault rules by host (its key in `hosts`): an mta, mx or mailbox host run by maillab. */
  smtp?: Record<string, SmtpFaultRule[]>;
  /** Fault rules of the lab DNS. */
  dns?: DnsFaultRule[];
  /** Link proxies the lab puts on the path from one host to another (no change to either), with their first toxics. */
  links?: LinkDefinition[];
}

/**
 * A link proxy between two hosts: `from`'s connections to `to` pass through it (Toxiproxy's toxics apply there). The
 * proxy is a node of its own, `link-<from>-<to>` (host name `link-<from>-<to>.<the dns host's domain>`), with its own
 * address, listening on the port numbers of `to`'s TCP services. Neither node is changed; the lab puts the proxy on the
 * path when it plans the lab:
 * - `from` reaches `to` by name (an MTA to an MX or MTA host, through MX records or the transport map): the lab DNS
 *   answers `to`'s host name (A) with the proxy's address. Every client that looks the name up goes through the proxy
 *   (`to`'s PTR still names it at its own address); so one such link per `to`.
 * - `from` reaches `to` by address (LMTP to a mailbox, an MX's forwardVia, the account service): `from`'s config gets
 *   the proxy's endpoint instead.
 * The proxy passes bytes, so TLS is end to end: a client still verifies `to`'s certificate by name. Where the runtime
 * lets the proxy connect from the client's own address (local: loopback owns 127/8), `to` sees its real client; where
 * it cannot (docker), `to` sees the proxy's address, which the lab then lets in where `from`'s would be: the SPF
 * records that name `from` (`a:<host name>` gains `ip4:<proxy>`), the mailbox's LMTP clients, an MTA's relay clients.
 */
export interface LinkDefinition {
  from: string;
  to: string;
  toxics?: Toxic[];
}

export interface LabDefinition {
  name: string;
  domains: Record<string, DomainDefinition>;
  hosts: Record<string, HostDefinition>;
  users: UserConfig[];
  retry: RetryConfig;
  /** SMTP/LMTP greeting delay (early-talker check) in ms; 0 in the lab. */
  greetingDelayMs?: number;
  /** Timeout for the MTA's connections to an MX. */
  connectTimeoutMs?: number;
  /**
   * How long the MTAs wait, relaying to an MX, from the start of the message data to the reply to its final dot;
   * past it the recipients are deferred (`timed out waiting for the server during end of data`). Default
   * DEFAULT_DATA_TIMEOUT_MS, RFC 5321 §4.5.3.2's 10 minutes (Postfix's smtp_data_done_timeout).
   */
  dataTimeoutMs?: number;
  /**
   * How long the MTAs wait for any other reply (greeting, EHLO, MAIL, RCPT, DATA) and on a stalled connection, when
   * relaying or delivering over LMTP; past it the attempt is deferred with a timeout naming the command. Default
   * DEFAULT_COMMAND_TIMEOUT_MS (60 s).
   */
  commandTimeoutMs?: number;
  /** Limits of every SMTP server of the lab; unset fields take DEFAULT_SMTP_LIMITS. */
  smtpLimits?: Partial<SmtpLimits>;
  /** Login throttling on SMTP AUTH, IMAP and POP3; unset fields take DEFAULT_AUTH_THROTTLE, `false` turns it off. */
  authThrottle?: Partial<AuthThrottleConfig> | false;
  /** TLS of the lab's nodes: every host gets a certificate from the lab's own CA (harness/tls/ca.ts). */
  tls?: LabTlsDefinition;
  /** Mail authentication: DMARC enforcement at the MX hosts and the submission From: policy. */
  auth?: LabAuthDefinition;
  /** Keys of the MTAs' transactional HTTP email API (issue 13), each with the From: domains it may send as. */
  apiKeys?: ApiKeyConfig[];
  /** Faults: SMTP rules, DNS rules, link proxies with toxics, and the seed of their chance draws (issue 15). */
  faults?: LabFaultsDefinition;
  /**
   * The transport map of the lab's MTAs (issue 14), by destination domain (`.test`): Postfix's `smtp:[host]:port`, no
   * MX lookup for that domain. E.g. `{ 'partner.test': { host: 'ext', port: 2525 } }`. Local domains of an MTA are not
   * affected (they go to its mailbox over LMTP).
   */
  transport?: Record<string, TransportDefinition>;
}

export interface LabTlsDefinition {
  /** Faulty certificates on purpose, by host (its key in `hosts`): e.g. `{ mx: 'expired' }`. Others are sound. */
  certificates?: Record<string, CertificateFault>;
  /** Passwords over connections without TLS (SMTP AUTH, IMAP, POP3); DEFAULT_ALLOW_PLAINTEXT_AUTH unless set. */
  allowPlaintextAuth?: boolean;
  /**
   * The MTA's outbound TLS policy (like Postfix's smtp_tls_security_level): `default` for every destination (`may`
   * unless set) and a mode per destination domain, e.g. `{ default: 'may', domains: { 'receiver.test': 'verify' } }`.
   */
  outbound?: {
    default?: TlsPolicyMode;
    domains?: Record<string, TlsPolicyMode>;
    /** Fetch and apply the destination's MTA-STS policy where no mode is set for the domain (default true). */
    mtaSts?: boolean;
    /** Look up TLSA records of MX hosts and apply DANE where they exist (default true). */
    dane?: boolean;
  };
  /** MX hosts (keys in `hosts`) that do not offer STARTTLS, standing in for an attacker stripping it. */
  noStartTls?: string[];
  /**
   * DANE (RFC 7672): TLSA records to publish at `_25._tcp.<host name>` (the lab's SMTP port), by host key, computed
   * from the host's certificate (DANE-EE) or the lab CA (DANE-TA) at start. E.g. `{ mx: [{ usage: 3, selector: 1,
   * matchingType: 1 }] }`. Records of one's own can also go in a domain's `records` or be set while the lab runs.
   */
  dane?: Record<string, TlsaDefinition[]>;
}

/** The MTA's outbound TLS policy of a lab: `may` wherever the lab does not say otherwise. */
export function tlsPolicyOf(lab: LabDefinition): TlsPolicyConfig {
  const outbound = lab.tls?.outbound;
  const domains: Record<string, TlsPolicyMode> = {};
  for (const [domain, mode] of Object.entries(outbound?.domains ?? {})) domains[domain.toLowerCase()] = mode;
  return { default: outbound?.default ?? 'may', domains };
}

/**
 * Whether passwords may cross a connection without TLS when the lab does not say: no, as RFC 8314 says. A lab may
 * allow it (`tls: { allowPlaintextAuth: true }`) to show why that is dangerous.
 */
export const DEFAULT_ALLOW_PLAINTEXT_AUTH = false;

/** The SMTP limits and login throttling a lab's nodes run with. */
export function securityOf(lab: LabDefinition): { limits: SmtpLimits; authThrottle: AuthThrottleConfig } {
  const authThrottle = lab.authThrottle === false ? { ...DEFAULT_AUTH_THROTTLE, enabled: false } : { ...DEFAULT_AUTH_THROTTLE, ...lab.authThrottle };
  return { limits: { ...DEFAULT_SMTP_LIMITS, ...lab.smtpLimits }, authThrottle };
}

export function defineLab(definition: LabDefinition): LabDefinition {
  validateLab(definition);
  return definition;
}

export function validateLab(lab: LabDefinition): void {
  const problems: string[] = [];
  const hosts = Object.entries(lab.hosts);
  if (hosts.filter(([, h]) => h.role === 'dns').length !== 1) problems.push('a lab needs exactly one dns host');
  for (const [name, host] of hosts) {
    if (!/^[a-z][a-z0-9-]*$/.test(name)) problems.push(`host name "${name}" must be lower-case letters, digits and dashes`);
    if ((host.role === 'mx' || host.role === 'mta') && host.mailbox) {
      const mailbox = lab.hosts[host.mailbox];
      if (mailbox?.role === 'external') {
        if (!mailbox.ports?.lmtp) problems.push(`${name}: mailbox "${host.mailbox}" is an external host without an lmtp port (ports.lmtp)`);
      } else if (mailbox?.role !== 'mailbox') problems.push(`${name}: mailbox "${host.mailbox}" is not a mailbox host (nor an external host with an lmtp port)`);
    }
    if (host.role === 'external') problems.push(...externalProblems(name, host));
  }
  problems.push(...sharedExternalAddresses(lab));
  for (const [domain, def] of Object.entries(lab.domains)) {
    if (!domain.endsWith('.test')) problems.push(`domain ${domain} must use the reserved .test TLD`);
    for (const mx of def.mx ?? []) {
      const target = lab.hosts[mx.host];
      if (!target && !mx.host.includes('.')) problems.push(`${domain}: MX host "${mx.host}" is not a lab host`);
      if (target?.role === 'external' && !target.ports?.smtp) problems.push(`${domain}: MX host "${mx.host}" is an external host without an smtp port (ports.smtp)`);
    }
  }
  problems.push(...transportProblems(lab));
  if (lab.faults?.dns !== undefined) problems.push(...dnsFaultProblems(lab.faults.dns, 'faults.dns'));
  problems.push(...linkProblems(lab));
  for (const [host, fault] of Object.entries(lab.tls?.certificates ?? {})) {
    if (!lab.hosts[host]) problems.push(`tls.certificates: "${host}" is not a lab host`);
    if (lab.hosts[host]?.role === 'external') problems.push(`tls.certificates: "${host}" is an external host: the lab issues it no certificate`);
    if (!(CERTIFICATE_FAULTS as readonly string[]).includes(fault)) problems.push(`tls.certificates.${host}: "${String(fault)}" is not a certificate fault (${CERTIFICATE_FAULTS.join(', ')})`);
  }
  if (lab.tls?.allowPlaintextAuth !== undefined && typeof lab.tls.allowPlaintextAuth !== 'boolean') problems.push('tls.allowPlaintextAuth must be true or false');
  const isMode = (mode: unknown) => (TLS_POLICY_MODES as readonly unknown[]).includes(mode);
  const outbound = lab.tls?.outbound;
  if (outbound?.default !== undefined && !isMode(outbound.default)) problems.push(`tls.outbound.default: "${String(outbound.default)}" is not a TLS policy (${TLS_POLICY_MODES.join(', ')})`);
  for (const [domain, mode] of Object.entries(outbound?.domains ?? {})) {
    if (!/^[a-z0-9.-]+$/i.test(domain)) problems.push(`tls.outbound.domains: "${domain}" is not a domain name`);
    if (!isMode(mode)) problems.push(`tls.outbound.domains.${domain}: "${String(mode)}" is not a TLS policy (${TLS_POLICY_MODES.join(', ')})`);
  }
  for (const [domain, def] of Object.entries(lab.domains)) {
    const sts = def.mtaSts;
    if (!sts) continue;
    if (!['enforce', 'testing', 'none'].includes(sts.mode)) problems.push(`${domain}: mtaSts.mode "${String(sts.mode)}" is not enforce, testing or none`);
    if (sts.id !== undefined && !/^[a-zA-Z0-9]{1,32}$/.test(sts.id)) problems.push(`${domain}: mtaSts.id "${sts.id}" must be 1 to 32 letters and digits (RFC 8461 §3.1)`);
    if (sts.maxAge !== undefined && !(Number.isInteger(sts.maxAge) && sts.maxAge >= 0 && sts.maxAge <= 31_557_600)) problems.push(`${domain}: mtaSts.maxAge must be whole seconds from 0 to 31557600`);
    if (sts.certificate !== undefined && !(CERTIFICATE_FAULTS as readonly string[]).includes(sts.certificate)) problems.push(`${domain}: mtaSts.certificate "${String(sts.certificate)}" is not a certificate fault (${CERTIFICATE_FAULTS.join(', ')})`);
    if (sts.mode !== 'none' && !(sts.mx ?? def.mx ?? []).length) problems.push(`${domain}: an MTA-STS policy in ${sts.mode} mode needs mx patterns (or MX records)`);
  }
  for (const [domain, def] of Object.entries(lab.domains)) {
    if (def.spf !== undefined && !/^v=spf1( |$)/i.test(def.spf)) problems.push(`${domain}: spf must start with "v=spf1" (RFC 7208 §4.5)`);
    if (def.dmarc !== undefined && !/^v=DMARC1\s*(;|$)/.test(def.dmarc)) problems.push(`${domain}: dmarc must start with "v=DMARC1" (RFC 7489 §6.4)`);
    const selectors = new Set<string>();
    for (const key of def.dkim ?? []) {
      if (!/^[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*$/i.test(key.selector)) problems.push(`${domain}: DKIM selector "${key.selector}" is not a valid DNS label sequence`);
      if (selectors.has(key.selector)) problems.push(`${domain}: DKIM selector "${key.selector}" is defined twice`);
      selectors.add(key.selector);
      if (key.algorithm !== undefined && !['rsa-sha256', 'ed25519-sha256'].includes(key.algorithm)) problems.push(`${domain}: DKIM algorithm "${String(key.algorithm)}" is not rsa-sha256 or ed25519-sha256`);
    }
  }
  for (const [name, host] of hosts) {
    if (host.role !== 'mx') continue;
    for (const [from, to] of Object.entries(host.forwards ?? {})) {
      if (!from.includes('@') || !to.includes('@')) problems.push(`${name}: forwards: "${from}" → "${to}" must map an address to an address`);
      else if (!host.domains.map((d) => d.toLowerCase()).includes(from.split('@')[1]!.toLowerCase())) problems.push(`${name}: forwards: ${from} is not in a domain this MX serves`);
    }
    if (host.forwards && Object.keys(host.forwards).length && lab.hosts[host.forwardVia ?? '']?.role !== 'mta') problems.push(`${name}: forwarding needs forwardVia, an mta host of the lab`);
  }
  const seenUsers = new Set<string>();
  for (const user of lab.users) {
    if (seenUsers.has(user.address.toLowerCase())) problems.push(`user ${user.address} is defined twice`);
    seenUsers.add(user.address.toLowerCase());
    if (user.totpSecret !== undefined && !/^[A-Z2-7]{16,}=*$/.test(user.totpSecret)) problems.push(`user ${user.address}: totpSecret must be base32 (A-Z, 2-7), at least 16 characters (RFC 4648, RFC 6238)`);
    const names = (user.appPasswords ?? []).map((a) => a.name);
    if (new Set(names).size !== names.length) problems.push(`user ${user.address}: app password names must be unique`);
    for (const app of user.appPasswords ?? []) if (!app.name || !app.password || app.password === user.password) problems.push(`user ${user.address}: app password "${app.name}" needs a name and a password other than the main one`);
  }
  for (const key of lab.apiKeys ?? []) {
    if (key.key.length < 16) problems.push(`apiKeys: a key must be at least 16 characters (${key.key.slice(0, 4)}… is not)`);
    for (const d of key.domains) if (!lab.domains[d]) problems.push(`apiKeys: ${d} is not a lab domain`);
  }
  for (const [name, host] of hosts) {
    if (host.role === 'mailbox' && host.server !== undefined && !['maillab', 'dovecot'].includes(host.server)) problems.push(`${name}: server must be maillab or dovecot`);
    if ((host.role === 'mx' || host.role === 'mta') && host.server !== undefined && !['maillab', 'postfix'].includes(host.server)) problems.push(`${name}: server must be maillab or postfix`);
    if (host.role === 'mx' && host.scanner !== undefined && !['builtin', 'clamav', 'none'].includes(host.scanner)) problems.push(`${name}: scanner must be builtin, clamav or none`);
  }
  if (lab.auth?.submissionFrom !== undefined && !['own-domain', 'any'].includes(lab.auth.submissionFrom)) problems.push(`auth.submissionFrom must be own-domain or any`);
  for (const [host, records] of Object.entries(lab.tls?.dane ?? {})) {
    if (!lab.hosts[host]) problems.push(`tls.dane: "${host}" is not a lab host`);
    if (lab.hosts[host]?.role === 'external') problems.push(`tls.dane: "${host}" is an external host, whose certificate the lab does not know: publish its TLSA records in a domain's records`);
    for (const r of records) {
      if (![2, 3].includes(r.usage) || ![0, 1].includes(r.selector) || ![0, 1, 2].includes(r.matchingType)) problems.push(`tls.dane.${host}: ${r.usage} ${r.selector} ${r.matchingType} is not a DANE-TA/DANE-EE record the lab can compute (usage 2|3, selector 0|1, matching type 0|1|2)`);
    }
  }
  for (const host of lab.tls?.noStartTls ?? []) {
    if (lab.hosts[host]?.role !== 'mx') problems.push(`tls.noStartTls: "${host}" is not an mx host of the lab`);
  }
  for (const user of lab.users) {
    const domain = user.address.split('@')[1];
    if (!domain || !lab.domains[domain]) problems.push(`user ${user.address}: domain is not a lab domain`);
  }
  problems.push(...smtpFaultProblems(lab));
  if (lab.dataTimeoutMs !== undefined && !(Number.isInteger(lab.dataTimeoutMs) && lab.dataTimeoutMs > 0)) problems.push(`dataTimeoutMs must be whole milliseconds above 0, not ${String(lab.dataTimeoutMs)}`);
  if (lab.commandTimeoutMs !== undefined && !(Number.isInteger(lab.commandTimeoutMs) && lab.commandTimeoutMs > 0)) problems.push(`commandTimeoutMs must be whole milliseconds above 0, not ${String(lab.commandTimeoutMs)}`);
  if (problems.length) throw new Error(`invalid lab "${lab.name}":\n  - ${problems.join('\n  - ')}`);
}

/**
 * What is wrong with the lab's SMTP fault rules (faults.smtp): each key must be an mta, mx or mailbox host whose
 * SMTP/LMTP server is maillab's (the rules are applied by maillab's servers), and its rules must be valid.
 */
function smtpFaultProblems(lab: LabDefinition): string[] {
  const problems: string[] = [];
  for (const [name, rules] of Object.entries(lab.faults?.smtp ?? {})) {
    const host = lab.hosts[name];
    if (!host) problems.push(`faults.smtp: "${name}" is not a lab host`);
    else if (host.role !== 'mta' && host.role !== 'mx' && host.role !== 'mailbox') problems.push(`faults.smtp: "${name}" is a ${host.role} host, which runs no SMTP or LMTP server (an mta, mx or mailbox host)`);
    else if (host.server === 'postfix' || host.server === 'dovecot') problems.push(`faults.smtp: "${name}" is run by ${host.server === 'postfix' ? 'Postfix' : 'Dovecot'}: SMTP fault rules are applied by maillab's own SMTP and LMTP servers, so only a host with server 'maillab' can take them`);
    try {
      validateSmtpFaultRules(rules);
    } catch (err) {
      // One line per host: its rules' problems, each naming the rule and the field.
      problems.push(`faults.smtp.${name}: ${(err as Error).message.replace(/^invalid SMTP fault rules:\n\s*- /, '').replace(/\n\s*- /g, '; ')}`);
    }
  }
  return problems;
}

/** What is wrong with an external host's definition (the network rule, its name, ports and probe). */
function externalProblems(name: string, host: ExternalHostDefinition): string[] {
  const problems: string[] = [];
  if (typeof host.address !== 'string' || !net.isIPv4(host.address) || !host.address.startsWith('127.'))
    problems.push(`${name}: address "${String(host.address)}" is outside the lab's network rule: an external host must be on loopback, an IPv4 address in 127.0.0.0/8 (the local runtime's network; a lab with external hosts cannot run on the docker runtime)`);
  if (typeof host.hostname !== 'string' || !/^([a-z0-9]([a-z0-9-]*[a-z0-9])?\.)+test$/i.test(host.hostname))
    problems.push(`${name}: hostname "${String(host.hostname)}" must be a host name in a .test domain (e.g. smtp.partner.test)`);
  const ports = Object.entries(host.ports ?? {});
  if (!ports.length) problems.push(`${name}: an external host needs at least one port (ports: { ${EXTERNAL_SERVICES.join(', ')} })`);
  for (const [service, port] of ports) {
    if (!(EXTERNAL_SERVICES as readonly string[]).includes(service)) problems.push(`${name}: ports.${service} is not a service the lab knows (${EXTERNAL_SERVICES.join(', ')})`);
    else if (!isPort(port)) problems.push(`${name}: ports.${service} must be a port number from 1 to 65535, not ${String(port)}`);
  }
  const timeout = host.ready?.timeoutMs;
  if (timeout !== undefined && !(Number.isInteger(timeout) && timeout > 0)) problems.push(`${name}: ready.timeoutMs must be a whole number of milliseconds above 0`);
  return problems;
}

/** External hosts sharing an address: one PTR per address, so one host with all its ports. */
function sharedExternalAddresses(lab: LabDefinition): string[] {
  const byAddress = new Map<string, string[]>();
  for (const [name, host] of Object.entries(lab.hosts)) if (host.role === 'external') byAddress.set(host.address, [...(byAddress.get(host.address) ?? []), name]);
  return [...byAddress].filter(([, names]) => names.length > 1).map(([address, names]) => `external hosts ${names.join(' and ')} share the address ${address}: make them one host with all their ports (one A and one PTR record)`);
}

function isPort(port: unknown): port is number {
  return Number.isInteger(port) && (port as number) >= 1 && (port as number) <= 65_535;
}

/** What is wrong with the lab's transport map: each route needs a `.test` domain and a host with an SMTP port. */
function transportProblems(lab: LabDefinition): string[] {
  const problems: string[] = [];
  for (const [domain, route] of Object.entries(lab.transport ?? {})) {
    if (!/^([a-z0-9]([a-z0-9-]*[a-z0-9])?\.)+test$/i.test(domain)) problems.push(`transport: "${domain}" must be a domain in .test`);
    const host = lab.hosts[route?.host];
    if (!host) problems.push(`transport.${domain}: host "${String(route?.host)}" is not a lab host (an external host, or an mx or mta host)`);
    else if (host.role !== 'external' && host.role !== 'mx' && host.role !== 'mta') problems.push(`transport.${domain}: host "${route.host}" is a ${host.role} host, which takes no SMTP (an external host, or an mx or mta host)`);
    else if (host.role === 'external' && route.port === undefined && !host.ports?.smtp) problems.push(`transport.${domain}: external host "${route.host}" has no smtp port: give the route a port or the host ports.smtp`);
    if (route?.port !== undefined && !isPort(route.port)) problems.push(`transport.${domain}: port must be a port number from 1 to 65535, not ${String(route.port)}`);
  }
  return problems;
}

export const STANDARD_PORTS = { dns: 53, smtp: 25, submission: 587, submissions: 465, lmtp: 24, pop3: 110, pop3s: 995, imap: 143, imaps: 993, https: 443, api: 8025, clamd: 3310 } as const;

/** Where the test signature database of ClamAV lives (EICAR and a custom test signature, made with sigtool). */
export const CLAMAV_TEST_DATABASE = 'src/mx/testdata/clamav/db';
export const CONTROL_PORT = 7070;

export interface LabPlan {
  /** Node configurations, by host name, in start order (dns first, mailbox before mx/mta). */
  nodes: Record<string, NodeConfig>;
  /** The external hosts (issue 14), by host name: not nodes, nothing is started for them; probed before the nodes start. */
  externals: Record<string, ExternalHostPlan>;
  zones: ZoneConfig[];
}

/** An external host as the lab uses it: its given address and ports, and how long the readiness probe may take. */
export interface ExternalHostPlan {
  name: string;
  hostname: string;
  address: string;
  ports: Partial<Record<ExternalService, number>>;
  readyTimeoutMs: number;
}

export interface PlanOptions {
  /** Address of each host (an external host's is its own `address`, whatever is given here). */
  addresses: Record<string, string>;
  /** Added to every standard port (0 when the lab may bind privileged ports). */
  portOffset: number;
  /** Parent directory of the hosts' data directories. */
  dataRoot: string;
  /** Where the package's files are, as the nodes see them (the ClamAV test database); absent: relative paths. */
  packageRoot?: string;
  /**
   * Link proxies connect upstream from their client's own address (the local runtime: loopback owns all of 127/8), so
   * the `to` host sees its real client. Absent or false (docker): they connect from their own address.
   */
  linksKeepClientAddress?: boolean;
}

const START_ORDER: HostDefinition['role'][] = ['dns', 'mailbox', 'mx', 'mta'];

export function planLab(lab: LabDefinition, options: PlanOptions): LabPlan {
  validateLab(lab);
  const port = (service: keyof typeof STANDARD_PORTS) => STANDARD_PORTS[service] + options.portOffset;
  // The runtime allocates an address per host; an external host keeps the one the user gave.
  const address = (host: string) => {
    const definition = lab.hosts[host];
    const a = definition?.role === 'external' ? definition.address : options.addresses[host];
    if (!a) throw new Error(`no address for host ${host}`);
    return a;
  };
  const externals = externalsOf(lab);
  for (const external of Object.values(externals)) {
    const node = Object.keys(lab.hosts).find((h) => lab.hosts[h]!.role !== 'external' && address(h) === external.address);
    if (node) throw new Error(`lab ${lab.name}: external host ${external.name} is at ${external.address}, the address the runtime gave host ${node}: choose another address for ${external.name}`);
  }
  const dnsHost = Object.keys(lab.hosts).find((h) => lab.hosts[h]!.role === 'dns')!;
  const links = linkPlans(lab, address);
  const zones = buildZones(lab, address, dnsHost, links, options.linksKeepClientAddress === true);
  const base = (name: string, host: { hostname: string }) => ({
    name,
    hostname: host.hostname,
    address: address(name),
    dataDir: path.join(options.dataRoot, name),
    controlPort: CONTROL_PORT,
    resolver: { host: address(dnsHost), port: port('dns') },
    greetingDelayMs: lab.greetingDelayMs ?? 0,
    fsync: true,
  });
  // A mailbox host's LMTP, or an external host's (at its own lmtp port, checked by validateLab).
  const lmtpOf = (mailbox: string | undefined): Endpoint | undefined => (mailbox ? { host: address(mailbox), port: externals[mailbox]?.ports.lmtp ?? port('lmtp') } : undefined);
  const usersIn = (domains: string[]) => lab.users.filter((u) => domains.includes(u.address.split('@')[1]!.toLowerCase()));

  const { limits, authThrottle } = securityOf(lab);
  // A link's proxy is one of the lab's addresses: the MTAs connect to it where its `to` host's name leads there.
  const labAddresses = [...Object.keys(lab.hosts).map(address), ...links.map((l) => l.address)];
  const deliverers = Object.entries(lab.hosts)
    .filter(([, h]) => h.role === 'mx' || h.role === 'mta')
    .map(([name]) => address(name));

  const nodes: Record<string, NodeConfig> = {};
  const transport = transportOf(lab, port('smtp'));
  const ordered = Object.entries(lab.hosts).filter(([, h]) => h.role !== 'external').sort(([, a], [, b]) => START_ORDER.indexOf(a.role) - START_ORDER.indexOf(b.role));
  for (const [name, host] of ordered) {
    switch (host.role) {
      case 'dns': {
        const sites = mtaStsSites(lab);
        const dnsFaults = lab.faults?.dns?.length ? { dnsFaults: structuredClone(lab.faults.dns) } : {};
        nodes[name] = { ...base(name, host), role: 'dns', port: port('dns'), zones, ...(sites.length ? { mtaSts: { port: port('https'), sites } } : {}), ...dnsFaults };
        break;
      }
      case 'mailbox':
        nodes[name] = {
          ...base(name, host),
          role: 'mailbox',
          ports: { lmtp: port('lmtp'), pop3: port('pop3'), imap: port('imap'), pop3s: port('pop3s'), imaps: port('imaps') },
          users: lab.users,
          authThrottle,
          lmtpClients: deliverers,
          ...smtpFaultsFor(lab, name),
          // Dovecot has no account service of maillab's (its own auth is the config's).
          ...(host.server === 'dovecot' ? { server: 'dovecot' as const, dovecot: host.config ? { config: path.resolve(host.config) } : {} } : { accounts: { port: port('https') } }),
        };
        break;
      case 'mx':
        nodes[name] = {
          ...base(name, host),
          role: 'mx',
          ports: { smtp: port('smtp') },
          domains: host.domains,
          recipients: usersIn(host.domains).map((u) => u.address.toLowerCase()),
          lmtp: lmtpOf(host.mailbox)!,
          limits,
          ...(lab.tls?.noStartTls?.includes(name) ? { noStartTls: true } : {}),
          ...smtpFaultsFor(lab, name),
          auth: { enforceDmarc: lab.auth?.enforceDmarc ?? true, trustedArcSealers: (host.trustArcSealers ?? []).map((d) => d.toLowerCase()) },
          ...scannerOf(host.scanner ?? 'builtin', { host: address(name), port: port('clamd') }, options.packageRoot),
          ...(host.malwareAction ? { malwareAction: host.malwareAction } : {}),
          ...(host.server === 'postfix' ? { server: 'postfix' as const, postfix: readPostfixFiles(host.postfix), retry: lab.retry } : {}),
          ...(host.forwards && Object.keys(host.forwards).length
            ? {
                forwards: Object.fromEntries(Object.entries(host.forwards).map(([from, to]) => [from.toLowerCase(), to])),
                forwardVia: { host: address(host.forwardVia!), port: port('smtp') },
              }
            : {}),
        };
        break;
      case 'mta': {
        const localDomains = host.localDomains ?? [];
        nodes[name] = {
          ...base(name, host),
          role: 'mta',
          ports: { smtp: port('smtp'), submission: port('submission'), submissions: port('submissions') },
          localDomains,
          ...(host.mailbox ? { localDelivery: lmtpOf(host.mailbox)! } : {}),
          users: lab.users,
          retry: lab.retry,
          relayPort: port('smtp'),
          ...transport,
          connectTimeoutMs: lab.connectTimeoutMs ?? 2000,
          dataTimeoutMs: lab.dataTimeoutMs ?? DEFAULT_DATA_TIMEOUT_MS,
          commandTimeoutMs: lab.commandTimeoutMs ?? DEFAULT_COMMAND_TIMEOUT_MS,
          ...smtpFaultsFor(lab, name),
          limits,
          authThrottle,
          labAddresses,
          tlsPolicy: tlsPolicyOf(lab),
          submissionFrom: lab.auth?.submissionFrom ?? 'own-domain',
          ...(lab.apiKeys?.length ? { api: { port: port('api'), keys: lab.apiKeys } } : {}),
          ...authServiceOf(lab, host.mailbox, (mailbox) => ({ host: address(mailbox), port: port('https') })),
          ...relayClientsOf(lab, name, address),
          ...(lab.tls?.outbound?.mtaSts === false ? {} : { mtaSts: { port: port('https') } }),
          dane: lab.tls?.outbound?.dane !== false,
          ...(host.server === 'postfix' ? { server: 'postfix' as const, postfix: readPostfixFiles(host.postfix) } : {}),
        };
        break;
      }
      case 'external':
        break; // not a node: in `externals`
    }
  }
  const withLinks = placeLinks(nodes, links, options.linksKeepClientAddress === true, base);
  return { nodes: withLinks, externals, zones };
}

/** A link of the lab as planned: its proxy node's name, host name and address, and how `from` reaches `to`. */
interface LinkPlan {
  name: string;
  hostname: string;
  address: string;
  from: string;
  to: string;
  /** `from` reaches `to` by its host name (an MTA to an SMTP host): the lab DNS answers that name with the proxy. */
  byName: boolean;
  toxics: Toxic[];
}

/** The node names of a lab: its hosts (external ones included, which keep their own address), then its link proxies. */
export function labNodeNames(lab: LabDefinition): string[] {
  return [...Object.keys(lab.hosts), ...(lab.faults?.links ?? []).map((l) => linkNodeName(l.from, l.to))];
}

function linkPlans(lab: LabDefinition, address: (host: string) => string): LinkPlan[] {
  const dns = Object.values(lab.hosts).find((h) => h.role === 'dns')!;
  const domain = dns.hostname.split('.').slice(1).join('.') || dns.hostname;
  return (lab.faults?.links ?? []).map((l) => {
    const name = linkNodeName(l.from, l.to);
    const to = lab.hosts[l.to]!.role;
    return { name, hostname: `${name}.${domain}`, address: address(name), from: l.from, to: l.to, byName: lab.hosts[l.from]!.role === 'mta' && (to === 'mx' || to === 'mta'), toxics: l.toxics ?? [] };
  });
}

/** What is wrong with the lab's links (faults.links). */
function linkProblems(lab: LabDefinition): string[] {
  const problems: string[] = [];
  const seen = new Set<string>();
  const byNameTargets = new Map<string, string>();
  for (const [i, link] of (lab.faults?.links ?? []).entries()) {
    const where = `faults.links[${i}] (${String(link?.from)} -> ${String(link?.to)})`;
    const from = lab.hosts[link?.from];
    const to = lab.hosts[link?.to];
    if (!from || !to) {
      problems.push(`${where}: from and to must be hosts of the lab`);
      continue;
    }
    if (from.role !== 'mta' && from.role !== 'mx') problems.push(`${where}: from must be an mta or mx host (the hosts that connect to others), not a ${from.role} host`);
    if (to.role !== 'mta' && to.role !== 'mx' && to.role !== 'mailbox')
      problems.push(`${where}: to must be an mta, mx or mailbox host, not a ${to.role} host${to.role === 'dns' ? ' (DNS is UDP: the link proxy is TCP only)' : to.role === 'external' ? ' (an external server is not on the lab network the proxy serves)' : ''}`);
    if (link.from === link.to) problems.push(`${where}: a link joins two different hosts`);
    const name = linkNodeName(link.from, link.to);
    if (seen.has(name)) problems.push(`${where}: the link is defined twice`);
    seen.add(name);
    if (lab.hosts[name]) problems.push(`${where}: its proxy node's name ${name} is already a host of the lab`);
    if (from.role === 'mta' && (to.role === 'mx' || to.role === 'mta')) {
      const other = byNameTargets.get(link.to);
      if (other) problems.push(`${where}: ${link.to}'s host name can lead to one proxy only, and ${other} -> ${link.to} has it (the lab DNS answers the name with the proxy's address)`);
      byNameTargets.set(link.to, link.from);
    }
    try {
      toxicViews(link.toxics ?? []);
    } catch (err) {
      problems.push(`${where}: ${(err as Error).message}`);
    }
  }
  return problems;
}

/** The TCP services of a node, by name, that a link proxy in front of it listens on (same port numbers). */
function tcpServicesOf(config: NodeConfig): Record<string, number> {
  const services: Record<string, number> = {};
  if (config.role === 'dns' || config.role === 'proxy') return services;
  for (const [name, port] of Object.entries(config.ports)) if (typeof port === 'number') services[name] = port;
  if (config.role === 'mailbox' && config.accounts) services.accounts = config.accounts.port;
  if (config.role === 'mta' && config.api) services.api = config.api.port;
  return services;
}

/**
 * The link proxies' node configs, and the lab's nodes changed to use them: `from` gets the proxy's endpoint for every
 * service of `to` it reaches by address; without `keepClientAddress`, `to` lets the proxy in where it lets `from` in
 * (LMTP clients, relay clients). Nodes in start order, a link's proxy before the MTAs.
 */
function placeLinks(nodes: Record<string, NodeConfig>, links: LinkPlan[], keepClientAddress: boolean, base: (name: string, host: { hostname: string }) => Omit<ProxyNodeConfig, 'role' | 'link' | 'ports' | 'upstreams'>): Record<string, NodeConfig> {
  const proxies: Record<string, NodeConfig> = {};
  for (const link of links) {
    const from = nodes[link.from]!;
    const to = nodes[link.to]!;
    const services = tcpServicesOf(to);
    const ports = new Set(Object.values(services));
    proxies[link.name] = {
      ...base(link.name, { hostname: link.hostname }),
      role: 'proxy',
      link: { from: link.from, to: link.to, fromHostname: from.hostname, toHostname: to.hostname },
      ports: services,
      upstreams: Object.fromEntries(Object.entries(services).map(([service, port]) => [service, { host: to.address, port }])),
      ...(keepClientAddress ? { keepClientAddress: true } : {}),
      toxics: link.toxics,
    };
    // Endpoints of `to` in `from`'s config (LMTP, forwardVia, the account service) lead to the proxy instead.
    const redirect = (value: unknown): void => {
      if (Array.isArray(value)) return value.forEach(redirect);
      if (typeof value !== 'object' || value === null) return;
      const endpoint = value as { host?: unknown; port?: unknown };
      if (endpoint.host === to.address && typeof endpoint.port === 'number' && ports.has(endpoint.port)) endpoint.host = link.address;
      else Object.values(value).forEach(redirect);
    };
    redirect(from);
    if (!keepClientAddress) {
      if (to.role === 'mailbox' && to.lmtpClients?.includes(from.address)) to.lmtpClients.push(link.address);
      if (to.role === 'mta' && to.relayClients?.includes(from.address)) to.relayClients.push(link.address);
    }
  }
  const order: NodeConfig['role'][] = ['dns', 'mailbox', 'mx', 'proxy', 'mta'];
  const all = { ...nodes, ...proxies };
  return Object.fromEntries(order.flatMap((role) => Object.entries(all).filter(([, c]) => c.role === role)));
}

/**
 * A domain's SPF record with the lab's links: without `keepClientAddress`, `a:<from's host name>` is followed by
 * `ip4:<proxy>` (the proxy is who connects for `from`); and a name the lab DNS answers with a proxy (`to` of a link by
 * name) keeps its host's own address, `a:<to's host name>` followed by `ip4:<to's address>`.
 */
function spfWithLinks(text: string, lab: LabDefinition, links: LinkPlan[], address: (host: string) => string, keepClientAddress: boolean): string {
  const after = (hostname: string, extra: string, spf: string) => spf.replace(new RegExp(`(^|\\s)([-+~?]?a:${hostname.replace(/\./g, '\\.')})(?=\\s|$)`, 'gi'), `$1$2 ${extra}`);
  let spf = text;
  for (const link of links) {
    if (!keepClientAddress) spf = after(lab.hosts[link.from]!.hostname, `ip4:${link.address}`, spf);
    if (link.byName) spf = after(lab.hosts[link.to]!.hostname, `ip4:${address(link.to)}`, spf);
  }
  return spf;
}

/** A host's SMTP fault rules at start (faults.smtp), for its node config. */
function smtpFaultsFor(lab: LabDefinition, host: string): { smtpFaults?: SmtpFaultRule[] } {
  const rules = lab.faults?.smtp?.[host];
  return rules?.length ? { smtpFaults: rules } : {};
}

/** The external hosts of a lab, as the plan lists them. */
export function externalsOf(lab: LabDefinition): Record<string, ExternalHostPlan> {
  return Object.fromEntries(
    Object.entries(lab.hosts).flatMap(([name, host]) =>
      host.role === 'external' ? [[name, { name, hostname: host.hostname, address: host.address, ports: { ...host.ports }, readyTimeoutMs: host.ready?.timeoutMs ?? DEFAULT_EXTERNAL_READY_TIMEOUT_MS }]] : [],
    ),
  );
}

/**
 * The MTAs' transport map: a port per MX host name from the external hosts' smtp ports (`relayPorts`), and the lab's
 * `transport` routes with host names and ports resolved (`transport`).
 */
function transportOf(lab: LabDefinition, smtpPort: number): { relayPorts?: Record<string, number>; transport?: Record<string, TransportRoute> } {
  const relayPorts: Record<string, number> = {};
  for (const host of Object.values(lab.hosts)) if (host.role === 'external' && host.ports.smtp) relayPorts[host.hostname.toLowerCase()] = host.ports.smtp;
  const routes = Object.entries(lab.transport ?? {}).map(([domain, route]): [string, TransportRoute] => {
    const host = lab.hosts[route.host]!;
    const port = route.port ?? (host.role === 'external' ? host.ports.smtp! : smtpPort);
    // By host name, looked up in the lab DNS as Postfix looks up `[host]` (its A record is planned in the zones).
    return [domain.toLowerCase(), { host: host.hostname, port }];
  });
  return { ...(Object.keys(relayPorts).length ? { relayPorts } : {}), ...(routes.length ? { transport: Object.fromEntries(routes) } : {}) };
}

/** The scanner config of an MX host; the ClamAV database path is inside the package (relative: as given). */
function scannerOf(kind: 'builtin' | 'clamav' | 'none', clamd: { host: string; port: number }, root: string | undefined): { scanner?: ScannerConfig } {
  if (kind === 'none') return {};
  if (kind === 'builtin') return { scanner: { kind: 'builtin' } };
  return { scanner: { kind: 'clamav', clamd, spawn: { database: root ? path.join(root, CLAMAV_TEST_DATABASE) : CLAMAV_TEST_DATABASE } } };
}

/** The account service an MTA checks SMTP AUTH with: its own mailbox host's, else the lab's first one. */
function authServiceOf(lab: LabDefinition, mailbox: string | undefined, endpoint: (mailbox: string) => { host: string; port: number }): { authService?: { host: string; port: number } } {
  const host = mailbox ?? Object.keys(lab.hosts).find((h) => lab.hosts[h]!.role === 'mailbox');
  const server = host ? lab.hosts[host] : undefined;
  // Dovecot and external servers offer no account service of maillab's: the MTA then checks passwords against its own
  // config.
  return host && server?.role === 'mailbox' && server.server !== 'dovecot' ? { authService: endpoint(host) } : {};
}

/** The contents of a Postfix node's own files, read when the lab is planned (so any runtime can hand them on). */
function readPostfixFiles(files: { mainCf?: string; masterCf?: string } | undefined): { mainCf?: string; masterCf?: string } {
  const read = (file: string | undefined) => (file === undefined ? undefined : readFileSync(path.resolve(file), 'utf8'));
  const mainCf = read(files?.mainCf);
  const masterCf = read(files?.masterCf);
  return { ...(mainCf !== undefined ? { mainCf } : {}), ...(masterCf !== undefined ? { masterCf } : {}) };
}

/** The addresses an MTA host relays for on port 25: the MX hosts that forward through it. */
function relayClientsOf(lab: LabDefinition, mta: string, address: (host: string) => string): { relayClients?: string[] } {
  const clients = Object.entries(lab.hosts).flatMap(([name, host]) => (host.role === 'mx' && host.forwardVia === mta && Object.keys(host.forwards ?? {}).length ? [address(name)] : []));
  return clients.length ? { relayClients: clients } : {};
}

/** The MTA-STS policy text of a domain (RFC 8461 §3.2), CRLF line ends, as the policy host serves it. */
export function mtaStsPolicyText(lab: LabDefinition, domain: string): string | undefined {
  const def = lab.domains[domain];
  const sts = def?.mtaSts;
  if (!sts) return undefined;
  const mx = sts.mx ?? (def.mx ?? []).map((m) => lab.hosts[m.host]?.hostname ?? m.host);
  const lines = ['version: STSv1', `mode: ${sts.mode}`, ...mx.map((pattern) => `mx: ${pattern}`), `max_age: ${sts.maxAge ?? DEFAULT_MTA_STS_MAX_AGE}`];
  return lines.map((line) => `${line}\r\n`).join('');
}

/** The `id` of a policy's TXT record: the one set, else the start of the policy text's SHA-256 (alphanumeric). */
export function mtaStsId(lab: LabDefinition, domain: string): string | undefined {
  const text = mtaStsPolicyText(lab, domain);
  if (text === undefined) return undefined;
  return lab.domains[domain]!.mtaSts!.id ?? createHash('sha256').update(text).digest('hex').slice(0, 20);
}

/** The policy sites the dns host serves, certificates still empty (issued at start with the lab CA). */
function mtaStsSites(lab: LabDefinition): MtaStsSite[] {
  return Object.keys(lab.domains).flatMap((domain) => {
    const policy = mtaStsPolicyText(lab, domain);
    return policy === undefined ? [] : [{ domain: domain.toLowerCase(), policy, cert: '', key: '' }];
  });
}

/**
 * One zone per lab domain (MX, A for hosts, extra records), one for host names outside them, and reverse PTRs.
 *
 * Every zone's SOA primary (MNAME) is the dns host's own host name (e.g. `ns.lab.test`), which has its A record in
 * the zones below, and the synthesized apex NS follows the primary (src/dns/zone.ts): so `NS receiver.test` names a
 * server that resolves, to the dns node's address (issue 14; zone.ts's default primary, `ns.<origin>`, has no
 * address). One name for every zone rather than an A record per synthesized name, as one server serves them all.
 * A domain's own apex NS records (its `records`) are served as given.
 */
function buildZones(lab: LabDefinition, address: (host: string) => string, dnsHost: string, links: LinkPlan[] = [], keepClientAddress = false): ZoneConfig[] {
  const zones = new Map<string, ZoneConfig>();
  const soa = { primary: lab.hosts[dnsHost]!.hostname };
  const zoneFor = (name: string): ZoneConfig => {
    const lower = name.toLowerCase();
    const domain = Object.keys(lab.domains)
      .map((d) => d.toLowerCase())
      .filter((d) => lower === d || lower.endsWith('.' + d))
      .sort((a, b) => b.length - a.length)[0];
    const origin = domain ?? lower.split('.').slice(1).join('.');
    let zone = zones.get(origin);
    if (!zone) zones.set(origin, (zone = { origin, soa: { ...soa }, records: [] }));
    return zone;
  };
  for (const [domain, def] of Object.entries(lab.domains)) {
    const zone = zoneFor(domain);
    if (def.nullMx) zone.records.push({ name: domain, type: 'MX', exchange: '.', priority: 0 });
    for (const mx of def.mx ?? []) {
      const exchange = lab.hosts[mx.host]?.hostname ?? mx.host;
      zone.records.push({ name: domain, type: 'MX', exchange, priority: mx.preference });
    }
    zone.records.push(...(def.records ?? []));
    if (def.spf !== undefined) zone.records.push({ name: domain, type: 'TXT', data: spfWithLinks(def.spf, lab, links, address, keepClientAddress) });
    if (def.dmarc !== undefined) zone.records.push({ name: `_dmarc.${domain}`, type: 'TXT', data: def.dmarc });
    const id = mtaStsId(lab, domain);
    if (id !== undefined) {
      // The policy host is the lab's dns host: `mta-sts.<domain>` points at it.
      zone.records.push({ name: `_mta-sts.${domain}`, type: 'TXT', data: `v=STSv1; id=${id}` });
      zone.records.push({ name: `mta-sts.${domain}`, type: 'A', address: address(dnsHost) });
    }
  }
  const reverse = new Map<string, ZoneConfig>();
  // A host reached through a link by name answers with its proxy's address (its PTR stays at its own address).
  const proxyOf = (name: string) => links.find((l) => l.byName && l.to === name)?.address;
  const hosts: [string, { hostname: string }][] = [...Object.entries(lab.hosts), ...links.map((l): [string, { hostname: string }] => [l.name, { hostname: l.hostname }])];
  for (const [name, host] of hosts) {
    const ip = address(name);
    zoneFor(host.hostname).records.push({ name: host.hostname, type: 'A', address: proxyOf(name) ?? ip });
    const octets = ip.split('.');
    const origin = `${octets[2]}.${octets[1]}.${octets[0]}.in-addr.arpa`;
    if (!reverse.has(origin)) reverse.set(origin, { origin, soa: { ...soa }, records: [] });
    reverse.get(origin)!.records.push({ name: `${octets[3]}.${origin}`, type: 'PTR', domain: host.hostname });
  }
  return [...zones.values(), ...reverse.values()];
}
