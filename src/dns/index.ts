// The `dns` role: the lab's authoritative DNS server (UDP and TCP), its records editable at runtime over rpc,
// plus the client helpers other roles use to query it.
//
// TLSA records (RFC 6698) are served like the other types and `resolveTlsa` is exported, because the MTA's DANE
// (RFC 7672) needs TLSA lookups and Node 20's resolver has none.
//
// With `config.mtaSts`, the node also serves the lab's MTA-STS policy host (mta-sts-site.ts, service `mta-sts`),
// started and stopped with the DNS server, and its policies can be changed over rpc (`set-mta-sts-policy`).
import type { DnsNodeConfig, DnsRecord } from '../shared/config.js';
import type { RpcTable } from '../shared/contract.js';
import type { RoleStarter } from '../shared/node.js';
import type { DnsContract } from './api.js';
import { DnsFaultRules } from './faults.js';
import { startMtaStsSite, type RunningMtaStsSite } from './mta-sts-site.js';
import { startDnsServer } from './server.js';
import { Zones } from './zone.js';

export { Zones, normalizeName, DEFAULT_TTL } from './zone.js';
export type * from './api.js';
export { answerQuery, answerWithFaults, describeRecord, splitTxt, startDnsServer } from './server.js';
export { DnsFaultRules, dnsFaultProblems, validateDnsFaultRules } from './faults.js';
export { MTA_STS_PATH, startMtaStsSite } from './mta-sts-site.js';
export type { MtaStsSiteOptions, RunningMtaStsSite } from './mta-sts-site.js';
export type { DnsServerOptions, RunningDnsServer } from './server.js';
export { createLabResolver, resolveMxRecords, resolveMxTargets, resolveTlsa } from './resolver.js';
export type { LabResolverOptions, MxOptions, MxResolver, TlsaAnswer, TlsaOptions } from './resolver.js';

export const startDns: RoleStarter<DnsNodeConfig, DnsContract> = async (ctx) => {
  const { config, events, log } = ctx;
  const zones = new Zones(config.zones ?? []);
  // A node started by hand without a seed draws from seed 0: still the same draws on every run.
  const faults = new DnsFaultRules(config.seed ?? 0, config.dnsFaults ?? []);
  const server = await startDnsServer({
    host: config.address,
    port: config.port,
    zones,
    faults,
    log,
    onQuery: (query) => events.emit({ kind: 'dns-query', detail: { ...query } }),
    onFault: (fault) => events.emit({ kind: 'fault', detail: { ...fault } }),
  });
  log(`dns: serving ${zones.list().length} zone(s) on ${server.endpoint.host}:${server.endpoint.port} (udp, tcp)`);
  let mtaSts: RunningMtaStsSite | undefined;
  if (config.mtaSts) {
    try {
      mtaSts = await startMtaStsSite({
        host: config.address,
        port: config.mtaSts.port,
        sites: config.mtaSts.sites,
        log,
        onFetch: (fetch) => events.emit({ kind: 'policy-fetch', detail: { ...fetch } }),
      });
    } catch (err) {
      await server.close(); // the node fails to start as a whole: nothing may be left listening
      throw err;
    }
    log(`dns: MTA-STS policy host for ${mtaSts.domains().join(', ')} on ${mtaSts.endpoint.host}:${mtaSts.endpoint.port} (https)`);
  }
  return {
    services: { dns: server.endpoint, ...(mtaSts ? { 'mta-sts': mtaSts.endpoint } : {}) },
    rpc: dnsRpc(zones, mtaSts, faults),
    stop: async () => {
      await Promise.all([server.close(), mtaSts?.close()]);
    },
  };
};

/** The role's control operations (see DnsOperations in api.ts). */
export function dnsRpc(zones: Zones, mtaSts?: RunningMtaStsSite, faults = new DnsFaultRules(0)): RpcTable<DnsContract> {
  const listing = () => ({ zones: zones.list() });
  const required = (value: unknown, what: string): string => {
    if (typeof value !== 'string' || value === '') throw new Error(`${what} is required`);
    return value;
  };
  return {
    records: listing,
    'set-records': (args) => {
      const name = required(args.name, 'set-records: name');
      const type = required(args.type, 'set-records: type');
      if (!Array.isArray(args.records)) throw new Error('set-records needs records: DnsRecord[]');
      const records = args.records.map((r) => ({ name, type, ...r }) as DnsRecord);
      zones.setRecords(name, type, records);
      return listing();
    },
    'add-record': (args) => {
      if (!args.record) throw new Error('add-record needs a record');
      zones.addRecord(args.record, args.zone);
      return listing();
    },
    'remove-records': (args) => ({ removed: zones.removeRecords(required(args.name, 'remove-records: name'), args.type ?? undefined) }),
    'set-zones': (args) => {
      if (!Array.isArray(args.zones)) throw new Error('set-zones needs zones: ZoneConfig[]');
      zones.setZones(args.zones);
      return listing();
    },
    'add-zone': (args) => {
      if (!args.zone) throw new Error('add-zone needs a zone');
      zones.addZone(args.zone);
      return listing();
    },
    'remove-zone': (args) => ({ removed: zones.removeZone(required(args.origin, 'remove-zone: origin')) }),
    lookup: (args) => zones.lookup(required(args.name, 'lookup: name'), String(args.type ?? 'A')),
    'set-mta-sts-policy': (args) => {
      if (!mtaSts) throw new Error('set-mta-sts-policy: this DNS node serves no MTA-STS site (its configuration has no mtaSts)');
      const domain = required(args.domain, 'set-mta-sts-policy: domain');
      if (typeof args.policy !== 'string') throw new Error('set-mta-sts-policy needs policy: the policy text as served');
      mtaSts.setPolicy(domain, args.policy);
      return { domains: mtaSts.domains() };
    },
    'set-dns-faults': (args) => ({ rules: faults.set(args.rules) }),
    'dns-faults': () => ({ rules: faults.list() }),
  };
}
