import { describe, expect, it } from 'vitest';
import { kindOf, summarise, summaryLines, type CpuProfile } from './profile.js';

const frame = (functionName: string, url: string, lineNumber = 0) => ({ functionName, url, lineNumber });

// 10 samples over 10 ms: 4 idle, 3 in a package, 2 in maillab's bundle, 1 in the garbage collector.
const profile: CpuProfile = {
  startTime: 0,
  endTime: 10_000,
  nodes: [
    { id: 1, callFrame: frame('(idle)', '') },
    { id: 2, callFrame: frame('sign', 'file:///app/node_modules/mailauth/lib/dkim/sign.js', 41) },
    { id: 3, callFrame: frame('relay', 'file:///app/dist/node-chunks/mta-X.js', 9) },
    { id: 4, callFrame: frame('(garbage collector)', '') },
  ],
  samples: [1, 1, 2, 3, 1, 2, 2, 3, 4, 1],
};

describe('summarise', () => {
  it('splits busy time by kind of code and lists functions by self time, idle left out', () => {
    const s = summarise(profile);
    expect(s.seconds).toBeCloseTo(0.01);
    expect(s.busySeconds).toBeCloseTo(0.006);
    expect(s.kinds.map(([k, v]) => [k, Math.round(v * 1e4) / 10])).toEqual([
      ['package mailauth', 3],
      ['maillab (dist/, bundled packages included)', 2],
      ['(garbage collector)', 1],
    ]);
    expect(s.functions.map(([f, ms]) => [f, Math.round(ms)])).toEqual([
      ['sign sign.js:42', 3],
      ['relay mta-X.js:10', 2],
      ['(garbage collector) (native):1', 1],
    ]);
    const lines = summaryLines('mta', s, 3).join('\n');
    expect(lines).toContain('**mta**: 0.01 s busy of 0.0 s (2.00 ms of CPU per message); by kind: package mailauth 50%');
    expect(lines).toContain('| 3 ms (50%) | `sign sign.js:42` |');
  });
});

describe('kindOf', () => {
  it('names scoped packages, Node.js modules and native frames', () => {
    expect(kindOf(frame('x', 'file:///a/node_modules/@postalsys/vmc/index.js'))).toBe('package @postalsys/vmc');
    expect(kindOf(frame('x', 'node:internal/fs/promises'))).toBe('node:internal');
    expect(kindOf(frame('writev', ''))).toBe('native (fs, sockets, crypto: C++)');
  });
});
