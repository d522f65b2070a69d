// `npm run bench`: boot time, latency, throughput, inbound MX rate and memory of the default lab, and the same
// flows on Postfix + Dovecot in the same run, printed as ratios; then throughput and latency again with TLS on every
// hop (the default lab as is, against a peer configured with TLS), each TLS figure only when a delivered message's
// Received headers prove that every SMTP hop of that run used TLS. It measures; it does not judge (exit 0).
import { randomBytes } from 'node:crypto';
import { promises as fs } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { ImapFlow } from 'imapflow';
import nodemailer from 'nodemailer';
import defaultLab from '../lab/default.js';
import { Lab, type StartedLab } from '../src/harness/lab.js';
import { packageRoot } from '../src/harness/runtime/types.js';
import { runCycles, seedMailbox, total, type CycleResult, type ImapTarget } from './imap-cycles.js';
import { findDelivered, greeting, maildirCount, maildirNames, memory, message, peakMemoryDuring, stats, submitMany, waitForMaildir, type Stats, type Target } from './load.js';
import { startPeer, type PeerLab } from './peer.js';

const RUNS = Number(process.env.BENCH_RUNS ?? 3);
const LATENCY_SAMPLES = Number(process.env.BENCH_LATENCY_SAMPLES ?? 20);
const THROUGHPUT_COUNT = Number(process.env.BENCH_COUNT ?? 2000);
const CONNECTIONS = 20;
const IMAP_CLIENTS = Number(process.env.BENCH_IMAP_CLIENTS ?? 10);
const IMAP_SECONDS = Number(process.env.BENCH_IMAP_SECONDS ?? 10);
const IMAP_SEED_MESSAGES = 20;
/** The IMAP cycles' goal: at least this many times Dovecot's cycles per second, with zero state errors. */
const IMAP_GOAL_RATIO = 1.5;
/**
 * Partial runs: `BENCH_ONLY=imap`, the IMAP cycles figure alone (results go to bench/results/latest-imap.{json,md});
 * `BENCH_ONLY=tls`, the TLS throughput and latency figures alone (bench/results/latest-tls.{json,md}).
 */
const ONLY = process.env.BENCH_ONLY;
if (ONLY !== undefined && ONLY !== 'imap' && ONLY !== 'tls') throw new Error(`BENCH_ONLY=${ONLY}: the partial runs are BENCH_ONLY=imap and BENCH_ONLY=tls`);
/** Carol on both systems (same password in lab/default.ts and bench/peer.ts): bob's INBOX is full of throughput mail. */
const IMAP_USER = { user: 'carol@receiver.test', pass: 'carol-secret' };

interface Figure {
  id: string;
  title: string;
  unit: string;
  /** Which direction is better, for the ratio's reading. */
  better: 'lower' | 'higher';
  ours?: Stats;
  peer?: Stats;
  note?: string;
}

const figures: Figure[] = [];
const notes: string[] = [];
/** Goals judged by this run, one line each ("met" / "missed"), printed first among the notes. */
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
 * The default lab, with passwords allowed in plaintext: these figures compare the same plaintext flows with the
 * peer, which runs without TLS (RFC 8314's refusal is the lab's default; TLS figures are measured apart).
 */
const benchLab = { ...defaultLab, tls: { ...defaultLab.tls, allowPlaintextAuth: true } };

/** Starts and stops the default lab `runs` times, timing start until every service greets. */
async function bootSamples(runtime: 'local' | 'docker', runs: number): Promise<Stats> {
  const samples: number[] = [];
  for (let i = 0; i < runs; i++) {
    let lab: StartedLab | undefined;
    samples.push(
      await timeIt(async () => {
        lab = await new Lab(benchLab).withRuntime(runtime).start();
        await checkGreetings(lab);
      }),
    );
    await lab!.stop();
  }
  return stats(samples);
}

function bootLocal(): Promise<Stats> {
  return bootSamples('local', Math.max(RUNS, 5));
}

