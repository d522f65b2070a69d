import { promises as fs } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { recordingFileSystem, type RecordingFileSystem } from '../shared/fs-recorder.test-helper.js';
import { defaultFileSystem, type FileSystem } from '../shared/fsutil.js';
import {
  checkRecipientTransition,
  checkTransition,
  DirSync,
  IllegalTransitionError,
  MailQueue,
  newQueueId,
  QueueError,
  type AttemptReport,
  type EnqueueInput,
  type MailQueueOptions,
  type MessageState,
  type RecipientState,
} from './queue.js';

let dir: string;
beforeEach(async () => {
  dir = await fs.mkdtemp(path.join(os.tmpdir(), 'maillab-queue-'));
});
afterEach(async () => {
  await fs.rm(dir, { recursive: true, force: true });
});

const input = (over: Partial<EnqueueInput> = {}): EnqueueInput => ({
  from: 'alice@sender.test',
  to: ['bob@receiver.test', 'carol@receiver.test'],
  data: Buffer.from('Subject: hi\r\nMessage-ID: <m1@sender.test>\r\n\r\nhello\r\n'),
  messageId: '<m1@sender.test>',
  origin: { kind: 'submission', protocol: 'ESMTPA', user: 'alice@sender.test' },
  ...over,
});

async function openQueue(options: Partial<MailQueueOptions> = {}): Promise<MailQueue> {
  const queue = new MailQueue(dir, { fsync: true, ...options });
  await queue.open();
  return queue;
}

/** A queue file as `enqueue` writes it: the envelope line, then the message. */
async function queueFile(queueId: string): Promise<{ envelope: Record<string, unknown>; data: Buffer }> {
  const file = await fs.readFile(path.join(dir, 'msg', `${queueId}.eml`));
  const end = file.indexOf(0x0a);
  return { envelope: JSON.parse(file.subarray(0, end).toString('utf8')) as Record<string, unknown>, data: file.subarray(end + 1) };
}

/** The outcome of an attempt, as delivery reports it. */
const outcome = (over: Partial<AttemptReport> = {}): AttemptReport => ({ description: 'mx said 451', hop: 'a -> b', status: '4.0.0', reply: '451 later', at: 1, ...over });

const files = async (sub: string) => (await fs.readdir(path.join(dir, sub))).sort();


describe('queue ids', () => {
  it('are upper-case hex, unique and ordered by time', () => {
    const ids = Array.from({ length: 1000 }, () => newQueueId(1_700_000_000_000));
    expect(new Set(ids).size).toBe(1000);
    for (const id of ids) expect(id).toMatch(/^[0-9A-F]{18}$/);
    expect(newQueueId(1_700_000_000_000) < newQueueId(1_700_000_000_001)).toBe(true);
  });

  it('are the time in 11 hex digits, a sequence that counts up in 3, then 4 random ones', () => {
    const [a, b] = [newQueueId(1), newQueueId(1)];
    expect(a.slice(0, 11)).toBe('00000000001');
    const sequence = (id: string) => parseInt(id.slice(11, 14), 16);
    expect(sequence(b)).toBe((sequence(a) + 1) & 0xfff);
  });
});

