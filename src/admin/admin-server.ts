// The admin listener (its own port, never the proxy's): liveness, readiness, metrics, the
// upstream list, drain/undrain, the session lookup, and the status page with its JSON. Layer 4 flow: reads state through the callbacks it is
// given and changes it only through them. No request can end the process: bad input gets a
// 4xx, a callback that throws gets 500 with its cause logged; bodies are read, bounded, ignored.
import http from 'node:http'
import type { AddressInfo, Socket } from 'node:net'
import type { Duplex } from 'node:stream'
import { systemClock } from '../clock.js'
import type { Logger } from '../observability/logger.js'
import { ProblemLog } from '../observability/problem-log.js'
import { loggedTarget, parseAdminTarget } from './admin-target.js'
import { BearerToken } from './bearer-token.js'
import { BROWSER_REFUSAL_LOG, browserVerdict } from './browser-guard.js'
import type { TrafficSnapshot } from '../observability/recent-traffic.js'
import type { SessionLookup } from './session-lookup.js'
import { STATUS_PAGE_CSP, statusPage } from './status-page.js'
import { statusView } from './status-view.js'
import type { UpstreamRow } from './upstream-row.js'
import { listen } from '../listen.js'

export interface AdminDeps {
  /** Why Tether is not ready (empty: ready). */
  readonly notReady: () => string[]
  /** What works in a degraded way while Tether stays ready (e.g. Redis unreachable). */
  readonly degraded: () => string[]
  /** One row per upstream (see `upstreamRow`). */
  readonly upstreams: () => readonly UpstreamRow[]
  /** Drain / undrain an upstream (`migrate`: its users move after an idle gap); false when the id is unknown. */
  readonly drain: (id: string, migrate: boolean) => boolean
  readonly undrain: (id: string) => boolean
  /** Does the drain of `id` migrate its users (a drain that migrates stays so)? Absent: as asked. */
  readonly drainMigrates?: (id: string) => boolean
  /**
   * `Authorization: Bearer <token>` required by every route but /healthz, /readyz, /metrics
   * and / (the status page, which holds no data); null: no token, every route is open.
   */
  readonly token: string | null
  /** `admin.allowed_hosts`: names besides IP addresses and `localhost` a browser may reach the listener by (see `browserVerdict`). */
  readonly allowedHosts: readonly string[]
  /** The session lookup; null when the affinity key has no sessions (`key: none`). */
  readonly sessions: SessionLookup | null
  /** Prometheus exposition text, and its content type. */
  readonly metrics: () => Promise<string>
  readonly metricsContentType: string
  /** Where refused credentials and browser requests (warn) and failed requests (error, with the cause) are logged. */
  readonly logger: Logger
  /** Recent traffic of these upstreams (for `GET /status`). */
  readonly traffic: (ids: readonly string[]) => TrafficSnapshot
  /** Now, epoch ms (for `GET /status`: its time and countdowns). */
  readonly now: () => number
}

/** Bounds on what one admin client may hold or send. */
export interface AdminLimits {
  /** Time to send a complete request head, ms (then 408 and close). */
  readonly headersTimeout: number
  /** Time to send a whole request, body included, ms (>= headersTimeout). */
  readonly requestTimeout: number
  /** Idle time of a keep-alive connection between requests, ms. */
  readonly keepAliveTimeout: number
  /** Largest request body read (and ignored), bytes; a larger one gets 413 and a close. */
  readonly maxBodyBytes: number
  /**
   * Open connections at most. One more closes the idle keep-alive ones to make room; when none
   * is idle, the oldest connection without a complete head; when every one has a request in
   * progress, the new one gets 503 and is closed.
   */
  readonly maxConnections: number
  /** Time a client may take nothing of an answer being sent before its connection is closed, ms. */
  readonly writeTimeout: number
  /** Listen on a port of its own, not one shared by cluster workers (a worker's private admin listener). */
  readonly exclusive?: boolean
}

