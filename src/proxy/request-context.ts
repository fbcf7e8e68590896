// One request's context, created once when the request arrives and carried through every
// step and attempt (as Pingora's CTX or Envoy's stream info): its key, the decision, the
// upstreams tried, retries, what the answer carried, timings and the outcome. Layer 0/1 data:
// plain fields, no I/O; the request path fills it in, transports and the access log read it.
import type { IncomingMessage } from 'node:http'
import type { RequestKey } from '../affinity/key.js'
import type { ErrorCode } from '../errors.js'
import type { Decision } from '../routing/decision.js'
import type { GetResult } from '../state/checkpoint-store.js'
import type { H2Connection } from './h2-messages.js'
import type { RequestTarget } from './headers.js'
import type { RequestBody } from './request-body.js'
import type { Outcome } from './outcome.js'
import type { Upstream } from '../upstream/upstream-set.js'
import { TETHER_HEADER } from '../reserved-headers.js'

/**
 * What the request's checkpoint fetch found for a moved user (sent upstream in
 * X-Tether-Rehydrate-Status): `too_large` when the upstream refused the request with the
 * state in a header (431, or 400 to a long one: see stateRefused) and it was sent again
 * without (or the refusal was passed on: nothing was delivered); `refused` when the
 * rehydration hook did not take the state (it answered otherwise than 2xx, or not in time).
 */
export type RehydrateStatus = 'delivered' | 'none' | 'unavailable' | 'too_large' | 'refused'

/**
 * A `400` explains the refusal of a head that carried the state (as a `431` does) only when the
 * state's header line (name, `: `, value) is over this many bytes. nginx (`large_client_header_buffers`,
 * 8 KiB) and Apache (`LimitRequestFieldSize`, 8190) answer an over-long header line 400, not 431;
 * half their limit still leaves room for a smaller custom one, while a state line under 4 KiB fits
 * every common server, so a 400 to it is the application's own and is passed on.
 */
export const STATE_LINE_400_BYTES = 4096
/** State bytes over which a 400 is a refused head: STATE_LINE_400_BYTES less `x-tether-rehydrate: `. */
const STATE_400_BYTES = STATE_LINE_400_BYTES - TETHER_HEADER.rehydrate.length - 2

/**
 * The upstream refused the head that carried `bytes` of the user's state in a header (the
 * attempt's own count, `> 0`, checked by the caller first: one comparison for any other
 * request) before its application ran: `431`, or `400` when the state's line is over
 * STATE_LINE_400_BYTES.
 */
export function stateRefused(bytes: number, status: number): boolean {
  return status === 431 || (status === 400 && bytes > STATE_400_BYTES)
}

/**
 * A 431 answering a moved user's request sent again without their state (`too_large`): the
 * client's own head is over the upstream's limit, and no application ran, with the state or
 * without it. The answer is passed on, but records no move: no pin, no affinity cookie, no
 * answer recorded or shared, nothing learned (see docs/state-protocol.md); the user's next
 * request is moved again, with their state. The transport then answers with a copy of the
 * decision without its cookie, and does not inspect the head.
 */
export function ownHeadRefused(ctx: RequestContext, status: number): boolean {
  return status === 431 && ctx.rehydrate === 'too_large' && ctx.decision !== null && ctx.decision.moved !== null
}

/** How one attempt on an upstream ended. */
export interface AttemptResult {
  /** Status sent to the client (0 if nothing was sent). */
  readonly status: number
  /** null when the upstream answered; otherwise how it failed. */
  readonly outcome: Outcome | null
  /** Cause of a failure, for logs. */
  readonly error: unknown
  /**
   * Whether the client already got (part of) an answer. When false, nothing was written and
   * the request path decides: retry elsewhere or answer the error for `outcome`.
   */
  readonly responded: boolean
  /**
   * Over HTTP/2, an answer that ended upstream while part of it still waited for the client's
   * flow-control window: settles once all of it went out (null), or with how it did not
   * (`TETHER_CLIENT_TIMEOUT`: the stream was cut, the client took nothing of it for the stall
   * bound; `client_abort`: the client reset the stream or left; `TETHER_SHUTTING_DOWN`: a graceful
   * stop's grace period ended and Tether closed the connection). The access line waits for it;
   * in-flight counts and health do not (the upstream's part is done). Absent: nothing waited.
   */
  readonly delivery?: Promise<Outcome | null>
}

/**
 * A context's target and key until the request path sets them: shared, frozen values, not a
 * literal each (a class field's literal is made again with every context: two objects a
 * request that the request path replaces at once; bench/README.md, "Bytes allocated per request").
 */
const NO_TARGET: RequestTarget = Object.freeze({ path: '/', authority: null })
const NO_KEY: RequestKey = Object.freeze({ kind: 'none', learn: false })

/** How the request reached Tether, and so which transport answers it. */
export type Protocol = 'http' | 'websocket'

/**
 * Example: created by the request path for `GET /cart` with a Tether cookie; after routing
 * `ctx.decision.upstream === 'app-1'`; after a retry `ctx.tried` holds 'app-0' and
 * `ctx.retries === 1`; the access log reads it at the end.
 */