describe('state machine', () => {
  const messageStates: MessageState[] = ['incoming', 'active', 'deferred', 'hold', 'done'];
  const recipientStates: RecipientState[] = ['pending', 'deferred', 'delivered', 'bounced'];

  it('allows only incoming → active → deferred ↔ active → done, and incoming|deferred → hold → deferred; every other pair throws IllegalTransitionError', () => {
    const legal = new Set(['incoming>active', 'active>deferred', 'active>done', 'deferred>active', 'incoming>hold', 'deferred>hold', 'hold>deferred']);
    for (const from of messageStates) {
      for (const to of messageStates) {
        if (legal.has(`${from}>${to}`)) {
          expect(() => checkTransition('Q', from, to)).not.toThrow();
          continue;
        }
        const err = (() => {
          try {
            checkTransition('Q', from, to);
          } catch (e) {
            return e;
          }
        })();
        expect(err, `${from} -> ${to}`).toBeInstanceOf(IllegalTransitionError);
        expect(err).toMatchObject({ name: 'IllegalTransitionError', kind: 'illegal-transition', queueId: 'Q', from, to, recipient: undefined, message: `queue Q: invalid state change ${from} -> ${to}` });
      }
    }
  });

  it('lets a recipient go from pending or deferred to delivered, deferred or bounced, and never out of delivered or bounced', () => {
    const legal = new Set(['pending>delivered', 'pending>deferred', 'pending>bounced', 'deferred>delivered', 'deferred>deferred', 'deferred>bounced']);
    for (const from of recipientStates) {
      for (const to of recipientStates) {
        const check = () => checkRecipientTransition('Q', 'bob@receiver.test', from, to);
        if (legal.has(`${from}>${to}`)) expect(check, `${from} -> ${to}`).not.toThrow();
        else expect(check, `${from} -> ${to}`).toThrow(new IllegalTransitionError('Q', 'bob@receiver.test', from, to));
      }
    }
    expect(() => checkRecipientTransition('Q', 'bob@receiver.test', 'delivered', 'deferred')).toThrow('queue Q: invalid state change of <bob@receiver.test> delivered -> deferred');
  });

  describe('recipient transitions through the queue', () => {
    const BOB = 'bob@receiver.test';
    const failure = outcome({ status: '4.4.1', reply: '451 try later', description: 'no answer' });
    /** An active message whose bob went through `path` (each step a transition of the attempt, then settled). */
    async function bobAfter(...path: ('deliver' | 'defer' | 'bounce' | 'expire')[]) {
      const queue = await openQueue();
      const message = await queue.enqueue(input({ to: [BOB, 'carol@receiver.test'] }));
      for (const step of path) {
        if (message.state !== 'active') await queue.activate(message.queueId);
        apply(queue, message.queueId, step);
        if (step === 'defer') await queue.settle(message.queueId);
      }
      if (message.state !== 'active') await queue.activate(message.queueId);
      return { queue, message, bob: message.recipients[0]! };
    }
    function apply(queue: MailQueue, queueId: string, step: 'deliver' | 'defer' | 'bounce' | 'expire') {
      switch (step) {
        case 'deliver':
          return queue.deliverRecipient(queueId, BOB, outcome({ status: '2.0.0', reply: '250 ok' }));
        case 'defer':
          return queue.deferRecipient(queueId, BOB, failure, 7000);
        case 'bounce':
          return queue.bounceRecipient(queueId, BOB, outcome({ status: '5.1.1', reply: '550 no such user' }));
        case 'expire':
          return queue.expireRecipient(queueId, BOB, failure);
      }
    }

    it('records each outcome with its report, counting the attempt', async () => {
      for (const before of [[], ['defer']] as const) {
        const delivered = await bobAfter(...before, 'deliver');
        expect(delivered.bob).toEqual({
          address: BOB,
          state: 'delivered',
          attempts: before.length + 1,
          ...(before.length ? { lastError: failure } : {}),
          result: outcome({ status: '2.0.0', reply: '250 ok' }),
        });
        const deferred = await bobAfter(...before, 'defer');
        expect(deferred.bob).toEqual({ address: BOB, state: 'deferred', attempts: before.length + 1, lastError: failure, nextAttempt: 7000 });
        const bounced = await bobAfter(...before, 'bounce');
        const permanent = outcome({ status: '5.1.1', reply: '550 no such user' });
        expect(bounced.bob).toEqual({ address: BOB, state: 'bounced', attempts: before.length + 1, lastError: permanent, result: permanent });
        const expired = await bobAfter(...before, 'expire');
        expect(expired.bob).toEqual({ address: BOB, state: 'bounced', attempts: before.length + 1, lastError: failure, result: { ...failure, status: '4.4.7', expired: true } });
        // The other recipient is untouched.
        expect(expired.message.recipients[1]).toEqual({ address: 'carol@receiver.test', state: 'pending', attempts: 0 });
      }
    });

    it('refuses any outcome for a delivered or bounced recipient', async () => {
      for (const final of ['deliver', 'bounce', 'expire'] as const) {
        for (const step of ['deliver', 'defer', 'bounce', 'expire'] as const) {
          const { queue, message, bob } = await bobAfter(final);
          const before = structuredClone(bob);
          expect(() => apply(queue, message.queueId, step), `${final} then ${step}`).toThrow(IllegalTransitionError);
          expect(bob).toEqual(before);
        }
      }
      const { queue, message } = await bobAfter('deliver');
      expect(() => apply(queue, message.queueId, 'defer')).toThrow('invalid state change of <bob@receiver.test> delivered -> deferred');
      const bounced = await bobAfter('bounce');
      expect(() => apply(bounced.queue, bounced.message.queueId, 'deliver')).toThrow('invalid state change of <bob@receiver.test> bounced -> delivered');
    });

    it('refuses outcomes outside an attempt, and for unknown recipients or messages', async () => {
      const queue = await openQueue();
      const message = await queue.enqueue(input());
      expect(() => queue.deliverRecipient(message.queueId, BOB, failure)).toThrow(new IllegalTransitionError(message.queueId, BOB, 'incoming', 'delivered'));
      expect(message.recipients[0]).toEqual({ address: BOB, state: 'pending', attempts: 0 });
      await queue.activate(message.queueId);
      expect(() => queue.deferRecipient(message.queueId, 'eve@receiver.test', failure, 1)).toThrow(new QueueError('no-such-recipient', message.queueId, '<eve@receiver.test> is not a recipient'));
      expect(() => queue.deferRecipient(message.queueId, 'eve@receiver.test', failure, 1)).toThrow(expect.objectContaining({ name: 'QueueError', kind: 'no-such-recipient' }));
      expect(() => queue.bounceRecipient('NOPE', BOB, failure)).toThrow(expect.objectContaining({ kind: 'no-such-message' }));
      queue.deferRecipient(message.queueId, BOB, failure, 1);
      queue.deferRecipient(message.queueId, 'carol@receiver.test', failure, 1);
      await queue.settle(message.queueId);
      expect(() => queue.expireRecipient(message.queueId, BOB, failure)).toThrow(new IllegalTransitionError(message.queueId, BOB, 'deferred', 'bounced'));
    });
  });

  it('goes through the states with per-recipient outcomes, writing only what a restart needs', async () => {
    const queue = await openQueue();
    const message = await queue.enqueue(input());
    expect(message.state).toBe('incoming');
    expect(message.recipients.map((r) => [r.address, r.state, r.attempts])).toEqual([
      ['bob@receiver.test', 'pending', 0],
      ['carol@receiver.test', 'pending', 0],
    ]);
    await expect(queue.settle(message.queueId)).rejects.toThrow(/incoming -> deferred/);

    // Activation is in memory only.
    await queue.activate(message.queueId);
    expect(message.state).toBe('active');
    expect(await files('env')).toEqual([]);
    expect((await queueFile(message.queueId)).envelope.state).toBe('incoming');

    queue.deliverRecipient(message.queueId, 'bob@receiver.test', outcome({ status: '2.0.0', reply: '250 ok' }));
    queue.deferRecipient(message.queueId, 'carol@receiver.test', outcome(), 5000);
    await queue.settle(message.queueId);
    expect(message.state).toBe('deferred');
    expect(message.nextAttempt).toBe(5000);
    // Deferral is written: the envelope file, which overrides the envelope line.
    expect(JSON.parse(await fs.readFile(path.join(dir, 'env', `${message.queueId}.json`), 'utf8'))).toMatchObject({ state: 'deferred', nextAttempt: 5000 });

    await expect(queue.activate('NOPE')).rejects.toThrow(new QueueError('no-such-message', 'NOPE', 'no such message'));
    await queue.activate(message.queueId);
    queue.bounceRecipient(message.queueId, 'carol@receiver.test', outcome({ status: '5.1.1', reply: '550 no' }));
    await queue.settle(message.queueId);
    expect(message.state).toBe('done');
    expect(message.attempts).toBe(2);
    expect(message.doneAt).toBeTypeOf('number');
    expect(queue.pending()).toHaveLength(0);
    expect(queue.get(message.queueId)?.state).toBe('done');
    // Done: no file left at all, and no done directory.
    expect(await files('msg')).toEqual([]);
    expect(await files('env')).toEqual([]);
    expect(await fs.readdir(dir)).not.toContain('done');
    await expect(queue.readMessage(message.queueId)).rejects.toThrow();
    await expect(queue.activate(message.queueId)).rejects.toThrow(`queue ${message.queueId}: message is done`);
    await expect(queue.activate(message.queueId)).rejects.toMatchObject({ kind: 'message-done' });
    await expect(queue.save(message.queueId)).rejects.toThrow(/done/);
  });
});

