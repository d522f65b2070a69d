// The delivery-guarantee checkers against hand-built histories: each passes on a history that keeps its property and
// fails on each way of breaking it, with a message that names the message, the recipient, the events and the cause.
import { describe, expect, it } from 'vitest';
import type { LabEvent } from '../../shared/events.js';
import { NEMESIS } from '../events.js';
import { History } from '../history/history.js';
import { CheckFailure, checkRetrySchedule, type OwedMessage } from './index.js';
import { checkDeliveryGuarantees, checkFlagsConverge, checkGreylistPassed, checkNoMisdelivery, type DeliveryTarget } from './guarantees.js';

const ID = '<m1@client.sender.test>';
const ALICE = 'alice@sender.test';
const BOB = 'bob@receiver.test';
const CAROL = 'carol@receiver.test';
const HOP = 'mta.sender.test -> mx.receiver.test[127.0.0.7]:25';
const owed: OwedMessage[] = [{ messageId: ID, from: ALICE, to: [BOB] }];

/** A history built by hand: times relative to t0, one sequence per node. */
function world() {
  const history = new History();
  const seq = new Map<string, number>();
  const t0 = 1_000_000;
  const add = (at: number, node: string, kind: string, detail: Record<string, unknown>, ids: { messageId?: string; queueId?: string } = {}) => {
    const n = (seq.get(node) ?? 0) + 1;
    seq.set(node, n);
    history.add({ seq: n, time: t0 + at, node, kind, ...ids, detail } as LabEvent);
  };
  const q = { messageId: ID, queueId: 'Q1' };
  let uid = 0;
  const ev = {
    queued: (at: number, to = [BOB]) => add(at, 'mta', 'queued', { from: ALICE, to, size: 10, origin: 'submission' }, q),
    active: (at: number, recipients = [BOB], attempt = 1) => add(at, 'mta', 'active', { attempt, recipients }, q),
    stored: (at: number, user = BOB, messageId = ID) => add(at, 'mailbox', 'stored', { user, mailbox: 'INBOX', uid: ++uid, size: 10, from: ALICE }, { messageId, queueId: `L${uid}` }),
    relayed: (at: number, rcpt = BOB) => add(at, 'mta', 'relayed', { rcpt, hop: HOP, reply: '250 2.0.0 ok', status: '2.0.0', reused: false }, q),
    deferred: (at: number, detail: { command?: string; error?: string; reply?: string; rcpt?: string } = {}) =>
      add(at, 'mta', 'deferred', { rcpt: BOB, hop: HOP, reply: '451 4.4.2 session lost', status: '4.4.2', error: 'refused', nextAttempt: 0, delay: 500, attempt: 1, ...detail }, q),
    bounced: (at: number) => add(at, 'mta', 'bounced', { rcpt: BOB, hop: HOP, reply: '550 5.1.1 no such user', status: '5.1.1', error: 'no such user', attempt: 1 }, q),
    fault: (at: number, node: string, detail: Record<string, unknown>) => add(at, node, 'fault', detail),
    nemesis: (at: number, kind: string, target: string) => add(at, NEMESIS, kind, { target, role: target, took: 5 }),
  };
  return { history, add, ev, t0 };
}

const failureOf = async (p: Promise<unknown>): Promise<Error> => {
  const e = await p.then(
    () => undefined,
    (err: unknown) => err,
  );
  expect(e).toBeInstanceOf(CheckFailure);
  return e as Error;
};

