// Membership: the current set of upstreams, from the static list in proxy.yaml and from
// discovery. An upstream that disappears from discovery is not dropped at once: it drains
// (no new users; its users stay until idle or `drain_timeout`), then leaves. Layer 2 state
// owner: it decides the set and publishes one frozen snapshot per change; it does no
// proxying and no I/O. Its removal timers are injected and cancelled by stop().
import type { UpstreamConfig } from '../config/schema.js'
import { systemTimers, type Timers } from '../clock.js'
import { upstreamSet, type UpstreamSet } from './upstream-set.js'

export interface MembershipHooks {
  /** The effective set changed. */
  onChange(upstreams: UpstreamSet): void
  /** Start / stop draining an upstream (the health table owns the flag). */
  drain(id: string): void
  undrain(id: string): void
}

/**
 * Example: static [a]; discovery gives [b, c] -> set [a, b, c]; discovery then gives [c] ->
 * b drains, still in the set; `drainTimeout` later -> set [a, c]. If b comes back while
 * draining, it is undrained and stays. A reload replaces the static list (setStatic).
 */
export class Membership {
  #static: readonly UpstreamConfig[]
  readonly #drainTimeout: number
  readonly #hooks: MembershipHooks
  readonly #timers: Timers
  #discovered = new Map<string, UpstreamConfig>()
  /** Upstreams gone from discovery, still draining: id -> (config, removal timer). */
  readonly #leaving = new Map<string, { upstream: UpstreamConfig; timer: unknown }>()
  #current: UpstreamSet

  constructor(staticUpstreams: readonly UpstreamConfig[], drainTimeout: number, hooks: MembershipHooks, timers: Timers = systemTimers) {
    this.#static = staticUpstreams
    this.#drainTimeout = drainTimeout
    this.#hooks = hooks
    this.#timers = timers
    this.#current = this.#compute()
  }

  /** The effective set: static, discovered and leaving upstreams (static wins on an id clash). */
  current(): UpstreamSet {
    return this.#current
  }

  /** Apply a new discovery answer. */
  setDiscovered(upstreams: readonly UpstreamConfig[]): void {
    const next = new Map(upstreams.map((u) => [u.id, u]))
    for (const [id, u] of this.#discovered) {
      if (next.has(id) || this.#isStatic(id)) continue
      this.#hooks.drain(id)
      const timer = this.#timers.setTimeout(() => this.#leave(id), this.#drainTimeout)
      this.#leaving.set(id, { upstream: u, timer })
    }
    for (const id of next.keys()) {
      const leaving = this.#leaving.get(id)
      if (leaving === undefined) continue
      this.#timers.clearTimeout(leaving.timer)
      this.#leaving.delete(id)
      this.#hooks.undrain(id)
    }
    this.#discovered = next
    this.#publish()
  }

  /** Replace the static upstreams (config reload); discovered ones stay. */
  setStatic(upstreams: readonly UpstreamConfig[]): void {
    this.#static = upstreams
    this.#publish()
  }

  /** Cancel pending removals (on shutdown). */
  stop(): void {
    for (const { timer } of this.#leaving.values()) this.#timers.clearTimeout(timer)
  }

  #leave(id: string): void {
    if (!this.#leaving.delete(id)) return
    this.#publish()
  }

  #publish(): void {
    this.#current = this.#compute()
    this.#hooks.onChange(this.#current)
  }

  #compute(): UpstreamSet {
    const all = new Map<string, UpstreamConfig>()
    for (const { upstream } of this.#leaving.values()) all.set(upstream.id, upstream)
    for (const u of this.#discovered.values()) all.set(u.id, u)
    for (const u of this.#static) all.set(u.id, u)
    return upstreamSet([...all.values()])
  }

  #isStatic(id: string): boolean {
    return this.#static.some((u) => u.id === id)
  }
}
