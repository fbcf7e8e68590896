// What the primary's one /metrics adds up (`workers` > 1): every live worker's metrics, plus
// the counts of the workers gone since the primary started (crashed, replaced in a roll,
// scaled down), so a counter summed over workers never falls when one is replaced (Prometheus
// would read the fall as a reset: a false spike in rate()) or drops a removed upstream's series
// before another does; the counters every worker counts
// alike (read with `max`), kept from falling when the workers that counted longest are all
// replaced; and the config reloads, counted once by the primary rather than once per worker
// (and the last reload's gauges: the primary's view of the file, not a sum over workers).
// Layer 2 state owner: no I/O, no clock (the primary gives the times: monotonic ms). Works on
// the compact snapshots of metrics-wire.ts: a series is known by its exposition text, summed by
// it, never by a label object (10,000 upstreams: 400,000 series a scrape with 2 workers).

import { readSnapshot, seriesKey, seriesText, type MetricsSnapshot, type WireMetric } from '../observability/metrics-wire.js'

/** Counted by the primary (one reload of the file is one, whatever the worker count). */
const RELOADS = 'tether_config_reloads_total'
/** The last reload's gauges: the primary's (whether it accepted the file, and when it last did). */
const LAST_RELOAD_OK = 'tether_config_last_reload_successful'
const LAST_RELOAD_AT = 'tether_config_last_reload_success_timestamp_seconds'
/** The metrics the primary shows itself, the workers' own values left out. */
const PRIMARY_OWN: ReadonlySet<string> = new Set([RELOADS, LAST_RELOAD_OK, LAST_RELOAD_AT])
/** Counted by every process, the primary too (its own log lines go to the same stdout): the workers' sums plus the primary's. */
const LOG_DROPPED = 'tether_log_lines_dropped_total'
/** The `upstream` of requests no upstream answered (Metrics' NONE): always current. */
const NO_UPSTREAM = 'none'

type Meta = Omit<WireMetric, 'keys' | 'values' | 'owners'>

/**
 * Example: at each scrape `ledger.seen(id, snapshot)` for every worker that answered, then
 * `aggregateMetrics(ledger.snapshots(live))`; `ledger.gone(id)` when a worker exits: its last
 * counts are kept (counts after its last scrape were never shown, so nothing shown falls).
 * A snapshot is a worker's {@link MetricsSnapshot} (or prom-client's getMetricsAsJSON() array).
 */
export class MetricsLedger {
  /**
   * @param grace how long a removed upstream's series stay after its last count, ms, as each
   * worker keeps them (REMOVED_SERIES_GRACE_MS)
   * @param startedAt when the primary accepted the file it started with, ms since the epoch
   * (the last reload's time until one is accepted; unknown: not shown)
   * @param ownLogDrops the primary's own count of log lines its stdout dropped since it started,
   * by reason (the logger's logLinesDropped, read at each scrape): added to the workers' sums
   * of `tether_log_lines_dropped_total` (none: the workers' alone)
   */
  constructor(private readonly grace: number, startedAt?: number, ownLogDrops?: () => Readonly<Record<string, number>>) {
    this.#lastReload = { ok: true, at: startedAt ?? null }
    this.#ownLogDrops = ownLogDrops ?? null
  }

  readonly #ownLogDrops: (() => Readonly<Record<string, number>>) | null
  /** The help and type of `tether_log_lines_dropped_total`, as the workers declare it (null: no worker answered yet). */
  #logDropMeta: Meta | null = null

  /** Each live worker's last snapshot. */
  readonly #last = new Map<number, MetricsSnapshot>()
  /** The summed counters and histograms of the workers gone: metric name -> (series key -> value). */
  readonly #departed = new Map<string, { readonly meta: Meta; readonly series: Map<string, Departed> }>()
  /**
   * The counters aggregated with `max` (each worker counts the same events of its copy of the
   * affinity table): per series, the value last shown and what is added to the live workers'
   * highest count. A worker that starts counts from 0, so after a roll the live highest falls;
   * the offset then grows by the fall, and the counter goes on from where it was.
   */
  readonly #maxed = new Map<string, { readonly meta: Meta; readonly series: Map<string, { shown: number; offset: number }> }>()
  /** The ids of the workers gone (an answer of one that exited during the scrape is not counted again). */
  readonly #gone = new Set<number>()
  readonly #reloads = { ok: 0, failed: 0 }
  /** The primary's last reload: accepted or not, and when it last accepted the file (ms since the epoch). */
  readonly #lastReload: { ok: boolean; at: number | null }
  /**
   * Each summed series' value at the last scrape, and its sum in this one (metric name -> series
   * key -> both; kept from scrape to scrape, one lookup a series): see {@link #noFall}. A series
   * absent from a scrape is forgotten (a removed upstream's).
   */
  readonly #shown = new Map<string, Map<string, Shown>>()
  /** The scrape each metric of #shown was last summed in (by #noFall's count of scrapes). */
  readonly #touched = new Map<string, number>()
  /** A snapshot metric's series' #shown entries by position (keyed by its keys array; carried to a worker's next answer with the same series by {@link seen}). */
  readonly #positions = new WeakMap<readonly string[], readonly Shown[]>()
  #scrape = 0
  /** The help and type of the metrics the primary shows itself (PRIMARY_OWN), as the workers declare them. */
  readonly #ownMeta = new Map<string, Meta>()

