// What the docker runtime's real-server image holds (issue 14): the files of the host's own Debian packages of the
// real servers (`dpkg -L`), the shared libraries of every ELF among them (`ldd`), /bin/sh and the few tools
// postfix-script and the adapters run, and the /etc entries they need (their users and groups, nsswitch.conf,
// services, Postfix's dynamicmaps.cf). No registry, no apt: only what is installed here. images.ts builds it as a
// layer between the node runtime (node and its libraries) and the bundle, so a new bundle does not rebuild it.
//
// This module talks to no engine (no testcontainers), so the scenarios' skip check can ask it whether the image can
// be built at all (`realImageUnavailable`).
import { execFile, execFileSync } from 'node:child_process';
import { existsSync, promises as fs, readFileSync, realpathSync } from 'node:fs';
import path from 'node:path';
import { promisify } from 'node:util';

/**
 * The Debian packages of the real servers, with what they need at run time that `ldd` cannot see (dlopen'd SASL
 * mechanisms). One list: a new server or module (e.g. `sasl2-bin` for a Postfix with a Cyrus sasldb) is one more name.
 * A package that is not installed is left out when `optional`.
 */
export const REAL_SERVER_PACKAGES: readonly { name: string; optional?: boolean }[] = [
  { name: 'postfix' },
  { name: 'dovecot-core' },
  { name: 'dovecot-imapd' },
  { name: 'dovecot-pop3d' },
  { name: 'dovecot-lmtpd' },
  { name: 'libsasl2-modules', optional: true },
  { name: 'sasl2-bin', optional: true },
  // The sasldb auxprop plugin (dlopen'd by saslpasswd2 and smtpd): without it, "no mechanism available".
  { name: 'libsasl2-modules-db', optional: true },
];

/**
 * The programs the servers' scripts and the adapters run besides the packages' own: postfix-script (start-fg,
 * check-fatal, check-warn: sed, awk, grep, find, tr, sort, ls, cmp, …), the Dovecot lifeline (`sh -c read …`).
 */
export const REAL_SERVER_TOOLS: readonly string[] = [
  'sh', 'dash', 'sed', 'awk', 'grep', 'egrep', 'find', 'xargs', 'tr', 'sort', 'uniq', 'ls', 'cmp', 'readlink', 'cat', 'rm', 'touch',
  'mkdir', 'chmod', 'chown', 'chgrp', 'id', 'head', 'tail', 'wc', 'uname', 'sleep', 'env', 'basename', 'dirname', 'ln', 'mv', 'cp',
  'date', 'true', 'false', 'kill', 'ps', 'test',
];

/** Users and groups the servers run as or check for (Debian's): lines copied from the host's /etc/passwd and /etc/group. */
export const REAL_SERVER_USERS: readonly string[] = ['root', 'daemon', 'mail', 'nobody', 'postfix', 'dovecot', 'dovenull'];
export const REAL_SERVER_GROUPS: readonly string[] = ['root', 'daemon', 'mail', 'nogroup', 'postfix', 'postdrop', 'dovecot', 'dovenull', 'sasl', 'ssl-cert'];

/** Host files under /etc copied as they are, when present (postinst-made ones `dpkg -L` does not list). */
export const REAL_SERVER_ETC_FILES: readonly string[] = ['/etc/services', '/etc/protocols', '/etc/postfix/dynamicmaps.cf'];

/** Parts of the packages a server never reads in a lab: documentation, init systems, hooks of other daemons. */
const UNUSED = /^\/(usr\/share\/(doc|man|lintian|bug|info)|etc\/(init\.d|insserv\.conf\.d|network|ppp|resolvconf|rsyslog\.d|ufw|logcheck|systemd)|(usr\/)?lib\/systemd|usr\/lib\/tmpfiles\.d|etc\/default|var\/)(\/|$)/;

/** nsswitch.conf of the image: files for accounts, files then DNS (the lab's, see src/real/lab-resolver.ts) for hosts. */
const NSSWITCH = 'passwd: files\ngroup: files\nshadow: files\nhosts: files dns\nnetworks: files\nprotocols: files\nservices: files\n';

/** One entry of the real-server layer: a host file (followed), a symbolic link, or generated content. */
export type RealLayerEntry =
  | { target: string; source: string; mode: number }
  | { target: string; link: string }
  | { target: string; content: Buffer; mode: number };

/** The packages' state on this host: undefined when the image can be built from them, else why not (printed by a skip). */
export function realImageUnavailable(): string | undefined {
  if (process.env.MAILLAB_REAL_BASE_IMAGE) return undefined; // a user-given image: the engine must have it (checked at build)
  if (process.platform !== 'linux') return 'the real-server image is built from the host\'s Debian packages, on Linux only (elsewhere set MAILLAB_REAL_BASE_IMAGE)';
  if (process.env.MAILLAB_BASE_IMAGE) return 'MAILLAB_BASE_IMAGE is set, so the host\'s binaries do not go into the image: set MAILLAB_REAL_BASE_IMAGE to an image with node, Postfix and Dovecot';
  const missing = REAL_SERVER_PACKAGES.filter((p) => !p.optional && !packageInstalled(p.name)).map((p) => p.name);
  if (missing.length) return `the real-server image is built from the host's packages, and ${missing.join(', ')} ${missing.length === 1 ? 'is' : 'are'} not installed (apt-get install ${missing.join(' ')})`;
  return undefined;
}

