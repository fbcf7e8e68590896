// HTTP/1.1 pipelining: Node parses every request a client pipelines on one connection at
// once, but answers them in order. Forwarding them all at once would let one connection open
// any number of upstream requests; like nginx, Tether forwards one request per client
// connection at a time. Node stops reading a connection only when its answers pile up unsent,
// so a client pipelining requests behind one the upstream is slow to answer would have Tether
// parse and hold all it sends: past MAX_WAITING requests waiting, the connection is closed
// (a client must be ready to send pipelined requests again after a close, RFC 9112 section
// 9.3.2; no real client pipelines that deep), and the caller is told (the listener logs it).
// A waiting request starts a turn of the event loop after the answer before it closed, so the
// access lines come in request order, as nginx writes them (see ConnectionState.next).
// It also bounds a connection's keep-alive: the last request `limits.max_requests_per_connection`
// allows, or the first whose turn starts past `timeouts.client_connection_max` (timed from the
// connection's accept, see noteStart), gets `Connection: close` (see lastRequest).
// Owns no I/O of its own: it orders calls to the handler, and closes a connection past the bounds.
import type { IncomingMessage, ServerResponse } from 'node:http'

import { Socket } from 'node:net'
import type { Duplex } from 'node:stream'
import { monotonicNow, systemClock, type Clock } from '../clock.js'
import type { Config } from '../config/schema.js'

type Handler = (req: IncomingMessage, res: ServerResponse) => void
/** Told of a connection closed for pipelining past MAX_WAITING, before it is destroyed. */
export type Overflow = (socket: Duplex) => void

/** Requests parsed and waiting on one connection past which it is closed. */
export const MAX_WAITING = 256

const STATE: unique symbol = Symbol('tether.pipeline')
/** Requests parsed, waiting for their turn: not handed to the handler yet (see waitsItsTurn). */
const WAITING = new WeakSet<IncomingMessage>()
/** Per connection: idle, busy, or busy with requests waiting; and its "answer done" callback. */
interface ConnectionState {
  busy: boolean
  waiting: (() => void)[] | null
  /** An answer closed the connection: nothing more is processed on it. */
  closed: boolean
  readonly done: () => void
  /**
   * Starts the first waiting request: called by `done` through setImmediate, not at once. An
   * answer's 'close' comes in the same process.nextTick run as its end, before the request path
   * is told of that end (a microtask: see forward.ts ExchangeHandler.onEnd) and writes its access
   * line; a request started at once and refused by Tether (two Host headers, a malformed head
   * answered in its turn) would be logged first, the 400's line before the 200's. After the
   * turn's microtasks, the earlier line is written. Only pipelined requests wait for it.
   * Meanwhile Node has given the waiting request's response the socket, and may read a
   * malformed body of it: see waitsItsTurn.
   */
  readonly next: () => void
  readonly overflow: Overflow | undefined
  /** Requests the connection may still carry, this one's turn included (Infinity: no cap). */
  left: number
  /** The monotonic time past which the next request's turn is the last (Infinity: no bound). */
  readonly until: number
  /** The monotonic clock `until` is read against. */
  readonly now: () => number
}
type Tracked = { [STATE]?: ConnectionState }

/**
 * What bounds a client connection's keep-alive, each read once as the connection's first
 * request comes (h2: as its session begins): a reload applies to connections that begin after it.
 * The time bound counts from the connection's accept (see noteStart).
 */
export interface KeepAliveBounds {
  /** Most requests (h2: streams) one connection carries, 0: no cap (`limits.max_requests_per_connection`). */
  readonly maxRequests: () => number
  /** Ms from its accept after which a connection's next request is its last, 0: no bound (`timeouts.client_connection_max`). */
  readonly maxTime: () => number
  /** Monotonic ms, to time `maxTime` against. */
  readonly now: () => number
}

/**
 * The bounds of the config `current()` returns as each connection begins, on `clock`'s
 * monotonic time. Made once per listener. Example: `keepAliveBounds(() => path().config)`.
 */
export function keepAliveBounds(current: () => Config, clock: Clock = systemClock): KeepAliveBounds {
  return Object.freeze({
    maxRequests: () => current().limits.max_requests_per_connection,
    maxTime: () => current().timeouts.client_connection_max,
    now: () => monotonicNow(clock),
  })
}

/**
 * Wrap `handler` so that a connection's next request starts only once the previous answer is
 * done (finished or aborted). Per request on a connection without pipelining: a flag check, a
 * decrement and one 'close' listener; the per-connection state is made once.
 *
 * `overflow` is told of a connection closed for pipelining past MAX_WAITING; `bounds` give the
 * most requests a connection carries and the time after which its next request is its last,
 * read once as the connection's first request comes (a reload's new values apply to
 * connections whose first request comes after it). The first wrapper to see a connection is
 * the one whose `overflow` and bounds it keeps.
 *
 * Example: a client pipelines GET /a, GET /b on one socket -> /b is forwarded after /a's answer;
 * with `limits.max_requests_per_connection` 1, /a's answer says `Connection: close` and /b
 * gets none (see lastRequest).
 */