describe('hold, release and remove (postsuper -h, -H, -d)', () => {
  it('holds an incoming message durably: a new instance finds it held, and release makes it deferred, due then', async () => {
    const queue = await openQueue({ now: () => 1000 });
    const { queueId } = await queue.enqueue(input());
    const held = await queue.hold(queueId);
    expect(held).toMatchObject({ state: 'hold' });
    expect(held.nextAttempt).toBeUndefined();
    expect(JSON.parse(await fs.readFile(queue.envelopePath(queueId), 'utf8'))).toMatchObject({ queueId, state: 'hold' });

    const reopened = new MailQueue(dir, { fsync: true, now: () => 2000 });
    const report = await reopened.open();
    expect(report).toMatchObject({ queued: [queueId], requeued: [], broken: [] });
    expect(reopened.get(queueId)).toMatchObject({ state: 'hold' });
    // Held is no attempt: the message cannot be activated until released.
    await expect(reopened.activate(queueId)).rejects.toBeInstanceOf(IllegalTransitionError);

    expect(await reopened.release(queueId, 2500)).toMatchObject({ state: 'deferred', nextAttempt: 2500 });
    const again = new MailQueue(dir, { fsync: true });
    await again.open();
    expect(again.get(queueId)).toMatchObject({ state: 'deferred', nextAttempt: 2500 });
  });

  it('holds a deferred message keeping its recipients\' progress, and refuses to hold an active one or release one not held', async () => {
    const queue = await openQueue();
    const { queueId } = await queue.enqueue(input());
    await queue.activate(queueId);
    await expect(queue.hold(queueId)).rejects.toMatchObject({ name: 'IllegalTransitionError', from: 'active', to: 'hold' });
    queue.deliverRecipient(queueId, 'bob@receiver.test', outcome({ status: '2.0.0' }));
    queue.deferRecipient(queueId, 'carol@receiver.test', outcome(), 5000);
    await queue.settle(queueId);
    const held = await queue.hold(queueId);
    expect(held.recipients.map((r) => r.state)).toEqual(['delivered', 'deferred']);
    await expect(queue.release((await queue.enqueue(input({ messageId: '<m2@sender.test>' }))).queueId)).rejects.toMatchObject({ from: 'incoming', to: 'deferred' });
  });

  it('removes a message that is not being delivered: its files go, its record is forgotten, a new instance has none', async () => {
    const queue = await openQueue();
    const deferred = await queue.enqueue(input());
    await queue.activate(deferred.queueId);
    await expect(queue.remove(deferred.queueId)).rejects.toMatchObject({ kind: 'illegal-transition', queueId: deferred.queueId });
    queue.deferRecipient(deferred.queueId, 'bob@receiver.test', outcome(), 5000);
    queue.deferRecipient(deferred.queueId, 'carol@receiver.test', outcome(), 5000);
    await queue.settle(deferred.queueId);
    const held = await queue.enqueue(input({ messageId: '<m2@sender.test>' }));
    await queue.hold(held.queueId);
    await queue.remove(deferred.queueId);
    await queue.remove(held.queueId);
    expect(queue.get(deferred.queueId)).toBeUndefined();
    expect(queue.pending()).toEqual([]);
    expect(await files('msg')).toEqual([]);
    expect(await files('env')).toEqual([]);
    await expect(queue.remove(held.queueId)).rejects.toMatchObject({ kind: 'no-such-message' });
    const reopened = new MailQueue(dir, { fsync: true });
    expect((await reopened.open()).queued).toEqual([]);
  });
});

describe('abandoning an attempt', () => {
  it('puts an active message back to deferred, due at the given time, in memory only; leaves others as they are', async () => {
    const queue = await openQueue();
    const message = await queue.enqueue(input());
    expect(queue.abandonAttempt(message.queueId, 1234)).toBe(message);
    expect(message.state).toBe('incoming');
    expect(message.nextAttempt).toBeUndefined();
    await queue.activate(message.queueId);
    queue.abandonAttempt(message.queueId, 1234);
    expect(message).toMatchObject({ state: 'deferred', nextAttempt: 1234, attempts: 0 });
    expect(await files('env')).toEqual([]);
    // From there the message is tried again as usual.
    await queue.activate(message.queueId);
    expect(message.state).toBe('active');
    expect(message.nextAttempt).toBeUndefined();
    expect(() => queue.abandonAttempt('NOPE', 1)).toThrow(expect.objectContaining({ kind: 'no-such-message' }));
  });
});

