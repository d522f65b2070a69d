// The MTA's two SMTP services:
// - submission (RFC 6409, port 587): AUTH PLAIN/LOGIN (RFC 4954) required before MAIL FROM; an authenticated user may
//   send to anyone (relaying), but only from its own address; the message gets a Message-ID and a Date when it lacks
//   them (RFC 6409 §8.2, §8.3). With config.submissionFrom `own-domain` (the default) every From: header mailbox must
//   be in the user's domain (553 5.7.1 at the end of DATA otherwise): what the MTA signs with DKIM is then what its
//   users may claim. A message whose From: domain has a DKIM signer is signed (dkim.ts) before it is queued, so the
//   queued copy, and every retry of it, carries the same signature.
// - smtp (port 25, no AUTH): the MTA as final destination of config.localDomains only; anything else is relaying,
//   refused, except from config.relayClients (Postfix's mynetworks: a forwarding MX of the lab), which may relay
//   anywhere. The null sender is accepted (bounces of mail we sent come back this way). Messages are not modified
//   beyond the trace header (RFC 5321 §6.4 §7.9), so they are not signed either.
// Both add a Received header (RFC 5321 §4.4) and answer 250 only once the message is durably queued.
// Hardening (both services unless said): at most limits.maxRecipients RCPTs per transaction (452 4.5.3) and
// limits.maxConnectionsPerClient connections per client address (421 4.7.0); nothing past the size limit is kept in
// memory (552 5.3.4); a header section with a bare CR or LF is refused (554 5.6.0, shared/message-guard.ts); an
// address literal outside the lab's addresses is refused (550 5.7.1); on 25, unknown users of a domain whose users
// the lab knows are refused at RCPT (550 5.1.1), so no bounce goes to a forged sender (no backscatter); on 587,
// failed logins are throttled per connection (421 4.7.0) and per account and client address (454 4.7.0).
// Logins (issue 13): with config.authService, the mailbox server's account service checks the passwords of users with
// two-factor authentication or app passwords, and any password other than a plain user's main one (app passwords,
// revocations at once; no answer: 454 4.7.0, never a login); a plain user's main password is checked here, so that
// submission does not stop with the mailbox server. Without it, the config's app passwords and main passwords. A 2FA user's main password gets 535 5.7.8 saying that
// an app password is needed.
// Replies carry RFC 3463 enhanced status codes in their text. ENHANCEDSTATUSCODES is not advertised, because
// smtp-server would then prefix its own guess (e.g. 5.1.1 for every 550), wrong for relay denials and the like.
import { timingSafeEqual } from 'node:crypto';
import net from 'node:net';
import type { SMTPServer, SMTPServerAddress, SMTPServerDataStream, SMTPServerSession } from 'smtp-server';
import { createAuthServiceClient, type AuthServiceClient } from './auth-service-client.js';
import { DEFAULT_AUTH_THROTTLE, DEFAULT_SMTP_LIMITS, type MtaNodeConfig, type UserConfig } from '../shared/config.js';
import type { EventLog } from '../shared/events.js';
import { messageIdOf, receivedHeader } from '../shared/headers.js';
import { createSmtpServer, readMessage, sessionTls, smtpTlsOptions } from '../shared/smtp-server.js';
import type { MtaEngine } from './engine.js';
import { missingSubmissionHeaders, signSubmission } from './prepare.js';
import type { DkimSignerView, MailParams, MtaEvents, QueueOrigin } from './api.js';
import { smtpReply, type SmtpReply } from '../shared/smtp-reply.js';
import { has8BitOctets } from '../shared/smtp-client.js';
import { HEADER_PROBLEM_CODE, HEADER_PROBLEM_STATUS, headerSectionProblem } from '../shared/message-guard.js';
import { LoginThrottle } from '../shared/login-throttle.js';
import { insideLab } from '../shared/lab-boundary.js';
import { fromMailboxes, type DkimSigner } from './dkim.js';
import type { SmtpFaults } from '../shared/smtp-faults.js';

