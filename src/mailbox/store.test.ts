import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { promises as fs } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { MaildirStore, decodeFolderName, encodeFolderName, normalizeName } from './store.js';
import { MailStoreError, type StoreChange } from './store-api.js';

const users = [
  { address: 'Alice@Example.test', password: 'alice-pw' },
  { address: 'bob@example.test', password: 'bob-pw' },
  { address: 'bob@other.test', password: 'bob2-pw' },
];
const ALICE = 'alice@example.test';

let root: string;
const open = async (fsync = true) => {
  const store = new MaildirStore({ root, users, fsync, hostname: 'mail:box/1' });
  await store.open();
  return store;
};
const msg = (n: number | string) => Buffer.from(`Subject: test ${n}\r\nMessage-ID: <${n}@test>\r\n\r\nbody ${n}\r\n`);

beforeEach(async () => {
  root = await fs.mkdtemp(path.join(os.tmpdir(), 'maillab-store-'));
});
afterEach(async () => {
  await fs.rm(root, { recursive: true, force: true });
});

describe('users', () => {
  it('resolves logins and authenticates', async () => {
    const store = await open();
    expect(store.resolveUser('ALICE@example.test')).toBe(ALICE);
    expect(store.resolveUser('alice')).toBe(ALICE);
    expect(store.resolveUser('bob')).toBeUndefined(); // ambiguous local part
    expect(store.resolveUser('bob@other.test')).toBe('bob@other.test');
    expect(store.authenticate('alice', 'alice-pw')).toBe(ALICE);
    expect(store.authenticate('alice', 'wrong')).toBeUndefined();
    expect(store.authenticate('nobody', 'alice-pw')).toBeUndefined();
    expect(store.hasUser('ALICE@EXAMPLE.TEST')).toBe(true);
    expect(store.hasUser('carol@example.test')).toBe(false);
    await expect(store.messages('carol@example.test', 'INBOX')).rejects.toMatchObject({ code: 'NOUSER' });
  });

  it('locks a maildrop once', async () => {
    const store = await open();
    const release = store.lockMaildrop(ALICE);
    expect(release).toBeTypeOf('function');
    expect(store.lockMaildrop(ALICE)).toBeUndefined();
    expect(store.lockMaildrop('bob@example.test')).toBeTypeOf('function');
    release!();
    release!(); // idempotent
    expect(store.lockMaildrop(ALICE)).toBeTypeOf('function');
  });
});

describe('layout', () => {
  it('creates INBOX and the special-use mailboxes, all subscribed', async () => {
    const store = await open();
    const boxes = await store.listMailboxes(ALICE);
    expect(boxes.map((b) => [b.name, b.specialUse, b.subscribed])).toEqual([
      ['INBOX', undefined, true],
      ['Drafts', '\\Drafts', true],
      ['Junk', '\\Junk', true],
      ['Sent', '\\Sent', true],
      ['Trash', '\\Trash', true],
    ]);
    const validities = boxes.map((b) => b.uidValidity);
    expect(new Set(validities).size).toBe(5);
    for (const dir of ['cur', 'new', 'tmp', '.Sent/cur', '.Trash/new', '.Junk/tmp']) {
      expect((await fs.stat(path.join(root, ALICE, 'Maildir', dir))).isDirectory()).toBe(true);
    }
    await expect(fs.stat(path.join(root, ALICE, 'Maildir', '.Drafts', 'maildirfolder'))).resolves.toBeTruthy();
  });

  it('maps hierarchy names to Maildir++ directories', () => {
    expect(encodeFolderName('a/b.c/d%e')).toBe('.a.b%2Ec.d%25e');
    expect(decodeFolderName('.a.b%2Ec.d%25e')).toBe('a/b.c/d%e');
    expect(decodeFolderName('.inbox.x')).toBe('INBOX/x');
    expect(decodeFolderName('..x')).toBeUndefined();
    expect(normalizeName('inbox')).toBe('INBOX');
    expect(normalizeName('Inbox/Sub')).toBe('INBOX/Sub');
    expect(normalizeName('Inboxes')).toBe('Inboxes');
    for (const bad of ['', '/a', 'a/', 'a//b', 'a\nb']) expect(() => normalizeName(bad)).toThrow(MailStoreError);
  });
});

