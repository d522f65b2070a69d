// Why a lab with real servers (issue 14) cannot run here, printed as every skip is (`SKIP: [tag] reason`): the
// servers' own checks decide it (Linux, root, their binaries), and no real server runs on the docker runtime yet.
import { dovecotUnavailable } from '../../src/real/dovecot/node.js';
import { postfixMtaUnavailable } from '../../src/real/postfix/mta-node.js';
import { postfixUnavailable } from '../../src/real/postfix/node.js';

/** `postfix-mta`: Postfix as the sending MTA, which also needs Cyrus SASL's saslpasswd2. */
const CHECKS = { postfix: postfixUnavailable, 'postfix-mta': postfixMtaUnavailable, dovecot: dovecotUnavailable } as const;
const NAMES: Record<keyof typeof CHECKS, string> = { postfix: 'Postfix', 'postfix-mta': 'Postfix', dovecot: 'Dovecot' };

/** The reason to skip (printed), or undefined when `servers` can run in this run's runtime. */
export function whyRealServersSkip(tag: string, servers: (keyof typeof CHECKS)[]): string | undefined {
  const skip =
    (process.env.MAILLAB_RUNTIME ?? 'local') === 'docker'
      ? `the docker image holds no ${[...new Set(servers.map((s) => NAMES[s]))].join(' or ')} yet: this lab runs on the local runtime`
      : servers.map((s) => CHECKS[s]()).find((why) => why !== undefined);
  if (skip) process.stderr.write(`SKIP: [${tag}] ${skip}\n`);
  return skip;
}
