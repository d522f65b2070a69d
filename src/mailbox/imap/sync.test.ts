// What a client that tracks the protocol's state may see (issue 10): keywords announced by FLAGS before any FETCH
// shows them (RFC 3501 §7.2.6, §2.3.2), nothing but BYE and the tagged OK once LOGOUT is received, and the other
// sessions' updates (EXISTS before FETCH of new messages, EXPUNGE numbers, no EXPUNGE during sequence commands).
import fc from 'fast-check';
import { beforeEach, describe, expect, test } from 'vitest';
import { FORWARD, MULTIPART, SIMPLE } from './fixtures.test-helper.js';
import { BOB, last, useImapServer } from './imap-fixture.test-helper.js';
import { RawClient } from './raw-client.test-helper.js';
import { STORES, type StoreFactory } from './stores.test-helper.js';

/**
 * A client's model of the defined flags: every keyword a FETCH shows must have been announced by FLAGS (with a
 * PERMANENTFLAGS that lists it, in a read-write mailbox) earlier on the connection. Feed it every line in order.
 */
class FlagModel {
  readonly defined = new Set<string>();
  readonly permanent = new Set<string>();
  readonly violations: string[] = [];

  constructor(private readonly readWrite = true) {}

  feed(lines: string[]): string[] {
    for (const line of lines) {
      const flags = /^\* FLAGS \(([^)]*)\)/.exec(line);
      if (flags) {
        this.defined.clear();
        for (const f of flags[1]!.split(' ').filter(Boolean)) this.defined.add(f);
      }
      const perm = /^\* OK \[PERMANENTFLAGS \(([^)]*)\)\]/.exec(line);
      if (perm) {
        this.permanent.clear();
        for (const f of perm[1]!.split(' ').filter(Boolean)) this.permanent.add(f);
      }
      const fetch = /^\* \d+ FETCH \(.*FLAGS \(([^)]*)\)/.exec(line);
      if (fetch) {
        for (const f of fetch[1]!.split(' ').filter(Boolean)) {
          if (f.startsWith('\\')) continue;
          if (!this.defined.has(f)) this.violations.push(`${f} in "${line}" before FLAGS announced it`);
          else if (this.readWrite && !this.permanent.has(f)) this.violations.push(`${f} in "${line}" before PERMANENTFLAGS listed it`);
        }
      }
    }
    return lines;
  }
}

