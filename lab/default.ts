// The default lab: alice at sender.test writes to bob and carol at receiver.test.
//
//   alice ──submission 587──▶ mta (mta.sender.test) ──MX lookup──▶ dns (ns.lab.test)
//                               │ smtp 25
//                               ▼
//                             mx (mx.receiver.test) ──LMTP 24──▶ mailbox (mail.receiver.test) ──POP3/IMAP──▶ bob
//
// The MTA is also sender.test's MX: bounces to alice go to the same mailbox server over LMTP. sender.test publishes
// SPF, DKIM and DMARC (p=reject), so the happy path passes all three at the MX.
import { defineLab, LAB_RETRY } from '../src/harness/index.js';

export default defineLab({
  name: 'default',
  domains: {
    // Mail authentication a mail administrator would publish: SPF names the MTA, DKIM signs with selector `lab`
    // (a key made at each start), DMARC rejects what fails both. The MX checks all three.
    'sender.test': {
      mx: [{ host: 'mta', preference: 10 }],
      spf: 'v=spf1 a:mta.sender.test -all',
      dkim: [{ selector: 'lab' }],
      dmarc: 'v=DMARC1; p=reject; rua=mailto:dmarc-reports@sender.test',
    },
    'receiver.test': { mx: [{ host: 'mx', preference: 10 }] },
  },
  hosts: {
    dns: { role: 'dns', hostname: 'ns.lab.test' },
    mailbox: { role: 'mailbox', hostname: 'mail.receiver.test' },
    mx: { role: 'mx', hostname: 'mx.receiver.test', domains: ['receiver.test'], mailbox: 'mailbox' },
    mta: { role: 'mta', hostname: 'mta.sender.test', localDomains: ['sender.test'], mailbox: 'mailbox' },
  },
  users: [
    { address: 'alice@sender.test', password: 'alice-secret' },
    { address: 'bob@receiver.test', password: 'bob-secret' },
    { address: 'carol@receiver.test', password: 'carol-secret' },
    // Two-factor authentication: the main password opens the account service (with a TOTP code) only; mail
    // clients use app passwords.
    { address: 'dave@receiver.test', password: 'dave-secret', totpSecret: 'JBSWY3DPEHPK3PXPMAILLAB2', appPasswords: [{ name: 'laptop', password: 'dave-laptop-app-password' }] },
  ],
  // The transactional HTTP email API of the MTA (https, port 8025): an application sending as sender.test.
  apiKeys: [{ key: 'maillab-default-api-key-sender-test', domains: ['sender.test'] }],
  retry: LAB_RETRY,
});
