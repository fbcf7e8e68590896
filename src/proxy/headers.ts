// HTTP header rules of a proxy (RFC 9110 section 7.6.1): hop-by-hop removal in both
// directions, Tether's reserved names in every spelling, X-Forwarded-* and Host, and the
// request-target and Host checks of RFC 9112 section 3.2. Pure: takes header lists, returns new
// ones, never mutates the inbound request.
import type { Config } from '../config/schema.js'
import { parseTrustedProxies, type TrustedProxies } from '../affinity/client-ip.js'
import { foldHeaderName, hasFoldedByte, ReservedHeaders } from '../reserved-headers.js'

/** A client's X-Request-Id is kept when it looks like an id (else Tether makes one). */
export const REQUEST_ID = /^[A-Za-z0-9._:+=\/-]{1,128}$/

/** Headers that describe one connection and are never forwarded. */
const HOP_BY_HOP = new Set([
  'connection', 'keep-alive', 'proxy-authenticate', 'proxy-authorization',
  'proxy-connection', 'te', 'trailer', 'transfer-encoding', 'upgrade',
])

/** Lower-cased header names listed in Connection header values ("close, X-Foo"). */
export function connectionTokens(value: string | string[] | undefined): Set<string> | null {
  if (value === undefined) return null
  const out = new Set<string>()
  for (const v of Array.isArray(value) ? value : [value]) {
    for (const token of v.split(',')) {
      const t = token.trim().toLowerCase()
      if (t) out.add(t)
    }
  }
  return out
}

/** The header rules of one config, prepared once (never per request). */
export interface HeaderPolicy {
  /** Tether's reserved names (removed in both directions, every spelling). */
  readonly reserved: ReservedHeaders
  /**
   * Forward request header names holding a byte other than a letter, a digit or `-` (`_`, `.`,
   * `!`, `~`, ...: nginx's `underscores_in_headers` and `ignore_invalid_headers off`); false drops them.
   */
  readonly allowUnderscores: boolean
  /** Keep the client's Host (true) or send the upstream URL's host (false). */
  readonly preserveHost: boolean
  /** Set X-Forwarded-For/-Proto/-Host/-Port. */
  readonly xForwarded: boolean
  /** Peers whose X-Forwarded-Proto/-Host/-Port and Forwarded are kept (they terminated TLS, say). */
  readonly trusted: TrustedProxies
}

/** The header policy of a config. Example: headerPolicy(config).reserved.has('x-tether-epoch') -> true. */
export function headerPolicy(config: Pick<Config, 'forwarding' | 'state' | 'affinity'>): HeaderPolicy {
  return Object.freeze({
    reserved: new ReservedHeaders(config.state.header),
    allowUnderscores: config.forwarding.allow_underscores,
    preserveHost: config.forwarding.preserve_host,
    xForwarded: config.forwarding.x_forwarded,
    trusted: parseTrustedProxies(config.affinity.client_ip.trusted_proxies),
  })
}

/** A reason phrase Node will write and a client can read (RFC 9112: HTAB, SP, VCHAR, obs-text). */
export const REASON_PHRASE = /^[\t\x20-\x7e\x80-\xff]*$/

/** A field name as RFC 9110 section 5.1 writes it (a token). */
export const FIELD_NAME = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/

/**
 * The other headers that claim the client's scheme, address or path prefix, read by
 * frameworks before or instead of X-Forwarded-Proto and -For (Rack checks `X-Forwarded-Ssl: on`
 * and `X-Forwarded-Scheme` first, Tornado `X-Scheme` and `X-Real-Ip`; IIS and OWA read
 * `Front-End-Https`, `X-Url-Scheme` and `X-Arr-Ssl`; CDNs name the client in `True-Client-IP`
 * and the like; Spring and ASP.NET build links from `X-Forwarded-Prefix`; Jetty, mod_wsgi and
 * Yii from `X-Forwarded-Server`, `X-Host` or `X-Original-Host`): kept from a trusted
 * proxy only, like X-Forwarded-Proto, else dropped, so a client cannot claim `https`, another
 * address, host or prefix through them either.
 */