/** Largest message accepted by default (config.limits.maxMessageSize overrides it), advertised with SIZE (RFC 1870). Postfix's message_size_limit default is 10 MB. */
export const MESSAGE_SIZE_LIMIT = 25 * 1024 * 1024;

export type Service = 'smtp' | 'submission';
/** The servers of the MTA: `submissions` (implicit TLS, RFC 8314) only when the node has `tls` and a port for it. */
export type Receivers = Record<Service, SMTPServer> & { submissions?: SMTPServer };

export interface ReceiverOptions {
  config: Pick<MtaNodeConfig, 'hostname' | 'localDomains' | 'users' | 'greetingDelayMs' | 'limits' | 'authThrottle' | 'labAddresses' | 'tls' | 'submissionFrom' | 'relayClients' | 'authService' | 'controlToken'> & {
    ports?: Partial<MtaNodeConfig['ports']>;
  };
  engine: MtaEngine;
  /** The node's DKIM signers (shared with the `set-dkim` operation); absent: submissions are not signed. */
  dkim?: DkimSigner;
  events: EventLog<MtaEvents>;
  log(message: string): void;
  sizeLimit?: number;
  /** The node's SMTP fault rules (issue 15), shared by its servers; absent: none. */
  faults?: SmtpFaults;
}

function domainOf(address: string): string {
  const at = address.lastIndexOf('@');
  return at < 0 ? '' : address.slice(at + 1).toLowerCase();
}

/**
 * Whether two addresses name the same mailbox. Domains are case-insensitive (RFC 5321 §2.4); local parts are
 * formally case-sensitive, but only the receiving system may tell, and we are it: our users are case-insensitive.
 */
export function sameAddress(a: string, b: string): boolean {
  return a.toLowerCase() === b.toLowerCase();
}

/** The client's IP address, an IPv4-mapped IPv6 address as the IPv4 address it is. */
function plainAddress(session: Pick<SMTPServerSession, 'remoteAddress'>): string {
  return session.remoteAddress.replace(/^::ffff:(?=\d+\.)/, '');
}

function clientAddress(session: Pick<SMTPServerSession, 'remoteAddress'>): string {
  const ip = plainAddress(session);
  return net.isIPv6(ip) ? `IPv6:${ip}` : ip;
}

/**
 * The relay clients of port 25 (addresses, or networks as `address/prefix`), as a BlockList so that every spelling of
 * an IPv6 address matches. An entry that is neither fails the node's start, naming it.
 */
export function relayClientList(entries: readonly string[] = []): (address: string) => boolean {
  const list = new net.BlockList();
  for (const entry of entries) {
    const [address = '', prefix, extra] = entry.trim().split('/');
    const family = net.isIPv4(address) ? 'ipv4' : net.isIPv6(address) ? 'ipv6' : undefined;
    const bits = prefix === undefined ? undefined : Number(prefix);
    const maxBits = family === 'ipv4' ? 32 : 128;
    if (!family || extra !== undefined || (bits !== undefined && !(Number.isInteger(bits) && bits >= 0 && bits <= maxBits))) {
      throw new Error(`relayClients: ${JSON.stringify(entry)} is not an IP address or an address/prefix network`);
    }
    if (bits === undefined) list.addAddress(address, family);
    else list.addSubnet(address, bits, family);
  }
  return (address) => list.check(address, net.isIPv6(address) ? 'ipv6' : 'ipv4');
}

/**
 * The address an address-literal domain names (`[127.0.0.1]`, `[IPv6:::1]`, RFC 5321 §4.1.3), or undefined for an
 * ordinary domain. (smtp-server already refuses a bracketed domain that is no address with 501.)
 */
export function addressLiteral(domain: string): string | undefined {
  const inner = /^\[(.*)\]$/.exec(domain)?.[1]?.replace(/^ipv6:/i, '');
  return inner !== undefined && net.isIP(inner) ? inner : undefined;
}

