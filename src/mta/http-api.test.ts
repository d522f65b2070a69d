// The MTA's HTTP email API (issue 13), in process and real: an MTA with TLS from the test CA, the lab DNS naming a
// capturing MX for receiver.test, curl (trusting the test CA only) for the send and status calls, node's https for
// the rest. What the MX receives is parsed with mailparser and its DKIM signature verified against the lab DNS.
import { execFile } from 'node:child_process';
import { createHash, generateKeyPairSync } from 'node:crypto';
import { promises as fs } from 'node:fs';
import https from 'node:https';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { simpleParser } from 'mailparser';
import { dkimVerify } from 'mailauth/lib/dkim/verify.js';
import type { SMTPServer } from 'smtp-server';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createLabResolver, startDnsServer, Zones, type RunningDnsServer } from '../dns/index.js';
import type { MtaNodeConfig } from '../shared/config.js';
import { EventLog, type LabEvent } from '../shared/events.js';
import type { RunningRole } from '../shared/node.js';
import { smtpReply } from '../shared/smtp-reply.js';
import { testPki, type TestPki } from '../shared/tls.test-helper.js';
import type { ApiMessageStatus, ApiSendResponse } from './api.js';
import { keyFingerprint, mailboxProblem } from './http-api.js';
import { startMta } from './index.js';
import { startCapturingServer, testMtaConfig, waitForEvent } from './mta.test-helper.js';

const execFileP = promisify(execFile);

const block = `127.${Math.floor(Math.random() * 200) + 20}.${Math.floor(Math.random() * 200) + 20}`;
const ip = (n: number) => `${block}.${n}`;
const DNS = ip(2);
const MTA = ip(3);
const MX = ip(10);
const RELAY_PORT = 20_000 + Math.floor(Math.random() * 20_000);
const KEY = 'k-sender-0123456789abcdef';
const OTHER_KEY = 'o-other-0123456789abcdef';
const SIZE_LIMIT = 200_000;
const BOB = 'bob@receiver.test';

let pki: TestPki;
let dns: RunningDnsServer;
let mx: SMTPServer;
let mta: RunningRole | undefined;
let dataDir: string;
let config: MtaNodeConfig;
let mtaEvents = new EventLog('mta');
/** What the MX accepted: the message and its envelope recipients. */
const captured: { data: string; rcpts: string[] }[] = [];
/** Messages to hold@receiver.test wait at the MX's DATA until this resolves. */
let releaseHold: () => void = () => undefined;
let hold = new Promise<void>((resolve) => (releaseHold = resolve));

