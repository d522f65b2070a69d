// The IMAP figure of `npm run bench`: concurrent clients each repeating login → select → fetch → store → expunge →
// append → logout on one shared INBOX, as fast as the server lets them, while checking every response against the
// protocol state the client may legally see. Used the same way for maillab's IMAP server and for Dovecot.
//
// A state error is a response that violates the state a careful client keeps (the kind that makes mbsync or
// Thunderbird desynchronise): a FETCH or EXPUNGE whose sequence number is beyond EXISTS (or zero), an EXISTS that
// shrinks without EXPUNGE, a keyword in FETCH FLAGS that no FLAGS response announced (RFC 3501 §7.2.6), and anything
// after LOGOUT other than BYE and the tagged OK. Command failures (NO/BAD, a dropped connection) are counted apart.
import net from 'node:net';

export interface ImapTarget {
  host: string;
  port: number;
  user: string;
  pass: string;
}

export interface CycleResult {
  cycles: number;
  seconds: number;
  /** State errors by kind. */
  errors: Record<string, number>;
  /** Commands refused (tagged NO/BAD) or connections lost, by kind. */
  failures: Record<string, number>;
  /** A few examples of each error kind, with the response line. */
  examples: string[];
}

/** Keywords the STORE step sets, a small set so Maildir-based servers (Dovecot: 26 per mailbox) never run out. */
const KEYWORDS = Array.from({ length: 8 }, (_, i) => `$bench${i}`);
const EXAMPLES_PER_KIND = 3;

class Tally {
  readonly errors: Record<string, number> = {};
  readonly failures: Record<string, number> = {};
  readonly examples: string[] = [];
  error(kind: string, detail: string): void {
    this.errors[kind] = (this.errors[kind] ?? 0) + 1;
    if (this.errors[kind]! <= EXAMPLES_PER_KIND) this.examples.push(`${kind}: ${detail.slice(0, 200)}`);
  }
  failure(kind: string): void {
    this.failures[kind] = (this.failures[kind] ?? 0) + 1;
  }
}

/** One response: an untagged or continuation line, or a tagged completion; literals inlined as `{n}` + bytes. */
interface Response {
  line: string;
}

/** A minimal IMAP connection: writes commands, reads responses (literals included) one at a time. */
class Connection {
  private buffer = Buffer.alloc(0);
  private waiting: ((r: Response | Error) => void) | undefined;
  private queue: (Response | Error)[] = [];
  private ended: Error | undefined;

  private constructor(private readonly socket: net.Socket) {
    socket.on('data', (d: Buffer) => {
      this.buffer = Buffer.concat([this.buffer, d]);
      this.parse();
    });
    const end = (err?: Error) => {
      this.ended ??= err ?? new Error('connection closed');
      this.push(this.ended);
    };
    socket.on('error', end);
    socket.on('close', () => end());
  }

  static open(target: ImapTarget, timeoutMs: number): Promise<Connection> {
    return new Promise((resolve, reject) => {
      const socket = net.connect({ host: target.host, port: target.port });
      socket.setNoDelay(true);
      socket.setTimeout(timeoutMs, () => socket.destroy(new Error(`no data for ${timeoutMs} ms`)));
      socket.once('connect', () => resolve(new Connection(socket)));
      socket.once('error', reject);
    });
  }

  private parse(): void {
    for (;;) {
      let end = 0;
      let line = '';
      // A response line may carry literals: `... {n}\r\n<n bytes>...\r\n`.
      for (;;) {
        const nl = this.buffer.indexOf('\r\n', end);
        if (nl < 0) return;
        line += this.buffer.subarray(end, nl).toString('latin1');
        const literal = /\{(\d+)\+?\}$/.exec(line);
        if (!literal) {
          end = nl + 2;
          break;
        }
        const size = Number(literal[1]);
        if (this.buffer.length < nl + 2 + size) return;
        line += '\r\n' + this.buffer.subarray(nl + 2, nl + 2 + size).toString('latin1');
        end = nl + 2 + size;
      }
      this.buffer = this.buffer.subarray(end);
      this.push({ line });
    }
  }

