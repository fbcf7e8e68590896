// The proxy's listener: Node's server with Tether's limits and timeouts (plain HTTP/1.1, with
// h2c by prior knowledge beside it, TLS with HTTP/1.1, or TLS with HTTP/2 by ALPN and HTTP/1.1
// on the same port), the rapid-reset guard of h2 connections, their close after nghttp2's
// own GOAWAY and their lingering close, HTTP/1.1 requests forwarded one at a time per connection, h2 streams side by
// side, the requests one connection may carry and for how long (limits.max_requests_per_connection, timeouts.client_connection_max), upgrades handed to the request path in request order, malformed requests answered,
// and the graceful stop; with `listen.proxy_protocol`, each connection's PROXY header read
// before any of it (proxy-protocol.ts). Layer 4:
// owns the server and its connections, holds no routing or protocol logic (the current
// RequestPath does) and no certificates (tls/server-certificates.ts does).
import http from 'node:http'
import http2 from 'node:http2'
import https from 'node:https'
import net, { type AddressInfo, type Socket } from 'node:net'
import { Duplex as DuplexStream, type Duplex } from 'node:stream'
import { systemClock, systemTimers, type Clock, type Timers } from '../clock.js'
import { listen, ListenError } from '../listen.js'
import type { Config } from '../config/schema.js'
import type { Logger } from '../observability/logger.js'
import { ProblemLog } from '../observability/problem-log.js'
import type { ClientErrors } from './client-error.js'
import { carryStart, keepAliveBounds, MAX_WAITING, noteStart, onePerConnection, requestCap, startOf, timeBound, whenIdle, type KeepAliveBounds, type Overflow } from './pipelining.js'
import { awaitsContinue, expectsContinue, type RequestPath } from './request-path.js'
import { refusedByTether, sendError, writeRawError } from './respond.js'
import { foreignRequestLine } from './request-line.js'
import type { ErrorCode } from '../errors.js'
import { H2Request, H2Response, noteConnection, resetByTether, type H2Connection } from './h2-messages.js'
import { clientIdleTimeout, closeIdleClient, queueWait } from './deadlines.js'
import type { ServerCertificates } from '../tls/server-certificates.js'
import { carryDeclaredPeer, ProxyHeaderReader, type HeaderRefusal } from './proxy-protocol.js'

/** What the listener serves: the request path of the current config (a reload swaps it). */
export interface ListenerDeps {
  readonly current: () => RequestPath
  readonly clientErrors: ClientErrors
  readonly logger: Logger
  /** Timers for the shutdown deadline and sweep (default the global ones). */
  readonly timers?: Timers
  /** The clock that spaces repeated warnings about hostile clients (default the system one). */
  readonly clock?: Clock
  /** The certificates of `listen.tls` (required when it is set). */
  readonly certificates?: ServerCertificates
}

/** Node's HTTP/1.1 server options Tether sets on every listener kind. */
export function http1Options(config: Config): http.ServerOptions {
  const t = config.timeouts
  return {
    maxHeaderSize: config.limits.max_header_bytes,
    headersTimeout: t.client_headers,
    requestTimeout: 0, // long uploads and streams are bounded by idle timeouts instead
    keepAliveTimeout: t.client_keep_alive,
    // Node checks headersTimeout only this often (default 30 s): slow heads must get 408 on time
    connectionsCheckingInterval: Math.max(50, Math.min(500, t.client_headers / 4)),
    noDelay: true,
    // an HTTP/1.1 request without Host (or an empty one) gets Tether's own 400 (see lacksHost),
    // logged and counted as its other refusals: Node's would be a bare 400 nobody sees
    requireHostHeader: false,
  }
}

/**
 * An HTTP/1.1 request without a Host header, or any request with an empty one (Node's parser
 * strips the spaces and tabs around a value: `Host:   ` is empty too): RFC 9112 section 3.2 has
 * a server answer both 400, and an http URI with an empty host is invalid (RFC 9110 section
 * 4.2.1), whatever the version or target form; nginx answers them 400 ("client sent invalid
 * host header"). HTTP/1.0 has no Host: a request without one is served. Over h2 the authority is
 * `:authority`, which nghttp2 requires and refuses empty (it resets such a stream).
 */
export function lacksHost(req: http.IncomingMessage): boolean {
  const host = req.headers.host
  return host === undefined ? req.httpVersionMajor === 1 && req.httpVersionMinor === 1 : host === ''
}

/**
 * The server for `config.listen`: plain HTTP/1.1; with `tls`, HTTPS; with `tls` and
 * `http2.enabled`, node:http2's secure server offering `h2` then `http/1.1` by ALPN (an
 * HTTP/1.1 client gets Node's HTTP/1.1 server on the same port, upgrades included). Node 20's
 * secure h2 server with `allowHTTP1` has the HTTP/1.1 server's connection tracking and
 * timeouts, hence the one type; but it takes none of the HTTP/1.1 options (it sets its own 60 s
 * head and 5 min request timeouts, a 16 KB head, no keep-alive bound, no Host required), so they
 * are set on it as properties, which its HTTP/1.1 connections read (before it listens: the
 * checking interval is read then). A TLS handshake is bounded by `timeouts.client_headers`.
 */
function createServer(config: Config, certificates: ServerCertificates | undefined, handle: http.RequestListener): http.Server {
  const tls = config.listen.tls
  const h1 = http1Options(config)
  if (tls === null) return http.createServer(h1, handle)
  if (certificates === undefined) throw new Error('listen.tls is set but no certificates were loaded')
  const { cert, key, minVersion, ticketKeys, secureOptions } = certificates.defaultOptions
  const secure = { cert, key, minVersion, ticketKeys, secureOptions, SNICallback: certificates.sniCallback, handshakeTimeout: config.timeouts.client_headers }
  if (!config.listen.http2.enabled) return https.createServer({ ...h1, ...secure }, handle)
  const h2 = http2.createSecureServer({
    ...h1,
    ...secure,
    allowHTTP1: true,
    Http2ServerRequest: H2Request,
    Http2ServerResponse: H2Response,
    ...h2SessionOptions(config),
  }, handle as unknown as (req: http2.Http2ServerRequest, res: http2.Http2ServerResponse) => void)
  Object.assign(h2, {
    headersTimeout: h1.headersTimeout,
    requestTimeout: h1.requestTimeout,
    keepAliveTimeout: h1.keepAliveTimeout,
    connectionsCheckingInterval: h1.connectionsCheckingInterval,
    maxHeaderSize: h1.maxHeaderSize,
    requireHostHeader: false,
  })
  return h2 as unknown as http.Server
}

/**
 * A Duplex relaying `socket` from its JavaScript side (so the bytes already read and put back
 * come first), with the socket's addresses and timeouts, for node:http2, which reads a real
 * socket's handle directly but takes any Duplex. Example: `h2c.emit('connection', new
 * RelayedSocket(socket))`.
 */
