// Upgrades: the only file that imports http-proxy. An HTTP Upgrade to WebSocket is placed by the
// same routing decision as a plain request (Router.route), its head is rewritten by the same
// header rules, and after the upstream's 101 the two raw sockets are piped byte for byte
// (subprotocols, extensions, binary frames, ping/pong and close codes pass untouched). Owns the
// open tunnels: limits, idle timeout, and closing them (1012 when their upstream dies, 1001 at
// shutdown). Does not decide where a request goes, and never reads config or process.env.
import type { IncomingHttpHeaders, IncomingMessage, ClientRequest, Server } from 'node:http'
import { randomUUID } from 'node:crypto'
import type { Socket } from 'node:net'
import type { Duplex } from 'node:stream'
import httpProxy from 'http-proxy'
import { TetherError, type ErrorCode } from '../errors.js'
import { endThenDestroy, writeRawError } from './respond.js'
import type { Logger } from '../observability/logger.js'
import type { NoRoute, Route } from '../routing/router.js'
import { clientIp, type TrustedProxies } from '../affinity/client-ip.js'
import { REQUEST_ID, clientResponseHeaders, hostIsValid, requestTarget, upstreamRequestHeaders, type HeaderPolicy } from './headers.js'
import { classify, healthSignal, type HealthSignal } from './outcome.js'
import { shouldRetry } from './retry.js'
import { whenIdle } from './pipelining.js'

/** The part of the Router an upgrade needs (the same decision as a plain request). */
export interface UpgradeRouter {
  route(headers: IncomingHttpHeaders, peer: string, tried?: ReadonlySet<string>): Route | NoRoute
}

export interface UpgradeOptions {
  /** Most WebSockets open (and handshaking) at once; beyond, 503 on the raw socket. */
  readonly maxConnections: number
  /** No byte in either direction for this long (ms) destroys both sockets; 0 = no limit. */
  readonly idleTimeout: number
  /** TCP connect to the upstream, ms (timeouts.connect). */
  readonly connect: number
  /** Handshake sent -> upstream's answer head, ms (timeouts.response_headers). */
  readonly responseHeaders: number
  /** Extra attempts on the key's next upstream after a failed connect (retries.attempts). */
  readonly retries: number
  /** After Tether sent a close frame and ended a socket, it is destroyed after this, ms (default 2000). */
  readonly closeLinger?: number
}

export interface UpgradeDeps {
  readonly router: UpgradeRouter
  /** The header rules (reserved names, underscores, trusted peers), as for plain requests. */
  readonly headerPolicy: HeaderPolicy
  readonly logger: Logger
  /** True once shutdown began: new upgrades get 503. */
  readonly draining: () => boolean
  /** Passive health: told how each handshake went (a refused connect ejects at once). */
  readonly observe?: (id: string, signal: HealthSignal) => void
  /**
   * Place a key (the client IP) on the hash ring, for an upgrade that would start a new cookie
   * session: a cookie set on a 101 is unreliable, so the IP is the stable fallback. Absent:
   * such an upgrade lands wherever the new session does (see Router.placeKey).
   */
  readonly placeKey?: (key: string, tried: ReadonlySet<string>) => Route | NoRoute
  readonly options: UpgradeOptions
}

export interface UpgradeHandler {
  /**
   * Become `server`'s 'upgrade' listener. Node then hands every request with an Upgrade header
   * here; one for another protocol than websocket (h2c, TLS/1.0) is handed back to `server` as
   * an ordinary request, without its Upgrade header.
   */
  attach(server: Server): void
  /** The 'upgrade' listener itself (without attach(), a non-websocket Upgrade is answered 400). */
  readonly handle: (req: IncomingMessage, socket: Duplex, head: Buffer) => void
  /** Where upgrades may go: upstream id -> origin URL (call from the same place as the forwarder's). */
  setUpstreams(upstreams: readonly { readonly id: string; readonly url: string }[]): void
  /**
   * Close every tunnel to upstream `id`: a WebSocket close frame with `code` (1012, service
   * restart, when its upstream died) is sent to each client (unless the upstream already sent
   * one, or a frame is half written: then the socket just ends), then both sides close.
   * Handshakes in progress to `id` are abandoned and routed again with `id` counted as tried
   * (503 instead once shutdown began). Returns how many tunnels were affected.
   */
  closeUpstream(id: string, code?: number): number
  /** The same for every tunnel (1001, going away, at shutdown). */
  closeAll(code?: number): number
  /** Open tunnels (and handshakes in progress). */
  readonly size: number
  /** Open tunnels (and handshakes in progress) to upstream `id`. */
  countByUpstream(id: string): number
}

