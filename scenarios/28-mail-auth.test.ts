// Scenario 28 (issue 12, mail authentication as a configuration regression test): the default lab's sender.test
// publishes SPF (a:mta.sender.test), a DKIM key (selector lab) and DMARC p=reject; the MTA signs, the MX verifies
// against the lab DNS, writes Authentication-Results and acts on DMARC. Each test breaks one thing a real
// configuration change breaks, and shows what the receiving side concludes.
import { describe, expect, it } from 'vitest';
import type { StartedLab } from '../src/harness/index.js';
import { headerSection } from '../src/harness/index.js';
import { useLab } from './support/lab.js';

const BOB = 'bob@receiver.test';

/** The Authentication-Results header of bob's copy of `messageId`, unfolded. */
async function resultsOf(lab: StartedLab, messageId: string, mailbox = 'INBOX'): Promise<string> {
  await lab.waitFor({ kind: 'stored', messageId, detail: { user: BOB } });
  const [copy] = await lab.mailbox(BOB).find(messageId, mailbox);
  expect(copy, `bob's copy of ${messageId} in ${mailbox}`).toBeDefined();
  const header = headerSection(copy!.raw).split(/\r\n(?=\S)/).find((h) => /^authentication-results:/i.test(h));
  expect(header, 'an Authentication-Results header').toBeDefined();
  return header!.replace(/\r\n\s+/g, ' ');
}

/** What a phisher logged in as alice submits: a From: in bob's own domain. */
const spoof = (id: string) => ['From: CEO <ceo@receiver.test>', `To: ${BOB}`, 'Subject: wire the money', `Message-ID: <${id}@sender.test>`, '', 'urgent', ''].join('\r\n');

const send = (lab: StartedLab, subject: string) => lab.client('alice@sender.test').send({ to: BOB, subject, text: `${subject}\n` });

describe('SPF, DKIM and DMARC with the records as published', () => {
  const lab = useLab();

  it('all three pass, each with its identifiers, and the verdict is an event', async () => {
    const sent = await send(lab(), 'all pass');
    const results = await resultsOf(lab(), sent.messageId);
    expect(results).toMatch(/^Authentication-Results: mx\.receiver\.test;/);
    expect(results).toMatch(/\bspf=pass [^;]*smtp\.mailfrom=alice@sender\.test/);
    expect(results).toMatch(/\bdkim=pass [^;]*header\.i=@sender\.test [^;]*header\.s=lab/);
    expect(results).toMatch(/\bdmarc=pass [^;]*header\.from=sender\.test/);
    const verdict = await lab().waitFor({ kind: 'authenticated', messageId: sent.messageId });
    const mta = lab().nodeOf('mta').config;
    expect(verdict.detail).toMatchObject({
      action: 'accept',
      spf: { result: 'pass', domain: 'sender.test', ip: mta.address, helo: mta.hostname },
      dkim: [{ result: 'pass', domain: 'sender.test', selector: 'lab', algorithm: 'rsa-sha256', aligned: true }],
      dmarc: { result: 'pass', domain: 'sender.test', p: 'reject' },
    });
  });

  it('SPF edited to drop the MTA: spf=fail, and DMARC still passes because DKIM aligns', async () => {
    await lab().dns.setRecords('sender.test', 'TXT', [{ data: 'v=spf1 ip4:192.0.2.10 -all' }]);
    const sent = await send(lab(), 'spf broken');
    const results = await resultsOf(lab(), sent.messageId);
    expect(results).toMatch(/\bspf=fail\b/);
    expect(results).toMatch(/\bdkim=pass\b/);
    expect(results).toMatch(/\bdmarc=pass\b/);
    const verdict = await lab().waitFor({ kind: 'authenticated', messageId: sent.messageId });
    expect(verdict.detail).toMatchObject({ action: 'accept', spf: { result: 'fail' }, dmarc: { result: 'pass', alignment: { spf: false } } });
  });
});

