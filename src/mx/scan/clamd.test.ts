// clamd's protocol against a real clamd (Debian's clamav-daemon) started by spawnClamd from the shipped test
// database: PING, VERSION, INSTREAM verdicts, an ERROR reply, a clamd that stops answering, a start that fails, and
// a clamd left behind by a killed MX.
import { promises as fs } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { clamdCommand, clamdScan, spawnClamd, type SpawnedClamd } from './clamd.js';
import { CLAMAV_DATABASE, clamdMissing, CUSTOM_TEST_FILE, freePort, testAddress } from './clamd.test-helper.js';
import { EICAR, ScannerUnavailable } from './scanner.js';

const missing = clamdMissing('src/mx/scan/clamd.test.ts');
const HOST = testAddress();
let dir: string;
const started: SpawnedClamd[] = [];

beforeEach(async () => {
  dir = await fs.mkdtemp(path.join(os.tmpdir(), 'maillab-clamd-'));
});

afterEach(async () => {
  for (const clamd of started.splice(0)) await clamd.stop();
  await fs.rm(dir, { recursive: true, force: true });
});

async function start(options: { database?: string; maxStreamBytes?: number; in?: string } = {}): Promise<SpawnedClamd> {
  const clamd = await spawnClamd({ endpoint: { host: HOST, port: await freePort(HOST) }, database: options.database ?? CLAMAV_DATABASE, dir: options.in ?? dir, maxStreamBytes: options.maxStreamBytes ?? 1024 * 1024, startTimeoutMs: 30_000 });
  started.push(clamd);
  return clamd;
}

const quick = { timeoutMs: 5000 };

describe.skipIf(missing)('clamd (real, with the shipped test database)', () => {
  it('answers PING and VERSION, and INSTREAM with the shipped signatures (.UNOFFICIAL, as for any unsigned database)', async () => {
    const clamd = await start();
    expect(await clamdCommand(clamd.endpoint, 'PING', quick)).toBe('PONG');
    expect(await clamdCommand(clamd.endpoint, 'VERSION', quick)).toMatch(/^ClamAV \d+\.\d+/);
    expect(await clamdScan(clamd.endpoint, EICAR, quick)).toEqual({ found: true, signature: 'Eicar-Test-Signature.UNOFFICIAL' });
    expect(await clamdScan(clamd.endpoint, await fs.readFile(CUSTOM_TEST_FILE), quick)).toEqual({ found: true, signature: 'Maillab-Custom-Test-Signature.UNOFFICIAL' });
    // The custom signature is the file's MD5: one octet more and it no longer matches.
    expect(await clamdScan(clamd.endpoint, Buffer.concat([await fs.readFile(CUSTOM_TEST_FILE), Buffer.from('x')]), quick)).toEqual({ found: false });
    // Streamed in chunks: a clean 1 MiB stream.
    expect(await clamdScan(clamd.endpoint, Buffer.alloc(1000 * 1024, 'a'), quick)).toEqual({ found: false });

    const config = await fs.readFile(clamd.configFile, 'utf8');
    expect(config).toContain('Foreground yes');
    expect(config).toContain(`TCPSocket ${clamd.endpoint.port}\nTCPAddr ${HOST}\n`);
    expect(config).toContain(`DatabaseDirectory ${CLAMAV_DATABASE}\n`);
    expect(config).not.toMatch(/^(LocalSocket|User) /m);
    expect(await fs.readFile(clamd.logFile, 'utf8')).toMatch(/Loaded 2 signatures/);

    await clamd.stop();
    await expect(clamdCommand(clamd.endpoint, 'PING', quick)).rejects.toThrow(new RegExp(`^clamd ${HOST.replace(/\./g, '\\.')}:${clamd.endpoint.port}: PING failed: connect ECONNREFUSED`));
  });

  it('a stream over StreamMaxLength: clamd answers ERROR (or hangs up while we still write), which is no verdict', async () => {
    const clamd = await start({ maxStreamBytes: 1024 });
    const err = await clamdScan(clamd.endpoint, Buffer.alloc(200 * 1024, 'a'), quick).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ScannerUnavailable);
    // clamd sends its ERROR and closes; whether our next write sees the reply or the closed socket first is a race
    // (EPIPE or ECONNRESET destroys the socket before the reply is read). Either way: no verdict, naming clamd. The MX
    // itself never meets this: the clamd it starts takes the MX's whole size limit.
    expect((err as Error).message).toMatch(
      new RegExp(`^clamd ${HOST.replace(/\./g, '\\.')}:${clamd.endpoint.port}: INSTREAM (answered "INSTREAM size limit exceeded\\. ERROR"|failed: (write EPIPE|read ECONNRESET|write ECONNRESET)|closed the connection without a reply to INSTREAM)$`),
    );
  });

  it('a clamd that stops answering (SIGSTOP) times out, naming the command; it answers again once continued', async () => {
    const clamd = await start();
    process.kill(clamd.pid, 'SIGSTOP');
    try {
      // The kernel still accepts the connection (the listen backlog): only the timeout can tell.
      await expect(clamdScan(clamd.endpoint, EICAR, { timeoutMs: 300 })).rejects.toThrow(`clamd ${HOST}:${clamd.endpoint.port}: no reply to INSTREAM within 300 ms`);
    } finally {
      process.kill(clamd.pid, 'SIGCONT');
    }
    expect(await clamdScan(clamd.endpoint, EICAR, quick)).toMatchObject({ found: true });
  });

  it('a start that cannot work fails at once, saying why: no database, a database clamd refuses', async () => {
    const empty = path.join(dir, 'empty');
    await fs.mkdir(empty);
    await expect(start({ database: empty })).rejects.toThrow(`cannot start clamd: no signature database in ${empty}`);
    await expect(start({ database: path.join(dir, 'nowhere') })).rejects.toThrow(`cannot start clamd: signature directory ${path.join(dir, 'nowhere')}: ENOENT`);
    const broken = path.join(dir, 'broken');
    await fs.mkdir(broken);
    await fs.writeFile(path.join(broken, 'bad.hdb'), 'not a signature\n');
    await expect(start({ database: broken })).rejects.toThrow(/^clamd [\d.]+:\d+ exited with code \d+ before answering PING: [^]*bad\.hdb/);
  });

  it('a clamd left running by a killed MX (its pid file in the same dataDir) is ended before a new one starts', async () => {
    const first = await start();
    // The new clamd takes the same endpoint: only possible once the old one has let go of it.
    const second = await spawnClamd({ endpoint: first.endpoint, database: CLAMAV_DATABASE, dir, maxStreamBytes: 1024 * 1024, startTimeoutMs: 30_000 });
    started.push(second);
    expect(second.pid).not.toBe(first.pid);
    expect(await fs.readFile(`/proc/${first.pid}/cmdline`, 'utf8').catch(() => '')).toBe('');
    expect(await clamdScan(second.endpoint, EICAR, quick)).toMatchObject({ found: true });
  });
});