describe.each(STORES)('on the %s', (_name, makeStore: StoreFactory) => {
  const f = useImapServer(makeStore);
  const login = () => f.login();

  /** A session with INBOX selected, and its flag model fed with the SELECT responses. */
  async function selected(command = 'SELECT INBOX'): Promise<{ c: RawClient; model: FlagModel }> {
    const c = await login();
    const model = new FlagModel(command.startsWith('SELECT'));
    const res = model.feed(await c.command('S', command));
    expect(last(res)).toMatch(/^S OK/);
    return { c, model };
  }

  beforeEach(async () => {
    await f.store.deliver(BOB, SIMPLE);
    await f.store.deliver(BOB, MULTIPART);
    await f.store.deliver(BOB, FORWARD);
  });

  describe('keywords are announced before a FETCH shows them', () => {
    test('STORE of a new keyword: FLAGS and PERMANENTFLAGS come before its FETCH', async () => {
      const { c, model } = await selected();
      const res = model.feed(await c.command('a', 'STORE 1 +FLAGS ($Label1)'));
      expect(res).toEqual([
        '* FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft $Label1)',
        '* OK [PERMANENTFLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft $Label1 \\*)] Flags permitted',
        '* 1 FETCH (FLAGS ($Label1 \\Recent))',
        'a OK STORE completed',
      ]);
      // Announced once: the next use says nothing more about FLAGS.
      expect(model.feed(await c.command('b', 'STORE 2 +FLAGS ($Label1)'))).toEqual(['* 2 FETCH (FLAGS ($Label1 \\Recent))', 'b OK STORE completed']);
      expect(model.violations).toEqual([]);
    });

    test('STORE .SILENT of a new keyword, then FETCH in the same pipeline', async () => {
      const { c, model } = await selected();
      c.send('a UID STORE 3 +FLAGS.SILENT ($Silent)\r\nb FETCH 3 FLAGS\r\n');
      model.feed(await c.until('b'));
      expect(model.violations).toEqual([]);
      expect(model.defined.has('$Silent')).toBe(true);
    });

    test("another session's new keyword is announced before this session's FETCH shows it", async () => {
      const { c: a, model } = await selected();
      const { c: b } = await selected();
      await b.command('x', 'STORE 1 +FLAGS ($Other)');
      const res = model.feed(await a.command('f', 'FETCH 1:3 (UID FLAGS)'));
      expect(model.violations).toEqual([]);
      expect(res.indexOf('* FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft $Other)')).toBe(0);
      expect(res[1]).toBe('* OK [PERMANENTFLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft $Other \\*)] Flags permitted');
      expect(res).toContain('* 1 FETCH (UID 1 FLAGS ($Other \\Recent))');
    });

    test("another session's new keyword while this one STOREs: FLAGS before both FETCHes", async () => {
      const { c: a, model } = await selected();
      const { c: b } = await selected();
      await b.command('x', 'STORE 2 +FLAGS ($Theirs)');
      model.feed(await a.command('s', 'STORE 2 +FLAGS ($Mine)'));
      model.feed(await a.command('n', 'NOOP'));
      expect(model.violations).toEqual([]);
      expect([...model.defined]).toEqual(expect.arrayContaining(['$Theirs', '$Mine']));
    });

    test('a keyword set elsewhere while FETCH is reading messages is announced before the next FETCH shows it', async () => {
      const { c, model } = await selected();
      // The store is read for message 1's body; meanwhile another session sets a new keyword on message 3.
      const read = f.store.read.bind(f.store);
      let raced = false;
      f.store.read = async (user, mailbox, uid) => {
        const data = await read(user, mailbox, uid);
        if (uid === 1 && !raced) {
          raced = true;
          await f.store.setFlags(BOB, 'INBOX', [3], ['$Race'], 'add');
        }
        return data;
      };
      model.feed(await c.command('f', 'FETCH 1:3 (FLAGS BODY.PEEK[HEADER])'));
      expect(raced).toBe(true);
      expect(model.violations).toEqual([]);
      expect(model.defined.has('$Race')).toBe(true);
    });

    test('EXAMINE: a keyword set elsewhere is announced by FLAGS before FETCH', async () => {
      const { c: a, model } = await selected('EXAMINE INBOX');
      const { c: b } = await selected();
      await b.command('x', 'STORE 3 +FLAGS ($ReadOnly)');
      model.feed(await a.command('f', 'FETCH 3 FLAGS'));
      expect(model.violations).toEqual([]);
      expect(model.defined.has('$ReadOnly')).toBe(true);
    });

    test('IDLE: a new keyword and a new message carrying one are announced in order', async () => {
      const { c: a, model } = await selected();
      const { c: b } = await selected();
      a.send('i IDLE\r\n');
      expect(await a.line()).toBe('+ idling');
      await b.command('x', 'STORE 1 +FLAGS ($Idle)');
      const lines = [await a.line(), await a.line(), await a.line()];
      model.feed(lines);
      expect(lines[2]).toBe('* 1 FETCH (UID 1 FLAGS ($Idle \\Recent))');
      await b.command('y', 'APPEND INBOX ($Appended) {5}\r\nhello');
      a.send('DONE\r\n');
      model.feed(await a.until('i'));
      model.feed(await a.command('f', 'FETCH 4 FLAGS'));
      expect(model.violations).toEqual([]);
      expect(model.defined.has('$Appended')).toBe(true);
    });
  });

  describe('nothing but BYE and the tagged OK once LOGOUT is received', () => {
    test('pending expunges, flag changes and new messages are not sent after LOGOUT', async () => {
      const { c: a } = await selected();
      const { c: b } = await selected();
      await b.command('x', 'STORE 1 +FLAGS (\\Deleted)');
      await b.command('y', 'STORE 2 +FLAGS ($Gone)');
      await b.command('z', 'EXPUNGE');
      await f.store.deliver(BOB, SIMPLE);
      expect(await a.command('l', 'LOGOUT')).toEqual(['* BYE imap.example.test logging out', 'l OK LOGOUT completed']);
      await a.waitClosed();
    });

    test('LOGOUT pipelined after FETCH: the updates go with FETCH, none after BYE', async () => {
      const { c: a } = await selected();
      const { c: b } = await selected();
      await b.command('x', 'STORE 3 +FLAGS (\\Deleted \\Seen)');
      await b.command('y', 'EXPUNGE');
      a.send('f FETCH 1 UID\r\nl LOGOUT\r\n');
      const lines = await a.until('l');
      const bye = lines.indexOf('* BYE imap.example.test logging out');
      expect(lines.slice(bye)).toEqual(['* BYE imap.example.test logging out', 'l OK LOGOUT completed']);
      // The expunge held back during FETCH is not sent after LOGOUT either.
      expect(lines.some((l) => /EXPUNGE/.test(l))).toBe(false);
      await a.waitClosed();
    });

    test('LOGOUT during a change storm: nothing after BYE', async () => {
      const { c: a } = await selected();
      const { c: b } = await selected();
      b.send('x1 STORE 1:3 +FLAGS ($Storm)\r\nx2 STORE 1:3 -FLAGS ($Storm)\r\nx3 STORE 1:3 +FLAGS (\\Flagged)\r\n');
      a.send('l LOGOUT\r\n');
      const lines = await a.until('l');
      await b.until('x3');
      expect(lines.slice(lines.indexOf('* BYE imap.example.test logging out'))).toEqual(['* BYE imap.example.test logging out', 'l OK LOGOUT completed']);
      await a.waitClosed();
    });

    test('autologout: BYE is the last thing sent, whatever changes after it', async () => {
      await f.restart({ idleTimeoutMs: 200 });
      const { c: a } = await selected();
      expect(await a.line(3000)).toBe('* BYE Autologout; idle for too long');
      await f.store.setFlags(BOB, 'INBOX', [1], ['$After'], 'add');
      await f.store.remove(BOB, 'INBOX', [2]);
      await a.waitClosed();
      await expect(a.line(500)).rejects.toThrow(/closed/);
    });
  });

  describe('untagged updates of other sessions', () => {
    test('EXISTS comes before any FETCH of a new message; EXPUNGE numbers are those the client knows', async () => {
      const { c: a } = await selected();
      const { c: b } = await selected();
      await b.command('x', 'APPEND INBOX (\\Flagged) {5}\r\nhello');
      await b.command('y', 'STORE 2 +FLAGS.SILENT (\\Deleted)');
      await b.command('z', 'STORE 4 +FLAGS (\\Seen)');
      await b.command('e', 'EXPUNGE');
      const res = await a.command('n', 'NOOP');
      // Expunges first (numbered in the view the client has: 1..3), then the new message at its new number (b
      // saw it first, so it is \Recent there, not here).
      expect(res).toEqual(['* 2 EXPUNGE', '* 3 EXISTS', '* 2 RECENT', 'n OK NOOP completed']);
      expect(await a.command('f', 'FETCH 3 (UID FLAGS)')).toEqual(['* 3 FETCH (UID 4 FLAGS (\\Flagged \\Seen))', 'f OK FETCH completed']);
    });

    test('no EXPUNGE during FETCH, STORE or SEARCH; UID variants get it afterwards', async () => {
      const { c: a } = await selected();
      const { c: b } = await selected();
      await b.command('x', 'STORE 1 +FLAGS.SILENT (\\Deleted)');
      await b.command('y', 'EXPUNGE');
      for (const cmd of ['FETCH 1:* UID', 'STORE 3 +FLAGS.SILENT (\\Seen)', 'SEARCH ALL']) {
        expect((await a.command('c', cmd)).some((l) => / EXPUNGE$/.test(l))).toBe(false);
      }
      expect(await a.command('u', 'UID SEARCH ALL')).toEqual(['* SEARCH 2 3', '* 1 EXPUNGE', 'u OK UID SEARCH completed']);
    });

    test('concurrent sessions (seeded, two with QRESYNC): every untagged response fits each client\'s view, and the views converge', async () => {
      const seed = Number(process.env.IMAP_SYNC_SEED ?? 10_2026);
      // fast-check's generator, seeded: the same choices on every machine.
      const draws = fc.sample(fc.nat({ max: 1_000_000 }), { seed, numRuns: 1000 });
      let next = 0;
      const random = () => draws[next++ % draws.length]! / 1_000_001;
      const pick = <T>(xs: T[]) => xs[Math.floor(random() * xs.length)]!;
      const sessions = await Promise.all(
        [false, false, true, true].map(async (qresync) => {
          const c = await login();
          if (qresync) await c.command('e', 'ENABLE QRESYNC');
          const model = new FlagModel();
          expect(last(model.feed(await c.command('S', 'SELECT INBOX')))).toMatch(/^S OK/);
          return { c, model, qresync, exists: 3 };
        }),
      );
      const violations: string[] = [];
      let operations = 0;

      /** Sends one command and checks its responses against the session's view (sequence numbers, EXPUNGE rules). */
      async function run(s: (typeof sessions)[number], tag: string, command: string): Promise<void> {
        const lines = s.model.feed(await s.c.command(tag, command, 5000));
        operations++;
        const sequenceCommand = /^(FETCH|STORE|SEARCH|COPY)\b/.test(command);
        for (const line of lines) {
          let m: RegExpExecArray | null;
          if ((m = /^\* (\d+) EXPUNGE$/.exec(line))) {
            if (sequenceCommand) violations.push(`${line} during ${command}`);
            if (s.qresync) violations.push(`${line}: EXPUNGE after ENABLE QRESYNC`);
            if (Number(m[1]) > s.exists) violations.push(`${line} beyond ${s.exists} EXISTS`);
            s.exists--;
          } else if ((m = /^\* VANISHED (?!\(EARLIER\))(\S+)$/.exec(line))) {
            if (sequenceCommand) violations.push(`${line} during ${command}`);
            if (!s.qresync) violations.push(`${line} without ENABLE QRESYNC`);
            s.exists -= m[1]!.split(',').reduce((n, r) => n + (r.includes(':') ? Number(r.split(':')[1]) - Number(r.split(':')[0]) + 1 : 1), 0);
          } else if ((m = /^\* (\d+) EXISTS$/.exec(line))) {
            if (Number(m[1]) < s.exists) violations.push(`${line} shrinks ${s.exists} without EXPUNGE`);
            s.exists = Number(m[1]);
          } else if ((m = /^\* (\d+) FETCH /.exec(line))) {
            if (Number(m[1]) > s.exists || Number(m[1]) < 1) violations.push(`${line} outside 1..${s.exists}`);
          }
        }
        if (!last(lines).startsWith(`${tag} OK`)) violations.push(`${command}: ${last(lines)}`);
      }

      const delivering = (async () => {
        for (let i = 0; i < 10; i++) await f.store.deliver(BOB, SIMPLE);
      })();
      await Promise.all(
        sessions.map(async (s, n) => {
          for (let i = 0; i < 40; i++) {
            const seq = s.exists ? 1 + Math.floor(random() * s.exists) : 0;
            const keyword = `$k${Math.floor(random() * 12)}`;
            const choices = ['NOOP', 'FETCH 1:* (FLAGS)', 'UID FETCH 1:* (UID FLAGS)', 'SEARCH ALL', 'UID SEARCH ALL', `APPEND INBOX (${keyword}) {5+}\r\nhello`, 'EXPUNGE'];
            if (seq) choices.push(`STORE ${seq} +FLAGS (${keyword})`, `STORE ${seq} -FLAGS (${keyword})`, `STORE ${seq} +FLAGS.SILENT (\\Deleted)`, `FETCH ${seq} (UID FLAGS)`);
            await run(s, `c${n}-${i}`, pick(choices));
          }
        }),
      );
      await delivering;
      const stored = await f.store.messages(BOB, 'INBOX');
      for (const [n, s] of sessions.entries()) {
        await run(s, `n${n}`, 'NOOP');
        const lines = await s.c.command(`v${n}`, 'FETCH 1:* (UID FLAGS)');
        const view = lines.slice(0, -1).map((l) => /UID (\d+) FLAGS \(([^)]*)\)/.exec(l)!).map((m) => [Number(m[1]), m[2]!.split(' ').filter((x) => x && x !== '\\Recent').sort()]);
        expect(view, `session ${n} converges (seed ${seed})`).toEqual(stored.map((m) => [m.uid, [...m.flags].sort()]));
        expect(s.exists).toBe(stored.length);
        expect(await s.c.command(`l${n}`, 'LOGOUT')).toEqual(['* BYE imap.example.test logging out', `l${n} OK LOGOUT completed`]);
      }
      expect({ seed, operations, violations: [...violations, ...sessions.flatMap((s) => s.model.violations)] }).toEqual({ seed, operations: 4 * 41, violations: [] });
    });
  });
});
