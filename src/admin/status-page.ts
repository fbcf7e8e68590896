// The status page the admin listener serves at `/`: one self-contained HTML document (inline CSS
// and JS, no build step, no external resource) that polls `GET /status` every second and drives
// drains and the session lookup through the admin API. Layer 4 (admin): holds text and its
// Content-Security-Policy only; it reads no state and renders server data as text, never HTML.
import { createHash } from 'node:crypto'

/** How often the page polls `GET /status`, ms. */
export const STATUS_POLL_MS = 1_000

const STYLE = `
:root { color-scheme: light dark; --ok: #1a7f37; --bad: #c62828; --warn: #9a6700; --muted: #667; --line: #8884; }
* { box-sizing: border-box; }
body { margin: 0; font: 15px/1.4 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; }
header, main { padding: 0.5rem 1rem; max-width: 80rem; margin: 0 auto; }
header { display: flex; flex-wrap: wrap; align-items: baseline; gap: 0 1rem; border-bottom: 1px solid var(--line); }
h1 { font-size: 1.3rem; margin: 0.3rem 0; }
h2 { font-size: 1.1rem; margin: 1.2rem 0 0.4rem; }
h3 { font-size: 1rem; margin: 0.8rem 0 0.3rem; }
button, input { font: inherit; }
button { padding: 0.3rem 0.6rem; border: 1px solid var(--muted); border-radius: 4px; background: transparent; color: inherit; cursor: pointer; }
button:hover { background: #8882; }
input { padding: 0.3rem; border: 1px solid var(--muted); border-radius: 4px; min-width: 0; }
:focus-visible { outline: 3px solid #1f6feb; outline-offset: 2px; }
.muted { color: var(--muted); }
.badge { display: inline-block; padding: 0 0.4rem; border-radius: 3px; font-weight: 600; border: 1px solid currentColor; }
.state-healthy { color: var(--ok); }
.state-unhealthy, .state-ejected { color: var(--bad); }
.state-draining, .state-disabled { color: var(--warn); }
.ready-true { color: var(--ok); font-weight: 600; }
.ready-false { color: var(--bad); font-weight: 600; }
table { border-collapse: collapse; width: 100%; }
th, td { text-align: left; padding: 0.35rem 0.5rem; border-bottom: 1px solid var(--line); vertical-align: top; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
.action-buttons { display: flex; flex-wrap: wrap; gap: 0.3rem; }
progress { width: 6rem; }
form { display: flex; flex-wrap: wrap; align-items: center; gap: 0.4rem; margin: 0.5rem 0; }
#token-form { padding: 0.6rem; border: 2px solid var(--warn); border-radius: 4px; }
figure { margin: 0.5rem 0; }
#spark { width: 100%; max-width: 40rem; height: 3.5rem; display: block; }
#spark-line { fill: none; stroke: #1f6feb; stroke-width: 1.5; vector-effect: non-scaling-stroke; }
dl { display: grid; grid-template-columns: max-content 1fr; gap: 0.1rem 1rem; margin: 0.3rem 0; }
dt { color: var(--muted); }
dd { margin: 0; overflow-wrap: anywhere; }
#moves { display: flex; flex-wrap: wrap; gap: 0.2rem 1.5rem; }
#moves div { display: flex; gap: 0.4rem; }
[hidden] { display: none !important; }
@media (max-width: 48rem) {
  table, thead, tbody, tr, th, td { display: block; }
  thead { position: absolute; width: 1px; height: 1px; overflow: hidden; clip-path: inset(50%); }
  tr { border: 1px solid var(--line); border-radius: 4px; margin: 0 0 0.6rem; padding: 0.3rem 0; }
  td { border: 0; padding: 0.15rem 0.6rem; display: flex; gap: 0.5rem; justify-content: space-between; flex-wrap: wrap; }
  td.num { text-align: left; }
  td::before { content: attr(data-label); color: var(--muted); }
  td.id { font-weight: 600; }
  td.id::before { content: none; }
}
`