export function onePerConnection(handler: Handler, overflow?: Overflow, bounds?: KeepAliveBounds): Handler {
  return (req, res) => {
    const socket = req.socket as typeof req.socket & Tracked
    let state = socket[STATE]
    if (state === undefined) {
      const s: ConnectionState = {
        busy: false,
        waiting: null,
        closed: false,
        done: () => {
          if (closedBy(socket, s)) return
          if (s.waiting === null || s.waiting.length === 0) s.busy = false
          else setImmediate(s.next) // (the connection stays busy meanwhile: a request read now waits too)
        },
        next: () => {
          if (closedBy(socket, s)) return // (the client left meanwhile)
          const next = s.waiting?.shift()
          if (next !== undefined) next()
          else s.busy = false
        },
        overflow,
        left: requestCap(bounds),
        until: timeBound(bounds, startOf(socket)),
        now: bounds?.now ?? NEVER,
      }
      state = socket[STATE] = s
    }
    if (state.busy) {
      WAITING.add(req)
      wait(socket, state, () => {
        WAITING.delete(req)
        res.on('close', state!.done)
        lastRequest(state!, req, res)
        handler(req, res)
      })
      return
    }
    state.busy = true
    res.on('close', state.done) // a response closes once: no once-wrapper needed
    lastRequest(state, req, res)
    handler(req, res)
  }
}

/** The requests a new connection may carry: `maxRequests()`, Infinity for none or 0. */
export function requestCap(bounds: KeepAliveBounds | undefined): number {
  const max = bounds?.maxRequests() ?? 0
  return max > 0 ? max : Infinity
}

/**
 * When a new connection's next request becomes its last: `maxTime()` from `start` (its accept,
 * see noteStart; now when unknown), Infinity for none or 0.
 */
export function timeBound(bounds: KeepAliveBounds | undefined, start: number | undefined): number {
  const max = bounds?.maxTime() ?? 0
  return max > 0 ? (start ?? bounds!.now()) + max : Infinity
}

/** A client connection's start, on its listener's KeepAliveBounds clock (see noteStart). */
const STARTED: unique symbol = Symbol('tether.started')
type Started = { [STARTED]?: number }

/**
 * Note that `connection` (a socket just accepted) begins now on `bounds`' clock, unless it was
 * noted already: `timeouts.client_connection_max` counts from there, as nginx's `keepalive_time`
 * counts from `c->start_time`, set at accept (ngx_event_accept.c), before a PROXY header, a TLS
 * handshake or a first request: a client cannot stretch its connection's time by sending its
 * head late. One clock read a connection, none at its first request (the bound's value is still
 * read then: a reload applies to connections whose first request comes after it).
 * Example: the listener's 'connection' listener calls `noteStart(socket, bounds)`.
 */
export function noteStart(connection: object, bounds: KeepAliveBounds): void {
  const c = connection as Started
  if (c[STARTED] === undefined) c[STARTED] = bounds.now()
}

/**
 * `to` began when `from` did (see noteStart): a TLS socket with its raw socket, the stream that
 * relays an h2c socket with that socket. Nothing when `from` was not noted.
 */
export function carryStart(from: unknown, to: object): void {
  const start = startOf(from)
  if (start !== undefined) (to as Started)[STARTED] ??= start
}

/** When `connection` began (see noteStart), or undefined when it was not noted. */
export function startOf(connection: unknown): number | undefined {
  return typeof connection === 'object' && connection !== null ? (connection as Started)[STARTED] : undefined
}

/** The clock of a connection without a time bound (never read: its `until` is Infinity). */
const NEVER = (): number => 0

/**
 * Count the request whose turn starts; the last one the connection may carry is answered with
 * `Connection: close` (Node writes it for `shouldKeepAlive` false, and closes the connection
 * once the answer went out), as nginx 1.22 answers the `keepalive_requests`-th. So is the
 * first whose turn starts past the connection's time bound, as nginx's `keepalive_time`
 * (checked once per request against the connection's start, ngx_http_update_location_config):
 * one clock read and a compare, no timer, and nothing in flight is cut. Requests the
 * client pipelined behind it are not processed (RFC 9112 section 9.6, see closedBy) and get no
 * answer, as with nginx: the client sends them again on a new connection (RFC 9112 section
 * 9.3.2), to this Tether replica or another. Node's own `maxRequestsPerSocket` (measured on
 * Node 20.20, 3 of 5 pipelined) sends `Connection: close` with the 3rd but neither closes the
 * connection nor stops: the 4th and 5th get an empty 503 each and the connection stays open,
 * against RFC 9112 section 9.6; a client may take a 503 for the upstream's and not retry.
 */
