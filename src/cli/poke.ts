// Poking at a running lab from another process, as swaks and postqueue do at a mail server: `maillab send`,
// `maillab queue`, `maillab tail`. The lab is found through the state file `maillab up` writes (running-labs.ts).
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { submit } from '../harness/clients/submission.js';
import { normalizeMessageId } from '../harness/history/history.js';
import { ControlClient } from '../shared/control.js';
import type { LabEvent } from '../shared/events.js';
import type { MtaContract, QueueEntryView } from '../mta/api.js';
import { option, options } from './args.js';
import { nodeOfRole, pickRunningLab, runningLabs, type RunningLab } from './running-labs.js';

/** `maillab send`: one message submitted as a lab user over the MTA's submission port (STARTTLS with the lab CA). */
export async function send(args: string[]): Promise<number> {
  const from = option(args, '--from');
  const to = options(args, '--to');
  if (!from || to.length === 0) {
    process.stderr.write('usage: maillab send --from <addr> --to <addr> [--to <addr>]... [--subject <s>] [--text <t>] [--attach <file>]... [--lab <id>] [--mta <node>]\n');
    return 2;
  }
  const lab = pickRunningLab(option(args, '--lab'));
  const user = lab.users.find((u) => u.address.toLowerCase() === from.toLowerCase());
  if (!user) throw new Error(`${from} is not a user of lab ${lab.id} (its users: ${lab.users.map((u) => u.address).join(', ')}): the MTA takes submissions from its users only`);
  const mta = nodeOfRole(lab, 'mta', option(args, '--mta'));
  const endpoint = mta.services.submission;
  if (!endpoint) throw new Error(`the MTA ${mta.name} of lab ${lab.id} has no submission service (it has ${Object.keys(mta.services).join(', ')})`);
  const attachments = options(args, '--attach').map((file) => ({ filename: path.basename(file), content: readFileSync(file) }));
  const sent = await submit({ node: mta.name, hostname: mta.hostname, endpoint, ...(mta.tls ? { ca: readFileSync(lab.ca, 'utf8') } : {}) }, user, {
    to,
    subject: option(args, '--subject') ?? 'maillab send',
    text: option(args, '--text') ?? `Sent with maillab send to ${to.join(', ')}.`,
    ...(attachments.length ? { attachments } : {}),
  });
  process.stdout.write(`Message-ID: ${sent.messageId}\n`);
  // The MTA's reply names the queue id (maillab's MTA and Postfix both say "queued as <id>").
  const queueId = /queued as (\S+)/.exec(sent.response)?.[1];
  process.stdout.write(`queue id:   ${queueId ?? `(not in the reply: ${sent.response})`}\n`);
  if (sent.rejected.length) process.stdout.write(`rejected:   ${sent.rejected.join(', ')}\n`);
  process.stdout.write(`submitted to ${mta.name} (${endpoint.host}:${endpoint.port}) of lab ${lab.id}: ${sent.response}\n`);
  return 0;
}

const QUEUE_USAGE = 'usage: maillab queue [list [--all] [--json] | flush | hold <queueId> | release <queueId> | delete <queueId>] [--lab <id>] [--mta <node>]\n';

