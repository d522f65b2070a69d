// The `mta` role: the sender MTA. Submission (587, AUTH; and 465 with implicit TLS when the node has `tls`) and SMTP
// (25, for its local domains; both with STARTTLS when the node has `tls`) in front of a
// durable queue; delivery over SMTP to MX hosts found in the lab DNS, and over LMTP to the mailbox server for local
// domains; retries, expiry and bounces. Submissions are DKIM-signed before they are queued (dkim.ts; signers replaced
// at run time with `set-dkim`).
//
// Control operations and events: see the contract, api.ts.
import path from 'node:path';
import { DnsAnswerCache } from '../dns/cache.js';
import { createLabResolver, resolveMxTargets, resolveTlsa } from '../dns/index.js';
import { DEFAULT_COMMAND_TIMEOUT_MS, DEFAULT_DATA_TIMEOUT_MS, type Endpoint, type MtaNodeConfig } from '../shared/config.js';
import { headerSection } from '../shared/headers.js';
import type { RoleStarter } from '../shared/node.js';
import type { MtaContract } from './api.js';
import { SmtpClientPool } from '../shared/smtp-client.js';
import { listen } from '../shared/smtp-server.js';
import { MtaEngine } from './engine.js';
import { MtaStsPolicies } from './mta-sts.js';
import { isFinal, MailQueue } from './queue.js';
import { createReceivers } from './receive.js';
import { DkimSigner } from './dkim.js';
import { createHttpApi } from './http-api.js';
import { smtpFaultOperations, smtpFaultsOf } from '../shared/smtp-faults.js';

export { LAB_RETRY, PRODUCTION_RETRY } from '../shared/retry.js';
export type * from './api.js';

/** The `queueId` argument of a queue operation, checked: the answer names the operation when it is missing. */
function requireQueueId(operation: string, args: { queueId?: unknown } | undefined): string {
  if (typeof args?.queueId !== 'string' || !args.queueId) throw new Error(`${operation}: queueId (a queue id, as \`queue\` lists them) is required`);
  return args.queueId;
}

/** How long an outbound session stays cached for the next message to the same server (Postfix: smtp_connection_cache_time_limit = 2s). */
const RELAY_IDLE_MS = 2000;
/** LMTP sessions to the mailbox server are cheap to keep and always reused: keep them longer. */
const LMTP_IDLE_MS = 10_000;
/** How long stop() lets running deliveries finish. */
const STOP_GRACE_MS = 2000;

