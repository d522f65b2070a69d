// Command input: an incremental framer that cuts the byte stream into complete commands (lines plus literals,
// RFC 3501 §7.5 / RFC 7888 LITERAL+), and a reader that parses the grammar of one complete command.

import { isUtf8 } from 'node:buffer';
import { ParseError } from './errors.js';

/**
 * One complete command as received: `lines` are the text pieces (without CRLF and without the `{n}` literal
 * markers), `literals` the literal octets; a literal follows each line but the last.
 */
export interface Frame {
  lines: Buffer[];
  literals: Buffer[];
}

export type FramerItem =
  | { kind: 'command'; frame: Frame }
  | { kind: 'error'; tag?: string; status: 'BAD' | 'NO'; code?: string; message: string; fatal: boolean };

export interface CommandHead {
  tag?: string;
  /** Upper-cased command name; for `UID x` the name of x prefixed with `UID `. */
  name: string;
}

export interface FramerOptions {
  /** Longest line (text between literals), in octets. */
  maxLineLength: number;
  /** Most literal octets one command may carry, given its head. */
  literalLimit(head: CommandHead): number;
  /** Literals above this (non-synchronizing ones we cannot refuse) end the connection instead of being skipped. */
  maxDiscard: number;
  /**
   * True while nothing may be skipped (before authentication): a line over maxLineLength or a non-synchronizing
   * literal over its limit ends the connection at once instead of being read to its end and discarded. A refused
   * synchronizing literal is still answered with a tagged error (its client waits, so no octet of it arrives).
   */
  strict?(): boolean;
  /** Called when the client waits for a continuation request before sending a literal. */
  continueLiteral(): void;
  onItem(item: FramerItem): void;
}

const LITERAL_MARKER = /\{(\d{1,16})(\+?)\}$/;

/** Splits input into commands. Feed it with push(); it never buffers more than one line or one literal. */
export class CommandFramer {
  private partial: Buffer[] = [];
  private partialLength = 0;
  private lines: Buffer[] = [];
  private literals: Buffer[] = [];
  private literalBytes = 0;
  private textBytes = 0;
  private literalLeft = 0;
  private literalChunks: Buffer[] = [];
  /** Set while the rest of a rejected command is skipped; the reply goes out once its end is seen. */
  private rejected: Extract<FramerItem, { kind: 'error' }> | undefined;
  private skippingLine = false;
  private closed = false;

  constructor(private readonly options: FramerOptions) {}

  push(chunk: Buffer): void {
    let offset = 0;
    while (offset < chunk.length && !this.closed) {
      if (this.literalLeft > 0) {
        const take = Math.min(this.literalLeft, chunk.length - offset);
        if (!this.rejected) this.literalChunks.push(chunk.subarray(offset, offset + take));
        this.literalLeft -= take;
        offset += take;
        if (this.literalLeft === 0 && !this.rejected) this.finishLiteral();
        continue;
      }
      const lf = chunk.indexOf(0x0a, offset);
      if (lf < 0) {
        this.addPartial(chunk.subarray(offset));
        return;
      }
      this.addPartial(chunk.subarray(offset, lf));
      offset = lf + 1;
      let line = this.partial.length === 1 ? this.partial[0]! : Buffer.concat(this.partial);
      this.partial = [];
      this.partialLength = 0;
      if (this.skippingLine) {
        this.skippingLine = false;
        this.endCommand();
        continue;
      }
      if (line[line.length - 1] === 0x0d) line = line.subarray(0, -1);
      this.onLine(line);
    }
  }

  private addPartial(piece: Buffer): void {
    if (this.skippingLine || !piece.length) return;
    this.partialLength += piece.length;
    if (this.partialLength > this.options.maxLineLength) {
      // Keep what identifies the command (its tag) and skip the rest of the line.
      const head = Buffer.concat(this.partial.concat(piece)).subarray(0, 200);
      this.partial = [];
      this.partialLength = 0;
      this.reject(this.lines.length ? this.lines[0]! : head, 'BAD', 'Command line too long');
      if (this.options.strict?.()) return this.fatal();
      this.skippingLine = true;
      return;
    }
    this.partial.push(piece);
  }

