// The mailbox contract's control operations, answered by Dovecot itself through doveadm (`-f json`): what a
// scenario reads is what Dovecot has, not what the adapter believes it has.
import type { MailboxInfo, StoredMessage } from '../../mailbox/api.js';
import { runTool } from './config.js';

const DOVEADM_TIMEOUT_MS = 15_000;

export class Doveadm {
  constructor(private readonly conf: string) {}

  /** Runs `doveadm -c conf -f json <args>` and parses its output; a failure exit throws with doveadm's own words. */
  async json<T>(args: string[], input?: Buffer): Promise<T> {
    const r = await runTool('doveadm', ['-c', this.conf, '-f', 'json', ...args], { timeoutMs: DOVEADM_TIMEOUT_MS, ...(input ? { input } : {}) });
    if (r.code !== 0) throw new Error(`doveadm ${args.join(' ')} failed (exit ${r.code}): ${r.stderr.trim() || r.stdout.trim()}`);
    const out = r.stdout.trim();
    return (out ? JSON.parse(out) : []) as T;
  }

  async run(args: string[], input?: Buffer): Promise<string> {
    const r = await runTool('doveadm', ['-c', this.conf, ...args], { timeoutMs: DOVEADM_TIMEOUT_MS, ...(input ? { input } : {}) });
    if (r.code !== 0) throw new Error(`doveadm ${args.join(' ')} failed (exit ${r.code}): ${r.stderr.trim() || r.stdout.trim()}`);
    return r.stdout;
  }

  async mailboxes(user: string): Promise<MailboxInfo[]> {
    const status = await this.json<Array<Record<string, string>>>(['mailbox', 'status', '-u', user, 'messages unseen uidnext uidvalidity highestmodseq', '*']);
    const subscribed = new Set((await this.json<Array<{ mailbox: string }>>(['mailbox', 'list', '-u', user, '-s'])).map((m) => m.mailbox));
    return status.map((s) => ({
      name: s.mailbox!,
      uidValidity: Number(s.uidvalidity),
      uidNext: Number(s.uidnext),
      highestModseq: Number(s.highestmodseq),
      subscribed: subscribed.has(s.mailbox!),
      exists: Number(s.messages),
      unseen: Number(s.unseen),
    }));
  }

  async messages(user: string, mailbox: string): Promise<StoredMessage[]> {
    const rows = await this.json<Array<Record<string, string>>>(['fetch', '-u', user, 'uid guid flags date.received.unixtime size.virtual modseq', 'mailbox', mailbox, 'all']);
    return rows.map(toStoredMessage).sort((a, b) => a.uid - b.uid);
  }

  /**
   * A message as IMAP serves it: Dovecot's Maildir holds LF line ends (and doveadm gives text as a JSON string), so
   * each bare LF becomes CRLF, which is what `size` (size.virtual) counts. A body that is not UTF-8 is not returned
   * byte for byte: doveadm's JSON has already replaced what it could not encode.
   */
  async read(user: string, mailbox: string, uid: number): Promise<Buffer> {
    const rows = await this.json<Array<{ text: string }>>(['fetch', '-u', user, 'text', 'mailbox', mailbox, 'uid', String(uid)]);
    const row = rows[0];
    if (!row) throw new Error(`no message with uid ${uid} in ${mailbox} of ${user}`);
    return Buffer.from(row.text.replace(/\r?\n/g, '\r\n'), 'utf8');
  }

  /**
   * Stores a message in INBOX without LMTP (`doveadm save`), then finds it: doveadm save prints no UID, so it is the
   * newest message whose GUID was not there before (a delivery at the same moment could only add others).
   */
  async deliver(user: string, data: Buffer): Promise<StoredMessage> {
    const before = new Set((await this.messages(user, 'INBOX')).map((m) => m.id));
    await this.run(['save', '-u', user, '-m', 'INBOX'], data);
    const added = (await this.messages(user, 'INBOX')).filter((m) => !before.has(m.id));
    const stored = added.at(-1);
    if (!stored) throw new Error(`doveadm save for ${user} succeeded but no new message is in INBOX`);
    return stored;
  }
}

/** One `doveadm fetch` row as the contract's StoredMessage. \Recent is per session in IMAP, not a stored flag. */
export function toStoredMessage(row: Record<string, string>): StoredMessage {
  return {
    uid: Number(row.uid),
    id: row.guid ?? '',
    size: Number(row['size.virtual']),
    flags: (row.flags ?? '').split(' ').filter((f) => f && f !== '\\Recent'),
    internalDate: Number(row['date.received.unixtime']) * 1000,
    modseq: Number(row.modseq),
  };
}
