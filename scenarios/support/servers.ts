// Which server plays each role of the lab a scenario runs against (the default lab, or MAILLAB_LAB's), and the one
// place a scenario decides to skip: the whole file when the lab's real servers cannot run here (the servers' own
// checks, scenarios/support/real-servers.ts), one test when what it checks is not what that server does. Every skip
// is printed as `SKIP: [tag] reason`, as real-servers.ts prints its own.
import type { LabDefinition } from '../../src/harness/index.js';
import { labUnderTest } from './lab.js';
import { whyRealServersSkip } from './real-servers.js';

/** Who plays a role: maillab's own server, or a real one (issue 14). */
export type Server = 'maillab' | 'postfix' | 'dovecot';
type Role = 'mta' | 'mx' | 'mailbox';

export interface ScenarioServers {
  /** The lab file under test (MAILLAB_LAB), or `lab/default.ts`. */
  readonly lab: string;
  /** The server of the lab's host of that name (`mta`, `mx`, `mailbox`), as scenarios address them. */
  readonly mta: Server;
  readonly mx: Server;
  readonly mailbox: Server;
  /** Why the whole file skips (already printed): the lab's real servers cannot run here. Undefined: it runs. */
  readonly skip: string | undefined;
  /**
   * For one test: `reason` when `when` holds (printed as a skip, with the test's name), else undefined. Use it for
   * what the scenario is about and the server does not do, never to get past a difference in wording.
   */
  skipWhen(when: boolean, test: string, reason: string): string | undefined;
}

/** The server of a host: `server` where a real one plays it, else maillab's. */
export function serverOf(lab: LabDefinition, host: string): Server {
  const h = lab.hosts[host];
  return h && 'server' in h && h.server ? h.server : 'maillab';
}

/**
 * The real servers a lab runs, as whyRealServersSkip checks them: Postfix as an MTA (`postfix-mta`) also needs Cyrus
 * SASL's saslpasswd2, which Postfix as an MX does not.
 */
function realServers(lab: LabDefinition): Array<'postfix' | 'postfix-mta' | 'dovecot'> {
  const out = new Set<'postfix' | 'postfix-mta' | 'dovecot'>();
  for (const [name, host] of Object.entries(lab.hosts)) {
    const s = serverOf(lab, name);
    if (s !== 'maillab') out.add(s === 'postfix' && host.role === 'mta' ? 'postfix-mta' : s);
  }
  return [...out];
}

/**
 * The servers of the lab under test, for a scenario file tagged `tag` (its file name without `.test.ts`). Call it at
 * the top of the file (`await`), and wrap the file's tests in `describe.skipIf(servers.skip)`.
 */
export async function scenarioServers(tag: string): Promise<ScenarioServers> {
  const lab = process.env.MAILLAB_LAB ?? 'lab/default.ts';
  const definition = await labUnderTest();
  const real = realServers(definition);
  const label = `${tag} @ ${lab}`;
  const skip = real.length ? whyRealServersSkip(label, real) : undefined;
  const role = (r: Role) => serverOf(definition, r);
  return {
    lab,
    mta: role('mta'),
    mx: role('mx'),
    mailbox: role('mailbox'),
    skip,
    skipWhen(when, test, reason) {
      // A file that skips as a whole has said why already.
      if (!when || skip !== undefined) return undefined;
      process.stderr.write(`SKIP: [${label} > ${test}] ${reason}\n`);
      return reason;
    },
  };
}
