// The node options (and the environment) Tether's serving processes start with. A single process (`workers: 1`) gets
// SERVING_V8_FLAGS from whoever starts node (the Docker image's ENTRYPOINT, the benchmark
// scripts; V8 reads them only at start-up; the `npm start` demo does not bother). Worker processes get the primary's own options plus
// WORKER_V8_FLAGS, each unless the operator set that flag already (node's command line or
// NODE_OPTIONS, which a worker inherits: an explicit flag is never overridden). Layer 1, pure:
// reads nothing, the caller passes argv and the env.

/**
 * V8 flags for a process that serves traffic. `--min-semi-space-size` (MB) keeps V8's young
 * generation from shrinking below 4 MB a semi-space when the process is idle. Without it, after
 * 40 s without traffic it was down to 1 MB, and the first seconds of load then scavenged every
 * 10-15 ms, promoted short-lived request objects to the old generation and paid for that with
 * two full GCs of 10-25 ms each (a 6,650 req/s paced run, pinned: p99 18.5-34 ms, two full
 * GCs in the window; with 4 MB, 3.6-8.9 ms and none; with 16 MB, 2.7-3.9 ms on a quieter
 * host; the bare undici pipe 2.9 ms; docs/configuration.md, Node flags). 4 rather than 16: the
 * image also starts a workers' primary (which serves nothing) with it, and at 16 that primary
 * held 87 MB RSS at 1M users instead of 65 (417 instead of 396 MB in all); a single process
 * keeps ~6 MB more while idle.
 */
export const SERVING_V8_FLAGS: readonly string[] = ['--min-semi-space-size=4']

/**
 * V8 flags added for workers. `--max-semi-space-size` (MB) caps V8's young generation, which
 * grows to 16 MB a semi-space (two of them) in a busy worker: at 1M users over two workers the
 * new space went 64 -> 16 MB (422 instead of 462 MB in all) for about 2% more CPU per request,
 * within the noise; 2 MB cost ~8% for 5 MB less (docs/workers.md, Memory). The minimum keeps
 * it at that size when idle (see SERVING_V8_FLAGS), also for a primary started without the
 * image's flags; V8 lowers a minimum above the cap to the cap. Not here:
 * `--heap-growing-percent=50` (the old generation's next limit 1.5x what a full GC left): at
 * 1M users it kept the workers' old space at 40 MB instead of 47-93, but it made the steady
 * state run full GCs (6 instead of 1 over 240,000 requests of 1,000 users) and its CPU cost per
 * request could not be shown to be within 2% (docs/workers.md, Memory, 2026-12-04).
 */
export const WORKER_V8_FLAGS: readonly string[] = ['--max-semi-space-size=4', '--min-semi-space-size=4']

/**
 * Environment variables for a process that serves traffic, each unless the operator set it:
 * `MALLOC_ARENA_MAX=1` keeps glibc's malloc to its one main arena. By default each thread that
 * allocates (V8's four platform threads: concurrent marking, sweeping, compilation; libuv's pool)
 * gets an arena of its own, and what those threads allocate and free for a while (GC worklists,
 * compilation zones) stayed there as free memory no other thread could reuse: 4 such arenas a
 * worker of ~1.8 MB RSS each with 20-90 KB in use (`malloc_stats()` at 200,000 users). With one
 * arena the main thread reuses that free memory (the key arena's pages, the columns), and at
 * 1,000,000 users the two workers held 10-18 MB less in all (three runs; CPU the same within
 * 1%: docs/workers.md, Memory, 2026-12-05). The primary forks its workers with it (workerEnv), and the
 * Docker image sets it for every process; a process started otherwise (`node dist/cli.js`) runs
 * with glibc's default unless its environment sets it. glibc reads it at start-up only.
 */
export const SERVING_ENV: Readonly<Record<string, string>> = { MALLOC_ARENA_MAX: '1' }

/**
 * The variables of {@link SERVING_ENV} that `env` (the primary's environment, which its workers
 * inherit) does not set: an operator's value always wins, also one given as a glibc tunable
 * (`GLIBC_TUNABLES=glibc.malloc.arena_max=4`). Example: `workerEnv({})` -> `{ MALLOC_ARENA_MAX: '1' }`;
 * `workerEnv({ MALLOC_ARENA_MAX: '2' })` -> `{}`.
 */
export function workerEnv(env: Readonly<Record<string, string | undefined>>): Record<string, string> {
  const tunables = env['GLIBC_TUNABLES'] ?? ''
  return Object.fromEntries(Object.entries(SERVING_ENV).filter(([name]) => env[name] === undefined && !(name === 'MALLOC_ARENA_MAX' && /(^|:)glibc\.malloc\.arena_max=/.test(tunables))))
}

/**
 * The `execArgv` a worker is forked with: `execArgv` (the primary's node options, e.g. a
 * loader) then each flag of `flags` whose name neither `execArgv` nor `nodeOptions` (the
 * NODE_OPTIONS environment variable) names. V8 treats `-` and `_` in a flag's name alike.
 * Example: `workerExecArgv(['--enable-source-maps'], '--max-semi-space-size=8')`
 * -> `['--enable-source-maps', '--min-semi-space-size=4']` (the operator's 8 MB stands); with
 * `undefined` -> `['--enable-source-maps', '--max-semi-space-size=4', '--min-semi-space-size=4']`.
 */
export function workerExecArgv(execArgv: readonly string[], nodeOptions: string | undefined, flags: readonly string[] = WORKER_V8_FLAGS): string[] {
  const given = new Set([...execArgv, ...nodeOptionArgs(nodeOptions ?? '')].map(flagName).filter((n) => n !== ''))
  return [...execArgv, ...flags.filter((f) => !given.has(flagName(f)))]
}

/** NODE_OPTIONS split as node splits it: at white space, a double-quoted part kept whole (`\"` inside). */
function nodeOptionArgs(options: string): string[] {
  return [...options.matchAll(/"((?:\\.|[^"\\])*)"|(\S+)/g)].map((m) => m[1] !== undefined ? m[1].replace(/\\(.)/g, '$1') : m[2]!)
}

/** `--max_semi-space-size=4` -> 'max-semi-space-size'; '' for what is no flag. */
function flagName(arg: string): string {
  if (!arg.startsWith('--')) return ''
  return arg.slice(2).split('=', 1)[0]!.replace(/_/g, '-')
}
