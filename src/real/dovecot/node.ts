// Dovecot as the lab's `mailbox` role (issue 14): the same RunningRole<MailboxContract> as maillab's own mailbox
// server (src/mailbox/index.ts), so `runNode`, scenarios, checkers and lab.trace() need not know which one runs.
// Dovecot runs as a child process (`dovecot -c <conf> -F`, its master in the foreground); the adapter is ready when
// every configured port accepts a connection and greets, turns Dovecot's log into the contract's events (log.ts)
// and answers the control operations through doveadm (doveadm.ts).
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import net from 'node:net';
import tls from 'node:tls';
import type { Endpoint, MailboxNodeConfig } from '../../shared/config.js';
import type { NodeContext, RunningRole } from '../../shared/node.js';
import type { MailboxContract, MailboxEvents } from '../../mailbox/api.js';
import { runTool, writeDovecotConfig, type DovecotConfigOptions, type DovecotPaths } from './config.js';
import { Doveadm } from './doveadm.js';
import { smtpFaultsUnsupported } from '../../shared/smtp-faults.js';
import { DovecotEventTranslator, LogTail } from './log.js';

export interface DovecotMailboxOptions extends DovecotConfigOptions {
  /** Default `dovecot` (on PATH). */
  binary?: string;
  /** How long Dovecot may take until every port greets. */
  readyTimeoutMs?: number;
}

const READY_TIMEOUT_MS = 20_000;
// Dovecot's master exits about a second after SIGTERM (its log process lingers); an LMTP process finishing a
// delivery can take a few more. Past these, what is left is killed.
const STOP_GRACE_MS = 5_000;
const KILL_GRACE_MS = 2_000;
const HELPERS = '/usr/lib/dovecot';

/** Why Dovecot cannot run here, or undefined when it can: the tests print this when they skip. */
export function dovecotUnavailable(): string | undefined {
  if (process.platform !== 'linux') return 'Dovecot as a lab node needs Linux';
  if (typeof process.getuid !== 'function' || process.getuid() !== 0) return 'Dovecot as a lab node needs root (its master binds the ports and drops privileges itself)';
  for (const f of ['/usr/sbin/dovecot', '/usr/bin/doveadm', '/usr/bin/doveconf', `${HELPERS}/lmtp`]) {
    if (!existsSync(f)) return `${f} is missing: apt-get install dovecot-core dovecot-lmtpd dovecot-imapd dovecot-pop3d`;
  }
  return undefined;
}

/** The protocol helpers the config needs: a missing one would make Dovecot's master exit at start. */
function checkHelpers(config: MailboxNodeConfig): void {
  const need: Array<[string, string]> = [['lmtp', 'dovecot-lmtpd']];
  if (config.ports.imap !== undefined || config.ports.imaps !== undefined) need.push(['imap', 'dovecot-imapd']);
  if (config.ports.pop3 !== undefined || config.ports.pop3s !== undefined) need.push(['pop3', 'dovecot-pop3d']);
  for (const [helper, pkg] of need) {
    if (!existsSync(`${HELPERS}/${helper}`)) throw new Error(`${HELPERS}/${helper} is missing: the node configures ${helper}; install Debian's ${pkg}`);
  }
}

/** The services the node configures, with the greeting each one must give, as maillab's own server names them. */
function servicesOf(config: MailboxNodeConfig): Array<{ name: string; endpoint: Endpoint; greeting: RegExp; implicitTls: boolean }> {
  const host = config.address;
  const out = [{ name: 'lmtp', endpoint: { host, port: config.ports.lmtp }, greeting: /^220 /, implicitTls: false }];
  if (config.ports.pop3 !== undefined) out.push({ name: 'pop3', endpoint: { host, port: config.ports.pop3 }, greeting: /^\+OK/, implicitTls: false });
  if (config.ports.imap !== undefined) out.push({ name: 'imap', endpoint: { host, port: config.ports.imap }, greeting: /^\* OK/, implicitTls: false });
  if (config.tls && config.ports.pop3s !== undefined) out.push({ name: 'pop3s', endpoint: { host, port: config.ports.pop3s }, greeting: /^\+OK/, implicitTls: true });
  if (config.tls && config.ports.imaps !== undefined) out.push({ name: 'imaps', endpoint: { host, port: config.ports.imaps }, greeting: /^\* OK/, implicitTls: true });
  return out;
}

