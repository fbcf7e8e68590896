// Tether's signed affinity cookie: binary layout, HMAC signing with rotating secrets, expiry
// and refresh rules, and Set-Cookie serialisation. Layer 1, pure: no I/O, no clock (callers
// pass `now`), randomness injectable. decode() never throws on client input. The cookie names
// an upstream by its configured id only, never by address.
import { createHmac, createSecretKey, hkdfSync, randomBytes, timingSafeEqual, type KeyObject } from 'node:crypto'

/*
 * Wire format, version 1 (all integers big-endian), then base64url without padding:
 *
 *   offset  size  field
 *   0       1     version = 1
 *   1       16    session id (random, 128 bits)
 *   17      4     epoch (uint32)
 *   21      4     issued-at, seconds since the Unix epoch (uint32)
 *   25      4     last-seen, seconds since the Unix epoch (uint32)
 *   29      1     n = byte length of the upstream id (1..255)
 *   30      n     upstream id, UTF-8
 *   30+n    16    MAC = HMAC-SHA256(key, bytes[0, 30+n)) truncated to 128 bits
 *
 * The MAC covers every byte before it, so changing the upstream id, epoch or a time breaks it.
 * The HMAC key is derived once per secret with HKDF-SHA256 (info "tether affinity cookie v1"),
 * so the configured secret is never used directly and a future format gets separate keys.
 * Example: upstream "app-0" -> 51 bytes -> a 68-character cookie value.
 */
const VERSION = 1
const HEADER = 30
const MAC_BYTES = 16
const SESSION_BYTES = 16
const MAX_ID_BYTES = 255
const MIN_BYTES = HEADER + 1 + MAC_BYTES
const MAX_BYTES = HEADER + MAX_ID_BYTES + MAC_BYTES
const MIN_CHARS = Math.ceil((MIN_BYTES * 4) / 3)
const MAX_CHARS = Math.ceil((MAX_BYTES * 4) / 3)
const BASE64URL = /^[A-Za-z0-9_-]+$/
const HEX32 = /^[0-9a-f]{32}$/
/** Entries per generation of the verified-cookie cache. */
const VERIFIED_CACHE = 8192
const UINT32_MAX = 0xffff_ffff

/** Shortest accepted secret, in UTF-8 bytes: shorter ones are open to offline guessing. */
export const MIN_SECRET_BYTES = 16

/** The fields a Tether affinity cookie carries. Times are ms since the epoch, whole seconds. */
export interface CookieFields {
  /** 32 lower-case hex characters (128 random bits); stable for the life of the session. */
  readonly sessionId: string
  /** The configured upstream id the session is bound to, e.g. `"app-0"` (1-255 UTF-8 bytes). */
  readonly upstream: string
  /** Binding generation (uint32), bumped on failover. */
  readonly epoch: number
  /** When the session was first issued (ms epoch; the cookie stores whole seconds). */
  readonly issuedAt: number
  /** When the cookie was last (re-)issued (ms epoch; the cookie stores whole seconds). */
  readonly lastSeen: number
}

/** A cookie that passed verification. */
export interface DecodedCookie extends CookieFields {
  /** Index of the secret that verified it: 0 is the signing secret; > 0 means "re-issue". */
  readonly secretIndex: number
}

/** The verdict on a well-formed, authentic cookie; expired ones keep their fields for logs. */
export interface CookieDecodeResult {
  readonly status: 'ok' | 'expired-idle' | 'expired-absolute'
  readonly cookie: DecodedCookie
}

export interface CookieCodecOptions {
  /** One secret, or several for rotation: the first signs, all verify. */
  readonly secrets: string | readonly string[]
  /** A cookie whose last-seen time is older than this (ms) is `expired-idle`. */
  readonly idleTimeout: number
  /** A cookie issued longer ago than this (ms) is `expired-absolute`; null/undefined: never. */
  readonly absoluteTimeout?: number | null
  /** Source of session ids (default `crypto.randomBytes`); inject a seeded one in tests. */
  readonly randomBytes?: (size: number) => Uint8Array
}

