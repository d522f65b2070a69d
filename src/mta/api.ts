// The `mta` role's contract with the harness: its control operations, its events, and the queue's record shapes
// (what `message` returns and what the queue keeps on disk are the same shapes, declared once, here).
import type { MxResolution } from '../dns/api.js';
import type { TlsInfo } from '../shared/tls-session.js';
import type { DkimSigningConfig, OutboundTlsPolicy } from '../shared/config.js';
import { eventKinds, NODE_EVENT_KINDS, type NodeEvents, type NoArgs, type Operation } from '../shared/contract.js';
import type { FaultFired } from '../shared/faults.js';
import type { SmtpFaultOperations } from '../shared/fault-operations.js';

/**
 * `incoming`: queued, not tried yet; `active`: an attempt is under way; `deferred`: waiting for its next attempt;
 * `hold`: put aside by `hold` (Postfix's hold queue), not tried until `release`; `done`: every recipient delivered or
 * bounced.
 */
export type MessageState = 'incoming' | 'active' | 'deferred' | 'hold' | 'done';
export type RecipientState = 'pending' | 'deferred' | 'delivered' | 'bounced';

/** Where the message came from. */
export interface QueueOrigin {
  /** `api`: the HTTP email API (http-api.ts). */
  kind: 'submission' | 'smtp' | 'dsn' | 'api';
  /** Protocol as in the Received header: ESMTPA (authenticated), ESMTP... */
  protocol?: string;
  helo?: string;
  client?: string;
  /** The authenticated user, for submissions. */
  user?: string;
  /** For `api`: the API key that sent it, as a short id (its first 4 characters and '…'), never the key itself. */
  apiKey?: string;
  /**
   * For `api`: SHA-256 of the key (hex, first 32 digits). Only the key that sent a message may read its status; the
   * short id above could be shared by two keys, this cannot (in practice), and it gives nothing away about the key.
   */
  apiKeyFingerprint?: string;
}

/**
 * The MAIL FROM parameters a message was received with (RFC 6152 BODY=, RFC 6531 SMTPUTF8), kept in its queue record
 * so that relaying can pass them on. Records written before they were kept have none: delivery then goes by the
 * content alone (8-bit octets → BODY=8BITMIME; UTF-8 in an address or a header → SMTPUTF8), as it also does for
 * messages the MTA makes itself (bounces) or takes from the HTTP API.
 */
export interface MailParams {
  /** BODY= as the client declared it; absent: not declared (which RFC 6152 §2 makes 7BIT). */
  body?: '7BIT' | '8BITMIME';
  /** The client gave SMTPUTF8. */
  smtputf8?: boolean;
  /**
   * The content has octets above 127 although BODY=8BITMIME was not declared (RFC 6152 says a client must declare
   * it). Accepted, and relayed as 8BITMIME all the same, as Postfix does in practice; noted here so it can be seen.
   */
  undeclared8bit?: boolean;
}

/** The outcome of the last attempt for a recipient, with everything needed to understand it. */
export interface AttemptReport {
  /** One line for humans: where, what command, what reply. */
  description: string;
  /** This MTA → the server it talked to, e.g. `mta.sender.test -> mx.receiver.test[127.0.0.7]:25`. */
  hop: string;
  /** RFC 3463 status, e.g. `5.1.1`. */
  status: string;
  /** The reply that decided (remote, or synthesized for local decisions such as a null MX). */
  reply?: string;
  code?: number;
  /** The command that reply answered. */
  command?: string;
  /** Name of the remote server that replied (the MX host name), for DSNs' Remote-MTA. */
  remoteMta?: string;
  at: number;
}

export interface QueueRecipient {
  address: string;
  state: RecipientState;
  /** Delivery attempts made for this recipient. */
  attempts: number;
  /** When the next attempt is due (deferred recipients). */
  nextAttempt?: number;
  /** Last failure (deferred, bounced). */
  lastError?: AttemptReport;
  /** Final outcome (delivered or bounced). */
  result?: AttemptReport & { expired?: boolean };
}

/** A message in the queue, as its envelope record holds it. */
export interface QueuedMessage {
  queueId: string;
  /** The Message-ID header, with angle brackets. */
  messageId?: string;
  /** Envelope sender; '' for the null sender (bounces). */
  from: string;
  recipients: QueueRecipient[];
  state: MessageState;
  /** When the message was queued (ms since the epoch): the start of its lifetime. */
  arrival: number;
  size: number;
  origin: QueueOrigin;
  /** Delivery attempts of the message. */
  attempts: number;
  /** When the next attempt is due (deferred messages). */
  nextAttempt?: number;
  /** For a bounce (DSN): the queue id of the message it reports on. */
  dsnFor?: string;
  /** The MAIL FROM parameters it was received with (absent in records written before they were kept). */
  params?: MailParams;
  doneAt?: number;
}

