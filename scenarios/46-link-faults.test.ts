// Scenario 46 (issue 15, scenario 5): link faults between the MTA and the MX, through the lab's link proxy, with
// Toxiproxy's toxics. Latency and bandwidth make every delivery slower by at least what the toxics say, and nothing is
// lost; a link that resets its connections defers the mail, which is delivered once the toxic is removed. Toxics are
// added and removed while the lab runs, each change in the history (nemesis `link-change`). Neither node is changed:
// the lab DNS answers mx.receiver.test with the proxy's address, and the MTA still verifies the MX's certificate by
// that name through the proxy (TLS policy `verify` for receiver.test). The MX's LMTP hop, configured by address, goes
// through a second link (the MX's config names that proxy's endpoint).
import { describe, expect, it } from 'vitest';
import { checkDeliveredOnce, type EventOf } from '../src/harness/index.js';
import { useLab } from './support/lab.js';

const LATENCY_MS = 200;
/** KB/s (1 KB = 1000 bytes, as in Toxiproxy). */
const RATE = 100;
const BODY_BYTES = 30_000;
const MESSAGES = 20;

const lab = useLab((l) =>
  l.withLink('mta', 'mx').withLink('mx', 'mailbox').with((d) => {
    d.tls = { ...d.tls, outbound: { ...d.tls?.outbound, domains: { 'receiver.test': 'verify' } } };
  }),
);

/** The MTA's time for one message: from its delivery attempt's start to the MX's 250. */
async function deliveryTime(messageId: string): Promise<{ ms: number; relayed: EventOf<'relayed'> }> {
  const relayed = await lab().waitFor({ kind: 'relayed', messageId }, { timeoutMs: 30_000 });
  const active = lab()
    .history.events.filter((e): e is EventOf<'active'> => e.kind === 'active' && e.messageId === messageId && e.time <= relayed.time)
    .at(-1)!;
  return { ms: relayed.time - active.time, relayed };
}