describe('delivery', () => {
  it('stores CRLF messages in new/ with unique names, ascending UIDs and exact sizes', async () => {
    const store = await open();
    const changes: StoreChange[] = [];
    store.onChange((c) => changes.push(c));
    const a = await store.deliver(ALICE, Buffer.from('Subject: a\n\nline 1\nline 2\r\n'));
    const b = await store.deliver(ALICE, msg(2), { internalDate: Date.UTC(2020, 0, 1) });
    expect(a.uid).toBe(1);
    expect(b.uid).toBe(2);
    expect(a.size).toBe(Buffer.byteLength('Subject: a\r\n\r\nline 1\r\nline 2\r\n'));
    expect((await store.read(ALICE, 'INBOX', 1)).toString()).toBe('Subject: a\r\n\r\nline 1\r\nline 2\r\n');
    expect(await store.read(ALICE, 'inbox', 2)).toEqual(msg(2));
    expect(b.internalDate).toBe(Date.UTC(2020, 0, 1));
    expect(a.id).toMatch(new RegExp(`^\\d+\\.${process.pid}_\\d+\\.mail\\\\072box\\\\0571,S=${a.size}$`));
    expect(a.flags).toEqual([]);
    const files = await fs.readdir(path.join(root, ALICE, 'Maildir', 'new'));
    expect(files.sort()).toEqual([a.id, b.id].sort());
    expect(await fs.readdir(path.join(root, ALICE, 'Maildir', 'tmp'))).toEqual([]);
    expect(changes).toEqual([
      { type: 'exists', user: ALICE, mailbox: 'INBOX', message: a },
      { type: 'exists', user: ALICE, mailbox: 'INBOX', message: b },
    ]);
    const info = await store.mailboxInfo(ALICE, 'INBOX');
    expect(info).toMatchObject({ exists: 2, unseen: 2, uidNext: 3 });
    expect(info.highestModseq).toBeGreaterThanOrEqual(b.modseq);
    expect(b.modseq).toBeGreaterThan(a.modseq);
  });

  it('serializes concurrent deliveries into distinct ascending UIDs', async () => {
    const store = await open();
    const delivered = await Promise.all(Array.from({ length: 40 }, (_, i) => store.deliver(i % 2 ? ALICE : 'bob@example.test', msg(i))));
    for (const user of [ALICE, 'bob@example.test']) {
      const list = await store.messages(user, 'INBOX');
      expect(list.map((m) => m.uid)).toEqual(Array.from({ length: 20 }, (_, i) => i + 1));
      expect(new Set(list.map((m) => m.id)).size).toBe(20);
    }
    // Every delivery reads back as what was delivered.
    for (let i = 0; i < 40; i++) {
      const m = delivered[i]!;
      expect(await store.read(i % 2 ? ALICE : 'bob@example.test', 'INBOX', m.uid)).toEqual(msg(i));
    }
  });
});

