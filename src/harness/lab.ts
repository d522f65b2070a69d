// Lab (a builder, like testcontainers' GenericContainer) and StartedLab (the handle a scenario drives).
import { randomBytes } from 'node:crypto';
import { promises as fs } from 'node:fs';
import path from 'node:path';
import { randomSeed, seedFromEnvironment, type Seed } from '../shared/seeded-random.js';
import { dovecotPaths } from '../real/dovecot/config.js';
import { postfixLayout } from '../real/postfix/config.js';
import type { DkimSigningConfig, DnsRecord, NodeConfig, RetryConfig, Role, UserConfig, ZoneConfig } from '../shared/config.js';
import { newControlToken } from '../shared/control.js';
import { now } from '../shared/events.js';
import { headerValue } from '../shared/headers.js';
import type { DnsContract, RecordType } from '../dns/api.js';
import type { ControlClient } from '../shared/control.js';
import type { DnsFaultRule, DnsFaultRuleView } from '../shared/faults.js';
import type { MessageState, QueueEntryView } from '../mta/api.js';
import type { SmtpFaultRule, SmtpFaultRuleView } from '../shared/faults.js';
import { ImapDevice, Pop3Device } from './clients/devices.js';
import { submit, type SendOptions, type SendResult } from './clients/submission.js';
import { ROLE_EVENT_KINDS, type EventKind, type EventOf, type HistoryEvent } from './events.js';
import { DEFAULT_WAIT_MS, History, normalizeMessageId, type EventMatcher, type WaitOptions } from './history/history.js';
import { NodeHandle } from './node-handle.js';
import { parseEmail, type ParsedEmail } from './messages.js';
import { waitForQueue, waitForSettled, type StateWaitOptions } from './settle.js';
import { resolveInLab, type ResolvedAnswer, type ResolvableType } from './resolve.js';
import { startTimeline, type Timeline, type TimelineOptions, type TimelineStep } from './timeline.js';
import { createRuntime, runtimeFromEnvironment, type RuntimeChoice, type RuntimeKind } from './runtime/index.js';
import { packageRoot, type Runtime } from './runtime/types.js';
import { associationData, DANE_TA } from '../shared/dane.js';
import { issueLabCertificates, type CertificateFault, type HostIdentity } from './tls/ca.js';
import { equipWithMailAuth, type IssuedDkimKey } from './mail-auth.js';
import { checkMailDns, mailDnsInputOf, type Finding } from './checkers/mail-dns.js';
import { httpsJson, type HttpsJsonTarget } from './clients/https-json.js';
import type { ApiErrorBody, ApiMessageStatus, ApiRawSendRequest, ApiSendRequest, ApiSendResponse } from '../mta/api.js';
import { Secret, TOTP } from 'otpauth';
import { DEFAULT_ALLOW_PLAINTEXT_AUTH, planLab, type DomainDefinition, type ExternalHostPlan, type ExternalService, type HostDefinition, type LabDefinition, type MxTarget } from './topology.js';
import { probeExternalHosts } from './external.js';
import { linkNodeName } from '../proxy/api.js';
import type { Toxic, ToxicView } from '../shared/faults.js';

export type { SendOptions, SendResult };

export class Lab {
  private definition: LabDefinition;
  private runtimeKind: RuntimeChoice = runtimeFromEnvironment();

  constructor(definition: LabDefinition) {
    this.definition = structuredClone(definition);
  }

