// smtp-server with our greeting delay. smtp-server waits a hard-coded 100 ms before every greeting to catch
// early talkers; in a lab that is pure latency on every connection. We keep the check available as a setting.
import { SMTPServer, type SMTPServerOptions } from 'smtp-server';
import { SMTPConnection } from 'smtp-server/lib/smtp-connection.js';
import net from 'node:net';

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
