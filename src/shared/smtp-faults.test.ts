// The SMTP fault rules (issue 15): the engine (validation, matching, times, probability, greylisting, rate limits,
// bounded tables), then applied by a real LabSmtpServer on a socket, SMTP and LMTP.
import { afterEach, describe, expect, it } from 'vitest';
import type { SMTPServer, SMTPServerAuthentication, SMTPServerAuthenticationResponse, SMTPServerDataStream, SMTPServerSession } from 'smtp-server';
import { LineClient } from '../harness/clients/line-client.js';
import type { FaultFired, SmtpFaultRule } from './faults.js';
import { GREYLIST_MAX_ENTRIES, SmtpFaults, validateSmtpFaultRules, type SmtpFaultContext } from './smtp-faults.js';
import { createSmtpServer, listen, readMessage } from './smtp-server.js';
import { smtpReply } from './smtp-reply.js';
import { SmtpClientError, SmtpClientPool } from './smtp-client.js';
import { testPki } from './tls.test-helper.js';

const at = (stage: SmtpFaultContext['stage'], extra: Partial<SmtpFaultContext> = {}): SmtpFaultContext => ({ stage, client: '127.0.0.9', ...extra });

describe('SMTP fault rules: validation', () => {
  it('names the rule and the field of every problem', () => {
    const bad = [
      { id: 'a', stage: 'rcpt', action: { kind: 'reply', code: 250 } },
      { id: 'a', stage: 'helo', action: { kind: 'delay', ms: 10 } },
      { id: 'g', stage: 'mail', action: { kind: 'greylist', delayMs: 1000 } },
      { id: 'r', stage: 'rcpt', action: { kind: 'rate-limit', messages: 0, windowMs: 1000 } },
      { id: 's', stage: 'ehlo', match: { sender: 'a@b.test' }, action: { kind: 'drop', when: 'before-reply' } },
      { id: 'e', stage: 'rcpt', action: { kind: 'reply', code: 451, enhancedCode: '5.7.1' } },
      { id: 'c', stage: 'connect', action: { kind: 'drop', when: 'after-reply' } },
      { id: 'p', stage: 'quit', probability: 2, times: 0, action: { kind: 'nothing' } },
    ];
    let message = '';
    try {
      validateSmtpFaultRules(bad);
    } catch (err) {
      message = (err as Error).message;
    }
    for (const problem of [
      'rule "a": action.code 250 must be a 4xx or 5xx reply code',
      'rule "a": id is used by another rule',
      'stage "helo" is not one of connect, greeting, ehlo',
      'rule "g": greylisting answers RCPT TO: its stage must be rcpt, not mail',
      'rule "r": a rate limit counts transactions: its stage must be mail, not rcpt',
      'rule "r": action.messages must be a whole number from 1',
      'rule "s": match.sender cannot match at stage ehlo',
      'rule "e": action.enhancedCode 5.7.1 must have the class of the reply code 451',
      'rule "c": at stage connect nothing has been answered yet',
      'rule "p": times must be a whole number from 1',
      'rule "p": probability must be a number from 0 to 1',
      'rule "p": action.kind must be one of reply, delay, drop, greylist, rate-limit',
    ]) expect(message).toContain(problem);
    expect(() => validateSmtpFaultRules('nope')).toThrow(/must be a list/);
  });

  it('a bad list changes nothing', () => {
    const faults = new SmtpFaults({ node: 'mx', seed: 1, rules: [{ id: 'x', stage: 'mail', action: { kind: 'delay', ms: 5 } }] });
    expect(() => faults.set([{ id: 'y', stage: 'mail', action: { kind: 'delay', ms: -1 } }])).toThrow(/rule "y": action.ms/);
    expect(faults.list()).toEqual([{ id: 'x', stage: 'mail', action: { kind: 'delay', ms: 5 }, fired: 0 }]);
  });
});

