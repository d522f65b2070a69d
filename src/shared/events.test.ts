import { describe, expect, it } from 'vitest';
import { EVENT_LOG_KEEP, EventLog } from './events.js';

describe('EventLog', () => {
  it('keeps its latest events only, within 1.1 × the bound, and since() still answers from what it kept', () => {
    const log = new EventLog('mta', 100);
    for (let i = 0; i < 1000; i++) log.emit({ kind: 'x', detail: { i } });
    const kept = log.since(0);
    expect(kept.length).toBeGreaterThanOrEqual(100);
    expect(kept.length).toBeLessThan(110);
    // The newest are the ones kept, in order, without holes.
    expect(kept.at(-1)!.seq).toBe(1000);
    expect(kept.map((e) => e.seq)).toEqual(kept.map((_, i) => 1000 - kept.length + 1 + i));
    expect(log.since(995).map((e) => e.seq)).toEqual([996, 997, 998, 999, 1000]);
  });

  it('tells every subscriber every event, whatever it keeps', () => {
    const log = new EventLog('dns', 3);
    const seen: number[] = [];
    log.subscribe((e) => seen.push(e.seq));
    for (let i = 0; i < 20; i++) log.emit({ kind: 'x', detail: {} });
    expect(seen).toEqual(Array.from({ length: 20 }, (_, i) => i + 1));
  });

  it('keeps 10,000 by default', () => {
    expect(EVENT_LOG_KEEP).toBe(10_000);
    const log = new EventLog('mx');
    for (let i = 0; i < 12_000; i++) log.emit({ kind: 'x', detail: {} });
    expect(log.since(0).length).toBeLessThanOrEqual(11_000);
    expect(log.since(0)[0]!.seq).toBeGreaterThan(1000);
  });
});
