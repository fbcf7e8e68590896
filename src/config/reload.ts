// What a config reload may change while Tether runs, and what needs a restart. Pure: compares
// two validated configs, no I/O. The composition root applies the result.
import type { Config } from './schema.js'

/** What a reload applied, and which sections changed but need a restart. */
export interface ReloadResult {
  readonly applied: string[]
  readonly needsRestart: string[]
}

/**
 * Compare the running config with `next`. Live: upstreams (minimal disruption, affinity kept),
 * retries, forwarding (but upstream_header), limits.max_body_bytes, log.access. Any other
 * change is reported as needing a restart and the running value is kept in `effective`.
 * Example: only `retries.attempts` changed -> `{ applied: ['retries'], needsRestart: [], effective }`.
 */
export function diffConfig(current: Config, next: Config): ReloadResult & { readonly effective: Config } {
  const applied: string[] = []
  const needsRestart: string[] = []
  const differs = (a: unknown, b: unknown): boolean => JSON.stringify(a) !== JSON.stringify(b)
  for (const key of Object.keys(next) as (keyof Config)[]) {
    if (!differs(current[key], next[key])) continue
    if (key === 'upstreams' || key === 'retries') applied.push(key)
    else if (key === 'forwarding' && !differs(current.forwarding.upstream_header, next.forwarding.upstream_header)) applied.push(key)
    else if (key === 'limits' && !differs({ ...current.limits, max_body_bytes: 0 }, { ...next.limits, max_body_bytes: 0 })) applied.push(key)
    // the log level is set when the logger is made, the session secret when the session records are
    else if (key === 'log' && current.log.level === next.log.level && current.log.session_secret === next.log.session_secret) applied.push(key)
    else needsRestart.push(key)
  }
  const effective: Config = {
    ...current,
    upstreams: next.upstreams,
    retries: next.retries,
    forwarding: applied.includes('forwarding') ? next.forwarding : current.forwarding,
    limits: applied.includes('limits') ? next.limits : current.limits,
    log: applied.includes('log') ? next.log : current.log,
  }
  return { applied, needsRestart, effective }
}
