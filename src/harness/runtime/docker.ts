// The docker runtime: every node is a container of the maillab image (images.ts), on a bridge
// network of its own lab with a fixed address, its host name as network alias, a named volume for its data
// directory, and its control channel and services published on 127.0.0.1 for the harness.
//
//   lab network   maillab-<labId>, a free /24 inside 198.18.0.0/15 (RFC 2544 test addresses), gateway .1,
//                 hosts .2, .3, … in the lab's host order; containers are attached to it only (no default bridge)
//   container     maillab-<labId>-<node>: `<role> --config /config/node.json`, hostname = the node's host name,
//                 DNS server = the lab DNS container, ready when it prints MAILLAB_READY; MAILLAB_CONTAINER=1 in its
//                 environment. A real server's node (Postfix, Dovecot) runs from the real-server image (images.ts,
//                 built only for a lab that has one) with an init as pid 1 that reaps the servers' orphans; its
//                 adapter writes the container's /etc/resolv.conf to name the lab DNS only (src/real/lab-resolver.ts)
//   volume        maillab-<labId>-<node> at /var/maillab/<node>: survives stop/kill + start, removed by dispose()
//   ports         standard ports inside (portOffset 0); each published on a host port of 127.0.0.1 chosen once
//                 per node, so a node's endpoints stay the same across kill/start and disconnect/connect. Every
//                 port of the config is published, served or not (465/993/995 before a node offers implicit TLS):
//                 readiness is the READY line alone, and a node's services are the ones its READY line lists
//   host dir      maillab-<labId>-XXXXXX in the host's tmpdir (local.ts createHostDir): the lab CA's certificate
//   labels        maillab=1, maillab.lab=<labId>, maillab.node=<node> on containers, network and volumes, and the
//                 lab's owner (owner.ts): maillab.owner.pid, .start (the process's start time), .host.
//                 dispose() removes a lab's, pruneLabs() every lab's, and every prepare() first removes the labs
//                 of this host whose owner is gone (reapDockerLabs): a killed harness leaves nothing for long.
//   names         /etc/resolv.conf says 127.0.0.11 (Docker's embedded resolver, on every user-defined network): it
//                 answers the lab's network aliases and forwards every other name to the lab DNS (HostConfig.Dns).
//                 The nodes themselves only ask the resolver in their config, the lab DNS.
//
// An engine: any Docker API on DOCKER_HOST or the default socket. Nothing is pulled (see images.ts). Where no
// daemon runs, e.g. `apt-get install docker.io` and
//   dockerd --bip 198.18.0.1/24 --default-address-pool base=198.18.0.0/15,size=24 >/tmp/dockerd.log 2>&1 &
// (keeps Docker's own networks in the test range too, off 10/8, 172.16/12 and 192.168/16).
import dgram from 'node:dgram';
import { readFile } from 'node:fs/promises';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import type { Readable } from 'node:stream';
import { GenericContainer, LABEL_TESTCONTAINERS_SESSION_ID, Wait, getContainerRuntimeClient, getReaper, type ContainerRuntimeClient } from 'testcontainers';
import type { Endpoint, NodeConfig } from '../../shared/config.js';
import { READY_MARKER } from '../../shared/node.js';
import { ensureImage, IMAGE_PATHS, type ImageOptions } from './images.js';
import { createHostDir, realServerHosts, reapLocalLabs, releaseHostDir } from './local.js';
import { currentOwner, ownerState, reapedLine } from './owner.js';
import type { LabNetwork, NetworkFaults, RunningNode, Runtime } from './types.js';
import { labNodeNames, type LabDefinition } from '../topology.js';

/** The address block labs take their /24 from; its first /24 is dockerd's default bridge here (--bip 198.18.0.1/24). */
export const LAB_ADDRESS_POOL = '198.18.0.0/15';
export const LABEL = {
  maillab: 'maillab',
  lab: 'maillab.lab',
  node: 'maillab.node',
  role: 'maillab.role',
  /** The harness process that owns the lab (owner.ts): pid, start time, host. */
  ownerPid: 'maillab.owner.pid',
  ownerStart: 'maillab.owner.start',
  ownerHost: 'maillab.owner.host',
} as const;

const READY_TIMEOUT_MS = 30_000;
const STOP_TIMEOUT_S = 10;
const HOST_IP = '127.0.0.1';

