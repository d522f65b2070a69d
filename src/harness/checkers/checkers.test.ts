// The checkers against synthetic histories: each must fail on the history that breaks its property, pass on the
// one that keeps it, and decide the same whether the events are already there or still to come.
import { describe, expect, it } from 'vitest';
import type { LabEvent } from '../../shared/events.js';
import { History } from '../history/history.js';
import { CheckFailure, checkDeliveredOnce, checkHopOrder, checkRetrySchedule, type CheckTarget } from './index.js';

const ID = '<m1@sender.test>';
const BOB = 'bob@receiver.test';

/** A history and a mailbox made by hand: events are added with explicit times; the mailbox holds copies. */
function world() {
  const history = new History();
  const seq = new Map<string, number>();
  const copies: { uid: number; raw: Buffer }[] = [];
  const t0 = 1_000_000;
  const add = (at: number, node: string, kind: string, detail: Record<string, unknown>, ids: { messageId?: string; queueId?: string } = { messageId: ID }) => {
    const n = (seq.get(node) ?? 0) + 1;
    seq.set(node, n);
    history.add({ seq: n, time: t0 + at, node, kind, ...ids, detail } as LabEvent);
  };
  const target: CheckTarget = { history, mailbox: () => ({ find: async () => copies }) };
  return { history, add, copies, target, t0 };
}

/** One delivery's events: queued at the MTA, relayed, stored at the mailbox. */
function deliver(w: ReturnType<typeof world>, at: number, opts: { stored?: number; outcome?: boolean } = {}) {
  w.add(at, 'mta', 'queued', { from: 'alice@sender.test', to: [BOB], size: 10, origin: 'submission' }, { messageId: ID, queueId: 'Q1' });
  for (let i = 0; i < (opts.stored ?? 1); i++) {
    w.add(at + 5 + i, 'mailbox', 'stored', { user: BOB, mailbox: 'INBOX', uid: i + 1, size: 10, from: 'alice@sender.test' }, { messageId: ID, queueId: `F${i}` });
    w.copies.push({ uid: i + 1, raw: Buffer.from(`Message-ID: ${ID}\r\n\r\nhi`) });
  }
  if (opts.outcome !== false) w.add(at + 10, 'mta', 'relayed', { rcpt: BOB, hop: 'h', reply: '250 ok', status: '2.0.0', reused: false }, { messageId: ID, queueId: 'Q1' });
}

