// Scenario 24 (issue 11): clients nobody here wrote speak TLS to the lab with nothing but its CA.
// - curl --cacert: imaps (993), pop3s (995) and smtps (465, sending a message) with implicit TLS, and IMAP with
//   STARTTLS (--ssl-reqd), each pointed at the server's host name (--resolve), which its certificate carries;
// - Python's ssl with cafile: smtplib (STARTTLS on 587, then AUTH and a message), imaplib (STARTTLS on 143),
//   poplib (STLS on 110);
// - swaks --tls with the lab CA (skipped, saying why, where swaks is not installed);
// - a client that does not trust the lab CA fails with a certificate error that names the host.
import { promises as fs } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { smtpDialogue } from '../src/harness/index.js';
import { clientHome, findBinary, requireClient, runClient } from './support/real-clients.js';
import { useLab } from './support/lab.js';

const lab = useLab();
const curl = findBinary('curl');
const python = findBinary('python3');
const swaks = requireClient('swaks', 'swaks and libnet-ssleay-perl');
let home: { dir: string; remove: () => Promise<void> };
let message: string;

beforeAll(async () => {
  home = await clientHome('tls-clients');
  message = path.join(home.dir, 'message.eml');
  await fs.writeFile(message, 'From: alice@sender.test\r\nTo: bob@receiver.test\r\nSubject: over curl\r\nMessage-ID: <curl-smtps@sender.test>\r\n\r\nsent by curl over implicit TLS\r\n');
});
afterAll(async () => {
  await home?.remove();
});

/** `--resolve host:port:address`: the host name for TLS, the published address for the connection. */
function resolveArgs(node: string, service: string) {
  const { host, port } = lab().node(node).service(service);
  const name = lab().node(node).config.hostname;
  return { url: `${name}:${port}`, resolve: ['--resolve', `${name}:${port}:${host}`] };
}

describe.skipIf(!curl)('curl with the lab CA', () => {
  it('lists bob\'s mailboxes over imaps and IMAP STARTTLS, his messages over pop3s, and sends over smtps', async () => {
    const imaps = resolveArgs('mailbox', 'imaps');
    const listed = await runClient(curl!, ['-sS', '--cacert', lab().caFile, ...imaps.resolve, '--user', 'bob@receiver.test:bob-secret', `imaps://${imaps.url}/`]);
    expect(listed.code, listed.transcript).toBe(0);
    expect(listed.stdout).toMatch(/INBOX/);

    const imap = resolveArgs('mailbox', 'imap');
    const starttls = await runClient(curl!, ['-sS', '--ssl-reqd', '--cacert', lab().caFile, ...imap.resolve, '--user', 'bob@receiver.test:bob-secret', `imap://${imap.url}/`]);
    expect(starttls.code, starttls.transcript).toBe(0);
    expect(starttls.stdout).toMatch(/INBOX/);

    const smtps = resolveArgs('mta', 'submissions');
    const sent = await runClient(curl!, ['-sS', '--cacert', lab().caFile, ...smtps.resolve, '--user', 'alice@sender.test:alice-secret', '--mail-from', 'alice@sender.test', '--mail-rcpt', 'bob@receiver.test', '--upload-file', message, `smtps://${smtps.url}`]);
    expect(sent.code, sent.transcript).toBe(0);
    const submitted = await lab().waitFor({ kind: 'submitted', messageId: '<curl-smtps@sender.test>' });
    expect(submitted.detail.tls).toMatchObject({ version: expect.stringMatching(/^TLSv1\.[23]$/) });
    await lab().waitFor({ kind: 'stored', messageId: '<curl-smtps@sender.test>', detail: { user: 'bob@receiver.test' } });

    const pop3s = resolveArgs('mailbox', 'pop3s');
    const popped = await runClient(curl!, ['-sS', '--cacert', lab().caFile, ...pop3s.resolve, '--user', 'bob@receiver.test:bob-secret', `pop3s://${pop3s.url}/`]);
    expect(popped.code, popped.transcript).toBe(0);
    expect(popped.stdout).toMatch(/^1 \d+/m);
  });

  it('without the lab CA, fails on the certificate', async () => {
    const imaps = resolveArgs('mailbox', 'imaps');
    const refused = await runClient(curl!, ['-sS', ...imaps.resolve, '--user', 'bob@receiver.test:bob-secret', `imaps://${imaps.url}/`]);
    expect(refused.code, refused.transcript).toBe(60); // CURLE_PEER_FAILED_VERIFICATION
    expect(refused.stderr).toMatch(/certificate/i);
  });
});

