// Offline receiver: the receiver's MX is down; the message waits in the MTA's queue, deferred, and is delivered
// exactly once when the MX is back. Written by `maillab init`; run it with `npm run test:mail`.
import { describe, expect, it } from 'vitest';
import { checkDeliveredOnce } from 'maillab';
import { useLab } from 'maillab/vitest';
import definition from '../lab/mail.js';

describe('offline receiver', () => {
  const lab = useLab(undefined, { definition });

  it('queues and defers while the MX is down, then delivers exactly once', async () => {
    const mx = lab().node('mx');
    await mx.stop();

    const sent = await lab().client('alice@sender.test').send({ to: 'bob@receiver.test', subject: 'while you were out', text: 'queued for you' });
    // The MTA tried, failed to connect, and keeps the message for a later attempt.
    const deferred = await lab().waitFor({ kind: 'deferred', messageId: sent.messageId });
    expect(deferred.detail.error).toMatch(/refused|timed out/i);

    const queue = await lab().mta().queue();
    expect(queue.find((q) => q.messageId === sent.messageId)?.state).toBe('deferred');

    await mx.start();
    // Retry now rather than at the next scheduled attempt.
    await lab().mta().flush();
    await checkDeliveredOnce(lab(), 'bob@receiver.test', sent.messageId);

    // The message's trace tells the story in order: the MX stopped, the deferral, the MX back, the delivery.
    const trace = lab().trace(sent.messageId).map((e) => `${e.node}:${e.kind}`);
    expect(trace.indexOf('mta:deferred')).toBeGreaterThan(trace.indexOf('nemesis:node-stop'));
    expect(trace.indexOf('mailbox:stored')).toBeGreaterThan(trace.indexOf('nemesis:node-start'));

    // Delivered means gone from the queue: nothing will send it again.
    await lab().waitFor({ kind: 'relayed', messageId: sent.messageId });
    expect((await lab().mta().queue()).find((q) => q.messageId === sent.messageId)).toBeUndefined();
  });
});
