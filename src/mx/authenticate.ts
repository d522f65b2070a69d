// Mail authentication at the MX (issue 12): SPF (RFC 7208), DKIM (RFC 6376), DMARC (RFC 7489) and ARC (RFC 8617),
// verified by mailauth at the end of DATA against the lab DNS only, and what the MX does with the verdict.
//
// mailauth does the protocol work (lookups, the 10-lookup limit of SPF, signature checks, alignment, the chain of
// ARC sets) and writes the Authentication-Results header (RFC 8601). This module decides: the DMARC policy with
// its `pct` sampling, and the local-policy override for a trusted ARC sealer (RFC 7489 §7.2.1 `trusted_forwarder`,
// RFC 8617 §7.2), and turns mailauth's result into the `authenticated` event.
import { createHash } from 'node:crypto';
import type { AuthenticateResult, DKIMResult } from 'mailauth';
import { commonJsExports, lazyModule } from '../shared/lazy-module.js';

// mailauth (with joi, tldts, libmime and iconv-lite, a 1.2 MB chunk of the node bundle) is loaded on the first message,
// not at start: the MX greets about 100 ms of CPU sooner, and the first message waits for the load (issue 17).
const mailauth = lazyModule(async () => commonJsExports(await import('mailauth')));
import type { ArcSealConfig, MxAuthConfig } from '../shared/config.js';
import type { AuthenticatedDetail, AuthAction } from './api.js';

/** What mailauth needs of a resolver: `(name, rrtype)`, failing with node:dns's codes (ENOTFOUND, ENODATA...). */
export type AuthResolver = (name: string, rrtype: string) => Promise<unknown>;

export interface AuthInput {
  /** The message as it will be handed on (with this MX's Received header on top). */
  message: Buffer;
  /** The connection's remote address: SPF's client IP. */
  ip: string;
  helo: string;
  /** MAIL FROM ('' for the null sender: SPF then checks the HELO identity, RFC 7208 §2.4). */
  sender: string;
  rcpts: string[];
  /** The Message-ID (the pct sample is drawn from it). */
  messageId: string | undefined;
}

export interface AuthOptions {
  /** The authserv-id of the Authentication-Results header: this MX's host name. */
  mta: string;
  resolver: AuthResolver;
  auth: MxAuthConfig | undefined;
  /** Seal an ARC set (for forwarding); only when the incoming chain is none or pass, as mailauth does. */
  seal?: ArcSealConfig;
}

export interface AuthOutcome {
  detail: AuthenticatedDetail;
  /** Header fields to prepend for every recipient (Received-SPF, Authentication-Results), CRLF-terminated. */
  headers: string;
  /** The ARC set this MX sealed (ARC-Seal, ARC-Message-Signature, ARC-Authentication-Results), CRLF-terminated; '' if none. */
  arcSet: string;
  /** The instance and signer of that set. */
  sealed?: { instance: number; domain: string; selector: string };
  /** For `reject`: the text after `550 5.7.1 `. */
  refusal?: string;
}

/**
 * Whether a message falls in the `pct` sample of its DMARC policy (RFC 7489 §6.6.4). Deterministic, so a test and
 * a retry of the same message get the same answer: the first 32 bits of SHA-256 of the Message-ID (or, without one,
 * of the whole message) modulo 100, below `pct`.
 */
export function inDmarcSample(pct: number | undefined, messageId: string | undefined, message: Buffer): boolean {
  if (pct === undefined || pct >= 100) return true;
  if (pct <= 0) return false;
  const digest = createHash('sha256').update(messageId ?? message).digest();
  return digest.readUInt32BE(0) % 100 < pct;
}

/** The header fields of a block mailauth returns (`A: x\r\n b\r\nB: y\r\n`), each with its folding kept. */
function fields(block: string): string[] {
  return block.split(/\r\n(?![ \t])/).filter((f) => f.trim() !== '');
}

/** `d=` of each ARC-Seal of the chain, oldest first. */
type ChainEntry = { i: number; 'arc-seal'?: { parsed?: { d?: { value?: string } } }; 'arc-authentication-results'?: { parsed?: { dmarc?: { value?: string } } } };

/**
 * A trusted sealer whose ARC-Authentication-Results said dmarc=pass, newest first (the chain validated as a whole,
 * so every set in it is as its sealer wrote it). mailauth moves the newest set's parsed results into
 * `arc.authenticationResults` (`{ dmarc: { result } }`) and leaves that set's own copy without a value; older sets
 * keep `{ dmarc: { value } }`.
 */
