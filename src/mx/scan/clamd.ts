// ClamAV at the MX (issue 13): clamd's protocol over TCP (clamd.conf(5), "COMMANDS"), and clamd itself, started
// by the MX from a signature directory when the scanner config says `spawn`.
//
// The whole message goes to clamd in one INSTREAM, not each decoded part: clamd parses MIME itself (ScanMail) and
// more of it than our walker (uuencode, BinHex, TNEF, HTML normalisation), and one stream is one round trip. clamd
// does not say which part matched, so for a message it finds infected the decoded parts are then streamed one by one
// until one gives the same name: the part is reported (as for the built-in scanner), or `message` when none alone
// does (a match on the whole, e.g. a heuristic).

import { spawn } from 'node:child_process';
import { existsSync, promises as fs } from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import type { Endpoint } from '../../shared/config.js';
import { mimeParts, partLabel } from './mime.js';
import { MAX_MIME_DEPTH, ScannerUnavailable, type Scanner } from './scanner.js';

/** clamd's answer to a stream: clean, or the name of what it found. */
export type ClamdResult = { found: false } | { found: true; signature: string };

export interface ClamdClientOptions {
  /** The whole exchange, connect to reply. */
  timeoutMs: number;
  /** Outbound address (the MX's own, as on every hop of the lab). */
  localAddress?: string;
}

/** A size clamd reads per chunk without trouble; its StreamMaxLength bounds the total, not the chunk. */
const CHUNK = 64 * 1024;

/**
 * One command on a new connection (the `z` form: NUL-terminated, and so is the reply); `payload` is streamed as
 * INSTREAM chunks (4-octet big-endian length, then the data; a zero length ends it). Resolves with the reply without
 * its NUL; rejects with ScannerUnavailable naming clamd's endpoint and the command.
 */
export function clamdCommand(endpoint: Endpoint, command: 'PING' | 'VERSION' | 'INSTREAM', options: ClamdClientOptions, payload?: Buffer): Promise<string> {
  const where = `clamd ${endpoint.host}:${endpoint.port}`;
  return new Promise((resolve, reject) => {
    const socket = net.connect({ host: endpoint.host, port: endpoint.port, ...(options.localAddress ? { localAddress: options.localAddress } : {}) });
    let reply = '';
    let settled = false;
    const finish = (err: Error | null, text?: string) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      socket.destroy();
      if (err) reject(err);
      else resolve(text!);
    };
    const timer = setTimeout(() => finish(new ScannerUnavailable(`${where}: no reply to ${command} within ${options.timeoutMs} ms`)), options.timeoutMs);
    socket.on('data', (chunk: Buffer) => {
      reply += chunk.toString('utf8');
      const nul = reply.indexOf('\0');
      if (nul >= 0) finish(null, reply.slice(0, nul));
    });
    // clamd may close early (a stream over StreamMaxLength) with its reply already sent: the reply counts, not the
    // broken write.
    socket.on('error', (err) => finish(reply ? null : new ScannerUnavailable(`${where}: ${command} failed: ${err.message}`), reply.replace(/\0.*$/s, '')));
    socket.on('end', () => finish(reply ? null : new ScannerUnavailable(`${where}: closed the connection without a reply to ${command}`), reply.replace(/\0.*$/s, '')));
    socket.on('connect', () => {
      socket.write(`z${command}\0`);
      if (command !== 'INSTREAM') return;
      void (async () => {
        const data = payload ?? Buffer.alloc(0);
        for (let at = 0; at < data.length && !settled; at += CHUNK) {
          const chunk = data.subarray(at, at + CHUNK);
          const length = Buffer.alloc(4);
          length.writeUInt32BE(chunk.length);
          socket.write(length);
          // Backpressure: a 50 MiB message is not queued in the socket at once.
          if (!socket.write(chunk)) await new Promise<void>((r) => socket.once('drain', r).once('close', r));
        }
        if (!settled) socket.write(Buffer.alloc(4));
      })();
    });
  });
}

/** INSTREAM: `stream: OK`, `stream: <name> FOUND`; `... ERROR` (and anything else) is no verdict. */
export async function clamdScan(endpoint: Endpoint, data: Buffer, options: ClamdClientOptions): Promise<ClamdResult> {
  const reply = await clamdCommand(endpoint, 'INSTREAM', options, data);
  if (/^stream: OK$/.test(reply)) return { found: false };
  const found = /^stream: (.+) FOUND$/.exec(reply);
  if (found) return { found: true, signature: found[1]! };
  throw new ScannerUnavailable(`clamd ${endpoint.host}:${endpoint.port}: INSTREAM answered "${reply}"`);
}