beforeAll(async () => {
  pki = await testPki([MTA]);
  dataDir = await fs.mkdtemp(path.join(os.tmpdir(), 'maillab-mta-api-'));
  const pair = generateKeyPairSync('ed25519');
  const publicKey = pair.publicKey.export({ format: 'der', type: 'spki' }).subarray(-32).toString('base64');
  dns = await startDnsServer({
    host: DNS,
    port: 0,
    zones: new Zones([
      { origin: 'receiver.test', records: [{ name: 'receiver.test', type: 'MX', exchange: 'mx.receiver.test', priority: 10 }, { name: 'mx.receiver.test', type: 'A', address: MX }] },
      { origin: 'sender.test', records: [{ name: 'api._domainkey.sender.test', type: 'TXT', data: `v=DKIM1; k=ed25519; p=${publicKey}` }] },
    ]),
  });
  mx = await startCapturingServer(
    MX,
    RELAY_PORT,
    (data, session) => {
      captured.push({ data: data.toString('latin1'), rcpts: session.envelope.rcptTo.map((r) => r.address) });
      return '2.0.0 captured';
    },
    {
      name: 'mx.receiver.test',
      onRcptTo(address, _session, callback) {
        if (address.address.startsWith('later@')) return callback(smtpReply(451, '4.3.0 try again later'));
        if (address.address.startsWith('gone@')) return callback(smtpReply(550, '5.1.1 no such user'));
        callback();
      },
      onData(stream, session, callback) {
        const chunks: Buffer[] = [];
        stream.on('data', (c: Buffer) => chunks.push(c));
        stream.on('end', () => {
          const rcpts = session.envelope.rcptTo.map((r) => r.address);
          const take = () => {
            captured.push({ data: Buffer.concat(chunks).toString('latin1'), rcpts });
            callback(null, '2.0.0 captured');
          };
          if (rcpts.includes('hold@receiver.test')) void hold.then(take);
          else take();
        });
      },
    },
  );
  config = testMtaConfig({
    address: MTA,
    dataDir,
    resolver: dns.endpoint,
    users: [],
    relayPort: RELAY_PORT,
    labAddresses: [DNS, MTA, MX],
    tls: pki.tls,
    limits: { maxRecipients: 20, maxConnectionsPerClient: 50, maxMessageSize: SIZE_LIMIT },
    retry: { schedule: [150, 300], maxLifetimeMs: 60_000 },
    dkim: [{ domain: 'sender.test', selector: 'api', privateKey: pair.privateKey.export({ format: 'pem', type: 'pkcs8' }) as string, algorithm: 'ed25519-sha256', canonicalization: 'relaxed/relaxed' }],
    api: {
      port: 0,
      keys: [
        { key: KEY, domains: ['sender.test'] },
        { key: OTHER_KEY, domains: ['other.test'] },
      ],
    },
  });
  mta = await startMta({ config, events: mtaEvents, log: () => undefined });
});

afterAll(async () => {
  releaseHold();
  await mta?.stop();
  await new Promise<void>((resolve) => (mx ? mx.close(() => resolve()) : resolve()));
  await dns?.close();
  if (dataDir) await fs.rm(dataDir, { recursive: true, force: true });
});

const base = () => `https://${MTA}:${mta!.services.api!.port}`;

/** curl, trusting the test CA only: the status and the JSON answer. */
async function curl(args: string[]): Promise<{ status: number; body: any }> {
  const { stdout } = await execFileP('curl', ['-sS', '--cacert', pki.caFile, '-w', '\n%{http_code}', ...args]);
  const cut = stdout.lastIndexOf('\n');
  return { status: Number(stdout.slice(cut + 1)), body: JSON.parse(stdout.slice(0, cut)) };
}

/** node's https, trusting the test CA only. `body` is sent as is when a string or Buffer, else as JSON. */
function request(method: string, urlPath: string, options: { body?: unknown; key?: string | null; headers?: Record<string, string> } = {}): Promise<{ status: number; headers: Record<string, unknown>; body: any }> {
  const payload = options.body === undefined ? undefined : typeof options.body === 'string' || Buffer.isBuffer(options.body) ? Buffer.from(options.body) : Buffer.from(JSON.stringify(options.body));
  const key = options.key === undefined ? KEY : options.key;
  return new Promise((resolve, reject) => {
    const req = https.request(
      `${base()}${urlPath}`,
      {
        method,
        ca: pki.ca,
        headers: {
          ...(key !== null ? { Authorization: `Bearer ${key}` } : {}),
          ...(payload ? { 'Content-Type': 'application/json', 'Content-Length': String(payload.length) } : {}),
          ...options.headers,
        },
      },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => resolve({ status: res.statusCode!, headers: res.headers, body: JSON.parse(Buffer.concat(chunks).toString('utf8')) }));
        res.on('error', reject);
      },
    );
    req.on('error', reject);
    req.end(payload);
  });
}

const send = (body: unknown, options: { key?: string | null; headers?: Record<string, string> } = {}) => request('POST', '/api/v1/send', { body, ...options });

/** The message the MX captured with `messageId`, once it arrives. */
async function capturedMessage(queueId: string, messageId: string): Promise<{ data: string; rcpts: string[] }> {
  await waitForEvent(mtaEvents, (e) => e.kind === 'relayed' && e.queueId === queueId, `relayed ${queueId}`);
  const found = captured.find((c) => c.data.includes(messageId));
  if (!found) throw new Error(`the MX has no message ${messageId}`);
  return found;
}

