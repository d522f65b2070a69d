// maillab's package entry (`import { defineLab, Lab } from 'maillab'`): the harness, the default lab, and the
// contract of every role (its operations and the detail of its events), so a user's code is typed end to end.
export * from './harness/index.js';
export { loadLabFile } from './harness/lab-file.js';
export { default as defaultLab } from '../lab/default.js';
export type { DkimSigningConfig, DnsRecord, NodeConfig, RetryConfig, Role, UserConfig, ZoneConfig } from './shared/config.js';
export type * as Dns from './dns/api.js';
export type * as Mta from './mta/api.js';
export type * as Mx from './mx/api.js';
export type * as Mailbox from './mailbox/api.js';
export type * as LinkProxy from './proxy/api.js';
export { formatOffset, formatTraceTable, summarizeEvent, traceRows, type TraceRow, type TraceTableOptions } from './vitest/trace-table.js';
export { RECORD_META_KEY, type LabTestRecord, type ReceivedChain } from './report/record.js';
export { parseEmail, type ParsedEmail, type EmailAddress, type EmailAttachment } from './harness/messages.js';
export { waitForQueue, waitForSettled, unsettled, STATE_POLL_MS, type StateWaitOptions, type Unsettled, type QueueSource } from './harness/settle.js';
export type { ResolvableType, ResolvedAnswer, SoaAnswer } from './harness/resolve.js';
