// The IMAP commands: RFC 3501 plus IDLE, UIDPLUS, MOVE, NAMESPACE, ID, ENABLE, UNSELECT, LIST-EXTENDED,
// LIST-STATUS, SPECIAL-USE (with CREATE-SPECIAL-USE), MULTIAPPEND, BINARY, CONDSTORE, QRESYNC, ESEARCH, SORT, THREAD
// and UTF8=ACCEPT. Each handler parses all its arguments before acting, so a BAD never leaves a half-done change; it
// returns the text of the tagged OK (or throws ImapError / ParseError).
import type { FlagMode, MailboxInfo, SpecialUse } from '../store-api.js';
import { formatUidList, parseDateTime } from './encode.js';
import { modseqValue, needsRaw, needsTree, parseFetchRequest, renderFetch, retrievesContent, setsSeen } from './fetch.js';
import type { MimeNode } from './mime.js';
import { DELIMITER, listMailboxes, type ListQuery } from './list.js';
import { SYSTEM_FLAGS, uidRanges, type ViewEntry } from './mailbox-view.js';
import type { Command as CommandOf, CommandState } from './command.js';
import { BadCharsetError, ImapError, ParseError } from './errors.js';
import { STAR, parseHead, type Reader, type SeqSet } from './parser.js';
import { SUPPORTED_CHARSETS, esearchResponse, matches, parseCharset, parseCriteria, parseSearch, parseSearchReturn, usesBody, usesContent, usesModseq, type SearchKey } from './search.js';
import { parseSortCriteria, sortMessages, sortNeedsHeader } from './sort.js';
import { formatThreads, orderedSubject, parseThreadAlgorithm, references, threadMessage } from './thread.js';
import type { ImapSession } from './session.js';

type Command = CommandOf<ImapSession>;

const ANY: CommandState[] = ['notauth', 'auth', 'selected'];
const AUTHED: CommandState[] = ['auth', 'selected'];
const SELECTED: CommandState[] = ['selected'];

// ---- any state ----

async function capability(s: ImapSession, r: Reader) {
  r.end();
  s.send(`* CAPABILITY ${s.capabilities()}`);
}

async function noop(_s: ImapSession, r: Reader) {
  r.end();
}

async function logout(s: ImapSession, r: Reader) {
  r.end();
  s.logout();
  return 'LOGOUT completed';
}

async function id(s: ImapSession, r: Reader) {
  r.sp();
  // The client's identification is only parsed (RFC 2971 allows NIL or up to 30 pairs).
  if (r.peekAtom() === 'NIL') r.atom();
  else r.list(() => r.nstring());
  r.end();
  s.send('* ID ("name" "maillab" "vendor" "maillab")');
}

// ---- not authenticated ----

/**
 * LOGIN and AUTHENTICATE while LOGINDISABLED (no TLS yet on a node that has it): NO with PRIVACYREQUIRED (RFC 5530
 * §3: not permitted for lack of privacy, STARTTLS first), as Dovecot answers. The password is not looked at, so the
 * attempt counts against no throttle. NO, not BAD: the command is valid, only refused in this state.
 */
function requirePrivacy(s: ImapSession): void {
  if (!s.loginAllowed) throw new ImapError('NO', 'Plaintext authentication disallowed without TLS, use STARTTLS first', 'PRIVACYREQUIRED');
}

/**
 * STARTTLS (RFC 3501 §6.2.1), only on a node with TLS and before TLS: the tagged OK, then the handshake (the
 * session starts it after sending the OK, dropping whatever the client pipelined behind the command).
 */
async function starttls(s: ImapSession, r: Reader) {
  if (!s.ctx.tls) throw new ParseError('Unknown command STARTTLS');
  r.end();
  if (s.secure) throw new ImapError('BAD', 'TLS is already active');
  s.tlsPending = true;
  return 'Begin TLS negotiation now';
}

async function login(s: ImapSession, r: Reader) {
  const name = r.arg(() => r.astring());
  const password = r.arg(() => r.astring());
  r.end();
  requirePrivacy(s);
  // Awaited only when the check is asynchronous (an app password's hash): see LoginGuard.authenticate.
  const checked = s.checkLogin(name, password, 'LOGIN');
  const { user, appPassword } = checked instanceof Promise ? await checked : checked;
  s.login(user, 'LOGIN', appPassword);
  return `[CAPABILITY ${s.capabilities()}] Logged in`;
}

async function authenticate(s: ImapSession, r: Reader) {
  const mechanism = r.arg(() => r.atom().toUpperCase());
  let initial: string | undefined;
  if (r.trySp()) initial = r.atom();
  r.end();
  requirePrivacy(s);
  if (mechanism !== 'PLAIN') throw new ImapError('NO', `Unsupported authentication mechanism ${mechanism}`);
  if (initial === undefined) {
    // RFC 3501 §6.2.2: an empty challenge, then one line of base64 (or "*" to cancel).
    s.send('+ ');
    const item = await s.nextItem();
    if (!item) return;
    if (item.kind !== 'command') throw new ImapError('BAD', item.message);
    initial = Buffer.concat(item.frame.lines).toString('latin1').trim();
    if (item.frame.literals.length) throw new ImapError('BAD', 'Invalid SASL response');
  }
  if (initial === '*') throw new ImapError('BAD', 'Authentication cancelled');
  // SASL-IR: "=" stands for an empty initial response.
  const text = initial === '=' ? '' : initial;
  if (!/^[A-Za-z0-9+/]*={0,2}$/.test(text)) throw new ImapError('BAD', 'Invalid base64');
  const parts = Buffer.from(text, 'base64').toString('utf8').split('\0');
  if (parts.length !== 3) throw new ImapError('BAD', 'Invalid PLAIN response');
  const [authzid, authcid, password] = parts as [string, string, string];
  const checked = s.checkLogin(authcid, password, 'PLAIN');
  const { user, appPassword } = checked instanceof Promise ? await checked : checked;
  if (authzid && s.ctx.store.resolveUser(authzid) !== user) throw new ImapError('NO', 'Not authorized to act as that user', 'AUTHORIZATIONFAILED');
  s.login(user, 'PLAIN', appPassword);
  return `[CAPABILITY ${s.capabilities()}] Authenticated`;
}


