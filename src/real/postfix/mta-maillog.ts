// The events of a Postfix MTA, read from its maillog (the MX's are in maillog.ts; the line formats both read are
// parsed there, once). Pure: lines in, events out (mta-node.ts tails the file and feeds them here), so the parsing is
// tested on Postfix's own lines.
//
// Postfix logs a message's recipients only when it delivers them (smtpd does not log accepted RCPTs), so the events
// that name all of them — `submitted` (port 587, with the SASL user) or `received` (port 25), then `queued` — are
// emitted when the first queue run of the message has an outcome for every recipient (qmgr's nrcpt), just before
// those outcomes (`relayed`, `delivered`, `deferred`, `bounced`). A DSN is Postfix's bounce message: the bounce
// daemon's `sender non-delivery notification: <queue id>` becomes `dsn-created`, and the DSN's own queue run `queued`
// (origin dsn) and `delivered` (to the sender's mailbox, over LMTP). qmgr's `status=expired, returned to sender`
// becomes `expired` for every recipient its last run deferred.
import type { EventInput } from '../../shared/events.js';
import type { OutboundTlsPolicy, TlsPolicyConfig } from '../../shared/config.js';
import type { TlsInfo } from '../../shared/tls-session.js';
import type { MtaEvents, QueueOrigin } from '../../mta/api.js';
import { parseDelivery, parseMaillogLine, parseReject, parseTlsLine, QID, type DeliveryLine } from './maillog.js';

/** One event for the node's EventLog, with the maillog lines it was read from. */
export type MtaMaillogEvent = { [K in keyof MtaEvents & string]: { input: EventInput<MtaEvents, K>; lines: string[] } }[keyof MtaEvents & string];

export interface MtaMaillogOptions {
  /** The MTA's host name: the left side of every hop (`mta.sender.test -> mx.receiver.test[127.1.2.4]:25`). */
  hostname: string;
  /** minimal_backoff_time and maximal_backoff_time in seconds (mta-config.ts's postfixRetry). */
  backoff: { minimal: number; maximal: number };
  tlsPolicy?: TlsPolicyConfig;
  now?: () => number;
}

type Service = 'smtp' | 'submission';

interface Session {
  client: string;
  service: Service;
  tls: TlsInfo | null;
  helo: string | null;
  user?: string;
}

interface Message {
  origin: 'submission' | 'smtp' | 'dsn' | 'local' | 'unknown';
  service?: Service;
  user?: string;
  client?: string;
  helo: string | null;
  tls: TlsInfo | null;
  messageId?: string;
  from: string;
  size: number;
  nrcpt: number;
  /** When the adapter first saw it (Postfix logs no arrival time): the start of its lifetime for `expired`. */
  arrival: number;
  /** Queue runs (qmgr's `from=… nrcpt=` lines). */
  attempts: number;
  announced: boolean;
  /** This queue run's `active` was emitted; the qmgr line that started the run. */
  activeSent: boolean;
  runLine?: string;
  dsnFor?: string;
  /** This queue run's delivery lines, waiting for all nrcpt outcomes. */
  pending: Array<{ delivery: DeliveryLine; program: string; tls: TlsInfo | null; line: string }>;
  /** The deferrals of the last run, by recipient: what `expired` reports. */
  deferred: Map<string, MtaEvents['deferred']>;
  /** Recipients bounced or expired since the last DSN: the DSN's `rcpts`. */
  failed: string[];
  lines: string[];
}

export class MtaMaillogParser {
  private readonly sessions = new Map<string, Session>();
  private readonly messages = new Map<string, Message>();
  /** TLS of an smtp/lmtp process's connection: logged before its delivery lines. */
  private readonly clientTls = new Map<string, { queueId?: string; tls: TlsInfo }>();
  /** DSNs whose bounce line came before their cleanup line (the DSN's Message-ID). */
  private readonly dsnWaiting = new Map<string, { original: string; line: string }>();
  private readonly now: () => number;

  constructor(private readonly options: MtaMaillogOptions) {
    this.now = options.now ?? Date.now;
  }

  /**
   * A message already in the queue when the adapter starts (a restarted node): its Message-ID, read from the queue file,
   * so its later outcomes name it; it is not announced again (submitted/queued were the previous node process's).
   */
  seed(queueId: string, messageId: string | undefined): void {
    const msg = this.message(queueId);
    if (messageId) msg.messageId = messageId;
    msg.announced = true;
  }