/** A node in a container: the `RunningNode` contract plus the faults only containers can have. */
export interface DockerRunningNode extends RunningNode {
  readonly containerId: string;
  readonly containerName: string;
  /** The node's address on the lab network (what the other nodes use). */
  readonly address: string;
  /** Its services as the other nodes reach them (lab address, standard ports). */
  readonly labServices: Record<string, Endpoint>;
  /** pause/unpause (docker pause) and disconnect/connect (leaving and rejoining the lab network). */
  readonly faults: NetworkFaults;
  /** The node's recent output (stdout and stderr). */
  logs(): string;
}

export interface DockerRuntimeOptions extends ImageOptions {
  /** How long a node may take to print MAILLAB_READY (30 s). */
  readyTimeoutMs?: number;
}

export interface DockerEngineStatus {
  available: boolean;
  /** Where the engine was looked for (DOCKER_HOST or the default socket). */
  where: string;
  /** Why it is not available. */
  reason?: string;
  /** The engine's version, when available. */
  version?: string;
}

/** The defaults testcontainers needs here: no Ryuk (it is an image pull; labs clean up after themselves, see pruneLabs) and local ports. */
export function configureTestcontainers(): void {
  process.env.TESTCONTAINERS_RYUK_DISABLED ??= 'true';
  const dockerHost = process.env.DOCKER_HOST ?? '';
  if (!dockerHost || dockerHost.startsWith('unix://') || dockerHost.startsWith('npipe://')) process.env.TESTCONTAINERS_HOST_OVERRIDE ??= 'localhost';
}

function engineLocation(): string {
  return process.env.DOCKER_HOST ?? (process.platform === 'win32' ? 'npipe:////./pipe/docker_engine' : 'unix:///var/run/docker.sock');
}

/** Whether a Docker engine answers (within `timeoutMs`), without throwing. */
export async function dockerEngine(timeoutMs = 10_000): Promise<DockerEngineStatus> {
  configureTestcontainers();
  const where = engineLocation();
  let timer: NodeJS.Timeout | undefined;
  try {
    const client = await Promise.race([
      getContainerRuntimeClient(),
      new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new Error(`no answer within ${timeoutMs} ms`)), timeoutMs);
        timer.unref();
      }),
    ]);
    const version = (await client.container.dockerode.version()).Version;
    return { available: true, where, version };
  } catch (err) {
    return { available: false, where, reason: err instanceof Error ? err.message : String(err) };
  } finally {
    clearTimeout(timer);
  }
}

/** A DockerRuntime on the engine that answers (see `dockerEngine`); runtime/index.ts decides when to use one. */
export async function createDockerRuntime(options: DockerRuntimeOptions = {}): Promise<DockerRuntime> {
  return new DockerRuntime(await getContainerRuntimeClient(), options);
}

type Docker = ContainerRuntimeClient['container']['dockerode'];
type Protocol = 'tcp' | 'udp';

interface PublishedPort {
  /** Port inside the container (the standard one). */
  container: number;
  protocols: Protocol[];
  /** Host port on 127.0.0.1 (the same for TCP and UDP). */
  host: number;
}

/** What a lab keeps per node across its starts: the volume and the host ports. */
interface NodeSlot {
  name: string;
  volume: string;
  ports?: PublishedPort[];
  running?: DockerRunningNode;
}

interface PreparedLab {
  id: string;
  /** `id` as Docker names allow it: the prefix of the lab's container, network and volume names. */
  slug: string;
  networkId: string;
  networkName: string;
  subnet: string;
  dnsAddress: string;
  addresses: Record<string, string>;
  labels: Record<string, string>;
  /** The lab's directory on the harness's host (createHostDir). */
  hostDir: string;
}

export class DockerRuntime implements Runtime {
  readonly kind = 'docker' as const;
  private lab?: PreparedLab;
  private image?: string;
  /** The real-server image (images.ts, `real`), built when the lab has a Postfix or Dovecot host. */
  private realImage?: string;
  private readonly slots = new Map<string, NodeSlot>();
  private readonly docker: Docker;

  constructor(
    private readonly client: ContainerRuntimeClient,
    private readonly options: DockerRuntimeOptions = {},
  ) {
    configureTestcontainers();
    this.docker = client.container.dockerode;
  }

