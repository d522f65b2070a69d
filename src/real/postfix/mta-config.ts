// Postfix as the lab's `mta` role (issue 14): main.cf, master.cf, the SASL users, the TLS policy table and the lab CA
// for an MtaNodeConfig, around the user's own main.cf/master.cf. What the lab must decide (where the instance lives
// and logs, its listeners, its local domains and where they are delivered, how it finds MX hosts, its TLS policy, its
// retry schedule and who may submit) is set here, each setting with its reason (README.md lists them for humans); the
// user's other settings are kept as written.
import { execFile } from 'node:child_process';
import { promises as fs } from 'node:fs';
import path from 'node:path';
import type { MtaNodeConfig, TlsPolicyMode } from '../../shared/config.js';
export { postfixRetry } from './config.js';
import { instanceSettings, mailOwner, retrySettings, virtualDelivery, postfixLayout, renderMain, renderMaster, writeInstance, type LabSetting, type PostfixLayout, type PostfixUserConfig } from './config.js';

export const SASLPASSWD2 = '/usr/sbin/saslpasswd2';

/** maillab's MTA default size limit (src/mta/receive.ts): 25 MiB on 25 and 587. */
export const DEFAULT_MTA_MAX_MESSAGE_SIZE = 25 * 1024 * 1024;

/** The MTA's files besides the shared layout: the SASL directory (smtpd.conf, sasldb2), the TLS policy table, the CA. */
export interface MtaLayout extends PostfixLayout {
  saslDir: string;
  sasldb: string;
  tlsPolicy: string;
  caFile: string;
}

export function mtaLayout(dataDir: string): MtaLayout {
  const base = postfixLayout(dataDir);
  const saslDir = path.join(base.dir, 'sasl');
  return { ...base, saslDir, sasldb: path.join(saslDir, 'sasldb2'), tlsPolicy: path.join(base.dir, 'tls_policy'), caFile: path.join(base.dir, 'lab-ca.pem') };
}

/** The TLS policy table (smtp_tls_policy_maps): one line per domain with a mode of its own. */
export function tlsPolicyTable(config: MtaNodeConfig): string {
  return Object.entries(config.tlsPolicy?.domains ?? {})
    .map(([domain, mode]) => `${domain.toLowerCase()} ${postfixTlsLevel(mode)}\n`)
    .join('');
}

/** maillab's modes are Postfix's levels, by design (src/shared/config.ts). */
function postfixTlsLevel(mode: TlsPolicyMode): string {
  return mode;
}

/** The main.cf settings of a lab MTA; every one without `default` replaces the user's. */
export function mtaMainSettings(config: MtaNodeConfig, layout: MtaLayout): LabSetting[] {
  const s = (name: string, value: string, why: string): LabSetting => ({ name, value, why });
  const size = { value: config.limits?.maxMessageSize ?? DEFAULT_MTA_MAX_MESSAGE_SIZE, why: "limits.maxMessageSize (default 25 MiB like maillab's MTA): larger messages get 552 5.3.4" };
  const local = config.localDelivery ? config.localDomains.map((d) => d.toLowerCase()) : [];
  const tls = Boolean(config.tls);
  const domains = Object.keys(config.tlsPolicy?.domains ?? {});
  return [
    ...instanceSettings(config, layout, size, tls),
    s('relay_domains', '', 'the MTA is final destination for its local domains only (relaying is for authenticated users)'),
    s('mynetworks', (config.relayClients ?? []).join(', '), "relayClients (the lab's forwarding MX hosts) may relay on port 25; nobody else (empty: no network is trusted)"),
    s('smtpd_relay_restrictions', 'permit_mynetworks, permit_sasl_authenticated, reject_unauth_destination', 'authenticated users (587) and relayClients relay; anyone else may send only to the local domains'),
    ...virtualDelivery(local, layout, config.localDelivery ? `lmtp:inet:${config.localDelivery.host}:${config.localDelivery.port}` : 'error:5.3.0 no local delivery on this lab MTA', "localDomains with localDelivery: mail for them (the DSNs to the lab's own users among it) goes to the mailbox server"),
    s('local_transport', 'error:5.1.1 local delivery is disabled on the lab MTA', 'no local Unix mailboxes'),
    s('default_transport', 'smtp', 'everything else leaves over SMTP to the MX hosts the lab DNS names'),
    s('relay_transport', 'smtp', 'as default_transport'),
    s('smtp_dns_support_level', 'enabled', 'MX lookups through the lab DNS (the only resolver of the instance: resolv.conf in its mount namespace)'),
    s('smtp_host_lookup', 'dns', 'MX and A records from DNS only, never /etc/hosts'),
    s('smtp_connect_timeout', `${Math.max(1, Math.ceil(config.connectTimeoutMs / 1000))}s`, 'connectTimeoutMs, in whole seconds'),
    s('smtp_tls_security_level', postfixTlsLevel(config.tlsPolicy?.default ?? 'may'), 'tlsPolicy.default (maillab\'s modes none, may, encrypt, verify are Postfix\'s levels)'),
    s('smtp_tls_policy_maps', domains.length ? `texthash:${layout.tlsPolicy}` : '', 'tlsPolicy.domains: a level per destination domain'),
    ...(config.tls
      ? [s('smtp_tls_CAfile', layout.caFile, 'the lab CA: what `verify` checks the MX certificate against (with smtp_tls_verify_cert_match, the MX host name)')]
      : []),
    s('smtp_tls_loglevel', '1', 'the maillog names the TLS version and cipher of each outbound session: the `tls` of the relayed event'),
    ...retrySettings(config.retry, false),
    s('smtpd_sasl_type', 'cyrus', "SMTP AUTH with Cyrus SASL (linked into Postfix's smtpd): no auth daemon to run"),
    s('smtpd_sasl_path', 'smtpd', 'Cyrus reads <cyrus_sasl_config_path>/smtpd.conf'),
    s('cyrus_sasl_config_path', layout.saslDir, "the node's own SASL directory: smtpd.conf names the sasldb the adapter writes (the lab's users)"),
    s('smtpd_sasl_security_options', 'noanonymous', 'no anonymous login'),
    s('smtpd_sasl_local_domain', '', 'users log in with their whole address (alice@sender.test)'),
    s('smtpd_tls_auth_only', config.tls?.allowPlaintextAuth ? 'no' : 'yes', 'AUTH only after STARTTLS unless tls.allowPlaintextAuth (RFC 8314)'),
    s('notify_classes', '', 'no postmaster notices: they would go to postmaster@<myhostname>, outside the local domains'),
  ];
}

