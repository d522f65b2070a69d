// MULTIAPPEND (RFC 3502) with UIDPLUS's APPENDUID, and APPEND of a literal8 (RFC 3516 §4.4).
import { RawClient } from './raw-client.test-helper.js';
import { describe, expect, test } from 'vitest';
import { STORES, type StoreFactory } from './stores.test-helper.js';
import { BOB, useWire } from './wire.test-helper.js';

const lines = (...l: string[]) => l.map((x) => x + '\r\n').join('');

// The two messages of RFC 3502's example (§6.3.11); their sizes are the example's {329} and {295}.
const FIRST = lines(
  'Date: Mon, 7 Feb 1994 21:52:25 -0800 (PST)',
  'From: Fred Foobar <foobar@Blurdybloop.example.COM>',
  'Subject: afternoon meeting',
  'To: mooch@owatagu.example.net',
  'Message-Id: <B27397-0100000@Blurdybloop.example.COM>',
  'MIME-Version: 1.0',
  'Content-Type: TEXT/PLAIN; CHARSET=US-ASCII',
  '',
  'Hello Joe, do you think we can meet at 3:30 tomorrow?',
);
const SECOND = lines(
  'Date: Mon, 7 Feb 1994 22:43:04 -0800 (PST)',
  'From: Joe Mooch <mooch@OWaTaGu.example.net>',
  'Subject: Re: afternoon meeting',
  'To: foobar@blurdybloop.example.com',
  'Message-Id: <a0434793874930@OWaTaGu.example.net>',
  'MIME-Version: 1.0',
  'Content-Type: TEXT/PLAIN; CHARSET=US-ASCII',
  '',
  '3:30 is fine with me.',
);