  /** The Message-ID of a message the parser knows (still queued, or not yet removed). */
  messageIdOf(queueId: string): string | undefined {
    return this.messages.get(queueId)?.messageId;
  }

  /** Where a message came from, as the queue's origin kinds say it (undefined: queued before the adapter started). */
  originOf(queueId: string): QueueOrigin['kind'] | undefined {
    const origin = this.messages.get(queueId)?.origin;
    return origin === 'smtp' || origin === 'dsn' ? origin : origin === 'submission' || origin === 'local' ? 'submission' : undefined;
  }

  /** Queue runs of a message so far (as seen since the adapter started). */
  attemptsOf(queueId: string): number {
    return this.messages.get(queueId)?.attempts ?? 0;
  }

  /** The events one maillog line completes (none for most lines). */
  feed(line: string): MtaMaillogEvent[] {
    const parsed = parseMaillogLine(line);
    if (!parsed) return [];
    const { syslogName, program, pid, text } = parsed;
    switch (program) {
      case 'smtpd':
        return this.smtpd(syslogName, pid, text, line);
      case 'cleanup':
        return this.cleanup(text, line);
      case 'pickup':
        return this.pickup(text, line);
      case 'qmgr':
        return this.qmgr(text, line);
      case 'bounce':
        return this.bounce(text, line);
      case 'smtp':
      case 'lmtp':
      case 'error':
      case 'retry':
      case 'discard':
      case 'virtual':
      case 'local':
      case 'pipe':
        return this.delivery(program, pid, text, line);
      default:
        return [];
    }
  }

  private smtpd(syslogName: string, pid: string, text: string, line: string): MtaMaillogEvent[] {
    let m: RegExpExecArray | null;
    if ((m = /^connect from [^[]*\[([^\]]+)\]/.exec(text))) {
      this.sessions.set(pid, { client: m[1]!, service: /submission/.test(syslogName) ? 'submission' : 'smtp', tls: null, helo: null });
      return [];
    }
    const session = this.sessions.get(pid);
    if (/^disconnect from /.test(text)) {
      this.sessions.delete(pid);
      return [];
    }
    const tls = parseTlsLine(text);
    if (tls) {
      if (session) session.tls = tls;
      return [];
    }
    const service: Service = session?.service ?? (/submission/.test(syslogName) ? 'submission' : 'smtp');
    const hop = (client: string) => `unknown[${client}] -> ${this.options.hostname} (${service})`;
    const reject = parseReject(text);
    if (reject) {
      if (session && reject.helo) session.helo = reject.helo;
      const detail: MtaEvents['rejected'] = { service, stage: reject.stage, reply: reject.reply, from: reject.from || null, to: reject.rcpt ? [reject.rcpt] : [], client: reject.client, helo: reject.helo ?? session?.helo ?? null, hop: hop(reject.client) };
      if (session?.user) detail.user = session.user;
      if (reject.stage === 'RCPT TO' && reject.rcpt) detail.attempted = reject.rcpt;
      return [{ input: { kind: 'rejected', detail }, lines: [line] }];
    }
    if ((m = /^warning: [^[]*\[([^\]]+)\]: SASL (\S+) authentication failed: ([^,]*)(?:, sasl_username=(\S+))?/.exec(text))) {
      const client = m[1]!;
      // smtpd logs the SASL library's reason; its reply is the fixed 535 text with that reason (smtpd_sasl_glue.c).
      return [{ input: { kind: 'auth-failed', detail: { service, user: m[4] ?? null, method: m[2]!, reply: `535 5.7.8 Error: authentication failed: ${m[3]!}`, client, hop: hop(client) } }, lines: [line] }];
    }
    if ((m = new RegExp(`^${QID}: client=[^[]*\\[([^\\]]+)\\](?:, sasl_method=(\\S+?),? sasl_username=(\\S+))?`).exec(text))) {
      const user = m[4];
      if (session && user) session.user = user;
      const msg = this.message(m[1]!);
      Object.assign(msg, { origin: user ? 'submission' : 'smtp', service, client: m[2]!, helo: session?.helo ?? null, tls: session?.tls ?? null, ...(user ? { user } : {}) });
      msg.lines.push(line);
    }
    return [];
  }

