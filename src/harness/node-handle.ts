// One node of a started lab: its endpoints, its typed control channel, and the faults a scenario can cause.
// Every fault and control action is recorded in the history (node `nemesis`) at the moment it began, so a trace
// shows why a connection failed.
import type { Endpoint, NodeConfig, Role } from '../shared/config.js';
import { ControlClient, type CompletedCall, type NodeHealth } from '../shared/control.js';
import { now } from '../shared/events.js';
import type { DnsFaultRuleView, ToxicView } from '../shared/faults.js';
import { NEMESIS, RECORDED_OPERATIONS, type Contracts, type HarnessEvents } from './events.js';
import type { SmtpFaultRuleView } from '../shared/faults.js';
import type { History } from './history/history.js';
import type { NetworkFaults, RunningNode, Runtime } from './runtime/types.js';

type NodeAction = { [K in keyof HarnessEvents]: HarnessEvents[K] extends { target: string; role: Role; took: number } ? K : never }[keyof HarnessEvents];

export class NodeHandle<R extends Role = Role> {
  private running?: RunningNode;
  /** The endpoints of the node's last run, kept while it is stopped. */
  private lastSeen?: Pick<RunningNode, 'services' | 'control'>;
  private client?: ControlClient<Contracts[R]>;
  private stopStream?: () => void;
  private lastSeq = 0;

  constructor(
    readonly config: Extract<NodeConfig, { role: R }>,
    private readonly runtime: Runtime,
    private readonly history: History,
  ) {}

  get name(): string {
    return this.config.name;
  }
  get role(): R {
    return this.config.role as R;
  }
  get isRunning(): boolean {
    return this.running !== undefined;
  }
  /**
   * Endpoints of the node's services as the harness reaches them. A stopped node answers the endpoints it had when it
   * last ran (where its clients now meet a closed port; on docker a start may publish new ports).
   */
  get services(): Record<string, Endpoint> {
    return this.running?.services ?? this.lastSeen?.services ?? configuredServices(this.config);
  }
  /**
   * Where the harness reaches the node's control channel (it needs the lab's token, `config.controlToken`); for a
   * stopped node, where it was when the node last ran.
   */
  get controlEndpoint(): Endpoint {
    return this.running?.control ?? this.lastSeen?.control ?? { host: this.config.address, port: this.config.controlPort };
  }
  /** The endpoint of one of the node's services (see `services`), running or not; fails naming those it has. */
  service(name: string): Endpoint {
    const s = this.services[name];
    if (!s) throw new Error(`node ${this.name} has no service ${name} (it has ${Object.keys(this.services).join(', ')})`);
    return s;
  }
  /**
   * Where the lab's other nodes reach one of this node's services: its lab address and the configured port, from its
   * config, whether it runs or not (on the local runtime the same as `service`; on docker, inside the lab network).
   */
  address(service: string): Endpoint {
    const configured = configuredServices(this.config);
    const s = configured[service];
    if (!s) throw new Error(`node ${this.name} has no configured service ${service} (it has ${Object.keys(configured).join(', ')})`);
    return s;
  }

  /** This node as a node of `role`, with that role's control operations; fails if it has another role. */
  as<T extends Role>(role: T): NodeHandle<T> {
    if ((this.role as Role) !== role) throw new Error(`node ${this.name} is a ${this.role} node, not ${role}`);
    return this as unknown as NodeHandle<T>;
  }

  /** The node's control channel, typed by its role's contract (src/<role>/api.ts). */
  control(): ControlClient<Contracts[R]> {
    if (!this.client) throw new Error(`node ${this.name} is not running: its control channel is closed`);
    return this.client;
  }

  /** The node's own view of itself: name, role, pid, services. */
  health(): Promise<NodeHealth> {
    return this.control().health();
  }

  /** Starts the node at lab start (not a fault: not recorded). */
  async boot(): Promise<void> {
    if (this.running) return;
    const token = this.config.controlToken;
    if (!token) throw new Error(`node ${this.name}: its config has no controlToken, so the harness could not reach its control channel`);
    this.running = await this.runtime.startNode(this.config);
    this.client = new ControlClient<Contracts[R]>(this.running.control, this.name, token, (call) => this.recordCall(call));
    // The stream replays the node's events from its start, so nothing emitted before we connected is lost.
    this.lastSeq = 0;
    this.follow();
  }

  private follow(): void {
    this.stopStream?.();
    this.stopStream = this.client!.streamEvents(
      this.lastSeq,
      (e) => {
        // Sequence numbers start at 1 and have no holes on the node: a jump means events the node no longer had.
        if (e.seq > this.lastSeq + 1) this.history.record(this.name, 'events-lost', { from: this.lastSeq + 1, to: e.seq - 1 });
        this.lastSeq = e.seq;
        this.history.add(e);
      },
      () => undefined,
    );
  }

  /** Starts a stopped or killed node again (its data directory kept); nothing happens (or is recorded) if it runs. */
  async start(): Promise<void> {
    if (this.running) return;
    await this.act('node-start', () => this.boot());
  }

  /** Graceful stop: the node's clients get connection refused from now on. */
  stop(): Promise<void> {
    return this.act('node-stop', () => this.halt((r) => r.stop()));
  }

