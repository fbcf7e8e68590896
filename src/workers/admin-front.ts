// The primary's admin listener (`workers` > 1): one address for the whole process group.
// /metrics combines every worker's metrics; /upstreams is the leading worker's table with the
// in-flight requests and WebSockets of all workers added up and the most sessions any worker
// still counts on a draining upstream, /status (the status page's data)
// every worker's traffic combined; a session request (by raw key) goes to the leading worker,
// then to the others in turn while none knows the session; every other request (health, drains,
// lookups by logged form) is passed
// to the leading worker's private admin listener, whose effects reach the others through the
// primary (shared health, bindings, ordered moves). Browser requests are
// judged first by the admin API's own guard (a passed request is judged again by the worker,
// which knows the routes and the token). Layer 4 flow.
import http from 'node:http'
import type { AddressInfo } from 'node:net'
import { aggregateMetrics } from '../observability/metrics-wire.js'
import type { Logger } from '../observability/logger.js'
import { combineStatus, type StatusView } from '../admin/status-view.js'
import { BROWSER_REFUSAL_LOG, browserVerdict } from '../admin/browser-guard.js'
import { loggedTarget, parseAdminTarget } from '../admin/admin-target.js'
import { ADMIN_LIMITS, adminHttpServer, type AdminLimits } from '../admin/admin-server.js'
import { SCAN_TIMEOUT, isScan } from '../admin/session-lookup.js'
import { listen, ListenError } from '../listen.js'

/** What the front needs of the supervisor. */
export interface FrontWorkers {
  /** Private admin URLs of the started workers, the leading one first. */
  admins(): readonly string[]
  /** Every started worker's metrics as data. */
  metrics(): Promise<unknown[]>
  /** The primary is shutting down (its workers stop, then it exits). */
  stopping(): boolean
}

const TIMEOUT = 10_000
/** The per-worker counts of an /upstreams row that add up over workers. */
const SUMMED = ['in_flight', 'queued', 'websockets'] as const
/**
 * The per-worker counts of an /upstreams row of which the highest is told: a draining
 * upstream's users not moved yet. With table keys every worker holds every pin (the counts are
 * equal); with Tether's cookie each counts the users it answered, some also answered by
 * another, so the sum would count them twice; the highest is 0 only when no worker counts any
 * (what `tether drain --wait` waits for).
 */
const HIGHEST = ['sessions_remaining'] as const
/** What the admin API sends with every answer (see admin-server.ts). */
const ANSWER_HEADERS = { 'cache-control': 'no-store', 'x-content-type-options': 'nosniff' } as const

interface Answer {
  readonly status: number
  readonly headers: http.IncomingHttpHeaders
  readonly body: Buffer
}

/**
 * `allowedHosts` is `admin.allowed_hosts`; `limits` bound a client's time and body as on the admin listener (tests shorten them).
 * Example: `const front = await startAdminFront('127.0.0.1', 9901, workers, logger, [])`; `front.close()`.
 */
export async function startAdminFront(host: string, port: number, workers: FrontWorkers, logger: Logger, allowedHosts: readonly string[], limits: AdminLimits = ADMIN_LIMITS): Promise<{ readonly url: string; close(): Promise<void> }> {
  // the admin listener's own bounds (deadlines, body, connection cap, write timeout), Node's own answers worded and CONNECT refused: as there
  const server = adminHttpServer(limits, logger, (req, res, body) => {
    // the routes are the worker's: only what needs no route knowledge is judged here (the worker judges the rest)
    const verdict = browserVerdict({ method: req.method ?? '', rawHeaders: req.rawHeaders, hostMustBeKnown: false }, allowedHosts)
    if (!verdict.ok) {
      logger.warn({ method: req.method, path: loggedTarget(req.url), reason: verdict.reason, ...verdict.seen, remote: req.socket.remoteAddress }, BROWSER_REFUSAL_LOG)
      return reply(res, { status: 403, headers: { 'content-type': 'text/plain; charset=utf-8' }, body: Buffer.from(`${verdict.message}\n`) })
    }
    serve(req, res, body, workers).then((a) => a !== null && reply(res, a), (err: unknown) => {
      logger.error({ err }, 'admin request failed in the primary')
      reply(res, { status: 502, headers: { 'content-type': 'text/plain; charset=utf-8' }, body: Buffer.from('Bad Gateway: no worker answered\n') })
    })
  })
  await listen(server, { port, host }, (err) => logger.error({ err }, 'admin listener error')).catch((err: NodeJS.ErrnoException) => {
    throw new ListenError(host, port, 'admin.listen', err)
  })
  const a = server.address() as AddressInfo
  return {
    url: `http://${host.includes(':') ? `[${host}]` : host}:${a.port}`,
    close: () => new Promise<void>((resolve) => {
      server.closeAllConnections()
      server.close(() => resolve())
    }),
  }
}

