// Tests of the shared outbound client (src/shared/smtp-client.ts) against small smtp-server instances.
import type { SMTPServer, SMTPServerOptions, SMTPServerSession } from 'smtp-server';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { associationData } from './dane.js';
import { has8BitOctets, needsSmtpUtf8, parseReply, SmtpClientError, SmtpClientPool } from './smtp-client.js';
import { createSmtpServer, listen, smtpTlsOptions } from './smtp-server.js';
import { testPki } from './tls.test-helper.js';

const host = `127.0.${Math.floor(Math.random() * 200) + 20}.${Math.floor(Math.random() * 200) + 20}`;

interface TestServer {
  port: number;
  connections: number;
  messages: { from: string; to: string[]; data: string; session: string }[];
  /** Resolves once `count` sessions have ended on the server side; fails after 5 s. */
  closed(count: number): Promise<void>;
  close(): Promise<void>;
}

const cleanup: (() => Promise<void> | void)[] = [];
afterEach(async () => {
  vi.useRealTimers();
  while (cleanup.length) await cleanup.pop()!();
});

type Handlers = Pick<SMTPServerOptions, 'onConnect' | 'onMailFrom' | 'onRcptTo'> & {
  data?: (session: SMTPServerSession, body: string) => Error | string | (string | Error)[] | undefined;
};

function refusal(code: number, text: string): Error {
  return Object.assign(new Error(text), { responseCode: code });
}

async function startServer(handlers: Handlers = {}, options: Partial<SMTPServerOptions> = {}): Promise<TestServer> {
  let closes = 0;
  const closeWaiters = new Set<() => void>();
  const state: TestServer = {
    port: 0,
    connections: 0,
    messages: [],
    closed: (count) =>
      new Promise<void>((resolve, reject) => {
        const check = () => {
          if (closes < count) return;
          clearTimeout(timer);
          closeWaiters.delete(check);
          resolve();
        };
        const timer = setTimeout(() => {
          closeWaiters.delete(check);
          reject(new Error(`the server saw ${closes} session(s) end, not ${count}, within 5 s`));
        }, 5000);
        closeWaiters.add(check);
        check();
      }),
    close: async () => undefined,
  };
  const server: SMTPServer = createSmtpServer({
    greetingDelayMs: 0,
    name: 'mx.test',
    authOptional: true,
    disabledCommands: ['AUTH', 'STARTTLS'],
    hideSTARTTLS: true,
    logger: false,
    closeTimeout: 100,
    ...options,
    onConnect(session, callback) {
      state.connections++;
      if (handlers.onConnect) return handlers.onConnect(session, callback);
      callback();
    },
    onClose() {
      closes++;
      for (const check of [...closeWaiters]) check();
    },
    ...(handlers.onMailFrom ? { onMailFrom: handlers.onMailFrom } : {}),
    ...(handlers.onRcptTo ? { onRcptTo: handlers.onRcptTo } : {}),
    onData(stream, session, callback) {
      const chunks: Buffer[] = [];
      stream.on('data', (c: Buffer) => chunks.push(c));
      stream.on('end', () => {
        const body = Buffer.concat(chunks).toString('utf8');
        const verdict = handlers.data?.(session, body);
        if (verdict instanceof Error) return callback(verdict);
        state.messages.push({ from: session.envelope.mailFrom ? session.envelope.mailFrom.address : '', to: session.envelope.rcptTo.map((r) => r.address), data: body, session: session.id });
        callback(null, verdict as string);
      });
    },
  });
  server.on('error', () => undefined);
  await listen(server, host, 0, 'test smtp');
  const address = server.server.address();
  state.port = typeof address === 'object' && address ? address.port : 0;
  state.close = () => new Promise<void>((resolve) => server.close(() => resolve()));
  cleanup.push(state.close);
  return state;
}

function pool(options: Partial<ConstructorParameters<typeof SmtpClientPool>[0]> = {}): SmtpClientPool {
  const p = new SmtpClientPool({ ehloName: 'mta.sender.test', connectTimeoutMs: 1000, idleMs: 5000, ...options });
  cleanup.push(() => p.close());
  return p;
}

const message = (n = 1) => Buffer.from(`From: a@sender.test\r\nTo: b@receiver.test\r\nSubject: test ${n}\r\n\r\n.leading dot\r\nbody ${n}\r\n`);

