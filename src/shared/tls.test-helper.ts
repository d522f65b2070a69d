// For tests only: a throwaway CA and a leaf for 127.0.0.1/localhost issued by it (selfsigned), and the TlsConfig
// a node takes. The lab's own CA module is a separate thing; this is the minimum the protocol tests need.
import { mkdtempSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import selfsigned from 'selfsigned';
import type { TlsConfig } from './config.js';

export interface TestPki {
  /** The CA certificate (PEM). */
  ca: string;
  /** The CA certificate written to a file, for clients that take a path (Python's cafile). */
  caFile: string;
  tls: TlsConfig;
}

let cachedCa: Promise<{ cert: string; private: string; caFile: string }> | undefined;

async function makeCa() {
  const ca = await selfsigned.generate([{ name: 'commonName', value: 'maillab test CA' }], {
    keyType: 'ec',
    algorithm: 'sha256',
    extensions: [
      { name: 'basicConstraints', cA: true, critical: true },
      { name: 'keyUsage', keyCertSign: true, cRLSign: true, critical: true },
    ],
  } as any);
  const dir = mkdtempSync(path.join(os.tmpdir(), 'maillab-pki-'));
  const caFile = path.join(dir, 'ca.pem');
  writeFileSync(caFile, ca.cert);
  return { cert: ca.cert, private: ca.private, caFile };
}

async function make(ips: string[]): Promise<TestPki> {
  const ca = await (cachedCa ??= makeCa());
  const leaf = await selfsigned.generate([{ name: 'commonName', value: 'localhost' }], {
    keyType: 'ec',
    algorithm: 'sha256',
    ca: { key: ca.private, cert: ca.cert },
    extensions: [
      { name: 'basicConstraints', cA: false, critical: true },
      { name: 'keyUsage', digitalSignature: true, keyEncipherment: true, critical: true },
      { name: 'extKeyUsage', serverAuth: true },
      { name: 'subjectAltName', altNames: [{ type: 2, value: 'localhost' }, { type: 7, ip: '127.0.0.1' }, ...ips.map((ip) => ({ type: 7, ip }))] },
    ],
  } as any);
  return { ca: ca.cert, caFile: ca.caFile, tls: { cert: leaf.cert, key: leaf.private, ca: ca.cert } };
}

/**
 * One CA per test process, and a leaf from it naming localhost, 127.0.0.1 and `ips` (the 127.x.y.z addresses a test
 * binds its servers to, so that clients that check the address, such as Python's ssl, can).
 */
export function testPki(ips: string[] = []): Promise<TestPki> {
  return make(ips);
}
