// The matchers against a real lab (maillab's default lab, retrying every 300 ms): each passes on the real flow, and
// fails, with the message's trace as a table, when it should; `.not` is decided, never vacuous.
import { describe, expect, it } from 'vitest';
import defaultLab from '../../lab/default.js';
import type { SendResult } from '../harness/lab.js';
import { headerValue } from '../shared/headers.js';
import { registerMaillabMatchers, verdictsOfHeader } from './matchers.js';
import { useLab } from './use-lab.js';

registerMaillabMatchers();

// maillab's own servers in every role (not MAILLAB_LAB's lab): the failures asserted name their events.
const lab = useLab((l) => l.withRetry({ schedule: [300] }), { definition: defaultLab });

/** The message of the assertion error a matcher rejected with (failing the test if it passed instead). */
async function failureOf(assertion: Promise<unknown>): Promise<string> {
  const outcome = await assertion.then(
    () => undefined,
    (err: unknown) => err,
  );
  expect(outcome, 'the matcher passed where it should have failed').toBeInstanceOf(Error);
  return (outcome as Error).message;
}

/** Milliseconds an assertion took to settle (either way). */
async function took(assertion: Promise<unknown>): Promise<number> {
  const start = performance.now();
  await assertion.catch(() => undefined);
  return performance.now() - start;
}

/** The table's header line and a row: `<offset>  <node>  <event>  <detail>`. */
const TABLE_HEADER = /^ +offset +node +event +detail$/m;
const row = (node: string, kind: string, detail = '') => new RegExp(`^ +\\+\\d+\\.\\d ms +${node} +${kind} +${detail}`, 'm');
/**
 * The row of the DSN reaching alice: the MTA's LMTP delivery or the mailbox server's `stored`, whichever reached the
 * history first (toHaveBounced waits for either; on docker the mailbox's stream can trail the MTA's).
 */
const DSN_REACHED_ALICE = /^ +\+\d+\.\d ms +(mta +delivered +<[^>]+> +alice@sender\.test: 250 |mailbox +stored +<[^>]+> +alice@sender\.test INBOX uid \d+$)/m;

