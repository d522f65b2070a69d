// The mailbox server: the Maildir store, fed over LMTP (plaintext, inside the lab), read over POP3 (and IMAP), with
// STLS/STARTTLS and pop3s/imaps when the node has `tls`, plus the harness's view of the mailboxes over the control
// channel.
import { DEFAULT_AUTH_THROTTLE, type Endpoint, type MailboxNodeConfig } from '../shared/config.js';
import { LoginThrottle } from '../shared/login-throttle.js';
import type { RoleStarter } from '../shared/node.js';
import type { MailboxContract } from './api.js';
import { startLmtp } from './lmtp.js';
import { startPop3 } from './pop3.js';
import type { MailboxService } from './service.js';
import { MaildirStore } from './store.js';
import { startImap } from './imap/index.js';

export { MaildirStore } from './store.js';
export type { MailboxService, ServiceOptions } from './service.js';

export const startMailbox: RoleStarter<MailboxNodeConfig, MailboxContract> = async (ctx) => {
  const { config } = ctx;
  const store = new MaildirStore({ root: config.dataDir, users: config.users, fsync: config.fsync, hostname: config.hostname });
  // Every user's Maildir exists (and is checked) before the first connection.
  await store.open();

  const services: Record<string, Endpoint> = {};
  const running: MailboxService[] = [];
  const register = (name: string, service: MailboxService) => {
    services[name] = service.endpoint;
    running.push(service);
  };
  const host = config.address;
  // One login throttle for IMAP and POP3: failures on either count against the same account and address.
  const throttle = new LoginThrottle(config.authThrottle ?? DEFAULT_AUTH_THROTTLE);
  try {
    register('lmtp', await startLmtp({ store, ctx, host, port: config.ports.lmtp }));
    if (config.ports.pop3 !== undefined) register('pop3', await startPop3({ store, ctx, host, port: config.ports.pop3, throttle }));
    if (config.ports.imap !== undefined) register('imap', await startImap({ store, ctx, host, port: config.ports.imap, throttle }));
    // Implicit TLS (RFC 8314 §3.3) only on a node with `tls`; the plaintext ports then offer STLS/STARTTLS.
    if (config.tls && config.ports.pop3s !== undefined) register('pop3s', await startPop3({ store, ctx, host, port: config.ports.pop3s, throttle, implicitTls: true }));
    if (config.tls && config.ports.imaps !== undefined) register('imaps', await startImap({ store, ctx, host, port: config.ports.imaps, throttle, implicitTls: true }));
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
    },
    async stop() {
      // Protocol servers first (each lets its work under way finish), then the store's own pending writes.
      await Promise.allSettled(running.map((s) => s.close()));
      await store.close();
    },
  };
};
