// How a real server (Postfix) is made to resolve through the lab DNS only. Postfix asks libc, and libc asks the
// nameservers of /etc/resolv.conf on port 53, so the server must see a resolv.conf naming the lab DNS alone:
// - on the local runtime, a private mount namespace (`unshare --mount`) in which the node's own resolv.conf is
//   bind-mounted over /etc/resolv.conf, so the host's resolver is untouched;
// - in a container of the docker runtime (MAILLAB_CONTAINER=1, set by the runtime), the container's own
//   /etc/resolv.conf is the server's: it is written in place (a mount namespace would need CAP_SYS_ADMIN). Docker
//   bind-mounts that file, so it is overwritten (copyFile: open, truncate, write), never replaced by a rename, which a
//   mount point refuses (EBUSY). src/harness/runtime/real-image.test.ts checks the result in a Postfix container.
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, promises as fs } from 'node:fs';

export const UNSHARE = '/usr/bin/unshare';

/** Whether this process runs inside a container of maillab's docker runtime. */
export function inLabContainer(): boolean {
  return process.env.MAILLAB_CONTAINER === '1';
}

/** Why the lab resolver cannot be given to a server here, or undefined. */
export function labResolverUnavailable(): string | undefined {
  if (inLabContainer()) return undefined;
  return existsSync(UNSHARE) ? undefined : `${UNSHARE} is missing (apt-get install util-linux)`;
}

/** The resolv.conf text naming only the lab DNS (libc asks port 53 of each nameserver). */
export function labResolvConf(resolverAddress: string, server: string): string {
  return `# The only resolver of this ${server} instance: the lab DNS.\nnameserver ${resolverAddress}\noptions timeout:1 attempts:1\n`;
}

/**
 * Spawns `command args…` so that it resolves through `resolvConf` (a file already written) only. Its stdout and
 * stderr are pipes.
 */
export async function spawnWithLabResolver(resolvConf: string, command: string, args: string[]): Promise<ChildProcess> {
  if (inLabContainer()) {
    await fs.copyFile(resolvConf, '/etc/resolv.conf');
    return spawn(command, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  }
  return spawn(UNSHARE, ['--mount', '--propagation', 'private', '--', '/bin/sh', '-c', 'mount --bind "$1" /etc/resolv.conf && shift && exec "$@"', 'sh', resolvConf, command, ...args], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
}
