// Keys of a lab's mail authentication (issue 12). RSA keys are made once per machine and kept between starts
// (key-cache.ts: their generation was the largest cost of a start; MAILLAB_FRESH_KEYS=1 makes new ones every time);
// Ed25519 keys are made at every start:
// - DKIM (RFC 6376): one key per selector of a domain (`domains[d].dkim`), RSA 2048 or Ed25519 (RFC 8463). The
//   public key goes in the lab DNS at `<selector>._domainkey.<domain>` (unless `publish: false`), the private key to
//   every MTA as a signer (the first selector with `sign` not false).
// - ARC (RFC 8617): an MX that forwards seals with an RSA 2048 key of its first domain, selector `arc`, published
//   at `arc._domainkey.<domain>`.
import { generateKeyPair, type KeyObject } from 'node:crypto';
import { promisify } from 'node:util';
import type { DkimSigningConfig, NodeConfig, ZoneConfig } from '../shared/config.js';
import { labRsaKey } from './key-cache.js';
import type { DkimDefinition, LabDefinition } from './topology.js';

const generate = promisify(generateKeyPair);

/** The selector of the ARC seal a forwarding MX makes. */
export const ARC_SELECTOR = 'arc';

export interface IssuedDkimKey extends DkimSigningConfig {
  /** The TXT record text of the public key: `v=DKIM1; k=rsa; p=...`. */
  record: string;
  sign: boolean;
  publish: boolean;
}

/** A new key pair for `algorithm`, the private key as PKCS#8 PEM, the public one as its DKIM TXT record. */
export async function newDkimKey(algorithm: DkimSigningConfig['algorithm']): Promise<{ privateKey: string; record: string }> {
  const pair = algorithm === 'ed25519-sha256' ? await generate('ed25519') : await generate('rsa', { modulusLength: 2048 });
  return { privateKey: pair.privateKey.export({ type: 'pkcs8', format: 'pem' }).toString(), record: dkimRecord(pair.publicKey, algorithm) };
}

/** `v=DKIM1; k=rsa; p=<SPKI>` (RFC 6376 §3.6.1), or `k=ed25519; p=<the raw 32-byte key>` (RFC 8463 §4). */
export function dkimRecord(publicKey: KeyObject, algorithm: DkimSigningConfig['algorithm']): string {
  const spki = publicKey.export({ type: 'spki', format: 'der' });
  return algorithm === 'ed25519-sha256' ? `v=DKIM1; k=ed25519; p=${spki.subarray(spki.length - 32).toString('base64')}` : `v=DKIM1; k=rsa; p=${spki.toString('base64')}`;
}

/**
 * The key of a lab start's `index`-th selector (its DKIM selectors, then its ARC sealers): a kept RSA key
 * (key-cache.ts), each index its own, or a new Ed25519 key.
 */
async function labDkimKey(algorithm: DkimSigningConfig['algorithm'], index: number): Promise<{ privateKey: string; record: string }> {
  if (algorithm === 'ed25519-sha256') return newDkimKey(algorithm);
  const key = await labRsaKey(index);
  return { privateKey: key.privateKey, record: dkimRecord(key.publicKey, algorithm) };
}

/** Keys for every DKIM selector of the lab's domains. */
export async function issueDkimKeys(definition: LabDefinition): Promise<IssuedDkimKey[]> {
  const wanted = Object.entries(definition.domains).flatMap(([domain, def]) => (def.dkim ?? []).map((key) => [domain.toLowerCase(), key] as const));
  return Promise.all(wanted.map(async ([domain, key], index) => issued(domain, key, await labDkimKey(key.algorithm ?? 'rsa-sha256', index))));
}

function issued(domain: string, key: DkimDefinition, made: { privateKey: string; record: string }): IssuedDkimKey {
  return {
    domain,
    selector: key.selector,
    privateKey: made.privateKey,
    algorithm: key.algorithm ?? 'rsa-sha256',
    canonicalization: key.canonicalization ?? 'relaxed/relaxed',
    ...(key.headers ? { headers: key.headers } : {}),
    record: made.record,
    sign: key.sign !== false,
    publish: key.publish !== false,
  };
}

/** The signers the MTAs use: per domain, its first key that signs. */
export function signersOf(keys: readonly IssuedDkimKey[]): DkimSigningConfig[] {
  const byDomain = new Map<string, DkimSigningConfig>();
  for (const { record: _record, sign, publish: _publish, ...signer } of keys) if (sign && !byDomain.has(signer.domain)) byDomain.set(signer.domain, signer);
  return [...byDomain.values()];
}

/** Adds a TXT record to the zone holding `name` (the most specific one). */
function publishTxt(zones: ZoneConfig[], name: string, data: string): void {
  const zone = zones.filter((z) => name === z.origin || name.endsWith(`.${z.origin}`)).sort((a, b) => b.origin.length - a.origin.length)[0];
  if (!zone) throw new Error(`no lab zone holds ${name}`);
  zone.records.push({ name, type: 'TXT', data });
}

/**
 * Makes the lab's DKIM and ARC keys and puts them where they belong before any node starts: public keys in the dns
 * host's zones, DKIM signers in every MTA's config, the ARC sealer in each forwarding MX's. Returns the DKIM keys.
 */
export async function equipWithMailAuth(definition: LabDefinition, nodes: Record<string, NodeConfig>): Promise<IssuedDkimKey[]> {
  const dns = Object.values(nodes).find((config) => config.role === 'dns');
  const zones = dns?.role === 'dns' ? dns.zones : [];
  const keys = await issueDkimKeys(definition);
  // The sealers' keys come after the selectors' in the start's key order: no two share a key.
  let nextIndex = keys.length;
  for (const key of keys) if (key.publish) publishTxt(zones, `${key.selector}._domainkey.${key.domain}`, key.record);
  const signers = signersOf(keys);
  const sealers = Object.values(nodes).filter((config) => config.role === 'mx' && config.forwards && Object.keys(config.forwards).length);
  await Promise.all(
    sealers.map(async (config) => {
      if (config.role !== 'mx') return;
      const domain = config.domains[0]!.toLowerCase();
      const key = await labDkimKey('rsa-sha256', nextIndex++);
      publishTxt(zones, `${ARC_SELECTOR}._domainkey.${domain}`, key.record);
      config.arcSeal = { domain, selector: ARC_SELECTOR, privateKey: key.privateKey };
    }),
  );
  for (const config of Object.values(nodes)) if (config.role === 'mta' && signers.length) config.dkim = signers;
  return keys;
}
