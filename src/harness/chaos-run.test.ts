// runChaos against a lab made by hand: a client whose messages the "lab" delivers (or loses) at once, nodes that
// record their faults as the nemesis's, an MTA whose queue is empty. A run that holds reports what happened; a run
// that loses a message fails with the seed, the variable that replays it and the schedule.
import { describe, expect, it } from 'vitest';
import { now, type LabEvent } from '../shared/events.js';
import { NEMESIS } from './events.js';
import { History } from './history/history.js';
import { ChaosFailure, chaosSchedule, duplicateDisagreement, runChaos, type ChaosLab } from './chaos.js';
import type { TimelineNode } from './timeline.js';

function fakeLab(options: { lose?: boolean } = {}) {
  const history = new History();
  history.seed = 1234;
  const boxes = new Map<string, { uid: number; raw: Buffer; messageId: string }[]>();
  let seq = 0;
  const add = (node: string, kind: string, detail: Record<string, unknown>, messageId: string) => history.add({ seq: ++seq, time: now(), node, kind, messageId, queueId: 'Q', detail } as LabEvent);
  const node = (name: string): TimelineNode =>
    ({
      name,
      role: name,
      isRunning: true,
      stop: async () => history.record(NEMESIS, 'node-stop', { target: name, role: 'mx', took: 1 }),
      start: async () => history.record(NEMESIS, 'node-start', { target: name, role: 'mx', took: 1 }),
      kill: async () => history.record(NEMESIS, 'node-kill', { target: name, role: 'mx', took: 1 }),
      pause: async () => undefined,
      unpause: async () => undefined,
      disconnect: async () => undefined,
      connect: async () => undefined,
      control: () => ({}),
    }) as unknown as TimelineNode;
  const nodes = [node('mx'), node('mailbox')];
  const lab: ChaosLab = {
    history,
    seed: 1234,
    definition: { retry: { schedule: [500], maxLifetimeMs: 60_000 } },
    node: (name) => nodes.find((n) => n.name === name)!,
    nodes: () => nodes,
    client: () => ({
      send: async (message) => {
        const messageId = message.messageId!;
        const to = [message.to].flat() as string[];
        add('mta', 'queued', { from: 'alice@sender.test', to, size: 1, origin: 'submission' }, messageId);
        for (const rcpt of to) {
          if (!options.lose) {
            const box = boxes.get(rcpt) ?? [];
            box.push({ uid: box.length + 1, raw: Buffer.from(`Message-ID: ${messageId}\r\n\r\nx`), messageId });
            boxes.set(rcpt, box);
            add('mailbox', 'stored', { user: rcpt, mailbox: 'INBOX', uid: box.length, size: 1, from: 'alice@sender.test' }, messageId);
          }
          add('mta', 'relayed', { rcpt, hop: 'h', reply: '250 ok', status: '2.0.0', reused: false }, messageId);
        }
        return { messageId, response: '250 2.0.0 queued', accepted: to, rejected: [] };
      },
    }),
    mta: () => ({ queue: async () => [], flush: async () => ({ flushed: 0 }) }),
    mailbox: (user) => ({
      messages: async () => (boxes.get(user) ?? []).map((m) => ({ uid: m.uid })),
      read: async (uid) => boxes.get(user)![uid - 1]!.raw,
      find: async (id) => (boxes.get(user) ?? []).filter((m) => m.messageId === id),
    }),
  };
  return { lab, history };
}

const options = { kinds: ['stop', 'kill'] as const, nodes: ['mx', 'mailbox'], messages: 6, faults: 3, durationMs: 300, minFaultMs: 10, maxFaultMs: 60, clients: 2, budgetMs: 10_000 };

describe('runChaos', () => {
  it('runs the schedule while the messages flow, heals, and reports what the checkers saw', async () => {
    const { lab } = fakeLab();
    const lines: string[] = [];
    const report = await runChaos(lab, { ...options, recipients: ['bob@receiver.test'], log: (l) => lines.push(l) });
    expect(report.schedule).toEqual(chaosSchedule(1234, { kinds: ['stop', 'kill'], nodes: ['mx', 'mailbox'], faults: 3, durationMs: 300, minFaultMs: 10, maxFaultMs: 60 }));
    expect(report).toMatchObject({ seed: 1234, accepted: 6, notAccepted: 0, noneLost: { owed: 6, delivered: 6, lost: [] }, delivery: { owed: 6, delivered: 6, duplicates: [] } });
    // Every step fired and was undone: a stop or kill, then a start, per step.
    expect(report.faults.filter((f) => f.startsWith('node-start'))).toHaveLength(report.schedule.steps.length);
    expect(report.faults).toHaveLength(2 * report.schedule.steps.length);
    expect(lines[0]).toMatch(/^chaos schedule of seed 1234 \(MAILLAB_SEED=1234 replays it\): \d faults over 300 ms/);
    expect(lines.at(-1)).toMatch(/^chaos seed 1234 \(MAILLAB_SEED=1234 replays it\): 6 accepted, 0 not accepted; 6 pairs: 6 delivered, 0 bounced/);
  });

  it('fails on a lost message with the seed, MAILLAB_SEED and the schedule', async () => {
    const { lab } = fakeLab({ lose: true });
    const failure = await runChaos(lab, { ...options, messages: 1, recipients: ['bob@receiver.test'] }).catch((e: unknown) => e);
    expect(failure).toBeInstanceOf(ChaosFailure);
    const message = (failure as Error).message;
    expect(message).toMatch(/^chaos run failed: a checker failed: chaos seed 1234 \(MAILLAB_SEED=1234 replays it\): 1 of 1 accepted \(message, recipient\) pairs lost: neither in the mailbox nor bounced: <chaos-1234-run-0-1@client\.sender\.test> → bob@receiver\.test/);
    expect(message).toMatch(/\nseed 1234 \(MAILLAB_SEED=1234 replays it\); replay: MAILLAB_SEED=1234 \(same schedule\)\nchaos schedule of seed 1234/);
    expect(JSON.parse(message.split('\n').at(-1)!)).toEqual((failure as ChaosFailure).schedule);
  });

  it('the two checkers\' duplicates agree pair by pair and copy by copy, or the difference is named', () => {
    const d = (messageId: string, rcpt: string, copies: number) => ({ messageId, rcpt, copies });
    expect(duplicateDisagreement({ duplicates: [d('<a>', 'bob@x', 2)] }, { duplicates: [d('<a>', 'BOB@x', 2)] })).toBeUndefined();
    expect(duplicateDisagreement({ duplicates: [d('<a>', 'bob@x', 2)] }, { duplicates: [] })).toEqual({ messageId: '<a>', text: '<a> → bob@x: 2 in the folder, at most 1 by the stored events' });
    expect(duplicateDisagreement({ duplicates: [] }, { duplicates: [d('<b>', 'bob@x', 3)] })?.text).toBe('<b> → bob@x: at most 1 in the folder, 3 by the stored events');
    expect(duplicateDisagreement({ duplicates: [d('<a>', 'bob@x', 3)] }, { duplicates: [d('<a>', 'bob@x', 2)] })?.text).toBe('<a> → bob@x: 3 in the folder, 2 by the stored events');
  });
});
