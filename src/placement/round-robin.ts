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
  const total = upstreams.reduce((a, u) => a + u.weight / g, 0)
  // nginx's walk compares every upstream at every step: O(total x upstreams), seconds for
  // 10,000 upstreams. Upstreams of one weight keep equal `current` values except for those
  // already picked in the class's present round (lower by `total`), and are picked in index
  // order, so it is enough to compare one candidate per distinct weight: its next member.
  // Same schedule (ties: the lowest index), O(total x distinct weights).
  const classOf = new Map<number, number>()
  const weight: number[] = []
  const members: number[][] = []
  for (let i = 0; i < upstreams.length; i++) {
    const w = upstreams[i]!.weight / g
    let c = classOf.get(w)
    if (c === undefined) {
      c = weight.length
      classOf.set(w, c)
      weight.push(w)
      members.push([])
    }
    members[c]!.push(i)
  }
  const classes = weight.length
  const current = new Array<number>(classes).fill(0) // of the class's members not picked this round
  const next = new Array<number>(classes).fill(0) // position in members of the next one to pick
  const schedule = new Uint32Array(total)
  for (let n = 0; n < total; n++) {
    let best = 0
    let bestI = -1
    for (let c = 0; c < classes; c++) {
      current[c]! += weight[c]!
      const i = members[c]![next[c]!]!
      if (bestI < 0 || current[c]! > current[best]! || (current[c] === current[best] && i < bestI)) {
        best = c
        bestI = i
      }
    }
    schedule[n] = bestI
    if (++next[best]! === members[best]!.length) {
      next[best] = 0
      current[best]! -= total
    }
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
