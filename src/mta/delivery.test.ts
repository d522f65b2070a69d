// Routing and outcomes of one delivery attempt, with a scripted MX lookup and scripted SMTP/LMTP senders (no
// network): which host is tried, in which order, and what each recipient comes back with.
import { describe, expect, it } from 'vitest';
import { SmtpClientError, type RecipientResult, type SendResult, type SmtpEnvelope, type SmtpTarget } from '../shared/smtp-client.js';
import type { MxResolution } from '../dns/api.js';
import { deliver, tlsPolicyFor, type DeliveryContext, type MailSender } from './delivery.js';

const DATA = Buffer.from('Subject: hi\r\n\r\nhello\r\n');
const MESSAGE = { queueId: 'Q1', from: 'alice@sender.test' };

interface Call {
  target: SmtpTarget;
  envelope: SmtpEnvelope;
}

/** A sender that answers each call with the next scripted step (a function of the call, or an error to throw). */
function scripted(...steps: ((call: Call) => SendResult | Error)[]): MailSender & { calls: Call[] } {
  const calls: Call[] = [];
  return {
    calls,
    async send(target, envelope, message) {
      expect(message).toBe(DATA);
      calls.push({ target, envelope });
      const step = steps.shift();
      if (!step) throw new Error(`unexpected send to ${target.host}:${target.port}`);
      const result = step({ target, envelope });
      if (result instanceof Error) throw result;
      return result;
    },
  };
}

const accepted = (address: string, reply = '250 2.0.0 Ok: queued as X'): RecipientResult => ({ address, accepted: true, code: 250, enhanced: reply.split(' ')[1], reply, stage: 'data', command: 'DATA' });
const refused = (address: string, reply: string): RecipientResult => ({ address, accepted: false, code: Number(reply.slice(0, 3)), enhanced: reply.split(' ')[1], reply, stage: 'rcpt', command: `RCPT TO:<${address}>` });

function result(target: string, recipients: RecipientResult[], reused = false): SendResult {
  return {
    target,
    recipients,
    accepted: recipients.filter((r) => r.accepted).map((r) => r.address),
    rejected: recipients.filter((r) => !r.accepted).map((r) => r.address),
    stage: 'data',
    reused,
    retried: false,
  };
}

function context(over: Partial<DeliveryContext> & { mx?: Record<string, MxResolution | Error> } = {}) {
  const events: [string, Record<string, unknown>][] = [];
  const lookups: string[] = [];
  const { mx = {}, ...rest } = over;
  const ctx: DeliveryContext = {
    hostname: 'mta.sender.test',
    localDomains: ['sender.test'],
    localDelivery: { host: '127.0.0.20', port: 24 },
    relayPort: 2525,
    async lookupMx(domain) {
      lookups.push(domain);
      const answer = mx[domain];
      if (answer === undefined) throw new Error(`no scripted answer for ${domain}`);
      if (answer instanceof Error) throw answer;
      return answer;
    },
    smtp: scripted(),
    lmtp: scripted(),
    emit: (kind, detail) => events.push([kind, detail]),
    ...rest,
  };
  return { ctx, events, lookups };
}

const host = (exchange: string, priority: number, ...addresses: string[]) => ({ exchange, priority, addresses });

