// X.509 v3 certificates (RFC 5280) for the lab CA, built as DER here and signed with node:crypto (ECDSA P-256 with
// SHA-256, RFC 5758). It replaces selfsigned, whose JavaScript ASN.1 and WebCrypto took 6–10 ms per certificate: six of
// them were about 40 ms of every lab start before any node could start (issue 17). Building one here takes a fraction
// of a millisecond.
//
// Only what the lab issues is supported: an EC P-256 issuer key; a subject key of any type node:crypto exports as SPKI
// (EC for the CA and hosts, RSA 1024 for the `weak` fault); a subject of a common name and, optionally, an organization;
// and the extensions below. Every certificate carries a subject key identifier, and every one an issuer signed an
// authority key identifier naming that issuer's key (RFC 5280 §4.2.1.1–2, which strict verifiers require).
import { X509Certificate, createHash, createPublicKey, randomBytes, sign, type KeyObject } from 'node:crypto';
import { isIP } from 'node:net';

export interface CertificateSpec {
  subject: { commonName: string; organization?: string };
  /** The key the certificate is for (its public half is what is certified; a private key object will do). */
  publicKey: KeyObject;
  /** Who signs: absent, the certificate is self-signed and `signingKey` is the subject's own private key. */
  issuer?: { cert: string };
  /** The private key that signs (EC P-256): the issuer's, or the subject's own when self-signed. */
  signingKey: KeyObject;
  notBefore: Date;
  notAfter: Date;
  /** A CA certificate (basicConstraints CA:TRUE) with this path length; absent: CA:FALSE. */
  ca?: { pathLength: number };
  keyUsage: Partial<Record<KeyUsage, true>>;
  extendedKeyUsage?: ('serverAuth' | 'clientAuth')[];
  /** Subject alternative names: DNS names and IP addresses (v4 or v6). */
  altNames?: { dns: string[]; ip: string[] };
}

/** RFC 5280 §4.2.1.3, in bit order. */
const KEY_USAGE_BITS = ['digitalSignature', 'nonRepudiation', 'keyEncipherment', 'dataEncipherment', 'keyAgreement', 'keyCertSign', 'cRLSign'] as const;
export type KeyUsage = (typeof KEY_USAGE_BITS)[number];

// --- DER (X.690): definite lengths, primitive and constructed elements.

function element(tag: number, ...content: Buffer[]): Buffer {
  const value = Buffer.concat(content);
  const n = value.length;
  const length = n < 0x80 ? [n] : n < 0x100 ? [0x81, n] : n < 0x10000 ? [0x82, n >> 8, n & 0xff] : [0x83, n >> 16, (n >> 8) & 0xff, n & 0xff];
  return Buffer.concat([Buffer.from([tag, ...length]), value]);
}

const sequence = (...content: Buffer[]) => element(0x30, ...content);
const set = (...content: Buffer[]) => element(0x31, ...content);
const octets = (value: Buffer) => element(0x04, value);
const bits = (value: Buffer, unused = 0) => element(0x03, Buffer.from([unused]), value);
const utf8 = (text: string) => element(0x0c, Buffer.from(text, 'utf8'));
const TRUE = Buffer.from([0x01, 0x01, 0xff]);

function oid(dotted: string): Buffer {
  const [a, b, ...rest] = dotted.split('.').map(Number);
  const out = [a! * 40 + b!];
  for (const arc of rest) {
    const base128 = [arc & 0x7f];
    for (let v = Math.floor(arc / 128); v > 0; v = Math.floor(v / 128)) base128.unshift((v & 0x7f) | 0x80);
    out.push(...base128);
  }
  return element(0x06, Buffer.from(out));
}

function integer(value: Buffer | number): Buffer {
  let bytes = typeof value === 'number' ? Buffer.from([value]) : value;
  // Two's complement: a leading 1 bit would make it negative.
  if (bytes[0]! & 0x80) bytes = Buffer.concat([Buffer.from([0]), bytes]);
  return element(0x02, bytes);
}

/** UTCTime through 2049, GeneralizedTime from 2050 (RFC 5280 §4.1.2.5), to the second, in UTC. */
function time(date: Date): Buffer {
  const iso = date.toISOString().replace(/\.\d{3}Z$/, 'Z').replace(/[-:T]/g, '');
  const year = date.getUTCFullYear();
  if (year < 1950 || year > 9999) throw new Error(`certificate date out of range: ${date.toISOString()}`);
  return year < 2050 ? element(0x17, Buffer.from(iso.slice(2), 'ascii')) : element(0x18, Buffer.from(iso, 'ascii'));
}

const ECDSA_WITH_SHA256 = sequence(oid('1.2.840.10045.4.3.2'));

function name(subject: CertificateSpec['subject']): Buffer {
  const rdns = [set(sequence(oid('2.5.4.3'), utf8(subject.commonName)))];
  if (subject.organization !== undefined) rdns.push(set(sequence(oid('2.5.4.10'), utf8(subject.organization))));
  return sequence(...rdns);
}

/** The address as its octets (4 for IPv4, 16 for IPv6: `::` expanded). */
export function ipOctets(address: string): Buffer {
  const family = isIP(address);
  if (family === 4) return Buffer.from(address.split('.').map(Number));
  if (family !== 6) throw new Error(`not an IP address: ${address}`);
  if (address.includes('.')) throw new Error(`IPv6 with an embedded IPv4 address is not supported in a certificate: ${address}`);
  const [head, tail] = address.includes('::') ? address.split('::') : [address, undefined];
  const groups = (part: string | undefined) => (part ? part.split(':') : []);
  const left = groups(head);
  const right = groups(tail);
  const all = tail === undefined ? left : [...left, ...Array<string>(8 - left.length - right.length).fill('0'), ...right];
  const out = Buffer.alloc(16);
  all.forEach((group, i) => out.writeUInt16BE(parseInt(group, 16), i * 2));
  return out;
}

