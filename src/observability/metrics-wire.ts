// The worker -> primary metrics format (`workers` > 1) and the one exposition of several of
// them: each series sent as its exposition text without the value (`name{labels}`, rendered
// once by the worker), values as a plain number array, and the upstream each series belongs to
// as an index into one list per snapshot, so the primary parses no object per series, sums by
// that text and writes every line once (prom-client's AggregatorRegistry hashed every label
// object again and rendered it again: 3-8 s at 10,000 upstreams). Pure: no I/O, no clock (aggregateMetrics yields
// the event loop between slices, nothing else). The primary loads this module, not metrics.ts
// (prom-client).

/**
 * How long a removed upstream's series stay after its last count, ms (5 minutes): every
 * scraper (several Prometheus servers, the primary reading its workers) scraping more often
 * than this sees the counts its removal caused (its users' failovers), then the series go.
 * Here rather than in metrics.ts, with {@link aggregateMetrics}: the workers' primary uses both
 * and so never loads prom-client (about 12 MB of RSS in a bare node process).
 */
export const REMOVED_SERIES_GRACE_MS = 300_000

/** The exposition's content type: prom-client's `Registry.PROMETHEUS_CONTENT_TYPE` (text format 0.0.4). */
export const METRICS_CONTENT_TYPE = 'text/plain; version=0.0.4; charset=utf-8'

/** One metric of a {@link MetricsSnapshot}: its series (keys) and their values, index by index. */
export interface WireMetric {
  readonly name: string
  readonly help: string
  readonly type: string
  /** How it is combined over workers: sum (the default), first, min, max, average, omit (prom-client's names). */
  readonly aggregator: string
  /**
   * Each series' exposition text before its value, after the metric's name (see {@link seriesKey}):
   * `{upstream="a",method="GET"}` of `tether_http_requests_total`, `_bucket{le="0.1",upstream="a"}` of a histogram.
   */
  readonly keys: readonly string[]
  /** Each series' value (null: a value JSON could not carry, NaN or ±Infinity, as before). */
  readonly values: readonly (number | null)[]
  /** Each series' upstream (its `upstream` or else `from` label) as an index into the snapshot's `upstreams`, -1: none; absent: no series has one. */
  readonly owners?: readonly number[]
}

/** What a worker sends for one scrape ({@link toWire}); the ledger and {@link renderAggregate} read it. */
export interface MetricsSnapshot {
  readonly tether: 'metrics'
  /** The upstream ids the series name (their `upstream` and `from` labels), each once. */
  readonly upstreams: readonly string[]
  readonly metrics: readonly WireMetric[]
}

/** One metric as prom-client's getMetricsAsJSON() gives it. */
export interface MetricData {
  readonly name: string
  readonly help: string
  readonly type: string
  readonly aggregator?: string
  readonly values: readonly { readonly value: number | null; readonly labels: Readonly<Record<string, string | number | undefined>>; readonly metricName?: string }[]
}

/** The labels that name an upstream, in the order one is taken as a series' upstream. */
export const UPSTREAM_LABELS = ['upstream', 'from'] as const

/**
 * The snapshot of prom-client's metrics as data. A series' key is its exposition text as
 * prom-client writes it (labels in the order the metric was given them: every worker runs the
 * same code, so a series has the same text in each).
 * Example: toWire([{ name: 'x', help: 'h', type: 'counter', aggregator: 'sum', values: [{ value: 2, labels: { upstream: 'a' } }] }])
 * -> { tether: 'metrics', upstreams: ['a'], metrics: [{ name: 'x', ..., keys: ['{upstream="a"}'], values: [2], owners: [0] }] }
 */
export function toWire(metrics: readonly MetricData[]): MetricsSnapshot {
  const w = new WireWriter()
  for (const m of metrics) w.add(m)
  return w.done()
}

/**
 * Builds one {@link MetricsSnapshot}: metrics as prom-client gives them ({@link add}), or
 * series already written as keys ({@link addKeys}, for a metric that keeps its counts in
 * columns and need not make a label object a series), the upstream list shared.
 */
