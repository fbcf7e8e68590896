// The primary's switchboard between workers (`workers` > 1): a pin, unpin or probe result from
// one worker goes to every other one before the sender's write is acknowledged; peer-channel
// messages go to all; discovery lists from the lead go to the others and the last of each
// source is kept for a worker that starts, with what left it and still drains, and since when
// the others drain what is listed terminating; the small named sets and the memory checkpoint store live here; a
// starting worker's snapshot is streamed from a sibling. Layer 2 state owner: no I/O of its
// own (messages go out through the injected `send`), no routing decisions.
import type { CheckpointStore } from '../state/checkpoint-store.js'
import { bySourcePrecedence } from '../upstream/membership.js'
import { goneByUnready } from '../upstream/upstream-set.js'
import type { ToPrimary, ToWorker, WireDiscovered, WireLeaving } from './messages.js'

/** How the hub reaches the workers. */
export interface HubWorkers {
  /** The workers connected now (ids), in start order. */
  ids(): readonly number[]
  /** The id of a started worker other than `except` to copy bindings from, or null. */
  donor(except: number): number | null
  send(id: number, message: ToWorker): void
  /** The worker running the active checks and discovery, or null while there is none. */
  lead(): number | null
}

/**
 * Example: worker 1 sends `{ tether: 'writes', seq: 7, writes: [['b', 'k', 'app-1', 0]] }` ->
 * `hub.receive(1, m)` sends `{ tether: 'written', writes: [...] }` to every other worker, then
 * `{ tether: 'ack', seq: 7 }` to worker 1 (so its answer's head goes out after the others know;
 * and where worker 1 applies those writes again, so every worker applies all in this order).
 */
export class Hub {
  readonly #workers: HubWorkers
  #store: CheckpointStore | null
  readonly #sets = new Map<string, Map<string, string>>()
  /** The last list of each discovery source (a starting worker gets them before its snapshot). */
  readonly #discovered = new Map<string, { upstreams: readonly WireDiscovered[]; unready: readonly WireDiscovered[] | undefined }>()
  /**
   * What left each source's listing, by id, and since when: the workers that saw it leave drain
   * it for `drain_timeout`, and a starting worker, which never saw it listed, must too.
   */
  readonly #leaving = new Map<string, Map<string, WireLeaving>>()
  /**
   * Since when the workers drain each upstream listed terminating (`draining` in every source
   * listing it, as Membership reads the lists), by id: a starting worker drains it from then too.
   */
  #drainStarts = new Map<string, number>()
  readonly #now: () => number
  readonly #drainTimeout: () => number
  /**
   * Snapshots in progress: dump id -> the worker that asked, and its call; the sibling asked
   * (`from`) and whether its first chunk came (`begun`).
   */
  readonly #dumps = new Map<number, { readonly to: number; readonly call: number; readonly from: number; begun: boolean }>()
  #dump = 0

  /**
   * `store`: the checkpoint store of `state.store: memory`, held here for all workers (else
   * null); `now` (ms since the epoch) and `drainTimeout` (ms, the config accepted last): how long
   * an upstream gone from a listing is kept for a starting worker.
   */
  constructor(workers: HubWorkers, store: CheckpointStore | null, time: { readonly now: () => number; readonly drainTimeout: () => number } = { now: () => 0, drainTimeout: () => 0 }) {
    this.#workers = workers
    this.#store = store
    this.#now = time.now
    this.#drainTimeout = time.drainTimeout
  }
  /** The checkpoint store from now on (a reload brought `state.store: memory`). */
  setStore(store: CheckpointStore): void {
    this.#store = store
  }


  receive(from: number, m: ToPrimary): void {
    switch (m.tether) {
      case 'writes': this.#others(from, { tether: 'written', writes: m.writes }); return this.#workers.send(from, { tether: 'ack', seq: m.seq })
      case 'suspect': {
        const lead = this.#workers.lead()
        return void (lead !== null && this.#workers.send(lead, { tether: 'suspect', id: m.id }))
      }
      case 'probe': {
        // a probe result of the sibling sending a copy, sent before its copy (which has the
        // health it made): not for the worker taking that copy (it would count it twice)
        const message: ToWorker = { tether: 'probe', id: m.id, ok: m.ok, severe: m.severe, cause: m.cause ?? null }
        for (const id of this.#workers.ids()) if (id !== from && !this.#copying(from, id)) this.#workers.send(id, message)
        return
      }
      case 'discovered': {
        const drainStarts = this.#drainStartsWith(m.source, m.upstreams)
        this.#left(m.source, m.upstreams)
        this.#discovered.set(m.source, { upstreams: m.upstreams, unready: m.unready })
        this.#drainStarts = drainStarts
        this.#forgetGone()
        return this.#others(from, discoveredMessage(m.source, m.upstreams, m.unready))
      }
      case 'publish': for (const id of this.#workers.ids()) this.#workers.send(id, { tether: 'message', message: m.message }); return
      case 'call': return void this.#call(from, m.call, m.op, m.args).then(
        (value) => value !== undefined && this.#workers.send(from, { tether: 'reply', call: m.call, value }),
        // a store that failed: the worker goes on without (as with a store that does not answer)
        () => this.#workers.send(from, { tether: 'reply', call: m.call, value: null }),
      )
      case 'dump-chunk': {
        const d = this.#dumps.get(m.dump)
        if (d === undefined) return
        d.begun = true
        this.#workers.send(d.to, {
          tether: 'snapshot-chunk', call: d.call, entries: m.entries,
          ...(m.records === undefined ? {} : { records: m.records }), ...(m.health === undefined ? {} : { health: m.health }),
        })
        if (m.done) this.#finishDump(m.dump)
        return
      }
      default: // 'ready' and 'answer' are the supervisor's
    }
  }