/** The limits of the admin listener in production. */
export const ADMIN_LIMITS: AdminLimits = Object.freeze({
  headersTimeout: 10_000,
  requestTimeout: 30_000,
  keepAliveTimeout: 5_000,
  maxBodyBytes: 16_384,
  maxConnections: 100,
  writeTimeout: 30_000,
})

export interface AdminServer {
  readonly url: string
  close(): Promise<void>
}

/** What a route answers: a string is sent as text/plain, anything else as JSON. */
interface Answer {
  readonly status: number
  readonly body: unknown
  readonly contentType?: string
  readonly headers?: Readonly<Record<string, string>>
}

/** One route: its path (null marks the id segment: an upstream id or a session key), method and handler. */
interface Route {
  readonly path: readonly (string | null)[]
  /** GET routes answer HEAD too. */
  readonly method: 'GET' | 'POST' | 'DELETE'
  /** Answered without the token (probes and metrics scrapers have none). */
  readonly open: boolean
  readonly handle: (id: string, query: URLSearchParams) => Answer | Promise<Answer>
}

const STATUS_TEXT: Readonly<Record<number, string>> = {
  400: 'Bad Request', 401: 'Unauthorized', 403: 'Forbidden', 404: 'Not Found', 405: 'Method Not Allowed', 408: 'Request Timeout',
  409: 'Conflict', 413: 'Content Too Large', 414: 'URI Too Long', 417: 'Expectation Failed', 431: 'Request Header Fields Too Large',
  500: 'Internal Server Error', 503: 'Service Unavailable',
}

/** Headers of the status page: its CSP, and no framing, sniffing or referrer. */
const PAGE_HEADERS: Readonly<Record<string, string>> = Object.freeze({
  'content-security-policy': STATUS_PAGE_CSP,
  'x-frame-options': 'DENY',
  'referrer-policy': 'no-referrer',
})

/**
 * Start the admin listener on host:port (0 picks a free port).
 * Routes: `GET /healthz`, `GET /readyz`, `GET /metrics`, `GET /` (the status page; these four
 * always open), `GET /status` (the page's JSON), `GET /upstreams`,
 * `POST /upstreams/<id>/drain[?migrate=true]`, `POST /upstreams/<id>/undrain`,
 * `GET /sessions/<key>`, `DELETE /sessions/<key>`, `POST /sessions/<key>/move?to=<id>`
 * (token required when set).
 * A browser's cross-site change or request to a rebindable Host gets 403 first (`browserVerdict`).
 * A path matching no route gets 404, a known path with another method 405 and `Allow`.
 * Example: `const admin = await startAdmin('127.0.0.1', 0, deps); fetch(`${admin.url}/healthz`)`.
 */