function packageInstalled(name: string): boolean {
  try {
    return execFileSync('dpkg-query', ['-W', '-f', '${db:Status-Status}', name], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim() === 'installed';
  } catch {
    return false;
  }
}

/** The files `dpkg -L` lists for a package, without the parts a lab never uses. */
async function packageFiles(name: string): Promise<string[]> {
  const { stdout } = await promisify(execFile)('dpkg', ['-L', name], { encoding: 'utf8' });
  return stdout.split('\n').filter((f) => f.startsWith('/') && !UNUSED.test(f));
}

/** The path of a program on the host (as `command -v` finds it on a root PATH), or undefined. */
function whichTool(tool: string): string | undefined {
  for (const dir of ['/usr/sbin', '/usr/bin', '/sbin', '/bin']) {
    const file = path.join(dir, tool);
    if (existsSync(file)) return file;
  }
  return undefined;
}

/** The lines of an /etc/passwd-style file whose first field is one of `names` (the host's own uids and gids). */
function accountLines(file: string, names: readonly string[]): string {
  const lines = readFileSync(file, 'utf8').split('\n').filter((l) => names.includes(l.split(':')[0]!));
  return lines.join('\n') + '\n';
}

async function isElf(file: string): Promise<boolean> {
  const handle = await fs.open(file, 'r');
  try {
    const head = Buffer.alloc(4);
    await handle.read(head, 0, 4, 0);
    return head.equals(Buffer.from([0x7f, 0x45, 0x4c, 0x46]));
  } finally {
    await handle.close();
  }
}

/** The shared libraries `ldd` lists for any of `files` (one ldd run; a library it cannot find is left out). */
async function librariesOf(files: string[]): Promise<string[]> {
  if (!files.length) return [];
  let stdout: string;
  try {
    ({ stdout } = await promisify(execFile)('ldd', files, { encoding: 'utf8', maxBuffer: 64 * 1024 * 1024 }));
  } catch (err) {
    // ldd exits 1 when one of them is not dynamic (a static helper): the others' lines are still there.
    stdout = (err as { stdout?: string }).stdout ?? '';
    if (!stdout) throw new Error(`ldd failed on the real servers' files: ${(err as Error).message}`);
  }
  const libs = new Set<string>();
  for (const line of stdout.split('\n')) {
    const match = /=>\s*(\/\S+)/.exec(line) ?? /^\s+(\/\S+)\s+\(0x/.exec(line);
    if (match?.[1]) libs.add(match[1]);
  }
  return [...libs].sort();
}

/**
 * What the real-server layer holds, from this host's packages. `exclude`: targets the layers below already have (the
 * node runtime's libraries), left out.
 */
export async function realServerLayer(exclude: ReadonlySet<string> = new Set()): Promise<RealLayerEntry[]> {
  const why = realImageUnavailable();
  if (why) throw new Error(why);
  const entries = new Map<string, RealLayerEntry>();
  const add = (entry: RealLayerEntry) => {
    // /bin and /sbin are links in the image (below): what a package lists there goes to /usr, as on the host.
    const target = entry.target.replace(/^\/(bin|sbin)\//, '/usr/$1/');
    if (!exclude.has(target) && !entries.has(target)) entries.set(target, { ...entry, target });
  };
  const elves: string[] = [];
  const addHostFile = async (file: string) => {
    const stat = await fs.lstat(file).catch(() => undefined);
    if (!stat) return;
    if (stat.isSymbolicLink()) {
      // A directory dpkg lists that is a link on a merged-/usr host (/lib, /bin): the image has its own.
      if ((await fs.stat(file).catch(() => undefined))?.isDirectory()) return;
      return add({ target: file, link: await fs.readlink(file) });
    }
    if (!stat.isFile()) return; // directories come with their files
    add({ target: file, source: file, mode: stat.mode & 0o7777 });
    if (await isElf(file)) elves.push(file);
  };
  for (const pkg of REAL_SERVER_PACKAGES) {
    if (pkg.optional && !packageInstalled(pkg.name)) continue;
    for (const file of await packageFiles(pkg.name)) await addHostFile(file);
  }
  // Merged /usr, as on Debian: /bin and /sbin are links (/lib and /lib64 are directories of the node runtime).
  add({ target: '/bin', link: 'usr/bin' });
  add({ target: '/sbin', link: 'usr/sbin' });
  for (const tool of REAL_SERVER_TOOLS) {
    const found = whichTool(tool);
    if (!found) continue; // e.g. `test`, a shell builtin on a host without coreutils' binary
    const real = realpathSync(found);
    const target = real.replace(/^\/(bin|sbin)\//, '/usr/$1/');
    await addHostFile(real);
    const named = path.posix.join(path.posix.dirname(target), tool);
    if (named !== target) add({ target: named, link: path.posix.basename(target) });
  }
  for (const lib of await librariesOf(elves)) {
    const stat = await fs.stat(lib);
    add({ target: lib, source: lib, mode: stat.mode & 0o7777 });
  }
  for (const file of REAL_SERVER_ETC_FILES) if (existsSync(file)) add({ target: file, source: file, mode: 0o644 });
  add({ target: '/etc/passwd', content: Buffer.from(accountLines('/etc/passwd', REAL_SERVER_USERS)), mode: 0o644 });
  add({ target: '/etc/group', content: Buffer.from(accountLines('/etc/group', REAL_SERVER_GROUPS)), mode: 0o644 });
  add({ target: '/etc/nsswitch.conf', content: Buffer.from(NSSWITCH), mode: 0o644 });
  return [...entries.values()].sort((a, b) => a.target.localeCompare(b.target));
}
