// Fuzzing IMAP: the command framer and reader (parser.ts) directly, and the server over a socket (on the Maildir
// store), with arbitrary command lines, literals, long lines, binary and torn or pipelined input, before and after
// login. What must hold: the framer never throws and frames a byte stream the same however it is cut; the reader
// either parses or throws ParseError (a tagged BAD), never anything else; every server line is an IMAP response
// (untagged `*`, continuation `+`, or tagged OK/NO/BAD), memory stays bounded, and a session logged in alongside
// still works at the end.
// Replay: MAILLAB_FUZZ_SEED=<seed> (see src/shared/fuzz.test-helper.ts); fast-check prints seed and path on failure.
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { MaildirStore } from '../store.js';
import { answered, binary, chunked, commandLines, exchange, fuzzParameters, longLine, rssMiB } from '../../shared/fuzz.test-helper.js';
import { ParseError } from './errors.js';
import { SIMPLE } from './fixtures.test-helper.js';
import { startImap, type RunningImap } from './index.js';
import { CommandFramer, Reader, resolveSeqSet, type FramerItem } from './parser.js';
import { RawClient } from './raw-client.test-helper.js';
import { STORES } from './stores.test-helper.js';

const IMAP_VERBS = ['CAPABILITY', 'NOOP', 'LOGOUT', 'LOGIN', 'AUTHENTICATE', 'STARTTLS', 'SELECT', 'EXAMINE', 'CREATE', 'DELETE', 'RENAME', 'SUBSCRIBE', 'LIST', 'LSUB', 'STATUS', 'APPEND', 'CHECK', 'CLOSE', 'EXPUNGE', 'SEARCH', 'FETCH', 'STORE', 'COPY', 'MOVE', 'UID', 'IDLE', 'DONE', 'NAMESPACE', 'ID', 'ENABLE', 'UNSELECT'];
const BOB = 'bob@example.test';
const RSS_BOUND_MIB = 256;
const LIMITS = { maxLineLength: 4096, literal: 2048, maxDiscard: 8192 };

/** Runs the framer over `chunks`; returns what it emitted (commands as hex, errors as they are) and the continuations. */
function frame(chunks: readonly Buffer[]): { items: unknown[]; continuations: number } {
  const items: unknown[] = [];
  let continuations = 0;
  const framer = new CommandFramer({
    maxLineLength: LIMITS.maxLineLength,
    literalLimit: (head) => (head.name === 'APPEND' ? LIMITS.literal * 2 : LIMITS.literal),
    maxDiscard: LIMITS.maxDiscard,
    continueLiteral: () => continuations++,
    onItem: (item: FramerItem) => {
      if (item.kind === 'error') items.push(item);
      else items.push({ lines: item.frame.lines.map((l) => l.toString('hex')), literals: item.frame.literals.map((l) => l.toString('hex')) });
    },
  });
  for (const chunk of chunks) framer.push(chunk);
  return { items, continuations };
}

/** Input for the framer: command text with literal markers, literal bodies, long lines and binary. */
const imapInput = commandLines(IMAP_VERBS, fc.oneof(binary(200), longLine(20_000), fc.tuple(fc.nat(LIMITS.maxDiscard * 2), fc.boolean()).map(([n, plus]) => Buffer.from(`A1 APPEND INBOX {${n}${plus ? '+' : ''}}\r\n${'x'.repeat(Math.min(n, 3000))}\r\n`))));

