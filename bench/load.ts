// Load and measurement tools shared by every benchmark figure, used the same way for maillab and for the peer.
import { promises as fs, watch } from 'node:fs';
import net from 'node:net';
import tls from 'node:tls';
import path from 'node:path';
import nodemailer from 'nodemailer';

export interface Target {
  host: string;
  port: number;
  auth?: { user: string; pass: string };
  /** Submit with STARTTLS required (nodemailer `requireTLS`), trusting this CA for this name; absent: plaintext. */
  tls?: { ca: string; servername: string };
  /**
   * The address to connect from: the lab's MX checks SPF and enforces DMARC, so mail handed to it directly must come
   * from the address sender.test's SPF names (the MTA's), as relayed mail does.
   */
  localAddress?: string;
}

export interface Stats {
  median: number;
  min: number;
  max: number;
  samples: number[];
}

export function stats(samples: number[]): Stats {
  const sorted = [...samples].sort((a, b) => a - b);
  const mid = Math.floor(sorted.length / 2);
  const median = sorted.length % 2 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2;
  return { median, min: sorted[0]!, max: sorted[sorted.length - 1]!, samples };
}

/** A message with a body of `bodyBytes` (1 KiB unless given) under a few headers, unique per index. */
export function message(index: number, runId: string, bodyBytes = 1024): { raw: string; messageId: string } {
  const messageId = `<bench-${runId}-${index}@sender.test>`;
  const line = 'The quick brown fox jumps over the lazy dog 0123456789.\r\n';
  const body = line.repeat(Math.ceil(bodyBytes / line.length)).slice(0, bodyBytes - 2) + '\r\n';
  const raw = `From: alice@sender.test\r\nTo: bob@receiver.test\r\nSubject: bench ${index}\r\nMessage-ID: ${messageId}\r\nDate: ${new Date().toUTCString()}\r\n\r\n${body}`;
  return { raw, messageId };
}

/** Submits `count` messages (bodies of `bodyBytes`) over `connections` persistent SMTP connections; resolves when all got 250. */
export async function submitMany(target: Target, count: number, connections: number, runId: string, bodyBytes = 1024): Promise<{ ms: number }> {
  const transport = nodemailer.createTransport({
    host: target.host,
    port: target.port,
    secure: false,
    ...(target.tls ? { requireTLS: true, tls: { ...target.tls } } : { ignoreTLS: true }),
    pool: true,
    maxConnections: connections,
    maxMessages: Infinity,
    ...(target.auth ? { auth: target.auth } : {}),
    ...(target.localAddress ? { localAddress: target.localAddress } : {}),
  });
  const started = performance.now();
  let next = 0;
  const worker = async () => {
    while (next < count) {
      const i = next++;
      const { raw } = message(i, runId, bodyBytes);
      await transport.sendMail({ envelope: { from: 'alice@sender.test', to: ['bob@receiver.test'] }, raw });
    }
  };
  try {
    await Promise.all(Array.from({ length: connections }, worker));
  } finally {
    transport.close();
  }
  return { ms: performance.now() - started };
}

/** Messages in a Maildir folder (new/ and cur/). */
export async function maildirCount(maildir: string): Promise<number> {
  let n = 0;
  for (const sub of ['new', 'cur']) n += (await fs.readdir(path.join(maildir, sub)).catch(() => [])).length;
  return n;
}

/** The names of the messages in a Maildir folder, without the `:2,<flags>` an IMAP client's move to cur/ adds. */
export async function maildirNames(maildir: string): Promise<Set<string>> {
  const names = new Set<string>();
  for (const sub of ['new', 'cur']) for (const f of await fs.readdir(path.join(maildir, sub)).catch(() => [] as string[])) names.add(f.split(':')[0]!);
  return names;
}

/**
 * The first message in the Maildir, not among `before`, that contains `marker` (e.g. a run's Message-ID prefix), as
 * stored: looked for in new/ and cur/, up to `tries` files. Undefined when there is none.
 */
export async function findDelivered(maildir: string, before: Set<string>, marker: string, tries = 50): Promise<string | undefined> {
  let tried = 0;
  for (const sub of ['new', 'cur']) {
    for (const f of await fs.readdir(path.join(maildir, sub)).catch(() => [] as string[])) {
      if (before.has(f.split(':')[0]!)) continue;
      if (tried++ >= tries) return undefined;
      const text = await fs.readFile(path.join(maildir, sub, f), 'latin1').catch(() => undefined);
      if (text?.includes(marker)) return text;
    }
  }
  return undefined;
}

