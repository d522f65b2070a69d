// The HTML report: one self-contained file (Mermaid's browser bundle inlined: it must open offline, from a CI
// artifact), one section per scenario, failures open with the assertion next to the diagram of each message.
import { formatEvent } from '../harness/history/history.js';
import { messagePaths, type MessagePath } from './diagram.js';
import { redactSecrets, redactText } from './redact.js';
import type { LabTestRecord, ReceivedChain } from './record.js';

export type ScenarioState = 'passed' | 'failed' | 'skipped' | 'pending';

/** One test as the report shows it. */
export interface ScenarioView {
  /** The test file, relative to the project. */
  file: string;
  /** The test's full name (describe blocks and title). */
  name: string;
  state: ScenarioState;
  durationMs?: number;
  /** The failure's messages (assertion, diff), in order. */
  errors: string[];
  /** The lab's record of the test, when it ran against a lab (useLab). */
  record?: LabTestRecord;
}

export interface ReportInput {
  title: string;
  generatedAt: Date;
  scenarios: ScenarioView[];
}

/** The whole page. `mermaidBundle` is Mermaid's browser bundle (mermaid.min.js), inlined. */
export function renderReport(input: ReportInput, mermaidBundle: string): string {
  const diagrams: string[] = [];
  const sections = input.scenarios.map((s, i) => scenarioSection(s, i, diagrams));
  const count = (state: ScenarioState) => input.scenarios.filter((s) => s.state === state).length;
  const summary = `${count('passed')} passed, ${count('failed')} failed, ${count('skipped') + count('pending')} skipped`;
  return `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>${html(input.title)}</title>
<style>${STYLE}</style>
</head>
<body>
<header><h1>${html(input.title)}</h1><p class="summary">${html(summary)} · ${html(input.generatedAt.toISOString())}</p></header>
<main>
${sections.join('\n')}
</main>
<script type="application/json" id="maillab-diagrams">${json(diagrams)}</script>
<script>${inlineScript(mermaidBundle)}</script>
<script>${RENDER_SCRIPT}</script>
</body>
</html>
`;
}

function scenarioSection(s: ScenarioView, index: number, diagrams: string[]): string {
  const failed = s.state === 'failed';
  const record = s.record;
  const paths = record ? messagePaths(record) : [];
  const errors = s.errors.map((e) => redactText(e));
  const failure = failed ? `<aside class="failure"><h4>Failed</h4>${errors.map((e) => `<pre>${html(e)}</pre>`).join('') || '<pre>(no error message)</pre>'}</aside>` : '';
  const body: string[] = [];
  if (!record) {
    body.push(`<p class="note">No lab record: this test did not use useLab().</p>${failure}`);
  } else {
    body.push(`<p class="meta">lab <b>${html(record.lab)}</b> on ${html(record.runtime)}${record.seed ? ` · seed ${html(record.seed)} (MAILLAB_SEED=${html(record.seed)} replays it)` : ''} · ${record.events.length} events${record.omitted ? ` (${record.omitted.count} more left out)` : ''}</p>`);
    for (const m of record.missing ?? []) body.push(`<p class="note">Incomplete: ${html(m)}.</p>`);
    if (paths.length === 0) body.push(`<p class="note">No message went through the lab during this test.</p>${failure}`);
    for (const [j, path] of paths.entries()) {
      const diagram = diagrams.push(path.mermaid) - 1;
      body.push(`<section class="message">
<h3>Message ${html(path.messageId)}</h3>
<div class="row"><div class="diagram" data-diagram="${diagram}" id="diagram-${index}-${j}"><p class="note">Rendering the diagram…</p></div>${j === 0 ? failure : ''}</div>
${timings(path, record)}
${receivedChain(path.messageId, record)}
<details class="transcript"><summary>Transcript (event details per hop, secrets redacted)</summary><pre>${html(transcript(path, record))}</pre></details>
</section>`);
    }
  }
  if (record && record.events.length > 0) {
    const origin = record.startedAt ?? record.events[0]!.time;
    const all = record.events.map((e) => formatEvent(redactSecrets(e), origin)).join('\n');
    body.push(`<details class="events"><summary>Every event of this test (${record.events.length}${record.omitted ? `, ${record.omitted.count} more left out after the ${record.omitted.afterIndex + 1}th` : ''}), times from its start</summary><pre>${html(all)}</pre></details>`);
  }
  const status = { passed: '✓', failed: '✗', skipped: '↓', pending: '…' }[s.state];
  const duration = s.durationMs === undefined ? '' : ` <span class="duration">${formatMs(s.durationMs)}</span>`;
  return `<details class="scenario ${s.state}" id="scenario-${index}"${failed ? ' open' : ''}>
<summary><span class="status">${status}</span> <span class="file">${html(s.file)}</span> › <span class="name">${html(s.name)}</span> <span class="state">${s.state}</span>${duration}</summary>
${body.join('\n')}
</details>`;
}

