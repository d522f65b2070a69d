// The maillab commands. Kept free of side effects at import, so tests can call them.
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import os from 'node:os';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import defaultLab from '../../lab/default.js';
import { Lab } from '../harness/lab.js';
import { parseRuntimeChoice, runtimeFromEnvironment } from '../harness/runtime/index.js';
import { packageRoot } from '../harness/runtime/types.js';
import { labNodeNames, planLab } from '../harness/topology.js';
import { loadLabFile } from '../harness/lab-file.js';
import { MaillabReporter } from '../report/reporter.js';
import { forgetRunningLab, recordRunningLab, runningLabsDir } from './running-labs.js';
import { option } from './args.js';

export { loadLabFile };

const USAGE = `usage: maillab <command>

In your project:
  init [--name <lab>]
        write a lab file (lab/<lab>.ts, default lab/mail.ts: the default topology, commented), two example
        scenarios (scenarios/happy-path.test.ts, scenarios/offline-receiver.test.ts), a vitest.config.ts (or
        the lines to add to yours) and the npm script test:mail; refuses to overwrite any file
  new scenario <name> [--lab <lab>]
        write scenarios/<name>.test.ts, a scenario skeleton on lab/<lab>.ts
  run [filter...]
        run your project's scenarios (scenarios/*.test.ts, or your vitest config's include), those whose file name
        contains a filter, in every vitest project they belong to: a line per test, a progress line, a summary;
        exits 1 when a test fails or no scenario matches
  check [--lab <file>] [--json]
        check the lab's planned DNS as a mail administrator would (SPF, DKIM keys, DMARC, MX, reverse DNS of
        the MTAs), without starting anything; exits 1 when any finding is an error; --json prints the findings

A lab to poke at:
  up [--lab <file>] [--runtime local|docker|auto] [--json]
        start a lab and keep it running until SIGINT/SIGTERM; --json prints one line with every endpoint,
        the control token, the external hosts (externals: kind external, host name, address, ports) and the
        path of the lab CA's certificate (ca). Writes a state file (removed on stop) through which the commands
        below find the lab: ${runningLabsDir()}/<lab id>.json
  send --from <addr> --to <addr> [--to <addr>]... [--subject <s>] [--text <t>] [--attach <file>]... [--lab <id>] [--mta <node>]
        submit a message to the running lab's MTA as a lab user (submission port, STARTTLS with the lab CA);
        prints its Message-ID and queue id
  queue [list [--all] [--json] | flush | hold <queueId> | release <queueId> | delete <queueId>] [--lab <id>] [--mta <node>]
        the MTA's queue: list it (--all: with the finished messages it still remembers), retry every waiting
        message now, hold one, release it, delete it
  tail [--message <Message-ID>] [--node <name>]... [--kind <kind>]... [--all] [--lab <id>]
        the lab's live event stream, one line per event (coloured on a terminal; NO_COLOR, FORCE_COLOR), from
        now (--all, or --message: from each node's first event); stops on Ctrl-C or when the lab stops
  --lab <id> picks a lab when several run (the id \`up\` printed, or the lab's name)

Docker and nodes:
  images [--list] [--real]
        build the node image for the docker runtime ahead of time (reused by content hash); --real builds the
        real-server image (Postfix and Dovecot from this host's Debian packages) instead
  prune
        remove every container, network and volume of every docker lab (label maillab=1), and the data
        directories of local labs whose harness is gone (a lab start removes those of dead harnesses too)
  node <dns|mta|mx|mailbox> --config <file.json>
        run one node of a lab on its own (what every runtime starts)
`;