describe('deliver: remote recipients', () => {
  it('groups recipients by domain, one transaction each, and reports each recipient with its own reply', async () => {
    // The two transactions run in parallel: answer by target, whichever comes first.
    const byTarget = ({ target, envelope }: Call) =>
      target.host === '127.0.0.7'
        ? result('mx.receiver.test[127.0.0.7]:2525', [accepted(envelope.to[0]!), refused(envelope.to[1]!, '550 5.1.1 <nobody@receiver.test>: no such user')])
        : result('mx.other.test[127.0.0.8]:2525', [refused(envelope.to[0]!, '452 4.2.2 mailbox full')], true);
    const smtp = scripted(byTarget, byTarget);
    const { ctx, events } = context({
      smtp,
      mx: {
        'receiver.test': { kind: 'mx', hosts: [host('mx.receiver.test', 10, '127.0.0.7')] },
        'other.test': { kind: 'mx', hosts: [host('mx.other.test', 10, '127.0.0.8')] },
      },
    });
    const outcomes = await deliver(ctx, MESSAGE, ['bob@receiver.test', 'nobody@Receiver.Test', 'full@other.test'], DATA);
    expect([...smtp.calls].sort((x, y) => x.target.host.localeCompare(y.target.host))).toEqual([
      { target: { host: '127.0.0.7', port: 2525, servername: 'mx.receiver.test' }, envelope: { from: 'alice@sender.test', to: ['bob@receiver.test', 'nobody@Receiver.Test'] } },
      { target: { host: '127.0.0.8', port: 2525, servername: 'mx.other.test' }, envelope: { from: 'alice@sender.test', to: ['full@other.test'] } },
    ]);
    const hop = 'mta.sender.test -> mx.receiver.test[127.0.0.7]:2525';
    expect(outcomes).toEqual([
      {
        address: 'bob@receiver.test',
        action: 'delivered',
        status: '2.0.0',
        code: 250,
        reply: '250 2.0.0 Ok: queued as X',
        remote: true,
        hop,
        command: 'DATA',
        via: 'smtp',
        host: '127.0.0.7',
        port: 2525,
        mx: 'mx.receiver.test',
        remoteMta: 'mx.receiver.test',
        reused: false,
        description: 'delivered to mx.receiver.test[127.0.0.7]:2525: 250 2.0.0 Ok: queued as X',
      },
      expect.objectContaining({
        address: 'nobody@Receiver.Test',
        action: 'bounce',
        status: '5.1.1',
        code: 550,
        command: 'RCPT TO:<nobody@Receiver.Test>',
        description: 'mx.receiver.test[127.0.0.7]:2525 said: 550 5.1.1 <nobody@receiver.test>: no such user (in reply to RCPT TO:<nobody@Receiver.Test>)',
      }),
      expect.objectContaining({ address: 'full@other.test', action: 'defer', status: '4.2.2', reused: true, hop: 'mta.sender.test -> mx.other.test[127.0.0.8]:2525' }),
    ]);
    // Domains go in parallel: each domain's lookup comes before its connection, in whatever interleaving.
    const perDomain = (host: string) => events.filter(([, d]) => JSON.stringify(d).includes(host));
    expect(events).toHaveLength(4);
    expect(perDomain('127.0.0.7')).toEqual([
      ['mx-lookup', { domain: 'receiver.test', result: { kind: 'mx', hosts: [{ exchange: 'mx.receiver.test', priority: 10, addresses: ['127.0.0.7'] }] } }],
      ['connect', { host: '127.0.0.7', port: 2525, mx: 'mx.receiver.test', hop }],
    ]);
    expect(perDomain('127.0.0.8')).toEqual([
      ['mx-lookup', { domain: 'other.test', result: { kind: 'mx', hosts: [{ exchange: 'mx.other.test', priority: 10, addresses: ['127.0.0.8'] }] } }],
      ['connect', { host: '127.0.0.8', port: 2525, mx: 'mx.other.test', hop: 'mta.sender.test -> mx.other.test[127.0.0.8]:2525' }],
    ]);
  });

  it('tries the next address and the next MX on failures before the transaction, and stops at the first verdict', async () => {
    const down = (target: SmtpTarget) => new SmtpClientError({ stage: 'connect', target: `${target.servername}[${target.host}]:${target.port}`, command: 'connect', description: 'cannot connect: connection refused', errno: 'ECONNREFUSED' });
    const smtp = scripted(
      ({ target }) => down(target),
      ({ target }) => new SmtpClientError({ stage: 'greeting', target: `${target.servername}[${target.host}]:${target.port}`, command: 'greeting', description: 'refused the session in its greeting', reply: '554 5.3.2 go away' }),
      ({ envelope }) => result('mx2[127.0.0.3]:2525', [accepted(envelope.to[0]!)]),
    );
    const { ctx, events } = context({
      smtp,
      mx: { 'fallback.test': { kind: 'mx', hosts: [{ ...host('mx0', 5), error: 'mx0: NXDOMAIN' }, host('mx1', 10, '127.0.0.1', '127.0.0.2'), host('mx2', 20, '127.0.0.3'), host('mx3', 30, '127.0.0.4')] } },
    });
    const [outcome] = await deliver(ctx, MESSAGE, ['bob@fallback.test'], DATA);
    expect(smtp.calls.map((c) => c.target.host)).toEqual(['127.0.0.1', '127.0.0.2', '127.0.0.3']);
    expect(outcome).toMatchObject({ action: 'delivered', host: '127.0.0.3', mx: 'mx2' });
    expect(events.filter(([kind]) => kind === 'connect-failed').map(([, d]) => d)).toEqual([
      { host: '127.0.0.1', port: 2525, mx: 'mx1', hop: 'mta.sender.test -> mx1[127.0.0.1]:2525', stage: 'connect', command: 'connect', error: 'mx1[127.0.0.1]:2525: cannot connect: connection refused (ECONNREFUSED)' },
      { host: '127.0.0.2', port: 2525, mx: 'mx1', hop: 'mta.sender.test -> mx1[127.0.0.2]:2525', stage: 'greeting', command: 'greeting', reply: '554 5.3.2 go away', error: 'mx1[127.0.0.2]:2525: refused the session in its greeting: 554 5.3.2 go away' },
    ]);
    expect(events.find(([kind]) => kind === 'mx-lookup')![1]).toEqual({
      domain: 'fallback.test',
      result: { kind: 'mx', hosts: [{ exchange: 'mx0', priority: 5, addresses: [], error: 'mx0: NXDOMAIN' }, expect.anything(), expect.anything(), expect.anything()] },
    });
  });

  it('reports the last host failure when every host failed before the transaction', async () => {
    const smtp = scripted(
      () => new SmtpClientError({ stage: 'connect', target: 'a[127.0.0.1]:2525', command: 'connect', description: 'cannot connect: connection timed out', errno: 'ETIMEDOUT' }),
      () => new SmtpClientError({ stage: 'greeting', target: 'b[127.0.0.2]:2525', command: 'greeting', description: 'refused the session in its greeting', reply: '421 4.3.2 busy' }),
    );
    const { ctx } = context({ smtp, mx: { 'down.test': { kind: 'mx', hosts: [host('a', 10, '127.0.0.1'), host('b', 20, '127.0.0.2')] } } });
    const outcomes = await deliver(ctx, MESSAGE, ['x@down.test', 'y@down.test'], DATA);
    expect(outcomes).toEqual(
      ['x@down.test', 'y@down.test'].map((address) => ({
        address,
        action: 'defer',
        status: '4.3.2',
        code: 421,
        reply: '421 4.3.2 busy',
        remote: true,
        hop: 'mta.sender.test -> b[127.0.0.2]:2525',
        command: 'greeting',
        via: 'smtp',
        host: '127.0.0.2',
        port: 2525,
        mx: 'b',
        remoteMta: 'b',
        description: 'b[127.0.0.2]:2525: refused the session in its greeting: 421 4.3.2 busy (in reply to greeting)',
      })),
    );
  });

  it('takes a refused MAIL FROM as the verdict for every recipient, naming no Remote-MTA without a reply', async () => {
    const smtp = scripted(
      () => new SmtpClientError({ stage: 'mail', target: 'mx[127.0.0.1]:2525', command: 'MAIL FROM:<alice@sender.test>', description: 'MAIL FROM:<alice@sender.test> refused', reply: '553 5.7.1 sender rejected' }),
      () => new SmtpClientError({ stage: 'data', target: 'mx[127.0.0.1]:2525', command: 'end of data', description: 'session lost during end of data', errno: 'ECONNRESET' }),
    );
    const { ctx } = context({ smtp, mx: { 'r.test': { kind: 'mx', hosts: [host('mx', 10, '127.0.0.1', '127.0.0.9')] } } });
    const [refusal] = await deliver(ctx, MESSAGE, ['a@r.test'], DATA);
    expect(refusal).toMatchObject({ action: 'bounce', status: '5.7.1', code: 553, reply: '553 5.7.1 sender rejected', remote: true, remoteMta: 'mx', command: 'MAIL FROM:<alice@sender.test>' });
    expect(smtp.calls).toHaveLength(1);
    const [lost] = await deliver(ctx, MESSAGE, ['a@r.test'], DATA);
    expect(lost).toEqual({
      address: 'a@r.test',
      action: 'defer',
      status: '4.4.2',
      reply: '451 4.4.2 mx[127.0.0.1]:2525: session lost during end of data (ECONNRESET)',
      remote: false,
      hop: 'mta.sender.test -> mx[127.0.0.1]:2525',
      command: 'end of data',
      via: 'smtp',
      host: '127.0.0.1',
      port: 2525,
      mx: 'mx',
      description: 'mx[127.0.0.1]:2525: session lost during end of data (ECONNRESET)',
    });
  });

  it('makes up a 550 reply for a permanent failure without one', async () => {
    const smtp = scripted(() => new SmtpClientError({ stage: 'rcpt', target: 'mx[127.0.0.1]:2525', command: 'RCPT TO', description: 'no recipients', temporary: false }));
    const { ctx } = context({ smtp, mx: { 'r.test': { kind: 'implicit', hosts: [host('r.test', 0, '127.0.0.1')] } } });
    const [outcome] = await deliver(ctx, MESSAGE, ['a@r.test'], DATA);
    expect(outcome).toMatchObject({ action: 'bounce', status: '5.0.0', reply: '550 5.0.0 mx[127.0.0.1]:2525: no recipients', remote: false, description: 'mx[127.0.0.1]:2525: no recipients' });
    expect(outcome).not.toHaveProperty('remoteMta');
    expect(outcome).not.toHaveProperty('code');
  });

  it('puts a multi-line reply on one line in the description', async () => {
    const smtp = scripted(({ envelope }) => result('mx[127.0.0.1]:2525', [refused(envelope.to[0]!, '550-5.7.1 first line\r\n550 5.7.1 second line')]));
    const { ctx } = context({ smtp, mx: { 'r.test': { kind: 'mx', hosts: [host('mx', 10, '127.0.0.1')] } } });
    const [outcome] = await deliver(ctx, MESSAGE, ['a@r.test'], DATA);
    expect(outcome!.description).toBe('mx[127.0.0.1]:2525 said: 550-5.7.1 first line / 550 5.7.1 second line (in reply to RCPT TO:<a@r.test>)');
    expect(outcome!.reply).toBe('550-5.7.1 first line\r\n550 5.7.1 second line');
  });

  it('defers with 4.3.0 whatever a failing sender throws, even nothing at all', async () => {
    const smtp: MailSender = {
      send: () => Promise.reject(null), // what a careless library may do
    };
    const { ctx } = context({ smtp, mx: { 'r.test': { kind: 'mx', hosts: [host('mx', 10, '127.0.0.1')] } } });
    const [outcome] = await deliver(ctx, MESSAGE, ['a@r.test'], DATA);
    expect(outcome).toMatchObject({ action: 'defer', status: '4.3.0', description: 'mta.sender.test -> mx[127.0.0.1]:2525: local error while delivering: null' });
  });

  it('reports an implicit MX (the domain\'s own address) in its lookup event', async () => {
    const smtp = scripted(({ envelope }) => result('implicit.test[127.0.0.9]:2525', [accepted(envelope.to[0]!)]));
    const { ctx, events } = context({ smtp, mx: { 'implicit.test': { kind: 'implicit', hosts: [host('implicit.test', 0, '127.0.0.9')] } } });
    await deliver(ctx, MESSAGE, ['a@implicit.test'], DATA);
    expect(events[0]).toStrictEqual(['mx-lookup', { domain: 'implicit.test', result: { kind: 'implicit', hosts: [{ exchange: 'implicit.test', priority: 0, addresses: ['127.0.0.9'] }] } }]);
  });

  it('defers with 4.3.0 on a local error (not a protocol outcome)', async () => {
    const smtp = scripted(() => new TypeError('cannot read properties of undefined'));
    const { ctx } = context({ smtp, mx: { 'r.test': { kind: 'mx', hosts: [host('mx', 10, '127.0.0.1')] } } });
    expect(await deliver(ctx, MESSAGE, ['a@r.test'], DATA)).toEqual([
      {
        address: 'a@r.test',
        action: 'defer',
        status: '4.3.0',
        code: 451,
        reply: '451 4.3.0 <a@r.test>: local error while delivering: cannot read properties of undefined',
        remote: false,
        hop: 'mta.sender.test -> mx[127.0.0.1]:2525',
        via: 'none',
        description: 'mta.sender.test -> mx[127.0.0.1]:2525: local error while delivering: cannot read properties of undefined',
      },
    ]);
  });

  it('bounces for a null MX, a domain without mail, and MX hosts without addresses; defers on a temporary lookup failure', async () => {
    const { ctx, events } = context({
      mx: {
        'nomail.test': { kind: 'null-mx' },
        'gone.test': { kind: 'none', error: 'NXDOMAIN' },
        'noaddr.test': { kind: 'mx', hosts: [{ ...host('mx1', 10), error: 'mx1: NXDOMAIN' }, host('mx2', 20)] },
        'flaky.test': { kind: 'temporary', error: 'SERVFAIL' },
        'broken.test': new Error('resolver crashed'),
      },
    });
    const outcomes = await deliver(ctx, MESSAGE, ['a@nomail.test', 'b@gone.test', 'c@noaddr.test', 'd@flaky.test', 'e@broken.test'], DATA);
    expect(outcomes.map((o) => [o.address, o.action, o.code, o.status, o.reply, o.remote, o.via, o.hop])).toEqual([
      ['a@nomail.test', 'bounce', 556, '5.1.10', '556 5.1.10 <a@nomail.test>: domain nomail.test accepts no mail (null MX, RFC 7505)', false, 'none', 'mta.sender.test (MX lookup for nomail.test)'],
      ['b@gone.test', 'bounce', 550, '5.1.2', '550 5.1.2 <b@gone.test>: domain gone.test cannot receive mail: NXDOMAIN', false, 'none', 'mta.sender.test (MX lookup for gone.test)'],
      ['c@noaddr.test', 'bounce', 550, '5.4.4', '550 5.4.4 <c@noaddr.test>: no MX host of noaddr.test has an address: mx1: NXDOMAIN; mx2: no address', false, 'none', 'mta.sender.test (MX lookup for noaddr.test)'],
      ['d@flaky.test', 'defer', 451, '4.4.3', '451 4.4.3 <d@flaky.test>: cannot resolve where mail for flaky.test goes, will retry: SERVFAIL', false, 'none', 'mta.sender.test (MX lookup for flaky.test)'],
      ['e@broken.test', 'defer', 451, '4.4.3', '451 4.4.3 <e@broken.test>: cannot resolve where mail for broken.test goes, will retry: resolver crashed', false, 'none', 'mta.sender.test (MX lookup for broken.test)'],
    ]);
    expect(outcomes[0]!.description).toBe('mta.sender.test (MX lookup for nomail.test): domain nomail.test accepts no mail (null MX, RFC 7505)');
    expect(events.map(([kind, d]) => [kind, d.domain, d.result])).toStrictEqual([
      ['mx-lookup', 'nomail.test', { kind: 'null-mx' }],
      ['mx-lookup', 'gone.test', { kind: 'none', error: 'NXDOMAIN' }],
      ['mx-lookup', 'noaddr.test', { kind: 'mx', hosts: [{ exchange: 'mx1', priority: 10, addresses: [], error: 'mx1: NXDOMAIN' }, { exchange: 'mx2', priority: 20, addresses: [] }] }],
      ['mx-lookup', 'flaky.test', { kind: 'temporary', error: 'SERVFAIL' }],
      ['mx-lookup', 'broken.test', { kind: 'temporary', error: 'resolver crashed' }],
    ]);
  });

  it('sends to an address literal without any lookup', async () => {
    const smtp = scripted(({ envelope }) => result('127.0.0.5:2525', envelope.to.map((a) => accepted(a))), ({ envelope }) => result('[::1]:2525', envelope.to.map((a) => accepted(a))));
    const { ctx, events, lookups } = context({ smtp });
    const outcomes = await deliver(ctx, MESSAGE, ['root@[127.0.0.5]', 'root@[IPv6:::1]'], DATA);
    expect(lookups).toEqual([]);
    expect(events.map(([kind]) => kind)).toEqual(['connect', 'connect']);
    expect(smtp.calls.map((c) => c.target)).toEqual([
      { host: '127.0.0.5', port: 2525, servername: '127.0.0.5' },
      { host: '::1', port: 2525, servername: '::1' },
    ]);
    expect(outcomes.map((o) => o.action)).toEqual(['delivered', 'delivered']);
  });

  it('looks up like any domain a bracketed name that is not exactly an address literal', async () => {
    const none = { kind: 'none', error: 'NXDOMAIN' } as const;
    const { ctx, lookups } = context({ mx: { '[not-an-ip]': none, 'x[127.0.0.1]': none, '[127.0.0.1]x': none } });
    const outcomes = await deliver(ctx, MESSAGE, ['a@[not-an-ip]', 'b@x[127.0.0.1]', 'c@[127.0.0.1]x'], DATA);
    expect(lookups).toEqual(['[not-an-ip]', 'x[127.0.0.1]', '[127.0.0.1]x']);
    expect(outcomes.map((o) => o.status)).toEqual(['5.1.2', '5.1.2', '5.1.2']);
  });
});

