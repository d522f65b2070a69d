// The store at the edges: file-system failures (injected through its FileSystem), files changed behind its back,
// and the boundaries of names, flags and the index that the main store tests pass by.
import { promises as nodeFs } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { FileSystem } from '../shared/fsutil.js';
import { MailStoreError, type StoreChange } from './store-api.js';
import { MaildirStore } from './store.js';

const ALICE = 'alice@example.test';
const users = [{ address: ALICE, password: 'pw' }];
const msg = (n: number | string) => Buffer.from(`Subject: ${n}\r\n\r\nbody ${n}\r\n`);

let root: string;
let maildir: string;
beforeEach(async () => {
  root = await nodeFs.mkdtemp(path.join(os.tmpdir(), 'maillab-edges-'));
  maildir = path.join(root, ALICE, 'Maildir');
});
afterEach(async () => {
  await nodeFs.rm(root, { recursive: true, force: true });
});

async function open(fs?: FileSystem): Promise<MaildirStore> {
  const store = new MaildirStore({ root, users, fsync: true, ...(fs ? { fs } : {}) });
  await store.open();
  return store;
}

function errno(code: string): NodeJS.ErrnoException {
  return Object.assign(new Error(`${code} (injected)`), { code });
}

/** node's fs with `link` replaced: `fail(from, to, call)` returns an error code to fail that call with. */
function failingLinks(fail: (from: string, to: string, call: number) => string | undefined): { fs: FileSystem; calls: () => number } {
  let calls = 0;
  const fs = new Proxy(nodeFs, {
    get(target, prop, receiver) {
      if (prop !== 'link') return Reflect.get(target, prop, receiver);
      return async (from: string, to: string) => {
        const code = fail(from, to, ++calls);
        if (code) throw errno(code);
        return target.link(from, to);
      };
    },
  }) as FileSystem;
  return { fs, calls: () => calls };
}

const inTmp = (file: string) => path.basename(path.dirname(file)) === 'tmp';