describe('SMTP fault rules: deciding', () => {
  it('first matching rule in list order, addresses case-insensitive, spent after `times`', () => {
    const faults = new SmtpFaults({
      node: 'mx',
      seed: 1,
      rules: [
        { id: 'carol', stage: 'rcpt', match: { recipient: 'Carol@Receiver.test' }, times: 1, action: { kind: 'reply', code: 421, enhancedCode: '4.7.0', text: 'go away' } },
        { id: 'slow', stage: 'rcpt', action: { kind: 'delay', ms: 7 } },
      ],
    });
    expect(faults.decide(at('rcpt', { recipients: ['bob@receiver.test'] }))?.rule.id).toBe('slow');
    const first = faults.decide(at('rcpt', { recipients: ['carol@receiver.test'] }))!;
    expect(first.seen).toBe('421 4.7.0 go away');
    expect(faults.decide(at('rcpt', { recipients: ['carol@receiver.test'] }))?.rule.id).toBe('slow');
    expect(faults.decide(at('mail', { sender: 'a@b.test' }))).toBeUndefined();
    expect(faults.list().map((r) => r.fired)).toEqual([1, 2]);
  });

  it('probability draws from the seed: the same seed fires the same times, another seed others', () => {
    const rule: SmtpFaultRule = { id: 'flaky', stage: 'data', probability: 0.5, action: { kind: 'reply', code: 451, enhancedCode: '4.3.0' } };
    const run = (seed: number) => {
      const faults = new SmtpFaults({ node: 'mx', seed, rules: [rule] });
      return Array.from({ length: 200 }, () => (faults.decide(at('data')) ? 1 : 0)).join('');
    };
    expect(run(42)).toBe(run(42));
    expect(run(42)).not.toBe(run(43));
    const fired = [...run(42)].filter((c) => c === '1').length;
    expect(fired).toBeGreaterThan(70);
    expect(fired).toBeLessThan(130);
  });

  it('greylisting: 450 4.7.1 on first sight and until delayMs passed, then the triple is accepted', () => {
    let now = 1_000_000;
    const faults = new SmtpFaults({ node: 'mx', seed: 1, now: () => now, rules: [{ id: 'grey', stage: 'rcpt', action: { kind: 'greylist', delayMs: 2000 } }] });
    const triple = at('rcpt', { sender: 'alice@sender.test', recipients: ['bob@receiver.test'] });
    expect(faults.decide(triple)?.seen).toBe('450 4.7.1 <bob@receiver.test>: greylisted, try again in 2 s');
    now += 1999;
    expect(faults.decide(triple)?.effect).toMatchObject({ kind: 'reply', code: 450 });
    now += 1;
    expect(faults.decide(triple)).toBeUndefined();
    expect(faults.decide(triple)).toBeUndefined();
    // Another recipient is another triple.
    expect(faults.decide({ ...triple, recipients: ['carol@receiver.test'] })?.effect).toMatchObject({ code: 450 });
  });

  it('greylisting remembers at most GREYLIST_MAX_ENTRIES triples, forgetting the oldest', () => {
    let now = 0;
    const faults = new SmtpFaults({ node: 'mx', seed: 1, now: () => now, rules: [{ id: 'grey', stage: 'rcpt', action: { kind: 'greylist', delayMs: 10, by: ['recipient'] } }] });
    for (let i = 0; i <= GREYLIST_MAX_ENTRIES; i++) faults.decide(at('rcpt', { recipients: [`u${i}@x.test`] }));
    now += 10;
    expect(faults.decide(at('rcpt', { recipients: [`u${GREYLIST_MAX_ENTRIES}@x.test`] }))).toBeUndefined();
    // u0 was forgotten: greylisted again, as on first sight.
    expect(faults.decide(at('rcpt', { recipients: ['u0@x.test'] }))?.effect).toMatchObject({ code: 450 });
  });

  it('rate limit: 421 4.7.0 past `messages` transactions of a client in the window; the window slides', () => {
    let now = 0;
    const faults = new SmtpFaults({ node: 'mx', seed: 1, now: () => now, rules: [{ id: 'rate', stage: 'mail', action: { kind: 'rate-limit', messages: 3, windowMs: 1000 } }] });
    const mail = at('mail', { sender: 'alice@sender.test' });
    for (let i = 0; i < 3; i++) expect(faults.decide(mail)).toBeUndefined();
    expect(faults.decide(mail)?.seen).toMatch(/^421 4\.7\.0 127\.0\.0\.9: rate limit of 3 messages per 1000 ms exceeded/);
    expect(faults.decide({ ...mail, client: '127.0.0.10' })).toBeUndefined();
    now += 1000;
    expect(faults.decide(mail)).toBeUndefined();
  });
});