describe('deliver: local recipients', () => {
  it('hands every local domain to LMTP in one transaction, with per-recipient replies', async () => {
    const lmtp = scripted(({ envelope }) =>
      result('127.0.0.20:24', [accepted(envelope.to[0]!, '250 2.1.5 <bob@sender.test> delivered'), { ...refused(envelope.to[1]!, '452 4.2.2 over quota'), stage: 'lmtp', command: 'DATA' }], true),
    );
    const { ctx, events } = context({ lmtp, localDomains: ['sender.test', 'Local.Test'] });
    const outcomes = await deliver(ctx, MESSAGE, ['bob@sender.test', 'carol@local.test'], DATA);
    expect(lmtp.calls).toEqual([{ target: { host: '127.0.0.20', port: 24 }, envelope: { from: 'alice@sender.test', to: ['bob@sender.test', 'carol@local.test'] } }]);
    const hop = 'mta.sender.test -> LMTP 127.0.0.20:24';
    expect(events).toEqual([['connect', { host: '127.0.0.20', port: 24, via: 'lmtp', hop }]]);
    expect(outcomes).toEqual([
      {
        address: 'bob@sender.test',
        action: 'delivered',
        status: '2.1.5',
        code: 250,
        reply: '250 2.1.5 <bob@sender.test> delivered',
        remote: true,
        hop,
        command: 'DATA',
        via: 'lmtp',
        host: '127.0.0.20',
        port: 24,
        reused: true,
        description: 'delivered to 127.0.0.20:24: 250 2.1.5 <bob@sender.test> delivered',
      },
      expect.objectContaining({ address: 'carol@local.test', action: 'defer', status: '4.2.2', via: 'lmtp', description: '127.0.0.20:24 said: 452 4.2.2 over quota (in reply to DATA)' }),
    ]);
    expect(outcomes[0]).not.toHaveProperty('remoteMta');
  });

  it('defers local recipients when no LMTP is configured, or when the mailbox server cannot be reached', async () => {
    const { ctx } = context({ localDelivery: undefined as never });
    delete (ctx as Partial<DeliveryContext>).localDelivery;
    expect(await deliver(ctx, MESSAGE, ['bob@sender.test'], DATA)).toEqual([
      {
        address: 'bob@sender.test',
        action: 'defer',
        status: '4.3.5',
        code: 451,
        reply: '451 4.3.5 <bob@sender.test>: local domain, but no local delivery (LMTP) is configured',
        remote: false,
        hop: 'mta.sender.test (local delivery)',
        via: 'none',
        description: 'mta.sender.test (local delivery): local domain, but no local delivery (LMTP) is configured',
      },
    ]);

    const lmtp = scripted(() => new SmtpClientError({ stage: 'connect', target: '127.0.0.20:24', command: 'connect', description: 'cannot connect: connection refused', errno: 'ECONNREFUSED' }));
    const down = context({ lmtp }).ctx;
    const [outcome] = await deliver(down, MESSAGE, ['bob@sender.test'], DATA);
    expect(outcome).toMatchObject({ action: 'defer', status: '4.4.1', via: 'lmtp', remote: false, host: '127.0.0.20', port: 24, hop: 'mta.sender.test -> LMTP 127.0.0.20:24' });
    expect(outcome).not.toHaveProperty('remoteMta');
  });

  it('connects to no address outside labAddresses: skips it for the next MX, bounces with 5.4.4 when none is left', async () => {
    const smtp = scripted(({ envelope }) => result('127.0.0.7:2525', envelope.to.map((a) => accepted(a))));
    const { ctx, events } = context({
      smtp,
      labAddresses: ['127.0.0.7', '127.0.0.20'],
      mx: {
        'split.test': { kind: 'mx', hosts: [host('out.split.test', 10, '10.0.0.1', '::ffff:127.0.0.9'), host('in.split.test', 20, '::ffff:127.0.0.7')] },
        'evil.test': { kind: 'mx', hosts: [host('mx.evil.test', 10, '10.0.0.1'), host('mx2.evil.test', 20)] },
      },
    });
    const outcomes = await deliver(ctx, MESSAGE, ['a@split.test', 'b@evil.test', 'c@[127.0.0.1]'], DATA);
    // Only the address inside the lab was connected (an IPv4-mapped IPv6 address counts as its IPv4 address).
    expect(smtp.calls.map((c) => c.target.host)).toEqual(['::ffff:127.0.0.7']);
    expect(events.filter(([kind]) => kind === 'connect').map(([, d]) => d.host)).toEqual(['::ffff:127.0.0.7']);
    expect(outcomes.find((o) => o.address === 'a@split.test')).toMatchObject({ action: 'delivered', mx: 'in.split.test' });
    expect(outcomes.find((o) => o.address === 'b@evil.test')).toMatchObject({
      action: 'bounce',
      status: '5.4.4',
      remote: false,
      reply: "550 5.4.4 <b@evil.test>: mail for evil.test would go to mx.evil.test[10.0.0.1], outside the lab: mta.sender.test connects only to the lab's own hosts; mx2.evil.test: no address",
    });
    expect(outcomes.find((o) => o.address === 'c@[127.0.0.1]')).toMatchObject({
      action: 'bounce',
      status: '5.4.4',
      reply: "550 5.4.4 <c@[127.0.0.1]>: mail for [127.0.0.1] would go to 127.0.0.1, outside the lab: mta.sender.test connects only to the lab's own hosts",
    });
  });

  it('connects anywhere without labAddresses (a node started by hand)', async () => {
    const smtp = scripted(({ envelope }) => result('10.0.0.1:2525', envelope.to.map((a) => accepted(a))));
    const { ctx } = context({ smtp, mx: { 'far.test': { kind: 'mx', hosts: [host('mx.far.test', 10, '10.0.0.1')] } } });
    expect((await deliver(ctx, MESSAGE, ['a@far.test'], DATA)).map((o) => o.action)).toEqual(['delivered']);
  });
});

