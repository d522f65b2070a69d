// Glue for the scenarios that drive real mail clients (mbsync, fetchmail) as child processes: find the binary (or
// say why the scenario skips), run it with a deadline, and read what it left on disk and what the server holds.
import { execFile } from 'node:child_process';
import { accessSync, constants, promises as fs } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { messageIdOf, normalizeMessageId, type StartedLab } from '../../src/harness/index.js';

/** The binary's path on PATH, or undefined. */
export function findBinary(name: string): string | undefined {
  for (const dir of (process.env.PATH ?? '').split(path.delimiter)) {
    if (!dir) continue;
    const file = path.join(dir, name);
    try {
      accessSync(file, constants.X_OK);
      return file;
    } catch {
      // not here
    }
  }
  return undefined;
}

/**
 * The binary, or undefined after printing why the scenario skips (so a skip is never silent).
 * `scripts/peers.sh` installs both clients; CI runs it.
 */
export function requireClient(name: string, debianPackage: string): string | undefined {
  const found = findBinary(name);
  if (!found) {
    process.stderr.write(`SKIP: ${name} is not installed (Debian package ${debianPackage}; scripts/peers.sh installs it), so its scenario does not run\n`);
  }
  return found;
}

export interface ToolResult {
  code: number;
  stdout: string;
  stderr: string;
  /** The command line and its output, for an assertion message. */
  transcript: string;
}

/** Runs a client to completion (stdin closed), killing it after `timeoutMs`. Never rejects: look at `code`. */
export function runClient(file: string, args: string[], options: { env?: NodeJS.ProcessEnv; timeoutMs?: number; cwd?: string } = {}): Promise<ToolResult> {
  return new Promise((resolve) => {
    execFile(
      file,
      args,
      { env: { ...process.env, ...options.env }, cwd: options.cwd, timeout: options.timeoutMs ?? 30_000, killSignal: 'SIGKILL', maxBuffer: 16 * 1024 * 1024 },
      (err, stdout, stderr) => {
        const code = err ? (typeof (err as { code?: unknown }).code === 'number' ? (err as { code: number }).code : -1) : 0;
        const why = err && code === -1 ? ` (${err.message})` : '';
        const transcript = `$ ${[file, ...args].join(' ')}\nexit ${code}${why}\n--- stdout\n${stdout}\n--- stderr\n${stderr}`;
        resolve({ code, stdout: String(stdout), stderr: String(stderr), transcript });
      },
    ).stdin?.end();
  });
}

/** A fresh private directory for a client's configuration and mail; `remove()` deletes it. */
export async function clientHome(prefix: string): Promise<{ dir: string; remove: () => Promise<void> }> {
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), `maillab-${prefix}-`));
  await fs.chmod(dir, 0o700);
  return { dir, remove: () => fs.rm(dir, { recursive: true, force: true }) };
}

export interface SeenMessage {
  /** Normalised Message-ID (no angle brackets, lower case), or '(none)'. */
  messageId: string;
  /** IMAP spelling of the flags, sorted. */
  flags: string[];
  /** Where it was seen: a file, or `uid <n>`. */
  where: string;
}

const MAILDIR_FLAGS: Record<string, string> = { D: '\\Draft', F: '\\Flagged', R: '\\Answered', S: '\\Seen', T: '\\Deleted' };

/** The messages of one Maildir folder (new/ and cur/), with the flags of their `:2,` info part. */
export async function readMaildir(folder: string): Promise<SeenMessage[]> {
  const out: SeenMessage[] = [];
  for (const sub of ['new', 'cur']) {
    const names = await fs.readdir(path.join(folder, sub)).catch(() => [] as string[]);
    for (const name of names) {
      const file = path.join(folder, sub, name);
      const info = /:2,([A-Za-z]*)$/.exec(name)?.[1] ?? '';
      const flags = [...info].map((c) => MAILDIR_FLAGS[c]).filter((f): f is string => f !== undefined).sort();
      out.push({ messageId: idOf(await fs.readFile(file)), flags, where: file });
    }
  }
  return out;
}

/** Every file directly in `dir` read as one message (what an MDA like `cat > file` left). */
export async function readMessageFiles(dir: string): Promise<SeenMessage[]> {
  const names = await fs.readdir(dir).catch(() => [] as string[]);
  return Promise.all(names.map(async (name) => ({ messageId: idOf(await fs.readFile(path.join(dir, name))), flags: [], where: path.join(dir, name) })));
}

/** The user's folder as the mailbox server's store holds it. */
export async function readServer(lab: StartedLab, user: string, mailbox = 'INBOX'): Promise<SeenMessage[]> {
  const box = lab.mailbox(user);
  const out: SeenMessage[] = [];
  for (const m of await box.messages(mailbox)) {
    out.push({ messageId: idOf(await box.read(m.uid, mailbox)), flags: [...m.flags].sort(), where: `uid ${m.uid}` });
  }
  return out;
}

function idOf(raw: Buffer): string {
  const id = messageIdOf(raw);
  return id ? normalizeMessageId(id) : '(none)';
}

/** Message-IDs seen more than once, with where. */
export function duplicates(messages: SeenMessage[]): string[] {
  const by = new Map<string, string[]>();
  for (const m of messages) by.set(m.messageId, [...(by.get(m.messageId) ?? []), m.where]);
  return [...by].filter(([, where]) => where.length > 1).map(([id, where]) => `${id}: ${where.join(', ')}`);
}

/** Message-ID → flags (system flags only, sorted), for comparing two sides. */
export function flagsById(messages: SeenMessage[]): Record<string, string> {
  return Object.fromEntries(messages.map((m) => [m.messageId, m.flags.filter((f) => f.startsWith('\\')).join(' ')]).sort(([a], [b]) => a!.localeCompare(b!)));
}

/** Sorted Message-IDs. */
export function idsOf(messages: SeenMessage[]): string[] {
  return messages.map((m) => m.messageId).sort();
}

/** A small RFC 5322 message with a unique Message-ID (normalised form returned), as a client would write it. */
export function composeMessage(from: string, to: string, subject: string, unique: string): { raw: string; messageId: string } {
  const id = `${unique}@client.test`;
  const raw = `From: ${from}\r\nTo: ${to}\r\nSubject: ${subject}\r\nMessage-ID: <${id}>\r\nDate: ${new Date().toUTCString()}\r\n\r\n${subject}\r\n`;
  return { raw, messageId: normalizeMessageId(id) };
}
