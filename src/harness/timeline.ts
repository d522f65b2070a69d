// Timelines (issue 15): faults as data, fired when the run reaches a point ("at message 50, greylist bob for 2 s;
// at 3 s, partition mx for 1 s"). A step is plain JSON, so a seeded chaos schedule (chaos.ts) is a timeline that can
// be printed and replayed. Every step is bounded in time: a trigger that does not come within the timeline's
// timeout fails it loudly (with the seed and the recent history), and a step with `for` is undone after that long,
// or at once when the timeline is stopped. Each step is recorded in the history as the nemesis's: node actions by
// the node handle (node-stop, node-pause...), rule and toxic changes by the control calls that make them.
import { now } from '../shared/events.js';
import type { DnsFaultRule, SmtpFaultRule, Toxic } from '../shared/faults.js';
import type { EventKind } from './events.js';
import { formatEvent, seedLine, WaitTimeoutError, type EventMatcher, type History } from './history/history.js';
import type { NodeHandle } from './node-handle.js';

export type NodeFaultAction = 'stop' | 'start' | 'kill' | 'pause' | 'unpause' | 'partition' | 'heal';

/** When a step fires, counted from the timeline's start. */
export type TimelineTrigger =
  /** Once the scenario's clients have submitted this many messages (the MTA's `submitted` events since the start). */
  | { message: number }
  /** This many ms after the start. */
  | { ms: number }
  /** When an event like this is recorded (e.g. `{ kind: 'deferred', node: 'mta' }`); data only, no predicate. */
  | { event: { kind: EventKind; node?: string; messageId?: string; queueId?: string; detail?: Record<string, unknown> } };

/** What a step does: one fault, as data. */
export type TimelineAction =
  /** Replace the SMTP/LMTP fault rules of an mta, mx or mailbox host (`set-smtp-faults`); undo: no rules. */
  | { smtp: { host: string; rules: SmtpFaultRule[] } }
  /** Replace the lab DNS's fault rules (`set-dns-faults`); undo: no rules. */
  | { dns: { rules: DnsFaultRule[] } }
  /** Replace the toxics of the link proxy from one host to another (`set-toxics`); undo: no toxics. */
  | { link: { from: string; to: string; toxics: Toxic[] } }
  /** A node fault; undo: start after stop and kill, unpause after pause, heal after partition. */
  | { node: { host: string; action: NodeFaultAction } };

export interface TimelineStep {
  at: TimelineTrigger;
  do: TimelineAction;
  /** Undo the step this many ms after it fired. */
  for?: number;
}

/**
 * How the timeline sets SMTP rules, DNS rules and link toxics. The default (labFaultAdapter) calls the control
 * operations of src/shared/faults.ts on the lab's nodes; a scenario or a test may give its own.
 */
export interface FaultAdapter {
  smtp(host: string, rules: SmtpFaultRule[]): Promise<void>;
  dns(rules: DnsFaultRule[]): Promise<void>;
  link(from: string, to: string, toxics: Toxic[]): Promise<void>;
}

/** The node of a lab as a timeline drives it (a NodeHandle). */
export type TimelineNode = Pick<NodeHandle, 'name' | 'role' | 'isRunning' | 'stop' | 'start' | 'kill' | 'pause' | 'unpause' | 'disconnect' | 'connect'> & { control(): unknown };

/** What a timeline runs against: a StartedLab is one. */
export interface TimelineLab {
  history: History;
  seed?: number;
  node(name: string): TimelineNode;
  nodes(): TimelineNode[];
}

/** A lab whose link proxies (if it has any) take toxics: what the default fault adapter drives. */
export type FaultableLab = TimelineLab & { link?(from: string, to: string): { setToxics(toxics: Toxic[]): Promise<unknown> } };

export interface TimelineOptions {
  /** Every trigger must come within this many ms of the start (default 60 s), else the timeline fails. */
  timeoutMs?: number;
  adapter?: FaultAdapter;
  /** Hears one line per step fired and undone (e.g. console.log). */
  log?: (line: string) => void;
}

export interface StepReport {
  index: number;
  step: TimelineStep;
  /** When the step fired (ms since the epoch); absent: its trigger never came. */
  firedAt?: number;
  undoneAt?: number;
  /** Why the step's action (or its undo) failed. */
  error?: string;
}

export interface TimelineReport {
  startedAt: number;
  steps: StepReport[];
}

