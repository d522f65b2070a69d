// A message's trace as a table a person reads at a glance: when (offset from the first event), which host, what
// happened, and the one detail that matters for that kind of event (the recipient and the reply, the error, the
// fault). The matchers put it in their failure messages; the HTML report and the CLI can show the same rows.
// Plain text, no colours: it ends up in vitest's output, JUnit files and CI logs.
import type { LabEvent } from '../shared/events.js';

/** One row of the table, for callers that render it themselves (the HTML report). */
export interface TraceRow {
  /** Milliseconds since the table's origin (the first event, unless given). */
  offsetMs: number;
  node: string;
  kind: string;
  /** The event's Message-ID, when it has one. */
  messageId?: string;
  /** The key detail in one line (see {@link summarizeEvent}). */
  summary: string;
}

export interface TraceTableOptions {
  /** Time (ms since the epoch) the offsets count from; default the first event's. */
  origin?: number;
  /** Longest detail shown, in characters; longer ones are cut with `…`. Default 200. */
  maxDetail?: number;
  /** Indentation of every line. Default two spaces. */
  indent?: string;
}

type Detail = Record<string, unknown>;

const str = (v: unknown): string | undefined => (typeof v === 'string' ? v : typeof v === 'number' || typeof v === 'boolean' ? String(v) : undefined);
const list = (v: unknown): string => (Array.isArray(v) ? v.map((x) => str(x) ?? JSON.stringify(x)).join(', ') : (str(v) ?? ''));
const join = (...parts: (string | undefined | false)[]): string => parts.filter((p): p is string => typeof p === 'string' && p !== '').join(' ');
/** `rcpt: text`, or the text alone for an event that names no recipient. */
const forRcpt = (d: Detail, text: string | undefined): string => (str(d.rcpt) ? `${str(d.rcpt)}: ${text ?? ''}` : (text ?? '')).trim();

/** The outcome of one kind of check (`spf=pass`), from the `authenticated` event's verdicts. */
function authSummary(d: Detail): string {
  const spf = (d.spf as Detail | undefined)?.result;
  const dkim = Array.isArray(d.dkim) ? (d.dkim as Detail[]).map((v) => `${str(v.result)}(${str(v.domain)}/${str(v.selector)})`).join(',') || 'none' : undefined;
  const dmarc = d.dmarc === null ? 'none' : (d.dmarc as Detail | undefined)?.result;
  const arc = (d.arc as Detail | undefined)?.result;
  return join(`spf=${str(spf) ?? '?'}`, `dkim=${dkim ?? '?'}`, `dmarc=${str(dmarc) ?? '?'}`, arc !== undefined && arc !== 'none' && `arc=${str(arc)}`, `→ ${str(d.action) ?? '?'}`, d.action !== 'accept' && str(d.reason) && `(${str(d.reason)})`);
}

/** What the MX's hand-off got back for each recipient: `bob@receiver.test 250 2.0.0 ok; carol@... 452 ...`. */
function handoffSummary(d: Detail): string {
  const results = Array.isArray(d.recipients) ? (d.recipients as Detail[]).map((r) => `${str(r.address)} ${str(r.reply) ?? (r.accepted ? 'accepted' : 'refused')}`) : [];
  return `${str(d.to) ?? '?'}: ${results.join('; ')}`;
}

/** Scalar fields as `key=value`, for kinds with no summary of their own. */
function genericSummary(d: Detail): string {
  return Object.entries(d)
    .filter(([, v]) => str(v) !== undefined || (Array.isArray(v) && v.every((x) => str(x) !== undefined)))
    .map(([k, v]) => `${k}=${Array.isArray(v) ? `[${list(v)}]` : str(v)}`)
    .join(' ');
}

/**
 * The key detail of an event in one line: for an outcome the recipient and the reply (and the error of a failure),
 * for a fault its rule and what the client saw, for a nemesis action its target. Kinds it does not know show their
 * scalar fields as `key=value`.
 */