describe('link faults between the MTA and the MX (issue 15)', () => {
  it('latency and bandwidth: every delivery takes at least what the toxics say, and all 20 arrive once', async () => {
    const link = lab().link('mta', 'mx');
    const mx = lab().node('mx').as('mx');
    const proxy = link.node;
    // A baseline through the proxy without toxics: the hop works and is fast (the second message, on a warm connection).
    let first = await lab().client('alice@sender.test').send({ to: 'bob@receiver.test', subject: 'baseline', text: 'no toxics yet' });
    await checkDeliveredOnce(lab(), 'bob@receiver.test', first.messageId);
    first = await lab().client('alice@sender.test').send({ to: 'bob@receiver.test', subject: 'baseline 2', text: 'no toxics yet' });
    await checkDeliveredOnce(lab(), 'bob@receiver.test', first.messageId);
    const baseline = await deliveryTime(first.messageId);
    expect(baseline.relayed.detail.host).toBe(proxy.config.address); // mx.receiver.test leads to the proxy
    expect(baseline.relayed.detail.tls).not.toBeNull(); // STARTTLS end to end, verified by name through the proxy

    // The MX sees the MTA itself where the runtime lets the proxy keep the client's address (local), else the proxy.
    const received = await lab().waitFor({ kind: 'received', node: 'mx', messageId: first.messageId });
    const client = lab().runtimeKind === 'local' ? lab().node('mta').config.address : proxy.config.address;
    expect(received.detail.client).toContain(client);
    const auth = await lab().waitFor({ kind: 'authenticated', messageId: first.messageId });
    expect(auth.detail.spf.result).toBe('pass');

    await link.addToxic({ type: 'latency', attributes: { latency: LATENCY_MS } });
    const toxics = await link.addToxic({ type: 'bandwidth', stream: 'upstream', attributes: { rate: RATE } });
    expect(toxics.map((t) => t.name)).toEqual(['latency_downstream', 'bandwidth_upstream']);

    const body = 'x'.repeat(99) + '\n';
    const text = body.repeat(BODY_BYTES / body.length);
    const began = Date.now();
    const sent = await Promise.all(
      Array.from({ length: MESSAGES }, (_, i) => lab().client('alice@sender.test').send({ to: 'bob@receiver.test', subject: `slow link ${i}`, text })),
    );
    const times = await Promise.all(sent.map((s) => deliveryTime(s.messageId)));
    // Nothing lost, nothing twice.
    await Promise.all(sent.map((s) => checkDeliveredOnce(lab(), 'bob@receiver.test', s.messageId, { timeoutMs: 30_000 })));
    const took = Date.now() - began;

    // Each message waits for two replies after it starts (DATA's 354, then the 250 after the dot), each delayed by the
    // latency, and its body crosses the link at RATE: a lower bound no delivery can beat.
    const floor = 2 * LATENCY_MS + BODY_BYTES / RATE;
    expect(baseline.ms).toBeLessThan(floor); // so the floor below is the toxics' doing
    const ms = times.map((t) => t.ms).sort((a, b) => a - b);
    for (const t of ms) expect(t).toBeGreaterThanOrEqual(floor);
    // And the link's connections carried the bytes no faster than RATE each.
    const closes = lab().history.events.filter((e): e is EventOf<'link-close'> => e.kind === 'link-close' && e.node === proxy.name);
    const faults = lab().history.events.filter((e): e is EventOf<'fault'> => e.kind === 'fault' && e.node === proxy.name);
    expect(new Set(faults.map((f) => f.detail.action))).toEqual(new Set(['latency', 'bandwidth']));
    // A link's fault names the hop as the MTA's own events do, so the two can be joined.
    expect(faults[0]!.detail).toMatchObject({ source: 'link', hop: baseline.relayed.detail.hop });
    expect(baseline.relayed.detail.hop).toBe(`mta.sender.test -> mx.receiver.test[${proxy.config.address}]:${mx.config.ports.smtp}`);
    console.log(
      `[46] ${lab().runtimeKind}: baseline ${baseline.ms.toFixed(0)} ms; with latency ${LATENCY_MS} ms + ${RATE} KB/s: floor ${floor} ms, ` +
        `per message min ${ms[0]!.toFixed(0)} / median ${ms[Math.floor(ms.length / 2)]!.toFixed(0)} / max ${ms.at(-1)!.toFixed(0)} ms; ${MESSAGES} messages in ${took} ms over ${new Set(faults.map((f) => f.detail.client)).size} connection(s); ${closes.length} closed so far`,
    );

    // Removed while the lab runs: the next delivery is fast again.
    await link.setToxics([]);
    const after = await lab().client('alice@sender.test').send({ to: 'bob@receiver.test', subject: 'fast again', text: 'no toxics' });
    await checkDeliveredOnce(lab(), 'bob@receiver.test', after.messageId);
    expect((await deliveryTime(after.messageId)).ms).toBeLessThan(floor);
    const changes = lab().history.events.filter((e): e is EventOf<'link-change'> => e.kind === 'link-change');
    expect(changes.map((c) => c.detail.toxics.map((t) => t.type))).toEqual([['latency'], ['latency', 'bandwidth'], []]);
    expect(changes[0]!.detail).toMatchObject({ target: proxy.name, role: 'proxy', from: 'mta', to: 'mx' });
  });

  it('reset_peer: the delivery is deferred while the link resets its connections, and delivered once it is removed', async () => {
    const link = lab().link('mta', 'mx');
    await link.setToxics([{ type: 'reset_peer', attributes: { timeout: 0 } }]);
    const sent = await lab().client('alice@sender.test').send({ to: 'bob@receiver.test', subject: 'through a resetting link', text: 'try again' });
    const deferred = await lab().waitFor({ kind: 'deferred', messageId: sent.messageId });
    expect(deferred.detail.error).toMatch(/ECONNRESET|reset|closed/i);
    const reset = await lab().waitFor({ kind: 'fault', node: link.node.name, detail: { action: 'reset_peer' } });
    expect(reset.detail).toMatchObject({ source: 'link', action: 'reset_peer', rule: 'reset_peer_downstream' });
    expect(await lab().mailbox('bob@receiver.test').find(sent.messageId)).toEqual([]);

    await link.removeToxic('reset_peer_downstream');
    await lab().mta().flush();
    await checkDeliveredOnce(lab(), 'bob@receiver.test', sent.messageId);
    // The trace says why: the link's change before the deferral, and its removal before the delivery.
    const trace = lab().trace(sent.messageId).map((e) => `${e.node}:${e.kind}`);
    expect(trace.indexOf('mta:deferred')).toBeGreaterThan(trace.indexOf('nemesis:link-change'));
    expect(trace.lastIndexOf('mailbox:stored')).toBeGreaterThan(trace.lastIndexOf('nemesis:link-change'));
  });

  it('a link by address: the MX\'s LMTP hand-off passes its proxy; sliced and delayed it still delivers, cut short it defers', async () => {
    const link = lab().link('mx', 'mailbox');
    const mx = lab().node('mx').as('mx');
    expect(mx.config.lmtp.host).toBe(link.node.config.address);
    await link.setToxics([
      { type: 'slicer', stream: 'upstream', attributes: { average_size: 64, size_variation: 16, delay: 200 } },
      { type: 'latency', attributes: { latency: 50, jitter: 10 } },
    ]);
    const sent = await lab().client('alice@sender.test').send({ to: 'carol@receiver.test', subject: 'in slices', text: `${'y'.repeat(70)}\n`.repeat(70) });
    const stored = await checkDeliveredOnce(lab(), 'carol@receiver.test', sent.messageId);
    expect(stored.raw.toString().split('y'.repeat(70)).length - 1).toBe(70); // every slice arrived, in order
    const sliced = await lab().waitFor({ kind: 'fault', node: link.node.name, detail: { action: 'slicer' } });
    expect(sliced.detail.stage).toBe('upstream');
    // The mailbox server sees the MX where the proxy keeps the client's address (local); on docker it sees the proxy,
    // which the lab added to its LMTP clients.
    const open = await lab().waitFor({ kind: 'link-open', node: link.node.name, detail: { service: 'lmtp' } });
    expect(open.detail.source).toBe(lab().runtimeKind === 'local' ? mx.config.address : link.node.config.address);

    // The LMTP connection closed after 300 bytes: the MX cannot hand off, says 451, and the MTA defers.
    await link.setToxics([{ type: 'limit_data', stream: 'upstream', attributes: { bytes: 300 } }]);
    const cut = await lab().client('alice@sender.test').send({ to: 'carol@receiver.test', subject: 'cut short', text: 'z'.repeat(2000) });
    const failed = await lab().waitFor({ kind: 'handoff-failed', messageId: cut.messageId });
    expect(failed.detail.to).toContain(link.node.config.address);
    const deferred = await lab().waitFor({ kind: 'deferred', messageId: cut.messageId });
    expect(deferred.detail.reply).toMatch(/^451/);
    await link.setToxics([]);
    await lab().mta().flush();
    await checkDeliveredOnce(lab(), 'carol@receiver.test', cut.messageId);
  });
});
