// A CA per lab (issue 11): every lab start makes its own CA (EC P-256) and issues one certificate per host, with the
// host's names and addresses as SANs (built by x509.ts). Issuing takes well under a millisecond per certificate, so
// nothing is cached or kept in the repository, and the CA is never installed in the system's trust store: only what
// is given its PEM trusts it.
//
// A host's certificate can be faulty on purpose (what TLS scenarios use), set per host in the lab definition
// (`tls: { certificates: { mx: 'expired' } }`):
//   expired        valid from 30 days ago to 1 day ago, from the lab CA
//   not-yet-valid  valid from tomorrow for 30 days, from the lab CA
//   wrong-name     from the lab CA, but names only `wrong-name.invalid` (none of the host's names or addresses)
//   self-signed    the host's names and addresses, signed by its own key: not from the lab CA
//   weak           the host's names and addresses, from the lab CA, with an RSA 1024 key. OpenSSL 3 at security
//                  level 1 (Node 20's default) still accepts a 1024-bit key; a client at level 2 (the default from
//                  Node 22 on) refuses it.
import { createPrivateKey, generateKeyPairSync, type KeyObject } from 'node:crypto';
import { isIP } from 'node:net';
import { buildCertificate } from './x509.js';

export const CERTIFICATE_FAULTS = ['expired', 'not-yet-valid', 'wrong-name', 'self-signed', 'weak'] as const;
export type CertificateFault = (typeof CERTIFICATE_FAULTS)[number];

/** The name a `wrong-name` certificate carries instead of the host's (`.invalid`, RFC 2606: never anyone's). */
export const WRONG_NAME = 'wrong-name.invalid';

export interface LabCa {
  /** PEM certificate of the CA: what clients are given to trust. */
  cert: string;
  /** PEM (PKCS#8) private key of the CA; stays in the harness. */
  key: string;
}

export interface HostCertificate {
  /** PEM certificate of the host. */
  cert: string;
  /** PEM (PKCS#8) private key of `cert`. */
  key: string;
  /** The fault it was made with, if any. */
  fault?: CertificateFault;
}

/** What a host's certificate names: its DNS names and its IP addresses (both become SANs). */
export interface HostIdentity {
  names: string[];
  addresses: string[];
}

const DAY_MS = 24 * 60 * 60 * 1000;
/** A sound certificate is valid from an hour ago (clock differences) for a year: longer than any lab runs. */
const VALID_FROM_MS = -60 * 60 * 1000;
const VALID_FOR_MS = 365 * DAY_MS;

/** A new key (EC P-256, or RSA 1024 for the `weak` fault): the private key object, and the same as PEM (PKCS#8). */
function newKey(type: 'ec' | 'rsa-1024'): { key: KeyObject; pem: string } {
  const { privateKey } = type === 'ec' ? generateKeyPairSync('ec', { namedCurve: 'P-256' }) : generateKeyPairSync('rsa', { modulusLength: 1024 });
  return { key: privateKey, pem: privateKey.export({ type: 'pkcs8', format: 'pem' }) as string };
}

/** A new CA for one lab: EC P-256, CA:true (path length 0: it signs hosts only), keyCertSign and cRLSign. */
export async function createLabCa(labName: string, now = new Date()): Promise<LabCa> {
  const { key, pem } = newKey('ec');
  const cert = buildCertificate({
    subject: { commonName: `maillab ${labName} lab CA`, organization: 'maillab' },
    publicKey: key,
    signingKey: key,
    notBefore: new Date(now.getTime() + VALID_FROM_MS),
    notAfter: new Date(now.getTime() + VALID_FOR_MS),
    ca: { pathLength: 0 },
    keyUsage: { keyCertSign: true, cRLSign: true },
  });
  return { cert, key: pem };
}

/** A certificate for one host from the lab CA (or, for the fault `self-signed`, from nobody). */
export async function issueHostCertificate(ca: LabCa, host: HostIdentity, fault?: CertificateFault, now = new Date()): Promise<HostCertificate> {
  if (host.names.length === 0) throw new Error('a host certificate needs at least one DNS name');
  for (const a of host.addresses) if (!isIP(a)) throw new Error(`not an IP address: ${a}`);
  const t = now.getTime();
  const [notBefore, notAfter] =
    fault === 'expired' ? [t - 30 * DAY_MS, t - DAY_MS] : fault === 'not-yet-valid' ? [t + DAY_MS, t + 31 * DAY_MS] : [t + VALID_FROM_MS, t + VALID_FOR_MS];
  const names = fault === 'wrong-name' ? [WRONG_NAME] : host.names;
  const addresses = fault === 'wrong-name' ? [] : host.addresses;
  // The `weak` fault: an RSA 1024 key (keyEncipherment, as RSA key exchange would use it), still from the lab CA.
  const own = newKey(fault === 'weak' ? 'rsa-1024' : 'ec');
  const cert = buildCertificate({
    subject: { commonName: names[0]! },
    publicKey: own.key,
    ...(fault === 'self-signed' ? { signingKey: own.key } : { issuer: { cert: ca.cert }, signingKey: createPrivateKey(ca.key) }),
    notBefore: new Date(notBefore),
    notAfter: new Date(notAfter),
    keyUsage: fault === 'weak' ? { digitalSignature: true, keyEncipherment: true } : { digitalSignature: true },
    extendedKeyUsage: ['serverAuth', 'clientAuth'],
    altNames: { dns: names, ip: addresses },
  });
  return { cert, key: own.pem, ...(fault ? { fault } : {}) };
}

/** A lab CA and one certificate per host, made at once. */
export async function issueLabCertificates(
  labName: string,
  hosts: Record<string, HostIdentity>,
  faults: Partial<Record<string, CertificateFault>> = {},
): Promise<{ ca: LabCa; hosts: Record<string, HostCertificate> }> {
  const ca = await createLabCa(labName);
  const issued = await Promise.all(Object.entries(hosts).map(async ([name, identity]) => [name, await issueHostCertificate(ca, identity, faults[name])] as const));
  return { ca, hosts: Object.fromEntries(issued) };
}
