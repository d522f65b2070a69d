// The maillog → MX events mapping, on lines in Postfix 3.7's own format (the real test, postfix.test.ts, runs them
// through a live Postfix; this one runs everywhere, root or not, and covers outcomes a live run rarely shows).
import { describe, expect, it } from 'vitest';
import { MaillogParser, type MaillogEvent } from './maillog.js';

const HOP = 'LMTP 127.9.9.4:24';
const at = (program: string, text: string, pid = 100) => `Nov 30 05:25:44 mx postfix/${program}[${pid}]: ${text}`;

function run(lines: string[]): MaillogEvent[] {
  const parser = new MaillogParser(HOP);
  return lines.flatMap((l) => parser.feed(l));
}

const ACCEPTED = [
  at('smtpd', 'connect from unknown[127.9.9.7]'),
  at('smtpd', 'Anonymous TLS connection established from unknown[127.9.9.7]: TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256/256 bits)'),
  at('smtpd', 'NOQUEUE: reject: RCPT from unknown[127.9.9.7]: 550 5.1.1 <nobody@receiver.test>: Recipient address rejected: User unknown in virtual mailbox table; from=<alice@sender.test> to=<nobody@receiver.test> proto=ESMTP helo=<client.sender.test>'),
  at('smtpd', '9A7A822A481: client=unknown[127.9.9.7]'),
  at('cleanup', '9A7A822A481: message-id=<t1@sender.test>', 200),
  at('qmgr', '9A7A822A481: from=<alice@sender.test>, size=294, nrcpt=2 (queue active)', 300),
  at('smtpd', 'disconnect from unknown[127.9.9.7] ehlo=2 starttls=1 mail=1 rcpt=2/3 data=1 quit=1 commands=8/9'),
];

