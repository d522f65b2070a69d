// `npm run bench`: boot time, latency, throughput, inbound MX rate and memory of the default lab, and the same
// flows on Postfix + Dovecot in the same run, in interleaved rounds (issue 17): each round measures a figure on
// maillab and on the peer one right after the other, the order alternating from round to round, and each goal is
// judged on the median of the per-round ratios, printed with their min–max. Then throughput and latency again with
// TLS on every hop (each TLS figure only when a delivered message's Received headers prove that every SMTP hop of
// that run used TLS), and the disk's durable-write limit, measured in the same rounds on the lab's filesystem. It
// measures and judges, but exits 0 whatever the verdicts.
import { randomBytes } from 'node:crypto';
import { promises as fs } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { ImapFlow } from 'imapflow';
import nodemailer from 'nodemailer';
import defaultLab from '../lab/default.js';
import { Lab, type StartedLab } from '../src/harness/lab.js';
import { packageRoot } from '../src/harness/runtime/types.js';
import { DnsAnswerCache } from '../src/dns/cache.js';
import { createLabResolver, resolveMxTargets, type MxResolver } from '../src/dns/index.js';
import type { Endpoint } from '../src/shared/config.js';
import { durableWrites } from './disk.js';
import { bareNodes, floorLines } from './floor.js';
import { lastSuiteSection, measureSuite, suiteLines } from './suite.js';
import { Figures, figureJson, figuresTable, fmt, fmtRatio, goalsTable, judge, orderOf, ratioStats, statsOf, type FigureDef, type Goal, type Who } from './figures.js';
import { linePlot } from './plot.js';
import { profilesByPid, summarise, summaryLines } from './profile.js';
import { runCycles, seedMailbox, total, type CycleResult, type ImapTarget } from './imap-cycles.js';
import { imapSession, seedMaildir, type ImapTimings } from './mailbox-size.js';
import { findDelivered, greeting, maildirCount, maildirNames, memory, message, peakMemoryDuring, stats, submitMany, waitForMaildir, type Stats, type Target } from './load.js';
import { startPeer, type PeerLab } from './peer.js';

/** Rounds of every paired figure (each round: maillab and the peer once). */
const RUNS = Number(process.env.BENCH_RUNS ?? 5);
/** Messages per latency round (after 3 of warm-up); the round's value is their median. */
const LATENCY_SAMPLES = Number(process.env.BENCH_LATENCY_SAMPLES ?? 10);
const THROUGHPUT_COUNT = Number(process.env.BENCH_COUNT ?? 2000);
const CONNECTIONS = 20;
/** Seconds of durable writes per round for the disk's limit. */
const DISK_SECONDS = Number(process.env.BENCH_DISK_SECONDS ?? 2);
const IMAP_CLIENTS = Number(process.env.BENCH_IMAP_CLIENTS ?? 10);
const IMAP_SECONDS = Number(process.env.BENCH_IMAP_SECONDS ?? 10);
const IMAP_SEED_MESSAGES = 20;
/** The IMAP cycles' goal: at least this many times Dovecot's cycles per second, with zero state errors. */
const IMAP_GOAL_RATIO = 1.5;
for (const [name, value] of Object.entries({ BENCH_RUNS: RUNS, BENCH_LATENCY_SAMPLES: LATENCY_SAMPLES, BENCH_COUNT: THROUGHPUT_COUNT, BENCH_IMAP_CLIENTS: IMAP_CLIENTS })) {
  if (!Number.isInteger(value) || value < 1) throw new Error(`${name}=${process.env[name]}: a whole number from 1 is needed`);
}
/**
 * Partial runs: `BENCH_ONLY=imap`, the IMAP cycles figure alone (results go to bench/results/latest-imap.{json,md});
 * `BENCH_ONLY=tls`, the TLS throughput and latency figures alone (bench/results/latest-tls.{json,md});
 * `BENCH_ONLY=scale`, the size and connection series alone (bench/results/latest-scale.{json,md} and SVG plots);
 * `BENCH_ONLY=mailbox`, the mailbox-size series alone (bench/results/latest-mailbox.{json,md} and SVG plots);
 * `BENCH_ONLY=queue`, the queue-depth series alone (bench/results/latest-queue.{json,md});
 * `BENCH_ONLY=profile`, CPU profiles of the lab's nodes over a throughput run (bench/results/latest-profile.{json,md});
 * `BENCH_ONLY=suite`, the scenario suite's wall time on both runtimes (bench/results/latest-suite.{json,md}), which
 * every full run then prints for the record.
 */
const ONLY = process.env.BENCH_ONLY;
const PARTS = ['imap', 'tls', 'scale', 'mailbox', 'queue', 'profile', 'suite'];
if (ONLY !== undefined && !PARTS.includes(ONLY)) throw new Error(`BENCH_ONLY=${ONLY}: the partial runs are ${PARTS.map((p) => `BENCH_ONLY=${p}`).join(', ')}`);
/** Carol on both systems (same password in lab/default.ts and bench/peer.ts): bob's INBOX is full of throughput mail. */
const IMAP_USER = { user: 'carol@receiver.test', pass: 'carol-secret' };

const F = {
  bootLocal: { id: 'boot-local', title: 'Boot: default lab, local runtime, until every service greets', unit: 'ms', better: 'lower' },
  bootDocker: { id: 'boot-docker', title: 'Boot: default lab, docker runtime (cached images), until every service greets', unit: 'ms', better: 'lower' },
  latencyStored: { id: 'latency-stored', title: 'Latency: submission → stored in Maildir', unit: 'ms', better: 'lower' },
  latencyIdle: { id: 'latency-idle', title: 'Latency: submission → seen by an IMAP client in IDLE', unit: 'ms', better: 'lower' },
  throughput: { id: 'throughput', title: `Throughput: ${THROUGHPUT_COUNT} × 1 KiB, ${CONNECTIONS} connections, submission → Maildir`, unit: 'msg/s', better: 'higher' },
  mxRate: { id: 'mx-rate', title: `Inbound MX: ${THROUGHPUT_COUNT} × 1 KiB to the MX, until stored (MX → LMTP → Maildir)`, unit: 'msg/s', better: 'higher' },
  memoryIdle: { id: 'memory-idle', title: 'Memory idle (just booted, every service greeted): RSS sum', unit: 'MiB', better: 'lower' },
  memoryIdlePss: { id: 'memory-idle-pss', title: 'Memory idle (just booted, every service greeted): PSS sum', unit: 'MiB', better: 'lower' },
  floorBoot: { id: 'floor-boot', title: 'Floor: four bare Node processes (one per node of the default lab), started at once, until each listens', unit: 'ms', better: 'lower' },
  floorIdle: { id: 'floor-memory-idle', title: 'Floor: the same four bare Node processes, idle: RSS sum', unit: 'MiB', better: 'lower' },
  floorIdlePss: { id: 'floor-memory-idle-pss', title: 'Floor: the same four bare Node processes, idle: PSS sum', unit: 'MiB', better: 'lower' },
  memoryPeak: { id: 'memory-peak', title: 'Memory at throughput peak: RSS sum', unit: 'MiB', better: 'lower' },
  memoryPeakPss: { id: 'memory-peak-pss', title: 'Memory at throughput peak: PSS sum', unit: 'MiB', better: 'lower' },
  dnsLookup: { id: 'dns-mx-resolution', title: "DNS: one MX resolution as the MTA makes it (MX, then A and AAAA of the exchange), from the bench, lab DNS", unit: 'ms', better: 'lower' },
  dnsLookupKept: { id: 'dns-mx-resolution-kept', title: 'DNS: the same with A/AAAA kept for their TTL (src/dns/cache.ts with maxTtlSeconds; MX still asked)', unit: 'ms', better: 'lower' },
  diskLimit: { id: 'disk-durable-writes', title: 'Disk: durable 1 KiB writes from one thread (write, fsync, rename, directory fsync), lab data filesystem', unit: 'writes/s', better: 'higher' },
  diskFraction: { id: 'disk-fraction', title: 'Throughput as a share of the two-durable-store limit (durable writes/s ÷ 2)', unit: '%', better: 'higher' },
  tlsThroughput: { id: 'tls-throughput', title: `Throughput, TLS on every hop: ${THROUGHPUT_COUNT} × 1 KiB, ${CONNECTIONS} connections, submission (STARTTLS, AUTH) → Maildir`, unit: 'msg/s', better: 'higher' },
  tlsLatency: { id: 'tls-latency-stored', title: 'Latency: submission → stored in Maildir, TLS on every hop', unit: 'ms', better: 'lower' },
  imapCycles: { id: 'imap-cycles', title: `IMAP: ${IMAP_CLIENTS} concurrent clients, login→select→fetch→store→expunge→append→logout`, unit: 'cycles/s', better: 'higher' },
  imapErrors: { id: 'imap-state-errors', title: `IMAP state errors per ${IMAP_SECONDS} s round (same clients)`, unit: 'count', better: 'lower' },
} satisfies Record<string, FigureDef>;

