// A module loaded on first use instead of at start (issue 17: a node greets sooner when heavy code it needs only for
// mail, such as mailauth, is not compiled and run before it listens). The bundle puts a dynamically imported module in
// a chunk of its own, so nothing of it is read until then.

/**
 * `load` called once, on the first call of the returned function; later calls share its promise. A failed load is not
 * kept: the next call tries again (and a caller sees the import's own error, naming the module).
 */
export function lazyModule<T>(load: () => Promise<T>): () => Promise<T> {
  let loading: Promise<T> | undefined;
  return () => {
    loading ??= load().catch((err: unknown) => {
      loading = undefined;
      throw err;
    });
    return loading;
  };
}

/**
 * The exports of a CommonJS module loaded with `import()`. Its named exports are what static analysis of the file
 * finds, which for some modules (mailauth's) is nothing once bundled; `default` is always its `module.exports`.
 */
export function commonJsExports<T extends object>(namespace: T): T {
  return (namespace as { default?: T }).default ?? namespace;
}
