// For the ClamAV tests: whether clamd is here (else they skip, saying why), the shipped test database, and a free
// port on a loopback address of the test's own (so parallel test files never share a clamd).
import net from 'node:net';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { findClamd } from './clamd.js';

const here = path.dirname(fileURLToPath(import.meta.url));
/** src/mx/testdata/clamav: `db/` (Eicar-Test-Signature, Maillab-Custom-Test-Signature) and the custom test file. */
export const CLAMAV_TESTDATA = path.resolve(here, '../testdata/clamav');
export const CLAMAV_DATABASE = path.join(CLAMAV_TESTDATA, 'db');
export const CUSTOM_TEST_FILE = path.join(CLAMAV_TESTDATA, 'maillab-custom-test.txt');

/** Why the ClamAV tests skip here, or undefined when clamd is installed. Said once per file on the console. */
export function clamdMissing(file: string): string | undefined {
  if (findClamd()) return undefined;
  const why = `${file}: ClamAV tests skipped: clamd is not installed (no /usr/sbin/clamd; on Debian: apt-get install clamav-daemon)`;
  console.warn(why);
  return why;
}

/** A loopback address in 127.0.0.0/8 of this test file's own. */
export const testAddress = () => `127.${Math.floor(Math.random() * 200) + 20}.${Math.floor(Math.random() * 200) + 20}.${Math.floor(Math.random() * 200) + 20}`;

/** A port free on `host` now (the kernel's pick), for a clamd that cannot be told to pick its own. */
export function freePort(host: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.once('error', reject);
    server.listen(0, host, () => {
      const port = (server.address() as net.AddressInfo).port;
      server.close(() => resolve(port));
    });
  });
}
