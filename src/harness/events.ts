// Every event the history can hold, by kind: the roles' contracts (src/<role>/api.ts) plus the harness's own
// events: the nemesis's faults and control actions, and what the scenario's devices saw.
import type { DnsContract } from '../dns/api.js';
import { DNS_EVENT_KINDS } from '../dns/api.js';
import type { MailboxContract } from '../mailbox/api.js';
import { MAILBOX_EVENT_KINDS } from '../mailbox/api.js';
import type { MtaContract } from '../mta/api.js';
import { MTA_EVENT_KINDS } from '../mta/api.js';
import type { MxContract } from '../mx/api.js';
import { MX_EVENT_KINDS } from '../mx/api.js';
import type { ProxyContract } from '../proxy/api.js';
import { PROXY_EVENT_KINDS } from '../proxy/api.js';
import type { Role } from '../shared/config.js';
import type { ToxicView } from '../shared/faults.js';
import { eventKinds, type EventTable } from '../shared/contract.js';
import type { LabEvent } from '../shared/events.js';
import type { DnsFaultRule, SmtpFaultRule } from '../shared/faults.js';

export type Contracts = { dns: DnsContract; mta: MtaContract; mx: MxContract; mailbox: MailboxContract; proxy: ProxyContract };

/** The name under which the harness records faults and control actions in the history. */
export const NEMESIS = 'nemesis';

/** A fault or control action on one node; `took` is how long it took, in ms; `error` says why it failed. */
interface NodeAction {
  target: string;
  role: Role;
  took: number;
  error?: string;
}

/** Events the harness records itself: node `nemesis` for faults, the device's name for devices. */
export type HarnessEvents = {
  /** A graceful stop (SIGTERM / docker stop) completed: the node's clients are refused from now on. */
  'node-stop': NodeAction;
  /** The node was started again and is ready. */
  'node-start': NodeAction;
  /** SIGKILL (docker kill): no clean-up; the disk stays. */
  'node-kill': NodeAction;
  /** stop, then start. */
  'node-restart': NodeAction;
  /** The node is frozen (docker pause): peers time out instead of being refused. */
  'node-pause': NodeAction;
  'node-unpause': NodeAction;
  /** A partition: the node left the lab network. */
  'node-disconnect': NodeAction;
  'node-connect': NodeAction;
  /** A lab DNS edit: the operation and its arguments (`set-records { name, type, records }`, `add-zone { zone }`...). */
  'dns-edit': NodeAction & { operation: string; args: object };
  /** The MTA was asked to retry every deferred message now. */
  'queue-flush': NodeAction & { flushed: number };
  /**
   * A queued message was held, released or deleted at the MTA (`hold`, `release`, `delete`); `queueId` is the MTA's,
   * the event carries the message's Message-ID when the MTA's answer named it (hold, release).
   */
  'queue-change': NodeAction & { operation: 'hold' | 'release' | 'delete'; queueId: string };
  /** The MTA's DKIM signers were replaced (`set-dkim`, a key rotation): the new ones, without their keys. */
  'dkim-change': NodeAction & { signers: { domain: string; selector: string; algorithm: string }[] };
  /** The lab DNS's fault rules were replaced (`set-dns-faults`): the rules now in force (issue 15). */
  'dns-faults-change': NodeAction & { rules: DnsFaultRule[] };
  /** A node's SMTP fault rules were replaced (`set-smtp-faults`, issue 15): the rules in force from now on. */
  'smtp-faults-change': NodeAction & { rules: SmtpFaultRule[] };
  /** A link's toxics were replaced (`set-toxics` at its proxy): the link and its toxics from now on. */
  'link-change': NodeAction & { from: string; to: string; toxics: ToxicView[] };
  /**
   * Events of a node the harness never received: its stream from the node skipped from `from` to `to` (the node
   * keeps its latest EVENT_LOG_KEEP only, and the harness was not following when those were emitted). Checkers over
   * this history may then miss what happened there.
   */
  'events-lost': { from: number; to: number };
  /** An IMAP device learned of a message (UID, flags). */
  'device-synced': { uid: number; flags: string[] };
  /** An IMAP device saw a message's flags change. */
  'device-flags': { uid: number; flags: string[] };
  /** An IMAP device saw a message disappear. */
  'device-removed': { uid: number };
  /** A device sent a message (SMTP submission, then APPEND to Sent). */
  'device-sent': { to: string[] };
  /** An IMAP device's session ended (it was cut off, or the server or network ended it): its local copy stays as it was. */
  'device-offline': { reason: string };
  /** An IMAP device opened a new session and resynced its whole local copy (`uidValidity` of INBOX, `messages` in it). */
  'device-reconnected': { uidValidity: string; messages: number; attempt: number };
  /** A POP3 device downloaded a message. */
  'device-downloaded': { uidl: string; size: number };
};

