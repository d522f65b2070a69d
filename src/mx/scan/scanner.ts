// The content scanner's interface (issue 13) and the built-in scanner: the EICAR test file in any decoded MIME part.

import { mimeParts, partLabel, ScanLimitExceeded, type MimeLimits } from './mime.js';

export type ScanVerdict =
  | { clean: true; scanner: string }
  | {
      clean: false;
      scanner: string;
      /** The malware's name, as the engine gives it (`Eicar-Test-Signature`). */
      signature: string;
      /** Where: the MIME part's path (`2`, `2.1`), with its file name when known (`2 (eicar.com)`); `message` when the engine did not say. */
      part: string;
    };

/** A scanner: rejects (throws ScannerUnavailable) when it cannot give a verdict, so the MX fails closed. */
export interface Scanner {
  /** Named in events, replies and `X-Virus-Scanned`. */
  readonly name: string;
  scan(message: Buffer): Promise<ScanVerdict>;
  close(): Promise<void>;
}

/** The scanner could not give a verdict (clamd down, timed out, answered ERROR): the MX answers 451 4.7.0. */
export class ScannerUnavailable extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'ScannerUnavailable';
  }
}

/** Nesting bound of the MIME walk: deeper than any real client writes (a forward of a forward of a digest...). */
export const MAX_MIME_DEPTH = 10;

/**
 * The EICAR test file (eicar.org): these 68 octets, which AV engines report as malware so a filter can be tested
 * without malware. Assembled from two halves so that this source file and the built bundle do not themselves carry
 * the string and get quarantined by a scanner on a developer's machine.
 */
export const EICAR = Buffer.from(['X5O!P%@AP[4\\PZX54(P^)7CC)7}$EICAR', '-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*'].join(''), 'latin1');

/** What eicar.org allows after the 68 octets, up to 128 octets in all: space, tab, LF, CR, Ctrl-Z. */
const EICAR_PADDING = new Set([0x20, 0x09, 0x0a, 0x0d, 0x1a]);

/**
 * Whether `data` is the EICAR test file. The rule is eicar.org's, as AV engines apply it: the string at the very
 * start of the file, followed by nothing but padding white space, 128 octets at most. So a message that quotes the
 * string in the middle of its text is clean — the string is there to test a filter, not to be found in prose.
 */
export function isEicar(data: Buffer): boolean {
  if (data.length < EICAR.length || data.length > 128) return false;
  if (!data.subarray(0, EICAR.length).equals(EICAR)) return false;
  for (let i = EICAR.length; i < data.length; i++) if (!EICAR_PADDING.has(data[i]!)) return false;
  return true;
}

/** The built-in scanner: EICAR in any decoded part, `Eicar-Test-Signature` as ClamAV names it. */
export function builtinScanner(limits: Pick<MimeLimits, 'maxDecodedBytes'>): Scanner {
  const name = 'builtin';
  return {
    name,
    async scan(message) {
      try {
        for (const part of mimeParts(message, { maxDepth: MAX_MIME_DEPTH, maxDecodedBytes: limits.maxDecodedBytes })) {
          if (isEicar(part.data)) return { clean: false, scanner: name, signature: 'Eicar-Test-Signature', part: partLabel(part) };
        }
      } catch (err) {
        // Content nested or decoded past the bounds is not scanned: it is refused as ClamAV's AlertExceedsMax does.
        if (err instanceof ScanLimitExceeded) return { clean: false, scanner: name, signature: err.signature, part: err.part };
        throw err;
      }
      return { clean: true, scanner: name };
    },
    async close() {},
  };
}