/** A record as the queue hands it out: every change goes through the queue's transitions. */
export type ReadonlyDeep<T> = T extends readonly (infer U)[] ? readonly ReadonlyDeep<U>[] : T extends object ? { readonly [K in keyof T]: ReadonlyDeep<T[K]> } : T;
export type MessageRecord = ReadonlyDeep<QueuedMessage>;
export type RecipientRecord = ReadonlyDeep<QueueRecipient>;

/** A queue entry as `queue` and `message` show it: the record, with each recipient's last outcome in one line. */
export interface QueueEntryView {
  queueId: string;
  messageId?: string;
  from: string;
  state: MessageState;
  arrival: number;
  size: number;
  attempts: number;
  nextAttempt?: number;
  origin: QueueOrigin;
  dsnFor?: string;
  recipients: {
    address: string;
    state: RecipientState;
    attempts: number;
    /** The last failure, in one line (where, command, reply). */
    lastError?: string;
    lastReply?: string;
    status?: string;
    hop?: string;
    nextAttempt?: number;
    expired?: boolean;
  }[];
}

export type MtaOperations = {
  /** The messages in the queue (not done); `all` adds the finished ones still remembered, `state` filters. */
  queue: Operation<{ state?: MessageState; all?: boolean }, QueueEntryView[]>;
  /** Retry now: every waiting message, and a message whose attempt is in flight again as soon as it ends. */
  flush: Operation<NoArgs, { flushed: number }>;
  /**
   * Puts a queued message on hold (Postfix: `postsuper -h`): it is not tried until released. A message whose attempt
   * is under way is held when that attempt ends, unless the attempt finished it (then the call fails, saying so).
   * Answers the message as it is now (state `hold`).
   */
  hold: Operation<{ queueId: string }, QueueEntryView>;
  /** Releases a held message (Postfix: `postsuper -H`, then `postqueue -i`): deferred, and tried at once. */
  release: Operation<{ queueId: string }, QueueEntryView>;
  /**
   * Deletes a queued message (Postfix: `postsuper -d`): no more attempts, no bounce. A message whose attempt is under
   * way is deleted when that attempt ends (recipients it delivered stay delivered).
   */
  delete: Operation<{ queueId: string }, { queueId: string; deleted: true }>;
  /** One message: the view, the full record (every recipient's last report) and, while queued, its headers. */
  message: Operation<{ queueId: string }, QueueEntryView & { record: MessageRecord; headers?: string }>;
  /**
   * Replaces every DKIM signer at once (key rotation): all are checked first (domain and selector syntax, the PEM key
   * parses and fits the algorithm, RSA ≥ 1024 bits); one bad entry fails the call and nothing changes. The next
   * submission is signed with the new set. The answer never holds a private key.
   */
  'set-dkim': Operation<{ signers: DkimSigningConfig[] }, { signers: DkimSignerView[] }>;
  /** The current DKIM signers, without their keys. */
  dkim: Operation<NoArgs, { signers: DkimSignerView[] }>;
} & SmtpFaultOperations; // `set-smtp-faults`, `smtp-faults`: the fault rules of its SMTP servers, 25, 587 and 465 (issue 15)

/** A DKIM signer as the control channel shows it: `d=`, `s=`, `a=`. */
export interface DkimSignerView {
  domain: string;
  selector: string;
  algorithm: DkimSigningConfig['algorithm'];
}

type Service = 'smtp' | 'submission';

/** What every delivery outcome event says about the recipient's last exchange. */
interface OutcomeDetail {
  rcpt: string;
  /** This MTA → where the recipient was tried, e.g. `mta.sender.test -> mx.receiver.test[127.0.0.7]:25`. */
  hop: string;
  /** The command the reply answered, e.g. `RCPT TO:<bob@receiver.test>`. */
  command?: string;
  /** The reply that decided, as the server sent it (or as this MTA decided it, for local verdicts). */
  reply: string;
  /** RFC 3463 status. */
  status: string;
  /** The outbound TLS policy the MTA applied to the destination (relayed over SMTP, or deferred/bounced there). */
  tlsPolicy?: OutboundTlsPolicy;
}

/**
 * What went wrong with TLS towards a destination, in the terms of SMTP TLS Reporting (RFC 8460 §4.3): the result
 * types a TLSRPT report would carry.
 */
export type TlsFailureType =
  | 'starttls-not-supported'
  | 'certificate-host-mismatch'
  | 'certificate-expired'
  | 'certificate-not-trusted'
  | 'validation-failure'
  | 'tlsa-invalid'
  | 'sts-policy-fetch-error'
  | 'sts-policy-invalid'
  | 'sts-webpki-invalid';