/** The ClamAV scanner: the message to clamd; see the top of this file for the part it reports. */
export function clamavScanner(endpoint: Endpoint, options: ClamdClientOptions & { maxDecodedBytes: number; onClose?: () => Promise<void> }): Scanner {
  const name = 'clamav';
  return {
    name,
    async scan(message) {
      const result = await clamdScan(endpoint, message, options);
      if (!result.found) return { clean: true, scanner: name };
      return { clean: false, scanner: name, signature: result.signature, part: await locate(result.signature, message) };
    },
    async close() {
      await options.onClose?.();
    },
  };

  async function locate(signature: string, message: Buffer): Promise<string> {
    try {
      for (const part of mimeParts(message, { maxDepth: MAX_MIME_DEPTH, maxDecodedBytes: options.maxDecodedBytes })) {
        const result = await clamdScan(endpoint, part.data, options);
        if (result.found && result.signature === signature) return partLabel(part);
      }
    } catch {
      // The verdict stands without a part: clamd's answer on the whole message is what decides.
    }
    return 'message';
  }
}

/** A clamd the MX started: `stop()` ends it (SIGTERM, then SIGKILL after 5 s). */
export interface SpawnedClamd {
  pid: number;
  endpoint: Endpoint;
  configFile: string;
  logFile: string;
  stop(): Promise<void>;
}

export interface SpawnClamdOptions {
  /** Where clamd listens (`TCPAddr`, `TCPSocket`). */
  endpoint: Endpoint;
  /** The signature directory (`DatabaseDirectory`): .hdb, .ndb, ... files, or .cvd. */
  database: string;
  /** Config, log, pid file and clamd's temporary files go here (the MX's dataDir). */
  dir: string;
  /** clamd's StreamMaxLength: the MX's size limit, so that any message the MX accepts can be streamed. */
  maxStreamBytes: number;
  /** How long clamd may take to answer PING (loading a full official database takes tens of seconds). */
  startTimeoutMs?: number;
}

/** Where Debian's clamav-daemon puts clamd, then PATH. */
export function findClamd(): string | undefined {
  for (const candidate of ['/usr/sbin/clamd', '/usr/local/sbin/clamd']) if (existsSync(candidate)) return candidate;
  for (const dir of (process.env.PATH ?? '').split(path.delimiter)) if (dir && existsSync(path.join(dir, 'clamd'))) return path.join(dir, 'clamd');
  return undefined;
}

/**
 * Starts clamd in the foreground with a config file of its own in `dir`, and resolves once it answers PING with
 * PONG (it binds its socket only after loading the database, so PONG means ready to scan).
 */
