// One IMAP connection: input framing, the command queue (pipelined commands run strictly in order), state
// (not authenticated / authenticated / selected), authentication, and the announcement of other sessions'
// changes to the selected mailbox at the points RFC 3501 §7.4.1 and §5.5 allow.
import type { Socket } from 'node:net';
import type { SecureContext } from 'node:tls';
import { startServerTls, tlsInfo } from '../../shared/tls-session.js';
import type { EventLog } from '../../shared/events.js';
import { MailStoreError, type MailboxInfo, type MailStore, type StoreChange } from '../store-api.js';
import type { Command, CommandState } from './command.js';
import { decodeMailboxName, formatUidList, quoteText, encodeMailboxName, quoteUtf8Text, utf8MailboxName } from './encode.js';
import { header, type MimeNode } from './mime.js';
import { MailboxView, subtractUids, uidRanges, type ViewEntry } from './mailbox-view.js';
import { ImapError, ParseError } from './errors.js';
import { CommandFramer, Reader, STAR, parseHead, type FramerItem, type SeqSet, seqSetExceeds, resolveSeqSet } from './parser.js';
import type { MessageCache, RecentRegistry } from './server-state.js';
import type { MailboxEvents } from '../api.js';
import { retrySeconds, type LoginGuard, type LoginResult } from '../login-guard.js';

/** A login accepted: the user, and the app password used if one. */
export interface LoginGrant {
  user: string;
  appPassword?: string;
}

export interface ImapLimits {
  /** Longest command line (text between literals). */
  maxLineLength: number;
  /** Largest APPEND literal. */
  maxAppendSize: number;
  /** Most literal octets in any other command. */
  maxLiteralSize: number;
  /** Autologout after this much client silence (RFC 3501 §5.4: at least 30 minutes). */
  idleTimeoutMs: number;
}

export interface ServerContext {
  store: MailStore;
  hostname: string;
  events?: EventLog<MailboxEvents>;
  log(message: string): void;
  limits: ImapLimits;
  recent: RecentRegistry;
  cache: MessageCache;
  /** Password checks under the node's login throttle (shared with POP3). */
  guard: LoginGuard;
  /** The commands by name (commands.ts), handed in so that the session and the handlers need not import each other. */
  commands: Readonly<Record<string, Command<ImapSession>>>;
  /**
   * TLS of the node, when it has it: STARTTLS offered on plaintext connections (RFC 3501 §6.2.1), and, unless
   * `allowPlaintextAuth`, LOGINDISABLED and no AUTH= before it (RFC 3501 §7.2.1, RFC 8314 §4.2).
   */
  tls?: { context: SecureContext; allowPlaintextAuth: boolean };
}

/** Commands with message sequence numbers: no EXPUNGE while they run, nor while one is queued behind. */
const SEQUENCE_COMMANDS = new Set(['FETCH', 'STORE', 'SEARCH', 'SORT', 'THREAD', 'COPY', 'MOVE']);
/** Commands during which EXPUNGE responses are forbidden (RFC 3501 §7.4.1; SORT and THREAD answer sequence numbers as SEARCH does, RFC 5256; COPY for the same reason). */
const NO_EXPUNGE_DURING = new Set(['FETCH', 'STORE', 'SEARCH', 'SORT', 'THREAD', 'COPY']);

/** Queued commands beyond which the socket stops being read (back-pressure against flooding). */
const MAX_QUEUED = 64;
/** The same before authentication, when each queued command may hold a line and a literal of up to 64 KiB. */
const MAX_QUEUED_NOTAUTH = 4;

