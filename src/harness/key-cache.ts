// The RSA keys a lab start needs (DKIM selectors, ARC sealers), kept between starts. Generating an RSA-2048 key
// costs 75–270 ms of CPU on a 2-core machine, the largest single cost of a lab start (bench, issue 17), and a lab's
// keys only ever sign mail inside that lab, whose DNS alone publishes them: so the keys are made once per machine
// and reused, as the docker runtime reuses its images. Within one start each key is a different one (the n-th key a
// start asks for is the n-th file), so two selectors never share a key.
//
// Where: $MAILLAB_KEY_CACHE, else $XDG_CACHE_HOME/maillab/keys, else ~/.cache/maillab/keys (directory 0700, files
// 0600, PKCS#8 PEM). MAILLAB_FRESH_KEYS=1 makes new keys at every start instead. A cache that cannot be written (a
// read-only home) costs only the time: keys are then made fresh.
import { createPrivateKey, createPublicKey, generateKeyPair, randomBytes, type KeyObject } from 'node:crypto';
import { promises as fs } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';

const generate = promisify(generateKeyPair);

/** The modulus of every lab RSA key (RFC 8301 §3.2: at least 1024 bits, 2048 recommended). */
export const LAB_RSA_BITS = 2048;

/** The directory of the kept keys. */
export function keyCacheDir(env: NodeJS.ProcessEnv = process.env): string {
  if (env.MAILLAB_KEY_CACHE) return path.resolve(env.MAILLAB_KEY_CACHE);
  return path.join(env.XDG_CACHE_HOME || path.join(os.homedir(), '.cache'), 'maillab', 'keys');
}

/** An RSA key pair: the private key as PKCS#8 PEM, and the public key. */
export interface LabRsaKey {
  privateKey: string;
  publicKey: KeyObject;
}

async function freshRsaKey(): Promise<LabRsaKey> {
  const pair = await generate('rsa', { modulusLength: LAB_RSA_BITS });
  return { privateKey: pair.privateKey.export({ type: 'pkcs8', format: 'pem' }).toString(), publicKey: pair.publicKey };
}

/** The kept key in `file`, or undefined when there is none or it is not a whole RSA key of LAB_RSA_BITS. */
async function keptRsaKey(file: string): Promise<LabRsaKey | undefined> {
  const pem = await fs.readFile(file, 'utf8').catch(() => undefined);
  if (!pem) return undefined;
  try {
    const key = createPrivateKey({ key: pem, format: 'pem' });
    if (key.asymmetricKeyType !== 'rsa' || key.asymmetricKeyDetails?.modulusLength !== LAB_RSA_BITS) return undefined;
    return { privateKey: pem, publicKey: createPublicKey(key) };
  } catch {
    return undefined;
  }
}

/**
 * The `index`-th RSA key of a lab start: the kept one, else a new one that is then kept (written to a temporary
 * file and renamed, so that labs starting at once in other processes read a whole key or none).
 */
export async function labRsaKey(index: number, env: NodeJS.ProcessEnv = process.env): Promise<LabRsaKey> {
  if (env.MAILLAB_FRESH_KEYS === '1') return freshRsaKey();
  const dir = keyCacheDir(env);
  const file = path.join(dir, `rsa${LAB_RSA_BITS}-${index}.pem`);
  const kept = await keptRsaKey(file);
  if (kept) return kept;
  const made = await freshRsaKey();
  try {
    await fs.mkdir(dir, { recursive: true, mode: 0o700 });
    const temporary = `${file}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`;
    await fs.writeFile(temporary, made.privateKey, { mode: 0o600 });
    await fs.rename(temporary, file);
  } catch {
    // Not kept (no writable cache): this start still has its key.
  }
  return made;
}