function timings(path: MessagePath, record: LabTestRecord): string {
  const origin = path.hops[0]?.time ?? 0;
  let previous = origin;
  let arrow = 0;
  const rows = path.hops.map((h) => {
    const n = h.to !== undefined ? String(++arrow) : '';
    const row = `<tr><td>${n}</td><td class="num">${formatOffset(h.time - origin)}</td><td class="num">${formatOffset(h.time - previous)}</td><td>${html(lifelineName(h.from, record))}${h.to !== undefined ? ` → ${html(lifelineName(h.to, record))}` : ''}</td><td>${html(h.event.kind)}</td><td>${html(h.label)}</td></tr>`;
    previous = h.time;
    return row;
  });
  const undrawn = path.undrawn > 0 ? `<p class="note">The diagram draws the first ${path.hops.length - path.undrawn} hops; all ${path.hops.length} are here.</p>` : '';
  return `<details class="timings" open><summary>Timings per hop</summary>${undrawn}<table><thead><tr><th>#</th><th>t (ms)</th><th>Δ (ms)</th><th>hop</th><th>event</th><th>what</th></tr></thead><tbody>${rows.join('')}</tbody></table></details>`;
}

function receivedChain(messageId: string, record: LabTestRecord): string {
  const chains = (record.received ?? []).filter((c) => c.messageId === messageId);
  const notes = (record.receivedNotes ?? []).filter((n) => n.includes(messageId));
  if (chains.length === 0) {
    const why = notes.length ? notes.map((n) => html(n)).join('<br>') : 'No copy of this message was stored during the test, so there is no Received chain to show.';
    return `<details class="received"><summary>Received chain</summary><p class="note">${why}</p></details>`;
  }
  return `<details class="received" open><summary>Received chain</summary>${chains.map(chainList).join('')}${notes.map((n) => `<p class="note">${html(n)}</p>`).join('')}</details>`;
}

function chainList(c: ReceivedChain): string {
  const items = c.received.map((r) => `<li><code>${html(r)}</code></li>`).join('');
  return `<p>${html(c.user)} ${html(c.mailbox)} uid ${html(String(c.uid))} on ${html(c.node)} (top: the last hop)</p><ol>${items || '<li>no Received header</li>'}</ol>`;
}

function transcript(path: MessagePath, record: LabTestRecord): string {
  const origin = path.hops[0]?.time ?? record.startedAt ?? 0;
  const seen = new Set<object>();
  const lines: string[] = [];
  for (const h of path.hops) {
    if (seen.has(h.event)) continue;
    seen.add(h.event);
    // Records are redacted when made; a record from elsewhere (an older maillab, a hand-made one) is redacted here too.
    lines.push(formatEvent(redactSecrets(h.event), origin));
  }
  return lines.join('\n');
}

function lifelineName(key: string, record: LabTestRecord): string {
  const host = record.hosts[key];
  return host ? `${key} (${host.role})` : key;
}

function formatOffset(ms: number): string {
  return ms.toFixed(1);
}