  /** The lab network (after prepare). */
  get network(): { id: string; name: string; subnet: string } | undefined {
    return this.lab && { id: this.lab.networkId, name: this.lab.networkName, subnet: this.lab.subnet };
  }

  async prepare(lab: LabDefinition, labId: string): Promise<LabNetwork> {
    if (this.lab) throw new Error(`this docker runtime already runs lab ${this.lab.id}`);
    const real = realServerHosts(lab);
    // External hosts (issue 14) are on the host's loopback, which a container on the lab network cannot reach.
    const external = Object.entries(lab.hosts).flatMap(([host, h]) => (h.role === 'external' ? [`${host} (${h.hostname} at ${h.address})`] : []));
    if (external.length) throw new Error(`lab ${lab.name}: external host${external.length === 1 ? '' : 's'} ${external.join(', ')} on the host's loopback cannot be reached from the docker runtime's lab network: use the local runtime`);
    // Labs of dead harnesses go first: docker ones, and the local runtime's data directories (cheap) too.
    await reapDockerLabs(this.docker).catch((err: unknown) => process.stderr.write(`maillab: could not look for left-over labs: ${(err as Error).message}\n`));
    await reapLocalLabs();
    this.image = await ensureImage({ log: (m) => process.stderr.write(`maillab: ${m}\n`), ...this.options });
    if (real.length) this.realImage = await realImageFor(lab, real, this.options);
    const owner = currentOwner();
    const labels: Record<string, string> = {
      [LABEL.maillab]: '1',
      [LABEL.lab]: labId,
      [LABEL.ownerPid]: String(owner.pid),
      [LABEL.ownerStart]: owner.start,
      [LABEL.ownerHost]: owner.host,
    };
    // With Ryuk enabled (TESTCONTAINERS_RYUK_DISABLED=false), it also removes the network and volumes of a crashed run.
    if (process.env.TESTCONTAINERS_RYUK_DISABLED !== 'true') labels[LABEL_TESTCONTAINERS_SESSION_ID] = (await getReaper(this.client)).sessionId;

    // Hosts and link proxies (issue 15) each get an address.
    const hosts = labNodeNames(lab);
    if (hosts.length > 250) throw new Error(`lab ${lab.name}: ${hosts.length} hosts do not fit a /24`);
    const slug = `maillab-${labId.toLowerCase().replace(/[^a-z0-9_.-]+/g, '-')}`;
    const networkName = slug;
    const { id, subnet } = await this.createNetwork(networkName, labels);
    const prefix = subnet.split('.').slice(0, 3).join('.');
    const addresses = Object.fromEntries(hosts.map((h, i) => [h, `${prefix}.${i + 2}`]));
    const dnsHost = hosts.find((h) => lab.hosts[h]?.role === 'dns');
    // The lab's directory on this host (the lab CA's certificate), reaped like a local lab's when the owner is gone.
    const hostDir = await createHostDir(labId);
    this.lab = { id: labId, slug, networkId: id, networkName, subnet, dnsAddress: addresses[dnsHost ?? hosts[0]!]!, addresses, labels, hostDir };
    return { addresses, portOffset: 0, dataRoot: IMAGE_PATHS.dataRoot, hostDir };
  }

