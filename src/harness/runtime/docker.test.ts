// The docker runtime against a real engine: the hermetic image, a lab network, the nodes as containers reached
// through published ports, the faults, and the clean-up. Skipped (with the reason) where no engine answers.
import { randomBytes } from 'node:crypto';
import os from 'node:os';
import { Resolver } from 'node:dns/promises';
import nodemailer from 'nodemailer';
import { getContainerRuntimeClient } from 'testcontainers';
import { afterAll, describe, expect, it } from 'vitest';
import defaultLab from '../../../lab/default.js';
import type { NodeConfig } from '../../shared/config.js';
import type { MailboxContract } from '../../mailbox/api.js';
import { ControlClient, newControlToken } from '../../shared/control.js';
import { NODE_V8_FLAGS } from '../../shared/node.js';
import { ensureImage, planImage } from './images.js';
import type { LabNetwork } from './types.js';
import { createRuntime } from './index.js';
import { LocalRuntime } from './local.js';
import { createDockerRuntime, DockerRuntime, dockerEngine, LABEL, reapDockerLabs, type DockerRunningNode } from './docker.js';
import { currentOwner } from './owner.js';
import { CONTROL_PORT, planLab } from '../topology.js';
import { resolveMxRecords } from '../../dns/resolver.js';

const engine = await dockerEngine();
const skipReason = engine.available
  ? undefined
  : `no Docker engine answers at ${engine.where} (${engine.reason}); start dockerd (see scripts/docker-engine.sh) to run them`;
if (skipReason) console.warn(`[runtime/docker.test] skipping the docker runtime tests: ${skipReason}`);
const withEngine = it.skipIf(!engine.available);

describe('choosing a runtime', () => {
  // The engine is probed through an injected function, so the fallback is tested whether or not one runs here.
  const noEngine = async () => ({ available: false, where: 'unix:///nowhere.sock', reason: 'connect ENOENT' });

  it("'auto' without an engine falls back to the local runtime and says why", async () => {
    const notices: string[] = [];
    expect(await createRuntime('auto', { probeEngine: noEngine, notice: (m) => notices.push(m) })).toBeInstanceOf(LocalRuntime);
    expect(notices).toEqual([expect.stringMatching(/no Docker engine answers at unix:\/\/\/nowhere\.sock \(connect ENOENT\); using the local runtime/)]);
  });

  it("'docker' without an engine says why it cannot run", async () => {
    await expect(createRuntime('docker', { probeEngine: noEngine })).rejects.toThrow(/no Docker engine answers at unix:\/\/\/nowhere\.sock: start dockerd or use MAILLAB_RUNTIME=local/);
  });

  it("'local' needs no engine, and an unknown choice is refused", async () => {
    expect(await createRuntime('local', { probeEngine: () => Promise.reject(new Error('not asked')) })).toBeInstanceOf(LocalRuntime);
    await expect(createRuntime('podman' as 'local')).rejects.toThrow(/unknown runtime "podman"/);
  });
});

