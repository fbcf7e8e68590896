// Tether's own affinity cookie as the routing side issues it: new session ids, the Set-Cookie
// line of a new, refreshed or re-bound session, and when a cookie needs refreshing. Layer 1:
// pure apart from the injected random source; built once from config (keys derived once).
import { randomBytes } from 'node:crypto'
import type { AffinityConfig } from '../config/schema.js'
import { CookieCodec, setCookieSerializer, shouldRefresh, type DecodedCookie } from './cookie-codec.js'

/**
 * Example: `const s = issuer.newSessionId()`; placed on app-1 -> `issuer.issue(s, 'app-1', 0, now)`
 * -> `'tether=AX3k...; Path=/; Secure; HttpOnly; SameSite=Lax'`.
 */
export class CookieIssuer {
  readonly codec: CookieCodec
  readonly #serialize: (value: string) => string
  readonly #random: (size: number) => Uint8Array
  /**
   * A cookie is re-issued when its last-seen time is older than a tenth of this: the sliding
   * expiry, and with `on_scale_up: gradual` or `spill` at half their `min_idle`, so that every
   * Tether worker and replica can tell a new visit from the cookie alone.
   */
  readonly #window: number

  /** `warn` is told once when no secret is configured (a random per-process one is used). */
  constructor(cfg: AffinityConfig, random: (size: number) => Uint8Array = randomBytes, warn?: (message: string) => void) {
    this.#random = random
    let secrets = cfg.cookie.secret
    if (secrets === null) {
      secrets = [Buffer.from(random(32)).toString('base64url')]
      warn?.('affinity.cookie.secret is not set: cookies are signed with a random per-process secret, so other Tether replicas (and this one after a restart) will not recognise them; set it for production')
    }
    this.codec = new CookieCodec({ secrets, idleTimeout: cfg.idle_timeout, absoluteTimeout: cfg.absolute_timeout, randomBytes: random })
    const c = cfg.cookie
    this.#serialize = setCookieSerializer(c.name, { path: c.path, domain: c.domain, maxAge: c.max_age, secure: c.secure, httpOnly: c.http_only, sameSite: c.same_site })
    // a cookie Max-Age shorter than the idle timeout must be renewed sooner; a new visit (an
    // idle gap of min_idle) is told by the cookie's last-seen time, kept in whole seconds, so
    // fresh to half of min_idle (from 2 s: less could not be told at that precision anyway)
    const visits = [cfg.on_scale_up === 'gradual' ? cfg.rebalance.min_idle : null, cfg.spill?.min_idle ?? null]
      .filter((v): v is number => v !== null && v >= 2_000)
    this.#window = Math.min(cfg.idle_timeout, c.max_age ?? Infinity, ...visits.map((v) => v * 5))
  }

  /** A new random session id (32 hex digits): its hash places the new user. */
  newSessionId(): string {
    return Buffer.from(this.#random(16)).toString('hex')
  }

  /** The Set-Cookie line of a new session. */
  issue(sessionId: string, upstream: string, epoch: number, now: number): string {
    return this.#serialize(this.codec.encode({ sessionId, upstream, epoch, issuedAt: now, lastSeen: now }))
  }

  /** The Set-Cookie line moving session `s` to `upstream` at `epoch` (failover). */
  rebind(s: DecodedCookie, upstream: string, epoch: number, now: number): string {
    return this.#serialize(this.codec.refresh(s, now, { upstream, epoch }))
  }

  /** The Set-Cookie line sliding `s`'s idle clock, or null when it is fresh enough. */
  refresh(s: DecodedCookie, now: number): string | null {
    return shouldRefresh(s, now, this.#window) ? this.#serialize(this.codec.refresh(s, now)) : null
  }
}
