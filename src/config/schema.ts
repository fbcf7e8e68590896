// The typed, validated shape of proxy.yaml and its defaults.
// Layer 0 vocabulary: types and constants only, no I/O. The doc comments here are the
// reference for every key; docs/configuration.md's key table is kept in sync by test/docs.test.ts.

/** Durations are held in milliseconds everywhere in the code. */
export type Millis = number

export interface ListenConfig {
  /** Interface to bind. Default `0.0.0.0` for the proxy, `127.0.0.1` for admin. */
  readonly host: string
  /** TCP port (0 picks a free one). Default 8080 for the proxy, 9901 for admin. */
  readonly port: number
}

/** A certificate and its private key, PEM files (a `kubernetes.io/tls` Secret mounts them as `tls.crt` and `tls.key`). */
export interface CertificateFiles {
  /** PEM certificate chain: the certificate first, then its intermediates. */
  readonly cert: string
  /** PEM private key of that certificate (unencrypted). */
  readonly key: string
}

/** Lowest TLS version a client may negotiate. */
export type TlsVersion = 'TLSv1.2' | 'TLSv1.3'

export interface HstsConfig {
  /** `max-age` of `Strict-Transport-Security`. */
  readonly max_age: Millis
  /** Add `includeSubDomains`. Default false. */
  readonly include_subdomains: boolean
  /** Add `preload` (needs include_subdomains and a max_age of at least 1 year). Default false. */
  readonly preload: boolean
}

export interface ListenTlsConfig extends CertificateFiles {
  /**
   * More certificates, chosen by the name the client asks for (SNI): each serves the DNS names
   * of its subjectAltName (wildcards included); `cert`/`key` serve every other name. Default [].
   */
  readonly certificates: readonly CertificateFiles[]
  /** Lowest TLS version accepted. Default TLSv1.2. */
  readonly min_version: TlsVersion
  /** Send `Strict-Transport-Security` on every answer over TLS; null: none. Default null. */
  readonly hsts: HstsConfig | null
}

export interface Http2Config {
  /** Offer HTTP/2 by ALPN (`h2`, then `http/1.1`) on the TLS listener. Default true. */
  readonly enabled: boolean
  /**
   * Also take cleartext HTTP/2 with prior knowledge (h2c) on a listener without TLS, next to
   * HTTP/1.1 (for a TLS-terminating load balancer that speaks h2c). Default false.
   */
  readonly cleartext: boolean
  /** Most streams a client may have open at once on one connection. Default 100. */
  readonly max_concurrent_streams: number
}

export interface RedirectConfig {
  /** Interface of the plain-HTTP listener that redirects to https://. Default `0.0.0.0`. */
  readonly host: string
  /** Its TCP port. Default 8080. */
  readonly port: number
  /** Port written in the https:// Location (443 is left out); null: the TLS listener's own port. Default 443. */
  readonly https_port: number | null
}

export interface ProxyListenConfig extends ListenConfig {
  /** Terminate TLS on this listener; null: plain HTTP. Default null. */
  readonly tls: ListenTlsConfig | null
  readonly http2: Http2Config
  /**
   * A second, plain-HTTP listener answering 308 to the same URL on https:// (except
   * `/.well-known/acme-challenge/`, which is proxied); null: none. Needs `tls`. Default null.
   */
  readonly redirect: RedirectConfig | null
  /**
   * Every connection (to this listener and to `redirect`) begins with a PROXY protocol header,
   * v1 or v2 (HAProxy's), from a load balancer in front; the client address it declares is the
   * client's for everything (X-Forwarded-For, the client_ip key, logs). A connection without a
   * valid one is closed unanswered. Only for a port nothing but the balancer can reach. Default false.
   */
  readonly proxy_protocol: boolean
}

