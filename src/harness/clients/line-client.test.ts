// The line client against small scripted servers: each test's server writes exactly what the case needs, in
// pieces where framing across TCP segments matters, so no read can pass by accident of timing.
import net, { type AddressInfo } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import type { Endpoint } from '../../shared/config.js';
import { LineClient, LineClientError } from './line-client.js';

const servers: net.Server[] = [];
const sockets: net.Socket[] = [];
const clients: LineClient[] = [];

/** A server that runs `script` for each connection; `lines` yields what the client sent, line by line. */
async function serve(script: (socket: net.Socket, lines: AsyncIterator<string>) => void | Promise<void>): Promise<Endpoint> {
  // Half-open allowed, so a script can still answer after the client's end(); a script ends its side itself.
  const server = net.createServer({ allowHalfOpen: true }, (socket) => {
    sockets.push(socket);
    socket.on('error', () => undefined);
    void script(socket, linesOf(socket));
  });
  servers.push(server);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return { host: '127.0.0.1', port: (server.address() as AddressInfo).port };
}

async function* linesOf(socket: net.Socket): AsyncGenerator<string> {
  let pending = '';
  // Not destroyed when the input ends: a script may still answer a client that half-closed.
  for await (const chunk of socket.iterator({ destroyOnReturn: false })) {
    pending += (chunk as Buffer).toString('latin1');
    for (let end = pending.indexOf('\r\n'); end >= 0; end = pending.indexOf('\r\n')) {
      yield pending.slice(0, end);
      pending = pending.slice(end + 2);
    }
  }
}

async function connect(endpoint: Endpoint, name = 'TEST'): Promise<LineClient> {
  const c = await LineClient.connect(endpoint, { name, timeoutMs: 2000 });
  clients.push(c);
  return c;
}

/** Writes the pieces one after the other, each once the previous one has been handed to the kernel. */
async function dribble(socket: net.Socket, pieces: Array<string | Buffer>): Promise<void> {
  for (const piece of pieces) await new Promise<void>((resolve) => socket.write(piece, () => resolve()));
}

afterEach(async () => {
  for (const c of clients.splice(0)) c.close();
  for (const s of sockets.splice(0)) s.destroy();
  await Promise.all(servers.splice(0).map((s) => new Promise<void>((resolve) => s.close(() => resolve()))));
});

