// The `+switch-master` watches of a Sentinel connection: one connection to each Sentinel, PINGed
// every SENTINEL_PING_MS, given up and made again when silent, which tells a master's switch
// the moment a Sentinel announces it (so clients that landed on the old master are made again).
// Layer 3 adapter without ioredis of its own: connection.ts makes each Sentinel connection
// (`connect`) and says which clients to make again; start() and stop() own its timers.
import type { Timers } from '../clock.js'
import { hostPort, type RedisAddress } from './connection-options.js'
import { describe } from './reply-errors.js'

/** Each `+switch-master` watch PINGs its Sentinel this often (ms; PING is allowed in subscriber mode). */
export const SENTINEL_PING_MS = 1_000

/**
 * A watch that waited this long for an answer of its Sentinel (a PING without PONG, a SUBSCRIBE
 * without reply, a closed connection) is destroyed and made again; also the deadline of every
 * question to a Sentinel (ms).
 */
export const SENTINEL_SILENT_MS = 2_000

/**
 * A watch given up is made again after {@link SENTINEL_SILENT_MS}, then after twice as long
 * each time it is given up again in the same silence, at most this long (ms): a Sentinel down
 * for hours gets one connection attempt every 16 s from each watch, not several a second.
 */
export const SENTINEL_REMAKE_MAX_MS = 16_000

/**
 * A `+switch-master` watch gave its Sentinel up (`silent`: an answer awaited for
 * {@link SENTINEL_SILENT_MS}; once a spell, with the last error) or hears it again after
 * that (`listening`). `sentinel` is its `host:port`.
 */
export interface RedisSentinelEvent {
  readonly kind: 'silent' | 'listening'
  readonly sentinel: string
  readonly error: string
}

/** One `+switch-master` watch: its current connection, and what it heard when. */
interface SwitchWatch {
  readonly address: string
  redis: WatchConnection
  /**
   * Since when it waits for its Sentinel (this.#now()): made or closed and not subscribed yet,
   * or a PING unanswered; null while nothing is outstanding. Silence is counted from here, not
   * from the last reply: a stall of Tether itself between two PINGs is no silence.
   */
  waitingSince: number | null
  /** Subscribed on the current connection. */
  listening: boolean
  /** Given up since it last listened ('silent' reported). */
  silent: boolean
  /** Times made again since it last listened (the next wait doubles with each). */
  remakes: number
  lastError: string
}

/** How long after a Sentinel announced a switch a client that lands on another master is made again (ms). */
const SWITCH_FOLLOW_MS = 30_000

/** How many times a switch may remake a client that landed elsewhere (see #offSwitch). */
const SWITCH_REDOS = 10

/** What a watch uses of its connection to a Sentinel (an ioredis client, made by connection.ts). */
export interface WatchConnection {
  on(event: string, listener: (...args: never[]) => void): unknown
  subscribe(channel: string): Promise<unknown>
  ping(): Promise<unknown>
  connect(): Promise<void>
  removeAllListeners(): unknown
  disconnect(): void
}

/** What a {@link SentinelWatch} is given: the Sentinels, the master name, and the connection's ways. */
export interface SentinelWatchOptions {
  readonly sentinels: readonly RedisAddress[]
  /** The Sentinel master name whose switches are followed. */
  readonly name: string
  /** Cap of a watch connection's reconnect back-off (ms), as the connection's. */
  readonly maxReconnectDelay: number
  readonly now: () => number
  readonly timers: Timers
  /** Makes a (lazy) connection to Sentinel `s` with ioredis's `retryStrategy` `retry`. */
  readonly connect: (s: RedisAddress, retry: (times: number) => number | null) => WatchConnection
  /** A Sentinel's error as told (the settings to fix when it refused Tether's credentials). */
  readonly errorOf: (error: string) => string
  /** Told of each `silent` / `listening` change. */
  readonly tell: (event: RedisSentinelEvent) => void
  /** A switch of this master was announced: the clients {@link SentinelWatch.offSwitch} names are to be made again. */
  readonly onSwitch: () => void
}

