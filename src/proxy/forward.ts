// Forwarding: the only file that imports undici. One keep-alive Pool per upstream; the
// request body and the response body are streamed both ways with backpressure, never
// buffered whole. A client abort cancels the upstream request; an upstream abort after the
// response started ends the client connection. Does not decide where to send a request.
import type { IncomingMessage, ServerResponse } from 'node:http'
import type { Readable } from 'node:stream'
import type { Socket } from 'node:net'
import { Pool, buildConnector, errors, type Dispatcher } from 'undici'
import { TetherError } from '../errors.js'
import { classify, type Outcome } from './outcome.js'
import { mayStartWithInterim, withoutUnsolicitedContinue } from './interim-response.js'
import { clientResponseHeaders } from './headers.js'
import type { ReservedHeaders } from '../reserved-headers.js'

export interface PoolTimeouts {
  /** TCP connect timeout, ms. */
  readonly connect: number
  /** Request sent -> response headers received, ms. */
  readonly responseHeaders: number
  /** Max silence between response body chunks, ms (0 = none). */
  readonly bodyIdle: number
  /** Largest upstream response head, bytes (room for checkpoint headers). */
  readonly maxResponseHeaderBytes: number
}

/** What one forwarded exchange produced, for retry decisions, health and the access log. */
export interface ForwardResult {
  /** Status sent to the client (0 if nothing was sent). */
  status: number
  /** null when the upstream answered; otherwise how it failed. */
  outcome: Outcome | null
  /** Cause of a failure, for logs. */
  error: unknown
  /**
   * Whether the client already got (part of) an answer. When false, nothing was written and
   * the caller answers: retry elsewhere or send the error for `outcome`.
   */
  responded: boolean
}

export type ForwardDone = (result: ForwardResult) => void

/** What a routing decision adds to an upstream response (cookies, debug, checkpoints). */
export interface ResponseDecoration {
  /** Sees the upstream's headers before hop-by-hop and X-Tether-* headers are removed. */
  inspect?(headers: Record<string, string | string[] | undefined>): void
  /** Adds to the filtered headers (Set-Cookie, X-Tether-Upstream). */
  decorate(headers: Record<string, string | string[] | undefined>): void
  /** Work the answer's head must wait for (a checkpoint write, itself bounded), or null. */
  hold?(): Promise<unknown> | null
}

/** Owns the undici pools, keyed by upstream id. */
export class Forwarder {
  readonly #pools = new Map<string, Pool>()
  readonly #urls = new Map<string, string>()
  readonly #timeouts: PoolTimeouts
  readonly #closeAfter: () => boolean
  readonly #reserved: ReservedHeaders

