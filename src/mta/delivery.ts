// One delivery attempt of a message to some of its recipients: recipients are grouped by destination, one
// transaction per destination, and every recipient comes back with an outcome (delivered / defer / bounce) that
// says where it went, what was said, and in reply to what. Retry decisions are not made here (see scheduler.ts).
//
// Routing:
// - recipients in a local domain (config.localDomains) go over LMTP to config.localDelivery, in one transaction;
// - others: MX lookup in the lab DNS (RFC 5321 §5.1): MX hosts in preference order, the domain's own address when
//   it has no MX (implicit MX), immediate bounce for a null MX (RFC 7505). Each MX address is connected by IP on
//   config.relayPort (or the MX host's own port in config.relayPorts, issue 14: a user's server on 2525), with the MX
//   name as TLS server name; on a failure before the transaction starts (connection,
//   greeting, EHLO) the next address / MX is tried. Once a server answered MAIL FROM, its verdict stands.
// - the transport map (ctx.transport, issue 14), like Postfix's `transport_maps` with `smtp:[host]:port`: a domain
//   listed there goes to that host and port with no MX lookup (no mx-lookup event): the host's own A/AAAA records
//   (ctx.lookupHost) or an IP address. From there on it is an MX like any other: the lab boundary, TLS policy, DANE
//   (at `_<port>._tcp.<host>`, the port the route uses) and the next-address fallback apply. A next hop without an
//   address bounces (550 5.4.4), one whose lookup failed for now defers (451 4.4.3), both naming the route.
// - the lab's own addresses (labAddresses, when given) are the only ones ever connected to: an MX address (or an
//   address literal) outside them is skipped without a connection, as if it did not answer, and the next address /
//   MX is tried; when no address inside the lab is left, the recipients bounce (550 5.4.4) with a reply naming the
//   addresses outside the lab.
// - the outbound TLS policy (ctx.tlsPolicy, per destination domain: none / may / encrypt / verify) goes with every
//   SMTP target; an MX that does not meet `encrypt` / `verify` (no STARTTLS, a certificate that fails verification)
//   is a failure before the transaction: `451 4.7.5` naming the policy, the domain and why, and the next MX is tried.
//   LMTP (local delivery) is never subject to it.
// - MTA-STS (RFC 8461), for a destination without a mode of its own (ctx.mtaSts): a policy in `enforce` mode makes
//   every MX `mta-sts` (like `verify`), and an MX the policy does not list is not connected to; `testing` delivers as
//   the configured mode says and reports (tls-policy-failure, enforced: false) what enforce would have refused. A
//   policy announced but not to be had applies nothing (RFC 8461 §5.1), and is reported.
// - DANE (RFC 7672, ctx.resolveTlsa): usable TLSA records at `_<port>._tcp.<mx host>` (the port connected to) make that MX `dane`
//   (STARTTLS required, the certificate must match a record), over MTA-STS (RFC 8461 §2) and over the configured
//   mode. A TLSA lookup that fails (no answer, SERVFAIL) makes the MX unusable for now: the next is tried, then the
//   recipients are deferred (RFC 7672 §2.2), because an attacker could otherwise suppress the records.
// - MAIL FROM parameters (mailParamsFor), on SMTP and LMTP alike: BODY=8BITMIME when the message is 8-bit (declared,
//   or 8-bit octets found) and the server offers 8BITMIME; to a server that does not, the message goes converted to
//   7-bit (downgrade.ts, as Postfix does; a DKIM body signature breaks then), or bounces 554 5.6.3 when it cannot be
//   converted. SMTPUTF8 when an address or a header is UTF-8 and the server offers it; when it does not, the
//   recipients bounce 553 5.6.7 (RFC 6531 §3.2: no downgrade of internationalized addresses exists).
import net from 'node:net';
import { describeTarget, has8BitOctets, needsSmtpUtf8, SmtpClientError, type MessageSource, type RecipientResult, type SendOptions, type SendResult, type SmtpEnvelope, type SmtpTarget } from '../shared/smtp-client.js';
import { convertTo7bit } from './downgrade.js';
import type { Endpoint, OutboundTlsPolicy, TlsPolicyConfig, TlsPolicyMode, TransportRoute } from '../shared/config.js';
import { describeTlsa, usableTlsa, type TlsaAssociation } from '../shared/dane.js';
import { insideLab } from '../shared/lab-boundary.js';
import type { TlsRequiredFailure } from '../shared/smtp-client.js';
import type { TlsInfo } from '../shared/tls-session.js';
import { classifyClientError, classifyRecipient, tryNextHost, type DeliveryAction } from './classify.js';
import type { MxResolution } from '../dns/api.js';
import type { MailParams, MtaEvents, TlsFailureType } from './api.js';
import { mxAllowedByPolicy, type MtaStsLookup, type MtaStsPolicy } from './mta-sts.js';