/** The watches of one connection's Sentinels (see the file comment); nothing starts before start(). */
export class SentinelWatch {
  readonly #sentinels: readonly RedisAddress[]
  readonly #name: string
  readonly #maxReconnectDelay: number
  readonly #now: () => number
  readonly #timers: Timers
  readonly #connect: SentinelWatchOptions['connect']
  readonly #errorOf: (error: string) => string
  readonly #tell: (event: RedisSentinelEvent) => void
  readonly #onSwitch: () => void

  constructor(o: SentinelWatchOptions) {
    this.#sentinels = o.sentinels
    this.#name = o.name
    this.#maxReconnectDelay = o.maxReconnectDelay
    this.#now = o.now
    this.#timers = o.timers
    this.#connect = o.connect
    this.#errorOf = o.errorOf
    this.#tell = o.tell
    this.#onSwitch = o.onSwitch
  }

  /** With Sentinel: a connection to each Sentinel that hears its `+switch-master` announcements. */
  #switchWatches: SwitchWatch[] = []

  /**
   * The master a Sentinel last announced (`host:port` as Sentinel writes it), until when a
   * client that lands elsewhere is made again (performance.now()), and how often each was.
   */
  #switchedTo: { readonly at: string; readonly until: number; readonly redone: WeakMap<object, number> } | null = null

  #watchTimer: unknown = null

  /**
   * Whether client `c`, to which Sentinel last `named` its master (`host:port` as Sentinel
   * writes it, seen through ioredis's natMap hook), is connected somewhere else than the master
   * a Sentinel announced lately (made again at most SWITCH_REDOS times a switch): it
   * asked a Sentinel that did not know of the switch yet (ioredis asks the next one in its list
   * at each reconnect; the others learn of a switch about 2 s after its leader), and landed on
   * the old master, which is still a master until Sentinel reconfigures it.
   */
  offSwitch(c: object, named: string | undefined): boolean {
    const to = this.#switchedTo
    if (to === null || performance.now() > to.until) return false
    // both as Sentinel writes them (an address or a hostname, with announce-hostnames)
    if (named === undefined || named === '' || named === to.at) return false
    // at most SWITCH_REDOS times a client and a switch (a leader Sentinel out of reach: the
    // others' announcements come, and ioredis's own way remains)
    const n = to.redone.get(c) ?? 0
    if (n >= SWITCH_REDOS) return false
    to.redone.set(c, n + 1)
    return true
  }

  /**
   * With Sentinel, follow a switch of this master as soon as a Sentinel announces it: ioredis
   * asks Sentinel again only once the old master closes the connection, which after a graceful
   * `SENTINEL FAILOVER` is about 10 s later (when Sentinel reconfigures it), and writes went to
   * the old master meanwhile, lost at its resync. Not ioredis's `failoverDetector`: it drops
   * the connection on any master's switch (a Sentinel set shared by several masters) and leaves
   * its Sentinel connections' errors unhandled (stderr). A client made again asks the next
   * Sentinel in its list, which may not know of the switch yet (they learn of it from its
   * leader about 2 s later) and name the old master: for SWITCH_FOLLOW_MS after an
   * announcement, a client that becomes ready anywhere but the announced address is made again
   * (see #offSwitch): the address Sentinel named to it (seen through ioredis's natMap hook) is
   * compared with the announced one, both as Sentinel writes them, hostnames included. Example: a Sentinel publishes `mymaster 10.0.0.5 6379 10.0.0.6 6379` ->
   * the connections to 10.0.0.5:6379 are made again, until they reach 10.0.0.6:6379.
   */
  start(): void {
    const now = this.#now()
    for (const s of this.#sentinels) {
      const w: SwitchWatch = { address: hostPort(s.host, s.port), redis: null as unknown as WatchConnection, waitingSince: now, listening: false, silent: false, remakes: 0, lastError: '' }
      w.redis = this.#watchConnection(w, s, this.#name)
      this.#switchWatches.push(w)
    }
    this.#watchTick()
  }

