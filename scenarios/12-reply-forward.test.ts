// Issue 3, scenario 4: bob replies to alice (threading kept) and forwards with the attachment; alice reads both.
import { simpleParser } from 'mailparser';
import { describe, expect, it } from 'vitest';
import { useLab } from './support/lab.js';
import { scenarioServers } from './support/servers.js';

const servers = await scenarioServers('12-reply-forward');

describe.skipIf(servers.skip)('reply and forward', () => {
  const lab = useLab();

  it('keeps In-Reply-To/References and the forwarded attachment', async () => {
    const attachment = Buffer.from(Array.from({ length: 4096 }, (_, i) => (i * 7) % 256));
    const original = await lab().client('alice@sender.test').send({
      to: 'bob@receiver.test',
      subject: 'Quarterly numbers',
      text: 'See attached.',
      attachments: [{ filename: 'numbers.bin', content: attachment, contentType: 'application/octet-stream' }],
    });
    const bobPhone = await lab().imap('bob@receiver.test', { device: 'phone' });
    await bobPhone.waitForMessage(original.messageId);
    const received = await simpleParser(await bobPhone.read(original.messageId));

    const reply = await bobPhone.send({
      to: 'alice@sender.test',
      subject: `Re: ${received.subject}`,
      text: `Thanks!\n\n> See attached.`,
      inReplyTo: received.messageId,
      references: [received.messageId!],
    });
    const forward = await bobPhone.send({
      to: 'carol@receiver.test',
      subject: `Fwd: ${received.subject}`,
      text: 'FYI, from alice.',
      attachments: received.attachments.map((a) => ({ filename: a.filename, content: a.content, contentType: a.contentType })),
    });
    const forwardToAlice = await bobPhone.send({
      to: 'alice@sender.test',
      subject: `Fwd: ${received.subject}`,
      text: 'Your own file back, forwarded.',
      references: [received.messageId!],
      attachments: received.attachments.map((a) => ({ filename: a.filename, content: a.content, contentType: a.contentType })),
    });

    const alice = await lab().imap('alice@sender.test', { device: 'laptop' });
    await alice.waitForMessage(reply.messageId);
    await alice.waitForMessage(forwardToAlice.messageId);
    const readReply = await simpleParser(await alice.read(reply.messageId));
    expect(readReply.inReplyTo).toBe(original.messageId);
    expect(readReply.references).toContain(original.messageId);
    expect(readReply.subject).toBe('Re: Quarterly numbers');

    const readForward = await simpleParser(await alice.read(forwardToAlice.messageId));
    expect(readForward.attachments).toHaveLength(1);
    expect(readForward.attachments[0]!.filename).toBe('numbers.bin');
    expect(readForward.attachments[0]!.content.equals(attachment)).toBe(true);

    await lab().waitFor({ kind: 'stored', messageId: forward.messageId, detail: { user: 'carol@receiver.test' } });
    // Both went into bob's Sent folder.
    const sent = (await bobPhone.folder('Sent')).map((m) => m.messageId);
    expect(sent).toEqual(expect.arrayContaining([reply.messageId, forward.messageId, forwardToAlice.messageId]));
  });
});
