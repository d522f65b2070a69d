// LIST / LSUB: pattern matching (RFC 3501 §6.3.8), CHILDREN (RFC 3348), LIST-EXTENDED selection and return
// options (RFC 5258) and SPECIAL-USE attributes (RFC 6154), over the store's mailbox list.
import type { MailboxInfo } from '../store-api.js';
import { encodeMailboxName } from './encode.js';

export const DELIMITER = '/';

export interface ListQuery {
  /** Patterns with the reference already prefixed, in modified UTF-7 as the client sent them (UTF-8 when `utf8`). */
  patterns: string[];
  /** The session enabled UTF8=ACCEPT (RFC 6855): patterns match the names themselves, not their modified UTF-7. */
  utf8?: boolean;
  lsub?: boolean;
  selectSubscribed?: boolean;
  selectSpecialUse?: boolean;
  recursiveMatch?: boolean;
  returnSubscribed?: boolean;
  /** LIST-EXTENDED syntax was used: \NonExistent instead of \Noselect for names that only have children. */
  extended?: boolean;
}

export interface ListEntry {
  /** Mailbox name as the store spells it (Unicode). */
  name: string;
  attributes: string[];
  /** RECURSIVEMATCH: a descendant is subscribed (CHILDINFO). */
  childSubscribed?: boolean;
  /** Listed only for its CHILDINFO: the name itself does not meet the selection criteria (so no STATUS, RFC 5819 §2). */
  childInfoOnly?: boolean;
  info?: MailboxInfo;
}

/**
 * A matcher for a LIST pattern: `*` matches anything, `%` anything but the delimiter (RFC 3501 §6.3.8).
 * Not a regular expression: a pattern of many wildcards that cannot match made a backtracking regex take
 * exponential time (`LIST "" "<1000 × *>a"` froze the whole server). This walks the pattern as a set of positions,
 * so a test costs at most name length × pattern length steps.
 */
export function patternMatcher(pattern: string): (name: string) => boolean {
  // INBOX is case-insensitive, also as the first level of a pattern.
  const p = /^inbox(?=$|\/)/i.test(pattern) ? 'INBOX' + pattern.slice(5) : pattern;
  // Runs of wildcards match what their widest member matches: `**`, `%*` and `*%` are `*`, `%%` is `%`.
  const tokens: string[] = [];
  for (const c of p) {
    const last = tokens[tokens.length - 1];
    if ((c === '*' || c === '%') && (last === '*' || last === '%')) tokens[tokens.length - 1] = c === '*' || last === '*' ? '*' : '%';
    else tokens.push(c);
  }
  const m = tokens.length;
  const wildcard = (t: string | undefined) => t === '*' || t === '%';
  return (name: string) => {
    // at[i]: the name read so far can be matched by tokens[0..i).
    let at = new Uint8Array(m + 1);
    at[0] = 1;
    for (let i = 0; i < m && at[i] && wildcard(tokens[i]); i++) at[i + 1] = 1;
    for (const c of name) {
      const next = new Uint8Array(m + 1);
      let any = false;
      for (let i = 0; i < m; i++) {
        if (!at[i]) continue;
        const t = tokens[i]!;
        if (t === '*' || (t === '%' && c !== DELIMITER)) next[i] = 1;
        else if (t === c) next[i + 1] = 1;
      }
      // A wildcard may also match nothing: whoever reaches it reaches what follows it.
      for (let i = 0; i < m; i++) {
        if (next[i] && wildcard(tokens[i])) next[i + 1] = 1;
        if (next[i] || next[i + 1]) any = true;
      }
      if (!any && !next[m]) return false;
      at = next;
    }
    return at[m] === 1;
  };
}

/**
 * The LIST / LSUB responses for `mailboxes` (the existing ones) and `subscriptions` (every subscribed name, existing
 * or not; by default those of `mailboxes` marked subscribed).
 */
export function listMailboxes(mailboxes: MailboxInfo[], query: ListQuery, subscriptions?: readonly string[]): ListEntry[] {
  const existing = new Map(mailboxes.map((m) => [m.name, m]));
  const subs = new Set(subscriptions ?? mailboxes.filter((m) => m.subscribed).map((m) => m.name));
  const subscribed = (name: string) => subs.has(name);
  // Every level of every name, so that `%` can stop at parents that exist only through their children. Subscribed
  // names count only where subscriptions are asked for: a plain LIST never shows a name that does not exist.
  const existingLevels = new Set<string>();
  const names = new Set<string>();
  const addLevels = (name: string, into: Set<string>) => {
    const levels = name.split(DELIMITER);
    for (let i = 1; i <= levels.length; i++) into.add(levels.slice(0, i).join(DELIMITER));
  };
  for (const m of mailboxes) addLevels(m.name, existingLevels);
  for (const n of existingLevels) names.add(n);
  if (query.lsub || query.selectSubscribed) for (const n of subs) addLevels(n, names);
  const sorted = [...names].sort((a, b) => (a === 'INBOX' ? -1 : b === 'INBOX' ? 1 : a < b ? -1 : a > b ? 1 : 0));
  const matchers = query.patterns.map(patternMatcher);
  const matchesPattern = (name: string) => {
    const encoded = query.utf8 ? name : encodeMailboxName(name);
    return matchers.some((matches) => matches(encoded));
  };
  const isBelow = (name: string) => (n: string) => n.startsWith(name + DELIMITER);
  const hasChildren = (name: string) => [...existingLevels].some(isBelow(name));
  const subscribedBelow = (name: string) => [...subs].filter(isBelow(name));

  const out: ListEntry[] = [];
  for (const name of sorted) {
    if (!matchesPattern(name)) continue;
    const info = existing.get(name);
    const attributes: string[] = [];
    if (query.lsub) {
      // RFC 3501 §6.3.9: a parent matched by `%` whose child is subscribed is listed as \Noselect.
      if (!subscribed(name)) {
        const subscribedChildren = subscribedBelow(name);
        if (!subscribedChildren.length || subscribedChildren.some(matchesPattern)) continue;
        attributes.push('\\Noselect');
      }
      out.push({ name, attributes, ...(info ? { info } : {}) });
      continue;
    }
    // RFC 5258 §3.5, CHILDINFO: only with RECURSIVEMATCH, for a name with a subscribed descendant. A name that is not
    // itself subscribed is listed for it only when one such descendant is not listed itself (it does not match the
    // patterns): otherwise the CHILDINFO would be redundant, which servers SHOULD suppress.
    let childSubscribed = false;
    let childInfoOnly = false;
    if (query.selectSubscribed) {
      const below = subscribedBelow(name);
      if (subscribed(name)) childSubscribed = !!query.recursiveMatch && below.length > 0;
      else {
        childSubscribed = !!query.recursiveMatch && below.some((n) => !matchesPattern(n));
        if (!childSubscribed) continue;
        childInfoOnly = true;
      }
    }
    if (query.selectSpecialUse && !info?.specialUse) continue;
    if (!info) attributes.push(query.extended ? '\\NonExistent' : '\\Noselect');
    attributes.push(hasChildren(name) ? '\\HasChildren' : '\\HasNoChildren');
    if ((query.returnSubscribed || query.selectSubscribed) && subscribed(name)) attributes.push('\\Subscribed');
    if (info?.specialUse) attributes.push(info.specialUse);
    out.push({ name, attributes, ...(childSubscribed ? { childSubscribed } : {}), ...(childInfoOnly ? { childInfoOnly } : {}), ...(info ? { info } : {}) });
  }
  return out;
}
