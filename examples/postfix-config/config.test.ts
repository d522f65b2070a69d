// The configuration regression example (examples/postfix-config/README.md): main.cf, the company's inbound MX, run
// as the lab's MX (lab.ts), with each behaviour the company relies on pinned by one check (checks.ts) and the
// reply Postfix gave. Local runtime, as root, with Postfix and Dovecot installed; skipped otherwise, saying why.
import { describe, expect, it } from 'vitest';
import { useLab } from '../../scenarios/support/lab.js';
import definition, { OUTBOUND_LIFETIME_MS, postfixOutboundLab } from './lab.js';
import { checkDeliveredThroughMx, checkDsnForUnreachableDestination, checkNoOpenRelay, checkNoSmuggling, checkSizeLimit, checkStartTls, checkUnknownUserRefused, checkClientEtiquette } from './checks.js';
import { whyRealServersSkip } from '../../scenarios/support/real-servers.js';

const skip = whyRealServersSkip('examples/postfix-config', ['postfix', 'dovecot']);

describe.skipIf(skip !== undefined)('the company MX (examples/postfix-config/main.cf)', () => {
  const lab = useLab((l) => l, { definition });

  it('is no open relay: RCPT TO an outside domain is refused (554 5.7.1 Relay access denied)', async () => {
    const reply = await checkNoOpenRelay(lab());
    expect(reply.text).toBe('554 5.7.1 <someone@elsewhere.test>: Relay access denied');
  });

  it('refuses unknown users at RCPT TO (550 5.1.1)', async () => {
    const reply = await checkUnknownUserRefused(lab());
    expect(reply.text).toMatch(/^550 5\.1\.1 <nobody@receiver\.test>: Recipient address rejected: User unknown/);
  });

  it('advertises SIZE 10240000 and refuses MAIL FROM with SIZE=20000000 (552 5.3.4)', async () => {
    const reply = await checkSizeLimit(lab(), 10_240_000);
    expect(reply.text).toBe('552 5.3.4 Message size exceeds fixed limit');
  });

  it('takes a bare-LF end of data as content: one message for bob, nothing smuggled in', async () => {
    const { stored } = await checkNoSmuggling(lab());
    expect(stored).toBe(1);
  });

  it('offers STARTTLS, and the handshake verifies with the lab CA', async () => {
    const replies = await checkStartTls(lab());
    expect(replies.map((r) => r.code)).toEqual([220, 250, 220, 250, 221]);
  });

  it('delivers alice → the lab MTA → this Postfix → Dovecot, once', async () => {
    const { raw } = await checkDeliveredThroughMx(lab());
    expect(raw).toMatch(/by mx\.receiver\.test \(Postfix\) with ESMTPS/);
  });

  it('greets with its banner, wants HELO first and answers no VRFY', async () => {
    const replies = await checkClientEtiquette(lab());
    expect(replies.map((r) => r.text)).toEqual(['220 mx.receiver.test ESMTP', '503 5.5.1 Error: send HELO/EHLO first', expect.stringMatching(/^250-mx\.receiver\.test/), '502 5.5.1 VRFY command is disabled', '221 2.0.0 Bye']);
  });
});

const skipOutbound = whyRealServersSkip('examples/postfix-config outbound', ['postfix-mta']);

describe.skipIf(skipOutbound !== undefined)("the company's outbound relay (examples/postfix-config/outbound.cf) as the lab's sending MTA", () => {
  const lab = useLab((l) => l, { definition: postfixOutboundLab() });

  it('returns a message for an unreachable destination to the sender as a DSN once the queue lifetime is over', async () => {
    const { dsn } = await checkDsnForUnreachableDestination(lab(), OUTBOUND_LIFETIME_MS);
    expect(dsn).toMatch(/^From: Mail Delivery System <MAILER-DAEMON@mta\.sender\.test>\r?$/m);
    expect(dsn).toMatch(/Diagnostic-Code: X-Postfix; connect to mx\.receiver\.test\[[\d.]+\]:25:\s+Connection refused/);
  });
});
