// The MTA's transactional HTTP email API (issue 13), in the shape of Mailpit's send API (so that users who know it
// know this): HTTPS with the node's `tls` (plain HTTP only on a node without `tls`) on `address:api.port`.
//
//   POST /api/v1/send            JSON ApiSendRequest, composed here with nodemailer's MailComposer
//   POST /api/v1/send/raw        JSON ApiRawSendRequest: a ready message and its envelope (Mailpit has no such endpoint)
//   GET  /api/v1/messages/{ID}   ApiMessageStatus: each recipient's state in the queue
//
// `Authorization: Bearer <key>` on every request (401), the key compared in constant time. The sender must be in one
// of the key's `domains` (403). 200 `{ID, MessageID}` only once the message is durably in the queue (the queue
// fsyncs): "nothing lost" holds here as on port 587. Errors are `{ "Error": "..." }`: 400 malformed, 401, 403,
// 404 unknown path, 405 wrong method, 413 over the size limit, 422 an invalid address (or an Idempotency-Key reused
// with another body), 503 not queued this time (try again).
//
// A message takes the path of a submission: Message-ID and Date when missing (prepare.ts), the MTA's Received header
// (`with HTTPS`: there was no SMTP session, and an RFC 3848 type such as ESMTPSA would claim one), DKIM signing by the
// MTA's signers (prepare.ts, as receive.ts), then the engine, recorded as `submitted` with origin `api`.
//
// `Idempotency-Key` (draft-ietf-httpapi-idempotency-key-header): a retried send with the same key and the same API key
// answers the first send's ID without queueing again; see IdempotencyStore.
import { createHash, timingSafeEqual } from 'node:crypto';
import { promises as nodeFs } from 'node:fs';
import http from 'node:http';
import https from 'node:https';
import net from 'node:net';
import path from 'node:path';
import MailComposer from 'nodemailer/lib/mail-composer';
import type { ApiKeyConfig, MtaNodeConfig } from '../shared/config.js';
import type { EventLog } from '../shared/events.js';
import { messageIdOf, receivedHeader } from '../shared/headers.js';
import { headerSectionProblem } from '../shared/message-guard.js';
import { tlsInfo, tlsServerOptions } from '../shared/tls-session.js';
import { writeFileDurable } from '../shared/fsutil.js';
import type { ApiAddress, ApiAttachment, ApiErrorBody, ApiMessageStatus, ApiRawSendRequest, ApiRecipientState, ApiSendRequest, ApiSendResponse, MtaEvents, QueueOrigin, RecipientState } from './api.js';
import { fromMailboxes, type DkimSigner } from './dkim.js';
import type { MtaEngine } from './engine.js';
import { missingSubmissionHeaders, newMessageId, signSubmission } from './prepare.js';
import { appendHeaders, MESSAGE_SIZE_LIMIT } from './receive.js';

/** Room for the JSON around a message: field names, the envelope, escaping of line ends (`\r\n` is 4 bytes in JSON). */
export const JSON_OVERHEAD = 64 * 1024;
/** How long a request may take to send its headers, and all of it (Node's defaults are 60 s and 300 s). */
const HEADERS_TIMEOUT_MS = 10_000;
const REQUEST_TIMEOUT_MS = 60_000;
const KEEP_ALIVE_MS = 5_000;
/** An Idempotency-Key is remembered this long (Stripe: 24 h), and at most this many (the oldest go first). */
export const IDEMPOTENCY_TTL_MS = 24 * 60 * 60_000;
export const IDEMPOTENCY_MAX_ENTRIES = 10_000;

export interface HttpApiOptions {
  config: Pick<MtaNodeConfig, 'hostname' | 'tls' | 'limits' | 'dataDir' | 'fsync'> & { api: NonNullable<MtaNodeConfig['api']> };
  engine: MtaEngine;
  /** The node's DKIM signers (those of the submission port). */
  dkim?: DkimSigner;
  events: EventLog<MtaEvents>;
  log(message: string): void;
  now?(): number;
}

/** A refusal: its HTTP status and the one-line reason the client gets as `Error`. */
export class ApiError extends Error {
  constructor(
    readonly status: number,
    message: string,
    readonly headers: Record<string, string> = {},
  ) {
    super(message);
  }
}

/** The short id of a key in events and queue records: its first 4 characters. Never the key itself. */
export function apiKeyId(key: string): string {
  return `${key.slice(0, 4)}…`;
}

