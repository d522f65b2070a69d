// Lab (a builder, like testcontainers' GenericContainer) and StartedLab (the handle a scenario drives).
import { randomBytes } from 'node:crypto';
import nodemailer, { type SendMailOptions } from 'nodemailer';
import type { DnsRecord, Endpoint, NodeConfig, RetryConfig, UserConfig } from '../shared/config.js';
import { ControlClient } from '../shared/control.js';
import { messageIdOf } from '../shared/headers.js';
import type { LabEvent } from '../shared/events.js';
import { ImapDevice, Pop3Device } from './clients/devices.js';
import { History, type EventMatcher } from './history/history.js';
import type { RunningNode, Runtime } from './runtime/types.js';
import type { DockerRunningNode } from './runtime/docker.js';
import { LocalRuntime } from './runtime/local.js';
import { planLab, type DomainDefinition, type HostDefinition, type LabDefinition, type MxTarget } from './topology.js';

export type RuntimeKind = 'local' | 'docker';

export class Lab {
  private definition: LabDefinition;
  private runtimeKind: RuntimeKind | 'auto' = (process.env.MAILLAB_RUNTIME as RuntimeKind | 'auto' | undefined) ?? 'local';

  constructor(definition: LabDefinition) {
    this.definition = structuredClone(definition);
  }

  withRuntime(kind: RuntimeKind | 'auto'): this {
    this.runtimeKind = kind;
    return this;
  }
  withRetry(retry: Partial<RetryConfig>): this {
    this.definition.retry = { ...this.definition.retry, ...retry };
    return this;
  }
  withUser(user: UserConfig): this {
    this.definition.users.push(user);
    return this;
  }
  withHost(name: string, host: HostDefinition): this {
    this.definition.hosts[name] = host;
    return this;
  }
  withDomain(domain: string, def: DomainDefinition): this {
    this.definition.domains[domain] = def;
    return this;
  }
  withMx(domain: string, mx: MxTarget[]): this {
    this.definition.domains[domain] = { ...this.definition.domains[domain], mx };
    return this;
  }
  /** How long the MTA waits for an MX to accept a connection. */
  withConnectTimeout(ms: number): this {
    this.definition.connectTimeoutMs = ms;
    return this;
  }
  withGreetingDelay(ms: number): this {
    this.definition.greetingDelayMs = ms;
    return this;
  }
  /** Any other change to the definition. */
  with(change: (definition: LabDefinition) => void): this {
    change(this.definition);
    return this;
  }

  async start(): Promise<StartedLab> {
    const runtime = await createRuntime(this.runtimeKind);
    const labId = `${this.definition.name}-${randomBytes(3).toString('hex')}`;
    const history = new History();
    const network = await runtime.prepare(this.definition, labId);
    const plan = planLab(this.definition, network);
    const lab = new StartedLab(labId, this.definition, runtime, plan.nodes, history);
    try {
      // Nodes need each other only when mail flows, never at start-up: start them all at once.
      await Promise.all(lab.nodes().map((node) => node.start()));
    } catch (err) {
      await lab.stop({ keepData: true });
      throw err;
    }
    return lab;
  }
}

async function createRuntime(kind: RuntimeKind | 'auto'): Promise<Runtime> {
  if (kind === 'local') return new LocalRuntime();
  if (kind !== 'docker' && kind !== 'auto') throw new Error(`unknown runtime "${kind}" (use local, docker or auto)`);
  // Loaded on demand: the local runtime never pays for testcontainers.
  const { createDockerRuntime } = await import('./runtime/docker.js');
  return createDockerRuntime(kind);
}

/** One node of a started lab: its endpoints, its control channel, and the faults a scenario can cause. */
export class NodeHandle {
  private running?: RunningNode;
  private control?: ControlClient;
  private stopStream?: () => void;

  constructor(
    readonly config: NodeConfig,
    private readonly runtime: Runtime,
    private readonly history: History,
  ) {}

