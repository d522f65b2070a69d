// Scenario 45 (issue 15, scenario 6): DNS faults at the lab DNS, as the sender MTA meets them on its MX lookup.
// - SERVFAIL, a timeout (no answer) and REFUSED are no answer about the domain: the MTA defers (451 4.4.3) and delivers
//   once the DNS answers again.
// - NXDOMAIN is an answer: the domain does not exist, so the recipient bounces at once (550 5.1.2, RFC 3463 X.1.2 "bad
//   destination system address") and alice gets the DSN.
// - A truncated UDP answer (TC bit) is asked again over TCP by the MTA's resolver (c-ares), and the mail goes.
// - Wrong answers: a stale MX sends the mail to the old MX, which still takes it; an MX address outside the lab is
//   never connected to: the lab boundary bounces the recipient (550 5.4.4). (Outside a lab, an MTA would try that
//   address and, with no answer there, defer.)
// - A rule with `times: 1` defers the first attempt only: the retry is delivered.
// - A TTL: the MTA has no DNS cache (neither its own nor c-ares's, whose query cache Node leaves off), so it asks on
//   every attempt: a record changed under a long TTL takes effect on the next attempt. A TTL bounds how long an
//   answer may be kept; keeping none honours every TTL. (Issue 17 decides whether the MTA gets a cache; these
//   faults would then show it.)
import { promises as dns } from 'node:dns';
import { afterEach, describe, expect, it } from 'vitest';
import { checkDeliveredOnce, NEMESIS, type DnsFaultRule } from '../src/harness/index.js';
import { useLab } from './support/lab.js';

/** A rule of the lab definition (`faults.dns`): in force from the start, on a name no message uses. */
const CONFIGURED: DnsFaultRule = { id: 'configured', name: 'legacy.receiver.test', type: 'A', action: { kind: 'answer', records: [{ type: 'A', data: '192.0.2.99' }] } };

const lab = useLab((l) =>
  l
    .withHost('mx2', { role: 'mx', hostname: 'mx2.receiver.test', domains: ['receiver.test'], mailbox: 'mailbox' })
    .with((def) => {
      def.faults = { ...def.faults, dns: [CONFIGURED] };
    }),
);

afterEach(async () => {
  await lab().dns.faults.set([CONFIGURED]);
});

/** A resolver of the test's own, asking the lab DNS where the harness reaches it (its published port on docker). */
function labResolver(): dns.Resolver {
  const endpoint = lab().node('dns').service('dns');
  const resolver = new dns.Resolver({ timeout: 1000, tries: 1 });
  resolver.setServers([`${endpoint.host}:${endpoint.port}`]);
  return resolver;
}

const mtaAddress = () => lab().node('mta').config.address;

async function send(subject: string) {
  return lab().client('alice@sender.test').send({ to: 'bob@receiver.test', subject, text: subject });
}

/** The fault events of the dns node since `after` for queries from the MTA. */
/** The dns node's fault events for the MTA's queries since `after`, once at least `count` have come (its own stream). */
async function faultsFromMta(after: number, count = 1) {
  const match = { kind: 'fault' as const, node: 'dns', where: (e: { time: number; detail: { client?: string } }) => e.time >= after && e.detail.client?.startsWith(`${mtaAddress()}:`) === true };
  await lab().history.waitForCount(match, count, { timeoutMs: 10_000 });
  return lab().history.filter(match);
}

/** Sets one rule, sends, and waits for the MTA to defer the message on its MX lookup. */
async function deferredBy(rule: DnsFaultRule, subject: string) {
  const began = Date.now();
  await lab().dns.faults.set([rule]);
  const sent = await send(subject);
  const deferred = await lab().waitFor({ kind: 'deferred', messageId: sent.messageId });
  expect(deferred.detail).toMatchObject({ rcpt: 'bob@receiver.test', status: '4.4.3', attempt: 1 });
  expect(deferred.detail.reply).toMatch(/^451 4\.4\.3 <bob@receiver\.test>: cannot resolve where mail for receiver\.test goes, will retry/);
  const lookup = await lab().waitFor({ kind: 'mx-lookup', messageId: sent.messageId });
  expect(lookup.detail.result.kind).toBe('temporary');
  expect(lab().history.filter({ kind: 'connect', messageId: sent.messageId })).toEqual([]);
  return { sent, deferred, began };
}