/** What delivery needs from an SMTP/LMTP client (SmtpClientPool fits). */
export interface MailSender {
  send(target: SmtpTarget, envelope: SmtpEnvelope, message: MessageSource, options?: SendOptions): Promise<SendResult>;
}

export interface DeliveryContext {
  /** Our host name, the start of every hop. */
  hostname: string;
  localDomains: string[];
  localDelivery?: Endpoint;
  relayPort: number;
  /** The port per MX host name (lower case), over `relayPort` (MtaNodeConfig.relayPorts). */
  relayPorts?: Readonly<Record<string, number>>;
  /** The transport map: a destination domain (lower case) → its next hop and port, no MX lookup (MtaNodeConfig.transport). */
  transport?: Readonly<Record<string, TransportRoute>>;
  /**
   * A transport next hop's own addresses (A/AAAA, no MX lookup) through the lab DNS, answered as an implicit MX of
   * that host (or none / temporary); absent: only IP-address next hops can be used.
   */
  lookupHost?(host: string): Promise<MxResolution>;
  /** The only addresses delivery may connect to (the lab's hosts); absent: any (a hand-started node). */
  labAddresses?: readonly string[];
  /** Outbound TLS per destination domain (SMTP only, LMTP stays plaintext); absent: `may` everywhere. */
  tlsPolicy?: TlsPolicyConfig;
  lookupMx(domain: string): Promise<MxResolution>;
  /** MTA-STS policies of destinations (MtaStsPolicies fits); absent: MTA-STS is not used. */
  mtaSts?: { lookup(domain: string): Promise<MtaStsLookup> };
  /** TLSA records at a name through the lab DNS (errors with node:dns codes); absent: DANE is not used. */
  resolveTlsa?: (name: string) => Promise<TlsaAssociation[]>;
  smtp: MailSender;
  lmtp: MailSender;
  /** Emits an event about the message being delivered (the caller adds messageId and queueId). */
  emit<K extends DeliveryEventKind>(kind: K, detail: MtaEvents[K]): void;
}

/** The events a delivery attempt emits itself (the engine emits the outcomes). */
export type DeliveryEventKind = 'mx-lookup' | 'connect' | 'connect-failed' | 'mta-sts' | 'tlsa-lookup' | 'tls-policy-failure';

export interface RecipientOutcome {
  address: string;
  action: DeliveryAction;
  /** RFC 3463 status. */
  status: string;
  code?: number;
  /** The reply that decided: the server's, or one we made up for a local decision (null MX, unknown domain...). */
  reply: string;
  /** Whether `reply` came from a remote server (vs. our own verdict). */
  remote: boolean;
  /** This MTA → where the recipient was tried, e.g. `mta.sender.test -> mx.receiver.test[127.0.0.7]:25`. */
  hop: string;
  /** The command the reply answered, e.g. `RCPT TO:<bob@receiver.test>`. */
  command?: string;
  /** Host name of the remote server (the MX) when one replied. */
  remoteMta?: string;
  /** Where it went (delivered) or was last tried. */
  host?: string;
  port?: number;
  mx?: string;
  via: 'smtp' | 'lmtp' | 'none';
  /** The transaction ran on a cached session (no new connection). */
  reused?: boolean;
  /** The MAIL FROM parameters sent, e.g. `['BODY=8BITMIME']`. */
  mailParams?: string[];
  /** The message went converted to 7-bit: the server does not offer 8BITMIME. */
  converted7bit?: boolean;
  /** TLS of the session (STARTTLS): version and cipher; null in plaintext. Absent for local verdicts. */
  tls?: TlsInfo | null;
  /** The outbound TLS policy applied to the destination (SMTP relaying with a configured policy, MTA-STS or DANE). */
  tlsPolicy?: OutboundTlsPolicy;
  /** One line for humans: what happened, where, with which reply. */
  description: string;
}

