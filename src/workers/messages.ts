// The messages between the primary and its workers over Node's IPC channel (`workers` > 1).
// Layer 0 vocabulary: types only. Every message carries `tether` (its kind), so messages of
// other libraries on the same channel (prom-client's metric requests) are told apart.
import type { AdminConfig } from '../config/schema.js'
import type { MoveReason } from '../routing/decision.js'
import type { HealthCopy } from '../health/health-copy.js'

/** The environment variable that tells a worker process its slot (index) among the workers. */
export const WORKER_ENV = 'TETHER_WORKER'

/**
 * What a starting worker gets from its primary (asked with `hello`, over the IPC channel, so no
 * secret sits in its environment).
 */
export interface WorkerSetup {
  readonly index: number
  /** Signs Tether's affinity cookie when `affinity.cookie.secret` is not set (one for all workers). */
  readonly cookieSecret: string
  /** Keys the access log's session field when `log.session_secret` is not set. */
  readonly sessionSecret: string
  /**
   * The `admin` section the primary started with, which every worker runs (its token and
   * allowed hosts): a change needs a restart of the primary, whose listener keeps it, so a
   * worker started later by a roll must not take the file's.
   */
  readonly admin: AdminConfig
  /**
   * The config file's text its slot runs: the one the primary accepted when it started the
   * slot's worker (a crash restart keeps it; a roll replaces it). The sections that need new
   * workers are this one's.
   */
  readonly start: string
  /** The text the primary accepted last, when it is not `start`: its live sections apply on top. */
  readonly live: string | null
  /**
   * The primary logs ioredis's console notices once for all its workers: send each as a
   * `notice` (absent from an older primary's setup: the worker logs its own).
   */
  readonly notices?: boolean
  /**
   * A worker of this group has seen a healthy upstream since the primary started (see
   * `upstream-seen`): this one's `/readyz` needs none to be ready (`admin.readiness.require_upstream:
   * startup`), as the workers it replaces did not. Absent from an older primary's setup: false.
   */
  readonly upstreamSeen?: boolean
  /**
   * The group's discovery has had its first list (see `discovery-listed`): this one's `/readyz`
   * does not wait for it. False: `/readyz` says `starting: waiting for discovery's first list`
   * (as one process does while its start waits for it) until the lead's first list is in or
   * failed. Absent from an older primary's setup, which never tells: not waited for.
   */
  readonly discoveryListed?: boolean
  /**
   * This primary's group of workers (one id for all of them, made at its start): a peer message
   * over Redis about an active-check verdict of this group is not news to its workers (each
   * applies the lead's probe results). Absent from an older primary's setup: none.
   */
  readonly group?: string
  /**
   * The keyspace markers after which this group's lead last wrote its part after a loss of
   * Redis's keys (or took as its baseline), by Redis node (see `lead-part`): this worker's first
   * keyspace check compares with them (SharedHealth.leadPartMarker; only one of the same key
   * and database: see markerAt in keyspace-watch.ts). Absent from an older primary's setup:
   * none (the first check is the baseline).
   */
  readonly keyspaceMarkers?: Readonly<Record<string, string>>
}

/** An upstream a discovery source reports, as it travels (see DiscoveredUpstream). */
export interface WireDiscovered {
  readonly id: string
  readonly url: string
  readonly weight: number
  readonly draining?: boolean
  /**
   * Listed but not serving (a pod not ready): its uid and addresses only (see DiscoveredUpstream).
   * Never true in a message's `upstreams`: such pods travel in its `unready` list (an older
   * worker, which ignores that list, would take them for serving pods).
   */
  readonly unready?: boolean
  readonly addresses?: readonly string[]
  /** The pod's uid (Kubernetes); absent from an older Tether's lead. */
  readonly uid?: string
  /**
   * DNS SRV: a family kept while it answers empty, since when (ms since the epoch; see
   * KeptEmptyFamily), and the other family's addresses it leans on (`base`): a new lead counts
   * on from it and judges as its predecessor did. An older worker ignores `base`.
   */
  readonly keptEmpty?: { readonly family: 4 | 6; readonly since: number; readonly base?: readonly string[] }
  /**
   * Since when the other workers drain it (ms since the epoch), when that is not when it reaches
   * this worker: in a list sent to a starting worker, on an upstream listed `draining` (since it
   * was first listed so) and on a `leaving` one that was listed terminating before it left (its
   * drain began then, not at `since`). Absent from the lead's lists; an older worker ignores it.
   */
  readonly drainingSince?: number
  /** DNS SRV: the other family, when both are kept at once (see keptFamilies); an older Tether ignores it (and so starts its time again). */
  readonly keptEmptyAlso?: { readonly family: 4 | 6; readonly since: number; readonly base?: readonly string[] }
}

/**
 * An upstream that left a discovery source's listing and drains (for `affinity.drain_timeout`)
 * on the workers that saw it leave: `since`, when the primary relayed the list without it (ms
 * since the epoch: its removal comes `drain_timeout` after); its drain began at `drainingSince`
 * when it was listed terminating before, else at `since`. Sent to a starting worker with the
 * source's last list (see `discovered`).
 */
