// The CLI's side of the admin API: `tether session <key>` (one user, printed for a person) and
// `tether drain <id> [--migrate] [--wait]` (a preStop hook that returns once the upstream's
// users have moved). Layer 4 flow: HTTP calls to a running Tether's admin listener through
// node:http (not fetch: fetch refuses the ports on its "bad port" list, 6000 or 6667 among them,
// which admin.listen.port accepts); it never touches a running proxy's state otherwise, and
// never throws (an answer is read up to MAX_ANSWER bytes: a sentence past that, never a string
// too long for V8 thrown from a stream's handler).
import http from 'node:http'
import https from 'node:https'
import { didYouMean, escapeControls, formatDuration, nearest } from '../config/index.js'
import { SCAN_TIMEOUT, isScan, type SessionView } from './session-lookup.js'

/** Where the admin listener is and how to authenticate. */
export interface AdminTarget {
  /** e.g. `http://127.0.0.1:9901` */
  readonly url: string
  readonly token: string | null
}

/** What a command prints and its exit code. */
export interface ClientResult {
  readonly code: number
  readonly out: string
  readonly err: string
}

/** How long one admin call may take, ms. */
const CALL_TIMEOUT = 5_000

/** How long `showSession` waits (ms): for a raw key, and for a logged form (`h:...`, a scan of every key). */
export interface LookupTimeouts {
  readonly call: number
  readonly scan: number
}
const LOOKUP_TIMEOUTS: LookupTimeouts = { call: CALL_TIMEOUT, scan: SCAN_TIMEOUT }

/**
 * `GET /sessions/<key>`, printed line by line (or as the JSON with `json`).
 * Exit 0 when found, 1 when unknown or on an error.
 * Example: `await showSession({ url: 'http://127.0.0.1:9901', token: null }, '10.0.0.5', false)`
 * -> `{ code: 0, out: 'session    h:5c1f...\nupstream   app-1 (epoch 2, ...)\n...' }`.
 */
export async function showSession(admin: AdminTarget, key: string, json: boolean, timeouts: LookupTimeouts = LOOKUP_TIMEOUTS): Promise<ClientResult> {
  // a logged form is resolved by hashing every key the replica holds: seconds at a million users
  const r = await call(admin, 'GET', `/sessions/${encodeURIComponent(key)}`, isScan(key) ? timeouts.scan : timeouts.call)
  if (typeof r === 'string') return { code: 1, out: '', err: `tether session: ${escapeControls(r)}\n` }
  if (!isSessionView(r)) return { code: 1, out: '', err: `tether session: ${notAdmin(admin)}\n` }
  // (JSON.stringify leaves DEL, C1 and bidi controls in a string as they are: escaped line by line, still JSON)
  if (json) return { code: 0, out: `${JSON.stringify(r, null, 2).split('\n').map(escapeControls).join('\n')}\n`, err: '' }
  return { code: 0, out: formatSession(r), err: '' }
}

/** The shape `formatSession` reads (an answer of another server is not one). */
function isSessionView(v: unknown): v is SessionView {
  const s = v as Partial<SessionView> | null
  return typeof s === 'object' && s !== null && typeof s.session === 'string' && typeof s.upstream === 'string' && typeof s.epoch === 'number' &&
    (s.source === 'shared' || s.source === 'table' || s.source === 'seen') && (s.last_move === null || typeof s.last_move === 'object') &&
    (s.pending_move === null || typeof s.pending_move === 'object') && (s.checkpoint === null || typeof s.checkpoint === 'object') && (s.drain === null || typeof s.drain === 'object')
}

/**
 * Said of a 2xx answer that is not the admin API's (`--admin` names another server: the proxy
 * port, an app); the URL named by its origin only, as every error here names it (its path or
 * query may carry a token, see adminOrigin).
 */
function notAdmin(admin: AdminTarget): string {
  return `the answer from ${escapeControls(adminOrigin(admin.url))} is not the Tether admin API's (is --admin the admin listener's address?)`
}

