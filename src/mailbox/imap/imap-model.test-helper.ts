// A state-tracking IMAP4rev1 client for the stress test (stress.test.ts): it speaks the protocol over a raw socket,
// one command at a time, and checks every response against a model of what RFC 3501 (with the extensions the
// server advertises: CONDSTORE, UIDPLUS, MOVE, IDLE, LITERAL+) lets it see at that point:
// - sequence numbers in FETCH and EXPUNGE within 1..EXISTS; EXISTS never decreases except by EXPUNGE; RECENT ≤ EXISTS;
// - no EXPUNGE while a non-UID FETCH, STORE or SEARCH is under way, nor when no command is (§7.4.1, §5.3);
// - keywords in FETCH FLAGS announced by a FLAGS response first (§7.2.6, §2.3.2);
// - nothing after LOGOUT but `* BYE` and the tagged OK;
// - UIDs strictly ascending by sequence number, never changing for a sequence number, an expunged UID never back;
// - UIDVALIDITY constant per mailbox (across all clients); every UID seen before a UIDNEXT below that UIDNEXT;
// - with CONDSTORE on: MODSEQ per message never decreasing, and every FETCH that reports a flag change without
//   being asked for (STORE, another session) carrying UID and MODSEQ (RFC 7162 §3.2);
// - a tagged response for every command, with the command's own tag, never BAD nor [SERVERBUG].
// Violations are collected by kind, each with the client's recent traffic as context.
import { LineClient, LineClientError } from '../../harness/clients/line-client.js';

/** Deadline for any one response (ms): a command without its tagged response by then is a violation. */
export const RESPONSE_TIMEOUT_MS = 10_000;
/** Traffic kept per client for the context of a violation, and how much of it a violation shows. */
const HISTORY_LINES = 400;
const CONTEXT_COMMANDS = 6;
const CONTEXT_HEAD = 12;
const CONTEXT_TAIL = 30;

export interface Violation {
  kind: string;
  client: string;
  message: string;
  /** The offending response line. */
  line: string;
  /** The client's recent traffic, oldest first (`C:` sent, `S:` received). */
  context: string[];
}

/** Examples kept per kind (the count goes on): enough to read, bounded in memory whatever the server does. */
const EXAMPLES_KEPT = 20;

/** Every violation seen, by kind (counted, the first EXAMPLES_KEPT kept), and the figures of the run. */
export class ViolationLog {
  readonly byKind = new Map<string, { count: number; examples: Violation[] }>();
  /** UIDVALIDITY per `user\0mailbox`, as first reported to any client. */
  readonly uidValidity = new Map<string, number>();
  /** Tagged NO responses by their response code (legitimate under concurrency, reported as figures). */
  readonly refusals = new Map<string, number>();

  add(v: Violation): void {
    let kind = this.byKind.get(v.kind);
    if (!kind) this.byKind.set(v.kind, (kind = { count: 0, examples: [] }));
    kind.count++;
    if (kind.examples.length < EXAMPLES_KEPT) kind.examples.push(v);
  }

  counts(): Record<string, number> {
    return Object.fromEntries([...this.byKind].map(([k, v]) => [k, v.count]).sort());
  }

  /** Counts and the first `examples` of each kind, each with its context. */
  report(examples = 1): string {
    const out: string[] = [];
    for (const [kind, { count, examples: kept }] of [...this.byKind].sort(([a], [b]) => a.localeCompare(b))) {
      out.push(`=== ${kind}: ${count}`);
      for (const v of kept.slice(0, examples)) {
        out.push(`  --- ${v.client}: ${v.message}`, `    offending: ${v.line}`, ...v.context.map((l) => `    ${l}`));
      }
    }
    return out.join('\n');
  }
}

// ---- parsing ----

/** An IMAP data item: atom or number (string), quoted/literal string ({ s }), parenthesized list (array). */
export type Item = string | { s: string } | Item[];

