// Postfix as the lab's `mx` role (issue 14): its main.cf and master.cf, generated from an MxNodeConfig and, when a
// user wants to regression-test their own Postfix configuration, from their main.cf and master.cf. What the lab must
// control (where the instance lives and logs, which address it listens on, which domains and users it serves, where
// it delivers, and that it never reaches outside the lab) is set here, each setting with the reason; every other
// setting of the user's files is kept as written. README.md in this folder lists the same settings for humans.
import { execFile } from 'node:child_process';
import { promises as fs } from 'node:fs';
import path from 'node:path';
import { promisify } from 'node:util';
import type { MxNodeConfig, RetryConfig } from '../../shared/config.js';

const run = promisify(execFile);

export const POSTCONF = '/usr/sbin/postconf';

/** The MX's default size limit (src/mx/index.ts): the mailbox server's own. */
export const DEFAULT_MAX_MESSAGE_SIZE = 50 * 1024 * 1024;

/** The user's own Postfix configuration, as file contents. Absent: Postfix's built-in defaults plus the lab's settings. */
export interface PostfixUserConfig {
  mainCf?: string;
  masterCf?: string;
}

/** Where one instance keeps everything: all of it under `<dataDir>/postfix`, so the node's data directory is the instance. */
export interface PostfixLayout {
  /** The config_directory (`postfix -c <dir>`). */
  dir: string;
  queueDirectory: string;
  dataDirectory: string;
  maillog: string;
  /** The texthash table of the served recipients (virtual_mailbox_maps). */
  recipients: string;
  /** The node's TLS certificate chain and key, written for smtpd (read as root, before it drops privileges). */
  certFile: string;
  keyFile: string;
  /** `postconf -n` of the generated configuration: what the instance really runs with. */
  effective: string;
}

export function postfixLayout(dataDir: string): PostfixLayout {
  const dir = path.resolve(dataDir, 'postfix');
  return {
    dir,
    queueDirectory: path.join(dir, 'spool'),
    dataDirectory: path.join(dir, 'data'),
    maillog: path.join(dir, 'maillog'),
    recipients: path.join(dir, 'recipients'),
    certFile: path.join(dir, 'tls-cert.pem'),
    keyFile: path.join(dir, 'tls-key.pem'),
    effective: path.join(dir, 'effective.cf'),
  };
}

/** One main.cf setting the lab writes, and why. `default`: only when the user's main.cf does not set it. */
export interface LabSetting {
  name: string;
  value: string;
  why: string;
  default?: boolean;
}

const setting = (name: string, value: string, why: string): LabSetting => ({ name, value, why });

/**
 * What every Postfix node of the lab needs, whichever role it plays: where the instance lives and logs, who it is,
 * where it listens and leaves from, and the lab's SMTP server limits and protections. `size` is the role's default
 * message size; a user's own `message_size_limit` wins over it.
 */
