// SMTP-level faults (issue 15): the rules of one node's SMTP/LMTP servers (src/shared/faults.ts has their shapes), held
// in memory and decided here; shared/smtp-server.ts applies the decisions at the connection level, so every SMTP or
// LMTP server of the lab (the MTA's 25/587/465, the MX's 25, the mailbox server's LMTP) has them, and one node's
// servers share one rule set, one greylist and one rate-limit table.
//
// How a rule is decided, at each stage a session reaches:
// - rules are tried in list order; the first one that matches (stage, then every `match` field given), is not spent
//   (`times`), and wins its draw (`probability`, from the stream `smtp:<node>:<rule id>` of the lab's seed) fires;
// - `greylist` and `rate-limit` rules fire only when their state says so (a triple seen for the first time, or not
//   long enough ago; a client past its rate): otherwise the next rule is tried;
// - a rule that fired counts towards its `times`, and the node emits a `fault` event (FaultFired).
// Memory stays bounded: at most GREYLIST_MAX_ENTRIES greylist triples and RATE_LIMIT_MAX_CLIENTS clients per node (the
// oldest are forgotten first), and a client's rate window keeps no more than `messages` times.
import { SMTP_FAULT_STAGES, type FaultFired, type SmtpFaultAction, type SmtpFaultMatch, type SmtpFaultRule, type SmtpFaultRuleView, type SmtpFaultStage } from './faults.js';
import { seededRandom, type Seed } from './seeded-random.js';

/** Greylist triples a node remembers; past it the oldest is forgotten (it is greylisted again if it comes back). */
export const GREYLIST_MAX_ENTRIES = 10_000;
/** Clients whose rate a node tracks per rate-limit rule; past it the least recently seen is forgotten. */
export const RATE_LIMIT_MAX_CLIENTS = 10_000;
/** Rules a node holds at most. */
export const SMTP_FAULT_MAX_RULES = 100;
/** The longest `delay` (and greylist `delayMs`, rate-limit `windowMs`) a rule may ask for: one hour. */
export const SMTP_FAULT_MAX_MS = 3_600_000;

/** What a session shows a rule, at a stage. Addresses as the client wrote them; compared case-insensitively. */
export interface SmtpFaultContext {
  stage: SmtpFaultStage;
  /** The client's IP address (an IPv4-mapped IPv6 address as the IPv4 address). */
  client: string;
  /** MAIL FROM, from `mail` on ('' for the null sender). */
  sender?: string;
  /** At `rcpt`: the recipient of that command; later: the transaction's recipients. */
  recipients?: string[];
}

/** What the server does when a rule fires (greylist and rate-limit come down to a reply). */
export type SmtpFaultEffect =
  | { kind: 'reply'; code: number; text: string }
  | { kind: 'delay'; ms: number }
  | { kind: 'drop'; when: 'before-reply' | 'after-reply' };

export interface SmtpFaultDecision {
  rule: SmtpFaultRule;
  effect: SmtpFaultEffect;
  /** The reply line sent (`421 4.7.0 ...`), or what else the client saw. */
  seen: string;
}

export interface SmtpFaultsOptions {
  /** The node's name: part of each rule's random stream. */
  node: string;
  seed: Seed;
  rules?: SmtpFaultRule[];
  /** The clock (ms); tests give their own. */
  now?: () => number;
}

interface HeldRule {
  rule: SmtpFaultRule;
  fired: number;
  draw: () => number;
  /** rate-limit: per client, the times of the transactions counted in the window (at most `messages`). */
  windows?: Map<string, number[]>;
}

/** The SMTP fault rules of one node, with their state. */
export class SmtpFaults {
  private held: HeldRule[] = [];
  /** Greylist: triple → when it was first seen (insertion order is age order). */
  private readonly greylist = new Map<string, number>();
  private readonly now: () => number;

  constructor(private readonly options: SmtpFaultsOptions) {
    this.now = options.now ?? Date.now;
    if (options.rules) this.set(options.rules);
  }

  /** Replaces every rule (checked first: one bad rule fails the call and nothing changes); the greylist is kept. */
  set(rules: unknown): SmtpFaultRuleView[] {
    const checked = validateSmtpFaultRules(rules);
    this.held = checked.map((rule) => ({
      rule,
      fired: 0,
      draw: seededRandom(this.options.seed, `smtp:${this.options.node}:${rule.id}`),
      ...(rule.action.kind === 'rate-limit' ? { windows: new Map<string, number[]>() } : {}),
    }));
    return this.list();
  }

