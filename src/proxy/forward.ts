// Forwarding: the only file that imports undici. One keep-alive Pool per upstream; the
// request body and the response body are streamed both ways with backpressure, never
// buffered whole. A client abort cancels the upstream request; an upstream abort after the
// response started ends the client connection. Does not decide where to send a request.
import type { IncomingMessage, ServerResponse } from 'node:http'
import { Transform, type TransformCallback } from 'node:stream'
import { Pool, type Dispatcher } from 'undici'
import { TetherError } from '../errors.js'
import { classify, type Outcome } from './outcome.js'
import { clientResponseHeaders } from './headers.js'
import { sendError } from './respond.js'

export interface PoolTimeouts {
  /** TCP connect timeout, ms. */
  readonly connect: number
  /** Request sent -> response headers received, ms. */
  readonly responseHeaders: number
  /** Max silence between response body chunks, ms (0 = none). */
  readonly bodyIdle: number
}

/** What one forwarded exchange produced, for the access log and later retry logic. */
export interface ForwardResult {
  /** Status sent to the client (0 if nothing was sent). */
  status: number
  /** null when the upstream answered; otherwise how it failed. */
  outcome: Outcome | null
  /** Cause of a failure, for logs. */
  error: unknown
}

export type ForwardDone = (result: ForwardResult) => void

/** Adds what a routing decision needs to an upstream response's headers (cookies, debug). */
export interface ResponseDecoration {
  decorate(headers: Record<string, string | string[] | undefined>): void
}

/** Owns the undici pools, keyed by upstream id. */
export class Forwarder {
  readonly #pools = new Map<string, Pool>()
  readonly #urls = new Map<string, string>()
  readonly #timeouts: PoolTimeouts

  constructor(upstreams: readonly { id: string; url: string }[], timeouts: PoolTimeouts) {
    this.#timeouts = timeouts
    this.setUpstreams(upstreams)
  }

