// The request body as sent upstream: passes the client's bytes through, enforces
// `limits.max_body_bytes` on bodies of unknown length, and keeps the first bytes (up to the
// replay buffer) so a retry on another upstream can send the body again. Owns no sockets.
import type { IncomingMessage } from 'node:http'
import { Transform, type TransformCallback } from 'node:stream'
import { TetherError } from '../errors.js'

/**
 * One attempt's view of the request body. `replay()` gives the next attempt a fresh stream:
 * the bytes already taken from the client, then the rest as it arrives. Replay is possible
 * while everything taken so far fits in `replayLimit` bytes.
 *
 * Example: a 2 KiB PUT fails on app-0 at connect; `body.replay()` streams the same 2 KiB to app-1.
 */
export class RequestBody extends Transform {
  readonly #req: IncomingMessage
  readonly #maxBytes: number | null
  readonly #replayLimit: number
  #taken: Buffer[]
  #bytes: number
  #replayable: boolean

  constructor(req: IncomingMessage, maxBytes: number | null, replayLimit: number, taken: Buffer[] = [], bytes = 0) {
    super()
    this.#req = req
    this.#maxBytes = maxBytes
    this.#replayLimit = replayLimit
    this.#taken = taken
    this.#bytes = bytes
    this.#replayable = bytes <= replayLimit
  }

  /** Start pulling from the client (or from what an earlier attempt already took). */
  static of(req: IncomingMessage, maxBytes: number | null, replayLimit: number): RequestBody {
    const body = new RequestBody(req, maxBytes, replayLimit)
    req.pipe(body)
    req.once('error', (err) => body.destroy(err))
    return body
  }

  /** Bytes taken from the client so far. */
  get bytes(): number {
    return this.#bytes
  }

  /** Whether a retry can send this body again. */
  get replayable(): boolean {
    return this.#replayable
  }

  override _transform(chunk: Buffer, _enc: BufferEncoding, cb: TransformCallback): void {
    this.#bytes += chunk.length
    if (this.#maxBytes !== null && this.#bytes > this.#maxBytes) {
      cb(new TetherError('TETHER_BODY_TOO_LARGE'))
      return
    }
    if (this.#replayable) {
      if (this.#bytes <= this.#replayLimit) this.#taken.push(chunk)
      else {
        this.#replayable = false
        this.#taken = []
      }
    }
    cb(null, chunk)
  }

  /** A fresh body for the next attempt; call only when `replayable`. Detaches this one. */
  replay(): RequestBody {
    const req = this.#req
    req.unpipe(this)
    // chunks the client sent that this attempt never took in (still queued on our writable
    // side: the upstream refused before reading) come right after the ones taken
    const queued = ((this as unknown as { writableBuffer: { chunk: Buffer }[] }).writableBuffer ?? []).map((w) => w.chunk)
    const next = new RequestBody(req, this.#maxBytes, this.#replayLimit, [], 0)
    for (const chunk of this.#taken) next.write(chunk)
    for (const chunk of queued) next.write(chunk)
    if (req.readableEnded) next.end()
    else req.pipe(next)
    return next
  }
}
