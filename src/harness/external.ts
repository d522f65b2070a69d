// External hosts (issue 14): servers the user runs outside the lab. The lab starts nothing for them; before its nodes
// start it probes each one, so that a lab whose external server is not there fails at once with a message naming the
// host, its address, the port and what was seen there, instead of later as deferred mail.
//
// The probe, per port, until `readyTimeoutMs` (ExternalHostPlan) has passed: a TCP connection, then for the services
// that greet in plaintext the greeting line: `220` for smtp, submission and lmtp (RFC 5321 §4.2, RFC 2033 §4.1, RFC
// 6409), `* OK` (or `* PREAUTH`) for imap (RFC 3501 §7.1), `+OK` for pop3 (RFC 1939 §4). The implicit-TLS ports
// (submissions, imaps, pop3s) are only connected to: a handshake would need the user's CA, which the lab does not
// have. A port that refuses, does not answer or greets otherwise is tried again (a server may be starting) every
// PROBE_RETRY_MS until the deadline. A port that passed is left politely (QUIT or LOGOUT).
import { LineClient, LineClientError } from './clients/line-client.js';
import type { ExternalHostPlan, ExternalService } from './topology.js';

/** How long the probe waits between two attempts at a port that was not ready. */
export const PROBE_RETRY_MS = 100;

interface Greeting {
  /** What the probe expects, for the error message. */
  expected: string;
  accepts(line: string): boolean;
  /** What it sends once the greeting passed, to leave without an error in the server's log. */
  bye: string;
}

const SMTP_GREETING: Greeting = { expected: 'a 220 greeting', accepts: (line) => /^220(?:[ -]|$)/.test(line), bye: 'QUIT' };

/** The greeting of each service that greets in plaintext; the others (implicit TLS) are probed by connecting only. */
const GREETINGS: Partial<Record<ExternalService, Greeting>> = {
  smtp: SMTP_GREETING,
  submission: SMTP_GREETING,
  lmtp: SMTP_GREETING,
  imap: { expected: 'an "* OK" greeting', accepts: (line) => /^\* (?:OK|PREAUTH)\b/i.test(line), bye: 'p1 LOGOUT' },
  pop3: { expected: 'a "+OK" greeting', accepts: (line) => /^\+OK\b/.test(line), bye: 'QUIT' },
};

/** The outcome of one attempt at a port: ready, or what was seen instead. */
type Attempt = { ready: true } | { ready: false; seen: string };

/** One attempt: connect, read the greeting where the service has one, leave. */
async function attempt(host: ExternalHostPlan, service: ExternalService, port: number, timeoutMs: number): Promise<Attempt> {
  const greeting = GREETINGS[service];
  let client: LineClient;
  try {
    client = await LineClient.connect({ host: host.address, port }, { name: service.toUpperCase(), timeoutMs });
  } catch (err) {
    return { ready: false, seen: (err as Error).message.replace(/^.*?: cannot connect: /, 'no connection: ') };
  }
  if (!greeting) {
    client.close();
    return { ready: true };
  }
  try {
    const line = await client.line({ timeoutMs });
    if (!greeting.accepts(line)) {
      client.close();
      return { ready: false, seen: `greeting ${JSON.stringify(line)}, not ${greeting.expected}` };
    }
    // Leave as a client should; the server closes after its reply, or the socket is dropped a moment later.
    client.send(greeting.bye);
    client.end();
    setTimeout(() => client.close(), 1000).unref();
    return { ready: true };
  } catch (err) {
    client.close();
    const kind = err instanceof LineClientError ? err.kind : undefined;
    const seen = kind === 'timeout' ? `a connection, but no greeting within ${timeoutMs} ms` : kind === 'closed' ? 'a connection, closed without a greeting' : (err as Error).message;
    return { ready: false, seen };
  }
}

/**
 * Waits until every port of `host` is ready, within its `readyTimeoutMs`; fails naming the host, its address, the
 * port and the last thing seen there.
 */
export async function probeExternalHost(host: ExternalHostPlan): Promise<void> {
  const deadline = Date.now() + host.readyTimeoutMs;
  // Once one port failed the start has failed: the others stop trying.
  let failed = false;
  await Promise.all(
    Object.entries(host.ports).map(async ([service, port]) => {
      while (!failed) {
        const left = Math.max(1, deadline - Date.now());
        const outcome = await attempt(host, service as ExternalService, port, left);
        if (outcome.ready) return;
        if (Date.now() + PROBE_RETRY_MS >= deadline) {
          failed = true;
          throw new Error(
            `external host ${host.name} (${host.hostname}, ${host.address}) is not ready: ${service} port ${port}: ${outcome.seen} ` +
              `(probed for ${host.readyTimeoutMs} ms, ready.timeoutMs): start the server there, or fix the lab's address or port`,
          );
        }
        await new Promise((resolve) => setTimeout(resolve, PROBE_RETRY_MS));
      }
    }),
  );
}

/** Probes every external host of a lab at once; the first failure fails the lot. */
export async function probeExternalHosts(hosts: Record<string, ExternalHostPlan>): Promise<void> {
  await Promise.all(Object.values(hosts).map(probeExternalHost));
}