export async function runCli(argv: string[]): Promise<number | undefined> {
  const [command, ...rest] = argv;
  switch (command) {
    case 'up':
      return up(rest);
    case 'run':
      return run(rest);
    case 'init':
      return (await import('./init.js')).init(rest);
    case 'new':
      return (await import('./init.js')).newScenario(rest);
    case 'send':
      return (await import('./poke.js')).send(rest);
    case 'queue':
      return (await import('./poke.js')).queue(rest);
    case 'tail':
      return (await import('./poke.js')).tail(rest);
    case 'check':
      return check(rest);
    case 'images': {
      const { ensureImage, listImages } = await import('../harness/runtime/images.js');
      // --real: the real-server image (Postfix and Dovecot from the host's packages) instead of the node image.
      const tag = await ensureImage({ log: (m: string) => process.stderr.write(m + '\n'), ...(rest.includes('--real') ? { real: true } : {}) });
      process.stdout.write(`${tag}\n`);
      if (rest.includes('--list')) for (const image of await listImages()) process.stdout.write(`  ${JSON.stringify(image)}\n`);
      return 0;
    }
    case 'prune': {
      // The local runtime's data directories of dead harnesses first (no engine needed), then every docker lab.
      const { reapLocalLabs } = await import('../harness/runtime/local.js');
      const local = await reapLocalLabs();
      const { pruneLabs } = await import('../harness/runtime/docker.js');
      const removed = await pruneLabs();
      process.stdout.write(`removed ${removed.containers} container(s), ${removed.networks} network(s), ${removed.volumes} volume(s), ${local.length} local lab data director${local.length === 1 ? 'y' : 'ies'}\n`);
      return 0;
    }
    case 'node': {
      // The node entry point parses process.argv itself.
      process.argv = [process.argv[0]!, 'maillab-node', ...rest];
      await import(pathToFileURL(path.join(packageRoot(), 'dist', 'node.js')).href);
      return undefined;
    }
    case undefined:
    case 'help':
    case '--help':
    case '-h':
      process.stdout.write(USAGE);
      return command ? 0 : 2;
    default:
      process.stderr.write(`maillab: unknown command "${command}"\n${USAGE}`);
      return 2;
  }
}

async function up(args: string[]): Promise<number> {
  const labFile = option(args, '--lab');
  const chosen = option(args, '--runtime');
  const runtime = chosen === undefined ? runtimeFromEnvironment() : parseRuntimeChoice(chosen);
  const json = args.includes('--json');
  const definition = labFile ? await loadLabFile(labFile) : defaultLab;
  const started = Date.now();
  const lab = await new Lab(definition).withRuntime(runtime).start();
  // Listening for the stop before anything tells the user the lab is up: a SIGINT that came before would kill the
  // process with the lab's nodes left running.
  const stopRequested = new Promise<void>((resolve) => {
    process.once('SIGINT', resolve);
    process.once('SIGTERM', resolve);
  });
  const description = lab.describe();
  // For `maillab send`, `queue` and `tail` in other processes; gone with the lab (or, if this process is killed
  // outright, at their next look, which finds its process gone).
  let stateFile: string | undefined;
  try {
    stateFile = recordRunningLab(lab, definition.name);
  } catch (err) {
    process.stderr.write(`maillab up: no state file (${err instanceof Error ? err.message : String(err)}): maillab send, queue and tail will not find this lab\n`);
  }
  const forget = () => stateFile && forgetRunningLab(stateFile);
  process.once('exit', forget);
  if (json) {
    process.stdout.write(JSON.stringify(description) + '\n');
  } else {
    process.stdout.write(`lab ${definition.name} (${lab.id}) ready in ${Date.now() - started} ms on the ${description.runtime} runtime\n`);
    for (const [name, node] of Object.entries(description.nodes)) {
      const services = Object.entries(node.services).map(([s, e]) => `${s} ${e.host}:${e.port}`);
      if (node.control) services.push(`control ${node.control.host}:${node.control.port}`);
      process.stdout.write(`  ${name.padEnd(8)} ${node.host.padEnd(16)} ${services.join('  ')}\n`);
      if (node.server) process.stdout.write(`  ${''.padEnd(8)} ${node.server} settings in effect: ${node.effectiveConfig!.path}${node.effectiveConfig!.in === 'container' ? ' (in its container)' : ''}\n`);
    }
    // Servers the user runs outside the lab (issue 14): the lab publishes them in its DNS and delivers to them.
    for (const [name, external] of Object.entries(description.externals)) {
      const ports = Object.entries(external.ports).map(([s, port]) => `${s} ${external.host}:${port}`);
      process.stdout.write(`  ${name.padEnd(8)} ${external.host.padEnd(16)} ${ports.join('  ')}  (external: ${external.hostname}, not run by the lab)\n`);
    }
    process.stdout.write(`users: ${description.users.map((u) => `${u.address} / ${u.password}`).join(', ')}\n`);
    process.stdout.write(`lab CA (trust it in your client, never system-wide): ${description.ca}\n`);
    process.stdout.write(`control channels (above): "Authorization: Bearer <token>"; the token is in the state file and in --json (controlToken)\n`);
    if (stateFile) process.stdout.write(`state file: ${stateFile}\n  (maillab send, maillab queue and maillab tail find the lab through it; --lab ${lab.id} when several run)\n`);
    process.stdout.write(`try: maillab send --from ${description.users[0]?.address ?? '<user>'} --to ${description.users[1]?.address ?? '<user>'}   then: maillab queue, maillab tail --all\nCtrl-C stops the lab.\n`);
  }
  await stopRequested;
  // Before the nodes stop: a `tail` that sees its streams end then knows the lab is gone, not restarting a node.
  forget();
  await lab.stop();
  return 0;
}

