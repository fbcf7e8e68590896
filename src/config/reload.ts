// What a config reload may change while Tether runs, and what needs a restart. Pure: compares
// two validated configs, no I/O. The composition root applies the result.
import type { Config } from './schema.js'

/** What a reload applied, and which sections changed but need a restart. */
export interface ReloadResult {
  readonly applied: string[]
  readonly needsRestart: string[]
  /**
   * The keys that changed in the sections of `needsRestart` (e.g. `limits.max_header_bytes`,
   * `forwarding.upstream_header`): what the operator changed that waits for a restart (values
   * are never listed: some are secrets).
   */
  readonly restartKeys?: string[]
}

/**
 * Compare the running config with `next`. Live: upstreams (minimal disruption, affinity kept;
 * not when discovery changes too, or forwarding.tls with a change that needs a restart),
 * retries, forwarding (but upstream_header), limits.max_body_bytes and
 * limits.max_requests_per_connection, timeouts.client_connection_max, log.access. Any other
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
    // (max_requests_per_connection: the listeners read it as each new connection begins)
    else if (key === 'limits' && !differs(restartLimits(current.limits), restartLimits(next.limits))) applied.push(key)
    // (client_connection_max: read as each new connection begins, as max_requests_per_connection)
    else if (key === 'timeouts' && !differs(restartTimeouts(current.timeouts), restartTimeouts(next.timeouts))) applied.push(key)
    // the log level is set when the logger is made, the session secret when the session records are
    else if (key === 'log' && current.log.level === next.log.level && current.log.session_secret === next.log.session_secret) applied.push(key)
    else needsRestart.push(key)
  }
  const restartKeys: string[] = []
  for (const key of needsRestart as (keyof Config)[]) changedKeys(current[key], next[key], key, restartKeys)
  const effective: Config = {
    ...current,
    upstreams: applied.includes('upstreams') ? next.upstreams : current.upstreams,
    retries: next.retries,
    forwarding: applied.includes('forwarding') ? next.forwarding : current.forwarding,
    limits: applied.includes('limits') ? next.limits : current.limits,
    timeouts: applied.includes('timeouts') ? next.timeouts : current.timeouts,
    log: applied.includes('log') ? next.log : current.log,
  }
  return { applied, needsRestart, restartKeys, effective }
}

/** `limits` without the keys a reload applies: what must not differ for the section to be live. */
function restartLimits(limits: Config['limits']): Config['limits'] {
  return { ...limits, max_body_bytes: 0, max_requests_per_connection: 0 }
}

/** `timeouts` without the key a reload applies (see restartLimits). */
function restartTimeouts(timeouts: Config['timeouts']): Config['timeouts'] {
  return { ...timeouts, client_connection_max: 0 }
}

/** At most this many keys are listed (a whole section rewritten says enough with these). */
const MAX_KEYS = 20

/**
 * The paths of the leaves that differ between `a` and `b` under `path`, into `out`; a list
 * counts as one leaf. Example: `changedKeys({ a: 1, b: { c: 2 } }, { a: 1, b: { c: 3 } }, 'x', out)`
 * -> out `['x.b.c']`.
 */
function changedKeys(a: unknown, b: unknown, path: string, out: string[]): void {
  if (out.length >= MAX_KEYS || JSON.stringify(a) === JSON.stringify(b)) return
  const plain = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v)
  if (!plain(a) || !plain(b)) return void out.push(path)
  for (const k of new Set([...Object.keys(a), ...Object.keys(b)])) changedKeys(a[k], b[k], `${path}.${k}`, out)
}