// ---- applied by a server on a socket ----

interface Running {
  server: SMTPServer;
  port: number;
  fired: FaultFired[];
  processed: string[];
}

const servers: SMTPServer[] = [];
afterEach(async () => {
  await Promise.all(servers.splice(0).map((s) => new Promise<void>((resolve) => s.close(() => resolve()))));
});

interface StartOptions {
  lmtp?: boolean;
  /** The lab's seed (default 7). */
  seed?: number;
  /** STARTTLS offered with this certificate (RFC 3207). */
  tls?: { key: string; cert: string };
  /** AUTH PLAIN offered in plaintext (RFC 4954); every successful login is noted here. */
  logins?: string[];
}

/** A server that "processes" a message by noting its recipients, with these rules. */
async function start(rules: SmtpFaultRule[], options: StartOptions = {}): Promise<Running> {
  const { lmtp = false, seed = 7, tls, logins } = options;
  const fired: FaultFired[] = [];
  const processed: string[] = [];
  const faults = new SmtpFaults({ node: 'mx', seed, rules });
  const server: SMTPServer = createSmtpServer({
    greetingDelayMs: 0,
    name: 'mx.receiver.test',
    authOptional: true,
    disabledCommands: [...(logins ? [] : ['AUTH']), ...(tls ? [] : ['STARTTLS'])],
    hideSTARTTLS: !tls,
    ...(tls ? { key: tls.key, cert: tls.cert } : {}),
    ...(logins
      ? {
          authMethods: ['PLAIN'],
          allowInsecureAuth: true,
          onAuth(auth: SMTPServerAuthentication, _session: SMTPServerSession, callback: (err: Error | null | undefined, response?: SMTPServerAuthenticationResponse) => void) {
            if (auth.password !== 'secret') return callback(Object.assign(new Error('5.7.8 bad credentials'), { responseCode: 535 }));
            logins.push(auth.username!);
            callback(null, { user: auth.username! });
          },
        }
      : {}),
    hidePIPELINING: true,
    ...(lmtp ? { lmtp: true } : {}),
    logger: false,
    closeTimeout: 100,
    size: 1000,
    faults,
    onFault: (detail) => fired.push(detail),
    onData(stream: SMTPServerDataStream, session: SMTPServerSession, callback: (err?: Error | null, message?: any) => void) {
      readMessage(server, stream, session, 1000, () => smtpReply(552, '5.3.4 too big')).then(
        () => {
          processed.push(session.envelope.rcptTo.map((r) => r.address).join(','));
          callback(null, lmtp ? session.envelope.rcptTo.map((r) => `<${r.address}> saved`) : 'queued');
        },
        (err: Error) => callback(err),
      );
    },
  });
  servers.push(server);
  server.on('error', () => undefined);
  await listen(server, '127.0.0.1', 0, 'smtp');
  const address = server.server.address();
  return { server, port: typeof address === 'object' && address ? address.port : 0, fired, processed };
}

async function session(port: number, lmtp = false): Promise<LineClient> {
  const client = await LineClient.connect({ host: '127.0.0.1', port }, { name: 'SMTP', timeoutMs: 3000 });
  expect((await client.smtpReply()).code).toBe(220);
  client.send(`${lmtp ? 'LHLO' : 'EHLO'} mta.sender.test`);
  expect((await client.smtpReply()).code).toBe(250);
  return client;
}

async function transaction(client: LineClient, rcpts: string[]): Promise<string[]> {
  const replies: string[] = [];
  client.send('MAIL FROM:<alice@sender.test>');
  replies.push((await client.smtpReply()).text);
  for (const rcpt of rcpts) {
    client.send(`RCPT TO:<${rcpt}>`);
    replies.push((await client.smtpReply()).text);
  }
  return replies;
}