export interface DeliveryMessage {
  queueId: string;
  from: string;
  /** The MAIL FROM parameters it was received with (absent: records from before they were kept, bounces, the API). */
  params?: MailParams;
}

/**
 * The envelope parameters of a transaction: `8BITMIME` when the sender declared it or the content has 8-bit octets
 * anyway (undeclared 8-bit, or a record without parameters), SMTPUTF8 when the message needs it (needsSmtpUtf8;
 * a declared SMTPUTF8 alone does not make a message need it), and the 7-bit copy for a server without 8BITMIME.
 */
export function mailParamsFor(message: DeliveryMessage, rcpts: string[], data: Buffer): { envelope: SmtpEnvelope; options: SendOptions } {
  const eightBit = message.params?.body === '8BITMIME' || has8BitOctets(data);
  const smtputf8 = needsSmtpUtf8({ from: message.from, to: rcpts }, data);
  return {
    envelope: { from: message.from, to: rcpts, ...(eightBit ? { body: '8BITMIME' as const } : {}), ...(smtputf8 ? { smtputf8: true } : {}) },
    options: eightBit ? { sevenBit: () => convertTo7bit(data) } : {},
  };
}

function domainOf(address: string): string {
  const at = address.lastIndexOf('@');
  return at < 0 ? '' : address.slice(at + 1).toLowerCase();
}

/** The port an MX host is connected to: its own in `relayPorts` (by host name), else `relayPort`. */
export function relayPortOf(ctx: Pick<DeliveryContext, 'relayPort' | 'relayPorts'>, exchange: string): number {
  return ctx.relayPorts?.[exchange.toLowerCase().replace(/\.$/, '')] ?? ctx.relayPort;
}

/**
 * Where a transport route goes (no MX lookup): an IP address as it is, a host name by its own address records. A
 * lookup that throws is temporary, as an MX lookup's would be.
 */
async function transportResolution(ctx: DeliveryContext, route: TransportRoute): Promise<MxResolution> {
  if (net.isIP(route.host)) return { kind: 'implicit', hosts: [{ exchange: route.host, priority: 0, addresses: [route.host] }] };
  if (!ctx.lookupHost) return { kind: 'temporary', error: `no resolver to look up ${route.host}` };
  try {
    return await ctx.lookupHost(route.host);
  } catch (err) {
    return { kind: 'temporary', error: (err as Error).message };
  }
}

function oneLine(text: string): string {
  return text.replace(/\r?\n/g, ' / ');
}

/** The outbound TLS policy for mail to `domain`: its own entry, else the default; `may` without a policy. */
export function tlsPolicyFor(policy: TlsPolicyConfig | undefined, domain: string): TlsPolicyMode {
  if (!policy) return 'may';
  return policy.domains[domain.toLowerCase()] ?? policy.default;
}

/**
 * A session refused because the policy required TLS (no STARTTLS, or a certificate that failed `verify`): a
 * temporary failure of that MX (`451 4.7.5`, as Postfix), whose text names the policy, the domain and the reason.
 */
function tlsPolicyError(err: SmtpClientError, mode: OutboundTlsPolicy, domain: string, target: string): SmtpClientError {
  const why = err.tlsRequired!.reason;
  return new SmtpClientError({ stage: err.stage, target, command: err.command, description: `TLS required by policy ${mode} for ${domain}, but ${why}`, code: 451, enhanced: '4.7.5', tlsRequired: err.tlsRequired! });
}

/** Delivers `data` to `recipients`, all destinations in parallel; one outcome per recipient. */
export async function deliver(ctx: DeliveryContext, message: DeliveryMessage, recipients: string[], data: Buffer): Promise<RecipientOutcome[]> {
  const local = new Set(ctx.localDomains.map((d) => d.toLowerCase()));
  const groups = new Map<string, string[]>();
  for (const rcpt of recipients) {
    const domain = domainOf(rcpt);
    const key = local.has(domain) ? '' : domain; // '' = local delivery, one LMTP transaction for all local domains
    groups.set(key, [...(groups.get(key) ?? []), rcpt]);
  }
  const results = await Promise.all(
    [...groups].map(([domain, rcpts]) => (domain === '' ? deliverLocal(ctx, message, rcpts, data) : deliverRemote(ctx, message, domain, rcpts, data))),
  );
  return results.flat();
}

