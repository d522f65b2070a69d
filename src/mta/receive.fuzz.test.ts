// Fuzzing the MTA's receivers (receive.ts: submission on 587 with AUTH, SMTP on 25 for its local domains), the
// whole role in process (startMta) with its real queue on a temporary directory, over real sockets: arbitrary
// command lines, long lines, binary, bare CR/LF, torn and pipelined commands, before and after AUTH. What must hold:
// every reply line is an SMTP reply (`[2-5]xx`), nothing crashes, memory stays bounded, and a well-behaved
// submission session opened alongside still gets its message queued at the end.
// Nothing leaves the machine: the resolver and the local delivery point at a closed port on 127.0.0.1, and
// retries are an hour away, so accepted messages just wait in the queue.
// Replay: MAILLAB_FUZZ_SEED=<seed> (see src/shared/fuzz.test-helper.ts); fast-check prints seed and path on failure.
import { promises as fs } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { LineClient } from '../harness/clients/line-client.js';
import { connectLine } from '../mailbox/testkit.test-helper.js';
import type { MtaNodeConfig } from '../shared/config.js';
import { EventLog } from '../shared/events.js';
import { answered, binary, chunked, commandLines, exchange, fuzzParameters, longLine, replyLines, rssMiB } from '../shared/fuzz.test-helper.js';
import type { RunningRole } from '../shared/node.js';
import { startMta } from './index.js';

const SMTP_VERBS = ['HELO', 'EHLO', 'MAIL FROM:', 'RCPT TO:', 'DATA', 'RSET', 'NOOP', 'QUIT', 'VRFY', 'EXPN', 'HELP', 'AUTH PLAIN', 'AUTH LOGIN', 'AUTH', 'STARTTLS', 'BDAT'];
const SMTP_REPLY = /^[2-5]\d\d(?:[ -]|$)/;
const RSS_BOUND_MIB = 256;
const AUTH = `AUTH PLAIN ${Buffer.from('\0alice@sender.test\0alice-secret').toString('base64')}\r\n`;

let dataDir: string;
let mta: RunningRole;
let events: EventLog;
let bystander: LineClient;
let rssBefore: number;

/** A port on 127.0.0.1 where nothing listens. */
async function closedPort(): Promise<number> {
  const server = net.createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as net.AddressInfo;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

beforeAll(async () => {
  dataDir = await fs.mkdtemp(path.join(os.tmpdir(), 'maillab-mta-fuzz-'));
  const nowhere = await closedPort();
  const config: MtaNodeConfig = {
    name: 'mta',
    role: 'mta',
    hostname: 'mta.sender.test',
    address: '127.0.0.1',
    dataDir,
    controlPort: 0,
    resolver: { host: '127.0.0.1', port: nowhere },
    greetingDelayMs: 0,
    fsync: true,
    ports: { smtp: 0, submission: 0 },
    localDomains: ['sender.test'],
    localDelivery: { host: '127.0.0.1', port: nowhere },
    users: [{ address: 'alice@sender.test', password: 'alice-secret' }],
    retry: { schedule: [3_600_000], maxLifetimeMs: 7_200_000 },
    relayPort: nowhere,
    connectTimeoutMs: 500,
  };
  events = new EventLog('mta');
  mta = await startMta({ config, events, log: () => undefined });
  bystander = await connectLine(mta.services.submission!.port);
  expect(await bystander.line()).toMatch(/^220 /);
  bystander.send('EHLO bystander.sender.test');
  expect((await bystander.smtpReply()).code).toBe(250);
  bystander.write(AUTH);
  expect((await bystander.smtpReply()).code).toBe(235);
  rssBefore = rssMiB();
});

afterAll(async () => {
  bystander?.close();
  await mta?.stop();
  if (dataDir) await fs.rm(dataDir, { recursive: true, force: true });
});

const input = fc.tuple(fc.constantFrom('', 'EHLO fuzz.sender.test\r\n', `EHLO fuzz.sender.test\r\n${AUTH}`), chunked(commandLines(SMTP_VERBS, fc.oneof(binary(300), longLine(200_000)))));

describe('MTA receivers fuzzing', () => {
  for (const service of ['submission', 'smtp'] as const) {
    it(`answers arbitrary input on ${service} with SMTP replies only`, async () => {
      await fc.assert(
        fc.asyncProperty(input, async ([prefix, chunks]) => {
          const first = prefix ? [Buffer.from(prefix)] : [];
          const sent = Buffer.concat(chunks).toString('latin1');
          const { data, closed } = await exchange(mta.services[service]!.port, [...first, ...chunks], { greeting: true, until: answered(/\n/.test(sent)) });
          const lines = replyLines(data);
          expect(lines[0] ?? '', 'the greeting').toMatch(/^220 /);
          for (const line of lines) expect(line, `a reply to ${JSON.stringify(sent.slice(0, 1500))}`).toMatch(SMTP_REPLY);
          if (/\n/.test(sent) && !closed) expect(lines.length).toBeGreaterThan(1);
        }),
        fuzzParameters(100, 5000),
      );
    });
  }

  it('keeps memory bounded and the bystander submission session working', async () => {
    expect(rssMiB() - rssBefore, 'RSS growth in MiB').toBeLessThan(RSS_BOUND_MIB);
    bystander.send('MAIL FROM:<alice@sender.test>');
    expect((await bystander.smtpReply()).code).toBe(250);
    bystander.send('RCPT TO:<bob@receiver.test>');
    expect((await bystander.smtpReply()).code).toBe(250);
    bystander.send('DATA');
    expect((await bystander.smtpReply()).code).toBe(354);
    bystander.write('Subject: bystander\r\nMessage-ID: <mta-bystander@sender.test>\r\n\r\nstill here\r\n.\r\n');
    expect((await bystander.smtpReply()).code).toBe(250);
    expect(events.since(0).some((e) => e.kind === 'queued' && e.messageId === '<mta-bystander@sender.test>')).toBe(true);
  });
});