  get name(): string {
    return this.config.name;
  }
  get role(): NodeConfig['role'] {
    return this.config.role;
  }
  get isRunning(): boolean {
    return this.running !== undefined;
  }
  /** Endpoints of the node's services as the harness reaches them. */
  get services(): Record<string, Endpoint> {
    if (!this.running) throw new Error(`node ${this.name} is not running`);
    return this.running.services;
  }
  service(name: string): Endpoint {
    const s = this.services[name];
    if (!s) throw new Error(`node ${this.name} has no service ${name} (it has ${Object.keys(this.services).join(', ')})`);
    return s;
  }

  async start(): Promise<void> {
    if (this.running) return;
    this.running = await this.runtime.startNode(this.config);
    this.control = new ControlClient(this.running.control, this.name);
    // The stream replays the node's events from its start, so nothing emitted before we connected is lost.
    this.lastSeq = 0;
    this.follow();
  }

  private lastSeq = 0;
  private follow(): void {
    this.stopStream?.();
    this.stopStream = this.control!.streamEvents(
      this.lastSeq,
      (e) => {
        this.lastSeq = e.seq;
        this.history.add(e);
      },
      () => undefined,
    );
  }

  private docker(fault: string): DockerRunningNode {
    if (!this.running) throw new Error(`node ${this.name} is not running: cannot ${fault}`);
    if (!('pause' in this.running)) throw new Error(`${fault} needs the docker runtime (node ${this.name} runs on ${this.runtime.kind})`);
    return this.running as DockerRunningNode;
  }

  /** Freezes the node (docker pause): its peers time out instead of being refused. */
  async pause(): Promise<void> {
    await this.docker('pause').pause();
  }
  async unpause(): Promise<void> {
    await this.docker('unpause').unpause();
  }
  /** A partition: the node leaves the lab network (and the harness loses it too until connect()). */
  async disconnect(): Promise<void> {
    await this.docker('disconnect').disconnect();
  }
  async connect(): Promise<void> {
    await this.docker('connect').connect();
    // The event stream broke with the partition: resume after the last event seen, losing nothing.
    this.follow();
  }

  /** Graceful stop: the node's clients get connection refused from now on. */
  async stop(): Promise<void> {
    await this.halt((r) => r.stop());
  }

  /** SIGKILL: no clean-up; the node's disk stays for the next start. */
  async kill(): Promise<void> {
    await this.halt((r) => r.kill());
  }

  async restart(): Promise<void> {
    await this.stop();
    await this.start();
  }

  private async halt(how: (r: RunningNode) => Promise<void>): Promise<void> {
    const running = this.running;
    if (!running) return;
    await how(running);
    this.stopStream?.();
    this.control?.close();
    this.running = undefined;
    this.control = undefined;
  }

  /** The node's own view of itself: name, role, pid, services. */
  async health() {
    if (!this.control) throw new Error(`node ${this.name} is not running`);
    return this.control.health();
  }

  /** A node-specific control operation (see each role's rpc table). */
  async call<T = unknown>(operation: string, args: unknown = {}): Promise<T> {
    if (!this.control) throw new Error(`node ${this.name} is not running: cannot call ${operation}`);
    return this.control.call<T>(operation, args);
  }
}

export interface SendOptions {
  to: string | string[];
  cc?: string | string[];
  subject?: string;
  text?: string;
  html?: string;
  headers?: Record<string, string>;
  attachments?: SendMailOptions['attachments'];
  messageId?: string;
  inReplyTo?: string;
  references?: string | string[];
  /** Send raw RFC 5322 bytes instead of composing. */
  raw?: string | Buffer;
  /** Envelope override. */
  envelope?: { from: string; to: string[] };
  /** Password to authenticate with; defaults to the user's own. */
  password?: string;
}

export interface SendResult {
  messageId: string;
  response: string;
  accepted: string[];
  rejected: string[];
}

