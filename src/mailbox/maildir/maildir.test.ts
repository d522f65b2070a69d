// The pure parts of the Maildir store, case by case: flag letters and keywords, folder names, file names and the
// index log's parsing and compaction rule. The store tests (store.test.ts) cover how they work together on disk.
import { describe, expect, it } from 'vitest';
import { MailStoreError } from '../store-api.js';
import { baseOf, compareNames, lettersOf, sizeOf, withInfo } from './files.js';
import { applyFlags, flagsOf, isKeyword, sameKeywords } from './flags.js';
import { COMPACT_SLACK, addEntry, needsCompaction, parseIndex, uniqueExisting, type Folder } from './index-log.js';
import { MAX_FOLDER_DIR_BYTES, compareMailboxNames, decodeFolderName, encodeFolderName, isInferior, normalizeName, superiors } from './names.js';

describe('flags', () => {
  it('maps letters to system flags in letter order, then keywords; unknown letters give no flag', () => {
    expect(flagsOf('DFPRST', ['$Work'])).toEqual(['\\Draft', '\\Flagged', '\\Answered', '\\Seen', '\\Deleted', '$Work']);
    expect(flagsOf('', [])).toEqual([]);
    expect(flagsOf('a', ['k'])).toEqual(['k']);
  });

  it('adds, removes and sets, keeping letters it does not map', () => {
    expect(applyFlags('PS', ['Old'], ['\\Flagged', 'New'], 'add')).toEqual({ letters: 'FPS', keywords: ['Old', 'New'] });
    expect(applyFlags('PS', ['Old'], ['\\seen', 'old'], 'remove')).toEqual({ letters: 'P', keywords: [] });
    expect(applyFlags('FPS', ['Old'], ['\\Draft'], 'set')).toEqual({ letters: 'DP', keywords: [] });
    expect(applyFlags('', [], ['\\Deleted', '\\Answered'], 'set').letters).toBe('RT');
  });

  it('treats keywords without regard to case, keeping the spelling already there', () => {
    expect(applyFlags('', ['Foo'], ['FOO', 'bar', 'BAR'], 'set').keywords).toEqual(['Foo', 'bar']);
    expect(applyFlags('', ['Foo'], ['foo', 'Baz', 'baz'], 'add').keywords).toEqual(['Foo', 'Baz']);
    expect(applyFlags('', ['Foo', 'Bar'], ['BAR'], 'remove').keywords).toEqual(['Foo']);
  });

  it('ignores \\Recent, unknown system flags and non-atoms', () => {
    expect(applyFlags('', [], ['\\Recent', '\\Bogus', 'two words', 'par(en', 'a*', 'b%', 'q"', 'l{', 'r]', '', 'ctl\x01', 'del\x7f'], 'add')).toEqual({ letters: '', keywords: [] });
    for (const ok of ['$Label1', 'Junk', 'NonJunk', 'a.b-c_d', 'ü']) expect(isKeyword(ok), ok).toBe(true);
    for (const bad of ['\\Seen', 'a b', '(', ')', '*', '%', '"', '{', ']', '', '\t', '\x7f']) expect(isKeyword(bad), JSON.stringify(bad)).toBe(false);
  });

  it('compares keyword lists as case-insensitive sets of the same size', () => {
    expect(sameKeywords(['A', 'b'], ['B', 'a'])).toBe(true);
    expect(sameKeywords(['A'], ['A', 'B'])).toBe(false);
    expect(sameKeywords(['A', 'B'], ['A'])).toBe(false);
    expect(sameKeywords(['A'], ['C'])).toBe(false);
    expect(sameKeywords([], [])).toBe(true);
  });
});

