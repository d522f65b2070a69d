// A CA per lab (issue 11): every lab start makes its own CA (EC P-256) and issues one certificate per host, with the
// host's names and addresses as SANs. Issuing takes milliseconds, so nothing is cached or kept in the repository,
// and the CA is never installed in the system's trust store: only what is given its PEM trusts it.
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
import { X509Certificate, createPrivateKey, generateKeyPairSync, sign } from 'node:crypto';
import { isIP } from 'node:net';
import { generate } from 'selfsigned';

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

/** A new CA for one lab: EC P-256, CA:true (path length 0: it signs hosts only), keyCertSign and cRLSign. */
export async function createLabCa(labName: string, now = new Date()): Promise<LabCa> {
  const pems = await generate([{ name: 'commonName', value: `maillab ${labName} lab CA` }, { name: 'organizationName', value: 'maillab' }], {
    keyType: 'ec',
    curve: 'P-256',
    algorithm: 'sha256',
    notBeforeDate: new Date(now.getTime() + VALID_FROM_MS),
    notAfterDate: new Date(now.getTime() + VALID_FOR_MS),
    extensions: [
      { name: 'basicConstraints', cA: true, pathLenConstraint: 0, critical: true },
      { name: 'keyUsage', keyCertSign: true, cRLSign: true, critical: true },
    ],
  });
  return { cert: pems.cert, key: pems.private };
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
  const options = {
    algorithm: 'sha256' as const,
    notBeforeDate: new Date(notBefore),
    notAfterDate: new Date(notAfter),
    extensions: [
      { name: 'basicConstraints' as const, cA: false, critical: true },
      { name: 'keyUsage' as const, digitalSignature: true, keyEncipherment: fault === 'weak', critical: true },
      { name: 'extKeyUsage' as const, serverAuth: true, clientAuth: true },
      { name: 'subjectAltName' as const, altNames: [...names.map((value) => ({ type: 2 as const, value })), ...addresses.map((ip) => ({ type: 7 as const, ip }))] },
    ],
  };
  const subject = [{ name: 'commonName', value: names[0]! }];
  let pems: { cert: string; private: string };
  if (fault === 'weak') {
    // selfsigned signs with the algorithm of the new key, so it cannot put an RSA key under an EC CA: make the
    // certificate self-signed, then sign its contents again with the lab CA (issuer and signature algorithm set).
    const keyPair = generateKeyPairSync('rsa', { modulusLength: 1024, publicKeyEncoding: { type: 'spki', format: 'pem' }, privateKeyEncoding: { type: 'pkcs8', format: 'pem' } });
    const own = await generate(subject, { ...options, keyType: 'rsa', keyPair: { publicKey: keyPair.publicKey, privateKey: keyPair.privateKey } });
    pems = { cert: resign(own.cert, ca), private: keyPair.privateKey };
  } else {
    pems = await generate(subject, { ...options, keyType: 'ec', curve: 'P-256', ...(fault === 'self-signed' ? {} : { ca }) });
  }
  return { cert: pems.cert, key: pems.private, ...(fault ? { fault } : {}) };
}

/** A lab CA and one certificate per host, made at once (a few milliseconds each). */
export async function issueLabCertificates(
  labName: string,
  hosts: Record<string, HostIdentity>,
  faults: Partial<Record<string, CertificateFault>> = {},
): Promise<{ ca: LabCa; hosts: Record<string, HostCertificate> }> {
  const ca = await createLabCa(labName);
  const issued = await Promise.all(Object.entries(hosts).map(async ([name, identity]) => [name, await issueHostCertificate(ca, identity, faults[name])] as const));
  return { ca, hosts: Object.fromEntries(issued) };
}

// --- re-signing a certificate (DER): Certificate ::= SEQUENCE { tbsCertificate, signatureAlgorithm, signatureValue }

/** ecdsa-with-SHA256 (RFC 5758), parameters absent. */
const ECDSA_WITH_SHA256 = Buffer.from('300a06082a8648ce3d040302', 'hex');

interface Tlv {
  /** The whole element (tag, length, value). */
  raw: Buffer;
  value: Buffer;
}

function readTlv(der: Buffer, offset: number): Tlv {
  let at = offset + 1;
  let length = der[at++]!;
  if (length & 0x80) {
    const bytes = length & 0x7f;
    length = 0;
    for (let i = 0; i < bytes; i++) length = length * 256 + der[at++]!;
  }
  if (at + length > der.length) throw new Error('truncated DER');
  return { raw: der.subarray(offset, at + length), value: der.subarray(at, at + length) };
}

function children(sequence: Tlv): Tlv[] {
  const out: Tlv[] = [];
  for (let at = 0; at < sequence.value.length; ) {
    const child = readTlv(sequence.value, at);
    out.push(child);
    at += child.raw.length;
  }
  return out;
}

function encode(tag: number, value: Buffer): Buffer {
  const n = value.length;
  const length = n < 0x80 ? Buffer.from([n]) : n < 0x100 ? Buffer.from([0x81, n]) : n < 0x10000 ? Buffer.from([0x82, n >> 8, n & 0xff]) : Buffer.from([0x83, n >> 16, (n >> 8) & 0xff, n & 0xff]);
  return Buffer.concat([Buffer.from([tag]), length, value]);
}

function pemToDer(pem: string): Buffer {
  return Buffer.from(pem.replace(/-----(BEGIN|END) CERTIFICATE-----/g, '').replace(/\s+/g, ''), 'base64');
}

function derToPem(der: Buffer): string {
  return `-----BEGIN CERTIFICATE-----\n${der.toString('base64').match(/.{1,64}/g)!.join('\n')}\n-----END CERTIFICATE-----\n`;
}

/** `cert` with the CA as issuer, signed by the CA's (EC) key: same subject, key, dates and extensions. */
function resign(cert: string, ca: LabCa): string {
  const tbsFields = children(children(readTlv(pemToDer(cert), 0))[0]!);
  const caSubject = children(children(readTlv(pemToDer(ca.cert), 0))[0]!)[5]!;
  // TBSCertificate: [0] version, serialNumber, signature, issuer, validity, subject, subjectPublicKeyInfo, [3] extensions
  const tbs = encode(0x30, Buffer.concat(tbsFields.map((field, i) => (i === 2 ? ECDSA_WITH_SHA256 : i === 3 ? caSubject.raw : field.raw))));
  const signature = sign('sha256', tbs, createPrivateKey(ca.key)); // DER ECDSA-Sig-Value
  const der = encode(0x30, Buffer.concat([tbs, ECDSA_WITH_SHA256, encode(0x03, Buffer.concat([Buffer.from([0]), signature]))]));
  const result = derToPem(der);
  if (!new X509Certificate(result).verify(new X509Certificate(ca.cert).publicKey)) throw new Error('re-signed certificate does not verify');
  return result;
}