/** Parses a sequence of IMAP items (atoms with `[...]` sections kept whole, strings, literals inline, lists). */
export function parseItems(text: string): Item[] {
  let i = 0;
  const list = (close: string | undefined): Item[] => {
    const out: Item[] = [];
    for (;;) {
      while (text[i] === ' ') i++;
      if (i >= text.length) {
        if (close) throw new Error(`unterminated list in ${JSON.stringify(text.slice(0, 200))}`);
        return out;
      }
      const c = text[i]!;
      if (c === close) {
        i++;
        return out;
      }
      if (c === '(') {
        i++;
        out.push(list(')'));
      } else if (c === '"') {
        let s = '';
        i++;
        while (i < text.length && text[i] !== '"') {
          if (text[i] === '\\') i++;
          s += text[i++];
        }
        if (text[i] !== '"') throw new Error(`unterminated string in ${JSON.stringify(text.slice(0, 200))}`);
        i++;
        out.push({ s });
      } else if (c === '{') {
        const m = /^\{(\d+)\+?\}\r\n/.exec(text.slice(i));
        if (!m) throw new Error(`bad literal at ${i} in ${JSON.stringify(text.slice(0, 200))}`);
        i += m[0].length;
        out.push({ s: text.slice(i, i + Number(m[1])) });
        i += Number(m[1]);
      } else {
        let atom = '';
        let depth = 0;
        while (i < text.length) {
          const d = text[i]!;
          if (depth === 0 && (d === ' ' || d === '(' || d === ')')) break;
          if (d === '[') depth++;
          if (d === ']') depth--;
          atom += d;
          i++;
        }
        if (!atom) throw new Error(`unexpected ${JSON.stringify(c)} at ${i} in ${JSON.stringify(text.slice(0, 200))}`);
        out.push(atom);
      }
    }
  };
  return list(undefined);
}

/** FETCH data as a map from upper-case item name to value. */
export function fetchItems(text: string): Map<string, Item> {
  const [items] = parseItems(text);
  if (!Array.isArray(items)) throw new Error(`FETCH data is not a list: ${text.slice(0, 200)}`);
  const map = new Map<string, Item>();
  for (let k = 0; k + 1 < items.length; k += 2) map.set(String(items[k]).toUpperCase(), items[k + 1]!);
  return map;
}

const atoms = (item: Item | undefined): string[] => (Array.isArray(item) ? item.map((x) => (typeof x === 'string' ? x : x instanceof Array ? '' : x.s)) : []);
const isKeyword = (flag: string) => !flag.startsWith('\\');

/** `1:3,5` → [1,2,3,5] (no `*`). */
export function expandSet(set: string): number[] {
  const out: number[] = [];
  for (const part of set.split(',')) {
    const [a, b] = part.split(':').map(Number);
    if (b === undefined) out.push(a!);
    else for (let n = Math.min(a!, b); n <= Math.max(a!, b); n++) out.push(n);
  }
  return out;
}

// ---- the client ----

export type ClientState = 'closed' | 'notauth' | 'auth' | 'selected';

export interface Tagged {
  tag: string;
  status: 'OK' | 'NO' | 'BAD';
  text: string;
  /** Untagged lines received during the command. */
  untagged: string[];
}

interface InFlight {
  tag: string;
  /** Upper-case command name, UID prefix dropped. */
  verb: string;
  uid: boolean;
  text: string;
}

export class ModelClient {
  state: ClientState = 'closed';
  private conn: LineClient | undefined;
  private tags = 0;
  private readonly history: string[] = [];
  private inFlight: InFlight | undefined;
  private idling = false;
  private loggingOut = false;
  /** CONDSTORE enabled on this connection (ENABLE or SELECT (CONDSTORE)). */
  condstore = false;

  // The selected mailbox as this client sees it.
  mailbox: string | undefined;
  /** UID per sequence number (index seq-1); undefined when not yet learnt. */
  uids: Array<number | undefined> = [];
  /** Flags per sequence number, lower-cased, \Recent dropped; undefined when not yet learnt. */
  flags: Array<Set<string> | undefined> = [];
  /** Flags of the last FLAGS response, lower-cased. */
  defined = new Set<string>();
  private expunged = new Set<number>();
  /** Where the flags the model holds for a UID were learnt: the command under way and the response. */
  readonly flagSource = new Map<number, string>();
  /** The highest MODSEQ seen per UID, with the flags reported with it (when they were). */
  private modseqs = new Map<number, { modseq: number; flags?: string }>();
  /** Highest MODSEQ seen per mailbox (all sessions of this client); a later HIGHESTMODSEQ must not be below it. */
  private readonly maxModseq = new Map<string, number>();
  /** The slowest command so far: its text and how long its tagged response took (ms). */
  slowest = { text: '', ms: 0 };
  /** Highest UID seen per mailbox (all sessions of this client); a later UIDNEXT must exceed it. */
  private readonly maxUid = new Map<string, number>();
  /** Commands sent, all sessions. */
  commands = 0;
  /** Messages announced by EXISTS (growth only), all sessions: IDLE waits on it. */
  existsSeen = 0;