  /** SIGKILL: no clean-up; the node's disk stays for the next start. */
  kill(): Promise<void> {
    return this.act('node-kill', () => this.halt((r) => r.kill()));
  }

  restart(): Promise<void> {
    return this.act('node-restart', async () => {
      await this.halt((r) => r.stop());
      await this.boot();
    });
  }

  /** Freezes the node: its peers time out instead of being refused. Needs a runtime with network faults (docker). */
  pause(): Promise<void> {
    return this.act('node-pause', () => this.faults('pause').pause());
  }
  unpause(): Promise<void> {
    return this.act('node-unpause', () => this.faults('unpause').unpause());
  }
  /** A partition: the node leaves the lab network (and the harness loses it too until connect()). */
  disconnect(): Promise<void> {
    return this.act('node-disconnect', () => this.faults('disconnect').disconnect());
  }
  connect(): Promise<void> {
    return this.act('node-connect', async () => {
      await this.faults('connect').connect();
      // The event stream broke with the partition: resume after the last event seen, losing nothing.
      this.follow();
    });
  }

  /** Stops the node when the lab stops (not a fault: not recorded). */
  async shutdown(): Promise<void> {
    await this.halt((r) => r.stop());
  }

  private faults(what: string): NetworkFaults {
    if (!this.running) throw new Error(`node ${this.name} is not running: cannot ${what}`);
    if (!this.running.faults) throw new Error(`${what} needs a runtime that can freeze or partition a node (docker); node ${this.name} runs on ${this.runtime.kind}`);
    return this.running.faults;
  }

  /** Runs a fault or control action and records it, at the moment it began, whether it worked or not. */
  private async act(kind: NodeAction, action: () => Promise<void>): Promise<void> {
    const began = now();
    let error: string | undefined;
    try {
      await action();
    } catch (err) {
      error = err instanceof Error ? err.message : String(err);
      throw err;
    } finally {
      this.history.record(NEMESIS, kind, { target: this.name, role: this.role, took: now() - began, ...(error !== undefined ? { error } : {}) }, { time: began });
    }
  }

  /** Records the control calls that change the node (RECORDED_OPERATIONS), whoever made them. */
  private recordCall(call: CompletedCall): void {
    const kind = RECORDED_OPERATIONS[this.role]?.[call.operation];
    const action = { target: this.name, role: this.role, took: now() - call.began };
    if (kind === 'dns-edit') this.history.record(NEMESIS, kind, { ...action, operation: call.operation, args: call.args }, { time: call.began });
    if (kind === 'queue-flush') this.history.record(NEMESIS, kind, { ...action, flushed: (call.result as { flushed: number }).flushed }, { time: call.began });
    if (kind === 'queue-change') {
      const { queueId, messageId } = call.result as { queueId: string; messageId?: string };
      this.history.record(NEMESIS, kind, { ...action, operation: call.operation as 'hold' | 'release' | 'delete', queueId }, { time: call.began, messageId });
    }
    // The answer, not the arguments: those hold the private keys.
    const config: NodeConfig = this.config;
    if (kind === 'link-change' && config.role === 'proxy') {
      const { from, to } = config.link;
      this.history.record(NEMESIS, kind, { ...action, from, to, toxics: (call.result as { toxics: ToxicView[] }).toxics }, { time: call.began });
    }
    if (kind === 'dkim-change') this.history.record(NEMESIS, kind, { ...action, signers: (call.result as { signers: { domain: string; selector: string; algorithm: string }[] }).signers }, { time: call.began });
    // The rules as the node holds them (checked, names normalized), without their counts: what a replay sets.
    if (kind === 'dns-faults-change') this.history.record(NEMESIS, kind, { ...action, rules: (call.result as { rules: DnsFaultRuleView[] }).rules.map(({ fired: _fired, ...rule }) => rule) }, { time: call.began });
    // The rules as the node took them (without their counters, 0 after a set).
    if (kind === 'smtp-faults-change') this.history.record(NEMESIS, kind, { ...action, rules: (call.result as { rules: SmtpFaultRuleView[] }).rules.map(({ fired: _fired, ...rule }) => rule) }, { time: call.began });
  }

  private async halt(how: (r: RunningNode) => Promise<void>): Promise<void> {
    const running = this.running;
    if (!running) return;
    await how(running);
    this.lastSeen = { services: running.services, control: running.control };
    this.stopStream?.();
    this.client?.close();
    this.running = undefined;
    this.client = undefined;
  }
}

/** A node's services as its config declares them: its lab address and each service's port. */
export function configuredServices(config: NodeConfig): Record<string, Endpoint> {
  const at = (port: number | undefined): Endpoint[] => (port === undefined ? [] : [{ host: config.address, port }]);
  const entries = (ports: Record<string, number | undefined>) => Object.entries(ports).flatMap(([name, port]) => at(port).map((e) => [name, e] as const));
  switch (config.role) {
    case 'dns':
      return Object.fromEntries(entries({ dns: config.port, 'mta-sts': config.mtaSts?.port }));
    case 'mta':
      return Object.fromEntries(entries({ ...config.ports, api: config.api?.port }));
    case 'mx':
      return Object.fromEntries(entries(config.ports));
    case 'mailbox':
      return Object.fromEntries(entries({ ...config.ports, accounts: config.accounts?.port }));
    case 'proxy':
      return Object.fromEntries(entries(config.ports));
  }
}
