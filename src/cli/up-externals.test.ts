// `maillab up --json` with an external host (issue 14): the line lists it under `externals` (kind external, host name,
// address, ports) beside the nodes, and the lab DNS answers for it; the server itself is the test's, outside the lab.
// `maillab check` plans such a lab with the external host at its own address, placeholders stepping around it.
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { promises as fs } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import defaultLab from '../../lab/default.js';
import { createLabResolver } from '../dns/index.js';
import { packageRoot } from '../harness/runtime/types.js';
import type { LabDefinition } from '../harness/topology.js';

const bin = path.join(packageRoot(), 'bin', 'maillab.mjs');
/** .1 of a random 127.x.y.0/24: never a lab node's address (nodes get .2 and up). */
const ADDRESS = `127.${100 + Math.floor(Math.random() * 150)}.${Math.floor(Math.random() * 250)}.1`;

let server: net.Server;
let port: number;
let dir: string;

beforeAll(async () => {
  // The user's "SMTP server": enough of one for the probe (a 220 greeting, then it reads whatever comes).
  server = net.createServer((socket) => socket.on('error', () => undefined).resume().write('220 smtp.partner.test ESMTP\r\n'));
  server.listen(0, ADDRESS);
  await once(server, 'listening');
  port = (server.address() as net.AddressInfo).port;
  dir = await fs.mkdtemp(path.join(os.tmpdir(), 'maillab-up-externals-'));
});

afterAll(async () => {
  server.close();
  await fs.rm(dir, { recursive: true, force: true });
});

describe('maillab up --json with an external host', () => {
  it('lists it under externals, and the lab DNS publishes it', async () => {
    const lab: LabDefinition = structuredClone(defaultLab);
    lab.hosts.partner = { role: 'external', hostname: 'smtp.partner.test', address: ADDRESS, ports: { smtp: port } };
    const file = path.join(dir, 'lab.mjs');
    await fs.writeFile(file, `export default ${JSON.stringify(lab)};\n`);
    const child = spawn(process.execPath, [bin, 'up', '--json', '--runtime', 'local', '--lab', file], { stdio: ['ignore', 'pipe', 'pipe'] });
    try {
      let stdout = '';
      let stderr = '';
      child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
      const line = await new Promise<string>((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`no line within 20 s\n${stderr}`)), 20_000);
        child.stdout!.on('data', (d: Buffer) => {
          stdout += d.toString();
          if (stdout.includes('\n')) resolve((clearTimeout(timer), stdout.split('\n')[0]!));
        });
        child.once('exit', (code) => reject(new Error(`exited with ${code}\n${stderr}`)));
      });
      const description = JSON.parse(line) as { nodes: Record<string, { services: Record<string, { host: string; port: number }> }>; externals: Record<string, unknown> };
      expect(Object.keys(description.nodes).sort()).toEqual(['dns', 'mailbox', 'mta', 'mx']);
      expect(description.externals).toEqual({ partner: { kind: 'external', hostname: 'smtp.partner.test', host: ADDRESS, ports: { smtp: port } } });
      const resolver = createLabResolver(description.nodes.dns!.services.dns!);
      expect(await resolver.resolve4('smtp.partner.test')).toEqual([ADDRESS]);
      expect(await resolver.reverse(ADDRESS)).toEqual(['smtp.partner.test']);
    } finally {
      child.kill('SIGTERM');
      if (child.exitCode === null) await once(child, 'exit');
    }
  });

  it('maillab check plans it at its own address, whatever the placeholders', async () => {
    const lab: LabDefinition = structuredClone(defaultLab);
    // The address a placeholder would have taken (hosts get 127.0.0.2, .3, … in definition order).
    lab.hosts.partner = { role: 'external', hostname: 'smtp.partner.test', address: '127.0.0.3', ports: { smtp: 2525 } };
    lab.domains['receiver2.test'] = { mx: [{ host: 'partner', preference: 10 }] };
    const file = path.join(dir, 'check.mjs');
    await fs.writeFile(file, `export default ${JSON.stringify(lab)};\n`);
    const child = spawn(process.execPath, [bin, 'check', '--lab', file], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    child.stdout!.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr!.on('data', (d: Buffer) => (out += d.toString()));
    const [code] = (await once(child, 'exit')) as [number];
    expect(out).toMatch(/placeholder addresses dns 127\.0\.0\.2, mailbox 127\.0\.0\.4, mx 127\.0\.0\.5, mta 127\.0\.0\.6, partner 127\.0\.0\.3\n/);
    expect(code).toBe(0);
  });
});