  private onLine(line: Buffer): void {
    const m = LITERAL_MARKER.exec(line.subarray(-20).toString('latin1'));
    if (this.rejected) {
      // Inside a rejected command: skip non-synchronizing literals, stop at its end.
      if (m && m[2] === '+') return this.startLiteral(Number(m[1]));
      return this.endCommand();
    }
    // The whole command text counts against the line limit, so empty literals cannot make it grow forever.
    this.textBytes += line.length + 2;
    if (this.textBytes > this.options.maxLineLength) {
      this.reject(this.lines[0] ?? line, 'BAD', 'Command line too long');
      if (this.options.strict?.()) return this.fatal();
      return this.onLine(line);
    }
    if (!m) {
      this.lines.push(line);
      return this.endCommand();
    }
    this.lines.push(line.subarray(0, line.length - m[0].length));
    const size = Number(m[1]);
    const synchronizing = m[2] !== '+';
    const head = parseHead(this.lines[0]!);
    const limit = this.options.literalLimit(head);
    if (this.literalBytes + size > limit) {
      const append = head.name === 'APPEND';
      this.reject(this.lines[0]!, append ? 'NO' : 'BAD', `Literal too large (at most ${limit} octets)`, append ? 'TOOBIG' : undefined);
      // A synchronizing literal is never sent once refused, so the command ends here.
      if (synchronizing) return this.endCommand();
      if (size > this.options.maxDiscard) return this.fatal('Literal too large');
      if (this.options.strict?.()) return this.fatal();
      return this.startLiteral(size);
    }
    this.literalBytes += size;
    if (synchronizing && size > 0) this.options.continueLiteral();
    this.startLiteral(size);
  }

  private startLiteral(size: number): void {
    this.literalLeft = size;
    if (size === 0 && !this.rejected) this.finishLiteral();
  }

  private finishLiteral(): void {
    this.literals.push(this.literalChunks.length === 1 ? this.literalChunks[0]! : Buffer.concat(this.literalChunks));
    this.literalChunks = [];
  }

  private reject(head: Buffer, status: 'BAD' | 'NO', message: string, code?: string): void {
    const tag = parseHead(head).tag;
    this.rejected = { kind: 'error', status, message, fatal: false, ...(tag ? { tag } : {}), ...(code ? { code } : {}) };
  }

  /** Answers the rejected command and stops: the rest of the input is never read. */
  private fatal(message?: string): void {
    this.rejected = { ...this.rejected!, status: 'BAD', ...(message ? { message } : {}), fatal: true };
    this.endCommand();
  }

  private endCommand(): void {
    const item: FramerItem = this.rejected ?? { kind: 'command', frame: { lines: this.lines, literals: this.literals } };
    this.lines = [];
    this.literals = [];
    this.literalChunks = [];
    this.literalBytes = 0;
    this.textBytes = 0;
    this.rejected = undefined;
    if (item.kind === 'error' && item.fatal) this.closed = true;
    this.options.onItem(item);
  }
}

const TAG_RE = /^[\x21\x23\x24\x26\x27\x2c-\x5b\x5d-\x7a\x7c\x7e]+$/;

export function parseHead(line: Buffer): CommandHead {
  const words = line.subarray(0, 100).toString('latin1').split(' ');
  const tag = words[0] && TAG_RE.test(words[0]) ? words[0] : undefined;
  let name = (words[1] ?? '').toUpperCase();
  if (name === 'UID') name += ' ' + (words[2] ?? '').toUpperCase();
  return { ...(tag ? { tag } : {}), name };
}

/** `*` in a sequence set; resolved against the largest number in use. */
export const STAR = 0;
/** Inclusive ranges; either end may be STAR; ends may come in any order. */
export type SeqSet = Array<[number, number]>;

/** Values of a sequence set within 1..max, ascending, `*` meaning max (RFC 3501 §9 seq-range). */
export function resolveSeqSet(set: SeqSet, max: number, filter?: (n: number) => boolean): number[] {
  const out = new Set<number>();
  for (const [a, b] of set) {
    const from = a === STAR ? max : a;
    const to = b === STAR ? max : b;
    const lo = Math.min(from, to);
    const hi = Math.min(Math.max(from, to), max);
    for (let n = Math.max(lo, 1); n <= hi; n++) if (!filter || filter(n)) out.add(n);
  }
  return [...out].sort((x, y) => x - y);
}

/** Whether a set names a message number above max outside a range ending in `*`. */
export function seqSetExceeds(set: SeqSet, max: number): boolean {
  return set.some(([a, b]) => a !== STAR && b !== STAR && Math.max(a, b) > max);
}

