// The scenarios use the lab glue users get from `maillab/vitest` (src/vitest/use-lab.ts).
import defaultLab from '../../lab/default.js';

export { defaultLab };
export { labUnderTest, useLab, type UseLabOptions } from '../../src/vitest/use-lab.js';
