// Dovecot's configuration for the lab's `mailbox` role (issue 14): from a MailboxNodeConfig, and optionally the
// user's own dovecot.conf, the files Dovecot 2.3 runs with, all under `<dataDir>/dovecot/`. The user's file is
// `!include`d first and the lab's settings follow, so only what the lab must decide (where Dovecot listens, where it
// keeps its state and logs, the lab's certificate and users, what its log must say for the events) overrides the
// user's; everything else of theirs (plugins, namespaces, limits, auth_failure_delay...) is what gets tested.
// README.md beside this file lists every override and why.
import { execFile } from 'node:child_process';
import { promises as fs, readFileSync } from 'node:fs';
import path from 'node:path';
import type { MailboxNodeConfig } from '../../shared/config.js';
import { DEFAULT_MAILBOXES } from '../../mailbox/maildir/names.js';

/** Where the adapter keeps Dovecot's files, all under `<dataDir>/dovecot/` except the mail. */
export interface DovecotPaths {
  dir: string;
  /** The generated dovecot.conf (what `dovecot -c` and `doveadm -c` get). */
  conf: string;
  /** `doveconf -n -c conf`: the settings Dovecot actually runs with, for humans and bug reports. */
  effective: string;
  /** Dovecot's log (log_path and info_log_path): the adapter's source of events. */
  log: string;
  baseDir: string;
  stateDir: string;
  /** passwd-file of the users with their main password. */
  passwd: string;
  cert: string;
  key: string;
  /** Parent of the users' homes: `<mailRoot>/<address>/Maildir`, the layout of maillab's own store. */
  mailRoot: string;
}

/** The non-root user Dovecot's mail processes run as (it refuses uid 0 for mail access, whatever the config). */
export interface MailUser {
  name: string;
  uid: number;
  gid: number;
}

export interface DovecotConfigOptions {
  /** The user's own dovecot.conf (absolute path), included before the lab's settings. */
  include?: string;
  /** Default: Debian's `mail` user (8:8). */
  mailUser?: MailUser;
  /** The user `auth` runs as, who must read the passwd-file: Dovecot's default_internal_user, Debian's `dovecot`. */
  authUser?: MailUser;
}

/** One setting the lab writes after the user's config, and why. Kept equal to README.md by a test. */
export interface LabOverride {
  setting: string;
  why: string;
}

export const LAB_OVERRIDES: readonly LabOverride[] = [
  { setting: 'base_dir', why: "a per-node runtime directory, so the lab's Dovecot never touches the system's /run/dovecot" },
  { setting: 'state_dir', why: 'per-node state, kept with the node (survives a restart)' },
  { setting: 'log_path', why: 'a file in the data directory: the adapter tails it for the events' },
  { setting: 'info_log_path', why: 'the same file: logins, deliveries and mail_log lines are Info' },
  { setting: 'debug_log_path', why: 'the same file, so nothing goes to syslog' },
  { setting: 'listen', why: "the node's loopback address only" },
  { setting: 'protocols', why: 'exactly the services the node configures (imap, pop3, lmtp)' },
  { setting: 'hostname', why: "the node's host name (LMTP greeting, Received headers)" },
  { setting: 'service lmtp / imap-login / pop3-login inet_listener', why: "the node's address and ports; a listener the node does not configure gets port 0 (off)" },
  { setting: 'ssl, ssl_cert, ssl_key, ssl_min_protocol', why: "the lab CA's certificate for the host, TLS 1.2 at least (or the node's minVersion); ssl = no without tls" },
  { setting: 'disable_plaintext_auth', why: 'yes with tls unless allowPlaintextAuth (RFC 8314), as the lab\'s own server; no without tls (no login could ever succeed)' },
  { setting: 'auth_mechanisms', why: 'plain login, what the lab\'s clients use' },
  { setting: 'passdb, userdb', why: "the lab's users: a passwd-file ({PLAIN} passwords, a lab only) and a static userdb with the homes in the data directory. Passdbs of the user's file stay before them (Dovecot tries passdbs in order)" },
  { setting: 'mail_location', why: 'maildir:<dataDir>/<address>/Maildir, the layout of maillab\'s own store (Maildir++ both)' },
  { setting: 'mail_uid, mail_gid, first_valid_uid, last_valid_uid, first_valid_gid, last_valid_gid', why: 'Dovecot refuses uid 0 for mail access (also when configured): a fixed non-root user (Debian\'s mail, 8:8) owns the Maildirs' },
  { setting: 'lmtp_save_to_detail_mailbox, recipient_delimiter', why: 'user+Folder@domain into Folder, the role contract (the MX files DMARC quarantine with +Junk)' },
  { setting: 'lda_mailbox_autocreate', why: "a detail's folder is created when missing, as the lab's own server does" },
  { setting: 'mail_plugins ($mail_plugins notify mail_log), plugin { mail_log_events, mail_log_fields }', why: 'save/expunge/flag_change lines with uid, box, msgid and size: the stored and deleted events, and what a retrieved event names' },
  { setting: 'log_debug', why: "`event=mail_opened`: a line per message a POP3 session opens (RETR or TOP), for the retrieved event; a user's own log_debug filter is replaced" },
  { setting: 'pop3_logout_format', why: "Dovecot's default, pinned: the RETR and TOP counts of a POP3 session's last line tell which opened messages were retrieved" },
  { setting: 'namespace <inbox> { mailbox Sent, Drafts, Trash, Junk }', why: "only the special-use folders the user's config lacks (by special_use or name): created and subscribed at a user's first login, as maillab's own server makes them (mail apps append to Sent)" },
  { setting: 'deliver_log_format', why: 'msgid, size and envelope sender on every LMTP delivery line: the stored event' },
  { setting: 'login_log_format_elements', why: 'the TLS version and cipher (%k) of a login: the session event' },
  { setting: 'auth_verbose', why: 'a line per failed password check: the auth-failed event' },
];

