// The lab's one source of chance (issue 15): faults with a probability, toxics with a toxicity and chaos schedules
// draw from streams derived from the lab's seed, so that `MAILLAB_SEED=<n>` replays a run's draws exactly. Each
// stream is named (e.g. `smtp:mx:rule-1`), so adding a rule elsewhere does not shift the draws of another.
import { createHash } from 'node:crypto';

/** A seed: printed on failure, given back by MAILLAB_SEED. */
export type Seed = number;

/** A new seed, when a run names none. */
export function randomSeed(): Seed {
  return Math.floor(Math.random() * 2 ** 32);
}

/** The seed a run uses: MAILLAB_SEED if set (a whole number), else `fallback`. */
export function seedFromEnvironment(fallback: Seed): Seed {
  const given = process.env.MAILLAB_SEED;
  if (given === undefined || given === '') return fallback;
  if (!/^\d+$/.test(given) || Number(given) >= 2 ** 32) throw new Error(`MAILLAB_SEED must be a whole number below 2^32, not "${given}"`);
  return Number(given);
}

/**
 * A deterministic generator of numbers in [0, 1) for one named stream of a seed (sfc32 over a SHA-256 of both):
 * the same seed and name give the same sequence on every machine and Node version.
 */
export function seededRandom(seed: Seed, stream: string): () => number {
  const digest = createHash('sha256').update(`${seed >>> 0}\0${stream}`).digest();
  let a = digest.readUInt32LE(0);
  let b = digest.readUInt32LE(4);
  let c = digest.readUInt32LE(8);
  let d = digest.readUInt32LE(12);
  return () => {
    a >>>= 0;
    b >>>= 0;
    c >>>= 0;
    d >>>= 0;
    let t = (a + b) | 0;
    a = b ^ (b >>> 9);
    b = (c + (c << 3)) | 0;
    c = (c << 21) | (c >>> 11);
    d = (d + 1) | 0;
    t = (t + d) | 0;
    c = (c + t) | 0;
    return (t >>> 0) / 4294967296;
  };
}
