// The one container image every role of the docker runtime runs, built locally and hermetically: nothing is
// pulled. On Linux it is `FROM scratch` with the host's own Node.js binary, the shared libraries `ldd` lists for
// it (at the same absolute paths, the dynamic loader included) and the dist/node.js bundle. Elsewhere, or when
// MAILLAB_BASE_IMAGE is set, it is `FROM $MAILLAB_BASE_IMAGE` (an image with node, already present locally)
// with just the bundle.
//
// The tag is a content hash of every input (node binary, libraries, bundle and its map, Dockerfiles):
// `maillab-node:<hash12>`. When the engine already has that tag nothing is built. On the scratch path node and
// its libraries are an image of their own, `maillab-runtime:<hash12>`, that the node image is built on: a new
// bundle then costs one small layer and a build of about a second, not another 100 MB image.
//
// Real servers (issue 14): a node whose host runs Postfix or Dovecot (`server: 'postfix' | 'dovecot'`) runs from
// `maillab-real:<hash12>`, the same bundle on `maillab-real-base:<hash12>`: the servers' files from the host's own
// Debian packages, their libraries, the tools their scripts run and their /etc entries (real-image.ts), on the node
// runtime. Three layers, each cached by its content hash: a new bundle rebuilds only the top one. Where the host's
// binaries cannot serve (not Linux, MAILLAB_BASE_IMAGE), MAILLAB_REAL_BASE_IMAGE names an image with node, Postfix and
// Dovecot already in the engine, and the bundle goes on it.
//
// The build context is a tar stream made here (each file read from where it lives on the host), sent to the
// engine's API through testcontainers' dockerode client: no temporary directory, no docker CLI.
import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { createReadStream, existsSync, promises as fs } from 'node:fs';
import path from 'node:path';
import { Readable } from 'node:stream';
import { promisify } from 'node:util';
import { getContainerRuntimeClient, type ContainerRuntimeClient } from 'testcontainers';
import { NODE_V8_FLAGS } from '../../shared/node.js';
import { packageRoot } from './types.js';
import { realServerLayer, type RealLayerEntry } from './real-image.js';

export const IMAGE_REPOSITORY = 'maillab-node';
/** Node and its libraries alone, the layer under every `FROM scratch` node image. */
export const RUNTIME_REPOSITORY = 'maillab-runtime';
/** The image of real-server nodes (Postfix, Dovecot): the node image's content on top of the servers' layer. */
export const REAL_IMAGE_REPOSITORY = 'maillab-real';
/** The servers' layer alone (real-image.ts), on the node runtime: under every real-server image. */
export const REAL_BASE_REPOSITORY = 'maillab-real-base';
/** Where the image keeps the bundle, the node binary, the node's config file and the nodes' data volumes. */
export const IMAGE_PATHS = {
  app: '/app',
  bundle: '/app/node.js',
  node: '/usr/local/bin/node',
  config: '/config/node.json',
  dataRoot: '/var/maillab',
} as const;

export interface ImageOptions {
  /** The node bundle to put in the image; defaults to `<package>/dist/node.js` (its `.map` goes along). */
  bundle?: string;
  /** Build `FROM` this image (which must provide `node` and be present locally) instead of `FROM scratch`. */
  baseImage?: string;
  /** Progress messages ("building …", "built … in N s"). */
  log?: (message: string) => void;
  /**
   * The image of real-server nodes (`server: 'postfix' | 'dovecot'`): the servers' files from the host's packages
   * (real-image.ts) between the node runtime and the bundle, or `FROM` the user-given `realBaseImage`.
   */
  real?: boolean;
  /** Build real-server images `FROM` this image (node, Postfix and Dovecot in it, present locally); MAILLAB_REAL_BASE_IMAGE. */
  realBaseImage?: string;
}

