// Issue 15: IMAP flags converge across devices after a partition heals. Two devices of bob; the phone is cut off
// (its own IMAP session dropped, as in airplane mode: the lab's other clients keep the mailbox) while the laptop reads
// one message (\Seen), stars another (\Flagged), deletes a third and new mail arrives. Cut off, the phone's copy is
// stale and checkFlagsConverge fails naming it and the message; once it reconnects (a new session and a full resync)
// the devices agree. On docker the mailbox node is also really partitioned (off the lab network): the phone cannot
// reconnect while it is, and can once it is healed.
import { describe, expect, it } from 'vitest';
import { CheckFailure, checkFlagsConverge } from '../src/harness/index.js';
import { useLab } from './support/lab.js';
import { scenarioServers } from './support/servers.js';

const servers = await scenarioServers('48-flags-converge');
const BOB = 'bob@receiver.test';
const PHONE = `${BOB}/phone`;
const LAPTOP = `${BOB}/laptop`;

describe.skipIf(servers.skip)('IMAP flags converge across devices after a partition heals', () => {
  const lab = useLab(undefined, { scope: 'test' });

  /** Three messages for bob, on both devices. */
  async function setUp() {
    const phone = await lab().imap(BOB, { device: 'phone' });
    const laptop = await lab().imap(BOB, { device: 'laptop' });
    const ids: string[] = [];
    for (const subject of ['read me', 'star me', 'delete me']) {
      const sent = await lab().client('alice@sender.test').send({ to: BOB, subject, text: subject });
      ids.push(sent.messageId);
    }
    await Promise.all(ids.flatMap((id) => [phone.waitForMessage(id, 10_000), laptop.waitForMessage(id, 10_000)]));
    // The premise: both devices agree before anything happens.
    expect(await checkFlagsConverge(lab(), { user: BOB, timeoutMs: 2000 })).toEqual({ devices: [LAPTOP, PHONE], messages: 3 });
    return { phone, laptop, read: ids[0]!, star: ids[1]!, gone: ids[2]! };
  }

  /** While the phone is away: \Seen, \Flagged, a deletion on the laptop, and new mail. */
  async function changeOnLaptop(laptop: Awaited<ReturnType<typeof setUp>>['laptop'], { read, star, gone }: { read: string; star: string; gone: string }) {
    await laptop.read(read);
    await laptop.flag(star, '\\Flagged');
    await laptop.delete(gone);
    const fresh = await lab().client('alice@sender.test').send({ to: BOB, subject: 'while away', text: 'new' });
    await laptop.waitForMessage(fresh.messageId, 10_000);
    await laptop.waitForFlag(read, '\\Seen');
    await laptop.waitForFlag(star, '\\Flagged');
    await laptop.waitForRemoval(gone);
    return fresh.messageId;
  }

  it('a cut-off device is stale and the checker names it; reconnected, it resyncs and the devices agree', { timeout: 60_000 }, async () => {
    const { phone, laptop, read, star, gone } = await setUp();
    const cutAt = Date.now();
    phone.cut();
    expect(phone.connected).toBe(false);
    const fresh = await changeOnLaptop(laptop, { read, star, gone });

    // The phone heard nothing: its copy is the one from before the cut.
    expect(phone.find(read)!.flags.has('\\Seen')).toBe(false);
    expect(phone.find(star)!.flags.has('\\Flagged')).toBe(false);
    expect(phone.find(gone)).toBeDefined();
    expect(phone.find(fresh)).toBeUndefined();
    await expect(phone.sync()).rejects.toThrow(`IMAP device ${PHONE}: cannot sync`);
    expect(lab().history.filter({ node: PHONE, where: (e) => e.time >= cutAt }).map((e) => e.kind)).toEqual(['device-offline']);

    // Negative: without a reconnect the devices never agree, and the checker says which device and message.
    const failure = await checkFlagsConverge(lab(), { user: BOB, timeoutMs: 1500, after: cutAt }).then(
      () => undefined,
      (err: unknown) => err,
    );
    expect(failure).toBeInstanceOf(CheckFailure);
    const message = (failure as CheckFailure).message;
    expect(message).toMatch(/^IMAP flags did not converge: message /);
    expect(message).toContain(`message ${read} (uid ${phone.find(read)!.uid}): ${LAPTOP} [\\Seen], ${PHONE} []`);
    expect((failure as CheckFailure).events.some((e) => e.node === PHONE)).toBe(true);

    // Back online: a new session and a full resync, recorded as the phone's events.
    const back = Date.now();
    await phone.reconnect();
    expect(phone.connected).toBe(true);
    const report = await checkFlagsConverge(lab(), { user: BOB, timeoutMs: 5000 });
    expect(report).toEqual({ devices: [LAPTOP, PHONE], messages: 3 });
    const after = lab().history.filter({ node: PHONE, where: (e) => e.time >= back });
    expect(after.map((e) => `${e.kind} ${e.messageId ?? ''}`).sort()).toEqual(
      [`device-flags ${read}`, `device-flags ${star}`, `device-removed ${gone}`, `device-synced ${fresh}`, 'device-reconnected '].sort(),
    );
    expect(phone.find(read)!.flags.has('\\Seen')).toBe(true);
    expect(phone.find(star)!.flags.has('\\Flagged')).toBe(true);
    expect(phone.find(gone)).toBeUndefined();
    // The devices agree with the server too.
    const shared = (flags: Iterable<string>) => [...flags].filter((f) => f !== '\\Recent').sort().join(' ');
    const onServer = (await lab().mailbox(BOB).messages()).map((m) => `${m.uid} [${shared(m.flags)}]`);
    expect([...phone.inbox.values()].map((m) => `${m.uid} [${shared(m.flags)}]`).sort()).toEqual(onServer.sort());

    // And it hears pushes again: a flag set on the laptop reaches the phone by IDLE.
    await laptop.flag(fresh, '\\Flagged');
    await phone.waitForFlag(fresh, '\\Flagged', true, 5000);
    await checkFlagsConverge(lab(), { user: BOB, timeoutMs: 5000 });
  });

  it('docker: the mailbox node partitioned off the lab network; the phone reconnects once it is healed', { timeout: 120_000 }, async (ctx) => {
    if (lab().runtimeKind !== 'docker') {
      const reason = `the local runtime cannot partition a node (node.disconnect() is docker only); runtime: ${lab().runtimeKind}`;
      console.log(`skip: ${ctx.task.name}: ${reason}`);
      return ctx.skip(reason);
    }
    const { phone, laptop, read, star, gone } = await setUp();
    phone.cut();
    const fresh = await changeOnLaptop(laptop, { read, star, gone });

    // A real partition: nobody reaches the mailbox, the phone's reconnect fails (bounded), naming the device.
    const partitionedAt = Date.now();
    await lab().node('mailbox').disconnect();
    let refused: unknown;
    const tried = Date.now();
    try {
      refused = await phone.reconnect().then(() => undefined, (err: unknown) => err);
    } finally {
      await lab().node('mailbox').connect();
    }
    console.log(`during the partition (${Date.now() - tried} ms): ${(refused as Error | undefined)?.message ?? 'the phone reconnected'}; laptop session ${laptop.connected ? 'still up' : 'ended'}`);
    expect((refused as Error | undefined)?.message).toMatch(`IMAP device ${PHONE}: cannot reconnect`);
    // Bounded: the device gives up within its connection and greeting timeouts (5 s each), not imapflow's 90 s.
    expect(Date.now() - tried).toBeLessThan(15_000);
    expect(phone.connected).toBe(false);
    expect(phone.find(gone)).toBeDefined();

    // Healed: the phone reconnects, and the laptop too if the partition ended its session.
    await phone.reconnect();
    if (!laptop.connected) {
      // The partition ended the laptop's session too: recorded as it happened, and it reconnects as the phone does.
      expect(lab().history.filter({ node: LAPTOP, kind: 'device-offline', where: (e) => e.time >= partitionedAt }).map((e) => e.detail.reason)).toEqual(['the IMAP session ended (server or network)']);
      await laptop.reconnect();
    }
    expect(await checkFlagsConverge(lab(), { user: BOB, timeoutMs: 10_000, after: partitionedAt })).toEqual({ devices: [LAPTOP, PHONE], messages: 3 });
    expect(phone.find(read)!.flags.has('\\Seen')).toBe(true);
    expect(phone.find(star)!.flags.has('\\Flagged')).toBe(true);
    expect(phone.find(fresh)).toBeDefined();
    expect(lab().history.filter({ node: PHONE, kind: 'device-reconnected' }).map((e) => e.detail.attempt)).toEqual([1]);
  });
});