  constructor(
    readonly name: string,
    readonly user: string,
    private readonly password: string,
    private readonly port: number,
    private readonly log: ViolationLog,
  ) {}

  get exists(): number {
    return this.uids.length;
  }

  private note(line: string): void {
    this.history.push(line.length > 300 ? line.slice(0, 300) + '…' : line);
    if (this.history.length > HISTORY_LINES) this.history.shift();
  }

  /** The traffic since the last CONTEXT_COMMANDS commands, its middle elided when long. */
  private context(): string[] {
    let from = this.history.length;
    for (let n = 0; n < CONTEXT_COMMANDS && from > 0; ) if (this.history[--from]!.startsWith('C: ')) n++;
    const lines = this.history.slice(from);
    if (lines.length <= CONTEXT_HEAD + CONTEXT_TAIL) return lines;
    return [...lines.slice(0, CONTEXT_HEAD), `… (${lines.length - CONTEXT_HEAD - CONTEXT_TAIL} lines)`, ...lines.slice(-CONTEXT_TAIL)];
  }

  violation(kind: string, message: string, line: string): void {
    this.log.add({ kind, client: this.name, message, line, context: this.context() });
  }

  private resetMailbox(): void {
    this.mailbox = undefined;
    this.uids = [];
    this.flags = [];
    this.defined = new Set();
    this.expunged = new Set();
    this.modseqs = new Map();
    this.flagSource.clear();
  }

  /** Connects and reads the greeting. */
  async connect(): Promise<void> {
    this.conn = await LineClient.connect({ host: '127.0.0.1', port: this.port }, { name: `IMAP ${this.name}`, timeoutMs: RESPONSE_TIMEOUT_MS });
    this.history.length = 0;
    this.condstore = false;
    this.loggingOut = false;
    this.resetMailbox();
    const greeting = await this.conn.imapLine();
    this.note(`S: ${greeting}`);
    if (!greeting.startsWith('* OK')) this.violation('bad-greeting', 'greeting is not * OK', greeting);
    this.state = 'notauth';
  }

  /** Drops the connection (after a failure). */
  drop(): void {
    this.conn?.close();
    this.conn = undefined;
    this.state = 'closed';
    this.resetMailbox();
  }

  /** A line the server has already sent, without waiting; undefined when there is none. */
  private async buffered(): Promise<string | undefined> {
    try {
      const line = await this.conn!.imapLine({ timeoutMs: 0 });
      this.note(`S: ${line}`);
      return line;
    } catch {
      return undefined;
    }
  }

  /** Reads whatever the server sent while no command was under way (never waits). */
  private async drain(): Promise<void> {
    if (!this.conn) return;
    for (let line = await this.buffered(); line !== undefined; line = await this.buffered()) this.handleLine(line);
  }

  /** Sends a command and reads up to its tagged response; undefined when the connection failed (recorded). */
  async command(text: string, options: { literal?: Buffer } = {}): Promise<Tagged | undefined> {
    const conn = this.conn;
    if (!conn) throw new Error(`${this.name}: not connected`);
    await this.drain();
    const tag = `${this.name}.${++this.tags}`;
    const words = text.split(' ');
    const uid = words[0]!.toUpperCase() === 'UID';
    const verb = (uid ? words[1]! : words[0]!).toUpperCase();
    this.inFlight = { tag, verb, uid, text };
    this.commands++;
    if (verb === 'LOGOUT') this.loggingOut = true;
    if (options.literal) {
      const head = `${tag} ${text} {${options.literal.length}+}\r\n`;
      this.note(`C: ${head.trimEnd()} <${options.literal.length} octets>`);
      conn.write(Buffer.concat([Buffer.from(head, 'latin1'), options.literal, Buffer.from('\r\n')]), `${tag} ${text}`);
    } else {
      this.note(`C: ${tag} ${text}`);
      conn.send(`${tag} ${text}`);
    }
    const sent = Date.now();
    try {
      return await this.readTagged(tag);
    } finally {
      this.inFlight = undefined;
      const ms = Date.now() - sent;
      if (ms > this.slowest.ms) this.slowest = { text, ms };
    }
  }

