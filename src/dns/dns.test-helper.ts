// The DNS node's configuration for in-process tests (server.test.ts, resolve-tlsa.test.ts, mta-sts-site.test.ts):
// on 127.0.0.1, port 0 (a free one); what a test varies is given, the rest is the lab's usual. And `failure`, the
// code a lookup failed with.
import type { DnsNodeConfig } from '../shared/config.js';

export function dnsTestConfig(fields: Pick<DnsNodeConfig, 'zones'> & Partial<Pick<DnsNodeConfig, 'mtaSts'>>): DnsNodeConfig {
  return {
    name: 'dns',
    role: 'dns',
    hostname: 'dns.lab.test',
    address: '127.0.0.1',
    dataDir: '/nonexistent',
    controlPort: 0,
    resolver: { host: '127.0.0.1', port: 0 },
    greetingDelayMs: 0,
    fsync: false,
    port: 0,
    ...fields,
  };
}

/** The code a rejected lookup failed with (`ENOTFOUND`, `ESERVFAIL`...), or `no error`. */
export async function failure(lookup: Promise<unknown>): Promise<string> {
  try {
    await lookup;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code ?? String(err);
  }
  return 'no error';
}
