// main.cf and master.cf of a Postfix MX: the lab's settings win, the user's others are kept (runs without Postfix;
// postfix.test.ts runs the result).
import { describe, expect, it } from 'vitest';
import { mxTestConfig } from '../../mx/mx.test-helper.js';
import { parseMainCf, postfixLayout, renderMainCf, renderMasterCf } from './config.js';

const config = { ...mxTestConfig({ dataDir: '/data/mx', domains: ['receiver.test'], recipients: ['bob@receiver.test'], lmtpPort: 24, port: 25, address: '127.9.9.3' }), lmtp: { host: '127.9.9.4', port: 24 } };
const layout = postfixLayout(config.dataDir);
const settings = (text: string) => new Map(parseMainCf(text).map((e) => [e.name, e.value]));

describe('main.cf of a Postfix MX', () => {
  it("keeps the user's settings, replaces what the lab decides, and defaults compatibility_level only when unset", () => {
    const user = ['# mine', 'smtpd_banner = $myhostname ESMTP mine', 'relay_domains = elsewhere.test', 'smtpd_client_restrictions = permit_mynetworks,', '    reject_rbl_client rbl.example', 'compatibility_level = 2', ''].join('\n');
    const main = renderMainCf(config, layout, user);
    const s = settings(main);
    expect(s.get('smtpd_banner')).toBe('$myhostname ESMTP mine');
    expect(s.get('smtpd_client_restrictions')).toBe('permit_mynetworks, reject_rbl_client rbl.example');
    expect(s.get('compatibility_level')).toBe('2');
    expect(s.get('relay_domains')).toBe('');
    expect(main).toContain("# (replaces the user's relay_domains = elsewhere.test)");
    expect(s.get('virtual_mailbox_maps')).toBe('texthash:/data/mx/postfix/recipients');
    expect(s.get('virtual_transport')).toBe('lmtp:inet:127.9.9.4:24');
    expect(s.get('queue_directory')).toBe('/data/mx/postfix/spool');
    expect(s.get('smtpd_tls_security_level')).toBe('none'); // no tls in this config
    expect(settings(renderMainCf(config, layout)).get('compatibility_level')).toBe('3.6');
  });

  it("keeps the user's message_size_limit; the lab's limit applies only when main.cf sets none", () => {
    const limited = { ...config, limits: { maxRecipients: 100, maxConnectionsPerClient: 50, maxMessageSize: 52428800 } };
    const main = renderMainCf(limited, layout, 'message_size_limit = 10240000\n');
    expect(settings(main).get('message_size_limit')).toBe('10240000');
    expect(main).not.toContain("replaces the user's message_size_limit");
    expect(settings(renderMainCf(limited, layout, '')).get('message_size_limit')).toBe('52428800');
  });

  it("takes its retry times from the lab's retry (as the MTA does), unless the user's main.cf sets them", () => {
    const retry = { schedule: [500, 1000, 2000], maxLifetimeMs: 60_000 };
    const lab = settings(renderMainCf({ ...config, retry }, layout));
    expect([...lab].filter(([name]) => /backoff_time|queue_run_delay|queue_lifetime/.test(name))).toEqual([
      ['minimal_backoff_time', '1s'],
      ['maximal_backoff_time', '2s'],
      ['queue_run_delay', '1s'],
      ['maximal_queue_lifetime', '60s'],
      ['bounce_queue_lifetime', '60s'],
    ]);
    const main = renderMainCf({ ...config, retry }, layout, 'minimal_backoff_time = 300s\nmaximal_queue_lifetime = 5d\n');
    expect(settings(main).get('minimal_backoff_time')).toBe('300s');
    expect(settings(main).get('maximal_queue_lifetime')).toBe('5d');
    expect(settings(main).get('maximal_backoff_time')).toBe('2s');
    expect(main).not.toContain("replaces the user's minimal_backoff_time");
    // Without a retry schedule from the harness: Postfix's own defaults (none of these written).
    expect(settings(renderMainCf(config, layout)).has('minimal_backoff_time')).toBe(false);
  });

  it('refuses a main.cf line that is not a setting, naming it', () => {
    expect(() => renderMainCf(config, layout, 'smtpd_banner\n')).toThrow('main.cf: not a "name = value" line: "smtpd_banner"');
  });
});

describe('master.cf of a Postfix MX', () => {
  it("listens on the node's address only, keeps the user's smtp options and other services without chroot, adds postlog", () => {
    const user = ['smtp      inet  n       -       y       -       -       smtpd', '  -o smtpd_helo_required=yes', 'submission inet n - y - - smtpd', 'mine      unix  -       -       y       -       -       pipe', '  flags=R user=nobody argv=/bin/true', ''].join('\n');
    const lines = renderMasterCf(config, user).split('\n');
    expect(lines).toContain('127.9.9.3:25 inet n - n - - smtpd');
    expect(lines[lines.indexOf('127.9.9.3:25 inet n - n - - smtpd') + 1]).toBe('  -o smtpd_helo_required=yes');
    expect(lines).toContain('mine unix - - n - - pipe');
    expect(lines).toContain('  flags=R user=nobody argv=/bin/true');
    expect(lines.some((l) => l.startsWith('submission'))).toBe(false);
    expect(lines.filter((l) => /^postlog\s+unix-dgram/.test(l))).toHaveLength(1);
  });
});
