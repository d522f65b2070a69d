// The events of a Postfix MX, read from its maillog: Postfix tells no one what it does except its log, so each
// line that says something the MX contract (src/mx/api.ts) has a word for becomes that event. Pure: lines in, events
// out (node.ts tails the file and feeds them here), so the parsing is tested on Postfix's own lines.
//
// Postfix queues: its smtpd says 250 as soon as the message is in its queue, and the LMTP hand-off follows. So
// `received` is emitted once the recipients are known — the maillog names them only in the delivery lines (smtpd does
// not log accepted RCPTs) — that is, just before the first `handoff`/`handoff-failed` of the message.
import type { EventInput } from '../../shared/events.js';
import type { RecipientResult } from '../../shared/smtp-client.js';
import type { TlsInfo } from '../../shared/tls-session.js';
import type { MxEvents } from '../../mx/api.js';

/** One event for the node's EventLog, with the maillog lines it was read from. */
export type MaillogEvent = { [K in keyof MxEvents & string]: { input: EventInput<MxEvents, K>; lines: string[] } }[keyof MxEvents & string];

/**
 * `Nov 30 05:25:44 host postfix/smtpd[15961]: text`: the syslog name (`postfix`, or a service's own such as
 * `postfix/submission`), the program, its pid and the text.
 */
const LINE = /^\S+\s+\d+\s+[\d:]+\s+\S+\s+(\S+)\/([\w-]+)\[(\d+)\]: (.*)$/;
/** Postfix's queue ids: short (hex) or long (`enable_long_queue_ids`). */
export const QID = '([0-9A-F]{6,}|[0-9B-DF-HJ-NP-TV-Zb-df-hj-np-tv-z]{10,}z[0-9B-DF-HJ-NP-TV-Zb-df-hj-np-tv-z]+)';

const REJECT = new RegExp(`^(?:NOQUEUE|${QID}): reject: (\\S+) from [^\\[]*\\[([^\\]]+)\\]: (\\d{3} .*?); (?:from=<([^>]*)>)?(?: to=<([^>]*)>)?`);
const STAGES: Record<string, MxEvents['rejected']['stage']> = { CONNECT: 'CONNECT', EHLO: 'CONNECT', HELO: 'CONNECT', MAIL: 'MAIL FROM', RCPT: 'RCPT TO', DATA: 'DATA', 'END-OF-MESSAGE': 'DATA', BDAT: 'DATA' };

/** One maillog line, split (undefined for a line that is not Postfix's). */
export interface MaillogLine {
  syslogName: string;
  program: string;
  pid: string;
  text: string;
}

export function parseMaillogLine(line: string): MaillogLine | undefined {
  const m = LINE.exec(line);
  return m ? { syslogName: m[1]!, program: m[2]!, pid: m[3]!, text: m[4]! } : undefined;
}

/** smtpd's `NOQUEUE: reject: RCPT from …: 550 …; from=<…> to=<…> proto=… helo=<…>`. */
export interface RejectLine {
  stage: MxEvents['rejected']['stage'];
  client: string;
  reply: string;
  from: string;
  rcpt: string;
  helo?: string;
}

export function parseReject(text: string): RejectLine | undefined {
  const m = REJECT.exec(text);
  if (!m) return undefined;
  const [, , command, client, reply, from = '', rcpt = ''] = m;
  const helo = /helo=<([^>]*)>/.exec(text)?.[1];
  return { stage: STAGES[command!.toUpperCase()] ?? 'CONNECT', client: client!, reply: reply!, from, rcpt, ...(helo !== undefined ? { helo } : {}) };
}

/** `TLS connection established from|to …: TLSv1.3 with cipher …` of smtpd, smtp or lmtp. */
export function parseTlsLine(text: string): TlsInfo | undefined {
  const m = /TLS connection established (?:from|to) \S+: (\S+) with cipher (\S+)/.exec(text);
  return m ? { version: m[1]!, cipher: m[2]! } : undefined;
}

/** A delivery agent's `QID: to=<a>, [orig_to=<b>,] relay=…, [conn_use=N, ]delay=…, delays=…, dsn=X.Y.Z, status=S (text)`. */
export interface DeliveryLine {
  queueId: string;
  address: string;
  origTo?: string;
  /** `mx.receiver.test[127.1.2.3]:25`, or `none`. */
  relay: string;
  /** The cached connection's use count (conn_use=2 and up: it was reused). */
  connUse: number;
  dsn: string;
  status: string;
  why: string;
}