// ---- authenticated ----

async function enable(s: ImapSession, r: Reader) {
  const enabled: string[] = [];
  do {
    const cap = r.arg(() => r.atom().toUpperCase());
    if (cap === 'CONDSTORE' && !enabled.includes(cap)) {
      s.condstore = true;
      enabled.push(cap);
    }
    // QRESYNC implies CONDSTORE (RFC 7162 §3.2.3).
    if (cap === 'QRESYNC' && !enabled.includes(cap)) {
      s.qresync = true;
      s.condstore = true;
      enabled.push(cap);
    }
    // UTF8=ACCEPT (RFC 6855 §3) changes how mailbox names are written, so it is taken only where RFC 5161 §3.1 allows
    // ENABLE, before a mailbox is selected: in the selected state it is not enabled (and so not listed in ENABLED).
    if (cap === 'UTF8=ACCEPT' && !enabled.includes(cap) && s.state === 'auth') {
      s.utf8 = true;
      enabled.push(cap);
    }
  } while (!r.atEnd());
  s.send(`* ENABLED${enabled.map((c) => ' ' + c).join('')}`);
}

async function namespace(s: ImapSession, r: Reader) {
  r.end();
  s.send(`* NAMESPACE (("" "${DELIMITER}")) NIL NIL`);
}

/** QRESYNC's SELECT parameter (RFC 7162 §3.2.5): what the client knew when it last had the mailbox. */
interface QresyncParams {
  uidValidity: number;
  modseq: number;
  knownUids?: SeqSet;
}

function parseQresync(r: Reader): QresyncParams {
  r.char('(');
  const uidValidity = r.nzNumber();
  r.sp();
  const params: QresyncParams = { uidValidity, modseq: modseqValue(r) };
  if (r.trySp() && r.peek() !== 0x28) {
    params.knownUids = r.seqSet();
    r.trySp();
  }
  if (r.peek() === 0x28) {
    // seq-match-data (§3.2.5.2) only helps a server without expunge history narrow VANISHED; this one reports every
    // UID not in the mailbox then, which the RFC allows, so it is read and not used.
    r.char('(');
    r.seqSet();
    r.sp();
    r.seqSet();
    r.char(')');
  }
  r.char(')');
  return params;
}

async function select(s: ImapSession, r: Reader, readOnly: boolean) {
  r.sp();
  const name = s.mailboxArg(r);
  let condstore = false;
  let qresync: QresyncParams | undefined;
  if (r.trySp()) {
    r.list(() => {
      const p = r.atom().toUpperCase();
      if (p === 'CONDSTORE') condstore = true;
      else if (p === 'QRESYNC') {
        r.sp();
        qresync = parseQresync(r);
      } else throw new ParseError(`Unknown SELECT parameter ${p}`);
    });
  }
  r.end();
  if (qresync && !s.qresync) throw new ImapError('BAD', 'QRESYNC parameter without ENABLE QRESYNC', 'CLIENTBUG');
  // A failed SELECT leaves no mailbox selected (RFC 3501 §6.3.1). The CLOSED response code separates what was
  // about the mailbox that was selected from what follows (RFC 7162 §3.2.11).
  const wasSelected = s.view !== undefined;
  s.closeMailbox();
  if (wasSelected) s.send('* OK [CLOSED] Previous mailbox closed');
  const info = await s.findMailbox(name);
  if (!info) throw new ImapError('NO', 'Mailbox does not exist', 'NONEXISTENT');
  if (condstore) s.condstore = true;
  const view = await s.openMailbox(info, readOnly);
  s.send(`* FLAGS (${view.flagsResponse()})`);
  s.send(`* OK [PERMANENTFLAGS (${readOnly ? '' : view.flagsResponse() + ' \\*'})] ${readOnly ? 'Read-only mailbox' : 'Flags permitted'}`);
  s.send(`* ${view.exists} EXISTS`);
  s.send(`* ${view.recent} RECENT`);
  const unseen = view.firstUnseen();
  if (unseen) s.send(`* OK [UNSEEN ${unseen}] First unseen`);
  s.send(`* OK [UIDVALIDITY ${view.uidValidity}] UIDs valid`);
  s.send(`* OK [UIDNEXT ${view.uidNext}] Predicted next UID`);
  s.send(`* OK [HIGHESTMODSEQ ${view.highestModseq}] Highest`);
  // QRESYNC (RFC 7162 §3.2.5.1): what vanished and what changed since the client's modseq, within the UIDs it
  // knows; nothing when the UIDVALIDITY changed (the client must then start over).
  if (qresync && qresync.uidValidity === view.uidValidity) {
    const { modseq, knownUids } = qresync;
    const vanished = await s.vanishedEarlier(modseq, knownUids);
    if (vanished) s.send(`* VANISHED (EARLIER) ${vanished}`);
    s.announceKeywords();
    const ranges = uidRanges(knownUids ?? [[1, STAR]], view.uidNext - 1);
    for (const e of view.entries) {
      const uid = e.msg.uid;
      if (e.gone || e.msg.modseq <= modseq || !ranges.some(([lo, hi]) => uid >= lo && uid <= hi)) continue;
      s.send(`* ${view.seqOf(e)} FETCH (UID ${uid} FLAGS (${view.flagsOf(e).join(' ')}) MODSEQ (${e.msg.modseq}))`);
    }
  }
  return `[${readOnly ? 'READ-ONLY' : 'READ-WRITE'}] ${readOnly ? 'EXAMINE' : 'SELECT'} completed`;
}

