// Record types on the wire beyond what dns2 knows, in one place for the lab server and the lab's TLSA client.
//
// dns2 has no TLSA (RFC 6698) type: `Packet.TYPE` lacks it and `Packet.typeName(52)` says `TYPE52`. It does handle
// any type it has no codec for the RFC 3597 way: a parsed record of such a type keeps its RDATA as a Buffer in
// `data`, and a record with a Buffer `data` is encoded as exactly those octets. So TLSA travels as raw RDATA built
// and read here, without patching dns2.
import { Packet } from 'dns2';
import type { RecordType } from './api.js';

/** Type codes dns2 does not have (RFC 6698 §7.1: TLSA is 52). */
const EXTRA_TYPES = { TLSA: 52 } as const;

const EXTRA_NAMES = new Map<number, string>(Object.entries(EXTRA_TYPES).map(([name, code]) => [code, name]));

export const TLSA_TYPE = EXTRA_TYPES.TLSA;

/** The type code of a type the lab serves. */
export function typeCode(type: RecordType): number {
  return type === 'TLSA' ? EXTRA_TYPES.TLSA : Packet.TYPE[type];
}

/** The mnemonic of a type code, TLSA included; RFC 3597 `TYPE<n>` for the ones neither dns2 nor the lab knows. */
export function typeName(code: number): string {
  return EXTRA_NAMES.get(code) ?? Packet.typeName(code);
}

/** The fields of a TLSA record as on the wire (RFC 6698 §2.1). */
export interface TlsaAnswer {
  usage: number;
  selector: number;
  matchingType: number;
  /** Certificate association data. */
  data: Buffer;
}

/** TLSA RDATA: certificate usage, selector, matching type (one octet each), then the association data. */
export function encodeTlsaRdata(record: { usage: number; selector: number; matchingType: number; data: string }): Buffer {
  return Buffer.concat([Buffer.from([record.usage, record.selector, record.matchingType]), Buffer.from(record.data, 'hex')]);
}

/** Reads TLSA RDATA; RFC 6698 §2.1 needs the three octets and at least one of data, anything shorter throws. */
export function decodeTlsaRdata(rdata: Buffer): TlsaAnswer {
  if (rdata.length < 4) throw new Error(`TLSA RDATA of ${rdata.length} octet(s) is shorter than the 4 it needs at least`);
  return { usage: rdata[0]!, selector: rdata[1]!, matchingType: rdata[2]!, data: Buffer.from(rdata.subarray(3)) };
}
