// A line-protocol probe for scenarios: speak SMTP/LMTP/POP3 command by command and see each raw reply.
import net from 'node:net';
import type { Endpoint } from '../../shared/config.js';

export interface ProbeReply {
  command: string;
  /** The whole reply, all lines, without the final CRLF. */
  text: string;
  code: number;
}

/** Reads one complete SMTP reply (multi-line replies end with "NNN "). */
function smtpReplyComplete(buffer: string): number {
  const lines = buffer.split('\r\n');
  for (let i = 0, offset = 0; i < lines.length - 1; i++) {
    offset += lines[i]!.length + 2;
    if (/^\d{3}(?: |$)/.test(lines[i]!)) return offset;
  }
  return -1;
}

/**
 * Opens an SMTP session, reads the greeting, sends each command and records its reply; QUIT at the end.
 * Throws with the whole dialogue when the server closes early or a reply takes longer than `timeoutMs`.
 */
export async function smtpDialogue(endpoint: Endpoint, commands: string[], timeoutMs = 5000): Promise<ProbeReply[]> {
  const socket = net.connect(endpoint.port, endpoint.host);
  socket.setEncoding('latin1');
  let buffer = '';
  const replies: ProbeReply[] = [];
  let pending: { resolve: (text: string) => void; reject: (e: Error) => void } | undefined;
  const transcript = () => replies.map((r) => `> ${r.command}\n< ${r.text}`).join('\n');
  const drain = () => {
    const end = smtpReplyComplete(buffer);
    if (end >= 0 && pending) {
      const text = buffer.slice(0, end - 2);
      buffer = buffer.slice(end);
      const p = pending;
      pending = undefined;
      p.resolve(text);
    }
  };
  socket.on('data', (chunk: string) => {
    buffer += chunk;
    drain();
  });
  const closed = new Promise<void>((resolve) => socket.once('close', () => resolve()));
  socket.on('close', () => pending?.reject(new Error(`connection to ${endpoint.host}:${endpoint.port} closed\n${transcript()}`)));
  socket.on('error', (err) => pending?.reject(new Error(`connection to ${endpoint.host}:${endpoint.port}: ${err.message}\n${transcript()}`)));
  const next = (command: string) =>
    new Promise<ProbeReply>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`no reply to "${command}" from ${endpoint.host}:${endpoint.port} within ${timeoutMs} ms\n${transcript()}`)), timeoutMs);
      pending = {
        resolve: (text) => {
          clearTimeout(timer);
          const reply = { command, text, code: Number(text.slice(0, 3)) };
          replies.push(reply);
          resolve(reply);
        },
        reject: (e) => {
          clearTimeout(timer);
          reject(e);
        },
      };
      if (command !== '(greeting)') socket.write(command + '\r\n');
      drain();
    });
  try {
    await next('(greeting)');
    for (const command of commands) await next(command);
    await next('QUIT').catch(() => undefined);
  } finally {
    socket.end();
    await closed;
  }
  return replies;
}
