// Scenario 38 (issue 14): servers the user runs outside the lab, and the transport map. The test starts them itself,
// outside the lab, as a user would run their own: an SMTP server (Node's smtp-server package in this process) on a
// non-standard port, and Debian's Dovecot (src/real/dovecot's adapter) with LMTP and IMAP on non-standard ports. The
// lab knows them only as `external` hosts (address, ports): it publishes them in its DNS (A and PTR), probes them
// before it starts, lists them in `up --json`, and its MTA and MX deliver to them:
//
//   alice ──587──▶ mta ──MX of receiver2.test──▶ smtp.partner.test:2525   (an MX on another port: relayPorts)
//                   │  ──transport relay.test──▶ smtp.partner.test:2525   (no MX lookup: relay.test has a null MX)
//                   └──MX of receiver.test──▶ mx ──LMTP──▶ Dovecot :2424 (an external mailbox of maillab's MX)
//
// A lab whose external server is not listening does not start, and says where it looked. Local runtime only: on the
// docker runtime the lab network cannot reach the host's loopback, and the runtime refuses such a lab (checked here).
import { promises as fs } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { SMTPServer } from 'smtp-server';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createLabResolver } from '../src/dns/index.js';
import { Lab, type LabDefinition } from '../src/harness/index.js';
import type { MailboxContract, MailboxEvents } from '../src/mailbox/api.js';
import { dovecotUnavailable, startDovecotMailbox } from '../src/real/dovecot/node.js';
import { mailboxConfig, randomLoopback } from '../src/real/dovecot/testkit.test-helper.js';
import { EventLog } from '../src/shared/events.js';
import { headerValue } from '../src/shared/headers.js';
import type { RunningRole } from '../src/shared/node.js';
import { defaultLab, useLab } from './support/lab.js';
import { resolveMxRecords } from '../src/dns/resolver.js';

const ON_DOCKER = (process.env.MAILLAB_RUNTIME ?? 'local') === 'docker';
if (!ON_DOCKER) process.stderr.write('SKIP: [38-external-servers] the docker runtime\'s refusal of external hosts is checked when the suite runs on it (MAILLAB_RUNTIME=docker)\n');
if (ON_DOCKER) process.stderr.write('SKIP: [38-external-servers] external servers run on the host\'s loopback, which the docker runtime\'s lab network cannot reach: the delivery scenarios run on the local runtime (the docker runtime\'s refusal is checked)\n');

/** The user's SMTP server on its own loopback address (.1 is never a lab node's: nodes get .2 and up). */
const PARTNER = { address: randomLoopback(1), port: 2525, hostname: 'smtp.partner.test' };

interface Received {
  from: string;
  to: string[];
  messageId: string | undefined;
  raw: Buffer;
}

/**
 * The user's own SMTP server: smtp-server as a small MX of their own, no TLS and no AUTH, keeping what it accepts; a
 * test waits for a message through `waitFor`, bounded in time (no sleeping).
 */
class UserSmtpServer {
  readonly received: Received[] = [];
  private readonly waiters: (() => void)[] = [];
  private readonly server = new SMTPServer({
    name: PARTNER.hostname,
    disabledCommands: ['STARTTLS', 'AUTH'],
    logger: false,
    onData: (stream, session, callback) => {
      const chunks: Buffer[] = [];
      stream.on('data', (c: Buffer) => chunks.push(c));
      stream.on('end', () => {
        const raw = Buffer.concat(chunks);
        const mailFrom = session.envelope.mailFrom;
        this.received.push({ from: mailFrom ? mailFrom.address : '', to: session.envelope.rcptTo.map((r) => r.address), messageId: headerValue(raw, 'message-id'), raw });
        for (const wake of this.waiters.splice(0)) wake();
        callback(null, 'Ok: queued by the partner');
      });
    },
  });

  listen(address: string, port: number): Promise<void> {
    return new Promise((resolve, reject) => {
      this.server.once('error', reject);
      this.server.listen(port, address, () => resolve());
    });
  }

  close(): Promise<void> {
    return new Promise((resolve) => this.server.close(() => resolve()));
  }

  /** The message with this Message-ID, once it arrived; fails after `timeoutMs` listing what did arrive. */
  async waitFor(messageId: string, timeoutMs = 10_000): Promise<Received> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const found = this.received.find((m) => m.messageId === messageId);
      if (found) return found;
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`the partner's server got no message ${messageId} within ${timeoutMs} ms (got: ${this.received.map((m) => m.messageId).join(', ') || 'nothing'})`);
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, left);
        this.waiters.push(() => (clearTimeout(timer), resolve()));
      });
    }
  }
}