describe('persistence', () => {
  it('keeps UIDs, flags, keywords, UIDVALIDITY and modseqs across instances', async () => {
    const first = await open();
    for (let i = 1; i <= 5; i++) await first.deliver(ALICE, msg(i));
    await first.setFlags(ALICE, 'INBOX', [2, 4], ['\\Seen', '$Label1', 'Important'], 'add');
    await first.setFlags(ALICE, 'INBOX', [4], ['\\Flagged', '\\Answered', '\\Deleted', '\\Draft'], 'add');
    await first.remove(ALICE, 'INBOX', [3]);
    await first.createMailbox(ALICE, 'Projects/2024');
    await first.append(ALICE, 'Projects/2024', msg('p'), ['\\Seen', 'Work'], Date.UTC(2021, 5, 1));
    const before = await first.listMailboxes(ALICE);
    const inboxBefore = await first.messages(ALICE, 'INBOX');
    await first.close();

    const second = await open();
    expect(await second.listMailboxes(ALICE)).toEqual(before);
    expect(await second.messages(ALICE, 'INBOX')).toEqual(inboxBefore);
    expect(inboxBefore.map((m) => m.uid)).toEqual([1, 2, 4, 5]);
    expect(inboxBefore.find((m) => m.uid === 4)!.flags).toEqual(['\\Draft', '\\Flagged', '\\Answered', '\\Seen', '\\Deleted', '$Label1', 'Important']);
    const [projected] = await second.messages(ALICE, 'Projects/2024');
    expect(projected).toMatchObject({ uid: 1, flags: ['\\Seen', 'Work'], internalDate: Date.UTC(2021, 5, 1) });
    // UIDs keep ascending after the restart; a removed UID is not reused.
    await second.remove(ALICE, 'INBOX', [5]);
    await second.close();
    const third = await open();
    const next = await third.deliver(ALICE, msg(6));
    expect(next.uid).toBe(6);
    // Files carry the Maildir info suffix for system flags.
    const cur = await fs.readdir(path.join(root, ALICE, 'Maildir', 'cur'));
    expect(cur.sort()).toEqual([`${inboxBefore[1]!.id}:2,S`, `${inboxBefore[2]!.id}:2,DFRST`].sort());
  });

  it('gives files found without a UID the next UIDs and drops vanished ones', async () => {
    const first = await open();
    await first.deliver(ALICE, msg(1));
    const two = await first.deliver(ALICE, msg(2));
    const info = await first.mailboxInfo(ALICE, 'INBOX');
    await first.close();
    const maildir = path.join(root, ALICE, 'Maildir');
    // Something else dropped two messages in; one of ours went away.
    await fs.writeFile(path.join(maildir, 'new', '2000000000.M1P1.elsewhere'), 'Subject: b\r\n\r\nb\r\n');
    await fs.writeFile(path.join(maildir, 'cur', '1000000000.M1P1.elsewhere:2,FS'), 'Subject: a\r\n\r\na\r\n');
    await fs.unlink(path.join(maildir, 'new', two.id));
    // And a write that never completed.
    await fs.writeFile(path.join(maildir, 'tmp', 'partial'), 'Subj');

    const second = await open();
    const list = await second.messages(ALICE, 'INBOX');
    expect(list.map((m) => [m.uid, m.id, m.flags])).toEqual([
      [1, list[0]!.id, []],
      [3, '1000000000.M1P1.elsewhere', ['\\Flagged', '\\Seen']],
      [4, '2000000000.M1P1.elsewhere', []],
    ]);
    expect(list[1]!.size).toBe(17);
    const after = await second.mailboxInfo(ALICE, 'INBOX');
    expect(after.uidValidity).toBe(info.uidValidity);
    expect(after.highestModseq).toBeGreaterThan(info.highestModseq);
    expect(await fs.readdir(path.join(maildir, 'tmp'))).toEqual([]);
    await second.close();
    // The assignment itself is durable.
    const third = await open();
    expect((await third.messages(ALICE, 'INBOX')).map((m) => m.uid)).toEqual([1, 3, 4]);
  });

  it('survives a torn index record and a lost index', async () => {
    const first = await open();
    await first.deliver(ALICE, msg(1));
    await first.deliver(ALICE, msg(2));
    const { uidValidity } = await first.mailboxInfo(ALICE, 'INBOX');
    await first.close();
    const index = path.join(root, ALICE, 'Maildir', 'maillab-index');
    await fs.appendFile(index, '{"a":3,"id":"tor');
    const second = await open();
    expect((await second.messages(ALICE, 'INBOX')).map((m) => m.uid)).toEqual([1, 2]);
    expect((await second.deliver(ALICE, msg(3))).uid).toBe(3);
    await second.close();
    const third = await open();
    expect((await third.messages(ALICE, 'INBOX')).map((m) => m.uid)).toEqual([1, 2, 3]);
    await third.close();

    // Without an index the UIDs cannot be trusted: a new UIDVALIDITY, UIDs from 1 again.
    await fs.unlink(index);
    const fourth = await open();
    const info = await fourth.mailboxInfo(ALICE, 'INBOX');
    expect(info.uidValidity).toBeGreaterThan(uidValidity);
    expect((await fourth.messages(ALICE, 'INBOX')).map((m) => m.uid)).toEqual([1, 2, 3]);
  });

  it('compacts the index log and stays correct', async () => {
    const first = await open(false);
    for (let i = 0; i < 3; i++) await first.deliver(ALICE, msg(i));
    for (let i = 0; i < 1200; i++) await first.setFlags(ALICE, 'INBOX', [1 + (i % 3)], [`k${i % 7}`], i % 2 ? 'remove' : 'add');
    const expected = await first.messages(ALICE, 'INBOX');
    await first.close();
    const text = await fs.readFile(path.join(root, ALICE, 'Maildir', 'maillab-index'), 'utf8');
    expect(text.split('\n').length).toBeLessThan(1100);
    const second = await open();
    expect(await second.messages(ALICE, 'INBOX')).toEqual(expected);
  });
});

