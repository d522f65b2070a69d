// Postfix as the lab's `mta` role (issue 14): a real Postfix 3.7 instance (instance.ts) from the configuration
// mta-config.ts writes, speaking the MTA role contract (src/mta/api.ts): events from its maillog (mta-maillog.ts),
// the queue operations with Postfix's own tools (postqueue -j, postqueue -f, postcat). It resolves MX hosts through
// the lab DNS only (lab-resolver.ts). DKIM is not Postfix's: set-dkim and dkim fail saying so.
import { smtpFaultsUnsupported } from '../../shared/smtp-faults.js';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import type { MtaNodeConfig } from '../../shared/config.js';
import type { NodeContext, RunningRole } from '../../shared/node.js';
import type { RpcTable } from '../../shared/contract.js';
import type { MessageState, MtaContract, MtaEvents, QueueEntryView, QueuedMessage, RecipientState } from '../../mta/api.js';
import type { PostfixUserConfig } from './config.js';
import { emitFromMaillog, postfixUnavailable, startInstance } from './instance.js';
import { mtaLayout, postfixRetry, SASLPASSWD2, writePostfixMtaConfig, type MtaLayout } from './mta-config.js';
import { MtaMaillogParser } from './mta-maillog.js';
import { existsSync, promises as fs } from 'node:fs';
import path from 'node:path';

const run = promisify(execFile);

export const POSTQUEUE = '/usr/sbin/postqueue';
export const POSTCAT = '/usr/sbin/postcat';
export const POSTSUPER = '/usr/sbin/postsuper';

export interface PostfixMtaOptions {
  /** The user's own main.cf and master.cf (contents), kept except where the lab must decide (README.md). */
  user?: PostfixUserConfig;
  startTimeoutMs?: number;
  stopTimeoutMs?: number;
}

/** Why this machine cannot run a Postfix MTA (Postfix's reasons, and Cyrus SASL's tools), or undefined. */
export function postfixMtaUnavailable(): string | undefined {
  return postfixUnavailable() ?? (existsSync(SASLPASSWD2) ? undefined : `${SASLPASSWD2} is missing (apt-get install sasl2-bin libsasl2-modules)`);
}

/** The error of `set-dkim` and `dkim`: Postfix signs nothing by itself. */
export class PostfixDkimUnsupportedError extends Error {
  override readonly name = 'PostfixDkimUnsupportedError';
  constructor(operation: string) {
    super(`${operation}: this MTA is Postfix, which signs no DKIM without a milter (OpenDKIM, rspamd): it has no DKIM signers to show or replace. Mail it sends is unsigned; DMARC at the receiver then rests on SPF alone`);
  }
}

/** One entry of `postqueue -j` (Postfix ≥ 3.1): one JSON object per line. */
interface PostqueueEntry {
  queue_name: string;
  queue_id: string;
  arrival_time: number;
  message_size: number;
  sender: string;
  recipients: Array<{ address: string; delay_reason?: string }>;
}

/** The `mta` role, played by Postfix. */
export async function startPostfixMta(ctx: NodeContext<MtaNodeConfig, MtaEvents>, options: PostfixMtaOptions = {}): Promise<RunningRole<MtaContract>> {
  const { config, events, log } = ctx;
  const why = postfixMtaUnavailable();
  if (why) throw new Error(`cannot start Postfix as ${config.name}: ${why}`);
  const layout = mtaLayout(config.dataDir);
  // maillab's MTA features Postfix has no built-in counterpart for in this adapter.
  const ignored = [
    ...(config.dkim?.length ? ['dkim (no milter)'] : []),
    ...(config.api ? ['api (the HTTP email API is maillab\'s)'] : []),
    ...(config.mtaSts ? ['mtaSts (Postfix needs an external policy server)'] : []),
    ...(config.dane ? ['dane (Postfix needs DNSSEC-validated answers; the lab DNS is not signed)'] : []),
    ...(config.authService ? ['authService (SMTP AUTH is checked against the sasldb of config.users)'] : []),
    ...(config.submissionFrom === 'own-domain' ? ['submissionFrom (Postfix does not check the From: header)'] : []),
    ...(config.ports.submissions ? ['ports.submissions (no implicit-TLS listener)'] : []),
  ];
  if (ignored.length) log(`Postfix MTA: not applied: ${ignored.join('; ')}`);
  const retry = postfixRetry(config.retry);
  const parser = new MtaMaillogParser({ hostname: config.hostname, backoff: { minimal: retry.minimalBackoff, maximal: retry.maximalBackoff }, ...(config.tlsPolicy ? { tlsPolicy: config.tlsPolicy } : {}) });
  const { stop } = await startInstance({
    name: config.name,
    layout,
    resolver: config.resolver.host,
    greet: [
      { host: config.address, port: config.ports.smtp },
      { host: config.address, port: config.ports.submission },
    ],
    log,
    configure: async () => {
      await writePostfixMtaConfig(config, options.user);
      // Messages a previous node process queued keep their Message-ID in the events of their later outcomes.
      for (const [queueId, messageId] of await queuedMessageIds(layout)) parser.seed(queueId, messageId);
    },
    onLine: emitFromMaillog((line) => parser.feed(line), (input) => events.emit(input as Parameters<typeof events.emit>[0]), log),
    timeouts: options,
  });
  log(`Postfix MTA ${config.address}:${config.ports.smtp} and :${config.ports.submission} ready (config ${layout.dir}, maillog ${layout.maillog})`);
  return {
    services: { smtp: { host: config.address, port: config.ports.smtp }, submission: { host: config.address, port: config.ports.submission } },
    rpc: queueOperations(layout, parser),
    stop,
  };
}