export class ImapSession {
  state: CommandState = 'notauth';
  user: string | undefined;
  view: MailboxView | undefined;
  /** CONDSTORE enabled (ENABLE, SELECT (CONDSTORE), or a command using it): MODSEQ in unsolicited FETCH. */
  condstore = false;
  /** QRESYNC enabled (ENABLE QRESYNC; implies CONDSTORE): VANISHED instead of EXPUNGE. */
  qresync = false;
  /**
   * UTF8=ACCEPT enabled (RFC 6855): mailbox names in and out as UTF-8 instead of modified UTF-7, UTF-8 in quoted
   * strings, APPEND's UTF8 data item, SEARCH without CHARSET.
   */
  utf8 = false;
  /** Set by LOGOUT (and shutdown): the connection ends after the tagged response. */
  loggingOut = false;
  /** BYE text to send before that end (shutdown). */
  private pendingBye: string | undefined;
  idling = false;
  /** A BYE has been sent: nothing untagged follows it. */
  private byeSent = false;
  /** The client's address, as the other services report it in events. */
  readonly client: string;
  private readonly remote: string;

  private framer: CommandFramer;
  /** STARTTLS has been answered OK: the TLS handshake starts right after the tagged response. */
  tlsPending = false;
  private readonly queue: FramerItem[] = [];
  private running = false;
  private waiter: ((item: FramerItem | undefined) => void) | undefined;
  private timer: NodeJS.Timeout | undefined;
  private closed = false;
  private cleanedUp = false;
  private paused = false;
  /** A fatal framing error: the socket is never read again. */
  private readingStopped = false;
  /** The command being executed. */
  private current: string | undefined;
  /** Logins refused on this connection (wrong password or throttled). */
  private refusedLogins = 0;
  /** Forgets this session in the app password's session list (logged in with one). */
  private untrack: (() => void) | undefined;

  constructor(
    readonly ctx: ServerContext,
    private socket: Socket,
    private readonly onClose: () => void,
  ) {
    this.client = socket.remoteAddress ?? '';
    this.remote = `${socket.remoteAddress}:${socket.remotePort}`;
    this.framer = this.newFramer();
  }

  private newFramer(): CommandFramer {
    const limits = this.ctx.limits;
    return new CommandFramer({
      maxLineLength: limits.maxLineLength,
      maxDiscard: limits.maxAppendSize * 2,
      // Before authentication nothing over a limit is read, not even to skip it: the connection ends instead.
      strict: () => this.state === 'notauth',
      literalLimit: (head) => this.literalLimit(head.name),
      continueLiteral: () => this.send('+ Ready for literal data'),
      onItem: (item) => this.enqueue(item),
    });
  }

  start(): void {
    this.socket.setNoDelay(true);
    this.resetTimer();
    this.attach(this.socket);
    this.send(`* OK [CAPABILITY ${this.capabilities()}] ${this.ctx.hostname} IMAP4rev1 maillab ready`);
  }

  /** Whether the connection is encrypted (implicit TLS, or after STARTTLS). */
  get secure(): boolean {
    return tlsInfo(this.socket) !== null;
  }

  /** Passwords are accepted: over TLS, on a node without TLS, or where the lab allows plaintext logins. */
  get loginAllowed(): boolean {
    return !this.ctx.tls || this.ctx.tls.allowPlaintextAuth || this.secure;
  }

  /**
   * After STARTTLS's tagged OK (RFC 3501 §6.2.1): everything the client sent after the command in plaintext, framed
   * or not, is dropped (the STARTTLS command injection, CVE-2011-0411), the socket is read no more in plaintext,
   * and the TLS handshake starts on it. The session goes on over the TLS socket; a failed handshake ends it.
   */
  private beginTls(): void {
    this.tlsPending = false;
    const raw = this.socket;
    raw.removeAllListeners('data');
    raw.removeAllListeners('drain');
    this.queue.length = 0;
    this.framer = this.newFramer();
    if (this.paused) this.paused = false;
    startServerTls(raw, this.ctx.tls!.context).then(
      (secure) => {
        if (this.closed) return secure.destroy();
        this.socket = secure;
        this.attach(secure);
        this.resetTimer();
      },
      (err: Error) => {
        this.ctx.log(`imap ${this.remote}: STARTTLS failed: ${err.message}`);
        this.cleanup();
      },
    );
  }

  private attach(socket: Socket): void {
    socket.on('data', (chunk: Buffer) => {
      this.resetTimer();
      try {
        this.framer.push(chunk);
      } catch (err) {
        this.fail(err);
      }
    });
    socket.on('error', (err) => this.ctx.log(`imap ${this.remote}: ${err.message}`));
    socket.on('close', () => this.cleanup());
    socket.on('drain', () => this.drainWaiters.splice(0).forEach((f) => f()));
  }

