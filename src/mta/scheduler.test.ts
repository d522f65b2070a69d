import { afterEach, describe, expect, it, vi } from 'vitest';
import { Scheduler } from './scheduler.js';

/** A scheduler whose runs note their message and last until the test releases them (by message id). */
function heldScheduler(concurrency: number) {
  const ran: string[] = [];
  const held = new Map<string, (() => void)[]>();
  const scheduler = new Scheduler({
    concurrency,
    run: (id) =>
      new Promise<void>((resolve) => {
        ran.push(id);
        held.set(id, [...(held.get(id) ?? []), resolve]);
      }),
  });
  /** Ends the oldest run of `id` still going. */
  const release = (id: string) => held.get(id)!.shift()!();
  /** Ends the last run going and waits until nothing runs: `ran` is then final. */
  const finish = async (id: string) => {
    release(id);
    await scheduler.idle();
    return ran;
  };
  return { scheduler, ran, release, finish };
}

/** Four deliveries at a time that end at once, each recorded in `ran`, on fake timers starting at `now`. */
function recordingScheduler(now: number) {
  vi.useFakeTimers({ now });
  const ran: string[] = [];
  const scheduler = new Scheduler({ concurrency: 4, run: async (id) => void ran.push(id) });
  return { scheduler, ran };
}

/** Runs that never end. */
const stuck = () => new Promise<void>(() => undefined);

/** One delivery at a time, each never finishing, on fake timers starting at 0. */
function stuckScheduler(): Scheduler {
  vi.useFakeTimers({ now: 0 });
  return new Scheduler({ concurrency: 1, run: stuck });
}