/** The default lab with the partner's server: receiver2.test's MX, and relay.test's route in the transport map. */
function partnerLab(): LabDefinition {
  const lab = structuredClone(defaultLab);
  lab.name = 'external';
  lab.hosts.partner = { role: 'external', hostname: PARTNER.hostname, address: PARTNER.address, ports: { smtp: PARTNER.port } };
  lab.domains['receiver2.test'] = { mx: [{ host: 'partner', preference: 10 }] };
  // relay.test says it takes no mail (null MX): only the transport map can get mail there.
  lab.domains['relay.test'] = { nullMx: true };
  lab.transport = { 'relay.test': { host: 'partner' } };
  return lab;
}

describe.runIf(ON_DOCKER)('external servers on the docker runtime', () => {
  it('are refused up front, saying why', async () => {
    await expect(new Lab(partnerLab()).withRuntime('docker').start()).rejects.toThrow(
      /lab external: external host partner \(smtp\.partner\.test at 127\.\d+\.\d+\.1\) on the host's loopback cannot be reached from the docker runtime's lab network: use the local runtime/,
    );
  });
});

describe.skipIf(ON_DOCKER)('an SMTP server of the user\'s, outside the lab', () => {
  const partner = new UserSmtpServer();
  beforeAll(() => partner.listen(PARTNER.address, PARTNER.port));
  afterAll(() => partner.close());
  const lab = useLab((l) => l, { definition: partnerLab() });

  it('is published in the lab DNS (A and PTR), listed with the lab, and no node', async () => {
    const resolver = createLabResolver(lab().dns.node.service('dns'));
    expect(await resolver.resolve4(PARTNER.hostname)).toEqual([PARTNER.address]);
    expect(await resolver.reverse(PARTNER.address)).toEqual([PARTNER.hostname]);
    expect(await resolveMxRecords(resolver, 'receiver2.test')).toEqual([{ exchange: PARTNER.hostname, priority: 10 }]);
    expect(lab().describe().externals).toEqual({ partner: { kind: 'external', hostname: PARTNER.hostname, host: PARTNER.address, ports: { smtp: PARTNER.port } } });
    expect(lab().external('partner').service('smtp')).toEqual({ host: PARTNER.address, port: PARTNER.port });
    expect(() => lab().node('partner')).toThrow(/host partner is an external server \(smtp\.partner\.test at 127\.\d+\.\d+\.1, smtp 2525\), run outside the lab: it has no node to stop, start or control; lab\.external\('partner'\) describes it/);
    expect(() => lab().nodeOf('mx', 'partner')).toThrow(/host partner is an external server/);
  });

  it('gets receiver2.test\'s mail as its MX, on its own port (the transport map\'s port per MX host)', async () => {
    const sent = await lab().client('alice@sender.test').send({ to: 'erin@receiver2.test', subject: 'to the partner', text: 'over port 2525\n' });
    const got = await partner.waitFor(sent.messageId);
    expect(got).toMatchObject({ from: 'alice@sender.test', to: ['erin@receiver2.test'] });
    expect(got.raw.toString('utf8')).toMatch(/over port 2525/);
    const relayed = await lab().waitFor({ kind: 'relayed', node: 'mta', messageId: sent.messageId });
    expect(relayed.detail).toMatchObject({ rcpt: 'erin@receiver2.test', mx: PARTNER.hostname, hop: `mta.sender.test -> ${PARTNER.hostname}[${PARTNER.address}]:${PARTNER.port}` });
    expect(relayed.detail.reply).toMatch(/^250 .*Ok: queued by the partner/);
    const lookup = await lab().waitFor({ kind: 'mx-lookup', node: 'mta', detail: { domain: 'receiver2.test' } });
    expect(lookup.detail.result).toMatchObject({ kind: 'mx', hosts: [{ exchange: PARTNER.hostname, addresses: [PARTNER.address] }] });
    const connects = lab().trace(sent.messageId).filter((e) => e.kind === 'connect');
    expect(connects.map((e) => e.detail)).toEqual([expect.objectContaining({ host: PARTNER.address, port: PARTNER.port, mx: PARTNER.hostname })]);
  });

  it('gets relay.test\'s mail through the transport map, without an MX lookup (relay.test has a null MX)', async () => {
    const sent = await lab().client('alice@sender.test').send({ to: 'frank@relay.test', subject: 'by transport', text: 'no MX asked\n' });
    expect(await partner.waitFor(sent.messageId)).toMatchObject({ to: ['frank@relay.test'] });
    const relayed = await lab().waitFor({ kind: 'relayed', node: 'mta', messageId: sent.messageId });
    expect(relayed.detail.hop).toBe(`mta.sender.test -> ${PARTNER.hostname}[${PARTNER.address}]:${PARTNER.port}`);
    // Had the MTA asked, the null MX would have bounced it (RFC 7505).
    expect(lab().history.events.filter((e) => e.kind === 'mx-lookup' && (e.detail as { domain?: string }).domain === 'relay.test')).toEqual([]);
  });
});

