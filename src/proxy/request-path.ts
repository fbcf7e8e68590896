// The request path, for every transport, top to bottom in the order it runs:
//   guard -> read the key (once) -> reconcile with shared affinity -> then per attempt:
//   decide -> build headers -> rehydrate a moved user -> send -> classify and tell health ->
//   answered? log : retry on the key's next upstream, or answer the error.
// Each step is a call into its own module; the transport (HTTP through undici, a WebSocket
// upgrade through http-proxy) is an Exchange. This file holds no protocol detail.
import type { IncomingMessage, ServerResponse } from 'node:http'
import type { Socket } from 'node:net'
import type { Clock, Timers } from '../clock.js'
import type { Config } from '../config/schema.js'
import { TetherError, type ErrorCode } from '../errors.js'
import type { KeyReader, RequestKey } from '../affinity/key.js'
import type { SessionTable, SharedBindings } from '../affinity/session-table.js'
import { SessionRecords } from '../affinity/session-records.js'
import type { Logger } from '../observability/logger.js'
import { ProblemLog } from '../observability/problem-log.js'
import type { ProxyEvents } from '../observability/events.js'
import type { Decision, MoveReason, NoRoute, Router } from '../routing/router.js'
import { TETHER_HEADER } from '../reserved-headers.js'
import type { GetResult } from '../state/checkpoint-store.js'
import type { StateProtocol } from '../state/protocol.js'
import { isReplacement, type Upstream, type UpstreamSet } from '../upstream/upstream-set.js'
import type { ClientErrors } from './client-error.js'
import type { Attempt, AttemptWatcher, Exchange } from './exchange.js'
import { hasBody, type Forwarder } from './forward.js'
import { malformedBody } from './h2-messages.js'
import { REQUEST_ID, fieldsAreValid, requestTarget, upstreamRequestHeaders, type HeaderPolicy, type RequestHeaderContext } from './headers.js'
import type { InFlight } from './in-flight.js'
import { classify, healthSignal, type HealthSignal, type Outcome } from './outcome.js'
import { RequestBody } from './request-body.js'
import { RequestContext, stateRefused, type AttemptResult, type Protocol } from './request-context.js'
import { RequestIds } from './request-id.js'
import { writeRawError } from './respond.js'
import { isIdempotent, shouldRetry } from './retry.js'
import { withDeadline } from '../deadline.js'
import type { Upgrades } from './upgrade-transport.js'

export interface RequestPathDeps {
  /** The config this path serves (a reload builds a new path). */
  readonly config: Config
  readonly clock: Clock
  readonly timers: Timers
  readonly logger: Logger
  readonly keys: KeyReader
  readonly router: Router
  readonly sessions: SessionTable
  /** Names the session in the access log (the logged form the lookup accepts). */
  readonly records: SessionRecords
  /** The current membership snapshot. */
  readonly upstreams: () => UpstreamSet
  readonly headerPolicy: HeaderPolicy
  /** The HTTP transport (and the rehydration hook's client). */
  readonly http: Forwarder
  /** The upgrade transport. */
  readonly upgrades: Upgrades
  /** Where a request with a body registers how to stop it if the parser refuses the body. */
  readonly clientErrors: ClientErrors
  /** The state protocol (checkpoints, rehydration); null when `state.store: none`. */
  readonly state: StateProtocol | null
  readonly shared: SharedBindings | null
  /** Passive health: told how each attempt on an upstream went (while the upstream is still at the url the attempt went to). */
  readonly observe: (id: string, signal: HealthSignal) => void
  /** A client gave up waiting on this upstream's answer: probe it now (it may be frozen). */
  readonly suspect?: (id: string) => void
  readonly inFlight: InFlight
  readonly events: ProxyEvents
  /** True once shutdown began: answers close their connection, new upgrades get 503. */
  readonly draining: () => boolean
}

/** `T` with its fields writable. */
type Mutable<T> = { -readonly [K in keyof T]: T[K] }

const NO_ROUTE: Record<NoRoute, ErrorCode> = { none: 'TETHER_NO_UPSTREAM', strict: 'TETHER_AFFINITY_UNAVAILABLE' }

/** Moves Tether makes by choice, not forced by the user's upstream: held when the user's state cannot be fetched. */
const CHOSEN_MOVES: ReadonlySet<MoveReason> = new Set<MoveReason>(['admin', 'rebalance', 'spill', 'drain'])

/** How a request cut before its attempt ends (see RequestPath.#left). */
const SHUT_DOWN: Outcome = { kind: 'error', code: 'TETHER_SHUTTING_DOWN', connect: false }
const CLIENT_ABORT: Outcome = { kind: 'client_abort' }
/** An h2 request body nghttp2 reset as malformed (see malformedBody): no answer sent. */
const MALFORMED_BODY: Outcome = { kind: 'error', code: 'TETHER_BAD_REQUEST', connect: false }

/** A method with a lower-case letter (h2 lets it through; see #guard). */
const LOWER_CASE = /[a-z]/

/** A response a 100 Continue can go on (HTTP/1.1's ServerResponse, h2's Http2ServerResponse). */
interface ContinueWriter { writeContinue(): void }

/**
 * Requests with `Expect: 100-continue` whose 100 Continue is still to be sent, to the response
 * it goes on. The listener only marks them ({@link awaitsContinue}); the request path sends the
 * 100 once every check of the head has passed, just before it reads the body (see
 * RequestPath.#guard), as nginx sends its 100 when it starts reading the body. One decision, at
 * one time, by the config that serves the request (a pipelined request waits for its turn, and
 * a reload meanwhile changes nothing about what it is told): a refusal the head decides goes
 * out instead of the 100 (RFC 9110 section 10.1.1), so the client uploads no body for nothing.
 */
const continues = new WeakMap<IncomingMessage, ContinueWriter>()

/**
 * `req` carries `Expect: 100-continue`: its 100 Continue goes on `res` once the request path's
 * checks of the head passed (never, if the request is refused first), before its body is read.
 * Example (a listener's `checkContinue`): `awaitsContinue(req, res); handle(req, res)`.
 */
export function awaitsContinue(req: IncomingMessage, res: ContinueWriter): void {
  continues.set(req, res)
}

/** Send `req`'s 100 Continue if it awaits one (once). */
function sendContinue(req: IncomingMessage): void {
  const res = continues.get(req)
  if (res === undefined) return
  continues.delete(req)
  res.writeContinue()
}

/**
 * Is `value` (an Expect field) the 100-continue expectation, in any case and with optional
 * whitespace (RFC 9110 section 10.1.1: the token is case-insensitive)? Node's h2 compatibility
 * layer treats only exact `100-continue` as one (its HTTP/1.1 parser any case).
 * Example: expectsContinue('100-Continue') -> true; expectsContinue('something') -> false.
 */
export function expectsContinue(value: string | undefined): boolean {
  return value !== undefined && CONTINUE.test(value)
}
const CONTINUE = /^[\t ]*100-continue[\t ]*$/i

/** Bytes of a request body left unsent upstream that are read and dropped before the connection is closed instead. */
export const DISCARD_MAX = 16 * 1024 * 1024

/**
 * The upstream answered before it took the whole request body (a 401 or 413 to an upload):
 * on HTTP/1.1 the rest of the body is read and dropped, as HAProxy and nginx do, so the
 * client's next request on the connection is read (Node drains no body that was piped), and
 * a client still sending is not reset before it reads the answer (RFC 9112 section 9.6). Past
 * DISCARD_MAX bytes the connection is closed. An h2 stream needs nothing: Node closes it with
 * NO_ERROR once its answer is sent, which asks the client to stop sending (RFC 9113 section
 * 8.1; test/h2-proxy.test.ts).
 */
function discardRest(req: IncomingMessage, body: RequestBody, clientErrors: ClientErrors): void {
  if (req.complete || req.httpVersionMajor !== 1 || req.destroyed) return
  clientErrors.dropping(req) // a malformed rest closes the connection, without a second answer
  req.unpipe(body)
  let left = DISCARD_MAX
  req.on('data', (chunk: Buffer) => {
    left -= chunk.length
    if (left < 0) req.socket.destroy()
  })
  req.resume()
}

/**
 * The framing rules of RFC 9112 section 6 for a request with Transfer-Encoding: with
 * Content-Length as well (smuggling), on HTTP/1.0 (6.1: "faulty framing"), or with `chunked`
 * anywhere but last, or twice (6.3): 400; with a coding Tether does not know, chunked last or
 * absent (`gzip, chunked`, `xchunked`): 501 (6.1). Null: plain `chunked`.
 * Example: transferCodingProblem('chunked, gzip', false, '1.1') -> 'TETHER_BAD_REQUEST'.
 */
