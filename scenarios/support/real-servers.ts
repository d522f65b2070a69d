// Why a lab with real servers (issue 14) cannot run here, printed as every skip is (`SKIP: [tag] reason`). Locally the
// servers' own checks decide it (Linux, root, their binaries); on the docker runtime the servers run in the
// real-server image (src/harness/runtime/real-image.ts), so only whether that image can be built does.
import { dovecotUnavailable } from '../../src/real/dovecot/node.js';
import { postfixMtaUnavailable } from '../../src/real/postfix/mta-node.js';
import { postfixUnavailable } from '../../src/real/postfix/node.js';
import { realImageUnavailable } from '../../src/harness/runtime/real-image.js';

/** `postfix-mta`: Postfix as the sending MTA, which also needs Cyrus SASL's saslpasswd2. */
const CHECKS = { postfix: postfixUnavailable, 'postfix-mta': postfixMtaUnavailable, dovecot: dovecotUnavailable } as const;

/** The reason to skip (printed), or undefined when `servers` can run in this run's runtime. */
export function whyRealServersSkip(tag: string, servers: (keyof typeof CHECKS)[]): string | undefined {
  const skip =
    (process.env.MAILLAB_RUNTIME ?? 'local') === 'docker'
      ? realImageUnavailable()
      : servers.map((s) => CHECKS[s]()).find((why) => why !== undefined);
  if (skip) process.stderr.write(`SKIP: [${tag}] ${skip}\n`);
  return skip;
}
