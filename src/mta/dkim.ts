// DKIM signing at the MTA (RFC 6376; Ed25519 per RFC 8463; the signature itself is dkim-sign.ts's), and the RFC 5322 From: mailboxes
// that both the signing and the submission From: policy look at.
//
// The signers are replaced as a whole (`replace`, the `set-dkim` operation): every entry is checked first — the key
// parses, is of the algorithm's type, an RSA key has at least 1024 bits (RFC 8301 §3.2: verifiers must refuse
// smaller ones) — and only then the new set is swapped in, so a rotation with one bad entry changes nothing. A message
// being signed keeps the signer it started with.
import { createPrivateKey, type KeyObject } from 'node:crypto';
import addressparser from 'nodemailer/lib/addressparser';
import type { DkimSigningConfig } from '../shared/config.js';
import type { DkimSignerView } from './api.js';
import { dkimSignature } from './dkim-sign.js';
import { headerBoundary } from '../shared/headers.js';

export type DkimAlgorithm = DkimSigningConfig['algorithm'];
export type DkimCanonicalization = DkimSigningConfig['canonicalization'];

const ALGORITHMS: readonly DkimAlgorithm[] = ['rsa-sha256', 'ed25519-sha256'];
const CANONICALIZATIONS: readonly DkimCanonicalization[] = ['relaxed/relaxed', 'relaxed/simple', 'simple/relaxed', 'simple/simple'];
/** RFC 8301 §3.2: verifiers must not accept RSA keys under 1024 bits, so a smaller one would only make failures. */
export const MIN_RSA_BITS = 1024;

/** What a signature applied to a message says (the `d=`, `s=`, `a=`, `c=`, `h=` tags). */
export interface DkimSignature extends DkimSignerView {
  canonicalization: DkimCanonicalization;
  headers: string[];
}

/** One LDH label (RFC 1035 §2.3.1, RFC 5890 A-labels included). */
const LABEL = /^(?!-)[a-z0-9-]{1,63}(?<!-)$/i;

function isDomainName(name: string, minLabels: number): boolean {
  const labels = name.split('.');
  return name.length <= 253 && labels.length >= minLabels && labels.every((l) => LABEL.test(l));
}

/** RFC 5322 §3.6.8 field name: printable US-ASCII except the colon. */
const FIELD_NAME = /^[\x21-\x39\x3b-\x7e]+$/;

/**
 * Checks one signer as it arrives (from the config or the control channel, so nothing is trusted), its key included. Errors name the entry (`signer 2 (d=sender.test s=k1)`) and what is wrong with it.
 */
export function checkSigner(raw: unknown, index: number): DkimSigningConfig {
  return checkedSigner(raw, index).config;
}

/** checkSigner, with the key it parsed (kept, so that no message parses it again). */
function checkedSigner(raw: unknown, index: number): { config: DkimSigningConfig; key: KeyObject } {
  const entry = (typeof raw === 'object' && raw !== null ? raw : {}) as Partial<Record<keyof DkimSigningConfig, unknown>>;
  const domain = typeof entry.domain === 'string' ? entry.domain.trim().toLowerCase().replace(/\.$/, '') : '';
  const selector = typeof entry.selector === 'string' ? entry.selector.trim().toLowerCase() : '';
  const what = `signer ${index + 1} (d=${domain || '?'} s=${selector || '?'})`;
  const fail = (problem: string): never => {
    throw new Error(`DKIM ${what}: ${problem}`);
  };
  if (!isDomainName(domain, 2)) fail(`domain ${JSON.stringify(entry.domain)} is not a domain name (LDH labels, at least two)`);
  // RFC 6376 §3.1: a selector is a sub-domain (one or more labels), published under `._domainkey.`.
  if (!isDomainName(selector, 1)) fail(`selector ${JSON.stringify(entry.selector)} is not a DNS label sequence (RFC 6376 §3.1)`);
  const algorithm = entry.algorithm as DkimAlgorithm;
  if (!ALGORITHMS.includes(algorithm)) fail(`algorithm ${JSON.stringify(entry.algorithm)} is not one of ${ALGORITHMS.join(', ')}`);
  const canonicalization = (entry.canonicalization ?? 'relaxed/relaxed') as DkimCanonicalization;
  if (!CANONICALIZATIONS.includes(canonicalization)) fail(`canonicalization ${JSON.stringify(entry.canonicalization)} is not one of ${CANONICALIZATIONS.join(', ')}`);
  let headers: string[] | undefined;
  if (entry.headers !== undefined) {
    if (!Array.isArray(entry.headers) || !entry.headers.every((h): h is string => typeof h === 'string' && FIELD_NAME.test(h))) {
      fail(`headers must be a list of header field names, got ${JSON.stringify(entry.headers)}`);
    }
    headers = entry.headers as string[];
    // RFC 6376 §5.4: the From header field MUST be signed.
    if (!headers.some((h) => h.toLowerCase() === 'from')) fail(`headers ${JSON.stringify(headers)} leave out From, which RFC 6376 §5.4 requires to be signed`);
  }
  if (typeof entry.privateKey !== 'string' || !entry.privateKey.includes('-----BEGIN')) fail('privateKey is not a PEM private key');
  let key: KeyObject;
  try {
    key = createPrivateKey({ key: entry.privateKey as string, format: 'pem' });
  } catch (err) {
    return fail(`privateKey does not parse: ${(err as Error).message}`);
  }
  const wanted = algorithm === 'rsa-sha256' ? 'rsa' : 'ed25519';
  if (key.asymmetricKeyType !== wanted) fail(`privateKey is an ${key.asymmetricKeyType ?? 'unknown'} key, ${algorithm} needs an ${wanted} key`);
  const bits = key.asymmetricKeyDetails?.modulusLength;
  if (wanted === 'rsa' && (bits === undefined || bits < MIN_RSA_BITS)) fail(`the RSA key has ${bits ?? 'an unknown number of'} bits, at least ${MIN_RSA_BITS} are needed (RFC 8301 §3.2)`);
  return { config: { domain, selector, privateKey: entry.privateKey as string, algorithm, canonicalization, ...(headers ? { headers } : {}) }, key };
}