export const HARNESS_EVENT_KINDS = eventKinds<HarnessEvents>()([
  'node-stop', 'node-start', 'node-kill', 'node-restart', 'node-pause', 'node-unpause', 'node-disconnect', 'node-connect',
  'dns-edit', 'queue-flush', 'queue-change', 'dkim-change', 'dns-faults-change', 'smtp-faults-change', 'link-change', 'events-lost', 'device-synced', 'device-flags', 'device-removed', 'device-sent', 'device-downloaded', 'device-offline', 'device-reconnected',
] as const);

/**
 * Control operations that change a node's data, recorded in the history (node `nemesis`) whoever calls them:
 * `lab.dns`, `lab.mta().flush()` or `node.as(role).control().call(...)`.
 */
export const RECORDED_OPERATIONS: { readonly [R in Role]?: { readonly [operation: string]: 'dns-edit' | 'queue-flush' | 'queue-change' | 'dkim-change' | 'dns-faults-change' | 'smtp-faults-change' | 'link-change' } } = {
  dns: { 'set-records': 'dns-edit', 'add-record': 'dns-edit', 'remove-records': 'dns-edit', 'set-zones': 'dns-edit', 'add-zone': 'dns-edit', 'remove-zone': 'dns-edit', 'set-mta-sts-policy': 'dns-edit', 'set-dns-faults': 'dns-faults-change' },
  mta: { flush: 'queue-flush', hold: 'queue-change', release: 'queue-change', delete: 'queue-change', 'set-dkim': 'dkim-change', 'set-smtp-faults': 'smtp-faults-change' },
  mx: { 'set-smtp-faults': 'smtp-faults-change' },
  mailbox: { 'set-smtp-faults': 'smtp-faults-change' },
  proxy: { 'set-toxics': 'link-change' },
};

/** The kinds each role's contract lists. */
export const ROLE_EVENT_KINDS: { readonly [R in Role]: readonly string[] } = {
  dns: DNS_EVENT_KINDS,
  mta: MTA_EVENT_KINDS,
  mx: MX_EVENT_KINDS,
  mailbox: MAILBOX_EVENT_KINDS,
  proxy: PROXY_EVENT_KINDS,
};

type EventsOf<T extends EventTable> = { [K in keyof T & string]: LabEvent<K, T[K]> }[keyof T & string];

/** Any event of the history, discriminated by `kind`. A kind several roles emit has the union of their details. */
export type HistoryEvent =
  | EventsOf<Contracts['dns']['events']>
  | EventsOf<Contracts['mta']['events']>
  | EventsOf<Contracts['mx']['events']>
  | EventsOf<Contracts['mailbox']['events']>
  | EventsOf<Contracts['proxy']['events']>
  | EventsOf<HarnessEvents>;

export type EventKind = HistoryEvent['kind'];

/** The event type of one kind, e.g. `EventOf<'deferred'>` with its detail typed. */
export type EventOf<K extends EventKind> = Extract<HistoryEvent, { kind: K }>;

/** Every kind any node or the harness may record (the README's event table lists exactly these). */
export function allEventKinds(): string[] {
  return [...new Set([...Object.values(ROLE_EVENT_KINDS).flat(), ...HARNESS_EVENT_KINDS])].sort();
}
