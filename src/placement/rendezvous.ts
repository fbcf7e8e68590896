// Placement by weighted rendezvous hashing over a fixed table of 2^16 buckets: key hash ->
// upstream index, and the key's full preference order for failover. Pure: no I/O, no clock, no
// randomness; built once per upstream set or weight change (derived from the previous table when
// few changed), then frozen apart from buckets computed on first lookup for big sets (the same
// values a full build gives). Health, "tried" and "full" arrive as an `accept` predicate.
// Why not Maglev or a ring: docs/placement.md (measured).

import { murmur3, murmur3U32 } from './hash.js'

/** One member of the upstream set as placement sees it: a stable id and an integer weight. */
export interface UpstreamWeight {
  /** Identity of the upstream (configured id or pod name), never its address. */
  readonly id: string
  /** Relative share of keys, an integer 1..1000. */
  readonly weight: number
}

/** A frozen mapping from key hashes to upstream indexes. */
export interface PlacementTable {
  /** Upstream ids sorted by UTF-16 code unit order; an upstream's index is its position here. */
  readonly ids: readonly string[]
  /** Bytes held by the lookup tables (typed arrays), for the bench and for metrics. */
  readonly tableBytes: number
  /**
   * First accepted upstream index in the key's preference order, or -1 if none is accepted
   * (or the set is empty). Without `accept`, the key's first choice. `accept` must be a pure,
   * cheap predicate (health, already tried, full); it may be called for only some upstreams.
   * Example: `pick(h)` -> 3; `pick(h, (i) => i !== 3)` -> the key's second choice, e.g. 7,
   * which is also where the key lands in a table rebuilt without upstream 3.
   */
  pick(hash: number, accept?: (index: number) => boolean): number
  /**
   * Writes the key's whole preference order (every upstream exactly once, best first) into
   * `out` and returns the count. For admin views and tests, not the request path: it sorts.
   * Example: 4 upstreams, `order(h, out)` -> 4 with out = [3, 0, 2, 1]; then `pick(h)` is 3
   * and `pick(h, (i) => i !== 3 && i !== 0)` is 2.
   */
  order(hash: number, out: Int32Array | number[]): number
  /**
   * Buckets whose first two this table computed over all its upstreams so far (each costs
   * O(upstreams) hashes): at build time, or lazily on a bucket's first lookup for big sets.
   * For the bench and tests: a one-upstream change derived from the previous table scans
   * only about 2/n of the buckets.
   */
  readonly scannedBuckets: number
  /** Index of the upstream with this id, or -1. */
  indexOf(id: string): number
  /** Weight of the upstream at `index`. */
  weightOf(index: number): number
  /** Sum of all the upstreams' weights (0 for an empty set). */
  readonly totalWeight: number
}

/**
 * log2 of the bucket count. Part of the compatibility contract: changing it moves users, so it
 * is pinned by the golden vectors. 2^16 buckets keep the busiest of 10 equal upstreams within
 * ~3% of the mean and the table at 256 KiB.
 */
export const BUCKET_BITS = 16

/** Seeds of the per-upstream score hashes (ASCII "TETH" and "RHRW"). Part of the contract. */
const SEED_SCORE = 0x54455448
const SEED_TIE = 0x52485257
/** Largest upstream set a table can index (indexes are stored as Uint16). */
export const MAX_UPSTREAMS = 0xffff
/** Smallest and largest accepted weight (integers). */
export const MIN_WEIGHT = 1
export const MAX_WEIGHT = 1000

const TWO_POW_MINUS_32 = 2 ** -32
/** `first[b]` of a bucket not computed yet (an index is at most MAX_UPSTREAMS - 1). */
const UNFILLED = 0xffff
/**
 * Largest buckets x upstreams a build computes up front (about 50 ms of hashing); above it,
 * each bucket's first two are computed on the bucket's first lookup (O(upstreams), about 30 us
 * at 10,000 upstreams), so a worker with a big upstream set starts, and answers, at once.
 */
