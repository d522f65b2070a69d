// The default lab with Debian's Postfix as the sender MTA (issue 14): alice submits to Postfix on 587 (STARTTLS,
// SMTP AUTH from a Cyrus sasldb of the lab's users), Postfix finds receiver.test's MX through the lab DNS and relays
// to maillab's MX, which hands the message to maillab's mailbox server; sender.test is local to Postfix (LMTP to the
// same mailbox server), so its bounces reach alice. Local runtime, as root. To test your own configuration:
//   mta: { ..., server: 'postfix', postfix: { mainCf: 'ops/main.cf', masterCf: 'ops/master.cf' } }
// (the lab keeps them and overrides only what it must: src/real/postfix/README.md).
//
// Postfix signs no DKIM (no milter here), and sender.test publishes DMARC p=reject: SPF (`a:mta.sender.test`, aligned
// with the envelope sender alice@sender.test) is what passes DMARC at the MX.
import { defineLab } from '../src/harness/index.js';
import defaultLab from './default.js';

const mta = defaultLab.hosts.mta;
if (mta?.role !== 'mta') throw new Error('lab/default.ts has no mta host');

export default defineLab({
  ...defaultLab,
  name: 'postfix-mta',
  hosts: { ...defaultLab.hosts, mta: { ...mta, server: 'postfix' } },
});