describe('flags', () => {
  it('sets, adds and removes system flags and keywords', async () => {
    const store = await open();
    await store.deliver(ALICE, msg(1));
    await store.deliver(ALICE, msg(2));
    const changes: StoreChange[] = [];
    store.onChange((c) => changes.push(c));

    let [one] = await store.setFlags(ALICE, 'INBOX', [1], ['\\seen', '\\Recent', 'Foo', '\\Bogus', 'bad word'], 'add');
    expect(one!.flags).toEqual(['\\Seen', 'Foo']);
    const firstModseq = one!.modseq;
    // Nothing changes: same modseq, no event.
    [one] = await store.setFlags(ALICE, 'INBOX', [1], ['\\Seen', 'foo'], 'add');
    expect(one!.modseq).toBe(firstModseq);
    expect(changes).toHaveLength(1);

    [one] = await store.setFlags(ALICE, 'INBOX', [1], ['\\Flagged', 'Bar'], 'set');
    expect(one!.flags).toEqual(['\\Flagged', 'Bar']);
    expect(one!.modseq).toBeGreaterThan(firstModseq);
    [one] = await store.setFlags(ALICE, 'INBOX', [1], ['\\FLAGGED', 'bar'], 'remove');
    expect(one!.flags).toEqual([]);

    const both = await store.setFlags(ALICE, 'INBOX', [2, 1, 99, 2], ['\\Deleted'], 'add');
    expect(both.map((m) => m.uid)).toEqual([2, 1]);
    expect(both[0]!.modseq).toBe(both[1]!.modseq);
    expect(changes.map((c) => c.type)).toEqual(['flags', 'flags', 'flags', 'flags', 'flags']);
    expect(changes.at(-1)).toMatchObject({ type: 'flags', mailbox: 'INBOX', message: { uid: 1, flags: ['\\Deleted'] } });
    expect((await store.mailboxInfo(ALICE, 'INBOX')).unseen).toBe(2);
    // Reads still work after the files moved from new/ to cur/.
    expect(await store.read(ALICE, 'INBOX', 2)).toEqual(msg(2));
  });

  it('reads a message while its flags change', async () => {
    const store = await open();
    await store.deliver(ALICE, msg(1));
    const work: Promise<unknown>[] = [];
    for (let i = 0; i < 30; i++) {
      work.push(store.setFlags(ALICE, 'INBOX', [1], ['\\Seen'], i % 2 ? 'remove' : 'add'));
      work.push(store.read(ALICE, 'INBOX', 1).then((data) => expect(data).toEqual(msg(1))));
    }
    await Promise.all(work);
  });
});

