// Issue 9, finding 1: a client that sends far more than the size limit cannot make a node buffer it. Each SMTP
// service (MX 25, MTA 25, MTA 587) gets a message many times its limit over a raw socket; the node answers
// `552 5.3.4` (at once, closing the connection, once the client is 1 MiB past the limit: OVERSIZE_GRACE), and its
// peak RSS (VmHWM, reset just before through /proc/<pid>/clear_refs) grows by at most twice the limit plus a
// constant, whatever was sent: the kept copy of the message up to the limit, and the socket buffers it was copied
// from, which the garbage collector has not freed yet. The nodes are real child processes (local runtime): their
// pid is in GET /health.
//
// MAILLAB_OVERSIZE_MB=<n> sends n MiB instead, and MAILLAB_OVERSIZE_LIMIT_MB=<n> sets the limit (0: the roles'
// defaults, 25 MiB MTA / 50 MiB MX), to measure the ceilings by hand; the assertions then use that limit.
import { readFileSync, writeFileSync } from 'node:fs';
import { once } from 'node:events';
import net from 'node:net';
import tls from 'node:tls';
import { describe, expect, it } from 'vitest';
import type { StartedLab } from '../src/harness/index.js';
import { useLab } from './support/lab.js';

const MiB = 1024 * 1024;
const LIMIT_MB = Number(process.env.MAILLAB_OVERSIZE_LIMIT_MB ?? 1);
const SENT_MB = Number(process.env.MAILLAB_OVERSIZE_MB ?? 48);
/** Room for the node's own work (code warming up, parser and socket buffers), whatever was sent. */
const CONSTANT = 16 * MiB;
/** The peak growth allowed: the kept copy up to the limit, the socket buffers it came from, and the constant. */
const ceiling = (limit: number) => 2 * limit + CONSTANT;

const lab = useLab((l) => l.with((def) => {
  if (LIMIT_MB > 0) def.smtpLimits = { ...def.smtpLimits, maxMessageSize: LIMIT_MB * MiB };
}));

function status(pid: number, field: 'VmRSS' | 'VmHWM'): number {
  const match = new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  if (!match) throw new Error(`no ${field} in /proc/${pid}/status`);
  return Number(match[1]) * 1024;
}

/**
 * Speaks SMTP on a raw socket: `commands` one by one (each reply must start with the expected code), then DATA. A
 * `STARTTLS` command upgrades the socket, verifying the server with `tlsOptions` (passwords go only over TLS).
 */
async function sendOversized(endpoint: { host: string; port: number }, commands: [string, number][], bytes: number, tlsOptions?: { ca: string; servername: string }): Promise<{ reply: string; written: number }> {
  let socket: net.Socket = net.connect(endpoint.port, endpoint.host);
  let buffer = '';
  const waiting: (() => void)[] = [];
  let rejectClosed!: (err: Error) => void;
  const closed = new Promise<never>((_, reject) => (rejectClosed = reject));
  closed.catch(() => undefined);
  const onData = (chunk: Buffer) => {
    buffer += chunk.toString('latin1');
    waiting.splice(0).forEach((w) => w());
  };
  const onClose = () => rejectClosed(new Error(`connection closed; unread: ${buffer}`));
  const listen = (s: net.Socket) => {
    s.on('data', onData);
    s.on('close', onClose);
    s.on('error', () => undefined); // a node that hangs up mid-DATA: the writes fail, the reply was read
  };
  listen(socket);
  const reply = async (): Promise<string> => {
    for (;;) {
      const match = /^(\d{3}) .*\r\n/m.exec(buffer);
      if (match) {
        const end = match.index + match[0].length;
        const text = buffer.slice(0, end - 2);
        buffer = buffer.slice(end);
        return text;
      }
      await Promise.race([new Promise<void>((resolve) => waiting.push(resolve)), closed]);
    }
  };
  const upgrade = async () => {
    if (!tlsOptions) throw new Error('STARTTLS without the lab CA to verify the server with');
    socket.off('data', onData);
    socket.off('close', onClose);
    const secure = tls.connect({ socket, ...tlsOptions });
    await once(secure, 'secureConnect');
    socket = secure;
    listen(socket);
  };
  try {
    expect(await reply()).toMatch(/^220 /);
    for (const [line, code] of [['EHLO memory.test', 250], ...commands, ['DATA', 354]] as [string, number][]) {
      socket.write(`${line}\r\n`);
      const answer = await reply();
      expect(answer.slice(answer.lastIndexOf('\n') + 1), `reply to ${line.split(' ')[0]}`).toMatch(new RegExp(`^${code} `));
      if (line === 'STARTTLS') await upgrade();
    }
    const line = `${'x'.repeat(1022)}\r\n`;
    const chunk = Buffer.from(`Subject: big\r\n\r\n${line.repeat(256)}`.slice(0, 256 * 1024).replace(/.{2}$/s, '\r\n'));
    // The node may answer before the end (and stop reading): then sending stops.
    let answered = false;
    const final = reply().finally(() => (answered = true));
    final.catch(() => undefined);
    let written = 0;
    for (; written < bytes && !answered; written += chunk.length) {
      if (!socket.write(chunk)) await Promise.race([new Promise((resolve) => socket.once('drain', resolve)), final.catch(() => undefined)]);
    }
    if (!answered) socket.write('\r\n.\r\n');
    return { reply: await final, written };
  } finally {
    socket.destroy();
  }
}