  withRuntime(kind: RuntimeChoice): this {
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
  /** A link proxy from `from` to `to` (issue 15), with toxics from the start or none (added while the lab runs). */
  withLink(from: string, to: string, toxics: Toxic[] = []): this {
    const faults = (this.definition.faults ??= {});
    (faults.links ??= []).push({ from, to, toxics });
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
    let plan: ReturnType<typeof planLab>;
    let ca: LabCaFile;
    let dkimKeys: IssuedDkimKey[];
    let seed: Seed;
    try {
      // The local runtime's nodes read the package's files where they are (the ClamAV test database).
      plan = planLab(this.definition, { ...network, ...(runtime.kind === 'local' ? { packageRoot: packageRoot() } : {}) });
      // One control token per lab: every node gets it in its config (readable by its user only), the harness sends it.
      const controlToken = newControlToken();
      for (const config of Object.values(plan.nodes)) config.controlToken = controlToken;
      // One seed per run (issue 15): the definition's, else a new one; MAILLAB_SEED replays a printed one.
      seed = seedFromEnvironment(this.definition.faults?.seed ?? randomSeed());
      for (const config of Object.values(plan.nodes)) config.seed = seed;
      // Every wait that times out and every checker failure names it.
      history.seed = seed;
      // External hosts (issue 14) first: nothing is made and no node starts while a server the lab depends on is not
      // there (the probe's error names the host, its address, the port and what was seen there).
      await probeExternalHosts(plan.externals).catch((err: Error) => Promise.reject(new Error(`lab ${this.definition.name} cannot start: ${err.message}`)));
      [ca, dkimKeys] = await Promise.all([equipWithCertificates(this.definition, plan.nodes, network.hostDir), equipWithMailAuth(this.definition, plan.nodes)]);
    } catch (err) {
      await runtime.dispose();
      throw err;
    }
    const lab = new StartedLab(labId, this.definition, runtime, plan.nodes, history, ca, dkimKeys, plan.externals, seed);
    try {
      // Nodes need each other only when mail flows, never at start-up: start them all at once.
      await Promise.all(lab.nodes().map((node) => node.boot()));
    } catch (err) {
      await lab.stop({ keepData: true });
      throw err;
    }
    return lab;
  }
}

/** An external host of a started lab (StartedLab.external). */
export interface ExternalHost extends ExternalHostPlan {
  /** The endpoint of one of its services; throws naming the ports it has when it has not that one. */
  service(service: ExternalService): { host: string; port: number };
}

function describePorts(host: ExternalHostPlan): string {
  return Object.entries(host.ports).map(([service, port]) => `${service} ${port}`).join(', ');
}

/** The lab CA as the harness keeps it: its certificate (PEM) and the file it was written to. */
interface LabCaFile {
  cert: string;
  file: string;
}

/**
 * A CA for this lab start and a certificate per node, set as every node's `tls` before any node starts; the CA's
 * certificate is written to `ca.pem` in the lab's host directory (mode 0644). A certificate names the node's host
 * name and its address (a 127.x.y.z address on the local runtime, its 198.18.x.y lab address on docker), and
 * nothing else: a client of a docker node's published port on 127.0.0.1 verifies the host name (SNI / servername),
 * so no certificate is valid for 127.0.0.1 or localhost and no host's certificate can pass for another's.
 */
async function equipWithCertificates(definition: LabDefinition, nodes: Record<string, NodeConfig>, hostDir: string): Promise<LabCaFile> {
  const identities: Record<string, HostIdentity> = Object.fromEntries(Object.entries(nodes).map(([name, config]) => [name, { names: [config.hostname], addresses: [config.address] }]));
  const faults: Record<string, CertificateFault> = { ...definition.tls?.certificates };
  // MTA-STS policy sites (served by the dns host) have certificates of their own, so that a faulty MX certificate
  // does not also break the policy fetch, and a faulty policy site can be tried alone.
  const sites = Object.values(nodes).flatMap((config) => (config.role === 'dns' ? (config.mtaSts?.sites ?? []) : []));
  for (const site of sites) {
    identities[`mta-sts:${site.domain}`] = { names: [`mta-sts.${site.domain}`], addresses: [] };
    const fault = Object.entries(definition.domains).find(([d]) => d.toLowerCase() === site.domain)?.[1].mtaSts?.certificate;
    if (fault) faults[`mta-sts:${site.domain}`] = fault;
  }
  const issued = await issueLabCertificates(definition.name, identities, faults);
  const allowPlaintextAuth = definition.tls?.allowPlaintextAuth ?? DEFAULT_ALLOW_PLAINTEXT_AUTH;
  const dane = definition.tls?.dane ?? {};
  for (const [name, config] of Object.entries(nodes)) {
    const { cert, key, fault } = issued.hosts[name]!;
    // A DANE-TA record names the lab CA, which the server must then send (RFC 7672 §3.1.2); other hosts send the
    // leaf alone, as before (a pinned leaf, as mbsync takes it, stays one certificate).
    const sendsCa = (dane[name] ?? []).some((r) => r.usage === DANE_TA) && fault !== 'self-signed';
    config.tls = { cert: sendsCa ? `${cert.trimEnd()}\n${issued.ca.cert}` : cert, key, ca: issued.ca.cert, allowPlaintextAuth };
  }
  for (const site of sites) Object.assign(site, { cert: issued.hosts[`mta-sts:${site.domain}`]!.cert, key: issued.hosts[`mta-sts:${site.domain}`]!.key });
  publishTlsa(definition, nodes, issued);
  const file = path.join(hostDir, 'ca.pem');
  await fs.writeFile(file, issued.ca.cert, { mode: 0o644 });
  return { cert: issued.ca.cert, file };
}

/**
 * The TLSA records of `definition.tls.dane`, at `_<smtp port>._tcp.<host name>` in the dns host's zones, computed
 * from the certificates just issued: DANE-EE from the host's own, DANE-TA from the lab CA's.
 */
function publishTlsa(definition: LabDefinition, nodes: Record<string, NodeConfig>, issued: { ca: { cert: string }; hosts: Record<string, { cert: string }> }): void {
  const dns = Object.values(nodes).find((config) => config.role === 'dns');
  if (!dns || dns.role !== 'dns') return;
  for (const [host, definitions] of Object.entries(definition.tls?.dane ?? {})) {
    const config = nodes[host];
    if (!config || (config.role !== 'mx' && config.role !== 'mta')) throw new Error(`tls.dane: ${host} has no SMTP port to publish TLSA records for`);
    const name = `_${config.ports.smtp}._tcp.${config.hostname}`;
    const zone = dns.zones.filter((z) => config.hostname === z.origin || config.hostname.endsWith(`.${z.origin}`)).sort((a, b) => b.origin.length - a.origin.length)[0];
    if (!zone) throw new Error(`tls.dane: no lab zone holds ${config.hostname}`);
    for (const d of definitions) {
      const data = associationData(d.usage === DANE_TA ? issued.ca.cert : issued.hosts[host]!.cert, d.selector, d.matchingType);
      // A mismatching record keeps its length (what a stale record after a key rollover looks like).
      if (d.mismatch) data.writeUInt8(data.readUInt8(data.length - 1) ^ 0xff, data.length - 1);
      zone.records.push({ name, type: 'TLSA', usage: d.usage, selector: d.selector, matchingType: d.matchingType, data: data.toString('hex') });
    }
  }
}

export class StartedLab {
  private readonly handles = new Map<string, NodeHandle>();
  private readonly devices = new Set<ImapDevice>();

