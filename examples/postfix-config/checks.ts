// The checks of the configuration regression example: each one talks to the lab's MX as an outside client (or sends
// through the lab's MTA), and throws a ConfigCheckFailure that names what the configuration should have done and
// what the MX answered instead. config.test.ts runs them against main.cf; regression.test.ts shows one failing
// against a copy of main.cf with one line changed.
import { checkDeliveredOnce, smtpDialogue, type ProbeReply, type StartedLab } from '../../src/harness/index.js';

export const BOB = 'bob@receiver.test';
/** How an outside client introduces itself: a name the MX does not serve. */
const EHLO = 'EHLO client.elsewhere.test';

/** A check that did not hold: the message says what was expected and what the MX did; `replies` is the dialogue. */
export class ConfigCheckFailure extends Error {
  constructor(message: string, readonly replies: ProbeReply[] = []) {
    super(replies.length ? `${message}\n${transcript(replies)}` : message);
    this.name = 'ConfigCheckFailure';
  }
}

function transcript(replies: ProbeReply[]): string {
  return replies.map((r) => `  > ${r.command.length > 80 ? `${r.command.slice(0, 77)}...` : r.command}\n  < ${r.text.replace(/\r?\n/g, '\n    ')}`).join('\n');
}

function dialogue(lab: StartedLab, commands: string[]): Promise<ProbeReply[]> {
  return smtpDialogue(lab.node('mx').service('smtp'), commands, { timeoutMs: 10_000, tls: lab.tlsFor('mx') });
}

function replyTo(replies: ProbeReply[], command: string): ProbeReply {
  const reply = replies.find((r) => r.command === command);
  if (!reply) throw new ConfigCheckFailure(`the MX never answered ${command}`, replies);
  return reply;
}

/** 1. No open relay: a recipient outside the company's domains is refused at RCPT TO as relaying (Relay access denied). */
export async function checkNoOpenRelay(lab: StartedLab, rcpt = 'someone@elsewhere.test'): Promise<ProbeReply> {
  const command = `RCPT TO:<${rcpt}>`;
  const replies = await dialogue(lab, [EHLO, 'MAIL FROM:<a@sender.test>', command]);
  const reply = replyTo(replies, command);
  if (reply.code < 400 || !/Relay access denied/.test(reply.text)) {
    throw new ConfigCheckFailure(`expected ${command} from an outside client to be refused (4xx/5xx, "Relay access denied": no open relay), but the MX answered ${reply.text}`, replies);
  }
  return reply;
}

/** 2. Unknown users of the company's domain are refused at RCPT TO with 550 5.1.1 (not accepted and bounced later). */
export async function checkUnknownUserRefused(lab: StartedLab, rcpt = 'nobody@receiver.test'): Promise<ProbeReply> {
  const command = `RCPT TO:<${rcpt}>`;
  const replies = await dialogue(lab, [EHLO, 'MAIL FROM:<a@sender.test>', command]);
  const reply = replyTo(replies, command);
  if (!/^550 5\.1\.1 /.test(reply.text)) throw new ConfigCheckFailure(`expected ${command} (an unknown user) to be refused with 550 5.1.1, but the MX answered ${reply.text}`, replies);
  return reply;
}

/** 3. The size limit: EHLO advertises SIZE <limit>, and a declared size above it is refused at MAIL FROM with 552 5.3.4. */
export async function checkSizeLimit(lab: StartedLab, limit: number, declared = 20_000_000): Promise<ProbeReply> {
  const command = `MAIL FROM:<a@sender.test> SIZE=${declared}`;
  const replies = await dialogue(lab, [EHLO, command]);
  const ehlo = replyTo(replies, EHLO);
  if (!new RegExp(`^250[- ]SIZE ${limit}$`, 'm').test(ehlo.text)) throw new ConfigCheckFailure(`expected EHLO to advertise SIZE ${limit}, but the MX answered ${ehlo.text.replace(/\r?\n/g, ' | ')}`, replies);
  const reply = replyTo(replies, command);
  if (!/^552 5\.3\.4 /.test(reply.text)) throw new ConfigCheckFailure(`expected ${command} (over the ${limit}-octet limit) to be refused with 552 5.3.4, but the MX answered ${reply.text}`, replies);
  return reply;
}

/**
 * 4. SMTP smuggling: a message whose content holds a bare-LF end of data (`\n.\r\n`) followed by a second
 * transaction is one message; the "smuggled" one is never stored. Counts the messages in bob's INBOX.
 */
