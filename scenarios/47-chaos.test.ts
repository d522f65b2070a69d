// Scenario 47 (issue 15, scenario 8): a seeded chaos run of 200 messages with every fault kind this build has; the
// checkers hold (each accepted message delivered once to each recipient or bounced, duplicates explained, nothing
// misdelivered, retries on the rule), and a second run with the same seed produces the same schedule of faults.
//
// The seed is the lab's: MAILLAB_SEED=<n> replays a run (`MAILLAB_SEED=<n> npx vitest run scenarios/47-chaos.test.ts`);
// every failure prints it with the schedule. The interleaving of processes is the machine's: a replay makes the same
// schedule of faults at the same offsets, not the same run to the microsecond.
import { describe, expect, it } from 'vitest';
import { chaosSchedule, checkDeliveredOnce, formatSchedule, NEMESIS, runChaos, type ChaosKind, type ChaosReport, type RuntimeKind } from '../src/harness/index.js';
import { now } from '../src/shared/events.js';
import { useLab } from './support/lab.js';

/** The fault kinds available on a runtime. Each fault kind that arrives is one line here. */
function availableKinds(runtime: RuntimeKind): ChaosKind[] {
  const kinds: ChaosKind[] = ['stop', 'kill'];
  // Freezing and cutting off a node need a network the harness controls (docker).
  if (runtime === 'docker') kinds.push('pause', 'partition');
  // SMTP rules at the MX and the mailbox (set-smtp-faults), DNS rules (set-dns-faults), toxics on the links below.
  kinds.push('smtp', 'dns', 'link');
  return kinds;
}

const MESSAGES = 200;
// The links the `link` faults act on: MTA → MX (by name, through the lab DNS) and MX → mailbox (LMTP, by address).
// A link `timeout` removed before it fires leaves a session open with its command lost, as Toxiproxy does: the MTA
// then waits out its own command timeout, so the lab's are short enough for the 60 s budget (60 s and 10 min by
// default, like a real MTA's).
const lab = useLab((l) =>
  l.withLink('mta', 'mx').withLink('mx', 'mailbox').with((d) => {
    d.commandTimeoutMs = 5000;
    d.dataTimeoutMs = 10_000;
  }),
);

/** The faults each target went through, in order (one target's faults never overlap, so its order is the schedule's). */
function faultsByTarget(report: ChaosReport): Record<string, string[]> {
  const by: Record<string, string[]> = {};
  for (const f of report.faults) {
    const [kind, target] = f.split(' ');
    (by[target!] ??= []).push(kind!);
  }
  return by;
}

describe('seeded chaos', () => {
  let first: ChaosReport | undefined;

  it(`${MESSAGES} messages under every fault kind: the checkers hold, within 60 s`, { timeout: 120_000 }, async () => {
    const kinds = availableKinds(lab().runtimeKind);
    console.log(`chaos: seed ${lab().seed} (MAILLAB_SEED=${lab().seed} replays it); kinds ${kinds.join(', ')} on the ${lab().runtimeKind} runtime`);
    first = await runChaos(lab(), { kinds, messages: MESSAGES, faults: 8, label: 'first', log: (line) => console.log(line) });
    expect(first.wallMs).toBeLessThan(60_000);
    // The premise held: the faults fired, each undone, while messages were being accepted.
    const fired = first.timeline.steps.filter((s) => s.firedAt !== undefined && s.undoneAt !== undefined && !s.error);
    expect(fired.length, formatSchedule(first.schedule)).toBe(first.schedule.steps.length);
    expect(first.schedule.steps.length).toBeGreaterThanOrEqual(4);
    expect(first.accepted).toBeGreaterThanOrEqual(MESSAGES * 0.9);
    expect(first.noneLost.owed).toBe(first.owed.reduce((n, m) => n + m.to.length, 0));
    expect(first.noneLost.lost).toEqual([]);
    // Every duplicate was explained (the checker fails otherwise) and is counted once by both checkers.
    expect(first.delivery.duplicates.every((d) => d.cause !== undefined)).toBe(true);
  });

  it('a second run with the same seed produces the same schedule of faults', { timeout: 120_000 }, async () => {
    if (!first) throw new Error('the first run did not complete: nothing to replay (see the test above)');
    const kinds = availableKinds(lab().runtimeKind);
    expect(chaosSchedule(first.seed, { kinds, faults: 8 })).toEqual(first.schedule);
    const second = await runChaos(lab(), { kinds, seed: first.seed, messages: MESSAGES, faults: 8, label: 'second', log: (line) => console.log(line) });
    expect(second.schedule).toEqual(first.schedule);
    expect(faultsByTarget(second)).toEqual(faultsByTarget(first));
    expect([...second.faults].sort()).toEqual([...first.faults].sort());
  });
});

describe('timelines', () => {
  it('a step "at message 5" fires on the MTA\'s fifth submission since the start and is undone after its `for`', { timeout: 60_000 }, async () => {
    const timeline = lab().timeline([{ at: { message: 5 }, do: { node: { host: 'mx', action: 'stop' } }, for: 300 }], { timeoutMs: 20_000 });
    const ids: string[] = [];
    // When each submission began, on the harness's clock (the stop's): the MTA stamps `submitted` on its own clock,
    // a few ms apart from the harness's, so the stop is ordered after the fifth submission on one clock.
    const began: number[] = [];
    for (let i = 0; i < 8; i++) {
      began.push(now());
      ids.push((await lab().client('alice@sender.test').send({ to: 'bob@receiver.test', subject: `timeline ${i}`, text: 'at message 5' })).messageId);
    }
    const report = await timeline.done;
    const since = (e: { time: number }) => e.time >= report.startedAt;
    const stop = lab().history.filter({ kind: 'node-stop', node: NEMESIS, where: (e) => since(e) && e.detail.target === 'mx' })[0]!;
    const start = lab().history.filter({ kind: 'node-start', node: NEMESIS, where: (e) => since(e) && e.detail.target === 'mx' })[0]!;
    expect(stop.time).toBeGreaterThanOrEqual(began[4]!);
    // Node's timers count whole milliseconds and may fire a fraction of one early by performance.now() (seen: 299.85).
    expect(start.time - stop.time).toBeGreaterThanOrEqual(299);
    expect(Math.abs(report.steps[0]!.firedAt! - stop.time)).toBeLessThan(50);
    expect(Math.abs(report.steps[0]!.undoneAt! - start.time)).toBeLessThan(50);
    // The stop made deliveries wait, not fail: each message reaches bob once.
    await lab().mta().flush();
    for (const id of ids) await checkDeliveredOnce(lab(), 'bob@receiver.test', id, { timeoutMs: 20_000 });
  });
});
