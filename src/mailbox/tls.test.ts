// TLS on the mailbox server's IMAP and POP3 (issue 11): STARTTLS/STLS with the login refused before it, the
// injection of plaintext commands across the handshake, imaps/pop3s, TLS 1.2 at least, and the version and cipher
// in the session events. Real clients: imapflow, Python's imaplib and poplib, each trusting the test CA only.
import { ImapFlow } from 'imapflow';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Endpoint } from '../shared/config.js';
import type { RunningRole } from '../shared/node.js';
import { hasPython, runPython } from '../shared/python.test-helper.js';
import { TlsLines, tryTls11 } from '../shared/tls-lines.test-helper.js';
import { testPki, type TestPki } from '../shared/tls.test-helper.js';
import type { MailboxContract } from './api.js';
import { startMailbox } from './index.js';
import { BOB, testContext, type TestContext } from './testkit.test-helper.js';

const PASSWORD = 'bob-secret';
const TLS_VERSION = /^TLSv1\.[23]$/;

let pki: TestPki;
let ctx: TestContext;
let node: RunningRole<MailboxContract>;
/** The same node's services with plaintext logins allowed (the lab's setting while clients learn TLS). */
let openCtx: TestContext;
let openNode: RunningRole<MailboxContract>;
const clients: TlsLines[] = [];

const service = (name: string, running = node): Endpoint => running.services[name]!;
const ports = { lmtp: 0, imap: 0, pop3: 0, imaps: 0, pop3s: 0 };

beforeAll(async () => {
  pki = await testPki();
  ctx = await testContext({ ports, tls: pki.tls });
  node = await startMailbox(ctx);
  openCtx = await testContext({ ports, tls: { ...pki.tls, allowPlaintextAuth: true } });
  openNode = await startMailbox(openCtx);
});

afterAll(async () => {
  for (const c of clients) c.close();
  await node?.stop();
  await openNode?.stop();
  await ctx?.cleanup();
  await openCtx?.cleanup();
});

async function open(name: string, implicit = false, running = node): Promise<TlsLines> {
  const c = await TlsLines.connect(service(name, running), implicit ? pki.ca : undefined);
  clients.push(c);
  return c;
}

function lastSession(protocol: 'imap' | 'pop3', from = ctx) {
  return from.emitted('session').filter((e) => (e.detail as { protocol: string }).protocol === protocol).at(-1)?.detail as { user: string; tls: { version: string; cipher: string } | null } | undefined;
}

