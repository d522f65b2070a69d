// The maillab commands. Kept free of side effects at import, so tests can call them.
import { readdir, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import defaultLab from '../../lab/default.js';
import { Lab } from '../harness/lab.js';
import { parseRuntimeChoice, runtimeFromEnvironment } from '../harness/runtime/index.js';
import { packageRoot } from '../harness/runtime/types.js';
import { labNodeNames, planLab } from '../harness/topology.js';
import { loadLabFile } from '../harness/lab-file.js';

export { loadLabFile };

const USAGE = `usage: maillab <command>

  up [--lab <file>] [--runtime local|docker|auto] [--json]
        start a lab and keep it running until SIGINT/SIGTERM; --json prints one line with every endpoint,
        the external hosts (externals: kind external, host name, address, ports) and the path of the lab CA's
        certificate (ca)
  check [--lab <file>] [--json]
        check the lab's planned DNS as a mail administrator would (SPF, DKIM keys, DMARC, MX, reverse DNS of
        the MTAs), without starting anything; exits 1 when any finding is an error; --json prints the findings
  run [filter...]
        run the scenarios (scenarios/*.test.ts) with a line per scenario and a summary
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

function option(args: string[], name: string): string | undefined {
  const i = args.indexOf(name);
  return i >= 0 ? args[i + 1] : undefined;
}

async function up(args: string[]): Promise<number> {
  const labFile = option(args, '--lab');
  const chosen = option(args, '--runtime');
  const runtime = chosen === undefined ? runtimeFromEnvironment() : parseRuntimeChoice(chosen);
  const json = args.includes('--json');
  const definition = labFile ? await loadLabFile(labFile) : defaultLab;
  const started = Date.now();
  const lab = await new Lab(definition).withRuntime(runtime).start();
  const description = lab.describe();
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
    process.stdout.write(`control channels: "Authorization: Bearer <token>"; --json prints the token (controlToken)\nCtrl-C stops the lab.\n`);
  }
  await new Promise<void>((resolve) => {
    process.once('SIGINT', resolve);
    process.once('SIGTERM', resolve);
  });
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

async function run(filters: string[]): Promise<number> {
  const { startVitest } = await import('vitest/node');
  const { ScenarioReporter } = await import('./reporter.js');
  const root = packageRoot();
  // Only scenario files: pick them here, so the config's unit-test globs do not apply.
  const files = (await readdir(path.join(root, 'scenarios')))
    .filter((f) => f.endsWith('.test.ts'))
    .filter((f) => filters.length === 0 || filters.some((filter) => f.includes(filter)))
    .map((f) => path.join('scenarios', f));
  if (files.length === 0) {
    process.stderr.write(`maillab run: no scenario matches ${filters.join(' ')}\n`);
    return 1;
  }
  const vitest = await startVitest('test', files, { root, run: true, reporters: [new ScenarioReporter()], watch: false });
  const failed = vitest.state.getCountOfFailedTests() > 0 || vitest.state.getUnhandledErrors().length > 0;
  await vitest.close();
  return failed || process.exitCode ? 1 : 0;
}
