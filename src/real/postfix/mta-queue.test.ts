// The queue operations of the MTA contract (hold, release, delete) played by Postfix (postsuper -h, -H, -d, then
// postqueue -i), and the harness's queue waits over `postqueue -j`: the same tests maillab's MTA passes
// (src/harness/queue-operations.test-helper.ts), on lab/postfix-mta.ts. Needs root, Postfix and Cyrus SASL's tools on
// the local runtime; skipped otherwise, saying why.
import { describe, expect, it } from 'vitest';
import postfixMtaLab from '../../../lab/postfix-mta.js';
import { queueOperationTests } from '../../harness/queue-operations.test-helper.js';
import { runtimeFromEnvironment } from '../../harness/runtime/index.js';
import { useLab } from '../../vitest/use-lab.js';
import { postfixMtaUnavailable, stateOf } from './mta-node.js';

const skip = runtimeFromEnvironment() === 'docker' ? 'this test runs Postfix on the local runtime (MAILLAB_RUNTIME=docker is set)' : postfixMtaUnavailable();
if (skip) console.warn(`skipping the Postfix MTA queue operation tests: ${skip}`);

describe.skipIf(skip !== undefined)('Postfix MTA queue operations', () => {
  const lab = useLab((l) => l.withRuntime('local'), { definition: postfixMtaLab });
  queueOperationTests(lab);
});

describe("Postfix's queues as the contract's states", () => {
  it('maps active, deferred and hold to themselves, maildrop and incoming to incoming', () => {
    expect(['maildrop', 'incoming', 'active', 'deferred', 'hold'].map(stateOf)).toEqual(['incoming', 'incoming', 'active', 'deferred', 'hold']);
  });
});
