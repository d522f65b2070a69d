// THREAD (RFC 5256 §4): ORDEREDSUBJECT and REFERENCES over the messages a search matched, and the thread-list
// response syntax.
import { header, type MimeNode } from './mime.js';
import { ParseError } from './errors.js';
import type { Reader } from './parser.js';
import { baseSubject, compareText, sentDate, type BaseSubject } from './sort.js';

export type ThreadAlgorithm = 'ORDEREDSUBJECT' | 'REFERENCES';
export const THREAD_ALGORITHMS: readonly ThreadAlgorithm[] = ['ORDEREDSUBJECT', 'REFERENCES'];

export function parseThreadAlgorithm(r: Reader): ThreadAlgorithm {
  const name = r.atom().toUpperCase();
  if (!(THREAD_ALGORITHMS as readonly string[]).includes(name)) throw new ParseError(`Unknown threading algorithm ${name}`);
  return name as ThreadAlgorithm;
}

export interface ThreadMessage {
  /** What the response shows: the sequence number, or the UID for UID THREAD. */
  n: number;
  /** Sequence number: the tie-breaker when sent dates are equal. */
  seq: number;
  date: number;
  subject: BaseSubject;
  /** Message-ID, `<...>` included; undefined when missing or invalid. */
  messageId?: string;
  /** Parent candidates, oldest first: References, else the first Message ID of In-Reply-To. */
  references: string[];
}

/** A node of the thread tree; a dummy (no message) stands for a message that is referenced but not there. */
export interface ThreadNode {
  msg?: ThreadMessage;
  children: ThreadNode[];
  parent?: ThreadNode;
}

/** The valid Message IDs (`<id-left@id-right>`, whitespace inside dropped) in a header value, in order. */
export function messageIds(value: string | undefined): string[] {
  if (!value) return [];
  const ids: string[] = [];
  // Comments may hold anything, angle brackets included.
  const text = value.replace(/\((?:[^()\\]|\\.)*\)/g, ' ');
  for (const m of text.matchAll(/<([^<>]*)>/g)) {
    const id = m[1]!.replace(/\s+/g, '');
    if (/^[^@]+@[^@]+$/.test(id)) ids.push(`<${id}>`);
  }
  return ids;
}

export function threadMessage(m: { n: number; seq: number; internalDate: number; tree: MimeNode }): ThreadMessage {
  const references = messageIds(header(m.tree, 'references'));
  const inReplyTo = messageIds(header(m.tree, 'in-reply-to'))[0];
  const messageId = messageIds(header(m.tree, 'message-id'))[0];
  return {
    n: m.n,
    seq: m.seq,
    date: sentDate(m.tree, m.internalDate),
    subject: baseSubject(header(m.tree, 'subject')),
    ...(messageId ? { messageId } : {}),
    references: references.length ? references : inReplyTo ? [inReplyTo] : [],
  };
}

/** The message a node is sorted by: its own, or a dummy's first child's (§4 steps 4 and 6). */
function representative(node: ThreadNode): ThreadMessage {
  let n = node;
  while (!n.msg) n = n.children[0]!;
  return n.msg;
}

function compareNodes(a: ThreadNode, b: ThreadNode): number {
  const x = representative(a);
  const y = representative(b);
  return x.date - y.date || x.seq - y.seq;
}

/** ORDEREDSUBJECT: by base subject, then sent date; one thread per base subject, the rest children of its first. */
export function orderedSubject(messages: readonly ThreadMessage[]): ThreadNode[] {
  const sorted = [...messages].sort((a, b) => compareText(a.subject.key, b.subject.key) || a.date - b.date || a.seq - b.seq);
  const threads: ThreadNode[] = [];
  let current: ThreadNode | undefined;
  for (const msg of sorted) {
    if (current && representative(current).subject.key === msg.subject.key) current.children.push({ msg, children: [] });
    else threads.push((current = { msg, children: [] }));
  }
  return threads.sort(compareNodes);
}

/** Whether `node` is `ancestor` or lies below it. */
function within(node: ThreadNode, ancestor: ThreadNode): boolean {
  // The usual case, a message linked below its parent as it arrives: nothing lies below it yet.
  if (!ancestor.children.length) return node === ancestor;
  for (let n: ThreadNode | undefined = node; n; n = n.parent) if (n === ancestor) return true;
  return false;
}

function unlink(child: ThreadNode): void {
  const parent = child.parent;
  if (!parent) return;
  parent.children.splice(parent.children.indexOf(child), 1);
  delete child.parent;
}

/** Makes `child` a child of `parent`, unless that would make a loop; `child` must have no parent. */
function link(parent: ThreadNode, child: ThreadNode): void {
  if (within(parent, child)) return;
  child.parent = parent;
  parent.children.push(child);
}

