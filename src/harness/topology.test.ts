// The lab definition's TLS part (issue 11): faulty certificates by host are checked, and every plan carries the
// implicit-TLS ports (RFC 8314: submissions 465, imaps 993, pop3s 995, plus the port offset). The zones' name servers
// (issue 14): SOA primary and NS of every zone resolve to the dns host, checked on the zone data and with dig.
import { execFile, execFileSync } from 'node:child_process';
import { promisify } from 'node:util';
import { afterEach, describe, expect, it } from 'vitest';
import defaultLab from '../../lab/default.js';
import { startDns } from '../dns/index.js';
import { Zones } from '../dns/zone.js';
import type { DnsNodeConfig } from '../shared/config.js';
import { EventLog } from '../shared/events.js';
import type { NodeContext, RunningRole } from '../shared/node.js';
import type { CertificateFault } from './tls/ca.js';
import { planLab, validateLab, type LabDefinition } from './topology.js';

const withTls = (tls: LabDefinition['tls']): LabDefinition => ({ ...structuredClone(defaultLab), tls });

describe('tls in a lab definition', () => {
  it('takes a fault per lab host, and plaintext auth on or off', () => {
    expect(() => validateLab(withTls({ certificates: { mx: 'expired', mta: 'weak', mailbox: 'self-signed', dns: 'wrong-name' }, allowPlaintextAuth: false }))).not.toThrow();
    expect(() => validateLab(withTls({ certificates: { mx: 'not-yet-valid' } }))).not.toThrow();
  });

  it('refuses a host that is not in the lab, a fault that does not exist, and a plaintext-auth that is not a boolean', () => {
    expect(() => validateLab(withTls({ certificates: { mx2: 'expired' } }))).toThrow(/tls\.certificates: "mx2" is not a lab host/);
    expect(() => validateLab(withTls({ certificates: { mx: 'revoked' as CertificateFault } }))).toThrow(
      /tls\.certificates\.mx: "revoked" is not a certificate fault \(expired, not-yet-valid, wrong-name, self-signed, weak\)/,
    );
    expect(() => validateLab(withTls({ allowPlaintextAuth: 'yes' as unknown as boolean }))).toThrow(/tls\.allowPlaintextAuth must be true or false/);
  });
});

describe('planLab', () => {
  const addresses = { dns: '127.9.9.2', mailbox: '127.9.9.3', mx: '127.9.9.4', mta: '127.9.9.5' };

  it('gives the MTA submissions and the mailbox server imaps and pop3s, with the port offset', () => {
    for (const portOffset of [0, 10_000]) {
      const { nodes } = planLab(defaultLab, { addresses, portOffset, dataRoot: '/tmp/lab' });
      const mta = nodes.mta!;
      const mailbox = nodes.mailbox!;
      if (mta.role !== 'mta' || mailbox.role !== 'mailbox') throw new Error('roles');
      expect(mta.ports).toEqual({ smtp: 25 + portOffset, submission: 587 + portOffset, submissions: 465 + portOffset });
      expect(mailbox.ports).toEqual({ lmtp: 24 + portOffset, pop3: 110 + portOffset, imap: 143 + portOffset, pop3s: 995 + portOffset, imaps: 993 + portOffset });
      // Certificates come from Lab.start (a new CA per start), never from the plan.
      for (const config of Object.values(nodes)) expect(config.tls).toBeUndefined();
    }
  });
});

