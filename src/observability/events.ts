// What the request path reports as it works, for metrics (and anything else that subscribes).
// Layer 0 vocabulary: the interface (Metrics implements it, tests may record it) and a tee that
// sends it to two sinks; nothing here keeps state.
import type { MoveReason } from '../routing/decision.js'

/** Events of the request path; each call is O(1) and must not throw. */
export interface ProxyEvents {
  /** An attempt was sent to `upstream` (pair with attemptEnded). */
  requestStarted(upstream: string): void
  /** The attempt to `upstream` ended (answered, failed or aborted). */
  requestEnded(upstream: string): void
  /** The attempt to `upstream` failed and the request is retried on another one. */
  retry(upstream: string): void
  /** A user was moved away from upstream `from`. */
  failover(from: string, reason: MoveReason): void
  /** One client request finished: final upstream (null: none), method, status sent (0: none), total seconds. */
  observeRequest(upstream: string | null, method: string | undefined, status: number | null, seconds: number): void
  /** The protocol the finished request's client spoke. */
  clientProtocol(protocol: ClientProtocol): void
  /** A hedge sent (retries.hedge_after) ended: its answer was the request's (won), or not (lost). */
  hedge(won: boolean): void
  /** A connection was closed without a valid PROXY protocol header (listen.proxy_protocol), for `cause`. */
  proxyHeaderRefused(cause: RefusalCause): void
}

/**
 * Why a connection was closed without a valid PROXY protocol header: missing (its first bytes
 * begin no header), malformed, too_long (a v1 line past 107 bytes, a v2 header past 4096), timeout (not complete
 * within timeouts.client_headers).
 */
export type RefusalCause = 'missing' | 'malformed' | 'too_long' | 'timeout'

/**
 * How a client spoke to Tether: the HTTP version, or a WebSocket upgrade; `none` for a request
 * refused before its head was read whole (a malformed head, a plain HTTP request to the TLS
 * port), or whose version Tether does not speak (`HTTP/2.0` in an HTTP/1 request line).
 */
export type ClientProtocol = 'http/1.0' | 'http/1.1' | 'h2' | 'websocket' | 'none'

/** Events that go nowhere (tests, tools). */
export const NO_EVENTS: ProxyEvents = Object.freeze({
  requestStarted: () => undefined,
  requestEnded: () => undefined,
  retry: () => undefined,
  failover: () => undefined,
  observeRequest: () => undefined,
  clientProtocol: () => undefined,
  hedge: () => undefined,
  proxyHeaderRefused: () => undefined,
})

/**
 * Events that go to `all` and, for the two a recent-traffic view needs, to `also` after it.
 * Example: `createProxy(config, { events: teeEvents(metrics, traffic), ... })`.
 */
export function teeEvents(all: ProxyEvents, also: Pick<ProxyEvents, 'observeRequest' | 'failover'>): ProxyEvents {
  return {
    requestStarted: (upstream) => all.requestStarted(upstream),
    requestEnded: (upstream) => all.requestEnded(upstream),
    retry: (upstream) => all.retry(upstream),
    failover: (from, reason) => {
      all.failover(from, reason)
      also.failover(from, reason)
    },
    observeRequest: (upstream, method, status, seconds) => {
      all.observeRequest(upstream, method, status, seconds)
      also.observeRequest(upstream, method, status, seconds)
    },
    clientProtocol: (protocol) => all.clientProtocol(protocol),
    hedge: (won) => all.hedge(won),
    proxyHeaderRefused: (cause) => all.proxyHeaderRefused(cause),
  }
}