/** Issue 17's goals, each judged on the median of the per-round ratios (or on maillab's own median). */
const GOALS: Goal[] = [
  { figure: F.throughput.id, what: `End-to-end throughput (${THROUGHPUT_COUNT} × 1 KiB, ${CONNECTIONS} connections)`, ratioAtLeast: 2.5 },
  { figure: F.latencyStored.id, what: 'Latency, submission → Maildir', ratioAtLeast: 1.5 },
  { figure: F.bootLocal.id, what: 'Local boot, until every service greets', ratioAtLeast: 2 },
  { figure: F.memoryIdle.id, what: 'Idle memory, RSS', ratioAtLeast: 1 },
  { figure: F.memoryIdlePss.id, what: 'Idle memory, PSS', ratioAtLeast: 1 },
  { figure: F.memoryPeakPss.id, what: 'Peak memory, PSS', ratioAtLeast: 1 },
  { figure: F.tlsThroughput.id, what: 'Throughput, TLS on every hop', ratioAtLeast: 1 },
  { figure: F.tlsLatency.id, what: 'Latency, TLS on every hop', ratioAtLeast: 1 },
  { figure: F.bootDocker.id, what: 'Docker boot, cached images', oursAtMost: 1500 },
  { figure: F.diskFraction.id, what: 'Throughput as a share of the disk limit (two durable stores)', oursAtLeast: 50 },
];

const figures = new Figures();
const notes: string[] = [];
/** Goals judged apart from GOALS (the IMAP goal also needs zero state errors), one line each. */
const goals: string[] = [];
/** What went wrong loudly (a TLS figure without proof that TLS was used), printed first and in bold. */
const errors: string[] = [];
const log = (m: string) => process.stderr.write(`bench: ${m}\n`);

/** The flows every system under test offers to the benchmark. */
interface System {
  name: string;
  submission: Target;
  mx: Target;
  imap: { host: string; port: number; user: string; pass: string };
  bobMaildir: string;
  pids(): Promise<number[]>;
  /**
   * TLS figures: the submission (STARTTLS required, then AUTH) and IMAP (STARTTLS required) trust these; every
   * delivered message checked must show TLS on both SMTP hops, and with `cipherInTrace` also the protocol and cipher
   * (Postfix writes it with `smtpd_tls_received_header`, maillab always).
   */
  tls?: { submission: { ca: string; servername: string }; imap: { ca: string; servername: string }; cipherInTrace: boolean };
}

/** A TLS figure's run without proof that TLS was used on every SMTP hop: no value for it, and a loud error. */
class TlsNotUsed extends Error {}

/** What every SMTP hop of a TLS run must have written (same host names on both systems), RFC 3848 protocol names. */
const TLS_HOPS = [
  { by: 'mta.sender.test', with: 'ESMTPSA' },
  { by: 'mx.receiver.test', with: 'ESMTPS' },
];

/** The Received headers of a stored message, unfolded, topmost first. */
function receivedHeaders(raw: string): string[] {
  const head = raw.split(/\r?\n\r?\n/)[0] ?? '';
  return head
    .replace(/\r?\n[ \t]+/g, ' ')
    .split(/\r?\n/)
    .filter((l) => /^received:/i.test(l));
}

/**
 * Proof that a run used TLS on every SMTP hop: one message of the run (`bench-<runId>-` in its Message-ID) that
 * arrived in the Maildir since `before`, whose Received headers by the MTA and by the MX say ESMTPSA and ESMTPS
 * (and `(using TLSv… with cipher …)` where the system writes it). Returns what it saw; throws TlsNotUsed otherwise.
 */
async function proveTls(system: System, before: Set<string>, runId: string, what: string): Promise<string> {
  const where = `${system.name}, ${what}`;
  const raw = await findDelivered(system.bobMaildir, before, `bench-${runId}-`);
  if (raw === undefined) throw new TlsNotUsed(`${where}: no delivered message of run ${runId} found to check for TLS`);
  const received = receivedHeaders(raw);
  const seen: string[] = [];
  for (const hop of TLS_HOPS) {
    const header = received.find((r) => new RegExp(`\\bby ${hop.by.replace(/\./g, '\\.')}\\b`).test(r));
    if (!header) throw new TlsNotUsed(`${where}: no Received header by ${hop.by} in the delivered message (${received.length} Received headers)`);
    const protocol = / with ([A-Z]+)\b/.exec(header.replace(/\(using [^)]*\)/, ''))?.[1];
    if (protocol !== hop.with) throw new TlsNotUsed(`${where}: the hop to ${hop.by} ran with ${protocol ?? 'an unknown protocol'}, not ${hop.with}: ${header}`);
    if (system.tls?.cipherInTrace) {
      const using = /\(using (TLSv[\d.]+) with cipher ([A-Za-z0-9_-]+)/.exec(header);
      if (!using) throw new TlsNotUsed(`${where}: the Received header by ${hop.by} names no TLS protocol and cipher: ${header}`);
      seen.push(`${hop.by} ${protocol} ${using[1]} ${using[2]}`);
    } else seen.push(`${hop.by} ${protocol}`);
  }
  return seen.join(', ');
}

async function timeIt<T>(fn: () => Promise<T>): Promise<number> {
  const t = performance.now();
  await fn();
  return performance.now() - t;
}

/**
 * The default lab without TLS on its SMTP hops: passwords allowed in plaintext at submission, and the MX offering no
 * STARTTLS, so the MTA relays in plaintext. These figures compare the same plaintext flows with the peer, which runs
 * without TLS (RFC 8314's refusal and opportunistic STARTTLS are the lab's defaults; TLS figures are measured apart).
 * Its per-client connection limit is raised from 50 to 200 for the 100-connection series, as on the peer.
 */
const benchLab = {
  ...defaultLab,
  tls: { ...defaultLab.tls, allowPlaintextAuth: true, noStartTls: ['mx'] },
  smtpLimits: { ...defaultLab.smtpLimits, maxConnectionsPerClient: 200 },
};

/** Starts the default lab, times it until every service greets, takes its memory then (idle), stops it. */
async function bootOnce(runtime: 'local' | 'docker'): Promise<{ ms: number; idle: { rssMiB: number; pssMiB?: number } }> {
  let lab: StartedLab | undefined;
  const ms = await timeIt(async () => {
    lab = await new Lab(benchLab).withRuntime(runtime).start();
    await checkGreetings(lab);
  });
  const idle = await memory(await labSystem(lab!, false).pids());
  await lab!.stop();
  return { ms, idle };
}

/** Idle memory: a system just started, every service having greeted once, nothing else done yet. */
function sampleIdle(who: Who, round: number, idle: { rssMiB: number; pssMiB?: number }) {
  figures.sample(F.memoryIdle, who, round, idle.rssMiB);
  if (idle.pssMiB !== undefined) figures.sample(F.memoryIdlePss, who, round, idle.pssMiB);
}

/**
 * Local boot, interleaved: in each round the default lab and the peer are started (and stopped) one after the
 * other. The peer's boot is its slowest service's (see PeerLab.bootMs). Returns whether the peer can run here.
 */
async function bootRounds(): Promise<{ peerName?: string }> {
  let peerName: string | undefined;
  let peerSkipped: string | undefined;
  for (let round = 0; round < RUNS; round++) {
    for (const who of orderOf<{ who: Who }>([{ who: 'ours' }, { who: 'peer' }], round).map((s) => s.who)) {
      if (who === 'ours') {
        const { ms, idle } = await bootOnce('local');
        figures.sample(F.bootLocal, 'ours', round, ms);
        sampleIdle('ours', round, idle);
        // The floor right after, in the same round: four bare Node processes, what any lab of four nodes starts with.
        const floor = await bareNodes(4, memory);
        figures.sample(F.floorBoot, 'ours', round, floor.ms);
        figures.sample(F.floorIdle, 'ours', round, floor.measured.rssMiB);
        if (floor.measured.pssMiB !== undefined) figures.sample(F.floorIdlePss, 'ours', round, floor.measured.pssMiB);
        log(`boot round ${round + 1}: maillab ${ms.toFixed(0)} ms (floor ${floor.ms.toFixed(0)} ms)`);
      } else if (peerSkipped === undefined) {
        const peer = await startPeer({ log });
        if ('skipped' in peer) {
          peerSkipped = peer.skipped;
          continue;
        }
        peerName = peer.name;
        const ms = Math.max(...Object.values(peer.bootMs));
        figures.sample(F.bootLocal, 'peer', round, ms);
        sampleIdle('peer', round, await memory(await peer.pids()));
        log(`boot round ${round + 1}: peer ${ms.toFixed(0)} ms (${Object.entries(peer.bootMs).map(([k, v]) => `${k} ${v.toFixed(0)}`).join(', ')})`);
        await peer.stop();
      }
    }
  }
  if (peerSkipped !== undefined) notes.push(`Peer skipped: ${peerSkipped}. Our figures are printed alone.`);
  return peerName ? { peerName } : {};
}

