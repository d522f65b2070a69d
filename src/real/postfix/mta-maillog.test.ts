// The maillog → MTA events mapping, on lines Postfix 3.7 wrote as the lab's MTA (scenario 37 runs them through a live
// Postfix; this runs everywhere and covers outcomes a live run rarely shows: expiry, a DSN logged out of order).
import { describe, expect, it } from 'vitest';
import { MtaMaillogParser, type MtaMaillogEvent } from './mta-maillog.js';

const T0 = Date.UTC(2026, 10, 30, 6, 39, 38);
const at = (program: string, text: string, pid = 100) => `Nov 30 06:39:38 mta postfix/${program}[${pid}]: ${text}`;

function parser(now = () => T0): MtaMaillogParser {
  return new MtaMaillogParser({ hostname: 'mta.sender.test', backoff: { minimal: 1, maximal: 2 }, tlsPolicy: { default: 'may', domains: { 'receiver.test': 'verify' } }, now });
}

const run = (lines: string[], p = parser()): MtaMaillogEvent[] => lines.flatMap((l) => p.feed(l));
const kinds = (events: MtaMaillogEvent[]) => events.map((e) => e.input.kind);

const SUBMITTED = [
  at('submission/smtpd', 'connect from unknown[127.0.0.1]', 10),
  at('submission/smtpd', 'Anonymous TLS connection established from unknown[127.0.0.1]: TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256/256 bits)', 10),
  at('submission/smtpd', 'A99B72221C4: client=unknown[127.0.0.1], sasl_method=PLAIN, sasl_username=alice@sender.test', 10),
  at('cleanup', 'A99B72221C4: message-id=<m1@sender.test>', 20),
  at('qmgr', 'A99B72221C4: from=<alice@sender.test>, size=657, nrcpt=2 (queue active)', 30),
];
const TLS_OUT = at('smtp', 'Verified TLS connection established to mx.receiver.test[127.32.51.4]:25: TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256/256 bits)', 40);
const SENT = at('smtp', 'A99B72221C4: to=<bob@receiver.test>, relay=mx.receiver.test[127.32.51.4]:25, delay=0.07, delays=0.01/0.01/0.01/0.05, dsn=2.0.0, status=sent (250 2.0.0 Ok: delivered as 581A75317BDD)', 40);
const REFUSED = at('smtp', 'A99B72221C4: to=<nobody@receiver.test>, relay=mx.receiver.test[127.32.51.4]:25, delay=0.02, delays=0/0/0.01/0.01, dsn=5.1.1, status=bounced (host mx.receiver.test[127.32.51.4] said: 550 5.1.1 <nobody@receiver.test>: no such user here (in reply to RCPT TO command))', 40);
const HOP = 'mta.sender.test -> mx.receiver.test[127.32.51.4]:25';
const TLS = { version: 'TLSv1.3', cipher: 'TLS_AES_256_GCM_SHA384' };

