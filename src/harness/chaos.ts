// Seeded chaos (issue 15): a schedule of faults drawn from a seed (pure: the same seed and options give the same
// schedule, printed as JSON), run as a timeline while a stream of messages flows; at the end everything is healed,
// the lab settles (the MTA's queue empty), and the checkers decide. A failure prints the seed, the schedule and the
// variable that replays it: MAILLAB_SEED=<n>.
import { now } from '../shared/events.js';
import type { DnsFaultRule, SmtpFaultRule, Toxic } from '../shared/faults.js';
import { seededRandom, type Seed } from '../shared/seeded-random.js';
import { checkNoneLost, checkRetrySchedule, CheckFailure, deadline, type NoneLostReport, type NoneLostTarget, type OwedMessage } from './checkers/index.js';
import { checkDeliveryGuarantees, checkNoMisdelivery, type DeliveryReport } from './checkers/guarantees.js';
import type { History } from './history/history.js';
import { seedLine } from './history/history.js';
import type { RetryConfig } from '../shared/config.js';
import type { SendOptions, SendResult } from './clients/submission.js';
import { describeStep, startTimeline, targetKey, TimelineError, type FaultAdapter, type TimelineLab, type TimelineReport, type TimelineStep } from './timeline.js';

/** Every kind of fault a chaos schedule can draw from. */
export const CHAOS_KINDS = ['stop', 'kill', 'pause', 'partition', 'smtp', 'dns', 'link'] as const;
export type ChaosKind = (typeof CHAOS_KINDS)[number];

export interface ChaosScheduleOptions {
  /** The kinds available (a run draws only these): node faults always; pause and partition need docker; smtp, dns, link need their fault roles. */
  kinds: readonly ChaosKind[];
  /** How many faults (default 8). */
  faults?: number;
  /** The span of the schedule in ms: every fault starts and ends within it (default 6000). */
  durationMs?: number;
  /** How long a fault lasts, in ms (default 200–1500). */
  minFaultMs?: number;
  maxFaultMs?: number;
  /** Hosts of node faults (default mta, mx, mailbox, dns). */
  nodes?: readonly string[];
  /** Hosts whose SMTP/LMTP server gets rules (default mx, mailbox). */
  smtpHosts?: readonly string[];
  /** Links whose proxies get toxics (default mta→mx, mx→mailbox). */
  links?: readonly { from: string; to: string }[];
  /** Names whose DNS answers fail (default the MX records of receiver.test). */
  dnsNames?: readonly { name: string; type?: string }[];
}

/** A schedule: plain JSON, printed on failure. */
export interface ChaosSchedule {
  seed: Seed;
  kinds: ChaosKind[];
  durationMs: number;
  steps: TimelineStep[];
}

const DEFAULTS = {
  faults: 8,
  durationMs: 6000,
  minFaultMs: 200,
  maxFaultMs: 1500,
  nodes: ['mta', 'mx', 'mailbox', 'dns'],
  smtpHosts: ['mx', 'mailbox'],
  links: [
    { from: 'mta', to: 'mx' },
    { from: 'mx', to: 'mailbox' },
  ],
  dnsNames: [{ name: 'receiver.test', type: 'MX' }],
};

/**
 * The chaos schedule of a seed: `faults` steps over the given kinds, each `{ at: { ms }, do, for }` within
 * `durationMs`, never two at once on the same target (a host's node faults, a host's SMTP rules, the DNS rules, a
 * link), since each step's undo puts back what it changed. Pure: the same seed and options give the same schedule
 * on every machine (src/shared/seeded-random.ts).
 */