function passwdLookup(name: string): MailUser | undefined {
  for (const line of readFileSync('/etc/passwd', 'utf8').split('\n')) {
    const f = line.split(':');
    if (f[0] === name && f[2] !== undefined && f[3] !== undefined) return { name, uid: Number(f[2]), gid: Number(f[3]) };
  }
  return undefined;
}

/** Debian's `mail` user owns the Maildirs; its `dovecot` user runs auth (it reads the passwd-file). */
export function defaultMailUser(): MailUser {
  const user = passwdLookup('mail');
  if (!user) throw new Error('no `mail` user in /etc/passwd: Dovecot needs a non-root user to own the Maildirs (pass mailUser)');
  return user;
}

export function defaultAuthUser(): MailUser {
  const user = passwdLookup('dovecot');
  if (!user) throw new Error('no `dovecot` user in /etc/passwd (Debian\'s dovecot-core makes it): auth runs as it and reads the passwd-file');
  return user;
}

export function dovecotPaths(dataDir: string): DovecotPaths {
  const dir = path.resolve(dataDir, 'dovecot');
  return {
    dir,
    conf: path.join(dir, 'dovecot.conf'),
    effective: path.join(dir, 'effective.conf'),
    log: path.join(dir, 'dovecot.log'),
    baseDir: path.join(dir, 'run'),
    stateDir: path.join(dir, 'state'),
    passwd: path.join(dir, 'users'),
    cert: path.join(dir, 'tls', 'cert.pem'),
    key: path.join(dir, 'tls', 'key.pem'),
    mailRoot: path.resolve(dataDir),
  };
}

// Dovecot's longest socket name under base_dir is about 30 characters (login/ipc-proxy, token-login/...), and a Unix
// socket path has 108 bytes at most: past this, Dovecot fails at start with a less clear message.
const MAX_BASE_DIR = 70;

/** A value for a dovecot.conf line: Dovecot takes it raw up to the end of the line, so no line breaks. */
function value(v: string, what: string): string {
  if (/[\r\n]/.test(v)) throw new Error(`${what} must not contain a line break: ${JSON.stringify(v)}`);
  return v;
}

/**
 * A passwd-file line: `user:{PLAIN}password::::::`. The lab's passwords are plaintext anyway (they are in the
 * node's config); a `:` in one would end the field, so such a password is refused rather than silently cut.
 */
