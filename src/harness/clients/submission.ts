// A mail client submitting over SMTP (port 587, AUTH) with nodemailer: what a user's mail app does to send.
import nodemailer, { type SendMailOptions } from 'nodemailer';
import type { Endpoint } from '../../shared/config.js';
import { messageIdOf } from '../../shared/headers.js';

export interface SendOptions {
  to: string | string[];
  cc?: string | string[];
  subject?: string;
  text?: string;
  html?: string;
  headers?: Record<string, string>;
  attachments?: SendMailOptions['attachments'];
  messageId?: string;
  inReplyTo?: string;
  references?: string | string[];
  /** Send raw RFC 5322 bytes instead of composing. */
  raw?: string | Buffer;
  /** Envelope override. */
  envelope?: { from: string; to: string[] };
  /** Password to authenticate with; defaults to the user's own. */
  password?: string;
}

export interface SendResult {
  messageId: string;
  response: string;
  accepted: string[];
  rejected: string[];
}

export interface SubmissionTarget {
  /** The MTA's node name and host name, for error messages and TLS names. */
  node: string;
  hostname: string;
  endpoint: Endpoint;
  /** The lab CA: STARTTLS is then required and the MTA's certificate verified under `hostname`. */
  ca?: string;
}

/** Submits one message as `user`; a failure names the MTA, the endpoint, the command and the reply. */
export async function submit(target: SubmissionTarget, user: { address: string; password: string }, message: SendOptions): Promise<SendResult> {
  const { endpoint } = target;
  const transport = nodemailer.createTransport({
    host: endpoint.host,
    port: endpoint.port,
    secure: false,
    ...(target.ca ? { requireTLS: true } : { ignoreTLS: true }),
    name: 'client.sender.test',
    auth: { user: user.address, pass: message.password ?? user.password },
    tls: { servername: target.hostname, ...(target.ca ? { ca: target.ca } : {}) },
    connectionTimeout: 5000,
  });
  try {
    const info = await transport.sendMail(
      message.raw
        ? { envelope: message.envelope ?? { from: user.address, to: toList(message.to) }, raw: message.raw }
        : {
            from: user.address,
            to: message.to,
            cc: message.cc,
            subject: message.subject ?? '(no subject)',
            text: message.text,
            html: message.html,
            headers: message.headers,
            attachments: message.attachments,
            messageId: message.messageId,
            inReplyTo: message.inReplyTo,
            references: message.references,
            envelope: message.envelope,
          },
    );
    return {
      // With raw bytes nodemailer reports an id of its own; the message's header is the truth.
      messageId: (message.raw && messageIdOf(Buffer.from(message.raw))) || info.messageId,
      response: info.response,
      accepted: info.accepted.map(String),
      rejected: info.rejected.map(String),
    };
  } catch (err) {
    const e = err as Error & { response?: string; command?: string };
    throw new Error(`submission by ${user.address} to ${target.node} (${endpoint.host}:${endpoint.port}) failed at ${e.command ?? 'connection'}: ${e.response ?? e.message}`, { cause: err });
  } finally {
    transport.close();
  }
}

function toList(v: string | string[]): string[] {
  return Array.isArray(v) ? v : [v];
}