describe('checkDeliveredOnce', () => {
  it('passes on exactly one stored copy', async () => {
    const w = world();
    deliver(w, 0);
    expect((await checkDeliveredOnce(w.target, BOB, ID)).uid).toBe(1);
  });

  it('fails, with the trace, when nothing was stored', async () => {
    const w = world();
    w.add(0, 'mta', 'queued', { from: 'a@s.test', to: [BOB], size: 1, origin: 'submission' }, { messageId: ID, queueId: 'Q1' });
    const failure = await checkDeliveredOnce(w.target, BOB, ID, { timeoutMs: 50 }).catch((e: unknown) => e);
    expect(failure).toBeInstanceOf(CheckFailure);
    expect(String((failure as Error).message)).toMatch(/never stored for bob@receiver\.test/);
    expect(String((failure as Error).message)).toMatch(/mta\s+queued/);
  });

  it('names the seed of a run that has one, with the variable that replays it', async () => {
    const w = world();
    w.history.seed = 4242;
    const failure = await checkDeliveredOnce(w.target, BOB, ID, { timeoutMs: 20 }).catch((e: unknown) => e);
    expect((failure as Error).message).toMatch(/never stored for bob@receiver\.test.*\nseed 4242 \(MAILLAB_SEED=4242 replays it\)\nevents:/s);
  });

  it('fails when the message was stored twice (two copies in the mailbox)', async () => {
    const w = world();
    deliver(w, 0, { stored: 2 });
    await expect(checkDeliveredOnce(w.target, BOB, ID)).rejects.toThrow(/stored 2 times for bob@receiver\.test, expected exactly once/);
  });

  it('fails when the mailbox holds two copies though one stored event arrived', async () => {
    const w = world();
    deliver(w, 0);
    w.copies.push({ uid: 9, raw: Buffer.from(`Message-ID: ${ID}\r\n\r\nagain`) });
    await expect(checkDeliveredOnce(w.target, BOB, ID, { timeoutMs: 50 })).rejects.toThrow(/mailbox shows 2 copies but fewer stored events arrived/);
  });

  it('waits for a caller that did not wait: the delivery happens after the check began', async () => {
    const w = world();
    const check = checkDeliveredOnce(w.target, BOB, ID);
    await Promise.resolve();
    deliver(w, 0);
    expect((await check).uid).toBe(1);
  });

  it('does not decide before the sender settled the recipient: a second copy from a retry is caught', async () => {
    const w = world();
    deliver(w, 0, { outcome: false });
    const check = checkDeliveredOnce(w.target, BOB, ID);
    // The retry stores a second copy, and only then does the MTA record its outcome.
    await new Promise((resolve) => setImmediate(resolve));
    w.add(20, 'mailbox', 'stored', { user: BOB, mailbox: 'INBOX', uid: 2, size: 10, from: 'alice@sender.test' }, { messageId: ID, queueId: 'F2' });
    w.copies.push({ uid: 2, raw: Buffer.from(`Message-ID: ${ID}\r\n\r\nhi`) });
    w.add(30, 'mta', 'relayed', { rcpt: BOB, hop: 'h', reply: '250 ok', status: '2.0.0', reused: false }, { messageId: ID, queueId: 'Q1' });
    await expect(check).rejects.toThrow(/stored 2 times/);
  });
});

describe('checkHopOrder', () => {
  const hops = ['mta:queued', 'mailbox:stored', 'mta:relayed'];

  it('passes when the hops came in order', async () => {
    const w = world();
    deliver(w, 0);
    await checkHopOrder(w.target, ID, hops);
  });

  it('fails when a hop came out of order', async () => {
    const w = world();
    w.add(0, 'mta', 'queued', { from: 'a', to: [BOB], size: 1, origin: 'submission' }, { messageId: ID, queueId: 'Q1' });
    w.add(1, 'mta', 'relayed', { rcpt: BOB, hop: 'h', reply: '250', status: '2.0.0', reused: false }, { messageId: ID, queueId: 'Q1' });
    w.add(2, 'mailbox', 'stored', { user: BOB, mailbox: 'INBOX', uid: 1, size: 1, from: 'a' });
    await expect(checkHopOrder(w.target, ID, hops)).rejects.toThrow(/expected hop mta:relayed after mailbox:stored, but it came earlier/);
  });

  it('fails when a hop never came', async () => {
    const w = world();
    w.add(0, 'mta', 'queued', { from: 'a', to: [BOB], size: 1, origin: 'submission' }, { messageId: ID, queueId: 'Q1' });
    await expect(checkHopOrder(w.target, ID, hops, { timeoutMs: 50 })).rejects.toThrow(/hop mailbox:stored never came/);
  });
});