describe('DKIM key gone while the message waits in the queue', () => {
  // A long first retry, so the only retry is the one the test asks for.
  const lab = useLab((l) => l.withRetry({ schedule: [60_000], maxLifetimeMs: 600_000 }));

  it('after the retry dkim fails (no key), DMARC fails and rejects, and alice gets a DSN naming DMARC', async () => {
    await lab().node('mx').stop();
    const sent = await send(lab(), 'waits in the queue');
    await lab().waitFor({ kind: 'deferred', messageId: sent.messageId });
    // The domain moved its mail elsewhere while the message waited: the old selector is withdrawn, and SPF no
    // longer lists the MTA. (SPF alone, aligned with MAIL FROM, would still pass DMARC.)
    await lab().dns.removeRecords('lab._domainkey.sender.test', 'TXT');
    await lab().dns.setRecords('sender.test', 'TXT', [{ data: 'v=spf1 ip4:192.0.2.10 -all' }]);
    await lab().node('mx').start();
    await lab().mta().flush();

    const bounced = await lab().waitFor({ kind: 'bounced', messageId: sent.messageId, detail: { rcpt: BOB } });
    expect(bounced.detail.reply).toMatch(/^550 5\.7\.1 DMARC policy of sender\.test is reject: dkim=\w+ \(no key\)/);
    const verdict = await lab().waitFor({ kind: 'authenticated', messageId: sent.messageId });
    expect(verdict.detail).toMatchObject({ action: 'reject', dmarc: { result: 'fail', p: 'reject' }, spf: { result: 'fail' } });
    expect(verdict.detail.dkim[0]).toMatchObject({ domain: 'sender.test', selector: 'lab' });
    expect(verdict.detail.dkim[0]!.result).not.toBe('pass');

    const dsn = await lab().waitFor({ kind: 'dsn-created', where: (e) => e.detail.for.messageId === sent.messageId });
    await lab().waitFor({ kind: 'stored', messageId: dsn.detail.dsnMessageId, detail: { user: 'alice@sender.test' } });
    const [report] = await lab().mailbox('alice@sender.test').find(dsn.detail.dsnMessageId);
    expect(report!.raw.toString('utf8')).toMatch(/DMARC policy of sender\.test is reject/);
    expect(lab().history.filter({ kind: 'stored', messageId: sent.messageId }), 'bob never got it').toEqual([]);
  });
});

describe('a spoofed From:', () => {
  const lab = useLab((l) =>
    l.with((def) => {
      def.domains['receiver.test'] = { ...def.domains['receiver.test']!, dmarc: 'v=DMARC1; p=reject' };
    }),
  );

  it('submission refuses a From: outside the authenticated user\'s domain with 553 5.7.1', async () => {
    const attempt = lab().client('alice@sender.test').send({ raw: spoof('spoof-refused'), to: BOB });
    await expect(attempt).rejects.toThrow(/553 5\.7\.1 <ceo@receiver\.test>: From: domain receiver\.test is not yours/);
    const refused = await lab().waitFor({ kind: 'rejected', node: 'mta', detail: { stage: 'DATA' } });
    expect(refused.detail.reply).toMatch(/^553 5\.7\.1/);
  });
});

describe('a spoofed From: that submission lets through', () => {
  const lab = useLab((l) =>
    l.with((def) => {
      def.auth = { submissionFrom: 'any' };
      def.domains['receiver.test'] = { ...def.domains['receiver.test']!, dmarc: 'v=DMARC1; p=reject' };
    }),
  );

  it('DMARC at the MX rejects it: receiver.test never signed it and its SPF does not cover the MTA', async () => {
    const sent = await lab().client('alice@sender.test').send({ raw: spoof('spoof-through'), to: BOB });
    const bounced = await lab().waitFor({ kind: 'bounced', messageId: sent.messageId, detail: { rcpt: BOB } });
    expect(bounced.detail.reply).toMatch(/^550 5\.7\.1 DMARC policy of receiver\.test is reject/);
    const verdict = await lab().waitFor({ kind: 'authenticated', messageId: sent.messageId });
    expect(verdict.detail).toMatchObject({ action: 'reject', headerFrom: expect.stringMatching(/receiver\.test/), dmarc: { result: 'fail', domain: 'receiver.test' } });
  });
});

describe('DMARC p=quarantine', () => {
  const lab = useLab((l) =>
    l.with((def) => {
      // A domain whose mail fails both: its SPF lists another host and its selector is not published.
      def.domains['sender.test'] = { ...def.domains['sender.test']!, spf: 'v=spf1 ip4:192.0.2.10 -all', dkim: [{ selector: 'lab', publish: false }], dmarc: 'v=DMARC1; p=quarantine' };
    }),
  );

  it('lands in bob\'s Junk folder, visible over IMAP', async () => {
    const sent = await send(lab(), 'quarantined');
    const verdict = await lab().waitFor({ kind: 'authenticated', messageId: sent.messageId });
    expect(verdict.detail).toMatchObject({ action: 'quarantine', dmarc: { result: 'fail', p: 'quarantine' } });
    const stored = await lab().waitFor({ kind: 'stored', messageId: sent.messageId, detail: { user: BOB } });
    expect(stored.detail.mailbox).toBe('Junk');
    const phone = await lab().imap(BOB, { device: 'phone' });
    const junk = await phone.folder('Junk');
    expect(junk.map((m) => m.messageId)).toContain(sent.messageId);
    expect((await phone.folder('INBOX')).map((m) => m.messageId)).not.toContain(sent.messageId);
    expect(await resultsOf(lab(), sent.messageId, 'Junk')).toMatch(/\bdmarc=fail\b/);
  });
});