describe('DNS faults on the MX lookup', () => {
  it("the lab definition's rules are in force from the start", async () => {
    expect(await labResolver().resolve4('legacy.receiver.test')).toEqual(['192.0.2.99']);
    expect(await lab().dns.faults.list()).toEqual([{ ...CONFIGURED, fired: 1 }]);
  });

  it('SERVFAIL defers (451 4.4.3); once the DNS answers again the retry delivers', async () => {
    const { sent, deferred, began } = await deferredBy({ id: 'mx-servfail', name: 'receiver.test', type: 'MX', action: { kind: 'servfail' } }, 'through a SERVFAIL');
    expect(deferred.detail.error).toMatch(/SERVFAIL/);
    // The dns node says which rule answered whom; the change of rules is the nemesis's, in the history.
    expect((await faultsFromMta(began))[0]?.detail).toMatchObject({ source: 'dns', rule: 'mx-servfail', action: 'servfail', stage: 'MX receiver.test', effect: 'SERVFAIL' });
    expect(lab().history.filter({ kind: 'dns-faults-change', node: NEMESIS }).at(-1)?.detail).toMatchObject({
      target: 'dns',
      rules: [{ id: 'mx-servfail', name: 'receiver.test', type: 'MX', action: { kind: 'servfail' } }],
    });
    await lab().dns.faults.clear();
    await checkDeliveredOnce(lab(), 'bob@receiver.test', sent.messageId);
  });

  it('a timeout (no answer) defers once the resolver gives up, after its own tries', async () => {
    const { sent, deferred, began } = await deferredBy({ id: 'mx-silent', name: 'receiver.test', type: 'MX', action: { kind: 'timeout' } }, 'through a DNS timeout');
    expect(deferred.detail.error).toMatch(/DNS timeout \(ETIMEOUT\)/);
    // c-ares, as the MTA sets it up: two tries (1 s, then 2 s), each unanswered.
    // (The MTA's retry may already be asking again: its lookups come after these two.)
    expect((await faultsFromMta(began, 2)).slice(0, 2).map((e) => e.detail.effect)).toEqual(['no answer', 'no answer']);
    await lab().dns.faults.clear();
    await checkDeliveredOnce(lab(), 'bob@receiver.test', sent.messageId);
  });

  it('REFUSED defers: a refusal says nothing about the domain', async () => {
    const { sent, deferred } = await deferredBy({ id: 'mx-refused', name: 'receiver.test', type: 'MX', action: { kind: 'refused' } }, 'through a REFUSED');
    expect(deferred.detail.error).toMatch(/refused \(EREFUSED\)/);
    await lab().dns.faults.clear();
    await checkDeliveredOnce(lab(), 'bob@receiver.test', sent.messageId);
  });

  it('NXDOMAIN for the domain bounces at once (550 5.1.2) with a DSN to the sender, never retried', async () => {
    await lab().dns.faults.set([{ id: 'no-domain', name: 'receiver.test', action: { kind: 'nxdomain' } }]);
    const sent = await send('to a domain that does not exist');
    const bounced = await lab().waitFor({ kind: 'bounced', messageId: sent.messageId });
    expect(bounced.detail).toMatchObject({ rcpt: 'bob@receiver.test', status: '5.1.2', attempt: 1 });
    expect(bounced.detail.reply).toMatch(/^550 5\.1\.2 <bob@receiver\.test>: domain receiver\.test cannot receive mail: receiver\.test MX: no such domain \(NXDOMAIN\)/);
    const dsn = await lab().waitFor({ kind: 'dsn-created', where: (e) => e.detail.for.messageId === sent.messageId });
    await lab().waitFor({ kind: 'stored', messageId: dsn.detail.dsnMessageId, detail: { user: 'alice@sender.test' } });
    const [copy] = await lab().mailbox('alice@sender.test').find(dsn.detail.dsnMessageId);
    expect(copy!.raw.toString()).toMatch(/Status: 5\.1\.2/);
    expect(lab().history.filter({ kind: 'deferred', messageId: sent.messageId })).toEqual([]);
    expect(lab().history.filter({ kind: 'connect', messageId: sent.messageId })).toEqual([]);
  });

  it('a truncated UDP answer is asked again over TCP, and the mail is delivered', async () => {
    const began = Date.now();
    await lab().dns.faults.set([{ id: 'mx-tc', name: 'receiver.test', type: 'MX', action: { kind: 'truncate' } }]);
    const sent = await send('over TCP');
    await checkDeliveredOnce(lab(), 'bob@receiver.test', sent.messageId);
    // The query log of the lab DNS: the MTA's UDP query got TC and no records, its TCP query the MX.
    const queries = lab().history.filter({
      kind: 'dns-query',
      node: 'dns',
      where: (e) => e.time >= began && e.detail.name === 'receiver.test' && e.detail.type === 'MX' && e.detail.client.startsWith(`${mtaAddress()}:`),
    });
    expect(queries.map((e) => [e.detail.transport, e.detail.answers])).toEqual([
      ['udp', []],
      ['tcp', ['MX 10 mx.receiver.test']],
    ]);
    expect((await faultsFromMta(began)).map((e) => [e.detail.rule, e.detail.effect])).toEqual([['mx-tc', 'TC over UDP']]);
  });
});