function lastRequest(state: ConnectionState, req: IncomingMessage, res: ServerResponse): void {
  if (--state.left !== 0 && (state.until === Infinity || state.now() <= state.until)) return
  res.shouldKeepAlive = false
  if (req.httpVersionMajor === 1 && !req.complete) lingerAfterAnswer(req)
}

/** How long a connection closed after its last answer keeps reading and dropping an upload's rest (nginx's `lingering_time`). */
export const LAST_ANSWER_LINGER = 30_000
/** How long such a connection waits for the client's next bytes before it closes (nginx's `lingering_timeout`). */
export const LAST_ANSWER_LINGER_IDLE = 5_000

/**
 * The last request's answer may go out before its body is read (an upstream's 401 or 413 to
 * an upload, the redirect listener's 308 to a POST). Node then ends the connection and
 * destroys it as soon as the answer is flushed (its `destroySoon`, called once a response
 * with `Connection: close` finished): the bytes the client still sends meet a closed socket,
 * the client gets a reset (EPIPE, measured on Node 20.20 at ~4 MB of an 8 MiB upload) and may
 * lose the answer it had not read yet. RFC 9112 section 9.6 asks for a half-close first; nginx
 * lingers (`lingering_close`). So this connection's close is a lingering one: the answer is
 * flushed and the socket half-closed, the rest of the body is still read and dropped (by
 * request-path.ts discardRest within its DISCARD_MAX, the redirect listener's dropBody within
 * its time, or Node's own dump of an unread body), and the socket is destroyed once the body
 * is all in, the client closes, the client sent nothing for LAST_ANSWER_LINGER_IDLE, or after
 * LAST_ANSWER_LINGER, as nginx's `lingering_timeout` and `lingering_time`: a client that stopped
 * sending holds the socket 5 s, not 30. The idle bound is the socket's own timeout, which Node
 * refreshes at every read, also of a socket its HTTP parser consumes (onParserExecute calls
 * `_unrefTimer`): no timer of ours per read. Its 'timeout' reaches Node's socketOnTimeout too,
 * which ends the socket or hands it to the server's 'timeout' listener (the listener's
 * closeIdleClient): the answer is out, nothing is cut. A body complete by the time the answer
 * finished closes as before. Only the last request pays for the closure.
 */
function lingerAfterAnswer(req: IncomingMessage): void {
  const socket = req.socket
  if (!(socket instanceof Socket)) return
  // an own property in front of net.Socket's: Node's server calls it by name for the last answer
  socket.destroySoon = function lingeringClose(this: Socket): void {
    if (req.complete || req.destroyed) return Socket.prototype.destroySoon.call(this)
    this.end()
    const timer = setTimeout(() => this.destroy(), LAST_ANSWER_LINGER)
    this.setTimeout(LAST_ANSWER_LINGER_IDLE)
    this.once('timeout', () => this.destroy())
    this.once('close', () => clearTimeout(timer))
    req.once('end', () => Socket.prototype.destroySoon.call(this))
  }
}

/**
 * Whether `req` was parsed behind an earlier request and is not handed to its handler yet,
 * also once the earlier answer went out and Node gave `req`'s response the socket (see
 * ConnectionState.next): a malformed body of it is for its handler to answer in its turn.
 */
export function waitsItsTurn(req: IncomingMessage): boolean {
  return WAITING.has(req)
}

/**
 * Run `fn` once every request this connection sent before is answered (at once when none is
 * pending). Node hands an Upgrade request over as soon as it is parsed, also when it was
 * pipelined behind a slow request: waiting here keeps answers in request order.
 * Example: GET /slow, then an upgrade on the same socket -> the 101 follows /slow's answer.
 */
export function whenIdle(socket: Duplex, fn: () => void): void {
  const state = (socket as Duplex & Tracked)[STATE]
  if (state === undefined || !state.busy) {
    fn()
    return
  }
  wait(socket, state, () => {
    // the connection stays "busy" until this upgrade's own request is done with the socket
    fn()
    state.done()
  })
}

/**
 * Whether the connection closed (an answer with `Connection: close`, or the client left): the
 * requests read behind the answer are never processed (RFC 9112 section 9.6), nor any read
 * later (the connection stays busy: they queue and are dropped, see wait).
 */
function closedBy(socket: Duplex, state: ConnectionState): boolean {
  if (socket.writable) return false
  state.closed = true
  state.waiting = null
  return true
}

/** Queue `next` behind the connection's current request; past MAX_WAITING, close the connection. */
function wait(socket: Duplex, state: ConnectionState, next: () => void): void {
  if (socket.destroyed || state.closed) return // closed: the rest of what was read is dropped
  const waiting = (state.waiting ??= [])
  if (waiting.length < MAX_WAITING) {
    waiting.push(next)
    return
  }
  state.waiting = []
  state.overflow?.(socket)
  socket.destroy()
}