/** The subjectPublicKey BIT STRING's content of an SPKI (DER), which key identifiers hash (RFC 5280 §4.2.1.2 (1)). */
function subjectPublicKeyBits(spki: Buffer): Buffer {
  const { value } = readElement(spki, 0);
  const algorithm = readElement(value, 0);
  const key = readElement(value, algorithm.end);
  return key.value.subarray(1);
}

function readElement(der: Buffer, offset: number): { value: Buffer; end: number } {
  let at = offset + 1;
  let length = der[at++]!;
  if (length & 0x80) {
    const count = length & 0x7f;
    length = 0;
    for (let i = 0; i < count; i++) length = length * 256 + der[at++]!;
  }
  if (at + length > der.length) throw new Error('truncated DER');
  return { value: der.subarray(at, at + length), end: at + length };
}

const keyIdentifier = (spki: Buffer) => createHash('sha1').update(subjectPublicKeyBits(spki)).digest();

function extension(id: string, critical: boolean, value: Buffer): Buffer {
  return sequence(oid(id), ...(critical ? [TRUE] : []), octets(value));
}

function keyUsageBits(usage: CertificateSpec['keyUsage']): Buffer {
  let mask = 0;
  KEY_USAGE_BITS.forEach((bit, i) => {
    if (usage[bit]) mask |= 0x80 >> i;
  });
  if (mask === 0) throw new Error('a certificate needs at least one key usage');
  // DER drops trailing zero bits of a named bit list (X.690 §11.2.2): count them as unused.
  let unused = 0;
  while (!(mask & (1 << unused))) unused++;
  return bits(Buffer.from([mask]), unused);
}

function pemOf(der: Buffer): string {
  return `-----BEGIN CERTIFICATE-----\n${der.toString('base64').match(/.{1,64}/g)!.join('\n')}\n-----END CERTIFICATE-----\n`;
}

/** A certificate as the spec says, in PEM; checked with node:crypto against the signing key before it is returned. */
export function buildCertificate(spec: CertificateSpec): string {
  if (spec.signingKey.asymmetricKeyType !== 'ec' || spec.signingKey.asymmetricKeyDetails?.namedCurve !== 'prime256v1') {
    throw new Error('certificates are signed with an EC P-256 key only');
  }
  if (!(spec.notBefore < spec.notAfter)) throw new Error(`certificate validity ends (${spec.notAfter.toISOString()}) before it begins (${spec.notBefore.toISOString()})`);
  const spki = (spec.publicKey.type === 'private' ? createPublicKey(spec.publicKey) : spec.publicKey).export({ type: 'spki', format: 'der' });
  const issuerCert = spec.issuer ? new X509Certificate(spec.issuer.cert) : undefined;
  const issuerName = issuerCert ? rawSubject(issuerCert) : name(spec.subject);
  const issuerKeyId = keyIdentifier(issuerCert ? issuerCert.publicKey.export({ type: 'spki', format: 'der' }) : createPublicKey(spec.signingKey).export({ type: 'spki', format: 'der' }));
  const extensions = [
    extension('2.5.29.19', true, spec.ca ? sequence(TRUE, integer(spec.ca.pathLength)) : sequence()),
    extension('2.5.29.15', true, keyUsageBits(spec.keyUsage)),
    ...(spec.extendedKeyUsage?.length ? [extension('2.5.29.37', false, sequence(...spec.extendedKeyUsage.map((u) => oid(u === 'serverAuth' ? '1.3.6.1.5.5.7.3.1' : '1.3.6.1.5.5.7.3.2'))))] : []),
    ...(spec.altNames && spec.altNames.dns.length + spec.altNames.ip.length > 0
      ? [extension('2.5.29.17', false, sequence(...spec.altNames.dns.map((d) => element(0x82, Buffer.from(d, 'ascii'))), ...spec.altNames.ip.map((ip) => element(0x87, ipOctets(ip)))))]
      : []),
    extension('2.5.29.14', false, octets(keyIdentifier(spki))),
    ...(spec.issuer ? [extension('2.5.29.35', false, sequence(element(0x80, issuerKeyId)))] : []),
  ];
  // A positive 127-bit serial: unique without bookkeeping (RFC 5280 §4.1.2.2 allows up to 20 octets).
  const serial = randomBytes(16);
  serial[0] = (serial[0]! & 0x7f) | 0x01;
  const tbs = sequence(
    element(0xa0, integer(2)),
    integer(serial),
    ECDSA_WITH_SHA256,
    issuerName,
    sequence(time(spec.notBefore), time(spec.notAfter)),
    name(spec.subject),
    spki,
    element(0xa3, sequence(...extensions)),
  );
  const der = sequence(tbs, ECDSA_WITH_SHA256, bits(sign('sha256', tbs, spec.signingKey)));
  const pem = pemOf(der);
  if (!new X509Certificate(pem).verify(createPublicKey(spec.signingKey))) throw new Error('the certificate built does not verify with its signing key');
  return pem;
}

/** The issuer's subject Name exactly as encoded in its certificate (so that name chaining compares equal octets). */
function rawSubject(cert: X509Certificate): Buffer {
  const tbs = readElement(readElement(cert.raw, 0).value, 0).value;
  // TBSCertificate: [0] version, serialNumber, signature, issuer, validity, subject, ...
  let at = 0;
  for (let field = 0; field < 5; field++) at = readElement(tbs, at).end;
  const start = at;
  return tbs.subarray(start, readElement(tbs, at).end);
}