export interface ImageFile {
  /** Absolute path inside the image. */
  target: string;
  /** Host file it is copied from (symbolic links followed); `(generated)` for `content`, `(link)` for `link`. */
  source: string;
  mode: number;
  size: number;
  sha256: string;
  /** A symbolic link to this path, instead of a file. */
  link?: string;
  /** The file's bytes, made here (an /etc/passwd of the image's own), instead of a host file. */
  content?: Buffer;
}

type FileInput = Pick<ImageFile, 'target' | 'source' | 'mode' | 'link' | 'content'>;

export interface ImagePlan {
  tag: string;
  /** Full content hash of the inputs (the tag holds its first 12 characters). */
  hash: string;
  /** `scratch`, the runtime image or the base image. */
  from: string;
  dockerfile: string;
  files: ImageFile[];
  /** Empty directories the image needs (target path and mode). */
  directories: { target: string; mode: number }[];
  /**
   * On the `FROM scratch` path: the image with just node and its libraries (`maillab-runtime:<hash12>`) that
   * the node image is built on, so a new bundle adds one small layer instead of another 100 MB image.
   */
  runtime?: ImagePlan;
  /** A real-server image's servers layer (`maillab-real-base:<hash12>`, on `runtime`), which the bundle goes on. */
  realBase?: ImagePlan;
}

/** Works out what goes into the image and its tag, without talking to an engine. */
export async function planImage(options: ImageOptions & { engine?: { os: string; architecture: string } } = {}): Promise<ImagePlan> {
  const bundle = path.resolve(options.bundle ?? path.join(packageRoot(), 'dist', 'node.js'));
  if (!existsSync(bundle)) throw new Error(`${bundle} is missing: run "npm run build" first`);
  const realBaseImage = options.real ? (options.realBaseImage ?? process.env.MAILLAB_REAL_BASE_IMAGE) : undefined;
  const base = realBaseImage ?? options.baseImage ?? process.env.MAILLAB_BASE_IMAGE ?? (hostBinaryFits(options.engine) ? undefined : `node:${process.versions.node.split('.')[0]}-slim`);
  if (options.real && base && !realBaseImage) {
    throw new Error(`real servers on the docker runtime need the host's own binaries (Linux, no MAILLAB_BASE_IMAGE) or MAILLAB_REAL_BASE_IMAGE: an image with node, Postfix and Dovecot (base image here: ${base})`);
  }

  let runtime: ImagePlan | undefined;
  let realBase: ImagePlan | undefined;
  if (!base) {
    const libraries = await sharedLibraries(process.execPath);
    runtime = await layer(
      RUNTIME_REPOSITORY,
      ['FROM scratch', 'COPY rootfs/ /', 'ENV PATH=/usr/local/bin'],
      [{ target: IMAGE_PATHS.node, source: process.execPath, mode: 0o755 }, ...libraries.map((lib) => ({ target: lib, source: lib, mode: 0o755 }))],
      [{ target: '/tmp', mode: 0o1777 }],
    );
    if (options.real) {
      const below = new Set(runtime.files.map((f) => f.target));
      realBase = await layer(
        REAL_BASE_REPOSITORY,
        [`FROM ${runtime.tag}`, 'COPY rootfs/ /', 'ENV PATH=/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin'],
        (await realLayerOnce(runtime.tag, below)).map(fileInput),
        [{ target: '/tmp', mode: 0o1777 }, { target: '/run', mode: 0o755 }],
      );
    }
  }
  const files: FileInput[] = [{ target: IMAGE_PATHS.bundle, source: bundle, mode: 0o644 }];
  if (existsSync(bundle + '.map')) files.push({ target: IMAGE_PATHS.bundle + '.map', source: bundle + '.map', mode: 0o644 });
  // The roles' chunks (see build.mjs), beside the entry point as in dist/.
  const chunks = path.join(path.dirname(bundle), 'node-chunks');
  if (existsSync(chunks)) {
    for (const name of (await fs.readdir(chunks)).sort()) {
      files.push({ target: path.posix.join(path.posix.dirname(IMAGE_PATHS.bundle), 'node-chunks', name), source: path.join(chunks, name), mode: 0o644 });
    }
  }
  // No --enable-source-maps (5 MiB per node); MAILLAB_SOURCE_MAPS=1 passes it through NODE_OPTIONS.
  const entrypoint = JSON.stringify([runtime ? IMAGE_PATHS.node : 'node', ...NODE_V8_FLAGS, IMAGE_PATHS.bundle]);
  const repository = options.real ? REAL_IMAGE_REPOSITORY : IMAGE_REPOSITORY;
  const plan = await layer(repository, [`FROM ${realBase?.tag ?? runtime?.tag ?? base}`, 'COPY rootfs/ /', `ENTRYPOINT ${entrypoint}`], files, [
    { target: '/config', mode: 0o755 },
    { target: IMAGE_PATHS.dataRoot, mode: 0o755 },
  ]);
  return { ...plan, ...(runtime ? { runtime } : {}), ...(realBase ? { realBase } : {}) };
}

