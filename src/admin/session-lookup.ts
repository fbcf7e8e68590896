// "Where is this user?": the admin API's view of one session (its upstream and epoch, first and
// last seen, last move, checkpoint, the drain that applies) and the moves an admin orders.
// Layer 4 flow: reads the session table, the session records, the shared bindings, the
// checkpoint store and health; changes nothing but through SessionRecords.order.
import type { AffinityKeyKind } from '../config/schema.js'
import type { SessionRecords } from '../affinity/session-records.js'
import { HASHED_PREFIX } from '../affinity/session-id.js'
import { normalizeForwardedAddress } from '../affinity/client-ip.js'
import type { SessionTable, SharedBindings } from '../affinity/session-table.js'
import type { CheckpointStore } from '../state/checkpoint-store.js'
import type { Availability } from '../routing/router.js'
import { rfc3339 } from './upstream-row.js'

/** The JSON answer of `GET /sessions/<key>` (the admin API's style: snake_case, RFC 3339, null = unknown). */
export interface SessionView {
  /** The key as asked (raw, or the logged form: a raw key asked for by its hash is not shown). */
  readonly key: string
  /** The form the access log shows (`h:...` for table keys). */
  readonly session: string
  readonly key_kind: AffinityKeyKind
  readonly upstream: string
  readonly epoch: number
  /** Where the answer comes from: `shared` (the Redis binding every replica reads), `table` (this replica's pin), `seen` (this replica's record of its last answer). */
  readonly source: 'shared' | 'table' | 'seen'
  /** When the binding was placed: with `source` `shared`, the placement time stored beside it when known; else when this process's pin (or record) began. */
  readonly created: string | null
  readonly last_seen: string | null
  readonly last_move: { readonly from: string; readonly to: string; readonly reason: string; readonly at: string | null } | null
  /** A move an admin ordered, done at the user's next request (`to` null: wherever the hash places them). */
  readonly pending_move: { readonly to: string | null; readonly ordered_at: string | null } | null
  /** The newest checkpoint; null when none is stored or no state store is configured. */
  readonly checkpoint: { readonly version: number | null; readonly bytes: number; readonly stored_at: string | null; readonly upstream: string; readonly epoch: number } | null
  /** `none` (state.store: none), `found`, `missing`, `unavailable` (the store did not answer). */
  readonly checkpoint_status: 'none' | 'found' | 'missing' | 'unavailable'
  /** The drain of the user's upstream; null when it is not draining. */
  readonly drain: { readonly since: string | null; readonly migrate: boolean } | null
}

export interface SessionLookupParts {
  readonly keyKind: AffinityKeyKind
  readonly sessions: SessionTable
  readonly records: SessionRecords
  /** The shared bindings (`affinity.shared: redis`), or null. */
  readonly shared: SharedBindings | null
  /** The checkpoint store, or null with `state.store: none`. */
  readonly store: CheckpointStore | null
  readonly health: Pick<Availability, 'drainingSince' | 'drainMigrates'>
  /** May `id` take a user an admin moves there (in membership and ready)? */
  readonly mayTake: (id: string) => boolean
  readonly now: () => number
  /**
   * With workers: tell the other workers a move ordered here, so it is done at the user's next
   * request on any of them; resolves once they have it (null: nothing to wait for).
   */
  readonly ordered?: ((key: string, to: string | null, at: number) => Promise<void> | null) | undefined
}

/**
 * How long a lookup by logged form (`h:...`) may take, ms: it hashes every key this process
 * holds whose logged form was not kept (an HMAC each, ~4 us: about 4 s a million users with the
 * access log off), so the `tether session` command and the workers' admin front wait this long
 * for it, where any other admin call gets 5-10 s. Example: `isScan('h:5c1f...')` -> true.
 */
export const SCAN_TIMEOUT = 60_000

/** Whether a lookup of `named` (raw or URL-decoded) is a scan by logged form. */
export function isScan(named: string): boolean {
  return named.startsWith(HASHED_PREFIX)
}

/** What a move order came to. */
export type MoveVerdict = 'ordered' | 'unknown_session' | 'unknown_upstream'

/**
 * Example: `await lookup.find('10.0.0.5')` (or its logged form `'h:5c1f...'`) ->
 * `{ key: '10.0.0.5', upstream: 'app-1', epoch: 2, source: 'table', last_move: { from: 'app-0', to: 'app-1', reason: 'drain', ... }, ... }`;
 * `lookup.move('10.0.0.5', 'app-2')` -> 'ordered' (the user moves, rehydrated, at their next request).
 */
export class SessionLookup {
  readonly #p: SessionLookupParts