/** One session for a person: a line per fact, `-` where Tether does not know; the admin API's strings with their control characters escaped. */
export function formatSession(v: SessionView): string {
  const source = { shared: 'the shared binding every replica reads', table: "this replica's pin", seen: "this replica's last answer" }[v.source]
  const lines: [string, string][] = [
    ['session', `${v.session} (key: ${v.key_kind})`],
    ['upstream', `${v.upstream} (epoch ${v.epoch}, from ${source})`],
    ['created', v.created ?? '-'],
    ['last seen', v.last_seen ?? '-'],
    ['last move', v.last_move === null ? '-' : `${v.last_move.from} -> ${v.last_move.to} (${v.last_move.reason}) at ${v.last_move.at ?? '-'}`],
    ['pending', v.pending_move === null ? '-' : `move to ${v.pending_move.to ?? 'its hash placement'} at its next request (ordered ${v.pending_move.ordered_at ?? '-'})`],
    ['checkpoint', v.checkpoint === null
      ? v.checkpoint_status === 'none' ? '- (no state store)' : `- (${v.checkpoint_status})`
      : `version ${v.checkpoint.version ?? '-'}, ${v.checkpoint.bytes} bytes, stored ${v.checkpoint.stored_at ?? '-'} by ${v.checkpoint.upstream} (epoch ${v.checkpoint.epoch})`],
    ['drain', v.drain === null ? '-' : `${v.upstream} draining since ${v.drain.since ?? '-'}${v.drain.migrate ? ', users migrate' : ''}`],
  ]
  return lines.map(([k, s]) => `${k.padEnd(11)}${escapeControls(s)}\n`).join('')
}

export interface DrainOptions {
  readonly migrate: boolean
  /** Wait until no session remains on the upstream, or `timeout` ms passed. */
  readonly wait: boolean
  readonly timeout: number
  /** Between two looks at `GET /upstreams`, ms. */
  readonly poll: number
  /**
   * Where each line goes as it happens (the CLI's stdout: a drain can wait minutes, and a
   * preStop hook cut short must still have said that it started); without it, they are
   * collected in the result's `out`.
   */
  readonly progress?: (line: string) => void
}

/**
 * `POST /upstreams/<id>/drain[?migrate=true]`; with `wait`, polls `GET /upstreams` until the
 * row's `sessions_remaining` is 0 (or unknown) or the timeout passed, saying how many sessions
 * remain each time the count changes. Exit 0 then (a preStop hook must not block a pod's
 * shutdown for ever), 1 when the drain itself failed.
 */
export async function drainUpstream(admin: AdminTarget, id: string, o: DrainOptions): Promise<ClientResult> {
  const started = Date.now()
  const r = await call(admin, 'POST', `/upstreams/${encodeURIComponent(id)}/drain${o.migrate ? '?migrate=true' : ''}`)
  if (typeof r === 'string') return { code: 1, out: '', err: `tether drain: ${escapeControls(r.startsWith('404 ') ? await unknownUpstream(admin, id, r) : r)}\n` }
  const answer = r as { id?: unknown; draining?: unknown } | null
  if (typeof answer !== 'object' || answer === null || answer.id !== id || answer.draining !== true) return { code: 1, out: '', err: `tether drain: ${notAdmin(admin)}\n` }
  let out = ''
  const say = (line: string): void => { // (the id from argv: escaped)
    if (o.progress === undefined) out += `${escapeControls(line)}\n`
    else o.progress(`${escapeControls(line)}\n`)
  }
  const done = (line: string): ClientResult => {
    say(line)
    return { code: 0, out, err: '' }
  }
  say(`${id}: draining${o.migrate ? ', users migrate' : ''}`)
  if (!o.wait) return { code: 0, out, err: '' }
  let told: number | null = null
  for (;;) {
    // a look that does not answer waits no longer than the time left (a preStop hook's budget),
    // or 1 s for the last look, at the deadline
    const got = await call(admin, 'GET', '/upstreams', Math.min(CALL_TIMEOUT, Math.max(LAST_LOOK, o.timeout - (Date.now() - started))))
    // not the admin API's list (it answered the drain, so this is rare): counts as not answering
    const rows = typeof got === 'string' || Array.isArray(got) ? got : notAdmin(admin)
    const row = Array.isArray(rows) ? (rows as { id: string; sessions_remaining: number | null }[]).find((u) => u.id === id) : undefined
    const remaining = row?.sessions_remaining ?? null
    if (typeof rows !== 'string' && (row === undefined || remaining === null || remaining === 0)) {
      return done(`${id}: ${row === undefined ? 'left the upstream set' : remaining === null ? 'sessions not counted (affinity.key: none)' : 'no session remains'}`)
    }
    if (Date.now() - started >= o.timeout) {
      return done(`${id}: deadline passed, ${typeof rows === 'string' ? `admin API: ${rows}` : sessionsRemain(remaining!)}`)
    }
    if (typeof rows !== 'string' && remaining !== told) {
      if (told === null) say(`${id}: ${waitingFor(o, o.timeout - (Date.now() - started))}`)
      say(`${id}: ${sessionsRemain(remaining!)}`)
    }
    if (typeof rows !== 'string') told = remaining
    await new Promise((resolve) => setTimeout(resolve, Math.min(o.poll, Math.max(1, o.timeout - (Date.now() - started)))))
  }
}