  private async readTagged(tag: string): Promise<Tagged | undefined> {
    const conn = this.conn!;
    const untagged: string[] = [];
    for (;;) {
      let line: string;
      try {
        line = await conn.imapLine({ timeoutMs: RESPONSE_TIMEOUT_MS });
      } catch (err) {
        const kind = err instanceof LineClientError && err.kind === 'closed' ? 'connection-closed' : 'no-tagged-response';
        this.violation(kind, `no tagged response to ${this.inFlight?.text}: ${(err as Error).message}`, '(none)');
        this.drop();
        return undefined;
      }
      this.note(`S: ${line}`);
      if (line.startsWith(tag + ' ')) {
        const m = /^\S+ (OK|NO|BAD)(?: (.*))?$/.exec(line);
        if (!m) {
          this.violation('malformed-tagged', 'tagged response is not OK/NO/BAD', line);
          this.drop();
          return undefined;
        }
        const result: Tagged = { tag, status: m[1] as Tagged['status'], text: m[2] ?? '', untagged };
        this.checkTagged(result, line);
        return result;
      }
      if (line.startsWith('+')) {
        if (this.inFlight?.verb === 'IDLE' && !this.idling) {
          this.idling = true;
          return { tag, status: 'OK', text: '+', untagged };
        }
        this.violation('unexpected-continuation', `continuation during ${this.inFlight?.text}`, line);
        continue;
      }
      if (!line.startsWith('* ')) {
        this.violation('unknown-tag', `response with a tag not sent (waiting for ${tag})`, line);
        continue;
      }
      untagged.push(line);
      this.handleLine(line);
    }
  }