describe('LineClient', () => {
  it('fails to connect with an error naming the endpoint', async () => {
    const endpoint = await serve(() => undefined);
    await new Promise<void>((resolve) => servers.pop()!.close(() => resolve()));
    const err = await LineClient.connect(endpoint, { name: 'SMTP' }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(LineClientError);
    expect(err).toMatchObject({ kind: 'connect', endpoint });
    expect((err as Error).message).toContain(`SMTP 127.0.0.1:${endpoint.port}: cannot connect`);
  });

  it('reads lines and exact octets across segments, and sends lines with CRLF', async () => {
    const endpoint = await serve(async (socket, lines) => {
      await dribble(socket, ['hel', 'lo\r', '\nwor', 'ld\r\n0123']);
      const got = await lines.next();
      await dribble(socket, [`456789 echo ${got.value}\r\n`]);
    });
    const c = await connect(endpoint);
    expect(await c.line()).toBe('hello');
    expect(await c.line()).toBe('world');
    c.send('ping');
    expect((await c.bytes(10)).toString()).toBe('0123456789');
    expect(await c.line()).toBe(' echo ping');
  });

  it('reads an SMTP multi-line reply whole, and a one-line reply', async () => {
    const endpoint = await serve((socket) => dribble(socket, ['250-mail.test\r\n250-PIPE', 'LINING\r\n250 SIZE 100\r\n', '354 go ahead\r\n']));
    const c = await connect(endpoint);
    expect(await c.smtpReply()).toEqual({ code: 250, lines: ['250-mail.test', '250-PIPELINING', '250 SIZE 100'], text: '250-mail.test\r\n250-PIPELINING\r\n250 SIZE 100' });
    expect(await c.smtpReply()).toEqual({ code: 354, lines: ['354 go ahead'], text: '354 go ahead' });
  });

  it('reads POP3 responses: single-line, -ERR without a body, multi-line dot-unstuffed, empty body', async () => {
    const endpoint = await serve((socket) =>
      dribble(socket, ['+OK ready\r\n', '-ERR no such message\r\n', '+OK 2 messages\r\n1 10\r\n..dotted\r\n.', '\r\n', '+OK\r\n.\r\n', '+OK\r\n.\r\n']),
    );
    const c = await connect(endpoint);
    expect(await c.pop3Response()).toEqual({ ok: true, status: '+OK ready' });
    expect(await c.pop3Response({ multiline: true })).toEqual({ ok: false, status: '-ERR no such message' });
    const list = await c.pop3Response({ multiline: true });
    expect(list.status).toBe('+OK 2 messages');
    expect(list.body!.toString()).toBe('1 10\r\n.dotted\r\n');
    expect(await c.pop3Response({ multiline: true })).toEqual({ ok: true, status: '+OK', body: Buffer.alloc(0) });
    // Without `multiline` the body is left for the next read, here as a raw dot-terminated body.
    expect(await c.pop3Response()).toEqual({ ok: true, status: '+OK' });
    expect(await c.dotBody()).toEqual(Buffer.alloc(0));
  });

  it('reads a dot-terminated body raw or unstuffed', async () => {
    const endpoint = await serve((socket) => dribble(socket, ['..a\r\nb\r\n.\r\n', '..a\r\n.\r\n']));
    const c = await connect(endpoint);
    expect((await c.dotBody()).toString()).toBe('..a\r\nb\r\n');
    expect((await c.dotBody({ unstuff: true })).toString()).toBe('.a\r\n');
  });

  it('reads IMAP responses with literals counted in octets, up to the tagged completion', async () => {
    const literal = Buffer.from('Grüße\r\n{3}\r\n', 'utf8'); // 8-bit, a CRLF and something that looks like a literal
    const endpoint = await serve((socket) =>
      dribble(socket, [`* 1 FETCH (BODY[] {${literal.length}}\r\n`, literal.subarray(0, 4), Buffer.concat([literal.subarray(4), Buffer.from(')\r\n* 2 EXISTS\r\na1 OK done\r\n')])]),
    );
    const c = await connect(endpoint);
    const lines = await c.readUntil((l) => l.startsWith('a1 '), { literals: true });
    expect(lines).toEqual([`* 1 FETCH (BODY[] {${literal.length}}\r\n${literal.toString('latin1')})`, '* 2 EXISTS', 'a1 OK done']);
  });

  it('reads plain lines until a predicate holds', async () => {
    const endpoint = await serve((socket) => dribble(socket, ['a\r\nb\r\nc\r\n']));
    const c = await connect(endpoint);
    expect(await c.readUntil((l) => l === 'b')).toEqual(['a', 'b']);
    expect(await c.line()).toBe('c');
  });

  it('times out with the endpoint, the command (as labelled) and the unread data', async () => {
    const endpoint = await serve((socket) => dribble(socket, ['+OK partial']));
    const c = await connect(endpoint, 'POP3');
    c.send('PASS secret', 'PASS ****');
    const err = await c.pop3Response({ timeoutMs: 100 }).catch((e: unknown) => e);
    expect(err).toMatchObject({ kind: 'timeout', command: 'PASS ****', endpoint });
    expect((err as Error).message).toBe(`POP3 127.0.0.1:${endpoint.port}: no POP3 response within 100 ms (after "PASS ****"); unread: "+OK partial"`);
  });

  it('fails a read the connection ends under, but still delivers what came before the close', async () => {
    const endpoint = await serve(async (socket, lines) => {
      await lines.next();
      await dribble(socket, ['250-first\r\n']);
      socket.end();
    });
    const c = await connect(endpoint, 'LMTP');
    c.write('DATA\r\nmore\r\n');
    expect(await c.line()).toBe('250-first');
    const err = await c.smtpReply().catch((e: unknown) => e);
    expect(err).toMatchObject({ kind: 'closed', command: 'DATA' });
    expect((err as Error).message).toContain(`LMTP 127.0.0.1:${endpoint.port}: connection closed while waiting for an SMTP reply (after "DATA")`);
    expect(c.closed).toBe(true);
  });

  it('a reply followed by a close is a reply; waitClosed() resolves then, and times out while open', async () => {
    const endpoint = await serve(async (socket, lines) => {
      if ((await lines.next()).value === 'QUIT') socket.end('+OK bye\r\n');
    });
    const open = await connect(endpoint);
    await expect(open.waitClosed({ timeoutMs: 50 })).rejects.toMatchObject({ kind: 'timeout' });
    open.send('QUIT');
    await open.waitClosed();
    expect(await open.line()).toBe('+OK bye');
  });

  it('end() half-closes: the server sees the end of input and can still answer', async () => {
    const endpoint = await serve(async (socket, lines) => {
      const got: string[] = [];
      for (let next = await lines.next(); !next.done; next = await lines.next()) got.push(next.value);
      socket.end(`got ${got.join(',')}\r\n`);
    });
    const c = await connect(endpoint);
    c.send('one');
    c.send('two');
    c.end();
    expect(await c.line()).toBe('got one,two');
    await c.waitClosed();
  });
});
