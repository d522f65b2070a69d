// Durable file operations: data is on disk before anyone is told it is.
//
// Modules that promise durability (the MTA queue, the Maildir store) take a `FileSystem` instead of importing
// node:fs directly, so a test can record the order of their writes, syncs and renames (fs-recorder.test-helper.ts)
// and prove that the sync came before the acknowledgement. A SIGKILL test cannot: the page cache outlives a process.
import { promises as nodeFs } from 'node:fs';
import path from 'node:path';

/** The promise API of node:fs; production code uses node's own, tests a recording wrapper around it. */
export type FileSystem = typeof nodeFs;

export const defaultFileSystem: FileSystem = nodeFs;

/** Writes `data` to `file` atomically and durably: temp file, fsync, rename, fsync of the directory. */
export async function writeFileDurable(file: string, data: string | Uint8Array, sync = true, fs: FileSystem = nodeFs): Promise<void> {
  const tmp = `${file}.tmp-${process.pid}-${Math.random().toString(36).slice(2)}`;
  const handle = await fs.open(tmp, 'w');
  try {
    await handle.writeFile(data);
    if (sync) await handle.sync();
  } finally {
    await handle.close();
  }
  await fs.rename(tmp, file);
  if (sync) await syncDir(path.dirname(file), fs);
}

/** fsync of a directory, so a rename or unlink in it is durable. */
export async function syncDir(dir: string, fs: FileSystem = nodeFs): Promise<void> {
  const handle = await fs.open(dir, 'r');
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
}

export async function ensureDir(dir: string, fs: FileSystem = nodeFs): Promise<void> {
  await fs.mkdir(dir, { recursive: true });
}
