// LIST-EXTENDED (RFC 5258): every example of its section 5, on the wire, on both stores, each with the mailboxes and
// subscriptions it assumes. Our answers differ from the RFC's text only where the RFC leaves a choice:
// - \HasChildren / \HasNoChildren come with every LIST response (RFC 5258 §4: a server MAY always send them);
// - INBOX is a mailbox like any other here (no \Marked, no \NoInferiors), and is listed where a pattern matches it;
// - REMOTE is accepted, but there are no remote mailboxes, so the examples' \Remote lines are absent;
// - a level that exists only above other mailboxes (a deleted parent, RFC 3501 §6.3.4) is listed, as \NonExistent
//   in the extended syntax, wherever a pattern matches it (example 11 says clients must handle both);
// - a name listed only for its CHILDINFO is left out when all its subscribed descendants are listed themselves: the
//   SHOULD of §3.5, which example 9's "*2" part follows and its "*" part does not (we follow it in both).
import { beforeEach, describe, expect, test } from 'vitest';
import { STORES, type StoreFactory } from './stores.test-helper.js';
import { useWire, type Wire } from './wire.test-helper.js';

let wire: Wire;
const ok = (command: string) => wire.ok(command);

/** The untagged responses of a LIST, in the order we send them (INBOX first, then by name). */
const list = (command: string) => ok(command);

/** A LIST response line as this server writes it. */
const L = (attributes: string, name: string, childInfo = false) =>
  `* LIST (${attributes}) "/" "${name}"${childInfo ? ' ("CHILDINFO" ("SUBSCRIBED"))' : ''}`;

/** Starts from INBOX alone, subscribed to nothing, then creates, subscribes and deletes as told. */
async function hierarchy(plan: { create?: string[]; subscribe?: string[]; remove?: string[] }) {
  const names = (lines: string[]) => lines.map((line) => /"([^"]*)"$/.exec(line)![1]!);
  for (const name of names(await ok('LSUB "" "*"'))) await ok(`UNSUBSCRIBE "${name}"`);
  for (const name of names(await ok('LIST "" "*"')).reverse()) if (name !== 'INBOX') await ok(`DELETE "${name}"`);
  for (const name of plan.create ?? []) await ok(`CREATE "${name}"`);
  for (const name of plan.subscribe ?? []) await ok(`SUBSCRIBE "${name}"`);
  for (const name of plan.remove ?? []) await ok(`DELETE "${name}"`);
}