  private message(queueId: string): Message {
    let msg = this.messages.get(queueId);
    if (!msg) {
      msg = { origin: 'unknown', helo: null, tls: null, from: '', size: 0, nrcpt: 0, arrival: this.now(), attempts: 0, announced: false, activeSent: false, pending: [], deferred: new Map(), failed: [], lines: [] };
      this.messages.set(queueId, msg);
    }
    return msg;
  }

  private cleanup(text: string, line: string): MtaMaillogEvent[] {
    const m = new RegExp(`^${QID}: message-id=(<[^>]*>|\\S*)`).exec(text);
    if (!m) return [];
    const msg = this.message(m[1]!);
    msg.messageId = m[2] && m[2] !== '<>' ? m[2] : undefined;
    msg.lines.push(line);
    const waiting = this.dsnWaiting.get(m[1]!);
    if (!waiting) return [];
    this.dsnWaiting.delete(m[1]!);
    return this.dsnCreated(waiting.original, m[1]!, [waiting.line, line]);
  }

  private pickup(text: string, line: string): MtaMaillogEvent[] {
    const m = new RegExp(`^${QID}: uid=`).exec(text);
    if (m) {
      const msg = this.message(m[1]!);
      msg.origin = 'local';
      msg.lines.push(line);
    }
    return [];
  }

  private qmgr(text: string, line: string): MtaMaillogEvent[] {
    let m: RegExpExecArray | null;
    if ((m = new RegExp(`^${QID}: from=<([^>]*)>, size=(\\d+), nrcpt=(\\d+)`).exec(text))) {
      // A message queued before the adapter started reading (a restarted node) is known from here on: its outcomes are
      // events, its arrival is not (submitted/queued were the previous node process's).
      const msg = this.message(m[1]!);
      if (msg.origin === 'unknown' && !msg.messageId) msg.announced = true;
      msg.from = m[2]!;
      msg.size = Number(m[3]);
      msg.nrcpt = Number(m[4]);
      msg.attempts += 1;
      msg.pending = [];
      // A retry: the recipients are those the last run deferred, so the attempt's start is known now. (A first run's
      // recipients are known only from its outcomes: its `active` comes with them, see delivery().)
      const retried = [...msg.deferred.keys()];
      msg.deferred = new Map();
      msg.lines.push(line);
      msg.runLine = line;
      msg.activeSent = retried.length === msg.nrcpt;
      return msg.activeSent ? [{ input: { kind: 'active', ...this.ids(m[1]!, msg), detail: { attempt: msg.attempts, recipients: retried } }, lines: [line] }] : [];
    }
    if ((m = new RegExp(`^${QID}: from=<[^>]*>, status=expired, returned to sender`).exec(text))) {
      const msg = this.messages.get(m[1]!);
      if (!msg) return [];
      const queuedFor = this.now() - msg.arrival;
      const events: MtaMaillogEvent[] = [];
      for (const d of msg.deferred.values()) {
        msg.failed.push(d.rcpt);
        const detail: MtaEvents['expired'] = { rcpt: d.rcpt, hop: d.hop, reply: d.reply, status: '4.4.7', error: d.error, attempts: msg.attempts, queuedFor, ...(d.command ? { command: d.command } : {}), ...(d.tlsPolicy ? { tlsPolicy: d.tlsPolicy } : {}) };
        events.push({ input: { kind: 'expired', ...this.ids(m[1]!, msg), detail }, lines: [line] });
      }
      msg.deferred = new Map();
      return events;
    }
    if ((m = new RegExp(`^${QID}: removed`).exec(text))) this.messages.delete(m[1]!);
    return [];
  }

  private bounce(text: string, line: string): MtaMaillogEvent[] {
    const m = new RegExp(`^${QID}: sender non-delivery notification: ${QID}`).exec(text);
    if (!m) return [];
    const [, original, dsn] = m as unknown as [string, string, string];
    const dsnMsg = this.message(dsn);
    dsnMsg.origin = 'dsn';
    dsnMsg.dsnFor = original;
    if (dsnMsg.messageId === undefined) {
      this.dsnWaiting.set(dsn, { original, line });
      return [];
    }
    return this.dsnCreated(original, dsn, [line]);
  }

