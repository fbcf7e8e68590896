// The node options Tether's worker processes start with: the primary's own, plus V8 flags
// that keep a worker's memory small (a smaller young generation), each unless the operator set
// that flag already (node's command line or NODE_OPTIONS, which a worker inherits: an explicit
// flag is never overridden). Layer 1, pure: reads nothing, the caller passes argv and the env.

/**
 * V8 flags added for workers. `--max-semi-space-size` (MB) caps V8's young generation, which
 * grows to 16 MB a semi-space (two of them) in a busy worker: at 1M users over two workers the
 * new space went 64 -> 16 MB (422 instead of 462 MB in all) for about 2% more CPU per request,
 * within the noise; 2 MB cost ~8% for 5 MB less (docs/workers.md, Memory).
 */
export const WORKER_V8_FLAGS: readonly string[] = ['--max-semi-space-size=4']

/**
 * The `execArgv` a worker is forked with: `execArgv` (the primary's node options, e.g. a
 * loader) then each flag of `flags` whose name neither `execArgv` nor `nodeOptions` (the
 * NODE_OPTIONS environment variable) names. V8 treats `-` and `_` in a flag's name alike.
 * Example: `workerExecArgv(['--enable-source-maps'], '--max-semi-space-size=8')`
 * -> `['--enable-source-maps']` (the operator's 8 MB stands); with `undefined` ->
 * `['--enable-source-maps', '--max-semi-space-size=4']`.
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