export class WireWriter {
  readonly #upstreams: string[] = []
  readonly #index = new Map<string, number>()
  readonly #metrics: WireMetric[] = []

  /** Upstream `id`'s index in the snapshot's `upstreams`. */
  upstream(id: string): number {
    let at = this.#index.get(id)
    if (at === undefined) {
      this.#index.set(id, (at = this.#upstreams.length))
      this.#upstreams.push(id)
    }
    return at
  }

  add(m: MetricData): void {
    const name = escapeString(m.name)
    const keys: string[] = []
    const values: (number | null)[] = []
    let owners: number[] | null = null
    for (let i = 0; i < m.values.length; i++) {
      const v = m.values[i]!
      keys.push(seriesKey(name, seriesText(v.metricName ?? name, v.labels)))
      values.push(v.value)
      let owner = -1
      for (const l of UPSTREAM_LABELS) {
        const id = v.labels[l]
        if (id === undefined) continue
        const at = this.upstream(String(id))
        if (owner === -1) owner = at
      }
      if (owner !== -1 && owners === null) owners = new Array<number>(i).fill(-1)
      owners?.push(owner)
    }
    this.#metrics.push({ name: m.name, help: m.help, type: m.type, aggregator: m.aggregator ?? 'sum', keys, values, ...(owners === null ? {} : { owners }) })
  }

  /** A metric whose series are written already (keys as {@link seriesKey} gives them; owners from {@link upstream}). */
  addKeys(m: WireMetric): void {
    this.#metrics.push(m)
  }

