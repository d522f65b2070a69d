// checkNoneLost against hand-made mailboxes and queues: it must fail on a lost message (naming the context, e.g. the
// seed), count duplicates and enforce their bound, accept a DSN as the outcome of a bounced message, and decide only
// once the MTA's queue is empty, whether that is already so or comes with the MTA's next events.
import { describe, expect, it } from 'vitest';
import type { LabEvent } from '../../shared/events.js';
import { now } from '../../shared/events.js';
import { History } from '../history/history.js';
import { CheckFailure, checkNoneLost, type NoneLostTarget, type OwedMessage } from './index.js';

const ALICE = 'alice@sender.test';
const BOB = 'bob@receiver.test';
const owed = (n: number, to = [BOB]): OwedMessage => ({ messageId: `<m${n}@client.sender.test>`, from: ALICE, to });
const mail = (id: string) => Buffer.from(`Message-ID: ${id}\r\nSubject: x\r\n\r\nbody\r\n`);
/** A DSN for `original`, shaped as mta/dsn.ts writes one (its own Message-ID, then the original's headers). */
const dsn = (original: string) =>
  Buffer.from(
    `Message-ID: <dsn-1@mta.sender.test>\r\nContent-Type: multipart/report; report-type=delivery-status;\r\n\tboundary="b"\r\n\r\n--b\r\nContent-Type: text/rfc822-headers\r\n\r\nMessage-ID: ${original}\r\nSubject: x\r\n--b--\r\n`,
  );

/** Mailboxes by user, a queue the test empties when it likes, and a history to add MTA events to. */
function world(boxes: Record<string, Buffer[]>, queue: unknown[] = []) {
  const history = new History();
  let seq = 0;
  const target: NoneLostTarget = {
    history,
    mailbox: (user) => ({
      messages: async () => (boxes[user] ?? []).map((_, i) => ({ uid: i + 1 })),
      read: async (uid) => boxes[user]![uid - 1]!,
    }),
    mta: () => ({ queue: async () => [...queue] }),
  };
  const event = (kind: string) => history.add({ seq: ++seq, time: now(), node: 'mta', kind, detail: {} } as LabEvent);
  return { target, queue, event };
}

describe('checkNoneLost', () => {
  it('passes when every owed message is in its mailbox, counting nothing twice', async () => {
    const { target } = world({ [BOB]: [mail('<m1@client.sender.test>'), mail('<m2@client.sender.test>')] });
    expect(await checkNoneLost(target, [owed(1), owed(2)])).toEqual({ owed: 2, delivered: 2, bounced: 0, duplicateCopies: 0, duplicates: [], lost: [] });
  });

  it('fails on a lost message, naming it and the context', async () => {
    const { target } = world({ [BOB]: [mail('<m1@client.sender.test>')] });
    const failure = await checkNoneLost(target, [owed(1), owed(2)], { context: 'seed 42' }).catch((e: unknown) => e);
    expect(failure).toBeInstanceOf(CheckFailure);
    expect((failure as Error).message).toMatch(/^seed 42: 1 of 2 accepted .* lost.*<m2@client\.sender\.test> → bob@receiver\.test/);
  });

  it('takes a DSN in the sender\'s mailbox as the outcome of a message not delivered', async () => {
    const { target } = world({ [BOB]: [], [ALICE]: [dsn('<m1@client.sender.test>')] });
    expect(await checkNoneLost(target, [owed(1)])).toMatchObject({ delivered: 0, bounced: 1, lost: [] });
  });

  it('counts duplicate copies per recipient and fails past maxDuplicates', async () => {
    const boxes = { [BOB]: [mail('<m1@client.sender.test>'), mail('<m1@client.sender.test>'), mail('<m1@client.sender.test>')], [ALICE]: [mail('<m1@client.sender.test>')] };
    const report = await checkNoneLost(world(boxes).target, [owed(1, [BOB, ALICE])]);
    expect(report).toMatchObject({ owed: 2, delivered: 2, duplicateCopies: 2, duplicates: [{ messageId: '<m1@client.sender.test>', rcpt: BOB, copies: 3 }] });
    await expect(checkNoneLost(world(boxes).target, [owed(1, [BOB, ALICE])], { maxDuplicates: 1, context: 'seed 7' })).rejects.toThrow(/^seed 7: 2 duplicate copies \(bound 1\)/);
  });

  it('decides only once the queue is empty, waking on the MTA\'s events', async () => {
    const boxes: Record<string, Buffer[]> = { [BOB]: [] };
    const w = world(boxes, ['a message still queued']);
    const verdict = checkNoneLost(w.target, [owed(1)], { timeoutMs: 5000 });
    // The message is delivered and leaves the queue; the MTA's event wakes the checker.
    await new Promise((resolve) => setImmediate(resolve));
    boxes[BOB]!.push(mail('<m1@client.sender.test>'));
    w.queue.length = 0;
    w.event('relayed');
    expect(await verdict).toMatchObject({ delivered: 1, lost: [] });
  });

  it('fails, saying what is left, when the queue never empties', async () => {
    const { target } = world({ [BOB]: [mail('<m1@client.sender.test>')] }, [{ queueId: 'Q1' }]);
    await expect(checkNoneLost(target, [owed(1)], { timeoutMs: 50, context: 'seed 9' })).rejects.toThrow(/^seed 9: the MTA's queue never emptied: 1 messages left/);
  });
});
