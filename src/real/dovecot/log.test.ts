// Dovecot's log lines as events. The lines are Dovecot 2.3.19's own, copied from its log with the formats
// config.ts sets (the integration test, dovecot.test.ts, produces them live).
import { appendFileSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import type { MailboxEvents } from '../../mailbox/api.js';
import { EventLog } from '../../shared/events.js';
import { DovecotEventTranslator, LogTail, parseDovecotLine, parseMailLog, parseTlsSecurity } from './log.js';

const LINES = {
  lmtpSave: 'Nov 30 05:14:06 lmtp(bob@receiver.test)<31426><cakOCR4GDWvCegAAg+zDdQ>: Info: save: box=INBOX, uid=7, msgid=<abc123@sender.test>, size=294, vsize=305, from=Alice <alice@sender.test>',
  lmtpSaved: 'Nov 30 05:14:06 lmtp(bob@receiver.test)<31426><cakOCR4GDWvCegAAg+zDdQ>: Info: msgid=<abc123@sender.test> size=305 from=<alice@sender.test>: saved mail to INBOX',
  lmtpSaveR2: 'Nov 30 05:14:06 lmtp(bob@receiver.test)<31426><cakOCR4GDWvCegAAg+zDdQ:R2>: Info: save: box=Work, uid=1, msgid=<abc123@sender.test>, size=294, vsize=305, from=Alice <alice@sender.test>',
  lmtpSavedR2: 'Nov 30 05:14:06 lmtp(bob@receiver.test)<31426><cakOCR4GDWvCegAAg+zDdQ:R2>: Info: msgid=<abc123@sender.test> size=305 from=<>: saved mail to Work',
  lmtpError: 'Nov 30 05:13:25 lmtp(28412): Error: lmtp-server: conn 127.0.0.1:58202 [1]: rcpt bob@receiver.test: Failed to initialize user: Couldn\'t drop privileges: Mail access not allowed for root',
  imapLogin: 'Nov 30 05:19:21 imap-login: Info: Login: user=<bob@receiver.test>, method=PLAIN, rip=127.0.0.1, lip=127.182.113.2, mpid=25346, TLS, session=<d8hfjXdhfqd/AAAB>, tls=<TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256/256 bits)>',
  pop3LoginPlain: 'Nov 30 05:19:21 pop3-login: Info: Login: user=<bob@receiver.test>, method=PLAIN, rip=127.0.0.9, lip=127.182.113.2, mpid=25348, session=<VzhgjXdhJr1/AAAB>, tls=<>',
  pop3Expunge: 'Nov 30 05:19:21 pop3(bob@receiver.test)<25348><VzhgjXdhJr1/AAAB>: Info: expunge: box=INBOX, uid=1, msgid=<first@sender.test>, size=433, vsize=446, from=Alice <alice@sender.test>',
  imapFlag: 'Nov 30 05:14:06 imap(bob@receiver.test)<31430><BSubendhWOV/AAAB>: Info: flag_change: box=INBOX, uid=1, msgid=<abc123@sender.test>, size=294, vsize=305, from=Alice <alice@sender.test>',
  authMismatch: 'Nov 30 05:14:35 auth: Info: passwd-file(bob@receiver.test,127.0.0.1,<gclRfHdhvNp/AAAB>): Password mismatch',
  authUnknown: 'Nov 30 05:14:41 auth: Info: passwd-file(nobody@receiver.test,127.0.0.1,<gclRfHdhvNp/AAAB>): unknown user',
  imapAuthFailed: 'Nov 30 05:14:53 imap-login: Info: Disconnected: Aborted login by logging out (auth failed, 2 attempts in 18 secs): user=<nobody@receiver.test>, method=PLAIN, rip=127.0.0.1, lip=127.9.9.2, TLS, session=<gclRfHdhvNp/AAAB>',
  plaintextRefused: 'Nov 30 05:14:12 imap-login: Info: Disconnected: Connection closed (auth failed, 1 attempts in 0 secs): user=<bob@receiver.test>, rip=127.0.0.1, lip=127.9.9.2, session=<k6P3endhaOV/AAAB>',
  master: 'Nov 30 05:13:11 master: Info: Dovecot v2.3.19.1 (9b53102964) starting up for imap, pop3, lmtp (core dumps disabled)',
  // A POP3 session that RETRieved two messages and deleted them (log_debug = event=mail_opened).
  lmtpSave2: 'Nov 30 06:36:01 lmtp(bob@receiver.test)<27151><KFISMFEZDWsPagAAg+zDdQ>: Info: save: box=INBOX, uid=2, msgid=<second@sender.test>, size=2187, vsize=2230, from=alice@sender.test',
  pop3Opened1: 'Nov 30 06:36:02 pop3(bob@receiver.test)<27156><DSygn3hhFNh/AAAB>: Debug: Mailbox INBOX: UID 1: Opened mail because: access',
  pop3Opened2: 'Nov 30 06:36:02 pop3(bob@receiver.test)<27156><DSygn3hhFNh/AAAB>: Debug: Mailbox INBOX: UID 2: Opened mail because: access',
  pop3Logout: 'Nov 30 06:36:02 pop3(bob@receiver.test)<27156><DSygn3hhFNh/AAAB>: Info: Disconnected: Logged out top=0/0, retr=2/4492, del=2/2, size=4458',
  pop3LogoutTop: 'Nov 30 06:36:02 pop3(bob@receiver.test)<27156><DSygn3hhFNh/AAAB>: Info: Disconnected: Logged out top=1/300, retr=1/2263, del=0/2, size=4458',
  pop3LogoutNone: 'Nov 30 06:36:01 pop3(bob@receiver.test)<27153><B5KYn3hhUqR/AAAB>: Info: Disconnected: Logged out top=0/0, retr=0/0, del=0/1, size=2246',
  imapOpened: 'Nov 30 06:36:02 imap(bob@receiver.test)<27145><gQCWn3hhisR/AAAB>: Debug: Mailbox INBOX: UID 1: Opened mail because: 7/10 headers not cached (first=Bcc)',
};

function translate(lines: string[]) {
  const events = new EventLog<MailboxEvents>('mailbox');
  const log: string[] = [];
  const t = new DovecotEventTranslator(events, (m) => log.push(m));
  for (const l of lines) t.line(l);
  return { events: events.since(0), log };
}

describe('parsing', () => {
  it('splits the prefix: service, user or pid, session with its LMTP recipient suffix, level', () => {
    expect(parseDovecotLine(LINES.lmtpSaveR2)).toMatchObject({ service: 'lmtp', user: 'bob@receiver.test', pid: 31426, session: 'cakOCR4GDWvCegAAg+zDdQ:R2', level: 'Info' });
    expect(parseDovecotLine(LINES.lmtpError)).toMatchObject({ service: 'lmtp', pid: 28412, level: 'Error' });
    expect(parseDovecotLine(LINES.lmtpError)!.user).toBeUndefined();
    expect(parseDovecotLine(LINES.master)).toMatchObject({ service: 'master', level: 'Info' });
    expect(parseDovecotLine('not a dovecot line')).toBeUndefined();
  });

  it('mail_log fields, `from` with spaces last', () => {
    expect(parseMailLog('save: box=INBOX, uid=7, msgid=<a@b>, size=294, vsize=305, from=Alice <alice@sender.test>')).toEqual({ event: 'save', box: 'INBOX', uid: 7, msgid: '<a@b>', size: 294, vsize: 305, from: 'Alice <alice@sender.test>' });
    expect(parseMailLog('Mailbox created: INBOX')).toBeUndefined();
  });

  it('%k: version and cipher, or null', () => {
    expect(parseTlsSecurity('TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256/256 bits)')).toEqual({ version: 'TLSv1.3', cipher: 'TLS_AES_256_GCM_SHA384' });
    expect(parseTlsSecurity('')).toBeNull();
    expect(parseTlsSecurity(undefined)).toBeNull();
  });
});

describe('DovecotEventTranslator', () => {
  it('LMTP: one `stored` per recipient, the UID from its own save line, the Message-ID, the envelope sender', () => {
    const { events, log } = translate([LINES.lmtpSave, LINES.lmtpSaved, LINES.lmtpSaveR2, LINES.lmtpSavedR2]);
    expect(events.map((e) => [e.kind, e.messageId, e.detail])).toEqual([
      ['stored', '<abc123@sender.test>', { user: 'bob@receiver.test', mailbox: 'INBOX', uid: 7, size: 305, from: 'alice@sender.test' }],
      ['stored', '<abc123@sender.test>', { user: 'bob@receiver.test', mailbox: 'Work', uid: 1, size: 305, from: '' }],
    ]);
    expect(log[0]).toBe(`dovecot → stored #1: ${LINES.lmtpSaved}`);
  });

  it('logins are `session` events with the TLS of the connection, or null', () => {
    const { events } = translate([LINES.imapLogin, LINES.pop3LoginPlain]);
    expect(events.map((e) => e.detail)).toEqual([
      { user: 'bob@receiver.test', protocol: 'imap', method: 'PLAIN', client: '127.0.0.1', tls: { version: 'TLSv1.3', cipher: 'TLS_AES_256_GCM_SHA384' } },
      { user: 'bob@receiver.test', protocol: 'pop3', method: 'PLAIN', client: '127.0.0.9', tls: null },
    ]);
  });

  it('failed password checks become `auth-failed` once the login process names the protocol; none without a check', () => {
    const early = translate([LINES.authMismatch, LINES.authUnknown]);
    expect(early.events).toEqual([]);
    const { events } = translate([LINES.authMismatch, LINES.authUnknown, LINES.imapAuthFailed, LINES.plaintextRefused]);
    expect(events.map((e) => [e.kind, e.detail])).toEqual([
      ['auth-failed', { protocol: 'imap', login: 'bob@receiver.test', method: 'PLAIN', client: '127.0.0.1' }],
      ['auth-failed', { protocol: 'imap', login: 'nobody@receiver.test', method: 'PLAIN', client: '127.0.0.1' }],
    ]);
  });

  it('expunges are `deleted` with the Message-ID; flag changes are nothing', () => {
    const { events } = translate([LINES.pop3Expunge, LINES.imapFlag]);
    expect(events.map((e) => [e.kind, e.messageId, e.detail])).toEqual([['deleted', '<first@sender.test>', { user: 'bob@receiver.test', protocol: 'pop3', uid: 1, mailbox: 'INBOX' }]]);
  });

  it('POP3: the messages a session opened for its RETRs are `retrieved` when it ends, with the Message-ID and size mail_log gave', () => {
    const saves = [LINES.lmtpSave.replace('uid=7', 'uid=1'), LINES.lmtpSave2];
    const { events } = translate([...saves, LINES.imapOpened, LINES.pop3Opened1, LINES.pop3Opened2, LINES.pop3Expunge]);
    expect(events.filter((e) => e.kind === 'retrieved')).toEqual([]); // not before the session's last line
    const done = translate([...saves, LINES.imapOpened, LINES.pop3Opened1, LINES.pop3Opened2, LINES.pop3Logout]).events;
    expect(done.filter((e) => e.kind === 'retrieved').map((e) => [e.messageId, e.detail])).toEqual([
      ['<abc123@sender.test>', { user: 'bob@receiver.test', protocol: 'pop3', uid: 1, size: 305, mailbox: 'INBOX' }],
      ['<second@sender.test>', { user: 'bob@receiver.test', protocol: 'pop3', uid: 2, size: 2230, mailbox: 'INBOX' }],
    ]);
  });

  it('POP3: none when the log cannot tell which messages were retrieved (TOP too), or the session retrieved none', () => {
    const saves = [LINES.lmtpSave.replace('uid=7', 'uid=1'), LINES.lmtpSave2];
    const mixed = translate([...saves, LINES.pop3Opened1, LINES.pop3Opened2, LINES.pop3LogoutTop]);
    expect(mixed.events.filter((e) => e.kind === 'retrieved')).toEqual([]);
    expect(mixed.log.join('\n')).toMatch(/cannot tell which were retrieved/);
    const none = translate([...saves, LINES.pop3Opened1, LINES.pop3LogoutNone]);
    expect(none.events.filter((e) => e.kind === 'retrieved')).toEqual([]);
    // A message this node never saw saved: no size to give, said in the node log.
    const unknown = translate([LINES.pop3Opened1, LINES.pop3Opened2, LINES.pop3Logout]);
    expect(unknown.events).toEqual([]);
    expect(unknown.log.join('\n')).toMatch(/UID 1: its size and Message-ID were not in this node's log/);
  });

  it('an LMTP recipient Dovecot could not serve is an `error`', () => {
    const { events } = translate([LINES.lmtpError, LINES.master]);
    expect(events.map((e) => [e.kind, e.detail])).toEqual([['error', { stage: 'rcpt', user: 'bob@receiver.test', error: "Failed to initialize user: Couldn't drop privileges: Mail access not allowed for root" }]]);
  });
});

describe('LogTail', () => {
  it('starts at the end of what is there, hands over complete lines only, and follows appends (drain reads them)', async () => {
    const dir = mkdtempSync(path.join(os.tmpdir(), 'maillab-logtail-'));
    const file = path.join(dir, 'dovecot.log');
    try {
      writeFileSync(file, 'old line from the last run\n');
      const seen: string[] = [];
      const tail = new LogTail(file, (l) => seen.push(l), 60_000); // the poll never fires within the test: drain does the reading
      tail.start();
      appendFileSync(file, 'first\nsecond, cut');
      await tail.drain();
      expect(seen).toEqual(['first']);
      appendFileSync(file, ' here: é\n');
      await tail.stop();
      expect(seen).toEqual(['first', 'second, cut here: é']);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