export interface QueueEntry {
  queueId: string;
  messageId?: string;
  from: string;
  state: string;
  recipients: { address: string; state: string; attempts: number; lastError?: string; nextAttempt?: number }[];
}

export class StartedLab {
  private readonly handles = new Map<string, NodeHandle>();

  constructor(
    readonly id: string,
    readonly definition: LabDefinition,
    private readonly runtime: Runtime,
    configs: Record<string, NodeConfig>,
    readonly history: History,
  ) {
    for (const [name, config] of Object.entries(configs)) this.handles.set(name, new NodeHandle(config, runtime, history));
  }

  get runtimeKind(): RuntimeKind {
    return this.runtime.kind;
  }

  nodes(): NodeHandle[] {
    return [...this.handles.values()];
  }

  node(name: string): NodeHandle {
    const handle = this.handles.get(name);
    if (!handle) throw new Error(`lab ${this.definition.name} has no host ${name} (hosts: ${[...this.handles.keys()].join(', ')})`);
    return handle;
  }

  private byRole(role: NodeConfig['role']): NodeHandle {
    const found = this.nodes().find((n) => n.role === role);
    if (!found) throw new Error(`lab ${this.definition.name} has no ${role} host`);
    return found;
  }

  /** The lab DNS: edit records while the lab runs. */
  get dns() {
    const node = this.byRole('dns');
    return {
      node,
      records: () => node.call('records'),
      setRecords: (name: string, type: DnsRecord['type'], records: DnsRecord[]) => node.call('set-records', { name, type, records }),
      addRecord: (record: DnsRecord) => node.call('add-record', { record }),
      removeRecords: (name: string, type?: DnsRecord['type']) => node.call('remove-records', { name, type }),
      /** Points `domain`'s MX records at lab hosts (by host key) or host names. */
      setMx: (domain: string, targets: MxTarget[]) =>
        node.call('set-records', {
          name: domain,
          type: 'MX',
          records: targets.map((t) => ({ name: domain, type: 'MX', exchange: this.hostnameOf(t.host), priority: t.preference })),
        }),
    };
  }

  hostnameOf(host: string): string {
    return this.handles.get(host)?.config.hostname ?? host;
  }

  /** The sender MTA's queue. */
  mta(name?: string) {
    const node = name ? this.node(name) : this.byRole('mta');
    return {
      node,
      queue: () => node.call<QueueEntry[]>('queue'),
      flush: () => node.call('flush'),
      message: (queueId: string) => node.call<QueueEntry>('message', { queueId }),
    };
  }

  user(address: string): UserConfig {
    const user = this.definition.users.find((u) => u.address.toLowerCase() === address.toLowerCase());
    if (!user) throw new Error(`lab ${this.definition.name} has no user ${address}`);
    return user;
  }

  /** A mail client of `address`, submitting over SMTP (port 587, AUTH) to the MTA with nodemailer. */
  client(address: string, options: { mta?: string } = {}) {
    const user = this.user(address);
    const mta = () => (options.mta ? this.node(options.mta) : this.byRole('mta'));
    const send = async (message: SendOptions): Promise<SendResult> => {
      const node = mta();
      const submission = node.service('submission');
      const transport = nodemailer.createTransport({
        host: submission.host,
        port: submission.port,
        secure: false,
        ignoreTLS: true,
        name: 'client.sender.test',
        auth: { user: user.address, pass: message.password ?? user.password },
        tls: { servername: node.config.hostname },
        connectionTimeout: 5000,
      });
      try {
        const info = await transport.sendMail(
          message.raw
            ? { envelope: message.envelope ?? { from: user.address, to: toList(message.to) }, raw: message.raw }
            : {
                from: user.address,
                to: message.to,
                cc: message.cc,
                subject: message.subject ?? '(no subject)',
                text: message.text,
                html: message.html,
                headers: message.headers,
                attachments: message.attachments,
                messageId: message.messageId,
                inReplyTo: message.inReplyTo,
                references: message.references,
                envelope: message.envelope,
              },
        );
        return {
          // With raw bytes nodemailer reports an id of its own; the message's header is the truth.
          messageId: (message.raw && messageIdOf(Buffer.from(message.raw))) || info.messageId,
          response: info.response,
          accepted: info.accepted.map(String),
          rejected: info.rejected.map(String),
        };
      } catch (err) {
        const e = err as Error & { response?: string; command?: string };
        throw new Error(
          `submission by ${user.address} to ${node.name} (${submission.host}:${submission.port}) failed at ${e.command ?? 'connection'}: ${e.response ?? e.message}`,
          { cause: err },
        );
      } finally {
        transport.close();
      }
    };
    return { address: user.address, send };
  }