const enum Ch {
  SP = 0x20,
  DQUOTE = 0x22,
  LPAREN = 0x28,
  RPAREN = 0x29,
  BACKSLASH = 0x5c,
}

/** atom-specials: ( ) { SP CTL % * " \ ] — plus 8-bit, which IMAP4rev1 atoms never contain. */
function isAtomChar(c: number): boolean {
  return c > 0x20 && c < 0x7f && c !== 0x28 && c !== 0x29 && c !== 0x7b && c !== 0x25 && c !== 0x2a && c !== 0x22 && c !== 0x5c && c !== 0x5d;
}

/** Recursive-descent reader over one Frame. Every method throws ParseError on a grammar mismatch. */
export class Reader {
  private li = 0;
  private pos = 0;

  /**
   * The frame is public so that a handler can read its command's tag (ESEARCH's correlator). `utf8`: the session
   * enabled UTF8=ACCEPT, so 8-bit octets in a quoted string must be UTF-8 (RFC 6855 §3).
   */
  constructor(
    readonly frame: Frame,
    readonly utf8 = false,
  ) {}

  private get line(): Buffer {
    return this.frame.lines[this.li]!;
  }

  /** Next octet of the current line, or -1 at its end. */
  peek(): number {
    return this.pos < this.line.length ? this.line[this.pos]! : -1;
  }

  /** A literal follows at this point. */
  atLiteral(): boolean {
    return this.pos >= this.line.length && this.li < this.frame.literals.length;
  }

  atEnd(): boolean {
    return this.pos >= this.line.length && this.li >= this.frame.literals.length;
  }

  end(): void {
    if (!this.atEnd()) throw new ParseError(this.atLiteral() ? 'Unexpected literal' : `Unexpected characters at end of command: ${this.rest().trim()}`);
  }

  /** Remaining text of the current line, for error messages (which must stay 7-bit). */
  rest(): string {
    return this.line.subarray(this.pos, this.pos + 40).toString('latin1').replace(/[^\x20-\x7e]/g, '?');
  }

  sp(): void {
    if (this.peek() !== Ch.SP) throw new ParseError(this.atEnd() ? 'Missing arguments' : 'Expected a space');
    this.pos++;
  }

  /** The next argument: the space before it, then what `read` reads. */
  arg<T>(read: () => T): T {
    this.sp();
    return read();
  }

  trySp(): boolean {
    if (this.peek() !== Ch.SP) return false;
    this.pos++;
    return true;
  }

  char(c: string): void {
    if (!this.tryChar(c)) throw new ParseError(`Expected "${c}"`);
  }

  tryChar(c: string): boolean {
    if (this.peek() !== c.charCodeAt(0)) return false;
    this.pos++;
    return true;
  }

  /** Octets while the predicate holds (possibly none). */
  readWhile(pred: (c: number) => boolean): string {
    const start = this.pos;
    while (this.pos < this.line.length && pred(this.line[this.pos]!)) this.pos++;
    return this.line.toString('latin1', start, this.pos);
  }

  tag(): string {
    const tag = this.readWhile((c) => isAtomChar(c) && c !== 0x2b);
    if (!tag) throw new ParseError('Missing or invalid tag');
    return tag;
  }

  atom(): string {
    const a = this.readWhile(isAtomChar);
    if (!a) throw new ParseError(this.atEnd() ? 'Missing arguments' : `Expected an atom at: ${this.rest()}`);
    return a;
  }

  /** The next atom, upper-cased, without consuming it. */
  peekAtom(): string {
    const save = this.pos;
    const a = this.readWhile(isAtomChar);
    this.pos = save;
    return a.toUpperCase();
  }

  number(): number {
    const digits = this.readWhile((c) => c >= 0x30 && c <= 0x39);
    if (!digits) throw new ParseError(`Expected a number at: ${this.rest()}`);
    const n = Number(digits);
    if (!Number.isSafeInteger(n)) throw new ParseError('Number too large');
    return n;
  }

  nzNumber(): number {
    const n = this.number();
    if (n === 0) throw new ParseError('Expected a non-zero number');
    return n;
  }

