// HTTP forwarding: the only file that imports undici (the parts in UNDICI_PARTS). One
// keep-alive Pool per upstream; the request body and the response body are streamed both
// ways with backpressure, never buffered whole. A client abort cancels the upstream request;
// an upstream abort after the response started ends the client connection. The HTTP transport of the request path: it
// does not decide where a request goes, nor whether to retry.
import { validateHeaderName, validateHeaderValue, type IncomingMessage, type ServerResponse } from 'node:http'
import type { Socket } from 'node:net'
import { createRequire } from 'node:module'
import type * as Undici from 'undici'
import type { Dispatcher } from 'undici'
import { TetherError, type ErrorCode } from '../errors.js'
import { isReplacement, type Upstream } from '../upstream/upstream-set.js'
import type { UpstreamTlsConfig } from '../config/schema.js'
import { UpstreamTlsSource, type UpstreamTlsChange, type UpstreamTlsOptions } from '../tls/upstream-tls.js'
import { classify, UPSTREAM_REFUSED_CERTIFICATE, type Outcome } from './outcome.js'
import { interimHead, mayStartWithInterim, MAX_INTERIM_ANSWERS, withoutUnsolicitedContinue } from './interim-response.js'
import type { AnswerHeadPolicy, Answered, Attempt, AttemptWatcher, Exchange } from './exchange.js'
import type { Decision } from '../routing/decision.js'
import { ownHeadRefused, stateRefused, type AttemptResult, type RequestContext } from './request-context.js'
import { sendError } from './respond.js'
import { isIdempotent } from './retry.js'
import { clientStallTimeout, closedIdle, Deadlines, sweepInterval, type Expiring } from './deadlines.js'
import { H2Response } from './h2-messages.js'
import type { RequestBody } from './request-body.js'
import { connectionTokens, REASON_PHRASE } from './headers.js'

/**
 * The parts of undici Tether uses, each loaded from its own file: the package's index also
 * loads fetch, WebSocket, EventSource, the caches, the mocks and the interceptors, about
 * 9 MB of RSS in every process that serves (110 of undici's files instead of 24). undici 7
 * has no `exports` map, so its files can be required by path; the index would also add
 * `request` and the other calls to every Dispatcher, so the rehydration hook's request is
 * `request.call(pool, ...)`. test/proxy-undici-parts.test.ts pins these paths against the
 * installed undici and checks that a serving process never loads the index.
 */
export const UNDICI_PARTS = {
  Pool: 'undici/lib/dispatcher/pool.js',
  buildConnector: 'undici/lib/core/connect.js',
  errors: 'undici/lib/core/errors.js',
  request: 'undici/lib/api/api-request.js',
} as const
const requireUndici = createRequire(import.meta.url)
const Pool = requireUndici(UNDICI_PARTS.Pool) as typeof Undici.Pool
type Pool = Undici.Pool
const buildConnector = requireUndici(UNDICI_PARTS.buildConnector) as typeof Undici.buildConnector
const errors = requireUndici(UNDICI_PARTS.errors) as typeof Undici.errors
// (it calls nothing of `this` but its dispatch: see noteFull)
const request = requireUndici(UNDICI_PARTS.request) as (this: Pick<Dispatcher, 'dispatch'>, options: Dispatcher.RequestOptions) => Promise<Dispatcher.ResponseData>

/** What a pool is made for: an upstream's origin and, for https://, its TLS settings. */
export interface PoolTarget {
  readonly id: string
  readonly url: string
  readonly tls?: UpstreamTlsConfig | null
  /** Its pod's uid (discovery): another uid at the same url is another pod, whose pool is new. */
  readonly uid?: string
  /** Its own bound on connections (the upstream's `max_connections`); null or absent: PoolTimeouts.maxConnections. */
  readonly max_connections?: number | null
}

export interface PoolTimeouts {
  /** TCP connect timeout, ms. */
  readonly connect: number
  /** Request sent -> response headers received, ms. */
  readonly responseHeaders: number
  /** Max silence between response body chunks, ms (0 = none). */
  readonly bodyIdle: number
  /** Largest upstream response head, bytes (room for checkpoint headers). */
  readonly maxResponseHeaderBytes: number
  /** Most connections to one upstream (limits.max_upstream_connections) unless its own max_connections says; absent or null: unlimited. */
  readonly maxConnections?: number | null
  /** How long a request may wait for one of them when all are busy, ms (timeouts.queue); used only for a bounded upstream. */
  readonly queue?: number
}

/**
 * One upstream's pool. `servername` goes with every request to it: undici takes a request's
 * TLS name from its Host header otherwise (the client's, with `preserve_host`), and a Client
 * whose requests change name closes its connection to reconnect under the new one.
 */
interface UpstreamPool {
  readonly pool: Pool
  /** What the pool was made for (url and TLS settings): a change makes a new pool. */
  readonly identity: string
  /** https://: the name undici files the pool's requests under (see {@link tlsName}); http://: undefined. */
  readonly servername: string | undefined
  /** The pod uid it was made for, once known. */
  uid: string | undefined
  /**
   * Most requests handed to the pool at once (see {@link Waiter}): the upstream's own
   * max_connections, else limits.max_upstream_connections; null: no bound, no queue (a request
   * is handed over at once, and nothing below is kept up).
   */
  readonly bound: number | null
  /** Requests handed to the pool and not finished (their answer ended, they failed or were aborted). */
  handed: number
  /**
   * Bounded: every connection is busy, so a request handed over now would wait in undici's own
   * queue (the pool's last dispatch said it needs a 'drain', and none came since). Requests wait
   * in Tether's queue while it is set, even below the bound: a connection whose answer just ended
   * is taken again only a turn later (undici's pipelining-1 rule), and until then a request handed
   * over would wait inside undici. Always false without a bound.
   */
  full: boolean
  /** Tether's queue: the first and last request waiting for room, in arrival order (see Waiter). */
  first: Waiter | null
  last: Waiter | null
  /** How many wait there now (the `queued` of /upstreams and tether_upstream_queued_requests). */
  queued: number
  /** {@link admitWaiting} runs for it now (a refused hand-over ends inside it, see there). */
  admitting: boolean
  /**
   * Set when a reload retired it (see Forwarder.setUpstreams): the pool that replaced it for the
   * same upstream, or null when the upstream was removed; undefined while it is current.
   */
  successor?: UpstreamPool | null
}

/**
 * The pool `entry`'s upstream has now (a reload may have replaced it, more than once), or null
 * when a reload removed the upstream.
 */
function currentPool(entry: UpstreamPool): UpstreamPool | null {
  let p: UpstreamPool | null = entry
  while (p !== null && p.successor !== undefined) p = p.successor
  return p
}

/**
 * A request waiting in its upstream's queue (Tether's, not undici's: HAProxy's per-server
 * queue, src/queue.c `pendconn_add` / `pendconn_unlink` / `process_srv_queue`): a pool takes
 * at most its bound of requests at once; the rest wait in arrival order, linked through these
 * fields (no array to shift, no closure a request), and each finished request hands the first
 * one over (as HAProxy's `process_srv_queue` does when a stream releases its server). A request
 * that ends while waiting (its client left, timeouts.queue, a stop) is unlinked and never
 * reaches undici: no connection taken for it, nothing to refuse when its turn comes. Unlike
 * HAProxy there is one queue an upstream, no backend-wide one: a user's request waits for its
 * own upstream (affinity), never for "any". Implemented by an attempt and by a rehydration
 * hook's turn (see Forwarder.call).
 */
interface Waiter {
  prevWaiting: Waiter | null
  nextWaiting: Waiter | null
  /** The pool whose queue it waits in now, else null. */
  waitingIn: UpstreamPool | null
  /** Its turn came in `entry` (it left the queue, and `entry.handed` counts it): hand it over. */
  admit(entry: UpstreamPool): void
  /** A reload removed its upstream while it waited (it left the queue): it ends unsent. */
  dropped(): void
}

/** Whether `entry` takes one more request now (bounded pools only, see UpstreamPool.full). */
function hasRoom(entry: UpstreamPool): boolean {
  return entry.handed < entry.bound! && !entry.full
}

/** `w` goes to the back of `entry`'s queue (to its head with `first`: see ExchangeHandler.onResponseError). */
function enqueue(entry: UpstreamPool, w: Waiter, first = false): void {
  w.waitingIn = entry
  if (first) {
    w.prevWaiting = null
    w.nextWaiting = entry.first
    if (entry.first === null) entry.last = w
    else entry.first.prevWaiting = w
    entry.first = w
  } else {
    w.prevWaiting = entry.last
    w.nextWaiting = null
    if (entry.last === null) entry.first = w
    else entry.last.nextWaiting = w
    entry.last = w
  }
  entry.queued++
}

/** `w` leaves the queue it waits in (its turn came, or it ended there). */
function unqueue(w: Waiter): void {
  const entry = w.waitingIn!
  if (w.prevWaiting === null) entry.first = w.nextWaiting
  else w.prevWaiting.nextWaiting = w.nextWaiting
  if (w.nextWaiting === null) entry.last = w.prevWaiting
  else w.nextWaiting.prevWaiting = w.prevWaiting
  w.prevWaiting = w.nextWaiting = w.waitingIn = null
  entry.queued--
}

/**
 * Hand `entry`'s waiting requests over, first first, while it has room. A pool that refuses a
 * request (destroyed at a stop) fails it inside its dispatch, which releases its room and
 * would call this again for the next: the loop already running takes it instead, so a long
 * queue does not nest a call per request.
 */
function admitWaiting(entry: UpstreamPool): void {
  if (entry.admitting) return
  entry.admitting = true
  try {
    while (entry.first !== null && hasRoom(entry)) {
      const w = entry.first
      unqueue(w)
      entry.handed++
      w.admit(entry)
    }
  } finally {
    entry.admitting = false
  }
}

/** A request handed to `entry`'s pool finished: its room goes to the first waiting one, if any. */
function release(entry: UpstreamPool): void {
  entry.handed--
  admitWaiting(entry)
}

/** undici honours `servername` in a request's options (lib/core/request.js), not in its types. */
type WithServername<T> = T & { servername?: string }

/**
 * An upstream's answer delivered whole without its trailer section, which held a
 * `Content-Length` (see trailerContentLength): which upstream, and the request (the client's,
 * with its id; a request of Tether's own, such as the rehydration hook's, has none).
 */
export interface TrailersDropped {
  readonly upstream: string
  readonly request_id: string | null
  readonly method: string
  readonly path: string | undefined
}

/** Owns the undici pools, keyed by upstream id. */
export class Forwarder {
  readonly #pools = new Map<string, UpstreamPool>()
  readonly #timeouts: PoolTimeouts
  readonly #closeAfter: () => boolean
  readonly #answer: AnswerHeadPolicy
  /** The head and body-idle waits of every live exchange (undici's own timers are off). */
  readonly #deadlines: Deadlines
  readonly #tlsChanged: (id: string, change: UpstreamTlsChange) => void
  readonly #trailersDropped: (dropped: TrailersDropped) => void
  /** A graceful stop's grace period ended (see {@link cutOff}). */
  #cut = false
  readonly #wasCut = (): boolean => this.#cut
  /**
   * The `gone` signals made for requests whose response has not closed yet (see
   * HttpExchange.gone): {@link cutOff} aborts them at once, since the connections' 'close' comes
   * a turn later, after the listener's own close resolved and the pools were destroyed under a
   * hook still waiting (its request then went on, answered 503 into a closed socket).
   */
  readonly #goneWatch = new Set<() => void>()

