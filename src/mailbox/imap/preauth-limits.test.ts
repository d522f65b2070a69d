// Before authentication a client gets nothing big read from it (issue 9, finding 2): no literal over 64 KiB in
// any state (a command, an AUTHENTICATE continuation line, a LOGIN literal, synchronising or not), no line over
// the line limit. A refused synchronising literal gets a tagged error (its client waits); anything else over a
// limit gets its answer, a BYE and the end of the connection, and the server reads no further.
import net from 'node:net';
import { afterEach, beforeEach, describe, expect, test } from 'vitest';
import { EventLog } from '../../shared/events.js';
import { startImap, type RunningImap } from './index.js';
import { MemoryStore } from './memory-store.test-helper.js';
import { RawClient } from './raw-client.test-helper.js';

const BOB = 'bob@example.test';
const MiB = 1024 * 1024;
/** What each hostile connection tries to send. */
const FLOOD = 16 * MiB;

let server: RunningImap;
let port: number;
const sockets: net.Socket[] = [];

beforeEach(async () => {
  const store = new MemoryStore([{ address: BOB, password: 'secret' }]);
  server = await startImap({ store, host: '127.0.0.1', port: 0, hostname: 'imap.example.test', events: new EventLog('mailbox') });
  port = server.endpoint.port;
});

afterEach(async () => {
  for (const s of sockets.splice(0)) s.destroy();
  await server.stop();
});

/** A raw connection that keeps what the server says (as text) and knows when the server ended it. */
class Hostile {
  received = '';
  /** The server ended the connection (FIN or reset). */
  readonly ended: Promise<void>;
  private waiters: Array<() => void> = [];

  constructor(readonly socket: net.Socket) {
    sockets.push(socket);
    socket.on('data', (chunk: Buffer) => {
      this.received += chunk.toString('latin1');
      for (const w of this.waiters.splice(0)) w();
    });
    socket.on('error', () => undefined); // EPIPE / ECONNRESET once the server has closed: expected
    this.ended = new Promise((resolve) => {
      socket.once('end', () => resolve());
      socket.once('close', () => resolve());
    });
  }

  static async connect(): Promise<Hostile> {
    const socket = net.connect({ host: '127.0.0.1', port });
    await new Promise<void>((resolve, reject) => socket.once('connect', resolve).once('error', reject));
    const h = new Hostile(socket);
    await h.waitFor(/^\* OK .*\r\n/m);
    return h;
  }

  /** Waits until what was received matches, failing loudly after `timeoutMs`. */
  async waitFor(re: RegExp, timeoutMs = 3000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (!re.test(this.received)) {
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`no ${re} from the server within ${timeoutMs} ms; received: ${JSON.stringify(this.received.slice(-500))}`);
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, left);
        this.waiters.push(() => {
          clearTimeout(timer);
          resolve();
        });
      });
    }
  }

  /**
   * Writes `bytes` octets of `fill` (the same 64 KiB buffer over and over: the client side holds no copies),
   * honouring back-pressure, until all are written or the server ended the connection. Returns what was written.
   */
  async flood(bytes: number, fill = 0x78): Promise<number> {
    const chunk = Buffer.alloc(64 * 1024, fill);
    let written = 0;
    let ended = false;
    void this.ended.then(() => (ended = true));
    while (written < bytes && !ended && !this.socket.destroyed) {
      const piece = bytes - written >= chunk.length ? chunk : chunk.subarray(0, bytes - written);
      written += piece.length;
      if (!this.socket.write(piece)) {
        await Promise.race([new Promise((resolve) => this.socket.once('drain', resolve)), this.ended]);
      }
    }
    return written;
  }
}

