// The mailbox-size series of `npm run bench` (issue 17): a mailbox of 1,000 to 100,000 messages, as maillab's IMAP
// server and Dovecot serve it. The messages are written straight into the user's Maildir (cur/, seen), the way a
// migrated mailbox arrives; then an IMAP client measures LOGIN + SELECT INBOX (the first one after the files came,
// which makes the server index them), a second SELECT on a new connection, and `UID FETCH 1:* (FLAGS)`, and the
// mailbox server's memory is read while that connection is still open.
import { promises as fs } from 'node:fs';
import net from 'node:net';
import path from 'node:path';

/** Writes messages into `maildir`/cur until it holds `count` (files named as Maildir wants, `:2,S`: seen). */
export async function seedMaildir(maildir: string, count: number, owner?: { uid: number; gid: number }): Promise<number> {
  const cur = path.join(maildir, 'cur');
  await fs.mkdir(cur, { recursive: true });
  for (const sub of ['new', 'tmp']) await fs.mkdir(path.join(maildir, sub), { recursive: true });
  const have = (await fs.readdir(cur)).length;
  const body = 'The quick brown fox jumps over the lazy dog 0123456789.\r\n'.repeat(16);
  const now = Math.floor(Date.now() / 1000);
  const batch: Promise<void>[] = [];
  for (let i = have; i < count; i++) {
    const raw = `From: alice@sender.test\r\nTo: carol@receiver.test\r\nSubject: stored ${i}\r\nMessage-ID: <seed-${i}@sender.test>\r\nDate: ${new Date((now - count + i) * 1000).toUTCString()}\r\n\r\n${body}`;
    const file = path.join(cur, `${now}.M${i}P${process.pid}.bench,S=${Buffer.byteLength(raw)}:2,S`);
    batch.push(
      fs.writeFile(file, raw).then(async () => {
        if (owner) await fs.chown(file, owner.uid, owner.gid);
      }),
    );
    if (batch.length >= 256) await Promise.all(batch.splice(0));
  }
  await Promise.all(batch);
  return count - have;
}

export interface ImapTimings {
  /** LOGIN through the tagged OK of SELECT INBOX. */
  selectMs: number;
  /** The EXISTS the SELECT reported. */
  exists: number;
  /** `UID FETCH 1:* (FLAGS)` until its tagged OK (only when asked). */
  fetchMs?: number;
  /** FETCH responses counted. */
  fetched?: number;
}

/**
 * One IMAP session: LOGIN, SELECT INBOX, optionally `UID FETCH 1:* (FLAGS)`; `whileOpen` runs before LOGOUT (the
 * memory is read then, with the server's session alive). Plaintext LOGIN (the bench lab allows it). Fails loudly on
 * a NO/BAD, a closed connection, or no answer within `timeoutMs` per command.
 */
export async function imapSession(target: { host: string; port: number; user: string; pass: string }, options: { fetch: boolean; timeoutMs?: number; whileOpen?: () => Promise<void> }): Promise<ImapTimings> {
  const timeoutMs = options.timeoutMs ?? 120_000;
  const socket = net.connect(target.port, target.host);
  let buffer = '';
  let waiter: (() => void) | undefined;
  let closed: Error | undefined;
  socket.setEncoding('latin1');
  socket.on('data', (d: string) => {
    buffer += d;
    waiter?.();
  });
  socket.on('error', (err) => {
    closed = err;
    waiter?.();
  });
  socket.on('close', () => {
    closed ??= new Error('connection closed');
    waiter?.();
  });
  /** Waits until `done(buffer)` holds; the text read so far stays in `buffer`. */
  const until = (what: string, done: (text: string) => boolean) =>
    new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`IMAP ${target.host}:${target.port}: no answer to ${what} within ${timeoutMs} ms`)), timeoutMs);
      waiter = () => {
        if (done(buffer)) {
          clearTimeout(timer);
          waiter = undefined;
          resolve();
        } else if (closed) {
          clearTimeout(timer);
          reject(new Error(`IMAP ${target.host}:${target.port}: ${closed.message} during ${what}`));
        }
      };
      waiter();
    });
  const command = async (tag: string, line: string): Promise<string> => {
    buffer = '';
    socket.write(`${tag} ${line}\r\n`);
    // The tagged reply is the last line: look for it at the start of the buffer or after a CRLF.
    const tagged = new RegExp(`(^|\\r\\n)${tag} (OK|NO|BAD)[^\\r]*\\r\\n$`);
    await until(line.split(' ')[0]!, (text) => tagged.test(text.slice(-2000)));
    const status = tagged.exec(buffer.slice(-2000))![2];
    if (status !== 'OK') throw new Error(`IMAP ${target.host}:${target.port}: ${line.split(' ')[0]} failed: ${buffer.slice(-300).trim()}`);
    return buffer;
  };
  try {
    await new Promise<void>((resolve, reject) => {
      socket.once('connect', resolve);
      socket.once('error', reject);
    });
    await until('the greeting', (text) => text.includes('\r\n'));
    const t0 = performance.now();
    await command('a', `LOGIN "${target.user}" "${target.pass}"`);
    const selected = await command('b', 'SELECT INBOX');
    const selectMs = performance.now() - t0;
    const exists = Number(/\* (\d+) EXISTS/.exec(selected)?.[1] ?? NaN);
    const result: ImapTimings = { selectMs, exists };
    if (options.fetch) {
      const t1 = performance.now();
      const fetched = await command('c', 'UID FETCH 1:* (FLAGS)');
      result.fetchMs = performance.now() - t1;
      result.fetched = fetched.match(/\* \d+ FETCH/g)?.length ?? 0;
    }
    await options.whileOpen?.();
    await command('z', 'LOGOUT').catch(() => undefined);
    return result;
  } finally {
    socket.destroy();
  }
}
