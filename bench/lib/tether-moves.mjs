// What a Tether contestant did besides forwarding during a bench run: users it moved (an
// upstream marked down, ejected, restarted) and requests it retried, read from its /metrics.
// A run where it moved users measured failover work too, so the harness warns about it.

/**
 * Sum the move and retry counters of a Prometheus text page.
 * Example: parseMoves('tether_failovers_total{from="up-0",reason="dead"} 3\n') ->
 * `{ moves: { 'up-0 dead': 3 }, moved: 3, retries: 0 }`.
 */
export function parseMoves(text) {
  const moves = {}
  let moved = 0
  let retries = 0
  for (const line of text.split('\n')) {
    let m = /^tether_failovers_total\{from="([^"]*)",reason="([^"]*)"\} (\d+(?:\.\d+)?)$/.exec(line)
    if (m) {
      const n = Number(m[3])
      if (n > 0) {
        moves[`${m[1]} ${m[2]}`] = n
        moved += n
      }
      continue
    }
    m = /^tether_retries_total\{[^}]*\} (\d+(?:\.\d+)?)$/.exec(line)
    if (m) retries += Number(m[1])
  }
  return { moves, moved, retries }
}

/** The moves and retries of the Tether whose admin listener is on `port` (null if it did not answer in 3 s). */
export async function tetherMoves(port) {
  try {
    const res = await fetch(`http://127.0.0.1:${port}/metrics`, { signal: AbortSignal.timeout(3_000) })
    return res.ok ? parseMoves(await res.text()) : null
  } catch {
    return null
  }
}