describe('IMAP parser fuzzing', () => {
  it('frames any byte stream without throwing, the same however it is cut, within its limits', () => {
    fc.assert(
      fc.property(chunked(imapInput), (chunks) => {
        const whole = frame([Buffer.concat(chunks)]);
        const cut = frame(chunks);
        expect(cut).toEqual(whole);
        // Byte by byte too: the worst cutting of all.
        const bytes = [...Buffer.concat(chunks)].map((b) => Buffer.from([b]));
        if (bytes.length < 4000) expect(frame(bytes)).toEqual(whole);
        for (const item of whole.items as { lines?: string[]; literals?: string[] }[]) {
          if (!item.lines) continue;
          const text = item.lines.reduce((n, l) => n + l.length / 2 + 2, 0);
          expect(text, 'command text within the line limit').toBeLessThanOrEqual(LIMITS.maxLineLength);
          const literal = (item.literals ?? []).reduce((n, l) => n + l.length / 2, 0);
          expect(literal, 'literal octets within the limit').toBeLessThanOrEqual(LIMITS.literal * 2);
        }
      }),
      fuzzParameters(300, 4000),
    );
  });

  it('reads any framed command as its grammar or a ParseError, never another exception', () => {
    // Every reader method, called in an arbitrary order on an arbitrary command: what the command table does.
    const methods: Array<(r: Reader) => unknown> = [
      (r) => r.tag(), (r) => r.sp(), (r) => r.atom(), (r) => r.peekAtom(), (r) => r.number(), (r) => r.nzNumber(), (r) => r.quoted(),
      (r) => r.literal(), (r) => r.stringBuf(), (r) => r.astringBuf(), (r) => r.astring(), (r) => r.string(), (r) => r.nstring(),
      (r) => r.listMailbox(), (r) => r.flag(), (r) => r.seqSet(), (r) => r.end(), (r) => r.trySp(), (r) => r.tryChar('('), (r) => r.char(')'),
    ];
    fc.assert(
      fc.property(imapInput, fc.array(fc.nat(methods.length - 1), { minLength: 1, maxLength: 12 }), (input, calls) => {
        let read = 0;
        const framer = new CommandFramer({ maxLineLength: LIMITS.maxLineLength, literalLimit: () => LIMITS.literal, maxDiscard: LIMITS.maxDiscard, continueLiteral: () => undefined, onItem: (item) => {
          if (item.kind !== 'command') return;
          read++;
          const reader = new Reader(item.frame);
          for (const call of calls) {
            try {
              methods[call]!(reader);
            } catch (err) {
              if (!(err instanceof ParseError)) throw err;
              break;
            }
          }
        } });
        framer.push(input);
        expect(read).toBeGreaterThanOrEqual(0);
      }),
      fuzzParameters(500, 3000),
    );
  });

  it('resolves any sequence set within the mailbox, never past its size', () => {
    fc.assert(
      fc.property(fc.array(fc.tuple(fc.nat(50), fc.nat(50)), { maxLength: 8 }), fc.nat(40), (set, max) => {
        const numbers = resolveSeqSet(set, max);
        for (const n of numbers) expect(n >= 1 && n <= max, `${n} in 1..${max}`).toBe(true);
        expect(new Set(numbers).size).toBe(numbers.length);
      }),
      fuzzParameters(300, 2000),
    );
  });
});

/** The response lines of an IMAP server's output; literals in responses (`{n}` at a line's end) are skipped. */
function responseLines(data: Buffer): string[] {
  const lines: string[] = [];
  let offset = 0;
  let current = '';
  while (offset < data.length) {
    const lf = data.indexOf(0x0a, offset);
    if (lf < 0) {
      current += data.subarray(offset).toString('latin1');
      break;
    }
    const piece = data.subarray(offset, lf).toString('latin1').replace(/\r$/, '');
    offset = lf + 1;
    const literal = /\{(\d+)\}$/.exec(piece);
    if (literal) {
      current += piece;
      offset += Number(literal[1]);
      continue;
    }
    lines.push(current + piece);
    current = '';
  }
  if (current) lines.push(current);
  return lines;
}