describe('copy, move, remove', () => {
  it('copies with flags and new UIDs, in the order asked', async () => {
    const store = await open();
    for (let i = 1; i <= 3; i++) await store.deliver(ALICE, msg(i));
    await store.setFlags(ALICE, 'INBOX', [3], ['\\Seen', 'Kw'], 'add');
    const changes: StoreChange[] = [];
    store.onChange((c) => changes.push(c));
    const trash = await store.mailboxInfo(ALICE, 'Trash');
    const result = await store.copy(ALICE, 'INBOX', [3, 7, 1], 'Trash');
    expect(result).toEqual({ uidValidity: trash.uidValidity, uids: [1, 2], sourceUids: [3, 1] });
    const copies = await store.messages(ALICE, 'Trash');
    expect(copies.map((m) => [m.uid, m.flags])).toEqual([
      [1, ['\\Seen', 'Kw']],
      [2, []],
    ]);
    expect(await store.read(ALICE, 'Trash', 1)).toEqual(msg(3));
    expect(await store.read(ALICE, 'Trash', 2)).toEqual(msg(1));
    expect((await store.messages(ALICE, 'INBOX')).length).toBe(3);
    expect(changes.map((c) => [c.type, 'mailbox' in c && c.mailbox])).toEqual([
      ['exists', 'Trash'],
      ['exists', 'Trash'],
    ]);
    // Copies are independent: changing one leaves the other alone.
    await store.setFlags(ALICE, 'Trash', [1], ['\\Deleted'], 'add');
    expect((await store.messages(ALICE, 'INBOX'))[2]!.flags).toEqual(['\\Seen', 'Kw']);
    await store.remove(ALICE, 'INBOX', [3]);
    expect(await store.read(ALICE, 'Trash', 1)).toEqual(msg(3));
  });

  it('moves between mailboxes and within one', async () => {
    const store = await open();
    for (let i = 1; i <= 3; i++) await store.deliver(ALICE, msg(i));
    await store.setFlags(ALICE, 'INBOX', [2], ['\\Flagged'], 'add');
    const changes: StoreChange[] = [];
    store.onChange((c) => changes.push(c));
    const moved = await store.move(ALICE, 'INBOX', [2, 1], 'Junk');
    expect(moved.uids).toEqual([1, 2]);
    expect(moved.sourceUids).toEqual([2, 1]);
    expect((await store.messages(ALICE, 'INBOX')).map((m) => m.uid)).toEqual([3]);
    const junk = await store.messages(ALICE, 'Junk');
    expect(junk.map((m) => m.flags)).toEqual([['\\Flagged'], []]);
    expect(await store.read(ALICE, 'Junk', 1)).toEqual(msg(2));
    expect(changes.map((c) => c.type)).toEqual(['exists', 'exists', 'expunge']);
    expect(changes[2]).toEqual({ type: 'expunge', user: ALICE, mailbox: 'INBOX', uids: [1, 2] });

    const same = await store.move(ALICE, 'Junk', [1], 'Junk');
    expect(same.uids).toEqual([3]);
    expect((await store.messages(ALICE, 'Junk')).map((m) => m.uid)).toEqual([2, 3]);
    expect(await store.read(ALICE, 'Junk', 3)).toEqual(msg(2));
    await store.close();
    const again = await open();
    expect((await again.messages(ALICE, 'Junk')).map((m) => [m.uid, m.flags])).toEqual([
      [2, []],
      [3, ['\\Flagged']],
    ]);
    expect((await again.messages(ALICE, 'INBOX')).map((m) => m.uid)).toEqual([3]);
  });

  it('removes for good', async () => {
    const store = await open();
    for (let i = 1; i <= 3; i++) await store.deliver(ALICE, msg(i));
    const changes: StoreChange[] = [];
    store.onChange((c) => changes.push(c));
    const before = (await store.mailboxInfo(ALICE, 'INBOX')).highestModseq;
    expect(await store.remove(ALICE, 'INBOX', [3, 1, 42])).toEqual([1, 3]);
    expect(await store.remove(ALICE, 'INBOX', [1])).toEqual([]);
    expect(changes).toEqual([{ type: 'expunge', user: ALICE, mailbox: 'INBOX', uids: [1, 3] }]);
    expect((await store.mailboxInfo(ALICE, 'INBOX')).highestModseq).toBeGreaterThan(before);
    await expect(store.read(ALICE, 'INBOX', 1)).rejects.toMatchObject({ code: 'NONEXISTENT' });
    expect(await fs.readdir(path.join(root, ALICE, 'Maildir', 'new'))).toHaveLength(1);
  });
});