/** The user a login names: the full address, or the local part when only one user has it. */
export function findUser(users: UserConfig[], login: string): UserConfig | undefined {
  const wanted = login.trim().toLowerCase();
  const exact = users.find((u) => u.address.toLowerCase() === wanted);
  if (exact || wanted.includes('@')) return exact;
  const byLocal = users.filter((u) => u.address.toLowerCase().split('@')[0] === wanted);
  return byLocal.length === 1 ? byLocal[0] : undefined;
}

/** The account service client when `authService` is set; it needs the lab's control token (its bearer token). */
function authServiceOf(config: ReceiverOptions['config']): AuthServiceClient | undefined {
  if (!config.authService) return undefined;
  if (!config.controlToken) throw new Error('authService is set but controlToken is not: the account service takes the lab\'s control token');
  return createAuthServiceClient({ endpoint: config.authService, token: config.controlToken, ...(config.tls ? { ca: config.tls.ca } : {}) });
}

function passwordMatches(given: string, expected: string): boolean {
  const a = Buffer.from(given);
  const b = Buffer.from(expected);
  return a.length === b.length && timingSafeEqual(a, b);
}

/** Inserts header lines at the end of the header section of `raw` (before the empty line). */
export function appendHeaders(raw: Buffer, lines: string[]): Buffer {
  if (lines.length === 0) return raw;
  let end = raw.indexOf('\r\n\r\n');
  let eol = '\r\n';
  const lf = raw.indexOf('\n\n');
  if (lf >= 0 && (end < 0 || lf < end)) {
    end = lf;
    eol = '\n';
  }
  const text = Buffer.from(lines.map((l) => l + eol).join(''));
  if (raw.subarray(0, 2).equals(Buffer.from('\r\n')) || raw[0] === 0x0a) return Buffer.concat([text, raw]); // no headers at all
  if (end < 0) {
    // Headers only, no body.
    const endsWithEol = raw.length > 0 && raw[raw.length - 1] === 0x0a;
    return Buffer.concat([raw, Buffer.from(endsWithEol ? '' : '\r\n'), text]);
  }
  const at = end + eol.length;
  return Buffer.concat([raw.subarray(0, at), text, raw.subarray(at)]);
}

/**
 * The MAIL FROM parameters of the transaction (RFC 6152 BODY=, RFC 6531 SMTPUTF8), for the queue record, so that
 * relaying passes them on. 8-bit content without BODY=8BITMIME is accepted (RFC 6152 requires the client to declare
 * it, but Postfix and most servers take such mail) and marked `undeclared8bit`: it is relayed as 8BITMIME.
 */
export function mailParamsOf(envelope: SMTPServerSession['envelope'], data: Buffer): MailParams {
  // From the command's own arguments: smtp-server's envelope.bodyType says '7bit' also when nothing was declared.
  const args = envelope.mailFrom ? envelope.mailFrom.args : false;
  const declared = ((args ? args.BODY : undefined) ?? '').toString().toUpperCase();
  const body = declared === '8BITMIME' || declared === '7BIT' ? declared : undefined;
  const smtputf8 = envelope.smtpUtf8 === true || (args !== false && args.SMTPUTF8 !== undefined);
  return {
    ...(body ? { body } : {}),
    ...(smtputf8 ? { smtputf8: true } : {}),
    ...(body !== '8BITMIME' && has8BitOctets(data) ? { undeclared8bit: true } : {}),
  };
}

type ReceivedProtocol = Parameters<typeof receivedHeader>[0]['protocol'];

/** The `with` protocol of the Received header (RFC 3848): ESMTP, plus S for TLS and A for an authenticated client. */
function receivedProtocol(session: SMTPServerSession): ReceivedProtocol {
  if (/^HELO$/i.test(session.openingCommand || '')) return 'SMTP';
  const suffix = `${session.secure ? 'S' : ''}${session.user ? 'A' : ''}`;
  return suffix === 'S' ? 'ESMTPS' : suffix === 'A' ? 'ESMTPA' : suffix === 'SA' ? 'ESMTPSA' : 'ESMTP';
}