async function verifyDkim(data: string) {
  const resolver = createLabResolver(dns.endpoint);
  const result = await dkimVerify(Buffer.from(data, 'latin1'), {
    resolver: async (name: string, type: string) => {
      if (type !== 'TXT') throw Object.assign(new Error(`unexpected ${type} query for ${name}`), { code: 'ENOTFOUND' });
      return resolver.resolveTxt(name);
    },
  });
  return result.results.map((r) => ({ domain: r.signingDomain, selector: r.selector, result: r.status.result }));
}

const submittedFor = (queueId: string) => (e: LabEvent) => e.kind === 'submitted' && e.queueId === queueId;

describe('POST /api/v1/send', () => {
  it('curl sends; 200 only with the queue id; the status goes queued → delivered as the MX answers', async () => {
    const body = JSON.stringify({ From: { Email: 'alice@sender.test', Name: 'Alice' }, To: [{ Email: 'hold@receiver.test' }], Subject: 'held', Text: 'Hi.' });
    const sent = await curl(['-H', `Authorization: Bearer ${KEY}`, '-H', 'Content-Type: application/json', '--data-binary', body, `${base()}/api/v1/send`]);
    expect(sent.status).toBe(200);
    const { ID, MessageID } = sent.body as ApiSendResponse;
    expect(MessageID).toMatch(new RegExp(`^<\\d+\\.${ID}@mta\\.sender\\.test>$`));
    // Recorded as a submission from the API, with the key's short id only.
    const submitted = await waitForEvent(mtaEvents, submittedFor(ID), 'submitted');
    expect(submitted.detail).toMatchObject({ from: 'alice@sender.test', to: ['hold@receiver.test'], apiKey: 'k-se…', tls: { version: expect.stringMatching(/^TLSv1\.[23]$/) } });
    expect(JSON.stringify(submitted)).not.toContain(KEY);
    expect((await waitForEvent(mtaEvents, (e) => e.kind === 'queued' && e.queueId === ID, 'queued')).detail).toMatchObject({ origin: 'api' });

    // The MX holds the message: not delivered yet, whatever the attempt is doing.
    const status = (await curl(['-H', `Authorization: Bearer ${KEY}`, `${base()}/api/v1/messages/${ID}`])) as { status: number; body: ApiMessageStatus };
    expect(status.status).toBe(200);
    expect(status.body).toEqual({ ID, MessageID, Recipients: [{ Address: 'hold@receiver.test', State: 'queued', Attempts: 0 }] });

    releaseHold();
    await capturedMessage(ID, MessageID);
    const after = await curl(['-H', `Authorization: Bearer ${KEY}`, `${base()}/api/v1/messages/${ID}`]);
    expect(after.body).toEqual({ ID, MessageID, Recipients: [{ Address: 'hold@receiver.test', State: 'delivered', LastReply: '250 2.0.0 captured', Attempts: 1 }] });
  });

  it('composes text, HTML, attachments, headers and tags; Bcc gets the message but no header names it; DKIM-signed, Received with HTTPS', async () => {
    const png = Buffer.from('89504e470d0a1a0a0000000d49484452', 'hex');
    const sent = await send({
      From: { Email: 'alice@sender.test', Name: 'Alice Example' },
      To: [{ Email: BOB, Name: 'Bob' }],
      Cc: [{ Email: 'carol@receiver.test' }],
      Bcc: ['dave@receiver.test'],
      ReplyTo: [{ Email: 'support@sender.test', Name: 'Support' }],
      Subject: 'Your invoice — März',
      Text: 'See the attached invoice.',
      HTML: '<p>See the <b>attached</b> invoice. <img src="cid:logo@sender.test"></p>',
      Attachments: [
        { Content: Buffer.from('line 1\nline 2\n').toString('base64'), Filename: 'invoice.txt', ContentType: 'text/plain' },
        { Content: png.toString('base64'), Filename: 'logo.png', ContentID: 'logo@sender.test' },
      ],
      Headers: { 'X-Campaign': 'spring', 'List-Unsubscribe': '<https://sender.test/u>' },
      Tags: ['welcome', 'beta'],
    });
    expect(sent.status).toBe(200);
    const { ID, MessageID } = sent.body as ApiSendResponse;
    const got = await capturedMessage(ID, MessageID);
    expect(got.rcpts.sort()).toEqual([BOB, 'carol@receiver.test', 'dave@receiver.test']);
    const head = got.data.slice(0, got.data.indexOf('\r\n\r\n'));
    expect(head).not.toMatch(/dave@receiver\.test/);
    expect(head).not.toMatch(/^bcc:/im);
    // The client's address (curl and node connect from 127.0.0.1), the TLS of the request, the protocol, the queue id.
    expect(head).toMatch(new RegExp(`^Received: from unknown \\(\\[127\\.0\\.0\\.1\\]\\)\\r\\n\\t\\(using TLSv1\\.[23] with cipher [^)]+\\)\\r\\n\\tby mta\\.sender\\.test \\(maillab\\) with HTTPS id ${ID};`, 'm'));

    const parsed = await simpleParser(Buffer.from(got.data, 'latin1'));
    expect(parsed.subject).toBe('Your invoice — März');
    expect(parsed.from?.value).toEqual([{ address: 'alice@sender.test', name: 'Alice Example' }]);
    expect(parsed.messageId).toBe(MessageID);
    expect(parsed.text?.trim()).toBe('See the attached invoice.');
    expect(parsed.html).toContain('<b>attached</b>');
    expect(parsed.headers.get('x-campaign')).toBe('spring');
    expect(parsed.headers.get('x-tags')).toBe('welcome, beta');
    expect((parsed.replyTo?.value ?? []).map((a) => a.address)).toEqual(['support@sender.test']);
    expect((Array.isArray(parsed.cc) ? parsed.cc : [parsed.cc]).flatMap((a) => a?.value ?? []).map((a) => a.address)).toEqual(['carol@receiver.test']);
    const invoice = parsed.attachments.find((a) => a.filename === 'invoice.txt');
    expect(invoice?.content.toString()).toBe('line 1\nline 2\n');
    const logo = parsed.attachments.find((a) => a.filename === 'logo.png');
    expect(logo).toMatchObject({ contentType: 'image/png', cid: 'logo@sender.test' });
    expect(logo?.content.equals(png)).toBe(true);

    expect(await verifyDkim(got.data)).toEqual([{ domain: 'sender.test', selector: 'api', result: 'pass' }]);
    expect((await waitForEvent(mtaEvents, submittedFor(ID), 'submitted')).detail).toMatchObject({ dkim: { domain: 'sender.test', selector: 'api', algorithm: 'ed25519-sha256' } });
  });
});