/**
 * Encodes, signs, verifies and decodes affinity cookies. Build one at config time; HMAC keys are
 * derived in the constructor, never per request. Throws a `TypeError` on bad options (no secret,
 * a secret shorter than {@link MIN_SECRET_BYTES}, a negative timeout).
 *
 * Example:
 * ```ts
 * const codec = new CookieCodec({ secrets: [newSecret, oldSecret], idleTimeout: 3 * 3_600_000 })
 * const { value } = codec.issue('app-0', 0, clock.now())     // -> "AX3k...", 68 chars
 * codec.decode(value, clock.now())  // -> { status: 'ok', cookie: { upstream: 'app-0', secretIndex: 0, ... } }
 * codec.decode('garbage', clock.now())  // -> null
 * ```
 */
export class CookieCodec {
  readonly #keys: readonly KeyObject[]
  readonly #idleTimeout: number
  readonly #absoluteTimeout: number | null
  readonly #random: (size: number) => Uint8Array
  // Cookies verified recently, by exact value: a returning user's requests skip the HMAC.
  // Two generations of at most VERIFIED_CACHE entries each bound the memory (~2 MB).
  #verified = new Map<string, DecodedCookie>()
  #verifiedOld = new Map<string, DecodedCookie>()

  constructor(options: CookieCodecOptions) {
    const secrets = typeof options.secrets === 'string' ? [options.secrets] : [...options.secrets]
    if (secrets.length === 0) throw new TypeError('affinity cookie: at least one secret is required')
    this.#keys = Object.freeze(
      secrets.map((secret, i) => {
        if (typeof secret !== 'string' || Buffer.byteLength(secret) < MIN_SECRET_BYTES) {
          throw new TypeError(`affinity cookie: secret #${i + 1} must be at least ${MIN_SECRET_BYTES} bytes long`)
        }
        const raw = hkdfSync('sha256', secret, 'tether', 'tether affinity cookie v1', 32)
        return createSecretKey(Buffer.from(raw))
      }),
    )
    if (!(options.idleTimeout > 0)) throw new TypeError('affinity cookie: idleTimeout must be > 0 ms')
    const absolute = options.absoluteTimeout ?? null
    if (absolute !== null && !(absolute > 0)) throw new TypeError('affinity cookie: absoluteTimeout must be > 0 ms')
    this.#idleTimeout = options.idleTimeout
    this.#absoluteTimeout = absolute
    this.#random = options.randomBytes ?? randomBytes
  }

  /**
   * Starts a new session bound to `upstream`: fresh session id, issued-at = last-seen = now.
   * Example: `codec.issue('app-1', 0, now).value` -> a cookie value to send with Set-Cookie.
   */
  issue(upstream: string, epoch: number, now: number): { value: string; cookie: DecodedCookie } {
    const id = this.#random(SESSION_BYTES)
    if (id.length !== SESSION_BYTES) throw new RangeError(`affinity cookie: randomBytes returned ${id.length} bytes, expected ${SESSION_BYTES}`)
    const fields: CookieFields = {
      sessionId: Buffer.from(id.buffer, id.byteOffset, SESSION_BYTES).toString('hex'),
      upstream,
      epoch,
      issuedAt: now,
      lastSeen: now,
    }
    const value = this.encode(fields)
    return { value, cookie: { ...quantize(fields), secretIndex: 0 } }
  }

  /**
   * Re-issues an existing session with last-seen = now, signed with the first secret; keeps the
   * session id and issued-at (so the absolute timeout still counts from the first visit).
   * Pass `rebind` to move the session to another upstream (failover) with a new epoch.
   * Example: `if (shouldRefresh(c, now, idle)) setCookie(codec.refresh(c, now))`.
   */
  refresh(cookie: CookieFields, now: number, rebind?: { upstream: string; epoch: number }): string {
    return this.encode({
      sessionId: cookie.sessionId,
      upstream: rebind?.upstream ?? cookie.upstream,
      epoch: rebind?.epoch ?? cookie.epoch,
      issuedAt: cookie.issuedAt,
      lastSeen: now,
    })
  }

  /**
   * Serialises and signs `fields` with the first secret. Times are floored to whole seconds.
   * Throws a `RangeError` on fields Tether itself got wrong (not client input): a session id
   * that is not 32 hex digits, an upstream id of 0 or more than 255 UTF-8 bytes, an epoch or
   * time outside uint32.
   */
  encode(fields: CookieFields): string {
    if (!HEX32.test(fields.sessionId)) throw new RangeError('affinity cookie: sessionId must be 32 lower-case hex digits')
    const idBytes = Buffer.byteLength(fields.upstream)
    if (idBytes < 1 || idBytes > MAX_ID_BYTES) {
      throw new RangeError(`affinity cookie: upstream id must be 1-${MAX_ID_BYTES} bytes, got ${idBytes}`)
    }
    const issued = Math.floor(fields.issuedAt / 1000)
    const seen = Math.floor(fields.lastSeen / 1000)
    for (const [name, v] of [['epoch', fields.epoch], ['issuedAt', issued], ['lastSeen', seen]] as const) {
      if (!Number.isInteger(v) || v < 0 || v > UINT32_MAX) throw new RangeError(`affinity cookie: ${name} out of uint32 range: ${v}`)
    }
    const buf = Buffer.allocUnsafe(HEADER + idBytes + MAC_BYTES)
    buf[0] = VERSION
    buf.write(fields.sessionId, 1, SESSION_BYTES, 'hex')
    buf.writeUInt32BE(fields.epoch, 17)
    buf.writeUInt32BE(issued, 21)
    buf.writeUInt32BE(seen, 25)
    buf[29] = idBytes
    buf.write(fields.upstream, HEADER, idBytes, 'utf8')
    const end = HEADER + idBytes
    createHmac('sha256', this.#keys[0]!).update(buf.subarray(0, end)).digest().copy(buf, end, 0, MAC_BYTES)
    return buf.toString('base64url')
  }

  /**
   * Verifies and decodes a cookie value from a client. Returns null for anything malformed,
   * of another version, or not signed by one of the secrets; never throws, whatever the input.
   * An authentic cookie is `expired-absolute` when now - issuedAt > absoluteTimeout, else
   * `expired-idle` when now - lastSeen > idleTimeout, else `ok`.
   * Cost: a length and alphabet check before any decoding, then one HMAC per secret tried;
   * a value verified recently (exact same string) is answered from a bounded cache instead.
   */
  decode(value: string, now: number): CookieDecodeResult | null {
    const cookie = this.#verified.get(value) ?? this.#promote(value) ?? this.#verify(value)
    if (cookie === null) return null
    return { status: this.#status(cookie, now), cookie }
  }

  /**
   * The verified cookie when `decode` would say `ok`, else null (invalid or expired): the
   * request path's per-request read, without a result object.
   * Example: `codec.valid(codec.issue('app-1', 0, now).value, now)` -> `{ upstream: 'app-1', ... }`.
   */
  valid(value: string, now: number): DecodedCookie | null {
    const cookie = this.#verified.get(value) ?? this.#promote(value) ?? this.#verify(value)
    return cookie !== null && this.#status(cookie, now) === 'ok' ? cookie : null
  }

  #status(cookie: DecodedCookie, now: number): CookieDecodeResult['status'] {
    if (this.#absoluteTimeout !== null && now - cookie.issuedAt > this.#absoluteTimeout) return 'expired-absolute'
    if (now - cookie.lastSeen > this.#idleTimeout) return 'expired-idle'
    return 'ok'
  }

  /** An entry of the older cache generation, moved to the young one; undefined if absent. */
  #promote(value: string): DecodedCookie | undefined {
    const cookie = this.#verifiedOld.get(value)
    if (cookie !== undefined) this.#remember(value, cookie)
    return cookie
  }

  #remember(value: string, cookie: DecodedCookie): void {
    if (this.#verified.size >= VERIFIED_CACHE) {
      this.#verifiedOld = this.#verified
      this.#verified = new Map()
    }
    this.#verified.set(value, cookie)
  }

  /** Full check of a value not seen recently: format, canonical spelling, MAC. */
  #verify(value: string): DecodedCookie | null {
    if (typeof value !== 'string' || value.length < MIN_CHARS || value.length > MAX_CHARS || !BASE64URL.test(value)) {
      return null
    }
    const buf = Buffer.from(value, 'base64url')
    if (!isCanonicalBase64url(value, buf.length) || buf.length < MIN_BYTES || buf[0] !== VERSION) return null
    const idBytes = buf[29]!
    const end = HEADER + idBytes
    if (idBytes === 0 || buf.length !== end + MAC_BYTES) return null
    const signed = buf.subarray(0, end)
    const mac = buf.subarray(end)
    let secretIndex = -1
    for (let i = 0; i < this.#keys.length; i++) {
      const expected = createHmac('sha256', this.#keys[i]!).update(signed).digest().subarray(0, MAC_BYTES)
      if (timingSafeEqual(expected, mac)) {
        secretIndex = i
        break
      }
    }
    if (secretIndex === -1) return null
    const cookie: DecodedCookie = Object.freeze({
      sessionId: buf.toString('hex', 1, 1 + SESSION_BYTES),
      upstream: buf.toString('utf8', HEADER, end),
      epoch: buf.readUInt32BE(17),
      issuedAt: buf.readUInt32BE(21) * 1000,
      lastSeen: buf.readUInt32BE(25) * 1000,
      secretIndex,
    })
    this.#remember(value, cookie)
    return cookie
  }
}