export function parseDelivery(text: string): DeliveryLine | undefined {
  const m = new RegExp(`^${QID}: to=<([^>]*)>,(?: orig_to=<([^>]*)>,)? relay=(\\S+?),(?: conn_use=(\\d+),)?.* dsn=([\\d.]+), status=(\\w+) \\((.*)\\)$`).exec(text);
  if (!m) return undefined;
  const [, queueId, address, origTo, relay, connUse, dsn, status, why] = m as unknown as [string, string, string, string | undefined, string, string | undefined, string, string, string];
  return { queueId, address, ...(origTo !== undefined ? { origTo } : {}), relay, connUse: connUse ? Number(connUse) : 1, dsn, status, why };
}

/**
 * The programs that log a recipient's outcome (`QID: to=<…>, …, status=…`). Only lmtp's are hand-offs; the others
 * (a user's virtual_alias_maps can send a recipient to error:, discard: or elsewhere) still count, so the message's
 * events are not held back waiting for an outcome that would never come from lmtp.
 */
const DELIVERY_AGENTS = new Set(['lmtp', 'smtp', 'error', 'retry', 'discard', 'virtual', 'local', 'pipe']);

interface Session {
  client: string;
  helo: string;
  tls: TlsInfo | null;
}

interface Message {
  client: string;
  helo: string;
  tls: TlsInfo | null;
  messageId?: string;
  from: string;
  size: number;
  /** Recipients still to deliver in the current queue run (qmgr's nrcpt). */
  nrcpt: number;
  received: boolean;
  /** This queue run's delivery outcomes, and the lines they came from. */
  outcomes: Outcome[];
  lines: string[];
}

export class MaillogParser {
  private readonly sessions = new Map<string, Session>();
  private readonly messages = new Map<string, Message>();

  /** `lmtpHop`: how the hand-off names the LMTP hop, as maillab's MX does (`LMTP host:port`). */
  constructor(private readonly lmtpHop: string) {}

  /** The events one maillog line completes (none for most lines). */
  feed(line: string): MaillogEvent[] {
    const parsed = parseMaillogLine(line);
    if (!parsed) return [];
    const { program, pid, text } = parsed;
    if (program === 'smtpd') return this.smtpd(pid, text, line);
    if (program === 'cleanup') return this.cleanup(text, line);
    if (program === 'qmgr') return this.qmgr(text, line);
    if (DELIVERY_AGENTS.has(program)) return this.delivery(program, text, line);
    return [];
  }

  private session(pid: string): Session {
    let s = this.sessions.get(pid);
    if (!s) this.sessions.set(pid, (s = { client: '', helo: '', tls: null }));
    return s;
  }

  private smtpd(pid: string, text: string, line: string): MaillogEvent[] {
    let m: RegExpExecArray | null;
    if ((m = /^connect from [^[]*\[([^\]]+)\]/.exec(text))) {
      // One smtpd process serves one session at a time: what it logs until its disconnect belongs to this client.
      this.sessions.set(pid, { client: m[1]!, helo: '', tls: null });
      return [];
    }
    if (/^disconnect from /.test(text)) {
      this.sessions.delete(pid);
      return [];
    }
    const tls = parseTlsLine(text);
    if (tls) {
      this.session(pid).tls = tls;
      return [];
    }
    const reject = parseReject(text);
    if (reject) {
      const { stage, rcpt, reply, client, from, helo } = reject;
      if (helo) this.session(pid).helo = helo;
      return [{ input: { kind: 'rejected', detail: { stage, rcpt: stage === 'RCPT TO' ? rcpt : '', reply, client, from } }, lines: [line] }];
    }
    if ((m = new RegExp(`^${QID}: client=[^[]*\\[([^\\]]+)\\]`).exec(text))) {
      const s = this.session(pid);
      this.messages.set(m[1]!, { client: m[2]!, helo: s.helo, tls: s.tls, from: '', size: 0, nrcpt: 0, received: false, outcomes: [], lines: [line] });
      return [];
    }
    if ((m = new RegExp(`^warning: ${QID}: queue file size limit exceeded`).exec(text))) {
      // smtpd logs no reject line for this; the reply is Postfix's fixed text for it (smtpd.c), sent at end of DATA.
      const msg = this.messages.get(m[1]!);
      this.messages.delete(m[1]!);
      return [{ input: { kind: 'rejected', queueId: m[1]!, detail: { stage: 'DATA', rcpt: '', reply: '552 5.3.4 Error: message file too big', client: msg?.client ?? this.session(pid).client, from: '' } }, lines: [...(msg?.lines ?? []), line] }];
    }
    if ((m = /^warning: Connection concurrency limit exceeded: \d+ from [^[]*\[([^\]]+)\]/.exec(text))) {
      // As above: the 421 is Postfix's fixed reply to a client over smtpd_client_connection_count_limit.
      return [{ input: { kind: 'rejected', detail: { stage: 'CONNECT', rcpt: '', reply: `421 4.7.0 Error: too many connections from ${m[1]!}`, client: m[1]!, from: '' } }, lines: [line] }];
    }
    return [];
  }

