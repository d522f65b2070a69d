// The regression demonstration of the example (examples/postfix-config/README.md): copies of main.cf with a
// change an administrator could make, run as the lab's MX, and the no-open-relay check of config.test.ts
// (checks.ts) against each. The check must FAIL when the change makes the MX accept a foreign domain, with a
// message that names the refusal that did not happen; and it cannot see a change the lab itself overrides.
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { useLab } from '../../scenarios/support/lab.js';
import { ConfigCheckFailure, checkDsnForUnreachableDestination, checkNoOpenRelay } from './checks.js';
import { MAIN_CF, OUTBOUND_CF, OUTBOUND_LIFETIME_MS, postfixConfigLab, postfixOutboundLab } from './lab.js';
import { whyRealServersSkip } from '../../scenarios/support/real-servers.js';

const skip = whyRealServersSkip('examples/postfix-config regression', ['postfix', 'dovecot']);
const dir = mkdtempSync(path.join(tmpdir(), 'maillab-postfix-config-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** main.cf (or `file`) with `edit` applied, written to the temp dir; fails if the edit changed nothing. */
function variant(name: string, edit: (text: string) => string, file = MAIN_CF): string {
  const original = readFileSync(file, 'utf8');
  const text = edit(original);
  if (text === original) throw new Error(`variant ${name}: the edit changed nothing in ${file}`);
  const out = path.join(dir, `${name}.main.cf`);
  writeFileSync(out, text);
  return out;
}

/** The check's failure (a ConfigCheckFailure), or a test failure if the check passed. */
async function failureOf(check: Promise<unknown>): Promise<ConfigCheckFailure> {
  const outcome = await check.then(
    (value) => ({ passed: value }),
    (err: unknown) => ({ err }),
  );
  if ('passed' in outcome) throw new Error('the check passed against the regressed configuration: it would not catch this regression');
  expect(outcome.err).toBeInstanceOf(ConfigCheckFailure);
  return outcome.err as ConfigCheckFailure;
}

describe.skipIf(skip !== undefined)('a one-line regression of main.cf, caught by the no-open-relay check', () => {
  // ONE line added, kept by the lab: a partner's domain listed as one of ours (virtual_alias_domains).
  const lab = useLab((l) => l, { definition: postfixConfigLab(variant('alias-domain', (t) => `${t}virtual_alias_domains = elsewhere.test\n`), 'pfcfg-alias') });

  it('fails, naming the relay refusal that did not happen and what the MX answered instead', async () => {
    const failure = await failureOf(checkNoOpenRelay(lab()));
    expect(failure.message).toMatch(
      /^expected RCPT TO:<someone@elsewhere\.test> from an outside client to be refused \(4xx\/5xx, "Relay access denied": no open relay\), but the MX answered 550 5\.1\.1 <someone@elsewhere\.test>: Recipient address rejected: User unknown in virtual alias table\n/,
    );
  });
});

describe.skipIf(skip !== undefined)('two lines that make the MX accept any address of a foreign domain', () => {
  // The alias domain, and unknown recipients accepted (to be bounced later): RCPT TO a foreign address gets 250.
  const lab = useLab((l) => l, {
    definition: postfixConfigLab(
      variant('accept-foreign', (t) => `${t.replace(/^smtpd_reject_unlisted_recipient = yes$/m, 'smtpd_reject_unlisted_recipient = no')}virtual_alias_domains = elsewhere.test\n`),
      'pfcfg-accept',
    ),
  });

  it('fails with "but the MX answered 250 2.1.5 Ok"', async () => {
    const failure = await failureOf(checkNoOpenRelay(lab()));
    expect(failure.message).toMatch(/^expected RCPT TO:<someone@elsewhere\.test> from an outside client to be refused .*, but the MX answered 250 2\.1\.5 Ok\n/);
  });
});

describe.skipIf(skip !== undefined)('what the lab overrides, the check cannot see', () => {
  // smtpd_relay_restrictions = permit WOULD make this MX an open relay in production; the lab always writes
  // smtpd_relay_restrictions = reject_unauth_destination (src/real/postfix/README.md), so the check still passes.
  const lab = useLab((l) => l, { definition: postfixConfigLab(variant('relay-permit', (t) => t.replace(/^smtpd_relay_restrictions = .*$/m, 'smtpd_relay_restrictions = permit')), 'pfcfg-permit') });

  it('smtpd_relay_restrictions = permit is masked: the lab refuses the relay anyway', async () => {
    const reply = await checkNoOpenRelay(lab());
    expect(reply.text).toBe('554 5.7.1 <someone@elsewhere.test>: Relay access denied');
  });
});

const skipOutbound = whyRealServersSkip('examples/postfix-config regression outbound', ['postfix-mta']);
// Not pinned any more: in 2 of 5 full-suite runs the expired message stayed queued with soft_bounce = yes (no DSN
// within 10 s past the lifetime), as Postfix's documentation of soft_bounce suggests it may; alone it was returned.
// Until the maillog says which it is, the behaviour is not asserted either way.
const SOFT_BOUNCE_UNSETTLED = 'soft_bounce = yes: whether Postfix 3.7 returns an expired message was seen both ways here (2 of 5 full-suite runs kept it queued); not pinned until the maillog shows why';
if (skipOutbound === undefined) process.stderr.write(`SKIP: [examples/postfix-config regression soft_bounce] ${SOFT_BOUNCE_UNSETTLED}\n`);

describe.skipIf(skipOutbound !== undefined || SOFT_BOUNCE_UNSETTLED !== undefined)('a setting that looks like a DSN regression but is not one', () => {
  // soft_bounce = yes ("keep mail that would bounce", a debugging switch left on) turns hard bounces into deferrals; one
  // might expect it to stop the DSN of an expired message too. Postfix 3.7 still returns an expired message (tried), so
  // the DSN check passes: this pins that, so nobody counts on soft_bounce to hold expired mail.
  const lab = useLab((l) => l, { definition: postfixOutboundLab(variant('soft-bounce', (t) => t.replace(/^soft_bounce = no$/m, 'soft_bounce = yes'), OUTBOUND_CF), 'pfcfg-soft-bounce') });

  it('soft_bounce = yes: the expired message is still returned to alice', async () => {
    const { dsn } = await checkDsnForUnreachableDestination(lab(), OUTBOUND_LIFETIME_MS);
    expect(dsn).toMatch(/Action: failed/);
  });
});