describe('Idempotency-Key', () => {
  const body = (subject: string) => ({ From: { Email: 'alice@sender.test' }, To: [{ Email: BOB }], Subject: subject, Text: 'once' });

  it('a retry gets the same ID and nothing is queued twice; another body with the key is 422; kept on disk without the API key', async () => {
    const first = await send(body('idem 1'), { headers: { 'Idempotency-Key': 'order-1001' } });
    const again = await send(body('idem 1'), { headers: { 'Idempotency-Key': 'order-1001' } });
    expect(first.status).toBe(200);
    expect(again).toMatchObject({ status: 200, body: first.body });
    expect(mtaEvents.since(0).filter((e) => e.kind === 'submitted' && e.messageId === first.body.MessageID)).toHaveLength(1);

    const other = await send(body('idem 2'), { headers: { 'Idempotency-Key': 'order-1001' } });
    expect(other.status).toBe(422);
    expect(other.body.Error).toMatch(/Idempotency-Key order-1001 was used for another request/);
    // The same Idempotency-Key under another API key is another key: refused here for its From domain, not replayed.
    expect((await send(body('idem 1'), { key: OTHER_KEY, headers: { 'Idempotency-Key': 'order-1001' } })).status).toBe(403);

    const stored = await fs.readFile(path.join(dataDir, 'api-idempotency.json'), 'utf8');
    expect(stored).toContain('order-1001');
    expect(stored).toContain(first.body.ID);
    expect(stored).not.toContain(KEY);
  });

  it('concurrent duplicates: the first sends, the others wait for it and get its ID', async () => {
    const before = mtaEvents.since(0).length ? mtaEvents.since(0).at(-1)!.seq : 0;
    const answers = await Promise.all(Array.from({ length: 6 }, () => send(body('idem concurrent'), { headers: { 'Idempotency-Key': 'order-2002' } })));
    expect(answers.map((a) => a.status)).toEqual([200, 200, 200, 200, 200, 200]);
    expect(new Set(answers.map((a) => a.body.ID)).size).toBe(1);
    expect(mtaEvents.since(before).filter((e) => e.kind === 'submitted')).toHaveLength(1);
  });
});