function validateNewName(name: string): string {
  // A trailing delimiter only declares the intent to create children (RFC 3501 §6.3.3).
  const trimmed = name.endsWith(DELIMITER) ? name.slice(0, -1) : name;
  if (!trimmed || trimmed.startsWith(DELIMITER) || trimmed.includes(DELIMITER + DELIMITER) || /[*%\x00-\x1f\x7f]/.test(trimmed)) {
    throw new ImapError('NO', 'Invalid mailbox name', 'CANNOT');
  }
  return trimmed;
}

/** The special uses CREATE can give a mailbox (RFC 6154 §2); the store keeps one per mailbox. */
const CREATE_USES: readonly SpecialUse[] = ['\\Archive', '\\Drafts', '\\Junk', '\\Sent', '\\Trash'];

async function create(s: ImapSession, r: Reader) {
  r.sp();
  const name = validateNewName(s.mailboxArg(r));
  // RFC 6154 §3 (CREATE-SPECIAL-USE), in the create-params of RFC 4466 §2.2: CREATE name (USE (\Sent)).
  let uses: string[] = [];
  if (r.trySp()) {
    r.list(() => {
      const param = r.atom().toUpperCase();
      if (param !== 'USE') throw new ParseError(`Unknown CREATE parameter ${param}`);
      r.sp();
      uses = r.list(() => r.flag());
    });
  }
  r.end();
  let specialUse: SpecialUse | undefined;
  for (const use of uses) {
    const known = CREATE_USES.find((u) => u.toLowerCase() === use.toLowerCase());
    // Nothing is created when a use cannot be given (RFC 6154 §3): \All and \Flagged (virtual mailboxes here
    // would be none), unknown ones, and a second use, since a mailbox has one special use in this store.
    if (!known) throw new ImapError('NO', `${use} not supported`, 'USEATTR');
    if (specialUse && specialUse !== known) throw new ImapError('NO', 'Only one special use per mailbox', 'USEATTR');
    specialUse = known;
  }
  if (await s.findMailbox(name)) throw new ImapError('NO', 'Mailbox already exists', 'ALREADYEXISTS');
  // The store creates missing superior levels (RFC 3501 §6.3.3).
  await s.ctx.store.createMailbox(s.user!, name, specialUse);
}

async function deleteMailbox(s: ImapSession, r: Reader) {
  r.sp();
  const name = s.mailboxArg(r);
  r.end();
  if (name === 'INBOX') throw new ImapError('NO', 'INBOX cannot be deleted', 'CANNOT');
  if (!(await s.findMailbox(name))) throw new ImapError('NO', 'Mailbox does not exist', 'NONEXISTENT');
  // Children survive; LIST then shows the name as \Noselect, as RFC 3501 §6.3.4 describes.
  await s.ctx.store.deleteMailbox(s.user!, name);
  if (s.view?.name === name) s.closeMailbox();
}

async function rename(s: ImapSession, r: Reader) {
  r.sp();
  const from = s.mailboxArg(r);
  r.sp();
  const to = validateNewName(s.mailboxArg(r));
  r.end();
  const existing = await s.ctx.store.listMailboxes(s.user!);
  if (!existing.some((m) => m.name === from)) throw new ImapError('NO', 'Mailbox does not exist', 'NONEXISTENT');
  if (existing.some((m) => m.name === to)) throw new ImapError('NO', 'Target mailbox already exists', 'ALREADYEXISTS');
  if (to.startsWith(from + DELIMITER)) throw new ImapError('NO', 'Cannot move a mailbox into itself', 'CANNOT');
  // The store moves inferior names along, and for INBOX moves the messages, leaving INBOX empty (§6.3.5).
  await s.ctx.store.renameMailbox(s.user!, from, to);
  if (from !== 'INBOX' && s.view && (s.view.name === from || s.view.name.startsWith(from + DELIMITER))) s.closeMailbox();
}

async function subscribe(s: ImapSession, r: Reader, subscribed: boolean) {
  r.sp();
  const name = s.mailboxArg(r);
  r.end();
  // Unsubscribing a name that no longer exists must stay possible.
  if (subscribed && !(await s.findMailbox(name))) throw new ImapError('NO', 'Mailbox does not exist', 'NONEXISTENT');
  await s.ctx.store.setSubscribed(s.user!, name, subscribed);
}

const STATUS_ITEMS = ['MESSAGES', 'RECENT', 'UIDNEXT', 'UIDVALIDITY', 'UNSEEN', 'HIGHESTMODSEQ'];

function parseStatusItems(r: Reader): string[] {
  const items = r.list(() => r.atom().toUpperCase());
  for (const item of items) if (!STATUS_ITEMS.includes(item)) throw new ParseError(`Unknown STATUS item ${item}`);
  if (!items.length) throw new ParseError('Empty STATUS item list');
  return items;
}