  list(): SmtpFaultRuleView[] {
    return this.held.map((h) => ({ ...h.rule, fired: h.fired }));
  }

  /** Whether any rule is set for `stage` (so a server skips the work of building a context). */
  has(stage: SmtpFaultStage): boolean {
    return this.held.some((h) => h.rule.stage === stage);
  }

  /** The rule that fires at this point of a session, if any (counted as fired). */
  decide(context: SmtpFaultContext): SmtpFaultDecision | undefined {
    for (const held of this.held) {
      const { rule } = held;
      if (rule.stage !== context.stage || !matches(rule.match, context)) continue;
      if (rule.times !== undefined && held.fired >= rule.times) continue;
      const effect = this.effectOf(held, context);
      if (!effect) continue;
      if (rule.probability !== undefined && rule.probability < 1 && !(held.draw() < rule.probability)) continue;
      held.fired++;
      return { rule, effect, seen: seenOf(effect) };
    }
    return undefined;
  }

  /** The FaultFired detail of a decision (the server adds the hop). */
  static fired(decision: SmtpFaultDecision, context: SmtpFaultContext, hop: string): FaultFired {
    return {
      source: 'smtp',
      rule: decision.rule.id,
      action: decision.rule.action.kind,
      stage: context.stage,
      effect: decision.seen,
      client: context.client,
      hop,
      ...(context.sender !== undefined ? { sender: context.sender } : {}),
      ...(context.recipients?.length ? { recipients: context.recipients } : {}),
    };
  }

  private effectOf(held: HeldRule, context: SmtpFaultContext): SmtpFaultEffect | undefined {
    const action = held.rule.action;
    switch (action.kind) {
      case 'reply':
        return { kind: 'reply', code: action.code, text: [action.enhancedCode, action.text ?? `fault injected by maillab (rule ${held.rule.id})`].filter(Boolean).join(' ') };
      case 'delay':
        return { kind: 'delay', ms: action.ms };
      case 'drop':
        return { kind: 'drop', when: action.when };
      case 'greylist':
        return this.greylisted(action, context);
      case 'rate-limit':
        return this.limited(held, action, context.client);
    }
  }

  /** 450 4.7.1 while the triple is new or younger than `delayMs`; nothing once it has waited long enough. */
  private greylisted(action: Extract<SmtpFaultAction, { kind: 'greylist' }>, context: SmtpFaultContext): SmtpFaultEffect | undefined {
    const by = action.by ?? ['client', 'sender', 'recipient'];
    const recipient = (context.recipients?.[0] ?? '').toLowerCase();
    const key = [by.includes('client') ? context.client : '*', by.includes('sender') ? (context.sender ?? '').toLowerCase() : '*', by.includes('recipient') ? recipient : '*'].join('\0');
    const now = this.now();
    const first = this.greylist.get(key);
    if (first === undefined) {
      if (this.greylist.size >= GREYLIST_MAX_ENTRIES) this.greylist.delete(this.greylist.keys().next().value!);
      this.greylist.set(key, now);
    } else if (now - first >= action.delayMs) return undefined;
    const wait = Math.max(1, Math.ceil((action.delayMs - (now - (first ?? now))) / 1000));
    return { kind: 'reply', code: 450, text: `4.7.1 <${recipient}>: greylisted, try again in ${wait} s` };
  }

  /** 421 4.7.0 past `messages` transactions of the client within `windowMs`; otherwise the transaction is counted. */
  private limited(held: HeldRule, action: Extract<SmtpFaultAction, { kind: 'rate-limit' }>, client: string): SmtpFaultEffect | undefined {
    const windows = held.windows!;
    const now = this.now();
    const times = (windows.get(client) ?? []).filter((t) => now - t < action.windowMs);
    windows.delete(client); // re-inserted below: the map's order is the order clients were last seen
    if (times.length < action.messages) {
      times.push(now);
      if (windows.size >= RATE_LIMIT_MAX_CLIENTS) windows.delete(windows.keys().next().value!);
      windows.set(client, times);
      return undefined;
    }
    windows.set(client, times);
    const retry = Math.max(1, Math.ceil((action.windowMs - (now - times[0]!)) / 1000));
    return { kind: 'reply', code: 421, text: `4.7.0 ${client}: rate limit of ${action.messages} messages per ${action.windowMs} ms exceeded, try again in ${retry} s` };
  }
}