// requests use relative URLs (`status`, not `/status`), so the page also works behind a
// path prefix (kubectl proxy, an ingress sub-path)
const SCRIPT = `
'use strict'
const POLL_MS = ${STATUS_POLL_MS}
const TOKEN_KEY = 'tether-admin-token'
const $ = (id) => document.getElementById(id)
const tokenRequired = document.body.dataset.tokenRequired === 'true'
let token = sessionStorage.getItem(TOKEN_KEY)
/** What to run once a token is given (the poll, actions that got 401). */
const pending = new Set()
let timer = null
let polling = false
const rows = new Map()
/** Per drain (id and start), the most users left that the page saw: the 0% of its progress bar. */
const drainStart = new Map()

function el(tag, props, ...children) {
  const e = document.createElement(tag)
  Object.assign(e, props)
  for (const c of children) e.append(c)
  return e
}

// a header value is bytes: the token's UTF-8 bytes, as the admin API compares them (fetch sends
// a character up to U+00FF as that one byte, and throws on any other)
function headers() { return token ? { authorization: 'Bearer ' + Array.from(new TextEncoder().encode(token), (b) => String.fromCharCode(b)).join('') } : {} }

class NeedToken extends Error {}

/** fetch with the token; a 401 asks for the token and runs \`retry\` once it is given. */
async function call(method, path, retry) {
  if (tokenRequired && !token) { askToken('This Tether needs its admin token.', retry); throw new NeedToken() }
  const r = await fetch(path, { method, headers: headers(), cache: 'no-store' })
  if (r.status === 401) {
    askToken(token ? 'The admin token was refused; enter it again.' : 'This Tether needs its admin token.', retry)
    throw new NeedToken()
  }
  return r
}

function askToken(why, retry) {
  pending.add(retry)
  const form = $('token-form')
  $('token-why').textContent = why
  if (form.hidden) { form.hidden = false; $('token').focus() }
}

$('token-form').addEventListener('submit', (e) => {
  e.preventDefault()
  token = $('token').value
  sessionStorage.setItem(TOKEN_KEY, token)
  $('token').value = ''
  $('token-form').hidden = true
  const runs = [...pending]
  pending.clear()
  for (const run of runs) run()
  poll()
})

function notice(text) { $('notice').textContent = text }

/** Polls now (unless a poll is under way), then every POLL_MS; stops while a token is asked for. */
async function poll() {
  if (polling) return
  clearTimeout(timer)
  polling = true
  let again = true
  try {
    const r = await call('GET', 'status', poll)
    // 503 with /readyz's shape: a primary none of whose workers has started (yet, or again)
    const body = r.ok || r.status === 503 ? await r.json().catch(() => null) : null
    if (!r.ok && (body === null || !Array.isArray(body.reasons))) throw new Error('GET /status answered ' + r.status)
    if (r.ok) render(body)
    else renderDown(body)
    $('conn').textContent = ''
  } catch (err) {
    if (err instanceof NeedToken) again = false
    else $('conn').textContent = 'Tether does not answer (' + new Date().toLocaleTimeString() + ')'
  } finally {
    polling = false
  }
  if (again) timer = setTimeout(poll, POLL_MS)
}

function fmt(n, digits) { return n === null || n === undefined ? '\\u2014' : n.toFixed(digits) }
function secs(ms) { return Math.ceil(ms / 1000) + ' s' }
const EJECTED_FOR = { refused: 'refused connections', error: 'connection errors or resets', timeout: 'timeouts', '5xx': '5xx answers', probes: "another replica's failed checks", unknown: 'ejected by another replica' }
function ejected(u) {
  const e = u.ejection
  const back = e && e.ends === 'probes'
    ? 'back after ' + e.passes_left + ' passed check' + (e.passes_left === 1 ? '' : 's') + ', or in ' + secs(u.ejection_remaining_ms)
    : 'back in ' + secs(u.ejection_remaining_ms)
  return (e ? (EJECTED_FOR[e.reason] || e.reason) + ': ' : '') + back + ' (ejection ' + u.times_ejected + ')'
}

/**
 * Not ready with nothing else known (no worker started): the summary, and no rows, traffic,
 * moves or lookup (nothing shown from before as if current); the next render() brings them back.
 */
function renderDown(s) {
  $('summary').className = 'ready-false'
  $('summary').textContent = 'Not ready: ' + s.reasons.join(', ')
  $('degraded').textContent = ''
  $('updated').textContent = 'updated ' + new Date().toLocaleTimeString()
  renderUpstreams([])
  $('spark-line').setAttribute('points', '')
  $('spark-label').textContent = 'No traffic figures while no worker is up.'
  $('moves').replaceChildren()
  $('lookup').hidden = true
  $('lookup-result').replaceChildren()
}

function render(s) {
  const summary = $('summary')
  summary.className = 'ready-' + s.ready
  summary.textContent = s.ready ? 'Ready' : 'Not ready: ' + s.reasons.join(', ')
  $('degraded').textContent = s.degraded.length ? 'Degraded: ' + s.degraded.join(', ') : ''
  $('updated').textContent = 'updated ' + new Date(s.time).toLocaleTimeString()
  $('window').textContent = s.window_seconds
  renderUpstreams(s.upstreams)
  renderSpark(s.requests_per_second)
  renderMoves(s.moves_per_minute)
  $('lookup').hidden = !s.session_lookup
}

const COLUMNS = ['id', 'state', 'weight', 'in_flight', 'sessions', 'rps', 'errors', 'p99', 'progress', 'actions']
const LABELS = { id: 'Upstream', state: 'State', weight: 'Weight', in_flight: 'In flight', sessions: 'Sessions', rps: 'Req/s', errors: 'Errors', p99: 'p99', progress: 'Ejection / drain', actions: 'Actions' }
const NUMERIC = new Set(['weight', 'in_flight', 'sessions', 'rps', 'errors', 'p99'])

function rowFor(id) {
  let row = rows.get(id)
  if (row) return row
  const tr = el('tr')
  tr.dataset.upstream = id
  const cells = {}
  for (const c of COLUMNS) {
    const td = el('td', { className: (NUMERIC.has(c) ? 'num ' : '') + c })
    td.dataset.label = LABELS[c]
    tr.append(td)
    cells[c] = td
  }
  cells.id.textContent = id
  const actions = el('div', { className: 'action-buttons' })
  const button = (text, label, path) => {
    const b = el('button', { type: 'button', textContent: text })
    b.setAttribute('aria-label', label + ' ' + id)
    b.addEventListener('click', () => act(id, path, label))
    actions.append(b)
    return b
  }
  button('Drain', 'Drain', 'drain')
  button('Drain + migrate', 'Drain and migrate', 'drain?migrate=true')
  button('Undrain', 'Undrain', 'undrain')
  cells.actions.append(actions)
  row = { tr, cells }
  rows.set(id, row)
  return row
}

function renderUpstreams(list) {
  const body = $('upstream-rows')
  const seen = new Set()
  list.forEach((u, i) => {
    seen.add(u.id)
    const { tr, cells } = rowFor(u.id)
    if (body.children[i] !== tr) body.insertBefore(tr, body.children[i] || null)
    tr.dataset.state = u.state
    const badge = el('span', { className: 'badge state-' + u.state, textContent: u.state })
    cells.state.replaceChildren(badge)
    cells.weight.textContent = u.weight === null ? '\\u2014' : String(u.weight) + (u.slow_start_weight < 1 ? ' (' + Math.round(u.slow_start_weight * 100) + '%)' : '')
    cells.in_flight.textContent = String(u.in_flight) + (u.queued ? ' (' + u.queued + ' queued)' : '') + (u.websockets ? ' + ' + u.websockets + ' ws' : '')
    cells.sessions.textContent = u.sessions === null ? '\\u2014' : String(u.sessions)
    cells.rps.textContent = fmt(u.requests_per_second, 1)
    cells.errors.textContent = u.error_rate === null ? '\\u2014' : fmt(u.error_rate * 100, 1) + '%'
    cells.p99.textContent = u.p99_ms === null ? '\\u2014' : (u.p99_ms < 10 ? u.p99_ms.toFixed(1) : Math.round(u.p99_ms)) + ' ms'
    cells.progress.replaceChildren(...progress(u))
  })
  for (const [id, row] of rows) if (!seen.has(id)) { row.tr.remove(); rows.delete(id) }
}

function progress(u) {
  if (u.ejection_remaining_ms !== null) return [ejected(u)]
  if (!u.draining) return [u.active_failed ? 'failing health checks' : '']
  const key = u.id + ' ' + u.draining_since
  const left = u.sessions_remaining
  const parts = ['draining ' + secs(u.draining_for_ms) + (u.migrating ? ', migrating' : '')]
  if (left !== null) {
    const first = Math.max(drainStart.get(key) || 0, left)
    drainStart.set(key, first)
    parts.push(el('br'))
    if (first > 0) {
      const bar = el('progress', { max: first, value: first - left })
      bar.setAttribute('aria-label', 'Drain of ' + u.id + ': ' + left + ' of ' + first + ' users left')
      parts.push(bar, ' ')
    }
    parts.push(left === 0 ? 'no users left' : left + (left === 1 ? ' user left' : ' users left'))
  }
  return parts
}

function renderSpark(values) {
  const max = Math.max(1, ...values)
  const step = 120 / Math.max(1, values.length - 1)
  $('spark-line').setAttribute('points', values.map((v, i) => (i * step).toFixed(1) + ',' + (29 - (v / max) * 27).toFixed(1)).join(' '))
  const now = values.length ? values[values.length - 1] : 0
  $('spark-label').textContent = 'Requests per second over the last ' + values.length + ' s: ' + now + ' in the last second, peak ' + Math.max(0, ...values) + '.'
}

function renderMoves(moves) {
  const items = []
  for (const [reason, n] of Object.entries(moves)) items.push(el('div', {}, el('dt', { textContent: reason }), el('dd', { textContent: String(n) })))
  $('moves').replaceChildren(...items)
}

async function act(id, path, label) {
  const run = () => act(id, path, label)
  try {
    const r = await call('POST', 'upstreams/' + encodeURIComponent(id) + '/' + path, run)
    notice(r.ok ? label + ' ' + id + ': done' : label + ' ' + id + ' failed: ' + (await r.text()).trim())
  } catch (err) {
    if (!(err instanceof NeedToken)) notice(label + ' ' + id + ' failed: ' + err.message)
    return
  }
  poll()
}

const WHEN = (t) => t ? new Date(t).toLocaleString() : '\\u2014'

$('lookup-form').addEventListener('submit', (e) => {
  e.preventDefault()
  lookup($('lookup-key').value.trim())
})

async function lookup(key) {
  const out = $('lookup-result')
  if (!key) return
  try {
    const r = await call('GET', 'sessions/' + encodeURIComponent(key), () => lookup(key))
    if (r.status === 404) { out.replaceChildren(el('p', { textContent: 'No session ' + JSON.stringify(key) + ' is known to this Tether.' })); return }
    if (!r.ok) { out.replaceChildren(el('p', { textContent: 'Lookup failed: ' + (await r.text()).trim() })); return }
    const v = await r.json()
    const pairs = [
      ['Upstream', v.upstream], ['Session', v.session], ['Epoch', String(v.epoch)], ['Source', v.source],
      ['First seen', WHEN(v.created)], ['Last seen', WHEN(v.last_seen)],
      ['Last move', v.last_move ? v.last_move.from + ' \\u2192 ' + v.last_move.to + ' (' + v.last_move.reason + ', ' + WHEN(v.last_move.at) + ')' : '\\u2014'],
      ['Pending move', v.pending_move ? 'to ' + (v.pending_move.to || 'its hash placement') : '\\u2014'],
      ['Checkpoint', v.checkpoint ? v.checkpoint.bytes + ' bytes, ' + WHEN(v.checkpoint.stored_at) : v.checkpoint_status],
      ['Drain', v.drain ? 'draining since ' + WHEN(v.drain.since) + (v.drain.migrate ? ', migrating' : '') : '\\u2014'],
    ]
    const dl = el('dl', { id: 'lookup-fields' })
    for (const [k, val] of pairs) dl.append(el('dt', { textContent: k }), el('dd', { textContent: val }))
    out.replaceChildren(dl)
  } catch (err) {
    if (!(err instanceof NeedToken)) out.replaceChildren(el('p', { textContent: 'Lookup failed: ' + err.message }))
  }
}

poll()
`