  capabilities(): string {
    const caps = ['IMAP4rev1', 'LITERAL+', 'SASL-IR', 'ID', 'ENABLE', 'IDLE', 'NAMESPACE', 'UIDPLUS', 'MOVE', 'UNSELECT', 'CHILDREN', 'LIST-EXTENDED', 'LIST-STATUS', 'SPECIAL-USE', 'CREATE-SPECIAL-USE', 'MULTIAPPEND', 'BINARY', 'CONDSTORE', 'QRESYNC', 'ESEARCH', 'SORT', 'THREAD=ORDEREDSUBJECT', 'THREAD=REFERENCES', 'UTF8=ACCEPT', `APPENDLIMIT=${this.ctx.limits.maxAppendSize}`];
    if (this.state === 'notauth') {
      // RFC 3501 §6.2.1: STARTTLS only before TLS; §7.2.1: LOGINDISABLED (and no mechanism) while logins are refused.
      if (this.ctx.tls && !this.secure) caps.push('STARTTLS');
      caps.push(this.loginAllowed ? 'AUTH=PLAIN' : 'LOGINDISABLED');
    }
    return caps.join(' ');
  }

  // ---- output ----

  private readonly drainWaiters: Array<() => void> = [];

  send(line: string): void {
    if (this.closed) return;
    // After BYE the client hears nothing but the tagged response of the command that ended the session.
    if (this.byeSent && (line.startsWith('*') || line.startsWith('+'))) return;
    if (line.startsWith('* BYE ')) this.byeSent = true;
    this.socket.write(line + '\r\n');
  }

  /**
   * LOGOUT: the client has left the mailbox, so pending updates (EXPUNGE, FETCH, EXISTS) would name messages by
   * numbers that refer to nothing: the view is dropped, and only BYE and the tagged OK follow.
   */
  logout(): void {
    this.view = undefined;
    this.idling = false;
    this.loggingOut = true;
    this.send(`* BYE ${this.ctx.hostname} logging out`);
  }

  sendChunks(chunks: Buffer[]): void {
    if (this.closed) return;
    this.socket.cork();
    for (const c of chunks) this.socket.write(c);
    this.socket.uncork();
  }

  /** Waits while the socket's buffer is full, so that big FETCH results stream instead of piling up. */
  async waitDrain(): Promise<void> {
    if (this.closed || !this.socket.writableNeedDrain) return;
    await new Promise<void>((resolve) => this.drainWaiters.push(resolve));
  }

  // ---- input ----

  private literalLimit(command: string): number {
    // Before authentication no literal over maxLiteralSize, whatever the command and whatever is pending: a LOGIN
    // queued ahead may still fail, so a big APPEND literal is refused until the login has succeeded. (A LOGIN with
    // nothing queued ahead of it runs, and completes, before the next line is framed: a client that pipelines
    // LOGIN and APPEND alone still gets the APPEND limit. One that pipelines more ahead of its LOGIN does not.)
    if (this.state === 'notauth') {
      // An AUTHENTICATE waiting for its SASL response: that is one line of base64, never a literal.
      if (this.current === 'AUTHENTICATE' && this.waiter) return 0;
      return this.ctx.limits.maxLiteralSize;
    }
    return command === 'APPEND' ? this.ctx.limits.maxAppendSize : this.ctx.limits.maxLiteralSize;
  }

  private enqueue(item: FramerItem): void {
    if (item.kind === 'error' && item.fatal) {
      // The framer reads nothing more: neither does the socket. What the client still sends stays in the kernel's
      // buffer until the connection is closed after the answer.
      this.readingStopped = true;
      this.socket.pause();
      // Taken by a command waiting for a continuation (AUTHENTICATE, IDLE): the connection ends after it.
      if (this.waiter) {
        this.loggingOut = true;
        this.pendingBye = 'Too much data';
      }
    }
    if (this.waiter) {
      const w = this.waiter;
      this.waiter = undefined;
      w(item);
      return;
    }
    this.queue.push(item);
    if (this.queue.length >= (this.state === 'notauth' ? MAX_QUEUED_NOTAUTH : MAX_QUEUED) && !this.paused) {
      this.paused = true;
      this.socket.pause();
    }
    void this.pump();
  }

