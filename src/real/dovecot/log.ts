// Dovecot's log as the mailbox role's events. Dovecot tells nobody what it does except its log, so the adapter
// tails the log file (config.ts sets log_path and the formats) and turns the lines it knows into the contract's
// events: LMTP deliveries → `stored`, logins → `session`, failed password checks → `auth-failed`, expunges over IMAP
// and POP3 → `deleted`, messages a POP3 session retrieved → `retrieved`, LMTP recipients Dovecot could not serve →
// `error`. The contract's details have no field for
// the source line, so every event's line goes to the node's log (stderr) with the event's kind and sequence number.
import { promises as fs, statSync, watch, type FSWatcher } from 'node:fs';
import { StringDecoder } from 'node:string_decoder';
import type { EventLog } from '../../shared/events.js';
import type { MailboxEvents } from '../../mailbox/api.js';
import type { TlsInfo } from '../../shared/tls-session.js';

/** One log line split into Dovecot's prefix parts: `imap(bob@x)<pid><session>: Info: text`. */
export interface DovecotLine {
  /** `lmtp`, `imap`, `pop3`, `imap-login`, `pop3-login`, `auth`, `doveadm`, `master`... */
  service: string;
  /** The parenthesised part: a user, a pid, or absent. */
  user?: string;
  pid?: number;
  /** The session id, with LMTP's `:R<n>` recipient suffix when there is one. */
  session?: string;
  level: 'Info' | 'Warning' | 'Error' | 'Fatal' | 'Panic' | 'Debug';
  text: string;
}

// The timestamp (log_timestamp, the user's to choose) is skipped: the prefix starts at the service name.
const PREFIX = /(?:^|\s)([a-z][a-z0-9-]*)(?:\(([^)]*)\))?(?:<(\d+)>)?(?:<([^>]*)>)?: (Info|Warning|Error|Fatal|Panic|Debug): (.*)$/;

export function parseDovecotLine(line: string): DovecotLine | undefined {
  const m = PREFIX.exec(line);
  if (!m) return undefined;
  const [, service, paren, pid, session, level, text] = m;
  const out: DovecotLine = { service: service!, level: level as DovecotLine['level'], text: text! };
  // `lmtp(31426)`: a pid in the user slot (no user yet); `imap(bob@x)<31430>`: the user, then the pid.
  if (paren !== undefined) {
    if (/^\d+$/.test(paren)) out.pid = Number(paren);
    else out.user = paren;
  }
  if (pid !== undefined) out.pid = Number(pid);
  if (session !== undefined) out.session = session;
  return out;
}

/** `key=value, key=value` of mail_log (values may hold spaces; `from` is last, as config.ts orders the fields). */
export function parseMailLog(text: string): { event: string; box: string; uid: number; msgid?: string; size?: number; vsize?: number; from?: string } | undefined {
  const m = /^(save|delete|expunge|copy|flag_change): box=(.*?), uid=(\d+)(?:, msgid=(.*?))?(?:, size=(\d+))?(?:, vsize=(\d+))?(?:, from=(.*))?$/.exec(text);
  if (!m) return undefined;
  return {
    event: m[1]!,
    box: m[2]!,
    uid: Number(m[3]),
    ...(m[4] !== undefined ? { msgid: m[4] } : {}),
    ...(m[5] !== undefined ? { size: Number(m[5]) } : {}),
    ...(m[6] !== undefined ? { vsize: Number(m[6]) } : {}),
    ...(m[7] !== undefined ? { from: m[7] } : {}),
  };
}

/** `%k` of login_log_format_elements: `TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256/256 bits)`. */
export function parseTlsSecurity(k: string | undefined): TlsInfo | null {
  if (!k) return null;
  const m = /^(\S+) with cipher (\S+)/.exec(k);
  return m ? { version: m[1]!, cipher: m[2]! } : null;
}

/** The fields of a login process's line: `user=<u>, method=PLAIN, rip=…, …, session=<…>, tls=<…>`. */
export function loginFields(text: string): Record<string, string> {
  const fields: Record<string, string> = {};
  for (const m of text.matchAll(/(?:^|[\s,(])([a-z]+)=(<[^>]*>|[^,\s)]*)/g)) {
    const v = m[2]!;
    fields[m[1]!] = v.startsWith('<') && v.endsWith('>') ? v.slice(1, -1) : v;
  }
  return fields;
}

/** A Message-ID as the events carry it: with its angle brackets, or none. */
function messageIdOf(msgid: string | undefined): string | undefined {
  return msgid && /^<[^<>\s]+>$/.test(msgid) ? msgid : undefined;
}

/** What a session id refers to: mail_log save lines wait here for their LMTP delivery line. */
interface Saved {
  uid: number;
  box: string;
}

/** What mail_log said of a message (save, expunge, flag_change lines): what a `retrieved` event names. */
interface MessageFacts {
  msgid?: string;
  vsize?: number;
}

/** A POP3 session's RETR and TOP counts, from its last line (pop3_logout_format as config.ts pins it). */
export function pop3Counts(text: string): { top: number; retr: number } | undefined {
  const m = /\btop=(\d+)\/\d+, retr=(\d+)\/\d+/.exec(text);
  return m ? { top: Number(m[1]), retr: Number(m[2]) } : undefined;
}