export interface WireLeaving extends WireDiscovered {
  readonly since: number
}

/**
 * A binding as it travels in a snapshot: key, upstream id, epoch, and when it was created and
 * last used where it comes from (ms since the epoch: the workers share one machine's clock).
 */
export type WireBinding = readonly [key: string, upstream: string, epoch: number, createdAt: number, lastSeen: number]

/**
 * What a starting worker copies of a sibling's session records (see SessionRecords.copies): an
 * answer recorded as an entry of its own (`s`: upstream, epoch, when first and last answered),
 * the last answer time of a pinned key (`t`), a last move (`m`: from, to, why, when) and an
 * admin's order not done yet (`o`: to where, or null, and when it was made); and of its session
 * table, an application cookie value's rotation grace (`g`). Times are ms.
 */
export type WireRecord =
  | readonly ['s', key: string, upstream: string, epoch: number, createdAt: number, lastSeen: number]
  | readonly ['t', key: string, at: number]
  | readonly ['m', key: string, from: string, to: string, reason: MoveReason, at: number]
  | readonly ['o', key: string, to: string | null, at: number]
  /**
   * An application cookie value replaced lately, still routed until `until` (SessionTable.rotated);
   * `pinned`: it was pinned when replaced; `createdAt`: the creation time of the binding it was
   * replaced from (absent: unknown, or a worker of an older build, which reads the first six
   * fields only), so its grace, and a value rotated from it, end with that binding's absolute timeout.
   */
  | readonly ['g', key: string, upstream: string, epoch: number, until: number, pinned: boolean, createdAt?: number]

/**
 * A change to the bindings as it travels: a pin (`b`, with its creation time where it was
 * written, ms since the epoch), an unpin (`u`), an application cookie
 * value replaced (`r` with its grace: where it still routes) or deleted (`r`, null); or an
 * answer every worker records (`a`: session key, whether it is a table key, the upstream, the
 * epoch, and the move it made: from where and why, or nulls), see SessionRecords.shared; or a
 * move an admin ordered (`o`: session key, to which upstream or null: wherever the hash places
 * it, and when it was ordered, which names it), or done (`x`: its session key and that time).
 */
export type BindingWrite =
  | readonly ['b', key: string, upstream: string, epoch: number, createdAt: number]
  | readonly ['u', key: string]
  /** `grace`: upstream, epoch and, when the value was pinned, its binding's creation time (absent from an older worker's; one ignores it). */
  | readonly ['r', key: string, grace: readonly [upstream: string, epoch: number, createdAt?: number] | null]
  | readonly ['a', key: string, table: boolean, upstream: string, epoch: number, from: string | null, reason: MoveReason | null]
  | readonly ['o', key: string, to: string | null, at: number]
  | readonly ['x', key: string, at: number]

/** Operations a worker asks the primary for, answered with a `reply` of the same `call`. */
export type CallOp = 'remember' | 'members' | 'cp.get' | 'cp.put' | 'cp.delete' | 'snapshot' | 'ping'

/** From a worker to the primary. */
export type ToPrimary =
  /**
   * The pins, unpins and retirements made here since the last such message, in order
   * (write-through: acknowledged by `ack` of `seq`, the last one's number, once every other
   * worker was sent them).
   */
  | { readonly tether: 'writes'; readonly seq: number; readonly writes: readonly BindingWrite[] }
  /** A peer-channel broadcast (health shared between workers). */
  | { readonly tether: 'publish'; readonly message: string }
  /**
   * A discovery source's whole current list, from the worker running discovery (the lead);
   * `unready`: the pods it lists not ready (their uid and addresses), apart so an older worker ignores them.
   */
  | { readonly tether: 'discovered'; readonly source: string; readonly upstreams: readonly WireDiscovered[]; readonly unready?: readonly WireDiscovered[] }
  /**
   * A request here waited on upstream `id` longer than the probe timeout, or its client gave up
   * waiting: the worker running the checks should probe it now.
   */
  | { readonly tether: 'suspect'; readonly id: string }
  /**
   * An active probe's result as the worker running the checks applied it (`severe`: a timeout
   * that marked the upstream unhealthy at once; `cause`: why it failed, for the health log),
   * for the others to apply the same.
   */
  | { readonly tether: 'probe'; readonly id: string; readonly ok: boolean; readonly severe: boolean; readonly cause?: string | null }
  | { readonly tether: 'call'; readonly call: number; readonly op: CallOp; readonly args: readonly unknown[] }
  /**
   * Part of this worker's bindings and then its records, for a worker that starts (answering
   * `dump`); the first one has its view of each upstream's health (`health`; absent from an
   * older build's).
   */
  | { readonly tether: 'dump-chunk'; readonly dump: number; readonly entries: readonly WireBinding[]; readonly records?: readonly WireRecord[]; readonly health?: readonly HealthCopy[]; readonly done: boolean }
  /** The answer to an `ask` of the primary. */
  | { readonly tether: 'answer'; readonly call: number; readonly value: unknown }
  /** Started and listening; its own admin listener's URL (loopback, private). */
  | { readonly tether: 'ready'; readonly admin: string }
  /** A worker starting: what do I run? (answered with `setup`) */
  | { readonly tether: 'hello' }
  /** This worker saw a healthy upstream for the first time: told once, for WorkerSetup.upstreamSeen. */
  | { readonly tether: 'upstream-seen' }
  /**
   * The first list of this worker's discovery (it leads) is in, or failed: every source's first
   * attempt has ended (its lists were sent before this), for WorkerSetup.discoveryListed.
   */
  | { readonly tether: 'discovery-listed' }
  /** This worker, leading, had its part in Redis after `marker` on `node` (see WorkerSetup.keyspaceMarkers). */
  | { readonly tether: 'lead-part'; readonly node: string; readonly marker: string }
  /**
   * An ioredis console notice this worker saw first (`said`: ioredis's line; level, msg and hint
   * as logged), for the primary to log once for all workers (see WorkerSetup.notices).
   */
  | { readonly tether: 'notice'; readonly level: 'warn' | 'error'; readonly msg: string; readonly said: string; readonly hint?: string }