  constructor(
    readonly id: string,
    readonly definition: LabDefinition,
    private readonly runtime: Runtime,
    configs: Record<string, NodeConfig>,
    readonly history: History,
    private readonly labCa: LabCaFile,
    private readonly dkimKeys: readonly IssuedDkimKey[] = [],
    private readonly externalHosts: Readonly<Record<string, ExternalHostPlan>> = {},
    /** The seed of every chance draw of this run's faults (issue 15): `MAILLAB_SEED=<seed>` replays them. */
    readonly seed: Seed = 0,
  ) {
    for (const [name, config] of Object.entries(configs)) this.handles.set(name, new NodeHandle(config, runtime, history));
  }

  /** The lab CA's certificate (PEM): what a client trusts to verify the lab's hosts. Never installed system-wide. */
  get ca(): string {
    return this.labCa.cert;
  }

  /** What a client needs to verify `node` over TLS: the lab CA and the host name the node's certificate carries. */
  tlsFor(node: string): { ca: string; servername: string } {
    return { ca: this.ca, servername: this.node(node).config.hostname };
  }

  /**
   * A DKIM key this lab made for a domain's selector (`domains[d].dkim`): its private key, algorithm and the TXT record
   * text of its public key. What a key rotation hands to `lab.mta().setDkim(...)`.
   */
  dkimKey(domain: string, selector: string): IssuedDkimKey {
    const key = this.dkimKeys.find((k) => k.domain === domain.toLowerCase() && k.selector === selector);
    if (!key) throw new Error(`lab ${this.definition.name} has no DKIM key for selector ${selector} of ${domain} (keys: ${this.dkimKeys.map((k) => `${k.selector}._domainkey.${k.domain}`).join(', ') || 'none'})`);
    return key;
  }

  /**
   * The lab's mail DNS as it is now (the dns node's zones, edits included), checked as a mail administrator's tool
   * would: SPF, DKIM keys of the MTAs' current signers, DMARC, MX targets, PTRs (checkers/mail-dns.ts). One finding
   * per problem; none is an error when the configuration is sound.
   */
  async checkDns(): Promise<Finding[]> {
    const { zones } = await this.dns.records();
    const nodes = Object.fromEntries(this.nodes().map((n) => [n.name, n.config]));
    const signers: { domain: string; selector: string }[] = [];
    for (const mta of this.nodes().filter((n) => n.role === 'mta' && n.isRunning)) {
      for (const s of (await mta.as('mta').control().call('dkim')).signers) if (!signers.some((x) => x.domain === s.domain && x.selector === s.selector)) signers.push({ domain: s.domain, selector: s.selector });
    }
    return checkMailDns(mailDnsInputOf({ nodes, zones }, this.definition, signers));
  }

  /** The absolute path of the lab CA's certificate (PEM), for clients outside the harness (`up --json`'s `ca`). */
  get caFile(): string {
    return this.labCa.file;
  }

  get runtimeKind(): RuntimeKind {
    return this.runtime.kind;
  }

  nodes(): NodeHandle[] {
    return [...this.handles.values()];
  }

  /** A node by host name; `.as(role)` gives its role's control operations. An external host is no node: see external(). */
  node(name: string): NodeHandle {
    const handle = this.handles.get(name);
    const external = this.externalHosts[name];
    if (!handle && external) {
      throw new Error(
        `lab ${this.definition.name}: host ${name} is an external server (${external.hostname} at ${external.address}, ${describePorts(external)}), run outside the lab: ` +
          `it has no node to stop, start or control; lab.external('${name}') describes it`,
      );
    }
    if (!handle) throw new Error(`lab ${this.definition.name} has no host ${name} (hosts: ${[...this.handles.keys(), ...Object.keys(this.externalHosts)].join(', ')})`);
    return handle;
  }

  /** The lab's external hosts (issue 14): servers run outside the lab, probed ready at start. */
  externals(): ExternalHost[] {
    return Object.keys(this.externalHosts).map((name) => this.external(name));
  }

  /**
   * An external host by its key in `hosts`: its host name, address and ports as the lab uses them, and `service(name)`,
   * the endpoint of one of its ports. Nothing here starts or stops it: it is the user's.
   */
  external(name: string): ExternalHost {
    const plan = this.externalHosts[name];
    if (!plan) throw new Error(`lab ${this.definition.name} has no external host ${name} (external hosts: ${Object.keys(this.externalHosts).join(', ') || 'none'})`);
    return {
      ...plan,
      service: (service) => {
        const port = plan.ports[service];
        if (port === undefined) throw new Error(`external host ${name} (${plan.hostname}) has no ${service} port (${describePorts(plan)})`);
        return { host: plan.address, port };
      },
    };
  }

