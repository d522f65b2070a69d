// The physical limit of the mail path on this disk (issue 17): how many durable 1 KiB writes one thread gets per
// second, each the way a mail store makes a message durable — write a temporary file, fsync it, rename it into
// place, fsync the directory so the rename survives a crash. Measured in the directory the lab keeps its data in, so
// on the same filesystem, and in the same run as the figures it bounds.
import { closeSync, fsyncSync, mkdirSync, mkdtempSync, openSync, renameSync, rmSync, writeSync } from 'node:fs';
import path from 'node:path';

export interface DurableWrites {
  /** Durable 1 KiB writes completed per second, one after the other from one thread. */
  perSecond: number;
  writes: number;
  seconds: number;
  /** Where they were made (a temporary directory under the given one, removed afterwards). */
  dir: string;
}

/**
 * Durable writes of `bytes` bytes (default 1 KiB) for `seconds` (at least `minWrites` of them), in a fresh
 * directory under `parent`. Synchronous on purpose: one thread, nothing else of the bench runs meanwhile, so the
 * figure is the disk's, not the event loop's.
 */
export function durableWrites(parent: string, seconds = 2, bytes = 1024, minWrites = 20): DurableWrites {
  mkdirSync(parent, { recursive: true });
  const dir = mkdtempSync(path.join(parent, 'durable-writes-'));
  const payload = Buffer.alloc(bytes, 0x61);
  const dirFd = openSync(dir, 'r');
  let writes = 0;
  const started = performance.now();
  const deadline = started + seconds * 1000;
  try {
    while (performance.now() < deadline || writes < minWrites) {
      const tmp = path.join(dir, `tmp-${writes}`);
      const fd = openSync(tmp, 'w');
      try {
        writeSync(fd, payload);
        fsyncSync(fd);
      } finally {
        closeSync(fd);
      }
      renameSync(tmp, path.join(dir, `msg-${writes}`));
      fsyncSync(dirFd);
      writes++;
    }
  } finally {
    closeSync(dirFd);
  }
  const elapsed = (performance.now() - started) / 1000;
  rmSync(dir, { recursive: true, force: true });
  return { perSecond: writes / elapsed, writes, seconds: elapsed, dir };
}