function transferCodingProblem(te: string, withLength: boolean, httpVersion: string): ErrorCode | null {
  if (withLength || httpVersion === '1.0') return 'TETHER_BAD_REQUEST'
  const codings = te.split(',').map((c) => c.trim().toLowerCase()).filter((c) => c !== '')
  const chunked = codings.filter((c) => c === 'chunked').length
  if (chunked > 1 || (chunked === 1 && codings.at(-1) !== 'chunked')) return 'TETHER_BAD_REQUEST'
  return codings.length === 1 && chunked === 1 ? null : 'TETHER_NOT_IMPLEMENTED'
}

/**
 * Example (composition root): `const path = new RequestPath(deps)`; the listener calls
 * `path.handleRequest(req, res)` for each request and `path.handleUpgrade(req, socket, head)`
 * for each WebSocket upgrade.
 */
export class RequestPath {
  readonly config: Config
  readonly #d: RequestPathDeps
  readonly #access: boolean
  readonly #debug: boolean
  readonly #hook: string | null
  /** Client connections that already gave up waiting on an upstream (see #firstGiveUp). */
  readonly #gaveUp = new WeakSet<object>()
  /** New X-Request-Id values (a client's well-formed one is kept). */
  readonly #ids = new RequestIds()
  /** Watch for a Secure affinity cookie issued on a plain-HTTP page (warned once; see #secureOverHttp). */
  #watchSecureCookie: boolean
  /** Hedges refused for their state, by upstream id: warned once, then at most once per 30 s (see #hedgeRefused). */
  readonly #hedgeRefusals: ProblemLog
  /** The upstream set #hedgeRefusals last forgot removed upstreams by (a new set on each change). */
  #hedgeRefusalsOf: UpstreamSet | null = null
  /** What upstreamRequestHeaders is told of the request at hand (see #headers). */
  readonly #headerContext: Mutable<RequestHeaderContext> = { peer: '', proto: 'http', port: 0, upstreamHost: '', authority: null, requestId: '', dropped: undefined }

  constructor(deps: RequestPathDeps) {
    this.#d = deps
    this.config = deps.config
    this.#access = deps.config.log.access && deps.logger.isLevelEnabled('info')
    this.#debug = deps.logger.isLevelEnabled('debug')
    this.#hook = deps.config.state.rehydrate === 'hook' ? deps.config.state.hook_path : null
    this.#watchSecureCookie = deps.config.affinity.key === 'cookie' && deps.config.affinity.cookie.secure
    this.#hedgeRefusals = new ProblemLog(deps.logger, deps.clock)
  }

