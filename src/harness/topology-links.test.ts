// Link proxies in a lab's plan (issue 15): a node per link at its own address, put on the path from `from` to `to`
// by the lab DNS (a host reached by name) or by `from`'s config (a host reached by address), with no other change.
import { describe, expect, it } from 'vitest';
import defaultLab from '../../lab/default.js';
import type { DnsRecord, NodeConfig, ProxyNodeConfig, ZoneConfig } from '../shared/config.js';
import { labNodeNames, planLab, validateLab, type LabDefinition, type LinkDefinition } from './topology.js';

const withLinks = (links: LinkDefinition[], change: (lab: LabDefinition) => void = () => undefined): LabDefinition => {
  const lab = structuredClone(defaultLab);
  lab.faults = { links };
  change(lab);
  return lab;
};
const addresses = { dns: '127.9.9.2', mailbox: '127.9.9.3', mx: '127.9.9.4', mta: '127.9.9.5', 'link-mta-mx': '127.9.9.6', 'link-mx-mailbox': '127.9.9.7' };
const plan = (lab: LabDefinition, linksKeepClientAddress: boolean) => planLab(lab, { addresses, portOffset: 10_000, dataRoot: '/tmp/lab', linksKeepClientAddress });
const records = (zones: ZoneConfig[], name: string, type: DnsRecord['type']) => zones.flatMap((z) => z.records).filter((r) => r.name === name && r.type === type);
const as = <R extends NodeConfig['role']>(config: NodeConfig | undefined, role: R) => {
  expect(config?.role).toBe(role);
  return config as Extract<NodeConfig, { role: R }>;
};

