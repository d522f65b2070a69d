// Secrets never reach a report: what a test records (task.meta, the annotations a JUnit file carries) and the HTML
// report go through here. Three nets, because no single one catches everything: the lab's own secrets by value
// (passwords, app passwords, API keys, TOTP secrets: known to the harness), fields whose name says secret, and
// the protocol lines that carry credentials (SMTP/IMAP AUTH, POP3 PASS, IMAP LOGIN, HTTP Authorization).

export const REDACTED = '[redacted]';

/** Field names whose values are secrets wherever they appear (compared lower-case, without `-`/`_`). */
const SECRET_FIELD = /^(pass|passwd|password|.*password|.*secret|.*token|credentials?|authorization|cookie|setcookie|privatekey|.*privatekeypem|apikey|.*apikeys?|totp.*|otp|otpcode|code2fa)$/;

/**
 * An API key's first characters identify it without giving it away (the MTA's events record 4, the README says
 * so): a field named apiKey keeps that prefix and loses the rest.
 */
const API_KEY_PREFIX = 4;

/** Credential-carrying protocol text: the part kept, then the secret replaced. */
const SECRET_TEXT: { pattern: RegExp; keep: (...groups: string[]) => string }[] = [
  // SMTP `AUTH PLAIN <base64>`, `AUTH LOGIN <base64 user>`, XOAUTH2..., and IMAP `a1 AUTHENTICATE PLAIN <base64>`.
  { pattern: /\b(AUTH(?:ENTICATE)?[ \t]+(?:PLAIN|LOGIN|XOAUTH2|OAUTHBEARER|CRAM-MD5|SCRAM-SHA-\d+(?:-PLUS)?))[ \t]+[A-Za-z0-9+/=._~-]+/gi, keep: (cmd) => `${cmd} ${REDACTED}` },
  // IMAP `a1 LOGIN user password` (a tagged command; atoms or quoted strings).
  { pattern: /^([ \t]*[A-Za-z0-9.]+[ \t]+LOGIN[ \t]+(?:"(?:[^"\\]|\\.)*"|\S+))[ \t]+(?:"(?:[^"\\]|\\.)*"|\S+)/gim, keep: (cmd) => `${cmd} ${REDACTED}` },
  // POP3 `PASS secret` and `APOP user digest`.
  { pattern: /^([ \t]*PASS)[ \t]+.+$/gm, keep: (cmd) => `${cmd} ${REDACTED}` },
  { pattern: /\b(APOP\s+\S+)\s+[0-9a-f]{32}\b/gi, keep: (cmd) => `${cmd} ${REDACTED}` },
  // HTTP `Authorization: Bearer …` / `Basic …`, and a bare `Bearer <token>`.
  { pattern: /\b(Authorization:\s*(?:Bearer|Basic|Token)?)\s*[^\s"',;]+/gi, keep: (head) => `${head} ${REDACTED}` },
  { pattern: /\b(Bearer)\s+[A-Za-z0-9._~+/=-]{8,}/g, keep: (head) => `${head} ${REDACTED}` },
  // `password=…`, `token: …` in free text (a URL's query, a config line, a JSON text).
  { pattern: /\b((?:pass(?:word)?|secret|token|api[-_]?key|totp)["']?\s*[:=]\s*["']?)[^\s"'&,;}]+/gi, keep: (head) => `${head}${REDACTED}` },
  // `otpauth://totp/...?secret=BASE32`.
  { pattern: /(otpauth:\/\/\S*?[?&]secret=)[A-Z2-7=]+/gi, keep: (head) => `${head}${REDACTED}` },
  // PEM private keys.
  { pattern: /(-----BEGIN [A-Z ]*PRIVATE KEY-----)[\s\S]*?(-----END [A-Z ]*PRIVATE KEY-----)/g, keep: (begin, end) => `${begin}${REDACTED}${end}` },
];

/** Replaces credentials in protocol text and every occurrence of a known secret. */
export function redactText(text: string, knownSecrets: readonly string[] = []): string {
  let out = text;
  // Longest first: a secret that contains another is replaced whole.
  for (const secret of [...knownSecrets].filter((s) => s.length >= 4).sort((a, b) => b.length - a.length)) out = out.split(secret).join(REDACTED);
  for (const { pattern, keep } of SECRET_TEXT) out = out.replace(pattern, (_match, ...args: unknown[]) => keep(...(args.slice(0, args.findIndex((a) => typeof a === 'number')) as string[])));
  return out;
}

/**
 * A copy of `value` (plain JSON data) with secrets redacted: fields named like secrets lose their value, strings
 * lose the credentials they carry and any known secret.
 */
export function redactSecrets<T>(value: T, knownSecrets: readonly string[] = []): T {
  const walk = (v: unknown, key?: string): unknown => {
    if (key !== undefined && isSecretField(key) && v !== null && v !== undefined && v !== '') {
      if (typeof v === 'string' && /^api[-_]?key$/i.test(key)) return v.length <= API_KEY_PREFIX ? v : `${v.slice(0, API_KEY_PREFIX)}…${REDACTED}`;
      // A count or a flag under a secret's name (`apiKeys: 2`, `password: true`) says nothing secret.
      if (typeof v === 'number' || typeof v === 'boolean') return v;
      return REDACTED;
    }
    if (typeof v === 'string') return redactText(v, knownSecrets);
    if (Array.isArray(v)) return v.map((item) => walk(item));
    if (v && typeof v === 'object') return Object.fromEntries(Object.entries(v).map(([k, item]) => [k, walk(item, k)]));
    return v;
  };
  return walk(value) as T;
}

function isSecretField(key: string): boolean {
  return SECRET_FIELD.test(key.toLowerCase().replace(/[-_]/g, ''));
}

/**
 * The string values of every secret-named field in `value` (a lab definition, node configurations): the secrets
 * {@link redactText} then finds by value anywhere, even in text that does not say it is a secret.
 */
export function secretsIn(value: unknown): string[] {
  const found = new Set<string>();
  const walk = (v: unknown, secret: boolean): void => {
    if (typeof v === 'string') {
      if (secret && v) found.add(v);
    } else if (Array.isArray(v)) {
      for (const item of v) walk(item, secret);
    } else if (v && typeof v === 'object') {
      // A secret-named field's own strings are secrets; an object under it (an app password's name) is looked into.
      for (const [k, item] of Object.entries(v)) walk(item, isSecretField(k) || k === 'key');
    }
  };
  walk(value, false);
  return [...found];
}