const realLayers = new Map<string, Promise<RealLayerEntry[]>>();

/**
 * The servers' layer's entries, worked out once per process and node runtime (dpkg and ldd over every ELF take about
 * a second; the packages do not change during a run). The files' digests are still checked each time (fileDigest).
 */
function realLayerOnce(runtimeTag: string, below: ReadonlySet<string>): Promise<RealLayerEntry[]> {
  let entries = realLayers.get(runtimeTag);
  if (!entries) {
    entries = realServerLayer(below);
    realLayers.set(runtimeTag, entries);
    entries.catch(() => realLayers.delete(runtimeTag));
  }
  return entries;
}

function fileInput(entry: RealLayerEntry): FileInput {
  if ('link' in entry) return { target: entry.target, source: '(link)', mode: 0o777, link: entry.link };
  if ('content' in entry) return { target: entry.target, source: '(generated)', mode: entry.mode, content: entry.content };
  return entry;
}

/** One image of the plan: its Dockerfile, files and directories, tagged `<repository>:<hash12>` by their content. */
async function layer(repository: string, instructions: string[], files: FileInput[], directories: ImagePlan['directories']): Promise<ImagePlan> {
  const dockerfile = ['# generated by maillab (src/harness/runtime/images.ts)', ...instructions, ''].join('\n');
  const hashed = await Promise.all(files.map(async (f) => ({ ...f, ...(await inputDigest(f)) })));
  hashed.sort((a, b) => a.target.localeCompare(b.target));
  const hash = createHash('sha256');
  hash.update(`dockerfile\0${dockerfile}\0`);
  for (const d of directories) hash.update(`dir\0${d.target}\0${d.mode.toString(8)}\0`);
  for (const f of hashed) hash.update(f.link !== undefined ? `link\0${f.target}\0${f.link}\0` : `file\0${f.target}\0${f.mode.toString(8)}\0${f.sha256}\0`);
  const digest = hash.digest('hex');
  const from = /^FROM (\S+)/.exec(instructions[0] ?? '')?.[1] ?? 'scratch';
  return { tag: `${repository}:${digest.slice(0, 12)}`, hash: digest, from, dockerfile, files: hashed, directories };
}

/** Builds the node image (and the runtime image under it) unless the engine already has it; returns its tag. */
export async function ensureImage(options: ImageOptions = {}): Promise<string> {
  const client = await engineClient();
  const info = client.info.containerRuntime;
  const plan = await planImage({ ...options, engine: { os: info.operatingSystemType, architecture: info.architecture } });
  if (await imageExists(client, plan.tag)) return plan.tag;
  // Bottom up, each only when missing: node's runtime, the real servers' layer, then the bundle.
  for (const below of [plan.runtime, plan.realBase]) if (below && !(await imageExists(client, below.tag))) await buildOnce(client, below, options.log);
  await buildOnce(client, plan, options.log);
  return plan.tag;
}

