// `lab.resolve(name, type)`: the lab DNS asked over real DNS, with the resolver the nodes use (src/dns/resolver.ts),
// its answers reduced to the fields that matter (Node 24's resolver adds a `type` field to some; issue 16).
import type { Endpoint } from '../shared/config.js';
import { createLabResolver, resolveMxRecords, resolveTlsa, type TlsaAnswer } from '../dns/resolver.js';

/** The record types `lab.resolve` asks for. */
export type ResolvableType = 'A' | 'AAAA' | 'MX' | 'TXT' | 'CNAME' | 'NS' | 'PTR' | 'SOA' | 'TLSA';

/** A SOA answer, in node:dns's names. */
export interface SoaAnswer {
  nsname: string;
  hostmaster: string;
  serial: number;
  refresh: number;
  retry: number;
  expire: number;
  minttl: number;
}

/**
 * One answer of `lab.resolve(name, type)`: an address (A, AAAA), a host name (CNAME, NS, PTR), `{ exchange, priority }`
 * (MX), the record's text with its strings joined (TXT), the SOA's fields, or the TLSA's fields.
 */
export type ResolvedAnswer<T extends ResolvableType> = T extends 'MX' ? { exchange: string; priority: number } : T extends 'SOA' ? SoaAnswer : T extends 'TLSA' ? TlsaAnswer : string;

/**
 * Asks the DNS server at `server` for `name`'s records of `type`. NODATA (the name exists, without such records)
 * answers []; every other failure keeps node:dns's `code` (ENOTFOUND, EREFUSED, ETIMEOUT...) and names the query.
 */
export async function resolveInLab<T extends ResolvableType>(server: Endpoint, name: string, type: T): Promise<ResolvedAnswer<T>[]> {
  const resolver = createLabResolver(server);
  const ask = async (): Promise<unknown[]> => {
    switch (type) {
      case 'A':
        return resolver.resolve4(name);
      case 'AAAA':
        return resolver.resolve6(name);
      case 'MX':
        return resolveMxRecords(resolver, name);
      case 'TXT':
        return (await resolver.resolveTxt(name)).map((chunks) => chunks.join(''));
      case 'CNAME':
        return resolver.resolveCname(name);
      case 'NS':
        return resolver.resolveNs(name);
      case 'PTR':
        return resolver.resolvePtr(name);
      case 'SOA': {
        const { nsname, hostmaster, serial, refresh, retry, expire, minttl } = await resolver.resolveSoa(name);
        return [{ nsname, hostmaster, serial, refresh, retry, expire, minttl }];
      }
      case 'TLSA':
        return resolveTlsa(server, name);
      default:
        throw new Error(`lab.resolve: type ${String(type)} is not one it asks for (A, AAAA, MX, TXT, CNAME, NS, PTR, SOA, TLSA)`);
    }
  };
  try {
    return (await ask()) as ResolvedAnswer<T>[];
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENODATA') return [];
    if (code === undefined) throw err;
    throw Object.assign(new Error(`lab.resolve(${name}, ${type}) at the lab DNS ${server.host}:${server.port}: ${(err as Error).message}`), { code });
  } finally {
    resolver.cancel();
  }
}