const CLIENT_CLAIMS: ReadonlySet<string> = new Set([
  'x-forwarded-ssl', 'x-forwarded-scheme', 'x-forwarded-protocol', 'x-scheme', 'front-end-https', 'x-url-scheme', 'x-arr-ssl', 'x-forwarded-prefix',
  'x-real-ip', 'true-client-ip', 'x-client-ip', 'x-cluster-client-ip', 'cf-connecting-ip', 'fastly-client-ip',
  // PHP's HTTP_CLIENT_IP (read first by many "real IP" snippets), the older X-Forwarded and
  // Forwarded-For; and the path overrides Symfony and IIS read (X-Original-URL, X-Rewrite-URL)
  'client-ip', 'x-forwarded', 'forwarded-for', 'x-original-url', 'x-rewrite-url',
  // the host a link is built on, besides X-Forwarded-Host (read when none came; Tether sends
  // none for a request without Host): Jetty's ForwardedRequestCustomizer (Spring Boot's
  // `forward-headers-strategy: native` on Jetty) and Apache mod_wsgi's WSGITrustedProxyHeaders
  // (as SERVER_NAME) read X-Forwarded-Server, which Apache's mod_proxy sets; Yii 2's Request
  // X-Original-Host (in its default secureHeaders, for ngrok); mod_wsgi X-Host (as HTTP_HOST).
  // The scheme claims of Jetty and mod_wsgi: Jetty's X-Proxied-Https (`on`) and a forwarded TLS
  // session id or cipher suite (Proxy-Ssl-Id, Proxy-Auth-Cert: https by default, `sslIsSecure`),
  // mod_wsgi's X-Forwarded-HTTPS and X-HTTPS; and mod_wsgi's path prefix, X-Script-Name or
  // X-Forwarded-Script-Name (as SCRIPT_NAME, the base of every link)
  'x-forwarded-server', 'x-original-host', 'x-host',
  'x-proxied-https', 'proxy-ssl-id', 'proxy-auth-cert', 'x-forwarded-https', 'x-https',
  'x-script-name', 'x-forwarded-script-name',
])

/**
 * Headers whose value Tether decides (Host, the X-Forwarded family and Forwarded): a client
 * listing them in `Connection` does not remove them. Else a client behind a trusted load
 * balancer that passes its Connection on (HAProxy does) would erase the balancer's
 * X-Forwarded-For or -Proto (as Traefik's CVE-2024-45410), and `Connection: Host` would send
 * the upstream's own address as Host. nginx and HAProxy remove no header a client lists. Judged
 * by the folded name, whatever the spelling listed or sent (with `allow_underscores`,
 * `X_Forwarded_Proto` is an app's X-Forwarded-Proto: see foldHeaderName).
 */
const NOT_LISTABLE: ReadonlySet<string> = new Set(['host', 'x-forwarded-for', 'x-forwarded-proto', 'x-forwarded-host', 'x-forwarded-port', 'forwarded', ...CLIENT_CLAIMS])

export interface RequestHeaderContext {
  /** Client's peer address (socket.remoteAddress). */
  readonly peer: string
  /** Scheme the client used to reach Tether. */
  readonly proto: 'http' | 'https'
  /** The port of Tether's listener the client connected to (X-Forwarded-Port). */
  readonly port: number
  /** host[:port] of the upstream URL. */
  readonly upstreamHost: string
  /** The authority of an absolute-form target: it replaces Host (RFC 9112 section 3.2.2). */
  readonly authority?: string | null
  /** The request id sent upstream as X-Request-Id (replacing the client's); absent: the client's passes. */
  readonly requestId?: string
  /** Names dropped for a byte other than a letter, a digit or `-` are added here (for a debug log line), when given. */
  readonly dropped?: string[]
}