async function statusLine(s: ImapSession, info: MailboxInfo, items: string[]): Promise<string> {
  let recent = 0;
  if (items.includes('RECENT')) {
    const uids = (await s.ctx.store.messages(s.user!, info.name)).map((m) => m.uid);
    recent = s.ctx.recent.count(s.user!, info.name, info.uidValidity, uids);
  }
  const values: Record<string, number> = {
    MESSAGES: info.exists,
    RECENT: recent,
    UIDNEXT: info.uidNext,
    UIDVALIDITY: info.uidValidity,
    UNSEEN: info.unseen,
    HIGHESTMODSEQ: info.highestModseq,
  };
  return `* STATUS ${s.quoteMailbox(info.name)} (${items.map((i) => `${i} ${values[i]}`).join(' ')})`;
}

async function status(s: ImapSession, r: Reader) {
  r.sp();
  const name = s.mailboxArg(r);
  r.sp();
  const items = parseStatusItems(r);
  r.end();
  const info = await s.findMailbox(name);
  if (!info) throw new ImapError('NO', 'Mailbox does not exist', 'NONEXISTENT');
  if (items.includes('HIGHESTMODSEQ')) s.condstore = true;
  s.send(await statusLine(s, info, items));
}

async function list(s: ImapSession, r: Reader) {
  r.sp();
  const query: ListQuery = { patterns: [] };
  if (r.peek() === 0x28) {
    query.extended = true;
    for (const opt of r.list(() => r.atom().toUpperCase())) {
      if (opt === 'SUBSCRIBED') query.selectSubscribed = true;
      else if (opt === 'SPECIAL-USE') query.selectSpecialUse = true;
      else if (opt === 'RECURSIVEMATCH') query.recursiveMatch = true;
      else if (opt !== 'REMOTE') throw new ParseError(`Unknown LIST selection option ${opt}`);
    }
    r.sp();
    if (query.recursiveMatch && !query.selectSubscribed) throw new ParseError('RECURSIVEMATCH needs another selection option');
  }
  const reference = r.astring();
  r.sp();
  let patterns: string[];
  if (r.peek() === 0x28) {
    query.extended = true;
    patterns = r.list(() => r.listMailbox());
  } else {
    patterns = [r.listMailbox()];
  }
  let statusItems: string[] | undefined;
  if (r.trySp()) {
    if (r.atom().toUpperCase() !== 'RETURN') throw new ParseError('Expected RETURN');
    query.extended = true;
    r.sp();
    r.list(() => {
      const opt = r.atom().toUpperCase();
      if (opt === 'SUBSCRIBED') query.returnSubscribed = true;
      else if (opt === 'STATUS') {
        r.sp();
        statusItems = parseStatusItems(r);
      } else if (opt !== 'CHILDREN' && opt !== 'SPECIAL-USE') throw new ParseError(`Unknown LIST return option ${opt}`);
    });
  }
  r.end();
  if (patterns.length === 1 && patterns[0] === '' && !query.selectSubscribed && !query.selectSpecialUse) {
    // The hierarchy delimiter and root (RFC 3501 §6.3.8).
    s.send(`* LIST (\\Noselect) "${DELIMITER}" ""`);
    return;
  }
  query.patterns = patterns.filter((p) => p !== '').map((p) => reference + p);
  if (s.utf8) query.utf8 = true;
  const subscriptions = query.selectSubscribed ? await s.ctx.store.subscriptions(s.user!) : undefined;
  const entries = listMailboxes(await s.ctx.store.listMailboxes(s.user!), query, subscriptions);
  for (const entry of entries) {
    const extra = entry.childSubscribed ? ' ("CHILDINFO" ("SUBSCRIBED"))' : '';
    s.send(`* LIST (${entry.attributes.join(' ')}) "${DELIMITER}" ${s.quoteMailbox(entry.name)}${extra}`);
    // STATUS only for a mailbox that matches the selection (RFC 5819 §2), not one listed for its CHILDINFO alone.
    if (statusItems && entry.info && !entry.childInfoOnly) s.send(await statusLine(s, entry.info, statusItems));
  }
  if (statusItems?.includes('HIGHESTMODSEQ')) s.condstore = true;
}

async function lsub(s: ImapSession, r: Reader) {
  const reference = r.arg(() => r.astring());
  const pattern = r.arg(() => r.listMailbox());
  r.end();
  if (pattern === '') {
    s.send(`* LSUB (\\Noselect) "${DELIMITER}" ""`);
    return;
  }
  const entries = listMailboxes(await s.ctx.store.listMailboxes(s.user!), { patterns: [reference + pattern], lsub: true, utf8: s.utf8 }, await s.ctx.store.subscriptions(s.user!));
  for (const entry of entries) s.send(`* LSUB (${entry.attributes.join(' ')}) "${DELIMITER}" ${s.quoteMailbox(entry.name)}`);
}

/** Flags from a client: system flags in their canonical spelling; \Recent cannot be set; others are errors. */
function storeFlags(flags: string[]): string[] {
  const out: string[] = [];
  for (const flag of flags) {
    let f = flag;
    if (f.startsWith('\\')) {
      if (f.toLowerCase() === '\\recent') continue;
      const canonical = SYSTEM_FLAGS.find((x) => x.toLowerCase() === f.toLowerCase());
      if (!canonical) throw new ParseError(`Invalid flag ${flag}`);
      f = canonical;
    }
    if (!out.some((x) => x.toLowerCase() === f.toLowerCase())) out.push(f);
  }
  return out;
}

