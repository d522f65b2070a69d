// LMTP (RFC 2033): how the MX and the MTA hand messages to the mailbox server. After the data, LMTP replies
// once per accepted recipient, so each recipient's reply says whether *its* copy is durably stored: 250 only
// once the store's deliver() resolved (fsynced), 451 when the store failed for that recipient alone.
//
// Who may deliver: only the addresses in config.lmtpClients (the lab's MX and MTA) when the list is set. Any other
// client is refused at connect, before the greeting: `554 5.7.1 <address> is not allowed to deliver here`, then the
// connection is closed (RFC 5321 §3.1: 554 is the one refusal a server may give instead of its 220; a 5xx greeting
// tells a client not to retry there), with a `rejected` event of stage `connect`.
//
// What may be delivered: a message whose header section holds a bare CR or a bare LF is refused for every
// recipient (`554 5.6.0`, a `rejected` event of stage `DATA` per recipient): a later hop that turned the bare CR
// into a line break would store header fields (a Bcc:) or an end of the header section that this hop never saw.
//
// Where it is stored: `local+Folder@domain` of a known user goes to that user's folder `Folder` (address detail,
// like Dovecot's lmtp_save_to_detail_mailbox: the MX files a DMARC-quarantined message with `+Junk`), created when
// missing (`Junk` with the \Junk special-use, RFC 6154). A detail that is no valid mailbox name goes to INBOX, as
// Dovecot falls back; an unknown user is refused with 550 5.1.1 with or without a detail.
import type { SMTPServerAddress, SMTPServerDataStream, SMTPServerEnvelope, SMTPServerSession } from 'smtp-server';
import { messageIdOf } from '../shared/headers.js';
import { createSmtpServer, listen } from '../shared/smtp-server.js';
import type { MailboxService, ServiceOptions } from './service.js';
import { MailStoreError, type MailStore, type StoredMessage } from './store-api.js';
import { encodeFolderName, MAX_FOLDER_DIR_BYTES, normalizeName } from './maildir/names.js';
import { smtpReply } from '../shared/smtp-reply.js';
import type { SmtpFaults } from '../shared/smtp-faults.js';
import { HEADER_PROBLEM_CODE, HEADER_PROBLEM_STATUS, headerSectionProblem } from '../shared/message-guard.js';

export interface LmtpOptions extends ServiceOptions {
  /** Largest message accepted, in octets. */
  maxSize?: number;
  /** The node's SMTP fault rules (issue 15); absent: none. */
  faults?: SmtpFaults;
}

const DEFAULT_MAX_SIZE = 50 * 1024 * 1024;

interface Recipient {
  /** As the client wrote it in RCPT TO (used for Delivered-To). */
  address: string;
  /** The store's user. */
  user: string;
  /** The folder it goes to: INBOX, or the address detail's. */
  mailbox: string;
}

/** The separator of an address detail (`bob+Junk@…`), Dovecot's and Postfix's usual recipient_delimiter. */
const DETAIL_DELIMITER = '+';

/** The store's user and folder an LMTP recipient names, or undefined for no user of the store. */
function lmtpRecipient(store: Pick<MailStore, 'hasUser'>, address: string): { user: string; mailbox: string } | undefined {
  const lower = address.toLowerCase();
  if (store.hasUser(lower)) return { user: lower, mailbox: 'INBOX' };
  const at = address.lastIndexOf('@');
  const plus = address.indexOf(DETAIL_DELIMITER);
  if (at < 0 || plus < 0 || plus > at) return undefined;
  const user = (address.slice(0, plus) + address.slice(at)).toLowerCase();
  if (!store.hasUser(user)) return undefined;
  return { user, mailbox: folderOfDetail(address.slice(plus + 1, at)) };
}

/** The folder an address detail names (its case kept), or INBOX when it is no valid mailbox name. */
function folderOfDetail(detail: string): string {
  try {
    const name = normalizeName(detail);
    return Buffer.byteLength(encodeFolderName(name)) <= MAX_FOLDER_DIR_BYTES ? name : 'INBOX';
  } catch {
    return 'INBOX';
  }
}

