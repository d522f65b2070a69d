// The `dns` role: the lab's authoritative DNS server (UDP and TCP), its records editable at runtime over rpc,
// plus the client helpers other roles use to query it.
import type { DnsNodeConfig, DnsRecord, ZoneConfig } from '../shared/config.js';
import type { RpcTable } from '../shared/control.js';
import type { RoleStarter } from '../shared/node.js';
import { startDnsServer } from './server.js';
import { Zones } from './zone.js';

export { Zones, normalizeName, DEFAULT_TTL } from './zone.js';
export type { LookupResult, Rcode, RecordType, SoaRecord, ZoneRecord } from './zone.js';
export { answerQuery, describeRecord, splitTxt, startDnsServer } from './server.js';
export type { DnsQueryInfo, DnsServerOptions, DnsTransport, RunningDnsServer } from './server.js';
export { createLabResolver, resolveMxTargets } from './resolver.js';
export type { LabResolverOptions, MxHost, MxOptions, MxResolution, MxResolver } from './resolver.js';

export const startDns: RoleStarter<DnsNodeConfig> = async (ctx) => {
  const { config, events, log } = ctx;
  const zones = new Zones(config.zones ?? []);
  const server = await startDnsServer({
    host: config.address,
    port: config.port,
    zones,
    log,
    onQuery: (query) => events.emit({ kind: 'dns-query', detail: { ...query } }),
  });
  log(`dns: serving ${zones.list().length} zone(s) on ${server.endpoint.host}:${server.endpoint.port} (udp, tcp)`);
  return {
    services: { dns: server.endpoint },
    rpc: dnsRpc(zones),
    stop: () => server.close(),
  };
};

/**
 * The role's control operations. Each change is validated and applied atomically (an invalid one changes
 * nothing and fails with its reason), and shows in the next query. Edits answer with the new `{ zones }`.
 *   records                                    -> { zones }
 *   set-records    { name, type, records }     replaces that RRset; [] deletes it. Records may omit name/type.
 *   add-record     { record, zone? }           `zone`: origin of a zone to create if missing (`@` = its apex)
 *   remove-records { name, type? }             -> { removed }
 *   set-zones      { zones }                   replaces every zone
 *   add-zone       { zone }                    adds or replaces one zone
 *   remove-zone    { origin }                  -> { removed }
 *   lookup         { name, type }              -> the answer the server would give, without DNS
 */
export function dnsRpc(zones: Zones): RpcTable {
  const listing = () => ({ zones: zones.list() });
  return {
    records: listing,
    'set-records': (args: { name: string; type: string; records: Partial<DnsRecord>[] }) => {
      const { name, type } = args;
      if (!Array.isArray(args.records)) throw new Error('set-records needs records: DnsRecord[]');
      const records = args.records.map((r) => ({ name, type, ...r }) as DnsRecord);
      zones.setRecords(name, type, records);
      return listing();
    },
    'add-record': (args: { record: DnsRecord; zone?: string }) => {
      zones.addRecord(args.record, args.zone);
      return listing();
    },
    'remove-records': (args: { name: string; type?: string | null }) => ({ removed: zones.removeRecords(args.name, args.type ?? undefined) }),
    'set-zones': (args: { zones: ZoneConfig[] }) => {
      zones.setZones(args.zones);
      return listing();
    },
    'add-zone': (args: { zone: ZoneConfig }) => {
      zones.addZone(args.zone);
      return listing();
    },
    'remove-zone': (args: { origin: string }) => ({ removed: zones.removeZone(args.origin) }),
    lookup: (args: { name: string; type?: string }) => zones.lookup(String(args.name), String(args.type ?? 'A')),
  };
}
