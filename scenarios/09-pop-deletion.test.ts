// Issue 3, scenario 1: POP3 download-and-delete. The server keeps nothing; when the device is lost, so is the mail.
import { describe, expect, it } from 'vitest';
import { useLab } from './support/lab.js';
import { scenarioServers } from './support/servers.js';

const servers = await scenarioServers('09-pop-deletion');

describe.skipIf(servers.skip)('POP3 download and delete', () => {
  const lab = useLab();

  it('empties the server; a lost device loses the message for good', async () => {
    const sent = await lab().client('alice@sender.test').send({ to: 'bob@receiver.test', subject: 'pop me', text: 'only one copy' });
    await lab().waitFor({ kind: 'stored', messageId: sent.messageId, detail: { user: 'bob@receiver.test' } });

    const phone = await lab().pop3('bob@receiver.test', { device: 'phone' });
    const downloaded = await phone.download();
    expect(downloaded).toHaveLength(1);
    expect(phone.find(sent.messageId)?.toString()).toContain('only one copy');

    // Deleted on the server at QUIT (the UPDATE state).
    await lab().waitFor({ kind: 'deleted', where: (e) => e.messageId === sent.messageId });
    expect(await lab().mailbox('bob@receiver.test').messages()).toEqual([]);
    expect(await lab().mailbox('bob@receiver.test').find(sent.messageId)).toEqual([]);

    phone.lose();
    expect(phone.find(sent.messageId)).toBeUndefined();
    const newPhone = await lab().pop3('bob@receiver.test', { device: 'new phone' });
    expect(await newPhone.download()).toEqual([]);
    expect(newPhone.find(sent.messageId)).toBeUndefined();
  });
});