describe('enqueue', () => {
  it('writes one file: the envelope as one line of JSON, then the message; no envelope file', async () => {
    const queue = await openQueue();
    const data = input().data;
    const message = await queue.enqueue(input());
    expect(await files('msg')).toEqual([`${message.queueId}.eml`]);
    expect(await files('env')).toEqual([]);
    const file = await fs.readFile(path.join(dir, 'msg', `${message.queueId}.eml`));
    expect(file.subarray(file.indexOf(0x0a) + 1).equals(data)).toBe(true);
    const { envelope } = await queueFile(message.queueId);
    expect(envelope).toEqual(JSON.parse(JSON.stringify(message)));
    expect(envelope).toMatchObject({ queueId: message.queueId, from: 'alice@sender.test', state: 'incoming', messageId: '<m1@sender.test>', size: data.length });
    expect((await queue.readMessage(message.queueId)).equals(data)).toBe(true);
  });

  it('starts the file with exactly the envelope and one line end; keeps what a bounce refers to', async () => {
    const queue = await openQueue();
    const message = await queue.enqueue(input({ dsnFor: 'ORIGINAL', from: '' }));
    expect(message.dsnFor).toBe('ORIGINAL');
    const file = await fs.readFile(queue.messagePath(message.queueId));
    expect(file.equals(Buffer.concat([Buffer.from(`${JSON.stringify(message)}\n`), input().data]))).toBe(true);
    expect(JSON.parse(file.subarray(0, file.indexOf(0x0a)).toString())).toMatchObject({ dsnFor: 'ORIGINAL', from: '' });
  });

  it('keeps the envelope on one line whatever the addresses and origin contain', async () => {
    const queue = await openQueue();
    const message = await queue.enqueue(input({ from: 'we\nird@sender.test', origin: { kind: 'smtp', helo: 'a\r\nb\u2028c' } }));
    const { envelope, data } = await queueFile(message.queueId);
    expect(envelope).toMatchObject({ from: 'we\nird@sender.test', origin: { helo: 'a\r\nb\u2028c' } });
    expect(data.equals(input().data)).toBe(true);
  });

  it('refuses a queue id in use and a message without recipients', async () => {
    const queue = await openQueue();
    const message = await queue.enqueue(input());
    await expect(queue.enqueue(input({ queueId: message.queueId }))).rejects.toThrow(new QueueError('queue-id-in-use', message.queueId, 'the queue id is already in use'));
    await expect(queue.enqueue(input({ queueId: 'EMPTY', to: [] }))).rejects.toThrow('queue EMPTY: a message needs at least one recipient');
    await expect(queue.enqueue(input({ to: [] }))).rejects.toMatchObject({ name: 'QueueError', kind: 'no-recipients' });
    expect(await files('msg')).toEqual([`${message.queueId}.eml`]);
  });
});

describe('reading messages', () => {
  it('serves a fresh message from memory, then from its file once it has been deferred', async () => {
    const queue = await openQueue();
    const message = await queue.enqueue(input({ to: ['bob@receiver.test'] }));
    // Change the file behind the queue's back: the first read does not look at it.
    const { envelope } = await queueFile(message.queueId);
    await fs.writeFile(queue.messagePath(message.queueId), `${JSON.stringify(envelope)}\nSubject: from the file\r\n\r\n`);
    expect((await queue.readMessage(message.queueId)).equals(input().data)).toBe(true);

    await queue.activate(message.queueId);
    queue.deferRecipient(message.queueId, 'bob@receiver.test', outcome(), 5000);
    await queue.settle(message.queueId);
    expect((await queue.readMessage(message.queueId)).toString()).toBe('Subject: from the file\r\n\r\n');
  });

  it('keeps no more than the cache budget in memory, dropping the oldest first', async () => {
    const size = input().data.length;
    const queue = await openQueue({ cacheBytes: 2 * size });
    const [first, second, third] = [await queue.enqueue(input()), await queue.enqueue(input()), await queue.enqueue(input())];
    for (const m of [first!, second!, third!]) await fs.writeFile(queue.messagePath(m.queueId), '{}\nfrom the file');
    expect((await queue.readMessage(first!.queueId)).toString()).toBe('from the file');
    expect((await queue.readMessage(second!.queueId)).equals(input().data)).toBe(true);
    expect((await queue.readMessage(third!.queueId)).equals(input().data)).toBe(true);

    // Exactly the budget still fits.
    const exact = new MailQueue(path.join(dir, 'exact'), { fsync: false, cacheBytes: size });
    await exact.open();
    const fits = await exact.enqueue(input());
    await fs.writeFile(exact.messagePath(fits.queueId), '{}\nfrom the file');
    expect((await exact.readMessage(fits.queueId)).equals(input().data)).toBe(true);

    const small = new MailQueue(path.join(dir, 'small'), { fsync: false, cacheBytes: size - 1 });
    await small.open();
    const big = await small.enqueue(input());
    await fs.writeFile(small.messagePath(big.queueId), '{}\nfrom the file');
    expect((await small.readMessage(big.queueId)).toString()).toBe('from the file');
  });

  it('gives the memory of a deferred message back to the budget', async () => {
    const size = input().data.length;
    const queue = await openQueue({ cacheBytes: 2 * size });
    const first = await queue.enqueue(input({ to: ['bob@receiver.test'] }));
    const second = await queue.enqueue(input());
    await queue.activate(first.queueId);
    queue.deferRecipient(first.queueId, 'bob@receiver.test', outcome(), 5000);
    await queue.settle(first.queueId);
    // first's bytes are out of the cache: a third message fits beside the second, which stays in memory.
    const third = await queue.enqueue(input());
    for (const m of [second, third]) await fs.writeFile(queue.messagePath(m.queueId), '{}\nfrom the file');
    expect((await queue.readMessage(second.queueId)).equals(input().data)).toBe(true);
    expect((await queue.readMessage(third.queueId)).equals(input().data)).toBe(true);
  });

  it('fails to read a message file without an envelope line', async () => {
    const queue = await openQueue({ cacheBytes: 0 });
    const message = await queue.enqueue(input());
    await fs.writeFile(queue.messagePath(message.queueId), 'no line end');
    await expect(queue.readMessage(message.queueId)).rejects.toThrow(new QueueError('no-envelope-line', message.queueId, 'the message file has no envelope line'));
    // A line end first of all: an empty envelope line, and the message after it.
    await fs.writeFile(queue.messagePath(message.queueId), '\nbody');
    expect((await queue.readMessage(message.queueId)).toString()).toBe('body');
  });
});

