// SMTP fault rules in a lab definition (issue 15): `faults.smtp` by host, checked (the host must run maillab's own
// SMTP/LMTP server, the rules must be valid) and planned into those hosts' node configs; the MTA's data timeout.
import { describe, expect, it } from 'vitest';
import defaultLab from '../../lab/default.js';
import { DEFAULT_DATA_TIMEOUT_MS } from '../shared/config.js';
import type { SmtpFaultRule } from '../shared/faults.js';
import { planLab, validateLab, type LabDefinition } from './topology.js';

const addresses = { dns: '127.9.9.2', mailbox: '127.9.9.3', mx: '127.9.9.4', mta: '127.9.9.5' };
const plan = (lab: LabDefinition) => planLab(lab, { addresses, portOffset: 0, dataRoot: '/tmp/lab' });
const withSmtpFaults = (smtp: Record<string, SmtpFaultRule[]>, change: (lab: LabDefinition) => void = () => undefined): LabDefinition => {
  const lab: LabDefinition = { ...structuredClone(defaultLab), faults: { smtp } };
  change(lab);
  return lab;
};
const greylist: SmtpFaultRule = { id: 'grey', stage: 'rcpt', action: { kind: 'greylist', delayMs: 1000 } };

describe('faults.smtp in a lab definition', () => {
  it('plans each host its rules, and no rules field for the others', () => {
    const slow: SmtpFaultRule = { id: 'slow', stage: 'ehlo', action: { kind: 'delay', ms: 50 } };
    const { nodes } = plan(withSmtpFaults({ mx: [greylist], mailbox: [slow], mta: [slow] }));
    expect(nodes.mx).toMatchObject({ smtpFaults: [greylist] });
    expect(nodes.mailbox).toMatchObject({ smtpFaults: [slow] });
    expect(nodes.mta).toMatchObject({ smtpFaults: [slow] });
    expect(plan(defaultLab).nodes.mx).not.toHaveProperty('smtpFaults');
  });

  it('refuses a host that is not there, runs no SMTP server, or is run by Postfix or Dovecot, saying why', () => {
    expect(() => validateLab(withSmtpFaults({ mx2: [greylist] }))).toThrow(/faults\.smtp: "mx2" is not a lab host/);
    expect(() => validateLab(withSmtpFaults({ dns: [greylist] }))).toThrow(/faults\.smtp: "dns" is a dns host, which runs no SMTP or LMTP server/);
    const postfix = withSmtpFaults({ mx: [greylist] }, (lab) => (lab.hosts.mx = { role: 'mx', hostname: 'mx.receiver.test', domains: ['receiver.test'], mailbox: 'mailbox', server: 'postfix' }));
    expect(() => validateLab(postfix)).toThrow(/faults\.smtp: "mx" is run by Postfix: SMTP fault rules are applied by maillab's own SMTP and LMTP servers, so only a host with server 'maillab' can take them/);
    const dovecot = withSmtpFaults({ mailbox: [greylist] }, (lab) => (lab.hosts.mailbox = { role: 'mailbox', hostname: 'mail.receiver.test', server: 'dovecot' }));
    expect(() => validateLab(dovecot)).toThrow(/faults\.smtp: "mailbox" is run by Dovecot/);
  });

  it('refuses invalid rules, naming the host, the rule and the field', () => {
    const bad = withSmtpFaults({ mx: [{ id: 'grey', stage: 'mail', action: { kind: 'greylist', delayMs: 1000 } }] });
    expect(() => validateLab(bad)).toThrow(/faults\.smtp\.mx: rule "grey": greylisting answers RCPT TO: its stage must be rcpt, not mail/);
  });
});

describe('the MTA data timeout', () => {
  it("is RFC 5321 §4.5.3.2's 10 minutes unless the lab sets one", () => {
    expect(DEFAULT_DATA_TIMEOUT_MS).toBe(600_000);
    expect(plan(defaultLab).nodes.mta).toMatchObject({ dataTimeoutMs: 600_000 });
    expect(plan({ ...structuredClone(defaultLab), dataTimeoutMs: 1500 }).nodes.mta).toMatchObject({ dataTimeoutMs: 1500 });
    expect(() => validateLab({ ...structuredClone(defaultLab), dataTimeoutMs: 0 })).toThrow(/dataTimeoutMs must be whole milliseconds above 0, not 0/);
    expect(plan(defaultLab).nodes.mta).toMatchObject({ commandTimeoutMs: 60_000 });
    expect(plan({ ...structuredClone(defaultLab), commandTimeoutMs: 5000 }).nodes.mta).toMatchObject({ commandTimeoutMs: 5000 });
    expect(() => validateLab({ ...structuredClone(defaultLab), commandTimeoutMs: -1 })).toThrow(/commandTimeoutMs must be whole milliseconds above 0, not -1/);
  });
});
