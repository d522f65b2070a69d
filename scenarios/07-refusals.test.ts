// Scenario 7: what the servers refuse: submission without AUTH, a wrong password, relaying through the MX or
// through the MTA's port 25. Server-neutral (issue 14): what is checked is where and how a refusal happens (the
// command, a permanent code, the enhanced status), with each server's own reply code.
import { describe, expect, it } from 'vitest';
import { smtpDialogue } from '../src/harness/index.js';
import { useLab } from './support/lab.js';
import { scenarioServers } from './support/servers.js';

const servers = await scenarioServers('07-refusals');
/** A reply's code and enhanced status (`554 5.7.1`), what a refusal is about whatever its text. */
const codes = (reply: string) => /^\d{3} \d\.\d{1,3}\.\d{1,3}/.exec(reply)?.[0];

describe.skipIf(servers.skip)('refusals', () => {
  const lab = useLab(undefined, { scope: 'test' });

  it('refuses MAIL FROM on submission before AUTH', async () => {
    const replies = await smtpDialogue(
      lab().node('mta').service('submission'),
      ['EHLO client.sender.test', 'STARTTLS', 'EHLO client.sender.test', 'MAIL FROM:<alice@sender.test>', 'RCPT TO:<bob@receiver.test>', 'DATA'],
      { tls: lab().tlsFor('mta') },
    );
    // RFC 8314: no AUTH is offered before TLS, only STARTTLS.
    expect(replies[1]!.text).toMatch(/STARTTLS/);
    expect(replies[1]!.text).not.toMatch(/AUTH/);
    expect(replies[3]!.text).toMatch(/AUTH.*PLAIN/);
    expect(replies[3]!.text).toMatch(/LOGIN/);
    if (servers.mta === 'postfix') {
      // Postfix takes MAIL and applies the submission service's client restrictions at RCPT TO (smtpd_delay_reject):
      // the refusal comes there, for good, as a policy refusal (5.7.x), and no DATA is accepted.
      expect(replies[4]!.code).toBe(250);
      expect(replies[5]!.text).toMatch(/^5\d\d 5\.7\.\d+ /);
      expect(replies[6]!.code).not.toBe(354);
      expect(replies[6]!.code).toBeGreaterThanOrEqual(500);
      const rejected = await lab().waitFor({ kind: 'rejected', node: 'mta', detail: { service: 'submission' } });
      expect(rejected.detail.stage).toBe('RCPT TO');
      expect(codes(rejected.detail.reply)).toBe(codes(replies[5]!.text));
    } else {
      expect(replies[4]!.code).toBe(530);
      expect(replies[4]!.text).toMatch(/5\.7\.0/);
    }
  });

  it('refuses a wrong password with 535 and accepts the right one', async () => {
    await expect(
      lab().client('alice@sender.test').send({ to: 'bob@receiver.test', subject: 'x', text: 'x', password: 'wrong' }),
    ).rejects.toThrow(/535/);
    const bad = Buffer.from('\0alice@sender.test\0wrong').toString('base64');
    const good = Buffer.from('\0alice@sender.test\0alice-secret').toString('base64');
    const replies = await smtpDialogue(lab().node('mta').service('submission'), ['EHLO c', 'STARTTLS', 'EHLO c', `AUTH PLAIN ${bad}`, `AUTH PLAIN ${good}`], { tls: lab().tlsFor('mta') });
    expect(replies[4]!.code).toBe(535);
    expect(replies[5]!.code).toBe(235);
    await lab().waitFor({ kind: 'auth-failed', node: 'mta' });
  });

  it('the MX refuses to relay to a foreign domain and refuses unknown users', async () => {
    const replies = await smtpDialogue(lab().node('mx').service('smtp'), [
      'EHLO stranger.test',
      'MAIL FROM:<spammer@stranger.test>',
      'RCPT TO:<victim@elsewhere.test>',
      'RCPT TO:<nobody@receiver.test>',
      'RCPT TO:<bob@receiver.test>',
    ]);
    expect(replies[1]!.text).not.toMatch(/AUTH/);
    // Refused at RCPT, for good, with 5.7.1: maillab's MX says 550, Postfix its relay_domains_reject_code (554).
    expect(replies[3]!.code).toBe(servers.mx === 'postfix' ? 554 : 550);
    expect(replies[3]!.text).toMatch(/^5\d\d 5\.7\.1 /);
    expect(replies[4]!.text).toMatch(/^550 5\.1\.1/);
    expect(replies[5]!.code).toBe(250);
    // The MX recorded both refusals, at RCPT TO, with the replies the client got.
    for (const [rcpt, reply] of [['victim@elsewhere.test', replies[3]!], ['nobody@receiver.test', replies[4]!]] as const) {
      const rejected = await lab().waitFor({ kind: 'rejected', node: 'mx', detail: { rcpt } });
      expect(rejected.detail.stage).toBe('RCPT TO');
      expect(codes(rejected.detail.reply)).toBe(codes(reply.text));
    }
  });

  it("the MTA's port 25 accepts only mail for its own domains", async () => {
    const replies = await smtpDialogue(lab().node('mta').service('smtp'), [
      'EHLO stranger.test',
      'MAIL FROM:<someone@stranger.test>',
      'RCPT TO:<bob@receiver.test>',
      'RCPT TO:<alice@sender.test>',
    ]);
    // Refused at RCPT, for good, with 5.7.1: maillab's MTA says 550, Postfix its relay_domains_reject_code (554).
    expect(replies[3]!.code).toBe(servers.mta === 'postfix' ? 554 : 550);
    expect(replies[3]!.text).toMatch(/^5\d\d 5\.7\.1 /);
    expect(replies[4]!.code).toBe(250);
  });
});