  /** The next line from the client, for continuations (AUTHENTICATE, IDLE's DONE); undefined when closed. */
  nextItem(): Promise<FramerItem | undefined> {
    const queued = this.queue.shift();
    if (queued) return Promise.resolve(queued);
    if (this.closed) return Promise.resolve(undefined);
    return new Promise((resolve) => (this.waiter = resolve));
  }

  private async pump(): Promise<void> {
    if (this.running) return;
    this.running = true;
    try {
      while (!this.closed) {
        const item = this.queue.shift();
        if (!item) break;
        if (this.paused && !this.readingStopped && this.queue.length < (this.state === 'notauth' ? MAX_QUEUED_NOTAUTH : MAX_QUEUED) / 2) {
          this.paused = false;
          this.socket.resume();
        }
        await this.execute(item);
      }
    } catch (err) {
      this.fail(err);
    } finally {
      this.running = false;
    }
  }

  private async execute(item: FramerItem): Promise<void> {
    if (item.kind === 'error') {
      this.send(`${item.tag ?? '*'} ${item.status} ${item.code ? `[${item.code}] ` : ''}${item.message}`);
      if (item.fatal) this.close('Too much data');
      return;
    }
    const r = new Reader(item.frame, this.utf8);
    if (r.atEnd()) return this.send('* BAD Empty command line');
    let tag: string;
    try {
      tag = r.tag();
    } catch {
      return this.send('* BAD Invalid tag');
    }
    let name = '';
    try {
      r.sp();
      name = r.atom().toUpperCase();
      let uid = false;
      if (name === 'UID') {
        r.sp();
        name = r.atom().toUpperCase();
        uid = true;
      }
      const command = this.ctx.commands[name];
      if (!command || (uid && !command.uid)) throw new ParseError(`Unknown command ${uid ? 'UID ' : ''}${name}`);
      if (!command.states.includes(this.state)) throw new ImapError('BAD', stateError(this.state, command.states));
      this.current = name;
      const text = await command.run(this, r, uid);
      if (this.closed) return;
      this.announce(this.expungeAllowed(name, uid));
      this.send(`${tag} OK ${text ?? `${uid ? 'UID ' : ''}${name} completed`}`);
      if (this.tlsPending) this.beginTls();
    } catch (err) {
      if (this.closed) return;
      let status = 'NO';
      let message: string;
      if (err instanceof ParseError) {
        status = 'BAD';
        message = err.message;
      } else if (err instanceof ImapError) {
        status = err.status;
        message = (err.code ? `[${err.code}] ` : '') + err.message;
      } else if (err instanceof MailStoreError) {
        // The store's codes are RFC 5530 response codes, except NOUSER.
        message = (err.code === 'NOUSER' ? '' : `[${err.code}] `) + oneLine(err.message);
      } else {
        this.ctx.log(`imap ${this.remote} ${name}: ${err instanceof Error ? err.stack : String(err)}`);
        message = `[SERVERBUG] ${name || 'Command'} failed: ${err instanceof Error ? oneLine(err.message) : 'internal error'}`;
      }
      this.announce(this.expungeAllowed(name, false));
      this.send(`${tag} ${status} ${oneLine(message)}`);
    } finally {
      this.current = undefined;
    }
    if (this.loggingOut) this.close(this.pendingBye);
  }

  // ---- notifications ----

  onStoreChange(change: StoreChange): void {
    const view = this.view;
    if (!view || this.closed) return;
    if (change.type === 'mailboxes') {
      // Our mailbox may have been deleted or renamed away by another session.
      this.findMailbox(view.name).then(
        (info) => {
          if (this.view === view && !info) {
            view.deleted = true;
            if (this.idling) this.announce(true);
          }
        },
        () => undefined,
      );
      return;
    }
    if (change.mailbox !== view.name) return;
    if (view.apply(change) && this.idling) this.announce(true);
  }

