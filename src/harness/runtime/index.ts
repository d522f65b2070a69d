// Choosing a runtime: MAILLAB_RUNTIME=local | docker | auto. The docker runtime (and testcontainers with it) is
// loaded only when asked for, so the local runtime never pays for it.
import { LocalRuntime } from './local.js';
import type { Runtime } from './types.js';

export type RuntimeKind = 'local' | 'docker';
export type RuntimeChoice = RuntimeKind | 'auto';

export type { LabNetwork, NetworkFaults, RunningNode, Runtime } from './types.js';
export { packageRoot } from './types.js';

/** What `auto` and `docker` learn of the engine before choosing. */
export interface EngineProbe {
  available: boolean;
  where: string;
  reason?: string;
}

export interface CreateRuntimeOptions {
  /** How the engine is looked for; the default asks the Docker API (DOCKER_HOST or the default socket). */
  probeEngine?: () => Promise<EngineProbe>;
  /** Where `auto`'s notice goes when it falls back (stderr by default). */
  notice?: (message: string) => void;
}

/**
 * Which runtime a choice comes to: `local` always; `docker` when an engine answers, else an error saying why;
 * `auto` docker when an engine answers, else local, with the reason. A scenario that needs docker-only faults
 * asks this before its lab starts.
 */
export async function resolveRuntime(choice: RuntimeChoice, options: Pick<CreateRuntimeOptions, 'probeEngine'> = {}): Promise<{ kind: RuntimeKind; reason?: string }> {
  if (choice === 'local') return { kind: 'local', reason: 'MAILLAB_RUNTIME=local' };
  if (choice !== 'docker' && choice !== 'auto') throw new Error(`unknown runtime "${String(choice)}" (use local, docker or auto)`);
  const probe = options.probeEngine ?? (async () => (await import('./docker.js')).dockerEngine());
  const engine = await probe();
  if (engine.available) return { kind: 'docker' };
  const why = `no Docker engine answers at ${engine.where}`;
  if (choice === 'docker') throw new Error(`${why}: start dockerd or use MAILLAB_RUNTIME=local (${engine.reason ?? 'no reason given'})`);
  return { kind: 'local', reason: `MAILLAB_RUNTIME=auto: ${why} (${engine.reason ?? 'no reason given'})` };
}

/** The runtime for a choice (see resolveRuntime); `auto`'s fallback to local is announced with its reason. */
export async function createRuntime(choice: RuntimeChoice, options: CreateRuntimeOptions = {}): Promise<Runtime> {
  const resolved = await resolveRuntime(choice, options);
  if (resolved.kind === 'local') {
    if (choice === 'auto') (options.notice ?? ((m) => process.stderr.write(m + '\n')))(`maillab: ${resolved.reason}; using the local runtime`);
    return new LocalRuntime();
  }
  return (await import('./docker.js')).createDockerRuntime();
}

/** A runtime named on a command line or in MAILLAB_RUNTIME, checked. */
export function parseRuntimeChoice(value: string, from = 'runtime '): RuntimeChoice {
  if (value !== 'local' && value !== 'docker' && value !== 'auto') throw new Error(`${from}${value}: use local, docker or auto`);
  return value;
}

/** The runtime MAILLAB_RUNTIME asks for (local when unset). */
export function runtimeFromEnvironment(): RuntimeChoice {
  return parseRuntimeChoice(process.env.MAILLAB_RUNTIME ?? 'local', 'MAILLAB_RUNTIME=');
}
