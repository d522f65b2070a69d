// Fuzzing the Maildir++ folder name encoding (names.ts): any name normalizeName accepts encodes to one directory
// name that decodes back to it, stays inside the user's Maildir (a single path component: no "/", not "." or "..",
// no NUL), and distinct names never share a directory; decoding arbitrary directory names never throws.
// Replay: MAILLAB_FUZZ_SEED=<seed> (see src/shared/fuzz.test-helper.ts); fast-check prints seed and path on failure.
import path from 'node:path';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { fuzzParameters } from '../../shared/fuzz.test-helper.js';
import { decodeFolderName, encodeFolderName, normalizeName } from './names.js';

/** Names as hostile clients write them: dots, percent signs, slashes, traversal, unicode, controls. */
const level = fc.oneof(
  fc.string({ maxLength: 12 }),
  fc.string({ unit: 'grapheme', maxLength: 6 }),
  fc.constantFrom('.', '..', '%', '%2E', '%2e', '%25', '%2F', '...', 'INBOX', 'inbox', '~', '\\', '..\\..', '%00', 'a.b', '.hidden'),
);
const name = fc.array(level, { minLength: 1, maxLength: 5 }).map((levels) => levels.join('/'));

/** The name if normalizeName accepts it. */
function accepted(raw: string): string | undefined {
  try {
    return normalizeName(raw);
  } catch {
    return undefined;
  }
}

describe('Maildir folder name fuzzing', () => {
  it('round-trips every accepted name through one directory name inside the Maildir', () => {
    fc.assert(
      fc.property(name, (raw) => {
        const normal = accepted(raw);
        if (normal === undefined) return;
        const dir = encodeFolderName(normal);
        expect(decodeFolderName(dir)).toBe(normal);
        expect(dir.startsWith('.')).toBe(true);
        expect(dir).not.toMatch(/[/\0]/);
        expect(['.', '..']).not.toContain(dir);
        // Joined under a user's Maildir, it stays a direct child.
        const root = '/maildir/bob';
        expect(path.dirname(path.join(root, dir))).toBe(root);
      }),
      fuzzParameters(2000, 3000),
    );
  });

  it('never maps two names to one directory', () => {
    fc.assert(
      fc.property(name, name, (a, b) => {
        const na = accepted(a);
        const nb = accepted(b);
        if (na === undefined || nb === undefined || na === nb) return;
        expect(encodeFolderName(na)).not.toBe(encodeFolderName(nb));
      }),
      fuzzParameters(2000, 2000),
    );
  });

  it('decodes any directory name to an accepted name or to nothing, never throwing', () => {
    fc.assert(
      fc.property(fc.oneof(fc.string({ maxLength: 30 }), name.map((n) => `.${n}`), fc.string({ maxLength: 20 }).map((s) => `.${s}`)), (dir) => {
        const decoded = decodeFolderName(dir);
        if (decoded !== undefined) expect(accepted(decoded)).toBe(decoded);
      }),
      fuzzParameters(2000, 2000),
    );
  });
});
