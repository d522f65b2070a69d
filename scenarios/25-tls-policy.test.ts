// Scenario 25 (issue 11, the MTA's outbound policy): the MTA's TLS policy per destination domain, like Postfix's
// smtp_tls_security_level. The MX serves three domains, each with its own policy at the MTA:
//   receiver.test: may (opportunistic, the default), encrypt.test: encrypt, verify.test: verify.
// One message to bob in each shows, against an MX whose STARTTLS is stripped or whose certificate is faulty, which
// policy delivers and which defers with a `451 4.7.5` reply naming the policy, the domain and the reason.
import { describe, expect, it } from 'vitest';
import type { CertificateFault, LabDefinition, StartedLab } from '../src/harness/index.js';
import { useLab } from './support/lab.js';

const SECURE = { version: expect.stringMatching(/^TLSv1\.[23]$/), cipher: expect.any(String) };
const MAY = 'bob@receiver.test';
const ENCRYPT = 'bob@encrypt.test';
const VERIFY = 'bob@verify.test';
/** A short lifetime for the stripped-STARTTLS lab, to see the bounce too. */
const maxLifetimeMs = 2500;

/** The default lab with encrypt.test and verify.test on the same MX, and the MTA's policy for them. */
function policyLab(def: LabDefinition, tls: Partial<NonNullable<LabDefinition['tls']>>): void {
  for (const domain of ['encrypt.test', 'verify.test']) {
    def.domains[domain] = { mx: [{ host: 'mx', preference: 10 }] };
    def.users.push({ address: `bob@${domain}`, password: 'bob-secret' });
  }
  const mx = def.hosts.mx!;
  if (mx.role === 'mx') mx.domains = [...mx.domains, 'encrypt.test', 'verify.test'];
  def.tls = { ...def.tls, ...tls, outbound: { default: 'may', domains: { 'encrypt.test': 'encrypt', 'verify.test': 'verify' } } };
}

async function sendToAll(lab: StartedLab, subject: string) {
  return lab.client('alice@sender.test').send({ to: [MAY, ENCRYPT, VERIFY], subject, text: 'which policy gets through?' });
}

const relayedTo = (lab: StartedLab, messageId: string, rcpt: string) => lab.waitFor({ kind: 'relayed', messageId, detail: { rcpt } });
const deferredFor = (lab: StartedLab, messageId: string, rcpt: string) => lab.waitFor({ kind: 'deferred', messageId, detail: { rcpt } });

describe('STARTTLS stripped from the MX', () => {
  const lab = useLab((l) => l.withRetry({ schedule: [500], maxLifetimeMs }).with((def) => policyLab(def, { noStartTls: ['mx'] })));

  it('may delivers in plaintext; encrypt and verify defer naming TLS, then bounce with a DSN', async () => {
    const sent = await sendToAll(lab(), 'stripped');

    const relayed = await relayedTo(lab(), sent.messageId, MAY);
    expect(relayed.detail.tls, 'may: plaintext').toBeNull();
    expect(relayed.detail.tlsPolicy).toBe('may');

    for (const [rcpt, policy, domain] of [[ENCRYPT, 'encrypt', 'encrypt.test'], [VERIFY, 'verify', 'verify.test']] as const) {
      const deferred = await deferredFor(lab(), sent.messageId, rcpt);
      expect(deferred.detail.tlsPolicy).toBe(policy);
      expect(deferred.detail.status).toBe('4.7.5');
      expect(deferred.detail.reply).toMatch(new RegExp(`^451 4\\.7\\.5 mx\\.receiver\\.test\\[[^\\]]+\\]:\\d+: TLS required by policy ${policy} for ${domain.replace('.', '\\.')}, but the server did not offer STARTTLS`));
      const failed = lab().history.filter({ kind: 'connect-failed', messageId: sent.messageId }).filter((e) => e.detail.tlsPolicy === policy);
      expect(failed.length, `connect-failed under ${policy}`).toBeGreaterThanOrEqual(1);
      expect(failed[0]!.detail.error).toMatch(/did not offer STARTTLS/);
    }

    // Past the lifetime the two bounce to alice, with the TLS reason in the DSN.
    const expired = await lab().waitFor({ kind: 'expired', messageId: sent.messageId, detail: { rcpt: ENCRYPT } }, { timeoutMs: maxLifetimeMs + 10_000 });
    expect(expired.detail).toMatchObject({ tlsPolicy: 'encrypt', reply: expect.stringMatching(/^451 4\.7\.5 .*did not offer STARTTLS/) });
    const dsnEvent = await lab().waitFor({ kind: 'dsn-created', where: (e) => e.detail.for.messageId === sent.messageId }, { timeoutMs: maxLifetimeMs + 10_000 });
    expect([...dsnEvent.detail.rcpts].sort()).toEqual([ENCRYPT, VERIFY]);
    await lab().waitFor({ kind: 'stored', messageId: dsnEvent.detail.dsnMessageId, detail: { user: 'alice@sender.test' } });
    const [dsn] = await lab().mailbox('alice@sender.test').find(dsnEvent.detail.dsnMessageId);
    const raw = dsn!.raw.toString('utf8');
    expect(raw).toMatch(/Final-Recipient: rfc822; ?bob@encrypt\.test/i);
    expect(raw).toMatch(/TLS required by policy/);
  });
});

