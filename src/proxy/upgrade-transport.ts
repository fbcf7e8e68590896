// The upgrade transport: the only file that imports http-proxy. After the request path decided
// where a WebSocket upgrade goes (the same decision, headers, epochs, rehydration and retries
// as a plain request), a Tunnel sends the handshake and, on the upstream's 101, pipes the two
// raw sockets byte for byte (subprotocols, extensions, binary frames, ping/pong and close codes
// pass untouched). Owns the open tunnels: the connection limit, the idle timeout, and closing
// them (1012 when their upstream dies, 1001 at shutdown; nothing added when the client closed
// first). Never decides where a request goes.
import type { ClientRequest, IncomingMessage } from 'node:http'
import { Agent as HttpsAgent } from 'node:https'
import type { Socket } from 'node:net'
import { createRequire } from 'node:module'
import type { Duplex } from 'node:stream'
import util from 'node:util'
import type httpProxy from 'http-proxy'
import { UpstreamTlsSource } from '../tls/upstream-tls.js'
import { systemTimers, type Timers } from '../clock.js'
import { ERRORS, TetherError, type ErrorCode } from '../errors.js'
import type { Logger } from '../observability/logger.js'
import type { Upstream } from '../upstream/upstream-set.js'
import type { AnswerHeadPolicy, Answered, Attempt, Exchange } from './exchange.js'
import type { Decision } from '../routing/decision.js'
import { classify, type Outcome } from './outcome.js'
import { clientIdleTimeout } from './deadlines.js'
import { ownHeadRefused, stateRefused, type AttemptResult, type RequestContext } from './request-context.js'
import { endThenDestroy, writeRawError } from './respond.js'
import { CLOSE_GOING_AWAY, CLOSE_SERVICE_RESTART, FrameTracker, closeFrame, completesHandshake } from './websocket-frames.js'
import { REASON_PHRASE } from './headers.js'

/**
 * http-proxy 1.18.1 keeps `util._extend` when it loads and calls it for every handshake; on Node
 * 22 and later that call prints DEP0060 ("The `util._extend` API is deprecated") to stderr at
 * the first WebSocket. It is loaded here with `util._extend` swapped, for the time of the
 * require only, for the same copy (own enumerable keys of an object source, as Node's), so
 * neither the warning nor the swap reaches anything else (test/upgrade-edges.test.ts, in the
 * Node 24 pass).
 */
function loadHttpProxy(): typeof httpProxy {
  const u = util as unknown as { _extend: unknown }
  const nodeOwn = u._extend
  u._extend = (target: Record<string, unknown>, source: unknown): Record<string, unknown> => {
    if (source === null || typeof source !== 'object') return target
    for (const key of Object.keys(source)) target[key] = (source as Record<string, unknown>)[key]
    return target
  }
  try {
    return createRequire(import.meta.url)('http-proxy') as typeof httpProxy
  } finally {
    u._extend = nodeOwn
  }
}
const HttpProxy = loadHttpProxy()

export interface UpgradeOptions {
  /** Most WebSockets open (and handshaking) at once; beyond, 503 on the raw socket. */
  readonly maxConnections: number
  /** No byte in either direction for this long (ms) destroys both sockets; 0 = no limit. */
  readonly idleTimeout: number
  /** TCP connect to the upstream, ms (timeouts.connect). */
  readonly connect: number
  /** Handshake sent -> upstream's answer head, ms (timeouts.response_headers). */
  readonly responseHeaders: number
  /** Longest silence in the body of an upstream's refusal (an answer other than 101), ms (timeouts.body_idle); 0 = none. */
  readonly bodyIdle?: number
  /** After Tether sent a close frame and ended a socket, it is destroyed after this, ms (default 2000). */
  readonly closeLinger?: number
  /** Timers for handshake deadlines and lingers (default the global ones). */
  readonly timers?: Timers
}

/** Lifecycle of one client connection that asked to upgrade. */
type TunnelState = 'connecting' | 'open' | 'closed'

/**
 * Example (composition root): `const upgrades = new Upgrades(logger, answerHead, options)`; the
 * request path asks `upgrades.exchange(socket, head)` for each upgrade, and health transitions
 * call `upgrades.closeUpstream(id)`.
 */
export class Upgrades {
  readonly #logger: Logger
  readonly #answer: AnswerHeadPolicy
  readonly #options: UpgradeOptions
  readonly #linger: number
  readonly #proxy: httpProxy
  /** Client socket -> its tunnel, for http-proxy's per-request hooks. */
  readonly #bySocket = new WeakMap<Duplex, Tunnel>()
  /** Upstream socket -> its tunnel, until http-proxy has piped it. */
  readonly #byUpstreamSocket = new WeakMap<Socket, Tunnel>()
  /** Tunnels by upstream id: O(1) add and remove, and closeUpstream without a scan. */
  readonly #byUpstream = new Map<string, Set<Tunnel>>()
  /** Every client connection handed over and not closed yet (also those no longer tunnelling). */
  readonly #live = new Set<Tunnel>()
  /** https:// upstreams: one agent each with its TLS settings (keyed by URL and settings), made again when its files change. */
  readonly #agents = new Map<string, { readonly source: UpstreamTlsSource; version: number; agent: HttpsAgent | null }>()
  #count = 0
  #shutDown = false