  /**
   * Make the pools match `upstreams`: new ids (or a changed url) get a pool, removed ones are
   * closed gracefully (their in-flight requests finish). Pools of unchanged upstreams stay.
   */
  setUpstreams(upstreams: readonly { id: string; url: string }[]): void {
    const wanted = new Map(upstreams.map((u) => [u.id, u.url]))
    for (const [id, pool] of this.#pools) {
      if (this.#urls.get(id) === wanted.get(id)) continue
      this.#pools.delete(id)
      this.#urls.delete(id)
      pool.close().catch(() => undefined)
    }
    for (const [id, url] of wanted) {
      if (this.#pools.has(id)) continue
      this.#pools.set(id, this.#newPool(url))
      this.#urls.set(id, url)
    }
  }

  #newPool(origin: string): Pool {
    return new Pool(origin, {
      connect: { timeout: this.#timeouts.connect, noDelay: true },
      headersTimeout: this.#timeouts.responseHeaders,
      bodyTimeout: this.#timeouts.bodyIdle,
      keepAliveTimeout: 4_000,
      keepAliveMaxTimeout: 60_000,
      pipelining: 1,
    })
  }

  /**
   * Send `req` to the upstream `id` with `headers` ([name, value, ...]) and stream the answer
   * into `res`. `maxBodyBytes` caps a body of unknown length (chunked); a declared
   * Content-Length is checked by the caller. `done` is called exactly once.
   */
  forward(
    id: string,
    req: IncomingMessage,
    res: ServerResponse,
    headers: string[],
    maxBodyBytes: number | null,
    decoration: ResponseDecoration | null,
    done: ForwardDone,
  ): void {
    const pool = this.#pools.get(id)
    if (pool === undefined) {
      done({ status: sendError(res, 'TETHER_NO_UPSTREAM'), outcome: { kind: 'error', code: 'TETHER_NO_UPSTREAM', connect: true }, error: null })
      return
    }
    const handler = new ExchangeHandler(req, res, decoration, done)
    let body: IncomingMessage | Transform | null = null
    if (hasBody(req)) {
      body = req
      if (maxBodyBytes !== null && req.headers['content-length'] === undefined) {
        body = new BodyLimit(maxBodyBytes)
        req.pipe(body)
        req.once('error', (err) => (body as Transform).destroy(err))
      }
    }
    pool.dispatch(
      { path: req.url ?? '/', method: req.method ?? 'GET', headers, body },
      handler,
    )
  }

  /** Stop accepting work; in-flight exchanges finish. */
  async close(): Promise<void> {
    await Promise.all([...this.#pools.values()].map((p) => p.close().catch(() => undefined)))
  }

  /** Abort everything still open. */
  async destroy(): Promise<void> {
    await Promise.all([...this.#pools.values()].map((p) => p.destroy().catch(() => undefined)))
  }
}

function hasBody(req: IncomingMessage): boolean {
  const cl = req.headers['content-length']
  if (cl !== undefined) return cl !== '0'
  return req.headers['transfer-encoding'] !== undefined
}

/** Passes a body of unknown length through, failing once it exceeds `max` bytes. */
class BodyLimit extends Transform {
  #left: number
  constructor(max: number) {
    super()
    this.#left = max
  }
  override _transform(chunk: Buffer, _enc: BufferEncoding, cb: TransformCallback): void {
    this.#left -= chunk.length
    if (this.#left < 0) cb(new TetherError('TETHER_BODY_TOO_LARGE'))
    else cb(null, chunk)
  }
}

/** undici dispatch handler for one exchange: upstream response -> client response. */
class ExchangeHandler implements Dispatcher.DispatchHandler {
  readonly #req: IncomingMessage
  readonly #res: ServerResponse
  readonly #done: ForwardDone
  readonly #decoration: ResponseDecoration | null
  #controller: Dispatcher.DispatchController | null = null
  #clientGone = false
  #finished = false
  #waitingDrain = false

  constructor(req: IncomingMessage, res: ServerResponse, decoration: ResponseDecoration | null, done: ForwardDone) {
    this.#req = req
    this.#res = res
    this.#decoration = decoration
    this.#done = done
    res.once('close', this.#onClientClose)
  }

  #onClientClose = (): void => {
    if (this.#finished) return
    this.#clientGone = true
    this.#controller?.abort(new TetherError('TETHER_BAD_REQUEST', new Error('client closed the connection')))
  }

  #onDrain = (): void => {
    this.#waitingDrain = false
    this.#controller?.resume()
  }

  onRequestStart(controller: Dispatcher.DispatchController): void {
    this.#controller = controller
    if (this.#clientGone) controller.abort(new TetherError('TETHER_BAD_REQUEST', new Error('client closed the connection')))
  }

  onResponseStart(
    controller: Dispatcher.DispatchController,
    statusCode: number,
    headers: Record<string, string | string[] | undefined>,
    statusMessage?: string,
  ): void {
    const res = this.#res
    if (this.#clientGone) return
    try {
      clientResponseHeaders(headers)
      this.#decoration?.decorate(headers)
      res.writeHead(statusCode, statusMessage || undefined, headers)
    } catch (err) {
      // e.g. an invalid header value from the upstream: answer 502 instead
      controller.abort(new TetherError('TETHER_UPSTREAM_PROTOCOL', err))
      return
    }
    // a response of unknown length may be a stream (SSE, long-poll): send the head now
    if (headers['content-length'] === undefined) res.flushHeaders()
  }

  onResponseData(controller: Dispatcher.DispatchController, chunk: Buffer): void {
    if (this.#clientGone) return
    if (!this.#res.write(chunk) && !this.#waitingDrain) {
      this.#waitingDrain = true
      controller.pause()
      this.#res.once('drain', this.#onDrain)
    }
  }

  onResponseEnd(): void {
    this.#finished = true
    const res = this.#res
    if (!this.#clientGone) res.end()
    this.#done({ status: res.statusCode, outcome: null, error: null })
  }

  onResponseError(_controller: Dispatcher.DispatchController, err: Error): void {
    if (this.#finished) return
    this.#finished = true
    const res = this.#res
    const outcome = classify(err, this.#clientGone || res.destroyed)
    if (outcome.kind === 'client_abort') {
      this.#done({ status: 0, outcome, error: null })
      return
    }
    if (res.headersSent) {
      // the client already has a status line: the only honest signal left is to cut it off
      res.destroy()
      this.#done({ status: res.statusCode, outcome, error: err })
      return
    }
    const unreadBody = outcome.code === 'TETHER_BODY_TOO_LARGE' || !this.#req.complete
    this.#done({ status: sendError(res, outcome.code, unreadBody), outcome, error: err })
  }
}