const CERTIFICATE_CASES: [CertificateFault, RegExp][] = [
  ['expired', /certificate has expired \(CERT_HAS_EXPIRED\)/],
  ['wrong-name', /ERR_TLS_CERT_ALTNAME_INVALID/],
  ['self-signed', /self-signed certificate \(DEPTH_ZERO_SELF_SIGNED_CERT\)/],
];

for (const [fault, reason] of CERTIFICATE_CASES) {
  describe(`an MX with a ${fault} certificate`, () => {
    const lab = useLab((l) => l.with((def) => policyLab(def, { certificates: { mx: fault } })));

    it('may and encrypt deliver over TLS (unverified); verify defers with the certificate problem', async () => {
      const sent = await sendToAll(lab(), fault);

      for (const [rcpt, policy] of [[MAY, 'may'], [ENCRYPT, 'encrypt']] as const) {
        const relayed = await relayedTo(lab(), sent.messageId, rcpt);
        expect(relayed.detail.tls, `${policy}: TLS without verification`).toEqual(SECURE);
        expect(relayed.detail.tlsPolicy).toBe(policy);
      }
      const deferred = await deferredFor(lab(), sent.messageId, VERIFY);
      expect(deferred.detail.tlsPolicy).toBe('verify');
      expect(deferred.detail.status).toBe('4.7.5');
      expect(deferred.detail.reply).toMatch(/^451 4\.7\.5 .*TLS required by policy verify for verify\.test, but the certificate of mx\.receiver\.test failed verification: /);
      expect(deferred.detail.reply).toMatch(reason);
      expect(lab().history.filter({ kind: 'received', node: 'mx', messageId: sent.messageId }).flatMap((e) => e.detail.to), 'the MX never got the verify.test copy').not.toContain(VERIFY);
    });
  });
}

describe('an MX with a sound certificate', () => {
  const lab = useLab((l) => l.with((def) => policyLab(def, {})));

  it('verify delivers, and the relayed event shows the policy and the TLS session', async () => {
    const sent = await sendToAll(lab(), 'sound');
    for (const [rcpt, policy] of [[MAY, 'may'], [ENCRYPT, 'encrypt'], [VERIFY, 'verify']] as const) {
      const relayed = await relayedTo(lab(), sent.messageId, rcpt);
      expect(relayed.detail.tls, policy).toEqual(SECURE);
      expect(relayed.detail.tlsPolicy).toBe(policy);
    }
    expect(lab().history.filter({ kind: 'connect-failed', messageId: sent.messageId })).toEqual([]);
  });
});
