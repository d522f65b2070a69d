// The bench's peer: the servers people would otherwise run, Postfix + Dovecot, started in the same run on the same
// machine as maillab's own servers, so both are measured under the same conditions.
//
//   load generator ──587 (AUTH PLAIN/LOGIN, no TLS)──▶ sender Postfix 127.77.0.2 (25 too, for 127/8 without AUTH)
//        sender Postfix ──smtp:[127.77.0.3]:25 (transport_maps)──▶ receiver Postfix 127.77.0.3:25
//        receiver Postfix ──lmtp:[127.77.0.4]:24──▶ Dovecot LMTP ──▶ Maildir  ◀── Dovecot IMAP 127.77.0.4:143
//
// With `startPeer({ tls: true })` (the bench's TLS figures), the same with TLS on every SMTP hop and on IMAP:
// STARTTLS required before AUTH on 587, offered on both port 25s and used by the sender's smtp client, Dovecot with
// `ssl = required`; certificates from a CA of its own, in the temp dir. LMTP stays plaintext. See postfixTls().
//
// Everything lives in one mkdtemp directory: both Postfix instances have their own config_directory, queue_directory
// and data_directory there (started with `postfix -c <dir> start`, chroot off, logging through postlogd into a file,
// no syslog), Dovecot has its own config file, base_dir and state_dir (started with `dovecot -c <file>`). Only
// loopback addresses in 127.77.0.0/24 are bound; no DNS is ever asked (smtpd_peername_lookup = no,
// *_dns_support_level = disabled, numeric next hops, explicit host names), and anything not for receiver.test is
// refused by the error transport instead of being delivered.
//
// Defaults that matter for a fair comparison are kept: Postfix fsyncs its queue files, Dovecot keeps
// mail_fsync = optimized, Dovecot's login processes run in their default high-security mode.
//
// Requires root (Postfix and Dovecot drop privileges themselves) and, when the packages are missing, apt: they are
// installed with the debconf answer "No configuration" for Postfix and with service start-up disabled, and any
// daemon the packages started all the same is killed, so no system instance is left on 0.0.0.0:25/143.
import { execFile, spawn } from 'node:child_process';
import { existsSync, readdirSync, readFileSync, readlinkSync, rmSync } from 'node:fs';
import { chmod, chown, mkdir, mkdtemp, readdir, readFile, rm, stat, utimes, writeFile } from 'node:fs/promises';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { createLabCa, issueHostCertificate } from '../src/harness/tls/ca.js';
import { LAB_SERVICES } from '../src/real/postfix/config.js';

export interface PeerLab {
  /** e.g. 'postfix 3.7.11 + dovecot 2.3.19.1', from `postconf -d mail_version` and `dovecot --version`. */
  name: string;
  /** Where the load generator submits: the sender Postfix's submission service (587, SASL through Dovecot's auth). */
  submission: { host: string; port: number; auth?: { user: string; pass: string } };
  /** The receiver Postfix's smtpd, for the MX→LMTP→Maildir leg alone. */
  mx: { host: string; port: number };
  /** Dovecot IMAP, logging in as bob. */
  imap: { host: string; port: number; user: string; pass: string };
  /**
   * The Maildir (root) of bob@receiver.test, there from the start: Dovecot's LMTP delivers each message as one file
   * in `new/`; an IMAP client that SELECTs INBOX (not EXAMINE) moves them to `cur/`, so count `new/` plus `cur/`.
   */
  bobMaildir: string;
  /** PIDs of every process of the peer (both Postfix masters and their children, Dovecot and its children). */
  pids(): Promise<number[]>;
  /**
   * Per service, ms from the common start (the three start commands are spawned together) until it accepts a
   * connection and greets: 'dovecot-lmtp' (220 on 24), 'dovecot-imap' (* OK on 143), 'postfix-receiver' (220 on 25),
   * 'postfix-sender' (220 on both 25 and 587). The largest is the time until the whole peer is up.
   */
  bootMs: Record<string, number>;
  /** Set when started with `tls: true`. */
  tls?: PeerTls;
  /** The sender Postfix's queue, for the bench's queue-depth series. */
  senderQueue: {
    /** `postqueue -p` of the sender instance: its output. */
    list(): Promise<string>;
    /** `postfix stop` on the receiver instance: the sender then defers what it relays (connection refused). */
    stopReceiver(): Promise<void>;
    /** The sender instance's processes (its master's family). */
    pids(): number[];
    /** SIGKILL to every process of the sender instance, as a crash would, then `postfix start` on it again. */
    killAndStart(): Promise<void>;
  };
  /** Stops everything (SIGTERM to the masters, SIGKILL to what is left after 2.5 s) and removes the temp dir; idempotent. */
  stop(): Promise<void>;
}

export interface PeerOptions {
  log?: (m: string) => void;
  /**
   * TLS on every SMTP hop and on IMAP (LMTP stays plaintext, as in the lab): certificates from a CA of the peer's own
   * (createLabCa/issueHostCertificate, EC P-256, like maillab's), files in the temp dir; both smtpd's offer STARTTLS
   * (`smtpd_tls_security_level = may` on 25, `encrypt` + `smtpd_tls_auth_only = yes` on the sender's 587), the
   * sender's smtp client uses it (`smtp_tls_security_level = may`), both write it in their Received headers
   * (`smtpd_tls_received_header = yes`), and Dovecot has `ssl = required`. Without it: no TLS anywhere.
   */
  tls?: boolean;
}

