// A worker's side of the channel to the primary (`workers` > 1): the implementations of the
// ports through which the workers keep one routing truth without Redis: bindings written
// through to every other worker before the answer's head, the peer channel of shared health,
// the checkpoint store the primary holds (`state.store: memory`), active probe results and
// discovery lists from the one worker running checks and discovery, and the snapshot a starting worker takes from a sibling.
// Layer 3 adapter over process IPC; it decides nothing about routing or health.
import type { BindingSink, Grace, SessionTable, SharedBindings } from '../affinity/session-table.js'
import type { SessionRecords } from '../affinity/session-records.js'
import type { Config } from '../config/schema.js'
import type { Decision } from '../routing/decision.js'
import type { PeerChannel } from '../peers/peer-channel.js'
import type { HealthCopy } from '../health/health-copy.js'
import type { Checkpoint, CheckpointStore, CheckpointStoreStatus, GetResult, PutResult } from '../state/checkpoint-store.js'
import type { BindingWrite, CallOp, ToPrimary, ToWorker, WireBinding, WireDiscovered, WireLeaving, WireRecord } from './messages.js'
import { isTetherMessage } from './messages.js'
import { systemTimers, type Timers } from '../clock.js'
import { keptFields } from '../upstream/upstream-set.js'
import { valueBytes } from '../state/memory-store.js'

/** A write that changes routing: a pin, an unpin, a cookie value retired. */
type RoutingWrite = Extract<BindingWrite, readonly ['b' | 'u' | 'r', ...unknown[]]>

/**
 * A write this worker made; `awaited`: answers wait for it (see WorkerLink.flushedFor);
 * `after`: a pin's, the seq of the unpin or rotation of its key it was made after, not
 * acknowledged then (or 0).
 */
interface OwnWrite {
  readonly seq: number
  readonly w: BindingWrite
  readonly awaited: boolean
  readonly after: number
}

/** Answers waiting for the ack of `seq` (see WorkerLink.#until): one promise and one timer for all of them. */
interface AckWait {
  seq: number
  readonly promise: Promise<void>
  readonly resolve: () => void
  timer: unknown
}

/**
 * Writes held while a starting worker's snapshot comes in: another worker's, or this worker's
 * own pins, unpins and rotations to apply again (`own`, see WorkerLink.#reapply).
 */
type Held =
  | { readonly own: false; readonly writes: readonly BindingWrite[] }
  | { readonly own: true; readonly writes: readonly RoutingWrite[] }
  /** A probe result of the lead (after the sibling took its copy: the copy has its health as it was then). */
  | { readonly probe: readonly [id: string, ok: boolean, severe: boolean, cause: string | null] }

/** How long a worker waits on the primary before it goes on without an answer (ms). */
const PRIMARY_TIMEOUT = 2_000
/** How long a starting worker waits for a sibling's copy (from the start of each sibling's try) before it goes on without the rest. */
const SNAPSHOT_TIMEOUT = 30_000
/**
 * How long it waits for the copy in all, however many siblings take it over (ms): well within
 * the primary's start deadline (START_TIMEOUT, 60 s), so a worker whose siblings die or freeze
 * while they send starts with what it got instead of being killed as a start that never ends.
 */
const SNAPSHOT_TOTAL = 45_000
/** Peer messages kept for the first subscriber at most (see WorkerLink.#early). */
const EARLY_MAX = 10_000
/** Bindings per snapshot message. */
const CHUNK = 5_000

/** The process's IPC channel (process.send and its messages); injectable for tests. */
export interface IpcChannel {
  send(message: ToPrimary): void
  onMessage(fn: (message: unknown) => void): void
}

/** The real channel of a cluster worker. */
export const processChannel: IpcChannel = {
  send: (m) => void process.send?.(m),
  onMessage: (fn) => void process.on('message', fn),
}