describe('MaillogParser', () => {
  it('reads a refusal at RCPT TO as rejected, with the client, the sender and the reply', () => {
    const events = run(ACCEPTED.slice(0, 3));
    expect(events.map((e) => e.input)).toEqual([
      { kind: 'rejected', detail: { stage: 'RCPT TO', rcpt: 'nobody@receiver.test', reply: '550 5.1.1 <nobody@receiver.test>: Recipient address rejected: User unknown in virtual mailbox table', client: '127.9.9.7', from: 'alice@sender.test' } },
    ]);
    expect(events[0]!.lines).toEqual([ACCEPTED[2]]);
  });

  it('emits received (with helo and TLS) and handoff once every recipient of the queue run has its LMTP outcome', () => {
    const sent = at('lmtp', '9A7A822A481: to=<bob@receiver.test>, relay=127.9.9.4[127.9.9.4]:24, delay=0.02, delays=0.01/0/0/0.01, dsn=2.0.0, status=sent (250 2.0.0 <bob@receiver.test> stored)', 400);
    const refused = at('lmtp', '9A7A822A481: to=<carol@receiver.test>, relay=127.9.9.4[127.9.9.4]:24, delay=0.02, delays=0.01/0/0/0.01, dsn=5.1.1, status=bounced (host 127.9.9.4[127.9.9.4] said: 550 5.1.1 <carol@receiver.test> no such user (in reply to RCPT TO command))', 400);
    expect(run([...ACCEPTED, sent]).filter((e) => e.input.kind !== 'rejected')).toEqual([]); // one of two recipients: not yet
    const events = run([...ACCEPTED, sent, refused]).filter((e) => e.input.kind !== 'rejected');
    expect(events.map((e) => e.input)).toEqual([
      { kind: 'received', messageId: '<t1@sender.test>', queueId: '9A7A822A481', detail: { from: 'alice@sender.test', to: ['bob@receiver.test', 'carol@receiver.test'], client: '127.9.9.7', helo: 'client.sender.test', size: 294, tls: { version: 'TLSv1.3', cipher: 'TLS_AES_256_GCM_SHA384' } } },
      {
        kind: 'handoff',
        messageId: '<t1@sender.test>',
        queueId: '9A7A822A481',
        detail: {
          to: HOP,
          recipients: [
            { address: 'bob@receiver.test', accepted: true, code: 250, enhanced: '2.0.0', reply: '250 2.0.0 <bob@receiver.test> stored', stage: 'lmtp', command: 'DATA' },
            { address: 'carol@receiver.test', accepted: false, code: 550, enhanced: '5.1.1', reply: '550 5.1.1 <carol@receiver.test> no such user', stage: 'rcpt', command: 'RCPT TO:<carol@receiver.test>' },
          ],
        },
      },
    ]);
    expect(events[1]!.lines).toEqual([ACCEPTED[3], ACCEPTED[4], ACCEPTED[5], sent, refused]);
  });

  it('reads a deferral without a reply as handoff-failed, and the retry as a handoff without a second received', () => {
    const down = at('lmtp', '9A7A822A481: to=<bob@receiver.test>, relay=none, delay=0.01, delays=0.01/0.01/0/0, dsn=4.4.1, status=deferred (connect to 127.9.9.4[127.9.9.4]:24: Connection refused)', 400);
    const retry = at('qmgr', '9A7A822A481: from=<alice@sender.test>, size=294, nrcpt=1 (queue active)', 300);
    const sent = at('lmtp', '9A7A822A481: to=<bob@receiver.test>, relay=127.9.9.4[127.9.9.4]:24, delay=300, delays=300/0/0/0.01, dsn=2.0.0, status=sent (250 2.0.0 <bob@receiver.test> stored)', 400);
    const lines = [...ACCEPTED.slice(0, 5), at('qmgr', '9A7A822A481: from=<alice@sender.test>, size=294, nrcpt=1 (queue active)', 300), down, retry, sent];
    expect(run(lines).map((e) => e.input.kind)).toEqual(['rejected', 'received', 'handoff-failed', 'handoff']);
    expect(run(lines)[2]!.input.detail).toEqual({ to: HOP, error: 'connect to 127.9.9.4[127.9.9.4]:24: Connection refused' });
  });

  it("names recipients as the sender gave them (orig_to) and counts other agents' outcomes without calling them hand-offs", () => {
    const aliased = at('lmtp', '9A7A822A481: to=<carol@receiver.test>, orig_to=<bob@receiver.test>, relay=127.9.9.4[127.9.9.4]:24, delay=0.02, delays=0.01/0/0/0.01, dsn=2.0.0, status=sent (250 2.0.0 <carol@receiver.test> stored)', 400);
    const elsewhere = at('error', '9A7A822A481: to=<eve@elsewhere.test>, orig_to=<nobody@receiver.test>, relay=none, delay=0.01, delays=0.01/0/0/0, dsn=5.4.4, status=bounced (the lab MX sends no mail outside the lab)', 500);
    const events = run([...ACCEPTED, aliased, elsewhere]).filter((e) => e.input.kind !== 'rejected');
    expect(events.map((e) => e.input.kind)).toEqual(['received', 'handoff']);
    expect(events[0]!.input.detail).toMatchObject({ to: ['bob@receiver.test', 'nobody@receiver.test'] });
    expect(events[1]!.input.detail).toMatchObject({ recipients: [{ address: 'carol@receiver.test', accepted: true }] });
  });

  it('reads the size refusals: SIZE= at MAIL FROM, and the queue file limit at the end of DATA', () => {
    const events = run([
      at('smtpd', 'connect from unknown[127.0.0.1]'),
      at('smtpd', 'NOQUEUE: reject: MAIL from unknown[127.0.0.1]: 552 5.3.4 Message size exceeds fixed limit; from=<alice@sender.test> proto=ESMTP helo=<client.sender.test>'),
      at('smtpd', '9C35022A4A1: client=unknown[127.0.0.1]'),
      at('smtpd', 'warning: 9C35022A4A1: queue file size limit exceeded'),
    ]);
    expect(events.map((e) => e.input.detail)).toEqual([
      { stage: 'MAIL FROM', rcpt: '', reply: '552 5.3.4 Message size exceeds fixed limit', client: '127.0.0.1', from: 'alice@sender.test' },
      { stage: 'DATA', rcpt: '', reply: '552 5.3.4 Error: message file too big', client: '127.0.0.1', from: '' },
    ]);
  });

  it('ignores lines it has no event for, and messages queued before it started reading', () => {
    expect(run([at('master', 'daemon started -- version 3.7.11, configuration /x'), 'not a maillog line', at('qmgr', 'ABCDEF123: from=<a@b>, size=1, nrcpt=1 (queue active)'), at('lmtp', 'ABCDEF123: to=<bob@receiver.test>, relay=x, delay=0, delays=0/0/0/0, dsn=2.0.0, status=sent (250 ok)')])).toEqual([]);
  });
});