export async function startAdmin(host: string, port: number, deps: AdminDeps, limits: AdminLimits = ADMIN_LIMITS): Promise<AdminServer> {
  const token = deps.token === null ? null : new BearerToken(deps.token)
  const logger = deps.logger
  const routes: readonly Route[] = [
    { path: ['healthz'], method: 'GET', open: true, handle: () => text(200, 'ok') },
    {
      path: ['readyz'], method: 'GET', open: true,
      handle: () => {
        const reasons = deps.notReady()
        return { status: reasons.length === 0 ? 200 : 503, body: { ready: reasons.length === 0, reasons, degraded: deps.degraded() } }
      },
    },
    { path: ['metrics'], method: 'GET', open: true, handle: async () => ({ status: 200, body: await deps.metrics(), contentType: deps.metricsContentType }) },
    { path: ['upstreams'], method: 'GET', open: false, handle: () => ({ status: 200, body: deps.upstreams() }) },
    // the page holds no data (it asks /status with the token), so it is open like /healthz
    { path: [''], method: 'GET', open: true, handle: () => ({ status: 200, body: statusPage(token !== null), contentType: 'text/html; charset=utf-8', headers: PAGE_HEADERS }) },
    {
      path: ['status'], method: 'GET', open: false,
      handle: () => {
        const rows = deps.upstreams()
        return {
          status: 200,
          body: statusView({
            now: deps.now(), notReady: deps.notReady(), degraded: deps.degraded(), rows,
            traffic: deps.traffic(rows.map((r) => r.id)), sessionLookup: deps.sessions !== null,
          }),
        }
      },
    },
    {
      path: ['upstreams', null, 'drain'], method: 'POST', open: false,
      handle: (id, query) => {
        const migrate = flag(query.get('migrate'))
        if (migrate === null) return text(400, 'Bad Request: migrate must be true or false')
        // the drain as it is now: asking again without migrate does not stop a migration
        const known = deps.drain(id, migrate)
        return drainAnswer(id, known, true, known && (deps.drainMigrates?.(id) ?? migrate))
      },
    },
    { path: ['upstreams', null, 'undrain'], method: 'POST', open: false, handle: (id) => drainAnswer(id, deps.undrain(id), false, false) },
    {
      path: ['sessions', null], method: 'GET', open: false,
      handle: async (key) => {
        const view = await deps.sessions?.find(key) ?? null
        return view === null ? unknownSession(key) : { status: 200, body: view }
      },
    },
    { path: ['sessions', null], method: 'DELETE', open: false, handle: (key) => moveAnswer(key, null, deps.sessions) },
    {
      path: ['sessions', null, 'move'], method: 'POST', open: false,
      handle: (key, query) => {
        const to = query.get('to')
        return to === null || to === '' ? text(400, 'Bad Request: move needs ?to=<upstream id>') : moveAnswer(key, to, deps.sessions)
      },
    },
  ]

  const respond = async (req: http.IncomingMessage, res: http.ServerResponse): Promise<void> => {
    const target = parseAdminTarget(req.url)
    if (!target.ok) return write(res, text(target.status, `${STATUS_TEXT[target.status]}: ${target.reason}`))
    const onPath = routes.filter((r) => r.path.length === target.segments.length && r.path.every((p, i) => p === null || p === target.segments[i]))
    const method = req.method === 'HEAD' ? 'GET' : req.method
    const route = onPath.find((r) => r.method === method)
    // before anything else answers: a tokenless route with data needs a known Host even without
    // browser headers; so does the status page always: opened under a rebound name it would
    // take the operator's token into that origin (whose opener reads it)
    const page = route !== undefined && route.path.length === 1 && route.path[0] === ''
    const verdict = browserVerdict({ method: req.method ?? '', rawHeaders: req.rawHeaders, hostMustBeKnown: route !== undefined && ((!route.open && token === null) || page) }, deps.allowedHosts)
    if (!verdict.ok) {
      logger.warn({ method: req.method, path: loggedTarget(req.url), reason: verdict.reason, ...verdict.seen, remote: req.socket.remoteAddress }, BROWSER_REFUSAL_LOG)
      return write(res, text(403, verdict.message))
    }
    if (onPath.length === 0) return write(res, text(404, 'Not Found'))
    if (route === undefined) {
      return write(res, { ...text(405, 'Method Not Allowed'), headers: { allow: onPath.map((r) => (r.method === 'GET' ? 'GET, HEAD' : r.method)).join(', ') } })
    }
    if (!route.open && token !== null) {
      const verdict = token.check(req.rawHeaders)
      if (verdict === 'ambiguous') return write(res, text(400, 'Bad Request: more than one Authorization header'))
      if (verdict !== 'ok') {
        logger.warn({ method: req.method, path: loggedTarget(req.url), verdict, remote: req.socket.remoteAddress }, 'admin request refused: missing or wrong token')
        return write(res, { ...text(401, verdict === 'wrong' ? 'Unauthorized: wrong admin token' : 'Unauthorized: admin.token required (Authorization: Bearer <token>)'), headers: { 'www-authenticate': 'Bearer realm="tether-admin"' } })
      }
    }
    const id = target.segments[route.path.indexOf(null)] ?? ''
    const q = req.url!.indexOf('?')
    write(res, await route.handle(id, new URLSearchParams(q < 0 ? '' : req.url!.slice(q + 1))))
  }

  const fail = (req: http.IncomingMessage, res: http.ServerResponse, err: unknown): void => {
    logger.error({ err, method: req.method, path: loggedTarget(req.url) }, 'admin request failed')
    if (res.headersSent) res.destroy()
    else write(res, text(500, 'Internal Server Error'))
  }

  const server = adminHttpServer(limits, logger, (req, res) => {
    respond(req, res).catch((err: unknown) => fail(req, res, err))
  })
  await listen(server, { port, host, exclusive: limits.exclusive ?? false }, (err) => logger.error({ err }, 'admin listener error'))
  const a = server.address() as AddressInfo
  const shown = host.includes(':') ? `[${host}]` : host
  return {
    url: `http://${shown}:${a.port}`,
    close: () => new Promise<void>((resolve) => {
      server.closeAllConnections()
      server.close(() => resolve())
    }),
  }
}

