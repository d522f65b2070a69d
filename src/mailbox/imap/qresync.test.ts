// QRESYNC (RFC 7162 §3.2) and the CONDSTORE it builds on (§3.1): ENABLE, SELECT/EXAMINE (QRESYNC ...) with
// VANISHED (EARLIER) and the changed messages, VANISHED instead of EXPUNGE once enabled, UID FETCH (CHANGEDSINCE
// ... VANISHED), the CLOSED response code, STORE (UNCHANGEDSINCE ...) with [MODIFIED ...]. The RFC's examples are
// replayed on mailboxes built to have the same UIDs (the UIDVALIDITY and modseqs are ours); imapflow with qresync on.
import { ImapFlow } from 'imapflow';
import { describe, expect, test } from 'vitest';
import { SIMPLE } from './fixtures.test-helper.js';
import { BOB, last, useImapServer } from './imap-fixture.test-helper.js';
import { subtractUids, uidRanges } from './mailbox-view.js';
import type { RawClient } from './raw-client.test-helper.js';
import { STORES, type StoreFactory } from './stores.test-helper.js';

const range = (from: number, to: number) => Array.from({ length: to - from + 1 }, (_, i) => from + i);
const small = (i: number) => Buffer.from(`Subject: m${i}\r\n\r\n${i}\r\n`);

