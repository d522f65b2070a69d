// Fuzzing the mailbox server's POP3 (pop3.ts) and LMTP (lmtp.ts) servers over sockets, on one Maildir store:
// arbitrary command lines, long lines, binary, bare CR/LF, torn and pipelined commands, POP3 before and after login,
// LMTP DATA with random dot-stuffing. What must hold: every POP3 line is +OK/-ERR (or a continuation, or inside a
// multi-line answer ended by "."), every LMTP line an SMTP reply; nothing crashes, memory stays bounded, and sessions
// opened alongside (a POP3 login as another user, an LMTP client) still work at the end.
// Replay: MAILLAB_FUZZ_SEED=<seed> (see src/shared/fuzz.test-helper.ts); fast-check prints seed and path on failure.
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { LineClient } from '../harness/clients/line-client.js';
import { answered, binary, chunked, commandLines, exchange, fuzzParameters, lineEnd, longLine, replyLines, rssMiB } from '../shared/fuzz.test-helper.js';
import { startLmtp } from './lmtp.js';
import { startPop3 } from './pop3.js';
import type { MailboxService } from './service.js';
import { MaildirStore } from './store.js';
import { BOB, CAROL, connectLine, TEST_USERS, testContext, type TestContext } from './testkit.test-helper.js';

const POP3_VERBS = ['USER', 'PASS', 'APOP', 'STAT', 'LIST', 'RETR', 'DELE', 'NOOP', 'RSET', 'QUIT', 'TOP', 'UIDL', 'CAPA', 'AUTH', 'AUTH PLAIN', 'STLS'];
const LMTP_VERBS = ['LHLO', 'HELO', 'EHLO', 'MAIL FROM:', 'RCPT TO:', 'DATA', 'RSET', 'NOOP', 'QUIT', 'VRFY', 'BDAT', 'STARTTLS'];
const SMTP_REPLY = /^[2-5]\d\d(?:[ -]|$)/;
const RSS_BOUND_MIB = 256;
const BOB_PASSWORD = TEST_USERS.find((u) => u.address === BOB)!.password;
const CAROL_PASSWORD = TEST_USERS.find((u) => u.address === CAROL)!.password;

let ctx: TestContext;
let store: MaildirStore;
let pop3: MailboxService;
let lmtp: MailboxService;
let rssBefore: number;

beforeAll(async () => {
  ctx = await testContext();
  store = new MaildirStore({ root: ctx.config.dataDir, users: ctx.config.users, fsync: true });
  await store.open();
  for (const user of [BOB, CAROL]) await store.deliver(user, Buffer.from(`Subject: hello ${user}\r\nMessage-ID: <seed-${user}>\r\n\r\n.line with a dot\r\n+OK a line like a reply\r\n`));
  pop3 = await startPop3({ store, ctx, host: '127.0.0.1', port: 0 });
  lmtp = await startLmtp({ store, ctx, host: '127.0.0.1', port: 0 });
  rssBefore = rssMiB();
});

afterAll(async () => {
  await pop3?.close();
  await lmtp?.close();
  await store?.close();
  await ctx?.cleanup();
});

/**
 * The POP3 output is status lines (+OK, -ERR), SASL continuations ("+ "), and multi-line answers: after a +OK, the
 * lines up to a lone "." (a multi-line answer starts with a line that is not a status line).
 */
function expectPop3Responses(data: Buffer, input: string): void {
  const lines = replyLines(data);
  expect(lines[0] ?? '', 'the greeting').toMatch(/^\+OK /);
  let multi = false;
  let afterOk = false;
  for (const line of lines) {
    if (multi) {
      if (line === '.') multi = false;
      continue;
    }
    if (afterOk && !/^(?:\+OK|-ERR)(?: |$)/.test(line) && !/^\+ /.test(line)) {
      multi = line !== '.';
      afterOk = false;
      continue;
    }
    expect(line, `a POP3 response to ${JSON.stringify(input.slice(0, 1500))}`).toMatch(/^(?:\+OK|-ERR|\+)(?: |$)/);
    afterOk = line.startsWith('+OK');
  }
}

