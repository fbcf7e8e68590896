// Starting a server's listening socket the one way every listener does: a failure to listen
// (the port taken, an address not here) rejects, for the caller's one clear line; errors after
// it are the server's own, logged by the caller. Layer 3 (I/O): no policy.
import type { Server, ListenOptions } from 'node:net'

/**
 * Listen with `options`; resolves once listening, rejects with the listen error (reported
 * nowhere else: no stack trace in the log for a port already taken). From then on
 * `onError` gets the server's errors.
 * Example: `await listen(server, { port: 8080, host: '0.0.0.0' }, (err) => logger.error({ err }, 'listener error'))`.
 */
export function listen(server: Server, options: ListenOptions, onError: (err: Error) => void): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    server.once('error', reject)
    server.listen(options, () => {
      server.off('error', reject)
      server.on('error', onError)
      resolve()
    })
  })
}

/** Listen errors said in words; the code follows in parentheses. */
const REASONS: Readonly<Record<string, string>> = {
  EADDRINUSE: 'address already in use',
  EACCES: 'permission denied',
  EADDRNOTAVAIL: 'address not available on this machine',
  ENOTFOUND: 'host name not found',
}
/** Codes that the host is to blame for (else the port is). */
const HOST_CODES = new Set(['EADDRNOTAVAIL', 'ENOTFOUND', 'EAI_AGAIN'])

/**
 * A listener that could not start, naming the config key to change (`<section>.port`, or
 * `<section>.host` when the address is the problem) and, once known, the file.
 * Example: `new ListenError('0.0.0.0', 8080, 'listen', err).inFile('proxy.yaml').message` ->
 * "cannot listen on 0.0.0.0:8080 (listen.port in proxy.yaml): address already in use (EADDRINUSE)".
 */
export class ListenError extends Error {
  readonly code: string | undefined
  /** The config key to change, e.g. `admin.listen.port`; null for an address no key sets. */
  readonly key: string | null

  /** `section`: the config section of the address (`listen`, `admin.listen`), null when no key sets it. */
  constructor(readonly host: string, readonly port: number, readonly section: string | null, readonly listenCause: NodeJS.ErrnoException, readonly file?: string) {
    const code = listenCause.code
    const key = section === null ? null : `${section}.${code !== undefined && HOST_CODES.has(code) ? 'host' : 'port'}`
    const reason = code === undefined ? listenCause.message : REASONS[code] === undefined ? code : `${REASONS[code]} (${code})`
    const address = host.includes(':') ? `[${host}]:${port}` : `${host}:${port}`
    super(`cannot listen on ${address}${key === null ? '' : ` (${key}${file === undefined ? '' : ` in ${file}`})`}: ${reason}`)
    this.name = 'ListenError'
    this.code = code
    this.key = key
  }

  /** The same error naming `file`, the config file the key is in. */
  inFile(file: string): ListenError {
    return new ListenError(this.host, this.port, this.section, this.listenCause, file)
  }
}