describe('SmtpClientPool', () => {
  it('sends a message and reports each recipient', async () => {
    const server = await startServer({
      onRcptTo(address, _session, callback) {
        if (address.address.startsWith('nobody')) return callback(refusal(550, '5.1.1 <nobody@receiver.test>: no such user'));
        callback();
      },
      data: () => '2.0.0 Ok: queued as X1',
    });
    const client = pool();
    const result = await client.send({ host, port: server.port, servername: 'mx.test' }, { from: 'a@sender.test', to: ['b@receiver.test', 'nobody@receiver.test', 'b@receiver.test'] }, message());
    expect(result.target).toBe(`mx.test[${host}]:${server.port}`);
    expect(result.stage).toBe('data');
    expect(result.accepted).toEqual(['b@receiver.test']);
    expect(result.rejected).toEqual(['nobody@receiver.test']);
    expect(result.recipients).toEqual([
      { address: 'b@receiver.test', accepted: true, code: 250, enhanced: '2.0.0', reply: '250 2.0.0 Ok: queued as X1', stage: 'data', command: 'DATA' },
      { address: 'nobody@receiver.test', accepted: false, code: 550, enhanced: '5.1.1', reply: '550 5.1.1 <nobody@receiver.test>: no such user', stage: 'rcpt', command: 'RCPT TO:<nobody@receiver.test>' },
    ]);
    expect(server.messages).toHaveLength(1);
    expect(server.messages[0]!.data).toContain('\r\n.leading dot\r\n'); // dot-stuffed on the wire, unstuffed by the server
  });

  it('reuses one connection for consecutive transactions to the same target', async () => {
    const server = await startServer();
    const client = pool();
    const target = { host, port: server.port };
    const results = [];
    for (let i = 1; i <= 4; i++) results.push(await client.send(target, { from: 'a@sender.test', to: ['b@receiver.test'] }, message(i)));
    expect(results.map((r) => r.reused)).toEqual([false, true, true, true]);
    expect(server.connections).toBe(1);
    expect(new Set(server.messages.map((m) => m.session)).size).toBe(1);
    expect(server.messages.map((m) => m.data.match(/body (\d)/)?.[1])).toEqual(['1', '2', '3', '4']);
    expect(client.stats()).toMatchObject({ opened: 1, reused: 3, idle: 1, busy: 0 });
  });

  it('opens parallel connections for concurrent transactions, then keeps them', async () => {
    const server = await startServer();
    const client = pool();
    const target = { host, port: server.port };
    await Promise.all([1, 2, 3].map((i) => client.send(target, { from: 'a@sender.test', to: ['b@receiver.test'] }, message(i))));
    expect(server.connections).toBe(3);
    expect(client.stats().idle).toBe(3);
    await Promise.all([4, 5, 6].map((i) => client.send(target, { from: 'a@sender.test', to: ['b@receiver.test'] }, message(i))));
    expect(server.connections).toBe(3);
  });

  it('closes idle connections after idleMs, not before', async () => {
    // Only timers are faked (sockets stay real): the pool's idle timer runs when the test says so.
    vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout'] });
    const server = await startServer();
    const client = pool({ idleMs: 5000 });
    const target = { host, port: server.port };
    await client.send(target, { from: 'a@sender.test', to: ['b@receiver.test'] }, message());
    expect(client.stats().idle).toBe(1);
    vi.advanceTimersByTime(4999);
    expect(client.stats()).toMatchObject({ idle: 1, busy: 0 });
    vi.advanceTimersByTime(1);
    expect(client.stats()).toMatchObject({ idle: 0, busy: 0 });
    vi.useRealTimers();
    // The pool said goodbye: the server sees the session end.
    await server.closed(1);
    const again = await client.send(target, { from: 'a@sender.test', to: ['b@receiver.test'] }, message());
    expect(again.reused).toBe(false);
    expect(server.connections).toBe(2);
  });

  it('keeps no idle session with idleMs 0, and no more than maxIdlePerTarget', async () => {
    const server = await startServer();
    const none = pool({ idleMs: 0 });
    const target = { host, port: server.port };
    await none.send(target, { from: 'a@sender.test', to: ['b@receiver.test'] }, message());
    expect(none.stats().idle).toBe(0);
    await server.closed(1);
    const two = pool({ maxIdlePerTarget: 2 });
    await Promise.all([1, 2, 3].map((i) => two.send(target, { from: 'a@sender.test', to: ['b@receiver.test'] }, message(i))));
    expect(two.stats()).toMatchObject({ opened: 3, idle: 2, busy: 0 });
    await server.closed(2);
  });

  it('drops a cached connection the server closed, and connects afresh', async () => {
    const server = await startServer({}, { socketTimeout: 100 });
    const client = pool();
    const target = { host, port: server.port };
    await client.send(target, { from: 'a@sender.test', to: ['b@receiver.test'] }, message(1));
    // The server times the idle session out; the pool notices the end of the connection and drops it.
    await server.closed(1);
    await vi.waitFor(() => expect(client.stats().idle).toBe(0), { timeout: 5000 });
    const result = await client.send(target, { from: 'a@sender.test', to: ['b@receiver.test'] }, message(2));
    expect(result.reused).toBe(false);
    expect(server.connections).toBe(2);
    expect(server.messages).toHaveLength(2);
  });

  it('retries once on a fresh connection when a cached one fails before the data', async () => {
    let transactions = 0;
    const server = await startServer({
      onMailFrom(_address, session, callback) {
        transactions++;
        // The server gives up on reused sessions (like one that restarted meanwhile).
        if (session.transaction > 1) return callback(refusal(421, '4.3.2 shutting down'));
        callback();
      },
    });
    const client = pool();
    const target = { host, port: server.port };
    await client.send(target, { from: 'a@sender.test', to: ['b@receiver.test'] }, message(1));
    const second = await client.send(target, { from: 'a@sender.test', to: ['b@receiver.test'] }, message(2));
    expect(second.retried).toBe(true);
    expect(second.accepted).toEqual(['b@receiver.test']);
    expect(server.connections).toBe(2);
    expect(transactions).toBe(3);
    expect(server.messages).toHaveLength(2);
    expect(client.stats().staleRetries).toBe(1);
  });

  it('reports a refused MAIL FROM as an SmtpClientError, and keeps the session (RSET)', async () => {
    const server = await startServer({
      onMailFrom(address, _session, callback) {
        if (address.address === 'spammer@bad.test') return callback(refusal(553, '5.7.1 <spammer@bad.test>: sender rejected'));
        callback();
      },
    });
    const client = pool();
    const target = { host, port: server.port, servername: 'mx.test' };
    const err = await client.send(target, { from: 'spammer@bad.test', to: ['b@receiver.test'] }, message()).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(SmtpClientError);
    expect(err).toMatchObject({ stage: 'mail', code: 553, enhanced: '5.7.1', temporary: false, command: 'MAIL FROM:<spammer@bad.test>', reply: '553 5.7.1 <spammer@bad.test>: sender rejected' });
    expect((err as Error).message).toBe(`mx.test[${host}]:${server.port}: MAIL FROM:<spammer@bad.test> refused: 553 5.7.1 <spammer@bad.test>: sender rejected`);
    const ok = await client.send(target, { from: 'a@sender.test', to: ['b@receiver.test'] }, message());
    expect(ok.reused).toBe(true);
    expect(server.connections).toBe(1);
  });

  it('returns per-recipient results when every recipient is refused, and when the data is refused', async () => {
    const server = await startServer({
      onRcptTo(address, _session, callback) {
        if (address.address.startsWith('full')) return callback(refusal(452, '4.2.2 mailbox full'));
        if (address.address.startsWith('nobody')) return callback(refusal(550, '5.1.1 no such user'));
        callback();
      },
      data: (_session, body) => (body.includes('virus') ? refusal(554, '5.7.1 message content rejected') : undefined),
    });
    const client = pool();
    const target = { host, port: server.port };
    const none = await client.send(target, { from: 'a@sender.test', to: ['full@receiver.test', 'nobody@receiver.test'] }, message());
    expect(none.stage).toBe('rcpt');
    expect(none.recipients.map((r) => [r.address, r.accepted, r.code, r.enhanced, r.stage])).toEqual([
      ['full@receiver.test', false, 452, '4.2.2', 'rcpt'],
      ['nobody@receiver.test', false, 550, '5.1.1', 'rcpt'],
    ]);
    const refused = await client.send(target, { from: 'a@sender.test', to: ['b@receiver.test', 'nobody@receiver.test'] }, Buffer.from('Subject: virus\r\n\r\nvirus\r\n'));
    expect(refused.stage).toBe('data');
    expect(refused.dataReply).toBe('554 5.7.1 message content rejected');
    expect(refused.recipients.map((r) => [r.address, r.accepted, r.code, r.stage, r.command])).toEqual([
      ['b@receiver.test', false, 554, 'data', 'DATA'],
      ['nobody@receiver.test', false, 550, 'rcpt', 'RCPT TO:<nobody@receiver.test>'],
    ]);
    const ok = await client.send(target, { from: '', to: ['b@receiver.test'] }, message());
    expect(ok.accepted).toEqual(['b@receiver.test']);
    expect(server.messages.at(-1)!.from).toBe('');
    expect(server.connections).toBe(1);
  });

  it('fails with stage connect when nothing listens, naming the target', async () => {
    const server = await startServer();
    await server.close();
    const client = pool();
    const err = (await client.send({ host, port: server.port, servername: 'mx.down.test' }, { from: 'a@sender.test', to: ['b@receiver.test'] }, message()).catch((e: unknown) => e)) as SmtpClientError;
    expect(err).toBeInstanceOf(SmtpClientError);
    expect(err).toMatchObject({ stage: 'connect', temporary: true, errno: 'ECONNREFUSED', command: 'connect' });
    expect(err.code).toBeUndefined();
    expect(err.message).toBe(`mx.down.test[${host}]:${server.port}: cannot connect: connection refused (ECONNREFUSED)`);
  });

  it('fails with stage greeting when the server refuses the session', async () => {
    const server = await startServer({ onConnect: (_session, callback) => callback(refusal(421, '4.3.2 too busy, come back later')) });
    const client = pool();
    const err = (await client.send({ host, port: server.port }, { from: 'a@sender.test', to: ['b@receiver.test'] }, message()).catch((e: unknown) => e)) as SmtpClientError;
    expect(err).toMatchObject({ stage: 'greeting', code: 421, enhanced: '4.3.2', temporary: true });
    expect(err.message).toContain(`${host}:${server.port}`);
    expect(err.message).toContain('421 4.3.2 too busy');
  });

  it('speaks LMTP with one reply per recipient after the data', async () => {
    const server = await startServer(
      {
        onRcptTo(address, _session, callback) {
          if (address.address.startsWith('ghost')) return callback(refusal(550, '5.1.1 no such mailbox'));
          callback();
        },
        data: (session) => session.envelope.rcptTo.map((r) => (r.address.startsWith('full') ? refusal(452, '4.2.2 over quota') : `2.0.0 <${r.address}> delivered`)),
      },
      { lmtp: true },
    );
    const client = pool({ lmtp: true });
    const target = { host, port: server.port };
    const result = await client.send(target, { from: 'a@sender.test', to: ['b@local.test', 'full@local.test', 'ghost@local.test', 'c@local.test'] }, message());
    expect(result.stage).toBe('lmtp');
    expect(result.recipients.map((r) => [r.address, r.accepted, r.code, r.stage])).toEqual([
      ['b@local.test', true, 250, 'lmtp'],
      ['full@local.test', false, 452, 'lmtp'],
      ['ghost@local.test', false, 550, 'rcpt'],
      ['c@local.test', true, 250, 'lmtp'],
    ]);
    const again = await client.send(target, { from: 'a@sender.test', to: ['b@local.test'] }, message());
    expect(again.reused).toBe(true);
    expect(server.connections).toBe(1);
  });
});

