// What every upstream answer's head gets from Tether, whatever the transport: an application
// cookie it sets is learned, its checkpoint stored before the head goes out (bounded), reserved
// and hop-by-hop headers removed, the decision's cookie and the debug header added. Layer 4
// helper of the request path: reads the context, writes through the session table and state.
import type { Clock } from '../clock.js'
import { appCookieValue, learnAppCookie } from '../affinity/app-cookie.js'
import type { SessionTable } from '../affinity/session-table.js'
import { SessionRecords } from '../affinity/session-records.js'
import type { Decision } from '../routing/decision.js'
import { TETHER_HEADER, type ReservedHeaders } from '../reserved-headers.js'
import type { StateProtocol } from '../state/protocol.js'
import type { AnswerHeadPolicy } from './exchange.js'
import { announcedTrailers, clientResponseHeaders, clientTrailers } from './headers.js'
import type { RequestContext } from './request-context.js'

type Head = Record<string, string | string[] | undefined>

export interface AnswerHeadOptions {
  readonly sessions: SessionTable
  /** Where each answer is recorded (last seen, moves) for the lookup and drains that migrate. */
  readonly records: SessionRecords
  /** The application cookie learned (`key: app_cookie`), or null. */
  readonly appCookie: string | null
  /** Tether's own cookie (`key: cookie`): an upstream's Set-Cookie of that name is dropped (as HAProxy's `cookie ... insert`), or null. */
  readonly ownCookie?: string | null
  /** The state protocol, or null with `state.store: none`. */
  readonly state: StateProtocol | null
  readonly reserved: ReservedHeaders
  /** Add X-Tether-Upstream (forwarding.upstream_header). */
  readonly upstreamHeader: boolean
  readonly clock: Clock
  /** The Strict-Transport-Security value added to answers over TLS (`listen.tls.hsts`), or null. */
  readonly hsts?: string | null
  /** With workers: which upstreams drain and migrate, and where the answers every worker records go (SessionRecords.shared); else null. */
  readonly shareAnswers?: AnswerSharing | null
  /** With workers: the writes (pins, shared answers, orders) not yet at every other worker; else null. */
  readonly writes?: PendingWrites | null
  /**
   * Does upstream `id` still take its users (ready, not draining)? A late answer from one that
   * does teaches as any (see #inspect); absent: none does.
   */
  readonly serving?: (id: string) => boolean
}

export interface AnswerSharing {
  readonly migrating: (id: string) => boolean
  /** Tell the other workers this answer. */
  readonly send: (k: string, table: boolean, d: Decision) => void
}

/** Writes made here and written through to the other workers (WorkerLink). */
export interface PendingWrites {
  /** No write waits for its acknowledgement. */
  idle(): boolean
  /** Where the writes stand now (`since` of {@link flushedFor}). */
  mark(): number
  /** Resolves once every write about any of `keys`, and every write after `since`, reached every other worker; null: none pending. */
  flushedFor(keys: readonly (string | null | undefined)[], since: number): Promise<void> | null
}

/**
 * Example: an answer from app-1 with `Set-Cookie: PHPSESSID=abc` and `X-Tether-State: e30`
 * -> 'abc' pinned to app-1, the checkpoint stored under 'abc' before the head is written,
 * `X-Tether-State` removed from what the client gets.
 */
export class AnswerHead implements AnswerHeadPolicy {
  readonly #o: AnswerHeadOptions

  constructor(options: AnswerHeadOptions) {
    this.#o = options
  }

  inspect(ctx: RequestContext, headers: Head, hold: 'all' | 'writes' = 'all'): Promise<'ok' | 'refuse'> | null {
    const writes = this.#o.writes
    const mark = writes == null ? 0 : writes.mark()
    const inspected = this.#inspect(ctx, headers)
    const checked = hold === 'all' ? inspected : null
    // with workers, what this answer wrote through (pins, a move, a rotated cookie) and what a
    // parallel request of the same user did reach every other worker before the client sees
    // this answer: their next request may arrive at another worker on a new connection.
    // Other users' writes are not waited for.
    if (writes == null || writes.idle()) return checked
    const d = ctx.decision!
    const flushed = writes.flushedFor([SessionRecords.keyOf(ctx.key, d), d.appKey, ctx.learnedKey], mark)
    if (flushed === null) return checked
    return checked === null ? flushed.then(() => 'ok') : Promise.all([checked, flushed]).then(([v]) => v)
  }