  /** The first node of a role (or the named one, checked to have that role). */
  nodeOf<R extends Role>(role: R, name?: string): NodeHandle<R> {
    if (name) return this.node(name).as(role);
    const found = this.nodes().find((n) => n.role === role);
    if (!found) throw new Error(`lab ${this.definition.name} has no ${role} host`);
    return found.as(role);
  }

  /**
   * The lab DNS: edit records while the lab runs. Every edit is recorded in the history (`dns-edit`). `faults`: its
   * fault rules (SERVFAIL, timeouts, truncation, wrong answers...), see DnsFaultsHandle.
   */
  get dns() {
    const node = this.nodeOf('dns');
    const control = () => node.control();
    // A zone added while the lab runs names the dns host as its SOA primary (and so its NS), as planned zones do: a
    // name that resolves, unless the zone says otherwise.
    const withPrimary = (zone: ZoneConfig): ZoneConfig => (zone.soa?.primary ? zone : { ...zone, soa: { ...zone.soa, primary: node.config.hostname } });
    const setRecords = (name: string, type: RecordType, records: Partial<DnsRecord>[]) => control().call('set-records', { name, type, records });
    return {
      node,
      records: () => control().call('records'),
      setRecords,
      addRecord: (record: DnsRecord, zone?: string) => control().call('add-record', { record, ...(zone ? { zone } : {}) }),
      removeRecords: (name: string, type?: RecordType) => control().call('remove-records', { name, ...(type ? { type } : {}) }),
      setZones: (zones: ZoneConfig[]) => control().call('set-zones', { zones: zones.map(withPrimary) }),
      addZone: (zone: ZoneConfig) => control().call('add-zone', { zone: withPrimary(zone) }),
      removeZone: (origin: string) => control().call('remove-zone', { origin }),
      lookup: (name: string, type: RecordType = 'A') => control().call('lookup', { name, type }),
      /** Points `domain`'s MX records at lab hosts (by host key) or host names. */
      setMx: (domain: string, targets: MxTarget[]) =>
        setRecords(domain, 'MX', targets.map((t) => ({ name: domain, type: 'MX' as const, exchange: this.hostnameOf(t.host), priority: t.preference }))),
      faults: dnsFaultsOf(control),
    };
  }

  hostnameOf(host: string): string {
    return this.handles.get(host)?.config.hostname ?? this.externalHosts[host]?.hostname ?? host;
  }

  /**
   * The link from `from` to `to` (issue 15; declared in `faults.links` or with `Lab#withLink`): its proxy node and its
   * toxics, Toxiproxy's. Every change is one `set-toxics` at the proxy, recorded in the history (`link-change`); open
   * connections take it at once.
   */
  link(from: string, to: string) {
    const name = linkNodeName(from, to);
    if (!this.handles.has(name)) {
      const links = (this.definition.faults?.links ?? []).map((l) => `${l.from} -> ${l.to}`);
      throw new Error(`lab ${this.definition.name} has no link ${from} -> ${to} (links: ${links.join(', ') || 'none'}): declare it in faults.links or with Lab#withLink`);
    }
    const node = this.nodeOf('proxy', name);
    const toxics = async (): Promise<ToxicView[]> => (await node.control().call('toxics')).toxics;
    const setToxics = async (list: Toxic[]): Promise<ToxicView[]> => (await node.control().call('set-toxics', { toxics: list })).toxics;
    return {
      node,
      toxics,
      setToxics,
      /** Adds a toxic (its name defaults to `<type>_<stream>`, unique per link); answers the link's toxics. */
      addToxic: async (toxic: Toxic): Promise<ToxicView[]> => setToxics([...(await toxics()), toxic]),
      /** Removes the toxic of that name; fails naming the link's toxics when there is none. */
      removeToxic: async (toxicName: string): Promise<ToxicView[]> => {
        const current = await toxics();
        if (!current.some((t) => t.name === toxicName)) throw new Error(`link ${from} -> ${to} has no toxic ${toxicName} (it has ${current.map((t) => t.name).join(', ') || 'none'})`);
        return setToxics(current.filter((t) => t.name !== toxicName));
      },
    };
  }

