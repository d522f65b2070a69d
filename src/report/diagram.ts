// The path of each message across the lab's hosts, from a test's record: the hops (who spoke to whom, what was
// answered, which fault fired) in time order, and the Mermaid sequence diagram that draws them.
import type { HistoryEvent } from '../harness/events.js';
import { History } from '../harness/history/history.js';
import type { LabEvent } from '../shared/events.js';
import type { LabTestRecord } from './record.js';

/** One step of a message's path: an arrow between two lifelines, or a note over one (`to` undefined). */
export interface Hop {
  time: number;
  from: string;
  to?: string;
  /** Mermaid's arrows: a request, a reply, a failed request, a failed reply. */
  arrow?: '->>' | '-->>' | '-x' | '--x';
  label: string;
  event: HistoryEvent;
}

export interface Lifeline {
  /** The host's name in the lab, `client` (whoever submitted or connected from outside the lab), or a device's name. */
  key: string;
  /** What the diagram shows: the role, then the host's name and host name. */
  label: string;
}

/** One message's path: its hops, the lifelines they use, and the diagram. */
export interface MessagePath {
  messageId: string;
  lifelines: Lifeline[];
  hops: Hop[];
  /** Hops not drawn, past {@link DIAGRAM_HOP_LIMIT} (the timing table has them all). */
  undrawn: number;
  mermaid: string;
}

/** A diagram draws at most this many hops (Mermaid slows down and the page gets long past a few hundred). */
export const DIAGRAM_HOP_LIMIT = 150;
/** A label longer than this is cut (a reply can quote a whole line; the transcript has it all). */
const LABEL_LIMIT = 110;

const CLIENT = 'client';
const ROLE_LABELS: Record<string, string> = { mta: 'MTA', dns: 'DNS', mx: 'MX', mailbox: 'mailbox', proxy: 'link', external: 'external' };
const ROLE_ORDER = ['mta', 'dns', 'mx', 'external', 'mailbox', 'proxy'];

/** The path of every message of the record, in the order they first appear. */
export function messagePaths(record: LabTestRecord): MessagePath[] {
  const history = new History();
  for (const e of record.events) history.add(e as unknown as LabEvent);
  const ids = [...new Set(record.events.map((e) => e.messageId).filter((id): id is string => id !== undefined))];
  return ids.map((id) => pathOf(record, id, withUnattributedFaults(record.events, history.trace(id))));
}

/**
 * A message's trace plus the faults that fired while it travelled without naming a message (a DNS fault, a link's
 * toxic, an SMTP fault before DATA): the trace alone would leave out why an answer was odd.
 */
function withUnattributedFaults(all: readonly HistoryEvent[], trace: HistoryEvent[]): HistoryEvent[] {
  if (trace.length === 0) return trace;
  const first = trace[0]!.time;
  const last = trace[trace.length - 1]!.time;
  const faults = all.filter((e) => e.kind === 'fault' && e.messageId === undefined && e.time >= first && e.time <= last);
  return [...trace, ...faults].sort((a, b) => a.time - b.time);
}

