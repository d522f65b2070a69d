// Issue 3, scenario 5: text, HTML, an inline image and a binary attachment cross the whole path byte-identical
// and are fetched intact over IMAP and POP3.
import { createHash } from 'node:crypto';
import { simpleParser } from 'mailparser';
import { describe, expect, it } from 'vitest';
import { useLab } from './support/lab.js';
import { scenarioServers } from './support/servers.js';

const servers = await scenarioServers('13-mime-fidelity');

const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');

describe.skipIf(servers.skip)('MIME fidelity', () => {
  const lab = useLab();

  it('delivers every part intact to IMAP and POP3', async () => {
    // A 1x1 PNG and 64 KiB of every byte value.
    const png = Buffer.from('iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR4nGNgYGD4DwABBAEAwS2OUAAAAABJRU5ErkJggg==', 'base64');
    const binary = Buffer.from(Array.from({ length: 65536 }, (_, i) => i % 256));
    const text = 'Plain text with accents: café, naïve, Grüße.\nAnd a line starting with a dot:\n.\nEnd.';
    const html = '<p>HTML with an inline image: <img src="cid:logo@maillab"></p>';
    const sent = await lab().client('alice@sender.test').send({
      to: 'bob@receiver.test',
      subject: 'Every kind of part — ünïcödé subject',
      text,
      html,
      attachments: [
        { filename: 'logo.png', content: png, cid: 'logo@maillab', contentType: 'image/png' },
        { filename: 'bytes.bin', content: binary, contentType: 'application/octet-stream' },
      ],
    });
    await lab().waitFor({ kind: 'stored', messageId: sent.messageId, detail: { user: 'bob@receiver.test' } });
    const [onServer] = await lab().mailbox('bob@receiver.test').find(sent.messageId);

    const check = async (raw: Buffer, via: string) => {
      const parsed = await simpleParser(raw, { keepCidLinks: true });
      expect(parsed.subject, via).toBe('Every kind of part — ünïcödé subject');
      expect(parsed.text?.trim(), via).toBe(text);
      expect(parsed.html, via).toContain('cid:logo@maillab');
      const logo = parsed.attachments.find((a) => a.cid === 'logo@maillab');
      const bytes = parsed.attachments.find((a) => a.filename === 'bytes.bin');
      expect(sha(logo!.content), via).toBe(sha(png));
      expect(sha(bytes!.content), via).toBe(sha(binary));
    };
    await check(onServer!.raw, 'mailbox store');

    const laptop = await lab().imap('bob@receiver.test', { device: 'laptop' });
    await laptop.waitForMessage(sent.messageId);
    const viaImap = await laptop.read(sent.messageId);
    expect(viaImap.equals(onServer!.raw)).toBe(true);
    await check(viaImap, 'IMAP');

    const phone = await lab().pop3('bob@receiver.test', { device: 'phone', keepCopy: true });
    await phone.download();
    const viaPop = phone.find(sent.messageId)!;
    expect(viaPop.equals(onServer!.raw)).toBe(true);
    await check(viaPop, 'POP3');
  });
});