/** One build per tag at a time in this process. */
async function buildOnce(client: ContainerRuntimeClient, plan: ImagePlan, log?: (message: string) => void): Promise<void> {
  let pending = building.get(plan.tag);
  if (!pending) {
    pending = buildImage(client, plan, log).finally(() => building.delete(plan.tag));
    building.set(plan.tag, pending);
  }
  await pending;
}

const building = new Map<string, Promise<void>>();

export interface ImageSummary {
  tag: string;
  id: string;
  created: Date;
  sizeBytes: number;
}

/** The maillab images the engine holds (node images, and runtime images with `runtime: true`), newest first. */
export async function listImages(options: { runtime?: boolean } = {}): Promise<ImageSummary[]> {
  const client = await engineClient();
  const images = await client.container.dockerode.listImages({ filters: JSON.stringify({ label: ['maillab=1'] }) });
  return images
    .flatMap((i) =>
      (i.RepoTags ?? [])
        .filter(
          (t) =>
            t.startsWith(`${IMAGE_REPOSITORY}:`) ||
            t.startsWith(`${REAL_IMAGE_REPOSITORY}:`) ||
            (options.runtime === true && (t.startsWith(`${RUNTIME_REPOSITORY}:`) || t.startsWith(`${REAL_BASE_REPOSITORY}:`))),
        )
        .map((tag) => ({ tag, id: i.Id, created: new Date(i.Created * 1000), sizeBytes: i.Size })),
    )
    .sort((a, b) => b.created.getTime() - a.created.getTime());
}

async function engineClient(): Promise<ContainerRuntimeClient> {
  try {
    return await getContainerRuntimeClient();
  } catch (err) {
    const where = process.env.DOCKER_HOST ?? 'unix:///var/run/docker.sock';
    throw new Error(`no Docker engine answers at ${where}: start dockerd (${err instanceof Error ? err.message : String(err)})`, { cause: err });
  }
}

async function imageExists(client: ContainerRuntimeClient, tag: string): Promise<boolean> {
  try {
    await client.container.dockerode.getImage(tag).inspect();
    return true;
  } catch (err) {
    if ((err as { statusCode?: number }).statusCode === 404) return false;
    throw err;
  }
}

async function buildImage(client: ContainerRuntimeClient, plan: ImagePlan, log?: (message: string) => void): Promise<void> {
  const started = Date.now();
  const bytes = plan.files.reduce((sum, f) => sum + f.size, 0);
  log?.(`building ${plan.tag} FROM ${plan.from} (${plan.files.length} files, ${(bytes / 1e6).toFixed(1)} MB)`);
  const docker = client.container.dockerode;
  const context = Readable.from(buildContext(plan));
  const stream = await docker.buildImage(context, {
    t: plan.tag,
    dockerfile: 'Dockerfile',
    labels: { maillab: '1', 'maillab.inputs': plan.hash, 'maillab.node-version': process.version },
    rm: true,
    forcerm: true,
  });
  const output = await new Promise<{ stream?: string; error?: string; errorDetail?: { message?: string } }[]>((resolve, reject) =>
    docker.modem.followProgress(stream, (err: Error | null, result: unknown[]) => (err ? reject(err) : resolve(result as never))),
  );
  const failure = output.find((o) => o.error || o.errorDetail);
  if (failure) {
    const transcript = output.map((o) => o.stream ?? '').join('').trim();
    const ours = plan.from === 'scratch' || [RUNTIME_REPOSITORY, REAL_BASE_REPOSITORY].some((r) => plan.from.startsWith(`${r}:`));
    const variable = plan.tag.startsWith(`${REAL_IMAGE_REPOSITORY}:`) ? 'MAILLAB_REAL_BASE_IMAGE' : 'MAILLAB_BASE_IMAGE';
    const hint = ours ? '' : ` (the base image ${plan.from} must be in the engine already, or pullable: load it, or unset ${variable} on Linux)`;
    throw new Error(`building image ${plan.tag} failed: ${failure.errorDetail?.message ?? failure.error}${hint}\n${transcript}`);
  }
  if (!(await imageExists(client, plan.tag))) throw new Error(`building image ${plan.tag} reported success but the engine has no such image`);
  log?.(`built ${plan.tag} in ${((Date.now() - started) / 1000).toFixed(1)} s`);
}