export class RequestContext {
  /** X-Request-Id: the client's when well-formed, else a new one (the same for every attempt). */
  readonly id: string
  readonly req: IncomingMessage
  readonly protocol: Protocol
  /** When the request arrived, by the injected clock (ms): retries stop after `retries.try_duration`. */
  readonly arrived: number
  /** performance.now() at arrival, for the duration in logs and metrics. */
  readonly t0: number
  readonly peer: string
  /** The port of this host the client connected to. */
  readonly localPort: number
  readonly method: string
  /** The client connection (an h2 request's is its session: its socket is a proxy made per stream). */
  readonly connection: object
  /** How the client reached Tether: `https` when Tether terminated TLS (X-Forwarded-Proto). */
  readonly scheme: 'http' | 'https'
  /** Path (as written) and absolute-form authority (set by the request path's checks of the head). */
  target: RequestTarget = NO_TARGET
  /** The key, read once. */
  key: RequestKey = NO_KEY
  /** The current attempt's decision (the last one once done). */
  decision: Decision | null = null
  /** Upstreams this request failed on: a retry routes around them. */
  tried: Set<string> | null = null
  /** The request's move was checked against the shared store already (once a request: see RequestPath's #move). */
  moveChecked = false
  /** Make no move by choice (Router.decide's `hold`): a chosen move's state could not be fetched. */
  holdMoves = false
  /** The answer comes from an epoch the user's application cookie has left (see AnswerHead): it teaches nothing. */
  leftEpoch = false
  /** What the held move's fetch found (older than the user's upstream has), for a forced move after it; null: nothing. */
  heldState: GetResult | null = null
  retries = 0
  /**
   * Hedges sent (`retries.hedge_after`): each is an extra attempt, counted with `retries`
   * against `retries.attempts` (also one its upstream refused for the state in its head: it
   * was sent). Not in the access line's `retries`, which counts attempts after a failed one.
   */
  hedges = 0
  /** The last failed attempt: after it, its error is the honest answer (as nginx's 502 after the last upstream). */
  lastFailure: { readonly code: ErrorCode; readonly error: unknown } | null = null
  /** The request body as sent upstream (null: none). */
  body: RequestBody | null = null
  /** Set when the parser refused the body: no attempt may start, the answer is this code. */
  bodyError: ErrorCode | null = null
  /** A moved user's state: what the fetch found (null: the user did not move). */
  rehydrate: RehydrateStatus | null = null
  /**
   * Bytes of the checkpoint sent in X-Tether-Rehydrate with this attempt (0: none in a header).
   * An HTTP attempt reads it when it starts and keeps its own count (a hedge's differs from the
   * first attempt's); once an attempt is done, the request path sets it back to that attempt's.
   */
  rehydrateBytes = 0
  /**
   * The upstream (as read for the attempt) that refused this request's hedge for the user's
   * state in its head (see RequestPath's #hedged), or null: a retry sent to it (the same
   * process) goes without the state at once, not refused a second time first. A field, not a
   * set: one hedge a request, and nothing allocated for requests that are not hedged.
   */
  stateRefusedBy: Upstream | null = null
  /**
   * The upstream refused the client's own head: a moved user's request sent again without the
   * state was refused 431 too (see ownHeadRefused). No move was recorded (access line `head_too_large`).
   */
  ownHeadTooLarge = false
  /** The application cookie value the answer pinned (the session key from now on), or null. */
  learnedKey: string | null = null
  /**
   * The attempt whose answer head reached the client (the others of a hedge are stopped), or
   * null: none did (a WebSocket handshake answered by Tether's own 502 included).
   */
  answering: object | null = null
  /** Told when an attempt's head claimed the answer (a hedge stops its rival). */
  onAnswering: (() => void) | null = null
  /** The final status sent (0: none). */
  status = 0
  /** How it ended: null for an upstream answer, else the failure. */
  outcome: Outcome | null = null

  constructor(req: IncomingMessage, protocol: Protocol, id: string, arrived: number) {
    this.req = req
    this.protocol = protocol
    this.id = id
    this.arrived = arrived
    this.t0 = performance.now()
    // an h2 stream's connection as it began: the stream may be reset before its request is
    // handled, and then its socket (Node's proxy of the session's) has nothing left to read
    const h2 = (req as { h2Connection?: H2Connection }).h2Connection
    const socket = h2 ?? clientSocket(req)
    this.peer = socket.remoteAddress ?? ''
    this.localPort = socket.localPort ?? 0
    this.connection = h2?.session ?? (req as { stream?: { session?: object } }).stream?.session ?? req.socket
    // an h2 request's socket is Node's proxy of the session's TLS socket: `encrypted` reads through
    this.scheme = (h2?.encrypted ?? (req.socket as { encrypted?: boolean }).encrypted) === true ? 'https' : 'http'
    this.method = req.method ?? 'GET'
  }

  /** Record that the current attempt's upstream failed and the request will try another. */
  retryAfter(code: ErrorCode, error: unknown): void {
    const upstream = this.decision!.upstream
    ;(this.tried ??= new Set()).add(upstream)
    this.retries++
    this.lastFailure = { code, error }
  }

  /** The session key checkpoints are stored under: an application cookie the answer set, else the decision's. */
  get sessionKey(): string | null {
    return this.learnedKey ?? this.decision?.sessionKey ?? null
  }
}

/**
 * The client's connection as a socket with addresses. An h2c connection (listen.http2.cleartext)
 * reaches the h2 server through a stream (see Listener), which Node wraps in a socket that has
 * no addresses: the wrapped stream has them.
 */
function clientSocket(req: IncomingMessage): { readonly remoteAddress?: string | undefined; readonly localPort?: number | undefined } {
  const socket = req.socket
  if (socket.remoteAddress !== undefined) return socket
  return (socket as { stream?: { remoteAddress?: string; localPort?: number } }).stream ?? socket
}