export function instanceSettings(config: Pick<MxNodeConfig, 'hostname' | 'address' | 'limits' | 'tls'>, layout: PostfixLayout, size: { value: number; why: string }, tls: boolean): LabSetting[] {
  const s = setting;
  return [
    { ...s('compatibility_level', '3.6', 'the defaults of a current Postfix (no backwards-compatibility warnings in the maillog)'), default: true },
    s('queue_directory', layout.queueDirectory, 'one queue per node, inside its data directory, so a restarted node finds its queue'),
    s('data_directory', layout.dataDirectory, 'per node, like the queue'),
    s('multi_instance_directories', '', '`postfix start-fg` refuses multi-instance mode'),
    s('maillog_file', layout.maillog, 'logging without syslog (postlogd appends here); the adapter reads its events from this file'),
    s('maillog_file_prefixes', layout.dir, 'postlogd only writes below these prefixes'),
    s('myhostname', config.hostname, "the node's host name (greeting, Received); also keeps Postfix from asking the system for it"),
    s('inet_interfaces', 'loopback-only', "127.x addresses other than 127.0.0.1 are not configured on an interface, so Postfix cannot take them here (\"no local interface found\"); the SMTP listener names the node's address in master.cf instead"),
    s('inet_protocols', 'ipv4', 'the lab is IPv4 loopback only'),
    s('smtp_bind_address', config.address, "any outbound connection leaves from the node's own address"),
    s('lmtp_bind_address', config.address, "the mailbox server sees this node's address (it may allow LMTP clients by address)"),
    s('mydestination', '', 'nothing is delivered locally: every served domain is a virtual mailbox domain handed to the mailbox server'),
    s('alias_maps', '', 'no local delivery; the default names /etc/aliases and NIS'),
    s('lmtp_dns_support_level', 'disabled', 'the LMTP client connects to the numeric address it is given'),
    s('lmtp_host_lookup', 'native', 'the numeric next hop through getaddrinfo, no query'),
    s('smtpd_peername_lookup', 'no', 'no reverse DNS lookup of the client: the client is logged as unknown[address]'),
    { ...s('message_size_limit', String(size.value), `${size.why}; only when the user's main.cf does not set it (their limit is what they deploy)`), default: true },
    s('mailbox_size_limit', '0', 'Postfix refuses a message_size_limit above mailbox_size_limit; nothing is delivered to local mailboxes here'),
    s('smtpd_recipient_limit', String(config.limits?.maxRecipients ?? 100), 'limits.maxRecipients (DEFAULT_SMTP_LIMITS)'),
    s('smtpd_client_connection_count_limit', String(config.limits?.maxConnectionsPerClient ?? 50), 'limits.maxConnectionsPerClient (DEFAULT_SMTP_LIMITS); needs anvil in master.cf'),
    s('smtpd_client_event_limit_exceptions', '', 'by default $mynetworks, which on loopback would exempt lab clients from the limits'),
    s('smtpd_forbid_bare_newline', 'yes', 'SMTP smuggling: `yes` (= `normalize` in 3.7.11) ends DATA only at <CR><LF>.<CR><LF>, so a smuggled message stays content of the first; the default (no) delivers it'),
    s('smtpd_forbid_bare_newline_exclusions', '', 'by default $mynetworks, which on loopback would exempt lab clients from the protection'),
    s('smtpd_tls_security_level', tls ? 'may' : 'none', tls ? "STARTTLS offered with the node's lab certificate" : 'the node has no tls (or noStartTls): no STARTTLS'),
    ...(tls
      ? [
          s('smtpd_tls_cert_file', layout.certFile, "the node's certificate from the lab CA"),
          s('smtpd_tls_key_file', layout.keyFile, 'its key'),
          s('smtpd_tls_protocols', '>=TLSv1.2', "TLS 1.2 at least, as maillab's servers (RFC 8996)"),
        ]
      : []),
    s('smtpd_tls_loglevel', '1', 'the maillog names the TLS version and cipher of each session: the `tls` of the received event'),
    s('smtpd_tls_received_header', 'yes', "the Received header names TLS, as maillab's servers do (RFC 8314 ESMTPS)"),
    s('biff', 'no', 'no comsat notifications'),
  ];
}


/**
 * The retry schedule in Postfix's terms (whole seconds, at least 1). Postfix has no list of delays: a deferred message
 * waits its age, bounded by minimal_backoff_time and maximal_backoff_time (qmgr), and the queue is scanned every
 * queue_run_delay. So schedule[0] becomes the minimal back-off (and the scan interval, so that a retry is not late by
 * more than that), the last delay the maximal one; the delays in between are not kept (Postfix roughly doubles the wait
 * as the message ages, which is what a schedule like [500, 1000, 2000] says).
 */
