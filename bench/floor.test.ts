// The floor of a lab of Node processes: bare processes really start, listen and are measured and killed; the best
// reachable ratio and its verdict follow from the floor and the peer.
import { describe, expect, it } from 'vitest';
import { bareNodes, bestRatioAbove, floorLines } from './floor.js';
import { stats } from './load.js';

const alive = (pid: number) => {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
};

describe('the floor of four Node processes', () => {
  it('starts the bare processes at once, times them until each listens, measures them, then kills them', async () => {
    let seen: number[] = [];
    const { ms, measured } = await bareNodes(4, async (pids) => {
      seen = pids;
      return pids.filter(alive).length;
    });
    expect(measured).toBe(4);
    expect(new Set(seen).size).toBe(4);
    expect(ms).toBeGreaterThan(0);
    expect(seen.filter(alive)).toEqual([]);
  });

  it('bounds the ratio by the peer over the floor, and says when a goal lies beyond it', () => {
    expect(bestRatioAbove(stats([160]), stats([123]))).toBeCloseTo(0.769, 3);
    expect(bestRatioAbove(undefined, stats([1]))).toBeUndefined();
    const lines = floorLines([
      { what: 'Idle memory, RSS', unit: 'MiB', floor: stats([160, 161, 159]), peer: stats([123]), goal: 1 },
      { what: 'Local boot', unit: 'ms', floor: stats([100]), peer: stats([230]), goal: 2 },
      { what: 'not measured', unit: 'ms', peer: stats([1]), goal: 1 },
    ]);
    expect(lines).toEqual([
      'Idle memory, RSS: floor 160.0 MiB (four bare Node processes), peer 123.0 MiB: at best 0.77×; the goal of 1× is beyond what four Node processes can reach.',
      'Local boot: floor 100 ms (four bare Node processes), peer 230 ms: at best 2.30×; the goal of 2× is within reach.',
    ]);
  });
});
