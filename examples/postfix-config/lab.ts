// The lab of the configuration regression example (examples/postfix-config/README.md): lab/postfix-dovecot.ts with
// this folder's main.cf as the MX's Postfix configuration. Copy the folder and replace main.cf to test your own.
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { defineLab, type LabDefinition } from '../../src/harness/index.js';
import { parseMainCf } from '../../src/real/postfix/config.js';
import postfixDovecotLab from '../../lab/postfix-dovecot.js';

/** This folder's main.cf, absolute: the lab reads it with path.resolve, i.e. relative to the working directory. */
export const MAIN_CF = fileURLToPath(new URL('./main.cf', import.meta.url));

/**
 * lab/postfix-dovecot.ts with `mainCf` (an absolute path) as the MX's main.cf. The lab decides message_size_limit
 * from the lab-wide `smtpLimits.maxMessageSize` (src/real/postfix/README.md), so the file's own value is passed
 * there; this also sets the lab MTA's limit (smtpLimits is lab-wide).
 */
export function postfixConfigLab(mainCf: string = MAIN_CF, name = 'postfix-config'): LabDefinition {
  const size = parseMainCf(readFileSync(mainCf, 'utf8')).filter((e) => e.name === 'message_size_limit').at(-1)?.value;
  const mx = postfixDovecotLab.hosts.mx;
  if (mx?.role !== 'mx') throw new Error('lab/postfix-dovecot.ts has no mx host');
  return defineLab({
    ...postfixDovecotLab,
    name,
    ...(size !== undefined ? { smtpLimits: { ...postfixDovecotLab.smtpLimits, maxMessageSize: Number(size) } } : {}),
    hosts: { ...postfixDovecotLab.hosts, mx: { ...mx, postfix: { ...mx.postfix, mainCf } } },
  });
}

export default postfixConfigLab();
