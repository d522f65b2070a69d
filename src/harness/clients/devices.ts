// Device-shaped mail clients: a phone or a laptop with its own local copy of the mail, so a scenario can say
// "read it on the phone", "the laptop deletes it", "the phone is lost". IMAP devices sync over imapflow and
// hear changes by IDLE; POP3 devices download (and by default delete) with our POP3 client.
import { EventEmitter } from 'node:events';
import { ImapFlow } from 'imapflow';
import MailComposer from 'nodemailer/lib/mail-composer';
import type { Endpoint } from '../../shared/config.js';
import { messageIdOf } from '../../shared/headers.js';
import type { HarnessEvents } from '../events.js';
import type { History } from '../history/history.js';
import { Pop3Client } from './pop3-client.js';

export interface LocalMessage {
  uid: number;
  messageId?: string;
  subject?: string;
  flags: Set<string>;
  /** The full message, once downloaded. */
  source?: Buffer;
}

/** Waits until `test()` holds, re-checking on every `change` of `emitter`; fails loudly after `timeoutMs`. */
function waitUntil<T>(emitter: EventEmitter, test: () => T | undefined | false, timeoutMs: number, what: string, state: () => string): Promise<T> {
  const first = test();
  if (first) return Promise.resolve(first);
  return new Promise((resolve, reject) => {
    const check = () => {
      const value = test();
      if (value) {
        clearTimeout(timer);
        emitter.off('change', check);
        resolve(value);
      }
    };
    const timer = setTimeout(() => {
      emitter.off('change', check);
      reject(new Error(`timed out after ${timeoutMs} ms waiting until ${what}\n${state()}`));
    }, timeoutMs);
    emitter.on('change', check);
  });
}

export interface ImapDeviceOptions {
  endpoint: Endpoint;
  user: string;
  password: string;
  device: string;
  /** Where device events are recorded (node `<user>/<device>`), so they show in traces. */
  history?: History;
  /** Submits a raw message for the user (the lab's SMTP submission). */
  submit?: (raw: Buffer, envelope: { from: string; to: string[] }) => Promise<void>;
  /** STARTTLS, verifying the server against the lab CA under its host name (absent: plaintext). */
  tls?: ClientTls;
}

/** How a harness client verifies a lab server: the lab CA, and the name the server's certificate carries. */
export interface ClientTls {
  ca: string;
  servername: string;
}

/** imapflow's connection options for a lab IMAP server: STARTTLS required when `tls` is given. */
function imapConnection(options: ImapDeviceOptions) {
  return {
    host: options.endpoint.host,
    port: options.endpoint.port,
    secure: false,
    ...(options.tls ? { doSTARTTLS: true, tls: { ca: options.tls.ca, servername: options.tls.servername } } : { doSTARTTLS: false }),
    auth: { user: options.user, pass: options.password },
    logger: false as const,
  };
}

/** An IMAP device: keeps INBOX in sync (IDLE) and acts on the server the way a mail app does. */
export class ImapDevice extends EventEmitter {
  readonly inbox = new Map<number, LocalMessage>();
  private client: ImapFlow;
  private syncing: Promise<void> = Promise.resolve();
  /** INBOX's UIDVALIDITY the local copy belongs to (RFC 3501 §2.3.1.1): UIDs of another one name other messages. */
  private uidValidity?: bigint;
  /** Set by cut(): the session was ended on purpose and the device stays offline until reconnect(). */
  private offline = false;
  private reconnects = 0;

  constructor(private readonly options: ImapDeviceOptions) {
    super();
    this.client = this.newClient();
  }

  private newClient(): ImapFlow {
    const client = new ImapFlow({
      ...imapConnection(this.options),
      // Keep IDLE going while the scenario runs: changes arrive as pushes, not by polling.
      maxIdleTime: 60_000,
      autoIdleDelay: 20,
      // A lab server answers at once or not at all (stopped, paused, partitioned): fail within seconds, not minutes.
      connectionTimeout: 5000,
      greetingTimeout: 5000,
    });
    client.on('error', () => undefined);
    return client;
  }