describe('file-system failures', () => {
  it('copies by writing the data again where hard links are not possible', async () => {
    for (const code of ['EXDEV', 'EPERM', 'EMLINK', 'ENOTSUP']) {
      const { fs } = failingLinks((from) => (inTmp(from) ? undefined : code));
      const store = await open(fs);
      const date = Date.UTC(2020, 1, 2, 3, 4, 5);
      const m = await store.deliver(ALICE, msg(code), { internalDate: date });
      await store.setFlags(ALICE, 'INBOX', [m.uid], ['\\Seen'], 'add');
      const { uids } = await store.copy(ALICE, 'INBOX', [m.uid], 'Trash');
      const [copy] = await store.messages(ALICE, 'Trash');
      expect(copy, code).toMatchObject({ uid: uids[0], flags: ['\\Seen'], internalDate: date, size: m.size });
      expect(await store.read(ALICE, 'Trash', copy!.uid)).toEqual(msg(code));
      const file = (await nodeFs.readdir(path.join(maildir, '.Trash', 'cur')))[0]!;
      expect(file).toMatch(/:2,S$/);
      expect((await nodeFs.stat(path.join(maildir, '.Trash', 'cur', file))).nlink, code).toBe(1);
      expect((await nodeFs.stat(path.join(maildir, '.Trash', 'cur', file))).mtimeMs).toBe(date);
      expect(await nodeFs.readdir(path.join(maildir, '.Trash', 'tmp'))).toEqual([]);
      await store.remove(ALICE, 'Trash', uids);
      await store.remove(ALICE, 'INBOX', [m.uid]);
    }
  });

  it('a copy is a hard link when possible', async () => {
    const store = await open();
    const m = await store.deliver(ALICE, msg(1));
    await store.copy(ALICE, 'INBOX', [m.uid], 'Trash');
    const file = (await nodeFs.readdir(path.join(maildir, '.Trash', 'cur')))[0]!;
    expect((await nodeFs.stat(path.join(maildir, '.Trash', 'cur', file))).nlink).toBe(2);
  });

  it('other link errors fail the copy', async () => {
    const { fs } = failingLinks((from) => (inTmp(from) ? undefined : 'EACCES'));
    const store = await open(fs);
    const m = await store.deliver(ALICE, msg(1));
    await expect(store.copy(ALICE, 'INBOX', [m.uid], 'Trash')).rejects.toMatchObject({ code: 'EACCES' });
    expect(await store.messages(ALICE, 'Trash')).toEqual([]);
  });

  it('picks another name when the one it links to is taken, five times at most', async () => {
    const once = failingLinks((_from, _to, call) => (call === 1 ? 'EEXIST' : undefined));
    const store = await open(once.fs);
    const m = await store.deliver(ALICE, msg(1));
    expect(once.calls()).toBe(2);
    expect(await nodeFs.readdir(path.join(maildir, 'new'))).toEqual([m.id]);
    expect(await nodeFs.readdir(path.join(maildir, 'tmp'))).toEqual([]);

    const five = failingLinks((_from, _to, call) => (call <= 5 ? 'EEXIST' : undefined));
    expect((await (await open(five.fs)).deliver(ALICE, msg(2))).uid).toBe(2);
    expect(five.calls()).toBe(6);

    const always = failingLinks(() => 'EEXIST');
    const stuck = await open(always.fs);
    await expect(stuck.deliver(ALICE, msg(3))).rejects.toMatchObject({ code: 'EEXIST' });
    expect(always.calls()).toBe(6);
    await expect(stuck.append(ALICE, 'Drafts', msg(3))).rejects.toMatchObject({ code: 'EEXIST' });
    expect(await nodeFs.readdir(path.join(maildir, 'tmp'))).toEqual([]);
    expect(await nodeFs.readdir(path.join(maildir, '.Drafts', 'tmp'))).toEqual([]);
    expect((await stuck.messages(ALICE, 'INBOX')).length).toBe(2);
  });

  it('does not retry a link that fails otherwise', async () => {
    const denied = failingLinks(() => 'EACCES');
    const store = await open(denied.fs);
    await expect(store.deliver(ALICE, msg(1))).rejects.toMatchObject({ code: 'EACCES' });
    expect(denied.calls()).toBe(1);
    expect(await store.messages(ALICE, 'INBOX')).toEqual([]);
  });

  it('leaves nothing behind when writing the message fails', async () => {
    const fs = new Proxy(nodeFs, {
      get(target, prop, receiver) {
        if (prop !== 'open') return Reflect.get(target, prop, receiver);
        return async (file: string, flags: string) => {
          const handle = await target.open(file, flags);
          if (!inTmp(file)) return handle;
          return new Proxy(handle, {
            get(h, p, r) {
              if (p === 'writeFile') return async () => Promise.reject(errno('ENOSPC'));
              const value = Reflect.get(h, p, r);
              return typeof value === 'function' ? value.bind(h) : value;
            },
          });
        };
      },
    }) as FileSystem;
    const store = await open(fs);
    await expect(store.deliver(ALICE, msg(1))).rejects.toMatchObject({ code: 'ENOSPC' });
    await expect(store.append(ALICE, 'Drafts', msg(1))).rejects.toMatchObject({ code: 'ENOSPC' });
    expect(await nodeFs.readdir(path.join(maildir, 'tmp'))).toEqual([]);
    expect(await nodeFs.readdir(path.join(maildir, 'new'))).toEqual([]);
    expect(await store.messages(ALICE, 'INBOX')).toEqual([]);
  });
});

