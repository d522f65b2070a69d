// Scenario 19 (issue 9, finding 3): login throttling on the submission port, as the lab definition sets it.
// - tuned (`authThrottle: {...}`): a connection is closed with 421 4.7.0 after failuresPerConnection failures; the
//   account is then refused from that client address with 454 4.7.0, the right password included, while a client
//   at another address logs in; both are recorded (`auth-failed`, `auth-throttled`);
// - off (`authThrottle: false`): failures go on without a close or a back-off.
import { once } from 'node:events';
import net from 'node:net';
import tls from 'node:tls';
import nodemailer from 'nodemailer';
import { describe, expect, it } from 'vitest';
import type { StartedLab } from '../src/harness/index.js';
import { useLab } from './support/lab.js';

const plain = (user: string, pass: string) => `AUTH PLAIN ${Buffer.from(`\0${user}\0${pass}`).toString('base64')}`;

/** Reads SMTP replies from a socket: `next()` is the last line of the next reply, undefined once the server closed. */
function replyReader(socket: net.Socket) {
  let buffer = '';
  let closed = false;
  const wake: (() => void)[] = [];
  const onData = (chunk: Buffer) => {
    buffer += chunk.toString('latin1');
    wake.splice(0).forEach((w) => w());
  };
  const onClose = () => {
    closed = true;
    wake.splice(0).forEach((w) => w());
  };
  socket.on('data', onData);
  socket.on('close', onClose);
  socket.on('error', () => undefined);
  return {
    get closed() {
      return closed;
    },
    /** Stops reading this socket (before a TLS upgrade takes it over). */
    detach() {
      socket.off('data', onData);
      socket.off('close', onClose);
    },
    async next(): Promise<string | undefined> {
      const deadline = Date.now() + 5000;
      for (;;) {
        const match = /^\d{3} .*\r\n/m.exec(buffer);
        if (match) {
          const end = match.index + match[0].length;
          const text = buffer.slice(0, end - 2);
          buffer = buffer.slice(end);
          return text.slice(text.lastIndexOf('\n') + 1);
        }
        if (closed) return undefined;
        const left = deadline - Date.now();
        if (left <= 0) throw new Error(`no reply within 5 s; unread: ${buffer}`);
        await new Promise<void>((resolve) => {
          wake.push(resolve);
          setTimeout(resolve, left).unref();
        });
      }
    },
  };
}

/**
 * Sends each line on a fresh submission connection, after STARTTLS (passwords only over TLS, RFC 8314), and collects
 * the replies until the server closes or all are answered; then tells whether the server closed the connection.
 */
async function dialogue(started: StartedLab, lines: string[]): Promise<{ replies: string[]; closed: boolean }> {
  const { host, port } = started.node('mta').service('submission');
  const plain = net.connect(port, host);
  const prelude = replyReader(plain);
  await prelude.next(); // greeting
  for (const line of ['EHLO client.test', 'STARTTLS']) {
    plain.write(`${line}\r\n`);
    await prelude.next();
  }
  prelude.detach();
  const socket = tls.connect({ socket: plain, ...started.tlsFor('mta') });
  await once(socket, 'secureConnect');
  const reader = replyReader(socket);
  const replies: string[] = [];
  try {
    for (const line of ['EHLO client.test', ...lines]) {
      socket.write(`${line}\r\n`);
      const answer = await reader.next();
      if (answer === undefined) break;
      if (line !== 'EHLO client.test') replies.push(answer);
    }
    // Either the server closes now (it said 421), or it keeps the session: QUIT then shows which.
    if (!reader.closed) {
      socket.write('QUIT\r\n');
      const bye = await reader.next();
      return { replies, closed: bye === undefined };
    }
    return { replies, closed: true };
  } finally {
    socket.destroy();
  }
}

/** One login through nodemailer, from `localAddress` when given: 235, or the refusal's code and text. */
async function login(started: StartedLab, user: string, pass: string, localAddress?: string): Promise<string> {
  const { host, port } = started.node('mta').service('submission');
  const { ca, servername } = started.tlsFor('mta');
  const transport = nodemailer.createTransport({ host, port, secure: false, requireTLS: true, tls: { ca, servername }, auth: { user, pass }, ...(localAddress ? { localAddress } : {}) });
  try {
    await transport.verify();
    return '235';
  } catch (err) {
    return (err as { response?: string }).response ?? (err as Error).message;
  } finally {
    transport.close();
  }
}

describe('login throttling, tuned by the lab definition', () => {
  const lab = useLab((l) => l.with((def) => {
    def.authThrottle = { failuresPerConnection: 2, failuresPerAccount: 3, backoffMs: 800, maxBackoffMs: 2000 };
  }));

  it('closes a connection with 421 4.7.0 after the second failure', async () => {
    const { replies, closed } = await dialogue(lab(), [plain('alice@sender.test', 'guess-1'), plain('alice@sender.test', 'guess-2'), plain('alice@sender.test', 'alice-secret')]);
    expect(replies[0]).toMatch(/^535 5\.7\.8 /);
    expect(replies[1]).toMatch(/^421 4\.7\.0 .*too many failed logins on this connection/);
    expect(replies).toHaveLength(2); // the third line was never answered: the connection was closed
    expect(closed).toBe(true);
    await lab().waitFor({ kind: 'auth-failed', node: 'mta', where: (e) => 'reply' in e.detail && e.detail.reply.startsWith('421 4.7.0') });
  });

  it('then refuses the account from that address with 454 4.7.0, the right password included, but not from elsewhere', async () => {
    // Two failures above; the third (on a new connection) locks alice from this address.
    expect(await login(lab(), 'alice@sender.test', 'guess-3')).toMatch(/^535 /);
    const throttled = await lab().waitFor({ kind: 'auth-throttled', node: 'mta' });
    expect(throttled.detail).toMatchObject({ service: 'submission', user: 'alice@sender.test', scope: 'account', retryAfterMs: 800 });
    const client = throttled.detail.client;
    expect(await login(lab(), 'alice@sender.test', 'alice-secret')).toMatch(new RegExp(`^454 4\\.7\\.0 Too many failed logins for alice@sender\\.test from ${client.replace(/\./g, '\\.')}, try again in 1 s`));

    if (lab().runtimeKind !== 'local' || !net.isIPv4(client) || !client.startsWith('127.')) {
      console.log(`[19-login-throttle] not tried from another address: the ${lab().runtimeKind} runtime shows every host client as ${client}`);
      return;
    }
    // Another loopback address, outside the lab's block: a legitimate client elsewhere.
    const elsewhere = client === '127.0.0.1' ? '127.0.0.2' : '127.0.0.1';
    expect(await login(lab(), 'alice@sender.test', 'alice-secret', elsewhere)).toBe('235');
  });
});

describe('login throttling turned off by the lab definition', () => {
  const lab = useLab((l) => l.with((def) => {
    def.authThrottle = false;
  }));

  it('answers every failure with 535, keeps the connection, and the right password works', async () => {
    const guesses = Array.from({ length: 8 }, (_, i) => plain('alice@sender.test', `guess-${i}`));
    const { replies } = await dialogue(lab(), [...guesses, plain('alice@sender.test', 'alice-secret')]);
    expect(replies.slice(0, 8).every((r) => r.startsWith('535 5.7.8 '))).toBe(true);
    expect(replies[8]).toMatch(/^235 /);
    expect(lab().history.events.some((e) => e.kind === 'auth-throttled')).toBe(false);
  });
});