async function data(client: LineClient): Promise<void> {
  client.send('DATA');
  expect((await client.smtpReply()).code).toBe(354);
  client.write('Message-ID: <m1@sender.test>\r\nSubject: hi\r\n\r\nhello\r\n.\r\n');
}

describe('SMTP fault rules at a LabSmtpServer', () => {
  it('a 421 at the second RCPT answers it, closes the connection, and the event names stage, rule and hop', async () => {
    const mx = await start([{ id: 'carol-421', stage: 'rcpt', match: { recipient: 'carol@receiver.test' }, action: { kind: 'reply', code: 421, enhancedCode: '4.7.0', text: 'try later' } }]);
    const client = await session(mx.port);
    const replies = await transaction(client, ['bob@receiver.test', 'carol@receiver.test']);
    expect(replies).toEqual(['250 Accepted', '250 Accepted', '421 4.7.0 try later']);
    await client.waitClosed();
    expect(mx.fired).toEqual([
      expect.objectContaining({ source: 'smtp', rule: 'carol-421', action: 'reply', stage: 'rcpt', effect: '421 4.7.0 try later', client: '127.0.0.1', sender: 'alice@sender.test', recipients: ['carol@receiver.test'], hop: `mta.sender.test -> mx.receiver.test[127.0.0.1]:${mx.port}` }),
    ]);
  });

  it('a 450 at RCPT leaves the session open; the refused recipient is not in the transaction', async () => {
    const mx = await start([{ id: 'bob-450', stage: 'rcpt', match: { recipient: 'bob@receiver.test' }, action: { kind: 'reply', code: 450, enhancedCode: '4.2.0' } }]);
    const client = await session(mx.port);
    expect(await transaction(client, ['bob@receiver.test', 'carol@receiver.test'])).toEqual(['250 Accepted', '450 4.2.0 fault injected by maillab (rule bob-450)', '250 Accepted']);
    await data(client);
    expect((await client.smtpReply()).text).toBe('250 queued');
    expect(mx.processed).toEqual(['carol@receiver.test']);
    client.close();
  });

  it('drop before the reply at end-of-data: the message was processed, the client never hears 250', async () => {
    const mx = await start([{ id: 'lost-250', stage: 'end-of-data', times: 1, action: { kind: 'drop', when: 'before-reply' } }]);
    const client = await session(mx.port);
    await transaction(client, ['bob@receiver.test']);
    await data(client);
    await expect(client.smtpReply()).rejects.toThrow(/closed/);
    expect(mx.processed).toEqual(['bob@receiver.test']);
    expect(mx.fired[0]).toMatchObject({ rule: 'lost-250', stage: 'end-of-data', effect: 'connection closed before the reply', recipients: ['bob@receiver.test'] });
  });

  it('a reply at end-of-data: nothing is processed, the client gets the rule’s reply; spent, the next message passes', async () => {
    const mx = await start([{ id: 'eod-451', stage: 'end-of-data', times: 1, action: { kind: 'reply', code: 451, enhancedCode: '4.3.0', text: 'disk full' } }]);
    const client = await session(mx.port);
    await transaction(client, ['bob@receiver.test']);
    await data(client);
    expect((await client.smtpReply()).text).toBe('451 4.3.0 disk full');
    expect(mx.processed).toEqual([]);
    await transaction(client, ['bob@receiver.test']);
    await data(client);
    expect((await client.smtpReply()).text).toBe('250 queued');
    expect(mx.processed).toEqual(['bob@receiver.test']);
    client.close();
  });

  it('LMTP: a reply at end-of-data answers every recipient once (RFC 2033 §4.2), with one enhanced code', async () => {
    const box = await start([{ id: 'lmtp-452', stage: 'end-of-data', match: { recipient: 'carol@receiver.test' }, action: { kind: 'reply', code: 452, enhancedCode: '4.2.2', text: 'mailbox full' } }], { lmtp: true });
    const client = await session(box.port, true);
    await transaction(client, ['bob@receiver.test', 'carol@receiver.test']);
    await data(client);
    expect((await client.smtpReply()).text).toBe('452 4.2.2 mailbox full');
    expect((await client.smtpReply()).text).toBe('452 4.2.2 mailbox full');
    expect(box.processed).toEqual([]);
    client.close();
  });

  it('a delay at DATA holds the 354; drop after the reply at MAIL answers, then closes', async () => {
    const mx = await start([
      { id: 'slow-data', stage: 'data', action: { kind: 'delay', ms: 300 } },
      { id: 'bye', stage: 'mail', match: { sender: 'mallory@evil.test' }, action: { kind: 'drop', when: 'after-reply' } },
    ]);
    const client = await session(mx.port);
    await transaction(client, ['bob@receiver.test']);
    const began = Date.now();
    client.send('DATA');
    expect((await client.smtpReply()).code).toBe(354);
    expect(Date.now() - began).toBeGreaterThanOrEqual(280);
    client.write('Subject: x\r\n\r\nx\r\n.\r\n');
    expect((await client.smtpReply()).code).toBe(250);
    client.send('MAIL FROM:<mallory@evil.test>');
    expect((await client.smtpReply()).code).toBe(250);
    await client.waitClosed();
    expect(mx.fired.map((f) => f.rule)).toEqual(['slow-data', 'bye']);
  });

  it('a 554 in place of the greeting, and the connection closed', async () => {
    const mx = await start([{ id: 'no-service', stage: 'greeting', match: { client: '127.0.0.1' }, action: { kind: 'reply', code: 554, enhancedCode: '5.3.2', text: 'no service' } }]);
    const client = await LineClient.connect({ host: '127.0.0.1', port: mx.port }, { timeoutMs: 3000 });
    expect((await client.smtpReply()).text).toBe('554 5.3.2 no service');
    await client.waitClosed();
  });

  it('a drop at connect closes the connection before any greeting; a delay at the greeting holds the 220', async () => {
    const mx = await start([
      { id: 'gone', stage: 'connect', times: 1, action: { kind: 'drop', when: 'before-reply' } },
      { id: 'slow-220', stage: 'greeting', action: { kind: 'delay', ms: 300 } },
    ]);
    const dropped = await LineClient.connect({ host: '127.0.0.1', port: mx.port }, { timeoutMs: 3000 });
    await expect(dropped.smtpReply()).rejects.toThrow(/closed/);
    const began = Date.now();
    const slow = await LineClient.connect({ host: '127.0.0.1', port: mx.port }, { timeoutMs: 3000 });
    expect((await slow.smtpReply()).code).toBe(220);
    expect(Date.now() - began).toBeGreaterThanOrEqual(280);
    slow.close();
    expect(mx.fired.map((f) => `${f.rule} ${f.stage} ${f.effect}`)).toEqual(['gone connect connection closed before the reply', 'slow-220 greeting reply delayed 300 ms']);
  });
});