describe('files changed behind the store', () => {
  it('skips messages whose files are gone when copying, moving and removing', async () => {
    const store = await open();
    const [a, b] = [await store.deliver(ALICE, msg(1)), await store.deliver(ALICE, msg(2))];
    await nodeFs.unlink(path.join(maildir, 'new', a.id));
    expect(await store.copy(ALICE, 'INBOX', [a.uid, b.uid], 'Trash')).toMatchObject({ uids: [1], sourceUids: [b.uid] });
    expect(await store.move(ALICE, 'INBOX', [a.uid], 'Junk')).toMatchObject({ uids: [], sourceUids: [] });
    expect(await store.remove(ALICE, 'INBOX', [a.uid])).toEqual([a.uid]);
    expect((await store.messages(ALICE, 'INBOX')).map((m) => m.uid)).toEqual([b.uid]);
  });

  it('renaming INBOX skips a vanished file and moves the rest', async () => {
    const store = await open();
    const [a, b] = [await store.deliver(ALICE, msg(1)), await store.deliver(ALICE, msg(2))];
    await nodeFs.unlink(path.join(maildir, 'new', a.id));
    await store.renameMailbox(ALICE, 'INBOX', 'Old');
    expect((await store.messages(ALICE, 'Old')).map((m) => m.id)).toEqual([b.id]);
    expect(await store.messages(ALICE, 'INBOX')).toHaveLength(1); // the vanished one, still indexed until removed
  });

  it('reads found files: unmapped letters kept, dot files ignored, a file in new/ and cur/ once, names without time by name', async () => {
    const first = await open();
    await first.close();
    await nodeFs.writeFile(path.join(maildir, 'cur', 'zulu:2,PS'), 'Subject: z\r\n\r\n');
    await nodeFs.writeFile(path.join(maildir, 'new', 'alpha'), 'Subject: a\r\n\r\n');
    await nodeFs.writeFile(path.join(maildir, 'cur', 'alpha:2,F'), 'Subject: a\r\n\r\n');
    await nodeFs.writeFile(path.join(maildir, 'new', '.hidden'), 'x');
    const store = await open();
    const list = await store.messages(ALICE, 'INBOX');
    expect(list.map((m) => [m.uid, m.id])).toEqual([
      [1, 'alpha'],
      [2, 'zulu'],
    ]);
    expect(list[1]!.flags).toEqual(['\\Seen']);
    await store.setFlags(ALICE, 'INBOX', [2], ['\\Seen'], 'remove');
    expect(await nodeFs.readdir(path.join(maildir, 'cur'))).toContain('zulu:2,P');
    await store.setFlags(ALICE, 'INBOX', [2], ['\\Answered'], 'set');
    expect(await nodeFs.readdir(path.join(maildir, 'cur'))).toContain('zulu:2,PR');
  });

  it('keeps UIDNEXT past a removed highest UID through a rewrite of the index', async () => {
    const first = await open();
    for (let i = 1; i <= 3; i++) await first.deliver(ALICE, msg(i));
    await first.remove(ALICE, 'INBOX', [3]);
    await first.close();
    // A torn record makes the next load rewrite the index from what it knows: the header must carry UIDNEXT.
    await nodeFs.appendFile(path.join(maildir, 'maillab-index'), '{"f":1');
    const second = await open();
    expect((await second.mailboxInfo(ALICE, 'INBOX')).uidNext).toBe(4);
    await second.close();
    const text = await nodeFs.readFile(path.join(maildir, 'maillab-index'), 'utf8');
    expect(text.split('\n').filter(Boolean)).toHaveLength(3);
    const third = await open();
    expect((await third.deliver(ALICE, msg(4))).uid).toBe(4);
  });

  it('a damaged user file fails the first use, and the next use tries again', async () => {
    const first = await open();
    await first.setSubscribed(ALICE, 'Junk', false);
    await first.close();
    const userFile = path.join(root, ALICE, 'maillab-user.json');
    const good = await nodeFs.readFile(userFile, 'utf8');
    await nodeFs.writeFile(userFile, '{ not json');
    const store = new MaildirStore({ root, users, fsync: true });
    await expect(store.listMailboxes(ALICE)).rejects.toThrow(SyntaxError);
    await nodeFs.writeFile(userFile, good);
    expect((await store.listMailboxes(ALICE)).filter((b) => b.subscribed).map((b) => b.name)).toEqual(['INBOX', 'Drafts', 'Sent', 'Trash']);
  });

  it('a user file with fields of the wrong type is read as defaults', async () => {
    await nodeFs.mkdir(path.join(root, ALICE), { recursive: true });
    await nodeFs.writeFile(path.join(root, ALICE, 'maillab-user.json'), JSON.stringify({ initialized: 1, lastUidValidity: 'x', subscribed: 'INBOX', specialUse: 7 }));
    const store = await open();
    // Marked initialized: no default folders are made; nothing subscribed, no special use.
    expect(await store.listMailboxes(ALICE)).toEqual([expect.objectContaining({ name: 'INBOX', subscribed: false })]);
    await store.createMailbox(ALICE, 'A', '\\Archive');
    expect(await store.mailboxInfo(ALICE, 'A')).toMatchObject({ specialUse: '\\Archive', uidValidity: expect.any(Number) });
  });

  it('lists only directories that are Maildir++ folders', async () => {
    const first = await open();
    await first.close();
    await nodeFs.mkdir(path.join(maildir, 'plain'));
    await nodeFs.writeFile(path.join(maildir, '.file'), '');
    await nodeFs.mkdir(path.join(maildir, '.INBOX'));
    await nodeFs.mkdir(path.join(maildir, '.a..b'));
    await nodeFs.mkdir(path.join(maildir, '.Found'));
    const store = await open();
    expect((await store.listMailboxes(ALICE)).map((b) => b.name)).toEqual(['INBOX', 'Drafts', 'Found', 'Junk', 'Sent', 'Trash']);
  });
});