  async startNode(config: NodeConfig): Promise<DockerRunningNode> {
    const lab = this.lab;
    if (!lab || !this.image) throw new Error('the docker runtime is not prepared: call prepare() first');
    if (lab.addresses[config.name] !== config.address)
      throw new Error(`node ${config.name}: address ${config.address} is not its address on lab network ${lab.networkName} (${lab.addresses[config.name] ?? 'none'})`);
    const slot = await this.slot(config.name);
    if (slot.running) {
      const state = await this.docker
        .getContainer(slot.running.containerId)
        .inspect()
        .then((i) => i.State, () => undefined);
      if (state?.Running) throw new Error(`node ${config.name} is already running (container ${slot.running.containerName})`);
      slot.running = undefined; // it exited on its own: start it again
    }
    const containerName = `${lab.slug}-${config.name}`;
    await this.removeContainer(containerName); // an exited one, or a leftover of a failed stop

    const dataDir = path.posix.join(IMAGE_PATHS.dataRoot, config.name);
    const real = runsRealServer(config);
    if (real && !this.realImage) throw new Error(`node ${config.name} runs a real server, but its lab was prepared without one (no real-server image)`);
    const { config: inContainer, files } = await containerConfig({ ...config, dataDir });
    const wanted = publishedPortsOf(config);
    for (let attempt = 1; ; attempt++) {
      if (!samePorts(slot.ports, wanted)) slot.ports = await allocateHostPorts(wanted);
      const output = new OutputTail();
      const container = new LabNodeContainer(real ? this.realImage! : this.image, {
        network: lab.networkName,
        address: config.address,
        aliases: [...new Set([config.hostname, config.name])],
        dns: lab.dnsAddress,
        volume: slot.volume,
        dataDir,
        // A real server's processes (Postfix's master and daemons, Dovecot's) outlive their parents: an init reaps them.
        init: real,
      })
        .withName(containerName)
        .withHostname(config.hostname)
        .withLabels({ ...lab.labels, [LABEL.node]: config.name, [LABEL.role]: config.role })
        .withCommand([config.role, '--config', IMAGE_PATHS.config])
        // MAILLAB_CONTAINER: the real servers' adapters use the container's own resolv.conf (src/real/lab-resolver.ts).
        .withEnvironment({ MAILLAB_CONTAINER: '1', ...(process.env.MAILLAB_SOURCE_MAPS === '1' ? { NODE_OPTIONS: '--enable-source-maps' } : {}) })
        .withNetworkMode(lab.networkName)
        .withExposedPorts(...slot.ports.flatMap((p) => p.protocols.map((protocol) => ({ container: p.container, host: p.host, protocol }))))
        .withCopyContentToContainer([{ content: JSON.stringify(inContainer, null, 2), target: IMAGE_PATHS.config, mode: 0o400 }, ...files])
        .withLogConsumer((stream) => output.follow(stream))
        .withWaitStrategy(Wait.forLogMessage(READY_MARKER))
        .withStartupTimeout(this.options.readyTimeoutMs ?? READY_TIMEOUT_MS);
      try {
        const started = await container.start();
        const ready = await output.ready(2000);
        const running = this.runningNode(config, slot, started.getId(), containerName, ready, output);
        slot.running = running;
        return running;
      } catch (err) {
        await this.removeContainer(containerName);
        const message = err instanceof Error ? err.message : String(err);
        if (attempt < 3 && /port is already allocated|address already in use/i.test(message)) {
          slot.ports = undefined; // someone took one of the host ports meanwhile: choose others
          continue;
        }
        throw new Error(`node ${config.name} (${config.role}) in container ${containerName} at ${config.address}: ${message}\n${output.text().trim()}`, { cause: err });
      }
    }
  }

  async dispose(options: { keepData?: boolean } = {}): Promise<void> {
    const lab = this.lab;
    if (!lab) return;
    await removeLabelled(this.docker, `${LABEL.lab}=${lab.id}`, { volumes: !options.keepData });
    await releaseHostDir(lab.hostDir, options);
    if (options.keepData) {
      const volumes = [...this.slots.values()].map((s) => s.volume);
      if (volumes.length) process.stderr.write(`maillab: kept the data volumes of lab ${lab.id}: ${volumes.join(', ')} (maillab prune removes them)\n`);
    }
    this.slots.clear();
    this.lab = undefined;
  }

  private async slot(name: string): Promise<NodeSlot> {
    let slot = this.slots.get(name);
    if (!slot) {
      const volume = `${this.lab!.slug}-${name}`;
      await this.docker.createVolume({ Name: volume, Labels: { ...this.lab!.labels, [LABEL.node]: name } });
      slot = { name, volume };
      this.slots.set(name, slot);
    }
    return slot;
  }

