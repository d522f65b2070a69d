// Scenario 37 (issue 14, real servers in the lab): lab/postfix-mta.ts, the default lab with Debian's Postfix as the
// sender MTA. alice submits to Postfix on 587 (STARTTLS, SMTP AUTH against the lab's users), Postfix finds
// receiver.test's MX through the lab DNS and relays to maillab's MX, which stores through maillab's mailbox server.
// Postfix's maillog becomes the MTA's events; its queue is read with postqueue -j. Local runtime, as root, with Postfix
// and Cyrus SASL's tools (sasl2-bin).
import { afterEach, describe, expect, it } from 'vitest';
import { checkDeliveredOnce } from '../src/harness/index.js';
import postfixMtaLab from '../lab/postfix-mta.js';
import { useLab } from './support/lab.js';
import { whyRealServersSkip } from './support/real-servers.js';

const ALICE = 'alice@sender.test';
const BOB = 'bob@receiver.test';
const skip = whyRealServersSkip('37-real-postfix-mta', ['postfix-mta']);

describe.skipIf(skip !== undefined)('Postfix as the sender MTA', () => {
  const lab = useLab((l) => l, { definition: postfixMtaLab });
  // Tests stop the MX and kill the MTA: each leaves both running, even when it fails midway. Otherwise one failure
  // cascades: with the MX left down, the next test's message is deferred instead of bounced (seen on docker).
  // start() does nothing to a running node.
  afterEach(async () => {
    await lab().node('mx').start();
    await lab().node('mta').start();
  });

  it('alice submits with AUTH over STARTTLS → Postfix relays to the MX → stored once, read over IMAP; DMARC passes on SPF', async () => {
    const sent = await lab().client(ALICE).send({ to: BOB, subject: 'through Postfix', text: 'sent by a real MTA\n' });
    const submitted = await lab().waitFor({ kind: 'submitted', node: 'mta', messageId: sent.messageId });
    expect(submitted.detail).toMatchObject({ user: ALICE, from: ALICE, to: [BOB] });
    expect(submitted.detail.tls?.version).toMatch(/^TLSv1\.[23]$/);
    const queued = await lab().waitFor({ kind: 'queued', node: 'mta', messageId: sent.messageId });
    expect(queued.detail).toMatchObject({ from: ALICE, to: [BOB], origin: 'submission' });
    const relayed = await lab().waitFor({ kind: 'relayed', node: 'mta', messageId: sent.messageId, detail: { rcpt: BOB } });
    const mx = lab().nodeOf('mx').config.address;
    expect(relayed.detail).toMatchObject({ mx: 'mx.receiver.test', host: mx, port: lab().nodeOf('mx').config.ports.smtp, status: '2.0.0', hop: `mta.sender.test -> mx.receiver.test[${mx}]:${lab().nodeOf('mx').config.ports.smtp}` });
    expect(relayed.detail.reply).toMatch(/^250 /);
    expect(relayed.detail.tls?.version).toMatch(/^TLSv1\.[23]$/);
    // The MX saw Postfix's connection from the MTA's own address, and (no DKIM signature) DMARC passes through SPF.
    const received = await lab().waitFor({ kind: 'received', node: 'mx', messageId: sent.messageId });
    expect(received.detail.client).toBe(lab().nodeOf('mta').config.address);
    const auth = await lab().waitFor({ kind: 'authenticated', node: 'mx', messageId: sent.messageId });
    expect(auth.detail).toMatchObject({ action: 'accept', spf: { result: 'pass', domain: 'sender.test' }, dmarc: { result: 'pass' } });
    expect(auth.detail.dkim).toEqual([]);
    const { raw } = await checkDeliveredOnce(lab(), BOB, sent.messageId);
    expect(raw.toString('utf8')).toMatch(/by mta\.sender\.test \(Postfix\) with ESMTPSA/);
    const phone = await lab().imap(BOB, { device: 'phone' });
    await phone.waitForMessage(sent.messageId);
  });

  it('a wrong password is refused with 535 and recorded as auth-failed', async () => {
    await expect(lab().client(ALICE, { password: 'wrong' }).send({ to: BOB, subject: 'x', text: 'x\n' })).rejects.toThrow(/535/);
    const failed = await lab().waitFor({ kind: 'auth-failed', node: 'mta' });
    expect(failed.detail).toMatchObject({ service: 'submission', reply: expect.stringMatching(/^535 5\.7\.8 /) });
  });

  it('MX down: deferred and visible in postqueue -j; MX back and flush: delivered exactly once', async () => {
    await lab().node('mx').stop();
    const sent = await lab().client(ALICE).send({ to: BOB, subject: 'while the MX is down', text: 'wait for it\n' });
    const deferred = await lab().waitFor({ kind: 'deferred', node: 'mta', messageId: sent.messageId });
    // Postfix names the MX it could not reach and why: locally its closed port refuses; on docker its container is
    // gone, so the connection times out (or has no route).
    const { address, ports } = lab().nodeOf('mx').config;
    const unreachable = new RegExp(`connect to mx\\.receiver\\.test\\[${address.replace(/\./g, '\\.')}\\]:${ports.smtp}: (Connection refused|Connection timed out|No route to host)`);
    expect(deferred.detail.error).toMatch(unreachable);
    expect(deferred.detail.status).toMatch(/^4\./);
    const queue = await lab().mta().queue();
    const entry = queue.find((e) => e.messageId === sent.messageId);
    expect(entry, `the deferred message in postqueue -j: ${JSON.stringify(queue)}`).toBeDefined();
    expect(entry!.recipients).toEqual([expect.objectContaining({ address: BOB, state: 'deferred', lastError: expect.stringMatching(unreachable) })]);
    const detail = await lab().mta().message(entry!.queueId);
    expect(detail.headers).toContain(`Message-ID: ${sent.messageId}`);
    await lab().node('mx').start();
    const { flushed } = await lab().mta().flush();
    expect(flushed).toBeGreaterThanOrEqual(1);
    await lab().waitFor({ kind: 'relayed', node: 'mta', messageId: sent.messageId, detail: { rcpt: BOB } }, { timeoutMs: 15_000 });
    await checkDeliveredOnce(lab(), BOB, sent.messageId);
    expect((await lab().mta().queue()).find((e) => e.messageId === sent.messageId)).toBeUndefined();
  });

  it("an unknown recipient: the MX's 550 5.1.1 bounces it, and Postfix's DSN reaches alice's mailbox", async () => {
    const sent = await lab().client(ALICE).send({ to: 'nobody@receiver.test', subject: 'to nobody', text: 'x\n' });
    const bounced = await lab().waitFor({ kind: 'bounced', node: 'mta', messageId: sent.messageId, detail: { rcpt: 'nobody@receiver.test' } });
    expect(bounced.detail).toMatchObject({ status: '5.1.1', command: 'RCPT TO:<nobody@receiver.test>' });
    expect(bounced.detail.reply).toMatch(/^550 5\.1\.1/);
    const dsn = await lab().waitFor({ kind: 'dsn-created', node: 'mta', where: (e) => e.detail.for.messageId === sent.messageId });
    expect(dsn.detail).toMatchObject({ to: ALICE, rcpts: ['nobody@receiver.test'] });
    expect(dsn.detail.dsnMessageId).toMatch(/@mta\.sender\.test>$/);
    await lab().waitFor({ kind: 'delivered', node: 'mta', messageId: dsn.detail.dsnMessageId, detail: { rcpt: ALICE } });
    const { raw } = await checkDeliveredOnce(lab(), ALICE, dsn.detail.dsnMessageId);
    expect(raw.toString('utf8')).toMatch(/Content-Type: multipart\/report; report-type=delivery-status/);
    expect(raw.toString('utf8')).toMatch(/Status: 5\.1\.1/);
  });

  it('a SIGKILLed Postfix MTA keeps its queue: restarted, flushed, the message is relayed once and its events name it', async () => {
    await lab().node('mx').stop();
    const sent = await lab().client(ALICE).send({ to: BOB, subject: 'survives a kill', text: 'still here\n' });
    await lab().waitFor({ kind: 'deferred', node: 'mta', messageId: sent.messageId });
    await lab().node('mta').kill();
    await lab().node('mx').start();
    await lab().node('mta').start();
    await lab().mta().flush();
    // The restarted node read the Message-ID from the queue file (postcat), so the outcome names the message.
    await lab().waitFor({ kind: 'relayed', node: 'mta', messageId: sent.messageId, detail: { rcpt: BOB } }, { timeoutMs: 15_000 });
    await checkDeliveredOnce(lab(), BOB, sent.messageId);
  });

  it('set-dkim and dkim fail, saying Postfix signs nothing without a milter', async () => {
    await expect(lab().mta().dkim()).rejects.toThrow(/PostfixDkimUnsupported|signs no DKIM without a milter/);
  });
});