export interface Timeline {
  /** Settles once every step fired (and was undone): rejects, after undoing what it can, if a trigger never came or an action failed. */
  done: Promise<TimelineReport>;
  /** Stops waiting for triggers, undoes every step still in its `for` window, and settles with what happened. */
  stop(): Promise<TimelineReport>;
  /**
   * stop(), then puts back everything the timeline changed, `for` or not: starts the nodes it stopped or killed,
   * unpauses and heals the ones it froze or cut off, clears the SMTP rules, DNS rules and toxics it set.
   */
  heal(): Promise<TimelineReport>;
}

/** A timeline that failed: a trigger never came, or an action failed. The message names the seed and the steps. */
export class TimelineError extends Error {
  override name = 'TimelineError';
  constructor(
    message: string,
    readonly report: TimelineReport,
  ) {
    super(message);
  }
}

/** One line for a step, as it is printed and logged. */
export function describeStep(step: TimelineStep): string {
  const at = 'message' in step.at ? `at message ${step.at.message}` : 'ms' in step.at ? `at ${step.at.ms} ms` : `at event ${JSON.stringify(step.at.event)}`;
  const d = step.do;
  const what =
    'smtp' in d
      ? `smtp ${d.smtp.host}: ${d.smtp.rules.map((r) => `${r.id} ${r.stage} ${r.action.kind}`).join(', ') || 'no rules'}`
      : 'dns' in d
        ? `dns: ${d.dns.rules.map((r) => `${r.id} ${r.name} ${r.type ?? '*'} ${r.action.kind}`).join(', ') || 'no rules'}`
        : 'link' in d
          ? `link ${d.link.from}->${d.link.to}: ${d.link.toxics.map((t) => t.type).join(', ') || 'no toxics'}`
          : `${d.node.action} ${d.node.host}`;
  return `${at}: ${what}${step.for !== undefined ? ` for ${step.for} ms` : ''}`;
}

const UNDO: Partial<Record<NodeFaultAction, NodeFaultAction>> = { stop: 'start', kill: 'start', pause: 'unpause', partition: 'heal' };

/** The step that puts back what `action` did, or undefined for an action with no undo (start, unpause, heal). */
export function undoOf(action: TimelineAction): TimelineAction | undefined {
  if ('smtp' in action) return { smtp: { host: action.smtp.host, rules: [] } };
  if ('dns' in action) return { dns: { rules: [] } };
  if ('link' in action) return { link: { from: action.link.from, to: action.link.to, toxics: [] } };
  const undo = UNDO[action.node.action];
  return undo ? { node: { host: action.node.host, action: undo } } : undefined;
}

/**
 * The node an action acts on, so that one node's actions never overlap: a host's node state and its SMTP rules are
 * the same target (rules cannot be set on a node that is stopped), the DNS rules are the dns node's (`dnsHost`,
 * `dns` in the shipped labs), a link's toxics its proxy's.
 */
export function targetKey(action: TimelineAction, dnsHost = 'dns'): string {
  if ('smtp' in action) return `node:${action.smtp.host}`;
  if ('dns' in action) return `node:${dnsHost}`;
  if ('link' in action) return `link:${action.link.from}->${action.link.to}`;
  return `node:${action.node.host}`;
}

/** A node's control client as a timeline needs it: one operation call (TimelineNode stays loose so tests can fake a lab). */
type LooseControl = { call(operation: string, args?: object): Promise<unknown> };

/**
 * The fault adapter over a lab's nodes, by the operation names of src/shared/faults.ts: `set-smtp-faults` on the
 * host, `set-dns-faults` on the lab's dns node, `set-toxics` on the link proxy (`lab.link(from, to)`).
 */
export function labFaultAdapter(lab: FaultableLab): FaultAdapter {
  const control = (node: TimelineNode) => node.control() as LooseControl;
  return {
    smtp: async (host, rules) => {
      await control(lab.node(host)).call('set-smtp-faults', { rules });
    },
    dns: async (rules) => {
      const dns = lab.nodes().find((n) => n.role === 'dns');
      if (!dns) throw new Error('the lab has no dns node to set DNS faults on');
      await control(dns).call('set-dns-faults', { rules });
    },
    link: async (from, to, toxics) => {
      if (!lab.link) throw new Error(`link faults need link proxies (lab.link(from, to)), which this lab does not have: cannot set toxics on ${from} -> ${to}`);
      await lab.link(from, to).setToxics(toxics);
    },
  };
}