describe('deliver: outbound TLS policy', () => {
  const POLICY = { default: 'may' as const, domains: { 'receiver.test': 'verify' as const, 'other.test': 'encrypt' as const } };
  const tlsFailure = (target: SmtpTarget, policy: 'encrypt' | 'verify', problem: 'no-starttls' | 'certificate', reason: string, code?: string) =>
    new SmtpClientError({ stage: 'ehlo', target: `${target.servername}[${target.host}]:${target.port}`, command: problem === 'no-starttls' ? 'EHLO' : 'STARTTLS', description: `TLS required (policy ${policy}), but ${reason}`, errno: code ?? 'ETLSREQUIRED', tlsRequired: { policy, problem, reason, ...(code ? { code } : {}) } });

  it('picks the domain\'s own policy, else the default; may without a policy', () => {
    expect(tlsPolicyFor(POLICY, 'Receiver.Test')).toBe('verify');
    expect(tlsPolicyFor(POLICY, 'other.test')).toBe('encrypt');
    expect(tlsPolicyFor(POLICY, 'elsewhere.test')).toBe('may');
    expect(tlsPolicyFor({ default: 'none', domains: {} }, 'elsewhere.test')).toBe('none');
    expect(tlsPolicyFor(undefined, 'receiver.test')).toBe('may');
  });

  it('passes the policy to the SMTP client and records it with the outcome; LMTP gets none', async () => {
    const smtp = scripted(({ envelope }) => result('mx.other.test[127.0.0.8]:2525', [accepted(envelope.to[0]!)]));
    const lmtp = scripted(({ envelope }) => result('127.0.0.20:24', [accepted(envelope.to[0]!)]));
    const { ctx } = context({ smtp, lmtp, tlsPolicy: POLICY, mx: { 'other.test': { kind: 'mx', hosts: [host('mx.other.test', 10, '127.0.0.8')] } } });
    const outcomes = await deliver(ctx, MESSAGE, ['x@other.test', 'alice@sender.test'], DATA);
    expect(smtp.calls[0]!.target).toEqual({ host: '127.0.0.8', port: 2525, servername: 'mx.other.test', tls: 'encrypt' });
    expect(lmtp.calls[0]!.target).toEqual({ host: '127.0.0.20', port: 24 });
    expect(outcomes.find((o) => o.address === 'x@other.test')).toMatchObject({ action: 'delivered', tlsPolicy: 'encrypt' });
    expect(outcomes.find((o) => o.address === 'alice@sender.test')).not.toHaveProperty('tlsPolicy');
  });

  it('an MX refused by the policy is a temporary failure of that MX: the next one is tried, then 451 4.7.5 naming the policy', async () => {
    const smtp = scripted(
      ({ target }) => tlsFailure(target, 'verify', 'certificate', 'the certificate of mx1.receiver.test failed verification: certificate has expired (CERT_HAS_EXPIRED)', 'CERT_HAS_EXPIRED'),
      ({ target }) => tlsFailure(target, 'verify', 'no-starttls', 'the server did not offer STARTTLS'),
    );
    const { ctx, events } = context({ smtp, tlsPolicy: POLICY, mx: { 'receiver.test': { kind: 'mx', hosts: [host('mx1.receiver.test', 10, '127.0.0.7'), host('mx2.receiver.test', 20, '127.0.0.9')] } } });
    const [outcome] = await deliver(ctx, MESSAGE, ['bob@receiver.test'], DATA);
    expect(smtp.calls.map((c) => [c.target.servername, c.target.tls])).toEqual([['mx1.receiver.test', 'verify'], ['mx2.receiver.test', 'verify']]);
    const failed = events.filter(([kind]) => kind === 'connect-failed').map(([, d]) => d);
    expect(failed).toEqual([
      expect.objectContaining({ mx: 'mx1.receiver.test', tlsPolicy: 'verify', error: 'mx1.receiver.test[127.0.0.7]:2525: TLS required by policy verify for receiver.test, but the certificate of mx1.receiver.test failed verification: certificate has expired (CERT_HAS_EXPIRED)' }),
      expect.objectContaining({ mx: 'mx2.receiver.test', tlsPolicy: 'verify', error: expect.stringContaining('TLS required by policy verify for receiver.test, but the server did not offer STARTTLS') }),
    ]);
    expect(outcome).toMatchObject({
      action: 'defer',
      status: '4.7.5',
      code: 451,
      remote: false,
      tlsPolicy: 'verify',
      reply: '451 4.7.5 mx2.receiver.test[127.0.0.9]:2525: TLS required by policy verify for receiver.test, but the server did not offer STARTTLS',
    });
  });
});