  /** Sends the untagged responses that are due for the selected mailbox. */
  announce(expunge: boolean): void {
    const view = this.view;
    if (!view || this.closed) return;
    if (view.deleted) {
      this.close('Selected mailbox was deleted, have to disconnect');
      return;
    }
    for (const line of view.flush({ expunge, condstore: this.condstore, qresync: this.qresync })) this.send(`* ${line}`);
    // Expunges held back: a QRESYNC client must not take a later MODSEQ it saw as its resync point (RFC 7162 §3.2).
    if (this.qresync && view.modseqBeforeExpunge !== undefined) this.send(`* OK [HIGHESTMODSEQ ${view.modseqBeforeExpunge}] Expunges pending`);
  }

  /** Messages this session expunged or moved away: EXPUNGE responses, or VANISHED once QRESYNC is enabled. */
  expunged(uids: number[]): void {
    const view = this.view!;
    const known = uids.filter((u) => view.byUidEntry(u)).sort((a, b) => a - b);
    const seqs = view.removeOwn(known);
    if (!this.qresync) for (const seq of seqs) this.send(`* ${seq} EXPUNGE`);
    else if (known.length) this.send(`* VANISHED ${formatUidList(known)}`);
  }

  /**
   * QRESYNC's VANISHED (EARLIER) set (RFC 7162 §3.2.5.1, §3.2.6): the UIDs within `within` (a UID set; all when
   * absent) expunged after `modseq`, as a UID set ('' when none). When the store's history does not reach back that
   * far, every UID below UIDNEXT that is not in the mailbox is reported, which the RFC allows. UIDs this session
   * still holds (expunges not yet announced) are left out: they will go as VANISHED, which moves the numbers.
   */
  async vanishedEarlier(modseq: number, within?: SeqSet): Promise<string> {
    const view = this.view!;
    const { uids, complete } = await this.ctx.store.expungedSince(this.user!, view.name, modseq);
    const maxUid = view.uidNext - 1;
    const ranges = uidRanges(within ?? [[1, STAR]], maxUid);
    const held = view.knownUids();
    if (complete) {
      const inView = new Set(held);
      return formatUidList(uids.filter((u) => !inView.has(u) && ranges.some(([lo, hi]) => u >= lo && u <= hi)));
    }
    return subtractUids(ranges, held)
      .map(([lo, hi]) => (lo === hi ? `${lo}` : `${lo}:${hi}`))
      .join(',');
  }

  /** FLAGS and PERMANENTFLAGS for keywords not yet announced: called before sending any FETCH with flags. */
  announceKeywords(): void {
    const view = this.view;
    if (!view || this.closed) return;
    for (const line of view.keywordLines()) this.send(`* ${line}`);
  }

  private expungeAllowed(name: string, uid: boolean): boolean {
    if (!uid && NO_EXPUNGE_DURING.has(name)) return false;
    // A pipelined command that uses sequence numbers must see the numbers its sender assumed.
    return !this.queue.some((item) => {
      if (item.kind !== 'command') return false;
      const head = parseHead(item.frame.lines[0]!);
      return SEQUENCE_COMMANDS.has(head.name);
    });
  }

  // ---- state changes ----

  /**
   * Checks a login (LOGIN, AUTHENTICATE) under the login throttle: returns the user (and the app password used, if
   * one), or throws the tagged NO (AUTHENTICATIONFAILED, or UNAVAILABLE while throttled, RFC 5530). A 2FA user's
   * main password gets AUTHENTICATIONFAILED saying that an app password is required. Once the connection has had
   * failuresPerConnection refused logins, it ends after that NO with `* BYE Too many authentication failures`.
   */
  checkLogin(login: string, password: string, method: string): LoginGrant | Promise<LoginGrant> {
    const result = this.ctx.guard.authenticate({ protocol: 'imap', login, method, client: this.client }, password);
    return result instanceof Promise ? result.then((r) => this.grant(r)) : this.grant(result);
  }