describe.skipIf(skip !== undefined)("Postfix's outbound TLS policy: verify.test under verify, the MX's certificate naming the wrong host", () => {
  const lab = useLab(
    (l) =>
      l.with((def) => {
        def.domains['verify.test'] = { mx: [{ host: 'mx', preference: 10 }] };
        def.users.push({ address: 'bob@verify.test', password: 'bob-secret' });
        const mx = def.hosts.mx!;
        if (mx.role === 'mx') mx.domains = [...mx.domains, 'verify.test'];
        def.tls = { ...def.tls, certificates: { mx: 'wrong-name' }, outbound: { default: 'may', domains: { 'verify.test': 'verify' } } };
      }),
    { definition: postfixMtaLab },
  );

  it('may delivers over TLS anyway; verify defers, with Postfix naming the certificate problem', async () => {
    const sent = await lab().client(ALICE).send({ to: [BOB, 'bob@verify.test'], subject: 'which policy gets through?', text: 'x\n' });
    const relayed = await lab().waitFor({ kind: 'relayed', node: 'mta', messageId: sent.messageId, detail: { rcpt: BOB } });
    expect(relayed.detail).toMatchObject({ tlsPolicy: 'may', tls: { version: expect.stringMatching(/^TLSv1\.[23]$/) } });
    const deferred = await lab().waitFor({ kind: 'deferred', node: 'mta', messageId: sent.messageId, detail: { rcpt: 'bob@verify.test' } });
    expect(deferred.detail.tlsPolicy).toBe('verify');
    expect(deferred.detail.error).toMatch(/certificate/i);
    expect(deferred.detail.status).toMatch(/^4\./);
    expect(lab().history.filter({ kind: 'relayed', messageId: sent.messageId, where: (e) => e.detail.rcpt === 'bob@verify.test' })).toEqual([]);
  });
});
