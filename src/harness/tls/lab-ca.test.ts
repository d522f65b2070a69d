// Lab.start and the lab CA (issue 11): a new CA per start, a certificate per node in its config before it starts
// (the host name and the node's address as SANs), the faults the definition sets, and the CA's certificate in a
// file of the lab (`lab.caFile`, `up --json`'s `ca`) that goes with the lab. On the local runtime, and on docker
// where an engine answers (skipped with the reason otherwise).
import tls from 'node:tls';
import { X509Certificate, createPrivateKey } from 'node:crypto';
import { existsSync, promises as fs } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import defaultLab from '../../../lab/default.js';
import { Lab, type StartedLab } from '../lab.js';
import { getContainerRuntimeClient } from 'testcontainers';
import { dockerEngine } from '../runtime/docker.js';

const engine = await dockerEngine();
if (!engine.available) console.warn(`[tls/lab-ca.test] skipping the docker test: no Docker engine answers at ${engine.where} (${engine.reason})`);

describe('Lab.start with the lab CA', () => {
  let lab: StartedLab;

  beforeAll(async () => {
    lab = await new Lab(defaultLab)
      .withRuntime('local')
      .with((d) => (d.tls = { certificates: { mx: 'expired' } }))
      .start();
  });
  afterAll(async () => {
    await lab?.stop();
  });

  it('gives the CA as PEM, and writes it to ca.pem in the lab directory, readable by anyone (a certificate)', async () => {
    const ca = new X509Certificate(lab.ca);
    expect(ca.ca).toBe(true);
    expect(ca.subject).toContain('maillab default lab CA');
    expect(path.isAbsolute(lab.caFile)).toBe(true);
    expect(path.basename(lab.caFile)).toBe('ca.pem');
    expect(await fs.readFile(lab.caFile, 'utf8')).toBe(lab.ca);
    expect((await fs.stat(lab.caFile)).mode & 0o777).toBe(0o644);
    expect(lab.describe().ca).toBe(lab.caFile);
  });

  it("gives every node a certificate from the lab CA naming its host name and address, the CA, and no plaintext auth (RFC 8314)", async () => {
    const ca = new X509Certificate(lab.ca);
    for (const node of lab.nodes()) {
      const tls = node.config.tls!;
      expect(tls, node.name).toBeDefined();
      expect(tls.ca).toBe(lab.ca);
      expect(tls.allowPlaintextAuth).toBe(false);
      const cert = new X509Certificate(tls.cert);
      expect(cert.subjectAltName, node.name).toBe(`DNS:${node.config.hostname}, IP Address:${node.config.address}`);
      expect(node.config.address).toMatch(/^127\./);
      expect(cert.verify(ca.publicKey), node.name).toBe(true);
      expect(cert.checkPrivateKey(createPrivateKey(tls.key)), node.name).toBe(true);
      // What the node was started with: its config file (mode 0600) holds the same certificate.
      const written = JSON.parse(await fs.readFile(path.join(path.dirname(lab.caFile), `${node.name}.json`), 'utf8')) as { tls?: { cert: string } };
      expect(written.tls?.cert).toBe(tls.cert);
    }
  });

  it('makes the faulty certificate the definition asks for, and only that one', () => {
    const now = Date.now();
    for (const node of lab.nodes()) {
      const validTo = Date.parse(new X509Certificate(node.config.tls!.cert).validTo);
      if (node.name === 'mx') expect(validTo).toBeLessThan(now);
      else expect(validTo, node.name).toBeGreaterThan(now);
    }
  });

  it('configures the implicit-TLS ports without the nodes having to serve them yet', () => {
    const mta = lab.nodeOf('mta').config;
    const mailbox = lab.nodeOf('mailbox').config;
    expect(mta.role === 'mta' && mta.ports.submissions).toBeGreaterThan(0);
    expect(mailbox.role === 'mailbox' && mailbox.ports.imaps && mailbox.ports.pop3s).toBeGreaterThan(0);
    for (const node of lab.nodes()) expect(node.isRunning, node.name).toBe(true);
  });
});

describe('the lab CA file', () => {
  it('goes with the lab, and every start makes a new CA', async () => {
    const first = await new Lab(defaultLab).withRuntime('local').start();
    const second = await new Lab(defaultLab).withRuntime('local').start();
    try {
      expect(new X509Certificate(first.ca).fingerprint256).not.toBe(new X509Certificate(second.ca).fingerprint256);
    } finally {
      await first.stop();
      await second.stop();
    }
    expect(existsSync(first.caFile)).toBe(false);
    expect(existsSync(second.caFile)).toBe(false);
  });
});

