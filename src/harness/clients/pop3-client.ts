// A small POP3 client (RFC 1939, RFC 2449 CAPA): what a phone's "download mail" does, command by command.
import type { Endpoint } from '../../shared/config.js';
import { LineClient, type Pop3Response } from './line-client.js';

/** A -ERR reply (the connection is fine; the server said no). Timeouts and closes are LineClientErrors. */
export class Pop3Error extends Error {
  override name = 'Pop3Error';
}

export class Pop3Client {
  private client?: LineClient;

  constructor(
    readonly endpoint: Endpoint,
    private readonly timeoutMs = 5000,
    /** STLS (RFC 2595) right after the greeting, verifying the server against the lab CA under its host name. */
    private readonly tls?: { ca: string; servername: string },
  ) {}

  /** Connects (and upgrades to TLS when asked) and returns the greeting. */
  async connect(): Promise<string> {
    this.client = await LineClient.connect(this.endpoint, { name: 'POP3', timeoutMs: this.timeoutMs });
    const greeting = this.expectOk('(greeting)', await this.client.pop3Response()).status;
    if (this.tls) {
      await this.command('STLS');
      this.client = await this.client.startTls(this.tls);
    }
    return greeting;
  }

  private expectOk(command: string, response: Pop3Response): Pop3Response {
    if (!response.ok) throw new Pop3Error(`POP3 ${this.endpoint.host}:${this.endpoint.port}: ${command} → ${response.status}`);
    return response;
  }

  /** Sends one command; multi-line replies come back dot-unstuffed without the terminating line. */
  async command(line: string, multiline = false): Promise<Buffer> {
    const client = this.client;
    if (!client) throw new Pop3Error(`POP3 ${this.endpoint.host}:${this.endpoint.port}: not connected (${line.split(' ')[0]})`);
    const label = line.startsWith('PASS') ? 'PASS ****' : line;
    client.send(line, label);
    const response = this.expectOk(label, await client.pop3Response({ multiline }));
    return multiline ? (response.body ?? Buffer.alloc(0)) : Buffer.from(response.status, 'latin1');
  }

  async login(user: string, password: string): Promise<void> {
    await this.command(`USER ${user}`);
    await this.command(`PASS ${password}`);
  }

  async stat(): Promise<{ count: number; size: number }> {
    const [, count, size] = (await this.command('STAT')).toString('latin1').split(' ');
    return { count: Number(count), size: Number(size) };
  }

  /** Message numbers with their UIDL. */
  async uidl(): Promise<{ number: number; uid: string }[]> {
    return (await this.listing('UIDL')).map(([number, uid]) => ({ number, uid }));
  }

  async list(): Promise<{ number: number; size: number }[]> {
    return (await this.listing('LIST')).map(([number, size]) => ({ number, size: Number(size) }));
  }

  /** A multi-line listing of `<message number> <value>` lines (RFC 1939 LIST, UIDL). */
  private async listing(command: string): Promise<[number, string][]> {
    const body = (await this.command(command, true)).toString('latin1');
    return body
      .split('\r\n')
      .filter(Boolean)
      .map((line) => {
        const [number, value] = line.split(' ');
        return [Number(number), value ?? ''];
      });
  }

  retr(number: number): Promise<Buffer> {
    return this.command(`RETR ${number}`, true);
  }

  async dele(number: number): Promise<void> {
    await this.command(`DELE ${number}`);
  }

  /** QUIT: the server enters UPDATE and removes what was marked deleted. */
  async quit(): Promise<void> {
    await this.command('QUIT');
    this.client?.end();
  }

  /** Drops the connection without QUIT (a lost signal): nothing marked deleted is removed. */
  drop(): void {
    this.client?.close();
  }
}