describe('checkDeliveryGuarantees', () => {
  it('passes on one delivery per recipient and on a bounce, counting each', async () => {
    const w = world();
    w.ev.queued(0, [BOB, CAROL]);
    w.ev.stored(5);
    w.ev.relayed(6);
    w.add(7, 'mta', 'bounced', { rcpt: CAROL, hop: HOP, reply: '550 5.1.1 no', status: '5.1.1', error: 'no', attempt: 1 }, { messageId: ID, queueId: 'Q1' });
    const report = await checkDeliveryGuarantees({ history: w.history }, [{ messageId: ID, from: ALICE, to: [BOB, CAROL] }]);
    expect(report).toEqual({ owed: 2, delivered: 1, bounced: 1, duplicates: [] });
  });

  it('fails on a lost recipient, naming the message, the recipient and the seed', async () => {
    const w = world();
    w.history.seed = 77;
    w.ev.queued(0);
    w.ev.relayed(6); // relayed, yet never stored
    const failure = await failureOf(checkDeliveryGuarantees({ history: w.history }, owed, { timeoutMs: 100, context: 'chaos' }));
    expect(failure.message).toMatch(/^chaos: message <m1@client\.sender\.test> to bob@receiver\.test: lost: accepted, but neither stored for bob@receiver\.test nor bounced\nseed 77 \(MAILLAB_SEED=77 replays it\)\nevents:\n.*mta\s+relayed/s);
  });

  it('fails when the sender never settles the recipient, and finds a copy whose event a kill swallowed in the mailbox', async () => {
    const w = world();
    w.ev.queued(0);
    const unsettled = await failureOf(checkDeliveryGuarantees({ history: w.history }, owed, { timeoutMs: 50 }));
    expect(unsettled.message).toMatch(/message <m1@client\.sender\.test> to bob@receiver\.test: the sender never settled the recipient/);
    // With the MTA's queue empty, the missing outcome is not waited for; the mailbox shows the copy.
    const target: DeliveryTarget = { history: w.history, mta: () => ({ queue: async () => [] }), mailbox: () => ({ find: async () => [{ uid: 1 }] }) };
    expect(await checkDeliveryGuarantees(target, owed, { timeoutMs: 3000 })).toMatchObject({ delivered: 1 });
    const empty: DeliveryTarget = { ...target, mailbox: () => ({ find: async () => [] }) };
    expect((await failureOf(checkDeliveryGuarantees(empty, owed, { timeoutMs: 3000 }))).message).toMatch(/lost/);
  });

  it('fails when a recipient was both delivered and bounced, or bounced twice', async () => {
    const w = world();
    w.ev.queued(0);
    w.ev.stored(5);
    w.ev.bounced(6);
    expect((await failureOf(checkDeliveryGuarantees({ history: w.history }, owed))).message).toMatch(/to bob@receiver\.test: both delivered \(stored 1×\) and bounced \(bounced\): expected one delivery or one DSN/);
    const twice = world();
    twice.ev.queued(0);
    twice.ev.bounced(5);
    twice.ev.bounced(6);
    expect((await failureOf(checkDeliveryGuarantees({ history: twice.history }, owed))).message).toMatch(/bounced 2 times: expected one DSN/);
  });

  it('reports a duplicate caused by a drop after the final dot, naming the fault; fails on it with duplicates: none', async () => {
    const w = world();
    w.ev.queued(0);
    w.ev.active(1);
    w.ev.stored(5);
    w.ev.fault(6, 'mx', { source: 'smtp', rule: 'drop-1', action: 'drop', when: 'before-reply', stage: 'end-of-data', effect: 'connection closed', hop: HOP, sender: ALICE, recipients: [BOB] });
    w.ev.deferred(7, { command: 'end of data', error: 'session lost (connection closed) during end of data' });
    w.ev.active(510);
    w.ev.stored(515);
    w.ev.relayed(516);
    const report = await checkDeliveryGuarantees({ history: w.history }, owed);
    expect(report.duplicates).toHaveLength(1);
    expect(report.duplicates[0]).toMatchObject({ messageId: ID, rcpt: BOB, cause: { kind: 'drop-after-dot', event: { node: 'mx', kind: 'fault' } } });
    expect(report.duplicates[0]!.cause!.description).toMatch(/fault rule drop-1 of mx .* dropped the connection after the final dot, before the reply/);
    const failure = await failureOf(checkDeliveryGuarantees({ history: w.history }, owed, { duplicates: 'none' }));
    expect(failure.message).toMatch(/message <m1@client\.sender\.test> to bob@receiver\.test: duplicate: stored 2 times for bob@receiver\.test .*; cause: drop-after-dot: fault rule drop-1/);
    expect(failure.message).toMatch(/mx\s+fault .*"action":"drop"/);
  });

  it('names the drop of this message, not that of another message to the same recipient in the window', async () => {
    // Scenario 47, seed 1107826907: two messages to carol each met rule chaos-7's drop at the LMTP hop, 3 ms apart;
    // the checker named the other message's drop for both.
    const w = world();
    const OTHER = '<m2@client.sender.test>';
    const drop = (at: number, messageId: string) =>
      w.add(at, 'mailbox', 'fault', { source: 'smtp', rule: 'chaos-7', action: 'drop', when: 'before-reply', stage: 'end-of-data', effect: 'connection closed before the reply', recipients: [BOB] }, { messageId });
    w.ev.queued(0);
    w.ev.active(1);
    drop(3, OTHER);
    w.ev.stored(5);
    drop(6, ID);
    w.ev.deferred(7, { command: 'DATA', error: 'mx said: 451 4.3.0 mailbox server unavailable (in reply to DATA)', reply: '451 4.3.0 mailbox server unavailable' });
    w.ev.active(510);
    w.ev.stored(515);
    w.ev.relayed(516);
    const report = await checkDeliveryGuarantees({ history: w.history }, owed);
    expect(report.duplicates[0]!.cause).toMatchObject({ kind: 'drop-after-dot', event: { messageId: ID, time: w.t0 + 6 } });
    // Only the other message's drop: no cause.
    const other = world();
    other.ev.queued(0);
    other.ev.stored(5);
    other.add(6, 'mailbox', 'fault', { source: 'smtp', rule: 'chaos-7', action: 'drop', when: 'before-reply', stage: 'end-of-data', effect: 'closed', recipients: [BOB] }, { messageId: OTHER });
    other.ev.stored(515);
    other.ev.relayed(516);
    await failureOf(checkDeliveryGuarantees({ history: other.history }, owed));
  });

  it('a drop after the reply, or of another recipient, is no cause', async () => {
    const w = world();
    w.ev.queued(0);
    w.ev.stored(5);
    w.ev.fault(6, 'mx', { source: 'smtp', rule: 'r', action: 'drop', when: 'after-reply', stage: 'end-of-data', effect: '250 2.0.0 ok, then closed', recipients: [BOB] });
    w.ev.fault(6, 'mx', { source: 'smtp', rule: 'r2', action: 'drop', when: 'before-reply', stage: 'end-of-data', effect: 'connection closed', recipients: [CAROL] });
    w.ev.stored(515);
    w.ev.relayed(516);
    const failure = await failureOf(checkDeliveryGuarantees({ history: w.history }, owed));
    expect(failure.message).toMatch(/to bob@receiver\.test: duplicate: stored 2 times .*, and nothing between the copies explains it \(no drop after the final dot, no connection lost after the final dot, no partial hand-off at the MX, no node fault\)/);
  });

  it('names a connection lost after the final dot (the MTA\'s deferred at end of data, no reply) as the cause', async () => {
    const w = world();
    w.ev.queued(0);
    w.ev.stored(5);
    w.ev.deferred(7, { command: 'end of data', error: 'session lost (connection reset by peer) during end of data' });
    w.ev.stored(515);
    w.ev.relayed(516);
    const report = await checkDeliveryGuarantees({ history: w.history }, owed);
    expect(report.duplicates[0]!.cause).toMatchObject({ kind: 'connection-lost-after-dot', event: { kind: 'deferred' } });
    expect(report.duplicates[0]!.cause!.description).toMatch(/session lost \(connection reset by peer\) during end of data on mta\.sender\.test -> mx/);
  });

  it('names the MX\'s LMTP session lost after the final dot (its handoff-failed at end of data) as the cause', async () => {
    const w = world();
    w.ev.queued(0);
    w.ev.stored(5);
    w.add(6, 'mx', 'handoff-failed', { to: 'LMTP 127.0.0.3:24', error: '127.0.0.3:24: timed out waiting for the server during end of data (ETIMEDOUT)' }, { messageId: ID });
    w.ev.deferred(7, { command: 'DATA', error: 'mx.receiver.test said: 451 4.3.0 mailbox server unavailable (in reply to DATA)', reply: '451 4.3.0 mailbox server unavailable' });
    w.ev.stored(515);
    w.ev.relayed(516);
    const report = await checkDeliveryGuarantees({ history: w.history }, owed);
    expect(report.duplicates[0]!.cause).toMatchObject({ kind: 'connection-lost-after-dot', event: { kind: 'handoff-failed' } });
    expect(report.duplicates[0]!.cause!.description).toMatch(/timed out waiting for the server during end of data .* on its hand-off to LMTP 127\.0\.0\.3:24/);
  });

  it('names a partial hand-off at the MX (this recipient stored, another refused for now, 4xx to the MTA) as the cause', async () => {
    const w = world();
    w.ev.queued(0);
    w.ev.stored(5);
    w.add(6, 'mx', 'handoff', { to: 'LMTP 127.0.0.3:24', recipients: [{ address: BOB, accepted: true, reply: '250 2.0.0 ok' }, { address: CAROL, accepted: false, reply: '450 4.7.1 greylisted' }] }, { messageId: ID });
    w.ev.deferred(7, { command: 'end of data', error: 'mx.receiver.test said: 451 4.7.1 (in reply to end of data)', reply: '451 4.7.1 greylisted' });
    w.ev.stored(515);
    w.ev.relayed(516);
    const report = await checkDeliveryGuarantees({ history: w.history }, owed);
    expect(report.duplicates[0]!.cause).toMatchObject({ kind: 'partial-handoff', event: { kind: 'deferred' } });
    expect(report.duplicates[0]!.cause!.description).toMatch(/handed bob@receiver\.test to the mailbox but not carol@receiver\.test \(450 4\.7\.1 greylisted\)/);
  });

  it('names the node fault that hit during the attempt that stored the first copy, not a later bystander', async () => {
    // Scenario 47, seed 1404365161: the MX was stopped while its LMTP hand-off stored the copy, and answered the
    // final dot with 421; it was stopped again later, between the copies, which explains nothing.
    const w = world();
    w.ev.queued(0);
    w.ev.active(100);
    w.ev.nemesis(200, 'node-stop', 'mx');
    w.ev.stored(400);
    w.ev.deferred(410, { command: 'DATA', error: 'mx.receiver.test said: 421 Server shutting down (in reply to DATA)', reply: '421 Server shutting down' });
    w.ev.nemesis(1500, 'node-start', 'mx');
    w.ev.nemesis(2000, 'node-stop', 'mx');
    w.ev.nemesis(3000, 'node-start', 'mx');
    w.ev.active(3500, [BOB], 2);
    w.ev.stored(3600);
    w.ev.relayed(3610);
    const report = await checkDeliveryGuarantees({ history: w.history }, owed);
    expect(report.duplicates[0]!.cause).toMatchObject({ kind: 'node-fault', event: { time: w.t0 + 200 } });
    expect(report.duplicates[0]!.cause!.description).toMatch(/^node-stop of mx at .*; the MTA then deferred bob@receiver\.test: 421 Server shutting down \(in reply to DATA\)$/);
  });

  /** A message stored twice, the MTA started again between the copies; `killed`: after a kill recorded before the first. */
  function storedAroundRestart(killed: boolean) {
    const w = world();
    w.ev.queued(0);
    if (killed) w.ev.nemesis(60, 'node-kill', 'mta');
    w.ev.active(130);
    w.ev.stored(150);
    w.ev.nemesis(1100, 'node-start', 'mta');
    w.ev.active(1900, [BOB], 1);
    w.ev.stored(2000);
    w.ev.relayed(2010);
    return checkDeliveryGuarantees({ history: w.history, mta: () => ({ queue: async () => [] }) }, owed, { timeoutMs: 300 });
  }

  it('explains a copy sent again by a killed MTA that was started between the copies, its last events stamped after the kill', async () => {
    // Scenario 47 on docker: the kill was recorded when docker returned, the killed MTA's delivery of the first copy
    // carries a later time (its own clock), and the restarted MTA delivered again.
    const report = await storedAroundRestart(true);
    expect(report.duplicates).toMatchObject([{ messageId: ID, rcpt: BOB, copies: 2, cause: { kind: 'node-fault', description: expect.stringMatching(/^node-kill of mta at .*, started again at .*, between the copies$/) } }]);
  });

  it('does not take a restart without a fault before it as the cause', async () => {
    expect((await failureOf(storedAroundRestart(false))).message).toMatch(/nothing between the copies explains it/);
  });

  it('counts the copies the folder holds whose stored event died with a killed mailbox server, and explains them', async () => {
    // The first copy was stored, then the mailbox server was killed before its event left: the MX lost the LMTP
    // session, the MTA retried, the second copy's event arrived. One `stored` event, two copies in bob's INBOX.
    const w = world();
    w.ev.queued(0);
    w.ev.active(1);
    w.ev.nemesis(20, 'node-kill', 'mailbox');
    w.ev.deferred(30, { command: 'DATA', error: 'mx.receiver.test said: 451 4.3.0 mailbox server unavailable (in reply to DATA)', reply: '451 4.3.0 mailbox server unavailable' });
    w.ev.active(600, [BOB], 2);
    w.ev.stored(610);
    w.ev.relayed(611);
    const target = { history: w.history, mta: () => ({ queue: async () => [] }) };
    // Without the folder's count the duplicate is invisible to the stored events.
    expect((await checkDeliveryGuarantees(target, owed, { timeoutMs: 300 })).duplicates).toEqual([]);
    const report = await checkDeliveryGuarantees(target, owed, { timeoutMs: 300, mailboxCopies: [{ messageId: ID, rcpt: BOB, copies: 2 }] });
    expect(report.duplicates).toMatchObject([{ messageId: ID, rcpt: BOB, copies: 2, cause: { kind: 'node-fault', description: expect.stringMatching(/^node-kill of mailbox/) } }]);
    const none = await failureOf(checkDeliveryGuarantees(target, owed, { timeoutMs: 300, duplicates: 'none', mailboxCopies: [{ messageId: ID, rcpt: BOB, copies: 2 }] }));
    expect(none.message).toMatch(/stored 1 times for bob@receiver\.test .*; bob@receiver\.test's folder holds 2 copies, 1 without a stored event/);
  });

  it('reads the folder of a delivered pair: a second copy whose stored event arrives after the sender\'s relayed is counted', async () => {
    // Each node's events come on their own stream: here the MTA's relayed (the 250 after the retry) arrived before
    // the mailbox server's event of the copy that retry stored. Only the folder settles the count.
    const w = world();
    w.ev.queued(0);
    w.ev.active(1);
    w.ev.stored(5);
    w.ev.fault(6, 'mx', { source: 'smtp', rule: 'lost-250', action: 'drop', stage: 'end-of-data', effect: 'connection closed before the reply', sender: ALICE, recipients: [BOB], hop: HOP });
    w.ev.deferred(7, { command: 'end of data', error: 'session lost' });
    w.ev.active(300, [BOB], 2);
    w.ev.relayed(320);
    let finds = 0;
    const target: DeliveryTarget = {
      history: w.history,
      mta: () => ({ queue: async () => [] }),
      mailbox: (user) => ({
        find: async () => {
          finds++;
          // The late event comes while the checker waits for it.
          setTimeout(() => w.ev.stored(310), 20);
          return user === BOB ? [{}, {}] : [];
        },
      }),
    };
    const report = await checkDeliveryGuarantees(target, owed, { timeoutMs: 1000 });
    expect(finds).toBe(1);
    expect(report.duplicates).toMatchObject([{ rcpt: BOB, copies: 2, stored: [{ kind: 'stored' }, { kind: 'stored' }], cause: { kind: 'drop-after-dot' } }]);
    // A folder that cannot be read (a recipient outside the lab's mailboxes) leaves the stored events to count.
    const elsewhere = await checkDeliveryGuarantees({ ...target, mailbox: () => ({ find: async () => Promise.reject(new Error('no such user')) }) }, owed, { timeoutMs: 1000 });
    expect(elsewhere.duplicates).toMatchObject([{ rcpt: BOB, copies: 2 }]);
  });

  it('waits for the stored events of copies the folder holds, and with no fault in the message\'s life finds no cause', async () => {
    const w = world();
    w.ev.queued(0);
    w.ev.active(1);
    w.ev.stored(5);
    w.ev.relayed(6);
    const target = { history: w.history, mta: () => ({ queue: async () => [] }) };
    const copies = [{ messageId: ID, rcpt: BOB, copies: 2 }];
    const check = checkDeliveryGuarantees(target, owed, { timeoutMs: 3000, mailboxCopies: copies });
    setTimeout(() => w.ev.stored(7), 100); // the second copy's event was on its way
    const failure = await failureOf(check);
    expect(failure.message).toMatch(/duplicate: stored 2 times for bob@receiver\.test .*, and nothing between the copies explains it/);
  });

  it('a deferral with the server\'s reply, before the data, or a kill of the DNS is no cause; a mailbox kill between the copies is', async () => {
    const w = world();
    w.ev.queued(0);
    w.ev.stored(5);
    w.ev.deferred(7, { command: 'end of data', error: 'mx.receiver.test said: 451 4.3.0 try later (in reply to end of data)' });
    w.ev.deferred(8, { command: 'RCPT TO:<bob@receiver.test>', error: 'session lost during RCPT TO' });
    w.ev.stored(515);
    w.ev.relayed(516);
    await failureOf(checkDeliveryGuarantees({ history: w.history }, owed));
    w.ev.nemesis(200, 'node-kill', 'dns'); // the DNS holds no message: its kill sends nothing twice
    await failureOf(checkDeliveryGuarantees({ history: w.history }, owed));
    w.ev.nemesis(300, 'node-kill', 'mailbox');
    const report = await checkDeliveryGuarantees({ history: w.history }, owed);
    expect(report.duplicates[0]!.cause).toMatchObject({ kind: 'node-fault', description: expect.stringMatching(/^node-kill of mailbox at /) });
  });
});

describe('checkGreylistPassed', () => {
  const greylisted = (w: ReturnType<typeof world>, at: number) =>
    w.ev.fault(at, 'mx', { source: 'smtp', rule: 'grey', action: 'greylist', stage: 'rcpt', effect: '450 4.7.1 greylisted', sender: ALICE, recipients: [BOB] });

  it('passes when the first attempt after the delay delivers', async () => {
    const w = world();
    w.ev.queued(0);
    w.ev.active(1);
    greylisted(w, 3);
    w.ev.deferred(4, { reply: '450 4.7.1 greylisted' });
    w.ev.active(504, [BOB], 2); // too early: greylisted again, which is allowed
    greylisted(w, 506);
    w.ev.deferred(507, { reply: '450 4.7.1 greylisted' });
    w.ev.active(1507, [BOB], 3);
    w.ev.relayed(1510);
    expect(await checkGreylistPassed({ history: w.history }, ID, BOB, { delayMs: 1000 })).toEqual({ greylistedAt: w.t0 + 3, deliveredAt: w.t0 + 1510, attempts: 3 });
  });

  it('fails when the first attempt after the delay is deferred again, naming the rule and the reply', async () => {
    const w = world();
    w.history.seed = 5;
    w.ev.queued(0);
    w.ev.active(1);
    greylisted(w, 3);
    w.ev.deferred(4, { reply: '450 4.7.1 greylisted' });
    w.ev.active(1504, [BOB], 2);
    w.ev.deferred(1507, { reply: '450 4.7.1 greylisted' });
    w.ev.active(3507, [BOB], 3);
    w.ev.relayed(3510);
    const failure = await failureOf(checkGreylistPassed({ history: w.history }, ID, BOB, { delayMs: 1000 }));
    expect(failure.message).toMatch(/^message <m1@client\.sender\.test> to bob@receiver\.test: greylisting not passed on the first retry after its delay \(1000 ms from the first sight at .*, rule grey\): the attempt started at .* was deferred again \(450 4\.7\.1 greylisted\)\nseed 5 /);
  });

  it('fails when no greylist fault fired, or the message was never delivered', async () => {
    const w = world();
    w.ev.queued(0);
    w.ev.active(1);
    w.ev.relayed(3);
    expect((await failureOf(checkGreylistPassed({ history: w.history }, ID, BOB, { delayMs: 1000 }))).message).toMatch(/to bob@receiver\.test: no greylist fault fired for this recipient before its delivery/);
    expect((await failureOf(checkGreylistPassed({ history: w.history }, ID, CAROL, { delayMs: 1000, timeoutMs: 30 }))).message).toMatch(/to carol@receiver\.test: never delivered/);
  });
});

describe('checkNoMisdelivery', () => {
  it('passes when every copy went to an addressee, and judges messages it knows only', () => {
    const w = world();
    w.ev.queued(0, [BOB, CAROL]);
    w.ev.stored(5, BOB);
    w.ev.stored(6, 'Carol@Receiver.test');
    w.ev.stored(7, 'dave@receiver.test', '<unknown@x>');
    expect(checkNoMisdelivery({ history: w.history })).toEqual({ checked: 2 });
  });

  it('fails on a copy stored for a recipient the message was not addressed to, naming both', () => {
    const w = world();
    w.ev.queued(0, [BOB, CAROL]);
    w.ev.stored(5, BOB);
    w.ev.stored(6, 'dave@receiver.test');
    const run = () => checkNoMisdelivery({ history: w.history }, owed, { context: 'chaos seed 3' });
    expect(run).toThrow(CheckFailure);
    expect(run).toThrow(/^chaos seed 3: message <m1@client\.sender\.test> was stored for dave@receiver\.test \(uid 2 in INBOX\), which it was not addressed to \(addressed to bob@receiver\.test\)/);
    // Without the owed list, the submitted or queued envelope decides: carol was addressed, dave was not.
    expect(() => checkNoMisdelivery({ history: w.history })).toThrow(/stored for dave@receiver\.test .* \(addressed to bob@receiver\.test, carol@receiver\.test\)/);
  });
});

describe('checkFlagsConverge', () => {
  const device = (w: ReturnType<typeof world>, at: number, name: string, kind: string, uid: number, flags?: string[]) =>
    w.add(at, `${BOB}/${name}`, kind, flags ? { uid, flags } : { uid }, { messageId: ID });

  it('waits until the devices agree after the partition heals', async () => {
    const w = world();
    device(w, 0, 'phone', 'device-synced', 1, []);
    device(w, 1, 'laptop', 'device-synced', 1, []);
    w.ev.nemesis(2, 'node-disconnect', 'mailbox');
    device(w, 3, 'phone', 'device-flags', 1, ['\\Seen']);
    const check = checkFlagsConverge({ history: w.history }, { user: BOB, timeoutMs: 2000 });
    await new Promise((resolve) => setImmediate(resolve));
    w.ev.nemesis(4, 'node-connect', 'mailbox');
    device(w, 5, 'laptop', 'device-flags', 1, ['\\Seen']);
    expect(await check).toEqual({ devices: [`${BOB}/laptop`, `${BOB}/phone`], messages: 1 });
  });

  it('fails naming the message, each device\'s flags and the partition', async () => {
    const w = world();
    w.history.seed = 9;
    device(w, 0, 'phone', 'device-synced', 1, []);
    device(w, 1, 'laptop', 'device-synced', 1, []);
    w.ev.nemesis(2, 'node-disconnect', 'mailbox');
    device(w, 3, 'phone', 'device-flags', 1, ['\\Seen', '\\Flagged']);
    device(w, 4, 'laptop', 'device-removed', 2);
    const failure = await failureOf(checkFlagsConverge({ history: w.history }, { user: BOB, timeoutMs: 50 }));
    expect(failure.message).toMatch(
      /^IMAP flags did not converge: message <m1@client\.sender\.test> \(uid 1\): bob@receiver\.test\/laptop \[\], bob@receiver\.test\/phone \[\\Flagged \\Seen\]\nseed 9 .*nemesis\s+node-disconnect/s,
    );
    expect((await failureOf(checkFlagsConverge({ history: new History() }, { user: BOB }))).message).toMatch(/needs two devices or more; found none of bob@receiver\.test/);
  });

  it('names every message the devices disagree on, in UID order, whichever changed first', async () => {
    const w = world();
    const other = '<m2@client.sender.test>';
    for (const dev of ['phone', 'laptop']) {
      device(w, 0, dev, 'device-synced', 1, []);
      w.add(0, `${BOB}/${dev}`, 'device-synced', { uid: 2, flags: [] }, { messageId: other });
    }
    // The laptop reads uid 2 first, then deletes uid 1; the phone hears neither.
    w.add(1, `${BOB}/laptop`, 'device-flags', { uid: 2, flags: ['\\Seen'] }, { messageId: other });
    device(w, 2, 'laptop', 'device-removed', 1);
    const failure = await failureOf(checkFlagsConverge({ history: w.history }, { user: BOB, timeoutMs: 50 }));
    expect(failure.message.split('\n')[0]).toBe(
      `IMAP flags did not converge: message ${ID} (uid 1): ${BOB}/laptop (absent), ${BOB}/phone []; message ${other} (uid 2): ${BOB}/laptop [\\Seen], ${BOB}/phone []`,
    );
  });

  it('\\Recent, which one session only sees (RFC 3501 §2.3.2), is no disagreement; any other flag is', async () => {
    const w = world();
    device(w, 0, 'phone', 'device-synced', 1, ['\\Recent']);
    device(w, 1, 'laptop', 'device-synced', 1, []);
    expect(await checkFlagsConverge({ history: w.history }, { user: BOB, timeoutMs: 30 })).toEqual({ devices: [`${BOB}/laptop`, `${BOB}/phone`], messages: 1 });
    device(w, 2, 'phone', 'device-flags', 1, ['\\Recent', '\\Seen']);
    expect((await failureOf(checkFlagsConverge({ history: w.history }, { user: BOB, timeoutMs: 30 }))).message).toMatch(/\(uid 1\): bob@receiver\.test\/laptop \[\], bob@receiver\.test\/phone \[\\Seen\]/);
  });

  it('a message one device has and another not is a disagreement', async () => {
    const w = world();
    device(w, 0, 'phone', 'device-synced', 1, []);
    device(w, 1, 'laptop', 'device-synced', 1, []);
    device(w, 2, 'laptop', 'device-removed', 1);
    expect((await failureOf(checkFlagsConverge({ history: w.history }, { devices: [`${BOB}/phone`, `${BOB}/laptop`], timeoutMs: 30 }))).message).toMatch(/\(uid 1\): bob@receiver\.test\/phone \[\], bob@receiver\.test\/laptop \(absent\)/);
  });
});

describe('checkRetrySchedule among faults', () => {
  it('does not measure a retry the nemesis moved (a flush or a restart of the MTA), unless told to', async () => {
    const w = world();
    w.ev.queued(0);
    w.ev.active(0);
    w.ev.deferred(10);
    w.ev.nemesis(50, 'queue-flush', 'mta');
    w.ev.active(60, [BOB], 2);
    w.ev.relayed(70);
    const excused: unknown[] = [];
    expect(await checkRetrySchedule({ history: w.history, mailbox: () => ({ find: async () => [] }) }, ID, { schedule: [500] }, { onExcused: (e) => excused.push(...e) })).toEqual([]);
    expect(excused).toMatchObject([{ rcpt: BOB, retry: 1, by: { kind: 'queue-flush' } }]);
    await expect(checkRetrySchedule({ history: w.history, mailbox: () => ({ find: async () => [] }) }, ID, { schedule: [500] }, { excuseNemesis: false })).rejects.toThrow(/retry 1 of .* started 50 ms after the failure/);
  });

  it('after a kill of the MTA, takes the rule\'s delay for the attempt the MTA says failed (its count restarts from its record)', async () => {
    // Scenario 47 in CI, seed 1223086822: a deferral not yet on disk died with the MTA; the restarted MTA failed
    // "attempt 1" again and retried 500 ms later, as the rule says for a first retry.
    const w = world();
    const target = { history: w.history, mailbox: () => ({ find: async () => [] }) };
    w.ev.queued(0);
    w.ev.active(0);
    w.ev.deferred(10, { attempt: 1, delay: 500, nextAttempt: 0 } as never);
    w.ev.nemesis(100, 'node-kill', 'mta');
    w.ev.nemesis(400, 'node-start', 'mta');
    w.ev.active(700, [BOB], 1);
    w.ev.deferred(710, { attempt: 1, delay: 500, nextAttempt: 0 } as never);
    w.ev.active(1211, [BOB], 2);
    w.ev.relayed(1220);
    expect(await checkRetrySchedule(target, ID, { schedule: [500, 1000] })).toEqual([501]);
    // Without the restart, the second failure is the second: its retry is 1000 ms, and 501 ms is early.
    const plain = world();
    plain.ev.queued(0);
    plain.ev.active(0);
    plain.ev.deferred(10, { attempt: 1, delay: 500, nextAttempt: 0 } as never);
    plain.ev.active(510, [BOB], 2);
    plain.ev.deferred(520, { attempt: 2, delay: 1000, nextAttempt: 0 } as never);
    plain.ev.active(1021, [BOB], 3);
    plain.ev.relayed(1030);
    await expect(checkRetrySchedule({ history: plain.history, mailbox: () => ({ find: async () => [] }) }, ID, { schedule: [500, 1000] })).rejects.toThrow(/retry 2 of .* started 501 ms after the failure; the retry rule says 1000 ms/);
  });

  it('does not measure the rerun of a flush that came while the failing attempt was in flight, but does one before it', async () => {
    // Scenario 47, seed 1107826907: the flush after healing came while an attempt hung on the MX's LMTP hand-off;
    // the scheduler ran the message again as soon as that attempt ended, 2 ms after its deferral.
    const during = world();
    during.ev.queued(0);
    during.ev.active(0);
    during.ev.nemesis(1000, 'queue-flush', 'mta');
    during.ev.deferred(5000);
    during.ev.active(5002, [BOB], 2);
    during.ev.relayed(5010);
    const target = (w: ReturnType<typeof world>) => ({ history: w.history, mailbox: () => ({ find: async () => [] }) });
    const excused: unknown[] = [];
    expect(await checkRetrySchedule(target(during), ID, { schedule: [500] }, { onExcused: (e) => excused.push(...e) })).toEqual([]);
    expect(excused).toMatchObject([{ rcpt: BOB, retry: 1, by: { kind: 'queue-flush' } }]);
    await expect(checkRetrySchedule(target(during), ID, { schedule: [500] }, { excuseNemesis: false })).rejects.toThrow(/retry 1 of .* started 2 ms after the failure/);
    // A rule change on the MTA (its own SMTP servers) moves no retry.
    const rules = world();
    rules.ev.queued(0);
    rules.ev.active(0);
    rules.ev.nemesis(1000, 'smtp-faults-change', 'mta');
    rules.ev.deferred(5000);
    rules.ev.active(5002, [BOB], 2);
    rules.ev.relayed(5010);
    await expect(checkRetrySchedule(target(rules), ID, { schedule: [500] })).rejects.toThrow(/retry 1 of .* started 2 ms after the failure/);
    // A flush before the failing attempt started moved an earlier retry, not this one.
    const before = world();
    before.ev.queued(0);
    before.ev.nemesis(5, 'queue-flush', 'mta');
    before.ev.active(10);
    before.ev.deferred(5000);
    before.ev.active(5002, [BOB], 2);
    before.ev.relayed(5010);
    await expect(checkRetrySchedule(target(before), ID, { schedule: [500] })).rejects.toThrow(/retry 1 of .* started 2 ms after the failure; the retry rule says 500 ms/);
  });

  it('measures from the MTA\'s own plan of the failure when its event was stamped later, but not from before the failure could be known', async () => {
    // Scenario 47, seed 1107826907: the MTA planned the retry at the failure (nextAttempt - delay), and emitted the
    // deferral 40 ms later (a descheduled process): the retry looked 40 ms early.
    const run = async (planned: number) => {
      const w = world();
      const q = { messageId: ID, queueId: 'Q1' };
      w.ev.queued(0);
      w.ev.active(0);
      w.add(10, 'mta', 'connect-failed', { host: 'h', port: 25, mx: 'mx', hop: HOP, stage: 'connect', command: 'connect', error: 'reset' }, q);
      w.add(55, 'mta', 'deferred', { rcpt: BOB, hop: HOP, command: 'connect', reply: '451', status: '4.4.1', error: 'reset', nextAttempt: w.t0 + planned + 500, delay: 500, attempt: 1 }, q);
      w.ev.active(planned + 500, [BOB], 2);
      w.ev.relayed(planned + 510);
      return checkRetrySchedule({ history: w.history, mailbox: () => ({ find: async () => [] }) }, ID, { schedule: [500] });
    };
    expect(await run(15)).toEqual([500]); // planned at 15, after the connect failure at 10: measured from there
    // Planned at 5, before the failure was known (the connect failure at 10): a stale clock, measured from the event.
    await expect(run(5)).rejects.toThrow(/retry 1 of .* started 450 ms after the failure; the retry rule says 500 ms/);
  });

  it('does not measure a recipient carried along early by another that was due, but does when none was', async () => {
    const w = world();
    const q = { messageId: ID, queueId: 'Q1' };
    const fail = (at: number, rcpt: string, nextAttempt: number) =>
      w.add(at, 'mta', 'deferred', { rcpt, hop: HOP, reply: '451', status: '4.3.0', error: 'later', nextAttempt: w.t0 + nextAttempt, delay: 500, attempt: 1 }, q);
    w.ev.queued(0, [BOB, CAROL]);
    w.ev.active(0, [BOB, CAROL]);
    fail(10, BOB, 510);
    fail(300, CAROL, 800);
    w.ev.active(515, [BOB, CAROL], 2); // BOB's retry, on time; CAROL's 215 ms after her failure, carried along
    w.ev.relayed(520, BOB);
    w.ev.relayed(521, CAROL);
    const target = { history: w.history, mailbox: () => ({ find: async () => [] }) };
    const excused: { rcpt: string; by: { detail: Record<string, unknown> } }[] = [];
    expect(await checkRetrySchedule(target, ID, { schedule: [500] }, { onExcused: (e) => excused.push(...(e as never[])) })).toEqual([505]);
    expect(excused).toMatchObject([{ rcpt: CAROL, by: { detail: { rcpt: BOB } } }]);
    const alone = world();
    alone.ev.queued(0, [BOB, CAROL]);
    alone.ev.active(0, [BOB, CAROL]);
    alone.add(300, 'mta', 'deferred', { rcpt: CAROL, hop: HOP, reply: '451', status: '4.3.0', error: 'later', nextAttempt: alone.t0 + 800, delay: 500, attempt: 1 }, q);
    alone.ev.relayed(10, BOB);
    alone.ev.active(515, [CAROL], 2);
    alone.ev.relayed(521, CAROL);
    await expect(checkRetrySchedule({ history: alone.history, mailbox: () => ({ find: async () => [] }) }, ID, { schedule: [500] })).rejects.toThrow(/retry 1 of .* to carol@receiver\.test started 215 ms after the failure/);
  });

  it('counts a late retry from the end of the attempt it waited for (one attempt of a message at a time)', async () => {
    const w = world();
    const q = { messageId: ID, queueId: 'Q1' };
    const fail = (at: number, rcpt: string) => w.add(at, 'mta', 'deferred', { rcpt, hop: HOP, reply: '451', status: '4.3.0', error: 'later', nextAttempt: w.t0 + at + 500, delay: 500, attempt: 1 }, q);
    w.ev.queued(0, [BOB, CAROL]);
    w.ev.active(0, [BOB, CAROL]);
    fail(10, BOB); // the local hop fails at once
    fail(3000, CAROL); // the remote hop's failure ends the attempt 3 s later
    w.ev.active(3600, [BOB, CAROL], 2);
    w.ev.relayed(3610, BOB);
    w.ev.relayed(3611, CAROL);
    const target = { history: w.history, mailbox: () => ({ find: async () => [] }) };
    expect(await checkRetrySchedule(target, ID, { schedule: [500] }, { slackMs: 700 })).toEqual([3590, 600]);
    const failure = await checkRetrySchedule(target, ID, { schedule: [500] }, { slackMs: 50 }).catch((e: unknown) => e);
    expect(String(failure)).toMatch(/retry 1 of .* to bob@receiver\.test started 3590 ms after the failure; the retry rule says 500 ms \(-25\/\+50 after the attempt's last destination ended, 2990 ms after the failure\)/);
  });
});