  /**
   * The sender MTA's queue (the first MTA, or the named one). `flush()` is recorded in the history (`queue-flush`);
   * `hold`, `release` and `delete` too (`queue-change`).
   */
  mta(name?: string) {
    const node = this.nodeOf('mta', name);
    const queue = (args: { state?: MessageState; all?: boolean } = {}) => node.control().call('queue', args);
    return {
      node,
      /** The messages in the queue (not done); `all` adds the finished ones still remembered, `state` filters. */
      queue,
      /** Tries every waiting message now. */
      flush: () => node.control().call('flush'),
      /** Replaces the MTA's DKIM signers (a key rotation); recorded as `dkim-change`. */
      setDkim: (signers: DkimSigningConfig[]) => node.control().call('set-dkim', { signers }),
      dkim: () => node.control().call('dkim'),
      /** One message: its view, its full record and, while queued, its headers. */
      message: (queueId: string) => node.control().call('message', { queueId }),
      /** Puts a message on hold (Postfix: `postsuper -h`): no attempt until released; answers its view (state `hold`). */
      hold: (queueId: string) => node.control().call('hold', { queueId }),
      /** Releases a held message (`postsuper -H`): deferred, and tried at once; answers its view. */
      release: (queueId: string) => node.control().call('release', { queueId }),
      /** Deletes a message from the queue (`postsuper -d`): no more attempts, no bounce. */
      delete: (queueId: string) => node.control().call('delete', { queueId }),
      /**
       * Waits until `predicate` holds of the queue (the `queue` operation, looked at again after each event of this MTA
       * and at least every 200 ms) and resolves with the entries it saw then; fails after `timeoutMs` (default 10 s)
       * with the last view and the recent history. E.g. `waitForQueue((q) => q.some((m) => m.state === 'deferred'))`.
       */
      waitForQueue: (predicate: (entries: QueueEntryView[]) => boolean, options: StateWaitOptions = {}) => waitForQueue(this.history, { node: node.name, queue: () => queue() }, predicate, options),
      /** Waits until the queue holds no message (every one delivered, bounced or deleted); as `waitForQueue`. */
      waitUntilEmpty: async (options: StateWaitOptions = {}): Promise<void> => {
        await waitForQueue(this.history, { node: node.name, queue: () => queue() }, (entries) => entries.length === 0, { description: `the queue of ${node.name} to be empty`, ...options });
      },
    };
  }

  /**
   * Resolves once the lab is settled: nothing is under way that would change what a test reads. Precisely, for every
   * running MTA:
   * - its queue holds no message `incoming` or `active` (deferred and held messages may stay: they wait for a retry
   *   or an operator, not for something under way);
   * - every recipient of every message it queued (each `queued` event in the history) has an outcome event
   *   (`relayed`, `delivered`, `deferred`, `bounced` or `expired`) after the message's last `active` event; a message
   *   held or deleted there (`queue-change`) owes none, and a released one is awaited until its next attempt begins.
   * Use it before reading the queue after a `stored` event: the mailbox server stores a message before the MTA
   * records its outcome, so the queue may still show it active then. Messages of stopped MTAs are not waited for
   * (nothing moves them); an MX that queues by itself (Postfix as the mx) is not looked into. Fails after `timeoutMs`
   * (default 10 s) with what is still pending and the recent history.
   */
  settled(options: StateWaitOptions = {}): Promise<void> {
    const mtas = this.nodes()
      .filter((n) => n.role === 'mta')
      .map((n) => ({ node: n.name, get isRunning() { return n.isRunning; }, queue: () => n.as('mta').control().call('queue', {}) }));
    return waitForSettled(this.history, mtas, options);
  }

  /**
   * Asks the lab DNS, over real DNS (UDP, TCP when truncated) at the dns node, for `name`'s records of `type` (default
   * A), as every resolver of the lab does: answers typed by `type` (addresses for A/AAAA, `{ exchange, priority }` for
   * MX, one string per TXT record, host names for CNAME/NS/PTR, the SOA's fields, TLSA's fields). A name with no record
   * of that type answers []; a name that does not exist fails with `code` ENOTFOUND, a refusal (a name outside every
   * lab zone) with EREFUSED.
   */
  resolve<T extends ResolvableType = 'A'>(name: string, type?: T): Promise<ResolvedAnswer<T>[]> {
    return resolveInLab(this.nodeOf('dns').service('dns'), name, (type ?? 'A') as T);
  }

  /**
   * The SMTP fault rules of a host's SMTP/LMTP servers (issue 15): an mta (25, 587, 465), mx (25) or mailbox (LMTP)
   * host run by maillab. `set(rules)` replaces them all, `add(...rules)` appends to those in force, `clear()` removes
   * them, `list()` shows them with how often each fired (every change restarts the counts and the draws of all the
   * rules set; the greylist and what it has seen stay). Every change is recorded in the history
   * (`smtp-faults-change`); every rule that fires is a `fault` event of that host. Postfix and Dovecot hosts refuse.
   */
  smtpFaults(host: string) {
    const node = this.node(host);
    if (node.role === 'dns') throw new Error(`lab ${this.definition.name}: ${host} is the dns host, which runs no SMTP or LMTP server (SMTP faults go to an mta, mx or mailbox host)`);
    // The three contracts share these two operations (SmtpFaultOperations): any of them types the calls.
    const control = () => (node as NodeHandle).as(node.role as 'mx').control();
    const set = async (rules: SmtpFaultRule[]): Promise<SmtpFaultRuleView[]> => (await control().call('set-smtp-faults', { rules })).rules;
    const list = async (): Promise<SmtpFaultRuleView[]> => (await control().call('smtp-faults')).rules;
    return {
      set,
      list,
      add: async (...rules: SmtpFaultRule[]) => set([...(await list()).map(({ fired: _fired, ...rule }) => rule), ...rules]),
      clear: () => set([]),
    };
  }

  user(address: string): UserConfig {
    const user = this.definition.users.find((u) => u.address.toLowerCase() === address.toLowerCase());
    if (!user) throw new Error(`lab ${this.definition.name} has no user ${address}`);
    return user;
  }

