// The kept RSA keys of lab starts: made once, reused, one per index, replaced when damaged, private to the user,
// and fresh on request or when the cache cannot be written.
import { createPrivateKey, createPublicKey } from 'node:crypto';
import { promises as fs } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { keyCacheDir, labRsaKey, LAB_RSA_BITS } from './key-cache.js';

const root = await fs.mkdtemp(path.join(os.tmpdir(), 'maillab-key-cache-'));
afterAll(() => fs.rm(root, { recursive: true, force: true }));

const publicPem = (k: { publicKey: { export(o: { type: 'spki'; format: 'pem' }): string | Buffer } }) => k.publicKey.export({ type: 'spki', format: 'pem' }).toString();

describe('the lab key cache', () => {
  it('keeps the n-th key of a start and gives it again; another index is another key', async () => {
    const env = { MAILLAB_KEY_CACHE: path.join(root, 'kept') };
    const first = await labRsaKey(0, env);
    const again = await labRsaKey(0, env);
    const other = await labRsaKey(1, env);
    expect(again.privateKey).toBe(first.privateKey);
    expect(publicPem(again)).toBe(publicPem(first));
    expect(other.privateKey).not.toBe(first.privateKey);
    // The public key is the private key's.
    expect(publicPem(first)).toBe(createPublicKey(createPrivateKey(first.privateKey)).export({ type: 'spki', format: 'pem' }).toString());
    expect(createPrivateKey(first.privateKey).asymmetricKeyDetails?.modulusLength).toBe(LAB_RSA_BITS);
    // Private to the user: the directory 0700, each key 0600, and no temporary file left.
    expect((await fs.stat(env.MAILLAB_KEY_CACHE)).mode & 0o777).toBe(0o700);
    const files = (await fs.readdir(env.MAILLAB_KEY_CACHE)).sort();
    expect(files).toEqual([`rsa${LAB_RSA_BITS}-0.pem`, `rsa${LAB_RSA_BITS}-1.pem`]);
    for (const f of files) expect((await fs.stat(path.join(env.MAILLAB_KEY_CACHE, f))).mode & 0o777).toBe(0o600);
  });

  it('replaces a damaged key file with a new key', async () => {
    const env = { MAILLAB_KEY_CACHE: path.join(root, 'damaged') };
    const before = await labRsaKey(0, env);
    const file = path.join(env.MAILLAB_KEY_CACHE, `rsa${LAB_RSA_BITS}-0.pem`);
    await fs.writeFile(file, before.privateKey.slice(0, 200));
    const after = await labRsaKey(0, env);
    expect(after.privateKey).not.toBe(before.privateKey);
    expect(await fs.readFile(file, 'utf8')).toBe(after.privateKey);
  });

  it('makes a new key every time with MAILLAB_FRESH_KEYS=1, keeping nothing', async () => {
    const env = { MAILLAB_KEY_CACHE: path.join(root, 'fresh'), MAILLAB_FRESH_KEYS: '1' };
    const a = await labRsaKey(0, env);
    const b = await labRsaKey(0, env);
    expect(a.privateKey).not.toBe(b.privateKey);
    await expect(fs.stat(env.MAILLAB_KEY_CACHE)).rejects.toMatchObject({ code: 'ENOENT' });
  });

  it('still gives a key when the cache cannot be written', async () => {
    const blocker = path.join(root, 'a-file');
    await fs.writeFile(blocker, 'not a directory');
    const key = await labRsaKey(0, { MAILLAB_KEY_CACHE: path.join(blocker, 'keys') });
    expect(createPrivateKey(key.privateKey).asymmetricKeyType).toBe('rsa');
  });

  it('lives in MAILLAB_KEY_CACHE, else under XDG_CACHE_HOME, else ~/.cache', () => {
    expect(keyCacheDir({ MAILLAB_KEY_CACHE: '/x/keys', XDG_CACHE_HOME: '/y' })).toBe('/x/keys');
    expect(keyCacheDir({ XDG_CACHE_HOME: '/y' })).toBe('/y/maillab/keys');
    expect(keyCacheDir({})).toBe(path.join(os.homedir(), '.cache', 'maillab', 'keys'));
  });
});