/** How long a socket answered raw (a refused CONNECT, a malformed request, one over the connection cap) may stay open after its answer before it is destroyed, ms. */
const RAW_LINGER = 2_000

/** Longest request head the admin listeners read (Node's default, set so that the 431 tells it truly), bytes. */
const MAX_HEAD_BYTES = 16_384

/**
 * What a worker's private admin listener (`exclusive`) reads beyond {@link MAX_HEAD_BYTES},
 * bytes: the primary's front passes on a head it accepted with a few lines changed
 * (`Content-Length` added, `Connection` as Node's client sets it: about 30 bytes), so anything
 * the front accepts is read by the worker too; the front's own 431 keeps the bound for clients.
 */
const FRONT_HEAD_ROOM = 1_024

/** The longest request head a listener under `limits` reads, bytes. */
function maxHead(limits: AdminLimits): number {
  return limits.exclusive === true ? MAX_HEAD_BYTES + FRONT_HEAD_ROOM : MAX_HEAD_BYTES
}

/** The methods of the admin routes: what `OPTIONS *` (RFC 9110 section 9.3.7) answers. */
const SERVER_METHODS = 'GET, HEAD, POST, DELETE'

/**
 * An admin listener's HTTP server under `limits`, the primary's (`workers` > 1) as a worker's:
 * - the head and request deadlines (408 and a close) checked every second at most so they bite
 *   on time, a body read (bounded: 413, see `readBody`) before `handle` gets the request;
 * - at most `limits.maxConnections` connections: one more closes the idle keep-alive ones (their
 *   last answer all sent, no request since; one still being sent is busy: their
 *   clients reconnect at their next request, as nginx reuses its idle connections when it runs
 *   short), so a probe gets through a client that leaks idle connections; when none is idle,
 *   the oldest connection that has not sent a complete head yet is closed (so slow heads
 *   cannot starve a probe); when every one has a request in progress the new one gets 503
 *   and is closed (both warned, spaced out);
 * - an answer begun that the client takes nothing of for `limits.writeTimeout` is cut (before
 *   it begins, a slow handler, a session scan, is waited for);
 * - what Node answered itself without a body (a malformed or oversized head, a head or request
 *   too slow, HTTP/1.1 without Host, an Expect other than 100-continue) gets one line of text;
 *   `Expect: 100-continue` gets no 100 when the request is refused before its body (a declared
 *   body over the bound: 413 at once, RFC 9110 section 10.1.1); `OPTIONS *` gets 200 with `Allow`;
 * - a CONNECT (which Node hands over as a bare socket and, without a listener, closed
 *   unanswered) is answered 405 and closed, as the proxy port answers it: the admin API tunnels nothing.
 * `logger` gets the warnings.
 * Example: `adminHttpServer(ADMIN_LIMITS, logger, (req, res, body) => res.end('ok'))`.
 */