describe('IMAP', () => {
  it('before TLS: STARTTLS and LOGINDISABLED, no AUTH=; LOGIN and AUTHENTICATE get NO [PRIVACYREQUIRED] without a password check', async () => {
    const c = await open('imap');
    const greeting = await c.line();
    expect(greeting).toMatch(/^\* OK \[CAPABILITY .*\bSTARTTLS\b/);
    expect(greeting).toMatch(/\bLOGINDISABLED\b/);
    expect(greeting).not.toMatch(/AUTH=/);
    const failed = ctx.emitted('auth-failed').length;
    c.write(`a LOGIN ${BOB} ${PASSWORD}\r\n`);
    expect(await c.line()).toMatch(/^a NO \[PRIVACYREQUIRED\] /);
    c.write(`b AUTHENTICATE PLAIN ${Buffer.from(`\0${BOB}\0${PASSWORD}`).toString('base64')}\r\n`);
    expect(await c.line()).toMatch(/^b NO \[PRIVACYREQUIRED\] /);
    expect(ctx.emitted('auth-failed').length).toBe(failed);
  });

  it('STARTTLS: commands pipelined in plaintext behind it are dropped, not run inside TLS; then the capabilities change and LOGIN works', async () => {
    const c = await open('imap');
    await c.line();
    // One write: the STARTTLS and an injected command (CVE-2011-0411 style).
    c.write('a STARTTLS\r\nx LOGIN bob@receiver.test bob-secret\r\ny CAPABILITY\r\n' + 'z1 NOOP\r\nz2 NOOP\r\nz3 NOOP\r\nz4 NOOP\r\nz5 NOOP\r\n');
    expect(await c.line()).toMatch(/^a OK /);
    expect(c.unread).toBe('');
    expect(await c.startTls(pki.ca)).toMatch(TLS_VERSION);
    c.write('b NOOP\r\n');
    expect(await c.line()).toMatch(/^b OK /); // nothing answered x or y
    c.write('c CAPABILITY\r\n');
    const caps = await c.until(/^c /);
    expect(caps[0]).toMatch(/^\* CAPABILITY .*\bAUTH=PLAIN\b/);
    expect(caps[0]).not.toMatch(/STARTTLS|LOGINDISABLED/);
    c.write('d STARTTLS\r\n');
    expect(await c.line()).toMatch(/^d BAD /);
    c.write(`e LOGIN ${BOB} ${PASSWORD}\r\n`);
    expect(await c.line()).toMatch(/^e OK \[CAPABILITY /);
    const session = lastSession('imap');
    expect(session?.tls?.version).toMatch(TLS_VERSION);
    expect(session?.tls?.cipher).toMatch(/\w/);
  });

  it('imapflow over imaps (993) and with STARTTLS on 143, trusting the test CA', async () => {
    for (const options of [{ port: service('imaps').port, secure: true }, { port: service('imap').port, secure: false, doSTARTTLS: true }]) {
      const client = new ImapFlow({ host: '127.0.0.1', ...options, auth: { user: BOB, pass: PASSWORD }, tls: { ca: pki.ca, servername: 'localhost' }, logger: false, disableAutoIdle: true } as any);
      client.on('error', () => undefined);
      await client.connect();
      const box = await client.mailboxOpen('INBOX');
      expect(box.path).toBe('INBOX');
      await client.logout();
      expect(lastSession('imap')?.tls?.version).toMatch(TLS_VERSION);
    }
  });

  it('with allowPlaintextAuth: STARTTLS offered, LOGIN allowed in plaintext (tls null in the event)', async () => {
    const c = await open('imap', false, openNode);
    const greeting = await c.line();
    expect(greeting).toMatch(/\bSTARTTLS\b.*AUTH=PLAIN/);
    expect(greeting).not.toMatch(/LOGINDISABLED/);
    c.write(`a LOGIN ${BOB} ${PASSWORD}\r\n`);
    expect(await c.line()).toMatch(/^a OK /);
    expect(lastSession('imap', openCtx)?.tls).toBeNull();
  });

  it.runIf(hasPython)("Python's imaplib: STARTTLS and IMAP4_SSL with cafile", async () => {
    const script = `
import imaplib, ssl, sys
ctx = ssl.create_default_context(cafile=sys.argv[1])
m = imaplib.IMAP4('localhost', int(sys.argv[2]))
m.starttls(ssl_context=ctx)
print(m.login(sys.argv[4], sys.argv[5])[0], m.sock.version())
m.logout()
m = imaplib.IMAP4_SSL('localhost', int(sys.argv[3]), ssl_context=ctx)
print(m.login(sys.argv[4], sys.argv[5])[0], m.sock.version())
m.logout()
`;
    const out = await runPython(script, [pki.caFile, String(service('imap').port), String(service('imaps').port), BOB, PASSWORD]);
    expect(out.trim().split('\n')).toEqual([expect.stringMatching(/^OK TLSv1\.[23]$/), expect.stringMatching(/^OK TLSv1\.[23]$/)]);
  });
});

describe('POP3', () => {
  it('before TLS: CAPA lists STLS, not USER nor SASL; USER, PASS and AUTH get -ERR [AUTH]', async () => {
    const c = await open('pop3');
    await c.line();
    c.write('CAPA\r\n');
    const caps = await c.until(/^\.$/);
    expect(caps).toContain('STLS');
    expect(caps).not.toContain('USER');
    expect(caps.some((l) => l.startsWith('SASL'))).toBe(false);
    for (const command of [`USER ${BOB}`, `PASS ${PASSWORD}`, 'AUTH PLAIN']) {
      c.write(`${command}\r\n`);
      expect(await c.line()).toMatch(/^-ERR \[AUTH\] .*STLS/);
    }
  });

  it('STLS: commands pipelined in plaintext behind it are dropped; USER/PASS work over TLS and the session event has the cipher', async () => {
    const c = await open('pop3');
    await c.line();
    c.write(`STLS\r\nUSER ${BOB}\r\nCAPA\r\n`);
    expect(await c.line()).toMatch(/^\+OK /);
    expect(c.unread).toBe('');
    expect(await c.startTls(pki.ca)).toMatch(TLS_VERSION);
    c.write(`PASS ${PASSWORD}\r\n`); // the injected USER must not count: PASS without USER
    expect(await c.line()).toMatch(/^-ERR send USER first/);
    c.write('CAPA\r\n');
    const caps = await c.until(/^\.$/);
    expect(caps).toContain('USER');
    expect(caps).not.toContain('STLS');
    c.write('STLS\r\n');
    expect(await c.line()).toMatch(/^-ERR /);
    c.write(`USER ${BOB}\r\nPASS ${PASSWORD}\r\n`);
    expect(await c.line()).toMatch(/^\+OK/);
    expect(await c.line()).toMatch(/^\+OK maildrop/);
    const session = lastSession('pop3');
    expect(session?.tls?.version).toMatch(TLS_VERSION);
    c.write('QUIT\r\n');
    expect(await c.line()).toMatch(/^\+OK/);
  });

  it('pop3s (995): implicit TLS, logins at once', async () => {
    const c = await open('pop3s', true);
    expect(await c.line()).toMatch(/^\+OK /);
    c.write('CAPA\r\n');
    const caps = await c.until(/^\.$/);
    expect(caps).toContain('USER');
    expect(caps).not.toContain('STLS');
    c.write(`USER ${BOB}\r\nPASS ${PASSWORD}\r\nQUIT\r\n`);
    expect(await c.until(/signing off/)).toHaveLength(3);
  });

  it.runIf(hasPython)("Python's poplib: STLS and POP3_SSL with cafile", async () => {
    const script = `
import poplib, ssl, sys
ctx = ssl.create_default_context(cafile=sys.argv[1])
p = poplib.POP3('localhost', int(sys.argv[2]))
p.stls(context=ctx)
p.user(sys.argv[4]); print(p.pass_(sys.argv[5]).split()[0].decode(), p.sock.version())
p.quit()
p = poplib.POP3_SSL('localhost', int(sys.argv[3]), context=ctx)
p.user(sys.argv[4]); print(p.pass_(sys.argv[5]).split()[0].decode(), p.sock.version())
p.quit()
`;
    const out = await runPython(script, [pki.caFile, String(service('pop3').port), String(service('pop3s').port), BOB, PASSWORD]);
    expect(out.trim().split('\n')).toEqual([expect.stringMatching(/^\+OK TLSv1\.[23]$/), expect.stringMatching(/^\+OK TLSv1\.[23]$/)]);
  });
});

describe('TLS versions', () => {
  it('TLS 1.1 is refused on imaps and pop3s, and after STARTTLS', async () => {
    for (const name of ['imaps', 'pop3s']) expect(await tryTls11(service(name), pki.ca)).toMatch(/version/i);
    const imap = await open('imap');
    await imap.line();
    imap.write('a STARTTLS\r\n');
    expect(await imap.line()).toMatch(/^a OK /);
    expect(await tryTls11(imap.socket, pki.ca)).toMatch(/version/i);
    const pop3 = await open('pop3');
    await pop3.line();
    pop3.write('STLS\r\n');
    expect(await pop3.line()).toMatch(/^\+OK /);
    expect(await tryTls11(pop3.socket, pki.ca)).toMatch(/version/i);
  });
});
