// The MAIL FROM parameters end to end, in process (issue 14): submissions with and without BODY=8BITMIME and
// SMTPUTF8 on the MTA's submission port, relayed through the lab DNS to an MX that offers both extensions and to one
// that offers neither (smtp-server's hide8BITMIME / hideSMTPUTF8, as a Postfix with smtputf8_enable=no and an old
// relay would), and local delivery over LMTP with a reply of its own for each recipient. Waits on events, no sleeps.
import { simpleParser, type ParsedMail } from 'mailparser';
import SMTPConnection from 'nodemailer/lib/smtp-connection';
import type { SMTPServer, SMTPServerOptions } from 'smtp-server';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startDnsServer, Zones, type RunningDnsServer } from '../dns/index.js';
import type { EventLog, LabEvent } from '../shared/events.js';
import type { RunningRole } from '../shared/node.js';
import { has8BitOctets } from '../shared/smtp-client.js';
import { startCapturingServer, startTestMta, waitForEvent } from './mta.test-helper.js';

const block = `127.${Math.floor(Math.random() * 200) + 20}.${Math.floor(Math.random() * 200) + 20}`;
const ip = (n: number) => `${block}.${n}`;
const DNS = ip(2);
const MTA = ip(3);
const MX_MODERN = ip(10); // mx.modern.test: 8BITMIME and SMTPUTF8
const MX_OLD = ip(11); // mx.old.test: neither
const LMTP = ip(20);
const RELAY_PORT = 20_000 + Math.floor(Math.random() * 20_000);

interface Arrival {
  server: string;
  from: string;
  to: string[];
  /** The MAIL FROM parameters as the server parsed them. */
  args: Record<string, unknown>;
  data: Buffer;
}

const arrivals: Arrival[] = [];
const servers: SMTPServer[] = [];
let dns: RunningDnsServer;
let events: EventLog;
let mta: RunningRole;
let stop: () => Promise<void>;

/** A next hop that records each message with its MAIL FROM parameters; LMTP answers each recipient its own way. */
async function startHop(name: string, address: string, port: number, options: Partial<SMTPServerOptions> = {}): Promise<number> {
  const server = await startCapturingServer(
    address,
    port,
    (data, session) => {
      const mailFrom = session.envelope.mailFrom;
      const to = session.envelope.rcptTo.map((r) => r.address);
      arrivals.push({ server: name, from: mailFrom ? mailFrom.address : '', to, args: mailFrom && mailFrom.args ? { ...mailFrom.args } : {}, data });
      // LMTP: one reply per recipient, each naming its recipient and its place.
      return options.lmtp ? to.map((rcpt, i) => `2.0.0 <${rcpt}> stored as mail ${i + 1} of ${to.length}`) : `2.0.0 Ok: ${name} took it`;
    },
    { name, ...options },
  );
  servers.push(server);
  const bound = server.server.address();
  return typeof bound === 'object' && bound ? bound.port : port;
}

beforeAll(async () => {
  dns = await startDnsServer({
    host: DNS,
    port: 0,
    // Each domain with one MX host: mx.<domain>.
    zones: new Zones(
      ([['modern.test', MX_MODERN], ['old.test', MX_OLD]] as const).map(([domain, address]) => ({
        origin: domain,
        records: [
          { name: domain, type: 'MX' as const, exchange: `mx.${domain}`, priority: 10 },
          { name: `mx.${domain}`, type: 'A' as const, address },
        ],
      })),
    ),
  });
  await startHop('mx.modern.test', MX_MODERN, RELAY_PORT);
  await startHop('mx.old.test', MX_OLD, RELAY_PORT, { hide8BITMIME: true, hideSMTPUTF8: true });
  const lmtpPort = await startHop('mailbox.sender.test', LMTP, 0, { lmtp: true });
  ({ mta, events, stop } = await startTestMta({
    address: MTA,
    resolver: dns.endpoint,
    localDelivery: { host: LMTP, port: lmtpPort },
    users: ['alice', 'bert', 'cleo'].map((user) => ({ address: `${user}@sender.test`, password: `${user}-secret` })),
    relayPort: RELAY_PORT,
  }));
});