describe('the outbound TLS policy in a lab definition', () => {
  const addresses = { dns: '127.9.9.2', mailbox: '127.9.9.3', mx: '127.9.9.4', mta: '127.9.9.5' };

  it('carries the policy to the MTA (may by default) and noStartTls to the MX', () => {
    const plain = planLab(defaultLab, { addresses, portOffset: 0, dataRoot: '/tmp/lab' });
    expect(plain.nodes.mta).toMatchObject({ tlsPolicy: { default: 'may', domains: {} } });
    expect(plain.nodes.mx).not.toHaveProperty('noStartTls');
    const { nodes } = planLab(withTls({ outbound: { default: 'encrypt', domains: { 'Receiver.Test': 'verify' } }, noStartTls: ['mx'] }), { addresses, portOffset: 0, dataRoot: '/tmp/lab' });
    expect(nodes.mta).toMatchObject({ tlsPolicy: { default: 'encrypt', domains: { 'receiver.test': 'verify' } } });
    expect(nodes.mx).toMatchObject({ noStartTls: true });
  });

  it('refuses a mode that does not exist and noStartTls on a host that is not an MX', () => {
    expect(() => validateLab(withTls({ outbound: { default: 'must' as 'may' } }))).toThrow(/tls\.outbound\.default: "must" is not a TLS policy \(none, may, encrypt, verify\)/);
    expect(() => validateLab(withTls({ outbound: { domains: { 'receiver.test': 'dane' as 'verify' } } }))).toThrow(/tls\.outbound\.domains\.receiver\.test: "dane" is not a TLS policy/);
    expect(() => validateLab(withTls({ noStartTls: ['mta', 'mx2'] }))).toThrow(/tls\.noStartTls: "mta" is not an mx host[\s\S]*tls\.noStartTls: "mx2" is not an mx host/);
  });
});

describe('MTA-STS and DANE in a lab definition', () => {
  const addresses = { dns: '127.9.9.2', mailbox: '127.9.9.3', mx: '127.9.9.4', mta: '127.9.9.5' };
  const withSts = (mtaSts: NonNullable<LabDefinition['domains'][string]['mtaSts']>): LabDefinition => {
    const lab = structuredClone(defaultLab);
    lab.domains['receiver.test']!.mtaSts = mtaSts;
    return lab;
  };

  it('publishes the policy: TXT with an id that follows the text, mta-sts.<domain> at the dns host, the site with its text', () => {
    const { nodes, zones } = planLab(withSts({ mode: 'enforce' }), { addresses, portOffset: 10_000, dataRoot: '/tmp/lab' });
    const records = zones.find((z) => z.origin === 'receiver.test')!.records;
    const txt = records.find((r) => r.name === '_mta-sts.receiver.test');
    expect(txt).toEqual({ name: '_mta-sts.receiver.test', type: 'TXT', data: expect.stringMatching(/^v=STSv1; id=[0-9a-f]{20}$/) });
    expect(records).toContainEqual({ name: 'mta-sts.receiver.test', type: 'A', address: '127.9.9.2' });
    expect(nodes.dns).toMatchObject({ mtaSts: { port: 10_443, sites: [{ domain: 'receiver.test', policy: 'version: STSv1\r\nmode: enforce\r\nmx: mx.receiver.test\r\nmax_age: 604800\r\n', cert: '', key: '' }] } });
    expect(nodes.mta).toMatchObject({ mtaSts: { port: 10_443 }, dane: true });

    const other = planLab(withSts({ mode: 'testing', mx: ['*.receiver.test'], maxAge: 600 }), { addresses, portOffset: 0, dataRoot: '/tmp/lab' });
    const otherTxt = other.zones.find((z) => z.origin === 'receiver.test')!.records.find((r) => r.name === '_mta-sts.receiver.test');
    expect(otherTxt).not.toEqual(txt);
    expect(other.nodes.dns).toMatchObject({ mtaSts: { sites: [{ policy: 'version: STSv1\r\nmode: testing\r\nmx: *.receiver.test\r\nmax_age: 600\r\n' }] } });
    const fixed = planLab(withSts({ mode: 'enforce', id: '20261130' }), { addresses, portOffset: 0, dataRoot: '/tmp/lab' });
    expect(fixed.zones.find((z) => z.origin === 'receiver.test')!.records).toContainEqual({ name: '_mta-sts.receiver.test', type: 'TXT', data: 'v=STSv1; id=20261130' });
  });

  it('has no policy host without a policy, and the MTA can be told to ignore MTA-STS and DANE', () => {
    const { nodes } = planLab(defaultLab, { addresses, portOffset: 0, dataRoot: '/tmp/lab' });
    expect(nodes.dns).not.toHaveProperty('mtaSts');
    const off = planLab(withTls({ outbound: { mtaSts: false, dane: false } }), { addresses, portOffset: 0, dataRoot: '/tmp/lab' });
    expect(off.nodes.mta).not.toHaveProperty('mtaSts');
    expect(off.nodes.mta).toMatchObject({ dane: false });
  });

  it('refuses a policy or a TLSA definition that cannot be published', () => {
    expect(() => validateLab(withSts({ mode: 'strict' as 'enforce' }))).toThrow(/receiver\.test: mtaSts\.mode "strict" is not enforce, testing or none/);
    expect(() => validateLab(withSts({ mode: 'enforce', id: 'not-alnum!' }))).toThrow(/mtaSts\.id "not-alnum!" must be 1 to 32 letters and digits/);
    expect(() => validateLab(withSts({ mode: 'enforce', maxAge: 31_557_601 }))).toThrow(/mtaSts\.maxAge must be whole seconds/);
    expect(() => validateLab(withSts({ mode: 'enforce', certificate: 'revoked' as CertificateFault }))).toThrow(/mtaSts\.certificate "revoked" is not a certificate fault/);
    expect(() => validateLab(withTls({ dane: { mx2: [{ usage: 3, selector: 1, matchingType: 1 }] } }))).toThrow(/tls\.dane: "mx2" is not a lab host/);
    expect(() => validateLab(withTls({ dane: { mx: [{ usage: 1 as 3, selector: 1, matchingType: 1 }] } }))).toThrow(/tls\.dane\.mx: 1 1 1 is not a DANE-TA\/DANE-EE record/);
  });
});