/**
 * `maillab check`: the mail DNS checker over the lab's planned zones. Nothing starts, so the addresses are placeholders
 * laid out as the local runtime lays out its block (hosts at .2, .3, … in definition order); findings name them.
 */
async function check(args: string[]): Promise<number> {
  const labFile = option(args, '--lab');
  const json = args.includes('--json');
  const definition = labFile ? await loadLabFile(labFile) : defaultLab;
  const { checkMailDns, formatFindings, mailDnsInputOf } = await import('../harness/checkers/mail-dns.js');
  const { equipWithMailAuth, signersOf } = await import('../harness/mail-auth.js');
  // External hosts (issue 14) keep their own address; the placeholders step around theirs.
  // Link proxies (issue 15) are nodes too, with addresses of their own.
  const hosts = labNodeNames(definition);
  const taken = new Set(Object.values(definition.hosts).flatMap((h) => (h.role === 'external' ? [h.address] : [])));
  const free = Array.from({ length: hosts.length + taken.size }, (_, i) => `127.0.0.${i + 2}`).filter((a) => !taken.has(a));
  const addresses = Object.fromEntries(
    hosts.map((host, i) => {
      const h = definition.hosts[host];
      return [host, h?.role === 'external' ? h.address : free[i]!];
    }),
  );
  const plan = planLab(definition, { addresses, portOffset: 0, dataRoot: path.join(os.tmpdir(), 'maillab-check-unused') });
  // DKIM keys are made as a start makes them, so the zones hold the public keys the lab would publish.
  const keys = await equipWithMailAuth(definition, plan.nodes);
  const findings = checkMailDns(mailDnsInputOf(plan, definition, signersOf(keys).map(({ domain, selector }) => ({ domain, selector }))));
  const count = (severity: string) => findings.filter((f) => f.severity === severity).length;
  if (json) {
    process.stdout.write(JSON.stringify(findings) + '\n');
  } else {
    process.stdout.write(`lab ${definition.name}: mail DNS as planned, placeholder addresses ${hosts.map((h) => `${h} ${addresses[h]}`).join(', ')}\n`);
    if (findings.length) process.stdout.write(formatFindings(findings) + '\n');
    process.stdout.write(`${count('error')} error(s), ${count('warning')} warning(s), ${count('info')} info\n`);
  }
  return count('error') > 0 ? 1 : 0;
}

