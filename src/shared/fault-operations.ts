// The control operations that set faults (issue 15), apart from the shapes in faults.ts so that node configs
// (config.ts) can hold rules without importing the contract types (which import config.ts).
import type { NoArgs, Operation } from './contract.js';
import type { DnsFaultRule, DnsFaultRuleView, SmtpFaultRule, SmtpFaultRuleView, Toxic, ToxicView } from './faults.js';

/**
 * The control operations that set faults (each replaces the whole list, so a timeline step is one call and a
 * replay sets exactly what the schedule says). Roles with an SMTP or LMTP server of maillab's (mta, mx, mailbox)
 * offer the SMTP pair, the dns role the DNS pair, a link proxy the toxics pair.
 */
export type SmtpFaultOperations = {
  'set-smtp-faults': Operation<{ rules: SmtpFaultRule[] }, { rules: SmtpFaultRuleView[] }>;
  'smtp-faults': Operation<NoArgs, { rules: SmtpFaultRuleView[] }>;
};
export type DnsFaultOperations = {
  'set-dns-faults': Operation<{ rules: DnsFaultRule[] }, { rules: DnsFaultRuleView[] }>;
  'dns-faults': Operation<NoArgs, { rules: DnsFaultRuleView[] }>;
};
export type LinkToxicOperations = {
  'set-toxics': Operation<{ toxics: Toxic[] }, { toxics: ToxicView[] }>;
  toxics: Operation<NoArgs, { toxics: ToxicView[] }>;
};