/** How Tether talks TLS to an https:// upstream. */
export interface UpstreamTlsConfig {
  /** PEM file of the CAs trusted for the upstream's certificate; null: Node's built-in roots. Default null. */
  readonly ca: string | null
  /** Name sent by SNI and checked against the certificate; null: the URL's host (no SNI for an address). Default null. */
  readonly servername: string | null
  /** PEM client certificate for mTLS (with `key`); null: none. Default null. */
  readonly cert: string | null
  /** PEM private key of `cert`. Default null. */
  readonly key: string | null
  /** Check the upstream's certificate and name. false is insecure and logged as such. Default true. */
  readonly verify: boolean
}

export interface AdminConfig {
  /** Admin listener (health, metrics, upstream API; filled in by a later issue). */
  readonly listen: ListenConfig
  /** Bearer token required by every admin route except /healthz, /readyz and /metrics; null = none (all open). */
  readonly token: string | null
  /**
   * Host names (any case, no port) a browser may use to reach the admin listener besides IP
   * addresses and `localhost`; a browser's request to any other name is refused as DNS
   * rebinding (as is any tokenless request for data to it). Default [].
   */
  readonly allowed_hosts: readonly string[]
  readonly readiness: AdminReadinessConfig
}

/**
 * What `GET /readyz` asks of the upstreams. `startup` (default): a healthy upstream until the
 * first one is seen since start (with active checks: the first to pass a probe), after that none (with none left, `degraded` says so and
 * clients get Tether's own 503 with `Retry-After`, as Envoy's `/ready` and ingress-nginx's
 * `/healthz` stay ready); `always`: 503 whenever none is healthy (HAProxy's
 * `monitor fail if { nbsrv(be) eq 0 }`, for a load balancer that should fail over elsewhere).
 */
export type RequireUpstream = 'startup' | 'always'

export interface AdminReadinessConfig {
  /** When `/readyz` needs a healthy upstream: `startup` (until one was seen) or `always`. Default `startup`. */
  readonly require_upstream: RequireUpstream
}

export interface UpstreamConfig {
  /** Stable identity of the upstream (cookies, tables and logs refer to it). Unique. */
  readonly id: string
  /** `http://host:port` or `https://host:port` origin of the upstream (no path, query or credentials). */
  readonly url: string
  /** Relative share of new users, integer 1..1000. Default 1. */
  readonly weight: number
  /**
   * TLS to an https:// upstream: the keys it sets over `forwarding.tls`; null (or absent) for
   * http:// (upstreams found by discovery are http://).
   */
  readonly tls?: UpstreamTlsConfig | null
  /**
   * Most connections one Tether process keeps to this upstream, over
   * `limits.max_upstream_connections` (either way: lower or higher); null (or absent): that
   * global bound. Integer 1..1000000. Static upstreams only: discovered ones take the global one.
   */
  readonly max_connections?: number | null
}

/** How a user is identified for routing (see README "Sticky routing"). */
export type AffinityKeyKind = 'none' | 'cookie' | 'app_cookie' | 'client_ip' | 'header'

export type SameSite = 'Strict' | 'Lax' | 'None'

export interface CookieAffinityConfig {
  /** Name of Tether's own affinity cookie. Default `tether`. */
  readonly name: string
  /**
   * HMAC secrets (each >= 16 bytes): the first signs, all verify (rotation). null: a random
   * per-process secret (fine for one process; several replicas must share a secret).
   */
  readonly secret: readonly string[] | null
  /** Cookie Path. Default `/`. */
  readonly path: string
  /** Cookie Domain; null leaves it out (host-only cookie). Default null. */
  readonly domain: string | null
  /** Cookie Max-Age; null: a browser-session cookie (expiry is enforced from the cookie's own times). Default null. */
  readonly max_age: Millis | null
  /** Secure attribute. Default true. */
  readonly secure: boolean
  /** HttpOnly attribute. Default true. */
  readonly http_only: boolean
  /** SameSite attribute. Default Lax. `None` requires `secure: true`. */
  readonly same_site: SameSite
}