/** The answer, or null when it was streamed from the leading worker (an event stream stays open). */
async function serve(req: http.IncomingMessage, res: http.ServerResponse, body: Buffer, workers: FrontWorkers): Promise<Answer | null> {
  const admins = workers.admins()
  const route = readRoute(req)
  if (route === 'metrics') {
    const m = await aggregateMetrics(await workers.metrics())
    return { status: 200, headers: { 'content-type': m.contentType }, body: Buffer.from(m.text) }
  }
  if (admins.length === 0) return shuttingDown(req, workers) ?? noWorker(req)
  // the combined routes: a HEAD is answered with the length of the GET's combined answer
  if (route === 'upstreams') {
    const answers = await leadThenOthers(admins, req, body)
    return summed(answers)
  }
  if (route === 'status') {
    const answers = await leadThenOthers(admins, req, body)
    const lead = answers[0]
    if (lead === null || lead === undefined) throw new Error('the leading worker did not answer')
    if (lead.status !== 200) return lead
    const views = answers.filter((a): a is Answer => a !== null && a.status === 200).map((a) => JSON.parse(a.body.toString()) as StatusView)
    return { status: 200, headers: lead.headers, body: json(combineStatus(views)) }
  }
  // a session by its raw key: the leading worker first; one it does not know (with Tether's
  // cookie, each worker records the users it answered) is asked of the others in turn, and the
  // first that knows it answers (a move ordered there reaches every worker through the primary).
  // A logged form (`h:`, table keys, whose pins every worker holds) is the leading worker's.
  const key = sessionKey(req.url ?? '/')
  if (key !== null && !isScan(key)) return firstKnowing(admins, req, body)
  return streamFirst(admins, req, body, res).catch((err: unknown) => {
    const answer = shuttingDown(req, workers)
    if (answer === null) throw err
    return answer
  })
}

/**
 * The probes at the end of a shutdown, once every worker's admin listener has closed and the
 * primary's has not yet: answered here as one process answers them while it stops (`/healthz`
 * ok, `/readyz` 503 "shutting down"), not 502. Null for any other request, or when not stopping.
 */
function shuttingDown(req: http.IncomingMessage, workers: FrontWorkers): Answer | null {
  const path = readRoute(req)
  if (!workers.stopping() || path === null) return null
  if (path === 'healthz') return { status: 200, headers: { 'content-type': 'text/plain; charset=utf-8' }, body: Buffer.from('ok\n') }
  if (path === 'readyz') return { status: 503, headers: { 'content-type': 'application/json' }, body: json({ ready: false, reasons: ['shutting down'], degraded: [] }) }
  return null
}

/** Why the group is not ready while no worker has started (the first start, every worker restarting). */
export const NO_WORKER = 'no worker started yet'

/**
 * The answer while no worker has started: `/healthz` 200 (liveness: the primary is alive and
 * starting or restarting its workers, as one process answers it while its start waits on Redis
 * or discovery; a 503 here had a liveness probe restart a pod whose worker was still waiting);
 * `/readyz` and `/status` (the status page's poll) in `/readyz`'s JSON shape, 503 with the
 * reason (nothing else is known: `/status` needs no token then, as it holds no data); any other
 * request a plain 503.
 */
function noWorker(req: http.IncomingMessage): Answer {
  const path = readRoute(req)
  if (path === 'healthz') return { status: 200, headers: { 'content-type': 'text/plain; charset=utf-8' }, body: Buffer.from('ok\n') }
  if (path === 'readyz' || path === 'status') {
    return { status: 503, headers: { 'content-type': 'application/json' }, body: json({ ready: false, reasons: [NO_WORKER], degraded: [] }) }
  }
  return { status: 503, headers: { 'content-type': 'text/plain; charset=utf-8' }, body: Buffer.from(`Service Unavailable: ${NO_WORKER}\n`) }
}

