// The request path, top to bottom: guard -> route (affinity key -> upstream) -> build
// headers -> forward (the route decorates the response: cookie, learning) -> access log. Each step is a call into its own module; this file holds no
// protocol detail of its own. Sticky routing, failover and rehydration slot in between
// "choose" and "forward" (a decision per request, made before forwarding).
import type { IncomingMessage, ServerResponse } from 'node:http'
import type { Config } from '../config/schema.js'
import type { Logger } from '../observability/logger.js'
import type { Router } from '../routing/router.js'
import type { RouteSource } from '../routing/router.js'
import { upstreamRequestHeaders } from './headers.js'
import type { Forwarder, ForwardResult } from './forward.js'
import { sendError } from './respond.js'

export interface RequestPathDeps {
  readonly config: Config
  readonly forwarder: Forwarder
  readonly router: Router
  /** host[:port] of each upstream's URL, by id (for `preserve_host: false`). */
  readonly hosts: () => ReadonlyMap<string, string>
  readonly logger: Logger
  /** True once shutdown began: answers then close their connection. */
  readonly draining: () => boolean
}

export function createRequestHandler(deps: RequestPathDeps): (req: IncomingMessage, res: ServerResponse) => void {
  const { config, forwarder, router, hosts, logger, draining } = deps
  const { max_body_bytes: maxBody } = config.limits
  const { preserve_host: preserveHost, x_forwarded: xForwarded } = config.forwarding
  const access = config.log.access && logger.isLevelEnabled('info')

  return function handle(req: IncomingMessage, res: ServerResponse): void {
    const start = access ? performance.now() : 0
    if (draining()) res.shouldKeepAlive = false

    const done = (r: ForwardResult, upstream: string | null, route: RouteSource | null): void => {
      if (r.outcome !== null && r.outcome.kind === 'error' && r.error) {
        logger.warn({ err: r.error, code: r.outcome.code, upstream, method: req.method, path: req.url }, 'upstream exchange failed')
      }
      if (access) {
        logger.info({
          method: req.method,
          path: req.url,
          status: r.status,
          upstream,
          route,
          outcome: r.outcome === null ? 'ok' : r.outcome.kind === 'client_abort' ? 'client_abort' : r.outcome.code,
          duration_ms: Math.round((performance.now() - start) * 1000) / 1000,
        }, 'access')
      }
    }

    if (maxBody !== null) {
      const cl = req.headers['content-length']
      if (cl !== undefined && Number(cl) > maxBody) {
        done({ status: sendError(res, 'TETHER_BODY_TOO_LARGE', true), outcome: { kind: 'error', code: 'TETHER_BODY_TOO_LARGE', connect: false }, error: null }, null, null)
        return
      }
    }

    const peer = req.socket.remoteAddress ?? ''
    const route = router.route(req.headers, peer)
    if (route === null) {
      const status = sendError(res, 'TETHER_NO_UPSTREAM', false, { 'retry-after': '1' })
      done({ status, outcome: { kind: 'error', code: 'TETHER_NO_UPSTREAM', connect: true }, error: null }, null, null)
      return
    }
    const id = route.id
    const headers = upstreamRequestHeaders(req.rawHeaders, {
      peer,
      proto: 'http',
      preserveHost,
      xForwarded,
      upstreamHost: hosts().get(id) ?? '',
    })
    forwarder.forward(id, req, res, headers, maxBody, route, (r) => done(r, id, route.source))
  }
}
