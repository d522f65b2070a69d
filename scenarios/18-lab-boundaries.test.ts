// Scenario 18 (issue 9, findings 4 and 6), on the whole lab: the MTA sends only to the lab's own hosts, and its
// port 25 refuses unknown local users instead of bouncing to whoever the sender claims to be.
// - an address literal of a lab host is delivered (the MX takes `bob@[<its address>]` as bob@receiver.test);
// - an address literal outside the lab is refused at RCPT (550 5.7.1) on 587 and 25;
// - a domain whose MX resolves outside the lab bounces (5.4.4, the DSN names the address) with no connection made;
// - RCPT to an unknown user of sender.test on 25 is refused (550 5.1.1): nothing is queued, so nothing bounces.
// The outside address is 127.0.0.1: were the MTA to connect, the packet would still stay on loopback.
import { describe, expect, it } from 'vitest';
import { smtpDialogue } from '../src/harness/index.js';
import { useLab } from './support/lab.js';

const OUTSIDE = '127.0.0.1';
const lab = useLab();

describe('lab boundaries', () => {
  it('delivers to an address literal of a lab host', async () => {
    // The address the MX has inside the lab (on docker the published endpoint is 127.0.0.1, which is outside).
    const mx = lab().node('mx').config.address;
    const sent = await lab().client('alice@sender.test').send({ to: `bob@[${mx}]`, subject: 'to a literal', text: 'hi' });
    // The MTA relays to the literal as addressed; the MX delivers it to bob@receiver.test.
    const relayed = await lab().waitFor({ kind: 'relayed', messageId: sent.messageId });
    expect(relayed.detail).toMatchObject({ rcpt: `bob@[${mx}]`, host: mx, status: '2.0.0' });
    await lab().waitFor({ kind: 'stored', messageId: sent.messageId, detail: { user: 'bob@receiver.test' } });
    expect(await lab().mailbox('bob@receiver.test').find(sent.messageId)).toHaveLength(1);
  });

  it('refuses an address literal outside the lab at RCPT, on 587 and on 25', async () => {
    const auth = `AUTH PLAIN ${Buffer.from('\0alice@sender.test\0alice-secret').toString('base64')}`;
    const submission = await smtpDialogue(lab().node('mta').service('submission'), ['EHLO client.test', 'STARTTLS', 'EHLO client.test', auth, 'MAIL FROM:<alice@sender.test>', `RCPT TO:<x@[${OUTSIDE}]>`], { tls: lab().tlsFor('mta') });
    expect(submission[6]!.text).toMatch(new RegExp(`^550 5\\.7\\.1 <x@\\[${OUTSIDE.replace(/\./g, '\\.')}\\]>: address literal .* is outside the lab`));
    const smtp = await smtpDialogue(lab().node('mta').service('smtp'), ['EHLO client.test', 'MAIL FROM:<someone@elsewhere.test>', `RCPT TO:<x@[${OUTSIDE}]>`]);
    expect(smtp[3]!.text).toMatch(/^550 5\.7\.1 .*outside the lab/);
    await lab().waitFor({ kind: 'rejected', node: 'mta', where: (e) => 'service' in e.detail && e.detail.service === 'smtp' && e.detail.attempted === `x@[${OUTSIDE}]` });
  });

  it('bounces mail for a domain whose MX is outside the lab, without connecting to it', async () => {
    await lab().dns.addZone({
      origin: 'away.test',
      records: [
        { name: 'away.test', type: 'MX', exchange: 'mx.away.test', priority: 10 },
        { name: 'mx.away.test', type: 'A', address: OUTSIDE },
      ],
    });
    const sent = await lab().client('alice@sender.test').send({ to: 'x@away.test', subject: 'away', text: 'hi' });
    const bounced = await lab().waitFor({ kind: 'bounced', messageId: sent.messageId });
    expect(bounced.detail.status).toBe('5.4.4');
    expect(bounced.detail.reply).toContain(`mx.away.test[${OUTSIDE}], outside the lab`);
    const dsn = await lab().waitFor({ kind: 'dsn-created', node: 'mta', where: (e) => e.detail.for.messageId === sent.messageId });
    await lab().waitFor({ kind: 'stored', messageId: dsn.detail.dsnMessageId, detail: { user: 'alice@sender.test' } });
    expect(lab().history.events.filter((e) => e.node === 'mta' && (e.kind === 'connect' || e.kind === 'connect-failed') && 'host' in e.detail && e.detail.host === OUTSIDE)).toEqual([]);
  });

  it('refuses an unknown user of its own domain on 25 at RCPT, so a forged sender gets no bounce', async () => {
    const replies = await smtpDialogue(lab().node('mta').service('smtp'), ['EHLO client.test', 'MAIL FROM:<victim@elsewhere.test>', 'RCPT TO:<nobody@sender.test>']);
    expect(replies[3]!.text).toBe('550 5.1.1 <nobody@sender.test>: no such user here');
    await lab().waitFor({ kind: 'rejected', node: 'mta', detail: { stage: 'RCPT TO', reply: '550 5.1.1 <nobody@sender.test>: no such user here' } });
    expect(lab().history.events.filter((e) => e.node === 'mta' && (e.kind === 'queued' || e.kind === 'dsn-created') && JSON.stringify(e.detail).includes('victim@elsewhere.test'))).toEqual([]);
  });
});
