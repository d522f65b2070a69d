// Fuzzing the lab DNS server (server.ts over dns2): random and mutated queries over UDP and TCP, and answerQuery
// on whatever dns2 manages to parse. What must hold: answerQuery never throws; every datagram the server sends is a
// DNS response that parses; nothing crashes; a well-formed query still gets its answer after each batch (over UDP,
// and over a fresh TCP connection), and memory stays bounded.
// Replay: MAILLAB_FUZZ_SEED=<seed> (see src/shared/fuzz.test-helper.ts); fast-check prints seed and path on failure.
import dgram from 'node:dgram';
import net from 'node:net';
import { Packet } from 'dns2';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { DnsFaultAction } from '../shared/faults.js';
import { binary, fuzzParameters, rssMiB } from '../shared/fuzz.test-helper.js';
import { DnsFaultRules } from './faults.js';
import { answerQuery, answerWithFaults, startDnsServer, type RunningDnsServer } from './server.js';
import { Zones } from './zone.js';

const zones = new Zones([
  {
    origin: 'receiver.test',
    records: [
      { name: 'receiver.test', type: 'MX', exchange: 'mx.receiver.test', priority: 10 },
      { name: 'mx.receiver.test', type: 'A', address: '127.0.0.5' },
      { name: 'receiver.test', type: 'TXT', data: 'v=spf1 -all' },
    ],
  },
]);
const NAMES = ['receiver.test', 'mx.receiver.test', 'nothing.receiver.test', 'elsewhere.test', '', 'a.b.c.d.e.f.g', 'x'.repeat(63) + '.receiver.test'];
const RSS_BOUND_MIB = 128;

/** A well-formed query (dns2 encodes it). */
const query = fc.record({ id: fc.integer({ min: 0, max: 0xfffe }), name: fc.constantFrom(...NAMES), type: fc.constantFrom(1, 2, 5, 6, 12, 15, 16, 28, 33, 255, 0, 65535), cls: fc.constantFrom(1, 3, 255, 0), rd: fc.boolean() }).map((q) => {
  const p = new Packet();
  p.header.id = q.id;
  p.header.rd = q.rd ? 1 : 0;
  p.questions.push(new Packet.Question(q.name, q.type, q.cls));
  return Buffer.from(p.toBuffer());
});

/** A query with bytes flipped, cut short, or with junk appended; or plain random bytes. */
const mutated = fc.oneof(
  fc.tuple(query, fc.array(fc.tuple(fc.nat(), fc.integer({ min: 0, max: 255 })), { maxLength: 6 }), fc.option(fc.nat()), binary(40)).map(([packet, flips, cut, tail]) => {
    const out = Buffer.from(packet);
    for (const [at, value] of flips) out[at % out.length] = value;
    const cutAt = cut === null ? out.length : cut % (out.length + 1);
    return Buffer.concat([out.subarray(0, cutAt), tail]);
  }),
  binary(600),
);

let server: RunningDnsServer;
let rssBefore: number;

beforeAll(async () => {
  server = await startDnsServer({ host: '127.0.0.1', port: 0, zones, log: () => undefined });
  rssBefore = rssMiB();
});

afterAll(async () => {
  await server?.close();
});

let sentinelId = 0xffff;

