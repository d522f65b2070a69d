// The lab definition's DNS faults (issue 15): `faults.dns` is checked with the dns node's own rule checker and
// planned into the dns node's configuration, in force from its first query.
import { describe, expect, it } from 'vitest';
import defaultLab from '../../lab/default.js';
import type { DnsFaultRule } from '../shared/faults.js';
import { planLab, validateLab, type LabDefinition } from './topology.js';

const withDnsFaults = (dns: DnsFaultRule[]): LabDefinition => ({ ...structuredClone(defaultLab), faults: { dns } });
const addresses = { dns: '127.9.9.2', mailbox: '127.9.9.3', mx: '127.9.9.4', mta: '127.9.9.5' };

describe('faults.dns in a lab definition', () => {
  it('plans the rules into the dns node, and none into a lab without them', () => {
    const rules: DnsFaultRule[] = [{ id: 'mx-down', name: 'receiver.test', type: 'MX', action: { kind: 'servfail' }, times: 2 }];
    const { nodes } = planLab(withDnsFaults(rules), { addresses, portOffset: 0, dataRoot: '/tmp/lab' });
    const dns = nodes.dns!;
    if (dns.role !== 'dns') throw new Error('role');
    expect(dns.dnsFaults).toEqual(rules);
    expect(dns.dnsFaults).not.toBe(rules); // a copy: the definition stays the caller's
    const plain = planLab(defaultLab, { addresses, portOffset: 0, dataRoot: '/tmp/lab' }).nodes.dns!;
    expect(plain.role === 'dns' && plain.dnsFaults).toBeUndefined();
  });

  it('refuses rules the dns node would refuse, saying which and why', () => {
    expect(() =>
      validateLab(
        withDnsFaults([
          { id: 'a', name: 'receiver.test', action: { kind: 'servfail' } },
          { id: 'a', name: 'receiver.test', action: { kind: 'ttl' } as never },
        ]),
      ),
    ).toThrow(/faults\.dns rule "a": id is used by an earlier rule; ids are unique\n {2}- faults\.dns rule "a": action ttl needs ttl/);
  });
});
