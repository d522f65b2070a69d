// Scenario 5: two MX hosts. The lower preference wins; when it is down the other takes the mail; a moved MX
// record takes effect on the next delivery.
import { describe, expect, it } from 'vitest';
import { checkDeliveredOnce, NEMESIS } from '../src/harness/index.js';
import { useLab } from './support/lab.js';
import { scenarioServers } from './support/servers.js';

const servers = await scenarioServers('05-mx-preference');

describe.skipIf(servers.skip)('MX preference', () => {
  // The zone lists the backup first: the lab DNS answers in zone order, so only the MTA's sorting by preference
  // (RFC 5321 §5.1) makes the preferred MX win.
  const lab = useLab((l) =>
    l
      .withHost('mx2', { role: 'mx', hostname: 'mx2.receiver.test', domains: ['receiver.test'], mailbox: 'mailbox' })
      .withMx('receiver.test', [
        { host: 'mx2', preference: 20 },
        { host: 'mx', preference: 10 },
      ]),
  );

  async function sendAndWhoReceived(subject: string): Promise<string> {
    const sent = await lab().client('alice@sender.test').send({ to: 'bob@receiver.test', subject, text: subject });
    const received = await lab().waitFor({ kind: 'received', messageId: sent.messageId });
    await checkDeliveredOnce(lab(), 'bob@receiver.test', sent.messageId);
    return received.node;
  }

  it('uses the MX with the lowest preference value', async () => {
    const answer = await lab().dns.lookup('receiver.test', 'MX');
    expect(answer.answers.map((r) => ('exchange' in r ? r.exchange : r.type))).toEqual(['mx2.receiver.test', 'mx.receiver.test']);
    const before = Date.now();
    expect(await sendAndWhoReceived('to the preferred MX')).toBe('mx');
    if (servers.mta === 'postfix') {
      // Postfix logs no MX lookup: the lab DNS shows that it asked for receiver.test's MX during the delivery and got
      // the backup first, so the preference order is Postfix's doing.
      const queries = lab().history.filter({ kind: 'dns-query', node: 'dns', where: (e) => e.time >= before && e.detail.name === 'receiver.test' && e.detail.type === 'MX' });
      expect(queries.length).toBeGreaterThan(0);
      expect(queries.at(-1)!.detail).toMatchObject({ rcode: 'NOERROR', answers: ['MX 20 mx2.receiver.test', 'MX 10 mx.receiver.test'] });
    } else {
      const lookup = lab().history.filter({ kind: 'mx-lookup', where: (e) => e.detail.domain === 'receiver.test' }).at(-1)!;
      expect(lookup.detail.result).toMatchObject({ kind: 'mx', hosts: [{ exchange: 'mx.receiver.test', priority: 10 }, { exchange: 'mx2.receiver.test', priority: 20 }] });
    }
  });

  it('falls back to the next MX when the preferred one is down', async () => {
    await lab().node('mx').stop();
    try {
      expect(await sendAndWhoReceived('to the backup MX')).toBe('mx2');
    } finally {
      await lab().node('mx').start();
    }
  });

  it('follows an MX record moved while the lab runs', async () => {
    await lab().dns.setMx('receiver.test', [{ host: 'mx2', preference: 10 }]);
    // The edit is in the history, as the nemesis's action.
    expect(lab().history.filter({ kind: 'dns-edit', node: NEMESIS }).at(-1)?.detail).toMatchObject({
      target: 'dns',
      operation: 'set-records',
      args: { name: 'receiver.test', type: 'MX', records: [{ exchange: 'mx2.receiver.test', priority: 10 }] },
    });
    expect(await sendAndWhoReceived('after the MX moved')).toBe('mx2');
    await lab().dns.setMx('receiver.test', [{ host: 'mx', preference: 10 }]);
    expect(await sendAndWhoReceived('after the MX moved back')).toBe('mx');
  });
});