describe('SmtpClientPool: TLS required by the target (encrypt, verify)', () => {
  /** A server with STARTTLS and a certificate from the test CA naming `localhost`. */
  const tlsServer = async () => {
    const pki = await testPki();
    return { pki, server: await startServer({}, { disabledCommands: ['AUTH'], hideSTARTTLS: false, ...smtpTlsOptions(pki.tls) }) };
  };
  const tlsRequiredOf = async (promise: Promise<unknown>) => {
    const err = await promise.then(() => undefined, (e: unknown) => e);
    expect(err).toBeInstanceOf(SmtpClientError);
    return err as SmtpClientError;
  };

  it('verify: sends over TLS when the certificate chains to the CA and names the server', async () => {
    const { pki, server } = await tlsServer();
    const result = await pool({ ca: pki.ca }).send({ host, port: server.port, servername: 'localhost', tls: 'verify' }, { from: 'a@sender.test', to: ['b@receiver.test'] }, message());
    expect(result.tls).toEqual({ version: expect.stringMatching(/^TLSv1\.[23]$/), cipher: expect.any(String) });
    expect(server.messages).toHaveLength(1);
  });

  it('verify: refuses, before MAIL FROM, a certificate for another name or from an unknown CA; encrypt takes either', async () => {
    const { pki, server } = await tlsServer();
    const envelope = { from: 'a@sender.test', to: ['b@receiver.test'] };
    const wrongName = await tlsRequiredOf(pool({ ca: pki.ca }).send({ host, port: server.port, servername: 'mx.receiver.test', tls: 'verify' }, envelope, message()));
    expect(wrongName).toMatchObject({ stage: 'ehlo', temporary: true, tlsRequired: { policy: 'verify', problem: 'certificate', code: 'ERR_TLS_CERT_ALTNAME_INVALID' } });
    expect(wrongName.tlsRequired!.reason).toMatch(/^the certificate of mx\.receiver\.test failed verification: .*mx\.receiver\.test/);
    const unknownCa = await tlsRequiredOf(pool().send({ host, port: server.port, servername: 'localhost', tls: 'verify' }, envelope, message()));
    expect(unknownCa.tlsRequired).toMatchObject({ problem: 'certificate', code: expect.stringMatching(/ISSUER|SELF_SIGNED|UNABLE_TO_VERIFY/) });
    expect(server.messages).toHaveLength(0);
    await pool().send({ host, port: server.port, servername: 'mx.receiver.test', tls: 'encrypt' }, envelope, message());
    expect(server.messages).toHaveLength(1);
  });

  it('encrypt: refuses a server that does not offer STARTTLS; may sends in plaintext', async () => {
    const server = await startServer();
    const envelope = { from: 'a@sender.test', to: ['b@receiver.test'] };
    const err = await tlsRequiredOf(pool().send({ host, port: server.port, servername: 'mx.test', tls: 'encrypt' }, envelope, message()));
    expect(err).toMatchObject({ stage: 'ehlo', command: 'EHLO', tlsRequired: { policy: 'encrypt', problem: 'no-starttls', reason: 'the server did not offer STARTTLS' } });
    expect(err.message).toBe(`mx.test[${host}]:${server.port}: TLS required (policy encrypt), but the server did not offer STARTTLS (ETLSREQUIRED)`);
    expect(server.messages).toHaveLength(0);
    const sent = await pool().send({ host, port: server.port, servername: 'mx.test', tls: 'may' }, envelope, message());
    expect(sent.tls).toBeNull();
    expect(server.messages).toHaveLength(1);
  });
});

