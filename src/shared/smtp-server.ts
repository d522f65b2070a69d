// smtp-server with our greeting delay. smtp-server waits a hard-coded 100 ms before every greeting to catch
// early talkers; in a lab that is pure latency on every connection. We keep the check available as a setting.
// Also what every SMTP server of the lab needs from its connections: a limit of concurrent connections per client
// address (421 4.7.0 at the greeting), smtp-server's refusal of SIZE= with our enhanced code, and readMessage(), which
// reads DATA keeping nothing past the size limit and hangs up on a client far past it (552 5.3.4).
// And the node's SMTP fault rules (issue 15, smtp-faults.ts), applied here at the connection level so that every SMTP
// and LMTP server of the lab has them: at connect and at the greeting, at each command (EHLO/HELO/LHLO, STARTTLS, AUTH,
// MAIL, RCPT, DATA, QUIT) before its handler runs, and at the end of the data (after the final dot):
// - `reply`: the command is answered with the rule's reply instead of running (a 421 closes the connection, RFC 5321
//   §3.8); at connect or greeting the reply replaces the 220 and the connection is closed; at end-of-data the message
//   is not processed at all (nothing is queued, handed off or stored) and the client gets the rule's reply. LMTP
//   (RFC 2033 §4.2) answers the data once per recipient: there the rule's reply answers every recipient of the
//   transaction, whichever recipient it matched, since the message was processed for none of them.
// - `delay`: the command (or, at end-of-data, the processing of the message) waits that long; a client that goes
//   away meanwhile finds nothing done for the command (at an MX, a hand-off whose sender left is abandoned).
// - `drop`: `before-reply` closes the connection without answering; at end-of-data the message has been processed
//   (queued, handed off, stored) and only the 250 is lost: the client will send it again, a duplicate (RFC 5321 §6.1).
//   `after-reply` answers, then closes (at AUTH, after the final 235/5xx, not after a 334 challenge).
// At QUIT a `reply` replaces the 221 and the connection is closed all the same (RFC 5321 §4.1.1.10).
import { SMTPServer, type SMTPServerDataStream, type SMTPServerOptions, type SMTPServerSession } from 'smtp-server';
import type { SmtpReply } from './smtp-reply.js';
import { SMTPConnection } from 'smtp-server/lib/smtp-connection.js';
import net from 'node:net';
import type { TlsConfig } from './config.js';
import { serverKeyOptions, tlsInfo, type TlsInfo } from './tls-session.js';
import { Transform } from 'node:stream';
import type { FaultFired, SmtpFaultStage } from './faults.js';
import { messageIdOf } from './headers.js';
import { smtpReply as replyError } from './smtp-reply.js';
import { SmtpFaults, type SmtpFaultContext, type SmtpFaultDecision } from './smtp-faults.js';

export interface LabSmtpServerOptions extends SMTPServerOptions {
  /** Milliseconds to wait before the greeting; a client that talks earlier is refused (RFC 5321 §4.3.1). */
  greetingDelayMs: number;
  /**
   * Concurrent connections one client address may hold; a connection past it is greeted with
   * `421 4.7.0 Too many connections from <ip>` and closed. Absent: no limit.
   */
  maxConnectionsPerClient?: number;
  /** Told of every connection refused by maxConnectionsPerClient, with the reply it got (for a `rejected` event). */
  onConnectionRefused?(remoteAddress: string, reply: string): void;
  /** Told of a MAIL FROM refused by smtp-server because its SIZE= is over `size`, with the reply it got. */
  onSizeRefused?(session: SMTPServerSession, reply: string): void;
  /**
   * AUTH only over TLS (RFC 8314 §4.2, RFC 3207 §4): before STARTTLS, EHLO does not list AUTH (RFC 4954 §4 lets a
   * server hide mechanisms it would not accept now, as Postfix's smtpd_tls_auth_only does) and AUTH gets
   * `530 5.7.0 Must issue a STARTTLS command first` (RFC 3207 §4; smtp-server's own is a non-standard 538).
   * Only meaningful with STARTTLS offered and allowInsecureAuth off.
   */
  authNeedsTls?: boolean;
  /** Told of an AUTH refused because the connection has no TLS yet (authNeedsTls), with the reply it got. */
  onAuthNeedsTls?(session: SMTPServerSession, reply: string): void;
  /** The node's SMTP fault rules (issue 15), shared by all its servers; absent: none. */
  faults?: SmtpFaults;
  /** Told of every fault rule that fired (the role emits a `fault` event); `messageId` once the data has been read. */
  onFault?(fired: FaultFired, messageId?: string): void;
  /**
   * The hop a fault changed, named as the role's events name hops. Default: `<EHLO name> -> <name>[<address>]:<port>`,
   * which is how the sending MTA names the same hop (`mta.sender.test -> mx.receiver.test[127.0.0.7]:25`).
   */
  faultHop?(session: SMTPServerSession): string;
}