describe('POP3 fuzzing', () => {
  let bystander: LineClient;

  beforeAll(async () => {
    // Carol's session holds her maildrop through the fuzzing (the fuzzer logs in as bob).
    bystander = await connectLine(pop3.endpoint.port);
    expect(await bystander.line()).toMatch(/^\+OK/);
    bystander.send(`USER ${CAROL}`);
    expect((await bystander.pop3Response()).ok).toBe(true);
    bystander.send(`PASS ${CAROL_PASSWORD}`);
    expect((await bystander.pop3Response()).ok).toBe(true);
  });

  afterAll(() => bystander?.close());

  it('answers arbitrary input, before and after login, with POP3 responses only', async () => {
    const login = fc.constantFrom<Buffer[]>([], [Buffer.from(`USER ${BOB}\r\nPASS ${BOB_PASSWORD}\r\n`)], [Buffer.from(`AUTH PLAIN ${Buffer.from(`\0${BOB}\0${BOB_PASSWORD}`).toString('base64')}\r\n`)]);
    await fc.assert(
      fc.asyncProperty(login, chunked(commandLines(POP3_VERBS, fc.oneof(binary(300), longLine(100_000)))), async (prefix, chunks) => {
        const input = Buffer.concat(chunks).toString('latin1');
        const { data, closed } = await exchange(pop3.endpoint.port, [...prefix, ...chunks], { greeting: true, until: answered(/\n/.test(input), prefix.length) });
        expectPop3Responses(data, input);
        if (/\n/.test(input) && !closed) expect(replyLines(data).length).toBeGreaterThan(1 + prefix.length);
      }),
      fuzzParameters(120, 5000),
    );
  });

  it('keeps memory bounded and the bystander session working', async () => {
    expect(rssMiB() - rssBefore, 'RSS growth in MiB').toBeLessThan(RSS_BOUND_MIB);
    bystander.send('STAT');
    expect((await bystander.pop3Response()).ok).toBe(true);
    bystander.send('RETR 1');
    expect((await bystander.pop3Response()).ok).toBe(true);
    expect((await bystander.dotBody()).toString()).toContain('a line like a reply');
  });
});

const stuff = (line: string) => (line.startsWith('.') ? `.${line}` : line);
const bodyLine = fc.tuple(fc.constantFrom('', '.', '..'), fc.string({ unit: fc.integer({ min: 0x20, max: 0x7e }).map((c) => String.fromCharCode(c)), maxLength: 60 })).map(([d, r]) => d + r);
let seq = 0;

/**
 * One LMTP transaction of `lines` to `rcpts`: every reply an SMTP reply, one reply per accepted recipient after the data
 * (RFC 2033 §4.2), and each stored copy byte for byte what was sent, dots unstuffed.
 */
async function storesByteForByte({ lines, rcpts, end }: { lines: string[]; rcpts: string[]; end: string }): Promise<void> {
  const id = `<lmtp-fuzz-${++seq}-${Date.now()}@sender.test>`;
  const body = [`Subject: fuzz ${seq}`, `Message-ID: ${id}`, '', ...lines];
  const script = [Buffer.from(`LHLO fuzz.test\r\nMAIL FROM:<alice@sender.test>\r\n${rcpts.map((r) => `RCPT TO:<${r}>\r\n`).join('')}DATA\r\n`), Buffer.from(`${body.map(stuff).join('\r\n')}\r\n.${end}`)];
  // Every reply: greeting, LHLO, MAIL, each RCPT, DATA, and one per accepted recipient after the data.
  const complete = (data: Buffer) => {
    const finals = replyLines(data).filter((l) => /^\d{3} /.test(l));
    const ok = finals.slice(3, 3 + rcpts.length).filter((l) => l.startsWith('250')).length;
    return finals.length >= 3 + rcpts.length + (ok ? 1 + ok : 0);
  };
  const { data } = await exchange(lmtp.endpoint.port, script, { greeting: true, until: end === '\r\n' ? complete : undefined });
  const finals = replyLines(data).filter((l) => /^\d{3} /.test(l));
  for (const line of replyLines(data)) expect(line).toMatch(SMTP_REPLY);
  if (end !== '\r\n') return;
  const accepted = finals.slice(3, 3 + rcpts.length).filter((l) => l.startsWith('250'));
  if (!accepted.length) return;
  // RFC 2033 §4.2: after the data, one reply per accepted RCPT.
  const perRecipient = finals.slice(3 + rcpts.length + 1);
  expect(perRecipient, `replies after the data: ${finals.join(' | ')}`).toHaveLength(accepted.length);
  const sent = body.join('\r\n') + '\r\n';
  for (const user of new Set(rcpts.filter((r) => r !== 'nobody@receiver.test'))) {
    const copies = [];
    for (const m of await store.messages(user, 'INBOX')) {
      const raw = await store.read(user, 'INBOX', m.uid);
      if (raw.includes(id)) copies.push(raw.toString('latin1'));
    }
    expect(copies.length, `copies of ${id} for ${user}`).toBeGreaterThanOrEqual(1);
    for (const copy of copies) expect(copy.endsWith(sent), `stored ${JSON.stringify(copy.slice(-200))}`).toBe(true);
  }
}