  private checkTagged(t: Tagged, line: string): void {
    if (t.status === 'BAD') this.violation('tagged-bad', `BAD for ${this.inFlight?.text}`, line);
    if (/\[SERVERBUG\]/.test(t.text)) this.violation('serverbug', `SERVERBUG for ${this.inFlight?.text}`, line);
    if (t.status === 'NO') {
      const code = /^\[([A-Z-]+)/.exec(t.text)?.[1] ?? 'no code';
      const key = `${this.inFlight?.verb} NO ${code}`;
      this.log.refusals.set(key, (this.log.refusals.get(key) ?? 0) + 1);
    }
    const m = /^\[(APPENDUID|COPYUID) (\d+) (?:\S+ )?([\d:,]+)\]/.exec(t.text);
    if (m) this.sawCopied(Number(m[2]), m[3]!, line);
  }

  /** The destination mailbox of the APPEND/COPY/MOVE under way (the last argument, unquoted). */
  private targetMailbox(): string | undefined {
    const f = this.inFlight;
    if (!f) return undefined;
    const words = f.text.split(' ');
    if (f.verb === 'APPEND') return words[1];
    if (f.verb === 'COPY' || f.verb === 'MOVE') return words[words.length - 1];
    return undefined;
  }

  // ---- IDLE ----

  /** Starts IDLE: returns once the continuation came (false: the command failed instead). */
  async idleStart(): Promise<boolean> {
    const r = await this.command('IDLE');
    if (!r || r.text !== '+' || !this.idling) return false;
    this.inFlight = { tag: r.tag, verb: 'IDLE', uid: false, text: 'IDLE' };
    return true;
  }

  /** While idling: reads untagged responses until `done` holds after one; false on timeout (recorded by the caller). */
  async idleWait(done: () => boolean, timeoutMs: number): Promise<boolean> {
    const conn = this.conn!;
    const deadline = Date.now() + timeoutMs;
    while (!done()) {
      let line: string;
      try {
        line = await conn.imapLine({ timeoutMs: Math.max(0, deadline - Date.now()) });
      } catch {
        return false;
      }
      this.note(`S: ${line}`);
      if (!line.startsWith('* ')) this.violation('unexpected-during-idle', 'not an untagged response during IDLE', line);
      else this.handleLine(line);
    }
    return true;
  }

  async idleDone(): Promise<Tagged | undefined> {
    const tag = this.inFlight!.tag;
    this.note('C: DONE');
    this.conn!.send('DONE');
    try {
      return await this.readTagged(tag);
    } finally {
      this.idling = false;
      this.inFlight = undefined;
    }
  }

  // ---- session steps ----

  async login(): Promise<boolean> {
    const r = await this.command(`LOGIN ${this.user} "${this.password}"`);
    if (r?.status !== 'OK') return false;
    this.state = 'auth';
    return true;
  }

  async select(mailbox: string, condstore: boolean): Promise<boolean> {
    // What the server sent about the previous mailbox belongs to it.
    await this.drain();
    this.resetMailbox();
    this.state = 'auth';
    this.mailbox = mailbox;
    const r = await this.command(`SELECT ${mailbox}${condstore ? ' (CONDSTORE)' : ''}`);
    if (r?.status !== 'OK') {
      this.resetMailbox();
      return false;
    }
    if (condstore) this.condstore = true;
    this.state = 'selected';
    return true;
  }

  /** After CLOSE or UNSELECT. */
  closeMailbox(): void {
    this.resetMailbox();
    this.state = 'auth';
  }

  /** LOGOUT: only `* BYE` and the tagged OK may come, then the server closes. */
  async logout(): Promise<void> {
    const r = await this.command('LOGOUT');
    if (r) {
      if (!r.untagged.some((l) => l.startsWith('* BYE'))) this.violation('logout-without-bye', 'no * BYE before the tagged OK of LOGOUT', `${r.tag} ${r.status} ${r.text}`);
      const conn = this.conn!;
      try {
        await conn.waitClosed({ timeoutMs: RESPONSE_TIMEOUT_MS });
      } catch {
        this.violation('open-after-logout', 'connection still open after LOGOUT', '(none)');
      }
      for (let line = await this.buffered(); line !== undefined; line = await this.buffered()) {
        this.violation('response-after-logout', 'data after the tagged OK of LOGOUT', line);
      }
    }
    this.drop();
  }

  // ---- the model ----

  private handleLine(line: string): void {
    if (this.loggingOut) {
      if (!line.startsWith('* BYE')) this.violation('response-after-logout', 'untagged response after LOGOUT was sent (only BYE may come)', line);
      return;
    }
    if (!line.startsWith('* ')) {
      this.violation('unsolicited', 'a non-untagged line while no command is under way', line);
      return;
    }
    // `s`: a FETCH response holds its literals inline, CRLF included.
    const num = /^\* (\d+) (EXISTS|RECENT|EXPUNGE|FETCH)(?: (.*))?$/is.exec(line);
    try {
      if (num) {
        const n = Number(num[1]);
        const what = num[2]!.toUpperCase();
        if (what === 'EXISTS') return this.onExists(n, line);
        if (what === 'RECENT') {
          if (n > this.exists) this.violation('recent-over-exists', `RECENT ${n} > EXISTS ${this.exists}`, line);
          return;
        }
        if (what === 'EXPUNGE') return this.onExpunge(n, line);
        return this.onFetch(n, num[3] ?? '', line);
      }
      if (/^\* FLAGS /i.test(line)) {
        const [list] = parseItems(line.slice('* FLAGS '.length));
        this.defined = new Set(atoms(list).map((f) => f.toLowerCase()));
        return;
      }
      if (/^\* BYE/i.test(line)) {
        this.violation('unexpected-bye', 'BYE without LOGOUT', line);
        return;
      }
      const code = /^\* (?:OK|NO|BAD) \[([A-Z-]+)(?: ([^\]]*))?\]/i.exec(line);
      if (code) return this.onCode(code[1]!.toUpperCase(), code[2] ?? '', line);
      const status = /^\* STATUS (\S+) \((.*)\)$/i.exec(line);
      if (status) {
        const items = (parseItems(`(${status[2]})`)[0] as string[]) ?? [];
        const mailbox = status[1]!.replace(/^"|"$/g, '');
        for (let k = 0; k + 1 < items.length; k += 2) {
          if (items[k] === 'UIDVALIDITY') this.checkUidValidity(mailbox, Number(items[k + 1]), line);
          if (items[k] === 'UIDNEXT') this.checkUidNext(mailbox, Number(items[k + 1]), line);
        }
        return;
      }
      const search = /^\* SEARCH((?: \d+)*)/i.exec(line);
      if (search) {
        if (this.inFlight?.verb !== 'SEARCH') this.violation('unexpected-search', `SEARCH response during ${this.inFlight?.text ?? 'no command'}`, line);
        if (this.inFlight && !this.inFlight.uid) {
          for (const n of search[1]!.trim().split(' ').filter(Boolean).map(Number)) {
            if (n < 1 || n > this.exists) this.violation('search-seq-out-of-range', `SEARCH result ${n} outside 1..${this.exists}`, line);
          }
        }
        return;
      }
      // The other responses the commands sent may bring; anything else is not in the model.
      if (!/^\* (?:OK|NO|BAD|CAPABILITY|ENABLED|LIST|LSUB|ID|NAMESPACE)(?: |$)/i.test(line)) this.violation('unknown-response', 'an untagged response the model does not know', line);
    } catch (err) {
      this.violation('unparsable-response', (err as Error).message, line);
    }
  }

