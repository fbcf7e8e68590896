// The request path, top to bottom: guard -> choose an upstream -> build headers ->
// forward -> access log. Each step is a call into its own module; this file holds no
// protocol detail of its own. Sticky routing, failover and rehydration slot in between
// "choose" and "forward" (a decision per request, made before forwarding).
import type { IncomingMessage, ServerResponse } from 'node:http'
import type { Config } from '../config/schema.js'
import type { Logger } from '../observability/logger.js'
import type { RoundRobin } from '../placement/round-robin.js'
import { upstreamRequestHeaders } from './headers.js'
import type { Forwarder, ForwardResult } from './forward.js'
import { sendError } from './respond.js'

export interface RequestPathDeps {
  readonly config: Config
  readonly forwarder: Forwarder
  readonly placement: RoundRobin
  readonly logger: Logger
  /** True once shutdown began: answers then close their connection. */
  readonly draining: () => boolean
}

/** host[:port] of each upstream URL, by index. */
function upstreamHosts(config: Config): string[] {
  return config.upstreams.map((u) => new URL(u.url).host)
}

export function createRequestHandler(deps: RequestPathDeps): (req: IncomingMessage, res: ServerResponse) => void {
  const { config, forwarder, placement, logger, draining } = deps
  const hosts = upstreamHosts(config)
  const ids = config.upstreams.map((u) => u.id)
  const { max_body_bytes: maxBody } = config.limits
  const { preserve_host: preserveHost, x_forwarded: xForwarded } = config.forwarding
  const access = config.log.access && logger.isLevelEnabled('info')

  return function handle(req: IncomingMessage, res: ServerResponse): void {
    const start = access ? performance.now() : 0
    if (draining()) res.shouldKeepAlive = false

    const done = (r: ForwardResult, upstream: string | null): void => {
      if (r.outcome !== null && r.outcome.kind === 'error' && r.error) {
        logger.warn({ err: r.error, code: r.outcome.code, upstream, method: req.method, path: req.url }, 'upstream exchange failed')
      }
      if (access) {
        logger.info({
          method: req.method,
          path: req.url,
          status: r.status,
          upstream,
          outcome: r.outcome === null ? 'ok' : r.outcome.kind === 'client_abort' ? 'client_abort' : r.outcome.code,
          duration_ms: Math.round((performance.now() - start) * 1000) / 1000,
        }, 'access')
      }
    }

    if (maxBody !== null) {
      const cl = req.headers['content-length']
      if (cl !== undefined && Number(cl) > maxBody) {
        done({ status: sendError(res, 'TETHER_BODY_TOO_LARGE', true), outcome: { kind: 'error', code: 'TETHER_BODY_TOO_LARGE', connect: false }, error: null }, null)
        return
      }
    }

    const index = placement.next()
    if (index < 0) {
      const status = sendError(res, 'TETHER_NO_UPSTREAM', false, { 'retry-after': '1' })
      done({ status, outcome: { kind: 'error', code: 'TETHER_NO_UPSTREAM', connect: true }, error: null }, null)
      return
    }
    const id = ids[index]!
    const headers = upstreamRequestHeaders(req.rawHeaders, {
      peer: req.socket.remoteAddress ?? '',
      proto: 'http',
      preserveHost,
      xForwarded,
      upstreamHost: hosts[index]!,
    })
    forwarder.forward(id, req, res, headers, maxBody, (r) => done(r, id))
  }
}
