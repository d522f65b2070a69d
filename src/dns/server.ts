// The lab DNS server: dns2's UDP and TCP servers on one address and port, answering from a `Zones`.
//
// dns2's combined `createServer` is not used: its `listen` binds UDP and TCP independently, so with port 0 the two
// get different ports, and for TCP it drops the address when the port is 0 (net wants `host`, it passes
// `address`). Binding the two transports here keeps one endpoint for both.
//
// TLSA records (RFC 6698, for the MTA's DANE) are answered as type 52 with raw RDATA (wire.ts: dns2 has no TLSA
// codec but encodes a Buffer as the RDATA of a type it does not know), and TLSA queries are recognised by code.
//
// DNS faults (issue 15): with `faults`, every well-formed query first meets the fault rules (faults.ts); a rule that
// fires makes the answer (answerWithFaults), and `onFault` hears of it before `onQuery`.
import type { RemoteInfo } from 'node:dgram';
import { isIPv6, type AddressInfo, type Socket } from 'node:net';
import { Packet, createTCPServer, createUDPServer, type Resource, type TCPServer, type UDPServer } from 'dns2';
import type { Endpoint } from '../shared/config.js';
import type { DnsQueryInfo, DnsTransport, LookupResult, ZoneRecord } from './api.js';
import type { DnsFaultRule, FaultFired } from '../shared/faults.js';
import { answerRecord, type DnsFaultRules } from './faults.js';
import { encodeTlsaRdata, typeCode, typeName } from './wire.js';
import { DEFAULT_TTL, normalizeName, type Zones } from './zone.js';

export interface DnsServerOptions {
  host: string;
  /** 0 picks a free port (the same one for UDP and TCP). */
  port: number;
  zones: Zones;
  /** Fault rules applied before the zone answers (absent: none). */
  faults?: DnsFaultRules;
  onQuery?(query: DnsQueryInfo): void;
  /** A fault rule fired for a query (before its `onQuery`, which a `timeout` never has). */
  onFault?(fault: FaultFired): void;
  log?(message: string): void;
}

export interface RunningDnsServer {
  /** Where the server listens, with the actual port. */
  endpoint: Endpoint;
  close(): Promise<void>;
}

/** The UDP payload size the server advertises to EDNS clients (the DNS flag day 2020 value). */
const EDNS_UDP_PAYLOAD = 1232;

/** A TXT character-string holds at most 255 octets (RFC 1035 §3.3); longer text is split (RFC 7208 §3.3). */
const TXT_CHUNK = 255;

/** How much of a TXT record's text `describeRecord` shows. */
const TXT_SUMMARY = 100;

/** How many hex digits of a TLSA record's data `describeRecord` shows: enough to tell digests apart. */
const TLSA_SUMMARY = 16;

const RCODE_NAMES = new Map<number, string>();
for (const [name, code] of Object.entries(Packet.RCODE)) if (!RCODE_NAMES.has(code)) RCODE_NAMES.set(code, name);

export function rcodeName(code: number): string {
  return RCODE_NAMES.get(code) ?? `RCODE${code}`;
}

/** Splits text into character-strings of at most 255 UTF-8 octets, never inside a character. */
export function splitTxt(text: string): string[] {
  const chunks: string[] = [];
  let chunk = '';
  let size = 0;
  for (const char of text) {
    const bytes = Buffer.byteLength(char);
    if (size + bytes > TXT_CHUNK) {
      chunks.push(chunk);
      chunk = '';
      size = 0;
    }
    chunk += char;
    size += bytes;
  }
  chunks.push(chunk); // also makes empty text one empty string, as the wire format needs at least one
  return chunks;
}

/** One record as a short string for events and logs: `MX 10 mx.receiver.test`, `A 192.0.2.1`, `TXT "v=spf1 -all"`. */
export function describeRecord(record: ZoneRecord): string {
  switch (record.type) {
    case 'A':
    case 'AAAA':
      return `${record.type} ${record.address}`;
    case 'MX':
      return `MX ${record.priority} ${record.exchange}`;
    case 'TXT':
      // Keys (DKIM) run to hundreds of characters; events only need to recognize the record.
      return record.data.length > TXT_SUMMARY
        ? `TXT ${JSON.stringify(record.data.slice(0, TXT_SUMMARY))}... (${record.data.length} chars)`
        : `TXT ${JSON.stringify(record.data)}`;
    case 'CNAME':
    case 'PTR':
      return `${record.type} ${record.domain}`;
    case 'NS':
      return `NS ${record.ns}`;
    case 'SOA':
      return `SOA ${record.primary} ${record.admin} ${record.serial}`;
    case 'TLSA': {
      const data = record.data.length > TLSA_SUMMARY ? `${record.data.slice(0, TLSA_SUMMARY)}…` : record.data;
      return `TLSA ${record.usage} ${record.selector} ${record.matchingType} ${data}`;
    }
  }
}

