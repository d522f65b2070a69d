// Happy path: alice@sender.test submits a message to the lab's MTA, which asks the lab DNS for receiver.test's MX,
// relays the message to the MX, which hands it to the mailbox server over LMTP, where bob reads it. Written by
// `maillab init`; run it with `npm run test:mail` (or `npx maillab run happy`).
import { describe, expect, it } from 'vitest';
import { checkDeliveredOnce, checkHopOrder, headerSection } from 'maillab';
import { useLab } from 'maillab/vitest';
import definition from '../lab/mail.js';

describe('happy path', () => {
  // One lab for this file's tests: started before them, stopped after them (even when one fails). useLab also sets
  // vitest's timeouts to what a lab needs.
  const lab = useLab(undefined, { definition });

  it('delivers alice → bob once, along every hop, with the body intact', async () => {
    // Submission as a mail app does it: port 587, STARTTLS with the lab CA, AUTH as alice.
    const sent = await lab().client('alice@sender.test').send({ to: 'bob@receiver.test', subject: 'Hello along the whole path', text: 'Hello Bob,\r\n\r\nalice\r\n' });
    expect(sent.response).toMatch(/^250 /);

    // Wait for the event, never for a while: every node records what it does, and the lab merges it into one history.
    await lab().waitFor({ kind: 'stored', messageId: sent.messageId });
    // The hops, in this order, each recorded by the node that made it (node:kind).
    await checkHopOrder(lab(), sent.messageId, ['mta:submitted', 'mta:queued', 'mta:mx-lookup', 'mta:connect', 'mx:received', 'mailbox:stored', 'mx:handoff', 'mta:relayed']);

    // maillab's matchers (registered by setupFiles: ['maillab/vitest/setup'] in vitest.config.ts) wait, and fail with
    // the message's trace as a table.
    await expect(lab()).toHaveDelivered(sent, { to: 'bob@receiver.test' });
    await expect(lab()).toHaveHop(sent, 'mta', 'mx');
    // In bob's mailbox exactly once (a duplicate fails), as the bytes the mailbox server stored.
    const { raw } = await checkDeliveredOnce(lab(), 'bob@receiver.test', sent.messageId);
    const head = headerSection(raw);
    expect(head).toMatch(/^Subject: Hello along the whole path$/m);
    // The MTA signed it with sender.test's DKIM key, and the MX checked SPF, DKIM and DMARC against the lab DNS.
    expect(head).toMatch(/^DKIM-Signature: /m);
    expect(head.replace(/\r\n\s+/g, ' ')).toMatch(/^Authentication-Results: mx\.receiver\.test;.*\bdkim=pass\b.*\bdmarc=pass\b/m);
    expect(raw.toString('utf8')).toContain('Hello Bob,');
  });

  it('delivers to two recipients, with an attachment', async () => {
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