describe('folder names', () => {
  it.each([
    ['iNbOx', 'INBOX'],
    ['inbox/a/b', 'INBOX/a/b'],
    ['a/inbox', 'a/inbox'],
    ['INBOXES/x', 'INBOXES/x'],
  ])('normalizes %j to %j (INBOX in any case, also as the first level)', (name, canonical) => {
    expect(normalizeName(name)).toBe(canonical);
  });

  it('refuses empty names and levels and control characters', () => {
    for (const bad of ['', '/', '/a', 'a/', 'a//b', 'a\x00b', 'a\x1fb', 'a\x7fb', 42 as unknown as string]) {
      expect(() => normalizeName(bad), JSON.stringify(bad)).toThrow(MailStoreError);
    }
    expect(normalizeName('a\x20b~')).toBe('a b~');
  });

  it('encodes and decodes Maildir++ directory names', () => {
    expect(encodeFolderName('Sent')).toBe('.Sent');
    expect(encodeFolderName('a.b/%c')).toBe('.a%2Eb.%25c');
    expect(decodeFolderName('.a%2Eb.%25c')).toBe('a.b/%c');
    expect(decodeFolderName('.Sent')).toBe('Sent');
    expect(decodeFolderName('.inbox')).toBe('INBOX');
    for (const bad of ['Sent', '.', '..', '.a..b', '.a.', '.%ZZ', '.%00']) expect(decodeFolderName(bad), bad).toBeUndefined();
  });

  it('lists superiors outermost first and tells inferiors from mere prefixes', () => {
    expect(superiors('a/b/c')).toEqual(['a', 'a/b']);
    expect(superiors('a')).toEqual([]);
    expect(isInferior('a/b', 'a')).toBe(true);
    expect(isInferior('a/b/c', 'a')).toBe(true);
    expect(isInferior('ab', 'a')).toBe(false);
    expect(isInferior('a', 'a')).toBe(false);
  });

  it('orders INBOX first, then by name', () => {
    expect(['b', 'INBOX', 'B', 'a', 'INBOX/x'].sort(compareMailboxNames)).toEqual(['INBOX', 'B', 'INBOX/x', 'a', 'b']);
    expect(compareMailboxNames('x', 'x')).toBe(0);
    expect(compareMailboxNames('INBOX', 'A')).toBe(-1);
    expect(compareMailboxNames('A', 'INBOX')).toBe(1);
    expect(compareMailboxNames('a', 'b')).toBe(-1);
    expect(compareMailboxNames('b', 'a')).toBe(1);
    expect(MAX_FOLDER_DIR_BYTES).toBe(200);
  });
});

describe('message file names', () => {
  it('splits base name, info letters and size', () => {
    expect(['123.4_5.host,S=10:2,FS', '123.4_5.host'].map(baseOf)).toEqual(['123.4_5.host,S=10', '123.4_5.host']);
    expect(['x:2,SF', 'x:2,', 'x', 'x:1,S'].map(lettersOf)).toEqual(['FS', '', '', '']);
    expect(sizeOf('1.2_3.h,S=1234')).toBe(1234);
    expect(sizeOf('1.2_3.h,S=1234,W=1300')).toBe(1234);
    expect(sizeOf('1.2_3.h')).toBeUndefined();
    expect(withInfo('base', 'RS')).toBe('base:2,RS');
  });

  it('orders names by their leading time, then as text', () => {
    expect(compareNames('99.x', '100.x')).toBeLessThan(0);
    expect(compareNames('100.x', '99.x')).toBeGreaterThan(0);
    expect(compareNames('5.b', '5.a')).toBeGreaterThan(0);
    expect(compareNames('5.a', '5.b')).toBeLessThan(0);
    expect(compareNames('5.a', '5.a')).toBe(0);
    expect(compareNames('zeta', 'alpha')).toBeGreaterThan(0);
    expect(compareNames('alpha', '7.x')).toBeGreaterThan(0);
  });
});

