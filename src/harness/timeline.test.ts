// Timelines against a lab made by hand: nodes that record what is done to them, an adapter that records the rules
// and toxics it is given, and a history the test adds client events to.
import { describe, expect, it } from 'vitest';
import { now, type LabEvent } from '../shared/events.js';
import { History } from './history/history.js';
import { describeStep, labFaultAdapter, runTimeline, startTimeline, TimelineError, undoOf, type FaultAdapter, type TimelineLab, type TimelineNode, type TimelineStep } from './timeline.js';

function fakeLab(seed?: number) {
  const history = new History();
  const calls: string[] = [];
  const controlCalls: { node: string; operation: string; args?: object }[] = [];
  const node = (name: string, role: string): TimelineNode => {
    let running = true;
    const act = (what: string, change?: boolean) => async () => {
      calls.push(`${what} ${name}`);
      if (change !== undefined) running = change;
    };
    return {
      name,
      role: role as TimelineNode['role'],
      get isRunning() {
        return running;
      },
      stop: act('stop', false),
      kill: act('kill', false),
      start: act('start', true),
      pause: act('pause'),
      unpause: act('unpause'),
      disconnect: act('partition'),
      connect: act('heal'),
      control: () => ({ call: async (operation: string, args?: object) => void controlCalls.push({ node: name, operation, ...(args ? { args } : {}) }) }),
    } as TimelineNode;
  };
  const nodes = [node('dns', 'dns'), node('mta', 'mta'), node('mx', 'mx'), node('mailbox', 'mailbox')];
  const lab: TimelineLab = {
    history,
    ...(seed !== undefined ? { seed } : {}),
    node: (name) => {
      const n = nodes.find((x) => x.name === name);
      if (!n) throw new Error(`no host ${name}`);
      return n;
    },
    nodes: () => nodes,
  };
  const adapter: FaultAdapter = {
    smtp: async (host, rules) => void calls.push(`smtp ${host} ${rules.map((r) => r.id).join(',') || '-'}`),
    dns: async (rules) => void calls.push(`dns ${rules.map((r) => r.id).join(',') || '-'}`),
    link: async (from, to, toxics) => void calls.push(`link ${from}->${to} ${toxics.map((t) => t.type).join(',') || '-'}`),
  };
  let seq = 0;
  const event = (kind: string, detail: Record<string, unknown> = {}) => history.add({ seq: ++seq, time: now(), node: 'mta', kind, detail } as LabEvent);
  return { lab, calls, controlCalls, adapter, event };
}

const tick = () => new Promise((resolve) => setTimeout(resolve, 5));

