// Decides whether an admin request that a web browser may have sent on a page's behalf is
// refused: cross-site changes (CSRF) and requests to a name an attacker's DNS can point at
// the listener (DNS rebinding). Layer 1, pure: reads the request line's method and raw
// headers, never the network, a clock or the response.
import { isIPv4, isIPv6 } from 'node:net'

/** What the guard reads of a request. */
export interface GuardedRequest {
  /** The request method as sent (`GET`, `POST`, ...). */
  readonly method: string
  /** Node's `req.rawHeaders` (name, value, name, value, ...): names in any case, repeats kept. */
  readonly rawHeaders: readonly string[]
  /**
   * The route holds data or changes state and no token guards it: its Host must be known even
   * when nothing shows a browser (a page's same-origin GET to a plain-HTTP name carries neither
   * `Origin` nor `Sec-Fetch-*`, so the Host is the only sign of a rebound name).
   */
  readonly hostMustBeKnown: boolean
}

/** Why a request is refused: `cross_site` (a change from another origin), `unknown_host` (a rebindable Host), `ambiguous` (repeated Origin, Sec-Fetch-Site or Host). */
export type BrowserRefusal = 'cross_site' | 'unknown_host' | 'ambiguous'

/** The guard's answer: pass, or a refusal with its one-line 403 body and what to log. */
export type BrowserVerdict =
  | { readonly ok: true }
  | {
    readonly ok: false
    readonly reason: BrowserRefusal
    /** The 403 body (text, one line, no trailing newline). */
    readonly message: string
    /** The headers that decided, cut to 200 characters, for the log line (null: absent). */
    readonly seen: { readonly origin: string | null; readonly host: string | null; readonly fetch_site: string | null }
  }

/** The log message of a refusal, the same from every admin listener. */
export const BROWSER_REFUSAL_LOG = 'admin request refused: cross-site or DNS-rebinding browser request'

/** Methods that change nothing on the admin API. */
const SAFE = new Set(['GET', 'HEAD'])
/** `Sec-Fetch-Site` values of a request the user or the page's own origin started. */
const OWN_SITE = new Set(['same-origin', 'none'])

/**
 * Judges one admin request. Refused (in this order):
 * 1. `ambiguous`: more than one `Origin`, `Sec-Fetch-Site` or (when the Host is judged) `Host`.
 * 2. `unknown_host`: the request shows a browser (`Origin` or `Sec-Fetch-Site` present; Node's
 *    own fetch sends `Sec-Fetch-Mode` alone, so that header proves nothing), or
 *    `hostMustBeKnown`, and its Host's name is not an IP literal, `localhost` or one of
 *    `allowedHosts` (names in any case, any port, the root dot written or not on either side).
 *    A missing or empty Host counts as unknown.
 * 3. `cross_site`: a method other than GET and HEAD whose `Sec-Fetch-Site` is neither
 *    `same-origin` nor `none`, or whose `Origin` (`null` included) is not `http(s)://` + its Host
 *    (default ports 80 and 443 may be written or left out).
 * Everything else passes: the CLI, curl, probes and scrapers send neither Origin nor
 * Sec-Fetch-Site, and a page's own requests carry its own origin.
 *
 * Example:
 * ```ts
 * browserVerdict({ method: 'POST', rawHeaders: ['Host', '127.0.0.1:9901', 'Origin', 'https://evil.example'], hostMustBeKnown: false }, [])
 * // -> { ok: false, reason: 'cross_site', message: 'Forbidden: cross-site request ...', seen: {...} }
 * browserVerdict({ method: 'POST', rawHeaders: ['Host', '127.0.0.1:9901', 'Origin', 'http://127.0.0.1:9901'], hostMustBeKnown: false }, [])
 * // -> { ok: true }
 * ```
 */
export function browserVerdict(req: GuardedRequest, allowedHosts: readonly string[]): BrowserVerdict {
  const origins: string[] = []
  const sites: string[] = []
  const hosts: string[] = []
  for (let i = 0; i + 1 < req.rawHeaders.length; i += 2) {
    const name = req.rawHeaders[i]!.toLowerCase()
    const value = req.rawHeaders[i + 1]!.trim()
    if (name === 'origin') origins.push(value)
    else if (name === 'sec-fetch-site') sites.push(value.toLowerCase())
    else if (name === 'host') hosts.push(value)
  }
  const seen = { origin: cut(origins.join(', ')), host: cut(hosts.join(', ')), fetch_site: cut(sites.join(', ')) }
  const browser = origins.length > 0 || sites.length > 0
  const judgeHost = browser || req.hostMustBeKnown
  if (origins.length > 1 || sites.length > 1 || (judgeHost && hosts.length > 1)) {
    return { ok: false, reason: 'ambiguous', message: 'Forbidden: more than one Origin, Sec-Fetch-Site or Host header', seen }
  }
  const host = hosts[0] ?? ''
  if (judgeHost && !knownHost(host, allowedHosts)) {
    return {
      ok: false, reason: 'unknown_host', seen,
      message: `Forbidden: Host ${JSON.stringify(seen.host ?? '')} is not an IP address, localhost or a name in admin.allowed_hosts (DNS rebinding protection)`,
    }
  }
  if (SAFE.has(req.method.toUpperCase())) return { ok: true }
  const site = sites[0]
  const origin = origins[0]
  if ((site !== undefined && !OWN_SITE.has(site)) || (origin !== undefined && !sameOrigin(origin, host))) {
    return { ok: false, reason: 'cross_site', seen, message: 'Forbidden: cross-site request refused; the admin API takes changes only from its own page or from clients that are not browsers' }
  }
  return { ok: true }
}

/** The name part of a Host value (`[::1]:9901` -> `::1`, `a.b:80` -> `a.b`, `a.b` -> `a.b`); null when malformed. */
function hostName(host: string): string | null {
  const v6 = /^\[([^\]]*)\](?::\d{1,5})?$/.exec(host)
  if (v6 !== null) return isIPv6(v6[1]!) ? v6[1]! : null
  const m = /^([^:[\]]+)(?::\d{1,5})?$/.exec(host)
  return m === null ? null : m[1]!.toLowerCase()
}

/** An IP literal (no DNS, so nothing to rebind), `localhost` (browsers resolve it themselves) or an allowed name. */
function knownHost(host: string, allowed: readonly string[]): boolean {
  const name = hostName(host)
  if (name === null) return false
  return isIPv6(name) || isIPv4(name) || name === 'localhost' || allowed.some((a) => rooted(a.toLowerCase()) === rooted(name))
}

/** A DNS name with its root dot, which may be written or left out (`a.b.` and `a.b` are one name); `localhost.` is not localhost. */
function rooted(name: string): string {
  return name.endsWith('.') ? name : `${name}.`
}

/** Whether a browser's `Origin` serialization names the same scheme-less authority as the Host. */
function sameOrigin(origin: string, host: string): boolean {
  const m = /^(https?):\/\/([^/?#\s]+)$/i.exec(origin)
  if (m === null || host === '') return false
  const scheme = m[1]!.toLowerCase()
  const strip = (authority: string): string => {
    const a = authority.toLowerCase()
    const port = scheme === 'https' ? ':443' : ':80'
    return a.endsWith(port) ? a.slice(0, -port.length) : a
  }
  return strip(m[2]!) === strip(host)
}

function cut(value: string): string | null {
  if (value === '') return null
  return value.length > 200 ? `${value.slice(0, 200)}...` : value
}
