// A line-protocol probe for scenarios: speak SMTP/LMTP command by command and see each raw reply.
import type { Endpoint } from '../../shared/config.js';
import { LineClient } from './line-client.js';

export interface ProbeReply {
  command: string;
  /** The whole reply, all lines, without the final CRLF. */
  text: string;
  code: number;
}

/** How smtpDialogue talks: its reply deadline, and the lab CA and host name to verify a STARTTLS upgrade with. */
export interface DialogueOptions {
  timeoutMs?: number;
  tls?: { ca: string; servername: string };
}

/**
 * Opens an SMTP session, reads the greeting, sends each command and records its reply; QUIT at the end. A
 * `STARTTLS` command answered 220 upgrades the session (verifying the server with `options.tls`); the commands
 * after it go over TLS.
 * Throws with the whole dialogue when the server closes early or a reply takes longer than `timeoutMs`.
 */
export async function smtpDialogue(endpoint: Endpoint, commands: string[], options: number | DialogueOptions = {}): Promise<ProbeReply[]> {
  const { timeoutMs = 5000, tls } = typeof options === 'number' ? { timeoutMs: options } : options;
  let client = await LineClient.connect(endpoint, { name: 'SMTP', timeoutMs });
  const replies: ProbeReply[] = [];
  const next = async (command: string) => {
    if (command !== '(greeting)') client.send(command);
    try {
      const reply = await client.smtpReply();
      replies.push({ command, text: reply.text, code: reply.code });
      if (/^STARTTLS$/i.test(command) && reply.code === 220) {
        if (!tls) throw new Error('STARTTLS accepted, but smtpDialogue was given no lab CA (options.tls) to verify the server with');
        client = await client.startTls(tls);
      }
    } catch (err) {
      const transcript = replies.map((r) => `> ${r.command}\n< ${r.text}`).join('\n');
      throw new Error(`${(err as Error).message}\n${transcript}`, { cause: err });
    }
  };
  try {
    await next('(greeting)');
    for (const command of commands) await next(command);
    await next('QUIT').catch(() => undefined);
  } finally {
    client.end();
    await client.waitClosed().catch(() => client.close());
  }
  return replies;
}
