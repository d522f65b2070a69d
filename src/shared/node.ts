// The entry point shared by every role: starts the role's servers, the control channel, and announces readiness.
import type { Endpoint, NodeConfig } from './config.js';
import type { EventTable, NodeEvents, RoleContract, RpcTable } from './contract.js';
import { EventLog } from './events.js';
import { promises as fs } from 'node:fs';
import path from 'node:path';
import { newControlToken, startControlServer } from './control.js';

export interface NodeContext<C extends NodeConfig = NodeConfig, E extends EventTable = EventTable> {
  config: C;
  events: EventLog<E>;
  /** Diagnostics for humans (stderr); structured facts go to `events`. */
  log(message: string): void;
}

export interface RunningRole<K extends RoleContract = RoleContract> {
  /** The services the role listens on, by name (`dns`, `smtp`, `submission`, `lmtp`, `pop3`, `imap`). */
  services: Record<string, Endpoint>;
  /** The role's control operations, exactly those of its contract. */
  rpc: RpcTable<K>;
  /** Stops accepting, finishes or abandons work safely, closes servers. */
  stop(): Promise<void>;
}

export type RoleStarter<C extends NodeConfig, K extends RoleContract> = (ctx: NodeContext<C, K['events']>) => Promise<RunningRole<K>>;

/**
 * V8 flags every node process starts with, on both runtimes. A young generation of at most 2 MiB per semi-space
 * (V8's default on 64-bit is 16): a node's allocations are short-lived (a message, a session), so the smaller nursery
 * is scavenged more often at about the same CPU, and the lab's peak memory under load falls by about a fifth (issue
 * 17: PSS of the four nodes at 2000 × 1 KiB over 20 connections, 306–310 MiB → 238–245; throughput within the noise).
 */
export const NODE_V8_FLAGS: readonly string[] = ['--max-semi-space-size=2'];

/** The line a node prints on stdout once every service listens; runtimes wait for it. */
export const READY_MARKER = 'MAILLAB_READY ';

export async function runNode<C extends NodeConfig, K extends RoleContract>(config: C, start: RoleStarter<C, K>): Promise<void> {
  const events = new EventLog<K['events']>(config.name);
  const log = (message: string) => process.stderr.write(`[${config.name}] ${message}\n`);
  const ctx: NodeContext<C, K['events']> = { config, events, log };
  // Every contract includes the life-cycle events (RoleContract says so); emitted here for every role.
  const lifecycle: EventLog<NodeEvents> = events;
  const role = await start(ctx);
  const token = config.controlToken ?? (await tokenForHandStartedNode(config, log));
  const control = await startControlServer({
    host: config.address,
    port: config.controlPort,
    token,
    events,
    health: () => ({ name: config.name, role: config.role, pid: process.pid, services: role.services }),
    rpc: () => role.rpc,
  });
  const control_: Endpoint = { host: config.address, port: config.controlPort };

  let stopping = false;
  const shutdown = async (signal: string) => {
    if (stopping) return;
    stopping = true;
    lifecycle.emit({ kind: 'node-stopping', detail: { signal } });
    const force = setTimeout(() => process.exit(1), 5000);
    force.unref();
    try {
      await role.stop();
    } catch (err) {
      log(`error while stopping: ${(err as Error).message}`);
    }
    control.closeAllConnections();
    control.close();
    process.exit(0);
  };
  process.on('SIGTERM', () => void shutdown('SIGTERM'));
  process.on('SIGINT', () => void shutdown('SIGINT'));
  // Started by the local runtime: when the harness goes away (its end of stdin closes), so do we.
  if (process.env.MAILLAB_LIFELINE === 'stdin') {
    process.stdin.on('end', () => void shutdown('harness gone'));
    process.stdin.on('error', () => void shutdown('harness gone'));
    process.stdin.resume();
  }
  // Ready only now, with the signal handlers in place: the harness may stop the node the moment it reads this line,
  // and a SIGTERM before a handler exists would kill the process outright, skipping the role's stop (a real server's
  // children would live on).
  lifecycle.emit({ kind: 'node-ready', detail: { role: config.role, services: role.services } });
  process.stdout.write(READY_MARKER + JSON.stringify({ name: config.name, services: role.services, control: control_ }) + '\n');
}

/**
 * A node started by hand (`maillab node <role> --config x.json`) without `controlToken`: its control channel
 * still needs one, so the node makes one and writes it where only its user can read it.
 */
async function tokenForHandStartedNode(config: NodeConfig, log: (message: string) => void): Promise<string> {
  const token = newControlToken();
  const file = path.resolve(config.dataDir, 'control-token');
  await fs.mkdir(config.dataDir, { recursive: true, mode: 0o700 });
  await fs.rm(file, { force: true }); // a new file, so no one else holds it open or owns it
  await fs.writeFile(file, token + '\n', { mode: 0o600, flag: 'wx' });
  log(`no controlToken in the config: the control channel's token is in ${file} (send "Authorization: Bearer <token>")`);
  return token;
}
