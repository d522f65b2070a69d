// resolveTlsa against the real lab DNS node (startDns in-process), and against a UDP socket that never answers.
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import dgram from 'node:dgram';
import type { DnsNodeConfig, Endpoint } from '../shared/config.js';
import { EventLog, type LabEvent } from '../shared/events.js';
import type { NodeContext, RunningRole } from '../shared/node.js';
import { dnsTestConfig } from './dns.test-helper.js';
import { resolveTlsa, startDns } from './index.js';

const sha256 = 'c0ffee'.repeat(10) + 'c0ff'; // 32 octets
const sha512 = (byte: number) => byte.toString(16).padStart(2, '0').repeat(64);

const config: DnsNodeConfig = dnsTestConfig({
  zones: [
    {
      origin: 'receiver.test',
      records: [
        { name: 'mx.receiver.test', type: 'A', address: '127.0.0.5' },
        { name: '_25._tcp.mx.receiver.test', type: 'TLSA', usage: 3, selector: 1, matchingType: 1, data: sha256 },
        { name: '_25._tcp.mx.receiver.test', type: 'TLSA', usage: 2, selector: 0, matchingType: 0, data: '0a0b0c' },
        // RFC 7671 §7: a TLSA name may be an alias; the CNAME in the answer is skipped.
        { name: '_25._tcp.alias.receiver.test', type: 'CNAME', domain: '_25._tcp.mx.receiver.test' },
        // Eight 64-octet digests do not fit in 512 octets of UDP: the answer comes truncated and is asked over TCP.
        ...Array.from({ length: 8 }, (_, i) => ({ name: '_25._tcp.big.receiver.test', type: 'TLSA' as const, usage: 3, selector: 1, matchingType: 2, data: sha512(i + 1) })),
      ],
    },
  ],
});

let events: EventLog;
let role: RunningRole;
let server: Endpoint;

beforeAll(async () => {
  events = new EventLog('dns');
  const ctx: NodeContext<DnsNodeConfig> = { config, events, log: () => {} };
  role = await startDns(ctx);
  server = role.services.dns!;
});

afterAll(async () => {
  await role?.stop();
});

/** The error a lookup failed with (the test fails when it did not). */
async function failure(lookup: Promise<unknown>): Promise<NodeJS.ErrnoException> {
  try {
    await lookup;
  } catch (err) {
    return err as NodeJS.ErrnoException;
  }
  throw new Error('the lookup succeeded, a failure was expected');
}

function queriesSince(seq: number): LabEvent[] {
  return events.since(seq).filter((e) => e.kind === 'dns-query');
}

const hex = (answers: { usage: number; selector: number; matchingType: number; data: Buffer }[]) =>
  answers.map((a) => `${a.usage} ${a.selector} ${a.matchingType} ${a.data.toString('hex')}`);

describe('resolveTlsa against the lab DNS node', () => {
  it('returns every TLSA record at the name, data as bytes, over UDP', async () => {
    const seq = events.since(0).at(-1)?.seq ?? 0;
    const answers = await resolveTlsa(server, '_25._tcp.MX.receiver.test.');
    expect(hex(answers)).toEqual([`3 1 1 ${sha256}`, '2 0 0 0a0b0c']);
    expect(answers[0]!.data).toBeInstanceOf(Buffer);
    expect(answers[0]!.data).toHaveLength(32);
    expect(queriesSince(seq).map((e) => e.detail)).toMatchObject([{ name: '_25._tcp.mx.receiver.test', type: 'TLSA', transport: 'udp' }]);
  });

  it('skips the CNAME in front of the records', async () => {
    expect(hex(await resolveTlsa(server, '_25._tcp.alias.receiver.test'))).toEqual([`3 1 1 ${sha256}`, '2 0 0 0a0b0c']);
  });

  it('asks again over TCP when the UDP answer is truncated', async () => {
    const seq = events.since(0).at(-1)?.seq ?? 0;
    const answers = await resolveTlsa(server, '_25._tcp.big.receiver.test');
    expect(hex(answers)).toEqual(Array.from({ length: 8 }, (_, i) => `3 1 2 ${sha512(i + 1)}`));
    expect(queriesSince(seq).map((e) => e.detail.transport)).toEqual(['udp', 'tcp']);
  });

  it('sees TLSA changes made over the control channel', async () => {
    try {
      await role.rpc['set-records']!({ name: '_25._tcp.mx.receiver.test', type: 'TLSA', records: [{ usage: 1, selector: 1, matchingType: 0, data: 'FF' }] });
      expect(hex(await resolveTlsa(server, '_25._tcp.mx.receiver.test'))).toEqual(['1 1 0 ff']);
    } finally {
      await role.rpc['set-records']!({ name: '_25._tcp.mx.receiver.test', type: 'TLSA', records: config.zones![0]!.records.filter((r) => r.name === '_25._tcp.mx.receiver.test') });
    }
  });

  it('fails with ENOTFOUND on NXDOMAIN, naming the query', async () => {
    const err = await failure(resolveTlsa(server, '_25._tcp.nobody.receiver.test'));
    expect(err).toBeInstanceOf(Error);
    expect(err.code).toBe('ENOTFOUND');
    expect(err.message).toBe('_25._tcp.nobody.receiver.test TLSA: no such domain (NXDOMAIN) (ENOTFOUND)');
  });

  it('fails with ENODATA where the name exists without TLSA records', async () => {
    const err = await failure(resolveTlsa(server, 'mx.receiver.test'));
    expect(err.code).toBe('ENODATA');
    expect(err.message).toBe('mx.receiver.test TLSA: no TLSA records (ENODATA)');
  });

  it('rejects options that would never send a query', async () => {
    await expect(resolveTlsa(server, '_25._tcp.mx.receiver.test', { tries: 0 })).rejects.toThrow('resolveTlsa: tries must be a whole number from 1, got 0');
    await expect(resolveTlsa(server, '_25._tcp.mx.receiver.test', { timeoutMs: -1 })).rejects.toThrow(/timeoutMs must be a positive number/);
  });

  it('fails with EREFUSED outside every lab zone', async () => {
    const err = await failure(resolveTlsa(server, '_25._tcp.mx.example.com'));
    expect(err.code).toBe('EREFUSED');
    expect(err.message).toMatch(/^_25\._tcp\.mx\.example\.com TLSA: /);
  });
});