const PLAIN = (user: string, password: string) => Buffer.from(`\0${user}\0${password}`).toString('base64');

describe('SMTP fault rules at the other commands: EHLO, STARTTLS, AUTH, QUIT', () => {
  it('ehlo: the rule’s reply instead of the 250, nothing greeted (MAIL gets 503); spent, EHLO is answered again', async () => {
    const mx = await start([{ id: 'no-hello', stage: 'ehlo', times: 1, action: { kind: 'reply', code: 554, enhancedCode: '5.7.1', text: 'no hello for you' } }]);
    const client = await LineClient.connect({ host: '127.0.0.1', port: mx.port }, { timeoutMs: 3000 });
    expect((await client.smtpReply()).code).toBe(220);
    client.send('EHLO mta.sender.test');
    expect((await client.smtpReply()).text).toBe('554 5.7.1 no hello for you');
    // EHLO did not run: the session has no client name yet (RFC 5321 §4.1.4), and stays open.
    client.send('MAIL FROM:<alice@sender.test>');
    expect((await client.smtpReply()).code).toBe(503);
    client.send('EHLO mta.sender.test');
    const hello = await client.smtpReply();
    expect(hello.code).toBe(250);
    expect(hello.lines[0]).toMatch(/^250-mx\.receiver\.test/);
    expect(mx.fired).toEqual([{ source: 'smtp', rule: 'no-hello', action: 'reply', stage: 'ehlo', effect: '554 5.7.1 no hello for you', client: '127.0.0.1', hop: `[127.0.0.1] -> mx.receiver.test[127.0.0.1]:${mx.port}` }]);
    client.close();
  });

  it('ehlo: a 421 at LHLO closes the LMTP session; a delay holds the 250', async () => {
    const box = await start([{ id: 'lhlo-421', stage: 'ehlo', times: 1, action: { kind: 'reply', code: 421, enhancedCode: '4.3.2', text: 'shutting down' } }, { id: 'slow-lhlo', stage: 'ehlo', action: { kind: 'delay', ms: 300 } }], { lmtp: true });
    const refused = await LineClient.connect({ host: '127.0.0.1', port: box.port }, { timeoutMs: 3000 });
    expect((await refused.smtpReply()).code).toBe(220);
    refused.send('LHLO mx.receiver.test');
    expect((await refused.smtpReply()).text).toBe('421 4.3.2 shutting down');
    await refused.waitClosed();
    const began = Date.now();
    const slow = await session(box.port, true);
    expect(Date.now() - began).toBeGreaterThanOrEqual(280);
    slow.close();
    expect(box.fired.map((f) => `${f.rule} ${f.stage} ${f.effect}`)).toEqual(['lhlo-421 ehlo 421 4.3.2 shutting down', 'slow-lhlo ehlo reply delayed 300 ms']);
  });

  it('starttls: a 454 instead of the 220 starts no TLS: the session goes on in plaintext; spent, STARTTLS upgrades', async () => {
    const pki = await testPki();
    const mx = await start([{ id: 'no-tls', stage: 'starttls', times: 1, action: { kind: 'reply', code: 454, enhancedCode: '4.7.0', text: 'TLS not available due to temporary reason' } }], { tls: pki.tls });
    const client = await session(mx.port);
    client.send('STARTTLS');
    expect((await client.smtpReply()).text).toBe('454 4.7.0 TLS not available due to temporary reason');
    // Still plaintext (RFC 3207 §4: after a refusal the client may go on without TLS): a plaintext EHLO is answered,
    // and STARTTLS is still offered. Had the server begun a handshake, it would discard this line unanswered.
    client.send('EHLO mta.sender.test');
    const hello = await client.smtpReply();
    expect(hello.code).toBe(250);
    expect(hello.lines.some((l) => /STARTTLS/.test(l))).toBe(true);
    client.send('STARTTLS');
    expect((await client.smtpReply()).code).toBe(220);
    const secure = await client.startTls({ ca: pki.ca, servername: 'localhost' });
    secure.send('EHLO mta.sender.test');
    const after = await secure.smtpReply();
    expect(after.code).toBe(250);
    expect(after.lines.some((l) => /STARTTLS/.test(l))).toBe(false);
    secure.close();
    expect(mx.fired).toEqual([expect.objectContaining({ rule: 'no-tls', stage: 'starttls', action: 'reply', effect: '454 4.7.0 TLS not available due to temporary reason', hop: `mta.sender.test -> mx.receiver.test[127.0.0.1]:${mx.port}` })]);
  });

  it('starttls: a drop before the reply closes the connection with no 220 and no handshake', async () => {
    const pki = await testPki();
    const mx = await start([{ id: 'tls-gone', stage: 'starttls', action: { kind: 'drop', when: 'before-reply' } }], { tls: pki.tls });
    const client = await session(mx.port);
    client.send('STARTTLS');
    await expect(client.smtpReply()).rejects.toThrow(/closed/);
    expect(mx.fired.map((f) => `${f.rule} ${f.stage} ${f.effect}`)).toEqual(['tls-gone starttls connection closed before the reply']);
  });

  it('starttls: a drop after the reply sends the 220, then closes with no handshake; the server stays up', async () => {
    const pki = await testPki();
    const mx = await start([{ id: 'tls-bye', stage: 'starttls', times: 1, action: { kind: 'drop', when: 'after-reply' } }], { tls: pki.tls });
    const client = await session(mx.port);
    client.send('STARTTLS');
    expect((await client.smtpReply()).text).toBe('220 Ready to start TLS');
    await client.waitClosed();
    expect(mx.fired.map((f) => `${f.rule} ${f.stage} ${f.effect}`)).toEqual(['tls-bye starttls connection closed after the reply']);
    // The next session is served (and can upgrade: the rule is spent).
    const next = await session(mx.port);
    next.send('STARTTLS');
    expect((await next.smtpReply()).code).toBe(220);
    const secure = await next.startTls({ ca: pki.ca, servername: 'localhost' });
    secure.send('NOOP');
    expect((await secure.smtpReply()).code).toBe(250);
    secure.close();
  });

  it('auth: a drop before the reply closes the connection; the credentials were never checked', async () => {
    const logins: string[] = [];
    const mx = await start([{ id: 'auth-gone', stage: 'auth', action: { kind: 'drop', when: 'before-reply' } }], { logins });
    const client = await session(mx.port);
    client.send(`AUTH PLAIN ${PLAIN('alice@sender.test', 'secret')}`);
    await expect(client.smtpReply()).rejects.toThrow(/closed/);
    expect(logins).toEqual([]);
    expect(mx.fired).toEqual([expect.objectContaining({ rule: 'auth-gone', action: 'drop', stage: 'auth', effect: 'connection closed before the reply' })]);
  });

  it('auth: a 454 (RFC 4954 §6) leaves the session unauthenticated; spent, the same AUTH succeeds', async () => {
    const logins: string[] = [];
    const mx = await start([{ id: 'auth-454', stage: 'auth', times: 1, action: { kind: 'reply', code: 454, enhancedCode: '4.7.0', text: 'temporary authentication failure' } }], { logins });
    const client = await session(mx.port);
    client.send(`AUTH PLAIN ${PLAIN('alice@sender.test', 'secret')}`);
    expect((await client.smtpReply()).text).toBe('454 4.7.0 temporary authentication failure');
    expect(logins).toEqual([]);
    client.send(`AUTH PLAIN ${PLAIN('alice@sender.test', 'secret')}`);
    expect((await client.smtpReply()).code).toBe(235);
    expect(logins).toEqual(['alice@sender.test']);
    client.close();
  });

  it('auth: a drop after the reply closes after the final 235, not after the 334 challenge', async () => {
    const logins: string[] = [];
    const mx = await start([{ id: 'auth-bye', stage: 'auth', action: { kind: 'drop', when: 'after-reply' } }], { logins });
    const client = await session(mx.port);
    client.send('AUTH PLAIN');
    expect((await client.smtpReply()).code).toBe(334);
    client.send(PLAIN('alice@sender.test', 'secret'));
    expect((await client.smtpReply()).code).toBe(235);
    await client.waitClosed();
    expect(logins).toEqual(['alice@sender.test']);
    expect(mx.fired.map((f) => `${f.rule} ${f.stage} ${f.effect}`)).toEqual(['auth-bye auth connection closed after the reply']);
  });

  it('quit: the rule’s reply instead of the 221, and the connection still closed (RFC 5321 §4.1.1.10)', async () => {
    const mx = await start([{ id: 'bad-quit', stage: 'quit', action: { kind: 'reply', code: 554, enhancedCode: '5.3.0', text: 'quit refused' } }]);
    const client = await session(mx.port);
    client.send('QUIT');
    expect((await client.smtpReply()).text).toBe('554 5.3.0 quit refused');
    await client.waitClosed();
    expect(mx.fired).toEqual([expect.objectContaining({ rule: 'bad-quit', action: 'reply', stage: 'quit', effect: '554 5.3.0 quit refused', hop: `mta.sender.test -> mx.receiver.test[127.0.0.1]:${mx.port}` })]);
  });

  it('quit: a drop before the reply loses the 221; a delay holds it', async () => {
    const mx = await start([
      { id: 'no-221', stage: 'quit', times: 1, action: { kind: 'drop', when: 'before-reply' } },
      { id: 'slow-221', stage: 'quit', action: { kind: 'delay', ms: 300 } },
    ]);
    const dropped = await session(mx.port);
    dropped.send('QUIT');
    await expect(dropped.smtpReply()).rejects.toThrow(/closed/);
    const slow = await session(mx.port);
    const began = Date.now();
    slow.send('QUIT');
    expect((await slow.smtpReply()).code).toBe(221);
    expect(Date.now() - began).toBeGreaterThanOrEqual(280);
    await slow.waitClosed();
    expect(mx.fired.map((f) => `${f.rule} ${f.stage} ${f.effect}`)).toEqual(['no-221 quit connection closed before the reply', 'slow-221 quit reply delayed 300 ms']);
  });

  it('probability on a socket: the lab’s seed decides which sessions get the fault; the same seed the same ones, another seed others', async () => {
    const rule: SmtpFaultRule = { id: 'flaky-ehlo', stage: 'ehlo', probability: 0.5, action: { kind: 'reply', code: 421, enhancedCode: '4.3.0', text: 'flaky' } };
    const run = async (seed: number) => {
      const mx = await start([rule], { seed });
      let seen = '';
      for (let i = 0; i < 24; i++) {
        const client = await LineClient.connect({ host: '127.0.0.1', port: mx.port }, { timeoutMs: 3000 });
        expect((await client.smtpReply()).code).toBe(220);
        client.send('EHLO mta.sender.test');
        const reply = await client.smtpReply();
        if (reply.code === 421) {
          expect(reply.text).toBe('421 4.3.0 flaky');
          await client.waitClosed();
          seen += '1';
        } else {
          expect(reply.code).toBe(250);
          client.close();
          seen += '0';
        }
      }
      // Every session that got the fault has its event, and no other.
      expect(mx.fired.length).toBe([...seen].filter((c) => c === '1').length);
      expect(mx.fired.every((f) => f.rule === 'flaky-ehlo' && f.stage === 'ehlo' && f.effect === '421 4.3.0 flaky')).toBe(true);
      return seen;
    };
    const first = await run(42);
    expect(first).toMatch(/1/);
    expect(first).toMatch(/0/);
    expect(await run(42)).toBe(first);
    expect(await run(43)).not.toBe(first);
  });
});

