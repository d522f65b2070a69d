import { afterEach, describe, expect, it } from 'vitest';
import { seededRandom, seedFromEnvironment } from './seeded-random.js';

describe('seededRandom', () => {
  it('gives the same sequence for the same seed and stream, another for another stream or seed', () => {
    const take = (r: () => number) => Array.from({ length: 5 }, r);
    expect(take(seededRandom(42, 'smtp:mx:a'))).toEqual(take(seededRandom(42, 'smtp:mx:a')));
    expect(take(seededRandom(42, 'smtp:mx:a'))).not.toEqual(take(seededRandom(42, 'smtp:mx:b')));
    expect(take(seededRandom(42, 'smtp:mx:a'))).not.toEqual(take(seededRandom(43, 'smtp:mx:a')));
  });

  it('draws in [0, 1), spread out', () => {
    const r = seededRandom(7, 'spread');
    const draws = Array.from({ length: 10_000 }, r);
    expect(Math.min(...draws)).toBeGreaterThanOrEqual(0);
    expect(Math.max(...draws)).toBeLessThan(1);
    const below = draws.filter((x) => x < 0.25).length;
    expect(below).toBeGreaterThan(2300);
    expect(below).toBeLessThan(2700);
  });
});

describe('seedFromEnvironment', () => {
  afterEach(() => {
    delete process.env.MAILLAB_SEED;
  });
  it('takes MAILLAB_SEED when set, refuses a non-number, falls back otherwise', () => {
    expect(seedFromEnvironment(5)).toBe(5);
    process.env.MAILLAB_SEED = '123';
    expect(seedFromEnvironment(5)).toBe(123);
    process.env.MAILLAB_SEED = 'abc';
    expect(() => seedFromEnvironment(5)).toThrow(/MAILLAB_SEED must be a whole number/);
  });
});
