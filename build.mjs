// Builds what the package ships (dist/): the node entry point, the library entries, their type declarations, and the
// Mermaid browser bundle the HTML report inlines. Run by `npm install` in a checkout (prepare) and before `npm pack`.
import { build } from 'esbuild';
import { execFileSync } from 'node:child_process';
import { copyFileSync, existsSync, rmSync } from 'node:fs';
import { createRequire } from 'node:module';

const require = createRequire(import.meta.url);

// Chunk names change with their content: start from empty folders so no stale chunk lingers (or lands in an image).
rmSync('dist/node-chunks', { recursive: true, force: true });
rmSync('dist/lib-chunks', { recursive: true, force: true });
rmSync('dist/types', { recursive: true, force: true });

// Source maps name files and lines in stack traces; without sources inlined, they stay small enough to ship.
const common = { bundle: true, platform: 'node', target: 'node20', format: 'esm', sourcemap: true, sourcesContent: false, logLevel: 'warning',
  banner: { js: "import { createRequire as __cr } from 'node:module'; const require = __cr(import.meta.url);" } };

/**
 * Packages stay imports (the user's npm installs them), except those bundled in: dns2 declares Node >= 22 in its
 * engines while it runs on Node 20 (the lab DNS is tested there), and a dependent project would get an EBADENGINE
 * warning for it. Bundled, it is maillab's own code.
 */
const BUNDLED_PACKAGES = ['dns2'];
const packagesExternal = {
  name: 'packages-external',
  setup(b) {
    b.onResolve({ filter: /^[^./]/ }, (args) => {
      const name = args.path.startsWith('@') ? args.path.split('/').slice(0, 2).join('/') : args.path.split('/')[0];
      return BUNDLED_PACKAGES.includes(name) ? undefined : { path: args.path, external: true };
    });
  },
};

/**
 * mailauth's BIMI check, left out of the node bundle: the MX runs `authenticate` with `disableBimi` (BIMI is not part
 * of the lab's checks), yet mailauth loads its BIMI module on import, and with it undici and @postalsys/vmc (an X.509
 * root store built at load): a third of the MX's start-up (bench, issue 17). In their place, a module whose functions
 * throw, naming why, should anything ever call them.
 */
const withoutBimi = {
  name: 'without-bimi',
  setup(b) {
    b.onResolve({ filter: /^\.\/bimi(\/validate-svg)?$/ }, (args) => (/[\\/]mailauth[\\/]lib$/.test(args.resolveDir) ? { path: args.path, namespace: 'without-bimi' } : undefined));
    b.onLoad({ filter: /.*/, namespace: 'without-bimi' }, () => ({
      contents: `const off = (name) => () => { throw new Error('mailauth ' + name + ': BIMI is left out of the maillab node bundle (build.mjs); the MX calls authenticate with disableBimi'); };
module.exports = { bimi: off('bimi'), validateVMC: off('validateVMC'), validateSvg: off('validateSvg') };`,
      loader: 'js',
    }));
  },
};

// The library's entries share chunks, so `maillab` and `maillab/vitest` hold the same classes and module state.
const libraryEntries = {
  index: 'src/index.ts',
  vitest: 'src/vitest/index.ts',
  cli: 'src/cli/main.ts',
  ...(existsSync('src/vitest/setup.ts') ? { 'vitest-setup': 'src/vitest/setup.ts' } : {}),
  ...(existsSync('src/report/reporter.ts') ? { reporter: 'src/report/reporter.ts' } : {}),
};

await Promise.all([
  // Minified and split by role (chunks in dist/node-chunks/): every node process parses only its own role's
  // code at start-up, and boot time is a feature. Self-contained: it is what the container image runs.
  build({ ...common, entryPoints: { node: 'src/node-main.ts' }, outdir: 'dist', minify: true, keepNames: true, splitting: true, chunkNames: 'node-chunks/[name]-[hash]', plugins: [withoutBimi] }),
  build({ ...common, entryPoints: libraryEntries, outdir: 'dist', splitting: true, chunkNames: 'lib-chunks/[name]-[hash]', plugins: [packagesExternal] }),
  build({ ...common, entryPoints: { bench: 'bench/bench.ts', 'bench-peer-check': 'bench/peer-check.ts', 'bench-snapshot': 'bench/snapshot.ts' }, outdir: 'dist', packages: 'external' }),
]);

// The report inlines Mermaid's browser bundle (it must work offline): shipped in dist/, so users need no mermaid install.
copyFileSync(require.resolve('mermaid/dist/mermaid.min.js'), 'dist/mermaid.min.js');
copyFileSync(require.resolve('mermaid/LICENSE'), 'dist/mermaid.LICENSE');

// Type declarations of the public entries (tsc follows their imports), for users' TypeScript. Skipped where
// TypeScript is not installed (it is a devDependency; the published package holds the declarations).
if (process.env.MAILLAB_BUILD_TYPES !== '0' && existsSync('node_modules/typescript')) {
  execFileSync(process.execPath, ['node_modules/typescript/bin/tsc', '-p', 'tsconfig.build.json'], { stdio: 'inherit' });
}
