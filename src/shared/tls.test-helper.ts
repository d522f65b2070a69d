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

let cached: Promise<TestPki> | undefined;

async function make(): Promise<TestPki> {
  const ca = await selfsigned.generate([{ name: 'commonName', value: 'maillab test CA' }], {
    keyType: 'ec',
    algorithm: 'sha256',
    extensions: [
      { name: 'basicConstraints', cA: true, critical: true },
      { name: 'keyUsage', keyCertSign: true, cRLSign: true, critical: true },
    ],
  } as any);
  const leaf = await selfsigned.generate([{ name: 'commonName', value: 'localhost' }], {
    keyType: 'ec',
    algorithm: 'sha256',
    ca: { key: ca.private, cert: ca.cert },
    extensions: [
      { name: 'basicConstraints', cA: false, critical: true },
      { name: 'keyUsage', digitalSignature: true, keyEncipherment: true, critical: true },
      { name: 'extKeyUsage', serverAuth: true },
      { name: 'subjectAltName', altNames: [{ type: 2, value: 'localhost' }, { type: 7, ip: '127.0.0.1' }] },
    ],
  } as any);
  const dir = mkdtempSync(path.join(os.tmpdir(), 'maillab-pki-'));
  const caFile = path.join(dir, 'ca.pem');
  writeFileSync(caFile, ca.cert);
  return { ca: ca.cert, caFile, tls: { cert: leaf.cert, key: leaf.private, ca: ca.cert } };
}

/** One CA and leaf per test process (issuing takes a few milliseconds, but there is no need to repeat it). */
export function testPki(): Promise<TestPki> {
  return (cached ??= make());
}