  #inspect(ctx: RequestContext, headers: Head): Promise<'ok' | 'refuse'> | null {
    const d = ctx.decision!
    const o = this.#o
    const now = o.clock.now() // once: each read costs ~0.2% of a request's CPU
    // the chosen upstream answered: a new or moved user is pinned there from now on
    const b = d.bind
    if (b !== null) {
      // a placement answered after the key was placed again (a later pin at its epoch) pins nothing
      if (b.publish) o.sessions.place(b.key, b.upstream, b.epoch, now, d.placedAt ?? now)
      else o.sessions.count(b.key, b.upstream, b.epoch, now)
      o.sessions.settle(b)
    }
    o.records.answered(ctx.key, d, now, ctx.holdMoves)
    const share = o.shareAnswers
    const shared = share != null && SessionRecords.shared(d, share.migrating)
    if (shared) {
      const k = SessionRecords.keyOf(ctx.key, d)
      if (k !== null) share.send(k, ctx.key.kind === 'table', d)
    }
    let rekeyedFrom: string | null = null
    // a late answer from an epoch the user has left, from an upstream that no longer takes its
    // users (they moved while it was on its way: a slow request on a replica drained past its
    // timeout, or down): it teaches nothing (else it would pin the user's cookie back there),
    // and a new value of the cookie is not passed on (decorate): the browser keeps the one of
    // the replica the user is on now. From one still serving (a rebalance, spill or an admin's
    // move took the user elsewhere meanwhile) a new value is a new session there, as any
    if (o.appCookie !== null && d.learn && d.appKey !== null && movedOn(o, d.appKey, d.epoch) && o.serving?.(d.upstream) !== true) ctx.leftEpoch = true
    else if (o.appCookie !== null && d.learn) {
      const learned = learnAppCookie(o.sessions, o.appCookie, d, headers['set-cookie'], now, ctx.target.path)
      if (learned !== null) {
        ctx.learnedKey = learned.key
        rekeyedFrom = learned.rekeyedFrom
        // a new value of the user's cookie: their answer is recorded under it too (else a drain
        // that migrates would see a user whose application rotates the value as idle)
        if (rekeyedFrom !== null) {
          o.records.record(learned.key, true, d.upstream, d.epoch, null, now)
          if (shared) share.send(learned.key, true, { ...d, moved: null })
        }
      }
    }
    const state = o.state
    const key = ctx.sessionKey
    if (state === null || key === null) return null
    const checkpoint = state.read(headers)
    // an answer from an epoch the user has left (they moved while this request was in flight,
    // e.g. a slow answer from a replica drained past its timeout) must not overwrite the state
    // their new replica has been writing since: a later epoch pinned, or answered here (a
    // cookie user has no pin; this answer was recorded above, a newer one is kept)
    if (checkpoint !== null && (ctx.leftEpoch || newerEpoch(o, key, d.epoch))) {
      state.discard(key, checkpoint, d.upstream, d.epoch)
      return null
    }
    // an application cookie rotated by this answer: the newest checkpoint follows the new
    // value, unless this answer brings its own (one the store took); nothing to follow before
    // any upstream has sent a checkpoint (an app using Tether for stickiness only pays nothing)
    const from = state.seenCheckpoint ? rekeyedFrom : null
    if (checkpoint === null) return from === null ? null : state.rekey(from, key).then((r) => verdict(state.confirmed, r))
    const written = state.write(key, checkpoint, d.upstream, d.epoch, d.placedAt ?? null)
    const done = from === null ? written : written.then((r) => (r === 'too_large' ? state.rekey(from, key) : r))
    const pinned = ctx.key.kind === 'table' ? ctx.key.value : null
    return done.then((r) => {
      // another placement of the key at this epoch (another replica's, on another upstream) is
      // stored: the user's next request reconciles the key with the shared store at once, so
      // this pin takes the settled binding and its placement time (else its checkpoints are
      // refused until its next sync period)
      if (r === 'superseded' && pinned !== null) o.sessions.resync(pinned)
      return verdict(state.confirmed, r)
    })
  }

  interim(upstreamHeaders: Head): Head {
    const headers = clientResponseHeaders(upstreamHeaders, this.#o.reserved)
    // an interim answer sets no cookie: Tether's own name, a learned application cookie and a
    // left epoch's value are decided on the final head (decorate)
    if (headers['set-cookie'] !== undefined) delete headers['set-cookie']
    // a 1xx has no content: a server MUST NOT send Content-Length in one (RFC 9110 section 8.6;
    // nghttp2 clients reset an informational HEADERS frame carrying it), as for a 101
    if (headers['content-length'] !== undefined) delete headers['content-length']
    return headers
  }

  trailers(trailers: Readonly<Head>, connection?: string | string[]): Record<string, string | string[]> | null {
    return clientTrailers(trailers, this.#o.reserved, connection)
  }

  trailerNames(value: string | string[], connection?: string | string[]): string | undefined {
    return announcedTrailers(value, this.#o.reserved, connection)
  }

  decorate(ctx: RequestContext, upstreamHeaders: Head): Head {
    const headers = clientResponseHeaders(upstreamHeaders, this.#o.reserved)
    const d = ctx.decision!
    const own = this.#o.ownCookie
    if (own != null && headers['set-cookie'] !== undefined) {
      // the upstream's cookie of Tether's name would replace the user's affinity cookie
      // also a nameless cookie "=tether=x": browsers (RFC 6265bis section 5.6) send it back as "tether=x"
      const kept = [headers['set-cookie']].flat().filter((line) => appCookieValue(line, own, 0) === null && appCookieValue(line.replace(/^[ \t]*=/, ''), own, 0) === null)
      if (kept.length === 0) delete headers['set-cookie']
      else headers['set-cookie'] = kept
    }
    const app = this.#o.appCookie
    if (ctx.leftEpoch && app != null && headers['set-cookie'] !== undefined) {
      const now = this.#o.clock.now()
      const kept = [headers['set-cookie']].flat().filter((line) => {
        const v = appCookieValue(line, app, now)
        return v === null || v.deleted || v.value === d.appKey // a deletion (a logout) still goes
      })
      if (kept.length === 0) delete headers['set-cookie']
      else headers['set-cookie'] = kept
    }
    if (d.setCookie !== null) {
      const existing = headers['set-cookie']
      if (existing === undefined) headers['set-cookie'] = d.setCookie
      else if (Array.isArray(existing)) existing.push(d.setCookie)
      else headers['set-cookie'] = [existing, d.setCookie]
      // a shared cache must not store the answer that gives a user their session (every later
      // user would get the same cookie: one upstream, one checkpoint key), as HAProxy's
      // `cookie ... insert nocache` marks it: private, unless already private or not stored
      headers['cache-control'] = privateCacheControl(headers['cache-control'])
    }
    if (this.#o.upstreamHeader) headers[TETHER_HEADER.upstream] = d.upstream
    // HSTS only over TLS (RFC 6797 section 7.2: a browser ignores it on plain HTTP); an
    // application's own policy is kept
    const hsts = this.#o.hsts
    if (hsts != null && ctx.scheme === 'https' && headers['strict-transport-security'] === undefined) headers['strict-transport-security'] = hsts
    return headers
  }
}

/**
 * `Cache-Control` for an answer that sets a user's session cookie: `private` added (and
 * `public`, `s-maxage` and a field-qualified `private="..."` dropped) unless it is already
 * `private` or `no-store`.
 * Example: 'public, max-age=3600' -> 'max-age=3600, private'; undefined -> 'private'.
 */
export function privateCacheControl(value: string | string[] | undefined): string {
  const directives = (value === undefined ? [] : [value].flat()).join(',').split(',').map((d) => d.trim()).filter((d) => d !== '')
  // a bare private or no-store only: private="x" lets a shared cache store the rest (RFC 9111 section 5.2.2.7)
  if (directives.some((d) => /^(private|no-store)$/i.test(d))) return directives.join(', ')
  return [...directives.filter((d) => !/^(public|s-maxage|private)\b/i.test(d)), 'private'].join(', ')
}

/** Is the application cookie value `key` placed at a later epoch than `epoch` (pinned, or retired by a rotation since)? */
function movedOn(o: AnswerHeadOptions, key: string, epoch: number): boolean {
  const now = o.clock.now()
  return (o.sessions.peek(key, now)?.epoch ?? o.sessions.rotated(key, now)?.epoch ?? -1) > epoch
}

/** Has `key` been pinned or answered here at a later epoch than `epoch`? */
function newerEpoch(o: AnswerHeadOptions, key: string, epoch: number): boolean {
  const now = o.clock.now()
  return (o.sessions.peek(key, now)?.epoch ?? -1) > epoch || (o.records.seen(key, now)?.epoch ?? -1) > epoch
}

/**
 * May the answer go out? With confirmed durability only when its checkpoint is stored (or a newer
 * one of the same state is: 'stale'). 'superseded' (another upstream's checkpoint of the same
 * move is stored instead) does not hold this answer's update: refused, as a write that failed.
 */
function verdict(confirmed: boolean, r: string): 'ok' | 'refuse' {
  return !confirmed || r === 'stored' || r === 'stale' || r === 'copied' || r === 'missing' ? 'ok' : 'refuse'
}