/** The fault stage of a command (none for RSET, NOOP, ... and AUTH continuation lines). */
const COMMAND_STAGES: Record<string, SmtpFaultStage> = { EHLO: 'ehlo', HELO: 'ehlo', LHLO: 'ehlo', STARTTLS: 'starttls', AUTH: 'auth', MAIL: 'mail', RCPT: 'rcpt', DATA: 'data', QUIT: 'quit' };
/** A reply text that already carries its enhanced status code (RFC 3463): smtp-server must not add another. */
const HAS_ENHANCED_CODE = /^[245]\.\d{1,3}\.\d{1,3} /;
/** How long the first header bytes of a message are looked at for its Message-ID (for the `fault` event). */
const HEADER_SNIFF_BYTES = 64 * 1024;

class LabSmtpServer extends SMTPServer {
  constructor(private readonly labOptions: LabSmtpServerOptions) {
    // Always: never reverse-resolve clients through the system resolver (the lab has its own DNS).
    super({ ...labOptions, disableReverseLookup: true });
    // smtp-server sets the role's handlers on the instance: the end-of-data faults go around the role's onData.
    const roleOnData = this.onData.bind(this);
    this.onData = (stream, session, callback) => this.dataWithFaults(roleOnData, stream, session, callback);
  }

  // Same as SMTPServer#connect, but with our delay before connectionReady().
  override connect(socket: net.Socket, socketOptions: unknown) {
    const connection: any = new (SMTPConnection as any)(this, socket, socketOptions);
    const self: any = this;
    self.connections.add(connection);
    connection.on('error', (err: Error) => self._onError(err));
    // smtp-server's own refusal of a SIZE= over the limit carries no enhanced code (ENHANCEDSTATUSCODES is not
    // advertised): give it ours, as the refusal at the end of DATA has, and tell the role (for a `rejected` event).
    const send = connection.send.bind(connection);
    const authNeedsTls = this.labOptions.authNeedsTls === true;
    const faults = this.labOptions.faults;
    connection.send = (code: number, data: unknown, context?: unknown) => {
      // A `drop after-reply` fault: this reply goes out, then the connection is closed. A 334 is not the reply but a
      // challenge within the AUTH exchange (RFC 4954 §4): the drop waits for its final 235 or 5xx.
      if (connection.__dropAfterReply && code !== 334) {
        connection.__dropAfterReply = false;
        labSend(code, data, context);
        return connection.close();
      }
      return labSend(code, data, context);
    };
    const labSend = (code: number, data: unknown, context?: unknown) => {
      if (authNeedsTls && !connection.secure) {
        if (code === 538) {
          const text = '5.7.0 Must issue a STARTTLS command first';
          this.labOptions.onAuthNeedsTls?.(connection.session, `530 ${text}`);
          return send(530, text, false);
        }
        // The EHLO reply (the only multi-line 250): no AUTH line before TLS.
        if (code === 250 && Array.isArray(data)) return send(code, data.filter((line) => !/^AUTH\b/i.test(String(line))), context);
      }
      // A reply that carries its own enhanced code (a fault rule's, our refusals) gets no second one from smtp-server.
      if (typeof data === 'string' && HAS_ENHANCED_CODE.test(data) && context !== false) return send(code, data, false);
      if (context !== 'MESSAGE_TOO_BIG') return send(code, data, context);
      const text = `5.3.4 message exceeds the size limit of ${this.labOptions.size} octets (declared with SIZE=)`;
      this.labOptions.onSizeRefused?.(connection.session, `${code} ${text}`);
      return send(code, text, false);
    };
    connection.on('connect', (data: unknown) => self._onClientConnect(data));
    const delay = this.labOptions.greetingDelayMs;
    connection._setListeners(() => {
      if (self.options.maxClients && self.connections.size > self.options.maxClients) {
        return connection.send(421, connection.name + ' Too many connected clients, try again in a moment', false);
      }
      const perClient = this.labOptions.maxConnectionsPerClient;
      if (perClient !== undefined) {
        const from: string = connection.remoteAddress;
        let count = 0;
        for (const other of self.connections) if (other.remoteAddress === from) count++;
        if (count > perClient) {
          const text = `4.7.0 Too many connections from ${from}, try again later`;
          this.labOptions.onConnectionRefused?.(from, `421 ${text}`);
          return connection.send(421, text, false); // a 421 closes the connection
        }
      }
      const ready = () => {
        if (delay > 0) setTimeout(() => connection.connectionReady(), delay).unref();
        else connection.connectionReady();
      };
      if (!faults) return ready();
      const decision = this.decide(connection, 'connect');
      if (!decision) return ready();
      applyBeforeReply(connection, decision.effect, ready, () => connection.close());
    });
    if (faults) this.installFaults(connection, faults);
  }