  constructor(parts: SessionLookupParts) {
    this.#p = parts
  }

  /** The session named `named` (raw or logged form), or null when this replica knows none. */
  async find(named: string): Promise<SessionView | null> {
    return (await this.#locate(named))?.view ?? null
  }

  /** The raw key of the session named `named`, and its view; null when this replica knows none. */
  async #locate(named: string): Promise<{ key: string; view: SessionView } | null> {
    const p = this.#p
    // Tether's cookie sessions are logged as they are: an `h:` form names none of them (no scan)
    if (p.keyKind === 'none' || (p.keyKind === 'cookie' && isScan(named))) return null
    const key = await p.records.resolve(named, () => new Promise((resolve) => setImmediate(resolve)))
    if (key === null) return null
    const view = await this.#view(key, named)
    if (view !== null || isScan(named)) return view === null ? null : { key, view }
    // Node reads header bytes as latin1, so a UTF-8 value is held as those bytes' latin1
    // characters, where the admin path decodes to the UTF-8 text: asked for that too
    const asHeld = Buffer.from(named, 'utf8').toString('latin1')
    const held = asHeld === named ? null : await this.#view(asHeld, named)
    if (held !== null) return { key: asHeld, view: held }
    // a client address is held as the key reader makes it (IPv4-mapped -> dotted, IPv6
    // canonical): '::ffff:203.0.113.7', as an upstream sees it in X-Forwarded-For from a
    // dual-stack listener, or '2001:DB8::1', names the same user
    const ip = p.keyKind === 'client_ip' ? normalizeForwardedAddress(named) : null
    const canonical = ip === null || ip === named ? null : await this.#view(ip, named)
    return canonical === null ? null : { key: ip!, view: canonical }
  }

  async #view(key: string, named: string): Promise<SessionView | null> {
    const p = this.#p
    const now = p.now()
    const local = p.sessions.peek(key, now)
    const seen = p.records.seen(key, now)
    const table = p.keyKind !== 'cookie'
    const shared = table && p.shared !== null ? await p.shared.lookup(key) : null
    const fromShared = shared !== null && shared !== 'unavailable' && (local === null || shared.epoch >= local.epoch) ? shared : null
    const where = fromShared ?? local ?? seen
    if (where === null) return null
    const times = local ?? seen
    const move = p.records.lastMove(key)
    const order = p.records.ordered(key)
    const [checkpoint, checkpointStatus] = await this.#checkpoint(key)
    const since = p.health.drainingSince(where.upstream)
    return {
      key: named,
      session: table ? p.records.ids.hash(key) : key,
      key_kind: p.keyKind,
      upstream: where.upstream,
      epoch: where.epoch,
      source: fromShared !== null ? 'shared' : local !== null ? 'table' : 'seen',
      // a shared binding's placement time, stored beside it: the same from every replica
      created: rfc3339(fromShared?.placedAt ?? times?.createdAt ?? null),
      last_seen: rfc3339(times?.lastSeen ?? null),
      last_move: move === null ? null : { from: move.from, to: move.to, reason: move.reason, at: rfc3339(move.at) },
      pending_move: order === undefined ? null : { to: order.to, ordered_at: rfc3339(order.at) },
      checkpoint,
      checkpoint_status: checkpointStatus,
      drain: since === null ? null : { since: rfc3339(since), migrate: p.health.drainMigrates(where.upstream) },
    }
  }

  /**
   * Order a move of the session named `named` to upstream `to` (null: unpin, so the hash
   * places it afresh), done at its next request with `X-Tether-Moved: reason=admin` and
   * rehydration. Only sessions this replica knows, to upstreams that may take them. The order
   * is kept under the raw key, whichever form named it (the router looks it up by that).
   */
  async move(named: string, to: string | null): Promise<MoveVerdict> {
    const p = this.#p
    const found = await this.#locate(named)
    if (found === null) return 'unknown_session'
    if (to !== null && !p.mayTake(to)) return 'unknown_upstream'
    const at = p.now()
    p.records.order(found.key, to, at)
    // the order reaches every worker before the admin hears it was taken
    await p.ordered?.(found.key, to, at)
    return 'ordered'
  }

  async #checkpoint(key: string): Promise<[SessionView['checkpoint'], SessionView['checkpoint_status']]> {
    const store = this.#p.store
    if (store === null) return [null, 'none']
    const r = await store.get(key)
    if (r.status !== 'found') return [null, r.status]
    const c = r.checkpoint
    return [{ version: c.version, bytes: Buffer.byteLength(c.value, 'latin1'), stored_at: rfc3339(c.writtenAt), upstream: c.upstream, epoch: c.epoch }, 'found']
  }
}