  /**
   * `answer`: what every answer's head gets (learning, checkpoints, filtering, cookies);
   * `closeAfter`: true while Tether drains, so answers carry `Connection: close`;
   * `tlsChanged`: an https:// upstream's TLS files changed (read again, or not usable);
   * `trailersDropped`: an answer went out whole without its trailer section (told once an answer).
   */
  constructor(upstreams: readonly PoolTarget[], timeouts: PoolTimeouts, answer: AnswerHeadPolicy, closeAfter: () => boolean = () => false,
    tlsChanged: (id: string, change: UpstreamTlsChange) => void = () => undefined, trailersDropped: (dropped: TrailersDropped) => void = () => undefined) {
    this.#timeouts = timeouts
    this.#answer = answer
    this.#closeAfter = closeAfter
    this.#tlsChanged = tlsChanged
    this.#trailersDropped = trailersDropped
    const head = timeouts.bodyIdle > 0 ? Math.min(timeouts.responseHeaders, timeouts.bodyIdle) : timeouts.responseHeaders
    // (timeouts.queue whenever given: an upstream's own max_connections may bound it, from a reload on)
    this.#deadlines = new Deadlines(sweepInterval(Math.min(head, timeouts.queue ?? head)))
    this.setUpstreams(upstreams)
  }

