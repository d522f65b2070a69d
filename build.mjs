// Bundles the CLI and the node entry point with esbuild. The node bundle is self-contained (it is what the
// container image runs); the CLI keeps heavy harness dependencies (vitest, testcontainers) external.
import { build } from 'esbuild';

const common = { bundle: true, platform: 'node', target: 'node20', format: 'esm', sourcemap: true, logLevel: 'warning',
  banner: { js: "import { createRequire as __cr } from 'node:module'; const require = __cr(import.meta.url);" } };

await Promise.all([
  build({ ...common, entryPoints: { node: 'src/node-main.ts' }, outdir: 'dist' }),
  build({ ...common, entryPoints: { cli: 'src/cli/main.ts' }, outdir: 'dist', packages: 'external' }),
]);
