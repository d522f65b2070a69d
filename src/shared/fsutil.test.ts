import { mkdtemp, readFile, readdir, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { recordingFileSystem } from './fs-recorder.test-helper.js';
import { writeFileDurable } from './fsutil.js';

describe('writeFileDurable', () => {
  let dir = '';
  afterEach(async () => {
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it('syncs the data, renames it into place, then syncs the directory, and leaves no temp file', async () => {
    dir = await mkdtemp(path.join(os.tmpdir(), 'maillab-fsutil-'));
    const rec = recordingFileSystem();
    const file = path.join(dir, 'record');
    await writeFileDurable(file, 'hello', true, rec.fs);
    rec.mark('acknowledged');
    const dataSync = rec.log.find((e) => e.op === 'sync' && e.path.startsWith(`${file}.tmp-`));
    const rename = rec.log.find((e) => e.op === 'rename' && e.to === file);
    const dirSync = rec.log.find((e) => e.op === 'sync' && e.path === dir);
    const ack = rec.find('mark', 'acknowledged')[0]!;
    expect(dataSync && rename && dirSync).toBeTruthy();
    expect(dataSync!.index).toBeLessThan(rename!.index);
    expect(rename!.index).toBeLessThan(dirSync!.index);
    expect(dirSync!.index).toBeLessThan(ack.index);
    expect(await readFile(file, 'utf8')).toBe('hello');
    expect(await readdir(dir)).toEqual(['record']);
  });

  it('does no sync at all when durability is off (fsync: false labs)', async () => {
    dir = await mkdtemp(path.join(os.tmpdir(), 'maillab-fsutil-'));
    const rec = recordingFileSystem();
    await writeFileDurable(path.join(dir, 'record'), 'x', false, rec.fs);
    expect(rec.find('sync')).toEqual([]);
    expect(rec.find('rename')).toHaveLength(1);
  });
});