async function bootDockerRounds(): Promise<void> {
  const { dockerEngine } = await import('../src/harness/runtime/docker.js');
  const engine = await dockerEngine(3000);
  if (!engine.available) return void notes.push(`Docker boot skipped: no Docker engine answers (${engine.reason ?? 'unknown'}).`);
  const { ensureImage } = await import('../src/harness/runtime/images.js');
  await ensureImage();
  for (let round = 0; round < RUNS; round++) figures.sample(F.bootDocker, 'ours', round, (await bootOnce('docker')).ms);
}

/** The lab's services on implicit TLS (RFC 8314): they greet only after a TLS handshake. */
const IMPLICIT_TLS = new Set(['submissions', 'imaps', 'pop3s']);
/** The lab's HTTP services (HTTPS when the lab has TLS): they "greet" with the status line of an answer to a GET. */
const HTTP_SERVICES = new Set(['accounts', 'api', 'mta-sts']);

/** Every service accepts a connection and answers its greeting (DNS: answers a query; implicit TLS: after the handshake). */
async function checkGreetings(lab: StartedLab): Promise<void> {
  const checks: Promise<unknown>[] = [];
  for (const node of lab.nodes()) {
    for (const [name, endpoint] of Object.entries(node.services)) {
      if (name === 'dns') {
        checks.push(createLabResolver(endpoint).resolveMx('receiver.test'));
      } else {
        const http = HTTP_SERVICES.has(name);
        const tls = IMPLICIT_TLS.has(name) || (http && lab.definition.tls !== undefined) ? lab.tlsFor(node.name) : undefined;
        const greeted = greeting(endpoint.host, endpoint.port, undefined, tls, http ? `GET / HTTP/1.1\r\nHost: ${node.config.hostname}\r\nConnection: close\r\n\r\n` : undefined);
        checks.push(greeted.catch((err: Error) => Promise.reject(new Error(`${node.name} ${name} on ${endpoint.host}:${endpoint.port}: ${err.message}`))));
      }
    }
  }
  await Promise.all(checks);
}

/**
 * One message at a time: submission → file in bob's Maildir, and → pushed to an IMAP client in IDLE. With
 * `system.tls`, submission and IMAP run over STARTTLS and one message of the run must prove TLS on every SMTP hop.
 */
async function latency(system: System): Promise<{ stored: Stats; idle: Stats; tls?: string }> {
  const imapTls = system.tls ? { doSTARTTLS: true, tls: { ...system.tls.imap } } : { doSTARTTLS: false };
  const imap = new ImapFlow({ host: system.imap.host, port: system.imap.port, secure: false, ...imapTls, auth: { user: system.imap.user, pass: system.imap.pass }, logger: false, autoIdleDelay: 10 });
  await imap.connect();
  await imap.mailboxOpen('INBOX');
  let onExists: (() => void) | undefined;
  imap.on('exists', () => onExists?.());
  const submissionTls = system.tls ? { requireTLS: true, tls: { ...system.tls.submission } } : { ignoreTLS: true };
  const transport = nodemailer.createTransport({ ...system.submission, secure: false, ...submissionTls, pool: true, maxConnections: 1 });
  const before = system.tls ? await maildirNames(system.bobMaildir) : new Set<string>();
  const stored: number[] = [];
  const idle: number[] = [];
  const runId = randomBytes(4).toString('hex');
  try {
    // Warm up: connections opened, code paths hot.
    for (let i = 0; i < LATENCY_SAMPLES + 3; i++) {
      const before = await maildirCount(system.bobMaildir);
      const pushed = new Promise<number>((resolve) => (onExists = () => resolve(performance.now())));
      const { raw } = message(i, runId);
      const t0 = performance.now();
      await transport.sendMail({ envelope: { from: 'alice@sender.test', to: ['bob@receiver.test'] }, raw });
      await waitForMaildir(system.bobMaildir, before + 1, 10_000);
      const t1 = performance.now();
      const t2 = await Promise.race([pushed, new Promise<number>((_, reject) => setTimeout(() => reject(new Error('no IDLE push within 5 s')), 5000))]);
      if (i >= 3) {
        stored.push(t1 - t0);
        idle.push(t2 - t0);
      }
    }
  } finally {
    transport.close();
    await imap.logout().catch(() => imap.close());
  }
  const tls = system.tls ? await proveTls(system, before, runId, 'latency') : undefined;
  return { stored: stats(stored), idle: stats(idle), ...(tls ? { tls } : {}) };
}

/**
 * `THROUGHPUT_COUNT` × 1 KiB over 20 connections until every one is stored: messages per second, and the peak memory
 * of the system's processes meanwhile. With `target.tls`, the run must prove TLS on every SMTP hop (one of its
 * messages, checked after the clock stopped).
 */
async function throughput(system: System, target: Target, load = { count: THROUGHPUT_COUNT, connections: CONNECTIONS, bodyBytes: 1024 }): Promise<{ rate: number; peak: { rssMiB: number; pssMiB?: number }; tls?: string }> {
  const names = target.tls ? await maildirNames(system.bobMaildir) : undefined;
  const before = await maildirCount(system.bobMaildir);
  const runId = randomBytes(4).toString('hex');
  const t0 = performance.now();
  const work = (async () => {
    await submitMany(target, load.count, load.connections, runId, load.bodyBytes);
    await waitForMaildir(system.bobMaildir, before + load.count, 300_000);
  })();
  const measured = await peakMemoryDuring(() => system.pids(), work);
  const seconds = (performance.now() - t0) / 1000;
  log(`${system.name}: ${load.count} × ${sizeName(load.bodyBytes)} over ${load.connections} connections to ${target.host}:${target.port}${target.tls ? ' (STARTTLS)' : ''} in ${seconds.toFixed(2)} s`);
  const tls = names ? await proveTls(system, names, runId, 'throughput') : undefined;
  return { rate: load.count / seconds, peak: measured.peak, ...(tls ? { tls } : {}) };
}

function sizeName(bytes: number): string {
  return bytes >= 2 ** 20 ? `${bytes / 2 ** 20} MiB` : `${bytes / 1024} KiB`;
}

interface Side {
  who: Who;
  system: System;
}

/** One step of a round, for one system. */
type Step = (side: Side, round: number) => Promise<void>;

/** Runs `steps` for `rounds` rounds; within a round each step runs for every side before the next step starts. */
async function interleave(sides: Side[], rounds: number, steps: Step[]): Promise<void> {
  for (let round = 0; round < rounds; round++) {
    for (const step of steps) for (const side of orderOf(sides, round)) await step(side, round);
  }
}

/** The plaintext figures, ours and the peer's interleaved; the disk's limit once per round, before the throughput. */
async function plaintextRounds(sides: Side[], diskDir: string, ourDns: Endpoint): Promise<void> {
  await interleave(sides, RUNS, [
    async ({ who, system }, round) => {
      log(`round ${round + 1}: ${system.name}: latency`);
      const lat = await latency(system);
      figures.sample(F.latencyStored, who, round, lat.stored.median);
      figures.sample(F.latencyIdle, who, round, lat.idle.median);
    },
    async ({ who }, round) => {
      if (who !== 'ours') return;
      const dns = await dnsCost(ourDns);
      figures.sample(F.dnsLookup, 'ours', round, dns.asked);
      figures.sample(F.dnsLookupKept, 'ours', round, dns.kept);
    },
    async ({ who, system }, round) => {
      if (who === 'ours') {
        const disk = durableWrites(diskDir, DISK_SECONDS);
        figures.sample(F.diskLimit, 'ours', round, disk.perSecond);
        log(`round ${round + 1}: disk: ${disk.writes} durable writes in ${disk.seconds.toFixed(2)} s (${disk.perSecond.toFixed(0)}/s)`);
      }
      log(`round ${round + 1}: ${system.name}: throughput`);
      const tp = await throughput(system, system.submission);
      figures.sample(F.throughput, who, round, tp.rate);
      samplePeak(who, round, tp.peak);
      if (who === 'ours') {
        const limit = figures.get(F.diskLimit.id)!.rounds.ours[round]! / 2;
        figures.sample(F.diskFraction, 'ours', round, (100 * tp.rate) / limit);
      }
    },
    async ({ who, system }, round) => {
      log(`round ${round + 1}: ${system.name}: inbound MX`);
      const mx = await throughput(system, system.mx);
      figures.sample(F.mxRate, who, round, mx.rate);
      samplePeak(who, round, mx.peak);
    },
  ]);
}

/**
 * What the MTA's DNS questions cost per delivery (profile evidence for issue 17's DNS cache): the median time of one
 * MX resolution against the lab DNS, every answer asked (the MTA as the lab runs it), and with A/AAAA answers kept
 * for their TTL (the cache a lab can turn on). 20 of each, after 3 of warm-up.
 */