/** What a worker's parts give the link once built (before it listens). */
export interface WorkerParts {
  readonly sessions: SessionTable
  /** Where the answers other workers share are recorded. */
  readonly records: SessionRecords
  /** Apply an active probe's result as the worker running the checks applied it (`severe`: unhealthy at once). */
  readonly applyProbe: (id: string, ok: boolean, severe: boolean, cause: string | null) => void
  /** Probe upstream `id` now (this worker runs the checks; a request of another waits on it too long). */
  readonly probeSoon: (id: string) => void
  /** Start running the active checks and discovery (this worker became the one that does). */
  readonly becomeLead: () => void
  /**
   * Apply a discovery source's whole list, as the lead's discovery found it; `leaving` (to a
   * starting worker): what left that listing before and still drains on the others, since when.
   */
  readonly discovered: (source: string, upstreams: readonly WireDiscovered[], leaving: readonly WireLeaving[]) => void
  readonly now: () => number
  /**
   * Upstream health: this worker's view of each upstream, for a sibling that starts; and the
   * sibling's view, taken in before this worker takes connections (absent: no health to copy).
   */
  readonly health?: { readonly copies: () => readonly HealthCopy[]; readonly copy: (rows: readonly HealthCopy[]) => void }
  /**
   * This worker's metrics as data, for the primary's one /metrics: metrics-wire.ts's compact
   * form when `compact` (the primary asked for it), else prom-client's getMetricsAsJSON() array
   * (a primary of an older build during an in-place upgrade reads only that).
   */
  readonly metrics: (compact: boolean) => Promise<unknown>
}

/**
 * Example (in a worker): `const link = new WorkerLink(processChannel)`; start Tether with
 * `shared: link.bindings`, `channel: link.channel`, `store: link.store`; before listening,
 * `await link.attach(parts)` takes the snapshot of the bindings from a sibling.
 */
export class WorkerLink {
  readonly #ipc: IpcChannel
  #seq = 0
  #upstreamSeen = false
  #discoveryListed = false
  #acked = 0
  /** Answers waiting for an acknowledgement of writes sent, in seq order (one per batch they wait for). */
  readonly #waits: AckWait[] = []
  /**
   * The wait for the writes not sent yet (they go out as one message, acknowledged at once):
   * every answer that waits for one of them shares it. Null: none waits for them.
   */
  #open: AckWait | null = null
  /** The seq of the last write sent to the primary. */
  #sent = 0
  /** Each session key with an awaited write not acknowledged yet, and the seq of its last one. */
  readonly #pending = new Map<string, number>()
  /** Binding writes not sent yet: sent as one message per event-loop turn, or before any other message. */
  #writes: BindingWrite[] = []
  /**
   * This worker's writes not acknowledged yet, in order from `#ownHead`: at their ack, its pins,
   * unpins and rotations are applied here again, and the keys they were the last write of
   * leave `#pending` and `#latest` (see #reapply).
   */
  #own: OwnWrite[] = []
  #ownHead = 0
  /** The last pin, unpin or rotation of this worker not acknowledged yet, for each key. */
  readonly #latest = new Map<string, OwnWrite>()
  #call = 0
  readonly #calls = new Map<number, { resolve: (v: unknown) => void; chunk?: (e: readonly WireBinding[], r: readonly WireRecord[] | undefined, h: readonly HealthCopy[] | undefined) => void }>()
  readonly #listeners: ((message: string) => void)[] = []
  /**
   * Peer messages (shared health: an upstream found down, a drain) that came before anything
   * subscribed (a starting worker's SharedHealth subscribes once it listens): handed to the
   * first subscriber, but for those that came before its snapshot was taken (in the copy).
   */
  #early: string[] = []
  #parts: WorkerParts | null = null
  /**
   * Other workers' writes received while the snapshot comes in (see attach), and this worker's
   * own acknowledged meanwhile (see #ack), in order; null: applied at once. A starting worker
   * writes nothing before the first `dumping` (it serves no request), which drops those held.
   */
  #held: Held[] | null = null
  /** The snapshot being taken (see attach): drops the writes held so far. */
  #dumping: ((call: number) => void) | null = null
  /**
   * Set once the first `dumping` came: the lead's probe results are held (in #held) from then
   * until the snapshot is in, and applied after the sibling's health (see attach).
   */
  #holdProbes = false
  #lead = false

