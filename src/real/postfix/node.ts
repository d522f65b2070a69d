// Postfix as the lab's `mx` role (issue 14): a real Postfix 3.7 instance of the node's own, started from the
// configuration config.ts writes, speaking the MX role contract (src/mx/api.ts) through events read from its maillog
// (maillog.ts). The instance runs as `postfix -c <dir> start-fg`, a child of this process, inside a mount namespace
// whose /etc/resolv.conf names only the lab DNS: Postfix resolves through libc, and a user's main.cf may ask DNS
// (reject_unknown_client_hostname, an RBL); whatever it asks then goes to the lab DNS, which answers only for the lab.
import type { MxNodeConfig } from '../../shared/config.js';
import type { NodeContext, RunningRole } from '../../shared/node.js';
import type { MxContract, MxEvents } from '../../mx/api.js';
import { postfixLayout, writePostfixConfig, type PostfixUserConfig } from './config.js';
import { MaillogParser } from './maillog.js';
import { emitFromMaillog, postfixUnavailable, startInstance } from './instance.js';
import { smtpFaultsUnsupported } from '../../shared/smtp-faults.js';

export { instanceProcesses, masterPid, POSTFIX, POSTFIX_MASTER, postfixUnavailable } from './instance.js';

export interface PostfixMxOptions {
  /** The user's own main.cf and master.cf (contents), kept except where the lab must decide (README.md). */
  user?: PostfixUserConfig;
  /** How long the master may take to start and greet. Default 20 s. */
  startTimeoutMs?: number;
  /**
   * How long the master may take to stop after SIGTERM before its process group gets SIGKILL. Default 3 s: runNode
   * exits 5 s after a stop began, and the instance must be gone by then (its master is in a session of its own, so it
   * would outlive the node).
   */
  stopTimeoutMs?: number;
}

/** The `mx` role, played by Postfix. Same contract as startMx: no operations, the MX events. */
export async function startPostfixMx(ctx: NodeContext<MxNodeConfig, MxEvents>, options: PostfixMxOptions = {}): Promise<RunningRole<MxContract>> {
  const { config, events, log } = ctx;
  const why = postfixUnavailable();
  if (why) throw new Error(`cannot start Postfix as ${config.name}: ${why}`);
  const layout = postfixLayout(config.dataDir);
  // maillab's MX features Postfix has no built-in counterpart for (milters would be the user's to configure).
  const ignored = (['auth', 'forwards', 'forwardVia', 'arcSeal', 'scanner', 'malwareAction'] as const).filter((k) => config[k] !== undefined);
  if (ignored.length) log(`Postfix MX: not applied (no Postfix counterpart in this adapter): ${ignored.join(', ')}`);
  const parser = new MaillogParser(`LMTP ${config.lmtp.host}:${config.lmtp.port}`);
  const { stop } = await startInstance({
    name: config.name,
    layout,
    resolver: config.resolver.host,
    greet: [{ host: config.address, port: config.ports.smtp }],
    log,
    configure: async () => void (await writePostfixConfig(config, options.user)),
    onLine: emitFromMaillog((line) => parser.feed(line), (input) => events.emit(input as Parameters<typeof events.emit>[0]), log),
    timeouts: options,
  });
  log(`Postfix ${config.address}:${config.ports.smtp} ready (config ${layout.dir}, maillog ${layout.maillog})`);
  return {
    services: { smtp: { host: config.address, port: config.ports.smtp } },
    rpc: { ...smtpFaultsUnsupported('Postfix') },
    stop,
  };
}