  private push(r: Response | Error): void {
    const w = this.waiting;
    if (w) {
      this.waiting = undefined;
      w(r);
    } else this.queue.push(r);
  }

  next(): Promise<Response> {
    const r = this.queue.shift();
    if (r) return r instanceof Error ? Promise.reject(r) : Promise.resolve(r);
    if (this.ended) return Promise.reject(this.ended);
    return new Promise((resolve, reject) => (this.waiting = (x) => (x instanceof Error ? reject(x) : resolve(x))));
  }

  write(data: string): void {
    this.socket.write(data, 'latin1');
  }

  close(): void {
    this.socket.destroy();
  }
}

/** What the client knows of the selected mailbox, and the checks every untagged response goes through. */
class MailboxState {
  exists = 0;
  selected = false;
  loggedOut = false;
  /** Flags announced by FLAGS responses (keywords in lower case: they compare case-insensitively). */
  announced = new Set<string>();
  uids: number[] = [];

  constructor(private readonly tally: Tally) {}

  untagged(line: string): void {
    if (this.loggedOut) {
      if (!/^\* BYE\b/i.test(line)) this.tally.error('response after LOGOUT', line);
      return;
    }
    let m: RegExpExecArray | null;
    if ((m = /^\* FLAGS \(([^)]*)\)/i.exec(line))) {
      this.announced = new Set(m[1]!.split(/\s+/).filter(Boolean).map((f) => f.toLowerCase()));
    } else if ((m = /^\* (\d+) EXISTS\b/i.exec(line))) {
      const n = Number(m[1]);
      if (this.selected && n < this.exists) this.tally.error('EXISTS shrank without EXPUNGE', `${line} (EXISTS was ${this.exists})`);
      this.exists = n;
    } else if ((m = /^\* (\d+) EXPUNGE\b/i.exec(line))) {
      const n = Number(m[1]);
      if (n < 1 || n > this.exists) this.tally.error('EXPUNGE beyond EXISTS', `${line} (EXISTS ${this.exists})`);
      else {
        this.exists--;
        this.uids.splice(n - 1, 1);
      }
    } else if ((m = /^\* (\d+) FETCH \((.*)\)$/is.exec(line))) {
      const n = Number(m[1]);
      if (n < 1 || n > this.exists) this.tally.error('FETCH beyond EXISTS', `${line} (EXISTS ${this.exists})`);
      const flags = /\bFLAGS \(([^)]*)\)/i.exec(m[2]!);
      if (flags) {
        for (const f of flags[1]!.split(/\s+/).filter(Boolean)) {
          if (!f.startsWith('\\') && !this.announced.has(f.toLowerCase())) this.tally.error('keyword in FETCH FLAGS before FLAGS announced it', line);
        }
      }
      const uid = /\bUID (\d+)/i.exec(m[2]!);
      if (uid && n >= 1 && n <= this.exists) this.uids[n - 1] = Number(uid[1]);
    }
  }
}

let messageSerial = 0;

function appendMessage(): string {
  const n = ++messageSerial;
  return `From: alice@sender.test\r\nTo: bob@receiver.test\r\nSubject: imap cycle ${n}\r\nMessage-ID: <imap-cycle-${process.pid}-${n}@sender.test>\r\nDate: ${new Date().toUTCString()}\r\n\r\n${'The quick brown fox jumps over the lazy dog.\r\n'.repeat(10)}`;
}

/**
 * One session: runs `steps` (login, select, ...) sending each command and reading until its tagged completion,
 * every untagged response going through the state checks.
 */
class Session {
  private tag = 0;
  readonly state: MailboxState;

  constructor(private readonly conn: Connection, private readonly tally: Tally) {
    this.state = new MailboxState(tally);
  }