export interface AppCookieAffinityConfig {
  /** The application's session cookie, e.g. `laravel_session`, `PHPSESSID`, `connect.sid`. Required with `key: app_cookie`. */
  readonly name: string | null
  /** How requests without that cookie are placed: by client IP, or spread (`random`: weighted round robin, which spreads evenly without a random draw). Default client_ip. */
  readonly fallback: 'client_ip' | 'random'
}

export interface ClientIpAffinityConfig {
  /** CIDRs of proxies whose X-Forwarded-For is believed (right-most untrusted entry wins). Default none. */
  readonly trusted_proxies: readonly string[]
}

export interface HeaderAffinityConfig {
  /** Request header whose value is the key, e.g. `X-Tenant`. Required with `key: header`. */
  readonly name: string | null
}

/**
 * Drains that migrate: each user of a draining upstream moves (with `X-Tether-Moved:
 * reason=drain` and rehydration) at its first request after an idle gap of at least
 * `min_idle`, so a burst of page assets is not split; users still active move at `drain_timeout`.
 * Example: `drain: { migrate: true, min_idle: 2s }`.
 */
export interface DrainAffinityConfig {
  /** Drains caused by discovery (a pod gone or terminating) migrate; an admin drain asks with `?migrate=true`. Default false. */
  readonly migrate: boolean
  /** The idle gap after which a user of a migrating drain moves at its next request. Default 2s. */
  readonly min_idle: Millis
}

/**
 * Gradual rebalance after scale-up: a user whose hash now prefers an upstream added after they
 * were pinned moves (rehydrated, `X-Tether-Moved: reason=rebalance`) only when they come back
 * after an idle gap of `min_idle` (a new visit), at most `max_moves_per_second` users a second
 * per Tether process. Example: `rebalance: { min_idle: 5m, max_moves_per_second: 20 }`.
 */
export interface RebalanceAffinityConfig {
  /** The idle gap that makes a request a new visit, when the user may move. Default 5m. */
  readonly min_idle: Millis
  /** Most users moved by the rebalance per second, per Tether process (a burst of one second's worth). Default 20. */
  readonly max_moves_per_second: number
}

/**
 * Spill under overload: bounded loads place only new users; spill also moves pinned ones. When
 * an upstream's in-flight requests (in this Tether process, averaged over about a second) exceed
 * `factor` x its weighted share of all in-flight requests (and 1), a user of it who comes back after an idle gap of `min_idle` (a new
 * visit, never mid-visit) moves, rehydrated (`X-Tether-Moved: reason=spill`), to the next
 * upstream in their hash order that is under that bound, at most `max_moves_per_second` users a
 * second per Tether process. Example: `spill: { factor: 1.5, min_idle: 30s, max_moves_per_second: 10 }`.
 */
export interface SpillAffinityConfig {
  /** How far above its weighted share of in-flight requests an upstream may go before its returning users spill. Default 1.5. */
  readonly factor: number
  /** The idle gap after which a user of an overloaded upstream may move at its next request. Default 30s. */
  readonly min_idle: Millis
  /** Most users spilled per second, per Tether process (a burst of one second's worth). Default 10. */
  readonly max_moves_per_second: number
}