  /** A mail client of `address`, submitting over SMTP (port 587, AUTH) to the MTA with nodemailer. */
  client(address: string, options: { mta?: string; password?: string } = {}) {
    const configured = this.user(address);
    // A client configured with another password (an app password, or a wrong one) logs in with it.
    const user = options.password !== undefined ? { ...configured, password: options.password } : configured;
    const send = (message: SendOptions): Promise<SendResult> => {
      const node = this.nodeOf('mta', options.mta);
      return submit({ node: node.name, hostname: node.config.hostname, endpoint: node.service('submission'), ...(node.config.tls ? { ca: this.ca } : {}) }, user, message);
    };
    return { address: user.address, send };
  }

  /**
   * The MTA's transactional HTTP email API (issue 13) with an API key: `send` (Mailpit's JSON shape), `sendRaw`,
   * `status`. Each answers `{ status, headers, body }` whatever the status, so refusals can be asserted; HTTPS with
   * the lab CA, verified under the MTA's host name.
   */
  api(key: string, options: { mta?: string } = {}) {
    const node = this.nodeOf('mta', options.mta);
    const target: HttpsJsonTarget = { endpoint: node.service('api'), servername: node.config.hostname, ca: this.ca, name: `HTTP email API of ${node.config.hostname}` };
    const headers = (idempotencyKey?: string) => ({ authorization: `Bearer ${key}`, ...(idempotencyKey ? { 'idempotency-key': idempotencyKey } : {}) });
    return {
      send: (request: ApiSendRequest, opts: { idempotencyKey?: string; timeoutMs?: number } = {}) =>
        httpsJson<ApiSendResponse & ApiErrorBody>(target, { method: 'POST', path: '/api/v1/send', headers: headers(opts.idempotencyKey), body: request, ...(opts.timeoutMs ? { timeoutMs: opts.timeoutMs } : {}) }),
      sendRaw: (request: ApiRawSendRequest, opts: { idempotencyKey?: string } = {}) => httpsJson<ApiSendResponse & ApiErrorBody>(target, { method: 'POST', path: '/api/v1/send/raw', headers: headers(opts.idempotencyKey), body: request }),
      status: (id: string) => httpsJson<ApiMessageStatus & ApiErrorBody>(target, { method: 'GET', path: `/api/v1/messages/${encodeURIComponent(id)}`, headers: headers() }),
    };
  }

  /**
   * A user's account at the mailbox server's account service (issue 13): `login(password, totp)` gives a session
   * whose methods list, create and revoke app passwords and show recent logins. HTTPS with the lab CA.
   */
  accounts(address: string, options: { server?: string } = {}) {
    const node = this.nodeOf('mailbox', options.server);
    const target: HttpsJsonTarget = { endpoint: node.service('accounts'), servername: node.config.hostname, ca: this.ca, name: `account service of ${node.config.hostname}` };
    return {
      /** POST /api/v1/login; the raw answer (401 on a wrong password or code, 429 while throttled). */
      login: (password: string, totp?: string) => httpsJson<{ session?: string; expiresAt?: string; Error?: string }>(target, { method: 'POST', path: '/api/v1/login', body: { address, password, ...(totp !== undefined ? { totp } : {}) } }),
      /** The operations of a logged-in session. */
      session: (session: string) => {
        const auth = { authorization: `Bearer ${session}` };
        return {
          appPasswords: () => httpsJson<{ name: string; created: string; lastUsed?: string }[]>(target, { method: 'GET', path: '/api/v1/app-passwords', headers: auth }),
          create: (name: string) => httpsJson<{ name: string; password: string; Error?: string }>(target, { method: 'POST', path: '/api/v1/app-passwords', headers: auth, body: { name } }),
          revoke: (name: string) => httpsJson(target, { method: 'DELETE', path: `/api/v1/app-passwords/${encodeURIComponent(name)}`, headers: auth }),
          logins: () => httpsJson<{ name: string; logins: { protocol: string; client: string; time: string }[] }[]>(target, { method: 'GET', path: '/api/v1/logins', headers: auth }),
        };
      },
    };
  }

  /** The TOTP code (RFC 6238) of a 2FA user at `time` (now by default), as an authenticator app shows it. */
  totp(address: string, time = Date.now()): string {
    const user = this.user(address);
    if (!user.totpSecret) throw new Error(`${address} has no TOTP secret in lab ${this.definition.name}`);
    return new TOTP({ secret: Secret.fromBase32(user.totpSecret), algorithm: 'SHA1', digits: 6, period: 30 }).generate({ timestamp: time });
  }