/** The build context as a tar stream: the Dockerfile and rootfs/ (every file at its path in the image). */
async function* buildContext(plan: ImagePlan): AsyncGenerator<Buffer> {
  const dockerfile = Buffer.from(plan.dockerfile);
  yield tarHeader({ name: 'Dockerfile', mode: 0o644, size: dockerfile.length, type: 'file' });
  yield dockerfile;
  yield tarPadding(dockerfile.length);
  const dirs = new Map<string, number>();
  const addParents = (target: string) => {
    for (let dir = path.posix.dirname(target); dir !== '/'; dir = path.posix.dirname(dir)) if (!dirs.has(dir)) dirs.set(dir, 0o755);
  };
  for (const d of plan.directories) {
    addParents(d.target);
    dirs.set(d.target, d.mode);
  }
  for (const f of plan.files) addParents(f.target);
  yield tarHeader({ name: 'rootfs/', mode: 0o755, size: 0, type: 'dir' });
  for (const [dir, mode] of [...dirs].sort(([a], [b]) => a.localeCompare(b))) yield tarHeader({ name: `rootfs${dir}/`, mode, size: 0, type: 'dir' });
  for (const f of plan.files) {
    if (f.link !== undefined) {
      yield tarHeader({ name: `rootfs${f.target}`, mode: 0o777, size: 0, type: 'link', link: f.link });
      continue;
    }
    if (f.content) {
      yield tarHeader({ name: `rootfs${f.target}`, mode: f.mode, size: f.content.length, type: 'file' });
      yield f.content;
      yield tarPadding(f.content.length);
      continue;
    }
    const { size } = await fs.stat(f.source);
    if (size !== f.size) throw new Error(`${f.source} changed while the image was being built`);
    yield tarHeader({ name: `rootfs${f.target}`, mode: f.mode, size, type: 'file' });
    for await (const chunk of createReadStream(f.source)) yield chunk as Buffer;
    yield tarPadding(size);
  }
  yield Buffer.alloc(1024);
}

