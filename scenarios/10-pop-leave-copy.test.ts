// Issue 3, scenario 2: POP3 with "leave a copy on the server": the message stays, a second device gets it too,
// and UIDL keeps a device from downloading it twice.
import { describe, expect, it } from 'vitest';
import { useLab } from './support/lab.js';

const lab = useLab();

describe('POP3 leave a copy on the server', () => {
  it('keeps the message for every device, each downloading it once', async () => {
    const sent = await lab().client('alice@sender.test').send({ to: 'bob@receiver.test', subject: 'keep me', text: 'for all your devices' });
    await lab().waitFor({ kind: 'stored', messageId: sent.messageId, detail: { user: 'bob@receiver.test' } });

    const phone = lab().pop3('bob@receiver.test', { device: 'phone', keepCopy: true });
    const laptop = lab().pop3('bob@receiver.test', { device: 'laptop', keepCopy: true });
    expect(await phone.download()).toHaveLength(1);
    expect(await lab().mailbox('bob@receiver.test').messages()).toHaveLength(1);

    expect(await laptop.download()).toHaveLength(1);
    expect(laptop.find(sent.messageId)?.equals(phone.find(sent.messageId)!)).toBe(true);

    // Checking again downloads nothing new: the UIDL is already on the device.
    expect(await phone.download()).toEqual([]);
    expect(lab().history.filter({ kind: 'retrieved', messageId: sent.messageId })).toHaveLength(2);
    expect(await lab().mailbox('bob@receiver.test').messages()).toHaveLength(1);
  });
});