describe('index log', () => {
  const header = (extra: object = {}) => JSON.stringify({ v: 1, uidValidity: 77, uidNext: 1, modseq: 1, ...extra });
  const lines = (...l: string[]) => l.join('\n') + '\n';

  it('reads adds, keyword changes and expunges', () => {
    const index = parseIndex(
      lines(
        header(),
        JSON.stringify({ a: 1, id: 'one', d: 10, m: 2 }),
        JSON.stringify({ a: 2, id: 'two', d: 20, m: 3, k: ['K'] }),
        JSON.stringify({ f: 1, m: 4, k: ['X'] }),
        JSON.stringify({ f: 2, m: 5 }),
        JSON.stringify({ f: 9, m: 6, k: ['lost'] }),
        JSON.stringify({ x: [1, 9], m: 7 }),
      ),
    );
    expect(index.header?.uidValidity).toBe(77);
    expect([...index.known]).toEqual([['two', { uid: 2, date: 20, modseq: 5, keywords: [] }]]);
    expect(index).toMatchObject({ uidNext: 3, modseq: 7, records: 6, damaged: false });
  });

  it('never hands out a UID again: uidNext is the larger of the header and the highest UID seen', () => {
    expect(parseIndex(lines(header({ uidNext: 10 }), JSON.stringify({ a: 3, id: 'a', d: 0, m: 1 }))).uidNext).toBe(10);
    expect(parseIndex(lines(header({ uidNext: 2 }), JSON.stringify({ a: 3, id: 'a', d: 0, m: 1 }))).uidNext).toBe(4);
    expect(parseIndex(lines(header({ uidNext: 'x' }))).uidNext).toBe(1);
    expect(parseIndex(lines(header({ modseq: 9 }))).modseq).toBe(9);
  });

  it('an expunge record removes only the message that had that UID', () => {
    // The same file re-added under a new UID (a copy back into the folder) survives the expunge of its old UID.
    const index = parseIndex(lines(header(), JSON.stringify({ a: 1, id: 'f', d: 0, m: 1 }), JSON.stringify({ a: 2, id: 'f', d: 0, m: 2 }), JSON.stringify({ x: [1], m: 3 })));
    expect(index.known.get('f')?.uid).toBe(2);
  });

  it('marks torn and unparsable logs as damaged, and a bad header as unusable', () => {
    expect(parseIndex(header() + '\n{"a":1').damaged).toBe(true);
    expect(parseIndex(lines(header(), 'garbage', JSON.stringify({ a: 1, id: 'a', d: 0, m: 1 }))).known.size).toBe(1);
    expect(parseIndex(lines(header(), 'garbage')).damaged).toBe(true);
    expect(parseIndex(lines(header())).damaged).toBe(false);
    for (const bad of ['nonsense', JSON.stringify({ v: 1, uidValidity: 0 }), JSON.stringify({ v: 1, uidValidity: 1.5 }), JSON.stringify({ v: 1 })]) {
      const index = parseIndex(lines(bad));
      expect(index.header, bad).toBeUndefined();
      expect(index.damaged, bad).toBe(true);
    }
    expect(parseIndex('')).toMatchObject({ damaged: false, uidNext: 1, modseq: 1, records: 0 });
    expect(parseIndex('').header).toBeUndefined();
    // A last record that parses but lacks its newline is torn all the same: the next append would join it.
    expect(parseIndex(header() + '\n' + JSON.stringify({ a: 1, id: 'a', d: 0, m: 1 })).damaged).toBe(true);
  });

  it('ignores records of unknown shape and records without a modseq', () => {
    const index = parseIndex(lines(header({ modseq: 4 }), JSON.stringify({ z: 1, m: 2 }), JSON.stringify({ a: 1, id: 'a', d: 0 }), JSON.stringify({ f: 1 })));
    expect(index.modseq).toBe(4);
    expect(index.known.get('a')?.uid).toBe(1);
    expect(index.records).toBe(3);
  });

  it('compacts once the log exceeds the slack plus twice the live messages', () => {
    expect(needsCompaction(COMPACT_SLACK, 0)).toBe(false);
    expect(needsCompaction(COMPACT_SLACK + 1, 0)).toBe(true);
    expect(needsCompaction(COMPACT_SLACK + 20, 10)).toBe(false);
    expect(needsCompaction(COMPACT_SLACK + 21, 10)).toBe(true);
  });

  it('gives new entries ascending UIDs and finds existing ones once, in the order asked', () => {
    const folder: Folder = { name: 'F', dir: '/f', uidValidity: 1, uidNext: 5, highestModseq: 1, entries: [], byUid: new Map(), logRecords: 0, expunged: [], expungedFloor: 1 };
    const fields = { id: 'x', sub: 'new' as const, file: 'x', letters: '', keywords: [], size: 1, internalDate: 0 };
    const a = addEntry(folder, fields, 2);
    const b = addEntry(folder, { ...fields, id: 'y' }, 3);
    expect([a.uid, b.uid, folder.uidNext]).toEqual([5, 6, 7]);
    expect(folder.byUid.get(6)).toBe(b);
    expect(uniqueExisting(folder, [6, 1, 5, 6]).map((e) => e.uid)).toEqual([6, 5]);
  });
});