  /** The fault rules at the greeting and at each command of a connection. */
  private installFaults(connection: any, faults: SmtpFaults): void {
    const greet = connection._sendGreeting.bind(connection);
    connection._sendGreeting = () => {
      const decision = this.decide(connection, 'greeting');
      if (!decision) return greet();
      applyBeforeReply(connection, decision.effect, greet, () => connection.close());
    };
    const onCommand = connection._onCommand.bind(connection);
    connection._onCommand = (command: Buffer, callback?: () => void) => {
      const name = (command || '').toString().split(' ')[0]!.toUpperCase();
      const stage = connection._nextHandler || connection._upgrading ? undefined : COMMAND_STAGES[name];
      if (!stage || !faults.has(stage)) return onCommand(command, callback);
      const decision = this.decide(connection, stage, command.toString());
      if (!decision) return onCommand(command, callback);
      const done = () => connection._whenWritable(callback ?? (() => false));
      // A refused command leaves the session open (but a 421, which closes it, RFC 5321 §3.8). QUIT ends the session
      // whatever it is answered (RFC 5321 §4.1.1.10): the rule's reply replaces the 221, then the connection closes.
      const closeAfterReply = stage === 'quit' ? () => connection.close() : () => undefined;
      applyBeforeReply(connection, decision.effect, () => onCommand(command, callback), closeAfterReply, done);
    };
  }

  /**
   * The rule that fires at this point of the connection, if any. A fired rule is told to the role at once, or, with
   * `later`, when the returned `report` is called (a drop at end-of-data is told when it happens, after the processing).
   */
  private decide(connection: any, stage: SmtpFaultStage, command?: string, messageId?: string, later = false): (SmtpFaultDecision & { report(): void }) | undefined {
    const faults = this.labOptions.faults;
    if (!faults?.has(stage)) return undefined;
    const context = faultContext(connection, stage, command);
    const decision = faults.decide(context);
    if (!decision) return undefined;
    const hop = this.labOptions.faultHop?.(connection.session) ?? defaultHop(connection, this.labOptions.name);
    const report = () => this.labOptions.onFault?.(SmtpFaults.fired(decision, context, hop), messageId);
    if (!later) report();
    return { ...decision, report };
  }

