// A FileSystem that does the real work through node:fs and records every operation in order, so a test can assert
// what a durable write did before it was acknowledged: data synced, then renamed, then its directory synced.
import { promises as nodeFs } from 'node:fs';
import type { FileSystem } from './fsutil.js';

export interface FsOperation {
  /** `open`, `writeFile`, `rename`, `sync` (a file handle's fsync or datasync), `close`, `unlink`, `mkdir`... */
  op: string;
  /** The path concerned (for `rename`, the source; `to` is the target). */
  path: string;
  to?: string;
  /** `writeFile` with `{ flush: true }` syncs the file before it resolves. */
  flushed?: boolean;
  /** Position in the log, for order assertions. */
  index: number;
}

export interface RecordingFileSystem {
  fs: FileSystem;
  log: FsOperation[];
  /** Marks a point in the log (an acknowledgement, say) so order can be checked against it. */
  mark(label: string): void;
  /** Operations matching `op` (and `path` containing `pathPart`, if given). */
  find(op: string, pathPart?: string): FsOperation[];
}

export function recordingFileSystem(): RecordingFileSystem {
  const log: FsOperation[] = [];
  const record = (op: string, path: string, extra: Partial<FsOperation> = {}) => log.push({ op, path, ...extra, index: log.length });
  const wrapHandle = (handle: Awaited<ReturnType<FileSystem['open']>>, file: string) =>
    new Proxy(handle, {
      get(target, prop, receiver) {
        const value = Reflect.get(target, prop, receiver);
        if (typeof value !== 'function') return value;
        return async (...args: unknown[]) => {
          const result = await (value as (...a: unknown[]) => unknown).apply(target, args);
          const op = prop === 'datasync' ? 'sync' : String(prop);
          record(op, file, op === 'writeFile' ? { flushed: isFlushed(args[1]) } : {});
          return result;
        };
      },
    });
  const fs = new Proxy(nodeFs, {
    get(target, prop, receiver) {
      const value = Reflect.get(target, prop, receiver);
      if (typeof value !== 'function') return value;
      return async (...args: unknown[]) => {
        const result = await (value as (...a: unknown[]) => unknown).apply(target, args);
        const file = String(args[0]);
        if (prop === 'open') {
          record('open', file);
          return wrapHandle(result as Awaited<ReturnType<FileSystem['open']>>, file);
        }
        if (prop === 'rename' || prop === 'link' || prop === 'copyFile') record(String(prop), file, { to: String(args[1]) });
        else if (prop === 'writeFile' || prop === 'appendFile') record(String(prop), file, { flushed: isFlushed(args[2]) });
        else record(String(prop), file);
        return result;
      };
    },
  }) as FileSystem;
  return {
    fs,
    log,
    mark: (label) => record('mark', label),
    find: (op, pathPart) => log.filter((e) => e.op === op && (pathPart === undefined || e.path.includes(pathPart))),
  };
}

function isFlushed(options: unknown): boolean {
  return typeof options === 'object' && options !== null && (options as { flush?: boolean }).flush === true;
}