/**
 * True when `value` is the one canonical unpadded base64url spelling of `bytes` bytes: no
 * stray trailing character (which Buffer.from ignores) and zero unused bits in the last one.
 * So each cookie has exactly one accepted spelling.
 */
function isCanonicalBase64url(value: string, bytes: number): boolean {
  if (value.length !== Math.floor((bytes * 4 + 2) / 3)) return false
  const rem = bytes % 3
  if (rem === 0) return true
  const c = value.charCodeAt(value.length - 1)
  const sextet =
    c >= 0x41 && c <= 0x5a ? c - 0x41 : c >= 0x61 && c <= 0x7a ? c - 0x61 + 26 : c >= 0x30 && c <= 0x39 ? c - 0x30 + 52 : c === 0x2d ? 62 : 63
  return (sextet & (rem === 1 ? 0x0f : 0x03)) === 0
}

function quantize(fields: CookieFields): CookieFields {
  return {
    ...fields,
    issuedAt: Math.floor(fields.issuedAt / 1000) * 1000,
    lastSeen: Math.floor(fields.lastSeen / 1000) * 1000,
  }
}

/**
 * Whether a valid cookie should be re-issued on this response: when its last-seen time is
 * older than idleTimeout / 10, or when it was verified by an old secret (secretIndex > 0).
 * This keeps idle expiry sliding, enforced by the cookie alone (no shared state), while
 * re-issuing at most about once per idleTimeout / 10 per client instead of on every request.
 *
 * Example, idleTimeout = 3h: last seen 10 min ago -> false; 19 min ago -> true (> 18 min).
 */