export async function spawnClamd(options: SpawnClamdOptions): Promise<SpawnedClamd> {
  const binary = findClamd();
  if (!binary) throw new Error('cannot start clamd: it is not installed (no /usr/sbin/clamd; on Debian: apt-get install clamav-daemon)');
  const database = path.resolve(options.database);
  const entries = await fs.readdir(database).catch((err: Error) => {
    throw new Error(`cannot start clamd: signature directory ${database}: ${err.message}`);
  });
  if (!entries.some((e) => /\.(c[vl]d|hdb|hsb|ndb|ldb|mdb|msb|cdb|ign2|fp|sfp)$/.test(e))) throw new Error(`cannot start clamd: no signature database in ${database}`);
  const dir = path.resolve(options.dir);
  const tmp = path.join(dir, 'clamd-tmp');
  await fs.mkdir(tmp, { recursive: true });
  const configFile = path.join(dir, 'clamd.conf');
  const logFile = path.join(dir, 'clamd.log');
  const pidFile = path.join(dir, 'clamd.pid');
  await endStale(pidFile, configFile);
  const config = [
    '# Written by the maillab MX (src/mx/scan/clamd.ts) for the clamd it starts; rewritten at each start.',
    'Foreground yes',
    `TCPSocket ${options.endpoint.port}`,
    `TCPAddr ${options.endpoint.host}`,
    // No LocalSocket line: TCP only. No User line: clamd keeps the MX's user (it needs no privilege).
    `DatabaseDirectory ${database}`,
    `LogFile ${logFile}`,
    'LogTime yes',
    `PidFile ${pidFile}`,
    `TemporaryDirectory ${tmp}`,
    // Any message the MX accepts fits in one INSTREAM (clamd's default is 25 MiB, the MX's up to 50 MiB), with room
    // for the headers the MX adds (Received) on top of the size limit.
    `StreamMaxLength ${Math.ceil(options.maxStreamBytes / 1024) + 16}K`,
    // The same nesting bound as the built-in scanner, and past a bound an alert, not a silent pass.
    `MaxRecursion ${MAX_MIME_DEPTH}`,
    'AlertExceedsMax yes',
    // Our small database has no bytecode: do not look for bytecode.cvd.
    'Bytecode no',
    '',
  ].join('\n');
  await fs.writeFile(configFile, config);

  const child = spawn(binary, ['--config-file', configFile], { stdio: ['ignore', 'pipe', 'pipe'] });
  // What clamd printed, for the error when it does not come up.
  let output = '';
  const keep = (chunk: Buffer) => {
    output = (output + chunk.toString('utf8')).slice(-4000);
  };
  child.stdout!.on('data', keep);
  child.stderr!.on('data', keep);
  const exited = new Promise<string>((resolve) => {
    child.once('exit', (code, signal) => resolve(signal ? `killed by ${signal}` : `exited with code ${code}`));
    child.once('error', (err) => resolve(`could not be run: ${err.message}`));
  });
  let gone: string | undefined;
  void exited.then((why) => (gone = why));

  const stop = async () => {
    if (gone !== undefined) return;
    child.kill('SIGTERM');
    const timer = setTimeout(() => child.kill('SIGKILL'), 5000);
    await exited;
    clearTimeout(timer);
  };

  const where = `clamd ${options.endpoint.host}:${options.endpoint.port}`;
  const deadline = Date.now() + (options.startTimeoutMs ?? 60_000);
  // clamd signals readiness on no pipe we can wait on (its log goes to LogFile), so it is asked: PING until PONG.
  // Between tries, the wait ends early when clamd exits (a bad config or database), which is reported at once.
  for (let delay = 20; ; delay = Math.min(delay * 2, 250)) {
    if (gone !== undefined) throw new Error(`${where} ${gone} before answering PING: ${(output.trim() || (await tail(logFile))).slice(-1500)}`);
    const pong = await clamdCommand(options.endpoint, 'PING', { timeoutMs: 1000 }).catch(() => undefined);
    if (pong === 'PONG') break;
    if (Date.now() > deadline) {
      await stop();
      throw new Error(`${where} did not answer PING with PONG within ${options.startTimeoutMs ?? 60_000} ms (${pong === undefined ? 'no answer' : `answered "${pong}"`}); its log: ${(await tail(logFile)).slice(-1500)}`);
    }
    await Promise.race([exited, new Promise((r) => setTimeout(r, delay))]);
  }
  return { pid: child.pid!, endpoint: options.endpoint, configFile, logFile, stop };
}

async function tail(file: string): Promise<string> {
  return (await fs.readFile(file, 'utf8').catch(() => '')).trim();
}

/**
 * A clamd left running by an MX that was killed (SIGKILL gives it no chance to stop its child) still holds the port:
 * the pid file names it, and it is ended only when its command line names this very config file.
 */
async function endStale(pidFile: string, configFile: string): Promise<void> {
  const pid = Number((await fs.readFile(pidFile, 'utf8').catch(() => '')).trim());
  if (!Number.isInteger(pid) || pid <= 0) return;
  const cmdline = await fs.readFile(`/proc/${pid}/cmdline`, 'utf8').catch(() => '');
  if (!cmdline.includes('clamd') || !cmdline.includes(configFile)) return;
  try {
    process.kill(pid, 'SIGKILL');
  } catch {
    return;
  }
  // Gone once /proc no longer has it (a zombie of another parent keeps its entry but not the port).
  for (let i = 0; i < 100 && existsSync(`/proc/${pid}/cmdline`) && (await fs.readFile(`/proc/${pid}/cmdline`, 'utf8').catch(() => '')) !== ''; i++) await new Promise((r) => setTimeout(r, 20));
}
