// Notices a Redis that lost its keys (a restart without persistence, a failover to a replica that
// had not synced, a FLUSHALL) through a marker key per node, and writes this replica's bindings
// back there. Layer 3 adapter over the shared RedisConnection and RedisBindings; logs and counts
// nothing itself (the listeners do); owned loop: start()/stop(), nothing starts by itself.
import { randomUUID } from 'node:crypto'
import type { Timers } from '../clock.js'
import { withoutNumbers, type ProblemLog } from '../observability/problem-log.js'
import type { RedisBindings } from './binding-store.js'
import { FAILED, type RedisConnection } from './connection.js'
import { keySlot } from './key-slot.js'

/** How often the markers are read (ms), besides each time the connection is ready again. */
export const KEYSPACE_CHECK_MS = 1_000
/** Bindings written back per step, the pause between steps (ms), and the wait after a failed step (ms). */
export const WRITE_BACK_BATCH = 100
export const WRITE_BACK_PAUSE_MS = 20
export const WRITE_BACK_RETRY_MS = 1_000
/**
 * Bindings of the snapshot read per step at most (each costs about 1-3 µs), those not written
 * (gone since, or with Cluster in another master's slots) included: a step over a snapshot
 * that is mostly gone or mostly another master's holds the event loop a few ms, not seconds.
 */
export const WRITE_BACK_SCAN = 2_000

/** The marker key's name after the key prefix: `<key_prefix>keyspace` (Cluster: `<key_prefix>keyspace:{<tag>}`). */
export const MARKER = 'keyspace'

/**
 * A marker as told to the listeners and compared with `known`: its value (a UUID: no space),
 * then the database and the key it was read at. Two reads of the same key and database give the
 * same string exactly when the value is the same. Example: `markerAt(0, 'tether:keyspace', 'f3c1...')`
 * -> `'f3c1... 0/tether:keyspace'`.
 */
export function markerAt(database: number, key: string, value: string): string {
  return `${value} ${database}/${key}`
}

/**
 * `known` when it was read at the same database and key as `marker` (see markerAt), else
 * undefined: a marker of another key says nothing of this one's keys.
 */
function sameKey(known: string | undefined, marker: string): string | undefined {
  return known !== undefined && known.slice(known.indexOf(' ')) === marker.slice(marker.indexOf(' ')) ? known : undefined
}

/**
 * KEYS[1] = the marker, ARGV[1] = a fresh random value: the marker's value, set to ARGV[1]
 * first when absent (SET NX, in one step, so two replicas never both create it).
 */
const MARK_LUA = `
local v = redis.call('GET', KEYS[1])
if v then return v end
redis.call('SET', KEYS[1], ARGV[1], 'NX')
return ARGV[1]
`
const MARK_SCRIPT = 'tetherKeyspaceMark'

/** A binding to write back, with its last use (ms, the caller's clock) for the TTL it has left. */
export interface HeldBinding {
  readonly key: string
  readonly upstream: string
  readonly epoch: number
  readonly lastSeen: number
  /** Its creation time (ms), written back as its placement time; absent: unknown. */
  readonly createdAt?: number
}

/**
 * This replica's bindings as a snapshot of their places, most recently used first (taken at
 * once, cheaply: e.g. AffinityTable.slotsByRecency), and `at(i)`, the i-th binding as the table
 * holds it now (null: gone or expired since), read as it is written back.
 */
export interface HeldSnapshot {
  readonly length: number
  at(i: number): HeldBinding | null
}

/** A fixed list as a {@link HeldSnapshot} (each written as given). */
export function heldList(list: readonly HeldBinding[]): HeldSnapshot {
  return { length: list.length, at: (i) => list[i] ?? null }
}

/** The outcome of one node's write-back. */
export interface WriteBack {
  readonly node: string
  /** Bindings written, and those kept as Redis had them (a newer epoch written meanwhile). */
  readonly written: number
  readonly kept: number
  /** From the loss being seen to the last binding written (ms). */
  readonly ms: number
}