describe('SmtpClientPool: DANE (RFC 7672) and the verify audit', () => {
  /** A server with STARTTLS sending its leaf and the test CA (a DANE-TA anchor must be sent by the server). */
  const daneServer = async () => {
    const pki = await testPki();
    return { pki, server: await startServer({}, { disabledCommands: ['AUTH'], hideSTARTTLS: false, ...smtpTlsOptions({ ...pki.tls, cert: `${pki.tls.cert.trimEnd()}\n${pki.ca}` }) }) };
  };
  const envelope = { from: 'a@sender.test', to: ['b@receiver.test'] };
  const tlsa = (usage: number, selector: number, matchingType: number, pem: string) => ({ usage, selector, matchingType, data: associationData(pem, selector, matchingType) });

  it('dane: a DANE-EE record of the leaf, or a DANE-TA record of the CA in the chain, lets the mail go over TLS', async () => {
    const { pki, server } = await daneServer();
    const ee = await pool().send({ host, port: server.port, servername: 'localhost', tls: 'dane', tlsa: [tlsa(3, 1, 1, pki.tls.cert)] }, envelope, message());
    expect(ee.tls?.version).toMatch(/^TLSv1\.[23]$/);
    const ta = await pool().send({ host, port: server.port, servername: 'localhost', tls: 'dane', tlsa: [tlsa(2, 0, 1, pki.ca)] }, envelope, message());
    expect(ta.tls?.version).toMatch(/^TLSv1\.[23]$/);
    expect(server.messages).toHaveLength(2);
  });

  it('dane: records that match nothing refuse the session before MAIL FROM, naming the records; DANE-TA checks the name', async () => {
    const { pki, server } = await daneServer();
    const other = await testPki(['127.0.0.9']);
    const err = await pool().send({ host, port: server.port, servername: 'localhost', tls: 'dane', tlsa: [tlsa(3, 1, 1, other.tls.cert)] }, envelope, message()).then(() => undefined, (e: SmtpClientError) => e);
    expect(err).toMatchObject({ stage: 'ehlo', command: 'STARTTLS', temporary: true, tlsRequired: { policy: 'dane', problem: 'tlsa-mismatch', code: 'TLSA_MISMATCH' } });
    expect(err!.message).toMatch(/TLS required \(policy dane\), but the certificate of localhost does not match its TLSA records: .*3 1 1 [0-9a-f]{16}…/);
    const name = await pool().send({ host, port: server.port, servername: 'mx.receiver.test', tls: 'dane', tlsa: [tlsa(2, 0, 1, pki.ca)] }, envelope, message()).then(() => undefined, (e: SmtpClientError) => e);
    expect(name?.tlsRequired?.reason).toMatch(/does not name mx\.receiver\.test/);
    expect(server.messages).toHaveLength(0);
  });

  it('dane: a server without STARTTLS is refused', async () => {
    const server = await startServer();
    const pki = await testPki();
    const err = await pool().send({ host, port: server.port, servername: 'mx.test', tls: 'dane', tlsa: [tlsa(3, 1, 1, pki.tls.cert)] }, envelope, message()).then(() => undefined, (e: SmtpClientError) => e);
    expect(err?.tlsRequired).toMatchObject({ policy: 'dane', problem: 'no-starttls' });
    expect(server.messages).toHaveLength(0);
  });

  it('audit: under may, the result says what verify would have said, and the mail goes anyway', async () => {
    const { pki, server } = await daneServer();
    const sound = await pool({ ca: pki.ca }).send({ host, port: server.port, servername: 'localhost', tls: 'may', audit: true }, envelope, message());
    expect(sound.tlsAudit).toBeNull();
    const wrongName = await pool({ ca: pki.ca }).send({ host, port: server.port, servername: 'mx.receiver.test', tls: 'may', audit: true }, envelope, message());
    expect(wrongName.tlsAudit).toMatchObject({ policy: 'verify', problem: 'certificate', code: 'ERR_TLS_CERT_ALTNAME_INVALID' });
    const plain = await startServer();
    const stripped = await pool({ ca: pki.ca }).send({ host, port: plain.port, servername: 'mx.test', tls: 'may', audit: true }, envelope, message());
    expect(stripped.tlsAudit).toMatchObject({ problem: 'no-starttls' });
    const unasked = await pool({ ca: pki.ca }).send({ host, port: server.port, servername: 'mx.receiver.test', tls: 'may' }, envelope, message());
    expect(unasked.tlsAudit).toBeUndefined();
    expect(server.messages).toHaveLength(3);
  });
});