/** The most upstream ids an "unknown upstream" error lists (a discovered set can have hundreds). */
const KNOWN_LISTED = 20

/**
 * Why a drain of `id` was answered 404 (`answer`, as `call` gives it), with the ids the admin
 * API knows and the ones closest to `id` (all equally close, up to 5):
 * `unknown upstream "app-l"; did you mean "app-1"? (known: app-0, app-1, app-2)`;
 * `unknown upstream "app-3"; did you mean "app-0", "app-1" or "app-2"? (known: ...)`.
 * When the list cannot be had (or holds `id`: the route itself is missing), `answer` as it is.
 */
async function unknownUpstream(admin: AdminTarget, id: string, answer: string): Promise<string> {
  const rows = await call(admin, 'GET', '/upstreams')
  if (!Array.isArray(rows)) return answer
  const ids = rows.map((u: { id?: unknown } | null) => u?.id).filter((k): k is string => typeof k === 'string').sort()
  if (ids.includes(id)) return answer
  const near = didYouMean(nearest(id, ids))
  const listed = ids.length === 0 ? 'no upstream is known (discovery found none yet?)'
    : `known: ${ids.slice(0, KNOWN_LISTED).join(', ')}${ids.length > KNOWN_LISTED ? `, and ${ids.length - KNOWN_LISTED} more (GET /upstreams lists them)` : ''}`
  // (the ids as the admin API sent them: escaped)
  return escapeControls(`unknown upstream ${JSON.stringify(id)}${near === undefined ? '' : `; ${near}`} (${listed})`)
}

/**
 * What `drain --wait` waits for, said once when its first look finds users left: a wait that
 * runs to its deadline (5m by default) because a user has not come back must not look hung.
 * `left`: the time left of --timeout (ms), said in whole seconds (at least 1 s): looks the
 * admin API did not answer may have taken most of it.
 * Example: `waiting up to 5m for them to move: each at their next request after an idle gap (one
 * who does not come back counts until their session expires)`.
 */
function waitingFor(o: DrainOptions, left: number): string {
  const how = o.migrate
    ? 'each at their next request after an idle gap (one who does not come back counts until their session expires)'
    : 'each as their session expires, or at their next request after affinity.drain_timeout (--migrate moves them sooner)'
  return `waiting up to ${formatDuration(Math.max(1, Math.round(left / 1_000)) * 1_000)} for them to move: ${how}`
}

/** Example: sessionsRemain(1) -> '1 session remains'; sessionsRemain(3) -> '3 sessions remain'. */
function sessionsRemain(n: number): string {
  return n === 1 ? '1 session remains' : `${n} sessions remain`
}