export async function checkNoSmuggling(lab: StartedLab): Promise<{ replies: ProbeReply[]; stored: number }> {
  const tag = `${Date.now()}.${process.pid}`;
  const carrier = `<carrier.${tag}@sender.test>`;
  const smuggledId = `<smuggled.${tag}@sender.test>`;
  const before = (await lab.mailbox(BOB).messages()).length;
  const smuggled = `MAIL FROM:<eve@sender.test>\r\nRCPT TO:<${BOB}>\r\nDATA\r\nSubject: smuggled\r\nMessage-ID: ${smuggledId}\r\n\r\nevil\r\n`;
  const data = `From: a@sender.test\r\nTo: ${BOB}\r\nSubject: carrier\r\nMessage-ID: ${carrier}\r\n\r\nbefore\n.\r\n${smuggled}.`;
  const replies = await dialogue(lab, [EHLO, 'MAIL FROM:<a@sender.test>', `RCPT TO:<${BOB}>`, 'DATA', data]);
  const end = replyTo(replies, data);
  if (!/^250 /.test(end.text)) throw new ConfigCheckFailure(`expected the carrier message to be accepted (250) as one message, but the MX answered ${end.text}`, replies);
  // One reply for the whole data, then QUIT's: a server that ended DATA at the bare LF would have answered the smuggled commands.
  const after = replies.slice(replies.indexOf(end) + 1).filter((r) => r.command !== 'QUIT');
  if (after.length) throw new ConfigCheckFailure('expected one reply to the whole DATA content, but the MX answered the smuggled commands too', replies);
  await lab.waitFor({ kind: 'stored', node: 'mailbox', messageId: carrier, detail: { user: BOB } }, { timeoutMs: 15_000 });
  const smuggledCopies = await lab.mailbox(BOB).find(smuggledId);
  const stored = (await lab.mailbox(BOB).messages()).length - before;
  if (smuggledCopies.length || stored !== 1) throw new ConfigCheckFailure(`expected the bare-LF end of data to stay content (one new message for ${BOB}), but ${stored} arrived${smuggledCopies.length ? ', the smuggled one among them' : ''}`, replies);
  return { replies, stored };
}

/** 5. TLS offered: EHLO lists STARTTLS, the handshake verifies against the lab CA, and EHLO works again over TLS. */
export async function checkStartTls(lab: StartedLab): Promise<ProbeReply[]> {
  let replies: ProbeReply[];
  try {
    replies = await dialogue(lab, [EHLO, 'STARTTLS', EHLO]);
  } catch (err) {
    throw new ConfigCheckFailure(`expected a STARTTLS handshake verified with the lab CA, but it failed: ${(err as Error).message}`);
  }
  const [, ehlo, starttls, again] = replies;
  if (!ehlo || !/^250[- ]STARTTLS$/m.test(ehlo.text)) throw new ConfigCheckFailure(`expected EHLO to offer STARTTLS, but the MX answered ${ehlo?.text.replace(/\r?\n/g, ' | ')}`, replies);
  if (starttls?.code !== 220) throw new ConfigCheckFailure(`expected STARTTLS to be answered 220, but the MX answered ${starttls?.text}`, replies);
  if (again?.code !== 250) throw new ConfigCheckFailure(`expected EHLO over TLS to be answered 250, but the MX answered ${again?.text}`, replies);
  return replies;
}

/** 6. The whole path: alice → the lab's MTA → this Postfix → the mailbox server, stored once in bob's INBOX. */
export async function checkDeliveredThroughMx(lab: StartedLab): Promise<{ messageId: string; raw: string }> {
  const sent = await lab.client('alice@sender.test').send({ to: BOB, subject: 'through the company MX', text: 'hello Bob\n' });
  const { raw } = await checkDeliveredOnce(lab, BOB, sent.messageId);
  const text = raw.toString('utf8');
  if (!/by mx\.receiver\.test \(Postfix\)/.test(text)) throw new ConfigCheckFailure(`expected ${sent.messageId} to arrive through Postfix on mx.receiver.test, but its header has no "by mx.receiver.test (Postfix)" Received line`);
  return { messageId: sent.messageId, raw: text };
}

/** 7. What the company's main.cf says about clients (settings the lab keeps): the banner, HELO required, no VRFY. */
export async function checkClientEtiquette(lab: StartedLab, banner = '220 mx.receiver.test ESMTP'): Promise<ProbeReply[]> {
  const replies = await dialogue(lab, ['MAIL FROM:<a@sender.test>', EHLO, 'VRFY bob']);
  const [greeting, early, , vrfy] = replies;
  if (greeting?.text !== banner) throw new ConfigCheckFailure(`expected the greeting ${banner} (smtpd_banner), but the MX greeted ${greeting?.text}`, replies);
  if (!early || !/^503 5\.5\.1 /.test(early.text)) throw new ConfigCheckFailure(`expected MAIL FROM before HELO/EHLO to be refused with 503 5.5.1 (smtpd_helo_required), but the MX answered ${early?.text}`, replies);
  if (!vrfy || !/^502 5\.5\.1 /.test(vrfy.text)) throw new ConfigCheckFailure(`expected VRFY to be refused with 502 5.5.1 (disable_vrfy_command), but the MX answered ${vrfy?.text}`, replies);
  return replies;
}