export function adminHttpServer(limits: AdminLimits, logger: Logger, handle: (req: http.IncomingMessage, res: http.ServerResponse, body: Buffer) => void): http.Server {
  const problems = new ProblemLog(logger, systemClock)
  /** Connections answered raw (over the cap, or a request Node could not read): nothing more is answered on them. */
  const answered = new WeakSet<Duplex>()
  /**
   * The connections between two requests: their last answer all handed to the kernel ('finish'),
   * no request since. Not Node's closeIdleConnections, which also closes a connection whose
   * answer is ended but still being sent (a big /metrics to a slow reader). A fresh connection
   * is not idle (its first head may be coming; the head deadline bounds it).
   */
  const idle = new Set<Socket>()
  /**
   * The connections that have not sent a complete head yet, oldest first: at the cap, the oldest
   * is closed to make room (a slow-head client holding the port cannot starve a probe).
   */
  const headless = new Set<Socket>()
  /** Requests of a connection not answered yet (pipelined ones included). */
  const unanswered = new WeakMap<Socket, number>()
  const onRequest = (req: http.IncomingMessage, res: http.ServerResponse, early = earlyAnswer(req, limits)): void => {
    const socket = req.socket as Socket
    idle.delete(socket)
    headless.delete(socket)
    unanswered.set(socket, (unanswered.get(socket) ?? 0) + 1)
    res.once('finish', () => {
      const left = (unanswered.get(socket) ?? 1) - 1
      unanswered.set(socket, left)
      if (left === 0 && !socket.destroyed && !answered.has(socket)) idle.add(socket)
    })
    if (answered.has(req.socket)) return // its answer is out; the linger closes it
    res.setTimeout(limits.writeTimeout, () => {
      if (!res.headersSent) return // still being computed: the next write arms it again
      logger.info({ method: req.method, path: loggedTarget(req.url), remote: req.socket.remoteAddress, write_timeout_ms: limits.writeTimeout }, 'admin client took nothing of its answer in time: connection closed')
      res.destroy()
    })
    if (early !== null) {
      req.on('error', () => { /* the client went away */ })
      req.resume()
      return write(res, early)
    }
    readBody(req, res, limits.maxBodyBytes, (body) => {
      // answered raw meanwhile (a 408 for a body too slow, whose rest came within the linger): the client was told it failed
      if (answered.has(req.socket)) return
      if (req.method !== 'OPTIONS' || req.url !== '*') return handle(req, res, body)
      res.writeHead(200, { allow: SERVER_METHODS, 'content-length': 0, 'cache-control': 'no-store', 'x-content-type-options': 'nosniff' })
      res.end()
    })
  }
  const server = http.createServer({
    headersTimeout: limits.headersTimeout,
    requestTimeout: limits.requestTimeout,
    keepAliveTimeout: limits.keepAliveTimeout,
    maxHeaderSize: maxHead(limits),
    // Node checks the two timeouts above only this often (default 30 s)
    connectionsCheckingInterval: Math.min(1_000, limits.headersTimeout),
    // judged by earlyAnswer (Node's own 400 has no body)
    requireHostHeader: false,
  }, (req, res) => onRequest(req, res))
  // a declared body over the bound is refused before the client sends it: no 100 first
  server.on('checkContinue', (req: http.IncomingMessage, res: http.ServerResponse) => {
    const early = earlyAnswer(req, limits)
    if (early === null) res.writeContinue()
    onRequest(req, res, early)
  })
  server.on('checkExpectation', (req: http.IncomingMessage, res: http.ServerResponse) => {
    onRequest(req, res, closing(417, 'Expectation Failed: the admin API understands only Expect: 100-continue'))
  })
  server.on('clientError', (err: NodeJS.ErrnoException, socket: Duplex) => {
    // answered as Node answers (not when part of an answer went out: it would corrupt it), with a body
    const pending = (socket as Duplex & { _httpMessage?: http.ServerResponse | null })._httpMessage
    if (answered.has(socket) || !socket.writable || pending?.headersSent === true) return void socket.destroy()
    answered.add(socket)
    const [status, message] = parserRefusal(err.code, limits)
    answerRaw(socket, status, message)
  })
  const open = new Set<Socket>()
  server.on('connection', (socket: Socket) => {
    open.add(socket)
    socket.once('close', () => { open.delete(socket); idle.delete(socket); headless.delete(socket) })
    if (open.size <= limits.maxConnections) {
      headless.add(socket)
      problems.resolve('admin heads', {}, 'admin listener: below its connection cap again')
      return void problems.resolve('admin connections', {}, 'admin listener: new connections are served again')
    }
    for (const s of idle) s.destroy()
    idle.clear()
    let busy = 0
    for (const s of open) if (!s.destroyed) busy++
    if (busy > limits.maxConnections) {
      // none idle: the oldest connection still without a complete head makes room (its client
      // sent nothing whole within the time the others took: a slow head, or a connection opened
      // and left), as the new one may be a probe
      for (const s of headless) {
        headless.delete(s)
        if (s.destroyed) continue
        s.destroy()
        busy--
        problems.report('admin heads', 'closed', { remote: s.remoteAddress, max_connections: limits.maxConnections },
          'admin listener at its connection cap: the oldest connection without a complete request head was closed to make room')
        break
      }
    }
    if (busy <= limits.maxConnections) return void headless.add(socket)
    answered.add(socket)
    problems.report('admin connections', 'all busy', { max_connections: limits.maxConnections, remote: socket.remoteAddress },
      'admin listener: every connection it keeps is busy (none idle to close): new connections get 503')
    answerRaw(socket, 503, `Service Unavailable: the admin listener has ${limits.maxConnections} connections open, none idle`)
  })
  server.on('connect', (_req: http.IncomingMessage, socket: Duplex) => {
    // an empty Allow: the authority a CONNECT names is no resource here (RFC 9110 section 10.2.1)
    answerRaw(socket, 405, 'Method Not Allowed: the admin API tunnels nothing (CONNECT)', 'allow: \r\n')
  })
  return server
}

