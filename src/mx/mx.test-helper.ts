// The MX's configuration for in-process tests (mx.test.ts, auth.test.ts, malware.test.ts, smtp.fuzz.test.ts): on 127.0.0.1 unless
// `address`, handing off to an LMTP server on 127.0.0.1; what a test varies is given, the rest is the lab's usual.
import type { MxNodeConfig } from '../shared/config.js';

type Varied = 'limits' | 'tls' | 'address' | 'hostname' | 'resolver' | 'auth' | 'forwards' | 'forwardVia' | 'arcSeal' | 'scanner' | 'malwareAction';

export function mxTestConfig(fields: Pick<MxNodeConfig, 'dataDir' | 'domains' | 'recipients'> & { lmtpPort: number; port?: number } & Partial<Pick<MxNodeConfig, Varied>>): MxNodeConfig {
  const { lmtpPort, port = 0, ...rest } = fields;
  return {
    name: 'mx',
    role: 'mx',
    hostname: 'mx.receiver.test',
    address: '127.0.0.1',
    controlPort: 0,
    resolver: { host: '127.0.0.1', port: 53 },
    greetingDelayMs: 0,
    fsync: true,
    ports: { smtp: port },
    lmtp: { host: '127.0.0.1', port: lmtpPort },
    ...rest,
  };
}