  /**
   * A connection of watch `w` to Sentinel `s`: it subscribes to `+switch-master` on each
   * 'ready' and follows `name`'s switches. Its outcomes count only while it is `w`'s current one.
   */
  #watchConnection(w: SwitchWatch, s: RedisAddress, name: string): WatchConnection {
    // ioredis's quick reconnects only until the watch is given up; then #watchTick's remakes,
    // with their own back-off, are its only attempts
    const backoff = (times: number): number | null => (w.silent ? null : Math.min(this.#maxReconnectDelay, 50 * 2 ** Math.min(times - 1, 16)))
    const watch = this.#connect(s, backoff)
    const current = (): boolean => w.redis === watch
    // the Sentinels' own health is not a Redis node's: a refusal or a silence is told once by #watchTick
    watch.on('error', (err: unknown) => { if (current()) w.lastError = this.#errorOf(describe(err)) })
    watch.on('close', () => {
      if (!current()) return
      w.listening = false
      w.waitingSince ??= this.#now()
    })
    watch.on('ready', () => void watch.subscribe('+switch-master').then(() => {
      if (!current()) return
      w.listening = true
      this.#heard(w)
    }, (err: unknown) => { if (current()) w.lastError = this.#errorOf(describe(err)) }))
    watch.on('message', (channel: string, message: string) => {
      if (!current()) return
      this.#heard(w)
      // `<name> <old ip> <old port> <new ip> <new port>`
      const [master, , , host, port] = message.split(' ')
      if (channel !== '+switch-master' || master !== name || host === undefined || port === undefined) return
      this.#switchedTo = { at: `${host}:${port}`, until: performance.now() + SWITCH_FOLLOW_MS, redone: new WeakMap() }
      this.#onSwitch()
    })
    void watch.connect().catch(() => undefined)
    return watch
  }

  /** Watch `w` heard its Sentinel: after a silence, it listens again. */
  #heard(w: SwitchWatch): void {
    w.waitingSince = null
    if (w.listening) w.remakes = 0
    if (!w.listening || !w.silent) return
    w.silent = false
    w.lastError = ''
    this.#tell({ kind: 'listening', sentinel: w.address, error: '' })
  }

  /**
   * Every {@link SENTINEL_PING_MS}: each watch that waited {@link SENTINEL_SILENT_MS} for its
   * Sentinel (a PING or its subscription unanswered, a closed connection; a frozen Sentinel
   * keeps its TCP connection open and says nothing; a Sentinel that refuses or is down never
   * subscribes) is destroyed and made again ('silent' once a spell); given up again in the
   * same spell, after 4, 8, then every {@link SENTINEL_REMAKE_MAX_MS}. Each listening one is
   * sent a PING, whose PONG counts as heard.
   */
  #watchTick(): void {
    this.#watchTimer = null
    if (this.#switchWatches.length === 0) return
    const now = this.#now()
    this.#switchWatches.forEach((w, i) => {
      if (w.waitingSince !== null && now - w.waitingSince >= Math.min(SENTINEL_REMAKE_MAX_MS, SENTINEL_SILENT_MS * 2 ** w.remakes)) {
        if (!w.silent) {
          w.silent = true
          this.#tell({ kind: 'silent', sentinel: w.address, error: w.lastError || `no reply within ${SENTINEL_SILENT_MS} ms` })
        }
        closeQuietly(w.redis)
        w.listening = false
        w.waitingSince = now
        w.remakes++
        w.redis = this.#watchConnection(w, this.#sentinels[i]!, this.#name)
      } else if (w.listening) {
        const watch = w.redis
        w.waitingSince ??= now
        watch.ping().then(() => { if (w.redis === watch) this.#heard(w) }, () => undefined)
      }
    })
    // a late tick after a stall of this process defers to pending I/O: PONGs already on their
    // sockets count before a watch is judged silent (setImmediate runs after the poll phase)
    // (a tick already deferred when stop() came, or start() again, is not run: one chain only)
    const timer = this.#timers.setTimeout(() => setImmediate(() => { if (this.#watchTimer === timer) this.#watchTick() }), SENTINEL_PING_MS)
    this.#watchTimer = timer
  }

  /** Closes every watch and forgets the last switch; start() makes them again. */
  stop(): void {
    if (this.#watchTimer !== null) this.#timers.clearTimeout(this.#watchTimer)
    this.#watchTimer = null
    for (const w of this.#switchWatches) closeQuietly(w.redis)
    this.#switchWatches = []
    this.#switchedTo = null
  }
}

/** Closes a Redis connection for good, with no listener of its left but a swallower of late errors. */
function closeQuietly(redis: WatchConnection): void {
  redis.removeAllListeners()
  redis.on('error', () => undefined)
  redis.disconnect()
}
