// WebSocket framing as much as a proxy needs (RFC 6455 section 5): where frames begin and
// end in one direction, whether a close frame passed, and Tether's own close frame; and
// whether an upstream's 101 completes the handshake (section 4.1). Layer 1, pure: reads frame
// heads only (payloads are skipped, compressed or not), no I/O.
import { createHash } from 'node:crypto'

/** RFC 6455 close codes Tether sends. */
export const CLOSE_GOING_AWAY = 1001
export const CLOSE_SERVICE_RESTART = 1012

const EMPTY = Buffer.alloc(0)

/** RFC 6455 section 1.3: the GUID a server appends to the client's key before hashing it. */
const WEBSOCKET_GUID = '258EAFA5-E914-47DA-95CA-C5AB0DC85B11'

/**
 * The `Sec-WebSocket-Accept` a server answers to `key` (RFC 6455 section 4.2.2, item 5.4):
 * base64(SHA-1(key + GUID)). Example (section 1.3):
 * acceptOf('dGhlIHNhbXBsZSBub25jZQ==') -> 's3pPLMBiTxaQ9kYGzzhZRbK+xOo='.
 */
export function acceptOf(key: string): string {
  return createHash('sha1').update(key + WEBSOCKET_GUID, 'latin1').digest('base64')
}

/**
 * Does the head of a 101 complete the WebSocket handshake sent with `key` (its one
 * `Sec-WebSocket-Key`; null when it had none, or several)? As a client checks it (RFC 6455
 * section 4.1, items 2 and 4 of the client's checks): exactly one `Upgrade`, `websocket` in
 * any letter case, and exactly one `Sec-WebSocket-Accept`, the accept of `key`. Any other 101
 * is one no WebSocket client may use. Example: {upgrade: 'WebSocket', 'sec-websocket-accept':
 * acceptOf(k)} with k -> true; {upgrade: 'h2c', ...} -> false; a handshake without a key -> false.
 */
export function completesHandshake(headers: Readonly<Record<string, string | string[] | undefined>>, key: string | null): boolean {
  const upgrade = headers['upgrade']
  const accept = headers['sec-websocket-accept']
  return key !== null && typeof upgrade === 'string' && upgrade.trim().toLowerCase() === 'websocket' &&
    typeof accept === 'string' && accept.trim() === acceptOf(key)
}

/**
 * An unmasked server-to-client close frame (RFC 6455 section 5.5.1): FIN + opcode 8, payload
 * length 2, the status code big-endian. Example: closeFrame(1012) -> <88 02 03 f4>.
 */
export function closeFrame(code: number): Buffer {
  return Buffer.from([0x88, 0x02, (code >> 8) & 0xff, code & 0xff])
}

/**
 * Follows the frame structure of one direction of a WebSocket (RFC 6455 section 5.2) by
 * reading frame heads only (payloads are skipped, compressed or not), so Tether knows whether
 * a close frame was sent and whether a frame of its own can be inserted now.
 * Example: push(<81 02 68 69>) -> atBoundary true; push(<82 05 01>) -> atBoundary false.
 */
export class FrameTracker {
  /** A close frame has passed (or Tether sent one). */
  closeSeen = false
  /** Payload bytes of the current frame still to come. */
  #remaining = 0
  /** Bytes of a frame head split across chunks. */
  #partial: Buffer = EMPTY

  /** Between two frames: a frame written now would not split one. */
  get atBoundary(): boolean {
    return this.#remaining === 0 && this.#partial.length === 0
  }

  push(chunk: Buffer): void {
    if (this.closeSeen) return
    let buf = chunk
    let i = 0
    if (this.#partial.length > 0) {
      buf = Buffer.concat([this.#partial, chunk])
      this.#partial = EMPTY
    }
    while (i < buf.length) {
      if (this.#remaining > 0) {
        const skip = Math.min(this.#remaining, buf.length - i)
        this.#remaining -= skip
        i += skip
        continue
      }
      const left = buf.length - i
      if (left < 2) break
      const b1 = buf[i + 1]!
      const len7 = b1 & 0x7f
      const headLen = 2 + (len7 === 126 ? 2 : len7 === 127 ? 8 : 0) + (b1 & 0x80 ? 4 : 0)
      if (left < headLen) break
      if ((buf[i]! & 0x0f) === 0x8) {
        this.closeSeen = true
        return
      }
      this.#remaining = len7 === 126 ? buf.readUInt16BE(i + 2) : len7 === 127 ? Number(buf.readBigUInt64BE(i + 2)) : len7
      i += headLen
    }
    if (i < buf.length) this.#partial = Buffer.from(buf.subarray(i))
  }
}
