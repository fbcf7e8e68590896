// The proxy listener's certificates: the default pair and the SNI ones of `listen.tls`, read
// from their PEM files into TLS contexts, chosen per handshake by the name the client asks for,
// and read again when a file changes (cert-manager renews by swapping a Secret's symlink).
// Layer 3 adapter (files, node:tls): it never listens or accepts; the listener asks it for the
// context of a handshake and is told when the default one changed.
import { constants, randomBytes, X509Certificate } from 'node:crypto'
import tls from 'node:tls'
import { systemClock, type Clock, type Timers } from '../clock.js'
import type { CertificateFiles, ListenTlsConfig } from '../config/schema.js'
import { ConfigWatcher } from '../config/watch.js'
import type { Logger } from '../observability/logger.js'
import { pairProblem, readPem } from './pem.js'

/** What a handshake needs besides the certificate: the same for every context of one listener. */
export interface ContextOptions {
  readonly cert: Buffer
  readonly key: Buffer
  readonly minVersion: tls.SecureVersion
  /** One set of session ticket keys for every context, kept across reloads: resumption survives a rotation. */
  readonly ticketKeys: Buffer
  /**
   * OpenSSL options: client-initiated renegotiation (TLS 1.2) refused, as nginx refuses it. Each
   * costs the server a full handshake on a connection it already holds (Node allows 3 per
   * 10 minutes, then closes it), and RFC 9113 section 9.2.1 forbids it on an h2 connection.
   */
  readonly secureOptions: number
}

/** One loaded pair: its context, the DNS names it serves and when it expires. */
interface Loaded {
  readonly options: ContextOptions
  readonly context: tls.SecureContext
  readonly names: readonly string[]
  readonly notAfter: string
}

/** Everything loaded from the files at one time (a reload swaps the whole of it, or nothing). */
interface Snapshot {
  readonly main: Loaded
  readonly sni: readonly Loaded[]
  /** Lower-cased DNS name (`a.example`, `*.example`) -> context, from `certificates`. */
  readonly byName: ReadonlyMap<string, tls.SecureContext>
}

/** A certificate file that could not be loaded: the config key naming it, the file, why. */
export class CertificateError extends Error {
  readonly code = 'TETHER_TLS_CERTIFICATE'
  constructor(readonly key: string, readonly file: string, message: string, options?: { cause?: unknown }) {
    super(`${key} (${file}): ${message}`, options)
    this.name = 'CertificateError'
  }
}

/**
 * Example (the listener): `const certs = new ServerCertificates(config.listen.tls, { logger,
 * timers, onDefault: (o) => server.setSecureContext(o) })`; the TLS server is created with
 * `certs.defaultOptions` and `SNICallback: certs.sniCallback`; `certs.watch()` starts reloads
 * on file changes, `certs.stop()` ends them. A client asking for `api.example` gets the
 * certificate whose subjectAltName lists it (or `*.example`), anyone else the default one.
 */
export class ServerCertificates {
  readonly #config: ListenTlsConfig
  readonly #logger: Logger
  readonly #timers: Timers | undefined
  readonly #clock: Clock
  readonly #onDefault: (options: ContextOptions) => void
  readonly #ticketKeys = randomBytes(48)
  #snapshot: Snapshot
  #watchers: ConfigWatcher[] = []

  /** Loads every pair now; throws CertificateError when one cannot be used (start-up fails). */
  constructor(config: ListenTlsConfig, deps: { readonly logger: Logger; readonly timers?: Timers; readonly clock?: Clock; readonly onDefault: (options: ContextOptions) => void }) {
    this.#config = config
    this.#logger = deps.logger
    this.#timers = deps.timers
    this.#clock = deps.clock ?? systemClock
    this.#onDefault = deps.onDefault
    this.#snapshot = this.#load()
    this.#report('TLS certificates loaded')
  }

  /** Options of the default context (for `tls.createServer`). */
  get defaultOptions(): ContextOptions {
    return this.#snapshot.main.options
  }

  /**
   * The SNI callback: the context of the certificate naming `servername` (exact name first,
   * then a wildcard one label deep), or undefined: the default certificate.
   */
  readonly sniCallback = (servername: string, cb: (err: Error | null, ctx?: tls.SecureContext) => void): void => {
    cb(null, this.contextFor(servername))
  }

  /** The SNI context for `servername`, or undefined for the default one. Example: contextFor('API.example') -> api's. */
  contextFor(servername: string): tls.SecureContext | undefined {
    const byName = this.#snapshot.byName
    if (byName.size === 0) return undefined
    const name = servername.toLowerCase().replace(/\.$/, '')
    const exact = byName.get(name)
    if (exact !== undefined) return exact
    const dot = name.indexOf('.')
    return dot > 0 ? byName.get(`*${name.slice(dot)}`) : undefined
  }

