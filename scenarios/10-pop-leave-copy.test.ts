// Issue 3, scenario 2: POP3 with "leave a copy on the server": the message stays, a second device gets it too,
// and UIDL keeps a device from downloading it twice.
import { describe, expect, it } from 'vitest';
import { useLab } from './support/lab.js';
import { scenarioServers } from './support/servers.js';

const servers = await scenarioServers('10-pop-leave-copy');

describe.skipIf(servers.skip)('POP3 leave a copy on the server', () => {
  const lab = useLab();

  it('keeps the message for every device, each downloading it once', async () => {
    const sent = await lab().client('alice@sender.test').send({ to: 'bob@receiver.test', subject: 'keep me', text: 'for all your devices' });
    await lab().waitFor({ kind: 'stored', messageId: sent.messageId, detail: { user: 'bob@receiver.test' } });

    const phone = await lab().pop3('bob@receiver.test', { device: 'phone', keepCopy: true });
    const laptop = await lab().pop3('bob@receiver.test', { device: 'laptop', keepCopy: true });
    expect(await phone.download()).toHaveLength(1);
    expect(await lab().mailbox('bob@receiver.test').messages()).toHaveLength(1);

    expect(await laptop.download()).toHaveLength(1);
    expect(laptop.find(sent.messageId)?.equals(phone.find(sent.messageId)!)).toBe(true);

    // Checking again downloads nothing new: the UIDL is already on the device.
    expect(await phone.download()).toEqual([]);
    // One `retrieved` per download that fetched it (Dovecot's are read from its log when a session ends: waited for).
    await lab().history.waitForCount({ kind: 'retrieved', messageId: sent.messageId }, 2);
    expect(lab().history.filter({ kind: 'retrieved', messageId: sent.messageId }).map((e) => e.detail.protocol)).toEqual(['pop3', 'pop3']);
    expect(await lab().mailbox('bob@receiver.test').messages()).toHaveLength(1);
  });
});