/** Stored messages have CRLF line ends; a lone LF from a careless client is made CRLF. */
function normalizeLineEnds(data: Buffer): Buffer {
  let bare = false;
  for (let i = data.indexOf(0x0a); i >= 0; i = data.indexOf(0x0a, i + 1)) {
    if (i === 0 || data[i - 1] !== 0x0d) {
      bare = true;
      break;
    }
  }
  if (!bare) return data;
  return Buffer.from(data.toString('latin1').replace(/\r?\n/g, '\r\n'), 'latin1');
}

interface AppendedMessage {
  data: Buffer;
  flags: string[];
  date?: number;
  /** Sent as a literal8 (RFC 3516 §4.4). */
  binary: boolean;
}

/**
 * One message of APPEND: [flag-list SP] [date-time SP] (literal / literal8 / "UTF8" SP "(" literal8 ")"). The UTF8
 * form (RFC 6855 §4, a message with UTF-8 headers, RFC 6532) is BAD unless the session enabled UTF8=ACCEPT; its
 * octets are kept as they are, like a BINARY literal8's.
 */
function appendMessage(r: Reader, utf8Enabled: boolean): AppendedMessage {
  let flags: string[] = [];
  let date: number | undefined;
  if (r.peek() === 0x28) {
    flags = storeFlags(r.list(() => r.flag()));
    r.sp();
  }
  if (r.peek() === 0x22) {
    const text = r.quoted().toString('latin1');
    date = parseDateTime(text);
    if (date === undefined) throw new ParseError(`Invalid date-time ${text}`);
    r.sp();
  }
  if (r.peekAtom() === 'UTF8') {
    if (!utf8Enabled) throw new ImapError('BAD', 'APPEND UTF8 without ENABLE UTF8=ACCEPT', 'CLIENTBUG');
    r.atom();
    r.sp();
    r.char('(');
    const data = r.literal8();
    r.char(')');
    return { data, flags, date, binary: true };
  }
  const binary = r.atLiteral8();
  if (!binary && !r.atLiteral()) throw new ParseError('Expected the message as a literal');
  const raw = binary ? r.literal8() : r.literal();
  return { data: binary ? raw : normalizeLineEnds(raw), flags, date, binary };
}

/** Octets the store cannot keep as they are: it keeps messages as CRLF lines, so a bare CR or LF would change. */
function storableAsIs(data: Buffer): boolean {
  for (let i = 0; i < data.length; i++) {
    const c = data[i]!;
    if (c === 0x00) return false;
    if (c === 0x0d ? data[i + 1] !== 0x0a : c === 0x0a && data[i - 1] !== 0x0d) return false;
  }
  return true;
}

async function append(s: ImapSession, r: Reader) {
  r.sp();
  const name = s.mailboxArg(r);
  // MULTIAPPEND (RFC 3502): one or more messages, each with its own flags and date; all are read before any is stored.
  const messages: AppendedMessage[] = [];
  do {
    r.sp();
    messages.push(appendMessage(r, s.utf8));
  } while (!r.atEnd());
  r.end();
  // An empty message cancels the whole APPEND (RFC 3502 §6.3.11).
  if (messages.some((m) => !m.data.length)) throw new ImapError('NO', 'Empty message');
  // BINARY (RFC 3516 §4.4): content with NUL or bare CR / LF cannot be kept without loss, which must be refused so.
  if (messages.some((m) => m.binary && !storableAsIs(m.data))) {
    throw new ImapError('NO', 'Binary content with NUL or bare CR/LF cannot be stored here', 'UNKNOWN-CTE');
  }
  const info = await s.findMailbox(name);
  if (!info) throw new ImapError('NO', 'Mailbox does not exist', 'TRYCREATE');
  // All or none (RFC 3502 §6.3.11): one change of the store, which takes back what it stored when one fails.
  const stored = await s.ctx.store.appendMany(s.user!, name, messages.map((m) => ({ data: m.data, flags: m.flags, ...(m.date !== undefined ? { internalDate: m.date } : {}) })));
  const uids = stored.map((m) => m.uid);
  return `[APPENDUID ${info.uidValidity} ${formatUidList(uids)}] APPEND completed`;
}

async function idle(s: ImapSession, r: Reader) {
  r.end();
  s.send('+ idling');
  s.idling = true;
  try {
    s.announce(true);
    const item = await s.nextItem();
    if (!item) return;
    if (item.kind !== 'command' || item.frame.literals.length || item.frame.lines[0]!.toString('latin1').trim().toUpperCase() !== 'DONE') {
      throw new ImapError('BAD', 'Expected DONE');
    }
  } finally {
    s.idling = false;
  }
  return 'IDLE terminated';
}

// ---- selected ----

async function check(_s: ImapSession, r: Reader) {
  r.end();
}

function writable(s: ImapSession): void {
  if (s.view!.readOnly) throw new ImapError('NO', 'Mailbox is read-only', 'READ-ONLY');
}