/**
 * 8. A DSN for an unreachable destination (the company's outbound relay, `outbound.cf`, as the lab's sending MTA):
 * with the destination's MX down, a message from alice is deferred, kept until the queue lifetime ends, then returned
 * to her as an RFC 3464 DSN that names the recipient, `Action: failed` and a 4.x.x status with Postfix's last error.
 * The MX is stopped for the check and started again after it.
 */
export async function checkDsnForUnreachableDestination(lab: StartedLab, lifetimeMs: number, rcpt = BOB): Promise<{ dsnMessageId: string; dsn: string }> {
  const alice = 'alice@sender.test';
  await lab.node('mx').stop();
  try {
    const sent = await lab.client(alice).send({ to: rcpt, subject: 'to an unreachable destination', text: 'this cannot be delivered now\n' });
    const deadline = lifetimeMs + 10_000;
    const seen = () => lab.history.filter({ node: 'mta', messageId: sent.messageId }).map((e) => `${e.kind}${'error' in e.detail ? ` (${String(e.detail.error)})` : ''}`);
    const deferred = await lab.waitFor({ kind: 'deferred', node: 'mta', messageId: sent.messageId, detail: { rcpt } }).catch(() => undefined);
    if (!deferred) throw new ConfigCheckFailure(`expected ${sent.messageId} to ${rcpt} to be deferred while the destination's MX is down, but the MTA reported: ${seen().join(', ') || 'nothing'}`);
    const created = await lab.waitFor({ kind: 'dsn-created', node: 'mta', where: (e) => e.detail.for.messageId === sent.messageId }, { timeoutMs: deadline }).catch(() => undefined);
    if (!created) {
      const queued = (await lab.mta().queue()).filter((m) => m.messageId === sent.messageId);
      throw new ConfigCheckFailure(
        `expected a DSN (non-delivery notification) to alice for ${sent.messageId} within ${deadline} ms (the queue lifetime is ${lifetimeMs} ms), but none was made; the MTA reported: ${seen().join(', ')}; still queued: ${queued.length ? JSON.stringify(queued.map((m) => m.recipients)) : 'no'}`,
      );
    }
    const { dsnMessageId } = created.detail;
    const stored = await lab.waitFor({ kind: 'stored', node: 'mailbox', messageId: dsnMessageId, detail: { user: alice } }).catch(() => undefined);
    if (!stored) throw new ConfigCheckFailure(`expected the DSN ${dsnMessageId} for ${sent.messageId} to reach ${alice}'s mailbox, but it was not stored; the MTA reported for it: ${lab.history.filter({ node: 'mta', messageId: dsnMessageId }).map((e) => e.kind).join(', ') || 'nothing'}`);
    const [copy] = await lab.mailbox(alice).find(dsnMessageId);
    const dsn = copy ? (await lab.mailbox(alice).read(copy.uid)).toString('utf8') : '';
    const wanted: Array<[RegExp, string]> = [
      [/Content-Type: multipart\/report;\s*report-type=delivery-status/i, 'a multipart/report; report-type=delivery-status (RFC 3464)'],
      [new RegExp(`Final-Recipient: rfc822;\\s*${rcpt.replace(/[.+]/g, '\\$&')}`, 'i'), `Final-Recipient: rfc822; ${rcpt}`],
      [/Action: failed/i, 'Action: failed'],
      [/Status: 4\.\d+\.\d+/, 'a 4.x.x Status (the last error was temporary)'],
      [new RegExp(`Message-ID: ${sent.messageId.replace(/[.+]/g, '\\$&')}`, 'i'), "the original's headers (its Message-ID)"],
    ];
    const missing = wanted.filter(([re]) => !re.test(dsn)).map(([, what]) => what);
    if (missing.length) throw new ConfigCheckFailure(`expected the DSN ${dsnMessageId} in ${alice}'s mailbox to hold ${missing.join(', ')}, but it does not:\n${dsn.slice(0, 3000)}`);
    return { dsnMessageId, dsn };
  } finally {
    await lab.node('mx').start();
  }
}