describe('links in a lab plan (issue 15)', () => {
  const lab = withLinks([{ from: 'mta', to: 'mx', toxics: [{ type: 'latency', attributes: { latency: 200 } }] }, { from: 'mx', to: 'mailbox' }]);

  it('plans a proxy node per link, listening on the port numbers of its to host, before the MTAs start', () => {
    expect(labNodeNames(lab)).toEqual(['dns', 'mailbox', 'mx', 'mta', 'link-mta-mx', 'link-mx-mailbox']);
    const { nodes } = plan(lab, true);
    expect(Object.keys(nodes)).toEqual(['dns', 'mailbox', 'mx', 'link-mta-mx', 'link-mx-mailbox', 'mta']);
    const proxy = as(nodes['link-mta-mx'], 'proxy');
    expect(proxy).toMatchObject({
      hostname: 'link-mta-mx.lab.test',
      address: '127.9.9.6',
      link: { from: 'mta', to: 'mx', fromHostname: 'mta.sender.test', toHostname: 'mx.receiver.test' },
      ports: { smtp: 10_025 },
      upstreams: { smtp: { host: '127.9.9.4', port: 10_025 } },
      keepClientAddress: true,
      toxics: [{ type: 'latency', attributes: { latency: 200 } }],
    });
    const toMailbox: ProxyNodeConfig = as(nodes['link-mx-mailbox'], 'proxy');
    expect(toMailbox.ports).toEqual({ lmtp: 10_024, pop3: 10_110, imap: 10_143, pop3s: 10_995, imaps: 10_993, accounts: 10_443 });
    expect(toMailbox.upstreams.lmtp).toEqual({ host: '127.9.9.3', port: 10_024 });
  });

  it('puts the proxy on the path: the MX host name answers with the proxy, the MX gets the proxy as its LMTP endpoint', () => {
    const { nodes, zones } = plan(lab, true);
    expect(records(zones, 'mx.receiver.test', 'A')).toEqual([{ name: 'mx.receiver.test', type: 'A', address: '127.9.9.6' }]);
    expect(records(zones, 'link-mta-mx.lab.test', 'A')).toEqual([{ name: 'link-mta-mx.lab.test', type: 'A', address: '127.9.9.6' }]);
    // PTRs stay with each address.
    expect(records(zones, '4.9.9.127.in-addr.arpa', 'PTR')).toEqual([{ name: '4.9.9.127.in-addr.arpa', type: 'PTR', domain: 'mx.receiver.test' }]);
    expect(records(zones, '6.9.9.127.in-addr.arpa', 'PTR')).toEqual([{ name: '6.9.9.127.in-addr.arpa', type: 'PTR', domain: 'link-mta-mx.lab.test' }]);
    expect(as(nodes.mx, 'mx').lmtp).toEqual({ host: '127.9.9.7', port: 10_024 });
    // Nothing else moves: the MTA's own LMTP hop goes straight to the mailbox, and it may connect to the proxies.
    const mta = as(nodes.mta, 'mta');
    expect(mta.localDelivery).toEqual({ host: '127.9.9.3', port: 10_024 });
    expect(mta.labAddresses).toEqual(expect.arrayContaining(['127.9.9.6', '127.9.9.7']));
  });

  it('where the proxy keeps the client address (local) nothing is let in for it; where not (docker), SPF and LMTP let it in', () => {
    const kept = plan(lab, true);
    expect(records(kept.zones, 'sender.test', 'TXT').map((r) => (r as { data: string }).data)).toEqual(['v=spf1 a:mta.sender.test -all']);
    expect(as(kept.nodes.mailbox, 'mailbox').lmtpClients).toEqual(['127.9.9.4', '127.9.9.5']);
    const own = plan(lab, false);
    expect(as(own.nodes['link-mta-mx'], 'proxy').keepClientAddress).toBeUndefined();
    expect(records(own.zones, 'sender.test', 'TXT').map((r) => (r as { data: string }).data)).toEqual(['v=spf1 a:mta.sender.test ip4:127.9.9.6 -all']);
    expect(as(own.nodes.mailbox, 'mailbox').lmtpClients).toEqual(['127.9.9.4', '127.9.9.5', '127.9.9.7']);
  });

  it("a forwarding MX's relay through the MTA (by address) goes through its link; the MTA relays for the proxy where it must", () => {
    const forwarding = withLinks([{ from: 'mx', to: 'mta' }], (l) => {
      l.hosts.mx = { role: 'mx', hostname: 'mx.receiver.test', domains: ['receiver.test'], mailbox: 'mailbox', forwards: { 'carol@receiver.test': 'alice@sender.test' }, forwardVia: 'mta' };
    });
    const at = { ...addresses, 'link-mx-mta': '127.9.9.8' };
    for (const keep of [true, false]) {
      const { nodes, zones } = planLab(forwarding, { addresses: at, portOffset: 0, dataRoot: '/tmp/lab', linksKeepClientAddress: keep });
      expect(as(nodes.mx, 'mx').forwardVia).toEqual({ host: '127.9.9.8', port: 25 });
      expect(as(nodes['link-mx-mta'], 'proxy').upstreams).toMatchObject({ smtp: { host: '127.9.9.5', port: 25 }, submission: { host: '127.9.9.5', port: 587 } });
      expect(as(nodes.mta, 'mta').relayClients).toEqual(keep ? ['127.9.9.4'] : ['127.9.9.4', '127.9.9.8']);
      // Reached by address: the MTA's name still answers with the MTA.
      expect(records(zones, 'mta.sender.test', 'A')).toEqual([{ name: 'mta.sender.test', type: 'A', address: '127.9.9.5' }]);
    }
  });

  it('keeps SPF true for a sending host whose name now leads to a proxy', () => {
    const second = withLinks([{ from: 'mta2', to: 'mta' }], (l) => {
      l.hosts.mta2 = { role: 'mta', hostname: 'mta2.sender.test' };
    });
    const { zones } = planLab(second, { addresses: { ...addresses, mta2: '127.9.9.8', 'link-mta2-mta': '127.9.9.9' }, portOffset: 0, dataRoot: '/tmp/lab', linksKeepClientAddress: true });
    expect(records(zones, 'mta.sender.test', 'A')).toEqual([{ name: 'mta.sender.test', type: 'A', address: '127.9.9.9' }]);
    expect(records(zones, 'sender.test', 'TXT').map((r) => (r as { data: string }).data)).toEqual(['v=spf1 a:mta.sender.test ip4:127.9.9.5 -all']);
  });

  it('refuses links it cannot put on a path, and toxics Toxiproxy would not take', () => {
    expect(() => validateLab(withLinks([{ from: 'mta', to: 'dns' }]))).toThrow(/to must be an mta, mx or mailbox host, not a dns host \(DNS is UDP/);
    expect(() => validateLab(withLinks([{ from: 'mailbox', to: 'mx' }]))).toThrow(/from must be an mta or mx host/);
    expect(() => validateLab(withLinks([{ from: 'mta', to: 'nowhere' }]))).toThrow(/from and to must be hosts of the lab/);
    expect(() => validateLab(withLinks([{ from: 'mta', to: 'mx' }, { from: 'mta', to: 'mx' }]))).toThrow(/the link is defined twice/);
    expect(() => validateLab(withLinks([{ from: 'mta', to: 'mx', toxics: [{ type: 'latency', attributes: { lag: 1 } }] }]))).toThrow(/latency has no attribute "lag"/);
    const twoMtas = withLinks([{ from: 'mta', to: 'mx' }, { from: 'mta2', to: 'mx' }], (l) => {
      l.hosts.mta2 = { role: 'mta', hostname: 'mta2.sender.test' };
    });
    expect(() => validateLab(twoMtas)).toThrow(/mx's host name can lead to one proxy only, and mta -> mx has it/);
  });
});