async function dnsCost(dns: Endpoint): Promise<{ asked: number; kept: number }> {
  const resolver = createLabResolver(dns);
  const kept = new DnsAnswerCache(resolver, { maxTtlSeconds: 3600 }).asMxResolver();
  const time = async (r: MxResolver) => {
    const samples: number[] = [];
    for (let i = 0; i < 23; i++) {
      const t0 = performance.now();
      const result = await resolveMxTargets(r, 'receiver.test');
      if (result.kind !== 'mx') throw new Error(`DNS cost: receiver.test resolved to ${JSON.stringify(result)}, not its MX`);
      if (i >= 3) samples.push(performance.now() - t0);
    }
    return stats(samples).median;
  };
  return { asked: await time(resolver), kept: await time(kept) };
}

/** The round's peak is the larger of the throughput's and the inbound MX's. */
function samplePeak(who: Who, round: number, peak: { rssMiB: number; pssMiB?: number }) {
  const before = figures.get(F.memoryPeak.id)?.rounds[who][round] ?? 0;
  if (peak.rssMiB < before) return;
  figures.sample(F.memoryPeak, who, round, peak.rssMiB);
  if (peak.pssMiB !== undefined) figures.sample(F.memoryPeakPss, who, round, peak.pssMiB);
}

/**
 * The TLS figures, interleaved like the plaintext ones. A run without proof of TLS drops that system's values of
 * that figure (so no ratio) and says so loudly, on stderr and first in the report.
 */
async function tlsRounds(sides: Side[]): Promise<void> {
  const failed = new Set<string>();
  const proofs = new Map<Who, string[]>();
  const attempt = async (figure: FigureDef, side: Side, fn: () => Promise<{ value: number; tls?: string }>, round: number) => {
    if (failed.has(`${figure.id}:${side.who}`)) return;
    try {
      const r = await fn();
      figures.sample(figure, side.who, round, r.value);
      if (r.tls) proofs.set(side.who, [...(proofs.get(side.who) ?? []), r.tls]);
    } catch (err) {
      if (!(err instanceof TlsNotUsed)) throw err;
      failed.add(`${figure.id}:${side.who}`);
      figures.drop(figure.id, side.who);
      failTls(`${err.message}. No ${side.who === 'ours' ? 'maillab' : 'peer'} value and no ratio for "${figure.title}".`);
    }
  };
  await interleave(sides, RUNS, [
    (side, round) => {
      log(`round ${round + 1}: ${side.system.name}: latency, TLS`);
      return attempt(F.tlsLatency, side, async () => {
        const lat = await latency(side.system);
        return { value: lat.stored.median, ...(lat.tls ? { tls: lat.tls } : {}) };
      }, round);
    },
    (side, round) => {
      log(`round ${round + 1}: ${side.system.name}: throughput, TLS`);
      return attempt(F.tlsThroughput, side, async () => {
        const tp = await throughput(side.system, { ...side.system.submission, tls: side.system.tls!.submission });
        return { value: tp.rate, ...(tp.tls ? { tls: tp.tls } : {}) };
      }, round);
    },
  ]);
  for (const side of sides) {
    const seen = proofs.get(side.who) ?? [];
    if (seen.length > 0) notes.push(`TLS seen by ${side.system.name} (one delivered message per run, ${seen.length} runs): ${[...new Set(seen)].join(' · ')}.`);
  }
}

function failTls(message: string) {
  log(`ERROR: TLS NOT VERIFIED: ${message}`);
  errors.push(`TLS not verified: ${message}`);
}

function peerSystem(p: PeerLab, tls: boolean): System {
  return {
    name: p.name,
    submission: p.submission,
    mx: p.mx,
    imap: p.imap,
    bobMaildir: p.bobMaildir,
    pids: () => p.pids(),
    ...(tls && p.tls ? { tls: { submission: p.tls.submission, imap: p.tls.imap, cipherInTrace: true } } : {}),
  };
}

/** The default lab's flows for the benchmark; `tls` for the TLS figures (submission and IMAP over STARTTLS). */
function labSystem(lab: StartedLab, tls: boolean): System {
  const mailboxNode = lab.nodes().find((n) => n.role === 'mailbox')!;
  const mxNode = lab.nodes().find((n) => n.role === 'mx')!;
  const mtaNode = lab.nodes().find((n) => n.role === 'mta')!;
  return {
    name: 'maillab',
    submission: { ...mtaNode.service('submission'), auth: { user: 'alice@sender.test', pass: 'alice-secret' } },
    mx: { ...mxNode.service('smtp'), localAddress: mtaNode.config.address },
    imap: { ...mailboxNode.service('imap'), user: 'bob@receiver.test', pass: 'bob-secret' },
    bobMaildir: path.join(mailboxNode.config.dataDir, 'bob@receiver.test', 'Maildir'),
    pids: async () => Promise.all(lab.nodes().map(async (n) => (await n.health()).pid)),
    ...(tls ? { tls: { submission: lab.tlsFor(mtaNode.name), imap: lab.tlsFor(mailboxNode.name), cipherInTrace: true } } : {}),
  };
}

/**
 * TLS on every hop: the default lab as is (its CA, STARTTLS required before AUTH on 587, opportunistic STARTTLS from
 * the MTA to the MX, IMAP STARTTLS; LMTP plaintext) and the peer started with TLS (see bench/peer.ts), both up,
 * measured in interleaved rounds like the plaintext figures. Returns the TLS peer's name, when it ran.
 */
async function tlsFigures(): Promise<string | undefined> {
  figures.figure(F.tlsThroughput);
  figures.figure(F.tlsLatency);
  log('TLS: default lab (lab CA, STARTTLS on every SMTP hop and on IMAP) and peer Postfix + Dovecot with TLS');
  const lab = await new Lab(defaultLab).withRuntime('local').start();
  let peer: PeerLab | undefined;
  try {
    const sides: Side[] = [{ who: 'ours', system: labSystem(lab, true) }];
    try {
      const started = await startPeer({ log, tls: true });
      if ('skipped' in started) notes.push(`TLS peer skipped: ${started.skipped}. Our TLS figures are printed alone.`);
      else peer = started;
    } catch (err) {
      failTls(`the peer configured with TLS did not start: ${err instanceof Error ? err.message.split('\n')[0] : String(err)}. No peer values and no TLS ratios.`);
    }
    if (peer && !peer.tls) failTls('the peer started without TLS settings. No peer values and no TLS ratios.');
    else if (peer) {
      notes.push(`Peer TLS settings: ${peer.tls!.settings.join(' · ')}.`);
      sides.push({ who: 'peer', system: peerSystem(peer, true) });
    }
    await tlsRounds(sides);
  } finally {
    await lab.stop();
    await peer?.stop().catch(() => undefined);
  }
  return peer?.name;
}

/** The machine's load average when the run began (the report is written at its end, when the bench's own load shows). */
const LOAD_AT_START = os.loadavg();

async function main() {
  const started = new Date();
  if (ONLY === 'imap') return imapOnly(started);
  if (ONLY === 'tls') return tlsOnly(started);
  if (ONLY === 'scale') return scaleOnly(started);
  if (ONLY === 'mailbox') return mailboxOnly(started);
  if (ONLY === 'queue') return queueOnly(started);
  if (ONLY === 'profile') return profileOnly(started);
  if (ONLY === 'suite') return suiteOnly();
  log(`boot: local runtime, ${RUNS} interleaved rounds`);
  const { peerName } = await bootRounds();
  log('boot: docker runtime');
  await bootDockerRounds().catch((err: Error) => notes.push(`Docker boot skipped: failed: ${err.message}.`));

  const ourLab = await new Lab(benchLab).withRuntime('local').start();
  let peer: PeerLab | undefined;
  const scale = new Figures();
  let scaleLines: string[] = [];
  try {
    const sides: Side[] = [{ who: 'ours', system: labSystem(ourLab, false) }];
    if (peerName) {
      log('peer: Postfix + Dovecot');
      const p = await startPeer({ log });
      if ('skipped' in p) notes.push(`Peer skipped: ${p.skipped}. Our figures are printed alone.`);
      else {
        peer = p;
        sides.push({ who: 'peer', system: peerSystem(p, false) });
        if (!p.submission.auth) notes.push('The peer takes submissions on port 25 from loopback without AUTH; maillab submits with AUTH PLAIN on 587.');
      }
    }
    // The disk's limit is measured where the lab keeps its data: the same filesystem as its queue and Maildirs.
    const diskDir = path.join(path.dirname(ourLab.nodeOf('mailbox').config.dataDir), 'bench-disk');
    log(`plaintext figures: ${RUNS} interleaved rounds`);
    await plaintextRounds(sides, diskDir, ourLab.nodeOf('dns').service('dns'));
    log(`scale series: ${SCALE_RUNS} interleaved rounds per point`);
    scaleLines = await scaleFigures(sides, scale);
    await ourLab.stop();
    await imapFigure(peer);
  } finally {
    await ourLab.stop().catch(() => undefined);
    await peer?.stop().catch(() => undefined);
  }
  // After the plaintext peer stopped: the TLS peer binds the same addresses.
  await tlsFigures().catch((err: Error) => failTls(`the TLS figures failed: ${err.message.split('\n')[0]}`));
  // A fresh lab and peer again for each (same addresses): the mailbox and queue series need stores nothing else wrote to.
  for (const [name, series] of [
    ['mailbox', mailboxSeries],
    ['queue', queueSeries],
  ] as const) {
    scaleLines.push(
      ...(await series(scale).catch((err: Error) => {
        errors.push(`The ${name} series failed: ${err.message.split('\n')[0]}`);
        return [];
      })),
    );
  }
  notes.push(
    `Disk limit: the two durable stores of the path (the MTA's queue, then the Maildir) each need one durable write per message, so one thread tops out near half the durable writes per second before group commit; the share is this round's throughput over that half.`,
  );
  const profile = await profileFigures().catch((err: Error) => {
    errors.push(`The CPU profiles failed: ${err.message.split('\n')[0]}`);
    return [];
  });
  const suite = await lastSuiteSection(path.join(packageRoot(), 'bench', 'results', 'latest-suite.json'));
  await report(started, peer?.name ?? peerName, '', [...(scaleLines.length ? [`## Scale series`, ``, ...scaleLines] : []), ...profile, ...suite], scale);
}

