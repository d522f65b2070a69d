// The store's expunge history (QRESYNC's VANISHED (EARLIER), RFC 7162 §3.2.5.1): which UIDs were expunged after a
// modseq, kept durably: across a restart, across the compaction of the index log, for files that vanished while
// the store was down, and bounded (older expunges raise the floor, after which the answer says it is incomplete).
import { promises as fs } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { EXPUNGE_HISTORY, noteExpunged, parseIndex, type ExpungeEvent } from './maildir/index-log.js';
import { MaildirStore } from './store.js';

const ALICE = 'alice@example.test';
const users = [{ address: ALICE, password: 'pw' }];
const msg = (i: number) => Buffer.from(`Subject: m${i}\r\n\r\nbody ${i}\r\n`);

let root: string;
const stores: MaildirStore[] = [];

beforeEach(async () => {
  root = await fs.mkdtemp(path.join(os.tmpdir(), 'maillab-expunged-'));
});
afterEach(async () => {
  for (const s of stores.splice(0)) await s.close();
  await fs.rm(root, { recursive: true, force: true });
});

async function open(fsync = false): Promise<MaildirStore> {
  const store = new MaildirStore({ root, users, fsync });
  await store.open();
  stores.push(store);
  return store;
}

describe('expungedSince', () => {
  it('lists the UIDs expunged after a modseq, by remove and by move, and keeps them across a restart', async () => {
    const first = await open(true);
    for (let i = 1; i <= 6; i++) await first.deliver(ALICE, msg(i));
    await first.remove(ALICE, 'INBOX', [1]);
    const before = (await first.mailboxInfo(ALICE, 'INBOX')).highestModseq;
    await first.remove(ALICE, 'INBOX', [3, 4]);
    await first.move(ALICE, 'INBOX', [6], 'Trash');
    expect(await first.expungedSince(ALICE, 'INBOX', before)).toEqual({ uids: [3, 4, 6], complete: true });
    // The folder was made by this store: its history goes back to the start.
    expect(await first.expungedSince(ALICE, 'INBOX', 0)).toEqual({ uids: [1, 3, 4, 6], complete: true });
    const after = (await first.mailboxInfo(ALICE, 'INBOX')).highestModseq;
    expect(await first.expungedSince(ALICE, 'INBOX', after)).toEqual({ uids: [], complete: true });

    const second = await open();
    expect(await second.expungedSince(ALICE, 'INBOX', before)).toEqual({ uids: [3, 4, 6], complete: true });
  });

  it('survives the compaction of the index log', async () => {
    const first = await open();
    for (let i = 1; i <= 4; i++) await first.deliver(ALICE, msg(i));
    const before = (await first.mailboxInfo(ALICE, 'INBOX')).highestModseq;
    await first.remove(ALICE, 'INBOX', [2]);
    // Enough flag changes to compact the log several times over.
    for (let i = 0; i < 1200; i++) await first.setFlags(ALICE, 'INBOX', [1], [`k${i % 5}`], i % 2 ? 'remove' : 'add');
    await first.remove(ALICE, 'INBOX', [4]);
    await first.close();
    const text = await fs.readFile(path.join(root, ALICE, 'Maildir', 'maillab-index'), 'utf8');
    expect(text.split('\n').length).toBeLessThan(1100);
    const second = await open();
    expect(await second.expungedSince(ALICE, 'INBOX', before)).toEqual({ uids: [2, 4], complete: true });
  });

  it('counts a file that vanished while the store was down as expunged when it comes back', async () => {
    const first = await open();
    for (let i = 1; i <= 3; i++) await first.deliver(ALICE, msg(i));
    const before = (await first.mailboxInfo(ALICE, 'INBOX')).highestModseq;
    await first.close();
    const dir = path.join(root, ALICE, 'Maildir', 'new');
    const files = (await fs.readdir(dir)).sort();
    await fs.rm(path.join(dir, files[1]!));
    const second = await open();
    expect((await second.messages(ALICE, 'INBOX')).map((m) => m.uid)).toEqual([1, 3]);
    expect(await second.expungedSince(ALICE, 'INBOX', before)).toEqual({ uids: [2], complete: true });
    const third = await open();
    expect(await third.expungedSince(ALICE, 'INBOX', before)).toEqual({ uids: [2], complete: true });
  });
});

describe('the history in the index', () => {
  it('is bounded: the oldest expunges go and the floor rises to their modseq', () => {
    const folder = { expunged: [] as ExpungeEvent[], expungedFloor: 1 };
    noteExpunged(folder, { modseq: 5, uids: [1, 2, 3] });
    noteExpunged(folder, { modseq: 7, uids: Array.from({ length: EXPUNGE_HISTORY - 1 }, (_, i) => 10 + i) });
    expect(folder.expungedFloor).toBe(5);
    expect(folder.expunged.map((e) => e.modseq)).toEqual([7]);
  });

  it('is read from the header and the log; a damaged log makes it incomplete up to its last modseq', () => {
    const header = { v: 1, uidValidity: 9, uidNext: 10, modseq: 20, xfloor: 4, xh: [[6, 1, 2]] };
    const log = [JSON.stringify({ x: [5], m: 21 }), JSON.stringify({ a: 9, id: 'x', d: 0, m: 22 })];
    const good = parseIndex([JSON.stringify(header), ...log].join('\n') + '\n');
    expect(good.expunged).toEqual([
      { modseq: 6, uids: [1, 2] },
      { modseq: 21, uids: [5] },
    ]);
    expect(good.expungedFloor).toBe(4);
    const damaged = parseIndex([JSON.stringify(header), '{torn', ...log].join('\n') + '\n');
    expect(damaged.expungedFloor).toBe(22);
    // An index written before the history existed: nothing is known before its last compaction.
    const old = parseIndex(JSON.stringify({ v: 1, uidValidity: 9, uidNext: 1, modseq: 13 }) + '\n');
    expect(old.expungedFloor).toBe(13);
  });
});