interface SessionDetail {
  host?: string;
  port?: number;
  /** The transaction ran on a cached connection. */
  reused: boolean;
  /** The TLS version and cipher of the outbound connection (opportunistic STARTTLS), null when it was plaintext. */
  tls: TlsInfo | null;
  /** The MAIL FROM parameters sent besides SIZE (RFC 6152 BODY=8BITMIME, RFC 6531 SMTPUTF8), when any. */
  mailParams?: string[];
  /** The message was sent converted to 7-bit, the server not offering 8BITMIME (RFC 6152 §3). */
  converted7bit?: boolean;
}

export type MtaEvents = NodeEvents & {
  /** A command was refused on port 25, 587 or 465 (stage AUTH: AUTH before STARTTLS where plaintext AUTH is not allowed). */
  rejected: {
    service: Service;
    stage: string;
    reply: string;
    from: string | null;
    to: string[];
    client: string;
    helo: string | null;
    hop: string;
    user?: string;
    /** The address or size the refused command carried. */
    attempted?: string;
    size?: number;
  };
  'auth-failed': { service: Service; user: string | null; method: string; reply: string; client: string; hop: string };
  /**
   * A login was refused, or is refused from now on, because of repeated failures (shared/login-throttle.ts):
   * `scope` says what is locked (the account from this client, or the client address for every account).
   */
  'auth-throttled': { service: Service; user: string | null; client: string; scope: 'account' | 'address'; retryAfterMs: number; hop: string };
  /**
   * Accepted on the submission port (587, or 465 with implicit TLS) and queued. `tls`: the version and cipher of the
   * client's connection (STARTTLS or implicit TLS), null when it was plaintext. `dkim`: the signature the MTA put on
   * the message before queueing it (its From: domain has a signer); absent when it was not signed.
   */
  submitted: {
    user?: string;
    from: string;
    to: string[];
    size: number;
    tls: TlsInfo | null;
    dkim?: DkimSignerView;
    /** Sent through the HTTP email API (origin `api`): the key's short id (first 4 characters and '…'). */
    apiKey?: string;
  };
  /**
   * Accepted on port 25 and queued: for a local domain, or, from a client of `relayClients`, for any domain
   * (`relay: true` when some recipient is not local); `tls` as for `submitted`. Never DKIM-signed.
   */
  received: { from: string; to: string[]; size: number; client?: string; helo: string; tls: TlsInfo | null; relay?: true };
  /** Something went wrong inside the MTA; `error` says what. */
  error: { error: string; service?: Service | 'api'; from?: string; to?: string[]; retryAt?: number };
  /** `params`: the MAIL FROM parameters it came with (BODY=, SMTPUTF8, 8-bit content not declared), when any. */
  queued: { from: string; to: string[]; size: number; origin: QueueOrigin['kind']; dsnFor?: string; params?: MailParams };
  /** A delivery attempt starts. */
  active: { attempt: number; recipients: string[] };
  /** Where mail for `domain` goes, as the lab DNS said. */
  'mx-lookup': { domain: string; result: MxResolution };
  connect: { host: string; port: number; hop: string; mx?: string; via?: 'lmtp' };
  /** `tlsPolicy`: the outbound TLS policy for the destination; a failure under `encrypt`/`verify` says why TLS failed. */
  'connect-failed': { host: string; port: number; mx: string; hop: string; stage: string; command?: string; reply?: string; error: string; tlsPolicy?: OutboundTlsPolicy };
  /**
   * The MTA-STS policy of a destination (RFC 8461) as the MTA found it: `source` says whether it was fetched now or
   * came from the cache; `error` when the TXT record announced a policy that could not be had (then none applies).
   * Not emitted for a domain that publishes no policy.
   */
  'mta-sts': { domain: string; mode?: 'enforce' | 'testing' | 'none'; id?: string; mx?: string[]; maxAge?: number; source?: 'fetched' | 'cache'; expiresAt?: number; error?: string };
  /** TLSA records of an MX host (RFC 7672) and what DANE makes of them; not emitted when the host has none. */
  'tlsa-lookup': { mx: string; name: string; records: string[]; usable: number; error?: string };
  /**
   * A TLS policy was not met (a TLSRPT failure, RFC 8460). `enforced`: the MX was not used because of it (the
   * recipients were deferred unless another MX took them); false: reported only (MTA-STS `testing`, or a policy that
   * could not be had).
   */
  'tls-policy-failure': { domain: string; mx?: string; host?: string; tlsPolicy: OutboundTlsPolicy | 'mta-sts-testing'; resultType: TlsFailureType; enforced: boolean; reason: string; hop: string };
  /** Handed to the next MTA (an MX), which answered 250. */
  relayed: OutcomeDetail & SessionDetail & { mx?: string };
  /** Handed to the mailbox server over LMTP (a local domain). */
  delivered: OutcomeDetail & SessionDetail;
  /** A temporary failure: the recipient is tried again at `nextAttempt`. */
  deferred: OutcomeDetail & { error: string; nextAttempt: number; delay: number; attempt: number };
  /** A permanent failure: the recipient bounces (a DSN follows unless the sender is <>). */
  bounced: OutcomeDetail & { error: string; attempt: number };
  /** The message outlived the queue lifetime: the recipient bounces with the last temporary error. */
  expired: OutcomeDetail & { error: string; attempts: number; queuedFor: number };
  /** A delivery status notification (RFC 3464) was queued for the sender. */
  'dsn-created': { dsnQueueId: string; dsnMessageId: string; for: { queueId: string; messageId: string | null }; to: string; rcpts: string[] };
  /** No DSN for a message that is itself a bounce. */
  'dsn-suppressed': { rcpts: string[]; reason: string };
  /**
   * The HTTP email API refused a request (any 4xx; see ApiErrorBody). `apiKey`: the short id of the key, once it was
   * recognised; `from`: the sender it asked for, once the body was read.
   */
  'api-rejected': { status: number; error: string; method: string; path: string; client: string; apiKey?: string; from?: string };
  /** An SMTP fault rule of its servers (25, 587, 465) fired (issue 15): what the client saw, at which stage, on which hop. */
  fault: FaultFired;
};

