import { describe, expect, it } from 'vitest';
import defaultLab from '../../lab/default.js';
import { mermaidText } from './diagram.js';
import { REDACTED, redactSecrets, redactText, secretsIn } from './redact.js';

describe('redactText', () => {
  it.each([
    ['AUTH PLAIN AGFsaWNlQHNlbmRlci50ZXN0AGFsaWNlLXNlY3JldA==', `AUTH PLAIN ${REDACTED}`],
    ['C: AUTH LOGIN YWxpY2U=\r\nS: 334 UGFzc3dvcmQ6', `C: AUTH LOGIN ${REDACTED}\r\nS: 334 UGFzc3dvcmQ6`],
    ['a1 AUTHENTICATE XOAUTH2 dXNlcj1ib2IBYXV0aD1CZWFyZXIgeHl6AQE=', `a1 AUTHENTICATE XOAUTH2 ${REDACTED}`],
    ['a1 LOGIN bob@receiver.test "bob secret"', `a1 LOGIN bob@receiver.test ${REDACTED}`],
    ['a2 LOGIN bob hunter2', `a2 LOGIN bob ${REDACTED}`],
    ['USER bob\r\nPASS hunter2\r\nSTAT', `USER bob\r\nPASS ${REDACTED}\r\nSTAT`],
    ['Authorization: Bearer abc.def.ghi', `Authorization: Bearer ${REDACTED}`],
    ['GET /send?api_key=k3y-v4lue&to=bob', `GET /send?api_key=${REDACTED}&to=bob`],
    ['{"password":"hunter2","user":"bob"}', `{"password":"${REDACTED}","user":"bob"}`],
    ['otpauth://totp/lab:dave?secret=JBSWY3DPEHPK3PXP&issuer=lab', `otpauth://totp/lab:dave?secret=${REDACTED}&issuer=lab`],
    ['-----BEGIN PRIVATE KEY-----\nMIIEvQ\n-----END PRIVATE KEY-----', `-----BEGIN PRIVATE KEY-----${REDACTED}-----END PRIVATE KEY-----`],
  ])('redacts %j', (text, expected) => {
    expect(redactText(text)).toBe(expected);
  });

  it('leaves text without credentials as it is', () => {
    for (const text of ['550 5.1.1 <nobody@receiver.test>: no such user here', 'LOGIN failed for bob', 'auth-failed', '535 5.7.8 Authentication credentials invalid', 'PASSED 3 tests']) {
      expect(redactText(text)).toBe(text);
    }
  });

  it('replaces the known secrets wherever they appear, the longest first', () => {
    expect(redactText('the token is abcd-1234-xyz and abcd-1234', ['abcd-1234', 'abcd-1234-xyz', 'ab'])).toBe(`the token is ${REDACTED} and ${REDACTED}`);
  });
});

describe('redactSecrets', () => {
  it('empties secret-named fields, keeps an API key\'s prefix, counts and flags, and redacts strings everywhere', () => {
    const event = {
      detail: {
        user: 'alice@sender.test',
        password: 'alice-secret',
        totpSecret: 'JBSWY3DPEHPK3PXP',
        controlToken: 'c0ffee',
        apiKey: 'maillab-default-api-key-sender-test',
        appPasswords: [{ name: 'laptop', password: 'x-y-z-w' }],
        apiKeys: 2,
        code: 250,
        reply: 'said alice-secret in reply to AUTH PLAIN AGFsaWNl',
      },
    };
    expect(redactSecrets(event, ['alice-secret'])).toEqual({
      detail: {
        user: 'alice@sender.test',
        password: REDACTED,
        totpSecret: REDACTED,
        controlToken: REDACTED,
        apiKey: `mail…${REDACTED}`,
        appPasswords: [{ name: 'laptop', password: REDACTED }],
        apiKeys: 2,
        code: 250,
        reply: `said ${REDACTED} in reply to AUTH PLAIN ${REDACTED}`,
      },
    });
  });

  it('finds the secrets of a lab definition: passwords, app passwords, TOTP secrets, API keys; not the names', () => {
    const secrets = secretsIn(defaultLab);
    expect(secrets).toEqual(expect.arrayContaining(['alice-secret', 'bob-secret', 'dave-secret', 'JBSWY3DPEHPK3PXPMAILLAB2', 'dave-laptop-app-password', 'maillab-default-api-key-sender-test']));
    expect(secrets).not.toContain('laptop');
    expect(secrets).not.toContain('alice@sender.test');
  });
});

describe('mermaidText', () => {
  it('leaves only plain characters and entity codes: nothing can end a statement, open a comment or become markup', () => {
    const hostile = 'a<img src=x onerror=alert(1)>; %%{init: {"securityLevel":"loose"}}%%\nNote over p0: #35; end -->> p1: x';
    const escaped = mermaidText(hostile);
    expect(escaped).toMatch(/^(?:[A-Za-z0-9 .,@_\-+=()'/?!*]|#\d+;)*$/);
    expect(escaped).not.toContain('\n');
    expect(escaped.replace(/#(\d+);/g, (_m, code: string) => String.fromCodePoint(Number(code)))).toBe(hostile.replace(/\s+/g, ' '));
  });
});
