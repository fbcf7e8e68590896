// The one error catalogue: every error Tether answers a client with has a stable code,
// an HTTP status and a short plain-text body. Layer 0: no I/O. docs/errors.md lists these codes
// (test/docs.test.ts keeps the two in sync).

export const ERRORS = {
  TETHER_NO_UPSTREAM: { status: 503, message: 'Service Unavailable: no upstream available' },
  TETHER_AFFINITY_UNAVAILABLE: { status: 503, message: 'Service Unavailable: your upstream is unavailable' },
  TETHER_UPSTREAM_CONNECT: { status: 502, message: 'Bad Gateway: upstream connection failed' },
  TETHER_UPSTREAM_CONNECT_TIMEOUT: { status: 504, message: 'Gateway Timeout: upstream connect timed out' },
  TETHER_UPSTREAM_TIMEOUT: { status: 504, message: 'Gateway Timeout: upstream did not answer in time' },
  TETHER_UPSTREAM_RESET: { status: 502, message: 'Bad Gateway: upstream closed the connection' },
  TETHER_UPSTREAM_PROTOCOL: { status: 502, message: 'Bad Gateway: invalid response from upstream' },
  // the upstream's connections (limits.max_upstream_connections) stayed busy for timeouts.queue:
  // overload, not failure; nothing was sent, and Retry-After invites the client back (HAProxy's
  // 503 at its `timeout queue`)
  TETHER_UPSTREAM_QUEUE_TIMEOUT: { status: 503, message: 'Service Unavailable: the upstream is busy' },
  // 504, not 503 with Retry-After: the request may have reached the application (a POST is
  // not replayed), and a client must not be invited to send it again
  TETHER_UPSTREAM_UNAVAILABLE: { status: 504, message: 'Gateway Timeout: the upstream stopped answering' },
  TETHER_BODY_TOO_LARGE: { status: 413, message: 'Content Too Large' },
  TETHER_BAD_REQUEST: { status: 400, message: 'Bad Request' },
  TETHER_PLAIN_HTTP_TO_TLS: { status: 400, message: 'Bad Request: a plain HTTP request was sent to the HTTPS port' },
  TETHER_NOT_IMPLEMENTED: { status: 501, message: 'Not Implemented: unsupported transfer coding' },
  TETHER_UNKNOWN_METHOD: { status: 501, message: 'Not Implemented: unknown request method' },
  TETHER_METHOD_NOT_ALLOWED: { status: 405, message: 'Method Not Allowed' },
  TETHER_HTTP_VERSION: { status: 505, message: 'HTTP Version Not Supported' },
  TETHER_HEADERS_TOO_LARGE: { status: 431, message: 'Request Header Fields Too Large' },
  // the head over the limit while its request line was still being read: the target is what is
  // too long, and RFC 9112 section 3 wants 414 for it (nginx 1.22 answers so)
  TETHER_URI_TOO_LONG: { status: 414, message: 'URI Too Long' },
  TETHER_CLIENT_TIMEOUT: { status: 408, message: 'Request Timeout' },
  TETHER_SHUTTING_DOWN: { status: 503, message: 'Service Unavailable: shutting down' },
  TETHER_TOO_MANY_CONNECTIONS: { status: 503, message: 'Service Unavailable: too many open connections' },
  // Tether's own process could not open a connection (out of file descriptors): nothing is
  // wrong with the upstream, and the request never reached it
  TETHER_OUT_OF_RESOURCES: { status: 503, message: 'Service Unavailable: the proxy is out of resources' },
  TETHER_STATE_UNAVAILABLE: { status: 503, message: 'Service Unavailable: the session state could not be saved' },
  TETHER_INTERNAL: { status: 500, message: 'Internal Server Error' },
} as const satisfies Record<string, { status: number; message: string }>

export type ErrorCode = keyof typeof ERRORS

/** An error with a catalogue code; the original error rides along as `cause`. */
export class TetherError extends Error {
  readonly code: ErrorCode
  readonly status: number
  constructor(code: ErrorCode, cause?: unknown) {
    super(ERRORS[code].message, cause === undefined ? undefined : { cause })
    this.name = 'TetherError'
    this.code = code
    this.status = ERRORS[code].status
  }
}

/**
 * Errors of Tether's own process, not of the upstream: out of file descriptors (EMFILE for the
 * process, ENFILE for the system), which only a new socket meets, so nothing was sent. An
 * attacker who holds enough client connections gets these on every upstream connect; counting
 * them against the upstreams would eject healthy ones (and tell the other replicas to) and move
 * their users for good. nginx answers its own `socket()` failure with 500 and does not count it
 * against the upstream either. (EADDRNOTAVAIL is not one of them: Linux runs out of local ports
 * per destination, and an IPv6 upstream on a host without IPv6 fails so too: both are that
 * upstream's, and another may serve.)
 */
export const LOCAL_RESOURCE_CODES: ReadonlySet<string> = new Set(['EMFILE', 'ENFILE'])
