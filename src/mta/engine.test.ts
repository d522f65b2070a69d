// The engine's record of an attempt with several destinations: each destination's outcome is recorded as it ends,
// and a recipient delivered while another destination is still under way is on disk before the attempt ends, so a
// crash then (a new queue opened on the same directory, as after SIGKILL) repeats only the open recipients.
import { promises as fs } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { EventLog } from '../shared/events.js';
import { defaultFileSystem, type FileSystem } from '../shared/fsutil.js';
import type { SendResult, SmtpEnvelope } from '../shared/smtp-client.js';
import type { MtaEvents } from './api.js';
import type { MailSender } from './delivery.js';
import { MtaEngine } from './engine.js';
import { MailQueue } from './queue.js';

const dirs: string[] = [];
afterEach(async () => {
  for (const dir of dirs.splice(0)) await fs.rm(dir, { recursive: true, force: true });
});

/** A sender that accepts every recipient, when `gate` lets it (at once without one). */
function sender(stage: 'data' | 'lmtp', gate?: Promise<void>): MailSender & { calls: string[][] } {
  const calls: string[][] = [];
  return {
    calls,
    async send(target, envelope: SmtpEnvelope): Promise<SendResult> {
      calls.push(envelope.to);
      await gate;
      return {
        target: `${target.host}:${target.port}`,
        recipients: envelope.to.map((address) => ({ address, accepted: true, code: 250, enhanced: '2.0.0', reply: '250 2.0.0 ok', stage, command: stage === 'lmtp' ? 'DATA' : 'DATA' })),
        accepted: envelope.to,
        rejected: [],
        stage,
        dataReply: '250 2.0.0 ok',
        reused: false,
        retried: false,
      };
    },
  };
}

async function engineOn(dir: string, smtp: MailSender, lmtp: MailSender, fsys: FileSystem = defaultFileSystem): Promise<{ engine: MtaEngine; queue: MailQueue; events: EventLog<MtaEvents> }> {
  const queue = new MailQueue(dir, { fsync: true, fs: fsys });
  const events = new EventLog<MtaEvents>('mta');
  const engine = new MtaEngine({
    config: { hostname: 'mta.sender.test', retry: { schedule: [60_000], maxLifetimeMs: 600_000 } },
    queue,
    events,
    delivery: {
      hostname: 'mta.sender.test',
      localDomains: ['sender.test'],
      localDelivery: { host: '127.0.0.1', port: 1 },
      relayPort: 25,
      lookupMx: async () => ({ kind: 'mx', hosts: [{ exchange: 'mx.receiver.test', priority: 10, addresses: ['127.0.0.1'] }] }),
      smtp,
      lmtp,
    },
  });
  await engine.start();
  return { engine, queue, events };
}

describe('MtaEngine: an attempt with several destinations', () => {
  it('writes a recipient delivered over LMTP to disk while the relay to the MX is still under way; a crash then repeats only the relay', async () => {
    const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'maillab-engine-'));
    dirs.push(dir);
    let release!: () => void;
    const gate = new Promise<void>((resolve) => (release = resolve));
    const smtp = sender('data', gate);
    const lmtp = sender('lmtp');
    // Tells when an envelope file is renamed into env/ (and its directory synced: the write is durable then).
    let envelopeWritten!: () => void;
    const written = new Promise<void>((resolve) => (envelopeWritten = resolve));
    let renamed = false;
    const watching: FileSystem = Object.create(defaultFileSystem, {
      rename: { value: async (from: string, to: string) => {
        await defaultFileSystem.rename(from, to);
        if (to.endsWith('.json')) renamed = true;
      } },
      open: { value: async (file: string, flags?: string) => {
        const handle = await defaultFileSystem.open(file, flags);
        if (renamed && file.endsWith(`${path.sep}env`)) {
          const sync = handle.sync.bind(handle);
          return Object.assign(handle, { sync: async () => {
            await sync();
            envelopeWritten();
          } });
        }
        return handle;
      } },
    }) as FileSystem;
    const { engine, queue } = await engineOn(dir, smtp, lmtp, watching);
    const message = await engine.accept({ from: 'carol@sender.test', to: ['alice@sender.test', 'bob@receiver.test'], data: Buffer.from('Subject: two\r\n\r\nx\r\n'), messageId: '<two@sender.test>', origin: { kind: 'submission', protocol: 'ESMTPA' } });
    // The LMTP hop answered, the MX has not: alice's record reaches the disk (file synced, renamed, directory synced)
    // while the relay still waits. It is the only envelope write under way.
    await Promise.race([written, new Promise((_, reject) => setTimeout(() => reject(new Error('no envelope was written while the relay to the MX was under way: the LMTP recipient would be sent again after a crash')), 5000))]);
    expect(smtp.calls).toEqual([['bob@receiver.test']]);
    const envelope = queue.envelopePath(message.queueId);
    const onDisk = JSON.parse(await fs.readFile(envelope, 'utf8')) as { recipients: { address: string; state: string }[] };
    expect(onDisk.recipients.map((r) => [r.address, r.state])).toEqual([
      ['alice@sender.test', 'delivered'],
      ['bob@receiver.test', 'pending'],
    ]);

    // A crash now: a fresh queue on the same directory (what a restarted MTA opens) tries bob only.
    const smtp2 = sender('data');
    const lmtp2 = sender('lmtp');
    const restarted = await engineOn(dir, smtp2, lmtp2);
    await restarted.engine.scheduler.idle();
    expect(lmtp2.calls).toEqual([]);
    expect(smtp2.calls).toEqual([['bob@receiver.test']]);
    expect(restarted.queue.get(message.queueId)?.state).toBe('done');

    // The first engine's attempt ends normally once the MX answers.
    release();
    await engine.scheduler.idle();
    expect(queue.get(message.queueId)?.state).toBe('done');
  });
});
