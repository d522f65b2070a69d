// main.cf and master.cf of a Postfix MTA: the lab's settings (listeners, local domains, DNS, TLS policy, retry,
// SMTP AUTH) win, the user's others are kept (runs without Postfix; scenario 37 runs the result).
import { describe, expect, it } from 'vitest';
import type { MtaNodeConfig } from '../../shared/config.js';
import { parseMainCf, renderMain } from './config.js';
import { mtaLayout, mtaMainSettings, mtaMasterCf, postfixRetry, saslSmtpdConf, smtpPassword, tlsPolicyTable } from './mta-config.js';

const config: MtaNodeConfig = {
  name: 'mta',
  role: 'mta',
  hostname: 'mta.sender.test',
  address: '127.9.9.5',
  dataDir: '/data/mta',
  controlPort: 7070,
  resolver: { host: '127.9.9.2', port: 53 },
  greetingDelayMs: 0,
  fsync: true,
  ports: { smtp: 25, submission: 587 },
  localDomains: ['Sender.test'],
  localDelivery: { host: '127.9.9.3', port: 24 },
  users: [
    { address: 'alice@sender.test', password: 'alice-secret' },
    { address: 'dave@receiver.test', password: 'dave-secret', totpSecret: 'JBSWY3DPEHPK3PXP', appPasswords: [{ name: 'laptop', password: 'dave-app' }] },
  ],
  retry: { schedule: [500, 1000, 2000], maxLifetimeMs: 60_000 },
  relayPort: 25,
  connectTimeoutMs: 2000,
  tlsPolicy: { default: 'may', domains: { 'receiver.test': 'verify' } },
  tls: { cert: 'CERT', key: 'KEY', ca: 'CA' },
  server: 'postfix',
};
const layout = mtaLayout(config.dataDir);
const main = (user = '') => new Map(parseMainCf(renderMain(mtaMainSettings(config, layout), user, 'test')).map((e) => [e.name, e.value]));

describe('main.cf of a Postfix MTA', () => {
  it('delivers the local domains over LMTP, relays everything else through MX lookups in the lab DNS, from the node address', () => {
    const s = main();
    expect(s.get('virtual_mailbox_domains')).toBe('sender.test');
    expect(s.get('virtual_transport')).toBe('lmtp:inet:127.9.9.3:24');
    expect(s.get('default_transport')).toBe('smtp');
    expect(s.get('smtp_dns_support_level')).toBe('enabled');
    expect(s.get('smtp_host_lookup')).toBe('dns');
    expect(s.get('smtp_bind_address')).toBe('127.9.9.5');
    expect(s.get('smtpd_relay_restrictions')).toBe('permit_mynetworks, permit_sasl_authenticated, reject_unauth_destination');
    expect(s.get('mynetworks')).toBe('');
  });

  it('maps the TLS policy to smtp_tls_security_level and a policy table, with the lab CA', () => {
    const s = main();
    expect(s.get('smtp_tls_security_level')).toBe('may');
    expect(s.get('smtp_tls_policy_maps')).toBe('texthash:/data/mta/postfix/tls_policy');
    expect(s.get('smtp_tls_CAfile')).toBe('/data/mta/postfix/lab-ca.pem');
    expect(tlsPolicyTable(config)).toBe('receiver.test verify\n');
  });

  it('maps the retry schedule to whole seconds: first delay, last delay, scan interval, lifetime', () => {
    expect(postfixRetry(config.retry)).toEqual({ minimalBackoff: 1, maximalBackoff: 2, queueRunDelay: 1, lifetime: 60 });
    expect(postfixRetry({ schedule: [300_000, 600_000, 4_000_000], maxLifetimeMs: 5 * 86_400_000 })).toEqual({ minimalBackoff: 300, maximalBackoff: 4000, queueRunDelay: 300, lifetime: 432_000 });
    expect(postfixRetry({ schedule: [2000, 100], maxLifetimeMs: 1500 })).toEqual({ minimalBackoff: 2, maximalBackoff: 2, queueRunDelay: 2, lifetime: 2 });
    const s = main();
    expect([s.get('minimal_backoff_time'), s.get('maximal_backoff_time'), s.get('queue_run_delay'), s.get('maximal_queue_lifetime'), s.get('bounce_queue_lifetime')]).toEqual(['1s', '2s', '1s', '60s', '60s']);
  });

  it("keeps the user's settings and size limit, replaces what the lab decides, saying so", () => {
    const text = renderMain(mtaMainSettings(config, layout), 'smtpd_banner = $myhostname ESMTP ours\nmessage_size_limit = 10240000\nmaximal_queue_lifetime = 5d\n', 'test');
    const s = new Map(parseMainCf(text).map((e) => [e.name, e.value]));
    expect(s.get('smtpd_banner')).toBe('$myhostname ESMTP ours');
    expect(s.get('message_size_limit')).toBe('10240000');
    expect(s.get('maximal_queue_lifetime')).toBe('60s');
    expect(text).toContain("# (replaces the user's maximal_queue_lifetime = 5d)");
    expect(main().get('message_size_limit')).toBe(String(25 * 1024 * 1024));
  });

  it('takes SMTP AUTH from a Cyrus sasldb, only after STARTTLS; a 2FA user logs in with an app password', () => {
    const s = main();
    expect([s.get('smtpd_sasl_type'), s.get('cyrus_sasl_config_path'), s.get('smtpd_tls_auth_only')]).toEqual(['cyrus', '/data/mta/postfix/sasl', 'yes']);
    expect(saslSmtpdConf(layout)).toContain('sasldb_path: /data/mta/postfix/sasl/sasldb2');
    expect(config.users.map(smtpPassword)).toEqual(['alice-secret', 'dave-app']);
  });
});

describe('master.cf of a Postfix MTA', () => {
  it("listens for smtp and submission on the node's address; submission requires TLS and AUTH, after the user's options", () => {
    const user = ['smtp inet n - y - - smtpd', 'submission inet n - y - - smtpd', '  -o smtpd_tls_security_level=may', '  -o milter_macro_daemon_name=ORIGINATING', ''].join('\n');
    const lines = mtaMasterCf(config, user).split('\n');
    const at = lines.indexOf('127.9.9.5:587 inet n - n - - smtpd');
    expect(lines).toContain('127.9.9.5:25 inet n - n - - smtpd');
    expect(at).toBeGreaterThan(0);
    const options = lines.slice(at + 1, at + 8);
    expect(options).toEqual([
      '  -o smtpd_tls_security_level=may',
      '  -o milter_macro_daemon_name=ORIGINATING',
      '  -o syslog_name=postfix/submission',
      '  -o smtpd_tls_security_level=encrypt',
      '  -o smtpd_sasl_auth_enable=yes',
      '  -o smtpd_client_restrictions=permit_sasl_authenticated,reject',
      '  -o smtpd_relay_restrictions=permit_sasl_authenticated,reject',
    ]);
  });
});