describe('the lab CA on the docker runtime', () => {
  it.skipIf(!engine.available)(
    "names each node's lab address, serves implicit TLS on the published ports under the host name, and keeps ca.pem on the host",
    { timeout: 240_000 },
    async () => {
      const lab = await new Lab(defaultLab).withRuntime('docker').start();
      try {
        expect(path.isAbsolute(lab.caFile)).toBe(true);
        expect(await fs.readFile(lab.caFile, 'utf8')).toBe(lab.ca);
        for (const node of lab.nodes()) {
          expect(node.config.address, node.name).toMatch(/^198\.1[89]\./);
          expect(new X509Certificate(node.config.tls!.cert).subjectAltName).toBe(`DNS:${node.config.hostname}, IP Address:${node.config.address}`);
          expect(node.isRunning, node.name).toBe(true);
        }
        const docker = (await getContainerRuntimeClient()).container.dockerode;
        const published = async (node: string) => Object.keys((await docker.getContainer(`maillab-${lab.id}-${node}`).inspect()).NetworkSettings.Ports ?? {});
        expect(await published('mta')).toEqual(expect.arrayContaining(['25/tcp', '587/tcp', '465/tcp']));
        expect(await published('mailbox')).toEqual(expect.arrayContaining(['24/tcp', '110/tcp', '143/tcp', '993/tcp', '995/tcp']));
        const described = lab.describe().nodes;
        expect(Object.keys(described.mta!.services)).toContain('submissions');
        expect(Object.keys(described.mailbox!.services)).toEqual(expect.arrayContaining(['imaps', 'pop3s']));
        // A host client of the published port (127.0.0.1) verifies the certificate under the host's name.
        const imaps = lab.node('mailbox').service('imaps');
        const greeting = await new Promise<string>((resolve, reject) => {
          const socket = tls.connect({ host: imaps.host, port: imaps.port, ca: lab.ca, servername: lab.node('mailbox').config.hostname });
          socket.once('data', (data: Buffer) => (resolve(data.toString('latin1')), socket.end()));
          socket.once('error', reject);
        });
        expect(greeting).toMatch(/^\* OK /);
      } finally {
        await lab.stop();
      }
      expect(existsSync(lab.caFile)).toBe(false);
    },
  );
});

describe('Lab.start with MTA-STS and DANE', () => {
  it('issues the policy site its own certificate, publishes TLSA records computed from the certificates, and sends the CA where DANE-TA needs it', async () => {
    const lab = await new Lab(defaultLab)
      .withRuntime('local')
      .with((d) => {
        d.domains['receiver.test']!.mtaSts = { mode: 'enforce', certificate: 'expired' };
        d.tls = { certificates: { mx: 'wrong-name' }, dane: { mx: [{ usage: 3, selector: 1, matchingType: 1 }, { usage: 2, selector: 0, matchingType: 2 }, { usage: 3, selector: 0, matchingType: 1, mismatch: true }] } };
      })
      .start();
    try {
      const dns = lab.nodeOf('dns').config;
      if (dns.role !== 'dns') throw new Error('role');
      const [site] = dns.mtaSts!.sites;
      const siteCert = new X509Certificate(site!.cert);
      expect(siteCert.subjectAltName).toBe('DNS:mta-sts.receiver.test');
      expect(Date.parse(siteCert.validTo), 'the site has the fault it was given, not the MX').toBeLessThan(Date.now());
      expect(siteCert.verify(new X509Certificate(lab.ca).publicKey)).toBe(true);

      const mx = lab.nodeOf('mx').config;
      const served = mx.tls!.cert.match(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g)!;
      expect(served.map((pem) => new X509Certificate(pem).fingerprint256)).toEqual([new X509Certificate(served[0]!).fingerprint256, new X509Certificate(lab.ca).fingerprint256]);
      const { associationData } = await import('../../shared/dane.js');
      const name = `_${mx.role === 'mx' ? mx.ports.smtp : 0}._tcp.mx.receiver.test`;
      const answer = await lab.dns.lookup(name, 'TLSA');
      expect(answer.answers.map((r) => (r.type === 'TLSA' ? `${r.usage} ${r.selector} ${r.matchingType} ${r.data}` : r.type))).toEqual([
        `3 1 1 ${associationData(served[0]!, 1, 1).toString('hex')}`,
        `2 0 2 ${associationData(lab.ca, 0, 2).toString('hex')}`,
        expect.stringMatching(/^3 0 1 [0-9a-f]{64}$/),
      ]);
      const stale = answer.answers[2]!;
      expect(stale.type === 'TLSA' && stale.data).not.toBe(associationData(served[0]!, 0, 1).toString('hex'));
      // Other hosts send their leaf alone.
      expect(lab.nodeOf('mta').config.tls!.cert.match(/BEGIN CERTIFICATE/g)).toHaveLength(1);
    } finally {
      await lab.stop();
    }
  });
});
