// Scenario 26 (issue 11, MTA-STS, RFC 8461): destinations that publish a policy. The lab DNS publishes
// `_mta-sts.<domain>` TXT records and the lab's policy host (the dns host) serves each policy over HTTPS at
// `mta-sts.<domain>` with a certificate from the lab CA. The MX serves every domain; the MTA has no mode of its own for
// them (`may` by default), so the published policy decides:
//   enforce.test   mode enforce, mx: mx.receiver.test
//   testing.test   mode testing, mx: mx.receiver.test
//   elsewhere.test mode enforce, mx: mx.elsewhere.test (not our MX)
//   badsite.test   mode enforce, but its policy site's certificate has expired
//   receiver.test  no policy
// With an expired MX certificate, enforce defers, testing delivers and reports, may delivers. With a sound one,
// enforce delivers over verified TLS, and the policy comes from the cache until its TXT id changes.
import { describe, expect, it } from 'vitest';
import type { LabDefinition, StartedLab } from '../src/harness/index.js';
import { useLab } from './support/lab.js';

const SECURE = { version: expect.stringMatching(/^TLSv1\.[23]$/), cipher: expect.any(String) };
const [ENFORCE, TESTING, ELSEWHERE, BADSITE, NONE] = ['enforce.test', 'testing.test', 'elsewhere.test', 'badsite.test', 'receiver.test'].map((d) => `bob@${d}`) as [string, string, string, string, string];

function stsLab(def: LabDefinition): void {
  const policies = {
    'enforce.test': { mode: 'enforce' },
    'testing.test': { mode: 'testing' },
    'elsewhere.test': { mode: 'enforce', mx: ['mx.elsewhere.test'] },
    'badsite.test': { mode: 'enforce', certificate: 'expired' },
  } as const;
  for (const [domain, mtaSts] of Object.entries(policies)) {
    def.domains[domain] = { mx: [{ host: 'mx', preference: 10 }], mtaSts: { ...mtaSts, mx: 'mx' in mtaSts ? [...mtaSts.mx] : undefined } };
    def.users.push({ address: `bob@${domain}`, password: 'bob-secret' });
  }
  const mx = def.hosts.mx!;
  if (mx.role === 'mx') mx.domains = [...mx.domains, ...Object.keys(policies)];
}

const send = (lab: StartedLab, to: string[], subject: string) => lab.client('alice@sender.test').send({ to, subject, text: 'does the policy let it through?' });
const relayedTo = (lab: StartedLab, messageId: string, rcpt: string) => lab.waitFor({ kind: 'relayed', messageId, detail: { rcpt } });
const deferredFor = (lab: StartedLab, messageId: string, rcpt: string) => lab.waitFor({ kind: 'deferred', messageId, detail: { rcpt } });

describe('MTA-STS against an MX whose certificate has expired', () => {
  const lab = useLab((l) => l.with((def) => {
    stsLab(def);
    def.tls = { ...def.tls, certificates: { mx: 'expired' } };
  }));

  it('enforce defers with the certificate problem; testing delivers and reports it; no policy delivers', async () => {
    const sent = await send(lab(), [ENFORCE, TESTING, NONE], 'expired MX certificate');

    const deferred = await deferredFor(lab(), sent.messageId, ENFORCE);
    expect(deferred.detail.tlsPolicy).toBe('mta-sts');
    expect(deferred.detail.status).toBe('4.7.5');
    expect(deferred.detail.reply).toMatch(/^451 4\.7\.5 mx\.receiver\.test\[[^\]]+\]:\d+: TLS required by policy mta-sts for enforce\.test, but the certificate of mx\.receiver\.test failed verification: certificate has expired \(CERT_HAS_EXPIRED\)/);
    const enforced = await lab().waitFor({ kind: 'tls-policy-failure', messageId: sent.messageId, detail: { domain: 'enforce.test' } });
    expect(enforced.detail).toMatchObject({ tlsPolicy: 'mta-sts', enforced: true, resultType: 'certificate-expired', mx: 'mx.receiver.test' });

    const tested = await relayedTo(lab(), sent.messageId, TESTING);
    expect(tested.detail.tls, 'testing: delivered over TLS all the same').toEqual(SECURE);
    const reported = await lab().waitFor({ kind: 'tls-policy-failure', messageId: sent.messageId, detail: { domain: 'testing.test' } });
    expect(reported.detail).toMatchObject({ tlsPolicy: 'mta-sts-testing', enforced: false, resultType: 'certificate-expired', reason: expect.stringMatching(/CERT_HAS_EXPIRED/) });

    const plain = await relayedTo(lab(), sent.messageId, NONE);
    expect(plain.detail.tls).toEqual(SECURE);
    expect(plain.detail.tlsPolicy, 'no policy published: the configured mode').toBe('may');

    // Each policy was fetched over HTTPS from the policy host, and the MX never saw the enforce.test copy.
    for (const domain of ['enforce.test', 'testing.test']) {
      const policy = await lab().waitFor({ kind: 'mta-sts', messageId: sent.messageId, detail: { domain } });
      expect(policy.detail).toMatchObject({ mode: domain.startsWith('enforce') ? 'enforce' : 'testing', mx: ['mx.receiver.test'], source: 'fetched', id: expect.stringMatching(/^[0-9a-f]{20}$/) });
    }
    expect(lab().history.filter({ kind: 'policy-fetch', node: 'dns' }).map((e) => [e.detail.domain, e.detail.status]).sort()).toEqual([
      ['enforce.test', 200],
      ['testing.test', 200],
    ]);
    expect(lab().history.filter({ kind: 'received', node: 'mx', messageId: sent.messageId }).flatMap((e) => e.detail.to)).not.toContain(ENFORCE);
  });
});