  /**
   * A user's mailbox as the mailbox server's control channel shows it. Raw: `messages(folder)` (UID, flags, size...)
   * and `read(uid, folder)` (the bytes). Parsed: `emails(folder)`, `email(uid, folder)` and
   * `waitForEmails(count, { folder, timeoutMs })` (ParsedEmail: subject, Message-ID, addresses, bodies, attachments,
   * and the raw bytes). Folders default to INBOX.
   */
  mailbox(address: string, options: { server?: string } = {}) {
    const node = this.nodeOf('mailbox', options.server);
    const user = address.toLowerCase();
    const messages = (mailbox = 'INBOX') => node.control().call('messages', { user, mailbox });
    const read = async (uid: number, mailbox = 'INBOX') => Buffer.from((await node.control().call('read', { user, mailbox, uid })).data, 'base64');
    const parsedAll = async (folder: string, list: Awaited<ReturnType<typeof messages>>): Promise<ParsedEmail[]> => Promise.all(list.map(async (m) => parseEmail(await read(m.uid, folder), m, folder)));
    return {
      /** The messages of a folder, UID order: UID, Maildir id, size, flags, INTERNALDATE, modseq (no headers). */
      messages,
      /** One message's bytes, as stored. */
      read,
      /** The messages of a folder, UID order, parsed (ParsedEmail). */
      emails: async (folder = 'INBOX'): Promise<ParsedEmail[]> => parsedAll(folder, await messages(folder)),
      /** One message, parsed; fails naming the folder's UIDs when there is no such UID. */
      email: async (uid: number, folder = 'INBOX'): Promise<ParsedEmail> => {
        const list = await messages(folder);
        const stored = list.find((m) => m.uid === uid);
        if (!stored) throw new Error(`mailbox ${user} ${folder} has no message with UID ${uid} (UIDs: ${list.map((m) => m.uid).join(', ') || 'none'})`);
        return parseEmail(await read(uid, folder), stored, folder);
      },
      /**
       * Waits until the folder holds at least `count` messages and resolves with all of them, parsed (UID order). It
       * looks at the folder again after each `stored` event of this user (no polling); messages put there otherwise
       * (IMAP APPEND, COPY) count when a delivery wakes it. Fails after `timeoutMs` (default 10 s) with the recent history.
       */
      waitForEmails: async (count: number, opts: { folder?: string; timeoutMs?: number } = {}): Promise<ParsedEmail[]> => {
        const folder = opts.folder ?? 'INBOX';
        const timeoutMs = opts.timeoutMs ?? DEFAULT_WAIT_MS;
        const deadline = now() + timeoutMs;
        for (;;) {
          const since = now();
          const list = await messages(folder);
          if (list.length >= count) return parsedAll(folder, list);
          const what = `mailbox ${user} ${folder} on ${node.name} to hold ${count} message${count === 1 ? '' : 's'} (it holds ${list.length})`;
          await this.history.waitFor({ kind: 'stored', node: node.name, where: (e) => e.detail.user.toLowerCase() === user }, { timeoutMs: Math.max(1, deadline - now()), after: since, description: what });
        }
      },
      /** The copies of a message (by Message-ID) in a folder, as they are now. */
      find: async (messageId: string, mailbox = 'INBOX'): Promise<{ uid: number; raw: Buffer }[]> => {
        const found: { uid: number; raw: Buffer }[] = [];
        for (const m of await messages(mailbox)) {
          const raw = await read(m.uid, mailbox);
          const id = headerValue(raw, 'message-id');
          if (id && normalizeMessageId(id) === normalizeMessageId(messageId)) found.push({ uid: m.uid, raw });
        }
        return found;
      },
    };
  }