  private runningNode(config: NodeConfig, slot: NodeSlot, containerId: string, containerName: string, ready: ReadyLine, output: OutputTail): DockerRunningNode {
    const lab = this.lab!;
    const container = this.docker.getContainer(containerId);
    const network = this.docker.getNetwork(lab.networkId);
    const hostPort = (port: number) => slot.ports!.find((p) => p.container === port)?.host;
    const services: Record<string, Endpoint> = {};
    for (const [name, endpoint] of Object.entries(ready.services)) {
      const port = hostPort(endpoint.port);
      if (port === undefined) process.stderr.write(`maillab: node ${config.name}: service ${name} on port ${endpoint.port} is not in its config, so it is not published\n`);
      else services[name] = { host: HOST_IP, port };
    }
    const controlPort = hostPort(ready.control.port) ?? hostPort(config.controlPort)!;
    let state: 'running' | 'paused' | 'gone' = 'running';
    const halt = async (how: 'stop' | 'kill') => {
      if (state === 'gone') return;
      try {
        if (how === 'stop') {
          if (state === 'paused') await container.unpause().catch(ignoreGone);
          await container.stop({ t: STOP_TIMEOUT_S }).catch(ignoreGone);
        } else {
          await container.kill({ signal: 'SIGKILL' }).catch(ignoreGone);
          // A frozen container dies of SIGKILL too; if the engine left it paused, let it go.
          if (state === 'paused') await container.unpause().catch(() => undefined);
          await container.wait({ condition: 'not-running' }).catch(ignoreGone);
        }
        await container.remove({ force: true, v: false }).catch(ignoreGone);
      } finally {
        state = 'gone';
        if (slot.running === running) slot.running = undefined;
      }
    };
    const whileUp = (what: string) => {
      if (state === 'gone') throw new Error(`node ${config.name}: cannot ${what}, its container is gone`);
    };
    const running: DockerRunningNode = {
      control: { host: HOST_IP, port: controlPort },
      services,
      containerId,
      containerName,
      address: config.address,
      labServices: ready.services,
      stop: () => halt('stop'),
      kill: () => halt('kill'),
      faults: {
        pause: async () => {
          whileUp('pause');
          await container.pause();
          state = 'paused';
        },
        unpause: async () => {
          whileUp('unpause');
          await container.unpause();
          state = 'running';
        },
        disconnect: async () => {
          whileUp('disconnect');
          await network.disconnect({ Container: containerId, Force: true }).catch(ignoreIf(/is not connected/i));
        },
        connect: async () => {
          whileUp('connect');
          await network
            .connect({
              Container: containerId,
              EndpointConfig: { IPAMConfig: { IPv4Address: config.address }, Aliases: [...new Set([config.hostname, config.name])] },
            })
            .catch(ignoreIf(/already exists in network/i));
        },
      },
      logs: () => output.text(),
    };
    return running;
  }

  /** A bridge network on a free /24 of LAB_ADDRESS_POOL (retried when a concurrent lab takes the same one). */
  private async createNetwork(name: string, labels: Record<string, string>): Promise<{ id: string; subnet: string }> {
    let lastError: unknown;
    for (let attempt = 0; attempt < 8; attempt++) {
      const subnet = await freeSubnet(this.docker);
      const gateway = subnet.replace(/\.0\/24$/, '.1');
      try {
        const network = await this.docker.createNetwork({
          Name: name,
          Driver: 'bridge',
          CheckDuplicate: true,
          EnableIPv6: false,
          IPAM: { Driver: 'default', Config: [{ Subnet: subnet, Gateway: gateway }] },
          // Nodes talk to each other and to the harness through published ports; nothing is routed out.
          Options: { 'com.docker.network.bridge.enable_ip_masquerade': 'false' },
          Labels: labels,
        });
        return { id: network.id, subnet };
      } catch (err) {
        lastError = err;
        if (!/overlap|conflict|already/i.test(String((err as Error).message))) break;
      }
    }
    throw new Error(`cannot create the lab network ${name}: ${(lastError as Error)?.message ?? lastError}`);
  }

  private async removeContainer(name: string): Promise<void> {
    await this.docker
      .getContainer(name)
      .remove({ force: true, v: false })
      .catch(ignoreGone);
  }
}

/** A GenericContainer on the lab network only, with a fixed address, the lab DNS, and the node's volume. */
class LabNodeContainer extends GenericContainer {
  constructor(
    image: string,
    private readonly lab: { network: string; address: string; aliases: string[]; dns: string; volume: string; dataDir: string; init?: boolean },
  ) {
    super(image);
  }

  protected override async beforeContainerCreated(): Promise<void> {
    // Created on the lab network (NetworkMode) with its endpoint settings, so it never touches the default bridge.
    this.createOpts.NetworkingConfig = {
      EndpointsConfig: { [this.lab.network]: { IPAMConfig: { IPv4Address: this.lab.address }, Aliases: this.lab.aliases } },
    };
    this.hostConfig.Dns = [this.lab.dns];
    this.hostConfig.Mounts = [{ Type: 'volume', Source: this.lab.volume, Target: this.lab.dataDir }];
    this.hostConfig.RestartPolicy = { Name: 'no' };
    if (this.lab.init) this.hostConfig.Init = true;
    for (const bindings of Object.values(this.hostConfig.PortBindings ?? {}) as { HostIp?: string }[][]) for (const b of bindings) b.HostIp = HOST_IP;
  }
}

