// Active health checks: a background prober that sends `GET <path>` (or `OPTIONS *`) to every
// upstream on an interval with jitter and reports ok / not ok to the health table. Layer 3 adapter: it owns
// its timers and sockets, starts only on start() and leaves nothing behind after stop(). It
// uses node:http (undici belongs to the forwarder) and never decides health itself.
import http from 'node:http'
import https from 'node:https'
import { monotonicNow, systemClock, systemTimers, type Timers } from '../clock.js'
import type { UpstreamTlsConfig } from '../config/schema.js'
import { LOCAL_RESOURCE_CODES } from '../errors.js'
import { UpstreamTlsSource } from '../tls/upstream-tls.js'
import { isReplacement } from '../upstream/upstream-set.js'

export { systemTimers, type Timers }

/** Settings of the active checks (times in ms). */
export interface ActiveCheckOptions {
  /**
   * Request path, e.g. '/healthz' (GET, passing on `expected_status`); the upstream URL's own
   * path is not prepended. null: `OPTIONS *`, passing on any HTTP answer (the server is alive
   * and answering), which needs no endpoint in the app.
   */
  readonly path: string | null
  /** Time from the end of one probe to the start of the next (> 0). */
  readonly interval: number
  /**
   * Deadline for the probe's connect (from its start), then for its response head and body (from
   * the connect) (> 0); once more when Tether's own process stalled during it (see {@link ActiveChecker}).
   */
  readonly timeout: number
  /** Each probe is delayed by an extra random fraction in [0, jitter) of the interval (0..1). */
  readonly jitter: number
  /** Status range counted as healthy, inclusive; default 200..399. */
  readonly expected_status?: { readonly min: number; readonly max: number }
}

/** One upstream to probe. */
export interface ProbeTarget {
  readonly id: string
  /** http:// or https:// URL; its host (and port) is probed and sent as the Host header. */
  readonly url: string
  /** TLS settings of an https:// upstream (the same as its requests use). */
  readonly tls?: UpstreamTlsConfig | null
  /** Its pod's uid (discovery), when known. */
  readonly uid?: string
}

/** One finished probe, for logs and metrics. */
export interface ProbeEvent {
  readonly id: string
  readonly ok: boolean
  /** The response status, or null when no response arrived. */
  readonly status: number | null
  /** Node's error code (ECONNREFUSED, ECONNRESET, ...), 'ETIMEDOUT' for the probe's own timeout, null when the exchange completed. */
  readonly code: string | null
  /** Milliseconds from start to result, by the injected clock. */
  readonly duration: number
  /** When the probe started. */
  readonly at: number
  /**
   * Tether's own process stalled during the probe (a timer of its fired at least half a
   * timeout late), so the probe was given one more `timeout` before it counted as a timeout.
   */
  readonly stalled: boolean
}

/** Where results go: the health table, or anything with the same method. */
export interface ActiveResultSink {
  /**
   * `timedOut`: the probe got no answer within its timeout (not a refusal or a bad status);
   * `suspected`: it was asked for by probeSoon (a request waited on this upstream too long);
   * `cause`: why a failed probe failed (`ECONNREFUSED`, `status 503`, `timeout after 500 ms`).
   */
  reportActive(id: string, ok: boolean, timedOut?: boolean, suspected?: boolean, cause?: string | null): void
}

/** Injected time and randomness; the defaults are the real ones. */
export interface ActiveCheckerDeps {
  readonly timers?: Timers
  /** Uniform in [0, 1), for jitter. */
  readonly random?: () => number
  readonly clock?: { now(): number; monotonic?(): number }
}

const USER_AGENT = 'tether-health'
const DEFAULT_STATUS = Object.freeze({ min: 200, max: 399 })
const ANY_STATUS = Object.freeze({ min: 100, max: 599 })
/** How late (a share of `timeout`) a probe's timer must fire for the probe to get one more window. */
const STALL_SHARE = 0.5

interface Probe {
  cancel(): void
}

interface Target {
  readonly id: string
  readonly url: string
  /** Its TLS settings as JSON (a change makes a new target). */
  readonly tlsKey: string
  /** Its pod's uid, once known (another one makes a new target: a pod re-created at the same url). */
  uid: string | undefined
  readonly request: http.RequestOptions
  /** https://: the TLS options as the files are at each probe (a renewed client certificate is used at once). */
  readonly tls: UpstreamTlsSource | null
  timer: unknown
  probe: Probe | null
  /** The next probe answers a suspicion (probeSoon). */
  suspected: boolean
}