describe('refusals', () => {
  const ok = { From: { Email: 'alice@sender.test' }, To: [{ Email: BOB }], Subject: 's', Text: 't' };

  it('401 without a key or with a wrong one, with a Bearer challenge', async () => {
    for (const key of [null, 'k-sender-0123456789abcdeX', KEY.slice(0, -1)]) {
      const r = await send(ok, { key });
      expect(r.status).toBe(401);
      expect(r.headers['www-authenticate']).toBe('Bearer realm="maillab"');
      expect(r.body.Error).toMatch(/API key/);
    }
    const basic = await send(ok, { key: null, headers: { Authorization: `Basic ${Buffer.from(`x:${KEY}`).toString('base64')}` } });
    expect(basic.status).toBe(401);
  });

  it("403 for a From (header or, raw, envelope) outside the key's domains", async () => {
    const r = await send({ ...ok, From: { Email: 'alice@receiver.test' } });
    expect(r.status).toBe(403);
    expect(r.body.Error).toBe('From <alice@receiver.test>: domain receiver.test is not one this API key may send from (sender.test)');
    const event = await waitForEvent(mtaEvents, (e) => e.kind === 'api-rejected' && (e.detail as { from?: string }).from === 'alice@receiver.test', 'api-rejected 403');
    expect(event.detail).toMatchObject({ status: 403, method: 'POST', path: '/api/v1/send', apiKey: 'k-se…' });
    const raw = await request('POST', '/api/v1/send/raw', { body: { From: 'alice@sender.test', To: [BOB], Message: 'From: boss@receiver.test\nSubject: x\n\nhi\n' } });
    expect(raw.status).toBe(403);
    expect(raw.body.Error).toMatch(/^From: <boss@receiver\.test>/);
  });

  it('413 past the size limit: the body, or the composed message', async () => {
    const big = await send({ ...ok, Text: 'x'.repeat(SIZE_LIMIT * 2) });
    expect(big.status).toBe(413);
    expect(big.body.Error).toMatch(/larger than \d+ bytes/);
    // Without a Content-Length (chunked), cut when the body passes the limit, and still answered.
    const chunked = await new Promise<{ status: number; body: any }>((resolve, reject) => {
      const req = https.request(`${base()}/api/v1/send`, { method: 'POST', ca: pki.ca, headers: { Authorization: `Bearer ${KEY}`, 'Content-Type': 'application/json' } }, (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => resolve({ status: res.statusCode!, body: JSON.parse(Buffer.concat(chunks).toString('utf8')) }));
      });
      req.on('error', reject);
      req.write(`{"From":{"Email":"alice@sender.test"},"To":[{"Email":"${BOB}"}],"Text":"`);
      for (let i = 0; i < 40; i++) req.write('x'.repeat(10_000));
      req.end('"}');
    });
    expect(chunked.status).toBe(413);
    // Under the request limit, over the message limit once composed (quoted-printable, headers).
    const composed = await send({ ...ok, Attachments: [{ Content: Buffer.alloc(SIZE_LIMIT - 1000, 1).toString('base64'), Filename: 'a.bin' }] });
    expect(composed.status).toBe(413);
    expect(composed.body.Error).toMatch(/over the size limit of 200000/);
  });

  it('422 for an address that is no RFC 5321 mailbox', async () => {
    for (const bad of ['bob@@receiver.test', 'bob@receiver..test', 'bob smith@receiver.test', 'bob@-receiver.test', 'bob']) {
      const r = await send({ ...ok, To: [{ Email: bad }] });
      expect(r.status, bad).toBe(422);
      expect(r.body.Error).toContain(JSON.stringify(bad));
    }
    expect((await send({ ...ok, Bcc: ['x@[300.1.1.1]'] })).status).toBe(422);
  });

  it('400 for structural headers, bad JSON, a missing From or recipient, wrong field types, unknown fields', async () => {
    for (const name of ['Content-Type', 'message-id', 'BCC', 'From', 'Date', 'MIME-Version', 'Content-Transfer-Encoding', 'DKIM-Signature']) {
      const r = await send({ ...ok, Headers: { [name]: 'x' } });
      expect(r.status, name).toBe(400);
      expect(r.body.Error).toMatch(/may not be set/);
    }
    const cases: [unknown, RegExp][] = [
      ['{"From":', /not JSON/],
      [{ ...ok, From: undefined }, /From is missing/],
      [{ From: ok.From, Subject: 's' }, /no recipient/],
      [{ ...ok, To: 'bob@receiver.test' }, /To must be a list/],
      [{ ...ok, Bcc: [{ Email: BOB }] }, /Bcc\[0\] must be an address/],
      [{ ...ok, Html: '<p>' }, /unknown field Html/],
      [{ ...ok, Subject: 'a\r\nBcc: x@receiver.test' }, /one line/],
      [{ ...ok, Headers: { 'X-A': 'a\nB: c' } }, /one line/],
      [{ ...ok, Attachments: [{ Content: 'not base64!', Filename: 'a' }] }, /not base64/],
    ];
    for (const [body, error] of cases) {
      const r = await send(body);
      expect(r.status, String(error)).toBe(400);
      expect(r.body.Error).toMatch(error);
    }
  });

  it('404 for an unknown path, 405 for a wrong method', async () => {
    expect(await request('POST', '/api/v1/messages', { body: ok })).toMatchObject({ status: 404, body: { Error: expect.stringMatching(/no such endpoint/) } });
    const wrong = await request('GET', '/api/v1/send');
    expect(wrong).toMatchObject({ status: 405, headers: { allow: 'POST' } });
    expect((await request('DELETE', '/api/v1/messages/x')).status).toBe(405);
  });
});

