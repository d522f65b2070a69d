// `maillab/vitest`: the lab glue for vitest scenario files. The matchers are registered by `maillab/vitest/setup`
// (a vitest setupFiles entry); their types come with this module.
export { labUnderTest, useLab, LAB_HOOK_TIMEOUT_MS, LAB_TEST_TIMEOUT_MS, TRACE_ANNOTATION, type UseLabOptions } from './use-lab.js';
export { maillabMatchers, registerMaillabMatchers, type AuthenticationExpectation, type BouncedOptions, type DeferredOptions, type DeliveredOptions, type MaillabMatchers, type MatcherLab, type MessageRef, type NoDuplicatesOptions, type WaitOption } from './matchers.js';