export function summarizeEvent(e: LabEvent<string, object>): string {
  const d = e.detail as Detail;
  switch (e.kind) {
    case 'submitted':
    case 'received':
    case 'queued':
      return join(`${str(d.from) || '<>'} → ${list(d.to)}`, str(d.user) && `(user ${str(d.user)})`, str(d.helo) && `helo ${str(d.helo)}`, str(d.client) && `from ${str(d.client)}`, str(d.origin) && `origin ${str(d.origin)}`);
    case 'active':
      return `attempt ${str(d.attempt) ?? '?'}: ${list(d.recipients)}`;
    case 'mx-lookup': {
      const result = (d.result ?? {}) as Detail;
      const hosts = Array.isArray(result.hosts) ? (result.hosts as Detail[]).map((h) => str(h.exchange) ?? str(h.host) ?? JSON.stringify(h)).join(', ') : (str(result.error) ?? '');
      return `${str(d.domain) ?? '?'} → ${str(result.kind) ?? '?'} ${hosts}`.trim();
    }
    case 'connect':
      return str(d.hop) ?? `${str(d.host)}:${str(d.port)}`;
    case 'connect-failed':
      return `${str(d.hop) ?? `${str(d.host)}:${str(d.port)}`}: ${str(d.error) ?? str(d.reply) ?? ''}`;
    case 'relayed':
    case 'delivered':
      return join(forRcpt(d, str(d.reply)), str(d.hop) && `(${str(d.hop)})`);
    case 'deferred':
      return `${forRcpt(d, (str(d.error) ?? str(d.reply))?.trim())}${typeof d.delay === 'number' ? `; retry in ${d.delay} ms` : ''}`;
    case 'bounced':
      return forRcpt(d, join(str(d.status), str(d.error) ?? str(d.reply)));
    case 'expired':
      return forRcpt(d, join(str(d.status), `expired after ${str(d.attempts) ?? '?'} attempts:`, str(d.error) ?? str(d.reply)));
    case 'dsn-created': {
      const about = (d.for ?? {}) as Detail;
      return `DSN ${str(d.dsnMessageId) ?? '?'} to ${str(d.to) || '<>'} for ${list(d.rcpts)}${str(about.messageId) && str(about.messageId) !== e.messageId ? ` of ${str(about.messageId)}` : ''}`;
    }
    case 'dsn-suppressed':
      return `no DSN for ${list(d.rcpts)}: ${str(d.reason) ?? ''}`;
    case 'rejected':
      return join(str(d.stage), str(d.rcpt) || str(d.attempted) || (Array.isArray(d.to) ? list(d.to) : undefined), `: ${str(d.reply) ?? ''}`).replace(' : ', ': ');
    case 'handoff':
      return handoffSummary(d);
    case 'handoff-failed':
      return `${str(d.to) ?? '?'}: ${str(d.error) ?? ''}`;
    case 'authenticated':
      return authSummary(d);
    case 'forwarded':
      return `${str(d.rcpt)} → ${str(d.to)} via ${str(d.via)}: ${str(d.reply) ?? ''}`;
    case 'scanned':
      return join(`${str(d.action)}`, str(d.signature) && `(${str(d.signature)}${str(d.part) ? ` in ${str(d.part)}` : ''})`, str(d.error));
    case 'stored':
      return `${str(d.user) ?? '?'} ${str(d.mailbox) ?? ''} uid ${str(d.uid) ?? '?'}`;
    case 'fault':
      return join(`${str(d.source) ?? '?'} rule ${str(d.rule) ?? '?'} (${str(d.action) ?? '?'}) at ${str(d.stage) ?? '?'}:`, str(d.effect), str(d.hop) && `[${str(d.hop)}]`);
    case 'dns-query':
      return `${str(d.type)} ${str(d.name)} → ${str(d.rcode)}${Array.isArray(d.answers) && d.answers.length ? ` ${list(d.answers)}` : ''}`;
    case 'error':
      return str(d.error) ?? genericSummary(d);
    default:
      // Nemesis actions (node-stop, link-change...) name their target; every other kind shows its scalar fields.
      if (str(d.target)) return join(str(d.target), str(d.operation), typeof d.took === 'number' && `(${d.took.toFixed(0)} ms)`, str(d.error) && `failed: ${str(d.error)}`);
      return genericSummary(d);
  }
}

/** The rows of a trace, offsets from `origin` (default: the first event). */
export function traceRows(events: readonly LabEvent<string, object>[], origin = events[0]?.time ?? 0): TraceRow[] {
  return events.map((e) => ({ offsetMs: e.time - origin, node: e.node, kind: e.kind, ...(e.messageId ? { messageId: e.messageId } : {}), summary: summarizeEvent(e) }));
}

const cut = (s: string, max: number) => (s.length > max ? `${s.slice(0, max - 1)}…` : s);

/** An offset as `+12.3 ms`, or `+1.234 s` from ten seconds on (retries run for minutes in slow labs). */
export function formatOffset(ms: number): string {
  const sign = ms < 0 ? '-' : '+';
  const abs = Math.abs(ms);
  return abs >= 10_000 ? `${sign}${(abs / 1000).toFixed(3)} s` : `${sign}${abs.toFixed(1)} ms`;
}

/**
 * The trace as a text table: offset, node, event kind, the key detail; a Message-ID column when the events concern
 * more than one message (a message and its DSN). `(no events)` for an empty trace.
 */
export function formatTraceTable(events: readonly LabEvent<string, object>[], options: TraceTableOptions = {}): string {
  const indent = options.indent ?? '  ';
  if (events.length === 0) return `${indent}(no events)`;
  const rows = traceRows(events, options.origin);
  // Events with no Message-ID (the nemesis's actions, faults before the transaction) do not count as another message.
  const withIds = new Set(rows.flatMap((r) => (r.messageId ? [r.messageId] : []))).size > 1;
  const header = { offset: 'offset', node: 'node', kind: 'event', messageId: 'message', summary: 'detail' };
  const cells = [header, ...rows.map((r) => ({ offset: formatOffset(r.offsetMs), node: r.node, kind: r.kind, messageId: r.messageId ?? '', summary: cut(r.summary, options.maxDetail ?? 200) }))];
  const width = (key: 'offset' | 'node' | 'kind' | 'messageId') => Math.max(...cells.map((c) => c[key].length));
  const [wo, wn, wk, wm] = [width('offset'), width('node'), width('kind'), width('messageId')];
  return cells
    .map((c) => `${indent}${c.offset.padStart(wo)}  ${c.node.padEnd(wn)}  ${c.kind.padEnd(wk)}  ${withIds ? `${c.messageId.padEnd(wm)}  ` : ''}${c.summary}`.trimEnd())
    .join('\n');
}
