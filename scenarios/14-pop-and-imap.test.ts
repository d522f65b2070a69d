// Issue 3, scenario 6: POP3 and IMAP on one mailbox: what POP3 deletes disappears from the IMAP sessions.
import { describe, expect, it } from 'vitest';
import { useLab } from './support/lab.js';
import { scenarioServers } from './support/servers.js';

const servers = await scenarioServers('14-pop-and-imap');

describe.skipIf(servers.skip)('POP3 and IMAP on one mailbox', () => {
  const lab = useLab();

  // Against Dovecot this also covers a race in the device: POP3's two expunges reach the IDLE session at once, the
  // resync started on the first asks FETCH 1:* of a mailbox already empty, and Dovecot answers BAD; the device's
  // resync tries again (src/harness/clients/devices.ts) and sees both removals.
  it('removes from IMAP what POP3 deleted', async () => {
    const laptop = await lab().imap('bob@receiver.test', { device: 'laptop' });
    const first = await lab().client('alice@sender.test').send({ to: 'bob@receiver.test', subject: 'one', text: '1' });
    const second = await lab().client('alice@sender.test').send({ to: 'bob@receiver.test', subject: 'two', text: '2' });
    await laptop.waitForMessage(first.messageId);
    await laptop.waitForMessage(second.messageId);

    // An old phone with POP3 download-and-delete takes both.
    const oldPhone = await lab().pop3('bob@receiver.test', { device: 'old phone' });
    expect(await oldPhone.download()).toHaveLength(2);

    await laptop.waitForRemoval(first.messageId);
    await laptop.waitForRemoval(second.messageId);
    expect(laptop.inbox.size).toBe(0);
    expect(lab().history.filter({ kind: 'device-removed', node: 'bob@receiver.test/laptop' })).toHaveLength(2);
  });
});
