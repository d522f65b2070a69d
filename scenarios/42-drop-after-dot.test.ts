// Scenario 42 (issue 15, scenario 3): the MX takes the message (hands it to the mailbox server, which stores it), then
// drops the connection after the final dot, before its 250. The MTA cannot know the message arrived: it defers and
// retries, and bob gets a second copy. At-least-once delivery, as RFC 5321 §6.1 prefers to losing mail; the `fault`
// event (drop, end-of-data, before-reply) stands between the first copy and the second.
import { describe, expect, it } from 'vitest';
import { checkDeliveryGuarantees } from '../src/harness/index.js';
import { useLab } from './support/lab.js';

const lab = useLab((l) => l.withRetry({ schedule: [300] }));

describe('drop after the final dot', () => {
  it('makes the MTA retry a message already stored: bob gets a duplicate, caused by the drop', async () => {
    // Set while the lab runs (the nemesis's step, recorded in the history).
    await lab().smtpFaults('mx').set([{ id: 'lost-250', stage: 'end-of-data', times: 1, action: { kind: 'drop', when: 'before-reply' } }]);
    const change = await lab().waitFor({ kind: 'smtp-faults-change', node: 'nemesis' });
    expect(change.detail).toMatchObject({ target: 'mx', role: 'mx', rules: [{ id: 'lost-250', stage: 'end-of-data' }] });
    const sent = await lab().client('alice@sender.test').send({ to: 'bob@receiver.test', subject: 'twice', text: 'the 250 was lost' });
    const stored = await lab().history.waitForCount({ kind: 'stored', messageId: sent.messageId }, 2, { timeoutMs: 15_000 });
    // The MTA is done with it (delivered on the retry): nothing will add a third copy.
    const relayed = await lab().waitFor({ kind: 'relayed', messageId: sent.messageId });

    const fault = await lab().waitFor({ kind: 'fault', node: 'mx', where: (e) => e.detail.rule === 'lost-250' });
    expect(fault.messageId).toBe(sent.messageId);
    expect(fault.detail).toMatchObject({ source: 'smtp', action: 'drop', stage: 'end-of-data', effect: 'connection closed before the reply', sender: 'alice@sender.test', recipients: ['bob@receiver.test'] });
    const deferred = await lab().waitFor({ kind: 'deferred', messageId: sent.messageId });
    expect(deferred.detail.command).toBe('end of data');
    expect(deferred.detail.error).toMatch(/session lost|closed/);
    expect(deferred.detail.hop).toBe(fault.detail.hop);

    // The MX handed the message off (first copy), then dropped; the MTA deferred, retried (second copy) and relayed.
    // Times are compared within one node's clock, or across nodes only where a retry's delay lies between.
    const handoff = await lab().waitFor({ kind: 'handoff', node: 'mx', messageId: sent.messageId });
    expect(handoff.time).toBeLessThanOrEqual(fault.time);
    expect(fault.time).toBeLessThan(stored[1]!.time);
    expect(stored[0]!.time).toBeLessThan(stored[1]!.time);
    expect(deferred.time).toBeLessThan(relayed.time);
    const copies = await lab().mailbox('bob@receiver.test').find(sent.messageId);
    expect(copies).toHaveLength(2);
    // The delivery-guarantee checker reports the duplicate with its cause: this drop (at least once, RFC 5321 §6.1).
    const report = await checkDeliveryGuarantees(lab(), [{ messageId: sent.messageId, from: 'alice@sender.test', to: ['bob@receiver.test'] }]);
    expect(report.duplicates).toEqual([expect.objectContaining({ rcpt: 'bob@receiver.test', cause: expect.objectContaining({ kind: 'drop-after-dot', event: expect.objectContaining({ seq: fault.seq, node: 'mx' }) }) })]);
    await expect(checkDeliveryGuarantees(lab(), [{ messageId: sent.messageId, from: 'alice@sender.test', to: ['bob@receiver.test'] }], { duplicates: 'none' })).rejects.toThrow(/duplicate.*fault rule lost-250 of mx/s);
    // The rule is spent; clearing it is recorded too.
    expect(await lab().smtpFaults('mx').list()).toEqual([expect.objectContaining({ id: 'lost-250', fired: 1 })]);
    await lab().smtpFaults('mx').clear();
    expect(lab().history.filter({ kind: 'smtp-faults-change' }).map((e) => e.detail.rules.length)).toEqual([1, 0]);
  });

  it('at the LMTP hop as well: the mailbox server stores, drops before its 250; the MX answers 451, and the retry stores a second copy', async () => {
    await lab().smtpFaults('mailbox').set([{ id: 'lmtp-lost-250', stage: 'end-of-data', times: 1, action: { kind: 'drop', when: 'before-reply' } }]);
    const sent = await lab().client('alice@sender.test').send({ to: 'bob@receiver.test', subject: 'twice over LMTP', text: 'the LMTP 250 was lost' });
    const stored = await lab().history.waitForCount({ kind: 'stored', messageId: sent.messageId }, 2, { timeoutMs: 15_000 });
    await lab().waitFor({ kind: 'relayed', messageId: sent.messageId });

    const fault = await lab().waitFor({ kind: 'fault', node: 'mailbox', where: (e) => e.detail.rule === 'lmtp-lost-250' });
    expect(fault.messageId).toBe(sent.messageId);
    expect(fault.detail).toMatchObject({ stage: 'end-of-data', action: 'drop', recipients: ['bob@receiver.test'] });
    // Named as the MX names its LMTP hop.
    expect(fault.detail.hop).toMatch(/^mx\.receiver\.test -> LMTP /);
    const failed = await lab().waitFor({ kind: 'handoff-failed', node: 'mx', messageId: sent.messageId });
    expect(failed.detail.error).toMatch(/end of data/);
    const deferred = await lab().waitFor({ kind: 'deferred', messageId: sent.messageId });
    expect(deferred.detail.reply).toMatch(/^451 /);
    expect(fault.time).toBeLessThan(stored[1]!.time);
    expect(await lab().mailbox('bob@receiver.test').find(sent.messageId)).toHaveLength(2);
    await lab().smtpFaults('mailbox').clear();
  });
});