  private onExists(n: number, line: string): void {
    if (n < this.exists) {
      this.violation('exists-decreased', `EXISTS ${n} below the ${this.exists} known (only EXPUNGE may lower it)`, line);
      this.uids.length = n;
      this.flags.length = n;
      return;
    }
    while (this.uids.length < n) {
      this.existsSeen++;
      this.uids.push(undefined);
      this.flags.push(undefined);
    }
  }

  private onExpunge(n: number, line: string): void {
    const f = this.inFlight;
    if (f && !f.uid && (f.verb === 'FETCH' || f.verb === 'STORE' || f.verb === 'SEARCH')) {
      this.violation('expunge-during-seq-command', `EXPUNGE during ${f.text} (RFC 3501 §7.4.1)`, line);
    } else if (!f && !this.idling) {
      this.violation('expunge-outside-command', 'EXPUNGE while no command is under way (RFC 3501 §5.3)', line);
    }
    if (n < 1 || n > this.exists) {
      this.violation('expunge-seq-out-of-range', `EXPUNGE ${n} outside 1..${this.exists}`, line);
      return;
    }
    const uid = this.uids[n - 1];
    if (uid !== undefined) this.expunged.add(uid);
    this.uids.splice(n - 1, 1);
    this.flags.splice(n - 1, 1);
  }

  private onFetch(n: number, data: string, line: string): void {
    if (n < 1 || n > this.exists) {
      this.violation('fetch-seq-out-of-range', `FETCH ${n} outside 1..${this.exists}`, line);
      return;
    }
    const items = fetchItems(data);
    const uidItem = items.get('UID');
    let uid = this.uids[n - 1];
    if (uidItem !== undefined) {
      const u = Number(uidItem);
      if (uid !== undefined && uid !== u) this.violation('uid-changed', `sequence ${n} had UID ${uid}, now ${u}`, line);
      else if (uid === undefined) this.learnUid(n, u, line);
      uid = u;
    }
    const flagsItem = items.get('FLAGS');
    if (flagsItem !== undefined) {
      const flags = atoms(flagsItem);
      for (const flag of flags) {
        if (isKeyword(flag) && !this.defined.has(flag.toLowerCase())) {
          this.violation('keyword-before-flags', `keyword ${flag} in FETCH FLAGS before a FLAGS response announced it (RFC 3501 §7.2.6)`, line);
        }
      }
      this.flags[n - 1] = new Set(flags.map((f) => f.toLowerCase()).filter((f) => f !== '\\recent'));
      if (uid !== undefined) this.flagSource.set(uid, `${this.inFlight?.text ?? (this.idling ? 'IDLE' : 'no command')} → ${line.slice(0, 200)}`);
      const f = this.inFlight;
      if (this.condstore && (!f || f.verb !== 'FETCH') && (uidItem === undefined || !items.has('MODSEQ'))) {
        this.violation('condstore-fetch-without-uid-modseq', `flag change reported without UID and MODSEQ while CONDSTORE is on (RFC 7162 §3.2), during ${f?.text ?? (this.idling ? 'IDLE' : 'no command')}`, line);
      }
    }
    const modseqItem = items.get('MODSEQ');
    if (modseqItem !== undefined && uid !== undefined) {
      const modseq = Number(atoms(modseqItem)[0]);
      const flags = flagsItem === undefined ? undefined : [...this.flags[n - 1]!].sort().join(' ');
      const before = this.modseqs.get(uid);
      if (before && modseq < before.modseq) this.violation('modseq-decreased', `MODSEQ of UID ${uid} went from ${before.modseq} to ${modseq}`, line);
      else if (before && modseq === before.modseq && flags !== undefined && before.flags !== undefined && flags !== before.flags) {
        this.violation('modseq-not-increased', `flags of UID ${uid} changed from (${before.flags}) to (${flags}) with the same MODSEQ ${modseq} (RFC 7162 §3)`, line);
      }
      if (!before || modseq > before.modseq) this.modseqs.set(uid, { modseq, ...(flags !== undefined ? { flags } : {}) });
      else if (modseq === before.modseq && before.flags === undefined && flags !== undefined) before.flags = flags;
      this.maxModseq.set(this.mailbox!, Math.max(this.maxModseq.get(this.mailbox!) ?? 0, modseq));
    }
  }

