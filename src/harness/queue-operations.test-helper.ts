// The queue operations of the MTA contract (hold, release, delete) and the harness's queue waits, as a user drives
// them through `lab.mta()`: one body of tests, run against maillab's MTA (src/harness/lab-api.test.ts) and Postfix
// (src/real/postfix/mta-queue.test.ts), so both MTAs are held to the same behaviour.
import { expect, it } from 'vitest';
import type { StartedLab } from './lab.js';

export function queueOperationTests(lab: () => StartedLab): void {
  /** Sends a message with the MX stopped and waits until the queue shows it deferred; answers its queue id. */
  const deferredMessage = async (subject: string) => {
    const sent = await lab().client('alice@sender.test').send({ to: 'bob@receiver.test', subject, text: subject });
    const queue = await lab().mta().waitForQueue((q) => q.some((m) => m.messageId === sent.messageId && m.state === 'deferred'), { description: `${subject} deferred in the queue` });
    return { messageId: sent.messageId, queueId: queue.find((m) => m.messageId === sent.messageId)!.queueId };
  };

  it('holds a deferred message: a flush does not try it while mail behind it is delivered; released, it is delivered', async () => {
    const mx = lab().node('mx');
    await mx.stop();
    const held = await deferredMessage('held while the MX is down');
    const view = await lab().mta().hold(held.queueId);
    expect(view).toMatchObject({ queueId: held.queueId, state: 'hold' });
    expect((await lab().mta().queue()).find((m) => m.queueId === held.queueId)?.state).toBe('hold');
    // Recorded as a control action on the MTA, with the message's id: its trace explains why it waited.
    const change = await lab().waitFor({ kind: 'queue-change', detail: { operation: 'hold', queueId: held.queueId } });
    expect(change.messageId).toBe(held.messageId);
    expect(lab().trace(held.messageId).map((e) => e.kind)).toContain('queue-change');

    await mx.start();
    const heldAt = Date.now();
    await lab().mta().flush();
    const next = await lab().client('alice@sender.test').send({ to: 'bob@receiver.test', subject: 'sent after the hold', text: 'x' });
    await lab().waitFor({ kind: 'stored', messageId: next.messageId });
    await lab().settled();
    expect((await lab().mta().queue()).find((m) => m.queueId === held.queueId)?.state).toBe('hold');
    expect(lab().history.filter({ kind: 'active', queueId: held.queueId }).filter((e) => e.time >= heldAt)).toEqual([]);

    const released = await lab().mta().release(held.queueId);
    expect(released.queueId).toBe(held.queueId);
    // maillab's MTA answers deferred (tried at once); Postfix's postqueue -i may already have it active, or moved to
    // its incoming queue for the fast flush.
    expect(['deferred', 'active', 'incoming']).toContain(released.state);
    await lab().waitFor({ kind: 'stored', messageId: held.messageId });
    await lab().mta().waitUntilEmpty();
    await lab().settled();
    expect(lab().history.filter({ kind: 'queue-change' }).map((e) => e.detail.operation)).toEqual(['hold', 'release']);
  });

  it('deletes a deferred message: gone from the queue, never delivered, no bounce', async () => {
    const mx = lab().node('mx');
    await mx.stop();
    const doomed = await deferredMessage('deleted while the MX is down');
    expect(await lab().mta().delete(doomed.queueId)).toEqual({ queueId: doomed.queueId, deleted: true });
    await lab().mta().waitUntilEmpty();
    await mx.start();
    await lab().mta().flush();
    await lab().settled();
    expect(await lab().mta().queue()).toEqual([]);
    expect(lab().history.filter({ kind: 'stored', messageId: doomed.messageId })).toEqual([]);
    expect(lab().history.filter({ kind: 'dsn-created', messageId: doomed.messageId })).toEqual([]);
  });

  it('refuses to hold, release or delete a message the queue does not hold, naming it', async () => {
    await expect(lab().mta().hold('ABCDEF012345')).rejects.toThrow(/ABCDEF012345/);
    await expect(lab().mta().release('ABCDEF012345')).rejects.toThrow(/ABCDEF012345/);
    await expect(lab().mta().delete('ABCDEF012345')).rejects.toThrow(/ABCDEF012345/);
  });

  it('fails a queue wait that never comes true with the last view of the queue and the recent history', async () => {
    const wait = lab().mta().waitForQueue((q) => q.length > 5, { timeoutMs: 400, description: 'six messages in the queue' });
    await expect(wait).rejects.toMatchObject({ name: 'WaitTimeoutError' });
    await expect(wait).rejects.toThrow(/timed out after 400 ms waiting for six messages in the queue\n[\s\S]*last view of the queue \(0 messages\): \[\] \(\d+ looks, the slowest took \d+ ms\)[\s\S]*recent history:/);
  });
}