  get name(): string {
    return `${this.options.user}/${this.options.device}`;
  }

  async connect(): Promise<this> {
    await this.open(this.client);
    await this.resync();
    return this;
  }

  /** Logs `client` in and selects INBOX; its pushes (new mail, flags, expunge) trigger resyncs of the local copy. */
  private async open(client: ImapFlow): Promise<void> {
    await client.connect();
    const mailbox = await client.mailboxOpen('INBOX');
    if (this.uidValidity !== undefined && mailbox.uidValidity !== this.uidValidity) {
      // Another UIDVALIDITY: the local UIDs name nothing on the server any more, the copy starts over.
      for (const [uid, local] of this.inbox) this.record('device-removed', local.messageId, { uid });
      this.inbox.clear();
    }
    this.uidValidity = mailbox.uidValidity;
    for (const event of ['exists', 'expunge', 'flags']) client.on(event, () => this.client === client && this.resync());
    client.once('close', () => {
      if (this.client === client && !this.offline) this.record('device-offline', undefined, { reason: 'the IMAP session ended (server or network)' });
    });
  }

  /**
   * The device is cut off (airplane mode, a dead network): its IMAP session is dropped without LOGOUT and it hears
   * nothing more; its local copy stays as it was, stale, until reconnect(). Unlike lose(), nothing is forgotten.
   */
  cut(): void {
    if (this.offline) return;
    this.offline = true;
    this.record('device-offline', undefined, { reason: 'cut off' });
    this.client.close();
  }

  /**
   * Back online: a new IMAP session (LOGIN, SELECT INBOX, IDLE), then a full resync of the local copy against the
   * server: flags changed, messages expunged and new mail while it was away are all recorded as device events. Fails,
   * naming the device, when the server cannot be reached (the device stays offline; call it again).
   */
  async reconnect(): Promise<void> {
    await this.syncing.catch(() => undefined);
    const old = this.client;
    this.offline = true; // the old session's end is not news
    if (old.usable) old.close();
    const client = this.newClient();
    try {
      await this.open(client);
    } catch (err) {
      client.close();
      throw new Error(`IMAP device ${this.name}: cannot reconnect to ${this.options.endpoint.host}:${this.options.endpoint.port}: ${(err as Error).message}`);
    }
    this.client = client;
    this.offline = false;
    this.reconnects++;
    await this.resync();
    const exists = (client.mailbox && (client.mailbox as { exists: number }).exists) || 0;
    this.record('device-reconnected', undefined, { uidValidity: String(this.uidValidity), messages: exists, attempt: this.reconnects });
  }

  private record<K extends keyof HarnessEvents>(kind: K, messageId: string | undefined, detail: HarnessEvents[K]) {
    this.options.history?.record(this.name, kind, detail, { messageId });
  }

  /** Brings the local copy of INBOX in line with the server (UIDs, flags, Message-IDs). */
  resync(): Promise<void> {
    const pass = async () => {
      if (this.offline) return; // cut off: the local copy stays as it was
      const seen = new Set<number>();
      if (this.client.mailbox && (this.client.mailbox as { exists: number }).exists > 0) {
        for await (const msg of this.client.fetch('1:*', { uid: true, flags: true, envelope: true })) {
          seen.add(msg.uid);
          const local = this.inbox.get(msg.uid);
          const flags = new Set(msg.flags ?? []);
          if (!local) {
            const messageId = msg.envelope?.messageId;
            this.inbox.set(msg.uid, { uid: msg.uid, messageId, subject: msg.envelope?.subject, flags });
            this.record('device-synced', messageId, { uid: msg.uid, flags: [...flags] });
          } else if ([...flags].join() !== [...local.flags].join()) {
            local.flags = flags;
            this.record('device-flags', local.messageId, { uid: msg.uid, flags: [...flags] });
          }
        }
      }
      for (const [uid, local] of this.inbox) {
        if (!seen.has(uid)) {
          this.inbox.delete(uid);
          this.record('device-removed', local.messageId, { uid });
        }
      }
      this.emit('change');
    };
    // One pass at a time. A pass can fail when the mailbox changes under it (Dovecot answers BAD to FETCH 1:* on a
    // mailbox another session emptied meanwhile): it is tried once more while the session is up, and a failed pass
    // never blocks the later ones (each starts from a settled chain).
    this.syncing = this.syncing
      .catch(() => undefined)
      .then(pass)
      .catch(() => (this.client.usable ? pass() : undefined));
    return this.syncing.catch(() => undefined);
  }

