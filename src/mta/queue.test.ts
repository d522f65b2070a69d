import { promises as fs } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { checkTransition, MailQueue, newQueueId, type EnqueueInput } from './queue.js';

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

async function openQueue(): Promise<MailQueue> {
  const queue = new MailQueue(dir, { fsync: true });
  await queue.open();
  return queue;
}

describe('queue ids', () => {
  it('are upper-case hex, unique and ordered by time', () => {
    const ids = Array.from({ length: 1000 }, () => newQueueId(1_700_000_000_000));
    expect(new Set(ids).size).toBe(1000);
    for (const id of ids) expect(id).toMatch(/^[0-9A-F]{18}$/);
    expect(newQueueId(1_700_000_000_000) < newQueueId(1_700_000_000_001)).toBe(true);
  });
});

describe('state machine', () => {
  it('allows only incoming → active → deferred ↔ active → done', () => {
    expect(() => checkTransition('Q', 'incoming', 'active')).not.toThrow();
    expect(() => checkTransition('Q', 'active', 'deferred')).not.toThrow();
    expect(() => checkTransition('Q', 'deferred', 'active')).not.toThrow();
    expect(() => checkTransition('Q', 'active', 'done')).not.toThrow();
    expect(() => checkTransition('Q', 'incoming', 'done')).toThrow(/incoming -> done/);
    expect(() => checkTransition('Q', 'deferred', 'done')).toThrow();
    expect(() => checkTransition('Q', 'done', 'active')).toThrow();
  });

  it('goes through the states with per-recipient outcomes', async () => {
    const queue = await openQueue();
    const message = await queue.enqueue(input());
    expect(message.state).toBe('incoming');
    expect(message.recipients.map((r) => [r.address, r.state, r.attempts])).toEqual([
      ['bob@receiver.test', 'pending', 0],
      ['carol@receiver.test', 'pending', 0],
    ]);
    await expect(queue.settle(message.queueId)).rejects.toThrow(/incoming -> deferred/);

    await queue.activate(message.queueId);
    const [bob, carol] = message.recipients;
    bob!.state = 'delivered';
    bob!.attempts = 1;
    carol!.state = 'deferred';
    carol!.attempts = 1;
    carol!.nextAttempt = 5000;
    carol!.lastError = { description: 'mx said 451', hop: 'a -> b', status: '4.0.0', reply: '451 later', at: 1 };
    await queue.settle(message.queueId);
    expect(message.state).toBe('deferred');
    expect(message.nextAttempt).toBe(5000);

    await expect(queue.activate('NOPE')).rejects.toThrow(/no such message/);
    await queue.activate(message.queueId);
    carol!.state = 'bounced';
    await queue.settle(message.queueId);
    expect(message.state).toBe('done');
    expect(queue.pending()).toHaveLength(0);
    expect(queue.get(message.queueId)?.state).toBe('done');
    await expect(fs.access(queue.messagePath(message.queueId))).rejects.toThrow();
    await expect(queue.activate(message.queueId)).rejects.toThrow(/done/);
  });
});