async function apply(lab: TimelineLab, adapter: FaultAdapter, action: TimelineAction): Promise<void> {
  if ('smtp' in action) return adapter.smtp(action.smtp.host, action.smtp.rules);
  if ('dns' in action) return adapter.dns(action.dns.rules);
  if ('link' in action) return adapter.link(action.link.from, action.link.to, action.link.toxics);
  const node = lab.node(action.node.host);
  switch (action.node.action) {
    case 'stop':
      return node.stop();
    case 'start':
      return node.start();
    case 'kill':
      return node.kill();
    case 'pause':
      return node.pause();
    case 'unpause':
      return node.unpause();
    case 'partition':
      return node.disconnect();
    case 'heal':
      return node.connect();
  }
}

/** Checks a timeline before it runs: every host exists, every `for` has an undo, numbers are whole and not negative. */
export function validateTimeline(lab: Pick<TimelineLab, 'node'>, steps: readonly TimelineStep[]): void {
  steps.forEach((step, i) => {
    const where = `timeline step ${i} (${describeStep(step)})`;
    const n = 'message' in step.at ? step.at.message : 'ms' in step.at ? step.at.ms : 0;
    if (!Number.isFinite(n) || n < 0) throw new Error(`${where}: its trigger must be a number ≥ 0`);
    if (step.for !== undefined && (!Number.isFinite(step.for) || step.for < 0)) throw new Error(`${where}: \`for\` must be a number of ms ≥ 0`);
    if (step.for !== undefined && !undoOf(step.do)) throw new Error(`${where}: \`for\` needs an action that can be undone (stop, kill, pause, partition, smtp, dns, link)`);
    if ('node' in step.do) lab.node(step.do.node.host);
    if ('smtp' in step.do) lab.node(step.do.smtp.host);
  });
}

