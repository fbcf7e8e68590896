// The one place that classifies how an upstream exchange ended. Pure: maps an error
// thrown by the forwarding layer (undici or Node) to a catalogue code. Callers switch on
// the code, never on messages.
import { LOCAL_RESOURCE_CODES, TetherError, type ErrorCode } from '../errors.js'

/** Whether the failure happened before any byte of the request could reach the upstream. */
export type Outcome =
  | { readonly kind: 'client_abort' }
  | { readonly kind: 'error'; readonly code: ErrorCode; readonly connect: boolean }

/**
 * The upstream's TLS alerts refusing Tether's client certificate (mTLS): none sent, one from
 * a CA it does not trust, expired, revoked. TLS 1.2 sends them during the handshake; TLS 1.3
 * only after Tether's handshake ended, where an answer would come, before the upstream takes
 * any request: either way nothing reached its application (forward.ts keeps the alert that
 * undici reports as "other side closed").
 */
export const UPSTREAM_REFUSED_CERTIFICATE: ReadonlySet<string> = new Set([
  'ERR_SSL_TLSV13_ALERT_CERTIFICATE_REQUIRED', 'ERR_SSL_TLSV1_ALERT_UNKNOWN_CA', 'ERR_SSL_SSLV3_ALERT_BAD_CERTIFICATE',
  'ERR_SSL_SSLV3_ALERT_CERTIFICATE_EXPIRED', 'ERR_SSL_SSLV3_ALERT_CERTIFICATE_REVOKED', 'ERR_SSL_SSLV3_ALERT_CERTIFICATE_UNKNOWN',
  'ERR_SSL_SSLV3_ALERT_UNSUPPORTED_CERTIFICATE', 'ERR_SSL_TLSV1_ALERT_ACCESS_DENIED',
])

const CONNECT_CODES = new Set([
  'ECONNREFUSED', 'EHOSTUNREACH', 'ENETUNREACH', 'ENOTFOUND', 'EAI_AGAIN', 'EADDRNOTAVAIL',
  // an https upstream's TLS handshake failed (its certificate did not verify, or it speaks no
  // TLS): no byte of the request was sent, as with a refused connection
  'DEPTH_ZERO_SELF_SIGNED_CERT', 'SELF_SIGNED_CERT_IN_CHAIN', 'UNABLE_TO_VERIFY_LEAF_SIGNATURE', 'UNABLE_TO_GET_ISSUER_CERT',
  'UNABLE_TO_GET_ISSUER_CERT_LOCALLY', 'CERT_HAS_EXPIRED', 'CERT_NOT_YET_VALID', 'CERT_UNTRUSTED', 'CERT_REVOKED',
  'CERT_SIGNATURE_FAILURE', 'CERT_REJECTED', 'ERR_TLS_CERT_ALTNAME_INVALID', 'ERR_SSL_WRONG_VERSION_NUMBER',
  // the upstream's alert before the handshake ended (TLS 1.2 without the client certificate it
  // wants, no shared cipher or version), or its refusal of the client certificate (see above)
  'ERR_SSL_SSLV3_ALERT_HANDSHAKE_FAILURE', 'ERR_SSL_TLSV1_ALERT_PROTOCOL_VERSION',
  ...UPSTREAM_REFUSED_CERTIFICATE,
])