  private cleanup(text: string, line: string): MaillogEvent[] {
    const m = new RegExp(`^${QID}: message-id=(<[^>]*>|\\S*)`).exec(text);
    const msg = m && this.messages.get(m[1]!);
    if (msg) {
      msg.messageId = m[2] && m[2] !== '<>' ? m[2] : undefined;
      msg.lines.push(line);
    }
    return [];
  }

  private qmgr(text: string, line: string): MaillogEvent[] {
    let m: RegExpExecArray | null;
    if ((m = new RegExp(`^${QID}: from=<([^>]*)>, size=(\\d+), nrcpt=(\\d+)`).exec(text))) {
      const msg = this.messages.get(m[1]!);
      if (!msg) return []; // queued before the adapter started reading (a restarted node): its origin is unknown
      msg.from = m[2]!;
      msg.size = Number(m[3]);
      msg.nrcpt = Number(m[4]);
      msg.outcomes = [];
      msg.lines.push(line);
      return [];
    }
    if ((m = new RegExp(`^${QID}: removed`).exec(text))) this.messages.delete(m[1]!);
    return [];
  }

  /** `QID: to=<a>, [orig_to=<b>,] relay=…, delay=…, delays=…, dsn=X.Y.Z, status=S (text)` of a delivery agent. */
  private delivery(program: string, text: string, line: string): MaillogEvent[] {
    const d = parseDelivery(text);
    if (!d) return [];
    const { queueId: qid, address, origTo, dsn, status, why } = d;
    const msg = this.messages.get(qid);
    if (!msg) return [];
    msg.lines.push(line);
    msg.outcomes.push({ ...outcome(address, dsn, status, why), rcpt: origTo ?? address, lmtp: program === 'lmtp' });
    if (msg.outcomes.length < msg.nrcpt) return [];
    // Every recipient of this queue run has its outcome: the message's events, in the order they happened.
    const events: MaillogEvent[] = [];
    const ids = { messageId: msg.messageId, queueId: qid };
    const lines = msg.lines;
    msg.lines = [];
    if (!msg.received) {
      msg.received = true;
      // The recipients as the sender gave them (orig_to when the user's config rewrote one).
      const to = msg.outcomes.map((o) => o.rcpt);
      events.push({ input: { kind: 'received', ...ids, detail: { from: msg.from, to, client: msg.client, helo: msg.helo, size: msg.size, tls: msg.tls } }, lines });
    }
    const answered = msg.outcomes.flatMap((o) => (o.lmtp && o.result ? [o.result] : []));
    if (answered.length) events.push({ input: { kind: 'handoff', ...ids, detail: { to: this.lmtpHop, recipients: answered } }, lines });
    const failed = msg.outcomes.find((o) => o.lmtp && !o.result);
    if (failed) events.push({ input: { kind: 'handoff-failed', ...ids, detail: { to: this.lmtpHop, error: failed.error } }, lines });
    msg.outcomes = [];
    return events;
  }
}

interface Outcome {
  /** The recipient as delivered, and as the sender gave it. */
  address: string;
  rcpt: string;
  /** The LMTP server's reply, null when none came (then `error` says why). */
  result: RecipientResult | null;
  error: string;
  /** Delivered by the lmtp agent, the hand-off to the mailbox server. */
  lmtp: boolean;
}

/**
 * One recipient's outcome: the LMTP server's reply (sent: the 250 in parentheses; refused: `host X said: 550 …
 * (in reply to RCPT TO command)`), or, when no reply came (connection refused, timeout), no result and the error.
 */
export function outcome(address: string, dsn: string, status: string, why: string): Pick<Outcome, 'address' | 'result' | 'error'> {
  const said = /^host \S+ said: (\d{3}) (.*?)(?: \(in reply to (.+) command\))?$/.exec(why);
  const sent = /^(\d{3}) (.*)$/.exec(why);
  if (status === 'sent' && sent) {
    return { address, error: '', result: { address, accepted: true, code: Number(sent[1]), enhanced: dsn, reply: why, stage: 'lmtp', command: 'DATA' } };
  }
  if (said) {
    const rcptStage = /^RCPT TO/i.test(said[3] ?? '');
    return {
      address,
      error: '',
      result: { address, accepted: false, code: Number(said[1]), enhanced: dsn, reply: `${said[1]} ${said[2]}`, stage: rcptStage ? 'rcpt' : 'lmtp', command: rcptStage ? `RCPT TO:<${address}>` : 'DATA' },
    };
  }
  return { address, error: why, result: null };
}
