// Helpers of the Dovecot tests: a mailbox node config, a random loopback address, what they look at in /proc (the
// processes working for a data directory), and a bounded wait for a condition only /proc can tell (nothing notifies
// a process of another's exit unless it is its parent).
import { readdirSync, readFileSync, readlinkSync } from 'node:fs';
import type { MailboxNodeConfig } from '../../shared/config.js';
import { alive } from './node.js';

/** An address of a random 127.x.y.0/24 block (host `.host`), so parallel runs and the harness's labs never collide. */
export function randomLoopback(host: number): string {
  return `127.${100 + Math.floor(Math.random() * 150)}.${Math.floor(Math.random() * 250)}.${host}`;
}

/** A mailbox node's config as the harness would write it (the fields the adapter does not use at their lab values). */
export function mailboxConfig(overrides: Partial<MailboxNodeConfig> & Pick<MailboxNodeConfig, 'address' | 'dataDir'>): MailboxNodeConfig {
  return {
    name: 'mailbox',
    role: 'mailbox',
    hostname: 'mail.receiver.test',
    controlPort: 7070,
    resolver: { host: overrides.address, port: 53 },
    greetingDelayMs: 0,
    fsync: true,
    ports: { lmtp: 24, imap: 143, pop3: 110, imaps: 993, pop3s: 995 },
    users: [{ address: 'bob@receiver.test', password: 'bob-secret' }],
    ...overrides,
  };
}

/**
 * Running processes of a Dovecot under `dir`: the master's (and doveadm's) command line names the config, imap and
 * pop3 processes work in a home under the data directory, login processes are chrooted into base_dir.
 */
export function processesUnder(dir: string): number[] {
  const out: number[] = [];
  const under = (p: string) => p === dir || p.startsWith(dir + '/');
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name) || Number(name) === process.pid) continue;
    try {
      const cmd = readFileSync(`/proc/${name}/cmdline`, 'utf8');
      if ((cmd.includes(dir) || under(readlinkSync(`/proc/${name}/cwd`)) || under(readlinkSync(`/proc/${name}/root`))) && alive(Number(name))) out.push(Number(name));
    } catch {
      // gone meanwhile, or a kernel thread
    }
  }
  return out;
}

/** Checks `condition` each time a short timer fires, up to `ms`; fails saying `what` did not happen. */
export async function eventually(condition: () => boolean | Promise<boolean>, ms: number, what: string): Promise<void> {
  const deadline = performance.now() + ms;
  while (!(await condition())) {
    if (performance.now() > deadline) throw new Error(`not within ${ms} ms: ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}