export function passwdLine(address: string, password: string): string {
  if (/[:\r\n]/.test(address) || /[:\r\n]/.test(password)) throw new Error(`the passwd-file cannot hold a ':' or a line break (user ${address})`);
  return `${address.toLowerCase()}:{PLAIN}${password}::::::`;
}

/** The dovecot.conf text (pure: the tests read it). */
export function renderDovecotConf(config: MailboxNodeConfig, paths: DovecotPaths, options: { include?: string; mailUser: MailUser }): string {
  if (paths.baseDir.length > MAX_BASE_DIR) {
    throw new Error(`Dovecot's base_dir ${paths.baseDir} is ${paths.baseDir.length} characters: its sockets would pass the 108-byte limit of a Unix socket path (use a shorter dataDir)`);
  }
  const addr = value(config.address, 'address');
  const { ports } = config;
  const tls = config.tls;
  const imap = ports.imap !== undefined || (tls !== undefined && ports.imaps !== undefined);
  const pop3 = ports.pop3 !== undefined || (tls !== undefined && ports.pop3s !== undefined);
  const protocols = [imap ? 'imap' : '', pop3 ? 'pop3' : '', 'lmtp'].filter(Boolean).join(' ');
  const plaintextAuth = !tls || tls.allowPlaintextAuth === true;
  const { uid, gid } = options.mailUser;
  // A port the node does not configure is 0: Dovecot then opens no listener of that name (also one the user's file made).
  const port = (p: number | undefined, enabled = true) => (enabled && p !== undefined ? p : 0);
  const listener = (name: string, p: number, ssl = false) =>
    [`  inet_listener ${name} {`, `    address = ${addr}`, `    port = ${p}`, ...(ssl ? ['    ssl = yes'] : []), '  }'].join('\n');

  const lines: string[] = [
    '# Written by maillab (src/real/dovecot/config.ts) for the mailbox node ' + value(config.name, 'name') + '.',
    "# The user's file first: every setting after the include is the lab's and wins (src/real/dovecot/README.md says why).",
  ];
  if (options.include) lines.push(`!include ${value(path.resolve(options.include), 'include path')}`);
  lines.push(
    '',
    `base_dir = ${paths.baseDir}`,
    `state_dir = ${paths.stateDir}`,
    `log_path = ${paths.log}`,
    `info_log_path = ${paths.log}`,
    `debug_log_path = ${paths.log}`,
    `listen = ${addr}`,
    `protocols = ${protocols}`,
    `hostname = ${value(config.hostname, 'hostname')}`,
    '',
    ...(tls
      ? ['ssl = yes', `ssl_cert = <${paths.cert}`, `ssl_key = <${paths.key}`, `ssl_min_protocol = ${tls.minVersion ?? 'TLSv1.2'}`]
      : ['ssl = no']),
    `disable_plaintext_auth = ${plaintextAuth ? 'no' : 'yes'}`,
    'auth_mechanisms = plain login',
    'auth_verbose = yes',
    '',
    `mail_location = maildir:${paths.mailRoot}/%Lu/Maildir`,
    `mail_uid = ${uid}`,
    `mail_gid = ${gid}`,
    `first_valid_uid = ${uid}`,
    `last_valid_uid = ${uid}`,
    `first_valid_gid = ${gid}`,
    `last_valid_gid = ${gid}`,
    'lmtp_save_to_detail_mailbox = yes',
    'recipient_delimiter = +',
    'lda_mailbox_autocreate = yes',
    '',
    '# What the adapter reads from the log (src/real/dovecot/log.ts parses exactly these shapes).',
    'mail_plugins = $mail_plugins notify mail_log',
    'deliver_log_format = msgid=%m size=%w from=<%{from_envelope}>: %$',
    'log_debug = event=mail_opened',
    'pop3_logout_format = top=%t/%p, retr=%r/%b, del=%d/%m, size=%s',
    'login_log_format_elements = user=<%u> method=%m rip=%r lip=%l mpid=%e %c session=<%{session}> tls=<%k>',
    'plugin {',
    '  mail_log_events = save delete expunge flag_change',
    '  mail_log_fields = uid box msgid size vsize from',
    '}',
    '',
    'passdb {',
    '  driver = passwd-file',
    `  args = scheme=PLAIN username_format=%Lu ${paths.passwd}`,
    '}',
    'userdb {',
    '  driver = static',
    `  args = home=${paths.mailRoot}/%Lu`,
    '}',
    '',
    'service lmtp {',
    listener('lmtp', ports.lmtp),
    '}',
    'service imap-login {',
    listener('imap', port(ports.imap)),
    listener('imaps', port(ports.imaps, tls !== undefined), true),
    '}',
    'service pop3-login {',
    listener('pop3', port(ports.pop3)),
    listener('pop3s', port(ports.pop3s, tls !== undefined), true),
    '}',
    '',
  );
  return lines.join('\n');
}

