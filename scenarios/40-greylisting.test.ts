// Scenario 40 (issue 15, scenario 1): greylisting at the MX. The first attempt, and every retry before the greylist
// delay has passed, is deferred with `450 4.7.1`; the first retry after it is delivered. Each 450 is a `fault` event of
// the MX on the same hop the MTA's `deferred` names.
import { describe, expect, it } from 'vitest';
import { checkDeliveredOnce, checkGreylistPassed } from '../src/harness/index.js';
import { useLab } from './support/lab.js';

/** How long the MX greylists a (client, sender, recipient) triple. */
const GREYLIST_MS = 1500;

// Retries at +0.5 s (still greylisted) and then every 2 s: the second retry is the first after the delay.
const lab = useLab((l) =>
  l.withRetry({ schedule: [500, 2000] }).with((d) => {
    d.faults = { ...d.faults, smtp: { ...d.faults?.smtp, mx: [{ id: 'greylist', stage: 'rcpt', action: { kind: 'greylist', delayMs: GREYLIST_MS } }] } };
  }),
);

describe('greylisting', () => {
  it('defers with 450 4.7.1 until the delay has passed, then delivers on the first retry after it', async () => {
    const sent = await lab().client('alice@sender.test').send({ to: 'bob@receiver.test', subject: 'greylisted', text: 'first sight' });
    await checkDeliveredOnce(lab(), 'bob@receiver.test', sent.messageId, { timeoutMs: 15_000 });

    const { history } = lab();
    const deferred = history.filter({ kind: 'deferred', messageId: sent.messageId });
    const relayed = history.filter({ kind: 'relayed', messageId: sent.messageId });
    const faults = history.filter({ kind: 'fault', node: 'mx', where: (e) => e.detail.rule === 'greylist' });
    // Attempt 1 (first sight) and attempt 2 (+0.5 s) are greylisted; attempt 3 (+2.5 s) passes.
    expect(deferred.map((e) => e.detail.reply.slice(0, 9))).toEqual(['450 4.7.1', '450 4.7.1']);
    expect(relayed).toHaveLength(1);
    expect(faults).toHaveLength(2);
    const first = faults[0]!;
    expect(first.detail).toMatchObject({ source: 'smtp', action: 'greylist', stage: 'rcpt', sender: 'alice@sender.test', recipients: ['bob@receiver.test'] });
    expect(first.detail.effect).toMatch(/^450 4\.7\.1 <bob@receiver\.test>: greylisted/);
    // The fault is recorded on the hop the MTA's deferral names.
    for (const [i, d] of deferred.entries()) {
      expect(faults[i]!.detail.hop).toBe(d.detail.hop);
      expect(d.detail.status).toBe('4.7.1');
    }
    // Every attempt before the delay was refused; the first one after it went through.
    expect(faults[1]!.time - first.time).toBeLessThan(GREYLIST_MS);
    expect(relayed[0]!.time - first.time).toBeGreaterThanOrEqual(GREYLIST_MS);
    // The checker of the same guarantee (issue 15): the first attempt after the delay delivered.
    const passed = await checkGreylistPassed(lab(), sent.messageId, 'bob@receiver.test', { delayMs: GREYLIST_MS });
    expect(passed.attempts).toBe(3);
  });
});
