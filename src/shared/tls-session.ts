// What the lab's servers share about TLS on their connections: the server-side options from a node's TlsConfig
// (TLS 1.2 at least, RFC 8996), the STARTTLS upgrade of an accepted socket in place (IMAP, POP3; smtp-server does
// its own), and the version and cipher of a connection as events record them.
import { createPrivateKey } from 'node:crypto';
import type net from 'node:net';
import tls from 'node:tls';
import type { TlsConfig } from './config.js';

/** The TLS of one hop as events record it: the negotiated protocol version and the cipher suite (OpenSSL name). */
export interface TlsInfo {
  version: string;
  cipher: string;
}

/** Lowest TLS version of a node: the configured one, else TLS 1.2. */
export function minTlsVersion(config: TlsConfig): tls.SecureVersion {
  return config.minVersion ?? 'TLSv1.2';
}

/** Whether a password may be accepted over a connection that is (`secure`) or is not encrypted. */
export function plaintextAuthAllowed(config: TlsConfig | undefined, secure: boolean): boolean {
  return secure || !config || config.allowPlaintextAuth === true;
}

/**
 * A server's own key and certificate, its minimum version, and the OpenSSL security level its key needs. The `weak`
 * certificate fault serves an RSA key under 2048 bits, which OpenSSL refuses to even load at security level 2 (the
 * default from Node 22 on: "ee key too small"); the server loads it at level 1, so the *client's* level decides.
 */
export function serverKeyOptions(config: TlsConfig): { cert: string; key: string; minVersion: tls.SecureVersion; ciphers?: string } {
  const bits = createPrivateKey(config.key).asymmetricKeyDetails?.modulusLength;
  const weak = bits !== undefined && bits < 2048;
  return { cert: config.cert, key: config.key, minVersion: minTlsVersion(config), ...(weak ? { ciphers: 'DEFAULT:@SECLEVEL=1' } : {}) };
}

/** The secure context of a server with `config`: its certificate and key, and the minimum version. */
export function serverContext(config: TlsConfig): tls.SecureContext {
  return tls.createSecureContext(serverKeyOptions(config));
}

/** The options of a tls.Server with implicit TLS (tls.Server ignores a `secureContext` option: it builds its own). */
export function tlsServerOptions(config: TlsConfig): tls.TlsOptions {
  return serverKeyOptions(config);
}

/** The version and cipher of `socket` once its handshake is done, null for a plaintext socket. */
export function tlsInfo(socket: net.Socket | undefined): TlsInfo | null {
  if (!socket || !(socket instanceof tls.TLSSocket) || !socket.encrypted) return null;
  const version = socket.getProtocol();
  const cipher = socket.getCipher();
  if (!version || !cipher) return null;
  return { version, cipher: cipher.name };
}

/**
 * Starts TLS as the server on an accepted plaintext socket (STARTTLS, STLS) or on a new connection (implicit TLS).
 * The caller must already have stopped reading `socket` (removed its 'data' listeners) and dropped whatever it had
 * read but not yet handled: nothing sent in plaintext may count inside the TLS session (the STARTTLS command
 * injection, CVE-2011-0411). Resolves with the TLS socket once the handshake is done; rejects when it fails (the
 * raw socket is destroyed then).
 */
export function startServerTls(socket: net.Socket, context: tls.SecureContext, handshakeTimeoutMs = 30_000): Promise<tls.TLSSocket> {
  return new Promise((resolve, reject) => {
    const secure = new tls.TLSSocket(socket, { isServer: true, secureContext: context });
    const timer = setTimeout(() => fail(new Error('TLS handshake timed out')), handshakeTimeoutMs);
    timer.unref();
    const fail = (err: Error) => {
      clearTimeout(timer);
      secure.destroy();
      socket.destroy();
      reject(err);
    };
    secure.once('error', fail);
    const closed = () => fail(new Error('connection closed during the TLS handshake'));
    secure.once('close', closed);
    secure.once('secure', () => {
      clearTimeout(timer);
      secure.removeListener('error', fail);
      secure.removeListener('close', closed);
      resolve(secure);
    });
  });
}