describe('durability', () => {
  it('a new instance finds a message from its message file alone (incoming, due now)', async () => {
    const queue = await openQueue();
    const message = await queue.enqueue(input());

    const again = new MailQueue(dir, { fsync: true });
    const report = await again.open();
    expect(report).toEqual({ queued: [message.queueId], requeued: [], broken: [] });
    const recovered = again.get(message.queueId)!;
    expect(recovered).toMatchObject({ state: 'incoming', from: 'alice@sender.test', messageId: '<m1@sender.test>', recipients: [{ state: 'pending' }, { state: 'pending' }] });
    expect(recovered.nextAttempt).toBeUndefined();
    // Read from the file (a new instance has nothing in memory), without the envelope line.
    expect((await again.readMessage(message.queueId)).equals(input().data)).toBe(true);
    // And it goes on as usual.
    await again.activate(message.queueId);
    for (const r of recovered.recipients) again.deliverRecipient(message.queueId, r.address, outcome({ status: '2.0.0' }));
    await again.settle(message.queueId);
    expect(await files('msg')).toEqual([]);
  });

  it('an activation that was never saved is recovered as what is on disk (incoming)', async () => {
    const queue = await openQueue();
    const message = await queue.enqueue(input());
    await queue.activate(message.queueId);

    const again = new MailQueue(dir, { fsync: true });
    const report = await again.open();
    expect(report).toMatchObject({ queued: [message.queueId], requeued: [] });
    expect(again.get(message.queueId)?.state).toBe('incoming');
  });

  it('puts an interrupted (active) message back to deferred, due now, keeping recipient progress', async () => {
    const queue = await openQueue();
    const message = await queue.enqueue(input());
    await queue.activate(message.queueId);
    queue.deliverRecipient(message.queueId, 'bob@receiver.test', outcome({ status: '2.0.0' }));
    await queue.save(message.queueId);

    const before = Date.now();
    const again = new MailQueue(dir, { fsync: true });
    const report = await again.open();
    expect(report).toEqual({ queued: [message.queueId], requeued: [message.queueId], broken: [] });
    const recovered = again.get(message.queueId)!;
    expect(recovered.state).toBe('deferred');
    expect(recovered.nextAttempt).toBeGreaterThanOrEqual(before);
    expect(recovered.recipients.map((r) => r.state)).toEqual(['delivered', 'pending']);
    expect((await again.readMessage(message.queueId)).equals(input().data)).toBe(true);
    // Nothing was written for it: active on disk means the same (due now) to every later recovery.
    expect(JSON.parse(await fs.readFile(path.join(dir, 'env', `${message.queueId}.json`), 'utf8')).state).toBe('active');
    // Done from there removes the envelope file too.
    await again.activate(message.queueId);
    again.deliverRecipient(message.queueId, 'carol@receiver.test', outcome({ status: '2.0.0' }));
    await again.settle(message.queueId);
    expect(await files('env')).toEqual([]);
    expect(await files('msg')).toEqual([]);
  });

  it('recovers a deferred message from its envelope file, which overrides the envelope line', async () => {
    const queue = await openQueue();
    const message = await queue.enqueue(input());
    await queue.activate(message.queueId);
    queue.bounceRecipient(message.queueId, 'bob@receiver.test', outcome({ status: '5.1.1', reply: '550 no' }));
    queue.deferRecipient(message.queueId, 'carol@receiver.test', outcome(), 9_000_000_000_000);
    await queue.settle(message.queueId);

    const again = new MailQueue(dir, { fsync: true });
    const report = await again.open();
    expect(report).toEqual({ queued: [message.queueId], requeued: [], broken: [] });
    expect(again.get(message.queueId)).toMatchObject({
      state: 'deferred',
      attempts: 1,
      nextAttempt: 9_000_000_000_000,
      recipients: [{ state: 'bounced' }, { state: 'deferred', nextAttempt: 9_000_000_000_000, lastError: { reply: '451 later' } }],
    });
  });

  it('plans a deferred message for the earliest of its recipients, and counts only attempts made', async () => {
    const queue = await openQueue();
    const message = await queue.enqueue(input({ to: ['a@r.test', 'b@r.test', 'c@r.test'] }));
    await queue.activate(message.queueId);
    queue.deferRecipient(message.queueId, 'a@r.test', outcome(), 9000);
    queue.deferRecipient(message.queueId, 'b@r.test', outcome(), 7000);
    queue.deliverRecipient(message.queueId, 'c@r.test', outcome({ status: '2.0.0' }));
    await queue.settle(message.queueId);
    expect(message).toMatchObject({ state: 'deferred', nextAttempt: 7000, attempts: 1 });
    await queue.activate(message.queueId);
    await queue.settle(message.queueId, { attempted: false });
    expect(message).toMatchObject({ state: 'deferred', attempts: 1 });
  });

  it('recovers more messages than one batch reads at once, each once, oldest first', async () => {
    const queue = await openQueue({ fsync: false });
    const ids: string[] = [];
    for (let i = 0; i < 70; i++) ids.push((await queue.enqueue(input({ queueId: newQueueId(1_700_000_000_000 + ((i * 37) % 70)) }))).queueId);
    const again = new MailQueue(dir, { fsync: false });
    const report = await again.open();
    expect(report.queued).toEqual([...ids].sort());
    expect(again.pending().map((m) => m.queueId)).toEqual([...ids].sort());
  });

  it('reads envelope lines of any length, wherever the line end falls in its 16 KiB chunks', async () => {
    const queue = await openQueue({ fsync: false });
    const sizes = [16 * 1024 - 1, 16 * 1024, 16 * 1024 + 1, 40_000];
    const helos = new Map<string, string>();
    for (const size of sizes) {
      // The HELO pads the envelope line to exactly `size` bytes (queue ids of one length: the rest is the same).
      const probe = await queue.enqueue(input({ queueId: `P${size}`, origin: { kind: 'smtp', helo: '' } }));
      const base = (await fs.readFile(queue.messagePath(probe.queueId))).indexOf(0x0a);
      const helo = 'h'.repeat(size - base);
      const message = await queue.enqueue(input({ queueId: `L${size}`, origin: { kind: 'smtp', helo } }));
      helos.set(message.queueId, helo);
      expect((await fs.readFile(queue.messagePath(message.queueId))).indexOf(0x0a)).toBe(size);
    }
    const again = new MailQueue(dir, { fsync: false });
    const report = await again.open();
    expect(report.broken).toEqual([]);
    for (const [queueId, helo] of helos) {
      expect(again.get(queueId)?.origin.helo).toBe(helo);
      expect((await again.readMessage(queueId)).equals(input().data)).toBe(true);
    }
  });

  it('closes every file it opened while recovering', async () => {
    const queue = await openQueue();
    for (let i = 0; i < 3; i++) await queue.enqueue(input());
    await fs.writeFile(path.join(dir, 'msg', 'NOLINE.eml'), 'x');
    const rec = recordingFileSystem();
    await new MailQueue(dir, { fsync: true, fs: rec.fs }).open();
    const opened = rec.find('open').map((e) => e.path);
    expect(opened).toHaveLength(4);
    expect(rec.find('close').map((e) => e.path).sort()).toEqual([...opened].sort());
  });

  it('lists recovered messages oldest first', async () => {
    const queue = await openQueue();
    const ids = [newQueueId(1_700_000_000_002), newQueueId(1_700_000_000_000), newQueueId(1_700_000_000_001)];
    for (const queueId of ids) await queue.enqueue(input({ queueId }));
    const again = new MailQueue(dir, { fsync: true });
    await again.open();
    expect(again.pending().map((m) => m.queueId)).toEqual([...ids].sort());
  });

  it('removes temp files left by interrupted writes', async () => {
    const queue = await openQueue();
    const kept = await queue.enqueue(input());
    await fs.writeFile(path.join(dir, 'msg', 'X.eml.tmp-1-abc'), '{"queueId":"X"}\npartial');
    await fs.writeFile(path.join(dir, 'env', 'Y.json.tmp-1-abc'), '{');

    const again = new MailQueue(dir, { fsync: true });
    const report = await again.open();
    expect(report).toEqual({ queued: [kept.queueId], requeued: [], broken: [] });
    expect(await files('msg')).toEqual([`${kept.queueId}.eml`]);
    expect(await files('env')).toEqual([]);
  });

  it('sets aside as .broken a message file without a valid envelope line, and an envelope unreadable or without its message file', async () => {
    const queue = await openQueue();
    const good = await queue.enqueue(input());
    const noMessage = await queue.enqueue(input());
    const badEnvelope = await queue.enqueue(input());
    const otherId = await queue.enqueue(input());
    await queue.activate(noMessage.queueId);
    await queue.save(noMessage.queueId);
    await fs.unlink(path.join(dir, 'msg', `${noMessage.queueId}.eml`));
    await fs.writeFile(path.join(dir, 'env', `${badEnvelope.queueId}.json`), 'not json');
    // An envelope line of another message.
    await fs.writeFile(path.join(dir, 'msg', `${otherId.queueId}.eml`), `${JSON.stringify({ ...otherId, queueId: good.queueId })}\nSubject: x\r\n\r\n`);
    // A message file in the old layout (no envelope line), and one without any line end.
    await fs.writeFile(path.join(dir, 'msg', 'OLDLAYOUT.eml'), 'Subject: hi\r\n\r\nhello\r\n');
    await fs.writeFile(path.join(dir, 'msg', 'NOLINE.eml'), 'x');
    await fs.writeFile(path.join(dir, 'msg', 'NOTQUEUED.eml'), '{"queueId":"NOTQUEUED","from":"","recipients":[],"state":"done"}\nx');
    // Envelope lines that are JSON but not an envelope: null, a number, no recipient list, no sender, no state.
    await fs.writeFile(path.join(dir, 'msg', 'NULL.eml'), 'null\nx');
    await fs.writeFile(path.join(dir, 'msg', 'NUMBER.eml'), '42\nx');
    await fs.writeFile(path.join(dir, 'msg', 'NORCPT.eml'), '{"queueId":"NORCPT","from":"","state":"incoming"}\nx');
    await fs.writeFile(path.join(dir, 'msg', 'NOFROM.eml'), '{"queueId":"NOFROM","recipients":[],"state":"incoming"}\nx');
    await fs.writeFile(path.join(dir, 'msg', 'NOSTATE.eml'), '{"queueId":"NOSTATE","from":"","recipients":[]}\nx');
    // A message "file" that cannot be read at all.
    await fs.mkdir(path.join(dir, 'msg', 'UNREADABLE.eml'));

    const again = new MailQueue(dir, { fsync: true });
    const report = await again.open();
    expect(report.queued).toEqual([good.queueId]);
    const unusable = ['NOLINE', 'NOTQUEUED', 'OLDLAYOUT', 'NULL', 'NUMBER', 'NORCPT', 'NOFROM', 'NOSTATE', 'UNREADABLE'];
    expect(report.broken.sort()).toEqual([...unusable, badEnvelope.queueId, noMessage.queueId, otherId.queueId].sort());
    expect(again.pending().map((m) => m.queueId)).toEqual([good.queueId]);
    expect(await files('msg')).toEqual([`${good.queueId}.eml`, ...unusable.map((id) => `${id}.broken`), `${badEnvelope.queueId}.broken`, `${otherId.queueId}.broken`].sort());
    expect(await files('env')).toEqual([`${badEnvelope.queueId}.broken`, `${noMessage.queueId}.broken`].sort());

    // Set aside, they are left alone from then on.
    const third = new MailQueue(dir, { fsync: true });
    expect(await third.open()).toEqual({ queued: [good.queueId], requeued: [], broken: [] });
  });

  it('keeps finished messages in memory only, the newest keepDone of them', async () => {
    const queue = await openQueue({ keepDone: 2 });
    const finished: string[] = [];
    for (let i = 0; i < 3; i++) {
      const message = await queue.enqueue(input({ to: ['bob@receiver.test'] }));
      await queue.activate(message.queueId);
      queue.deliverRecipient(message.queueId, 'bob@receiver.test', outcome({ status: '2.0.0' }));
      await queue.settle(message.queueId);
      finished.push(message.queueId);
    }
    const waiting = await queue.enqueue(input());
    expect(queue.list().map((m) => m.queueId)).toEqual([waiting.queueId, finished[1], finished[2]]);
    expect(queue.get(finished[0]!)).toBeUndefined();
    expect(queue.get(finished[2]!)).toMatchObject({ state: 'done', recipients: [{ state: 'delivered' }] });
    expect(await files('msg')).toEqual([`${waiting.queueId}.eml`]);
    expect(await fs.readdir(dir)).not.toContain('done');

    const again = new MailQueue(dir, { fsync: true });
    await again.open();
    expect(again.list().map((m) => m.queueId)).toEqual([waiting.queueId]);
    expect(again.get(finished[2]!)).toBeUndefined();
  });

  it('delivers again a finished message whose removal a crash undid (at least once)', async () => {
    const queue = await openQueue();
    const message = await queue.enqueue(input({ to: ['bob@receiver.test'] }));
    const copy = await fs.readFile(queue.messagePath(message.queueId));
    await queue.activate(message.queueId);
    queue.deliverRecipient(message.queueId, 'bob@receiver.test', outcome({ status: '2.0.0' }));
    await queue.settle(message.queueId);
    await fs.writeFile(queue.messagePath(message.queueId), copy);

    const again = new MailQueue(dir, { fsync: true });
    expect(await again.open()).toMatchObject({ queued: [message.queueId], broken: [] });
    expect(again.get(message.queueId)).toMatchObject({ state: 'incoming', recipients: [{ state: 'pending' }] });
  });

  it('ignores a done directory left by an older layout', async () => {
    await fs.mkdir(path.join(dir, 'done'));
    await fs.writeFile(path.join(dir, 'done', 'OLD.json'), JSON.stringify({ queueId: 'OLD', from: '', recipients: [], state: 'done' }));
    const queue = await openQueue();
    expect(queue.list()).toEqual([]);
    const message = await queue.enqueue(input());
    expect(queue.list().map((m) => m.queueId)).toEqual([message.queueId]);
  });
});

