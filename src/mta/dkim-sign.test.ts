// The MTA's DKIM signer on the edges of RFC 6376's canonicalizations, each signature checked by two verifiers that
// are not it: mailauth's and dkimpy's (Python). Bodies empty, ending without a line end, with trailing empty lines and
// whitespace, with bare LF line ends; headers folded, repeated, long lists in h=, raw UTF-8 (RFC 6532).
import { createPrivateKey } from 'node:crypto';
import { dkimVerify } from 'mailauth/lib/dkim/verify.js';
import { describe, expect, it } from 'vitest';
import type { DkimSigningConfig } from '../shared/config.js';
import { bodyHash, dkimSignature, DEFAULT_SIGNED_FIELDS } from './dkim-sign.js';
import { dkimpyVerifies, dkimpyVerify, keyRecord, newKey, type Algorithm } from './dkim.test-helper.js';

const KEY_NAME = 'k1._domainkey.sender.test';
const keys = { 'rsa-sha256': newKey('rsa-sha256'), 'ed25519-sha256': newKey('ed25519-sha256') };

function signed(raw: string, algorithm: Algorithm, canonicalization: DkimSigningConfig['canonicalization'], headers?: string[]): Buffer {
  const message = Buffer.from(raw, 'latin1');
  const header = dkimSignature(message, { domain: 'sender.test', selector: 'k1', key: createPrivateKey(keys[algorithm].privateKey), algorithm, canonicalization, ...(headers ? { headers } : {}) }, new Date());
  return Buffer.concat([Buffer.from(header, 'latin1'), message]);
}

/** Both verifiers' verdicts on `message` (as a verifier receives it: CRLF line ends, which SMTP transmits). */
async function verdicts(message: Buffer, algorithm: Algorithm): Promise<string[]> {
  const sent = Buffer.from(message.toString('latin1').replace(/\r?\n/g, '\r\n'), 'latin1');
  const txt = keyRecord(algorithm, keys[algorithm].publicKey);
  const result = await dkimVerify(sent, {
    resolver: async (name: string, type: string) => {
      if (type !== 'TXT' || name !== KEY_NAME) throw Object.assign(new Error(`unexpected ${type} query for ${name}`), { code: 'ENOTFOUND' });
      return [[txt]];
    },
  });
  const out = result.results.map((r) => `mailauth ${r.status.result}${r.status.comment ? ` (${r.status.comment})` : ''}`);
  if (dkimpyVerifies(algorithm)) out.push(`dkimpy ${await dkimpyVerify(sent.toString('latin1'), { [KEY_NAME]: txt })}`);
  return out;
}

const HEAD = 'From: Alice <alice@sender.test>\r\nTo: bob@receiver.test\r\nSubject: edges\r\nDate: Mon, 30 Nov 2026 09:58:20 +0000\r\nMessage-ID: <edge@sender.test>\r\n';

const bodies: Record<string, string> = {
  'an empty body': `${HEAD}\r\n`,
  'a body without a final line end': `${HEAD}\r\nlast line`,
  'trailing empty lines and whitespace': `${HEAD}\r\nline one  \t \r\n\tindented\t line\r\n\r\n \r\n\r\n`,
  'bare LF line ends': HEAD.replace(/\r\n/g, '\n') + '\nfirst\nsecond \n\n',
  'folded, repeated and UTF-8 headers': `${HEAD}Subject:  second\r\n  subject, folded\t \r\nX-Name: J\xc3\xbcrgen\r\nCc: carol@receiver.test,\r\n\tdave@receiver.test\r\n\r\nbody\r\n`,
};

describe('dkimSignature', () => {
  for (const algorithm of ['rsa-sha256', 'ed25519-sha256'] as const) {
    for (const canonicalization of ['relaxed/relaxed', 'simple/simple', 'relaxed/simple', 'simple/relaxed'] as const) {
      it(`${algorithm} ${canonicalization}: every edge verifies with mailauth and dkimpy, and a changed body fails`, async () => {
        for (const [what, raw] of Object.entries(bodies)) {
          const message = signed(raw, algorithm, canonicalization);
          expect(await verdicts(message, algorithm), what).toEqual(dkimpyVerifies(algorithm) ? ['mailauth pass', 'dkimpy pass'] : ['mailauth pass']);
        }
        const tampered = Buffer.from(signed(bodies['a body without a final line end']!, algorithm, canonicalization).toString('latin1').replace('last line', 'last  line!'), 'latin1');
        expect((await verdicts(tampered, algorithm)).every((v) => !v.endsWith(' pass'))).toBe(true);
      });
    }
  }

  it('signs every instance of a listed field bottom up, names them as the message spells them, and folds a long h=', () => {
    const header = dkimSignature(Buffer.from(bodies['folded, repeated and UTF-8 headers']!, 'latin1'), { domain: 'sender.test', selector: 'k1', key: createPrivateKey(keys['rsa-sha256'].privateKey), algorithm: 'rsa-sha256', canonicalization: 'relaxed/relaxed' }, new Date(1_800_000_000_000));
    expect(header).toMatch(/^DKIM-Signature: v=1; a=rsa-sha256; c=relaxed\/relaxed; d=sender\.test; s=k1;/);
    expect(header).toContain('t=1800000000;');
    const h = /;\s*h=([^;]*);/.exec(header)![1]!.replace(/\s+/g, '');
    expect(h).toBe('Cc:Subject:Message-ID:Date:Subject:To:From');
    expect(header.split('\r\n').every((line) => line.length <= 78)).toBe(true);
    expect(header.endsWith('\r\n')).toBe(true);
    expect(DEFAULT_SIGNED_FIELDS).toContain('From');
  });
});

describe('bodyHash', () => {
  it("gives RFC 6376's hashes of an empty body: CRLF in simple, nothing in relaxed (§3.4.3, §3.4.4)", () => {
    // The SHA-256 of "\r\n" and of "", as RFC 6376 §3.4.3's and RFC 8463's examples have them.
    expect(bodyHash('', false)).toBe('frcCV1k9oG9oKj3dpUqdJg1PxRT2RSN/XKdLCPjaYaY=');
    expect(bodyHash('\r\n\r\n', false)).toBe('frcCV1k9oG9oKj3dpUqdJg1PxRT2RSN/XKdLCPjaYaY=');
    expect(bodyHash('', true)).toBe('47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=');
    expect(bodyHash(' \r\n\t\r\n', true)).toBe('47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=');
  });
});