function pathOf(record: LabTestRecord, messageId: string, events: HistoryEvent[]): MessagePath {
  const byAddress = new Map<string, string>();
  for (const [name, host] of Object.entries(record.hosts)) byAddress.set(host.address, name);
  /** The host behind an address (`127.0.0.5`, `127.0.0.5:1234`, `mx[127.0.0.5]:25`, `LMTP 127.0.0.3:24`); else the client. */
  const hostAt = (text: unknown): string => {
    if (typeof text !== 'string') return CLIENT;
    for (const candidate of text.match(/\d{1,3}(?:\.\d{1,3}){3}/g) ?? []) {
      const name = byAddress.get(candidate);
      if (name) return name;
    }
    return CLIENT;
  };
  const hops: Hop[] = [];
  const lmtpDrawn = new Set<HistoryEvent>();
  for (const [i, e] of events.entries()) {
    const add = (from: string, to: string | undefined, arrow: Hop['arrow'], label: string) => hops.push({ time: e.time, from, to, arrow, label: cut(label), event: e });
    const note = (over: string, label: string) => add(over, undefined, undefined, label);
    const d = e.detail as Record<string, unknown>;
    const node = e.node;
    switch (e.kind) {
      case 'submitted':
        add(CLIENT, node, '->>', `submission as ${d.user}: ${d.from} → ${list(d.to)} (${d.size} B${tlsOf(d.tls)})`);
        add(node, CLIENT, '-->>', `accepted, queued as ${e.queueId ?? '?'}`);
        break;
      case 'received':
        add(hostAt(d.client), node, '->>', `SMTP from ${d.from || '<>'} to ${list(d.to)} (${d.size} B${tlsOf(d.tls)})`);
        break;
      case 'queued':
        if (d.origin !== 'submission') note(node, `queued (${d.origin}${d.dsnFor ? ` for ${d.dsnFor}` : ''}) to ${list(d.to)}`);
        break;
      case 'active':
        note(node, `attempt ${d.attempt}: ${list(d.recipients)}`);
        break;
      case 'mx-lookup': {
        const dns = dnsHost(record) ?? CLIENT;
        add(node, dns, '->>', `MX ${d.domain}?`);
        add(dns, node, '-->>', mxAnswer(d.result));
        break;
      }
      case 'tlsa-lookup':
        add(node, dnsHost(record) ?? CLIENT, '->>', `TLSA ${d.name}?`);
        add(dnsHost(record) ?? CLIENT, node, d.error ? '--x' : '-->>', d.error ? `TLSA: ${d.error}` : `TLSA ${list(d.records)} (${d.usable ? 'usable' : 'not usable'})`);
        break;
      case 'mta-sts':
        note(node, d.error ? `MTA-STS ${d.domain}: ${d.error}` : `MTA-STS ${d.domain}: mode ${d.mode} (${d.source})`);
        break;
      case 'connect':
        add(node, hostAt(d.host), '->>', `${d.via === 'lmtp' ? 'LMTP ' : ''}connect ${d.mx ?? record.hosts[hostAt(d.host)]?.hostname ?? d.host}:${d.port}`);
        break;
      case 'connect-failed':
        add(node, hostAt(d.host), '-x', `${d.stage ?? 'connect'}${d.command ? ` ${d.command}` : ''}: ${d.reply ?? d.error}`);
        break;
      case 'relayed':
      case 'delivered':
        add(hostAt(d.host ?? d.hop), node, '-->>', `${d.reply} (to ${d.command}, ${d.rcpt})`);
        break;
      case 'deferred':
      case 'bounced':
      case 'expired':
        add(hostAt(d.hop), node, '--x', `${d.reply ?? d.error}${d.command ? ` (to ${d.command})` : ''}`);
        note(node, `${e.kind} ${d.rcpt} ${d.status ?? ''}${e.kind === 'deferred' && typeof d.delay === 'number' ? `, next attempt in ${Math.round(d.delay)} ms` : ''}`);
        break;
      case 'rejected':
        add(node, hostAt(d.client), '--x', `${d.reply} (at ${d.stage}${d.rcpt ? `, ${d.rcpt}` : ''})`);
        break;
      case 'authenticated': {
        const dkim = Array.isArray(d.dkim) ? d.dkim.map((s: { result?: string }) => s.result).join('/') || 'none' : 'none';
        note(node, `SPF ${(d.spf as { result?: string })?.result}, DKIM ${dkim}, DMARC ${(d.dmarc as { result?: string })?.result} → ${d.action}`);
        break;
      }
      case 'scanned':
        note(node, `scan (${d.scanner}): ${d.clean ? 'clean' : `${d.signature}`} → ${d.action}`);
        break;
      case 'forwarded':
        add(node, hostAt(d.via), d.accepted ? '->>' : '-x', `forward ${d.rcpt} to ${d.to}: ${d.reply ?? ''}`);
        break;
      case 'stored': {
        // The LMTP 250 (the MX's handoff event) follows the store: draw the LMTP request before it.
        const handoff = events.slice(i + 1).find((h) => h.kind === 'handoff' && hostAt((h.detail as { to?: string }).to) === node && !lmtpDrawn.has(h));
        if (handoff) {
          lmtpDrawn.add(handoff);
          add(handoff.node, node, '->>', `LMTP to ${list((handoff.detail as { recipients?: { address?: string }[] }).recipients?.map((r) => r.address))}`);
        }
        note(node, `stored for ${d.user} in ${d.mailbox}, uid ${d.uid} (${d.size} B)`);
        break;
      }
      case 'handoff': {
        const to = hostAt(d.to);
        if (!lmtpDrawn.has(e)) add(node, to, '->>', `LMTP ${d.to}`);
        const replies = (d.recipients as { reply?: string; accepted?: boolean }[] | undefined) ?? [];
        add(to, node, replies.every((r) => r.accepted) ? '-->>' : '--x', replies.map((r) => r.reply).join(' | ') || 'no recipients');
        break;
      }
      case 'handoff-failed':
        add(node, hostAt(d.to), '-x', `LMTP ${d.to}: ${d.error}`);
        break;
      case 'retrieved':
        note(node, `${String(d.protocol).toUpperCase()} read by ${d.user}, uid ${d.uid}`);
        break;
      case 'deleted':
        note(node, `${String(d.protocol).toUpperCase()} delete by ${d.user}, uid ${d.uid}`);
        break;
      case 'device-synced':
        add(mailboxHost(record) ?? CLIENT, node, '-->>', `IMAP: uid ${d.uid} ${list(d.flags)}`);
        break;
      case 'device-flags':
        add(mailboxHost(record) ?? CLIENT, node, '-->>', `IMAP flags: uid ${d.uid} ${list(d.flags)}`);
        break;
      case 'device-removed':
        add(mailboxHost(record) ?? CLIENT, node, '-->>', `IMAP expunged uid ${d.uid}`);
        break;
      case 'device-downloaded':
        add(mailboxHost(record) ?? CLIENT, node, '-->>', `POP3 RETR ${d.uidl} (${d.size} B)`);
        break;
      case 'device-sent':
        add(node, firstMta(record) ?? CLIENT, '->>', `send to ${list(d.to)}`);
        break;
      case 'dsn-created':
        note(node, `DSN ${d.dsnMessageId} to ${d.to} for ${list(d.rcpts)}`);
        break;
      case 'dsn-suppressed':
        note(node, `no DSN for ${list(d.rcpts)}: ${d.reason}`);
        break;
      case 'fault':
        note(node in record.hosts ? node : CLIENT, `fault (${d.source} ${d.rule}): ${d.stage} → ${d.effect}`);
        break;
      default:
        if (e.node === 'nemesis') {
          const target = typeof d.target === 'string' && d.target in record.hosts ? d.target : CLIENT;
          note(target, `${e.kind}${d.error ? ` failed: ${d.error}` : ''}`);
        } else {
          note(node in record.hosts || node.includes('/') ? node : CLIENT, e.kind);
        }
    }
  }
  const lifelines = lifelinesOf(record, hops);
  const drawn = hops.slice(0, DIAGRAM_HOP_LIMIT);
  return { messageId, lifelines, hops, undrawn: hops.length - drawn.length, mermaid: sequenceDiagram(lifelines, drawn, hops.length - drawn.length) };
}