function localVerdict(rcpts: string[], action: DeliveryAction, code: number, status: string, text: string, hop: string): RecipientOutcome[] {
  return rcpts.map((address) => ({
    address,
    action,
    status,
    code,
    reply: `${code} ${status} <${address}>: ${text}`,
    remote: false,
    hop,
    via: 'none',
    description: `${hop}: ${text}`,
  }));
}

async function deliverLocal(ctx: DeliveryContext, message: DeliveryMessage, rcpts: string[], data: Buffer): Promise<RecipientOutcome[]> {
  const endpoint = ctx.localDelivery;
  if (!endpoint) {
    return localVerdict(rcpts, 'defer', 451, '4.3.5', 'local domain, but no local delivery (LMTP) is configured', `${ctx.hostname} (local delivery)`);
  }
  const target: SmtpTarget = { host: endpoint.host, port: endpoint.port };
  const hop = `${ctx.hostname} -> LMTP ${describeTarget(target)}`;
  // No Remote-MTA for LMTP: DSNs name it as `dns; <host name>`, and the mailbox server is known only by address.
  const where: Where = { target: describeTarget(target), host: endpoint.host, port: endpoint.port };
  ctx.emit('connect', { host: endpoint.host, port: endpoint.port, via: 'lmtp', hop });
  try {
    const { envelope, options } = mailParamsFor(message, rcpts, data);
    const result = await ctx.lmtp.send(target, envelope, data, options);
    return result.recipients.map((r) => fromRecipientResult(r, hop, 'lmtp', where, result));
  } catch (err) {
    return fromError(err, rcpts, hop, 'lmtp', where);
  }
}