  /**
   * Make the pools match `upstreams`: new ids (or a changed url, pod uid or TLS setting) get a
   * pool, removed ones are closed gracefully (their in-flight requests finish). Pools of
   * unchanged upstreams stay: kept connections to a re-created pod's address reached the old pod.
   * Requests waiting in a replaced pool's queue move to the new pool's, in their order and with
   * the time they waited (HAProxy's queue belongs to the server, whose address may change under
   * it); those of a removed upstream end with the queue's 503 (nothing was sent; see
   * {@link Waiter.dropped}): HAProxy refuses to delete a server with requests queued, and its
   * maintenance mode sends them elsewhere only when nothing ties them to that server, as a
   * user's affinity does here.
   */
  setUpstreams(upstreams: readonly PoolTarget[]): void {
    const wanted = new Map(upstreams.map((u) => [u.id, u]))
    const identity = (u: PoolTarget | undefined): string | undefined => u === undefined ? undefined : `${u.url} ${JSON.stringify(u.tls ?? null)} ${u.max_connections ?? ''}`
    const left: [string, UpstreamPool][] = []
    const retired: [string, UpstreamPool][] = []
    for (const [id, entry] of this.#pools) {
      const u = wanted.get(id)
      if (u !== undefined && entry.identity === identity(u) && !isReplacement({ url: u.url, uid: entry.uid }, u)) {
        entry.uid ??= u.uid
        continue
      }
      this.#pools.delete(id)
      entry.pool.close().catch(() => undefined)
      retired.push([id, entry])
      if (entry.first !== null) left.push([id, entry])
    }
    for (const [id, u] of wanted) {
      if (this.#pools.has(id)) continue
      try {
        this.#pools.set(id, this.#newPool(u, identity(u)!))
      } catch {
        // a TLS file gone since the config was checked: no pool, its requests fail to connect
        // (and are retried elsewhere); health probes report the same file
      }
    }
    // a request sent again after a stale connection of a retired pool goes to its successor
    // (see ExchangeHandler.onResponseError), never into a queue no longer counted (review s64 r2)
    for (const [id, old] of retired) old.successor = this.#pools.get(id) ?? null
    for (const [id, old] of left) moveWaiting(old, this.#pools.get(id))
  }

  #newPool(target: PoolTarget, identity: string): UpstreamPool {
    const origin = target.url
    const bound = target.max_connections ?? this.#timeouts.maxConnections ?? null
    // https://: the upstream's CA, client pair (mTLS), name and verification, for every
    // connection, as its files are when the connection is made (a renewed certificate is used
    // from the next connection on)
    const source = new UpstreamTlsSource(origin, target.tls ?? null, (change) => this.#tlsChanged(target.id, change))
    const connector = (tls: UpstreamTlsOptions | null): Undici.buildConnector.connector =>
      buildConnector({ timeout: this.#timeouts.connect, noDelay: true, ...tls } as Undici.buildConnector.BuildOptions)
    const tls = source.current()
    let version = source.version
    let connect = connector(tls)
    // the TLS name (SNI and the name the certificate is checked against) is the upstream's own,
    // set here, never the one undici asks for (the request's Host, the client's); none for an IP
    const sni = tls?.servername
    const pool = new Pool(origin, {
      connect: (opts, callback) => {
        if (tls !== null) {
          const now = source.current()
          if (source.version !== version) [version, connect] = [source.version, connector(now)]
        }
        connect(tls === null ? opts : { ...opts, servername: sni }, (...args) => {
          if (args[0] === null) {
            wrapRead(args[1] as Socket)
            noteClose(args[1] as Socket & AnsweredUpTo)
            if (tls !== null) keepCertificateRefusal(args[1] as Socket)
          } else notConnected.add(args[0])
          callback(...args)
        })
      },
      // off: the exchanges time their own waits (see deadlines.ts for why)
      headersTimeout: 0,
      bodyTimeout: 0,
      keepAliveTimeout: 4_000,
      keepAliveMaxTimeout: 60_000,
      pipelining: 1,
      maxHeaderSize: this.#timeouts.maxResponseHeaderBytes,
      // (each Client carries one request at a time, pipelining 1: at most this many at once;
      // Tether hands it no more than that (see Waiter), so undici's own queue stays empty and
      // this is only a safety net; undefined: a Client per request in flight)
      connections: bound ?? undefined,
    })
    const entry: UpstreamPool = { pool, identity, servername: tls === null ? undefined : tlsName(origin, sni), uid: target.uid, bound, handed: 0, full: false, first: null, last: null, queued: 0, admitting: false }
    // a connection is free again (and undici's queue empty): the first waiting request goes
    if (bound !== null) pool.on('drain', () => {
      entry.full = false
      admitWaiting(entry)
    })
    return entry
  }

  /**
   * Requests waiting for a connection to each upstream (limits.max_upstream_connections all
   * busy), by upstream id: 0 for each without the limit. Read at a metrics scrape.
   */
  *queued(): IterableIterator<[string, number]> {
    for (const [id, entry] of this.#pools) yield [id, entry.queued]
  }

  /** Requests waiting for a connection to upstream `id` now (see {@link queued}). */
  queuedFor(id: string): number {
    return this.#pools.get(id)?.queued ?? 0
  }

  /**
   * What undici's pool for upstream `id` holds now (its public `stats`): requests it keeps
   * waiting for a connection of its own (`pending`: 0 while Tether's queue works, see Waiter),
   * those on a connection (`running`), its open connections (`connected`); undefined: no pool.
   */
  poolStats(id: string): { pending: number; running: number; connected: number } | undefined {
    const stats = this.#pools.get(id)?.pool.stats
    return stats === undefined ? undefined : { pending: stats.pending, running: stats.running, connected: stats.connected }
  }

  /**
   * A graceful stop's grace period ended: the client connections still open are closed by
   * Tether now, not by their clients, so an answer cut that way is logged `TETHER_SHUTTING_DOWN`
   * (with the status sent), never `client_abort`. Example: the listener's `beforeForce`.
   */
  cutOff(): void {
    this.#cut = true
    // the requests still waiting before their attempt (a rehydration hook) stop now, logged as
    // cut by the stop, not at their connection's 'close' (a later turn: see #goneWatch)
    const watching = [...this.#goneWatch]
    this.#goneWatch.clear()
    for (const cut of watching) cut()
  }

  /** `cut` runs at {@link cutOff} until the returned function is called (see HttpExchange.gone). */
  watchCut(cut: () => void): () => void {
    this.#goneWatch.add(cut)
    return () => { this.#goneWatch.delete(cut) }
  }

  /**
   * `wait`'s value, or 'cut' as soon as a stop's grace end cuts the client connections (see
   * {@link cutOff}): a request waiting on a slow store read stops waiting then (its client is
   * gone) rather than at the read's own timeout. Example: `await untilCut(shared.lookup(key))`.
   */
  untilCut<T>(wait: Promise<T>): Promise<T | 'cut'> {
    if (this.#cut) return Promise.resolve('cut')
    let unwatch = (): void => undefined
    const cut = new Promise<'cut'>((resolve) => { unwatch = this.watchCut(() => resolve('cut')) })
    return Promise.race([wait, cut]).finally(() => unwatch())
  }

  /** Whether a graceful stop's grace period ended (see {@link cutOff}). */
  get cut(): boolean {
    return this.#cut
  }

  /** The HTTP transport of one request: its answer goes into `res`. */
  exchange(res: ServerResponse): Exchange {
    return new HttpExchange(this, res)
  }

  /**
   * Tether's own answer just written into `res` (see HttpExchange.fail): over h2, the rest of
   * it may wait for the client's window, timed by the sweep as an upstream's ended answer is
   * (see {@link Delivery}). undefined: all of it went out, or it is no h2 stream.
   */
  watchAnswer(req: IncomingMessage, res: ServerResponse): Promise<Outcome | null> | undefined {
    const delivery = Delivery.of(req, res, this.#timeouts, this.#deadlines, this.#wasCut)
    if (delivery === null) return undefined
    // no exchange listens to this response's 'close' for it
    res.once('close', () => delivery.closed())
    return delivery.settled
  }

  /**
   * Send `ctx`'s request, routed by `decision`, to `upstream` with `headers` and stream the
   * answer into `res`. A failure before any byte of the answer was written leaves `res`
   * untouched (`responded: false`) so the caller may retry elsewhere.
   */
  dispatch(ctx: RequestContext, decision: Decision, res: ServerResponse, upstream: Upstream, headers: string[]): Attempt {
    const entry = this.#pools.get(upstream.id)
    if (entry === undefined) {
      const failed: AttemptResult = { status: 0, outcome: { kind: 'error', code: 'TETHER_UPSTREAM_CONNECT', connect: true }, error: new Error(`no pool for upstream ${upstream.id}`), responded: false }
      return { onEnd: (watcher) => void RESOLVED.then(() => watcher.ended(failed)), answered: false, stop: () => undefined }
    }
    const handler = new ExchangeHandler(ctx, decision, res, this.#closeAfter, this.#answer, this.#timeouts, this.#deadlines, this.#wasCut, this.#trailersDropped)
    this.#deadlines.link(handler)
    const options: WithServername<Dispatcher.DispatchOptions> = { path: ctx.target.path, method: ctx.method, headers, body: ctx.body, servername: entry.servername }
    // nothing to send again but the head, and sent again it does what it did (RFC 9110
    // section 9.2.2): may go once more on a new connection (see ExchangeHandler.resendOn)
    if (ctx.body === null && isIdempotent(ctx.method)) handler.resendOn(entry, options)
    handler.sendOn(entry, options)
    return handler
  }

  /**
   * A small request of Tether's own (the rehydration hook): the answer's status, or 0 with the
   * error when the upstream could not be reached, did not answer within `timeout` ms, or
   * `signal` aborted it. Body discarded; an answer whose trailer section holds a
   * `Content-Length` is complete, as on the request path (and told the same way).
   */
  async call(id: string, method: string, path: string, headers: string[], body: string, timeout: number, given?: AbortSignal): Promise<{ status: number; error: unknown }> {
    const entry = this.#pools.get(id)
    if (entry === undefined) return { status: 0, error: null }
    let signal = given
    let queueTimer: ReturnType<typeof setTimeout> | undefined
    let turn: UpstreamPool | null = null
    try {
      if (entry.bound !== null) {
        // it may wait in the queue (see Waiter), where undici's head timer does not run: the
        // whole call is bounded by timeouts.queue on top of `timeout`
        const bound = new AbortController()
        queueTimer = setTimeout(() => bound.abort(new TetherError('TETHER_UPSTREAM_QUEUE_TIMEOUT')), this.#timeouts.queue! + timeout)
        const either = given === undefined ? bound.signal : AbortSignal.any([given, bound.signal])
        signal = either
        // a hook that gives up while it waits leaves the queue: it costs no connection
        turn = await turnIn(entry, either)
      }
      const on = turn ?? entry
      const options: WithServername<Dispatcher.RequestOptions> = { method, path, headers, body, headersTimeout: timeout, bodyTimeout: timeout, signal, servername: on.servername }
      // undici's request() drops its dispatch's answer: the hook that takes the last free
      // connection sets `full` as a request does (see ExchangeHandler.sendOn)
      const pending = request.call(on.bound === null ? on.pool : noteFull(on), options)
      // its room goes to the next request once undici is done with it (the answer read or dropped, or failed)
      if (on.bound !== null) {
        turn = null
        pending.then((r) => void r.body.once('close', () => release(on)), () => release(on))
      }
      // an answer that comes after all once `signal` aborted is dropped (and a failure ignored)
      const stop = signal
      if (stop !== undefined) pending.then((r) => { if (stop.aborted) r.body.destroy() }, () => undefined)
      const r = await (stop === undefined ? pending : untilAborted(pending, stop))
      await r.body.dump()
      const failed = r.body.errored
      if (failed instanceof Error && trailerContentLength(failed)) this.#trailersDropped({ upstream: id, request_id: null, method, path })
      return { status: r.statusCode, error: null }
    } catch (err) {
      // it had its turn but was not handed over (its options refused): the room is given back
      if (turn !== null && turn.bound !== null) release(turn)
      return { status: 0, error: err }
    } finally {
      clearTimeout(queueTimer)
    }
  }

  /** Stop accepting work; in-flight exchanges finish. */
  async close(): Promise<void> {
    await Promise.all([...this.#pools.values()].map((p) => p.pool.close().catch(() => undefined)))
  }

  /** Abort everything still open; the requests still waiting end with the queue's 503 (see Waiter.dropped). */
  async destroy(): Promise<void> {
    for (const entry of this.#pools.values()) moveWaiting(entry, undefined)
    await Promise.all([...this.#pools.values()].map((p) => p.pool.destroy().catch(() => undefined)))
  }
}

/**
 * The pool a request of Tether's own (the rehydration hook) may be handed to now: `entry` when
 * it has room and nobody waits, else the one it gets its turn in, in order (a reload may have
 * moved it to a new pool); counted in its `handed` either way. Rejects with `signal`'s reason
 * when that aborts first (it leaves the queue: no connection used), and when a reload removed
 * the upstream meanwhile.
 */
function turnIn(entry: UpstreamPool, signal: AbortSignal): Promise<UpstreamPool> {
  if (signal.aborted) return Promise.reject(signal.reason)
  if (entry.first === null && hasRoom(entry)) {
    entry.handed++
    return Promise.resolve(entry)
  }
  return new Promise((resolve, reject) => {
    const left = (): void => {
      if (turn.waitingIn !== null) unqueue(turn)
      reject(signal.reason)
    }
    const turn: Waiter = {
      prevWaiting: null, nextWaiting: null, waitingIn: null,
      admit: (given) => { signal.removeEventListener('abort', left); resolve(given) },
      dropped: () => { signal.removeEventListener('abort', left); reject(new TetherError('TETHER_UPSTREAM_QUEUE_TIMEOUT')) },
    }
    signal.addEventListener('abort', left, { once: true })
    enqueue(entry, turn)
  })
}

/**
 * The requests waiting in `old`'s queue, its upstream replaced or removed by a reload (see
 * Forwarder.setUpstreams): to the back of `next`'s queue, in their order (handed over at once
 * when `next` has no bound), or ended unsent when there is no `next`.
 */
function moveWaiting(old: UpstreamPool, next: UpstreamPool | undefined): void {
  while (old.first !== null) {
    const w = old.first
    unqueue(w)
    if (next === undefined) w.dropped()
    else if (next.bound === null) w.admit(next)
    else enqueue(next, w)
  }
  if (next !== undefined && next.bound !== null) admitWaiting(next)
}

/**
 * `entry`'s pool for undici's request() (which dispatches on it), noting whether the dispatch
 * left every connection busy (`full`, see ExchangeHandler.sendOn). One object a hook call.
 */
function noteFull(entry: UpstreamPool): Pick<Dispatcher, 'dispatch'> {
  return {
    dispatch: (options, handler) => {
      const room = entry.pool.dispatch(options, handler)
      entry.full = !room
      return room
    },
  }
}

/**
 * `pending`, or a rejection with `signal`'s reason as soon as it aborts: undici acts on the
 * abort of a request that has no connection yet only once it has one, or its connect failed (up
 * to timeouts.connect: a TLS handshake the upstream never answers, SYNs to a dead node).
 */
function untilAborted<T>(pending: Promise<T>, signal: AbortSignal): Promise<T> {
  if (signal.aborted) return Promise.reject(signal.reason)
  return new Promise<T>((resolve, reject) => {
    const aborted = (): void => reject(signal.reason)
    signal.addEventListener('abort', aborted, { once: true })
    pending.then(resolve, reject).finally(() => signal.removeEventListener('abort', aborted))
  })
}

/**
 * The name undici files an https:// upstream's requests under: the same for all of them, so a
 * kept-alive connection serves every Host. It is the TLS name when there is one; for an IP
 * address without `servername` (no SNI), the address, which the pool's connect then drops.
 * Example: tlsName('https://10.0.0.9:8443', undefined) -> '10.0.0.9'.
 */
function tlsName(origin: string, sni: string | undefined): string {
  return sni ?? new URL(origin).hostname
}

/**
 * The pool connection undici read from last. undici's parser runs the bytes it read at once,
 * and a handler's onResponseEnd runs inside that run: there, this is the connection the answer
 * came on (see {@link retireIfTrailersControl}).
 */
let lastRead: Socket | null = null

/**
 * undici reads responses with `socket.read()`: wrap this socket's read to note it as
 * {@link lastRead}, and because undici fails a response that opens with a `100 Continue` it
 * did not ask for: at the start of a response only (its parser has read no status line yet),
 * complete 100 heads are dropped. The parser is
 * undici's own, found by its symbol's description; a test pins this against the installed
 * undici, and without it the answer is a 502 that is not retried (never a replay).
 */
function wrapRead(socket: Socket): void {
  const read = socket.read
  socket.read = function readWithoutContinue(this: Socket, size?: number) {
    lastRead = this
    const chunk = read.call(this, size) as Buffer | null
    if (chunk === null || !mayStartWithInterim(chunk)) return chunk
    const parser = parserOf(this)
    if (parser == null || parser.statusCode !== 0 || parser.headersSize !== 0) return chunk
    return withoutUnsolicitedContinue(chunk)
  } as Socket['read']
}

/** undici's HTTP/1.1 parser of a pool connection, as much of it as Tether reads (its llhttp instance and state). */
interface UndiciParser {
  readonly statusCode?: number
  readonly headersSize?: number
  /** llhttp's verdict on the head just read, as undici kept it (false: the connection ends after it). */
  readonly shouldKeepAlive?: boolean
  readonly ptr?: number | null
  readonly llhttp?: {
    llhttp_get_http_major(ptr: number): number
    llhttp_get_http_minor(ptr: number): number
    llhttp_set_lenient_keep_alive?(ptr: number, on: number): void
  }
}

/** The symbol undici keeps a connection's parser under, found by its description on the first connection read. */
let parserKey: symbol | undefined

function parserOf(socket: Socket): UndiciParser | null | undefined {
  parserKey ??= Object.getOwnPropertySymbols(socket).find((s) => s.description === 'parser')
  return parserKey === undefined ? undefined : (socket as unknown as Record<symbol, UndiciParser | null>)[parserKey]
}

/**
 * The HTTP-version of the status line undici's parser is reading on {@link lastRead} (called
 * from onResponseStart, inside that parse), when it is not 1.0 or 1.1: e.g. 'HTTP/2.0', or null.
 * undici's llhttp takes `HTTP/2.0 200 OK` and `HTTP/0.9 200 OK` on an HTTP/1.1 connection; no
 * HTTP/1.1 server sends either (RFC 9110 section 6.2: a response's major version is at most
 * the request's; an HTTP/2 answer is binary frames, and HTTP/0.9 has no status line), so the
 * bytes are not an answer Tether can read (a 502, as for any other malformed head; nginx 1.22
 * and HAProxy 2.6 pass an `HTTP/2.0 200` on). No parser found (another undici): null, as before.
 * Two reads of llhttp's state, no allocation.
 */
function unreadableVersion(): string | null {
  const socket = lastRead
  const parser = socket === null ? undefined : parserOf(socket)
  const llhttp = parser?.llhttp
  const ptr = parser?.ptr
  if (llhttp === undefined || ptr == null) return null
  const major = llhttp.llhttp_get_http_major(ptr)
  const minor = llhttp.llhttp_get_http_minor(ptr)
  return major === 1 && minor <= 1 ? null : `HTTP/${major}.${minor}`
}

/**
 * A 1xx answer that llhttp takes as the connection's end (called from onResponseStart, inside
 * undici's parse of the bytes just read from {@link lastRead}): `Connection: close`, and as
 * llhttp reads them `Proxy-Connection: close` or an `HTTP/1.0` status line without keep-alive.
 * The final answer after it failed ("Data after `Connection: close`"), a 502 for a request the
 * upstream ran. A 1xx is not the response the close is about (RFC 9112 section 9.6: the
 * server closes after the response containing it; RFC 9110 section 15.2: a proxy forwards 1xx
 * and waits for the final answer), so this connection's parser is told to go on reading
 * (llhttp's lenient keep-alive). The connection is still retired once the final answer is in,
 * as the upstream asked: undici marked it so when it read the 1xx's head (its `kReset`, set
 * whenever its parser's `shouldKeepAlive`, read here, is false). No parser found (another
 * undici): as before, a 502. Example: `103` with `Connection: close`, then `200 ok` -> the
 * client gets both; the next request opens a new connection.
 */
function closeAfterInterim(): void {
  const socket = lastRead
  const parser = socket === null ? undefined : parserOf(socket)
  const ptr = parser?.ptr
  if (parser?.shouldKeepAlive !== false || ptr == null || parser.llhttp?.llhttp_set_lenient_keep_alive === undefined) return
  parser.llhttp.llhttp_set_lenient_keep_alive(ptr, 1)
}

/**
 * An answer whose trailer section holds `Connection` or `Proxy-Connection` (connection control,
 * which no trailer may carry: RFC 9110 section 6.5.1) ends its connection's use: undici kept
 * it alive from the head, but its parser took a `close` there as the connection's end, and the
 * next answer on it, usually another user's, failed ("Data after Connection: close", a 502 for
 * a request the upstream ran). Called from onResponseEnd, inside undici's parse of the bytes
 * just read from {@link lastRead}; the connection is closed once undici's completion returned,
 * before it is used again (a full turn of the event loop later), so the next request opens a
 * new one. Example: trailers `{ connection: 'close' }` -> the connection closes, the client's
 * answer stands (the field itself is hop-by-hop: never passed on).
 */
function retireIfTrailersControl(trailers: Record<string, string | string[] | undefined>): void {
  if (trailers.connection === undefined && trailers['proxy-connection'] === undefined) return
  const socket = lastRead
  if (socket !== null) queueMicrotask(() => socket.destroy())
}

/**
 * The pool connections that carried a whole answer, with their `bytesRead` at its end: one
 * that closes with no byte read since was idle to the upstream when it closed (see
 * {@link ExchangeHandler.resendOn}).
 */
const ANSWERED_UP_TO = Symbol('answered up to')
/** A pool connection as {@link noteClose} marks it: its `bytesRead` at the end of its last whole answer (-1: none yet). */
interface AnsweredUpTo { [ANSWERED_UP_TO]: number }

/**
 * The pool connection whose 'close' is being emitted: undici fails the request that was on it
 * from its own 'close' listener, which runs after this one (see {@link noteClose}).
 */
let closing: Socket | null = null

/** Note `socket` as {@link closing} while its 'close' listeners run. */
function noteClose(socket: Socket & AnsweredUpTo): void {
  socket[ANSWERED_UP_TO] = -1 // set at once: one shape for every connection
  socket.prependListener('close', () => {
    closing = socket
    queueMicrotask(() => { if (closing === socket) closing = null })
  })
}

/**
 * An https:// upstream's alert refusing Tether's client certificate (see
 * UPSTREAM_REFUSED_CERTIFICATE) stays the reason its request failed. Under TLS 1.3 it comes
 * after the handshake, followed by the connection's end, and undici replaces the alert with
 * its own `SocketError('other side closed')`: logged as "the upstream closed the connection",
 * a POST not sent on to the next upstream though the upstream took nothing of it. That later
 * error carries the alert as its `cause` (this listener runs before undici's, which keeps the
 * error it is given); see {@link upstreamError}.
 */
function keepCertificateRefusal(socket: Socket): void {
  let alert: Error | null = null
  socket.on('error', (err: Error & { code?: string }) => {
    if (alert === null) {
      if (err.code !== undefined && UPSTREAM_REFUSED_CERTIFICATE.has(err.code)) alert = err
    } else if (err !== alert && err instanceof errors.SocketError && err.cause === undefined) err.cause = alert
  })
}

/**
 * Errors of a connection that could not be made (TCP connect, TLS handshake): no byte of any
 * request went on it, whatever their code. A TLS handshake the upstream ends (its own check of
 * Tether's client certificate under TLS 1.2 closes the connection: ECONNRESET "Client network
 * socket disconnected before secure TLS connection was established") is no reset of a request
 * the upstream may have run: a POST may go to the next upstream. See {@link attemptOutcome}.
 */
const notConnected = new WeakSet<Error>()

/**
 * How an attempt that failed with `err` ended: as `classify` says, except that a failure to
 * make the connection is a connection failure (TETHER_UPSTREAM_CONNECT, `connect: true`) even
 * when its code is one a request's reset also has.
 */
function attemptOutcome(err: Error, clientGone: boolean): Outcome {
  const outcome = classify(upstreamError(err), clientGone)
  return outcome.kind === 'error' && !outcome.connect && notConnected.has(err) ? { kind: 'error', code: 'TETHER_UPSTREAM_CONNECT', connect: true } : outcome
}

/**
 * Cut off a client's answer whose head went out (the upstream broke off its body). An answer
 * delimited by the close (to an HTTP/1.0 client, neither Content-Length nor chunked) is cut by
 * a reset: its connection's FIN would end it as complete (RFC 9112 section 8), the truncation
 * unseen (nginx 1.22 closes it so). Any other is destroyed: a FIN before its length or last
 * chunk tells the cut. Over HTTP/2 the stream alone. `lengthless`: the answer's head announced
 * no Content-Length.
 */
function cutAnswer(res: ServerResponse, lengthless: boolean): void {
  const socket = res instanceof H2Response ? null : res.socket
  if (lengthless && socket != null && (res as { chunkedEncoding?: boolean }).chunkedEncoding !== true && resetTcp(socket)) return
  res.destroy()
}

/**
 * Reset a plain TCP client connection (RST), true when done. Node's `resetAndDestroy` throws for a
 * socket whose handle is no TCP handle (a TLS socket's TLSWrap: ERR_INVALID_HANDLE_TYPE, which
 * inside undici's callbacks would be an uncaught exception: review s65 r2), so a TLS connection
 * is left to `destroy`: closed without a close_notify, which tells a TLS client the answer was
 * cut (RFC 8446 section 6.1).
 */
function resetTcp(socket: Socket): boolean {
  if ((socket as Socket & { encrypted?: boolean }).encrypted === true) return false
  try {
    socket.resetAndDestroy()
    return true
  } catch {
    return false
  }
}

/** The upstream's refusal of Tether's client certificate behind `err` (see keepCertificateRefusal), or null. */
function certificateRefusal(err: Error): Error | null {
  const cause = err instanceof errors.SocketError ? err.cause as { code?: unknown } | undefined : undefined
  return typeof cause?.code === 'string' && UPSTREAM_REFUSED_CERTIFICATE.has(cause.code) ? cause as Error : null
}

/**
 * Errors that mean the upstream's answer was not valid HTTP (a bad status line, a bare CR,
 * a body longer or shorter than announced, a head over the size limit): 502
 * TETHER_UPSTREAM_PROTOCOL, never retried,
 * since the upstream received the request and may have acted on it. undici's parser errors
 * carry no code, so they are recognised here, in the one file that knows undici.
 */
function upstreamError(err: Error): Error {
  const refusal = certificateRefusal(err)
  if (refusal !== null) return refusal
  if (err instanceof errors.HTTPParserError || err instanceof errors.ResponseContentLengthMismatchError || err instanceof errors.HeadersOverflowError) {
    return new TetherError('TETHER_UPSTREAM_PROTOCOL', err)
  }
  // 'bad response' / 'bad upgrade': the upstream sent an answer undici cannot take (a 100 it
  // did not ask for, split across reads; a 101 to a plain request)
  if (err instanceof errors.SocketError && (err.message === 'bad response' || err.message === 'bad upgrade')) {
    return new TetherError('TETHER_UPSTREAM_PROTOCOL', err)
  }
  return err
}

/**
 * llhttp's refusal of a `Content-Length` field in a chunked answer's trailer section, which
 * undici reports as the answer's failure after it passed on the whole body (the last chunk
 * was read: trailer fields follow it). No trailer may carry framing (RFC 9110 section 6.5.1),
 * and a recipient may drop a field it must not merge (section 6.5.2): the answer is delivered
 * whole, as HAProxy 2.6 (which drops the field) and nginx 1.22 (which ignores trailers) do,
 * its trailer fields left out (llhttp stops at that field; the connection is closed). The
 * same refusal of a head holding both framings comes before any answer starts (a 502, since
 * the handler has not answered then). Example: `0\r\nContent-Length: 9\r\n\r\n` after a
 * complete body -> the client's answer ends whole, without trailers.
 */
function trailerContentLength(err: Error): boolean {
  return err instanceof errors.HTTPParserError && err.message.includes("Content-Length can't be present with Transfer-Encoding")
}

/**
 * The 502 for a status outside 100-599, which RFC 9110 section 15 makes invalid (three
 * digits, first 1-5): the warning names it. nginx 1.22 and HAProxy 2.6 pass a `999` on; a
 * client cannot interpret one (not even as `x00` of its class), and a 502 says what happened.
 * Below 100, undici would fail its own assertion after the head (a 502 logged as that).
 * Example: `HTTP/1.1 999 Whatever` -> 502, "the upstream answered status 999, outside 100-599".
 */
function invalidStatus(status: number): TetherError {
  return new TetherError('TETHER_UPSTREAM_PROTOCOL', new Error(`the upstream answered status ${status}, outside 100-599 (RFC 9110 section 15)`))
}

/**
 * The reason to log for undici's "Response body length does not match content-length header"
 * before any answer's head was passed on: then no body was read, and it stands for llhttp's
 * refusal of the head at or after a Content-Length field (undici reports any error in a head
 * with one so): `Content-Length: 2` twice, `2, 2` in one line, a value that is not a number,
 * or another defect after the field. RFC 9110 section 8.6 lets a recipient reject repeated
 * identical lengths (as llhttp does; nginx 1.22 and HAProxy 2.6 fold them) and has it reject
 * differing ones; llhttp has no leniency for either, and folding them here would mean
 * rewriting every answer head before undici reads it: the 502 stands, with this reason.
 * Else null.
 */
function lengthRefusal(err: Error): TetherError | null {
  if (!(err instanceof errors.ResponseContentLengthMismatchError)) return null
  return new TetherError('TETHER_UPSTREAM_PROTOCOL', new Error("undici's parser refused the answer's head at or after its Content-Length field (a repeated or invalid length: on two lines, as a list such as `2, 2`, not a number; or a defect after it): RFC 9110 section 8.6 lets a recipient refuse even identical repeats", { cause: err }))
}

/** A client that left before its whole answer went out. */
const CLIENT_ABORT: Outcome = { kind: 'client_abort' }
/** A settled promise: a reaction on it runs a function in a microtask (see ExchangeHandler.onEnd). */
const RESOLVED = Promise.resolve()
/**
 * The client connection an answer goes out on, as the listener's idle close marks it: the h2
 * session of a stream (read while the stream is open: a closed one forgets it), else the
 * request's socket.
 */
function clientConnection(req: IncomingMessage, res: ServerResponse): object | undefined {
  return res instanceof H2Response ? res.stream.session : req.socket
}

/** An answer Tether cut because its client took nothing of it, and sent nothing, for the client bound. */
const CLIENT_TIMEOUT: Outcome = { kind: 'error', code: 'TETHER_CLIENT_TIMEOUT', connect: false }
/** An answer Tether cut because its graceful stop's grace period ended (see Forwarder.cutOff). */
const SHUT_DOWN: Outcome = { kind: 'error', code: 'TETHER_SHUTTING_DOWN', connect: false }
/**
 * A request that waited timeouts.queue for one of its upstream's busy connections: nothing was
 * sent, yet it is not tried elsewhere (`connect: false`): a user waits for their own upstream,
 * and a burst moved to the next one would overload it too.
 */
const QUEUE_TIMEOUT: Outcome = { kind: 'error', code: 'TETHER_UPSTREAM_QUEUE_TIMEOUT', connect: false }

/** How many 1xx answers each request had forwarded (see ExchangeHandler.#interim); only requests that had one are here. */
const interimSent = new WeakMap<RequestContext, number>()

/**
 * Node's writer of bytes ahead of an answer's head, in order with the answers before it on the
 * connection (it queues while an earlier pipelined answer is going out): what its own
 * `writeContinue()`, `writeProcessing()` and `writeEarlyHints()` write with. Not in its types;
 * test/proxy-interim.test.ts checks the bytes a client gets.
 */
interface RawWriter { _writeRaw?(data: string, encoding: BufferEncoding): boolean }

/** A Transfer-Encoding of `chunked` alone (any case, optional whitespace). */
const CHUNKED = /^[\t ]*chunked[\t ]*$/i

/** The HTTP transport of one request (see {@link Exchange}). */
class HttpExchange implements Exchange {
  readonly #forwarder: Forwarder
  readonly #res: ServerResponse
  #gone: AbortController | null = null

  constructor(forwarder: Forwarder, res: ServerResponse) {
    this.#forwarder = forwarder
    this.#res = res
  }

  get clientGone(): boolean {
    return this.#res.destroyed
  }

  /**
   * Aborted when the client leaves (the connection closed, an h2 stream reset) before its answer
   * was written: the request path stops a rehydration hook it runs for this request. Its reason
   * is the AttemptResult to log (see Exchange.gone): the client's abort, or TETHER_SHUTTING_DOWN
   * when a stop's grace end closed the connection (aborted at Forwarder.cutOff, before the
   * connection's 'close'). Made when first asked for (a moved user's request), so other requests
   * pay no listener.
   */
  get gone(): AbortSignal {
    if (this.#gone === null) {
      const gone = new AbortController()
      this.#gone = gone
      const res = this.#res
      const forwarder = this.#forwarder
      const left = (): void => gone.abort({ status: 0, outcome: forwarder.cut ? SHUT_DOWN : CLIENT_ABORT, error: null, responded: true } satisfies AttemptResult)
      // a stop's grace end closes every client connection: at once (see Forwarder.cutOff)
      if (res.destroyed || forwarder.cut) left()
      else {
        const unwatch = forwarder.watchCut(() => { if (!res.writableEnded) left() })
        res.once('close', () => {
          unwatch()
          if (!res.writableEnded) left()
        })
      }
    }
    return this.#gone.signal
  }

  attempt(ctx: RequestContext, decision: Decision, upstream: Upstream, headers: string[]): Attempt {
    return this.#forwarder.dispatch(ctx, decision, this.#res, upstream, headers)
  }

  fail(ctx: RequestContext, code: ErrorCode, close: boolean): Answered {
    const res = this.#res
    const status = sendError(res, code, { close, head: ctx.method === 'HEAD' })
    // destroyed: an answer had started, it was cut (nothing of this one went out)
    const delivery = res.destroyed ? undefined : this.#forwarder.watchAnswer(ctx.req, res)
    return delivery === undefined ? { status } : { status, delivery }
  }
}

/**
 * What the deadline sweeps saw of one exchange (see ExchangeHandler.expire), made by the first
 * sweep that visits it: an exchange over before any sweep (most: a sweep comes every
 * sweepInterval) carries none of it: three fields fewer (24 bytes), and once any exchange of
 * the process was swept (sweep times are fractional ms, and V8 then gives each such field a
 * heap number at every object's creation), three heap numbers fewer too: up to ~70 bytes a
 * request (bench/README.md, "Bytes allocated per request").
 */
class SweepMarks {
  /** While uploading: the body's bytes taken from the client at the last look, and since when they are (see uploadSilence). */
  uploadBytes = -1
  uploadQuietSince = 0
  /** Since when (a sweep's time) the answer's body is quiet (see ExchangeHandler's #active). */
  quietSince = 0
  /** Since when (a sweep's time) the client has taken nothing written to it; 0: it has. */
  stalledSince = 0
}

/** How long the sweeps have seen no new byte of the request body come from the client. */
function uploadSilence(marks: SweepMarks, body: RequestBody, now: number): number {
  if (body.bytes !== marks.uploadBytes) {
    marks.uploadBytes = body.bytes
    marks.uploadQuietSince = now
  }
  return now - marks.uploadQuietSince
}

/** Whether a request carries a body (a declared non-zero length, or chunked). */
export function hasBody(req: IncomingMessage): boolean {
  const cl = req.headers['content-length']
  if (cl !== undefined) return cl !== '0'
  return req.headers['transfer-encoding'] !== undefined
}

/**
 * The stall cut of an h2 answer whose writing ended (the upstream's answer ended, or Tether
 * wrote its own) while some of it waits for the client's window: nothing else times such a
 * stream (Node's timers stay fresh while its connection is busy, and no upstream connection is
 * open for it). The rule {@link ExchangeHandler.expire} applies while an answer streams: a
 * client that takes nothing for clientStallTimeout is cut. Progress is a write of the answer
 * handed on to the connection (as a 'drain' is while it streams), so a client reading slowly
 * but steadily is not cut: down to what Tether buffers for a stream (one write, then the ones
 * held back meanwhile) over the bound, ~0.3 KB/s at the defaults. The cut resets the stream
 * (INTERNAL_ERROR, see H2Response.destroy), frees what it buffered and its concurrent-stream
 * slot, and is logged as the client's timeout (`TETHER_CLIENT_TIMEOUT`). nginx's `send_timeout`
 * cuts such a stream too (60 s between two writes, with PROTOCOL_ERROR). Linked in the
 * deadline sweep while it waits: no timer of its own. Example: `Delivery.of(req, res, timeouts,
 * deadlines)?.settled` -> null once all went out.
 */
class Delivery implements Expiring {
  prevLive: Expiring | null = null
  nextLive: Expiring | null = null
  /** Settles once all of the answer went out (null), or how it did not (see AttemptResult.delivery). */
  readonly settled: Promise<Outcome | null>
  #settle!: (outcome: Outcome | null) => void
  readonly #res: H2Response
  /** The stream's connection, taken while the stream is open (see clientConnection). */
  readonly #session: object | undefined
  readonly #bound: number
  readonly #deadlines: Deadlines
  /** Whether the grace period of a graceful stop ended (the stream was closed by Tether then). */
  readonly #cut: () => boolean
  /** The answer's bytes still unsent at the last look; since when (a sweep's time) none went out, 0: not seen yet. */
  #unsent: number
  #stalledSince = 0
  #over = false

  private constructor(res: H2Response, unsent: number, bound: number, deadlines: Deadlines, cut: () => boolean) {
    this.#res = res
    this.#session = res.stream.session
    this.#unsent = unsent
    this.#bound = bound
    this.#deadlines = deadlines
    this.#cut = cut
    this.settled = new Promise((resolve) => { this.#settle = resolve })
    deadlines.link(this)
  }

  /**
   * The watch of the answer just ended in `res`, when it is an h2 stream with some of it still
   * unsent and the client has a bound (body_idle 0: no limit on the client either); else null.
   * The version first: HTTP/1.1's answers pay one property read, no prototype walk. `cut`:
   * whether a graceful stop's grace period ended (see Forwarder.cutOff).
   */
  static of(req: IncomingMessage, res: ServerResponse, timeouts: PoolTimeouts, deadlines: Deadlines, cut: () => boolean): Delivery | null {
    if (req.httpVersionMajor !== 2 || timeouts.bodyIdle === 0 || !(res instanceof H2Response)) return null
    const unsent = res.unsent()
    if (unsent === -1) return null
    return new Delivery(res, unsent, clientStallTimeout({ body_idle: timeouts.bodyIdle, response_headers: timeouts.responseHeaders }), deadlines, cut)
  }

  expire(now: number): void {
    const res = this.#res
    const unsent = res.unsent()
    if (unsent === -1) return this.#end(null)
    // destroyed, its 'close' still to come (Node emits it later): closed before it had it all
    if (res.destroyed) return this.#end(this.#left())
    if (unsent < this.#unsent) {
      this.#unsent = unsent
      this.#stalledSince = now
    } else if (this.#stalledSince === 0) this.#stalledSince = now
    else if (now - this.#stalledSince >= this.#bound) {
      this.#end({ kind: 'error', code: 'TETHER_CLIENT_TIMEOUT', connect: false })
      res.destroy()
    }
  }

  /** The stream closed: all of the answer went out first, or the client reset it (or the connection went). */
  closed(): void {
    this.#end(this.#res.unsent() === -1 ? null : this.#left())
  }

  /**
   * How a stream closed before all of its answer went out ended: its client reset it or left,
   * unless a graceful stop's grace period ended or the connection was closed for its client's
   * silence (Tether closed its connection either way).
   */
  #left(): Outcome {
    return this.#cut() ? SHUT_DOWN : closedIdle(this.#session) ? CLIENT_TIMEOUT : CLIENT_ABORT
  }

  #end(outcome: Outcome | null): void {
    if (this.#over) return
    this.#over = true
    this.#deadlines.unlink(this)
    this.#settle(outcome)
  }
}

/**
 * An attempt's place in its upstream's queue (see {@link Waiter}), made when it has to wait:
 * what to hand over at its turn, since when it waits, and its body's 'error' listener. The body
 * is Tether's until the request is handed over (undici's Request listens from its dispatch on):
 * a body that fails meanwhile (its client left mid-upload, limits.max_body_bytes) ends the
 * attempt; without a listener the error would be thrown uncaught and end the process (review
 * s62 r4). Waiting is off the hot path: a closure here is no cost to the requests that do not.
 */
class QueuedAttempt implements Waiter {
  prevWaiting: Waiter | null = null
  nextWaiting: Waiter | null = null
  waitingIn: UpstreamPool | null = null
  /** Since when it waits (performance.now()). */
  readonly since = performance.now()
  readonly #attempt: ExchangeHandler
  readonly #options: WithServername<Dispatcher.DispatchOptions>
  readonly #body: RequestBody | null
  readonly #bodyFailed: (err: Error) => void

  constructor(attempt: ExchangeHandler, options: WithServername<Dispatcher.DispatchOptions>, body: RequestBody | null) {
    this.#attempt = attempt
    this.#options = options
    this.#body = body
    this.#bodyFailed = (err) => attempt.bodyFailed(err)
    body?.on('error', this.#bodyFailed)
  }

  admit(entry: UpstreamPool): void {
    this.#unlisten()
    this.#attempt.admitted(entry, this.#options)
  }

  dropped(): void {
    this.#unlisten()
    this.#attempt.dropped()
  }

  /** The attempt ended while it waited: out of the queue (if still in it), its body no longer listened to here. */
  left(): void {
    if (this.waitingIn !== null) unqueue(this)
    this.#unlisten()
  }

  #unlisten(): void {
    this.#body?.off('error', this.#bodyFailed)
  }
}

/**
 * undici dispatch handler for one attempt: upstream response -> client response. It is also
 * the attempt's handle: its result, whether its head arrived, and how to stop it.
 */
class ExchangeHandler implements Dispatcher.DispatchHandler, Attempt, Expiring {
  readonly #ctx: RequestContext
  readonly #decision: Decision
  /** Bytes of the user's state this attempt carries in X-Tether-Rehydrate (0: none), read when it starts. */
  readonly #stateBytes: number
  readonly #res: ServerResponse
  readonly #head: boolean
  readonly #closeAfter: () => boolean
  readonly #answer: AnswerHeadPolicy
  /** Told the result (see onEnd); null until the request path asks. */
  #ended: AttemptWatcher | null = null
  /** The attempt's result once it ended, else null. */
  #result: AttemptResult | null = null
  /** The answer's head arrived and this attempt answers the client. */
  answered = false
  /** It waits in its upstream's queue for a connection (see {@link sendOn}), or ended there. */
  queued = false
  /** Its place in its upstream's queue while it waits there, else null (see {@link #wait}). */
  #waiting: QueuedAttempt | null = null
  /** The bounded pool it was handed to, until undici is done with it (see {@link #release}); else null. */
  #handedTo: UpstreamPool | null = null
  #controller: Dispatcher.DispatchController | null = null
  #clientGone = false
  #finished = false
  #waitingDrain = false
  /** Body chunks (and the end) that arrived while the head waits on a checkpoint write. */
  #held: Buffer[] | null = null
  #heldEnd = false
  /** Why the request path stopped this attempt (before undici started it, too). */
  #stopped: TetherError | null = null
  readonly #timeouts: PoolTimeouts
  readonly #deadlines: Deadlines
  /** Whether a graceful stop's grace period ended (see Forwarder.cutOff). */
  readonly #cut: () => boolean
  prevLive: Expiring | null = null
  nextLive: Expiring | null = null
  /** Since when the answer's head is awaited (1xx answers do not restart it). */
  #since = 0
  /** The request body was still arriving from the client at the last look. */
  #uploading = false
  /** A body chunk arrived (or the client was slow) since the last sweep; else the body is quiet since SweepMarks.quietSince. */
  #active = false
  /** What the sweeps saw of this exchange, from the first that visited it (see {@link SweepMarks}); null before. */
  #marks: SweepMarks | null = null
  /** Over h2, once the upstream's answer ended with part of it still waiting for the client: its watch, else null. */
  #delivery: Delivery | null = null
  /** The client connection (see clientConnection), taken while the stream is open. */
  readonly #clientConnection: object | undefined
  /**
   * The response's 'close' listener ({@link #clientClosed}, bound once so that it can be taken
   * off): a bound method, not an arrow field, which would make a context object for its `this`
   * with every handler (~40 bytes a request more; bench/README.md, "Bytes allocated per request").
   */
  readonly #onClientClose: () => void
  /**
   * Body bytes the answer's Content-Length says are still to come (-1: no length). The chunk
   * that completes them is kept ({@link #last}) and written by `res.end(chunk)` when undici
   * tells the end, in the same parse: an answer whose body comes in one read (most) goes out
   * in one corked write of head and body (one write to the client's socket), where
   * `write(chunk)` then `end()` wrote the head and the body apart (~0.1 KB a request more:
   * bench/README.md, "Bytes allocated per request").
   */
  #left = -1
  /** The chunk that completed the announced length, for `res.end` (see {@link #left}); else null. */
  #last: Buffer | null = null
  /**
   * The upstream connection an answer delimited by its close (neither Content-Length nor
   * chunked: an HTTP/1.0 answer, say) comes on, else null. undici ends such an answer both when
   * the upstream closes (FIN) and when the connection is reset (its `onHttpSocketError` takes
   * an ECONNRESET as the end "so far"), but only the close completes it: a reset is an error of
   * the connection, and the answer is incomplete (RFC 9112 section 8). See onResponseEnd.
   */
  #closeDelimited: Socket | null = null
  /** Trailer fields the upstream sent after the body, or null. */
  #trailers: Record<string, string | string[] | undefined> | null = null
  /** The answer's Connection header (the fields it names are hop-by-hop in its trailers too). */
  #connection: string | string[] | undefined = undefined
  /** Told when the answer goes out whole without its trailer section (see trailerContentLength). */
  readonly #trailersDropped: (dropped: TrailersDropped) => void

  constructor(ctx: RequestContext, decision: Decision, res: ServerResponse, closeAfter: () => boolean, answer: AnswerHeadPolicy, timeouts: PoolTimeouts, deadlines: Deadlines, cut: () => boolean,
    trailersDropped: (dropped: TrailersDropped) => void) {
    this.#cut = cut
    this.#trailersDropped = trailersDropped
    this.#ctx = ctx
    this.#decision = decision
    // its own, not the context's: a hedge's rehydration sets the context's while this attempt is out
    this.#stateBytes = ctx.rehydrateBytes
    this.#timeouts = timeouts
    this.#deadlines = deadlines
    this.#res = res
    this.#head = ctx.method === 'HEAD'
    this.#closeAfter = closeAfter
    this.#answer = answer
    this.#clientGone = res.destroyed
    this.#clientConnection = clientConnection(ctx.req, res)
    // `on`, not `once`: a response closes once, and a plain listener costs no wrapper and no removal
    this.#onClientClose = this.#clientClosed.bind(this)
    res.on('close', this.#onClientClose)
  }

  /** Where the request may be sent again (see {@link resendOn}); null when not, or once it was. */
  #resendPool: UpstreamPool | null = null
  #resendOptions: WithServername<Dispatcher.DispatchOptions> | null = null

  /**
   * The request may be sent again on `pool` with `options`, once (called for an idempotent
   * request without a body): when a kept-alive connection it went on closed with nothing of an
   * answer read (the upstream's idle timeout ended it as Tether reused it, RFC 9112 section
   * 9.3.1), it goes to the same upstream on a new connection, as Go's and browsers' clients do:
   * not failed, nor moved to another upstream with its user, and no health failure counted for a
   * connection the upstream closed as it may. Two fields set: nothing allocated a request.
   */
  resendOn(pool: UpstreamPool, options: WithServername<Dispatcher.DispatchOptions>): void {
    this.#resendPool = pool
    this.#resendOptions = options
  }

  /**
   * Send its request on `entry`'s pool: each dispatch of an attempt goes here. Without a bound,
   * handed over at once (the one branch the hot path pays). With one, handed over while the
   * pool has room and nobody waits before it, else it waits its turn in Tether's queue (see
   * {@link Waiter}), counted and timed (see {@link #wait}).
   */
  sendOn(entry: UpstreamPool, options: WithServername<Dispatcher.DispatchOptions>): void {
    if (entry.bound === null) return void entry.pool.dispatch(options, this)
    if (entry.first !== null || !hasRoom(entry)) return this.#wait(entry, options)
    entry.handed++
    this.#hand(entry, options)
  }

  /** Handed to bounded `entry`'s pool (counted in its `handed` already). */
  #hand(entry: UpstreamPool, options: Dispatcher.DispatchOptions): void {
    this.#handedTo = entry
    entry.full = !entry.pool.dispatch(options, this)
  }

  /** undici is done with it (its answer ended, it failed or was aborted): its room goes to the next. */
  #release(): void {
    const entry = this.#handedTo!
    this.#handedTo = null
    release(entry)
  }

  /** Its turn came (see QueuedAttempt.admit); `entry` is a new pool when a reload replaced the one it waited in. */
  admitted(entry: UpstreamPool, options: WithServername<Dispatcher.DispatchOptions>): void {
    this.#waiting = null
    this.queued = false
    options.servername = entry.servername
    if (this.#resendPool !== null) this.#resendPool = entry
    if (entry.bound === null) return void entry.pool.dispatch(options, this)
    this.#hand(entry, options)
  }

  /** A reload removed its upstream while it waited: the queue's 503, nothing was sent (see Forwarder.setUpstreams). */
  dropped(): void {
    this.#endWaiting()
  }

  /** Its body failed while it waited (see QueuedAttempt): it ends as undici would end it once sending. */
  bodyFailed(err: Error): void {
    if (!this.#finished) this.onResponseError(null as unknown as Dispatcher.DispatchController, err)
  }

  /** It waited timeouts.queue, or its upstream went (see {@link dropped}): 503 with Retry-After. */
  #endWaiting(): void {
    this.#stopped = new TetherError('TETHER_UPSTREAM_QUEUE_TIMEOUT')
    this.#endUnstarted({ status: 0, outcome: QUEUE_TIMEOUT, error: this.#stopped, responded: false })
  }

  /**
   * Did the request fail because the kept-alive connection it went on was closed or reset with
   * nothing read from it since the answer before (see {@link resendOn})? Not when the connection
   * was new (the upstream may have failed on this request), nor when the client left, the
   * request path stopped it, or a graceful stop's grace period ended.
   */
  #staleConnection(err: Error): boolean {
    const socket = closing
    if (socket === null || this.answered || this.#clientGone || this.#stopped !== null || this.#cut()) return false
    if ((socket as Socket & Partial<AnsweredUpTo>)[ANSWERED_UP_TO] !== socket.bytesRead) return false
    const outcome = classify(upstreamError(err), false)
    return outcome.kind === 'error' && outcome.code === 'TETHER_UPSTREAM_RESET'
  }

  /**
   * The upstream is not keeping it waiting yet (see InFlight.longestWait): its request body is
   * still arriving from the client, or it waits in the queue for a connection (the connections
   * busy before it are the ones waited on).
   */
  get uploading(): boolean {
    return this.#waiting !== null || !this.#ctx.req.complete
  }

  /**
   * It goes to the back of `entry`'s queue (to its head with `first`), as a {@link QueuedAttempt}
   * (made only for a request that waits: the others carry one null field): counted there until
   * its turn or its end, and failed with a 503 once it waited timeouts.queue (see expire). Its
   * head wait starts when the request starts on a connection (onRequestStart), not before.
   */
  #wait(entry: UpstreamPool, options: WithServername<Dispatcher.DispatchOptions>, first = false): void {
    this.queued = true
    this.#waiting = new QueuedAttempt(this, options, this.#ctx.body)
    enqueue(entry, this.#waiting, first)
  }

  /** Until the answer's head arrives, the request path may stop this attempt. */
  stop(code: ErrorCode): void {
    if (this.answered || this.#finished) return
    this.#stopped = new TetherError(code)
    if (this.#controller !== null) return this.#controller.abort(this.#stopped)
    // not started: its connection is still being made, and undici can abort a request only once
    // it has one (a TLS handshake the upstream never answers, SYNs to a dead node: up to
    // timeouts.connect). Done now (a hedge that lost does not hold its request's end, a request
    // health stopped goes on at once), as a failure to connect: nothing of it was sent, so it may
    // be tried on the next upstream whatever its method (onRequestStart aborts it before anything
    // is sent, and its error then is ignored)
    this.#endUnstarted({ status: 0, outcome: { kind: 'error', code, connect: true }, error: this.#stopped, responded: false })
  }

  /** An attempt not started yet (see stop) ends with `r`: undici's later start or error of it finds it finished. */
  #endUnstarted(r: AttemptResult): void {
    this.#finished = true
    this.#done(r)
  }

  #done(r: AttemptResult): void {
    this.#deadlines.unlink(this)
    // ended in the queue (the client left, a stop, the queue timeout, a reload): it leaves it,
    // and nothing of it reaches undici
    if (this.#waiting !== null) {
      this.#waiting.left()
      this.#waiting = null
    }
    // an attempt that did not answer (a retry or a hedge goes on, or Tether answers): its
    // listener goes, so a request's attempts (up to 11) do not pile up on the response (Node
    // warned "MaxListenersExceededWarning" at the 11th)
    if (!r.responded) this.#res.off('close', this.#onClientClose)
    if (this.#result !== null) return // the first result stands, as a promise's would
    this.#result = r
    if (this.#ended !== null) ExchangeHandler.#tellLater(this)
  }

  onEnd(watcher: AttemptWatcher): void {
    this.#ended = watcher
    // ended already (undici refused the request inside dispatch): told now, a microtask later
    if (this.#result !== null) ExchangeHandler.#tellLater(this)
  }

  /**
   * Attempts whose result is to be told (see onEnd), in the order they ended. Each queues one
   * microtask ({@link tellNext}) as it is added, and microtasks run in the order they were
   * queued: the n-th to run tells the n-th attempt. So a result is told where a promise's
   * reaction would be (a microtask after the attempt ended, never inside undici's call or the
   * caller's `stop`), without a promise, its resolvers and its executor per attempt: one
   * reaction on a settled promise.
   */
  static readonly #ending: ExchangeHandler[] = []

  static #tellLater(handler: ExchangeHandler): void {
    ExchangeHandler.#ending.push(handler)
    void RESOLVED.then(ExchangeHandler.#tellNext)
  }

  static readonly #tellNext = (): void => {
    const handler = ExchangeHandler.#ending.shift()!
    const watcher = handler.#ended!
    handler.#ended = null
    watcher.ended(handler.#result!)
  }

  /**
   * The sweep's check (see deadlines.ts): the head may take `responseHeaders` from the request
   * sent, not counting time its body still arrives from the client (undici's rule); the body
   * may be silent `bodyIdle` between chunks, not counting time the client is slow to read or
   * the head waits on a checkpoint write (undici pauses its timer then too). Both measure from
   * times a sweep saw, so neither fires early.
   */
  expire(now: number): void {
    const controller = this.#controller
    if (this.#finished) return
    if (controller === null) {
      // waiting for a connection (every one busy) for timeouts.queue: 503 (HAProxy's `timeout
      // queue`); not a wait on the upstream's answer, and no failure of it (see QUEUE_TIMEOUT)
      if (this.#waiting !== null && now - this.#waiting.since >= this.#timeouts.queue!) this.#endWaiting()
      return
    }
    const marks = this.#marks ??= new SweepMarks()
    if (!this.answered) {
      if (this.#uploading) {
        // the wait starts at the first sweep that finds the whole body in (never before it was)
        this.#uploading = !this.#ctx.req.complete
        this.#since = now
        // no byte of the body taken from the client for body_idle: an upstream that stopped
        // taking it (frozen) leaves bytes not handed on: 504, as an answer body it stopped
        // sending (nginx's proxy_send_timeout); else the client stopped sending: 408 (nginx's
        // client_body_timeout). Not a wait for the client connection's own idle cut
        const body = this.#ctx.body
        const idle = this.#timeouts.bodyIdle
        if (body === null || idle === 0) return
        if (uploadSilence(marks, body, now) >= idle) controller.abort(new TetherError(body.readableLength === 0 ? 'TETHER_CLIENT_TIMEOUT' : 'TETHER_UPSTREAM_TIMEOUT'))
      } else if (now - this.#since >= this.#timeouts.responseHeaders) controller.abort(new TetherError('TETHER_UPSTREAM_TIMEOUT'))
      return
    }
    const idle = this.#timeouts.bodyIdle
    if (idle === 0) return
    if (this.#waitingDrain) {
      // a client that takes nothing of the answer while its connection stays busy, which keeps
      // Node's timers fresh (an h2 stream at window 0 while PINGs or other streams move; an
      // HTTP/1.1 client that sends its body slowly and reads nothing): cut after
      // clientStallTimeout without a 'drain' (nginx's send_timeout, coarser: Node says
      // nothing of the progress in between); the client's doing, not the upstream's
      if (marks.stalledSince === 0) marks.stalledSince = now
      else if (now - marks.stalledSince >= clientStallTimeout({ body_idle: idle, response_headers: this.#timeouts.responseHeaders })) {
        return void controller.abort(new TetherError('TETHER_CLIENT_TIMEOUT'))
      }
    }
    // the request body may still come after the answer's head (a streaming echo, an upload
    // answered early): its bytes are watched as before it
    const body = this.#ctx.body
    const uploadSilent = body !== null && !this.#ctx.req.complete ? uploadSilence(marks, body, now) : -1
    if (this.#active || this.#waitingDrain || this.#held !== null) {
      this.#active = false
      marks.quietSince = now
    } else if (now - marks.quietSince >= idle) {
      // an answer silent while the client's body stopped arriving, all it sent handed on: the
      // upstream may be waiting for the rest, the client's doing (408's rule, no health
      // strike); a client still sending, or bytes the upstream does not take: the upstream's
      const clientStalled = body !== null && uploadSilent >= idle && body.readableLength === 0
      controller.abort(new TetherError(clientStalled ? 'TETHER_CLIENT_TIMEOUT' : 'TETHER_UPSTREAM_TIMEOUT'))
    }
  }

  #clientClosed(): void {
    // the stream closed while the rest of an ended answer waited for the client's window
    if (this.#delivery !== null) return this.#delivery.closed()
    if (this.#finished || (this.#ctx.answering !== null && this.#ctx.answering !== this)) return
    this.#clientGone = true
    if (this.#controller !== null) return this.#controller.abort(new TetherError('TETHER_BAD_REQUEST', new Error('client closed the connection')))
    // still connecting (see stop): the client's abort now, not when the connect ends (Tether's
    // cut at a graceful stop's grace end, as onResponseError tells it once started)
    this.#endUnstarted(this.#cut() ? { status: 0, outcome: SHUT_DOWN, error: null, responded: false } : { status: 0, outcome: CLIENT_ABORT, error: null, responded: true })
  }

  #onDrain(): void {
    this.#waitingDrain = false
    if (this.#marks !== null) this.#marks.stalledSince = 0
    this.#active = true
    this.#controller?.resume()
  }

  onRequestStart(controller: Dispatcher.DispatchController): void {
    // (a request that ended while it waited in the queue never gets here: see Waiter)
    this.#controller = controller
    this.#since = performance.now()
    this.#uploading = this.#ctx.body !== null && !this.#ctx.req.complete
    if (this.#clientGone) controller.abort(new TetherError('TETHER_BAD_REQUEST', new Error('client closed the connection')))
    else if (this.#stopped !== null) controller.abort(this.#stopped)
  }

  onResponseStart(
    controller: Dispatcher.DispatchController,
    statusCode: number,
    headers: Record<string, string | string[] | undefined>,
    statusMessage?: string,
  ): void {
    // 1xx (102 Processing, 103 Early Hints) are informational: passed on (see #interim), the
    // final answer follows, and the head wait goes on (an endless stream of them still times out)
    if (statusCode < 200) {
      if (statusCode < 100) return controller.abort(invalidStatus(statusCode))
      closeAfterInterim()
      return this.#interim(statusCode, headers, statusMessage)
    }
    if (this.#clientGone) return
    if (statusCode > 599) return controller.abort(invalidStatus(statusCode))
    const version = unreadableVersion()
    if (version !== null) return controller.abort(new TetherError('TETHER_UPSTREAM_PROTOCOL', new Error(`the upstream's status line says ${version}, not HTTP/1.0 or HTTP/1.1`)))
    // a transfer coding other than chunked (`gzip, chunked`, or alone, close-delimited): the
    // body is still coded once the framing is undone, and Tether can neither decode it nor
    // pass the coding on (hop-by-hop): 502, as HAProxy answers (RFC 9112 section 6.1)
    // (an answer without a body, to HEAD or a 304, may describe the GET's: nothing to decode)
    const te = headers['transfer-encoding']
    if (te !== undefined && !(typeof te === 'string' && CHUNKED.test(te)) && !this.#head && statusCode !== 304 && statusCode !== 204) return controller.abort(new TetherError('TETHER_UPSTREAM_PROTOCOL'))
    // delimited by the close: the connection it is read from (this parse's, see lastRead); not an
    // answer that has no body (HEAD, 204, 304), which ends at its head, its connection open (undici
    // ends a HEAD's in the same parse even while its head is held: review s65 r2)
    if (te === undefined && headers['content-length'] === undefined && !this.#head && statusCode !== 204 && statusCode !== 304) this.#closeDelimited = lastRead
    // the first attempt of this request whose head arrives answers the client; a rival that
    // comes second (a hedge lost) is stopped, its result ignored
    const ctx = this.#ctx
    if (ctx.answering !== null && ctx.answering !== this) return controller.abort(new TetherError('TETHER_UPSTREAM_UNAVAILABLE'))
    // the upstream refused the head with the user's state in it (over its header limit), before
    // its application ran (RFC 6585 section 5): the request path sends it again without,
    // if the body can still be sent again. `replayable` cannot turn false between this check
    // and that resend's replay(): the abort destroys this attempt's body at once (undici's
    // HTTP/1.1 abort), so bytes the client sends after it wait in the request for the resend
    // (test/state-protocol.test.ts, "a streamed POST ... around the 431")
    // (431, or nginx's and Apache's 400 to a long state line: see stateRefused). Either attempt
    // of a hedged pair too (no body): a refused one does not answer, the other goes on
    if (this.#stateBytes > 0 && stateRefused(this.#stateBytes, statusCode) && (ctx.body === null || ctx.body.replayable)) return controller.abort(new TetherError('TETHER_HEADERS_TOO_LARGE'))
    ctx.answering = this
    ctx.decision = this.#decision
    this.answered = true
    this.#active = true
    ctx.onAnswering?.()
    // the client's own head refused after the state was left out: no move recorded
    const own = statusCode === 431 && ownHeadRefused(ctx, statusCode)
    if (own) ctx.decision = { ...this.#decision, setCookie: null }
    const hold = own ? null : this.#answer.inspect(ctx, headers)
    if (hold === null) return this.#start(controller, statusCode, headers, statusMessage)
    // the head waits (bounded) for a checkpoint write; body chunks meanwhile are kept
    this.#held = []
    controller.pause()
    const go = (verdict: 'ok' | 'refuse'): void => {
      const held = this.#held!
      this.#held = null
      this.#active = true
      if (this.#finished || this.#clientGone) return
      // confirmed durability: an update whose state was not stored is not acknowledged
      if (verdict === 'refuse') return controller.abort(new TetherError('TETHER_STATE_UNAVAILABLE'))
      this.#start(controller, statusCode, headers, statusMessage)
      for (const chunk of held) if (!this.#finished) this.onResponseData(controller, chunk)
      if (this.#heldEnd && !this.#finished) this.#finish()
      else if (!this.#waitingDrain) controller.resume()
    }
    hold.then(go, () => go('ok'))
  }

  /**
   * Pass an upstream's 1xx answer on to the client, as RFC 9110 section 15.2 asks of a proxy
   * (HAProxy 2.6 does; nginx 1.22 cuts the exchange), its fields filtered as a final head's are
   * (AnswerHeadPolicy.interim). Not: a 100 (Tether answers `Expect` itself and never sends it
   * upstream), a 101 (upgrades have their own path) or a status below 100 (no valid status:
   * undici then fails the exchange, a 502); to an HTTP/1.0 client (the RFC's MUST
   * NOT); once the client left, the attempt was stopped, another attempt answers or the
   * answer's head went out; past MAX_INTERIM_ANSWERS of this request. Any attempt that has not
   * lost may pass its 1xx on: hints of an attempt that then fails or loses its hedge are still
   * only hints (RFC 8297 section 2: they do not bind the final answer), so a 1xx commits the
   * request to nothing (Envoy's router, once it passed a 1xx on, stops the other attempts and
   * retries no more): retries and hedges go on, the head wait is
   * not restarted, and the status counted and logged is the final one.
   */
  #interim(statusCode: number, upstreamHeaders: Record<string, string | string[] | undefined>, statusMessage: string | undefined): void {
    const ctx = this.#ctx
    const res = this.#res
    if (statusCode < 102 || this.#clientGone || this.#finished || this.#stopped !== null || ctx.answering !== null || res.headersSent || res.destroyed) return
    const req = ctx.req
    if (req.httpVersionMajor === 1 && req.httpVersionMinor === 0) return
    const sent = interimSent.get(ctx) ?? 0
    if (sent >= MAX_INTERIM_ANSWERS) return
    interimSent.set(ctx, sent + 1)
    const fields = this.#answer.interim(upstreamHeaders)
    if (res instanceof H2Response) res.writeInterim(statusCode, fields)
    else (res as unknown as RawWriter)._writeRaw?.(interimHead(statusCode, statusMessage, fields), 'latin1')
  }

  #start(
    controller: Dispatcher.DispatchController,
    statusCode: number,
    upstreamHeaders: Record<string, string | string[] | undefined>,
    statusMessage: string | undefined,
  ): void {
    const res = this.#res
    if (this.#closeAfter()) res.shouldKeepAlive = false
    let headers: Record<string, string | string[] | undefined>
    try {
      headers = this.#answer.decorate(this.#ctx, upstreamHeaders)
      // the trailer fields that will follow, named again, when the client's answer can carry
      // them: a body of unknown length, chunked (not to an HTTP/1.0 client; Node refuses a
      // Trailer header on an answer it does not chunk) or over h2
      const trailer = upstreamHeaders.trailer
      this.#connection = upstreamHeaders.connection
      if (trailer !== undefined && upstreamHeaders['content-length'] === undefined && !this.#head && statusCode !== 204 && statusCode !== 304 &&
        (res as { useChunkedEncodingByDefault?: boolean }).useChunkedEncodingByDefault !== false) {
        const names = this.#answer.trailerNames(trailer, upstreamHeaders.connection)
        if (names !== undefined) headers.trailer = names
      }
      const reason = statusMessage && REASON_PHRASE.test(statusMessage) ? statusMessage : undefined
      // a 204 has no content and no Content-Length (RFC 9110 section 8.6), whatever it said
      if (statusCode === 204) delete headers['content-length']
      res.writeHead(statusCode, reason, headers)
    } catch (err) {
      // e.g. an invalid header value from the upstream: answer 502 instead
      res.statusMessage = ''
      controller.abort(new TetherError('TETHER_UPSTREAM_PROTOCOL', err))
      return
    }
    if (statusCode === 204 || statusCode === 304 || this.#head) {
      // no body may follow, whatever Content-Length says: finish now (undici may still
      // complain about the announced length; that is ignored once finished)
      this.#finish()
      return
    }
    // a response of unknown length may be a stream (SSE, long-poll): send the head now
    const length = headers['content-length']
    if (length === undefined) res.flushHeaders()
    else this.#left = Number(length)
  }

  onResponseData(controller: Dispatcher.DispatchController, chunk: Buffer): void {
    if (this.#clientGone || this.#finished) return
    this.#active = true
    if (this.#held !== null) {
      this.#held.push(chunk)
      return
    }
    // the chunk that completes the announced length: undici tells the answer's end next, in
    // the same parse, and the chunk goes out with it (see #finish). Only when the response's
    // buffer takes it whole: what `end` leaves in it is not watched for a client that stops
    // reading (no 'drain' waited for; HTTP/1.1 has no Delivery), so no more of it than
    // `write` would have taken without asking for a 'drain' (review s62 r2)
    const res = this.#res
    if (chunk.length === this.#left && chunk.length + res.writableLength < res.writableHighWaterMark) {
      this.#left = 0
      this.#last = chunk
      return
    }
    if (this.#left > 0) this.#left -= chunk.length
    if (!res.write(chunk) && !this.#waitingDrain) {
      this.#waitingDrain = true
      controller.pause()
      // a closure only under backpressure, not for every exchange
      res.once('drain', () => this.#onDrain())
    }
  }

  onResponseEnd(controller: Dispatcher.DispatchController, trailers: Record<string, string | string[] | undefined>): void {
    // an answer delimited by the close whose connection was reset rather than closed (no
    // 'end' read from it): cut as any answer the upstream broke off, never ended as whole (an
    // HTTP/1.1 client would get a last chunk; nginx 1.22 cuts it too)
    const delimiting = this.#closeDelimited
    if (delimiting !== null && !delimiting.readableEnded && !this.#finished) {
      return this.onResponseError(controller, new TetherError('TETHER_UPSTREAM_RESET', new Error('the upstream reset the connection its answer was delimited by')))
    }
    if (this.#handedTo !== null) this.#release()
    // inside undici's parse of the bytes read from the connection (see lastRead): it was used
    if (lastRead !== null) (lastRead as Socket & AnsweredUpTo)[ANSWERED_UP_TO] = lastRead.bytesRead
    // trailer fields after a chunked body (undici gives `{}` when there are none)
    for (const _ in trailers) {
      this.#trailers = trailers
      retireIfTrailersControl(trailers)
      break
    }
    if (this.#held !== null) this.#heldEnd = true
    else if (!this.#finished) this.#finish()
  }

  #finish(): void {
    this.#finished = true
    const res = this.#res
    if (this.#trailers !== null && !this.#clientGone) this.#addTrailers(res, this.#trailers, this.#connection)
    if (!this.#clientGone) {
      const last = this.#last
      if (last === null) res.end()
      else res.end(last)
      // over h2, the rest of the answer may wait for the client's window: the sweep times it
      // (the response's 'close' is listened to already: see #onClientClose)
      this.#delivery = Delivery.of(this.#ctx.req, res, this.#timeouts, this.#deadlines, this.#cut)
    }
    this.#done(this.#delivery === null
      ? { status: res.statusCode, outcome: null, error: null, responded: true }
      : { status: res.statusCode, outcome: null, error: null, responded: true, delivery: this.#delivery.settled })
  }

  /**
   * Pass the upstream's trailer fields on (a chunked HTTP/1.1 answer, or HTTP/2); Node drops
   * them for an answer of known length or to an HTTP/1.0 client. A field Node would refuse (an
   * invalid name or value) is dropped alone: the body is complete, so the answer stands.
   */
  #addTrailers(res: ServerResponse, trailers: Record<string, string | string[] | undefined>, connection: string | string[] | undefined): void {
    const passed = this.#answer.trailers(trailers, connection)
    if (passed === null) return
    const valid: Record<string, string> = {}
    for (const name in passed) {
      const v = passed[name]!
      // a repeated field as one list (RFC 9110 section 5.3; no Set-Cookie passes)
      const value = typeof v === 'string' ? v : v.join(', ')
      try {
        validateHeaderName(name)
        validateHeaderValue(name, value)
        valid[name] = value
      } catch {
        // left out
      }
    }
    try {
      res.addTrailers(valid)
    } catch {
      // a field the transport refuses after all: the body is complete, the answer stands
    }
  }

  onResponseError(_controller: Dispatcher.DispatchController, err: Error): void {
    // sent again on its upstream's pool now: a reload may have replaced the one it went on
    // (then the new one, as a new request; its room in the old one freed), or removed its
    // upstream (then not sent again: it fails as any, and the request path may retry elsewhere)
    const pool = this.#resendPool === null || this.#finished || !this.#staleConnection(err) ? null : currentPool(this.#resendPool)
    if (pool !== null) {
      this.#resendPool = null
      this.#controller = null
      const options = this.#resendOptions!
      options.servername = pool.servername
      // its room: kept for it in the same pool (given back, then taken again below, ahead of the
      // waiting requests), else freed in the retired one for that pool's next
      if (this.#handedTo === pool) {
        pool.handed--
        this.#handedTo = null
      } else if (this.#handedTo !== null) this.#release()
      if (pool.bound === null) return void pool.pool.dispatch(options, this)
      // bounded: it was handed over before any request waiting now (in a new pool after a
      // reload too, review s64 r3), so it goes first (HAProxy's retry keeps the stream's place
      // at its server), and is handed over at once if there is room: the closed connection is
      // taken again only at its 'drain' (`full`), until which it waits rather than in undici's
      // queue. Timed from now by timeouts.queue, as any wait.
      this.#wait(pool, options, true)
      return admitWaiting(pool)
    }
    if (this.#handedTo !== null) this.#release()
    if (this.#finished) return
    // the whole chunked body came, then a trailer section holding Content-Length: the answer
    // is complete (see trailerContentLength); its trailer fields are dropped, and that is told
    if (this.answered && this.#ctx.answering === this && trailerContentLength(err)) {
      const ctx = this.#ctx
      this.#trailersDropped({ upstream: this.#decision.upstream, request_id: ctx.id, method: ctx.method, path: ctx.req.url })
      if (this.#held !== null) this.#heldEnd = true
      else this.#finish()
      return
    }
    this.#finished = true
    const res = this.#res
    // a graceful stop's grace period ended: Tether closed the client's connection (and then
    // the upstream pools), neither the client nor the upstream failed; no retry, no warning
    // the listener closed the client's connection, silent both ways for the client bound, once
    // the answer's head went out: Tether cut it, the client did not leave (nginx logs its
    // send_timeout as "client timed out"); the upstream is not blamed
    const outcome = this.#cut() ? SHUT_DOWN : this.answered && closedIdle(this.#clientConnection) ? CLIENT_TIMEOUT : attemptOutcome(err, this.#clientGone || res.destroyed)
    if (outcome.kind === 'client_abort') {
      // the status the client was sent before it left (as nginx logs it), else none
      this.#done({ status: res.headersSent ? res.statusCode : 0, outcome, error: null, responded: true })
      return
    }
    if (res.headersSent) {
      // the client already has a status line: the only honest signal left is to cut it off
      cutAnswer(res, this.#left === -1)
      this.#done({ status: res.statusCode, outcome, error: err, responded: true })
      return
    }
    this.#done({ status: 0, outcome, error: certificateRefusal(err) ?? (this.answered ? null : lengthRefusal(err)) ?? err, responded: false })
  }
}