/** `BENCH_ONLY=suite`: the scenario suite on both runtimes, timed; the record every full run prints. */
async function suiteOnly() {
  const dir = path.join(packageRoot(), 'bench', 'results');
  const record = await measureSuite(packageRoot(), log);
  await fs.mkdir(dir, { recursive: true });
  await fs.writeFile(path.join(dir, 'latest-suite.json'), JSON.stringify(record, null, 2) + '\n');
  const lines = [`# maillab scenario suite`, ``, `${record.date} · Node ${record.node} · ${record.cores} cores`, ``, ...suiteLines(record), ``];
  await fs.writeFile(path.join(dir, 'latest-suite.md'), lines.join('\n'));
  process.stdout.write(lines.join('\n'));
}

/** `BENCH_ONLY=tls`: the TLS throughput and latency figures alone. */
async function tlsOnly(started: Date) {
  const peerName = await tlsFigures();
  await report(started, peerName, '-tls');
}

/** `BENCH_ONLY=imap`: the peer and a fresh lab, the IMAP cycles alone. */
async function imapOnly(started: Date) {
  log('peer: Postfix + Dovecot');
  const peer = await startPeer({ log });
  if ('skipped' in peer) notes.push(`Peer skipped: ${peer.skipped}. Our figures are printed alone.`);
  try {
    await imapFigure('skipped' in peer ? undefined : peer);
  } finally {
    if (!('skipped' in peer)) await peer.stop().catch(() => undefined);
  }
  await report(started, 'skipped' in peer ? undefined : peer.name, '-imap');
}

/** The scale series (issue 17): how throughput and memory grow with the message size and the client connections. */
const SCALE_RUNS = Number(process.env.BENCH_SCALE_RUNS ?? Math.min(RUNS, 3));
const SCALE_COUNT = Number(process.env.BENCH_SCALE_COUNT ?? 400);
/** At most this many bytes of bodies per run: 10 MiB messages go 20 at a time, not SCALE_COUNT. */
const SCALE_BYTES = 200 * 2 ** 20;
const SCALE_SIZES = [1024, 100 * 1024, 10 * 2 ** 20];
const SCALE_CONNECTIONS = [1, 20, 100];

interface ScaleSeries {
  id: string;
  title: string;
  xName: string;
  xs: number[];
  formatX: (x: number) => string;
  logX: boolean;
  /** The load of one run at `x`. */
  load: (x: number) => { count: number; connections: number; bodyBytes: number };
}

// Connections first: after 10 MiB messages the Node processes keep a larger heap, which would weigh on the rest.
const SERIES: ScaleSeries[] = [
  {
    id: 'connections',
    title: 'Client connections',
    xName: 'client connections (submission)',
    xs: SCALE_CONNECTIONS,
    formatX: (x) => String(x),
    logX: false,
    load: (x) => ({ count: SCALE_COUNT, connections: x, bodyBytes: 1024 }),
  },
  {
    id: 'size',
    title: 'Message size',
    xName: 'message body size',
    xs: SCALE_SIZES,
    formatX: sizeName,
    logX: true,
    load: (x) => ({ count: Math.max(1, Math.min(SCALE_COUNT, Math.floor(SCALE_BYTES / x))), connections: CONNECTIONS, bodyBytes: x }),
  },
];

/**
 * Each series point measured on both systems, interleaved (per point: SCALE_RUNS rounds, the order alternating),
 * into `scale`: per point a msg/s, a MiB/s and a peak-PSS figure. Returns the Markdown tables; writes the plots.
 */
async function scaleFigures(sides: Side[], scale: Figures): Promise<string[]> {
  const dir = path.join(packageRoot(), 'bench', 'results');
  await fs.mkdir(dir, { recursive: true });
  const lines: string[] = [];
  for (const series of SERIES) {
    const defs = series.xs.map((x) => ({
      rate: { id: `${series.id}-${x}-rate`, title: `${series.formatX(x)}: msg/s`, unit: 'msg/s', better: 'higher' } as const,
      bytes: { id: `${series.id}-${x}-mib`, title: `${series.formatX(x)}: MiB/s`, unit: 'MiB/s', better: 'higher' } as const,
      pss: { id: `${series.id}-${x}-pss`, title: `${series.formatX(x)}: peak PSS`, unit: 'MiB', better: 'lower' } as const,
    }));
    for (const [i, x] of series.xs.entries()) {
      const load = series.load(x);
      for (let round = 0; round < SCALE_RUNS; round++) {
        for (const { who, system } of orderOf(sides, round)) {
          log(`scale ${series.id} ${series.formatX(x)} round ${round + 1}: ${system.name}`);
          const tp = await throughput(system, system.submission, load);
          scale.sample(defs[i]!.rate, who, round, tp.rate);
          scale.sample(defs[i]!.bytes, who, round, (tp.rate * load.bodyBytes) / 2 ** 20);
          if (tp.peak.pssMiB !== undefined) scale.sample(defs[i]!.pss, who, round, tp.peak.pssMiB);
        }
      }
    }
    const point = (id: string, who: Who) => {
      const f = scale.get(id);
      return f ? statsOf(f, who)?.median : undefined;
    };
    const names: Record<Who, string> = { ours: 'maillab', peer: sides.find((s) => s.who === 'peer')?.system.name ?? 'peer' };
    const plots = [
      { file: `scale-${series.id}-throughput.svg`, what: series.id === 'size' ? 'MiB/s' : 'msg/s', key: series.id === 'size' ? ('bytes' as const) : ('rate' as const) },
      { file: `scale-${series.id}-memory.svg`, what: 'peak PSS, MiB', key: 'pss' as const },
    ];
    for (const plot of plots) {
      const svg = linePlot({
        title: `${series.title}: ${plot.what} (median of ${SCALE_RUNS} round${SCALE_RUNS === 1 ? '' : 's'})`,
        xLabel: series.xName,
        yLabel: plot.what,
        logX: series.logX,
        formatX: series.formatX,
        series: sides.map((s) => ({ name: names[s.who], points: series.xs.map((x, i) => [x, point(defs[i]![plot.key].id, s.who)] as [number, number | undefined]) })),
      });
      await fs.writeFile(path.join(dir, plot.file), svg);
    }
    lines.push(
      `### ${series.title} (${series.xs.map((x) => `${series.formatX(x)}: ${series.load(x).count} messages over ${series.load(x).connections} connections`).join('; ')}; median (min–max) of ${SCALE_RUNS} round${SCALE_RUNS === 1 ? '' : 's'})`,
      ``,
      `| ${series.xName} | maillab msg/s | peer msg/s | maillab MiB/s | peer MiB/s | maillab peak PSS MiB | peer peak PSS MiB | throughput ratio |`,
      `| --- | --- | --- | --- | --- | --- | --- | --- |`,
      ...series.xs.map((x, i) => {
        const d = defs[i]!;
        const cell = (id: string, who: Who) => {
          const f = scale.get(id);
          return fmt(f && statsOf(f, who), f?.unit ?? '');
        };
        const r = scale.get(d.rate.id);
        return `| ${series.formatX(x)} | ${cell(d.rate.id, 'ours')} | ${cell(d.rate.id, 'peer')} | ${cell(d.bytes.id, 'ours')} | ${cell(d.bytes.id, 'peer')} | ${cell(d.pss.id, 'ours')} | ${cell(d.pss.id, 'peer')} | ${fmtRatio(r && ratioStats(r))} |`;
      }),
      ``,
      `Plots: ${plots.map((p) => `[${p.file}](${p.file})`).join(', ')}.`,
      ``,
    );
  }
  return lines;
}