/**
 * Streams the answer of the first worker whose admin listener takes the connection: one that
 * refuses it (a worker exiting, its listener closed) never got the request, so the next is
 * asked (a drain is made once).
 */
async function streamFirst(admins: readonly string[], req: http.IncomingMessage, body: Buffer, res: http.ServerResponse): Promise<null> {
  for (let i = 0; ; i++) {
    try {
      return await stream(admins[i]!, req, body, res)
    } catch (err) {
      if (i === admins.length - 1 || (err as NodeJS.ErrnoException).code !== 'ECONNREFUSED') throw err
    }
  }
}

/**
 * The leading worker's answer, then, when it is a 200, the others' (null: did not answer): a
 * request the lead refuses (no token, a browser's) is refused and logged once, not by each.
 * Each is asked with GET (a HEAD too): the answers are combined, and a HEAD told their length.
 */
async function leadThenOthers(admins: readonly string[], req: http.IncomingMessage, body: Buffer): Promise<(Answer | null)[]> {
  // a lead whose listener refuses the connection (exiting): the next worker answers for it
  let first = 0
  let lead: Answer | null = null
  for (; first < admins.length; first++) {
    try {
      lead = await pass(admins[first]!, req, body, 'GET')
      break
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ECONNREFUSED') break
    }
  }
  if (lead === null || lead.status !== 200) return [lead]
  return [lead, ...await Promise.all(admins.slice(first + 1).map((url) => pass(url, req, body, 'GET').catch(() => null)))]
}

/** The answer of the first worker that knows the session (not 404), else a 404; throws when none answered. */
async function firstKnowing(admins: readonly string[], req: http.IncomingMessage, body: Buffer): Promise<Answer> {
  let notFound: Answer | null = null
  let failure: unknown = null
  for (const url of admins) {
    try {
      const answer = await pass(url, req, body)
      if (answer.status !== 404) return answer
      notFound = answer
    } catch (err) {
      failure = err // a worker that does not answer (stopping, stuck): the others may know the session
    }
  }
  // a worker that did not answer may know the session: not a 404 then
  if (failure === null && notFound !== null) return notFound
  throw failure
}

/**
 * The route of a GET or HEAD whose path is one segment, decoded as the admin API decodes it
 * (`/metrics?x`, `/%6Detrics` -> `metrics`), so the front combines what a worker would answer
 * alone; null for anything else.
 */
function readRoute(req: http.IncomingMessage): string | null {
  if (req.method !== 'GET' && req.method !== 'HEAD') return null
  const target = parseAdminTarget(req.url)
  return target.ok && target.segments.length === 1 ? target.segments[0]! : null
}

/** The key of `/sessions/<key>[/...]` (decoded as the worker decodes it), else null. */
function sessionKey(url: string): string | null {
  const target = parseAdminTarget(url)
  return target.ok && target.segments[0] === 'sessions' && target.segments.length >= 2 ? target.segments[1]! : null
}

/**
 * Where a request goes at the worker's admin listener (`base`: its http://host:port): the
 * request target exactly as the client sent it. Never resolved against `base`: a target such as
 * `//other:80/x` or `http://other/x` would name another host (the worker answers it 404, as
 * the admin listener does without workers).
 */
function toWorker(base: string, target: string | undefined): { hostname: string; port: string; path: string } {
  const { hostname, port } = new URL(base)
  return { hostname, port, path: target ?? '/' }
}

/** Passes the request to a worker and its answer back as it comes (null once the head is out). */
function stream(base: string, req: http.IncomingMessage, body: Buffer, res: http.ServerResponse): Promise<null> {
  return new Promise((resolve, reject) => {
    const out = http.request({ ...toWorker(base, req.url), method: req.method, headers: forwardable(req, body), setHost: false, agent: false }, (answer) => {
      out.setTimeout(0) // an event stream may stay open
      res.writeHead(answer.statusCode ?? 502, answerHeaders(answer.headers, true))
      answer.pipe(res)
      res.on('close', () => answer.destroy())
      resolve(null)
    })
    out.setTimeout(headTimeout(req.url), () => out.destroy(new Error('worker admin timed out')))
    out.on('error', reject)
    out.end(body)
  })
}

/**
 * How long (ms) a worker may take to start its answer: 10 s, or {@link SCAN_TIMEOUT} for a
 * session lookup or move by logged form (`h:`, its key segment decoded as the worker decodes
 * it), which hashes every key.
 * Example: headTimeout('/sessions/h%3A5c1f...') -> 60000; headTimeout('/upstreams') -> 10000.
 */