/**
 * Writes one answer on a raw socket and closes it: ended at once, its input read and dropped
 * so that the client's end is seen, destroyed after a linger (as the proxy port's
 * endThenDestroy): a client that never closes its side would hold it, and the listener's
 * close, for ever. A CONNECT's socket is no longer the server's (no deadline, not in
 * closeAllConnections), hence the linger on every such answer.
 */
function answerRaw(socket: Duplex, status: number, message: string, headers = ''): void {
  socket.on('error', () => { /* the client went away */ })
  socket.resume()
  const linger = setTimeout(() => socket.destroy(), RAW_LINGER)
  socket.once('close', () => clearTimeout(linger))
  const body = `${message}\n`
  socket.end(`HTTP/1.1 ${status} ${STATUS_TEXT[status]}\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: ${Buffer.byteLength(body)}\r\n` +
    `cache-control: no-store\r\nx-content-type-options: nosniff\r\n${headers}connection: close\r\n\r\n${body}`)
}

/** The status and text for a request Node's parser refused (its error code), as the admin API words its errors. */
function parserRefusal(code: string | undefined, limits: AdminLimits): [number, string] {
  switch (code) {
    case 'HPE_HEADER_OVERFLOW':
      return [431, `Request Header Fields Too Large: the admin API reads at most ${maxHead(limits)} bytes of request head`]
    case 'HPE_CHUNK_EXTENSIONS_OVERFLOW':
      return [413, 'Content Too Large: chunk extensions too large']
    case 'ERR_HTTP_REQUEST_TIMEOUT':
      return [408, `Request Timeout: the request head must come within ${limits.headersTimeout} ms, the whole request within ${limits.requestTimeout} ms`]
    default:
      return [400, 'Bad Request: malformed request']
  }
}