  /** Whether the device's IMAP session is still up (false once the server said BYE or the connection went). */
  get connected(): boolean {
    return this.client.usable;
  }

  /**
   * A sync the user asked for (pull to refresh): a NOOP, then the resync. Unlike the pushed resyncs, it fails loudly
   * when the session is gone, naming the device.
   */
  async sync(): Promise<void> {
    try {
      await this.client.noop();
    } catch (err) {
      throw new Error(`IMAP device ${this.name}: cannot sync: ${(err as Error).message}${this.client.usable ? '' : ' (the session has ended)'}`);
    }
    if (!this.client.usable) throw new Error(`IMAP device ${this.name}: cannot sync: the session has ended`);
    await this.resync();
  }

  find(messageId: string): LocalMessage | undefined {
    return [...this.inbox.values()].find((m) => m.messageId === messageId);
  }

  private state(): string {
    const lines = [...this.inbox.values()].map((m) => `  uid ${m.uid} ${m.messageId} [${[...m.flags].join(' ')}] ${m.subject ?? ''}`);
    return `${this.name} INBOX:\n${lines.join('\n') || '  (empty)'}`;
  }

  /** Resolves with the local message once the device has it (pushed by IDLE). */
  waitForMessage(messageId: string, timeoutMs = 5000): Promise<LocalMessage> {
    return waitUntil(this, () => this.find(messageId), timeoutMs, `${this.name} has ${messageId}`, () => this.state());
  }

  waitForFlag(messageId: string, flag: string, present = true, timeoutMs = 5000): Promise<LocalMessage> {
    return waitUntil(
      this,
      () => {
        const m = this.find(messageId);
        return m && m.flags.has(flag) === present ? m : undefined;
      },
      timeoutMs,
      `${this.name} shows ${messageId} ${present ? 'with' : 'without'} ${flag}`,
      () => this.state(),
    );
  }

  waitForRemoval(messageId: string, timeoutMs = 5000): Promise<true> {
    return waitUntil(this, () => !this.find(messageId), timeoutMs, `${this.name} no longer has ${messageId}`, () => this.state());
  }

  /** Opens the message the way a mail app does: downloads it, which sets \Seen on the server. */
  async read(messageId: string): Promise<Buffer> {
    const local = this.find(messageId);
    if (!local) throw new Error(`${this.name} has no message ${messageId}\n${this.state()}`);
    const msg = await this.client.fetchOne(String(local.uid), { source: true }, { uid: true });
    if (!msg || !msg.source) throw new Error(`${this.name}: the server returned no source for uid ${local.uid}`);
    local.source = msg.source;
    await this.client.messageFlagsAdd(String(local.uid), ['\\Seen'], { uid: true });
    await this.resync();
    return msg.source;
  }

  /** Sets a flag on the message (\Flagged: "star it"), as the app's button does: UID STORE +FLAGS. */
  async flag(messageId: string, flag: string): Promise<void> {
    const local = this.find(messageId);
    if (!local) throw new Error(`${this.name} has no message ${messageId}\n${this.state()}`);
    await this.client.messageFlagsAdd(String(local.uid), [flag], { uid: true });
    await this.resync();
  }

  /** Deletes the message: \Deleted, then EXPUNGE (UID EXPUNGE), as "delete" does in most apps. */
  async delete(messageId: string): Promise<void> {
    const local = this.find(messageId);
    if (!local) throw new Error(`${this.name} has no message ${messageId}\n${this.state()}`);
    await this.client.messageDelete(String(local.uid), { uid: true });
    await this.resync();
  }