export function chaosSchedule(seed: Seed, options: ChaosScheduleOptions): ChaosSchedule {
  const kinds = CHAOS_KINDS.filter((k) => options.kinds.includes(k));
  if (kinds.length === 0) throw new Error(`chaosSchedule: no fault kinds to draw from (known: ${CHAOS_KINDS.join(', ')})`);
  const o = { ...DEFAULTS, ...options };
  if (o.minFaultMs > o.maxFaultMs || o.maxFaultMs >= o.durationMs) throw new Error(`chaosSchedule: faults of ${o.minFaultMs}–${o.maxFaultMs} ms do not fit a schedule of ${o.durationMs} ms`);
  const random = seededRandom(seed, 'chaos:schedule');
  const int = (lo: number, hi: number) => lo + Math.floor(random() * (hi - lo + 1));
  const pick = <T>(items: readonly T[]): T => items[Math.floor(random() * items.length)]!;
  // Busy windows per target: a new fault on a target starts only after its last one ended (plus a gap).
  const busy = new Map<string, { start: number; end: number }[]>();
  const steps: TimelineStep[] = [];
  for (let i = 0; i < o.faults; i++) {
    const kind = pick(kinds);
    const duration = int(o.minFaultMs, o.maxFaultMs);
    let action: TimelineStep['do'];
    if (kind === 'smtp') action = { smtp: { host: pick(o.smtpHosts), rules: [smtpRule(`chaos-${i}`, int, pick)] } };
    else if (kind === 'dns') {
      const { name, type } = pick(o.dnsNames);
      const fault = pick<DnsFaultRule['action']>([{ kind: 'servfail' }, { kind: 'timeout' }, { kind: 'refused' }, { kind: 'truncate' }]);
      action = { dns: { rules: [{ id: `chaos-${i}`, name, ...(type ? { type } : {}), action: fault, times: int(1, 5) }] } };
    } else if (kind === 'link') action = { link: { ...pick(o.links), toxics: [toxic(int, pick)] } };
    else action = { node: { host: pick(o.nodes), action: kind } };
    const target = targetKey(action);
    // A start time at which the target is free for the whole fault; a few tries, else the fault is left out.
    for (let attempt = 0; attempt < 20; attempt++) {
      const start = int(0, o.durationMs - duration);
      const windows = busy.get(target) ?? [];
      if (windows.some((w) => start < w.end + 100 && w.start < start + duration + 100)) continue;
      windows.push({ start, end: start + duration });
      busy.set(target, windows);
      steps.push({ at: { ms: start }, do: action, for: duration });
      break;
    }
  }
  steps.sort((a, b) => (a.at as { ms: number }).ms - (b.at as { ms: number }).ms);
  return { seed, kinds: [...kinds], durationMs: o.durationMs, steps };
}

function smtpRule(id: string, int: (lo: number, hi: number) => number, pick: <T>(items: readonly T[]) => T): SmtpFaultRule {
  switch (pick(['reply', 'drop', 'greylist', 'delay', 'rate-limit'] as const)) {
    case 'reply':
      return { id, stage: pick(['mail', 'rcpt', 'data'] as const), action: { kind: 'reply', code: 451, enhancedCode: '4.3.0', text: 'chaos: try again later' }, times: int(1, 3) };
    case 'drop':
      return { id, stage: 'end-of-data', action: { kind: 'drop', when: 'before-reply' }, times: int(1, 2) };
    case 'greylist':
      return { id, stage: 'rcpt', action: { kind: 'greylist', delayMs: int(300, 1200) } };
    case 'delay':
      return { id, stage: pick(['greeting', 'data', 'end-of-data'] as const), action: { kind: 'delay', ms: int(50, 500) } };
    case 'rate-limit':
      return { id, stage: 'mail', action: { kind: 'rate-limit', messages: int(5, 20), windowMs: 1000 } };
  }
}

function toxic(int: (lo: number, hi: number) => number, pick: <T>(items: readonly T[]) => T): Toxic {
  const stream = pick(['upstream', 'downstream'] as const);
  switch (pick(['latency', 'bandwidth', 'reset_peer', 'slicer', 'timeout'] as const)) {
    case 'latency':
      return { type: 'latency', stream, attributes: { latency: int(20, 300), jitter: int(0, 50) } };
    case 'bandwidth':
      return { type: 'bandwidth', stream, attributes: { rate: int(20, 500) } };
    case 'reset_peer':
      return { type: 'reset_peer', stream, toxicity: 0.3, attributes: { timeout: int(0, 200) } };
    case 'slicer':
      return { type: 'slicer', stream, attributes: { average_size: int(16, 256), size_variation: 8, delay: int(0, 2000) } };
    case 'timeout':
      return { type: 'timeout', stream, toxicity: 0.2, attributes: { timeout: int(100, 1000) } };
  }
}

