// The IMAP4rev1 server of the mailbox node (RFC 3501 and the extensions listed in session.ts's CAPABILITY),
// on top of the MailStore. Plain TCP with STARTTLS when the node has `tls` (the session wraps its socket), or implicit
// TLS (`implicitTls`, the imaps port, RFC 8314 §3.3).
import net, { type AddressInfo } from 'node:net';
import tls from 'node:tls';
import type { AuthThrottleConfig, Endpoint, MailboxNodeConfig, TlsConfig } from '../../shared/config.js';
import { serverContext, tlsServerOptions } from '../../shared/tls-session.js';
import type { LoginThrottle } from '../../shared/login-throttle.js';
import { LoginGuard, throttleFor } from '../login-guard.js';
import type { EventLog } from '../../shared/events.js';
import type { NodeContext } from '../../shared/node.js';
import type { MailStore } from '../store-api.js';
import { COMMANDS } from './commands.js';
import { MessageCache, RecentRegistry } from './server-state.js';
import { ImapSession, type ImapLimits, type ServerContext } from './session.js';
import type { MailboxEvents } from '../api.js';
import type { Accounts } from '../accounts.js';

export interface ImapOptions {
  store: MailStore;
  host: string;
  /** 0 picks a free port; the bound one is in the returned endpoint. */
  port: number;
  /** Name in the greeting (default: the node's hostname from `ctx`). */
  hostname?: string;
  events?: EventLog<MailboxEvents>;
  log?: (message: string) => void;
  /** The mailbox node's context, as the other mailbox services take it: supplies hostname, events and log. */
  ctx?: NodeContext<MailboxNodeConfig>;
  /** Autologout after this much silence from the client; default 30 minutes (RFC 3501 §5.4). */
  idleTimeoutMs?: number;
  /** Largest message APPEND accepts; default 50 MiB. */
  maxAppendSize?: number;
  /** Longest command line; default 64 KiB. */
  maxLineLength?: number;
  /** The node's login throttle, shared with POP3; default: one of this server's own, from `authThrottle`. */
  throttle?: LoginThrottle;
  /** Login throttling when no `throttle` is given; default: the node's config, else DEFAULT_AUTH_THROTTLE. */
  authThrottle?: AuthThrottleConfig;
  /** The node's account state (app passwords, 2FA), shared with POP3; absent: the store's main passwords only. */
  accounts?: Accounts;
  /** TLS of the server (default: the node's `tls`): STARTTLS, LOGINDISABLED before it unless plaintext logins are allowed. */
  tls?: TlsConfig;
  /** Implicit TLS on this port (imaps, RFC 8314): the handshake comes first. Needs `tls`. */
  implicitTls?: boolean;
}

export interface RunningImap {
  endpoint: Endpoint;
  /** Stops listening; each session finishes the command under way, then gets a BYE. */
  stop(): Promise<void>;
  /** The same as stop(), under the name the mailbox node's services use (MailboxService). */
  close(): Promise<void>;
}

export async function startImap(options: ImapOptions): Promise<RunningImap> {
  const limits: ImapLimits = {
    maxLineLength: options.maxLineLength ?? 64 * 1024,
    maxAppendSize: options.maxAppendSize ?? 50 * 1024 * 1024,
    maxLiteralSize: 64 * 1024,
    idleTimeoutMs: options.idleTimeoutMs ?? 30 * 60 * 1000,
  };
  const events = options.events ?? options.ctx?.events;
  const tlsConfig = options.tls ?? options.ctx?.config.tls;
  if (options.implicitTls && !tlsConfig) throw new Error('imaps needs the node\'s tls configuration');
  const secureContext = tlsConfig ? serverContext(tlsConfig) : undefined;
  const ctx: ServerContext = {
    store: options.store,
    hostname: options.hostname ?? options.ctx?.config.hostname ?? 'localhost',
    ...(events ? { events } : {}),
    log: options.log ?? options.ctx?.log ?? (() => undefined),
    limits,
    guard: new LoginGuard(options.store, throttleFor(options.throttle, options.authThrottle ?? options.ctx?.config.authThrottle), events, options.accounts),
    recent: new RecentRegistry(),
    cache: new MessageCache(options.store),
    commands: COMMANDS,
    ...(tlsConfig ? { tls: { context: secureContext!, allowPlaintextAuth: tlsConfig.allowPlaintextAuth === true } } : {}),
  };
  const sessions = new Set<ImapSession>();
  // One store subscription for the whole server, fanned out to the sessions of the user concerned.
  const unsubscribe = options.store.onChange((change) => {
    for (const session of sessions) {
      if (session.user !== change.user) continue;
      try {
        session.onStoreChange(change);
      } catch (err) {
        ctx.log(`imap: change notification failed: ${(err as Error).message}`);
      }
    }
  });
  const accept = (socket: net.Socket) => {
    const session = new ImapSession(ctx, socket, () => sessions.delete(session));
    sessions.add(session);
    session.start();
  };
  const server = options.implicitTls ? tls.createServer(tlsServerOptions(tlsConfig!), accept) : net.createServer(accept);
  // A failed handshake on imaps (TLS 1.1, a client that does not trust the certificate) only ends that connection.
  server.on('tlsClientError', (err: Error) => ctx.log(`imaps: TLS handshake failed: ${err.message}`));
  await new Promise<void>((resolve, reject) => {
    server.once('error', (err) => reject(new Error(`cannot listen for imap on ${options.host}:${options.port}: ${err.message}`)));
    server.listen(options.port, options.host, () => resolve());
  });
  server.on('error', (err) => ctx.log(`imap server: ${err.message}`));
  const port = (server.address() as AddressInfo).port;

  let stopping: Promise<void> | undefined;
  const stop = () =>
    (stopping ??= (async () => {
      const closed = new Promise<void>((resolve) => server.close(() => resolve()));
      await Promise.all([...sessions].map((session) => session.shutdown()));
      unsubscribe();
      await closed;
    })());
  return { endpoint: { host: options.host, port }, stop, close: stop };
}