export interface AffinityConfig {
  /** How a user is identified: none (round robin), cookie, app_cookie, client_ip or header. Default cookie. */
  readonly key: AffinityKeyKind
  readonly cookie: CookieAffinityConfig
  readonly app_cookie: AppCookieAffinityConfig
  readonly client_ip: ClientIpAffinityConfig
  readonly header: HeaderAffinityConfig
  /** Idle expiry of an affinity (sliding). Default 3h, max 24h (Kubernetes timeoutSeconds). */
  readonly idle_timeout: Millis
  /** Cap on an affinity's whole life; null = none. Default null. */
  readonly absolute_timeout: Millis | null
  /**
   * When an upstream is added: keep users where they are (persistent), let the hash move them
   * at once (rebalance), or move them at a new visit, at a bounded rate (gradual, see
   * {@link RebalanceAffinityConfig}). Default persistent.
   */
  readonly on_scale_up: 'persistent' | 'rebalance' | 'gradual'
  /** How `on_scale_up: gradual` moves users. */
  readonly rebalance: RebalanceAffinityConfig
  /** Bounded loads: a new user never goes to an upstream above factor x average load; null = off. Default null. */
  readonly balance_factor: number | null
  /** Spill of pinned users away from an overloaded upstream (see {@link SpillAffinityConfig}); null = off. Default null. */
  readonly spill: SpillAffinityConfig | null
  /** Max entries in the affinity table (LRU beyond). Default 1000000. */
  readonly max_entries: number
  /** Answer 503 instead of moving a user whose upstream is unavailable. Default false. */
  readonly strict: boolean
  /** Users of a draining upstream stay until idle or until this has passed, then move. Default 15m. */
  readonly drain_timeout: Millis
  /** How users leave a draining upstream before `drain_timeout` (see {@link DrainAffinityConfig}). */
  readonly drain: DrainAffinityConfig
  /** Share the affinity table between Tether replicas through the Redis state store. Default none. */
  readonly shared: 'none' | 'redis'
}

export interface TimeoutsConfig {
  /** TCP connect to an upstream. Default 2s. */
  readonly connect: Millis
  /**
   * From request sent to upstream response headers received (time a request body still
   * arrives from the client does not count). Default 60s, as body_idle and nginx's
   * proxy_read_timeout. Timed by Tether's own sweep (proxy/deadlines.ts), not by undici.
   */
  readonly response_headers: Millis
  /** Max silence between two upstream body chunks (0 = none). Default 60s. */
  readonly body_idle: Millis
  /** Idle keep-alive of a client connection between requests. Default 5s. */
  readonly client_keep_alive: Millis
  /** Time a client has to send a complete request head. Default 10s. */
  readonly client_headers: Millis
  /**
   * How long one client connection carries requests, as nginx's `keepalive_time` and Envoy's
   * `max_connection_duration`: the first HTTP/1.1 request whose turn starts after it is the
   * connection's last (`Connection: close`), the first HTTP/2 stream after it gets GOAWAY
   * NO_ERROR (streams in flight finish); a WebSocket is never cut. Like
   * `limits.max_requests_per_connection`, it moves a long-lived connection (an L4 load
   * balancer's keep-alive, an h2 client's steady trickle) to another Tether replica now and
   * then. 0 = unlimited. A reload applies to connections whose first request (h2: preface)
   * comes after it. Default 1h, as nginx.
   */
  readonly client_connection_max: Millis
  /**
   * How long a request may wait for one of its upstream's connections when
   * `limits.max_upstream_connections` are all busy (HAProxy's `timeout queue`); then 503
   * TETHER_UPSTREAM_QUEUE_TIMEOUT. Unused without that limit. Default 5s.
   */
  readonly queue: Millis
}

export interface LimitsConfig {
  /** Max size of a request head (request line + headers), bytes. Default 16384. */
  readonly max_header_bytes: number
  /** Max request body, bytes; null = unlimited. Default null. */
  readonly max_body_bytes: number | null
  /**
   * Most requests one client connection carries: HTTP/1.1 requests (the last answer gets
   * `Connection: close`, then the connection closes) or HTTP/2 streams (then GOAWAY NO_ERROR,
   * streams in flight finish), as nginx's `keepalive_requests` and Envoy's
   * `max_requests_per_connection`: a long-lived connection (an L4 load balancer's keep-alive,
   * a browser's or an ingress's h2) moves to another Tether replica now and then, so a
   * scale-up of Tether gets traffic. 0 = unlimited. A reload applies to connections whose first request (h2: preface) comes
   * after it; one that has carried a request keeps its value. Default 1000.
   */
  readonly max_requests_per_connection: number
  /**
   * Most connections one Tether process keeps to one upstream (static or discovered), as
   * HAProxy's `maxconn` on a server: requests beyond it wait in order, at most `timeouts.queue`.
   * Per process: with `workers: N` an upstream gets up to N x this. null = unlimited (one
   * connection per request in flight). Needs a restart. Default null.
   */
  readonly max_upstream_connections: number | null
}

