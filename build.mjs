// Bundles the CLI and the node entry point with esbuild. The node bundle is self-contained (it is what the
// container image runs); the CLI keeps heavy harness dependencies (vitest, testcontainers) external.
import { build } from 'esbuild';
import { rmSync } from 'node:fs';

// Chunk names change with their content: start from an empty folder so no stale chunk lingers (or lands in an image).
rmSync('dist/node-chunks', { recursive: true, force: true });

const common = { bundle: true, platform: 'node', target: 'node20', format: 'esm', sourcemap: true, logLevel: 'warning',
  banner: { js: "import { createRequire as __cr } from 'node:module'; const require = __cr(import.meta.url);" } };

await Promise.all([
  // Minified and split by role (chunks in dist/node-chunks/): every node process parses only its own role's
  // code at start-up, and boot time is a feature.
  build({ ...common, entryPoints: { node: 'src/node-main.ts' }, outdir: 'dist', minify: true, keepNames: true, splitting: true, chunkNames: 'node-chunks/[name]-[hash]' }),
  build({ ...common, entryPoints: { cli: 'src/cli/main.ts', bench: 'bench/bench.ts', 'bench-peer-check': 'bench/peer-check.ts' }, outdir: 'dist', packages: 'external' }),
]);