async function deliverRemote(ctx: DeliveryContext, message: DeliveryMessage, domain: string, rcpts: string[], data: Buffer): Promise<RecipientOutcome[]> {
  const route = ctx.transport?.[domain];
  const lookupHop = route ? `${ctx.hostname} (transport for ${domain}: [${route.host}]:${route.port})` : `${ctx.hostname} (MX lookup for ${domain})`;
  let resolution: MxResolution;
  const literal = /^\[(?:ipv6:)?([^\]]+)\]$/i.exec(domain)?.[1];
  if (literal && net.isIP(literal)) {
    // An address literal (RFC 5321 §4.1.3): no DNS, straight to that address.
    resolution = { kind: 'implicit', hosts: [{ exchange: literal, priority: 0, addresses: [literal] }] };
  } else if (route) {
    // The transport map: the route's host and port, the domain's MX records are not asked for.
    resolution = await transportResolution(ctx, route);
    if (resolution.kind === 'none' || resolution.kind === 'null-mx') {
      const why = resolution.kind === 'none' ? resolution.error : 'no address';
      return localVerdict(rcpts, 'bounce', 550, '5.4.4', `the transport map sends ${domain} to [${route.host}]:${route.port}, which has no address: ${why}`, lookupHop);
    }
    if (resolution.kind === 'temporary') {
      return localVerdict(rcpts, 'defer', 451, '4.4.3', `the transport map sends ${domain} to [${route.host}]:${route.port}, which cannot be resolved now, will retry: ${resolution.error}`, lookupHop);
    }
  } else {
    try {
      resolution = await ctx.lookupMx(domain);
    } catch (err) {
      resolution = { kind: 'temporary', error: (err as Error).message };
    }
    ctx.emit('mx-lookup', { domain, result: summarize(resolution) });
  }

  switch (resolution.kind) {
    case 'null-mx':
      return localVerdict(rcpts, 'bounce', 556, '5.1.10', `domain ${domain} accepts no mail (null MX, RFC 7505)`, lookupHop);
    case 'none':
      return localVerdict(rcpts, 'bounce', 550, '5.1.2', `domain ${domain} cannot receive mail: ${resolution.error}`, lookupHop);
    case 'temporary':
      return localVerdict(rcpts, 'defer', 451, '4.4.3', `cannot resolve where mail for ${domain} goes, will retry: ${resolution.error}`, lookupHop);
  }

  const configured = ctx.tlsPolicy?.domains[domain] !== undefined;
  const mode = tlsPolicyFor(ctx.tlsPolicy, domain);
  // MTA-STS only where the lab set no mode for the destination itself (an explicit mode wins, as a Postfix policy
  // table entry would), and never under `none`.
  const sts = ctx.mtaSts && !configured && mode !== 'none' ? await stsPolicy(ctx, domain, lookupHop) : undefined;
  // The same for every MX: what the message needs (each server's extensions decide what goes, see the pool).
  const params = mailParamsFor(message, rcpts, data);
  let lastError: { err: unknown; hop: string; where: Where; tlsPolicy?: OutboundTlsPolicy } | undefined;
  const lookupFailures: string[] = [];
  const outsideLab: string[] = [];
  for (const mx of resolution.hosts) {
    const port = route ? route.port : relayPortOf(ctx, mx.exchange);
    if (mx.addresses.length === 0) {
      lookupFailures.push(mx.error ?? `${mx.exchange}: no address`);
      continue;
    }
    const mxHop = `${ctx.hostname} -> ${mx.exchange}`;
    const mxWhere: Where = { target: mx.exchange, mx: mx.exchange, remoteMta: mx.exchange };
    // DANE first: it outranks MTA-STS and the configured mode. No TLSA records: the MX goes by the others.
    const dane = mode !== 'none' && ctx.resolveTlsa && !net.isIP(mx.exchange) ? await tlsaOf(ctx, domain, mx.exchange, port, mxHop) : undefined;
    if (dane && 'error' in dane) {
      lastError = { err: dane.error, hop: mxHop, where: mxWhere, tlsPolicy: 'dane' };
      continue;
    }
    if (!dane && sts && !mxAllowedByPolicy(sts, mx.exchange)) {
      const reason = `${mx.exchange} is not an MX the MTA-STS policy of ${domain} (id ${sts.id}) lists (mx: ${sts.mx.join(', ') || 'none'})`;
      const enforced = sts.mode === 'enforce';
      ctx.emit('tls-policy-failure', { domain, mx: mx.exchange, tlsPolicy: enforced ? 'mta-sts' : 'mta-sts-testing', resultType: 'validation-failure', enforced, reason, hop: mxHop });
      if (enforced) {
        lastError = { err: new SmtpClientError({ stage: 'connect', target: mx.exchange, command: 'connect', description: `TLS required by policy mta-sts for ${domain}, but ${reason}`, code: 451, enhanced: '4.7.5', errno: 'EMTASTS' }), hop: mxHop, where: mxWhere, tlsPolicy: 'mta-sts' };
        continue;
      }
    }
    const effective: OutboundTlsPolicy = dane ? 'dane' : sts?.mode === 'enforce' ? 'mta-sts' : mode;
    const policy = ctx.tlsPolicy || effective !== mode ? { tlsPolicy: effective } : {};
    const audit = !dane && sts?.mode === 'testing' && mode !== 'verify';
    for (const address of mx.addresses) {
      if (!insideLab(address, ctx.labAddresses)) {
        outsideLab.push(mx.exchange === address ? address : `${mx.exchange}[${address}]`);
        continue;
      }
      const target: SmtpTarget = {
        host: address,
        port,
        servername: mx.exchange,
        ...(ctx.tlsPolicy || effective !== mode ? { tls: effective } : {}),
        ...(dane ? { tlsa: dane.records } : {}),
        ...(audit ? { audit: true } : {}),
      };
      const hop = `${ctx.hostname} -> ${describeTarget(target)}`;
      const where: Where = { target: describeTarget(target), host: address, port, mx: mx.exchange, remoteMta: mx.exchange };
      // Announced before the transaction, so the history shows it before what the server records.
      ctx.emit('connect', { host: address, port, mx: mx.exchange, hop });
      try {
        const result = await ctx.smtp.send(target, params.envelope, data, params.options);
        if (audit && result.tlsAudit) {
          // MTA-STS `testing`: what enforce would have refused, reported; the mail went anyway (RFC 8461 §5).
          const failure = result.tlsAudit;
          ctx.emit('tls-policy-failure', { domain, mx: mx.exchange, host: address, tlsPolicy: 'mta-sts-testing', resultType: failureType(failure), enforced: false, reason: failure.reason, hop });
        }
        return result.recipients.map((r) => ({ ...fromRecipientResult(r, hop, 'smtp', where, result), ...policy }));
      } catch (caught) {
        const err = caught instanceof SmtpClientError && caught.tlsRequired ? tlsPolicyError(caught, effective, domain, where.target) : caught;
        if (caught instanceof SmtpClientError && caught.tlsRequired) {
          ctx.emit('tls-policy-failure', { domain, mx: mx.exchange, host: address, tlsPolicy: effective, resultType: failureType(caught.tlsRequired), enforced: true, reason: caught.tlsRequired.reason, hop });
        }
        if (err instanceof SmtpClientError && tryNextHost(err)) {
          ctx.emit('connect-failed', { host: address, port, mx: mx.exchange, hop, stage: err.stage, command: err.command, ...(err.reply ? { reply: err.reply } : {}), error: err.message, ...policy });
          lastError = { err, hop, where, ...policy };
          continue;
        }
        return fromError(err, rcpts, hop, 'smtp', where).map((o) => ({ ...o, ...policy }));
      }
    }
  }
  if (lastError) {
    const policy = lastError.tlsPolicy ? { tlsPolicy: lastError.tlsPolicy } : {};
    return fromError(lastError.err, rcpts, lastError.hop, 'smtp', lastError.where).map((o) => ({ ...o, ...policy }));
  }
  if (outsideLab.length) {
    const why = `mail for ${domain} would go to ${outsideLab.join(', ')}, outside the lab: ${ctx.hostname} connects only to the lab's own hosts`;
    return localVerdict(rcpts, 'bounce', 550, '5.4.4', lookupFailures.length ? `${why}; ${lookupFailures.join('; ')}` : why, lookupHop);
  }
  // Every MX host lacked an address, for good (a temporary lookup failure makes the whole resolution temporary).
  return localVerdict(rcpts, 'bounce', 550, '5.4.4', `no MX host of ${domain} has an address: ${lookupFailures.join('; ')}`, lookupHop);
}