function page(tokenRequired: boolean): string {
  return `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Tether status</title>
<link rel="icon" href="data:,">
<style>${STYLE}</style>
</head>
<body data-token-required="${tokenRequired}">
<header>
<h1>Tether</h1>
<p id="summary">Loading&hellip;</p>
<p id="degraded"></p>
<p id="conn" class="ready-false"></p>
<p id="updated" class="muted"></p>
</header>
<main>
<form id="token-form" hidden>
<p id="token-why"></p>
<label for="token">Admin token</label>
<input id="token" type="password" autocomplete="current-password" required>
<button type="submit">Use token</button>
</form>
<p id="notice" role="status" aria-live="polite"></p>
<section aria-labelledby="upstreams-h">
<h2 id="upstreams-h">Upstreams</h2>
<p class="muted">Req/s, errors and p99 over the last <span id="window">10</span> s.</p>
<table>
<thead><tr><th scope="col">Upstream</th><th scope="col">State</th><th scope="col" class="num">Weight</th><th scope="col" class="num">In flight</th><th scope="col" class="num">Sessions</th><th scope="col" class="num">Req/s</th><th scope="col" class="num">Errors</th><th scope="col" class="num">p99</th><th scope="col">Ejection / drain</th><th scope="col">Actions</th></tr></thead>
<tbody id="upstream-rows"></tbody>
</table>
</section>
<section aria-labelledby="traffic-h">
<h2 id="traffic-h">Traffic</h2>
<figure>
<svg id="spark" viewBox="0 0 120 30" preserveAspectRatio="none" role="img" aria-labelledby="spark-label"><polyline id="spark-line" points=""/></svg>
<figcaption id="spark-label" class="muted"></figcaption>
</figure>
<h3>Moves in the last minute</h3>
<dl id="moves"></dl>
</section>
<section id="lookup" aria-labelledby="lookup-h">
<h2 id="lookup-h">Session lookup</h2>
<form id="lookup-form">
<label for="lookup-key">Session key</label>
<input id="lookup-key" required autocomplete="off" spellcheck="false">
<button type="submit">Look up</button>
</form>
<div id="lookup-result" aria-live="polite"></div>
</section>
</main>
<script>${SCRIPT}</script>
</body>
</html>
`
}

function hash(text: string): string {
  return `'sha256-${createHash('sha256').update(text, 'utf8').digest('base64')}'`
}

/**
 * The Content-Security-Policy of the page: nothing but its own inline style and script (by
 * hash) and requests to this listener; no frames, no forms posting elsewhere, no plugins.
 */
export const STATUS_PAGE_CSP = [
  "default-src 'none'",
  `script-src ${hash(SCRIPT)}`,
  `style-src ${hash(STYLE)}`,
  "img-src data:",
  "connect-src 'self'",
  "base-uri 'none'",
  "form-action 'none'",
  "frame-ancestors 'none'",
].join('; ')

const PAGES = { true: page(true), false: page(false) }

/**
 * The page's HTML. `tokenRequired` (is `admin.token` set?) lets the page ask for the token
 * before its first poll instead of after a 401. Example: `statusPage(true)` ->
 * `'<!doctype html>...<body data-token-required="true">...'`.
 */
export function statusPage(tokenRequired: boolean): string {
  return PAGES[`${tokenRequired}`]
}
