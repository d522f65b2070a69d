// The harness's public entry: everything a scenario uses comes from here.
export { Lab, StartedLab, type ExternalHost, type SendOptions, type SendResult } from './lab.js';
export { NodeHandle } from './node-handle.js';
export { defineLab, planLab, DEFAULT_EXTERNAL_READY_TIMEOUT_MS, type DomainDefinition, type ExternalHostDefinition, type HostDefinition, type LabDefinition, type LabTlsDefinition, type MxTarget, type TransportDefinition } from './topology.js';
export { CERTIFICATE_FAULTS, WRONG_NAME, type CertificateFault } from './tls/ca.js';
export { LAB_RETRY, PRODUCTION_RETRY } from '../shared/retry.js';
export { History, WaitTimeoutError, formatEvent, normalizeMessageId, seedLine, type EventMatcher, type WaitOptions } from './history/history.js';
export { NEMESIS, allEventKinds, type EventKind, type EventOf, type HarnessEvents, type HistoryEvent } from './events.js';
export { checkMailDns, createZoneResolver, formatFindings, mailDnsInputOf, type DkimSelectorRef, type Finding, type MailDnsInput, type SendingHost, type Severity } from './checkers/mail-dns.js';
export { CheckFailure, checkMailDnsSound, checkDeliveredOnce, checkHopOrder, checkNoneLost, checkRetrySchedule, waitForEmptyQueue, type CheckOptions, type CheckTarget, type OwedMessage } from './checkers/index.js';
export { checkDeliveryGuarantees, checkFlagsConverge, checkGreylistPassed, checkNoMisdelivery, duplicateCause, type DeliveryReport, type DeliveryTarget, type DuplicateCause, type DuplicateDelivery } from './checkers/guarantees.js';
export { smtpDialogue, type DialogueOptions, type ProbeReply } from './clients/probe.js';
export type { ImapDevice, Pop3Device } from './clients/devices.js';
export { createRuntime, resolveRuntime, runtimeFromEnvironment, type RuntimeChoice, type RuntimeKind } from './runtime/index.js';
export type { LabEvent } from '../shared/events.js';
export { headerSection, headerValue, messageIdOf } from '../shared/headers.js';
export { describeStep, labFaultAdapter, runTimeline, startTimeline, targetKey, TimelineError, undoOf, validateTimeline, type FaultAdapter, type NodeFaultAction, type StepReport, type Timeline, type TimelineAction, type TimelineLab, type TimelineOptions, type TimelineReport, type TimelineStep, type TimelineTrigger } from './timeline.js';
export { chaosSchedule, formatSchedule, runChaos, ChaosFailure, CHAOS_KINDS, type ChaosKind, type ChaosLab, type ChaosReport, type ChaosRunOptions, type ChaosSchedule, type ChaosScheduleOptions } from './chaos.js';
