// Scenario 49 (issue 16): the delivery scenarios as a user of `maillab/vitest` writes them, with its matchers: each
// waits for its outcome and, should it fail, prints the message's trace (hosts, replies, faults) as a table.
// A user's project registers them once with `setupFiles: ['maillab/vitest/setup']`; this repository calls
// registerMaillabMatchers() instead (its vitest.config.ts runs maillab's own tests, which need none).
import { describe, expect, it } from 'vitest';
import { registerMaillabMatchers } from '../src/vitest/matchers.js';
import { useLab } from './support/lab.js';

registerMaillabMatchers();

describe('matchers, end to end', () => {
  const lab = useLab((l) => l.withRetry({ schedule: [300] }));

  it('alice → bob: relayed by the MTA to the MX, handed to the mailbox server, authenticated, stored once', async () => {
    const sent = await lab().client('alice@sender.test').send({ to: 'bob@receiver.test', subject: 'hello', text: 'along the whole path' });

    await expect(lab()).toHaveDelivered(sent, { to: 'bob@receiver.test' });
    await expect(lab()).toHaveHop(sent, 'mta', 'mx');
    await expect(lab()).toHaveHop(sent, 'mx', 'mailbox');
    await expect(lab()).toHaveAuthenticationResults(sent, { spf: 'pass', dkim: 'pass', dmarc: 'pass' });
    await expect(lab()).not.toHaveDeferred(sent);
  });

  it('an unknown recipient: bounced with 5.1.1, the DSN in alice\'s mailbox, never delivered', async () => {
    const sent = await lab().client('alice@sender.test').send({ to: 'nobody@receiver.test', subject: 'anyone?', text: 'hello?' });

    await expect(lab()).toHaveBounced(sent, { to: 'nobody@receiver.test', status: '5.1.1' });
    await expect(lab()).not.toHaveDelivered(sent, { to: 'nobody@receiver.test' });
  });

  it('the MX offline: deferred while it is down, delivered once when it is back', async () => {
    const mx = lab().node('mx');
    await mx.stop();
    const sent = await lab().client('alice@sender.test').send({ to: 'bob@receiver.test', subject: 'while you were out', text: 'queued for you' });
    try {
      // Local runtime: the MX's port is closed (refused). Docker: the MX's host is gone (timeout).
      await expect(lab()).toHaveDeferred(sent, { to: 'bob@receiver.test', error: /refused|timed out/i });
    } finally {
      await mx.start();
    }
    await expect(lab()).toHaveDelivered(sent, { to: 'bob@receiver.test' });
    // Once the queue is empty: every recipient of every message of this lab was stored at most once.
    await expect(lab()).toHaveNoDuplicates();
  });
});
