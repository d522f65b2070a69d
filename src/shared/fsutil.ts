// Durable file operations: data is on disk before anyone is told it is.
import { promises as fs } from 'node:fs';
import path from 'node:path';

/** Writes `data` to `file` atomically and durably: temp file, fsync, rename, fsync of the directory. */
export async function writeFileDurable(file: string, data: string | Uint8Array, sync = true): Promise<void> {
  const tmp = `${file}.tmp-${process.pid}-${Math.random().toString(36).slice(2)}`;
  const handle = await fs.open(tmp, 'w');
  try {
    await handle.writeFile(data);
    if (sync) await handle.sync();
  } finally {
    await handle.close();
  }
  await fs.rename(tmp, file);
  if (sync) await syncDir(path.dirname(file));
}

/** fsync of a directory, so a rename or unlink in it is durable. */
export async function syncDir(dir: string): Promise<void> {
  const handle = await fs.open(dir, 'r');
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
}

export async function ensureDir(dir: string): Promise<void> {
  await fs.mkdir(dir, { recursive: true });
}