/** RFC 6455 close codes Tether sends. */
export const CLOSE_GOING_AWAY = 1001
export const CLOSE_SERVICE_RESTART = 1012

const NO_ROUTE: Record<NoRoute, ErrorCode> = { none: 'TETHER_NO_UPSTREAM', strict: 'TETHER_AFFINITY_UNAVAILABLE' }
const EMPTY = Buffer.alloc(0)
const NOTHING_TRIED: ReadonlySet<string> = new Set()

/** Lifecycle of one client connection that asked to upgrade. */
type TunnelState = 'connecting' | 'open' | 'closed'

class Tunnel {
  state: TunnelState = 'connecting'
  /** Upstream id of the current attempt. */
  id = ''
  route: Route | null = null
  upstream: Socket | null = null
  proxyReq: ClientRequest | null = null
  head: Buffer
  tried: Set<string> | null = null
  retries = 0
  /** Number of the current handshake attempt (a superseded one's late error is ignored). */
  attempt = 0
  timer: NodeJS.Timeout | null = null
  /** X-Request-Id sent upstream: the client's when well-formed, else a new one (same for retries). */
  readonly requestId: string
  /** Upstream -> client frame boundaries, so a close frame is only ever written between frames. */
  readonly frames = new FrameTracker()
  constructor(readonly req: IncomingMessage, readonly client: Socket, head: Buffer) {
    this.head = head
    const id = req.headers['x-request-id']
    this.requestId = typeof id === 'string' && REQUEST_ID.test(id) ? id : randomUUID()
  }
}

/**
 * Create the upgrade handler. Example (composition root):
 * ```ts
 * const upgrades = createUpgradeHandler({ router, forwarding: config.forwarding, ... })
 * upgrades.setUpstreams(config.upstreams)
 * upgrades.attach(server)
 * ```
 */
export function createUpgradeHandler(deps: UpgradeDeps): UpgradeHandler {
  return new Upgrades(deps)
}

class Upgrades implements UpgradeHandler {
  readonly #deps: UpgradeDeps
  readonly #observe: (id: string, signal: HealthSignal) => void
  readonly #trusted: TrustedProxies
  readonly #linger: number
  readonly #proxy: httpProxy
  /** Client socket -> its tunnel, for http-proxy's per-request hooks. */
  readonly #bySocket = new WeakMap<Duplex, Tunnel>()
  /** Client sockets that have Tether's error listener. */
  readonly #guarded = new WeakSet<Duplex>()
  /** Upstream socket -> its tunnel, until http-proxy has piped it. */
  readonly #byUpstreamSocket = new WeakMap<Socket, Tunnel>()
  /** Tunnels by upstream id: O(1) add and remove, and closeUpstream without a scan. */
  readonly #byUpstream = new Map<string, Set<Tunnel>>()
  #urls: ReadonlyMap<string, string> = new Map()
  #count = 0
  #server: Server | null = null

