// The admin listener (its own port, never the proxy's): liveness, readiness, the upstream
// list, and drain/undrain. Layer 4 flow: reads state through the callbacks it is given and
// changes it only through them; mutating endpoints require the bearer token when one is set.
import http from 'node:http'
import { timingSafeEqual, createHash } from 'node:crypto'
import type { AddressInfo } from 'node:net'

export interface AdminDeps {
  /** Why Tether is not ready (empty: ready). */
  readonly notReady: () => string[]
  /** What works in a degraded way while Tether stays ready (e.g. Redis unreachable). */
  readonly degraded: () => string[]
  /** One JSON-able row per upstream. */
  readonly upstreams: () => unknown[]
  /** Drain / undrain an upstream; false when the id is unknown. */
  readonly drain: (id: string) => boolean
  readonly undrain: (id: string) => boolean
  /** Required `Authorization: Bearer <token>` for POSTs; null: none. */
  readonly token: string | null
  /** Prometheus exposition text, and its content type. */
  readonly metrics: () => Promise<string>
  readonly metricsContentType: string
}

export interface AdminServer {
  readonly url: string
  close(): Promise<void>
}

const ROUTE = /^\/upstreams\/([^/]+)\/(drain|undrain)$/

/** Start the admin listener on host:port (0 picks a free port). */
export async function startAdmin(host: string, port: number, deps: AdminDeps): Promise<AdminServer> {
  const tokenDigest = deps.token === null ? null : digest(deps.token)
  const server = http.createServer((req, res) => {
    const url = (req.url ?? '/').split('?')[0]!
    const send = (status: number, body: unknown): void => {
      const text = typeof body === 'string' ? `${body}\n` : `${JSON.stringify(body, null, 2)}\n`
      res.writeHead(status, {
        'content-type': typeof body === 'string' ? 'text/plain; charset=utf-8' : 'application/json',
        'cache-control': 'no-store',
      })
      res.end(text)
    }
    if (req.method === 'GET' && url === '/healthz') return send(200, 'ok')
    if (req.method === 'GET' && url === '/readyz') {
      const reasons = deps.notReady()
      return send(reasons.length === 0 ? 200 : 503, { ready: reasons.length === 0, reasons, degraded: deps.degraded() })
    }
    if (req.method === 'GET' && url === '/upstreams') return send(200, deps.upstreams())
    if (req.method === 'GET' && url === '/metrics') {
      deps.metrics().then(
        (text) => {
          res.writeHead(200, { 'content-type': deps.metricsContentType, 'cache-control': 'no-store' })
          res.end(text)
        },
        () => send(500, 'metrics unavailable'),
      )
      return
    }
    const m = ROUTE.exec(url)
    if (m !== null) {
      if (req.method !== 'POST') return send(405, 'Method Not Allowed')
      if (tokenDigest !== null && !authorized(req.headers.authorization, tokenDigest)) return send(401, 'Unauthorized')
      const id = decodeURIComponent(m[1]!)
      const ok = m[2] === 'drain' ? deps.drain(id) : deps.undrain(id)
      return ok ? send(200, { id, [m[2] === 'drain' ? 'draining' : 'undrained']: true }) : send(404, `unknown upstream ${JSON.stringify(id)}`)
    }
    send(404, 'Not Found')
  })
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject)
    server.listen(port, host, () => {
      server.off('error', reject)
      resolve()
    })
  })
  const a = server.address() as AddressInfo
  const shown = host.includes(':') ? `[${host}]` : host
  return {
    url: `http://${shown}:${a.port}`,
    close: () => new Promise<void>((resolve) => {
      server.closeAllConnections()
      server.close(() => resolve())
    }),
  }
}

function digest(text: string): Buffer {
  return createHash('sha256').update(text).digest()
}

/** Constant-time check of `Bearer <token>` (digests make the lengths equal). */
function authorized(header: string | undefined, expected: Buffer): boolean {
  if (header === undefined || !header.startsWith('Bearer ')) return false
  return timingSafeEqual(digest(header.slice(7).trim()), expected)
}