/** One attempt: connects (over TLS, verified against the lab CA, for implicit TLS) and reads the first line. */
function greets(endpoint: Endpoint, greeting: RegExp, ca: string | undefined, timeoutMs: number): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = ca !== undefined ? tls.connect({ host: endpoint.host, port: endpoint.port, ca }) : net.connect(endpoint);
    let data = '';
    const done = (err?: Error) => {
      clearTimeout(timer);
      socket.destroy();
      if (err) reject(err);
      else resolve(data.split('\r\n')[0]!);
    };
    const timer = setTimeout(() => done(new Error(`no greeting within ${timeoutMs} ms`)), timeoutMs);
    socket.setEncoding('utf8');
    socket.on('data', (chunk: string) => {
      data += chunk;
      if (!data.includes('\r\n')) return;
      const first = data.split('\r\n')[0]!;
      done(greeting.test(first) ? undefined : new Error(`unexpected greeting ${JSON.stringify(first)}`));
    });
    socket.on('error', (err) => done(err));
    socket.on('close', () => done(new Error('closed before greeting')));
  });
}

/**
 * A Dovecot of this node still running from a node process that died without stopping it (before the lifeline
 * could, or killed with its lifeline): Dovecot would refuse to start ("already running") and the ports are taken.
 * It is found by base_dir/master.pid and stopped, its family too, when its command line names this node's config.
 */
async function stopStaleMaster(paths: DovecotPaths, log: (message: string) => void): Promise<void> {
  let pid: number;
  try {
    pid = Number(readFileSync(`${paths.baseDir}/master.pid`, 'utf8').trim());
  } catch {
    return;
  }
  // A pid file that names no master of this node is stale, and must go: Dovecot checks only that its pid is alive,
  // and after a SIGKILL a container's small pids come round again (seen: "already running with PID 20", another
  // process's pid).
  const staleFile = () => rmSync(`${paths.baseDir}/master.pid`, { force: true });
  if (!Number.isInteger(pid) || pid <= 0 || !alive(pid)) return staleFile();
  let cmdline = '';
  try {
    cmdline = readFileSync(`/proc/${pid}/cmdline`, 'utf8');
  } catch {
    return staleFile();
  }
  if (!cmdline.split('\0').includes(paths.conf)) return staleFile(); // a reused pid: not ours
  const family = [pid, ...descendants(pid)];
  log(`dovecot: a master of this node from an earlier run is still running (pid ${pid}): stopping it`);
  for (const p of family) {
    try {
      process.kill(p, 'SIGKILL');
    } catch {
      // already gone
    }
  }
  if (!(await gone(family, KILL_GRACE_MS))) throw new Error(`dovecot: the earlier master ${pid} of this node did not exit after SIGKILL`);
  // Removed: a killed master may stay a zombie (an init that does not reap, in a container), and Dovecot's own check
  // (kill(pid, 0)) would still take it for running.
  rmSync(`${paths.baseDir}/master.pid`, { force: true });
}

/** Every pid whose parent chain leads to `root` (from /proc), root excluded. */
export function descendants(root: number): number[] {
  const parent = new Map<number, number>();
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    try {
      // Field 4 of /proc/<pid>/stat, after the parenthesised command name (which may itself hold spaces).
      const stat = readFileSync(`/proc/${name}/stat`, 'utf8');
      const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
      parent.set(Number(name), ppid);
    } catch {
      // gone meanwhile
    }
  }
  const out: number[] = [];
  const frontier = [root];
  while (frontier.length > 0) {
    const p = frontier.pop()!;
    for (const [pid, ppid] of parent) if (ppid === p) {
      out.push(pid);
      frontier.push(pid);
    }
  }
  return out;
}

/** Whether a process runs (a zombie does not: its exit waits only for a parent, or an init, to reap it). */
export function alive(pid: number): boolean {
  try {
    return !/^\S+ \(.*\) Z/.test(readFileSync(`/proc/${pid}/stat`, 'utf8'));
  } catch {
    return false;
  }
}

/** Resolves when the child has exited, or false after `ms`. */
function exited(child: ChildProcess, ms: number): Promise<boolean> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve(true);
  return new Promise((resolve) => {
    const timer = setTimeout(() => {
      child.off('exit', onExit);
      resolve(false);
    }, ms);
    const onExit = () => {
      clearTimeout(timer);
      resolve(true);
    };
    child.once('exit', onExit);
  });
}