/** The lab's services on implicit TLS (RFC 8314): they greet only after a TLS handshake. */
const IMPLICIT_TLS = new Set(['submissions', 'imaps', 'pop3s']);

/** Every service accepts a connection and answers its greeting (DNS: answers a query; implicit TLS: after the handshake). */
async function checkGreetings(lab: StartedLab): Promise<void> {
  const checks: Promise<unknown>[] = [];
  for (const node of lab.nodes()) {
    for (const [name, endpoint] of Object.entries(node.services)) {
      if (name === 'dns') {
        const { createLabResolver } = await import('../src/dns/index.js');
        checks.push(createLabResolver(endpoint).resolveMx('receiver.test'));
      } else checks.push(greeting(endpoint.host, endpoint.port, undefined, IMPLICIT_TLS.has(name) ? lab.tlsFor(node.name) : undefined));
    }
  }
  await Promise.all(checks);
}

async function bootDocker(): Promise<Stats | string> {
  const { dockerEngine } = await import('../src/harness/runtime/docker.js');
  const engine = await dockerEngine(3000);
  if (!engine.available) return `no Docker engine answers (${engine.reason ?? 'unknown'})`;
  const { ensureImage } = await import('../src/harness/runtime/images.js');
  await ensureImage();
  return bootSamples('docker', RUNS);
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
 * 2,000 × 1 KiB over 20 connections until every one is stored; messages per second. With `target.tls`, every run
 * must prove TLS on every SMTP hop (one of its messages, checked after the clock stopped).
 */
async function throughput(system: System, target: Target): Promise<{ rate: Stats; peak: { rssMiB: number; pssMiB?: number }; tls: string[] }> {
  const rates: number[] = [];
  const proofs: string[] = [];
  let peak = { rssMiB: 0 } as { rssMiB: number; pssMiB?: number };
  for (let run = 0; run < RUNS; run++) {
    const names = target.tls ? await maildirNames(system.bobMaildir) : undefined;
    const before = await maildirCount(system.bobMaildir);
    const runId = randomBytes(4).toString('hex');
    const t0 = performance.now();
    const work = (async () => {
      await submitMany(target, THROUGHPUT_COUNT, CONNECTIONS, runId);
      await waitForMaildir(system.bobMaildir, before + THROUGHPUT_COUNT, 300_000);
    })();
    const measured = await peakMemoryDuring(() => system.pids(), work);
    const seconds = (performance.now() - t0) / 1000;
    rates.push(THROUGHPUT_COUNT / seconds);
    if (measured.peak.rssMiB > peak.rssMiB) peak = measured.peak;
    log(`${system.name}: ${THROUGHPUT_COUNT} messages to ${target.host}:${target.port}${target.tls ? ' (STARTTLS)' : ''} in ${seconds.toFixed(2)} s`);
    if (names) {
      const proof = await proveTls(system, names, runId, `throughput run ${run + 1}`);
      log(`${system.name}: throughput run ${run + 1}, TLS seen: ${proof}`);
      proofs.push(proof);
    }
  }
  return { rate: stats(rates), peak, tls: proofs };
}

async function measure(system: System, id: 'ours' | 'peer') {
  log(`${system.name}: latency`);
  const lat = await latency(system);
  put('latency-stored', 'Latency: submission → stored in Maildir', 'ms', 'lower', id, lat.stored);
  put('latency-idle', 'Latency: submission → seen by an IMAP client in IDLE', 'ms', 'lower', id, lat.idle);
  const idleMemory = await memory(await system.pids());
  log(`${system.name}: throughput`);
  const tp = await throughput(system, system.submission);
  put('throughput', `Throughput: ${THROUGHPUT_COUNT} × 1 KiB, ${CONNECTIONS} connections, submission → Maildir`, 'msg/s', 'higher', id, tp.rate);
  log(`${system.name}: inbound MX`);
  const mx = await throughput(system, system.mx);
  put('mx-rate', `Inbound MX: ${THROUGHPUT_COUNT} × 1 KiB to the MX, until stored (MX → LMTP → Maildir)`, 'msg/s', 'higher', id, mx.rate);
  put('memory-idle', 'Memory idle: RSS sum', 'MiB', 'lower', id, stats([idleMemory.rssMiB]));
  if (idleMemory.pssMiB !== undefined) put('memory-idle-pss', 'Memory idle: PSS sum', 'MiB', 'lower', id, stats([idleMemory.pssMiB]));
  const peak = tp.peak.rssMiB > mx.peak.rssMiB ? tp.peak : mx.peak;
  put('memory-peak', 'Memory at throughput peak: RSS sum', 'MiB', 'lower', id, stats([peak.rssMiB]));
  if (peak.pssMiB !== undefined) put('memory-peak-pss', 'Memory at throughput peak: PSS sum', 'MiB', 'lower', id, stats([peak.pssMiB]));
}

const TLS_THROUGHPUT = { id: 'tls-throughput', title: `Throughput, TLS on every hop: ${THROUGHPUT_COUNT} × 1 KiB, ${CONNECTIONS} connections, submission (STARTTLS, AUTH) → Maildir`, unit: 'msg/s', better: 'higher' } as const;
const TLS_LATENCY = { id: 'tls-latency-stored', title: 'Latency: submission → stored in Maildir, TLS on every hop', unit: 'ms', better: 'lower' } as const;

/**
 * The TLS figures for one system; a run without proof of TLS leaves that figure without this system's value (so
 * without a ratio) and says so loudly, on stderr and first in the report.
 */
async function measureTls(system: System, id: 'ours' | 'peer') {
  const proofs: string[] = [];
  const attempt = async (figure: typeof TLS_LATENCY | typeof TLS_THROUGHPUT, fn: () => Promise<{ value: Stats; tls: string[] }>) => {
    try {
      const r = await fn();
      put(figure.id, figure.title, figure.unit, figure.better, id, r.value);
      proofs.push(...r.tls);
    } catch (err) {
      if (!(err instanceof TlsNotUsed)) throw err;
      failTls(`${err.message}. No ${id === 'ours' ? 'maillab' : 'peer'} value and no ratio for "${figure.title}".`);
    }
  };
  log(`${system.name}: latency, TLS`);
  await attempt(TLS_LATENCY, async () => {
    const lat = await latency(system);
    return { value: lat.stored, tls: lat.tls ? [lat.tls] : [] };
  });
  log(`${system.name}: throughput, TLS`);
  await attempt(TLS_THROUGHPUT, async () => {
    const tp = await throughput(system, { ...system.submission, tls: system.tls!.submission });
    return { value: tp.rate, tls: tp.tls };
  });
  if (proofs.length > 0) notes.push(`TLS seen by ${system.name} (one delivered message per run, ${proofs.length} runs): ${[...new Set(proofs)].join(' · ')}.`);
}

function failTls(message: string) {
  log(`ERROR: TLS NOT VERIFIED: ${message}`);
  errors.push(`TLS not verified: ${message}`);
}

/** The default lab's flows for the benchmark; `tls` for the TLS figures (submission and IMAP over STARTTLS). */
function labSystem(lab: StartedLab, tls: boolean): System {
  const mailboxNode = lab.nodes().find((n) => n.role === 'mailbox')!;
  const mxNode = lab.nodes().find((n) => n.role === 'mx')!;
  const mtaNode = lab.nodes().find((n) => n.role === 'mta')!;
  return {
    name: 'maillab',
    submission: { ...mtaNode.service('submission'), auth: { user: 'alice@sender.test', pass: 'alice-secret' } },
    mx: mxNode.service('smtp'),
    imap: { ...mailboxNode.service('imap'), user: 'bob@receiver.test', pass: 'bob-secret' },
    bobMaildir: path.join(mailboxNode.config.dataDir, 'bob@receiver.test', 'Maildir'),
    pids: async () => Promise.all(lab.nodes().map(async (n) => (await n.health()).pid)),
    ...(tls ? { tls: { submission: lab.tlsFor(mtaNode.name), imap: lab.tlsFor(mailboxNode.name), cipherInTrace: true } } : {}),
  };
}

/**
 * TLS on every hop: the default lab as is (its CA, STARTTLS required before AUTH on 587, opportunistic STARTTLS from
 * the MTA to the MX, IMAP STARTTLS; LMTP plaintext), then the peer started with TLS (see bench/peer.ts), one after
 * the other like the plaintext figures. Returns the TLS peer's name, when it ran.
 */
async function tlsFigures(): Promise<string | undefined> {
  for (const f of [TLS_THROUGHPUT, TLS_LATENCY]) put(f.id, f.title, f.unit, f.better, 'ours', undefined);
  log('TLS: default lab (lab CA, STARTTLS on every SMTP hop and on IMAP)');
  const lab = await new Lab(defaultLab).withRuntime('local').start();
  try {
    await measureTls(labSystem(lab, true), 'ours');
  } finally {
    await lab.stop();
  }
  log('TLS: peer Postfix + Dovecot with TLS');
  let peer: PeerLab | { skipped: string };
  try {
    peer = await startPeer({ log, tls: true });
  } catch (err) {
    failTls(`the peer configured with TLS did not start: ${err instanceof Error ? err.message.split('\n')[0] : String(err)}. No peer values and no TLS ratios.`);
    return undefined;
  }
  if ('skipped' in peer) {
    notes.push(`TLS peer skipped: ${peer.skipped}. Our TLS figures are printed alone.`);
    return undefined;
  }
  const p = peer;
  try {
    if (!p.tls) {
      failTls('the peer started without TLS settings. No peer values and no TLS ratios.');
      return p.name;
    }
    notes.push(`Peer TLS settings: ${p.tls.settings.join(' · ')}.`);
    await measureTls({ name: p.name, submission: p.submission, mx: p.mx, imap: p.imap, bobMaildir: p.bobMaildir, pids: () => p.pids(), tls: { submission: p.tls.submission, imap: p.tls.imap, cipherInTrace: true } }, 'peer');
  } finally {
    await p.stop().catch(() => undefined);
  }
  return p.name;
}

function put(idOf: string, title: string, unit: string, better: 'lower' | 'higher', who: 'ours' | 'peer', value: Stats | undefined, note?: string) {
  let figure = figures.find((f) => f.id === idOf);
  if (!figure) figures.push((figure = { id: idOf, title, unit, better }));
  if (value) figure[who] = value;
  if (note) figure.note = note;
}

function fmt(s: Stats | undefined, unit: string): string {
  if (!s) return '—';
  const d = unit === 'count' || s.median >= 100 ? 0 : s.median >= 10 ? 1 : 2;
  return s.samples.length > 1 ? `${s.median.toFixed(d)} (${s.min.toFixed(d)}–${s.max.toFixed(d)})` : s.median.toFixed(d);
}

/** ours/peer for "higher is better", peer/ours for "lower is better": above 1 means maillab is better. */
function ratio(f: Figure): string {
  if (!f.ours || !f.peer || f.ours.median === 0 || f.peer.median === 0) return '—';
  const r = f.better === 'higher' ? f.ours.median / f.peer.median : f.peer.median / f.ours.median;
  return `${r.toFixed(2)}×`;
}

async function main() {
  const started = new Date();
  if (ONLY === 'imap') return imapOnly(started);
  if (ONLY === 'tls') return tlsOnly(started);
  const ourLab = await new Lab(benchLab).withRuntime('local').start();
  const ours = labSystem(ourLab, false);
  let peer: PeerLab | { skipped: string } = { skipped: 'not started' };
  try {
    log('boot: local runtime');
    put('boot-local', 'Boot: default lab, local runtime, until every service greets', 'ms', 'lower', 'ours', await bootLocal());
    log('boot: docker runtime');
    const docker = await bootDocker().catch((err: Error) => `failed: ${err.message}`);
    if (typeof docker === 'string') notes.push(`Docker boot skipped: ${docker}.`);
    else put('boot-docker', 'Boot: default lab, docker runtime (cached images), until every service greets', 'ms', 'lower', 'ours', docker);

    await measure(ours, 'ours');
    await ourLab.stop();

    log('peer: Postfix + Dovecot');
    peer = await startPeer({ log });
    if ('skipped' in peer) {
      notes.push(`Peer skipped: ${peer.skipped}. Our figures are printed alone.`);
    } else {
      const p = peer;
      const bootPeer = Math.max(...Object.values(p.bootMs));
      put('boot-local', 'Boot: default lab, local runtime, until every service greets', 'ms', 'lower', 'peer', stats([bootPeer]));
      notes.push(`Peer boot per service (ms): ${Object.entries(p.bootMs).map(([k, v]) => `${k} ${v.toFixed(0)}`).join(', ')}.`);
      await measure({ name: p.name, submission: p.submission, mx: p.mx, imap: p.imap, bobMaildir: p.bobMaildir, pids: () => p.pids() }, 'peer');
      if (!p.submission.auth) notes.push('The peer takes submissions on port 25 from loopback without AUTH; maillab submits with AUTH PLAIN on 587.');
    }
    await imapFigure('skipped' in peer ? undefined : peer);
  } finally {
    await ourLab.stop().catch(() => undefined);
    if (!('skipped' in peer)) await peer.stop().catch(() => undefined);
  }
  // After the plaintext peer stopped: the TLS peer binds the same addresses.
  await tlsFigures().catch((err: Error) => failTls(`the TLS figures failed: ${err.message.split('\n')[0]}`));
  await report(started, 'skipped' in peer ? undefined : peer.name);
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

/**
 * IMAP cycles per second under IMAP_CLIENTS concurrent clients, and the state errors they saw, on a fresh lab and
 * on the peer's Dovecot, both running, in alternating rounds (ours, Dovecot, ours, Dovecot...), so a slow patch of
 * the shared machine does not fall on one system only.
 */
async function imapFigure(peer: PeerLab | undefined) {
  log(`imap cycles: ${IMAP_CLIENTS} clients, ${RUNS} alternating rounds of ${IMAP_SECONDS} s`);
  const lab = await new Lab(benchLab).withRuntime('local').start();
  try {
    const systems: { who: 'ours' | 'peer'; name: string; target: ImapTarget; rounds: CycleResult[] }[] = [
      { who: 'ours', name: 'maillab', target: { ...lab.nodeOf('mailbox').service('imap'), ...IMAP_USER }, rounds: [] },
    ];
    if (peer) systems.push({ who: 'peer', name: 'dovecot', target: { ...peer.imap, ...IMAP_USER }, rounds: [] });
    for (const s of systems) await seedMailbox(s.target, IMAP_SEED_MESSAGES);
    for (let round = 0; round < RUNS; round++) {
      for (const s of systems) {
        const r = await runCycles(s.target, IMAP_CLIENTS, IMAP_SECONDS);
        s.rounds.push(r);
        log(`imap ${s.name} round ${round + 1}: ${r.cycles} cycles in ${r.seconds.toFixed(1)} s (${(r.cycles / r.seconds).toFixed(0)}/s), state errors ${total(r.errors)} ${JSON.stringify(r.errors)}, failures ${total(r.failures)} ${JSON.stringify(r.failures)}`);
      }
    }
    const title = `IMAP: ${IMAP_CLIENTS} concurrent clients, login→select→fetch→store→expunge→append→logout`;
    for (const s of systems) {
      put('imap-cycles', title, 'cycles/s', 'higher', s.who, stats(s.rounds.map((r) => r.cycles / r.seconds)));
      put('imap-state-errors', `IMAP state errors per ${IMAP_SECONDS} s round (same clients)`, 'count', 'lower', s.who, stats(s.rounds.map((r) => total(r.errors))));
      const errors = sumCounts(s.rounds.map((r) => r.errors));
      const failures = sumCounts(s.rounds.map((r) => r.failures));
      notes.push(`IMAP ${s.name}: ${s.rounds.reduce((a, r) => a + r.cycles, 0)} cycles in ${RUNS} rounds; state errors ${total(errors)}${total(errors) ? ` (${Object.entries(errors).map(([k, v]) => `${k}: ${v}`).join('; ')})` : ''}; failed commands/connections ${total(failures)}${total(failures) ? ` (${Object.entries(failures).map(([k, v]) => `${k}: ${v}`).join('; ')})` : ''}.`);
      const examples = [...new Set(s.rounds.flatMap((r) => r.examples))].slice(0, 6);
      if (examples.length > 0) notes.push(`IMAP ${s.name}, examples: ${examples.map((e) => '`' + e.replace(/`/g, "'").replace(/\r\n/g, ' ') + '`').join(' · ')}`);
    }
    const ours = systems[0]!;
    const ourErrors = ours.rounds.reduce((a, r) => a + total(r.errors), 0);
    const fig = figures.find((f) => f.id === 'imap-cycles')!;
    const r = fig.ours && fig.peer ? fig.ours.median / fig.peer.median : undefined;
    const met = r !== undefined && r >= IMAP_GOAL_RATIO && ourErrors === 0;
    const why = r === undefined ? 'no peer to compare with' : [r < IMAP_GOAL_RATIO ? `ratio ${r.toFixed(2)}× < ${IMAP_GOAL_RATIO}×` : '', ourErrors > 0 ? `${ourErrors} state errors` : ''].filter(Boolean).join(', ');
    goals.push(`IMAP goal (≥ ${IMAP_GOAL_RATIO}× Dovecot's cycles/s with zero state errors): ${met ? 'met' : 'missed'}${r !== undefined ? ` — ratio ${r.toFixed(2)}×` : ''}, state errors maillab ${ourErrors}${systems[1] ? `, Dovecot ${systems[1].rounds.reduce((a, x) => a + total(x.errors), 0)}` : ''}${met ? '' : ` (${why})`}`);
  } finally {
    await lab.stop();
  }
}

function sumCounts(list: Record<string, number>[]): Record<string, number> {
  const out: Record<string, number> = {};
  for (const counts of list) for (const [k, v] of Object.entries(counts)) out[k] = (out[k] ?? 0) + v;
  return out;
}

async function report(started: Date, peerName?: string, suffix = '') {
  const machine = { cores: os.cpus().length, cpu: os.cpus()[0]?.model ?? 'unknown', memoryGiB: Math.round(os.totalmem() / 2 ** 30), node: process.version, platform: `${os.platform()} ${os.release()}` };
  const dir = path.join(packageRoot(), 'bench', 'results');
  await fs.mkdir(dir, { recursive: true });
  const result = { date: started.toISOString(), machine, peer: peerName ?? null, runs: RUNS, figures, errors, goals, notes };
  await fs.writeFile(path.join(dir, `latest${suffix}.json`), JSON.stringify(result, null, 2) + '\n');
  const lines = [
    `# maillab benchmark`,
    ``,
    `${started.toISOString()} · ${machine.cores} cores (${machine.cpu}) · ${machine.memoryGiB} GiB · Node ${machine.node} · ${machine.platform}`,
    `Peer: ${peerName ?? 'none'} · median (min–max) of ${RUNS} runs${ONLY === 'imap' ? ` (IMAP: ${IMAP_SECONDS} s rounds, alternating)` : ` (latency: ${LATENCY_SAMPLES} messages each)`}`,
    ``,
    `| figure | unit | maillab | peer | ratio (>1: maillab better) |`,
    `| --- | --- | --- | --- | --- |`,
    ...figures.map((f) => `| ${f.title} | ${f.unit} | ${fmt(f.ours, f.unit)} | ${fmt(f.peer, f.unit)} | ${ratio(f)} |`),
    ``,
    ...errors.map((e) => `**ERROR: ${e}**`),
    ...(errors.length ? [``] : []),
    ...goals.map((g) => `**${g}**`),
    ...(goals.length ? [``] : []),
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
