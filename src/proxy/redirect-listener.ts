// The plain-HTTP listener next to a TLS one (`listen.redirect`): every request gets a 308 to the
// same URL on https://, except ACME HTTP-01 challenges (`/.well-known/acme-challenge/...`),
// which go through the request path like any request (cert-manager's solver answers them).
// Layer 4: owns this second server; holds no routing logic (the current RequestPath does).
import http from 'node:http'
import net, { type AddressInfo } from 'node:net'
import { systemClock, systemTimers, type Clock } from '../clock.js'
import { ProblemLog } from '../observability/problem-log.js'
import { ProxyHeaderReader } from './proxy-protocol.js'
import type { Config } from '../config/schema.js'
import type { ErrorCode } from '../errors.js'
import type { Logger } from '../observability/logger.js'
import type { ClientErrors } from './client-error.js'
import { listen, ListenError } from '../listen.js'
import { accepted, clientIdleTimeout, http1Options, lacksHost, refuseInTurn } from './listener.js'
import { foreignRequestLine } from './request-line.js'
import { keepAliveBounds, noteStart, onePerConnection } from './pipelining.js'
import { awaitsContinue, expectsContinue, type RequestPath } from './request-path.js'
import { sendError } from './respond.js'

/**
 * An ACME HTTP-01 challenge: the path and one token (base64url, RFC 8555 section 8.3), nothing
 * else. Anything more (`../`, `%2e%2e`, `%2F`, a query) is redirected like any request: an
 * upstream that normalises paths would otherwise serve any path in clear text through it.
 */
const ACME_TOKEN = /^\/\.well-known\/acme-challenge\/[A-Za-z0-9_-]+$/
/** A Host that is only a name or an IP literal and a port (RFC 9110 section 7.2). */
const HOST = /^(?:[A-Za-z0-9.-]+|\[[0-9A-Fa-f:.]+\])(?::\d{1,5})?$/

/**
 * The https:// URL a plain request is sent to, or null when its Host cannot make one (the
 * client gets 400). The Host's port is replaced by `httpsPort` (443: none written).
 * Example: httpsLocation('shop.example:8080', '/cart?x=1', 443) -> 'https://shop.example/cart?x=1'.
 */
export function httpsLocation(host: string | undefined, target: string, httpsPort: number): string | null {
  if (host === undefined || !HOST.test(host) || !target.startsWith('/')) return null
  const hostname = host.replace(/:\d+$/, '').toLowerCase()
  return `https://${hostname}${httpsPort === 443 ? '' : `:${httpsPort}`}${target}`
}

/** Bytes of an unwanted request body read and dropped after a redirect before the connection is closed instead. */
export const REDIRECT_DRAIN_MAX = 64 * 1024

/**
 * A body is not wanted: the answer does not wait for it, and it is read and dropped so the
 * connection can serve the next request. Past {@link REDIRECT_DRAIN_MAX} bytes the connection
 * is half-closed (after the answer) and what still comes is dropped, so a client still sending
 * reads the answer rather than a reset; after `withinMs` it is closed (a lingering close,
 * bounded as nginx's). (The listener has no request timeout: a body trickled forever held it open.)
 */
function dropBody(req: http.IncomingMessage, withinMs: number): void {
  if (req.complete) return void req.resume()
  let left = REDIRECT_DRAIN_MAX
  const timer = setTimeout(() => req.socket.destroy(), withinMs)
  const done = (): void => clearTimeout(timer)
  req.once('end', done)
  req.once('close', done)
  req.on('data', (chunk: Buffer) => {
    left -= chunk.length
    if (left < 0 && left + chunk.length >= 0) req.socket.end()
  })
  req.resume()
}

/**
 * Example: `const r = new RedirectListener(config, deps, () => tls.port); await r.listen()`;
 * `GET http://shop.example/cart` -> 308 `Location: https://shop.example/cart`.
 */
export class RedirectListener {
  readonly server: http.Server
  readonly #config: Config
  readonly #logger: Logger
  /**
   * With `listen.proxy_protocol`: the socket server that listens and reads each connection's
   * PROXY header first. The redirect port sits behind the same load balancer as the TLS one
   * (a Service with both ports, one balancer setting for all): without it, the header would
   * reach the HTTP parser as a bad request line, and a plain-HTTP ACME challenge proxied from
   * here would name the balancer as its client.
   */
  readonly #front: net.Server | null = null
  readonly #proxyHeaders: ProxyHeaderReader | null = null

