// Scenario 43 (issue 15, scenario 4): the MX takes 30 s to answer the final dot. The lab's MTA waits 1 s for that reply
// (`dataTimeoutMs`; RFC 5321 §4.5.3.2's default is 10 minutes), defers with a timeout that names the stage, and
// delivers on its retry. The MX held the message back while it was slow; its sender gone, it abandoned the hand-off,
// so the retry makes no duplicate. The scenario takes seconds, not 30.
import { describe, expect, it } from 'vitest';
import { checkDeliveredOnce } from '../src/harness/index.js';
import { useLab } from './support/lab.js';

const DATA_TIMEOUT_MS = 1000;

const lab = useLab((l) =>
  l.withRetry({ schedule: [300] }).with((d) => {
    d.dataTimeoutMs = DATA_TIMEOUT_MS;
    d.faults = { ...d.faults, smtp: { ...d.faults?.smtp, mx: [{ id: 'slow-eod', stage: 'end-of-data', times: 1, action: { kind: 'delay', ms: 30_000 } }] } };
  }),
);

describe('a slow MX', () => {
  it('is given up on after the data timeout, deferred with an error naming the stage, then delivered once', async () => {
    const began = Date.now();
    const sent = await lab().client('alice@sender.test').send({ to: 'bob@receiver.test', subject: 'slow', text: 'take your time' });
    const deferred = await lab().waitFor({ kind: 'deferred', messageId: sent.messageId });
    expect(deferred.detail.command).toBe('end of data');
    expect(deferred.detail.error).toMatch(/timed out waiting for the server during end of data/);
    expect(deferred.detail.status).toMatch(/^4\./);

    const fault = await lab().waitFor({ kind: 'fault', node: 'mx', where: (e) => e.detail.rule === 'slow-eod' });
    expect(fault.detail).toMatchObject({ action: 'delay', stage: 'end-of-data', effect: 'reply delayed 30000 ms' });
    expect(fault.messageId).toBe(sent.messageId);
    // The MTA gave up after its data timeout, not after the MX's 30 s (measured on the MTA's own clock).
    const connect = await lab().waitFor({ kind: 'connect', messageId: sent.messageId });
    expect(deferred.time - connect.time).toBeGreaterThanOrEqual(DATA_TIMEOUT_MS);
    expect(deferred.time - connect.time).toBeLessThan(DATA_TIMEOUT_MS + 2000);
    expect(fault.time).toBeLessThan(deferred.time);

    await checkDeliveredOnce(lab(), 'bob@receiver.test', sent.messageId);
    expect(Date.now() - began).toBeLessThan(15_000);
  });
});