const EAGER_HASHES = 2 ** 24
const C1 = 0xcc9e2d51
const C2 = 0x1b873593

/** For equal scores: does `i` rank before `j` in bucket `b`? A second hash, then the index. */
function tieBeats(seedTie: Int32Array, i: number, j: number, b: number): boolean {
  const yi = murmur3U32(b, seedTie[i]!)
  const yj = murmur3U32(b, seedTie[j]!)
  return yi !== yj ? yi > yj : i < j
}

/**
 * The bucket's half of `murmur3U32(b, seed)`: the mixed block, which does not depend on the
 * upstream. `scoreHash(blockOf(b), seed) === murmur3U32(b, seed)` (hash.ts, pinned by tests).
 */
function blockOf(b: number): number {
  let k = Math.imul(b, C1)
  k = (k << 15) | (k >>> 17)
  return Math.imul(k, C2)
}

/** The upstream's half: `murmur3U32(b, seed)` given `blockOf(b)` (hash.ts's fmix32 written out: calling it measured ~11% slower on a 10,000-upstream table's first lookups). */
function scoreHash(k: number, seed: number): number {
  let h = seed ^ k
  h = (h << 13) | (h >>> 19)
  h = ((Math.imul(h, 5) + 0xe6546b64) | 0) ^ 4
  h ^= h >>> 16
  h = Math.imul(h, 0x85ebca6b)
  h ^= h >>> 13
  h = Math.imul(h, 0xc2b2ae35)
  h ^= h >>> 16
  return h >>> 0
}

/** Score of upstream `i` in bucket `b` (`k = blockOf(b)`); higher ranks first. */
function scoreOf(k: number, seeds: Int32Array, inv: Float64Array, uniform: boolean, i: number): number {
  const x = scoreHash(k, seeds[i]!)
  return uniform ? x : Math.log((x + 0.5) * TWO_POW_MINUS_32) * inv[i]!
}

// The top two of one bucket, returned through these (no allocation per bucket).
let topFirst = 0
let topSecond = 0

/**
 * Winner and runner-up of bucket `b` among all `n` upstreams (n >= 2) into topFirst/topSecond.
 * Uniform weights rank by the raw hash (ln(u)/w is monotonic in u); weighted ones by
 * ln(u)/weight, skipping the logarithm when its bound ln(u) <= u - 1 already loses to the
 * runner-up (exact, not an approximation). O(upstreams).
 */
function scanBucket(b: number, seeds: Int32Array, seedTie: Int32Array, inv: Float64Array, uniform: boolean): void {
  const n = seeds.length
  const k = blockOf(b)
  let best = 0
  let next = 1
  let bestS = scoreOf(k, seeds, inv, uniform, 0)
  let nextS = scoreOf(k, seeds, inv, uniform, 1)
  if (nextS > bestS || (nextS === bestS && tieBeats(seedTie, 1, 0, b))) {
    best = 1
    next = 0
    const s = bestS
    bestS = nextS
    nextS = s
  }
  if (uniform) {
    for (let i = 2; i < n; i++) {
      const x = scoreHash(k, seeds[i]!)
      if (x < nextS) continue // most candidates: one hash, one comparison
      if (x > bestS || (x === bestS && tieBeats(seedTie, i, best, b))) {
        next = best
        nextS = bestS
        best = i
        bestS = x
      } else if (x > nextS || tieBeats(seedTie, i, next, b)) {
        next = i
        nextS = x
      }
    }
  } else {
    for (let i = 2; i < n; i++) {
      const u = (scoreHash(k, seeds[i]!) + 0.5) * TWO_POW_MINUS_32
      const w = inv[i]!
      if ((u - 1) * w < nextS) continue
      const s = Math.log(u) * w
      if (s < nextS) continue
      if (s > bestS || (s === bestS && tieBeats(seedTie, i, best, b))) {
        next = best
        nextS = bestS
        best = i
        bestS = s
      } else if (s > nextS || tieBeats(seedTie, i, next, b)) {
        next = i
        nextS = s
      }
    }
  }
  topFirst = best
  topSecond = next
}

