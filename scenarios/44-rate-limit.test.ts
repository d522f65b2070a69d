// Scenario 44 (issue 15, scenario 7): the MX allows 5 messages per 2 s from a client; past that it answers MAIL FROM
// with `421 4.7.0` and closes the connection. The MTA defers those messages, backs off by its retry schedule, and
// delivers all 20, each exactly once, never more than 5 in any 2 s window.
import { describe, expect, it } from 'vitest';
import { checkDeliveredOnce } from '../src/harness/index.js';
import { useLab } from './support/lab.js';

const MESSAGES = 20;
const PER_WINDOW = 5;
const WINDOW_MS = 2000;

const lab = useLab((l) =>
  l.withRetry({ schedule: [1000] }).with((d) => {
    d.faults = {
      ...d.faults,
      smtp: {
        ...d.faults?.smtp,
        mx: [
          { id: 'rate', stage: 'mail', action: { kind: 'rate-limit', messages: PER_WINDOW, windowMs: WINDOW_MS } },
          // A probe: a MAIL FROM the rate limit let through reaches this rule, whose `fault` event marks when.
          { id: 'passed', stage: 'mail', action: { kind: 'delay', ms: 0 } },
        ],
      },
    };
  }),
);

describe('rate limit at the MX', () => {
  it('defers what is over the limit with 421 4.7.0, backs off, and delivers all 20 exactly once', async () => {
    const client = lab().client('alice@sender.test');
    const sent = await Promise.all(Array.from({ length: MESSAGES }, (_, i) => client.send({ to: 'bob@receiver.test', subject: `message ${i + 1}`, text: `number ${i + 1}` })));
    for (const message of sent) await checkDeliveredOnce(lab(), 'bob@receiver.test', message.messageId, { timeoutMs: 30_000 });

    const events = lab().history.events;
    const ids = new Set(sent.map((s) => s.messageId));
    const deferred = events.filter((e) => e.kind === 'deferred' && e.messageId !== undefined && ids.has(e.messageId));
    const faults = events.filter((e) => e.kind === 'fault' && e.node === 'mx' && e.detail.rule === 'rate');
    // At least 15 messages met the limit at least once, each told 421 4.7.0 and deferred.
    expect(new Set(deferred.map((e) => e.messageId)).size).toBeGreaterThanOrEqual(MESSAGES - PER_WINDOW);
    for (const d of deferred) if (d.kind === 'deferred') expect(d.detail.reply).toMatch(/^421 4\.7\.0 .*rate limit of 5 messages per 2000 ms exceeded/);
    expect(faults.length).toBeGreaterThanOrEqual(MESSAGES - PER_WINDOW);
    // The MTA backs off by its schedule: no retry of a message before its nextAttempt.
    for (const d of deferred) if (d.kind === 'deferred') expect(d.detail.nextAttempt - d.time).toBeGreaterThanOrEqual(900);
    // The MX let no more than 5 MAIL FROMs through in any 2 s window (the probe's events, on the MX's clock).
    const passed = events.filter((e) => e.kind === 'fault' && e.detail.rule === 'passed').map((e) => e.time);
    expect(passed.length).toBeGreaterThanOrEqual(MESSAGES);
    for (let i = 0; i + PER_WINDOW < passed.length; i++) expect(passed[i + PER_WINDOW]! - passed[i]!).toBeGreaterThanOrEqual(WINDOW_MS - 20);
    expect(events.filter((e) => e.kind === 'received' && e.node === 'mx')).toHaveLength(MESSAGES);
  });
});
