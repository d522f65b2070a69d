import { afterEach, describe, expect, it } from 'vitest';
import type { RunningRole } from '../shared/node.js';
import { startMailbox } from './index.js';
import type { MailboxInfo, StoredMessage } from './store-api.js';
import { connectLine, testContext, type TestContext } from './testkit.test-helper.js';

const BOB = 'bob@receiver.test';

let ctx: TestContext | undefined;
let role: RunningRole | undefined;

afterEach(async () => {
  await role?.stop();
  role = undefined;
  await ctx?.cleanup();
});

async function lmtpDeliver(port: number, to: string, message: string) {
  const client = await connectLine(port);
  await client.line();
  client.write(`LHLO test\r\nMAIL FROM:<alice@sender.test>\r\nRCPT TO:<${to}>\r\nDATA\r\n`);
  await client.smtpReply();
  for (let i = 0; i < 3; i++) await client.line();
  client.write(message + '.\r\n');
  const reply = await client.line();
  client.send('QUIT');
  await client.line();
  client.close();
  return reply;
}

describe('startMailbox', () => {
  it('starts LMTP and POP3 on the ports asked (0: any), serves the harness, stops', async () => {
    ctx = await testContext({ ports: { lmtp: 0, pop3: 0 } });
    role = await startMailbox(ctx);
    expect(Object.keys(role.services).sort()).toEqual(['lmtp', 'pop3']);
    const { lmtp, pop3 } = role.services as Record<string, { host: string; port: number }>;
    expect(lmtp!.port).toBeGreaterThan(0);
    expect(pop3!.port).toBeGreaterThan(0);

    const message = 'Subject: via LMTP\r\nMessage-ID: <e2e@sender.test>\r\n\r\n.hello\r\n';
    expect(await lmtpDeliver(lmtp!.port, BOB, message)).toMatch(/^250 /);

    const boxes = (await role.rpc.mailboxes!({ user: BOB })) as MailboxInfo[];
    expect(boxes.map((b) => b.name)).toEqual(['INBOX', 'Drafts', 'Junk', 'Sent', 'Trash']);
    expect(boxes[0]).toMatchObject({ exists: 1, unseen: 1 });
    const list = (await role.rpc.messages!({ user: BOB })) as StoredMessage[];
    expect(list).toHaveLength(1);
    const { data } = (await role.rpc.read!({ user: BOB, mailbox: 'INBOX', uid: list[0]!.uid })) as { data: string };
    const stored = Buffer.from(data, 'base64').toString();
    expect(stored).toBe(`Return-Path: <alice@sender.test>\r\nDelivered-To: ${BOB}\r\n${message}`);
    const injected = (await role.rpc.deliver!({ user: BOB, data: Buffer.from('Subject: rpc\r\n\r\nx\r\n').toString('base64') })) as StoredMessage;
    expect(injected.uid).toBe(list[0]!.uid + 1);
    expect(ctx.emitted('stored')).toHaveLength(1); // only the LMTP delivery is an event
    await expect(Promise.resolve().then(() => role!.rpc.messages!({ user: 'nobody@receiver.test' }))).rejects.toThrow(/unknown user/);
    await expect(Promise.resolve().then(() => role!.rpc.read!({ user: BOB, uid: 999 }))).rejects.toThrow();

    // The same message over POP3.
    const client = await connectLine(pop3!.port);
    await client.line();
    client.write(`USER ${BOB}\r\nPASS bob-secret\r\nRETR 1\r\n`);
    await client.line();
    await client.line();
    expect(await client.line()).toBe(`+OK ${stored.length} octets`);
    expect((await client.dotBody()).toString()).toBe(stored.replace('\r\n.hello', '\r\n..hello'));
    // Stopping ends the session without UPDATE.
    client.send('DELE 1');
    await client.line();
    const stopping = role.stop();
    role = undefined;
    await stopping;
    await client.waitClosed();
  });

  it('keeps the mailboxes across a restart on the same data directory', async () => {
    ctx = await testContext({ ports: { lmtp: 0 } });
    role = await startMailbox(ctx);
    expect(Object.keys(role.services)).toEqual(['lmtp']);
    await lmtpDeliver(role.services.lmtp!.port, BOB, 'Subject: 1\r\n\r\n1\r\n');
    await lmtpDeliver(role.services.lmtp!.port, BOB, 'Subject: 2\r\n\r\n2\r\n');
    const before = await role.rpc.messages!({ user: BOB });
    await role.stop();
    role = await startMailbox(ctx);
    expect(await role.rpc.messages!({ user: BOB })).toEqual(before);
    await lmtpDeliver(role.services.lmtp!.port, BOB, 'Subject: 3\r\n\r\n3\r\n');
    expect(((await role.rpc.messages!({ user: BOB })) as StoredMessage[]).map((m) => m.uid)).toEqual([1, 2, 3]);
  });

  it('fails to start, closing what it started, when a port is taken', async () => {
    ctx = await testContext({ ports: { lmtp: 0 } });
    const first = await startMailbox(ctx);
    const taken = first.services.lmtp!.port;
    const other = await testContext({ ports: { lmtp: 0, pop3: taken } });
    await expect(startMailbox(other)).rejects.toThrow(/cannot listen for pop3/);
    await first.stop();
    await other.cleanup();
  });
});
