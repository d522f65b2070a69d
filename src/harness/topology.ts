// A lab is data: domains, hosts with roles, users, and the retry schedule. `defineLab` checks it and fills in
// defaults; `planLab` turns it into one node configuration per host for a given address block and ports.
import path from 'node:path';
import { DEFAULT_AUTH_THROTTLE, DEFAULT_SMTP_LIMITS, TLS_POLICY_MODES, type AuthThrottleConfig, type TlsPolicyConfig, type TlsPolicyMode, type DnsRecord, type NodeConfig, type RetryConfig, type Role, type SmtpLimits, type UserConfig, type ZoneConfig } from '../shared/config.js';
import { CERTIFICATE_FAULTS, type CertificateFault } from './tls/ca.js';

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
}

export type HostDefinition =
  | { role: 'dns'; hostname: string }
  | { role: 'mta'; hostname: string; localDomains?: string[]; mailbox?: string }
  | { role: 'mx'; hostname: string; domains: string[]; mailbox: string }
  | { role: 'mailbox'; hostname: string };

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
  /** Limits of every SMTP server of the lab; unset fields take DEFAULT_SMTP_LIMITS. */
  smtpLimits?: Partial<SmtpLimits>;
  /** Login throttling on SMTP AUTH, IMAP and POP3; unset fields take DEFAULT_AUTH_THROTTLE, `false` turns it off. */
  authThrottle?: Partial<AuthThrottleConfig> | false;
  /** TLS of the lab's nodes: every host gets a certificate from the lab's own CA (harness/tls/ca.ts). */
  tls?: LabTlsDefinition;
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
  outbound?: { default?: TlsPolicyMode; domains?: Record<string, TlsPolicyMode> };
  /** MX hosts (keys in `hosts`) that do not offer STARTTLS, standing in for an attacker stripping it. */
  noStartTls?: string[];
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
    if ((host.role === 'mx' || host.role === 'mta') && host.mailbox && lab.hosts[host.mailbox]?.role !== 'mailbox')
      problems.push(`${name}: mailbox "${host.mailbox}" is not a mailbox host`);
  }
  for (const [domain, def] of Object.entries(lab.domains)) {
    if (!domain.endsWith('.test')) problems.push(`domain ${domain} must use the reserved .test TLD`);
    for (const mx of def.mx ?? []) if (!lab.hosts[mx.host] && !mx.host.includes('.')) problems.push(`${domain}: MX host "${mx.host}" is not a lab host`);
  }
  for (const [host, fault] of Object.entries(lab.tls?.certificates ?? {})) {
    if (!lab.hosts[host]) problems.push(`tls.certificates: "${host}" is not a lab host`);
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
  for (const host of lab.tls?.noStartTls ?? []) {
    if (lab.hosts[host]?.role !== 'mx') problems.push(`tls.noStartTls: "${host}" is not an mx host of the lab`);
  }
  for (const user of lab.users) {
    const domain = user.address.split('@')[1];
    if (!domain || !lab.domains[domain]) problems.push(`user ${user.address}: domain is not a lab domain`);
  }
  if (problems.length) throw new Error(`invalid lab "${lab.name}":\n  - ${problems.join('\n  - ')}`);
}

export const STANDARD_PORTS = { dns: 53, smtp: 25, submission: 587, submissions: 465, lmtp: 24, pop3: 110, pop3s: 995, imap: 143, imaps: 993 } as const;
export const CONTROL_PORT = 7070;

export interface LabPlan {
  /** Node configurations, by host name, in start order (dns first, mailbox before mx/mta). */
  nodes: Record<string, NodeConfig>;
  zones: ZoneConfig[];
}

export interface PlanOptions {
  /** Address of each host. */
  addresses: Record<string, string>;
  /** Added to every standard port (0 when the lab may bind privileged ports). */
  portOffset: number;
  /** Parent directory of the hosts' data directories. */
  dataRoot: string;
}