function seenOf(effect: SmtpFaultEffect): string {
  if (effect.kind === 'reply') return `${effect.code} ${effect.text}`;
  if (effect.kind === 'delay') return `reply delayed ${effect.ms} ms`;
  return effect.when === 'before-reply' ? 'connection closed before the reply' : 'connection closed after the reply';
}

function matches(match: SmtpFaultMatch | undefined, context: SmtpFaultContext): boolean {
  if (!match) return true;
  const same = (a: string, b: string) => a.toLowerCase() === b.toLowerCase();
  if (match.client !== undefined && !same(match.client, context.client)) return false;
  if (match.sender !== undefined && (context.sender === undefined || !same(match.sender, context.sender))) return false;
  if (match.recipient !== undefined && !(context.recipients ?? []).some((r) => same(r, match.recipient!))) return false;
  return true;
}

const ACTIONS = ['reply', 'delay', 'drop', 'greylist', 'rate-limit'] as const;
/** From which stage on the sender and the recipients are known. */
const SENDER_STAGES: readonly SmtpFaultStage[] = ['mail', 'rcpt', 'data', 'end-of-data'];
const RECIPIENT_STAGES: readonly SmtpFaultStage[] = ['rcpt', 'data', 'end-of-data'];

const isRecord = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);
const isMs = (v: unknown) => Number.isInteger(v) && (v as number) >= 0 && (v as number) <= SMTP_FAULT_MAX_MS;

/**
 * Checks a list of rules as it arrives (a lab definition, or `set-smtp-faults` from the wire) and returns it typed;
 * throws one error listing every problem, each naming the rule and the field.
 */