/**
 * The pairs on whose copies the two checkers disagree, in words (undefined when they agree): checkNoneLost counts the
 * copies in the folders, checkDeliveryGuarantees the `stored` events (given the folders' counts). A pair with more
 * `stored` events than copies in the folder lost a copy after it was stored.
 */
type Copies = { duplicates: readonly { messageId: string; rcpt: string; copies: number }[] };
export function duplicateDisagreement(noneLost: Copies, delivery: Copies): { messageId: string; text: string } | undefined {
  const pairs = new Map<string, { messageId: string; rcpt: string; counted?: number; explained?: number }>();
  const pair = (d: { messageId: string; rcpt: string }) => {
    const key = `${d.messageId}\0${d.rcpt.toLowerCase()}`;
    if (!pairs.has(key)) pairs.set(key, { messageId: d.messageId, rcpt: d.rcpt.toLowerCase() });
    return pairs.get(key)!;
  };
  for (const d of noneLost.duplicates) pair(d).counted = d.copies;
  for (const d of delivery.duplicates) pair(d).explained = d.copies;
  const differ = [...pairs.values()].filter((p) => p.counted !== p.explained);
  if (differ.length === 0) return undefined;
  return { messageId: differ[0]!.messageId, text: differ.map((p) => `${p.messageId} → ${p.rcpt}: ${p.counted ?? 'at most 1'} in the folder, ${p.explained ?? 'at most 1'} by the stored events`).join('; ') };
}

/** The schedule as it is printed: one line per step, then the JSON to paste back. */
export function formatSchedule(schedule: ChaosSchedule): string {
  return [`chaos schedule of ${seedLine(schedule.seed)}: ${schedule.steps.length} faults over ${schedule.durationMs} ms (kinds: ${schedule.kinds.join(', ')})`, ...schedule.steps.map((s, i) => `  ${i}. ${describeStep(s)}`), JSON.stringify(schedule)].join('\n');
}

/** What a chaos run drives: a StartedLab is one. */
export interface ChaosLab extends TimelineLab, NoneLostTarget {
  seed: Seed;
  history: History;
  definition: { retry: RetryConfig };
  client(address: string): { send(message: SendOptions): Promise<SendResult> };
  mta(): { queue(): Promise<unknown[]>; flush(): Promise<unknown> };
  mailbox(user: string): { messages(mailbox?: string): Promise<{ uid: number }[]>; read(uid: number, mailbox?: string): Promise<Buffer>; find(messageId: string, mailbox?: string): Promise<{ uid: number; raw: Buffer }[]> };
}

export interface ChaosRunOptions extends Omit<ChaosScheduleOptions, 'kinds'> {
  kinds: readonly ChaosKind[];
  /** Default: the lab's seed (MAILLAB_SEED, the definition's, or a new one). */
  seed?: Seed;
  /** Messages submitted (default 200). */
  messages?: number;
  /** Clients submitting at once (default 8). */
  clients?: number;
  /** The sender (default alice@sender.test). */
  from?: string;
  /** Recipients drawn from (default bob and carol at receiver.test, and alice: both paths). */
  recipients?: readonly string[];
  /** The whole run, settling and checking included, is bounded by this (default 60 s). */
  budgetMs?: number;
  /** Bound on duplicate copies (default: 2 per fault, each explained). */
  maxDuplicates?: number;
  /** Slack of a late retry (default 5 s: under chaos the MTA's 32 attempts at once delay some); an early one always fails. */
  retrySlackMs?: number;
  /** Tells one run's Message-IDs from another's on the same lab (default 'run'). */
  label?: string;
  adapter?: FaultAdapter;
  log?: (line: string) => void;
}

export interface ChaosReport {
  seed: Seed;
  schedule: ChaosSchedule;
  accepted: number;
  notAccepted: number;
  owed: OwedMessage[];
  timeline: TimelineReport;
  delivery: DeliveryReport;
  noneLost: NoneLostReport;
  /** Retries measured against the rule, and those a fault moved. */
  retries: { measured: number; excused: number };
  /** The nemesis's actions during the run, in order, as `kind target` (what a replay must repeat). */
  faults: string[];
  wallMs: number;
}

