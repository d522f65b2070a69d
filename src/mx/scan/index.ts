// The MX's content scanner (issue 13) from its `scanner` config: the built-in EICAR finder, or ClamAV's clamd
// (started here first when the config says `spawn`, and stopped with the scanner).

import type { ScannerConfig } from '../../shared/config.js';
import { clamavScanner, spawnClamd } from './clamd.js';
import { builtinScanner, type Scanner } from './scanner.js';

export { ScannerUnavailable, type Scanner, type ScanVerdict } from './scanner.js';

export interface ScannerContext {
  /** The MX's address: its outbound connections to clamd leave from it. */
  address: string;
  /** The MX's dataDir: a spawned clamd's config, log and temporary files. */
  dataDir: string;
  /** The MX's message size limit: the most decoded in one scan, and the clamd's StreamMaxLength. */
  maxSize: number;
  /** One clamd exchange at most. */
  timeoutMs: number;
}

export async function startScanner(config: ScannerConfig, ctx: ScannerContext): Promise<Scanner> {
  if (config.kind === 'builtin') return builtinScanner({ maxDecodedBytes: ctx.maxSize });
  const spawned = config.spawn ? await spawnClamd({ endpoint: config.clamd, database: config.spawn.database, dir: ctx.dataDir, maxStreamBytes: ctx.maxSize }) : undefined;
  return clamavScanner(config.clamd, {
    timeoutMs: ctx.timeoutMs,
    localAddress: ctx.address,
    maxDecodedBytes: ctx.maxSize,
    ...(spawned ? { onClose: () => spawned.stop() } : {}),
  });
}