/** Removes the \Deleted messages (optionally only those in a UID set); returns their UIDs. */
async function expungeDeleted(s: ImapSession, only?: Set<number>): Promise<number[]> {
  const view = s.view!;
  const doomed = view.entries.filter((e) => !e.gone && e.msg.flags.includes('\\Deleted') && (!only || only.has(e.msg.uid)));
  if (!doomed.length) return [];
  // Events name the message by its Message-ID, which can only be read before the message is gone.
  const ids = new Map<number, string | undefined>();
  if (s.ctx.events) for (const e of doomed) ids.set(e.msg.uid, await s.loadMessage(e, false).then((m) => s.messageId(e, m.tree), () => undefined));
  const removed = new Set(await s.ctx.store.remove(s.user!, view.name, doomed.map((e) => e.msg.uid)));
  for (const e of doomed) {
    if (!removed.has(e.msg.uid)) continue;
    const messageId = ids.get(e.msg.uid);
    s.emit('deleted', { user: s.user!, mailbox: view.name, protocol: 'imap', uid: e.msg.uid }, { queueId: e.msg.id, ...(messageId ? { messageId } : {}) });
  }
  return [...removed];
}

async function close(s: ImapSession, r: Reader) {
  r.end();
  // CLOSE expunges silently (RFC 3501 §6.4.2); read-only mailboxes are left alone.
  if (!s.view!.readOnly) await expungeDeleted(s);
  s.closeMailbox();
}

async function unselect(s: ImapSession, r: Reader) {
  r.end();
  s.closeMailbox();
}

async function expunge(s: ImapSession, r: Reader, uid: boolean) {
  let only: Set<number> | undefined;
  if (uid) {
    r.sp();
    only = new Set(s.resolveSet(r.seqSet(), true).map((e) => e.msg.uid));
  }
  r.end();
  writable(s);
  s.expunged(await expungeDeleted(s, only));
}

/** A charset or search program the server cannot handle: NO [BADCHARSET (...)] (RFC 3501 §6.4.4). */
function parseWithCharset<T>(parse: () => T): T {
  try {
    return parse();
  } catch (err) {
    if (err instanceof BadCharsetError) throw new ImapError('NO', `Unsupported charset ${err.message}`, `BADCHARSET (${SUPPORTED_CHARSETS.join(' ')})`);
    throw err;
  }
}

interface Matched {
  entry: ViewEntry;
  seq: number;
  tree?: MimeNode;
}

/** The selected messages a search program matches, in sequence order; `withTree` loads their structure too. */
async function matching(s: ImapSession, key: SearchKey, withTree = false): Promise<Matched[]> {
  const view = s.view!;
  const content = withTree || usesContent(key);
  const body = usesBody(key);
  if (usesModseq(key)) s.condstore = true;
  const ctx = { maxSeq: view.exists, maxUid: view.entries[view.exists - 1]?.msg.uid ?? 0 };
  const results: Matched[] = [];
  for (let i = 0; i < view.entries.length; i++) {
    const e = view.entries[i]!;
    if (e.gone) continue;
    let data: { raw?: Buffer; tree?: MimeNode } = {};
    if (content) {
      try {
        data = await s.loadMessage(e, body);
      } catch {
        continue; // removed meanwhile
      }
    }
    const m = { seq: i + 1, uid: e.msg.uid, flags: e.msg.flags, recent: e.recent, size: e.msg.size, internalDate: e.msg.internalDate, modseq: e.msg.modseq, ...data };
    if (matches(key, m, ctx)) results.push({ entry: e, seq: i + 1, ...(data.tree ? { tree: data.tree } : {}) });
  }
  return results;
}

/** The command's tag, for ESEARCH's correlator. */
const commandTag = (r: Reader): string => parseHead(r.frame.lines[0]!).tag ?? '';

async function search(s: ImapSession, r: Reader, uid: boolean) {
  r.sp();
  const options = parseSearchReturn(r);
  // RFC 6855 §3: after ENABLE UTF8=ACCEPT a SEARCH must not name a charset (everything is UTF-8); one that does is BAD.
  if (s.utf8 && r.peekAtom() === 'CHARSET') throw new ImapError('BAD', 'SEARCH with CHARSET after ENABLE UTF8=ACCEPT', 'CLIENTBUG');
  const key = parseWithCharset(() => parseSearch(r));
  const matched = await matching(s, key);
  const hits = matched.map((m) => ({ n: uid ? m.entry.msg.uid : m.seq, modseq: m.entry.msg.modseq }));
  if (options) {
    s.send(esearchResponse(commandTag(r), uid, options, hits, usesModseq(key)));
    return;
  }
  s.send(`* SEARCH${hits.map((h) => ' ' + h.n).join('')}${modseqSuffix(key, matched)}`);
}

/** `* SORT ...` and `* SEARCH ...` end with the highest modseq when the program used MODSEQ (RFC 7162 §3.1.5). */
function modseqSuffix(key: SearchKey, matched: readonly Matched[]): string {
  if (!usesModseq(key) || !matched.length) return '';
  return ` (MODSEQ ${matched.reduce((max, m) => Math.max(max, m.entry.msg.modseq), 0)})`;
}

/** SORT's and THREAD's `search-charset 1*(SP search-key)`: the charset is required there. */
function charsetAndCriteria(r: Reader): SearchKey {
  parseCharset(r);
  r.sp();
  return parseCriteria(r);
}

/** `SORT (criteria) charset search-key...` (RFC 5256 §3); UID SORT answers with UIDs. */
async function sort(s: ImapSession, r: Reader, uid: boolean) {
  r.sp();
  const criteria = parseSortCriteria(r);
  r.sp();
  const key = parseWithCharset(() => charsetAndCriteria(r));
  const matched = await matching(s, key, sortNeedsHeader(criteria));
  const sorted = sortMessages(
    matched.map((m) => ({ seq: m.seq, internalDate: m.entry.msg.internalDate, size: m.entry.msg.size, m, ...(m.tree ? { tree: m.tree } : {}) })),
    criteria,
  );
  s.send(`* SORT${sorted.map((x) => ' ' + (uid ? x.m.entry.msg.uid : x.seq)).join('')}${modseqSuffix(key, matched)}`);
}

