// The report end to end: real scenarios (src/report/fixtures) run through vitest with the maillab reporter and
// vitest's junit reporter, then the HTML is opened in Debian's Chromium (playwright-core, no downloaded browser):
// each message's diagram must render as an SVG with the lab's lifelines and the hops' labels, the failure must be
// open beside it, and no lab secret may appear. The screenshot is left in reports/.
import { existsSync, mkdirSync, readFileSync, rmSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { beforeAll, describe, expect, it } from 'vitest';
import { startVitest } from 'vitest/node';
import defaultLab from '../../lab/default.js';
import { TRACE_ANNOTATION } from '../vitest/use-lab.js';
import { secretsIn } from './redact.js';
import { MaillabReporter } from './reporter.js';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const OUT = path.join(ROOT, 'reports');
const REPORT = path.join(OUT, 'maillab-report', 'index.html');
const JUNIT = path.join(OUT, 'report-junit.xml');
const SCREENSHOT = path.join(OUT, 'report-screenshot.png');
const CHROMIUM = '/usr/bin/chromium';

const FAILING = 'expects <b>nobody</b> & "friends" to get mail; # %% end';
const PASSING = "delivers alice's message to bob, who reads it on his phone";
const RETRIED = 'delivers to carol on the retry after the MX said 451 once';
const PER_TEST = 'delivers to carol on a lab of its own';

describe('the HTML report and the JUnit trace of real scenarios', () => {
  beforeAll(async () => {
    rmSync(path.join(OUT, 'maillab-report'), { recursive: true, force: true });
    rmSync(JUNIT, { force: true });
    mkdirSync(OUT, { recursive: true });
    const exitCode = process.exitCode;
    const vitest = await startVitest('test', [], {
      root: ROOT,
      config: false,
      include: ['src/report/fixtures/*.scenario.ts'],
      watch: false,
      pool: 'forks',
      maxWorkers: 1,
      // As a user's config would say it: `reporters: ['default', 'maillab/reporter', 'junit']` and an outputFile per reporter.
      reporters: [new MaillabReporter(), 'junit'],
      outputFile: { junit: JUNIT, maillab: path.relative(ROOT, REPORT) },
    });
    await vitest.close();
    // The fixture fails on purpose; that is not this test's failure.
    process.exitCode = exitCode;
  }, 240_000);

  it('writes JUnit XML whose failed test carries the trace of its messages as a property', () => {
    const xml = readFileSync(JUNIT, 'utf8');
    const testcase = (name: string) => {
      const start = xml.indexOf(`name="${xmlEscape(name)}"`);
      expect(start, `testcase ${name} in ${JUNIT}`).toBeGreaterThan(0);
      return xml.slice(start, xml.indexOf('</testcase>', start));
    };
    const failed = testcase(FAILING);
    const property = new RegExp(`<property name="${TRACE_ANNOTATION}" value="([^"]*)">`).exec(failed);
    expect(property, 'the failed test\'s trace property').not.toBeNull();
    const trace = property![1]!;
    expect(trace).toMatch(/^lab default \(local\), seed \d+ \(MAILLAB_SEED=\d+ replays it\)/);
    expect(trace).toContain('bounced');
    expect(trace).toContain('550 5.1.1 &lt;nobody@receiver.test&gt;: no such user here');
    expect(trace).toContain('dsn-created');
    expect(failed).toContain('<failure message="the MX should have accepted nobody@receiver.test: expected &apos;5.1.1&apos; to be &apos;2.0.0&apos;');
    expect(testcase(PASSING), 'a passing test has no trace').not.toContain('<properties>');
  });

  it('renders every message\'s sequence diagram in Chromium, with the failure open beside it', async (context) => {
    if (!existsSync(CHROMIUM)) {
      console.warn(`skipped: no Chromium at ${CHROMIUM} (apt-get install chromium)`);
      context.skip(`no Chromium at ${CHROMIUM}`);
    }
    const page = readFileSync(REPORT, 'utf8');
    for (const secret of secretsIn(defaultLab)) expect(page, 'a lab secret in the report').not.toContain(secret);
    const { chromium } = await import('playwright-core');
    const browser = await chromium.launch({ executablePath: CHROMIUM, args: ['--no-sandbox'] });
    try {
      const tab = await browser.newPage({ viewport: { width: 1800, height: 1000 } });
      const pageErrors: string[] = [];
      tab.on('pageerror', (err) => pageErrors.push(err.message));
      await tab.goto(`file://${REPORT}`);
      await tab.waitForSelector('body[data-diagrams-done="true"]', { state: 'attached', timeout: 60_000 });
      const scenarios = await tab.$$eval('details.scenario', (elements) =>
        elements.map((el) => ({
          name: el.querySelector('.name')!.textContent,
          open: (el as HTMLDetailsElement).open,
          state: el.classList.contains('failed') ? 'failed' : el.classList.contains('passed') ? 'passed' : 'other',
          failure: el.querySelector('aside.failure')?.textContent ?? null,
          injected: el.querySelectorAll('summary b').length,
          received: [...el.querySelectorAll('details.received')].map((r) => r.textContent ?? ''),
          diagrams: [...el.querySelectorAll('.diagram')].map((d) => ({
            rendered: (d as HTMLElement).dataset.rendered === 'true',
            error: (d as HTMLElement).dataset.error ?? null,
            svgText: d.querySelector('svg')?.textContent ?? '',
            nextToFailure: d.parentElement!.querySelector('aside.failure') !== null,
          })),
        })),
      );
      expect(pageErrors).toEqual([]);
      const byName = (name: string) => scenarios.find((s) => s.name === name)!;
      expect(scenarios.map((s) => [s.name, s.state, s.open]).sort()).toEqual([
        [PER_TEST, 'passed', false],
        [PASSING, 'passed', false],
        [RETRIED, 'passed', false],
        [FAILING, 'failed', true],
      ].sort());
      for (const s of scenarios) {
        expect(s.diagrams.length, `diagrams of ${s.name}`).toBeGreaterThan(0);
        for (const d of s.diagrams) expect({ rendered: d.rendered, error: d.error }, `a diagram of ${s.name}`).toEqual({ rendered: true, error: null });
      }
      const [carol, delivery, retried, bounce] = [byName(PER_TEST), byName(PASSING), byName(RETRIED), byName(FAILING)];
      // The user-controlled test name is text, not markup.
      expect(bounce.injected).toBe(0);
      expect(carol.diagrams[0]!.svgText).toContain('carol@receiver.test');
      // Alice's message to bob: client, MTA, DNS, MX, mailbox and bob's phone, with the hops' labels.
      const toBob = delivery.diagrams[0]!.svgText;
      for (const lifeline of ['client', 'MTA (mta.sender.test)', 'DNS (ns.lab.test)', 'MX (mx.receiver.test)', 'mailbox (mail.receiver.test)', 'device bob@receiver.test/phone']) expect(toBob).toContain(lifeline);
      for (const label of ['submission as alice@sender.test', 'MX receiver.test?', '10 mx.receiver.test 127.', 'connect mx.receiver.test:25', 'SMTP from alice@sender.test to bob@receiver.test', '250 2.0.0 Ok', 'LMTP to bob@receiver.test', 'stored for bob@receiver.test in INBOX', 'IMAP: uid']) {
        expect(toBob).toContain(label);
      }
      // The fault that fired, as a note, the 451 as a failed reply, the deferral, then the second attempt's 250.
      const retry = retried.diagrams[0]!.svgText;
      for (const label of ['smtp-faults-change', 'fault (smtp busy-once): rcpt → 451 4.3.0 busy, try later', 'deferred carol@receiver.test 4.3.0', 'attempt 2: carol@receiver.test', '250 2.0.0 Ok']) expect(retry).toContain(label);
      // The bounce: the MX's 550 and the DSN; then the DSN's own path back to alice over LMTP.
      expect(bounce.diagrams.length).toBe(2);
      expect(bounce.diagrams[0]!.svgText).toContain('550 5.1.1 <nobody@receiver.test>: no such user here');
      expect(bounce.diagrams[0]!.svgText).toContain('DSN <');
      expect(bounce.diagrams[1]!.svgText).toContain('LMTP connect mail.receiver.test:24');
      expect(bounce.diagrams[1]!.svgText).toContain('stored for alice@sender.test');
      expect(bounce.diagrams[0]!.nextToFailure).toBe(true);
      expect(bounce.failure).toContain("the MX should have accepted nobody@receiver.test: expected '5.1.1' to be '2.0.0'");
      // The Received chain of bob's copy, read back from the mailbox at the test's end.
      expect(delivery.received[0]).toMatch(/from mta\.sender\.test .*by mx\.receiver\.test/);
      await tab.screenshot({ path: SCREENSHOT, fullPage: true });
      console.log(`report ${REPORT}, screenshot ${SCREENSHOT}`);
    } finally {
      await browser.close();
    }
  }, 120_000);
});

function xmlEscape(text: string): string {
  return text.replace(/&/g, '&amp;').replace(/"/g, '&quot;').replace(/'/g, '&apos;').replace(/</g, '&lt;').replace(/>/g, '&gt;');
}