/** The longest `drain --wait` waits for its look at the deadline (ms). */
const LAST_LOOK = 1_000

/**
 * An error body as one line of at most 300 characters (the admin API's are one line already),
 * its control characters escaped (escapeControls): another server's text must not reach the
 * terminal as escape sequences.
 */
function oneLine(body: string): string {
  const line = body.trim().replace(/\s*\n\s*/g, ' ')
  return escapeControls(line.length > 300 ? `${line.slice(0, 300)}...` : line)
}

/** One admin call: the parsed JSON, or a sentence saying why not. */
async function call(admin: AdminTarget, method: string, path: string, timeout = CALL_TIMEOUT): Promise<unknown> {
  // a header value is bytes: the token's UTF-8 bytes, as the admin API compares them (Node's
  // http takes a string of characters up to U+00FF as one byte each, and throws on any other);
  // whitespace at its ends (a TETHER_ADMIN_TOKEN from a file ending with a newline) is left out,
  // as fetch's header normalization did
  const token = admin.token?.replace(/^[\t\n\r ]+|[\t\n\r ]+$/g, '')
  const headers: Record<string, string> = token === undefined ? {} : { authorization: `Bearer ${Buffer.from(token, 'utf8').toString('latin1')}` }
  try {
    const res = await request(requestUrl(admin.url, path), method, headers, timeout)
    const body = res.body
    const ok = res.status >= 200 && res.status < 300
    if (res.status === 401) return `${res.status} ${oneLine(body)} (the CLI sends the token of --token, else of TETHER_ADMIN_TOKEN${admin.token === null ? ': neither is set' : ''})`
    // another server's error page (an app's, the proxy port's upstream): said as not the admin API, not printed
    if (!ok && /html/i.test(res.contentType)) return `${res.status}: ${notAdmin(admin)}`
    if (!ok) return `${res.status} ${oneLine(body)}`
    try {
      return JSON.parse(body) as unknown
    } catch {
      return notAdmin(admin)
    }
  } catch (err) {
    const e = err as Error & { code?: string }
    // (the URL from --admin or TETHER_ADMIN, and an error that may quote it: escaped; of the
    // URL only its origin, as its path, query or fragment may carry a token)
    const at = adminOrigin(admin.url)
    if (e.name === 'TimeoutError') return escapeControls(`the admin API at ${at} did not answer within ${timeout / 1000} s`)
    if (e.name === 'AnswerTooLarge') return escapeControls(`${at} ${e.message}`)
    const why = e.code ?? e.message
    return escapeControls(`cannot reach the admin API at ${at}: ${why}${hint(why, e.message, at)}`)
  }
}

/**
 * The URL of the admin API's `path` (`/sessions/k`, `/upstreams/a/drain?migrate=true`) under
 * `--admin`, built with the URL API rather than by appending text: after the admin URL's path
 * (without its trailing `/`: a prefix a proxy in front serves the API under), before its query
 * (`--admin http://h:1/?x=y` was `http://h:1/?x=y/sessions/k`, the API path sent as part of the
 * query), which is kept with the API path's parameters after it; its fragment, never sent, dropped.
 * Example: `requestUrl('http://h:1/?x=y', '/upstreams/a/drain?migrate=true')` ->
 * `http://h:1/upstreams/a/drain?x=y&migrate=true`. A URL that does not parse is left to fail
 * in the request (ERR_INVALID_URL, said as such).
 */
export function requestUrl(adminUrl: string, path: string): string {
  let u: URL
  try {
    u = new URL(adminUrl)
  } catch {
    return `${adminUrl.replace(/\/+$/, '')}${path}`
  }
  const [pathname, query = ''] = path.split('?', 2) as [string, string?]
  u.pathname = `${u.pathname.replace(/\/+$/, '')}${pathname}`
  u.search = [u.search.slice(1), query].filter((q) => q !== '').join('&')
  u.hash = ''
  return u.href
}