/** What a client of the TLS peer needs: the peer CA (PEM) and, per service, the name its certificate carries. */
export interface PeerTls {
  ca: string;
  submission: { ca: string; servername: string };
  mx: { ca: string; servername: string };
  imap: { ca: string; servername: string };
  /** The TLS settings as configured, one line each, for the report. */
  settings: string[];
}

const SENDER_IP = '127.77.0.2';
const RECEIVER_IP = '127.77.0.3';
const DOVECOT_IP = '127.77.0.4';
const SASL_USER = { user: 'alice@sender.test', pass: 'alice-secret' };
const MAILBOX_USERS = [
  { user: 'bob@receiver.test', pass: 'bob-secret' },
  { user: 'carol@receiver.test', pass: 'carol-secret' },
];
const BOB = MAILBOX_USERS[0]!;

const POSTFIX = '/usr/sbin/postfix';
const POSTCONF = '/usr/sbin/postconf';
const POSTQUEUE = '/usr/sbin/postqueue';
const POSTFIX_MASTER = '/usr/lib/postfix/sbin/master';
const DOVECOT = '/usr/sbin/dovecot';
const DOVECOT_HELPERS = ['/usr/lib/dovecot/imap', '/usr/lib/dovecot/imap-login', '/usr/lib/dovecot/lmtp'];
const PACKAGES = ['postfix', 'dovecot-core', 'dovecot-imapd', 'dovecot-lmtpd'];
const TMP_PREFIX = 'maillab-peer-';

const BOOT_TIMEOUT_MS = 30_000;
// Dovecot's master needs ~1.1 s to exit on SIGTERM (its log process lingers), and now and then an LMTP process
// takes 5 s more: past this grace, whatever is left is SIGKILLed.
const STOP_GRACE_MS = 2_500;

// ---------------------------------------------------------------------------------------------------------------
// Small process helpers

interface RunResult {
  code: number;
  stdout: string;
  stderr: string;
}

function run(file: string, args: string[], opts: { env?: NodeJS.ProcessEnv; input?: string; timeoutMs?: number } = {}): Promise<RunResult> {
  return new Promise((resolve) => {
    const child = execFile(
      file,
      args,
      { env: opts.env ?? process.env, timeout: opts.timeoutMs ?? 60_000, maxBuffer: 16 * 1024 * 1024 },
      (err, stdout, stderr) => {
        const code = err ? (typeof (err as { code?: unknown }).code === 'number' ? ((err as { code: number }).code) : -1) : 0;
        resolve({ code, stdout: String(stdout), stderr: String(stderr) + (err && code === -1 ? String(err.message) : '') });
      },
    );
    if (opts.input !== undefined) child.stdin?.end(opts.input);
  });
}

interface ProcInfo {
  pid: number;
  ppid: number;
  comm: string;
}

function listProcs(): ProcInfo[] {
  const out: ProcInfo[] = [];
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    try {
      const s = readFileSync(`/proc/${name}/stat`, 'utf8');
      const close = s.lastIndexOf(')');
      const comm = s.slice(s.indexOf('(') + 1, close);
      const fields = s.slice(close + 2).split(' ');
      if (fields[0] === 'Z') continue; // zombies hold no memory and will be reaped
      out.push({ pid: Number(name), ppid: Number(fields[1]), comm });
    } catch {
      // gone meanwhile
    }
  }
  return out;
}

function exeOf(pid: number): string | undefined {
  try {
    return readlinkSync(`/proc/${pid}/exe`);
  } catch {
    return undefined;
  }
}

/** True when the process works inside `dir`: Postfix daemons chdir to their queue directory, Dovecot's to base_dir/home. */
function worksIn(pid: number, dir: string): boolean {
  for (const link of ['cwd', 'root']) {
    try {
      const target = readlinkSync(`/proc/${pid}/${link}`);
      if (target === dir || target.startsWith(dir + '/')) return true;
    } catch {
      // gone or not ours to read
    }
  }
  return false;
}