/** The user's project: the nearest folder upward from the current one with a package.json (else the current one). */
export function projectRoot(from = process.cwd()): string {
  for (let dir = path.resolve(from); ; dir = path.dirname(dir)) {
    if (existsSync(path.join(dir, 'package.json'))) return dir;
    if (path.dirname(dir) === dir) return path.resolve(from);
  }
}

/** The project's own vitest (the one its test files import), or, when it has none, the one installed with maillab. */
async function vitestOf(root: string): Promise<typeof import('vitest/node')> {
  let entry: string | undefined;
  try {
    entry = createRequire(path.join(root, 'package.json')).resolve('vitest/node');
  } catch {
    // Not installed in the project: maillab's own dependency tree may have it.
  }
  if (entry) return (await import(pathToFileURL(entry).href)) as typeof import('vitest/node');
  try {
    return await import('vitest/node');
  } catch (err) {
    throw new Error(`maillab run runs your scenarios with vitest, which ${root} does not have: npm install -D vitest (${err instanceof Error ? err.message : String(err)})`);
  }
}

/** vitest's reporters that write the run to the console: `maillab run` writes its own lines instead. */
const CONSOLE_REPORTERS = new Set(['default', 'verbose', 'dot', 'basic', 'tree', 'tap', 'tap-flat', 'agent', 'minimal']);

/**
 * `maillab run`: the scenarios of the user's project, through its vitest config (and its projects): the files under
 * scenarios/ if that folder exists, else every test file of the config, whose file name contains one of the filters.
 * The config's reporters that write files (junit, maillab's HTML report...) stay; the console ones give way to
 * ScenarioReporter.
 */
async function run(filters: string[]): Promise<number> {
  const root = projectRoot();
  const { createVitest, resolveConfig } = await vitestOf(root);
  const { ScenarioReporter } = await import('./reporter.js');
  const { vitestConfig } = await resolveConfig({ root, watch: false });
  const kept = vitestConfig.reporters.filter((r) => !Array.isArray(r) || typeof r[0] !== 'string' || !CONSOLE_REPORTERS.has(r[0]));
  // Every `maillab run` writes the HTML report (maillab-report/index.html), whether or not the config lists it.
  const listsReport = kept.some((r) => {
    const name: unknown = Array.isArray(r) ? r[0] : r;
    return name instanceof MaillabReporter || (typeof name === 'string' && /maillab\/reporter|dist\/reporter\.js$|src\/report\/reporter\.ts$/.test(name));
  });
  const report = listsReport ? [] : [new MaillabReporter()];
  const vitest = await createVitest('test', { root, watch: false, run: true, reporters: [new ScenarioReporter(), ...report, ...kept] as never });
  try {
    const scenarios = path.join(root, 'scenarios');
    const inScenarios = existsSync(scenarios);
    const specifications = (await vitest.globTestSpecifications()).filter((s) => {
      // vite writes module ids with forward slashes on every platform: compare resolved paths.
      const inside = path.relative(scenarios, path.resolve(s.moduleId));
      if (inScenarios && (inside.startsWith('..') || path.isAbsolute(inside))) return false;
      const file = path.basename(s.moduleId);
      return filters.length === 0 || filters.some((filter) => file.includes(filter));
    });
    if (specifications.length === 0) {
      const where = inScenarios ? path.relative(process.cwd(), scenarios) || '.' : `the test files of ${vitestConfig.config ?? 'vitest\'s defaults'}`;
      process.stderr.write(`maillab run: no scenario${filters.length ? ` matches ${filters.join(' ')}` : ''} in ${where}\n`);
      return 1;
    }
    await vitest.standalone();
    await vitest.runTestSpecifications(specifications, filters.length === 0);
    const failed = vitest.state.getCountOfFailedTests() > 0 || vitest.state.getUnhandledErrors().length > 0 || vitest.state.getFiles().some((f) => f.result?.state === 'fail');
    return failed || process.exitCode ? 1 : 0;
  } finally {
    await vitest.close();
  }
}