function trustedPass(chain: ChainEntry[], newest: { dmarc?: { result?: string } } | undefined, trusted: Set<string>): { domain: string; instance: number } | undefined {
  const last = chain.length - 1;
  for (const [index, entry] of [...chain.entries()].reverse()) {
    const domain = entry['arc-seal']?.parsed?.d?.value?.toLowerCase();
    const said = (index === last ? newest?.dmarc?.result : entry['arc-authentication-results']?.parsed?.dmarc?.value)?.toLowerCase();
    if (domain && trusted.has(domain) && said === 'pass') return { domain, instance: entry.i };
  }
  return undefined;
}

const comment = (s: { comment?: string }) => (s.comment ? ` (${s.comment})` : '');

/** Why DMARC failed, for the 550 text: each DKIM signature and SPF, with alignment when they passed. */
function whyDmarcFailed(result: AuthenticateResult, fromDomain: string): string {
  const signatures = result.dkim.results.filter((r) => r.signingDomain);
  const dkim = signatures.length
    ? signatures.map((r) => (r.status.result === 'pass' ? `dkim=pass for d=${r.signingDomain}, not aligned with ${fromDomain}` : `dkim=${r.status.result}${comment(r.status)} for d=${r.signingDomain} s=${r.selector ?? ''}`))
    : ['dkim=none (no DKIM signature)'];
  const spf = result.spf;
  const spfWhy = !spf ? 'spf=none' : spf.status.result === 'pass' ? `spf=pass for ${spf.domain}, not aligned with ${fromDomain}` : `spf=${spf.status.result}${comment(spf.status)}`;
  return [...dkim, spfWhy].join(', ');
}

/** An SMTP reply line may not exceed 512 octets (RFC 5321 §4.5.3.1.5); no CR or LF may reach it either. */
function replyText(text: string): string {
  const flat = text.replace(/[\r\n]+\s*/g, ' ');
  return flat.length > 480 ? `${flat.slice(0, 477)}...` : flat;
}

