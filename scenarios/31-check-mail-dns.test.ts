// Scenario 31 (issue 12, checking a configuration without sending): a lab file with the mistakes mail
// administrators make, checked by `maillab check` as planned (nothing started) and by `lab.checkDns()` on the
// running lab after one more edit:
//   - sender.test's SPF record needs 11 DNS lookups (RFC 7208 §4.6.4 allows 10);
//   - its signing selector `lab` is not published (the MTA signs with a key nobody can find);
//   - its DMARC record says p=maybe;
//   - (on the running lab) the MTA's PTR record is deleted: no forward-confirmed reverse DNS for its HELO name.
import { spawn } from 'node:child_process';
import { promises as fs } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadLabFile } from '../src/harness/lab-file.js';
import { formatFindings, Lab, type StartedLab } from '../src/harness/index.js';
import { packageRoot } from '../src/harness/runtime/types.js';
import { defaultLab } from './support/lab.js';

const includes = 'abcdefghij'.split('').map((c) => `${c}.spf.sender.test`);
const brokenLab = `// A lab whose mail DNS is broken on purpose (scenario 31).
export default {
  name: 'broken-dns',
  domains: {
    'sender.test': {
      mx: [{ host: 'mta', preference: 10 }],
      spf: 'v=spf1 a:mta.sender.test ${includes.map((i) => `include:${i}`).join(' ')} -all',
      dkim: [{ selector: 'lab', publish: false }],
      dmarc: 'v=DMARC1; p=maybe',
      records: ${JSON.stringify(includes.map((name) => ({ name, type: 'TXT', data: 'v=spf1 -all' })))},
    },
    'receiver.test': { mx: [{ host: 'mx', preference: 10 }], spf: 'v=spf1 a:mta.sender.test -all', dmarc: 'v=DMARC1; p=none' },
  },
  // The default lab's hosts, users and retry schedule, written out: a file in a temp folder can import nothing.
  hosts: ${JSON.stringify(defaultLab.hosts)},
  users: ${JSON.stringify(defaultLab.users)},
  retry: ${JSON.stringify(defaultLab.retry)},
};
`;

let dir: string;
let file: string;

beforeAll(async () => {
  dir = await fs.mkdtemp(path.join(os.tmpdir(), 'maillab-broken-dns-'));
  file = path.join(dir, 'broken-dns.ts');
  await fs.writeFile(file, brokenLab);
});
afterAll(async () => {
  await fs.rm(dir, { recursive: true, force: true });
});

/** `maillab check` as a user runs it: the built CLI in a child process. */
function maillabCheck(args: string[]): Promise<{ code: number | null; stdout: string }> {
  const child = spawn(process.execPath, [path.join(packageRoot(), 'bin', 'maillab.mjs'), 'check', ...args], { stdio: ['ignore', 'pipe', 'inherit'] });
  let stdout = '';
  child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
  return new Promise((resolve, reject) => {
    child.once('error', reject);
    child.once('exit', (code) => resolve({ code, stdout }));
  });
}

describe('maillab check on a deliberately broken lab', () => {
  it('finds each planted error, one line each, and exits 1', async () => {
    const { code, stdout } = await maillabCheck(['--lab', file]);
    console.info(`[31-check-mail-dns] maillab check --lab broken-dns.ts:\n${stdout}`);
    const lines = stdout.split('\n');
    expect(lines[0]).toMatch(/^lab broken-dns: mail DNS as planned/);
    const errors = lines.filter((l) => l.startsWith('error'));
    expect(errors).toEqual([
      expect.stringMatching(/^error +sender\.test TXT \(SPF\) +.*11 DNS lookups.*10/),
      expect.stringMatching(/^error +lab\._domainkey\.sender\.test TXT \(DKIM\) +.*(no|missing).*key/i),
      expect.stringMatching(/^error +_dmarc\.sender\.test TXT \(DMARC\) +p=maybe is not a policy/),
    ]);
    expect(lines.at(-2)).toMatch(/^3 error\(s\), \d+ warning\(s\), \d+ info$/);
    expect(code).toBe(1);
  });

  describe('the same lab running, its MTA\'s PTR record deleted', () => {
    let lab: StartedLab;
    beforeAll(async () => {
      lab = await new Lab(await loadLabFile(file)).start();
    });
    afterAll(async () => {
      await lab?.stop();
    });

    it('lab.checkDns() finds the three, and the missing PTR of the sending host', async () => {
      const mta = lab.nodeOf('mta').config;
      const ptr = (await lab.dns.records()).zones.flatMap((z) => z.records).find((r) => r.type === 'PTR' && r.domain === mta.hostname)!;
      await lab.dns.removeRecords(ptr.name, 'PTR');
      const findings = await lab.checkDns();
      console.info(`[31-check-mail-dns] lab.checkDns() on the running lab:\n${formatFindings(findings)}`);
      expect(findings.filter((f) => f.severity === 'error').map((f) => f.check)).toEqual(['spf', 'dkim', 'dmarc', 'ptr']);
      const missing = findings.find((f) => f.check === 'ptr')!;
      expect(missing.message).toBe(`no PTR for ${mta.hostname}'s address ${mta.address}: many receivers refuse or distrust mail from an address without reverse DNS`);
    });
  });
});
