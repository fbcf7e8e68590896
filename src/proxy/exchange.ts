// The transport seam of the request path: one request's way of sending an attempt upstream
// and of answering the client, whatever the protocol (HTTP/1.1 through undici, WebSocket
// upgrades through http-proxy, later HTTP/2 streams). Layer 0 vocabulary: interfaces only.
import type { ErrorCode } from '../errors.js'
import type { Decision } from '../routing/decision.js'
import type { Upstream } from '../upstream/upstream-set.js'
import type { Outcome } from './outcome.js'
import type { AttemptResult, RequestContext } from './request-context.js'

/** Told how an attempt ended (see {@link Attempt.onEnd}). */
export interface AttemptWatcher {
  /** The attempt's result. */
  ended(r: AttemptResult): void
  /** The transport itself failed (a bug). */
  failed(err: unknown): void
}

/** One attempt in progress on one upstream. */
export interface Attempt {
  /**
   * Tell `watcher.ended` the attempt's result once the answer is done (`responded: true`) or
   * the attempt failed before any byte reached the client (`responded: false`: the request path
   * may retry elsewhere); `watcher.failed` instead if the transport itself failed (a bug). The
   * caller calls it once, as soon as it made the attempt, and the result comes as a promise's
   * reaction would: in a microtask after the attempt ended (never inside this call, nor inside
   * the transport's or the caller's own call that ended it, such as `stop`). A watcher, not a
   * promise: a plain request then makes no promise, resolvers and executor for it, and not two
   * callbacks: the request path's watcher is one object that also holds what it concludes the
   * result with (bench/README.md, "Bytes allocated per request").
   * Example: `attempt.onEnd({ ended: (r) => conclude(r), failed: (err) => internal(err) })`.
   */
  onEnd(watcher: AttemptWatcher): void
  /** Whether the answer's head arrived (the attempt can no longer be stopped). */
  readonly answered: boolean
  /**
   * Whether it waits (or, once ended, ended waiting) for one of its upstream's connections,
   * all busy under `limits.max_upstream_connections`: nothing of it was sent. Absent: never.
   */
  readonly queued?: boolean
  /** Stop it while it waits for its answer's head, failing it with `code`; no effect after. */
  stop(code: ErrorCode): void
}

/** What Tether's own answer sent. */
export interface Answered {
  /** The status sent (0: none). */
  readonly status: number
  /**
   * Over HTTP/2, the answer's rest still waiting for the client's flow-control window: settles
   * as an upstream answer's does (see AttemptResult.delivery). Absent: nothing waited.
   */
  readonly delivery?: Promise<Outcome | null>
}

/**
 * One request's transport. The request path calls `attempt` once per upstream it tries and
 * `fail` when it answers with a catalogue error itself. Example: the HTTP exchange streams the
 * upstream's answer into the client's ServerResponse; the upgrade exchange pipes two sockets.
 */
export interface Exchange {
  /**
   * Send the request, as `decision` routed it, to `upstream` with `headers` ([name, value,
   * ...]) at `ctx.target.path`. Several attempts of one request may be in flight (a hedge):
   * the first whose head arrives answers the client (it becomes `ctx.decision`), the others
   * are stopped.
   */
  attempt(ctx: RequestContext, decision: Decision, upstream: Upstream, headers: string[]): Attempt
  /** Answer with the catalogue error `code` (closing the connection when `close`). */
  fail(ctx: RequestContext, code: ErrorCode, close: boolean): Answered
  /** The client is gone: nothing more can be sent. */
  readonly clientGone: boolean
  /**
   * Aborted when the client leaves before the answer (a WebSocket handshake's client, a plain
   * request's): work before the attempt (a rehydration hook) stops. Its `reason` is the
   * AttemptResult the request ends with: the client's abort, `TETHER_SHUTTING_DOWN` when
   * Tether closed the connection at a graceful stop's grace end, or a WebSocket handshake's
   * `TETHER_BAD_REQUEST` (400) when its client sent more than Tether holds before the 101.
   */
  readonly gone: AbortSignal
}

/**
 * What the answer's head gets from Tether, for every transport: learning, checkpoints, the
 * routing decision's cookie, the removal of reserved and hop-by-hop headers.
 */
export interface AnswerHeadPolicy {
  /**
   * Read the upstream's head before it is filtered (learn an application cookie, take its
   * checkpoint). Returns work the head must wait for (a bounded checkpoint write), or null;
   * the work resolves 'refuse' when the answer must not go out (`state.durability:
   * confirmed` and the checkpoint was not stored). `hold: 'writes'`: only what was written
   * through to the other workers about this user (an upgrade's answer, which no checkpoint holds).
   */
  inspect(ctx: RequestContext, headers: Record<string, string | string[] | undefined>, hold?: 'all' | 'writes'): Promise<'ok' | 'refuse'> | null
  /**
   * The head the client gets: `headers` filtered (a new object; `headers` is left as it was),
   * with the decision's cookie and the debug header added.
   */
  decorate(ctx: RequestContext, headers: Record<string, string | string[] | undefined>): Record<string, string | string[] | undefined>
  /**
   * The fields of an upstream's 1xx answer (102, 103) that its client gets: filtered as a final
   * head is (hop-by-hop fields, those named in Connection, Tether's reserved names), and no
   * Set-Cookie (a session is given by the final answer only, where Tether's cookie rules apply);
   * nothing added. A new object.
   */
  interim(headers: Record<string, string | string[] | undefined>): Record<string, string | string[] | undefined>
  /** The trailer fields the client gets of those the upstream sent after the body; null: none. */
  trailers(trailers: Readonly<Record<string, string | string[] | undefined>>, connection?: string | string[]): Record<string, string | string[]> | null
  /** An upstream's `Trailer` header as the client gets it (the names {@link trailers} passes); undefined: none. `connection`: the answer's `Connection` header. */
  trailerNames(value: string | string[], connection?: string | string[]): string | undefined
}