  /** Lists a folder on the server (Sent, Drafts...) with Message-IDs and flags. */
  async folder(path: string): Promise<{ uid: number; messageId?: string; flags: string[]; source: Buffer }[]> {
    const list: { uid: number; messageId?: string; flags: string[]; source: Buffer }[] = [];
    const status = await this.client.status(path, { messages: true });
    if (!status || !status.messages) return list;
    // FETCH on another folder: a second connection keeps INBOX selected (and IDLE) on this one.
    const other = new ImapFlow(imapConnection(this.options));
    await other.connect();
    try {
      const lock = await other.getMailboxLock(path, { readOnly: true });
      try {
        for await (const msg of other.fetch('1:*', { uid: true, flags: true, source: true })) {
          list.push({ uid: msg.uid, messageId: msg.source ? messageIdOf(msg.source) : undefined, flags: [...(msg.flags ?? [])], source: msg.source! });
        }
      } finally {
        lock.release();
      }
    } finally {
      await other.logout();
    }
    return list;
  }

  /** Composes, submits over SMTP, and appends the same bytes to Sent, as mail apps do. */
  async send(message: ConstructorParameters<typeof MailComposer>[0] & { to: string | string[] }): Promise<{ messageId: string; raw: Buffer }> {
    if (!this.options.submit) throw new Error(`${this.name} cannot send: no submission configured`);
    const raw = await new MailComposer({ from: this.options.user, ...message }).compile().build();
    const messageId = messageIdOf(raw)!;
    const to = (Array.isArray(message.to) ? message.to : [message.to]).map(String);
    await this.options.submit(raw, { from: this.options.user, to });
    await this.client.append('Sent', raw, ['\\Seen']);
    this.record('device-sent', messageId, { to });
    return { messageId, raw };
  }

  /** The device is lost: its connection and local copy are gone. */
  async lose(): Promise<void> {
    this.offline = true;
    this.inbox.clear();
    this.client.close();
  }

  async close(): Promise<void> {
    await this.syncing.catch(() => undefined);
    await this.client.logout().catch(() => this.client.close());
  }
}

export interface Pop3DeviceOptions {
  endpoint: Endpoint;
  user: string;
  password: string;
  device: string;
  /** "Leave a copy of messages on the server". Off by default, as in most POP3 clients. */
  keepCopy?: boolean;
  history?: History;
  /** STLS, verifying the server against the lab CA under its host name (absent: plaintext). */
  tls?: ClientTls;
}

/** A POP3 device: downloads new mail (by UIDL) into its local store, deleting it on the server unless keepCopy. */
export class Pop3Device {
  /** Local store: UIDL → message. */
  readonly local = new Map<string, Buffer>();

  constructor(private readonly options: Pop3DeviceOptions) {}

  get name(): string {
    return `${this.options.user}/${this.options.device}`;
  }

  /** One "check mail": returns the UIDLs downloaded this time. */
  async download(): Promise<string[]> {
    const client = new Pop3Client(this.options.endpoint, undefined, this.options.tls);
    await client.connect();
    const fresh: string[] = [];
    try {
      await client.login(this.options.user, this.options.password);
      for (const { number, uid } of await client.uidl()) {
        if (this.local.has(uid)) continue; // UIDL: already on this device
        const raw = await client.retr(number);
        this.local.set(uid, raw);
        fresh.push(uid);
        const messageId = messageIdOf(raw);
        this.options.history?.record(this.name, 'device-downloaded', { uidl: uid, size: raw.length }, { messageId });
        if (!this.options.keepCopy) await client.dele(number);
      }
      await client.quit();
    } catch (err) {
      client.drop();
      throw err;
    }
    return fresh;
  }

  messages(): { uidl: string; messageId?: string; raw: Buffer }[] {
    return [...this.local].map(([uidl, raw]) => ({ uidl, messageId: messageIdOf(raw), raw }));
  }

  find(messageId: string): Buffer | undefined {
    return this.messages().find((m) => m.messageId === messageId)?.raw;
  }

  /** The device is lost, and with it every message it downloaded. */
  lose(): void {
    this.local.clear();
  }
}