export function postfixRetry(retry: RetryConfig): { minimalBackoff: number; maximalBackoff: number; queueRunDelay: number; lifetime: number } {
  const seconds = (ms: number) => Math.max(1, Math.ceil(ms / 1000));
  const first = retry.schedule[0] ?? 300_000;
  const last = retry.schedule.at(-1) ?? first;
  const minimalBackoff = seconds(first);
  return { minimalBackoff, maximalBackoff: Math.max(minimalBackoff, seconds(last)), queueRunDelay: minimalBackoff, lifetime: seconds(retry.maxLifetimeMs) };
}

/**
 * The main.cf settings of the lab's retry schedule (postfixRetry), for both roles: the MTA's replace the user's (the
 * lab decides its schedule); the MX's are defaults (`asDefault`: the user's own retry settings are what they deploy).
 */
export function retrySettings(retry: RetryConfig, asDefault: boolean): LabSetting[] {
  const r = postfixRetry(retry);
  const only = asDefault ? "; only when the user's main.cf does not set it" : '';
  return [
    setting('minimal_backoff_time', `${r.minimalBackoff}s`, `retry.schedule[0], in whole seconds (at least 1)${only}`),
    setting('maximal_backoff_time', `${r.maximalBackoff}s`, `the last delay of retry.schedule (at least minimal_backoff_time)${only}`),
    setting('queue_run_delay', `${r.queueRunDelay}s`, `the deferred queue is scanned as often as the shortest back-off, so a retry is late by at most that${only}`),
    setting('maximal_queue_lifetime', `${r.lifetime}s`, `retry.maxLifetimeMs, in whole seconds: a message deferred past it is returned to the sender${only}`),
    setting('bounce_queue_lifetime', `${r.lifetime}s`, `the same lifetime for bounces (DSNs)${only}`),
  ].map((s) => (asDefault ? { ...s, default: true } : s));
}

/** The main.cf settings of a lab MX; every one without `default` replaces the user's. */
export function labMainSettings(config: MxNodeConfig, layout: PostfixLayout): LabSetting[] {
  const size = { value: config.limits?.maxMessageSize ?? DEFAULT_MAX_MESSAGE_SIZE, why: "limits.maxMessageSize (default 50 MiB like maillab's MX): larger messages get 552 5.3.4" };
  const s = setting;
  return [
    ...instanceSettings(config, layout, size, Boolean(config.tls && !config.noStartTls)),
    s('relay_domains', '', 'the MX relays for no one'),
    ...virtualDelivery(config.domains, layout, `lmtp:inet:${config.lmtp.host}:${config.lmtp.port}`, "the node's domains"),
    s('local_transport', 'error:5.1.1 local delivery is disabled on the lab MX', 'no local delivery (postmaster notices, double bounces end here, in the maillog)'),
    s('default_transport', 'error:5.4.4 the lab MX sends no mail outside the lab', 'bounces and anything not for a served domain never leave over SMTP (they would need DNS and the outside world)'),
    s('relay_transport', 'error:5.4.4 the lab MX sends no mail outside the lab', 'as default_transport'),
    s('smtpd_relay_restrictions', 'reject_unauth_destination', 'no relaying, whatever the user permits (relay_domains_reject_code, 554 by default)'),
    s('smtp_dns_support_level', 'disabled', 'the SMTP client (used only for bounces, which the error transport ends) never asks DNS'),
    s('smtp_host_lookup', 'native', 'with DNS disabled: the numeric address through getaddrinfo, no query'),
    // A hand-off the mailbox server did not take (down, 4xx) waits in the deferred queue: retried on the lab's schedule.
    ...(config.retry ? retrySettings(config.retry, true) : []),
  ];
}

/** The domains a node delivers to the mailbox server (virtual mailbox domains), the users there, and the transport. */
export function virtualDelivery(domains: string[], layout: PostfixLayout, transport: string, which: string): LabSetting[] {
  return [
    setting('virtual_mailbox_domains', domains.map((d) => d.toLowerCase()).join(', '), which),
    setting('virtual_mailbox_maps', `texthash:${layout.recipients}`, 'the served recipients: anyone else in those domains is refused at RCPT TO with 550 5.1.1 (texthash needs no postmap)'),
    setting('virtual_transport', transport, 'every accepted message for them goes to the mailbox server over LMTP, by IP address'),
  ];
}