/**
 * Turns Dovecot's log lines into the mailbox contract's events. Stateful: an LMTP delivery is two lines (mail_log's
 * `save:` with the UID, then the delivery line with the envelope sender), and a failed login is an auth line (the
 * login name, at once) completed by the login process's disconnect line (the protocol and method).
 */
export class DovecotEventTranslator {
  private readonly saved = new Map<string, Saved>();
  private readonly failedLogins = new Map<string, string[]>();
  /** By `user\0box\0uid`. Kept for the node's life: a lab holds few messages. */
  private readonly facts = new Map<string, MessageFacts>();
  /** The messages each POP3 session opened (`log_debug = event=mail_opened`), by session. */
  private readonly opened = new Map<string, Map<string, { box: string; uid: number }>>();

  constructor(
    private readonly events: EventLog<MailboxEvents>,
    private readonly log: (message: string) => void,
  ) {}

  private emit<K extends keyof MailboxEvents & string>(line: string, kind: K, detail: MailboxEvents[K], extra: { messageId?: string | undefined } = {}): void {
    const event = this.events.emit({ kind, detail, ...extra });
    this.log(`dovecot → ${kind} #${event.seq}: ${line}`);
  }

  line(raw: string): void {
    const l = parseDovecotLine(raw);
    if (!l) return;
    const key = `${l.pid ?? ''}<${l.session ?? ''}>`;

    const ml = l.user !== undefined ? parseMailLog(l.text) : undefined;
    if (ml && l.user !== undefined) this.facts.set(`${l.user.toLowerCase()}\0${ml.box}\0${ml.uid}`, { ...(ml.msgid !== undefined ? { msgid: ml.msgid } : {}), ...(ml.vsize !== undefined ? { vsize: ml.vsize } : {}) });

    if (l.service === 'lmtp' && l.user !== undefined) {
      if (ml?.event === 'save') {
        this.saved.set(key, { uid: ml.uid, box: ml.box });
        return;
      }
      // deliver_log_format: `msgid=<…> size=N from=<…>: saved mail to BOX`
      const d = /^msgid=(.*?) size=(\d+) from=<(.*?)>: saved mail to (.*)$/.exec(l.text);
      if (d) {
        const save = this.saved.get(key);
        this.saved.delete(key);
        const mailbox = d[4]!.replace(/^'(.*)'$/, '$1');
        this.emit(raw, 'stored', { user: l.user.toLowerCase(), mailbox, uid: save?.uid ?? 0, size: Number(d[2]), from: d[3]! }, { messageId: messageIdOf(d[1]) });
        return;
      }
      return;
    }
    if (l.service === 'lmtp' && l.level === 'Error') {
      // `lmtp-server: conn 127.0.0.1:42808 [1]: rcpt bob@x: Failed to …`: the recipient got 451 (or 550).
      const e = /rcpt (\S+): (.*)$/.exec(l.text);
      if (e) this.emit(raw, 'error', { stage: 'rcpt', user: e[1]!.toLowerCase(), error: e[2]! });
      return;
    }
    if ((l.service === 'imap' || l.service === 'pop3') && l.user !== undefined) {
      if (ml?.event === 'expunge') {
        this.emit(raw, 'deleted', { user: l.user.toLowerCase(), protocol: l.service, uid: ml.uid, mailbox: ml.box }, { messageId: messageIdOf(ml.msgid) });
      }
      if (l.service === 'pop3') this.pop3(raw, l, key);
      return;
    }
    if (l.service === 'auth' && l.level === 'Info') {
      // auth_verbose: `passwd-file(bob@x,127.0.0.1,<session>): Password mismatch` (or `unknown user`).
      const a = /^[\w-]+\(([^,]*),([^,]*),<([^>]*)>\): (Password mismatch|unknown user)/.exec(l.text);
      if (a) {
        const list = this.failedLogins.get(a[3]!) ?? [];
        list.push(a[1]!);
        this.failedLogins.set(a[3]!, list);
      }
      return;
    }
    if (l.service === 'imap-login' || l.service === 'pop3-login') {
      const protocol = l.service === 'imap-login' ? 'imap' : 'pop3';
      const f = loginFields(l.text);
      if (l.text.startsWith('Login: ')) {
        this.emit(raw, 'session', { user: (f.user ?? '').toLowerCase(), protocol, method: f.method ?? '', client: f.rip ?? '', tls: parseTlsSecurity(f.tls) });
        return;
      }
      // `Disconnected: … (auth failed, 2 attempts in 4 secs): user=<…>, method=PLAIN, …, session=<…>`: one event per
      // password check the auth process refused on that connection; a login refused before any check (plaintext
      // before STARTTLS: no method) is no auth failure, as on the lab's own server.
      const failed = /\(auth failed, (\d+) attempts?/.exec(l.text);
      if (failed && f.method) {
        const session = f.session ?? '';
        const logins = this.failedLogins.get(session) ?? Array.from({ length: Number(failed[1]) }, () => f.user ?? '');
        this.failedLogins.delete(session);
        for (const login of logins) this.emit(raw, 'auth-failed', { protocol, login, method: f.method, client: f.rip ?? '' });
      }
    }
  }

  /**
   * POP3 `retrieved`: Dovecot logs no line per RETR, but with `log_debug = event=mail_opened` it logs each message a
   * session opens (`Mailbox INBOX: UID 3: Opened mail because: access`: RETR or TOP, the sizes come from the index),
   * and the session's last line counts its RETRs and TOPs. When the session used no TOP and opened as many messages as
   * it RETRieved, the opened ones are the retrieved ones: one event each, when the session ends (after its `deleted`
   * events). Otherwise the log cannot tell which were retrieved, and the node log says so.
   */
  private pop3(raw: string, l: DovecotLine, key: string): void {
    const open = /^Mailbox (.+): UID (\d+): Opened mail because: /.exec(l.text);
    if (open && l.level === 'Debug') {
      const session = this.opened.get(key) ?? new Map<string, { box: string; uid: number }>();
      session.set(`${open[1]}\0${open[2]}`, { box: open[1]!, uid: Number(open[2]) });
      this.opened.set(key, session);
      return;
    }
    const counts = l.text.startsWith('Disconnected') ? pop3Counts(l.text) : undefined;
    if (!counts) return;
    const opened = [...(this.opened.get(key)?.values() ?? [])];
    this.opened.delete(key);
    if (counts.retr === 0) return;
    if (counts.top > 0 || opened.length !== counts.retr) {
      this.log(`dovecot: no retrieved events for this POP3 session: it opened ${opened.length} message(s) for ${counts.retr} RETR and ${counts.top} TOP, so the log cannot tell which were retrieved: ${raw}`);
      return;
    }
    const user = l.user!.toLowerCase();
    for (const { box, uid } of opened) {
      const facts = this.facts.get(`${user}\0${box}\0${uid}`);
      if (facts?.vsize === undefined) {
        this.log(`dovecot: no retrieved event for ${user} ${box} UID ${uid}: its size and Message-ID were not in this node's log (delivered before it started): ${raw}`);
        continue;
      }
      this.emit(raw, 'retrieved', { user, protocol: 'pop3', uid, size: facts.vsize, mailbox: box }, { messageId: messageIdOf(facts.msgid) });
    }
  }
}

/**
 * Follows a file as it grows (it may not exist yet) and hands each complete line to `onLine`. fs.watch wakes it at
 * once; a slow poll backs it up where watch events are lost (some filesystems, overlayfs). `drain()` reads what is
 * there now: the adapter calls it before it answers a stop, so no line written before is lost.
 */
export class LogTail {
  private offset = 0;
  private partial = '';
  // A UTF-8 character split between two reads is decoded once whole.
  private readonly decoder = new StringDecoder('utf8');
  private watcher: FSWatcher | undefined;
  private timer: NodeJS.Timeout | undefined;
  private reading: Promise<void> = Promise.resolve();

