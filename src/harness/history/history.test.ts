import { describe, expect, it } from 'vitest';
import type { LabEvent } from '../../shared/events.js';
import { NEMESIS } from '../events.js';
import { History, WaitTimeoutError } from './history.js';

function event(time: number, node: string, kind: string, detail: Record<string, unknown> = {}, ids: { messageId?: string; queueId?: string } = {}): LabEvent {
  return { seq: 1, time, node, kind, ...ids, detail };
}

describe('History', () => {
  it('keeps events of interleaved streams in time order', () => {
    const h = new History();
    h.add(event(3, 'mx', 'received'));
    h.add(event(1, 'mta', 'queued'));
    h.add(event(2, 'dns', 'dns-query'));
    expect(h.events.map((e) => e.time)).toEqual([1, 2, 3]);
  });

  it('waitFor resolves with a recorded or a future event, and fails with the expectation and the recent history', async () => {
    const h = new History();
    h.add(event(1, 'mta', 'queued', {}, { messageId: '<A@x>' }));
    expect((await h.waitFor({ kind: 'queued', messageId: 'a@X' })).node).toBe('mta');
    const later = h.waitFor({ kind: 'stored', detail: { user: 'bob@receiver.test' } });
    h.add(event(2, 'mailbox', 'stored', { user: 'carol@receiver.test' }));
    h.add(event(3, 'mailbox', 'stored', { user: 'bob@receiver.test' }));
    expect((await later).time).toBe(3);
    const failure = await h.waitFor({ kind: 'bounced' }, { timeoutMs: 20 }).catch((e: unknown) => e);
    expect(failure).toBeInstanceOf(WaitTimeoutError);
    expect((failure as Error).message).toMatch(/timed out after 20 ms waiting for event \{kind="bounced"\}\nrecent history:\n.*mta\s+queued/s);
  });

  it('a trace holds the message\'s hops, its queue id\'s events, the faults between its first and last hop, and the last one before on each node', () => {
    const h = new History();
    h.record(NEMESIS, 'node-kill', { target: 'mx', role: 'mx', took: 5 }, { time: -3 });
    h.record(NEMESIS, 'node-start', { target: 'mx', role: 'mx', took: 5 }, { time: -2 });
    h.record(NEMESIS, 'node-stop', { target: 'mx', role: 'mx', took: 5 }, { time: 0 });
    h.add(event(1, 'mta', 'queued', {}, { messageId: '<m@x>', queueId: 'Q' }));
    h.add(event(2, 'mta', 'active', {}, { queueId: 'Q' }));
    h.add(event(3, 'mta', 'active', {}, { queueId: 'OTHER' }));
    h.record(NEMESIS, 'node-start', { target: 'mx', role: 'mx', took: 5 }, { time: 4 });
    h.add(event(5, 'mta', 'relayed', {}, { messageId: '<m@x>', queueId: 'Q' }));
    h.record(NEMESIS, 'node-kill', { target: 'mta', role: 'mta', took: 5 }, { time: 6 });
    // Before the first hop only the last action on each node (the MX's stop) explains anything; after the last hop nothing.
    expect(h.trace('<m@x>').map((e) => `${e.node}:${e.kind}`)).toEqual([`${NEMESIS}:node-stop`, 'mta:queued', 'mta:active', `${NEMESIS}:node-start`, 'mta:relayed']);
    expect(h.trace('<unknown@x>')).toEqual([]);
  });

  it('lists the events whose kind the emitting node\'s contract does not list', () => {
    const h = new History();
    h.add(event(1, 'mta', 'queued'));
    h.add(event(2, 'mta', 'teleported'));
    h.record('bob/phone', 'device-synced', { uid: 1, flags: [] });
    const outside = h.outsideContract((node) => (node === 'mta' ? ['queued'] : undefined));
    expect(outside.map((e) => e.kind)).toEqual(['teleported']);
  });

  it('a wait that times out names the seed of its run, with the variable that replays it', async () => {
    const h = new History();
    expect(h.seedLine).toBe('');
    const without = await h.waitFor({ kind: 'bounced' }, { timeoutMs: 5 }).catch((e: unknown) => e);
    expect((without as Error).message).not.toMatch(/seed/);
    h.seed = 1234;
    const failure = await h.waitFor({ kind: 'bounced' }, { timeoutMs: 5 }).catch((e: unknown) => e);
    expect((failure as Error).message).toMatch(/^timed out after 5 ms waiting for event \{kind="bounced"\}\nseed 1234 \(MAILLAB_SEED=1234 replays it\)\nrecent history:/);
  });
});
