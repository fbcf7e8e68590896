// Affinity key extraction: reads the key (Tether cookie, application cookie, client IP or a
// header) from request headers. Layer 1, pure: no I/O, no clock of its own, never mutates the
// headers, never decides placement or issues cookies (it only reports what it found).
// Every extraction is O(header length) and allocates only the returned value.
import type { IncomingHttpHeaders } from 'node:http'
import type { CookieCodec, DecodedCookie } from './cookie-codec.js'
import { clientIp, type TrustedProxies } from './client-ip.js'

/** Longest app-cookie or header value accepted as a key; longer ones count as absent. */
export const DEFAULT_MAX_KEY_LENGTH = 1024

/**
 * Later cookies of Tether's name verified when the first does not (a browser holds one a
 * (Domain, Path) pair: a few after a settings change). Each costs an HMAC a secret, so a
 * Cookie header stuffed with ~230 forged ones (16 KB) is not 230 HMACs a request.
 */
export const MAX_COOKIE_DUPLICATES = 4

/** How to extract the key, prepared once from config by {@link keyOptions}. */
export type KeyOptions =
  | { readonly kind: 'cookie'; readonly cookieName: string; readonly codec: CookieCodec }
  | { readonly kind: 'app_cookie'; readonly cookieName: string; readonly maxKeyLength: number }
  | { readonly kind: 'client_ip'; readonly trusted: TrustedProxies }
  | { readonly kind: 'header'; readonly headerName: string; readonly maxKeyLength: number }

/** What a request carries, per key kind. Null means "absent": the caller falls back. */
export type AffinityKey =
  | {
      readonly kind: 'cookie'
      /** The verified cookie (also when expired, for logs); null when absent or invalid. */
      readonly session: DecodedCookie | null
      readonly status: 'ok' | 'absent' | 'invalid' | 'expired-idle' | 'expired-absolute'
    }
  | { readonly kind: 'app_cookie'; readonly value: string | null }
  | { readonly kind: 'client_ip'; readonly value: string }
  | { readonly kind: 'header'; readonly value: string | null }

/** Config-shaped input to {@link keyOptions}. */
export type KeyConfig =
  | { readonly kind: 'cookie'; readonly cookieName: string; readonly codec: CookieCodec }
  | { readonly kind: 'app_cookie'; readonly cookieName: string; readonly maxKeyLength?: number }
  | { readonly kind: 'client_ip'; readonly trusted: TrustedProxies }
  | { readonly kind: 'header'; readonly headerName: string; readonly maxKeyLength?: number }

/**
 * Prepares extraction options once: lower-cases the header name (Node's header keys are
 * lower case) and fills in the key length limit. Returns a frozen object.
 * Example: `keyOptions({ kind: 'header', headerName: 'X-Tenant' })` -> `{ kind: 'header', headerName: 'x-tenant', maxKeyLength: 1024 }`.
 */
export function keyOptions(config: KeyConfig): KeyOptions {
  switch (config.kind) {
    case 'cookie':
    case 'client_ip':
      return Object.freeze({ ...config })
    case 'app_cookie':
      return Object.freeze({ ...config, maxKeyLength: config.maxKeyLength ?? DEFAULT_MAX_KEY_LENGTH })
    case 'header':
      return Object.freeze({
        kind: 'header',
        headerName: config.headerName.toLowerCase(),
        maxKeyLength: config.maxKeyLength ?? DEFAULT_MAX_KEY_LENGTH,
      })
  }
}

/**
 * Extracts the affinity key of a request.
 *
 * - `cookie`: finds the Tether cookie and decodes it with `now` (status `absent` when there is
 *   no such cookie or it is empty, `invalid` when it fails verification, else the codec's
 *   verdict); when the first one of that name does not verify (or is empty), a later one that
 *   does is taken.
 * - `app_cookie`: the application's cookie value, or null when absent, empty or too long.
 * - `client_ip`: see {@link clientIp} (X-Forwarded-For is used only from trusted peers).
 * - `header`: the header value, trimmed (Node joins repeated lines with ", " into one value,
 *   as nginx 1.23+ does for `$http_<name>`, but keeps the first line of a field defined as one
 *   value, such as Authorization or User-Agent; an h2 request's headers read the same, see
 *   http1Head in proxy/h2-messages.ts); null when absent, empty or too long.
 *
 * Example: `extractAffinityKey({ cookie: 'a=1; tether=AX3k...' }, '10.0.0.5', opts, now)`
 * -> `{ kind: 'cookie', status: 'ok', session: { upstream: 'app-0', ... } }`.
 */