/**
 * master.cf of a lab MTA: smtp on the node's address and port 25 (the user's `smtp` options kept), and submission on
 * 587 with STARTTLS required and SMTP AUTH required (the user's `submission` options kept, the lab's last).
 */
export function mtaMasterCf(config: MtaNodeConfig, userMasterCf?: string): string {
  const submission = [
    '-o syslog_name=postfix/submission',
    ...(config.tls && !config.tls.allowPlaintextAuth ? ['-o smtpd_tls_security_level=encrypt'] : []),
    '-o smtpd_sasl_auth_enable=yes',
    '-o smtpd_client_restrictions=permit_sasl_authenticated,reject',
    '-o smtpd_relay_restrictions=permit_sasl_authenticated,reject',
  ];
  return renderMaster(
    [
      { address: config.address, port: config.ports.smtp, userService: /(^|:)(smtp|25)$/ },
      { address: config.address, port: config.ports.submission, userService: /(^|:)(submission|587)$/, options: submission },
    ],
    userMasterCf,
    `the lab MTA ${config.name}`,
  );
}

/** Cyrus SASL's smtpd.conf: passwords from the node's sasldb, PLAIN and LOGIN (over TLS, see smtpd_tls_auth_only). */
export function saslSmtpdConf(layout: MtaLayout): string {
  return ['pwcheck_method: auxprop', 'auxprop_plugin: sasldb', `sasldb_path: ${layout.sasldb}`, 'mech_list: PLAIN LOGIN', ''].join('\n');
}

/** The SMTP AUTH password of a lab user: a 2FA user's mail password is an app password (its first), as on maillab's MTA. */
export function smtpPassword(user: MtaNodeConfig['users'][number]): string | undefined {
  return user.totpSecret ? user.appPasswords?.[0]?.password : user.password;
}

/** Writes the MTA's instance (README.md); the sasldb with saslpasswd2 (sasl2-bin). */
export async function writePostfixMtaConfig(config: MtaNodeConfig, user: PostfixUserConfig = {}): Promise<MtaLayout> {
  const layout = mtaLayout(config.dataDir);
  const local = new Set(config.localDomains.map((d) => d.toLowerCase()));
  const recipients = config.users.filter((u) => local.has(u.address.split('@')[1]!.toLowerCase()));
  await writeInstance(layout, config.tls, {
    mainCf: renderMain(mtaMainSettings(config, layout), user.mainCf ?? '', `the lab MTA ${config.name} (${config.hostname})`),
    masterCf: mtaMasterCf(config, user.masterCf),
    files: [
      { path: layout.recipients, content: recipients.map((u) => `${u.address.toLowerCase()} ok\n`).join(''), mode: 0o644 },
      { path: layout.tlsPolicy, content: tlsPolicyTable(config), mode: 0o644 },
      { path: path.join(layout.saslDir, 'smtpd.conf'), content: saslSmtpdConf(layout), mode: 0o644 },
      ...(config.tls ? [{ path: layout.caFile, content: config.tls.ca, mode: 0o644 }] : []),
    ],
  });
  await writeSasldb(layout, config.users);
  return layout;
}

/**
 * The sasldb of the lab's users, made afresh (a user removed from the lab is gone). Cyrus splits `alice@sender.test`
 * into the user `alice` and the realm `sender.test`, so that is how each is stored. smtpd reads it as `postfix`: the file
 * is root:postfix 0640.
 */
async function writeSasldb(layout: MtaLayout, users: MtaNodeConfig['users']): Promise<void> {
  await fs.rm(layout.sasldb, { force: true });
  for (const u of users) {
    const password = smtpPassword(u);
    if (password === undefined) continue;
    const [local, domain] = u.address.split('@') as [string, string];
    await new Promise<void>((resolve, reject) => {
      const child = execFile(SASLPASSWD2, ['-p', '-c', '-f', layout.sasldb, '-u', domain, local], (err, _out, stderr) =>
        err ? reject(new Error(`saslpasswd2 could not add ${u.address} to ${layout.sasldb}: ${stderr.trim() || err.message}`)) : resolve(),
      );
      child.stdin!.end(password);
    });
  }
  if (!(await fs.stat(layout.sasldb).catch(() => undefined))) return; // no user has a password for SMTP AUTH
  await fs.chown(layout.sasldb, 0, (await mailOwner()).gid);
  await fs.chmod(layout.sasldb, 0o640);
}