/** From the primary to a worker. */
export type ToWorker =
  /**
   * The worker's writes up to `seq` reached every other worker; sent at their place among the
   * others' `written` (the worker applies its own pins, unpins and rotations again there).
   */
  | { readonly tether: 'ack'; readonly seq: number }
  /** Another worker's binding writes, in its order. */
  | { readonly tether: 'written'; readonly writes: readonly BindingWrite[] }
  | { readonly tether: 'message'; readonly message: string }
  /** Probe upstream `id` now: a request of another worker waits on it too long (to the lead only). */
  | { readonly tether: 'suspect'; readonly id: string }
  /**
   * A discovery source's list (relayed from the lead; the last one of each source again to a
   * starting worker); `unready`: the pods it lists not ready (absent from an older lead);
   * `leaving`, to a starting worker only: the upstreams gone from this source's listing that the
   * other workers still drain, with since when (an older worker ignores it).
   */
  | { readonly tether: 'discovered'; readonly source: string; readonly upstreams: readonly WireDiscovered[]; readonly unready?: readonly WireDiscovered[]; readonly leaving?: readonly WireLeaving[] }
  | { readonly tether: 'probe'; readonly id: string; readonly ok: boolean; readonly severe: boolean; readonly cause?: string | null }
  | { readonly tether: 'reply'; readonly call: number; readonly value: unknown }
  /**
   * Part of a snapshot this worker asked for with call `call` (every binding comes before any
   * record; the sibling's view of upstream health, `health`, with the first part).
   */
  | { readonly tether: 'snapshot-chunk'; readonly call: number; readonly entries: readonly WireBinding[]; readonly records?: readonly WireRecord[]; readonly health?: readonly HealthCopy[] }
  /**
   * The snapshot asked for with call `call` is being taken now: the sibling copies its state
   * before it applies any write sent from here on, and has applied every one sent before. Sent
   * again when that sibling died while it sent: another one then takes it.
   */
  | { readonly tether: 'dumping'; readonly call: number }
  /** Send your bindings as `dump-chunk`s tagged `dump`. */
  | { readonly tether: 'dump'; readonly dump: number }
  /**
   * What the primary asks a worker: its metrics as data, or a sign of life (answered with
   * `answer`). `form: 'compact'`: the metrics in metrics-wire.ts's compact form; without it (a
   * primary of an older build, which reads only prom-client's getMetricsAsJSON() array) that array.
   */
  | { readonly tether: 'ask'; readonly call: number; readonly op: 'metrics' | 'alive'; readonly form?: 'compact' }
  /** Run the active health checks and discovery from now on (one worker does, for all). */
  | { readonly tether: 'lead' }
  /** Apply this config file's text as a reload (the primary read and accepted it: SIGHUP, a file change). */
  | { readonly tether: 'reload'; readonly text: string }
  /** The answer to `hello`. */
  | { readonly tether: 'setup'; readonly setup: WorkerSetup }
  /** Stop gracefully (shutdown, or replaced by a new worker), then exit. */
  | { readonly tether: 'stop' }
  /**
   * Another worker saw the group's first healthy upstream (its `upstream-seen`), sent once to
   * every worker running then: one whose setup said not yet (its `hello` answered before that
   * news came) learns it (an older worker ignores it).
   */
  | { readonly tether: 'upstream-seen' }
  /**
   * The lead's discovery had its first list (its `discovery-listed`), sent once to every worker
   * running then (an older worker ignores it).
   */
  | { readonly tether: 'discovery-listed' }

/** Is `m` one of ours? */
export function isTetherMessage(m: unknown): m is { readonly tether: string } {
  return typeof m === 'object' && m !== null && typeof (m as { tether?: unknown }).tether === 'string'
}