export interface ForwardingConfig {
  /** Send the client's Host to the upstream (true) or the upstream URL's host (false). Default true. */
  readonly preserve_host: boolean
  /** Set X-Forwarded-For (append), X-Forwarded-Proto and X-Forwarded-Host. Default true. */
  readonly x_forwarded: boolean
  /** Add `X-Tether-Upstream: <id>` to responses (debugging). Default false. */
  readonly upstream_header: boolean
  /**
   * Forward request headers whose name holds a byte other than a letter, a digit or `-`: `_`,
   * `.` and every other tchar (`!`, `~`, `|`, ...). The name is nginx's `underscores_in_headers`;
   * true is that plus `ignore_invalid_headers off` (nginx drops the other names by default).
   * Backends read such names as other ones: CGI, PHP, Rack and WSGI read `X_Foo` as `X-Foo`, PHP
   * `X.Foo` too, and lighttpd hands PHP-FPM every non-alphanumeric byte as `_` (`X~Foo` is
   * `HTTP_X_FOO`), so by default such names are dropped (logged at debug). Forwarded, they still
   * meet the reserved-name and X-Forwarded rules as the name they fold to. Default false.
   */
  readonly allow_underscores: boolean
  /** TLS settings of every https:// upstream (an upstream's own `tls` keys override them). */
  readonly tls: UpstreamTlsConfig
}

export interface ActiveHealthConfig {
  /** Probe every upstream in the background. Default true. */
  readonly enabled: boolean
  /**
   * Path probed with `GET`, passing on `expected_status`; null (default): `OPTIONS *`, passing
   * on any HTTP answer, which needs nothing from the app and catches a replica that accepts
   * connections but does not answer (frozen, deadlocked): the kernel completes the TCP
   * handshake for a stopped process, so a connect check alone would pass. Default null.
   */
  readonly path: string | null
  /** Time between probes of one upstream (each delayed by up to 10% jitter); after a failed probe the next comes after a quarter of it. Default 2s. */
  readonly interval: Millis
  /**
   * A probe whose connect takes longer than this, or not answered within this of its connect,
   * counts as failed (once more when a timer of Tether's own process fired at least half of it
   * late, a stall, docs/health.md); a probe timeout while requests have been
   * waiting on that upstream's answer for longer than this marks it unhealthy at once. Default 500ms.
   */
  readonly timeout: Millis
  /** Consecutive passing probes that make an unhealthy upstream healthy. Default 2. */
  readonly healthy_threshold: number
  /** Consecutive failing probes that make a healthy upstream unhealthy. Default 2. */
  readonly unhealthy_threshold: number
  /** Statuses that pass with a `path`, inclusive. Default 200-399. */
  readonly expected_status: { readonly min: number; readonly max: number }
}

export interface PassiveHealthConfig {
  /** Outlier detection on live traffic. Default true. */
  readonly enabled: boolean
  /** Consecutive failures (connection failures, and 5xx when count_5xx) that eject an upstream. Default 3. A refused connection ejects at once; with active checks that ejection ends at healthy_threshold passed probes in a row. */
  readonly consecutive_failures: number
  /** Count 5xx answers as failures. Default true. */
  readonly count_5xx: boolean
  /** First ejection lasts this long; each repeated ejection adds as much again. Default 10s. */
  readonly base_ejection: Millis
  /** Longest ejection. Default 5m. */
  readonly max_ejection: Millis
  /** Never eject more than this share of upstreams at once, percent; below 100, nor the last one still serving (but for a refused connection). Default 50. */
  readonly max_ejection_percent: number
}

export interface HealthConfig {
  readonly active: ActiveHealthConfig
  readonly passive: PassiveHealthConfig
  /** An upstream that (re)joins gets new users gradually over this window; 0 = off. Default 0. */
  readonly slow_start: Millis
  /** Tell the other Tether replicas (Redis pub/sub) of upstreams found down and of drains. Default none. */
  readonly shared: 'none' | 'redis'
}