/** Completes within `timeoutMs` or fails saying what did not happen. */
async function within<T>(what: string, promise: Promise<T>, timeoutMs = 5000): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error(`${what}: not within ${timeoutMs} ms`)), timeoutMs)));
  try {
    return await Promise.race([promise, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

describe('before authentication', () => {
  test('nothing over 64 KiB is read: literals in every form and overlong lines end the connection; memory stays flat; others unaffected', async () => {
    // A legitimate session, logged in before the attack, used after it.
    const legit = await RawClient.login(port, BOB, 'secret');
    const before = process.memoryUsage().arrayBuffers;

    // 1. A non-synchronising APPEND literal as the AUTHENTICATE continuation line (the case of the issue).
    const saslPlus = await Hostile.connect();
    saslPlus.socket.write('a AUTHENTICATE PLAIN\r\n');
    await saslPlus.waitFor(/^\+ \r\n/m);
    saslPlus.socket.write(`x APPEND INBOX {${FLOOD}+}\r\n`);
    // 2. The same, synchronising: refused at once, no continuation; then 16 MiB sent anyway, as one line.
    const saslSync = await Hostile.connect();
    saslSync.socket.write('a AUTHENTICATE PLAIN\r\n');
    await saslSync.waitFor(/^\+ \r\n/m);
    saslSync.socket.write(`x APPEND INBOX {${FLOOD}}\r\n`);
    // 3. A failing LOGIN with an APPEND pipelined behind it (the login was still pending when the literal came).
    const pipelined = await Hostile.connect();
    pipelined.socket.write(`a LOGIN bob wrong\r\nb APPEND INBOX {${FLOOD}+}\r\n`);
    // 4. A LOGIN literal (non-synchronising).
    const loginLiteral = await Hostile.connect();
    loginLiteral.socket.write(`a LOGIN {${FLOOD}+}\r\n`);
    // 5. A line without an end.
    const longLine = await Hostile.connect();
    longLine.socket.write('a LOGIN ');

    const attackers = [saslPlus, saslSync, pipelined, loginLiteral, longLine];
    // All floods at once; each stops when the server ends its connection (or, unfixed, when all is sent).
    const sent = await within('the floods', Promise.all(attackers.map((a) => a.flood(FLOOD - 1))), 10_000);
    const grown = process.memoryUsage().arrayBuffers - before;
    expect(grown, `the server buffered ${(grown / MiB).toFixed(1)} MiB of ${attackers.length} × ${FLOOD / MiB} MiB`).toBeLessThan(8 * MiB);

    await saslSync.waitFor(/^a BAD .*\r\n/m);
    for (const [i, a] of attackers.entries()) {
      await within(`attacker ${i + 1}: the server ends the connection (sent ${sent[i]} octets)`, a.ended);
      expect(a.received, `attacker ${i + 1}`).toMatch(/^\* BYE /m);
      expect(a.received, `attacker ${i + 1}`).not.toContain('Ready for literal data');
    }
    expect(saslPlus.received).toMatch(/^a BAD .*\r\n/m);
    expect(pipelined.received).toMatch(/^a NO \[AUTHENTICATIONFAILED\]/m);
    expect(pipelined.received).toMatch(/^b BAD .*Literal too large/m);
    expect(loginLiteral.received).toMatch(/^a BAD Literal too large/m);
    expect(longLine.received).toMatch(/^a BAD Command line too long/m);

    // The other session goes on, and a new one can log in.
    expect((await legit.command('n', 'SELECT INBOX')).pop()).toMatch(/^n OK/);
    const fresh = await RawClient.login(port, BOB, 'secret');
    expect((await fresh.command('n', 'NOOP')).pop()).toBe('n OK NOOP completed');
    legit.close();
    fresh.close();
  }, 20_000);

  test('a refused synchronising literal leaves the connection usable; small literals and logins still work', async () => {
    const c = await RawClient.connect(port);
    await c.line();
    c.send(`a LOGIN {${64 * 1024 + 1}}\r\n`);
    expect(await c.line()).toMatch(/^a BAD Literal too large \(at most 65536 octets\)/);
    c.send('b LOGIN {3}\r\n');
    expect(await c.line()).toMatch(/^\+ /);
    c.send('bob {6+}\r\nsecret\r\n');
    expect((await c.until('b')).pop()).toMatch(/^b OK /);
    // Once logged in, APPEND takes the big limit again.
    c.send(`c APPEND INBOX {${200 * 1024}}\r\n`);
    expect(await c.line()).toMatch(/^\+ /);
    c.send(Buffer.concat([Buffer.from('Subject: big\r\n\r\n'), Buffer.alloc(200 * 1024 - 16, 0x61), Buffer.from('\r\n')]));
    expect((await c.until('c')).pop()).toMatch(/^c OK \[APPENDUID /);
    c.close();
  });

  test('an APPEND pipelined right behind a successful LOGIN gets the APPEND limit', async () => {
    const c = await RawClient.connect(port);
    await c.line();
    const message = Buffer.concat([Buffer.from('Subject: pipelined\r\n\r\n'), Buffer.alloc(100 * 1024, 0x62)]);
    c.send(Buffer.concat([Buffer.from(`a LOGIN bob secret\r\nb APPEND INBOX {${message.length}+}\r\n`), message, Buffer.from('\r\n')]));
    expect((await c.until('a')).pop()).toMatch(/^a OK /);
    expect((await c.until('b')).pop()).toMatch(/^b OK \[APPENDUID /);
    c.close();
  });

  test('AUTHENTICATE continuation: a literal is refused, the exchange fails with BAD', async () => {
    const c = await RawClient.connect(port);
    await c.line();
    c.send('a AUTHENTICATE PLAIN\r\n');
    expect(await c.line()).toBe('+ ');
    c.send('AGJvYgBzZWNyZXQ= {10}\r\n');
    expect((await c.until('a')).pop()).toMatch(/^a BAD /);
    expect(last(await c.command('b', 'NOOP'))).toBe('b OK NOOP completed');
    c.close();
  });
});

const last = (lines: string[]) => lines[lines.length - 1]!;