/** Untagged, continuation, or tagged: a tag is ASTRING-CHARs but "+" (RFC 3501 §9; `}` and `]` are allowed). */
const IMAP_RESPONSE = /^(?:\* |\+(?: |$)|[^\x00-\x20\x7f-\xff(){%*"\\+]+ (?:OK|NO|BAD)(?: |$))/;

/** Sends `prefix` then `chunks` on a fresh session; every line back is an IMAP response, and a complete line got one. */
async function answersWithResponses(port: number, prefix: Buffer[], chunks: Buffer[]): Promise<void> {
  const sent = Buffer.concat(chunks).toString('latin1');
  // A complete line gets a response, unless a literal (which may not have been sent whole) is pending.
  const expectReply = /\n/.test(sent) && !sent.includes('{');
  const { data, closed } = await exchange(port, [...prefix, ...chunks], { greeting: true, until: answered(expectReply, prefix.length) });
  const lines = responseLines(data);
  expect(lines[0] ?? '', 'the greeting').toMatch(/^\* OK /);
  for (const line of lines) expect(line, `a response to ${JSON.stringify(sent.slice(0, 1500))}`).toMatch(IMAP_RESPONSE);
  if (expectReply && !closed) expect(lines.length).toBeGreaterThan(prefix.length + 1);
}

describe('IMAP server fuzzing', () => {
  let server: RunningImap;
  let store: MaildirStore;
  let cleanup: () => Promise<void>;
  let bystander: RawClient;
  let rssBefore: number;

  beforeAll(async () => {
    const made = await STORES.find(([name]) => name === 'Maildir store')![1]([{ address: BOB, password: 'secret' }]);
    store = made.store as MaildirStore;
    cleanup = made.cleanup;
    await store.deliver(BOB, SIMPLE);
    server = await startImap({ store, host: '127.0.0.1', port: 0, hostname: 'imap.example.test', maxAppendSize: 64 * 1024 });
    bystander = await RawClient.login(server.endpoint.port);
    expect((await bystander.command('S', 'SELECT INBOX')).at(-1)).toMatch(/^S OK/);
    rssBefore = rssMiB();
  });

  afterAll(async () => {
    bystander?.close();
    await server?.stop();
    await cleanup?.();
  });

  it('answers arbitrary input, before and after login, with IMAP responses only', async () => {
    const login = fc.constantFrom<Buffer[]>([], [Buffer.from('L LOGIN bob@example.test secret\r\n')], [Buffer.from('L LOGIN bob@example.test secret\r\nS SELECT INBOX\r\n')]);
    await fc.assert(
      fc.asyncProperty(login, chunked(imapInput), (prefix, chunks) => answersWithResponses(server.endpoint.port, prefix, chunks)),
      fuzzParameters(120, 6000),
    );
  });

  // Cases the fuzzer found, kept as examples (each was a wrong expectation of the test, not a server bug).
  it('regression (seed 20261130): "}" is a valid tag, answered with a tagged BAD', async () => {
    await answersWithResponses(server.endpoint.port, [], [Buffer.from('}\r\n')]);
  });

  it('regression (seed 11): a non-synchronizing APPEND literal sent short leaves the server waiting, not answering', async () => {
    await answersWithResponses(server.endpoint.port, [], [Buffer.from(`A1 APPEND INBOX {3003+}\r\n${'x'.repeat(3000)}\r\n\r\n`)]);
  });

  it('keeps memory bounded and the bystander session working', async () => {
    expect(rssMiB() - rssBefore, 'RSS growth in MiB').toBeLessThan(RSS_BOUND_MIB);
    // The fuzzer may have changed the mailbox (its sessions are logged in as the same user): a NOOP and a SEARCH.
    expect((await bystander.command('N', 'NOOP')).at(-1)).toMatch(/^N OK/);
    expect((await bystander.command('F', 'SEARCH ALL')).at(-1)).toMatch(/^F OK/);
    const fresh = await RawClient.login(server.endpoint.port);
    expect((await fresh.command('N', 'NOOP')).at(-1)).toMatch(/^N OK/);
    fresh.close();
  });
});