export interface RetriesConfig {
  /** Extra attempts on other upstreams, retries after a failed one and hedges alike (0 = none, and no hedge). Default 2. */
  readonly attempts: number
  /** No new attempt starts after this long since the request arrived. Default 10s. */
  readonly try_duration: Millis
  /** A request body up to this size is kept so it can be replayed on retry. Default 65536. */
  readonly replay_buffer_bytes: number
  /**
   * An idempotent request without a body that has no answer head after this long is also sent
   * to the user's next upstream; the first head wins, and the user moves only if the hedge
   * answered. A hedge is one of `attempts` and starts only within `try_duration`. null = off.
   * Default null.
   */
  readonly hedge_after: Millis | null
}

export interface DnsDiscoveryConfig {
  /** Name to resolve, e.g. a Kubernetes headless Service `app-headless.default.svc.cluster.local`. */
  readonly name: string
  /** Port of every discovered upstream; required unless `srv` (then null takes each SRV record's port). */
  readonly port: number | null
  /**
   * Ask for SRV records (e.g. `_http._tcp.web.default.svc.cluster.local`) and resolve their
   * targets: upstream ids are the targets' host names (a StatefulSet's pod names), so they
   * survive a pod's address change. Default false (A/AAAA, ids `address:port`).
   */
  readonly srv: boolean
  /** Re-resolution interval. Default 5s. */
  readonly interval: Millis
  /** Address families used. Default any. */
  readonly family: 'any' | 'ipv4' | 'ipv6'
  /** DNS servers (`host` or `host:port`); empty = the system resolver. Default []. */
  readonly servers: readonly string[]
}

export interface KubernetesDiscoveryConfig {
  /** The Service whose `discovery.k8s.io/v1` EndpointSlices are listed and watched, e.g. `web`. */
  readonly service: string
  /** Its namespace; null: the pod's own (service account), or the kubeconfig context's. Default null. */
  readonly namespace: string | null
  /**
   * The port: a Service port name (EndpointSlices carry the Service's port names, with the
   * pods' port numbers), or the number the pods listen on (the Service's targetPort).
   */
  readonly port: string | number
  /** A kubeconfig file, to run outside the cluster; null: the in-cluster service account. Default null. */
  readonly kubeconfig: string | null
  /**
   * An annotation on the Service that sets weights: `"3"` (every pod) or `"web-0=3,web-1=2"`
   * (by pod name, `*=n` for the others, default 1); null: every pod weight 1 (the Service is
   * not read). Default null.
   */
  readonly weight_annotation: string | null
}

export interface DiscoveryConfig {
  /** Upstreams from DNS instead of (or in addition to) the static list; null = none. Default null. */
  readonly dns: DnsDiscoveryConfig | null
  /** Upstreams from a Kubernetes Service's EndpointSlices (pods by name); null = none. Default null. */
  readonly kubernetes: KubernetesDiscoveryConfig | null
}

export interface RedisConfig {
  /** `redis://[:password@]host:port[/db]` or `rediss://` (TLS); null when sentinels or nodes are used. */
  readonly url: string | null
  /** Password (e.g. `${REDIS_PASSWORD}`), overriding one in the URL; null = none. */
  readonly password: string | null
  /** The Redis 6+ ACL user (e.g. `tether`), overriding one in the URL; null = the URL's, else `default`. */
  readonly username: string | null
  /** Sentinel addresses (`host:port`); with `name`. */
  readonly sentinels: readonly string[]
  /** Sentinel master name. */
  readonly name: string | null
  /** The Sentinels' own password (their `requirepass`, e.g. `${REDIS_SENTINEL_PASSWORD}`); null = none. */
  readonly sentinel_password: string | null
  /** The Sentinels' own ACL user (Redis 6.2+ Sentinels); null = `default`. */
  readonly sentinel_username: string | null
  /** Redis Cluster seed nodes (`host:port`). */
  readonly nodes: readonly string[]
  /** Prefix of every key Tether writes. Default `tether:`. */
  readonly key_prefix: string
}

