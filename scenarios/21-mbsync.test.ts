// Issue 10: a real IMAP client, mbsync (Debian's isync), keeps a local Maildir and bob's INBOX on the lab in sync
// both ways. Mail is added on each side between syncs and flags change on each side; after every sync both sides
// hold the same Message-IDs, each once, with the same flags, and a sync with nothing to do changes nothing.
// mbsync gets the mailbox server's IP address and port (on docker: the port published on 127.0.0.1), never a name.
import { promises as fs } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { normalizeMessageId } from '../src/harness/index.js';
import { useLab } from './support/lab.js';
import { clientHome, composeMessage, duplicates, flagsById, idsOf, readMaildir, readServer, requireClient, runClient, type SeenMessage } from './support/real-clients.js';

const mbsync = requireClient('mbsync', 'isync');
const BOB = { address: 'bob@receiver.test', password: 'bob-secret' };

describe.skipIf(!mbsync)('mbsync keeps a Maildir and the lab INBOX in sync both ways', () => {
  const lab = useLab();
  let home: { dir: string; remove: () => Promise<void> };
  let inbox: string;
  let configFile: string;
  let written = 0;
  /** Normalised Message-ID → as the sender wrote it (what an IMAP device looks messages up by). */
  const asSent = new Map<string, string>();

  beforeAll(async () => {
    home = await clientHome('mbsync');
    inbox = path.join(home.dir, 'mail', 'INBOX');
    for (const sub of ['new', 'cur', 'tmp']) await fs.mkdir(path.join(inbox, sub), { recursive: true });
    const imap = lab().nodeOf('mailbox').service('imap');
    configFile = path.join(home.dir, 'mbsyncrc');
    const pinned = path.join(home.dir, 'mailbox-certificate.pem');
    await fs.writeFile(pinned, lab().nodeOf('mailbox').config.tls!.cert);
    await fs.writeFile(
      configFile,
      [
        'IMAPAccount lab',
        `Host ${imap.host}`,
        `Port ${imap.port}`,
        `User ${BOB.address}`,
        `Pass ${BOB.password}`,
        // STARTTLS (passwords only over TLS, RFC 8314) with the mailbox server's own certificate pinned: mbsync matches
        // a CA-issued certificate only against a host *name*, and \`Host\` is an address here (on docker the published
        // 127.0.0.1, which no certificate names). A pinned "host" certificate is trusted as is (mbsync(1)).
        'SSLType STARTTLS',
        `CertificateFile ${pinned}`,
        'AuthMechs LOGIN',
        'Timeout 20',
        '',
        'IMAPStore lab-remote',
        'Account lab',
        '',
        'MaildirStore local',
        `Path ${path.join(home.dir, 'mail')}/`,
        `Inbox ${inbox}`,
        '',
        'Channel bob',
        'Far :lab-remote:',
        'Near :local:',
        'Patterns INBOX',
        'Create Both',
        'Expunge Both',
        'SyncState *',
        'Sync All',
        '',
      ].join('\n'),
      { mode: 0o600 },
    );
  });
  afterAll(async () => {
    await home?.remove();
  });

  /** One `mbsync bob`, which must succeed; returns its transcript for failure messages. */
  const sync = async (): Promise<string> => {
    const result = await runClient(mbsync!, ['-c', configFile, '-V', 'bob'], { env: { HOME: home.dir }, timeoutMs: 30_000 });
    expect(result.code, result.transcript).toBe(0);
    return result.transcript;
  };

  /** A message written into the local Maildir's new/, as a client (or an MDA) would. */
  const writeLocal = async (subject: string): Promise<string> => {
    const { raw, messageId } = composeMessage(BOB.address, 'alice@sender.test', subject, `mbsync-${process.pid}-${++written}`);
    const name = `${Date.now()}.${process.pid}_${written}.client`;
    await fs.writeFile(path.join(inbox, 'tmp', name), raw);
    await fs.rename(path.join(inbox, 'tmp', name), path.join(inbox, 'new', name));
    return messageId;
  };

  /** Changes a local message's flags the Maildir way: into cur/ with the letters after `:2,`. */
  const setLocalFlags = async (messageId: string, letters: string) => {
    const local = (await readMaildir(inbox)).find((m) => m.messageId === messageId);
    if (!local) throw new Error(`no local copy of ${messageId}`);
    const current = /:2,([A-Za-z]*)$/.exec(local.where)?.[1] ?? '';
    const base = path.basename(local.where).replace(/:2,[A-Za-z]*$/, '');
    const info = [...new Set([...current, ...letters])].sort().join('');
    await fs.rename(local.where, path.join(inbox, 'cur', `${base}:2,${info}`));
  };

  /** Mail from alice through the whole lab, waited for until stored in bob's INBOX. */
  const deliver = async (subject: string): Promise<string> => {
    const sent = await lab().client('alice@sender.test').send({ to: BOB.address, subject, text: subject });
    await lab().waitFor({ kind: 'stored', messageId: sent.messageId, detail: { user: BOB.address } }, { timeoutMs: 15_000 });
    const id = normalizeMessageId(sent.messageId);
    asSent.set(id, sent.messageId);
    return id;
  };

  /** Both sides hold exactly `expected`, each message once, with the same system flags. */
  const expectConverged = async (expected: string[], transcript: string): Promise<{ local: SeenMessage[]; server: SeenMessage[] }> => {
    const local = await readMaildir(inbox);
    const server = (await readServer(lab(), BOB.address)).map((m) => ({ ...m, flags: m.flags.filter((f) => f !== '\\Recent') }));
    const context = `${transcript}\nlocal: ${JSON.stringify(local, null, 1)}\nserver: ${JSON.stringify(server, null, 1)}`;
    expect(duplicates(local), `duplicates in the Maildir\n${context}`).toEqual([]);
    expect(duplicates(server), `duplicates on the server\n${context}`).toEqual([]);
    expect(idsOf(local), `the Maildir's messages\n${context}`).toEqual([...expected].sort());
    expect(idsOf(server), `the server's messages\n${context}`).toEqual([...expected].sort());
    expect(flagsById(local), `flags differ between the sides\n${context}`).toEqual(flagsById(server));
    return { local, server };
  };

  it('syncs mail and flags both ways, twice, with no duplicates or losses, and a sync with nothing to do is a no-op', async () => {
    // Before the first sync: three messages on the server, two only in the Maildir.
    const s1 = await deliver('server one');
    const s2 = await deliver('server two');
    const s3 = await deliver('server three');
    const c1 = await writeLocal('client one');
    const c2 = await writeLocal('client two');

    await expectConverged([s1, s2, s3, c1, c2], await sync());

    // Between syncs, on the server: s1 read (\Seen), s2 deleted and expunged, s4 arrives.
    const phone = await lab().imap(BOB.address, { device: 'phone' });
    await phone.waitForMessage(asSent.get(s1)!, 5000);
    await phone.read(asSent.get(s1)!);
    await phone.delete(asSent.get(s2)!);
    const s4 = await deliver('server four');
    // ... and in the Maildir: c1 flagged, s3 read, c2 trashed (T: expunged on both sides by Expunge Both), c3 written.
    await setLocalFlags(c1, 'F');
    await setLocalFlags(s3, 'S');
    await setLocalFlags(c2, 'T');
    const c3 = await writeLocal('client three');

    const second = await expectConverged([s1, s3, s4, c1, c3], await sync());
    const flags = flagsById(second.server);
    expect(flags[s1], 'read on the server, \\Seen in the Maildir').toBe('\\Seen');
    expect(flags[s3], 'read in the Maildir, \\Seen on the server').toBe('\\Seen');
    expect(flags[c1], 'flagged in the Maildir, \\Flagged on the server').toBe('\\Flagged');
    expect(flags[s4]).toBe('');
    expect(flags[c3]).toBe('');

    // Nothing changed on either side: the third sync moves nothing and both sides stay as they are.
    const before = { local: flagsById(second.local), server: flags, files: second.local.map((m) => path.basename(m.where)).sort() };
    const third = await expectConverged([s1, s3, s4, c1, c3], await sync());
    expect({ local: flagsById(third.local), server: flagsById(third.server), files: third.local.map((m) => path.basename(m.where)).sort() }).toEqual(before);
  });
});