function formatMs(ms: number): string {
  return ms < 1000 ? `${Math.round(ms)} ms` : `${(ms / 1000).toFixed(2)} s`;
}

/** Text for HTML content and attribute values. */
export function html(text: string): string {
  return text.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

/** JSON inside a <script> element: nothing in it can close the element or open a comment. */
function json(value: unknown): string {
  return JSON.stringify(value).replace(/</g, '\\u003c').replace(/>/g, '\\u003e').replace(/&/g, '\\u0026').replace(/\u2028/g, '\\u2028').replace(/\u2029/g, '\\u2029');
}

/** A script inlined in a <script> element: `</script` inside it would end the element early. */
function inlineScript(code: string): string {
  return code.replace(/<\/(script)/gi, '<\\/$1');
}

/**
 * Renders each diagram (strict security level: no HTML or scripts from labels) and marks its container
 * `data-rendered` (or `data-error` with Mermaid's message, shown in place of the diagram).
 */
const RENDER_SCRIPT = `(async () => {
  // Its own size (useMaxWidth false: a wide diagram scrolls rather than shrinking its labels), in a compact layout.
  const SEQUENCE = { useMaxWidth: false, showSequenceNumbers: true, wrap: false, messageMargin: 26, boxMargin: 6, noteMargin: 6, actorMargin: 40, height: 44 };
  const sources = JSON.parse(document.getElementById('maillab-diagrams').textContent);
  mermaid.initialize({ startOnLoad: false, securityLevel: 'strict', theme: 'neutral', fontSize: 12, sequence: SEQUENCE });
  for (const el of document.querySelectorAll('.diagram[data-diagram]')) {
    const index = Number(el.dataset.diagram);
    try {
      const { svg } = await mermaid.render('maillab-svg-' + index, sources[index]);
      el.innerHTML = svg;
      el.dataset.rendered = 'true';
    } catch (err) {
      el.dataset.error = String(err && err.message || err);
      el.textContent = 'The diagram could not be rendered: ' + el.dataset.error;
    }
  }
  document.body.dataset.diagramsDone = 'true';
})();`;

const STYLE = `
body { font: 14px/1.4 system-ui, sans-serif; margin: 0; color: #1b1f24; background: #f6f8fa; }
header { padding: 12px 20px; background: #24292f; color: #fff; }
header h1 { margin: 0; font-size: 18px; }
.summary { margin: 4px 0 0; color: #d0d7de; }
main { padding: 12px 20px; }
details.scenario { background: #fff; border: 1px solid #d0d7de; border-left: 6px solid #8c959f; border-radius: 4px; margin: 8px 0; padding: 4px 12px; }
details.scenario.passed { border-left-color: #1a7f37; }
details.scenario.failed { border-left-color: #cf222e; }
details.scenario > summary { cursor: pointer; font-weight: 600; padding: 4px 0; }
.status { display: inline-block; width: 1.2em; }
.failed .status, .failed .state { color: #cf222e; }
.passed .status, .passed .state { color: #1a7f37; }
.file { color: #57606a; font-weight: 400; }
.state, .duration { font-weight: 400; color: #57606a; margin-left: 8px; }
.meta, .note { color: #57606a; }
.row { display: flex; flex-direction: column; gap: 8px; }
.diagram { min-width: 0; overflow-x: auto; }
aside.failure { order: -1; background: #ffebe9; border: 1px solid #ff8182; border-radius: 4px; padding: 8px; }
aside.failure h4 { margin: 0 0 4px; color: #cf222e; }
pre { white-space: pre-wrap; word-break: break-word; margin: 4px 0; font-size: 12px; }
table { border-collapse: collapse; font-size: 12px; width: 100%; }
th, td { border-bottom: 1px solid #eaeef2; padding: 2px 6px; text-align: left; vertical-align: top; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
section.message { border-top: 1px solid #eaeef2; padding-top: 6px; margin-top: 6px; }
section.message h3 { font-size: 14px; margin: 4px 0; font-family: ui-monospace, monospace; }
code { font-size: 12px; }
`;