export interface StateConfig {
  /** Where checkpoints live: memory (one process), redis (shared), or none (protocol off). Default memory. */
  readonly store: 'memory' | 'redis' | 'none'
  /** Response header carrying a checkpoint; `<header>-Version` carries its version. Default X-Tether-State. */
  readonly header: string
  /**
   * Largest checkpoint stored, in the bytes the store holds it in: with Redis its UTF-8 bytes
   * (a header byte from 0x80 to 0xFF, a latin1 character, takes two), in memory one a
   * header byte. Default 65536.
   */
  readonly max_bytes: number
  /** How a moved user's state is delivered: in a request header, or POSTed to `hook_path` first. Default header. */
  readonly rehydrate: 'header' | 'hook'
  /** Path the state is POSTed to with `rehydrate: hook`. Default /.well-known/tether/rehydrate. */
  readonly hook_path: string
  /** Longest wait on the store in the request path (a checkpoint fetch gets one retry within a second such budget). Default 50ms. */
  readonly timeout: Millis
  /**
   * `best_effort`: an answer waits at most `timeout` for its checkpoint to be stored, then goes
   * out stored or not. `confirmed`: it waits up to `confirm_timeout`, and an answer whose
   * checkpoint was not stored is replaced by 503 TETHER_STATE_UNAVAILABLE (never acknowledge
   * an update that is not stored). Default best_effort.
   */
  readonly durability: 'best_effort' | 'confirmed'
  /** Longest wait for a checkpoint write with `durability: confirmed`. Default 1s. */
  readonly confirm_timeout: Millis
  readonly memory: MemoryStoreConfig
  readonly redis: RedisConfig
}

export interface MemoryStoreConfig {
  /**
   * Most bytes the in-process checkpoint store holds (`store: memory`), each checkpoint counted
   * as its value plus its key plus a fixed 384-byte entry overhead. Beyond it, segmented LRU:
   * sessions seen once are evicted first, so a flood of one-request visitors cannot push out
   * the checkpoints of returning users. At least 1 MiB and 5 x `max_bytes`. Default 64 MiB
   * (67108864).
   */
  readonly max_bytes: number
}

export interface WebSocketConfig {
  /** Most proxied WebSocket (Upgrade) connections open at once; more get 503. Default 10000. */
  readonly max_connections: number
  /** A WebSocket with no bytes either way for this long is closed. Default 1h. */
  readonly idle_timeout: Millis
}

export interface ShutdownConfig {
  /** On SIGTERM, in-flight requests get this long to finish. Default 10s. */
  readonly grace_period: Millis
}

export type LogLevel = 'fatal' | 'error' | 'warn' | 'info' | 'debug' | 'trace' | 'silent'

export interface LogConfig {
  /** pino level; the LOG_LEVEL environment variable overrides it. Default info. */
  readonly level: LogLevel
  /** One JSON access-log line per request. Default true. */
  readonly access: boolean
  /**
   * Key of the HMAC that turns a table key (client IP, application cookie, header value) into
   * the `session` field of the access log (`h:` + 32 hex digits); the same secret on every
   * replica gives the same logged form. null: a random secret per process. Default null.
   */
  readonly session_secret: string | null
}

export interface Config {
  readonly listen: ProxyListenConfig
  readonly admin: AdminConfig
  readonly upstreams: readonly UpstreamConfig[]
  readonly affinity: AffinityConfig
  readonly timeouts: TimeoutsConfig
  readonly limits: LimitsConfig
  readonly forwarding: ForwardingConfig
  readonly log: LogConfig
  readonly health: HealthConfig
  readonly retries: RetriesConfig
  readonly discovery: DiscoveryConfig
  readonly shutdown: ShutdownConfig
  readonly state: StateConfig
  readonly websocket: WebSocketConfig
  /**
   * Worker processes serving the proxy listener: 1 (one process, no primary), a count, or
   * `auto` (the CPUs this container may use: cgroup `cpu.max`, else the machine's cores).
   * With more than one, a primary supervises them and keeps one routing truth. Default 1.
   */
  readonly workers: number | 'auto'
}