describe('durability, as the file operations show it', () => {
  /**
   * Asserts that before the mark `ack` (the moment the queue's caller may say 250), `file` was written to a temp file
   * whose data was synced, renamed to `file`, and its directory fsynced after the rename.
   */
  function expectDurableBefore(rec: RecordingFileSystem, file: string, ack: string): void {
    const acked = rec.find('mark', ack);
    expect(acked, `mark ${ack}`).toHaveLength(1);
    const renames = rec.find('rename').filter((e) => e.to === file);
    expect(renames, `renames to ${file}`).toHaveLength(1);
    const rename = renames[0]!;
    expect(rename.path.startsWith(`${file}.tmp-`)).toBe(true);
    const dataSynced = rec.log.filter((e) => e.path === rename.path && ((e.op === 'writeFile' && e.flushed) || e.op === 'sync'));
    expect(dataSynced.filter((e) => e.index < rename.index), `data of ${file} synced before its rename`).not.toEqual([]);
    const dirSynced = rec.find('sync').filter((e) => e.path === path.dirname(file) && e.index > rename.index);
    expect(dirSynced[0]?.index ?? Infinity, `directory of ${file} synced after the rename, before ${ack}`).toBeLessThan(acked[0]!.index);
    expect(rename.index).toBeLessThan(acked[0]!.index);
  }

  async function recordingQueue(options: Partial<MailQueueOptions> = {}) {
    const rec = recordingFileSystem();
    const queue = new MailQueue(dir, { fsync: true, fs: rec.fs, ...options });
    await queue.open();
    return { rec, queue };
  }

  it('enqueue resolves (the server may say 250) only after the message file was synced, renamed and its directory synced', async () => {
    const { rec, queue } = await recordingQueue();
    const message = await queue.enqueue(input());
    rec.mark('250');
    expectDurableBefore(rec, queue.messagePath(message.queueId), '250');
  });

  it('each of concurrent enqueues waits for a directory fsync after its own rename (group commit)', async () => {
    const { rec, queue } = await recordingQueue();
    const ids = await Promise.all(
      Array.from({ length: 5 }, () =>
        queue.enqueue(input()).then((m) => {
          rec.mark(m.queueId);
          return m.queueId;
        }),
      ),
    );
    for (const id of ids) expectDurableBefore(rec, queue.messagePath(id), id);
    // Shared: fewer directory fsyncs than messages would be fine, more than one per message is not.
    expect(rec.find('sync').filter((e) => e.path === queue.msgDir).length).toBeLessThanOrEqual(ids.length);
  });

  it('a deferral and a save resolve only after the envelope file is durable', async () => {
    const { rec, queue } = await recordingQueue();
    const message = await queue.enqueue(input());
    await queue.activate(message.queueId);
    queue.deliverRecipient(message.queueId, 'bob@receiver.test', outcome({ status: '2.0.0' }));
    await queue.save(message.queueId);
    rec.mark('saved');
    expectDurableBefore(rec, queue.envelopePath(message.queueId), 'saved');

    rec.log.length = 0;
    queue.deferRecipient(message.queueId, 'carol@receiver.test', outcome(), 5000);
    await queue.settle(message.queueId);
    rec.mark('deferred');
    expectDurableBefore(rec, queue.envelopePath(message.queueId), 'deferred');
  });

  it('removes a finished message envelope first, then its message file, without any fsync', async () => {
    const { rec, queue } = await recordingQueue();
    const message = await queue.enqueue(input({ to: ['bob@receiver.test'] }));
    await queue.activate(message.queueId);
    queue.deferRecipient(message.queueId, 'bob@receiver.test', outcome(), 1);
    await queue.settle(message.queueId);
    await queue.activate(message.queueId);
    queue.deliverRecipient(message.queueId, 'bob@receiver.test', outcome({ status: '2.0.0' }));
    rec.log.length = 0;
    await queue.settle(message.queueId);
    expect(rec.log.map((e) => [e.op, e.path])).toEqual([
      ['unlink', queue.envelopePath(message.queueId)],
      ['unlink', queue.messagePath(message.queueId)],
    ]);
  });

  it('removes a finished message that never had an envelope file by its message file alone', async () => {
    const { rec, queue } = await recordingQueue();
    const message = await queue.enqueue(input({ to: ['bob@receiver.test'] }));
    await queue.activate(message.queueId);
    queue.deliverRecipient(message.queueId, 'bob@receiver.test', outcome({ status: '2.0.0' }));
    rec.log.length = 0;
    await queue.settle(message.queueId);
    expect(rec.log.map((e) => [e.op, e.path])).toEqual([['unlink', queue.messagePath(message.queueId)]]);

    // Recovered without an envelope file: the same.
    const kept = await queue.enqueue(input({ to: ['bob@receiver.test'] }));
    const again = recordingFileSystem();
    const reopened = new MailQueue(dir, { fsync: true, fs: again.fs });
    await reopened.open();
    await reopened.activate(kept.queueId);
    reopened.deliverRecipient(kept.queueId, 'bob@receiver.test', outcome({ status: '2.0.0' }));
    again.log.length = 0;
    await reopened.settle(kept.queueId);
    expect(again.log.map((e) => [e.op, e.path])).toEqual([['unlink', reopened.messagePath(kept.queueId)]]);
  });

  it('fails a removal that fails for another reason than a missing file', async () => {
    const denied: FileSystem = new Proxy(defaultFileSystem, {
      get: (target, prop, receiver) =>
        prop === 'unlink' ? async () => Promise.reject(Object.assign(new Error('EACCES: permission denied'), { code: 'EACCES' })) : Reflect.get(target, prop, receiver),
    });
    const queue = await openQueue({ fs: denied });
    const message = await queue.enqueue(input({ to: ['bob@receiver.test'] }));
    await queue.activate(message.queueId);
    queue.deliverRecipient(message.queueId, 'bob@receiver.test', outcome({ status: '2.0.0' }));
    await expect(queue.settle(message.queueId)).rejects.toMatchObject({ code: 'EACCES' });
  });

  it('with fsync off (unsafe benchmarks), writes by a rename but syncs nothing', async () => {
    const { rec, queue } = await recordingQueue({ fsync: false });
    const message = await queue.enqueue(input());
    expect(rec.find('rename').map((e) => e.to)).toEqual([queue.messagePath(message.queueId)]);
    expect(rec.find('sync')).toEqual([]);
    expect(rec.log.filter((e) => e.flushed)).toEqual([]);
  });
});

