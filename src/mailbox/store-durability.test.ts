// What the store has done on disk by the time deliver() or append() resolves, which is when LMTP answers 250 and
// IMAP answers APPEND's OK: the message was written under tmp/, its data synced, then linked into new/ (or cur/),
// then that directory synced. The order is read from a recording FileSystem, as a SIGKILL cannot show it (the
// page cache outlives the process).
import { promises as fs } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { recordingFileSystem, type FsOperation, type RecordingFileSystem } from '../shared/fs-recorder.test-helper.js';
import { MaildirStore } from './store.js';

const ALICE = 'alice@example.test';
const users = [{ address: ALICE, password: 'pw' }];
const msg = Buffer.from('Subject: durable\r\n\r\nbody\r\n');

let root: string;
let rec: RecordingFileSystem;

beforeEach(async () => {
  root = await fs.mkdtemp(path.join(os.tmpdir(), 'maillab-durable-'));
  rec = recordingFileSystem();
});
afterEach(async () => {
  await fs.rm(root, { recursive: true, force: true });
});

async function open(fsync = true): Promise<MaildirStore> {
  const store = new MaildirStore({ root, users, fsync, fs: rec.fs });
  await store.open();
  return store;
}

/** Runs `act`, marks its resolution in the log and returns the operations it did, the mark last. */
async function recorded<T>(act: () => Promise<T>): Promise<{ result: T; ops: FsOperation[]; ack: number }> {
  const start = rec.log.length;
  const result = await act();
  rec.mark('acknowledged');
  const ops = rec.log.slice(start);
  return { result, ops, ack: ops[ops.length - 1]!.index };
}

/** The steps of a durable write of one message into `dir`/`sub`, each found after the one before (or undefined). */
function durableWrite(ops: FsOperation[], dir: string, sub: 'new' | 'cur') {
  const write = ops.find((e) => e.op === 'writeFile' && path.dirname(e.path) === path.join(dir, 'tmp'));
  const dataSync = write && ops.find((e) => e.op === 'sync' && e.path === write.path && e.index > write.index);
  const placed = dataSync && ops.find((e) => (e.op === 'link' || e.op === 'rename') && e.path === write.path && path.dirname(e.to ?? '') === path.join(dir, sub));
  const dirSync = placed && ops.find((e) => e.op === 'sync' && e.path === path.join(dir, sub) && e.index > placed.index);
  return { write, dataSync, placed, dirSync };
}

/** Every step of durableWrite() happened, the last before `ack`. */
function expectDurable(steps: ReturnType<typeof durableWrite>, ack: number): void {
  expect(steps.write, 'message written under tmp/').toBeDefined();
  expect(steps.dataSync, 'its data synced').toBeDefined();
  expect(steps.placed, 'then linked into place').toBeDefined();
  expect(steps.dirSync, 'then its directory synced').toBeDefined();
  expect(steps.dirSync!.index).toBeLessThan(ack);
}

describe('durability before the acknowledgement', () => {
  it('deliver(): written in tmp/, synced, linked into new/, new/ synced, index synced, then resolved', async () => {
    const store = await open();
    const inbox = path.join(root, ALICE, 'Maildir');
    const { result, ops, ack } = await recorded(() => store.deliver(ALICE, msg));
    const steps = durableWrite(ops, inbox, 'new');
    expectDurable(steps, ack);
    expect(path.basename(steps.placed!.to!)).toBe(result.id);
    // The UID is durable too: the index record was synced before the acknowledgement.
    const indexSync = ops.find((e) => e.op === 'sync' && e.path === path.join(inbox, 'maillab-index'));
    expect(indexSync && indexSync.index > steps.placed!.index && indexSync.index < ack).toBe(true);
    // The temporary name is gone: only new/ has the message.
    expect(ops.some((e) => e.op === 'unlink' && e.path === steps.write!.path)).toBe(true);
  });

  it('append(): written in tmp/, synced, linked into cur/ with its flags, cur/ synced, then resolved', async () => {
    const store = await open();
    const drafts = path.join(root, ALICE, 'Maildir', '.Drafts');
    const { result, ops, ack } = await recorded(() => store.append(ALICE, 'Drafts', msg, ['\\Draft', '\\Seen']));
    const steps = durableWrite(ops, drafts, 'cur');
    expectDurable(steps, ack);
    expect(path.basename(steps.placed!.to!)).toBe(`${result.id}:2,DS`);
  });

  it('without fsync nothing is synced, and the message still goes through tmp/', async () => {
    const store = await open(false);
    const { ops } = await recorded(() => store.deliver(ALICE, msg));
    expect(ops.filter((e) => e.op === 'sync')).toEqual([]);
    const inbox = path.join(root, ALICE, 'Maildir');
    const write = ops.find((e) => e.op === 'writeFile' && path.dirname(e.path) === path.join(inbox, 'tmp'));
    expect(write && ops.some((e) => e.op === 'link' && e.path === write.path && path.dirname(e.to!) === path.join(inbox, 'new'))).toBe(true);
  });

  it('a flag change renames into cur/ and syncs both directories before resolving', async () => {
    const store = await open();
    const inbox = path.join(root, ALICE, 'Maildir');
    const { uid } = await store.deliver(ALICE, msg);
    const { ops, ack } = await recorded(() => store.setFlags(ALICE, 'INBOX', [uid], ['\\Seen'], 'add'));
    const rename = ops.find((e) => e.op === 'rename' && path.dirname(e.path) === path.join(inbox, 'new'));
    expect(rename && path.dirname(rename.to!)).toBe(path.join(inbox, 'cur'));
    for (const sub of ['new', 'cur']) {
      const sync = ops.find((e) => e.op === 'sync' && e.path === path.join(inbox, sub));
      expect(sync && sync.index > rename!.index && sync.index < ack, `${sub}/ synced after the rename`).toBe(true);
    }
  });

  it('a removal syncs the directory of the unlinked file before resolving', async () => {
    const store = await open();
    const inbox = path.join(root, ALICE, 'Maildir');
    const { uid } = await store.deliver(ALICE, msg);
    const { ops, ack } = await recorded(() => store.remove(ALICE, 'INBOX', [uid]));
    const unlink = ops.find((e) => e.op === 'unlink' && path.dirname(e.path) === path.join(inbox, 'new'));
    const sync = unlink && ops.find((e) => e.op === 'sync' && e.path === path.join(inbox, 'new') && e.index > unlink.index);
    expect(sync && sync.index < ack).toBe(true);
  });
});
