// TLS to an https:// upstream: the connection options every client of that upstream uses (the
// forwarding pools, health probes, WebSocket handshakes), read from the PEM files its `tls`
// keys name. Layer 3 adapter (files through pem.ts, node:net): it never connects itself and
// decides nothing about routing.
import { statSync } from 'node:fs'
import { isIP } from 'node:net'
import type { ConnectionOptions } from 'node:tls'
import type { UpstreamTlsConfig } from '../config/schema.js'
import { pairProblem, PemError, readPem } from './pem.js'

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

/** What an {@link UpstreamTlsSource} tells when it looked at changed files. */
export type UpstreamTlsChange = { readonly kind: 'reloaded' } | { readonly kind: 'failed'; readonly error: Error }

/**
 * An https:// upstream's TLS options, kept in step with its files. cert-manager renews a client
 * certificate (and a CA bundle may rotate) in place, behind the Secret's `..data` symlink: a pool
 * made once would present the old certificate until it expired and every upstream failed its
 * handshakes. `current()` looks at the files (one `stat` each, through symlinks) and reads them
 * again when one changed; it is called once per new upstream connection, health probe or
 * WebSocket handshake, never per request on a kept-alive connection. Files that cannot be used
 * (a key written before its certificate, a file half written) keep the last good options until
 * they change again; `onChange` hears of both outcomes.
 * Example: `const src = new UpstreamTlsSource(url, tls); connect({ ...src.current() })`;
 * `src.version` grows with each reload (a connector or agent made for an older one is stale).
 */
export class UpstreamTlsSource {
  readonly #url: string
  readonly #tls: UpstreamTlsConfig | null
  readonly #files: readonly string[]
  readonly #onChange: (change: UpstreamTlsChange) => void
  #options: UpstreamTlsOptions | null
  #stamp = ''
  #version = 0

  /** Reads the files now: throws PemError as {@link upstreamTlsOptions} does. */
  constructor(url: string, tls: UpstreamTlsConfig | null, onChange: (change: UpstreamTlsChange) => void = () => undefined) {
    this.#url = url
    this.#tls = tls
    this.#onChange = onChange
    this.#files = url.startsWith('https:') && tls !== null ? [tls.ca, tls.cert, tls.key].filter((f): f is string => f !== null) : []
    this.#stamp = this.#look()
    this.#options = upstreamTlsOptions(url, tls)
  }

  /** Bumped each time the options are read again. */
  get version(): number {
    return this.#version
  }

  /** The options, read again first when a file changed since the last look. */
  current(): UpstreamTlsOptions | null {
    if (this.#files.length === 0) return this.#options
    const stamp = this.#look()
    if (stamp === this.#stamp) return this.#options
    this.#stamp = stamp
    try {
      const next = upstreamTlsOptions(this.#url, this.#tls)
      const problem = next?.cert !== undefined && next.key !== undefined ? pairProblem(next.cert as Buffer, next.key as Buffer) : null
      if (problem !== null) throw new PemError(problem)
      this.#options = next
      this.#version++
      this.#onChange({ kind: 'reloaded' })
    } catch (err) {
      this.#onChange({ kind: 'failed', error: err as Error })
    }
    return this.#options
  }

  /** The files' identities (inode, size, mtime); a file that cannot be seen counts as unchanged. */
  #look(): string {
    return this.#files.map((f, i) => {
      try {
        const st = statSync(f)
        return `${st.ino}:${st.size}:${st.mtimeMs}`
      } catch {
        return this.#stamp.split('|')[i] ?? ''
      }
    }).join('|')
  }
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
