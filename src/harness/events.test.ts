// The README's event table is the contracts': every kind a node or the harness may record, and no other.
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { NODE_EVENT_KINDS } from '../shared/contract.js';
import { allEventKinds, HARNESS_EVENT_KINDS, ROLE_EVENT_KINDS } from './events.js';

const README = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..', 'README.md');

function readmeKinds(): string[] {
  const text = readFileSync(README, 'utf8');
  const section = text.slice(text.indexOf('### Events'), text.indexOf('\n## ', text.indexOf('### Events')));
  return [...section.matchAll(/^\| `([a-z-]+)` \|/gm)].map((m) => m[1]!);
}

describe('event contracts', () => {
  it("the README's event table lists exactly the contracts' kinds, once each", () => {
    const listed = readmeKinds();
    expect(new Set(listed).size).toBe(listed.length);
    expect([...listed].sort()).toEqual(allEventKinds());
  });

  it('every role emits the node life-cycle events; the harness uses kinds of its own', () => {
    for (const kinds of Object.values(ROLE_EVENT_KINDS)) expect(kinds).toEqual(expect.arrayContaining([...NODE_EVENT_KINDS]));
    const roleKinds = new Set(Object.values(ROLE_EVENT_KINDS).flat());
    expect(HARNESS_EVENT_KINDS.filter((k) => roleKinds.has(k))).toEqual([]);
  });
});