/**
 * The MTA-STS policy that applies to `domain` now, as an event; undefined when none does (no policy, mode `none`,
 * or a policy announced but not to be had, which RFC 8461 §5.1 treats as none, reported).
 */
async function stsPolicy(ctx: DeliveryContext, domain: string, hop: string): Promise<MtaStsPolicy | undefined> {
  let lookup: MtaStsLookup;
  try {
    lookup = await ctx.mtaSts!.lookup(domain);
  } catch (err) {
    lookup = { kind: 'error', problem: 'sts-policy-fetch-error', reason: `MTA-STS policy of ${domain}: ${(err as Error).message}` };
  }
  if (lookup.kind === 'none') return undefined;
  if (lookup.kind === 'error') {
    ctx.emit('mta-sts', { domain, error: lookup.reason });
    ctx.emit('tls-policy-failure', { domain, tlsPolicy: 'mta-sts', resultType: lookup.problem, enforced: false, reason: lookup.reason, hop });
    return undefined;
  }
  const { policy } = lookup;
  ctx.emit('mta-sts', { domain, mode: policy.mode, id: policy.id, mx: policy.mx, maxAge: policy.maxAge, source: lookup.source, expiresAt: lookup.expiresAt });
  return policy.mode === 'none' ? undefined : policy;
}

/** Lookup failures that are answers: the MX has no TLSA records, DANE does not apply to it. */
const NO_RECORDS = new Set(['ENOTFOUND', 'ENODATA']);

/**
 * The usable TLSA records of an MX host; undefined when it has none (or only unusable ones, RFC 7672 §2.2); an error
 * (a 451 for that MX) when the lookup failed otherwise.
 */
async function tlsaOf(ctx: DeliveryContext, domain: string, mx: string, port: number, hop: string): Promise<{ records: TlsaAssociation[] } | { error: SmtpClientError } | undefined> {
  // The port actually connected to (RFC 7672 §2.2.3: TLSA records are per port).
  const name = `_${port}._tcp.${mx}`;
  let records: TlsaAssociation[];
  try {
    records = await ctx.resolveTlsa!(name);
  } catch (caught) {
    const code = (caught as NodeJS.ErrnoException)?.code ?? '';
    if (NO_RECORDS.has(code)) return undefined;
    const reason = `the TLSA lookup of ${name} failed: ${(caught as Error).message}`;
    ctx.emit('tlsa-lookup', { mx, name, records: [], usable: 0, error: reason });
    ctx.emit('tls-policy-failure', { domain, mx, tlsPolicy: 'dane', resultType: 'tlsa-invalid', enforced: true, reason, hop });
    return { error: new SmtpClientError({ stage: 'connect', target: mx, command: 'connect', description: `TLS policy dane for ${domain} cannot be decided: ${reason}`, code: 451, enhanced: '4.7.5', errno: code || 'ETLSA' }) };
  }
  const usable = usableTlsa(records);
  ctx.emit('tlsa-lookup', { mx, name, records: records.map(describeTlsa), usable: usable.length });
  return usable.length ? { records: usable } : undefined;
}