describe('Scheduler', () => {
  afterEach(() => {
    vi.useRealTimers();
  });

  it('runs messages when due, by timers', async () => {
    vi.useFakeTimers({ now: 0 });
    const ran: [string, number][] = [];
    const scheduler = new Scheduler({ concurrency: 4, run: async (id) => void ran.push([id, Date.now()]) });
    scheduler.schedule('a', 1000);
    scheduler.schedule('b', 500);
    scheduler.schedule('c');
    await vi.advanceTimersByTimeAsync(0);
    expect(ran).toEqual([['c', 0]]);
    await vi.advanceTimersByTimeAsync(600);
    expect(ran.map(([id]) => id)).toEqual(['c', 'b']);
    await vi.advanceTimersByTimeAsync(500);
    expect(ran).toEqual([['c', 0], ['b', 500], ['a', 1000]]);
  });

  it('replaces an earlier plan, cancels, and flushes everything waiting', async () => {
    const { scheduler, ran } = recordingScheduler(0);
    scheduler.schedule('a', 10_000);
    scheduler.schedule('a', 20_000);
    scheduler.schedule('b', 30_000);
    scheduler.schedule('c', 30_000);
    scheduler.cancel('c');
    expect(scheduler.planned()).toEqual(new Map([['a', 20_000], ['b', 30_000]]));
    expect(scheduler.flush()).toBe(2);
    await vi.advanceTimersByTimeAsync(0);
    expect(ran.sort()).toEqual(['a', 'b']);
    await vi.advanceTimersByTimeAsync(60_000);
    expect(ran).toHaveLength(2);
  });

  it('caps concurrent runs and never runs one message twice at once', async () => {
    let running = 0;
    let peak = 0;
    const releases: (() => void)[] = [];
    const counts = new Map<string, number>();
    const scheduler = new Scheduler({
      concurrency: 2,
      run: (id) =>
        new Promise<void>((resolve) => {
          running++;
          peak = Math.max(peak, running);
          counts.set(id, (counts.get(id) ?? 0) + 1);
          releases.push(() => {
            running--;
            resolve();
          });
        }),
    });
    for (const id of ['a', 'b', 'c', 'd']) scheduler.schedule(id);
    scheduler.schedule('a'); // already running: runs again after
    expect(running).toBe(2);
    while (releases.length) {
      releases.shift()!();
      await new Promise((r) => setImmediate(r));
    }
    await scheduler.idle();
    expect(peak).toBe(2);
    expect(Object.fromEntries(counts)).toEqual({ a: 2, b: 1, c: 1, d: 1 });
  });

  it('stop drops the plans, starts nothing more, and waits for the running deliveries', async () => {
    vi.useFakeTimers({ now: 0 });
    const { scheduler, ran, release } = heldScheduler(1);
    scheduler.schedule('a');
    scheduler.schedule('b', 50);
    scheduler.schedule('c'); // ready, waiting for a free slot
    let stopped = false;
    const stopping = scheduler.stop(1000).then(() => (stopped = true));
    expect(scheduler.planned()).toEqual(new Map());
    await vi.advanceTimersByTimeAsync(20);
    expect(stopped).toBe(false);
    release('a');
    await stopping;
    // b's timer is gone and c was dropped from the ready list: however long we wait, nothing else runs.
    expect(vi.getTimerCount()).toBe(0);
    await vi.advanceTimersByTimeAsync(10_000);
    scheduler.schedule('d');
    scheduler.schedule('e', 100);
    expect(scheduler.planned()).toEqual(new Map());
    expect(vi.getTimerCount()).toBe(0);
    await vi.advanceTimersByTimeAsync(10_000);
    expect(ran).toEqual(['a']);
    expect(scheduler.inFlight).toBe(0);
  });

  it('stop gives up on a delivery that outlasts the grace time', async () => {
    const scheduler = stuckScheduler();
    scheduler.schedule('stuck');
    await vi.advanceTimersByTimeAsync(0);
    expect(scheduler.inFlight).toBe(1);
    let stopped = false;
    void scheduler.stop(500).then(() => (stopped = true));
    await vi.advanceTimersByTimeAsync(499);
    expect(stopped).toBe(false);
    await vi.advanceTimersByTimeAsync(1);
    expect(stopped).toBe(true);
    // Its grace timer is cleared too.
    expect(vi.getTimerCount()).toBe(0);
  });

  it('stop with nothing running resolves at once', async () => {
    vi.useFakeTimers({ now: 0 });
    const scheduler = new Scheduler({ concurrency: 1, run: async () => undefined });
    scheduler.schedule('later', 1000);
    await scheduler.stop(60_000);
    expect(vi.getTimerCount()).toBe(0);
  });

  it('runs a message due now without a timer, and one due 1 ms later only after that ms', async () => {
    const { scheduler, ran } = recordingScheduler(1000);
    scheduler.schedule('now', 1000);
    scheduler.schedule('past', 1);
    scheduler.schedule('soon', 1001);
    expect(scheduler.planned()).toEqual(new Map([['soon', 1001]]));
    expect(ran).toEqual(['now', 'past']);
    expect(scheduler.inFlight).toBe(2);
    await scheduler.idle();
    expect(scheduler.inFlight).toBe(0);
    await vi.advanceTimersByTimeAsync(0);
    expect(ran).toEqual(['now', 'past']);
    await vi.advanceTimersByTimeAsync(1);
    expect(ran).toEqual(['now', 'past', 'soon']);
    expect(scheduler.planned()).toEqual(new Map());
  });

  it('re-arms waits longer than setTimeout can hold (2^31-1 ms)', async () => {
    vi.useFakeTimers({ now: 0 });
    const ran: number[] = [];
    const scheduler = new Scheduler({ concurrency: 1, run: async () => void ran.push(Date.now()) });
    const at = 0x7fffffff + 5000;
    scheduler.schedule('far', at);
    await vi.advanceTimersByTimeAsync(0x7fffffff);
    expect(ran).toEqual([]);
    expect(scheduler.planned()).toEqual(new Map([['far', at]]));
    await vi.advanceTimersByTimeAsync(4999);
    expect(ran).toEqual([]);
    await vi.advanceTimersByTimeAsync(1);
    expect(ran).toEqual([at]);
  });

  it('reports a run that throws and goes on with the others', async () => {
    vi.useFakeTimers({ now: 0 });
    const errors: [string, unknown][] = [];
    const ran: string[] = [];
    const boom = new Error('boom');
    const scheduler = new Scheduler({
      concurrency: 1,
      run: async (id) => {
        ran.push(id);
        if (id === 'bad') throw boom;
      },
      onError: (id, err) => errors.push([id, err]),
    });
    scheduler.schedule('bad');
    scheduler.schedule('good');
    await scheduler.idle();
    expect(ran).toEqual(['bad', 'good']);
    expect(errors).toEqual([['bad', boom]]);
    // Without onError a throwing run is contained as well.
    const quiet = new Scheduler({ concurrency: 1, run: async () => Promise.reject(boom) });
    quiet.schedule('x');
    await quiet.idle();
    expect(quiet.inFlight).toBe(0);
  });

  it('cancel removes a message from the ready list and forgets a pending rerun', async () => {
    const { scheduler, ran, release, finish } = heldScheduler(1);
    scheduler.schedule('a');
    scheduler.schedule('b'); // ready, behind a
    scheduler.schedule('c'); // ready, behind b
    scheduler.schedule('a'); // a is running: rerun after it
    scheduler.schedule('b'); // already ready: not queued twice
    scheduler.cancel('b');
    scheduler.cancel('a');
    release('a');
    await vi.waitFor(() => expect(ran).toEqual(['a', 'c']));
    expect(await finish('c')).toEqual(['a', 'c']);
  });

  it('never starts a second run of a message in flight, even with free slots; runs it again after', async () => {
    const { scheduler, ran, release, finish } = heldScheduler(4);
    scheduler.schedule('a');
    scheduler.schedule('a');
    expect(scheduler.inFlight).toBe(1);
    expect(ran).toEqual(['a']);
    release('a');
    await vi.waitFor(() => expect(ran).toEqual(['a', 'a']));
    expect(await finish('a')).toEqual(['a', 'a']);
  });

  it('idle waits for runs that finish on a later turn of the event loop', async () => {
    const done: string[] = [];
    const scheduler = new Scheduler({ concurrency: 2, run: (id) => new Promise<void>((resolve) => setImmediate(() => (done.push(id), resolve()))) });
    scheduler.schedule('a');
    scheduler.schedule('b');
    scheduler.schedule('c');
    await scheduler.idle();
    expect(done.sort()).toEqual(['a', 'b', 'c']);
  });

  it('a rerun asked for before stop is dropped: idle resolves once the running attempt ends', async () => {
    const { scheduler, ran, release } = heldScheduler(1);
    scheduler.schedule('a');
    scheduler.schedule('a'); // rerun wanted
    const stopped = scheduler.stop(60_000);
    release('a');
    await stopped;
    await scheduler.idle();
    expect(ran).toEqual(['a']);
    expect(scheduler.inFlight).toBe(0);
  });

  it('flush counts the messages waiting on a timer and the one in flight, not those already ready', async () => {
    const scheduler = stuckScheduler();
    scheduler.schedule('running');
    scheduler.schedule('ready');
    scheduler.schedule('w1', 100);
    scheduler.schedule('w2', 200);
    expect(scheduler.flush()).toBe(3);
    expect(scheduler.planned()).toEqual(new Map());
    expect(scheduler.flush()).toBe(1);
  });

  it('a flush during an attempt runs that message again as soon as the attempt ends', async () => {
    const { scheduler, ran, release, finish } = heldScheduler(1);
    scheduler.schedule('m');
    expect(ran).toEqual(['m']);
    // The attempt is still being recorded when the flush comes (its retry is planned only once it ends).
    expect(scheduler.flush()).toBe(1);
    release('m');
    await vi.waitFor(() => expect(ran).toEqual(['m', 'm']));
    expect(await finish('m')).toEqual(['m', 'm']);
  });
});