describe('the client (SmtpClientPool) under these faults', () => {
  it('gives up on a slow end-of-data reply after dataTimeoutMs, naming the stage; other commands keep the socket timeout', async () => {
    const mx = await start([
      { id: 'slow-eod', stage: 'end-of-data', match: { sender: 'slow@sender.test' }, action: { kind: 'delay', ms: 3000 } },
      { id: 'slow-mail', stage: 'mail', match: { sender: 'patient@sender.test' }, action: { kind: 'delay', ms: 600 } },
    ]);
    const pool = new SmtpClientPool({ ehloName: 'mta.sender.test', connectTimeoutMs: 1000, idleMs: 5000, socketTimeoutMs: 5000, dataTimeoutMs: 300 });
    const target = { host: '127.0.0.1', port: mx.port };
    const message = Buffer.from('Subject: slow\r\n\r\nslow\r\n');
    const send = (from: string) => pool.send(target, { from, to: ['bob@receiver.test'] }, message);
    expect((await send('alice@sender.test')).accepted).toEqual(['bob@receiver.test']);
    // On the same session, after a data phase: a 600 ms MAIL reply is over the data timeout but within the socket
    // timeout, which applies again once the data was answered.
    const patient = await send('patient@sender.test');
    expect(patient).toMatchObject({ reused: true, accepted: ['bob@receiver.test'] });
    const began = Date.now();
    const err = await send('slow@sender.test').catch((e: unknown) => e);
    expect(err).toBeInstanceOf(SmtpClientError);
    expect(err).toMatchObject({ stage: 'data', command: 'end of data', temporary: true });
    expect((err as Error).message).toMatch(/timed out waiting for the server during end of data/);
    // Given up after the data timeout, long before the 3 s reply.
    expect(Date.now() - began).toBeLessThan(1500);
    pool.close();
  });
});
