// What the request path reports as it works, for metrics (and anything else that subscribes).
// Layer 0 vocabulary: an interface only; Metrics implements it, tests may record it.
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
}

/** How a client spoke to Tether: the HTTP version, or a WebSocket upgrade. */
export type ClientProtocol = 'http/1.0' | 'http/1.1' | 'h2' | 'websocket'

/** Events that go nowhere (tests, tools). */
export const NO_EVENTS: ProxyEvents = Object.freeze({
  requestStarted: () => undefined,
  requestEnded: () => undefined,
  retry: () => undefined,
  failover: () => undefined,
  observeRequest: () => undefined,
  clientProtocol: () => undefined,
})
