// What the primary's one /metrics adds up (`workers` > 1): every live worker's metrics, plus
// the counts of the workers gone since the primary started (crashed, replaced in a roll,
// scaled down), so a counter summed over workers never falls when one is replaced (Prometheus
// would read the fall as a reset: a false spike in rate()) or drops a removed upstream's series
// before another does; the counters every worker counts
// alike (read with `max`), kept from falling when the workers that counted longest are all
// replaced; and the config reloads, counted once by the primary rather than once per worker
// (and the last reload's gauges: the primary's view of the file, not a sum over workers).
// Layer 2 state owner: no I/O, no clock (the primary gives the times: monotonic ms).

/** One metric as prom-client's getMetricsAsJSON() gives it (the wire format of a worker's snapshot). */
interface MetricData {
  readonly name: string
  readonly help: string
  readonly type: string
  readonly aggregator?: string
  readonly values: readonly MetricValue[]
}

interface MetricValue {
  readonly value: number
  readonly labels: Readonly<Record<string, string | number>>
  readonly metricName?: string
}

/** Counted by the primary (one reload of the file is one, whatever the worker count). */
const RELOADS = 'tether_config_reloads_total'
/** The last reload's gauges: the primary's (whether it accepted the file, and when it last did). */
const LAST_RELOAD_OK = 'tether_config_last_reload_successful'
const LAST_RELOAD_AT = 'tether_config_last_reload_success_timestamp_seconds'
/** The metrics the primary shows itself, the workers' own values left out. */
const PRIMARY_OWN: ReadonlySet<string> = new Set([RELOADS, LAST_RELOAD_OK, LAST_RELOAD_AT])
/** The labels that name an upstream (in its state series and in traffic series). */
const UPSTREAM_LABELS = ['upstream', 'from'] as const
/** The `upstream` of requests no upstream answered (Metrics' NONE): always current. */
const NO_UPSTREAM = 'none'

/**
 * Example: at each scrape `ledger.seen(id, snapshot)` for every worker that answered, then
 * `aggregateMetrics(ledger.snapshots(live))`; `ledger.gone(id)` when a worker exits: its last
 * counts are kept (counts after its last scrape were never shown, so nothing shown falls).
 */
export class MetricsLedger {
  /**
   * @param grace how long a removed upstream's series stay after its last count, ms, as each
   * worker keeps them (REMOVED_SERIES_GRACE_MS)
   * @param startedAt when the primary accepted the file it started with, ms since the epoch
   * (the last reload's time until one is accepted; unknown: not shown)
   */
  constructor(private readonly grace: number, startedAt?: number) {
    this.#lastReload = { ok: true, at: startedAt ?? null }
  }

  /** Each live worker's last snapshot. */
  readonly #last = new Map<number, readonly MetricData[]>()
  /** The summed counters and histograms of the workers gone: metric name -> (series key -> value). */
  readonly #departed = new Map<string, { readonly meta: Omit<MetricData, 'values'>; readonly series: Map<string, Departed> }>()
  /**
   * The counters aggregated with `max` (each worker counts the same events of its copy of the
   * affinity table): per series, the value last shown and what is added to the live workers'
   * highest count. A worker that starts counts from 0, so after a roll the live highest falls;
   * the offset then grows by the fall, and the counter goes on from where it was.
   */
  readonly #maxed = new Map<string, { readonly meta: Omit<MetricData, 'values'>; readonly series: Map<string, { labels: MetricValue['labels']; shown: number; offset: number }> }>()
  /** The ids of the workers gone (an answer of one that exited during the scrape is not counted again). */
  readonly #gone = new Set<number>()
  readonly #reloads = { ok: 0, failed: 0 }
  /** The primary's last reload: accepted or not, and when it last accepted the file (ms since the epoch). */
  readonly #lastReload: { ok: boolean; at: number | null }
  /**
   * Each summed series' value at the last scrape (metric name and series key -> value): see
   * {@link #noFall}. A series absent from a scrape is forgotten (a removed upstream's).
   */
  #shown = new Map<string, number>()
  /** The help and type of the metrics the primary shows itself (PRIMARY_OWN), as the workers declare them. */
  readonly #ownMeta = new Map<string, Omit<MetricData, 'values'>>()