describe.each(STORES)('RFC 5258 section 5 on the %s', (_name, makeStore: StoreFactory) => {
  const current = useWire(makeStore);
  beforeEach(() => {
    wire = current;
  });

  // The hierarchy of examples 1 to 6: "Fruit/Peach" was subscribed, then deleted.
  const fruit = () =>
    hierarchy({
      create: ['Fruit/Apple', 'Fruit/Banana', 'Fruit/Peach', 'Tofu', 'Vegetable/Broccoli', 'Vegetable/Corn'],
      subscribe: ['INBOX', 'Fruit/Banana', 'Fruit/Peach', 'Vegetable', 'Vegetable/Broccoli'],
      remove: ['Fruit/Peach'],
    });
  const everything = [
    L('\\HasNoChildren', 'INBOX'),
    L('\\HasChildren', 'Fruit'),
    L('\\HasNoChildren', 'Fruit/Apple'),
    L('\\HasNoChildren', 'Fruit/Banana'),
    L('\\HasNoChildren', 'Tofu'),
    L('\\HasChildren', 'Vegetable'),
    L('\\HasNoChildren', 'Vegetable/Broccoli'),
    L('\\HasNoChildren', 'Vegetable/Corn'),
  ];
  const subscribed = [
    L('\\HasNoChildren \\Subscribed', 'INBOX'),
    L('\\HasNoChildren \\Subscribed', 'Fruit/Banana'),
    L('\\NonExistent \\HasNoChildren \\Subscribed', 'Fruit/Peach'),
    L('\\HasChildren \\Subscribed', 'Vegetable'),
    L('\\HasNoChildren \\Subscribed', 'Vegetable/Broccoli'),
  ];
  const topLevel = [L('\\HasNoChildren', 'INBOX'), L('\\HasChildren', 'Fruit'), L('\\HasNoChildren', 'Tofu'), L('\\HasChildren', 'Vegetable')];

  test('example 1: the whole hierarchy', async () => {
    await fruit();
    expect(await list('LIST "" "*"')).toEqual(everything);
  });

  // Issue 10, finding 3: a subscribed name whose mailbox was deleted was left out.
  test('example 2: LIST (SUBSCRIBED) lists a subscribed name that does not exist as \\NonExistent', async () => {
    await fruit();
    expect(await list('LIST (SUBSCRIBED) "" "*"')).toEqual(subscribed);
    expect(await list('LIST (SUBSCRIBED) "" "Fruit/*"')).toEqual(subscribed.slice(1, 3));
    // LSUB lists the subscribed names too, whether or not they exist (RFC 3501 §6.3.9).
    expect(await ok('LSUB "" "Fruit/*"')).toEqual(['* LSUB () "/" "Fruit/Banana"', '* LSUB () "/" "Fruit/Peach"']);
  });

  test('example 3: RETURN (CHILDREN)', async () => {
    await fruit();
    expect(await list('LIST () "" "%" RETURN (CHILDREN)')).toEqual(topLevel);
  });

  test('example 4: LIST (REMOTE) with RETURN (CHILDREN)', async () => {
    await fruit();
    expect(await list('LIST (REMOTE) "" "%" RETURN (CHILDREN)')).toEqual(topLevel);
  });

  test('example 5: LIST (REMOTE SUBSCRIBED)', async () => {
    await fruit();
    expect(await list('LIST (REMOTE SUBSCRIBED) "" "*"')).toEqual(subscribed);
  });

  test('example 6: RETURN (SUBSCRIBED) marks the subscribed mailboxes and lists no name that does not exist', async () => {
    await fruit();
    const marked = new Set(['INBOX', 'Fruit/Banana', 'Vegetable', 'Vegetable/Broccoli']);
    expect(await list('LIST (REMOTE) "" "*" RETURN (SUBSCRIBED)')).toEqual(
      everything.map((line) => (marked.has(/"([^"]*)"$/.exec(line)![1]!) ? line.replace(')', ' \\Subscribed)') : line)),
    );
  });

  test('example 7: several patterns', async () => {
    await hierarchy({ create: ['Drafts', 'Sent/March2004', 'Sent/December2003', 'Sent/August2004'] });
    expect(await list('LIST "" ("INBOX" "Drafts" "Sent/%")')).toEqual([
      L('\\HasNoChildren', 'INBOX'),
      L('\\HasNoChildren', 'Drafts'),
      L('\\HasNoChildren', 'Sent/August2004'),
      L('\\HasNoChildren', 'Sent/December2003'),
      L('\\HasNoChildren', 'Sent/March2004'),
    ]);
  });

  describe('example 8: \\HasChildren and CHILDINFO', () => {
    const foo = (subscribe: string[]) => hierarchy({ create: ['Foo/Bar', 'Foo/Baz', 'Moo'], subscribe });

    test('the hierarchy, with RETURN (CHILDREN)', async () => {
      await foo([]);
      expect(await list('LIST "" "*"')).toEqual([L('\\HasNoChildren', 'INBOX'), L('\\HasChildren', 'Foo'), L('\\HasNoChildren', 'Foo/Bar'), L('\\HasNoChildren', 'Foo/Baz'), L('\\HasNoChildren', 'Moo')]);
      expect(await list('LIST "" "%" RETURN (CHILDREN)')).toEqual([L('\\HasNoChildren', 'INBOX'), L('\\HasChildren', 'Foo'), L('\\HasNoChildren', 'Moo')]);
    });

    test('A: only Foo/Baz subscribed', async () => {
      await foo(['Foo/Baz']);
      expect(await list('LIST (SUBSCRIBED) "" "*"')).toEqual([L('\\HasNoChildren \\Subscribed', 'Foo/Baz')]);
      expect(await list('LIST (SUBSCRIBED) "" "%"')).toEqual([]);
      expect(await list('LIST (SUBSCRIBED RECURSIVEMATCH) "" "%"')).toEqual([L('\\HasChildren', 'Foo', true)]);
    });

    test('A1: Foo subscribed as well: its CHILDINFO stays', async () => {
      await foo(['Foo/Baz', 'Foo']);
      expect(await list('LIST (SUBSCRIBED RECURSIVEMATCH) "" "%"')).toEqual([L('\\HasChildren \\Subscribed', 'Foo', true)]);
    });

    test('A2: Foo neither exists nor is subscribed', async () => {
      await hierarchy({ create: ['Foo/Bar', 'Foo/Baz', 'Moo'], subscribe: ['Foo/Baz'], remove: ['Foo'] });
      expect(await list('LIST (SUBSCRIBED RECURSIVEMATCH) "" "%"')).toEqual([L('\\NonExistent \\HasChildren', 'Foo', true)]);
    });

    test('B: nothing subscribed', async () => {
      await foo([]);
      expect(await list('LIST (SUBSCRIBED RECURSIVEMATCH) "" "%"')).toEqual([]);
    });

    test('C: Foo and Moo subscribed, no subscribed child: no CHILDINFO', async () => {
      await foo(['Foo', 'Moo']);
      expect(await list('LIST (SUBSCRIBED RECURSIVEMATCH) "" "%" RETURN (CHILDREN)')).toEqual([L('\\HasChildren \\Subscribed', 'Foo'), L('\\HasNoChildren \\Subscribed', 'Moo')]);
    });
  });

  // Issue 10, finding 3: CHILDINFO was sent for names whose subscribed descendants are all listed themselves (the
  // redundant responses §3.5 says to suppress), and not sent for a subscribed name with a subscribed descendant.
  describe('example 9: CHILDINFO whether or not the children match the pattern', () => {
    const plan = {
      create: ['foo2/bar1', 'foo2/bar2', 'baz2/bar2', 'baz2/bar22', 'baz2/bar222', 'eps2/mamba', 'qux2/bar2'],
      subscribe: ['foo2/bar1', 'foo2/bar2', 'baz2/bar2', 'baz2/bar22', 'baz2/bar222', 'eps2', 'eps2/mamba', 'qux2/bar2'],
      remove: ['qux2'],
    };
    const subscribedLines = [
      L('\\HasNoChildren \\Subscribed', 'baz2/bar2'),
      L('\\HasNoChildren \\Subscribed', 'baz2/bar22'),
      L('\\HasNoChildren \\Subscribed', 'baz2/bar222'),
      L('\\HasChildren \\Subscribed', 'eps2'),
      L('\\HasNoChildren \\Subscribed', 'eps2/mamba'),
      L('\\HasNoChildren \\Subscribed', 'foo2/bar1'),
      L('\\HasNoChildren \\Subscribed', 'foo2/bar2'),
      L('\\HasNoChildren \\Subscribed', 'qux2/bar2'),
    ];

    test('the hierarchy and the subscriptions', async () => {
      await hierarchy(plan);
      expect(await list('LIST "" "*"')).toEqual([
        L('\\HasNoChildren', 'INBOX'),
        L('\\HasChildren', 'baz2'),
        L('\\HasNoChildren', 'baz2/bar2'),
        L('\\HasNoChildren', 'baz2/bar22'),
        L('\\HasNoChildren', 'baz2/bar222'),
        L('\\HasChildren', 'eps2'),
        L('\\HasNoChildren', 'eps2/mamba'),
        L('\\HasChildren', 'foo2'),
        L('\\HasNoChildren', 'foo2/bar1'),
        L('\\HasNoChildren', 'foo2/bar2'),
        L('\\Noselect \\HasChildren', 'qux2'),
        L('\\HasNoChildren', 'qux2/bar2'),
      ]);
      expect(await list('LIST (SUBSCRIBED) "" "*"')).toEqual(subscribedLines);
    });

    test('"*2": CHILDINFO for foo2 and eps2, none for baz2 and qux2 (redundant)', async () => {
      await hierarchy(plan);
      expect(await list('LIST (RECURSIVEMATCH SUBSCRIBED) "" "*2"')).toEqual([
        L('\\HasNoChildren \\Subscribed', 'baz2/bar2'),
        L('\\HasNoChildren \\Subscribed', 'baz2/bar22'),
        L('\\HasNoChildren \\Subscribed', 'baz2/bar222'),
        L('\\HasChildren \\Subscribed', 'eps2', true),
        L('\\HasChildren', 'foo2', true),
        L('\\HasNoChildren \\Subscribed', 'foo2/bar2'),
        L('\\HasNoChildren \\Subscribed', 'qux2/bar2'),
      ]);
    });

    test('"*": every subscribed name; CHILDINFO only for the subscribed eps2', async () => {
      await hierarchy(plan);
      expect(await list('LIST (RECURSIVEMATCH SUBSCRIBED) "" "*"')).toEqual(subscribedLines.map((line) => (line.endsWith('"eps2"') ? L('\\HasChildren \\Subscribed', 'eps2', true) : line)));
    });
  });

  test('example 10: several patterns; CHILDINFO without \\HasChildren', async () => {
    await hierarchy({ create: ['foo/bar'], subscribe: ['foo/bar'], remove: ['foo/bar'] });
    expect(await list('LIST "" ("foo" "foo/*")')).toEqual([L('\\HasNoChildren', 'foo')]);
    expect(await list('LIST (SUBSCRIBED) "" "foo/*"')).toEqual([L('\\NonExistent \\HasNoChildren \\Subscribed', 'foo/bar')]);
    expect(await list('LIST (SUBSCRIBED RECURSIVEMATCH) "" foo RETURN (CHILDREN)')).toEqual([L('\\HasNoChildren', 'foo', true)]);
  });

  // RFC 5819 §3, second example (LIST-STATUS with LIST-EXTENDED): no STATUS for a name listed for its CHILDINFO alone.
  test('RETURN (STATUS) skips a mailbox listed only for its CHILDINFO', async () => {
    await hierarchy({ create: ['foo/bar'], subscribe: ['INBOX', 'foo/bar'] });
    expect(await list('LIST (SUBSCRIBED RECURSIVEMATCH) "" % RETURN (STATUS (MESSAGES))')).toEqual([
      L('\\HasNoChildren \\Subscribed', 'INBOX'),
      '* STATUS "INBOX" (MESSAGES 0)',
      L('\\HasChildren', 'foo', true),
    ]);
  });

  test('example 11: a missing level is \\NonExistent \\HasChildren', async () => {
    await hierarchy({ create: ['music/rock'], remove: ['music'] });
    expect(await list('LIST (REMOTE) "" *')).toEqual([L('\\HasNoChildren', 'INBOX'), L('\\NonExistent \\HasChildren', 'music'), L('\\HasNoChildren', 'music/rock')]);
    expect(await list('LIST () "" %')).toEqual([L('\\HasNoChildren', 'INBOX'), L('\\NonExistent \\HasChildren', 'music')]);
    expect(await list('LIST (REMOTE) "" %')).toEqual([L('\\HasNoChildren', 'INBOX'), L('\\NonExistent \\HasChildren', 'music')]);
    expect(await list('LIST "" (% music/rock)')).toEqual([L('\\HasNoChildren', 'INBOX'), L('\\NonExistent \\HasChildren', 'music'), L('\\HasNoChildren', 'music/rock')]);
  });
});