describe('resolveTlsa against servers that do not answer well', () => {
  /** A UDP socket on loopback that answers every query with `reply(query)`, or never when it returns undefined. */
  async function udpServer(reply: (query: Buffer) => Buffer | undefined): Promise<{ endpoint: Endpoint; received: Buffer[]; close(): Promise<void> }> {
    const socket = dgram.createSocket('udp4');
    const received: Buffer[] = [];
    socket.on('message', (message, rinfo) => {
      received.push(message);
      const response = reply(message);
      if (response) socket.send(response, rinfo.port, rinfo.address);
    });
    await new Promise<void>((resolve) => socket.bind(0, '127.0.0.1', resolve));
    return { endpoint: { host: '127.0.0.1', port: socket.address().port }, received, close: () => new Promise((resolve) => socket.close(() => resolve())) };
  }

  it('fails with ETIMEOUT after its tries when nothing answers', async () => {
    const silent = await udpServer(() => undefined);
    try {
      const started = Date.now();
      const err = await failure(resolveTlsa(silent.endpoint, '_25._tcp.mx.receiver.test', { timeoutMs: 200, tries: 1 }));
      expect(err.code).toBe('ETIMEOUT');
      expect(err.message).toBe(`_25._tcp.mx.receiver.test TLSA: no answer from 127.0.0.1:${silent.endpoint.port} after 1 try of 200 ms (ETIMEOUT)`);
      expect(Date.now() - started).toBeLessThan(2000);
      expect(silent.received).toHaveLength(1);
    } finally {
      await silent.close();
    }
  });

  it('asks again on every try, with a fresh id, and ignores responses with the wrong id or question', async () => {
    // Answers with a SERVFAIL that belongs to another query: on the first try its id is off by one, on the second
    // the id is right but the question is `_35._tcp...`. Neither may be taken for the answer.
    let tries = 0;
    const wrongId = await udpServer((query) => {
      const response = Buffer.from(query);
      if (++tries === 1) response.writeUInt16BE((query.readUInt16BE(0) + 1) & 0xffff, 0);
      else response[14] = '3'.charCodeAt(0); // the first label, after its length octet at 12 and '_' at 13
      response[2] = 0x80 | response[2]!; // QR
      response[3] = 0x02; // SERVFAIL
      return response;
    });
    try {
      const err = await failure(resolveTlsa(wrongId.endpoint, '_25._tcp.mx.receiver.test', { timeoutMs: 150, tries: 2 }));
      expect(err.code).toBe('ETIMEOUT');
      expect(err.message).toMatch(/after 2 tries of 150 ms/);
      expect(wrongId.received).toHaveLength(2);
      const [first, second] = wrongId.received.map((q) => q.readUInt16BE(0));
      expect(first).not.toBe(second); // ids are random: equal by chance once in 65536 runs
    } finally {
      await wrongId.close();
    }
  });

  it('fails with ECONNREFUSED at once when nothing listens on the port (ICMP port unreachable)', async () => {
    const closed = await udpServer(() => undefined);
    await closed.close(); // the port is free again: datagrams to it are refused
    const err = await failure(resolveTlsa(closed.endpoint, '_25._tcp.mx.receiver.test', { timeoutMs: 5000, tries: 1 }));
    expect(err.code).toBe('ECONNREFUSED');
    expect(err.message).toMatch(new RegExp(`^_25\\._tcp\\.mx\\.receiver\\.test TLSA: cannot reach 127\\.0\\.0\\.1:${closed.endpoint.port} over UDP`));
  });

  it('fails with ESERVFAIL when the matching response says SERVFAIL', async () => {
    const failing = await udpServer((query) => {
      const response = Buffer.from(query);
      response[2] = 0x80 | response[2]!;
      response[3] = 0x02;
      return response;
    });
    try {
      const err = await failure(resolveTlsa(failing.endpoint, '_25._tcp.mx.receiver.test', { timeoutMs: 1000, tries: 1 }));
      expect(err.code).toBe('ESERVFAIL');
      expect(err.message).toBe('_25._tcp.mx.receiver.test TLSA: DNS server failure (SERVFAIL) (ESERVFAIL)');
    } finally {
      await failing.close();
    }
  });
});