  /** A user's mailbox as the mailbox server's control channel shows it. */
  mailbox(address: string, options: { server?: string } = {}) {
    const node = options.server ? this.node(options.server) : this.byRole('mailbox');
    const user = address.toLowerCase();
    return {
      messages: (mailbox = 'INBOX') => node.call<{ uid: number; id: string; size: number; flags: string[] }[]>('messages', { user, mailbox }),
      read: async (uid: number, mailbox = 'INBOX') => Buffer.from((await node.call<{ data: string }>('read', { user, mailbox, uid })).data, 'base64'),
    };
  }

  private readonly devices = new Set<ImapDevice>();

  /** An IMAP device of `address` (a phone, a laptop), connected and in sync with INBOX by IDLE. */
  async imap(address: string, options: { device?: string; password?: string } = {}): Promise<ImapDevice> {
    const user = this.user(address);
    const device = new ImapDevice({
      endpoint: this.byRole('mailbox').service('imap'),
      user: user.address,
      password: options.password ?? user.password,
      device: options.device ?? 'device',
      history: this.history,
      submit: async (raw, envelope) => {
        await this.client(user.address).send({ raw, envelope, to: envelope.to });
      },
    });
    await device.connect();
    this.devices.add(device);
    return device;
  }

  /** A POP3 device of `address`; `keepCopy` is "leave a copy on the server". */
  pop3(address: string, options: { device?: string; keepCopy?: boolean; password?: string } = {}): Pop3Device {
    const user = this.user(address);
    return new Pop3Device({
      endpoint: this.byRole('mailbox').service('pop3'),
      user: user.address,
      password: options.password ?? user.password,
      device: options.device ?? 'device',
      keepCopy: options.keepCopy ?? false,
      history: this.history,
    });
  }

  /** The hops of one message, in time order. */
  trace(messageId: string): LabEvent[] {
    return this.history.trace(messageId);
  }

  waitFor(matcher: EventMatcher, options?: { timeoutMs?: number; after?: number; description?: string }): Promise<LabEvent> {
    return this.history.waitFor(matcher, options);
  }

  /** Endpoints and users, as `maillab up --json` prints them. */
  describe() {
    return {
      runtime: this.runtime.kind,
      nodes: Object.fromEntries(
        this.nodes().map((n) => [n.name, { host: n.config.address, services: n.isRunning ? n.services : {} }]),
      ),
      users: this.definition.users.map((u) => ({ address: u.address, password: u.password })),
    };
  }

  async stop(options: { keepData?: boolean } = {}): Promise<void> {
    await Promise.all([...this.devices].map((d) => d.close().catch(() => undefined)));
    // Reverse start order: clients of a node stop before it.
    for (const node of this.nodes().reverse()) {
      await node.stop().catch(() => undefined);
    }
    await this.runtime.dispose({ keepData: options.keepData ?? process.env.MAILLAB_KEEP === '1' });
  }
}

function toList(v: string | string[]): string[] {
  return Array.isArray(v) ? v : [v];
}
