import { describe, expect, it } from 'vitest';
import { orderOf } from './figures.js';
import { pairedDelta, shapeOf, snapshotMarkdown, summarise, telling, type RoleResult, type Sample } from './snapshot.js';

const sample = (round: number, bootMs: number, rssMiB: number, pssMiB?: number): Sample => ({ round, readyMs: bootMs - 5, bootMs, rssMiB, ...(pssMiB !== undefined ? { pssMiB } : {}) });

describe('summarise', () => {
  it('gives the median and min–max of boot, ready line and memory', () => {
    const s = summarise([sample(0, 200, 80, 50), sample(1, 100, 60, 40), sample(2, 150, 70, 45)])!;
    expect([s.boot.median, s.boot.min, s.boot.max]).toEqual([150, 100, 200]);
    expect(s.ready.median).toBe(145);
    expect([s.rss.median, s.pss!.median]).toEqual([70, 45]);
  });

  it('has no PSS when a sample lacks it, and nothing for no samples', () => {
    expect(summarise([sample(0, 100, 60, 40), sample(1, 110, 61)])!.pss).toBeUndefined();
    expect(summarise([])).toBeUndefined();
  });
});

describe('orderOf, as the snapshot experiment orders its three variants', () => {
  it('alternates the order from round to round (ABC, CBA, ABC)', () => {
    expect(orderOf(['a', 'b', 'c'], 0)).toEqual(['a', 'b', 'c']);
    expect(orderOf(['a', 'b', 'c'], 1)).toEqual(['c', 'b', 'a']);
    expect(orderOf(['a', 'b', 'c'], 2)).toEqual(['a', 'b', 'c']);
  });
});

describe('pairedDelta', () => {
  it('subtracts the baseline of the same round, leaving out rounds without both', () => {
    const snapshot = [sample(0, 90, 60), sample(1, 100, 62), sample(3, 50, 50)];
    const dist = [sample(0, 200, 80), sample(1, 180, 81), sample(2, 190, 79)];
    const d = pairedDelta(snapshot, dist, (s) => s.bootMs)!;
    expect(d.samples).toEqual([-110, -80]);
    expect([d.median, d.min, d.max]).toEqual([-95, -110, -80]);
    expect(pairedDelta(snapshot, dist, (s) => s.pssMiB)).toBeUndefined();
  });
});

describe('snapshotMarkdown', () => {
  const meta = { runs: 2, node: '20.20.2', date: '2026-11-30T12:00:00.000Z' };

  it('prints each variant of a role and the snapshot against the lab start', () => {
    const mx: RoleResult = {
      role: 'mx',
      build: { ok: true, buildMs: 340, blobMiB: 9.7, loadTimeRandomDraws: [], standIns: ['undici.fetch'] },
      samples: { dist: [sample(0, 200, 80, 50), sample(1, 190, 78, 48)], cjs: [sample(0, 195, 90, 60), sample(1, 185, 88, 58)], snapshot: [sample(0, 90, 60, 40), sample(1, 100, 61, 41)] },
      failures: {},
    };
    const md = snapshotMarkdown([mx], meta).join('\n');
    expect(md).toContain('| mx | `node dist/node.js` (the lab\'s start) | 195 (190–200) | 190 (185–195) | 79.0 (78.0–80.0) | 49.0 (48.0–50.0) |');
    expect(md).toContain('| mx | the same bundle from a startup snapshot | 95.0 (90.0–100.0) |');
    expect(md).toContain('| mx | −100 ms (−110 to −90) | −18.5 MiB (−20.0 to −17.0) | −8.5 MiB (−10.0 to −7.0) | 9.7 MiB | 340 ms | none | `undici.fetch` |');
  });

  it('names why a role has no snapshot, escaping table pipes', () => {
    const dns: RoleResult = { role: 'dns', build: { ok: false, reason: 'Error: a | b' }, samples: { dist: [sample(0, 80, 48)] }, failures: { cjs: 'exited with 1 before it was ready' } };
    const md = snapshotMarkdown([dns], meta).join('\n');
    expect(md).toContain('| dns | one-file CJS bundle, no snapshot | failed: exited with 1 before it was ready | | | |');
    expect(md).toContain('| dns | the same bundle from a startup snapshot | failed: Error: a \\| b | | | |');
    expect(md).toContain('| dns | no snapshot: Error: a \\| b |');
  });
});

describe('telling', () => {
  it('keeps the error lines of a failed build, not Node\'s snapshot warnings, stack frames or the probe line', () => {
    const stderr = [
      '(node:1) Warning: It\'s not yet fully verified whether built-in module "node:http" works in user snapshot builder scripts.',
      'It may still work in some cases, but in other cases certain run-time states may be out-of-sync after snapshot deserialization.',
      'To request support for the module, use the Node.js issue tracker: https://github.com/nodejs/node/issues',
      '(Use `node --trace-warnings ...` to show where the warning was created)',
      'SNAPSHOT_PROBE {"draws":[]}',
      'var a=1;var b=2;',
      'TypeError: methods.toSorted is not a function',
      '    at node:http:119:20',
    ].join('\n');
    expect(telling(stderr)).toBe('TypeError: methods.toSorted is not a function');
    expect(telling('# Fatal error in , line 0\n# Check failed: handle_checker.CheckGlobalAndEternalHandles().\n')).toBe('# Fatal error in , line 0 / # Check failed: handle_checker.CheckGlobalAndEternalHandles().');
    expect(telling('')).toBe('(nothing on stderr)');
  });
});

describe('shapeOf', () => {
  it('splits a module into functions, plain-data constants (copied) and the rest', () => {
    class Agent {}
    const shape = shapeOf({ get: () => 1, Agent, METHODS: ['GET'], STATUS_CODES: { 200: 'OK' }, maxHeaderSize: 16384, globalAgent: new Agent(), kSymbol: Symbol('x'), __esModule: true });
    expect(shape.functions).toEqual(['get', 'Agent']);
    expect(shape.constants).toEqual({ METHODS: ['GET'], STATUS_CODES: { 200: 'OK' }, maxHeaderSize: 16384 });
    expect(shape.others).toEqual(['globalAgent', 'kSymbol']);
  });
});
