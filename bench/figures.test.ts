import { describe, expect, it } from 'vitest';
import { Figures, figuresTable, goalsTable, judge, orderOf, ratioStats, roundRatios, statsOf, type FigureDef } from './figures.js';

const rate: FigureDef = { id: 'rate', title: 'Rate', unit: 'msg/s', better: 'higher' };
const time: FigureDef = { id: 'time', title: 'Time', unit: 'ms', better: 'lower' };

describe('per-round ratios', () => {
  it('pairs values round by round, above 1 when maillab is better in either direction', () => {
    const f = new Figures();
    [100, 300, 200].forEach((v, i) => f.sample(rate, 'ours', i, v));
    [50, 100, 200].forEach((v, i) => f.sample(rate, 'peer', i, v));
    [10, 20].forEach((v, i) => f.sample(time, 'ours', i, v));
    [30, 20].forEach((v, i) => f.sample(time, 'peer', i, v));
    expect(roundRatios(f.get('rate')!)).toEqual([2, 3, 1]);
    expect(roundRatios(f.get('time')!)).toEqual([3, 1]);
    // The median of the ratios (2), not the ratio of the medians (200/100).
    expect(ratioStats(f.get('rate')!)).toMatchObject({ median: 2, min: 1, max: 3 });
  });

  it('leaves out rounds where one side has no value', () => {
    const f = new Figures();
    f.sample(rate, 'ours', 0, 100);
    f.sample(rate, 'ours', 1, 120);
    f.sample(rate, 'peer', 1, 60);
    expect(roundRatios(f.get('rate')!)).toEqual([2]);
    expect(statsOf(f.get('rate')!, 'ours')).toMatchObject({ median: 110 });
  });

  it('refuses a value that is not a number, naming the figure and round', () => {
    expect(() => new Figures().sample(rate, 'peer', 2, NaN)).toThrow(/rate: peer's value in round 3 is NaN/);
  });

  it('drops one side of a figure', () => {
    const f = new Figures();
    f.sample(rate, 'ours', 0, 1);
    f.sample(rate, 'peer', 0, 1);
    f.drop('rate', 'peer');
    expect(ratioStats(f.get('rate')!)).toBeUndefined();
  });
});

describe('goals', () => {
  it('judges ratio goals on the median ratio and value goals on maillab median', () => {
    const f = new Figures();
    [3, 2, 2.6].forEach((v, i) => f.sample(rate, 'ours', i, v));
    [1, 1, 1].forEach((v, i) => f.sample(rate, 'peer', i, v));
    [1400, 1600, 1450].forEach((v, i) => f.sample(time, 'ours', i, v));
    const verdicts = judge(f, [
      { figure: 'rate', what: 'rate ≥ 2.5', ratioAtLeast: 2.5 },
      { figure: 'rate', what: 'rate ≥ 3', ratioAtLeast: 3 },
      { figure: 'time', what: 'time', oursAtMost: 1500 },
      { figure: 'time', what: 'time vs peer', ratioAtLeast: 1 },
      { figure: 'nothing', what: 'absent', ratioAtLeast: 1 },
    ]);
    expect(verdicts.map((v) => v.verdict)).toEqual(['met', 'missed', 'met', 'not judged: no peer value', 'not judged: not measured']);
    const table = goalsTable(verdicts, f).join('\n');
    expect(table).toContain('| rate ≥ 2.5 | ≥ 2.5× | 2.60× (2.00–3.00) | 3 | met |');
    expect(table).toContain('| rate ≥ 3 | ≥ 3× | 2.60× (2.00–3.00) | 3 | **missed** |');
    expect(table).toContain('| time | ≤ 1500 ms | 1450 (1400–1600) ms | 3 | met |');
    expect(figuresTable(f).join('\n')).toContain('| Rate | msg/s | 2.60 (2.00–3.00) | 1.00 (1.00–1.00) | 2.60× (2.00–3.00) |');
  });
});

describe('round order', () => {
  it('alternates which system goes first', () => {
    const sides = [{ who: 'ours' as const }, { who: 'peer' as const }];
    expect([0, 1, 2].map((r) => orderOf(sides, r).map((s) => s.who).join(','))).toEqual(['ours,peer', 'peer,ours', 'ours,peer']);
  });
});
