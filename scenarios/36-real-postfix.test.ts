// Scenario 36 (issue 14, real servers in the lab): lab/postfix-dovecot.ts, the default lab with Debian's Postfix as
// receiver.test's MX and Dovecot as the mailbox server. maillab's MTA relays to Postfix over STARTTLS, Postfix hands
// the message to Dovecot over LMTP; Postfix's maillog and Dovecot's log become the MX's and the mailbox server's
// events. Postfix queues: it says 250 before its LMTP hand-off (maillab's MX says it after), so the MTA's `relayed`
// may come before the MX's `handoff`. Local runtime, as root, with Postfix and Dovecot installed.
import { describe, expect, it } from 'vitest';
import { checkDeliveredOnce } from '../src/harness/index.js';
import postfixDovecotLab from '../lab/postfix-dovecot.js';
import { useLab } from './support/lab.js';
import { whyRealServersSkip } from './support/real-servers.js';

const BOB = 'bob@receiver.test';
const skip = whyRealServersSkip('36-real-postfix', ['postfix', 'dovecot']);

describe.skipIf(skip !== undefined)('Postfix as the MX, Dovecot as the mailbox server', () => {
  const lab = useLab((l) => l, { definition: postfixDovecotLab });

  it('alice → maillab MTA → Postfix (STARTTLS) → Dovecot, stored once, read over IMAP', async () => {
    const sent = await lab().client('alice@sender.test').send({ to: BOB, subject: 'through Postfix', text: 'relayed by a real MX\n' });
    const relayed = await lab().waitFor({ kind: 'relayed', messageId: sent.messageId, detail: { rcpt: BOB } });
    expect(relayed.detail.reply).toMatch(/^250 2\.0\.0 Ok: queued as [0-9A-F]+/);
    expect(relayed.detail.tls?.version).toMatch(/^TLSv1\.[23]$/);
    const received = await lab().waitFor({ kind: 'received', node: 'mx', messageId: sent.messageId });
    expect(received.detail).toMatchObject({ from: 'alice@sender.test', to: [BOB], client: lab().nodeOf('mta').config.address });
    const handoff = await lab().waitFor({ kind: 'handoff', node: 'mx', messageId: sent.messageId });
    expect(handoff.detail.recipients).toEqual([expect.objectContaining({ address: BOB, accepted: true })]);
    await lab().waitFor({ kind: 'stored', node: 'mailbox', messageId: sent.messageId, detail: { user: BOB } });
    const { raw } = await checkDeliveredOnce(lab(), BOB, sent.messageId);
    expect(raw.toString('utf8')).toMatch(/by mx\.receiver\.test \(Postfix\)/);
    const phone = await lab().imap(BOB, { device: 'phone' });
    await phone.waitForMessage(sent.messageId);
  });

  it('an unknown recipient is refused by Postfix at RCPT (550 5.1.1), and alice gets the DSN', async () => {
    const sent = await lab().client('alice@sender.test').send({ to: 'nobody@receiver.test', subject: 'to nobody', text: 'x\n' });
    const bounced = await lab().waitFor({ kind: 'bounced', messageId: sent.messageId, detail: { rcpt: 'nobody@receiver.test' } });
    expect(bounced.detail.reply).toMatch(/^550 5\.1\.1 <nobody@receiver\.test>: Recipient address rejected/);
    const rejected = await lab().waitFor({ kind: 'rejected', node: 'mx', detail: { rcpt: 'nobody@receiver.test' } });
    expect(rejected.detail.stage).toBe('RCPT TO');
    const dsn = await lab().waitFor({ kind: 'dsn-created', where: (e) => e.detail.for.messageId === sent.messageId });
    await lab().waitFor({ kind: 'stored', node: 'mailbox', messageId: dsn.detail.dsnMessageId, detail: { user: 'alice@sender.test' } });
  });
});