/**
 * The namespace section that gives every user maillab's default special-use folders (Sent, Drafts, Trash, Junk) the
 * effective config (`doveconf -n`) lacks, created and subscribed at the first login (`auto = subscribe`), as maillab's
 * own server creates them; undefined when it lacks none. A folder counts as there when any namespace gives a mailbox
 * that special use or that name. The section goes into the user's inbox namespace (Dovecot's implicit `inbox` when
 * the config has no namespace; none when it has namespaces but no inbox one).
 */
export function defaultFoldersSection(effective: string): string | undefined {
  const missing = DEFAULT_MAILBOXES.filter(
    ([name, use]) => !new RegExp(`^\\s*special_use = (?:.* )?\\${use}(?: |$)`, 'm').test(effective) && !new RegExp(`^\\s*mailbox "?${name}"? \\{`, 'm').test(effective),
  );
  if (missing.length === 0) return undefined;
  const namespaces = [...effective.matchAll(/^namespace (\S+) \{\n((?: .*\n)*?)\}/gm)];
  const inbox = namespaces.find((m) => /^ {2}inbox = yes$/m.test(m[2]!));
  if (namespaces.length > 0 && !inbox) return undefined;
  return [
    "# maillab's default folders, those the user's config lacks (src/real/dovecot/README.md).",
    `namespace ${inbox ? inbox[1]! : 'inbox'} {`,
    ...(inbox ? [] : ['  inbox = yes']),
    ...missing.flatMap(([name, use]) => [`  mailbox ${name} {`, `    special_use = ${use}`, '    auto = subscribe', '  }']),
    '}',
    '',
  ].join('\n');
}

/** Runs a program to its end, bounded in time; resolves with its exit code and output (never rejects on a failure exit). */
export function runTool(file: string, args: string[], opts: { input?: string | Buffer; timeoutMs?: number } = {}): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = execFile(file, args, { timeout: opts.timeoutMs ?? 15_000, maxBuffer: 64 * 1024 * 1024, encoding: 'utf8' }, (err, stdout, stderr) => {
      if (err && typeof (err as { code?: unknown }).code !== 'number') {
        // Not an exit status: the program is missing, or it was killed at the time limit.
        const e = err as NodeJS.ErrnoException & { killed?: boolean };
        if (e.code === 'ENOENT') return reject(new Error(`${file} is not installed (${e.message})`));
        if (e.killed) return reject(new Error(`${file} ${args.join(' ')} did not finish within ${opts.timeoutMs ?? 15_000} ms`));
        return reject(err);
      }
      resolve({ code: err ? ((err as { code: number }).code) : 0, stdout, stderr });
    });
    if (opts.input !== undefined) child.stdin?.end(opts.input);
    else child.stdin?.end();
  });
}

async function chownTree(dir: string, user: MailUser): Promise<void> {
  await fs.lchown(dir, user.uid, user.gid);
  for (const entry of await fs.readdir(dir, { withFileTypes: true })) {
    const p = path.join(dir, entry.name);
    if (entry.isDirectory()) await chownTree(p, user);
    else await fs.lchown(p, user.uid, user.gid);
  }
}

/**
 * Every directory above `dir` must let the mail user through (o+x): Dovecot's mail processes run as that user and
 * open the Maildirs by absolute path. The lab's own data directory is made 0700 by the local runtime, which is why
 * this says so at once, instead of every delivery failing with 451 and a line in Dovecot's log.
 */
