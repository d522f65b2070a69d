// Toxiproxy's toxics (https://github.com/Shopify/toxiproxy#toxics), same names, attributes and defaults, as small
// stages of one direction of one connection. A chunk of data enters the first active toxic of its stream, each toxic
// passes it on (delayed, cut, dropped) to the next, and the last writes it out. Each toxic of each connection has its
// own state (the bandwidth clock, the bytes of limit_data, the timers of timeout and reset_peer).
//
// What each does, as Toxiproxy does it:
//   latency     every chunk leaves `latency` ± `jitter` ms after it arrived (chunks are not delayed one after another)
//   bandwidth   at most `rate` KB/s (1 KB = 1000 bytes), written in pieces of 100 ms worth
//   slow_close  the close of the stream is passed on `delay` ms late
//   timeout     no data gets through (it is dropped); the connection is closed `timeout` ms after the toxic applies
//               to it, or never when 0 (it hangs until the toxic is removed)
//   reset_peer  `timeout` ms after the toxic applies (0: at once) the connection is reset: both sides get a TCP RST
//   slicer      every chunk is cut into slices of `average_size` ± `size_variation` bytes, `delay` µs apart
//   limit_data  the connection is closed once `bytes` bytes went through this stream
import type { ToxicView } from '../shared/faults.js';

/** A piece of data and when it arrived at the proxy (performance.now(), ms). */
export interface Chunk {
  data: Buffer;
  arrived: number;
}

/** What a toxic may do to its connection. */
export interface ToxicContext {
  /** The toxic acted on the connection (recorded once per connection and toxic: a `fault` event). */
  fired(effect: string): void;
  /** Closes both sides of the connection normally (what was written is still delivered). */
  close(how: 'timeout' | 'limit'): void;
  /** Resets both sides (TCP RST). */
  reset(): void;
  /** A number in [0, 1) from the toxic's seeded stream (jitter, slice sizes). */
  random(): number;
  /** Whether the connection is gone (a toxic stops waiting and writing then). */
  readonly gone: boolean;
}

/** One toxic as it runs on one direction of one connection. */
export interface ToxicStage {
  readonly view: ToxicView;
  /** Passes a chunk on (through `next`, which writes it to the next stage), changed, later, or not at all. */
  data(chunk: Chunk, next: (chunk: Chunk) => Promise<void>): Promise<void>;
  /** The stream's source closed: runs before the close is passed on. */
  end?(): Promise<void>;
  /** The toxic was removed, or the connection closed: drop timers. */
  stop(): void;
}

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, Math.max(0, ms)));
/** Waits until performance.now() reaches `target` (a timer may fire a fraction of a millisecond early: never early here). */
async function sleepUntil(target: number): Promise<void> {
  for (let left = target - performance.now(); left > 0; left = target - performance.now()) await sleep(Math.ceil(left));
}

/** The stage of `view` for one connection, started now (timers of timeout and reset_peer run from here). */
export function startToxic(view: ToxicView, ctx: ToxicContext): ToxicStage {
  const a = view.attributes as Record<string, number>;
  switch (view.type) {
    case 'latency':
      return {
        view,
        async data(chunk, next) {
          const jitter = a.jitter! > 0 ? (ctx.random() * 2 - 1) * a.jitter! : 0;
          const delay = Math.max(0, a.latency! + jitter);
          if (delay > 0) ctx.fired(`delayed by ${Math.round(a.latency!)} ms${a.jitter ? ` ± ${Math.round(a.jitter)} ms` : ''}`);
          await sleepUntil(chunk.arrived + delay);
          await next(chunk);
        },
        stop() {},
      };
    case 'bandwidth': {
      // Bytes per ms = KB/s. `clock` is when the bytes written so far may have left at that rate.
      const rate = a.rate!;
      let clock = 0;
      return {
        view,
        async data(chunk, next) {
          if (rate <= 0) return next(chunk);
          ctx.fired(`limited to ${rate} KB/s`);
          const piece = Math.max(1, Math.floor(rate * 100));
          for (let offset = 0; offset < chunk.data.length && !ctx.gone; offset += piece) {
            const data = chunk.data.subarray(offset, offset + piece);
            clock = Math.max(clock, performance.now()) + data.length / rate;
            await sleepUntil(clock);
            await next({ data, arrived: chunk.arrived });
          }
        },
        stop() {},
      };
    }
    case 'slow_close':
      return {
        view,
        data: (chunk, next) => next(chunk),
        async end() {
          if (a.delay! <= 0) return;
          ctx.fired(`close delayed by ${a.delay} ms`);
          await sleep(a.delay!);
        },
        stop() {},
      };
    case 'timeout': {
      const timer = a.timeout! > 0 ? setTimeout(() => (ctx.fired(`no data, closed after ${a.timeout} ms`), ctx.close('timeout')), a.timeout!) : undefined;
      return {
        view,
        async data() {
          ctx.fired(a.timeout! > 0 ? `no data, closed after ${a.timeout} ms` : 'no data (hangs until the toxic is removed)');
        },
        stop: () => clearTimeout(timer),
      };
    }
    case 'reset_peer': {
      const fire = () => (ctx.fired(`connection reset${a.timeout ? ` after ${a.timeout} ms` : ''}`), ctx.reset());
      const timer = setTimeout(fire, a.timeout!);
      return { view, data: (chunk, next) => next(chunk), stop: () => clearTimeout(timer) };
    }
    case 'slicer':
      return {
        view,
        async data(chunk, next) {
          const average = Math.floor(a.average_size!);
          if (average <= 0) return next(chunk);
          ctx.fired(`sliced into ${average}${a.size_variation ? ` ± ${a.size_variation}` : ''} bytes, ${a.delay} µs apart`);
          let offset = 0;
          while (offset < chunk.data.length && !ctx.gone) {
            const variation = a.size_variation! > 0 ? Math.round((ctx.random() * 2 - 1) * a.size_variation!) : 0;
            const size = Math.max(1, average + variation);
            await next({ data: chunk.data.subarray(offset, offset + size), arrived: chunk.arrived });
            offset += size;
            if (offset < chunk.data.length && a.delay! > 0) await sleep(a.delay! / 1000);
          }
        },
        stop() {},
      };
    case 'limit_data': {
      let passed = 0;
      return {
        view,
        async data(chunk, next) {
          const remaining = a.bytes! - passed;
          const data = remaining < chunk.data.length ? chunk.data.subarray(0, Math.max(0, remaining)) : chunk.data;
          if (data.length) await next({ data, arrived: chunk.arrived });
          passed += data.length;
          if (passed >= a.bytes!) {
            ctx.fired(`closed after ${passed} bytes`);
            ctx.close('limit');
          }
        },
        stop() {},
      };
    }
  }
}
