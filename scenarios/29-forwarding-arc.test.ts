// Scenario 29 (issue 12, forwarding): carol@receiver.test forwards her mail to dave@final.test. receiver.test's MX
// verifies what arrives, seals the verdict with ARC (RFC 8617, d=receiver.test) and re-sends the message through
// receiver.test's own MTA (mta.receiver.test, which relays for the MX), keeping alice's envelope sender, as plain
// forwarding does (no SRS). At final.test's MX the connecting host is mta.receiver.test, which sender.test's SPF does
// not list: SPF fails. alice's DKIM signature survives, so DMARC passes on DKIM; the ARC chain carries the first
// hop's spf=pass. final.test's MX trusts the receiver.test sealer, which saves a message DKIM cannot save.
//
//   alice → mta.sender.test → mx.receiver.test ──(ARC seal)──▶ mta.receiver.test → mx.final.test → dave
import { describe, expect, it } from 'vitest';
import type { LabDefinition, StartedLab } from '../src/harness/index.js';
import { headerSection } from '../src/harness/index.js';
import { useLab } from './support/lab.js';

const CAROL = 'carol@receiver.test';
const DAVE = 'dave@final.test';

function forwardingLab(def: LabDefinition): void {
  def.domains['final.test'] = { mx: [{ host: 'mx2', preference: 10 }] };
  def.users.push({ address: DAVE, password: 'dave-secret' });
  def.hosts.relay = { role: 'mta', hostname: 'mta.receiver.test' };
  def.hosts.mx2 = { role: 'mx', hostname: 'mx.final.test', domains: ['final.test'], mailbox: 'mailbox', trustArcSealers: ['receiver.test'] };
  const mx = def.hosts.mx!;
  if (mx.role === 'mx') Object.assign(mx, { forwards: { [CAROL]: DAVE }, forwardVia: 'relay' });
}

/** The header fields named `name` of dave's copy, unfolded, topmost first. */
async function headersOf(lab: StartedLab, messageId: string, name: string): Promise<string[]> {
  await lab.waitFor({ kind: 'stored', messageId, detail: { user: DAVE } });
  const [copy] = await lab.mailbox(DAVE).find(messageId);
  return headerSection(copy!.raw)
    .split(/\r\n(?=\S)/)
    .filter((h) => h.toLowerCase().startsWith(`${name.toLowerCase()}:`))
    .map((h) => h.replace(/\r\n\s+/g, ' '));
}

describe('forwarding through another domain', () => {
  const lab = useLab((l) => l.with(forwardingLab));

  it('SPF fails at the final MX, DKIM survives and DMARC passes on it, ARC carries the first verdict', async () => {
    const sent = await lab().client('alice@sender.test').send({ to: CAROL, subject: 'forward me', text: 'to wherever carol reads mail\n' });

    const forwarded = await lab().waitFor({ kind: 'forwarded', messageId: sent.messageId, detail: { rcpt: CAROL } });
    expect(forwarded.detail).toMatchObject({ to: DAVE, accepted: true, arc: { instance: 1, domain: 'receiver.test', selector: 'arc' } });
    const first = await lab().waitFor({ kind: 'authenticated', node: 'mx', messageId: sent.messageId });
    expect(first.detail).toMatchObject({ spf: { result: 'pass' }, dmarc: { result: 'pass' } });

    const final = await lab().waitFor({ kind: 'authenticated', node: 'mx2', messageId: sent.messageId });
    const relay = lab().nodeOf('mta', 'relay').config;
    // Seen once under CI load: dkim=fail at the final MX. The verifier's own words go with a failure, to say why.
    expect(final.detail, `the final MX's DKIM results: ${JSON.stringify(final.detail.dkim)}`).toMatchObject({
      action: 'accept',
      spf: { result: 'fail', domain: 'sender.test', ip: relay.address },
      dkim: [{ result: 'pass', domain: 'sender.test', aligned: true }],
      dmarc: { result: 'pass' },
      arc: { result: 'pass', sealers: ['receiver.test'] },
    });
    // The relay sent it with alice's envelope sender (plain forwarding), from its own address.
    const relayed = await lab().waitFor({ kind: 'relayed', node: 'relay', messageId: sent.messageId, detail: { rcpt: DAVE } });
    expect(relayed.detail.mx).toBe('mx.final.test');

    const [results] = await headersOf(lab(), sent.messageId, 'Authentication-Results');
    expect(results).toMatch(/^Authentication-Results: mx\.final\.test;/);
    for (const verdict of [/\bspf=fail\b[^;]*smtp\.mailfrom=alice@sender\.test/, /\bdkim=pass header\.i=@sender\.test header\.s=lab\b/, /\barc=pass \(i=1 spf=pass\b/, /\bdmarc=pass\b/]) expect(results).toMatch(verdict);
    const [sealed] = await headersOf(lab(), sent.messageId, 'ARC-Authentication-Results');
    expect(sealed).toMatch(/^ARC-Authentication-Results: i=1; mx\.receiver\.test; .*\bspf=pass\b.*\bdmarc=pass\b/);
    const [seal] = await headersOf(lab(), sent.messageId, 'ARC-Seal');
    expect(seal).toMatch(/\bi=1;.*\bd=receiver\.test;.*\bs=arc;.*\bcv=none\b|\bcv=none;.*\bd=receiver\.test/);
  });

  it('a message only SPF vouched for fails DMARC after forwarding, and the trusted ARC sealer saves it', async () => {
    // alice's MTA stops signing: at the first MX SPF alone (aligned) passes DMARC; after forwarding nothing does.
    await lab().mta().setDkim([]);
    const sent = await lab().client('alice@sender.test').send({ to: CAROL, subject: 'unsigned', text: 'only SPF vouches for me\n' });
    const final = await lab().waitFor({ kind: 'authenticated', node: 'mx2', messageId: sent.messageId });
    expect(final.detail).toMatchObject({ action: 'accept-arc-override', spf: { result: 'fail' }, dkim: [], dmarc: { result: 'fail' }, arc: { result: 'pass', trustedSealer: 'receiver.test' } });
    expect(final.detail.header).toMatch(/policy\.override=arc/);
    await lab().waitFor({ kind: 'stored', messageId: sent.messageId, detail: { user: DAVE } });
    expect(lab().history.filter({ kind: 'dkim-change' }).map((e) => e.detail.signers)).toEqual([[]]);
  });
});
