// Scenario 20: only the lab's MX and MTA may deliver over LMTP (issue 9, finding 8). A client anywhere else on the
// host (here the harness itself) is refused before the greeting; mail still flows both ways LMTP is used: the MX's
// hand-off (alice → bob) and the MTA's local delivery (bob → alice). On the docker runtime the MX and MTA connect
// from their container addresses, which are the ones the lab plan lists.
import { describe, expect, it } from 'vitest';
import { checkDeliveredOnce, smtpDialogue } from '../src/harness/index.js';
import { useLab } from './support/lab.js';

const lab = useLab();

describe('LMTP clients', () => {
  it('refuses a client that is neither the MX nor the MTA, at connect', async () => {
    const [greeting, ...rest] = await smtpDialogue(lab().node('mailbox').service('lmtp'), []);
    expect(greeting!.code).toBe(554);
    expect(greeting!.text).toMatch(/^554 5\.7\.1 <[0-9a-f.:]+> is not allowed to deliver here$/);
    // Nothing else is answered: the connection is closed after the refusal.
    expect(rest).toEqual([]);
    const rejected = await lab().waitFor({ kind: 'rejected', node: 'mailbox', detail: { stage: 'connect' } });
    expect(rejected.detail.reply).toBe(greeting!.text);
  });

  it('the MX hands mail over and the MTA delivers locally, as before', async () => {
    const toBob = await lab().client('alice@sender.test').send({ to: 'bob@receiver.test', subject: 'via the MX', text: 'hello bob' });
    const toAlice = await lab().client('bob@receiver.test').send({ to: 'alice@sender.test', subject: 'via the MTA', text: 'hello alice' });
    await checkDeliveredOnce(lab(), 'bob@receiver.test', toBob.messageId);
    await checkDeliveredOnce(lab(), 'alice@sender.test', toAlice.messageId);
    // The allowed list is the MX's and the MTA's lab addresses, and neither was ever refused.
    const deliverers = [lab().node('mx').config.address, lab().node('mta').config.address];
    expect(lab().node('mailbox').as('mailbox').config.lmtpClients?.sort()).toEqual(deliverers.sort());
    const refused = lab().history.events.filter((e) => e.node === 'mailbox' && e.kind === 'rejected' && deliverers.includes(String(e.detail.client)));
    expect(refused).toEqual([]);
  });
});