export function createReceivers(options: ReceiverOptions): Receivers {
  const receivers: Receivers = { smtp: createReceiver(options, 'smtp'), submission: createReceiver(options, 'submission') };
  if (options.config.tls && options.config.ports?.submissions !== undefined) receivers.submissions = createReceiver(options, 'submission', true);
  return receivers;
}

/**
 * One SMTP service. With the node's `tls`: STARTTLS (RFC 3207) on 25 and 587, or implicit TLS (`implicit`, the
 * `submissions` port, RFC 8314 §3.3), TLS 1.2 at least; AUTH only over TLS unless tls.allowPlaintextAuth.
 * Events name the implicit-TLS port's service `submission` too (it is the same service); their `tls` tells them apart.
 */
function createReceiver(options: ReceiverOptions, service: Service, implicit = false): SMTPServer {
  const { config, engine, events } = options;
  const sizeLimit = options.sizeLimit ?? config.limits?.maxMessageSize ?? MESSAGE_SIZE_LIMIT;
  const limits = { ...DEFAULT_SMTP_LIMITS, ...config.limits };
  const localDomains = new Set(config.localDomains.map((d) => d.toLowerCase()));
  const submission = service === 'submission';
  // Local domains whose users the lab knows: their unknown local parts are refused at RCPT on port 25.
  const knownDomains = new Set(config.users.map((u) => domainOf(u.address)).filter((d) => localDomains.has(d)));
  const knownUsers = new Set(config.users.map((u) => u.address.toLowerCase()));
  const mayRelay = relayClientList(config.relayClients);
  const fromPolicy = config.submissionFrom ?? 'own-domain';
  const throttleConfig = config.authThrottle ?? DEFAULT_AUTH_THROTTLE;
  const throttle = new LoginThrottle(throttleConfig);
  const authService = authServiceOf(config);
  /** Failed logins per connection (the session object lives as long as its connection). */
  const connectionFailures = new WeakMap<SMTPServerSession, number>();

  /** The inbound hop, e.g. `client.test[127.0.0.1] -> mta.sender.test (submission)`. */
  const serviceName = implicit ? 'submissions' : service;
  const hopOf = (session: SMTPServerSession) => `${session.hostNameAppearsAs || 'unknown'}[${clientAddress(session)}] -> ${config.hostname} (${serviceName})`;
  const tlsConfig = config.tls;
  const plaintextAuth = !tlsConfig || tlsConfig.allowPlaintextAuth === true;

  const refuse = (session: SMTPServerSession, stage: string, err: SmtpReply, extra: Record<string, unknown> = {}) => {
    const envelope = session.envelope;
    events.emit({
      kind: 'rejected',
      detail: {
        service,
        stage,
        reply: `${err.responseCode} ${err.message}`,
        from: envelope.mailFrom ? envelope.mailFrom.address : null,
        to: envelope.rcptTo.map((r) => r.address),
        client: clientAddress(session),
        helo: session.hostNameAppearsAs || null,
        hop: hopOf(session),
        ...(session.user ? { user: session.user as string } : {}),
        ...extra,
      },
    });
    return err;
  };

  const server = createSmtpServer({
    greetingDelayMs: config.greetingDelayMs,
    maxConnectionsPerClient: limits.maxConnectionsPerClient,
    ...(options.faults ? { faults: options.faults, onFault: (detail, messageId) => events.emit({ kind: 'fault', ...(messageId ? { messageId } : {}), detail }), faultHop: hopOf } : {}),
    onConnectionRefused(remoteAddress, reply) {
      const client = clientAddress({ remoteAddress });
      events.emit({ kind: 'rejected', detail: { service, stage: 'CONNECT', reply, from: null, to: [], client, helo: null, hop: `unknown[${client}] -> ${config.hostname} (${serviceName})` } });
    },
    onAuthNeedsTls(session, reply) {
      refuse(session, 'AUTH', smtpReply(530, reply.slice(4)));
    },
    onSizeRefused(session, reply) {
      refuse(session, 'MAIL FROM', smtpReply(Number(reply.slice(0, 3)), reply.slice(4)));
    },
    name: config.hostname,
    banner: `maillab MTA (${serviceName})`,
    // Not rejectOversized: smtp-server would then answer its own 552 without an enhanced code; receive() does it.
    size: sizeLimit,
    // Authentication is checked in onMailFrom (not by smtp-server), so refusals get our reply and a `rejected` event.
    authOptional: true,
    ...(submission
      ? // Without TLS, AUTH in plaintext must be allowed (there is nothing else); with it, only if the lab says so.
        { authMethods: ['PLAIN', 'LOGIN'], allowInsecureAuth: plaintextAuth, disabledCommands: tlsConfig ? [] : ['STARTTLS'] }
      : { disabledCommands: tlsConfig ? ['AUTH'] : ['AUTH', 'STARTTLS'] }),
    ...smtpTlsOptions(tlsConfig, implicit),
    authNeedsTls: submission && !plaintextAuth,
    logger: false,
    closeTimeout: 1000,

    onAuth(auth, session, callback) {
      const user = findUser(config.users, auth.username ?? '');
      const client = clientAddress(session);
      // The throttle's account key: the user's address when the login names one, else the login as given.
      const account = user ? user.address.toLowerCase() : (auth.username ?? '').trim().toLowerCase();
      const throttled = (scope: 'account' | 'address', retryAfterMs: number) =>
        events.emit({ kind: 'auth-throttled', detail: { service, user: auth.username ?? null, client, scope, retryAfterMs, hop: hopOf(session) } });
      /** Counts a failure on this connection; past failuresPerConnection the reply is 421 and the connection closes. */
      const failOnConnection = (err: SmtpReply): SmtpReply => {
        const failures = (connectionFailures.get(session) ?? 0) + 1;
        connectionFailures.set(session, failures);
        if (!throttleConfig.enabled || failures < throttleConfig.failuresPerConnection) return err;
        return smtpReply(421, `4.7.0 ${err.message.replace(/^\d\.\d+\.\d+ /, '')}; too many failed logins on this connection (${failures}), closing it`);
      };

      const verdict = throttle.check(account, client);
      if (verdict.throttled) {
        // Refused before the password is looked at, the right one included: otherwise the guessing would go on.
        throttled(verdict.scope, verdict.retryAfterMs);
        const scope = verdict.scope === 'address' ? `from ${client}` : `for ${auth.username ?? ''} from ${client}`;
        return callback(failOnConnection(smtpReply(454, `4.7.0 Too many failed logins ${scope}, try again in ${Math.ceil(verdict.retryAfterMs / 1000)} s`)));
      }
      // RFC 4616: an authorization identity other than the user itself would be acting for someone else; refused.
      const authzOk = !auth.authzid || (user !== undefined && sameAddress(auth.authzid, user.address)) || auth.authzid === auth.username;
      const refuseCredentials = (text: string) => {
        const err = failOnConnection(smtpReply(535, text));
        events.emit({ kind: 'auth-failed', detail: { service, user: auth.username ?? null, method: auth.method, reply: `${err.responseCode} ${err.message}`, client, hop: hopOf(session) } });
        const next = throttle.failure(account, client);
        if (next.throttled) throttled(next.scope, next.retryAfterMs);
        return callback(err);
      };
      if (!user || !authzOk) return refuseCredentials('5.7.8 Authentication credentials invalid');
      const twoFactorRefusal = `5.7.8 Authentication credentials invalid: ${user.address} has two-factor authentication, use an app password`;
      // A user without 2FA or app passwords in the config logs in with the main password here, even while the mailbox
      // server (and its account service) is down: submission does not depend on it. Any other password of such a user
      // may be an app password made at run time, which only the account service knows.
      const plainUser = user.totpSecret === undefined && !(user.appPasswords ?? []).length;
      if (authService && plainUser && passwordMatches(auth.password ?? '', user.password)) {
        throttle.success(account, client);
        return callback(null, { user: user.address });
      }
      if (!authService) {
        // Without the account service, the config's own view: its app passwords (revocations are not seen here), and a
        // 2FA user's main password refused as the service would.
        const password = auth.password ?? '';
        const appPassword = (user.appPasswords ?? []).some((a) => passwordMatches(password, a.password));
        if (!appPassword && passwordMatches(password, user.password) && user.totpSecret !== undefined) return refuseCredentials(twoFactorRefusal);
        if (!appPassword && !passwordMatches(password, user.password)) return refuseCredentials('5.7.8 Authentication credentials invalid');
        throttle.success(account, client);
        return callback(null, { user: user.address });
      }
      // The account service decides (app passwords, 2FA; a revocation there holds here at once). No answer is no
      // login: 454 (RFC 4954 §6), a temporary failure the client retries, not counted against the throttle.
      authService.check({ user: user.address, password: auth.password ?? '', client }).then(
        (verdict) => {
          if (verdict.ok) {
            throttle.success(account, client);
            return callback(null, { user: user.address });
          }
          if (verdict.reason === 'app-password-required') return refuseCredentials(twoFactorRefusal);
          return refuseCredentials('5.7.8 Authentication credentials invalid');
        },
        (err: Error) => {
          events.emit({ kind: 'error', detail: { error: `SMTP AUTH of ${user.address}: ${err.message}`, service } });
          callback(smtpReply(454, '4.7.0 Temporary authentication failure, try again later'));
        },
      );
    },

    onMailFrom(address: SMTPServerAddress, session: SMTPServerSession, callback: (err?: Error | null) => void) {
      const from = address.address;
      if (submission) {
        const user = session.user as string | undefined;
        if (!user) return callback(refuse(session, 'MAIL FROM', smtpReply(530, '5.7.0 Authentication required: AUTH PLAIN or LOGIN first'), { attempted: from }));
        // RFC 6409 §6.1: the MSA checks that the submitter may use the sender address.
        if (!sameAddress(from, user)) {
          return callback(refuse(session, 'MAIL FROM', smtpReply(553, `5.7.1 <${from}>: sender address rejected: not owned by user ${user}`), { attempted: from }));
        }
      }
      callback();
    },

    onRcptTo(address: SMTPServerAddress, session: SMTPServerSession, callback: (err?: Error | null) => void) {
      const rcpt = address.address;
      const domain = domainOf(rcpt);
      if (session.envelope.rcptTo.length >= limits.maxRecipients) {
        return callback(refuse(session, 'RCPT TO', smtpReply(452, `4.5.3 Too many recipients: at most ${limits.maxRecipients} per message, send the rest in another message`), { attempted: rcpt }));
      }
      const literal = addressLiteral(domain);
      if (literal && !insideLab(literal, config.labAddresses)) {
        return callback(refuse(session, 'RCPT TO', smtpReply(550, `5.7.1 <${rcpt}>: address literal ${domain} is outside the lab; ${config.hostname} sends only to the lab's own hosts`), { attempted: rcpt }));
      }
      if (!submission && !localDomains.has(domain) && !mayRelay(plainAddress(session))) {
        return callback(refuse(session, 'RCPT TO', smtpReply(550, `5.7.1 <${rcpt}>: relay access denied (${config.hostname} is not the destination of ${domain || 'that address'}; log in on the submission port to relay)`), { attempted: rcpt }));
      }
      // Port 25 verifies local recipients now, not by a bounce later: a bounce would go to a sender nobody checked.
      if (!submission && knownDomains.has(domain) && !knownUsers.has(rcpt.toLowerCase())) {
        return callback(refuse(session, 'RCPT TO', smtpReply(550, `5.1.1 <${rcpt}>: no such user here`), { attempted: rcpt }));
      }
      callback();
    },

    onData(stream: SMTPServerDataStream, session: SMTPServerSession, callback: (err?: Error | null, message?: string) => void) {
      receive(stream, session).then(
        (text) => callback(null, text),
        (err: Error) => callback(err),
      );
    },
  });
  server.on('error', (err) => options.log(`${service}: ${err.message}`));

  async function receive(stream: SMTPServerDataStream, session: SMTPServerSession): Promise<string> {
    // Nothing past the limit is kept; a client far past it is answered at once and disconnected.
    const received = await readMessage(server, stream, session, sizeLimit, () =>
      refuse(session, 'DATA', smtpReply(552, `5.3.4 message exceeds the size limit of ${sizeLimit} octets`), { size: stream.byteLength }),
    );

    const from = session.envelope.mailFrom ? session.envelope.mailFrom.address : '';
    const to = session.envelope.rcptTo.map((r) => r.address);
    const user = session.user as string | undefined;
    const queueId = engine.queue.newId();
    let data: Buffer = received;
    const problem = headerSectionProblem(data);
    if (problem) throw refuse(session, 'DATA', smtpReply(HEADER_PROBLEM_CODE, `${HEADER_PROBLEM_STATUS} ${problem}`), { size: data.length });
    const mailboxes = submission ? fromMailboxes(data) : [];
    if (submission && fromPolicy === 'own-domain' && user) {
      // Every From: mailbox (RFC 5322 §3.6.2 allows several): any one of them is what a reader or DMARC may take.
      const userDomain = domainOf(user);
      const foreign = mailboxes.find((m) => m.domain !== userDomain);
      if (foreign) {
        const claim = foreign.domain ? `From: domain ${foreign.domain} is not yours` : 'From: mailbox has no domain';
        throw refuse(session, 'DATA', smtpReply(553, `5.7.1 <${foreign.address}>: ${claim} (user ${user} may send From: ${userDomain} only)`), { attempted: foreign.address });
      }
    }
    const now = new Date();
    if (submission) data = appendHeaders(data, missingSubmissionHeaders(data, queueId, config.hostname, now));
    const helo = session.hostNameAppearsAs || 'unknown';
    const tls = sessionTls(server, session);
    const protocol = receivedProtocol(session);
    const trace = receivedHeader({ helo, clientAddress: clientAddress(session), by: config.hostname, protocol, id: queueId, ...(to.length === 1 ? { for: to[0] } : {}), date: now, tls });
    // UTF-8, not latin1: the `for` clause may name an internationalized address (RFC 6531), which latin1 would mangle.
    data = Buffer.concat([Buffer.from(trace, 'utf8'), data]);
    // Signed last, so that the added Message-ID and Date are covered, and before queueing: a retry sends this copy.
    let dkim: DkimSignerView | undefined;
    try {
      ({ data, dkim } = await signSubmission(data, options.dkim, mailboxes[0]?.domain));
    } catch (err) {
      events.emit({ kind: 'error', detail: { service, error: (err as Error).message, from, to } });
      throw refuse(session, 'DATA', smtpReply(451, `4.3.0 local error: ${(err as Error).message}; try again later`));
    }
    const messageId = messageIdOf(data);
    const origin: QueueOrigin = { kind: service === 'submission' ? 'submission' : 'smtp', protocol, helo, client: clientAddress(session), ...(user ? { user } : {}) };

    try {
      const params = mailParamsOf(session.envelope, received);
      await engine.accept({ queueId, from, to, data, ...(messageId ? { messageId } : {}), origin, ...(Object.keys(params).length ? { params } : {}) }, () => {
        const relay = to.some((rcpt) => !localDomains.has(domainOf(rcpt)));
        const detail = submission
          ? { user, from, to, size: data.length, tls, ...(dkim ? { dkim } : {}) }
          : { from, to, size: data.length, client: origin.client, helo, tls, ...(relay ? { relay: true as const } : {}) };
        events.emit({ kind: submission ? 'submitted' : 'received', queueId, ...(messageId ? { messageId } : {}), detail });
      });
    } catch (err) {
      options.log(`${service}: cannot queue a message: ${(err as Error).stack ?? String(err)}`);
      events.emit({ kind: 'error', detail: { service, error: `cannot queue the message: ${(err as Error).message}`, from, to } });
      throw refuse(session, 'DATA', smtpReply(451, '4.3.0 local error: the message could not be queued, try again later'));
    }
    return `2.0.0 Ok: queued as ${queueId}`;
  }

  return server;
}