/** The mailbox-size series: messages in one INBOX (cumulative: each size adds to the last). */
const MAILBOX_SIZES = (process.env.BENCH_MAILBOX_SIZES ?? '1000,10000,100000').split(',').map(Number);
if (MAILBOX_SIZES.some((n) => !Number.isInteger(n) || n < 1)) throw new Error(`BENCH_MAILBOX_SIZES=${process.env.BENCH_MAILBOX_SIZES}: whole numbers from 1, separated by commas`);
/** Warm sessions per size (the median is kept). */
const MAILBOX_WARM = 3;

/** The processes of the peer that are Dovecot's (its memory is the mailbox server's), by executable. */
async function dovecotPids(peer: PeerLab): Promise<number[]> {
  const out: number[] = [];
  for (const pid of await peer.pids()) {
    const exe = await fs.readlink(`/proc/${pid}/exe`).catch(() => '');
    if (exe.startsWith('/usr/lib/dovecot/') || exe === '/usr/sbin/dovecot') out.push(pid);
  }
  return out;
}

/**
 * The mailbox-size series on a fresh lab and a fresh peer: carol's INBOX seeded to each size in turn (files written
 * into cur/), then on each system a first SELECT (the server indexes what it has not seen; maillab's mailbox node is
 * restarted first, so it rebuilds its index from the index file plus a scan, as after any restart), then warm
 * sessions: SELECT and `UID FETCH 1:* (FLAGS)`, and the mailbox server's memory with that session open.
 */
async function mailboxSeries(scale: Figures): Promise<string[]> {
  log(`mailbox series: ${MAILBOX_SIZES.join(', ')} messages`);
  const lab = await new Lab(benchLab).withRuntime('local').start();
  let peer: PeerLab | undefined;
  try {
    const mailboxNode = lab.nodeOf('mailbox');
    type MailboxSide = { who: Who; name: string; target: ImapTarget; maildir: string; owner?: { uid: number; gid: number }; restart?: () => Promise<void>; pids: () => Promise<number[]> };
    const sides: MailboxSide[] = [
      {
        who: 'ours',
        name: 'maillab',
        target: { ...mailboxNode.service('imap'), ...IMAP_USER },
        maildir: path.join(mailboxNode.config.dataDir, IMAP_USER.user, 'Maildir'),
        restart: async () => {
          await lab.node('mailbox').stop();
          await lab.node('mailbox').start();
        },
        pids: async () => [(await lab.node('mailbox').health()).pid],
      },
    ];
    const started = await startPeer({ log });
    if ('skipped' in started) notes.push(`Mailbox series without a peer: ${started.skipped}.`);
    else {
      const p = (peer = started);
      const maildir = path.join(path.dirname(path.dirname(p.bobMaildir)), IMAP_USER.user, 'Maildir');
      const st = await fs.stat(p.bobMaildir);
      sides.push({ who: 'peer', name: 'dovecot', target: { ...p.imap, ...IMAP_USER }, maildir, owner: { uid: st.uid, gid: st.gid }, pids: () => dovecotPids(p) });
    }
    const def = (n: number, what: string, unit: string) => ({ id: `mailbox-${n}-${what}`, title: `${n}: ${what}`, unit, better: 'lower' }) as const;
    for (const [i, n] of MAILBOX_SIZES.entries()) {
      for (const side of orderOf(sides, i)) {
        const t0 = performance.now();
        const added = await seedMaildir(side.maildir, n, side.owner);
        log(`mailbox ${side.name}: ${added} messages written in ${((performance.now() - t0) / 1000).toFixed(1)} s (${n} in INBOX)`);
        if (side.restart) scale.sample(def(n, 'restart', 'ms'), side.who, 0, await timeIt(side.restart));
        const cold = await imapSession(side.target, { fetch: false });
        if (cold.exists !== n) throw new Error(`mailbox series: ${side.name} reports ${cold.exists} messages in INBOX after ${n} were written`);
        scale.sample(def(n, 'first SELECT', 'ms'), side.who, 0, cold.selectMs);
        const warm: ImapTimings[] = [];
        let mem: { rssMiB: number; pssMiB?: number } | undefined;
        for (let w = 0; w < MAILBOX_WARM; w++) warm.push(await imapSession(side.target, { fetch: true, whileOpen: async () => void (mem = await memory(await side.pids())) }));
        if (warm.some((x) => x.fetched !== n)) throw new Error(`mailbox series: ${side.name} answered UID FETCH 1:* with ${warm.map((x) => x.fetched).join('/')} responses for ${n} messages`);
        scale.sample(def(n, 'SELECT', 'ms'), side.who, 0, stats(warm.map((x) => x.selectMs)).median);
        scale.sample(def(n, 'UID FETCH 1:* (FLAGS)', 'ms'), side.who, 0, stats(warm.map((x) => x.fetchMs!)).median);
        scale.sample(def(n, 'RSS', 'MiB'), side.who, 0, mem!.rssMiB);
        if (mem!.pssMiB !== undefined) scale.sample(def(n, 'PSS', 'MiB'), side.who, 0, mem!.pssMiB);
        log(`mailbox ${side.name} ${n}: first SELECT ${cold.selectMs.toFixed(0)} ms, SELECT ${stats(warm.map((x) => x.selectMs)).median.toFixed(0)} ms, FETCH ${stats(warm.map((x) => x.fetchMs!)).median.toFixed(0)} ms, RSS ${mem!.rssMiB.toFixed(0)} MiB`);
      }
    }
    const value = (n: number, what: string, who: Who) => {
      const f = scale.get(`mailbox-${n}-${what}`);
      return f ? statsOf(f, who)?.median : undefined;
    };
    const dir = path.join(packageRoot(), 'bench', 'results');
    const count = (n: number) => n.toLocaleString('en-US');
    const line = (what: string, label: string) => sides.map((s) => ({ name: `${s.name}: ${label}`, points: MAILBOX_SIZES.map((n) => [n, value(n, what, s.who)] as [number, number | undefined]) }));
    await fs.writeFile(path.join(dir, 'scale-mailbox-time.svg'), linePlot({ title: 'Mailbox size: first SELECT and UID FETCH 1:* (FLAGS), ms', xLabel: 'messages in INBOX', yLabel: 'ms', logX: true, formatX: count, series: [...line('first SELECT', 'first SELECT'), ...line('UID FETCH 1:* (FLAGS)', 'FETCH')] }));
    await fs.writeFile(path.join(dir, 'scale-mailbox-memory.svg'), linePlot({ title: 'Mailbox size: mailbox server memory (PSS), session open', xLabel: 'messages in INBOX', yLabel: 'MiB', logX: true, formatX: count, series: line('PSS', 'PSS') }));
    const cell = (n: number, what: string, who: Who) => {
      const v = value(n, what, who);
      return v === undefined ? '—' : v >= 100 ? v.toFixed(0) : v.toFixed(1);
    };
    return [
      `### Mailbox size (carol's INBOX, messages written into cur/; first SELECT after they came, then the median of ${MAILBOX_WARM} warm sessions; memory: maillab's mailbox node, Dovecot's processes, with the session open)`,
      ``,
      `| messages | first SELECT ms (maillab / Dovecot) | SELECT ms | UID FETCH 1:* (FLAGS) ms | RSS MiB | PSS MiB |`,
      `| --- | --- | --- | --- | --- | --- |`,
      ...MAILBOX_SIZES.map((n) => `| ${count(n)} | ${['first SELECT', 'SELECT', 'UID FETCH 1:* (FLAGS)', 'RSS', 'PSS'].map((w) => `${cell(n, w, 'ours')} / ${cell(n, w, 'peer')}`).join(' | ')} |`),
      ``,
      `maillab's mailbox node restart before the first SELECT (stop, then start until it serves): ${MAILBOX_SIZES.map((n) => `${count(n)}: ${cell(n, 'restart', 'ours')} ms`).join(', ')}.`,
      ``,
      `Plots: [scale-mailbox-time.svg](scale-mailbox-time.svg), [scale-mailbox-memory.svg](scale-mailbox-memory.svg).`,
      ``,
    ];
  } finally {
    await lab.stop().catch(() => undefined);
    await peer?.stop().catch(() => undefined);
  }
}

/** The queue-depth series: this many messages deferred in the sender's queue (its MX down). */
const QUEUE_DEPTH = Number(process.env.BENCH_QUEUE_DEPTH ?? 10_000);
if (!Number.isInteger(QUEUE_DEPTH) || QUEUE_DEPTH < 1) throw new Error(`BENCH_QUEUE_DEPTH=${process.env.BENCH_QUEUE_DEPTH}: a whole number from 1 is needed`);
/** How long the queue may take to fill, or to be listed again after a restart, before the series fails. */
const QUEUE_TIMEOUT_MS = 600_000;