describe('parseReply', () => {
  it('handles replies without text', () => {
    expect(parseReply('250')).toEqual({ code: 250, text: '' });
  });
});

describe('SmtpClientPool: LMTP replies per recipient (RFC 2033 §4.2)', () => {
  it('gives each accepted recipient its own reply to the data, not the last one', async () => {
    const server = await startServer({ data: (session) => session.envelope.rcptTo.map((r, i) => `2.0.0 <${r.address}> saved as msg-${i + 1}`) }, { lmtp: true });
    const client = pool({ lmtp: true });
    const to = ['one@local.test', 'two@local.test', 'three@local.test'];
    const result = await client.send({ host, port: server.port }, { from: 'a@sender.test', to }, message());
    expect(result.recipients.map((r) => [r.address, r.accepted, r.reply])).toEqual([
      ['one@local.test', true, '250 2.0.0 <one@local.test> saved as msg-1'],
      ['two@local.test', true, '250 2.0.0 <two@local.test> saved as msg-2'],
      ['three@local.test', true, '250 2.0.0 <three@local.test> saved as msg-3'],
    ]);
    // On a reused session the replies are those of the new transaction.
    const again = await client.send({ host, port: server.port }, { from: 'a@sender.test', to: ['two@local.test'] }, message(2));
    expect(again.reused).toBe(true);
    expect(again.recipients[0]!.reply).toBe('250 2.0.0 <two@local.test> saved as msg-1');
  });
});