/**
 * Build the header list sent upstream from the client's raw headers ([name, value, ...]).
 * Removes hop-by-hop headers and those named by Connection, `Expect` (Tether answers
 * 100-continue itself), every reserved name in any spelling (`X_Tether_State`, `X.Tether.State`
 * and, behind lighttpd, `X!Tether~State` are `HTTP_X_TETHER_STATE` to PHP), and, unless
 * `allowUnderscores`, every name holding a byte other than a letter, a digit or `-` (nginx drops
 * them by default: `underscores_in_headers off`, `ignore_invalid_headers on`). Sets
 * X-Request-Id to `ctx.requestId`. With `xForwarded`: appends the peer to X-Forwarded-For;
 * X-Forwarded-Proto/-Host/-Port and Forwarded from a trusted peer are kept (set when absent:
 * -Port by its kept X-Forwarded-Proto, when it sent one, see forwardedPort),
 * from anyone else replaced by Tether's own (Forwarded removed), and the other scheme and
 * address claims (CLIENT_CLAIMS) from anyone else dropped.
 * Example: ["Host","a","Connection","close, X-A","X-A","1","X-Forwarded-For","1.1.1.1"]
 * from untrusted 10.0.0.1 on port 8080 -> ["host","a","x-request-id",id,"x-forwarded-for",
 * "1.1.1.1, 10.0.0.1","x-forwarded-proto","http","x-forwarded-host","a","x-forwarded-port","8080"].
 */
export function upstreamRequestHeaders(raw: readonly string[], policy: HeaderPolicy, ctx: RequestHeaderContext): string[] {
  const out: string[] = []
  let listed: Set<string> | null = null
  let host: string | undefined
  let xff: string | undefined
  const trusted = policy.xForwarded && policy.trusted.cidrs.length > 0 && policy.trusted.contains(ctx.peer)
  let keptProto: string | null = null
  let keptHost: string | null = null
  let keptPort = false
  // first pass only if a Connection header exists (rare on HTTP/1.1 keep-alive clients)
  for (let i = 0; i < raw.length; i += 2) {
    if (raw[i]!.length === 10 && raw[i]!.toLowerCase() === 'connection') {
      const tokens = connectionTokens(raw[i + 1]!)!
      for (let j = i + 2; j < raw.length; j += 2) {
        if (raw[j]!.length === 10 && raw[j]!.toLowerCase() === 'connection') {
          for (const t of connectionTokens(raw[j + 1]!)!) tokens.add(t)
        }
      }
      listed = tokens
      break
    }
  }
  for (let i = 0; i < raw.length; i += 2) {
    const name = raw[i]!
    const value = raw[i + 1]!
    let lower = name.toLowerCase()
    // `_`, `.` and every other tchar alike: lighttpd hands PHP-FPM X!Real~IP as HTTP_X_REAL_IP
    if (hasFoldedByte(lower)) {
      if (!policy.allowUnderscores) {
        ctx.dropped?.push(name)
        continue
      }
      // listed under its own spelling (`Connection: X_Foo` removes `X_Foo`), unless what it
      // folds to is a name Tether decides: the rules below see what a CGI-style app would see,
      // and a trusted balancer's `X_Forwarded_Proto` is that app's X-Forwarded-Proto, which no
      // client may erase by listing it in any spelling
      const spelt = lower
      lower = foldHeaderName(lower)
      if (listed !== null && listed.has(spelt) && !NOT_LISTABLE.has(lower)) continue
    }
    if (HOP_BY_HOP.has(lower) || (listed !== null && listed.has(lower) && !NOT_LISTABLE.has(lower))) continue
    if (lower === 'host') {
      if (host === undefined) host = value
      continue
    }
    if (lower === 'expect' || (lower === 'x-request-id' && ctx.requestId !== undefined)) continue
    if (policy.reserved.has(lower)) continue
    if (policy.xForwarded) {
      if (lower === 'x-forwarded-for') {
        xff = xff === undefined ? value : `${xff}, ${value}`
        continue
      }
      if (CLIENT_CLAIMS.has(lower) && !trusted) continue
      if (lower === 'x-forwarded-proto' || lower === 'x-forwarded-host' || lower === 'x-forwarded-port' || lower === 'forwarded') {
        if (!trusted) continue
        if (lower === 'x-forwarded-proto') keptProto ??= value
        else if (lower === 'x-forwarded-host') keptHost ??= value
        else if (lower === 'x-forwarded-port') keptPort = true
      }
    }
    out.push(name, value)
  }
  if (ctx.authority != null) host = ctx.authority
  const sentHost = policy.preserveHost && host !== undefined ? host : ctx.upstreamHost
  out.push('host', sentHost)
  if (ctx.requestId !== undefined) out.push('x-request-id', ctx.requestId)
  if (policy.xForwarded) {
    out.push('x-forwarded-for', xff === undefined ? ctx.peer : `${xff}, ${ctx.peer}`)
    if (keptProto === null) out.push('x-forwarded-proto', ctx.proto)
    if (keptHost === null && host !== undefined) out.push('x-forwarded-host', host)
    if (!keptPort) out.push('x-forwarded-port', keptProto === null ? String(ctx.port) : forwardedPort(keptProto, keptHost ?? host) ?? String(ctx.port))
  }
  return out
}