/** `maillab queue`: the MTA's queue through its control channel. */
export async function queue(args: string[]): Promise<number> {
  const positional = args.filter((a, i) => !a.startsWith('--') && !['--lab', '--mta'].includes(args[i - 1] ?? ''));
  const [action = 'list', queueId] = positional;
  if (!['list', 'flush', 'hold', 'release', 'delete'].includes(action)) {
    process.stderr.write(`maillab queue: unknown action "${action}"\n${QUEUE_USAGE}`);
    return 2;
  }
  if (['hold', 'release', 'delete'].includes(action) && !queueId) {
    process.stderr.write(`maillab queue ${action}: which message? give its queue id (maillab queue list shows them)\n${QUEUE_USAGE}`);
    return 2;
  }
  const lab = pickRunningLab(option(args, '--lab'));
  const mta = nodeOfRole(lab, 'mta', option(args, '--mta'));
  const client = new ControlClient<MtaContract>(mta.control, mta.name, lab.controlToken ?? '');
  try {
    if (action === 'list') {
      const entries = await client.call('queue', args.includes('--all') ? { all: true } : {});
      if (args.includes('--json')) process.stdout.write(JSON.stringify(entries) + '\n');
      else process.stdout.write(formatQueue(entries, `${mta.name} (lab ${lab.id})`));
      return 0;
    }
    if (action === 'flush') {
      const { flushed } = await client.call('flush');
      process.stdout.write(`flushed ${flushed} message(s): ${mta.name} tries them now\n`);
      return 0;
    }
    // hold, release, delete: operations of newer MTAs; an MTA without them answers "unknown operation".
    const untyped = client as unknown as ControlClient;
    let result: unknown;
    try {
      result = await untyped.call(action, { queueId });
    } catch (err) {
      const message = err instanceof Error ? err.message : String(err);
      const known = /unknown operation \S+; this node has (.*)$/.exec(message);
      if (known) throw new Error(`the MTA ${mta.name} of lab ${lab.id} has no "${action}" operation (its operations: ${known[1]}): this MTA cannot ${action} a message`);
      throw err;
    }
    if (action === 'delete') process.stdout.write(`deleted ${queueId}\n`);
    else process.stdout.write(`${action === 'hold' ? 'held' : 'released'} ${queueId}\n${formatEntry(result as QueueEntryView)}`);
    return 0;
  } finally {
    client.close();
  }
}

/** The queue as postqueue -p shows it: one line per message, one per recipient below it. */
export function formatQueue(entries: readonly QueueEntryView[], where: string, now = Date.now()): string {
  if (entries.length === 0) return `the queue of ${where} is empty\n`;
  return entries.map((e) => formatEntry(e, now)).join('') + `${entries.length} message(s) in the queue of ${where}\n`;
}

/** One message: a line, and one line per recipient below it. */
export function formatEntry(e: QueueEntryView, now = Date.now()): string {
  const lines = [`${e.queueId}  ${e.state.padEnd(8)}  ${String(e.size).padStart(7)} B  ${new Date(e.arrival).toISOString()}  ${e.from || '<>'}${e.messageId ? `  ${e.messageId}` : ''}`];
  for (const r of e.recipients) {
    const next = r.nextAttempt !== undefined && r.state === 'deferred' ? `, next attempt in ${Math.max(0, Math.round((r.nextAttempt - now) / 1000))} s` : '';
    const outcome = r.lastError ?? r.lastReply;
    lines.push(`    → ${r.address}  ${r.state}, ${r.attempts} attempt(s)${next}${outcome ? `: ${outcome}` : ''}`);
  }
  return lines.join('\n') + '\n';
}

const COLOURS = { dim: 2, red: 31, green: 32, yellow: 33, cyan: 36 } as const;
type Colour = keyof typeof COLOURS;

/** The colour of an event kind: failures red, delays yellow, progress of a message green, the rest plain. */
function colourOf(kind: string): Colour | undefined {
  if (/bounce|fail|reject|refus|error|fault|expire|drop|crash|lost/.test(kind)) return 'red';
  if (/defer|retry|greylist|throttl|timeout|slow/.test(kind)) return 'yellow';
  if (/stored|deliver|relayed|handoff|queued|submitted|received|accept/.test(kind)) return 'green';
  return undefined;
}

/** One event on one line: time (UTC), node, kind, ids, detail; with colours when `colour` is set. */
export function formatTailLine(e: LabEvent, colour: boolean): string {
  const paint = (c: Colour | undefined, text: string) => (colour && c ? `\x1b[${COLOURS[c]}m${text}\x1b[0m` : text);
  const ids = [e.queueId && `qid=${e.queueId}`, e.messageId && `msg=${e.messageId}`].filter(Boolean).join(' ');
  return `${paint('dim', new Date(e.time).toISOString().slice(11, 23))} ${paint('cyan', e.node.padEnd(8))} ${paint(colourOf(e.kind), e.kind.padEnd(14))} ${ids ? `${ids} ` : ''}${JSON.stringify(e.detail)}`;
}