  /**
   * A Secure affinity cookie was just issued on a request that came over plain HTTP for a page
   * not on localhost, with no sign of TLS in front (`X-Forwarded-Proto: https` or `Forwarded:
   * proto=https`, trusted or not): a browser on such an http:// page drops a Secure cookie
   * (RFC 6265bis section 5.6), so each of its requests is a new session. Warned once.
   */
  #secureOverHttp(ctx: RequestContext): void {
    const h = ctx.req.headers
    if (ctx.scheme !== 'http' || isLocalhostPage(h.host)) return
    const proto = `${h['x-forwarded-proto'] ?? ''} ${h.forwarded ?? ''}`.toLowerCase()
    if (proto.includes('https')) return
    this.#watchSecureCookie = false
    this.#d.logger.warn({ peer: ctx.peer }, 'affinity.cookie.secure is true but a new session\'s cookie went out on a plain-HTTP request: a browser on an http:// page drops a Secure cookie, so each of its requests starts a new session. Serve HTTPS (listen.tls, or TLS ended in front with X-Forwarded-Proto: https), or set affinity.cookie.secure: false')
  }

  /** A plain HTTP request. */
  handleRequest = (req: IncomingMessage, res: ServerResponse): void => {
    if (this.#d.draining()) res.shouldKeepAlive = false
    this.#serve(this.#context(req, 'http'), this.#d.http.exchange(res))
  }

  /** A WebSocket upgrade (Node handed over the raw socket). */
  handleUpgrade = (req: IncomingMessage, socket: Socket, head: Buffer): void => {
    // refusals before the request path are logged and counted as the parser's are
    const refuse = (code: ErrorCode): void => {
      const sent = socket.writable
      writeRawError(socket, code)
      if (sent) this.#d.clientErrors.refused(code, req, 'websocket')
    }
    if (req.method !== 'GET') return refuse('TETHER_BAD_REQUEST')
    if (this.#d.draining()) return refuse('TETHER_SHUTTING_DOWN')
    const writable = socket.writable
    const exchange = this.#d.upgrades.exchange(socket, head)
    // null: websocket.max_connections are open, 503 was answered (when the socket could take it)
    if (exchange === null) {
      if (writable) this.#d.clientErrors.refused('TETHER_TOO_MANY_CONNECTIONS', req, 'websocket')
    }
    else this.#serve(this.#context(req, 'websocket'), exchange)
  }

  #context(req: IncomingMessage, protocol: Protocol): RequestContext {
    const clientId = req.headers['x-request-id']
    const id = typeof clientId === 'string' && REQUEST_ID.test(clientId) ? clientId : this.#ids.next()
    return new RequestContext(req, protocol, id, this.#d.clock.now())
  }

  /**
   * The request path of one request: the checks of its head, its key (reconciled with the
   * shared table first when another replica may have bound it: #reconcile), then its attempts,
   * one pass each (#pass -> a moved user's #move -> #send -> #result -> #conclude, which makes
   * the next pass for a retry). A step that waits (the shared store, a moved user's state, an
   * attempt's answer) goes on to the next step when its wait is over, rather than the whole path
   * awaiting in one async function: a request that waits for nothing but its answer (no move,
   * no shared-store check: most requests) costs one callback, not an async function's frame,
   * promise and await (bench/README.md, "Bytes allocated per request"). A throw in any step is
   * the request's TETHER_INTERNAL (#internal).
   */
  #serve(ctx: RequestContext, x: Exchange): void {
    try {
      const refused = this.#guard(ctx)
      if (refused !== null) return this.#answer(ctx, x, refused, true)
      const { keys, shared, sessions } = this.#d
      // nothing waited since the request arrived: its arrival time is "now" up to the first
      // decision (one clock read a request instead of three: each cost ~0.2% of its CPU)
      const now = ctx.arrived
      ctx.key = keys.read(ctx.req.headers, ctx.peer, now)
      // a key this replica has not seen (or not checked lately) may be bound by another
      // replica: reconcile with the shared table first (bounded by state.timeout)
      if (shared !== null && ctx.key.kind === 'table' && sessions.needsSync(ctx.key.value, now)) return void this.#reconcile(ctx, x, shared, ctx.key.value)
      this.#pass(ctx, x, null, now)
    } catch (err) {
      this.#internal(ctx, x, err)
    }
  }

  /** The shared table's binding of `key` taken (see #serve), then the request's first pass. */
  async #reconcile(ctx: RequestContext, x: Exchange, shared: SharedBindings, key: string): Promise<void> {
    try {
      // a stop's grace end stops the wait at once (the request's connection is cut)
      const b = await this.#d.http.untilCut(shared.lookup(key))
      if (b !== 'unavailable' && b !== 'cut') this.#d.sessions.sync(key, b, this.#d.clock.now())
      // a stop's grace end (or the client leaving) while the lookup waited: no decision, no
      // attempt into the pools the stop destroys (see #left)
      // (a handshake Tether ended meanwhile ends as Tether ended it: see Exchange.gone)
      const left = ctx.protocol === 'websocket' && x.gone.aborted ? x.gone.reason as AttemptResult : this.#left(x)
      if (left !== null) return this.#finish(ctx, left)
      this.#pass(ctx, x, null)
    } catch (err) {
      this.#internal(ctx, x, err)
    }
  }

  /**
   * One pass: the request is decided and its attempt sent (#send), or answered when it cannot
   * be. A moved user's pass goes through #move first (the shared store's word on the move, the
   * user's state). `counted`: the move counted by a pass before this one, decided again without
   * reaching an application (see #result): the next decision is the same user's same move, not
   * another one (tether_failovers_total counts it once). `now`: the clock's time, when the
   * caller has just read it (the first pass after nothing waited: the arrival time).
   */
  #pass(ctx: RequestContext, x: Exchange, counted: string | null, now: number = this.#d.clock.now()): void {
    ctx.rehydrateBytes = 0 // this pass's attempt carries state only if its own fetch finds some
    // a WebSocket handshake Tether already ended while this path waited (the shared table's
    // lookup): answered 400 for the bytes its client sent before any 101 (see Upgrades). It
    // is not routed, and not answered again: a second answer (no route, a stop's 503) would
    // destroy the connection that drains the 400, and log status 0 with the wrong outcome
    if (ctx.protocol === 'websocket' && x.gone.aborted) return this.#finish(ctx, x.gone.reason as AttemptResult)
    if (ctx.bodyError !== null) return this.#answer(ctx, x, ctx.bodyError, true)
    if (ctx.protocol === 'websocket' && this.#d.draining()) return this.#answer(ctx, x, 'TETHER_SHUTTING_DOWN', true)
    const d = this.#decide(ctx, now)
    if (typeof d === 'string') {
      // after a failed attempt, its error is the honest answer (as nginx's 502 after the last upstream)
      return this.#answer(ctx, x, ctx.lastFailure?.code ?? NO_ROUTE[d], ctx.body !== null && !ctx.req.complete)
    }
    ctx.decision = d
    ctx.answering = null
    const upstream = this.#d.upstreams().get(d.upstream)
    if (upstream === undefined) {
      this.#d.router.settle(d)
      return this.#answer(ctx, x, 'TETHER_NO_UPSTREAM', true)
    }
    if (d.moved !== null) return void this.#move(ctx, x, d, d.moved, upstream, counted)
    this.#send(ctx, x, d, upstream, this.#headers(ctx, d, upstream))
  }

  /**
   * A pass that moves the user (`moved`), up to its send: the move checked against the shared
   * store (once a request), the user's state fetched and delivered (a header, or the hook),
   * the move counted; or the request decided again (another pass), retried, or answered.
   */
  async #move(ctx: RequestContext, x: Exchange, d: Decision, moved: NonNullable<Decision['moved']>, upstream: Upstream, counted: string | null): Promise<void> {
    try {
      // the state fetch made while the shared store was asked
      let prefetched: Promise<GetResult> | null = null
      const shared = this.#d.shared
      if (!ctx.moveChecked && shared !== null && ctx.key.kind === 'table' && d.bind?.publish === true) {
        // another replica (or worker) may have made this move first: see #movedBefore
        ctx.moveChecked = true
        prefetched = ctx.holdMoves || d.sessionKey === null ? null : this.#d.state?.fetch(d.sessionKey) ?? null
        // only alongside that fetch: a move without one (a key without checkpoints, a held
        // move) would wait for the read, and announcing it again costs no rehydration
        if (prefetched !== null && await this.#movedBefore(ctx, d, shared)) {
          this.#d.router.settle(d)
          return this.#pass(ctx, x, counted)
        }
      }
      const headers = this.#headers(ctx, d, upstream)
      const hookFailed = await this.#rehydrate(ctx, d, headers, x.gone, prefetched)
      if (x.gone.aborted) {
        // the client left while its state was fetched or posted: its hook was stopped (or
        // none ran), nothing is sent upstream, no other upstream is tried, the move is not
        // counted nor the new upstream marked as started without the state; logged as the
        // client's abort (or TETHER_SHUTTING_DOWN when a stop's grace end closed it: see
        // Exchange.gone)
        this.#d.router.settle(d)
        return this.#finish(ctx, x.gone.reason as AttemptResult)
      }
      if (!this.#current(upstream)) {
        // a reload or a discovery list took the upstream away, or gave its id another url or
        // pod uid (a pod re-created again), while the state was fetched (or its hook ran): nothing of the
        // request was sent to it, so it is decided again, not retried (with retries at 0 it was
        // a 502 for a request no upstream saw). Sent on, it would reach the id's new pod (its
        // pool) without the state the hook gave the old one (with `preserve_host: false`,
        // naming the old address as Host), and its outcome would not count for health (told
        // only for the url it was read at)
        this.#d.router.settle(d)
        return this.#pass(ctx, x, counted)
      }
      if (hookFailed !== null) {
        // the state could not reach the new upstream (its hook refused the connection, or
        // health took it out meanwhile): nothing of the request was sent, the next one is tried
        this.#d.router.settle(d)
        // nothing reached an application: if it comes to an answer, the client may send it again
        const code = hookFailed.code === 'TETHER_UPSTREAM_UNAVAILABLE' ? 'TETHER_NO_UPSTREAM' : hookFailed.code
        if (!this.#mayRetry(ctx, hookFailed)) {
          ctx.lastFailure = { code, error: null }
          return this.#answer(ctx, x, code, ctx.body !== null && !ctx.req.complete)
        }
        this.#d.events.retry(d.upstream)
        ctx.retryAfter(code, null)
        return this.#pass(ctx, x, counted)
      }
      if (ctx.rehydrate === 'unavailable' && !ctx.holdMoves && CHOSEN_MOVES.has(moved.reason)) {
        // a move by choice whose state could not be fetched (the store is down): the user
        // would lose their state for nothing while their upstream still serves them; they
        // stay this time, and move at a later request (at drain_timeout at the latest)
        this.#d.router.settle(d)
        ctx.holdMoves = true
        ctx.rehydrate = null
        return this.#pass(ctx, x, counted)
      }
      if (counted !== moved.from) this.#moved(d, moved)
      // the new upstream starts without the user's state (not fetched, or its hook refused
      // it): its first checkpoint replaces the old one
      if ((ctx.rehydrate === 'unavailable' || ctx.rehydrate === 'refused') && d.sessionKey !== null) this.#d.state?.restarted(d.sessionKey, d.epoch, d.upstream)
      this.#send(ctx, x, d, upstream, headers)
    } catch (err) {
      this.#internal(ctx, x, err)
    }
  }

  /**
   * Send the pass's attempt (a hedged pair when `retries.hedge_after` applies) with `headers`;
   * its result goes to #result. An attempt alone is watched by one callback that also hands
   * the result on (no promise between the two).
   */
  #send(ctx: RequestContext, x: Exchange, d: Decision, upstream: Upstream, headers: string[]): void {
    // this request's hedge was refused there for the user's state in its head (the same
    // process: see #hedged), and the first attempt then failed: the retry goes without the
    // state at once, not refused a second time first (one field read for any other request)
    const refusedBefore = ctx.stateRefusedBy !== null && this.#refusedBefore(ctx, d, upstream)
    const sent = refusedBefore ? this.#withoutState(ctx, d, headers) : headers
    if (this.#hedgeable(ctx)) {
      void this.#hedged(ctx, x, d, upstream, sent).then((r) => this.#result(ctx, x, d, upstream, headers, refusedBefore, r), (err: unknown) => this.#internal(ctx, x, err))
      return
    }
    const attempt = x.attempt(ctx, d, upstream, sent)
    attempt.onEnd(new SentAttempt(this.#sentEnds, ctx, x, d, upstream, headers, refusedBefore, attempt, this.#watch(upstream, attempt)))
  }

  /** Where the attempts #send watches tell their end (one object a request path: see SentAttempt). */
  readonly #sentEnds: SentEnds = {
    ended: (s, r) => this.#sentEnded(s, r),
    failed: (s, err) => this.#internal(s.ctx, s.x, err), // (a transport that failed: a bug)
  }

  /** An attempt of #send ended with `r`: taken (#attemptEnded), then its result is the pass's (#result). */
  #sentEnded(s: SentAttempt, r: AttemptResult): void {
    try {
      this.#attemptEnded(s.ctx, s.d, s.upstream, s.attempt, s.since, r)
    } catch (err) {
      return this.#internal(s.ctx, s.x, err)
    }
    this.#result(s.ctx, s.x, s.d, s.upstream, s.headers, s.refusedBefore, r)
  }

  /**
   * The pass's attempt ended with `r`. Refused for the user's state in its head (431) while its
   * body can be sent again: sent again at once without the state (or, its upstream replaced
   * meanwhile, decided again), and that attempt's result concluded instead.
   */
  #result(ctx: RequestContext, x: Exchange, d: Decision, upstream: Upstream, headers: string[], refusedBefore: boolean, r: AttemptResult): void {
    try {
      // (only while the body is replayable: else the transport passed the 431 on; see forward.ts)
      if (!r.responded && r.outcome?.kind === 'error' && r.outcome.code === 'TETHER_HEADERS_TOO_LARGE' && ctx.rehydrateBytes > 0) {
        if (!this.#current(upstream)) {
          // the id was replaced (another url or pod uid) or left while the refused attempt was
          // out: sent again as read, the request would reach the id's new process (its pool)
          // without the state that one may take, marked too_large, with the old one's Host
          // (`preserve_host: false`), its outcome told to nobody. Nothing of it reached an
          // application: it is decided again, as after the hook's check in #move
          if (ctx.body !== null) ctx.body = ctx.body.replay()
          return this.#pass(ctx, x, d.moved?.from ?? null)
        }
        const bytes = ctx.rehydrateBytes
        void this.#run(ctx, x, d, upstream, this.#withoutState(ctx, d, headers)).then((again) => {
          try {
            this.#resentWithoutState(ctx, d, again, ctx.answering !== null, bytes)
            this.#conclude(ctx, x, d, refusedBefore, again)
          } catch (err) {
            this.#internal(ctx, x, err)
          }
        }, (err: unknown) => this.#internal(ctx, x, err))
        return
      }
      this.#conclude(ctx, x, d, refusedBefore, r)
    } catch (err) {
      this.#internal(ctx, x, err)
    }
  }

  /**
   * The pass's last attempt ended with `r`: an answer (or the client gone) ends the request; a
   * failure is retried on the key's next upstream (another pass) while the budget allows, else
   * answered with its error.
   */
  #conclude(ctx: RequestContext, x: Exchange, d: Decision, refusedBefore: boolean, r: AttemptResult): void {
    // a 431 to it is the client's own head, as to a resend without the state (#result)
    if (refusedBefore && r.status === 431 && ctx.answering !== null && ctx.rehydrate === 'too_large') {
      ctx.rehydrate = null
      ctx.ownHeadTooLarge = true
    }
    if (r.responded || r.outcome === null) {
      // (a body that could no longer be sent again: the transport passed the refusal on)
      if (ctx.rehydrate === 'delivered' && ctx.rehydrateBytes > 0 && stateRefused(ctx.rehydrateBytes, r.status) && ctx.answering !== null) this.#refusedInHead(ctx)
      // the answer is the upstream's the state was for (the hedge's, if it won): counted once;
      // status 0: no head reached the client (it left, or a stop's grace period ended, first);
      // nothing answering: Tether's own error went out instead (a WebSocket handshake's
      // invalid answer), as for a failed HTTP attempt
      if (ctx.rehydrate !== null && r.status !== 0 && ctx.answering !== null && ctx.decision?.moved != null) this.#rehydrated(ctx)
      if (ctx.body !== null) discardRest(ctx.req, ctx.body, this.#d.clientErrors)
      if (r.delivery === undefined) return this.#finish(ctx, r)
      // over h2, the rest of the answer on its way to the client: logged once it is there or cut
      void r.delivery.then((late) => {
        try {
          this.#finish(ctx, late === null ? r : { ...r, outcome: late })
        } catch (err) {
          this.#internal(ctx, x, err)
        }
      }, (err: unknown) => this.#internal(ctx, x, err))
      return
    }
    if (!this.#mayRetry(ctx, r.outcome)) {
      const code = r.outcome.kind === 'error' ? r.outcome.code : 'TETHER_UPSTREAM_RESET'
      ctx.lastFailure = { code, error: r.error }
      return this.#answer(ctx, x, code, code === 'TETHER_BODY_TOO_LARGE' || !ctx.req.complete)
    }
    this.#d.events.retry(d.upstream)
    ctx.retryAfter(r.outcome.kind === 'error' ? r.outcome.code : 'TETHER_UPSTREAM_RESET', r.error)
    if (ctx.body !== null) ctx.body = ctx.body.replay()
    this.#d.logger.debug({ request_id: ctx.id, upstream: d.upstream, code: ctx.lastFailure!.code, retry: ctx.retries }, 'retrying on the next upstream')
    this.#pass(ctx, x, null)
  }

  /** A step of the request path threw: its decision settled, logged, and answered TETHER_INTERNAL. */
  #internal(ctx: RequestContext, x: Exchange, err: unknown): void {
    try {
      if (ctx.decision !== null) this.#d.router.settle(ctx.decision)
      this.#d.logger.error({ err, request_id: ctx.id }, 'request path failed')
      this.#answer(ctx, x, 'TETHER_INTERNAL', true)
    } catch (again) {
      // a throw while answering a throw (a bug): this request's connection is cut, and the
      // throw becomes an unhandled rejection, which `tether run` logs and survives (as when the
      // request path was one async function), not an uncaught exception, which ends the process
      ctx.req.destroy()
      void Promise.reject(again)
    }
  }

  /**
   * What may be answered before any routing: a malformed target or Host, or a second line of
   * a field that may appear once (400), a transfer coding Tether cannot frame (501), a declared
   * body over the limit (413). A request with a body starts streaming it here, and tells the
   * parser's error handler how to stop it.
   */
  #guard(ctx: RequestContext): ErrorCode | null {
    const req = ctx.req
    // TRACE would echo the request (cookies included) back: refused, as nginx does; a reverse
    // proxy opens no tunnel (an h2 CONNECT: Node hands HTTP/1.1's to the listener)
    if (ctx.method === 'TRACE' || ctx.method === 'CONNECT') return 'TETHER_METHOD_NOT_ALLOWED'
    // over h2 a method in lower case ("trace", "get") passes Node: not a method an HTTP/1
    // client could send (llhttp refuses it), and a way round the TRACE check; nginx answers 400
    if (req.httpVersionMajor === 2 && LOWER_CASE.test(ctx.method)) return 'TETHER_BAD_REQUEST'
    // `*` (OPTIONS *): undici refuses to send it; refused here, from the head, as nginx answers it
    const target = requestTarget(req.url, req.httpVersionMajor === 2)
    if (target === null || target.path === '*' || !fieldsAreValid(req.rawHeaders)) return 'TETHER_BAD_REQUEST'
    ctx.target = target
    const te = req.headers['transfer-encoding']
    if (te !== undefined) {
      const refused = transferCodingProblem(te, req.headers['content-length'] !== undefined, req.httpVersion)
      if (refused !== null) return refused
    }
    const { max_body_bytes: maxBody } = this.config.limits
    if (maxBody !== null && Number(req.headers['content-length']) > maxBody) return 'TETHER_BODY_TOO_LARGE'
    // a WebSocket handshake is a GET without content (RFC 6455 section 4.1): one declaring a
    // body would be sent on with its framing header while the bytes wait here for the 101 (they
    // are the tunnel's first): an upstream that reads the request's body before it switches
    // (RFC 9110 section 7.8) never answers, and a client giving up on it is health's hint
    if (ctx.protocol === 'websocket' && hasBody(req)) return 'TETHER_BAD_REQUEST'
    if (ctx.protocol === 'http' && hasBody(req)) {
      // a body the parser refused already (pipelined behind an answer): answered now, unread
      const refused = this.#d.clientErrors.track(req, (code) => {
        ctx.bodyError = code
        ctx.body?.destroy(new TetherError(code))
      })
      if (refused !== null) return refused
      // Expect: 100-continue: every check of the head passed, its body is read next (a request
      // without Expect reads one property here, and allocates nothing)
      if (req.headers.expect !== undefined) sendContinue(req)
      ctx.body = RequestBody.of(req, maxBody, this.config.retries.replay_buffer_bytes)
    } else if (req.headers.expect !== undefined) {
      // no body to read, but Node closes the connection after an expect-continue answer sent
      // without a 100 (the client might still send one): the 100 keeps it open, as before
      sendContinue(req)
    }
    return null
  }

  /** The request's decision at `now` (the clock's time when the pass began). */
  #decide(ctx: RequestContext, now: number): Decision | NoRoute {
    const { router, keys } = this.#d
    const tried = ctx.tried ?? undefined
    if (ctx.protocol === 'websocket') return router.decideUpgrade(ctx.key, keys.clientIp(ctx.req.headers, ctx.peer), tried, now, ctx.holdMoves)
    return router.decide(ctx.key, tried, now, ctx.holdMoves)
  }

  /** The headers sent upstream: the client's by the header rules, plus the epoch and a move. */
  #headers(ctx: RequestContext, d: Decision, upstream: Upstream): string[] {
    const dropped: string[] | undefined = this.#debug ? [] : undefined
    // one context object for every request of this path, filled in here: the call keeps nothing
    // of it and returns before any other request's (one object a request fewer)
    const about = this.#headerContext
    about.peer = ctx.peer
    about.proto = ctx.scheme
    about.port = ctx.localPort
    about.upstreamHost = upstream.host
    about.authority = ctx.target.authority
    about.requestId = ctx.id
    about.dropped = dropped
    const headers = upstreamRequestHeaders(ctx.req.rawHeaders, this.#d.headerPolicy, about)
    if (dropped !== undefined && dropped.length > 0) {
      this.#d.logger.debug({ request_id: ctx.id, headers: dropped }, 'dropped request headers whose name holds a byte other than a letter, a digit or "-" (forwarding.allow_underscores: false)')
    }
    headers.push(TETHER_HEADER.epoch, String(d.epoch))
    if (d.moved !== null) headers.push(TETHER_HEADER.moved, `from=${d.moved.from}; reason=${d.moved.reason}; epoch=${d.epoch}`)
    return headers
  }

  /**
   * With shared bindings (`affinity.shared`), a table key's move is first read back from the
   * shared store (once a request; on the move path only, at the same time as the move's state
   * fetch, so it adds no wait). A binding stored there at this move's epoch or later means
   * another replica (or worker, each with its own table) found the upstream out and moved the
   * user first, and announced it: the table takes that binding (as at a sync) and the request
   * is decided again, so it goes where that move took the user without X-Tether-Moved and a
   * rehydration once more. A store that does not answer (or the client gone) leaves the move as
   * decided. Two replicas moving one user at the same instant both find nothing stored yet and
   * both announce it (the store keeps one of the two; docs/state-protocol.md). Not asked for a
   * move without a state fetch (nothing to overlap, no rehydration to save), nor for a hedge's
   * move (#hedged).
   */
  async #movedBefore(ctx: RequestContext, d: Decision, shared: SharedBindings): Promise<boolean> {
    const key = (ctx.key as Extract<RequestKey, { kind: 'table' }>).value
    const b = await this.#d.http.untilCut(shared.lookup(key))
    if (b === 'cut' || b === 'unavailable' || b === null || b.epoch < d.epoch) return false
    this.#d.sessions.sync(key, b, this.#d.clock.now())
    return true
  }

  /**
   * A user who moved gets their newest checkpoint with this request: in a header, or POSTed to
   * the hook first. `X-Tether-Rehydrate-Status` says what was found, so the upstream can tell
   * "no state stored" (`none`) from "state not fetched" (`unavailable`) and from "your hook
   * did not take it" (`refused`: the request goes on without the state). A hook that could
   * not reach the upstream (see {@link #postHook}): its failure, for the request to go on to
   * the next upstream.
   */
  async #rehydrate(ctx: RequestContext, d: Decision, headers: string[], cancel: AbortSignal | null = null, fetched: Promise<GetResult> | null = null): Promise<Extract<Outcome, { kind: 'error' }> | null> {
    const state = this.#d.state
    const key = d.sessionKey
    if (state === null || key === null || d.moved === null) return null
    // a held move that is forced after all: the fetch just made is not waited for again;
    // `fetched`: this move's fetch, made while the shared store was asked (see #movedBefore)
    const r = ctx.holdMoves ? ctx.heldState ?? { status: 'unavailable' as const } : await (fetched ?? state.fetch(key))
    if (!ctx.holdMoves && CHOSEN_MOVES.has(d.moved.reason) && state.behind(key, r)) {
      // older than the user's upstream has (a checkpoint of theirs was lost while the store
      // was down): as unavailable, so the move by choice is held (see #move); a forced move
      // after it takes this, the best there is
      ctx.rehydrate = 'unavailable'
      ctx.heldState = r
      return null
    }
    if (r.status === 'found') {
      ctx.rehydrate = 'delivered'
      if (this.#hook === null) {
        headers.push(TETHER_HEADER.rehydrate, r.checkpoint.value, TETHER_HEADER.previousUpstream, d.moved.from)
        // (the header's bytes: a value is written latin1, one byte a character, as it was read
        // from the upstream's X-Tether-State; not its UTF-8 length, twice that for 0x80-0xFF)
        ctx.rehydrateBytes = r.checkpoint.value.length
      } else {
        const failed = await this.#postHook(ctx, d, r.checkpoint.value, cancel)
        if (failed !== null) return failed
      }
    } else ctx.rehydrate = r.status === 'missing' ? 'none' : 'unavailable'
    headers.push(TETHER_HEADER.rehydrateStatus, ctx.rehydrate)
    return null
  }

  /**
   * The upstream refused the request with the state in X-Tether-Rehydrate (431: over its header
   * limit) before its application ran: the same request again, the state left out and
   * `X-Tether-Rehydrate-Status: too_large` (the user moves on without it, rather than getting
   * the 431); the caller logs it with the remedy unless the resend is refused 431 too (a retry
   * sent so at once after its hedge was refused there is not logged again: the hedge's
   * refusal was, see #hedgeRefused).
   */
  #withoutState(ctx: RequestContext, d: Decision, headers: string[]): string[] {
    ctx.rehydrate = 'too_large'
    ctx.rehydrateBytes = 0
    if (d.sessionKey !== null) this.#d.state?.restarted(d.sessionKey, d.epoch, d.upstream)
    if (ctx.body !== null) ctx.body = ctx.body.replay()
    return stateLeftOut(headers)
  }

  /**
   * A request refused for the `bytes` of state in its head was sent again without it, with
   * result `r` (`answered`: its head reached the client). A 431 to it too is the client's own
   * head, over the upstream's limit with or without the state: passed on as any other 4xx
   * answer (no rehydration counted, no warning); otherwise warned with the remedy.
   */
  #resentWithoutState(ctx: RequestContext, d: Decision, r: AttemptResult, answered: boolean, bytes: number): void {
    if (r.status === 431 && answered) {
      ctx.rehydrate = null
      ctx.ownHeadTooLarge = true
    }
    else this.#d.logger.warn({ request_id: ctx.id, upstream: d.upstream, bytes }, `the upstream refused the user's state in X-Tether-Rehydrate ${STATE_REFUSED}; sent again without it: ${STATE_REMEDY}`)
  }

  /**
   * A hedged pair's first attempt ended with `r`. If its upstream refused the head for the
   * user's state in it (see stateRefused) and no attempt answered yet, it is sent again there at
   * once without the state (`X-Tether-Rehydrate-Status: too_large`, as #withoutState), and the
   * hedge races on: the first head of the two answers. Waiting for the hedge to end instead
   * would hold an upstream that answers until a slow hedge does. Null: not sent again (no such
   * refusal, an attempt answered, the client left, or the upstream's id now names another
   * process or none: the request path decides again, see #result). Reached only after such a
   * refusal: no cost for other hedges.
   */
  #resendFirst(ctx: RequestContext, x: Exchange, d: Decision, upstream: Upstream, headers: string[], r: AttemptResult): { attempt: Attempt; result: Promise<AttemptResult> } | null {
    if (r.responded || r.outcome?.kind !== 'error' || r.outcome.code !== 'TETHER_HEADERS_TOO_LARGE') return null
    if (ctx.answering !== null || x.clientGone || !this.#current(upstream)) return null
    // an attempt reads the context's state bytes when it starts: the resend carries none (the
    // hedge's stay the context's while the race goes on)
    const bytes = ctx.rehydrateBytes
    ctx.rehydrateBytes = 0
    const again = this.#start(ctx, x, d, upstream, stateLeftOut(headers))
    ctx.rehydrateBytes = bytes
    return again
  }

  /**
   * A 431 (or a 400 to a long state line: see stateRefused) passed on to the client (its body
   * could no longer be sent again without the state; a hedged pair's refusal never is: see
   * #hedged): the upstream refused the head that carried the state in X-Tether-Rehydrate
   * before its application ran. The state was not delivered (`too_large`, for the count and the
   * access line), and the user, pinned there by this answer, starts again without it: its first
   * checkpoint replaces the stored one, as after a resend without the state (#withoutState).
   */
  #refusedInHead(ctx: RequestContext): void {
    ctx.rehydrate = 'too_large'
    const d = ctx.decision
    if (d !== null && d.moved !== null && d.sessionKey !== null) this.#d.state?.restarted(d.sessionKey, d.epoch, d.upstream)
  }

  /**
   * POST the state to the new upstream's hook before the request. It waits like a request on
   * that upstream: counted in flight, so health taking the upstream out (a frozen replica)
   * stops it. Stopped (by health, or `cancel`: the client left, or a hedge's first attempt answered), or the
   * connection failed: that failure (the request is sent elsewhere, or not at all); any other
   * outcome is logged and the request goes on.
   */
  async #postHook(ctx: RequestContext, d: Decision, value: string, cancel: AbortSignal | null): Promise<Extract<Outcome, { kind: 'error' }> | null> {
    const headers = ['content-type', 'application/octet-stream', TETHER_HEADER.epoch, String(d.epoch), TETHER_HEADER.previousUpstream, d.moved!.from]
    const cookie = ctx.req.headers.cookie
    if (cookie !== undefined) headers.push('cookie', cookie)
    const abort = new AbortController()
    let stopped: ErrorCode | null = null
    const waiting = { answered: false, stop: (code: ErrorCode): void => { stopped ??= code; abort.abort() } }
    this.#d.inFlight.add(waiting, d.upstream)
    const cancelled = (): void => waiting.stop('TETHER_UPSTREAM_UNAVAILABLE')
    if (cancel?.aborted === true) cancelled()
    else cancel?.addEventListener('abort', cancelled, { once: true })
    const at = this.#d.upstreams().get(d.upstream)
    const r = await this.#d.http.call(d.upstream, 'POST', this.#hook!, headers, value, this.config.timeouts.response_headers, abort.signal)
    cancel?.removeEventListener('abort', cancelled)
    this.#d.inFlight.remove(waiting, d.upstream)
    if (stopped !== null) return { kind: 'error', code: stopped, connect: true }
    if (r.status === 0 && r.error !== null) {
      const outcome = classify(r.error, false)
      if (outcome.kind === 'error' && outcome.connect) {
        const signal = healthSignal({ status: 0, outcome, error: r.error, responded: false })
        if (signal !== null && at !== undefined) this.#observe(at, signal)
        return outcome
      }
    }
    if (r.status < 200 || r.status >= 300) {
      // the upstream starts without the state: marked restarted by the caller only if this
      // attempt is sent and answers (an unsent or losing hedge leaves the stored state alone)
      this.#d.logger.warn({ upstream: d.upstream, status: r.status }, 'rehydration hook did not accept the state')
      ctx.rehydrate = 'refused'
    }
    return null
  }

  /** One attempt through the transport, counted in flight, its outcome told to health. */
  #start(ctx: RequestContext, x: Exchange, d: Decision, upstream: Upstream, headers: string[]): { attempt: Attempt; result: Promise<AttemptResult> } {
    const attempt = x.attempt(ctx, d, upstream, headers)
    return { attempt, result: this.#watched(ctx, d, upstream, attempt) }
  }

  /** {@link #start}'s result alone, for a caller that never stops the attempt (no wrapper object a request). */
  #run(ctx: RequestContext, x: Exchange, d: Decision, upstream: Upstream, headers: string[]): Promise<AttemptResult> {
    return this.#watched(ctx, d, upstream, x.attempt(ctx, d, upstream, headers))
  }

  /** `attempt`'s result once {@link #attemptEnded} took it (in the same microtask: no turn more than the callback of #send). */
  #watched(ctx: RequestContext, d: Decision, upstream: Upstream, attempt: Attempt): Promise<AttemptResult> {
    const since = this.#watch(upstream, attempt)
    return new Promise((resolve, reject) => attempt.onEnd({
      ended: (r) => {
        try {
          this.#attemptEnded(ctx, d, upstream, attempt, since, r)
          resolve(r)
        } catch (err) {
          reject(err)
        }
      },
      failed: reject,
    }))
  }

  /** Count `attempt` in flight on `upstream` until it ends (see #attemptEnded); returns when it was sent (InFlight's monotonic clock, performance.now()). */
  #watch(upstream: Upstream, attempt: Attempt): number {
    const since = this.#d.inFlight.add(attempt, upstream.id)
    this.#d.events.requestStarted(upstream.id)
    return since
  }

  /** `attempt`, sent at `since` and watched by #watch, ended with `r`: its decision settled, no longer counted in flight, health told how it went. */
  #attemptEnded(ctx: RequestContext, d: Decision, upstream: Upstream, attempt: Attempt, since: number, r: AttemptResult): void {
    this.#d.router.settle(d)
    this.#d.inFlight.remove(attempt, upstream.id)
    this.#d.events.requestEnded(upstream.id)
    const signal = healthSignal(r)
    if (signal !== null) this.#observe(upstream, signal)
    // (not one that left while it waited for a connection: the upstream was busy, not stuck)
    else if (r.outcome?.kind === 'client_abort' && !attempt.answered && attempt.queued !== true && this.#d.inFlight.now() - since >= this.config.health.active.timeout && this.#current(upstream) && this.#firstGiveUp(ctx)) {
      // the client gave up waiting for a head: a hint that this upstream may not be answering
      // (a frozen replica). A probe now decides, so the user's next request is not sent back
      // into the hole; only without active checks is the hint a failure for passive health
      // (else a few clients giving up on a slow but healthy upstream could eject it). Only
      // while the id is still the process the request went to (as #observe): a slow old pod
      // says nothing of the id's new one
      if (!this.config.health.active.enabled) this.#d.observe(upstream.id, 'timeout')
      this.#d.suspect?.(upstream.id)
    }
  }

  /**
   * Tell passive health how an exchange with `upstream` went, if its id still names that
   * process (see #current): one whose id was given another url or pod uid meanwhile (a pod
   * re-created, a reload) was with the old process, and its failure (the old pod is gone) says
   * nothing of the new one. Discovery moves an id's url only when its address is no longer
   * listed, so the old url is no address of the new pod.
   */
  #observe(upstream: Upstream, signal: HealthSignal): void {
    if (this.#current(upstream)) this.#d.observe(upstream.id, signal)
  }

  /**
   * Whether `upstream` (as read for an attempt) is still what its id names in the current set:
   * the same pod uid when both are known, else the same url (see isReplacement). One map lookup
   * and a few compares, no allocation.
   */
  #current(upstream: Upstream): boolean {
    const now = this.#d.upstreams().get(upstream.id)
    return now !== undefined && !isReplacement(upstream, now)
  }

  /**
   * One client connection is one witness: however many requests (h2 streams) it abandons at
   * once, its giving up counts once. A client resetting a burst of streams (or a busy event
   * loop delaying their aborts past the probe timeout) must not eject an upstream by itself.
   */
  #firstGiveUp(ctx: RequestContext): boolean {
    const connection = ctx.connection
    if (this.#gaveUp.has(connection)) return false
    this.#gaveUp.add(connection)
    return true
  }

  /** `retries.hedge_after` applies: a plain HTTP request with an idempotent method and no body. */
  #hedgeable(ctx: RequestContext): boolean {
    return this.config.retries.hedge_after !== null && ctx.protocol === 'http' && ctx.body === null && isIdempotent(ctx.method)
  }

  /**
   * A move goes ahead: counted (tether_failovers_total, /status), and told to the state
   * protocol (a checkpoint lost on the old upstream no longer holds the user).
   */
  #moved(d: Decision, moved: NonNullable<Decision['moved']>): void {
    this.#d.events.failover(moved.from, moved.reason)
    if (d.sessionKey !== null) this.#d.state?.moved(d.sessionKey)
  }

  /**
   * An attempt with no answer head after `retries.hedge_after` is also sent to the user's next
   * upstream (with the usual move headers and rehydration); the first head wins and the other
   * attempt is stopped. The user moves only if the hedge answered (its binding is recorded then).
   * An attempt whose head the upstream refused for the state it carried (see stateRefused) does
   * not answer: the other one still may (a hedge refused so is not sent again: a retry to its
   * upstream, if the first attempt fails, goes without the state; a first attempt refused so is
   * sent again there at once without it, racing the hedge on: see #resendFirst). The context's
   * rehydration values (rehydrate, heldState, rehydrateBytes) are the answering attempt's from
   * its head on, and once both are done those of the attempt whose result is returned.
   */
  async #hedged(ctx: RequestContext, x: Exchange, d: Decision, upstream: Upstream, headers: string[]): Promise<AttemptResult> {
    // each attempt keeps its own state bytes (forward.ts reads them when it starts): the first's
    // stay in the context unless the hedge answers
    const sentBytes = ctx.rehydrateBytes
    let firstBytes = sentBytes
    const first = this.#start(ctx, x, d, upstream, headers)
    const late = await withDeadline(first.result.then(() => false), this.config.retries.hedge_after!, true, this.#d.timers)
    // still waiting for a connection (limits.max_upstream_connections all busy): its upstream is
    // busy, not slow; the user waits for it (bounded by timeouts.queue), the burst is not sent on
    if (!late || first.attempt.answered || first.attempt.queued === true) return first.result
    const { router, clock, logger } = this.#d
    if (!this.#budgetLeft(ctx)) {
      // a hedge is an extra attempt: none left in `retries.attempts`, or `retries.try_duration` over
      const { attempts } = this.config.retries
      logger.debug({ request_id: ctx.id, upstream: d.upstream, attempts, retries: ctx.retries, hedges: ctx.hedges, since_ms: clock.now() - ctx.arrived },
        'no answer head yet, but no hedge: the retry budget is spent (retries.attempts, retries.try_duration)')
      return first.result
    }
    const tried = new Set(ctx.tried ?? [])
    tried.add(d.upstream)
    const d2 = router.decide(ctx.key, tried, clock.now())
    if (typeof d2 === 'string') return first.result
    const up2 = this.#d.upstreams().get(d2.upstream)
    if (up2 === undefined) {
      router.settle(d2)
      return first.result
    }
    const h2 = this.#headers(ctx, d2, up2)
    // what the hedge's rehydration finds is the hedge's: the first attempt's (for its access
    // line, and a retry after it) is put back unless the hedge answers
    // (`let`: a first attempt refused for its state and sent again without it has the resend's)
    let { rehydrate } = ctx
    const { heldState } = ctx
    const own = (): void => { ctx.rehydrate = rehydrate; ctx.heldState = heldState; ctx.rehydrateBytes = firstBytes }
    ctx.rehydrateBytes = 0 // the hedge carries state only if its own fetch finds some
    // the first attempt answering meanwhile, or the client leaving, stops the hedge's hook (on a
    // frozen upstream it would hold the request's end, its access line, for up to
    // timeouts.response_headers)
    const answered = new AbortController()
    // (the first attempt's values put back at once: its head is read with them, see onAnswering below)
    const stop = (): void => { own(); answered.abort() }
    ctx.onAnswering = stop
    if (x.gone.aborted) stop()
    else x.gone.addEventListener('abort', stop, { once: true })
    const hookFailed = d2.moved === null ? null : await this.#rehydrate(ctx, d2, h2, answered.signal)
    x.gone.removeEventListener('abort', stop)
    ctx.onAnswering = null
    const hedgeBytes = ctx.rehydrateBytes
    // answered meanwhile, or the hedge's state did not reach its upstream: its hook failed (the
    // connection, or health took the upstream out), or the upstream was replaced (another url
    // or pod uid) or left while the state was posted (sent on, it would reach the id's new
    // process without the state the hook gave the old one; see #move): no hedge. The first
    // attempt is still out, and if it fails, the retry decides again on the current set. Or
    // the client left meanwhile (a header fetch is not stopped by it, as a hook is): no hedge
    // for it (its first attempt ends as the client's abort)
    if (first.attempt.answered || x.clientGone || hookFailed !== null || (d2.moved !== null && !this.#current(up2))) {
      router.settle(d2)
      own()
      return first.result
    }
    logger.debug({ request_id: ctx.id, upstream: d.upstream, hedge: d2.upstream }, 'no answer head yet: hedging on the next upstream')
    ctx.hedges++ // one of `retries.attempts` (see #budgetLeft)
    const second = this.#start(ctx, x, d2, up2, h2)
    const hedgeRehydrate = ctx.rehydrate
    const hedgeHeld = ctx.heldState
    // the first attempt on its upstream: the one sent, or its resend without the state
    let home = first
    let resent = false
    // whichever head comes first answers; the other attempt is stopped at once, and the
    // context's rehydration values become the answering attempt's before its head is read (a
    // 431 to a resend without the state is the client's own head: see ownHeadRefused). The user
    // moved with a hedge that answers: counted as any move, and before its head's checkpoint is
    // taken (a lost one must still hold the user: see StateProtocol.moved), unless the first
    // decision was itself a move (counted already: one user, one move)
    ctx.onAnswering = () => {
      if (ctx.answering === home.attempt) {
        own()
        // the resend's upstream starts without the user's state (as after #withoutState): its
        // first checkpoint replaces the stored one. Marked only when it answers: a resend that
        // lost to the hedge leaves the stored state alone
        if (resent && d.sessionKey !== null) this.#d.state?.restarted(d.sessionKey, d.epoch, d.upstream)
        return second.attempt.stop('TETHER_UPSTREAM_UNAVAILABLE')
      }
      home.attempt.stop('TETHER_UPSTREAM_UNAVAILABLE')
      ctx.rehydrate = hedgeRehydrate
      ctx.heldState = hedgeHeld
      ctx.rehydrateBytes = hedgeBytes
      if (d2.moved !== null && d.moved === null) this.#moved(d2, d2.moved)
      // the first attempt's restart mark (a move without the state: see #move) is its
      // upstream's, which does not answer here (another request of the same move may still be
      // answered there); the hedge's upstream starts without the user's state only if its own
      // fetch or hook failed: then its first checkpoint replaces the old one
      if (d2.moved !== null && (ctx.rehydrate === 'unavailable' || ctx.rehydrate === 'refused') && d2.sessionKey !== null) this.#d.state?.restarted(d2.sessionKey, d2.epoch, d2.upstream)
    }
    // the hedge's upstream refused the head that carried the state (over its header limit): no
    // answer, no rehydration counted, no restart mark; the first attempt's answer (or failure)
    // is the request's. Not sent again without the state while the first attempt is out: a
    // hedge goes because the user's upstream is slow, not gone, and its answer would move the
    // user without their state; the first attempt answering keeps them where they are, with it.
    // Remembered instead (ctx.stateRefusedBy): if the first attempt fails, a retry to this
    // upstream goes without the state at once (see #send). Warned when the refusal comes
    let hedgeRefused = false
    const hedged = hedgeBytes === 0 ? second.result : second.result.then((r) => {
      hedgeRefused = r.outcome?.kind === 'error' && r.outcome.code === 'TETHER_HEADERS_TOO_LARGE'
      if (hedgeRefused) {
        ctx.stateRefusedBy = up2
        this.#hedgeRefused(ctx, d2, up2, hedgeBytes)
      }
      return r
    })
    // the first attempt refused for the state in its head while no attempt answered (the hedge
    // is still out, or failed): sent again to its upstream at once without the state, as
    // without a hedge, racing the hedge on (see #resendFirst)
    const homeDone = firstBytes === 0 ? first.result : first.result.then((r) => {
      const again = this.#resendFirst(ctx, x, d, upstream, headers, r)
      if (again === null) return r
      home = again
      resent = true
      rehydrate = 'too_large'
      firstBytes = 0
      return again.result
    })
    const [ra, rb] = await Promise.all([homeDone, hedged])
    ctx.onAnswering = null
    this.#d.events.hedge(ctx.answering === second.attempt)
    if (resent) this.#resentWithoutState(ctx, d, ra, ctx.answering === home.attempt, sentBytes)
    if (ctx.answering === second.attempt) return rb
    own()
    if (ctx.answering === home.attempt) return ra
    // neither answered: both count as tried, the first one's failure decides what follows (a
    // hedge refused for its state did not fail: a retry may go there, as without the hedge,
    // and goes without the state at once)
    if (!hedgeRefused) (ctx.tried ??= new Set()).add(d2.upstream)
    ctx.decision = d
    return ra.outcome?.kind === 'client_abort' ? ra : rb.outcome?.kind === 'client_abort' ? rb : ra
  }

  /** This request's hedge was refused for its state by `upstream` (the same process), and the state is still to be sent there. */
  #refusedBefore(ctx: RequestContext, d: Decision, upstream: Upstream): boolean {
    const by = ctx.stateRefusedBy
    return by !== null && ctx.rehydrateBytes > 0 && by.id === d.upstream && !isReplacement(by, upstream)
  }

  /**
   * A hedge's upstream refused the user's state in its head: warned with the remedy, for each
   * upstream at once for the first, then at most once per 30 s with how many it stands for
   * (`repeated`, `for_ms`): a misconfigured upstream refuses the hedge of every request of a
   * user whose home is slow, and one upstream's refusals do not hide another's. Keyed by the
   * upstream's id (a new process under it, another url or pod uid, is warned at once); the keys
   * of upstreams no longer in the set are forgotten when the set has changed, so they stay
   * bounded by the set (a reload builds a new request path, and so a new log).
   */
  #hedgeRefused(ctx: RequestContext, d: Decision, upstream: Upstream, bytes: number): void {
    const set = this.#d.upstreams()
    if (set !== this.#hedgeRefusalsOf) {
      this.#hedgeRefusalsOf = set
      this.#hedgeRefusals.retain((id) => set.get(id) !== undefined)
    }
    this.#hedgeRefusals.report(d.upstream, upstream.uid ?? upstream.url, { request_id: ctx.id, upstream: d.upstream, bytes },
      `the upstream refused the user's state in X-Tether-Rehydrate of a hedge ${STATE_REFUSED}; the hedge is dropped (the first attempt answers; if it fails, a retry there goes without the state): ${STATE_REMEDY}`)
  }

  /** The rehydration behind an answer, counted (tether_rehydrations_total) by what its upstream got. */
  #rehydrated(ctx: RequestContext): void {
    const got = ctx.rehydrate
    this.#d.state?.rehydrated(got === 'delivered' ? 'delivered' : got === 'none' ? 'no_state' : 'error')
  }

  /** May a failed attempt be sent again to the key's next upstream? */
  #mayRetry(ctx: RequestContext, outcome: Outcome): boolean {
    return outcome.kind === 'error' && this.#budgetLeft(ctx) && shouldRetry(outcome, ctx.method, ctx.body === null || ctx.body.replayable)
  }

  /**
   * May the request start one more attempt on another upstream, a retry or a hedge? Each one
   * made so far (ctx.retries, ctx.hedges) used one of `retries.attempts`, and none starts once
   * `retries.try_duration` has passed since the request arrived. A hedge is such an attempt:
   * Envoy's hedge on a per-try timeout is a retry counted toward its retry limits.
   */
  #budgetLeft(ctx: RequestContext): boolean {
    const { attempts, try_duration: tryDuration } = this.config.retries
    return ctx.retries + ctx.hedges < attempts && this.#d.clock.now() - ctx.arrived < tryDuration
  }

  /** The logged form of the request's session for the access log (null: no session). */
  #session(ctx: RequestContext): string | null {
    const k = SessionRecords.keyOf(ctx.key, ctx.decision)
    return k === null ? null : this.#d.records.logged(ctx.key, k)
  }

  /**
   * How a request that waited before its attempt (a shared-affinity lookup on a slow store)
   * ends if it can no longer be answered: a graceful stop's grace end cut its connection
   * (status 0, TETHER_SHUTTING_DOWN: the listener's close resolves and the pools are destroyed
   * before the connection's 'close' reaches the request, so `x.clientGone` may still be false),
   * or its client left (status 0, client_abort). Null: it goes on. Two flag reads after an
   * await, no listener: requests that never wait pay nothing.
   */
  #left(x: Exchange): AttemptResult | null {
    if (this.#d.http.cut) return { status: 0, outcome: SHUT_DOWN, error: null, responded: true }
    if (x.clientGone) return { status: 0, outcome: CLIENT_ABORT, error: null, responded: true }
    return null
  }

  /** Tether answers itself with a catalogue error. */
  #answer(ctx: RequestContext, x: Exchange, code: ErrorCode, close: boolean): void {
    const sent = x.clientGone ? null : x.fail(ctx, code, close)
    const r: AttemptResult = { status: sent?.status ?? 0, outcome: { kind: 'error', code, connect: false }, error: ctx.lastFailure?.error ?? null, responded: true }
    if (sent?.delivery === undefined) return this.#finish(ctx, r)
    // over h2, the answer may wait for the client's window: the access line once it went out, or
    // was cut; the failure that made it (an upstream's) is told now, once: the access line
    // carries no error, whether the answer went out whole or not (no second warning)
    this.#failed(ctx, r)
    void sent.delivery.then((late) => this.#finish(ctx, { ...r, outcome: late ?? r.outcome, error: null }))
  }

  /** When Tether last logged that it is out of resources (clock ms). */
  #outOfResourcesAt = -Infinity

  /** Tether could not open an upstream connection for lack of file descriptors: one error line per 10 s. */
  #outOfResources(err: unknown): void {
    const now = this.#d.clock.now()
    if (now - this.#outOfResourcesAt < OUT_OF_RESOURCES_LOG_MS) return
    this.#outOfResourcesAt = now
    const code = (err as { code?: unknown } | null)?.code
    this.#d.logger.error({ code, err: (err as Error).message }, 'Tether cannot open upstream connections: it is out of file descriptors (503 TETHER_OUT_OF_RESOURCES, upstreams not blamed); raise the open-files limit (ulimit -n) or shed load')
  }

  /** An upstream exchange's failure (or Tether's own lack of resources) behind `r`: warned. */
  #failed(ctx: RequestContext, r: AttemptResult): void {
    if (r.outcome === null || r.outcome.kind !== 'error' || !r.error) return
    // not an answer's failure ('success': the state store's, logged per Redis node)
    const signal = healthSignal(r)
    if (signal !== null && signal !== 'success') this.#d.logger.warn({ err: r.error, code: r.outcome.code, upstream: ctx.decision?.upstream ?? null, method: ctx.method, path: ctx.req.url }, 'upstream exchange failed')
    else if (r.outcome.code === 'TETHER_OUT_OF_RESOURCES') this.#outOfResources(r.error)
  }

  /** The request is done: metrics and the access log. */
  #finish(ctx: RequestContext, r: AttemptResult): void {
    // over h2, a stream "left" because nghttp2 reset its malformed body is the client's bad request
    if (r.outcome?.kind === 'client_abort' && malformedBody(ctx.req, ctx.body?.bytes ?? 0)) r = { ...r, outcome: MALFORMED_BODY }
    ctx.status = r.status
    ctx.outcome = r.outcome
    const upstream = ctx.decision?.upstream ?? null
    const { logger, events } = this.#d
    this.#failed(ctx, r)
    const ms = performance.now() - ctx.t0
    events.observeRequest(upstream, ctx.method, r.status, ms / 1000)
    events.clientProtocol(ctx.protocol === 'websocket' ? 'websocket' : ctx.req.httpVersionMajor === 2 ? 'h2' : ctx.req.httpVersion === '1.0' ? 'http/1.0' : 'http/1.1')
    if (this.#watchSecureCookie && ctx.decision?.setCookie != null) this.#secureOverHttp(ctx)
    if (!this.#access) return
    logger.info({
      request_id: ctx.id,
      peer: ctx.peer === '' ? null : ctx.peer,
      method: ctx.method,
      path: ctx.req.url,
      protocol: ctx.protocol,
      http_version: ctx.req.httpVersion,
      status: r.status,
      key: this.config.affinity.key,
      session: this.#session(ctx),
      upstream,
      route: ctx.decision?.source ?? null,
      retries: ctx.retries,
      outcome: r.outcome !== null
        ? (r.outcome.kind === 'client_abort' ? 'client_abort' : r.outcome.code)
        : ctx.rehydrate === 'delivered' ? 'rehydrated' : ctx.decision?.moved ? (ctx.ownHeadTooLarge ? 'head_too_large' : 'failover') : ctx.retries > 0 ? 'retried' : 'ok',
      duration_ms: Math.round(ms * 1000) / 1000,
    }, 'access')
  }
}