/** Requests in `postqueue -p` output, and how many are in the active queue (an asterisk after the queue ID). */
function postqueueCounts(out: string): { requests: number; active: number } {
  const requests = /in (\d+) Requests?\./.exec(out)?.[1];
  return { requests: requests === undefined ? 0 : Number(requests), active: (out.match(/^[0-9A-Za-z]+\*/gm) ?? []).length };
}

/** Polls `done` every 50 ms (its own work sets the pace) until it holds; fails naming `what` after `timeoutMs`. */
async function until(what: string, done: () => Promise<boolean>, timeoutMs = QUEUE_TIMEOUT_MS): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await done())) {
    if (Date.now() > deadline) throw new Error(`queue series: ${what} not reached within ${timeoutMs / 1000} s`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/**
 * Queue depth (issue 17): QUEUE_DEPTH messages submitted while the MX is down (maillab: the mx node stopped;
 * peer: the receiver Postfix stopped), so all wait deferred in the sender's queue (maillab's retry schedule set to
 * an hour). Then: the sender's memory, the time to list the queue (maillab's `queue` control operation; Postfix's
 * `postqueue -p`), and the recovery after SIGKILL: from the kill until the restarted sender lists every message.
 */
async function queueSeries(scale: Figures): Promise<string[]> {
  log(`queue series: ${QUEUE_DEPTH} deferred messages`);
  const lab = await new Lab({ ...benchLab, retry: { schedule: [3_600_000], maxLifetimeMs: 86_400_000 } }).withRuntime('local').start();
  let peer: PeerLab | undefined;
  try {
    type QueueSide = { who: Who; name: string; submission: Target; count(): Promise<number>; list(): Promise<unknown>; pids(): Promise<number[]>; crash(): Promise<void> };
    const mta = lab.mta();
    const ourCount = async () => (await mta.queue({ state: 'deferred' })).length;
    const sides: QueueSide[] = [
      {
        who: 'ours',
        name: 'maillab MTA',
        submission: labSystem(lab, false).submission,
        count: ourCount,
        list: () => mta.queue(),
        pids: async () => [(await mta.node.health()).pid],
        crash: async () => {
          await mta.node.kill();
          await mta.node.start();
        },
      },
    ];
    await lab.node('mx').stop();
    const started = await startPeer({ log });
    if ('skipped' in started) notes.push(`Queue series without a peer: ${started.skipped}.`);
    else {
      const p = (peer = started);
      await p.senderQueue.stopReceiver();
      const count = async () => {
        const c = postqueueCounts(await p.senderQueue.list());
        return c.active === 0 ? c.requests : -1;
      };
      sides.push({ who: 'peer', name: 'sender Postfix', submission: p.submission, count, list: () => p.senderQueue.list(), pids: async () => p.senderQueue.pids(), crash: () => p.senderQueue.killAndStart() });
    }
    const def = (what: string, unit: string) => ({ id: `queue-${what}`, title: `Queue of ${QUEUE_DEPTH} deferred: ${what}`, unit, better: 'lower' }) as const;
    for (const side of sides) {
      const t0 = performance.now();
      await submitMany(side.submission, QUEUE_DEPTH, CONNECTIONS, randomBytes(4).toString('hex'));
      await until(`${side.name}: ${QUEUE_DEPTH} deferred`, async () => (await side.count()) === QUEUE_DEPTH);
      log(`queue ${side.name}: ${QUEUE_DEPTH} deferred after ${((performance.now() - t0) / 1000).toFixed(1)} s`);
      const pids = await side.pids();
      const mem = await memory(pids);
      if (side.who === 'peer') {
        const qmgr = [];
        for (const pid of pids) if ((await fs.readFile(`/proc/${pid}/comm`, 'utf8').catch(() => '')).trim() === 'qmgr') qmgr.push(pid);
        const q = await memory(qmgr);
        notes.push(`Queue series: the sender Postfix's qmgr alone, with ${QUEUE_DEPTH} deferred: RSS ${q.rssMiB.toFixed(1)} MiB${q.pssMiB !== undefined ? `, PSS ${q.pssMiB.toFixed(1)} MiB` : ''} (${pids.length} sender processes in all).`);
      }
      scale.sample(def('sender RSS', 'MiB'), side.who, 0, mem.rssMiB);
      if (mem.pssMiB !== undefined) scale.sample(def('sender PSS', 'MiB'), side.who, 0, mem.pssMiB);
      const listings: number[] = [];
      for (let i = 0; i < 3; i++) listings.push(await timeIt(() => side.list()));
      scale.sample(def('list the queue', 'ms'), side.who, 0, stats(listings).median);
      const recovery = await timeIt(async () => {
        await side.crash();
        await until(`${side.name}: the queue listed again after SIGKILL`, async () => (await side.count().catch(() => -1)) === QUEUE_DEPTH);
      });
      scale.sample(def('recovery after SIGKILL', 'ms'), side.who, 0, recovery);
      log(`queue ${side.name}: RSS ${mem.rssMiB.toFixed(0)} MiB, listing ${stats(listings).median.toFixed(0)} ms, recovery after SIGKILL ${recovery.toFixed(0)} ms`);
    }
    const cell = (what: string, who: Who) => {
      const f = scale.get(`queue-${what}`);
      return fmt(f && statsOf(f, who), f?.unit ?? '');
    };
    return [
      `### Queue depth (${QUEUE_DEPTH} messages deferred in the sender's queue, the MX down; the sender's memory: maillab's MTA process, the sender Postfix's processes; recovery: SIGKILL to the sender, restart, until it lists every message)`,
      ``,
      `| figure | maillab MTA | sender Postfix |`,
      `| --- | --- | --- |`,
      ...['sender RSS', 'sender PSS', 'list the queue', 'recovery after SIGKILL'].map((w) => `| ${w} (${scale.get(`queue-${w}`)?.unit ?? ''}) | ${cell(w, 'ours')} | ${cell(w, 'peer')} |`),
      ``,
    ];
  } finally {
    await lab.stop().catch(() => undefined);
    await peer?.stop().catch(() => undefined);
  }
}

/** `BENCH_ONLY=queue`: the queue-depth series alone. */
async function queueOnly(started: Date) {
  const scale = new Figures();
  const lines = await queueSeries(scale);
  await report(started, undefined, '-queue', [`## Scale series`, ``, ...lines], scale);
}

/**
 * CPU profiles of the default lab's node processes (`node --cpu-prof`, through MAILLAB_NODE_ARGS) over a boot and
 * one throughput run of THROUGHPUT_COUNT messages, summarised per node (bench/profile.ts): the evidence behind the
 * figures.
 */
async function profileFigures(): Promise<string[]> {
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'maillab-profile-'));
  const previous = process.env.MAILLAB_NODE_ARGS;
  process.env.MAILLAB_NODE_ARGS = `${previous ?? ''} --cpu-prof --cpu-prof-dir=${dir}`.trim();
  let lab: StartedLab;
  try {
    lab = await new Lab(benchLab).withRuntime('local').start();
  } finally {
    if (previous === undefined) delete process.env.MAILLAB_NODE_ARGS;
    else process.env.MAILLAB_NODE_ARGS = previous;
  }
  const names = new Map<number, string>();
  try {
    for (const node of lab.nodes()) names.set((await node.health()).pid, `${node.name} (${node.role})`);
    const system = labSystem(lab, false);
    log(`profile: ${THROUGHPUT_COUNT} messages with every node under --cpu-prof`);
    await throughput(system, system.submission);
  } finally {
    await lab.stop(); // the profiles are written as the processes exit
  }
  const profiles = await profilesByPid(dir);
  await fs.rm(dir, { recursive: true, force: true });
  const lines = [...names].flatMap(([pid, name]) => {
    const p = profiles.get(pid);
    return p ? summaryLines(name, summarise(p), THROUGHPUT_COUNT) : [`**${name}**: no profile written (the process did not exit cleanly).`, ``];
  });
  return [`## CPU profiles: boot, then ${THROUGHPUT_COUNT} × 1 KiB over ${CONNECTIONS} connections (submission → Maildir), then stop`, ``, ...lines];
}

/** `BENCH_ONLY=profile`: the CPU profiles alone. */
async function profileOnly(started: Date) {
  await report(started, undefined, '-profile', await profileFigures());
}