export function headTimeout(url: string | undefined): number {
  const target = parseAdminTarget(url)
  const key = target.ok && target.segments[0] === 'sessions' ? target.segments[1] : undefined
  return key !== undefined && isScan(key) ? SCAN_TIMEOUT : TIMEOUT
}

function forwardable(req: http.IncomingMessage, body: Buffer): string[] {
  // the client's header lines as sent (with setHost: false): a second Authorization or Host, or
  // none, reaches the worker, which refuses them as one process does (Node's parsed headers keep
  // the first, and a missing Host would be filled in with the worker's own address). Not
  // `Expect`: the front answered it (a 100 before it read the body, a 417 to any other) and
  // sends the body whole, so a worker's 100 would be one more answer for nothing
  const headers: string[] = []
  for (let i = 0; i + 1 < req.rawHeaders.length; i += 2) {
    const name = req.rawHeaders[i]!.toLowerCase()
    if (name !== 'transfer-encoding' && name !== 'connection' && name !== 'keep-alive' && name !== 'content-length' && name !== 'expect') headers.push(req.rawHeaders[i]!, req.rawHeaders[i + 1]!)
  }
  headers.push('content-length', String(body.length))
  return headers
}

/** An answer's headers without the hop-by-hop ones (and the length, unless streamed as is). */
function answerHeaders(from: http.IncomingHttpHeaders, keepLength: boolean): http.OutgoingHttpHeaders {
  const headers: http.OutgoingHttpHeaders = {}
  for (const [k, v] of Object.entries(from)) {
    if (v !== undefined && k !== 'connection' && k !== 'keep-alive' && k !== 'transfer-encoding' && k !== 'date' && (keepLength || k !== 'content-length')) headers[k] = v
  }
  return headers
}

/** The leading worker's /upstreams with the counts of every worker added up. */
function summed(answers: readonly (Answer | null)[]): Answer {
  const lead = answers[0]
  if (lead === null || lead === undefined) throw new Error('the leading worker did not answer')
  if (lead.status !== 200) return lead
  const rows = JSON.parse(lead.body.toString()) as Record<string, unknown>[]
  for (const other of answers.slice(1)) {
    if (other === null || other.status !== 200) continue
    const theirs = new Map((JSON.parse(other.body.toString()) as Record<string, unknown>[]).map((r) => [r['id'], r]))
    for (const row of rows) {
      const t = theirs.get(row['id'])
      for (const k of SUMMED) if (typeof row[k] === 'number' && typeof t?.[k] === 'number') row[k] = (row[k] as number) + (t[k] as number)
      for (const k of HIGHEST) if (typeof row[k] === 'number' && typeof t?.[k] === 'number') row[k] = Math.max(row[k] as number, t[k] as number)
    }
  }
  return { status: 200, headers: lead.headers, body: json(rows) }
}

/** JSON as the admin API writes it (admin-server.ts): indented, with a final newline. */
function json(value: unknown): Buffer {
  return Buffer.from(`${JSON.stringify(value, null, 2)}\n`)
}

/** The request as the client sent it (a HEAD as `method`, when given), to a worker's private admin listener. */
function pass(base: string, req: http.IncomingMessage, body: Buffer, method = req.method): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const out = http.request({ ...toWorker(base, req.url), method, headers: forwardable(req, body), setHost: false, timeout: TIMEOUT, agent: false }, (res) => {
      const chunks: Buffer[] = []
      res.on('data', (c: Buffer) => chunks.push(c))
      res.on('end', () => resolve({ status: res.statusCode ?? 502, headers: res.headers, body: Buffer.concat(chunks) }))
      res.on('error', reject)
    })
    out.on('timeout', () => out.destroy(new Error('worker admin timed out')))
    out.on('error', reject)
    out.end(body)
  })
}

function reply(res: http.ServerResponse, a: Answer): void {
  // a HEAD passed to a worker gets no body: the length is the worker's, of the body a GET would
  // get; a combined answer is the GET's body (not sent), so its own length
  const length = res.req.method === 'HEAD' && a.body.length === 0 ? a.headers['content-length'] : a.body.length
  res.writeHead(a.status, { ...ANSWER_HEADERS, ...answerHeaders(a.headers, false), ...(length === undefined ? {} : { 'content-length': length }) })
  res.end(a.body)
}
