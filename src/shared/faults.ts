// Faults as data (issue 15): the rules a scenario sets at the lab's SMTP/LMTP servers and its DNS, and the toxics of
// the link proxies between hosts. They are plain JSON (set in a lab definition or at run time over the control
// channel), so a seeded chaos schedule can be printed and replayed exactly. Which fault fired, where and what the
// client saw is a `fault` event of the node that applied it, recorded beside the hop it changed.
//
// The shapes follow what users already know: SMTP replies and enhanced status codes (RFC 5321, RFC 3463), the DNS
// response codes (RFC 1035, RFC 2308), and Toxiproxy's toxics with its names and parameters.

/** Where in an SMTP or LMTP session a rule applies (RFC 5321 §4.1.1, RFC 2033 §4). */
export const SMTP_FAULT_STAGES = ['connect', 'greeting', 'ehlo', 'starttls', 'auth', 'mail', 'rcpt', 'data', 'end-of-data', 'quit'] as const;
export type SmtpFaultStage = (typeof SMTP_FAULT_STAGES)[number];

/** Which sessions a rule applies to; every field given must match (case-insensitive addresses). Absent: any. */
export interface SmtpFaultMatch {
  /** The envelope sender (MAIL FROM), from `mail` on. */
  sender?: string;
  /** A recipient (RCPT TO): at `rcpt`, the recipient of that command; later, any recipient of the transaction. */
  recipient?: string;
  /** The client's IP address. */
  client?: string;
}

export type SmtpFaultAction =
  /** Answer the command with this reply instead of the server's (a 4xx or 5xx; e.g. 451 4.3.0, 421 4.7.0). */
  | { kind: 'reply'; code: number; enhancedCode?: string; text?: string }
  /** Wait before the server's own reply (a slow server). */
  | { kind: 'delay'; ms: number }
  /**
   * Close the connection, `before-reply` (the command is not answered: at `end-of-data` the message was received
   * but the client never hears 250, the classic cause of duplicates) or `after-reply` (answered, then closed).
   */
  | { kind: 'drop'; when: 'before-reply' | 'after-reply' }
  /**
   * Greylisting: `450 4.7.1` at `rcpt` on the first sight of a (client, sender, recipient) triple (the fields of
   * `by`, all three by default); the same triple is accepted once `delayMs` has passed since it was first seen.
   */
  | { kind: 'greylist'; delayMs: number; by?: ('client' | 'sender' | 'recipient')[] }
  /** A rate limit: past `messages` transactions per client in `windowMs`, `421 4.7.0` and the connection closed. */
  | { kind: 'rate-limit'; messages: number; windowMs: number };

export interface SmtpFaultRule {
  /** Names the rule in events and in the rule list; unique per server. */
  id: string;
  stage: SmtpFaultStage;
  match?: SmtpFaultMatch;
  action: SmtpFaultAction;
  /** Fires this many times, then is spent. Absent: every time it matches. */
  times?: number;
  /** Fires with this probability (0–1) each time it matches, drawn from the lab's seed. Absent: 1. */
  probability?: number;
}

/** What the DNS answers for a matching query instead of the zone's answer. */
export type DnsFaultAction =
  | { kind: 'servfail' }
  | { kind: 'refused' }
  | { kind: 'nxdomain' }
  /** No answer at all: the client's query times out. */
  | { kind: 'timeout' }
  /** Over UDP, an empty answer with the TC bit (RFC 1035 §4.1.1): the client must retry over TCP, which answers. */
  | { kind: 'truncate' }
  /** Answer with these records (a wrong or stale answer) instead of the zone's. */
  | { kind: 'answer'; records: { type: string; data: string; ttl?: number }[] }
  /** The zone's answer with this TTL (seconds), which a caching resolver must honour. */
  | { kind: 'ttl'; ttl: number };

export interface DnsFaultRule {
  id: string;
  /** The query name (case-insensitive); `*.` prefix for any name below. */
  name: string;
  /** The query type (`MX`, `A`, `TXT`, `TLSA`, …). Absent: any. */
  type?: string;
  action: DnsFaultAction;
  times?: number;
  probability?: number;
}

/** Toxiproxy's toxic types, same names and attributes (https://github.com/Shopify/toxiproxy#toxics). */
export const TOXIC_TYPES = ['latency', 'bandwidth', 'slow_close', 'timeout', 'reset_peer', 'slicer', 'limit_data'] as const;
export type ToxicType = (typeof TOXIC_TYPES)[number];

export interface Toxic {
  /** Unique per link; default `<type>_<stream>` as Toxiproxy names them. */
  name?: string;
  type: ToxicType;
  /** `upstream`: client → server; `downstream`: server → client (Toxiproxy's default). */
  stream?: 'upstream' | 'downstream';
  /** The probability (0–1) that a connection gets this toxic, drawn from the lab's seed. Default 1. */
  toxicity?: number;
  /**
   * Toxiproxy's attributes: latency {latency, jitter} ms; bandwidth {rate} KB/s; slow_close {delay} ms;
   * timeout {timeout} ms (0: never); reset_peer {timeout} ms; slicer {average_size, size_variation, delay} bytes/µs;
   * limit_data {bytes}.
   */
  attributes: Record<string, number>;
}

/** Detail of the `fault` event: a fault that fired, at the node that applied it. */
export interface FaultFired {
  /** `smtp` (a rule of this node's SMTP/LMTP server), `dns`, or `link` (a toxic of a link proxy). */
  source: 'smtp' | 'dns' | 'link';
  /** The rule's id or the toxic's name. */
  rule: string;
  /** The action kind or toxic type. */
  action: string;
  /** `connect` … `quit` for SMTP; the query (`MX receiver.test`) for DNS; `upstream`/`downstream` for a link. */
  stage: string;
  /** What the client saw: the reply sent, `connection closed`, `no answer`, `SERVFAIL`, … */
  effect: string;
  client?: string;
  /** The hop, as other events name it (`mta.sender.test -> mx.receiver.test[127.1.2.3]:25`). */
  hop?: string;
  sender?: string;
  recipients?: string[];
}

/** A rule as the server holds it: how often it fired so far. */
export type SmtpFaultRuleView = SmtpFaultRule & { fired: number };
export type DnsFaultRuleView = DnsFaultRule & { fired: number };
/** A toxic as the proxy holds it: every default filled in. */
export type ToxicView = Required<Toxic>;