  /** Worker `id` answered a scrape with `snapshot` (an empty one: its metrics failed, no answer). */
  seen(id: number, snapshot: unknown): void {
    if (!Array.isArray(snapshot) || snapshot.length === 0 || this.#gone.has(id)) return
    const before = this.#last.get(id)
    this.#last.set(id, snapshot as MetricData[])
    if (before !== undefined) this.#keepDropped(before, snapshot as MetricData[])
  }

  /** Worker `id` exited at `now`: its last counts stay in the sums. */
  gone(id: number, now: number): void {
    this.#gone.add(id)
    const last = this.#last.get(id)
    this.#last.delete(id)
    if (last === undefined) return
    for (const m of last) if (summed(m)) this.#depart(m, m.values, now + this.grace)
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
  snapshots(live: readonly (readonly [id: number, snapshot: unknown])[], now: number): unknown[] {
    const out: unknown[] = []
    /** The `max` counters' live highest value: metric name -> (series key -> value). */
    const highest = new Map<string, Map<string, number>>()
    /**
     * The upstreams the live workers have series of now (null: none told): the current ones,
     * and the removed ones whose series a worker keeps for their grace.
     */
    let current: Set<string> | null = null
    for (const [id, answer] of live) {
      if (this.#gone.has(id)) continue // its counts are in the sums already
      const s = Array.isArray(answer) && answer.length > 0 ? answer : this.#last.get(id)
      if (!Array.isArray(s)) continue
      const metrics = s as MetricData[]
      if (this.#ownMeta.size < PRIMARY_OWN.size) for (const m of metrics) if (PRIMARY_OWN.has(m.name) && !this.#ownMeta.has(m.name)) this.#ownMeta.set(m.name, { name: m.name, help: m.help, type: m.type, ...(m.aggregator === undefined ? {} : { aggregator: m.aggregator }) })
      for (const m of metrics) {
        for (const v of m.values) {
          for (const l of UPSTREAM_LABELS) if (v.labels[l] !== undefined) (current ??= new Set()).add(String(v.labels[l]))
        }
      }
      out.push(metrics.filter((m) => !PRIMARY_OWN.has(m.name) && !this.#maxCounter(m, highest)))
    }
    if (current !== null) this.#forgetRemoved(current.add(NO_UPSTREAM), now)
    const extra: MetricData[] = [...this.#departed.values()].map((d) => ({ ...d.meta, values: [...d.series.values()].map((s) => s.value) }))
    for (const [name, m] of this.#maxed) {
      const live = highest.get(name)
      const values: MetricValue[] = []
      for (const [key, s] of m.series) {
        let value = (live?.get(key) ?? 0) + s.offset
        if (value < s.shown) {
          s.offset += s.shown - value
          value = s.shown
        }
        s.shown = value
        values.push({ value, labels: s.labels })
      }
      extra.push({ ...m.meta, values })
    }
    for (const [name, meta] of this.#ownMeta) {
      const values = name === RELOADS ? (['ok', 'failed'] as const).filter((r) => this.#reloads[r] > 0).map((r) => ({ value: this.#reloads[r], labels: { result: r } }))
        : name === LAST_RELOAD_OK ? [{ value: this.#lastReload.ok ? 1 : 0, labels: {} }]
        : this.#lastReload.at === null ? [] : [{ value: this.#lastReload.at / 1000, labels: {} }]
      extra.push({ ...meta, values })
    }
    if (extra.length > 0) out.push(extra)
    const lifts = this.#noFall(out as (readonly MetricData[])[])
    if (lifts.length > 0) {
      if (extra.length === 0) out.push(extra)
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
   * whole sum again. Here each series is added up as prom-client's aggregator adds it (from 0, in
   * `snapshots` order), and one that fell gets the difference.
   */
  #noFall(snapshots: readonly (readonly MetricData[])[]): MetricData[] {
    const totals = new Map<string, { readonly m: MetricData; readonly v: MetricValue; total: number }>()
    for (const snapshot of snapshots) {
      for (const m of snapshot) {
        if (!summed(m)) continue
        for (const v of m.values) {
          const key = `${m.name} ${seriesKey(v)}`
          const had = totals.get(key)
          if (had === undefined) totals.set(key, { m, v, total: 0 + v.value })
          else had.total += v.value
        }
      }
    }
    const shown = new Map<string, number>()
    const lifts = new Map<string, MetricData & { values: MetricValue[] }>()
    for (const [key, { m, v, total }] of totals) {
      const before = this.#shown.get(key)
      let value = total
      if (before !== undefined && total < before) {
        let lift = before - total
        for (let i = 0; i < 8 && total + lift < before; i++) lift += Math.max(lift * Number.EPSILON, Number.MIN_VALUE)
        let l = lifts.get(m.name)
        if (l === undefined) lifts.set(m.name, (l = { name: m.name, help: m.help, type: m.type, aggregator: 'sum', values: [] }))
        l.values.push({ value: lift, labels: v.labels, ...(v.metricName === undefined ? {} : { metricName: v.metricName }) })
        value = total + lift
      }
      shown.set(key, value)
    }
    this.#shown = shown
    return [...lifts.values()]
  }

  /**
   * A live worker dropped series of a removed upstream it showed before (its grace for it is
   * over, see REMOVED_SERIES_GRACE_MS), while another worker may still show them (its grace,
   * renewed by its own later counts, ends later): their last counts stay in the sums like a gone
   * worker's, and go with them ({@link #forgetRemoved}), else the sum fell (a false reset).
   */
  #keepDropped(before: readonly MetricData[], now: readonly MetricData[]): void {
    for (const m of before) {
      if (!summed(m)) continue
      const named = m.values.filter((v) => UPSTREAM_LABELS.some((l) => v.labels[l] !== undefined && String(v.labels[l]) !== NO_UPSTREAM))
      if (named.length === 0) continue
      const kept = new Set((now.find((n) => n.name === m.name)?.values ?? []).map(seriesKey))
      const dropped = named.filter((v) => !kept.has(seriesKey(v)))
      if (dropped.length > 0) this.#depart(m, dropped, null)
    }
  }

  /**
   * Adds `values` (counts of a metric `m` a worker no longer shows) to the gone counts; `until`:
   * a gone worker's, kept that long when no live worker shows their upstream (null: a live
   * worker's grace for it is over).
   */
  #depart(m: MetricData, values: readonly MetricValue[], until: number | null): void {
    let d = this.#departed.get(m.name)
    if (d === undefined) this.#departed.set(m.name, (d = { meta: { name: m.name, help: m.help, type: m.type, aggregator: 'sum' }, series: new Map() }))
    for (const v of values) {
      const key = seriesKey(v)
      const had = d.series.get(key)
      if (had === undefined) d.series.set(key, { value: v, until })
      else {
        had.value = { ...v, value: had.value.value + v.value }
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
        const v = s.value
        if (!UPSTREAM_LABELS.some((l) => v.labels[l] !== undefined && !current.has(String(v.labels[l])))) s.until = null // shown live: its grace is the live worker's
        else if (s.until === null || now >= s.until) d.series.delete(key)
      }
    }
  }

  /**
   * Is `m` a counter read with `max`? If so, its values go into `highest` (and the series into
   * #maxed), and the ledger shows it itself.
   */
  #maxCounter(m: MetricData, highest: Map<string, Map<string, number>>): boolean {
    if (m.type !== 'counter' || m.aggregator !== 'max') return false
    let tracked = this.#maxed.get(m.name)
    if (tracked === undefined) this.#maxed.set(m.name, (tracked = { meta: { name: m.name, help: m.help, type: m.type, aggregator: 'max' }, series: new Map() }))
    let top = highest.get(m.name)
    if (top === undefined) highest.set(m.name, (top = new Map()))
    for (const v of m.values) {
      const key = seriesKey(v)
      if (!tracked.series.has(key)) tracked.series.set(key, { labels: v.labels, shown: 0, offset: 0 })
      top.set(key, Math.max(top.get(key) ?? 0, v.value))
    }
    return true
  }
}

/** A gone count: its series, and until when it stays while no live worker shows its upstream (null: no longer than they do). */
interface Departed {
  value: MetricValue
  until: number | null
}

/** Is `m` summed over workers and never falling in one (a counter or histogram, not the reloads)? */
function summed(m: MetricData): boolean {
  return m.name !== RELOADS && (m.type === 'counter' || m.type === 'histogram') && (m.aggregator ?? 'sum') === 'sum'
}

/** A series' identity within its metric: its name (a histogram's `_bucket`, `_sum`, `_count`) and labels. */
function seriesKey(v: MetricValue): string {
  const labels = Object.keys(v.labels).sort().map((k) => `${k}=${String(v.labels[k])}`)
  return `${v.metricName ?? ''}{${labels.join(',')}}`
}