const START_ORDER: Role[] = ['dns', 'mailbox', 'mx', 'mta'];

export function planLab(lab: LabDefinition, options: PlanOptions): LabPlan {
  validateLab(lab);
  const port = (service: keyof typeof STANDARD_PORTS) => STANDARD_PORTS[service] + options.portOffset;
  const address = (host: string) => {
    const a = options.addresses[host];
    if (!a) throw new Error(`no address for host ${host}`);
    return a;
  };
  const dnsHost = Object.keys(lab.hosts).find((h) => lab.hosts[h]!.role === 'dns')!;
  const zones = buildZones(lab, address);
  const base = (name: string, host: HostDefinition) => ({
    name,
    hostname: host.hostname,
    address: address(name),
    dataDir: path.join(options.dataRoot, name),
    controlPort: CONTROL_PORT,
    resolver: { host: address(dnsHost), port: port('dns') },
    greetingDelayMs: lab.greetingDelayMs ?? 0,
    fsync: true,
  });
  const lmtpOf = (mailbox: string | undefined) => (mailbox ? { host: address(mailbox), port: port('lmtp') } : undefined);
  const usersIn = (domains: string[]) => lab.users.filter((u) => domains.includes(u.address.split('@')[1]!.toLowerCase()));

  const { limits, authThrottle } = securityOf(lab);
  const labAddresses = Object.keys(lab.hosts).map(address);
  const deliverers = Object.entries(lab.hosts)
    .filter(([, h]) => h.role === 'mx' || h.role === 'mta')
    .map(([name]) => address(name));

  const nodes: Record<string, NodeConfig> = {};
  const ordered = Object.entries(lab.hosts).sort(([, a], [, b]) => START_ORDER.indexOf(a.role) - START_ORDER.indexOf(b.role));
  for (const [name, host] of ordered) {
    switch (host.role) {
      case 'dns':
        nodes[name] = { ...base(name, host), role: 'dns', port: port('dns'), zones };
        break;
      case 'mailbox':
        nodes[name] = { ...base(name, host), role: 'mailbox', ports: { lmtp: port('lmtp'), pop3: port('pop3'), imap: port('imap'), pop3s: port('pop3s'), imaps: port('imaps') }, users: lab.users, authThrottle, lmtpClients: deliverers };
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
          connectTimeoutMs: lab.connectTimeoutMs ?? 2000,
          limits,
          authThrottle,
          labAddresses,
          tlsPolicy: tlsPolicyOf(lab),
        };
        break;
      }
    }
  }
  return { nodes, zones };
}

/** One zone per lab domain (MX, A for hosts, extra records), one for host names outside them, and reverse PTRs. */
function buildZones(lab: LabDefinition, address: (host: string) => string): ZoneConfig[] {
  const zones = new Map<string, ZoneConfig>();
  const zoneFor = (name: string): ZoneConfig => {
    const lower = name.toLowerCase();
    const domain = Object.keys(lab.domains)
      .map((d) => d.toLowerCase())
      .filter((d) => lower === d || lower.endsWith('.' + d))
      .sort((a, b) => b.length - a.length)[0];
    const origin = domain ?? lower.split('.').slice(1).join('.');
    let zone = zones.get(origin);
    if (!zone) zones.set(origin, (zone = { origin, records: [] }));
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
  }
  const reverse = new Map<string, ZoneConfig>();
  for (const [name, host] of Object.entries(lab.hosts)) {
    const ip = address(name);
    zoneFor(host.hostname).records.push({ name: host.hostname, type: 'A', address: ip });
    const octets = ip.split('.');
    const origin = `${octets[2]}.${octets[1]}.${octets[0]}.in-addr.arpa`;
    if (!reverse.has(origin)) reverse.set(origin, { origin, records: [] });
    reverse.get(origin)!.records.push({ name: `${octets[3]}.${origin}`, type: 'PTR', domain: host.hostname });
  }
  return [...zones.values(), ...reverse.values()];
}