describe.each(STORES)('on the %s', (_name, makeStore: StoreFactory) => {
  const f = useImapServer(makeStore);
  const login = () => f.login();

  async function qresyncClient(): Promise<RawClient> {
    const c = await login();
    expect(await c.command('e', 'ENABLE QRESYNC')).toEqual(['* ENABLED QRESYNC', 'e OK ENABLE completed']);
    return c;
  }

  /** Delivers messages until the mailbox's UIDs reach `n`. */
  async function fill(n: number): Promise<void> {
    for (let i = 1; i <= n; i++) await f.store.append(BOB, 'INBOX', small(i));
  }

  const info = () => f.store.mailboxInfo(BOB, 'INBOX');
  const modseqOf = async (uid: number) => (await f.store.messages(BOB, 'INBOX')).find((m) => m.uid === uid)!.modseq;

  describe('ENABLE and the capability', () => {
    test('QRESYNC is advertised; ENABLE QRESYNC enables it (and CONDSTORE with it)', async () => {
      const c = await login();
      const caps = (await c.command('c', 'CAPABILITY'))[0]!.split(' ');
      expect(caps).toEqual(expect.arrayContaining(['CONDSTORE', 'QRESYNC', 'ENABLE']));
      expect(await c.command('e', 'ENABLE CONDSTORE QRESYNC')).toEqual(['* ENABLED CONDSTORE QRESYNC', 'e OK ENABLE completed']);
      await f.store.deliver(BOB, SIMPLE);
      await c.command('s', 'SELECT INBOX');
      await f.store.setFlags(BOB, 'INBOX', [1], ['\\Seen'], 'add');
      // CONDSTORE is on: MODSEQ in unsolicited FETCH.
      expect((await c.command('n', 'NOOP'))[0]).toBe(`* 1 FETCH (UID 1 FLAGS (\\Seen \\Recent) MODSEQ (${await modseqOf(1)}))`);
    });

    test('SELECT (QRESYNC ...) and UID FETCH (... VANISHED) without ENABLE QRESYNC are BAD', async () => {
      await fill(2);
      const c = await login();
      const v = (await info()).uidValidity;
      expect(await c.command('a', `SELECT INBOX (QRESYNC (${v} 1))`)).toEqual(['a BAD [CLIENTBUG] QRESYNC parameter without ENABLE QRESYNC']);
      await c.command('s', 'SELECT INBOX');
      expect(last(await c.command('b', 'UID FETCH 1:* FLAGS (CHANGEDSINCE 1 VANISHED)'))).toBe('b BAD [CLIENTBUG] VANISHED without ENABLE QRESYNC');
      await c.command('e', 'ENABLE QRESYNC');
      expect(last(await c.command('c', 'FETCH 1:* FLAGS (CHANGEDSINCE 1 VANISHED)'))).toBe('c BAD VANISHED needs UID FETCH with CHANGEDSINCE');
      expect(last(await c.command('d', 'UID FETCH 1:* FLAGS (VANISHED)'))).toBe('d BAD VANISHED needs UID FETCH with CHANGEDSINCE');
    });
  });

  describe('SELECT/EXAMINE with the QRESYNC parameter (RFC 7162 §3.2.5)', () => {
    test('§3.2.5.1 example: VANISHED (EARLIER) and the changed messages within the known UIDs, after [CLOSED]', async () => {
      await fill(566);
      // Another session saw them all first: none is \Recent here.
      const other = await login();
      await other.command('s', 'SELECT INBOX');
      other.close();
      const { uidValidity, highestModseq: since } = await info();
      await f.store.setFlags(BOB, 'INBOX', [117], ['\\Seen', '\\Answered'], 'add');
      await f.store.setFlags(BOB, 'INBOX', [119], ['\\Draft', '$MDNSent'], 'add');
      await f.store.setFlags(BOB, 'INBOX', [541], ['\\Seen', '$Forwarded'], 'add');
      await f.store.remove(BOB, 'INBOX', [41, ...range(43, 116), 118, ...range(120, 211), ...range(214, 540)]);
      await f.store.setFlags(BOB, 'INBOX', [560], ['\\Flagged'], 'add'); // outside the known UIDs: not reported
      const now = await info();

      const c = await qresyncClient();
      await c.command('t', 'SELECT Trash');
      const res = await c.command('A02', `SELECT INBOX (QRESYNC (${uidValidity} ${since} 41,43:211,214:541))`);
      expect(res).toEqual([
        '* OK [CLOSED] Previous mailbox closed',
        '* FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft $Forwarded $MDNSent)',
        '* OK [PERMANENTFLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft $Forwarded $MDNSent \\*)] Flags permitted',
        `* ${now.exists} EXISTS`,
        '* 0 RECENT',
        '* OK [UNSEEN 1] First unseen',
        `* OK [UIDVALIDITY ${uidValidity}] UIDs valid`,
        '* OK [UIDNEXT 567] Predicted next UID',
        `* OK [HIGHESTMODSEQ ${now.highestModseq}] Highest`,
        '* VANISHED (EARLIER) 41,43:116,118,120:211,214:540',
        `* 42 FETCH (UID 117 FLAGS (\\Answered \\Seen) MODSEQ (${await modseqOf(117)}))`,
        `* 43 FETCH (UID 119 FLAGS (\\Draft $MDNSent) MODSEQ (${await modseqOf(119)}))`,
        `* 46 FETCH (UID 541 FLAGS (\\Seen $Forwarded) MODSEQ (${await modseqOf(541)}))`,
        'A02 OK [READ-WRITE] SELECT completed',
      ]);
      // Without known UIDs, everything since the modseq; EXAMINE alike.
      const all = await c.command('B02', `EXAMINE INBOX (QRESYNC (${uidValidity} ${since}))`);
      expect(all[0]).toBe('* OK [CLOSED] Previous mailbox closed');
      expect(all.filter((l) => / FETCH /.test(l)).map((l) => /UID (\d+)/.exec(l)![1])).toEqual(['117', '119', '541', '560']);
      expect(all).toContain('* VANISHED (EARLIER) 41,43:116,118,120:211,214:540');
      expect(last(all)).toBe('B02 OK [READ-ONLY] EXAMINE completed');
    });

    test('§3.2.5.1: a UIDVALIDITY that changed gets a plain SELECT (the RFC text verbatim, modseq beyond 2^53)', async () => {
      await fill(3);
      await f.store.remove(BOB, 'INBOX', [2]);
      const c = await qresyncClient();
      const res = await c.command('A02', 'SELECT INBOX (QRESYNC (67890007 20050715194045000 41,43:211,214:541))');
      expect(res.filter((l) => /VANISHED| FETCH /.test(l))).toEqual([]);
      expect(last(res)).toBe('A02 OK [READ-WRITE] SELECT completed');
    });

    test('§3.2.5.2: seq-match data is accepted (the RFC text, then with this mailbox)', async () => {
      await fill(12);
      const { uidValidity, highestModseq: since } = await info();
      await f.store.remove(BOB, 'INBOX', [3, 10]);
      await f.store.setFlags(BOB, 'INBOX', [12], ['\\Seen'], 'add');
      const c = await qresyncClient();
      const rfc = await c.command(
        'B04',
        'SELECT INBOX (QRESYNC (67890007 90060115194045000 1:29997 (5000,7500,9000,9990:9999 15000,22500,27000,29970,29973,29976,29979,29982,29985,29988,29991,29994,29997)))',
      );
      expect(last(rfc)).toBe('B04 OK [READ-WRITE] SELECT completed');
      const res = await c.command('B05', `SELECT INBOX (QRESYNC (${uidValidity} ${since} 1:12 (1,5,9 1,5,9)))`);
      // (B04 claimed the messages as \Recent: none is here.)
      expect(res.filter((l) => /VANISHED| FETCH /.test(l))).toEqual(['* VANISHED (EARLIER) 3,10', `* 10 FETCH (UID 12 FLAGS (\\Seen) MODSEQ (${await modseqOf(12)}))`]);
      expect(last(await c.command('B06', `SELECT INBOX (QRESYNC (${uidValidity} ${since} 1:12 (1,5 1)))`))).toBe('B06 OK [READ-WRITE] SELECT completed');
      expect(last(await c.command('B07', `SELECT INBOX (QRESYNC (${uidValidity}))`))).toMatch(/^B07 BAD /);
      expect(last(await c.command('B08', `SELECT INBOX (QRESYNC (${uidValidity} ${since} 1:* (1)))`))).toMatch(/^B08 BAD /);
    });

    test('a store history that does not reach back far enough: every UID within the known ones not in the mailbox', async () => {
      await fill(10);
      await f.store.remove(BOB, 'INBOX', [3, 4, 7]);
      const { uidValidity } = await info();
      f.store.expungedSince = async () => ({ uids: [], complete: false });
      const c = await qresyncClient();
      const res = await c.command('a', `SELECT INBOX (QRESYNC (${uidValidity} 1 2:9))`);
      expect(res.filter((l) => /VANISHED/.test(l))).toEqual(['* VANISHED (EARLIER) 3:4,7']);
      const all = await c.command('b', `UID FETCH 1:* (UID) (CHANGEDSINCE ${(await info()).highestModseq} VANISHED)`);
      expect(all).toEqual(['* VANISHED (EARLIER) 3:4,7', 'b OK UID FETCH completed']);
    });

    test('CLOSED: sent when a selected mailbox is left by SELECT/EXAMINE, also a failing one; not on the first', async () => {
      const c = await login();
      expect((await c.command('a', 'SELECT INBOX'))[0]).not.toMatch(/CLOSED/);
      expect(await c.command('b', 'SELECT Nowhere')).toEqual(['* OK [CLOSED] Previous mailbox closed', 'b NO [NONEXISTENT] Mailbox does not exist']);
      expect((await c.command('c', 'EXAMINE INBOX'))[0]).not.toMatch(/CLOSED/);
      expect((await c.command('d', 'SELECT Trash'))[0]).toBe('* OK [CLOSED] Previous mailbox closed');
    });
  });

  describe('VANISHED once QRESYNC is enabled (RFC 7162 §3.2.10)', () => {
    test('EXPUNGE, UID EXPUNGE, MOVE and expunges by other sessions answer with VANISHED', async () => {
      await fill(8);
      const a = await qresyncClient();
      await a.command('s', 'SELECT INBOX');
      await a.command('d', 'STORE 2,3,5 +FLAGS.SILENT (\\Deleted)');
      expect(await a.command('x', 'UID EXPUNGE 5')).toEqual(['* VANISHED 5', 'x OK UID EXPUNGE completed']);
      expect(await a.command('y', 'EXPUNGE')).toEqual(['* VANISHED 2:3', 'y OK EXPUNGE completed']);
      const trash = (await f.store.mailboxInfo(BOB, 'Trash')).uidValidity;
      expect(await a.command('m', 'UID MOVE 6 Trash')).toEqual([`* OK [COPYUID ${trash} 6 1] Moved`, '* VANISHED 6', 'm OK MOVE completed']);
      await f.store.remove(BOB, 'INBOX', [1, 8]);
      expect(await a.command('n', 'NOOP')).toEqual(['* VANISHED 1,8', 'n OK NOOP completed']);
      expect(await a.command('f', 'FETCH 1:* UID')).toEqual(['* 1 FETCH (UID 4)', '* 2 FETCH (UID 7)', 'f OK FETCH completed']);
      // A session without QRESYNC still gets EXPUNGE.
      const b = await login();
      await b.command('s', 'SELECT INBOX');
      await f.store.remove(BOB, 'INBOX', [7]);
      expect(await b.command('n', 'NOOP')).toEqual(['* 2 EXPUNGE', 'n OK NOOP completed']);
    });

    test('an expunge held back during FETCH: HIGHESTMODSEQ below it is announced, VANISHED follows later', async () => {
      await fill(3);
      const a = await qresyncClient();
      await a.command('s', 'SELECT INBOX');
      const before = (await info()).highestModseq;
      await f.store.remove(BOB, 'INBOX', [1]);
      await f.store.setFlags(BOB, 'INBOX', [2], ['\\Seen'], 'add');
      const res = await a.command('f', 'FETCH 2 (FLAGS)');
      expect(res.some((l) => /VANISHED|EXPUNGE/.test(l))).toBe(false);
      expect(res).toContain(`* 2 FETCH (UID 2 FLAGS (\\Seen \\Recent) MODSEQ (${await modseqOf(2)}))`);
      expect(res).toContain(`* OK [HIGHESTMODSEQ ${before}] Expunges pending`);
      expect(await a.command('n', 'NOOP')).toEqual(['* VANISHED 1', 'n OK NOOP completed']);
    });
  });

  describe('UID FETCH with CHANGEDSINCE and VANISHED (RFC 7162 §3.2.6)', () => {
    test('§3.2.6 example: s100 UID FETCH 300:500 (FLAGS) (CHANGEDSINCE ... VANISHED)', async () => {
      await fill(411);
      await f.store.remove(BOB, 'INBOX', [...range(1, 299), ...range(311, 403)]);
      const since = (await info()).highestModseq;
      await f.store.setFlags(BOB, 'INBOX', [404], ['\\Seen'], 'add');
      await f.store.setFlags(BOB, 'INBOX', [406], ['\\Deleted'], 'add');
      await f.store.setFlags(BOB, 'INBOX', [408], ['$NoJunk', '$AutoJunk', '$MDNSent'], 'add');
      await f.store.remove(BOB, 'INBOX', [...range(300, 310), 405, 411]);
      const other = await login();
      await other.command('s', 'SELECT INBOX');
      other.close();

      const c = await qresyncClient();
      await c.command('s', 'SELECT INBOX');
      const res = await c.command('s100', `UID FETCH 300:500 (FLAGS) (CHANGEDSINCE ${since} VANISHED)`);
      expect(res).toEqual([
        '* VANISHED (EARLIER) 300:310,405,411',
        `* 1 FETCH (UID 404 FLAGS (\\Seen) MODSEQ (${await modseqOf(404)}))`,
        `* 2 FETCH (UID 406 FLAGS (\\Deleted) MODSEQ (${await modseqOf(406)}))`,
        `* 4 FETCH (UID 408 FLAGS ($NoJunk $AutoJunk $MDNSent) MODSEQ (${await modseqOf(408)}))`,
        's100 OK UID FETCH completed',
      ]);
      // Nothing vanished since now.
      const now = (await info()).highestModseq;
      expect(await c.command('s101', `UID FETCH 1:* (FLAGS) (CHANGEDSINCE ${now} VANISHED)`)).toEqual(['s101 OK UID FETCH completed']);
    });

    test('an expunge this session has not been told of yet is not VANISHED (EARLIER): it comes as VANISHED', async () => {
      await fill(4);
      const c = await qresyncClient();
      await c.command('s', 'SELECT INBOX');
      const since = (await info()).highestModseq;
      await f.store.remove(BOB, 'INBOX', [2]);
      const res = await c.command('u', `UID FETCH 1:* (FLAGS) (CHANGEDSINCE ${since} VANISHED)`);
      expect(res).toEqual(['* VANISHED 2', 'u OK UID FETCH completed']);
    });
  });

  describe('CONDSTORE (RFC 7162 §3.1)', () => {
    test('§3.1.3 examples: UID STORE (UNCHANGEDSINCE) succeeds; STORE (UNCHANGEDSINCE) fails for changed ones with [MODIFIED]', async () => {
      await fill(9);
      const c = await login();
      await c.command('s', 'SELECT INBOX');
      const since = (await info()).highestModseq;
      const a103 = await c.command('a103', `UID STORE 6,4,8 (UNCHANGEDSINCE ${since}) +FLAGS.SILENT (\\Deleted)`);
      expect(a103).toEqual([
        `* 4 FETCH (UID 4 MODSEQ (${await modseqOf(4)}))`,
        `* 6 FETCH (UID 6 MODSEQ (${await modseqOf(6)}))`,
        `* 8 FETCH (UID 8 MODSEQ (${await modseqOf(8)}))`,
        'a103 OK UID STORE completed',
      ]);
      const before = (await info()).highestModseq;
      await f.store.setFlags(BOB, 'INBOX', [7, 9], ['$Changed'], 'add');
      const d105 = await c.command('d105', `STORE 7,5,9 (UNCHANGEDSINCE ${before}) +FLAGS.SILENT (\\Deleted)`);
      expect(d105).toContain(`* 5 FETCH (UID 5 MODSEQ (${await modseqOf(5)}))`);
      expect(last(d105)).toBe('d105 OK [MODIFIED 7,9] Conditional STORE failed');
      expect((await f.store.messages(BOB, 'INBOX')).filter((m) => m.flags.includes('\\Deleted')).map((m) => m.uid)).toEqual([4, 5, 6, 8]);
      // UNCHANGEDSINCE 0 fails for every message (every one has a modseq above 0).
      expect(last(await c.command('a104', 'STORE 1:2 (UNCHANGEDSINCE 0) FLAGS.SILENT (\\Seen)'))).toBe('a104 OK [MODIFIED 1:2] Conditional STORE failed');
      expect((await f.store.messages(BOB, 'INBOX')).slice(0, 2).map((m) => m.flags)).toEqual([[], []]);
    });

    test('HIGHESTMODSEQ in SELECT and STATUS, MODSEQ fetch item, SEARCH MODSEQ agree with the store', async () => {
      await fill(3);
      await f.store.setFlags(BOB, 'INBOX', [2], ['\\Flagged'], 'add');
      const { highestModseq } = await info();
      const c = await login();
      expect(await c.command('t', 'STATUS INBOX (HIGHESTMODSEQ)')).toEqual([`* STATUS "INBOX" (HIGHESTMODSEQ ${highestModseq})`, 't OK STATUS completed']);
      expect(await c.command('s', 'SELECT INBOX (CONDSTORE)')).toContain(`* OK [HIGHESTMODSEQ ${highestModseq}] Highest`);
      expect((await c.command('f', 'FETCH 2 (MODSEQ)'))[0]).toBe(`* 2 FETCH (MODSEQ (${await modseqOf(2)}))`);
      expect((await c.command('q', `SEARCH MODSEQ ${await modseqOf(2)}`))[0]).toBe(`* SEARCH 2 (MODSEQ ${await modseqOf(2)})`);
    });
  });

  describe('imapflow with qresync enabled', () => {
    test('reopening with changedSince reports what vanished and what changed; VANISHED while open', async () => {
      await fill(6);
      const flow = new ImapFlow({ host: '127.0.0.1', port: f.port, secure: false, auth: { user: BOB, pass: 'secret' }, logger: false, qresync: true, disableAutoIdle: true });
      flow.on('error', () => undefined);
      const expunged: Array<{ uid?: number; earlier?: boolean; vanished: boolean }> = [];
      const flags: number[] = [];
      flow.on('expunge', (e: { uid?: number; earlier?: boolean; vanished: boolean }) => expunged.push(e));
      flow.on('flags', (e: { uid?: number }) => flags.push(e.uid ?? 0));
      await flow.connect();
      try {
        expect(flow.enabled.has('QRESYNC')).toBe(true);
        const box = await flow.mailboxOpen('INBOX');
        const uidValidity = box.uidValidity;
        const since = box.highestModseq!;
        await flow.mailboxClose();
        await f.store.remove(BOB, 'INBOX', [2, 5]);
        await f.store.setFlags(BOB, 'INBOX', [4], ['\\Seen'], 'add');
        const reopened = await flow.mailboxOpen('INBOX', { uidValidity, changedSince: since });
        expect(reopened.exists).toBe(4);
        expect(expunged).toEqual([
          expect.objectContaining({ uid: 2, vanished: true, earlier: true }),
          expect.objectContaining({ uid: 5, vanished: true, earlier: true }),
        ]);
        expect(flags).toEqual([4]);
        // While open: another expunge arrives as VANISHED, with the UID.
        await f.store.remove(BOB, 'INBOX', [6]);
        await flow.noop();
        expect(expunged[2]).toEqual(expect.objectContaining({ uid: 6, vanished: true, earlier: false }));
        const changed = await flow.fetchAll('1:*', { flags: true }, { uid: true, changedSince: since });
        expect(changed.map((m) => m.uid)).toEqual([4]);
      } finally {
        await flow.logout();
      }
    });
  });
});

describe('UID ranges for VANISHED (EARLIER) without history', () => {
  test('a UID set clipped to 1..UIDNEXT-1, merged, without the UIDs still there', () => {
    expect(uidRanges([[5, 3], [0, 9], [20, 30]], 12)).toEqual([[3, 5], [9, 12]]);
    expect(uidRanges([[1, 0]], 0)).toEqual([]);
    expect(subtractUids([[1, 10], [20, 25]], [1, 4, 5, 10, 21])).toEqual([[2, 3], [6, 9], [20, 20], [22, 25]]);
    expect(subtractUids([[1, 3]], [])).toEqual([[1, 3]]);
  });
});
