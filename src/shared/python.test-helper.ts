// For tests only: runs a Python 3 script (a real client from the standard library: smtplib, imaplib, poplib) and
// gives its standard output. Tests that need it print why they are skipped when python3 is missing.
import { execFile, execFileSync } from 'node:child_process';

export const hasPython = (() => {
  try {
    execFileSync('python3', ['-c', 'import ssl'], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
})();

if (!hasPython) console.log('python3 with ssl is not available: the Python client tests are skipped');

/** Runs `script` with `args` (sys.argv[1:]); resolves with stdout, rejects with stderr when it fails. */
export function runPython(script: string, args: string[], timeoutMs = 15_000): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile('python3', ['-c', script, ...args], { timeout: timeoutMs }, (err, stdout, stderr) => {
      if (err) reject(new Error(`python failed: ${err.message}\n${stderr}`));
      else resolve(stdout);
    });
  });
}