/** REFERENCES (§4): Message-ID links, dummies pruned, roots gathered by base subject, siblings by sent date. */
export function references(messages: readonly ThreadMessage[]): ThreadNode[] {
  const byId = new Map<string, ThreadNode>();
  const all: ThreadNode[] = [];
  const nodeFor = (id: string): ThreadNode => {
    let node = byId.get(id);
    if (!node) {
      node = { children: [] };
      byId.set(id, node);
      all.push(node);
    }
    return node;
  };
  // (1) In sequence order, so that a duplicated Message ID belongs to its lowest-numbered message.
  for (const msg of [...messages].sort((a, b) => a.seq - b.seq)) {
    let node = msg.messageId ? byId.get(msg.messageId) : undefined;
    if (node && !node.msg) {
      node.msg = msg;
    } else {
      // No Message ID, or one a lower-numbered message has: a unique one, which nothing can reference.
      node = { msg, children: [] };
      all.push(node);
      if (msg.messageId && !byId.has(msg.messageId)) byId.set(msg.messageId, node);
    }
    // (A) Each reference the parent of the next, where none has a parent yet and no loop results.
    let previous: ThreadNode | undefined;
    for (const id of msg.references) {
      const ref = nodeFor(id);
      if (previous && ref !== previous && !ref.parent) link(previous, ref);
      previous = ref;
    }
    // (B) The last reference is the parent, whatever parent (A) gave this message before.
    unlink(node);
    if (previous && previous !== node) link(previous, node);
  }
  // (2) The messages without a parent are the roots.
  let roots = all.filter((n) => !n.parent);
  // (3) Dummies pruned: childless ones dropped, the others replaced by their children, except at the top where a
  // dummy with two or more children stays. Bottom-up, without recursion: References chains can be very deep.
  const replacement = new Map<ThreadNode, ThreadNode[]>();
  const top = new Set(roots);
  for (const n of postOrder(roots)) {
    n.children = n.children.flatMap((c) => replacement.get(c)!);
    for (const c of n.children) c.parent = n;
    if (n.msg) replacement.set(n, [n]);
    else if (!n.children.length) replacement.set(n, []);
    else replacement.set(n, !top.has(n) || n.children.length === 1 ? n.children : [n]);
  }
  roots = roots.flatMap((r) => replacement.get(r)!);
  for (const r of roots) delete r.parent;
  // (4) Roots by sent date (a dummy by its earliest child).
  for (const r of roots) if (!r.msg) r.children.sort(compareNodes);
  roots.sort(compareNodes);
  // (5) Roots with the same base subject gathered.
  const subjectOf = (n: ThreadNode) => representative(n).subject.key;
  const table = new Map<string, ThreadNode>();
  for (const r of roots) {
    const subject = subjectOf(r);
    if (!subject) continue;
    const held = table.get(subject);
    if (!held || (held.msg && (!r.msg || (held.msg.subject.replyOrForward && !r.msg.subject.replyOrForward)))) table.set(subject, r);
  }
  const merged: Array<ThreadNode | undefined> = [...roots];
  const index = new Map(roots.map((r, i) => [r, i]));
  /** Roots already placed below another. */
  const placed = new Set<ThreadNode>();
  for (const r of roots) {
    const subject = subjectOf(r);
    const held = subject ? table.get(subject) : undefined;
    if (!held || held === r || placed.has(r)) continue;
    merged[index.get(r)!] = undefined;
    placed.add(r);
    if (!held.msg && !r.msg) {
      held.children.push(...r.children);
    } else if (!held.msg || (r.msg?.subject.replyOrForward && !held.msg.subject.replyOrForward)) {
      held.children.push(r);
    } else {
      const dummy: ThreadNode = { children: [held, r] };
      placed.add(held);
      merged[index.get(held)!] = dummy;
      index.set(dummy, index.get(held)!);
      table.set(subject, dummy);
    }
  }
  roots = merged.filter((r): r is ThreadNode => r !== undefined);
  // (6) Every set of siblings by sent date, the deepest first.
  for (const n of postOrder(roots)) n.children.sort(compareNodes);
  roots.sort(compareNodes);
  return roots;
}

/** Every node below and including the roots, each after all of its descendants (iterative: trees can be deep). */
function postOrder(roots: readonly ThreadNode[]): ThreadNode[] {
  const out: ThreadNode[] = [];
  const stack: Array<[ThreadNode, boolean]> = roots.map((r) => [r, false]);
  while (stack.length) {
    const [node, expanded] = stack.pop()!;
    if (expanded) {
      out.push(node);
      continue;
    }
    stack.push([node, true]);
    for (const c of node.children) stack.push([c, false]);
  }
  return out;
}

/** thread-list: `(n n (n n)(n))` for a thread, `((n)(n))` for one under a dummy; threads follow without spaces. */
export function formatThreads(threads: readonly ThreadNode[]): string {
  const out: string[] = [];
  // Iterative, as deep as a thread goes: a stack of nodes still to write and of text to write after them.
  const stack: Array<ThreadNode | string> = [];
  for (let i = threads.length - 1; i >= 0; i--) stack.push(')', threads[i]!, '(');
  while (stack.length) {
    const item = stack.pop()!;
    if (typeof item === 'string') {
      out.push(item);
      continue;
    }
    const kids = item.children;
    if (item.msg) out.push(String(item.msg.n), kids.length ? ' ' : '');
    if (item.msg && kids.length === 1) stack.push(kids[0]!);
    else for (let i = kids.length - 1; i >= 0; i--) stack.push(')', kids[i]!, '(');
  }
  return out.join('');
}