describe('DNS fuzzing', () => {
  it('answerQuery answers or declines whatever dns2 parses, never throws', () => {
    fc.assert(
      fc.property(mutated, (data) => {
        let packet: Packet;
        try {
          packet = Packet.parse(data);
        } catch {
          return; // dns2 refuses it: the server drops it (UDP) or closes (TCP)
        }
        const answered = answerQuery(zones, packet);
        if (answered) expect(answered.response.header.qr).toBe(1);
      }),
      fuzzParameters(1000, 3000),
    );
  });

  it('answerWithFaults, whichever fault fires, answers with a response that encodes, or on purpose not at all', () => {
    const kinds = fc.constantFrom<DnsFaultAction>(
      { kind: 'servfail' },
      { kind: 'refused' },
      { kind: 'nxdomain' },
      { kind: 'timeout' },
      { kind: 'truncate' },
      { kind: 'answer', records: [{ type: 'MX', data: '10 old.receiver.test' }, { type: 'TXT', data: 'x'.repeat(300) }] },
      { kind: 'ttl', ttl: 0 },
    );
    fc.assert(
      fc.property(mutated, kinds, fc.constantFrom('*.test', 'receiver.test', 'mx.receiver.test'), fc.constantFrom<'udp' | 'tcp'>('udp', 'tcp'), (data, action, name, transport) => {
        let packet: Packet;
        try {
          packet = Packet.parse(data);
        } catch {
          return;
        }
        const answered = answerWithFaults(zones, packet, new DnsFaultRules(1, [{ id: 'f', name, action, probability: 0.8 }]), transport);
        if (!answered) return;
        if (answered.response) expect(Packet.parse(answered.response.toBuffer()).header.qr).toBe(1);
        else expect(answered.fault?.effect).toBe('no answer');
      }),
      fuzzParameters(1000, 3000),
    );
  });

  it('over UDP: every reply parses as a response, and a well-formed query sent after a batch is answered', async () => {
    const socket = dgram.createSocket('udp4');
    await new Promise<void>((resolve) => socket.bind(0, '127.0.0.1', resolve));
    const replies: Buffer[] = [];
    socket.on('message', (msg) => replies.push(msg));
    const send = (data: Buffer) => new Promise<void>((resolve, reject) => socket.send(data, server.endpoint.port, '127.0.0.1', (err) => (err ? reject(err) : resolve())));
    try {
      await fc.assert(
        fc.asyncProperty(fc.array(mutated, { minLength: 1, maxLength: 8 }), async (batch) => {
          replies.length = 0;
          for (const data of batch) await send(data);
          // The server answers datagrams in order: once the sentinel's answer is here, so is every earlier answer.
          const sentinel = new Packet();
          sentinel.header.id = sentinelId = sentinelId === 0xffff ? 0xfff0 : sentinelId + 1;
          sentinel.questions.push(new Packet.Question('mx.receiver.test', Packet.TYPE.A, Packet.CLASS.IN));
          const id = sentinel.header.id;
          const answered = new Promise<void>((resolve, reject) => {
            const timer = setTimeout(() => reject(new Error(`no answer to a well-formed query after ${batch.map((b) => b.toString('hex')).join(' ')}`)), 3000);
            const check = (msg: Buffer) => {
              if (msg.length >= 2 && msg.readUInt16BE(0) === id) {
                clearTimeout(timer);
                socket.off('message', check);
                resolve();
              }
            };
            socket.on('message', check);
          });
          await send(Buffer.from(sentinel.toBuffer()));
          await answered;
          for (const reply of replies) {
            const parsed = Packet.parse(reply);
            expect(parsed.header.qr, `a reply to ${batch.map((b) => b.toString('hex')).join(' ')}`).toBe(1);
          }
        }),
        fuzzParameters(300, 4000),
      );
    } finally {
      socket.close();
    }
  });

  it('over TCP: arbitrary frames close or answer the connection; a fresh connection is answered after each', async () => {
    const frames = fc.array(fc.oneof(mutated.map((d) => Buffer.concat([Buffer.from([d.length >> 8, d.length & 0xff]), d])), binary(100)), { minLength: 1, maxLength: 4 });
    await fc.assert(
      fc.asyncProperty(frames, async (batch) => {
        await new Promise<void>((resolve) => {
          const socket = net.connect(server.endpoint.port, '127.0.0.1', () => socket.end(Buffer.concat(batch)));
          const timer = setTimeout(() => socket.destroy(), 500);
          socket.on('error', () => undefined);
          socket.on('close', () => {
            clearTimeout(timer);
            resolve();
          });
          socket.resume();
        });
        expect(await tcpQuery(server.endpoint.port, 'mx.receiver.test')).toBe(Packet.RCODE.NOERROR);
      }),
      fuzzParameters(150, 4000),
    );
  });

  it('keeps memory bounded', () => {
    expect(rssMiB() - rssBefore, 'RSS growth in MiB').toBeLessThan(RSS_BOUND_MIB);
  });
});

/** One query over a fresh TCP connection; resolves with the answer's rcode. */
function tcpQuery(port: number, name: string): Promise<number> {
  const p = new Packet();
  p.header.id = 42;
  p.questions.push(new Packet.Question(name, Packet.TYPE.A, Packet.CLASS.IN));
  const data = Buffer.from(p.toBuffer());
  return new Promise((resolve, reject) => {
    const socket = net.connect(port, '127.0.0.1', () => socket.write(Buffer.concat([Buffer.from([data.length >> 8, data.length & 0xff]), data])));
    let got = Buffer.alloc(0);
    const timer = setTimeout(() => {
      socket.destroy();
      reject(new Error('no TCP answer within 3 s'));
    }, 3000);
    socket.on('data', (d) => {
      got = Buffer.concat([got, d]);
      if (got.length >= 2 && got.length >= 2 + got.readUInt16BE(0)) {
        clearTimeout(timer);
        socket.destroy();
        resolve(Packet.parse(got.subarray(2, 2 + got.readUInt16BE(0))).header.rcode);
      }
    });
    socket.on('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
  });
}