describe('POST /api/v1/send/raw', () => {
  it('queues the message as given, with the envelope given: Message-ID and Date added, Received, DKIM-signed', async () => {
    const message = 'From: Alice <alice@sender.test>\nTo: Bob <bob@receiver.test>\nSubject: raw\n\nHello Bob,\nraw.\n';
    const sent = await curl(['-H', `Authorization: Bearer ${KEY}`, '--json', JSON.stringify({ From: 'alice@sender.test', To: [BOB, 'carol@receiver.test'], Message: message }), `${base()}/api/v1/send/raw`]);
    expect(sent.status).toBe(200);
    const { ID, MessageID } = sent.body as ApiSendResponse;
    expect(MessageID).toMatch(/@mta\.sender\.test>$/);
    const got = await capturedMessage(ID, MessageID);
    expect(got.rcpts.sort()).toEqual([BOB, 'carol@receiver.test']);
    const parsed = await simpleParser(Buffer.from(got.data, 'latin1'));
    expect(parsed.date).toBeInstanceOf(Date);
    expect(parsed.text).toBe('Hello Bob,\nraw.\n');
    expect(got.data).toMatch(/with HTTPS id /);
    expect(got.data).not.toMatch(/[^\r]\n/);
    expect(await verifyDkim(got.data)).toEqual([{ domain: 'sender.test', selector: 'api', result: 'pass' }]);
  });

  it('keeps a Message-ID the message has; refuses a message without From:', async () => {
    const kept = await request('POST', '/api/v1/send/raw', { body: { From: 'alice@sender.test', To: [BOB], Message: 'From: alice@sender.test\r\nMessage-ID: <own.1@sender.test>\r\n\r\nx\r\n' } });
    expect(kept).toMatchObject({ status: 200, body: { MessageID: '<own.1@sender.test>' } });
    const bare = await request('POST', '/api/v1/send/raw', { body: { From: 'alice@sender.test', To: [BOB], Message: 'Subject: no from\r\n\r\nx\r\n' } });
    expect(bare).toMatchObject({ status: 400, body: { Error: expect.stringMatching(/no From: header/) } });
  });
});