/** The current DKIM signers of the MTA, one per signing domain. */
export class DkimSigner {
  private signers = new Map<string, { config: DkimSigningConfig; key: KeyObject }>();

  constructor(configs: readonly DkimSigningConfig[] = []) {
    this.replace(configs);
  }

  /** Replaces every signer at once; on any invalid entry, throws and keeps the current ones. */
  replace(configs: unknown): DkimSignerView[] {
    if (!Array.isArray(configs)) throw new Error(`DKIM signers must be a list, got ${JSON.stringify(configs)}`);
    const next = new Map<string, { config: DkimSigningConfig; key: KeyObject }>();
    configs.forEach((raw, i) => {
      const signer = checkedSigner(raw, i);
      // One signer per domain: with two, which one signs would be an accident of order.
      const taken = next.get(signer.config.domain);
      if (taken) throw new Error(`DKIM signer ${i + 1}: domain ${signer.config.domain} already has a signer (s=${taken.config.selector}); one per domain`);
      next.set(signer.config.domain, signer);
    });
    this.signers = next;
    return this.list();
  }

  list(): DkimSignerView[] {
    return [...this.signers.values()].map(({ config: { domain, selector, algorithm } }) => ({ domain, selector, algorithm }));
  }

  /**
   * Signs `message` for `fromDomain` when there is a signer for it: the DKIM-Signature header goes on top (RFC 6376
   * §5.6). Without a signer the message comes back unchanged and `signature` is absent. A signing failure throws,
   * naming the signer: the message must not leave unsigned when its domain signs.
   */
  async sign(message: Buffer, fromDomain: string): Promise<{ message: Buffer; signature?: DkimSignature }> {
    const signer = this.signers.get(fromDomain.toLowerCase());
    if (!signer) return { message };
    const { config, key } = signer;
    let header: string;
    try {
      // The clock is read once: the `t=` signed is the `t=` written.
      header = dkimSignature(message, { domain: config.domain, selector: config.selector, key, algorithm: config.algorithm, canonicalization: config.canonicalization, ...(config.headers ? { headers: config.headers } : {}) }, new Date());
    } catch (err) {
      throw new Error(`DKIM signing with d=${config.domain} s=${config.selector} (${config.algorithm}) failed: ${(err as Error).message}`);
    }
    return {
      message: Buffer.concat([Buffer.from(header, 'latin1'), message]),
      signature: { domain: config.domain, selector: config.selector, algorithm: config.algorithm, canonicalization: config.canonicalization, headers: signedHeaders(header) },
    };
  }
}

/** The `h=` tag of a DKIM-Signature header, as a list of field names. */
export function signedHeaders(signatureHeader: string): string[] {
  const h = /(?:^|;)\s*h=([^;]*)/.exec(signatureHeader.replace(/^DKIM-Signature:/i, '').replace(/\s+/g, ''))?.[1];
  return h ? h.split(':').filter(Boolean) : [];
}

/** Every field `name` of the header section, unfolded (RFC 5322 §2.2.3), in order. */
function headerFields(raw: Buffer, name: string): string[] {
  // UTF-8 (RFC 6532): a From: may carry an internationalised address.
  const head = raw.subarray(0, headerBoundary(raw).headEnd).toString('utf8').replace(/\r?\n[ \t]+/g, ' ');
  const wanted = name.toLowerCase() + ':';
  return head
    .split(/\r?\n/)
    .filter((line) => line.toLowerCase().startsWith(wanted))
    .map((line) => line.slice(wanted.length).trim());
}

/** The mailboxes of every From: field (groups flattened), lower-cased domain included, in order. */
export function fromMailboxes(raw: Buffer): { address: string; domain: string }[] {
  return headerFields(raw, 'from').flatMap((value) =>
    addressparser(value, { flatten: true }).map(({ address }) => {
      const at = address.lastIndexOf('@');
      return { address, domain: at < 0 ? '' : address.slice(at + 1).toLowerCase() };
    }),
  );
}
