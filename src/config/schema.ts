// The typed, validated shape of proxy.yaml and its defaults.
// Layer 0 vocabulary: types and constants only, no I/O. The doc comments here are the
// reference for every key; README's key table is kept in sync by test/config-docs.test.ts.

/** Durations are held in milliseconds everywhere in the code. */
export type Millis = number

export interface ListenConfig {
  /** Interface to bind. Default `0.0.0.0` for the proxy, `127.0.0.1` for admin. */
  readonly host: string
  /** TCP port (0 picks a free one). Default 8080 for the proxy, 9901 for admin. */
  readonly port: number
}

export interface AdminConfig {
  /** Admin listener (health, metrics, upstream API; filled in by a later issue). */
  readonly listen: ListenConfig
  /** Bearer token required by mutating admin endpoints; null = none. */
  readonly token: string | null
}

export interface UpstreamConfig {
  /** Stable identity of the upstream (cookies, tables and logs refer to it). Unique. */
  readonly id: string
  /** `http://host:port` origin of the upstream (no path, query or credentials). */
  readonly url: string
  /** Relative share of new users, integer 1..1000. Default 1. */
  readonly weight: number
}

export type AffinityKeyKind = 'none' | 'cookie' | 'app_cookie' | 'client_ip' | 'header'

export interface AffinityConfig {
  /** How a user is identified for routing. Placeholder until the routing issue lands. */
  readonly key: AffinityKeyKind
  /** Idle expiry of an affinity entry. Default 3h, max 24h. */
  readonly idle_timeout: Millis
}

export interface TimeoutsConfig {
  /** TCP connect to an upstream. Default 2s. */
  readonly connect: Millis
  /** From request sent to upstream response headers received. Default 30s. */
  readonly response_headers: Millis
  /** Max silence between two upstream body chunks (0 = none). Default 60s. */
  readonly body_idle: Millis
  /** Idle keep-alive of a client connection between requests. Default 5s. */
  readonly client_keep_alive: Millis
  /** Time a client has to send a complete request head. Default 10s. */
  readonly client_headers: Millis
}

export interface LimitsConfig {
  /** Max size of a request head (request line + headers), bytes. Default 16384. */
  readonly max_header_bytes: number
  /** Max request body, bytes; null = unlimited. Default null. */
  readonly max_body_bytes: number | null
}

export interface ForwardingConfig {
  /** Send the client's Host to the upstream (true) or the upstream URL's host (false). Default true. */
  readonly preserve_host: boolean
  /** Set X-Forwarded-For (append), X-Forwarded-Proto and X-Forwarded-Host. Default true. */
  readonly x_forwarded: boolean
}

export type LogLevel = 'fatal' | 'error' | 'warn' | 'info' | 'debug' | 'trace' | 'silent'

export interface LogConfig {
  /** pino level; the LOG_LEVEL environment variable overrides it. Default info. */
  readonly level: LogLevel
  /** One JSON access-log line per request. Default true. */
  readonly access: boolean
}

export interface Config {
  readonly listen: ListenConfig
  readonly admin: AdminConfig
  readonly upstreams: readonly UpstreamConfig[]
  readonly affinity: AffinityConfig
  readonly timeouts: TimeoutsConfig
  readonly limits: LimitsConfig
  readonly forwarding: ForwardingConfig
  readonly log: LogConfig
}

/** Every default in one table (README documents the same values). */
export const DEFAULTS = {
  listen: { host: '0.0.0.0', port: 8080 },
  admin: { listen: { host: '127.0.0.1', port: 9901 }, token: null },
  upstream: { weight: 1 },
  affinity: { key: 'none', idle_timeout: 3 * 3600_000 },
  timeouts: {
    connect: 2_000,
    response_headers: 30_000,
    body_idle: 60_000,
    client_keep_alive: 5_000,
    client_headers: 10_000,
  },
  limits: { max_header_bytes: 16384, max_body_bytes: null },
  forwarding: { preserve_host: true, x_forwarded: true },
  log: { level: 'info', access: true },
} as const