/** Resolves when the Maildir holds at least `count` messages; watches new/ and re-counts on every change. */
export async function waitForMaildir(maildir: string, count: number, timeoutMs: number): Promise<void> {
  await fs.mkdir(path.join(maildir, 'new'), { recursive: true });
  if ((await maildirCount(maildir)) >= count) return;
  await new Promise<void>((resolve, reject) => {
    let checking = false;
    let again = false;
    const watcher = watch(path.join(maildir, 'new'), () => void check());
    const timer = setTimeout(async () => {
      watcher.close();
      reject(new Error(`timed out after ${timeoutMs} ms: ${await maildirCount(maildir)} of ${count} messages in ${maildir}`));
    }, timeoutMs);
    const check = async () => {
      if (checking) {
        again = true;
        return;
      }
      checking = true;
      do {
        again = false;
        if ((await maildirCount(maildir)) >= count) {
          clearTimeout(timer);
          watcher.close();
          return resolve();
        }
      } while (again);
      checking = false;
    };
    void check();
  });
}

/**
 * Time until `host:port` accepts a connection and sends a first line (a greeting); retries until `timeoutMs`. With
 * `implicitTls` (submissions, imaps, pop3s, HTTPS: TLS from the first byte), the greeting is read after a verified
 * handshake; with `request` (HTTP), that is sent first and the status line is the greeting.
 */
export async function greeting(host: string, port: number, timeoutMs = 10_000, implicitTls?: { ca: string; servername: string }, request?: string): Promise<string> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      return await new Promise<string>((resolve, reject) => {
        // A server that speaks second (HTTP) is sent `request` once connected; its first line counts as the greeting.
        const speak = () => request !== undefined && socket.write(request);
        const socket = implicitTls ? tls.connect({ host, port, ...implicitTls }, speak) : net.connect(port, host, speak);
        socket.setTimeout(2000, () => socket.destroy(new Error('no greeting')));
        socket.once('data', (d) => {
          socket.destroy();
          resolve(d.toString('latin1').split('\r\n')[0]!);
        });
        socket.once('error', reject);
      });
    } catch (err) {
      if (Date.now() > deadline) throw err;
      await new Promise((r) => setTimeout(r, 5));
    }
  }
}

/** Sum of RSS and (where /proc has it) PSS of the processes, in MiB. */
export async function memory(pids: number[]): Promise<{ rssMiB: number; pssMiB?: number }> {
  let rss = 0;
  let pss = 0;
  let havePss = true;
  for (const pid of pids) {
    const status = await fs.readFile(`/proc/${pid}/status`, 'utf8').catch(() => undefined);
    const rollup = await fs.readFile(`/proc/${pid}/smaps_rollup`, 'utf8').catch(() => undefined);
    // A process exiting between listing and reading (Postfix's short-lived smtpd, say) has no memory map left to
    // read and holds nothing any more: it counts in neither sum.
    if (status === undefined || (rollup !== undefined && rollup.trim() === '') || (rollup === undefined && (await exiting(pid)))) continue;
    rss += Number(/VmRSS:\s+(\d+)/.exec(status)?.[1] ?? 0);
    const p = rollup && /Pss:\s+(\d+)/.exec(rollup);
    if (p) pss += Number(p[1]);
    else havePss = false;
  }
  return { rssMiB: rss / 1024, ...(havePss ? { pssMiB: pss / 1024 } : {}) };
}

/** A process gone, a zombie, or exiting (state X/Z in /proc/<pid>/stat, or no stat at all). */
async function exiting(pid: number): Promise<boolean> {
  const stat = await fs.readFile(`/proc/${pid}/stat`, 'utf8').catch(() => undefined);
  return stat === undefined || /^[ZXx]/.test(stat.slice(stat.lastIndexOf(')') + 2));
}

/** Samples memory every `everyMs` while `work` runs; returns the peak. */
export async function peakMemoryDuring<T>(pids: () => Promise<number[]>, work: Promise<T>, everyMs = 100): Promise<{ result: T; peak: { rssMiB: number; pssMiB?: number } }> {
  let peak = { rssMiB: 0 } as { rssMiB: number; pssMiB?: number };
  let done = false;
  const sampler = (async () => {
    while (!done) {
      const m = await memory(await pids());
      if (m.rssMiB > peak.rssMiB) peak = m;
      await new Promise((r) => setTimeout(r, everyMs));
    }
  })();
  try {
    return { result: await work, peak };
  } finally {
    done = true;
    await sampler;
  }
}