  private learnUid(n: number, uid: number, line: string): void {
    if (this.expunged.has(uid)) this.violation('expunged-uid-back', `UID ${uid} reported again after its EXPUNGE`, line);
    for (let k = n - 2; k >= 0; k--) {
      const below = this.uids[k];
      if (below === undefined) continue;
      if (below >= uid) this.violation('uid-order', `UID ${uid} at sequence ${n}, but UID ${below} at sequence ${k + 1}`, line);
      break;
    }
    for (let k = n; k < this.uids.length; k++) {
      const above = this.uids[k];
      if (above === undefined) continue;
      if (above <= uid) this.violation('uid-order', `UID ${uid} at sequence ${n}, but UID ${above} at sequence ${k + 1}`, line);
      break;
    }
    this.uids[n - 1] = uid;
    this.sawUid(this.mailbox!, uid);
  }

  /** A UID of `mailbox` this client has seen (FETCH, APPENDUID, COPYUID). */
  sawUid(mailbox: string, uid: number): void {
    this.maxUid.set(mailbox, Math.max(this.maxUid.get(mailbox) ?? 0, uid));
  }

  private onCode(code: string, args: string, line: string): void {
    if (code === 'UIDVALIDITY' && this.mailbox) this.checkUidValidity(this.mailbox, Number(args), line);
    if (code === 'UIDNEXT' && this.mailbox) this.checkUidNext(this.mailbox, Number(args), line);
    if (code === 'HIGHESTMODSEQ' && this.mailbox) {
      const max = this.maxModseq.get(this.mailbox) ?? 0;
      if (Number(args) < max) this.violation('highestmodseq-below-seen', `HIGHESTMODSEQ ${args} of ${this.mailbox}, but MODSEQ ${max} was seen before`, line);
    }
    if (code === 'COPYUID') {
      const [validity, , uids] = args.split(' ');
      this.sawCopied(Number(validity), uids ?? '', line);
    }
  }

  /** APPENDUID or COPYUID: the destination's UIDVALIDITY, and UIDs now seen there. */
  private sawCopied(validity: number, uids: string, line: string): void {
    const target = this.targetMailbox();
    if (!target) return;
    this.checkUidValidity(target, validity, line);
    if (uids) this.sawUid(target, Math.max(...expandSet(uids)));
  }

  private checkUidValidity(mailbox: string, value: number, line: string): void {
    const key = `${this.user}\0${mailbox}`;
    const known = this.log.uidValidity.get(key);
    if (known === undefined) this.log.uidValidity.set(key, value);
    else if (known !== value) this.violation('uidvalidity-changed', `UIDVALIDITY of ${mailbox} was ${known}, now ${value}`, line);
  }

  private checkUidNext(mailbox: string, value: number, line: string): void {
    const max = this.maxUid.get(mailbox) ?? 0;
    if (value <= max) this.violation('uidnext-not-above-seen-uid', `UIDNEXT ${value} of ${mailbox}, but UID ${max} was seen before`, line);
  }
}