interface MainEntry {
  name: string;
  value: string;
}

/**
 * The logical lines of main.cf or master.cf, as Postfix reads both: comments and blank lines dropped, a line that
 * starts with white space continuing the one before (`more`).
 */
function logicalLines(text: string, file: string): Array<{ line: string; more: string[] }> {
  const out: Array<{ line: string; more: string[] }> = [];
  for (const raw of text.split(/\r?\n/)) {
    if (/^\s*(#|$)/.test(raw)) continue;
    if (!/^\s/.test(raw)) out.push({ line: raw.trim(), more: [] });
    else if (out.length) out[out.length - 1]!.more.push(raw.trim());
    else throw new Error(`${file}: a continuation line with nothing to continue: ${JSON.stringify(raw)}`);
  }
  return out;
}

/** main.cf as `name = value` entries in order. */
export function parseMainCf(text: string): MainEntry[] {
  return logicalLines(text, 'main.cf').map(({ line, more }) => {
    const m = /^([A-Za-z0-9_.-]+)\s*=\s*(.*)$/.exec(line);
    if (!m) throw new Error(`main.cf: not a "name = value" line: ${JSON.stringify(line)}`);
    return { name: m[1]!, value: [m[2]!, ...more].join(' ').trim() };
  });
}

/** main.cf of a lab MX: the user's settings, then the lab's. */
export function renderMainCf(config: MxNodeConfig, layout: PostfixLayout, userMainCf = ''): string {
  return renderMain(labMainSettings(config, layout), userMainCf, `the lab MX ${config.name} (${config.hostname})`);
}

/**
 * main.cf from the lab's settings and the user's (the last of a repeated name wins, as in Postfix): the user's that the
 * lab does not replace, then the lab's, each with its reason and, where it replaced a user setting, a comment saying so.
 */
export function renderMain(settings: LabSetting[], userMainCf: string, what: string): string {
  const user = new Map(parseMainCf(userMainCf).map((e) => [e.name, e.value]));
  const out = [`# Generated by maillab for ${what}; see src/real/postfix/README.md.`];
  const overridden = new Set(settings.filter((s) => !s.default).map((s) => s.name));
  const kept = [...user].filter(([name]) => !overridden.has(name));
  if (kept.length) out.push('', "# The user's settings, kept:", ...kept.map(([n, v]) => `${n} = ${v}`));
  out.push('', '# Set by the lab:');
  for (const s of settings) {
    if (s.default && user.has(s.name)) continue;
    if (!s.default && user.has(s.name) && user.get(s.name) !== s.value) out.push(`# (replaces the user's ${s.name} = ${user.get(s.name)})`);
    out.push(`# ${s.why}`, `${s.name} = ${s.value}`);
  }
  return out.join('\n') + '\n';
}

/**
 * The services a Postfix of the lab needs besides its SMTP listener (no chroot: the queue directory has no copy of
 * /etc). The bench's peer Postfix instances use the same list. tlsmgr is started on demand only, so it costs nothing
 * where TLS is off.
 */
export const LAB_SERVICES = [
  'pickup    unix  n       -       n       60      1       pickup',
  'cleanup   unix  n       -       n       -       0       cleanup',
  'qmgr      unix  n       -       n       300     1       qmgr',
  'tlsmgr    unix  -       -       n       1000?   1       tlsmgr',
  'rewrite   unix  -       -       n       -       -       trivial-rewrite',
  'bounce    unix  -       -       n       -       0       bounce',
  'defer     unix  -       -       n       -       0       bounce',
  'trace     unix  -       -       n       -       0       bounce',
  'verify    unix  -       -       n       -       1       verify',
  'flush     unix  n       -       n       1000?   0       flush',
  'proxymap  unix  -       -       n       -       -       proxymap',
  'proxywrite unix -       -       n       -       1       proxymap',
  'smtp      unix  -       -       n       -       -       smtp',
  'relay     unix  -       -       n       -       -       smtp',
  'showq     unix  n       -       n       -       -       showq',
  'error     unix  -       -       n       -       -       error',
  'retry     unix  -       -       n       -       -       error',
  'discard   unix  -       -       n       -       -       discard',
  'lmtp      unix  -       -       n       -       -       lmtp',
  'anvil     unix  -       -       n       -       1       anvil',
  'scache    unix  -       -       n       -       1       scache',
  'postlog   unix-dgram n  -       n       -       1       postlogd',
];

/** One master.cf entry: its fields, and the continuation lines (`-o` options) after it. */
interface MasterEntry {
  fields: string[];
  more: string[];
}

function parseMasterCf(text: string): MasterEntry[] {
  return logicalLines(text, 'master.cf').map(({ line, more }) => {
    const fields = line.split(/\s+/);
    if (fields.length < 8) throw new Error(`master.cf: a service line needs 8 fields: ${JSON.stringify(line)}`);
    return { fields, more };
  });
}

/**
 * One smtpd listener of a lab node: `<address>:<port>`, taking over the options of the user's `inet` service that
 * `userService` matches (by name or port); `options` (`-o name=value`) are the lab's and come after the user's, so they
 * win.
 */
export interface Listener {
  address: string;
  port: number;
  userService: RegExp;
  options?: string[];
}

/** master.cf of a lab MX: its SMTP listener. */
export function renderMasterCf(config: MxNodeConfig, userMasterCf?: string): string {
  return renderMaster([{ address: config.address, port: config.ports.smtp, userService: /(^|:)(smtp|25)$/ }], userMasterCf, 'the lab MX');
}

/**
 * master.cf: the listeners on the node's own address and port (the user's options of the same service kept), the
 * user's other non-inet services, and the lab's services the user's file lacks (postlog above all). Every chroot column
 * is `n`; the user's other `inet` services are dropped, since they would listen on 127.0.0.1, outside the node's address.
 */
export function renderMaster(listeners: Listener[], userMasterCf: string | undefined, what: string): string {
  const user = userMasterCf === undefined ? [] : parseMasterCf(userMasterCf);
  const out = [`# Generated by maillab for ${what}; see src/real/postfix/README.md.`, '# service type  private unpriv  chroot  wakeup  maxproc command + args'];
  const taken = new Set<MasterEntry>();
  for (const l of listeners) {
    const mine = user.find((e) => !taken.has(e) && e.fields[1] === 'inet' && e.fields[7] === 'smtpd' && l.userService.test(e.fields[0]!));
    if (mine) taken.add(mine);
    out.push(`${l.address}:${l.port} inet n - n - - smtpd${mine ? ' ' + mine.fields.slice(8).join(' ') : ''}`.trimEnd(), ...(mine?.more.map((m) => `  ${m}`) ?? []), ...(l.options ?? []).map((o) => `  ${o}`));
  }
  const names = new Set<string>();
  for (const e of user) {
    if (e.fields[1] === 'inet') {
      if (!taken.has(e)) out.push(`# dropped the user's inet service ${e.fields[0]} (it would listen outside the node's address)`);
      continue;
    }
    const fields = [...e.fields];
    fields[4] = 'n';
    names.add(`${fields[0]}/${fields[1]}`);
    out.push(fields.join(' '), ...e.more.map((m) => `  ${m}`));
  }
  for (const line of LAB_SERVICES) {
    const [name, type] = line.split(/\s+/);
    if (!names.has(`${name}/${type}`)) out.push(line);
  }
  return out.join('\n') + '\n';
}

/** The `postfix` account (Debian's mail_owner), from /etc/passwd: Node has no getpwnam. */
export async function mailOwner(): Promise<{ uid: number; gid: number }> {
  const line = (await fs.readFile('/etc/passwd', 'utf8')).split('\n').find((l) => l.startsWith('postfix:'));
  const [, , uid, gid] = line?.split(':') ?? [];
  if (uid === undefined || gid === undefined) throw new Error('there is no postfix user in /etc/passwd: is Postfix installed (apt-get install postfix)?');
  return { uid: Number(uid), gid: Number(gid) };
}

/** A file of the instance besides main.cf and master.cf: its path, content and mode (owner root unless `owner`). */
export interface InstanceFile {
  path: string;
  content: string;
  mode: number;
  /** Owned by the mail owner's group (for a secret smtpd reads after dropping privileges). */
  mailGroup?: boolean;
}

/** Writes a lab MX's instance (README.md); returns its layout. */
export async function writePostfixConfig(config: MxNodeConfig, user: PostfixUserConfig = {}): Promise<PostfixLayout> {
  const layout = postfixLayout(config.dataDir);
  await writeInstance(layout, config.tls, {
    mainCf: renderMainCf(config, layout, user.mainCf ?? ''),
    masterCf: renderMasterCf(config, user.masterCf),
    files: [{ path: layout.recipients, content: config.recipients.map((r) => `${r.toLowerCase()} ok\n`).join(''), mode: 0o644 }],
  });
  return layout;
}

/**
 * Writes an instance: its directories, main.cf, master.cf, its other files, the TLS files, and `effective.cf`
 * (`postconf -n`), after `postconf` has read the result (so a broken user file fails here, with postconf's words,
 * rather than as a master that never greets).
 */
export async function writeInstance(layout: PostfixLayout, tls: { cert: string; key: string } | undefined, content: { mainCf: string; masterCf: string; files: InstanceFile[] }): Promise<void> {
  await fs.mkdir(layout.dir, { recursive: true, mode: 0o755 });
  // The master opens data_directory's lock file as mail_owner (postfix), and the daemons open files by absolute path
  // after dropping privileges: every directory above the instance must be searchable by others. The lab's data
  // directory is 0700; it becomes 0711 (searchable, still not listable; the node configs in it stay 0600).
  for (let d = path.dirname(layout.dir); d !== path.dirname(d); d = path.dirname(d)) {
    const mode = (await fs.stat(d)).mode & 0o7777;
    if ((mode & 0o001) === 0) await fs.chmod(d, mode | 0o001);
  }
  await fs.mkdir(layout.queueDirectory, { recursive: true, mode: 0o755 });
  await fs.mkdir(layout.dataDirectory, { recursive: true, mode: 0o700 });
  // Postfix's own state (master.lock, TLS caches) is written as mail_owner.
  const owner = await mailOwner();
  await fs.chown(layout.dataDirectory, owner.uid, owner.gid);
  await fs.writeFile(path.join(layout.dir, 'main.cf'), content.mainCf, { mode: 0o644 });
  await fs.writeFile(path.join(layout.dir, 'master.cf'), content.masterCf, { mode: 0o644 });
  for (const file of content.files) {
    await fs.mkdir(path.dirname(file.path), { recursive: true, mode: 0o755 });
    await fs.rm(file.path, { force: true });
    await fs.writeFile(file.path, file.content, { mode: file.mode });
    if (file.mailGroup) await fs.chown(file.path, 0, owner.gid);
  }
  if (tls) {
    await fs.writeFile(layout.certFile, tls.cert, { mode: 0o644 });
    await fs.rm(layout.keyFile, { force: true });
    await fs.writeFile(layout.keyFile, tls.key, { mode: 0o600 });
  }
  let effective: string;
  try {
    effective = (await run(POSTCONF, ['-n', '-c', layout.dir])).stdout;
  } catch (err) {
    throw new Error(`postconf could not read the generated configuration in ${layout.dir}: ${(err as { stderr?: string }).stderr?.trim() || (err as Error).message}`, { cause: err });
  }
  await fs.writeFile(layout.effective, effective, { mode: 0o644 });
}
