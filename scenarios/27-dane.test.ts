// Scenario 27 (issue 11, DANE for SMTP, RFC 7672): TLSA records in the lab DNS at `_25._tcp.<mx host>`, computed
// from the certificates the lab issued. Two MX hosts, and the MTA's policy is `may` for every destination:
//   receiver.test → mx  (mx.receiver.test): `2 0 1`, the lab CA's certificate (DANE-TA; mx sends the CA in its chain)
//   dane.test     → mx2 (mx.dane.test):     `3 1 1` whose digest matches nothing (a stale record after a key change)
// The TLSA record that matches delivers; the one that does not defers, even with `may`, until the record is fixed.
// The lab DNS is not signed: its answers are taken as DNSSEC-authenticated (see README, TLS).
import { describe, expect, it } from 'vitest';
import type { LabDefinition } from '../src/harness/index.js';
import { associationData } from '../src/shared/dane.js';
import { useLab } from './support/lab.js';

const SECURE = { version: expect.stringMatching(/^TLSv1\.[23]$/), cipher: expect.any(String) };
const BOB = 'bob@receiver.test';
const DAVE = 'dave@dane.test';

function daneLab(def: LabDefinition): void {
  def.domains['dane.test'] = { mx: [{ host: 'mx2', preference: 10 }] };
  def.hosts.mx2 = { role: 'mx', hostname: 'mx.dane.test', domains: ['dane.test'], mailbox: 'mailbox' };
  def.users.push({ address: DAVE, password: 'dave-secret' });
  def.tls = {
    ...def.tls,
    dane: {
      mx: [{ usage: 2, selector: 0, matchingType: 1 }],
      mx2: [{ usage: 3, selector: 1, matchingType: 1, mismatch: true }],
    },
  };
}

describe('DANE: TLSA records of the MX hosts', () => {
  const lab = useLab((l) => l.withRetry({ schedule: [60_000], maxLifetimeMs: 600_000 }).with(daneLab));

  it('a matching DANE-TA record delivers over TLS under policy dane; a non-matching one defers even with may', async () => {
    const sent = await lab().client('alice@sender.test').send({ to: [BOB, DAVE], subject: 'dane', text: 'does the certificate match its TLSA record?' });

    const relayed = await lab().waitFor({ kind: 'relayed', messageId: sent.messageId, detail: { rcpt: BOB } });
    expect(relayed.detail).toMatchObject({ tls: SECURE, tlsPolicy: 'dane', mx: 'mx.receiver.test' });
    const found = await lab().waitFor({ kind: 'tlsa-lookup', messageId: sent.messageId, detail: { mx: 'mx.receiver.test' } });
    expect(found.detail).toMatchObject({ name: expect.stringMatching(/^_\d+\._tcp\.mx\.receiver\.test$/), records: [expect.stringMatching(/^2 0 1 [0-9a-f]{16}…$/)], usable: 1 });

    const deferred = await lab().waitFor({ kind: 'deferred', messageId: sent.messageId, detail: { rcpt: DAVE } });
    expect(deferred.detail).toMatchObject({ tlsPolicy: 'dane', status: '4.7.5' });
    expect(deferred.detail.reply).toMatch(/^451 4\.7\.5 mx\.dane\.test\[[^\]]+\]:\d+: TLS required by policy dane for dane\.test, but the certificate of mx\.dane\.test does not match its TLSA records: the certificate the server sent matches none of its TLSA records \(3 1 1 [0-9a-f]{16}…\)/);
    const failure = await lab().waitFor({ kind: 'tls-policy-failure', messageId: sent.messageId, detail: { domain: 'dane.test' } });
    expect(failure.detail).toMatchObject({ tlsPolicy: 'dane', enforced: true, resultType: 'validation-failure', mx: 'mx.dane.test' });
    expect(lab().history.filter({ kind: 'received', node: 'mx2', messageId: sent.messageId }), 'mx2 never got the message').toEqual([]);
  });

  it('once the record matches the certificate (the rollover finished), the deferred message goes on the next run', async () => {
    const mx2 = lab().nodeOf('mx', 'mx2').config;
    const name = `_${mx2.ports.smtp}._tcp.${mx2.hostname}`;
    await lab().dns.setRecords(name, 'TLSA', [{ usage: 3, selector: 1, matchingType: 1, data: associationData(mx2.tls!.cert, 1, 1).toString('hex') }]);
    const [queued] = await lab().mta().queue();
    expect(queued, 'the dane.test copy is still queued').toBeDefined();
    await lab().mta().flush();
    const relayed = await lab().waitFor({ kind: 'relayed', detail: { rcpt: DAVE } });
    expect(relayed.detail).toMatchObject({ tls: SECURE, tlsPolicy: 'dane', mx: 'mx.dane.test' });
    await lab().waitFor({ kind: 'stored', detail: { user: DAVE } });
  });

  it('a TLSA record makes TLS required: with the records gone, the same MX is used under may again', async () => {
    const mx2 = lab().nodeOf('mx', 'mx2').config;
    await lab().dns.setRecords(`_${mx2.ports.smtp}._tcp.${mx2.hostname}`, 'TLSA', []);
    const sent = await lab().client('alice@sender.test').send({ to: [DAVE], subject: 'no dane', text: 'opportunistic again' });
    const relayed = await lab().waitFor({ kind: 'relayed', messageId: sent.messageId, detail: { rcpt: DAVE } });
    expect(relayed.detail).toMatchObject({ tls: SECURE, tlsPolicy: 'may' });
    expect(lab().history.filter({ kind: 'tlsa-lookup', messageId: sent.messageId }), 'no records: no tlsa-lookup event').toEqual([]);
  });
});
