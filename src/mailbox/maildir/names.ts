// Folder names: validation, the `/` hierarchy, the Maildir++ directory encoding and the default special-use
// folders.
import { MailStoreError, type SpecialUse } from '../store-api.js';

/** Folders every user has, created on the user's first use. */
export const DEFAULT_MAILBOXES: ReadonlyArray<readonly [string, SpecialUse]> = [
  ['Sent', '\\Sent'],
  ['Drafts', '\\Drafts'],
  ['Trash', '\\Trash'],
  ['Junk', '\\Junk'],
];

/** Longest directory name (in bytes) a folder may have; file systems allow 255, leave room for our suffixes. */
export const MAX_FOLDER_DIR_BYTES = 200;

/**
 * Canonical mailbox name: `INBOX` in any case is INBOX (also as the first level of a hierarchy), names must be
 * non-empty, without empty levels or control characters.
 */
export function normalizeName(name: string): string {
  if (typeof name !== 'string' || !name || name.startsWith('/') || name.endsWith('/') || name.includes('//') || /[\x00-\x1f\x7f]/.test(name)) {
    throw new MailStoreError('CANNOT', `invalid mailbox name ${JSON.stringify(name)}`);
  }
  const first = name.split('/', 1)[0]!;
  return first.toUpperCase() === 'INBOX' ? 'INBOX' + name.slice(first.length) : name;
}

/** `a/b.c/d` → `.a.b%2Ec.d` (Maildir++: one directory per folder, levels separated by dots). */
export function encodeFolderName(name: string): string {
  return '.' + name.split('/').map((level) => level.replace(/%/g, '%25').replace(/\./g, '%2E')).join('.');
}

/** The mailbox name of a Maildir++ folder directory, or undefined for a directory that is not one. */
export function decodeFolderName(dir: string): string | undefined {
  if (!dir.startsWith('.')) return undefined;
  // `.`, `..` and empty levels (`.a..b`) decode to names normalizeName refuses, as does a bad %-escape.
  try {
    return normalizeName(dir.slice(1).split('.').map((level) => decodeURIComponent(level)).join('/'));
  } catch {
    return undefined;
  }
}

/** The names above `name` in the hierarchy, outermost first: `a/b/c` → `a`, `a/b`. */
export function superiors(name: string): string[] {
  const levels = name.split('/');
  return levels.slice(1).map((_, i) => levels.slice(0, i + 1).join('/'));
}

/** Whether `name` is below `of` in the hierarchy (an inferior, RFC 3501 §6.3.4). */
export function isInferior(name: string, of: string): boolean {
  return name.startsWith(of + '/');
}

/** LIST order: INBOX first, then by name. */
export function compareMailboxNames(a: string, b: string): number {
  return a === 'INBOX' ? -1 : b === 'INBOX' ? 1 : a < b ? -1 : a > b ? 1 : 0;
}
