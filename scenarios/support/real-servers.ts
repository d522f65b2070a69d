// Why a lab with real servers (issue 14) cannot run here, printed as every skip is (`SKIP: [tag] reason`): the
// servers' own checks decide it (Linux, root, their binaries), and no real server runs on the docker runtime yet.
import { dovecotUnavailable } from '../../src/real/dovecot/node.js';
import { postfixUnavailable } from '../../src/real/postfix/node.js';

const CHECKS = { postfix: postfixUnavailable, dovecot: dovecotUnavailable } as const;

/** The reason to skip (printed), or undefined when `servers` can run in this run's runtime. */
export function whyRealServersSkip(tag: string, servers: (keyof typeof CHECKS)[]): string | undefined {
  const skip =
    (process.env.MAILLAB_RUNTIME ?? 'local') === 'docker'
      ? `the docker image holds no ${servers.map((s) => (s === 'postfix' ? 'Postfix' : 'Dovecot')).join(' or ')} yet: this lab runs on the local runtime`
      : servers.map((s) => CHECKS[s]()).find((why) => why !== undefined);
  if (skip) process.stderr.write(`SKIP: [${tag}] ${skip}\n`);
  return skip;
}
