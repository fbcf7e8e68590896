// New request ids (X-Request-Id when the client sent none): random UUIDs (RFC 9562 version 4)
// made in batches, so one id costs one short string and nothing else. Layer 2: owns the batch
// (random bytes rendered to text once per 256 ids); no I/O.
import { randomFillSync } from 'node:crypto'

const BATCH = 256
const UUID_LENGTH = 36
const HEX = '0123456789abcdef'

/**
 * A source of request ids. crypto.randomUUID() builds each id from 20 concatenated pieces
 * (about 600 bytes of short-lived strings a request); this renders 256 ids' text from one
 * randomFillSync into one buffer, and each id is then a single 36-byte string sliced from it.
 *
 * Example: `const ids = new RequestIds(); ids.next()` -> '3b241101-e2bb-4255-8caf-4136c566a962'.
 */
export class RequestIds {
  readonly #random = Buffer.allocUnsafe(16 * BATCH)
  readonly #text = Buffer.allocUnsafe(UUID_LENGTH * BATCH)
  #next = BATCH

  /** A new random version-4 UUID, lower-case hex. */
  next(): string {
    if (this.#next === BATCH) this.#refill()
    const at = this.#next++ * UUID_LENGTH
    return this.#text.toString('latin1', at, at + UUID_LENGTH)
  }

  #refill(): void {
    const random = randomFillSync(this.#random)
    const text = this.#text
    for (let id = 0; id < BATCH; id++) {
      let r = id * 16
      let w = id * UUID_LENGTH
      for (let byte = 0; byte < 16; byte++, r++) {
        if (byte === 4 || byte === 6 || byte === 8 || byte === 10) text[w++] = 0x2d // 8-4-4-4-12
        let b = random[r]!
        if (byte === 6) b = (b & 0x0f) | 0x40 // version 4
        else if (byte === 8) b = (b & 0x3f) | 0x80 // variant 10xx
        text[w++] = HEX.charCodeAt(b >> 4)
        text[w++] = HEX.charCodeAt(b & 0x0f)
      }
    }
    this.#next = 0
  }
}