  /** Worker `id` answered a scrape with `snapshot` (an empty one: its metrics failed, no answer). */
  seen(id: number, snapshot: unknown): void {
    const s = readSnapshot(snapshot)
    if (s === null || this.#gone.has(id)) return
    const before = this.#last.get(id)
    this.#last.set(id, s)
    if (before !== undefined) this.#keepDropped(before, s)
  }

  /** Worker `id` exited at `now`: its last counts stay in the sums. */
  gone(id: number, now: number): void {
    this.#gone.add(id)
    const last = this.#last.get(id)
    this.#last.delete(id)
    if (last === undefined) return
    for (const m of last.metrics) if (summed(m)) this.#depart(m, last.upstreams, null, now + this.grace)
  }

  /** The primary reloaded the config file: applied (true) or rejected (false), at `at` (ms since the epoch). */
  reloaded(ok: boolean, at?: number): void {
    if (ok) this.#reloads.ok++
    else this.#reloads.failed++
    this.#lastReload.ok = ok
    if (ok && at !== undefined) this.#lastReload.at = at
  }

  /**
   * The snapshots to aggregate: the live workers' (this scrape's answers by worker id; null or
   * empty: not answered in time, or its metrics failed, its last answer then) without their
   * reload counts, the gone workers' counts, and the primary's reload counts.
   */
  snapshots(live: readonly (readonly [id: number, snapshot: unknown])[], now: number): MetricsSnapshot[] {
    const out: MetricsSnapshot[] = []
    /** The `max` counters' live highest value: metric name -> (series key -> value). */
    const highest = new Map<string, Map<string, number>>()
    /**
     * The upstreams the live workers have series of now (null: none told): the current ones,
     * and the removed ones whose series a worker keeps for their grace.
     */
    let current: Set<string> | null = null
    for (const [id, answer] of live) {
      if (this.#gone.has(id)) continue // its counts are in the sums already
      const s = readSnapshot(answer) ?? this.#last.get(id)
      if (s === undefined) continue
      if (this.#ownMeta.size < PRIMARY_OWN.size) for (const m of s.metrics) if (PRIMARY_OWN.has(m.name) && !this.#ownMeta.has(m.name)) this.#ownMeta.set(m.name, meta(m)!)
      if (this.#logDropMeta === null && this.#ownLogDrops !== null) this.#logDropMeta = meta(s.metrics.find((m) => m.name === LOG_DROPPED))
      for (const u of s.upstreams) (current ??= new Set()).add(u)
      out.push({ tether: 'metrics', upstreams: s.upstreams, metrics: s.metrics.filter((m) => !PRIMARY_OWN.has(m.name) && !this.#maxCounter(m, highest)) })
    }
    if (current !== null) this.#forgetRemoved(current.add(NO_UPSTREAM), now)
    const extra: WireMetric[] = [...this.#departed.values()].map((d) => {
      const values: (number | null)[] = []
      for (const s of d.series.values()) values.push(s.value)
      return { ...d.meta, keys: [...d.series.keys()], values }
    })
    for (const [name, m] of this.#maxed) {
      const live = highest.get(name)
      const values: number[] = []
      for (const [key, s] of m.series) {
        let value = (live?.get(key) ?? 0) + s.offset
        if (value < s.shown) {
          s.offset += s.shown - value
          value = s.shown
        }
        s.shown = value
        values.push(value)
      }
      extra.push({ ...m.meta, keys: [...m.series.keys()], values })
    }
    for (const m of this.#ownMeta.values()) {
      if (m.name === RELOADS) {
        const results = (['ok', 'failed'] as const).filter((r) => this.#reloads[r] > 0)
        extra.push({ ...m, keys: results.map((r) => seriesKey(m.name, seriesText(m.name, { result: r }))), values: results.map((r) => this.#reloads[r]) })
      } else {
        const value = m.name === LAST_RELOAD_OK ? (this.#lastReload.ok ? 1 : 0) : this.#lastReload.at === null ? null : this.#lastReload.at / 1000
        const key = seriesKey(m.name, seriesText(m.name, {}))
        extra.push({ ...m, keys: value === null ? [] : [key], values: value === null ? [] : [value] })
      }
    }
    // the primary's own dropped log lines, summed with the workers' (its warn lines, reload
    // rejections and worker restarts go to the same stdout: a full disk costs it lines too)
    if (this.#logDropMeta !== null && this.#ownLogDrops !== null) {
      const m = this.#logDropMeta
      const own = Object.entries(this.#ownLogDrops())
      extra.push({ ...m, keys: own.map(([reason]) => seriesKey(m.name, seriesText(m.name, { reason }))), values: own.map(([, n]) => n) })
    }
    if (extra.length > 0) out.push({ tether: 'metrics', upstreams: [], metrics: extra })
    const lifts = this.#noFall(out)
    if (lifts.length > 0) {
      if (extra.length === 0) out.push({ tether: 'metrics', upstreams: [], metrics: extra })
      extra.push(...lifts)
    }
    return out
  }

  /**
   * What keeps each summed series from showing less than at the last scrape, to add last (the
   * metrics to append to the snapshots, added up after every other value). The sums are added
   * in floating point in the snapshots' order, so a worker's counts moving from the live
   * snapshots to the gone sums (its exit) gave a total one unit in the last place lower (a
   * histogram's `_sum`, seconds), which Prometheus reads as a reset: rate() then counted the
   * whole sum again. Here each series is added up as the aggregation adds it (from 0, in
   * `snapshots` order), and one that fell gets the difference.
   */
  #noFall(snapshots: readonly MetricsSnapshot[]): WireMetric[] {
    const scrape = ++this.#scrape
    const touched: { readonly m: WireMetric; readonly series: Map<string, Shown> }[] = []
    for (const snapshot of snapshots) {
      for (const m of snapshot.metrics) {
        if (!summed(m)) continue
        let series = this.#shown.get(m.name)
        if (series === undefined) this.#shown.set(m.name, (series = new Map()))
        if (this.#touched.get(m.name) !== scrape) {
          this.#touched.set(m.name, scrape)
          touched.push({ m, series })
        }
        // the entries of this worker's series by position, when its series are those of its last
        // answer (see seen): no lookup by key (hashing 200,000 new strings held the event loop)
        let entries = this.#positions.get(m.keys)
        if (entries === undefined || entries.some((e) => !e.alive)) {
          entries = m.keys.map((key) => {
            let e = series.get(key)
            if (e === undefined) series.set(key, (e = { shown: null, total: 0, scrape: 0, alive: true }))
            return e
          })
          this.#positions.set(m.keys, entries)
        }
        for (let i = 0; i < entries.length; i++) {
          const e = entries[i]!
          const v = m.values[i] as number
          if (e.scrape !== scrape) {
            e.total = 0 + v
            e.scrape = scrape
          } else e.total += v
        }
      }
    }
    const lifts: WireMetric[] = []
    for (const { m, series } of touched) {
      let keys: string[] | null = null
      let values: number[] | null = null
      for (const [key, e] of series) {
        if (e.scrape !== scrape) {
          series.delete(key) // absent from this scrape: forgotten (a removed upstream's)
          e.alive = false
          continue
        }
        const { total, shown } = e
        e.shown = total
        if (shown === null || !(total < shown)) continue
        let lift = shown - total
        for (let i = 0; i < 8 && total + lift < shown; i++) lift += Math.max(lift * Number.EPSILON, Number.MIN_VALUE)
        ;(keys ??= []).push(key)
        ;(values ??= []).push(lift)
        e.shown = total + lift
      }
      if (keys !== null) lifts.push({ name: m.name, help: m.help, type: m.type, aggregator: 'sum', keys, values: values! })
    }
    for (const [name, series] of this.#shown) {
      if (this.#touched.get(name) === scrape) continue
      for (const e of series.values()) e.alive = false
      this.#shown.delete(name)
      this.#touched.delete(name)
    }
    return lifts
  }

  /**
   * A live worker dropped series of a removed upstream it showed before (its grace for it is
   * over, see REMOVED_SERIES_GRACE_MS), while another worker may still show them (its grace,
   * renewed by its own later counts, ends later): their last counts stay in the sums like a gone
   * worker's, and go with them ({@link #forgetRemoved}), else the sum fell (a false reset).
   */
  #keepDropped(before: MetricsSnapshot, now: MetricsSnapshot): void {
    for (const m of before.metrics) {
      if (!summed(m) || m.owners === undefined) continue
      const n = now.metrics.find((x) => x.name === m.name)
      if (n !== undefined && sameKeys(m.keys, n.keys)) { // nothing dropped (the usual scrape)
        const entries = this.#positions.get(m.keys)
        if (entries !== undefined) this.#positions.set(n.keys, entries)
        continue
      }
      const kept = new Set(n?.keys ?? [])
      const dropped: number[] = []
      for (let i = 0; i < m.keys.length; i++) {
        const o = m.owners[i]!
        if (o >= 0 && before.upstreams[o] !== NO_UPSTREAM && !kept.has(m.keys[i]!)) dropped.push(i)
      }
      if (dropped.length > 0) this.#depart(m, before.upstreams, dropped, null)
    }
  }

  /**
   * Adds the values of `m` at `indices` (all: null; counts a worker no longer shows; `upstreams`:
   * its snapshot's) to the gone counts; `until`: a gone worker's, kept that long when no live
   * worker shows their upstream (null: a live worker's grace for it is over).
   */
  #depart(m: WireMetric, upstreams: readonly string[], indices: readonly number[] | null, until: number | null): void {
    let d = this.#departed.get(m.name)
    if (d === undefined) this.#departed.set(m.name, (d = { meta: { name: m.name, help: m.help, type: m.type, aggregator: 'sum' }, series: new Map() }))
    const n = indices === null ? m.keys.length : indices.length
    for (let j = 0; j < n; j++) {
      const i = indices === null ? j : indices[j]!
      const key = m.keys[i]!
      const value = m.values[i]!
      const had = d.series.get(key)
      if (had === undefined) {
        const o = m.owners?.[i] ?? -1
        d.series.set(key, { value, until, upstream: o >= 0 ? upstreams[o]! : null })
      } else {
        had.value = (had.value as number) + (value as number)
        had.until = until === null ? null : Math.max(had.until ?? until, until) // a worker's exit: the grace from it
      }
    }
  }

  /**
   * Drop the gone workers' series of upstreams no live worker has series of any more (removed
   * by a reload or by discovery, and past the grace each worker keeps a removed upstream's
   * series for), as one process drops a removed upstream's series: else every pod of every
   * rollout that a replaced worker had counted stayed in /metrics for good. Kept while a live
   * worker still shows it, so the sum does not fall (a false reset) during that grace. A gone
   * worker's counts that no live worker has shown since (a roll replaced every worker within a
   * removed upstream's grace) stay for the grace from its exit instead: the moves the removal
   * caused are scraped, as with one process.
   */
  #forgetRemoved(current: ReadonlySet<string>, now: number): void {
    for (const d of this.#departed.values()) {
      for (const [key, s] of d.series) {
        if (s.upstream === null || current.has(s.upstream)) s.until = null // shown live: its grace is the live worker's
        else if (s.until === null || now >= s.until) d.series.delete(key)
      }
    }
  }

  /**
   * Is `m` a counter read with `max`? If so, its values go into `highest` (and the series into
   * #maxed), and the ledger shows it itself.
   */
  #maxCounter(m: WireMetric, highest: Map<string, Map<string, number>>): boolean {
    if (m.type !== 'counter' || m.aggregator !== 'max') return false
    let tracked = this.#maxed.get(m.name)
    if (tracked === undefined) this.#maxed.set(m.name, (tracked = { meta: { name: m.name, help: m.help, type: m.type, aggregator: 'max' }, series: new Map() }))
    let top = highest.get(m.name)
    if (top === undefined) highest.set(m.name, (top = new Map()))
    for (let i = 0; i < m.keys.length; i++) {
      const key = m.keys[i]!
      if (!tracked.series.has(key)) tracked.series.set(key, { shown: 0, offset: 0 })
      top.set(key, Math.max(top.get(key) ?? 0, m.values[i] as number))
    }
    return true
  }
}

/** A gone count: its value, its upstream (null: none), and until when it stays while no live worker shows that upstream (null: no longer than they do). */
interface Departed {
  value: number | null
  until: number | null
  readonly upstream: string | null
}

/** A summed series: its value at the last scrape (null: not shown then), its sum in the scrape `scrape`. */
interface Shown {
  shown: number | null
  total: number
  scrape: number
  /** Still in #shown (false: forgotten; a position list holding it is made again). */
  alive: boolean
}

/** Is `m` summed over workers and never falling in one (a counter or histogram, not the reloads)? */
function summed(m: WireMetric): boolean {
  return !PRIMARY_OWN.has(m.name) && (m.type === 'counter' || m.type === 'histogram') && m.aggregator === 'sum'
}

/** A metric's name, help, type and aggregator (null: none). */
function meta(m: WireMetric | undefined): Meta | null {
  return m === undefined ? null : { name: m.name, help: m.help, type: m.type, aggregator: m.aggregator }
}

function sameKeys(a: readonly string[], b: readonly string[]): boolean {
  if (a.length !== b.length) return false
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false
  return true
}