/** An answer with a close. */
function closing(status: number, message: string): Answer {
  return { ...text(status, message), headers: { connection: 'close' } }
}

/**
 * The answer to give before the body is read, if any: 400 for HTTP/1.1 without Host (RFC 9112
 * section 3.2; not on a worker's private listener, which the primary passes HTTP/1.0 requests
 * without Host to), 413 for a declared body over the bound; both close the connection.
 */
function earlyAnswer(req: http.IncomingMessage, limits: AdminLimits): Answer | null {
  if (limits.exclusive !== true && req.httpVersion === '1.1' && req.headers.host === undefined) return closing(400, 'Bad Request: an HTTP/1.1 request needs a Host header')
  if (Number(req.headers['content-length']) > limits.maxBodyBytes) return closing(413, `Content Too Large: the admin API reads at most ${limits.maxBodyBytes} bytes of body`)
  return null
}

/**
 * Reads the request body, then calls `next` with it; a body over `max` bytes (streamed; a
 * declared one is refused by earlyAnswer) is answered 413 and the connection closed instead.
 * The admin API ignores bodies; the primary's admin listener passes them on to a worker.
 */
function readBody(req: http.IncomingMessage, res: http.ServerResponse, max: number, next: (body: Buffer) => void): void {
  const chunks: Buffer[] = []
  let size = 0
  let refused = false
  req.on('error', () => { /* the client went away: nothing left to answer */ })
  req.on('data', (chunk: Buffer) => {
    size += chunk.length
    if (size > max && !refused) {
      refused = true
      write(res, closing(413, `Content Too Large: the admin API reads at most ${max} bytes of body`))
    } else if (!refused) chunks.push(chunk)
  })
  req.on('end', () => { if (!refused) next(Buffer.concat(chunks)) })
}

function drainAnswer(id: string, known: boolean, draining: boolean, migrate: boolean): Answer {
  return known ? { status: 200, body: { id, draining, ...(migrate ? { migrate } : {}) } } : text(404, `Not Found: unknown upstream ${JSON.stringify(id)}`)
}

/** A query flag: absent or `false` -> false, `true` (or empty, `?migrate`) -> true, anything else -> null. */
function flag(value: string | null): boolean | null {
  if (value === null || value === 'false') return false
  return value === 'true' || value === '' ? true : null
}

function unknownSession(key: string): Answer {
  return text(404, `Not Found: no session ${JSON.stringify(key.length > 128 ? `${key.slice(0, 128)}...` : key)} known to this Tether`)
}

/** Order a move (`to` null: unpin); 202, since it is done at the user's next request. */
async function moveAnswer(key: string, to: string | null, sessions: SessionLookup | null): Promise<Answer> {
  const verdict = sessions === null ? 'unknown_session' : await sessions.move(key, to)
  if (verdict === 'unknown_session') return unknownSession(key)
  if (verdict === 'unknown_upstream') return text(409, `Conflict: upstream ${JSON.stringify(to)} is unknown or cannot take users now`)
  return { status: 202, body: { key, to, applies: 'at the next request' } }
}

function text(status: number, body: string): Answer {
  return { status, body }
}

/** Writes an answer; JSON is serialized before anything is sent, so a throw leaves room for a 500. */
function write(res: http.ServerResponse, answer: Answer): void {
  const isText = typeof answer.body === 'string'
  const body = isText ? (answer.contentType === undefined ? `${answer.body as string}\n` : answer.body as string) : `${JSON.stringify(answer.body, null, 2)}\n`
  res.writeHead(answer.status, {
    'content-type': answer.contentType ?? (isText ? 'text/plain; charset=utf-8' : 'application/json'),
    'content-length': Buffer.byteLength(body),
    'cache-control': 'no-store',
    'x-content-type-options': 'nosniff',
    ...answer.headers,
  })
  res.end(body)
}
