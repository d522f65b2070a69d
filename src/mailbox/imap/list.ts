// LIST / LSUB: pattern matching (RFC 3501 §6.3.8), CHILDREN (RFC 3348), LIST-EXTENDED selection and return
// options (RFC 5258) and SPECIAL-USE attributes (RFC 6154), over the store's mailbox list.
import type { MailboxInfo } from '../store-api.js';
import { encodeMailboxName } from './encode.js';

export const DELIMITER = '/';

export interface ListQuery {
  /** Patterns with the reference already prefixed, in modified UTF-7 as the client sent them. */
  patterns: string[];
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
  /** RECURSIVEMATCH: the name is listed because a child is subscribed. */
  childSubscribed?: boolean;
  info?: MailboxInfo;
}

/** A regular expression for a LIST pattern: `*` matches anything, `%` anything but the delimiter. */
export function patternRegExp(pattern: string): RegExp {
  // INBOX is case-insensitive, also as the first level of a pattern.
  const p = /^inbox(?=$|\/)/i.test(pattern) ? 'INBOX' + pattern.slice(5) : pattern;
  const body = p.replace(/[.+?^${}()|[\]\\]/g, '\\$&').replace(/\*/g, '.*').replace(/%/g, '[^/]*');
  return new RegExp(`^${body}$`, 's');
}

export function listMailboxes(mailboxes: MailboxInfo[], query: ListQuery): ListEntry[] {
  const existing = new Map(mailboxes.map((m) => [m.name, m]));
  // Every level of every name, so that `%` can stop at parents that exist only through their children.
  const names = new Set<string>();
  for (const m of mailboxes) {
    const levels = m.name.split(DELIMITER);
    for (let i = 1; i <= levels.length; i++) names.add(levels.slice(0, i).join(DELIMITER));
  }
  const sorted = [...names].sort((a, b) => (a === 'INBOX' ? -1 : b === 'INBOX' ? 1 : a < b ? -1 : a > b ? 1 : 0));
  const regexps = query.patterns.map(patternRegExp);
  const matchesPattern = (name: string) => {
    const encoded = encodeMailboxName(name);
    return regexps.some((re) => re.test(encoded));
  };
  const descendants = (name: string) => sorted.filter((n) => n.startsWith(name + DELIMITER));
  const subscribed = (name: string) => existing.get(name)?.subscribed === true;

  const out: ListEntry[] = [];
  for (const name of sorted) {
    if (!matchesPattern(name)) continue;
    const info = existing.get(name);
    const children = descendants(name);
    const attributes: string[] = [];
    if (query.lsub) {
      // RFC 3501 §6.3.9: a parent matched by `%` whose child is subscribed is listed as \Noselect.
      if (!subscribed(name)) {
        const subscribedChildren = children.filter(subscribed);
        if (!subscribedChildren.length || subscribedChildren.some(matchesPattern)) continue;
        attributes.push('\\Noselect');
      }
      out.push({ name, attributes, ...(info ? { info } : {}) });
      continue;
    }
    let childSubscribed = false;
    if (query.selectSubscribed && !subscribed(name)) {
      childSubscribed = !!query.recursiveMatch && children.some(subscribed);
      if (!childSubscribed) continue;
    }
    if (query.selectSpecialUse && !info?.specialUse) continue;
    if (!info) attributes.push(query.extended ? '\\NonExistent' : '\\Noselect');
    if (childSubscribed || !query.selectSubscribed || subscribed(name)) {
      attributes.push(children.length ? '\\HasChildren' : '\\HasNoChildren');
    }
    if ((query.returnSubscribed || query.selectSubscribed) && subscribed(name)) attributes.push('\\Subscribed');
    if (info?.specialUse) attributes.push(info.specialUse);
    out.push({ name, attributes, ...(childSubscribed ? { childSubscribed } : {}), ...(info ? { info } : {}) });
  }
  return out;
}