afterAll(async () => {
  await stop?.();
  await Promise.all(servers.map((server) => new Promise<void>((resolve) => server.close(() => resolve()))));
  await dns?.close();
});

const ofQueue = (queueId: string, kind: string) => (e: LabEvent) => e.queueId === queueId && e.kind === kind;

/**
 * Submits `raw` as alice on 587 with nodemailer's SMTPConnection, which sends BODY=8BITMIME when asked
 * (`use8BitMime`) and SMTPUTF8 for a non-ASCII address; returns the queue id from the reply.
 */
async function submit(envelope: { to: string[]; use8BitMime?: boolean }, raw: Buffer): Promise<string> {
  const conn = new SMTPConnection({ host: MTA, port: mta.services.submission!.port, ignoreTLS: true, name: 'client.sender.test', logger: false });
  try {
    await new Promise<void>((resolve, reject) => conn.connect((err) => (err ? reject(err) : resolve())));
    await new Promise<void>((resolve, reject) => conn.login({ user: 'alice@sender.test', pass: 'alice-secret' }, (err) => (err ? reject(err) : resolve())));
    const info = await new Promise<{ response: string }>((resolve, reject) => conn.send({ from: 'alice@sender.test', ...envelope }, raw, (err, sent) => (err ? reject(err) : resolve(sent))));
    const match = /queued as ([0-9A-F]+)/.exec(info.response);
    if (!match) throw new Error(`no queue id in ${info.response}`);
    return match[1]!;
  } finally {
    conn.quit();
  }
}

const crlf = (text: string) => Buffer.from(text.replace(/\r?\n/g, '\r\n'), 'utf8');

/** A multipart message with 8-bit text, HTML and a binary-ish attachment, each `Content-Transfer-Encoding: 8bit`. */
const multipart8bit = (to: string) =>
  crlf(`From: alice@sender.test
To: ${to}
Subject: 8-bit parts
MIME-Version: 1.0
Content-Type: multipart/mixed; boundary="b1"

This is a multi-part message.
--b1
Content-Type: multipart/alternative;
 boundary=b2

--b2
Content-Type: text/plain; charset=utf-8
Content-Transfer-Encoding: 8bit

Grüße aus Köln — café crème, naïve façade.
.a line that starts with a dot
a line with a trailing space 
= an equals sign and ${'ä'.repeat(60)} a long line of umlauts
--b2
Content-Type: text/html; charset=utf-8
Content-Transfer-Encoding: 8bit

<p>Grüße aus Köln</p>
--b2--
--b1
Content-Type: application/octet-stream; name="bytes.bin"
Content-Disposition: attachment; filename="bytes.bin"
Content-Transfer-Encoding: 8bit

${'\u00e9\u00ff\u0080 bytes '.repeat(5)}
--b1--
`);

const arrivalOf = (server: string, queueId: string) => arrivals.find((a) => a.server === server && a.data.includes(`id ${queueId}`));