  constructor(config: Config, deps: { readonly current: () => RequestPath; readonly clientErrors: ClientErrors; readonly logger: Logger; readonly clock?: Clock }, tlsPort: () => number) {
    this.#config = config
    const redirect = config.listen.redirect!
    // a refusal is answered, then the connection closes; it is logged and counted as the proxy
    // listener's own refusals are (and as the parser's, which the shared ClientErrors handles)
    const refuse = (req: http.IncomingMessage, res: http.ServerResponse, code: ErrorCode): void => {
      if (res.destroyed || req.socket.destroyed) return void res.destroy()
      sendError(res, code, { close: true })
      deps.clientErrors.refused(code, req)
    }
    // one request at a time per connection, redirects included: a malformed request pipelined
    // behind them is answered after every one (see ClientErrors), as on the main listener
    // a keep-alive connection carries limits.max_requests_per_connection requests for at most
    // timeouts.client_connection_max, as the proxy listener's (read at its first request: a
    // reload applies to connections whose first request comes after it)
    const bounds = keepAliveBounds(() => deps.current().config, deps.clock)
    const handle = onePerConnection((req, res) => {
      const url = req.url ?? '/'
      // (an HTTP/1.1 one without Host, or one with an empty Host, is not: its 400 below, as for
      // any redirect without one)
      if (ACME_TOKEN.test(url) && !lacksHost(req)) return deps.current().handleRequest(req, res)
      // a body the parser refused already (pipelined behind another request): its 400, and close
      const failed = deps.clientErrors.failed(req)
      if (failed !== null) return refuse(req, res, failed)
      const location = httpsLocation(req.headers.host, url, redirect.https_port ?? tlsPort())
      if (location === null) return refuse(req, res, 'TETHER_BAD_REQUEST')
      // a malformed rest of the dropped body closes the connection, without a second answer
      deps.clientErrors.dropping(req)
      dropBody(req, config.timeouts.client_headers)
      res.writeHead(308, { location, 'content-length': '0' })
      res.end()
    }, undefined, bounds)
    // a request line that is not HTTP/1.x (HTTP/0.9, an RTSP-only method) is neither redirected
    // nor a challenge passed on: 400 in its turn (see request-line.ts)
    const refuseForeign = refuseInTurn('TETHER_BAD_REQUEST', deps.clientErrors, undefined, bounds)
    const serve: http.RequestListener = (req, res) => {
      if (foreignRequestLine(req)) refuseForeign(req, res)
      else handle(req, res)
    }
    this.server = http.createServer(http1Options(config), serve)
    // every header line counts, as on the main listener (Node's default keeps about 1000 pairs and
    // drops the rest silently, a Content-Length among them): the byte limit bounds them
    this.server.maxHeadersCount = 0
    // Expect as on the main listener: a challenge gets its 100 Continue from the request path
    // once its head passed every check (a TRACE gets its 405 without one); a redirect is
    // decided on the head and goes without one (nginx's `return 308` sends none). Another
    // expectation is ignored (served), not answered 417 by Node
    this.server.on('checkContinue', (req: http.IncomingMessage, res: http.ServerResponse) => {
      awaitsContinue(req, res)
      serve(req, res)
    })
    this.server.on('checkExpectation', (req: http.IncomingMessage, res: http.ServerResponse) => {
      if (expectsContinue(req.headers.expect)) awaitsContinue(req, res)
      serve(req, res)
    })
    // a client that stalls mid-request (the proxied challenges) is cut off, as on the main
    // listener: after Tether's own waits on the upstream
    if (config.timeouts.body_idle > 0) this.server.setTimeout(clientIdleTimeout(config.timeouts))
    this.server.on('clientError', deps.clientErrors.handle)
    // client_connection_max counts from the accept (see noteStart): the front's with a PROXY header
    this.server.prependListener('connection', (socket: net.Socket) => noteStart(socket, bounds))
    // a CONNECT gets its 405 in its turn, as on the proxy listener; without a listener Node
    // closed the connection at once, unanswered and unlogged, cutting the answers before it
    this.server.on('connect', deps.clientErrors.refuseConnect)
    this.#logger = deps.logger
    if (config.listen.proxy_protocol) {
      const problems = new ProblemLog(deps.logger, systemClock)
      this.#proxyHeaders = new ProxyHeaderReader(config.timeouts.client_headers, systemTimers, (socket) => { this.server.emit('connection', socket); socket.resume() },
        (r) => {
          deps.clientErrors.proxyHeaderRefused(r.cause)
          problems.report('proxy protocol', r.reason, { peer: r.peer, reason: r.reason, listener: 'redirect' }, 'connection without a valid PROXY protocol header (listen.proxy_protocol): closed without an answer')
        })
      this.#front = net.createServer({ noDelay: true }, accepted(bounds, this.#proxyHeaders.read))
    }
  }

  /** Whether it listens (its front with listen.proxy_protocol). */
  get listening(): boolean {
    return (this.#front ?? this.server).listening
  }

  async listen(): Promise<void> {
    const { host, port } = this.#config.listen.redirect!
    const logged = (err: Error): void => this.#logger.error({ err }, 'redirect listener error')
    const listening = this.#front ?? this.server
    await listen(listening, { port, host }, logged).catch((err: NodeJS.ErrnoException) => {
      throw new ListenError(host, port, 'listen.redirect', err)
    })
    // the HTTP/1.1 server behind the front starts its connection tracking as if it listened
    if (listening !== this.server) {
      this.server.on('error', logged)
      this.server.emit('listening')
    }
  }

  get port(): number {
    return ((this.#front ?? this.server).address() as AddressInfo).port
  }

  /** Stop accepting; close every connection (a redirect is short, a challenge is tiny). */
  async close(): Promise<void> {
    const front = this.#front
    const closed = Promise.all([
      new Promise<void>((resolve) => this.server.close(() => resolve())),
      front === null ? null : new Promise<void>((resolve) => front.close(() => resolve())),
    ])
    this.#proxyHeaders?.closePending()
    this.server.closeIdleConnections()
    this.server.closeAllConnections()
    await closed
  }
}
