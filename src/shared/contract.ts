// The shape of a role's contract with the harness: its control operations (name → arguments → result) and the
// events it emits (kind → detail). Each role declares its own in `src/<role>/api.ts`; the control channel, the
// harness's control client and the history are typed by them, so a scenario never guesses a field.
import type { Endpoint } from './config.js';

/** One control operation: what `POST /rpc/<name>` takes and what it answers. */
export interface Operation<Args extends object = object, Result = unknown> {
  args: Args;
  result: Result;
}

/** The arguments of an operation that takes none. */
export type NoArgs = Record<never, never>;

/** Operations by name. */
export type OperationTable = { [name: string]: Operation };

/** Event details by kind. */
export type EventTable = { [kind: string]: object };

/** Every role's events include the node life-cycle events. */
export interface RoleContract {
  operations: OperationTable;
  events: EventTable & NodeEvents;
}

export type OperationName<C extends RoleContract> = keyof C['operations'] & string;
export type ArgsOf<C extends RoleContract, K extends OperationName<C>> = C['operations'][K]['args'];
export type ResultOf<C extends RoleContract, K extends OperationName<C>> = C['operations'][K]['result'];

/** The node-side implementation of a contract's operations: exactly its names, each typed. */
export type RpcTable<C extends RoleContract> = {
  [K in OperationName<C>]: (args: Partial<ArgsOf<C, K>>) => ResultOf<C, K> | Promise<ResultOf<C, K>>;
};

/** Events every node emits, whatever its role. */
export type NodeEvents = {
  /** Every service listens and the control channel answers. */
  'node-ready': { role: string; services: Record<string, Endpoint> };
  /** A stop was asked for (signal, or the harness went away). */
  'node-stopping': { signal: string };
};

export const NODE_EVENT_KINDS = ['node-ready', 'node-stopping'] as const satisfies readonly (keyof NodeEvents)[];

/**
 * Compile-time check that a runtime list of kinds names every key of an event table, and nothing else:
 * `const KINDS = eventKinds<MtaEvents>()([...] as const)` fails to compile when one is missing.
 */
export function eventKinds<E extends EventTable>() {
  return <const L extends readonly (keyof E & string)[]>(list: L & (Exclude<keyof E, L[number]> extends never ? unknown : { missing: Exclude<keyof E, L[number]> })): L => list;
}