describe.each(STORES)('MULTIAPPEND on the %s', (_name, makeStore: StoreFactory) => {
  const wire = useWire(makeStore);
  const last = (l: string[]) => l[l.length - 1];

  test('is advertised', async () => {
    const caps = (await wire.ok('CAPABILITY'))[0]!.split(' ');
    expect(caps).toEqual(expect.arrayContaining(['MULTIAPPEND', 'UIDPLUS']));
  });

  test('RFC 3502 §6.3.11: two messages with synchronizing literals, then a mailbox that does not exist', async () => {
    expect([Buffer.byteLength(FIRST), Buffer.byteLength(SECOND)]).toEqual([329, 295]);
    await wire.ok('CREATE saved-messages');
    const c = wire.client;
    c.send('A003 APPEND saved-messages (\\Seen) {329}\r\n');
    expect(await c.line()).toMatch(/^\+ /);
    c.send(FIRST + ' (\\Seen) " 7-Feb-1994 22:43:04 -0800" {295}\r\n');
    expect(await c.line()).toMatch(/^\+ /);
    c.send(SECOND + '\r\n');
    const validity = (await wire.store.mailboxInfo(BOB, 'saved-messages')).uidValidity;
    expect(await c.until('A003')).toEqual([`A003 OK [APPENDUID ${validity} 1:2] APPEND completed`]);
    const stored = await wire.store.messages(BOB, 'saved-messages');
    expect(stored.map((m) => [m.uid, m.flags, m.size])).toEqual([
      [1, ['\\Seen'], 329],
      [2, ['\\Seen'], 295],
    ]);
    expect(stored[1]!.internalDate).toBe(Date.UTC(1994, 1, 8, 6, 43, 4));
    expect((await wire.store.read(BOB, 'saved-messages', 2)).toString()).toBe(SECOND);

    c.send('A004 APPEND bogusname (\\Flagged) {1023}\r\n');
    // The server may answer before the literal (RFC 3502 §6.3.11); ours reads it first, then refuses.
    expect(await c.line()).toMatch(/^\+ /);
    c.send('x'.repeat(1023) + '\r\n');
    expect(await c.until('A004')).toEqual([expect.stringMatching(/^A004 NO \[TRYCREATE\] /)]);
  });

  test('each message keeps its own flags and date; APPENDUID gives the UID set', async () => {
    const res = await wire.run(`APPEND INBOX (\\Flagged) {${FIRST.length}+}\r\n${FIRST} {${SECOND.length}+}\r\n${SECOND} (\\Draft $Later) "01-Jan-2020 00:00:00 +0000" {${FIRST.length}+}\r\n${FIRST}`);
    const { uidValidity } = await wire.store.mailboxInfo(BOB, 'INBOX');
    expect(last(res)).toMatch(new RegExp(`^t\\d+ OK \\[APPENDUID ${uidValidity} 1:3\\] `));
    const stored = await wire.store.messages(BOB, 'INBOX');
    expect(stored.map((m) => m.flags)).toEqual([['\\Flagged'], [], ['\\Draft', '$Later']]);
    expect(stored[2]!.internalDate).toBe(Date.UTC(2020, 0, 1));
  });

  test('all or none: an empty message, a bad flag or date, or a failing store leave the mailbox as it was', async () => {
    const before = await wire.store.mailboxInfo(BOB, 'INBOX');
    expect(last(await wire.run(`APPEND INBOX {${FIRST.length}+}\r\n${FIRST} {0}\r\n`))).toMatch(/^t\d+ NO /);
    expect(last(await wire.run(`APPEND INBOX {${FIRST.length}+}\r\n${FIRST} (\\Bogus) {${SECOND.length}+}\r\n${SECOND}`))).toMatch(/^t\d+ BAD /);
    expect(last(await wire.run(`APPEND INBOX {${FIRST.length}+}\r\n${FIRST} "31-Feb-2020 x" {${SECOND.length}+}\r\n${SECOND}`))).toMatch(/^t\d+ BAD /);
    expect(last(await wire.run(`APPEND INBOX {${FIRST.length}+}\r\n${FIRST} junk`))).toMatch(/^t\d+ BAD /);
    // The store fails on the third message: the first two are taken away again, and no other session hears of them.
    const store = wire.store;
    // Where each store writes one message: the Maildir store's file writer, the memory store's append.
    const writer: { store: (...args: never[]) => Promise<unknown> } | undefined = (store as unknown as { ops?: { files: { store: (...args: never[]) => Promise<unknown> } } }).ops?.files;
    const target = writer ?? (store as unknown as { store: (...args: never[]) => Promise<unknown> });
    const key = writer ? 'store' : ('append' as 'store');
    const original = target[key].bind(target);
    let calls = 0;
    target[key] = async (...args: never[]) => {
      if (++calls === 3) throw new Error('disk full');
      return original(...args);
    };
    const watcher = await RawClient.login(wire.server.endpoint.port);
    await watcher.command('s', 'SELECT INBOX');
    const three = `APPEND INBOX {${FIRST.length}+}\r\n${FIRST} {${SECOND.length}+}\r\n${SECOND} {${FIRST.length}+}\r\n${FIRST}`;
    expect(last(await wire.run(three))).toMatch(/^t\d+ (NO|BAD) /);
    target[key] = original;
    expect(calls).toBe(3);
    expect(await watcher.command('n', 'NOOP')).toEqual([expect.stringMatching(/^n OK/)]);
    watcher.close();
    expect((await store.messages(BOB, 'INBOX')).length).toBe(before.exists);
    expect(last(await wire.run(three))).toMatch(/^t\d+ OK /);
  });

  test('a literal8 is taken as it is; one the store would change is refused with UNKNOWN-CTE', async () => {
    const eight = Buffer.concat([Buffer.from('Subject: bin\r\nContent-Transfer-Encoding: 8bit\r\n\r\n'), Buffer.from([0xc3, 0xa4, 0x0d, 0x0a])]);
    wire.client.send(Buffer.concat([Buffer.from(`A1 APPEND INBOX ~{${eight.length}}\r\n`)]));
    expect(await wire.client.line()).toMatch(/^\+ /);
    wire.client.send(Buffer.concat([eight, Buffer.from('\r\n')]));
    expect(last(await wire.client.until('A1'))).toMatch(/^A1 OK \[APPENDUID \d+ 1\] /);
    expect(await wire.store.read(BOB, 'INBOX', 1)).toEqual(eight);
    for (const bad of [Buffer.from('Subject: x\r\n\r\na\x00b\r\n'), Buffer.from('Subject: x\r\n\r\na\nb\r\n')]) {
      const res = await wire.run(Buffer.concat([Buffer.from(`APPEND INBOX ~{${bad.length}+}\r\n`), bad]).toString('latin1'));
      expect(last(res)).toMatch(/^t\d+ NO \[UNKNOWN-CTE\] /);
    }
    expect((await wire.store.messages(BOB, 'INBOX')).length).toBe(1);
    // Only APPEND takes a literal8.
    expect(last(await wire.run('CREATE ~{3+}\r\nabc'))).toMatch(/^t\d+ BAD /);
  });
});