  /** What this worker changes in every config it reads (the secrets all workers share). */
  readonly adjust: (config: Config) => Config
  /**
   * This worker's group (its primary's workers; WorkerSetup.group), or null when the primary
   * gave none: a peer message over Redis about an active-check verdict of the group is not news
   * to its workers, which all apply the lead's probe results.
   */
  readonly group: string | null

  /** How long an answer waits on the primary at most (ms). */
  readonly #timeout: number
  /** The snapshot timer's (see attach); systemTimers unless a test drives them. */
  readonly #timers: Timers

  constructor(ipc: IpcChannel, adjust: (config: Config) => Config = (c) => c, primaryTimeout = PRIMARY_TIMEOUT, timers: Timers = systemTimers, group: string | null = null) {
    this.#ipc = ipc
    this.adjust = adjust
    this.group = group
    this.#timeout = primaryTimeout
    this.#timers = timers
    ipc.onMessage((m) => {
      if (isTetherMessage(m)) this.#receive(m as ToWorker)
    })
  }

  /** Bindings shared with the other workers: every pin is sent to them; lookups are local (every worker holds them all). */
  readonly bindings: SharedBindings & { sink(): BindingSink } = {
    // every worker holds every binding: nothing to look up; the request path then renews this
    // worker's binding with the others once per sync period (their idle expiry slides too)
    lookup: () => Promise.resolve(null),
    sink: () => ({
      // a renewal (once per sync period of use) changes no routing: no answer waits for it;
      // nor is it sent while this worker's own pin of the same binding is on its way (a
      // binding told again on refusing another worker's pin: the primary relays that pin after
      // the other, which has not been acknowledged here yet, so it reaches the writer after)
      bound: (key, upstream, epoch, renewal, createdAt) => {
        const last = renewal ? this.#latest.get(key)?.w : undefined
        if (last?.[0] === 'b' && last[2] === upstream && last[3] === epoch) return
        this.#write(['b', key, upstream, epoch, createdAt], !renewal)
      },
      unbound: (key) => this.#write(['u', key]),
      // the binding's creation time after the two fields an older worker reads, when there is one
      retired: (key: string, grace: Grace | null, createdAt: number | null) =>
        this.#write(['r', key, grace === null ? null : createdAt === null ? [grace.upstream, grace.epoch] : [grace.upstream, grace.epoch, createdAt]]),
    }),
  }