describe('maillab matchers', () => {
  it('a delivered message: delivered, its hops, its authentication, no duplicates; and where each fails', async () => {
    const sent = await lab().client('alice@sender.test').send({ to: ['bob@receiver.test', 'carol@receiver.test'], subject: 'matchers', text: 'hello' });

    await expect(lab()).toHaveDelivered(sent, { to: 'bob@receiver.test' });
    await expect(lab()).toHaveDelivered(sent.messageId); // every recipient
    await expect(lab()).toHaveHop(sent, 'mta', 'mx');
    await expect(lab()).toHaveHop(sent, 'mx', 'mailbox');
    await expect(lab()).toHaveAuthenticationResults(sent, { spf: 'pass', dkim: 'pass', dmarc: 'pass', action: 'accept' });
    await expect(lab()).toHaveNoDuplicates({ messages: [sent] });
    // The verdicts of the header the MX wrote, as the matcher reads them where no `authenticated` event is at hand.
    const [copy] = await lab().mailbox('bob@receiver.test').find(sent.messageId);
    expect(verdictsOfHeader([headerValue(copy!.raw, 'authentication-results')!])).toEqual({ spf: ['pass'], dkim: ['pass'], dmarc: ['pass'], arc: [], action: [] });

    // Not to dave: the message never was for him. The wait runs out, and the failure shows the trace as a table.
    const notDave = await failureOf(expect(lab()).toHaveDelivered(sent, { to: 'dave@receiver.test', timeoutMs: 300 }));
    expect(notDave).toMatch(/^expected message <[^>]+> to be delivered to dave@receiver\.test, but within 300 ms no copy was stored for dave@receiver\.test/);
    expect(notDave).toMatch(TABLE_HEADER);
    expect(notDave).toMatch(row('mta', 'submitted', 'alice@sender\\.test → bob@receiver\\.test, carol@receiver\\.test'));
    expect(notDave).toMatch(row('mta', 'relayed', 'bob@receiver\\.test: 250'));
    expect(notDave).toMatch(row('mailbox', 'stored', 'carol@receiver\\.test INBOX uid \\d+'));

    // `.not` on a delivered message fails, saying where it was stored.
    const delivered = await failureOf(expect(lab()).not.toHaveDelivered(sent, { to: 'bob@receiver.test' }));
    expect(delivered).toMatch(/not to be delivered to bob@receiver\.test, but it did: stored for bob@receiver\.test \(mailbox, bob@receiver\.test INBOX uid \d+\)/);

    // Decided at once, without waiting out the timeout: it was relayed, it cannot bounce or be deferred any more.
    const bounce = expect(lab()).toHaveBounced(sent, { to: 'bob@receiver.test', timeoutMs: 20_000 });
    expect(await took(bounce)).toBeLessThan(5000);
    expect(await failureOf(bounce)).toMatch(/to bounce for bob@receiver\.test, its DSN reaching the sender, but bob@receiver\.test was delivered: mta relayed: bob@receiver\.test: 250/);
    const deferral = await failureOf(expect(lab()).toHaveDeferred(sent, { timeoutMs: 20_000 }));
    expect(deferral).toMatch(/to be deferred, but \S+ was settled \(mta relayed: .*\) with no such deferral/);

    // The MTA never talked to the mailbox server for it: settled, then (the streams' grace) decided.
    const hop = await failureOf(expect(lab()).toHaveHop(sent, 'mta', 'mailbox', { timeoutMs: 20_000 }));
    expect(hop).toMatch(/to go from mta to mailbox, but it was settled at the sender .* without going from mta to mailbox; the hops it took: mta → mx, mx → mailbox/);
    expect(hop).toMatch(row('mx', 'handoff', 'LMTP \\S+: bob@receiver\\.test 250'));
    await expect(lab()).not.toHaveHop(sent, 'mta', 'mailbox', { timeoutMs: 20_000 });

    const auth = await failureOf(expect(lab()).toHaveAuthenticationResults(sent, { dkim: 'fail' }));
    expect(auth).toMatch(/to have the authentication results dkim=fail, but the mx host's authenticated event found spf=pass dkim=pass dmarc=pass arc=none action=accept$/m);
    expect(auth).toMatch(row('mx', 'authenticated', 'spf=pass dkim=pass\\(sender\\.test/lab\\) dmarc=pass → accept'));

    const none = await failureOf(expect(lab()).not.toHaveNoDuplicates({ messages: [sent] }));
    expect(none).toMatch(/expected a duplicate delivery, but none of the 2 \(message, recipient\) pairs of 1 messages was stored twice \(2 delivered, 0 bounced\)/);
  });

  it('a bounced message: bounced with its status and the DSN at the sender; never delivered', async () => {
    const sent = await lab().client('alice@sender.test').send({ to: 'nobody@receiver.test', subject: 'anyone?', text: 'hello?' });

    await expect(lab()).toHaveBounced(sent, { to: 'nobody@receiver.test', status: '5.1.1' });
    await expect(lab()).toHaveBounced(sent, { status: /^5\./, dsn: false });

    // A bounce is final: toHaveDelivered fails at once, `.not` passes at once.
    const delivered = expect(lab()).toHaveDelivered(sent, { to: 'nobody@receiver.test', timeoutMs: 20_000 });
    expect(await took(delivered)).toBeLessThan(5000);
    const message = await failureOf(delivered);
    expect(message).toMatch(/but nobody@receiver\.test bounced instead: mta bounced: nobody@receiver\.test: 5\.1\.1 /);
    // The DSN's trace comes with it: where the bounce went.
    expect(message).toMatch(/^ +\+\d+\.\d ms +mta +dsn-created +<[^>]+> +DSN <[^>]+> to alice@sender\.test for nobody@receiver\.test$/m);
    expect(message).toMatch(DSN_REACHED_ALICE);
    const notDelivered = expect(lab()).not.toHaveDelivered(sent, { to: 'nobody@receiver.test', timeoutMs: 20_000 });
    expect(await took(notDelivered)).toBeLessThan(5000);
    await notDelivered;

    // Another status: decided at once too, naming the one it had.
    const status = await failureOf(expect(lab()).toHaveBounced(sent, { status: '5.7.1', timeoutMs: 20_000 }));
    expect(status).toMatch(/with status 5\.7\.1, its DSN reaching the sender, but it bounced with another status: mta bounced: nobody@receiver\.test: 5\.1\.1/);

    // `.not` on the bounce fails with the DSN's delivery, and the table holds both messages' events (a message column).
    const bounced = await failureOf(expect(lab()).not.toHaveBounced(sent, { status: '5.1.1' }));
    expect(bounced).toMatch(/but it did: nobody@receiver\.test bounced with 5\.1\.1 .*; its DSN <[^>]+> reached alice@sender\.test: /);
    expect(bounced).toMatch(/^ +offset +node +event +message +detail$/m);
    expect(bounced).toMatch(DSN_REACHED_ALICE);

    // The DSN went from the MTA straight to the mailbox server (LMTP: sender.test is the MTA's own domain).
    const dsn = await lab().waitFor({ kind: 'dsn-created', where: (e) => e.detail.for.messageId === sent.messageId });
    await expect(lab()).toHaveHop(dsn.detail.dsnMessageId, 'mta', 'mailbox');
    await expect(lab()).toHaveDelivered(dsn.detail.dsnMessageId, { to: 'alice@sender.test' });

    // A bounce (no duplicate) is not a duplicate.
    await expect(lab()).toHaveNoDuplicates({ messages: [sent] });
  });

  it('a deferred message: deferred with its error while the MX is down, not delivered until it is back', async () => {
    const mx = lab().node('mx');
    await mx.stop();
    let sent: SendResult | undefined;
    try {
      sent = await lab().client('alice@sender.test').send({ to: 'bob@receiver.test', subject: 'later', text: 'queued' });
      // Local runtime: the MX's port is closed (refused). Docker: the MX's host is gone (timeout).
      await expect(lab()).toHaveDeferred(sent, { to: 'bob@receiver.test', error: /refused|timed out/i });
      const other = await failureOf(expect(lab()).toHaveDeferred(sent, { error: /greylisted/, timeoutMs: 400 }));
      expect(other).toMatch(/with an error matching \/greylisted\/, but within 400 ms no such deferral came; its deferrals: mta deferred: bob@receiver\.test: /);
      expect(other).toMatch(row('nemesis', 'node-stop', 'mx'));
      expect(other).toMatch(row('mta', 'deferred', 'bob@receiver\\.test: .*; retry in 300 ms'));
      // Not delivered while the MX is down: `.not` waits its whole timeout (nothing decided it earlier), then passes.
      const notYet = expect(lab()).not.toHaveDelivered(sent, { timeoutMs: 400 });
      expect(await took(notYet)).toBeGreaterThanOrEqual(390);
      await notYet;
    } finally {
      await mx.start();
    }
    await expect(lab()).toHaveDelivered(sent!, { to: 'bob@receiver.test' });
    await expect(lab()).toHaveHop(sent!, 'mta', 'mx');
    const deferred = await failureOf(expect(lab()).not.toHaveDeferred(sent!));
    expect(deferred).toMatch(/not to be deferred, but it did: mta deferred: bob@receiver\.test: /);
  });

  it('a duplicate: the MX drops the connection after the final dot, the retry stores a second copy', async () => {
    await lab().smtpFaults('mx').set([{ id: 'lost-250', stage: 'end-of-data', times: 1, action: { kind: 'drop', when: 'before-reply' } }]);
    try {
      const sent = await lab().client('alice@sender.test').send({ to: 'bob@receiver.test', subject: 'twice', text: 'the 250 was lost' });
      await expect(lab()).not.toHaveNoDuplicates({ messages: [sent] });
      const twice = await failureOf(expect(lab()).toHaveNoDuplicates());
      expect(twice).toMatch(/expected no message stored twice for a recipient, but:\nmessage <[^>]+> stored 2 times for bob@receiver\.test \(cause: drop-after-dot: fault rule lost-250 of mx/);
      expect(twice).toMatch(row('mx', 'fault', 'smtp rule lost-250 \\(drop\\) at end-of-data: connection closed before the reply'));
      expect(twice).toMatch(row('mta', 'deferred', 'bob@receiver\\.test: '));
      // Still delivered (twice), and it went the usual way.
      await expect(lab()).toHaveDelivered(sent, { to: 'bob@receiver.test' });
    } finally {
      await lab().smtpFaults('mx').clear();
    }
  });

  it('reads Authentication-Results fields: each method\'s results, comments left out, dkim=none when unsigned', () => {
    const fields = [
      'mx.receiver.test; spf=pass (mx.receiver.test: domain of a@sender.test; designates 127.0.0.5) smtp.mailfrom=a@sender.test; dkim=fail header.d=old.test; DKIM=Pass header.d=sender.test; dmarc=pass header.from=sender.test',
      'other.test; arc=none',
      'unsigned.test; spf=softfail smtp.mailfrom=b@x.test',
    ];
    expect(verdictsOfHeader(fields)).toEqual({ spf: ['pass', 'softfail'], dkim: ['fail', 'pass'], dmarc: ['pass'], arc: ['none'], action: [] });
    expect(verdictsOfHeader(['mx.receiver.test; spf=none'])).toMatchObject({ dkim: ['none'] });
    expect(verdictsOfHeader(['mx.receiver.test; none'])).toEqual({ spf: [], dkim: ['none'], dmarc: [], arc: [], action: [] });
  });

  it('is typed through vitest\'s Matchers: wrong arguments do not compile', () => {
    // Never called: tsc checks these lines (`npx tsc --noEmit`), each @ts-expect-error must meet an error.
    const typed = (sent: SendResult) => [
      // @ts-expect-error toHaveHop needs both hosts
      expect(lab()).toHaveHop(sent, 'mta'),
      // @ts-expect-error `to` is an address, not a number
      expect(lab()).toHaveDelivered(sent, { to: 42 }),
      // @ts-expect-error the action is one of the MX's (accept, reject, quarantine, accept-arc-override)
      expect(lab()).toHaveAuthenticationResults(sent, { action: 'bounce' }),
      // @ts-expect-error a message is a Message-ID or a send result
      expect(lab()).toHaveBounced(42),
      expect(lab()).not.toHaveDeferred(sent, { to: 'bob@receiver.test', error: /4\.7\.1/, timeoutMs: 100 }),
    ];
    expect(typeof typed).toBe('function');
  });

  it('is an error, with or without .not, for something that is not a started lab or a message the lab never saw', async () => {
    await expect(expect({}).toHaveDelivered('<x@sender.test>')).rejects.toThrow(/toHaveDelivered: expect\(\) needs a started maillab lab .*, got an object with keys \(none\)/);
    await expect(expect({}).not.toHaveDelivered('<x@sender.test>')).rejects.toThrow(TypeError);
    await expect(expect(lab).not.toHaveBounced('<x@sender.test>')).rejects.toThrow(/pass the started lab itself: expect\(lab\(\)\)/);
    await expect(expect(lab()).toHaveDelivered({ id: 'x' } as never)).rejects.toThrow(/expected a Message-ID or a send result with a messageId/);
    await expect(expect(lab()).not.toHaveDelivered('<never-sent@sender.test>', { timeoutMs: 200 })).rejects.toThrow(/the lab never saw message <never-sent@sender\.test>/);
    await expect(expect(lab()).toHaveHop('<x@sender.test>', 'mta', 'postfix')).rejects.toThrow(/the lab has no host "postfix" \(hosts: .*mta.*\)/);
    await expect(expect(lab()).toHaveAuthenticationResults('<x@sender.test>', {})).rejects.toThrow(/name at least one verdict/);
    await expect(expect(lab()).toHaveNoDuplicates({ messages: ['<never-sent@sender.test>'], timeoutMs: 200 })).rejects.toThrow(/never accepted <never-sent@sender\.test>/);
  });
});