  constructor(logger: Logger, answer: AnswerHeadPolicy, options: UpgradeOptions) {
    this.#logger = logger
    this.#answer = answer
    this.#options = options
    this.#linger = options.closeLinger ?? 2_000
    // xfwd off: X-Forwarded-* come from the same header rules as plain requests
    this.#proxy = HttpProxy.createProxyServer({ ws: true, xfwd: false, prependPath: false })
    // with a per-call callback http-proxy reports there; a listener still guards the process
    this.#proxy.on('error', (err) => logger.warn({ err }, 'websocket proxy error'))
    this.#proxy.on('proxyReqWs', (proxyReq, _req, socket) => this.#bySocket.get(socket)?.onProxyReq(proxyReq))
    // the frame trackers start reading once http-proxy has piped the sockets: a 'data' listener
    // before the pipe exists would start the flow, and the bytes that came with the 101 (a
    // server that speaks first), or the client's held early bytes, would go to the tracker only
    this.#proxy.on('open', (up: Socket) => {
      const t = this.#byUpstreamSocket.get(up)
      if (t === undefined) return
      this.#byUpstreamSocket.delete(up)
      t.trackFrames(up)
    })
  }

  /** Open tunnels (and handshakes in progress). */
  get size(): number {
    return this.#count
  }

  /**
   * Established tunnels only (the upstream answered 101), for tether_websocket_connections: a
   * handshake waiting for its upstream, or a refusal being passed on, is no connection yet.
   * Counted when read (at a scrape), over at most `maxConnections`: nothing on the tunnels' path.
   */
  get established(): number {
    let n = 0
    for (const t of this.#live) if (t.state === 'open') n++
    return n
  }

  /** Open tunnels (and handshakes in progress) to upstream `id`. */
  countByUpstream(id: string): number {
    return this.#byUpstream.get(id)?.size ?? 0
  }

  /**
   * The transport of one upgrade request on `socket` (`head`: bytes the client sent after its
   * request head). Null when `websocket.max_connections` are open: 503 was answered.
   */
  exchange(socket: Socket, head: Buffer): Exchange | null {
    if (this.#count >= this.#options.maxConnections) {
      writeRawError(socket, 'TETHER_TOO_MANY_CONNECTIONS', {}, this.#linger, this.timers)
      return null
    }
    const t = new Tunnel(this, socket, head)
    this.#count++
    this.#live.add(t)
    this.#bySocket.set(socket, t)
    socket.once('close', () => this.#release(t))
    return t
  }

  /**
   * Close every tunnel to upstream `id`: a close frame with `code` (1012, service restart, when
   * its upstream died) is sent to each client (unless the upstream already sent one, or a
   * frame is half written: then the socket just ends), then both sides close. Handshakes in
   * progress to `id` are stopped and the request path routes them again. Returns how many.
   */
  closeUpstream(id: string, code = CLOSE_SERVICE_RESTART): number {
    const set = this.#byUpstream.get(id)
    if (set === undefined) return 0
    let n = 0
    for (const t of [...set]) {
      t.close(code)
      n++
    }
    return n
  }

  /**
   * The same for every tunnel (1001, going away, at shutdown); any other client connection
   * still open (an answered refusal the client keeps open) is closed too, so the listener can stop.
   */
  closeAll(code = CLOSE_GOING_AWAY): number {
    this.#shutDown = true
    let n = 0
    for (const id of [...this.#byUpstream.keys()]) n += this.closeUpstream(id, code)
    for (const t of [...this.#live]) if (t.state !== 'open') t.destroy()
    return n
  }

  // --- for Tunnel ---

  /**
   * http-proxy's options for a handshake to `upstream`: its URL, and for https:// an agent with
   * its CA, client pair, name (never the client's Host) and verification.
   */
  targetOf(upstream: Upstream): httpProxy.ServerOptions {
    if (!upstream.url.startsWith('https:')) return { target: upstream.url }
    const key = `${upstream.url} ${JSON.stringify(upstream.tls)}`
    let entry = this.#agents.get(key)
    if (entry === undefined) {
      entry = { source: new UpstreamTlsSource(upstream.url, upstream.tls), version: -1, agent: null }
      this.#agents.set(key, entry)
    }
    // the files as they are now (a renewed client certificate is used from the next handshake on)
    const tls = entry.source.current()!
    if (entry.agent === null || entry.version !== entry.source.version) {
      entry.agent = new HttpsAgent({ ...tls, servername: tls.servername ?? '', keepAlive: false })
      entry.version = entry.source.version
    }
    return { target: upstream.url, agent: entry.agent, secure: entry.agent.options.rejectUnauthorized !== false }
  }

  get proxy(): httpProxy {
    return this.#proxy
  }

  get logger(): Logger {
    return this.#logger
  }

  get answer(): AnswerHeadPolicy {
    return this.#answer
  }

  get options(): UpgradeOptions {
    return this.#options
  }

  /**
   * closeAll ran (a graceful stop's grace period ended): a handshake still waiting for its
   * upstream's answer was cut by Tether, logged `TETHER_SHUTTING_DOWN` (as Forwarder.cutOff's).
   */
  get shutDown(): boolean {
    return this.#shutDown
  }

  get linger(): number {
    return this.#linger
  }

  get timers(): Timers {
    return this.#options.timers ?? systemTimers
  }

  piping(up: Socket, t: Tunnel): void {
    this.#byUpstreamSocket.set(up, t)
  }

  track(t: Tunnel, id: string): void {
    this.untrack(t)
    t.id = id
    let set = this.#byUpstream.get(id)
    if (set === undefined) this.#byUpstream.set(id, (set = new Set()))
    set.add(t)
  }

  untrack(t: Tunnel): void {
    const set = this.#byUpstream.get(t.id)
    if (set === undefined) return
    set.delete(t)
    if (set.size === 0) this.#byUpstream.delete(t.id)
  }

  /** The client socket closed: free its slot; a tunnel still open ends its upstream side. */
  #release(t: Tunnel): void {
    this.#count--
    this.#live.delete(t)
    t.release()
    this.untrack(t)
  }
}

const EMPTY = Buffer.alloc(0)
/**
 * Bytes a client may send after its handshake and before the 101 (pipelined frames, a protocol
 * where the client speaks first) that Tether holds for the tunnel. A client that sends more
 * breaks RFC 6455 section 4.1 (it must wait for the server's answer) past what Tether carries:
 * its handshake is stopped and it is answered 400 (see Tunnel.#overflow).
 */
export const EARLY_BYTES_MAX = 64 * 1024
/** A handshake Tether cut because its graceful stop's grace period ended (see Upgrades.shutDown). */
const SHUT_DOWN: Outcome = { kind: 'error', code: 'TETHER_SHUTTING_DOWN', connect: false }
/** The upstream refused a handshake that carried the user's state in a header (431, or 400 to a long one): sent again without it. */
const STATE_TOO_LARGE: Outcome = { kind: 'error', code: 'TETHER_HEADERS_TOO_LARGE', connect: false }
/** The client left before the upstream answered its handshake: logged `client_abort`, no upstream blamed. */
const CLIENT_LEFT: AttemptResult = { status: 0, outcome: { kind: 'client_abort' }, error: null, responded: true }
/** Tether closed a handshake's client connection at its graceful stop's grace end (see Upgrades.shutDown). */
const CUT_AT_SHUTDOWN: AttemptResult = { status: 0, outcome: SHUT_DOWN, error: null, responded: true }
/** The client sent more than EARLY_BYTES_MAX before the 101: answered 400 by Tether, the client's fault (no retry, no health report). */
const EARLY_OVERFLOW: AttemptResult = { status: 400, outcome: { kind: 'error', code: 'TETHER_BAD_REQUEST', connect: false }, error: null, responded: true }

/** One client connection that asked to upgrade: its handshake attempts, then the open tunnel. */
class Tunnel implements Exchange {
  state: TunnelState = 'connecting'
  /** Upstream id of the current attempt. */
  id = ''
  /** Upstream -> client frame boundaries, so a close frame is only ever written between frames. */
  readonly frames = new FrameTracker()
  /** Client -> upstream frames, for whether the client sent its close frame (see #clientClosing). */
  readonly #clientFrames = new FrameTracker()
  /** The client ended its side of the open tunnel (its FIN). */
  #clientFin = false
  readonly #owner: Upgrades
  readonly #client: Socket
  /** What the client sent after its request head, held until the tunnel opens (see #watchClient). */
  #early: Buffer[] = []
  #earlyBytes = 0
  /**
   * Aborted when the client leaves (its socket closed, or it ended its side before a 101), its
   * reason the AttemptResult to log: CLIENT_LEFT, CUT_AT_SHUTDOWN when Tether closed it, or
   * EARLY_OVERFLOW when Tether refused it for the bytes it sent before the 101.
   */
  readonly #gone = new AbortController()
  #ctx: RequestContext | null = null
  #upstream: Socket | null = null
  #proxyReq: ClientRequest | null = null
  #timer: unknown = null
  /** An upstream's refusal whose body is still passed on (the attempt settles when it ends or is cut), and why it was cut. */
  #refusal: IncomingMessage | null = null
  #refusalError: unknown = null
  /** Resolves the current attempt (once). */
  #settle: ((r: AttemptResult) => void) | null = null
  /** Handshakes sent so far (the current attempt's number). */
  #attempts = 0
  /** The number of the attempt whose upstream answer head arrived (0: none yet). */
  #headed = 0
  /** The Sec-WebSocket-Key the current attempt sent (null: none, or several), which its 101 must answer. */
  #key: string | null = null

  constructor(owner: Upgrades, client: Socket, head: Buffer) {
    this.#owner = owner
    this.#client = client
    this.#watchClient(head)
  }

  get clientGone(): boolean {
    return this.#client.destroyed
  }

  /**
   * Aborted when the client leaves: the request path stops a rehydration hook it runs for this
   * handshake. Its reason is how the request ends (see Exchange.gone).
   */
  get gone(): AbortSignal {
    return this.#gone.signal
  }

  /**
   * While the handshake is in progress the client socket is read, so that its leaving is seen:
   * a paused socket never tells a FIN (it would sit unread until response_headers, holding the
   * upstream's handshake and a `max_connections` place). What it sends meanwhile (`head`, the
   * bytes after its request head, first) is held in order, up to EARLY_BYTES_MAX (more is
   * refused: #overflow), and put back into the socket when the upstream switches, so the tunnel
   * carries it first. A FIN before the 101 is the client leaving, as nginx takes it (its
   * epoll reports the half-close and it closes the upstream request with 499): the client
   * socket is destroyed, which stops the handshake (see release()).
   */
  #watchClient(head: Buffer): void {
    const client = this.#client
    if (head.length > 0) this.#keep(head)
    client.on('data', this.#onEarly)
    client.once('end', this.#onEarlyEnd)
    if (this.state === 'connecting') client.resume()
  }

  readonly #onEarly = (chunk: Buffer): void => this.#keep(chunk)

  readonly #onEarlyEnd = (): void => {
    if (this.state === 'connecting') this.#client.destroy()
  }

  #keep(chunk: Buffer): void {
    this.#early.push(chunk)
    this.#earlyBytes += chunk.length
    if (this.#earlyBytes > EARLY_BYTES_MAX) this.#overflow()
  }

  /**
   * The client sent more than EARLY_BYTES_MAX before the 101. Paused, its socket would no longer
   * tell its leaving (nor, with libuv, a reset): the upstream's handshake and the
   * `max_connections` place stayed held until the 101 or `response_headers`. Kept reading, the
   * bytes would have to be dropped, and a tunnel missing them is no tunnel. So the handshake is
   * stopped (its request upstream closed, a rehydration hook stopped, no retry: the client's
   * fault, no health report) and the client is answered 400; what it still sends is read and
   * dropped until its FIN (or the linger), so the 400 is not lost to a reset. nginx 1.22 and
   * HAProxy 2.6 leave such a handshake waiting for the upstream (their read timeout).
   */
  #overflow(): void {
    if (this.state !== 'connecting') return
    this.state = 'closed'
    this.#gone.abort(EARLY_OVERFLOW)
    this.#disarm()
    this.#unwatchClient(false)
    this.#owner.untrack(this)
    // its error reaches #onProxyError, which does nothing for a closed tunnel
    this.#proxyReq?.destroy()
    this.#proxyReq = null
    const client = this.#client
    writeRawError(client, 'TETHER_BAD_REQUEST', {}, this.#owner.linger, this.#owner.timers)
    client.resume()
    this.#done(EARLY_OVERFLOW)
  }

  /**
   * The handshake is over: the client socket is no longer read here (paused). `tunnel`: the
   * bytes held go back into it, read first by the tunnel's pipe; else they are dropped.
   */
  #unwatchClient(tunnel: boolean): void {
    const client = this.#client
    client.removeListener('data', this.#onEarly)
    client.removeListener('end', this.#onEarlyEnd)
    client.pause()
    if (tunnel && this.#earlyBytes > 0 && !client.destroyed) client.unshift(this.#early.length === 1 ? this.#early[0]! : Buffer.concat(this.#early))
    this.#early = []
    this.#earlyBytes = 0
  }

  attempt(ctx: RequestContext, decision: Decision, upstream: Upstream, headers: string[]): Attempt {
    this.#ctx = ctx
    ctx.decision = decision
    this.#owner.track(this, upstream.id)
    const req = ctx.req
    // the one protocol Tether tunnels, as RFC 6455 spells it. The client's Upgrade may list
    // others, or come on two lines, or in another letter case (RFC 9110 section 7.8: the
    // listener took it for WebSocket because the list names websocket); http-proxy destroys the
    // client socket without a word unless the value is exactly that one, and an upstream offered
    // another protocol could switch to it, which this tunnel would carry as WebSocket frames
    // (added to a copy: the request path sends `headers` again, without the state, after a 431)
    const sent = [...headers, 'connection', 'Upgrade', 'upgrade', 'websocket']
    // http-proxy copies req.headers and req.url into the handshake: give it a view with ours
    // instead of rewriting the inbound request
    const view = Object.create(req, {
      headers: { value: headerObject(sent), enumerable: true },
      url: { value: ctx.target.path, enumerable: true },
    }) as IncomingMessage
    const key = view.headers['sec-websocket-key']
    this.#key = typeof key === 'string' ? key : null
    const nth = ++this.#attempts
    const done = new Promise<AttemptResult>((resolve) => {
      this.#settle = resolve
      // the client left before this attempt (while Tether chose the upstream, fetched the
      // user's state or ran the hook): nothing is sent upstream, and it is not counted on the
      // upstream (release() untracked it already: it would stay in #byUpstream for good)
      if (this.state === 'closed' || this.#client.destroyed) {
        this.#owner.untrack(this)
        return this.#done(this.#left())
      }
      try {
        // the client's early bytes are held here, not unshifted by http-proxy (see #watchClient)
        // an error of an earlier attempt's handshake (one refused for the state it carried) is
        // not this one's: http-proxy's end() of the client socket after it is skipped too
        this.#owner.proxy.ws(view, this.#client, EMPTY, this.#owner.targetOf(upstream), (err: Error) => (nth === this.#attempts ? this.#onProxyError(err) : skipNextEnd(this.#client)))
      } catch (err) {
        // http.request() refused the handshake (e.g. a header value it will not send)
        this.#owner.logger.warn({ err, upstream: upstream.id }, 'websocket handshake could not be sent')
        this.#proxyReq?.destroy()
        this.#proxyReq = null
        this.#done({ status: 0, outcome: { kind: 'error', code: 'TETHER_BAD_REQUEST', connect: false }, error: err, responded: false })
      }
    })
    // one handshake at a time per tunnel: the handle reads whether this one's answer head came
    // (not the tunnel's state: a client that left before it is no answer, and the request path
    // takes a give-up after the probe timeout as a hint to probe the upstream, as for HTTP)
    const tunnel = this
    return {
      onEnd: (watcher) => void done.then((r) => watcher.ended(r), (err: unknown) => watcher.failed(err)),
      get answered() { return tunnel.#headed === nth },
      stop: (code) => this.#stop(new TetherError(code)),
    }
  }

  fail(_ctx: RequestContext, code: ErrorCode): Answered {
    this.state = 'closed'
    this.#unwatchClient(false)
    this.#owner.untrack(this)
    const sent = this.#client.writable
    writeRawError(this.#client, code, {}, this.#owner.linger, this.#owner.timers)
    return { status: sent ? ERRORS[code].status : 0 } // the status written, for the access log and metrics
  }

  /** http-proxy created the upstream request (before its own listeners): timers and hooks. */
  onProxyReq(proxyReq: ClientRequest): void {
    if (this.state === 'closed') {
      proxyReq.destroy()
      return
    }
    this.#proxyReq = proxyReq
    // the request-target's path exactly as the client wrote it (as validated by the request
    // path), as plain requests send it: http-proxy built its own from url.parse() and urlJoin(),
    // which turn "\" into "/" and collapse runs of "/" ("/ws\..\admin" became "/ws/../admin",
    // a path a filter in front never saw; RFC 9110 section 7.7). Node writes the request line
    // from `path` when the head goes out, at http-proxy's end() right after this hook (no Expect
    // header is ever sent upstream, which would have written it already)
    proxyReq.path = this.#ctx!.target.path
    const { connect, responseHeaders } = this.#owner.options
    this.#arm(connect, 'TETHER_UPSTREAM_CONNECT_TIMEOUT')
    proxyReq.once('socket', (s: Socket) => {
      const waitHead = (): void => { if (this.#proxyReq === proxyReq) this.#arm(responseHeaders, 'TETHER_UPSTREAM_TIMEOUT') }
      if (s.connecting) s.once('connect', waitHead)
      else waitHead()
    })
    // a 101 that does not complete the client's WebSocket handshake (no `Upgrade: websocket`,
    // no or a wrong Sec-WebSocket-Accept; RFC 6455 section 4.1) is one no WebSocket client may
    // use, and a tunnel on it would carry raw bytes to the upstream past Tether's rules: taken
    // before http-proxy's listener (which writes a 101 and pipes), answered 502. Example: an
    // application that reflects a status the client chose (`/proxy?status=101`) gave the
    // client a raw connection to itself, its next request written into it unseen by Tether
    // (WebSocket smuggling). HAProxy 2.6 answers 502 to a 101 without the right accept. Nor is
    // a 101 whose status line says HTTP/2.0 or HTTP/0.9 (see unreadableVersion), as on the plain path
    take(proxyReq, 'upgrade', (res, up) => {
      if (this.#proxyReq !== proxyReq || this.state !== 'connecting') return false
      const version = unreadableVersion(res)
      if (version === null && completesHandshake(res.headers, this.#key)) return false
      this.#headed = this.#attempts
      this.#invalidAnswer(up as Socket, false, version)
      return true
    })
    // registered before http-proxy's own listeners, so these run first
    proxyReq.once('upgrade', (res: IncomingMessage, up: Socket) => this.#onUpgrade(res, up))
    proxyReq.once('response', (res: IncomingMessage) => this.#onRefused(res))
    // the upstream refused the head with the user's state in it (over its header limit) before
    // its application ran (RFC 6585 section 5; or 400 to a long state line, as nginx and Apache
    // answer: see stateRefused): sent again without it, as a plain request.
    // Taken before any 'response' listener: http-proxy's would pass it on to the client. Only a
    // handshake that carries the state needs it (the request path sets rehydrateBytes before
    // the attempt and clears it for the resend): for any other, a 431 is the client's answer
    if (this.#ctx!.rehydrateBytes > 0) {
      take(proxyReq, 'response', (res) => {
        if (this.#ctx!.rehydrateBytes === 0 || !stateRefused(this.#ctx!.rehydrateBytes, res.statusCode ?? 0) || this.#proxyReq !== proxyReq || this.state !== 'connecting') return false
        this.#refusedState(res)
        return true
      })
    }
  }

  /**
   * Close from Tether's side: an open tunnel gets a close frame; a handshake in progress is
   * stopped and reported as a failed attempt (the request path routes it again or answers).
   */
  close(code: number): void {
    if (this.state === 'open') this.#finish(code, true)
    else if (this.state === 'connecting') this.#stop(new TetherError('TETHER_UPSTREAM_UNAVAILABLE'))
  }

  /** Close the client connection now (shutdown). */
  destroy(): void {
    // at once, not at the socket's 'close' (a later turn): a hook or a store read still in
    // progress for this handshake stops now and the request is logged as cut by the stop
    this.#gone.abort(CUT_AT_SHUTDOWN)
    this.#proxyReq?.destroy()
    this.#client.destroy()
  }

  /** The client socket closed. */
  release(): void {
    this.#disarm()
    const left = this.#left()
    this.#gone.abort(left)
    const was = this.state
    this.state = 'closed'
    if (was === 'connecting') {
      this.#unwatchClient(false)
      this.#proxyReq?.destroy()
      this.#done(left)
    }
    // the client left during a refusal's body: it settles as the client's abort
    this.#refusal?.destroy()
    if (this.#upstream !== null && !this.#upstream.destroyed) endThenDestroy(this.#upstream, this.#owner.linger, this.#owner.timers)
  }

  /**
   * How a handshake whose client connection is gone ends: as Tether's stop cut it at the grace
   * period's end (see Upgrades.shutDown), else as its client's abort.
   */
  #left(): AttemptResult {
    if (this.#gone.signal.aborted) return this.#gone.signal.reason as AttemptResult
    return this.#owner.shutDown ? CUT_AT_SHUTDOWN : CLIENT_LEFT
  }

  #arm(ms: number, code: ErrorCode): void {
    this.#disarm()
    const req = this.#proxyReq
    this.#timer = this.#owner.timers.setTimeout(() => {
      this.#timer = null
      req?.destroy(new TetherError(code))
    }, ms)
  }

  #disarm(): void {
    if (this.#timer !== null) this.#owner.timers.clearTimeout(this.#timer)
    this.#timer = null
  }

  /** Stop the handshake in progress with `err` (reported through http-proxy's error callback). */
  #stop(err: TetherError): void {
    if (this.state !== 'connecting' || this.#settle === null) return
    const req = this.#proxyReq
    if (req !== null) req.destroy(err)
    else this.#onProxyError(err)
  }

  /** http-proxy piped the two sockets (its 'open'): both directions' frames are followed from now on. */
  trackFrames(up: Socket): void {
    up.on('data', (chunk: Buffer) => this.frames.push(chunk))
    this.#client.on('data', (chunk: Buffer) => this.#clientFrames.push(chunk))
  }

  /** The upstream switched protocols; http-proxy writes the 101 and pipes after this. */
  #onUpgrade(res: IncomingMessage, up: Socket): void {
    this.#disarm()
    this.#proxyReq = null
    if (this.state === 'closed') {
      up.destroy()
      return
    }
    this.#headed = this.#attempts
    this.state = 'open'
    this.#upstream = up
    this.#unwatchClient(true)
    const ctx = this.#ctx!
    ctx.answering = this // the upstream's answer is the client's (not so for Tether's 502 in #invalidAnswer)
    // the 101's headers as the client gets them: learning and checkpoints as for any answer
    // (a checkpoint write cannot hold a 101: it goes out at once), reserved and hop-by-hop
    // headers removed except the two the upgrade itself needs, the decision's cookie added
    const upgrade = res.headers.upgrade
    this.#holdAnswer(ctx, res.headers)
    const headers = (res.headers = this.#owner.answer.decorate(ctx, res.headers))
    // no 1xx has content (RFC 9110 section 8.6: a server MUST NOT send Content-Length in one;
    // RFC 9112 section 6.3: its head ends the message): the bytes after the 101's head are the
    // new protocol's, and go on as the tunnel's first. The field is dropped, as HAProxy 2.6 does
    // (nginx 1.22 passes it on): a client reading it would take a WebSocket frame for a body
    delete headers['content-length']
    headers.connection = 'Upgrade'
    if (upgrade !== undefined) headers.upgrade = upgrade
    this.#owner.piping(up, this)
    // before the pipe's own 'end' listener: a close without a close frame (the process died,
    // the kernel sent FIN) is told to the client as 1012, not a bare 1006 (unless the client
    // closed first: see #upstreamGone)
    up.once('end', () => this.#upstreamGone())
    up.once('close', () => { if (this.state === 'open') this.#upstreamGone() })
    const idle = this.#owner.options.idleTimeout
    const client = this.#client
    client.once('end', () => this.#clientEnded())
    // replaces any socket timeout Node's server left (its keep-alive timeout after an earlier answer)
    client.setTimeout(idle)
    if (idle > 0) {
      // the client socket sees every byte of both directions (read from it or written to it)
      client.on('timeout', () => {
        this.#owner.logger.debug({ upstream: this.id }, 'websocket idle timeout')
        client.destroy()
        up.destroy()
      })
    }
    this.#done({ status: 101, outcome: null, error: null, responded: true })
  }

  /**
   * Learning as for any answer (a checkpoint write cannot hold it: it goes out at once). With
   * workers, what this answer wrote through about its user (a new user's pin, a move) reaches
   * the other workers first, as for a plain answer: http-proxy writes the head synchronously
   * after this, so the client socket is corked until then (at most the link's 2 s). Anything
   * that ends the client socket meanwhile flushes it at once (`end()` uncorks): a refused
   * handshake's answer when http-proxy ends it, a tunnel whose upstream closes right after its
   * 101, a shutdown's 1001. Those set up no tunnel to stay on, so that gap is left.
   */
  #holdAnswer(ctx: RequestContext, headers: IncomingMessage['headers']): void {
    const held = this.#owner.answer.inspect(ctx, headers, 'writes')
    if (held === null) return
    const client = this.#client
    client.cork()
    void held.then(() => { if (!client.destroyed) client.uncork() })
  }

  /**
   * The upstream's answer to the handshake is not HTTP a client may get: its side is destroyed
   * and the client gets Tether's 502 now. Unless the answer was taken from http-proxy
   * (`headFollows` false), it writes its own head right after this (synchronously, in the
   * same event): that write is skipped (a write after the end would destroy the socket before
   * the 502 is out, over TLS its body lost).
   */
  #invalidAnswer(upstream: { destroy(): void }, headFollows = true, version: string | null = null): void {
    this.#disarm()
    this.#proxyReq = null
    upstream.destroy()
    this.state = 'closed'
    this.#unwatchClient(false)
    this.#owner.untrack(this)
    writeRawError(this.#client, 'TETHER_UPSTREAM_PROTOCOL', {}, this.#owner.linger, this.#owner.timers)
    if (headFollows) skipNextWrite(this.#client)
    const error = new TetherError('TETHER_UPSTREAM_PROTOCOL', version === null ? undefined : new Error(`the upstream's status line says ${version}, not HTTP/1.0 or HTTP/1.1`))
    this.#done({ status: 502, outcome: { kind: 'error', code: 'TETHER_UPSTREAM_PROTOCOL', connect: false }, error, responded: true })
  }

  /** The upstream answered the handshake without switching (403, 404, 5xx): passed on as is. */
  #onRefused(res: IncomingMessage): void {
    this.#headed = this.#attempts
    const status = res.statusCode ?? 0
    // not an HTTP status (RFC 9110 section 15): a 502 of Tether's, as on the plain path; nor is
    // a 101 that Node's parser did not take for a switch (no `Upgrade`, or no `Connection:
    // upgrade`; RFC 9110 section 15.2.2): http-proxy would write it on as a 101 with no body. Nor
    // is a status line that says HTTP/2.0 or HTTP/0.9 (see unreadableVersion)
    const version = unreadableVersion(res)
    if (status < 100 || status > 599 || status === 101 || version !== null) return this.#invalidAnswer(res, true, version)
    // a reason phrase a client must be able to read (no control bytes): else none
    if (!REASON_PHRASE.test(res.statusMessage ?? '')) res.statusMessage = ''
    // http-proxy writes the status line with the upstream's version: Tether's own goes out, as on
    // the plain path (RFC 9110 section 6.2: an intermediary sends its own HTTP-version); an
    // HTTP/1.0 upstream's `HTTP/1.0 403` reached an HTTP/1.1 client as is
    res.httpVersion = '1.1'
    this.#disarm()
    this.#proxyReq = null
    if (this.state === 'connecting') this.state = 'closed'
    this.#unwatchClient(false)
    this.#owner.untrack(this) // before health hears of it: an ejection it causes must not close this answer
    const ctx = this.#ctx!
    ctx.answering = this
    // the client's own head refused after the state was left out: no move recorded
    if (ownHeadRefused(ctx, status)) ctx.decision = { ...ctx.decision!, setCookie: null }
    else this.#holdAnswer(ctx, res.headers)
    // http-proxy writes these headers and pipes the decoded body, then ends: no framing headers
    // may claim otherwise, and the connection closes after it
    res.headers = this.#owner.answer.decorate(ctx, res.headers)
    res.headers.connection = 'close'
    // http-proxy ends the client's side after the body; a client that keeps its side open (or
    // sent more bytes behind its request) is cut off after the linger
    this.#refusal = res
    res.once('end', () => {
      endThenDestroy(this.#client, this.#owner.linger, this.#owner.timers)
      this.#refusalEnded(res, status)
    })
    // the body cut short (the upstream died, or body_idle): no 'end' comes
    res.on('error', (err) => { this.#refusalError ??= err })
    res.once('close', () => this.#refusalEnded(res, status))
    this.#boundRefusal(res)
  }

  /**
   * A 431 (or a 400 to a long state line: see stateRefused) to a handshake that carried the
   * user's state in a header: nothing of it is the
   * client's. Its connection is closed (the body discarded unread) and the attempt fails
   * unanswered with `TETHER_HEADERS_TOO_LARGE`, so the request path sends the handshake again,
   * on a new connection, without the state (RequestPath's #withoutState, as for a plain
   * request). The client socket is still read: its early bytes stay held for the 101, and its
   * leaving meanwhile ends the request as the client's abort.
   */
  #refusedState(res: IncomingMessage): void {
    this.#headed = this.#attempts
    this.#disarm()
    this.#proxyReq = null
    res.on('error', () => undefined) // its cut (below) is the end wanted
    res.destroy()
    this.#done({ status: 0, outcome: STATE_TOO_LARGE, error: new TetherError('TETHER_HEADERS_TOO_LARGE'), responded: false })
  }

  /**
   * The refusal's body ended, or its answer closed without ending: the upstream died in it (or
   * it stalled past body_idle, or the client left). A refusal cut short cuts the client
   * connection at once, as nginx and HAProxy do (http-proxy ends it only after a whole body:
   * it stayed open for ever). The attempt settles here, so a cut is logged and counted against
   * the upstream as any answer cut off mid-body. Example: `404`, `Content-Length: 100`, 9
   * bytes, the upstream closes -> the client's connection closes, access log outcome
   * `TETHER_UPSTREAM_RESET`.
   */
  #refusalEnded(res: IncomingMessage, status: number): void {
    if (this.#refusal !== res) return
    this.#refusal = null
    if (res.readableEnded) return this.#done({ status, outcome: null, error: null, responded: true })
    const client = this.#client
    const error = this.#refusalError ?? new TetherError('TETHER_UPSTREAM_RESET', new Error('the refusal ended before its body'))
    const outcome = classify(error, client.destroyed)
    client.destroy()
    this.#done({ status, outcome, error: outcome.kind === 'client_abort' ? null : error, responded: true })
  }

  /**
   * The refusal's body may be silent `bodyIdle` between chunks, as any answer's: an upstream
   * that stalls in it (a stuck app) is cut with the client, which would else keep its
   * connection and a `max_connections` place for ever.
   */
  #boundRefusal(res: IncomingMessage): void {
    const idle = this.#owner.options.bodyIdle ?? 0
    if (idle === 0) return
    const timers = this.#owner.timers
    const client = this.#client
    let timer: unknown
    const arm = (): void => {
      timers.clearTimeout(timer)
      client.removeListener('drain', arm)
      timer = timers.setTimeout(cut, idle)
    }
    const end = (code: 'TETHER_UPSTREAM_TIMEOUT' | 'TETHER_CLIENT_TIMEOUT'): void => {
      this.#refusalError ??= new TetherError(code)
      res.destroy() // its 'close' cuts the client too
    }
    const cut = (): void => {
      if (!client.writableNeedDrain) return end('TETHER_UPSTREAM_TIMEOUT')
      // the client is slow to read it (the pipe paused the answer): not the upstream's stall;
      // the wait starts again once the client took what was written, and a client that takes
      // nothing for the client bound is cut, its doing (as a plain answer's, forward.ts)
      client.once('drain', arm)
      timer = timers.setTimeout(() => end('TETHER_CLIENT_TIMEOUT'), clientIdleTimeout({ body_idle: idle, response_headers: this.#owner.options.responseHeaders }))
    }
    arm()
    res.on('data', arm)
    res.once('close', () => {
      timers.clearTimeout(timer)
      client.removeListener('drain', arm)
    })
  }

  /** http-proxy's error callback: handshake failures, and upstream socket errors once open. */
  #onProxyError(err: Error): void {
    this.#disarm()
    if (this.state === 'open') return this.#upstreamGone()
    if (this.state === 'closed' || this.#settle === null) return
    this.#proxyReq = null
    // no longer bound to that upstream: an ejection caused by this report must not close it
    this.#owner.untrack(this)
    // http-proxy ends the client socket right after this callback returns (ws-incoming.js
    // onOutgoingError): the request path still owns it (a retry, or an error answer)
    skipNextEnd(this.#client)
    // at the grace period's end Tether stopped it (see Upgrades.shutDown): neither the client
    // nor the upstream failed; no retry, no warning, the upstream not suspected
    if (this.#owner.shutDown) return this.#done({ status: 0, outcome: SHUT_DOWN, error: null, responded: true })
    const outcome = classify(err, this.#client.destroyed)
    this.#done({ status: 0, outcome, error: err, responded: outcome.kind === 'client_abort' })
  }

  #done(r: AttemptResult): void {
    const settle = this.#settle
    this.#settle = null
    settle?.(r)
  }

  /**
   * The client ended its side of an open tunnel (FIN: a tab closed, a close frame then FIN): the
   * pipe ended the upstream's side, and an upstream that ends its own in answer closes the
   * tunnel as usual (its 'end', above). One that ignores the FIN (a hand-written server that
   * allows half-open connections) is given the linger to answer, then both sockets go, as
   * nginx closes a tunnel at either side's EOF: the tunnel, a descriptor pair and a
   * `max_connections` place, stayed until `idle_timeout` (an hour by default).
   */
  #clientEnded(): void {
    this.#clientFin = true
    if (this.state !== 'open') return
    const { linger, timers } = this.#owner
    const client = this.#client
    const up = this.#upstream
    const timer = timers.setTimeout(() => {
      if (this.state !== 'open') return
      this.state = 'closed'
      this.#owner.untrack(this)
      up?.destroy()
      client.destroy()
    }, linger)
    client.once('close', () => timers.clearTimeout(timer))
  }

  /**
   * The client began closing the tunnel on its own: its close frame passed, or its FIN (RFC 6455
   * section 7.1.1: the client may close TCP itself). Then the upstream's end is the other half
   * of that closing, not a restart.
   */
  #clientClosing(): boolean {
    return this.#clientFin || this.#clientFrames.closeSeen
  }

  /**
   * The upstream's side of an open tunnel ended. Without a close frame of its own (it died, or
   * the kernel sent its FIN) while the client had not begun closing, the connection failed (RFC
   * 6455 section 7.1.7, which asks for a close frame before the close): the client is told 1012,
   * so it reconnects (to the fallback replica) rather than seeing a bare 1006. When the client
   * closed first (its close frame, or its FIN: both ends closed on their own), its end is passed
   * on as is, as a byte pipe does: a 1012 behind the upstream's last frames would tell a client
   * that left to come back. nginx 1.22 and HAProxy 2.6 add no close frame either way.
   */
  #upstreamGone(): void {
    if (this.state !== 'open') return
    const closing = this.#clientClosing()
    this.#owner.logger.debug({ upstream: this.id, clean: this.frames.closeSeen, clientClosing: closing }, 'websocket upstream closed')
    this.#finish(closing ? null : CLOSE_SERVICE_RESTART, false)
  }

  /**
   * End an open tunnel: a close frame with `code` to the client when one can be written
   * (between frames, and the upstream sent none; `code` null: none), then both sockets end and
   * are destroyed after the linger.
   */
  #finish(code: number | null, destroyUpstream: boolean): void {
    if (this.state !== 'open') return
    this.state = 'closed'
    this.#owner.untrack(this)
    const client = this.#client
    if (code !== null && !this.frames.closeSeen && this.frames.atBoundary && client.writable) {
      this.frames.closeSeen = true
      client.write(closeFrame(code))
    }
    const { linger, timers } = this.#owner
    endThenDestroy(client, linger, timers)
    // what the client sends from now on (its close frame, then its FIN) is read and dropped, as
    // a lingering close does: its socket then closes at the FIN, not at the linger's end (the
    // pipe to the upstream, paused or gone, left it unread: each tunnel closed this way held
    // its descriptor and its `max_connections` place for the whole linger)
    client.unpipe()
    client.resume()
    if (this.#upstream !== null) {
      if (destroyUpstream) this.#upstream.destroy()
      else endThenDestroy(this.#upstream, linger, timers)
    }
  }
}

/**
 * The HTTP-version of an upstream's answer when it is not 1.0 or 1.1, e.g. 'HTTP/2.0', or null.
 * Node's parser takes `HTTP/2.0 101` and `HTTP/0.9 101` as it takes 1.1; no HTTP/1.1 server
 * sends either (RFC 9110 section 6.2: a response's major version is at most the request's;
 * HTTP/2 is binary frames, HTTP/0.9 has no status line). A 502, as forward.ts answers on the
 * plain path (nginx 1.22 and HAProxy 2.6 switch on an `HTTP/2.0 101`).
 */
function unreadableVersion(res: IncomingMessage): string | null {
  return res.httpVersionMajor === 1 && res.httpVersionMinor <= 1 ? null : `HTTP/${res.httpVersionMajor}.${res.httpVersionMinor}`
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
 * `fn(res, socket)` sees `req`'s answer head (its 'response', or its 'upgrade' with the
 * upstream socket) before that event's listeners (http-proxy's among them); when it returns
 * true they never see it, and `fn` owns `res` (and the socket).
 */
function take(req: ClientRequest, event: 'response' | 'upgrade', fn: (res: IncomingMessage, socket: Duplex | undefined) => boolean): void {
  const own = req as ClientRequest & { emit: ClientRequest['emit'] }
  const emit = own.emit
  own.emit = function emitUntaken(this: ClientRequest, name: string | symbol, ...args: unknown[]) {
    if (name === event && fn(args[0] as IncomingMessage, args[1] as Duplex | undefined)) return true
    return emit.call(this, name, ...args)
  } as ClientRequest['emit']
}

/** The next write() on `socket` does nothing (http-proxy's head after Tether answered itself). */
function skipNextWrite(socket: Socket): void {
  const own = socket as Socket & { write: Socket['write'] }
  own.write = function skippedWrite() {
    delete (own as Partial<Socket>).write // the prototype's write() again
    return true
  } as Socket['write']
}

/** http-proxy calls `socket.end()` after its error callback; skip that one call. */
function skipNextEnd(socket: Socket): void {
  const own = socket as Socket & { end: Socket['end'] }
  own.end = function skippedEnd(this: Socket) {
    delete (own as Partial<Socket>).end // the prototype's end() again
    return this
  } as Socket['end']
}
