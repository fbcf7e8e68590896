// How a user's session is named outside Tether (the access log's `session` field, the admin
// session lookup): Tether's own session id as it is, any other key (a client IP, an application
// cookie, a header value: personal data or credentials) only as a keyed hash. Layer 1, pure:
// an HMAC of its input under the secret it was given; no I/O, no state.
import { createHmac, randomBytes } from 'node:crypto'
import type { RequestKey } from './key.js'

/** Prefix of a hashed key's logged form; Tether's session ids (32 hex digits) never contain `:`. */
export const HASHED_PREFIX = 'h:'

/**
 * Names sessions for logs and lookups.
 * - `cookie` key: the session id inside Tether's signed cookie (random, not a credential on
 *   its own: the cookie is signed), logged as it is.
 * - `table` key: `h:` + the first 16 bytes of HMAC-SHA256(secret, value) in hex.
 * - `none`: no session.
 *
 * Example: `new SessionIds('0123456789abcdef-log').logged({ kind: 'table', value: '10.0.0.5', ... })`
 * -> `'h:5c1f...'` (34 characters), the same on every replica with that secret.
 */
export class SessionIds {
  readonly #secret: Buffer

  /** `secret`: `log.session_secret`; null: 32 random bytes (the logged forms then differ per process). */
  constructor(secret: string | null) {
    this.#secret = secret === null ? randomBytes(32) : Buffer.from(secret, 'utf8')
  }

  /** The logged form of a request's key, or null when it has no session. */
  logged(key: RequestKey): string | null {
    switch (key.kind) {
      case 'none': return null
      case 'cookie': return key.session?.sessionId ?? null
      case 'table': return this.hash(key.value)
    }
  }

  /** The logged form of a table key's value. */
  hash(value: string): string {
    // hex of the first 16 bytes, not a slice of the full hex (a slice keeps its 64-character parent alive)
    return HASHED_PREFIX + this.digest(value).toString('hex', 0, 16)
  }

  /** The whole keyed hash of a table key's value (32 bytes); its first 16 are the logged form's. */
  digest(value: string): Buffer {
    return createHmac('sha256', this.#secret).update(value, 'utf8').digest()
  }
}
