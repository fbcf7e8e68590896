// Builds the routing parts `affinity:` describes: the session table (written through to other
// replicas when shared), Tether's cookie issuer, the key reader and the router. Layer 5 wiring
// helper of the composition root: constructs, starts nothing.
import type { Config } from '../config/schema.js'
import { parseTrustedProxies, type TrustedProxies } from '../affinity/client-ip.js'
import { CookieIssuer } from '../affinity/cookie-issuer.js'
import { KeyReader, keyOptions, type KeyOptions } from '../affinity/key.js'
import { SessionTable, type BindingSink } from '../affinity/session-table.js'
import { SessionRecords } from '../affinity/session-records.js'
import { KeySlots } from '../affinity/key-slots.js'
import { Router, type Availability, type UpstreamLoad } from './router.js'

export interface Routing {
  readonly sessions: SessionTable
  /** Last answers, moves and orders per user (the session lookup, drains that migrate). */
  readonly records: SessionRecords
  readonly keys: KeyReader
  readonly router: Router
}

/**
 * `sink`: where pins are written through (shared affinity), or null; `load`: the in-flight
 * requests per upstream (`affinity.spill` reads them); `warn`: told when no cookie secret is set.
 */
export function createRouting(config: Config, health: Availability, sink: BindingSink | null, load: UpstreamLoad, warn: (message: string) => void): Routing {
  const a = config.affinity
  // one key index for both: a table-keyed user's key string and index entry are held once
  const slots = new KeySlots()
  const sessions = new SessionTable({ maxEntries: a.max_entries, idleTimeout: a.idle_timeout, absoluteTimeout: a.absolute_timeout, sink, slots })
  const records = new SessionRecords({ maxEntries: a.max_entries, idleTimeout: a.idle_timeout, secret: config.log.session_secret, slots, pins: sessions.table })
  const cookies = a.key === 'cookie' ? new CookieIssuer(a, undefined, warn) : null
  const trusted = parseTrustedProxies(a.client_ip.trusted_proxies)
  const keys = new KeyReader({ options: keyOptionsOf(config, cookies, trusted), fallback: a.app_cookie.fallback, trusted })
  return { sessions, records, keys, router: new Router(a, { sessions, cookies, availability: health, history: records, load }) }
}

/** How keys are read for `affinity.key` (null: round robin). */
function keyOptionsOf(config: Config, cookies: CookieIssuer | null, trusted: TrustedProxies): KeyOptions | null {
  const a = config.affinity
  switch (a.key) {
    case 'none': return null
    case 'cookie': return keyOptions({ kind: 'cookie', cookieName: a.cookie.name, codec: cookies!.codec })
    case 'app_cookie': return keyOptions({ kind: 'app_cookie', cookieName: a.app_cookie.name! })
    case 'client_ip': return keyOptions({ kind: 'client_ip', trusted })
    case 'header': return keyOptions({ kind: 'header', headerName: a.header.name! })
  }
}