/** Waits for pids to disappear, checking /proc each time a short timer fires; false if some outlive `ms`. */
async function gone(pids: number[], ms: number): Promise<boolean> {
  const deadline = performance.now() + ms;
  while (pids.some(alive)) {
    if (performance.now() > deadline) return false;
    await new Promise((r) => setTimeout(r, 25)); // polling /proc: nothing notifies us of a non-child's exit
  }
  return true;
}

function tailOf(text: string, lines = 15): string {
  return text.trim().split('\n').slice(-lines).join('\n');
}

async function waitReady(config: MailboxNodeConfig, child: ChildProcess, paths: DovecotPaths, output: () => string, timeoutMs: number): Promise<Record<string, Endpoint>> {
  const deadline = performance.now() + timeoutMs;
  const services: Record<string, Endpoint> = {};
  for (const s of servicesOf(config)) {
    let lastError = '';
    for (;;) {
      if (child.exitCode !== null || child.signalCode !== null) {
        const log = existsSync(paths.log) ? readFileSync(paths.log, 'utf8') : '';
        throw new Error(`dovecot exited (${child.exitCode ?? child.signalCode}) before ${s.name} greeted:\n${tailOf(output() + '\n' + log)}`);
      }
      const left = deadline - performance.now();
      if (left <= 0) throw new Error(`dovecot: ${s.name} on ${s.endpoint.host}:${s.endpoint.port} did not greet within ${timeoutMs} ms (last: ${lastError})`);
      try {
        await greets(s.endpoint, s.greeting, s.implicitTls ? config.tls?.ca : undefined, Math.min(left, 5_000));
        break;
      } catch (err) {
        lastError = (err as Error).message;
        // The master binds its listeners just after it starts: a refused connection is tried again shortly.
        await new Promise((r) => setTimeout(r, 50));
      }
    }
    services[s.name] = s.endpoint;
  }
  return services;
}

