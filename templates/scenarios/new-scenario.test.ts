// Scenario: new-scenario. Written by `maillab new scenario`: say here what it shows about your mail setup.
import { describe, expect, it } from 'vitest';
import { checkDeliveredOnce } from 'maillab';
import { useLab } from 'maillab/vitest';
import definition from '../lab/mail.js';

describe('new-scenario', () => {
  // A lab for this file: `useLab((lab) => lab.withRetry({ ... }), { definition })` starts a variant of it.
  const lab = useLab(undefined, { definition });

  it('delivers alice → bob', async () => {
    const sent = await lab().client('alice@sender.test').send({ to: 'bob@receiver.test', subject: 'new-scenario', text: 'Hello' });
    // Wait on events (lab().waitFor({ kind, messageId })), never on time; lab().trace(messageId) lists a message's hops.
    const { raw } = await checkDeliveredOnce(lab(), 'bob@receiver.test', sent.messageId);
    expect(raw.toString('utf8')).toContain('Hello');
  });
});
