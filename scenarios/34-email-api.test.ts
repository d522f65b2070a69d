// Scenario 34 (issue 13, the transactional HTTP email API): an application sends a password-reset email through the
// MTA's HTTP API (Mailpit's send API shape, HTTPS, a Bearer API key of the lab definition). The message then takes
// the path of submitted mail (queue, DKIM, MX), and the status endpoint follows it.
import { describe, expect, it } from 'vitest';
import { checkDeliveredOnce, headerSection } from '../src/harness/index.js';
import { findBinary, runClient } from './support/real-clients.js';
import { useLab } from './support/lab.js';

const KEY = 'maillab-default-api-key-sender-test';
const BOB = 'bob@receiver.test';
const reset = (subject: string) => ({
  From: { Email: 'noreply@sender.test', Name: 'Sender Accounts' },
  To: [{ Email: BOB, Name: 'Bob' }],
  Subject: subject,
  Text: 'Someone asked to reset your password. Follow https://sender.test/reset/abc123 within the hour.\n',
  HTML: '<p>Someone asked to reset your password. <a href="https://sender.test/reset/abc123">Reset it</a> within the hour.</p>',
  Tags: ['password-reset'],
});

describe('the HTTP email API', () => {
  const lab = useLab((l) => l.withRetry({ schedule: [60_000], maxLifetimeMs: 600_000 }));

  it("a password reset arrives in bob's INBOX; the status goes from not yet delivered to delivered", async () => {
    await lab().node('mx').stop();
    const sent = await lab().api(KEY).send(reset('Reset your password'));
    expect(sent.status, JSON.stringify(sent.body)).toBe(200);
    const { ID, MessageID } = sent.body;
    expect(ID).toEqual(expect.any(String));
    const submitted = await lab().waitFor({ kind: 'submitted', messageId: MessageID });
    expect(submitted.detail).toMatchObject({ from: 'noreply@sender.test', to: [BOB], dkim: { domain: 'sender.test', selector: 'lab' }, apiKey: expect.stringMatching(/^mail…$/) });
    expect((await lab().waitFor({ kind: 'queued', messageId: MessageID })).detail.origin).toBe('api');

    await lab().waitFor({ kind: 'deferred', messageId: MessageID, detail: { rcpt: BOB } });
    const waiting = await lab().api(KEY).status(ID);
    expect(waiting.body).toMatchObject({ ID, MessageID, Recipients: [{ Address: BOB, State: 'deferred', LastReply: expect.stringMatching(/^451 /), Attempts: 1 }] });

    await lab().node('mx').start();
    await lab().mta().flush();
    await lab().waitFor({ kind: 'relayed', messageId: MessageID, detail: { rcpt: BOB } });
    const done = await lab().api(KEY).status(ID);
    expect(done.body.Recipients).toEqual([expect.objectContaining({ Address: BOB, State: 'delivered', LastReply: expect.stringMatching(/^250 /) })]);

    const { raw } = await checkDeliveredOnce(lab(), BOB, MessageID);
    const head = headerSection(raw);
    expect(head).toMatch(/^Subject: Reset your password$/m);
    expect(head).toMatch(/^X-Tags: password-reset$/m);
    expect(head).toMatch(/with HTTPS id /);
    expect(head.replace(/\r\n\s+/g, ' ')).toMatch(/Authentication-Results: mx\.receiver\.test;.*\bdkim=pass\b.*\bdmarc=pass\b/);
  });

  it('a client that retries after a timeout with the same Idempotency-Key gets one message delivered, not two', async () => {
    const api = lab().api(KEY);
    const body = reset('Reset your password (retried)');
    // The first try gives up almost at once, as an impatient client would; the server may or may not have queued it.
    await api.send(body, { idempotencyKey: 'reset-7f3a', timeoutMs: 1 }).catch((err: Error) => expect(err.message).toMatch(/no answer within 1 ms/));
    const second = await api.send(body, { idempotencyKey: 'reset-7f3a' });
    const third = await api.send(body, { idempotencyKey: 'reset-7f3a' });
    expect(second.status).toBe(200);
    expect(third.body).toEqual(second.body);
    await checkDeliveredOnce(lab(), BOB, second.body.MessageID);
    expect(lab().history.filter({ kind: 'submitted', where: (e) => e.detail.to.includes(BOB) && e.messageId === second.body.MessageID })).toHaveLength(1);
  });

  it('a bad key gets 401, a foreign From 403, and an unknown recipient a bounce the status shows', async () => {
    const bad = await lab().api('not-the-key-of-this-lab-at-all').send(reset('x'));
    expect(bad.status).toBe(401);
    expect(bad.body.Error).toEqual(expect.any(String));
    const foreign = await lab().api(KEY).send({ ...reset('x'), From: { Email: 'ceo@receiver.test' } });
    expect(foreign.status).toBe(403);
    expect(foreign.body.Error).toMatch(/receiver\.test/);

    const sent = await lab().api(KEY).send({ ...reset('to nobody'), To: [{ Email: 'nobody@receiver.test' }] });
    expect(sent.status).toBe(200);
    await lab().waitFor({ kind: 'bounced', messageId: sent.body.MessageID, detail: { rcpt: 'nobody@receiver.test' } });
    const status = await lab().api(KEY).status(sent.body.ID);
    expect(status.body.Recipients).toEqual([expect.objectContaining({ Address: 'nobody@receiver.test', State: 'bounced', LastReply: expect.stringMatching(/^550 5\.1\.1 /) })]);
  });

  const curl = findBinary('curl');
  it.skipIf(!curl)('curl sends through the API with nothing but the lab CA and the key', async () => {
    const mta = lab().nodeOf('mta');
    const { host, port } = mta.service('api');
    const name = mta.config.hostname;
    const payload = JSON.stringify(reset('Reset your password (curl)'));
    const run = await runClient(curl!, ['--silent', '--show-error', '--cacert', lab().caFile, '--resolve', `${name}:${port}:${host}`, '-H', `Authorization: Bearer ${KEY}`, '-H', 'Content-Type: application/json', '--data', payload, `https://${name}:${port}/api/v1/send`]);
    expect(run.code, run.transcript).toBe(0);
    const answer = JSON.parse(run.stdout) as { ID: string; MessageID: string };
    await lab().waitFor({ kind: 'stored', messageId: answer.MessageID, detail: { user: BOB } });
  });
});
