// Test helpers shared by the in-process MTA tests (mta.test.ts, receive-hardening.test.ts, tls.test.ts, dkim.test.ts).
import type { SMTPServer, SMTPServerOptions, SMTPServerSession } from 'smtp-server';
import type { MtaNodeConfig } from '../shared/config.js';
import type { EventLog, LabEvent } from '../shared/events.js';
import { createSmtpServer, listen } from '../shared/smtp-server.js';

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

/**
 * A next hop of the MTA (an MX, or an LMTP server with `{ lmtp: true }`), plain text, on `address:port`: it takes
 * every message and answers 250 with what `onMessage` returns for its bytes. `options` adds or overrides the rest.
 */
export async function startCapturingServer(
  address: string,
  port: number,
  onMessage: (data: Buffer, session: SMTPServerSession) => string,
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
      stream.on('end', () => callback(null, onMessage(Buffer.concat(chunks), session)));
    },
    ...options,
  });
  server.on('error', () => undefined);
  await listen(server, address, port, options.name ?? address);
  return server;
}