async function peakGrowth<T>(started: StartedLab, node: string, send: () => Promise<T>): Promise<T & { growth: number }> {
  const { pid } = await started.node(node).health();
  let before: number;
  try {
    writeFileSync(`/proc/${pid}/clear_refs`, '5'); // resets VmHWM to the current RSS
    before = status(pid, 'VmRSS');
  } catch (err) {
    // Without clear_refs the growth is measured from the peak so far: it can only come out smaller.
    console.log(`[18-oversize-memory] cannot reset the peak RSS of ${node} (${(err as Error).message}): measuring from its peak so far`);
    before = status(pid, 'VmHWM');
  }
  const result = await send();
  return { ...result, growth: status(pid, 'VmHWM') - before };
}

const MB = (n: number) => `${(n / MiB).toFixed(1)} MiB`;

describe('oversized messages are not buffered (issue 9, finding 1)', () => {
  const cases: { name: string; node: string; service: string; limit: number; commands: [string, number][] }[] = [
    { name: 'MX 25', node: 'mx', service: 'smtp', limit: (LIMIT_MB || 50) * MiB, commands: [['MAIL FROM:<alice@sender.test>', 250], ['RCPT TO:<bob@receiver.test>', 250]] },
    { name: 'MTA 25', node: 'mta', service: 'smtp', limit: (LIMIT_MB || 25) * MiB, commands: [['MAIL FROM:<someone@elsewhere.test>', 250], ['RCPT TO:<alice@sender.test>', 250]] },
    {
      name: 'MTA 587',
      node: 'mta',
      service: 'submission',
      limit: (LIMIT_MB || 25) * MiB,
      commands: [['STARTTLS', 220], ['EHLO memory.test', 250], [`AUTH PLAIN ${Buffer.from('\0alice@sender.test\0alice-secret').toString('base64')}`, 235], ['MAIL FROM:<alice@sender.test>', 250], ['RCPT TO:<bob@receiver.test>', 250]],
    },
  ];

  for (const c of cases) {
    it(`${c.name}: ${SENT_MB} MiB against a ${c.limit / MiB} MiB limit → 552 5.3.4, peak RSS grows by less than ${ceiling(c.limit) / MiB} MiB`, async () => {
      if (lab().runtimeKind !== 'local') {
        console.log(`[18-oversize-memory] not measured: the ${lab().runtimeKind} runtime's node pids are not this host's /proc entries`);
        return;
      }
      const sent = SENT_MB * MiB;
      const { reply, written, growth } = await peakGrowth(lab(), c.node, () => sendOversized(lab().node(c.node).service(c.service), c.commands, sent, lab().tlsFor(c.node)));
      console.log(`[18-oversize-memory] ${c.name}: offered ${MB(sent)} (written before the reply: ${MB(written)}), limit ${MB(c.limit)}: peak RSS grew by ${MB(growth)}`);
      expect(reply).toBe(`552 5.3.4 message exceeds the size limit of ${c.limit} octets`);
      await lab().waitFor({ kind: 'rejected', node: c.node, detail: { stage: 'DATA', reply } });
      expect(growth, `peak RSS growth of ${c.name} (${MB(growth)}) after ${MB(sent)} sent`).toBeLessThan(ceiling(c.limit));
    });
  }
});
