// `maillab node <role> --config <file>` in one self-contained bundle (dist/node.js): the entry point every
// runtime starts, a local child process or a container.
import { readFileSync } from 'node:fs';
import type { NodeConfig, Role } from './shared/config.js';
import { runNode, type RoleStarter } from './shared/node.js';

// Each role is loaded on demand (its own chunk of the bundle): a node parses only the code it runs, which is
// most of its start-up time.
export const roles: Record<Role, () => Promise<RoleStarter<any>>> = {
  dns: async () => (await import('./dns/index.js')).startDns,
  mta: async () => (await import('./mta/index.js')).startMta,
  mx: async () => (await import('./mx/index.js')).startMx,
  mailbox: async () => (await import('./mailbox/index.js')).startMailbox,
};

export async function main(argv: string[]): Promise<void> {
  const role = argv[0] as Role | undefined;
  const configIndex = argv.indexOf('--config');
  const configFile = configIndex >= 0 ? argv[configIndex + 1] : undefined;
  if (!role || !(role in roles) || !configFile) {
    process.stderr.write(`usage: maillab node <${Object.keys(roles).join('|')}> --config <file.json>\n`);
    process.exit(2);
  }
  const config = JSON.parse(readFileSync(configFile, 'utf8')) as NodeConfig;
  if (config.role !== role) {
    process.stderr.write(`config ${configFile} is for role ${config.role}, not ${role}\n`);
    process.exit(2);
  }
  await runNode(config, await roles[role]());
}

// `maillab node …` from the CLI passes a leading program name of its own.
const args = process.argv.slice(2);
main(args[0] === 'node' ? args.slice(1) : args).catch((err) => {
  process.stderr.write(`maillab node: ${err instanceof Error ? err.stack : String(err)}\n`);
  process.exit(1);
});
