// The upstream waits of the live HTTP exchanges (the answer's head, the silences between body
// chunks), checked by one coarse sweep instead of a timer each. undici's own timers cost a
// request two timer objects: it makes a new parser timer whenever a pooled connection switches
// between its keep-alive wait (a native timer) and the head wait (undici's "fast" timer, which
// stays in undici's list up to half a second after it is cleared). Each such object outlives
// V8's young generation, so the old generation grew ~1.5 MB/s at 11,000 req/s and a full GC
// stalled the proxy ~25 ms every 10-20 s (bench/README.md, the fixed-rate tail). Here a request
// costs a few pointer writes to link and unlink, and a flag per body chunk. Layer 3: it owns an
// unref'd interval, and no other I/O.

/** What the sweep visits: an exchange that checks its own deadlines. */
export interface Expiring {
  /** Called each sweep with a fresh monotonic time (ms); fails the exchange if a wait ran out. */
  expire(now: number): void
  /** The list links, owned by {@link Deadlines}. */
  prevLive: Expiring | null
  nextLive: Expiring | null
}

/**
 * How long a client may take nothing that was written to it, or be silent altogether (neither
 * sending nor reading), before it is cut: the longer of `body_idle` and `response_headers`
 * (plus `queued`, the most a request may wait for a connection to its upstream: timeouts.queue
 * when an upstream has a connection bound, see queueWait), plus a second (the upstream
 * deadlines fire up to two sweeps late, each at most 250 ms), so a silent upstream gets its 504
 * and its health signal first, and a request waiting in the queue its 503 (review s64 r2: its
 * connection was cut under it). Example: 60 s and 60 s -> 61 s; with a bound and queue 5 s, 66 s.
 */
export function clientIdleTimeout(t: { readonly body_idle: number; readonly response_headers: number }, queued = 0): number {
  return Math.max(t.body_idle, t.response_headers + queued) + 1_000
}

/**
 * How long a request may wait in an upstream's queue before it is sent (timeouts.queue), when
 * any upstream has a connection bound (limits.max_upstream_connections, or its own
 * max_connections); 0 without one (no request waits).
 */
export function queueWait(config: { readonly limits: { readonly max_upstream_connections: number | null }; readonly upstreams: readonly { readonly max_connections?: number | null }[]; readonly timeouts: { readonly queue: number } }): number {
  const bounded = config.limits.max_upstream_connections !== null || config.upstreams.some((u) => u.max_connections != null)
  return bounded ? config.timeouts.queue : 0
}

/** Client connections (sockets, h2 sessions) closed because their client was silent both ways for the client bound. */
const idleClosed = new WeakSet<object>()

/**
 * The listener closes `connection` (an HTTP/1.1 socket or an h2 session) because its client
 * neither read nor sent anything for clientIdleTimeout: marked first, so that an answer it cuts
 * is logged as the client's timeout, not as a client that left. Example: the server's
 * 'timeout' listener calls `closeIdleClient(session)`.
 */
export function closeIdleClient(connection: { destroy(): void }): void {
  idleClosed.add(connection)
  connection.destroy()
}

/** Whether the listener closed `connection` for its client's silence (see closeIdleClient). */
export function closedIdle(connection: object | null | undefined): boolean {
  return connection != null && idleClosed.has(connection)
}

/**
 * How long a client may take nothing of an answer while its connection stays busy (which keeps
 * Node's socket and session timers fresh) before it is cut: four client bounds. Node signals
 * progress only once what it holds for an answer went out, so a steady reader is cut only when
 * it lets Tether write too seldom (figures per protocol in docs/request-handling.md), while one
 * that stopped reading for good always is. nginx's `send_timeout` is finer. Example: 60 s and
 * 60 s -> 244 s.
 */
export function clientStallTimeout(t: { readonly body_idle: number; readonly response_headers: number }): number {
  return 4 * clientIdleTimeout(t)
}

/** How often the sweep runs for the shortest wait `shortest` (ms): an eighth of it, 10-250 ms. */
export function sweepInterval(shortest: number): number {
  return Math.min(250, Math.max(10, Math.floor(shortest / 8)))
}

/**
 * A doubly-linked list of live exchanges and the interval that sweeps it, running only while
 * the list is not empty. A wait fires late by at most about two intervals, never early (each
 * exchange measures from times the sweep itself saw). Example: `deadlines.link(handler)` when
 * the exchange starts, `deadlines.unlink(handler)` when it ends.
 */
export class Deadlines {
  /** Sweep period, ms. */
  readonly interval: number
  #first: Expiring | null = null
  #timer: ReturnType<typeof setInterval> | null = null
  readonly #now: () => number

  constructor(interval: number, now: () => number = () => performance.now()) {
    this.interval = interval
    this.#now = now
  }

  link(x: Expiring): void {
    x.prevLive = null
    x.nextLive = this.#first
    if (this.#first !== null) this.#first.prevLive = x
    this.#first = x
    if (this.#timer === null) {
      this.#timer = setInterval(this.#tick, this.interval)
      this.#timer.unref()
    }
  }

  unlink(x: Expiring): void {
    const { prevLive: prev, nextLive: next } = x
    if (prev !== null) prev.nextLive = next
    else if (this.#first === x) this.#first = next
    else return // not linked
    if (next !== null) next.prevLive = prev
    x.prevLive = x.nextLive = null
  }

  /** Exchanges linked now (for tests). */
  get size(): number {
    let n = 0
    for (let x = this.#first; x !== null; x = x.nextLive) n++
    return n
  }

  /** Visit every linked exchange with `now` (an exchange may unlink itself meanwhile); stop the interval once none is left. */
  sweep(now: number): void {
    for (let x = this.#first; x !== null;) {
      const next = x.nextLive
      x.expire(now)
      x = next
    }
    if (this.#first === null) this.stop()
  }

  /** Stop the interval (it starts again with the next link). */
  stop(): void {
    if (this.#timer !== null) clearInterval(this.#timer)
    this.#timer = null
  }

  #tick = (): void => this.sweep(this.#now())
}