describe('reading and reloading', () => {
  it('reads again under the lock when the file moved away meanwhile, and says so when the message is gone', async () => {
    let store: MaildirStore | undefined;
    let onMissing: (() => Promise<unknown>) | undefined;
    let faults = 0;
    const fs = new Proxy(nodeFs, {
      get(target, prop, receiver) {
        if (prop !== 'readFile') return Reflect.get(target, prop, receiver);
        return async (file: string, ...rest: unknown[]) => {
          if (onMissing && /[/\\](new|cur)[/\\]/.test(String(file))) {
            const act = onMissing;
            onMissing = undefined;
            faults++;
            // The change completes between the lookup of the file name and the open: the name is stale.
            await act();
            throw errno('ENOENT');
          }
          return (target.readFile as (...a: unknown[]) => Promise<unknown>)(file, ...rest);
        };
      },
    }) as FileSystem;
    store = await open(fs);
    const m = await store.deliver(ALICE, msg(1));
    // A flag change renames the file while the read is under way: the read is answered from the new name.
    onMissing = () => store!.setFlags(ALICE, 'INBOX', [m.uid], ['\\Seen'], 'add');
    expect(await store.read(ALICE, 'INBOX', m.uid)).toEqual(msg(1));
    // A removal while the read is under way: the message is gone, and the error says so.
    onMissing = () => store!.remove(ALICE, 'INBOX', [m.uid]);
    await expect(store.read(ALICE, 'INBOX', m.uid)).rejects.toMatchObject({ code: 'NONEXISTENT', message: `message ${m.uid} in INBOX was removed` });
    expect(faults).toBe(2);
    await expect(store.read(ALICE, 'INBOX', 99)).rejects.toMatchObject({ code: 'NONEXISTENT', message: 'no message 99 in INBOX' });
  });

  it('keeps existing folders (and their UIDVALIDITY) when the user file is lost', async () => {
    const first = await open();
    const sent = await first.append(ALICE, 'Sent', msg(1));
    const before = await first.mailboxInfo(ALICE, 'Sent');
    await first.close();
    await nodeFs.unlink(path.join(root, ALICE, 'maillab-user.json'));
    const second = await open();
    expect(await second.mailboxInfo(ALICE, 'Sent')).toMatchObject({ uidValidity: before.uidValidity, exists: 1 });
    expect((await second.messages(ALICE, 'Sent'))[0]!.uid).toBe(sent.uid);
  });

  it('hands out UIDVALIDITY values from the clock, within 32 bits, and marks folders as Maildir++ folders', async () => {
    const start = Math.floor(Date.now() / 1000);
    const store = await open();
    for (const box of await store.listMailboxes(ALICE)) {
      expect(box.uidValidity).toBeGreaterThanOrEqual(start);
      expect(box.uidValidity).toBeLessThanOrEqual(0xffffffff);
    }
    expect((await nodeFs.stat(path.join(maildir, '.Sent', 'maildirfolder'))).size).toBe(0);
  });

  it('trusts the size in a file name over the file, as Maildir readers do', async () => {
    const first = await open();
    const m = await first.deliver(ALICE, msg(1));
    await first.close();
    await nodeFs.appendFile(path.join(maildir, 'new', m.id), 'grown behind our back\r\n');
    const second = await open();
    expect((await second.messages(ALICE, 'INBOX'))[0]!.size).toBe(m.size);
  });

  it('a vanished file alone is a change: new HIGHESTMODSEQ, index rewritten', async () => {
    const first = await open();
    const [a] = [await first.deliver(ALICE, msg(1)), await first.deliver(ALICE, msg(2))];
    const before = await first.mailboxInfo(ALICE, 'INBOX');
    await first.close();
    await nodeFs.unlink(path.join(maildir, 'new', a!.id));
    const second = await open();
    expect((await second.mailboxInfo(ALICE, 'INBOX')).highestModseq).toBe(before.highestModseq + 1);
    const text = await nodeFs.readFile(path.join(maildir, 'maillab-index'), 'utf8');
    expect(text.split('\n').filter(Boolean)).toHaveLength(2); // header and the one live message
  });

  it('a found file keeps the UID it was given, also after later deliveries', async () => {
    const first = await open();
    await first.deliver(ALICE, msg(1));
    await first.close();
    await nodeFs.writeFile(path.join(maildir, 'new', '1.found'), 'Subject: found\r\n\r\n');
    const second = await open();
    const found = (await second.messages(ALICE, 'INBOX')).find((m) => m.id === '1.found')!;
    const later = await second.deliver(ALICE, msg(3));
    await second.close();
    const third = await open();
    const uids = new Map((await third.messages(ALICE, 'INBOX')).map((m) => [m.id, m.uid]));
    expect(uids.get('1.found')).toBe(found.uid);
    expect(uids.get(later.id)).toBe(later.uid);
  });

  it('a clean reload leaves the index log as it is', async () => {
    const first = await open();
    for (let i = 1; i <= 3; i++) await first.deliver(ALICE, msg(i));
    await first.setFlags(ALICE, 'INBOX', [1], ['k'], 'add');
    await first.close();
    const index = path.join(maildir, 'maillab-index');
    const text = await nodeFs.readFile(index, 'utf8');
    await (await open()).listMailboxes(ALICE);
    expect(await nodeFs.readFile(index, 'utf8')).toBe(text);
  });
});