/**
 * Probes each upstream: the first probe comes after a jitter delay, each next one `interval`
 * plus a jitter delay after the previous one finished (as Envoy arms its interval timer after
 * the response), so probes of one upstream never overlap and Tether replicas drift apart.
 *
 * Every probe opens a fresh connection (`agent: false`) that is closed right after: it tests
 * what a new client connection meets (a wedged listener cannot hide behind an old keep-alive
 * socket), and no idle socket outlives a probe, so stop() has nothing pooled to chase. One
 * connection per upstream per interval costs nothing worth saving. Timers are unref'd, so an
 * idle checker never keeps the process alive (an in-flight probe does, for at most 3 x `timeout`);
 * stop() is still the clean way.
 *
 * A probe's timeout judges the upstream only for time Tether itself was there to send the
 * request and read the answer. As HAProxy's `timeout check`, it counts from when the probe's
 * connection is established (the socket's 'connect': for https the TCP connect, before the
 * handshake); the connect itself has `timeout` from the start (HAProxy: its own
 * `min(timeout connect, inter)`). So a stall of Tether before the connect completed does not eat
 * the answer's time. An answer (or connect) that arrived while Tether stalled wins over a timer
 * that fired late (the timer's verdict waits for setImmediate, after the poll phase has read
 * the sockets). And when a window's timer fired at least half a `timeout` late (Tether's
 * process was blocked: a long synchronous stretch or GC pause, or not scheduled), the probe gets
 * one more `timeout` from then, once: the stall may have held the request's write or the
 * answer's read. A loop that is merely busy (short callbacks, timers on time) is not a stall.
 * The extra window decides whatever happens in it, so a frozen upstream still fails, at most
 * one `timeout` later than it would have, and a Tether stalled for good cannot keep one up: a
 * probe takes at most connect (<= `timeout`) + `timeout` + one more `timeout`, plus the stall's
 * overrun. Envoy arms its `timeout` when the check starts and has no allowance for its own
 * stalls (a watchdog reports them).
 * Listeners and the sink run synchronously and must not throw.
 *
 * Example:
 * ```ts
 * const checker = new ActiveChecker({ path: '/healthz', interval: 5_000, timeout: 2_000, jitter: 0.1 }, health)
 * checker.setUpstreams([{ id: 'app-0', url: 'http://10.0.0.5:8080' }])
 * checker.onProbe((e) => metrics.observeProbe(e))
 * checker.start()
 * await checker.stop()   // at shutdown
 * ```
 */
export class ActiveChecker {
  readonly #options: ActiveCheckOptions
  readonly #status: { readonly min: number; readonly max: number }
  readonly #sink: ActiveResultSink
  readonly #timers: Timers
  readonly #random: () => number
  readonly #clock: { now(): number; monotonic?(): number }
  readonly #targets = new Map<string, Target>()
  readonly #closing = new Set<Promise<void>>()
  readonly #listeners = new Set<(e: ProbeEvent) => void>()
  #running = false

  constructor(options: ActiveCheckOptions, sink: ActiveResultSink, deps: ActiveCheckerDeps = {}) {
    const { path, interval, timeout, jitter } = options
    const status = options.expected_status ?? DEFAULT_STATUS
    if (path !== null && !path.startsWith('/')) throw new RangeError(`ActiveChecker: path must start with "/", got ${JSON.stringify(path)}`)
    if (!(interval > 0)) throw new RangeError(`ActiveChecker: interval must be > 0, got ${interval}`)
    if (!(timeout > 0)) throw new RangeError(`ActiveChecker: timeout must be > 0, got ${timeout}`)
    if (!(jitter >= 0 && jitter <= 1)) throw new RangeError(`ActiveChecker: jitter must be within 0..1, got ${jitter}`)
    if (!(status.min >= 100 && status.min <= status.max && status.max <= 599)) throw new RangeError(`ActiveChecker: expected_status must be a range within 100..599, got ${status.min}..${status.max}`)
    this.#options = options
    // OPTIONS * passes on any answer: the probe asks only "does the server answer at all?"
    this.#status = path === null ? ANY_STATUS : status
    this.#sink = sink
    this.#timers = deps.timers ?? systemTimers
    this.#random = deps.random ?? Math.random
    this.#clock = deps.clock ?? systemClock
  }