/** Why an upstream refused the state in a header, and what to do about it (the warnings' words). */
const STATE_REFUSED = '(431, or 400 to a line over 4 KiB: over its header size limit)'
const STATE_REMEDY = "raise the upstream's header limit (nginx: large_client_header_buffers), lower state.max_bytes, or use state.rehydrate: hook"

/**
 * An attempt's headers ([name, value, ...]) with the user's state left out (X-Tether-Rehydrate
 * and X-Tether-Previous-Upstream) and X-Tether-Rehydrate-Status `too_large`: a new array.
 * Example: ['x-tether-rehydrate', 'S...', 'x-tether-rehydrate-status', 'delivered'] -> ['x-tether-rehydrate-status', 'too_large'].
 */
function stateLeftOut(headers: readonly string[]): string[] {
  const out: string[] = []
  for (let i = 0; i < headers.length; i += 2) {
    const name = headers[i]!
    if (name === TETHER_HEADER.rehydrate || name === TETHER_HEADER.previousUpstream) continue
    out.push(name, name === TETHER_HEADER.rehydrateStatus ? 'too_large' : headers[i + 1]!)
  }
  return out
}

/** What the end of an attempt #send watches goes to (the request path's, made once: see SentAttempt). */
interface SentEnds {
  ended(sent: SentAttempt, r: AttemptResult): void
  failed(sent: SentAttempt, err: unknown): void
}

