import { describe, expect, it } from 'vitest';
import type { HistoryEvent } from '../harness/events.js';
import { bounded, receivedHeaders } from './capture.js';
import { RECORD_EVENT_LIMIT } from './record.js';

describe('a record stays bounded', () => {
  const events = (n: number) => Array.from({ length: n }, (_, i) => ({ seq: i + 1, time: i, node: 'mta', kind: 'active', detail: { attempt: i, recipients: [] } }) as HistoryEvent);

  it('keeps a slice within the limit whole', () => {
    const slice = events(RECORD_EVENT_LIMIT);
    expect(bounded(slice, RECORD_EVENT_LIMIT)).toEqual({ kept: slice });
  });

  it('keeps the first and last halves of a longer slice and says how many it left out, and where', () => {
    const slice = events(RECORD_EVENT_LIMIT + 500);
    const { kept, omitted } = bounded(slice, RECORD_EVENT_LIMIT);
    expect(kept).toHaveLength(RECORD_EVENT_LIMIT);
    expect(omitted).toEqual({ count: 500, afterIndex: RECORD_EVENT_LIMIT / 2 - 1 });
    expect(kept[omitted!.afterIndex]!.seq).toBe(RECORD_EVENT_LIMIT / 2);
    expect(kept[omitted!.afterIndex + 1]!.seq).toBe(RECORD_EVENT_LIMIT / 2 + 501);
    expect(kept.at(-1)).toBe(slice.at(-1));
  });
});

describe('receivedHeaders', () => {
  it('reads every Received header of the header section, unfolded, top first, and nothing of the body', () => {
    const raw = Buffer.from(
      'Received: from mta.sender.test ([127.0.0.5])\r\n\tby mx.receiver.test with ESMTPS id X; Mon, 30 Nov 2026 09:00:01 +0000\r\n' +
        'Subject: hi\r\nreceived: from client.sender.test by mta.sender.test; Mon, 30 Nov 2026 09:00:00 +0000\r\n\r\nReceived: in the body\r\n',
    );
    expect(receivedHeaders(raw)).toEqual([
      'from mta.sender.test ([127.0.0.5]) by mx.receiver.test with ESMTPS id X; Mon, 30 Nov 2026 09:00:01 +0000',
      'from client.sender.test by mta.sender.test; Mon, 30 Nov 2026 09:00:00 +0000',
    ]);
  });
});