describe.skipIf(ON_DOCKER)('an external server that is not there', () => {
  it('fails the lab\'s start, naming the host, its address, the port and what was seen', async () => {
    const lab = partnerLab();
    // Nothing listens on this address: the probe is refused until ready.timeoutMs.
    const address = randomLoopback(1);
    lab.hosts.partner = { role: 'external', hostname: PARTNER.hostname, address, ports: { smtp: 2526 }, ready: { timeoutMs: 500 } };
    const started = Date.now();
    // A lab that started after all (the probe broken) is stopped, and the test fails.
    const start = new Lab(lab).withRuntime('local').start().then(async (started) => (await started.stop(), started));
    await expect(start).rejects.toThrow(
      `lab external cannot start: external host partner (smtp.partner.test, ${address}) is not ready: smtp port 2526: no connection: connect ECONNREFUSED ${address}:2526 (probed for 500 ms, ready.timeoutMs)`,
    );
    expect(Date.now() - started).toBeLessThan(10_000);
  });
});

const dovecotSkip = ON_DOCKER ? 'the docker runtime' : dovecotUnavailable();
if (dovecotSkip && !ON_DOCKER) process.stderr.write(`SKIP: [38-external-servers] the user's Dovecot cannot run here: ${dovecotSkip}\n`);

describe.skipIf(dovecotSkip !== undefined)('a Dovecot of the user\'s as the mailbox of maillab\'s MX (LMTP)', () => {
  const STORE = { address: randomLoopback(1), hostname: 'imap.receiver.test', ports: { lmtp: 2424, imap: 1143 } };
  let dovecot: RunningRole<MailboxContract> | undefined;
  let dataDir: string;
  beforeAll(async () => {
    dataDir = await fs.mkdtemp(path.join(os.tmpdir(), 'maillab-user-dovecot-'));
    // Dovecot delivers as Debian's mail user: it must get through to its directories under this one.
    await fs.chmod(dataDir, 0o711);
    const users = defaultLab.users.filter((u) => u.address.endsWith('@receiver.test'));
    const config = mailboxConfig({ hostname: STORE.hostname, address: STORE.address, dataDir, ports: STORE.ports, users });
    dovecot = await startDovecotMailbox({ config, events: new EventLog<MailboxEvents>('user-dovecot'), log: () => undefined });
  }, 30_000);
  afterAll(async () => {
    await dovecot?.stop();
    if (dataDir) await fs.rm(dataDir, { recursive: true, force: true });
  });
  const lab = useLab(
    (l) =>
      l
        .withHost('store', { role: 'external', hostname: STORE.hostname, address: STORE.address, ports: STORE.ports })
        .withHost('mx', { role: 'mx', hostname: 'mx.receiver.test', domains: ['receiver.test'], mailbox: 'store' }),
    { definition: { ...structuredClone(defaultLab), name: 'external-dovecot' } },
  );

  it('alice → bob: maillab\'s MX hands the message to the user\'s Dovecot over LMTP on its port, where bob finds it', async () => {
    const resolver = createLabResolver(lab().dns.node.service('dns'));
    expect(await resolver.resolve4(STORE.hostname)).toEqual([STORE.address]);
    expect(await resolver.reverse(STORE.address)).toEqual([STORE.hostname]);

    const sent = await lab().client('alice@sender.test').send({ to: 'bob@receiver.test', subject: 'to the user\'s Dovecot', text: 'stored outside the lab\n' });
    const handoff = await lab().waitFor({ kind: 'handoff', node: 'mx', messageId: sent.messageId });
    expect(handoff.detail.to).toBe(`LMTP ${STORE.address}:${STORE.ports.lmtp}`);
    expect(handoff.detail.recipients).toEqual([expect.objectContaining({ address: 'bob@receiver.test', accepted: true, code: 250 })]);
    await lab().waitFor({ kind: 'relayed', node: 'mta', messageId: sent.messageId });
    // In the user's server: read through its own doveadm, not through the lab.
    const inbox = await dovecot!.rpc.messages({ user: 'bob@receiver.test', mailbox: 'INBOX' });
    expect(inbox).toHaveLength(1);
    const raw = Buffer.from((await dovecot!.rpc.read({ user: 'bob@receiver.test', mailbox: 'INBOX', uid: inbox[0]!.uid })).data, 'base64');
    expect(headerValue(raw, 'message-id')).toBe(sent.messageId);
    // The lab's own mailbox server got nothing for bob.
    expect(await lab().mailbox('bob@receiver.test').find(sent.messageId)).toEqual([]);
  });
});
