// maillab CLI: init, new, run, check, up, send, queue, tail, images, prune, node.
import { runCli } from './commands.js';

runCli(process.argv.slice(2)).then(
  (code) => {
    if (code !== undefined) process.exitCode = code;
  },
  (err) => {
    process.stderr.write(`maillab: ${err instanceof Error ? err.message : String(err)}\n`);
    process.exitCode = 1;
  },
);
