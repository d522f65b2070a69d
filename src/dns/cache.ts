// The MTA's DNS answers between it and the lab DNS (issue 17): a delivery asks MX, then A and AAAA of each exchange.
//
// - Identical queries in flight at the same moment share one question to the server (a burst of deliveries to one
//   domain asks once, not once per message). The answer is as fresh as if each had asked: it was asked after every
//   one of them started, so a DNS edit or fault set before a delivery began still applies to it. Always on.
// - With `maxTtlSeconds` > 0, A and AAAA answers are also kept for their TTL (as the lab DNS gave it, capped by
//   `maxTtlSeconds`), read with node:dns's `{ ttl: true }`. MX answers are never kept past their flight: node:dns
//   reports no TTL for MX, and the MX is what scenarios move while the lab runs. Failures (SERVFAIL, timeouts,
//   refusals) and negative answers (NXDOMAIN, no records) are never kept: the next delivery asks again.
//
// Keeping answers is off in the lab as defined (`MtaNodeConfig.dnsCache` absent), because the lab promises that a
// DNS edit or fault takes effect on the next message whatever the TTL (scenario 45); a lab that wants the cost of a
// caching MTA sets it.
import type { MxResolver } from './resolver.js';

export interface DnsCacheOptions {
  /** Keep A/AAAA answers for their TTL, at most this many seconds. 0 (the default): keep nothing past its flight. */
  maxTtlSeconds?: number;
  /** The clock, in ms (tests move it). */
  now?: () => number;
}

/** What the cache asks: a resolver that can report A/AAAA TTLs (a `dns.promises.Resolver` fits). */
export type TtlResolver = MxResolver;

interface Kept {
  addresses: string[];
  expires: number;
}

export interface DnsCacheStats {
  /** Questions sent to the server. */
  asked: number;
  /** Lookups answered by a question already in flight. */
  shared: number;
  /** Lookups answered from a kept answer. */
  kept: number;
}

/** A resolver for MX resolution that shares in-flight questions and, optionally, keeps A/AAAA answers. */
export class DnsAnswerCache {
  private readonly inFlight = new Map<string, Promise<unknown>>();
  private readonly answers = new Map<string, Kept>();
  private readonly maxTtlMs: number;
  private readonly now: () => number;
  /** Bumped by clear(): an answer asked before it is not kept after it. */
  private generation = 0;
  readonly stats: DnsCacheStats = { asked: 0, shared: 0, kept: 0 };

  constructor(
    private readonly resolver: TtlResolver,
    options: DnsCacheOptions = {},
  ) {
    const max = options.maxTtlSeconds ?? 0;
    if (!(max >= 0) || !Number.isFinite(max)) throw new Error(`DnsAnswerCache: maxTtlSeconds must be a number of seconds from 0, got ${max}`);
    this.maxTtlMs = max * 1000;
    this.now = options.now ?? Date.now;
  }

  resolveMx(name: string): Promise<{ exchange: string; priority: number }[]> {
    return this.shared(`MX ${name.toLowerCase()}`, () => this.resolver.resolveMx(name));
  }

  resolve4(name: string): Promise<string[]> {
    return this.addresses('A', name, () => this.resolver.resolve4(name, { ttl: true }));
  }

  resolve6(name: string): Promise<string[]> {
    return this.addresses('AAAA', name, () => this.resolver.resolve6(name, { ttl: true }));
  }

  /**
   * The cache as the resolver resolveMxTargets takes. That type is node:dns's, with the `{ ttl }` overloads; MX
   * resolution calls resolveMx, resolve4 and resolve6 with a name only, which is what this answers.
   */
  asMxResolver(): MxResolver {
    return this as unknown as MxResolver;
  }

  /** Forgets every kept answer (questions in flight finish, and are not kept). */
  clear(): void {
    this.answers.clear();
    this.generation++;
  }

  private async addresses(type: 'A' | 'AAAA', name: string, ask: () => Promise<{ address: string; ttl: number }[]>): Promise<string[]> {
    const key = `${type} ${name.toLowerCase()}`;
    const kept = this.answers.get(key);
    if (kept && kept.expires > this.now()) {
      this.stats.kept++;
      return [...kept.addresses];
    }
    if (kept) this.answers.delete(key);
    const generation = this.generation;
    const records = await this.shared(key, async () => {
      const answer = await ask();
      // A TTL of 0 means "use once" (RFC 1035 §3.2.1); the smallest TTL of the set bounds the whole set (RFC 2181 §5.2).
      const ttlMs = Math.min(this.maxTtlMs, ...answer.map((r) => r.ttl * 1000));
      if (ttlMs > 0 && answer.length > 0 && generation === this.generation) this.answers.set(key, { addresses: answer.map((r) => r.address), expires: this.now() + ttlMs });
      return answer;
    });
    return records.map((r) => r.address);
  }

  private shared<T>(key: string, ask: () => Promise<T>): Promise<T> {
    const pending = this.inFlight.get(key) as Promise<T> | undefined;
    if (pending) {
      this.stats.shared++;
      return pending;
    }
    this.stats.asked++;
    const question = ask().finally(() => this.inFlight.delete(key));
    this.inFlight.set(key, question);
    return question;
  }
}