/**
 * The client's port by a trusted proxy's X-Forwarded-Proto (and -Host, else Host) when it sent
 * no X-Forwarded-Port: the authority's explicit port, else the scheme's (443, 80), as Traefik
 * derives it; null for a scheme that is neither. Tether's own listener port is the proxy's hop,
 * not the client's: beside the proxy's `https` it would have applications link to
 * `https://host:8080`. The first element of a list is the client's.
 * Example: forwardedPort('https', 'shop.example') -> '443'; ('https', '[::1]:8443') -> '8443'.
 */
function forwardedPort(proto: string, authority: string | undefined): string | null {
  const first = (authority ?? '').split(',', 1)[0]!.trim()
  const port = /:(\d{1,5})$/.exec(first)
  if (port !== null && (first[0] === '[' ? first.lastIndexOf(']') === port.index - 1 : first.indexOf(':') === port.index)) return port[1]!
  const scheme = proto.split(',', 1)[0]!.trim().toLowerCase()
  return scheme === 'https' || scheme === 'wss' ? '443' : scheme === 'http' || scheme === 'ws' ? '80' : null
}

/**
 * The upstream response's parsed headers (lower-cased names; repeated headers such as
 * Set-Cookie are arrays and stay separate) without hop-by-hop headers, those named by
 * Connection, and every reserved name (any spelling): a new object, `headers` is not changed.
 * Copying the kept names into a fresh object, rather than deleting from undici's, keeps it a
 * fast-properties object for Node's header writer (a deleted property turns a V8 object into a
 * slow dictionary). Example: {'content-type': 't', connection: 'close, x-a', 'x-a': '1'} ->
 * {'content-type': 't'}.
 */
export function clientResponseHeaders(
  headers: Readonly<Record<string, string | string[] | undefined>>,
  reserved: ReservedHeaders,
): Record<string, string | string[] | undefined> {
  // "keep-alive" and "close" name no other header: no parsing in the common case
  const listed = connectionListed(headers['connection'])
  const out: Record<string, string | string[] | undefined> = {}
  for (const name in headers) {
    if (!HOP_BY_HOP.has(name) && (listed === null || !listed.has(name)) && !reserved.has(name)) out[name] = headers[name]
  }
  return out
}

/**
 * Fields an answer's trailer section may not carry, or that Tether does not pass there (RFC 9110
 * section 6.5.1: framing, routing, request modifiers, authentication, response control data,
 * how to process the content), nor cookies: a recipient that merges trailers into the head
 * must not get them from there. Hop-by-hop names are dropped too.
 */
const NOT_IN_TRAILERS = new Set([
  ...HOP_BY_HOP, 'http2-settings', 'content-length', 'content-type', 'content-encoding', 'content-range', 'content-location', 'host',
  'cache-control', 'expect', 'max-forwards', 'pragma', 'range', 'if-match', 'if-none-match', 'if-modified-since',
  'if-unmodified-since', 'if-range', 'age', 'expires', 'date', 'location', 'retry-after', 'vary', 'warning',
  'authorization', 'www-authenticate', 'authentication-info', 'proxy-authentication-info', 'set-cookie', 'cookie',
  'strict-transport-security',
])

/**
 * The trailer fields of an upstream's answer that its client gets: none of {@link NOT_IN_TRAILERS},
 * none of Tether's reserved names (in any spelling); null when none is left.
 * Example: `{ 'x-checksum': 'abc', 'x-tether-state': 'e30', 'content-length': '5' }` -> `{ 'x-checksum': 'abc' }`.
 */