  constructor(
    private readonly file: string,
    private readonly onLine: (line: string) => void,
    private readonly pollMs = 200,
  ) {}

  /**
   * Starts following from the file's current end: a node restarted on the same data directory must not emit again
   * the events of its last run.
   */
  start(): void {
    try {
      this.offset = statSync(this.file).size;
    } catch {
      this.offset = 0; // not there yet: everything it will hold is new
    }
    this.timer = setInterval(() => void this.drain(), this.pollMs);
    this.timer.unref();
    this.tryWatch();
  }

  private tryWatch(): void {
    if (this.watcher) return;
    try {
      this.watcher = watch(this.file, () => void this.drain());
      this.watcher.on('error', () => {
        this.watcher?.close();
        this.watcher = undefined;
      });
    } catch {
      // Not there yet: the poll reads it once it is, and watches it from then on.
    }
  }

  /** Reads whatever was appended since the last read; calls are serialised. */
  drain(): Promise<void> {
    this.reading = this.reading.then(() => this.readMore()).catch(() => undefined);
    return this.reading;
  }

  private async readMore(): Promise<void> {
    let handle: fs.FileHandle;
    try {
      handle = await fs.open(this.file, 'r');
    } catch {
      return;
    }
    try {
      this.tryWatch();
      const { size } = await handle.stat();
      if (size < this.offset) this.offset = 0; // truncated (logrotate's copytruncate): start again
      while (this.offset < size) {
        const buf = Buffer.alloc(Math.min(size - this.offset, 1 << 20));
        const { bytesRead } = await handle.read(buf, 0, buf.length, this.offset);
        if (bytesRead === 0) break;
        this.offset += bytesRead;
        this.partial += this.decoder.write(buf.subarray(0, bytesRead));
        const lines = this.partial.split('\n');
        this.partial = lines.pop() ?? '';
        for (const line of lines) if (line) this.onLine(line);
      }
    } finally {
      await handle.close();
    }
  }

  async stop(): Promise<void> {
    await this.drain();
    if (this.timer) clearInterval(this.timer);
    this.watcher?.close();
  }
}