export function extractAffinityKey(
  headers: IncomingHttpHeaders,
  peer: string,
  options: KeyOptions,
  now: number,
): AffinityKey {
  switch (options.kind) {
    case 'cookie': {
      const raw = findCookie(headers.cookie, options.cookieName)
      if (raw === null) return { kind: 'cookie', session: null, status: 'absent' }
      let decoded = raw === '' ? null : options.codec.decode(raw, now)
      if (decoded === null || decoded.status !== 'ok') {
        // a browser may hold two cookies of that name (after a Path or Domain change): any
        // later one that verifies wins over a stale or empty first one (slow path, rare)
        for (const other of laterCookies(headers.cookie, options.cookieName)) {
          const d = options.codec.decode(other, now)
          if (d !== null && d.status === 'ok') {
            decoded = d
            break
          }
        }
      }
      if (decoded === null) return { kind: 'cookie', session: null, status: raw === '' ? 'absent' : 'invalid' }
      return { kind: 'cookie', session: decoded.cookie, status: decoded.status }
    }
    case 'app_cookie': {
      const raw = findCookie(headers.cookie, options.cookieName)
      const value = raw === null || raw === '' || raw.length > options.maxKeyLength ? null : raw
      return { kind: 'app_cookie', value }
    }
    case 'client_ip':
      return { kind: 'client_ip', value: clientIp(peer, headers['x-forwarded-for'], options.trusted) }
    case 'header': {
      const h = headers[options.headerName]
      const first = Array.isArray(h) ? h[0] : h
      const value = first === undefined ? '' : first.trim()
      return { kind: 'header', value: value === '' || value.length > options.maxKeyLength ? null : value }
    }
  }
}

/**
 * Finds one cookie by (case-sensitive) name in a Cookie header without building a map, in one
 * left-to-right pass. Handles several Cookie headers (an array, or Node's "; "-joined string),
 * whitespace around names and values, pairs without "=", and double-quoted values (quotes are
 * removed). The first occurrence wins. Returns null when the cookie is not there.
 *
 * Example: `findCookie('a=1;  tether="xyz" ; tether=2', 'tether')` -> `'xyz'`.
 */
export function findCookie(header: string | string[] | undefined, name: string): string | null {
  if (header === undefined) return null
  if (typeof header !== 'string') {
    for (const h of header) {
      const v = findCookie(h, name)
      if (v !== null) return v
    }
    return null
  }
  const n = header.length
  let i = 0
  let eq = -1 // cached position of the next "=" at or after i; n when there is none
  while (i < n) {
    let semi = header.indexOf(';', i)
    if (semi === -1) semi = n
    if (eq < i) {
      eq = header.indexOf('=', i)
      if (eq === -1) eq = n
    }
    if (eq < semi) {
      let ks = i
      let ke = eq
      while (ks < ke && isSpace(header.charCodeAt(ks))) ks++
      while (ke > ks && isSpace(header.charCodeAt(ke - 1))) ke--
      if (ke - ks === name.length && header.startsWith(name, ks)) {
        let vs = eq + 1
        let ve = semi
        while (vs < ve && isSpace(header.charCodeAt(vs))) vs++
        while (ve > vs && isSpace(header.charCodeAt(ve - 1))) ve--
        if (ve - vs >= 2 && header.charCodeAt(vs) === 0x22 && header.charCodeAt(ve - 1) === 0x22) {
          vs++
          ve--
        }
        return header.slice(vs, ve)
      }
    }
    i = semi + 1
  }
  return null
}

function isSpace(c: number): boolean {
  return c === 0x20 || c === 0x09
}

/**
 * The session of a request's Tether cookie when one verifies and has not expired, else null:
 * what {@link extractAffinityKey} gives as `session` with status `ok` (a later cookie of that
 * name that verifies, of the next {@link MAX_COOKIE_DUPLICATES}, wins over a first one that does not), without its result objects.
 * Example: `cookieSession('a=1; tether=AX3k...', opts, now)` -> `{ upstream: 'app-0', ... }`.
 */
export function cookieSession(header: string | string[] | undefined, options: { readonly cookieName: string; readonly codec: CookieCodec }, now: number): DecodedCookie | null {
  const raw = findCookie(header, options.cookieName)
  if (raw === null) return null
  const first = raw === '' ? null : options.codec.valid(raw, now)
  if (first !== null) return first
  // a browser may hold two cookies of that name (slow path, rare; see extractAffinityKey)
  for (const other of laterCookies(header, options.cookieName)) {
    const c = options.codec.valid(other, now)
    if (c !== null) return c
  }
  return null
}

