// Issue 10: a real retrieval client, fetchmail, over POP3 and over IMAP, with and without --keep. Each message it
// hands to its MDA (a script writing one file per message) must be fetched exactly once across runs: kept messages
// are not fetched again, new ones are, and without --keep (with --flush for the ones kept before) the server ends
// empty. fetchmail gets the mailbox server's IP address and port (on docker: the port published on 127.0.0.1), never
// a name, and delivers to the MDA only (no SMTP forwarding, so it looks up no host).
import { promises as fs } from 'node:fs';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { normalizeMessageId } from '../src/harness/index.js';
import { useLab } from './support/lab.js';
import { clientHome, duplicates, idsOf, readMessageFiles, readServer, requireClient, runClient } from './support/real-clients.js';

const fetchmail = requireClient('fetchmail', 'fetchmail');
const BOB = { address: 'bob@receiver.test', password: 'bob-secret' };

/** fetchmail's exit codes (fetchmail(1), "EXIT CODES"). */
const GOT_MAIL = 0;
const NO_MAIL = 1;

describe.skipIf(!fetchmail).each(['POP3', 'IMAP'] as const)('fetchmail over %s', (protocol) => {
  const lab = useLab((l) => l, { scope: 'test' });
  let home: { dir: string; remove: () => Promise<void> };
  let out: string;

  beforeEach(async () => {
    home = await clientHome('fetchmail');
    out = path.join(home.dir, 'delivered');
    await fs.mkdir(out);
    // The MDA: one file per message, the message on stdin (fetchmail runs it through /bin/sh -c).
    const mda = path.join(home.dir, 'mda.sh');
    await fs.writeFile(mda, '#!/bin/sh\nf=$(mktemp "$1/msg.XXXXXXXX") && cat > "$f"\n', { mode: 0o700 });
    const service = lab().nodeOf('mailbox').service(protocol === 'POP3' ? 'pop3' : 'imap');
    // FETCHMAILHOME keeps the rc file, the UIDL file (.fetchids) and the lock in this directory; the rc file must be
    // the user's own and mode 0600, or fetchmail refuses it.
    await fs.writeFile(
      path.join(home.dir, 'fetchmailrc'),
      [
        'set no syslog',
        `poll ${service.host} protocol ${protocol} service ${service.port} timeout 20`,
        `  auth password user "${BOB.address}" there with password "${BOB.password}"`,
        `  mda "${mda} ${out}"`,
        // STARTTLS / STLS (passwords only over TLS, RFC 8314), verified against the lab CA under the server's host
        // name, which its certificate carries (on docker the published address, 127.0.0.1, is not in it).
        `  sslproto 'tls1.2+' sslcertck sslcertfile "${lab().caFile}" sslcommonname "${lab().nodeOf('mailbox').config.hostname}"`,
        '',
      ].join('\n'),
      { mode: 0o600 },
    );
  });
  afterEach(async () => {
    await home?.remove();
  });

  /** One fetchmail run; `keep`: --keep, else --nokeep (with `flush`: --flush, deleting what earlier runs kept). */
  const fetch = async (options: { keep: boolean; flush?: boolean }, expectedCode: number): Promise<string> => {
    const args = ['-f', path.join(home.dir, 'fetchmailrc'), '-v', options.keep ? '--keep' : '--nokeep', ...(options.flush ? ['--flush'] : [])];
    const result = await runClient(fetchmail!, args, { env: { FETCHMAILHOME: home.dir, HOME: home.dir }, timeoutMs: 30_000 });
    expect(result.code, `fetchmail's exit code\n${result.transcript}`).toBe(expectedCode);
    return result.transcript;
  };

  /** Mail from alice through the whole lab, waited for until stored in bob's INBOX. */
  const deliver = async (n: number): Promise<string> => {
    const sent = await lab().client('alice@sender.test').send({ to: BOB.address, subject: `${protocol} ${n}`, text: `message ${n}` });
    await lab().waitFor({ kind: 'stored', messageId: sent.messageId, detail: { user: BOB.address } }, { timeoutMs: 15_000 });
    return normalizeMessageId(sent.messageId);
  };

  /** Every message handed to the MDA so far is exactly `fetched`, once each; the server holds exactly `onServer`. */
  const expectState = async (fetched: string[], onServer: string[], transcript: string) => {
    const local = await readMessageFiles(out);
    const server = await readServer(lab(), BOB.address);
    const context = `${transcript}\nfetched: ${JSON.stringify(local, null, 1)}\nserver: ${JSON.stringify(server, null, 1)}`;
    expect(duplicates(local), `messages fetched more than once\n${context}`).toEqual([]);
    expect(idsOf(local), `the messages fetched\n${context}`).toEqual([...fetched].sort());
    expect(idsOf(server), `the messages left on the server\n${context}`).toEqual([...onServer].sort());
    // Every login of fetchmail so far went over TLS.
    const sessions = lab().history.filter({ kind: 'session', node: 'mailbox' });
    expect(sessions.length, `fetchmail's logins\n${transcript}`).toBeGreaterThan(0);
    expect(sessions.filter((e) => e.detail.tls === null), `logins without TLS\n${transcript}`).toEqual([]);
  };

  it('fetches every message once, with --keep and without', async () => {
    const first = [await deliver(1), await deliver(2), await deliver(3)];

    // --keep: fetched, left on the server; a second run finds nothing new.
    await expectState(first, first, await fetch({ keep: true }, GOT_MAIL));
    await expectState(first, first, await fetch({ keep: true }, NO_MAIL));

    // New mail beside the kept: only the new is fetched.
    const second = [await deliver(4), await deliver(5)];
    const kept = [...first, ...second];
    await expectState(kept, kept, await fetch({ keep: true }, GOT_MAIL));

    // --nokeep --flush: the new one fetched, and everything deleted from the server, the kept ones included.
    const sixth = await deliver(6);
    await expectState([...kept, sixth], [], await fetch({ keep: false, flush: true }, GOT_MAIL));

    // --nokeep: fetched and deleted; then nothing is left to fetch.
    const seventh = await deliver(7);
    const all = [...kept, sixth, seventh];
    await expectState(all, [], await fetch({ keep: false }, GOT_MAIL));
    await expectState(all, [], await fetch({ keep: false }, NO_MAIL));
  });
});