interface ReadyLine {
  name: string;
  services: Record<string, Endpoint>;
  control: Endpoint;
}

/** Follows a container's output: keeps its tail and finds the MAILLAB_READY line. */
class OutputTail {
  private buffer = '';
  private partial = '';
  private readyLine?: ReadyLine;
  private readonly waiters: ((line: ReadyLine) => void)[] = [];

  follow(stream: Readable): void {
    stream.setEncoding('utf8');
    stream.on('data', (chunk: string) => {
      if (process.env.MAILLAB_VERBOSE) process.stderr.write(chunk);
      this.buffer = (this.buffer + chunk).slice(-16_000);
      this.partial += chunk;
      let nl: number;
      while ((nl = this.partial.indexOf('\n')) >= 0) {
        const line = this.partial.slice(0, nl);
        this.partial = this.partial.slice(nl + 1);
        if (!this.readyLine && line.startsWith(READY_MARKER)) {
          try {
            this.readyLine = JSON.parse(line.slice(READY_MARKER.length)) as ReadyLine;
          } catch {
            continue;
          }
          for (const w of this.waiters.splice(0)) w(this.readyLine);
        }
      }
    });
    stream.on('error', () => undefined);
  }

  ready(timeoutMs: number): Promise<ReadyLine> {
    if (this.readyLine) return Promise.resolve(this.readyLine);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`the ${READY_MARKER.trim()} line was seen but could not be read from the output`)), timeoutMs);
      this.waiters.push((line) => {
        clearTimeout(timer);
        resolve(line);
      });
    });
  }

  text(): string {
    return this.buffer;
  }
}

/** Whether a node runs a real server (Postfix, Dovecot) instead of maillab's own: those run from the real-server image. */
function runsRealServer(config: NodeConfig): boolean {
  return (config.role === 'mailbox' && config.server === 'dovecot') || ((config.role === 'mx' || config.role === 'mta') && config.server === 'postfix');
}

/** The real-server image for a lab's Postfix and Dovecot hosts, or an error that says why it cannot be had. */
async function realImageFor(lab: LabDefinition, real: { host: string; server: string }[], options: DockerRuntimeOptions): Promise<string> {
  try {
    return await ensureImage({ log: (m) => process.stderr.write(`maillab: ${m}\n`), ...options, real: true });
  } catch (err) {
    const hosts = real.map((r) => `${r.host} (${r.server})`).join(', ');
    throw new Error(`lab ${lab.name}: ${hosts} run${real.length === 1 ? 's' : ''} a real server, and its image cannot be built: ${(err as Error).message}`, { cause: err });
  }
}

/** Where a Dovecot node's own dovecot.conf (a host path in its config) is copied into its container. */
const DOVECOT_USER_CONFIG = '/config/dovecot-user.conf';

/**
 * A node's config as its container sees it, and the host files it names that go along: a Dovecot node's own
 * dovecot.conf is a path on the host, copied in (read-only, 0444) and named by its path inside. Postfix's files are
 * contents already.
 */
async function containerConfig(config: NodeConfig): Promise<{ config: NodeConfig; files: { content: string; target: string; mode: number }[] }> {
  if (config.role !== 'mailbox' || config.server !== 'dovecot' || !config.dovecot?.config) return { config, files: [] };
  const content = await readFile(config.dovecot.config, 'utf8').catch((err: Error) => {
    throw new Error(`node ${config.name}: its dovecot.conf ${config.dovecot?.config} cannot be read: ${err.message}`);
  });
  return { config: { ...config, dovecot: { ...config.dovecot, config: DOVECOT_USER_CONFIG } }, files: [{ content, target: DOVECOT_USER_CONFIG, mode: 0o444 }] };
}

