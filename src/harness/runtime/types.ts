// A runtime only knows how to run the node entry point somewhere and give back its endpoints (and, where it can,
// the network faults of a running node).
import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Endpoint, NodeConfig } from '../../shared/config.js';
import type { LabDefinition } from '../topology.js';

export interface LabNetwork {
  /** Address of every host. */
  addresses: Record<string, string>;
  /** Added to every standard port (0 when privileged ports can be bound). */
  portOffset: number;
  /** Where the nodes' data directories live (on the docker runtime: inside the containers). */
  dataRoot: string;
  /**
   * A directory of the harness's host that is the lab's (mode 0700, removed with the lab, reaped with it when its
   * owner is gone): the lab CA's certificate is written there. The local runtime's is `dataRoot`.
   */
  hostDir: string;
  /**
   * A link proxy (issue 15) may connect upstream from its client's own address, so the server behind it sees the real
   * client: true on the local runtime (loopback owns all of 127/8); a container cannot take another's address.
   */
  linksKeepClientAddress?: boolean;
}

/**
 * Faults only some runtimes can cause (docker: a container can be frozen or cut off the lab network; a local
 * process on loopback cannot). A runtime that can, offers them on its running nodes.
 */
export interface NetworkFaults {
  /** Freezes every process of the node: connections hang, nothing is refused. */
  pause(): Promise<void>;
  unpause(): Promise<void>;
  /** Network partition: the node leaves the lab network (the harness loses it too). */
  disconnect(): Promise<void>;
  /** Rejoins the lab network with the same address, names and endpoints. */
  connect(): Promise<void>;
}

export interface RunningNode {
  /** The node's control channel, reachable from the harness. */
  control: Endpoint;
  /** Its services, reachable from the harness. */
  services: Record<string, Endpoint>;
  /** Graceful stop (SIGTERM), resolves when the node is gone. */
  stop(): Promise<void>;
  /** SIGKILL, resolves when the node is gone. */
  kill(): Promise<void>;
  /** Present when the runtime can freeze or partition the node. */
  readonly faults?: NetworkFaults;
}

export interface Runtime {
  readonly kind: 'local' | 'docker';
  prepare(lab: LabDefinition, labId: string): Promise<LabNetwork>;
  startNode(config: NodeConfig): Promise<RunningNode>;
  /** Removes what `prepare` created. `keepData` leaves the data directories for a post-mortem. */
  dispose(options?: { keepData?: boolean }): Promise<void>;
}

/** Whether a directory holds maillab's own package.json (a checkout, or the package installed in node_modules). */
function isMaillabPackage(dir: string): boolean {
  const manifest = path.join(dir, 'package.json');
  if (!existsSync(manifest)) return false;
  try {
    return (JSON.parse(readFileSync(manifest, 'utf8')) as { name?: string }).name === 'maillab';
  } catch {
    return false;
  }
}

/** The maillab package directory (holds package.json and dist/), from source or from the bundle. */
export function packageRoot(): string {
  let dir = path.dirname(fileURLToPath(import.meta.url));
  for (;;) {
    if (isMaillabPackage(dir)) return dir;
    const parent = path.dirname(dir);
    if (parent === dir) throw new Error('cannot find the maillab package root');
    dir = parent;
  }
}