describe('deliver: MTA-STS and DANE', () => {
  const MX = { 'receiver.test': { kind: 'mx' as const, hosts: [host('mx1.receiver.test', 10, '127.0.0.7'), host('mx2.receiver.test', 20, '127.0.0.9')] } };
  const POLICY = { default: 'may' as const, domains: {} };
  const ok = ({ target, envelope }: Call) => result(`${target.servername}[${target.host}]:${target.port}`, envelope.to.map((a) => accepted(a)));
  const sts = (mode: 'enforce' | 'testing', mx: string[]) => ({
    lookup: async (domain: string) => ({ kind: 'policy' as const, source: 'fetched' as const, expiresAt: 1, policy: { id: 'abc', mode, mx, maxAge: 600 } }),
    domain: 'receiver.test',
  });
  const noTlsa = async (name: string): Promise<never> => {
    throw Object.assign(new Error(`${name} TLSA: no records`), { code: 'ENODATA' });
  };

  it('enforce: an MX the policy does not list is not connected to; a listed one is, under mta-sts', async () => {
    const smtp = scripted(ok);
    const { ctx, events } = context({ smtp, tlsPolicy: POLICY, mtaSts: sts('enforce', ['mx2.receiver.test']), resolveTlsa: noTlsa, mx: MX });
    const [outcome] = await deliver(ctx, MESSAGE, ['bob@receiver.test'], DATA);
    expect(smtp.calls.map((c) => c.target)).toEqual([{ host: '127.0.0.9', port: 2525, servername: 'mx2.receiver.test', tls: 'mta-sts' }]);
    expect(outcome).toMatchObject({ action: 'delivered', tlsPolicy: 'mta-sts', mx: 'mx2.receiver.test' });
    expect(events.filter(([k]) => k === 'tls-policy-failure')).toEqual([
      ['tls-policy-failure', expect.objectContaining({ domain: 'receiver.test', mx: 'mx1.receiver.test', tlsPolicy: 'mta-sts', enforced: true, resultType: 'validation-failure', reason: expect.stringMatching(/mx1\.receiver\.test is not an MX the MTA-STS policy of receiver\.test \(id abc\) lists/) })],
    ]);
    expect(events.find(([k]) => k === 'mta-sts')).toEqual(['mta-sts', { domain: 'receiver.test', mode: 'enforce', id: 'abc', mx: ['mx2.receiver.test'], maxAge: 600, source: 'fetched', expiresAt: 1 }]);
  });

  it('enforce with no MX listed: deferred with 451 4.7.5 naming the policy', async () => {
    const { ctx } = context({ smtp: scripted(), tlsPolicy: POLICY, mtaSts: sts('enforce', ['mx.elsewhere.test']), mx: MX });
    const [outcome] = await deliver(ctx, MESSAGE, ['bob@receiver.test'], DATA);
    expect(outcome).toMatchObject({ action: 'defer', status: '4.7.5', tlsPolicy: 'mta-sts', reply: expect.stringMatching(/^451 4\.7\.5 mx2\.receiver\.test: TLS required by policy mta-sts for receiver\.test, but mx2\.receiver\.test is not an MX/) });
  });

  it('testing: delivers under the configured mode with an audit, and reports what verify would have refused', async () => {
    const smtp = scripted(({ target, envelope }) => ({ ...ok({ target, envelope }), tlsAudit: { policy: 'verify', problem: 'certificate', code: 'CERT_HAS_EXPIRED', reason: 'the certificate of mx1.receiver.test failed verification: certificate has expired (CERT_HAS_EXPIRED)' } }));
    const { ctx, events } = context({ smtp, tlsPolicy: POLICY, mtaSts: sts('testing', ['*.receiver.test']), mx: MX });
    const [outcome] = await deliver(ctx, MESSAGE, ['bob@receiver.test'], DATA);
    expect(smtp.calls[0]!.target).toEqual({ host: '127.0.0.7', port: 2525, servername: 'mx1.receiver.test', tls: 'may', audit: true });
    expect(outcome).toMatchObject({ action: 'delivered', tlsPolicy: 'may' });
    expect(events.find(([k]) => k === 'tls-policy-failure')).toEqual(['tls-policy-failure', expect.objectContaining({ tlsPolicy: 'mta-sts-testing', enforced: false, resultType: 'certificate-expired', host: '127.0.0.7' })]);
  });

  it('a mode configured for the domain wins over its MTA-STS policy; so does none everywhere', async () => {
    let asked = 0;
    const mtaSts = { lookup: async () => (asked++, { kind: 'none' as const, reason: 'x' }) };
    const { ctx } = context({ smtp: scripted(ok, ok), tlsPolicy: { default: 'may', domains: { 'receiver.test': 'encrypt' } }, mtaSts, mx: MX });
    await deliver(ctx, MESSAGE, ['bob@receiver.test'], DATA);
    const none = context({ smtp: scripted(ok), tlsPolicy: { default: 'none', domains: {} }, mtaSts, mx: MX });
    await deliver(none.ctx, MESSAGE, ['bob@receiver.test'], DATA);
    expect(asked).toBe(0);
  });

  it('a policy announced but not to be had applies nothing, and is reported', async () => {
    const smtp = scripted(ok);
    const mtaSts = { lookup: async () => ({ kind: 'error' as const, problem: 'sts-webpki-invalid' as const, reason: 'MTA-STS policy of receiver.test: certificate has expired' }) };
    const { ctx, events } = context({ smtp, tlsPolicy: POLICY, mtaSts, mx: MX });
    const [outcome] = await deliver(ctx, MESSAGE, ['bob@receiver.test'], DATA);
    expect(outcome).toMatchObject({ action: 'delivered', tlsPolicy: 'may' });
    expect(events.filter(([k]) => k === 'mta-sts' || k === 'tls-policy-failure').map(([k, d]) => [k, d.resultType ?? d.error])).toEqual([
      ['mta-sts', 'MTA-STS policy of receiver.test: certificate has expired'],
      ['tls-policy-failure', 'sts-webpki-invalid'],
    ]);
  });

  it('DANE: usable TLSA records make the MX dane, over MTA-STS and the configured mode; unusable ones do not', async () => {
    const ee = { usage: 3, selector: 1, matchingType: 1, data: Buffer.alloc(32, 1) };
    const pkix = { usage: 1, selector: 1, matchingType: 1, data: Buffer.alloc(32, 2) };
    const asked: string[] = [];
    const resolveTlsa = async (name: string) => (asked.push(name), name.includes('mx1') ? [ee, pkix] : [pkix]);
    const smtp = scripted(({ target }) => new SmtpClientError({ stage: 'ehlo', target: 'mx1', command: 'STARTTLS', description: 'TLS required', errno: 'TLSA_MISMATCH', tlsRequired: { policy: 'dane', problem: 'tlsa-mismatch', code: 'TLSA_MISMATCH', reason: `the certificate of ${target.servername} does not match its TLSA records: …` } }), ok);
    const { ctx, events } = context({ smtp, tlsPolicy: POLICY, mtaSts: sts('enforce', ['*.receiver.test']), resolveTlsa, mx: MX });
    const [outcome] = await deliver(ctx, MESSAGE, ['bob@receiver.test'], DATA);
    expect(asked).toEqual(['_2525._tcp.mx1.receiver.test', '_2525._tcp.mx2.receiver.test']);
    expect(smtp.calls.map((c) => [c.target.servername, c.target.tls, c.target.tlsa?.length])).toEqual([
      ['mx1.receiver.test', 'dane', 1],
      ['mx2.receiver.test', 'mta-sts', undefined],
    ]);
    expect(outcome).toMatchObject({ action: 'delivered', tlsPolicy: 'mta-sts', mx: 'mx2.receiver.test' });
    expect(events.filter(([k]) => k === 'tlsa-lookup').map(([, d]) => [d.mx, d.usable])).toEqual([['mx1.receiver.test', 1], ['mx2.receiver.test', 0]]);
    expect(events.find(([k]) => k === 'tls-policy-failure')).toEqual(['tls-policy-failure', expect.objectContaining({ mx: 'mx1.receiver.test', tlsPolicy: 'dane', enforced: true, resultType: 'validation-failure' })]);
  });

  it('DANE: a TLSA lookup that fails (not NXDOMAIN/NODATA) makes the MX unusable, and the recipients defer', async () => {
    const resolveTlsa = async (name: string): Promise<never> => {
      throw Object.assign(new Error(`${name} TLSA: DNS server failure (SERVFAIL)`), { code: 'ESERVFAIL' });
    };
    const { ctx, events } = context({ smtp: scripted(), tlsPolicy: POLICY, resolveTlsa, mx: MX });
    const [outcome] = await deliver(ctx, MESSAGE, ['bob@receiver.test'], DATA);
    expect(outcome).toMatchObject({ action: 'defer', status: '4.7.5', tlsPolicy: 'dane', reply: expect.stringMatching(/^451 4\.7\.5 mx2\.receiver\.test: TLS policy dane for receiver\.test cannot be decided: the TLSA lookup of _2525\._tcp\.mx2\.receiver\.test failed: .*SERVFAIL/) });
    expect(events.filter(([k]) => k === 'tlsa-lookup')).toHaveLength(2);
  });
});