  /**
   * End-of-data faults: the message goes to the role through a gate that, once the final dot has arrived, asks the
   * rules. `delay` holds the end of the data back (the role starts processing later); `reply` fails the stream, so the
   * role processes nothing, and answers with the rule's reply; `drop` lets the role process the message, then closes
   * the connection before (or after) its reply.
   */
  private dataWithFaults(role: SMTPServer['onData'], stream: SMTPServerDataStream, session: SMTPServerSession, callback: (err?: Error | null, message?: any) => void): void {
    if (!this.labOptions.faults?.has('end-of-data')) return role(stream, session, callback);
    const connection = connectionOf(this, session);
    if (!connection) return role(stream, session, callback);
    let decision: ReturnType<LabSmtpServer['decide']>;
    let header = Buffer.alloc(0);
    const gate = new Transform({
      transform(chunk: Buffer, _encoding, next) {
        if (header.length < HEADER_SNIFF_BYTES) header = Buffer.concat([header, chunk.subarray(0, HEADER_SNIFF_BYTES - header.length)]);
        next(null, chunk);
      },
      flush: (next) => {
        // A drop is recorded when it happens, once the message has been processed.
        decision = this.decide(connection, 'end-of-data', undefined, messageIdOf(header), true);
        const effect = decision?.effect;
        if (effect?.kind !== 'drop') decision?.report();
        if (effect?.kind === 'reply') return next(new Error(`refused by fault rule ${decision!.rule.id}`));
        if (effect?.kind !== 'delay') return next();
        // The client may give up meanwhile: the role then processes at once, finding its client gone.
        const socket: net.Socket = connection._socket;
        let finished = false;
        const finish = () => {
          if (finished) return;
          finished = true;
          clearTimeout(timer);
          socket.removeListener('close', finish);
          next();
        };
        const timer = setTimeout(finish, effect.ms);
        socket.once('close', finish);
      },
    });
    // What readMessage() reads of the stream besides its data.
    Object.defineProperty(gate, 'sizeExceeded', { get: () => stream.sizeExceeded });
    Object.defineProperty(gate, 'byteLength', { get: () => stream.byteLength });
    stream.pipe(gate);
    role(gate as unknown as SMTPServerDataStream, session, (err, message) => {
      const effect = decision?.effect;
      if (effect?.kind === 'reply') return callback(replyError(effect.code, effect.text));
      if (effect?.kind === 'drop' && effect.when === 'before-reply') {
        decision!.report();
        dropConnection(connection);
        return callback(err, message);
      }
      callback(err, message);
      if (effect?.kind === 'drop') {
        decision!.report();
        connection.close();
      }
    });
  }
}

/**
 * Applies a fault before the server's own handling: `reply` sends the rule's reply instead (then `closeAfterReply`
 * unless it is a 421, which closes by itself, and then `done`: the next command may come); `delay` runs `proceed` later; `drop` closes the
 * connection, before `proceed` or after its reply.
 */
function applyBeforeReply(connection: any, effect: SmtpFaultDecision['effect'], proceed: () => void, closeAfterReply: () => void, done?: () => void): void {
  const socket: net.Socket = connection._socket;
  switch (effect.kind) {
    case 'reply':
      connection.send(effect.code, effect.text, false);
      if (effect.code !== 421) closeAfterReply();
      return done?.();
    case 'delay':
      return void setTimeout(() => (socket.destroyed ? done?.() : proceed()), effect.ms);
    case 'drop':
      if (effect.when === 'before-reply') return dropConnection(connection);
      connection.__dropAfterReply = true;
      return proceed();
  }
}

/** Closes a connection at once, answering nothing more and reading nothing more. */
function dropConnection(connection: any): void {
  const socket: net.Socket = connection._socket;
  if (connection._parser) {
    socket.unpipe(connection._parser);
    connection._parser.isClosed = true;
  }
  socket.destroy();
}

/** What the rules see of a connection at a stage; `command` is the command line being answered. */
function faultContext(connection: any, stage: SmtpFaultStage, command?: string): SmtpFaultContext {
  const envelope: SMTPServerSession['envelope'] | undefined = connection.session?.envelope;
  const client = String(connection.remoteAddress ?? '').replace(/^::ffff:(?=\d+\.)/, '');
  const argument = command ? /^\s*(?:MAIL\s+FROM|RCPT\s+TO)\s*:\s*<([^>]*)>/i.exec(command)?.[1] : undefined;
  const mailFrom = envelope?.mailFrom ? envelope.mailFrom.address : undefined;
  const context: SmtpFaultContext = { stage, client };
  if (stage === 'mail') {
    if (argument !== undefined) context.sender = argument;
  } else if (mailFrom !== undefined) context.sender = mailFrom;
  if (stage === 'rcpt') context.recipients = argument !== undefined ? [argument] : [];
  else if (envelope?.rcptTo.length) context.recipients = envelope.rcptTo.map((r) => r.address);
  return context;
}