function sha256(data: string | Buffer): Buffer {
  return createHash('sha256').update(data).digest();
}

/** What identifies an API key on disk and in the queue record: a hash, so the file and the record give nothing away. */
export function keyFingerprint(key: string): string {
  return sha256(`maillab api key\n${key}`).toString('hex').slice(0, 32);
}

// ---- RFC 5321 mailbox syntax (§4.1.2), ASCII (no SMTPUTF8 through the API) ----

const ATOM = "[A-Za-z0-9!#$%&'*+\\-/=?^_`{|}~]+";
const DOT_STRING = new RegExp(`^${ATOM}(?:\\.${ATOM})*$`);
/** qtextSMTP (%d32-33 / %d35-91 / %d93-126) or a quoted-pairSMTP (backslash and %d32-126). */
const QUOTED_STRING = /^"(?:[\x20\x21\x23-\x5b\x5d-\x7e]|\\[\x20-\x7e])*"$/;
const SUB_DOMAIN = /^[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?$/;

/** Why `address` is not an RFC 5321 Mailbox (local-part@domain), or undefined when it is one. */
export function mailboxProblem(address: string): string | undefined {
  const at = address.lastIndexOf('@');
  if (at <= 0) return 'it needs a local part, an @ and a domain';
  const local = address.slice(0, at);
  const domain = address.slice(at + 1);
  // §4.5.3.1: 64 octets of local part, 255 of domain, 256 of path (with the angle brackets).
  if (local.length > 64) return 'its local part is longer than 64 characters';
  if (address.length + 2 > 256) return 'it is longer than 254 characters';
  if (!DOT_STRING.test(local) && !QUOTED_STRING.test(local)) return 'its local part is neither a dot-string nor a quoted string';
  const literal = /^\[(?:IPv6:(.+)|([\d.]+))\]$/i.exec(domain);
  if (literal) return (literal[1] !== undefined ? net.isIPv6(literal[1]) : net.isIPv4(literal[2]!)) ? undefined : 'its address literal is not an IP address';
  if (domain.length > 255) return 'its domain is longer than 255 characters';
  if (!domain.split('.').every((label) => label.length <= 63 && SUB_DOMAIN.test(label))) return 'its domain is not a domain name (letters, digits and hyphens, dot-separated) or an address literal';
  return undefined;
}

function domainOf(address: string): string {
  return address.slice(address.lastIndexOf('@') + 1).toLowerCase();
}

// ---- Request checks: 400 for the shape, 422 for an address ----

type Json = Record<string, unknown>;

function isObject(value: unknown): value is Json {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

/** Unknown fields are refused: a misspelt `Html` or `BCC` would otherwise be dropped without a word. */
function onlyFields(value: Json, allowed: readonly string[], where: string): void {
  const unknown = Object.keys(value).filter((k) => !allowed.includes(k));
  if (unknown.length) throw new ApiError(400, `${where}: unknown field${unknown.length > 1 ? 's' : ''} ${unknown.join(', ')} (known: ${allowed.join(', ')})`);
}

function optionalString(value: Json, field: string, where: string, oneLine = false): string | undefined {
  const v = value[field];
  if (v === undefined || v === null) return undefined;
  if (typeof v !== 'string') throw new ApiError(400, `${where}${field} must be a string, got ${typeof v}`);
  // A line break in a header value would start a header of the client's choosing (header injection).
  if (oneLine && /[\r\n]/.test(v)) throw new ApiError(400, `${where}${field} must be one line (no CR or LF)`);
  return v;
}

function checkMailbox(address: string, where: string): string {
  const problem = mailboxProblem(address);
  if (problem) throw new ApiError(422, `${where} ${JSON.stringify(address)} is not a valid address: ${problem}`);
  return address;
}

function addressOf(value: unknown, where: string): ApiAddress {
  if (!isObject(value)) throw new ApiError(400, `${where} must be an object {Email, Name}`);
  onlyFields(value, ['Email', 'Name'], where);
  const email = optionalString(value, 'Email', `${where}.`);
  if (!email) throw new ApiError(400, `${where}.Email is missing`);
  const name = optionalString(value, 'Name', `${where}.`, true);
  return { Email: checkMailbox(email, `${where}.Email`), ...(name ? { Name: name } : {}) };
}

function listOf<T>(value: Json, field: string, item: (v: unknown, where: string) => T): T[] {
  const v = value[field];
  if (v === undefined || v === null) return [];
  if (!Array.isArray(v)) throw new ApiError(400, `${field} must be a list`);
  return v.map((entry, i) => item(entry, `${field}[${i}]`));
}

const plainAddress = (v: unknown, where: string): string => {
  if (typeof v !== 'string' || v === '') throw new ApiError(400, `${where} must be an address (a non-empty string)`);
  return checkMailbox(v, where);
};

/**
 * Header fields a client may not set: those the API composes from its own fields (and which the envelope, the From:
 * domain check and DKIM rely on), the MIME structure, and the fields only the MTA and the hops after it write.
 */
const STRUCTURAL = new Set(['from', 'sender', 'to', 'cc', 'bcc', 'reply-to', 'subject', 'date', 'message-id', 'mime-version', 'received', 'return-path', 'dkim-signature', 'authentication-results', 'x-tags']);
const isStructural = (name: string) => STRUCTURAL.has(name.toLowerCase()) || /^(content-|arc-)/i.test(name);
/** RFC 5322 §2.2: a field name is printable ASCII except the colon. */
const FIELD_NAME = /^[\x21-\x39\x3b-\x7e]+$/;
const BASE64 = /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/;

const SEND_FIELDS = ['From', 'To', 'Cc', 'Bcc', 'ReplyTo', 'Subject', 'Text', 'HTML', 'Attachments', 'Headers', 'Tags'] as const;

/** The checked `POST /api/v1/send` body. */
export function parseSendRequest(body: unknown): ApiSendRequest {
  if (!isObject(body)) throw new ApiError(400, 'the body must be a JSON object');
  onlyFields(body, SEND_FIELDS, 'the body');
  if (body.From === undefined || body.From === null) throw new ApiError(400, 'From is missing');
  const request: ApiSendRequest = { From: addressOf(body.From, 'From') };
  const to = listOf(body, 'To', addressOf);
  const cc = listOf(body, 'Cc', addressOf);
  const bcc = listOf(body, 'Bcc', plainAddress);
  const replyTo = listOf(body, 'ReplyTo', addressOf);
  if (to.length + cc.length + bcc.length === 0) throw new ApiError(400, 'no recipient: To, Cc or Bcc must name at least one');
  Object.assign(request, to.length ? { To: to } : {}, cc.length ? { Cc: cc } : {}, bcc.length ? { Bcc: bcc } : {}, replyTo.length ? { ReplyTo: replyTo } : {});
  const subject = optionalString(body, 'Subject', '', true);
  const text = optionalString(body, 'Text', '');
  const html = optionalString(body, 'HTML', '');
  Object.assign(request, subject !== undefined ? { Subject: subject } : {}, text !== undefined ? { Text: text } : {}, html !== undefined ? { HTML: html } : {});
  const attachments = listOf(body, 'Attachments', (v, where): ApiAttachment => {
    if (!isObject(v)) throw new ApiError(400, `${where} must be an object {Content, Filename, ContentType, ContentID}`);
    onlyFields(v, ['Content', 'Filename', 'ContentType', 'ContentID'], where);
    const content = optionalString(v, 'Content', `${where}.`);
    if (content === undefined) throw new ApiError(400, `${where}.Content is missing`);
    if (!BASE64.test(content.replace(/\s+/g, ''))) throw new ApiError(400, `${where}.Content is not base64`);
    const filename = optionalString(v, 'Filename', `${where}.`, true);
    if (!filename) throw new ApiError(400, `${where}.Filename is missing`);
    const contentType = optionalString(v, 'ContentType', `${where}.`, true);
    const contentId = optionalString(v, 'ContentID', `${where}.`, true);
    return { Content: content, Filename: filename, ...(contentType ? { ContentType: contentType } : {}), ...(contentId ? { ContentID: contentId } : {}) };
  });
  if (attachments.length) request.Attachments = attachments;
  if (body.Headers !== undefined && body.Headers !== null) {
    if (!isObject(body.Headers)) throw new ApiError(400, 'Headers must be an object of header name to value');
    const headers: Record<string, string> = {};
    for (const [name, value] of Object.entries(body.Headers)) {
      if (!FIELD_NAME.test(name)) throw new ApiError(400, `Headers: ${JSON.stringify(name)} is not a header field name`);
      if (isStructural(name)) throw new ApiError(400, `Headers: ${name} may not be set (the API writes it from its own fields, or it belongs to the MIME structure or to the MTA)`);
      headers[name] = optionalString(body.Headers, name, 'Headers.', true) ?? '';
    }
    if (Object.keys(headers).length) request.Headers = headers;
  }
  const tags = listOf(body, 'Tags', (v, where) => {
    if (typeof v !== 'string' || !v.trim() || /[\r\n,]/.test(v)) throw new ApiError(400, `${where} must be a non-empty string without commas or line breaks`);
    return v.trim();
  });
  if (tags.length) request.Tags = tags;
  return request;
}

/** The checked `POST /api/v1/send/raw` body. */
export function parseRawRequest(body: unknown): ApiRawSendRequest {
  if (!isObject(body)) throw new ApiError(400, 'the body must be a JSON object');
  onlyFields(body, ['From', 'To', 'Message'], 'the body');
  if (typeof body.From !== 'string' || !body.From) throw new ApiError(400, 'From (the envelope sender) must be a non-empty string');
  if (!Array.isArray(body.To) || body.To.length === 0) throw new ApiError(400, 'To (the envelope recipients) must be a non-empty list of addresses');
  if (typeof body.Message !== 'string' || !body.Message) throw new ApiError(400, 'Message (the MIME message) must be a non-empty string');
  return { From: checkMailbox(body.From, 'From'), To: body.To.map((v, i) => plainAddress(v, `To[${i}]`)), Message: body.Message };
}

/** The message of a send request, composed by MailComposer. Bcc is left out: it is envelope only. */
export async function composeMessage(request: ApiSendRequest, messageId: string, date: Date): Promise<Buffer> {
  const mailbox = (a: ApiAddress) => ({ address: a.Email, name: a.Name ?? '' });
  const headers: Record<string, string> = { ...request.Headers };
  // X-Tags is the header Mailpit reads tags from (comma-separated): the tags travel with the message, to any reader.
  if (request.Tags) headers['X-Tags'] = request.Tags.join(', ');
  const composer = new MailComposer({
    from: mailbox(request.From),
    ...(request.To ? { to: request.To.map(mailbox) } : {}),
    ...(request.Cc ? { cc: request.Cc.map(mailbox) } : {}),
    ...(request.ReplyTo ? { replyTo: request.ReplyTo.map(mailbox) } : {}),
    ...(request.Subject !== undefined ? { subject: request.Subject } : {}),
    ...(request.Text !== undefined ? { text: request.Text } : {}),
    ...(request.HTML !== undefined ? { html: request.HTML } : {}),
    attachments: (request.Attachments ?? []).map((a) => ({
      content: Buffer.from(a.Content, 'base64'),
      filename: a.Filename,
      ...(a.ContentType ? { contentType: a.ContentType } : {}),
      ...(a.ContentID ? { cid: a.ContentID } : {}),
    })),
    headers,
    messageId,
    date,
  });
  return composer.compile().build();
}

// ---- Idempotency ----

interface IdempotencyEntry {
  /** SHA-256 of the path and the body, byte for byte. */
  fingerprint: string;
  id: string;
  messageId?: string;
  /**
   * `pending`: written before the message is queued, so that a crash between queueing and the `queued` write does not
   * let a retry queue it again (the retry finds the queue id in the queue); `queued`: the answer was given. What this
   * cannot tell: a message queued, then delivered and forgotten (done messages are kept in memory only) all before the
   * `queued` write landed and the node died; its retry is sent again.
   */
  state: 'pending' | 'queued';
  at: number;
}

/**
 * Idempotency-Key → the send it answered, per API key, durable in `<dataDir>/api-idempotency.json` (written whole,
 * atomically, fsynced when the node fsyncs). Kept IDEMPOTENCY_TTL_MS, at most IDEMPOTENCY_MAX_ENTRIES (the oldest go
 * first: a key older than that may send again).
 */
export class IdempotencyStore {
  private entries = new Map<string, IdempotencyEntry>();
  private writing: Promise<void> = Promise.resolve();

  constructor(
    readonly file: string,
    private readonly options: { fsync: boolean; now: () => number; ttlMs?: number; maxEntries?: number },
  ) {}

  async open(): Promise<void> {
    let text: string;
    try {
      text = await nodeFs.readFile(this.file, 'utf8');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return;
      throw err;
    }
    // Written by rename only: a file that does not parse was not written by us. Refusing to start says so; starting
    // empty would silently send again what a client retries.
    let parsed: unknown;
    try {
      parsed = JSON.parse(text);
    } catch (err) {
      throw new Error(`${this.file}: not JSON (${(err as Error).message}); move it away to start without the idempotency keys it held`);
    }
    const entries = isObject(parsed) && isObject(parsed.entries) ? parsed.entries : {};
    this.entries = new Map(Object.entries(entries as Record<string, IdempotencyEntry>).sort((a, b) => a[1].at - b[1].at));
    this.prune();
  }

  get(key: string): IdempotencyEntry | undefined {
    const entry = this.entries.get(key);
    return entry && entry.at > this.options.now() - (this.options.ttlMs ?? IDEMPOTENCY_TTL_MS) ? entry : undefined;
  }

  get size(): number {
    return this.entries.size;
  }

  /** Records `entry` and resolves once the file holding it is on disk. */
  put(key: string, entry: IdempotencyEntry): Promise<void> {
    this.entries.delete(key);
    this.entries.set(key, entry);
    this.prune();
    // One write at a time, each of the whole current map: the last one to land holds every entry put before it.
    const write = this.writing.then(() => writeFileDurable(this.file, JSON.stringify({ version: 1, entries: Object.fromEntries(this.entries) }), this.options.fsync));
    this.writing = write.catch(() => undefined);
    return write;
  }

  private prune(): void {
    const oldest = this.options.now() - (this.options.ttlMs ?? IDEMPOTENCY_TTL_MS);
    for (const [key, entry] of this.entries) {
      if (entry.at <= oldest || this.entries.size > (this.options.maxEntries ?? IDEMPOTENCY_MAX_ENTRIES)) this.entries.delete(key);
      else break;
    }
  }
}

// ---- The server ----

export interface HttpApi {
  server: http.Server | https.Server;
  idempotency: IdempotencyStore;
  /** Loads the idempotency keys; before listening. */
  open(): Promise<void>;
  /** The port it listens on (once listening). */
  port(): number;
  close(): Promise<void>;
}

interface Key {
  config: ApiKeyConfig;
  hash: Buffer;
  id: string;
  fingerprint: string;
}

const STATES: Record<RecipientState, ApiRecipientState> = { pending: 'queued', deferred: 'deferred', delivered: 'delivered', bounced: 'bounced' };

function clientOf(req: http.IncomingMessage): string {
  const ip = (req.socket.remoteAddress ?? '').replace(/^::ffff:(?=\d+\.)/, '');
  return net.isIPv6(ip) ? `IPv6:${ip}` : ip;
}

export function createHttpApi(options: HttpApiOptions): HttpApi {
  const { config, engine, events } = options;
  const now = options.now ?? Date.now;
  const sizeLimit = config.limits?.maxMessageSize ?? MESSAGE_SIZE_LIMIT;
  // Base64 content is as large in the JSON as in the composed message; a raw message grows by its escaped line ends.
  const bodyLimit = sizeLimit + Math.ceil(sizeLimit / 16) + JSON_OVERHEAD;
  const maxRecipients = config.limits?.maxRecipients ?? 100;
  const keys: Key[] = config.api.keys.map((k, i) => {
    if (typeof k.key !== 'string' || k.key.length < 16) throw new Error(`api.keys[${i}]: a key must be a string of 16 characters at least`);
    return { config: k, hash: sha256(k.key), id: apiKeyId(k.key), fingerprint: keyFingerprint(k.key) };
  });
  const idempotency = new IdempotencyStore(path.join(config.dataDir, 'api-idempotency.json'), { fsync: config.fsync, now });
  /** Sends under way per idempotency key: a concurrent duplicate waits for the first. */
  const inflight = new Map<string, Promise<ApiSendResponse>>();

  /** The key of `Authorization: Bearer <key>`; every configured key is compared, in constant time, whatever matches. */
  function authenticate(req: http.IncomingMessage): Key {
    const given = /^Bearer +(\S+) *$/i.exec(req.headers.authorization ?? '')?.[1];
    const challenge = { 'WWW-Authenticate': 'Bearer realm="maillab"' };
    if (!given) throw new ApiError(401, 'missing API key: send Authorization: Bearer <key>', challenge);
    // Hashes have one length, so timingSafeEqual never throws and the time does not depend on the key's length.
    const hash = sha256(given);
    let found: Key | undefined;
    for (const key of keys) if (timingSafeEqual(key.hash, hash) && !found) found = key;
    if (!found) throw new ApiError(401, 'invalid API key', challenge);
    return found;
  }

  function mayUse(key: Key, address: string, what: string): void {
    const domain = domainOf(address);
    if (!key.config.domains.some((d) => d.toLowerCase() === domain)) {
      throw new ApiError(403, `${what} <${address}>: domain ${domain} is not one this API key may send from (${key.config.domains.join(', ') || 'none'})`);
    }
  }

  function readBody(req: http.IncomingMessage): Promise<Buffer> {
    const tooLarge = () => new ApiError(413, `the request is larger than ${bodyLimit} bytes (the message size limit, ${sizeLimit} octets, and room for the JSON)`, { Connection: 'close' });
    const declared = Number(req.headers['content-length']);
    if (declared > bodyLimit) return Promise.reject(tooLarge());
    return new Promise((resolve, reject) => {
      const chunks: Buffer[] = [];
      let size = 0;
      const onData = (chunk: Buffer) => {
        size += chunk.length;
        if (size <= bodyLimit) return void chunks.push(chunk);
        // Nothing past the limit is kept. The rest is read and dropped, not cut off: destroying the request would
        // reset the connection before the client reads the 413 (Connection: close ends it after the answer).
        req.off('data', onData);
        chunks.length = 0;
        req.resume();
        reject(tooLarge());
      };
      req.on('data', onData);
      req.on('end', () => resolve(Buffer.concat(chunks)));
      req.on('error', reject);
    });
  }

  /** The rest of a send, shared by both endpoints: the path of a submission, then the queue. */
  async function queueMessage(req: http.IncomingMessage, key: Key, from: string, to: string[], message: Buffer, queueId: string, date: Date, reserve: (queueId: string) => Promise<void>): Promise<ApiSendResponse> {
    let data = message;
    if (data.length > sizeLimit) throw new ApiError(413, `the message is ${data.length} octets, over the size limit of ${sizeLimit}`);
    const problem = headerSectionProblem(data);
    if (problem) throw new ApiError(400, `the message: ${problem}`);
    const mailboxes = fromMailboxes(data);
    if (mailboxes.length === 0) throw new ApiError(400, 'the message has no From: header (RFC 5322 §3.6)');
    // Every From: mailbox, as on port 587: any one of them is what a reader or DMARC may take.
    for (const m of mailboxes) mayUse(key, m.address, 'From:');
    if (to.length > maxRecipients) throw new ApiError(400, `too many recipients: ${to.length}, at most ${maxRecipients} per message`);

    data = appendHeaders(data, missingSubmissionHeaders(data, queueId, config.hostname, date));
    const tls = tlsInfo(req.socket);
    const protocol = tls ? 'HTTPS' : 'HTTP';
    const client = clientOf(req);
    const trace = receivedHeader({ helo: '', clientAddress: client, by: config.hostname, protocol, id: queueId, ...(to.length === 1 ? { for: to[0] } : {}), date, tls });
    data = Buffer.concat([Buffer.from(trace, 'latin1'), data]);
    let signed: Awaited<ReturnType<typeof signSubmission>>;
    try {
      signed = await signSubmission(data, options.dkim, mailboxes[0]!.domain);
    } catch (err) {
      events.emit({ kind: 'error', detail: { service: 'api', error: (err as Error).message, from, to } });
      throw new ApiError(503, `local error: ${(err as Error).message}; try again later`, { 'Retry-After': '60' });
    }
    data = signed.data;
    const messageId = messageIdOf(data);
    const origin: QueueOrigin = { kind: 'api', protocol, client, apiKey: key.id, apiKeyFingerprint: key.fingerprint };
    try {
      await reserve(queueId);
      await engine.accept({ queueId, from, to, data, ...(messageId ? { messageId } : {}), origin }, () => {
        events.emit({ kind: 'submitted', queueId, ...(messageId ? { messageId } : {}), detail: { from, to, size: data.length, tls, ...(signed.dkim ? { dkim: signed.dkim } : {}), apiKey: key.id } });
      });
    } catch (err) {
      options.log(`api: cannot queue a message: ${(err as Error).stack ?? String(err)}`);
      events.emit({ kind: 'error', detail: { service: 'api', error: `cannot queue the message: ${(err as Error).message}`, from, to } });
      throw new ApiError(503, 'local error: the message could not be queued, try again later', { 'Retry-After': '60' });
    }
    return { ID: queueId, MessageID: messageId ?? '' };
  }

  /** `seen.from`: the sender the request asks for, once the body is read (for the `api-rejected` event). */
  async function send(req: http.IncomingMessage, key: Key, raw: boolean, body: Buffer, reserve: (queueId: string) => Promise<void>, seen: { from?: string }): Promise<ApiSendResponse> {
    let json: unknown;
    try {
      json = JSON.parse(body.toString('utf8'));
    } catch (err) {
      throw new ApiError(400, `the body is not JSON: ${(err as Error).message}`);
    }
    if (isObject(json)) {
      const asked = isObject(json.From) ? json.From.Email : json.From;
      if (typeof asked === 'string') seen.from = asked.slice(0, 320);
    }
    const queueId = engine.queue.newId();
    const date = new Date(now());
    if (raw) {
      const request = parseRawRequest(json);
      mayUse(key, request.From, 'From');
      // JSON carries text: line ends as the client wrote them become CRLF, as on the wire (a bare CR stays, and is refused).
      const message = Buffer.from(request.Message.replace(/\r?\n/g, '\r\n'), 'utf8');
      return queueMessage(req, key, request.From, dedupe(request.To), message, queueId, date, reserve);
    }
    const request = parseSendRequest(json);
    mayUse(key, request.From.Email, 'From');
    const to = dedupe([...(request.To ?? []).map((a) => a.Email), ...(request.Cc ?? []).map((a) => a.Email), ...(request.Bcc ?? [])]);
    const message = await composeMessage(request, newMessageId(queueId, config.hostname, date), date);
    return queueMessage(req, key, request.From.Email, to, message, queueId, date, reserve);
  }

  /** Runs `run` once per (API key, Idempotency-Key): a repeat gets the first answer, a different body 422. */
  async function idempotent(key: Key, idempotencyKey: string, fingerprint: string, run: (reserve: (queueId: string) => Promise<void>) => Promise<ApiSendResponse>): Promise<ApiSendResponse> {
    if (!/^[\x21-\x7e]{1,255}$/.test(idempotencyKey)) throw new ApiError(400, 'Idempotency-Key must be 1 to 255 printable ASCII characters');
    const storeKey = `${key.fingerprint}:${idempotencyKey}`;
    const reused = () => new ApiError(422, `Idempotency-Key ${idempotencyKey} was used for another request (another path or body); use a new key for a new message`);
    for (;;) {
      const running = inflight.get(storeKey);
      if (running) {
        // The first of concurrent duplicates decides; then its record (or, had it failed, nothing) is looked at again.
        await running.catch(() => undefined);
        continue;
      }
      const entry = idempotency.get(storeKey);
      if (entry) {
        if (entry.fingerprint !== fingerprint) throw reused();
        if (entry.state === 'queued') return { ID: entry.id, MessageID: entry.messageId ?? '' };
        // Pending: the node went down between writing it and answering. Queued after all if the queue knows the id.
        const queued = engine.queue.get(entry.id);
        if (queued) {
          await idempotency.put(storeKey, { ...entry, state: 'queued', ...(queued.messageId ? { messageId: queued.messageId } : {}) });
          return { ID: entry.id, MessageID: queued.messageId ?? '' };
        }
      }
      const attempt = (async () => {
        const response = await run((queueId) => idempotency.put(storeKey, { fingerprint, id: queueId, state: 'pending', at: now() }));
        try {
          await idempotency.put(storeKey, { fingerprint, id: response.ID, messageId: response.MessageID, state: 'queued', at: now() });
        } catch (err) {
          // The message is queued: the answer is 200. The pending record still finds it in the queue on a retry.
          options.log(`api: cannot record Idempotency-Key ${idempotencyKey}: ${(err as Error).message}`);
        }
        return response;
      })();
      inflight.set(storeKey, attempt);
      try {
        return await attempt;
      } finally {
        inflight.delete(storeKey);
      }
    }
  }

  function status(key: Key, queueId: string): ApiMessageStatus {
    const message = engine.queue.get(queueId);
    // Another key's message is as unknown as a missing one: its existence is not this key's business.
    if (!message || message.origin.kind !== 'api' || message.origin.apiKeyFingerprint !== key.fingerprint) {
      throw new ApiError(404, `no message ${queueId} sent with this API key (a finished message is remembered for a while only)`);
    }
    return {
      ID: message.queueId,
      MessageID: message.messageId ?? '',
      Recipients: engine.view(message).recipients.map((r) => ({ Address: r.address, State: STATES[r.state], ...(r.lastReply ? { LastReply: r.lastReply } : {}), Attempts: r.attempts })),
    };
  }

  async function handle(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    const method = req.method ?? 'GET';
    const pathname = new URL(req.url ?? '/', 'http://api.invalid').pathname;
    let key: Key | undefined;
    const seen: { from?: string } = {};
    try {
      const statusId = /^\/api\/v1\/messages\/([^/]+)$/.exec(pathname)?.[1];
      const allowed = pathname === '/api/v1/send' || pathname === '/api/v1/send/raw' ? 'POST' : statusId !== undefined ? 'GET' : undefined;
      if (!allowed) throw new ApiError(404, `no such endpoint: ${pathname} (POST /api/v1/send, POST /api/v1/send/raw, GET /api/v1/messages/{ID})`);
      if (method !== allowed) throw new ApiError(405, `${pathname} takes ${allowed}, not ${method}`, { Allow: allowed });
      key = authenticate(req);
      if (statusId !== undefined) return reply(res, 200, status(key, decodePathSegment(statusId)));
      const body = await readBody(req);
      const raw = pathname === '/api/v1/send/raw';
      const idempotencyKey = req.headers['idempotency-key'];
      const sendKey = key;
      const response =
        typeof idempotencyKey === 'string'
          ? await idempotent(key, idempotencyKey, sha256(Buffer.concat([Buffer.from(`${pathname}\n`), body])).toString('hex'), (reserve) => send(req, sendKey, raw, body, reserve, seen))
          : await send(req, key, raw, body, async () => undefined, seen);
      reply(res, 200, response);
    } catch (err) {
      if (err instanceof ApiError) {
        if (err.status < 500) events.emit({ kind: 'api-rejected', detail: { status: err.status, error: err.message, method, path: pathname, client: clientOf(req), ...(key ? { apiKey: key.id } : {}), ...(seen.from ? { from: seen.from } : {}) } });
        return reply(res, err.status, { Error: err.message }, err.headers);
      }
      options.log(`api: ${method} ${pathname}: ${(err as Error).stack ?? String(err)}`);
      events.emit({ kind: 'error', detail: { service: 'api', error: `${method} ${pathname}: ${(err as Error).message}` } });
      reply(res, 500, { Error: `internal error: ${(err as Error).message}` });
    }
  }

  const serverOptions: http.ServerOptions = { headersTimeout: HEADERS_TIMEOUT_MS, requestTimeout: REQUEST_TIMEOUT_MS, keepAliveTimeout: KEEP_ALIVE_MS };
  const onRequest = (req: http.IncomingMessage, res: http.ServerResponse) => void handle(req, res);
  const server = config.tls ? https.createServer({ ...serverOptions, ...tlsServerOptions(config.tls) }, onRequest) : http.createServer(serverOptions, onRequest);
  server.on('error', (err) => options.log(`api: ${err.message}`));
  // A handshake that fails (a client that does not trust the CA) is the client's business, not an error of the node.
  server.on('tlsClientError', () => undefined);

  return {
    server,
    idempotency,
    open: () => idempotency.open(),
    port: () => (server.address() as net.AddressInfo).port,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}

/** A path segment, percent-decoding undone; a malformed escape (`%zz`) is the client's mistake (400), not ours. */
function decodePathSegment(segment: string): string {
  try {
    return decodeURIComponent(segment);
  } catch {
    throw new ApiError(400, `the path segment ${JSON.stringify(segment)} is not valid percent-encoding`);
  }
}

/** Recipients once each (case-insensitively), in the order given. */
function dedupe(addresses: string[]): string[] {
  return [...new Map(addresses.map((a) => [a.toLowerCase(), a])).values()];
}

function reply(res: http.ServerResponse, status: number, body: ApiSendResponse | ApiMessageStatus | ApiErrorBody, headers: Record<string, string> = {}): void {
  const text = JSON.stringify(body);
  res.writeHead(status, { 'Content-Type': 'application/json; charset=utf-8', 'Content-Length': Buffer.byteLength(text), 'Cache-Control': 'no-store', ...headers });
  res.end(text);
}