  quoted(): Buffer {
    if (this.peek() !== Ch.DQUOTE) throw new ParseError('Expected a quoted string');
    this.pos++;
    const out: number[] = [];
    let eightBit = false;
    for (;;) {
      const c = this.peek();
      if (c < 0) throw new ParseError('Unterminated quoted string');
      this.pos++;
      if (c === Ch.DQUOTE) break;
      if (c === Ch.BACKSLASH) {
        const e = this.peek();
        if (e !== Ch.DQUOTE && e !== Ch.BACKSLASH) throw new ParseError('Invalid escape in quoted string');
        out.push(e);
        this.pos++;
      } else {
        out.push(c);
        if (c > 0x7f) eightBit = true;
      }
    }
    const data = Buffer.from(out);
    // RFC 6855 §3: once UTF8=ACCEPT is enabled, a quoted string with 8-bit octets that are not UTF-8 is BAD. Before
    // that, 8-bit octets are tolerated as they always were here (RFC 3501 has none in quoted strings, but clients send
    // raw UTF-8 search words); what they mean is up to the argument (a mailbox name refuses them).
    if (eightBit && this.utf8 && !isUtf8(data)) throw new ParseError('Invalid UTF-8 in quoted string');
    return data;
  }

  literal(): Buffer {
    if (!this.atLiteral()) throw new ParseError('Expected a literal');
    const data = this.frame.literals[this.li]!;
    this.li++;
    this.pos = 0;
    return data;
  }

  /**
   * literal8 = "~{" number ["+"] "}" CRLF *OCTET (RFC 3516 §7), in APPEND only: the framer reads it as any literal
   * (with the same limits) and leaves the "~" at the end of the line before it.
   */
  atLiteral8(): boolean {
    return this.pos === this.line.length - 1 && this.peek() === 0x7e && this.li < this.frame.literals.length;
  }

  literal8(): Buffer {
    if (!this.atLiteral8()) throw new ParseError('Expected a literal8');
    this.pos++;
    return this.literal();
  }

  /** string = quoted / literal */
  stringBuf(): Buffer {
    if (this.atLiteral()) return this.literal();
    return this.quoted();
  }

  /** astring = 1*ASTRING-CHAR / string; 8-bit octets are tolerated (clients send raw UTF-8 search words). */
  astringBuf(): Buffer {
    if (this.atLiteral() || this.peek() === Ch.DQUOTE) return this.stringBuf();
    const start = this.pos;
    this.readWhile((c) => isAtomChar(c) || c === 0x5d || c >= 0x80);
    if (this.pos === start) throw new ParseError(this.atEnd() ? 'Missing arguments' : `Expected a string at: ${this.rest()}`);
    return this.line.subarray(start, this.pos);
  }

  astring(): string {
    return this.astringBuf().toString('utf8');
  }

  string(): string {
    return this.stringBuf().toString('utf8');
  }

  /** nstring; NIL gives null. */
  nstring(): Buffer | null {
    if (this.peekAtom() === 'NIL') {
      this.atom();
      return null;
    }
    return this.stringBuf();
  }

  /** list-mailbox = 1*list-char / string (list-char adds % * and ]). */
  listMailbox(): string {
    if (this.atLiteral() || this.peek() === Ch.DQUOTE) return this.string();
    const s = this.readWhile((c) => isAtomChar(c) || c === 0x25 || c === 0x2a || c === 0x5d);
    if (!s) throw new ParseError('Expected a mailbox pattern');
    return s;
  }

  /** "(" [item *(SP item)] ")" */
  list<T>(item: () => T): T[] {
    this.char('(');
    const out: T[] = [];
    if (this.tryChar(')')) return out;
    for (;;) {
      out.push(item());
      if (this.tryChar(')')) return out;
      this.sp();
    }
  }

  /** flag = "\" atom / atom (keyword). */
  flag(): string {
    const backslash = this.tryChar('\\');
    return (backslash ? '\\' : '') + this.atom();
  }

  seqSet(): SeqSet {
    const set: SeqSet = [];
    do {
      const a = this.seqNumber();
      const b = this.tryChar(':') ? this.seqNumber() : a;
      set.push([a, b]);
    } while (this.tryChar(','));
    return set;
  }

  private seqNumber(): number {
    if (this.tryChar('*')) return STAR;
    const c = this.peek();
    if (c < 0x30 || c > 0x39) throw new ParseError(`Invalid sequence set at: ${this.rest()}`);
    return this.nzNumber();
  }
}
