// The list/watch loop of one Kubernetes collection: list, watch from the list's resourceVersion,
// resume from the last version seen, list again on 410 Gone and after watches that keep failing,
// back off on errors and keep the last good objects meanwhile. Layer 3: talks through KubernetesApi, time through injected timers;
// owned and stoppable (start/stop), never starts itself, knows nothing of upstreams.
import { systemClock, systemTimers, type Clock, type Timers } from '../clock.js'
import { KubernetesApiError, retryAfterOf, type KubernetesApi, type WatchEvent } from './kubernetes-api.js'

/**
 * 410 Gone answers in a row taken as routine (a watch cache that dropped the version: list
 * again); from the next one on, each is reported through onError and backed off.
 */
const QUIET_GONE = 3

/**
 * Longest wait a server's Retry-After is honoured for, ms: a failure waits its back-off or
 * what the server asked, whichever is longer, but never more than a minute for the asking
 * (a bigger value, a misconfigured proxy or a date far off, would leave the set stale for long).
 */
export const MAX_RETRY_AFTER = 60_000

/** What the loop needs of an object: its name and version (any Kubernetes object has them). */
export interface KubernetesObject {
  readonly metadata?: { readonly name?: string; readonly namespace?: string; readonly resourceVersion?: string }
}

export interface ListWatchOptions {
  /** The collection, e.g. `/apis/discovery.k8s.io/v1/namespaces/default/endpointslices`. */
  readonly path: string
  /** Selector query, e.g. `{ labelSelector: 'kubernetes.io/service-name=web' }`. */
  readonly selector: Readonly<Record<string, string>>
  /**
   * Deadline of one list page, and of a watch's answer (its status line), ms; also how long a
   * quiet watch must stay open to count as working. Default 10 000.
   */
  readonly requestTimeout?: number
  /** Server-side length of one watch (`timeoutSeconds`). Default 300. */
  readonly watchSeconds?: number
  /** A watch that sends no byte for this long is dead (a half-open connection), ms. Default watchSeconds + 30 s. */
  readonly idleTimeout?: number
  /**
   * Back-off after a failure: `base` x 2^(n-1), at most `max`, times a factor in [0.5, 1).
   * Default 500 ms .. 30 s. A 429 or 5xx that says how long to wait (Retry-After) waits at
   * least that long, up to MAX_RETRY_AFTER.
   */
  readonly backoff?: { readonly base: number; readonly max: number }
  /**
   * Least time between the openings of two watches when one ends or is cut soon after it
   * opened, ms (a server or proxy that sends an event or a bookmark and cuts every watch would
   * else be asked hundreds of times a second). Default 1000.
   */
  readonly watchGap?: number
  /** Items per list page (`limit`). Default 500. */
  readonly pageSize?: number
  /** Random source for the back-off jitter, in [0, 1). Default Math.random. */
  readonly random?: () => number
}

export interface ListWatchHooks<T> {
  /** The objects (by name) after a list or a chunk of watch events that changed them. Must not throw. */
  onSync(objects: ReadonlyMap<string, T>): void
  /** A list or watch failed; the last objects stay. `failures` counts since the last success. Must not throw. */
  onError(err: KubernetesApiError, failures: number): void
  /**
   * The first list or watch that worked after failures (a watch: events, or open for
   * requestTimeout, or its 200 when no watch opened and then failed since; a list: not one made
   * because watches keep failing or 410 keeps coming, unless lists failed too and no watch opened and then failed).
   */
  onRecover?(): void
}

