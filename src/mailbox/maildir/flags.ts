// Flags: IMAP system flags are Maildir info letters in the file name (`:2,FRS`), keywords live in the index.
import type { FlagMode } from '../store-api.js';

/** Maildir info letters and the IMAP system flags they stand for (letters in ASCII order, as the spec wants). */
const FLAG_LETTERS: ReadonlyArray<readonly [string, string]> = [
  ['D', '\\Draft'],
  ['F', '\\Flagged'],
  ['R', '\\Answered'],
  ['S', '\\Seen'],
  ['T', '\\Deleted'],
];
const LETTER_OF = new Map(FLAG_LETTERS.map(([letter, flag]) => [flag.toLowerCase(), letter]));
const FLAG_OF = new Map(FLAG_LETTERS.map(([letter, flag]) => [letter, flag]));

/** The letter of \Seen, for counting unseen messages without building their flag lists. */
export const SEEN_LETTER = 'S';

/** IMAP keywords are atoms; anything else (and the pseudo flag \Recent) is not stored. */
export function isKeyword(flag: string): boolean {
  return /^[^\s\\()*%"{\]\x00-\x1f\x7f]+$/.test(flag);
}

/** The IMAP flags of a message: its system flags (from the letters we map) followed by its keywords. */
export function flagsOf(letters: string, keywords: string[]): string[] {
  const flags: string[] = [];
  for (const letter of letters) {
    const flag = FLAG_OF.get(letter);
    if (flag) flags.push(flag);
  }
  return [...flags, ...keywords];
}

/** The letters and keywords after a STORE of `flags` in `mode`; letters come back sorted. */
export function applyFlags(letters: string, keywords: string[], flags: string[], mode: FlagMode): { letters: string; keywords: string[] } {
  const wantLetters = new Set<string>();
  const wantKeywords = new Map<string, string>();
  for (const flag of flags) {
    const letter = LETTER_OF.get(flag.toLowerCase());
    if (letter) wantLetters.add(letter);
    else if (isKeyword(flag) && !wantKeywords.has(flag.toLowerCase())) wantKeywords.set(flag.toLowerCase(), flag);
  }
  // Letters we do not map (P, lowercase keyword letters of other software) are left as they are.
  const unmapped = [...letters].filter((l) => !FLAG_OF.has(l));
  const mapped = new Set([...letters].filter((l) => FLAG_OF.has(l)));
  const current = new Map(keywords.map((k) => [k.toLowerCase(), k]));
  let nextMapped: Set<string>;
  let nextKeywords: Map<string, string>;
  if (mode === 'set') {
    nextMapped = wantLetters;
    // Keep the existing spelling of a keyword that stays.
    nextKeywords = new Map([...wantKeywords].map(([key, value]) => [key, current.get(key) ?? value]));
  } else if (mode === 'add') {
    nextMapped = new Set([...mapped, ...wantLetters]);
    nextKeywords = new Map(current);
    for (const [key, value] of wantKeywords) if (!nextKeywords.has(key)) nextKeywords.set(key, value);
  } else {
    nextMapped = new Set([...mapped].filter((l) => !wantLetters.has(l)));
    nextKeywords = new Map([...current].filter(([key]) => !wantKeywords.has(key)));
  }
  return { letters: [...unmapped, ...nextMapped].sort().join(''), keywords: [...nextKeywords.values()] };
}

/** Keywords compare without regard to case (RFC 3501 §2.3.2). */
export function sameKeywords(a: string[], b: string[]): boolean {
  const set = new Set(a.map((k) => k.toLowerCase()));
  return a.length === b.length && b.every((k) => set.has(k.toLowerCase()));
}