  private grant(result: LoginResult): LoginGrant {
    if (result.kind === 'ok') return result.appPassword !== undefined ? { user: result.user, appPassword: result.appPassword } : { user: result.user };
    this.refusedLogins++;
    if (this.ctx.guard.tooManyOnConnection(this.refusedLogins)) {
      this.loggingOut = true;
      this.pendingBye = 'Too many authentication failures';
    }
    if (result.kind === 'throttled') throw new ImapError('NO', `Too many failed logins, try again in ${retrySeconds(result.retryAfterMs)} s`, 'UNAVAILABLE');
    if (result.kind === 'app-password-required') throw new ImapError('NO', `${result.user} has two-factor authentication: app password required`, 'AUTHENTICATIONFAILED');
    throw new ImapError('NO', 'Authentication failed', 'AUTHENTICATIONFAILED');
  }

  login(user: string, method: string, appPassword?: string): void {
    this.user = user;
    this.state = 'auth';
    // Revoking the app password ends this session at once, with a BYE saying why (RFC 3501 §7.1.5: BYE may come unasked).
    if (!this.closed) this.untrack = this.ctx.guard.track(user, appPassword, (reason) => this.close(reason));
    this.emit('session', { user, protocol: 'imap', method, client: this.client, tls: tlsInfo(this.socket), ...(appPassword !== undefined ? { appPassword } : {}) });
  }

  async openMailbox(info: MailboxInfo, readOnly: boolean): Promise<MailboxView> {
    const user = this.user!;
    const { recent, store } = this.ctx;
    const view = new MailboxView(info.name, readOnly, info.uidValidity, (uid) => recent.claim(user, info.name, info.uidValidity, uid, readOnly));
    // Installed before loading, so changes during the load are queued in the view, not lost.
    this.view = view;
    try {
      const messages = await store.messages(user, info.name);
      const recentUids = recent.select(user, info.name, info.uidValidity, messages.map((m) => m.uid), !readOnly);
      view.load(messages, recentUids, info.uidNext, info.highestModseq);
    } catch (err) {
      this.view = undefined;
      throw err;
    }
    this.state = 'selected';
    return view;
  }

  closeMailbox(): void {
    this.view = undefined;
    if (this.state === 'selected') this.state = 'auth';
  }

  // ---- helpers for commands ----

  /**
   * A mailbox name argument: modified UTF-7 decoded, or after ENABLE UTF8=ACCEPT taken as UTF-8 as it is ("&" is then
   * an ordinary character, RFC 6855 §3); INBOX in any case made canonical (also as first level).
   */
  mailboxArg(r: Reader): string {
    let name: string | undefined;
    if (this.utf8) {
      name = utf8MailboxName(r.astringBuf());
      if (name === undefined) throw new ImapError('NO', 'Invalid mailbox name (not UTF-8, or with control characters)', 'CANNOT');
    } else {
      name = decodeMailboxName(r.astring());
      if (name === undefined) throw new ImapError('NO', 'Invalid mailbox name (not modified UTF-7)', 'CANNOT');
    }
    const first = name.split('/', 1)[0]!;
    return first.toUpperCase() === 'INBOX' ? 'INBOX' + name.slice(first.length) : name;
  }

  /** A mailbox name as this session reads them: modified UTF-7, or UTF-8 after ENABLE UTF8=ACCEPT (never UTF-7 then). */
  quoteMailbox(name: string): string {
    return this.utf8 ? quoteUtf8Text(name) : quoteText(encodeMailboxName(name));
  }

  /** The mailbox's current info, or undefined when there is no such (selectable) mailbox. */
  async findMailbox(name: string): Promise<MailboxInfo | undefined> {
    try {
      return await this.ctx.store.mailboxInfo(this.user!, name);
    } catch (err) {
      // CANNOT: a name the store could never hold, so it does not exist either.
      if (err instanceof MailStoreError && (err.code === 'NONEXISTENT' || err.code === 'CANNOT')) return undefined;
      throw err;
    }
  }