export interface KeyspaceWatchOptions {
  readonly redis: RedisConnection
  /** Where bindings are written back (through the epoch-safe script); null: nothing to write back. */
  readonly bindings: RedisBindings | null
  /**
   * This replica's live bindings, most recently used first, taken once per loss (synchronously);
   * each is read again through the snapshot as it is written back, so one unpinned, moved or
   * expired since is written as it is now, or not at all (a binding deleted from Redis is not
   * brought back).
   */
  readonly held: () => HeldSnapshot
  /** The affinity idle timeout (ms): a binding written back lives what is left of it. */
  readonly idleTimeout: number
  /** Now, in the clock of `HeldBinding.lastSeen` (ms). */
  readonly now: () => number
  readonly timers: Timers
  /**
   * The keyspace of `node` was lost (its marker is absent or another than last seen): told
   * before the write-back starts, with the marker read there now (see markerAt: the same for
   * every replica or worker that noticed this loss: the first check after it created it).
   */
  readonly onLost?: (node: string, marker: string) => void
  /**
   * The marker of `node` this replica's group last knew there (with workers: the one after which
   * their lead last wrote its part, kept by their primary; undefined: none), compared with at
   * this replica's first read of the node instead of taking that read as the baseline: a worker
   * started after a loss its lead had not noticed notices it too. Only one read at the key and
   * database read now is compared with (see markerAt); another is ignored.
   */
  readonly known?: (node: string) => string | undefined
  /** This replica's first read of `node` found `marker`, and no loss: its baseline there. */
  readonly onBaseline?: (node: string, marker: string) => void
  /** `n` more bindings written back. */
  readonly onWritten?: (n: number) => void
  /** A node's write-back finished (not told for one superseded by a later loss, nor stopped). */
  readonly onDone?: (result: WriteBack) => void
  /**
   * A check ended: `error` is why it threw or rejected (a listener or `held` that threw, say;
   * the checks go on at the next tick), null when it completed. Not told once stop() was called.
   */
  readonly onCheck?: (error: string | null) => void
  readonly checkMs?: number
  readonly batch?: number
  readonly pauseMs?: number
  readonly retryMs?: number
  readonly scan?: number
}

/**
 * An `onCheck` listener that logs through `problems`: a check that threw is one warn a spell
 * (then at most one per 30 s, however its error's numbers change: a timeout in ms, a count),
 * an info line once one completes.
 */
export function logChecks(problems: ProblemLog): (error: string | null) => void {
  return (error) => void (error === null
    ? problems.resolve('keyspace check', {}, 'redis keyspace check: completing again')
    : problems.report('keyspace check', withoutNumbers(error), { err: error }, 'redis keyspace check failed: the next one runs at its tick'))
}

/**
 * Each {@link KEYSPACE_CHECK_MS} ms and whenever the connection is ready again, reads the marker
 * of every node (creating it with a random value when absent). A marker absent or different
 * from the value this replica saw last there means that node's keys are gone: `onLost(node)`,
 * then this replica's bindings of that node's slots (all of them without Cluster) are written
 * back through {@link RedisBindings.write} (never lowering an epoch), most recently used first,
 * {@link WRITE_BACK_BATCH} every {@link WRITE_BACK_PAUSE_MS} ms; a step with failed writes waits
 * {@link WRITE_BACK_RETRY_MS} ms and writes those again. Several replicas doing it at once is
 * safe: each write keeps the higher epoch, and one written twice is one binding.
 *
 * Construct it before the connection's start() (its script is defined on the client then).
 *
 * The first value seen on a node is not a loss when this replica has nothing to compare it with
 * (a replica that starts on an empty Redis writes nothing back; a `known` marker of another key
 * or database is nothing to compare with), or it is the one `known`.
 *
 * Example: `const w = new KeyspaceWatch({ redis, bindings, held: () => { const s = table.slotsByRecency(now()); return { length: s.length, at: (i) => table.bindingAt(s[i]!, now()) } }, ... }); w.start()`;
 * after `FLUSHALL`, within a second: `onLost('127.0.0.1:6379')`, then the bindings are back.
 */