function defaultHop(connection: any, name: string | undefined): string {
  const helo = connection.session?.hostNameAppearsAs || `[${String(connection.remoteAddress).replace(/^::ffff:(?=\d+\.)/, '')}]`;
  return `${helo} -> ${name ?? 'unknown'}[${connection.localAddress}]:${connection.localPort}`;
}

function connectionOf(server: SMTPServer, session: SMTPServerSession): any {
  const connections: Set<any> = (server as any).connections;
  for (const connection of connections) if (connection.session === session) return connection;
  return undefined;
}

/**
 * Octets past the size limit that are read and dropped, so that a client slightly over the limit gets its `552` at
 * the end of its data as usual. A client that goes on past it is answered at once and disconnected: every octet
 * read, even if dropped, is a buffer for the garbage collector, which lets tens of MiB pile up before it runs.
 */
export const OVERSIZE_GRACE = 1024 * 1024;
/** How long a disconnected oversize client has to read its `552` before the socket is destroyed. */
const HANG_UP_LINGER_MS = 1000;

/**
 * Reads a message's DATA stream keeping at most `limit` octets (the server's `size`): memory stays at about the
 * limit whatever the client sends. Over the limit, `tooBig()` (called once) gives the refusal, which is thrown; past
 * limit + OVERSIZE_GRACE it is also sent at once and the connection closed, without reading further.
 */
export async function readMessage(server: SMTPServer, stream: SMTPServerDataStream, session: SMTPServerSession, limit: number, tooBig: () => SmtpReply): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const chunk of stream) {
    if (!stream.sizeExceeded) chunks.push(chunk as Buffer);
    else if (chunks.length) chunks.length = 0; // over the limit: what was kept is of no use any more
    if (stream.byteLength > limit + OVERSIZE_GRACE) {
      const reply = tooBig();
      hangUp(server, session, reply);
      throw reply;
    }
  }
  if (stream.sizeExceeded) throw tooBig();
  return Buffer.concat(chunks);
}

/** Sends `reply` on the session's connection and closes it, reading nothing more from the client. */
function hangUp(server: SMTPServer, session: SMTPServerSession, reply: SmtpReply): void {
  const connections: Set<any> = (server as any).connections;
  const connection = [...connections].find((c) => c.session === session);
  if (!connection) return;
  const socket: net.Socket = connection._socket;
  if (connection._parser) {
    socket.unpipe(connection._parser);
    connection._parser.isClosed = true;
  }
  socket.pause();
  // The reply goes out before the FIN; smtp-server's own reply to the failed DATA then finds the socket ended.
  connection.send(reply.responseCode, reply.message);
  socket.end();
  setTimeout(() => socket.destroy(), HANG_UP_LINGER_MS).unref();
}

/** The TLS version and cipher of the connection `session` belongs to, null when it is plaintext (or gone). */
export function sessionTls(server: SMTPServer, session: SMTPServerSession): TlsInfo | null {
  const connections: Set<any> = (server as any).connections;
  for (const connection of connections) if (connection.session === session) return tlsInfo(connection._socket);
  return null;
}

/**
 * The TLS options of an SMTP server of a node with `tls`: STARTTLS offered (RFC 3207) with the node's certificate and
 * TLS 1.2 at least, or implicit TLS (`implicit`, RFC 8314 port 465). Without `tls`: STARTTLS disabled, as before.
 */
export function smtpTlsOptions(tls: TlsConfig | undefined, implicit = false): Partial<SMTPServerOptions> {
  if (!tls) return { hideSTARTTLS: true };
  return { ...serverKeyOptions(tls), ...(implicit ? { secure: true } : {}) } as Partial<SMTPServerOptions>;
}

export function createSmtpServer(options: LabSmtpServerOptions): SMTPServer {
  return new LabSmtpServer(options);
}

/** Listens on host:port and resolves once bound; rejects with a message naming the service. */
export function listen(server: { listen: (...args: any[]) => unknown; once: (e: string, f: (err: Error) => void) => unknown }, host: string, port: number, service: string): Promise<void> {
  return new Promise((resolve, reject) => {
    server.once('error', (err: Error) => reject(new Error(`cannot listen for ${service} on ${host}:${port}: ${err.message}`)));
    server.listen(port, host, () => resolve());
  });
}
