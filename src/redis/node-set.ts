// The nodes behind one Redis connection (by address) and the events of their health: each
// change of status told once, a node that stays down told again at most every
// STILL_DOWN_INTERVAL_MS, a node that refuses writes (and why) and takes them again. Layer 3 helper of connection.ts: no
// I/O, no ioredis; the connection decides what each call's outcome means (NodeHealth judges it).
import { NodeHealth, type RedisNodeHealth, type RedisNodeRole } from './node-health.js'
import { tellAll } from './listener-set.js'

/** A node that keeps failing while down is reported again ('still_down') at most this often (ms). */
export const STILL_DOWN_INTERVAL_MS = 1_000

/**
 * A change in one node's health. `up` / `down`: its status changed, or is known for the first
 * time (a node that was never reachable is reported `down` once). `still_down`: a call or a
 * connection attempt failed again while it is down (at most once per
 * {@link STILL_DOWN_INTERVAL_MS} per node). `removed`: it no longer serves slots (a failover or
 * resharding moved them), or a seed turned out not to be a master (maybe never reported before).
 * `writes_refused`: it refuses writes (`node.writesRefused` says why: `oom`, full; `misconf`, it
 * cannot persist; `noreplicas`, too few replicas), told again when the reason changes; a
 * refusal is an answer: it stays up, its reads go on. `writes_taken`: it takes writes again
 * (its writes probe, see {@link ROOM_PROBE_LUA}).
 */
export interface RedisNodeEvent {
  readonly kind: 'up' | 'down' | 'still_down' | 'removed' | 'writes_refused' | 'writes_taken'
  readonly node: RedisNodeHealth
}

/**
 * The nodes by address (a Map: one for standalone and Sentinel; the masters, or seeds, of a
 * Cluster) and the listeners of their events. `changed` is called when a node's status changed
 * (the connection's overall status may follow).
 */
export class NodeSet extends Map<string, NodeHealth> {
  readonly #listeners = new Set<(event: RedisNodeEvent) => void>()
  readonly #changed: () => void

  constructor(changed: () => void) {
    super()
    this.#changed = changed
  }

  /** Be told of every node's health changes (see {@link RedisNodeEvent}); returns the unsubscribe function. */
  onNode(fn: (event: RedisNodeEvent) => void): () => void {
    this.#listeners.add(fn)
    return () => {
      this.#listeners.delete(fn)
    }
  }

  /** A new node at `address`, reachable or not (as the client is now). */
  add(address: string, role: RedisNodeRole, reachable: boolean): NodeHealth {
    const node = new NodeHealth(address, role)
    node.reachable = reachable
    this.set(address, node)
    return node
  }

  /** The one node of a standalone or Sentinel connection. */
  single(): NodeHealth | undefined {
    return this.values().next().value
  }

  /** The first node that is down, if any. */
  firstDown(): NodeHealth | undefined {
    for (const node of this.values()) if (node.status === 'down') return node
    return undefined
  }

  /** The health of every node at `now`, in address order. */
  snapshots(now: number): RedisNodeHealth[] {
    return [...this.values()].map((n) => n.snapshot(now)).sort((a, b) => (a.address < b.address ? -1 : a.address > b.address ? 1 : 0))
  }

  /**
   * Emits the node's status when it changed, or 'still_down' for a failure while down
   * (throttled); then 'writes_refused' or 'writes_taken' when that (or the reason) changed.
   */
  report(node: NodeHealth, now: number, failed: boolean): void {
    const status = node.status
    if (status !== node.reported) {
      node.reported = status
      node.reportedAt = now
      this.emit({ kind: status, node: node.snapshot(now) })
      this.#changed()
    } else if (failed && status === 'down' && now - node.reportedAt >= STILL_DOWN_INTERVAL_MS) {
      node.reportedAt = now
      this.emit({ kind: 'still_down', node: node.snapshot(now) })
    }
    if (node.writesRefused !== node.reportedWritesRefused) {
      node.reportedWritesRefused = node.writesRefused
      this.emit({ kind: node.writesRefused !== null ? 'writes_refused' : 'writes_taken', node: node.snapshot(now) })
    }
  }

  /** Reports every node whose status changed (see {@link report}). */
  reportAll(now: number): void {
    for (const node of this.values()) this.report(node, now, false)
  }

  emit(event: RedisNodeEvent): void {
    tellAll(this.#listeners, event)
  }
}
