// The lab CA and its host certificates, checked with node:crypto's X509Certificate and with real TLS handshakes
// (node:tls, a throwaway server on 127.0.0.1): a sound certificate verifies against the lab CA only, and each fault
// fails the way a client sees it.
import { X509Certificate } from 'node:crypto';
import type { AddressInfo } from 'node:net';
import tls from 'node:tls';
import { beforeAll, describe, expect, it } from 'vitest';
import { CERTIFICATE_FAULTS, WRONG_NAME, createLabCa, issueHostCertificate, type CertificateFault, type HostCertificate, type LabCa } from './ca.js';

const HOST = { names: ['mx.receiver.test'], addresses: ['127.0.0.1', '198.18.7.3'] };

let ca: LabCa;
const certs = {} as Record<CertificateFault | 'sound', HostCertificate>;

beforeAll(async () => {
  ca = await createLabCa('unit');
  certs.sound = await issueHostCertificate(ca, HOST);
  for (const fault of CERTIFICATE_FAULTS) certs[fault] = await issueHostCertificate(ca, HOST, fault);
});

/** Serves `cert` on 127.0.0.1 (port 0) and connects to it with `options`: the handshake's outcome. */
async function handshake(cert: HostCertificate, options: tls.ConnectionOptions, serverOptions: tls.TlsOptions = {}): Promise<{ ok: true; protocol: string | null } | { ok: false; code: string }> {
  const server = tls.createServer({ cert: cert.cert, key: cert.key, ...serverOptions }, (socket) => socket.end());
  server.on('tlsClientError', () => undefined);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  try {
    const { port } = server.address() as AddressInfo;
    return await new Promise((resolve) => {
      const socket = tls.connect({ host: '127.0.0.1', port, ca: ca.cert, ...options });
      socket.once('secureConnect', () => {
        resolve({ ok: true, protocol: socket.getProtocol() });
        socket.destroy();
      });
      socket.once('error', (err: NodeJS.ErrnoException) => resolve({ ok: false, code: err.code ?? err.message }));
    });
  } finally {
    await new Promise((resolve) => server.close(resolve));
  }
}

const x509 = (pem: string) => new X509Certificate(pem);

describe('the lab CA', () => {
  it('is an EC P-256 CA that may sign certificates, and self-issued', () => {
    const cert = x509(ca.cert);
    expect(cert.ca).toBe(true);
    expect(cert.publicKey.asymmetricKeyType).toBe('ec');
    expect(cert.publicKey.asymmetricKeyDetails?.namedCurve).toBe('prime256v1');
    expect(cert.subject).toContain('maillab unit lab CA');
    expect(cert.issuer).toBe(cert.subject);
    expect(cert.verify(cert.publicKey)).toBe(true);
    expect(cert.keyUsage ?? []).toEqual([]); // Node lists extended key usages here; the CA has none
    expect(cert.toLegacyObject().ext_key_usage).toBeUndefined();
  });

  it('differs from lab to lab', async () => {
    const other = await createLabCa('unit');
    expect(x509(other.cert).fingerprint256).not.toBe(x509(ca.cert).fingerprint256);
  });
});

describe('a host certificate', () => {
  it("names the host's DNS names and addresses, is from the lab CA, and is valid now", () => {
    const cert = x509(certs.sound.cert);
    expect(cert.ca).toBe(false);
    expect(cert.subjectAltName).toBe('DNS:mx.receiver.test, IP Address:127.0.0.1, IP Address:198.18.7.3');
    expect(cert.issuer).toBe(x509(ca.cert).subject);
    expect(cert.verify(x509(ca.cert).publicKey)).toBe(true);
    expect(cert.publicKey.asymmetricKeyType).toBe('ec');
    expect(cert.checkHost('mx.receiver.test')).toBe('mx.receiver.test');
    expect(cert.checkIP('198.18.7.3')).toBe('198.18.7.3');
    const now = Date.now();
    expect(Date.parse(cert.validFrom)).toBeLessThan(now);
    expect(Date.parse(cert.validTo)).toBeGreaterThan(now + 30 * 86_400_000);
  });

  it('is trusted by a client given the lab CA, by name and by address, and by nobody else', async () => {
    expect(await handshake(certs.sound, { servername: 'mx.receiver.test' })).toMatchObject({ ok: true });
    // No servername: the client checks the address it connected to (127.0.0.1, in the SANs here).
    expect(await handshake(certs.sound, {})).toMatchObject({ ok: true });
    expect(await handshake(certs.sound, { servername: 'other.receiver.test' })).toEqual({ ok: false, code: 'ERR_TLS_CERT_ALTNAME_INVALID' });
    // The system's trust store does not know the lab CA.
    expect(await handshake(certs.sound, { servername: 'mx.receiver.test', ca: undefined })).toEqual({ ok: false, code: 'UNABLE_TO_VERIFY_LEAF_SIGNATURE' });
  });

  it('needs a name, and addresses that are addresses', async () => {
    await expect(issueHostCertificate(ca, { names: [], addresses: [] })).rejects.toThrow(/DNS name/);
    await expect(issueHostCertificate(ca, { names: ['a.test'], addresses: ['a.test'] })).rejects.toThrow(/not an IP address/);
  });
});

