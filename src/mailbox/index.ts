// The mailbox server: the Maildir store, fed over LMTP (plaintext, inside the lab), read over POP3 (and IMAP), with
// STLS/STARTTLS and pop3s/imaps when the node has `tls`, plus the harness's view of the mailboxes over the control
// channel. Users' app passwords and two-factor authentication (accounts.ts) apply to IMAP and POP3 logins; with
// `config.accounts`, the account service (account-service.ts) lets users manage them and the lab's MTAs check SMTP
// AUTH against them.
import { DEFAULT_AUTH_THROTTLE, type Endpoint, type MailboxNodeConfig } from '../shared/config.js';
import { LoginThrottle } from '../shared/login-throttle.js';
import type { RoleStarter } from '../shared/node.js';
import type { MailboxContract } from './api.js';
import { Accounts } from './accounts.js';
import { startAccountService } from './account-service.js';
import { LoginGuard } from './login-guard.js';
import { startLmtp } from './lmtp.js';
import { startPop3 } from './pop3.js';
import type { MailboxService } from './service.js';
import { MaildirStore } from './store.js';
import { startImap } from './imap/index.js';
import { smtpFaultOperations, smtpFaultsOf } from '../shared/smtp-faults.js';

export { MaildirStore } from './store.js';
export type { MailboxService, ServiceOptions } from './service.js';

export const startMailbox: RoleStarter<MailboxNodeConfig, MailboxContract> = async (ctx) => {
  const { config } = ctx;
  const store = new MaildirStore({ root: config.dataDir, users: config.users, fsync: config.fsync, hostname: config.hostname });
  // Every user's Maildir exists (and is checked) before the first connection.
  await store.open();
  // Before any login: the revocations and app passwords made at run time are in accounts.json.
  const accounts = await Accounts.open({ dataDir: config.dataDir, users: config.users, store, fsync: config.fsync, events: ctx.events, log: ctx.log });

  const services: Record<string, Endpoint> = {};
  const running: MailboxService[] = [];
  const register = (name: string, service: MailboxService) => {
    services[name] = service.endpoint;
    running.push(service);
  };
  const host = config.address;
  // One login throttle for IMAP and POP3: failures on either count against the same account and address.
  const throttle = new LoginThrottle(config.authThrottle ?? DEFAULT_AUTH_THROTTLE);
  // SMTP fault rules of the LMTP server (issue 15).
  const faults = smtpFaultsOf(config);
  try {
    register('lmtp', await startLmtp({ store, ctx, host, port: config.ports.lmtp, faults }));
    if (config.ports.pop3 !== undefined) register('pop3', await startPop3({ store, ctx, host, port: config.ports.pop3, throttle, accounts }));
    if (config.ports.imap !== undefined) register('imap', await startImap({ store, ctx, host, port: config.ports.imap, throttle, accounts }));
    // Implicit TLS (RFC 8314 §3.3) only on a node with `tls`; the plaintext ports then offer STLS/STARTTLS.
    if (config.tls && config.ports.pop3s !== undefined) register('pop3s', await startPop3({ store, ctx, host, port: config.ports.pop3s, throttle, accounts, implicitTls: true }));
    if (config.tls && config.ports.imaps !== undefined) register('imaps', await startImap({ store, ctx, host, port: config.ports.imaps, throttle, accounts, implicitTls: true }));
    if (config.accounts) {
      const guard = new LoginGuard(store, throttle, ctx.events, accounts);
      register('accounts', await startAccountService({ ctx, accounts, guard, host, port: config.accounts.port, ...(config.controlToken ? { controlToken: config.controlToken } : {}) }));
    }
  } catch (err) {
    await Promise.allSettled(running.map((s) => s.close()));
    throw err;
  }

  const user = (args: { user?: unknown }): string => {
    if (typeof args.user !== 'string' || !store.hasUser(args.user)) throw new Error(`unknown user ${JSON.stringify(args.user)}`);
    return args.user.toLowerCase();
  };
  const mailbox = (args: { mailbox?: unknown }): string => (typeof args.mailbox === 'string' ? args.mailbox : 'INBOX');

  return {
    services,
    rpc: {
      mailboxes: (args: { user?: unknown }) => store.listMailboxes(user(args)),
      messages: (args: { user?: unknown; mailbox?: unknown }) => store.messages(user(args), mailbox(args)),
      read: async (args: { user?: unknown; mailbox?: unknown; uid?: unknown }) => {
        if (typeof args.uid !== 'number') throw new Error('read needs a numeric uid');
        return { data: (await store.read(user(args), mailbox(args), args.uid)).toString('base64') };
      },
      // For tests: store a message as if delivered (no LMTP, no events).
      deliver: (args: { user?: unknown; data?: unknown }) => {
        if (typeof args.data !== 'string') throw new Error('deliver needs base64 data');
        return store.deliver(user(args), Buffer.from(args.data, 'base64'));
      },
      'app-passwords': (args: { user?: unknown }) => accounts.list(user(args)),
      'revoke-app-password': (args: { user?: unknown; name?: unknown }) => {
        if (typeof args.name !== 'string') throw new Error("revoke-app-password needs the app password's name");
        return accounts.revoke(user(args), args.name);
      },
      ...smtpFaultOperations(faults),
    },
    async stop() {
      // Protocol servers first (each lets its work under way finish), then the store's own pending writes.
      await Promise.allSettled(running.map((s) => s.close()));
      await store.close();
      await accounts.flush();
    },
  };
};