/**
 * One list/watch loop, as client-go's reflector:
 * - `start()` lists and resolves once that first list has succeeded or failed (then it keeps
 *   trying in the background); it never rejects for API reasons.
 * - The watch asks for bookmarks and resumes from the last resourceVersion seen; a watch the
 *   server ends (its timeout) or that is cut once open is reopened at once, but no sooner than
 *   `watchGap` after it was opened, and one that ended without any event after a pause of
 *   at least `backoff.base` (no tight loop against a server that closes at once). Neither is an error.
 * - 410 Gone (as the status of a watch request, or an ERROR event) lists again at once (a second
 *   and third 410 in a row wait `backoff.base`), replacing every object; from the fourth in a
 *   row (even fresh lists' versions are refused) each is a failure. A failed list or watch keeps
 *   the objects, calls `onError` and retries after the back-off, or after the server's
 *   Retry-After when that is longer (at most MAX_RETRY_AFTER).
 *   An ERROR event ends its watch; the events before it in the same chunk are synced first.
 * - A watch that fails resumes from its version; from the second watch in a row that fails,
 *   each is followed by a list (after the back-off) and a watch from the list's version, as
 *   client-go's reflector relists after a failed watch: with a watch that never works (RBAC
 *   granting list but not watch, a proxy that resets or cuts every watch) the objects still
 *   follow the server, one list per back-off (at most 30 s apart by default). A 429 is the
 *   exception, as in client-go: the watch is asked again, not the heavier list. A watch that
 *   opens and ends or is cut before any event, and before it was open `requestTimeout`, counts
 *   among these: the first in a row is reopened as any cut watch, the next ones are failures
 *   ('ESHORTWATCH', as client-go's "very short watch"). Such a list is no recovery.
 * - `healthy` is false from a failure until a list succeeds (but for one made because watches
 *   keep failing or 410 keeps coming) or a watch works: it delivered events (without an ERROR)
 *   or stayed open for `requestTimeout`. A watch that
 *   opens and then fails is a failure like any other (the back-off keeps growing).
 *   The API answering again ends it at once, without waiting `requestTimeout`: when no watch
 *   opened (200) and then failed since the last success, a watch's 200 is a success, and so is
 *   a list made because watches keep failing if a list failed too (the API server down, not
 *   only its watches); 410 coming more than QUIET_GONE times in a row still needs a watch that works.
 *   After a watch that opened and then failed (a proxy that cuts every watch), only a watch
 *   that works is: such a fault stays unhealthy, it does not flap.
 * - `stop()` aborts the request in flight, clears every timer and resolves when the loop ended;
 *   no hook is called after it.
 *
 * Example:
 *   const slices = new ListWatch<EndpointSlice>(api, { path, selector: { labelSelector: 'kubernetes.io/service-name=web' } },
 *     { onSync: (objects) => update([...objects.values()]), onError: (err, n) => log.warn({ err, n }) })
 *   await slices.start(); ...; await slices.stop()
 */
export class ListWatch<T extends KubernetesObject> {
  readonly #api: KubernetesApi
  readonly #path: string
  readonly #selector: Readonly<Record<string, string>>
  readonly #hooks: ListWatchHooks<T>
  readonly #timers: Timers
  readonly #clock: Clock
  readonly #requestTimeout: number
  readonly #watchGap: number
  readonly #watchSeconds: number
  readonly #idleTimeout: number
  readonly #backoff: { readonly base: number; readonly max: number }
  readonly #pageSize: number
  readonly #random: () => number
  #state: 'new' | 'running' | 'stopped' = 'new'
  #objects = new Map<string, T>()
  #version: string | null = null
  #failures = 0
  #gone = 0
  /**
   * Watches in a row that failed or ended before they worked (see #watch), but for 410 and 429;
   * from 2 on, each is followed by a list.
   */
  #watchFailures = 0
  /** List before the next watch (watches keep failing), until a list succeeds. */
  #relist = false
  /** Since the last success: a list failed (the API, not only its watches, did not answer). */
  #listFailed = false
  /**
   * Since the last success: a watch that opened (200) then failed (cut, ESHORTWATCH, an ERROR
   * event, a line not JSON): a 200 or a list proves nothing then, only a watch that works does.
   */
  #openedThenFailed = false
  /** The watch in flight (or the last one) got its 200. */
  #opened = false
  #healthy = true
  #abort: AbortController | null = null
  #wake: (() => void) | null = null
  #sleepTimer: unknown = undefined
  #loop: Promise<void> = Promise.resolve()
  #firstList: (() => void) | null = null

  constructor(api: KubernetesApi, options: ListWatchOptions, hooks: ListWatchHooks<T>, timers: Timers = systemTimers, clock: Clock = systemClock) {
    this.#api = api
    this.#path = options.path
    this.#selector = options.selector
    this.#hooks = hooks
    this.#timers = timers
    this.#clock = clock
    this.#requestTimeout = options.requestTimeout ?? 10_000
    this.#watchGap = options.watchGap ?? 1_000
    this.#watchSeconds = options.watchSeconds ?? 300
    this.#idleTimeout = options.idleTimeout ?? this.#watchSeconds * 1000 + 30_000
    this.#backoff = options.backoff ?? { base: 500, max: 30_000 }
    this.#pageSize = options.pageSize ?? 500
    this.#random = options.random ?? Math.random
  }