async function checkTraversable(dir: string, user: MailUser): Promise<void> {
  let p = path.resolve(dir);
  for (;;) {
    const st = await fs.stat(p);
    const ok = st.uid === user.uid ? (st.mode & 0o100) !== 0 : st.gid === user.gid ? (st.mode & 0o010) !== 0 : (st.mode & 0o001) !== 0;
    if (!ok) {
      throw new Error(
        `Dovecot's mail user ${user.name} (uid ${user.uid}) cannot traverse ${p} (mode ${(st.mode & 0o777).toString(8)}, owner ${st.uid}): ` +
          `the Maildirs under ${dir} would be unreachable. Give it o+x (chmod 711: traverse only, not list).`,
      );
    }
    const parent = path.dirname(p);
    if (parent === p) return;
    p = parent;
  }
}

/**
 * Writes `<dataDir>/dovecot/` (dovecot.conf, the passwd-file, the certificate and key, effective.conf) and the users'
 * homes, and checks the config with doveconf: a config Dovecot refuses fails here, with doveconf's own message.
 */
export async function writeDovecotConfig(config: MailboxNodeConfig, options: DovecotConfigOptions = {}): Promise<DovecotPaths> {
  const paths = dovecotPaths(config.dataDir);
  const mailUser = options.mailUser ?? defaultMailUser();
  const authUser = options.authUser ?? defaultAuthUser();
  if (options.include) await fs.access(options.include).catch(() => {
    throw new Error(`the Dovecot config to include, ${options.include}, cannot be read`);
  });

  await fs.mkdir(config.dataDir, { recursive: true, mode: 0o711 });
  // The node's data directory: traverse only for the mail user (nothing in it is listed or read by others).
  await fs.chmod(config.dataDir, 0o711);
  await checkTraversable(config.dataDir, mailUser);
  await fs.mkdir(paths.dir, { recursive: true, mode: 0o711 });
  await fs.chmod(paths.dir, 0o711);
  await fs.mkdir(paths.baseDir, { recursive: true, mode: 0o755 });
  await fs.mkdir(paths.stateDir, { recursive: true, mode: 0o750 });

  // Users with two-factor authentication log in with app passwords only; the passwd-file has one password per user,
  // so those users get none here (no login) rather than a main password the role contract says is refused.
  const lines: string[] = [];
  for (const u of config.users) if (!u.totpSecret) lines.push(passwdLine(u.address, u.password));
  await fs.rm(paths.passwd, { force: true });
  await fs.writeFile(paths.passwd, lines.join('\n') + '\n', { mode: 0o600 });
  // auth reads it as Dovecot's internal user, not as root.
  await fs.chown(paths.passwd, authUser.uid, authUser.gid);

  if (config.tls) {
    await fs.mkdir(path.dirname(paths.cert), { recursive: true, mode: 0o700 });
    await fs.writeFile(paths.cert, config.tls.cert, { mode: 0o644 });
    await fs.rm(paths.key, { force: true });
    // Read by Dovecot's config process as root before anything drops privileges.
    await fs.writeFile(paths.key, config.tls.key, { mode: 0o600 });
  }

  // Each user's home, owned by the mail user: Dovecot creates the Maildir in it at the first delivery or login.
  for (const u of config.users) {
    const home = path.join(paths.mailRoot, u.address.toLowerCase());
    await fs.mkdir(home, { recursive: true, mode: 0o700 });
    await chownTree(home, mailUser);
  }

  const conf = renderDovecotConf(config, paths, { ...(options.include ? { include: options.include } : {}), mailUser });
  let effective = await checkedConf(paths, conf);
  // The default folders depend on what the user's file defines: known only from doveconf's view of the whole.
  const folders = defaultFoldersSection(effective);
  if (folders) effective = await checkedConf(paths, conf + '\n' + folders);
  await fs.writeFile(paths.effective, effective, { mode: 0o600 });
  return paths;
}

/** Writes dovecot.conf and returns `doveconf -n` of it; a config Dovecot refuses throws with doveconf's message. */
async function checkedConf(paths: DovecotPaths, conf: string): Promise<string> {
  await fs.writeFile(paths.conf, conf, { mode: 0o600 });
  const checked = await runTool('doveconf', ['-n', '-c', paths.conf]);
  if (checked.code !== 0) throw new Error(`doveconf refused ${paths.conf}: ${checked.stderr.trim() || checked.stdout.trim()}`);
  return checked.stdout;
}