class RelayedSocket extends DuplexStream {
  readonly #socket: Socket
  constructor(socket: Socket) {
    super({ allowHalfOpen: false })
    this.#socket = socket
    socket.on('data', (chunk: Buffer) => { if (!this.push(chunk)) socket.pause() })
    socket.once('end', () => this.push(null))
    socket.once('close', () => this.destroy())
    socket.on('error', (err) => this.destroy(err))
  }
  get remoteAddress(): string | undefined { return this.#socket.remoteAddress }
  get remotePort(): number | undefined { return this.#socket.remotePort }
  get remoteFamily(): string | undefined { return this.#socket.remoteFamily }
  get localAddress(): string | undefined { return this.#socket.localAddress }
  get localPort(): number | undefined { return this.#socket.localPort }
  setTimeout(ms: number, cb?: () => void): this { this.#socket.setTimeout(ms, cb); return this }
  setNoDelay(noDelay?: boolean): this { this.#socket.setNoDelay(noDelay); return this }
  setKeepAlive(enable?: boolean, delay?: number): this { this.#socket.setKeepAlive(enable, delay); return this }
  override _read(): void { this.#socket.resume() }
  override _write(chunk: Buffer, encoding: BufferEncoding, cb: (err?: Error | null) => void): void { this.#socket.write(chunk, encoding, cb) }
  override _final(cb: (err?: Error | null) => void): void { this.#socket.end(cb) }
  override _destroy(err: Error | null, cb: (err?: Error | null) => void): void { this.#socket.destroy(err ?? undefined); cb(err) }
}

/** Kept here for the listeners' importers; defined with the other waits (deadlines.ts). */
export { clientIdleTimeout }

/** Is `req` a stream of an HTTP/2 connection (not an HTTP/1 request line saying HTTP/2.0)? */
function isH2Stream(req: http.IncomingMessage): boolean {
  return req.httpVersionMajor === 2 && (req as { stream?: unknown }).stream !== undefined
}

/** The HTTP/2 client connection preface (RFC 9113 section 3.4). */
const H2_PREFACE = Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n', 'latin1')

/** Streams a connection may open before its share of wasted streams (see guardRapidReset) is judged. */
const RESET_MIN_STREAMS = 100
/** Above this share of wasted streams, the connection is closed... */
const RESET_MAX_SHARE = 0.5
/** ...if the client itself reset at least this share (Tether's refusals alone never close it). */
const RESET_MIN_OWN_SHARE = 0.25

/**
 * Rapid reset (CVE-2023-44487): a client that opens streams and resets them at once makes the
 * server start work (here: an upstream request) it never pays for, unbounded by the
 * concurrent-stream limit. A connection whose streams are mostly wasted (more than half, once
 * it opened 100) while the client itself reset at least a quarter of them gets GOAWAY
 * ENHANCE_YOUR_CALM and is closed; a browser cancelling a few streams is far below that.
 * Reset: before its answer was complete, by the client or by nghttp2 for what the client sent
 * (MadeYouReset, CVE-2025-8671: DATA past its content-length); never a stream Tether reset
 * itself to cut its answer off (an upstream that died mid-body: see resetByTether). Wasted: the
 * resets and the streams refused with Tether's own client error (a TRACE's 405: see
 * refusedByTether), which cost the client as little as a reset and else diluted it below the
 * share (two TRACEs for each reset took a connection to nghttp2's own limit, about 1000
 * resets, some 480 of them forwarded). Refusals count only alongside the client's own resets:
 * a client that resets nothing and gets 413s is refused stream by stream, as nginx does, and
 * its connection stays. `warn` is told of each such close (the listener spaces its lines: see
 * Listener).
 */
function guardRapidReset(session: http2.ServerHttp2Session, warn: (fields: Record<string, unknown>, msg: string) => void): void {
  let streams = 0
  let resets = 0
  let refused = 0
  let judged = false
  session.on('stream', (stream: http2.ServerHttp2Stream) => {
    streams++
    let counted = false
    const wasted = (isReset: boolean): void => {
      if (counted) return
      counted = true
      if (isReset) resets++
      else refused++
      if (streams < RESET_MIN_STREAMS || resets < streams * RESET_MIN_OWN_SHARE || resets + refused <= streams * RESET_MAX_SHARE) return
      if (!judged && !session.closed && !session.destroyed) {
        judged = true
        warn({ streams, resets, refused, peer: sessionPeer(session) }, 'HTTP/2 client resets a quarter or more of its streams and wastes more than half, counting those Tether refused (rapid reset): connection closed')
        closeWithGoaway(session, http2.constants.NGHTTP2_ENHANCE_YOUR_CALM)
      }
    }
    // reset before its answer was complete ('aborted'), or cancelled right after; not a stream
    // Tether reset itself to cut its answer off (Node emits 'aborted' for that one too)
    stream.once('aborted', () => { if (!resetByTether(stream)) wasted(true) })
    stream.once('close', () => {
      if (resetByTether(stream)) return
      if (stream.rstCode === http2.constants.NGHTTP2_CANCEL) wasted(true)
      else if (refusedByTether(stream)) wasted(false)
    })
  })
}

/**
 * Close an h2 connection Tether judged (RFC 9113 section 5.4.1: GOAWAY first): GOAWAY `code`
 * naming `last` (default: the last stream nghttp2 began) at once, so that nghttp2 starts no
 * stream after it, then `close` (default: destroy with `code`) a turn later, out of nghttp2's
 * callbacks (the guards run in a stream's event or a timer). Destroyed from within a stream's
 * event, as the rapid-reset guard did, the client read no GOAWAY in 7 to 18 of 30 floods
 * (measured on Node 20.20 and 24.22: some got none, some an RST that cost them the unread
 * GOAWAY); a turn later and with the lingering close (lingerOnClose), in none of 60 (Node
 * 20.19 and 24.22). The rapid-reset guard alone had still lost it in 3 of 60 to the RST.
 */
function closeWithGoaway(session: http2.ServerHttp2Session, code: number, last?: number, close = (s: http2.ServerHttp2Session) => s.destroy(new Error(`closed with GOAWAY ${code}`), code)): void {
  session.goaway(code, last)
  setImmediate(close, session)
}

/**
 * `limits.max_requests_per_connection` over h2 (`max` streams, `bounds.maxRequests()`; 0: no
 * cap), as nginx's `keepalive_requests` since 1.19.7: the `max`-th stream a client opens is served, Tether sends
 * GOAWAY NO_ERROR naming it (RFC 9113 section 6.8: no stream after it is processed) and a turn
 * later closes the connection gracefully (Node's `close()`, whose own GOAWAY names the same
 * stream: nghttp2 never raises the id it sent): the streams in flight finish, then the
 * connection closes, and the client opens a new one for its next requests, to this Tether
 * replica or another. `close()` alone would name the last stream nghttp2 began: Node tells of
 * streams after nghttp2 read all it was given (measured, 5 heads in one write: its GOAWAY named
 * the 5th). nghttp2 marks the GOAWAY sent only once it is written:
 * streams the client sent in the same read after the `max`-th still reach JavaScript. They are
 * noted here (see refusedPastCap), before the server's own listener hands them on, and refused
 * with `RST_STREAM REFUSED_STREAM` (RFC 9113 section 8.7: not processed, safe to send again),
 * never forwarded; nginx 1.22 refuses them the same way. A connection already closing (a
 * graceful stop, the rapid-reset or slow-head guard) is left to that close.
 *
 * `timeouts.client_connection_max` (`bounds.maxTime()` ms from `start`, the connection's accept; 0: none)
 * ends a connection the same way, at the first stream opened after it, as nginx's
 * `keepalive_time` (ngx_http_v2_state_headers compares each new stream's time with the
 * connection's start). Not by a timer at the bound, as Envoy's `max_connection_duration`:
 * - a connection that opens no stream has nothing to move to another replica; a quiet one is
 *   closed at `timeouts.client_keep_alive` once no stream is open (closeWhenIdle), a graceful stop
 *   sends GOAWAY to every connection anyway;
 * - a GOAWAY at a random time crosses streams the client is sending: those are refused and
 *   sent again, while the GOAWAY sent at a stream names that stream, which is served;
 * - a stream open past the bound (SSE, a gRPC stream) is never cut by either: a timer's
 *   GOAWAY would only turn away streams that the check at the stream turns away as well.
 * `onLast` is told of the GOAWAY: the streams opened, and whether the time bound was reached.
 * Cost: one counter and one end time a connection, a compare and one clock read a stream.
 */
function capStreams(session: http2.ServerHttp2Session, bounds: KeepAliveBounds, start: number | undefined, onLast: (streams: number, byTime: boolean) => void): void {
  const max = requestCap(bounds)
  const until = timeBound(bounds, start)
  if (max === Infinity && until === Infinity) return
  let streams = 0
  let ended = false // the last stream came: every later one is refused
  session.prependListener('stream', (stream: http2.ServerHttp2Stream) => {
    if (ended) return void pastCap.add(stream)
    const byCount = ++streams >= max
    if (!byCount && (until === Infinity || bounds.now() <= until)) return
    ended = true
    if (session.closed || session.destroyed) return
    onLast(streams, !byCount)
    closeWithGoaway(session, http2.constants.NGHTTP2_NO_ERROR, stream.id, closeGracefully)
  })
}

/**
 * An h2 connection with no stream open for `ms` (`timeouts.client_keep_alive`, the HTTP/1.1
 * keep-alive bound) gets GOAWAY NO_ERROR naming the last stream JavaScript was given and is
 * closed, whatever `timeouts.body_idle` is, as nginx closes an idle h2 connection at
 * `keepalive_timeout` since 1.19.7 (ngx_http_v2_handle_connection arms it once the last stream
 * is done, `ngx_http_v2_idle_handler` sends GOAWAY NO_ERROR when it fires). Node's session
 * timer (clientIdleTimeout, only with body_idle > 0) bounds a connection silent both ways, with
 * streams open too; without this one, body_idle 0 let a quiet connection hold its descriptor
 * for ever, and client_connection_max acts only at a stream. The bound starts when the last
 * open stream closes; a stream opening stops it (its own bounds apply then). Nothing else moves
 * it: a client's PINGs, SETTINGS or WINDOW_UPDATEs do not keep the connection open (nginx arms
 * its timer only when it is not set: a PING read while idle does not restart it). Before the
 * first stream the slow-head guard bounds the connection (`timeouts.client_headers`), as an
 * HTTP/1.1 connection before its first request. A connection already closing (a graceful
 * stop, client_connection_max, the requests cap, a guard) is left to that close. A head begun
 * when the bound comes is not named by the GOAWAY: the client knows it was not processed.
 * Cost: one timer a connection, made at its first stream's close and refreshed (not remade)
 * at each later idle start; per stream, a counter and one 'close' listener shared by the
 * connection's streams. The timer fires at most once more while streams are open (it is not
 * cleared at a stream's start): then it does nothing.
 *
 * Returns the idle start for a stream JavaScript is never given: one nghttp2 refused itself (a
 * malformed head), which the slow-head guard proves complete by a PING's answer (guardSlowHead's
 * `complete`); it starts the bound when none ran yet and never extends a running one. Without it a connection whose only stream was refused had no bound at all with
 * body_idle 0 (review s64 r1): no stream of its closed, and the guard, its head proven complete,
 * left it alone.
 */
function closeWhenIdle(session: http2.ServerHttp2Session, ms: number): () => void {
  let open = 0
  let named = 0 // the highest stream id JavaScript was given
  let timer: NodeJS.Timeout | null = null
  const fire = (): void => {
    if (open > 0 || session.closed || session.destroyed) return
    closeWithGoaway(session, http2.constants.NGHTTP2_NO_ERROR, named, closeGracefully)
  }
  const idle = (): void => {
    if (open > 0 || session.closed || session.destroyed) return
    if (timer !== null) return void timer.refresh()
    timer = setTimeout(fire, ms)
    timer.unref()
  }
  const closed = (): void => {
    open--
    idle()
  }
  session.on('stream', (stream: http2.ServerHttp2Stream) => {
    open++
    if ((stream.id ?? 0) > named) named = stream.id ?? 0
    stream.on('close', closed) // (a stream closes once: no once-wrapper made per stream)
  })
  session.once('close', () => { if (timer !== null) clearTimeout(timer) })
  // a refused head starts the bound only when none runs yet: with streams open their close
  // does, and once one ran the timer counts from the last stream's end, which a client's
  // malformed heads do not move (else one every few seconds kept the connection for ever, up
  // to Node's maxSessionRejectedStreams)
  return () => { if (timer === null) idle() }
}

/** Streams opened after their connection's last (see capStreams). */
const pastCap = new WeakSet<http2.ServerHttp2Stream>()

/** Node's graceful close of an h2 connection: its open streams finish first. */
function closeGracefully(session: http2.ServerHttp2Session): void {
  session.close()
}

/**
 * Whether `req` is a stream opened after its connection's last (see capStreams): if so it is
 * refused (`RST_STREAM REFUSED_STREAM`) and must not be served.
 */
function refusedPastCap(req: http.IncomingMessage): boolean {
  const stream = (req as { stream?: http2.ServerHttp2Stream }).stream
  if (stream === undefined || !pastCap.has(stream)) return false
  if (!stream.destroyed) stream.close(http2.constants.NGHTTP2_REFUSED_STREAM)
  return true
}

/**
 * A stream head trickled in (a HEADERS frame, or its CONTINUATION frames, sent a few bytes at
 * a time) is bounded by `timeouts.client_headers`, as an HTTP/1.1 head is; no other frame may
 * come in the middle of one (RFC 9113 section 6.10), so the connection is the unit.
 * - nghttp2 starts a stream once the HEADERS frame's own 9-byte header is in (its
 *   id becomes the session's `lastProcStreamID`) but Node tells JavaScript only of a complete
 *   head ('stream'): a head found incomplete is given `limit` ms from when it was found, then
 *   the connection is closed (`onSlow` is told first). A new connection without a complete head
 *   `limit` ms after it opened is closed (nghttp2 shows no stream before its first head is
 *   complete), as an HTTP/1.1 connection that sent no head is: as a slow head if it began one,
 *   else as an idle connection (only its preface, SETTINGS or PINGs: `GOAWAY NO_ERROR`, last
 *   stream 0, `onSlow` not told), as nginx 1.22 and HAProxy 2.6 close it at their header
 *   timeout (measured: `client_header_timeout`, `timeout http-request`; not the keep-alive
 *   one, which counts from a stream's end), with no log line in nginx.
 * Cost: no interval. One unref'd timer per connection reads `session.state` once per `limit`
 * while nothing is in progress (Node tells of no head begun: the read is the only way to see
 * one), and every `every` ms while a head is. Example: client_headers
 * 10 s, a HEADERS frame at 1 byte a second on a connection that served a request -> closed 10
 * to 20.5 s after its 9th byte.
 */
function guardSlowHead(session: http2.ServerHttp2Session, limit: number, every: number, onSlow: () => void, complete?: () => void): void {
  const opened = performance.now()
  let seen = 0 // the highest stream id JavaScript was given, or known complete by a PING's answer
  let pending = 0 // a stream id nghttp2 began and JavaScript was not given, 0: none
  let probed = 0 // the highest stream id a PING was sent for
  let since = opened
  let timer: NodeJS.Timeout | null = null
  let delay = 0
  const arm = (ms: number): void => {
    if (timer !== null && ms === delay) return void timer.refresh()
    if (timer !== null) clearTimeout(timer)
    delay = ms
    timer = setTimeout(check, ms)
    timer.unref()
  }
  session.on('stream', (stream: http2.ServerHttp2Stream) => {
    const id = stream.id ?? 0
    if (id > seen) seen = id
  })
  // A stream nghttp2 began but reset itself (a malformed head, one over the header limits, one
  // Node refused) is never given to JavaScript either, though its head is complete. A PING tells
  // them apart: its answer proves every head begun before it complete, and a client still
  // trickling one cannot answer.
  const probe = (id: number): void => {
    probed = id
    // (a head proven complete that JavaScript was not given: nghttp2 refused it, the connection
    // is as idle as after a stream's close: `complete`, see closeWhenIdle)
    try { session.ping((err) => { if (err === null && id > seen) { seen = id; complete?.() } }) } catch { /* closing */ }
  }
  function check(): void {
    if (session.destroyed || session.closed) return
    const now = performance.now()
    const started = session.state.lastProcStreamID ?? 0
    // no stream yet: nghttp2 shows the first one only once its head is complete, so a new
    // connection has client_headers from its start for its first head, as on HTTP/1.1
    if (seen === 0 && started === 0) {
      // as nginx 1.22 and HAProxy 2.6 close it at their header timeout: GOAWAY NO_ERROR, last
      // stream 0, and no warning (an unused preconnection, or a client that only PINGs, is idle,
      // not slow: nginx logs nothing; the client knows to open another)
      if (now - opened >= limit) return unused()
      return arm(Math.max(every, limit - (now - opened)))
    }
    if (started <= seen) {
      pending = 0
      return arm(limit)
    }
    if (started !== pending) {
      pending = started
      since = seen === 0 ? opened : now
    }
    // a head never probed is asked about first (one `every` more): found past the bound at the
    // first check, a first stream nghttp2 refused (complete, never given to JavaScript) was
    // closed as slow when the check ran on time, and left open for ever when it ran a little
    // early and the PING was answered (review s64 r1): now always the latter, bounded by closeWhenIdle
    if (probed < started) {
      probe(started)
      return arm(every)
    }
    if (now - since >= limit) return slow()
    arm(every)
  }
  const slow = (): void => {
    onSlow()
    // GOAWAY with the last stream given to JavaScript (RFC 9113 section 6.8): the client learns
    // the unfinished one was not processed. Node's destroy() would send its own with nghttp2's
    // last begun stream, the unfinished one included.
    // The destroy waits a turn: Node writes the GOAWAY then, and nghttp2 bounds the last stream
    // of a later one by what it sent (RFC 9113: never increased); destroyed at once, both were
    // queued and the second named the unfinished stream.
    sentGoaway.add(session)
    closeWithGoaway(session, http2.constants.NGHTTP2_PROTOCOL_ERROR, seen, closeIdleClient)
  }
  // (no stream begun: nghttp2's last stream is 0 too, so Node's GOAWAY names 0 as asked)
  const unused = (): void => {
    sentGoaway.add(session)
    closeWithGoaway(session, http2.constants.NGHTTP2_NO_ERROR, 0, closeIdleClient)
  }
  arm(limit)
  session.once('close', () => { if (timer !== null) clearTimeout(timer) })
}

/**
 * An h2 connection that begins after a graceful stop began (accepted before the listener
 * stopped accepting, its TLS handshake or h2c preface done only after): the streams of its
 * client's first flight, read with its SETTINGS, are answered, as an HTTP/1.1 connection
 * accepted just before the stop gets its request answered; then Node's graceful close sends
 * GOAWAY NO_ERROR naming them and closes the connection once they finish (a stream opened
 * later is refused by the GOAWAY: RFC 9113 section 6.8, the client may retry it elsewhere).
 * Without it such a connection got no GOAWAY, took new streams, and held the stop until the
 * grace period ended, then was cut. A client that sends no preface is closed by the slow-head
 * guard at `timeouts.client_headers`, as an HTTP/1.1 connection that sends nothing.
 */
function closeAfterFirstFlight(session: http2.ServerHttp2Session): void {
  session.once('remoteSettings', () => setImmediate(() => { if (!session.closed && !session.destroyed) session.close() }))
}

/** h2 connections the slow-head guard sent its GOAWAY (its warning told of the close). */
const sentGoaway = new WeakSet<http2.ServerHttp2Session>()

/** node:http2's own key of a session's native handle, found by its description (see closeAfterOwnGoaway). */
let handleKey: symbol | undefined

/**
 * A connection error nghttp2 finds itself (CONTINUATION expected and another frame came, a
 * frame over SETTINGS_MAX_FRAME_SIZE, a PING of the wrong length, a broken HPACK block) gets
 * its GOAWAY, then nghttp2 neither reads nor writes, but Node 20 tells JavaScript nothing and
 * the socket stayed open until the idle bound. RFC 9113 section 5.4.1: after a GOAWAY for a
 * connection error the endpoint MUST close the TCP connection; nginx 1.22 closes at once.
 * Node's graceful close (its `close()`) already has the check: after every write of the
 * session, in C++, "does nghttp2 want neither to read nor to write?", then it calls
 * `ongracefulclosecomplete` on the native handle. Turning it on from the start costs nothing
 * per frame: JavaScript runs only once the session is done, after its GOAWAY went out, and
 * `onDone` closes it then (a session Tether or the client is closing gracefully goes on to
 * Node's own handler). The handle, `setGracefulClose` and the callback are Node internals:
 * Node 20.19.3 and later 20.x, 22, 24 and 26 have them (measured: 20.20.2, 22.23.5, 24.22.3,
 * 26.12.1); 20.18.0 to 20.19.2, which `engines` allows, do not. Returns whether the check is
 * on: false without them (the caller warns; such a connection then waits for the idle bound).
 */
function closeAfterOwnGoaway(session: http2.ServerHttp2Session, onDone: () => void): boolean {
  handleKey ??= Object.getOwnPropertySymbols(session).find((s) => s.description === 'kHandle')
  const handle = handleKey === undefined ? undefined : (session as unknown as Record<symbol, NativeSession | undefined>)[handleKey]
  if (handle === undefined || typeof handle.setGracefulClose !== 'function' || typeof handle.ongracefulclosecomplete !== 'function') return false
  const graceful = handle.ongracefulclosecomplete
  handle.ongracefulclosecomplete = () => {
    if (session.destroyed) return
    if (session.closed) {
      // a graceful close (Tether's stop, or the client's GOAWAY): Node's handler destroys the
      // session once no stream is left; one still held there after nghttp2 is done (a
      // connection error it sent its GOAWAY for while closing) never ends: nghttp2 will not
      // write its answer, and Node's handler would wait for it until the stop's grace ended,
      // or for ever without a stop (the idle bound does not run on a closing session)
      graceful()
      if (!session.destroyed) session.destroy()
      return
    }
    onDone()
    session.destroy()
  }
  handle.setGracefulClose()
  return true
}

/** How long an h2 connection may take to go once its close began (see lingerOnClose). */
const H2_CLOSE_LINGER = 2_000

/** node:http2's own key of a session's socket, found by its description (see lingerOnClose). */
let socketKey: symbol | undefined

/**
 * Every close of an h2 connection (Tether's guards, the idle bound, nghttp2's own errors) is a
 * lingering close, as nginx's `lingering_close`: Node's close writes the GOAWAY, ends the
 * socket and destroys it a turn later, and with bytes of the client still unread (a flood
 * keeps coming) the kernel sends RST rather than FIN: a client still writing then gets EPIPE
 * and may drop the GOAWAY it received but had not read yet. Here that last destroy instead
 * reads and drops what the client still sends until it closes too, and from the moment the
 * close began the socket gets at most `ms` more (a client that never reads cannot hold it).
 * A client that closed its side before (Node's client closes at a GOAWAY that leaves it no
 * stream) is closed at once: over TLS Node had read its end already, and the socket, lingering,
 * saw nothing more until the bound (a graceful stop with an idle h2 client over TLS took 2 s).
 * Cost: two properties set per connection, nothing per frame. The session's socket is a Node
 * internal (its key found by description): without it the close is Node's own.
 */
function lingerOnClose(session: http2.ServerHttp2Session, ms: number): void {
  socketKey ??= Object.getOwnPropertySymbols(session).find((s) => s.description === 'socket')
  const socket = socketKey === undefined ? undefined : (session as unknown as Record<symbol, Duplex | undefined>)[socketKey]
  if (socket === undefined || typeof socket.destroy !== 'function') return
  const destroySocket = socket.destroy
  const destroySession = session.destroy
  session.destroy = function (this: http2.ServerHttp2Session, ...args: Parameters<typeof destroySession>) {
    session.destroy = destroySession
    if (!session.destroyed && !socket.destroyed) {
      const timer = setTimeout(() => destroySocket.call(socket), ms)
      timer.unref()
      socket.once('close', () => clearTimeout(timer))
    }
    return destroySession.apply(this, args)
  }
  socket.destroy = function (this: Duplex, err?: Error) {
    socket.destroy = destroySocket // the client's end, or the bound, destroys it
    // Node's own close, its GOAWAY written and the socket ended: linger (a socket destroyed
    // before its session is destroyed at once; so is one whose client already closed its side:
    // nothing is left to read, and over TLS its close would else go unseen until the bound)
    if (!session.destroyed || !socket.writableFinished || socket.readableEnded || socket.destroyed) return destroySocket.call(socket, err)
    socket.on('error', () => undefined)
    socket.resume()
    return socket
  }
}

/**
 * Node arms a session's idle timer (the server's `setTimeout`, 61 s at the defaults) with a
 * function bound to the session and does not clear it when the session is destroyed: every
 * closed h2 connection stayed in memory, session, socket and buffers, until that timer fired
 * (measured: 200 connections opened and closed, all 200 sessions alive after gc). Node's own
 * clearing (`session.setTimeout(0)` in its `closeSession`) comes after the session is marked
 * destroyed, when `setTimeout` does nothing. Cleared here before each of the two ways Node
 * closes a session: its `destroy()` (Tether's closes, errors, a graceful close that ends), and
 * its socket's 'close' handler, which closes the session without calling `destroy()` (a client
 * that drops the connection while an answer streams: measured, 1000 such connections, all 1000
 * sessions alive after gc, 3.8 kB each). Installed first, so it runs only when the destroy does
 * (see keepStreamErrorsToTheStream); the socket listener goes before Node's. Cost: one
 * property and one listener a connection.
 */
function releaseIdleTimer(session: http2.ServerHttp2Session): void {
  const destroy = session.destroy
  session.destroy = function (this: http2.ServerHttp2Session, ...args: Parameters<typeof destroy>) {
    if (!session.destroyed) session.setTimeout(0)
    return destroy.apply(this, args)
  }
  // (a session destroyed already has no socket: its proxy would throw)
  if (!session.destroyed) session.socket.prependListener('close', () => {
    if (!session.destroyed) session.setTimeout(0)
  })
}

/** nghttp2's NGHTTP2_ERR_PROTO (node:http2's constants lack it). */
const NGHTTP2_ERR_PROTO = -505

/**
 * A stream error stays the stream's (RFC 9113 section 5.4.2). nghttp2 1.69 and later (Node 24
 * has 1.70; Node 20 has 1.61) tell Node of a DATA frame past its stream's content-length (RFC
 * 9113 section 8.1.1: malformed, a stream error) as an invalid frame with NGHTTP2_ERR_PROTO,
 * after queueing the stream's RST_STREAM PROTOCOL_ERROR; Node answers any such report by
 * destroying the whole session with it (`onSessionInternalError` in lib/internal/http2/core.js:
 * GOAWAY INTERNAL_ERROR, every other stream of the client cut). That destroy is not done here:
 * nghttp2 goes on as it decided, resetting only the stream (as Node 20 does, and nginx), or, for
 * a connection error it reports the same way (a HEADERS frame on stream 0), sending its own
 * GOAWAY PROTOCOL_ERROR, after which closeAfterOwnGoaway closes the connection; so only where
 * that check is on. Other errors (nghttp2's fatal ones, too many invalid frames) destroy it as
 * before. Installed after lingerOnClose (whose destroy it wraps). Cost: none per frame.
 */
function keepStreamErrorsToTheStream(session: http2.ServerHttp2Session, told: (err: Error) => void): void {
  const destroy = session.destroy
  session.destroy = function (this: http2.ServerHttp2Session, ...args: Parameters<typeof destroy>) {
    const err = args[0] as (Error & { code?: unknown; errno?: unknown }) | undefined
    if (err instanceof Error && err.code === 'ERR_HTTP2_ERROR' && err.errno === NGHTTP2_ERR_PROTO && !session.destroyed) {
      told(err)
      return
    }
    destroy.apply(this, args)
  }
}

/** What closeAfterOwnGoaway uses of node:http2's native session handle. */
interface NativeSession {
  setGracefulClose?: () => void
  ongracefulclosecomplete?: () => void
}

/**
 * The client address of an h2 connection. An h2c one reaches the h2 server through a stream
 * (RelayedSocket), which Node wraps in a socket without addresses: the wrapped stream has them.
 */
function sessionPeer(session: http2.ServerHttp2Session): string | undefined {
  const socket = session.socket as (Socket & { stream?: { remoteAddress?: string } }) | undefined
  return socket?.remoteAddress ?? socket?.stream?.remoteAddress
}

/**
 * When an h2 connection was accepted (see noteStart): its TLS socket's start, or (h2c) that of
 * the stream relaying its socket, which Node wraps as sessionPeer says; undefined if not noted.
 */
function sessionStart(session: http2.ServerHttp2Session): number | undefined {
  const socket = session.socket as (Socket & { stream?: unknown }) | undefined
  return startOf(socket) ?? startOf(socket?.stream)
}

/** The port of this host an h2 connection reached (h2c: on the wrapped stream, as sessionPeer). */
function sessionLocalPort(session: http2.ServerHttp2Session): number | undefined {
  const socket = session.socket as (Socket & { stream?: { localPort?: number } }) | undefined
  return socket?.localPort ?? socket?.stream?.localPort
}

/**
 * Header fields an h2 request may have: as many as `limits.max_header_bytes` can hold (each
 * counts at least 32 bytes, RFC 7541 section 4.1), so the byte limit governs, as on HTTP/1.1,
 * rather than Node's 128 (a browser sends each cookie as its own field, RFC 9113 section 8.2.3).
 */
function h2HeaderPairs(config: Config): number {
  return Math.max(128, Math.ceil(config.limits.max_header_bytes / 32) + 8)
}

/**
 * Frames nghttp2 refuses on a connection before it closes it: above all streams opened past
 * the announced SETTINGS_MAX_CONCURRENT_STREAMS, each refused with RST_STREAM REFUSED_STREAM
 * (RFC 9113 section 5.1.2; before the client acknowledged the SETTINGS: after, one such stream
 * is a connection error at once), and streams reset for a malformed head. A client that
 * follows the protocol gets none, or a few streams it opened in its first flight before the
 * SETTINGS reached it (browsers and curl assume 100 until then). Node's default is 1000: a
 * client ignoring the limit could push 1000 stream heads and their DATA (which nghttp2 drops,
 * but takes in and acknowledges) through one connection; at 100 such frames it is closed.
 */
const H2_MAX_INVALID_FRAMES = 100

/** The node:http2 session options of both h2 servers (TLS and h2c). */
function h2SessionOptions(config: Config): http2.ServerOptions {
  return {
    maxSessionMemory: 10, // MB per connection, nghttp2's buffers included (Node's default)
    maxSessionInvalidFrames: H2_MAX_INVALID_FRAMES,
    maxHeaderListPairs: h2HeaderPairs(config),
    settings: h2Settings(config),
  }
}

/** The SETTINGS Tether announces to an h2 client. */
function h2Settings(config: Config): http2.Settings {
  return {
    maxConcurrentStreams: config.listen.http2.max_concurrent_streams,
    maxHeaderListSize: config.limits.max_header_bytes,
    enablePush: false,
  }
}

/**
 * Example: `const l = new Listener(config, deps); await l.listen()`; `l.url` ->
 * 'http://127.0.0.1:8080'; at shutdown `await l.close(10_000, () => upgrades.closeAll())`.
 */
export class Listener {
  readonly server: http.Server
  readonly #config: Config
  readonly #deps: ListenerDeps
  /** Client sockets that have Tether's error listener (a keep-alive connection may hand over many h2c requests). */
  readonly #guarded = new WeakSet<Duplex>()
  /** Open HTTP/2 connections: a graceful stop sends each a GOAWAY, a forced one destroys it. */
  readonly #sessions = new Set<http2.ServerHttp2Session>()
  /** TLS connections (Node's h2 server cannot close its HTTP/1.1 ones all at once itself), and h2c ones. */
  readonly #tlsSockets = new Set<Socket>()
  /** Whether this Node's lack of the graceful-close check was told (see closeAfterOwnGoaway). */
  #warnedNoGoawayClose = false
  /** With `listen.http2.cleartext`: the socket server that listens and sorts h2c from HTTP/1.1. */
  #front: net.Server | null = null
  /** With `listen.http2.cleartext`: the h2c server the front hands HTTP/2 connections to. */
  #h2c: http2.Http2Server | null = null
  /** The graceful stop began: the h2 connections open then got their GOAWAY, later ones get theirs as they begin. */
  #stopping = false
  /** With `listen.proxy_protocol`: reads each connection's PROXY header (on the front) before it is served. */
  #proxyHeaders: ProxyHeaderReader | null = null

  constructor(config: Config, deps: ListenerDeps) {
    this.#config = config
    this.#deps = deps
    const t = config.timeouts
    // a connection closed for pipelining too deep is logged (its request being answered is cut:
    // its access line says client_abort), as one closed for rapid reset: each warned once, then
    // at most once per 30 s with how many closes it stands for, as any problem told over and
    // over: a client opening such connections one after another cannot make Tether write one
    // warn line each
    const problems = new ProblemLog(deps.logger, deps.clock ?? systemClock)
    const overflow: Overflow = (socket) => void problems.report('http1 pipelining', 'overflow', { peer: (socket as Socket).remoteAddress, waiting: MAX_WAITING }, 'HTTP/1.1 client pipelined more requests than Tether holds: connection closed')
    const h1Checking = http1Options(config).connectionsCheckingInterval ?? 500
    // read from the current config at a connection's first request (h2: its session's start):
    // a reload applies to connections whose first request comes after it
    const bounds = keepAliveBounds(() => deps.current().config, deps.clock)
    // an HTTP/1.1 request without Host (or any with an empty one) is refused in its turn, as the
    // request path's own 400s are, then the connection closes (nginx 1.22 answers both 400;
    // HAProxy 2.6 passes both on, measured 2026-12-05)
    const serial = onePerConnection((req, res) => {
      if (!lacksHost(req)) return deps.current().handleRequest(req, res)
      if (res.destroyed || req.socket.destroyed) return void res.destroy()
      sendError(res, 'TETHER_BAD_REQUEST', { close: true })
      deps.clientErrors.refused('TETHER_BAD_REQUEST', req)
    }, overflow, bounds)
    // h2 streams of one connection are concurrent by design (bounded by max_concurrent_streams);
    // "HTTP/2.0" in an HTTP/1 request line is not HTTP/2 (which starts with its preface): 505,
    // as nginx answers (else it would pass for h2 and skip the one-at-a-time pipelining rule)
    // (in its turn among the connection's requests: answered after the earlier ones, and
    // the connection then closes without answering those pipelined behind it)
    const refuseVersion = refuseInTurn('TETHER_HTTP_VERSION', deps.clientErrors, overflow, bounds)
    // a request line Node's parser took that is not HTTP/1.x (HTTP/0.9, an RTSP-only method: see
    // request-line.ts) is never sent on as an HTTP/1.1 request: 400 in its turn, then close
    const refuseForeign = refuseInTurn('TETHER_BAD_REQUEST', deps.clientErrors, overflow, bounds)
    const handle: http.RequestListener = (req, res) => {
      if (req.httpVersionMajor === 2) {
        if (isH2Stream(req)) { if (!refusedPastCap(req)) deps.current().handleRequest(req, res) }
        else refuseVersion(req, res)
      } else if (foreignRequestLine(req)) refuseForeign(req, res)
      else serial(req, res)
    }
    // Expect: 100-continue: the request path sends the 100 when it starts reading the body, once
    // every check of its head passed (see awaitsContinue): a refusal the head decides goes out
    // without a 100 first (the TLS server's and the h2c one's: without a listener Node sends
    // 100 Continue itself, before any check)
    const checkContinue = (req: http.IncomingMessage, res: http.ServerResponse): void => {
      awaitsContinue(req, res)
      handle(req, res)
    }
    // an expectation Node's h1 parser does not take for 100-continue (RFC 9110 section 10.1.1
    // defines no other): served, its Expect not sent on, as nginx serves it; without a listener
    // Node answers 417 itself, unlogged and uncounted. Node's h2 layer takes only exact
    // `100-continue` for one: `100-Continue` (the token is case-insensitive) gets its 100 too
    const checkExpectation = (req: http.IncomingMessage, res: http.ServerResponse): void => {
      if (expectsContinue(req.headers.expect)) awaitsContinue(req, res)
      handle(req, res)
    }
    this.server = createServer(config, deps.certificates, handle)
    const onSession = (session: http2.ServerHttp2Session): void => {
      this.#sessions.add(session)
      session.once('close', () => this.#sessions.delete(session))
      releaseIdleTimer(session)
      const peer = sessionPeer(session) // (a destroyed session has no socket left to ask)
      // each stream's request gets the client's address from here: the stream may be gone by
      // the time Node announces it (see H2Connection); before the server's own listener
      const connection: H2Connection = { session, remoteAddress: peer, localPort: sessionLocalPort(session), encrypted: (session.socket as { encrypted?: boolean } | undefined)?.encrypted === true }
      session.prependListener('stream', (stream: http2.ServerHttp2Stream) => noteConnection(stream, connection))
      session.on('error', (err: Error & { code?: string }) => {
        // nghttp2 closed it: too many streams past the concurrent limit or malformed heads (see H2_MAX_INVALID_FRAMES)
        if (err.code === 'ERR_HTTP2_TOO_MANY_INVALID_FRAMES') problems.report('http2 invalid frames', 'invalid frames', { peer, refused: H2_MAX_INVALID_FRAMES }, 'HTTP/2 client opened streams past the concurrent limit (or sent malformed heads) after refusals: connection closed')
        else deps.logger.debug({ err }, 'HTTP/2 session error')
      })
      // a client's protocol error, at info as nginx logs it ("client sent ... while processing
      // HTTP/2 connection"): one line per connection, as an access line per request; not for
      // the slow-head guard's own GOAWAY on a connection with no stream open (warned there)
      const armed = closeAfterOwnGoaway(session, () => {
        if (!sentGoaway.has(session)) deps.logger.info({ peer }, 'HTTP/2 client sent what nghttp2 refused as a connection error (GOAWAY sent): connection closed')
      })
      // told once per listener, at its first h2 connection (no session exists before to ask)
      if (!armed && !this.#warnedNoGoawayClose) {
        this.#warnedNoGoawayClose = true
        deps.logger.warn({ node: process.version }, 'HTTP/2: this Node lacks the internals Tether uses to close a connection once nghttp2 sent its own GOAWAY (Node 20.19.3 and later have them): such connections stay open until the idle bound')
      }
      lingerOnClose(session, H2_CLOSE_LINGER)
      if (armed) keepStreamErrorsToTheStream(session, (err) => deps.logger.debug({ err, peer }, 'HTTP/2 protocol error nghttp2 answers itself (RST_STREAM, or its own GOAWAY)'))
      guardRapidReset(session, (fields, msg) => void problems.report('http2 rapid reset', 'rapid reset', fields, msg))
      capStreams(session, bounds, sessionStart(session), (streams, byTime) => deps.logger.debug({ peer, streams }, byTime
        ? 'HTTP/2 connection reached timeouts.client_connection_max: GOAWAY NO_ERROR sent, its streams in flight finish'
        : 'HTTP/2 connection reached limits.max_requests_per_connection: GOAWAY NO_ERROR sent, its streams in flight finish'))
      const idle = closeWhenIdle(session, t.client_keep_alive)
      guardSlowHead(session, t.client_headers, h1Checking, () => void problems.report('http2 slow head', 'slow head', { peer, client_headers_ms: t.client_headers }, 'HTTP/2 client did not complete a stream head within timeouts.client_headers: connection closed'), idle)
      if (this.#stopping) closeAfterFirstFlight(session)
    }
    this.server.on('session', onSession)
    if (config.listen.tls === null && config.listen.http2.cleartext) {
      // h2c with prior knowledge next to HTTP/1.1: a front socket server reads each
      // connection's first bytes and hands it to the h2 server (the client preface) or to
      // the HTTP/1.1 server (anything else)
      const h2c = http2.createServer({
        Http2ServerRequest: H2Request,
        Http2ServerResponse: H2Response,
        ...h2SessionOptions(config),
      }, handle as unknown as (req: http2.Http2ServerRequest, res: http2.Http2ServerResponse) => void)
      h2c.on('session', onSession)
      // a CONNECT stream is answered by the request path, as on the TLS listener (see below);
      // without a listener Node answers it 405 itself, unlogged and untimed
      h2c.on('connect', (req: http2.Http2ServerRequest, res: http2.Http2ServerResponse) => void (refusedPastCap(req as unknown as http.IncomingMessage) || deps.current().handleRequest(req as unknown as http.IncomingMessage, res as unknown as http.ServerResponse)))
      h2c.on('checkContinue', checkContinue)
      h2c.on('checkExpectation', checkExpectation)
      // an idle h2c connection is closed as a TLS one is (the HTTP/1.1 server's timeout is not its own)
      this.#h2c = h2c
      if (t.body_idle > 0) h2c.setTimeout(clientIdleTimeout(t, queueWait(config)))
      h2c.on('timeout', closeIdleClient)
      const sniff = (socket: Socket): void => this.#sniff(socket, h2c)
      this.#front = net.createServer({ noDelay: true }, accepted(bounds, !config.listen.proxy_protocol ? sniff : this.#readingProxyHeader(problems, (socket) => {
        sniff(socket)
        socket.resume()
      })))
    } else if (config.listen.proxy_protocol) {
      // the PROXY header comes before the first byte of HTTP or TLS: a front socket server
      // reads it, then hands the connection to the server with the bytes past it put back (Node's
      // TLS takes the bytes a raw socket holds in JS before it reads its handle: left paused)
      this.#front = net.createServer({ noDelay: true }, accepted(bounds, this.#readingProxyHeader(problems, (socket) => {
        this.server.emit('connection', socket)
        if (config.listen.tls === null) socket.resume()
      })))
    }
    // a TLS socket reads its peer from the kernel: it takes what its raw socket's header declared,
    // before the server's own listener (HTTP/1.1 or h2) sees it
    if (config.listen.proxy_protocol && config.listen.tls !== null) {
      this.server.prependListener('secureConnection', (socket: Socket) => {
        if (carryDeclaredPeer(socket)) return
        deps.logger.error({}, 'listen.proxy_protocol: this Node does not show the TLS connection\'s raw socket (its _parent): connection closed rather than served under the load balancer\'s address')
        socket.destroy()
      })
    }
    // client_connection_max counts from the accept (see noteStart): the front's when there is one
    // (before the PROXY header), else the server's; a TLS socket takes its raw socket's (Node's
    // `_parent`, as carryDeclaredPeer; without it, the handshake's end)
    // (before the h2 server's own listener, which begins the session)
    this.server.prependListener('connection', (socket: Socket) => noteStart(socket, bounds))
    this.server.prependListener('secureConnection', (socket: Socket) => {
      carryStart((socket as Socket & { _parent?: unknown })._parent, socket)
      noteStart(socket, bounds)
    })
    this.server.on('secureConnection', (socket: Socket) => {
      this.#tlsSockets.add(socket)
      socket.once('close', () => this.#tlsSockets.delete(socket))
    })
    // a failed handshake (wrong version, no shared cipher, a scanner) is the client's problem;
    // plain HTTP sent to the TLS port gets a 400 that says so, in plain HTTP, as nginx answers
    this.server.on('tlsClientError', (err: Error & { code?: string }, tlsSocket: Socket) => {
      deps.logger.debug({ err }, 'TLS handshake failed')
      if (err.code !== 'ERR_SSL_HTTP_REQUEST') return
      // (logged for the client its PROXY header declared: no 'secureConnection' carried it over)
      if (config.listen.proxy_protocol) carryDeclaredPeer(tlsSocket)
      if (answerPlain(tlsSocket)) deps.clientErrors.refused('TETHER_PLAIN_HTTP_TO_TLS', undefined, 'http', tlsSocket)
    })
    this.server.on('clientError', deps.clientErrors.handle)
    this.server.on('checkContinue', checkContinue)
    this.server.on('checkExpectation', checkExpectation)
    // every header line counts (Node drops lines past 2000 silently): the byte limit bounds them
    this.server.maxHeadersCount = 0
    this.server.on('upgrade', this.#onUpgrade)
    // a reverse proxy tunnels nothing: CONNECT gets 405 and the connection closes; over h2
    // (RFC 9113 section 8.5) the compatibility layer hands a request and a response: the
    // request path answers that stream 405 (a 2xx would tell the client its tunnel is open),
    // logged, and timed as its other answers are; over HTTP/1 its 405 waits its turn behind
    // the requests pipelined before it (see refuseConnect)
    this.server.on('connect', (req: http.IncomingMessage, socket: Duplex) => {
      if (isH2Stream(req)) return void (refusedPastCap(req) || deps.current().handleRequest(req, socket as unknown as http.ServerResponse))
      deps.clientErrors.refuseConnect(req, socket)
    })
    // a client that stalls mid-request or stops reading an answer is cut off; the bound is past
    // Tether's own waits on the upstream (its head, its silent body: a sweep late at most), so a
    // silent upstream gets its 504 and its health signal first, not a client cut short
    if (t.body_idle > 0) this.server.setTimeout(clientIdleTimeout(t, queueWait(config)))
    // a connection silent both ways that long (an HTTP/1.1 socket, an h2 session) is closed, as
    // Node closes it without a listener, and marked so that an answer it cuts is logged as the
    // client's timeout (TETHER_CLIENT_TIMEOUT), not as a client that left
    this.server.on('timeout', closeIdleClient)
  }

  /** Start listening; rejects with a message naming the address when the port is taken. */
  async listen(): Promise<void> {
    const { host, port } = this.#config.listen
    const listening = this.#front ?? this.server
    const logged = (err: Error): void => this.#deps.logger.error({ err }, 'proxy listener error')
    await listen(listening, { port, host }, logged).catch((err: NodeJS.ErrnoException) => {
      throw new ListenError(host, port, 'listen', err)
    })
    // the HTTP/1.1 server behind a front starts its connection tracking (timeouts) as if it listened
    if (listening !== this.server) {
      this.server.on('error', logged)
      this.server.emit('listening')
    }
  }

  get port(): number {
    return ((this.#front ?? this.server).address() as AddressInfo).port
  }

  /**
   * The front's connection listener with `listen.proxy_protocol`: `next` after each
   * connection's PROXY header was read (see proxy-protocol.ts). A connection without a
   * valid one is closed without an answer, as nginx 1.22 and HAProxy 2.6 close it, counted
   * (tether_proxy_protocol_refused_total) and warned of as other hostile clients (at once per
   * new reason, then at most once per 30 s).
   */
  #readingProxyHeader(problems: ProblemLog, next: (socket: Socket) => void): (socket: Socket) => void {
    const refused = (r: HeaderRefusal): void => {
      this.#deps.clientErrors.proxyHeaderRefused(r.cause)
      problems.report('proxy protocol', r.reason, { peer: r.peer, reason: r.reason }, 'connection without a valid PROXY protocol header (listen.proxy_protocol): closed without an answer')
    }
    this.#proxyHeaders = new ProxyHeaderReader(this.#config.timeouts.client_headers, this.#deps.timers ?? systemTimers, next, refused)
    return this.#proxyHeaders.read
  }

  /**
   * A new cleartext connection: the HTTP/2 client preface ("PRI * HTTP/2.0...", RFC 9113
   * section 3.4) goes to the h2 server, anything else to the HTTP/1.1 server; the bytes read
   * are put back first. A connection that sends nothing is left to the HTTP/1.1 server's
   * header timeout only once it sends: until then the front's own idle timeout applies.
   */
  #sniff(socket: Socket, h2c: { emit(event: 'connection', socket: Duplex): boolean }): void {
    socket.on('error', () => undefined)
    const timers = this.#deps.timers ?? systemTimers
    const silent = timers.setTimeout(() => socket.destroy(), this.#config.timeouts.client_headers)
    socket.once('close', () => timers.clearTimeout(silent))
    let head: Buffer | null = null
    const onData = (chunk: Buffer): void => {
      head = head === null ? chunk : Buffer.concat([head, chunk])
      const n = Math.min(head.length, H2_PREFACE.length)
      const preface = head.subarray(0, n).equals(H2_PREFACE.subarray(0, n))
      // "P" and "PR" also begin POST, PUT, PROPFIND: the third byte decides (a client may send
      // its preface a byte at a time; the first chunk alone sent such a one to HTTP/1.1, a 505)
      if (preface && n < 3) return
      socket.off('data', onData)
      timers.clearTimeout(silent)
      socket.pause()
      socket.unshift(head)
      if (preface) {
        this.#tlsSockets.add(socket)
        socket.once('close', () => this.#tlsSockets.delete(socket))
        // nghttp2 reads the socket's handle directly, past bytes put back in JS: it gets a
        // stream that replays them, then relays the socket
        const relayed = new RelayedSocket(socket)
        carryStart(socket, relayed)
        h2c.emit('connection', relayed)
      } else this.server.emit('connection', socket)
      socket.resume()
    }
    socket.on('data', onData)
  }

  /** http://host:port, or https:// with TLS (the real port when configured with 0). */
  get url(): string {
    const host = this.#config.listen.host
    return `${this.#config.listen.tls === null ? 'http' : 'https'}://${host.includes(':') ? `[${host}]` : host}:${this.port}`
  }

  /**
   * A reload may add an upstream's connection bound (or remove the last): the client idle bound
   * counts timeouts.queue with one (see queueWait), from the next connection on (Node's server
   * timeout is given to each socket as it is accepted). body_idle and response_headers need a
   * restart: `config` holds the running ones.
   */
  setIdleBound(config: Config): void {
    const t = config.timeouts
    if (t.body_idle <= 0) return
    const ms = clientIdleTimeout(t, queueWait(config))
    this.server.setTimeout(ms)
    this.#h2c?.setTimeout(ms)
  }

  /** New TLS handshakes use these certificate options (the certificates' reload calls it). */
  setSecureContext(options: { cert: Buffer; key: Buffer; minVersion: string; ticketKeys: Buffer; secureOptions: number }): void {
    ;(this.server as unknown as https.Server).setSecureContext(options as https.ServerOptions)
  }

  /**
   * Graceful stop: stop accepting, close connections as they become idle, let requests in
   * flight finish for up to `graceMs`, then call `beforeForce` (WebSockets get their close
   * frame) and close what is left. `forced`: the grace period ended with connections still
   * open (false: every one closed before, nothing is cut).
   */
  async close(graceMs: number, beforeForce: (forced: boolean) => void): Promise<void> {
    const server = this.server
    const timers = this.#deps.timers ?? systemTimers
    const front = this.#front
    const closed = Promise.all([
      new Promise<void>((resolve) => server.close(() => resolve())),
      front === null ? null : new Promise<void>((resolve) => front.close(() => resolve())),
    ]).then(() => undefined)
    // connections that finish their request while draining become idle: close them too
    let sweep: unknown = null
    // h2 connections get a GOAWAY: their open streams finish, no new one starts (one that
    // begins later, its handshake or preface still on its way, gets it then: see onSession)
    this.#stopping = true
    for (const session of this.#sessions) session.close()
    // a connection still reading its PROXY header is idle: it has no request
    this.#proxyHeaders?.closePending()
    const sweepIdle = (): void => {
      server.closeIdleConnections()
      sweep = timers.setTimeout(sweepIdle, 50)
    }
    sweepIdle()
    let timer: unknown = null
    const deadline = new Promise<void>((resolve) => { timer = timers.setTimeout(resolve, graceMs) })
    const forced = await Promise.race([closed.then(() => false), deadline.then(() => true)])
    beforeForce(forced)
    timers.clearTimeout(sweep)
    timers.clearTimeout(timer)
    if (typeof server.closeAllConnections === 'function') server.closeAllConnections()
    for (const session of this.#sessions) session.destroy()
    for (const socket of this.#tlsSockets) socket.destroy()
    await closed
  }

  /** Node hands every request with an Upgrade header here, with the raw socket. */
  readonly #onUpgrade = (req: http.IncomingMessage, duplex: Duplex, head: Buffer): void => {
    const socket = duplex as Socket
    if (socket.destroyed) return
    // Node removed its own error listener when it handed the socket over: errors are ours now
    if (!this.#guarded.has(socket)) {
      this.#guarded.add(socket)
      socket.on('error', (err) => this.#deps.logger.debug({ err }, 'client socket error'))
    }
    // HTTP/0.9 or an RTSP-only method with Upgrade (see foreignRequestLine)
    const foreign = foreignRequestLine(req)
    // an upgrade pipelined behind a request still being answered waits for that answer
    whenIdle(socket, () => {
      if (socket.destroyed) return
      if (req.httpVersionMajor === 2) { // "HTTP/2.0" in an HTTP/1 request line (see handle)
        this.#deps.clientErrors.refuse(socket, 'TETHER_HTTP_VERSION', req)
      // HTTP/0.9 or RTSP with Upgrade is no WebSocket handshake, nor an HTTP request to pass on plain
      } else if (foreign) {
        this.#deps.clientErrors.refuse(socket, 'TETHER_BAD_REQUEST', req)
      // a handshake without Host or with an empty one (Node hands upgrades over before its own Host check)
      } else if (lacksHost(req)) {
        this.#deps.clientErrors.refuse(socket, 'TETHER_BAD_REQUEST', req)
      // HTTP/1.0 has no Upgrade: a server must ignore it there (RFC 9110 section 7.8)
      } else if (isWebSocket(req.headers) && req.httpVersion !== '1.0') this.#deps.current().handleUpgrade(req, socket, head)
      else this.#asPlainRequest(req, socket, head)
    })
  }

  /**
   * `Upgrade: h2c` and the like: Tether does not perform those upgrades, and Upgrade is
   * hop-by-hop, so the request is handed back to the HTTP server without its Upgrade header:
   * it is served as a plain request (the client keeps HTTP/1.1), body and keep-alive included.
   * Node hands every Upgrade request to the upgrade listener, hence this detour.
   */
  #asPlainRequest(req: http.IncomingMessage, socket: Socket, head: Buffer): void {
    // a TLS connection cannot be handed back: the server would start TLS on it again (HAProxy
    // refuses these too)
    if (!socket.writable) return void socket.destroy()
    if ((socket as Socket & { encrypted?: boolean }).encrypted === true) return this.#deps.clientErrors.refuse(socket, 'TETHER_BAD_REQUEST', req)
    let text = `${req.method} ${req.url} HTTP/${req.httpVersion}\r\n`
    const raw = req.rawHeaders
    for (let i = 0; i < raw.length; i += 2) {
      if (raw[i]!.toLowerCase() !== 'upgrade') text += `${raw[i]}: ${raw[i + 1]}\r\n`
    }
    // header values were decoded as latin1 by Node's parser: the same bytes go back
    const bytes = Buffer.from(`${text}\r\n`, 'latin1')
    socket.unshift(head.length > 0 ? Buffer.concat([bytes, head]) : bytes)
    this.server.emit('connection', socket)
  }
}

/**
 * The connection listener `next` of a front socket server, noting each connection's start at
 * its accept first (see noteStart), before its PROXY header or first bytes are read.
 */
export function accepted(bounds: KeepAliveBounds, next: (socket: Socket) => void): (socket: Socket) => void {
  return (socket) => {
    noteStart(socket, bounds)
    next(socket)
  }
}

/**
 * A handler answering each request it gets `code` in its turn among its connection's requests
 * (after the earlier ones; the connection then closes without answering those pipelined behind
 * it), logged and counted as the listener's other refusals. Made once per listener.
 */
export function refuseInTurn(code: ErrorCode, clientErrors: ClientErrors, overflow?: Overflow, bounds?: KeepAliveBounds): http.RequestListener {
  return onePerConnection((req, res) => {
    if (res.destroyed || req.socket.destroyed) return void res.destroy()
    sendError(res, code, { close: true })
    clientErrors.refused(code, req)
  }, overflow, bounds)
}

/**
 * The 400 for plain HTTP on the TLS port (OpenSSL recognised an HTTP request line instead of a
 * ClientHello), written to the TCP socket under the TLS one: Node keeps it as `_parent`, which
 * is not public API, so without it (another Node) the connection is only closed, as before.
 * Returns whether the answer was written.
 */
function answerPlain(tlsSocket: Socket): boolean {
  const raw = (tlsSocket as Socket & { _parent?: unknown })._parent
  if (!(raw instanceof net.Socket) || !raw.writable) return false
  raw.on('error', () => undefined)
  writeRawError(raw, 'TETHER_PLAIN_HTTP_TO_TLS')
  return true
}

/** Is this an upgrade to WebSocket (Upgrade: websocket, case-insensitive, possibly in a list)? */
function isWebSocket(headers: http.IncomingHttpHeaders): boolean {
  const u = headers.upgrade
  return u !== undefined && u.split(',').some((p) => p.trim().toLowerCase() === 'websocket')
}
