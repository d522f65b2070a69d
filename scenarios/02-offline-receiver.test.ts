// Scenario 2: the receiver's MX is offline; the message waits in the MTA's queue and is delivered once it returns.
import { describe, expect, it } from 'vitest';
import { checkDeliveredOnce } from '../src/harness/index.js';
import { useLab } from './support/lab.js';
import { scenarioServers } from './support/servers.js';

const servers = await scenarioServers('02-offline-receiver');

describe.skipIf(servers.skip)('offline receiver', () => {
  const lab = useLab();

  it('queues and defers while the MX is down, then delivers exactly once', async () => {
    const mx = lab().node('mx');
    await mx.stop();

    const sent = await lab().client('alice@sender.test').send({ to: 'bob@receiver.test', subject: 'while you were out', text: 'queued for you' });
    const deferred = await lab().waitFor({ kind: 'deferred', messageId: sent.messageId });
    // Local runtime: the MX's port is closed (refused). Docker: the MX's host is gone (timeout).
    expect(deferred.detail.error).toMatch(/refused|timed out/i);
    expect(deferred.detail.error).toContain(mx.config.address);

    // The outcome is logged before the queue shows it (Postfix logs status=deferred, then its queue manager moves
    // the queue file): wait for the queue to show the message deferred rather than reading it once. Postfix keeps it
    // deferred between retries (1 s here) and active during each; twice in CI, under the full suite's load, a real
    // Postfix MTA logged nothing and showed no deferred state for 10 s, so this wait allows 30 s.
    const queue = await lab().mta().waitForQueue((q) => q.some((m) => m.messageId === sent.messageId && m.state === 'deferred'), {
      description: `message ${sent.messageId} deferred in the MTA's queue`,
      timeoutMs: 30_000,
    });
    const entry = queue.find((q) => q.messageId === sent.messageId);
    expect(entry?.recipients[0]?.lastError).toMatch(/refused|timed out/i);

    await mx.start();
    await lab().mta().flush();
    await checkDeliveredOnce(lab(), 'bob@receiver.test', sent.messageId);

    // The trace explains itself: the MX stopped before the send (the nemesis's action, recorded when it began),
    // the deferral, the MX coming back, then the delivery. (The flush may come after the last hop: a scheduled
    // retry can beat it.)
    const trace = lab().trace(sent.messageId).map((e) => `${e.node}:${e.kind}`);
    const at = (hop: string) => trace.indexOf(hop);
    expect(at('nemesis:node-stop')).toBeGreaterThanOrEqual(0);
    expect(at('mta:deferred')).toBeGreaterThan(at('nemesis:node-stop'));
    expect(at('nemesis:node-start')).toBeGreaterThan(at('mta:deferred'));
    expect(at('mailbox:stored')).toBeGreaterThan(at('nemesis:node-start'));

    // Delivered means gone from the queue: nothing will send it again. The mailbox stores the message before the
    // MTA records its outcome, so the lab is let settle first.
    await lab().settled();
    const after = await lab().mta().queue();
    expect(after.find((q) => q.messageId === sent.messageId)).toBeUndefined();
  });
});