  /**
   * Read every file again. All of them load: new handshakes use them (connections open keep
   * theirs). One fails: nothing changes, the error is logged with the key and file, and
   * returned. Example: `certs.reload()` after `kubectl apply` of a renewed Secret -> null.
   */
  reload(): CertificateError | null {
    let next: Snapshot
    try {
      next = this.#load()
    } catch (err) {
      const e = err instanceof CertificateError ? err : new CertificateError('listen.tls', '?', (err as Error).message, { cause: err })
      this.#logger.error({ key: e.key, file: e.file, err: e.message }, 'TLS certificate reload rejected; the certificates in use keep serving')
      return e
    }
    const prev = this.#snapshot
    const same = (a: Loaded, b: Loaded | undefined): boolean => b !== undefined && a.options.cert.equals(b.options.cert) && a.options.key.equals(b.options.key)
    // the cert and key watchers may both fire for one swap: the second read finds nothing new
    if (same(next.main, prev.main) && next.sni.length === prev.sni.length && next.sni.every((l, i) => same(l, prev.sni[i]))) return null
    this.#snapshot = next
    if (!same(next.main, prev.main)) this.#onDefault(next.main.options)
    this.#report('TLS certificates reloaded')
    return null
  }

  /** Reload when any certificate or key file changes (each file's directory is watched, as for the config). */
  watch(): void {
    if (this.#watchers.length > 0) return
    const files = new Set([this.#config.cert, this.#config.key, ...this.#config.certificates.flatMap((c) => [c.cert, c.key])])
    this.#watchers = [...files].map((file) => new ConfigWatcher(file, () => void this.reload(), this.#timers))
    for (const w of this.#watchers) w.start()
    // a renewal between the load at construction and these watches: the watchers' baseline is
    // the files as they are now, so read them again once (nothing happens when unchanged)
    this.reload()
  }

  stop(): void {
    for (const w of this.#watchers) w.stop()
    this.#watchers = []
  }

  #load(): Snapshot {
    const c = this.#config
    const main = this.#pair(c, 'listen.tls')
    const byName = new Map<string, tls.SecureContext>()
    const sni = c.certificates.map((pair, i) => this.#pair(pair, `listen.tls.certificates[${i}]`))
    // the first certificate listing a name serves it
    for (const loaded of sni) for (const name of loaded.names) if (!byName.has(name)) byName.set(name, loaded.context)
    return { main, sni, byName }
  }

  #pair(files: CertificateFiles, key: string): Loaded {
    const read = (file: string, which: 'cert' | 'key'): Buffer => {
      try {
        return readPem(file, which === 'cert' ? 'certificate' : 'private key')
      } catch (err) {
        throw new CertificateError(`${key}.${which}`, file, (err as Error).message, { cause: err })
      }
    }
    const cert = read(files.cert, 'cert')
    const privateKey = read(files.key, 'key')
    const mismatch = pairProblem(cert, privateKey)
    if (mismatch !== null) throw new CertificateError(`${key}.key`, files.key, mismatch)
    const options: ContextOptions = { cert, key: privateKey, minVersion: this.#config.min_version, ticketKeys: this.#ticketKeys, secureOptions: constants.SSL_OP_NO_RENEGOTIATION }
    let context: tls.SecureContext
    try {
      context = tls.createSecureContext(options)
    } catch (err) {
      throw new CertificateError(`${key}.cert`, files.cert, (err as Error).message, { cause: err })
    }
    const x509 = new X509Certificate(cert)
    return { options, context, names: dnsNames(x509), notAfter: x509.validTo }
  }

  /** One info line per certificate (names, expiry); a warning for one expired or not valid yet. */
  #report(message: string): void {
    const now = this.#clock.now()
    const { main, sni } = this.#snapshot
    const view = (l: Loaded): object => ({ names: l.names, not_after: l.notAfter })
    this.#logger.info({ default: view(main), sni: sni.map(view) }, message)
    for (const l of [main, ...sni]) {
      if (Date.parse(l.notAfter) < now) this.#logger.warn(view(l), 'a TLS certificate in use has expired: clients will refuse it')
    }
  }
}

/**
 * The DNS names a certificate serves (subjectAltName DNS entries, lower-cased; the subject CN
 * only when there are none, as browsers no longer do but old certificates rely on).
 * Example: 'DNS:shop.example, DNS:*.shop.example, IP Address:10.0.0.1' -> ['shop.example', '*.shop.example'].
 */
export function dnsNames(cert: X509Certificate): string[] {
  const san = cert.subjectAltName
  if (san !== undefined) {
    const names = san.split(/,\s*/).filter((e) => e.startsWith('DNS:')).map((e) => e.slice(4).toLowerCase())
    if (names.length > 0) return names
  }
  const cn = /(?:^|\n)CN=([^\n]+)/.exec(cert.subject)?.[1]
  return cn === undefined ? [] : [cn.toLowerCase()]
}