describe('timelines', () => {
  it('fires a step at its time, undoes it after `for`, and reports when', async () => {
    const { lab, calls, adapter } = fakeLab();
    const lines: string[] = [];
    const report = await runTimeline(lab, [{ at: { ms: 20 }, do: { node: { host: 'mx', action: 'stop' } }, for: 40 }], { adapter, log: (l) => lines.push(l) });
    expect(calls).toEqual(['stop mx', 'start mx']);
    const step = report.steps[0]!;
    expect(step.firedAt! - report.startedAt).toBeGreaterThanOrEqual(18); // timers are whole ms
    expect(step.undoneAt! - step.firedAt!).toBeGreaterThanOrEqual(38);
    expect(lines).toEqual(['timeline: fired step 0: at 20 ms: stop mx for 40 ms', 'timeline: undone step 0: at 20 ms: start mx for 40 ms']);
  });

  it('fires "at message n" once the clients submitted n messages since its start', async () => {
    const { lab, calls, adapter, event } = fakeLab();
    event('submitted'); // before the timeline: not counted
    const timeline = startTimeline(lab, [{ at: { message: 2 }, do: { smtp: { host: 'mx', rules: [{ id: 'grey', stage: 'rcpt', action: { kind: 'greylist', delayMs: 1000 } }] } } }], { adapter });
    await tick();
    event('submitted');
    await tick();
    expect(calls).toEqual([]);
    event('submitted');
    await timeline.done;
    expect(calls).toEqual(['smtp mx grey']);
  });

  it('fires on an event, and sends rules, DNS faults and toxics through the adapter, undoing each to none', async () => {
    const { lab, calls, adapter, event } = fakeLab();
    const steps: TimelineStep[] = [
      { at: { event: { kind: 'deferred', node: 'mta' } }, do: { dns: { rules: [{ id: 'sf', name: 'receiver.test', type: 'MX', action: { kind: 'servfail' } }] } }, for: 10 },
      { at: { ms: 0 }, do: { link: { from: 'mta', to: 'mx', toxics: [{ type: 'latency', attributes: { latency: 100 } }] } }, for: 10 },
    ];
    const timeline = startTimeline(lab, steps, { adapter });
    await tick();
    event('deferred', { rcpt: 'bob@receiver.test' });
    await timeline.done;
    expect(calls.sort()).toEqual(['dns -', 'dns sf', 'link mta->mx -', 'link mta->mx latency']);
  });

  it('fails loudly, with the seed and the steps, when a trigger never comes within its timeout', async () => {
    const { lab, calls, adapter } = fakeLab(31337);
    const failure = await runTimeline(lab, [{ at: { ms: 0 }, do: { node: { host: 'mta', action: 'kill' } } }, { at: { message: 5 }, do: { node: { host: 'mx', action: 'pause' } }, for: 100 }], { adapter, timeoutMs: 50 }).catch(
      (e: unknown) => e,
    );
    expect(failure).toBeInstanceOf(TimelineError);
    expect((failure as Error).message).toMatch(/^timeline failed, seed 31337 \(MAILLAB_SEED=31337 replays it\):\n  step 1 \(at message 5: pause mx for 100 ms\) never fired: timed out after \d+ ms waiting for message 5 of the timeline/);
    expect((failure as Error).message).toMatch(/steps:\n  0\. at 0 ms: kill mta\n  1\. at message 5: pause mx for 100 ms/);
    expect((failure as TimelineError).report.steps[1]!.firedAt).toBeUndefined();
    expect(calls).toEqual(['kill mta']);
  });

  it('fails when an action fails, saying which and why', async () => {
    const { lab, adapter } = fakeLab();
    const broken: FaultAdapter = { ...adapter, smtp: () => Promise.reject(new Error('404 unknown operation set-smtp-faults')) };
    await expect(runTimeline(lab, [{ at: { ms: 0 }, do: { smtp: { host: 'mx', rules: [] } } }], { adapter: broken })).rejects.toThrow(/step 0 \(at 0 ms: smtp mx: no rules\) failed: 404 unknown operation set-smtp-faults/);
  });

  it('stop() undoes the steps in their window at once and fires no more; heal() puts back what had no `for`', async () => {
    const { lab, calls, adapter } = fakeLab();
    const timeline = startTimeline(
      lab,
      [
        { at: { ms: 0 }, do: { node: { host: 'mx', action: 'pause' } }, for: 60_000 },
        { at: { ms: 0 }, do: { node: { host: 'mailbox', action: 'kill' } } },
        { at: { ms: 0 }, do: { smtp: { host: 'mta', rules: [{ id: 'r', stage: 'data', action: { kind: 'delay', ms: 5 } }] } } },
        { at: { ms: 60_000 }, do: { node: { host: 'dns', action: 'stop' } } },
      ],
      { adapter },
    );
    await tick();
    const began = Date.now();
    const report = await timeline.heal();
    expect(Date.now() - began).toBeLessThan(1000);
    expect(calls).toEqual(['pause mx', 'kill mailbox', 'smtp mta r', 'unpause mx', 'start mailbox', 'smtp mta -']);
    expect(report.steps[3]!.firedAt).toBeUndefined();
    expect(await timeline.done).toBe(report);
  });

  it('runs one target\'s actions one after another: a kill waits for the start still under way', async () => {
    const { lab, adapter } = fakeLab();
    const order: string[] = [];
    const mx = lab.node('mx');
    let release!: () => void;
    const slowStart = new Promise<void>((resolve) => (release = resolve));
    Object.assign(mx, {
      stop: async () => void order.push('stop'),
      start: async () => (order.push('start begins'), await slowStart, order.push('start done')),
      kill: async () => void order.push('kill'),
    });
    const timeline = startTimeline(
      lab,
      [
        { at: { ms: 0 }, do: { node: { host: 'mx', action: 'stop' } }, for: 5 },
        { at: { ms: 30 }, do: { node: { host: 'mx', action: 'kill' } } },
        { at: { ms: 0 }, do: { node: { host: 'mailbox', action: 'stop' } } },
      ],
      { adapter },
    );
    await new Promise((resolve) => setTimeout(resolve, 60));
    expect(order).toEqual(['stop', 'start begins']);
    release();
    await timeline.done;
    expect(order).toEqual(['stop', 'start begins', 'start done', 'kill']);
  });

  it('refuses a step it could not undo or a host the lab has not, before anything runs', () => {
    const { lab, adapter } = fakeLab();
    expect(() => startTimeline(lab, [{ at: { ms: 0 }, do: { node: { host: 'mx', action: 'start' } }, for: 10 }], { adapter })).toThrow(/timeline step 0 \(at 0 ms: start mx for 10 ms\): `for` needs an action that can be undone/);
    expect(() => startTimeline(lab, [{ at: { ms: 0 }, do: { node: { host: 'mx2', action: 'stop' } } }], { adapter })).toThrow(/no host mx2/);
    expect(() => startTimeline(lab, [{ at: { message: -1 }, do: { node: { host: 'mx', action: 'stop' } } }], { adapter })).toThrow(/trigger must be a number ≥ 0/);
  });

  it('describes and undoes every kind of step', () => {
    expect(undoOf({ node: { host: 'mx', action: 'partition' } })).toEqual({ node: { host: 'mx', action: 'heal' } });
    expect(undoOf({ node: { host: 'mx', action: 'heal' } })).toBeUndefined();
    expect(describeStep({ at: { event: { kind: 'deferred' } }, do: { dns: { rules: [] } } })).toBe('at event {"kind":"deferred"}: dns: no rules');
  });

  it('the lab adapter calls the control operations of src/shared/faults.ts, and says when a lab has no link proxies', async () => {
    const { lab, controlCalls } = fakeLab();
    const adapter = labFaultAdapter(lab);
    await adapter.smtp('mx', [{ id: 'd', stage: 'end-of-data', action: { kind: 'drop', when: 'before-reply' } }]);
    await adapter.dns([]);
    expect(controlCalls).toEqual([
      { node: 'mx', operation: 'set-smtp-faults', args: { rules: [{ id: 'd', stage: 'end-of-data', action: { kind: 'drop', when: 'before-reply' } }] } },
      { node: 'dns', operation: 'set-dns-faults', args: { rules: [] } },
    ]);
    await expect(adapter.link('mta', 'mx', [])).rejects.toThrow(/link faults need link proxies \(lab\.link\(from, to\)\), which this lab does not have: cannot set toxics on mta -> mx/);
    const toxics: unknown[] = [];
    await labFaultAdapter({ ...lab, link: () => ({ setToxics: async (t: unknown[]) => void toxics.push(...t) }) }).link('mta', 'mx', [{ type: 'reset_peer', attributes: { timeout: 0 } }]);
    expect(toxics).toEqual([{ type: 'reset_peer', attributes: { timeout: 0 } }]);
  });
});