export class KeyspaceWatch {
  readonly #o: KeyspaceWatchOptions
  /** The marker last seen (see markerAt), by marker key. */
  readonly #seen = new Map<string, string>()
  /** The running write-back of each node (a later loss of the node supersedes it). */
  readonly #runs = new Map<string, object>()
  readonly #sleeps = new Set<{ handle: unknown; wake: () => void }>()
  /** Nodes whose loss was told but whose write-back could not start (a check that threw): started by the next check. */
  readonly #owed = new Set<string>()
  #timer: unknown = null
  #checking: Promise<void> | null = null
  /** The one check queued behind the running one (see check()). */
  #again: Promise<void> | null = null
  #offStatus: (() => void) | null = null
  #started = false
  #stopped = false

  constructor(options: KeyspaceWatchOptions) {
    this.#o = options
    options.redis.defineScript(MARK_SCRIPT, MARK_LUA, 1)
  }

  /** Check now, then every `checkMs` and at each 'ready' of the connection. */
  start(): void {
    if (this.#started) return
    this.#started = true
    this.#offStatus = this.#o.redis.onStatus((status) => { if (status === 'ready') void this.check() })
    const tick = (): void => {
      this.#timer = this.#o.timers.setTimeout(() => void this.check().then(() => { if (this.#started) tick() }), this.#o.checkMs ?? KEYSPACE_CHECK_MS)
    }
    void this.check()
    tick()
  }

  /** Stops checking and ends the write-backs at their next step. */
  stop(): void {
    this.#started = false
    this.#stopped = true
    this.#offStatus?.()
    this.#offStatus = null
    if (this.#timer !== null) this.#o.timers.clearTimeout(this.#timer)
    this.#timer = null
    this.#runs.clear()
    for (const s of this.#sleeps) {
      this.#o.timers.clearTimeout(s.handle)
      s.wake()
    }
    this.#sleeps.clear()
  }

  /**
   * Read every node's marker once; resolves when read (the write-backs go on) and never rejects
   * (a check that throws is told to `onCheck`). Asked while a check runs (a reconnect's 'ready'
   * during a tick's check, which may have read the markers before the loss), one more check runs
   * right after it, and this resolves when that one is done; further asks meanwhile join that
   * queued check (at most one is queued).
   */
  check(): Promise<void> {
    if (this.#checking === null) return this.#begin()
    this.#again ??= this.#checking.then(() => {
      this.#again = null
      return this.#stopped ? undefined : this.#checking ?? this.#begin()
    })
    return this.#again
  }

  /** Starts a check: it ends (resolved, whatever happened) once the markers are read. */
  #begin(): Promise<void> {
    const run = this.#check().then(() => null, (err: unknown) => (err instanceof Error ? err.message : String(err))).then((error) => {
      this.#checking = null
      // (one that ends after stop() is not told: its owner may be logging its shutdown)
      if (!this.#stopped) this.#tell(() => this.#o.onCheck?.(error))
    })
    this.#checking = run
    return run
  }

  async #check(): Promise<void> {
    const { redis } = this.#o
    const lost: { readonly node: string; readonly marker: string }[] = []
    const baselines: { readonly node: string; readonly marker: string }[] = []
    await Promise.all([...redis.keysPerNode(MARKER)].map(async ([node, key]) => {
      const value = await redis.runScript(MARK_SCRIPT, key, randomUUID())
      if (value === FAILED || typeof value !== 'string' || this.#stopped) return
      // the value with where it was read: the same for every worker that read it there
      const marker = markerAt(redis.database, key, value)
      // at the first read, the group's marker (see `known`), if it is of this same key: one of
      // another key is no earlier value of this one (a Cluster reshard gave the node another
      // tag, a reload another key_prefix or database), and the read is a baseline
      const first = !this.#seen.has(key)
      const last = first ? sameKey(this.#o.known?.(node), marker) : this.#seen.get(key)
      this.#seen.set(key, marker)
      if (last !== undefined && last !== marker) lost.push({ node, marker })
      else if (first) baselines.push({ node, marker })
    }))
    if (this.#stopped) return
    for (const { node, marker } of baselines) this.#tell(() => this.#o.onBaseline?.(node, marker))
    // with the nodes whose loss was told but whose write-back could not start (see #lost)
    if (lost.length > 0 || this.#owed.size > 0) this.#lost(lost, [...new Set([...this.#owed, ...lost.map((l) => l.node)])])
  }

  /**
   * The nodes found lost in one check (`lost`, told to onLost) and those whose bindings are
   * to be written back (`nodes`: those, and the ones owed): one snapshot of the table for all
   * of them (with Cluster, every master after a full restart).
   */
  #lost(lost: readonly { readonly node: string; readonly marker: string }[], nodes: readonly string[]): void {
    const since = performance.now()
    for (const { node, marker } of lost) this.#tell(() => this.#o.onLost?.(node, marker))
    const store = this.#o.bindings
    if (store === null) return
    // until their write-backs start: a check that throws here (`held`, say) leaves them owed,
    // and the next check starts them (their loss told once, the marker being the one seen now)
    for (const node of nodes) this.#owed.add(node)
    // taken at once (the table goes on changing while the writes go on); each binding is read
    // from it again as it is written
    const held = this.#o.held()
    // standalone or Sentinel: every binding is that node's
    const one = nodes.length === 1 && this.#o.redis.keysPerNode(MARKER).size <= 1
    const slots = nodes.map((node) => (one ? null : this.#o.redis.slotsServedBy(node)))
    this.#owed.clear()
    nodes.forEach((node, i) => {
      const run = {}
      this.#runs.set(node, run)
      // with Cluster, the slots the node served when its loss was seen: their bindings are
      // written back even if a failover or a resharding hands those slots to another master
      void this.#writeBack(store, node, run, held, slots[i] ?? null, since)
    })
  }

  async #writeBack(store: RedisBindings, node: string, run: object, held: HeldSnapshot, slots: Uint8Array | null, since: number): Promise<void> {
    const o = this.#o
    const batch = o.batch ?? WRITE_BACK_BATCH
    const live = (): boolean => this.#runs.get(node) === run
    /** The i-th binding as held now, if it is this node's (with Cluster: in a slot it served at the loss). */
    const read = (i: number): HeldBinding | null => {
      const b = held.at(i)
      return b === null || slots === null || slots[keySlot(store.keyOf(b.key))] === 1 ? b : null
    }
    let written = 0
    let kept = 0
    for (let i = 0; i < held.length && live();) {
      if (i > 0) await this.#sleep(o.pauseMs ?? WRITE_BACK_PAUSE_MS)
      // the next step: up to `batch` of this node's bindings, out of WRITE_BACK_SCAN read at most
      let pending: number[] = []
      for (const end = Math.min(held.length, i + Math.max(batch, o.scan ?? WRITE_BACK_SCAN)); i < end && pending.length < batch; i++) {
        if (read(i) !== null) pending.push(i)
      }
      while (pending.length > 0 && live()) {
        // each as the table holds it now, with the idle time it has left now (a retry may come
        // long after the loss): one gone or expired meanwhile is not written
        const now = o.now()
        const step: { i: number; b: HeldBinding }[] = []
        for (const j of pending) {
          const b = read(j)
          if (b !== null && o.idleTimeout - (now - b.lastSeen) > 0) step.push({ i: j, b })
        }
        const outcomes = await Promise.all(step.map(({ b }) => store.write(b.key, b.upstream, b.epoch, o.idleTimeout - (now - b.lastSeen), b.createdAt)))
        const n = outcomes.filter((r) => r === 'written').length
        written += n
        kept += outcomes.filter((r) => r === 'kept').length
        if (n > 0) this.#tell(() => o.onWritten?.(n))
        pending = step.filter((_, j) => outcomes[j] === 'failed').map(({ i: j }) => j)
        if (pending.length > 0 && live()) await this.#sleep(o.retryMs ?? WRITE_BACK_RETRY_MS)
      }
    }
    if (!live()) return
    this.#runs.delete(node)
    const ms = Math.round(performance.now() - since)
    this.#tell(() => o.onDone?.({ node, written, kept, ms }))
  }

  /** Calls a listener: one that throws must not stop the checks nor the write-back. */
  #tell(fn: () => void): void {
    try {
      fn()
    } catch {
      // the listener's own failure; the watch goes on
    }
  }

  #sleep(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const s = { handle: null as unknown, wake: resolve }
      s.handle = this.#o.timers.setTimeout(() => { this.#sleeps.delete(s); resolve() }, ms)
      this.#sleeps.add(s)
    })
  }
}