  /**
   * A worker is gone: snapshots it asked for end; one it was sending is asked of another sibling
   * (the asker keeps what it got: the copy only adds what it lacks), or ends when there is none.
   */
  gone(id: number): void {
    for (const [dump, d] of [...this.#dumps]) {
      if (d.to === id) this.#dumps.delete(dump)
      else if (d.from === id) {
        this.#dumps.delete(dump)
        this.#startDump(d.to, d.call)
      }
    }
  }

  /**
   * Source `source` lists `upstreams` now: what its last list had and this one lacks leaves now
   * (draining since it was listed terminating, if it was: the workers' drain began then); what
   * it lists again is no longer leaving, nor what any source lists (in any source's entries);
   * what left longer than `drain_timeout` ago is forgotten.
   */
  #left(source: string, upstreams: readonly WireDiscovered[]): void {
    const now = this.#now()
    const leaving = this.#leavingOf(source)
    const listed = new Set(upstreams.map((u) => u.id))
    for (const u of this.#discovered.get(source)?.upstreams ?? []) {
      if (listed.has(u.id) || leaving.has(u.id)) continue
      const drainingSince = this.#drainStarts.get(u.id)
      leaving.set(u.id, { ...u, since: now, ...(drainingSince === undefined ? {} : { drainingSince }) })
    }
    for (const id of listed) leaving.delete(id)
    if (leaving.size === 0) this.#leaving.delete(source)
    else this.#leaving.set(source, leaving)
    // listed by another source: no longer leaving on the workers either (their membership ends
    // it, and undrains it if listed serving); when that source drops it, it leaves from then
    const elsewhere = new Set([...this.#discovered].filter(([s]) => s !== source).flatMap(([, { upstreams }]) => upstreams.map((u) => u.id)))
    for (const [s, entries] of [...this.#leaving]) {
      for (const id of [...entries.keys()]) if (listed.has(id) || elsewhere.has(id)) entries.delete(id)
      if (entries.size === 0) this.#leaving.delete(s)
    }
    this.#expire(now)
  }

  /**
   * Drop every source's leaving upstreams whose `drain_timeout` (from when they left) has passed:
   * no worker drains them any more. Run on each list and before a starting worker is sent them
   * (no timer: until then they are only memory, and a starting worker skips them anyway).
   */
  #expire(now: number): void {
    for (const [source, leaving] of [...this.#leaving]) {
      for (const [id, u] of [...leaving]) if (now - u.since >= this.#drainTimeout()) leaving.delete(id)
      if (leaving.size === 0) this.#leaving.delete(source)
    }
  }

  /**
   * Since when each upstream listed terminating drains, once source `source` lists `upstreams`:
   * as before for one that was terminating already; for one leaving (gone from every listing,
   * still draining on the workers) since its drain began; else from now (the workers drain it
   * as they apply this list). Terminating: listed `draining` by every source that lists it.
   */
  #drainStartsWith(source: string, upstreams: readonly WireDiscovered[]): Map<string, number> {
    const lists = [...new Map([...this.#discovered].map(([s, { upstreams }]) => [s, upstreams] as const)).set(source, upstreams).values()]
    const serving = new Set(lists.flatMap((list) => list.filter((u) => u.draining !== true).map((u) => u.id)))
    const draining = new Set(lists.flatMap((list) => list.filter((u) => u.draining === true && !serving.has(u.id)).map((u) => u.id)))
    const now = this.#now()
    const starts = new Map<string, number>()
    for (const id of draining) starts.set(id, this.#drainStarts.get(id) ?? this.#leavingDrainStart(id, now) ?? now)
    return starts
  }

  /** When the workers began draining `id`, if it is leaving (the entry of the source it left last), or undefined. */
  #leavingDrainStart(id: string, now: number): number | undefined {
    let latest: WireLeaving | undefined
    for (const leaving of this.#leaving.values()) {
      const u = leaving.get(id)
      if (u !== undefined && now - u.since < this.#drainTimeout() && (latest === undefined || latest.since < u.since)) latest = u
    }
    return latest === undefined ? undefined : latest.drainingSince ?? latest.since
  }

  /**
   * Forget the leaving upstreams whose pod is gone by the lists as they are now (an address a
   * listed upstream has, or a pod listed not ready under their name or at their address): the
   * workers that saw it dropped them at once, as Membership.setDiscovered does, and do not take
   * them back when that address is freed again, so a starting worker must not be given them.
   */
  #forgetGone(): void {
    const lists = [...this.#discovered.values()]
    const taken = new Set(lists.flatMap(({ upstreams }) => upstreams.flatMap((u) => u.addresses ?? [u.url])))
    const gone = goneByUnready(lists.flatMap(({ unready }) => unready ?? []))
    for (const [source, leaving] of [...this.#leaving]) {
      for (const [id, u] of [...leaving]) if (taken.has(u.url) || gone(u)) leaving.delete(id)
      if (leaving.size === 0) this.#leaving.delete(source)
    }
  }

  /** The upstreams left source `source`'s listing (a copy of the map to fill). */
  #leavingOf(source: string): Map<string, WireLeaving> {
    return new Map(this.#leaving.get(source))
  }

  /** Asks a sibling of `to` for a snapshot answering its call `call`; with none, the call ends (null). */
  #startDump(to: number, call: number): void {
    const donor = this.#workers.donor(to)
    if (donor === null) return this.#workers.send(to, { tether: 'reply', call, value: null })
    const dump = ++this.#dump
    this.#dumps.set(dump, { to, call, from: donor, begun: false })
    this.#workers.send(donor, { tether: 'dump', dump })
    this.#workers.send(to, { tether: 'dumping', call })
  }

  /** Is `from` taking a copy for `to` whose first chunk has not come (what `from` sends meanwhile is in it)? */
  #copying(from: number, to: number): boolean {
    for (const d of this.#dumps.values()) if (d.from === from && d.to === to && !d.begun) return true
    return false
  }

  #finishDump(dump: number): void {
    const d = this.#dumps.get(dump)!
    this.#dumps.delete(dump)
    this.#workers.send(d.to, { tether: 'reply', call: d.call, value: null })
  }

  #others(from: number, message: ToWorker): void {
    for (const id of this.#workers.ids()) if (id !== from) this.#workers.send(id, message)
  }

  /** Answers a worker's call (undefined: answered later, by a snapshot's last chunk). */
  async #call(from: number, call: number, op: string, args: readonly unknown[]): Promise<unknown> {
    const store = this.#store
    switch (op) {
      case 'remember': {
        const [set, id, value] = args as [string, string, string | null]
        const members = this.#sets.get(set) ?? new Map<string, string>()
        if (value === null) members.delete(id)
        else members.set(id, value)
        this.#sets.set(set, members)
        return true
      }
      case 'members': return Object.fromEntries(this.#sets.get(args[0] as string) ?? [])
      case 'cp.get': return store === null ? { status: 'unavailable' } : store.get(args[0] as string)
      case 'cp.put': {
        const [key, cp, ttl, timeout, replace] = args as Parameters<CheckpointStore['put']>
        return store === null ? 'unavailable' : store.put(key, cp, ttl, timeout ?? undefined, replace === true)
      }
      case 'cp.delete': return store === null ? null : store.delete(args[0] as string).then(() => null)
      case 'snapshot': {
        // the upstreams first: the bindings that follow may name discovered ones. An upstream
        // leaving is given once, by the source it left last (the siblings drain it from when no
        // source listed it any more), and not at all while another source still lists it.
        // A listed upstream terminating carries since when the others drain it (`drainingSince`).
        // The sources go in Membership's precedence (kubernetes, then dns), not the order they
        // first reported in: an id both list then has the entry the lead holds from the first
        // list on, never first the other source's url (a false replacement, logged and resetting
        // its health, on every worker that starts).
        this.#expire(this.#now())
        const listedAnywhere = new Set([...this.#discovered.values()].flatMap(({ upstreams }) => upstreams.map((u) => u.id)))
        const latest = new Map<string, WireLeaving>()
        for (const entries of this.#leaving.values()) {
          for (const [id, u] of entries) if (!listedAnywhere.has(id) && (latest.get(id)?.since ?? -Infinity) < u.since) latest.set(id, u)
        }
        for (const [source, { upstreams, unready }] of [...this.#discovered].sort(([a], [b]) => bySourcePrecedence(a, b))) {
          const leaving = [...this.#leavingOf(source).values()].filter((u) => latest.get(u.id) === u)
          const draining = upstreams.map((u) => {
            const drainingSince = u.draining === true ? this.#drainStarts.get(u.id) : undefined
            return drainingSince === undefined ? u : { ...u, drainingSince }
          })
          this.#workers.send(from, { ...discoveredMessage(source, draining, unready), ...(leaving.length === 0 ? {} : { leaving }) })
        }
        this.#startDump(from, call)
        return undefined
      }
      case 'ping': return true
      default: return null
    }
  }
}

/** A `discovered` message to a worker (`unready` only when the lead sent one). */
function discoveredMessage(source: string, upstreams: readonly WireDiscovered[], unready: readonly WireDiscovered[] | undefined): ToWorker {
  return { tether: 'discovered', source, upstreams, ...(unready === undefined ? {} : { unready }) }
}
