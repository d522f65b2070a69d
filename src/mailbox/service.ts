// What every protocol server of the mailbox node (LMTP, POP3, IMAP) takes and gives back to startMailbox.
import type { Endpoint, MailboxNodeConfig } from '../shared/config.js';
import type { LoginThrottle } from '../shared/login-throttle.js';
import type { NodeContext } from '../shared/node.js';
import type { MailStore } from './store-api.js';
import type { Accounts } from './accounts.js';

export interface ServiceOptions {
  store: MailStore;
  ctx: NodeContext<MailboxNodeConfig>;
  host: string;
  /** 0 picks a free port (tests); the one actually bound is in the returned endpoint. */
  port: number;
  /** The node's login throttle, shared by IMAP and POP3 (default: one of the service's own, from the config). */
  throttle?: LoginThrottle;
  /** The node's account state (app passwords, 2FA) for IMAP and POP3 logins; absent: the store's main passwords only. */
  accounts?: Accounts;
}

export interface MailboxService {
  /** Where the server listens. */
  endpoint: Endpoint;
  /** Stops accepting, lets the command under way in each session finish, closes the sessions. */
  close(): Promise<void>;
}