export type MtaContract = { operations: MtaOperations; events: MtaEvents };

export const MTA_EVENT_KINDS = eventKinds<MtaEvents>()([
  ...NODE_EVENT_KINDS,
  'rejected', 'auth-failed', 'auth-throttled', 'submitted', 'received', 'error', 'queued', 'active', 'mx-lookup', 'connect', 'connect-failed', 'mta-sts', 'tlsa-lookup', 'tls-policy-failure',
  'relayed', 'delivered', 'deferred', 'bounced', 'expired', 'dsn-created', 'dsn-suppressed',
  'api-rejected', 'fault',
] as const);

// ---- The HTTP email API (issue 13, http-api.ts): Mailpit's send API shape, Bearer API keys ----

/** A mailbox as Mailpit's send API writes it. */
export interface ApiAddress {
  Email: string;
  Name?: string;
}

/** An attachment of `POST /api/v1/send`: `ContentID` makes it inline (`cid:`), as in Mailpit. */
export interface ApiAttachment {
  /** The content, base64. */
  Content: string;
  Filename: string;
  /** Absent: guessed from the file name. */
  ContentType?: string;
  ContentID?: string;
}

/** `POST /api/v1/send`: the message, composed by the MTA (nodemailer's MailComposer). */
export interface ApiSendRequest {
  From: ApiAddress;
  To?: ApiAddress[];
  Cc?: ApiAddress[];
  /** Envelope recipients only: never in a header (as in Mailpit, plain addresses). */
  Bcc?: string[];
  ReplyTo?: ApiAddress[];
  Subject?: string;
  Text?: string;
  HTML?: string;
  Attachments?: ApiAttachment[];
  /** Extra header fields; the structural ones (From, To, Cc, Bcc, Reply-To, Subject, Date, Message-ID, MIME-Version, Content-*, and the trace and signature fields) are refused. */
  Headers?: Record<string, string>;
  /** Written as one `X-Tags` header (comma-separated), the header Mailpit reads tags from. */
  Tags?: string[];
}

/** `POST /api/v1/send/raw` (Mailpit has no such endpoint): a ready MIME message and its envelope. */
export interface ApiRawSendRequest {
  /** Envelope sender (MAIL FROM). */
  From: string;
  /** Envelope recipients (RCPT TO). */
  To: string[];
  /** The message (RFC 5322), as text; line ends are made CRLF. */
  Message: string;
}

/** 200 of both send endpoints: the queue id and the Message-ID the message was queued with. */
export interface ApiSendResponse {
  ID: string;
  MessageID: string;
}

/** Every refusal of the API (4xx) and its internal errors (5xx). */
export interface ApiErrorBody {
  Error: string;
}

/** A recipient's state as `GET /api/v1/messages/{ID}` shows it: `queued` is the queue's `pending`. */
export type ApiRecipientState = 'queued' | 'deferred' | 'delivered' | 'bounced';

/** `GET /api/v1/messages/{ID}`: only for the API key that sent the message. */
export interface ApiMessageStatus {
  ID: string;
  MessageID: string;
  Recipients: { Address: string; State: ApiRecipientState; LastReply?: string; Attempts: number }[];
}