describe('MTA: MAIL FROM parameters on the way out', () => {
  it('relays an 8BITMIME submission with BODY=8BITMIME to an MX that offers 8BITMIME, the bytes unchanged', async () => {
    const raw = multipart8bit('bob@modern.test');
    const queueId = await submit({ to: ['bob@modern.test'], use8BitMime: true }, raw);
    const queued = await waitForEvent(events, ofQueue(queueId, 'queued'), 'queued');
    expect(queued.detail.params).toEqual({ body: '8BITMIME' });
    const relayed = await waitForEvent(events, ofQueue(queueId, 'relayed'), 'relayed');
    expect(relayed.detail).toMatchObject({ rcpt: 'bob@modern.test', mailParams: ['BODY=8BITMIME'] });
    expect(relayed.detail.converted7bit).toBeUndefined();
    const arrival = arrivalOf('mx.modern.test', queueId)!;
    expect(arrival.args).toMatchObject({ BODY: '8BITMIME' });
    expect(arrival.args).not.toHaveProperty('SMTPUTF8');
    // The MTA adds header fields (Received, Message-ID, Date); the body goes byte for byte.
    const bodyOf = (data: Buffer) => data.subarray(data.indexOf('\r\n\r\n') + 4);
    expect(bodyOf(arrival.data).equals(bodyOf(raw))).toBe(true);
  });

  it('converts an 8-bit message to valid 7-bit MIME for an MX without 8BITMIME (quoted-printable text, base64 otherwise)', async () => {
    const raw = multipart8bit('bob@old.test');
    const queueId = await submit({ to: ['bob@old.test'], use8BitMime: true }, raw);
    const relayed = await waitForEvent(events, ofQueue(queueId, 'relayed'), 'relayed');
    expect(relayed.detail).toMatchObject({ rcpt: 'bob@old.test', converted7bit: true, status: '2.0.0' });
    expect(relayed.detail.mailParams).toBeUndefined();
    const arrival = arrivalOf('mx.old.test', queueId)!;
    expect(arrival.args).not.toHaveProperty('BODY');
    expect(has8BitOctets(arrival.data)).toBe(false);
    const text = arrival.data.toString('latin1');
    expect(text).toContain('Content-Transfer-Encoding: quoted-printable');
    expect(text).toContain('Content-Transfer-Encoding: base64');
    expect(text).not.toMatch(/^Content-Transfer-Encoding: 8bit/im);
    // Every encoded line fits RFC 2045's 76 characters.
    expect(text.split('\r\n').filter((l) => !/^[A-Za-z-]+:|^\s/.test(l)).every((l) => l.length <= 76)).toBe(true);

    // What a reader decodes is what was sent.
    const [before, after] = (await Promise.all([simpleParser(raw), simpleParser(arrival.data)])) as [ParsedMail, ParsedMail];
    expect(after.text).toBe(before.text);
    expect(after.text).toContain('Grüße aus Köln — café crème');
    expect(after.html).toBe(before.html);
    expect(after.attachments.map((a) => [a.filename, a.contentType])).toEqual([['bytes.bin', 'application/octet-stream']]);
    expect(after.attachments[0]!.content.equals(before.attachments[0]!.content)).toBe(true);
  });

  it('takes 8-bit content without BODY=8BITMIME, notes it, and relays it as 8BITMIME (as Postfix does)', async () => {
    const raw = crlf('From: alice@sender.test\nTo: bob@modern.test\nSubject: undeclared\n\nnaïve 8-bit body, no BODY= given\n');
    const queueId = await submit({ to: ['bob@modern.test'] }, raw);
    const queued = await waitForEvent(events, ofQueue(queueId, 'queued'), 'queued');
    expect(queued.detail.params).toEqual({ undeclared8bit: true });
    const relayed = await waitForEvent(events, ofQueue(queueId, 'relayed'), 'relayed');
    expect(relayed.detail.mailParams).toEqual(['BODY=8BITMIME']);
    expect(arrivalOf('mx.modern.test', queueId)!.args).toMatchObject({ BODY: '8BITMIME' });
  });

  it('passes SMTPUTF8 for an internationalized address where the MX offers it', async () => {
    const queueId = await submit({ to: ['用户@modern.test'] }, crlf('From: alice@sender.test\nTo: 用户@modern.test\nSubject: =?utf-8?q?hi?=\n\nhello\n'));
    const queued = await waitForEvent(events, ofQueue(queueId, 'queued'), 'queued');
    expect(queued.detail.params).toMatchObject({ smtputf8: true });
    const relayed = await waitForEvent(events, ofQueue(queueId, 'relayed'), 'relayed');
    expect(relayed.detail.mailParams).toContain('SMTPUTF8');
    const arrival = arrivalOf('mx.modern.test', queueId)!;
    expect(arrival.to).toEqual(['用户@modern.test']);
    // The Received header names the recipient in UTF-8, not mangled to latin1.
    expect(arrival.data.toString('utf8')).toMatch(/\r\n\tfor <用户@modern\.test>;/);
    expect(arrival.args).toMatchObject({ SMTPUTF8: true });
  });

  it('passes SMTPUTF8 for a UTF-8 header alone (ASCII addresses) where the MX offers it', async () => {
    const queueId = await submit({ to: ['bob@modern.test'], use8BitMime: true }, crlf('From: Jürgen <alice@sender.test>\nTo: bob@modern.test\nSubject: Grüße\n\nhello\n'));
    const relayed = await waitForEvent(events, ofQueue(queueId, 'relayed'), 'relayed');
    expect(relayed.detail.mailParams).toEqual(['SMTPUTF8', 'BODY=8BITMIME']);
    expect(arrivalOf('mx.modern.test', queueId)!.args).toMatchObject({ SMTPUTF8: true, BODY: '8BITMIME' });
  });

  it('bounces 553 5.6.7 when the message needs SMTPUTF8 and the MX does not offer it, saying so', async () => {
    for (const [to, raw, why] of [
      ['用户@old.test', crlf('From: alice@sender.test\nTo: x@old.test\nSubject: hi\n\nhello\n'), 'the address <用户@old.test> is not ASCII'],
      ['bob@old.test', crlf('From: alice@sender.test\nTo: bob@old.test\nSubject: Grüße\n\nhello\n'), 'a header is not ASCII'],
    ] as const) {
      const queueId = await submit({ to: [to], use8BitMime: true }, raw);
      const bounced = await waitForEvent(events, ofQueue(queueId, 'bounced'), `bounced ${to}`);
      expect(bounced.detail).toMatchObject({ rcpt: to, status: '5.6.7', command: 'MAIL FROM:<alice@sender.test>' });
      expect(bounced.detail.reply).toBe(`553 5.6.7 mx.old.test[${MX_OLD}]:${RELAY_PORT}: the server does not offer SMTPUTF8, which the message needs (RFC 6531: ${why})`);
      await waitForEvent(events, (e) => e.kind === 'dsn-created' && (e.detail.for as { queueId: string }).queueId === queueId, 'dsn-created');
      expect(arrivalOf('mx.old.test', queueId)).toBeUndefined();
    }
  });
});

