// The default lab with Dovecot as the mailbox server (issue 14): maillab's MTA and MX deliver over LMTP to Debian's
// Dovecot 2.3, which serves IMAP and POP3 from a config the lab writes (src/real/dovecot/). Local runtime, as root.
// Point `config` at your own dovecot.conf to test it: the lab includes it first and overrides only what it must
// (listeners, directories, certificates, users; the list is in src/real/dovecot/README.md).
import { defineLab } from '../src/harness/index.js';
import defaultLab from './default.js';

export default defineLab({
  ...defaultLab,
  name: 'dovecot',
  hosts: { ...defaultLab.hosts, mailbox: { role: 'mailbox', hostname: 'mail.receiver.test', server: 'dovecot' } },
  // Dovecot knows no app passwords or TOTP of maillab's account service: the lab's 2FA user is left out.
  users: defaultLab.users.filter((u) => !u.totpSecret),
});
