import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { patternMatcher } from './list.js';

/** The obvious translation to a regular expression: right, but exponential on many wildcards; a reference for short patterns. */
function reference(pattern: string): (name: string) => boolean {
  const p = /^inbox(?=$|\/)/i.test(pattern) ? 'INBOX' + pattern.slice(5) : pattern;
  const body = p.replace(/[.+?^${}()|[\]\\]/g, '\\$&').replace(/\*/g, '.*').replace(/%/g, '[^/]*');
  const re = new RegExp(`^${body}$`, 's');
  return (name) => re.test(name);
}

describe('LIST patterns', () => {
  it('match as RFC 3501 §6.3.8 says', () => {
    const names = ['INBOX', 'INBOX/x', 'Sent', 'a/b/c', 'a', 'a/b', 'ab', ''];
    const matching = (pattern: string) => names.filter(patternMatcher(pattern));
    expect(matching('*')).toEqual(names);
    expect(matching('%')).toEqual(['INBOX', 'Sent', 'a', 'ab', '']);
    expect(matching('a/%')).toEqual(['a/b']);
    expect(matching('a/*')).toEqual(['a/b/c', 'a/b']);
    expect(matching('inbox')).toEqual(['INBOX']);
    expect(matching('Inbox/%')).toEqual(['INBOX/x']);
    expect(matching('a%')).toEqual(['a', 'ab']);
    expect(matching('%/%/%')).toEqual(['a/b/c']);
    expect(matching('a.b')).toEqual([]);
  });

  it('agree with the regular-expression reference on short patterns', () => {
    const alphabet = fc.constantFrom('a', 'b', '/', '*', '%', '.', 'I', 'N');
    const text = (max: number) => fc.array(alphabet, { maxLength: max }).map((cs) => cs.join(''));
    fc.assert(
      fc.property(text(8), text(10), (pattern, rawName) => {
        const name = rawName.replace(/[*%]/g, 'x');
        expect(patternMatcher(pattern)(name), `pattern ${JSON.stringify(pattern)} name ${JSON.stringify(name)}`).toBe(reference(pattern)(name));
      }),
      { seed: 9, numRuns: 2000 },
    );
  });

  // Found by probing (issue 9 fuzzing): a regular expression with 60 wildcards took 2 s for five names, 1,000 never
  // finished, and the whole mailbox server (every protocol) stood still meanwhile.
  it('decide a pattern of thousands of wildcards that cannot match at once', () => {
    const started = performance.now();
    for (const wildcard of ['*', '%', '*%']) {
      const matches = patternMatcher(`${wildcard.repeat(2000)}a`);
      for (const name of ['INBOX', 'Drafts', 'Junk', 'Sent', 'Trash', 'x'.repeat(200)]) expect(matches(name)).toBe(false);
    }
    // A bound on complexity, not a speed figure: the backtracking matcher took seconds for one name, and never ended
    // for more; linear matching stays far below the bound even on a loaded CI machine.
    expect(performance.now() - started, 'ms for 18 tests').toBeLessThan(2000);
  });
});