  /** The peer channel between workers (shared health): the primary sends every message to every worker. */
  readonly channel: PeerChannel = {
    publish: (message) => {
      this.#send({ tether: 'publish', message })
      return Promise.resolve(true)
    },
    subscribe: (fn) => {
      this.#listeners.push(fn)
      const early = this.#early
      this.#early = []
      for (const m of early) fn(m)
      return Promise.resolve()
    },
    remember: async (set, id, value) => (await this.#ask('remember', [set, id, value], false)) === true,
    members: async (set) => {
      const found = await this.#ask('members', [set], null) as Record<string, string> | null
      return found === null ? null : new Map(Object.entries(found))
    },
  }

  /** The checkpoint store the primary holds (`state.store: memory` with workers). */
  readonly store: CheckpointStore = {
    put: async (key: string, cp: Checkpoint, ttlMs: number, timeoutMs?: number, replace?: boolean) => (await this.#ask('cp.put', [key, cp, ttlMs, timeoutMs ?? null, replace === true], 'unavailable')) as PutResult,
    get: async (key: string) => (await this.#ask('cp.get', [key], { status: 'unavailable' })) as GetResult,
    delete: async (key: string) => void (await this.#ask('cp.delete', [key], null)),
    valueBytes, // the primary's memory store's measure
    status: 'ready' as CheckpointStoreStatus,
    answers: () => true,
    onStatus: () => () => undefined,
    start: () => Promise.resolve(),
    stop: () => Promise.resolve(),
  }

  /**
   * Tell the others this worker's answer of `d` to session `k` (`table`: a table key), written
   * through as pins are: the answer's head waits until every other worker has it.
   */
  answered(k: string, table: boolean, d: Decision): void {
    this.#write(['a', k, table, d.upstream, d.epoch, d.moved?.from ?? null, d.moved?.reason ?? null])
  }

  /** Tell the others a move an admin ordered here: each does it at the user's next request there. */
  ordered(k: string, to: string | null, at: number): void {
    this.#write(['o', k, to, at])
  }

  /** Tell the others an answer here did the move an admin ordered for `k`: they drop it. */
  orderDone(k: string, at: number): void {
    this.#write(['x', k, at])
  }

  /** Resolves once every write sent so far (pins, shared answers, orders) was acknowledged; null: none pending. */
  flushed(): Promise<void> | null {
    return this.#until(this.#seq)
  }

  /** Whether no write is waiting for the primary's acknowledgement. */
  idle(): boolean {
    return this.#acked >= this.#seq
  }

  /** The seq of the last write made (for {@link flushedFor}'s `since`). */
  mark(): number {
    return this.#seq
  }

  /**
   * Resolves once every write about any of `keys` (a user's session keys) made so far, and
   * every write made after `since` (a {@link mark} taken before the answer's own writes), was
   * acknowledged; null: none pending. An answer waits for its own writes and its user's (a
   * parallel request of theirs), not other users'.
   * Example: pins of 'u1' and 'u2' pending -> `flushedFor(['u2'], mark)` waits for the write of
   * 'u2'; `flushedFor(['u3', null], mark)` with nothing written since `mark` -> null.
   */
  flushedFor(keys: readonly (string | null | undefined)[], since: number): Promise<void> | null {
    let seq = this.#seq > since ? this.#seq : 0
    for (const k of keys) if (k != null) seq = Math.max(seq, this.#pending.get(k) ?? 0)
    return this.#until(seq)
  }

  /** Tell the others an active probe's result as applied here (this worker runs the checks). */
  probed(id: string, ok: boolean, severe: boolean, cause: string | null = null): void {
    this.#send({ tether: 'probe', id, ok, severe, cause })
  }

  /**
   * A request here waited on upstream `id` longer than the probe timeout (or its client gave up
   * waiting): ask the worker running the checks to probe it now; a timeout of that probe marks
   * it unhealthy at once, and the verdict reaches every worker.
   */
  suspect(id: string): void {
    this.#send({ tether: 'suspect', id })
  }

  /** Tell the others a discovery source's whole current list (this worker runs discovery). */
  discovered(source: string, upstreams: readonly WireDiscovered[]): void {
    const plain = (list: readonly WireDiscovered[]): WireDiscovered[] => list.map((u) => ({ id: u.id, url: u.url, weight: u.weight, ...(u.draining === true ? { draining: true } : {}), ...(u.addresses === undefined ? {} : { addresses: u.addresses }), ...(u.uid === undefined ? {} : { uid: u.uid }), ...keptFields(u) }))
    // pods listed not ready go apart: an older worker ignores them (in `upstreams` it would serve them)
    const unready = upstreams.filter((u) => u.unready === true)
    this.#send({ tether: 'discovered', source, upstreams: plain(upstreams.filter((u) => u.unready !== true)), ...(unready.length === 0 ? {} : { unready: plain(unready) }) })
  }

  /**
   * The keyspace markers after which this group's lead last wrote its part, by Redis node, as
   * the primary kept them when this worker started (WorkerSetup.keyspaceMarkers): read once,
   * by shared health at its construction.
   */
  readonly markers = new Map<string, string>()

  /** This worker, leading, had its part in Redis after `marker` on `node`: the primary keeps it for the workers started later. */
  markerWritten(node: string, marker: string): void {
    this.#send({ tether: 'lead-part', node, marker })
  }

  /** Does this worker run the active checks and discovery? */
  get lead(): boolean {
    return this.#lead
  }

  /**
   * Connect the built parts: remote pins are applied to `parts.sessions` from now on, and the
   * bindings a sibling holds are copied in (resolves when done, or when no sibling answered).
   */
  async attach(parts: WorkerParts): Promise<void> {
    this.#parts = parts
    if (this.#lead) parts.becomeLead()
    // the sibling takes its snapshot before it applies the writes sent from then on, which may
    // reach this worker first: they are held until the snapshot is in, then applied in order
    // (else an unpin, a rotation or a done order from meanwhile would be undone by the copy);
    // those sent before it ('dumping' marks the moment) are in the copy, and dropped. A
    // sibling that dies while it sends is replaced by another one, with a 'dumping' again:
    // the writes held since the first are then applied, as the copy only adds keys missing
    // here (the first sibling's part of the copy does not have them)
    const held: Held[] = []
    let dumps = 0
    const timers = this.#timers
    let timer: unknown
    let call = -1
    this.#held = held
    this.#dumping = (asked) => {
      if (asked !== call) return
      // the lead's probe results from now on are not in the sibling's copy of health: held
      // until it is in (it sets the counts they step from); those before are in it, as are
      // the peer messages before (an upstream found down: its ejection comes with the copy)
      this.#holdProbes = true
      this.#early.length = 0
      if (dumps++ > 0) {
        for (const h of held) applyHeld(parts, h)
        // the next sibling has the whole time to send it all
        timers.clearTimeout(timer)
        timer = timers.setTimeout(() => this.#settle(call, null), SNAPSHOT_TIMEOUT)
      }
      held.length = 0
    }
    await new Promise<void>((resolve) => {
      call = ++this.#call
      timer = timers.setTimeout(() => this.#settle(call, null), SNAPSHOT_TIMEOUT)
      const total = timers.setTimeout(() => this.#settle(call, null), SNAPSHOT_TOTAL)
      this.#calls.set(call, {
        resolve: () => {
          timers.clearTimeout(timer)
          timers.clearTimeout(total)
          this.#held = null
          this.#dumping = null
          this.#holdProbes = false
          for (const h of held) applyHeld(parts, h)
          resolve()
        },
        chunk: (entries, records, health) => {
          // the sibling's view of each upstream (its first chunk): an ejection in force there,
          // and a replica restarted in place before this worker started, hold here too
          if (health !== undefined) parts.health?.copy(health)
          const now = parts.now()
          for (const [key, upstream, epoch, createdAt, lastSeen] of entries) parts.sessions.applyCopy(key, upstream, epoch, createdAt, lastSeen, now)
          for (const r of records ?? []) {
            // a grace's creation time: absent from an older sibling's (unknown, as before)
            if (r[0] === 'g') parts.sessions.copyRotation(r[1], r[2], r[3], r[4], now, r[5], Number.isFinite(r[6]) ? r[6]! : null)
            else parts.records.copy(r, now)
          }
        },
      })
      this.#send({ tether: 'call', call, op: 'snapshot', args: [] })
    })
  }

  /**
   * Resolves once the primary answered: every message it sent before is handled here (the
   * channel is ordered). After the proxy listener closed, a connection the primary handed over
   * meanwhile has then been given back to it (node:cluster gives a refused one to another worker).
   */
  async settled(): Promise<void> {
    await this.#ask('ping', [], false)
  }

  /**
   * Whether this group has seen a healthy upstream: before this worker started
   * (`WorkerSetup.upstreamSeen`, given with `tell` false), another worker since (the primary's
   * `upstream-seen`), or this worker since (told to the primary once, for the other workers).
   */
  get upstreamSeen(): boolean {
    return this.#upstreamSeen
  }

  /** This group saw a healthy upstream; `tell`: this worker saw it first, say so to the primary (once). */
  sawUpstream(tell = true): void {
    if (this.#upstreamSeen) return
    this.#upstreamSeen = true
    if (tell) this.#send({ tether: 'upstream-seen' })
  }

  /**
   * Whether this group's discovery has had its first list (or its first attempt failed): before
   * this worker started (`WorkerSetup.discoveryListed`, given with `tell` false), the lead's since
   * (the primary's `discovery-listed`), or this worker's own as the lead (told to the primary).
   * Until then its `/readyz` says the start waits for it, as one process's does.
   */
  get discoveryListed(): boolean {
    return this.#discoveryListed
  }

  /** This group's discovery had its first list; `tell`: this worker's own (it leads), say so to the primary (once). */
  listedDiscovery(tell = true): void {
    if (this.#discoveryListed) return
    this.#discoveryListed = true
    if (tell) this.#send({ tether: 'discovery-listed' })
  }

  /** Started: the primary may send it connections' admin requests at `admin`. */
  ready(admin: string): void {
    this.#send({ tether: 'ready', admin })
  }

  #receive(m: ToWorker): void {
    const p = this.#parts
    switch (m.tether) {
      case 'ack': return this.#ack(m.seq)
      case 'written':
        if (this.#held !== null) return void this.#held.push({ own: false, writes: m.writes })
        return void (p !== null && applyWrites(p, m.writes))
      case 'message':
        if (this.#listeners.length === 0) return void (this.#early.length < EARLY_MAX && this.#early.push(m.message))
        for (const fn of this.#listeners) fn(m.message)
        return
      case 'probe':
        if (this.#holdProbes && this.#held !== null) return void this.#held.push({ probe: [m.id, m.ok, m.severe, m.cause ?? null] })
        return void p?.applyProbe(m.id, m.ok, m.severe, m.cause ?? null)
      case 'discovered': return void p?.discovered(m.source, [...m.upstreams, ...(m.unready ?? []).map((u) => ({ ...u, unready: true }))], m.leaving ?? [])
      case 'suspect': return void p?.probeSoon(m.id)
      case 'reply': return this.#settle(m.call, m.value)
      case 'snapshot-chunk': return void this.#calls.get(m.call)?.chunk?.(m.entries, m.records, m.health)
      case 'dumping': return this.#dumping?.(m.call)
      case 'dump': return this.#dump(m.dump)
      case 'ask':
        if (m.op === 'alive') return this.#send({ tether: 'answer', call: m.call, value: true })
        if (p === null) return this.#send({ tether: 'answer', call: m.call, value: [] })
        return void p.metrics(m.form === 'compact').then((value) => this.#send({ tether: 'answer', call: m.call, value }), () => this.#send({ tether: 'answer', call: m.call, value: [] }))
      case 'lead':
        if (!this.#lead) {
          this.#lead = true
          p?.becomeLead()
        }
        return
      case 'upstream-seen': return this.sawUpstream(false)
      case 'discovery-listed': return this.listedDiscovery(false)
      default: // 'reload' and 'stop' are the process entry's
    }
  }

  /** Send `w` with this turn's writes; `awaited`: the answers of its user wait for it (see flushedFor). */
  #write(w: BindingWrite, awaited = true): void {
    ++this.#seq
    const last = w[0] === 'b' ? this.#latest.get(w[1]) : undefined
    const after = last === undefined ? 0 : last.w[0] === 'b' ? last.after : last.seq
    const own: OwnWrite = { seq: this.#seq, w, awaited, after }
    this.#own.push(own)
    if (awaited) this.#pending.set(w[1], this.#seq)
    if (w[0] === 'b' || w[0] === 'u' || w[0] === 'r') this.#latest.set(w[1], own)
    // one message for every write of this event-loop turn: under load, many answers' pins
    if (this.#writes.push(w) === 1) setImmediate(() => this.#sendWrites())
  }

  #sendWrites(): void {
    if (this.#writes.length === 0) return
    const writes = this.#writes
    this.#writes = []
    this.#sent = this.#seq
    const open = this.#open
    if (open !== null) {
      // the batch's ack carries its last seq
      open.seq = this.#seq
      this.#open = null
      this.#waits.push(open)
    }
    this.#ipc.send({ tether: 'writes', seq: this.#seq, writes })
  }

  /** Every other message: after the writes made before it (the primary sees one order). */
  #send(m: ToPrimary): void {
    this.#sendWrites()
    this.#ipc.send(m)
  }

  /**
   * Resolves once `seq` was acknowledged (at most after the primary timeout); null: it is. The
   * writes of one event-loop turn go out as one message and are acknowledged together, so the
   * answers waiting for any of them share one promise and one timer (before, each answer had its
   * own promise, closures, timer and map entry, which lived for the IPC round trip: under load at
   * a million new users they outlived two scavenges and were most of what the workers' old space
   * grew by between full collections; docs/workers.md, Memory).
   */
  #until(seq: number): Promise<void> | null {
    if (this.#acked >= seq) return null
    if (seq > this.#sent) return (this.#open ??= this.#wait(seq)).promise
    // a write sent already (a parallel request of the same user): its own wait, in seq order
    const waits = this.#waits
    let i = waits.length
    while (i > 0 && waits[i - 1]!.seq > seq) i--
    if (i > 0 && waits[i - 1]!.seq === seq) return waits[i - 1]!.promise
    const wait = this.#wait(seq)
    waits.splice(i, 0, wait)
    return wait.promise
  }

  /** A shared wait for the ack of `seq`; a primary that does not answer must not hold answers back for long. */
  #wait(seq: number): AckWait {
    let resolve!: () => void
    const promise = new Promise<void>((r) => { resolve = r })
    const wait: AckWait = { seq, promise, resolve, timer: undefined }
    wait.timer = setTimeout(() => {
      if (this.#open === wait) this.#open = null
      const at = this.#waits.indexOf(wait)
      if (at >= 0) this.#waits.splice(at, 1)
      resolve()
    }, this.#timeout)
    return wait
  }

  #ack(seq: number): void {
    const from = this.#acked
    if (seq <= from) return
    this.#acked = seq
    this.#reapply(seq)
    const waits = this.#waits
    let done = 0
    while (done < waits.length && waits[done]!.seq <= seq) done++
    if (done === 0) return
    for (const wait of waits.splice(0, done)) {
      clearTimeout(wait.timer as NodeJS.Timeout)
      wait.resolve()
    }
  }

  /**
   * The ack of `seq` comes where the primary put this worker's writes up to it among the
   * others' (the channel keeps its order): its pins, unpins and rotations are applied again at
   * that place, so every worker has applied every one in the same order, and a pin or unpin
   * crossing another worker's write in the primary ends the same on all. A later decision of
   * this worker about the same key, not acknowledged yet, is then applied again over it, as
   * another worker's would be (a pin acknowledged does not hide an unpin, nor the pin made
   * after that unpin, here; a move another worker made meanwhile stands); it gets its own
   * place at its ack.
   */
  #reapply(seq: number): void {
    const own = this.#own
    const from = this.#ownHead
    let to = from
    while (to < own.length && own[to]!.seq <= seq) to++
    if (to === from) return
    this.#ownHead = to
    const acked: RoutingWrite[] = []
    for (let i = from; i < to; i++) {
      const o = own[i]!
      const key = o.w[1]
      if (o.awaited && this.#pending.get(key) === o.seq) this.#pending.delete(key)
      if (o.w[0] !== 'b' && o.w[0] !== 'u' && o.w[0] !== 'r') continue
      acked.push(o.w as RoutingWrite)
      if (this.#latest.get(key) === o) this.#latest.delete(key)
    }
    const later: RoutingWrite[] = []
    for (const w of acked) {
      const l = this.#latest.get(w[1])
      if (l === undefined || later.at(-1) === l.w) continue
      // a pin made after an unpin not acknowledged yet: made over nothing, as it was
      if (l.after > seq) later.push(['u', w[1]])
      later.push(l.w as RoutingWrite)
    }
    if (to === own.length) {
      own.length = 0
      this.#ownHead = 0
    } else if (to > 1_024 && to * 2 > own.length) {
      this.#own = own.slice(to)
      this.#ownHead = 0
    }
    const p = this.#parts
    const writes = later.length === 0 ? acked : acked.concat(later)
    if (this.#held !== null) this.#held.push({ own: true, writes })
    else if (p !== null) applyOwn(p, writes)
  }

  #ask(op: CallOp, args: readonly unknown[], fallback: unknown): Promise<unknown> {
    const call = ++this.#call
    return new Promise((resolve) => {
      const timer = setTimeout(() => this.#settle(call, fallback), PRIMARY_TIMEOUT)
      this.#calls.set(call, { resolve: (v) => { clearTimeout(timer); resolve(v) } })
      this.#send({ tether: 'call', call, op, args })
    })
  }

  #settle(call: number, value: unknown): void {
    const c = this.#calls.get(call)
    if (c === undefined) return
    this.#calls.delete(call)
    c.resolve(value)
  }

  /**
   * Send every binding held here with its times, most recently used first, then the session
   * records a router reads (see SessionRecords.copies), in chunks (a starting sibling asked).
   */
  #dump(dump: number): void {
    const p = this.#parts
    let entries: WireBinding[] = []
    let records: WireRecord[] = []
    // the health of each upstream as it is here, with the first chunk
    let health = p?.health?.copies()
    const chunk = (done: boolean): void => {
      this.#send({ tether: 'dump-chunk', dump, entries, records, ...(health === undefined ? {} : { health }), done })
      health = undefined
    }
    const full = (): void => {
      if (entries.length + records.length < CHUNK) return
      chunk(false)
      entries = []
      records = []
    }
    if (p !== null) {
      const now = p.now()
      for (const e of p.sessions.table.byRecency(now)) {
        entries.push([e.key, e.upstream, e.epoch, e.createdAt, e.lastSeen])
        full()
      }
      for (const r of p.records.copies(now)) {
        records.push(r)
        full()
      }
      for (const [key, upstream, epoch, until, pinned, createdAt] of p.sessions.rotations(now)) {
        // the creation time after the six fields an older worker reads, when there is one
        records.push(createdAt === null ? ['g', key, upstream, epoch, until, pinned] : ['g', key, upstream, epoch, until, pinned, createdAt])
        full()
      }
    }
    chunk(true)
  }
}

/** Apply writes held while the snapshot came in (see WorkerLink.attach). */
function applyHeld(p: WorkerParts, h: Held): void {
  if ('probe' in h) p.applyProbe(...h.probe)
  else if (h.own) applyOwn(p, h.writes)
  else applyWrites(p, h.writes)
}

/** Apply this worker's own pins, unpins and rotations again (see WorkerLink.#reapply): as another worker's, telling nothing. */
function applyOwn(p: WorkerParts, writes: readonly RoutingWrite[]): void {
  const now = p.now()
  for (const w of writes) applyRouting(p, w, now, false)
}

/** Apply a pin (`resend`: one refused here tells the binding held again), an unpin or a rotation. */
function applyRouting(p: WorkerParts, w: RoutingWrite, now: number, resend: boolean): void {
  if (w[0] === 'b') p.sessions.applyRemote(w[1], w[2], w[3], now, w[4], resend)
  else if (w[0] === 'u') p.sessions.table.delete(w[1])
  else p.sessions.applyRetired(w[1], w[2] === null ? null : { upstream: w[2][0], epoch: w[2][1] }, now, Number.isFinite(w[2]?.[2]) ? w[2]![2]! : null)
}

/** Apply another worker's binding writes, shared answers and orders, in order. */
function applyWrites(p: WorkerParts, writes: readonly BindingWrite[]): void {
  const now = p.now()
  for (const w of writes) {
    if (w[0] === 'b' || w[0] === 'u' || w[0] === 'r') applyRouting(p, w, now, true)
    else if (w[0] === 'o') p.records.order(w[1], w[2], w[3])
    else if (w[0] === 'x') p.records.dropOrder(w[1], w[2])
    else p.records.record(w[1], w[2], w[3], w[4], w[5] === null ? null : { from: w[5], reason: w[6]! }, now, true)
  }
}
