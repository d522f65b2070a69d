// Scenario 23 (issue 11): every hop of the default lab is encrypted, and the history and the headers say so.
// alice submits with STARTTLS (required, the MTA verified against the lab CA); the MTA relays to the MX with
// STARTTLS (opportunistic); bob reads with IMAP and POP3 devices that STARTTLS / STLS and verify the mailbox server.
// LMTP stays plaintext inside the lab. On docker the clients reach the published ports on 127.0.0.1 and verify the
// servers under their host names, which their certificates carry.
import { describe, expect, it } from 'vitest';
import { headerSection } from '../src/harness/index.js';
import { useLab } from './support/lab.js';

const lab = useLab();
/** TLS 1.2 is the lab's minimum; Node negotiates 1.3 with itself. */
const SECURE = { version: expect.stringMatching(/^TLSv1\.[23]$/), cipher: expect.any(String) };

describe('TLS on every hop', () => {
  it('submission, relay and both mailbox protocols run over TLS; the events and the Received chain record it', async () => {
    const sent = await lab().client('alice@sender.test').send({ to: 'bob@receiver.test', subject: 'sealed', text: 'over TLS all the way' });

    const submitted = await lab().waitFor({ kind: 'submitted', messageId: sent.messageId });
    expect(submitted.detail.tls, 'alice → MTA (587, STARTTLS)').toEqual(SECURE);
    const relayed = await lab().waitFor({ kind: 'relayed', messageId: sent.messageId });
    expect(relayed.detail.tls, `MTA → MX (${relayed.detail.hop})`).toEqual(SECURE);
    const received = await lab().waitFor({ kind: 'received', node: 'mx', messageId: sent.messageId });
    expect(received.detail.tls, 'the MX saw the same').toEqual(SECURE);
    await lab().waitFor({ kind: 'stored', messageId: sent.messageId, detail: { user: 'bob@receiver.test' } });

    // The Received chain, newest first: the MX's (ESMTPS from the MTA), the MTA's (ESMTPSA from alice).
    const [stored] = await lab().mailbox('bob@receiver.test').find(sent.messageId);
    const receivedHeaders = headerSection(stored!.raw).split(/\r\n(?=Received:)/).filter((h) => h.startsWith('Received:'));
    expect(receivedHeaders.map((h) => /\(maillab\) with (\w+)/.exec(h)?.[1])).toEqual(['ESMTPS', 'ESMTPSA']);
    // Each names the TLS version and cipher of its hop, as Postfix does: the MX's is the relay's, the MTA's alice's.
    const using = receivedHeaders.map((h) => /\(using (TLSv1\.[23]) with cipher ([\w-]+)\)/.exec(h)?.slice(1));
    expect(using).toEqual([[relayed.detail.tls!.version, relayed.detail.tls!.cipher], [expect.stringMatching(/^TLSv1\.[23]$/), expect.any(String)]]);

    const phone = await lab().imap('bob@receiver.test', { device: 'phone' });
    await phone.waitForMessage(sent.messageId);
    const imapSession = await lab().waitFor({ kind: 'session', node: 'mailbox', detail: { protocol: 'imap' } });
    expect(imapSession.detail.tls, 'IMAP (STARTTLS)').toEqual(SECURE);

    const laptop = await lab().pop3('bob@receiver.test', { device: 'laptop', keepCopy: true });
    expect((await laptop.download()).length).toBe(1);
    const popSession = await lab().waitFor({ kind: 'session', node: 'mailbox', detail: { protocol: 'pop3' } });
    expect(popSession.detail.tls, 'POP3 (STLS)').toEqual(SECURE);
  });
});