  /** False between a failure and the next list that succeeds or watch that works (see the class). */
  get healthy(): boolean {
    return this.#healthy
  }

  /** Failures since the last success. */
  get failures(): number {
    return this.#failures
  }

  /** The last known objects by name (empty until a list succeeded). */
  get objects(): ReadonlyMap<string, T> {
    return this.#objects
  }

  /** Lists once, then keeps watching in the background; resolves after the first list attempt. */
  async start(): Promise<void> {
    if (this.#state !== 'new') throw new Error(`ListWatch: start() after ${this.#state === 'running' ? 'start()' : 'stop()'}`)
    this.#state = 'running'
    const firstList = new Promise<void>((resolve) => { this.#firstList = resolve })
    this.#loop = this.#run()
    await firstList
  }

  /** Ends the loop: aborts the request in flight, clears timers, waits for the loop. Idempotent. */
  async stop(): Promise<void> {
    if (this.#state !== 'stopped') {
      this.#state = 'stopped'
      this.#abort?.abort(new KubernetesApiError('stopped', 'ESTOPPED'))
      this.#wakeUp()
      this.#firstList?.()
    }
    await this.#loop
  }

  async #run(): Promise<void> {
    while (this.#state === 'running') {
      let watching = false
      try {
        if (this.#version === null || this.#relist) await this.#list()
        watching = true
        const openedAt = this.#clock.now()
        const { events, worked } = await this.#watch()
        // the first watch in a row that ends before it worked is routine (reopened from its
        // version); #watch throws ESHORTWATCH for the next ones
        if (!worked) this.#watchFailures++
        // the next watch opens at once after a watch that lasted (the server's timeoutSeconds, a
        // cut after minutes), but no sooner than watchGap after this one opened; and not before
        // backoff.base after one without any event
        // (a clock stepped back makes the elapsed time negative: the gap is the most it waits)
        const pause = Math.max(events === 0 ? this.#backoff.base : 0, this.#watchGap - Math.max(0, this.#clock.now() - openedAt))
        if (pause > 0) await this.#sleep(pause)
      } catch (err) {
        if (this.#state !== 'running') break
        let e = err instanceof KubernetesApiError ? err : new KubernetesApiError(`${this.#path}: ${(err as Error).message}`, 'EUNKNOWN', null, err)
        if (e.code === 'EGONE') {
          this.#version = null
          const gone = ++this.#gone
          if (gone <= QUIET_GONE) {
            if (gone > 1) await this.#sleep(this.#backoff.base)
            continue
          }
          // more in a row: even a fresh list's version is refused (an API server whose watch
          // cache lags behind what it lists): reported and backed off as any failure, until a
          // watch works again (a list in between does not count as a success)
          e = new KubernetesApiError(`${e.message} (410 Gone ${gone} times in a row, even right after a list)`, 'EGONE', 410, e)
        }
        // a failed watch resumes once; the next ones in a row list again first (client-go's
        // reflector relists after every failed watch but a refused connection or 429: the list
        // is what lets the objects follow the server when no watch ever works). A 429 asks the
        // watch again, not the heavier list. A list that failed is retried as a list.
        if (watching && e.code !== 'EGONE' && e.status !== 429 && ++this.#watchFailures >= 2) this.#relist = true
        if (watching && this.#opened) this.#openedThenFailed = true
        if (!watching) this.#listFailed = true
        this.#failures++
        this.#healthy = false
        const failures = this.#failures
        this.#hooks.onError(e, failures)
        this.#firstList?.()
        this.#firstList = null
        await this.#sleep(this.#delay(e))
      }
    }
    this.#firstList?.()
  }

  /** Every page of the collection; replaces the objects and the version. */
  async #list(): Promise<void> {
    const objects = new Map<string, T>()
    let next = ''
    let version = ''
    do {
      const query: Record<string, string> = { ...this.#selector, limit: String(this.#pageSize) }
      if (next !== '') query['continue'] = next
      const page = await this.#withDeadline((signal) => this.#api.get(this.#path, query, signal))
      const meta = (page as { metadata?: { resourceVersion?: unknown; continue?: unknown } } | null)?.metadata
      const items = (page as { items?: unknown } | null)?.items
      if (typeof meta?.resourceVersion !== 'string' || !(Array.isArray(items) || items === null)) {
        throw new KubernetesApiError(`GET ${this.#path}: not a list (no items or metadata.resourceVersion)`, 'EBADRESPONSE', 200)
      }
      for (const item of items ?? []) {
        const name = nameOf(item)
        if (name !== null) objects.set(name, item as T)
      }
      version = meta.resourceVersion
      next = typeof meta.continue === 'string' ? meta.continue : ''
    } while (next !== '' && this.#state === 'running')
    if (this.#state !== 'running') return
    this.#objects = objects
    this.#version = version
    this.#relist = false
    // no recovery while watches keep failing (the list was made because of them) or 410 keeps
    // coming: only a watch that works ends those. But after lists failed too (the API server
    // down or unreachable, not only its watches), with no watch that opened and then failed, a
    // list that answers is the API back: recovery now, not once a watch stayed open requestTimeout
    // (a list succeeding between watches refused by RBAC, or cut by a proxy, still is none)
    if (this.#gone <= QUIET_GONE && (this.#watchFailures === 0 || (this.#listFailed && !this.#openedThenFailed))) this.#succeeded()
    this.#hooks.onSync(this.#objects)
    this.#firstList?.()
    this.#firstList = null
  }

  /**
   * One watch from the current version until the server ends it; returns how many events came,
   * and whether it worked (events without an ERROR, or open for requestTimeout). One that did
   * not, right after another watch that failed or did not work either, throws ESHORTWATCH.
   */
  async #watch(): Promise<{ events: number; worked: boolean }> {
    const controller = new AbortController()
    this.#abort = controller
    let events = 0
    let idle: unknown
    const arm = (): void => {
      if (idle !== undefined) this.#timers.clearTimeout(idle)
      idle = this.#timers.setTimeout(() => controller.abort(new KubernetesApiError(`watch ${this.#path}: no data for ${this.#idleTimeout} ms`, 'ETIMEDOUT')), this.#idleTimeout)
      unref(idle)
    }
    arm()
    // until the answer's status line, the deadline of any request: a server that accepts the
    // connection and never answers is an error now, not after the idle timeout (330 s)
    let answer: unknown = this.#timers.setTimeout(() => controller.abort(new KubernetesApiError(`watch ${this.#path}: no answer within ${this.#requestTimeout} ms`, 'ETIMEDOUT')), this.#requestTimeout)
    unref(answer)
    let opened = false
    this.#opened = false
    let worked = false
    // The 200 alone is not a success: a watch that opens and then fails (a line that is not
    // JSON, an ERROR event) would reset the back-off each time and loop at full speed. It works
    // once a chunk of events came without an ERROR, or it stayed open for requestTimeout (a
    // quiet Service: no bookmark may come for a minute). client-go likewise counts a watch that
    // closes at once with no event as an error.
    let settle: unknown
    const works = (): void => {
      if (settle !== undefined) this.#timers.clearTimeout(settle)
      settle = undefined
      worked = true
      this.#gone = 0 // the version was accepted
      this.#watchFailures = 0
      if (this.#state === 'running') this.#succeeded()
    }
    const query = {
      ...this.#selector, watch: '1', resourceVersion: this.#version!, allowWatchBookmarks: 'true', timeoutSeconds: String(this.#watchSeconds),
    }
    try {
      await this.#api.watch(this.#path, query, controller.signal, {
        onOpen: () => {
          opened = true
          this.#opened = true
          // the API answers again: after failures where no watch opened (refused, reset, 5xx,
          // 403, no answer), a 200 is the recovery; after a watch that opened and then failed
          // (a proxy that cuts every watch, an ERROR event), only a watch that works is
          if (!this.#healthy && !this.#openedThenFailed && this.#gone <= QUIET_GONE && this.#state === 'running') this.#succeeded()
          this.#timers.clearTimeout(answer)
          answer = undefined
          settle = this.#timers.setTimeout(works, this.#requestTimeout)
          unref(settle)
        },
        onData: arm,
        onEvents: (batch) => {
          events += batch.length
          const { changed, error } = this.#apply(batch)
          // events before an ERROR in the same chunk are synced first: the version has moved
          // past them, so the reopened watch will not send them again
          if (changed && this.#state === 'running') this.#hooks.onSync(this.#objects)
          if (error !== null) throw error
          works()
        },
      })
    } catch (err) {
      // an open watch cut by the server or the network is routine (a restart, an idle cut):
      // reopened like one the server ended; a server that is really gone refuses the next one
      if (!(opened && err instanceof KubernetesApiError && err.code === 'ECONNRESET')) throw err
    } finally {
      this.#timers.clearTimeout(idle)
      if (answer !== undefined) this.#timers.clearTimeout(answer)
      if (settle !== undefined) this.#timers.clearTimeout(settle)
      if (this.#abort === controller) this.#abort = null
    }
    if (!worked && this.#watchFailures > 0 && this.#state === 'running') {
      // a proxy that cuts or ends every watch before any event: the version never moves, so
      // reopening it would never show a change; a failure (listed again, backed off)
      throw new KubernetesApiError(`watch ${this.#path}: ended before any event or bookmark, right after a watch that failed or did so too`, 'ESHORTWATCH')
    }
    return { events, worked }
  }

  /**
   * Applies a chunk of events up to the first ERROR event; returns whether any object changed,
   * and the ERROR as an error (null without one). Events after an ERROR are not applied.
   */
  #apply(batch: readonly WatchEvent[]): { changed: boolean; error: KubernetesApiError | null } {
    let changed = false
    for (const { type, object } of batch) {
      const version = (object as KubernetesObject | null)?.metadata?.resourceVersion
      if (type === 'ERROR') {
        const status = object as { code?: unknown; message?: unknown } | null
        const code = typeof status?.code === 'number' ? status.code : 0
        const message = `watch ${this.#path}: ${code} ${typeof status?.message === 'string' ? status.message : 'error event'}`
        // a 429 or 5xx Status may say how long to wait (details.retryAfterSeconds)
        return { changed, error: new KubernetesApiError(message, code === 410 ? 'EGONE' : 'EHTTP', code, undefined, retryAfterOf(code, undefined, status, 0)) }
      }
      if (type === 'ADDED' || type === 'MODIFIED' || type === 'DELETED') {
        const name = nameOf(object)
        if (name === null) continue
        if (type === 'DELETED') this.#objects.delete(name)
        else this.#objects.set(name, object as T)
        changed = true
      } else if (type !== 'BOOKMARK') {
        continue // an event type this client does not know: skipped
      }
      if (typeof version === 'string' && version !== '') this.#version = version
    }
    return { changed, error: null }
  }

  #succeeded(): void {
    this.#failures = 0
    this.#listFailed = false
    this.#openedThenFailed = false
    if (this.#healthy) return
    this.#healthy = true
    this.#hooks.onRecover?.()
  }

  /** Runs one request under `requestTimeout`, aborted by stop(). */
  async #withDeadline<R>(call: (signal: AbortSignal) => Promise<R>): Promise<R> {
    const controller = new AbortController()
    this.#abort = controller
    const timer = this.#timers.setTimeout(() => controller.abort(new KubernetesApiError(`GET ${this.#path}: no answer within ${this.#requestTimeout} ms`, 'ETIMEDOUT')), this.#requestTimeout)
    unref(timer)
    try {
      return await call(controller.signal)
    } finally {
      this.#timers.clearTimeout(timer)
      if (this.#abort === controller) this.#abort = null
    }
  }

  /** The wait after failure `err`: the back-off, or the server's Retry-After (capped) when longer. */
  #delay(err: KubernetesApiError): number {
    const exp = Math.min(this.#backoff.max, this.#backoff.base * 2 ** Math.min(30, this.#failures - 1))
    const backoff = Math.round(exp * (0.5 + this.#random() / 2))
    return err.retryAfter === null ? backoff : Math.max(backoff, Math.min(MAX_RETRY_AFTER, err.retryAfter))
  }

  #sleep(ms: number): Promise<void> {
    if (this.#state !== 'running') return Promise.resolve()
    return new Promise((resolve) => {
      this.#wake = resolve
      this.#sleepTimer = this.#timers.setTimeout(() => this.#wakeUp(), ms)
      unref(this.#sleepTimer)
    })
  }

  #wakeUp(): void {
    if (this.#sleepTimer !== undefined) this.#timers.clearTimeout(this.#sleepTimer)
    this.#sleepTimer = undefined
    const wake = this.#wake
    this.#wake = null
    wake?.()
  }
}

function nameOf(object: unknown): string | null {
  const name = (object as KubernetesObject | null)?.metadata?.name
  return typeof name === 'string' && name !== '' ? name : null
}

function unref(handle: unknown): void {
  if (typeof handle === 'object' && handle !== null && 'unref' in handle && typeof handle.unref === 'function') handle.unref()
}
