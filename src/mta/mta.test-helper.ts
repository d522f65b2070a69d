// Test helpers shared by the in-process MTA tests (mta.test.ts, receive-hardening.test.ts, tls.test.ts, dkim.test.ts).
import { promises as fs } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { SMTPServer, SMTPServerOptions, SMTPServerSession } from 'smtp-server';
import type { MtaNodeConfig } from '../shared/config.js';
import { EventLog, type LabEvent } from '../shared/events.js';
import type { RunningRole } from '../shared/node.js';
import { createSmtpServer, listen } from '../shared/smtp-server.js';
import { startMta } from './index.js';

/** The first event of `log` that matches, past or future; fails after `timeoutMs` with the recent events. */
export function waitForEvent(log: EventLog, match: (e: LabEvent) => boolean, what: string, timeoutMs = 8000): Promise<LabEvent> {
  const found = log.since(0).find(match);
  if (found) return Promise.resolve(found);
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      unsubscribe();
      const recent = log.since(0).slice(-15).map((e) => `${e.kind} ${e.queueId ?? ''} ${JSON.stringify(e.detail)}`);
      reject(new Error(`timed out waiting for ${what}; recent events:\n${recent.join('\n')}`));
    }, timeoutMs);
    const unsubscribe = log.subscribe((e) => {
      if (!match(e)) return;
      clearTimeout(timer);
      unsubscribe();
      resolve(e);
    });
  });
}

/** An MTA node configuration for `sender.test` on `address`, with free ports and a short retry schedule. */
export function testMtaConfig(over: Pick<MtaNodeConfig, 'address' | 'dataDir' | 'resolver' | 'localDelivery' | 'users' | 'relayPort'> & Partial<MtaNodeConfig>): MtaNodeConfig {
  return {
    name: 'mta',
    role: 'mta',
    hostname: 'mta.sender.test',
    controlPort: 0,
    greetingDelayMs: 0,
    fsync: true,
    ports: { smtp: 0, submission: 0 },
    localDomains: ['sender.test'],
    retry: { schedule: [150, 300], maxLifetimeMs: 2500 },
    connectTimeoutMs: 1000,
    ...over,
  };
}

/** An MTA started in process on a fresh data directory; `stop` stops it and removes the directory. */
export async function startTestMta(over: Omit<Parameters<typeof testMtaConfig>[0], 'dataDir'> & Partial<MtaNodeConfig>): Promise<{ mta: RunningRole; events: EventLog; config: MtaNodeConfig; stop(): Promise<void> }> {
  const dataDir = await fs.mkdtemp(path.join(os.tmpdir(), 'maillab-mta-'));
  const config = testMtaConfig({ ...over, dataDir });
  const events = new EventLog('mta');
  const mta = await startMta({ config, events, log: () => undefined });
  return {
    mta,
    events,
    config,
    stop: async () => {
      await mta.stop();
      await fs.rm(dataDir, { recursive: true, force: true });
    },
  };
}

/**
 * A next hop of the MTA (an MX, or an LMTP server with `{ lmtp: true }`), plain text, on `address:port`: it takes
 * every message and answers 250 with what `onMessage` returns for its bytes (an LMTP server: one reply for all
 * recipients, or one each, in order, RFC 2033 §4.2). `options` adds or overrides the rest.
 */
export async function startCapturingServer(
  address: string,
  port: number,
  onMessage: (data: Buffer, session: SMTPServerSession) => string | string[],
  options: Partial<SMTPServerOptions> = {},
): Promise<SMTPServer> {
  const server = createSmtpServer({
    greetingDelayMs: 0,
    authOptional: true,
    disabledCommands: ['AUTH', 'STARTTLS'],
    hideSTARTTLS: true,
    logger: false,
    closeTimeout: 100,
    onData(stream, session, callback) {
      const chunks: Buffer[] = [];
      stream.on('data', (c: Buffer) => chunks.push(c));
      // smtp-server takes an array of replies in LMTP mode, though its type says a string.
      stream.on('end', () => callback(null, onMessage(Buffer.concat(chunks), session) as string));
    },
    ...options,
  });
  server.on('error', () => undefined);
  await listen(server, address, port, options.name ?? address);
  return server;
}