describe('GET /api/v1/messages/{ID}', () => {
  it('deferred with the last reply while the MX refuses for now; bounced when it refuses for good', async () => {
    const later = await send({ From: { Email: 'alice@sender.test' }, To: [{ Email: 'later@receiver.test' }], Text: 'later' });
    await waitForEvent(mtaEvents, (e) => e.kind === 'deferred' && e.queueId === later.body.ID, 'deferred');
    const deferred = await request('GET', `/api/v1/messages/${later.body.ID}`);
    expect(deferred.body.Recipients).toEqual([{ Address: 'later@receiver.test', State: 'deferred', LastReply: '451 4.3.0 try again later', Attempts: expect.any(Number) }]);
    expect(deferred.body.Recipients[0].Attempts).toBeGreaterThanOrEqual(1);

    const gone = await send({ From: { Email: 'alice@sender.test' }, To: [{ Email: 'gone@receiver.test' }], Text: 'gone' });
    await waitForEvent(mtaEvents, (e) => e.kind === 'bounced' && e.queueId === gone.body.ID, 'bounced');
    const bounced = await request('GET', `/api/v1/messages/${gone.body.ID}`);
    expect(bounced.body).toEqual({ ID: gone.body.ID, MessageID: gone.body.MessageID, Recipients: [{ Address: 'gone@receiver.test', State: 'bounced', LastReply: '550 5.1.1 no such user', Attempts: 1 }] });
  });

  it('404 for another key, and for an unknown ID', async () => {
    const sent = await send({ From: { Email: 'alice@sender.test' }, To: [{ Email: BOB }], Text: 'mine' });
    expect((await request('GET', `/api/v1/messages/${sent.body.ID}`, { key: OTHER_KEY })).status).toBe(404);
    expect((await request('GET', '/api/v1/messages/NOSUCHID')).status).toBe(404);
    expect((await request('GET', '/api/v1/messages/%E0%A4%A')).status).toBe(400);
    expect((await request('GET', `/api/v1/messages/${sent.body.ID}`, { key: null })).status).toBe(401);
  });
});

describe('mailboxProblem (RFC 5321 §4.1.2)', () => {
  it('takes dot-strings, quoted strings and address literals; says what is wrong otherwise', () => {
    for (const good of ['a@b.test', 'a.b+c@x-y.test', '"a b"@b.test', '"a\\"b"@b.test', 'a@[127.0.0.1]', 'a@[IPv6:::1]', "o'neil@b.test"]) expect(mailboxProblem(good), good).toBeUndefined();
    expect(mailboxProblem('.a@b.test')).toMatch(/local part/);
    expect(mailboxProblem('a..b@b.test')).toMatch(/local part/);
    expect(mailboxProblem(`${'a'.repeat(65)}@b.test`)).toMatch(/longer than 64/);
    expect(mailboxProblem('a@b_c.test')).toMatch(/domain/);
    expect(mailboxProblem('a@b.test.')).toMatch(/domain/);
    expect(mailboxProblem('ä@b.test')).toMatch(/local part/);
  });
});

