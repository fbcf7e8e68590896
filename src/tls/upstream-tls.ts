// TLS to an https:// upstream: the connection options every client of that upstream uses (the
// forwarding pools, health probes, WebSocket handshakes), read from the PEM files its `tls`
// keys name. Layer 3 adapter (files through pem.ts, node:net): it never connects itself and
// decides nothing about routing.
import { isIP } from 'node:net'
import type { ConnectionOptions } from 'node:tls'
import type { UpstreamTlsConfig } from '../config/schema.js'
import { readPem } from './pem.js'

/** What node:tls (and undici's connector, which takes the same keys) needs for one upstream. */
export type UpstreamTlsOptions = Pick<ConnectionOptions, 'ca' | 'cert' | 'key' | 'servername' | 'rejectUnauthorized'>

/**
 * The TLS options of an upstream at `url`: `ca` (else Node's roots), the client pair for mTLS,
 * `rejectUnauthorized: verify`, and `servername`: the configured one, else the URL's host name
 * (none for an IP address: SNI carries names only). Null for an http:// upstream. Throws
 * PemError when a file cannot be read (the config check made sure it could at load).
 * Example: upstreamTlsOptions('https://app.internal:8443', { ca: '/etc/ca.pem', verify: true, ... })
 * -> { ca: <Buffer>, servername: 'app.internal', rejectUnauthorized: true }.
 */
export function upstreamTlsOptions(url: string, tls: UpstreamTlsConfig | null): UpstreamTlsOptions | null {
  const u = new URL(url)
  if (u.protocol !== 'https:' || tls === null) return u.protocol === 'https:' ? { rejectUnauthorized: true, ...sni(u, null) } : null
  const out: { -readonly [K in keyof UpstreamTlsOptions]: UpstreamTlsOptions[K] } = { rejectUnauthorized: tls.verify, ...sni(u, tls.servername) }
  if (tls.ca !== null) out.ca = readPem(tls.ca, 'certificate')
  if (tls.cert !== null && tls.key !== null) {
    out.cert = readPem(tls.cert, 'certificate')
    out.key = readPem(tls.key, 'private key')
  }
  return out
}

function sni(u: URL, servername: string | null): { servername?: string } {
  if (servername !== null) return { servername }
  const host = u.hostname.replace(/^\[(.*)\]$/, '$1')
  return isIP(host) === 0 ? { servername: host } : {}
}

/** Upstreams whose certificate is not checked (`verify: false`): each is worth a loud warning. */
export function unverifiedUpstreams(upstreams: readonly { id: string; url: string; tls?: UpstreamTlsConfig | null }[]): string[] {
  return upstreams.filter((u) => u.url.startsWith('https:') && u.tls?.verify === false).map((u) => u.id)
}
