// Scenario 30 (issue 12, DKIM key rotation done right): sender.test has its signing selector `lab` and a second,
// `next`, published ahead of time but not signing. The rotation:
//   1. publish the new selector (done: the lab published `next` at start) — mail still signed with `lab`;
//   2. switch signing to `next` while a message signed with `lab` still waits in the queue (the MX is down);
//   3. retire `lab` only once nothing signed with it is left in the queue.
// No message fails DKIM at any step, and `lab.checkDns()` finds no error at any step.
import { describe, expect, it } from 'vitest';
import { checkMailDnsSound, type StartedLab } from '../src/harness/index.js';
import { useLab } from './support/lab.js';

const BOB = 'bob@receiver.test';

async function dkimOf(lab: StartedLab, messageId: string) {
  const verdict = await lab.waitFor({ kind: 'authenticated', messageId });
  expect(verdict.detail.action, `${messageId} accepted`).toBe('accept');
  return verdict.detail.dkim.map((d) => `${d.result} s=${d.selector}`);
}

describe('DKIM key rotation', () => {
  const lab = useLab((l) =>
    l
      .withRetry({ schedule: [60_000], maxLifetimeMs: 600_000 })
      .with((def) => {
        def.domains['sender.test'] = { ...def.domains['sender.test']!, dkim: [{ selector: 'lab' }, { selector: 'next', sign: false }] };
      }),
  );
  const send = (subject: string) => lab().client('alice@sender.test').send({ to: BOB, subject, text: `${subject}\n` });

  it('publish, switch, retire: every message passes DKIM on the way', async () => {
    // 1. Both keys published, the old one signing.
    const findings = await checkMailDnsSound(lab());
    expect(findings.filter((f) => f.check === 'dkim').map((f) => `${f.severity} ${f.record}`)).toEqual(['info next._domainkey.sender.test TXT (DKIM)']);
    const before = await send('before the rotation');
    expect(await dkimOf(lab(), before.messageId)).toEqual(['pass s=lab']);

    // 2. The MX is down; one message is signed with `lab` and queued; then signing switches to `next`.
    await lab().node('mx').stop();
    const queued = await send('queued under the old key');
    await lab().waitFor({ kind: 'deferred', messageId: queued.messageId });
    const switched = await lab().mta().setDkim([lab().dkimKey('sender.test', 'next')]);
    expect(switched.signers).toEqual([{ domain: 'sender.test', selector: 'next', algorithm: 'rsa-sha256' }]);
    const after = await send('after the switch');
    expect((await lab().waitFor({ kind: 'submitted', messageId: after.messageId })).detail.dkim?.selector).toBe('next');
    await lab().node('mx').start();
    await lab().mta().flush();
    expect(await dkimOf(lab(), queued.messageId)).toEqual(['pass s=lab']);
    expect(await dkimOf(lab(), after.messageId)).toEqual(['pass s=next']);
    await checkMailDnsSound(lab());

    // 3. Nothing signed with `lab` is queued any more (both relayed): retire it.
    for (const m of [queued, after]) await lab().waitFor({ kind: 'relayed', messageId: m.messageId });
    expect(await lab().mta().queue()).toEqual([]);
    await lab().dns.removeRecords('lab._domainkey.sender.test', 'TXT');
    const retired = await send('after the retirement');
    expect(await dkimOf(lab(), retired.messageId)).toEqual(['pass s=next']);
    const last = await checkMailDnsSound(lab());
    expect(last.filter((f) => f.check === 'dkim')).toEqual([]);
    expect(lab().history.filter({ kind: 'rejected', node: 'mx' })).toEqual([]);
  });
});