export function clientTrailers(
  trailers: Readonly<Record<string, string | string[] | undefined>>,
  reserved: ReservedHeaders,
  connection?: string | string[],
): Record<string, string | string[]> | null {
  const listed = connectionListed(connection)
  let out: Record<string, string | string[]> | null = null
  for (const name in trailers) {
    const v = trailers[name]
    if (v === undefined || NOT_IN_TRAILERS.has(name) || reserved.has(name) || listed?.has(name) === true) continue
    ;(out ??= {})[name] = v
  }
  return out
}

/**
 * An upstream's `Trailer` header (the names its trailer section will hold) as its client gets
 * it: the names {@link clientTrailers} passes; undefined when none. Example: `'X-Checksum, Content-Length'` -> `'X-Checksum'`.
 */
export function announcedTrailers(value: string | string[], reserved: ReservedHeaders, connection?: string | string[]): string | undefined {
  const listed = connectionListed(connection)
  const names: string[] = []
  for (const v of Array.isArray(value) ? value : [value]) {
    for (const token of v.split(',')) {
      const name = token.trim()
      const lower = name.toLowerCase()
      if (name !== '' && !NOT_IN_TRAILERS.has(lower) && !reserved.has(lower) && listed?.has(lower) !== true) names.push(name)
    }
  }
  return names.length === 0 ? undefined : names.join(', ')
}

/** The names an answer's `Connection` header makes hop-by-hop (none for the usual "keep-alive" or "close"). */
function connectionListed(connection: string | string[] | undefined): Set<string> | null {
  return connection === undefined || connection === 'keep-alive' || connection === 'close' ? null : connectionTokens(connection)
}