/**
 * The values of cookie `name` after the first, in order, at most {@link MAX_COOKIE_DUPLICATES}
 * of them (for the rare case of duplicates; the rest are never verified).
 */
function laterCookies(header: string | string[] | undefined, name: string): string[] {
  if (header === undefined) return []
  const out: string[] = []
  let first = true
  for (const h of Array.isArray(header) ? header : [header]) {
    for (const pair of h.split(';')) {
      const eq = pair.indexOf('=')
      if (eq === -1 || pair.slice(0, eq).trim() !== name) continue
      if (first) {
        first = false
        continue
      }
      let v = pair.slice(eq + 1).trim()
      if (v.length >= 2 && v.startsWith('"') && v.endsWith('"')) v = v.slice(1, -1)
      out.push(v)
      if (out.length === MAX_COOKIE_DUPLICATES) return out
    }
  }
  return out
}

/**
 * The key of one request as routing uses it, read once per request:
 * - `none`: placed round robin (`key: none`, an absent header, or an absent application cookie
 *   with `fallback: random`); `learn`: an application cookie set by the answer is bound.
 * - `cookie`: Tether's verified cookie, or null for a new session (absent, invalid, expired).
 * - `table`: a value pinned in the affinity table. `learned` values (application cookies)
 *   are bound only by what an upstream set, never by their hash; `checkpoints` says whether the
 *   value may key a user's checkpoints (not an IP standing in for an absent cookie: users
 *   behind one address share it).
 */
export type RequestKey =
  | { readonly kind: 'none'; readonly learn: boolean }
  | { readonly kind: 'cookie'; readonly session: DecodedCookie | null }
  | { readonly kind: 'table'; readonly value: string; readonly learned: boolean; readonly checkpoints: boolean; readonly learn: boolean }

const ROUND_ROBIN: RequestKey = Object.freeze({ kind: 'none', learn: false })
const ROUND_ROBIN_LEARN: RequestKey = Object.freeze({ kind: 'none', learn: true })
const NEW_SESSION: RequestKey = Object.freeze({ kind: 'cookie', session: null })

/** What {@link KeyReader} needs from the affinity config. */
export interface KeyReaderConfig {
  readonly options: KeyOptions | null
  /** app_cookie: how a request without the cookie is placed. */
  readonly fallback: 'client_ip' | 'random'
  /** Who may name the client in X-Forwarded-For (for the client_ip fallback). */
  readonly trusted: TrustedProxies
}

/**
 * Reads a request's {@link RequestKey} (pure apart from the codec's verified-cookie cache).
 * Example: with `key: app_cookie` on PHPSESSID, `read({ cookie: 'PHPSESSID=abc' }, peer, now)`
 * -> `{ kind: 'table', value: 'abc', learned: true, checkpoints: true, learn: true }`.
 */
export class KeyReader {
  readonly #cfg: KeyReaderConfig

  constructor(cfg: KeyReaderConfig) {
    this.#cfg = cfg
  }

  read(headers: IncomingHttpHeaders, peer: string, now: number): RequestKey {
    const opts = this.#cfg.options
    if (opts === null) return ROUND_ROBIN
    // Tether's cookie, the common case: one object a request (see cookieSession)
    if (opts.kind === 'cookie') {
      const session = cookieSession(headers.cookie, opts, now)
      return session === null ? NEW_SESSION : { kind: 'cookie', session }
    }
    const key = extractAffinityKey(headers, peer, opts, now)
    switch (key.kind) {
      case 'cookie':
        return key.status === 'ok' ? { kind: 'cookie', session: key.session } : NEW_SESSION
      case 'app_cookie':
        if (key.value !== null) return { kind: 'table', value: key.value, learned: true, checkpoints: true, learn: true }
        if (this.#cfg.fallback === 'client_ip') {
          return { kind: 'table', value: this.clientIp(headers, peer), learned: false, checkpoints: false, learn: true }
        }
        return ROUND_ROBIN_LEARN
      case 'client_ip':
        return { kind: 'table', value: key.value, learned: false, checkpoints: true, learn: false }
      case 'header':
        return key.value === null ? ROUND_ROBIN : { kind: 'table', value: key.value, learned: false, checkpoints: true, learn: false }
    }
  }

  /** The client address (X-Forwarded-For only from trusted peers). */
  clientIp(headers: IncomingHttpHeaders, peer: string): string {
    return clientIp(peer, headers['x-forwarded-for'], this.#cfg.trusted)
  }
}
