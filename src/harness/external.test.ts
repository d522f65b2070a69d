// The readiness probe of external hosts (issue 14) against real sockets on loopback: servers that greet as they
// should, one that is not there, one that greets wrongly, one that never greets, one that comes up late.
import net from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { probeExternalHost, probeExternalHosts } from './external.js';
import type { ExternalHostPlan } from './topology.js';

const ADDRESS = '127.0.0.1';
const servers: net.Server[] = [];

afterEach(async () => {
  await Promise.all(servers.splice(0).map((s) => new Promise((resolve) => s.close(resolve))));
});

/** A TCP server on ADDRESS that writes `greeting` (if any) to every connection and records what it is sent. */
async function server(greeting: string | undefined, received: string[] = []): Promise<number> {
  const s = net.createServer((socket) => {
    socket.on('error', () => undefined);
    socket.on('data', (data) => {
      received.push(data.toString('latin1'));
      socket.end();
    });
    if (greeting !== undefined) socket.write(greeting);
  });
  servers.push(s);
  await new Promise<void>((resolve) => s.listen(0, ADDRESS, resolve));
  return (s.address() as net.AddressInfo).port;
}

/** A port nothing listens on (bound once, then released). */
async function freePort(): Promise<number> {
  const s = net.createServer();
  await new Promise<void>((resolve) => s.listen(0, ADDRESS, resolve));
  const { port } = s.address() as net.AddressInfo;
  await new Promise((resolve) => s.close(resolve));
  return port;
}

const host = (ports: ExternalHostPlan['ports'], readyTimeoutMs = 600): ExternalHostPlan => ({ name: 'partner', hostname: 'smtp.partner.test', address: ADDRESS, ports, readyTimeoutMs });

describe('the readiness probe of an external host', () => {
  it('passes when every port greets as its service does (220, * OK, +OK) or, for implicit TLS, accepts; and says goodbye', async () => {
    const smtp: string[] = [];
    const imap: string[] = [];
    const ports = {
      smtp: await server('220-smtp.partner.test ESMTP\r\n220 hello\r\n', smtp),
      lmtp: await server('220 lmtp ready\r\n'),
      imap: await server('* OK [CAPABILITY IMAP4rev1] ready\r\n', imap),
      pop3: await server('+OK POP3 ready\r\n'),
      imaps: await server(undefined),
    };
    await probeExternalHosts({ partner: host(ports) });
    await expect.poll(() => smtp.join('')).toBe('QUIT\r\n');
    await expect.poll(() => imap.join('')).toBe('p1 LOGOUT\r\n');
  });

  it('fails naming the host, its address, the port and the refusal when nothing listens', async () => {
    const port = await freePort();
    const started = Date.now();
    await expect(probeExternalHost(host({ smtp: port }, 400))).rejects.toThrow(
      new RegExp(`^external host partner \\(smtp\\.partner\\.test, 127\\.0\\.0\\.1\\) is not ready: smtp port ${port}: no connection: connect ECONNREFUSED 127\\.0\\.0\\.1:${port} \\(probed for 400 ms, ready\\.timeoutMs\\)`),
    );
    // It kept trying until the deadline (a server may be starting), and not much longer.
    expect(Date.now() - started).toBeGreaterThanOrEqual(300);
    expect(Date.now() - started).toBeLessThan(2000);
  });

  it('fails on a greeting of another kind, quoting it', async () => {
    const port = await server('554 5.3.2 not accepting mail\r\n');
    await expect(probeExternalHost(host({ lmtp: port }))).rejects.toThrow(`lmtp port ${port}: greeting "554 5.3.2 not accepting mail", not a 220 greeting`);
    const pop = await server('-ERR go away\r\n');
    await expect(probeExternalHost(host({ pop3: pop }))).rejects.toThrow(`pop3 port ${pop}: greeting "-ERR go away", not a "+OK" greeting`);
  });

  it('fails on a server that accepts the connection and never greets, or closes it at once', async () => {
    const silent = await server(undefined);
    await expect(probeExternalHost(host({ smtp: silent }, 500))).rejects.toThrow(/smtp port \d+: a connection, but no greeting within \d+ ms/);
    const closing = net.createServer((socket) => socket.destroy());
    servers.push(closing);
    await new Promise<void>((resolve) => closing.listen(0, ADDRESS, resolve));
    await expect(probeExternalHost(host({ imap: (closing.address() as net.AddressInfo).port }, 400))).rejects.toThrow(/imap port \d+: a connection, closed without a greeting/);
  });

  it('waits for a server that comes up within the timeout', async () => {
    const port = await freePort();
    const late = net.createServer((socket) => socket.resume().end('220 late but here\r\n'));
    servers.push(late);
    setTimeout(() => late.listen(port, ADDRESS), 300);
    await probeExternalHost(host({ smtp: port }, 3000));
  });
});
