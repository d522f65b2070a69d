// Scenario 41 (issue 15, scenario 2): the MX answers `421 4.7.0` to the second of three RCPT TOs and closes the
// connection. No DATA was sent in that session, so no recipient got the message (the first had only its RCPT
// accepted): the MTA defers all three with the 421 and retries, and each recipient is delivered exactly once.
import { describe, expect, it } from 'vitest';
import { checkDeliveredOnce } from '../src/harness/index.js';
import { useLab } from './support/lab.js';

const RECIPIENTS = ['bob@receiver.test', 'carol@receiver.test', 'dave@receiver.test'];

const lab = useLab((l) =>
  l.withRetry({ schedule: [300] }).with((d) => {
    d.faults = {
      ...d.faults,
      smtp: { ...d.faults?.smtp, mx: [{ id: 'busy-421', stage: 'rcpt', match: { recipient: 'carol@receiver.test' }, times: 1, action: { kind: 'reply', code: 421, enhancedCode: '4.7.0', text: 'too busy, closing connection' } }] },
    };
  }),
);

describe('421 in the middle of a session', () => {
  it('retries the recipients of the broken session and delivers each exactly once', async () => {
    const sent = await lab().client('alice@sender.test').send({ to: RECIPIENTS, subject: 'three of you', text: 'one message, three recipients' });
    for (const rcpt of RECIPIENTS) await checkDeliveredOnce(lab(), rcpt, sent.messageId, { timeoutMs: 15_000 });

    const events = lab().history.events;
    const fault = await lab().waitFor({ kind: 'fault', node: 'mx', where: (e) => e.detail.rule === 'busy-421' });
    expect(fault.detail).toMatchObject({ action: 'reply', stage: 'rcpt', effect: '421 4.7.0 too busy, closing connection', recipients: ['carol@receiver.test'] });
    const deferred = events.filter((e) => e.kind === 'deferred' && e.messageId === sent.messageId);
    // The session ended before DATA: every recipient of it is deferred, with the 421 and the RCPT it answered.
    expect(deferred.map((e) => e.kind === 'deferred' && e.detail.rcpt).sort()).toEqual([...RECIPIENTS].sort());
    for (const d of deferred) {
      if (d.kind !== 'deferred') continue;
      expect(d.detail.reply).toBe('421 4.7.0 too busy, closing connection');
      expect(d.detail.command).toBe('RCPT TO:<carol@receiver.test>');
      expect(d.detail.hop).toBe(fault.detail.hop);
    }
    // One relay per recipient, each after the fault (a retry's delay later); the rule was spent after one 421.
    const relayed = events.filter((e) => e.kind === 'relayed' && e.messageId === sent.messageId);
    expect(relayed.map((e) => e.kind === 'relayed' && e.detail.rcpt).sort()).toEqual([...RECIPIENTS].sort());
    expect(relayed.every((e) => e.time > fault.time)).toBe(true);
    expect((await lab().smtpFaults('mx').list())[0]).toMatchObject({ id: 'busy-421', fired: 1 });
  });

  it("applies at the MTA's submission port too: the client hears the rule's 421 at MAIL FROM, then the rule is spent", async () => {
    await lab().smtpFaults('mta').set([{ id: 'submit-421', stage: 'mail', match: { sender: 'alice@sender.test' }, times: 1, action: { kind: 'reply', code: 421, enhancedCode: '4.3.2', text: 'system going down' } }]);
    const client = lab().client('alice@sender.test');
    await expect(client.send({ to: 'bob@receiver.test', subject: 'refused', text: 'not now' })).rejects.toThrow(/421 4\.3\.2 system going down/);
    const fault = await lab().waitFor({ kind: 'fault', node: 'mta', where: (e) => e.detail.rule === 'submit-421' });
    // Named as the MTA's own events name its inbound hops.
    expect(fault.detail.hop).toMatch(/\] -> mta\.sender\.test \(submission\)$/);
    expect(fault.detail).toMatchObject({ stage: 'mail', sender: 'alice@sender.test', effect: '421 4.3.2 system going down' });
    const sent = await client.send({ to: 'bob@receiver.test', subject: 'accepted', text: 'now' });
    await checkDeliveredOnce(lab(), 'bob@receiver.test', sent.messageId);
    await lab().smtpFaults('mta').clear();
  });
});
