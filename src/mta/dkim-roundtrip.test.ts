// The DKIM signature the MTA writes verifies however slowly the machine runs while it signs. mailauth's signer, left
// to read the clock itself, read it twice — for the `t=` of the header it signed and again, after the signing, for
// the `t=` of the header it wrote — each rounded to the second; a busy machine (signing taking tens to hundreds of
// milliseconds) crossed a half second between the two reads often enough for the lab's own MX to say
// `dkim=fail (bad signature)` now and then. Here the clock moves a whole second at each read while the signer works,
// so two reads always disagree: the signature must still verify, with mailauth and with dkimpy.
import { dkimVerify } from 'mailauth/lib/dkim/verify.js';
import { afterEach, describe, expect, it, vi } from 'vitest';
import type { DkimSigningConfig } from '../shared/config.js';
import { DkimSigner } from './dkim.js';
import { dkimpyVerifies, dkimpyVerify, keyRecord, newKey, type Algorithm } from './dkim.test-helper.js';

const KEY_NAME = 'lab._domainkey.sender.test';

/** The message of the failing lab run: alice to bob and carol, subject 'matchers', text 'hello', as the MTA queues it. */
const MESSAGE = Buffer.from(
  [
    'Received: from client.sender.test (client.sender.test [127.0.0.1]) by mta.sender.test with ESMTPS id 0A1B2C3D; Mon, 30 Nov 2026 09:58:20 +0000',
    'From: alice@sender.test',
    'To: bob@receiver.test, carol@receiver.test',
    'Subject: matchers',
    'Message-ID: <20261130095820.0A1B2C3D@mta.sender.test>',
    'Date: Mon, 30 Nov 2026 09:58:20 +0000',
    'MIME-Version: 1.0',
    'Content-Type: text/plain; charset=utf-8',
    'Content-Transfer-Encoding: 7bit',
    '',
    'hello',
    '',
  ].join('\r\n'),
);

/** Signs MESSAGE while every read of `Date.now` comes a second after the one before: a machine at its slowest. */
async function signOnSlowClock(signer: DkimSigner): Promise<Buffer> {
  const realNow = Date.now.bind(Date);
  let reads = 0;
  vi.spyOn(Date, 'now').mockImplementation(() => realNow() + 1000 * reads++);
  try {
    return (await signer.sign(MESSAGE, 'sender.test')).message;
  } finally {
    vi.restoreAllMocks();
  }
}

afterEach(() => {
  vi.restoreAllMocks();
});

describe('a DKIM signature made while the clock moves on', () => {
  const cases: { algorithm: Algorithm; canonicalization: DkimSigningConfig['canonicalization'] }[] = [
    { algorithm: 'rsa-sha256', canonicalization: 'relaxed/relaxed' },
    { algorithm: 'rsa-sha256', canonicalization: 'simple/simple' },
    { algorithm: 'ed25519-sha256', canonicalization: 'relaxed/relaxed' },
  ];

  it.each(cases)('$algorithm $canonicalization verifies, its t= the time of signing', async ({ algorithm, canonicalization }) => {
    const { privateKey, publicKey } = newKey(algorithm);
    const txt = keyRecord(algorithm, publicKey);
    const signer = new DkimSigner([{ domain: 'sender.test', selector: 'lab', algorithm, canonicalization, privateKey }]);

    const before = Math.floor(Date.now() / 1000);
    const signed = await signOnSlowClock(signer);
    const after = Math.floor(Date.now() / 1000);

    const header = signed.toString('latin1').split(/\r\n(?![ \t])/)[0]!;
    const verdict = await dkimVerify(signed, {
      resolver: async (name: string, type: string) => {
        if (type !== 'TXT' || name !== KEY_NAME) throw Object.assign(new Error(`unexpected ${type} query for ${name}`), { code: 'ENOTFOUND' });
        return [[txt]];
      },
    });
    expect(verdict.results.map((r) => `${r.status.result}${r.status.comment ? ` (${r.status.comment})` : ''}`), header).toEqual(['pass']);
    if (dkimpyVerifies(algorithm)) expect(await dkimpyVerify(signed.toString('latin1'), { [KEY_NAME]: txt }), header).toBe('pass');

    const t = Number(/;\s*t=(\d+)/.exec(header)?.[1]);
    expect(t, header).toBeGreaterThanOrEqual(before);
    expect(t, header).toBeLessThanOrEqual(after);
  });
});