/**
 * The Message-IDs of the messages in the queue directories while no Postfix runs (before the start): each queue file's
 * header section read with `postcat -h`. The file name is the queue id.
 */
export async function queuedMessageIds(layout: MtaLayout): Promise<Map<string, string | undefined>> {
  const files: Array<{ name: string; path: string }> = [];
  for (const queue of ['maildrop', 'incoming', 'active', 'deferred', 'hold']) {
    const entries = await fs.readdir(path.join(layout.queueDirectory, queue), { recursive: true, withFileTypes: true }).catch(() => []);
    for (const f of entries) if (f.isFile()) files.push({ name: f.name, path: path.join(f.parentPath, f.name) });
  }
  // -c: postcat reads main.cf first (there may be no /etc/postfix/main.cf, and a fatal error costs Postfix's 1 s sleep).
  const ids = await Promise.all(files.map((f) => run(POSTCAT, ['-c', layout.dir, '-h', f.path]).then((r) => /^Message-ID:\s*(<[^>]*>)/im.exec(r.stdout)?.[1], () => undefined)));
  const out = new Map<string, string | undefined>();
  files.forEach((f, i) => out.set(f.name, ids[i]));
  return out;
}

/** The queue as `postqueue -j` shows it (as root, `-c` needs no alternate_config_directories). */
export async function postqueue(layout: MtaLayout): Promise<PostqueueEntry[]> {
  const { stdout } = await run(POSTQUEUE, ['-c', layout.dir, '-j']).catch((err: { stderr?: string; message: string }) => {
    throw new Error(`postqueue -c ${layout.dir} -j failed: ${err.stderr?.trim() || err.message}`);
  });
  return stdout
    .split('\n')
    .filter((l) => l.trim())
    .map((l) => JSON.parse(l) as PostqueueEntry);
}

/** One message of `postqueue -j`, if it is in the queue. */
async function entryOf(layout: MtaLayout, queueId: string): Promise<PostqueueEntry | undefined> {
  return (await postqueue(layout)).find((e) => e.queue_id === queueId);
}

/** Postfix's queues as the contract's states: incoming and maildrop are `incoming`; the others have their own. */
export function stateOf(queue: string): MessageState {
  if (queue === 'active' || queue === 'deferred' || queue === 'hold') return queue;
  return 'incoming';
}

/**
 * Runs `postsuper -c <dir> <flag> <queueId>` and answers how many messages it says it changed: postsuper prints
 * `Placed on hold: 1 message` (or `Released from hold`, `Deleted`) only when it changed some, and exits 0 either way.
 */
async function postsuper(layout: MtaLayout, flag: '-h' | '-H' | '-d', queueId: string): Promise<number> {
  const { stdout, stderr } = await run(POSTSUPER, ['-c', layout.dir, flag, queueId]).catch((err: { stderr?: string; message: string }) => {
    throw new Error(`postsuper -c ${layout.dir} ${flag} ${queueId} failed: ${err.stderr?.trim() || err.message}`);
  });
  return Number(/:\s*(\d+)\s+messages?/.exec(`${stderr}\n${stdout}`)?.[1] ?? 0);
}

/** A Postfix queue id as postsuper takes it (hex, or the long form's base-52 alphabet): never an option or a path. */
function checkedQueueId(operation: string, queueId: unknown): string {
  if (typeof queueId !== 'string' || !/^[0-9A-Za-z]+$/.test(queueId)) throw new Error(`${operation}: queueId (a Postfix queue id, as \`queue\` lists them) is required, got ${JSON.stringify(queueId)}`);
  return queueId;
}

