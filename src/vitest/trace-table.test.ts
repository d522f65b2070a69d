// The trace table's layout and each kind's key detail, on events shaped as the roles' contracts declare them.
import { describe, expect, it } from 'vitest';
import type { LabEvent } from '../shared/events.js';
import { formatOffset, formatTraceTable, summarizeEvent, traceRows } from './trace-table.js';

const T0 = 1_800_000_000_000;
let seq = 0;
/** `messageId` null: an event that names no message (the nemesis's). */
function event(offset: number, node: string, kind: string, detail: object, messageId: string | null = '<m1@sender.test>'): LabEvent<string, object> {
  return { seq: ++seq, time: T0 + offset, node, kind, ...(messageId ? { messageId } : {}), detail };
}

const outcome = { hop: 'mta.sender.test -> mx.receiver.test[127.0.0.7]:25', status: '2.0.0' };

describe('trace table', () => {
  it('lines up offset, node, event and detail under a header, offsets from the first event', () => {
    const table = formatTraceTable([
      event(0, 'mta', 'submitted', { user: 'alice@sender.test', from: 'alice@sender.test', to: ['bob@receiver.test', 'carol@receiver.test'], size: 10, tls: null }),
      event(12.34, 'mx', 'received', { from: 'alice@sender.test', to: ['bob@receiver.test'], client: '127.0.0.5', helo: 'mta.sender.test', size: 12, tls: null }),
      event(12_345.6, 'mta', 'relayed', { ...outcome, rcpt: 'bob@receiver.test', reply: '250 2.0.0 Ok: delivered as 1234' }),
    ]);
    expect(table.split('\n')).toEqual([
      '     offset  node  event      detail',
      '    +0.0 ms  mta   submitted  alice@sender.test → bob@receiver.test, carol@receiver.test (user alice@sender.test)',
      '   +12.3 ms  mx    received   alice@sender.test → bob@receiver.test helo mta.sender.test from 127.0.0.5',
      '  +12.346 s  mta   relayed    bob@receiver.test: 250 2.0.0 Ok: delivered as 1234 (mta.sender.test -> mx.receiver.test[127.0.0.7]:25)',
    ]);
  });

  it('adds a message column only when the events concern two messages (a message and its DSN), not for the nemesis', () => {
    const stop = event(0, 'nemesis', 'node-stop', { target: 'mx', role: 'mx', took: 212.4 }, null);
    const deferred = event(5, 'mta', 'deferred', { ...outcome, rcpt: 'bob@receiver.test', reply: '', error: 'mx.receiver.test[127.0.0.7]:25: cannot connect: connection refused (ECONNREFUSED) ', nextAttempt: 0, delay: 500, attempt: 1 });
    const one = formatTraceTable([stop, deferred]);
    expect(one).toMatch(/^ +offset +node +event +detail$/m);
    expect(one).toMatch(/^ +\+0\.0 ms +nemesis +node-stop +mx \(212 ms\)$/m);
    // The error's trailing space does not survive into the row.
    expect(one).toMatch(/^ +\+5\.0 ms +mta +deferred +bob@receiver\.test: mx\.receiver\.test\[127\.0\.0\.7\]:25: cannot connect: connection refused \(ECONNREFUSED\); retry in 500 ms$/m);

    const dsn = event(9, 'mta', 'dsn-created', { dsnQueueId: 'Q2', dsnMessageId: '<dsn@mta.sender.test>', for: { queueId: 'Q1', messageId: '<m1@sender.test>' }, to: 'alice@sender.test', rcpts: ['nobody@receiver.test'] });
    const stored = event(30, 'mailbox', 'stored', { user: 'alice@sender.test', mailbox: 'INBOX', uid: 4, size: 900, from: '' }, '<dsn@mta.sender.test>');
    const two = formatTraceTable([stop, dsn, stored]).split('\n');
    expect(two[0]).toMatch(/^ +offset +node +event +message +detail$/);
    expect(two[2]).toMatch(/^ +\+9\.0 ms +mta +dsn-created +<m1@sender\.test> +DSN <dsn@mta\.sender\.test> to alice@sender\.test for nobody@receiver\.test$/);
    expect(two[3]).toMatch(/^ +\+30\.0 ms +mailbox +stored +<dsn@mta\.sender\.test> +alice@sender\.test INBOX uid 4$/);
  });

  it('gives each kind its key detail: recipient and reply, error, verdicts, fault', () => {
    const line = (kind: string, detail: object, node = 'mta') => summarizeEvent(event(0, node, kind, detail));
    expect(line('bounced', { ...outcome, rcpt: 'nobody@receiver.test', status: '5.1.1', reply: '550 5.1.1 no such user', error: 'mx said: 550 5.1.1 no such user', attempt: 1 })).toBe('nobody@receiver.test: 5.1.1 mx said: 550 5.1.1 no such user');
    expect(line('expired', { ...outcome, rcpt: 'bob@receiver.test', status: '4.4.1', reply: '', error: 'connection refused', attempts: 7, queuedFor: 60_000 })).toBe('bob@receiver.test: 4.4.1 expired after 7 attempts: connection refused');
    expect(line('rejected', { stage: 'RCPT TO', rcpt: 'nobody@receiver.test', reply: '550 5.1.1 no such user', client: '127.0.0.5', from: 'alice@sender.test' }, 'mx')).toBe('RCPT TO nobody@receiver.test: 550 5.1.1 no such user');
    expect(line('handoff', { to: 'LMTP 127.0.0.3:24', recipients: [{ address: 'bob@receiver.test', accepted: true, code: 250, reply: '250 2.6.0 saved', stage: 'lmtp' }, { address: 'carol@receiver.test', accepted: false, code: 452, reply: '452 4.2.2 over quota', stage: 'lmtp' }] }, 'mx')).toBe(
      'LMTP 127.0.0.3:24: bob@receiver.test 250 2.6.0 saved; carol@receiver.test 452 4.2.2 over quota',
    );
    expect(line('handoff-failed', { to: 'LMTP 127.0.0.3:24', error: 'connection refused' }, 'mx')).toBe('LMTP 127.0.0.3:24: connection refused');
    const verdicts = { from: 'a@sender.test', rcpts: [], headerFrom: 'a@sender.test', spf: { result: 'pass', domain: 'sender.test', ip: '127.0.0.5', helo: 'mta.sender.test' }, arc: { result: 'none', sealers: [] }, header: '' };
    expect(line('authenticated', { ...verdicts, dkim: [{ result: 'pass', domain: 'sender.test', selector: 'lab', algorithm: 'rsa-sha256', aligned: true, info: '' }], dmarc: { result: 'pass', domain: 'sender.test', sampled: true, alignment: { spf: 'sender.test', dkim: 'sender.test' } }, action: 'accept', reason: 'passed' }, 'mx')).toBe(
      'spf=pass dkim=pass(sender.test/lab) dmarc=pass → accept',
    );
    expect(line('authenticated', { ...verdicts, dkim: [], dmarc: null, action: 'reject', reason: '550 5.7.1 DMARC policy' }, 'mx')).toBe('spf=pass dkim=none dmarc=none → reject (550 5.7.1 DMARC policy)');
    expect(line('fault', { source: 'smtp', rule: 'lost-250', action: 'drop', stage: 'end-of-data', effect: 'connection closed before the reply', hop: 'mta.sender.test -> mx.receiver.test[127.0.0.7]:25' }, 'mx')).toBe(
      'smtp rule lost-250 (drop) at end-of-data: connection closed before the reply [mta.sender.test -> mx.receiver.test[127.0.0.7]:25]',
    );
    expect(line('mx-lookup', { domain: 'receiver.test', result: { kind: 'mx', hosts: [{ exchange: 'mx.receiver.test', priority: 10, addresses: ['127.0.0.7'] }] } })).toBe('receiver.test → mx mx.receiver.test');
    expect(line('mx-lookup', { domain: 'gone.test', result: { kind: 'none', error: 'NXDOMAIN' } })).toBe('gone.test → none NXDOMAIN');
    expect(line('dns-query', { name: 'receiver.test', type: 'MX', rcode: 'NOERROR', answers: ['MX 10 mx.receiver.test'], transport: 'udp', client: '127.0.0.5:5000' }, 'dns')).toBe('MX receiver.test → NOERROR MX 10 mx.receiver.test');
    expect(line('node-kill', { target: 'mailbox', role: 'mailbox', took: 3, error: 'no such process' }, 'nemesis')).toBe('mailbox (3 ms) failed: no such process');
    // A kind with no summary of its own: its scalar fields.
    expect(line('link-close', { connection: 3, service: 'smtp', client: '127.0.0.5:4000', bytesUp: 10, bytesDown: 20, durationMs: 5, nested: { no: 1 } }, 'link-mta-mx')).toBe(
      'connection=3 service=smtp client=127.0.0.5:4000 bytesUp=10 bytesDown=20 durationMs=5',
    );
  });

  it('cuts long details, says so for an empty trace, and gives rows for other renderers', () => {
    const long = event(0, 'mta', 'error', { error: 'x'.repeat(500) });
    expect(formatTraceTable([long], { maxDetail: 40 })).toMatch(/ x{39}…$/);
    expect(formatTraceTable([])).toBe('  (no events)');
    expect(traceRows([long, event(2.5, 'mx', 'handoff-failed', { to: 'LMTP x:24', error: 'refused' }, null)], T0 - 1)).toEqual([
      { offsetMs: 1, node: 'mta', kind: 'error', messageId: '<m1@sender.test>', summary: 'x'.repeat(500) },
      { offsetMs: 3.5, node: 'mx', kind: 'handoff-failed', summary: 'LMTP x:24: refused' },
    ]);
    expect([formatOffset(0), formatOffset(9999.94), formatOffset(10_000), formatOffset(-3)]).toEqual(['+0.0 ms', '+9999.9 ms', '+10.000 s', '-3.0 ms']);
  });
});