  /** Sends a command (with an optional literal, sent after the server's continuation) and waits for its completion. */
  async command(text: string, literal?: string): Promise<{ ok: boolean; line: string }> {
    const tag = `c${++this.tag}`;
    if (literal === undefined) this.conn.write(`${tag} ${text}\r\n`);
    else this.conn.write(`${tag} ${text} {${Buffer.byteLength(literal, 'latin1')}}\r\n`);
    let literalSent = literal === undefined;
    for (;;) {
      const { line } = await this.conn.next();
      if (line.startsWith('+')) {
        if (!literalSent) {
          this.conn.write(`${literal}\r\n`);
          literalSent = true;
        }
        continue;
      }
      if (line.startsWith('* ')) {
        this.state.untagged(line);
        continue;
      }
      if (line.startsWith(`${tag} `)) {
        const ok = /^\S+ OK\b/i.test(line);
        if (!ok) this.tally.failure(`${text.split(' ')[0]} ${/^\S+ (\w+)/.exec(line)?.[1] ?? '?'}`);
        return { ok, line };
      }
      this.tally.error('unexpected line', line);
    }
  }
}

/** One full cycle on a fresh connection; resolves true when every step succeeded. */
async function cycle(target: ImapTarget, tally: Tally, random: () => number): Promise<boolean> {
  const conn = await Connection.open(target, 20_000);
  try {
    const greeting = await conn.next();
    if (!/^\* OK\b/i.test(greeting.line)) {
      tally.failure('greeting');
      return false;
    }
    const s = new Session(conn, tally);
    if (!(await s.command(`LOGIN "${target.user}" "${target.pass}"`)).ok) return false;
    s.state.selected = false;
    if (!(await s.command('SELECT INBOX')).ok) return false;
    s.state.selected = true;
    if (s.state.exists > 0 && !(await s.command('FETCH 1:* (UID FLAGS)')).ok) return false;
    const known = s.state.uids.filter((u) => u > 0);
    if (known.length > 0) {
      const uid = known[Math.floor(random() * known.length)]!;
      const keyword = KEYWORDS[Math.floor(random() * KEYWORDS.length)]!;
      if (!(await s.command(`UID STORE ${uid} +FLAGS (\\Deleted ${keyword})`)).ok) return false;
    }
    if (!(await s.command('EXPUNGE')).ok) return false;
    if (!(await s.command('APPEND INBOX (\\Seen)', appendMessage())).ok) return false;
    s.state.loggedOut = true;
    const bye = await s.command('LOGOUT');
    return bye.ok;
  } catch (err) {
    tally.failure(`connection: ${err instanceof Error ? err.message : String(err)}`);
    return false;
  } finally {
    conn.close();
  }
}

/** Appends `count` messages to the target's INBOX (one session), so every cycle finds messages to fetch and store. */
export async function seedMailbox(target: ImapTarget, count: number): Promise<void> {
  const tally = new Tally();
  const conn = await Connection.open(target, 20_000);
  try {
    await conn.next();
    const s = new Session(conn, tally);
    if (!(await s.command(`LOGIN "${target.user}" "${target.pass}"`)).ok) throw new Error(`seeding ${target.host}: LOGIN failed`);
    for (let i = 0; i < count; i++) {
      const r = await s.command('APPEND INBOX', appendMessage());
      if (!r.ok) throw new Error(`seeding ${target.host}: ${r.line}`);
    }
    await s.command('LOGOUT');
  } finally {
    conn.close();
  }
}

/** `clients` concurrent clients repeat the cycle for `seconds`; cycles in flight at the deadline finish and count. */
export async function runCycles(target: ImapTarget, clients: number, seconds: number): Promise<CycleResult> {
  const tally = new Tally();
  // Which message each STORE picks is random; the interleaving of ten clients is the machine's anyway.
  const random = Math.random;
  let cycles = 0;
  const t0 = performance.now();
  const deadline = t0 + seconds * 1000;
  const worker = async () => {
    while (performance.now() < deadline) {
      if (await cycle(target, tally, random)) cycles++;
    }
  };
  await Promise.all(Array.from({ length: clients }, worker));
  const elapsed = (performance.now() - t0) / 1000;
  return { cycles, seconds: elapsed, errors: tally.errors, failures: tally.failures, examples: tally.examples };
}

export function total(counts: Record<string, number>): number {
  return Object.values(counts).reduce((a, b) => a + b, 0);
}