/** The lifelines the hops use, in the order mail flows: client, MTA, DNS, MX, mailbox, links, devices. */
function lifelinesOf(record: LabTestRecord, hops: Hop[]): Lifeline[] {
  const used = new Set(hops.flatMap((h) => (h.to === undefined ? [h.from] : [h.from, h.to])));
  const rank = (key: string) => (key === CLIENT ? -1 : key in record.hosts ? ROLE_ORDER.indexOf(record.hosts[key]!.role) : ROLE_ORDER.length);
  return [...used]
    .sort((a, b) => rank(a) - rank(b))
    .map((key) => {
      const host = record.hosts[key];
      if (!host) return { key, label: key === CLIENT ? 'client' : `device ${key}` };
      const role = ROLE_LABELS[host.role] ?? host.role;
      const name = key === host.role ? '' : ` ${key}`;
      return { key, label: `${role}${name}${host.hostname ? ` (${host.hostname})` : ''}` };
    });
}

function sequenceDiagram(lifelines: Lifeline[], hops: Hop[], undrawn: number): string {
  const ids = new Map(lifelines.map((l, i) => [l.key, `p${i}`]));
  const lines = ['sequenceDiagram', '  autonumber'];
  for (const l of lifelines) lines.push(`  participant ${ids.get(l.key)} as ${mermaidText(l.label)}`);
  for (const h of hops) {
    const from = ids.get(h.from)!;
    if (h.to === undefined || h.arrow === undefined) lines.push(`  Note over ${from}: ${mermaidText(h.label)}`);
    else lines.push(`  ${from}${h.arrow}${ids.get(h.to)!}: ${mermaidText(h.label)}`);
  }
  if (undrawn > 0) lines.push(`  Note over ${ids.get(lifelines[0]!.key)}: ${mermaidText(`… ${undrawn} more hops: see the timing table`)}`);
  return lines.join('\n');
}

/**
 * Text Mermaid shows as is: every character outside a plain set becomes Mermaid's entity code (`#60;`), so nothing
 * from a mail (an address, a reply, a header) can end a statement, open a comment or a directive, or become markup.
 */
export function mermaidText(text: string): string {
  return text.replace(/\s+/g, ' ').replace(/[^A-Za-z0-9 .,@_\-+=()'/?!*]/gu, (c) => `#${c.codePointAt(0)};`);
}

function cut(text: string): string {
  return text.length > LABEL_LIMIT ? `${text.slice(0, LABEL_LIMIT - 1)}…` : text;
}

function list(value: unknown): string {
  return Array.isArray(value) ? value.map(String).join(', ') : String(value ?? '');
}

function tlsOf(tls: unknown): string {
  return tls && typeof tls === 'object' && 'version' in tls ? `, ${String(tls.version)}` : '';
}

function mxAnswer(result: unknown): string {
  const r = result as { kind?: string; hosts?: { exchange?: string; priority?: number; addresses?: string[] }[]; error?: string } | undefined;
  if (!r) return 'no answer';
  if (r.kind === 'mx' || r.kind === 'implicit') return (r.hosts ?? []).map((h) => `${h.priority ?? ''} ${h.exchange} ${list(h.addresses)}`.trim()).join('; ') || r.kind;
  return `${r.kind}${r.error ? `: ${r.error}` : ''}`;
}

function hostOfRole(record: LabTestRecord, role: string): string | undefined {
  return Object.entries(record.hosts).find(([, h]) => h.role === role)?.[0];
}
const dnsHost = (record: LabTestRecord) => hostOfRole(record, 'dns');
const mailboxHost = (record: LabTestRecord) => hostOfRole(record, 'mailbox');
const firstMta = (record: LabTestRecord) => hostOfRole(record, 'mta');
