// Scenario 3: retries follow the configured schedule; past the queue lifetime the sender gets a DSN.
import { simpleParser } from 'mailparser';
import { describe, expect, it } from 'vitest';
import { checkRetrySchedule } from '../src/harness/index.js';
import { postfixRetry } from '../src/real/postfix/mta-config.js';
import { useLab } from './support/lab.js';
import { scenarioServers } from './support/servers.js';

const servers = await scenarioServers('03-retry-expiry');

const schedule = [400, 800, 1200];
const maxLifetimeMs = 3000;

describe.skipIf(servers.skip)('queue retry and expiry', () => {
  // A short connect timeout: on the docker runtime a stopped MX is a vanished host (timeout), not a refusal.
  const lab = useLab((l) => l.withRetry({ schedule, maxLifetimeMs }).withConnectTimeout(300));

  /** The measured retry delays of `rcpt`: from each deferral to the next attempt naming it (as checkRetrySchedule). */
  function retryDelays(messageId: string, rcpt: string): number[] {
    const trace = lab().history.filter({ messageId, where: (e) => e.node === 'mta' });
    const delays: number[] = [];
    for (const failure of trace.filter((e) => e.kind === 'deferred' && e.detail.rcpt === rcpt)) {
      const next = trace.find((e) => e.kind === 'active' && e.time > failure.time && e.detail.recipients.includes(rcpt));
      if (next) delays.push(next.time - failure.time);
    }
    return delays;
  }

  it('retries on schedule, then bounces to alice with a DSN naming bob and the last error', async () => {
    await lab().node('mx').stop();
    const sent = await lab().client('alice@sender.test').send({ to: 'bob@receiver.test', subject: 'doomed', text: 'nobody is listening' });

    const expired = await lab().waitFor({ kind: 'expired', messageId: sent.messageId }, { timeoutMs: maxLifetimeMs + 5000 });
    expect(expired.detail.rcpt).toBe('bob@receiver.test');

    // Every attempt ended in a deferral (the MX is unreachable) until the lifetime ran out.
    const attempts = lab().history.filter({ kind: 'deferred', messageId: sent.messageId });
    // Postfix's connect timeout is whole seconds (at least 1 s, src/real/postfix/mta-config.ts): where a stopped MX is a
    // vanished host (docker), each attempt takes that second, and the 3 s lifetime holds two attempts, not three.
    expect(attempts.length).toBeGreaterThanOrEqual(servers.mta === 'postfix' ? 2 : 3);
    const queued = lab().history.filter({ kind: 'queued', messageId: sent.messageId })[0]!;
    const postfixRetries = servers.skipWhen(
      servers.mta === 'postfix',
      'checkRetrySchedule',
      "Postfix keeps no list of delays and counts whole seconds: a deferred message waits its age in seconds, between minimal_ and maximal_backoff_time, and a queue scan takes it up to a second early (qmgr skips only queue files stamped more than a second ahead); checkRetrySchedule allows 25 ms early, so only Postfix's bounds are checked",
    );
    if (postfixRetries) {
      // Postfix's mapping of this schedule (src/real/postfix/mta-config.ts): every retry starts within the maximal
      // back-off plus one deferred-queue scan (queue_run_delay) of the deferral, give or take the checker's 400 ms.
      const { maximalBackoff, queueRunDelay, lifetime } = postfixRetry({ schedule, maxLifetimeMs });
      const delays = retryDelays(sent.messageId, 'bob@receiver.test');
      expect(delays.length).toBeGreaterThanOrEqual(1);
      for (const delay of delays) expect(delay).toBeLessThanOrEqual((maximalBackoff + queueRunDelay) * 1000 + 400);
      // Postfix expires a message whose age in whole seconds reached maximal_queue_lifetime: up to a second early.
      expect(expired.time - queued.time).toBeGreaterThan(lifetime * 1000 - 1000);
    } else {
      const delays = await checkRetrySchedule(lab(), sent.messageId, { schedule });
      expect(delays.length).toBeGreaterThanOrEqual(2);
      expect(expired.time - queued.time).toBeGreaterThanOrEqual(maxLifetimeMs);
    }

    // The DSN travels back to alice's mailbox (sender.test's MX is the MTA, which hands it to the mailbox server).
    const dsnEvent = await lab().waitFor({ kind: 'dsn-created', where: (e) => e.detail.for.messageId === sent.messageId });
    const { dsnMessageId } = dsnEvent.detail;
    await lab().waitFor({ kind: 'stored', messageId: dsnMessageId, detail: { user: 'alice@sender.test' } });
    const [dsn] = await lab().mailbox('alice@sender.test').find(dsnMessageId);
    const parsed = await simpleParser(dsn!.raw);
    expect(parsed.headers.get('content-type')).toMatchObject({ value: 'multipart/report' });
    const raw = dsn!.raw.toString('utf8');
    expect(raw).toMatch(/Final-Recipient: rfc822; ?bob@receiver\.test/i);
    expect(raw).toMatch(/Action: failed/);
    expect(raw).toMatch(/refused|timed out/i);
    expect(raw).toContain(sent.messageId); // the original headers are included
    // A bounce comes from the null sender.
    expect(raw).toMatch(/^Return-Path: <>/m);
  });
});