describe('SmtpClientPool: MAIL FROM parameters (RFC 6152 8BITMIME, RFC 6531 SMTPUTF8)', () => {
  const eightBit = Buffer.from('From: a@sender.test\r\nTo: b@receiver.test\r\nSubject: caf\u00e9\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\nun caf\u00e9 cr\u00e8me\r\n'.replace('Subject: caf\u00e9', 'Subject: coffee'), 'utf8');
  const utf8Header = Buffer.from('From: =?utf-8?q?x?= <a@sender.test>\r\nTo: b@receiver.test\r\nSubject: caf\u00e9 \u7528\u6237\r\n\r\nplain body\r\n', 'utf8');
  /** A server that records the MAIL FROM parameters of each message it takes. */
  const recording = async (options: Partial<SMTPServerOptions> = {}) => {
    const args: Record<string, unknown>[] = [];
    const server = await startServer(
      {
        data: (session) => {
          args.push(session.envelope.mailFrom && session.envelope.mailFrom.args ? { ...session.envelope.mailFrom.args } : {});
          return '2.0.0 Ok';
        },
      },
      options,
    );
    return { server, args };
  };

  it('sends BODY=8BITMIME for an 8-bit message where the server offers 8BITMIME, and nothing for a 7-bit one', async () => {
    const { server, args } = await recording();
    const client = pool();
    const result = await client.send({ host, port: server.port }, { from: 'a@sender.test', to: ['b@receiver.test'], body: '8BITMIME' }, eightBit, { sevenBit: () => Buffer.from('never used') });
    expect(result.mailParams).toEqual(['BODY=8BITMIME']);
    expect(result.converted7bit).toBeUndefined();
    await client.send({ host, port: server.port }, { from: 'a@sender.test', to: ['b@receiver.test'] }, message());
    expect(args[0]).toMatchObject({ BODY: '8BITMIME' });
    expect(args[0]).not.toHaveProperty('SMTPUTF8');
    expect(args[1]).not.toHaveProperty('BODY');
    expect(Buffer.from(server.messages[0]!.data, 'utf8').equals(eightBit)).toBe(true);
  });

  it('sends the 7-bit copy, without BODY=, where the server does not offer 8BITMIME; without one it refuses with 554 5.6.3', async () => {
    const { server, args } = await recording({ hide8BITMIME: true });
    const client = pool();
    const target = { host, port: server.port, servername: 'mx.test' };
    const sevenBit = Buffer.from('From: a@sender.test\r\n\r\n7-bit copy\r\n');
    const result = await client.send(target, { from: 'a@sender.test', to: ['b@receiver.test'], body: '8BITMIME' }, eightBit, { sevenBit: () => sevenBit });
    expect(result.converted7bit).toBe(true);
    expect(result.mailParams).toBeUndefined();
    expect(args[0]).not.toHaveProperty('BODY');
    expect(server.messages[0]!.data).toBe(sevenBit.toString());

    const err = (await client.send(target, { from: 'a@sender.test', to: ['b@receiver.test'], body: '8BITMIME' }, eightBit).catch((e: unknown) => e)) as SmtpClientError;
    expect(err).toBeInstanceOf(SmtpClientError);
    expect(err).toMatchObject({ stage: 'mail', code: 554, enhanced: '5.6.3', temporary: false, command: 'MAIL FROM:<a@sender.test>' });
    expect(err.message).toBe(`mx.test[${host}]:${server.port}: the server does not offer 8BITMIME, which the message needs (RFC 6152: 8-bit content), and this hop does not convert it to 7-bit`);
    const failing = (await client
      .send(target, { from: 'a@sender.test', to: ['b@receiver.test'], body: '8BITMIME' }, eightBit, {
        sevenBit: () => {
          throw new Error('part 2 says it is base64 but has 8-bit octets');
        },
      })
      .catch((e: unknown) => e)) as SmtpClientError;
    expect(failing).toMatchObject({ code: 554, enhanced: '5.6.3' });
    expect(failing.message).toContain('cannot be converted to 7-bit: part 2 says it is base64 but has 8-bit octets');
    // Declared 8BITMIME, 7-bit in fact: the "copy" is the message itself, and goes as it is, unconverted.
    const ascii = message(3);
    const same = await client.send(target, { from: 'a@sender.test', to: ['b@receiver.test'], body: '8BITMIME' }, ascii, { sevenBit: () => ascii });
    expect(same.converted7bit).toBeUndefined();
    expect(same.mailParams).toBeUndefined();
    expect(server.messages).toHaveLength(2);
    // The refusals happened before MAIL FROM: the session stayed clean and is reused.
    expect(server.connections).toBe(1);
  });

  it('adds SMTPUTF8 for UTF-8 headers (nodemailer alone would not) and for a UTF-8 address, once', async () => {
    const { server, args } = await recording();
    const client = pool();
    const r1 = await client.send({ host, port: server.port }, { from: 'a@sender.test', to: ['b@receiver.test'], body: '8BITMIME', smtputf8: true }, utf8Header);
    expect(r1.mailParams).toEqual(['SMTPUTF8', 'BODY=8BITMIME']);
    const r2 = await client.send({ host, port: server.port }, { from: 'a@sender.test', to: ['\u7528\u6237@receiver.test'], smtputf8: true }, message());
    expect(r2.accepted).toEqual(['\u7528\u6237@receiver.test']);
    // A later transaction that does not need it goes without.
    await client.send({ host, port: server.port }, { from: 'a@sender.test', to: ['b@receiver.test'] }, message());
    expect(args[0]).toMatchObject({ SMTPUTF8: true, BODY: '8BITMIME' });
    expect(args[1]).toMatchObject({ SMTPUTF8: true });
    expect(args[2]).not.toHaveProperty('SMTPUTF8');
    expect(server.connections).toBe(1);
  });

  it('refuses with 553 5.6.7 before MAIL FROM when the message needs SMTPUTF8 and the server does not offer it', async () => {
    const { server } = await recording({ hideSMTPUTF8: true });
    const client = pool();
    const target = { host, port: server.port, servername: 'mx.test' };
    const byHeader = (await client.send(target, { from: 'a@sender.test', to: ['b@receiver.test'], smtputf8: true }, utf8Header).catch((e: unknown) => e)) as SmtpClientError;
    expect(byHeader).toMatchObject({ stage: 'mail', code: 553, enhanced: '5.6.7', temporary: false });
    expect(byHeader.message).toBe(`mx.test[${host}]:${server.port}: the server does not offer SMTPUTF8, which the message needs (RFC 6531: a header is not ASCII)`);
    const byAddress = (await client.send(target, { from: 'a@sender.test', to: ['\u7528\u6237@receiver.test'] }, message()).catch((e: unknown) => e)) as SmtpClientError;
    expect(byAddress).toMatchObject({ code: 553, enhanced: '5.6.7' });
    expect(byAddress.message).toContain('the address <\u7528\u6237@receiver.test> is not ASCII');
    expect(server.messages).toHaveLength(0);
    // An ASCII message still goes over the same session.
    const ok = await client.send(target, { from: 'a@sender.test', to: ['b@receiver.test'] }, message());
    expect(ok.accepted).toEqual(['b@receiver.test']);
    expect(server.connections).toBe(1);
  });

  it('tells which messages need 8BITMIME and SMTPUTF8', () => {
    expect(has8BitOctets(eightBit)).toBe(true);
    expect(has8BitOctets(message())).toBe(false);
    expect(needsSmtpUtf8({ from: 'a@sender.test', to: ['b@receiver.test'] }, eightBit)).toBe(false); // 8-bit body only
    expect(needsSmtpUtf8({ from: 'a@sender.test', to: ['b@receiver.test'] }, utf8Header)).toBe(true);
    expect(needsSmtpUtf8({ from: 'a@sender.test', to: ['\u7528\u6237@receiver.test'] }, message())).toBe(true);
    expect(needsSmtpUtf8({ from: '', to: ['b@receiver.test'] }, Buffer.from('Subject: x\n\nbody caf\u00e9\n', 'utf8'))).toBe(false);
  });
});
