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