/** Classify an error from forwarding. `clientGone` is true when the client closed first. */
export function classify(err: unknown, clientGone: boolean): Outcome {
  if (clientGone) return { kind: 'client_abort' }
  if (err instanceof TetherError) return { kind: 'error', code: err.code, connect: false }
  const code = (err as { code?: unknown } | null)?.code
  if (typeof code === 'string') {
    // nothing was sent: may be tried on the next upstream (after EMFILE it fails alike, fast)
    if (LOCAL_RESOURCE_CODES.has(code)) return { kind: 'error', code: 'TETHER_OUT_OF_RESOURCES', connect: true }
    if (CONNECT_CODES.has(code)) return { kind: 'error', code: 'TETHER_UPSTREAM_CONNECT', connect: true }
    switch (code) {
      case 'UND_ERR_CONNECT_TIMEOUT':
        return { kind: 'error', code: 'TETHER_UPSTREAM_CONNECT_TIMEOUT', connect: true }
      case 'UND_ERR_HEADERS_TIMEOUT':
      case 'UND_ERR_BODY_TIMEOUT':
        return { kind: 'error', code: 'TETHER_UPSTREAM_TIMEOUT', connect: false }
      case 'ECONNRESET':
      case 'EPIPE':
      case 'UND_ERR_SOCKET':
      case 'UND_ERR_CLOSED':
      case 'UND_ERR_DESTROYED':
        return { kind: 'error', code: 'TETHER_UPSTREAM_RESET', connect: false }
      case 'UND_ERR_INVALID_ARG': // a request undici cannot send (e.g. `OPTIONS *`)
      case 'UND_ERR_NOT_SUPPORTED':
      case 'UND_ERR_REQ_CONTENT_LENGTH_MISMATCH':
      case 'UND_ERR_REQUEST_ABORTED':
      case 'UND_ERR_ABORTED':
        return { kind: 'error', code: 'TETHER_BAD_REQUEST', connect: false }
    }
    // ERR_ASSERTION: undici's own check of an answer failed (a status below 100): the upstream
    // answered, with something no HTTP client can take, so no retry
    if (code.startsWith('HPE_') || code === 'UND_ERR_RES_CONTENT_LENGTH_MISMATCH' || code === 'UND_ERR_INFO' || code === 'ERR_ASSERTION') {
      return { kind: 'error', code: 'TETHER_UPSTREAM_PROTOCOL', connect: false }
    }
  }
  return { kind: 'error', code: 'TETHER_UPSTREAM_RESET', connect: false }
}

/** What an attempt tells passive health checks about its upstream. */
export type HealthSignal = 'success' | 'connect_refused' | 'connect_failure' | 'timeout' | 'server_error'

/**
 * The passive-health reading of one attempt: an answer is a success unless it is a 5xx; a
 * refused connection (nothing listens: the pod is gone) is the strongest failure; other
 * connect errors and resets are failures (`connect_failure`), and so are timeouts, told apart
 * (`timeout`: no connection within timeouts.connect, no head within timeouts.response_headers,
 * a body silent for timeouts.body_idle: a frozen or overloaded process, not a dead connection;
 * Envoy's outlier detection counts both as "locally originated" errors, while its cluster
 * stats keep them apart: upstream_cx_connect_fail, upstream_rq_timeout); a client abort says
 * nothing (null). Example: TETHER_UPSTREAM_TIMEOUT ->
 * 'timeout', TETHER_UPSTREAM_RESET -> 'connect_failure'.
 */
export function healthSignal(r: { status: number; outcome: Outcome | null; error: unknown; responded: boolean }): HealthSignal | null {
  if (r.outcome === null) return r.status >= 500 ? 'server_error' : 'success'
  if (r.outcome.kind === 'client_abort') return null
  if ((r.error as { code?: unknown } | null)?.code === 'ECONNREFUSED') return 'connect_refused'
  switch (r.outcome.code) {
    case 'TETHER_BODY_TOO_LARGE':
    case 'TETHER_BAD_REQUEST':
    case 'TETHER_NOT_IMPLEMENTED':
    case 'TETHER_CLIENT_TIMEOUT':
      return null // the client's fault, not the upstream's
    case 'TETHER_UPSTREAM_UNAVAILABLE':
      return null // stopped because health already took the upstream out: no new evidence
    case 'TETHER_OUT_OF_RESOURCES':
      return null // Tether's own failure: says nothing of the upstream
    case 'TETHER_SHUTTING_DOWN':
      return null // cut by Tether's own graceful stop: says nothing of the upstream
    case 'TETHER_UPSTREAM_QUEUE_TIMEOUT':
      return null // its connections were all busy: overload, not failure (nothing was sent)
    case 'TETHER_STATE_UNAVAILABLE':
    case 'TETHER_HEADERS_TOO_LARGE':
      return 'success' // the upstream answered (the state store did not; a head too large for it)
    case 'TETHER_UPSTREAM_PROTOCOL':
      return 'server_error'
    case 'TETHER_UPSTREAM_TIMEOUT':
    case 'TETHER_UPSTREAM_CONNECT_TIMEOUT':
      return 'timeout'
    default:
      return 'connect_failure'
  }
}