/** A chaos run that failed: the message holds the cause, the seed, MAILLAB_SEED and the schedule. */
export class ChaosFailure extends Error {
  override name = 'ChaosFailure';
  constructor(
    message: string,
    readonly schedule: ChaosSchedule,
    override readonly cause: unknown,
  ) {
    super(message);
  }
}

const SETTLED_AT_MTA = new Set(['relayed', 'delivered', 'bounced', 'expired']);
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/**
 * Runs a seeded chaos run: submits `messages` messages (paced over the schedule's span, so faults meet traffic)
 * while the schedule runs as a timeline; heals everything; flushes the MTA; waits until its queue is empty; then
 * checks that every accepted message reached each recipient exactly once or bounced (duplicates explained and
 * bounded), that nothing went to a recipient it was not addressed to, and that retries kept the rule. Bounded by
 * `budgetMs`; fails with a ChaosFailure that prints the seed, MAILLAB_SEED and the schedule.
 */
export async function runChaos(lab: ChaosLab, options: ChaosRunOptions): Promise<ChaosReport> {
  const began = now();
  const seed = options.seed ?? lab.seed;
  const count = options.messages ?? 200;
  const budgetMs = options.budgetMs ?? 60_000;
  const log = options.log ?? (() => undefined);
  const { kinds, seed: _s, messages: _m, clients: _c, from: _f, recipients: _r, budgetMs: _b, maxDuplicates: _d, retrySlackMs: _rs, label: _l, adapter, log: _lg, ...scheduleOptions } = options;
  const schedule = chaosSchedule(seed, { kinds, ...scheduleOptions });
  const replay = `MAILLAB_SEED=${seed}`;
  log(formatSchedule(schedule));
  const fail = (what: string, cause: unknown): never => {
    const reason = cause instanceof Error ? cause.message : String(cause);
    throw new ChaosFailure(`chaos run failed: ${what}: ${reason}\n${seedLine(seed)}; replay: ${replay} (same schedule)\n${formatSchedule(schedule)}`, schedule, cause);
  };

  const from = options.from ?? 'alice@sender.test';
  const recipients = options.recipients ?? ['bob@receiver.test', 'carol@receiver.test', 'alice@sender.test'];
  const label = options.label ?? 'run';
  const draw = seededRandom(seed, 'chaos:recipients');
  const plan = Array.from({ length: count }, () => {
    const first = recipients[Math.floor(draw() * recipients.length)]!;
    if (draw() < 0.15) {
      const second = recipients[Math.floor(draw() * recipients.length)]!;
      return second === first ? [first] : [first, second];
    }
    return [first];
  });

  const historyFrom = now();
  const timeline = startTimeline(lab, schedule.steps, { timeoutMs: schedule.durationMs + 15_000, ...(adapter ? { adapter } : {}), log });
  const owed: OwedMessage[] = [];
  let notAccepted = 0;
  const client = lab.client(from);
  const sendBy = began + Math.min(budgetMs / 2, schedule.durationMs + 15_000);
  let next = 0;
  const submitter = async () => {
    for (let i = next++; i < count; i = next++) {
      // Paced over the schedule's span: message i not before i/count of it.
      const due = began + (i * schedule.durationMs) / count;
      if (due > now()) await sleep(due - now());
      let ok = false;
      for (let attempt = 1; !ok && now() < sendBy; attempt++) {
        // A fresh Message-ID per attempt: one that failed after the MTA stored it may be delivered, but is not owed.
        const messageId = `<chaos-${seed}-${label}-${i}-${attempt}@client.sender.test>`;
        try {
          const sent = await client.send({ to: plan[i]!, subject: `chaos ${i}`, text: `message ${i} of chaos seed ${seed}`, messageId });
          if (/^250[ -]/.test(sent.response)) {
            ok = true;
            owed.push({ messageId, from, to: plan[i]! });
          }
        } catch {
          // Refused or reset while the MTA is down, frozen or cut off, or a 4xx: try again a little later.
        }
        if (!ok) await sleep(Math.min(50 * attempt, 500));
      }
      if (!ok) notAccepted++;
    }
  };
  await Promise.all(Array.from({ length: options.clients ?? 8 }, submitter));

  let timelineReport: TimelineReport;
  let timelineError: unknown;
  try {
    timelineReport = await timeline.done;
  } catch (err) {
    timelineError = err;
    timelineReport = err instanceof TimelineError ? err.report : await timeline.stop();
  }
  try {
    await timeline.heal();
  } catch (err) {
    fail('the lab could not be healed', err);
  }
  if (timelineError) fail('the schedule did not run', timelineError);
  await lab.mta().flush();

  const left = deadline({ timeoutMs: Math.max(5000, budgetMs - (now() - began)) });
  const context = `chaos ${seedLine(seed)}`;
  let delivery: DeliveryReport;
  let noneLost: NoneLostReport;
  let retries = { measured: 0, excused: 0 };
  try {
    const faultCount = timelineReport.steps.filter((s) => s.firedAt !== undefined).length;
    // The folders count the copies; the history explains them. A copy whose `stored` event died with a killed mailbox
    // server is in the first and not the second: the delivery checker is given the counts, so the two agree.
    noneLost = await checkNoneLost(lab, owed, { ...left(), context, maxDuplicates: options.maxDuplicates ?? 2 * Math.max(1, faultCount) * 32 });
    delivery = await checkDeliveryGuarantees(lab, owed, { ...left(), context, mailboxCopies: noneLost.duplicates });
    const disagree = duplicateDisagreement(noneLost, delivery);
    if (disagree) throw new CheckFailure(`${context}: the checkers disagree on the duplicates: ${disagree.text}`, lab.history.trace(disagree.messageId), lab.history.seed);
    checkNoMisdelivery(lab, undefined, { context });
    for (const m of owed) {
      // Measured where the history holds the whole story: queued, deferred at least once, every recipient settled
      // (events a killed MTA never sent leave a message out, rather than fail it).
      const queued = lab.history.events.find((e) => e.kind === 'queued' && e.messageId === m.messageId);
      const mine = lab.history.events.filter((e) => e.messageId === m.messageId && e.node === queued?.node);
      const settled = (rcpt: string) => mine.some((e) => SETTLED_AT_MTA.has(e.kind) && 'rcpt' in e.detail && String(e.detail.rcpt).toLowerCase() === rcpt.toLowerCase());
      if (!queued || !mine.some((e) => e.kind === 'deferred') || !m.to.every(settled)) continue;
      const delays = await checkRetrySchedule(lab, m.messageId, lab.definition.retry, { timeoutMs: Math.max(1, Math.min(2000, left().timeoutMs)), slackMs: options.retrySlackMs ?? 5000, onExcused: (e) => (retries.excused += e.length) });
      retries = { ...retries, measured: retries.measured + delays.length };
    }
  } catch (err) {
    return fail(err instanceof CheckFailure ? 'a checker failed' : 'checking failed', err);
  }
  const faults = lab.history.events.filter((e) => e.node === 'nemesis' && e.time >= historyFrom && 'target' in e.detail && e.kind !== 'queue-flush').map((e) => `${e.kind} ${(e.detail as { target: string }).target}`);
  const report: ChaosReport = { seed, schedule, accepted: owed.length, notAccepted, owed, timeline: timelineReport, delivery, noneLost, retries, faults, wallMs: now() - began };
  log(
    `chaos ${seedLine(seed)}: ${owed.length} accepted, ${notAccepted} not accepted; ${noneLost.owed} pairs: ${noneLost.delivered} delivered, ${noneLost.bounced} bounced, ` +
      `${noneLost.duplicateCopies} duplicate copies (${delivery.duplicates.map((d) => `${d.cause?.kind ?? 'unexplained'}${d.copies > 2 ? ` ×${d.copies - 1}` : ''}`).join(', ') || 'none'}); ${timelineReport.steps.filter((s) => s.firedAt !== undefined).length}/${schedule.steps.length} faults fired; ` +
      `retries: ${retries.measured} measured, ${retries.excused} moved by a fault; ${Math.round(report.wallMs)} ms`,
  );
  return report;
}