describe('checkRetrySchedule', () => {
  const retry = { schedule: [400, 800] };
  /** Attempts starting at the given times, each failing 10 ms later, then an expiry. */
  function attempts(w: ReturnType<typeof world>, starts: number[]) {
    const ids = { messageId: ID, queueId: 'Q1' };
    w.add(0, 'mta', 'queued', { from: 'a', to: [BOB], size: 1, origin: 'submission' }, ids);
    starts.forEach((start, i) => {
      w.add(start, 'mta', 'active', { attempt: i + 1, recipients: [BOB] }, ids);
      const failedAt = start + 10;
      if (i < starts.length - 1) w.add(failedAt, 'mta', 'deferred', { rcpt: BOB, hop: 'h', reply: '421', status: '4.4.1', error: 'refused', nextAttempt: 0, delay: 0, attempt: i + 1 }, ids);
      else w.add(failedAt, 'mta', 'expired', { rcpt: BOB, hop: 'h', reply: '421', status: '4.4.7', error: 'refused', attempts: i + 1, queuedFor: failedAt }, ids);
    });
  }

  it('passes when each retry starts after the rule\'s delay (the last delay repeats)', async () => {
    const w = world();
    attempts(w, [0, 410, 1220, 2030]);
    expect(await checkRetrySchedule(w.target, ID, retry)).toEqual([400, 800, 800]);
  });

  it('fails when a retry comes too early', async () => {
    const w = world();
    attempts(w, [0, 210, 1020]);
    await expect(checkRetrySchedule(w.target, ID, retry)).rejects.toThrow(/retry 1 of <m1@sender\.test> to bob@receiver\.test started 200 ms after the failure; the retry rule says 400 ms/);
  });

  it('fails when a retry comes too late', async () => {
    const w = world();
    attempts(w, [0, 410, 2220]);
    await expect(checkRetrySchedule(w.target, ID, retry, { slackMs: 100 })).rejects.toThrow(/retry 2 .* started 1800 ms after the failure; the retry rule says 800 ms/);
  });

  it('fails when the message was never queued', async () => {
    const w = world();
    const check = checkRetrySchedule(w.target, ID, retry, { timeoutMs: 50 });
    await expect(check).rejects.toThrow(/never queued/);
  });
});