  private dsnCreated(original: string, dsn: string, lines: string[]): MtaMaillogEvent[] {
    const msg = this.messages.get(original);
    const rcpts = msg?.failed ?? [];
    if (msg) msg.failed = [];
    const detail: MtaEvents['dsn-created'] = { dsnQueueId: dsn, dsnMessageId: this.messages.get(dsn)?.messageId ?? '', for: { queueId: original, messageId: msg?.messageId ?? null }, to: msg?.from ?? '', rcpts };
    return [{ input: { kind: 'dsn-created', queueId: original, ...(msg?.messageId ? { messageId: msg.messageId } : {}), detail }, lines }];
  }

  private ids(queueId: string, msg: Message): { queueId: string; messageId?: string } {
    return { queueId, ...(msg.messageId ? { messageId: msg.messageId } : {}) };
  }

  /** The TLS of the connection a delivery line of `pid` went over (logged by the same process just before). */
  private tlsOf(pid: string, delivery: DeliveryLine): TlsInfo | null {
    const current = this.clientTls.get(pid);
    if (!current) return null;
    if (current.queueId === undefined || current.queueId === delivery.queueId || delivery.connUse > 1) {
      current.queueId = delivery.queueId;
      return current.tls;
    }
    this.clientTls.delete(pid);
    return null;
  }

  private delivery(program: string, pid: string, text: string, line: string): MtaMaillogEvent[] {
    const tls = parseTlsLine(text);
    if (tls) {
      this.clientTls.set(pid, { tls });
      return [];
    }
    const delivery = parseDelivery(text);
    if (!delivery) return [];
    const msg = this.messages.get(delivery.queueId);
    if (!msg) return [];
    msg.pending.push({ delivery, program, tls: this.tlsOf(pid, delivery), line });
    if (msg.pending.length < msg.nrcpt) return [];
    const events: MtaMaillogEvent[] = [];
    const ids = this.ids(delivery.queueId, msg);
    if (!msg.announced) {
      msg.announced = true;
      events.push(...this.announce(ids, msg));
    }
    if (!msg.activeSent) {
      msg.activeSent = true;
      events.push({ input: { kind: 'active', ...ids, detail: { attempt: msg.attempts, recipients: msg.pending.map((p) => p.delivery.origTo ?? p.delivery.address) } }, lines: msg.runLine ? [msg.runLine] : [] });
    }
    const connected = new Set<string>();
    for (const p of msg.pending) {
      const connect = this.connection(ids, p, connected);
      if (connect) events.push(connect);
      events.push(this.outcome(ids, msg, p));
    }
    msg.pending = [];
    return events;
  }

  /** submitted (587) or received (25), then queued: the message as accepted, all its recipients known. */
  private announce(ids: { queueId: string; messageId?: string }, msg: Message): MtaMaillogEvent[] {
    const to = msg.pending.map((p) => p.delivery.origTo ?? p.delivery.address);
    const lines = msg.lines;
    msg.lines = [];
    const events: MtaMaillogEvent[] = [];
    if (msg.origin === 'submission') events.push({ input: { kind: 'submitted', ...ids, detail: { ...(msg.user ? { user: msg.user } : {}), from: msg.from, to, size: msg.size, tls: msg.tls } }, lines });
    if (msg.origin === 'smtp') events.push({ input: { kind: 'received', ...ids, detail: { from: msg.from, to, size: msg.size, ...(msg.client ? { client: msg.client } : {}), helo: msg.helo ?? '', tls: msg.tls } }, lines });
    const origin = msg.origin === 'dsn' ? 'dsn' : msg.origin === 'smtp' ? 'smtp' : 'submission';
    events.push({ input: { kind: 'queued', ...ids, detail: { from: msg.from, to, size: msg.size, origin, ...(msg.dsnFor ? { dsnFor: msg.dsnFor } : {}) } }, lines });
    return events;
  }

  /**
   * The connection a delivery line went over, as the contract's `connect` (a new connection: Postfix logs the relay it
   * reached, not the connect itself, so this is emitted with the outcome, once per relay and queue run), or
   * `connect-failed` (smtp/lmtp's `connect to host[ip]:port: reason`).
   */
  private connection(ids: { queueId: string; messageId?: string }, p: Message['pending'][number], connected: Set<string>): MtaMaillogEvent | undefined {
    const { delivery: d, program, line } = p;
    if (program !== 'smtp' && program !== 'lmtp') return undefined;
    const { relay, hop } = this.where(p);
    if (!relay) return undefined;
    const [, mx, host, port] = relay as unknown as [string, string, string, string];
    const key = `${program} ${relay[0]}`;
    if (connected.has(key)) return undefined;
    connected.add(key);
    const failed = /^connect to \S+: (.*)$/.exec(d.why);
    if (d.relay === 'none' && failed) {
      const tlsPolicy = program === 'smtp' ? this.policyFor(d.origTo ?? d.address) : undefined;
      return { input: { kind: 'connect-failed', ...ids, detail: { host, port: Number(port), mx, hop, stage: 'connect', error: d.why, ...(tlsPolicy ? { tlsPolicy } : {}) } }, lines: [line] };
    }
    if (d.relay === 'none' || d.connUse > 1) return undefined;
    return { input: { kind: 'connect', ...ids, detail: { host, port: Number(port), hop, ...(program === 'lmtp' ? { via: 'lmtp' as const } : { mx }) } }, lines: [line] };
  }