describe('message changes', () => {
  it('a keyword change leaves a message in new/; a system flag moves it to cur/', async () => {
    const store = await open();
    const m = await store.deliver(ALICE, msg(1));
    await store.setFlags(ALICE, 'INBOX', [m.uid], ['$Label'], 'add');
    expect(await nodeFs.readdir(path.join(maildir, 'new'))).toEqual([m.id]);
    await store.setFlags(ALICE, 'INBOX', [m.uid], ['\\Flagged'], 'add');
    expect(await nodeFs.readdir(path.join(maildir, 'new'))).toEqual([]);
    expect(await nodeFs.readdir(path.join(maildir, 'cur'))).toEqual([`${m.id}:2,F`]);
  });

  it('copies, moves and an INBOX rename give all new messages one new modseq', async () => {
    const store = await open();
    for (let i = 1; i <= 3; i++) await store.deliver(ALICE, msg(i));
    for (const [act, target] of [
      [() => store.copy(ALICE, 'INBOX', [1, 2], 'Trash'), 'Trash'],
      [() => store.move(ALICE, 'INBOX', [1, 2], 'Junk'), 'Junk'],
      [() => store.renameMailbox(ALICE, 'INBOX', 'Old'), 'Old'],
    ] as const) {
      const before = (await store.mailboxInfo(ALICE, target).catch(() => ({ highestModseq: 0 }))).highestModseq;
      await act();
      const info = await store.mailboxInfo(ALICE, target);
      const modseqs = new Set((await store.messages(ALICE, target)).map((m) => m.modseq));
      expect([...modseqs], target).toEqual([info.highestModseq]);
      expect(info.highestModseq, target).toBeGreaterThan(before);
    }
  });

  it('a move between folders keeps the Maildir id (and so the POP3 UIDL); a copy gets a new one', async () => {
    const store = await open();
    const m = await store.deliver(ALICE, msg(1));
    await store.copy(ALICE, 'INBOX', [m.uid], 'Trash');
    expect((await store.messages(ALICE, 'Trash'))[0]!.id).not.toBe(m.id);
    await store.move(ALICE, 'INBOX', [m.uid], 'Junk');
    expect((await store.messages(ALICE, 'Junk'))[0]!.id).toBe(m.id);
  });

  it('an INBOX rename is recorded: after a restart the messages keep UIDs and keywords', async () => {
    const first = await open();
    await first.deliver(ALICE, msg(1));
    await first.setFlags(ALICE, 'INBOX', [1], ['Kw'], 'add');
    await first.renameMailbox(ALICE, 'INBOX', 'Old');
    const before = await first.messages(ALICE, 'Old');
    await first.close();
    const second = await open();
    expect(await second.messages(ALICE, 'Old')).toEqual(before);
    expect(before[0]!.flags).toEqual(['Kw']);
  });

  it('renaming an empty INBOX expunges nothing', async () => {
    const store = await open();
    const changes: StoreChange[] = [];
    store.onChange((c) => changes.push(c));
    await store.renameMailbox(ALICE, 'INBOX', 'Empty');
    expect(changes).toEqual([{ type: 'mailboxes', user: ALICE }]);
  });
});

