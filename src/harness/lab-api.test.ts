// The StartedLab API a user reaches for first (issue 16): parsed messages and waits on a folder, `lab.resolve`, queue
// waits and `settled`, the queue operations, and the endpoints of a stopped node. On a real default lab.
import { describe, expect, it } from 'vitest';
import defaultLab from '../../lab/default.js';
import { useLab } from '../vitest/use-lab.js';
import { WaitTimeoutError } from './history/history.js';
import { queueOperationTests } from './queue-operations.test-helper.js';

describe('StartedLab API', () => {
  const lab = useLab((l) => l, { definition: defaultLab });

  it('waitForEmails waits for the folder to hold that many messages and hands them out parsed, raw bytes kept', async () => {
    const bob = lab().mailbox('bob@receiver.test');
    const before = (await bob.messages()).length;
    const attachment = Buffer.from([0, 1, 2, 250, 251, 252]);
    const sent = await lab().client('alice@sender.test').send({
      to: 'Bob Example <bob@receiver.test>',
      cc: 'carol@receiver.test',
      subject: 'Grüße, with an attachment',
      text: 'plain body',
      html: '<p>html body</p>',
      attachments: [{ filename: 'data.bin', content: attachment, contentType: 'application/octet-stream' }],
    });
    const emails = await bob.waitForEmails(before + 1);
    expect(emails).toHaveLength(before + 1);
    const email = emails.find((e) => e.messageId === sent.messageId)!;
    expect(email).toMatchObject({
      folder: 'INBOX',
      subject: 'Grüße, with an attachment',
      from: [{ name: '', address: 'alice@sender.test' }],
      to: [{ name: 'Bob Example', address: 'bob@receiver.test' }],
      cc: [{ name: '', address: 'carol@receiver.test' }],
      text: 'plain body',
      html: '<p>html body</p>',
    });
    expect(email.date).toBeInstanceOf(Date);
    expect(email.attachments).toEqual([{ filename: 'data.bin', contentType: 'application/octet-stream', disposition: 'attachment', size: 6, content: attachment }]);
    expect(email.header('Message-ID')).toBe(sent.messageId);
    expect(email.headers.get('received')!.length).toBeGreaterThanOrEqual(2);
    expect(email.raw.equals(await bob.read(email.uid))).toBe(true);
    expect((await bob.email(email.uid)).subject).toBe(email.subject);
    await expect(bob.email(999_999)).rejects.toThrow(/bob@receiver\.test INBOX has no message with UID 999999 \(UIDs: /);
  });

  it('waitForEmails fails loudly, with the count it waited for and the recent history', async () => {
    const carol = lab().mailbox('carol@receiver.test');
    const held = (await carol.messages()).length;
    const wait = carol.waitForEmails(held + 3, { timeoutMs: 300 });
    await expect(wait).rejects.toBeInstanceOf(WaitTimeoutError);
    await expect(wait).rejects.toThrow(new RegExp(`mailbox carol@receiver\\.test INBOX on mailbox to hold ${held + 3} messages \\(it holds ${held}\\)[\\s\\S]*recent history:`));
  });

  it('settled waits for the MTA to record the outcome the mailbox server stored before: the queue no longer shows it', async () => {
    const sent = await lab().client('alice@sender.test').send({ to: 'bob@receiver.test', subject: 'settle', text: 'x' });
    await lab().waitFor({ kind: 'stored', messageId: sent.messageId });
    await lab().settled();
    expect((await lab().mta().queue()).find((m) => m.messageId === sent.messageId)).toBeUndefined();
    expect(lab().history.filter({ kind: 'relayed', messageId: sent.messageId })).toHaveLength(1);
  });

  it('resolve asks the lab DNS over DNS and answers typed records', async () => {
    expect(await lab().resolve('receiver.test', 'MX')).toEqual([{ exchange: 'mx.receiver.test', priority: 10 }]);
    expect(await lab().resolve('mx.receiver.test')).toEqual([lab().node('mx').config.address]);
    expect((await lab().resolve('sender.test', 'TXT')).some((t) => t.startsWith('v=spf1'))).toBe(true);
    expect((await lab().resolve('receiver.test', 'SOA'))[0]).toMatchObject({ nsname: expect.any(String), serial: expect.any(Number) });
    // NODATA: the name exists without such records.
    expect(await lab().resolve('mx.receiver.test', 'MX')).toEqual([]);
    await expect(lab().resolve('nobody.receiver.test')).rejects.toMatchObject({ code: 'ENOTFOUND', message: expect.stringMatching(/lab\.resolve\(nobody\.receiver\.test, A\) at the lab DNS/) });
  });

  it('a stopped node still answers its endpoints; describe() names every control channel', async () => {
    const mx = lab().node('mx');
    const smtp = mx.service('smtp');
    await mx.stop();
    try {
      expect(mx.isRunning).toBe(false);
      expect(mx.service('smtp')).toEqual(smtp);
      expect(mx.address('smtp')).toEqual({ host: mx.config.address, port: mx.as('mx').config.ports.smtp });
      expect(() => mx.address('imap')).toThrow(/node mx has no configured service imap \(it has smtp\)/);
      const described = lab().describe().nodes;
      expect(described.mx).toMatchObject({ running: false, services: { smtp }, control: { host: expect.any(String), port: expect.any(Number) } });
      for (const [name, node] of Object.entries(described)) expect(node.control, name).toEqual(lab().node(name).controlEndpoint);
    } finally {
      await mx.start();
    }
  });

  it('pop3() is awaited like imap()', async () => {
    const device = await lab().pop3('carol@receiver.test', { keepCopy: true });
    expect(Array.isArray(await device.download())).toBe(true);
  });

  queueOperationTests(lab);
});