/** The ports a node's config says it listens on, control included (DNS on UDP and TCP). */
function publishedPortsOf(config: NodeConfig): Omit<PublishedPort, 'host'>[] {
  const ports: Omit<PublishedPort, 'host'>[] = [{ container: config.controlPort, protocols: ['tcp'] }];
  if (config.role === 'dns') {
    ports.push({ container: config.port, protocols: ['udp', 'tcp'] });
    if (config.mtaSts) ports.push({ container: config.mtaSts.port, protocols: ['tcp'] });
  }
  else for (const port of Object.values(config.ports)) if (typeof port === 'number') ports.push({ container: port, protocols: ['tcp'] });
  // Services configured outside `ports`: the mailbox's account service, the MTA's HTTP email API.
  if (config.role === 'mailbox' && config.accounts) ports.push({ container: config.accounts.port, protocols: ['tcp'] });
  if (config.role === 'mta' && config.api) ports.push({ container: config.api.port, protocols: ['tcp'] });
  const seen = new Set<number>();
  return ports.filter((p) => !seen.has(p.container) && seen.add(p.container));
}

function samePorts(have: PublishedPort[] | undefined, wanted: Omit<PublishedPort, 'host'>[]): have is PublishedPort[] {
  const key = (ports: Omit<PublishedPort, 'host'>[]) => ports.map((p) => `${p.container}/${p.protocols.join('+')}`).sort().join(',');
  return have !== undefined && key(have) === key(wanted);
}

async function allocateHostPorts(ports: Omit<PublishedPort, 'host'>[]): Promise<PublishedPort[]> {
  const taken = new Set<number>();
  const result: PublishedPort[] = [];
  for (const p of ports) {
    const host = await freeHostPort(p.protocols, taken);
    taken.add(host);
    result.push({ ...p, host });
  }
  return result;
}

/** A port of 127.0.0.1 free for every protocol given (TCP's choice, checked on UDP). */
async function freeHostPort(protocols: Protocol[], taken: Set<number>): Promise<number> {
  for (let attempt = 0; attempt < 50; attempt++) {
    const port = await new Promise<number>((resolve, reject) => {
      const server = net.createServer();
      server.once('error', reject);
      server.listen(0, HOST_IP, () => {
        const { port } = server.address() as net.AddressInfo;
        server.close(() => resolve(port));
      });
    });
    if (taken.has(port)) continue;
    if (protocols.includes('udp') && !(await udpFree(port))) continue;
    return port;
  }
  throw new Error('no free host port on 127.0.0.1');
}

function udpFree(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = dgram.createSocket('udp4');
    socket.once('error', () => resolve(false));
    socket.bind(port, HOST_IP, () => socket.close(() => resolve(true)));
  });
}

/** A /24 of LAB_ADDRESS_POOL (not its first) that no network of the engine and no host interface uses. */
async function freeSubnet(docker: Docker): Promise<string> {
  const used: [number, number][] = [];
  for (const network of await docker.listNetworks()) {
    for (const config of network.IPAM?.Config ?? []) {
      const range = config.Subnet ? cidrRange(config.Subnet) : undefined;
      if (range) used.push(range);
    }
  }
  for (const addresses of Object.values(os.networkInterfaces())) {
    for (const a of addresses ?? []) if (a.family === 'IPv4' && a.cidr) used.push(cidrRange(a.cidr)!);
  }
  const [poolStart, poolEnd] = cidrRange(LAB_ADDRESS_POOL)!;
  const blocks = (poolEnd - poolStart + 1) / 256;
  const first = 1 + Math.floor(Math.random() * (blocks - 1));
  for (let i = 0; i < blocks - 1; i++) {
    const start = poolStart + ((first - 1 + i) % (blocks - 1)) * 256 + 256;
    const end = start + 255;
    if (!used.some(([s, e]) => s <= end && start <= e)) return `${ipString(start)}/24`;
  }
  throw new Error(`no free /24 left in ${LAB_ADDRESS_POOL} for a lab network: remove old labs with "maillab prune"`);
}

function cidrRange(cidr: string): [number, number] | undefined {
  const match = /^(\d+)\.(\d+)\.(\d+)\.(\d+)\/(\d+)$/.exec(cidr);
  if (!match) return undefined;
  const ip = match.slice(1, 5).reduce((acc, octet) => acc * 256 + Number(octet), 0);
  const bits = Number(match[5]);
  const size = 2 ** (32 - bits);
  const start = ip - (ip % size);
  return [start, start + size - 1];
}

function ipString(ip: number): string {
  return [24, 16, 8, 0].map((shift) => Math.floor(ip / 2 ** shift) % 256).join('.');
}

