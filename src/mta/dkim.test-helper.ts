// Test helpers shared by the DKIM tests of the MTA (dkim.test.ts, dkim-roundtrip.test.ts): signing keys with their
// DNS records, and dkimpy, the independent verifier (mailauth being the signer's own library).
import { execFile, execFileSync } from 'node:child_process';
import { generateKeyPairSync, type KeyObject } from 'node:crypto';
import type { DkimSigningConfig } from '../shared/config.js';

// ---- keys and their DNS records (RFC 6376 §3.6.1; Ed25519 per RFC 8463 §4: the raw 32-byte public key) ----

export type Algorithm = DkimSigningConfig['algorithm'];

export function newKey(algorithm: Algorithm, bits = 2048): { privateKey: string; publicKey: KeyObject } {
  const pair = algorithm === 'rsa-sha256' ? generateKeyPairSync('rsa', { modulusLength: bits }) : generateKeyPairSync('ed25519');
  return { privateKey: pair.privateKey.export({ format: 'pem', type: 'pkcs8' }) as string, publicKey: pair.publicKey };
}

export function keyRecord(algorithm: Algorithm, publicKey: KeyObject): string {
  if (algorithm === 'rsa-sha256') return `v=DKIM1; k=rsa; p=${publicKey.export({ format: 'der', type: 'spki' }).toString('base64')}`;
  // The SPKI DER of an Ed25519 key is a fixed 12-byte prefix and the raw key.
  const raw = publicKey.export({ format: 'der', type: 'spki' }).subarray(-32);
  return `v=DKIM1; k=ed25519; p=${raw.toString('base64')}`;
}

// ---- dkimpy, the independent verifier ----

/** A Python 3 that has dkimpy (Debian's python3-dkim may be outside a pyenv's path). */
export const dkimPython = ['python3', '/usr/bin/python3'].find((python) => {
  try {
    execFileSync(python, ['-c', 'import dkim'], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
});
export const dkimpyEd25519 = dkimPython !== undefined && (() => {
  try {
    execFileSync(dkimPython, ['-c', 'import nacl.signing'], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
})();
if (!dkimPython) console.log('dkimpy (python3-dkim) is not installed: signatures are verified with mailauth only');
else if (!dkimpyEd25519) console.log('dkimpy has no PyNaCl (python3-nacl): Ed25519 signatures are verified with mailauth only, RSA ones with both');

/** Whether dkimpy can verify a signature of `algorithm` here. */
export const dkimpyVerifies = (algorithm: Algorithm): boolean => dkimPython !== undefined && (algorithm === 'rsa-sha256' || dkimpyEd25519);

// dkimpy looks the key up through `dnsfunc`; it gets the TXT records the test gives it (read from the lab DNS or
// published by the test), so both verifiers read the same record.
const DKIMPY_VERIFY = `
import sys, json, dkim
records = json.loads(sys.argv[1])
def dnsfunc(name, timeout=5):
    txt = records.get(name.decode().rstrip('.').lower())
    return txt.encode() if txt is not None else None
message = sys.stdin.buffer.read()
print('pass' if dkim.verify(message, dnsfunc=dnsfunc) else 'fail')
`;

/** dkimpy's verdict ('pass' or 'fail') on the signatures of `message` (latin1 text: the bytes as sent). */
export function dkimpyVerify(message: string, records: Record<string, string>): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = execFile(dkimPython!, ['-c', DKIMPY_VERIFY, JSON.stringify(records)], { timeout: 15_000 }, (err, stdout, stderr) => {
      if (err) reject(new Error(`dkimpy failed: ${err.message}\n${stderr}`));
      else resolve(stdout.trim());
    });
    child.stdin!.end(Buffer.from(message, 'latin1'));
  });
}