describe('the name servers of the lab zones (issue 14)', () => {
  const addresses = { dns: '127.0.0.1', mailbox: '127.9.9.3', mx: '127.9.9.4', mta: '127.9.9.5' };

  it('names the dns host as SOA primary and NS of every zone, and that name resolves in the zones to the dns host', () => {
    const lab = structuredClone(defaultLab);
    lab.domains['other.test'] = { mx: [{ host: 'mx', preference: 10 }] }; // a domain with no lab host in it
    lab.domains['ns-given.test'] = { records: [{ name: 'ns-given.test', type: 'NS', ns: 'ns.lab.test' }] };
    const { zones } = planLab(lab, { addresses, portOffset: 0, dataRoot: '/tmp/lab' });
    const served = new Zones(zones);
    const origins = zones.map((z) => z.origin).sort();
    expect(origins).toEqual(['0.0.127.in-addr.arpa', '9.9.127.in-addr.arpa', 'lab.test', 'ns-given.test', 'other.test', 'receiver.test', 'sender.test']);
    for (const origin of origins) {
      const soa = served.lookup(origin, 'SOA').answers;
      const ns = served.lookup(origin, 'NS').answers;
      expect(soa.map((r) => r.type === 'SOA' && r.primary), origin).toEqual(['ns.lab.test']);
      expect(ns.map((r) => r.type === 'NS' && r.ns), origin).toEqual(['ns.lab.test']);
      const glue = served.lookup('ns.lab.test', 'A');
      expect(glue.rcode).toBe('NOERROR');
      expect(glue.answers.map((r) => r.type === 'A' && r.address)).toEqual(['127.0.0.1']);
    }
  });

  it('follows the dns host: another host name, in a lab domain', () => {
    const lab = structuredClone(defaultLab);
    lab.hosts.dns = { role: 'dns', hostname: 'dns1.receiver.test' };
    const { zones } = planLab(lab, { addresses, portOffset: 0, dataRoot: '/tmp/lab' });
    const served = new Zones(zones);
    for (const { origin } of zones) expect(served.lookup(origin, 'NS').answers.map((r) => r.type === 'NS' && r.ns)).toEqual(['dns1.receiver.test']);
    expect(served.lookup('dns1.receiver.test', 'A').answers.map((r) => r.type === 'A' && r.address)).toEqual(['127.0.0.1']);
  });
});

