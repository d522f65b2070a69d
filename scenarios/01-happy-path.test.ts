// Scenario 1: alice → bob along the whole path: submitted, queued, MX lookup, relayed, stored.
// Server-neutral (issue 14): against a lab with real servers it checks what each of them guarantees (see hopsOf).
import { describe, expect, it } from 'vitest';
import { checkDeliveredOnce, checkHopOrder, headerSection } from '../src/harness/index.js';
import { useLab } from './support/lab.js';
import { scenarioServers, type ScenarioServers } from './support/servers.js';

const servers = await scenarioServers('01-happy-path');

/**
 * The hop orders the servers under test guarantee, each a chain checkHopOrder checks. maillab's MX says "250" only
 * after the mailbox server stored the message, and maillab's mailbox server records `stored` before its LMTP 250:
 * one chain. Dovecot's `stored` is read from its log after the fact (it may follow the MX's hand-off in the history),
 * so it is left to checkDeliveredOnce. Postfix as the MX queues: its 250 comes before its LMTP hand-off, so the MTA's
 * chain ends with `relayed` and the MX's own is a second chain. Postfix as the MTA logs no MX lookup (the lab DNS's
 * `dns-query`, checked below, shows it), and its maillog names a message's recipients only at delivery, so its
 * `submitted` and `queued` come with the first outcome, after the MX received the message: its own events are one
 * chain, and the MX's hops come before its `relayed` (the MX said 250 after them).
 */
function hopsOf(s: ScenarioServers): string[][] {
  const sender = ['mta:submitted', 'mta:queued', ...(s.mta === 'maillab' ? ['mta:mx-lookup'] : []), 'mta:connect'];
  if (s.mx === 'postfix') return [[...sender, 'mta:relayed'], ['mx:received', 'mx:handoff']];
  const mx = ['mx:received', ...(s.mailbox === 'maillab' ? ['mailbox:stored'] : []), 'mx:handoff', 'mta:relayed'];
  if (s.mta === 'postfix') return [[...sender, 'mta:relayed'], mx];
  return [[...sender, ...mx]];
}

const headers = (head: string, name: string) => head.split(/\r\n(?=\S)/).filter((h) => h.toLowerCase().startsWith(`${name}:`));

describe.skipIf(servers.skip)('happy path', () => {
  const lab = useLab();

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

    for (const chain of hopsOf(servers)) await checkHopOrder(lab(), messageId, chain);

    // The MTA asked the lab DNS for receiver.test's MX.
    expect(lab().history.filter({ kind: 'dns-query', node: 'dns', where: (e) => e.detail.name === 'receiver.test' && e.detail.type === 'MX' }).length).toBeGreaterThan(0);

    const { raw: stored } = await checkDeliveredOnce(lab(), 'bob@receiver.test', messageId);
    const head = headerSection(stored);
    // One Received per hop that adds one, newest first (RFC 5321 §4.4): maillab's mailbox server adds none (it is the
    // final delivery, as a Maildir), Dovecot's LMTP adds its own.
    const received = headers(head, 'received');
    const hops = [...(servers.mailbox === 'dovecot' ? [/by mail\.receiver\.test/] : []), /by mx\.receiver\.test/, /by mta\.sender\.test/];
    expect(received, received.join('\n')).toHaveLength(hops.length);
    hops.forEach((hop, i) => expect(received[i]).toMatch(hop));
    // maillab's MTA signed it with sender.test's DKIM key (what the MX checks is the next test). Postfix signs nothing
    // without a milter, and the lab runs none with it: the message arrives unsigned.
    const signed = await lab().waitFor({ kind: 'submitted', messageId });
    expect(signed.detail.user).toBe('alice@sender.test');
    if (servers.mta === 'postfix') {
      expect(signed.detail.dkim).toBeUndefined();
      expect(headers(head, 'dkim-signature')).toHaveLength(0);
    } else {
      expect(signed.detail.dkim).toEqual({ domain: 'sender.test', selector: 'lab', algorithm: 'rsa-sha256' });
      expect(headers(head, 'dkim-signature')).toHaveLength(1);
    }
    const storedBody = stored.subarray(stored.indexOf('\r\n\r\n') + 4);
    expect(storedBody.equals(Buffer.from(body, 'utf8'))).toBe(true);
  });

  it.skipIf(servers.skipWhen(servers.mx === 'postfix', 'the MX verifies SPF, DKIM and DMARC', 'Postfix verifies no mail authentication without milters, and the lab runs none with it'))(
    'the MX verifies SPF, DKIM and DMARC against the lab DNS and says so (RFC 8601)',
    async () => {
      const sent = await lab().client('alice@sender.test').send({ to: 'bob@receiver.test', subject: 'signed and checked', text: 'authenticated' });
      const { raw: stored } = await checkDeliveredOnce(lab(), 'bob@receiver.test', sent.messageId);
      const results = headers(headerSection(stored), 'authentication-results');
      expect(results, 'one Authentication-Results, by the MX').toHaveLength(1);
      const verdict = results[0]!.replace(/\r\n\s+/g, ' ');
      expect(verdict).toMatch(/^Authentication-Results: mx\.receiver\.test;/);
      expect(verdict).toMatch(/\bspf=pass [^;]*smtp\.mailfrom=alice@sender\.test/);
      expect(verdict).toMatch(/\bdmarc=pass [^;]*header\.from=sender\.test/);
      const checked = await lab().waitFor({ kind: 'authenticated', messageId: sent.messageId });
      expect(checked.detail).toMatchObject({ action: 'accept', spf: { result: 'pass', domain: 'sender.test' }, dmarc: { result: 'pass', p: 'reject' } });
      if (servers.mta === 'postfix') {
        // Postfix signs nothing (no milter): the MX finds no signature, and DMARC passes on the aligned SPF alone.
        expect(verdict).toMatch(/\bdkim=none\b/);
        expect(checked.detail).toMatchObject({ dkim: [], dmarc: { alignment: { spf: 'sender.test', dkim: false } } });
      } else {
        expect(verdict).toMatch(/\bdkim=pass [^;]*header\.i=@sender\.test [^;]*header\.s=lab/);
      }
    },
  );

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
