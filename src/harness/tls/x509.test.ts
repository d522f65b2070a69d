// The DER certificate builder, checked by a second implementation: OpenSSL's command line reads what it built
// (`openssl x509 -text`) and verifies the chain in strict mode (`openssl verify -x509_strict`, which wants the key
// identifiers RFC 5280 asks for), besides node:crypto's own parser.
import { execFileSync } from 'node:child_process';
import { X509Certificate, generateKeyPairSync } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { buildCertificate, ipOctets } from './x509.js';

const dir = mkdtempSync(path.join(os.tmpdir(), 'maillab-x509-test-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

function openssl(...args: string[]): string {
  return execFileSync('openssl', args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
}

function file(name: string, pem: string): string {
  const at = path.join(dir, name);
  writeFileSync(at, pem);
  return at;
}

const ec = () => generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey;
const now = Date.now();
const caKey = ec();
const caCert = buildCertificate({
  subject: { commonName: 'maillab unit lab CA', organization: 'maillab' },
  publicKey: caKey,
  signingKey: caKey,
  notBefore: new Date(now - 3600_000),
  notAfter: new Date(now + 86400_000),
  ca: { pathLength: 0 },
  keyUsage: { keyCertSign: true, cRLSign: true },
});

describe('buildCertificate', () => {
  it('makes a CA and a host certificate that OpenSSL reads as asked and verifies in strict mode', () => {
    const hostKey = generateKeyPairSync('rsa', { modulusLength: 1024 }).privateKey;
    const leaf = buildCertificate({
      subject: { commonName: 'mx.receiver.test' },
      publicKey: hostKey,
      issuer: { cert: caCert },
      signingKey: caKey,
      notBefore: new Date(now - 3600_000),
      notAfter: new Date(now + 86400_000),
      keyUsage: { digitalSignature: true, keyEncipherment: true },
      extendedKeyUsage: ['serverAuth', 'clientAuth'],
      altNames: { dns: ['mx.receiver.test', 'mx2.receiver.test'], ip: ['127.0.0.9', '2001:db8::1'] },
    });
    const caText = openssl('x509', '-in', file('ca.pem', caCert), '-noout', '-text');
    expect(caText).toMatch(/Issuer: CN ?= ?maillab unit lab CA, O ?= ?maillab/);
    expect(caText).toMatch(/Basic Constraints: critical\s+CA:TRUE, pathlen:0/);
    expect(caText).toMatch(/Key Usage: critical\s+Certificate Sign, CRL Sign/);
    expect(caText).toMatch(/Subject Key Identifier/);
    const text = openssl('x509', '-in', file('leaf.pem', leaf), '-noout', '-text');
    expect(text).toMatch(/Version: 3/);
    expect(text).toMatch(/Signature Algorithm: ecdsa-with-SHA256/);
    expect(text).toMatch(/Subject: CN ?= ?mx\.receiver\.test/);
    expect(text).toMatch(/Public-Key: \(1024 bit\)/);
    expect(text).toMatch(/Basic Constraints: critical\s+CA:FALSE/);
    expect(text).toMatch(/Key Usage: critical\s+Digital Signature, Key Encipherment/);
    expect(text).toMatch(/Extended Key Usage:\s+TLS Web Server Authentication, TLS Web Client Authentication/);
    expect(text).toMatch(/DNS:mx\.receiver\.test, DNS:mx2\.receiver\.test, IP Address:127\.0\.0\.9, IP Address:2001:DB8:0:0:0:0:0:1/);
    expect(text).toMatch(/Authority Key Identifier/);
    expect(openssl('verify', '-x509_strict', '-CAfile', file('ca.pem', caCert), file('leaf.pem', leaf)).trim()).toMatch(/: OK$/);
    const parsed = new X509Certificate(leaf);
    expect(parsed.checkIssued(new X509Certificate(caCert))).toBe(true);
    expect(parsed.checkHost('mx2.receiver.test')).toBe('mx2.receiver.test');
    expect(parsed.checkIP('127.0.0.9')).toBe('127.0.0.9');
  });

  it('writes dates from 2050 on as GeneralizedTime, and earlier ones as UTCTime, to the second', () => {
    const key = ec();
    const cert = buildCertificate({ subject: { commonName: 'far.test' }, publicKey: key, signingKey: key, notBefore: new Date('2049-12-31T23:59:59.700Z'), notAfter: new Date('2051-06-01T12:00:00Z'), keyUsage: { digitalSignature: true } });
    const parsed = new X509Certificate(cert);
    expect(new Date(parsed.validFrom).toISOString()).toBe('2049-12-31T23:59:59.000Z');
    expect(new Date(parsed.validTo).toISOString()).toBe('2051-06-01T12:00:00.000Z');
    expect(openssl('asn1parse', '-in', file('far.pem', cert))).toMatch(/UTCTIME\s+:491231235959Z[\s\S]*GENERALIZEDTIME\s+:20510601120000Z/);
  });

  it('refuses what it cannot build, saying what', () => {
    const key = ec();
    const rsa = generateKeyPairSync('rsa', { modulusLength: 1024 }).privateKey;
    const base = { subject: { commonName: 'x.test' }, publicKey: key, signingKey: key, notBefore: new Date(now), notAfter: new Date(now + 1000), keyUsage: { digitalSignature: true } as const };
    expect(() => buildCertificate({ ...base, signingKey: rsa })).toThrow('signed with an EC P-256 key only');
    expect(() => buildCertificate({ ...base, notAfter: new Date(now - 1000) })).toThrow(/validity ends .* before it begins/);
    expect(() => buildCertificate({ ...base, keyUsage: {} })).toThrow('at least one key usage');
    expect(() => buildCertificate({ ...base, altNames: { dns: [], ip: ['mx.test'] } })).toThrow('not an IP address: mx.test');
  });
});

describe('ipOctets', () => {
  it('gives 4 octets for IPv4 and 16 for IPv6, with :: expanded wherever it stands', () => {
    expect([...ipOctets('198.18.0.7')]).toEqual([198, 18, 0, 7]);
    expect(ipOctets('::1').toString('hex')).toBe('00000000000000000000000000000001');
    expect(ipOctets('2001:db8::').toString('hex')).toBe('20010db8000000000000000000000000');
    expect(ipOctets('fe80::1:2').toString('hex')).toBe('fe800000000000000000000000010002');
    expect(ipOctets('2001:db8:1:2:3:4:5:6').toString('hex')).toBe('20010db8000100020003000400050006');
  });
});