describe('directory fsync (group commit)', () => {
  it('gives every caller an fsync that started after its call, shared by those that came meanwhile', async () => {
    const runs: { resolve: () => void; reject: (err: Error) => void }[] = [];
    const dirSync = new DirSync(() => new Promise<void>((resolve, reject) => runs.push({ resolve, reject })));
    const settled: string[] = [];
    const track = (name: string, p: Promise<void>) => p.then(() => settled.push(name), () => settled.push(`${name} failed`));

    const first = track('first', dirSync.sync());
    expect(runs).toHaveLength(1);
    // These come while the first fsync is under way (it may have started before their renames): they share the next.
    const second = track('second', dirSync.sync());
    const third = track('third', dirSync.sync());
    expect(runs).toHaveLength(1);

    runs[0]!.resolve();
    await first;
    expect(settled).toEqual(['first']);
    // The next fsync starts once the pending promise callbacks have run (no timer involved).
    await new Promise<void>((resolve) => setImmediate(resolve));
    expect(runs).toHaveLength(2);
    expect(settled).toEqual(['first']);
    runs[1]!.reject(new Error('EIO'));
    await Promise.all([second, third]);
    expect(settled).toEqual(['first', 'second failed', 'third failed']);

    // A failure does not stick: the next caller gets a fresh fsync.
    const fourth = track('fourth', dirSync.sync());
    expect(runs).toHaveLength(3);
    runs[2]!.resolve();
    await fourth;
    expect(settled.at(-1)).toBe('fourth');
  });
});

