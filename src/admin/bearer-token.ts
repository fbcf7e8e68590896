// Checks an admin request's `Authorization: Bearer <token>` against `admin.token` (RFC 6750).
// Compares SHA-256 digests in constant time, so neither the token nor its length leaks
// through timing. Never throws, never logs the presented credentials.
import { createHash, timingSafeEqual } from 'node:crypto'
import type { Config } from '../config/schema.js'
import type { Logger } from '../observability/logger.js'

/**
 * The verdict on a request's credentials: `ok`; `missing` (no Authorization header);
 * `malformed` (not `Bearer <token>`); `wrong` (another token); `ambiguous` (more than one
 * Authorization header: which one a proxy in front would have checked is unknown).
 */
export type BearerVerdict = 'ok' | 'missing' | 'malformed' | 'wrong' | 'ambiguous'

/**
 * A configured admin token.
 * - The scheme is case-insensitive (`bearer` works, RFC 9110 section 11.1), separated from
 *   the token by one or more spaces; the token is compared byte for byte.
 * - Duplicates are judged from the raw header list, because Node keeps only the first
 *   Authorization header in `req.headers`.
 *
 * Example:
 * ```ts
 * const token = new BearerToken('s3cret')
 * token.check(['Authorization', 'Bearer s3cret'])  // -> 'ok'
 * token.check(['authorization', 'Basic czNjcmV0'])  // -> 'malformed'
 * ```
 */
export class BearerToken {
  readonly #digest: Buffer

  constructor(token: string) {
    this.#digest = digest(Buffer.from(token, 'utf8'))
  }

  /** Judges the credentials in `rawHeaders` (Node's `req.rawHeaders`: name, value, ...). */
  check(rawHeaders: readonly string[]): BearerVerdict {
    let value: string | null = null
    for (let i = 0; i + 1 < rawHeaders.length; i += 2) {
      if (rawHeaders[i]!.toLowerCase() !== 'authorization') continue
      if (value !== null) return 'ambiguous'
      value = rawHeaders[i + 1]!
    }
    if (value === null) return 'missing'
    // only HTTP's spaces (SP, HTAB) around the value: String#trim would also cut U+00A0, the
    // byte 0xA0 that ends a UTF-8 token (`à` is C3 A0) as Node reads it
    const m = /^bearer +([^ ].*)$/is.exec(value.replace(/^[ \t]+|[ \t]+$/g, ''))
    if (m === null) return 'malformed'
    // Node reads header bytes as latin1: back to the bytes the client sent (UTF-8 for a non-ASCII token)
    return timingSafeEqual(digest(Buffer.from(m[1]!, 'latin1')), this.#digest) ? 'ok' : 'wrong'
  }
}

function digest(bytes: Buffer): Buffer {
  return createHash('sha256').update(bytes).digest()
}

/**
 * A tokenless admin listener is for loopback; elsewhere anyone who reaches it can drain
 * upstreams and move users: one warning at start (the process that owns the admin listener:
 * the primary with workers). Example: `warnOpenAdmin(config, logger)`.
 */
export function warnOpenAdmin(config: Pick<Config, 'admin'>, logger: Pick<Logger, 'warn'>): void {
  const host = config.admin.listen.host
  if (config.admin.token !== null || /^(127\.\d{1,3}\.\d{1,3}\.\d{1,3}|::1|localhost)$/i.test(host)) return
  logger.warn({ host }, `admin.token is not set and admin.listen.host (${host}) is not loopback: every admin route (drain, sessions, upstreams) is open to anyone who reaches that address; set admin.token`)
}