  done(): MetricsSnapshot {
    return { tether: 'metrics', upstreams: this.#upstreams, metrics: this.#metrics }
  }
}

/** A label value as the exposition writes it between its quotes. Example: labelValue('a"b') -> 'a\\"b'. */
export function labelValue(v: string): string {
  return escapeString(v).replace(/"/g, '\\"')
}

/**
 * `x` as a snapshot: one sent by a worker as is, prom-client's getMetricsAsJSON() array
 * converted; null for anything else and for one without metrics (a worker whose metrics failed
 * answers `[]`).
 */
export function readSnapshot(x: unknown): MetricsSnapshot | null {
  if (Array.isArray(x)) return x.length === 0 ? null : toWire(x as MetricData[])
  if (typeof x !== 'object' || x === null || (x as { tether?: unknown }).tether !== 'metrics') return null
  const s = x as MetricsSnapshot
  return Array.isArray(s.metrics) && s.metrics.length > 0 && Array.isArray(s.upstreams) ? s : null
}

/** A series' exposition text before its value, as prom-client writes it. Example: seriesText('x', { a: 'b"' }) -> 'x{a="b\\""}'. */
export function seriesText(name: string, labels: Readonly<Record<string, string | number | undefined>>): string {
  let text = ''
  for (const k in labels) {
    const v = labels[k]
    text += `${text === '' ? '' : ','}${k}="${typeof v === 'string' ? labelValue(v) : String(v)}"`
  }
  return text === '' ? name : `${name}{${text}}`
}

/**
 * A series' key within metric `name` (escaped): its text after the name, or the whole text after
 * a NUL when it does not begin with the name (no metric name holds one). The name is sent once,
 * not in each of 200,000 series. Example: seriesKey('x', 'x_sum{a="b"}') -> '_sum{a="b"}'.
 */
export function seriesKey(name: string, text: string): string {
  return text.startsWith(name) ? text.slice(name.length) : `\0${text}`
}

/** A value as prom-client writes it (NaN as `Nan`, as it does). */
function valueText(value: number | null): string {
  const v = value as number
  if (Number.isNaN(v)) return 'Nan'
  if (!Number.isFinite(v)) return v < 0 ? '-Inf' : '+Inf'
  return `${v}`
}

function escapeString(s: string): string {
  return s.replace(/\\/g, '\\\\').replace(/\n/g, '\\n')
}

/** One metric combined over snapshots: its series in order of first appearance. */
interface Combined {
  readonly first: WireMetric
  readonly combine: ((had: number, v: number) => number) | null
  readonly keys: string[]
  readonly values: number[]
  readonly counts: number[] | null
  readonly at: Map<string, number>
}

/** prom-client's aggregators, as it folds them (from 0, ±Infinity; `average` divides at the end). */
const FOLDS: Readonly<Record<string, { readonly start: number; readonly fold: ((had: number, v: number) => number) | null }>> = {
  sum: { start: 0, fold: (a, v) => a + v },
  average: { start: 0, fold: (a, v) => a + v },
  first: { start: 0, fold: null },
  min: { start: Infinity, fold: (a, v) => Math.min(a, v) },
  max: { start: -Infinity, fold: (a, v) => Math.max(a, v) },
}

/**
 * The exposition (Prometheus text 0.0.4) of `snapshots` combined, exactly as prom-client's
 * AggregatorRegistry.aggregate(...).metrics() writes it: metrics in order of first appearance,
 * each with its series in order of first appearance, values folded per the first snapshot's
 * aggregator in snapshot order. `pause` is awaited every `every` series (the caller yields its
 * event loop there). Throws on an unknown aggregator, as prom-client does.
 */
export async function renderAggregate(snapshots: readonly MetricsSnapshot[], pause: () => Promise<void> = async () => {}, every = 50_000): Promise<string> {
  const byName = new Map<string, Combined | null>()
  let done = 0
  for (const s of snapshots) {
    for (const m of s.metrics) {
      let c = byName.get(m.name)
      if (c === undefined) {
        if (m.aggregator === 'omit') {
          byName.set(m.name, null)
          continue
        }
        const f = FOLDS[m.aggregator]
        if (f === undefined) throw new Error(`'${m.aggregator}' is not a defined aggregator.`)
        byName.set(m.name, (c = { first: m, combine: f.fold, keys: [], values: [], counts: m.aggregator === 'average' ? [] : null, at: new Map() }))
      }
      if (c === null) continue
      const { keys, values, counts, at, combine } = c
      const start = FOLDS[c.first.aggregator]!.start
      for (let i = 0; i < m.keys.length; i++) {
        const key = m.keys[i]!
        const v = m.values[i] as number
        const j = at.get(key)
        if (j === undefined) {
          at.set(key, keys.length)
          keys.push(key)
          values.push(combine === null ? v : combine(start, v))
          counts?.push(1)
        } else if (combine !== null) {
          values[j] = combine(values[j]!, v)
          if (counts !== null) counts[j]!++
        }
        if (++done === every) {
          done = 0
          await pause()
        }
      }
    }
  }
  const blocks: string[] = []
  for (const c of byName.values()) {
    if (c === null) continue
    const name = escapeString(c.first.name)
    let text = `# HELP ${name} ${escapeString(c.first.help)}\n# TYPE ${name} ${c.first.type}`
    const { keys, values, counts } = c
    let lines: string[] = []
    for (let i = 0; i < keys.length; i++) {
      const key = keys[i]!
      lines.push(`${key.startsWith('\0') ? key.slice(1) : name + key} ${valueText(counts === null ? values[i]! : values[i]! / counts[i]!)}`)
      if (++done === every) {
        text += `\n${lines.join('\n')}`
        lines = []
        done = 0
        await pause()
      }
    }
    blocks.push(lines.length === 0 ? text : `${text}\n${lines.join('\n')}`)
  }
  return `${blocks.join('\n\n')}\n`
}

/**
 * One exposition of the metrics of several workers, each given as its `Metrics.snapshot`
 * (or prom-client's getMetricsAsJSON() array): counters and histograms summed, whole views per
 * metrics.ts's AGGREGATORS; the text prom-client's AggregatorRegistry writes, written without it
 * ({@link renderAggregate}). The event loop is yielded every 50,000 series (10,000 upstreams: about
 * 400,000 with 2 workers), so a big scrape never holds the primary for long.
 */
export async function aggregateMetrics(snapshots: readonly unknown[]): Promise<{ readonly contentType: string; readonly text: string }> {
  const read = snapshots.map(readSnapshot).filter((s): s is MetricsSnapshot => s !== null)
  return { contentType: METRICS_CONTENT_TYPE, text: await renderAggregate(read, () => new Promise<void>((resolve) => setImmediate(resolve))) }
}