/** Colours on a terminal, or when FORCE_COLOR asks; never when NO_COLOR is set. */
function useColour(): boolean {
  if (process.env.NO_COLOR) return false;
  if (process.env.FORCE_COLOR !== undefined) return process.env.FORCE_COLOR !== '0';
  return process.stdout.isTTY === true;
}

/** How long tail waits before it reconnects to a node whose stream ended while the lab still runs. */
const RECONNECT_MS = 500;

/**
 * `maillab tail`: every node's event stream, one line per event as it comes, filtered by message, node and kind.
 * Runs until Ctrl-C or until the lab stops. `--all` (and `--message`) start from each node's first event, not from now.
 */
export async function tail(args: string[]): Promise<number> {
  const lab = pickRunningLab(option(args, '--lab'));
  const messageId = option(args, '--message');
  const wanted = { messageId: messageId ? normalizeMessageId(messageId) : undefined, nodes: options(args, '--node'), kinds: options(args, '--kind') };
  const unknown = wanted.nodes.filter((n) => !lab.nodes[n]);
  if (unknown.length) throw new Error(`lab ${lab.id} has no node ${unknown.join(', ')} (its nodes: ${Object.keys(lab.nodes).join(', ')})`);
  const colour = useColour();
  const matches = (e: LabEvent) =>
    (wanted.messageId === undefined || (e.messageId !== undefined && normalizeMessageId(e.messageId) === wanted.messageId)) &&
    (wanted.nodes.length === 0 || wanted.nodes.includes(e.node)) &&
    (wanted.kinds.length === 0 || wanted.kinds.includes(e.kind));
  const nodes = Object.entries(lab.nodes).filter(([name, n]) => n.control && (wanted.nodes.length === 0 || wanted.nodes.includes(name)));
  process.stderr.write(`tailing lab ${lab.id} (${nodes.map(([n]) => n).join(', ')}); Ctrl-C stops\n`);

  return new Promise<number>((resolve) => {
    const stops = new Map<string, () => void>();
    const clients: ControlClient[] = [];
    const finish = (code: number) => {
      for (const stop of stops.values()) stop();
      for (const c of clients) c.close();
      process.off('SIGINT', interrupted);
      process.off('SIGTERM', interrupted);
      resolve(code);
    };
    const interrupted = () => finish(0);
    process.once('SIGINT', interrupted);
    process.once('SIGTERM', interrupted);
    // `maillab tail | head`: the reader went away, which ends the tail as Ctrl-C would.
    process.stdout.once('error', (err: NodeJS.ErrnoException) => (err.code === 'EPIPE' ? finish(0) : finish(1)));
    const labStillRuns = () => runningLabs().some((l) => l.id === lab.id && l.pid === lab.pid);

    for (const [name, node] of nodes) {
      const client = new ControlClient(node.control!, name, lab.controlToken ?? '');
      clients.push(client);
      // Sequence numbers start again when a node restarts: after a reconnect, what was already printed is told by time.
      let lastTime = 0;
      const connect = (since: number) => {
        stops.set(
          name,
          client.streamEvents(
            since,
            (e) => {
              if (e.time <= lastTime) return;
              lastTime = e.time;
              if (matches(e)) process.stdout.write(formatTailLine(e, colour) + '\n');
            },
            () => {
              stops.delete(name);
              if (labStillRuns()) {
                setTimeout(() => connect(0), RECONNECT_MS);
                return;
              }
              if (stops.size === 0) {
                process.stderr.write(`lab ${lab.id} stopped\n`);
                finish(0);
              }
            },
          ),
        );
      };
      // One message's story is told from its start; otherwise from now (a `since` beyond any sequence number replays nothing).
      connect(args.includes('--all') || messageId !== undefined ? 0 : Number.MAX_SAFE_INTEGER);
    }
  });
}

export type { RunningLab };
