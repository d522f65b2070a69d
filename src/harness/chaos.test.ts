// The chaos schedule is a pure function of its seed and options: the same seed gives the same schedule (printed as
// JSON and read back unchanged), another seed another; it draws only the kinds it is given, keeps every fault inside
// its span, and never puts two faults on one target at once (each step's undo puts back what it changed).
import { describe, expect, it } from 'vitest';
import { chaosSchedule, CHAOS_KINDS, formatSchedule, type ChaosKind } from './chaos.js';
import { targetKey, type TimelineStep } from './timeline.js';

const NODE_KINDS: ChaosKind[] = ['stop', 'kill'];

const targetOf = (s: TimelineStep): string => targetKey(s.do);
const kindOf = (s: TimelineStep): string => ('smtp' in s.do ? 'smtp' : 'dns' in s.do ? 'dns' : 'link' in s.do ? 'link' : s.do.node.action);

describe('chaosSchedule', () => {
  it('is the same for the same seed and options, and survives printing as JSON', () => {
    const a = chaosSchedule(42, { kinds: CHAOS_KINDS, faults: 12 });
    const b = chaosSchedule(42, { kinds: CHAOS_KINDS, faults: 12 });
    expect(b).toEqual(a);
    expect(JSON.parse(JSON.stringify(a))).toEqual(a);
    const printed = formatSchedule(a);
    expect(printed).toMatch(/^chaos schedule of seed 42 \(MAILLAB_SEED=42 replays it\): \d+ faults over 6000 ms \(kinds: stop, kill, pause, partition, smtp, dns, link\)\n  0\. at \d+ ms: /);
    expect(JSON.parse(printed.split('\n').at(-1)!)).toEqual(a);
  });

  it('differs for another seed', () => {
    const a = chaosSchedule(1, { kinds: CHAOS_KINDS });
    const b = chaosSchedule(2, { kinds: CHAOS_KINDS });
    expect(JSON.stringify(b.steps)).not.toBe(JSON.stringify(a.steps));
  });

  it('draws only the kinds available, in the order of CHAOS_KINDS, whatever order they are given in', () => {
    const s = chaosSchedule(7, { kinds: ['kill', 'stop'], faults: 20 });
    expect(s.kinds).toEqual(['stop', 'kill']);
    expect(new Set(s.steps.map(kindOf))).toEqual(new Set(NODE_KINDS));
    expect(chaosSchedule(7, { kinds: ['stop', 'kill'], faults: 20 })).toEqual(s);
    const smtpOnly = chaosSchedule(7, { kinds: ['smtp'], faults: 10 });
    for (const step of smtpOnly.steps) {
      expect('smtp' in step.do).toBe(true);
      if ('smtp' in step.do) expect(['mx', 'mailbox']).toContain(step.do.smtp.host);
    }
    expect(() => chaosSchedule(7, { kinds: [] })).toThrow(/no fault kinds to draw from/);
  });

  it('keeps every fault inside the span, undone after its own duration, and one at a time per target', () => {
    for (const seed of [0, 1, 99, 2 ** 32 - 1]) {
      const s = chaosSchedule(seed, { kinds: CHAOS_KINDS, faults: 30, durationMs: 5000, minFaultMs: 100, maxFaultMs: 800 });
      expect(s.steps.length).toBeGreaterThan(0);
      expect(s.steps.length).toBeLessThanOrEqual(30);
      const byTarget = new Map<string, { start: number; end: number }[]>();
      let last = 0;
      for (const step of s.steps) {
        const start = (step.at as { ms: number }).ms;
        expect(start).toBeGreaterThanOrEqual(last);
        last = start;
        expect(step.for).toBeGreaterThanOrEqual(100);
        expect(step.for).toBeLessThanOrEqual(800);
        expect(start + step.for!).toBeLessThanOrEqual(5000);
        const windows = byTarget.get(targetOf(step)) ?? [];
        for (const w of windows) expect(start >= w.end || start + step.for! <= w.start, `seed ${seed}: overlapping faults on ${targetOf(step)}`).toBe(true);
        windows.push({ start, end: start + step.for! });
        byTarget.set(targetOf(step), windows);
      }
    }
  });

  it('draws well-formed rules, DNS faults and toxics', () => {
    const s = chaosSchedule(5, { kinds: ['smtp', 'dns', 'link'], faults: 40, durationMs: 60_000 });
    for (const step of s.steps) {
      if ('smtp' in step.do) for (const rule of step.do.smtp.rules) expect(rule.id).toMatch(/^chaos-\d+$/);
      if ('dns' in step.do) expect(step.do.dns.rules[0]).toMatchObject({ name: 'receiver.test', type: 'MX', times: expect.any(Number) });
      if ('link' in step.do) expect(['latency', 'bandwidth', 'reset_peer', 'slicer', 'timeout']).toContain(step.do.link.toxics[0]!.type);
    }
    expect(new Set(s.steps.map(kindOf))).toEqual(new Set(['smtp', 'dns', 'link']));
    expect(() => chaosSchedule(5, { kinds: ['stop'], durationMs: 1000, maxFaultMs: 1500 })).toThrow(/do not fit a schedule of 1000 ms/);
  });
});
