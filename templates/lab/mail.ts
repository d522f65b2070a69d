// Your mail lab: the hosts, domains and users your scenarios run against. Written by `maillab init` as a copy of
// maillab's default topology; change it to look like your own mail setup. Every start gives the lab its own
// loopback addresses (local runtime) or its own network (docker runtime), so labs never collide.
//
//   alice ──submission 587──▶ mta (mta.sender.test) ──MX lookup──▶ dns (ns.lab.test)
//                               │ smtp 25
//                               ▼
//                             mx (mx.receiver.test) ──LMTP 24──▶ mailbox (mail.receiver.test) ──POP3/IMAP──▶ bob
//
// Try it by hand: `npx maillab up --lab lab/mail.ts`, then `npx maillab send --from alice@sender.test --to
// bob@receiver.test` and `npx maillab tail --all` in another terminal. `npx maillab check --lab lab/mail.ts` checks
// its DNS (SPF, DKIM, DMARC, MX) as a mail administrator would. Domains must end in .test.
import { defineLab, LAB_RETRY } from 'maillab';

export default defineLab({
  // Part of the lab's id (`mail-1a2b3c`), which `maillab send/queue/tail --lab` take.
  name: 'mail',
  domains: {
    // The sending domain. Its MX is the MTA, so bounces to alice come back to the same mailbox server. Mail
    // authentication as an administrator publishes it: SPF names the MTA, DKIM signs with selector `lab` (a key made
    // at each start), DMARC rejects what fails both; the MX checks all three.
    'sender.test': {
      mx: [{ host: 'mta', preference: 10 }],
      spf: 'v=spf1 a:mta.sender.test -all',
      dkim: [{ selector: 'lab' }],
      dmarc: 'v=DMARC1; p=reject; rua=mailto:dmarc-reports@sender.test',
    },
    // The receiving domain: one MX. A second entry ({ host: 'mx2', preference: 20 }) needs a second mx host below.
    'receiver.test': { mx: [{ host: 'mx', preference: 10 }] },
  },
  // One node per host. `role` says what it runs; add `server: 'postfix'` (mta, mx) or `server: 'dovecot'` (mailbox)
  // to run the real server in that role, and a host `{ role: 'external', ... }` for a server you run yourself.
  hosts: {
    dns: { role: 'dns', hostname: 'ns.lab.test' },
    mailbox: { role: 'mailbox', hostname: 'mail.receiver.test' },
    mx: { role: 'mx', hostname: 'mx.receiver.test', domains: ['receiver.test'], mailbox: 'mailbox' },
    mta: { role: 'mta', hostname: 'mta.sender.test', localDomains: ['sender.test'], mailbox: 'mailbox' },
  },
  // The accounts of the mailbox server; senders log in to the MTA's submission port with the same passwords.
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
  // The MTA's retry schedule, in lab time: seconds, not the hours of a production MTA (PRODUCTION_RETRY).
  retry: LAB_RETRY,
});