  /**
   * `reserved`: names removed from every answer; `closeAfter`: true while Tether drains, so
   * answers carry `Connection: close`.
   */
  constructor(upstreams: readonly { id: string; url: string }[], timeouts: PoolTimeouts, reserved: ReservedHeaders, closeAfter: () => boolean = () => false) {
    this.#timeouts = timeouts
    this.#reserved = reserved
    this.#closeAfter = closeAfter
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
    const connect = buildConnector({ timeout: this.#timeouts.connect, noDelay: true })
    return new Pool(origin, {
      connect: (opts, callback) => connect(opts, (...args) => {
        if (args[0] === null) tolerateUnsolicitedContinue(args[1] as Socket)
        callback(...args)
      }),
      headersTimeout: this.#timeouts.responseHeaders,
      bodyTimeout: this.#timeouts.bodyIdle,
      keepAliveTimeout: 4_000,
      keepAliveMaxTimeout: 60_000,
      pipelining: 1,
      maxHeaderSize: this.#timeouts.maxResponseHeaderBytes,
    })
  }

  /**
   * Send `req` to the upstream `id` at `path` (origin form, as written) with `headers`
   * ([name, value, ...]) and `body` (null for none) and stream the answer into `res`. A failure before any byte of the answer was
   * written leaves `res` untouched (`responded: false`) so the caller may retry elsewhere.
   * `done` is called exactly once.
   */
  forward(
    id: string,
    req: IncomingMessage,
    res: ServerResponse,
    path: string,
    headers: string[],
    body: Readable | null,
    decoration: ResponseDecoration | null,
    done: ForwardDone,
  ): void {
    const pool = this.#pools.get(id)
    if (pool === undefined) {
      done({ status: 0, outcome: { kind: 'error', code: 'TETHER_UPSTREAM_CONNECT', connect: true }, error: new Error(`no pool for upstream ${id}`), responded: false })
      return
    }
    const handler = new ExchangeHandler(res, req.method === 'HEAD', this.#closeAfter, this.#reserved, decoration, done)
    pool.dispatch(
      { path, method: req.method ?? 'GET', headers, body },
      handler,
    )
  }

  /**
   * A small request of Tether's own (the rehydration hook): the answer's status, or 0 when
   * the upstream could not be reached or did not answer within `timeout` ms. Body discarded.
   */
  async call(id: string, method: string, path: string, headers: string[], body: string, timeout: number): Promise<number> {
    const pool = this.#pools.get(id)
    if (pool === undefined) return 0
    try {
      const r = await pool.request({ method, path, headers, body, headersTimeout: timeout, bodyTimeout: timeout })
      await r.body.dump()
      return r.statusCode
    } catch {
      return 0
    }
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

/**
 * undici reads responses with `socket.read()` and fails a response that opens with a `100
 * Continue` it did not ask for. Wrap this socket's read so that, at the start of a response
 * only (its parser has read no status line yet), complete 100 heads are dropped. The parser is
 * undici's own, found by its symbol's description; a test pins this against the installed
 * undici, and without it the answer is a 502 that is not retried (never a replay).
 */
function tolerateUnsolicitedContinue(socket: Socket): void {
  const read = socket.read
  let parserKey: symbol | undefined
  socket.read = function readWithoutContinue(this: Socket, size?: number) {
    const chunk = read.call(this, size) as Buffer | null
    if (chunk === null || !mayStartWithInterim(chunk)) return chunk
    parserKey ??= Object.getOwnPropertySymbols(this).find((s) => s.description === 'parser')
    const parser = parserKey === undefined ? undefined : (this as unknown as Record<symbol, { statusCode?: number; headersSize?: number } | null>)[parserKey]
    if (parser == null || parser.statusCode !== 0 || parser.headersSize !== 0) return chunk
    return withoutUnsolicitedContinue(chunk)
  } as Socket['read']
}

/**
 * Errors that mean the upstream's answer was not valid HTTP (a bad status line, a bare CR,
 * a body longer or shorter than announced): 502 TETHER_UPSTREAM_PROTOCOL, never retried,
 * since the upstream received the request and may have acted on it. undici's parser errors
 * carry no code, so they are recognised here, in the one file that knows undici.
 */
function upstreamError(err: Error): Error {
  if (err instanceof errors.HTTPParserError || err instanceof errors.ResponseContentLengthMismatchError) {
    return new TetherError('TETHER_UPSTREAM_PROTOCOL', err)
  }
  // 'bad response' / 'bad upgrade': the upstream sent an answer undici cannot take (a 100 it
  // did not ask for, split across reads; a 101 to a plain request)
  if (err instanceof errors.SocketError && (err.message === 'bad response' || err.message === 'bad upgrade')) {
    return new TetherError('TETHER_UPSTREAM_PROTOCOL', err)
  }
  return err
}

/** A reason phrase Node will write (RFC 9112: HTAB, SP, VCHAR, obs-text). */
const REASON_PHRASE = /^[\t\x20-\x7e\x80-\xff]*$/

/** Whether a request carries a body (a declared non-zero length, or chunked). */
export function hasBody(req: IncomingMessage): boolean {
  const cl = req.headers['content-length']
  if (cl !== undefined) return cl !== '0'
  return req.headers['transfer-encoding'] !== undefined
}

/** undici dispatch handler for one exchange: upstream response -> client response. */
class ExchangeHandler implements Dispatcher.DispatchHandler {
  readonly #res: ServerResponse
  readonly #head: boolean
  readonly #closeAfter: () => boolean
  readonly #reserved: ReservedHeaders
  readonly #done: ForwardDone
  readonly #decoration: ResponseDecoration | null
  #controller: Dispatcher.DispatchController | null = null
  #clientGone = false
  #finished = false
  #waitingDrain = false
  /** Body chunks (and the end) that arrived while the head waits on `hold()`. */
  #held: Buffer[] | null = null
  #heldEnd = false

  constructor(res: ServerResponse, head: boolean, closeAfter: () => boolean, reserved: ReservedHeaders, decoration: ResponseDecoration | null, done: ForwardDone) {
    this.#res = res
    this.#head = head
    this.#closeAfter = closeAfter
    this.#reserved = reserved
    this.#decoration = decoration
    this.#done = done
    this.#clientGone = res.destroyed
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
    // 1xx (102 Processing, 103 Early Hints) are informational: the final answer follows
    if (this.#clientGone || statusCode < 200) return
    this.#decoration?.inspect?.(headers)
    const hold = this.#decoration?.hold?.() ?? null
    if (hold === null) return this.#start(controller, statusCode, headers, statusMessage)
    // the head waits (bounded) for a checkpoint write; body chunks meanwhile are kept
    this.#held = []
    controller.pause()
    const go = (): void => {
      const held = this.#held!
      this.#held = null
      if (this.#finished || this.#clientGone) return
      this.#start(controller, statusCode, headers, statusMessage)
      for (const chunk of held) if (!this.#finished) this.onResponseData(controller, chunk)
      if (this.#heldEnd && !this.#finished) this.#finish()
      else if (!this.#waitingDrain) controller.resume()
    }
    hold.then(go, go)
  }

  #start(
    controller: Dispatcher.DispatchController,
    statusCode: number,
    headers: Record<string, string | string[] | undefined>,
    statusMessage: string | undefined,
  ): void {
    const res = this.#res
    if (this.#closeAfter()) res.shouldKeepAlive = false
    try {
      clientResponseHeaders(headers, this.#reserved)
      this.#decoration?.decorate(headers)
      const reason = statusMessage && REASON_PHRASE.test(statusMessage) ? statusMessage : undefined
      res.writeHead(statusCode, reason, headers)
    } catch (err) {
      // e.g. an invalid header value from the upstream: answer 502 instead
      res.statusMessage = ''
      controller.abort(new TetherError('TETHER_UPSTREAM_PROTOCOL', err))
      return
    }
    if (statusCode === 204 || statusCode === 304 || this.#head) {
      // no body may follow, whatever Content-Length says: finish now (undici may still
      // complain about the announced length; that is ignored once finished)
      this.#finish()
      return
    }
    // a response of unknown length may be a stream (SSE, long-poll): send the head now
    if (headers['content-length'] === undefined) res.flushHeaders()
  }

  onResponseData(controller: Dispatcher.DispatchController, chunk: Buffer): void {
    if (this.#clientGone || this.#finished) return
    if (this.#held !== null) {
      this.#held.push(chunk)
      return
    }
    if (!this.#res.write(chunk) && !this.#waitingDrain) {
      this.#waitingDrain = true
      controller.pause()
      this.#res.once('drain', this.#onDrain)
    }
  }

  onResponseEnd(): void {
    if (this.#held !== null) this.#heldEnd = true
    else if (!this.#finished) this.#finish()
  }

  #finish(): void {
    this.#finished = true
    const res = this.#res
    if (!this.#clientGone) res.end()
    this.#done({ status: res.statusCode, outcome: null, error: null, responded: true })
  }

  onResponseError(_controller: Dispatcher.DispatchController, err: Error): void {
    if (this.#finished) return
    this.#finished = true
    const res = this.#res
    const outcome = classify(upstreamError(err), this.#clientGone || res.destroyed)
    if (outcome.kind === 'client_abort') {
      this.#done({ status: 0, outcome, error: null, responded: true })
      return
    }
    if (res.headersSent) {
      // the client already has a status line: the only honest signal left is to cut it off
      res.destroy()
      this.#done({ status: res.statusCode, outcome, error: err, responded: true })
      return
    }
    this.#done({ status: 0, outcome, error: err, responded: false })
  }
}