describe('MTA-STS against an MX with a sound certificate', () => {
  const lab = useLab((l) => l.with(stsLab));

  it('enforce delivers over verified TLS; an MX the policy does not list is never connected to', async () => {
    const sent = await send(lab(), [ENFORCE, ELSEWHERE], 'sound');
    const relayed = await relayedTo(lab(), sent.messageId, ENFORCE);
    expect(relayed.detail).toMatchObject({ tls: SECURE, tlsPolicy: 'mta-sts' });

    const deferred = await deferredFor(lab(), sent.messageId, ELSEWHERE);
    expect(deferred.detail).toMatchObject({ tlsPolicy: 'mta-sts', status: '4.7.5' });
    expect(deferred.detail.reply).toMatch(/^451 4\.7\.5 .*TLS required by policy mta-sts for elsewhere\.test, but mx\.receiver\.test is not an MX the MTA-STS policy of elsewhere\.test \(id \w+\) lists \(mx: mx\.elsewhere\.test\)/);
    const failure = await lab().waitFor({ kind: 'tls-policy-failure', messageId: sent.messageId, detail: { domain: 'elsewhere.test' } });
    expect(failure.detail).toMatchObject({ enforced: true, resultType: 'validation-failure' });
    const connects = lab().history.filter({ kind: 'connect', messageId: sent.messageId });
    expect(connects.length, 'one connection, for enforce.test only').toBe(1);
  });

  it('a policy site whose certificate fails gives no policy: delivered as without one, and reported', async () => {
    const sent = await send(lab(), [BADSITE], 'bad policy site');
    const relayed = await relayedTo(lab(), sent.messageId, BADSITE);
    expect(relayed.detail.tls).toEqual(SECURE);
    expect(relayed.detail.tlsPolicy, 'no policy to be had: the configured mode').toBe('may');
    const policy = await lab().waitFor({ kind: 'mta-sts', messageId: sent.messageId, detail: { domain: 'badsite.test' } });
    expect(policy.detail.error).toMatch(/mta-sts\.badsite\.test.*(CERT_HAS_EXPIRED|certificate has expired)/);
    const failure = await lab().waitFor({ kind: 'tls-policy-failure', messageId: sent.messageId, detail: { domain: 'badsite.test' } });
    expect(failure.detail).toMatchObject({ resultType: 'sts-webpki-invalid', enforced: false });
  });

  it('the policy comes from the cache until the TXT id changes; then the new one is fetched and applies', async () => {
    const fetches = () => lab().history.filter({ kind: 'policy-fetch', node: 'dns', detail: { domain: 'enforce.test' } }).length;
    const before = fetches();
    const again = await send(lab(), [ENFORCE], 'cached');
    await relayedTo(lab(), again.messageId, ENFORCE);
    expect((await lab().waitFor({ kind: 'mta-sts', messageId: again.messageId })).detail.source).toBe('cache');
    expect(fetches()).toBe(before);

    // The domain moves to testing mode: new policy text, new TXT id.
    await lab().nodeOf('dns').control().call('set-mta-sts-policy', { domain: 'enforce.test', policy: 'version: STSv1\r\nmode: testing\r\nmx: mx.receiver.test\r\nmax_age: 600\r\n' });
    await lab().dns.setRecords('_mta-sts.enforce.test', 'TXT', [{ data: 'v=STSv1; id=20261130changed' }]);
    const changed = await send(lab(), [ENFORCE], 'changed policy');
    const relayed = await relayedTo(lab(), changed.messageId, ENFORCE);
    const policy = await lab().waitFor({ kind: 'mta-sts', messageId: changed.messageId });
    expect(policy.detail).toMatchObject({ source: 'fetched', mode: 'testing', id: '20261130changed', maxAge: 600 });
    expect(relayed.detail.tlsPolicy, 'testing: the configured mode (may) applies').toBe('may');
    expect(fetches()).toBe(before + 1);
  });
});
