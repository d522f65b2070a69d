// Scenario 1: alice → bob along the whole path: submitted, queued, MX lookup, relayed, stored.
import { describe, expect, it } from 'vitest';
import { checkDeliveredOnce, checkHopOrder, headerSection } from '../src/harness/index.js';
import { useLab } from './support/lab.js';

const lab = useLab();

describe('happy path', () => {
  it('delivers alice → bob with one Received header per hop and a byte-identical body', async () => {
    const messageId = `<happy-${Date.now()}@sender.test>`;
    // A body with the shapes that break careless SMTP code: a lone dot, leading dots, long and empty lines, 8-bit.
    const body = ['Hello Bob,', '', '.', '..two dots', '.leading dot', 'x'.repeat(990), 'caf\u00e9 ol\u00e9', '', 'alice', ''].join('\r\n');
    const raw = [
      'From: Alice <alice@sender.test>',
      'To: Bob <bob@receiver.test>',
      'Subject: Hello along the whole path',
      `Message-ID: ${messageId}`,
      'Date: Sun, 22 Nov 2026 10:00:00 +0000',
      'MIME-Version: 1.0',
      'Content-Type: text/plain; charset=utf-8',
      'Content-Transfer-Encoding: 8bit',
      '',
      body,
    ].join('\r\n');

    const sent = await lab().client('alice@sender.test').send({ raw, to: 'bob@receiver.test' });
    expect(sent.response).toMatch(/^250 /);
    expect(sent.messageId).toBe(messageId);

    // "250" travels back only after the message is stored: stored comes before the MX's hand-off reply and
    // before the MTA records the relay.
    await checkHopOrder(lab(), messageId, [
      'mta:submitted',
      'mta:queued',
      'mta:mx-lookup',
      'mta:connect',
      'mx:received',
      'mailbox:stored',
      'mx:handoff',
      'mta:relayed',
    ]);

    // The MTA asked the lab DNS for receiver.test's MX.
    expect(lab().history.filter({ kind: 'dns-query', node: 'dns', where: (e) => e.detail.name === 'receiver.test' && e.detail.type === 'MX' }).length).toBeGreaterThan(0);

    const { raw: stored } = await checkDeliveredOnce(lab(), 'bob@receiver.test', messageId);
    const head = headerSection(stored);
    const received = head.split(/\r\n(?=\S)/).filter((h) => /^received:/i.test(h));
    expect(received).toHaveLength(2);
    expect(received[0]).toMatch(/by mx\.receiver\.test/); // newest first (RFC 5321 §4.4)
    expect(received[1]).toMatch(/by mta\.sender\.test/);
    // The MX verified sender.test's SPF, DKIM and DMARC against the lab DNS, and said so (RFC 8601).
    const results = head.split(/\r\n(?=\S)/).filter((h) => /^authentication-results:/i.test(h));
    expect(results, 'one Authentication-Results, by the MX').toHaveLength(1);
    const verdict = results[0]!.replace(/\r\n\s+/g, ' ');
    expect(verdict).toMatch(/^Authentication-Results: mx\.receiver\.test;/);
    expect(verdict).toMatch(/\bspf=pass [^;]*smtp\.mailfrom=alice@sender\.test/);
    expect(verdict).toMatch(/\bdkim=pass [^;]*header\.i=@sender\.test [^;]*header\.s=lab/);
    expect(verdict).toMatch(/\bdmarc=pass [^;]*header\.from=sender\.test/);
    const signed = await lab().waitFor({ kind: 'submitted', messageId });
    expect(signed.detail.dkim).toEqual({ domain: 'sender.test', selector: 'lab', algorithm: 'rsa-sha256' });
    const checked = await lab().waitFor({ kind: 'authenticated', messageId });
    expect(checked.detail).toMatchObject({ action: 'accept', spf: { result: 'pass', domain: 'sender.test' }, dmarc: { result: 'pass', p: 'reject' } });
    const storedBody = stored.subarray(stored.indexOf('\r\n\r\n') + 4);
    expect(storedBody.equals(Buffer.from(body, 'utf8'))).toBe(true);
  });

  it('composes with nodemailer (text, html, attachment) and delivers to two recipients', async () => {
    const sent = await lab()
      .client('alice@sender.test')
      .send({
        to: ['bob@receiver.test', 'carol@receiver.test'],
        subject: 'For both of you',
        text: 'plain text',
        html: '<p>html</p>',
        attachments: [{ filename: 'data.bin', content: Buffer.from([0, 1, 2, 254, 255]) }],
      });
    await checkDeliveredOnce(lab(), 'bob@receiver.test', sent.messageId);
    await checkDeliveredOnce(lab(), 'carol@receiver.test', sent.messageId);
  });
});
