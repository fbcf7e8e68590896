// Weighted round-robin placement for requests that carry no affinity key. Pure: the
// schedule is built once per upstream set (smooth weighted round-robin, as nginx's
// ngx_http_upstream_get_peer), then each pick is O(1): one array read and a cursor step.

export interface WeightedUpstream {
  readonly id: string
  readonly weight: number
}

/**
 * One full cycle of smooth weighted round-robin, as indexes into `upstreams`.
 * Example: weights a=2, b=1 -> [a, b, a]; a=5, b=1, c=1 -> [a, a, b, a, c, a, a].
 * Weights are reduced by their gcd first, so the cycle is as short as it can be.
 */
export function roundRobinSchedule(upstreams: readonly WeightedUpstream[]): Uint32Array {
  const g = upstreams.reduce((acc, u) => gcd(acc, u.weight), 0) || 1
  const weights = upstreams.map((u) => u.weight / g)
  const total = weights.reduce((a, b) => a + b, 0)
  const current = new Array<number>(upstreams.length).fill(0)
  const schedule = new Uint32Array(total)
  for (let n = 0; n < total; n++) {
    let best = 0
    for (let i = 0; i < weights.length; i++) {
      current[i]! += weights[i]!
      if (current[i]! > current[best]!) best = i
    }
    current[best]! -= total
    schedule[n] = best
  }
  return schedule
}

function gcd(a: number, b: number): number {
  while (b) [a, b] = [b, a % b]
  return a
}

/** A cursor over a schedule; the only mutable part, owned by the request path. */
export class RoundRobin {
  readonly #schedule: Uint32Array
  #next = 0
  constructor(upstreams: readonly WeightedUpstream[]) {
    this.#schedule = roundRobinSchedule(upstreams)
  }
  /** Index of the next upstream, or -1 when there are none. */
  next(): number {
    const s = this.#schedule
    if (s.length === 0) return -1
    const i = s[this.#next]!
    this.#next = this.#next + 1 === s.length ? 0 : this.#next + 1
    return i
  }
}
