// `maillab node <role> --config <file>` in one self-contained bundle (dist/node.js): the entry point every
// runtime starts, a local child process or a container.
import { readFileSync, statSync } from 'node:fs';
import type { NodeConfig, Role } from './shared/config.js';
import { runNode } from './shared/node.js';

type ConfigOf<R extends Role> = Extract<NodeConfig, { role: R }>;

// Each role is loaded on demand (its own chunk of the bundle): a node parses only the code it runs, which is
// most of its start-up time.
export const roles: { [R in Role]: (config: ConfigOf<R>) => Promise<void> } = {
  dns: async (config) => runNode(config, (await import('./dns/index.js')).startDns),
  mta: async (config) =>
    config.server === 'postfix'
      ? runNode(config, async (ctx) => (await import('./real/postfix/mta-node.js')).startPostfixMta(ctx, config.postfix ? { user: config.postfix } : {}))
      : runNode(config, (await import('./mta/index.js')).startMta),
  mx: async (config) =>
    config.server === 'postfix'
      ? runNode(config, async (ctx) => (await import('./real/postfix/node.js')).startPostfixMx(ctx, config.postfix ? { user: config.postfix } : {}))
      : runNode(config, (await import('./mx/index.js')).startMx),
  // A real server in the mailbox role (issue 14): Dovecot behind the same contract, in its own chunk.
  mailbox: async (config) =>
    config.server === 'dovecot'
      ? runNode(config, async (ctx) => (await import('./real/dovecot/node.js')).startDovecotMailbox(ctx, config.dovecot?.config ? { include: config.dovecot.config } : {}))
      : runNode(config, (await import('./mailbox/index.js')).startMailbox),
  // A link proxy between two hosts (issue 15).
  proxy: async (config) => runNode(config, (await import('./proxy/index.js')).startProxy),
};

function run(config: NodeConfig): Promise<void> {
  switch (config.role) {
    case 'dns':
      return roles.dns(config);
    case 'mta':
      return roles.mta(config);
    case 'mx':
      return roles.mx(config);
    case 'mailbox':
      return roles.mailbox(config);
    case 'proxy':
      return roles.proxy(config);
  }
}

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
  const mode = statSync(configFile).mode & 0o777;
  if (config.controlToken && mode & 0o077) {
    process.stderr.write(`maillab node: ${configFile} holds the control token and others may read it (mode ${mode.toString(8)}): chmod 600 it\n`);
  }
  await run(config);
}

// `maillab node …` from the CLI passes a leading program name of its own.
const args = process.argv.slice(2);
main(args[0] === 'node' ? args.slice(1) : args).catch((err) => {
  process.stderr.write(`maillab node: ${err instanceof Error ? err.stack : String(err)}\n`);
  process.exit(1);
});