export function shouldRefresh(decoded: DecodedCookie, now: number, idleTimeout: number): boolean {
  return decoded.secretIndex > 0 || now - decoded.lastSeen > idleTimeout / 10
}

export type SameSite = 'Strict' | 'Lax' | 'None'

/** Set-Cookie attributes. Null or undefined leaves an attribute out. */
export interface SetCookieAttributes {
  readonly path?: string | null
  readonly domain?: string | null
  /** Lifetime in ms (floored to whole seconds for Max-Age, at least 1 s when > 0: 0 deletes); null: a browser-session cookie. */
  readonly maxAge?: number | null
  readonly secure?: boolean
  readonly httpOnly?: boolean
  readonly sameSite?: SameSite | null
}

const TOKEN = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/ // RFC 9110 token (cookie-name)
const COOKIE_VALUE = /^(?:"[\x21\x23-\x2B\x2D-\x3A\x3C-\x5B\x5D-\x7E]*"|[\x21\x23-\x2B\x2D-\x3A\x3C-\x5B\x5D-\x7E]*)$/ // RFC 6265 cookie-value
const PATH = /^\/[\x20-\x3A\x3C-\x7E]*$/ // av-octet minus ";", starting with "/"
const DOMAIN = /^\.?[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*$/

/**
 * Validates a cookie name and attributes once and returns a function that builds the
 * Set-Cookie header value for a cookie value. Throws a `TypeError` on invalid settings:
 * a name that is not a token, a bad Path or Domain, a negative Max-Age, an unknown SameSite,
 * `SameSite=None` without Secure, `__Secure-` without Secure, `__Host-` without Secure,
 * with a Domain or with a Path other than `/`.
 *
 * Example: `setCookieSerializer('tether', { path: '/', secure: true, httpOnly: true, sameSite: 'Lax' })('v1')`
 * -> `"tether=v1; Path=/; Secure; HttpOnly; SameSite=Lax"`.
 */
export function setCookieSerializer(name: string, attrs: SetCookieAttributes): (value: string) => string {
  if (!TOKEN.test(name)) throw new TypeError(`cookie name ${JSON.stringify(name)} is not a valid token`)
  let suffix = ''
  const path = attrs.path ?? null
  if (path !== null) {
    if (!PATH.test(path)) throw new TypeError(`cookie path ${JSON.stringify(path)} must start with "/" and contain no ";" or control characters`)
    suffix += `; Path=${path}`
  }
  const domain = attrs.domain ?? null
  if (domain !== null) {
    if (!DOMAIN.test(domain)) throw new TypeError(`cookie domain ${JSON.stringify(domain)} is not a valid domain name`)
    suffix += `; Domain=${domain}`
  }
  const maxAge = attrs.maxAge ?? null
  if (maxAge !== null) {
    if (!(maxAge >= 0) || !Number.isFinite(maxAge)) throw new TypeError(`cookie max_age must be >= 0, got ${maxAge}`)
    // a lifetime under a second is sent as 1 s: Max-Age=0 would delete the cookie at once
    suffix += `; Max-Age=${maxAge > 0 ? Math.max(1, Math.floor(maxAge / 1000)) : 0}`
  }
  const secure = attrs.secure === true
  if (secure) suffix += '; Secure'
  if (attrs.httpOnly === true) suffix += '; HttpOnly'
  const sameSite = attrs.sameSite ?? null
  if (sameSite !== null) {
    if (sameSite !== 'Strict' && sameSite !== 'Lax' && sameSite !== 'None') {
      throw new TypeError(`cookie same_site must be Strict, Lax or None, got ${JSON.stringify(sameSite)}`)
    }
    if (sameSite === 'None' && !secure) throw new TypeError('cookie same_site None requires secure: true')
    suffix += `; SameSite=${sameSite}`
  }
  if ((name.startsWith('__Secure-') || name.startsWith('__Host-')) && !secure) {
    throw new TypeError(`cookie name ${JSON.stringify(name)} requires secure: true`)
  }
  if (name.startsWith('__Host-') && (domain !== null || path !== '/')) {
    throw new TypeError(`cookie name ${JSON.stringify(name)} requires path "/" and no domain`)
  }
  const prefix = `${name}=`
  return (value: string): string => {
    if (!COOKIE_VALUE.test(value)) throw new TypeError('cookie value contains characters not allowed in a cookie')
    return prefix + value + suffix
  }
}

/**
 * One-off form of {@link setCookieSerializer}; prefer the serializer on the request path.
 * Example: `serializeSetCookie('tether', 'v1', { sameSite: 'None', secure: true })`
 * -> `"tether=v1; Secure; SameSite=None"`.
 */
export function serializeSetCookie(name: string, value: string, attrs: SetCookieAttributes): string {
  return setCookieSerializer(name, attrs)(value)
}
