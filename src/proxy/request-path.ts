// The request path, top to bottom: guard -> route (affinity key -> upstream) -> build headers
// -> forward -> on failure before any answer: report, maybe retry on the key's next upstream
// -> access log. Each step is a call into its own module; this file holds no protocol detail.
import { randomUUID } from 'node:crypto'
import type { IncomingMessage, ServerResponse } from 'node:http'
import type { Config } from '../config/schema.js'
import type { ErrorCode } from '../errors.js'
import type { Logger } from '../observability/logger.js'
import type { Route, Router } from '../routing/router.js'
import { REQUEST_ID, upstreamRequestHeaders } from './headers.js'
import { hasBody, type Forwarder, type ForwardResult, type ResponseDecoration } from './forward.js'
import type { RawCheckpoint, StateProtocol } from '../state/protocol.js'
import { healthSignal, type HealthSignal } from './outcome.js'
import { RequestBody } from './request-body.js'
import { sendError } from './respond.js'
import { shouldRetry } from './retry.js'

export interface RequestPathDeps {
  readonly config: Config
  readonly forwarder: Forwarder
  readonly router: Router
  /** host[:port] of each upstream's URL, by id (for `preserve_host: false`). */
  readonly hosts: () => ReadonlyMap<string, string>
  readonly logger: Logger
  /** True once shutdown began: answers then close their connection. */
  readonly draining: () => boolean
  /** Passive health: told how each attempt on an upstream went. */
  readonly observe?: (id: string, signal: HealthSignal) => void
  /** Shared affinity: bindings other Tether replicas made, looked up on a local miss (bounded). */
  readonly shared?: { lookup(key: string): Promise<{ upstream: string; epoch: number } | null | 'unavailable'> } | null
  /** The state protocol (checkpoints, rehydration); null when `state.store: none`. */
  readonly state?: StateProtocol | null
  /** Retries, failovers and rehydrations, for metrics. */
  readonly events?: {
    retry(upstream: string): void
    failover(from: string, reason: string): void
    request(upstream: string | null, method: string, status: number, seconds: number): void
    attempt(upstream: string, delta: 1 | -1): void
  }
}

/**
 * One attempt's response decoration: the route's own (cookie, learning, debug header) plus
 * the checkpoint an upstream attached, stored before the answer's head goes out.
 */
class Exchange implements ResponseDecoration {
  #checkpoint: RawCheckpoint | null = null
  constructor(readonly route: Route, readonly state: StateProtocol) {}

  inspect(headers: Record<string, string | string[] | undefined>): void {
    this.route.inspect(headers)
    this.#checkpoint = this.state.read(headers)
  }

  decorate(headers: Record<string, string | string[] | undefined>): void {
    this.route.decorate(headers)
  }