/** A zone record as dns2 encodes it. */
function toResource(record: ZoneRecord): Resource {
  const common = { name: record.name, type: typeCode(record.type), class: Packet.CLASS.IN, ttl: record.ttl ?? DEFAULT_TTL };
  switch (record.type) {
    case 'A':
    case 'AAAA':
      return new Packet.Resource({ ...common, address: record.address });
    case 'MX':
      return new Packet.Resource({ ...common, priority: record.priority, exchange: record.exchange });
    case 'TXT':
      return new Packet.Resource({ ...common, data: splitTxt(record.data) });
    case 'CNAME':
    case 'PTR':
      return new Packet.Resource({ ...common, domain: record.domain });
    case 'NS':
      return new Packet.Resource({ ...common, ns: record.ns });
    case 'SOA': {
      const { primary, admin, serial, refresh, retry, expiration, minimum } = record;
      return new Packet.Resource({ ...common, primary, admin, serial, refresh, retry, expiration, minimum });
    }
    case 'TLSA':
      return new Packet.Resource({ ...common, data: encodeTlsaRdata(record) });
  }
}

export interface Answered {
  response: Packet;
  query: Omit<DnsQueryInfo, 'transport' | 'client'>;
}

/** The answer to a query the fault rules had their say on: `fault` is the rule that fired, if one did. */
export interface FaultedAnswer {
  /** Absent when the fault is no answer at all (`timeout`). */
  response?: Packet;
  query: Answered['query'];
  fault?: { rule: DnsFaultRule; effect: string };
}

/** A well-formed query's question and EDNS record, or the error answer to a malformed one. */
type Checked = { kind: 'query'; opt?: Resource; query: Answered['query'] } | { kind: 'answered'; answered: Answered };

function checkRequest(request: Packet): Checked | undefined {
  if (request.header.qr) return undefined;
  const question = request.questions[0];
  const query: Answered['query'] = {
    name: question ? normalizeName(String(question.name)) : '',
    type: question ? typeName(question.type) : '',
    rcode: 'NOERROR',
    answers: [],
  };
  const fail = (rcode: number): Checked => {
    query.rcode = rcodeName(rcode);
    return { kind: 'answered', answered: { response: Packet.createErrorResponseFromRequest(request, rcode), query } };
  };
  // A partly undecodable message, or not exactly one question (RFC 9619), is a format error.
  if (request.errors.length || request.questions.length !== 1 || !question) return fail(Packet.RCODE.FORMERR);
  if (request.header.opcode !== 0) return fail(Packet.RCODE.NOTIMP); // only QUERY; no NOTIFY, UPDATE...
  const opt = request.additionals.find((r) => r.type === Packet.TYPE.EDNS);
  if (opt && (opt.version ?? 0) > 0) return fail(Packet.RCODE.BADVERS); // RFC 6891 §6.1.3
  // Only the Internet class is served; CHAOS queries (version.bind and the like) are refused.
  if (question.class !== Packet.CLASS.IN && question.class !== Packet.CLASS.ANY) return fail(Packet.RCODE.REFUSED);
  return { kind: 'query', query, ...(opt ? { opt } : {}) };
}

/** The response carrying a lookup's result (the zone's, or the one a fault made up). */
function respond(request: Packet, opt: Resource | undefined, result: LookupResult, query: Answered['query']): Answered {
  const response = Packet.createResponseFromRequest(request);
  response.header.rcode = Packet.RCODE[result.rcode];
  response.header.aa = result.rcode === 'REFUSED' ? 0 : 1;
  response.header.ra = 0; // the lab server never recurses
  response.answers = result.answers.map(toResource);
  response.authorities = result.authority.map(toResource);
  if (opt) response.additionals.push(Packet.Resource.EDNS([], { udpPayloadSize: EDNS_UDP_PAYLOAD }));
  return { response, query: { ...query, rcode: result.rcode, answers: result.answers.map(describeRecord) } };
}

/**
 * The response to one request, transport aside; undefined when the message is itself a response (answering
 * those could make two servers bounce messages at each other forever).
 */