describe('MtaMaillogParser', () => {
  it('announces a submission (user, TLS, all recipients) once the first queue run has every outcome, then relayed and bounced', () => {
    expect(run([...SUBMITTED, TLS_OUT, SENT])).toEqual([]); // one recipient of two: not yet
    const all = run([...SUBMITTED, TLS_OUT, SENT, REFUSED]);
    expect(kinds(all)).toEqual(['submitted', 'queued', 'active', 'connect', 'relayed', 'bounced']);
    // The attempt's start (known once its recipients are), and one connection to the MX for both recipients.
    expect(all[2]!.input.detail).toEqual({ attempt: 1, recipients: ['bob@receiver.test', 'nobody@receiver.test'] });
    expect(all[3]!.input.detail).toEqual({ host: '127.32.51.4', port: 25, hop: HOP, mx: 'mx.receiver.test' });
    const events = all.filter((e) => e.input.kind !== 'active' && e.input.kind !== 'connect');
    expect(events.map((e) => e.input)).toEqual([
      { kind: 'submitted', queueId: 'A99B72221C4', messageId: '<m1@sender.test>', detail: { user: 'alice@sender.test', from: 'alice@sender.test', to: ['bob@receiver.test', 'nobody@receiver.test'], size: 657, tls: TLS } },
      { kind: 'queued', queueId: 'A99B72221C4', messageId: '<m1@sender.test>', detail: { from: 'alice@sender.test', to: ['bob@receiver.test', 'nobody@receiver.test'], size: 657, origin: 'submission' } },
      {
        kind: 'relayed',
        queueId: 'A99B72221C4',
        messageId: '<m1@sender.test>',
        detail: { rcpt: 'bob@receiver.test', hop: HOP, reply: '250 2.0.0 Ok: delivered as 581A75317BDD', status: '2.0.0', command: 'DATA', tlsPolicy: 'verify', host: '127.32.51.4', port: 25, reused: false, tls: TLS, mx: 'mx.receiver.test' },
      },
      {
        kind: 'bounced',
        queueId: 'A99B72221C4',
        messageId: '<m1@sender.test>',
        detail: { rcpt: 'nobody@receiver.test', hop: HOP, reply: '550 5.1.1 <nobody@receiver.test>: no such user here', status: '5.1.1', command: 'RCPT TO:<nobody@receiver.test>', tlsPolicy: 'verify', error: 'host mx.receiver.test[127.32.51.4] said: 550 5.1.1 <nobody@receiver.test>: no such user here (in reply to RCPT TO command)', attempt: 1 },
      },
    ]);
    expect(events[0]!.lines).toEqual(SUBMITTED.slice(2));
    expect(events[2]!.lines).toEqual([SENT]);
  });

  it("turns the bounce daemon's notification into dsn-created, with the DSN's Message-ID (whichever line comes first), and its LMTP delivery", () => {
    const notice = at('bounce', 'A99B72221C4: sender non-delivery notification: 549B4222145', 50);
    const dsnCleanup = at('cleanup', '549B4222145: message-id=<20261130063939.549B4222145@mta.sender.test>', 20);
    const dsnRun = at('qmgr', '549B4222145: from=<>, size=2667, nrcpt=1 (queue active)', 30);
    const dsnSent = at('lmtp', '549B4222145: to=<alice@sender.test>, relay=127.32.51.3[127.32.51.3]:24, delay=0.01, delays=0/0.01/0/0, dsn=2.6.0, status=sent (250 2.6.0 <alice@sender.test> saved)', 60);
    const expected = { dsnQueueId: '549B4222145', dsnMessageId: '<20261130063939.549B4222145@mta.sender.test>', for: { queueId: 'A99B72221C4', messageId: '<m1@sender.test>' }, to: 'alice@sender.test', rcpts: ['nobody@receiver.test'] };
    for (const order of [[dsnCleanup, notice], [notice, dsnCleanup]]) {
      const events = run([...SUBMITTED, SENT, REFUSED, ...order, dsnRun, dsnSent]).slice(6);
      expect(kinds(events)).toEqual(['dsn-created', 'queued', 'active', 'connect', 'delivered']);
      expect(events[0]!.input.detail).toEqual(expected);
      expect(events[1]!.input.detail).toEqual({ from: '', to: ['alice@sender.test'], size: 2667, origin: 'dsn', dsnFor: 'A99B72221C4' });
      expect(events[3]!.input.detail).toEqual({ host: '127.32.51.3', port: 24, hop: 'mta.sender.test -> LMTP 127.32.51.3[127.32.51.3]:24', via: 'lmtp' });
      expect(events[4]!.input).toMatchObject({ queueId: '549B4222145', messageId: expected.dsnMessageId, detail: { rcpt: 'alice@sender.test', hop: 'mta.sender.test -> LMTP 127.32.51.3[127.32.51.3]:24', status: '2.6.0', tls: null } });
    }
  });

  it("defers a connection failure with Postfix's next attempt, and expires what the last run deferred", () => {
    let now = T0;
    const p = parser(() => now);
    const down = at('smtp', 'A99B72221C4: to=<bob@receiver.test>, relay=none, delay=0, delays=0/0/0/0, dsn=4.4.1, status=deferred (connect to mx.receiver.test[127.32.51.4]:25: Connection refused)', 41);
    const one = [...SUBMITTED.slice(0, 4), at('qmgr', 'A99B72221C4: from=<alice@sender.test>, size=657, nrcpt=1 (queue active)', 30)];
    const first = run([...one, down], p);
    expect(kinds(first)).toEqual(['submitted', 'queued', 'active', 'connect-failed', 'deferred']);
    expect(first[3]!.input.detail).toEqual({ host: '127.32.51.4', port: 25, mx: 'mx.receiver.test', hop: HOP, stage: 'connect', error: 'connect to mx.receiver.test[127.32.51.4]:25: Connection refused', tlsPolicy: 'verify' });
    expect(first[4]!.input.detail).toEqual({
      rcpt: 'bob@receiver.test',
      hop: HOP,
      reply: 'connect to mx.receiver.test[127.32.51.4]:25: Connection refused',
      status: '4.4.1',
      tlsPolicy: 'verify',
      error: 'connect to mx.receiver.test[127.32.51.4]:25: Connection refused',
      nextAttempt: T0 + 1000,
      delay: 1000,
      attempt: 1,
    });
    now = T0 + 61_000;
    const again = run([at('qmgr', 'A99B72221C4: from=<alice@sender.test>, size=657, nrcpt=1 (queue active)', 30), down, at('qmgr', 'A99B72221C4: from=<alice@sender.test>, status=expired, returned to sender', 30)], p);
    // A retry's attempt starts with qmgr's line: its recipients are the ones deferred before.
    expect(kinds(again)).toEqual(['active', 'connect-failed', 'deferred', 'expired']);
    expect(again[0]!.input.detail).toEqual({ attempt: 2, recipients: ['bob@receiver.test'] });
    expect(again[2]!.input.detail).toMatchObject({ delay: 2000, attempt: 2 }); // the age, capped at maximal_backoff_time
    expect(again[3]!.input.detail).toEqual({ rcpt: 'bob@receiver.test', hop: HOP, reply: 'connect to mx.receiver.test[127.32.51.4]:25: Connection refused', status: '4.4.7', tlsPolicy: 'verify', error: 'connect to mx.receiver.test[127.32.51.4]:25: Connection refused', attempts: 2, queuedFor: 61_000 });
  });

  it('reads refusals and failed logins of the submission service', () => {
    const events = run([
      at('submission/smtpd', 'connect from unknown[127.0.0.1]', 10),
      at('submission/smtpd', 'warning: unknown[127.0.0.1]: SASL PLAIN authentication failed: authentication failure, sasl_username=alice@sender.test', 10),
      at('smtpd', 'connect from unknown[127.0.0.9]', 11),
      at('smtpd', 'NOQUEUE: reject: RCPT from unknown[127.0.0.9]: 554 5.7.1 <x@elsewhere.test>: Relay access denied; from=<a@b.test> to=<x@elsewhere.test> proto=ESMTP helo=<c.test>', 11),
    ]);
    expect(events.map((e) => e.input)).toEqual([
      { kind: 'auth-failed', detail: { service: 'submission', user: 'alice@sender.test', method: 'PLAIN', reply: '535 5.7.8 Error: authentication failed: authentication failure', client: '127.0.0.1', hop: 'unknown[127.0.0.1] -> mta.sender.test (submission)' } },
      { kind: 'rejected', detail: { service: 'smtp', stage: 'RCPT TO', reply: '554 5.7.1 <x@elsewhere.test>: Relay access denied', from: 'a@b.test', to: ['x@elsewhere.test'], client: '127.0.0.9', helo: 'c.test', hop: 'unknown[127.0.0.9] -> mta.sender.test (smtp)', attempted: 'x@elsewhere.test' } },
    ]);
  });

  it('keeps reporting outcomes of a message queued before a restart, without announcing it again, with its seeded Message-ID', () => {
    const lines = [at('qmgr', 'B11122221C4: from=<alice@sender.test>, size=600, nrcpt=1 (queue active)', 30), SENT.replace(/A99B72221C4/, 'B11122221C4')];
    const unknown = run(lines);
    expect(kinds(unknown)).toEqual(['active', 'connect', 'relayed']);
    expect(unknown[2]!.input.messageId).toBeUndefined();
    const p = parser();
    p.seed('B11122221C4', '<old@sender.test>');
    const seeded = run(lines, p);
    expect(kinds(seeded)).toEqual(['active', 'connect', 'relayed']);
    expect(seeded[2]!.input).toMatchObject({ queueId: 'B11122221C4', messageId: '<old@sender.test>' });
  });
});