export function validateSmtpFaultRules(rules: unknown): SmtpFaultRule[] {
  if (!Array.isArray(rules)) throw new Error(`SMTP fault rules must be a list, not ${JSON.stringify(rules)}`);
  const problems: string[] = [];
  if (rules.length > SMTP_FAULT_MAX_RULES) problems.push(`at most ${SMTP_FAULT_MAX_RULES} rules per server, not ${rules.length}`);
  const ids = new Set<string>();
  rules.forEach((raw, i) => {
    if (!isRecord(raw)) return void problems.push(`rule ${i + 1} is not an object`);
    const name = typeof raw.id === 'string' && raw.id ? `rule "${raw.id}"` : `rule ${i + 1}`;
    const bad = (what: string) => problems.push(`${name}: ${what}`);
    if (typeof raw.id !== 'string' || !/^[A-Za-z0-9._:-]{1,64}$/.test(raw.id)) bad('id must be 1 to 64 letters, digits or . _ : -');
    else if (ids.has(raw.id)) bad('id is used by another rule');
    else ids.add(raw.id);
    const stage = raw.stage as SmtpFaultStage;
    if (!(SMTP_FAULT_STAGES as readonly unknown[]).includes(stage)) bad(`stage ${JSON.stringify(raw.stage)} is not one of ${SMTP_FAULT_STAGES.join(', ')}`);
    if (raw.match !== undefined) {
      if (!isRecord(raw.match)) bad('match must be an object of sender, recipient, client');
      else {
        for (const [field, value] of Object.entries(raw.match)) {
          if (!['sender', 'recipient', 'client'].includes(field)) bad(`match.${field} is not sender, recipient or client`);
          else if (typeof value !== 'string') bad(`match.${field} must be a string`);
        }
        if (raw.match.sender !== undefined && !SENDER_STAGES.includes(stage)) bad(`match.sender cannot match at stage ${stage}: the sender is known from MAIL on (${SENDER_STAGES.join(', ')})`);
        if (raw.match.recipient !== undefined && !RECIPIENT_STAGES.includes(stage)) bad(`match.recipient cannot match at stage ${stage}: recipients are known from RCPT on (${RECIPIENT_STAGES.join(', ')})`);
      }
    }
    if (raw.times !== undefined && !(Number.isInteger(raw.times) && (raw.times as number) >= 1)) bad('times must be a whole number from 1');
    if (raw.probability !== undefined && !(typeof raw.probability === 'number' && raw.probability >= 0 && raw.probability <= 1)) bad('probability must be a number from 0 to 1');
    const action = raw.action;
    if (!isRecord(action) || !(ACTIONS as readonly unknown[]).includes(action.kind)) return void bad(`action.kind must be one of ${ACTIONS.join(', ')}`);
    switch (action.kind) {
      case 'reply': {
        const code = action.code as number;
        if (!(Number.isInteger(code) && code >= 400 && code <= 599)) bad(`action.code ${JSON.stringify(action.code)} must be a 4xx or 5xx reply code (RFC 5321 §4.2)`);
        if (action.enhancedCode !== undefined) {
          const enhanced = String(action.enhancedCode);
          if (!/^[45]\.\d{1,3}\.\d{1,3}$/.test(enhanced)) bad(`action.enhancedCode "${enhanced}" must be class.subject.detail with class 4 or 5 (RFC 3463)`);
          else if (Number.isInteger(code) && enhanced[0] !== String(code)[0]) bad(`action.enhancedCode ${enhanced} must have the class of the reply code ${code} (RFC 3463 §2)`);
        }
        if (action.text !== undefined && (typeof action.text !== 'string' || /[\r\n]/.test(action.text) || action.text.length > 400)) bad('action.text must be one line of text (at most 400 characters)');
        if (stage === 'connect' || stage === 'greeting') {
          if (Number.isInteger(code) && code !== 421 && code !== 554) bad(`a reply at stage ${stage} must be 421 or 554 (RFC 5321 §3.1, §4.2.4), not ${code}`);
        }
        break;
      }
      case 'delay':
        if (!isMs(action.ms)) bad(`action.ms must be whole milliseconds from 0 to ${SMTP_FAULT_MAX_MS}`);
        break;
      case 'drop':
        if (action.when !== 'before-reply' && action.when !== 'after-reply') bad('action.when must be before-reply or after-reply');
        else if (stage === 'connect' && action.when === 'after-reply') bad('at stage connect nothing has been answered yet: drop before-reply, or use stage greeting to drop after the 220');
        break;
      case 'greylist': {
        if (stage !== 'rcpt') bad(`greylisting answers RCPT TO: its stage must be rcpt, not ${stage}`);
        if (!isMs(action.delayMs)) bad(`action.delayMs must be whole milliseconds from 0 to ${SMTP_FAULT_MAX_MS}`);
        const by = action.by;
        if (by !== undefined && !(Array.isArray(by) && by.length > 0 && by.every((b) => ['client', 'sender', 'recipient'].includes(b as string)))) bad('action.by must be a non-empty list of client, sender, recipient');
        break;
      }
      case 'rate-limit':
        if (stage !== 'mail') bad(`a rate limit counts transactions: its stage must be mail, not ${stage}`);
        if (!(Number.isInteger(action.messages) && (action.messages as number) >= 1)) bad('action.messages must be a whole number from 1');
        if (!(isMs(action.windowMs) && (action.windowMs as number) > 0)) bad(`action.windowMs must be whole milliseconds from 1 to ${SMTP_FAULT_MAX_MS}`);
        break;
    }
  });
  if (problems.length) throw new Error(`invalid SMTP fault rules:\n  - ${problems.join('\n  - ')}`);
  return rules as SmtpFaultRule[];
}

/** The control operations `set-smtp-faults` and `smtp-faults` of a node whose servers hold `faults`. */
export function smtpFaultOperations(faults: SmtpFaults) {
  return {
    'set-smtp-faults': (args: { rules?: unknown }) => ({ rules: faults.set(args?.rules) }),
    'smtp-faults': () => ({ rules: faults.list() }),
  };
}

/** The same operations on a node whose SMTP/LMTP server is a real one (Postfix, Dovecot): both refuse, saying why. */
export function smtpFaultsUnsupported(server: string) {
  const refuse = (): never => {
    throw new Error(`SMTP fault rules are applied by maillab's own SMTP and LMTP servers; ${server} cannot take them (run this host with server 'maillab')`);
  };
  return { 'set-smtp-faults': refuse, 'smtp-faults': refuse };
}

/** A node's rule set from its config: the lab's seed (0 for a node started by hand without one) and its first rules. */
export function smtpFaultsOf(config: { name: string; seed?: number; smtpFaults?: readonly unknown[] }): SmtpFaults {
  return new SmtpFaults({ node: config.name, seed: config.seed ?? 0, rules: validateSmtpFaultRules(config.smtpFaults ?? []) });
}