function alive(pid: number): boolean {
  try {
    const s = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return s.slice(s.lastIndexOf(')') + 2, s.lastIndexOf(')') + 3) !== 'Z';
  } catch {
    return false;
  }
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

// ---------------------------------------------------------------------------------------------------------------
// Installation

function installed(): boolean {
  return [POSTFIX, POSTCONF, POSTFIX_MASTER, DOVECOT, ...DOVECOT_HELPERS].every((f) => existsSync(f));
}

/** System daemons: a Postfix master or a Dovecot master not working in a peer's temp dir (ours, or another run's). */
function systemDaemons(): number[] {
  const peerDirs = path.join(os.tmpdir(), TMP_PREFIX);
  return listProcs()
    .filter((p) => {
      const exe = exeOf(p.pid);
      if (exe !== POSTFIX_MASTER && exe !== DOVECOT) return false;
      try {
        return !readlinkSync(`/proc/${p.pid}/cwd`).startsWith(peerDirs);
      } catch {
        return false;
      }
    })
    .map((p) => p.pid);
}

async function ensureInstalled(log: (m: string) => void): Promise<string | undefined> {
  if (installed()) return undefined;
  if (typeof process.getuid !== 'function' || process.getuid() !== 0) return 'postfix/dovecot are not installed and this is not root';
  if (!existsSync('/usr/bin/apt-get')) return 'postfix/dovecot are not installed and there is no apt-get';
  log(`installing ${PACKAGES.join(' ')} with apt-get`);
  const env = { ...process.env, DEBIAN_FRONTEND: 'noninteractive' };
  const preseed = await run('debconf-set-selections', [], { input: 'postfix postfix/main_mailer_type select No configuration\n' });
  if (preseed.code !== 0) return `debconf-set-selections failed: ${preseed.stderr.trim()}`;
  const before = new Set(systemDaemons());
  // Keep the packages' maintainer scripts from starting system daemons (the Debian way: policy-rc.d exit 101).
  // Only when there is no policy already; ours is removed again below.
  const policy = '/usr/sbin/policy-rc.d';
  const ownPolicy = !existsSync(policy);
  if (ownPolicy) await writeFile(policy, '#!/bin/sh\n# maillab bench/peer.ts: no service start during install\nexit 101\n', { mode: 0o755 });
  try {
    const args = ['-y', '-q', '-o', 'DPkg::Lock::Timeout=300', '--no-install-recommends', 'install', ...PACKAGES];
    let res = await run('apt-get', args, { env, timeoutMs: 15 * 60_000 });
    if (res.code !== 0) {
      log('apt-get install failed; running apt-get update and trying again');
      await run('apt-get', ['-q', '-o', 'DPkg::Lock::Timeout=300', 'update'], { env, timeoutMs: 10 * 60_000 });
      res = await run('apt-get', args, { env, timeoutMs: 15 * 60_000 });
    }
    if (res.code !== 0) return `apt-get install ${PACKAGES.join(' ')} failed (${res.code}): ${(res.stderr || res.stdout).trim().split('\n').slice(-3).join(' | ')}`;
  } finally {
    if (ownPolicy) await rm(policy, { force: true });
  }
  // Anything the packages started all the same (no policy-rc.d honoured, no systemd here): kill it by pid.
  const started = systemDaemons().filter((pid) => !before.has(pid));
  if (started.length > 0) {
    log(`stopping system daemons the packages started: ${started.join(' ')}`);
    const family = descendants(started);
    await killAndWait(started, () => [...family, ...descendants(started)]);
  }
  if (!installed()) return 'apt-get succeeded but postfix/dovecot binaries are still missing';
  return undefined;
}

/**
 * SIGTERM the given pids, wait up to STOP_GRACE_MS for them to exit, then SIGKILL what is left of them and of what
 * `more()` (their relatives, never anything unrelated) finds by then. Returns the pids that had to be killed, with names.
 */
async function killAndWait(pids: number[], more: () => number[] = () => []): Promise<string[]> {
  const targets = new Set(pids);
  for (const pid of targets) signal(pid, 'SIGTERM');
  const deadline = Date.now() + STOP_GRACE_MS;
  while (Date.now() < deadline) {
    await sleep(20);
    if ([...targets].every((pid) => !alive(pid))) return [];
  }
  for (const pid of more()) targets.add(pid);
  const killed: string[] = [];
  for (const pid of targets) {
    if (!alive(pid)) continue;
    killed.push(`${pid} (${commOf(pid)})`);
    signal(pid, 'SIGKILL');
  }
  await sleep(50);
  return killed;
}

/** The pids and all their descendants that are still running. */
function descendants(roots: Iterable<number>, procs: ProcInfo[] = listProcs()): number[] {
  const kids = new Map<number, number[]>();
  for (const p of procs) {
    const list = kids.get(p.ppid) ?? [];
    list.push(p.pid);
    kids.set(p.ppid, list);
  }
  const out = new Set<number>();
  const walk = (pid: number): void => {
    if (out.has(pid) || !alive(pid)) return;
    out.add(pid);
    for (const k of kids.get(pid) ?? []) walk(k);
  };
  for (const r of roots) walk(r);
  return [...out];
}

function commOf(pid: number): string {
  try {
    return readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').filter(Boolean).join(' ').slice(0, 80) || '?';
  } catch {
    return '?';
  }
}

function signal(pid: number, sig: NodeJS.Signals): void {
  try {
    process.kill(pid, sig);
  } catch {
    // already gone
  }
}

// ---------------------------------------------------------------------------------------------------------------
// Greeting probes

/** One attempt: connect, read the first line; 'refused' while nothing listens yet. */
function probeOnce(host: string, port: number, greeting: RegExp, bye: string): Promise<'ok' | 'refused' | string> {
  return new Promise((resolve) => {
    const sock = net.connect({ host, port });
    let buf = '';
    const done = (r: string): void => {
      clearTimeout(timer);
      sock.removeAllListeners('data');
      if (r === 'ok') sock.end(bye);
      else sock.destroy();
      sock.on('error', () => {});
      resolve(r);
    };
    const timer = setTimeout(() => done(`no greeting from ${host}:${port} within 5 s`), 5000);
    sock.setEncoding('latin1');
    sock.on('data', (d: string) => {
      buf += d;
      const nl = buf.indexOf('\n');
      if (nl < 0) return;
      const line = buf.slice(0, nl).replace(/\r$/, '');
      done(greeting.test(line) ? 'ok' : `unexpected greeting from ${host}:${port}: ${line}`);
    });
    sock.on('error', (e: NodeJS.ErrnoException) => done(e.code === 'ECONNREFUSED' ? 'refused' : `${host}:${port}: ${e.message}`));
    sock.on('close', () => done(`${host}:${port} closed before greeting`));
  });
}

/**
 * Polls until the service greets; resolves with ms since t0. Rejects when `failed()` says the start command failed
 * (or that a sibling probe gave up).
 */
async function waitGreeting(
  host: string,
  port: number,
  greeting: RegExp,
  bye: string,
  t0: number,
  failed: () => string | undefined,
): Promise<number> {
  for (;;) {
    const r = await probeOnce(host, port, greeting, bye);
    if (r === 'ok') return performance.now() - t0;
    if (r !== 'refused') throw new Error(r);
    const f = failed();
    if (f) throw new Error(f);
    if (performance.now() - t0 > BOOT_TIMEOUT_MS) throw new Error(`${host}:${port} did not come up within ${BOOT_TIMEOUT_MS} ms`);
    await sleep(5);
  }
}

/** Spawns a daemon's start command; `failed()` reports a non-zero exit, or what `abandon()` was told. */
function spawnStart(
  file: string,
  args: string[],
  log: (m: string) => void,
): { t0: number; exited: Promise<number>; failed: () => string | undefined; abandon: (why: string) => void } {
  const t0 = performance.now();
  const child = spawn(file, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  child.stdout.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr.on('data', (d: Buffer) => (out += d.toString()));
  let failure: string | undefined;
  const exited = new Promise<number>((resolve) => {
    child.on('error', (e) => {
      failure = `${file} ${args.join(' ')}: ${e.message}`;
      resolve(-1);
    });
    child.on('exit', (code) => {
      if (code !== 0) failure = `${file} ${args.join(' ')} exited ${code}: ${out.trim()}`;
      else if (out.trim()) log(`${path.basename(file)}: ${out.trim()}`);
      resolve(code ?? -1);
    });
  });
  return { t0, exited, failed: () => failure, abandon: (why) => (failure ??= why) };
}

async function assertFree(host: string, port: number): Promise<void> {
  const r = await probeOnce(host, port, /./, 'QUIT\r\n');
  if (r !== 'refused') throw new Error(`${host}:${port} is already in use (${r}); is another peer still running?`);
}

// ---------------------------------------------------------------------------------------------------------------
// Configuration

function postfixMainCf(o: { dir: string; hostname: string; ip: string; extra: string[]; tls?: { cert: string; key: string } }): string {
  return [
    `# maillab bench peer: ${o.hostname}`,
    'compatibility_level = 3.6',
    `config_directory = ${o.dir}/etc`,
    `queue_directory = ${o.dir}/spool`,
    `data_directory = ${o.dir}/data`,
    'mail_owner = postfix',
    'setgid_group = postdrop',
    `myhostname = ${o.hostname}`,
    'mydomain = test',
    'myorigin = $myhostname',
    // Postfix wants inet_interfaces to be addresses configured on an interface, and 127.77.0.x are not (Linux
    // routes all of 127/8 to lo without them): the listeners name their address in master.cf instead, and this
    // setting only says what counts as "myself". Outbound connections leave from the instance's own address.
    'inet_interfaces = loopback-only',
    'inet_protocols = ipv4',
    `smtp_bind_address = ${o.ip}`,
    `lmtp_bind_address = ${o.ip}`,
    'mynetworks = 127.0.0.0/8',
    'mydestination =',
    'relay_domains =',
    'append_dot_mydomain = no',
    'biff = no',
    'alias_maps =',
    'alias_database =',
    'local_transport = error:local delivery is disabled in the bench peer',
    'default_transport = error:no outbound delivery from the bench peer',
    'relay_transport = error:no outbound delivery from the bench peer',
    // No DNS, ever: the machine's resolver is not on loopback.
    'smtp_dns_support_level = disabled',
    'lmtp_dns_support_level = disabled',
    'smtp_host_lookup = native',
    'smtpd_peername_lookup = no',
    ...(o.tls ? postfixTls(o.tls) : ['smtp_tls_security_level = none', 'smtpd_tls_security_level = none']),
    'smtputf8_enable = yes',
    // The bench's message-size series sends 10 MiB messages; Postfix's default (10,240,000 octets) is just under
    // that, and maillab's MTA takes 25 MiB: 40 MiB here (under mailbox_size_limit's default, which Postfix requires).
    'message_size_limit = 41943040',
    // Postfix's default per-client limit (50, like maillab's) would refuse part of the 100-connection series; the
    // bench's maillab lab raises its limit the same way.
    'smtpd_client_connection_count_limit = 200',
    // Logging without syslog: every program sends to postlogd, which appends to this file.
    `maillog_file = ${o.dir}/maillog`,
    `maillog_file_prefixes = ${o.dir}`,
    ...o.extra,
    '',
  ].join('\n');
}

/**
 * TLS for one Postfix instance: the server side offers STARTTLS with the instance's certificate (security level may,
 * like Debian's packaged main.cf), the client side (only the sender relays) uses it when offered (may), and the
 * Received header says which protocol and cipher a session used (what the bench checks).
 *
 * Debian's packaged main.cf also sets `smtp_tls_session_cache_database = btree:${data_directory}/smtp_scache`; here
 * it cost about 40 ms per relayed message (the smtp client's connection setup, `delays=…/0.04/…` in the maillog,
 * against 0 without it) on the latency figure, so it is left out, as in Postfix's built-in defaults: every relay
 * connection makes a full TLS 1.3 handshake. Neither is TLS connection reuse turned on (`smtp_tls_connection_reuse`,
 * default no, which needs tlsproxy).
 */
function postfixTls(tls: { cert: string; key: string }): string[] {
  return [
    `smtpd_tls_cert_file = ${tls.cert}`,
    `smtpd_tls_key_file = ${tls.key}`,
    'smtpd_tls_security_level = may',
    'smtpd_tls_received_header = yes',
    'smtp_tls_security_level = may',
  ];
}

/** A master.cf without chroot (the queue directories have no copies of /etc) and with postlogd. */
function postfixMasterCf(ip: string, extraServices: string[]): string {
  return [
    '# service type  private unpriv  chroot  wakeup  maxproc command + args',
    `${ip}:25 inet n      -       n       -       -       smtpd`,
    ...extraServices,
    ...LAB_SERVICES,
    '',
  ].join('\n');
}

function dovecotConf(o: { dir: string; saslSocket: string; mailRoot: string; uid: number; gid: number; tls?: { cert: string; key: string } }): string {
  return `# maillab bench peer: Dovecot for receiver.test
instance_name = ${path.basename(path.dirname(o.dir))}
base_dir = ${o.dir}/run
state_dir = ${o.dir}/state
log_path = ${o.dir}/dovecot.log
info_log_path = ${o.dir}/dovecot.log
listen = ${DOVECOT_IP}
protocols = imap lmtp
hostname = mail.receiver.test
postmaster_address = postmaster@receiver.test
${o.tls ? `ssl = required\nssl_cert = <${o.tls.cert}\nssl_key = <${o.tls.key}` : 'ssl = no'}
disable_plaintext_auth = no
auth_mechanisms = plain login
first_valid_uid = ${o.uid}
last_valid_uid = ${o.uid}
first_valid_gid = ${o.gid}
last_valid_gid = ${o.gid}
mail_location = maildir:${o.mailRoot}/%u/Maildir
lmtp_save_to_detail_mailbox = no
passdb {
  driver = passwd-file
  args = scheme=PLAIN username_format=%u ${o.dir}/users
}
userdb {
  driver = static
  args = uid=${o.uid} gid=${o.gid} home=${o.mailRoot}/%u
}
service lmtp {
  inet_listener lmtp {
    address = ${DOVECOT_IP}
    port = 24
  }
}
# Dovecot allows 10 IMAP connections per user and client address by default; the IMAP cycles figure runs 10
# clients as one user, each reconnecting at once after LOGOUT, so a few sessions still closing would be refused.
protocol imap {
  mail_max_userip_connections = 100
}
service imap-login {
  inet_listener imap {
    address = ${DOVECOT_IP}
    port = 143
  }
  inet_listener imaps {
    port = 0
  }
}
service auth {
  # Postfix's SASL (smtpd_sasl_type = dovecot) for the sender's submission service.
  unix_listener ${o.saslSocket} {
    mode = 0660
    user = postfix
    group = postfix
  }
}
`;
}

function passwdLookup(name: string): { uid: number; gid: number } | undefined {
  for (const line of readFileSync('/etc/passwd', 'utf8').split('\n')) {
    const f = line.split(':');
    if (f[0] === name && f[2] !== undefined && f[3] !== undefined) return { uid: Number(f[2]), gid: Number(f[3]) };
  }
  return undefined;
}

// ---------------------------------------------------------------------------------------------------------------
// Safety net: a peer not stopped by the time the process exits is killed (synchronously) and its dir removed.

const running = new Set<{ emergencyStop(): void }>();
let exitHookInstalled = false;
function installExitHook(): void {
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  process.on('exit', () => {
    for (const r of running) r.emergencyStop();
  });
}

// ---------------------------------------------------------------------------------------------------------------

export async function startPeer(options?: PeerOptions): Promise<PeerLab | { skipped: string }> {
  const log = options?.log ?? (() => {});
  if (process.platform !== 'linux') return { skipped: 'the Postfix + Dovecot peer needs Linux' };
  if (typeof process.getuid !== 'function' || process.getuid() !== 0) {
    if (!installed()) return { skipped: 'postfix/dovecot are not installed and this is not root' };
    return { skipped: 'running Postfix and Dovecot instances needs root' };
  }
  const why = await ensureInstalled(log);
  if (why) return { skipped: why };
  const postfixUser = passwdLookup('postfix');
  if (!postfixUser) return { skipped: 'there is no postfix user' };
  // Dovecot refuses root as mail user; Debian's `mail` user (uid 8) owns the Maildirs.
  const mailUser = passwdLookup('mail');
  if (!mailUser) return { skipped: 'there is no mail user to own the Maildirs' };
  const dovecotUser = passwdLookup('dovecot');
  if (!dovecotUser) return { skipped: 'there is no dovecot user' };

  const pfVersion = (await run(POSTCONF, ['-d', '-h', 'mail_version'])).stdout.trim() || '?';
  const dvVersion = ((await run(DOVECOT, ['--version'])).stdout.trim().split(/\s+/)[0]) || '?';
  const name = `postfix ${pfVersion} + dovecot ${dvVersion}${options?.tls ? ' (TLS)' : ''}`;

  for (const [h, p] of [[SENDER_IP, 25], [SENDER_IP, 587], [RECEIVER_IP, 25], [DOVECOT_IP, 24], [DOVECOT_IP, 143]] as const) await assertFree(h, p);

  const tmp = await mkdtemp(path.join(os.tmpdir(), TMP_PREFIX));
  await chmod(tmp, 0o755); // postfix, dovecot and mail must traverse it
  const senderDir = path.join(tmp, 'sender');
  const receiverDir = path.join(tmp, 'receiver');
  const dovecotDir = path.join(tmp, 'dovecot');
  const mailRoot = path.join(tmp, 'mail');
  const saslDir = path.join(tmp, 'sasl');
  const saslSocket = path.join(saslDir, 'auth');

  const masterPids = new Map<string, number>(); // service -> master pid
  const seen = new Set<number>(); // every pid ever reported, for stop()
  let stopping: Promise<void> | undefined;

  const collect = (): number[] => {
    const procs = listProcs();
    // The masters' families, and anything working inside our dir (a child whose master already died...).
    const roots = [...masterPids.values()];
    for (const p of procs) if (p.pid !== process.pid && worksIn(p.pid, tmp)) roots.push(p.pid);
    const out = descendants(roots, procs);
    for (const pid of out) seen.add(pid);
    return out.sort((a, b) => a - b);
  };

  /** The sender Postfix's processes: its master's family and whatever works in its directory. */
  const senderFamily = (): number[] => {
    const procs = listProcs();
    const master = masterPids.get('postfix-sender');
    const roots = [...(master ? [master] : []), ...procs.filter((p) => p.pid !== process.pid && worksIn(p.pid, senderDir)).map((p) => p.pid)];
    return descendants(roots, procs);
  };

  const handle = {
    emergencyStop(): void {
      try {
        for (const pid of [...seen, ...collect()]) signal(pid, 'SIGKILL');
        rmSync(tmp, { recursive: true, force: true });
      } catch {
        // best effort at exit
      }
    },
  };
  running.add(handle);
  installExitHook();

  const stop = (): Promise<void> => {
    stopping ??= (async () => {
      const pids = collect();
      log(`stopping peer (${pids.length} processes)`);
      // SIGTERM to a Postfix master or to Dovecot's master makes it terminate its children and exit.
      const masters = [...masterPids.values()];
      const t0 = performance.now();
      let killed = await killAndWait(masters.length > 0 ? masters : pids, () => [...seen, ...collect()]);
      // Children that outlived their master (reparented): the same again, by pid.
      const left = [...new Set([...seen, ...collect()])].filter(alive);
      if (left.length > 0) killed = [...killed, ...(await killAndWait(left, collect))];
      if (killed.length > 0) log(`had to SIGKILL: ${killed.join(', ')}`);
      log(`peer stopped in ${Math.round(performance.now() - t0)} ms`);
      running.delete(handle);
      await rm(tmp, { recursive: true, force: true });
    })();
    return stopping;
  };

  try {
    // ---- files
    for (const d of [senderDir, receiverDir]) {
      await mkdir(path.join(d, 'etc'), { recursive: true });
      await mkdir(path.join(d, 'spool'), { recursive: true, mode: 0o755 });
      await mkdir(path.join(d, 'data'), { recursive: true, mode: 0o700 });
      await chown(path.join(d, 'data'), postfixUser.uid, postfixUser.gid);
    }
    await mkdir(path.join(dovecotDir, 'state'), { recursive: true });
    await mkdir(saslDir, { recursive: true, mode: 0o755 });
    await mkdir(mailRoot, { recursive: true, mode: 0o755 });
    await chown(mailRoot, mailUser.uid, mailUser.gid);
    // Pre-created Maildirs, so bobMaildir/new exists before the first delivery.
    for (const u of MAILBOX_USERS) {
      let p = path.join(mailRoot, u.user);
      for (const part of ['', 'Maildir']) {
        p = part ? path.join(p, part) : p;
        await mkdir(p, { recursive: true, mode: 0o700 });
        await chown(p, mailUser.uid, mailUser.gid);
      }
      for (const sub of ['new', 'cur', 'tmp']) {
        await mkdir(path.join(p, sub), { mode: 0o700 });
        await chown(path.join(p, sub), mailUser.uid, mailUser.gid);
      }
    }

    // TLS: one CA for the peer, one certificate per host with its name and address as SANs (like the lab's hosts).
    let tls: PeerTls | undefined;
    const certFiles: Record<'sender' | 'receiver' | 'dovecot', { cert: string; key: string }> | undefined = options?.tls
      ? {
          sender: { cert: path.join(tmp, 'tls', 'sender.pem'), key: path.join(tmp, 'tls', 'sender.key') },
          receiver: { cert: path.join(tmp, 'tls', 'receiver.pem'), key: path.join(tmp, 'tls', 'receiver.key') },
          dovecot: { cert: path.join(tmp, 'tls', 'dovecot.pem'), key: path.join(tmp, 'tls', 'dovecot.key') },
        }
      : undefined;
    if (certFiles) {
      await mkdir(path.join(tmp, 'tls'), { mode: 0o755 });
      const ca = await createLabCa('bench peer');
      await writeFile(path.join(tmp, 'tls', 'ca.pem'), ca.cert);
      const hosts = { sender: ['mta.sender.test', SENDER_IP], receiver: ['mx.receiver.test', RECEIVER_IP], dovecot: ['mail.receiver.test', DOVECOT_IP] } as const;
      for (const [k, [hostname, ip]] of Object.entries(hosts) as [keyof typeof hosts, readonly [string, string]][]) {
        const issued = await issueHostCertificate(ca, { names: [hostname], addresses: [ip] });
        await writeFile(certFiles[k].cert, issued.cert, { mode: 0o644 });
        await writeFile(certFiles[k].key, issued.key, { mode: 0o600 }); // read by root: Postfix and Dovecot load keys before dropping privileges
      }
      tls = {
        ca: ca.cert,
        submission: { ca: ca.cert, servername: hosts.sender[0] },
        mx: { ca: ca.cert, servername: hosts.receiver[0] },
        imap: { ca: ca.cert, servername: hosts.dovecot[0] },
        settings: [
          `certificates: EC P-256 from a peer CA (createLabCa/issueHostCertificate), SANs ${Object.values(hosts).map(([n, a]) => `${n}+${a}`).join(', ')}`,
          `both Postfix instances: ${postfixTls({ cert: '<host>.pem', key: '<host>.key' }).join('; ')}; tlsmgr in master.cf; no smtp_tls_session_cache_database, smtp_tls_connection_reuse = no (defaults)`,
          `sender Postfix 587: smtpd_tls_security_level=encrypt, smtpd_tls_auth_only=yes (and SASL as before)`,
          `Dovecot: ssl = required, ssl_cert/ssl_key = <host>.pem/.key (IMAP STARTTLS on 143; LMTP plaintext: Postfix's lmtp_tls_security_level stays none)`,
        ],
      };
    }

    // Sender: accepts from 127/8 on 25, with SASL on 587; relays receiver.test to the receiver, refuses the rest.
    await writeFile(path.join(senderDir, 'etc', 'transport'), `receiver.test smtp:[${RECEIVER_IP}]:25\n`);
    await writeFile(path.join(senderDir, 'etc', 'sender_login'), `${SASL_USER.user} ${SASL_USER.user}\n`);
    await writeFile(
      path.join(senderDir, 'etc', 'main.cf'),
      postfixMainCf({
        dir: senderDir,
        hostname: 'mta.sender.test',
        ip: SENDER_IP,
        ...(certFiles ? { tls: certFiles.sender } : {}),
        extra: [
          `transport_maps = texthash:${senderDir}/etc/transport`,
          'smtpd_sasl_type = dovecot',
          `smtpd_sasl_path = ${saslSocket}`,
          'smtpd_sasl_security_options = noanonymous',
          `smtpd_sender_login_maps = texthash:${senderDir}/etc/sender_login`,
        ],
      }),
    );
    await writeFile(
      path.join(senderDir, 'etc', 'master.cf'),
      postfixMasterCf(SENDER_IP, [
        `${SENDER_IP}:587 inet n     -       n       -       -       smtpd`,
        '  -o syslog_name=postfix/submission',
        '  -o smtpd_sasl_auth_enable=yes',
        '  -o smtpd_client_restrictions=permit_sasl_authenticated,reject',
        '  -o smtpd_sender_restrictions=reject_sender_login_mismatch',
        '  -o smtpd_relay_restrictions=permit_sasl_authenticated,reject',
        ...(certFiles ? ['  -o smtpd_tls_security_level=encrypt', '  -o smtpd_tls_auth_only=yes'] : []),
      ]),
    );

    // Receiver: MX for receiver.test, virtual mailboxes delivered over LMTP to Dovecot.
    await writeFile(path.join(receiverDir, 'etc', 'vmailbox'), MAILBOX_USERS.map((u) => `${u.user} OK\n`).join(''));
    await writeFile(
      path.join(receiverDir, 'etc', 'main.cf'),
      postfixMainCf({
        dir: receiverDir,
        hostname: 'mx.receiver.test',
        ip: RECEIVER_IP,
        ...(certFiles ? { tls: certFiles.receiver } : {}),
        extra: [
          'virtual_mailbox_domains = receiver.test',
          `virtual_mailbox_maps = texthash:${receiverDir}/etc/vmailbox`,
          `virtual_transport = lmtp:inet:[${DOVECOT_IP}]:24`,
        ],
      }),
    );
    await writeFile(path.join(receiverDir, 'etc', 'master.cf'), postfixMasterCf(RECEIVER_IP, []));

    // Dovecot
    await writeFile(
      path.join(dovecotDir, 'users'),
      [...MAILBOX_USERS, SASL_USER].map((u) => `${u.user}:{PLAIN}${u.pass}\n`).join(''),
      { mode: 0o640 },
    );
    await chown(path.join(dovecotDir, 'users'), 0, dovecotUser.gid); // read by the auth process, which runs as dovecot
    const dovecotConfPath = path.join(dovecotDir, 'dovecot.conf');
    await writeFile(dovecotConfPath, dovecotConf({ dir: dovecotDir, saslSocket, mailRoot, uid: mailUser.uid, gid: mailUser.gid, ...(certFiles ? { tls: certFiles.dovecot } : {}) }));

    // Postfix re-reads a configuration file (main.cf, texthash maps) modified within the last second, sleeping
    // 300 ms between tries, in case an editor is still writing it: date our files back so that this wait, which no
    // installed Postfix pays, is not counted in bootMs.
    const past = new Date(Date.now() - 60_000);
    for (const d of [path.join(senderDir, 'etc'), path.join(receiverDir, 'etc'), dovecotDir]) {
      for (const f of await readdir(d, { withFileTypes: true })) if (f.isFile()) await utimes(path.join(d, f.name), past, past);
    }

    // ---- start all three at once, as a lab boots (Dovecot is needed only at the first AUTH or delivery); each
    // service's time runs from that common start, so the largest is the time until the whole peer is up.
    const bootMs: Record<string, number> = {};
    const readPid = async (file: string): Promise<number> => {
      const n = Number((await readFile(file, 'utf8')).trim());
      if (!Number.isInteger(n) || n <= 0) throw new Error(`bad pid file ${file}`);
      return n;
    };
    const boot = async (
      key: string,
      file: string,
      args: string[],
      pidFile: string,
      greets: { name: string; host: string; port: number; greeting: RegExp; bye: string }[],
    ): Promise<void> => {
      const s = spawnStart(file, args, log);
      try {
        const times = await Promise.all(greets.map((g) => waitGreeting(g.host, g.port, g.greeting, g.bye, s.t0, s.failed)));
        greets.forEach((g, i) => (bootMs[g.name] = Math.max(bootMs[g.name] ?? 0, times[i]!)));
      } finally {
        s.abandon('start abandoned');
        await s.exited;
        try {
          masterPids.set(key, await readPid(pidFile));
        } catch {
          // did not get that far
        }
      }
    };
    const smtp = (name: string, host: string, port: number) => ({ name, host, port, greeting: /^220 /, bye: 'QUIT\r\n' });
    log('starting dovecot, receiver postfix, sender postfix');
    const boots = await Promise.allSettled([
      boot('dovecot', DOVECOT, ['-c', dovecotConfPath], path.join(dovecotDir, 'run', 'master.pid'), [
        { name: 'dovecot-lmtp', host: DOVECOT_IP, port: 24, greeting: /^220 /, bye: 'QUIT\r\n' },
        { name: 'dovecot-imap', host: DOVECOT_IP, port: 143, greeting: /^\* OK/, bye: 'a LOGOUT\r\n' },
      ]),
      boot('postfix-receiver', POSTFIX, ['-c', path.join(receiverDir, 'etc'), 'start'], path.join(receiverDir, 'spool', 'pid', 'master.pid'), [
        smtp('postfix-receiver', RECEIVER_IP, 25),
      ]),
      boot('postfix-sender', POSTFIX, ['-c', path.join(senderDir, 'etc'), 'start'], path.join(senderDir, 'spool', 'pid', 'master.pid'), [
        smtp('postfix-sender', SENDER_IP, 25),
        smtp('postfix-sender', SENDER_IP, 587),
      ]),
    ]);
    const failures = boots.flatMap((b) => (b.status === 'rejected' ? [b.reason instanceof Error ? b.reason.message : String(b.reason)] : []));
    if (failures.length > 0) throw new Error(failures.join('; '));
    collect();
    log(`peer up: ${name}; boot ${JSON.stringify(Object.fromEntries(Object.entries(bootMs).map(([k, v]) => [k, Math.round(v)])))}`);

    // Sanity: the Maildir is where we say it is.
    await stat(path.join(mailRoot, BOB.user, 'Maildir', 'new'));

    return {
      name,
      submission: { host: SENDER_IP, port: 587, auth: { ...SASL_USER } },
      mx: { host: RECEIVER_IP, port: 25 },
      imap: { host: DOVECOT_IP, port: 143, user: BOB.user, pass: BOB.pass },
      bobMaildir: path.join(mailRoot, BOB.user, 'Maildir'),
      pids: async () => collect(),
      senderQueue: {
        list: async () => {
          const r = await run(POSTQUEUE, ['-c', path.join(senderDir, 'etc'), '-p'], { timeoutMs: 120_000 });
          if (r.code !== 0) throw new Error(`postqueue -p (sender) exited with ${r.code}: ${r.stderr.trim()}`);
          return r.stdout;
        },
        stopReceiver: async () => {
          const r = await run(POSTFIX, ['-c', path.join(receiverDir, 'etc'), 'stop'], { timeoutMs: 30_000 });
          if (r.code !== 0) throw new Error(`postfix stop (receiver) exited with ${r.code}: ${r.stderr.trim()}`);
          masterPids.delete('postfix-receiver');
        },
        pids: () => senderFamily(),
        killAndStart: async () => {
          for (const pid of senderFamily()) signal(pid, 'SIGKILL');
          const deadline = Date.now() + 10_000;
          while (senderFamily().some(alive)) {
            if (Date.now() > deadline) throw new Error('the sender Postfix processes outlived SIGKILL for 10 s');
            await sleep(10);
          }
          const r = await run(POSTFIX, ['-c', path.join(senderDir, 'etc'), 'start'], { timeoutMs: 30_000 });
          if (r.code !== 0) throw new Error(`postfix start (sender, after SIGKILL) exited with ${r.code}: ${r.stderr.trim()}`);
          masterPids.set('postfix-sender', await readPid(path.join(senderDir, 'spool', 'pid', 'master.pid')));
        },
      },
      bootMs,
      ...(tls ? { tls } : {}),
      stop,
    };
  } catch (err) {
    // Postfix reports start-up errors only to syslog (absent here) or to a terminal: ask `postfix check` on one.
    const checks = await Promise.all(
      [senderDir, receiverDir].map(async (d) => {
        const r = await run('script', ['-qec', `${POSTFIX} -c ${path.join(d, 'etc')} check`, '/dev/null'], { timeoutMs: 20_000 });
        const out = r.stdout.trim();
        return out ? `--- postfix check ${path.basename(d)}\n${out}` : '';
      }),
    );
    const logs = await Promise.all(
      [path.join(senderDir, 'maillog'), path.join(receiverDir, 'maillog'), path.join(dovecotDir, 'dovecot.log')].map((f) =>
        readFile(f, 'utf8').then((t) => `--- ${path.basename(path.dirname(f))}/${path.basename(f)}\n${t.split('\n').slice(-15).join('\n')}`, () => ''),
      ),
    );
    await stop().catch(() => {});
    const e = err instanceof Error ? err : new Error(String(err));
    e.message = `peer failed to start: ${e.message}\n${[...checks, ...logs].filter(Boolean).join('\n')}`;
    throw e;
  }
}