describe('restart', () => {
  it('the idempotency keys survive a restart of the MTA: a retry after it gets the same ID', async () => {
    const body = { From: { Email: 'alice@sender.test' }, To: [{ Email: BOB }], Subject: 'across a restart', Text: 'x' };
    const first = await send(body, { headers: { 'Idempotency-Key': 'order-3003' } });
    expect(first.status).toBe(200);
    await waitForEvent(mtaEvents, (e) => e.kind === 'relayed' && e.queueId === first.body.ID, 'relayed');
    await mta!.stop();
    mtaEvents = new EventLog('mta');
    mta = await startMta({ config, events: mtaEvents, log: () => undefined });
    const again = await send(body, { headers: { 'Idempotency-Key': 'order-3003' } });
    expect(again).toMatchObject({ status: 200, body: first.body });
    expect(mtaEvents.since(0).filter((e) => e.kind === 'submitted')).toHaveLength(0);
  });

  it('a send recorded as pending (the node died between queueing and recording the answer) is found in the queue, not sent again', async () => {
    // What the file holds after a crash between the queue's fsync and the `queued` record: the pending entry only.
    // To a recipient the MX defers: the message is still in the queue when the node comes back, as after such a crash.
    const body = { From: { Email: 'alice@sender.test' }, To: [{ Email: 'later@receiver.test' }], Text: 'queued before the crash' };
    const queued = await send(body);
    const fingerprint = createHash('sha256').update(`/api/v1/send\n${JSON.stringify(body)}`).digest('hex');
    await mta!.stop();
    const file = path.join(dataDir, 'api-idempotency.json');
    const stored = JSON.parse(await fs.readFile(file, 'utf8')) as { entries: Record<string, unknown> };
    stored.entries[`${keyFingerprint(KEY)}:order-4004`] = { fingerprint, id: queued.body.ID, state: 'pending', at: Date.now() };
    await fs.writeFile(file, JSON.stringify(stored));
    mtaEvents = new EventLog('mta');
    mta = await startMta({ config, events: mtaEvents, log: () => undefined });
    const retry = await send(body, { headers: { 'Idempotency-Key': 'order-4004' } });
    expect(retry).toMatchObject({ status: 200, body: queued.body });
    expect(mtaEvents.since(0).filter((e) => e.kind === 'submitted')).toHaveLength(0);
  });
});

describe('a node without tls', () => {
  it('serves the API over plain HTTP, and the Received header says so', async () => {
    const events = new EventLog('mta');
    const plainDir = await fs.mkdtemp(path.join(os.tmpdir(), 'maillab-mta-api-plain-'));
    const { tls: _tls, ...withoutTls } = config;
    const plain = await startMta({ config: { ...withoutTls, address: ip(4), dataDir: plainDir, labAddresses: [DNS, ip(4), MX] }, events, log: () => undefined });
    try {
      const api = plain.services.api!;
      const response = await fetch(`http://${api.host}:${api.port}/api/v1/send`, {
        method: 'POST',
        headers: { Authorization: `Bearer ${KEY}`, 'Content-Type': 'application/json' },
        body: JSON.stringify({ From: { Email: 'alice@sender.test' }, To: [{ Email: BOB }], Text: 'plain' }),
      });
      expect(response.status).toBe(200);
      const { ID, MessageID } = (await response.json()) as ApiSendResponse;
      await waitForEvent(events, (e) => e.kind === 'relayed' && e.queueId === ID, 'relayed');
      const got = captured.find((c) => c.data.includes(MessageID));
      expect(got?.data).toMatch(new RegExp(`by mta\\.sender\\.test \\(maillab\\) with HTTP id ${ID}`));
      expect((await waitForEvent(events, submittedFor(ID), 'submitted')).detail).toMatchObject({ tls: null });
    } finally {
      await plain.stop();
      await fs.rm(plainDir, { recursive: true, force: true });
    }
  });
});