/** dig (BIND's client, independent of our DNS code) when installed. */
const digMissing = (() => {
  try {
    execFileSync('dig', ['-v'], { stdio: 'ignore' });
    return undefined;
  } catch (err) {
    return `dig is not installed (${(err as Error).message}); apt-get install -y dnsutils to run it`;
  }
})();
if (digMissing) console.warn(`skipping the dig test of the lab zones' name servers: ${digMissing}`);

describe.skipIf(digMissing !== undefined)('the planned DNS node, asked by dig', () => {
  let dns: RunningRole | undefined;
  afterEach(async () => {
    await dns?.stop();
    dns = undefined;
  });

  it('answers NS receiver.test with a name whose A record is the DNS node itself', async () => {
    const addresses = { dns: '127.0.0.1', mailbox: '127.9.9.3', mx: '127.9.9.4', mta: '127.9.9.5' };
    const { nodes } = planLab(defaultLab, { addresses, portOffset: 0, dataRoot: '/tmp/lab' });
    const config = nodes.dns!;
    if (config.role !== 'dns') throw new Error('the dns node is not a dns role');
    const ctx: NodeContext<DnsNodeConfig> = { config: { ...config, port: 0 }, events: new EventLog('dns'), log: () => undefined };
    dns = await startDns(ctx);
    const { host, port } = dns.services.dns!;
    const dig = async (type: string, name: string) => {
      const { stdout } = await promisify(execFile)('dig', [`@${host}`, '-p', String(port), type, name, '+short', '+tries=1', '+time=2']);
      return stdout.trim().split('\n').filter(Boolean);
    };
    const ns = await dig('NS', 'receiver.test');
    expect(ns).toEqual(['ns.lab.test.']);
    expect(await dig('A', ns[0]!)).toEqual([host]);
    expect((await dig('SOA', 'sender.test'))[0]).toMatch(/^ns\.lab\.test\. hostmaster\.sender\.test\. /);
    expect(await dig('NS', '0.0.127.in-addr.arpa')).toEqual(['ns.lab.test.']);
  });
});