export async function startDovecotMailbox(ctx: NodeContext<MailboxNodeConfig, MailboxEvents>, options: DovecotMailboxOptions = {}): Promise<RunningRole<MailboxContract>> {
  const { config } = ctx;
  const why = dovecotUnavailable();
  if (why) throw new Error(why);
  checkHelpers(config);
  if (config.lmtpClients) ctx.log(`dovecot: lmtpClients (${config.lmtpClients.join(', ')}) is not enforced: Dovecot's LMTP has no client address list`);
  if (config.accounts) ctx.log('dovecot: the account service (config.accounts) is maillab\'s own and does not run with Dovecot');
  const skipped2fa = config.users.filter((u) => u.totpSecret).map((u) => u.address);
  if (skipped2fa.length) ctx.log(`dovecot: users with two-factor authentication cannot log in (no app passwords with Dovecot's passwd-file): ${skipped2fa.join(', ')}`);

  const paths = await writeDovecotConfig(config, options);
  ctx.log(`dovecot: config ${paths.conf}, effective settings ${paths.effective}, log ${paths.log}`);
  const doveadm = new Doveadm(paths.conf);

  await stopStaleMaster(paths, ctx.log);

  // From the log's current end, before Dovecot starts: every line of this run, none of an earlier one.
  const translator = new DovecotEventTranslator(ctx.events, ctx.log);
  const tail = new LogTail(paths.log, (line) => translator.line(line));
  tail.start();

  let output = '';
  const child = spawn(options.binary ?? 'dovecot', ['-c', paths.conf, '-F'], { stdio: ['ignore', 'pipe', 'pipe'] });
  child.stdout!.setEncoding('utf8').on('data', (s: string) => (output += s));
  child.stderr!.setEncoding('utf8').on('data', (s: string) => (output += s));
  const spawnError = new Promise<never>((_, reject) => child.once('error', (err) => reject(new Error(`dovecot could not be started: ${err.message}`))));
  spawnError.catch(() => undefined);
  let stopping = false;
  child.once('exit', (code, signal) => {
    if (!stopping) ctx.log(`dovecot exited unexpectedly (${code ?? signal}): ${tailOf(output)}`);
  });
  // The lifeline: Dovecot's master does not notice its parent dying, so a node killed with SIGKILL (the harness's
  // kill() fault) would leave Dovecot serving, and the node would not be down. This shell waits on a pipe from us;
  // when our end closes, whatever the way we died, it stops Dovecot.
  // `read` is the shell's own (no child process to leave behind when the lifeline is killed); nothing is ever written,
  // so it returns at end of file only.
  const watchdog = spawn('sh', ['-c', 'read -r _; exec doveadm -c "$1" stop', 'maillab-dovecot-lifeline', paths.conf], { stdio: ['pipe', 'ignore', 'ignore'] });
  watchdog.on('error', (err) => ctx.log(`dovecot: the lifeline process failed: ${err.message}`));
  watchdog.stdin!.on('error', () => undefined);

  let stopped: Promise<void> | undefined;
  const stop = (): Promise<void> => {
    stopped ??= (async () => {
      stopping = true;
      const pid = child.pid;
      const family = pid !== undefined ? descendants(pid) : [];
      if (child.exitCode === null && child.signalCode === null) {
        // The way Dovecot wants to be stopped; then SIGTERM, then SIGKILL, each bounded.
        const asked = await runTool('doveadm', ['-c', paths.conf, 'stop'], { timeoutMs: STOP_GRACE_MS }).catch((err: Error) => ({ code: -1, stdout: '', stderr: err.message }));
        if (asked.code !== 0) ctx.log(`dovecot: doveadm stop failed (${asked.stderr.trim()}); sending SIGTERM`);
        if (!(await exited(child, asked.code === 0 ? STOP_GRACE_MS : 0))) {
          child.kill('SIGTERM');
          if (!(await exited(child, KILL_GRACE_MS))) {
            ctx.log('dovecot: the master did not exit on SIGTERM; SIGKILL');
            child.kill('SIGKILL');
            await exited(child, KILL_GRACE_MS);
          }
        }
      }
      // Dovecot is down: the lifeline is not needed any more. Killed only now, so that a node process that dies during
      // this stop (runNode's forced exit after 5 s) still leaves Dovecot to it.
      watchdog.kill('SIGKILL');
      // Gone before stop() returns: its command line names this node's config, so it would pass for a leftover.
      await exited(watchdog, KILL_GRACE_MS);
      // Children that outlived their master (reparented to init): killed by pid.
      const left = family.filter(alive);
      if (left.length > 0) {
        ctx.log(`dovecot: killing processes left after the master: ${left.join(', ')}`);
        for (const p of left) {
          try {
            process.kill(p, 'SIGKILL');
          } catch {
            // already gone
          }
        }
        if (!(await gone(left, KILL_GRACE_MS))) ctx.log(`dovecot: still running after SIGKILL: ${left.filter(alive).join(', ')}`);
      }
      await tail.stop();
    })();
    return stopped;
  };

  let services: Record<string, Endpoint>;
  try {
    services = await Promise.race([waitReady(config, child, paths, () => output, options.readyTimeoutMs ?? READY_TIMEOUT_MS), spawnError]);
  } catch (err) {
    await stop();
    throw err;
  }

  const known = new Set(config.users.map((u) => u.address.toLowerCase()));
  const user = (args: { user?: unknown }): string => {
    if (typeof args.user !== 'string' || !known.has(args.user.toLowerCase())) throw new Error(`unknown user ${JSON.stringify(args.user)}`);
    return args.user.toLowerCase();
  };
  const mailbox = (args: { mailbox?: unknown }): string => (typeof args.mailbox === 'string' ? args.mailbox : 'INBOX');
  const unsupported = (op: string) => () => {
    throw new Error(`${op}: app passwords are maillab's own account service; the Dovecot mailbox node has none`);
  };

  return {
    services,
    rpc: {
      // async: a bad argument is a rejected promise, as a failed doveadm is.
      mailboxes: async (args) => doveadm.mailboxes(user(args)),
      messages: async (args) => doveadm.messages(user(args), mailbox(args)),
      read: async (args) => {
        if (typeof args.uid !== 'number') throw new Error('read needs a numeric uid');
        return { data: (await doveadm.read(user(args), mailbox(args), args.uid)).toString('base64') };
      },
      deliver: async (args) => {
        if (typeof args.data !== 'string') throw new Error('deliver needs base64 data');
        return doveadm.deliver(user(args), Buffer.from(args.data, 'base64'));
      },
      'app-passwords': unsupported('app-passwords'),
      'revoke-app-password': unsupported('revoke-app-password'),
      ...smtpFaultsUnsupported('Dovecot'),
    },
    stop,
  };
}
