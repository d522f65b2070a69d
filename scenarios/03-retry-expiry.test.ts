// Scenario 3: retries follow the configured schedule; past the queue lifetime the sender gets a DSN.
import { simpleParser } from 'mailparser';
import { describe, expect, it } from 'vitest';
import { checkRetrySchedule } from '../src/harness/index.js';
import { useLab } from './support/lab.js';
import { scenarioServers } from './support/servers.js';

const servers = await scenarioServers('03-retry-expiry');

const schedule = [400, 800, 1200];
const maxLifetimeMs = 3000;

describe.skipIf(servers.skip)('queue retry and expiry', () => {
  // A short connect timeout: on the docker runtime a stopped MX is a vanished host (timeout), not a refusal.
  const lab = useLab((l) => l.withRetry({ schedule, maxLifetimeMs }).withConnectTimeout(300));

  it('retries on schedule, then bounces to alice with a DSN naming bob and the last error', async () => {
    await lab().node('mx').stop();
    const sent = await lab().client('alice@sender.test').send({ to: 'bob@receiver.test', subject: 'doomed', text: 'nobody is listening' });

    const expired = await lab().waitFor({ kind: 'expired', messageId: sent.messageId }, { timeoutMs: maxLifetimeMs + 5000 });
    expect(expired.detail.rcpt).toBe('bob@receiver.test');

    // Every attempt ended in a deferral (the MX is unreachable) until the lifetime ran out.
    const attempts = lab().history.filter({ kind: 'deferred', messageId: sent.messageId });
    expect(attempts.length).toBeGreaterThanOrEqual(3);
    const delays = await checkRetrySchedule(lab(), sent.messageId, { schedule });
    expect(delays.length).toBeGreaterThanOrEqual(2);
    const queued = lab().history.filter({ kind: 'queued', messageId: sent.messageId })[0]!;
    expect(expired.time - queued.time).toBeGreaterThanOrEqual(maxLifetimeMs);

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
