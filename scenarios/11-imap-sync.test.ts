// Issue 3, scenario 3: IMAP keeps phone and laptop in sync: new mail by IDLE, \Seen, deletion, Sent items.
import { describe, expect, it } from 'vitest';
import { useLab } from './support/lab.js';
import { scenarioServers } from './support/servers.js';

const servers = await scenarioServers('11-imap-sync');

describe.skipIf(servers.skip)('IMAP multi-device sync', () => {
  const lab = useLab();

  it('propagates new mail, read state, deletion and Sent to every device', async () => {
    const phone = await lab().imap('bob@receiver.test', { device: 'phone' });
    const laptop = await lab().imap('bob@receiver.test', { device: 'laptop' });

    // New mail reaches both devices by IDLE, well within a second of being stored.
    const sent = await lab().client('alice@sender.test').send({ to: 'bob@receiver.test', subject: 'sync me', text: 'on every device' });
    const stored = await lab().waitFor({ kind: 'stored', messageId: sent.messageId, detail: { user: 'bob@receiver.test' } });
    await Promise.all([phone.waitForMessage(sent.messageId, 1000), laptop.waitForMessage(sent.messageId, 1000)]);
    const pushed = lab().history.filter({ kind: 'device-synced', messageId: sent.messageId });
    expect(pushed.map((e) => e.node).sort()).toEqual(['bob@receiver.test/laptop', 'bob@receiver.test/phone']);
    for (const e of pushed) expect(e.time - stored.time).toBeLessThan(1000);

    // Read on the phone: \Seen shows on the laptop.
    const source = await phone.read(sent.messageId);
    expect(source.toString()).toContain('on every device');
    await laptop.waitForFlag(sent.messageId, '\\Seen');

    // Deleted and expunged on the laptop: gone from the phone.
    await laptop.delete(sent.messageId);
    await phone.waitForRemoval(sent.messageId);
    expect(await lab().mailbox('bob@receiver.test').messages()).toEqual([]);

    // Bob writes from the phone: the message goes out over SMTP and lands in Sent, seen by the laptop too.
    const reply = await phone.send({ to: 'alice@sender.test', subject: 'sent from my phone', text: 'hi alice' });
    await lab().waitFor({ kind: 'stored', messageId: reply.messageId, detail: { user: 'alice@sender.test' } });
    const sentOnLaptop = await laptop.folder('Sent');
    expect(sentOnLaptop.map((m) => m.messageId)).toContain(reply.messageId);
    expect(sentOnLaptop.find((m) => m.messageId === reply.messageId)!.flags).toContain('\\Seen');
    const sentOnPhone = await phone.folder('Sent');
    expect(sentOnPhone.map((m) => m.messageId)).toContain(reply.messageId);
  });
});
