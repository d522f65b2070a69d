// Helpers for the property-based fuzz tests (`*.fuzz.test.ts`, fast-check): one seed for all of them, bounded runs,
// and a raw socket exchange that sends arbitrary bytes to a server under test and collects what it answers.
//
// Replay: a failure prints fast-check's seed and path; `MAILLAB_FUZZ_SEED=<seed>` runs every fuzzer from that
// seed (the default is fixed, so `npm test` is reproducible). `MAILLAB_FUZZ_RUNS` scales the number of runs (e.g. 10
// for a long hunt), `MAILLAB_FUZZ_MS` the time limit of each property.
import net from 'node:net';
import fc from 'fast-check';

/** The seed every fuzzer starts from. */
export const FUZZ_SEED = process.env.MAILLAB_FUZZ_SEED ? Number(process.env.MAILLAB_FUZZ_SEED) | 0 : 20261130;
const RUNS_FACTOR = Number(process.env.MAILLAB_FUZZ_RUNS ?? 1);
const TIME_MS = process.env.MAILLAB_FUZZ_MS ? Number(process.env.MAILLAB_FUZZ_MS) : undefined;

/**
 * fast-check parameters: the shared seed, `numRuns` (scaled by MAILLAB_FUZZ_RUNS), and a time limit after which the
 * property stops early and passes with the runs made (it never runs past `timeMs`, whatever the machine's load).
 */
export function fuzzParameters<T>(numRuns: number, timeMs: number): fc.Parameters<T> {
  return {
    seed: FUZZ_SEED,
    numRuns: Math.max(1, Math.round(numRuns * RUNS_FACTOR)),
    plugins: [fc.interruptAfterTimeLimit(TIME_MS ?? timeMs)],
    verbose: 1,
  };
}

export interface Exchange {
  /** Everything the server sent. */
  data: Buffer;
  /** The server closed the connection (or reset it). */
  closed: boolean;
}

export interface ExchangeOptions {
  /** The exchange ends this long after the server last sent something (once every chunk is written). */
  quietMs?: number;
  /** The exchange ends after this long in any case. */
  maxMs?: number;
  /** Wait for the greeting before writing (a server that talks first). */
  greeting?: boolean;
  /** The quiet time only counts once this holds for what the server sent (e.g. the reply to the end of DATA came). */
  until?: (data: Buffer) => boolean;
}

/**
 * Connects, (waits for the greeting,) writes `chunks` one write each, then reads until the server has been quiet
 * for `quietMs` (and `until` holds) or closed, at most `maxMs`. Never throws for what the server does: a reset counts as closed.
 */
export async function exchange(port: number, chunks: readonly Uint8Array[], options: ExchangeOptions = {}, host = '127.0.0.1'): Promise<Exchange> {
  const quietMs = options.quietMs ?? 40;
  const maxMs = options.maxMs ?? 3000;
  const socket = net.connect({ host, port });
  const parts: Buffer[] = [];
  let closed = false;
  let last = Date.now();
  let wake: (() => void) | undefined;
  socket.on('data', (d) => {
    parts.push(d);
    last = Date.now();
    wake?.();
  });
  socket.on('error', () => undefined);
  socket.on('close', () => {
    closed = true;
    wake?.();
  });
  const started = Date.now();
  const ready = () => !options.until || options.until(Buffer.concat(parts));
  const waitFor = async (done: () => boolean, quiet: boolean) => {
    while (!done() && !closed && Date.now() - started < maxMs) {
      if (quiet && Date.now() - last >= quietMs && ready()) return;
      await new Promise<void>((resolve) => {
        wake = resolve;
        setTimeout(resolve, quiet ? Math.max(1, quietMs - (Date.now() - last)) : 20);
      });
      wake = undefined;
    }
  };
  await new Promise<void>((resolve) => {
    socket.once('connect', resolve);
    socket.once('close', resolve);
  });
  if (options.greeting) await waitFor(() => parts.length > 0, false);
  for (const chunk of chunks) {
    if (closed) break;
    await new Promise<void>((resolve) => socket.write(chunk, () => resolve()));
  }
  last = Date.now();
  await waitFor(() => false, true);
  socket.destroy();
  return { data: Buffer.concat(parts), closed };
}

/**
 * For `until`: when a complete line was sent, what the server sent holds more lines than its greeting and the
 * `prefix` commands' (the first complete line always gets a reply, or the connection closes).
 */
export function answered(expectReply: boolean, prefix = 0): ((data: Buffer) => boolean) | undefined {
  return expectReply ? (data) => replyLines(data).length > 1 + prefix : undefined;
}

/** The lines of a server's output (CRLF or LF ended; a last line without its end included). */
export function replyLines(data: Buffer): string[] {
  const lines = data.toString('latin1').split(/\r?\n/);
  if (lines.at(-1) === '') lines.pop();
  return lines;
}

/** The RSS of this process in MiB (servers under test run in it). */
export function rssMiB(): number {
  return process.memoryUsage().rss / 1024 / 1024;
}

// Arbitraries shared by the line protocols.

/** Line ends as clients get them wrong: CRLF, bare LF, bare CR, none. */
export const lineEnd = fc.constantFrom('\r\n', '\r\n', '\r\n', '\n', '\r', '');

/** Bytes of any value. */
export const binary = (maxLength: number) => fc.uint8Array({ maxLength }).map((a) => Buffer.from(a));

/** A line far over any limit: a short pattern repeated (up to `max` bytes). */
export const longLine = (max: number) =>
  fc.tuple(fc.string({ minLength: 1, maxLength: 8 }), fc.integer({ min: 1000, max })).map(([pattern, n]) => Buffer.from(pattern.repeat(Math.ceil(n / pattern.length)).slice(0, n), 'utf8'));

/** Commands made of `verbs` (in any case) and arbitrary arguments, each with a line end, concatenated (pipelined). */
export function commandLines(verbs: readonly string[], extra: fc.Arbitrary<Buffer> = fc.constant(Buffer.alloc(0))): fc.Arbitrary<Buffer> {
  const verb = fc.oneof(fc.constantFrom(...verbs), fc.constantFrom(...verbs).map((v) => v.toLowerCase()), fc.string({ maxLength: 10 }));
  const argument = fc.oneof(fc.string({ maxLength: 40 }), fc.string({ unit: 'binary', maxLength: 40 }), fc.constantFrom('<>', '<bob@receiver.test>', 'FROM:<a@b.test>', 'TO:<bob@receiver.test>', '"', '{5}', '{4+}', '(', ')', '*', '1:*', '\0', 'BODY[]'));
  const line = fc.tuple(verb, fc.array(argument, { maxLength: 4 }), lineEnd).map(([v, args, end]) => Buffer.from([v, ...args].join(' ') + end, 'utf8'));
  return fc.array(fc.oneof({ weight: 6, arbitrary: line }, { weight: 1, arbitrary: extra }), { minLength: 1, maxLength: 12 }).map((parts) => Buffer.concat(parts));
}

/** Splits `data` into 1–4 chunks at arbitrary points (one write each: pipelining and torn commands). */
export function chunked(data: fc.Arbitrary<Buffer>): fc.Arbitrary<Buffer[]> {
  return data.chain((buffer) =>
    fc.array(fc.integer({ min: 0, max: buffer.length }), { maxLength: 3 }).map((cuts) => {
      const points = [0, ...cuts.sort((a, b) => a - b), buffer.length];
      return points.slice(1).map((end, i) => buffer.subarray(points[i]!, end)).filter((c) => c.length > 0);
    }),
  );
}