  hold(): Promise<unknown> | null {
    const key = this.route.learnedKey ?? this.route.sessionKey
    if (key === null) return null
    // an application cookie rotated by this answer: the newest checkpoint follows the new
    // value, unless this answer brings its own (one the store took); nothing to follow
    // before any upstream has sent a checkpoint
    const from = this.state.seenCheckpoint ? this.route.rekeyedFrom : null
    if (this.#checkpoint === null) return from === null ? null : this.state.rekey(from, key)
    const written = this.state.write(key, this.#checkpoint, this.route.id, this.route.epoch)
    return from === null ? written : written.then((r) => (r === 'too_large' ? this.state.rekey(from, key) : r))
  }
}

const NO_ROUTE: Record<'none' | 'strict', ErrorCode> = {
  none: 'TETHER_NO_UPSTREAM',
  strict: 'TETHER_AFFINITY_UNAVAILABLE',
}

export function createRequestHandler(deps: RequestPathDeps): (req: IncomingMessage, res: ServerResponse) => void {
  const { config, forwarder, router, hosts, logger, draining } = deps
  const observe = deps.observe ?? (() => undefined)
  const state = deps.state ?? null
  const shared = deps.shared ?? null
  const events = deps.events ?? null
  const hook = config.state.rehydrate === 'hook' ? config.state.hook_path : null
  const { max_body_bytes: maxBody } = config.limits
  const { preserve_host: preserveHost, x_forwarded: xForwarded } = config.forwarding
  const { attempts: maxRetries, try_duration: tryDuration, replay_buffer_bytes: replayLimit } = config.retries
  const access = config.log.access && logger.isLevelEnabled('info')
  const keyKind = config.affinity.key

  return function handle(req: IncomingMessage, res: ServerResponse): void {
    const start = performance.now()
    const clientId = req.headers['x-request-id']
    const requestId = typeof clientId === 'string' && REQUEST_ID.test(clientId) ? clientId : randomUUID()
    let rehydrated = false
    if (draining()) res.shouldKeepAlive = false
    const peer = req.socket.remoteAddress ?? ''
    let tried: Set<string> | null = null
    let retries = 0
    let lastFailure: { code: ErrorCode; route: Route; error: unknown } | null = null

    const finish = (r: ForwardResult, route: Route | null): void => {
      if (r.outcome !== null && r.outcome.kind === 'error' && r.error && healthSignal(r) !== null) {
        logger.warn({ err: r.error, code: r.outcome.code, upstream: route?.id, method: req.method, path: req.url }, 'upstream exchange failed')
      }
      events?.request(route?.id ?? null, req.method ?? 'GET', r.status, (performance.now() - start) / 1000)
      if (!access) return
      logger.info({
        request_id: requestId,
        method: req.method,
        path: req.url,
        status: r.status,
        key: keyKind,
        upstream: route?.id ?? null,
        route: route?.source ?? null,
        retries,
        outcome: r.outcome !== null
          ? (r.outcome.kind === 'client_abort' ? 'client_abort' : r.outcome.code)
          : rehydrated ? 'rehydrated' : route?.moved ? 'failover' : retries > 0 ? 'retried' : 'ok',
        duration_ms: Math.round((performance.now() - start) * 1000) / 1000,
      }, 'access')
    }

    const fail = (code: ErrorCode, route: Route | null, error: unknown, close: boolean): void => {
      const extra = code === 'TETHER_NO_UPSTREAM' || code === 'TETHER_AFFINITY_UNAVAILABLE' ? { 'retry-after': '1' } : undefined
      const status = sendError(res, code, close, extra)
      finish({ status, outcome: { kind: 'error', code, connect: false }, error, responded: true }, route)
    }

    if (maxBody !== null) {
      const cl = req.headers['content-length']
      if (cl !== undefined && Number(cl) > maxBody) return fail('TETHER_BODY_TOO_LARGE', null, null, true)
    }
    let body = hasBody(req) ? RequestBody.of(req, maxBody, replayLimit) : null

    const attempt = (): void => {
      const route = router.route(req.headers, peer, tried ?? undefined)
      if (typeof route === 'string') {
        // after a failed attempt, its error is the honest answer (as nginx's 502 after the last upstream)
        if (lastFailure !== null) return fail(lastFailure.code, lastFailure.route, lastFailure.error, !req.complete)
        return fail(NO_ROUTE[route], null, null, body !== null && !req.complete)
      }
      const headers = upstreamRequestHeaders(req.rawHeaders, {
        peer,
        proto: 'http',
        preserveHost,
        xForwarded,
        upstreamHost: hosts().get(route.id) ?? '',
        requestId,
      })
      headers.push('x-tether-epoch', String(route.epoch))
      const moved = route.moved
      if (moved !== null) {
        headers.push('x-tether-moved', `from=${moved.from}; reason=${moved.reason}; epoch=${route.epoch}`)
        events?.failover(moved.from, moved.reason)
      }
      // a user who moved gets their newest checkpoint delivered with this request
      if (state !== null && moved !== null && route.sessionKey !== null) {
        void state.fetch(route.sessionKey).then(async (cp) => {
          if (cp !== null) {
            rehydrated = true
            if (hook === null) headers.push('x-tether-rehydrate', cp.value, 'x-tether-previous-upstream', moved.from)
            else await postHook(route, cp.value, moved.from)
          }
          forward(route, headers)
        })
        return
      }
      forward(route, headers)
    }

    /** POST the state to the new upstream's hook before the request (errors are logged, not fatal). */
    const postHook = async (route: Route, value: string, from: string): Promise<void> => {
      const hookHeaders = ['content-type', 'application/octet-stream', 'x-tether-epoch', String(route.epoch), 'x-tether-previous-upstream', from]
      const cookie = req.headers.cookie
      if (cookie !== undefined) hookHeaders.push('cookie', cookie)
      const status = await forwarder.call(route.id, 'POST', hook!, hookHeaders, value, config.timeouts.response_headers)
      if (status < 200 || status >= 300) logger.warn({ upstream: route.id, status }, 'rehydration hook did not accept the state')
    }

    const forward = (route: Route, headers: string[]): void => {
      const decoration = state === null ? route : new Exchange(route, state)
      events?.attempt(route.id, 1)
      forwarder.forward(route.id, req, res, headers, body, decoration, (r) => {
        events?.attempt(route.id, -1)
        const signal = healthSignal(r)
        if (signal !== null) observe(route.id, signal)
        if (r.responded || r.outcome === null) return finish(r, route)
        if (
          r.outcome.kind === 'error' &&
          retries < maxRetries &&
          performance.now() - start < tryDuration &&
          shouldRetry(r.outcome, req.method ?? 'GET', body === null || body.replayable)
        ) {
          retries++
          events?.retry(route.id)
          lastFailure = { code: r.outcome.code, route, error: r.error }
          ;(tried ??= new Set()).add(route.id)
          if (body !== null) body = body.replay()
          logger.debug({ upstream: route.id, code: r.outcome.code, retry: retries }, 'retrying on the next upstream')
          return attempt()
        }
        const code = r.outcome.kind === 'error' ? r.outcome.code : 'TETHER_UPSTREAM_RESET'
        fail(code, route, r.error, code === 'TETHER_BODY_TOO_LARGE' || !req.complete)
      })
    }
    // a key this replica has not seen (or not checked lately) may be bound by another
    // replica: reconcile with the shared table first (bounded by state.timeout)
    const key = shared === null ? null : router.keyToSync(req.headers, peer)
    if (key === null) return attempt()
    void shared!.lookup(key).then((b) => {
      if (b !== 'unavailable') router.sync(key, b)
      attempt()
    })
  }
}