describe('deliver: the transport map (a port per target, routes without MX lookup)', () => {
  const ok = ({ target, envelope }: Call) => result(`${target.servername}[${target.host}]:${target.port}`, envelope.to.map((a) => accepted(a)));
  /** A TLSA resolver that finds no records and keeps the names it was asked for. */
  const noTlsaAsked = () => {
    const asked: string[] = [];
    const resolveTlsa = async (name: string): Promise<never> => {
      asked.push(name);
      throw Object.assign(new Error(`${name} TLSA: no records`), { code: 'ENODATA' });
    };
    return { asked, resolveTlsa };
  };
  const hostOf = (exchange: string, ...addresses: string[]) => async (name: string): Promise<MxResolution> =>
    name === exchange ? { kind: 'implicit', hosts: [host(exchange, 0, ...addresses)] } : { kind: 'none', error: `${name}: no such domain (NXDOMAIN) (ENOTFOUND)` };

  it('connects to an MX host on its own port (relayPorts, by host name), the others on relayPort; events and hops name the port used', async () => {
    const smtp = scripted(({ target, envelope }) => (target.port === 2626 ? new SmtpClientError({ stage: 'connect', target: 'x', command: 'connect', description: 'connection refused', errno: 'ECONNREFUSED' }) : ok({ target, envelope })), ok);
    const { ctx, events } = context({
      smtp,
      relayPorts: { 'mx.user.test': 2626 },
      // Upper case and a trailing dot, as a DNS answer may have them: the same host.
      mx: { 'receiver2.test': { kind: 'mx', hosts: [host('MX.User.Test.', 10, '127.0.0.30'), host('mx2.receiver2.test', 20, '127.0.0.31')] } },
    });
    const [outcome] = await deliver(ctx, MESSAGE, ['erin@receiver2.test'], DATA);
    expect(smtp.calls.map((c) => `${c.target.host}:${c.target.port}`)).toEqual(['127.0.0.30:2626', '127.0.0.31:2525']);
    expect(events.filter(([k]) => k === 'connect' || k === 'connect-failed').map(([k, d]) => [k, d.host, d.port])).toEqual([
      ['connect', '127.0.0.30', 2626],
      ['connect-failed', '127.0.0.30', 2626],
      ['connect', '127.0.0.31', 2525],
    ]);
    expect(outcome).toMatchObject({ action: 'delivered', port: 2525, hop: 'mta.sender.test -> mx2.receiver2.test[127.0.0.31]:2525' });
  });

  it('delivers on the MX host\'s own port, and DANE looks up _<that port>._tcp', async () => {
    const { asked, resolveTlsa } = noTlsaAsked();
    const smtp = scripted(ok);
    const { ctx } = context({ smtp, relayPorts: { 'mx.user.test': 2626 }, resolveTlsa, mx: { 'receiver2.test': { kind: 'mx', hosts: [host('mx.user.test', 10, '127.0.0.30')] } } });
    const [outcome] = await deliver(ctx, MESSAGE, ['erin@receiver2.test'], DATA);
    expect(asked).toEqual(['_2626._tcp.mx.user.test']);
    expect(outcome).toMatchObject({ action: 'delivered', port: 2626, host: '127.0.0.30', mx: 'mx.user.test', hop: 'mta.sender.test -> mx.user.test[127.0.0.30]:2626' });
  });

  it('a transport route bypasses the MX lookup: the route\'s host by its own address, on the route\'s port', async () => {
    const { asked, resolveTlsa } = noTlsaAsked();
    const smtp = scripted(ok);
    // No MX answer is scripted for relay.test: an MX lookup would throw.
    const { ctx, events, lookups } = context({ smtp, resolveTlsa, transport: { 'relay.test': { host: 'smtp.user.test', port: 2727 } }, lookupHost: hostOf('smtp.user.test', '127.0.0.32') });
    const [outcome] = await deliver(ctx, MESSAGE, ['frank@relay.test'], DATA);
    expect(lookups).toEqual([]);
    expect(events.map(([k]) => k)).toEqual(['connect']);
    expect(events[0]![1]).toEqual({ host: '127.0.0.32', port: 2727, mx: 'smtp.user.test', hop: 'mta.sender.test -> smtp.user.test[127.0.0.32]:2727' });
    expect(smtp.calls.map((c) => c.target)).toEqual([{ host: '127.0.0.32', port: 2727, servername: 'smtp.user.test' }]);
    expect(asked).toEqual(['_2727._tcp.smtp.user.test']);
    expect(outcome).toMatchObject({ action: 'delivered', port: 2727, remoteMta: 'smtp.user.test' });
  });

  it('a route to an IP address needs no lookup; domains not in the map still go by MX', async () => {
    const smtp = scripted(ok, ok);
    let hostLookups = 0;
    const { ctx, lookups } = context({
      smtp,
      transport: { 'relay.test': { host: '127.0.0.33', port: 2828 } },
      lookupHost: async () => (hostLookups++, { kind: 'none', error: 'not asked' }),
      mx: { 'receiver.test': { kind: 'mx', hosts: [host('mx.receiver.test', 10, '127.0.0.7')] } },
    });
    const outcomes = await deliver(ctx, MESSAGE, ['frank@relay.test', 'bob@receiver.test'], DATA);
    expect(hostLookups).toBe(0);
    expect(lookups).toEqual(['receiver.test']);
    expect(smtp.calls.map((c) => `${c.target.host}:${c.target.port}`).sort()).toEqual(['127.0.0.33:2828', '127.0.0.7:2525']);
    expect(outcomes.map((o) => o.action)).toEqual(['delivered', 'delivered']);
  });

  it('the lab boundary holds for a route: an address outside the lab is never connected, the recipient bounces 5.4.4', async () => {
    const smtp = scripted();
    const { ctx, events } = context({ smtp, labAddresses: ['127.0.0.7'], transport: { 'relay.test': { host: 'smtp.user.test', port: 2727 } }, lookupHost: hostOf('smtp.user.test', '10.1.2.3') });
    const [outcome] = await deliver(ctx, MESSAGE, ['frank@relay.test'], DATA);
    expect(smtp.calls).toEqual([]);
    expect(events).toEqual([]);
    expect(outcome).toMatchObject({
      action: 'bounce',
      status: '5.4.4',
      hop: 'mta.sender.test (transport for relay.test: [smtp.user.test]:2727)',
      reply: "550 5.4.4 <frank@relay.test>: mail for relay.test would go to smtp.user.test[10.1.2.3], outside the lab: mta.sender.test connects only to the lab's own hosts",
    });
  });

  it('a route whose host has no address bounces 5.4.4; one that cannot be resolved now defers 4.4.3; both name the route', async () => {
    const route = { 'relay.test': { host: 'gone.user.test', port: 2727 } };
    const gone = context({ transport: route, lookupHost: hostOf('smtp.user.test', '127.0.0.32') });
    expect((await deliver(gone.ctx, MESSAGE, ['frank@relay.test'], DATA))[0]).toMatchObject({
      action: 'bounce',
      status: '5.4.4',
      reply: '550 5.4.4 <frank@relay.test>: the transport map sends relay.test to [gone.user.test]:2727, which has no address: gone.user.test: no such domain (NXDOMAIN) (ENOTFOUND)',
    });
    const timeout = context({ transport: route, lookupHost: async () => ({ kind: 'temporary', error: 'gone.user.test A/AAAA: DNS timeout (ETIMEOUT)' }) });
    expect((await deliver(timeout.ctx, MESSAGE, ['frank@relay.test'], DATA))[0]).toMatchObject({ action: 'defer', status: '4.4.3', reply: expect.stringMatching(/^451 4\.4\.3 <frank@relay\.test>: the transport map sends relay\.test to \[gone\.user\.test\]:2727, which cannot be resolved now, will retry: .*ETIMEOUT/) });
    const thrown = context({ transport: route, lookupHost: async () => Promise.reject(new Error('resolver gone')) });
    expect((await deliver(thrown.ctx, MESSAGE, ['frank@relay.test'], DATA))[0]).toMatchObject({ action: 'defer', status: '4.4.3' });
    const noResolver = context({ transport: route });
    expect((await deliver(noResolver.ctx, MESSAGE, ['frank@relay.test'], DATA))[0]).toMatchObject({ action: 'defer', reply: expect.stringMatching(/no resolver to look up gone\.user\.test/) });
  });
});
