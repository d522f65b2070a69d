import { describe, expect, it } from 'vitest';
import { commonJsExports, lazyModule } from './lazy-module.js';

describe('lazyModule', () => {
  it('loads nothing until first called, then once for every caller', async () => {
    let loads = 0;
    const get = lazyModule(async () => ({ n: ++loads }));
    expect(loads).toBe(0);
    const [a, b] = await Promise.all([get(), get()]);
    expect(loads).toBe(1);
    expect(a).toBe(b);
    expect(await get()).toBe(a);
  });

  it('does not keep a failed load: the next call tries again, and the caller sees the error', async () => {
    let calls = 0;
    const get = lazyModule(async () => {
      calls++;
      if (calls === 1) throw new Error('Cannot find module x');
      return 'loaded';
    });
    await expect(get()).rejects.toThrow('Cannot find module x');
    await expect(get()).resolves.toBe('loaded');
    expect(calls).toBe(2);
  });
});

describe('commonJsExports', () => {
  it("gives a CommonJS module's module.exports, whether or not its names were found", async () => {
    const exports = { dkimSign: () => 'signed' };
    expect(commonJsExports({ default: exports })).toBe(exports);
    const esm = { dkimSign: () => 'signed' };
    expect(commonJsExports(esm)).toBe(esm);
    // As the node bundle loads mailauth's signer (src/mta/dkim.ts).
    const { dkimSign } = commonJsExports(await import('mailauth/lib/dkim/sign.js'));
    expect(typeof dkimSign).toBe('function');
  });
});