export const startMta: RoleStarter<MtaNodeConfig, MtaContract> = async (ctx) => {
  const { config, events, log } = ctx;
  // Checked before anything starts: a node with a bad key must not run and send its domain's mail unsigned.
  const dkim = new DkimSigner(config.dkim ?? []);
  // DNS queries leave from the node's address too, so the lab DNS's log names the MTA (issue 15).
  const resolver = createLabResolver(config.resolver, { localAddress: config.address });
  // MX resolution's questions (issue 17): identical ones in flight share one answer; A/AAAA kept only when the lab
  // configures it (config.dnsCache), because the lab's DNS edits and faults must apply to the next message.
  const answers = new DnsAnswerCache(resolver, { maxTtlSeconds: config.dnsCache?.maxTtlSeconds ?? 0 }).asMxResolver();
  // Outbound connections leave from the node's address, the one its PTR record and Received headers name.
  // Every reply but the end of data's, and a stalled connection, within commandTimeoutMs (60 s unless the lab says).
  const client = { ehloName: config.hostname, localAddress: config.address, connectTimeoutMs: config.connectTimeoutMs, socketTimeoutMs: config.commandTimeoutMs ?? DEFAULT_COMMAND_TIMEOUT_MS };
  // The lab CA: what the `verify` TLS policy checks an MX's certificate against.
  // The end-of-data reply may take RFC 5321 §4.5.3.2's 10 minutes unless the lab says otherwise (dataTimeoutMs).
  const smtp = new SmtpClientPool({ ...client, idleMs: RELAY_IDLE_MS, dataTimeoutMs: config.dataTimeoutMs ?? DEFAULT_DATA_TIMEOUT_MS, ...(config.tls ? { ca: config.tls.ca } : {}) });
  const lmtp = new SmtpClientPool({ ...client, lmtp: true, idleMs: LMTP_IDLE_MS });
  const queue = new MailQueue(path.join(config.dataDir, 'queue'), { fsync: config.fsync });
  const engine = new MtaEngine({
    config,
    queue,
    events,
    log,
    delivery: {
      hostname: config.hostname,
      localDomains: config.localDomains,
      ...(config.localDelivery ? { localDelivery: config.localDelivery } : {}),
      relayPort: config.relayPort,
      // The transport map (issue 14): a port per MX host, and routes that bypass the MX lookup.
      ...(config.relayPorts ? { relayPorts: config.relayPorts } : {}),
      ...(config.transport ? { transport: config.transport } : {}),
      // A route's next hop by its own A/AAAA records: an empty MX answer makes the resolution the host's implicit MX.
      lookupHost: (host: string) => resolveMxTargets({ resolveMx: async () => [], resolve4: answers.resolve4.bind(answers), resolve6: answers.resolve6.bind(answers) }, host),
      ...(config.labAddresses ? { labAddresses: config.labAddresses } : {}),
      ...(config.tlsPolicy ? { tlsPolicy: config.tlsPolicy } : {}),
      lookupMx: (domain) => resolveMxTargets(answers, domain),
      // MTA-STS policies are fetched over HTTPS verified against the lab CA, so they need the node's `tls`.
      ...(config.mtaSts && config.tls
        ? {
            mtaSts: new MtaStsPolicies({
              port: config.mtaSts.port,
              ca: config.tls.ca,
              resolveTxt: (name) => resolver.resolveTxt(name),
              resolveAddresses: (host) => resolver.resolve4(host),
              ...(config.labAddresses ? { labAddresses: config.labAddresses } : {}),
            }),
          }
        : {}),
      ...(config.dane ? { resolveTlsa: (name: string) => resolveTlsa(config.resolver, name, { localAddress: config.address }) } : {}),
      smtp,
      lmtp,
    },
  });

  // Built (and their relayClients checked) before the queue starts working; they listen below.
  // SMTP fault rules (issue 15): one set for 25, 587 and 465, applied by the servers themselves.
  const faults = smtpFaultsOf(config);
  const servers = createReceivers({ config, engine, events, log, dkim, faults });
  // The HTTP email API (issue 13, http-api.ts): built, and its idempotency keys loaded, before the queue starts.
  const api = config.api ? createHttpApi({ config: { ...config, api: config.api }, engine, events, log, dkim }) : undefined;
  await api?.open();
  const recovered = await engine.start();
  if (recovered.queued.length || recovered.broken.length) {
    log(`mta: queue recovered: ${recovered.queued.length} queued (${recovered.requeued.length} were active), ${recovered.broken.length} broken`);
  }

  await listen(servers.smtp, config.address, config.ports.smtp, 'smtp');
  await listen(servers.submission, config.address, config.ports.submission, 'submission');
  if (servers.submissions) await listen(servers.submissions, config.address, config.ports.submissions!, 'submissions');
  if (api) await listen(api.server, config.address, config.api!.port, 'api');
  const boundPort = (server: typeof servers.smtp, fallback: number): number => {
    const address = server.server.address();
    return typeof address === 'object' && address ? address.port : fallback;
  };
  const services: Record<string, Endpoint> = {
    smtp: { host: config.address, port: boundPort(servers.smtp, config.ports.smtp) },
    submission: { host: config.address, port: boundPort(servers.submission, config.ports.submission) },
    // Implicit TLS (RFC 8314 §3.3), only with the node's `tls`.
    ...(servers.submissions ? { submissions: { host: config.address, port: boundPort(servers.submissions, config.ports.submissions!) } } : {}),
    // The HTTP email API: HTTPS when the node has `tls`.
    ...(api ? { api: { host: config.address, port: api.port() } } : {}),
  };

  return {
    services,
    rpc: {
      queue: (args) =>
        (args?.all || args?.state === 'done' ? queue.list() : queue.pending())
          // A message whose every recipient has its outcome is out of the queue as soon as the outcome is known
          // (and its events emitted), not only once the done record is on disk.
          .filter((m) => args?.all || args?.state || m.recipients.some((r) => !isFinal(r.state)))
          .filter((m) => !args?.state || m.state === args.state)
          .map((m) => engine.view(m)),
      flush: () => engine.flush(),
      message: async (args) => {
        const message = args?.queueId ? queue.get(args.queueId) : undefined;
        if (!message) throw new Error(`no message ${args?.queueId ?? '(queueId missing)'} in the queue`);
        const headers = message.state === 'done' ? undefined : await queue.readMessage(message.queueId).then((data) => headerSection(data), () => undefined);
        return { ...engine.view(message), record: message, ...(headers !== undefined ? { headers } : {}) };
      },
      hold: async (args) => engine.view(await engine.hold(requireQueueId('hold', args))),
      release: async (args) => engine.view(await engine.release(requireQueueId('release', args))),
      delete: async (args) => {
        const queueId = requireQueueId('delete', args);
        await engine.delete(queueId);
        return { queueId, deleted: true as const };
      },
      'set-dkim': (args) => ({ signers: dkim.replace(args?.signers) }),
      dkim: () => ({ signers: dkim.list() }),
      ...smtpFaultOperations(faults),
    },
    async stop() {
      const closed = Object.values(servers).map((server) => new Promise<void>((resolve) => server.close(() => resolve())));
      await Promise.all([...closed, ...(api ? [api.close()] : []), engine.stop(STOP_GRACE_MS)]);
      smtp.close();
      lmtp.close();
    },
  };
};
