// The generated dovecot.conf (pure rendering) and the README's list of overrides, kept equal to LAB_OVERRIDES.
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import type { MailboxNodeConfig } from '../../shared/config.js';
import { defaultFoldersSection, dovecotPaths, LAB_OVERRIDES, passwdLine, renderDovecotConf } from './config.js';
import { mailboxConfig } from './testkit.test-helper.js';

const MAIL = { name: 'mail', uid: 8, gid: 8 };

function nodeConfig(overrides: Partial<MailboxNodeConfig> = {}): MailboxNodeConfig {
  return mailboxConfig({ address: '127.44.0.4', dataDir: '/tmp/lab/mailbox', users: [{ address: 'Bob@receiver.test', password: 'bob-secret' }], ...overrides });
}

const TLS = { cert: 'CERT', key: 'KEY', ca: 'CA' };

/** The body of `service <name> { … }` in the rendered text. */
function service(conf: string, name: string): string {
  const m = new RegExp(`^service ${name} \\{\\n([\\s\\S]*?)^\\}`, 'm').exec(conf);
  if (!m) throw new Error(`no service ${name} in:\n${conf}`);
  return m[1]!;
}

describe('renderDovecotConf', () => {
  const paths = dovecotPaths('/tmp/lab/mailbox');

  it("includes the user's file first, then the lab's settings (which win)", () => {
    const conf = renderDovecotConf(nodeConfig({ tls: TLS }), paths, { include: '/etc/site/dovecot.conf', mailUser: MAIL });
    const include = conf.indexOf('!include /etc/site/dovecot.conf');
    expect(include).toBeGreaterThan(-1);
    for (const s of ['base_dir = ', 'listen = 127.44.0.4', 'ssl = yes', 'mail_location = ', 'passdb {']) expect(conf.indexOf(s)).toBeGreaterThan(include);
  });

  it('with tls: the certificate files, TLS 1.2 at least, no plaintext logins; every listener on the node address', () => {
    const conf = renderDovecotConf(nodeConfig({ tls: TLS }), paths, { mailUser: MAIL });
    expect(conf).toContain(`ssl_cert = <${paths.cert}`);
    expect(conf).toContain(`ssl_key = <${paths.key}`);
    expect(conf).toContain('ssl_min_protocol = TLSv1.2');
    expect(conf).toContain('disable_plaintext_auth = yes');
    expect(conf).toContain('protocols = imap pop3 lmtp');
    expect(service(conf, 'imap-login')).toMatch(/inet_listener imaps \{\n\s+address = 127\.44\.0\.4\n\s+port = 993\n\s+ssl = yes/);
    expect(service(conf, 'pop3-login')).toMatch(/inet_listener pop3 \{\n\s+address = 127\.44\.0\.4\n\s+port = 110\n/);
    expect(service(conf, 'lmtp')).toMatch(/port = 24\n/);
    expect(conf).toContain('mail_uid = 8');
    expect(conf).toContain('first_valid_uid = 8');
  });

  it('allowPlaintextAuth and minVersion are the node\'s', () => {
    const conf = renderDovecotConf(nodeConfig({ tls: { ...TLS, allowPlaintextAuth: true, minVersion: 'TLSv1.3' } }), paths, { mailUser: MAIL });
    expect(conf).toContain('disable_plaintext_auth = no');
    expect(conf).toContain('ssl_min_protocol = TLSv1.3');
  });

  it('without tls: ssl = no, plaintext logins allowed, the implicit-TLS listeners off; only the protocols configured', () => {
    const conf = renderDovecotConf(nodeConfig({ ports: { lmtp: 24, imap: 143, imaps: 993 } }), paths, { mailUser: MAIL });
    expect(conf).toContain('ssl = no');
    expect(conf).not.toContain('ssl_cert');
    expect(conf).toContain('disable_plaintext_auth = no');
    expect(conf).toContain('protocols = imap lmtp');
    expect(service(conf, 'imap-login')).toMatch(/inet_listener imaps \{\n\s+address = 127\.44\.0\.4\n\s+port = 0\n/);
    expect(service(conf, 'pop3-login')).toMatch(/inet_listener pop3 \{\n\s+address = 127\.44\.0\.4\n\s+port = 0\n/);
  });

  it('refuses what would break the file or Dovecot: a line break in a value, a base_dir too long for socket paths', () => {
    expect(() => renderDovecotConf(nodeConfig({ hostname: 'x\nssl = no' }), paths, { mailUser: MAIL })).toThrow(/line break/);
    const deep = dovecotPaths('/tmp/' + 'd'.repeat(80));
    expect(() => renderDovecotConf(nodeConfig(), deep, { mailUser: MAIL })).toThrow(/108-byte limit/);
  });
});

describe('passwdLine', () => {
  it('{PLAIN}, the address lower-cased; a colon or a line break is refused', () => {
    expect(passwdLine('Bob@Receiver.test', 'bob secret')).toBe('bob@receiver.test:{PLAIN}bob secret::::::');
    expect(() => passwdLine('bob@receiver.test', 'a:b')).toThrow(/':'/);
    expect(() => passwdLine('bob@receiver.test', 'a\nb')).toThrow(/line break/);
  });
});

describe('README.md', () => {
  it('lists every override of LAB_OVERRIDES, with its reason, and no other', () => {
    const readme = readFileSync(path.join(import.meta.dirname, 'README.md'), 'utf8');
    const section = readme.slice(readme.indexOf('## What the lab overrides'), readme.indexOf('`config.test.ts` keeps'));
    const rows = [...section.matchAll(/^\| `([^`]+)` \| (.*) \|$/gm)].map((m) => ({ setting: m[1]!, why: m[2]! }));
    expect(rows).toEqual(LAB_OVERRIDES.map((o) => ({ setting: o.setting, why: o.why })));
  });
});

describe('defaultFoldersSection', () => {
  it("adds maillab's special-use folders to Dovecot's implicit inbox namespace when the config has no namespace", () => {
    const section = defaultFoldersSection('mail_location = maildir:~/Maildir\nprotocols = imap\n')!;
    expect(section).toMatch(/^namespace inbox \{\n {2}inbox = yes\n/m);
    for (const [name, use] of [['Sent', '\\Sent'], ['Drafts', '\\Drafts'], ['Trash', '\\Trash'], ['Junk', '\\Junk']]) {
      expect(section).toContain(`  mailbox ${name} {\n    special_use = ${use}\n    auto = subscribe\n  }`);
    }
  });

  it("adds only what the user's inbox namespace lacks, by special use or by name, into that namespace", () => {
    // doveconf -n of Debian's 15-mailboxes.conf, trimmed, in a namespace the user named `mine`.
    const effective = [
      'namespace mine {',
      '  inbox = yes',
      '  location = ',
      '  mailbox "Sent Messages" {',
      '    special_use = \\Sent',
      '  }',
      '  mailbox Trash {',
      '    auto = no',
      '  }',
      '  prefix = ',
      '}',
      '',
    ].join('\n');
    const section = defaultFoldersSection(effective)!;
    expect(section).toMatch(/^namespace mine \{\n {2}mailbox Drafts \{/m);
    expect(section).not.toContain('inbox = yes');
    expect(section).not.toContain('mailbox Sent');
    expect(section).not.toContain('mailbox Trash');
    expect(section).toContain('mailbox Junk {');
  });

  it('nothing when every folder is there, or when no namespace holds the INBOX', () => {
    const all = ['namespace inbox {', '  inbox = yes', ...['Sent', 'Drafts', 'Trash', 'Junk'].flatMap((n) => [`  mailbox ${n} {`, `    special_use = \\${n}`, '  }']), '}', ''].join('\n');
    expect(defaultFoldersSection(all)).toBeUndefined();
    expect(defaultFoldersSection('namespace shared {\n  prefix = shared/\n}\n')).toBeUndefined();
  });
});
