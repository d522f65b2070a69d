export { Lab, StartedLab, NodeHandle, type SendOptions, type SendResult, type QueueEntry } from './lab.js';
export { History, formatEvent, normalizeMessageId, type EventMatcher } from './history/history.js';
export { defineLab, LAB_RETRY, planLab, type LabDefinition, type HostDefinition, type DomainDefinition } from './topology.js';
export type { LabEvent } from '../shared/events.js';