  /** An IMAP device of `address` (a phone, a laptop), connected and in sync with INBOX by IDLE. */
  async imap(address: string, options: { device?: string; password?: string } = {}): Promise<ImapDevice> {
    const user = this.user(address);
    const mailbox = this.nodeOf('mailbox');
    const device = new ImapDevice({
      endpoint: mailbox.service('imap'),
      ...(mailbox.config.tls ? { tls: { ca: this.ca, servername: mailbox.config.hostname } } : {}),
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

  /**
   * A POP3 device of `address`; `keepCopy` is "leave a copy on the server". Async like `imap()`, so both are awaited
   * alike; it opens no session yet (each `download()` is one POP3 session, as a phone's "check mail" is), so a wrong
   * password fails at `download()`.
   */
  async pop3(address: string, options: { device?: string; keepCopy?: boolean; password?: string } = {}): Promise<Pop3Device> {
    const user = this.user(address);
    const mailbox = this.nodeOf('mailbox');
    return new Pop3Device({
      endpoint: mailbox.service('pop3'),
      ...(mailbox.config.tls ? { tls: { ca: this.ca, servername: mailbox.config.hostname } } : {}),
      user: user.address,
      password: options.password ?? user.password,
      device: options.device ?? 'device',
      keepCopy: options.keepCopy ?? false,
      history: this.history,
    });
  }

  /**
   * Starts a timeline of faults (issue 15): each step fires at a message count, a time or an event, and is undone
   * after its `for`; `await lab.timeline(steps).done` runs it to its end, `heal()` puts the lab back (timeline.ts).
   */
  timeline(steps: readonly TimelineStep[], options: TimelineOptions = {}): Timeline {
    return startTimeline(this, steps, options);
  }

  /** The hops of one message, in time order, with the faults and control actions between them. */
  trace(messageId: string): HistoryEvent[] {
    return this.history.trace(messageId);
  }

  waitFor<K extends EventKind>(matcher: EventMatcher<K>, options?: WaitOptions): Promise<EventOf<K>> {
    return this.history.waitFor(matcher, options);
  }

  /** Events whose kind the emitting node's role contract does not list (none, unless a role broke its contract). */
  eventsOutsideContract(): HistoryEvent[] {
    return this.history.outsideContract((node) => {
      const handle = this.handles.get(node);
      // `events-lost` is the harness's own note about the node's stream, recorded under the node's name.
      return handle ? [...ROLE_EVENT_KINDS[handle.role], 'events-lost'] : undefined;
    });
  }

  /**
   * Endpoints and users, as `maillab up --json` prints them: every node's services and control channel (`control`:
   * host and port of its HTTP control API), whether it runs, and the
   * lab's control token (`Authorization: Bearer <controlToken>` on every control request), and the absolute path
   * of the lab CA's certificate (`ca`).
   */
  describe() {
    return {
      id: this.id,
      runtime: this.runtime.kind,
      nodes: Object.fromEntries(
        // A stopped node keeps the endpoints of its last run, so a client sees which port it was refused on.
        this.nodes().map((n) => [n.name, { host: n.config.address, running: n.isRunning, services: n.services, control: n.controlEndpoint, ...this.realServerOf(n.config) }]),
      ),
      // Servers run outside the lab (issue 14): where the lab's nodes reach them.
      externals: Object.fromEntries(Object.values(this.externalHosts).map((e) => [e.name, { kind: 'external' as const, hostname: e.hostname, host: e.address, ports: e.ports }])),
      controlToken: this.nodes()[0]?.config.controlToken,
      // What a mail client needs per user: app passwords and the TOTP secret only where set.
      users: this.definition.users.map((u) => ({
        address: u.address,
        password: u.password,
        ...(u.appPasswords?.length ? { appPasswords: u.appPasswords.map(({ name, password }) => ({ name, password })) } : {}),
        ...(u.totpSecret ? { totpSecret: u.totpSecret } : {}),
      })),
      ...(this.definition.apiKeys?.length ? { apiKeys: this.definition.apiKeys.map((k) => k.key) } : {}),
      ca: this.caFile,
    };
  }

  /**
   * A node played by a real server (issue 14): which one, and the settings it runs with as its own tool prints them
   * (`postconf -n`, `doveconf -n`), written at start into the node's data directory (on docker: inside its container).
   */
  private realServerOf(config: NodeConfig): { server?: 'postfix' | 'dovecot'; effectiveConfig?: { path: string; in: 'host' | 'container' } } {
    const server = 'server' in config && (config.server === 'postfix' || config.server === 'dovecot') ? config.server : undefined;
    if (!server) return {};
    // Where the adapters write them (one layout each, src/real/*/config.ts).
    const file = server === 'postfix' ? postfixLayout(config.dataDir).effective : dovecotPaths(config.dataDir).effective;
    return { server, effectiveConfig: { path: file, in: this.runtime.kind === 'docker' ? 'container' : 'host' } };
  }

  async stop(options: { keepData?: boolean } = {}): Promise<void> {
    await Promise.all([...this.devices].map((d) => d.close().catch(() => undefined)));
    // Reverse start order: clients of a node stop before it.
    for (const node of this.nodes().reverse()) {
      await node.shutdown().catch(() => undefined);
    }
    await this.runtime.dispose({ keepData: options.keepData ?? process.env.MAILLAB_KEEP === '1' });
  }
}

/**
 * The lab DNS's fault rules (issue 15; the shapes are src/shared/faults.ts's `DnsFaultRule`). Every change replaces the
 * whole list on the node (`set-dns-faults`), is checked there (an invalid list changes nothing and fails with the
 * reasons), and is recorded in the history as `dns-faults-change`. Each rule that fires is a `fault` event of the dns node.
 */
export interface DnsFaultsHandle {
  /** The rules in force, each with how often it fired. */
  list(): Promise<DnsFaultRuleView[]>;
  /** Replaces every rule; counts (`times`) and chance draws start again. */
  set(rules: DnsFaultRule[]): Promise<DnsFaultRuleView[]>;
  /**
   * Adds rules after those in force (the first rule that fires decides, so earlier rules win). The others keep what
   * they have left: a rule with `times` is set again with its remaining count, a spent one is dropped.
   */
  add(...rules: DnsFaultRule[]): Promise<DnsFaultRuleView[]>;
  /** Removes the rules with these ids, or every rule when none is named: the zones answer again. */
  clear(...ids: string[]): Promise<DnsFaultRuleView[]>;
}

function dnsFaultsOf(control: () => ControlClient<DnsContract>): DnsFaultsHandle {
  const list = async () => (await control().call('dns-faults')).rules;
  const set = async (rules: DnsFaultRule[]) => (await control().call('set-dns-faults', { rules })).rules;
  /** A held rule as a rule to set again: its remaining count, or nothing when spent. */
  const remaining = ({ fired, ...rule }: DnsFaultRuleView): DnsFaultRule[] => {
    if (rule.times === undefined) return [rule];
    return rule.times > fired ? [{ ...rule, times: rule.times - fired }] : [];
  };
  return {
    list,
    set,
    add: async (...rules) => set([...(await list()).flatMap(remaining), ...rules]),
    clear: async (...ids) => (ids.length ? set((await list()).filter((r) => !ids.includes(r.id)).flatMap(remaining)) : set([])),
  };
}
