// Network faults only containers can make real: a frozen MX (timeouts, not refusals) and a partitioned mailbox
// server. On the local runtime there is no network to cut, so this file says so and skips.
import { describe, expect, it } from 'vitest';
import { checkDeliveredOnce, resolveRuntime, runtimeFromEnvironment } from '../src/harness/index.js';
import { useLab } from './support/lab.js';

// The runtime this run's labs get (auto becomes docker when an engine answers), decided before any lab starts.
const runtime = await resolveRuntime(runtimeFromEnvironment());
const docker = runtime.kind === 'docker';
if (!docker) console.warn(`[15-network-faults] skipped: pause and partition need the docker runtime (this run: local, ${runtime.reason})`);

describe.skipIf(!docker)('network faults (docker runtime)', () => {
  const lab = useLab((l) => l.withConnectTimeout(500));

  it('a paused MX times out; the message is delivered once it thaws', async () => {
    const mx = lab().node('mx');
    await mx.pause();
    try {
      const sent = await lab().client('alice@sender.test').send({ to: 'bob@receiver.test', subject: 'frozen', text: 'brrr' });
      const deferred = await lab().waitFor({ kind: 'deferred', messageId: sent.messageId }, { timeoutMs: 15_000 });
      // The kernel still completes the TCP handshake for a frozen process: the greeting never comes.
      expect(deferred.detail.error).toMatch(/ETIMEDOUT|timed out/i);
      await mx.unpause();
      await lab().mta().flush();
      await checkDeliveredOnce(lab(), 'bob@receiver.test', sent.messageId, { timeoutMs: 15_000 });
    } finally {
      await mx.unpause().catch(() => undefined);
    }
  });

  it('a partitioned mailbox server makes the MX answer 451; delivery follows the reconnect', async () => {
    const mailbox = lab().node('mailbox');
    await mailbox.disconnect();
    try {
      const sent = await lab().client('alice@sender.test').send({ to: 'bob@receiver.test', subject: 'cut off', text: 'partition' });
      const deferred = await lab().waitFor({ kind: 'deferred', node: 'mta', messageId: sent.messageId }, { timeoutMs: 15_000 });
      expect(deferred.detail.reply).toMatch(/^451 4\.3\.0/);
      await mailbox.connect();
      await lab().mta().flush();
      await checkDeliveredOnce(lab(), 'bob@receiver.test', sent.messageId, { timeoutMs: 15_000 });
    } finally {
      await mailbox.connect().catch(() => undefined);
    }
  });
});