describe('faulty certificates', () => {
  it('expired: from the lab CA, ended yesterday; a client says CERT_HAS_EXPIRED', async () => {
    const cert = x509(certs.expired.cert);
    expect(certs.expired.fault).toBe('expired');
    expect(cert.verify(x509(ca.cert).publicKey)).toBe(true);
    expect(Date.parse(cert.validTo)).toBeLessThan(Date.now());
    expect(cert.subjectAltName).toBe(x509(certs.sound.cert).subjectAltName);
    expect(await handshake(certs.expired, { servername: 'mx.receiver.test' })).toEqual({ ok: false, code: 'CERT_HAS_EXPIRED' });
  });

  it('not-yet-valid: from the lab CA, valid from tomorrow; a client says CERT_NOT_YET_VALID', async () => {
    const cert = x509(certs['not-yet-valid'].cert);
    expect(cert.verify(x509(ca.cert).publicKey)).toBe(true);
    expect(Date.parse(cert.validFrom)).toBeGreaterThan(Date.now());
    expect(await handshake(certs['not-yet-valid'], { servername: 'mx.receiver.test' })).toEqual({ ok: false, code: 'CERT_NOT_YET_VALID' });
  });

  it('wrong-name: from the lab CA, names none of the host names or addresses; a client says ERR_TLS_CERT_ALTNAME_INVALID', async () => {
    const cert = x509(certs['wrong-name'].cert);
    expect(cert.verify(x509(ca.cert).publicKey)).toBe(true);
    expect(cert.subjectAltName).toBe(`DNS:${WRONG_NAME}`);
    expect(await handshake(certs['wrong-name'], { servername: 'mx.receiver.test' })).toEqual({ ok: false, code: 'ERR_TLS_CERT_ALTNAME_INVALID' });
    expect(await handshake(certs['wrong-name'], {})).toEqual({ ok: false, code: 'ERR_TLS_CERT_ALTNAME_INVALID' });
  });

  it('self-signed: the right names, signed by its own key; a client with the lab CA says DEPTH_ZERO_SELF_SIGNED_CERT', async () => {
    const cert = x509(certs['self-signed'].cert);
    expect(cert.issuer).toBe(cert.subject);
    expect(cert.verify(cert.publicKey)).toBe(true);
    expect(cert.verify(x509(ca.cert).publicKey)).toBe(false);
    expect(cert.subjectAltName).toBe(x509(certs.sound.cert).subjectAltName);
    // OpenSSL's code for a leaf that is its own issuer (not SELF_SIGNED_CERT_IN_CHAIN: there is no chain).
    expect(await handshake(certs['self-signed'], { servername: 'mx.receiver.test' })).toEqual({ ok: false, code: 'DEPTH_ZERO_SELF_SIGNED_CERT' });
  });

  it('weak: the right names, from the lab CA, an RSA 1024 key (accepted at OpenSSL security level 1, refused at 2)', async () => {
    const cert = x509(certs.weak.cert);
    expect(cert.publicKey.asymmetricKeyType).toBe('rsa');
    expect(cert.publicKey.asymmetricKeyDetails?.modulusLength).toBe(1024);
    expect(cert.issuer).toBe(x509(ca.cert).subject);
    expect(cert.verify(x509(ca.cert).publicKey)).toBe(true);
    expect(cert.subjectAltName).toBe(x509(certs.sound.cert).subjectAltName);
    // The levels are explicit: Node 20 defaults to level 1, Node 22 and later to 2 (where the server could not even
    // load the key). The lab's servers load a weak key at level 1 (serverKeyOptions), as this server does.
    const server = { ciphers: 'DEFAULT:@SECLEVEL=1' };
    expect(await handshake(certs.weak, { servername: 'mx.receiver.test', ciphers: 'DEFAULT:@SECLEVEL=1' }, server)).toMatchObject({ ok: true });
    const strict = await handshake(certs.weak, { servername: 'mx.receiver.test', ciphers: 'DEFAULT:@SECLEVEL=2' }, server);
    expect(strict.ok).toBe(false);
  });
});

describe('issuing', () => {
  // How long issuing takes is the bench's to measure (a lab's boot), not a timed test's: here, that four hosts issued
  // at once each get a certificate of their own from the CA.
  it('issues certificates for several hosts at once, each its own and from the CA', async () => {
    const other = await createLabCa('concurrent');
    const issued = await Promise.all(['a', 'b', 'c', 'd'].map((h) => issueHostCertificate(other, { names: [`${h}.lab.test`], addresses: ['127.0.0.2'] })));
    const certs = issued.map((c) => x509(c.cert));
    expect(new Set(certs.map((c) => c.serialNumber)).size).toBe(4);
    expect(certs.map((c) => c.subjectAltName)).toEqual(['a', 'b', 'c', 'd'].map((h) => `DNS:${h}.lab.test, IP Address:127.0.0.2`));
    for (const c of certs) expect(c.verify(x509(other.cert).publicKey)).toBe(true);
  });
});