export async function startLmtp(options: LmtpOptions): Promise<MailboxService> {
  const { store, ctx } = options;
  const { config, events } = ctx;
  const maxSize = options.maxSize ?? DEFAULT_MAX_SIZE;
  const allowed = config.lmtpClients ? new Set(config.lmtpClients.map(plainAddress)) : undefined;
  // One entry per successful RCPT TO of the transaction, duplicates included. smtp-server merges a repeated
  // recipient into one envelope entry, but RFC 2033 §4.2 wants one reply per successful RCPT command, so the
  // replies are built from this list, not from the envelope. Keyed by the envelope, which is new per transaction.
  const accepted = new WeakMap<SMTPServerEnvelope, Recipient[]>();
  const inFlight = new Set<Promise<unknown>>();
  // Fires when a session's connection closes. A client that went away (killed, cut off) will never read our
  // replies and will send the message again, so what is not yet stored is dropped rather than stored twice.
  const gone = new WeakMap<SMTPServerSession, AbortController>();
  const goneController = (session: SMTPServerSession) => {
    let controller = gone.get(session);
    if (!controller) gone.set(session, (controller = new AbortController()));
    return controller;
  };

  const server = createSmtpServer({
    lmtp: true,
    greetingDelayMs: config.greetingDelayMs,
    // SMTP fault rules (issue 15), applied by the server; a `reply` at end-of-data answers every recipient (see smtp-server.ts).
    ...(options.faults ? { faults: options.faults, onFault: (detail, messageId) => events.emit({ kind: 'fault', ...(messageId ? { messageId } : {}), detail }) } : {}),
    // The hop as the MTA names its LMTP hops: `mta.sender.test -> LMTP 127.0.0.3:24`.
    faultHop: (session) => `${session.hostNameAppearsAs || `[${plainAddress(session.remoteAddress)}]`} -> LMTP ${session.localAddress}:${session.localPort}`,
    name: config.hostname,
    banner: 'maillab LMTP ready',
    authOptional: true,
    disabledCommands: ['AUTH', 'STARTTLS'],
    hideSTARTTLS: true,
    // Advertise ENHANCEDSTATUSCODES and let smtp-server add the codes (550 5.1.1, 451 4.3.0, 250 2.x.x).
    hideENHANCEDSTATUSCODES: false,
    size: maxSize,
    logger: false,
    onConnect(session: SMTPServerSession, callback: (err?: Error | null) => void) {
      const client = plainAddress(session.remoteAddress);
      if (!allowed || allowed.has(client)) return callback();
      const text = `5.7.1 <${client}> is not allowed to deliver here`;
      events.emit({ kind: 'rejected', detail: { stage: 'connect', reply: `554 ${text}`, client, from: '' } });
      // smtp-server sends it in place of the greeting (without adding a status code) and closes the connection.
      callback(smtpReply(554, text));
    },
    onClose(session: SMTPServerSession) {
      goneController(session).abort();
    },
    onRcptTo(address: SMTPServerAddress, session: SMTPServerSession, callback: (err?: Error | null) => void) {
      const target = lmtpRecipient(store, address.address);
      if (!target) {
        const text = `<${address.address}>: no such user here`;
        events.emit({
          kind: 'rejected',
          detail: { stage: 'RCPT TO', rcpt: address.address, reply: `550 5.1.1 ${text}`, client: session.remoteAddress, from: session.envelope.mailFrom ? session.envelope.mailFrom.address : '' },
        });
        return callback(smtpReply(550, text));
      }
      let list = accepted.get(session.envelope);
      if (!list) accepted.set(session.envelope, (list = []));
      list.push({ address: address.address, ...target });
      callback();
    },
    onData(stream: SMTPServerDataStream, session: SMTPServerSession, callback: (err?: Error | null, message?: Array<string | Error>) => void) {
      const work = receive(stream, session).then(
        (replies) => callback(null, replies),
        // Only a broken data stream gets here; the same temporary reply for everyone.
        (err: Error) => callback(null, (accepted.get(session.envelope) ?? []).map(() => smtpReply(451, `Temporary failure reading the message: ${err.message}`))),
      );
      inFlight.add(work);
      void work.finally(() => inFlight.delete(work));
    },
  });

  async function receive(stream: SMTPServerDataStream, session: SMTPServerSession): Promise<Array<string | Error>> {
    const recipients = accepted.get(session.envelope) ?? [];
    const chunks: Buffer[] = [];
    for await (const chunk of stream) if (!stream.sizeExceeded) chunks.push(chunk as Buffer);
    if (stream.sizeExceeded) return recipients.map(() => smtpReply(552, `Message exceeds the size limit of ${maxSize} octets`));

    const body = Buffer.concat(chunks);
    const from = session.envelope.mailFrom ? session.envelope.mailFrom.address : '';
    const problem = headerSectionProblem(body);
    if (problem !== undefined) {
      const text = `Message refused: ${problem}`;
      for (const rcpt of recipients) {
        events.emit({ kind: 'rejected', detail: { stage: 'DATA', rcpt: rcpt.address, reply: `${HEADER_PROBLEM_CODE} ${HEADER_PROBLEM_STATUS} ${text}`, client: session.remoteAddress, from } });
      }
      // smtp-server adds 5.6.0 (RFC 3463: media error) to a 554 after DATA.
      return recipients.map(() => smtpReply(HEADER_PROBLEM_CODE, text));
    }
    const messageId = messageIdOf(body);
    // Each user's folder once, even when named twice; the replies of the duplicates repeat the first one's.
    const outcomes = new Map<string, Promise<string | Error>>();
    const key = (rcpt: Recipient) => `${rcpt.user}\0${rcpt.mailbox}`;
    for (const rcpt of recipients) {
      if (outcomes.has(key(rcpt))) continue;
      outcomes.set(key(rcpt), deliverOne(rcpt, body, from, messageId, goneController(session).signal));
    }
    return Promise.all(recipients.map((rcpt) => outcomes.get(key(rcpt))!));
  }

  async function deliverOne(rcpt: Recipient, body: Buffer, from: string, messageId: string | undefined, signal: AbortSignal): Promise<string | Error> {
    // What a delivery agent adds (RFC 5321 §4.4 Return-Path; Delivered-To as Dovecot and Postfix write it).
    const trace = `Return-Path: <${from}>\r\nDelivered-To: ${rcpt.address}\r\n`;
    try {
      const data = Buffer.concat([Buffer.from(trace, 'utf8'), body]);
      const stored = rcpt.mailbox === 'INBOX' ? await store.deliver(rcpt.user, data, { signal }) : await deliverToFolder(rcpt, data, signal);
      events.emit({ kind: 'stored', messageId, queueId: stored.id, detail: { user: rcpt.user, mailbox: rcpt.mailbox, uid: stored.uid, size: stored.size, from } });
      return `<${rcpt.address}> saved as ${stored.id}`;
    } catch (err) {
      const why = err instanceof Error ? err.message : String(err);
      if (err instanceof MailStoreError && err.code === 'ABORTED') {
        events.emit({ kind: 'error', messageId, detail: { stage: 'store', user: rcpt.user, error: why } });
        return smtpReply(451, `<${rcpt.address}> not stored: ${why}`);
      }
      ctx.log(`LMTP: storing for ${rcpt.user} failed: ${why}`);
      events.emit({ kind: 'error', messageId, detail: { stage: 'store', user: rcpt.user, error: why } });
      return smtpReply(451, `<${rcpt.address}> temporary failure storing the message, try again later`);
    }
  }

  /**
   * Into a folder other than INBOX: created first when missing. The store's deliver() knows INBOX only, so this is
   * an append (durable the same way: written and synced in tmp/, then linked); the client's going away is checked
   * just before it, the one point left to drop the message rather than store a copy the client will resend.
   */
  async function deliverToFolder(rcpt: Recipient, data: Buffer, signal: AbortSignal): Promise<StoredMessage> {
    try {
      await store.createMailbox(rcpt.user, rcpt.mailbox, rcpt.mailbox === 'Junk' ? '\\Junk' : undefined);
    } catch (err) {
      if (!(err instanceof MailStoreError && err.code === 'ALREADYEXISTS')) throw err;
    }
    if (signal.aborted) throw new MailStoreError('ABORTED', `delivery to ${rcpt.user}'s ${rcpt.mailbox} abandoned before it was stored: the client went away`);
    return store.append(rcpt.user, rcpt.mailbox, data);
  }

  // Errors of single connections (resets...) are the connection's business, not the server's.
  server.on('error', (err: Error) => ctx.log(`LMTP: ${err.message}`));
  await listen(server, options.host, options.port, 'lmtp');
  const address = server.server.address();
  const port = typeof address === 'object' && address ? address.port : options.port;

  return {
    endpoint: { host: options.host, port },
    async close() {
      const closed = new Promise<void>((resolve) => server.close(() => resolve()));
      // Transactions whose data is in answer first: a message the client sent is stored and acknowledged.
      while (inFlight.size) await Promise.allSettled([...inFlight]);
      // Then the idle sessions (a client's pooled connection) are told and closed rather than waited for.
      for (const connection of (server as unknown as { connections: Set<{ send(code: number, text: string): void; close(): void }> }).connections) {
        connection.send(421, `${config.hostname} shutting down`);
        connection.close();
      }
      await closed;
    },
  };
}

/** An IPv4 address as the allow-list writes it, also when the socket reports it IPv4-mapped (`::ffff:a.b.c.d`). */
function plainAddress(address: string): string {
  return address.startsWith('::ffff:') && address.includes('.') ? address.slice(7) : address;
}
