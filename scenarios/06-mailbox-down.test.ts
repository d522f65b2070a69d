// Scenario 6: the mailbox server behind the MX is down: the message waits, and is delivered once the mailbox
// server is back. Where it waits depends on the MX: maillab's answers 451 (it says 250 only after the mailbox server
// stored the message), so the MTA queues and retries; Postfix queues it itself (it said 250 already), defers its
// LMTP hand-off and retries on its own schedule (the lab's retry schedule, mapped to its back-off by src/real/postfix).
import { describe, expect, it } from 'vitest';
import { checkDeliveredOnce } from '../src/harness/index.js';
import { useLab } from './support/lab.js';
import { scenarioServers } from './support/servers.js';

const servers = await scenarioServers('06-mailbox-down');

describe.skipIf(servers.skip)('mailbox server down behind the MX', () => {
  const lab = useLab();

  it(servers.mx === 'postfix' ? "Postfix accepts, defers its LMTP hand-off, and delivers after the mailbox server returns" : 'defers with 451 4.3.0 and delivers after the mailbox server returns', async () => {
    const mailbox = lab().node('mailbox');
    await mailbox.stop();
    const sent = await lab().client('alice@sender.test').send({ to: 'bob@receiver.test', subject: 'store me later', text: 'hold on' });

    const handoff = await lab().waitFor({ kind: 'handoff-failed', node: 'mx', messageId: sent.messageId });
    expect(handoff.detail.to).toContain(mailbox.config.address);
    if (servers.mx === 'postfix') {
      // The MTA's part is over: Postfix said 250 with its queue id, and nothing was deferred at the MTA.
      const relayed = await lab().waitFor({ kind: 'relayed', node: 'mta', messageId: sent.messageId });
      expect(relayed.detail.reply).toMatch(/^250 2\.0\.0 Ok: queued as /);
      // The connection failed as the network says it: refused by a closed port on loopback, timed out or unroutable
      // when a docker container is gone.
      expect(handoff.detail.error).toMatch(/connect to .*(refused|timed out|no route)/i);
      expect(lab().history.filter({ kind: 'deferred', node: 'mta', messageId: sent.messageId })).toHaveLength(0);
    } else {
      const deferred = await lab().waitFor({ kind: 'deferred', node: 'mta', messageId: sent.messageId });
      expect(deferred.detail.reply).toMatch(/^451 4\.3\.0/);
    }
    expect(lab().history.filter({ kind: 'stored', messageId: sent.messageId })).toHaveLength(0);

    await mailbox.start();
    // maillab's MX has nothing queued: the MTA retries (now). Postfix retries from its own queue.
    if (servers.mx !== 'postfix') await lab().mta().flush();
    await checkDeliveredOnce(lab(), 'bob@receiver.test', sent.messageId, { timeoutMs: 20_000 });
    if (servers.mx === 'postfix') {
      // The deferral and the later hand-off are both in the MX's events, in that order.
      const handoffs = lab().history.filter({ kind: 'handoff', node: 'mx', messageId: sent.messageId });
      expect(handoffs.map((e) => e.detail.recipients.map((r) => r.accepted))).toEqual([[true]]);
      expect(handoffs[0]!.time).toBeGreaterThan(handoff.time);
    }
  });
});