describe('boundaries of the API', () => {
  it('refuses unusable user addresses', () => {
    for (const address of ['', '.', '..', 'a/b@x', 'a\\b@x', 'a\0b@x']) {
      expect(() => new MaildirStore({ root, users: [{ address, password: 'p' }], fsync: false }), JSON.stringify(address)).toThrow(/unusable user address/);
    }
  });

  it('resolves logins: trimmed, case-insensitive, a full address must match exactly', async () => {
    const store = await open();
    expect(store.resolveUser('  Alice  ')).toBe(ALICE);
    expect(store.resolveUser('alice@other.test')).toBeUndefined();
    expect(store.resolveUser('nobody')).toBeUndefined();
    expect(store.authenticate('alice', 'pw')).toBe(ALICE);
    expect(store.authenticate('alice', 'pw ')).toBeUndefined();
    expect(store.lockMaildrop('nobody@example.test')).toBeUndefined();
    expect(store.lockMaildrop('ALICE@example.test')).toBeTypeOf('function');
  });

  it('takes folder directory names up to 200 bytes', async () => {
    const store = await open();
    await store.createMailbox(ALICE, 'x'.repeat(199));
    await expect(store.createMailbox(ALICE, 'y'.repeat(200))).rejects.toMatchObject({ code: 'CANNOT', message: 'mailbox name too long' });
    await expect(store.createMailbox(ALICE, 'ü'.repeat(100))).rejects.toBeInstanceOf(MailStoreError);
  });

  it('renames a mailbox with its inferiors only, and refuses when an inferior\'s new name is taken', async () => {
    const store = await open();
    await store.createMailbox(ALICE, 'A/B');
    await store.createMailbox(ALICE, 'AB');
    await store.createMailbox(ALICE, 'C/B');
    await store.deleteMailbox(ALICE, 'C'); // C/B stays, without its parent
    await expect(store.renameMailbox(ALICE, 'A', 'C')).rejects.toMatchObject({ code: 'ALREADYEXISTS', message: 'mailbox C/B already exists' });
    await expect(store.renameMailbox(ALICE, 'A', 'AB')).rejects.toMatchObject({ message: 'mailbox AB already exists' });
    await expect(store.renameMailbox(ALICE, 'A', 'A/B/C')).rejects.toMatchObject({ message: 'cannot rename A into itself' });
    await expect(store.renameMailbox(ALICE, 'Nope', 'X')).rejects.toMatchObject({ message: 'no mailbox Nope' });
    await expect(store.createMailbox(ALICE, 'AB')).rejects.toMatchObject({ message: 'mailbox AB already exists' });
    await expect(store.deleteMailbox(ALICE, 'Nope')).rejects.toMatchObject({ message: 'no mailbox Nope' });
    await expect(store.deleteMailbox(ALICE, 'inbox')).rejects.toMatchObject({ message: 'INBOX cannot be deleted' });
    await expect(store.messages('nobody@example.test', 'INBOX')).rejects.toMatchObject({ code: 'NOUSER', message: 'no user nobody@example.test' });
    await expect(store.messages(ALICE, 'a//b')).rejects.toMatchObject({ message: 'invalid mailbox name "a//b"' });
    await store.renameMailbox(ALICE, 'A', 'D');
    const names = (await store.listMailboxes(ALICE)).map((b) => b.name);
    expect(names).toEqual(expect.arrayContaining(['AB', 'D', 'D/B', 'C/B']));
    expect(names).not.toContain('A/B');
  });

  it('deleting a mailbox forgets its special use but keeps its subscription, durably (RFC 3501 §6.3.6)', async () => {
    const store = await open();
    await store.deleteMailbox(ALICE, 'Junk');
    await store.close();
    const again = await open();
    // LIST (SUBSCRIBED) shows it as \NonExistent (RFC 5258 §3.1); UNSUBSCRIBE can still remove it.
    expect(await again.subscriptions(ALICE)).toContain('Junk');
    await again.createMailbox(ALICE, 'Junk');
    const junk = await again.mailboxInfo(ALICE, 'Junk');
    expect(junk.subscribed).toBe(true);
    expect(junk.specialUse).toBeUndefined();
    await again.deleteMailbox(ALICE, 'Junk');
    // A subscribed mailbox renamed onto the kept subscription is subscribed once.
    await again.renameMailbox(ALICE, 'Sent', 'Junk');
    expect((await again.subscriptions(ALICE)).filter((name) => name === 'Junk')).toEqual(['Junk']);
    await again.setSubscribed(ALICE, 'Junk', false);
    expect(await again.subscriptions(ALICE)).not.toContain('Junk');
  });

  it('announces subscription changes only when something changed', async () => {
    const store = await open();
    const changes: StoreChange[] = [];
    store.onChange((c) => changes.push(c));
    await store.setSubscribed(ALICE, 'inbox', true);
    expect(changes).toEqual([]);
    await store.setSubscribed(ALICE, 'INBOX', false);
    expect((await store.mailboxInfo(ALICE, 'INBOX')).subscribed).toBe(false);
    expect(changes).toEqual([{ type: 'mailboxes', user: ALICE }]);
  });

  it('tells every listener, whatever one of them does, and stops telling one that left', async () => {
    const store = await open();
    const seen: string[] = [];
    store.onChange(() => {
      throw new Error('listener bug');
    });
    const leave = store.onChange((c) => seen.push(`a:${c.type}`));
    store.onChange((c) => seen.push(`b:${c.type}`));
    await store.deliver(ALICE, msg(1));
    leave();
    await store.deliver(ALICE, msg(2));
    expect(seen).toEqual(['a:exists', 'b:exists', 'b:exists']);
  });

  it('counts unseen messages by the \\Seen flag alone', async () => {
    const store = await open();
    for (let i = 1; i <= 3; i++) await store.deliver(ALICE, msg(i));
    await store.setFlags(ALICE, 'INBOX', [1], ['\\Seen'], 'add');
    await store.setFlags(ALICE, 'INBOX', [2], ['\\Flagged', '\\Answered', '\\Deleted', '\\Draft'], 'add');
    expect(await store.mailboxInfo(ALICE, 'INBOX')).toMatchObject({ exists: 3, unseen: 2 });
  });
});