/** The TLSRPT result type (RFC 8460 §4.3) of a refused or audited session. */
function failureType(failure: TlsRequiredFailure): TlsFailureType {
  if (failure.problem === 'no-starttls') return 'starttls-not-supported';
  if (failure.problem === 'tlsa-mismatch') return 'validation-failure';
  switch (failure.code) {
    case 'ERR_TLS_CERT_ALTNAME_INVALID':
      return 'certificate-host-mismatch';
    case 'CERT_HAS_EXPIRED':
    case 'CERT_NOT_YET_VALID':
      return 'certificate-expired';
    case 'DEPTH_ZERO_SELF_SIGNED_CERT':
    case 'SELF_SIGNED_CERT_IN_CHAIN':
    case 'UNABLE_TO_GET_ISSUER_CERT_LOCALLY':
    case 'UNABLE_TO_VERIFY_LEAF_SIGNATURE':
      return 'certificate-not-trusted';
    default:
      return 'validation-failure';
  }
}

interface Where {
  /** How the server is named in messages: `name[ip]:port` or `ip:port`. */
  target: string;
  host?: string;
  port?: number;
  mx?: string;
  remoteMta?: string;
}

function fromRecipientResult(r: RecipientResult, hop: string, via: 'smtp' | 'lmtp', { target, ...where }: Where, result: SendResult): RecipientOutcome {
  const { action, status } = classifyRecipient(r);
  return {
    address: r.address,
    action,
    status,
    code: r.code,
    reply: r.reply,
    remote: true,
    hop,
    command: r.command,
    via,
    ...where,
    reused: result.reused,
    ...(result.tls ? { tls: result.tls } : {}),
    ...(result.mailParams ? { mailParams: result.mailParams } : {}),
    ...(result.converted7bit ? { converted7bit: true } : {}),
    description:
      (action === 'delivered' ? `delivered to ${target}: ${oneLine(r.reply)}` : `${target} said: ${oneLine(r.reply)} (in reply to ${r.command})`) +
      (result.converted7bit ? ' (sent converted to 7-bit: the server does not offer 8BITMIME)' : ''),
  };
}

function fromError(err: unknown, rcpts: string[], hop: string, via: 'smtp' | 'lmtp', { target: _target, remoteMta, ...where }: Where): RecipientOutcome[] {
  if (!(err instanceof SmtpClientError)) {
    // Not a protocol outcome (a bug, a local I/O error): keep the message and try again later.
    const text = `local error while delivering: ${(err as Error)?.message ?? String(err)}`;
    return localVerdict(rcpts, 'defer', 451, '4.3.0', text, hop);
  }
  const { action, status } = classifyClientError(err);
  const remote = err.reply !== undefined;
  return rcpts.map((address) => ({
    address,
    action,
    status,
    ...(err.code !== undefined ? { code: err.code } : {}),
    // A local refusal with a code of its own (552 too big, 553 5.6.7 SMTPUTF8, 554 5.6.3 8BITMIME) keeps it.
    reply: err.reply ?? `${err.code ?? (action === 'bounce' ? 550 : 451)} ${status} ${err.message}`,
    remote,
    hop,
    command: err.command,
    via,
    ...where,
    ...(remote && remoteMta ? { remoteMta } : {}),
    description: err.message + (err.reply ? ` (in reply to ${err.command})` : ''),
  }));
}

/** The MX resolution in a form fit for an event. */
function summarize(resolution: MxResolution): MxResolution {
  switch (resolution.kind) {
    case 'mx':
    case 'implicit':
      return { kind: resolution.kind, hosts: resolution.hosts.map((h) => ({ exchange: h.exchange, priority: h.priority, addresses: h.addresses, ...(h.error ? { error: h.error } : {}) })) };
    case 'null-mx':
      return { kind: 'null-mx' };
    default:
      return { kind: resolution.kind, error: resolution.error };
  }
}