describe('durability', () => {
  it('writes the message before its envelope, and a new instance finds both', async () => {
    const queue = await openQueue();
    const message = await queue.enqueue(input());
    const data = await fs.readFile(path.join(dir, 'msg', `${message.queueId}.eml`), 'utf8');
    expect(data).toContain('hello');
    const envelope = JSON.parse(await fs.readFile(path.join(dir, 'env', `${message.queueId}.json`), 'utf8'));
    expect(envelope).toMatchObject({ queueId: message.queueId, from: 'alice@sender.test', state: 'incoming', messageId: '<m1@sender.test>' });

    const again = new MailQueue(dir, { fsync: true });
    const report = await again.open();
    expect(report).toEqual({ queued: [message.queueId], orphansRemoved: [], requeued: [], broken: [] });
    expect(again.get(message.queueId)).toMatchObject({ state: 'incoming', recipients: [{ state: 'pending' }, { state: 'pending' }] });
    expect((await again.readMessage(message.queueId)).toString()).toContain('hello');
  });

  it('puts an interrupted (active) message back to deferred, due now, keeping recipient progress', async () => {
    const queue = await openQueue();
    const message = await queue.enqueue(input());
    await queue.activate(message.queueId);
    message.recipients[0]!.state = 'delivered';
    await queue.save(message.queueId);

    const before = Date.now();
    const again = new MailQueue(dir, { fsync: true });
    const report = await again.open();
    expect(report.requeued).toEqual([message.queueId]);
    const recovered = again.get(message.queueId)!;
    expect(recovered.state).toBe('deferred');
    expect(recovered.nextAttempt).toBeGreaterThanOrEqual(before);
    expect(recovered.recipients.map((r) => r.state)).toEqual(['delivered', 'pending']);
    // And it is persisted as deferred.
    const envelope = JSON.parse(await fs.readFile(path.join(dir, 'env', `${message.queueId}.json`), 'utf8'));
    expect(envelope.state).toBe('deferred');
  });

  it('removes orphaned message files (crash before the envelope) and temp files', async () => {
    const queue = await openQueue();
    const kept = await queue.enqueue(input());
    await fs.writeFile(path.join(dir, 'msg', 'ORPHAN0001.eml'), 'Subject: never acknowledged\r\n\r\n');
    await fs.writeFile(path.join(dir, 'msg', 'X.eml.tmp-1-abc'), 'partial');
    await fs.writeFile(path.join(dir, 'env', 'Y.json.tmp-1-abc'), '{');

    const again = new MailQueue(dir, { fsync: true });
    const report = await again.open();
    expect(report.orphansRemoved).toEqual(['ORPHAN0001']);
    expect(report.queued).toEqual([kept.queueId]);
    expect((await fs.readdir(path.join(dir, 'msg'))).sort()).toEqual([`${kept.queueId}.eml`]);
    expect(await fs.readdir(path.join(dir, 'env'))).toEqual([`${kept.queueId}.json`]);
  });

  it('sets aside an envelope whose message file is missing or unreadable', async () => {
    const queue = await openQueue();
    const message = await queue.enqueue(input());
    await fs.unlink(path.join(dir, 'msg', `${message.queueId}.eml`));
    await fs.writeFile(path.join(dir, 'env', 'BROKEN.json'), 'not json');
    await fs.writeFile(path.join(dir, 'msg', 'BROKEN.eml'), 'x');

    const again = new MailQueue(dir, { fsync: true });
    const report = await again.open();
    expect(report.broken.sort()).toEqual(['BROKEN', message.queueId].sort());
    expect(again.pending()).toHaveLength(0);
    expect((await fs.readdir(path.join(dir, 'env'))).sort()).toEqual(['BROKEN.broken', `${message.queueId}.broken`].sort());
  });

  it('keeps done records across restarts and finishes a half-completed done transition', async () => {
    const queue = await openQueue();
    const message = await queue.enqueue(input({ to: ['bob@receiver.test'] }));
    await queue.activate(message.queueId);
    message.recipients[0]!.state = 'delivered';
    // Simulate a crash after the done record was written but before env/msg were removed.
    const envFile = path.join(dir, 'env', `${message.queueId}.json`);
    const msgFile = path.join(dir, 'msg', `${message.queueId}.eml`);
    const envCopy = await fs.readFile(envFile);
    const msgCopy = await fs.readFile(msgFile);
    await queue.settle(message.queueId);
    await fs.writeFile(envFile, envCopy);
    await fs.writeFile(msgFile, msgCopy);

    const again = new MailQueue(dir, { fsync: true });
    const report = await again.open();
    expect(report.queued).toEqual([]);
    expect(report.orphansRemoved).toEqual([]);
    expect(again.get(message.queueId)).toMatchObject({ state: 'done', recipients: [{ state: 'delivered' }] });
    expect(again.list().map((m) => m.queueId)).toEqual([message.queueId]);
    expect(await fs.readdir(path.join(dir, 'env'))).toEqual([]);
    expect(await fs.readdir(path.join(dir, 'msg'))).toEqual([]);
  });
});
