// What a config reload may change while Tether runs, and what needs a restart. Pure: compares
// two validated configs, no I/O. The composition root applies the result.
import type { Config } from './schema.js'

/** What a reload applied, and which sections changed but need a restart. */
export interface ReloadResult {
  readonly applied: string[]
  readonly needsRestart: string[]
}

/**
 * Compare the running config with `next`. Live: upstreams (minimal disruption, affinity kept;
 * not when discovery changes too, or forwarding.tls with a change that needs a restart),
 * retries, forwarding (but upstream_header), limits.max_body_bytes, log.access. Any other
 * change is reported as needing a restart and the running value is kept in `effective`.
 * Example: only `retries.attempts` changed -> `{ applied: ['retries'], needsRestart: [], effective }`.
 */
export function diffConfig(current: Config, next: Config): ReloadResult & { readonly effective: Config } {
  const applied: string[] = []
  const needsRestart: string[] = []
  const differs = (a: unknown, b: unknown): boolean => JSON.stringify(a) !== JSON.stringify(b)
  const forwardingLive = !differs(current.forwarding.upstream_header, next.forwarding.upstream_header)
  // the static list goes with what it is read with: a discovery change (which needs a restart)
  // would else leave the new list alone (a switch to `upstreams: []` plus discovery: no upstream
  // at all), and `forwarding.tls` is merged into each upstream's TLS when the file is read
  const upstreamsLive = !differs(current.discovery, next.discovery) && (forwardingLive || !differs(current.forwarding.tls, next.forwarding.tls))
  for (const key of Object.keys(next) as (keyof Config)[]) {
    if (!differs(current[key], next[key])) continue
    if (key === 'retries' || (key === 'upstreams' && upstreamsLive)) applied.push(key)
    else if (key === 'forwarding' && forwardingLive) applied.push(key)
    else if (key === 'limits' && !differs({ ...current.limits, max_body_bytes: 0 }, { ...next.limits, max_body_bytes: 0 })) applied.push(key)
    // the log level is set when the logger is made, the session secret when the session records are
    else if (key === 'log' && current.log.level === next.log.level && current.log.session_secret === next.log.session_secret) applied.push(key)
    else needsRestart.push(key)
  }
  const effective: Config = {
    ...current,
    upstreams: applied.includes('upstreams') ? next.upstreams : current.upstreams,
    retries: next.retries,
    forwarding: applied.includes('forwarding') ? next.forwarding : current.forwarding,
    limits: applied.includes('limits') ? next.limits : current.limits,
    log: applied.includes('log') ? next.log : current.log,
  }
  return { applied, needsRestart, effective }
}