describe('MTA: local delivery over LMTP', () => {
  it('records each recipient with its own LMTP reply, and passes BODY=8BITMIME to the mailbox server', async () => {
    const to = ['alice@sender.test', 'bert@sender.test', 'cleo@sender.test'];
    const queueId = await submit({ to, use8BitMime: true }, crlf(`From: alice@sender.test\nTo: ${to.join(', ')}\nSubject: three\n\nfür alle drei\n`));
    const delivered: LabEvent[] = [];
    for (const rcpt of to) delivered.push(await waitForEvent(events, (e) => ofQueue(queueId, 'delivered')(e) && e.detail.rcpt === rcpt, `delivered ${rcpt}`));
    expect(delivered.map((e) => e.detail.reply)).toEqual(to.map((rcpt, i) => `250 2.0.0 <${rcpt}> stored as mail ${i + 1} of 3`));
    expect(delivered.every((e) => JSON.stringify(e.detail.mailParams) === '["BODY=8BITMIME"]')).toBe(true);
    const view = (await mta.rpc.message!({ queueId })) as { recipients: { address: string; lastReply?: string }[] };
    expect(view.recipients.map((r) => r.lastReply)).toEqual(to.map((rcpt, i) => `250 2.0.0 <${rcpt}> stored as mail ${i + 1} of 3`));
    expect(arrivalOf('mailbox.sender.test', queueId)!.args).toMatchObject({ BODY: '8BITMIME' });
  });
});