describe("the harness's own client without the lab CA", () => {
  it('fails at STARTTLS with a certificate error that names the hop and the host', async () => {
    const mta = lab().node('mta');
    // Trusting something else than the lab CA (here: another host's certificate) is not trusting the MTA.
    const elsewhere = { ca: lab().node('mx').config.tls!.cert, servername: mta.config.hostname };
    const attempt = smtpDialogue(mta.service('submission'), ['EHLO client.test', 'STARTTLS', 'EHLO client.test'], { tls: elsewhere });
    await expect(attempt).rejects.toThrow(new RegExp(`SMTP .*: TLS with ${mta.config.hostname.replace(/\./g, '\\.')} failed: .*(certificate|verify)`));
  });
});

describe.skipIf(!python)("Python's ssl with the lab CA", () => {
  it('smtplib STARTTLS + AUTH + send, imaplib STARTTLS + LOGIN, poplib STLS + USER/PASS', async () => {
    const mta = lab().node('mta');
    const mailbox = lab().node('mailbox');
    const submission = mta.service('submission');
    const imap = mailbox.service('imap');
    const pop3 = mailbox.service('pop3');
    // Each library connects to the published address and checks the certificate against the host's name.
    const script = `
import imaplib, poplib, smtplib, socket, ssl, sys
ca, mta_name, box_name = sys.argv[1], sys.argv[2], sys.argv[3]
ctx = ssl.create_default_context(cafile=ca)
class Named:
    def __init__(self, name): self.name = name
    def wrap_socket(self, sock, server_hostname=None, **kw): return ctx.wrap_socket(sock, server_hostname=self.name, **kw)
s = smtplib.SMTP(${JSON.stringify(submission.host)}, ${submission.port}, local_hostname='client.sender.test')
s.starttls(context=Named(mta_name))
s.login('alice@sender.test', 'alice-secret')
s.sendmail('alice@sender.test', ['bob@receiver.test'], 'From: alice@sender.test\\r\\nTo: bob@receiver.test\\r\\nSubject: smtplib\\r\\nMessage-ID: <python-smtplib@sender.test>\\r\\n\\r\\nover STARTTLS\\r\\n')
print('smtp', s.sock.version())
s.quit()
m = imaplib.IMAP4(${JSON.stringify(imap.host)}, ${imap.port})
m.starttls(ssl_context=Named(box_name))
m.login('bob@receiver.test', 'bob-secret')
print('imap', m.sock.version(), m.select('INBOX')[0])
m.logout()
p = poplib.POP3(${JSON.stringify(pop3.host)}, ${pop3.port})
p.stls(context=Named(box_name))
p.user('bob@receiver.test'); p.pass_('bob-secret')
print('pop3', p.sock.version(), p.stat()[0] >= 0)
p.quit()
`;
    const run = await runClient(python!, ['-c', script, lab().caFile, mta.config.hostname, mailbox.config.hostname]);
    expect(run.code, run.transcript).toBe(0);
    expect(run.stdout).toMatch(/^smtp TLSv1\.[23]$/m);
    expect(run.stdout).toMatch(/^imap TLSv1\.[23] OK$/m);
    expect(run.stdout).toMatch(/^pop3 TLSv1\.[23] True$/m);
    await lab().waitFor({ kind: 'stored', messageId: '<python-smtplib@sender.test>', detail: { user: 'bob@receiver.test' } });
  });
});

describe.skipIf(!swaks)('swaks with the lab CA', () => {
  it('sends with --tls (STARTTLS on 587) and --tlsc (implicit TLS on 465), verifying the MTA', async () => {
    const mta = lab().node('mta');
    for (const [flag, service, id] of [['--tls', 'submission', 'swaks-tls'], ['--tlsc', 'submissions', 'swaks-tlsc']] as const) {
      const { host, port } = mta.service(service);
      const run = await runClient(swaks!, [flag, '--tls-verify', '--tls-ca-path', lab().caFile, '--tls-sni', mta.config.hostname, '--server', host, '--port', String(port), '--auth', 'PLAIN', '--auth-user', 'alice@sender.test', '--auth-password', 'alice-secret', '--from', 'alice@sender.test', '--to', 'bob@receiver.test', '--header', `Message-Id: <${id}@sender.test>`, '--helo', 'client.sender.test']);
      expect(run.code, run.transcript).toBe(0);
      await lab().waitFor({ kind: 'stored', messageId: `<${id}@sender.test>`, detail: { user: 'bob@receiver.test' } });
    }
  });
});