function ignoreIf(pattern: RegExp): (err: unknown) => void {
  return (err) => {
    if (!pattern.test(String((err as Error).message))) throw err;
  };
}

function ignoreGone(err: unknown): void {
  const status = (err as { statusCode?: number }).statusCode;
  // 304: already stopped/started; 404: no such container/network/volume; 409: not running / not paused
  if (status === 304 || status === 404 || status === 409) return;
  throw err;
}

/**
 * Removes the labs whose owner (the harness process that started them, labels maillab.owner.*) is gone: the
 * containers, network and volumes a SIGKILLed `maillab up` or a cancelled CI job left. Labs of running owners
 * (parallel vitest workers), of other hosts, without owner labels, and labs of which only volumes remain (data
 * kept on purpose, MAILLAB_KEEP=1) are left alone; `maillab prune` removes everything. Says on stderr what it
 * removed; returns the lab ids.
 */
export async function reapDockerLabs(docker: Docker, log: (line: string) => void = (l) => process.stderr.write(l + '\n')): Promise<string[]> {
  const filters = JSON.stringify({ label: [`${LABEL.maillab}=1`] });
  const [containers, networks, volumes] = await Promise.all([
    docker.listContainers({ all: true, filters }),
    docker.listNetworks({ filters }),
    docker.listVolumes({ filters }).then((v) => v.Volumes ?? []),
  ]);
  const labs = new Map<string, { labels: Record<string, string>; running: boolean }>();
  for (const labels of [...containers.map((c) => c.Labels), ...networks.map((n) => n.Labels)]) {
    const id = labels?.[LABEL.lab];
    if (id && !labs.has(id)) labs.set(id, { labels, running: true });
  }
  for (const v of volumes) {
    const id = v.Labels?.[LABEL.lab];
    if (id && !labs.has(id)) labs.set(id, { labels: v.Labels, running: false });
  }
  const reaped: string[] = [];
  for (const [id, lab] of labs) {
    if (!lab.running) continue; // only volumes: kept on purpose
    const state = ownerState({ pid: Number(lab.labels[LABEL.ownerPid]), start: lab.labels[LABEL.ownerStart] ?? '', host: lab.labels[LABEL.ownerHost] });
    if (state.state !== 'gone') continue;
    try {
      const removed = await removeLabelled(docker, `${LABEL.lab}=${id}`, { volumes: true });
      reaped.push(id);
      log(reapedLine(id, state.why, `${removed.containers} container(s), ${removed.networks} network(s), ${removed.volumes} volume(s)`));
    } catch (err) {
      log(`maillab: could not reap lab ${id}: ${(err as Error).message}`);
    }
  }
  return reaped;
}

/** Removes every container, network and volume carrying `label` (`key=value`). */
async function removeLabelled(docker: Docker, label: string, what: { volumes: boolean }): Promise<{ containers: number; networks: number; volumes: number }> {
  const filters = JSON.stringify({ label: [label] });
  const containers = await docker.listContainers({ all: true, filters });
  await Promise.all(containers.map((c) => docker.getContainer(c.Id).remove({ force: true, v: false }).catch(ignoreGone)));
  const networks = await docker.listNetworks({ filters });
  await Promise.all(networks.map((n) => docker.getNetwork(n.Id).remove().catch(ignoreGone)));
  let volumes = 0;
  if (what.volumes) {
    const listed = (await docker.listVolumes({ filters })).Volumes ?? [];
    await Promise.all(listed.map((v) => docker.getVolume(v.Name).remove().catch(ignoreGone)));
    volumes = listed.length;
  }
  return { containers: containers.length, networks: networks.length, volumes };
}

/** Removes the containers, network and volumes of one lab. */
export async function removeLab(labId: string): Promise<{ containers: number; networks: number; volumes: number }> {
  configureTestcontainers();
  const client = await getContainerRuntimeClient();
  return removeLabelled(client.container.dockerode, `${LABEL.lab}=${labId}`, { volumes: true });
}

/** Removes everything of every lab (label maillab=1): containers, networks, volumes. Images stay. */
export async function pruneLabs(): Promise<{ containers: number; networks: number; volumes: number }> {
  configureTestcontainers();
  const client = await getContainerRuntimeClient();
  return removeLabelled(client.container.dockerode, `${LABEL.maillab}=1`, { volumes: true });
}