export async function authenticateMessage(input: AuthInput, options: AuthOptions): Promise<AuthOutcome> {
  const { authenticate } = await mailauth();
  const result = await authenticate(input.message, {
    ip: input.ip,
    helo: input.helo,
    sender: input.sender,
    mta: options.mta,
    resolver: options.resolver as never,
    // BIMI is not part of the lab's checks; disabled so that it makes no lookups of its own.
    disableBimi: true,
    ...(options.seal ? { seal: { signingDomain: options.seal.domain, selector: options.seal.selector, privateKey: options.seal.privateKey } } : {}),
  });

  const spf = result.spf;
  const dmarc = result.dmarc;
  const arc = result.arc;
  // The From: domain as written (mailauth's header.from is its organizational domain).
  const fromDomain = dmarc ? (result.dkim.headerFrom[0]?.split('@').pop()?.toLowerCase() ?? dmarc.domain) : '';
  // The chain mailauth verified (a non-enumerable property; false when the message had no ARC set).
  const found = arc ? (arc as unknown as { chain?: ChainEntry[] | false }).chain : undefined;
  const chain: ChainEntry[] = Array.isArray(found) ? found : [];

  // The DMARC decision (RFC 7489 §6.6.4): the policy that applies to the From domain (sp for a subdomain), sampled
  // by pct; a message outside the sample gets the next milder policy (reject → quarantine → none).
  const sampled = dmarc ? inDmarcSample(dmarc.pct, input.messageId, input.message) : true;
  let action: AuthAction = 'accept';
  let reason = dmarc ? `dmarc=${dmarc.status.result}` : 'no DMARC evaluation (no single From: address)';
  let override: { domain: string; instance: number } | undefined;
  if (dmarc && dmarc.status.result === 'fail') {
    const applied = !sampled ? ({ reject: 'quarantine', quarantine: 'none' } as Record<string, string>)[dmarc.policy] ?? 'none' : dmarc.policy;
    const trusted = arc && arc.status.result === 'pass' ? trustedPass(chain, arc.authenticationResults as { dmarc?: { result?: string } } | undefined, new Set((options.auth?.trustedArcSealers ?? []).map((d) => d.toLowerCase()))) : undefined;
    const why = whyDmarcFailed(result, fromDomain);
    if (!options.auth?.enforceDmarc) reason = `dmarc=fail, policy ${applied} not enforced (enforceDmarc is off): ${why}`;
    else if (applied === 'none') reason = `dmarc=fail, policy none${sampled ? '' : ` (outside pct=${dmarc.pct} sample)`}: ${why}`;
    else if (trusted) {
      // Only an override that changed the outcome is one (and is said in the Authentication-Results).
      override = trusted;
      action = 'accept-arc-override';
      reason = `dmarc=fail, policy ${applied} overridden: ARC chain passes and trusted sealer ${override.domain} (i=${override.instance}) said dmarc=pass`;
    } else {
      action = applied === 'reject' ? 'reject' : 'quarantine';
      reason = `DMARC policy of ${fromDomain} is ${applied}${sampled ? '' : ` (pct=${dmarc.pct}: outside the sample, one step milder)`}: ${why}`;
    }
  }

  const all = fields(result.headers);
  const arcSet = all.filter((f) => /^ARC-/i.test(f));
  let rest = all.filter((f) => !/^ARC-/i.test(f));
  if (override) {
    // The DMARC row is the last of mailauth's Authentication-Results (BIMI, which would follow, is off): say there
    // that local policy overrode it, and why (RFC 8601 §2.3 ptype "policy"; RFC 7489 §7.2.1 trusted_forwarder).
    rest = rest.map((f) => (/^Authentication-Results:/i.test(f) ? `${f}\r\n policy.override=arc (trusted ARC sealer ${override!.domain} at i=${override!.instance} said dmarc=pass)` : f));
  }
  const header = rest.find((f) => /^Authentication-Results:/i.test(f)) ?? '';
  const sealHeader = arcSet.find((f) => /^ARC-Seal:/i.test(f));
  const sealInstance = sealHeader ? Number(/\bi=(\d+)/.exec(sealHeader)?.[1]) : undefined;

  const dkim = result.dkim.results
    .filter((r): r is DKIMResult => Boolean(r.signingDomain))
    .map((r) => ({
      result: r.status.result,
      domain: r.signingDomain,
      selector: r.selector ?? '',
      // mailauth reports `a=` in the status's header properties (header.a of the Authentication-Results row).
      algorithm: r.algorithm ?? String(r.status.header?.a ?? ''),
      aligned: Boolean(r.status.aligned),
      info: r.info,
    }));

  const detail: AuthenticatedDetail = {
    from: input.sender,
    rcpts: input.rcpts,
    headerFrom: result.dkim.headerFrom?.join(', ') ?? '',
    spf: {
      result: spf ? spf.status.result : 'none',
      domain: spf ? spf.domain : '',
      ip: input.ip,
      helo: input.helo,
      ...(spf && spf.rr ? { record: spf.rr } : {}),
      ...(spf && spf.status.comment ? { comment: spf.status.comment } : {}),
    },
    dkim,
    dmarc: dmarc
      ? {
          result: dmarc.status.result,
          domain: fromDomain,
          ...(dmarc.policy ? { policy: dmarc.policy } : {}),
          ...(dmarc.p ? { p: dmarc.p } : {}),
          ...(dmarc.sp ? { sp: dmarc.sp } : {}),
          ...(dmarc.pct !== undefined ? { pct: dmarc.pct } : {}),
          sampled,
          alignment: { spf: dmarc.alignment?.spf?.result || false, dkim: dmarc.alignment?.dkim?.result || false },
        }
      : null,
    arc: {
      result: arc ? arc.status.result : 'none',
      ...(arc && typeof arc.i === 'number' && arc.i > 0 ? { instance: arc.i } : {}),
      sealers: chain.map((e) => e['arc-seal']?.parsed?.d?.value ?? ''),
      ...(arc && arc.status.comment && arc.status.result !== 'pass' ? { comment: arc.status.comment } : {}),
      ...(override ? { trustedSealer: override.domain } : {}),
    },
    action,
    reason,
    header,
  };
  return {
    detail,
    headers: rest.map((f) => `${f}\r\n`).join(''),
    arcSet: arcSet.map((f) => `${f}\r\n`).join(''),
    ...(options.seal && sealInstance ? { sealed: { instance: sealInstance, domain: options.seal.domain, selector: options.seal.selector } } : {}),
    ...(action === 'reject' ? { refusal: replyText(`5.7.1 ${reason}`) } : {}),
  };
}

/**
 * The message without Authentication-Results fields that claim this MX's authserv-id (RFC 8601 §5: a border MTA
 * MUST remove them, or a sender could forge this MX's verdict for a reader further in).
 */
export function withoutForgedResults(message: Buffer, authservId: string): Buffer {
  const end = message.indexOf('\r\n\r\n');
  if (end < 0) return message;
  const head = message.subarray(0, end + 2).toString('latin1');
  const id = authservId.toLowerCase();
  const kept = head.split(/(?<=\r\n)(?![ \t])/).filter((field) => {
    const m = /^authentication-results:\s*([^;\s(]+)/i.exec(field);
    return !m || m[1]!.toLowerCase() !== id;
  });
  return kept.length === head.split(/(?<=\r\n)(?![ \t])/).length ? message : Buffer.concat([Buffer.from(kept.join(''), 'latin1'), message.subarray(end + 2)]);
}