describe('wrong answers', () => {
  it('a stale MX answer sends the mail to the old MX, which still takes it', async () => {
    await lab().dns.faults.set([{ id: 'stale-mx', name: 'receiver.test', type: 'MX', action: { kind: 'answer', records: [{ type: 'MX', data: '10 mx2.receiver.test' }] } }]);
    const sent = await send('by a stale MX');
    const received = await lab().waitFor({ kind: 'received', messageId: sent.messageId });
    expect(received.node).toBe('mx2');
    await checkDeliveredOnce(lab(), 'bob@receiver.test', sent.messageId);
  });

  it('an MX address outside the lab is never connected to: the lab boundary bounces the recipient (550 5.4.4)', async () => {
    await lab().dns.faults.set([{ id: 'wrong-a', name: 'mx.receiver.test', type: 'A', action: { kind: 'answer', records: [{ type: 'A', data: '192.0.2.10' }] } }]);
    const sent = await send('to a wrong address');
    const bounced = await lab().waitFor({ kind: 'bounced', messageId: sent.messageId });
    expect(bounced.detail.status).toBe('5.4.4');
    expect(bounced.detail.reply).toMatch(/mx\.receiver\.test\[192\.0\.2\.10\], outside the lab/);
    expect(lab().history.filter({ kind: 'connect', messageId: sent.messageId })).toEqual([]);
  });
});

describe('counts and TTLs', () => {
  it('lab.dns.faults: add keeps what the other rules have left, clear removes rules by id', async () => {
    const resolver = labResolver();
    await lab().dns.faults.set([{ id: 'twice', name: 'probe.receiver.test', action: { kind: 'refused' }, times: 2 }]);
    await expect(resolver.resolve4('probe.receiver.test')).rejects.toMatchObject({ code: 'EREFUSED' });
    const added = await lab().dns.faults.add({ id: 'later', name: 'probe.receiver.test', action: { kind: 'servfail' } });
    expect(added.map((r) => [r.id, r.times, r.fired])).toEqual([
      ['twice', 1, 0],
      ['later', undefined, 0],
    ]);
    await expect(resolver.resolve4('probe.receiver.test')).rejects.toMatchObject({ code: 'EREFUSED' });
    await expect(resolver.resolve4('probe.receiver.test')).rejects.toMatchObject({ code: 'ESERVFAIL' }); // 'twice' is spent
    expect((await lab().dns.faults.clear('later')).map((r) => r.id)).toEqual([]); // the spent rule went too
    await expect(resolver.resolve4('probe.receiver.test')).rejects.toMatchObject({ code: 'ENOTFOUND' }); // the zone's answer
    expect(lab().history.filter({ kind: 'dns-faults-change', node: NEMESIS }).slice(-3).map((e) => e.detail.rules.map((r) => r.id))).toEqual([['twice'], ['twice', 'later'], []]);
  });

  it('a SERVFAIL with times: 1 defers the first attempt; the scheduled retry passes', async () => {
    const { sent } = await deferredBy({ id: 'once', name: 'receiver.test', type: 'MX', action: { kind: 'servfail' }, times: 1 }, 'past one SERVFAIL');
    await checkDeliveredOnce(lab(), 'bob@receiver.test', sent.messageId); // no clear, no flush: the rule is spent
    const delivered = await lab().waitFor({ kind: 'relayed', messageId: sent.messageId });
    expect(lab().history.filter({ kind: 'active', messageId: sent.messageId }).map((e) => e.detail.attempt)).toEqual([1, 2]);
    expect(delivered.detail.rcpt).toBe('bob@receiver.test');
    expect((await lab().dns.faults.list()).map((r) => [r.id, r.fired])).toEqual([['once', 1]]);
  });

  it('the MTA keeps no DNS cache: an MX changed under a TTL of an hour takes effect on the next message', async () => {
    const began = Date.now();
    await lab().dns.faults.set([{ id: 'hour', name: 'receiver.test', type: 'MX', action: { kind: 'ttl', ttl: 3600 } }]);
    const first = await send('under a TTL of an hour');
    expect((await lab().waitFor({ kind: 'received', messageId: first.messageId })).node).toBe('mx');
    await checkDeliveredOnce(lab(), 'bob@receiver.test', first.messageId);
    expect((await faultsFromMta(began)).map((e) => e.detail.effect)).toEqual(['TTL 3600']);
    await lab().dns.setMx('receiver.test', [{ host: 'mx2', preference: 10 }]);
    try {
      const second = await send('after the MX moved');
      expect((await lab().waitFor({ kind: 'received', messageId: second.messageId })).node).toBe('mx2');
      await checkDeliveredOnce(lab(), 'bob@receiver.test', second.messageId);
      expect((await faultsFromMta(began, 2)).map((e) => e.detail.effect)).toEqual(['TTL 3600', 'TTL 3600']);
    } finally {
      await lab().dns.setMx('receiver.test', [{ host: 'mx', preference: 10 }]);
    }
  });
});
