// CREATE with special uses (RFC 6154 §3, capability CREATE-SPECIAL-USE): its example (§5.3) and the edges.
import { describe, expect, test } from 'vitest';
import { STORES, type StoreFactory } from './stores.test-helper.js';
import { BOB, useWire } from './wire.test-helper.js';

describe.each(STORES)('CREATE (USE (...)) on the %s', (_name, makeStore: StoreFactory) => {
  const wire = useWire(makeStore);
  const last = (lines: string[]) => lines[lines.length - 1];

  test('is advertised as CREATE-SPECIAL-USE', async () => {
    expect((await wire.ok('CAPABILITY'))[0]!.split(' ')).toContain('CREATE-SPECIAL-USE');
  });

  test('RFC 6154 §5.3: two uses at once, and \\All, are refused with USEATTR and create nothing', async () => {
    // The store gives a mailbox one special use, so the example's (\Drafts \Sent) is refused, as §3 allows for a use
    // that "cannot be assigned to the specified mailbox"; \All (a virtual mailbox) is not offered either.
    expect(last(await wire.run('CREATE MySpecial (USE (\\Drafts \\Sent))'))).toMatch(/^t\d+ NO \[USEATTR\] /);
    expect(last(await wire.run('CREATE Everything (USE (\\All))'))).toMatch(/^t\d+ NO \[USEATTR\] \\All not supported$/);
    const names = (await wire.store.listMailboxes(BOB)).map((m) => m.name);
    expect(names).not.toContain('MySpecial');
    expect(names).not.toContain('Everything');
  });

  test('one use is kept and listed; an empty USE list creates a plain mailbox', async () => {
    await wire.ok('CREATE MySpecial (USE (\\Drafts))');
    await wire.ok('CREATE "Old mail/2024" (USE (\\archive))');
    await wire.ok('CREATE Plain (USE ())');
    expect(await wire.ok('LIST "" (MySpecial "Old mail/2024" Plain) RETURN (SPECIAL-USE)')).toEqual([
      '* LIST (\\HasNoChildren \\Drafts) "/" "MySpecial"',
      '* LIST (\\HasNoChildren \\Archive) "/" "Old mail/2024"',
      '* LIST (\\HasNoChildren) "/" "Plain"',
    ]);
    expect(await wire.ok('LIST (SPECIAL-USE) "" "Old*"')).toEqual(['* LIST (\\HasNoChildren \\Archive) "/" "Old mail/2024"']);
  });

  test('unknown uses are USEATTR, unknown parameters BAD, an existing name ALREADYEXISTS', async () => {
    expect(last(await wire.run('CREATE X (USE (\\Flagged))'))).toMatch(/^t\d+ NO \[USEATTR\] /);
    expect(last(await wire.run('CREATE X (USE (\\Important \\Sent))'))).toMatch(/^t\d+ NO \[USEATTR\] /);
    expect(last(await wire.run('CREATE X (COLOR (red))'))).toMatch(/^t\d+ BAD /);
    expect(last(await wire.run('CREATE X (USE \\Sent)'))).toMatch(/^t\d+ BAD /);
    expect(last(await wire.run('CREATE Sent (USE (\\Sent))'))).toMatch(/^t\d+ NO \[ALREADYEXISTS\] /);
    expect((await wire.store.listMailboxes(BOB)).map((m) => m.name)).not.toContain('X');
  });
});
