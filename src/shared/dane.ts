// DANE for SMTP (RFC 7672, with RFC 6698 and RFC 7671): matching a server's certificate chain against the TLSA
// records of `_<port>._tcp.<mx host>`. Both sides of the lab use this one module: the MTA to verify an MX, the
// harness to publish TLSA records computed from the certificates it issued.
//
// Rules followed:
// - Only DANE-TA(2) and DANE-EE(3) are usable for SMTP (RFC 7672 §3.1.3): PKIX-TA(0) and PKIX-EE(1) records are
//   ignored; records with an unknown selector or matching type are unusable too (RFC 6698 §4.1). TLSA records that
//   are all unusable are treated as no TLSA records at all (RFC 7672 §2.2).
// - DANE-EE(3): the leaf certificate (or its public key) matches, and nothing else is checked: no name, no
//   validity dates, no chain (RFC 7672 §3.1.1, RFC 7671 §5.1).
// - DANE-TA(2): some certificate the server sent (RFC 7672 §3.1.2: the server must send the trust anchor) matches;
//   the chain from the leaf up to it must verify signature by signature, the leaf must be within its validity dates
//   and must carry the reference identifier, the MX host name (RFC 7672 §3.2.2).
// - The lab DNS is not signed. Its answers are taken as DNSSEC-authenticated, as a validating resolver of a signed
//   zone would report them: that is what makes the records usable here.
import { X509Certificate, createHash } from 'node:crypto';

export const DANE_TA = 2;
export const DANE_EE = 3;

/** One TLSA record's association, as looked up: data as bytes. */
export interface TlsaAssociation {
  usage: number;
  selector: number;
  matchingType: number;
  data: Buffer;
}

/** The outcome of matching a chain: which record matched, or why none did. */
export type DaneResult = { ok: true; matched: string } | { ok: false; reason: string };

/** `3 1 1 1a2b3c4d…`: a record as people write it, the data cut short. */
export function describeTlsa(record: TlsaAssociation): string {
  const hex = record.data.toString('hex');
  return `${record.usage} ${record.selector} ${record.matchingType} ${hex.length > 16 ? `${hex.slice(0, 16)}…` : hex}`;
}

/** The records an SMTP client may use (RFC 7672 §3.1.3): DANE-TA or DANE-EE, known selector and matching type. */
export function usableTlsa(records: readonly TlsaAssociation[]): TlsaAssociation[] {
  return records.filter((r) => (r.usage === DANE_TA || r.usage === DANE_EE) && (r.selector === 0 || r.selector === 1) && r.matchingType >= 0 && r.matchingType <= 2);
}

/**
 * The association data of `certificate` (DER or PEM) for a selector and matching type: what a TLSA record carries.
 * Selector 0 = the whole certificate, 1 = its SubjectPublicKeyInfo; matching type 0 = as is, 1 = SHA-256, 2 = SHA-512.
 */
export function associationData(certificate: Buffer | string, selector: number, matchingType: number): Buffer {
  const cert = new X509Certificate(certificate);
  const selected = selector === 0 ? cert.raw : selector === 1 ? cert.publicKey.export({ type: 'spki', format: 'der' }) : undefined;
  if (!selected) throw new Error(`TLSA selector ${selector} is not defined (0: certificate, 1: SubjectPublicKeyInfo)`);
  switch (matchingType) {
    case 0:
      return Buffer.from(selected);
    case 1:
      return createHash('sha256').update(selected).digest();
    case 2:
      return createHash('sha512').update(selected).digest();
    default:
      throw new Error(`TLSA matching type ${matchingType} is not defined (0: full, 1: SHA-256, 2: SHA-512)`);
  }
}

function matches(record: TlsaAssociation, cert: X509Certificate): boolean {
  return associationData(cert.raw, record.selector, record.matchingType).equals(record.data);
}

/**
 * Whether the certificate chain a server sent (DER, leaf first) satisfies its TLSA records for `hostname` (the MX
 * host name, the reference identifier). `now` is for the DANE-TA validity check.
 */
export function verifyDane(chain: readonly Buffer[], records: readonly TlsaAssociation[], hostname: string, now = new Date()): DaneResult {
  const usable = usableTlsa(records);
  if (usable.length === 0) return { ok: false, reason: 'no usable TLSA record (only DANE-TA(2) and DANE-EE(3) count for SMTP)' };
  if (chain.length === 0) return { ok: false, reason: 'the server sent no certificate' };
  const certs = chain.map((der) => new X509Certificate(der));
  const leaf = certs[0]!;

  for (const record of usable.filter((r) => r.usage === DANE_EE)) {
    if (matches(record, leaf)) return { ok: true, matched: describeTlsa(record) };
  }

  const problems: string[] = [];
  for (const record of usable.filter((r) => r.usage === DANE_TA)) {
    const anchorAt = certs.findIndex((cert) => matches(record, cert));
    if (anchorAt < 0) continue;
    const problem = chainProblem(certs.slice(0, anchorAt + 1), hostname, now);
    if (!problem) return { ok: true, matched: describeTlsa(record) };
    problems.push(`${describeTlsa(record)} matches ${anchorAt === 0 ? 'the leaf' : `certificate ${anchorAt + 1} of the chain`}, but ${problem}`);
  }
  if (problems.length) return { ok: false, reason: problems.join('; ') };
  const list = usable.map(describeTlsa).join(', ');
  if (chain.length === 1) return { ok: false, reason: `the certificate the server sent matches none of its TLSA records (${list})` };
  return { ok: false, reason: `none of the ${chain.length} certificates the server sent matches its TLSA records (${list})` };
}

/** Why the chain from the leaf up to a DANE-TA trust anchor (the last element) does not hold, or undefined. */
function chainProblem(path: readonly X509Certificate[], hostname: string, now: Date): string | undefined {
  for (let i = 0; i + 1 < path.length; i++) {
    const [child, issuer] = [path[i]!, path[i + 1]!];
    if (!child.checkIssued(issuer) || !child.verify(issuer.publicKey)) return `certificate ${i + 1} of the chain is not signed by certificate ${i + 2}`;
  }
  const leaf = path[0]!;
  if (now < new Date(leaf.validFrom)) return `the server's certificate is not valid before ${leaf.validFrom}`;
  if (now > new Date(leaf.validTo)) return `the server's certificate expired on ${leaf.validTo}`;
  if (!leaf.checkHost(hostname)) return `the server's certificate does not name ${hostname}`;
  return undefined;
}