class RendezvousTable implements PlacementTable {
  readonly ids: readonly string[]
  readonly tableBytes: number
  readonly totalWeight: number
  readonly #n: number
  readonly #shift: number
  readonly #weights: Uint16Array
  /** ln-weight divisor per upstream: 1 / weight. */
  readonly #invWeights: Float64Array
  readonly #seedScore: Int32Array
  readonly #seedTie: Int32Array
  /** True when every weight is equal: rank by raw hash, no logarithms. */
  readonly #uniform: boolean
  /** Best and second-best upstream per bucket. */
  readonly #first: Uint16Array
  readonly #second: Uint16Array
  readonly #byId: ReadonlyMap<string, number>
  #scans = 0

  constructor(sorted: readonly UpstreamWeight[], bucketBits: number, previous: RendezvousTable | null) {
    const n = sorted.length
    const buckets = 2 ** bucketBits
    this.#n = n
    this.#shift = 32 - bucketBits
    this.ids = Object.freeze(sorted.map((u) => u.id))
    this.#byId = new Map(sorted.map((u, i) => [u.id, i]))
    this.#weights = Uint16Array.from(sorted, (u) => u.weight)
    let totalWeight = 0
    for (const u of sorted) totalWeight += u.weight
    this.totalWeight = totalWeight
    this.#invWeights = Float64Array.from(sorted, (u) => 1 / u.weight)
    this.#seedScore = new Int32Array(n)
    this.#seedTie = new Int32Array(n)
    this.#uniform = sorted.every((u) => u.weight === sorted[0]!.weight)
    this.#first = new Uint16Array(n === 0 ? 0 : buckets)
    this.#second = new Uint16Array(n === 0 ? 0 : buckets)
    const prevIndex = previous === null || previous.#shift !== this.#shift ? null : previous.#byId
    for (let i = 0; i < n; i++) {
      const id = sorted[i]!.id
      const j = prevIndex?.get(id)
      // the seeds depend on the id only: reuse the previous table's (a string hash each saved)
      this.#seedScore[i] = j === undefined ? murmur3(id, SEED_SCORE) : previous!.#seedScore[j]!
      this.#seedTie[i] = j === undefined ? murmur3(id, SEED_TIE) : previous!.#seedTie[j]!
    }
    if (n > 1 && !(previous !== null && prevIndex !== null && this.#derive(previous))) {
      if (n * buckets > EAGER_HASHES) this.#first.fill(UNFILLED)
      else for (let b = 0; b < buckets; b++) this.#fill(b)
    }
    this.tableBytes =
      this.#first.byteLength +
      this.#second.byteLength +
      this.#weights.byteLength +
      this.#invWeights.byteLength +
      this.#seedScore.byteLength +
      this.#seedTie.byteLength
    Object.freeze(this)
  }

  /**
   * Fills first/second from the previous table when few upstreams changed, or returns false
   * (then the caller scans every bucket). Exact, because rendezvous ranks each upstream by its
   * own (id, weight) score per bucket, whatever else is in the set (ties: the tie hash, then the
   * index, whose order between two ids is the same in both tables, both sorted by id): a bucket
   * whose first two both stay keeps them unless an added upstream outranks one (two scores per
   * added upstream); a bucket that lost one of its first two (about 2/n of the buckets per
   * removed upstream) is rescanned. A changed weight counts as removed and added. Cost
   * O(buckets x (added + 2 x removed)) hashes, against O(buckets x upstreams) for a full build.
   */
  #derive(previous: RendezvousTable): boolean {
    if (previous.#n < 2 || previous.#uniform !== this.#uniform) return false
    const n = this.#n
    const oldN = previous.#n
    // old index -> new index, -1 if removed (or its weight changed); new indexes with no old one
    const toNew = new Int32Array(oldN).fill(-1)
    const added: number[] = []
    for (let i = 0; i < n; i++) {
      const j = previous.#byId.get(this.ids[i]!)
      if (j !== undefined && previous.#weights[j] === this.#weights[i]) toNew[j] = i
      else added.push(i)
    }
    const removed = oldN - (n - added.length)
    if (2 * removed + added.length >= n / 2) return false // about as dear as a full build
    const seeds = this.#seedScore
    const seedTie = this.#seedTie
    const inv = this.#invWeights
    const uniform = this.#uniform
    const first = this.#first
    const second = this.#second
    const oldFirst = previous.#first
    const oldSecond = previous.#second
    const buckets = first.length
    for (let b = 0; b < buckets; b++) {
      const oldF = oldFirst[b]!
      if (oldF === UNFILLED) {
        first[b] = UNFILLED // still not needed: computed on its first lookup
        continue
      }
      let f = toNew[oldF]!
      let s = toNew[oldSecond[b]!]!
      if (f < 0 || s < 0) {
        this.#fill(b)
        continue
      }
      if (added.length > 0) {
        const k = blockOf(b)
        let fS = scoreOf(k, seeds, inv, uniform, f)
        let sS = scoreOf(k, seeds, inv, uniform, s)
        for (let a = 0; a < added.length; a++) {
          const i = added[a]!
          const x = scoreOf(k, seeds, inv, uniform, i)
          if (x < sS) continue
          if (x > fS || (x === fS && tieBeats(seedTie, i, f, b))) {
            s = f
            sS = fS
            f = i
            fS = x
          } else if (x > sS || tieBeats(seedTie, i, s, b)) {
            s = i
            sS = x
          }
        }
      }
      first[b] = f
      second[b] = s
    }
    return true
  }

  /** Computes bucket `b`'s first two (n >= 2) and returns the first. */
  #fill(b: number): number {
    this.#scans++
    scanBucket(b, this.#seedScore, this.#seedTie, this.#invWeights, this.#uniform)
    this.#second[b] = topSecond
    return (this.#first[b] = topFirst)
  }

  get scannedBuckets(): number {
    return this.#scans
  }

  /** Score of upstream `i` in bucket `b`; higher ranks first. Uniform: the raw hash. */
  #score(i: number, b: number): number {
    return scoreOf(blockOf(b), this.#seedScore, this.#invWeights, this.#uniform, i)
  }

  #tieBeats(i: number, j: number, b: number): boolean {
    return tieBeats(this.#seedTie, i, j, b)
  }

  pick(hash: number, accept?: (index: number) => boolean): number {
    if (this.#n === 0) return -1
    const b = hash >>> this.#shift
    let p = this.#first[b]!
    if (p === UNFILLED) p = this.#fill(b)
    if (accept === undefined || accept(p)) return p
    if (this.#n === 1) return -1
    const q = this.#second[b]!
    if (accept(q)) return q
    // Rare path (both of the key's first two choices rejected): rendezvous over the rest.
    // `accept` is asked only about upstreams that outrank the best accepted one seen so far.
    let best = -1
    let bestS = 0
    for (let i = 0; i < this.#n; i++) {
      if (i === p || i === q) continue
      const s = this.#score(i, b)
      if (best < 0 || s > bestS || (s === bestS && this.#tieBeats(i, best, b))) {
        if (accept(i)) {
          best = i
          bestS = s
        }
      }
    }
    return best
  }

  order(hash: number, out: Int32Array | number[]): number {
    const n = this.#n
    if (n === 0) return 0
    const b = hash >>> this.#shift
    const scores = new Float64Array(n)
    const idx: number[] = []
    for (let i = 0; i < n; i++) {
      scores[i] = this.#score(i, b)
      idx.push(i)
    }
    idx.sort((i, j) => (scores[i] !== scores[j] ? scores[j]! - scores[i]! : this.#tieBeats(i, j, b) ? -1 : 1))
    for (let r = 0; r < n; r++) out[r] = idx[r]!
    return n
  }

  indexOf(id: string): number {
    return this.#byId.get(id) ?? -1
  }

  weightOf(index: number): number {
    return this.#weights[index] ?? 0
  }
}

/**
 * Builds a frozen placement table: weighted rendezvous hashing (highest random weight, Thaler &
 * Ravishankar 1998, "Using name-based mappings to increase hit rates", IEEE/ACM ToN 6(1)) with
 * the logarithmic weighting of Schindelhauer & Schomaker 2005 ("Weighted distributed hash
 * tables", SPAA; the same score as Ceph CRUSH straw2): upstream i scores
 * `ln(u_i) / weight_i` in bucket b, where `u_i = (murmur3U32(b, seed_i) + 0.5) / 2^32` and
 * `seed_i = murmur3(id_i, "TETH")`; the highest score wins. A key lands in bucket
 * `hash >>> 16`; the winner and runner-up of each of the 2^16 buckets are precomputed so a
 * lookup is one array read and a single failover is two. Removing an upstream moves only its
 * own keys; adding one moves only the keys it now wins; the others keep their order.
 *
 * The input order does not matter (upstreams are sorted by id). Throws RangeError on a
 * duplicate or empty id, a weight that is not an integer in 1..1000, or more than 65535
 * upstreams. Cost: O(2^16 x upstreams) hashes (about 15 ms for 100 equal upstreams); above 256
 * upstreams each bucket is computed on its first lookup instead (a build of 10,000 takes
 * milliseconds). `previous`, the table this one replaces, only saves work (the result is the
 * same): the new table is derived from it in O(2^16 x changed upstreams) when few changed.
 *
 * Example:
 * ```ts
 * const table = buildPlacement([{ id: 'b', weight: 1 }, { id: 'a', weight: 2 }])
 * table.ids                              // ['a', 'b']; 'a' gets about 2/3 of the keys
 * const i = table.pick(hashKey('user-42'))          // 0 or 1, the same on every replica
 * table.pick(hashKey('user-42'), (j) => j !== i)    // the other one: the key's fallback
 * ```
 */
export function buildPlacement(
  upstreams: readonly UpstreamWeight[],
  options: { readonly bucketBits?: number; readonly previous?: PlacementTable } = {},
): PlacementTable {
  const bucketBits = options.bucketBits ?? BUCKET_BITS
  if (!Number.isInteger(bucketBits) || bucketBits < 1 || bucketBits > 24) {
    throw new RangeError(`placement: bucketBits must be an integer 1..24, got ${bucketBits}`)
  }
  if (upstreams.length > MAX_UPSTREAMS) {
    throw new RangeError(`placement: at most ${MAX_UPSTREAMS} upstreams, got ${upstreams.length}`)
  }
  const sorted = upstreams.map((u) => ({ id: u.id, weight: u.weight }))
  sorted.sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0))
  for (let i = 0; i < sorted.length; i++) {
    const u = sorted[i]!
    if (typeof u.id !== 'string' || u.id.length === 0) {
      throw new RangeError('placement: an upstream id must be a non-empty string')
    }
    if (i > 0 && sorted[i - 1]!.id === u.id) throw new RangeError(`placement: duplicate upstream id "${u.id}"`)
    if (!Number.isInteger(u.weight) || u.weight < MIN_WEIGHT || u.weight > MAX_WEIGHT) {
      throw new RangeError(
        `placement: weight of "${u.id}" must be an integer ${MIN_WEIGHT}..${MAX_WEIGHT}, got ${u.weight}`,
      )
    }
  }
  const previous = options.previous instanceof RendezvousTable ? options.previous : null
  return new RendezvousTable(sorted, bucketBits, previous)
}