/** Every default in one table (README documents the same values). */
export const DEFAULTS = {
  listen: {
    host: '0.0.0.0', port: 8080, tls: null, redirect: null, proxy_protocol: false,
    http2: { enabled: true, cleartext: false, max_concurrent_streams: 100 },
  },
  spill: { factor: 1.5, min_idle: 30_000, max_moves_per_second: 10 },
  listenTls: { certificates: [], min_version: 'TLSv1.2', hsts: null },
  hsts: { include_subdomains: false, preload: false },
  redirect: { host: '0.0.0.0', port: 8080, https_port: 443 },
  admin: { listen: { host: '127.0.0.1', port: 9901 }, token: null, allowed_hosts: [], readiness: { require_upstream: 'startup' } },
  upstream: { weight: 1, tls: null, max_connections: null },
  upstreamTls: { ca: null, servername: null, cert: null, key: null, verify: true },
  affinity: {
    key: 'cookie',
    cookie: {
      name: 'tether', secret: null, path: '/', domain: null, max_age: null,
      secure: true, http_only: true, same_site: 'Lax',
    },
    app_cookie: { name: null, fallback: 'client_ip' },
    client_ip: { trusted_proxies: [] },
    header: { name: null },
    idle_timeout: 3 * 3600_000,
    absolute_timeout: null,
    on_scale_up: 'persistent',
    rebalance: { min_idle: 5 * 60_000, max_moves_per_second: 20 },
    balance_factor: null,
    spill: null,
    max_entries: 1_000_000,
    strict: false,
    drain_timeout: 15 * 60_000,
    drain: { migrate: false, min_idle: 2_000 },
    shared: 'none',
  },
  timeouts: {
    connect: 2_000,
    response_headers: 60_000,
    body_idle: 60_000,
    client_keep_alive: 5_000,
    client_headers: 10_000,
    client_connection_max: 3_600_000,
    queue: 5_000,
  },
  limits: { max_header_bytes: 16384, max_body_bytes: null, max_requests_per_connection: 1000, max_upstream_connections: null },
  forwarding: {
    preserve_host: true, x_forwarded: true, upstream_header: false, allow_underscores: false,
    tls: { ca: null, servername: null, cert: null, key: null, verify: true },
  },
  log: { level: 'info', access: true, session_secret: null },
  health: {
    active: {
      enabled: true, path: null, interval: 2_000, timeout: 500, healthy_threshold: 2, unhealthy_threshold: 2,
      expected_status: { min: 200, max: 399 },
    },
    passive: {
      enabled: true, consecutive_failures: 3, count_5xx: true, base_ejection: 10_000,
      max_ejection: 300_000, max_ejection_percent: 50,
    },
    slow_start: 0,
    shared: 'none',
  },
  retries: { attempts: 2, try_duration: 10_000, replay_buffer_bytes: 65_536, hedge_after: null },
  discovery: { dns: null, kubernetes: null },
  dnsDiscovery: { port: null, srv: false, interval: 5_000, family: 'any', servers: [] },
  kubernetesDiscovery: { namespace: null, kubeconfig: null, weight_annotation: null },
  shutdown: { grace_period: 10_000 },
  workers: 1,
  websocket: { max_connections: 10_000, idle_timeout: 3_600_000 },
  state: {
    store: 'memory', header: 'X-Tether-State', max_bytes: 65_536, rehydrate: 'header',
    hook_path: '/.well-known/tether/rehydrate', timeout: 50, durability: 'best_effort', confirm_timeout: 1_000,
    memory: { max_bytes: 64 * 1024 * 1024 },
    redis: { url: null, password: null, username: null, sentinels: [], name: null, sentinel_password: null, sentinel_username: null, nodes: [], key_prefix: 'tether:' },
  },
} as const