  constructor(deps: UpgradeDeps) {
    this.#deps = deps
    this.#observe = deps.observe ?? (() => undefined)
    this.#trusted = deps.headerPolicy.trusted
    this.#linger = deps.options.closeLinger ?? 2_000
    // xfwd off: X-Forwarded-* come from the same header rules as plain requests
    this.#proxy = httpProxy.createProxyServer({ ws: true, xfwd: false, prependPath: false })
    // with a per-call callback http-proxy reports there; a listener still guards the process
    this.#proxy.on('error', (err) => deps.logger.warn({ err }, 'websocket proxy error'))
    this.#proxy.on('proxyReqWs', (proxyReq, _req, socket) => this.#onProxyReq(proxyReq, socket))
    this.#proxy.on('open', (up: Socket) => {
      const t = this.#byUpstreamSocket.get(up)
      if (t === undefined) return
      this.#byUpstreamSocket.delete(up)
      up.on('data', (chunk: Buffer) => t.frames.push(chunk))
    })
  }

  get size(): number {
    return this.#count
  }

  countByUpstream(id: string): number {
    return this.#byUpstream.get(id)?.size ?? 0
  }

  attach(server: Server): void {
    this.#server = server
    server.on('upgrade', this.handle)
  }

  setUpstreams(upstreams: readonly { readonly id: string; readonly url: string }[]): void {
    this.#urls = new Map(upstreams.map((u) => [u.id, u.url]))
  }

  handle = (req: IncomingMessage, duplex: Duplex, head: Buffer): void => {
    const socket = duplex as Socket
    if (socket.destroyed) return
    // Node removed its own listener when it handed the socket over: errors are ours now (once
    // per socket: a keep-alive connection may hand over many h2c requests)
    if (!this.#guarded.has(socket)) {
      this.#guarded.add(socket)
      socket.on('error', (err) => this.#deps.logger.debug({ err }, 'websocket client socket error'))
    }
    // an upgrade pipelined behind a request still being answered waits for that answer
    whenIdle(socket, () => this.#handle(req, socket, head))
  }

  #handle(req: IncomingMessage, socket: Socket, head: Buffer): void {
    if (socket.destroyed) return
    if (!isWebSocket(req.headers)) return this.#notWebSocket(req, socket, head)
    if (req.method !== 'GET' || requestTarget(req.url) === null || !hostIsValid(req.rawHeaders)) return writeRawError(socket, 'TETHER_BAD_REQUEST', {}, this.#linger)
    if (this.#deps.draining()) return writeRawError(socket, 'TETHER_SHUTTING_DOWN', {}, this.#linger)
    if (this.#count >= this.#deps.options.maxConnections) return writeRawError(socket, 'TETHER_TOO_MANY_CONNECTIONS', {}, this.#linger)
    const t = new Tunnel(req, socket, head)
    this.#count++
    this.#bySocket.set(socket, t)
    socket.once('close', () => this.#release(t))
    this.#attempt(t)
  }

  closeUpstream(id: string, code = CLOSE_SERVICE_RESTART): number {
    const set = this.#byUpstream.get(id)
    if (set === undefined) return 0
    let n = 0
    for (const t of [...set]) {
      this.#close(t, code)
      n++
    }
    return n
  }

  closeAll(code = CLOSE_GOING_AWAY): number {
    let n = 0
    for (const id of [...this.#byUpstream.keys()]) n += this.closeUpstream(id, code)
    return n
  }

  /** Route and send the handshake (again, after a failed connect, with `tried` grown). */
  #attempt(t: Tunnel): void {
    const { req, client } = t
    const peer = req.socket.remoteAddress ?? ''
    const tried = t.tried ?? NOTHING_TRIED
    let route = this.#deps.router.route(req.headers, peer, tried)
    if (typeof route !== 'string' && route.source === 'new_session' && this.#deps.placeKey !== undefined) {
      route = this.#deps.placeKey(clientIp(peer, req.headers['x-forwarded-for'], this.#trusted), tried)
    }
    if (typeof route === 'string') return this.#fail(t, NO_ROUTE[route], true)
    const target = this.#urls.get(route.id)
    if (target === undefined) return this.#fail(t, 'TETHER_NO_UPSTREAM', true)
    t.route = route
    this.#track(t, route.id)
    const reqTarget = requestTarget(req.url)!
    const raw = upstreamRequestHeaders(req.rawHeaders, this.#deps.headerPolicy, {
      peer,
      proto: 'http',
      port: req.socket.localPort ?? 0,
      upstreamHost: new URL(target).host,
      authority: reqTarget.authority,
      requestId: t.requestId,
    })
    raw.push('connection', 'Upgrade', 'upgrade', String(req.headers.upgrade))
    raw.push('x-tether-epoch', String(route.epoch))
    if (route.moved !== null) raw.push('x-tether-moved', `from=${route.moved.from}; reason=${route.moved.reason}; epoch=${route.epoch}`)
    // http-proxy copies req.headers into the handshake: give it a view with ours instead of
    // rewriting the inbound request's headers
    const view = Object.create(req, { headers: { value: headerObject(raw), enumerable: true }, url: { value: reqTarget.path, enumerable: true } }) as IncomingMessage
    const head = t.head
    t.head = EMPTY // http-proxy unshifted it into the client socket: a retry must not repeat it
    const attempt = ++t.attempt
    try {
      this.#proxy.ws(view, client, head, { target }, (err: Error) => {
        if (attempt === t.attempt) return this.#onProxyError(t, err)
        // a handshake abandoned for a newer attempt: keep the client socket for that one
        if (t.state !== 'closed') skipNextEnd(client)
      })
    } catch (err) {
      // http.request() refused the handshake (e.g. a header value it will not send)
      this.#deps.logger.warn({ err, upstream: route.id }, 'websocket handshake could not be sent')
      t.attempt++
      t.proxyReq?.destroy()
      t.proxyReq = null
      this.#disarm(t)
      this.#fail(t, 'TETHER_BAD_REQUEST', false)
    }
  }

  /** http-proxy created the upstream request (before its own listeners): timers and hooks. */
  #onProxyReq(proxyReq: ClientRequest, socket: Duplex): void {
    const t = this.#bySocket.get(socket)
    if (t === undefined || t.state === 'closed') {
      proxyReq.destroy()
      return
    }
    t.proxyReq = proxyReq
    const { connect, responseHeaders } = this.#deps.options
    this.#arm(t, connect, 'TETHER_UPSTREAM_CONNECT_TIMEOUT')
    proxyReq.once('socket', (s: Socket) => {
      const waitHead = (): void => { if (t.proxyReq === proxyReq) this.#arm(t, responseHeaders, 'TETHER_UPSTREAM_TIMEOUT') }
      if (s.connecting) s.once('connect', waitHead)
      else waitHead()
    })
    // registered before http-proxy's own listeners, so these run first
    proxyReq.once('upgrade', (res: IncomingMessage, up: Socket) => this.#onUpgrade(t, res, up))
    proxyReq.once('response', (res: IncomingMessage) => this.#onRefused(t, res))
  }

  #arm(t: Tunnel, ms: number, code: ErrorCode): void {
    if (t.timer !== null) clearTimeout(t.timer)
    const req = t.proxyReq
    t.timer = setTimeout(() => {
      t.timer = null
      req?.destroy(new TetherError(code))
    }, ms)
  }

  #disarm(t: Tunnel): void {
    if (t.timer !== null) clearTimeout(t.timer)
    t.timer = null
  }

  /** The upstream switched protocols; http-proxy writes the 101 and pipes after this. */
  #onUpgrade(t: Tunnel, res: IncomingMessage, up: Socket): void {
    this.#disarm(t)
    t.proxyReq = null
    this.#observe(t.id, 'success')
    if (t.state === 'closed') {
      up.destroy()
      return
    }
    t.state = 'open'
    t.upstream = up
    // the 101's headers as the client gets them: hop-by-hop and X-Tether-* removed except the
    // two the upgrade itself needs, then the routing decision's cookie and debug header
    const upgrade = res.headers.upgrade
    clientResponseHeaders(res.headers, this.#deps.headerPolicy.reserved)
    res.headers.connection = 'Upgrade'
    if (upgrade !== undefined) res.headers.upgrade = upgrade
    t.route?.decorate(res.headers)
    // the frame tracker starts reading once http-proxy has piped the socket ('open'): a 'data'
    // listener now would start the flow before the pipe exists, and the bytes that came with
    // the 101 (a server that speaks first) would go to the tracker only
    this.#byUpstreamSocket.set(up, t)
    // before the pipe's own 'end' listener: a close without a close frame (the process died,
    // the kernel sent FIN) is told to the client as 1012, not a bare 1006
    up.once('end', () => this.#upstreamGone(t))
    up.once('close', () => { if (t.state === 'open') this.#upstreamGone(t) })
    const idle = this.#deps.options.idleTimeout
    // replaces any socket timeout Node's server left (its keep-alive timeout after an earlier answer)
    t.client.setTimeout(idle)
    if (idle > 0) {
      // the client socket sees every byte of both directions (read from it or written to it)
      t.client.on('timeout', () => {
        this.#deps.logger.debug({ upstream: t.id }, 'websocket idle timeout')
        t.client.destroy()
        up.destroy()
      })
    }
    this.#deps.logger.debug({ request_id: t.requestId, upstream: t.id, route: t.route?.source }, 'websocket open')
  }

  /** The upstream answered the handshake without switching (403, 404, 5xx): passed on as is. */
  #onRefused(t: Tunnel, res: IncomingMessage): void {
    this.#disarm(t)
    t.proxyReq = null
    if (t.state === 'connecting') t.state = 'closed'
    this.#untrack(t) // before health hears of it: an ejection it causes must not close this answer
    this.#observe(t.id, res.statusCode !== undefined && res.statusCode >= 500 ? 'server_error' : 'success')
    // http-proxy writes these headers and pipes the decoded body, then ends: no framing headers
    // may claim otherwise, and the connection closes after it
    clientResponseHeaders(res.headers, this.#deps.headerPolicy.reserved)
    res.headers.connection = 'close'
    t.route?.decorate(res.headers)
  }

  /** http-proxy's error callback: handshake failures, and upstream socket errors once open. */
  #onProxyError(t: Tunnel, err: Error): void {
    this.#disarm(t)
    if (t.state === 'open') return this.#upstreamGone(t)
    if (t.state === 'closed') return
    t.proxyReq = null
    // no longer bound to that upstream: an ejection caused by this report must not close it
    this.#untrack(t)
    const client = t.client
    const outcome = classify(err, client.destroyed)
    const signal = healthSignal({ status: 0, outcome, error: err, responded: false })
    if (signal !== null) this.#observe(t.id, signal)
    if (outcome.kind === 'client_abort') return
    if (t.retries < this.#deps.options.retries && shouldRetry(outcome, 'GET', true)) {
      t.retries++
      ;(t.tried ??= new Set()).add(t.id)
      this.#deps.logger.debug({ upstream: t.id, code: outcome.code, retry: t.retries }, 'websocket handshake retrying on the next upstream')
      // http-proxy ends the client socket right after this callback returns
      // (ws-incoming.js onOutgoingError): the retry keeps it, so that one end() is skipped
      skipNextEnd(client)
      return this.#attempt(t)
    }
    this.#deps.logger.warn({ err, code: outcome.code, upstream: t.id }, 'websocket handshake failed')
    this.#fail(t, outcome.code, false)
  }

  /** The upstream's side of an open tunnel ended: tell the client 1012 unless it already has a close. */
  #upstreamGone(t: Tunnel): void {
    if (t.state !== 'open') return
    this.#deps.logger.debug({ upstream: t.id, clean: t.frames.closeSeen }, 'websocket upstream closed')
    this.#finish(t, CLOSE_SERVICE_RESTART, false)
  }

  /**
   * Close a tunnel from Tether's side. A handshake still in progress to a dead upstream is
   * abandoned and routed again (the upstream counts as tried); during shutdown it gets 503.
   */
  #close(t: Tunnel, code: number): void {
    if (t.state !== 'connecting') return this.#finish(t, code, true)
    const req = t.proxyReq
    this.#disarm(t)
    this.#untrack(t)
    t.proxyReq = null
    t.attempt++ // whatever the abandoned request reports now is ignored
    req?.destroy()
    if (this.#deps.draining()) return this.#fail(t, 'TETHER_SHUTTING_DOWN', true)
    ;(t.tried ??= new Set()).add(t.id)
    this.#attempt(t)
  }

  /**
   * End an open tunnel: a close frame to the client when one can be written (between frames,
   * and the upstream sent none), then both sockets end and are destroyed after the linger.
   */
  #finish(t: Tunnel, code: number, destroyUpstream: boolean): void {
    if (t.state !== 'open') return
    t.state = 'closed'
    this.#untrack(t)
    const client = t.client
    if (!t.frames.closeSeen && t.frames.atBoundary && client.writable) {
      t.frames.closeSeen = true
      client.write(closeFrame(code))
    }
    endThenDestroy(client, this.#linger)
    if (t.upstream !== null) {
      if (destroyUpstream) t.upstream.destroy()
      else endThenDestroy(t.upstream, this.#linger)
    }
  }

  /** The handshake cannot be done: answer on the raw socket. */
  #fail(t: Tunnel, code: ErrorCode, retryAfter: boolean): void {
    t.state = 'closed'
    this.#untrack(t)
    writeRawError(t.client, code, { retryAfter }, this.#linger)
  }

  /** The client socket closed: free its slot; a tunnel still open ends its upstream side. */
  #release(t: Tunnel): void {
    this.#count--
    this.#disarm(t)
    this.#untrack(t)
    const was = t.state
    t.state = 'closed'
    if (was === 'connecting') t.proxyReq?.destroy()
    if (t.upstream !== null && !t.upstream.destroyed) endThenDestroy(t.upstream, this.#linger)
  }

  #track(t: Tunnel, id: string): void {
    this.#untrack(t)
    t.id = id
    let set = this.#byUpstream.get(id)
    if (set === undefined) this.#byUpstream.set(id, (set = new Set()))
    set.add(t)
  }

  #untrack(t: Tunnel): void {
    const set = this.#byUpstream.get(t.id)
    if (set === undefined) return
    set.delete(t)
    if (set.size === 0) this.#byUpstream.delete(t.id)
  }

  /**
   * `Upgrade: h2c` and the like: Tether does not perform those upgrades, and Upgrade is
   * hop-by-hop, so the request is handed back to the HTTP server without its Upgrade header:
   * it is served as a plain request (the client keeps HTTP/1.1), body and keep-alive included.
   * Node hands every Upgrade request to the upgrade listener, hence this detour.
   */
  #notWebSocket(req: IncomingMessage, socket: Socket, head: Buffer): void {
    const server = this.#server
    if (server === null) return writeRawError(socket, 'TETHER_BAD_REQUEST', {}, this.#linger)
    let text = `${req.method} ${req.url} HTTP/${req.httpVersion}\r\n`
    const raw = req.rawHeaders
    for (let i = 0; i < raw.length; i += 2) {
      if (raw[i]!.toLowerCase() !== 'upgrade') text += `${raw[i]}: ${raw[i + 1]}\r\n`
    }
    // header values were decoded as latin1 by Node's parser: the same bytes go back
    socket.unshift(head.length > 0 ? Buffer.concat([Buffer.from(`${text}\r\n`, 'latin1'), head]) : Buffer.from(`${text}\r\n`, 'latin1'))
    server.emit('connection', socket)
  }
}

/** Is this an upgrade to WebSocket (Upgrade: websocket, case-insensitive, possibly in a list)? */
function isWebSocket(headers: IncomingHttpHeaders): boolean {
  const u = headers.upgrade
  return u !== undefined && u.split(',').some((p) => p.trim().toLowerCase() === 'websocket')
}

/** [name, value, ...] -> a header object with lower-cased names (repeated ones become arrays). */
function headerObject(raw: readonly string[]): Record<string, string | string[]> {
  const out: Record<string, string | string[]> = {}
  for (let i = 0; i < raw.length; i += 2) {
    const name = raw[i]!.toLowerCase()
    const value = raw[i + 1]!
    const prev = out[name]
    out[name] = prev === undefined ? value : Array.isArray(prev) ? [...prev, value] : [prev, value]
  }
  return out
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

/** http-proxy calls `socket.end()` after its error callback; skip that one call. */
function skipNextEnd(socket: Socket): void {
  const own = socket as Socket & { end: Socket['end'] }
  own.end = function skippedEnd(this: Socket) {
    delete (own as Partial<Socket>).end // the prototype's end() again
    return this
  } as Socket['end']
}

