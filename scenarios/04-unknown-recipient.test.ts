// Scenario 4: the MX rejects an unknown recipient with 550; alice gets a DSN at once; nothing is retried.
import { describe, expect, it } from 'vitest';
import { useLab } from './support/lab.js';
import { scenarioServers } from './support/servers.js';

const servers = await scenarioServers('04-unknown-recipient');

describe.skipIf(servers.skip)('unknown recipient', () => {
  const lab = useLab();

  it('bounces on 550 5.1.1 without retrying', async () => {
    const sent = await lab().client('alice@sender.test').send({ to: 'nobody@receiver.test', subject: 'hello?', text: 'anyone there' });

    const rejected = await lab().waitFor({ kind: 'rejected', node: 'mx', detail: { rcpt: 'nobody@receiver.test' } });
    expect(rejected.detail.reply).toMatch(/^550 5\.1\.1/);
    const bounced = await lab().waitFor({ kind: 'bounced', messageId: sent.messageId });
    expect(bounced.detail.rcpt).toBe('nobody@receiver.test');
    expect(bounced.detail.reply).toMatch(/550 5\.1\.1/);

    const dsnEvent = await lab().waitFor({ kind: 'dsn-created', where: (e) => e.detail.for.messageId === sent.messageId });
    const { dsnMessageId } = dsnEvent.detail;
    await lab().waitFor({ kind: 'stored', messageId: dsnMessageId, detail: { user: 'alice@sender.test' } });
    const [dsn] = await lab().mailbox('alice@sender.test').find(dsnMessageId);
    expect(dsn!.raw.toString()).toMatch(/Final-Recipient: rfc822; ?nobody@receiver\.test/i);
    expect(dsn!.raw.toString()).toMatch(/Status: 5\.1\.1/);

    // No retry: one connection to the MX for this message, no deferral, and it left the queue.
    expect(lab().history.filter({ kind: 'deferred', messageId: sent.messageId })).toHaveLength(0);
    expect(lab().history.filter({ kind: 'connect', messageId: sent.messageId })).toHaveLength(1);
    const queue = await lab().mta().queue();
    expect(queue.find((q) => q.messageId === sent.messageId)).toBeUndefined();
  });

});