/**
 * The scheme, host and port of an admin URL, what an error names of it: its path, query or
 * fragment may carry a token (`?access_key=...`), and its user info is refused before.
 * Example: `adminOrigin('http://10.0.0.1:9901/t0k?key=s')` -> `http://10.0.0.1:9901`.
 */
export function adminOrigin(url: string): string {
  try {
    const u = new URL(url)
    return `${u.protocol}//${u.host}`
  } catch {
    return '(a URL not shown)'
  }
}

/**
 * The most bytes of one admin answer the CLI reads, 128 MiB. The largest real one is
 * `GET /upstreams` (`drain --wait` polls it): about 0.5 to 1.5 KB a row (pretty-printed, with an
 * ejection and several addresses), so some 100 MB at the most upstreams Tether places (65,535);
 * a session view is under 2 KB. More is another server (a big file behind a misdirected
 * --admin, or an endless body), read no further: the CLI never holds it, and never reaches the
 * 512 MiB V8 allows one string.
 */
const MAX_ANSWER = 128 << 20

/**
 * What to try after a connection error `code` (its `message` as Node gives it), for two:
 * - `ECONNREFUSED`: nothing listens there (Tether not running, or its admin listener elsewhere);
 * - `EPROTO` of an https:// URL: the OpenSSL reason, from the message
 *   (`write EPROTO 80BC...:error:0A00010B:SSL routines:ssl3_get_record:wrong version number:../deps/...`),
 *   the reason fetch's error gave, and that the admin listener speaks plain HTTP (it has no TLS).
 */
function hint(code: string, message: string, url: string): string {
  if (code === 'ECONNREFUSED') return ' (is Tether running with admin.listen at this address? --admin or TETHER_ADMIN names another)'
  if (code !== 'EPROTO') return ''
  const reason = /:SSL routines:[^:]*:([^:]+)/.exec(message)?.[1]
  const plain = url.startsWith('https:') ? `; Tether's admin listener is plain HTTP: --admin ${url.replace(/^https:/, 'http:')}?` : ''
  return ` (${reason ?? 'TLS handshake failed'}${plain})`
}

/** An admin answer: its status, content type and body as text. */
interface AdminAnswer {
  readonly status: number
  readonly contentType: string
  readonly body: string
}

/**
 * One HTTP request with its answer read whole, within `timeout` ms for all of it (else it
 * rejects with an error named `TimeoutError`); a connection error rejects with its `code`
 * (`ECONNREFUSED`); an answer of more than MAX_ANSWER bytes, with an error named
 * `AnswerTooLarge`, its connection closed. Example: `await request('http://127.0.0.1:9901/upstreams', 'GET', {}, 5000)`.
 */
function request(url: string, method: string, headers: Record<string, string>, timeout: number): Promise<AdminAnswer> {
  return new Promise((resolve, reject) => {
    const req = (url.startsWith('https:') ? https : http).request(url, { method, headers, signal: AbortSignal.timeout(timeout) }, (res) => {
      const chunks: Buffer[] = []
      let bytes = 0
      res.on('data', (c: Buffer) => {
        bytes += c.length
        if (bytes <= MAX_ANSWER) chunks.push(c)
        // another server's big file (or an endless body): stopped here, not held (and not
        // joined into a string longer than V8 allows, which throws)
        else if (!req.destroyed) {
          reject(Object.assign(new Error(`answered more than ${MAX_ANSWER >> 20} MiB: not the admin API?`), { name: 'AnswerTooLarge' }))
          req.destroy()
        }
      })
      res.on('end', () => {
        try {
          resolve({ status: res.statusCode ?? 0, contentType: res.headers['content-type'] ?? '', body: Buffer.concat(chunks).toString('utf8') })
        } catch (err) {
          reject(err) // (a thrown error here would be uncaught: this runs outside the promise's executor)
        }
      })
      res.on('error', reject)
    })
    // an abort by the timeout rejects with its reason, the TimeoutError
    req.on('error', (err: Error) => reject(err.name === 'AbortError' && err.cause instanceof Error ? err.cause : err))
    req.end()
  })
}