describe('MAIL FROM parameters in the record (RFC 6152, RFC 6531)', () => {
  it('keeps them in the envelope line and through a restart, and on a deferral in the env file', async () => {
    const queue = await openQueue();
    const message = await queue.enqueue(input({ params: { body: '8BITMIME', smtputf8: true } }));
    expect((await queueFile(message.queueId)).envelope.params).toEqual({ body: '8BITMIME', smtputf8: true });
    const undeclared = await queue.enqueue(input({ params: { undeclared8bit: true } }));
    const plain = await queue.enqueue(input({ params: {} }));
    expect((await queueFile(plain.queueId)).envelope).not.toHaveProperty('params');
    await queue.activate(message.queueId);
    queue.deferRecipient(message.queueId, 'bob@receiver.test', outcome(), 10);
    queue.deferRecipient(message.queueId, 'carol@receiver.test', outcome(), 10);
    await queue.settle(message.queueId);
    const again = await openQueue();
    expect(again.get(message.queueId)!.params).toEqual({ body: '8BITMIME', smtputf8: true });
    expect(again.get(undeclared.queueId)!.params).toEqual({ undeclared8bit: true });
    expect(again.get(plain.queueId)!.params).toBeUndefined();
  });

  it('loads a record written before they were kept (no params) as it was, and drops unknown or invalid values', async () => {
    const queue = await openQueue();
    const old = await queue.enqueue(input());
    const odd = await queue.enqueue(input());
    // The envelope line exactly as the previous version wrote it: no `params` key at all.
    const { envelope, data } = await queueFile(old.queueId);
    expect(envelope).not.toHaveProperty('params');
    await fs.writeFile(queue.messagePath(old.queueId), Buffer.concat([Buffer.from(`${JSON.stringify(envelope)}\n`), data]));
    const oddEnvelope = { ...(await queueFile(odd.queueId)).envelope, params: { body: 'BINARYMIME', smtputf8: 'yes', undeclared8bit: true, future: 1 } };
    await fs.writeFile(queue.messagePath(odd.queueId), Buffer.concat([Buffer.from(`${JSON.stringify(oddEnvelope)}\n`), data]));
    const again = new MailQueue(dir, { fsync: true });
    const report = await again.open();
    expect(report.broken).toEqual([]);
    expect(report.queued.sort()).toEqual([old.queueId, odd.queueId].sort());
    expect(again.get(old.queueId)).toMatchObject({ from: 'alice@sender.test', state: 'incoming' });
    expect(again.get(old.queueId)!.params).toBeUndefined();
    expect(again.get(odd.queueId)!.params).toEqual({ undeclared8bit: true });
  });
});
