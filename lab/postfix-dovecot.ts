// The default lab with real servers (issue 14): Debian's Postfix as receiver.test's MX and Dovecot as the mailbox
// server, behind the roles' contracts, so the scenarios and checkers run against them as against maillab's own.
// maillab's DNS and MTA stay. Local runtime as root, or docker. To test your own configuration, point the MX at your
// files:
//   mx: { ..., server: 'postfix', postfix: { mainCf: 'ops/main.cf' } }, mailbox: { ..., config: 'ops/dovecot.conf' }
// (the lab keeps them, and overrides only what it must: src/real/postfix/README.md, src/real/dovecot/README.md).
// Postfix retries a hand-off the mailbox server did not take on the lab's `retry` schedule unless your main.cf sets
// its own back-off.
import { defineLab } from '../src/harness/index.js';
import dovecotLab from './dovecot.js';

export default defineLab({
  ...dovecotLab,
  name: 'postfix-dovecot',
  hosts: { ...dovecotLab.hosts, mx: { role: 'mx', hostname: 'mx.receiver.test', domains: ['receiver.test'], mailbox: 'mailbox', server: 'postfix' } },
});