describe('mailboxes', () => {
  it('creates with parents, refuses duplicates, subscribes', async () => {
    const store = await open();
    const changes: StoreChange[] = [];
    store.onChange((c) => changes.push(c));
    await store.createMailbox(ALICE, 'Work/2024.Q1/Reports', '\\Archive');
    await expect(store.createMailbox(ALICE, 'Work')).rejects.toMatchObject({ code: 'ALREADYEXISTS' });
    await expect(store.createMailbox(ALICE, 'inbox')).rejects.toMatchObject({ code: 'ALREADYEXISTS' });
    await expect(store.createMailbox(ALICE, 'a//b')).rejects.toMatchObject({ code: 'CANNOT' });
    const names = (await store.listMailboxes(ALICE)).map((b) => b.name);
    expect(names).toEqual(['INBOX', 'Drafts', 'Junk', 'Sent', 'Trash', 'Work', 'Work/2024.Q1', 'Work/2024.Q1/Reports']);
    expect(await fs.readdir(path.join(root, ALICE, 'Maildir'))).toContain('.Work.2024%2EQ1.Reports');
    const reports = await store.mailboxInfo(ALICE, 'Work/2024.Q1/Reports');
    expect(reports).toMatchObject({ specialUse: '\\Archive', subscribed: false, exists: 0, uidNext: 1 });
    await store.setSubscribed(ALICE, 'Work/2024.Q1/Reports', true);
    expect((await store.mailboxInfo(ALICE, 'Work/2024.Q1/Reports')).subscribed).toBe(true);
    await store.createMailbox(ALICE, 'INBOX/Sub');
    expect((await store.listMailboxes(ALICE)).map((b) => b.name)).toContain('INBOX/Sub');
    expect(changes.every((c) => c.type === 'mailboxes')).toBe(true);
    expect(changes).toHaveLength(3);
    await store.close();
    const again = await open();
    expect((await again.listMailboxes(ALICE)).map((b) => b.name)).toEqual([...names, 'INBOX/Sub'].sort((a, b) => (a === 'INBOX' ? -1 : b === 'INBOX' ? 1 : a < b ? -1 : 1)));
    expect((await again.mailboxInfo(ALICE, 'Work/2024.Q1/Reports')).subscribed).toBe(true);
  });

  it('renames with inferiors, keeping messages and UIDVALIDITY', async () => {
    const store = await open();
    await store.createMailbox(ALICE, 'A/B');
    await store.append(ALICE, 'A/B', msg('b'), ['\\Seen']);
    const before = await store.mailboxInfo(ALICE, 'A/B');
    await store.setSubscribed(ALICE, 'A/B', true);
    await expect(store.renameMailbox(ALICE, 'A', 'Sent')).rejects.toMatchObject({ code: 'ALREADYEXISTS' });
    await expect(store.renameMailbox(ALICE, 'A', 'A/C')).rejects.toMatchObject({ code: 'CANNOT' });
    await expect(store.renameMailbox(ALICE, 'Nope', 'X')).rejects.toMatchObject({ code: 'NONEXISTENT' });
    await store.renameMailbox(ALICE, 'A', 'X/Y');
    const names = (await store.listMailboxes(ALICE)).map((b) => b.name);
    expect(names).toEqual(expect.arrayContaining(['X', 'X/Y', 'X/Y/B']));
    expect(names).not.toContain('A');
    expect(names).not.toContain('A/B');
    const after = await store.mailboxInfo(ALICE, 'X/Y/B');
    expect(after).toMatchObject({ uidValidity: before.uidValidity, exists: 1, subscribed: true });
    expect(await store.read(ALICE, 'X/Y/B', 1)).toEqual(msg('b'));
    await store.renameMailbox(ALICE, 'Sent', 'Sent Items');
    expect((await store.mailboxInfo(ALICE, 'Sent Items')).specialUse).toBe('\\Sent');
    await store.close();
    const again = await open();
    expect(await again.read(ALICE, 'X/Y/B', 1)).toEqual(msg('b'));
    expect((await again.mailboxInfo(ALICE, 'Sent Items')).specialUse).toBe('\\Sent');
  });

  it('renames INBOX by moving its messages out', async () => {
    const store = await open();
    await store.deliver(ALICE, msg(1));
    await store.deliver(ALICE, msg(2));
    await store.setFlags(ALICE, 'INBOX', [2], ['\\Seen', 'Kept'], 'add');
    await store.createMailbox(ALICE, 'INBOX/Child');
    const inbox = await store.mailboxInfo(ALICE, 'INBOX');
    const changes: StoreChange[] = [];
    store.onChange((c) => changes.push(c));
    await store.renameMailbox(ALICE, 'INBOX', 'Old');
    expect(await store.mailboxInfo(ALICE, 'INBOX')).toMatchObject({ exists: 0, uidValidity: inbox.uidValidity, uidNext: 3 });
    expect((await store.messages(ALICE, 'Old')).map((m) => [m.uid, m.flags])).toEqual([
      [1, []],
      [2, ['\\Seen', 'Kept']],
    ]);
    expect((await store.listMailboxes(ALICE)).map((b) => b.name)).toContain('INBOX/Child');
    expect(changes).toEqual([
      { type: 'expunge', user: ALICE, mailbox: 'INBOX', uids: [1, 2] },
      { type: 'mailboxes', user: ALICE },
    ]);
    expect((await store.deliver(ALICE, msg(3))).uid).toBe(3);
  });

  it('deletes, and a re-created mailbox gets a new UIDVALIDITY', async () => {
    const store = await open();
    await store.createMailbox(ALICE, 'Tmp/Inner');
    await store.append(ALICE, 'Tmp', msg(1));
    const old = await store.mailboxInfo(ALICE, 'Tmp');
    await expect(store.deleteMailbox(ALICE, 'INBOX')).rejects.toMatchObject({ code: 'CANNOT' });
    await store.deleteMailbox(ALICE, 'Tmp');
    await expect(store.mailboxInfo(ALICE, 'Tmp')).rejects.toMatchObject({ code: 'NONEXISTENT' });
    await expect(store.deleteMailbox(ALICE, 'Tmp')).rejects.toMatchObject({ code: 'NONEXISTENT' });
    // Inferiors stay.
    expect((await store.listMailboxes(ALICE)).map((b) => b.name)).toContain('Tmp/Inner');
    expect((await fs.readdir(path.join(root, ALICE))).filter((f) => f.startsWith('deleted-'))).toEqual([]);
    await store.createMailbox(ALICE, 'Tmp');
    const fresh = await store.mailboxInfo(ALICE, 'Tmp');
    expect(fresh.uidValidity).not.toBe(old.uidValidity);
    expect(fresh.exists).toBe(0);
    // Deleted defaults are not re-created on restart.
    await store.deleteMailbox(ALICE, 'Junk');
    await store.close();
    const again = await open();
    expect((await again.listMailboxes(ALICE)).map((b) => b.name)).not.toContain('Junk');
  });
});