/** RFC 3986 section 3.2.2-3 authority without userinfo: reg-name, IPv4 or [IPv6], optional port. */
const AUTHORITY = /^(?:\[[0-9A-Fa-f:.]+\]|(?:[A-Za-z0-9\-._~!$&'()*+,;=]|%[0-9A-Fa-f]{2})*)(?::(\d{0,5}))?$/

/**
 * Is `value` a valid Host / authority (RFC 9110 section 7.2, RFC 3986 section 3.2)? Port <= 65535.
 * An empty host before a port (`:80`, `:`) is not: an http URI with an empty host is invalid and
 * a recipient must reject it (RFC 9110 section 4.2.1); nginx 1.22 answers such a Host 400. (An
 * empty value passes here: it is the listener's own 400, see lacksHost.)
 * Example: validAuthority('a.example:8080') -> true; validAuthority('[::1]:80') -> true; validAuthority(':80') -> false.
 */
export function validAuthority(value: string): boolean {
  // a connection sends the same Host again and again: the last valid one needs no regex
  if (value === lastValidAuthority) return true
  const m = AUTHORITY.exec(value)
  const valid = m !== null && (m[1] === undefined || (value.charCodeAt(0) !== 0x3a /* : */ && (m[1] === '' || Number(m[1]) <= 65535)))
  if (valid) lastValidAuthority = value
  return valid
}
let lastValidAuthority: string | null = null

/**
 * The request fields that may appear once (what nginx 1.22 refuses sent twice: its
 * `ngx_http_process_unique_header_line` fields and Host, measured over HTTP/1.1 and h2), plus
 * Proxy-Authorization: one credential each. Node's HTTP/1.1 parser keeps the first line of
 * Host, Authorization, Proxy-Authorization, If-Modified-Since, If-Unmodified-Since and
 * Content-Length in `headers` and forwards every line in `rawHeaders`: Tether (its affinity key
 * included) and an upstream reading the last line would act on different values. Listed by name
 * length, so that a name of another length costs one array look-up.
 */
const ONCE_ONLY: readonly (readonly string[] | undefined)[] = (() => {
  const byLength: string[][] = []
  for (const name of ['host', 'content-length', 'transfer-encoding', 'authorization', 'proxy-authorization', 'if-modified-since',
    'if-unmodified-since', 'if-match', 'if-none-match', 'if-range', 'content-range', 'expect']) (byLength[name.length] ??= []).push(name)
  return byLength
})()

/** Is `name` (a token) `lower` (lower case) in any case? No allocation: header tokens hold no byte that `| 0x20` confuses with a lower-case letter or `-`. */
function sameName(name: string, lower: string): boolean {
  for (let i = 0; i < lower.length; i++) if ((name.charCodeAt(i) | 0x20) !== lower.charCodeAt(i)) return false
  return true
}

/**
 * The field rules checked before any routing: a request with more than one Host, or a Host that
 * is not a valid authority (RFC 9112 section 3.2; a missing Host on HTTP/1.1 is Node's own 400),
 * or a second line of a field of {@link ONCE_ONLY} (nginx's "client sent duplicate header
 * line"), equal or not, is answered 400. One walk over the raw lines, no allocation.
 * Example: fieldsAreValid(['Host', 'a.example:8080']) -> true; ['Host', 'a b'] -> false;
 * ['Host', 'a', 'host', 'b'] -> false; ['Authorization', 'Basic x', 'authorization', 'Basic x'] -> false.
 */
export function fieldsAreValid(raw: readonly string[]): boolean {
  let seen = 0 // one bit a field of ONCE_ONLY: (its length, its place in that length's list)
  for (let i = 0; i < raw.length; i += 2) {
    const name = raw[i]!
    const names = ONCE_ONLY[name.length]
    if (names === undefined) continue
    for (let j = 0; j < names.length; j++) {
      if (!sameName(name, names[j]!)) continue
      const bit = 1 << (ONCE_BIT[name.length]! + j)
      if ((seen & bit) !== 0) return false
      seen |= bit
      if (name.length === 4 && !validAuthority(raw[i + 1]!)) return false
      break
    }
  }
  return true
}
/** The first bit of each name length's fields in fieldsAreValid's `seen`. */
const ONCE_BIT: readonly number[] = (() => {
  const first: number[] = []
  let next = 0
  ONCE_ONLY.forEach((names, length) => {
    first[length] = next
    next += names!.length
  })
  return first
})()

/** Where a request goes on the upstream: its path (and query) exactly as written, and an absolute-form authority. */
export interface RequestTarget {
  readonly path: string
  /** The authority of an absolute-form target (it replaces Host), else null. */
  readonly authority: string | null
}

const ABSOLUTE = /^https?:\/\//i
/**
 * A byte no request-target holds (RFC 9112 section 3.2, RFC 3986: visible US-ASCII only). Node's
 * HTTP/1.1 parser refuses them itself; an h2 `:path` reaches Tether with bytes 0x80-0xFF as they
 * came (nghttp2 refuses the others), and would become a request line no HTTP/1.1 upstream can parse.
 */
const NOT_IN_TARGET = /[^\x21-\x7e]/

/**
 * Read a request target (RFC 9112 section 3.2): origin-form passes as written; absolute-form
 * (`http://a.example/x/../y?q`) gives its path and query exactly as written (no dot-segment
 * normalisation, as origin-form) and its authority; `*` passes here (OPTIONS), and undici then
 * refuses to send it: 400, as nginx answers `OPTIONS *`. Anything else, an
 * authority that is not valid (bad port, userinfo, spaces), another scheme, or (`h2`: an h2
 * `:path`) a byte outside visible US-ASCII (a raw UTF-8 letter), is null: 400. An HTTP/1.1
 * target is not scanned for those bytes: llhttp admits exactly 0x21-0x7e in it already, and
 * the scan would cost every request (84 ns for a 52-character URL, 2.9 us for 2 KB).
 * Example: requestTarget('http://a.example:81') -> { path: '/', authority: 'a.example:81' };
 * requestTarget('http://[bad/x') -> null; requestTarget('/caf\u00e9', true) -> null.
 */
export function requestTarget(url: string | undefined, h2 = false): RequestTarget | null {
  if (url === undefined || url === '' || (h2 && NOT_IN_TARGET.test(url))) return null
  if (url.charCodeAt(0) === 0x2f /* / */) return { path: url, authority: null }
  if (url === '*') return { path: url, authority: null }
  const scheme = ABSOLUTE.exec(url)
  if (scheme === null) return null
  const start = scheme[0].length
  let end = start
  while (end < url.length && url[end] !== '/' && url[end] !== '?') end++
  const authority = url.slice(start, end)
  if (authority === '' || !validAuthority(authority)) return null
  const rest = url.slice(end)
  return { path: rest === '' ? '/' : rest.charCodeAt(0) === 0x3f /* ? */ ? `/${rest}` : rest, authority }
}