/** Starts a timeline on a started lab: its clock and message count start now. */
export function startTimeline(lab: FaultableLab, steps: readonly TimelineStep[], options: TimelineOptions = {}): Timeline {
  validateTimeline(lab, steps);
  const { history } = lab;
  const adapter = options.adapter ?? labFaultAdapter(lab);
  const timeoutMs = options.timeoutMs ?? 60_000;
  const log = options.log ?? (() => undefined);
  const startedAt = now();
  const report: TimelineReport = { startedAt, steps: steps.map((step, index) => ({ index, step })) };
  // What the timeline changed, for heal(): hosts stopped/killed, paused, partitioned; rules and toxics set.
  const changed = { down: new Set<string>(), paused: new Set<string>(), cut: new Set<string>(), smtp: new Set<string>(), dns: false, links: new Map<string, { from: string; to: string }>() };
  const note = (action: TimelineAction) => {
    if ('smtp' in action) return void changed.smtp.add(action.smtp.host);
    if ('dns' in action) return void (changed.dns = true);
    if ('link' in action) return void changed.links.set(`${action.link.from}->${action.link.to}`, action.link);
    const { host, action: a } = action.node;
    if (a === 'stop' || a === 'kill') changed.down.add(host);
    if (a === 'start') changed.down.delete(host);
    if (a === 'pause') changed.paused.add(host);
    if (a === 'unpause') changed.paused.delete(host);
    if (a === 'partition') changed.cut.add(host);
    if (a === 'heal') changed.cut.delete(host);
  };

  let stopped = false;
  let wake!: () => void;
  const cancelled = new Promise<'cancelled'>((resolve) => (wake = () => resolve('cancelled')));
  const timers = new Set<NodeJS.Timeout>();
  const sleep = (ms: number) =>
    Promise.race([
      new Promise<'slept'>((resolve) => {
        const t = setTimeout(() => (timers.delete(t), resolve('slept')), Math.max(0, Math.ceil(ms)));
        timers.add(t);
      }),
      cancelled,
    ]);
  const left = () => Math.max(1, Math.ceil(startedAt + timeoutMs - now()));

  const trigger = async (at: TimelineTrigger): Promise<'fired' | 'cancelled'> => {
    if ('ms' in at) return (await sleep(startedAt + at.ms - now())) === 'slept' ? 'fired' : 'cancelled';
    const wait =
      'message' in at
        ? at.message === 0
          ? Promise.resolve()
          : history.waitForCount({ kind: 'submitted', where: (e) => e.time >= startedAt }, at.message, { timeoutMs: left(), description: `message ${at.message} of the timeline (the MTA's submitted events since its start)` })
        : history.waitFor(at.event as EventMatcher, { timeoutMs: left(), after: startedAt });
    return Promise.race([wait.then(() => 'fired' as const), cancelled]);
  };

  // One target's actions run one after another: a kill that comes while the node is still starting waits for it to
  // be up (NodeHandle ignores a kill of a node not yet running, and a second start would race the first for its ports),
  // and heal() waits for the undo under way.
  const lanes = new Map<string, Promise<unknown>>();
  const inLane = (action: TimelineAction, run: () => Promise<void>): Promise<void> => {
    const key = targetKey(action);
    const result = (lanes.get(key) ?? Promise.resolve()).then(run);
    lanes.set(key, result.catch(() => undefined));
    return result;
  };
  const perform = async (entry: StepReport, action: TimelineAction, phase: 'fired' | 'undone') => {
    const began = now();
    try {
      await apply(lab, adapter, action);
      note(action);
      log(`timeline: ${phase} step ${entry.index}: ${describeStep({ ...entry.step, do: action })}`);
    } catch (err) {
      const message = `${phase === 'fired' ? '' : 'undo: '}${err instanceof Error ? err.message : String(err)}`;
      entry.error = entry.error ? `${entry.error}; ${message}` : message;
      log(`timeline: step ${entry.index} failed: ${message}`);
    }
    if (phase === 'fired') entry.firedAt = began;
    else entry.undoneAt = began;
  };

  const failures: string[] = [];
  const run = async (entry: StepReport) => {
    let fired: 'fired' | 'cancelled';
    try {
      fired = await trigger(entry.step.at);
    } catch (err) {
      if (!(err instanceof WaitTimeoutError)) throw err;
      failures.push(`step ${entry.index} (${describeStep(entry.step)}) never fired: ${err.message.split('\n')[0]}`);
      return;
    }
    if (fired === 'cancelled' || stopped) return;
    // The step holds its target from its action to its undo: a later step on the same target (due while this one
    // was slow, e.g. a node still starting) waits, so faults on one target never overlap whatever the timing.
    await inLane(entry.step.do, async () => {
      if (stopped) return;
      await perform(entry, entry.step.do, 'fired');
      if (entry.step.for === undefined) return;
      await sleep(entry.firedAt! + entry.step.for - now());
      await perform(entry, undoOf(entry.step.do)!, 'undone');
    });
  };

  const all = Promise.all(report.steps.map(run)).then(() => {
    for (const t of timers) clearTimeout(t);
  });
  const done = all.then(() => {
    for (const s of report.steps) if (s.error) failures.push(`step ${s.index} (${describeStep(s.step)}) failed: ${s.error}`);
    if (failures.length) {
      const seed = seedLine(lab.seed);
      throw new TimelineError(
        `timeline failed${seed ? `, ${seed}` : ''}:\n  ${failures.join('\n  ')}\nsteps:\n${steps.map((s, i) => `  ${i}. ${describeStep(s)}`).join('\n')}\nrecent history:\n${history.events
          .slice(-30)
          .map((e) => formatEvent(e, history.startedAt))
          .join('\n')}`,
        report,
      );
    }
    return report;
  });
  // A caller that only stops or heals must not see an unhandled rejection.
  done.catch(() => undefined);

  const stop = async () => {
    stopped = true;
    wake();
    await all;
    return report;
  };
  const heal = async () => {
    await stop();
    const restore: TimelineAction[] = [
      ...[...changed.paused].map((host) => ({ node: { host, action: 'unpause' as const } })),
      ...[...changed.cut].map((host) => ({ node: { host, action: 'heal' as const } })),
      ...[...changed.down].map((host) => ({ node: { host, action: 'start' as const } })),
      ...[...changed.smtp].map((host) => ({ smtp: { host, rules: [] } })),
      ...(changed.dns ? [{ dns: { rules: [] } }] : []),
      ...[...changed.links.values()].map((l) => ({ link: { ...l, toxics: [] } })),
    ];
    const errors: string[] = [];
    for (const action of restore) {
      try {
        await inLane(action, () => apply(lab, adapter, action));
        note(action);
        log(`timeline: healed: ${describeStep({ at: { ms: 0 }, do: action }).replace(/^at 0 ms: /, '')}`);
      } catch (err) {
        errors.push(`${describeStep({ at: { ms: 0 }, do: action }).replace(/^at 0 ms: /, '')}: ${err instanceof Error ? err.message : String(err)}`);
      }
    }
    if (errors.length) throw new TimelineError(`timeline could not heal the lab${lab.seed !== undefined ? `, ${seedLine(lab.seed)}` : ''}:\n  ${errors.join('\n  ')}`, report);
    return report;
  };
  return { done, stop, heal };
}

/** Runs a timeline to its end: every step fired and undone, within `timeoutMs`; fails loudly otherwise. */
export function runTimeline(lab: FaultableLab, steps: readonly TimelineStep[], options: TimelineOptions = {}): Promise<TimelineReport> {
  return startTimeline(lab, steps, options).done;
}