export function answerQuery(zones: Zones, request: Packet): Answered | undefined {
  const checked = checkRequest(request);
  if (!checked) return undefined;
  if (checked.kind === 'answered') return checked.answered;
  return respond(request, checked.opt, zones.lookup(checked.query.name, checked.query.type), checked.query);
}

/**
 * The response to one request after the fault rules (faults.ts) had their say. Only well-formed queries meet the
 * rules; what a fault answers (RFC 1035 §4.1.1, RFC 2308):
 * - `servfail`, `refused`: that rcode, no records; `nxdomain`: NXDOMAIN with the zone's SOA (negative caching);
 * - `timeout`: no response at all (the client's own timeout decides);
 * - `truncate` (UDP only): the TC bit, no records, so the client asks again over TCP;
 * - `answer`: NOERROR with the rule's records at the queried name; `ttl`: the zone's answer, every record with that TTL.
 */
export function answerWithFaults(zones: Zones, request: Packet, faults: DnsFaultRules, transport: DnsTransport): FaultedAnswer | undefined {
  const checked = checkRequest(request);
  if (!checked) return undefined;
  if (checked.kind === 'answered') return checked.answered;
  const { query, opt } = checked;
  const rule = faults.fire({ name: query.name, type: query.type, transport });
  const result = zones.lookup(query.name, query.type);
  if (!rule) return respond(request, opt, result, query);
  const error = (rcode: number, effect: string): FaultedAnswer => ({
    response: Packet.createErrorResponseFromRequest(request, rcode),
    query: { ...query, rcode: rcodeName(rcode), answers: [] },
    fault: { rule, effect },
  });
  const made = (lookup: LookupResult, effect: string): FaultedAnswer => ({ ...respond(request, opt, lookup, query), fault: { rule, effect } });
  const action = rule.action;
  switch (action.kind) {
    case 'servfail':
      return error(Packet.RCODE.SERVFAIL, 'SERVFAIL');
    case 'refused':
      return error(Packet.RCODE.REFUSED, 'REFUSED');
    case 'timeout':
      return { query, fault: { rule, effect: 'no answer' } };
    case 'nxdomain': {
      const soa = result.zone !== undefined ? zones.lookup(result.zone, 'SOA').answers : [];
      return made({ rcode: 'NXDOMAIN', answers: [], authority: soa, ...(result.zone !== undefined ? { zone: result.zone } : {}) }, 'NXDOMAIN');
    }
    case 'truncate': {
      const faulted = made({ ...result, answers: [], authority: [] }, 'TC over UDP');
      faulted.response!.header.tc = 1;
      return faulted;
    }
    case 'answer': {
      const records = action.records.map((r) => answerRecord(query.name, r));
      return made({ rcode: 'NOERROR', answers: records, authority: [] }, `answered ${records.map(describeRecord).join(', ') || 'no records'}`);
    }
    case 'ttl': {
      const ttl = action.ttl;
      return made({ ...result, answers: result.answers.map((r) => ({ ...r, ttl })), authority: result.authority.map((r) => ({ ...r, ttl })) }, `TTL ${ttl}`);
    }
  }
}