  /** The relay a delivery line names (`relay=`, or the host of `connect to …` when none was reached) and the hop. */
  private where(p: Message['pending'][number]): { relay: RegExpExecArray | null; hop: string } {
    const { delivery: d, program } = p;
    const relay = /^(\S+?)\[([^\]]+)\]:(\d+)$/.exec(d.relay) ?? /connect to (\S+?)\[([^\]]+)\]:(\d+)/.exec(d.why);
    const hop = `${this.options.hostname} -> ${program === 'lmtp' ? 'LMTP ' : ''}${relay ? `${relay[1]}[${relay[2]}]:${relay[3]}` : d.relay}`;
    return { relay, hop };
  }

  private outcome(ids: { queueId: string; messageId?: string }, msg: Message, p: Message['pending'][number]): MtaMaillogEvent {
    const { delivery: d, program, line } = p;
    const rcpt = d.origTo ?? d.address;
    const lmtp = program === 'lmtp';
    const { relay, hop } = this.where(p);
    const said = /^host \S+ said: (\d{3} .*?)(?: \(in reply to (.+) command\))?$/.exec(d.why);
    const command = said ? commandOf(said[2], rcpt, msg.from) : d.status === 'sent' ? 'DATA' : undefined;
    const reply = said ? said[1]! : d.why;
    const tlsPolicy = program === 'smtp' ? this.policyFor(rcpt) : undefined;
    const common = { rcpt, hop, reply, status: d.dsn, ...(command ? { command } : {}), ...(tlsPolicy ? { tlsPolicy } : {}) };
    const lines = [line];
    if (d.status === 'sent') {
      const session = { ...(relay ? { host: relay[2]!, port: Number(relay[3]) } : {}), reused: d.connUse > 1, tls: p.tls };
      if (lmtp) return { input: { kind: 'delivered', ...ids, detail: { ...common, ...session } }, lines };
      return { input: { kind: 'relayed', ...ids, detail: { ...common, ...session, ...(relay ? { mx: relay[1]! } : {}) } }, lines };
    }
    if (d.status === 'bounced') {
      msg.failed.push(rcpt);
      return { input: { kind: 'bounced', ...ids, detail: { ...common, error: d.why, attempt: msg.attempts } }, lines };
    }
    // Postfix's next attempt (qmgr): the message's age, bounded by minimal_ and maximal_backoff_time, from now.
    const now = this.now();
    const { minimal, maximal } = this.options.backoff;
    const delay = Math.min(Math.max(now - msg.arrival, minimal * 1000), maximal * 1000);
    const detail: MtaEvents['deferred'] = { ...common, error: d.why, nextAttempt: now + delay, delay, attempt: msg.attempts };
    msg.deferred.set(rcpt, detail);
    return { input: { kind: 'deferred', ...ids, detail }, lines };
  }

  private policyFor(rcpt: string): OutboundTlsPolicy {
    const domain = rcpt.split('@').at(-1)!.toLowerCase();
    return this.options.tlsPolicy?.domains[domain] ?? this.options.tlsPolicy?.default ?? 'may';
  }
}

/** Postfix's `(in reply to RCPT TO command)` as the command sent: `RCPT TO:<rcpt>`, `MAIL FROM:<from>`, `DATA`. */
function commandOf(said: string | undefined, rcpt: string, from: string): string | undefined {
  if (!said) return undefined;
  if (/^RCPT TO$/i.test(said)) return `RCPT TO:<${rcpt}>`;
  if (/^MAIL FROM$/i.test(said)) return `MAIL FROM:<${from}>`;
  if (/^end of DATA$/i.test(said)) return 'DATA';
  return said;
}