  /** The selected messages a sequence set (or UID set) names, in sequence order. */
  resolveSet(set: SeqSet, uid: boolean): ViewEntry[] {
    const view = this.view!;
    const entries = view.entries;
    if (!uid) {
      if (seqSetExceeds(set, entries.length)) throw new ImapError('BAD', 'Message sequence number out of range');
      return resolveSeqSet(set, entries.length).map((n) => entries[n - 1]!);
    }
    if (!entries.length) return [];
    const maxUid = entries[entries.length - 1]!.msg.uid;
    const picked = new Set<number>();
    for (const [a, b] of set) {
      const x = a === STAR ? maxUid : a;
      const y = b === STAR ? maxUid : b;
      const hi = Math.max(x, y);
      for (let i = view.lowerBound(Math.min(x, y)); i < entries.length && entries[i]!.msg.uid <= hi; i++) picked.add(i);
    }
    return [...picked].sort((p, q) => p - q).map((i) => entries[i]!);
  }

  async loadMessage(entry: ViewEntry, needRaw: boolean): Promise<{ raw?: Buffer; tree: MimeNode }> {
    const view = this.view!;
    return this.ctx.cache.get(this.user!, view.name, view.uidValidity, entry.msg.uid, needRaw);
  }

  /** The Message-ID of a message, when its structure is at hand (events carry it when cheap). */
  messageId(entry: ViewEntry, tree?: MimeNode): string | undefined {
    const view = this.view;
    const t = tree ?? (view && this.ctx.cache.peekTree(this.user!, view.name, view.uidValidity, entry.msg.uid));
    return t ? header(t, 'message-id') : undefined;
  }

  emit<K extends keyof MailboxEvents & string>(kind: K, detail: MailboxEvents[K], extra: { messageId?: string | undefined; queueId?: string } = {}): void {
    this.ctx.events?.emit({ kind, detail, ...extra });
  }

  // ---- lifecycle ----

  private resetTimer(): void {
    // refresh() re-arms the same timer: cheap enough to do for every chunk of a big APPEND.
    if (this.timer) {
      this.timer.refresh();
      return;
    }
    this.timer = setTimeout(() => this.close('Autologout; idle for too long'), this.ctx.limits.idleTimeoutMs);
    this.timer.unref();
  }

  /** Ends the connection, with an untagged BYE when a reason is given. */
  close(reason?: string): void {
    if (this.closed) return;
    if (reason) this.send(`* BYE ${reason}`);
    this.closed = true;
    this.socket.end();
    // A client that never reads must not keep the socket (and its buffers) alive.
    setTimeout(() => this.socket.destroy(), 2000).unref();
    this.cleanup();
  }

  /** Server shutdown: the command under way finishes (IDLE ends at once), then BYE; forced after a while. */
  async shutdown(graceMs = 5000): Promise<void> {
    if (this.closed) return;
    if (this.running && !this.waiter) {
      this.loggingOut = true;
      this.queue.length = 0;
      const done = new Promise<void>((resolve) => this.socket.once('close', () => resolve()));
      const force = new Promise<void>((resolve) => setTimeout(resolve, graceMs).unref());
      this.pendingBye = 'Server shutting down';
      await Promise.race([done, force]);
    }
    this.close('Server shutting down');
  }

  private fail(err: unknown): void {
    this.ctx.log(`imap ${this.remote}: ${err instanceof Error ? err.stack : String(err)}`);
    this.close('Internal server error');
  }

  private cleanup(): void {
    this.closed = true;
    if (this.cleanedUp) return;
    this.cleanedUp = true;
    this.untrack?.();
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
    this.view = undefined;
    const w = this.waiter;
    this.waiter = undefined;
    w?.(undefined);
    this.drainWaiters.splice(0).forEach((f) => f());
    this.queue.length = 0;
    this.onClose();
  }

  get isClosed(): boolean {
    return this.closed;
  }
}

/** resp-text is one line of 7-bit text: error messages may quote what the client sent. */
function oneLine(text: string): string {
  return text.replace(/[\r\n]+/g, ' ').replace(/[^\x20-\x7e]/g, '?');
}

function stateError(state: CommandState, allowed: CommandState[]): string {
  if (state === 'notauth') return 'Log in first';
  if (allowed.includes('notauth')) return 'Already authenticated';
  return 'No mailbox selected';
}