/**
 * An attempt the request path sent (#send), with what its result is concluded with: its
 * watcher, one object a request, where two closures (the result's and the failure's) and the
 * context they shared were ~0.1 KB more (bench/README.md, "Bytes allocated per request").
 */
class SentAttempt implements AttemptWatcher {
  constructor(
    readonly ends: SentEnds,
    readonly ctx: RequestContext,
    readonly x: Exchange,
    readonly d: Decision,
    readonly upstream: Upstream,
    /** The pass's headers (the state still in them: see #result). */
    readonly headers: string[],
    readonly refusedBefore: boolean,
    readonly attempt: Attempt,
    /** When it was sent (see #watch). */
    readonly since: number,
  ) {}

  ended(r: AttemptResult): void {
    this.ends.ended(this, r)
  }

  failed(err: unknown): void {
    this.ends.failed(this, err)
  }
}

/** The most often Tether says it is out of resources (ms): every request fails alike then. */
const OUT_OF_RESOURCES_LOG_MS = 10_000

/**
 * Does a browser treat a page on `host` (a Host header) as secure over plain HTTP, keeping its
 * Secure cookies (localhost, *.localhost, 127.0.0.0/8, [::1])? Example: 'localhost:8080' -> true.
 */
function isLocalhostPage(host: string | undefined): boolean {
  return host !== undefined && /^(localhost|[^:]*\.localhost|127\.[\d.]+|\[::1\])(:\d*)?$/i.test(host)
}