describe('external hosts and the transport map (issue 14)', () => {
  const addresses = { dns: '127.9.9.2', mailbox: '127.9.9.3', mx: '127.9.9.4', mta: '127.9.9.5', partner: '127.9.9.6', store: '127.9.9.7' };
  /** The default lab plus an SMTP server and an LMTP server of the user's, receiver2.test's MX and the MX's mailbox. */
  const withExternals = (change: (lab: LabDefinition) => void = () => undefined): LabDefinition => {
    const lab = structuredClone(defaultLab);
    lab.hosts.partner = { role: 'external', hostname: 'smtp.partner.test', address: '127.0.0.1', ports: { smtp: 2525 } };
    lab.hosts.store = { role: 'external', hostname: 'lmtp.receiver.test', address: '127.0.0.2', ports: { lmtp: 2424, imap: 1143 }, ready: { timeoutMs: 3000 } };
    lab.hosts.mx = { role: 'mx', hostname: 'mx.receiver.test', domains: ['receiver.test'], mailbox: 'store' };
    lab.domains['receiver2.test'] = { mx: [{ host: 'partner', preference: 10 }] };
    lab.transport = { 'Relay.Test': { host: 'partner' }, 'other.test': { host: 'mx', port: 2626 } };
    change(lab);
    return lab;
  };
  const plan = (lab: LabDefinition) => planLab(lab, { addresses, portOffset: 10_000, dataRoot: '/tmp/lab' });

  it('plans them as externals, not nodes, at their own address, published in the zones (A and PTR)', () => {
    const { nodes, externals, zones } = plan(withExternals());
    expect(Object.keys(nodes)).toEqual(['dns', 'mailbox', 'mx', 'mta']);
    expect(externals).toEqual({
      partner: { name: 'partner', hostname: 'smtp.partner.test', address: '127.0.0.1', ports: { smtp: 2525 }, readyTimeoutMs: 10_000 },
      store: { name: 'store', hostname: 'lmtp.receiver.test', address: '127.0.0.2', ports: { lmtp: 2424, imap: 1143 }, readyTimeoutMs: 3000 },
    });
    const records = zones.flatMap((z) => z.records.map((r) => ({ zone: z.origin, ...r })));
    expect(records).toContainEqual({ zone: 'partner.test', name: 'smtp.partner.test', type: 'A', address: '127.0.0.1' });
    expect(records).toContainEqual({ zone: '0.0.127.in-addr.arpa', name: '1.0.0.127.in-addr.arpa', type: 'PTR', domain: 'smtp.partner.test' });
    expect(records).toContainEqual({ zone: 'receiver.test', name: 'lmtp.receiver.test', type: 'A', address: '127.0.0.2' });
    expect(records).toContainEqual({ zone: '0.0.127.in-addr.arpa', name: '2.0.0.127.in-addr.arpa', type: 'PTR', domain: 'lmtp.receiver.test' });
    // The runtime's address for them is not used anywhere.
    expect(JSON.stringify({ nodes, zones })).not.toMatch(/127\.9\.9\.[67]\b/);
    expect(records).toContainEqual({ zone: 'receiver2.test', name: 'receiver2.test', type: 'MX', exchange: 'smtp.partner.test', priority: 10 });
  });

  it('makes an external LMTP server the MX\'s mailbox, and gives the MTA the transport map and the lab boundary with them', () => {
    const { nodes } = plan(withExternals());
    expect(nodes.mx).toMatchObject({ lmtp: { host: '127.0.0.2', port: 2424 } });
    expect(nodes.mta).toMatchObject({
      relayPort: 10_025,
      relayPorts: { 'smtp.partner.test': 2525 },
      transport: { 'relay.test': { host: 'smtp.partner.test', port: 2525 }, 'other.test': { host: 'mx.receiver.test', port: 2626 } },
    });
    const mta = nodes.mta!;
    if (mta.role !== 'mta') throw new Error('role');
    expect(mta.labAddresses).toEqual(expect.arrayContaining(['127.0.0.1', '127.0.0.2', '127.9.9.4']));
    // An mta whose mailbox is external: LMTP there, and no account service of maillab's to ask.
    const external = plan(withExternals((lab) => (lab.hosts.mta = { role: 'mta', hostname: 'mta.sender.test', localDomains: ['sender.test'], mailbox: 'store' }))).nodes.mta;
    expect(external).toMatchObject({ localDelivery: { host: '127.0.0.2', port: 2424 } });
    expect(external).not.toHaveProperty('authService');
    // Without externals or routes the MTA has neither field.
    expect(planLab(defaultLab, { addresses, portOffset: 0, dataRoot: '/tmp/lab' }).nodes.mta).not.toHaveProperty('relayPorts');
    expect(planLab(defaultLab, { addresses, portOffset: 0, dataRoot: '/tmp/lab' }).nodes.mta).not.toHaveProperty('transport');
  });

  it('refuses an external host outside the network rule, without a .test name, without ports, or with bad ones', () => {
    const bad = (host: Record<string, unknown>) => () => validateLab(withExternals((lab) => (lab.hosts.partner = { role: 'external', hostname: 'smtp.partner.test', address: '127.0.0.1', ports: { smtp: 2525 }, ...host } as LabDefinition['hosts'][string])));
    expect(bad({ address: '192.0.2.1' })).toThrow(/partner: address "192\.0\.2\.1" is outside the lab's network rule: an external host must be on loopback, an IPv4 address in 127\.0\.0\.0\/8 \(the local runtime's network; a lab with external hosts cannot run on the docker runtime\)/);
    expect(bad({ address: '::1' })).toThrow(/partner: address "::1" is outside the lab's network rule/);
    expect(bad({ address: '127.0.0' })).toThrow(/partner: address "127\.0\.0" is outside/);
    expect(bad({ hostname: 'smtp.partner.com' })).toThrow(/partner: hostname "smtp\.partner\.com" must be a host name in a \.test domain/);
    expect(bad({ ports: {} })).toThrow(/partner: an external host needs at least one port \(ports: \{ smtp, submission, submissions, lmtp, imap, imaps, pop3, pop3s \}\)/);
    expect(bad({ ports: { smtp: 2525, gopher: 70 } })).toThrow(/partner: ports\.gopher is not a service the lab knows/);
    expect(bad({ ports: { smtp: 70_000 } })).toThrow(/partner: ports\.smtp must be a port number from 1 to 65535, not 70000/);
    expect(bad({ ready: { timeoutMs: 0 } })).toThrow(/partner: ready\.timeoutMs must be a whole number of milliseconds above 0/);
    expect(bad({ address: '127.0.0.2' })).toThrow(/external hosts partner and store share the address 127\.0\.0\.2: make them one host/);
    expect(() => validateLab(withExternals())).not.toThrow();
  });

  it('requires the port a use needs: smtp for an MX target or a route, lmtp for a mailbox; no certificate or DANE of the lab\'s', () => {
    const store = (lab: LabDefinition) => (lab.hosts.store = { role: 'external', hostname: 'lmtp.receiver.test', address: '127.0.0.2', ports: { imap: 1143 } });
    expect(() => validateLab(withExternals(store))).toThrow(/mx: mailbox "store" is an external host without an lmtp port \(ports\.lmtp\)/);
    expect(() => validateLab(withExternals((lab) => lab.domains['receiver2.test']!.mx!.push({ host: 'store', preference: 20 })))).toThrow(/receiver2\.test: MX host "store" is an external host without an smtp port \(ports\.smtp\)/);
    expect(() => validateLab(withExternals((lab) => (lab.transport = { 'x.test': { host: 'store' } })))).toThrow(/transport\.x\.test: external host "store" has no smtp port: give the route a port or the host ports\.smtp/);
    expect(() => validateLab(withExternals((lab) => (lab.transport = { 'x.test': { host: 'store', port: 2525 } })))).not.toThrow();
    expect(() => validateLab(withExternals((lab) => (lab.transport = { 'x.test': { host: 'nowhere' } })))).toThrow(/transport\.x\.test: host "nowhere" is not a lab host/);
    expect(() => validateLab(withExternals((lab) => (lab.transport = { 'x.test': { host: 'mailbox' } })))).toThrow(/transport\.x\.test: host "mailbox" is a mailbox host, which takes no SMTP/);
    expect(() => validateLab(withExternals((lab) => (lab.transport = { 'x.com': { host: 'partner', port: 0 } })))).toThrow(/transport: "x\.com" must be a domain in \.test[\s\S]*transport\.x\.com: port must be a port number from 1 to 65535, not 0/);
    expect(() => validateLab(withExternals((lab) => (lab.hosts.mx = { role: 'mx', hostname: 'mx.receiver.test', domains: ['receiver.test'], mailbox: 'dns' })))).toThrow(/mx: mailbox "dns" is not a mailbox host \(nor an external host with an lmtp port\)/);
    expect(() => validateLab(withExternals((lab) => (lab.tls = { certificates: { partner: 'expired' } })))).toThrow(/tls\.certificates: "partner" is an external host: the lab issues it no certificate/);
    expect(() => validateLab(withExternals((lab) => (lab.tls = { dane: { partner: [{ usage: 3, selector: 1, matchingType: 1 }] } })))).toThrow(/tls\.dane: "partner" is an external host, whose certificate the lab does not know/);
  });

  it('fails the plan when the runtime gave a node the external host\'s address, naming both', () => {
    expect(() => planLab(withExternals(), { addresses: { ...addresses, mx: '127.0.0.1' }, portOffset: 0, dataRoot: '/tmp/lab' })).toThrow(/external host partner is at 127\.0\.0\.1, the address the runtime gave host mx: choose another address for partner/);
  });
});