/** `THREAD algorithm charset search-key...` (RFC 5256 §4); UID THREAD answers with UIDs. */
async function thread(s: ImapSession, r: Reader, uid: boolean) {
  r.sp();
  const algorithm = parseThreadAlgorithm(r);
  r.sp();
  const key = parseWithCharset(() => charsetAndCriteria(r));
  const messages = (await matching(s, key, true)).map((m) =>
    threadMessage({ n: uid ? m.entry.msg.uid : m.seq, seq: m.seq, internalDate: m.entry.msg.internalDate, tree: m.tree! }),
  );
  const threads = algorithm === 'REFERENCES' ? references(messages) : orderedSubject(messages);
  const text = formatThreads(threads);
  s.send(`* THREAD${text ? ' ' + text : ''}`);
}

async function fetch(s: ImapSession, r: Reader, uid: boolean) {
  const set = r.arg(() => r.seqSet());
  r.sp();
  const req = parseFetchRequest(r);
  const view = s.view!;
  let entries = s.resolveSet(set, uid);
  const changedSince = req.changedSince;
  if (req.vanished) {
    // RFC 7162 §3.2.6: UID FETCH only, with CHANGEDSINCE, once QRESYNC is enabled.
    if (!uid || changedSince === undefined) throw new ParseError('VANISHED needs UID FETCH with CHANGEDSINCE');
    if (!s.qresync) throw new ImapError('BAD', 'VANISHED without ENABLE QRESYNC', 'CLIENTBUG');
  }
  if (changedSince !== undefined) entries = entries.filter((e) => e.msg.modseq > changedSince);
  if (changedSince !== undefined || req.items.some((i) => i.kind === 'MODSEQ')) s.condstore = true;
  if (req.vanished) {
    const vanished = await s.vanishedEarlier(changedSince!, set);
    if (vanished) s.send(`* VANISHED (EARLIER) ${vanished}`);
  }

  // Reading a body sets \Seen (RFC 3501 §6.4.5); the new flags then go out with the data.
  const seenNow = new Set<number>();
  if (setsSeen(req) && !view.readOnly) {
    const unseen = entries.filter((e) => !e.gone && !e.msg.flags.includes('\\Seen')).map((e) => e.msg.uid);
    if (unseen.length) {
      for (const m of await s.ctx.store.setFlags(s.user!, view.name, unseen, ['\\Seen'], 'add')) {
        view.noteFlags(m);
        seenNow.add(m.uid);
      }
    }
  }
  const raw = needsRaw(req);
  const tree = needsTree(req);
  const retrieves = retrievesContent(req);
  let missing = 0;
  for (const e of entries) {
    if (e.gone) {
      missing++;
      continue;
    }
    let data: { raw?: Buffer; tree?: MimeNode } = {};
    if (raw || tree) {
      try {
        data = await s.loadMessage(e, raw);
      } catch {
        missing++;
        continue;
      }
    }
    // Keywords the client has not heard of (set here, or by another session, also while this one read the
    // message) are announced before the FETCH that shows them.
    s.announceKeywords();
    const m = { seq: view.seqOf(e), uid: e.msg.uid, flags: view.flagsOf(e), internalDate: e.msg.internalDate, size: e.msg.size, modseq: e.msg.modseq, ...data };
    // RFC 7162 §3.1: with CONDSTORE on, a FETCH that changed flags carries UID and MODSEQ.
    const changed = seenNow.has(e.msg.uid);
    const showsFlags = req.items.some((item) => item.kind === 'FLAGS');
    const showsModseq = changedSince !== undefined || (changed && s.condstore) || req.items.some((item) => item.kind === 'MODSEQ');
    s.sendChunks(renderFetch(req, m, { uid: uid || (changed && s.condstore), flags: changed, modseq: showsModseq }));
    // A CONDSTORE client also needs the change's MODSEQ (RFC 7162 §3.2): without it, the update still follows.
    if ((changed || showsFlags) && (showsModseq || !s.condstore)) view.shownFlags(e);
    if (retrieves) {
      const messageId = s.messageId(e, data.tree);
      s.emit('retrieved', { user: s.user!, mailbox: view.name, protocol: 'imap', uid: e.msg.uid, size: e.msg.size }, { queueId: e.msg.id, ...(messageId ? { messageId } : {}) });
    }
    await s.waitDrain();
  }
  if (missing) return `[EXPUNGEISSUED] Some messages were expunged meanwhile`;
}

