// The labs of the configuration regression example (examples/postfix-config/README.md): lab/postfix-dovecot.ts with
// this folder's main.cf as the MX's Postfix configuration, and lab/postfix-mta.ts with outbound.cf as the sending
// Postfix's. Copy the folder and replace main.cf / outbound.cf to test your own.
import { fileURLToPath } from 'node:url';
import { defineLab, type LabDefinition } from '../../src/harness/index.js';
import postfixDovecotLab from '../../lab/postfix-dovecot.js';
import postfixMtaLab from '../../lab/postfix-mta.js';

/** This folder's main.cf, absolute: the lab reads it with path.resolve, i.e. relative to the working directory. */
export const MAIN_CF = fileURLToPath(new URL('./main.cf', import.meta.url));
/** The company's outbound relay's main.cf (the DSN check). */
export const OUTBOUND_CF = fileURLToPath(new URL('./outbound.cf', import.meta.url));

/**
 * lab/postfix-dovecot.ts with `mainCf` (an absolute path) as the MX's main.cf. Its own message_size_limit is kept (the
 * lab's limit applies only to a main.cf without one: src/real/postfix/README.md).
 */
export function postfixConfigLab(mainCf: string = MAIN_CF, name = 'postfix-config'): LabDefinition {
  const mx = postfixDovecotLab.hosts.mx;
  if (mx?.role !== 'mx') throw new Error('lab/postfix-dovecot.ts has no mx host');
  return defineLab({ ...postfixDovecotLab, name, hosts: { ...postfixDovecotLab.hosts, mx: { ...mx, postfix: { ...mx.postfix, mainCf } } } });
}

/** How long the lab keeps an undeliverable message (maximal_queue_lifetime in the lab): the DSN comes after it. */
export const OUTBOUND_LIFETIME_MS = 3000;

/**
 * lab/postfix-mta.ts with `mainCf` as the sending Postfix's main.cf (the company's outbound relay in alice's place), a
 * retry every second and a queue lifetime of OUTBOUND_LIFETIME_MS (the lab's; the file's 2d would take two days).
 */
export function postfixOutboundLab(mainCf: string = OUTBOUND_CF, name = 'postfix-outbound'): LabDefinition {
  const mta = postfixMtaLab.hosts.mta;
  if (mta?.role !== 'mta') throw new Error('lab/postfix-mta.ts has no mta host');
  return defineLab({ ...postfixMtaLab, name, retry: { schedule: [1000], maxLifetimeMs: OUTBOUND_LIFETIME_MS }, hosts: { ...postfixMtaLab.hosts, mta: { ...mta, postfix: { ...mta.postfix, mainCf } } } });
}

export default postfixConfigLab();