  /**
   * Sets the upstreams to probe, by id. New ones (and ones whose URL or pod uid changed) are probed
   * promptly if running; removed ones stop, an in-flight probe of theirs is aborted unreported.
   * Example: `checker.setUpstreams([{ id: 'app-0', url: 'http://127.0.0.1:9001' }])`.
   */
  setUpstreams(targets: readonly ProbeTarget[]): void {
    const next = new Map(targets.map((t) => [t.id, t]))
    for (const [id, target] of this.#targets) {
      const n = next.get(id)
      if (n?.url === target.url && JSON.stringify(n.tls ?? null) === target.tlsKey && !isReplacement(target, n)) {
        target.uid ??= n.uid
        continue
      }
      this.#cancel(target)
      this.#targets.delete(id)
    }
    for (const { id, url, tls, uid } of next.values()) {
      if (this.#targets.has(id)) continue
      const request = this.#requestOptions(url)
      let source: UpstreamTlsSource | null
      try {
        source = url.startsWith('https:') ? new UpstreamTlsSource(url, tls ?? null) : null
      } catch {
        continue // a TLS file gone since the config was checked: not probed (its requests fail alike)
      }
      const target: Target = { id, url, tlsKey: JSON.stringify(tls ?? null), uid, request, tls: source, timer: null, probe: null, suspected: false }
      this.#targets.set(id, target)
      if (this.#running) this.#schedule(target, 0)
    }
  }

  /** Starts probing (idempotent). Example: `checker.start()`. */
  start(): void {
    if (this.#running) return
    this.#running = true
    for (const target of this.#targets.values()) this.#schedule(target, 0)
  }

  /**
   * Stops probing: cancels timers, aborts in-flight probes (unreported) and resolves once their
   * sockets are closed. start() may be called again afterwards. Example: `await checker.stop()`.
   */
  async stop(): Promise<void> {
    this.#running = false
    for (const target of this.#targets.values()) this.#cancel(target)
    await Promise.all(this.#closing)
  }

  /**
   * Probe `id` now instead of at its next turn (a request waited on it too long, or a client gave
   * up waiting on it); its result is reported as `suspected`. A probe of it already in flight is
   * not doubled: that one answers the suspicion. Example: `checker.probeSoon('app-1')`.
   */
  probeSoon(id: string): void {
    const target = this.#targets.get(id)
    if (!this.#running || target === undefined) return
    target.suspected = true
    if (target.probe !== null) return
    if (target.timer !== null) this.#timers.clearTimeout(target.timer)
    target.timer = null
    target.probe = this.#probe(target)
  }

  /** Subscribes to finished probes; returns the unsubscribe function. */
  onProbe(listener: (e: ProbeEvent) => void): () => void {
    this.#listeners.add(listener)
    return () => { this.#listeners.delete(listener) }
  }

  #requestOptions(url: string): http.RequestOptions {
    const u = new URL(url)
    if (u.protocol !== 'http:' && u.protocol !== 'https:') throw new RangeError(`ActiveChecker: expected an http:// or https:// URL, got ${JSON.stringify(url)}`)
    return {
      hostname: u.hostname.replace(/^\[(.*)\]$/, '$1'),
      port: u.port === '' ? (u.protocol === 'https:' ? 443 : 80) : Number(u.port),
      path: this.#options.path ?? '*',
      method: this.#options.path === null ? 'OPTIONS' : 'GET',
      agent: false,
      headers: { host: u.host, 'user-agent': USER_AGENT, accept: '*/*' },
    }
  }

  #schedule(target: Target, base: number): void {
    const delay = base + this.#random() * this.#options.jitter * this.#options.interval
    target.timer = this.#setTimer(() => {
      target.timer = null
      target.probe = this.#probe(target)
    }, delay)
  }

  #cancel(target: Target): void {
    if (target.timer !== null) this.#timers.clearTimeout(target.timer)
    target.timer = null
    target.probe?.cancel()
    target.probe = null
  }

  #probe(target: Target): Probe {
    const at = this.#clock.now()
    const { timeout } = this.#options
    const req = target.tls === null ? http.request(target.request) : https.request({ ...target.request, ...target.tls.current() })
    const closed = new Promise<void>((resolve) => req.once('close', resolve))
    this.#closing.add(closed)
    void closed.then(() => this.#closing.delete(closed))
    let settled = false
    let stalled = false
    const settle = (): boolean => {
      if (settled) return false
      settled = true
      this.#timers.clearTimeout(timer)
      req.destroy()
      return true
    }
    const finish = (status: number | null, code: string | null): void => {
      if (!settle()) return
      target.probe = null
      const { min, max } = this.#status
      const ok = code === null && status !== null && status >= min && status <= max
      const suspected = target.suspected
      target.suspected = false
      // Tether's own lack of file descriptors says nothing of the upstream
      const inconclusive = code !== null && LOCAL_RESOURCE_CODES.has(code)
      if (!inconclusive) this.#sink.reportActive(target.id, ok, code === 'ETIMEDOUT', suspected, ok ? null : probeCause(status, code, timeout))
      const event: ProbeEvent = { id: target.id, ok, status, code, duration: this.#clock.now() - at, at, stalled }
      for (const listener of this.#listeners) listener(event)
      // a failure is checked again soon (as HAProxy's fastinter): one bad probe alone should
      // neither linger nor decide
      if (this.#running) this.#schedule(target, ok ? this.#options.interval : this.#options.interval / 4)
    }
    // One window of `timeout`: first for the connect, from the start; then, from the socket's
    // 'connect' (TCP, before any TLS handshake), for the exchange. Its timer measures, when it
    // fires, how late it is (Tether's stall, not the upstream's), then waits for setImmediate:
    // an answer or a connect that arrived meanwhile (read in the poll phase) wins.
    const armWindow = (): unknown => {
      const due = monotonicNow(this.#clock) + timeout
      const handle: unknown = this.#setTimer(() => {
        const late = monotonicNow(this.#clock) - due
        setImmediate(() => {
          if (settled || timer !== handle) return // answered, or connected: a new window runs
          if (stalled || late < timeout * STALL_SHARE) return finish(null, 'ETIMEDOUT')
          stalled = true
          timer = armWindow()
        })
      }, timeout)
      return handle
    }
    let timer = armWindow()
    req.once('socket', (socket) => {
      const connected = (): void => {
        if (settled) return
        this.#timers.clearTimeout(timer)
        timer = armWindow()
      }
      if (socket.connecting) socket.once('connect', connected)
      else connected()
    })
    let answered: http.IncomingMessage | null = null
    req.once('response', (res) => {
      answered = res
      // OPTIONS * asks only whether the server answers: the head is the answer (whatever body
      // an app sends is not read); a path probe reads its body to the end
      if (this.#options.path === null) return finish(res.statusCode ?? null, null)
      res.once('end', () => finish(res.statusCode ?? null, null))
      res.on('error', (err: NodeJS.ErrnoException) => finish(res.statusCode ?? null, err.code ?? 'ECONNRESET'))
      res.once('close', () => { if (!res.complete) finish(res.statusCode ?? null, 'ECONNRESET') })
      res.resume()
    })
    req.on('error', (err: NodeJS.ErrnoException) => {
      // the parser's refusal of a Content-Length in the trailer section, after the head: it
      // follows the last chunk, so the answer is complete, as the request path takes it (see
      // trailerLength); in the head, the same refusal comes before any answer: a failure
      if (answered !== null && trailerLength(err)) return finish(answered.statusCode ?? null, null)
      finish(null, err.code ?? 'ERR_PROBE')
    })
    req.end()
    return { cancel: () => { settle() } }
  }

  #setTimer(fn: () => void, ms: number): unknown {
    const handle = this.#timers.setTimeout(fn, ms)
    ;(handle as { unref?: () => void } | null)?.unref?.()
    return handle
  }
}

/**
 * Node's HTTP parser (llhttp) refusing a `Content-Length` field where `Transfer-Encoding` is
 * chunked: once the head was read, that field is in the trailer section, after the whole body
 * (RFC 9110 section 6.5.1 lets no trailer carry framing; nginx 1.22 ignores it, HAProxy 2.6
 * drops it). Example: `0\r\nContent-Length: 2\r\n\r\n` after the last chunk -> true.
 */
function trailerLength(err: NodeJS.ErrnoException): boolean {
  return err.code === 'HPE_INVALID_CONTENT_LENGTH' && err.message.includes("Content-Length can't be present with Transfer-Encoding")
}

/**
 * Why a probe failed, for the health log: its error code, `timeout after N ms` for its own
 * timeout, else the status outside the range.
 * Example: `probeCause(503, null, 500)` -> "status 503"; `probeCause(null, 'ETIMEDOUT', 500)` -> "timeout after 500 ms".
 */
export function probeCause(status: number | null, code: string | null, timeout: number): string {
  if (code === 'ETIMEDOUT') return `timeout after ${timeout} ms`
  if (code !== null) return code
  return status === null ? 'no answer' : `status ${status}`
}