async function store(s: ImapSession, r: Reader, uid: boolean) {
  const set = r.arg(() => r.seqSet());
  r.sp();
  let unchangedSince: number | undefined;
  if (r.peek() === 0x28) {
    r.list(() => {
      const name = r.atom().toUpperCase();
      if (name !== 'UNCHANGEDSINCE') throw new ParseError(`Unknown STORE modifier ${name}`);
      r.sp();
      unchangedSince = modseqValue(r);
    });
    r.sp();
  }
  const op = /^([+-]?)FLAGS(\.SILENT)?$/.exec(r.atom().toUpperCase());
  if (!op) throw new ParseError('Expected FLAGS, +FLAGS or -FLAGS');
  r.sp();
  let raw: string[];
  if (r.peek() === 0x28) {
    raw = r.list(() => r.flag());
  } else {
    raw = [r.flag()];
    while (r.trySp()) raw.push(r.flag());
  }
  r.end();
  writable(s);
  const flags = storeFlags(raw);
  const mode: FlagMode = op[1] === '+' ? 'add' : op[1] === '-' ? 'remove' : 'set';
  const silent = !!op[2];
  const view = s.view!;
  if (unchangedSince !== undefined) s.condstore = true;

  const entries = s.resolveSet(set, uid).filter((e) => !e.gone);
  // CONDSTORE: messages changed since the client's modseq are left alone and reported as MODIFIED.
  const modified = unchangedSince === undefined ? [] : entries.filter((e) => e.msg.modseq > unchangedSince!);
  const targets = entries.filter((e) => !modified.includes(e));
  const updated = targets.length ? await s.ctx.store.setFlags(s.user!, view.name, targets.map((e) => e.msg.uid), flags, mode) : [];
  for (const m of updated) view.noteFlags(m);
  s.announceKeywords();
  for (const m of updated) {
    const entry = view.byUidEntry(m.uid);
    if (!entry || (silent && !s.condstore)) continue;
    const parts: string[] = [];
    // RFC 7162 §3.1: with CONDSTORE on, STORE's FETCH responses carry UID and MODSEQ.
    if (uid || s.condstore) parts.push(`UID ${m.uid}`);
    if (!silent) parts.push(`FLAGS (${view.flagsOf(entry).join(' ')})`);
    if (s.condstore) parts.push(`MODSEQ (${m.modseq})`);
    s.send(`* ${view.seqOf(entry)} FETCH (${parts.join(' ')})`);
  }
  if (modified.length) {
    const ids = modified.map((e) => (uid ? e.msg.uid : view.seqOf(e)));
    return `[MODIFIED ${formatUidList(ids)}] Conditional STORE failed`;
  }
}

async function copyOrMove(s: ImapSession, r: Reader, uid: boolean, move: boolean) {
  const set = r.arg(() => r.seqSet());
  r.sp();
  const dest = s.mailboxArg(r);
  r.end();
  if (move) writable(s);
  const view = s.view!;
  const entries = s.resolveSet(set, uid);
  const live = entries.filter((e) => !e.gone);
  const name = move ? 'MOVE' : 'COPY';
  if (!live.length) {
    if (entries.length) throw new ImapError('NO', 'The messages were expunged meanwhile', 'EXPUNGEISSUED');
    return `${name} completed (no messages)`;
  }
  if (!(await s.findMailbox(dest))) throw new ImapError('NO', 'Mailbox does not exist', 'TRYCREATE');
  const uids = live.map((e) => e.msg.uid);
  const result = move ? await s.ctx.store.move(s.user!, view.name, uids, dest) : await s.ctx.store.copy(s.user!, view.name, uids, dest);
  // COPYUID pairs source and new UIDs by position; without sourceUids that only holds when all were copied.
  const sources = result.sourceUids ?? (result.uids.length === uids.length ? uids : undefined);
  const copyUid = sources && result.uids.length ? `[COPYUID ${result.uidValidity} ${formatUidList(sources)} ${formatUidList(result.uids)}] ` : '';
  if (!move) return `${copyUid}COPY completed`;
  s.send(`* OK ${copyUid}Moved`);
  s.expunged(sources ?? uids);
  return 'MOVE completed';
}

export const COMMANDS: Record<string, Command> = {
  CAPABILITY: { states: ANY, run: capability },
  NOOP: { states: ANY, run: noop },
  LOGOUT: { states: ANY, run: logout },
  ID: { states: ANY, run: id },
  LOGIN: { states: ['notauth'], run: login },
  AUTHENTICATE: { states: ['notauth'], run: authenticate },
  STARTTLS: { states: ['notauth'], run: starttls },
  ENABLE: { states: AUTHED, run: enable },
  NAMESPACE: { states: AUTHED, run: namespace },
  SELECT: { states: AUTHED, run: (s, r) => select(s, r, false) },
  EXAMINE: { states: AUTHED, run: (s, r) => select(s, r, true) },
  CREATE: { states: AUTHED, run: create },
  DELETE: { states: AUTHED, run: deleteMailbox },
  RENAME: { states: AUTHED, run: rename },
  SUBSCRIBE: { states: AUTHED, run: (s, r) => subscribe(s, r, true) },
  UNSUBSCRIBE: { states: AUTHED, run: (s, r) => subscribe(s, r, false) },
  LIST: { states: AUTHED, run: list },
  LSUB: { states: AUTHED, run: lsub },
  STATUS: { states: AUTHED, run: status },
  APPEND: { states: AUTHED, run: append },
  IDLE: { states: AUTHED, run: idle },
  CHECK: { states: SELECTED, run: check },
  CLOSE: { states: SELECTED, run: close },
  UNSELECT: { states: SELECTED, run: unselect },
  EXPUNGE: { states: SELECTED, uid: true, run: expunge },
  SEARCH: { states: SELECTED, uid: true, run: search },
  SORT: { states: SELECTED, uid: true, run: sort },
  THREAD: { states: SELECTED, uid: true, run: thread },
  FETCH: { states: SELECTED, uid: true, run: fetch },
  STORE: { states: SELECTED, uid: true, run: store },
  COPY: { states: SELECTED, uid: true, run: (s, r, uid) => copyOrMove(s, r, uid, false) },
  MOVE: { states: SELECTED, uid: true, run: (s, r, uid) => copyOrMove(s, r, uid, true) },
};
