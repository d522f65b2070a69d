// Tries bench/peer.ts end to end: start the Postfix + Dovecot peer, send one message through it and read it back
// over IMAP, then 200 messages over 20 pooled connections, print the figures, stop, and check nothing is left.
//
//   npm run bench:peer-check     (needs root and Debian's postfix and dovecot, like `npm run bench`)
import { readFileSync } from 'node:fs';
import { readdir, readFile } from 'node:fs/promises';
import net from 'node:net';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { ImapFlow } from 'imapflow';
import nodemailer from 'nodemailer';
import { startPeer, type PeerLab } from './peer.js';

const BULK = 200;
const POOL = 20;

/** Messages in a Maildir: new/ (as delivered) plus cur/ (seen by an IMAP SELECT). */
async function countMaildir(maildir: string): Promise<number> {
  const list = async (d: string): Promise<number> => (await readdir(path.join(maildir, d)).catch(() => [])).length;
  return (await list('new')) + (await list('cur'));
}

async function waitCount(dir: string, n: number, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const c = await countMaildir(dir);
    if (c >= n) return;
    if (Date.now() > deadline) throw new Error(`only ${c}/${n} messages in ${dir} after ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

function refused(host: string, port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.connect({ host, port });
    s.on('connect', () => {
      s.destroy();
      resolve(false);
    });
    s.on('error', () => resolve(true));
  });
}

function transport(peer: PeerLab, pool: boolean) {
  const { host, port, auth } = peer.submission;
  return nodemailer.createTransport({
    host,
    port,
    secure: false,
    ignoreTLS: true,
    ...(auth ? { auth } : {}),
    name: 'client.sender.test',
    ...(pool ? { pool: true, maxConnections: POOL, maxMessages: Infinity } : {}),
  });
}

async function main(): Promise<void> {
  const t = performance.now();
  const started = await startPeer({ log: (m) => console.log(`[peer] ${m}`) });
  if ('skipped' in started) {
    console.log(`skipped: ${started.skipped}`);
    return;
  }
  const peer = started;
  console.log(`started ${peer.name} in ${Math.round(performance.now() - t)} ms`);
  console.log('bootMs', Object.fromEntries(Object.entries(peer.bootMs).map(([k, v]) => [k, Math.round(v * 10) / 10])));
  console.log(`whole peer up after ${Math.max(...Object.values(peer.bootMs)).toFixed(0)} ms`);
  let pids: number[] = [];
  let failed = false;
  try {
    pids = await peer.pids();
    console.log(`pids (${pids.length}): ${pids.join(' ')}`);

    // One message, timed from sendMail to the file in bob's Maildir.
    const one = transport(peer, false);
    const t1 = performance.now();
    const info = await one.sendMail({
      from: 'alice@sender.test',
      to: 'bob@receiver.test',
      subject: 'peer check: one',
      text: 'Hello Bob, from the Postfix + Dovecot peer.\n',
    });
    const accepted = performance.now() - t1;
    await waitCount(peer.bobMaildir, 1, 30_000);
    const latency = performance.now() - t1;
    one.close();
    console.log(`one message: accepted in ${accepted.toFixed(1)} ms (${info.response}), in the Maildir after ${latency.toFixed(1)} ms`);
    const file = (await readdir(path.join(peer.bobMaildir, 'new')))[0];
    if (!file) throw new Error('no file in new/');
    const raw = await readFile(path.join(peer.bobMaildir, 'new', file), 'utf8');
    console.log(`  file ${file}: ${raw.split('\n').filter((l) => /^(Received|Return-Path|Delivered-To):/.test(l)).length} trace headers`);

    // The IMAP leg: EXAMINE, so the message stays in new/.
    const imap = new ImapFlow({ host: peer.imap.host, port: peer.imap.port, secure: false, doSTARTTLS: false, auth: { user: peer.imap.user, pass: peer.imap.pass }, logger: false });
    const ti = performance.now();
    await imap.connect();
    const lock = await imap.getMailboxLock('INBOX', { readOnly: true });
    let subject = '';
    try {
      for await (const msg of imap.fetch('1:*', { envelope: true, source: true })) subject = msg.envelope?.subject ?? '';
    } finally {
      lock.release();
    }
    await imap.logout();
    console.log(`IMAP: login + EXAMINE + FETCH in ${(performance.now() - ti).toFixed(1)} ms, subject "${subject}"`);
    if (subject !== 'peer check: one') throw new Error(`IMAP fetched subject "${subject}"`);

    // The MX leg alone: straight to the receiver Postfix, for carol (whose Maildir sits beside bob's).
    const mx = nodemailer.createTransport({ host: peer.mx.host, port: peer.mx.port, secure: false, ignoreTLS: true, name: 'mta.sender.test' });
    const tm = performance.now();
    await mx.sendMail({ from: 'alice@sender.test', to: 'carol@receiver.test', subject: 'peer check: mx leg', text: 'Hi Carol.\n' });
    await waitCount(peer.bobMaildir.replace('/bob@receiver.test/', '/carol@receiver.test/'), 1, 30_000);
    mx.close();
    console.log(`MX leg (receiver Postfix → LMTP → Maildir): ${(performance.now() - tm).toFixed(1)} ms`);

    // 200 messages over 20 pooled connections.
    const pooled = transport(peer, true);
    const tb = performance.now();
    const results = await Promise.allSettled(
      Array.from({ length: BULK }, (_, i) =>
        pooled.sendMail({ from: 'alice@sender.test', to: 'bob@receiver.test', subject: `peer check: bulk ${i}`, text: `message ${i}\n`.repeat(20) }),
      ),
    );
    const acceptedAll = performance.now() - tb;
    const bad = results.filter((r) => r.status === 'rejected');
    if (bad.length > 0) throw new Error(`${bad.length} submissions failed: ${String((bad[0] as PromiseRejectedResult).reason)}`);
    await waitCount(peer.bobMaildir, BULK + 1, 120_000);
    const deliveredAll = performance.now() - tb;
    pooled.close();
    console.log(
      `${BULK} messages over ${POOL} connections: all accepted after ${acceptedAll.toFixed(0)} ms (${((BULK * 1000) / acceptedAll).toFixed(1)} msgs/s), ` +
        `all in the Maildir after ${deliveredAll.toFixed(0)} ms: ${((BULK * 1000) / deliveredAll).toFixed(1)} msgs/s end to end`,
    );
    pids = await peer.pids();
    console.log(`pids after load (${pids.length})`);
  } catch (err) {
    failed = true;
    console.error('FAILED:', err);
  } finally {
    const before = [...new Set([...pids, ...(await peer.pids())])];
    const ts = performance.now();
    await peer.stop();
    console.log(`stopped in ${(performance.now() - ts).toFixed(0)} ms`);
    // A process counts as gone once it has exited: a zombie (exited, not yet reaped by init) holds no resources.
    const state = (pid: number): string | undefined => {
      try {
        const st = readFileSync(`/proc/${pid}/stat`, 'utf8');
        return st.slice(st.lastIndexOf(')') + 2, st.lastIndexOf(')') + 3);
      } catch {
        return undefined;
      }
    };
    const leftover = before.filter((pid) => state(pid) !== undefined && state(pid) !== 'Z');
    const zombies = before.filter((pid) => state(pid) === 'Z');
    if (zombies.length > 0) console.log(`  ${zombies.length} exited processes not yet reaped by init (zombies)`);
    const listening: string[] = [];
    for (const [h, p] of [['127.77.0.2', 25], ['127.77.0.2', 587], ['127.77.0.3', 25], ['127.77.0.4', 24], ['127.77.0.4', 143]] as const) {
      if (!(await refused(h, p))) listening.push(`${h}:${p}`);
    }
    const dirGone = await readdir(path.resolve(peer.bobMaildir, '../../..')).then(() => false, () => true);
    console.log(`after stop: leftover pids [${leftover.join(' ')}], still listening [${listening.join(' ')}], temp dir removed: ${dirGone}`);
    if (leftover.length > 0 || listening.length > 0 || !dirGone) failed = true;
  }
  if (failed) process.exitCode = 1;
  else console.log('peer check: OK');
}

await main();