export async function startDnsServer(options: DnsServerOptions): Promise<RunningDnsServer> {
  const { host, zones } = options;
  const log = options.log ?? (() => {});
  const connections = new Set<Socket>();

  const handle = (request: Packet, send: (response: Packet) => unknown, transport: DnsTransport, client: string) => {
    let faulted: FaultedAnswer | undefined;
    try {
      faulted = options.faults ? answerWithFaults(zones, request, options.faults, transport) : answerQuery(zones, request);
    } catch (err) {
      log(`dns: error answering a query from ${client}: ${(err as Error).message}`);
      faulted = servfail(request);
    }
    if (!faulted) {
      // Over TCP a message must get a reply, or dns2 keeps the connection open waiting for it.
      if (transport === 'tcp') void reply(send, Packet.createErrorResponseFromRequest(request, Packet.RCODE.FORMERR), client);
      return;
    }
    if (faulted.fault) {
      const { rule, effect } = faulted.fault;
      options.onFault?.({ source: 'dns', rule: rule.id, action: rule.action.kind, stage: `${faulted.query.type} ${faulted.query.name}`, effect, client });
    }
    if (!faulted.response) return; // a timeout fault: no answer at all (over TCP the client gives up and closes)
    let outcome: Answered = { response: faulted.response, query: faulted.query };
    try {
      outcome.response.toBuffer(); // encode once here so a record dns2 cannot encode becomes a SERVFAIL, not a throw
    } catch (err) {
      log(`dns: cannot encode the answer for ${outcome.query.name} ${outcome.query.type}: ${(err as Error).message}`);
      outcome = servfail(request, outcome.query);
    }
    options.onQuery?.({ ...outcome.query, transport, client });
    void reply(send, outcome.response, client);
  };

  const reply = async (send: (response: Packet) => unknown, response: Packet, client: string) => {
    try {
      await send(response);
    } catch (err) {
      log(`dns: cannot send the answer to ${client}: ${(err as Error).message}`);
    }
  };

  const makeUdp = (): UDPServer => {
    const udp = createUDPServer({ type: isIPv6(host) ? 'udp6' : 'udp4' });
    udp.on('request', (request, send, client) => {
      const rinfo = client as RemoteInfo;
      handle(request, send, 'udp', formatAddress(rinfo.address, rinfo.port));
    });
    // Undecodable datagrams (shorter than a header...): dns2 drops them; a note is all they deserve.
    udp.on('requestError', (err) => log(`dns: dropped a malformed UDP message: ${err.message}`));
    return udp;
  };

  const makeTcp = (): TCPServer => {
    const tcp = createTCPServer();
    tcp.on('connection', (socket: Socket) => {
      connections.add(socket);
      socket.once('close', () => connections.delete(socket));
    });
    tcp.on('request', (request, send, client) => {
      const socket = client as Socket;
      handle(request, send, 'tcp', formatAddress(socket.remoteAddress ?? '?', socket.remotePort ?? 0));
    });
    // Framing errors and resets: dns2 has already destroyed that connection.
    tcp.on('requestError', (err) => log(`dns: TCP connection error: ${err.message}`));
    return tcp;
  };

  const { udp, tcp, port } = await bindBoth(host, options.port, makeUdp, makeTcp);
  udp.on('error', (err) => log(`dns: UDP socket error: ${err.message}`));
  tcp.on('error', (err) => log(`dns: TCP server error: ${err.message}`));

  let closing: Promise<void> | undefined;
  return {
    endpoint: { host, port },
    close() {
      closing ??= (async () => {
        const tcpClosed = new Promise<void>((resolve) => tcp.close(() => resolve()));
        for (const socket of connections) socket.destroy(); // pipelining clients may keep connections open
        await Promise.all([tcpClosed, new Promise<void>((resolve) => udp.close(() => resolve()))]);
      })();
      return closing;
    },
  };
}

function servfail(request: Packet, query?: Answered['query']): Answered {
  const response = Packet.createErrorResponseFromRequest(request, Packet.RCODE.SERVFAIL);
  const base = query ?? { name: request.questions[0] ? normalizeName(String(request.questions[0].name)) : '', type: request.questions[0] ? typeName(request.questions[0].type) : '' };
  return { response, query: { ...base, rcode: 'SERVFAIL', answers: [] } };
}

/**
 * Binds UDP, then TCP on the same port. With port 0 the UDP port is the kernel's choice and may be taken for
 * TCP, so that case retries with a fresh UDP port.
 */
async function bindBoth(
  host: string,
  port: number,
  makeUdp: () => UDPServer,
  makeTcp: () => TCPServer,
): Promise<{ udp: UDPServer; tcp: TCPServer; port: number }> {
  for (let attempt = 1; ; attempt++) {
    const udp = makeUdp();
    await new Promise<void>((resolve, reject) => {
      udp.once('error', reject);
      udp.bind(port, host, () => {
        udp.off('error', reject);
        resolve();
      });
    });
    const bound = udp.address().port;
    const tcp = makeTcp();
    try {
      await new Promise<void>((resolve, reject) => {
        tcp.once('error', reject);
        tcp.listen({ port: bound, host }, () => {
          tcp.off('error', reject);
          resolve();
        });
      });
      return { udp, tcp, port: (tcp.address() as AddressInfo).port };
    } catch (err) {
      await new Promise<void>((resolve) => udp.close(() => resolve()));
      if (port !== 0 || (err as NodeJS.ErrnoException).code !== 'EADDRINUSE' || attempt >= 20) throw err;
    }
  }
}

/** `address:port`, IPv6 addresses in brackets: how events name a client. */
export function formatAddress(address: string, port: number): string {
  return isIPv6(address) ? `[${address}]:${port}` : `${address}:${port}`;
}
