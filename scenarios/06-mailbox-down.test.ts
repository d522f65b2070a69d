// Scenario 6: the mailbox server behind the MX is down: the MX answers 451, the MTA retries, and the message
// is delivered once the mailbox server is back.
import { describe, expect, it } from 'vitest';
import { checkDeliveredOnce } from '../src/harness/index.js';
import { useLab } from './support/lab.js';

const lab = useLab();

describe('mailbox server down behind the MX', () => {
  it('defers with 451 4.3.0 and delivers after the mailbox server returns', async () => {
    const mailbox = lab().node('mailbox');
    await mailbox.stop();
    const sent = await lab().client('alice@sender.test').send({ to: 'bob@receiver.test', subject: 'store me later', text: 'hold on' });

    const handoff = await lab().waitFor({ kind: 'handoff-failed', node: 'mx', messageId: sent.messageId });
    expect(handoff.detail.to).toContain(mailbox.config.address);
    const deferred = await lab().waitFor({ kind: 'deferred', node: 'mta', messageId: sent.messageId });
    expect(deferred.detail.reply).toMatch(/^451 4\.3\.0/);
    expect(lab().history.filter({ kind: 'stored', messageId: sent.messageId })).toHaveLength(0);

    await mailbox.start();
    await lab().mta().flush();
    await checkDeliveredOnce(lab(), 'bob@receiver.test', sent.messageId);
  });
});
