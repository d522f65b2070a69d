// Why this machine cannot run the example, or undefined; printed as scenarios/36-real-postfix.test.ts prints its
// reason (`SKIP: [tag] reason`). Postfix's and Dovecot's own checks (root, Linux, their binaries) decide it.
import { postfixUnavailable } from '../../src/real/postfix/node.js';
import { dovecotUnavailable } from '../../src/real/dovecot/node.js';

export function whySkip(tag: string): string | undefined {
  const skip =
    (process.env.MAILLAB_RUNTIME ?? 'local') === 'docker'
      ? 'the docker image holds no Postfix or Dovecot yet: this lab runs on the local runtime'
      : (postfixUnavailable() ?? dovecotUnavailable());
  if (skip) process.stderr.write(`SKIP: [${tag}] ${skip}\n`);
  return skip;
}