describe('LMTP fuzzing', () => {
  it('answers arbitrary input with SMTP replies only', async () => {
    await fc.assert(
      fc.asyncProperty(fc.boolean(), chunked(commandLines(LMTP_VERBS, fc.oneof(binary(300), longLine(100_000)))), async (lhlo, chunks) => {
        const first = lhlo ? [Buffer.from('LHLO fuzz.test\r\n')] : [];
        const { data, closed } = await exchange(lmtp.endpoint.port, [...first, ...chunks], { greeting: true, until: answered(/\n/.test(Buffer.concat(chunks).toString('latin1'))) });
        const lines = replyLines(data);
        expect(lines[0] ?? '', 'the greeting').toMatch(/^220 /);
        for (const line of lines) expect(line, `an LMTP reply to ${JSON.stringify(Buffer.concat(chunks).toString('latin1').slice(0, 1500))}`).toMatch(SMTP_REPLY);
        if (/\n/.test(Buffer.concat(chunks).toString('latin1')) && !closed) expect(lines.length).toBeGreaterThan(1);
      }),
      fuzzParameters(100, 5000),
    );
  });

  it('stores DATA accepted with 250 byte for byte (dots unstuffed), one reply per recipient', async () => {
    const input = fc.record({ lines: fc.array(bodyLine, { maxLength: 20 }), rcpts: fc.array(fc.constantFrom(BOB, CAROL, 'nobody@receiver.test'), { minLength: 1, maxLength: 4 }), end: lineEnd });
    await fc.assert(fc.asyncProperty(input, storesByteForByte), fuzzParameters(60, 5000));
  });

  // A case the fuzzer found (a wrong expectation of the test, not a server bug): the verdict came later than the quiet
  // time the exchange waited then; it now waits for every reply.
  it('regression (seed 21): an empty body to one recipient gets its one reply after the data', async () => {
    await storesByteForByte({ lines: [], rcpts: [CAROL], end: '\r\n' });
  });

  it('keeps memory bounded and a well-behaved LMTP client working', async () => {
    expect(rssMiB() - rssBefore, 'RSS growth in MiB').toBeLessThan(RSS_BOUND_MIB);
    const client = await connectLine(lmtp.endpoint.port);
    expect(await client.line()).toMatch(/^220 /);
    client.send('LHLO well.behaved.test');
    expect((await client.smtpReply()).code).toBe(250);
    client.send('MAIL FROM:<alice@sender.test>');
    expect((await client.smtpReply()).code).toBe(250);
    client.send(`RCPT TO:<${CAROL}>`);
    expect((await client.smtpReply()).code).toBe(250);
    client.send('DATA');
    expect((await client.smtpReply()).code).toBe(354);
    client.write('Subject: after the fuzzing\r\n\r\nfine\r\n.\r\n');
    expect((await client.smtpReply()).code).toBe(250);
    client.close();
  });
});