describe('docker runtime', () => {
  const labId = `dockertest-${randomBytes(3).toString('hex')}`;
  const token = newControlToken();
  let runtime: DockerRuntime | undefined;
  let network: LabNetwork;
  let nodes: Record<string, NodeConfig>;
  const running: Record<string, DockerRunningNode> = {};
  const docker = async () => (await getContainerRuntimeClient()).container.dockerode;
  const labFilter = JSON.stringify({ label: [`${LABEL.lab}=${labId}`] });

  afterAll(async () => {
    // Also after a failed test: nothing of the lab may stay behind.
    await runtime?.dispose();
  }, 60_000);

  withEngine('builds the node image FROM scratch once and reuses it by its content hash', { timeout: 180_000 }, async () => {
    const first = Date.now();
    const tag = await ensureImage({ log: (m) => console.log(`[runtime/docker.test] ${m}`) });
    const firstMs = Date.now() - first;
    expect(tag).toMatch(/^maillab-node:[0-9a-f]{12}$/);
    const plan = await planImage();
    expect(plan.tag).toBe(tag);

    const second = Date.now();
    expect(await ensureImage({ log: (m) => expect.fail(`the second ensureImage built again: ${m}`) })).toBe(tag);
    const secondMs = Date.now() - second;
    console.log(`[runtime/docker.test] ensureImage: ${firstMs} ms, then ${secondMs} ms with the image present`);
    expect(secondMs).toBeLessThan(3000);

    const image = await (await docker()).getImage(tag).inspect();
    expect(image.Config.Entrypoint).toEqual(['/usr/local/bin/node', ...NODE_V8_FLAGS, '/app/node.js']);
    expect(image.Config.Labels).toMatchObject({ maillab: '1' });
    expect(image.Os).toBe('linux');
    if (plan.runtime) {
      // FROM scratch: one layer with node and its libraries (maillab-runtime:…), one with the bundle, nothing else.
      expect(plan.runtime.tag).toMatch(/^maillab-runtime:[0-9a-f]{12}$/);
      expect(plan.runtime.files.map((f) => f.target)).toContain('/usr/local/bin/node');
      expect((await (await docker()).getImage(plan.runtime.tag).inspect()).RootFS.Layers).toHaveLength(1);
      expect(image.RootFS.Layers).toHaveLength(2);
    }
  });

  withEngine('prepares a bridge network of its own on a /24 of 198.18.0.0/15', { timeout: 180_000 }, async () => {
    const started = Date.now();
    runtime = await createDockerRuntime();
    expect(runtime.kind).toBe('docker');
    network = await runtime.prepare(defaultLab, labId);
    nodes = planLab(defaultLab, network).nodes;
    for (const config of Object.values(nodes)) config.controlToken = token;
    console.log(`[runtime/docker.test] prepare (image present): ${Date.now() - started} ms, network ${runtime.network?.subnet}`);

    expect(network.portOffset).toBe(0);
    const addresses = Object.values(network.addresses);
    expect(new Set(addresses).size).toBe(4);
    for (const a of addresses) {
      expect(a).toMatch(/^198\.1[89]\.\d+\.\d+$/);
      expect(a.startsWith('198.18.0.')).toBe(false);
    }
    const [info] = await (await docker()).listNetworks({ filters: labFilter });
    expect(info?.Labels).toMatchObject({ maillab: '1', [LABEL.lab]: labId, [LABEL.ownerPid]: String(process.pid), [LABEL.ownerHost]: os.hostname() });
    expect(info?.Labels?.[LABEL.ownerStart]).toBe(currentOwner().start);
    // A lab whose owner runs (this process) is never reaped by another lab's start.
    expect(await reapDockerLabs(await docker(), () => undefined)).not.toContain(labId);
    expect(await (await docker()).listNetworks({ filters: labFilter })).toHaveLength(1);
    expect(info?.IPAM?.Config?.[0]?.Subnet).toBe(runtime.network?.subnet);
    expect(nodes.mta!.dataDir).toBe('/var/maillab/mta');
  });

  withEngine('starts the dns node, which answers through its published UDP port', { timeout: 60_000 }, async () => {
    expect(runtime).toBeDefined();
    const dns = (running.dns = await runtime!.startNode(nodes.dns!));
    expect(dns.control.host).toBe('127.0.0.1');
    expect(dns.services.dns?.host).toBe('127.0.0.1');
    expect(dns.labServices.dns).toEqual({ host: network.addresses.dns, port: 53 });

    const resolver = new Resolver({ timeout: 2000, tries: 2 });
    resolver.setServers([`127.0.0.1:${dns.services.dns!.port}`]);
    expect(await resolveMxRecords(resolver, 'receiver.test')).toEqual([{ exchange: 'mx.receiver.test', priority: 10 }]);
    expect(await resolver.resolve4('mx.receiver.test')).toEqual([network.addresses.mx]);

    const health = await new ControlClient(dns.control, 'dns', token).health();
    expect(health).toMatchObject({ name: 'dns', role: 'dns' });

    // The container is on the lab network only, at its address, named, using the lab DNS, with its volume.
    const inspect = await (await docker()).getContainer(dns.containerId).inspect();
    expect(Object.keys(inspect.NetworkSettings.Networks)).toEqual([runtime!.network!.name]);
    expect(inspect.NetworkSettings.Networks[runtime!.network!.name]?.IPAddress).toBe(network.addresses.dns);
    expect(inspect.NetworkSettings.Networks[runtime!.network!.name]?.Aliases).toEqual(expect.arrayContaining(['ns.lab.test']));
    expect(inspect.Config.Hostname).toBe('ns.lab.test');
    expect(inspect.HostConfig.Dns).toEqual([network.addresses.dns]);
    expect(inspect.Mounts).toEqual([expect.objectContaining({ Type: 'volume', Destination: '/var/maillab/dns' })]);
    expect(inspect.Config.Labels).toMatchObject({ maillab: '1', [LABEL.lab]: labId, [LABEL.node]: 'dns' });
    expect(inspect.Config.ExposedPorts).toHaveProperty('53/udp');
    expect(inspect.Config.ExposedPorts).toHaveProperty(`${CONTROL_PORT}/tcp`);
  });

  withEngine('starts the whole lab and delivers alice → bob through the containers', { timeout: 90_000 }, async () => {
    expect(running.dns).toBeDefined();
    const started = Date.now();
    for (const name of ['mailbox', 'mx', 'mta']) running[name] = await runtime!.startNode(nodes[name]!);
    console.log(`[runtime/docker.test] mailbox, mx and mta ready in ${Date.now() - started} ms`);

    const submission = running.mta!.services.submission!;
    const transport = nodemailer.createTransport({
      host: submission.host,
      port: submission.port,
      secure: false,
      ignoreTLS: true,
      auth: { user: 'alice@sender.test', pass: 'alice-secret' },
      connectionTimeout: 5000,
    });
    const messageId = `<docker-${Date.now()}@sender.test>`;
    try {
      const info = await transport.sendMail({ from: 'alice@sender.test', to: 'bob@receiver.test', subject: 'through docker', text: 'hello bob', messageId });
      expect(info.response).toMatch(/^250 /);
    } finally {
      transport.close();
    }
    const mailbox = new ControlClient<MailboxContract>(running.mailbox!.control, 'mailbox', token);
    try {
      // Wait on the mailbox server's own event stream for the message to be stored, then look at the mailbox.
      const stored = await new Promise<boolean>((resolve) => {
        const timer = setTimeout(() => (stop(), resolve(false)), 30_000);
        const stop = mailbox.streamEvents(0, (e) => {
          if (e.kind === 'stored' && e.messageId === messageId) {
            clearTimeout(timer);
            stop();
            resolve(true);
          }
        }, () => undefined);
      });
      const why = `the message did not reach bob within 30 s; mta output:\n${running.mta!.logs()}\nmx output:\n${running.mx!.logs()}`;
      expect(stored, why).toBe(true);
      expect(await mailbox.call('messages', { user: 'bob@receiver.test' }), why).toHaveLength(1);
    } finally {
      mailbox.close();
    }
  });

  withEngine('a killed node comes back with its data; a disconnected node is cut off until it reconnects', { timeout: 90_000 }, async () => {
    expect(running.mailbox).toBeDefined();
    await running.mailbox!.kill();
    const before = running.mailbox!.control;
    running.mailbox = await runtime!.startNode(nodes.mailbox!);
    expect(running.mailbox.control).toEqual(before); // same host ports across restarts
    const mailbox = new ControlClient<MailboxContract>(running.mailbox.control, 'mailbox', token);
    try {
      expect(await mailbox.call('messages', { user: 'bob@receiver.test' })).toHaveLength(1);
    } finally {
      mailbox.close();
    }

    const dnsControl = () => new ControlClient(running.dns!.control, 'dns', token);
    await running.dns!.faults.disconnect();
    const cut = dnsControl();
    await expect(cut.health()).rejects.toThrow();
    cut.close();
    const inspect = await (await docker()).getContainer(running.dns!.containerId).inspect();
    expect(Object.keys(inspect.NetworkSettings.Networks)).toEqual([]);
    await running.dns!.faults.connect();
    const back = dnsControl();
    try {
      expect(await back.health()).toMatchObject({ name: 'dns' });
    } finally {
      back.close();
    }

    await running.dns!.faults.pause();
    await running.dns!.faults.unpause();
    await running.mx!.stop();
    await expect((await docker()).getContainer(running.mx!.containerId).inspect()).rejects.toMatchObject({ statusCode: 404 });
  });

  withEngine('dispose removes every container, the network and the volumes of the lab', { timeout: 60_000 }, async () => {
    expect(runtime).toBeDefined();
    const d = await docker();
    expect((await d.listVolumes({ filters: labFilter })).Volumes?.length).toBe(4);
    await runtime!.dispose();
    expect(await d.listContainers({ all: true, filters: labFilter })).toEqual([]);
    expect(await d.listNetworks({ filters: labFilter })).toEqual([]);
    expect((await d.listVolumes({ filters: labFilter })).Volumes ?? []).toEqual([]);
  });
});
