// Where a worker_threads entry module is, for code that runs from the compiled package or from the
// TypeScript sources (tests, tsx): from sources the worker first registers the same loader.

/** The URL to start a Worker with for module `name` (no extension) beside the module at `base` (its import.meta.url). */
export function workerEntryUrl(base: string, name: string): URL {
  const fromSource = base.endsWith('.ts');
  const url = new URL(`./${name}${fromSource ? '.ts' : '.js'}`, base);
  return fromSource
    ? new URL(`data:text/javascript,${encodeURIComponent(`const { register } = await import(${JSON.stringify(import.meta.resolve('tsx/esm/api'))}); register(); await import(${JSON.stringify(url.href)});`)}`)
    : url;
}