function tarHeader(entry: { name: string; mode: number; size: number; type: 'file' | 'dir' | 'link'; link?: string }): Buffer {
  const header = Buffer.alloc(512);
  let name = entry.name;
  let prefix = '';
  if (Buffer.byteLength(name) > 100) {
    // ustar: split at a slash into prefix (at most 155 bytes) and name (at most 100).
    const cut = [...name.matchAll(/\//g)].map((m) => m.index).find((i) => Buffer.byteLength(name.slice(i + 1)) <= 100);
    if (cut === undefined || Buffer.byteLength(name.slice(0, cut)) > 155) throw new Error(`path too long for the image context: ${entry.name}`);
    prefix = name.slice(0, cut);
    name = name.slice(cut + 1);
  }
  const octal = (value: number, length: number) => value.toString(8).padStart(length - 1, '0') + '\0';
  header.write(name, 0, 100, 'utf8');
  header.write(octal(entry.mode & 0o7777, 8), 100, 8, 'ascii');
  header.write(octal(0, 8), 108, 8, 'ascii'); // uid
  header.write(octal(0, 8), 116, 8, 'ascii'); // gid
  header.write(octal(entry.size, 12), 124, 12, 'ascii');
  header.write(octal(0, 12), 136, 12, 'ascii'); // mtime: fixed, the content decides
  header.write('        ', 148, 8, 'ascii'); // checksum placeholder
  header.write(entry.type === 'dir' ? '5' : entry.type === 'link' ? '2' : '0', 156, 1, 'ascii');
  if (entry.link !== undefined) {
    if (Buffer.byteLength(entry.link) > 100) throw new Error(`link target too long for the image context: ${entry.name} -> ${entry.link}`);
    header.write(entry.link, 157, 100, 'utf8');
  }
  header.write('ustar\u000000', 257, 8, 'ascii');
  header.write('root', 265, 32, 'ascii');
  header.write('root', 297, 32, 'ascii');
  header.write(prefix, 345, 155, 'utf8');
  let sum = 0;
  for (const byte of header) sum += byte;
  header.write(sum.toString(8).padStart(6, '0') + '\0 ', 148, 8, 'ascii');
  return header;
}

function tarPadding(size: number): Buffer {
  return Buffer.alloc((512 - (size % 512)) % 512);
}

/** Whether the host's node binary can run in the engine's containers (same OS and CPU). */
function hostBinaryFits(engine: { os: string; architecture: string } | undefined): boolean {
  if (process.platform !== 'linux') return false;
  if (!engine) return true;
  const arch: Record<string, string[]> = { x64: ['x86_64', 'amd64'], arm64: ['aarch64', 'arm64'], arm: ['armv7l', 'arm'], ppc64: ['ppc64le'], s390x: ['s390x'] };
  return engine.os.toLowerCase() === 'linux' && (arch[process.arch] ?? [process.arch]).includes(engine.architecture.toLowerCase());
}

/** The shared libraries (absolute paths, the dynamic loader included) `ldd` lists for a binary. */
export async function sharedLibraries(binary: string): Promise<string[]> {
  let stdout: string;
  try {
    ({ stdout } = await promisify(execFile)('ldd', [binary], { encoding: 'utf8' }));
  } catch (err) {
    const e = err as NodeJS.ErrnoException & { stdout?: string; stderr?: string };
    if (/not a dynamic executable|statically linked/.test(`${e.stdout ?? ''}${e.stderr ?? ''}`)) return [];
    throw new Error(
      `cannot list the shared libraries of ${binary} with ldd (${e.code === 'ENOENT' ? 'ldd is not installed' : e.message.trim()}): ` +
        'set MAILLAB_BASE_IMAGE to a local image with node instead (e.g. node:20-slim)',
    );
  }
  const libs = new Set<string>();
  for (const line of stdout.split('\n')) {
    if (/=>\s*not found/.test(line)) throw new Error(`ldd ${binary}: ${line.trim()}`);
    const match = /=>\s*(\/\S+)/.exec(line) ?? /^\s*(\/\S+)\s+\(0x/.exec(line);
    if (match?.[1]) libs.add(match[1]);
  }
  return [...libs].sort();
}

const digests = new Map<string, { key: string; size: number; sha256: string }>();

/** size and sha256 of one input: a link's target, generated bytes, or a host file. */
async function inputDigest(f: FileInput): Promise<{ size: number; sha256: string }> {
  if (f.link !== undefined) return { size: 0, sha256: createHash('sha256').update(f.link).digest('hex') };
  if (f.content) return { size: f.content.length, sha256: createHash('sha256').update(f.content).digest('hex') };
  return fileDigest(f.source);
}

/** sha256 and size of a file, remembered per process while its size, mtime and inode stay the same. */
async function fileDigest(file: string): Promise<{ size: number; sha256: string }> {
  const stat = await fs.stat(file);
  const key = `${stat.dev}:${stat.ino}:${stat.size}:${stat.mtimeMs}`;
  const known = digests.get(file);
  if (known?.key === key) return known;
  const hash = createHash('sha256');
  for await (const chunk of createReadStream(file)) hash.update(chunk as Buffer);
  const result = { key, size: stat.size, sha256: hash.digest('hex') };
  digests.set(file, result);
  return result;
}
