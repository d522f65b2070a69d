import { X509Certificate, createHash } from 'node:crypto';
import { beforeAll, describe, expect, it } from 'vitest';
import { createLabCa, issueHostCertificate, type HostCertificate, type LabCa } from '../harness/tls/ca.js';
import { associationData, describeTlsa, usableTlsa, verifyDane, type TlsaAssociation } from './dane.js';

const MX = 'mx.receiver.test';
const der = (pem: string) => new X509Certificate(pem).raw;

let ca: LabCa;
let otherCa: LabCa;
let leaf: HostCertificate;
let expired: HostCertificate;
let wrongName: HostCertificate;
let foreign: HostCertificate;

beforeAll(async () => {
  [ca, otherCa] = await Promise.all([createLabCa('dane-test'), createLabCa('other')]);
  const identity = { names: [MX], addresses: ['127.0.0.7'] };
  [leaf, expired, wrongName, foreign] = await Promise.all([
    issueHostCertificate(ca, identity),
    issueHostCertificate(ca, identity, 'expired'),
    issueHostCertificate(ca, identity, 'wrong-name'),
    issueHostCertificate(otherCa, identity),
  ]);
});

const record = (usage: number, selector: number, matchingType: number, pem: string): TlsaAssociation => ({ usage, selector, matchingType, data: associationData(pem, selector, matchingType) });

describe('associationData', () => {
  it('selects the certificate or its public key and hashes it as the matching type says', () => {
    const cert = new X509Certificate(leaf.cert);
    const spki = cert.publicKey.export({ type: 'spki', format: 'der' });
    expect(associationData(leaf.cert, 0, 0).equals(cert.raw)).toBe(true);
    expect(associationData(leaf.cert, 1, 0).equals(spki)).toBe(true);
    expect(associationData(leaf.cert, 1, 1).equals(createHash('sha256').update(spki).digest())).toBe(true);
    expect(associationData(leaf.cert, 0, 2).equals(createHash('sha512').update(cert.raw).digest())).toBe(true);
    expect(() => associationData(leaf.cert, 2, 1)).toThrow(/selector 2 is not defined/);
    expect(() => associationData(leaf.cert, 1, 3)).toThrow(/matching type 3 is not defined/);
  });

  it('matches what openssl computes for a 3 1 1 record', async () => {
    const { execFileSync } = await import('node:child_process');
    const spki = execFileSync('openssl', ['x509', '-noout', '-pubkey'], { input: leaf.cert });
    const digest = execFileSync('openssl', ['pkey', '-pubin', '-outform', 'DER'], { input: spki });
    expect(associationData(leaf.cert, 1, 1).toString('hex')).toBe(createHash('sha256').update(digest).digest('hex'));
  });
});

describe('usableTlsa', () => {
  it('keeps DANE-TA and DANE-EE only (RFC 7672 §3.1.3)', () => {
    const data = Buffer.alloc(32);
    const all = [0, 1, 2, 3, 4].map((usage) => ({ usage, selector: 1, matchingType: 1, data }));
    expect(usableTlsa(all).map((r) => r.usage)).toEqual([2, 3]);
    expect(usableTlsa([{ usage: 3, selector: 7, matchingType: 1, data }, { usage: 3, selector: 1, matchingType: 9, data }])).toEqual([]);
  });
});

describe('verifyDane', () => {
  it('DANE-EE: the leaf matches, whatever its name, dates or issuer', () => {
    for (const cert of [leaf, expired, wrongName, foreign]) {
      const result = verifyDane([der(cert.cert)], [record(3, 1, 1, cert.cert)], MX);
      expect(result).toEqual({ ok: true, matched: describeTlsa(record(3, 1, 1, cert.cert)) });
    }
  });

  it('DANE-EE: another key does not match, and the reason lists the records', () => {
    const result = verifyDane([der(leaf.cert), der(ca.cert)], [record(3, 1, 1, foreign.cert)], MX);
    expect(result.ok).toBe(false);
    expect(!result.ok && result.reason).toMatch(/none of the 2 certificates the server sent matches its TLSA records \(3 1 1 [0-9a-f]{16}…\)/);
  });

  it('DANE-TA: the CA sent in the chain anchors a leaf that names the MX and is within its dates', () => {
    for (const [selector, matchingType] of [[0, 1], [1, 1], [0, 2], [0, 0]]) {
      expect(verifyDane([der(leaf.cert), der(ca.cert)], [record(2, selector!, matchingType!, ca.cert)], MX).ok).toBe(true);
    }
  });

  it('DANE-TA: a leaf for another name, an expired leaf, or a leaf of another CA fails, saying why', () => {
    const ta = [record(2, 0, 1, ca.cert)];
    const name = verifyDane([der(wrongName.cert), der(ca.cert)], ta, MX);
    expect(!name.ok && name.reason).toMatch(/does not name mx\.receiver\.test/);
    const dates = verifyDane([der(expired.cert), der(ca.cert)], ta, MX);
    expect(!dates.ok && dates.reason).toMatch(/expired on/);
    // The other CA's leaf, sent with our CA: our CA matches the record but did not sign the leaf.
    const issuer = verifyDane([der(foreign.cert), der(ca.cert)], ta, MX);
    expect(!issuer.ok && issuer.reason).toMatch(/certificate 1 of the chain is not signed by certificate 2/);
  });

  it('DANE-TA: a trust anchor the server does not send cannot match (RFC 7672 §3.1.2)', () => {
    const result = verifyDane([der(leaf.cert)], [record(2, 0, 1, ca.cert)], MX);
    expect(result.ok).toBe(false);
  });

  it('only PKIX records, or no certificate: no usable record / nothing sent', () => {
    const pkix = verifyDane([der(leaf.cert)], [record(1, 1, 1, leaf.cert)], MX);
    expect(!pkix.ok && pkix.reason).toMatch(/no usable TLSA record/);
    const empty = verifyDane([], [record(3, 1, 1, leaf.cert)], MX);
    expect(!empty.ok && empty.reason).toMatch(/sent no certificate/);
  });

  it('one matching record among non-matching ones is enough', () => {
    const records = [record(3, 1, 1, foreign.cert), record(2, 0, 1, otherCa.cert), record(3, 0, 2, leaf.cert)];
    expect(verifyDane([der(leaf.cert), der(ca.cert)], records, MX)).toEqual({ ok: true, matched: describeTlsa(records[2]!) });
  });
});