function viewOf(entry: PostqueueEntry, parser: MtaMaillogParser): QueueEntryView {
  const state = stateOf(entry.queue_name);
  const attempts = parser.attemptsOf(entry.queue_id);
  const messageId = parser.messageIdOf(entry.queue_id);
  return {
    queueId: entry.queue_id,
    ...(messageId ? { messageId } : {}),
    from: entry.sender,
    state,
    arrival: entry.arrival_time * 1000,
    size: entry.message_size,
    attempts,
    // Unknown to the maillog (queued before this node process): a null sender is a bounce, anything else a submission.
    origin: { kind: parser.originOf(entry.queue_id) ?? (entry.sender === '' ? 'dsn' : 'submission') },
    recipients: entry.recipients.map((r) => {
      const rstate: RecipientState = r.delay_reason ? 'deferred' : 'pending';
      return { address: r.address, state: rstate, attempts, ...(r.delay_reason ? { lastError: r.delay_reason } : {}) };
    }),
  };
}

function queueOperations(layout: MtaLayout, parser: MtaMaillogParser): RpcTable<MtaContract> {
  return {
    ...smtpFaultsUnsupported('Postfix'),
    queue: async ({ state, all }) => {
      // Postfix forgets a message once it is delivered: `all` has nothing more to show.
      void all;
      const views = (await postqueue(layout)).map((e) => viewOf(e, parser));
      return state ? views.filter((v) => v.state === state) : views;
    },
    flush: async () => {
      const waiting = (await postqueue(layout)).length;
      await run(POSTQUEUE, ['-c', layout.dir, '-f']).catch((err: { stderr?: string; message: string }) => {
        throw new Error(`postqueue -c ${layout.dir} -f failed: ${err.stderr?.trim() || err.message}`);
      });
      return { flushed: waiting };
    },
    message: async ({ queueId }) => {
      if (typeof queueId !== 'string' || !queueId) throw new Error('message: queueId (a Postfix queue id) is required');
      const entry = await entryOf(layout, queueId);
      if (!entry) throw new Error(`message ${queueId}: not in Postfix's queue (postqueue -j of ${layout.dir}); Postfix keeps no record of delivered messages`);
      const view = viewOf(entry, parser);
      const headers = await run(POSTCAT, ['-c', layout.dir, '-h', '-q', queueId]).then(
        (r) => r.stdout,
        () => undefined,
      );
      const record: QueuedMessage = {
        queueId,
        ...(view.messageId ? { messageId: view.messageId } : {}),
        from: view.from,
        state: view.state,
        arrival: view.arrival,
        size: view.size,
        origin: view.origin,
        attempts: view.attempts,
        recipients: view.recipients.map((r) => ({
          address: r.address,
          state: r.state,
          attempts: r.attempts,
          ...(r.lastError ? { lastError: { description: r.lastError, hop: '', status: /\b([45]\.\d+\.\d+)\b/.exec(r.lastError)?.[1] ?? '4.0.0', at: Date.now() } } : {}),
        })),
      };
      return { ...view, record, ...(headers !== undefined ? { headers } : {}) };
    },
    hold: async (args) => {
      const queueId = checkedQueueId('hold', args.queueId);
      const held = await postsuper(layout, '-h', queueId);
      const entry = await entryOf(layout, queueId);
      if (held === 0 && entry?.queue_name !== 'hold') throw new Error(`hold ${queueId}: postsuper -h held nothing: ${entry ? `the message is in Postfix's ${entry.queue_name} queue` : "no such message in Postfix's queue (it may have been delivered: Postfix keeps no record of delivered messages)"}`);
      return viewOf(entry!, parser);
    },
    release: async (args) => {
      const queueId = checkedQueueId('release', args.queueId);
      const held = await entryOf(layout, queueId);
      if (held?.queue_name !== 'hold' || (await postsuper(layout, '-H', queueId)) === 0) {
        throw new Error(`release ${queueId}: ${held ? `the message is not on hold (it is in Postfix's ${held.queue_name} queue)` : "no such message in Postfix's queue"}`);
      }
      // postsuper -H moves it to the deferred queue; -i asks for its delivery now rather than at the next queue scan.
      await run(POSTQUEUE, ['-c', layout.dir, '-i', queueId]).catch((err: { stderr?: string; message: string }) => {
        throw new Error(`postqueue -c ${layout.dir} -i ${queueId} failed: ${err.stderr?.trim() || err.message}`);
      });
      const entry = await entryOf(layout, queueId);
      // Gone already (delivered at once): the view says what it was when released.
      return entry ? viewOf(entry, parser) : { ...viewOf(held, parser), state: 'deferred' };
    },
    delete: async (args) => {
      const queueId = checkedQueueId('delete', args.queueId);
      if ((await postsuper(layout, '-d', queueId)) === 0) throw new Error(`delete ${queueId}: postsuper -d deleted nothing: no such message in Postfix's queue (it may have been delivered: Postfix keeps no record of delivered messages)`);
      return { queueId, deleted: true as const };
    },
    'set-dkim': async () => {
      throw new PostfixDkimUnsupportedError('set-dkim');
    },
    dkim: async () => {
      throw new PostfixDkimUnsupportedError('dkim');
    },
  };
}