/** `BENCH_ONLY=scale`: the default lab and the peer, both up, the scale series alone. */
async function scaleOnly(started: Date) {
  const ourLab = await new Lab(benchLab).withRuntime('local').start();
  let peer: PeerLab | undefined;
  const scale = new Figures();
  let lines: string[] = [];
  try {
    const sides: Side[] = [{ who: 'ours', system: labSystem(ourLab, false) }];
    const p = await startPeer({ log });
    if ('skipped' in p) notes.push(`Peer skipped: ${p.skipped}. Our figures are printed alone.`);
    else {
      peer = p;
      sides.push({ who: 'peer', system: peerSystem(p, false) });
    }
    lines = await scaleFigures(sides, scale);
  } finally {
    await ourLab.stop().catch(() => undefined);
    await peer?.stop().catch(() => undefined);
  }
  await report(started, peer?.name, '-scale', [`## Scale series`, ``, ...lines], scale);
}

/** `BENCH_ONLY=mailbox`: the mailbox-size series alone. */
async function mailboxOnly(started: Date) {
  const scale = new Figures();
  const lines = await mailboxSeries(scale);
  await report(started, undefined, '-mailbox', [`## Scale series`, ``, ...lines], scale);
}

/**
 * IMAP cycles per second under IMAP_CLIENTS concurrent clients, and the state errors they saw, on a fresh lab and
 * on the peer's Dovecot, both running, in alternating rounds, so a slow patch of the shared machine does not fall on
 * one system only.
 */
async function imapFigure(peer: PeerLab | undefined) {
  log(`imap cycles: ${IMAP_CLIENTS} clients, ${RUNS} alternating rounds of ${IMAP_SECONDS} s`);
  const lab = await new Lab(benchLab).withRuntime('local').start();
  try {
    const systems: { who: Who; name: string; target: ImapTarget; rounds: CycleResult[] }[] = [
      { who: 'ours', name: 'maillab', target: { ...lab.nodeOf('mailbox').service('imap'), ...IMAP_USER }, rounds: [] },
    ];
    if (peer) systems.push({ who: 'peer', name: 'dovecot', target: { ...peer.imap, ...IMAP_USER }, rounds: [] });
    for (const s of systems) await seedMailbox(s.target, IMAP_SEED_MESSAGES);
    for (let round = 0; round < RUNS; round++) {
      for (const s of orderOf(systems, round)) {
        const r = await runCycles(s.target, IMAP_CLIENTS, IMAP_SECONDS);
        s.rounds.push(r);
        figures.sample(F.imapCycles, s.who, round, r.cycles / r.seconds);
        figures.sample(F.imapErrors, s.who, round, total(r.errors));
        log(`imap ${s.name} round ${round + 1}: ${r.cycles} cycles in ${r.seconds.toFixed(1)} s (${(r.cycles / r.seconds).toFixed(0)}/s), state errors ${total(r.errors)} ${JSON.stringify(r.errors)}, failures ${total(r.failures)} ${JSON.stringify(r.failures)}`);
      }
    }
    for (const s of systems) {
      const errors = sumCounts(s.rounds.map((r) => r.errors));
      const failures = sumCounts(s.rounds.map((r) => r.failures));
      notes.push(`IMAP ${s.name}: ${s.rounds.reduce((a, r) => a + r.cycles, 0)} cycles in ${RUNS} rounds; state errors ${total(errors)}${total(errors) ? ` (${Object.entries(errors).map(([k, v]) => `${k}: ${v}`).join('; ')})` : ''}; failed commands/connections ${total(failures)}${total(failures) ? ` (${Object.entries(failures).map(([k, v]) => `${k}: ${v}`).join('; ')})` : ''}.`);
      const examples = [...new Set(s.rounds.flatMap((r) => r.examples))].slice(0, 6);
      if (examples.length > 0) notes.push(`IMAP ${s.name}, examples: ${examples.map((e) => '`' + e.replace(/`/g, "'").replace(/\r\n/g, ' ') + '`').join(' · ')}`);
    }
    const ourErrors = systems[0]!.rounds.reduce((a, r) => a + total(r.errors), 0);
    const ratio = ratioStats(figures.get(F.imapCycles.id)!);
    const r = ratio?.median;
    const met = r !== undefined && r >= IMAP_GOAL_RATIO && ourErrors === 0;
    const why = r === undefined ? 'no peer to compare with' : [r < IMAP_GOAL_RATIO ? `ratio ${r.toFixed(2)}× < ${IMAP_GOAL_RATIO}×` : '', ourErrors > 0 ? `${ourErrors} state errors` : ''].filter(Boolean).join(', ');
    const spread = ratio && ratio.samples.length > 1 ? ` (${ratio.min.toFixed(2)}–${ratio.max.toFixed(2)} over ${ratio.samples.length} rounds)` : '';
    goals.push(`IMAP goal (≥ ${IMAP_GOAL_RATIO}× Dovecot's cycles/s with zero state errors): ${met ? 'met' : 'missed'}${r !== undefined ? ` — median ratio ${r.toFixed(2)}×${spread}` : ''}, state errors maillab ${ourErrors}${systems[1] ? `, Dovecot ${systems[1].rounds.reduce((a, x) => a + total(x.errors), 0)}` : ''}${met ? '' : ` (${why})`}`);
  } finally {
    await lab.stop();
  }
}

function sumCounts(list: Record<string, number>[]): Record<string, number> {
  const out: Record<string, number> = {};
  for (const counts of list) for (const [k, v] of Object.entries(counts)) out[k] = (out[k] ?? 0) + v;
  return out;
}

/** The floors of a lab of four Node processes against the peer (bench/floor.ts), when both were measured. */
function floorSection(): string[] {
  const row = (what: string, unit: string, floor: FigureDef, figure: FigureDef, goal: number) => {
    const f = figures.get(floor.id);
    const p = figures.get(figure.id);
    return { what, unit, goal, ...(f && statsOf(f, 'ours') ? { floor: statsOf(f, 'ours') } : {}), ...(p && statsOf(p, 'peer') ? { peer: statsOf(p, 'peer') } : {}) };
  };
  const lines = floorLines([
    row('Local boot', 'ms', F.floorBoot, F.bootLocal, 2),
    row('Idle memory, RSS', 'MiB', F.floorIdle, F.memoryIdle, 1),
    row('Idle memory, PSS', 'MiB', F.floorIdlePss, F.memoryIdlePss, 1),
  ]);
  return lines.length ? [`## Floors of a lab of four Node processes`, ``, ...lines.map((l) => `- ${l}`), ``] : [];
}

async function report(started: Date, peerName?: string, suffix = '', extra: string[] = [], scale?: Figures) {
  const machine = { cores: os.cpus().length, cpu: os.cpus()[0]?.model ?? 'unknown', memoryGiB: Math.round(os.totalmem() / 2 ** 30), node: process.version, platform: `${os.platform()} ${os.release()}`, loadAverage: LOAD_AT_START, loadAverageAtEnd: os.loadavg() };
  const dir = path.join(packageRoot(), 'bench', 'results');
  await fs.mkdir(dir, { recursive: true });
  const verdicts = judge(figures, GOALS).filter((v) => figures.get(v.figure));
  const result = { date: started.toISOString(), machine, peer: peerName ?? null, runs: RUNS, figures: figures.all().map(figureJson), verdicts, errors, goals, notes, ...(scale ? { scale: scale.all().map(figureJson) } : {}) };
  await fs.writeFile(path.join(dir, `latest${suffix}.json`), JSON.stringify(result, null, 2) + '\n');
  const lines = [
    `# maillab benchmark`,
    ``,
    `${started.toISOString()} · ${machine.cores} cores (${machine.cpu}) · ${machine.memoryGiB} GiB · Node ${machine.node} · ${machine.platform} · load average at the start ${machine.loadAverage.map((l) => l.toFixed(2)).join(' ')}, at the end ${machine.loadAverageAtEnd.map((l) => l.toFixed(2)).join(' ')}`,
    `Peer: ${peerName ?? 'none'} · ${RUNS} interleaved rounds (maillab and the peer one after the other, the order alternating); each system: median (min–max) of its rounds${ONLY === 'imap' ? ` (IMAP: ${IMAP_SECONDS} s rounds)` : ` (latency: the median of ${LATENCY_SAMPLES} messages per round)`}; ratio: median (min–max) of the per-round ratios`,
    ``,
    ...errors.map((e) => `**ERROR: ${e}**`),
    ...(errors.length ? [``] : []),
    ...(verdicts.length ? [`## Goals`, ``, ...goalsTable(verdicts, figures), ``] : []),
    ...goals.map((g) => `**${g}**`),
    ...(goals.length ? [``] : []),
    ...(figures.all().length ? [`## Figures`, ``, ...figuresTable(figures), ``] : []),
    ...floorSection(),
    ...extra,
    ...notes.map((n) => `- ${n}`),
    ``,
  ];
  await fs.writeFile(path.join(dir, `latest${suffix}.md`), lines.join('\n'));
  process.stdout.write(lines.join('\n'));
}

main().catch((err) => {
  process.stderr.write(`bench: ${err instanceof Error ? err.stack : String(err)}\n`);
  process.exitCode = 1;
});
