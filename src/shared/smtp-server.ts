// smtp-server with our greeting delay. smtp-server waits a hard-coded 100 ms before every greeting to catch
// early talkers; in a lab that is pure latency on every connection. We keep the check available as a setting.
// Also what every SMTP server of the lab needs from its connections: a limit of concurrent connections per client
// address (421 4.7.0 at the greeting), smtp-server's refusal of SIZE= with our enhanced code, and readMessage(), which
// reads DATA keeping nothing past the size limit and hangs up on a client far past it (552 5.3.4).
import { SMTPServer, type SMTPServerDataStream, type SMTPServerOptions, type SMTPServerSession } from 'smtp-server';
import type { SmtpReply } from './smtp-reply.js';
import { SMTPConnection } from 'smtp-server/lib/smtp-connection.js';
import net from 'node:net';
import type { TlsConfig } from './config.js';
import { minTlsVersion, tlsInfo, type TlsInfo } from './tls-session.js';

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
}

class LabSmtpServer extends SMTPServer {
  constructor(private readonly labOptions: LabSmtpServerOptions) {
    // Always: never reverse-resolve clients through the system resolver (the lab has its own DNS).
    super({ ...labOptions, disableReverseLookup: true });
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
    connection.send = (code: number, data: unknown, context?: unknown) => {
      if (authNeedsTls && !connection.secure) {
        if (code === 538) {
          const text = '5.7.0 Must issue a STARTTLS command first';
          this.labOptions.onAuthNeedsTls?.(connection.session, `530 ${text}`);
          return send(530, text, false);
        }
        // The EHLO reply (the only multi-line 250): no AUTH line before TLS.
        if (code === 250 && Array.isArray(data)) return send(code, data.filter((line) => !/^AUTH\b/i.test(String(line))), context);
      }
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
      if (delay > 0) setTimeout(() => connection.connectionReady(), delay).unref();
      else connection.connectionReady();
    });
  }
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
  return { key: tls.key, cert: tls.cert, minVersion: minTlsVersion(tls), ...(implicit ? { secure: true } : {}) } as Partial<SMTPServerOptions>;
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
