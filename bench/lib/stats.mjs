// Small numeric and formatting helpers for the benchmark report.

export function median(xs) {
  const v = xs.filter((x) => typeof x === 'number' && Number.isFinite(x)).sort((a, b) => a - b)
  if (v.length === 0) return null
  const m = v.length >> 1
  return v.length % 2 ? v[m] : (v[m - 1] + v[m]) / 2
}

export const round = (x, d = 2) => (x == null ? null : Math.round(x * 10 ** d) / 10 ** d)

export function fmt(x, d = 0, suffix = '') {
  if (x == null || !Number.isFinite(x)) return '-'
  return x.toFixed(d) + suffix
}

/** Render rows (arrays of strings) as an aligned text table; first row is the header. */
export function table(rows, alignRight = () => true) {
  const widths = rows[0].map((_, i) => Math.max(...rows.map((r) => String(r[i]).length)))
  const line = (r) =>
    r.map((c, i) => (alignRight(i) ? String(c).padStart(widths[i]) : String(c).padEnd(widths[i]))).join('  ')
  return [line(rows[0]), widths.map((w) => '-'.repeat(w)).join('  '), ...rows.slice(1).map(line)].join('\n')
}
