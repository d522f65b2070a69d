// A node process of its own for lifeline.test.ts: starts the Dovecot adapter from a config file (argv[2]), prints
// `READY <services>` and waits to be killed. No signal handler: SIGTERM or SIGKILL end it at once, as a crash would.
import { readFileSync } from 'node:fs';
import type { MailboxEvents } from '../../mailbox/api.js';
import type { MailboxNodeConfig } from '../../shared/config.js';
import { EventLog } from '../../shared/events.js';
import { startDovecotMailbox } from './node.js';

const config = JSON.parse(readFileSync(process.argv[2]!, 'utf8')) as MailboxNodeConfig;
const role = await startDovecotMailbox({ config, events: new EventLog<MailboxEvents>(config.name), log: (m) => process.stderr.write(m + '\n') });
process.stdout.write('READY ' + JSON.stringify(role.services) + '\n');
setInterval(() => undefined, 1 << 30);