describe('checkers among other traffic', () => {
  const CAROL = 'carol@receiver.test';
  const OTHER = '<other@sender.test>';
  const stored = (w: ReturnType<typeof world>, at: number, user: string, uid: number, messageId = ID) =>
    w.add(at, 'mailbox', 'stored', { user, mailbox: 'INBOX', uid, size: 10, from: 'alice@sender.test' }, { messageId, queueId: `F${uid}` });
  const relayed = (w: ReturnType<typeof world>, at: number, rcpt: string, queueId = 'Q1', messageId = ID) =>
    w.add(at, 'mta', 'relayed', { rcpt, hop: 'h', reply: '250 ok', status: '2.0.0', reused: false }, { messageId, queueId });
  const copy = (w: ReturnType<typeof world>, uid: number) => w.copies.push({ uid, raw: Buffer.from(`Message-ID: ${ID}\r\n\r\nhi`) });

  it('a CheckFailure names itself and shows the events, or says there were none', () => {
    const failure = new CheckFailure('it broke', []);
    expect(failure.name).toBe('CheckFailure');
    expect(failure.message).toBe('it broke\nevents:\n  (none)');
    const w = world();
    w.add(1, 'mta', 'queued', { from: 'a', to: [BOB], size: 1, origin: 'submission' });
    const withEvents = new CheckFailure('it broke', w.history.events);
    expect(withEvents.message).toMatch(/^it broke\nevents:\n\S+ mta\s+queued\s+msg=<m1@sender\.test> \{"from":"a"/);
    expect(withEvents.events).toHaveLength(1);
  });

  it('a failure that is not a timeout passes through unchanged', async () => {
    const w = world();
    deliver(w, 0);
    const target: CheckTarget = { history: w.history, mailbox: () => ({ find: () => Promise.reject(new Error('control channel down')) }) };
    const failure = await checkDeliveredOnce(target, BOB, ID).catch((e: unknown) => e);
    expect(failure).not.toBeInstanceOf(CheckFailure);
    expect((failure as Error).message).toBe('control channel down');
  });

  it('counts only this user\'s stored events of this message, and reads the folder asked for', async () => {
    const w = world();
    const folders: string[] = [];
    const target: CheckTarget = { history: w.history, mailbox: () => ({ find: async (_id, folder) => (folders.push(folder ?? '(none)'), w.copies) }) };
    w.add(0, 'mta', 'queued', { from: 'a', to: [BOB, CAROL], size: 1, origin: 'submission' }, { messageId: ID, queueId: 'Q1' });
    stored(w, 1, BOB, 1);
    stored(w, 2, CAROL, 2);
    stored(w, 3, BOB, 3, OTHER);
    w.add(4, 'mailbox', 'retrieved', { user: BOB, protocol: 'imap', uid: 1, size: 10 }, { messageId: ID });
    copy(w, 1);
    relayed(w, 5, BOB);
    relayed(w, 5, CAROL);
    expect((await checkDeliveredOnce(target, 'Bob@Receiver.test', ID)).uid).toBe(1);
    await checkDeliveredOnce(target, BOB, ID, { mailbox: 'Junk' });
    expect(folders).toEqual(['INBOX', 'Junk']);
  });

  it('waits for this recipient\'s own outcome, not another recipient\'s', async () => {
    const w = world();
    w.add(0, 'mta', 'queued', { from: 'a', to: [CAROL, BOB], size: 1, origin: 'submission' }, { messageId: ID, queueId: 'Q1' });
    stored(w, 1, BOB, 1);
    copy(w, 1);
    relayed(w, 2, CAROL);
    const check = checkDeliveredOnce(w.target, BOB, ID);
    await new Promise((resolve) => setImmediate(resolve));
    stored(w, 3, BOB, 2);
    copy(w, 2);
    relayed(w, 4, BOB);
    await expect(check).rejects.toThrow(/stored 2 times for bob@receiver\.test/);
  });

  it('needs the sending MTA\'s outcome, unless the message went through no MTA', async () => {
    const w = world();
    stored(w, 1, BOB, 1);
    copy(w, 1);
    await expect(checkDeliveredOnce(w.target, BOB, ID, { timeoutMs: 50 })).rejects.toThrow(/no MTA reported an outcome for bob@receiver\.test \(pass queued: false/);
    expect((await checkDeliveredOnce(w.target, BOB, ID, { queued: false })).uid).toBe(1);
  });

  it('takes the outcome of this message only, and one deadline for all its waits', async () => {
    const w = world();
    w.add(0, 'mta', 'queued', { from: 'a', to: [BOB], size: 1, origin: 'submission' }, { messageId: ID, queueId: 'Q1' });
    stored(w, 1, BOB, 1);
    copy(w, 1);
    relayed(w, 2, BOB, 'Q2', OTHER);
    const began = Date.now();
    await expect(checkDeliveredOnce(w.target, BOB, ID, { timeoutMs: 80 })).rejects.toThrow(/no MTA reported an outcome for bob@receiver\.test/);
    expect(Date.now() - began).toBeLessThan(1000);
  });

  it('fails when the one stored copy is no longer in the folder', async () => {
    const w = world();
    w.add(0, 'mta', 'queued', { from: 'a', to: [BOB], size: 1, origin: 'submission' }, { messageId: ID, queueId: 'Q1' });
    stored(w, 1, BOB, 1);
    relayed(w, 2, BOB);
    await expect(checkDeliveredOnce(w.target, BOB, ID)).rejects.toThrow(/0 copies in bob@receiver\.test's INBOX, expected exactly one/);
  });

  it('checkHopOrder refuses a hop that is not node:kind, ignores other messages\' hops, and needs each hop anew', async () => {
    const w = world();
    await expect(checkHopOrder(w.target, ID, ['mta'])).rejects.toThrow('checkHopOrder: "mta" is not node:kind');
    w.add(0, 'mta', 'queued', { from: 'a', to: [BOB], size: 1, origin: 'submission' }, { messageId: ID, queueId: 'Q1' });
    stored(w, 1, BOB, 1, OTHER);
    await expect(checkHopOrder(w.target, ID, ['mta:queued', 'mailbox:stored'], { timeoutMs: 50 })).rejects.toThrow(/hop mailbox:stored never came/);
    await expect(checkHopOrder(w.target, ID, ['mta:queued', 'mta:queued'])).rejects.toThrow(/expected hop mta:queued after mta:queued, but it came earlier/);
  });

  describe('checkRetrySchedule', () => {
    const ids = { messageId: ID, queueId: 'Q1' };
    const failAt = (w: ReturnType<typeof world>, at: number, rcpt: string, n: number) =>
      w.add(at, 'mta', 'deferred', { rcpt, hop: 'h', reply: '421', status: '4.4.1', error: 'refused', nextAttempt: 0, delay: 0, attempt: n }, ids);
    const start = (w: ReturnType<typeof world>, at: number, recipients: string[], queueId = 'Q1', node = 'mta') =>
      w.add(at, node, 'active', { attempt: 1, recipients }, { messageId: ID, queueId });

    it('holds each recipient to the rule on its own, ignoring other messages and nodes', async () => {
      const w = world();
      w.add(0, 'mta', 'queued', { from: 'a', to: [BOB, CAROL], size: 1, origin: 'submission' }, ids);
      start(w, 0, [BOB, CAROL]);
      failAt(w, 10, BOB, 1);
      failAt(w, 10, CAROL, 1);
      start(w, 100, [CAROL], 'Q2'); // another message of the same MTA
      start(w, 200, [CAROL], 'Q1', 'mta2'); // the same queue id on another MTA
      start(w, 300, [CAROL]); // CAROL alone: too early for... nobody, BOB is not in it
      relayed(w, 310, CAROL);
      start(w, 410, [BOB]);
      relayed(w, 420, BOB);
      const failure = await checkRetrySchedule(w.target, ID, { schedule: [400] }).catch((e: unknown) => e);
      expect(String(failure)).toMatch(/retry 1 of <m1@sender\.test> to carol@receiver\.test started 290 ms after the failure; the retry rule says 400 ms \(-25\/\+400\)/);
    });

    it('accepts a retry up to 25 ms early and up to slackMs (400 by default) late, and no more', async () => {
      const run = async (delay: number, slackMs?: number) => {
        const w = world();
        w.add(0, 'mta', 'queued', { from: 'a', to: [BOB], size: 1, origin: 'submission' }, ids);
        start(w, 0, [BOB]);
        failAt(w, 10, BOB, 1);
        start(w, 10 + delay, [BOB]);
        relayed(w, 20 + delay, BOB);
        return checkRetrySchedule(w.target, ID, { schedule: [1000] }, slackMs === undefined ? {} : { slackMs });
      };
      expect(await run(975)).toEqual([975]);
      await expect(run(974)).rejects.toThrow(/started 974 ms/);
      expect(await run(1400)).toEqual([1400]);
      await expect(run(1401)).rejects.toThrow(/started 1401 ms/);
      expect(await run(1050, 50)).toEqual([1050]);
      await expect(run(1051, 50)).rejects.toThrow(/-25\/\+50/);
    });

    it('with `attempts`, decides once that many attempts started, the last failure without a retry yet', async () => {
      const w = world();
      w.add(0, 'mta', 'queued', { from: 'a', to: [BOB], size: 1, origin: 'submission' }, ids);
      start(w, 0, [BOB]);
      failAt(w, 10, BOB, 1);
      const check = checkRetrySchedule(w.target, ID, { schedule: [500, 1000] }, { attempts: 2 });
      await new Promise((resolve) => setImmediate(resolve));
      start(w, 510, [BOB]);
      failAt(w, 520, BOB, 2);
      expect(await check).toEqual([500]);
      await expect(checkRetrySchedule(w.target, ID, { schedule: [500] }, { attempts: 3, timeoutMs: 50 })).rejects.toThrow(/fewer than 3 attempts/);
      await expect(checkRetrySchedule(w.target, ID, { schedule: [500] }, { timeoutMs: 50 })).rejects.toThrow(/bob@receiver\.test never settled/);
    });
  });
});
