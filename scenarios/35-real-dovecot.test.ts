// Scenario 35 (issue 14, a real server in the lab): lab/dovecot.ts, the default lab with Debian's Dovecot as the
// mailbox server. maillab's MTA and MX deliver to it over LMTP; the harness reads it with its own IMAP and POP3
// devices and its mailbox operations (through doveadm); Dovecot's log becomes the `stored` and `session` events, so
// the checkers work unchanged. Local runtime, as root, with Dovecot installed (scripts/peers.sh installs it).
import { describe, expect, it } from 'vitest';
import { checkDeliveredOnce, checkHopOrder } from '../src/harness/index.js';
import dovecotLab from '../lab/dovecot.js';
import { useLab } from './support/lab.js';
import { whyRealServersSkip } from './support/real-servers.js';

const BOB = 'bob@receiver.test';
const skip = whyRealServersSkip('35-real-dovecot', ['dovecot']);

describe.skipIf(skip !== undefined)('Dovecot as the mailbox server', () => {
  const lab = useLab((l) => l, { definition: dovecotLab });

  it('alice → bob through maillab\'s MTA and MX into Dovecot, stored once, read over IMAP and POP3', async () => {
    const sent = await lab().client('alice@sender.test').send({ to: BOB, subject: 'to Dovecot', text: 'stored by a real server\n' });
    // Dovecot's `stored` comes from its log, read after the fact: it may land after the MX's hand-off in the history,
    // where maillab's own server records it before its LMTP 250. So it is checked apart from the hop order.
    await checkHopOrder(lab(), sent.messageId, ['mta:submitted', 'mta:queued', 'mx:received', 'mx:handoff', 'mta:relayed']);
    const stored = await lab().waitFor({ kind: 'stored', node: 'mailbox', messageId: sent.messageId });
    expect(stored.detail).toMatchObject({ user: BOB, mailbox: 'INBOX' });
    const { raw } = await checkDeliveredOnce(lab(), BOB, sent.messageId);
    expect(raw.toString('utf8')).toMatch(/stored by a real server/);

    const phone = await lab().imap(BOB, { device: 'phone' });
    await phone.waitForMessage(sent.messageId);
    const imapSession = await lab().waitFor({ kind: 'session', node: 'mailbox', detail: { protocol: 'imap', user: BOB } });
    expect(imapSession.detail.tls?.version).toMatch(/^TLSv1\.[23]$/);

    const laptop = await lab().pop3(BOB, { device: 'laptop', keepCopy: true });
    expect((await laptop.download()).length).toBe(1);
    expect(laptop.find(sent.messageId)?.toString('utf8')).toMatch(/stored by a real server/);
  });

  it('a DMARC quarantine lands in Junk through Dovecot\'s own address-detail delivery', async () => {
    // alice's DKIM signer is dropped and her SPF no longer lists the MTA: DMARC fails; p=quarantine for this test.
    await lab().mta().setDkim([]);
    await lab().dns.setRecords('sender.test', 'TXT', [{ data: 'v=spf1 ip4:192.0.2.10 -all' }]);
    await lab().dns.setRecords('_dmarc.sender.test', 'TXT', [{ data: 'v=DMARC1; p=quarantine' }]);
    const sent = await lab().client('alice@sender.test').send({ to: BOB, subject: 'suspicious', text: 'quarantine me\n' });
    const stored = await lab().waitFor({ kind: 'stored', node: 'mailbox', messageId: sent.messageId });
    expect(stored.detail.mailbox).toBe('Junk');
    expect(await lab().mailbox(BOB).find(sent.messageId, 'Junk')).toHaveLength(1);
  });
});
