// Consistent hashing with bounded loads (Mirrokni, Thorup, Zadimoghaddam, SODA 2018,
// arXiv:1608.01350; HAProxy's `hash-balance-factor`): a wrapper over a table's preference walk
// that skips upstreams at capacity when placing a NEW session. Pure: reads the caller's loads,
// never stores or updates them (the affinity table owns load); no I/O, no clock.

import type { PlacementTable } from './rendezvous.js'

/** The caller's load per upstream index (e.g. active affinity entries): an array or a function. */
export type LoadSource = ArrayLike<number> | ((index: number) => number)

// The walk's predicate reads these instead of a closure, so a pick allocates nothing. Saved and
// restored around each call, so an `accept` that itself calls pickBounded stays correct.
let curAccept: (index: number) => boolean = () => false
let curLoad: LoadSource = []
let curTable: PlacementTable | undefined
let curScaled = 0 // factor * (totalLoad + 1)
let curTotalWeight = 1 // the table's total weight: an upper bound of the accepted weight
let curAcceptedWeight = 0 // sum of the accepted upstreams' weights; 0 until a candidate needs it

function loadOf(load: LoadSource, index: number): number {
  return typeof load === 'function' ? load(index) : (load[index] ?? 0)
}

function underCapacity(index: number): boolean {
  if (!curAccept(index)) return false
  // capacity = ceil(factor * (m + 1) / n), n = acceptedWeight / weight (the paper's bin count,
  // weighted as HAProxy does; with equal weights n is exactly the number of accepted upstreams).
  const weight = curTable!.weightOf(index)
  const need = loadOf(curLoad, index) + 1
  // First with the table's total weight for the accepted weight: more bins, so a capacity never
  // above the exact one (integer weights are exact doubles, and a rounded division or ceil never
  // reverses an order). Under it is under capacity: the common answer, with no pass over the
  // upstreams (and the exact one when every upstream is accepted).
  if (need <= Math.ceil(curScaled / (curTotalWeight / weight))) return true
  if (curAcceptedWeight === 0) curAcceptedWeight = acceptedWeightOf(curTable!, curAccept)
  return need <= Math.ceil(curScaled / (curAcceptedWeight / weight))
}

/** Sum of the weights of the upstreams `accept` takes: one pass over the table. */
function acceptedWeightOf(table: PlacementTable, accept: (index: number) => boolean): number {
  const n = table.ids.length
  let sum = 0
  for (let i = 0; i < n; i++) if (accept(i)) sum += table.weightOf(i)
  return sum
}

/**
 * Places a NEW session: the first upstream in the key's preference order that `accept`s and
 * whose load after taking it stays within its capacity
 * `ceil(factor * (totalLoad + 1) / n)` with `n = acceptedWeight / weight(i)` — the paper's
 * `ceil(c * m / n)` (section 1, "capacity of each bin"), where m counts the new ball and, with
 * equal weights, n is the number of accepted upstreams. Keys whose preferred upstream is full
 * move to the next in hash order, so placement stays consistent while no upstream exceeds
 * `factor` times its fair share. Returns -1 only if no upstream is accepted.
 *
 * `factor` must be >= 1 (the paper's c = 1 + epsilon; 1.25 is a good default). `totalLoad` is
 * the sum of loads over all upstreams. With consistent inputs (each accepted load <= its share
 * of `totalLoad`) an upstream under capacity always exists; if the caller's numbers are
 * inconsistent and none is, this degrades to the plain pick rather than refusing service.
 * Cost: O(1) (a pick plus one load read) when the key's first accepted choice is under the
 * capacity computed with the table's total weight, which is every key that does not spill while
 * all upstreams are accepted; otherwise one pass over the upstreams to sum the accepted weights
 * (at most once a call), then the table's walk (O(upstreams) past the key's second choice).
 *
 * Example: 4 equal upstreams, loads [5, 1, 1, 1] (total 8), factor 1.25: capacity is
 * ceil(1.25 * 9 / 4) = 3, so a key whose first choice is upstream 0 (load 5) goes to its
 * second choice instead; a key preferring upstream 1 (load 1 + 1 <= 3) stays there.
 * ```ts
 * const i = pickBounded(table, hashKey(key), healthy, activeSessions, totalSessions, 1.25)
 * ```
 */
export function pickBounded(
  table: PlacementTable,
  hash: number,
  accept: (index: number) => boolean,
  load: LoadSource,
  totalLoad: number,
  factor: number,
): number {
  if (!(factor >= 1) || !Number.isFinite(factor)) {
    throw new RangeError(`pickBounded: factor must be a finite number >= 1, got ${factor}`)
  }
  const savedAccept = curAccept
  const savedLoad = curLoad
  const savedTable = curTable
  const savedScaled = curScaled
  const savedTotalWeight = curTotalWeight
  const savedAcceptedWeight = curAcceptedWeight
  curAccept = accept
  curLoad = load
  curTable = table
  curScaled = factor * (Math.max(0, totalLoad) + 1)
  curTotalWeight = table.totalWeight
  curAcceptedWeight = 0
  try {
    // nothing accepted: -1 from both walks
    const bounded = table.pick(hash, underCapacity)
    return bounded >= 0 ? bounded : table.pick(hash, accept)
  } finally {
    curAccept = savedAccept
    curLoad = savedLoad
    curTable = savedTable
    curScaled = savedScaled
    curTotalWeight = savedTotalWeight
    curAcceptedWeight = savedAcceptedWeight
  }
}
