// Test helpers shared by the in-process MTA tests (mta.test.ts, receive-hardening.test.ts).
import type { MtaNodeConfig } from '../shared/config.js';
import type { EventLog, LabEvent } from '../shared/events.js';

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
